//! Condition variables for the sleeping mutex.
//!
//! Owns the queue of waiting sleeps (`waiters`, an `IrqSpinLock` taken
//! before LWP and run-queue locks). A
//! waiter registers its `Waker` and only then releases the mutex, with
//! interrupts off throughout (`sched::prepare_sleep`), so a notify that
//! follows the release always finds it: no lost wake-ups. Waits may time
//! out and may be interruptible; a waiter that wakes for any reason but a
//! notify removes its own entry.

use alloc::collections::VecDeque;

use super::mutex::MutexGuard;
use crate::proc::lwp::WakeReason;
use crate::sched::{self, Waker};
use crate::sync::IrqSpinLock;
use crate::time;

/// How a wait ended.
pub type WaitResult = WakeReason;

pub struct Condvar {
    waiters: IrqSpinLock<VecDeque<Waker>>,
}

impl Default for Condvar {
    fn default() -> Self {
        Condvar::new()
    }
}

impl Condvar {
    pub const fn new() -> Condvar {
        Condvar {
            waiters: IrqSpinLock::new(VecDeque::new()),
        }
    }

    #[track_caller]
    fn wait_inner<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline_ns: Option<u64>,
        interruptible: bool,
    ) -> (MutexGuard<'a, T>, WaitResult) {
        let mutex = guard.mutex();
        let ticket = match sched::prepare_sleep(interruptible) {
            Ok(ticket) => ticket,
            Err(reason) => {
                // A kernel-only LWP of a stopped process parks here, with
                // no lock held.
                drop(guard);
                crate::signal::stop_point();
                return (mutex.lock(), reason);
            }
        };
        let waker = ticket.waker();
        self.waiters.lock().push_back(waker.clone());
        drop(guard);
        let reason = ticket.block(deadline_ns);
        if reason != WakeReason::Notified {
            self.waiters
                .lock()
                .retain(|other| !other.same_sleep(&waker));
        }
        if reason == WakeReason::Interrupted {
            crate::signal::stop_point();
        }
        (mutex.lock(), reason)
    }

    /// Releases `guard`'s mutex, sleeps until notified, relocks.
    #[track_caller]
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait_inner(guard, None, false).0
    }

    /// As `wait`, but gives up after `timeout_ns` (`TimedOut`).
    #[track_caller]
    pub fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout_ns: u64,
    ) -> (MutexGuard<'a, T>, WaitResult) {
        self.wait_inner(
            guard,
            Some(time::now_ns().saturating_add(timeout_ns)),
            false,
        )
    }

    /// As `wait`, but `sched::interrupt` ends it (`Interrupted`).
    #[track_caller]
    pub fn wait_interruptible<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
    ) -> (MutexGuard<'a, T>, WaitResult) {
        self.wait_inner(guard, None, true)
    }

    /// Interruptible, with a timeout.
    #[track_caller]
    pub fn wait_timeout_interruptible<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout_ns: u64,
    ) -> (MutexGuard<'a, T>, WaitResult) {
        self.wait_inner(guard, Some(time::now_ns().saturating_add(timeout_ns)), true)
    }

    /// Wakes one waiter, if any.
    pub fn notify_one(&self) {
        loop {
            let Some(waiter) = self.waiters.lock().pop_front() else {
                return;
            };
            if waiter.wake(WakeReason::Notified) {
                return;
            }
        }
    }

    /// Wakes every waiter.
    /// Wakes every waiter. The wake-ups happen under the queue lock (it
    /// comes before LWP and run-queue locks), so the queue's storage is
    /// neither freed nor reallocated while the woken run: nothing is freed
    /// behind their backs (leak checks compare exact figures).
    pub fn notify_all(&self) {
        let mut waiters = self.waiters.lock();
        for waiter in waiters.drain(..) {
            waiter.wake(WakeReason::Notified);
        }
    }

    /// Waiters queued now (tests, diagnostics).
    pub fn waiter_count(&self) -> usize {
        self.waiters.lock().len()
    }
}
