//! Callouts: functions run once at a deadline, from the tick.
//!
//! Owns the pending callouts (`CALLOUTS`, an `IrqSpinLock`, ordered by
//! deadline). The boot CPU's tick runs every callout whose deadline has
//! passed, in interrupt context, with the lock released, so a callout may
//! schedule or cancel callouts and wake LWPs, but must not sleep.
//! Resolution is one tick.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::sync::IrqSpinLock;

/// What a callout does. A sleep's timeout is a `Waker` kept inline (no
/// allocation), so nothing is freed after the sleeper is already running
/// again (which would make leak checks racy).
enum Work {
    Wake(super::Waker),
    Run(Box<dyn FnOnce() + Send>),
}

static CALLOUTS: IrqSpinLock<BTreeMap<(u64, u64), Work>> = IrqSpinLock::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A scheduled callout, for `cancel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalloutHandle {
    deadline_ns: u64,
    id: u64,
}

/// Runs `work` at the first tick at or after `deadline_ns` (monotonic).
pub fn schedule_at(deadline_ns: u64, work: impl FnOnce() + Send + 'static) -> CalloutHandle {
    insert(deadline_ns, Work::Run(Box::new(work)))
}

/// Wakes a sleep with `TimedOut` at the first tick at or after
/// `deadline_ns`.
pub fn wake_at(deadline_ns: u64, waker: super::Waker) -> CalloutHandle {
    insert(deadline_ns, Work::Wake(waker))
}

fn insert(deadline_ns: u64, work: Work) -> CalloutHandle {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    CALLOUTS.lock().insert((deadline_ns, id), work);
    CalloutHandle { deadline_ns, id }
}

/// Cancels a callout. Returns whether it was still pending (false: it ran
/// or is running).
pub fn cancel(handle: CalloutHandle) -> bool {
    let removed = CALLOUTS.lock().remove(&(handle.deadline_ns, handle.id));
    removed.is_some()
}

/// Runs the callouts that are due. Called from the boot CPU's tick.
pub fn run_due(now_ns: u64) {
    loop {
        // One at a time, so a tick with nothing due touches no memory.
        let work = {
            let mut callouts = CALLOUTS.lock();
            match callouts.first_entry() {
                Some(entry) if entry.key().0 <= now_ns => entry.remove(),
                _ => return,
            }
        };
        match work {
            Work::Wake(waker) => {
                waker.wake(crate::proc::lwp::WakeReason::TimedOut);
            }
            Work::Run(function) => function(),
        }
    }
}
