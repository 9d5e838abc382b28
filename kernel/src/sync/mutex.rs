//! A sleeping mutex: waiters sleep instead of spinning.
//!
//! Owns its data and its state (`state`: locked or not, and the waiting
//! LWPs, behind an `IrqSpinLock`, taken before LWP and run-queue locks).
//! Unlocking hands the lock straight to the longest waiter (FIFO), so a
//! thread that releases and retakes the lock in a loop cannot starve the
//! others; only an uncontended lock is taken without queueing. The data sits in an inner spin
//! lock that is only ever taken by the owner, so it is never contended.
//! May be held across sleeps and preemption; must not be taken in interrupt
//! context. Before the scheduler runs (early boot) a contended lock spins.

use alloc::collections::VecDeque;
use core::ops::{Deref, DerefMut};

use crate::sched::{self, Waker};
use crate::sync::IrqSpinLock;

pub struct Mutex<T> {
    state: IrqSpinLock<MutexState>,
    data: spin::Mutex<T>,
}

struct MutexState {
    locked: bool,
    waiters: VecDeque<Waker>,
}

pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
    data: Option<spin::MutexGuard<'a, T>>,
}

impl<T> Mutex<T> {
    pub const fn new(value: T) -> Mutex<T> {
        Mutex {
            state: IrqSpinLock::new(MutexState {
                locked: false,
                waiters: VecDeque::new(),
            }),
            data: spin::Mutex::new(value),
        }
    }

    fn try_take(&self) -> bool {
        let mut state = self.state.lock();
        if state.locked {
            false
        } else {
            state.locked = true;
            true
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        while !self.try_take() {
            if sched::try_current().is_none() {
                core::hint::spin_loop();
                continue;
            }
            let ticket =
                sched::prepare_sleep(false).expect("uninterruptible sleeps are never refused");
            {
                let mut state = self.state.lock();
                if !state.locked {
                    state.locked = true;
                    drop(state);
                    ticket.cancel();
                    break;
                }
                state.waiters.push_back(ticket.waker());
            }
            // Only `unlock` wakes this sleep, and it hands the lock over.
            ticket.block(None);
            break;
        }
        MutexGuard {
            mutex: self,
            data: Some(self.data.lock()),
        }
    }

    /// Hands the lock to the first waiter whose sleep is still on, or
    /// frees it.
    fn unlock(&self) {
        let mut state = self.state.lock();
        while let Some(waiter) = state.waiters.pop_front() {
            if waiter.wake(crate::proc::lwp::WakeReason::Notified) {
                return;
            }
        }
        state.locked = false;
    }
}

impl<'a, T> MutexGuard<'a, T> {
    pub(crate) fn mutex(&self) -> &'a Mutex<T> {
        self.mutex
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.data.as_ref().expect("guard is present until drop")
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.data.as_mut().expect("guard is present until drop")
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        drop(self.data.take());
        self.mutex.unlock();
    }
}
