//! Process stops: `SIGSTOP` and friends, the control channel's
//! `pstop`/`prun`, and the stop a core dump needs.
//!
//! A process is stopped while any stop reason is set (`StopState`, under
//! the process's `stop` mutex, with two condition variables: parked LWPs
//! wait on `stop_released`, whoever waits for them to park waits on
//! `stop_parked`, so neither side wakes the other for nothing). Setting a
//! reason interrupts every LWP. User LWPs park on their way back to user
//! mode (`park_user`), kernel-only LWPs in their next interruptible sleep
//! (`stop_point`). Clearing the last reason, or the process exiting, lets
//! them all go. An LWP is "parked" (`Lwp::is_parked`) from the moment it
//! has left its snapshot until it is let go; it is "held still"
//! (`is_held_still`) once it is parked and off its CPU as well, so that
//! nothing it does (CPU time included) changes until it is let go.

use alloc::sync::Arc;
use alloc::vec::Vec;

use super::UserSnapshot;
use crate::arch::trap::TrapFrame;
use crate::errno::Errno;
use crate::proc::lwp::{Lwp, LwpId, LwpState, flags};
use crate::proc::{self, Process};
use crate::sched;

/// Why a process is stopped (any number at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A stop signal (`SIGSTOP`, `SIGTSTP`, ...); `SIGCONT` ends it.
    Signal,
    /// `pstop` on the control channel; `prun` ends it.
    Control,
    /// A core dump is being written.
    Dump,
}

impl StopReason {
    fn bit(self) -> u32 {
        match self {
            StopReason::Signal => 1,
            StopReason::Control => 2,
            StopReason::Dump => 4,
        }
    }
}

/// The stop reasons in force, under `Process::stop`.
#[derive(Debug, Default)]
pub struct StopState {
    reasons: u32,
}

impl StopState {
    pub fn is_stopped(&self) -> bool {
        self.reasons != 0
    }
}

/// Whether `lwp` counts as stopped for a waiter: parked and switched
/// out (a parked LWP stays on its CPU for a moment, and a clock tick then
/// still charges it), or gone.
pub fn is_held_still(lwp: &Lwp) -> bool {
    lwp.has_exited() || (lwp.is_parked() && lwp.state() != LwpState::OnCpu)
}

/// Stops `process` for `reason` and waits (at most `timeout_ns`) until its
/// LWPs are parked: every LWP, or with `user_only` the user LWPs other
/// than the caller. Returns the ids of the LWPs. `EINVAL` for a kernel
/// process, `ESRCH` if it is exiting, `ETIMEDOUT` if they did not all
/// park in time (the stop request is then withdrawn).
pub fn stop_process(
    process: &Arc<Process>,
    reason: StopReason,
    user_only: bool,
    timeout_ns: u64,
) -> Result<Vec<LwpId>, Errno> {
    request(process, reason)?;
    let me = sched::try_current();
    let must_park = |lwp: &Arc<Lwp>| {
        let is_me = me.as_ref().is_some_and(|me| me.serial == lwp.serial);
        !is_me && (!user_only || lwp.has_flag(flags::USER))
    };
    let deadline = crate::time::now_ns().saturating_add(timeout_ns);
    let mut state = process.stop.lock();
    loop {
        let lwps = process.lwps();
        if lwps
            .iter()
            .filter(|lwp| must_park(lwp))
            .all(|lwp| is_held_still(lwp))
        {
            return Ok(lwps.iter().map(|lwp| lwp.id).collect());
        }
        if process.is_exiting() {
            return Err(Errno::ESRCH);
        }
        let now = crate::time::now_ns();
        if now >= deadline {
            drop(state);
            resume_process(process, reason);
            return Err(Errno::ETIMEDOUT);
        }
        // A parker notifies while still on its CPU: poll every 10 ms for
        // the switch that follows.
        state = process
            .stop_parked
            .wait_timeout(state, (deadline - now).min(10_000_000))
            .0;
    }
}

/// Sets `reason` and gets every LWP of `process` to notice, without
/// waiting for them to park. `EINVAL` for a kernel process, `ESRCH` if it
/// is exiting.
pub fn request(process: &Arc<Process>, reason: StopReason) -> Result<(), Errno> {
    if process.has_flag(proc::flags::SYSTEM) {
        return Err(Errno::EINVAL);
    }
    if process.is_exiting() {
        return Err(Errno::ESRCH);
    }
    {
        let mut state = process.stop.lock();
        state.reasons |= reason.bit();
        process.set_stopped_flag(true);
    }
    for lwp in process.lwps() {
        sched::interrupt(&lwp);
        sched::poke(&lwp);
    }
    Ok(())
}

/// Withdraws `reason`; when no reason is left every parked LWP goes on.
/// Returns the ids of the process's LWPs.
pub fn resume_process(process: &Arc<Process>, reason: StopReason) -> Vec<LwpId> {
    {
        let mut state = process.stop.lock();
        state.reasons &= !reason.bit();
        if state.reasons == 0 {
            process.set_stopped_flag(false);
        }
        process.stop_released.notify_all();
    }
    process.lwps().iter().map(|lwp| lwp.id).collect()
}

/// Parks the calling LWP while its process is stopped (and not exiting),
/// leaving `snapshot` for inspectors meanwhile.
fn park(me: &Arc<Lwp>, snapshot: Option<UserSnapshot>) {
    let process = Arc::clone(&me.process);
    let mut state = process.stop.lock();
    if !state.is_stopped() || process.is_exiting() {
        return;
    }
    me.set_user_snapshot(snapshot);
    me.set_parked(true);
    process.stop_parked.notify_all();
    while state.is_stopped() && !process.is_exiting() {
        state = process.stop_released.wait(state);
    }
    me.set_parked(false);
    me.set_user_snapshot(None);
}

/// A user LWP on its way back to user mode with `frame`: parks while the
/// process is stopped.
pub fn park_user(me: &Arc<Lwp>, frame: &TrapFrame) {
    if !me.process.has_flag(proc::flags::STOPPED) {
        return;
    }
    park(me, Some(snapshot_of(me, frame, None)));
}

/// The calling LWP's user state, for inspectors.
pub fn snapshot_of(me: &Lwp, frame: &TrapFrame, siginfo: Option<super::SigInfo>) -> UserSnapshot {
    UserSnapshot {
        frame: *frame,
        fs_base: me.fs_base.load(core::sync::atomic::Ordering::Relaxed),
        fpu: crate::arch::fpu::save_live(),
        siginfo,
    }
}

/// Where a kernel-only LWP's interrupted sleep ends: it parks here while
/// its process is stopped. No lock may be held. Other LWPs return at once.
pub fn stop_point() {
    let Some(me) = sched::try_current() else {
        return;
    };
    if me.has_flag(flags::KTHREAD) && me.process.has_flag(proc::flags::STOPPED) {
        park(&me, None);
    }
}

/// Lets every parked LWP of an exiting process go.
pub fn release_for_exit(process: &Process) {
    let _state = process.stop.lock();
    process.stop_released.notify_all();
    process.stop_parked.notify_all();
}
