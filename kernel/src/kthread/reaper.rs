//! The reaper: frees the kernel stacks of exited LWPs.
//!
//! An exiting LWP cannot free the stack it runs on, and the CPU that
//! switches away from it does so with interrupts off, where unmapping (and
//! its TLB shootdown) is not allowed. So `finish_switch` hands the stack to
//! `defer_free`, and the reaper thread (proc0, started from the boot-time
//! init list) drops it from thread context. Owns the queue of dead stacks
//! (`DEAD`, an `IrqSpinLock` leaf) and the reaper's `Waker`.

use alloc::vec::Vec;

use crate::mm::stack::KernelStack;
use crate::sched::{self, Waker};
use crate::sync::IrqSpinLock;

struct Dead {
    stacks: Vec<KernelStack>,
    /// The reaper's sleep, when it sleeps.
    reaper: Option<Waker>,
    /// Stacks queued and freed so far.
    queued: u64,
    freed: u64,
}

static DEAD: IrqSpinLock<Dead> = IrqSpinLock::new(Dead {
    stacks: Vec::new(),
    reaper: None,
    queued: 0,
    freed: 0,
});

/// Queues `stack` for freeing. Safe with interrupts off.
pub fn defer_free(stack: KernelStack) {
    let waker = {
        let mut dead = DEAD.lock();
        dead.stacks.push(stack);
        dead.queued += 1;
        dead.reaper.take()
    };
    if let Some(waker) = waker {
        waker.wake(crate::proc::lwp::WakeReason::Notified);
    }
}

/// The reaper thread's body.
pub fn run() -> ! {
    loop {
        let ticket = sched::prepare_sleep(false).expect("uninterruptible sleeps are never refused");
        let batch = {
            let mut dead = DEAD.lock();
            if dead.stacks.is_empty() {
                dead.reaper = Some(ticket.waker());
                None
            } else {
                Some(core::mem::take(&mut dead.stacks))
            }
        };
        match batch {
            None => {
                ticket.block(None);
            }
            Some(stacks) => {
                ticket.cancel();
                let count = stacks.len() as u64;
                drop(stacks);
                DEAD.lock().freed += count;
            }
        }
    }
}

/// Waits until every stack queued so far has been freed (tests).
pub fn drain() {
    let target = DEAD.lock().queued;
    while DEAD.lock().freed < target {
        sched::sleep_ns(1_000_000);
    }
}
