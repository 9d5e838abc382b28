//! Linux's x86_64 signal interface as the kernel defines it (not as libc
//! wraps it): 64-bit signal sets, the `rt_sigaction` structure, the
//! `ucontext` a handler receives, and thin raw-call wrappers. libc's
//! `sigaction` is used only to install handlers, because it supplies the
//! `SA_RESTORER` trampoline that `rt_sigreturn` needs.

use image_support::{SysResult, sys};
use std::ffi::c_void;

/// A kernel signal set: bit `sig - 1` stands for signal `sig`.
pub type SigSet = u64;
/// The only `sigsetsize` Linux x86_64 accepts.
pub const SIGSET_SIZE: u64 = 8;

/// An address no program has mapped (Linux keeps the first 64 KiB free).
pub const UNMAPPED: u64 = 0x1000;
/// The first byte of the kernel half.
pub const KERNEL_ADDR: u64 = 0xffff_8000_0000_0000;

/// The set holding only `sig`.
pub const fn bit(sig: i32) -> SigSet {
    1u64 << (sig - 1)
}

/// Signal numbers in `set`, for printing.
pub fn names(set: SigSet) -> String {
    let sigs: Vec<String> = (1..=64)
        .filter(|s| set & bit(*s) != 0)
        .map(|s| s.to_string())
        .collect();
    format!("{{{}}}", sigs.join(","))
}

pub fn getpid() -> i32 {
    // SAFETY: getpid touches no memory.
    unsafe { sys(libc::SYS_getpid, &[]) }.unwrap_or(-1) as i32
}

pub fn gettid() -> i32 {
    // SAFETY: gettid touches no memory.
    unsafe { sys(libc::SYS_gettid, &[]) }.unwrap_or(-1) as i32
}

pub fn kill(pid: i32, sig: i32) -> SysResult {
    // SAFETY: kill touches no memory; callers never pass pid <= 0.
    unsafe { sys(libc::SYS_kill, &[pid as u64, sig as u64]) }
}

pub fn tgkill(tgid: i32, tid: i32, sig: i32) -> SysResult {
    // SAFETY: tgkill touches no memory.
    unsafe { sys(libc::SYS_tgkill, &[tgid as u64, tid as u64, sig as u64]) }
}

/// Sends `sig` to the calling thread (what `raise` does).
pub fn raise_here(sig: i32) -> SysResult {
    tgkill(getpid(), gettid(), sig)
}

/// `rt_sigprocmask(how, &set, &old)`; the old mask.
pub fn sigprocmask(how: i32, set: SigSet) -> Result<SigSet, i32> {
    let mut old: SigSet = 0;
    // SAFETY: both pointers are live u64s of SIGSET_SIZE bytes.
    unsafe {
        sys(
            libc::SYS_rt_sigprocmask,
            &[
                how as u64,
                &set as *const SigSet as u64,
                &mut old as *mut SigSet as u64,
                SIGSET_SIZE,
            ],
        )
    }
    .map(|_| old)
}

/// The calling thread's signal mask (read with a null `set`).
pub fn current_mask() -> SigSet {
    let mut old: SigSet = 0;
    // SAFETY: a null set only reads the mask into a live u64.
    let r = unsafe {
        sys(
            libc::SYS_rt_sigprocmask,
            &[
                libc::SIG_BLOCK as u64,
                0,
                &mut old as *mut SigSet as u64,
                SIGSET_SIZE,
            ],
        )
    };
    r.map(|_| old).unwrap_or(u64::MAX)
}

/// Blocks `set`; the old mask.
pub fn block(set: SigSet) -> SigSet {
    sigprocmask(libc::SIG_BLOCK, set).unwrap_or(u64::MAX)
}

/// Unblocks `set`; the old mask.
pub fn unblock(set: SigSet) -> SigSet {
    sigprocmask(libc::SIG_UNBLOCK, set).unwrap_or(u64::MAX)
}

/// Sets the mask to `set`; the old mask.
pub fn set_mask(set: SigSet) -> SigSet {
    sigprocmask(libc::SIG_SETMASK, set).unwrap_or(u64::MAX)
}

/// `rt_sigpending`: the signals pending for the thread or the process.
pub fn pending() -> SigSet {
    let mut set: SigSet = 0;
    // SAFETY: a live u64 of SIGSET_SIZE bytes.
    let r = unsafe {
        sys(
            libc::SYS_rt_sigpending,
            &[&mut set as *mut SigSet as u64, SIGSET_SIZE],
        )
    };
    r.map(|_| set).unwrap_or(u64::MAX)
}

/// The kernel's `struct sigaction`, as `rt_sigaction` reads and writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelSigaction {
    /// The handler, or `SIG_DFL` (0) / `SIG_IGN` (1).
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: SigSet,
}

/// Raw `rt_sigaction(sig, act, &old, 8)`; the old action.
pub fn raw_sigaction(sig: i32, act: Option<&KernelSigaction>) -> Result<KernelSigaction, i32> {
    let mut old = KernelSigaction::default();
    let act = act.map_or(0, |a| a as *const KernelSigaction as u64);
    // SAFETY: `act` is null or a live KernelSigaction, `old` a live one.
    unsafe {
        sys(
            libc::SYS_rt_sigaction,
            &[
                sig as u64,
                act,
                &mut old as *mut KernelSigaction as u64,
                SIGSET_SIZE,
            ],
        )
    }
    .map(|_| old)
}

/// The handler stored for `sig` (0 = `SIG_DFL`, 1 = `SIG_IGN`).
pub fn handler_of(sig: i32) -> Option<u64> {
    raw_sigaction(sig, None).ok().map(|a| a.handler)
}

/// A `SA_SIGINFO` handler.
pub type Handler = extern "C" fn(i32, *mut libc::siginfo_t, *mut c_void);

fn libc_mask(set: SigSet) -> libc::sigset_t {
    // SAFETY: sigemptyset and sigaddset only write the local set.
    unsafe {
        let mut m: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut m);
        for sig in (1..=64).filter(|s| set & bit(*s) != 0) {
            libc::sigaddset(&mut m, sig);
        }
        m
    }
}

/// Sets the action of `sig` through libc; the previous action.
fn set_action(sig: i32, handler: usize, flags: i32, mask: SigSet) -> libc::sigaction {
    // SAFETY: sigaction reads and writes the two live structures.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler;
        act.sa_flags = flags;
        act.sa_mask = libc_mask(mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, &act, &mut old) != 0 {
            panic!(
                "sigaction({sig}) failed: {}",
                std::io::Error::last_os_error()
            );
        }
        old
    }
}

/// Installs `handler` for `sig` with `SA_SIGINFO | flags` and `mask`
/// blocked while it runs; the previous action, for [`restore`].
pub fn install(sig: i32, handler: Handler, flags: i32, mask: SigSet) -> libc::sigaction {
    set_action(sig, handler as usize, libc::SA_SIGINFO | flags, mask)
}

/// Sets `sig` to `SIG_DFL` or `SIG_IGN`; the previous action.
pub fn set_disposition(sig: i32, disposition: libc::sighandler_t) -> libc::sigaction {
    set_action(sig, disposition, 0, 0)
}

/// Puts back an action saved by [`install`] or [`set_disposition`].
pub fn restore(sig: i32, old: &libc::sigaction) {
    // SAFETY: `old` is a complete action libc gave us.
    unsafe {
        libc::sigaction(sig, old, std::ptr::null_mut());
    }
}

/// The fields of a `siginfo_t` the checks read (Linux x86_64 layout:
/// `si_signo`, `si_errno`, `si_code`, then the union at offset 16, whose
/// first member is `si_pid` for kill-like signals and `si_addr` for
/// faults).
#[derive(Clone, Copy, Debug, Default)]
pub struct Info {
    pub signo: i32,
    pub code: i32,
    pub pid: i32,
    pub addr: u64,
}

/// Reads `info`.
///
/// # Safety
/// `info` must point to a live `siginfo_t` (what a handler receives).
pub unsafe fn read_info(info: *const libc::siginfo_t) -> Info {
    // SAFETY: the caller's promise; the union is 8-aligned at offset 16.
    unsafe {
        let union = (info as *const u8).add(16);
        Info {
            signo: (*info).si_signo,
            code: (*info).si_code,
            pid: *(union as *const i32),
            addr: *(union as *const u64),
        }
    }
}

/// Linux's x86_64 `struct ucontext` (the third handler argument):
/// `uc_mcontext` is `struct sigcontext`, whose first 23 words are the
/// general registers in `REG_*` order, then the pointer to the saved FPU
/// state (`fxsave` layout), then 8 reserved words; `uc_sigmask` follows.
#[repr(C)]
pub struct UContext {
    pub flags: u64,
    pub link: u64,
    /// `uc_stack`: `ss_sp`, `ss_flags` (padded), `ss_size`.
    pub stack: [u64; 3],
    pub gregs: [u64; 23],
    pub fpstate: u64,
    pub reserved: [u64; 8],
    /// The mask `rt_sigreturn` puts back.
    pub sigmask: SigSet,
}

/// Indices into [`UContext::gregs`] (`REG_*`).
pub mod reg {
    pub const R8: usize = 0;
    pub const R9: usize = 1;
    pub const R10: usize = 2;
    pub const R12: usize = 4;
    pub const R13: usize = 5;
    pub const R14: usize = 6;
    pub const R15: usize = 7;
    pub const RDI: usize = 8;
    pub const RSI: usize = 9;
    pub const RDX: usize = 12;
    pub const RIP: usize = 16;
}

/// Where XMM0 lies in the `fxsave` area; each register takes 16 bytes.
pub const FXSAVE_XMM0: usize = 160;

/// `mmap` of `len` fresh anonymous bytes with `prot`.
pub fn map(len: u64, prot: i32) -> SysResult {
    // SAFETY: a new private anonymous mapping overlaps nothing in use.
    unsafe {
        sys(
            libc::SYS_mmap,
            &[
                0,
                len,
                prot as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )
    }
}

/// `munmap` of a mapping this image made and no longer uses.
pub fn unmap(addr: u64, len: u64) -> SysResult {
    // SAFETY: callers pass only mappings of their own that nothing uses.
    unsafe { sys(libc::SYS_munmap, &[addr, len]) }
}

/// A page-aligned address with nothing mapped there: a page mapped and
/// unmapped again.
pub fn unmapped_page() -> Option<u64> {
    let page = map(4096, libc::PROT_READ).ok()? as u64;
    unmap(page, 4096).ok()?;
    Some(page)
}

/// `FUTEX_WAIT` (private) on `word` while it holds `expected`; no timeout.
pub fn futex_wait(word: &std::sync::atomic::AtomicU32, expected: u32) -> SysResult {
    // SAFETY: `word` is a live AtomicU32; FUTEX_WAIT only reads it.
    unsafe {
        sys(
            libc::SYS_futex,
            &[
                word.as_ptr() as u64,
                (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as u64,
                expected as u64,
                0,
            ],
        )
    }
}

/// `FUTEX_WAKE` (private) of every waiter on `word`.
pub fn futex_wake(word: &std::sync::atomic::AtomicU32) -> SysResult {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        sys(
            libc::SYS_futex,
            &[
                word.as_ptr() as u64,
                (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as u64,
                i32::MAX as u64,
            ],
        )
    }
}

/// A `timespec` of `ms` milliseconds.
pub fn timespec_ms(ms: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ms / 1000) as _,
        tv_nsec: ((ms % 1000) * 1_000_000) as _,
    }
}

/// A `timespec` in nanoseconds.
pub fn nanos(ts: &libc::timespec) -> i128 {
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}
