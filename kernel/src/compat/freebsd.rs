//! FreeBSD 8+ `kthread(9)` and `kproc(9)`: `kthread_add`, `kproc_create`,
//! `kproc_kthread_add`, `kthread_start`, `kthread_exit`, cooperative
//! suspension (`kthread_suspend`, `kthread_resume`,
//! `kthread_suspend_check`) and `kthread_shutdown`.
//!
//! `kthread_add` puts a thread into a given process (proc0 by default;
//! `ESRCH` if the process is exiting), inheriting the signal mask and
//! priority of the process's first thread with its CPU affinity reset to
//! every CPU; `RFSTOPPED` leaves it stopped (start it with `sched_add`);
//! `pages` sets the stack size (0: default; `ENOMEM` if it cannot be had).
//! Returning from the thread function logs "exited prematurely" and exits.
//! The last thread of a kernel process takes the process down.
//!
//! Suspension follows FreeBSD's code: the request is a per-thread flag set
//! and cleared under the process's mutex (`Process::suspend_lock`); the
//! suspender sleeps on the thread's channel until the thread acknowledges
//! (0) or the timeout passes (`EWOULDBLOCK`, the request stays set); it does
//! not wake the thread. `kthread_resume` clears the request and wakes the
//! channel. Both return `EINVAL` for a thread that is not a kernel thread.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use spin::Once;

use crate::errno::Errno;
use crate::kthread::{self, Builder};
use crate::proc::lwp::{self, Lwp, LwpState, SignalSet};
use crate::proc::{self, Process};
use crate::sched;
use crate::sync::Mutex;
use crate::time;

/// Create the thread stopped.
pub const RFSTOPPED: u32 = 1 << 17;

/// `struct thread *`.
pub type ThreadRef = Arc<Lwp>;
/// `struct proc *`.
pub type ProcRef = Arc<Process>;

fn format_name(fmt: fmt::Arguments) -> String {
    let mut name = String::new();
    let _ = name.write_fmt(fmt);
    name
}

fn suspend_requested(td: &Lwp) -> bool {
    td.suspend.lock().requested
}

fn set_suspend_requested(td: &Lwp, requested: bool) {
    td.suspend.lock().requested = requested;
}

fn wrap_premature_exit<A: Send + 'static>(
    func: fn(A),
    arg: A,
    name: String,
) -> impl FnOnce() + Send + 'static {
    move || {
        func(arg);
        log::warn!("kthread {name:?} exited prematurely");
        kthread_exit();
    }
}

fn add_thread<A: Send + 'static>(
    func: fn(A),
    arg: A,
    process: &ProcRef,
    flags: u32,
    pages: usize,
    name: String,
) -> Result<ThreadRef, Errno> {
    if flags & !RFSTOPPED != 0 {
        return Err(Errno::EINVAL);
    }
    if process.is_exiting() {
        return Err(Errno::ESRCH);
    }
    // Inherit the first thread's signal mask and priority; the affinity is
    // reset to every CPU (no `cpu()` on the builder).
    let first = process
        .lwps()
        .into_iter()
        .find(|lwp| lwp.state() != LwpState::Zombie);
    let (hold_mask, priority) = match &first {
        Some(first) => (first.hold_mask(), first.priority()),
        None => (SignalSet::ALL, lwp::PRI_KTHREAD),
    };
    let mut builder = Builder::new(&name)
        .process(process)
        .stack_pages(pages)
        .priority(priority)
        .hold_mask(hold_mask);
    if flags & RFSTOPPED != 0 {
        builder = builder.start_stopped();
    }
    builder.spawn(wrap_premature_exit(func, arg, name))
}

/// `kthread_add(func, arg, p, newtdp, flags, pages, fmt, ...)`: a thread in
/// process `p` (proc0 when `None`).
pub fn kthread_add<A: Send + 'static>(
    func: fn(A),
    arg: A,
    p: Option<&ProcRef>,
    newtdp: Option<&mut Option<ThreadRef>>,
    flags: u32,
    pages: usize,
    fmt: fmt::Arguments,
) -> Result<(), Errno> {
    let process = p.cloned().unwrap_or_else(proc::proc0);
    let td = add_thread(func, arg, &process, flags, pages, format_name(fmt))?;
    if let Some(slot) = newtdp {
        *slot = Some(td);
    }
    Ok(())
}

/// `sched_add`: starts a thread created with `RFSTOPPED`.
pub fn sched_add(td: &ThreadRef) -> Result<(), Errno> {
    kthread::start(td)
}

/// `kproc_create(func, arg, newpp, flags, pages, fmt, ...)`: a new kernel
/// process with one thread.
pub fn kproc_create<A: Send + 'static>(
    func: fn(A),
    arg: A,
    newpp: Option<&mut Option<ProcRef>>,
    flags: u32,
    pages: usize,
    fmt: fmt::Arguments,
) -> Result<(), Errno> {
    let name = format_name(fmt);
    let process = proc::create(&name, proc::flags::SYSTEM)?;
    if let Err(error) = add_thread(func, arg, &process, flags, pages, name) {
        process.finish_exit(0);
        return Err(error);
    }
    if let Some(slot) = newpp {
        *slot = Some(process);
    }
    Ok(())
}

/// `kproc_kthread_add(func, arg, procptr, tdptr, flags, pages, procname,
/// fmt, ...)`: a thread in the kernel process `*procptr`, creating the
/// process (named `procname`) on first use.
#[allow(clippy::too_many_arguments)]
pub fn kproc_kthread_add<A: Send + 'static>(
    func: fn(A),
    arg: A,
    procptr: &mut Option<ProcRef>,
    tdptr: Option<&mut Option<ThreadRef>>,
    flags: u32,
    pages: usize,
    procname: &str,
    fmt: fmt::Arguments,
) -> Result<(), Errno> {
    let process = match procptr {
        Some(process) => Arc::clone(process),
        None => {
            let process = proc::create(procname, proc::flags::SYSTEM)?;
            *procptr = Some(Arc::clone(&process));
            process
        }
    };
    let td = add_thread(func, arg, &process, flags, pages, format_name(fmt))?;
    if let Some(slot) = tdptr {
        *slot = Some(td);
    }
    Ok(())
}

/// `struct kthread_desc`: what `kthread_start` creates.
pub struct KthreadDesc {
    pub arg0: &'static str,
    pub func: fn(),
    pub global_threadpp: Option<&'static Once<ThreadRef>>,
}

/// `kthread_start(udata)`: creates the described thread in proc0 and
/// stores its handle. Meant for the boot-time init list (`sysinit`).
pub fn kthread_start(desc: &KthreadDesc) -> Result<(), Errno> {
    let mut td = None;
    kthread_add(
        |func: fn()| func(),
        desc.func,
        None,
        Some(&mut td),
        0,
        0,
        format_args!("{}", desc.arg0),
    )?;
    if let (Some(slot), Some(td)) = (desc.global_threadpp, td) {
        slot.call_once(|| td);
    }
    Ok(())
}

/// `kthread_exit()`: ends the calling thread; the last thread of a kernel
/// process ends the process.
pub fn kthread_exit() -> ! {
    kthread::exit(0)
}

fn is_kernel_thread(td: &Lwp) -> bool {
    td.has_flag(lwp::flags::KERNEL_THREAD)
}

/// `kthread_suspend(td, timo)`: asks `td` to suspend and waits up to `timo`
/// ticks (0: forever) for its acknowledgement. `EWOULDBLOCK` on timeout
/// (the request stays set); `EINVAL` if `td` is not a kernel thread.
pub fn kthread_suspend(td: &ThreadRef, timo: u64) -> Result<(), Errno> {
    if !is_kernel_thread(td) {
        return Err(Errno::EINVAL);
    }
    let channel = &td.suspend_changed;
    let guard = td.process.suspend_lock.lock();
    set_suspend_requested(td, true);
    if timo == 0 {
        drop(channel.wait(guard));
        return Ok(());
    }
    let timeout_ns = timo.saturating_mul(1_000_000_000) / time::tick_hz().max(1);
    let (_guard, result) = channel.wait_timeout(guard, timeout_ns);
    match result {
        lwp::WakeReason::TimedOut => Err(Errno::EWOULDBLOCK),
        _ => Ok(()),
    }
}

/// `kthread_resume(td)`: clears a suspend request and wakes the thread.
/// `EINVAL` if `td` is not a kernel thread.
pub fn kthread_resume(td: &ThreadRef) -> Result<(), Errno> {
    if !is_kernel_thread(td) {
        return Err(Errno::EINVAL);
    }
    let channel = &td.suspend_changed;
    let _guard = td.process.suspend_lock.lock();
    set_suspend_requested(td, false);
    channel.notify_all();
    Ok(())
}

/// `kthread_suspend_check()`: parks the calling kernel thread while a
/// suspend request is set, acknowledging it. From a thread that is not a
/// kernel thread it logs the bug and returns (FreeBSD panics).
pub fn kthread_suspend_check() {
    let td = sched::current();
    if !is_kernel_thread(&td) {
        log::error!("kthread_suspend_check: {:?} is not a kernel thread", td);
        return;
    }
    if !suspend_requested(&td) {
        return;
    }
    let channel = &td.suspend_changed;
    let mut guard = td.process.suspend_lock.lock();
    while suspend_requested(&td) {
        channel.notify_all();
        guard = channel.wait(guard);
    }
}

/// Shutdown messages, kept for tests and the console.
static SHUTDOWN_LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Seconds `kthread_shutdown` waits (FreeBSD's
/// `kern.shutdown.kproc_shutdown_wait`, default 60).
pub static SHUTDOWN_WAIT_SECONDS: core::sync::atomic::AtomicU64 =
    core::sync::atomic::AtomicU64::new(60);

fn shutdown_message(text: String) {
    crate::println!("{text}");
    SHUTDOWN_LOG.lock().push(text);
}

/// The shutdown messages printed so far.
pub fn shutdown_messages() -> Vec<String> {
    SHUTDOWN_LOG.lock().clone()
}

/// `kthread_shutdown(arg, howto)`: the pre-sync shutdown handler that
/// suspends a system thread, printing FreeBSD's message with `done` or
/// `timed out`.
pub fn kthread_shutdown(td: &ThreadRef, _howto: i32) {
    let seconds = SHUTDOWN_WAIT_SECONDS.load(core::sync::atomic::Ordering::Relaxed);
    let prefix = alloc::format!(
        "Waiting (max {seconds} seconds) for system thread `{}' to stop...",
        td.name()
    );
    let result = kthread_suspend(td, seconds * time::tick_hz());
    shutdown_message(alloc::format!(
        "{prefix} {}",
        if result.is_ok() { "done" } else { "timed out" }
    ));
}

/// Shutdown event handlers (`EVENTHANDLER_REGISTER(shutdown_pre_sync, ...)`),
/// run in priority order by `shutdown_pre_sync`.
type ShutdownHandler = (i32, ThreadRef, fn(&ThreadRef, i32));
static SHUTDOWN_PRE_SYNC: Mutex<Vec<ShutdownHandler>> = Mutex::new(Vec::new());

/// The lowest priority: runs last (`SHUTDOWN_PRI_LAST`).
pub const SHUTDOWN_PRI_LAST: i32 = 20000;
pub const SHUTDOWN_PRI_DEFAULT: i32 = 10000;

/// Registers `handler(td, howto)` for the pre-sync shutdown event.
pub fn eventhandler_register_shutdown_pre_sync(
    handler: fn(&ThreadRef, i32),
    td: &ThreadRef,
    priority: i32,
) {
    let mut handlers = SHUTDOWN_PRE_SYNC.lock();
    handlers.push((priority, Arc::clone(td), handler));
    handlers.sort_by_key(|(priority, _, _)| *priority);
}

/// Runs (and removes) the pre-sync shutdown handlers, in priority order.
pub fn shutdown_pre_sync(howto: i32) {
    let handlers = core::mem::take(&mut *SHUTDOWN_PRE_SYNC.lock());
    for (_, td, handler) in handlers {
        handler(&td, howto);
    }
}

crate::ktests! {
    fn kthread_add_without_a_process_uses_proc0() {
        let mut td = None;
        kthread_add(|_: ()| kthread_exit(), (), None, Some(&mut td), 0, 0, format_args!("fbsd-proc0")).expect("kthread_add");
        let td = td.expect("newtdp is set");
        assert_eq!(td.process.pid, 0);
        assert!(td.has_flag(lwp::flags::KERNEL_THREAD));
        assert_eq!(td.name(), "fbsd-proc0");
    }

    fn kthread_add_puts_the_thread_into_the_given_process() {
        let mut process = None;
        kproc_create(|_: ()| kthread_exit(), (), Some(&mut process), RFSTOPPED, 0, format_args!("fbsd-host")).expect("kproc_create");
        let process = process.expect("newpp is set");
        let mut td = None;
        kthread_add(|_: ()| kthread_exit(), (), Some(&process), Some(&mut td), RFSTOPPED, 0, format_args!("guest"))
            .expect("kthread_add");
        let td = td.expect("newtdp");
        assert!(Arc::ptr_eq(&td.process, &process));
        assert_eq!(process.lwp_count(), 2);
        let ids: Vec<u32> = process.lwps().iter().map(|lwp| lwp.id).collect();
        assert_eq!(ids, [1, 2], "LWP ids are unique in the process");
        for td in process.lwps() {
            sched_add(&td).expect("start");
        }
        assert_eq!(process.wait_exit(), 0);
    }

    fn adding_to_an_exiting_process_is_esrch() {
        let process = proc::create("fbsd-exiting", proc::flags::SYSTEM).expect("process");
        process.begin_exit();
        let result = kthread_add(|_: ()| kthread_exit(), (), Some(&process), None, 0, 0, format_args!("late"));
        assert_eq!(result, Err(Errno::ESRCH));
        process.finish_exit(0);
        let result = kthread_add(|_: ()| kthread_exit(), (), Some(&process), None, 0, 0, format_args!("later"));
        assert_eq!(result, Err(Errno::ESRCH), "a zombie process");
    }

    fn rfstopped_thread_waits_for_sched_add() {
        use core::sync::atomic::{AtomicBool, Ordering};
        static RAN: AtomicBool = AtomicBool::new(false);
        let mut td = None;
        kthread_add(|_: ()| { RAN.store(true, Ordering::SeqCst); kthread_exit() }, (), None, Some(&mut td), RFSTOPPED, 0, format_args!("stopped"))
            .expect("kthread_add");
        let td = td.expect("newtdp");
        crate::sched::sleep_ns(30_000_000);
        assert_eq!(td.state(), LwpState::Idle);
        assert!(!RAN.load(Ordering::SeqCst));
        sched_add(&td).expect("sched_add");
        assert!(crate::ktest::wait_until(2_000, || RAN.load(Ordering::SeqCst)), "did not run after sched_add");
        assert_eq!(sched_add(&td), Err(Errno::EINVAL), "starting twice");
    }

    fn unknown_flags_are_einval() {
        let result = kthread_add(|_: ()| kthread_exit(), (), None, None, 1 << 3, 0, format_args!("flags"));
        assert_eq!(result, Err(Errno::EINVAL));
    }

    fn pages_sets_the_stack_size_and_an_impossible_size_is_enomem() {
        let mut td = None;
        kthread_add(|_: ()| loop { crate::sched::sleep_ns(1_000_000_000) }, (), None, Some(&mut td), RFSTOPPED, 8, format_args!("big-stack"))
            .expect("kthread_add");
        let td = td.expect("newtdp");
        let (guard, top) = td.stack_bounds().expect("a stack");
        assert_eq!(top - guard, 9 * 4096, "8 pages and the guard page");
        crate::kthread::destroy_unstarted(&td).expect("destroy");
        let mut td = None;
        kthread_add(|_: ()| loop { crate::sched::sleep_ns(1_000_000_000) }, (), None, Some(&mut td), RFSTOPPED, 0, format_args!("default-stack"))
            .expect("kthread_add");
        let td = td.expect("newtdp");
        let (guard, top) = td.stack_bounds().expect("a stack");
        assert_eq!(top - guard, (crate::kthread::DEFAULT_STACK_PAGES as u64 + 1) * 4096);
        crate::kthread::destroy_unstarted(&td).expect("destroy");
        let result = kthread_add(|_: ()| kthread_exit(), (), None, None, 0, 1 << 30, format_args!("huge"));
        assert_eq!(result, Err(Errno::ENOMEM));
    }

    fn new_thread_inherits_mask_and_priority_of_the_first_thread() {
        let process = proc::create("fbsd-inherit", proc::flags::SYSTEM).expect("process");
        let first = crate::kthread::Builder::new("first")
            .process(&process)
            .priority(77)
            .hold_mask(SignalSet(0x5a5a))
            .start_stopped()
            .spawn(|| {})
            .expect("first thread");
        let mut td = None;
        kthread_add(|_: ()| kthread_exit(), (), Some(&process), Some(&mut td), RFSTOPPED, 0, format_args!("second"))
            .expect("kthread_add");
        let td = td.expect("newtdp");
        assert_eq!(td.hold_mask(), SignalSet(0x5a5a));
        assert_eq!(td.priority(), 77);
        crate::kthread::destroy_unstarted(&td).expect("destroy");
        crate::kthread::destroy_unstarted(&first).expect("destroy");
    }

    fn cpu_affinity_is_reset_not_inherited() {
        use core::sync::atomic::{AtomicBool, Ordering};
        static UNBOUND: AtomicBool = AtomicBool::new(false);
        static DONE: AtomicBool = AtomicBool::new(false);
        let last_cpu = crate::sched::online_cpus().last().expect("a CPU");
        crate::kthread::Builder::new("bound-creator")
            .cpu(last_cpu)
            .spawn(|| {
                let mut td = None;
                if kthread_add(|_: ()| kthread_exit(), (), None, Some(&mut td), RFSTOPPED, 0, format_args!("child")).is_ok()
                    && let Some(td) = td
                {
                    UNBOUND.store(td.bound_cpu().is_none(), Ordering::SeqCst);
                    let _ = crate::kthread::destroy_unstarted(&td);
                }
                DONE.store(true, Ordering::SeqCst);
            })
            .expect("creator");
        assert!(crate::ktest::wait_until(2_000, || DONE.load(Ordering::SeqCst)));
        assert!(UNBOUND.load(Ordering::SeqCst), "the new thread inherited its creator's CPU binding");
    }

    fn kproc_create_makes_a_kernel_process() {
        let mut process = None;
        kproc_create(|_: ()| kthread_exit(), (), Some(&mut process), RFSTOPPED, 0, format_args!("kproc-{}", 1)).expect("kproc_create");
        let process = process.expect("newpp");
        assert!(process.has_flag(proc::flags::SYSTEM));
        assert_eq!(process.name(), "kproc-1");
        assert_eq!(process.lwp_count(), 1);
        assert!(proc::find(process.pid).is_some(), "in the process table");
        sched_add(&process.lwps()[0]).expect("start");
        process.wait_exit();
        assert!(proc::find(process.pid).is_none(), "gone from the table once its thread exited");
    }

    fn kproc_kthread_add_creates_the_process_on_first_use() {
        let mut process = None;
        let mut first = None;
        kproc_kthread_add(|_: ()| loop { crate::sched::sleep_ns(1_000_000_000) }, (), &mut process, Some(&mut first), RFSTOPPED, 0, "fbsd-daemon", format_args!("worker-1"))
            .expect("first add");
        let created = process.clone().expect("procptr is set");
        assert_eq!(created.name(), "fbsd-daemon");
        let mut second = None;
        kproc_kthread_add(|_: ()| loop { crate::sched::sleep_ns(1_000_000_000) }, (), &mut process, Some(&mut second), RFSTOPPED, 0, "ignored", format_args!("worker-2"))
            .expect("second add");
        assert!(Arc::ptr_eq(process.as_ref().expect("still set"), &created), "the same process");
        assert_eq!(created.lwp_count(), 2);
        for td in [first, second].into_iter().flatten() {
            crate::kthread::destroy_unstarted(&td).expect("destroy");
        }
    }

    fn last_thread_exit_takes_the_kernel_process_down() {
        let mut process = None;
        let mut first = None;
        kproc_kthread_add(|_: ()| { crate::sched::sleep_ns(10_000_000); kthread_exit() }, (), &mut process, Some(&mut first), 0, 0, "fbsd-pair", format_args!("a"))
            .expect("add a");
        let mut second = None;
        kproc_kthread_add(|_: ()| { crate::sched::sleep_ns(60_000_000); kthread_exit() }, (), &mut process, Some(&mut second), 0, 0, "fbsd-pair", format_args!("b"))
            .expect("add b");
        let process = process.expect("procptr");
        assert!(crate::ktest::wait_until(2_000, || process.lwp_count() == 1), "first thread did not exit");
        assert!(!process.has_flag(proc::flags::ZOMBIE), "the process ended before its last thread");
        assert_eq!(process.wait_exit(), 0);
        assert!(process.has_flag(proc::flags::ZOMBIE));
    }

    fn returning_from_the_function_exits_the_thread() {
        let mut process = None;
        kproc_create(|_: ()| {}, (), Some(&mut process), 0, 0, format_args!("returns")).expect("kproc_create");
        let process = process.expect("newpp");
        assert_eq!(process.wait_exit(), 0, "the thread ends (\"exited prematurely\") and takes its process down");
    }

    fn kthread_start_from_sysinit_stores_the_handle() {
        let reaper = super::super::sysinit::REAPER_THREAD.get().expect("the init list started the reaper");
        assert_eq!(reaper.name(), "reaper");
        assert_eq!(reaper.process.pid, 0);
        assert_eq!(super::super::sysinit::ran(), ["reaper", "housekeeping", "boot-done"], "SYSINIT order");
    }

    fn suspend_and_resume_refuse_non_kernel_threads() {
        let process = proc::create("user-like", 0).expect("process");
        let td = super::super::illumos::lwp_create(|_: ()| {}, (), 0, &process, super::super::illumos::TS_STOPPED, 60, &SignalSet::EMPTY, super::super::illumos::ClassId::Sys, 0)
            .expect("lwp_create");
        assert_eq!(kthread_suspend(&td, 1), Err(Errno::EINVAL));
        assert_eq!(kthread_resume(&td), Err(Errno::EINVAL));
        crate::kthread::destroy_unstarted(&td).expect("destroy");
    }

    fn suspend_times_out_with_ewouldblock_and_keeps_the_request() {
        use core::sync::atomic::{AtomicBool, Ordering};
        static STOP: AtomicBool = AtomicBool::new(false);
        let mut td = None;
        // A thread that never calls kthread_suspend_check while STOP is clear.
        kthread_add(|_: ()| {
            while !STOP.load(Ordering::SeqCst) {
                crate::sched::sleep_ns(2_000_000);
            }
            kthread_suspend_check();
            kthread_exit()
        }, (), None, Some(&mut td), 0, 0, format_args!("deaf"))
        .expect("kthread_add");
        let td = td.expect("newtdp");
        let started = crate::time::now_ns();
        assert_eq!(kthread_suspend(&td, 5), Err(Errno::EWOULDBLOCK));
        let waited = crate::time::now_ns() - started;
        assert!(waited >= 4 * 1_000_000_000 / crate::time::tick_hz(), "returned after {waited} ns, before the timeout");
        assert!(td.suspend.lock().requested, "a timed-out suspend leaves the request set");
        kthread_resume(&td).expect("resume");
        assert!(!td.suspend.lock().requested);
        STOP.store(true, Ordering::SeqCst);
        assert!(crate::ktest::wait_until(2_000, || td.state() == LwpState::Zombie));
    }

    fn suspend_is_acknowledged_and_the_thread_parks_until_resumed() {
        use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        static LOOPS: AtomicU64 = AtomicU64::new(0);
        static STOP: AtomicBool = AtomicBool::new(false);
        let mut td = None;
        kthread_add(|_: ()| {
            while !STOP.load(Ordering::SeqCst) {
                kthread_suspend_check();
                LOOPS.fetch_add(1, Ordering::SeqCst);
                crate::sched::sleep_ns(1_000_000);
            }
            kthread_exit()
        }, (), None, Some(&mut td), 0, 0, format_args!("polite"))
        .expect("kthread_add");
        let td = td.expect("newtdp");
        assert!(crate::ktest::wait_until(2_000, || LOOPS.load(Ordering::SeqCst) > 3));
        assert_eq!(kthread_suspend(&td, crate::time::tick_hz() * 5), Ok(()), "the thread acknowledges within 5 s");
        let parked_at = LOOPS.load(Ordering::SeqCst);
        crate::sched::sleep_ns(50_000_000);
        assert_eq!(LOOPS.load(Ordering::SeqCst), parked_at, "the thread ran while suspended");
        assert_eq!(td.state(), LwpState::Sleeping);
        kthread_resume(&td).expect("resume");
        assert!(crate::ktest::wait_until(2_000, || LOOPS.load(Ordering::SeqCst) > parked_at + 3), "did not run after resume");
        STOP.store(true, Ordering::SeqCst);
        assert!(crate::ktest::wait_until(2_000, || td.state() == LwpState::Zombie));
    }

    fn resume_before_acknowledge_cancels_the_suspension() {
        use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        static GO: AtomicBool = AtomicBool::new(false);
        static CHECKED: AtomicU32 = AtomicU32::new(0);
        let mut td = None;
        kthread_add(|_: ()| {
            while !GO.load(Ordering::SeqCst) {
                crate::sched::sleep_ns(1_000_000);
            }
            // The request was withdrawn before this check: no parking.
            kthread_suspend_check();
            CHECKED.store(1, Ordering::SeqCst);
            kthread_exit()
        }, (), None, Some(&mut td), 0, 0, format_args!("late-check"))
        .expect("kthread_add");
        let td = td.expect("newtdp");
        assert_eq!(kthread_suspend(&td, 2), Err(Errno::EWOULDBLOCK));
        kthread_resume(&td).expect("resume before any acknowledgement");
        GO.store(true, Ordering::SeqCst);
        assert!(crate::ktest::wait_until(2_000, || CHECKED.load(Ordering::SeqCst) == 1), "suspend_check parked after the request was withdrawn");
    }

    fn suspend_check_without_a_request_returns_at_once() {
        let started = crate::time::now_ns();
        for _ in 0..1_000 {
            kthread_suspend_check();
        }
        assert!(crate::time::now_ns() - started < 500_000_000);
    }

    fn shutdown_handler_reports_done_and_timed_out() {
        use core::sync::atomic::{AtomicBool, Ordering};
        static STOP: AtomicBool = AtomicBool::new(false);
        SHUTDOWN_WAIT_SECONDS.store(1, Ordering::SeqCst);
        let mut polite = None;
        kthread_add(|_: ()| {
            while !STOP.load(Ordering::SeqCst) {
                kthread_suspend_check();
                crate::sched::sleep_ns(2_000_000);
            }
            kthread_exit()
        }, (), None, Some(&mut polite), 0, 0, format_args!("polite-daemon"))
        .expect("kthread_add");
        let mut stubborn = None;
        kthread_add(|_: ()| {
            while !STOP.load(Ordering::SeqCst) {
                crate::sched::sleep_ns(2_000_000);
            }
            kthread_exit()
        }, (), None, Some(&mut stubborn), 0, 0, format_args!("stubborn-daemon"))
        .expect("kthread_add");
        let (polite, stubborn) = (polite.expect("newtdp"), stubborn.expect("newtdp"));
        eventhandler_register_shutdown_pre_sync(kthread_shutdown, &stubborn, SHUTDOWN_PRI_LAST);
        eventhandler_register_shutdown_pre_sync(kthread_shutdown, &polite, SHUTDOWN_PRI_DEFAULT);
        let before = shutdown_messages().len();
        shutdown_pre_sync(0);
        let messages = shutdown_messages();
        SHUTDOWN_WAIT_SECONDS.store(60, Ordering::SeqCst);
        assert_eq!(&messages[before..], [
            "Waiting (max 1 seconds) for system thread `polite-daemon' to stop... done",
            "Waiting (max 1 seconds) for system thread `stubborn-daemon' to stop... timed out",
        ]);
        STOP.store(true, Ordering::SeqCst);
        kthread_resume(&polite).expect("resume");
        kthread_resume(&stubborn).expect("resume");
        assert!(crate::ktest::wait_until(2_000, || polite.state() == LwpState::Zombie && stubborn.state() == LwpState::Zombie));
    }

    fn suspender_resumer_and_checker_stress() {
        use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        static STOP: AtomicBool = AtomicBool::new(false);
        static CHECKS: AtomicU64 = AtomicU64::new(0);
        static SUSPENDS: AtomicU64 = AtomicU64::new(0);
        static RESUMES: AtomicU64 = AtomicU64::new(0);
        static FINISHED: AtomicU64 = AtomicU64::new(0);
        let mut worker = None;
        kthread_add(|_: ()| {
            while !STOP.load(Ordering::SeqCst) {
                kthread_suspend_check();
                CHECKS.fetch_add(1, Ordering::Relaxed);
            }
            FINISHED.fetch_add(1, Ordering::SeqCst);
            kthread_exit()
        }, (), None, Some(&mut worker), 0, 0, format_args!("stress-worker"))
        .expect("worker");
        let worker = worker.expect("newtdp");
        kthread_add(|worker: ThreadRef| {
            while !STOP.load(Ordering::SeqCst) {
                let _ = kthread_suspend(&worker, 1);
                SUSPENDS.fetch_add(1, Ordering::Relaxed);
            }
            FINISHED.fetch_add(1, Ordering::SeqCst);
            kthread_exit()
        }, Arc::clone(&worker), None, None, 0, 0, format_args!("stress-suspender"))
        .expect("suspender");
        kthread_add(|worker: ThreadRef| {
            while !STOP.load(Ordering::SeqCst) {
                let _ = kthread_resume(&worker);
                RESUMES.fetch_add(1, Ordering::Relaxed);
                crate::sched::yield_now();
            }
            FINISHED.fetch_add(1, Ordering::SeqCst);
            kthread_exit()
        }, Arc::clone(&worker), None, None, 0, 0, format_args!("stress-resumer"))
        .expect("resumer");
        let seconds = 3;
        let mut last = (0, 0, 0);
        for second in 0..seconds {
            crate::sched::sleep_ns(1_000_000_000);
            let now = (CHECKS.load(Ordering::Relaxed), SUSPENDS.load(Ordering::Relaxed), RESUMES.load(Ordering::Relaxed));
            assert!(now.1 > last.1 && now.2 > last.2, "second {second}: suspender or resumer stuck: {last:?} -> {now:?}");
            last = now;
        }
        STOP.store(true, Ordering::SeqCst);
        let _ = kthread_resume(&worker);
        let finished = crate::ktest::wait_until(5_000, || {
            let _ = kthread_resume(&worker);
            FINISHED.load(Ordering::SeqCst) == 3
        });
        assert!(finished, "threads did not finish: deadlock ({} of 3 done)", FINISHED.load(Ordering::SeqCst));
        assert!(CHECKS.load(Ordering::Relaxed) > 0 && SUSPENDS.load(Ordering::Relaxed) > 10);
        log::info!("stress: {} checks, {} suspends, {} resumes in {seconds} s", last.0, last.1, last.2);
    }
}
