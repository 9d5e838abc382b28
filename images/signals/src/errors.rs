//! Bad arguments to the signal calls fail with Linux's errno, and
//! `SIGKILL`/`SIGSTOP` can be neither caught nor blocked.

use crate::abi::{
    KERNEL_ADDR, KernelSigaction, SIGSET_SIZE, SigSet, UNMAPPED, bit, getpid, gettid, install,
    kill, names, set_mask, sigprocmask, tgkill,
};
use crate::handlers::{REC, on_signal};
use image_support::{Checker, SysResult, show, sys};
use libc::{SIGKILL, SIGSTOP, SIGUSR1, SIGUSR2};

/// A pid and a tid no Linux system hands out (above the largest
/// `pid_max`, 2^22).
const NO_SUCH_ID: i32 = 0x3fff_ffff;

pub fn run(c: &mut Checker) {
    kill_errors(c);
    sigaction_errors(c);
    sigprocmask_rules(c);
    bad_pointers(c);
}

fn kill_errors(c: &mut Checker) {
    // SIGUSR1 has a handler, so a wrongly delivered signal shows up as a
    // handler run instead of ending the process.
    let old = install(SIGUSR1, on_signal, 0, 0);
    REC.reset();
    let (pid, tid) = (getpid(), gettid());
    c.expect_errno("kill_signal_65_einval", kill(pid, 65), libc::EINVAL);
    let r = kill(pid, 0);
    c.check(
        "kill_signal_0_probes",
        r == Ok(0),
        format!("kill(self, 0): {} (expected ok 0)", show(r)),
    );
    c.expect_errno("kill_missing_pid_esrch", kill(NO_SUCH_ID, 0), libc::ESRCH);
    c.expect_errno(
        "tgkill_wrong_tgid_esrch",
        tgkill(NO_SUCH_ID, tid, SIGUSR1),
        libc::ESRCH,
    );
    c.expect_errno(
        "tgkill_missing_tid_esrch",
        tgkill(pid, NO_SUCH_ID, SIGUSR1),
        libc::ESRCH,
    );
    c.expect_errno(
        "tgkill_tgid_0_einval",
        tgkill(0, tid, SIGUSR1),
        libc::EINVAL,
    );
    c.expect_errno(
        "tgkill_signal_65_einval",
        tgkill(pid, tid, 65),
        libc::EINVAL,
    );
    let n = REC.count();
    c.check(
        "failed_sends_deliver_nothing",
        n == 0,
        format!("SIGUSR1 handled {n} time(s) by the failed sends (expected 0)"),
    );
    crate::abi::restore(SIGUSR1, &old);
}

/// Raw `rt_sigaction(sig, act, oldact, size)` with addresses as given.
fn rt_sigaction(sig: i32, act: u64, oldact: u64, size: u64) -> SysResult {
    // SAFETY: the pointers are live structures or addresses the kernel
    // must refuse without writing anything of ours.
    unsafe { sys(libc::SYS_rt_sigaction, &[sig as u64, act, oldact, size]) }
}

fn sigaction_errors(c: &mut Checker) {
    let ign = KernelSigaction {
        handler: libc::SIG_IGN as u64,
        ..Default::default()
    };
    let act = &ign as *const KernelSigaction as u64;
    let mut old = KernelSigaction::default();
    let oldp = &mut old as *mut KernelSigaction as u64;
    for (name, sig) in [
        ("sigaction_sigkill_einval", SIGKILL),
        ("sigaction_sigstop_einval", SIGSTOP),
        ("sigaction_signal_0_einval", 0),
        ("sigaction_signal_65_einval", 65),
    ] {
        c.expect_errno(name, rt_sigaction(sig, act, 0, SIGSET_SIZE), libc::EINVAL);
    }
    let r = rt_sigaction(SIGKILL, 0, oldp, SIGSET_SIZE);
    c.check(
        "sigaction_query_sigkill_ok",
        r == Ok(0) && old.handler == 0,
        format!(
            "reading SIGKILL's action: {}, handler {} (expected ok 0, SIG_DFL)",
            show(r),
            old.handler
        ),
    );
    for size in [4, 16] {
        c.expect_errno(
            &format!("rt_sigaction_sigsetsize_{size}_einval"),
            rt_sigaction(SIGUSR2, 0, oldp, size),
            libc::EINVAL,
        );
    }
}

/// Raw `rt_sigprocmask(how, set, oldset, size)`.
fn rt_sigprocmask(how: i32, set: u64, oldset: u64, size: u64) -> SysResult {
    // SAFETY: as for rt_sigaction above.
    unsafe { sys(libc::SYS_rt_sigprocmask, &[how as u64, set, oldset, size]) }
}

fn sigprocmask_rules(c: &mut Checker) {
    let unstoppable = bit(SIGKILL) | bit(SIGSTOP);
    let saved = sigprocmask(libc::SIG_BLOCK, unstoppable | bit(SIGUSR2));
    let blocked = sigprocmask(libc::SIG_SETMASK, u64::MAX);
    let all = sigprocmask(libc::SIG_SETMASK, saved.unwrap_or(0));
    let ok = saved.is_ok()
        && blocked.is_ok_and(|m| m & bit(SIGUSR2) != 0 && m & unstoppable == 0)
        && all.is_ok_and(|m| m == !unstoppable);
    c.check(
        "sigprocmask_cannot_block_sigkill_sigstop",
        ok,
        format!(
            "after blocking {{9,12,19}}: {}; after blocking everything: {} \
             (expected 12 without 9 and 19; all but 9 and 19)",
            blocked.map_or_else(|e| show(Err(e)), names),
            all.map_or_else(|e| show(Err(e)), |m| format!("{m:#x}"))
        ),
    );
    let set: SigSet = bit(SIGUSR2);
    let setp = &set as *const SigSet as u64;
    c.expect_errno(
        "rt_sigprocmask_bad_how_einval",
        rt_sigprocmask(3, setp, 0, SIGSET_SIZE),
        libc::EINVAL,
    );
    c.expect_errno(
        "rt_sigprocmask_sigsetsize_16_einval",
        rt_sigprocmask(libc::SIG_BLOCK, setp, 0, 16),
        libc::EINVAL,
    );
    set_mask(saved.unwrap_or(0));
}

fn bad_pointers(c: &mut Checker) {
    let set: SigSet = bit(SIGUSR2);
    let setp = &set as *const SigSet as u64;
    let ts = crate::abi::timespec_ms(10);
    let tsp = &ts as *const libc::timespec as u64;
    // SAFETY (all calls): every bad pointer is one the kernel must refuse
    // before it writes or sleeps; the good ones are live.
    let cases: [(&str, SysResult); 10] = unsafe {
        [
            (
                "rt_sigaction_bad_act_efault",
                rt_sigaction(SIGUSR2, UNMAPPED, 0, SIGSET_SIZE),
            ),
            (
                "rt_sigaction_kernel_act_efault",
                rt_sigaction(SIGUSR2, KERNEL_ADDR, 0, SIGSET_SIZE),
            ),
            (
                "rt_sigaction_bad_oldact_efault",
                rt_sigaction(SIGUSR2, 0, UNMAPPED, SIGSET_SIZE),
            ),
            (
                "rt_sigprocmask_bad_set_efault",
                rt_sigprocmask(libc::SIG_BLOCK, UNMAPPED, 0, SIGSET_SIZE),
            ),
            (
                "rt_sigprocmask_bad_oldset_efault",
                rt_sigprocmask(libc::SIG_BLOCK, 0, KERNEL_ADDR, SIGSET_SIZE),
            ),
            (
                "rt_sigpending_bad_pointer_efault",
                sys(libc::SYS_rt_sigpending, &[UNMAPPED, SIGSET_SIZE]),
            ),
            (
                "rt_sigsuspend_bad_mask_efault",
                sys(libc::SYS_rt_sigsuspend, &[UNMAPPED, SIGSET_SIZE]),
            ),
            (
                "rt_sigtimedwait_bad_set_efault",
                sys(libc::SYS_rt_sigtimedwait, &[UNMAPPED, 0, tsp, SIGSET_SIZE]),
            ),
            (
                "rt_sigtimedwait_bad_timeout_efault",
                sys(libc::SYS_rt_sigtimedwait, &[setp, 0, UNMAPPED, SIGSET_SIZE]),
            ),
            (
                "sigaltstack_bad_pointer_efault",
                sys(libc::SYS_sigaltstack, &[UNMAPPED, 0]),
            ),
        ]
    };
    for (name, r) in cases {
        c.expect_errno(name, r, libc::EFAULT);
    }
}
