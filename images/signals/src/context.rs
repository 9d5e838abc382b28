//! The handler's context: the alternate signal stack, fault signals with
//! Linux's `si_code` and `si_addr` (the handler steps `rip` over the
//! faulting instruction and execution goes on), and what `rt_sigreturn`
//! restores.

use crate::abi::{
    self, current_mask, getpid, gettid, install, map, reg, restore, unmap, unmapped_page,
};
use crate::faults;
use crate::handlers::{
    REC, SEEN_GREGS, SEEN_SIGMASK, SEEN_XMM, SKIP, on_fault, on_signal_altstack, on_signal_clobber,
};
use image_support::{Checker, show, sys};
use libc::SIGUSR1;
use std::arch::x86_64::__m128i;
use std::sync::atomic::Ordering::SeqCst;

pub fn run(c: &mut Checker) {
    altstack(c);
    fault_segv_maperr(c);
    fault_segv_accerr(c);
    fault_ill(c);
    fault_fpe(c);
    sigreturn_restores_registers(c);
}

const ALT_SIZE: u64 = 64 * 1024;

fn altstack(c: &mut Checker) {
    let Ok(base) = map(ALT_SIZE, libc::PROT_READ | libc::PROT_WRITE) else {
        c.check(
            "sigaltstack_setup",
            false,
            "mmap of the alternate stack failed",
        );
        return;
    };
    let base = base as u64;
    let ss = libc::stack_t {
        ss_sp: base as *mut libc::c_void,
        ss_flags: 0,
        ss_size: ALT_SIZE as usize,
    };
    // SAFETY: a zeroed stack_t is valid; sigaltstack reads `ss` and
    // writes `old`, both live.
    let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
    let set = unsafe {
        sys(
            libc::SYS_sigaltstack,
            &[
                &ss as *const libc::stack_t as u64,
                &mut old as *mut libc::stack_t as u64,
            ],
        )
    };
    let saved = install(SIGUSR1, on_signal_altstack, libc::SA_ONSTACK, 0);
    REC.reset();
    let r = abi::raise_here(SIGUSR1);
    restore(SIGUSR1, &saved);
    // SAFETY: a zeroed stack_t is valid; sigaltstack writes the live one.
    let mut now: libc::stack_t = unsafe { std::mem::zeroed() };
    let query = unsafe {
        sys(
            libc::SYS_sigaltstack,
            &[0, &mut now as *mut libc::stack_t as u64],
        )
    };
    // Put back the stack the runtime had (Rust's, for stack overflows).
    // SAFETY: `old` is what the kernel reported.
    let _ = unsafe {
        sys(
            libc::SYS_sigaltstack,
            &[&old as *const libc::stack_t as u64, 0],
        )
    };
    let _ = unmap(base, ALT_SIZE);
    let local = REC.local.load(SeqCst);
    let flags = REC.ss_flags.load(SeqCst);
    let on_it = (base..base + ALT_SIZE).contains(&local);
    c.check(
        "sa_onstack_runs_on_sigaltstack",
        set == Ok(0)
            && r == Ok(0)
            && REC.count() == 1
            && on_it
            && flags & libc::SS_ONSTACK != 0
            && query == Ok(0)
            && now.ss_flags & libc::SS_ONSTACK == 0
            && now.ss_sp as u64 == base,
        format!(
            "sigaltstack {}; a handler local at {local:#x} (stack {base:#x}..{:#x}); \
             ss_flags inside {flags}, after {} (expected inside the stack, SS_ONSTACK inside \
             and not after)",
            show(set),
            base + ALT_SIZE,
            now.ss_flags
        ),
    );
}

/// Runs `fault` under [`on_fault`] for `sig`, skipping `len` bytes at the
/// faulting instruction. Gives (handled, si_signo, si_code, si_addr, rip).
fn caught(sig: i32, len: u64, fault: impl FnOnce()) -> (u32, i32, i32, u64, u64) {
    let old = install(sig, on_fault, 0, 0);
    REC.reset();
    SKIP.store(len, SeqCst);
    fault();
    SKIP.store(0, SeqCst);
    restore(sig, &old);
    (
        REC.count(),
        REC.signo.load(SeqCst),
        REC.code.load(SeqCst),
        REC.addr.load(SeqCst),
        REC.rip.load(SeqCst),
    )
}

/// One fault check: the expected signal and `si_code` at `want_addr`,
/// raised by the instruction at `want_rip`.
#[allow(clippy::too_many_arguments)]
fn judge_fault(
    c: &mut Checker,
    name: &str,
    got: (u32, i32, i32, u64, u64),
    sig: i32,
    code: i32,
    code_name: &str,
    want_addr: u64,
    want_rip: u64,
) {
    let (n, signo, got_code, addr, rip) = got;
    c.check(
        name,
        n == 1 && signo == sig && got_code == code && addr == want_addr && rip == want_rip,
        format!(
            "handled {n} time(s), si_signo {signo}, si_code {got_code}, si_addr {addr:#x}, \
             rip {rip:#x} (expected 1, {sig}, {code} ({code_name}), {want_addr:#x}, \
             {want_rip:#x})"
        ),
    );
}

fn fault_segv_maperr(c: &mut Checker) {
    let Some(hole) = unmapped_page() else {
        c.check(
            "fault_segv_maperr",
            false,
            "could not make an unmapped page",
        );
        return;
    };
    // SAFETY: the load faults and the handler steps over it.
    let got = caught(libc::SIGSEGV, faults::LOAD_LEN, || unsafe {
        faults::load(hole);
    });
    let rip = faults::load as *const () as u64;
    judge_fault(
        c,
        "fault_segv_maperr",
        got,
        libc::SIGSEGV,
        1,
        "SEGV_MAPERR",
        hole,
        rip,
    );
}

fn fault_segv_accerr(c: &mut Checker) {
    let Ok(page) = map(4096, libc::PROT_READ) else {
        c.check(
            "fault_segv_accerr",
            false,
            "mmap of a read-only page failed",
        );
        return;
    };
    let page = page as u64;
    // SAFETY: the store faults and the handler steps over it.
    let got = caught(libc::SIGSEGV, faults::STORE_LEN, || unsafe {
        faults::store(page)
    });
    let _ = unmap(page, 4096);
    let rip = faults::store as *const () as u64;
    judge_fault(
        c,
        "fault_segv_accerr",
        got,
        libc::SIGSEGV,
        2,
        "SEGV_ACCERR",
        page,
        rip,
    );
}

fn fault_ill(c: &mut Checker) {
    let at = faults::ud2 as *const () as u64;
    // SAFETY: ud2 faults and the handler steps over it.
    let got = caught(libc::SIGILL, faults::UD2_LEN, || unsafe { faults::ud2() });
    judge_fault(
        c,
        "fault_ill_illopn",
        got,
        libc::SIGILL,
        2,
        "ILL_ILLOPN",
        at,
        at,
    );
}

fn fault_fpe(c: &mut Checker) {
    let at = faults::div_address();
    // SAFETY: the division faults and the handler steps over it.
    let got = caught(libc::SIGFPE, faults::DIV_LEN, || unsafe {
        faults::divide(7, 0);
    });
    judge_fault(
        c,
        "fault_fpe_intdiv",
        got,
        libc::SIGFPE,
        1,
        "FPE_INTDIV",
        at,
        at,
    );
}

/// Distinctive values for the general registers the test controls.
const GPR: [u64; 7] = [
    0x0808_0808_0000_0008, // r8
    0x0909_0909_0000_0009, // r9
    0x1010_1010_0000_0010, // r10
    0x1212_1212_0000_0012, // r12
    0x1313_1313_0000_0013, // r13
    0x1414_1414_0000_0014, // r14
    0x1515_1515_0000_0015, // r15
];
const GPR_NAMES: [&str; 7] = ["r8", "r9", "r10", "r12", "r13", "r14", "r15"];
const GPR_REGS: [usize; 7] = [
    reg::R8,
    reg::R9,
    reg::R10,
    reg::R12,
    reg::R13,
    reg::R14,
    reg::R15,
];

fn xmm_value(i: usize) -> u128 {
    0x5a5a_0000_0000_0000_c3c3_0000_0000_0000 | ((i as u128) << 64) | (i as u128 + 0x100)
}

fn to_xmm(v: u128) -> __m128i {
    // SAFETY: both are plain 16-byte values.
    unsafe { std::mem::transmute::<u128, __m128i>(v) }
}

fn from_xmm(v: __m128i) -> u128 {
    // SAFETY: both are plain 16-byte values.
    unsafe { std::mem::transmute::<__m128i, u128>(v) }
}

/// Sets r8-r10, r12-r15 and XMM0-XMM15 to distinctive values, makes the
/// `tgkill` system call to itself in the same asm block (the handler
/// overwrites every register it can), and compares what the registers
/// hold afterwards. Also checks that the ucontext the handler got showed
/// those values and the interrupted mask.
fn sigreturn_restores_registers(c: &mut Checker) {
    let old = install(SIGUSR1, on_signal_clobber, 0, 0);
    REC.reset();
    let mask = current_mask();
    let (pid, tid) = (getpid() as u64, gettid() as u64);
    let mut g = GPR;
    let mut x: [__m128i; 16] = std::array::from_fn(|i| to_xmm(xmm_value(i)));
    let (mut rdi, mut rsi, mut rdx) = (pid, tid, SIGUSR1 as u64);
    let ret: i64;
    // SAFETY: tgkill with live arguments; every register the asm touches
    // is an operand; the syscall clobbers only rax, rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_tgkill => ret,
            inout("rdi") rdi, inout("rsi") rsi, inout("rdx") rdx,
            inout("r8") g[0], inout("r9") g[1], inout("r10") g[2],
            inout("r12") g[3], inout("r13") g[4], inout("r14") g[5], inout("r15") g[6],
            inout("xmm0") x[0], inout("xmm1") x[1], inout("xmm2") x[2], inout("xmm3") x[3],
            inout("xmm4") x[4], inout("xmm5") x[5], inout("xmm6") x[6], inout("xmm7") x[7],
            inout("xmm8") x[8], inout("xmm9") x[9], inout("xmm10") x[10], inout("xmm11") x[11],
            inout("xmm12") x[12], inout("xmm13") x[13], inout("xmm14") x[14],
            inout("xmm15") x[15],
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    restore(SIGUSR1, &old);
    let handled = REC.count();

    let mut wrong = Vec::new();
    for (i, name) in GPR_NAMES.iter().enumerate() {
        if g[i] != GPR[i] {
            wrong.push(format!("{name} {:#x}", g[i]));
        }
    }
    for (name, got, want) in [
        ("rdi", rdi, pid),
        ("rsi", rsi, tid),
        ("rdx", rdx, SIGUSR1 as u64),
    ] {
        if got != want {
            wrong.push(format!("{name} {got:#x}"));
        }
    }
    for (i, v) in x.iter().enumerate() {
        if from_xmm(*v) != xmm_value(i) {
            wrong.push(format!("xmm{i} {:#x}", from_xmm(*v)));
        }
    }
    c.check(
        "sigreturn_restores_registers",
        ret == 0 && handled == 1 && wrong.is_empty(),
        format!(
            "tgkill returned {ret}, handled {handled}; r8-r10, r12-r15, rdi, rsi, rdx and \
             xmm0-xmm15 after the handler clobbered them: {}",
            if wrong.is_empty() {
                "all as before".to_string()
            } else {
                format!("wrong: {}", wrong.join(", "))
            }
        ),
    );

    let mut frame_wrong = Vec::new();
    for (i, name) in GPR_NAMES.iter().enumerate() {
        let seen = SEEN_GREGS[GPR_REGS[i]].load(SeqCst);
        if seen != GPR[i] {
            frame_wrong.push(format!("{name} {seen:#x}"));
        }
    }
    for (name, r, want) in [
        ("rdi", reg::RDI, pid),
        ("rsi", reg::RSI, tid),
        ("rdx", reg::RDX, SIGUSR1 as u64),
    ] {
        let seen = SEEN_GREGS[r].load(SeqCst);
        if seen != want {
            frame_wrong.push(format!("{name} {seen:#x}"));
        }
    }
    for i in 0..16 {
        let lo = SEEN_XMM[2 * i].load(SeqCst) as u128;
        let hi = SEEN_XMM[2 * i + 1].load(SeqCst) as u128;
        if lo | (hi << 64) != xmm_value(i) {
            frame_wrong.push(format!("xmm{i} {:#x}", lo | (hi << 64)));
        }
    }
    let seen_mask = SEEN_SIGMASK.load(SeqCst);
    if seen_mask != mask {
        frame_wrong.push(format!("uc_sigmask {}", abi::names(seen_mask)));
    }
    c.check(
        "sigframe_holds_interrupted_state",
        handled == 1 && frame_wrong.is_empty(),
        format!(
            "the handler's ucontext (gregs, fpstate xmm0-xmm15, uc_sigmask): {}",
            if frame_wrong.is_empty() {
                "all the interrupted values".to_string()
            } else {
                format!("wrong: {}", frame_wrong.join(", "))
            }
        ),
    );
}
