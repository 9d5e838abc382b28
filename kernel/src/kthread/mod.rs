//! Kernel threads: the native interface.
//!
//! `Builder` creates an LWP that runs a Rust closure in kernel mode: name,
//! class and priority, CPU binding, stack size, created stopped or not,
//! joinable or not, owning process (proc0 by default), signal hold mask and
//! flags. The NetBSD, FreeBSD and illumos interfaces (`crate::compat`) are
//! built on it. `exit` ends the calling thread; `join` waits for a joinable
//! one and returns its exit code. The reaper (`reaper`) frees the stacks of
//! exited threads from thread context.
//!
//! Errors: `ENOMEM` (no memory for the stack, or a stack larger than
//! `MAX_STACK_PAGES`), `EAGAIN` (an LWP limit),
//! `ESRCH` (the process is exiting), `EINVAL` (bad arguments: a CPU that is
//! not online, a priority out of range, a join on a thread that is not
//! joinable or already joined).
//!
//! An LWP's exit state (`Lwp::exit`, a sleeping mutex, with the condition
//! variable `exit_changed`) interlocks exit and join, so a join never misses
//! an exit that happens first.

pub mod reaper;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;

use crate::errno::Errno;
use crate::mm::stack::KernelStack;
use crate::proc::lwp::{
    LwpParts, LwpState, MAX_PRIORITY, PRI_KTHREAD, Priority, SchedClass, SignalSet, flags,
};
use crate::proc::{self, Process, lwp::Lwp};
use crate::sched;

/// The default kernel stack: 16 KiB.
pub const DEFAULT_STACK_PAGES: usize = 4;
/// The largest stack a caller may ask for: 1 MiB.
pub const MAX_STACK_PAGES: usize = 256;

/// Describes a kernel thread to create.
pub struct Builder {
    name: String,
    class: SchedClass,
    priority: Priority,
    cpu: Option<usize>,
    stack_pages: usize,
    stopped: bool,
    joinable: bool,
    process: Option<Arc<Process>>,
    hold_mask: SignalSet,
    flags: u32,
    user_mode: bool,
}

impl Builder {
    /// A thread named `name`: fixed priority `PRI_KTHREAD`, any CPU, default
    /// stack, started at once, not joinable, in proc0, MP-safe, every
    /// signal held.
    pub fn new(name: &str) -> Builder {
        Builder {
            name: String::from(name),
            class: SchedClass::FixedRoundRobin,
            priority: PRI_KTHREAD,
            cpu: None,
            stack_pages: DEFAULT_STACK_PAGES,
            stopped: false,
            joinable: false,
            process: None,
            hold_mask: SignalSet::ALL,
            flags: flags::MPSAFE,
            user_mode: false,
        }
    }

    /// A thread of a user process that will run in user mode: not a kernel
    /// thread, nothing held, FPU state kept.
    pub fn user_mode(mut self) -> Builder {
        self.user_mode = true;
        self.hold_mask = SignalSet::EMPTY;
        self
    }

    pub fn class(mut self, class: SchedClass, priority: Priority) -> Builder {
        self.class = class;
        self.priority = priority;
        self
    }

    pub fn priority(mut self, priority: Priority) -> Builder {
        self.priority = priority;
        self
    }

    /// Binds the thread to CPU `index`: it only ever runs there.
    pub fn cpu(mut self, index: usize) -> Builder {
        self.cpu = Some(index);
        self
    }

    /// Stack size in 4 KiB pages; 0 means the default.
    pub fn stack_pages(mut self, pages: usize) -> Builder {
        self.stack_pages = if pages == 0 {
            DEFAULT_STACK_PAGES
        } else {
            pages
        };
        self
    }

    /// Created in state `Idle`; `start` makes it runnable.
    pub fn start_stopped(mut self) -> Builder {
        self.stopped = true;
        self
    }

    pub fn joinable(mut self) -> Builder {
        self.joinable = true;
        self
    }

    /// The owning process (default proc0).
    pub fn process(mut self, process: &Arc<Process>) -> Builder {
        self.process = Some(Arc::clone(process));
        self
    }

    pub fn hold_mask(mut self, mask: SignalSet) -> Builder {
        self.hold_mask = mask;
        self
    }

    /// Replaces the flags (`proc::lwp::flags`); `KERNEL_THREAD` is always
    /// added, and `JOINABLE` follows `joinable()`.
    pub fn flags(mut self, lwp_flags: u32) -> Builder {
        self.flags = lwp_flags;
        self
    }

    /// Creates the thread running `body`.
    pub fn spawn(self, body: impl FnOnce() + Send + 'static) -> Result<Arc<Lwp>, Errno> {
        if let Some(cpu) = self.cpu
            && !sched::online_cpus().any(|online| online == cpu)
        {
            return Err(Errno::EINVAL);
        }
        if self.priority > MAX_PRIORITY {
            return Err(Errno::EINVAL);
        }
        // A stack beyond the limit is a stack that cannot be had.
        if self.stack_pages > MAX_STACK_PAGES {
            return Err(Errno::ENOMEM);
        }
        let process = self.process.unwrap_or_else(proc::proc0);
        if process.is_exiting() {
            return Err(Errno::ESRCH);
        }
        let stack = KernelStack::new(self.stack_pages).ok_or(Errno::ENOMEM)?;
        let context = sched::new_thread_context(&stack, self.user_mode);
        let mut lwp_flags = if self.user_mode {
            self.flags | flags::USER | flags::USES_FPU
        } else {
            self.flags | flags::KERNEL_THREAD
        };
        if self.joinable {
            lwp_flags |= flags::JOINABLE;
        }
        let owner = Arc::clone(&process);
        let (name, class, priority, cpu, hold_mask) = (
            self.name,
            self.class,
            self.priority,
            self.cpu,
            self.hold_mask,
        );
        let body: Box<dyn FnOnce() + Send> = Box::new(body);
        let lwp = process.add_lwp(move |id| {
            Arc::new(Lwp::new(LwpParts {
                id,
                process: owner,
                name,
                flags: lwp_flags,
                class,
                priority,
                bound_cpu: cpu,
                hold_mask,
                stack: Some(stack),
                context,
                entry: Some(body),
                state: LwpState::Idle,
            }))
        })?;
        if !self.stopped {
            sched::make_runnable(&lwp);
        }
        Ok(lwp)
    }
}

/// Makes a thread created stopped runnable. `EINVAL` if it was not in
/// state `Idle`, or is held (illumos `TP_HOLDLWP`).
pub fn start(lwp: &Arc<Lwp>) -> Result<(), Errno> {
    if lwp.has_flag(flags::HOLD) {
        return Err(Errno::EINVAL);
    }
    if lwp.state() != LwpState::Idle || !sched::make_runnable(lwp) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// Ends the calling thread with `code`. Wakes joiners; the last LWP of a
/// kernel process (other than proc0) takes the process down with it.
pub fn exit(code: i32) -> ! {
    let me = sched::current();
    crate::sync::biglock::release_all();
    {
        let mut exit = me.exit.lock();
        exit.exited = true;
        exit.code = code;
        me.exit_changed.notify_all();
    }
    let remaining = me.process.remove_lwp(&me);
    if remaining == 0 && me.process.pid != 0 {
        // A user process's status was decided by exit_group, its last user
        // thread or a fault; a kernel process ends with its last thread's.
        let status = me.process.termination().unwrap_or(code);
        me.process.finish_exit(status);
    }
    drop(me);
    sched::exit_current()
}

/// Waits for a joinable thread to exit and returns its exit code. `EINVAL`
/// if it is not joinable, was already joined, or is the caller.
pub fn join(lwp: &Arc<Lwp>) -> Result<i32, Errno> {
    if !lwp.has_flag(flags::JOINABLE) {
        return Err(Errno::EINVAL);
    }
    if sched::try_current().is_some_and(|me| me.serial == lwp.serial) {
        return Err(Errno::EINVAL);
    }
    let mut exit = lwp.exit.lock();
    if exit.joined {
        return Err(Errno::EINVAL);
    }
    exit.joined = true;
    while !exit.exited {
        exit = lwp.exit_changed.wait(exit);
    }
    Ok(exit.code)
}

/// Waits until an exited thread is off every CPU and its stack is with the
/// reaper (a join returns as soon as the exit code is set, possibly just
/// before the thread's last switch). For leak checks.
pub fn wait_until_off_cpu(lwp: &Arc<Lwp>) {
    while lwp.state() != LwpState::Zombie || lwp.stack_bounds().is_some() {
        sched::sleep_ns(1_000_000);
    }
}

/// Removes a thread that was created stopped and never started (NetBSD
/// `kthread_destroy`). `EINVAL` if it was started.
pub fn destroy_unstarted(lwp: &Arc<Lwp>) -> Result<(), Errno> {
    if !sched::retire_unstarted(lwp) {
        return Err(Errno::EINVAL);
    }
    drop(lwp.take_entry());
    {
        let mut exit = lwp.exit.lock();
        exit.exited = true;
        lwp.exit_changed.notify_all();
    }
    if lwp.process.remove_lwp(lwp) == 0 && lwp.process.pid != 0 {
        lwp.process.finish_exit(0);
    }
    if let Some(stack) = lwp.take_stack() {
        reaper::defer_free(stack);
    }
    Ok(())
}
