//! FreeBSD 4-7 `kthread(9)`: kernel threads were whole kernel processes.
//!
//! `kthread_create(func, arg, newpp, flags, pages, fmt, ...)` creates a
//! kernel process with one thread; `flags` are `rfork(2)` flags: `RFCFDG`
//! fails with `EINVAL`, `RFSTOPPED` leaves it stopped, and the process
//! limit (`maxproc`, `proc::LIMITS`) gives `EAGAIN`. `kthread_exit(ecode)`
//! hands `ecode` to the parent waiting in `kthread_wait` (FreeBSD: the
//! parent's `wait`). `kproc_start` is the boot-time helper. Suspension takes
//! the process and acts on its thread.

use alloc::sync::Arc;
use core::fmt;

use spin::Once;

use super::freebsd;
use crate::errno::Errno;
use crate::kthread;
use crate::proc::{Process, lwp::Lwp};

/// rfork: give the child a clean file descriptor table: refused here.
pub const RFCFDG: u32 = 1 << 12;
/// rfork: start the child stopped.
pub const RFSTOPPED: u32 = freebsd::RFSTOPPED;
/// rfork: new process (always implied here).
pub const RFPROC: u32 = 1 << 4;
/// rfork: share the address space (always implied: proc0's).
pub const RFMEM: u32 = 1 << 5;
const ACCEPTED: u32 = RFSTOPPED | RFPROC | RFMEM;

pub type ProcRef = Arc<Process>;

/// `kthread_create(func, arg, newpp, flags, pages, fmt, ...)`.
pub fn kthread_create<A: Send + 'static>(
    func: fn(A),
    arg: A,
    newpp: Option<&mut Option<ProcRef>>,
    flags: u32,
    pages: usize,
    fmt: fmt::Arguments,
) -> Result<(), Errno> {
    if flags & RFCFDG != 0 || flags & !(ACCEPTED | RFCFDG) != 0 {
        return Err(Errno::EINVAL);
    }
    freebsd::kproc_create(func, arg, newpp, flags & RFSTOPPED, pages, fmt)
}

/// The one thread of a FreeBSD 4-7 kernel process.
fn thread_of(p: &ProcRef) -> Result<Arc<Lwp>, Errno> {
    p.lwps().into_iter().next().ok_or(Errno::ESRCH)
}

/// Starts a process created with `RFSTOPPED`.
pub fn kthread_run(p: &ProcRef) -> Result<(), Errno> {
    kthread::start(&thread_of(p)?)
}

/// `kthread_exit(ecode)`: ends the kernel process with `ecode`, for the
/// parent waiting in `kthread_wait`.
pub fn kthread_exit(ecode: i32) -> ! {
    kthread::exit(ecode)
}

/// The parent's `wait`: blocks until `p` has exited; returns its status.
pub fn kthread_wait(p: &ProcRef) -> i32 {
    p.wait_exit()
}

/// `kthread_suspend(p, timo)`.
pub fn kthread_suspend(p: &ProcRef, timo: u64) -> Result<(), Errno> {
    freebsd::kthread_suspend(&thread_of(p)?, timo)
}

/// `kthread_resume(p)`.
pub fn kthread_resume(p: &ProcRef) -> Result<(), Errno> {
    freebsd::kthread_resume(&thread_of(p)?)
}

/// `kthread_suspend_check(p)` (`p` must be the caller's process).
pub fn kthread_suspend_check(_p: &ProcRef) {
    freebsd::kthread_suspend_check()
}

/// `struct kproc_desc`.
pub struct KprocDesc {
    pub arg0: &'static str,
    pub func: fn(),
    pub global_procpp: Option<&'static Once<ProcRef>>,
}

/// `kproc_start(udata)`: creates the described kernel process and stores
/// its handle.
pub fn kproc_start(desc: &KprocDesc) -> Result<(), Errno> {
    let mut process = None;
    kthread_create(
        |func: fn()| func(),
        desc.func,
        Some(&mut process),
        0,
        0,
        format_args!("{}", desc.arg0),
    )?;
    if let (Some(slot), Some(process)) = (desc.global_procpp, process) {
        slot.call_once(|| process);
    }
    Ok(())
}

crate::ktests! {
    fn rfcfdg_is_einval() {
        let result = kthread_create(|_: ()| kthread_exit(0), (), None, RFCFDG, 0, format_args!("rfcfdg"));
        assert_eq!(result, Err(Errno::EINVAL));
        let result = kthread_create(|_: ()| kthread_exit(0), (), None, RFPROC | RFCFDG, 0, format_args!("rfcfdg"));
        assert_eq!(result, Err(Errno::EINVAL));
    }

    fn process_limit_is_eagain() {
        use core::sync::atomic::Ordering;
        let limits = &crate::proc::LIMITS;
        let saved = limits.max_processes.load(Ordering::SeqCst);
        limits.max_processes.store(crate::proc::all().len(), Ordering::SeqCst);
        let result = kthread_create(|_: ()| kthread_exit(0), (), None, 0, 0, format_args!("over-maxproc"));
        limits.max_processes.store(saved, Ordering::SeqCst);
        assert_eq!(result, Err(Errno::EAGAIN));
    }

    fn each_thread_is_a_kernel_process() {
        let mut p = None;
        kthread_create(|_: ()| kthread_exit(0), (), Some(&mut p), RFPROC | RFMEM | RFSTOPPED, 0, format_args!("old-{}", "style"))
            .expect("kthread_create");
        let p = p.expect("newpp");
        assert!(p.has_flag(crate::proc::flags::SYSTEM));
        assert_eq!(p.name(), "old-style");
        assert_eq!(p.lwp_count(), 1);
        assert_ne!(p.pid, 0);
        kthread_run(&p).expect("run");
        assert_eq!(kthread_wait(&p), 0);
    }

    fn rfstopped_leaves_the_process_stopped() {
        use core::sync::atomic::{AtomicBool, Ordering};
        static RAN: AtomicBool = AtomicBool::new(false);
        let mut p = None;
        kthread_create(|_: ()| { RAN.store(true, Ordering::SeqCst); kthread_exit(0) }, (), Some(&mut p), RFSTOPPED, 0, format_args!("stopped-proc"))
            .expect("kthread_create");
        let p = p.expect("newpp");
        crate::sched::sleep_ns(30_000_000);
        assert!(!RAN.load(Ordering::SeqCst));
        assert_eq!(p.lwps()[0].state(), crate::proc::lwp::LwpState::Idle);
        kthread_run(&p).expect("run");
        kthread_wait(&p);
        assert!(RAN.load(Ordering::SeqCst));
    }

    fn exit_status_goes_to_the_waiting_parent() {
        let mut p = None;
        kthread_create(|code: i32| { crate::sched::sleep_ns(10_000_000); kthread_exit(code) }, 42, Some(&mut p), 0, 0, format_args!("exit-42"))
            .expect("kthread_create");
        assert_eq!(kthread_wait(&p.expect("newpp")), 42);
    }

    fn kproc_start_stores_the_process() {
        let p = super::super::sysinit::HOUSEKEEPING_PROC.get().expect("the init list started housekeeping");
        assert_eq!(p.name(), "housekeeping");
        assert!(p.has_flag(crate::proc::flags::SYSTEM));
        assert_eq!(p.lwp_count(), 1);
    }

    fn suspend_and_resume_by_process() {
        let p = super::super::sysinit::HOUSEKEEPING_PROC.get().expect("housekeeping runs");
        assert_eq!(kthread_suspend(p, crate::time::tick_hz() * 5), Ok(()), "housekeeping acknowledges");
        let td = &p.lwps()[0];
        assert!(td.suspend.lock().requested);
        kthread_resume(p).expect("resume");
        assert!(!td.suspend.lock().requested);
    }
}
