//! Signals of the guest process, with Linux's numbers, structures and
//! semantics; process stops (`SIGSTOP`, `pstop`); the representative-LWP
//! rule (illumos `prchoose`).
//!
//! Owns, per process (`Process::signals`, an `IrqSpinLock` that is the
//! process's signal lock, Linux's `siglock`): the dispositions, the
//! process-directed pending set and queue, and every LWP's own pending set
//! and queue (`Lwp::signals`, only touched with the process's signal lock
//! held). Per process too: the stop state (`Process::stop`, a sleeping
//! mutex, taken after no other lock) and its condition variable.
//!
//! Lock order: process signal lock -> an LWP's `signals` -> that LWP's
//! `sched`. The stop mutex is never held while taking the signal lock.
//!
//! Rules:
//! - A process-directed signal is queued on the process and one LWP is
//!   woken to take it: a user LWP that does not hold it. Kernel-only LWPs
//!   (illumos `TP_KTHREAD`) hold every signal and are never chosen; no
//!   signal ever wakes or interrupts them. The same rule picks the
//!   representative LWP (`representative`).
//! - Signals are taken on the way back to user mode (`on_return_to_user`):
//!   a handler gets a Linux `rt_sigframe` on the user stack or the
//!   alternate stack; default actions terminate, dump core, stop, continue
//!   or ignore. `SIGKILL` and `SIGSTOP` are never caught or held.
//! - A fault is a forced signal for the faulting LWP: held or ignored, it
//!   is unheld and reset to the default action first (Linux
//!   `force_sig_fault`).
//! - Stops: a process is stopped when a stop reason is set (`SIGSTOP`-like
//!   signals, `pstop`, a core dump in progress). User LWPs park on their
//!   way back to user mode, kernel-only LWPs in their next interruptible
//!   sleep (`stop_point`). A parked LWP leaves a snapshot of its user
//!   registers for `pstack` and core files.

mod deliver;
mod frame;
pub mod stop;
pub(crate) mod tests;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;

pub use self::deliver::mask_changed as deliver_mask_changed;
pub use self::deliver::{force_fault, is_ignored, on_return_to_user, send_to_lwp, send_to_process};
pub use self::frame::{SS_DISABLE, SS_ONSTACK, alternate_stack_flags, sigreturn};
pub use self::stop::{StopReason, resume_process, stop_point, stop_process};
use crate::arch::trap::TrapFrame;
use crate::errno::Errno;
use crate::proc::Process;
use crate::proc::lwp::{Lwp, SignalSet, flags};

pub use self::numbers::*;

/// Linux's signal numbers, all of them (not each is named in the kernel).
#[allow(dead_code, reason = "the complete table of Linux signal numbers")]
mod numbers {
    pub const SIGHUP: u32 = 1;
    pub const SIGINT: u32 = 2;
    pub const SIGQUIT: u32 = 3;
    pub const SIGILL: u32 = 4;
    pub const SIGTRAP: u32 = 5;
    pub const SIGABRT: u32 = 6;
    pub const SIGBUS: u32 = 7;
    pub const SIGFPE: u32 = 8;
    pub const SIGKILL: u32 = 9;
    pub const SIGUSR1: u32 = 10;
    pub const SIGSEGV: u32 = 11;
    pub const SIGUSR2: u32 = 12;
    pub const SIGPIPE: u32 = 13;
    pub const SIGALRM: u32 = 14;
    pub const SIGTERM: u32 = 15;
    pub const SIGSTKFLT: u32 = 16;
    pub const SIGCHLD: u32 = 17;
    pub const SIGCONT: u32 = 18;
    pub const SIGSTOP: u32 = 19;
    pub const SIGTSTP: u32 = 20;
    pub const SIGTTIN: u32 = 21;
    pub const SIGTTOU: u32 = 22;
    pub const SIGURG: u32 = 23;
    pub const SIGXCPU: u32 = 24;
    pub const SIGXFSZ: u32 = 25;
    pub const SIGVTALRM: u32 = 26;
    pub const SIGPROF: u32 = 27;
    pub const SIGWINCH: u32 = 28;
    pub const SIGIO: u32 = 29;
    pub const SIGPWR: u32 = 30;
    pub const SIGSYS: u32 = 31;
    /// The first real-time signal (queued, not merged).
    pub const SIGRTMIN: u32 = 32;
    pub const NSIG: u32 = 64;
}

/// The names, index = number (`SIGRTMIN`.. are `RT<n>`).
const NAMES: [&str; 32] = [
    "", "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// The name of a signal without `SIG` (`SEGV`), or None past 31.
pub fn name(signal: u32) -> Option<&'static str> {
    NAMES
        .get(signal as usize)
        .filter(|name| !name.is_empty())
        .copied()
}

/// A signal from a number or a name, with or without `SIG` (`9`, `KILL`,
/// `SIGKILL`, `sigkill`).
pub fn parse(text: &str) -> Option<u32> {
    if let Ok(number) = text.parse::<u32>() {
        return (1..=NSIG).contains(&number).then_some(number);
    }
    let upper = text.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    NAMES
        .iter()
        .position(|name| !name.is_empty() && *name == bare)
        .map(|index| index as u32)
}

/// Signals that can never be caught, held or ignored.
pub const UNBLOCKABLE: SignalSet = SignalSet((1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1)));

pub fn bit(signal: u32) -> u64 {
    1 << (signal - 1)
}

/// What a signal does when its disposition is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    Terminate,
    Core,
    Stop,
    Continue,
    Ignore,
}

pub fn default_action(signal: u32) -> DefaultAction {
    match signal {
        SIGQUIT | SIGILL | SIGTRAP | SIGABRT | SIGBUS | SIGFPE | SIGSEGV | SIGXCPU | SIGXFSZ
        | SIGSYS => DefaultAction::Core,
        SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU => DefaultAction::Stop,
        SIGCONT => DefaultAction::Continue,
        SIGCHLD | SIGURG | SIGWINCH => DefaultAction::Ignore,
        _ => DefaultAction::Terminate,
    }
}

/// `si_code` values.
pub mod code {
    /// Sent by `kill`.
    pub const SI_USER: i32 = 0;
    /// Sent by the kernel (the control channel's `kill`, some faults).
    pub const SI_KERNEL: i32 = 0x80;
    /// Sent by `tkill`/`tgkill`.
    pub const SI_TKILL: i32 = -6;
    pub const SEGV_MAPERR: i32 = 1;
    pub const SEGV_ACCERR: i32 = 2;
    pub const BUS_ADRALN: i32 = 1;
    pub const ILL_ILLOPN: i32 = 2;
    pub const FPE_INTDIV: i32 = 1;
    pub const FPE_FLTINV: i32 = 7;
}

/// A Linux `siginfo_t`, the fields Spindle fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SigInfo {
    pub signo: u32,
    pub errno: i32,
    pub code: i32,
    /// Sender's pid (kill-like codes).
    pub pid: u32,
    pub uid: u32,
    /// Fault address (fault codes).
    pub addr: u64,
    /// `sigval` (queued real-time signals).
    pub value: u64,
    /// For faults: the trap vector and error code (`sigcontext` fields),
    /// and where user mode faulted (0: not a fault).
    pub trapno: u64,
    pub error_code: u64,
    pub fault_rip: u64,
}

/// `sizeof(siginfo_t)`.
pub const SIGINFO_SIZE: usize = 128;

impl SigInfo {
    /// A signal sent by a process (`kill`) or by the kernel.
    pub fn from_sender(signo: u32, code: i32, pid: u32) -> SigInfo {
        SigInfo {
            signo,
            code,
            pid,
            ..SigInfo::default()
        }
    }

    /// A fault signal with its address.
    pub fn fault(signo: u32, code: i32, addr: u64) -> SigInfo {
        SigInfo {
            signo,
            code,
            addr,
            ..SigInfo::default()
        }
    }

    fn is_fault(&self) -> bool {
        self.code > 0
            && self.code != code::SI_KERNEL
            && matches!(self.signo, SIGSEGV | SIGBUS | SIGILL | SIGFPE | SIGTRAP)
    }

    /// The 128-byte Linux layout.
    pub fn to_bytes(self) -> [u8; SIGINFO_SIZE] {
        let mut bytes = [0u8; SIGINFO_SIZE];
        bytes[0..4].copy_from_slice(&self.signo.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.errno.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.code.to_le_bytes());
        if self.is_fault() {
            bytes[16..24].copy_from_slice(&self.addr.to_le_bytes());
        } else {
            bytes[16..20].copy_from_slice(&self.pid.to_le_bytes());
            bytes[20..24].copy_from_slice(&self.uid.to_le_bytes());
            bytes[24..32].copy_from_slice(&self.value.to_le_bytes());
        }
        bytes
    }
}

/// `sa_flags` bits.
pub mod sa {
    pub const SA_SIGINFO: u64 = 0x4;
    pub const SA_ONSTACK: u64 = 0x0800_0000;
    pub const SA_RESTART: u64 = 0x1000_0000;
    pub const SA_NODEFER: u64 = 0x4000_0000;
    pub const SA_RESETHAND: u64 = 0x8000_0000;
    pub const SA_RESTORER: u64 = 0x0400_0000;
}

pub const SIG_DFL: u64 = 0;
pub const SIG_IGN: u64 = 1;

/// One `struct sigaction` (x86_64 kernel layout: handler, flags, restorer,
/// mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: SignalSet,
}

pub const SIGACTION_SIZE: usize = 32;

impl SigAction {
    pub fn from_bytes(bytes: &[u8; SIGACTION_SIZE]) -> SigAction {
        let word = |index: usize| {
            u64::from_le_bytes(
                bytes[index * 8..index * 8 + 8]
                    .try_into()
                    .expect("eight bytes"),
            )
        };
        SigAction {
            handler: word(0),
            flags: word(1),
            restorer: word(2),
            mask: SignalSet(word(3)),
        }
    }

    pub fn to_bytes(self) -> [u8; SIGACTION_SIZE] {
        let mut bytes = [0u8; SIGACTION_SIZE];
        for (index, word) in [self.handler, self.flags, self.restorer, self.mask.0]
            .iter()
            .enumerate()
        {
            bytes[index * 8..index * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
        bytes
    }
}

/// Pending signals: the set, and the queue of their infos (a standard
/// signal appears at most once; real-time signals queue).
#[derive(Debug, Default)]
pub struct Pending {
    pub set: SignalSet,
    queue: VecDeque<SigInfo>,
}

/// The most queued real-time signals per pending list (Linux's
/// `RLIMIT_SIGPENDING` plays this part); beyond it `EAGAIN`.
const MAX_QUEUED: usize = 1024;

impl Pending {
    /// Queues `info`; a standard signal already pending is merged.
    fn add(&mut self, info: SigInfo) -> Result<(), Errno> {
        let signal = info.signo;
        if signal < SIGRTMIN && self.set.contains(signal) {
            return Ok(());
        }
        if self.queue.len() >= MAX_QUEUED {
            return Err(Errno::EAGAIN);
        }
        self.queue.push_back(info);
        self.set.0 |= bit(signal);
        Ok(())
    }

    /// Takes the lowest-numbered pending signal in `wanted`.
    fn take(&mut self, wanted: SignalSet) -> Option<SigInfo> {
        let candidates = self.set.0 & wanted.0;
        if candidates == 0 {
            return None;
        }
        let signal = candidates.trailing_zeros() + 1;
        let index = self.queue.iter().position(|info| info.signo == signal)?;
        let info = self.queue.remove(index)?;
        if !self.queue.iter().any(|other| other.signo == signal) {
            self.set.0 &= !bit(signal);
        }
        Some(info)
    }

    /// Drops every pending instance of the signals in `set`.
    pub fn discard(&mut self, set: SignalSet) {
        self.queue.retain(|info| !set.contains(info.signo));
        self.set.0 &= !set.0;
    }
}

/// A process's signal state, under its signal lock.
#[derive(Debug)]
pub struct ProcessSignals {
    pub actions: Box<[SigAction; NSIG as usize]>,
    pub pending: Pending,
}

impl Default for ProcessSignals {
    fn default() -> Self {
        ProcessSignals {
            actions: Box::new([SigAction::default(); NSIG as usize]),
            pending: Pending::default(),
        }
    }
}

impl ProcessSignals {
    /// Drops every pending instance of `set`, the process's and each of
    /// `process`'s LWPs' (arrival of `SIGCONT`/stop signals, `SIG_IGN`).
    pub fn discard_everywhere(&mut self, process: &Process, set: SignalSet) {
        self.pending.discard(set);
        for lwp in process.lwps() {
            lwp.signals.lock().pending.discard(set);
        }
    }
}

/// An LWP's signal state, under its process's signal lock.
#[derive(Debug, Default)]
pub struct LwpSignals {
    pub pending: Pending,
    /// The mask to put back after a temporary one (`set_temporary_mask`).
    pub saved_mask: Option<SignalSet>,
    /// What `restart_syscall` continues, after an `ERESTART_RESTARTBLOCK`.
    pub restart: Option<Restart>,
}

/// An interrupted call that `restart_syscall` continues to its original
/// deadline (Linux's `restart_block`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// A relative sleep (`nanosleep`, `clock_nanosleep`): its absolute
    /// deadline and its `rem` pointer (0: none).
    Sleep { deadline: u64, remaining: u64 },
    /// A `poll` with a timeout: its `fds` array, their count, and its
    /// absolute deadline.
    Poll { fds: u64, count: u64, deadline: u64 },
}

/// What a parked LWP left for inspectors: its user registers, FPU image
/// and (for the LWP that took a fatal signal) that signal.
#[derive(Clone)]
pub struct UserSnapshot {
    pub frame: TrapFrame,
    pub fs_base: u64,
    pub fpu: [u8; 512],
    pub siginfo: Option<SigInfo>,
}

/// Whether `lwp` may receive signals at all: a live user LWP.
fn is_signal_target(lwp: &Lwp) -> bool {
    lwp.has_flag(flags::USER) && !lwp.has_flag(flags::KTHREAD) && !lwp.has_exited()
}

/// Whether `lwp` is on a CPU or waiting for one.
fn is_running(lwp: &Lwp) -> bool {
    matches!(
        lwp.state(),
        crate::proc::lwp::LwpState::OnCpu | crate::proc::lwp::LwpState::Runnable
    )
}

/// The representative LWP of `process` (illumos `prchoose`): a user LWP,
/// never a kernel-only one, even when every user LWP is blocked. Prefers
/// one that is running or runnable, then one that does not hold every
/// signal, then any user LWP.
pub fn representative(process: &Process) -> Option<Arc<Lwp>> {
    let candidates: alloc::vec::Vec<Arc<Lwp>> = process
        .lwps()
        .into_iter()
        .filter(|lwp| is_signal_target(lwp))
        .collect();
    candidates
        .iter()
        .find(|lwp| is_running(lwp))
        .or_else(|| {
            candidates
                .iter()
                .find(|lwp| lwp.hold_mask() != SignalSet::ALL)
        })
        .or_else(|| candidates.first())
        .cloned()
}

/// The signals pending for `lwp`: its own and its process's.
pub fn pending_of(lwp: &Lwp) -> SignalSet {
    let signals = lwp.process.signals.lock();
    let own = lwp.signals.lock().pending.set;
    SignalSet(own.0 | signals.pending.set.0)
}

/// `lwp`'s own pending signals, without its process's (`ctl lwps`).
pub fn own_pending(lwp: &Lwp) -> SignalSet {
    with_lwp_signals(lwp, |own| own.pending.set)
}

/// Takes a pending signal in `wanted` for `lwp` (its own first), whatever
/// its mask (`rt_sigtimedwait`).
pub fn take_pending(lwp: &Lwp, wanted: SignalSet) -> Option<SigInfo> {
    let mut signals = lwp.process.signals.lock();
    let own = lwp.signals.lock().pending.take(wanted);
    own.or_else(|| signals.pending.take(wanted))
}

/// Runs `f` on `lwp`'s own signal state, with the locks in their order.
fn with_lwp_signals<R>(lwp: &Lwp, f: impl FnOnce(&mut LwpSignals) -> R) -> R {
    let _signals = lwp.process.signals.lock();
    f(&mut lwp.signals.lock())
}

/// Records the mask a temporary mask replaced, put back once a handler's
/// frame has saved it or no handler ran.
fn set_saved_mask(lwp: &Lwp, mask: SignalSet) {
    with_lwp_signals(lwp, |own| own.saved_mask = Some(mask));
}

fn take_saved_mask(lwp: &Lwp) -> Option<SignalSet> {
    with_lwp_signals(lwp, |own| own.saved_mask.take())
}

/// Puts `mask` in force for the rest of the calling LWP's system call
/// (Linux `set_user_sigmask`: `rt_sigsuspend`, `ppoll`, `pselect6`,
/// `epoll_pwait`), keeping the mask it replaces as the saved mask. The
/// call ends with [`restore_saved_mask_unless`]; a signal taken on the
/// way out saves the old mask in its frame (`rt_sigreturn` puts it
/// back), and with no handler the way out puts it back at once.
pub fn set_temporary_mask(lwp: &Arc<Lwp>, mask: SignalSet) {
    set_saved_mask(lwp, lwp.hold_mask());
    lwp.set_hold_mask(SignalSet(mask.0 & !UNBLOCKABLE.0));
    deliver::mask_changed(lwp);
}

/// Linux `restore_saved_sigmask_unless(interrupted)`: a call that was not
/// ended by a signal puts the saved mask back now (a signal it unblocked
/// stays pending, held again); an interrupted one leaves it for the way
/// back to user mode, so the handler runs under the temporary mask and
/// the old one returns only after it. Without an interruption pending
/// the way back would not look, so the mask is put back here too.
pub fn restore_saved_mask_unless(lwp: &Arc<Lwp>, interrupted: bool) {
    if interrupted && lwp.interrupt_pending() {
        return;
    }
    if let Some(mask) = take_saved_mask(lwp) {
        lwp.set_hold_mask(mask);
        deliver::mask_changed(lwp);
    }
}

/// Records where an interrupted sleep should end when `restart_syscall`
/// continues it: the deadline and the user's `rem` pointer (or 0).
pub fn set_restart(lwp: &Lwp, restart: Restart) {
    with_lwp_signals(lwp, |own| own.restart = Some(restart));
}

pub fn take_restart(lwp: &Lwp) -> Option<Restart> {
    with_lwp_signals(lwp, |own| own.restart.take())
}

/// Writes a core file of a process whose user LWPs are all parked (the
/// first LWP named, if any, took the fatal signal); returns whether it did.
pub type CoreWriter = fn(&Arc<Process>, u32, Option<crate::proc::lwp::LwpId>) -> bool;

static CORE_WRITER: spin::Once<CoreWriter> = spin::Once::new();

/// Installs where core files go (the control channel, when it has a port).
pub fn set_core_writer(writer: CoreWriter) {
    CORE_WRITER.call_once(|| writer);
}

fn core_writer() -> Option<CoreWriter> {
    CORE_WRITER.get().copied()
}
