//! Synchronisation: interrupt-safe spin locks (here), the sleeping
//! `Mutex` and `Condvar` (which need the scheduler), and the big kernel
//! lock of non-MP-safe kernel threads.
//!
//! `IrqSpinLock` is a spin lock that turns interrupts off on the local CPU
//! while held and restores the previous state on release, so an interrupt
//! handler on the same CPU can never spin on a lock its own CPU holds. Use it
//! for anything an interrupt handler may touch (console, frame allocator,
//! clock state). Hold it briefly; never sleep under it (sleeping locks arrive
//! with the scheduler).

pub mod biglock;
mod condvar;
mod mutex;

pub use condvar::Condvar;
pub use mutex::{Mutex, MutexGuard};

use core::ops::{Deref, DerefMut};

use x86_64::instructions::interrupts;

pub struct IrqSpinLock<T> {
    inner: spin::Mutex<T>,
}

pub struct IrqSpinLockGuard<'a, T> {
    guard: Option<spin::MutexGuard<'a, T>>,
    interrupts_were_enabled: bool,
}

impl<T> IrqSpinLock<T> {
    pub const fn new(value: T) -> Self {
        Self {
            inner: spin::Mutex::new(value),
        }
    }

    pub fn lock(&self) -> IrqSpinLockGuard<'_, T> {
        let interrupts_were_enabled = interrupts::are_enabled();
        interrupts::disable();
        IrqSpinLockGuard {
            guard: Some(self.inner.lock()),
            interrupts_were_enabled,
        }
    }

    /// Takes the lock without waiting, for paths (panic, fatal exceptions)
    /// that must not deadlock on a lock their own CPU may already hold.
    pub fn try_lock(&self) -> Option<IrqSpinLockGuard<'_, T>> {
        let interrupts_were_enabled = interrupts::are_enabled();
        interrupts::disable();
        match self.inner.try_lock() {
            Some(guard) => Some(IrqSpinLockGuard {
                guard: Some(guard),
                interrupts_were_enabled,
            }),
            None => {
                if interrupts_were_enabled {
                    interrupts::enable();
                }
                None
            }
        }
    }
}

impl<T> Deref for IrqSpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_ref().expect("guard is present until drop")
    }
}

impl<T> DerefMut for IrqSpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("guard is present until drop")
    }
}

impl<T> Drop for IrqSpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // Release the lock before interrupts come back on.
        drop(self.guard.take());
        if self.interrupts_were_enabled {
            interrupts::enable();
        }
    }
}
