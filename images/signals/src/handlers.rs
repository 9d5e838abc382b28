//! The signal handlers the checks install, and what they record.
//!
//! Handlers may only do async-signal-safe things: they store into atomics
//! and make raw system calls. Checks run one at a time, so one record
//! ([`REC`]) serves them all; each check resets it first.

use crate::abi::{self, FXSAVE_XMM0, UContext, reg};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering::SeqCst};

/// What the handlers saw.
pub struct Record {
    /// Handler entries.
    pub count: AtomicU32,
    pub signo: AtomicI32,
    pub code: AtomicI32,
    pub pid: AtomicI32,
    /// `si_addr` (the same word as `si_pid`/`si_uid` for non-faults).
    pub addr: AtomicU64,
    /// `gettid()` inside the handler.
    pub tid: AtomicI32,
    /// The signal mask in force inside the handler.
    pub mask: AtomicU64,
    /// Handlers running right now, and the most ever at once.
    pub depth: AtomicU32,
    pub max_depth: AtomicU32,
    /// The interrupted `rip` (from the ucontext).
    pub rip: AtomicU64,
    /// The address of a local variable of the handler.
    pub local: AtomicU64,
    /// `ss_flags` of `sigaltstack` queried inside the handler.
    pub ss_flags: AtomicI32,
}

impl Record {
    const fn new() -> Self {
        Record {
            count: AtomicU32::new(0),
            signo: AtomicI32::new(0),
            code: AtomicI32::new(0),
            pid: AtomicI32::new(0),
            addr: AtomicU64::new(0),
            tid: AtomicI32::new(0),
            mask: AtomicU64::new(0),
            depth: AtomicU32::new(0),
            max_depth: AtomicU32::new(0),
            rip: AtomicU64::new(0),
            local: AtomicU64::new(0),
            ss_flags: AtomicI32::new(0),
        }
    }

    pub fn reset(&self) {
        for a in [&self.count, &self.depth, &self.max_depth] {
            a.store(0, SeqCst);
        }
        for a in [
            &self.signo,
            &self.code,
            &self.pid,
            &self.tid,
            &self.ss_flags,
        ] {
            a.store(0, SeqCst);
        }
        for a in [&self.addr, &self.mask, &self.rip, &self.local] {
            a.store(0, SeqCst);
        }
        REENTER.store(false, SeqCst);
        SKIP.store(0, SeqCst);
    }

    pub fn count(&self) -> u32 {
        self.count.load(SeqCst)
    }

    /// Waits up to `limit` for the handler count to reach `n`.
    pub fn wait_count(&self, n: u32, limit: std::time::Duration) -> bool {
        let start = std::time::Instant::now();
        while self.count() < n {
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }
}

pub static REC: Record = Record::new();

/// When set, the next [`on_signal`] raises its signal once more from
/// inside the handler (for the SA_NODEFER checks).
pub static REENTER: AtomicBool = AtomicBool::new(false);

/// The length of the instruction [`on_fault`] steps over (0: none
/// expected, so the handler restores the default action instead).
pub static SKIP: AtomicU64 = AtomicU64::new(0);

/// What [`on_signal_clobber`] found in its ucontext: the general registers
/// (`REG_*` order), XMM0..XMM15 as pairs of words, and `uc_sigmask`.
pub static SEEN_GREGS: [AtomicU64; 23] = [const { AtomicU64::new(0) }; 23];
pub static SEEN_XMM: [AtomicU64; 32] = [const { AtomicU64::new(0) }; 32];
pub static SEEN_SIGMASK: AtomicU64 = AtomicU64::new(0);

/// Records siginfo, thread, mask and nesting depth; raises the signal
/// again from inside when [`REENTER`] is set.
pub extern "C" fn on_signal(sig: i32, info: *mut libc::siginfo_t, _ctx: *mut c_void) {
    let depth = REC.depth.fetch_add(1, SeqCst) + 1;
    REC.max_depth.fetch_max(depth, SeqCst);
    // SAFETY: the kernel passes a live siginfo to a SA_SIGINFO handler.
    let i = unsafe { abi::read_info(info) };
    REC.signo.store(i.signo, SeqCst);
    REC.code.store(i.code, SeqCst);
    REC.pid.store(i.pid, SeqCst);
    REC.addr.store(i.addr, SeqCst);
    REC.tid.store(abi::gettid(), SeqCst);
    REC.mask.store(abi::current_mask(), SeqCst);
    REC.count.fetch_add(1, SeqCst);
    if REENTER.swap(false, SeqCst) {
        let _ = abi::raise_here(sig);
    }
    REC.depth.fetch_sub(1, SeqCst);
}

/// [`on_signal`], plus where its stack is and what `sigaltstack` says.
pub extern "C" fn on_signal_altstack(sig: i32, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let local = 0u8;
    REC.local
        .store(std::hint::black_box(&local) as *const u8 as u64, SeqCst);
    // SAFETY: a zeroed stack_t is valid; sigaltstack writes the live one.
    let ss = unsafe {
        let mut ss: libc::stack_t = std::mem::zeroed();
        let r = image_support::sys(
            libc::SYS_sigaltstack,
            &[0, &mut ss as *mut libc::stack_t as u64],
        );
        if r.is_err() {
            ss.ss_flags = -1;
        }
        ss
    };
    REC.ss_flags.store(ss.ss_flags, SeqCst);
    on_signal(sig, info, ctx);
}

/// For faults: records siginfo and the faulting `rip`, then moves `rip`
/// past the faulting instruction ([`SKIP`] bytes). An unexpected fault
/// (SKIP is 0) restores the default action, so returning faults again and
/// ends the process visibly instead of looping.
pub extern "C" fn on_fault(sig: i32, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: a SA_SIGINFO handler gets a live siginfo and ucontext.
    let (i, uc) = unsafe { (abi::read_info(info), &mut *(ctx as *mut UContext)) };
    REC.signo.store(i.signo, SeqCst);
    REC.code.store(i.code, SeqCst);
    REC.addr.store(i.addr, SeqCst);
    REC.rip.store(uc.gregs[reg::RIP], SeqCst);
    REC.count.fetch_add(1, SeqCst);
    match SKIP.swap(0, SeqCst) {
        0 => {
            let dfl = abi::KernelSigaction::default();
            let _ = abi::raw_sigaction(sig, Some(&dfl));
        }
        n => uc.gregs[reg::RIP] += n,
    }
}

/// Snapshots the interrupted state from the ucontext, then overwrites
/// every caller-saved general register and all XMM registers, so only
/// `rt_sigreturn` can bring the interrupted values back.
pub extern "C" fn on_signal_clobber(_sig: i32, _info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: a SA_SIGINFO handler gets a live ucontext; `fpstate` is
    // null or points to the saved FPU state in the signal frame.
    unsafe {
        let uc = &*(ctx as *const UContext);
        for (seen, value) in SEEN_GREGS.iter().zip(uc.gregs) {
            seen.store(value, SeqCst);
        }
        SEEN_SIGMASK.store(uc.sigmask, SeqCst);
        let fp = uc.fpstate as *const u8;
        for (i, seen) in SEEN_XMM.iter().enumerate() {
            let word = if fp.is_null() {
                0
            } else {
                std::ptr::read_unaligned(fp.add(FXSAVE_XMM0 + 8 * i) as *const u64)
            };
            seen.store(word, SeqCst);
        }
    }
    clobber_registers();
    REC.count.fetch_add(1, SeqCst);
}

#[inline(never)]
fn clobber_registers() {
    // SAFETY: only writes registers, all declared as clobbered.
    unsafe {
        std::arch::asm!(
            "mov rax, -1",
            "mov rcx, -1",
            "mov rdx, -1",
            "mov rsi, -1",
            "mov rdi, -1",
            "mov r8, -1",
            "mov r9, -1",
            "mov r10, -1",
            "mov r11, -1",
            "mov r12, -1",
            "mov r13, -1",
            "mov r14, -1",
            "mov r15, -1",
            "pcmpeqd xmm0, xmm0",
            "pcmpeqd xmm1, xmm1",
            "pcmpeqd xmm2, xmm2",
            "pcmpeqd xmm3, xmm3",
            "pcmpeqd xmm4, xmm4",
            "pcmpeqd xmm5, xmm5",
            "pcmpeqd xmm6, xmm6",
            "pcmpeqd xmm7, xmm7",
            "pcmpeqd xmm8, xmm8",
            "pcmpeqd xmm9, xmm9",
            "pcmpeqd xmm10, xmm10",
            "pcmpeqd xmm11, xmm11",
            "pcmpeqd xmm12, xmm12",
            "pcmpeqd xmm13, xmm13",
            "pcmpeqd xmm14, xmm14",
            "pcmpeqd xmm15, xmm15",
            out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            options(nostack, nomem),
        );
    }
}
