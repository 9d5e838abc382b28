//! Light-weight processes: the kernel's unit of execution.
//!
//! An `Lwp` belongs to one process for its whole life, has an id unique in
//! that process, a name, flags, a scheduling state (`SchedInfo`, behind the
//! LWP's `sched` lock), a kernel stack with a guard page, a signal hold
//! mask, a saved context and, if it uses them, saved FPU/SSE registers.
//!
//! States (`LwpState`): `Idle` (created, never started: NetBSD `LSIDL`,
//! illumos `TS_STOPPED`, FreeBSD `RFSTOPPED`) -> `Runnable` (on a run queue)
//! <-> `OnCpu` <-> `Sleeping` / `Stopped`, and finally `Zombie`.
//!
//! Locks, outer first: the process's LWP list -> `sched` (state) -> a CPU's
//! run queue. `exit` (a sleeping mutex) and the FPU area are leaves. The
//! `on_cpu` flag is the hand-off between the CPU switching an LWP out and the
//! CPU switching it in: a CPU may only resume an LWP once `on_cpu` is clear.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::Process;
use crate::arch::context::Context;
use crate::arch::fpu::FpuState;
use crate::mm::stack::KernelStack;
use crate::sync::{Condvar, IrqSpinLock, Mutex};

/// An LWP id, unique within its process (illumos `lwpid_t`).
pub type LwpId = u32;

/// A set of signals, bit `n - 1` for signal `n` (Linux numbering, 1..=64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SignalSet(pub u64);

impl SignalSet {
    pub const EMPTY: SignalSet = SignalSet(0);
    /// Every signal, `SIGKILL` and `SIGSTOP` included (illumos `fillset`).
    pub const ALL: SignalSet = SignalSet(u64::MAX);

    pub fn contains(self, signal: u32) -> bool {
        (1..=64).contains(&signal) && self.0 & (1 << (signal - 1)) != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LwpState {
    Idle,
    Runnable,
    OnCpu,
    Sleeping,
    /// Parked by a stop request (`pstop`, with the control channel).
    #[allow(dead_code, reason = "entered once stop requests exist (pstop)")]
    Stopped,
    Zombie,
}

/// Scheduling classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedClass {
    /// Fixed priority, round robin among equals (NetBSD `SCHED_RR`).
    FixedRoundRobin,
    /// Timeshare: priority falls with CPU use, rises with sleep
    /// (NetBSD `SCHED_OTHER`, `KTHREAD_TS`).
    Timeshare,
    /// The per-CPU idle LWPs only.
    Idle,
}

/// Priorities run from 0 (lowest) to `MAX_PRIORITY`; higher runs first.
pub type Priority = u8;
pub const MAX_PRIORITY: Priority = 127;
/// The top of the timeshare range (NetBSD `MAXPRI_USER`).
pub const MAXPRI_USER: Priority = 63;
/// The default kernel-thread priority (NetBSD `PRI_KTHREAD`).
pub const PRI_KTHREAD: Priority = 96;

/// Why a sleeping LWP was made runnable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeReason {
    Notified,
    TimedOut,
    Interrupted,
}

/// The scheduling state of one LWP, under its `sched` lock.
#[derive(Debug)]
pub struct SchedInfo {
    pub state: LwpState,
    pub class: SchedClass,
    /// The priority the LWP was given (timeshare priorities move below it).
    pub base_priority: Priority,
    /// The priority it runs at now.
    pub priority: Priority,
    /// The CPU it last ran on.
    pub last_cpu: usize,
    /// Ticks left in its timeslice.
    pub timeslice: u32,
    /// Timeshare: ticks of CPU used since its priority last fell.
    pub usage_ticks: u32,
    /// Incremented for every sleep, so stale wake-ups are recognised.
    pub sleep_generation: u64,
    pub sleep_interruptible: bool,
    /// The tick at which the current sleep began (timeshare boost).
    pub slept_at_tick: u64,
    pub wake_reason: Option<WakeReason>,
    /// The code that put it to sleep last (its wait channel).
    pub wait_channel: Option<&'static core::panic::Location<'static>>,
}

/// LWP flags.
pub mod flags {
    /// A kernel-only LWP inside a user process (illumos `TP_KTHREAD`): it
    /// never enters user mode.
    pub const KTHREAD: u32 = 1 << 0;
    /// A kernel thread (FreeBSD `TDP_KTHREAD`): created by a kernel-thread
    /// interface, in proc0 or a kernel process, or marked `KTHREAD`.
    pub const KERNEL_THREAD: u32 = 1 << 1;
    /// Does its own locking (NetBSD `KTHREAD_MPSAFE`); without it the LWP
    /// holds the big kernel lock whenever it runs.
    pub const MPSAFE: u32 = 1 << 2;
    /// Services interrupts (NetBSD `KTHREAD_INTR`).
    pub const INTR: u32 = 1 << 3;
    /// Must be joined (NetBSD `KTHREAD_MUSTJOIN`, or a joinable native
    /// thread).
    pub const JOINABLE: u32 = 1 << 4;
    /// A CPU's idle LWP.
    pub const IDLE_LOOP: u32 = 1 << 5;
    /// Uses the FPU/SSE registers: they are saved and restored on switches.
    pub const USES_FPU: u32 = 1 << 6;
    /// Held at creation (illumos `TP_HOLDLWP`): not startable until cleared.
    pub const HOLD: u32 = 1 << 7;
    /// Runs in user mode (a thread of the guest process).
    pub const USER: u32 = 1 << 8;
}

/// How an LWP ended, and whether it was joined.
#[derive(Debug, Default)]
pub struct ExitState {
    pub exited: bool,
    pub code: i32,
    pub joined: bool,
    /// NetBSD `MUSTJOIN`: `kthread_join` has been called.
    pub join_requested: bool,
}

/// Cooperative suspension (FreeBSD `TDF_KTH_SUSP`), under the process's
/// `suspend_lock`.
#[derive(Debug, Default)]
pub struct SuspendState {
    pub requested: bool,
}

pub struct Lwp {
    pub id: LwpId,
    /// A system-wide unique number, for logs and debuggers.
    pub serial: u64,
    pub process: Arc<Process>,
    bound_cpu: Option<usize>,
    /// The top of the kernel stack (0 for code adopted at boot); where
    /// entries from user mode put their trap frame.
    pub stack_top: u64,
    /// User mode's FS base (thread-local storage), loaded when it runs.
    pub fs_base: AtomicU64,
    /// Linux `clear_child_tid`: zeroed and futex-woken when the LWP exits.
    pub clear_child_tid: AtomicU64,
    name: IrqSpinLock<String>,
    alternate_stack: IrqSpinLock<(u64, u32, u64)>,
    flags: AtomicU32,
    pub sched: IrqSpinLock<SchedInfo>,
    /// Set while a CPU runs this LWP or is still switching away from it.
    pub on_cpu: AtomicBool,
    pub context: Context,
    pub fpu: IrqSpinLock<Option<Box<FpuState>>>,
    stack: IrqSpinLock<Option<KernelStack>>,
    hold_mask: AtomicU64,
    /// A pending interruption (later: signals, stop requests, exit).
    interrupt_pending: AtomicBool,
    entry: IrqSpinLock<Option<Box<dyn FnOnce() + Send>>>,
    pub exit: Mutex<ExitState>,
    pub exit_changed: Condvar,
    pub suspend: IrqSpinLock<SuspendState>,
    /// The channel suspenders and the suspended thread sleep on (FreeBSD's
    /// `&td->td_flags`), under the process's `suspend_lock`.
    pub suspend_changed: Condvar,
    /// Its pending signals and restart state (under the process's signal
    /// lock).
    pub signals: IrqSpinLock<crate::signal::LwpSignals>,
    /// Parked by a process stop (`signal::stop`).
    parked: AtomicBool,
    /// While parked (or dumping core): its user registers, for `pstack`
    /// and core files.
    user_snapshot: IrqSpinLock<Option<Box<crate::signal::UserSnapshot>>>,
    /// Ticks spent on a CPU.
    pub cpu_ticks: AtomicU64,
    /// Of those, ticks that found it in user mode.
    pub user_ticks: AtomicU64,
    /// Context switches into this LWP.
    pub switches: AtomicU64,
}

static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// What an LWP is made from; see `kthread::Builder` for the public way.
pub struct LwpParts {
    pub id: LwpId,
    pub process: Arc<Process>,
    pub name: String,
    pub flags: u32,
    pub class: SchedClass,
    pub priority: Priority,
    pub bound_cpu: Option<usize>,
    pub hold_mask: SignalSet,
    pub stack: Option<KernelStack>,
    pub context: Context,
    pub entry: Option<Box<dyn FnOnce() + Send>>,
    pub state: LwpState,
}

impl Lwp {
    pub fn new(parts: LwpParts) -> Lwp {
        let fpu = (parts.flags & flags::USES_FPU != 0).then(|| Box::new(FpuState::initial()));
        Lwp {
            id: parts.id,
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            process: parts.process,
            bound_cpu: parts.bound_cpu,
            stack_top: parts.stack.as_ref().map_or(0, |stack| stack.top()),
            fs_base: AtomicU64::new(0),
            clear_child_tid: AtomicU64::new(0),
            name: IrqSpinLock::new(parts.name),
            alternate_stack: IrqSpinLock::new((0, 0, 0)),
            flags: AtomicU32::new(parts.flags),
            sched: IrqSpinLock::new(SchedInfo {
                state: parts.state,
                class: parts.class,
                base_priority: parts.priority,
                priority: parts.priority,
                last_cpu: parts.bound_cpu.unwrap_or(0),
                timeslice: 0,
                usage_ticks: 0,
                sleep_generation: 0,
                sleep_interruptible: false,
                slept_at_tick: 0,
                wake_reason: None,
                wait_channel: None,
            }),
            on_cpu: AtomicBool::new(parts.state == LwpState::OnCpu),
            context: parts.context,
            fpu: IrqSpinLock::new(fpu),
            stack: IrqSpinLock::new(parts.stack),
            hold_mask: AtomicU64::new(parts.hold_mask.0),
            interrupt_pending: AtomicBool::new(false),
            entry: IrqSpinLock::new(parts.entry),
            exit: Mutex::new(ExitState::default()),
            exit_changed: Condvar::new(),
            suspend: IrqSpinLock::new(SuspendState::default()),
            suspend_changed: Condvar::new(),
            signals: IrqSpinLock::new(crate::signal::LwpSignals::default()),
            parked: AtomicBool::new(false),
            user_snapshot: IrqSpinLock::new(None),
            cpu_ticks: AtomicU64::new(0),
            user_ticks: AtomicU64::new(0),
            switches: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> String {
        self.name.lock().clone()
    }

    pub fn set_name(&self, name: &str) {
        *self.name.lock() = String::from(name);
    }

    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Acquire)
    }

    pub fn has_flag(&self, flag: u32) -> bool {
        self.flags() & flag != 0
    }

    /// Sets `set` and clears `clear` in one step.
    pub fn update_flags(&self, set: u32, clear: u32) {
        let _ = self
            .flags
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                Some((old & !clear) | set)
            });
    }

    pub fn hold_mask(&self) -> SignalSet {
        SignalSet(self.hold_mask.load(Ordering::Acquire))
    }

    pub fn set_hold_mask(&self, mask: SignalSet) {
        self.hold_mask.store(mask.0, Ordering::Release);
    }

    /// The alternate signal stack: (base, flags, size); size 0 = none.
    pub fn alternate_stack(&self) -> (u64, u32, u64) {
        *self.alternate_stack.lock()
    }

    pub fn set_alternate_stack(&self, stack: (u64, u32, u64)) {
        *self.alternate_stack.lock() = stack;
    }

    pub fn state(&self) -> LwpState {
        self.sched.lock().state
    }

    pub fn priority(&self) -> Priority {
        self.sched.lock().priority
    }

    pub fn class(&self) -> SchedClass {
        self.sched.lock().class
    }

    /// The CPU the LWP is bound to, if any (fixed at creation, so readable
    /// without its locks).
    pub fn bound_cpu(&self) -> Option<usize> {
        self.bound_cpu
    }

    /// The entry function, taken once when the LWP first runs.
    pub fn take_entry(&self) -> Option<Box<dyn FnOnce() + Send>> {
        self.entry.lock().take()
    }

    /// The kernel stack, taken once the LWP is a zombie and off every CPU.
    pub fn take_stack(&self) -> Option<KernelStack> {
        self.stack.lock().take()
    }

    /// Top and guard addresses of the kernel stack, if it still has one.
    pub fn stack_bounds(&self) -> Option<(u64, u64)> {
        self.stack
            .lock()
            .as_ref()
            .map(|stack| (stack.guard_page(), stack.top()))
    }

    /// Whether a process stop has it parked.
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Acquire)
    }

    pub fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Ordering::Release);
    }

    /// The user state it left while parked or dumping core.
    pub fn user_snapshot(&self) -> Option<crate::signal::UserSnapshot> {
        self.user_snapshot.lock().as_deref().cloned()
    }

    pub fn set_user_snapshot(&self, snapshot: Option<crate::signal::UserSnapshot>) {
        let boxed = snapshot.map(Box::new);
        let old = core::mem::replace(&mut *self.user_snapshot.lock(), boxed);
        drop(old);
    }

    /// Whether it has finished (an LWP on its way out leaves its process's
    /// list before this turns true).
    pub fn has_exited(&self) -> bool {
        self.state() == LwpState::Zombie
    }

    /// Where it sleeps: the source location that put it to sleep.
    pub fn wait_channel(&self) -> Option<&'static core::panic::Location<'static>> {
        let info = self.sched.lock();
        (info.state == LwpState::Sleeping)
            .then_some(info.wait_channel)
            .flatten()
    }

    pub fn set_interrupt_pending(&self, pending: bool) {
        self.interrupt_pending.store(pending, Ordering::Release);
    }

    pub fn interrupt_pending(&self) -> bool {
        self.interrupt_pending.load(Ordering::Acquire)
    }
}

impl core::fmt::Debug for Lwp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Lwp({}/{} {:?})", self.process.pid, self.id, self.name())
    }
}
