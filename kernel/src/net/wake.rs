//! Wake-ups of socket calls sleeping on a stack: only the calls whose
//! sockets may have changed are woken.
//!
//! Owns `Signal` (one per socket, per epoll instance and per stack: the
//! calls watching it, under an `IrqSpinLock` taken after the stack lock
//! and before the waiters' condvar queues), `Watch` (one sleeping call:
//! its `Waiter`, a condvar only it sleeps on, and the signals it is on)
//! and `Batch` (one per stack, its list an `IrqSpinLock` taken before the
//! signals': the socket signals smoltcp woke while a worker polls the
//! interface, notified at the end of the poll, still under the stack
//! lock, so that woken calls do not queue on the stack lock for the rest
//! of the poll; outside a poll a wake notifies at once).
//!
//! A socket's signal is the `core::task::Waker` of every smoltcp socket of
//! it (both directions), woken on data, room, every TCP state change and a
//! reset, and consumed by the wake. A call sleeps thus, with the stack
//! lock held throughout: it checks; it joins the signals of what it looked
//! at and registers their wakers (`Socket::arm`); it sleeps on its condvar,
//! which queues the sleep before releasing the stack lock. Every notify
//! happens under the stack lock (smoltcp wakes, socket setup changes,
//! `go_down`; `epoll_ctl` under its socket's stack lock), so it comes
//! after the sleep is queued and finds the waiter listed. States: a
//! waiter is on a signal from its arming until its `Watch` is dropped (at
//! the end of the call); a notify of a waiter that is not asleep is lost,
//! harmlessly: it checks again before it sleeps again.

use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::sync::{Condvar, IrqSpinLock};

/// The condvar one sleeping call sleeps on.
pub struct Waiter {
    pub condvar: Condvar,
}

/// The wakes of one poll of the interface (see the module comment).
/// `open` only changes under the stack lock, as every wake happens.
pub struct Batch {
    open: AtomicBool,
    woken: IrqSpinLock<Vec<Arc<Signal>>>,
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

impl Batch {
    pub const fn new() -> Batch {
        Batch {
            open: AtomicBool::new(false),
            woken: IrqSpinLock::new(Vec::new()),
        }
    }

    /// A poll begins: wakes wait for `end`.
    pub fn begin(&self) {
        self.open.store(true, Ordering::Relaxed);
    }

    /// The poll ended: notifies the signals woken during it.
    pub fn end(&self) {
        self.open.store(false, Ordering::Relaxed);
        for signal in self.woken.lock().drain(..) {
            signal.notify();
        }
    }
}

/// What a set of waiters watch: notifying it wakes them all.
pub struct Signal {
    waiters: IrqSpinLock<Vec<Arc<Waiter>>>,
    /// A socket's signal: its stack's batch.
    batch: Option<Arc<Batch>>,
}

impl Default for Signal {
    fn default() -> Self {
        Signal::new()
    }
}

impl Signal {
    pub const fn new() -> Signal {
        Signal {
            waiters: IrqSpinLock::new(Vec::new()),
            batch: None,
        }
    }

    /// The signal of a socket of the stack with `batch`.
    pub fn batched(batch: &Arc<Batch>) -> Signal {
        Signal {
            waiters: IrqSpinLock::new(Vec::new()),
            batch: Some(Arc::clone(batch)),
        }
    }

    /// Wakes every call watching this signal.
    pub fn notify(&self) {
        for waiter in self.waiters.lock().iter() {
            waiter.condvar.notify_all();
        }
    }

    fn add(&self, waiter: &Arc<Waiter>) {
        self.waiters.lock().push(Arc::clone(waiter));
    }

    fn remove(&self, waiter: &Arc<Waiter>) {
        let mut waiters = self.waiters.lock();
        if let Some(index) = waiters.iter().position(|other| Arc::ptr_eq(other, waiter)) {
            waiters.swap_remove(index);
        }
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        match &self.batch {
            Some(batch) if batch.open.load(Ordering::Relaxed) => {
                let batch = Arc::clone(batch);
                batch.woken.lock().push(self);
            }
            _ => self.notify(),
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        Arc::clone(self).wake();
    }
}

/// One sleeping call: its waiter and the signals it is on (it leaves them
/// when dropped).
pub struct Watch {
    waiter: Arc<Waiter>,
    signals: Vec<Arc<Signal>>,
}

impl Default for Watch {
    fn default() -> Self {
        Watch::new()
    }
}

impl Watch {
    pub fn new() -> Watch {
        Watch {
            waiter: Arc::new(Waiter {
                condvar: Condvar::new(),
            }),
            signals: Vec::new(),
        }
    }

    /// Puts the waiter on `signal` (once).
    pub fn add(&mut self, signal: &Arc<Signal>) {
        if !self.signals.iter().any(|other| Arc::ptr_eq(other, signal)) {
            signal.add(&self.waiter);
            self.signals.push(Arc::clone(signal));
        }
    }

    pub fn waiter(&self) -> &Waiter {
        &self.waiter
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        for signal in &self.signals {
            signal.remove(&self.waiter);
        }
    }
}
