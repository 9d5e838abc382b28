//! illumos: kernel-only LWPs inside a process (`TP_KTHREAD`), as viona
//! creates its ring workers.
//!
//! `lwp_create(func, arg, len, p, state, pri, smask, cid, lwpid)` adds an
//! LWP to process `p` with the given hold mask, priority and class; with
//! `TS_STOPPED` it is created stopped and held (`TP_HOLDLWP`). The caller
//! then, under the process lock, clears the hold and marks it kernel-only
//! (`lwp_set_kthread`, the `t_proc_flag` update of the seed) and starts it
//! with `lwp_create_done`. Creation is refused (`None`, as illumos returns
//! `NULL`) while the process is exiting or at a limit; callers map that to
//! an error (viona: `ENOMEM`).

use alloc::sync::Arc;

use crate::errno::Errno;
use crate::kthread::{self, Builder};
use crate::proc::Process;
use crate::proc::lwp::{self, Lwp, Priority, SchedClass, SignalSet};

/// Create the LWP stopped (held until `lwp_create_done`).
pub const TS_STOPPED: u32 = 0x1;
/// Create it runnable.
pub const TS_RUN: u32 = 0x2;

/// Scheduling class ids (`t_cid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassId {
    /// `SYS`: fixed priority.
    Sys,
    /// `TS`: timeshare.
    Ts,
}

/// `minclsyspri`: the lowest system priority.
pub const MINCLSYSPRI: Priority = 60;

/// `kthread_t *`.
pub type KthreadRef = Arc<Lwp>;

/// `lwp_create(proc, func, arg, len, p, state, pri, smask, cid, lwpid)`.
/// `len` is the stack size in bytes (0: the default); `lwpid` is ignored
/// (ids are allocated). Returns `None` when creation is refused.
#[allow(clippy::too_many_arguments)]
pub fn lwp_create<A: Send + 'static>(
    func: fn(A),
    arg: A,
    len: usize,
    p: &Arc<Process>,
    state: u32,
    pri: Priority,
    smask: &SignalSet,
    cid: ClassId,
    _lwpid: u32,
) -> Option<KthreadRef> {
    let class = match cid {
        ClassId::Sys => SchedClass::FixedRoundRobin,
        ClassId::Ts => SchedClass::Timeshare,
    };
    let mut builder = Builder::new("")
        .process(p)
        .class(class, pri)
        .hold_mask(*smask)
        .flags(lwp::flags::MPSAFE)
        .start_stopped();
    if len > 0 {
        builder = builder.stack_pages(len.div_ceil(4096));
    }
    if state & TS_STOPPED != 0 {
        builder = builder.flags(lwp::flags::MPSAFE | lwp::flags::HOLD);
    }
    let lwp = match builder.spawn(move || func(arg)) {
        Ok(lwp) => lwp,
        Err(error) => {
            log::debug!("lwp_create in {:?} refused: {error}", p);
            return None;
        }
    };
    // Only LWPs marked kernel-only count as kernel threads there; the
    // builder marks every thread it makes, so take that back here.
    lwp.update_flags(0, lwp::flags::KERNEL_THREAD);
    if state & TS_STOPPED == 0 {
        let _ = kthread::start(&lwp);
    }
    Some(lwp)
}

/// The seed's `t->t_proc_flag = (t->t_proc_flag & ~TP_HOLDLWP) |
/// TP_KTHREAD`, done under the process lock: the LWP becomes kernel-only
/// and startable.
pub fn lwp_set_kthread(t: &KthreadRef) {
    let _process_lock = t.process.suspend_lock.lock();
    t.update_flags(
        lwp::flags::KTHREAD | lwp::flags::KERNEL_THREAD,
        lwp::flags::HOLD,
    );
}

/// `lwp_create_done(t)`: makes a stopped LWP runnable, unless it is still
/// held. `EINVAL` if it was not stopped or is held.
pub fn lwp_create_done(t: &KthreadRef) -> Result<(), Errno> {
    kthread::start(t)
}

/// Names an LWP (viona names its workers when a ring starts).
pub fn lwp_set_name(t: &KthreadRef, name: &str) {
    t.set_name(name);
}

crate::ktests! {
    fn viona_style_creation_stopped_held_marked_then_started() {
        use core::sync::atomic::{AtomicBool, Ordering};
        static RAN: AtomicBool = AtomicBool::new(false);
        let process = crate::proc::create("bhyve-like", 0).expect("process");
        let t = lwp_create(|_: ()| RAN.store(true, Ordering::SeqCst), (), 0, &process, TS_STOPPED, MINCLSYSPRI - 1, &SignalSet::ALL, ClassId::Sys, 0)
            .expect("lwp_create");
        assert_eq!(t.state(), lwp::LwpState::Idle);
        assert!(t.has_flag(lwp::flags::HOLD));
        assert!(!t.has_flag(lwp::flags::KTHREAD));
        assert_eq!(lwp_create_done(&t), Err(Errno::EINVAL), "a held LWP must not start");
        lwp_set_kthread(&t);
        assert!(t.has_flag(lwp::flags::KTHREAD) && !t.has_flag(lwp::flags::HOLD));
        lwp_create_done(&t).expect("lwp_create_done");
        assert!(crate::ktest::wait_until(2_000, || RAN.load(Ordering::SeqCst)));
        assert_eq!(process.wait_exit(), 0, "its only LWP ended, so did the process");
    }

    fn worker_counts_in_the_process_and_is_named() {
        use core::sync::atomic::{AtomicBool, Ordering};
        static STOP: AtomicBool = AtomicBool::new(false);
        let process = crate::proc::create("named-workers", 0).expect("process");
        let user = crate::kthread::Builder::new("user-lwp").process(&process).start_stopped().spawn(|| {}).expect("user LWP");
        let before = process.lwp_count();
        let t = lwp_create(|_: ()| {
            let me = crate::sched::current();
            lwp_set_name(&me, "vnet0-rx0");
            while !STOP.load(Ordering::SeqCst) {
                crate::sched::sleep_ns(1_000_000);
            }
        }, (), 0, &process, TS_STOPPED, MINCLSYSPRI - 1, &SignalSet::ALL, ClassId::Sys, 0)
        .expect("lwp_create");
        lwp_set_kthread(&t);
        lwp_create_done(&t).expect("start");
        assert_eq!(process.lwp_count(), before + 1, "the worker counts in the process's LWP list");
        assert!(crate::ktest::wait_until(2_000, || t.name() == "vnet0-rx0"), "the worker names itself");
        assert_ne!(t.id, user.id, "LWP ids are unique in the process");
        assert!(process.find_lwp(t.id).is_some_and(|found| found.name() == "vnet0-rx0"));
        STOP.store(true, Ordering::SeqCst);
        assert!(crate::ktest::wait_until(2_000, || t.state() == lwp::LwpState::Zombie));
        crate::kthread::destroy_unstarted(&user).expect("destroy");
    }

    fn ts_run_starts_the_lwp_at_once() {
        use core::sync::atomic::{AtomicBool, Ordering};
        static RAN: AtomicBool = AtomicBool::new(false);
        let process = crate::proc::create("run-now", 0).expect("process");
        let t = lwp_create(|_: ()| RAN.store(true, Ordering::SeqCst), (), 0, &process, TS_RUN, MINCLSYSPRI, &SignalSet::ALL, ClassId::Sys, 0)
            .expect("lwp_create");
        assert!(!t.has_flag(lwp::flags::HOLD));
        assert!(crate::ktest::wait_until(2_000, || RAN.load(Ordering::SeqCst)));
        assert_eq!(process.wait_exit(), 0);
    }

    fn hold_mask_is_every_signal_including_sigkill() {
        let process = crate::proc::create("held", 0).expect("process");
        let t = lwp_create(|_: ()| {}, (), 0, &process, TS_STOPPED, MINCLSYSPRI - 1, &SignalSet::ALL, ClassId::Sys, 0)
            .expect("lwp_create");
        let mask = t.hold_mask();
        assert!((1..=64).all(|signal| mask.contains(signal)));
        assert!(mask.contains(9) && mask.contains(19), "SIGKILL and SIGSTOP are held too");
        crate::kthread::destroy_unstarted(&t).expect("destroy");
    }

    fn priority_and_class_are_the_callers() {
        let process = crate::proc::create("classes", 0).expect("process");
        let sys = lwp_create(|_: ()| {}, (), 0, &process, TS_STOPPED, MINCLSYSPRI - 1, &SignalSet::ALL, ClassId::Sys, 0).expect("sys");
        let ts = lwp_create(|_: ()| {}, (), 0, &process, TS_STOPPED, 30, &SignalSet::ALL, ClassId::Ts, 0).expect("ts");
        assert_eq!((sys.class(), sys.priority()), (SchedClass::FixedRoundRobin, MINCLSYSPRI - 1));
        assert_eq!((ts.class(), ts.priority()), (SchedClass::Timeshare, 30));
        crate::kthread::destroy_unstarted(&sys).expect("destroy");
        crate::kthread::destroy_unstarted(&ts).expect("destroy");
    }

    fn creation_is_refused_while_the_process_exits() {
        let process = crate::proc::create("exiting", 0).expect("process");
        process.begin_exit();
        let t = lwp_create(|_: ()| {}, (), 0, &process, TS_STOPPED, MINCLSYSPRI - 1, &SignalSet::ALL, ClassId::Sys, 0);
        assert!(t.is_none(), "an exiting process must refuse new LWPs");
        assert_eq!(process.lwp_count(), 0);
    }

    fn worker_notices_process_exit_and_exits_by_itself() {
        use core::sync::atomic::{AtomicU32, Ordering};
        static EXITED: AtomicU32 = AtomicU32::new(0);
        let process = crate::proc::create("exit-watch", 0).expect("process");
        let gate = Arc::new(crate::sync::Mutex::new(()));
        let changed = Arc::new(crate::sync::Condvar::new());
        type Shared = (Arc<crate::sync::Mutex<()>>, Arc<crate::sync::Condvar>);
        for _ in 0..2 {
            let shared: Shared = (Arc::clone(&gate), Arc::clone(&changed));
            let t = lwp_create(|(gate, changed): Shared| {
                let me = crate::sched::current();
                let mut guard = gate.lock();
                // Sleep interruptibly until the process exits (the bail check).
                while !me.process.is_exiting() {
                    guard = changed.wait_interruptible(guard).0;
                    me.set_interrupt_pending(false);
                }
                EXITED.fetch_add(1, Ordering::SeqCst);
            }, shared, 0, &process, TS_STOPPED, MINCLSYSPRI - 1, &SignalSet::ALL, ClassId::Sys, 0)
            .expect("lwp_create");
            lwp_set_kthread(&t);
            lwp_create_done(&t).expect("start");
        }
        crate::sched::sleep_ns(20_000_000);
        assert_eq!(EXITED.load(Ordering::SeqCst), 0);
        // Process exit: mark it, then wake every LWP (interruptibly sleeping
        // workers notice by themselves).
        process.begin_exit();
        for lwp in process.lwps() {
            crate::sched::interrupt(&lwp);
        }
        assert_eq!(process.wait_exit(), 0);
        assert_eq!(EXITED.load(Ordering::SeqCst), 2);
        assert_eq!(process.lwp_count(), 0);
    }
}
