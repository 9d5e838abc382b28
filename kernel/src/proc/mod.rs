//! Processes: proc0 (the kernel process), kernel processes, and (from the
//! guest-process issue on) the user process.
//!
//! Owns the process table (`TABLE`: pid -> process, an `IrqSpinLock`) and
//! the system-wide limits on processes and LWPs (`LIMITS`, atomics, set from
//! the command line `kern.maxproc=`/`kern.maxlwp=` or by tests). A process
//! has a pid, a name, state flags (`SYSTEM`, `EXITING`, `STOPPED`,
//! `ZOMBIE`), its LWPs (the `lwps` lock, taken before any LWP's own locks
//! and before the leaves `vm` and `departed`: an exiting LWP of a user
//! process leaves the list and joins `departed` in one step, so the LWP
//! whose exit empties the list knows every other one is in `departed`),
//! an LWP id allocator, a sleeping mutex `suspend_lock` (FreeBSD's process
//! mutex for cooperative suspension) and its exit status.
//!
//! States: live -> exiting (`EXITING`: no new LWPs) -> zombie (no LWPs
//! left; out of the table; the status stays readable through handles).
//! `ExitTimes` records when exit began, how many kernel-only LWPs (workers)
//! were inside then, and when the last LWP left: the teardown figures.
//! A kernel process (not proc0) becomes a zombie when its last LWP exits.

pub mod lwp;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use spin::Once;

use self::lwp::{Lwp, LwpId};
use crate::errno::Errno;
use crate::sync::{Condvar, IrqSpinLock, Mutex};

pub type Pid = u32;

/// A process's exit, timed (`Process::exit_times`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ExitTimes {
    /// When `begin_exit` first ran (kernel clock, ns).
    pub began_ns: Option<u64>,
    /// Kernel-only LWPs (workers) inside the process when exit began.
    pub workers: usize,
    /// When its last LWP left (`finish_exit`).
    pub last_lwp_gone_ns: Option<u64>,
}

/// Process flags.
pub mod flags {
    /// A kernel process (proc0 and FreeBSD kprocs): no user address space.
    pub const SYSTEM: u32 = 1 << 0;
    /// Exit has begun: no new LWPs (illumos `SEXITING`).
    pub const EXITING: u32 = 1 << 1;
    /// Stopped: a stop reason is in force (`signal::stop`).
    pub const STOPPED: u32 = 1 << 2;
    /// Every LWP is gone.
    pub const ZOMBIE: u32 = 1 << 3;
}

/// System-wide limits. Defaults are generous; tests lower them to reach
/// the limit paths.
pub struct Limits {
    pub max_processes: AtomicUsize,
    pub max_lwps: AtomicUsize,
    /// The highest LWP id a process may hand out.
    pub max_lwp_id: AtomicU32,
}

pub static LIMITS: Limits = Limits {
    max_processes: AtomicUsize::new(1024),
    max_lwps: AtomicUsize::new(65_536),
    max_lwp_id: AtomicU32::new(i32::MAX as u32),
};

/// LWPs alive in the system (created and not yet exited).
static LWP_COUNT: AtomicUsize = AtomicUsize::new(0);

pub struct Process {
    pub pid: Pid,
    /// The CR3 its LWPs run with: a user address space's root, or 0 for
    /// the kernel's.
    cr3: core::sync::atomic::AtomicU64,
    name: IrqSpinLock<String>,
    flags: AtomicU32,
    exit_times: IrqSpinLock<ExitTimes>,
    /// CPU ticks (all, and in user mode) of its LWPs that have exited.
    exited_ticks: AtomicU64,
    exited_user_ticks: AtomicU64,
    lwps: IrqSpinLock<LwpList>,
    /// FreeBSD's process mutex, for `kthread_suspend` and friends.
    pub suspend_lock: Mutex<()>,
    exit_status: Mutex<Option<i32>>,
    exit_changed: Condvar,
    /// A user process's address space (None for kernel processes).
    pub vm: IrqSpinLock<Option<Arc<crate::mm::vm::AddressSpace>>>,
    /// How it ended, as Linux's wait status encodes it (`code << 8`, or the
    /// signal number), once decided; the first decision stands.
    termination: core::sync::atomic::AtomicI64,
    /// Its LWPs that run in user mode.
    pub user_lwps: AtomicUsize,
    /// A user process's LWPs that have exited: its address space is torn
    /// down only once they are all off their CPUs. Filled under the `lwps`
    /// lock, in the same step that takes an LWP off the list.
    departed: IrqSpinLock<Vec<Arc<Lwp>>>,
    /// Dispositions and pending signals: the process's signal lock.
    pub signals: IrqSpinLock<crate::signal::ProcessSignals>,
    /// Stop reasons in force (`signal::stop`).
    pub stop: Mutex<crate::signal::stop::StopState>,
    /// Parked LWPs wait here to be let go.
    pub stop_released: Condvar,
    /// Whoever waits for LWPs to park waits here.
    pub stop_parked: Condvar,
    /// The auxiliary vector the process started with (core files).
    auxv: IrqSpinLock<Vec<(u64, u64)>>,
    /// `RLIMIT_CORE`: 0 means no core files.
    core_limit: AtomicU64,
    /// The network attachment, made by the first network call
    /// (`net::attach`); dropped by the teardown after the last LWP left.
    pub net: Mutex<Option<Arc<crate::net::Attachment>>>,
    /// Its descriptor table (console, sockets, epoll instances).
    pub files: Mutex<crate::fd::FdTable>,
}

/// `termination` before anything decided it.
const UNDECIDED: i64 = -1;

struct LwpList {
    lwps: Vec<Arc<Lwp>>,
    next_id: LwpId,
}

struct Table {
    processes: BTreeMap<Pid, Arc<Process>>,
    next_pid: Pid,
}

static TABLE: IrqSpinLock<Table> = IrqSpinLock::new(Table {
    processes: BTreeMap::new(),
    next_pid: 1,
});
static PROC0: Once<Arc<Process>> = Once::new();

impl Process {
    fn new(pid: Pid, name: &str, flags: u32) -> Process {
        Process {
            pid,
            cr3: core::sync::atomic::AtomicU64::new(0),
            name: IrqSpinLock::new(String::from(name)),
            flags: AtomicU32::new(flags),
            lwps: IrqSpinLock::new(LwpList {
                lwps: Vec::new(),
                next_id: 1,
            }),
            suspend_lock: Mutex::new(()),
            exit_status: Mutex::new(None),
            exit_changed: Condvar::new(),
            vm: IrqSpinLock::new(None),
            termination: core::sync::atomic::AtomicI64::new(UNDECIDED),
            user_lwps: AtomicUsize::new(0),
            departed: IrqSpinLock::new(Vec::new()),
            signals: IrqSpinLock::new(crate::signal::ProcessSignals::default()),
            stop: Mutex::new(crate::signal::stop::StopState::default()),
            exit_times: IrqSpinLock::new(ExitTimes::default()),
            exited_ticks: AtomicU64::new(0),
            exited_user_ticks: AtomicU64::new(0),
            stop_released: Condvar::new(),
            stop_parked: Condvar::new(),
            auxv: IrqSpinLock::new(Vec::new()),
            core_limit: AtomicU64::new(u64::MAX),
            net: Mutex::new(None),
            files: Mutex::new(crate::fd::FdTable::new()),
        }
    }

    pub fn name(&self) -> String {
        self.name.lock().clone()
    }

    /// The page-table root its LWPs run with (0: the kernel's).
    pub fn cr3(&self) -> u64 {
        self.cr3.load(Ordering::Acquire)
    }

    /// Sets the page-table root (a user address space's, or 0).
    pub fn set_cr3(&self, root: u64) {
        self.cr3.store(root, Ordering::Release);
    }

    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Acquire)
    }

    pub fn has_flag(&self, flag: u32) -> bool {
        self.flags() & flag != 0
    }

    pub fn is_exiting(&self) -> bool {
        self.flags() & (flags::EXITING | flags::ZOMBIE) != 0
    }

    /// Marks the process exiting: from now on LWP creation is refused.
    pub fn begin_exit(&self) {
        let before = self.flags.fetch_or(flags::EXITING, Ordering::AcqRel);
        if before & (flags::EXITING | flags::ZOMBIE) == 0 {
            let workers = self
                .lwps
                .lock()
                .lwps
                .iter()
                .filter(|lwp| lwp.has_flag(lwp::flags::KTHREAD))
                .count();
            let mut times = self.exit_times.lock();
            times.began_ns = Some(crate::time::now_ns());
            times.workers = workers;
        }
    }

    /// When exit began and ended (`None` before each happens).
    pub fn exit_times(&self) -> ExitTimes {
        *self.exit_times.lock()
    }

    /// Adds an LWP built by `make` (given its new id) unless the process is
    /// exiting (`ESRCH`) or a limit is reached (`EAGAIN`).
    pub fn add_lwp(&self, make: impl FnOnce(LwpId) -> Arc<Lwp>) -> Result<Arc<Lwp>, Errno> {
        let mut list = self.lwps.lock();
        if self.is_exiting() {
            return Err(Errno::ESRCH);
        }
        if list.next_id > LIMITS.max_lwp_id.load(Ordering::Relaxed) {
            return Err(Errno::EAGAIN);
        }
        let max_lwps = LIMITS.max_lwps.load(Ordering::Relaxed);
        if LWP_COUNT.fetch_add(1, Ordering::AcqRel) >= max_lwps {
            LWP_COUNT.fetch_sub(1, Ordering::AcqRel);
            return Err(Errno::EAGAIN);
        }
        let lwp = make(list.next_id);
        list.next_id += 1;
        list.lwps.push(Arc::clone(&lwp));
        Ok(lwp)
    }

    /// Removes an LWP that exited. Returns how many remain.
    pub fn remove_lwp(&self, lwp: &Lwp) -> usize {
        let mut list = self.lwps.lock();
        let before = list.lwps.len();
        let mut removed = None;
        list.lwps.retain(|other| {
            let keep = other.serial != lwp.serial;
            if !keep {
                removed = Some(Arc::clone(other));
            }
            keep
        });
        if list.lwps.len() < before {
            LWP_COUNT.fetch_sub(1, Ordering::AcqRel);
            self.exited_ticks
                .fetch_add(lwp.cpu_ticks.load(Ordering::Relaxed), Ordering::Relaxed);
            self.exited_user_ticks
                .fetch_add(lwp.user_ticks.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        let remaining = list.lwps.len();
        // A user process's LWP moves to `departed` before the list lock is
        // let go, so whoever removes the last LWP (and so ends the process)
        // finds every earlier one there: the teardown, which takes
        // `departed` once, misses none (a late push would keep an LWP it
        // never waited for and, through its `process`, a cycle that is
        // never freed).
        let not_kept = match removed {
            Some(removed) if self.vm.lock().is_some() => {
                self.departed.lock().push(removed);
                None
            }
            other => other,
        };
        drop(list);
        drop(not_kept);
        remaining
    }

    /// Sets or clears `STOPPED` (by `signal::stop` only).
    pub fn set_stopped_flag(&self, stopped: bool) {
        if stopped {
            self.flags.fetch_or(flags::STOPPED, Ordering::AcqRel);
        } else {
            self.flags.fetch_and(!flags::STOPPED, Ordering::AcqRel);
        }
    }

    /// The auxiliary vector it started with: (type, value) pairs.
    pub fn auxv(&self) -> Vec<(u64, u64)> {
        self.auxv.lock().clone()
    }

    pub fn set_auxv(&self, auxv: Vec<(u64, u64)>) {
        *self.auxv.lock() = auxv;
    }

    /// The exited LWPs of a user process, handed over once (teardown).
    pub fn take_departed(&self) -> Vec<Arc<Lwp>> {
        core::mem::take(&mut *self.departed.lock())
    }

    /// Decides how the process ends (wait-status encoding), unless that
    /// was decided already. Returns whether this call decided it.
    pub fn decide_termination(&self, wait_status: i32) -> bool {
        self.termination
            .compare_exchange(
                UNDECIDED,
                i64::from(wait_status),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Replaces a decided termination (the core dump it promised failed).
    pub fn override_termination(&self, wait_status: i32) {
        self.termination
            .store(i64::from(wait_status), Ordering::Release);
    }

    pub fn core_limit(&self) -> u64 {
        self.core_limit.load(Ordering::Acquire)
    }

    pub fn set_core_limit(&self, limit: u64) {
        self.core_limit.store(limit, Ordering::Release);
    }

    /// The decided termination, if any.
    pub fn termination(&self) -> Option<i32> {
        match self.termination.load(Ordering::Acquire) {
            UNDECIDED => None,
            status => Some(status as i32),
        }
    }

    /// The LWPs, in creation order.
    pub fn lwps(&self) -> Vec<Arc<Lwp>> {
        self.lwps.lock().lwps.clone()
    }

    /// CPU ticks of all its LWPs, live and exited: (all, in user mode).
    /// Kernel-only LWPs' ticks are all system time.
    pub fn cpu_ticks(&self) -> (u64, u64) {
        let list = self.lwps.lock();
        let mut all = self.exited_ticks.load(Ordering::Relaxed);
        let mut user = self.exited_user_ticks.load(Ordering::Relaxed);
        for lwp in &list.lwps {
            all += lwp.cpu_ticks.load(Ordering::Relaxed);
            user += lwp.user_ticks.load(Ordering::Relaxed);
        }
        (all, user)
    }

    pub fn lwp_count(&self) -> usize {
        self.lwps.lock().lwps.len()
    }

    pub fn find_lwp(&self, id: LwpId) -> Option<Arc<Lwp>> {
        self.lwps
            .lock()
            .lwps
            .iter()
            .find(|lwp| lwp.id == id)
            .cloned()
    }

    /// Ends the process with `status`: it becomes a zombie, leaves the table
    /// and wakes whoever waits for it.
    pub fn finish_exit(&self, status: i32) {
        self.flags
            .fetch_or(flags::EXITING | flags::ZOMBIE, Ordering::AcqRel);
        TABLE.lock().processes.remove(&self.pid);
        self.exit_times.lock().last_lwp_gone_ns = Some(crate::time::now_ns());
        let mut exit_status = self.exit_status.lock();
        *exit_status = Some(status);
        self.exit_changed.notify_all();
    }

    /// Waits until the process has exited and returns its status (FreeBSD
    /// 4-7: the parent collecting a kernel process's `kthread_exit` code).
    pub fn wait_exit(&self) -> i32 {
        let mut exit_status = self.exit_status.lock();
        loop {
            if let Some(status) = *exit_status {
                return status;
            }
            exit_status = self.exit_changed.wait(exit_status);
        }
    }
}

impl core::fmt::Debug for Process {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Process({} {:?})", self.pid, self.name())
    }
}

/// Creates proc0, the kernel process. Called once at boot.
pub fn init() -> Arc<Process> {
    let command_line = crate::cmdline::get();
    if let Some(value) = command_line
        .value("kern.maxproc")
        .and_then(|text| text.parse().ok())
    {
        LIMITS.max_processes.store(value, Ordering::Relaxed);
    }
    if let Some(value) = command_line
        .value("kern.maxlwp")
        .and_then(|text| text.parse().ok())
    {
        LIMITS.max_lwps.store(value, Ordering::Relaxed);
    }
    let proc0 = PROC0.call_once(|| Arc::new(Process::new(0, "kernel", flags::SYSTEM)));
    TABLE.lock().processes.insert(0, Arc::clone(proc0));
    Arc::clone(proc0)
}

/// The kernel process.
pub fn proc0() -> Arc<Process> {
    Arc::clone(
        PROC0
            .get()
            .expect("proc::init runs before any thread is created"),
    )
}

/// Creates a process (`EAGAIN` at the process limit).
pub fn create(name: &str, process_flags: u32) -> Result<Arc<Process>, Errno> {
    let mut table = TABLE.lock();
    if table.processes.len() >= LIMITS.max_processes.load(Ordering::Relaxed) {
        return Err(Errno::EAGAIN);
    }
    let pid = table.next_pid;
    table.next_pid += 1;
    let process = Arc::new(Process::new(pid, name, process_flags));
    table.processes.insert(pid, Arc::clone(&process));
    Ok(process)
}

/// Every process in the table, by pid.
pub fn all() -> Vec<Arc<Process>> {
    TABLE.lock().processes.values().cloned().collect()
}

pub fn find(pid: Pid) -> Option<Arc<Process>> {
    TABLE.lock().processes.get(&pid).cloned()
}

/// Gives back the spare capacity of every process's LWP list (before leak
/// checks).
pub fn trim_caches() {
    for process in all() {
        process.lwps.lock().lwps.shrink_to_fit();
    }
}

/// LWPs alive in the system.
pub fn lwp_count() -> usize {
    LWP_COUNT.load(Ordering::Acquire)
}
