//! The ordered boot-time init list (FreeBSD's `SYSINIT`).
//!
//! Each entry names a subsystem (which orders the list first), an order
//! within it, and a function. `run_all` runs them once, sorted, and records
//! the order it used, so tests can check it. Today's entries start the
//! reaper with FreeBSD's `kthread_start` and a demonstration kernel process
//! with FreeBSD 4-7's `kproc_start`.

use alloc::vec::Vec;

use spin::Once;

use super::{freebsd, freebsd4};
use crate::sync::Mutex;

/// Subsystems, in boot order (a few of FreeBSD's `SI_SUB_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subsystem {
    Kthread,
    KthreadBuf,
    Last,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Order {
    First,
    Any,
    Last,
}

pub struct SysInit {
    pub name: &'static str,
    pub subsystem: Subsystem,
    pub order: Order,
    pub func: fn(),
}

/// The list, deliberately not in boot order: `run_all` sorts it.
const SYSINITS: &[SysInit] = &[
    SysInit {
        name: "housekeeping",
        subsystem: Subsystem::KthreadBuf,
        order: Order::Any,
        func: start_housekeeping,
    },
    SysInit {
        name: "reaper",
        subsystem: Subsystem::Kthread,
        order: Order::First,
        func: start_reaper,
    },
    SysInit {
        name: "boot-done",
        subsystem: Subsystem::Last,
        order: Order::Last,
        func: boot_done,
    },
];

static RAN: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

pub static REAPER_THREAD: Once<freebsd::ThreadRef> = Once::new();
pub static HOUSEKEEPING_PROC: Once<freebsd4::ProcRef> = Once::new();

static REAPER_DESC: freebsd::KthreadDesc = freebsd::KthreadDesc {
    arg0: "reaper",
    func: reaper_main,
    global_threadpp: Some(&REAPER_THREAD),
};

static HOUSEKEEPING_DESC: freebsd4::KprocDesc = freebsd4::KprocDesc {
    arg0: "housekeeping",
    func: housekeeping_main,
    global_procpp: Some(&HOUSEKEEPING_PROC),
};

fn reaper_main() {
    crate::kthread::reaper::run()
}

fn start_reaper() {
    if let Err(error) = freebsd::kthread_start(&REAPER_DESC) {
        log::error!("cannot start the reaper: {error}");
    }
}

/// A kernel process that sleeps and answers suspension requests, as a
/// FreeBSD daemon would: a live example of `kproc_start` and
/// `kthread_suspend_check`.
fn housekeeping_main() {
    let process = crate::sched::current().process.clone();
    loop {
        freebsd4::kthread_suspend_check(&process);
        crate::sched::sleep_ns(100_000_000);
    }
}

fn start_housekeeping() {
    if let Err(error) = freebsd4::kproc_start(&HOUSEKEEPING_DESC) {
        log::error!("cannot start housekeeping: {error}");
    }
}

fn boot_done() {
    log::debug!("sysinit: boot-time init list done");
}

/// Runs the init list in (subsystem, order) order. Once.
pub fn run_all() {
    let mut entries: Vec<&SysInit> = SYSINITS.iter().collect();
    entries.sort_by_key(|entry| (entry.subsystem, entry.order));
    for entry in entries {
        log::debug!(
            "sysinit: {} ({:?}, {:?})",
            entry.name,
            entry.subsystem,
            entry.order
        );
        (entry.func)();
        RAN.lock().push(entry.name);
    }
}

/// The names of the entries run, in the order they ran.
pub fn ran() -> Vec<&'static str> {
    RAN.lock().clone()
}

/// Keeps the kernel's periodic background work (the housekeeping kernel
/// process, whose sleeps allocate callouts) suspended while it lives, and
/// lets pending stack frees finish first, so a test can compare the frame
/// and heap counters exactly.
pub struct Quiet {
    housekeeping: Option<alloc::sync::Arc<crate::proc::Process>>,
    _ctl: crate::ctl::PollingHold,
}

pub fn quiesce() -> Quiet {
    // The control channel's poller first: it finishes its command and
    // then waits off its CPU until the hold is dropped.
    let ctl = crate::ctl::hold_polling();
    let housekeeping = HOUSEKEEPING_PROC.get().cloned();
    if let Some(process) = &housekeeping {
        crate::compat::freebsd4::kthread_suspend(process, crate::time::tick_hz() * 5)
            .expect("housekeeping acknowledges a suspension within 5 s");
        // It acknowledged; wait until it has also gone back to sleep and
        // is off its CPU (a sleeper is marked `Sleeping` a little before it
        // has finished getting there).
        let parked = crate::ktest::wait_until(5_000, || {
            process.lwps().iter().all(|lwp| {
                lwp.state() == crate::proc::lwp::LwpState::Sleeping
                    && !lwp.on_cpu.load(core::sync::atomic::Ordering::Acquire)
            })
        });
        assert!(parked, "housekeeping did not park");
    }
    crate::kthread::reaper::drain();
    Quiet {
        housekeeping,
        _ctl: ctl,
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        if let Some(process) = &self.housekeeping {
            let _ = crate::compat::freebsd4::kthread_resume(process);
        }
    }
}
