//! Sending signals, choosing the LWP that takes a process-directed one,
//! and taking them on the way back to user mode.
//!
//! The invariant that keeps the way back to user mode cheap: whenever a
//! signal becomes deliverable to an LWP (queued for it or for its process
//! with the LWP chosen, or unheld by `rt_sigprocmask`/`rt_sigreturn`), the
//! LWP's interrupt flag is set. `on_return_to_user` looks no further when
//! the flag is clear and the process is neither stopped nor exiting.

use alloc::sync::Arc;

use x86_64::instructions::interrupts;

use super::stop::{self, StopReason};
use super::{
    DefaultAction, NSIG, SIG_DFL, SIG_IGN, SIGCONT, SIGKILL, SIGSEGV, SIGSTOP, SIGTSTP, SIGTTIN,
    SIGTTOU, SigAction, SigInfo, UNBLOCKABLE, bit, code, default_action, is_running,
    is_signal_target, sa, take_saved_mask,
};
use crate::arch::trap::TrapFrame;
use crate::errno::Errno;
use crate::proc::lwp::{Lwp, SignalSet, flags};
use crate::proc::{self, Process};
use crate::{sched, uproc};

/// How long a fatal signal waits for the other user LWPs to park before it
/// gives up on the core file.
const DUMP_STOP_TIMEOUT_NS: u64 = 10_000_000_000;

/// `restart_syscall`, which `ERESTART_RESTARTBLOCK` restarts through.
pub const RESTART_SYSCALL: u64 = 219;

const STOP_SIGNALS: SignalSet = SignalSet(
    (1 << (SIGSTOP - 1)) | (1 << (SIGTSTP - 1)) | (1 << (SIGTTIN - 1)) | (1 << (SIGTTOU - 1)),
);

/// Whether a signal with `action` would be thrown away on arrival.
pub fn is_ignored(action: &SigAction, signal: u32) -> bool {
    if UNBLOCKABLE.contains(signal) {
        return false;
    }
    match action.handler {
        SIG_IGN => true,
        SIG_DFL => matches!(
            default_action(signal),
            DefaultAction::Ignore | DefaultAction::Continue
        ),
        _ => false,
    }
}

fn check_number(signal: u32) -> Result<(), Errno> {
    if (1..=NSIG).contains(&signal) {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

/// What every signal does as it arrives, before it is queued: nothing to
/// a process already exiting; `SIGCONT` drops pending stop signals and
/// continues a signal-stopped process, a stop signal drops a pending
/// `SIGCONT`; `SIGKILL` ends the process at once. Returns whether the
/// signal is still to be queued.
fn arrive(process: &Arc<Process>, signal: u32) -> bool {
    if process.is_exiting() {
        return false;
    }
    if signal == SIGKILL {
        uproc::begin_process_exit(process, SIGKILL as i32);
        return false;
    }
    let discard = if signal == SIGCONT {
        STOP_SIGNALS
    } else if STOP_SIGNALS.contains(signal) {
        SignalSet(bit(SIGCONT))
    } else {
        return true;
    };
    process.signals.lock().discard_everywhere(process, discard);
    if signal == SIGCONT {
        stop::resume_process(process, StopReason::Signal);
    }
    true
}

/// A user LWP that does not hold `signal`, chosen as Linux's
/// `complete_signal` does: the process's first LWP (the one whose thread id
/// is the pid) if it is willing, else one that is running, else any.
fn choose_target(process: &Process, signal: u32) -> Option<Arc<Lwp>> {
    let willing: alloc::vec::Vec<Arc<Lwp>> = process
        .lwps()
        .into_iter()
        .filter(|lwp| is_signal_target(lwp) && !lwp.hold_mask().contains(signal))
        .collect();
    willing
        .iter()
        .find(|lwp| lwp.id == 1)
        .or_else(|| willing.iter().find(|lwp| is_running(lwp)))
        .or_else(|| willing.first())
        .cloned()
}

/// Makes `lwp` look at its signals soon: interrupts its sleep, or gets
/// its CPU to pass through the kernel.
fn alert(lwp: &Arc<Lwp>) {
    sched::interrupt(lwp);
    sched::poke(lwp);
}

/// Sends `info` to `process` (process-directed: `kill`, the control
/// channel). `EINVAL` for a bad number, `EPERM` for a kernel process,
/// `ESRCH` for one that is gone; a process already exiting takes it
/// silently. `SIGKILL` ends the process at once.
pub fn send_to_process(process: &Arc<Process>, info: SigInfo) -> Result<(), Errno> {
    let signal = info.signo;
    check_number(signal)?;
    if process.has_flag(proc::flags::SYSTEM) {
        return Err(Errno::EPERM);
    }
    if process.has_flag(proc::flags::ZOMBIE) {
        return Err(Errno::ESRCH);
    }
    if !arrive(process, signal) {
        return Ok(());
    }
    let target = {
        let mut signals = process.signals.lock();
        let action = signals.actions[(signal - 1) as usize];
        let target = choose_target(process, signal);
        if is_ignored(&action, signal) && target.is_some() {
            return Ok(());
        }
        signals.pending.add(info)?;
        target
    };
    if let Some(target) = target {
        alert(&target);
    }
    Ok(())
}

/// Sends `info` to one LWP (`tgkill`, `tkill`). A kernel-only LWP holds
/// every signal: the signal stays pending on it and never wakes it (only
/// `SIGKILL`, which is always process-wide, has an effect).
pub fn send_to_lwp(lwp: &Arc<Lwp>, info: SigInfo) -> Result<(), Errno> {
    let signal = info.signo;
    check_number(signal)?;
    let process = Arc::clone(&lwp.process);
    if lwp.has_exited() || process.has_flag(proc::flags::ZOMBIE) {
        return Err(Errno::ESRCH);
    }
    if !arrive(&process, signal) {
        return Ok(());
    }
    let deliverable = is_signal_target(lwp) && !lwp.hold_mask().contains(signal);
    {
        let signals = process.signals.lock();
        let action = signals.actions[(signal - 1) as usize];
        if is_ignored(&action, signal) && deliverable {
            return Ok(());
        }
        lwp.signals.lock().pending.add(info)?;
    }
    if deliverable {
        alert(lwp);
    }
    Ok(())
}

/// A fault of the calling LWP becomes `info` for it, taken on its way
/// back to user mode. Held or ignored, the signal is first unheld and its
/// action reset to the default (Linux `force_sig_fault`).
pub fn force_fault(info: SigInfo) {
    let Some(me) = sched::try_current() else {
        return;
    };
    let signal = info.signo;
    {
        let mut signals = me.process.signals.lock();
        let action = &mut signals.actions[(signal - 1) as usize];
        let held = me.hold_mask().contains(signal);
        if held || action.handler == SIG_IGN {
            *action = SigAction::default();
            me.set_hold_mask(SignalSet(me.hold_mask().0 & !bit(signal)));
        }
        let mut own = me.signals.lock();
        // A second fault before the first was taken changes nothing.
        let _ = own.pending.add(info);
    }
    me.set_interrupt_pending(true);
}

/// After the calling LWP's mask changed: if a pending signal became
/// deliverable, make sure it is taken on the way back; process-directed
/// signals it now holds go to another LWP.
pub fn mask_changed(me: &Arc<Lwp>) {
    let held = me.hold_mask();
    let (mine, retarget) = {
        let signals = me.process.signals.lock();
        let own = me.signals.lock().pending.set;
        let process_pending = signals.pending.set;
        (
            (own.0 | process_pending.0) & !held.0 != 0,
            process_pending.0 & held.0,
        )
    };
    if mine {
        me.set_interrupt_pending(true);
    }
    let mut remaining = retarget;
    while remaining != 0 {
        let signal = remaining.trailing_zeros() + 1;
        remaining &= !bit(signal);
        if let Some(target) = choose_target(&me.process, signal) {
            alert(&target);
        }
    }
}

/// Takes the next deliverable signal of `me` (its own first, then its
/// process's) and the action in force for it; `SA_RESETHAND` resets the
/// action as the signal is taken.
fn dequeue(me: &Lwp) -> Option<(SigInfo, SigAction)> {
    let mut signals = me.process.signals.lock();
    let wanted = SignalSet(!me.hold_mask().0 | UNBLOCKABLE.0);
    let own = me.signals.lock().pending.take(wanted);
    let info = own.or_else(|| signals.pending.take(wanted))?;
    let index = (info.signo - 1) as usize;
    let action = signals.actions[index];
    if action.handler != SIG_DFL
        && action.handler != SIG_IGN
        && action.flags & sa::SA_RESETHAND != 0
    {
        signals.actions[index] = SigAction::default();
    }
    Some((info, action))
}

/// A system call that ended with a restart code: restart it, or make it
/// fail with `EINTR` because a handler ran (`action`).
fn finish_interrupted_call(
    frame: &mut TrapFrame,
    number: u64,
    error: Errno,
    action: Option<&SigAction>,
) {
    let restart = match error {
        Errno::ERESTARTSYS => action.is_none_or(|action| action.flags & sa::SA_RESTART != 0),
        Errno::ERESTARTNOHAND | Errno::ERESTART_RESTARTBLOCK => action.is_none(),
        _ => return,
    };
    if restart {
        frame.rax = if error == Errno::ERESTART_RESTARTBLOCK {
            RESTART_SYSCALL
        } else {
            number
        };
        // Back over the two-byte `syscall` instruction.
        frame.rip -= 2;
    } else {
        frame.rax = (-(Errno::EINTR.code() as i64)) as u64;
    }
}

/// Everything on the way back to user mode with `frame`: an exiting
/// process's LWP exits, a stopped one parks, pending signals are taken
/// (handler frame, or default action), and a system call interrupted with
/// a restart code (`interrupted`: its number and code) is restarted or
/// fails with `EINTR`. Called with interrupts in any state; may sleep.
pub fn on_return_to_user(frame: &mut TrapFrame, interrupted: Option<(u64, Errno)>) {
    let Some(me) = sched::try_current() else {
        return;
    };
    if !me.has_flag(flags::USER) {
        return;
    }
    let process_flags = proc::flags::EXITING | proc::flags::STOPPED | proc::flags::ZOMBIE;
    if !me.interrupt_pending() && me.process.flags() & process_flags == 0 && interrupted.is_none() {
        return;
    }
    let interrupts_were_enabled = interrupts::are_enabled();
    interrupts::enable();
    let mut handler_ran = false;
    loop {
        me.set_interrupt_pending(false);
        if me.process.is_exiting() {
            drop(me);
            uproc::exit_lwp(0);
        }
        if me.process.has_flag(proc::flags::STOPPED) {
            stop::park_user(&me, frame);
            if me.process.has_flag(proc::flags::STOPPED) && !me.process.is_exiting() {
                // Not parked (the stop ended meanwhile or is being set up).
                sched::yield_now();
            }
            continue;
        }
        let Some((info, action)) = dequeue(&me) else {
            break;
        };
        let signal = info.signo;
        match action.handler {
            SIG_IGN if !UNBLOCKABLE.contains(signal) => continue,
            SIG_DFL | SIG_IGN => match default_action(signal) {
                DefaultAction::Ignore | DefaultAction::Continue => continue,
                DefaultAction::Stop => {
                    request_signal_stop(&me.process);
                    continue;
                }
                DefaultAction::Terminate => terminate(me, frame, info, false),
                DefaultAction::Core => terminate(me, frame, info, true),
            },
            _ => {
                if let Some((number, error)) = interrupted {
                    finish_interrupted_call(frame, number, error, Some(&action));
                }
                run_handler(&me, frame, &info, &action);
                handler_ran = true;
                break;
            }
        }
    }
    if !handler_ran {
        if let Some((number, error)) = interrupted {
            finish_interrupted_call(frame, number, error, None);
        }
        if let Some(mask) = take_saved_mask(&me) {
            me.set_hold_mask(mask);
            mask_changed(&me);
        }
    }
    if !interrupts_were_enabled {
        interrupts::disable();
    }
}

/// A stop signal's default action: the whole process stops (the caller
/// parks on its next round).
fn request_signal_stop(process: &Arc<Process>) {
    // Waiting is not wanted: every LWP parks on its own; the caller too.
    let _ = stop::request(process, StopReason::Signal);
}

/// Sets up `action`'s handler for `info`: the signal frame on the user
/// stack, the handler's mask. A frame that cannot be written kills the
/// process with `SIGSEGV` (Linux `force_sigsegv`).
fn run_handler(me: &Arc<Lwp>, frame: &mut TrapFrame, info: &SigInfo, action: &SigAction) {
    let in_force = me.hold_mask();
    let frame_mask = take_saved_mask(me).unwrap_or(in_force);
    match super::frame::build(me, frame, info, action, frame_mask) {
        Ok(()) => {
            let mut during = in_force.0 | action.mask.0;
            if action.flags & sa::SA_NODEFER == 0 {
                during |= bit(info.signo);
            }
            me.set_hold_mask(SignalSet(during & !UNBLOCKABLE.0));
        }
        Err(_) => {
            let fault = SigInfo::from_sender(SIGSEGV, code::SI_KERNEL, 0);
            terminate(Arc::clone(me), frame, fault, true);
        }
    }
}

/// Ends the process because of `info`, with a core file first when the
/// default action says so, the core limit allows it and a control channel
/// is there to take it. The other user LWPs are parked while the core is
/// written, so their registers are in it.
fn terminate(me: Arc<Lwp>, frame: &TrapFrame, info: SigInfo, core: bool) -> ! {
    let process = Arc::clone(&me.process);
    let signal = info.signo as i32;
    if info.fault_rip != 0 {
        crate::println!(
            "spindle: process {} (pid {}) thread {}: {} at rip {:#x}, address {:#x}: killed by signal {signal}",
            process.name(),
            process.pid,
            uproc::tid_of(&me),
            crate::arch::trap::exception_name(info.trapno),
            info.fault_rip,
            info.addr
        );
    }
    let writer = super::core_writer();
    let wants_core = core && process.core_limit() > 0 && writer.is_some();
    let status = signal | if wants_core { 0x80 } else { 0 };
    if process.decide_termination(status) && wants_core {
        me.set_user_snapshot(Some(stop::snapshot_of(&me, frame, Some(info))));
        let parked = stop::stop_process(&process, StopReason::Dump, true, DUMP_STOP_TIMEOUT_NS);
        let dumped =
            parked.is_ok() && writer.is_some_and(|write| write(&process, info.signo, Some(me.id)));
        me.set_user_snapshot(None);
        if !dumped {
            process.override_termination(signal);
        }
    }
    drop(me);
    uproc::begin_process_exit(&process, signal);
    drop(process);
    uproc::exit_lwp(0)
}
