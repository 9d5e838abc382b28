//! The big kernel lock, held by kernel threads that are not MP-safe.
//!
//! NetBSD runs a kernel thread created without `KTHREAD_MPSAFE` holding
//! the global kernel lock whenever it runs. Here that is a real lock,
//! owned by one LWP at a time (`OWNER`: the owner's serial, 0 when free),
//! recursive (`DEPTH`). It is taken before such a thread's function runs,
//! given up whenever the thread sleeps or yields and taken back when it
//! runs again (involuntary preemption keeps it), and released at exit.
//! Waiting for it yields the CPU, then sleeps a tick at a time, so an owner
//! of lower priority gets to run and release it.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::sched;

static OWNER: AtomicU64 = AtomicU64::new(0);
static DEPTH: AtomicU32 = AtomicU32::new(0);

fn my_serial() -> Option<u64> {
    sched::try_current().map(|lwp| lwp.serial)
}

/// Takes the lock (recursively if the caller holds it).
pub fn acquire() {
    let Some(me) = my_serial() else { return };
    if OWNER.load(Ordering::Acquire) == me {
        DEPTH.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut attempts = 0u32;
    while OWNER
        .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        // Yield first; if the owner still holds it (it may run at a lower
        // priority than we do), sleep a tick so it can run and release.
        if attempts < 8 {
            sched::schedule();
        } else {
            sched::sleep_ns(1);
        }
        attempts += 1;
    }
    DEPTH.store(1, Ordering::Relaxed);
}

/// Releases one level.
pub fn release() {
    let Some(me) = my_serial() else { return };
    if OWNER.load(Ordering::Acquire) != me {
        return;
    }
    if DEPTH.fetch_sub(1, Ordering::Relaxed) == 1 {
        OWNER.store(0, Ordering::Release);
    }
}

pub fn held_by_current() -> bool {
    my_serial().is_some_and(|me| OWNER.load(Ordering::Acquire) == me)
}

/// Releases every level the caller holds; returns how many, for
/// `reacquire`.
pub fn release_all() -> u32 {
    let Some(me) = my_serial() else { return 0 };
    if OWNER.load(Ordering::Acquire) != me {
        return 0;
    }
    let depth = DEPTH.swap(0, Ordering::Relaxed);
    OWNER.store(0, Ordering::Release);
    depth
}

/// Takes the lock back at `depth` levels after `release_all`.
pub fn reacquire(depth: u32) {
    if depth == 0 {
        return;
    }
    acquire();
    DEPTH.store(depth, Ordering::Relaxed);
}
