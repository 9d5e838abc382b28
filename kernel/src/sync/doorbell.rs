//! A latched wake-up for one sleeping LWP, safe to ring from interrupt
//! handlers.
//!
//! Owns one `IrqSpinLock` holding the latch (`rung`) and the sleeper's
//! waker; it is a leaf lock (taken after any mutex, before LWP and
//! run-queue locks). `ring` sets the latch and wakes the sleeper; `wait`
//! registers the sleep first and only then looks at the latch, with
//! interrupts off, so a ring that comes between the caller's last look at
//! its work and the sleep is never lost. This is what keeps a ring worker
//! from missing a request or an interrupt (viona's lost-broadcast bug).

use crate::proc::lwp::WakeReason;
use crate::sched::{self, Waker};
use crate::sync::IrqSpinLock;

struct Latch {
    rung: bool,
    sleeper: Option<Waker>,
}

pub struct Doorbell {
    latch: IrqSpinLock<Latch>,
}

impl Default for Doorbell {
    fn default() -> Self {
        Doorbell::new()
    }
}

impl Doorbell {
    pub const fn new() -> Doorbell {
        Doorbell {
            latch: IrqSpinLock::new(Latch {
                rung: false,
                sleeper: None,
            }),
        }
    }

    /// Sets the latch and wakes the sleeper, if one waits. Safe from
    /// interrupt context.
    pub fn ring(&self) {
        let sleeper = {
            let mut latch = self.latch.lock();
            latch.rung = true;
            latch.sleeper.take()
        };
        if let Some(waker) = sleeper {
            waker.wake(WakeReason::Notified);
        }
    }

    /// Sleeps interruptibly until rung (returns at once if it was rung
    /// already), until `deadline_ns` (monotonic) if given, or until
    /// interrupted; clears the latch. An interrupted kernel-only LWP of a
    /// stopped process parks here first (`signal::stop_point`).
    #[track_caller]
    pub fn wait(&self, deadline_ns: Option<u64>) -> WakeReason {
        let ticket = match sched::prepare_sleep(true) {
            Ok(ticket) => ticket,
            Err(reason) => {
                crate::signal::stop_point();
                return reason;
            }
        };
        {
            let mut latch = self.latch.lock();
            if core::mem::replace(&mut latch.rung, false) {
                drop(latch);
                ticket.cancel();
                return WakeReason::Notified;
            }
            latch.sleeper = Some(ticket.waker());
        }
        let reason = ticket.block(deadline_ns);
        {
            let mut latch = self.latch.lock();
            latch.sleeper = None;
            // A ring woke us: consume it (rings merged into it are covered
            // by the work the caller does next). After a timeout or an
            // interruption a ring that came meanwhile stays latched.
            if reason == WakeReason::Notified {
                latch.rung = false;
            }
        }
        if reason == WakeReason::Interrupted {
            crate::signal::stop_point();
        }
        reason
    }
}
