//! Signal system calls: `rt_sigaction`, `rt_sigprocmask`, `sigaltstack`,
//! `rt_sigreturn`, `kill`, `tkill`, `tgkill`, `rt_sigpending`,
//! `rt_sigsuspend`, `rt_sigtimedwait`, `pause`, `restart_syscall`.
//!
//! Owns no state: dispositions and pending signals live in the process
//! (`Process::signals`), masks and pending sets in the LWPs; the rules are
//! in `crate::signal`.

use alloc::sync::Arc;

use super::SysResult;
use super::time::{read_timespec, sleep_until};
use crate::arch::trap::TrapFrame;
use crate::errno::Errno;
use crate::mm::usercopy::{copy_from_user, copy_to_user};
use crate::proc::lwp::{Lwp, SignalSet};
use crate::signal::{self, SIGACTION_SIZE, SigAction, SigInfo, UNBLOCKABLE, code};
use crate::{sched, time};

/// The only `sigsetsize` x86_64 Linux accepts.
const SIGSET_SIZE: u64 = 8;

fn read_set(address: u64) -> Result<SignalSet, Errno> {
    let mut bytes = [0u8; 8];
    copy_from_user(&mut bytes, address)?;
    Ok(SignalSet(u64::from_le_bytes(bytes)))
}

fn write_set(address: u64, set: SignalSet) -> Result<(), Errno> {
    copy_to_user(address, &set.0.to_le_bytes())
}

fn check_set_size(set_size: u64) -> Result<(), Errno> {
    if set_size == SIGSET_SIZE {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

pub fn rt_sigaction(signal: u64, action: u64, old_action: u64, set_size: u64) -> SysResult {
    check_set_size(set_size)?;
    if !(1..=u64::from(signal::NSIG)).contains(&signal) {
        return Err(Errno::EINVAL);
    }
    let signal = signal as u32;
    let new = if action != 0 {
        if UNBLOCKABLE.contains(signal) {
            return Err(Errno::EINVAL);
        }
        let mut bytes = [0u8; SIGACTION_SIZE];
        copy_from_user(&mut bytes, action)?;
        let mut new = SigAction::from_bytes(&bytes);
        new.mask.0 &= !UNBLOCKABLE.0;
        Some(new)
    } else {
        None
    };
    let process = Arc::clone(&sched::current().process);
    let old = {
        let mut signals = process.signals.lock();
        let slot = &mut signals.actions[(signal - 1) as usize];
        let old = *slot;
        if let Some(new) = new {
            *slot = new;
            // A signal now ignored is dropped wherever it is pending, held
            // or not (POSIX).
            if signal::is_ignored(&new, signal) {
                signals.discard_everywhere(&process, SignalSet(signal::bit(signal)));
            }
        }
        old
    };
    if old_action != 0 {
        copy_to_user(old_action, &old.to_bytes())?;
    }
    Ok(0)
}

const SIG_BLOCK: u64 = 0;
const SIG_UNBLOCK: u64 = 1;
const SIG_SETMASK: u64 = 2;

pub fn rt_sigprocmask(how: u64, set: u64, old_set: u64, set_size: u64) -> SysResult {
    check_set_size(set_size)?;
    let me = sched::current();
    let current = me.hold_mask();
    let new = if set != 0 {
        let requested = read_set(set)?.0 & !UNBLOCKABLE.0;
        Some(match how {
            SIG_BLOCK => current.0 | requested,
            SIG_UNBLOCK => current.0 & !requested,
            SIG_SETMASK => requested,
            _ => return Err(Errno::EINVAL),
        })
    } else {
        None
    };
    if old_set != 0 {
        write_set(old_set, current)?;
    }
    if let Some(new) = new {
        me.set_hold_mask(SignalSet(new));
        signal::deliver_mask_changed(&me);
    }
    Ok(0)
}

/// `MINSIGSTKSZ` on x86_64.
const MIN_SIGNAL_STACK: u64 = 2048;

pub fn sigaltstack(new: u64, old: u64, frame: &TrapFrame) -> SysResult {
    let me = sched::current();
    let flags_now = signal::alternate_stack_flags(&me, frame.rsp);
    if old != 0 {
        let (base, _, size) = me.alternate_stack();
        let mut bytes = [0u8; 24];
        bytes[..8].copy_from_slice(&base.to_le_bytes());
        bytes[8..12].copy_from_slice(&flags_now.to_le_bytes());
        bytes[16..].copy_from_slice(&size.to_le_bytes());
        copy_to_user(old, &bytes)?;
    }
    if new != 0 {
        let mut bytes = [0u8; 24];
        copy_from_user(&mut bytes, new)?;
        let base = u64::from_le_bytes(bytes[..8].try_into().expect("eight bytes"));
        let flags = u32::from_le_bytes(bytes[8..12].try_into().expect("four bytes"));
        let size = u64::from_le_bytes(bytes[16..].try_into().expect("eight bytes"));
        if flags_now == signal::SS_ONSTACK {
            return Err(Errno::EPERM);
        }
        if flags & !signal::SS_DISABLE != 0 {
            return Err(Errno::EINVAL);
        }
        if flags & signal::SS_DISABLE != 0 {
            me.set_alternate_stack((0, 0, 0));
        } else {
            if size < MIN_SIGNAL_STACK {
                return Err(Errno::ENOMEM);
            }
            me.set_alternate_stack((base, 0, size));
        }
    }
    Ok(0)
}

pub fn rt_sigreturn(frame: &mut TrapFrame) -> SysResult {
    signal::sigreturn(&sched::current(), frame)
}

/// `kill(pid, signal)`: the guest process is the only one signals can
/// reach; `pid` may name it, its process group, or everyone (-1).
pub fn kill(pid: u64, signal: u64) -> SysResult {
    let me = sched::current();
    let own = i64::from(me.process.pid);
    let pid = pid as i32 as i64;
    if pid != own && pid != 0 && pid != -1 && pid != -own {
        return Err(Errno::ESRCH);
    }
    let signal = checked_signal(signal)?;
    if signal == 0 {
        return Ok(0);
    }
    let info = SigInfo::from_sender(signal, code::SI_USER, me.process.pid);
    let process = Arc::clone(&me.process);
    drop(me);
    signal::send_to_process(&process, info)?;
    Ok(0)
}

/// A signal number from user mode: 0 (existence check) or 1..=64.
fn checked_signal(signal: u64) -> Result<u32, Errno> {
    if signal <= u64::from(signal::NSIG) {
        Ok(signal as u32)
    } else {
        Err(Errno::EINVAL)
    }
}

/// The LWP of the calling process with Linux thread id `tid`.
fn lwp_by_tid(tid: u64) -> Result<Arc<Lwp>, Errno> {
    let me = sched::current();
    let tid = tid as i32 as i64;
    let first = i64::from(me.process.pid);
    if tid < first {
        return Err(if tid <= 0 {
            Errno::EINVAL
        } else {
            Errno::ESRCH
        });
    }
    me.process
        .find_lwp((tid - first + 1) as u32)
        .ok_or(Errno::ESRCH)
}

fn send_to_thread(tid: u64, signal: u64) -> SysResult {
    let signal = checked_signal(signal)?;
    let target = lwp_by_tid(tid)?;
    if signal == 0 {
        return Ok(0);
    }
    let sender = sched::current().process.pid;
    signal::send_to_lwp(
        &target,
        SigInfo::from_sender(signal, code::SI_TKILL, sender),
    )?;
    Ok(0)
}

pub fn tkill(tid: u64, signal: u64) -> SysResult {
    send_to_thread(tid, signal)
}

pub fn tgkill(tgid: u64, tid: u64, signal: u64) -> SysResult {
    if tgid as i32 <= 0 || tid as i32 <= 0 {
        return Err(Errno::EINVAL);
    }
    if tgid != u64::from(sched::current().process.pid) {
        return Err(Errno::ESRCH);
    }
    send_to_thread(tid, signal)
}

pub fn rt_sigpending(set: u64, set_size: u64) -> SysResult {
    if set_size > SIGSET_SIZE {
        return Err(Errno::EINVAL);
    }
    let me = sched::current();
    let pending = signal::pending_of(&me);
    let held = SignalSet(pending.0 & me.hold_mask().0);
    copy_to_user(set, &held.0.to_le_bytes()[..set_size as usize])?;
    Ok(0)
}

pub fn pause() -> SysResult {
    let _ = sleep_until(None);
    Err(Errno::ERESTARTNOHAND)
}

pub fn rt_sigsuspend(mask: u64, set_size: u64) -> SysResult {
    check_set_size(set_size)?;
    let mask = read_set(mask)?;
    signal::set_temporary_mask(&sched::current(), mask);
    let _ = sleep_until(None);
    Err(Errno::ERESTARTNOHAND)
}

/// The signal mask argument of `ppoll`, `pselect6` and `epoll_pwait`:
/// if `address` is not null, it is put in force until the call ends (see
/// `signal::set_temporary_mask`); `EINVAL` unless `set_size` is 8,
/// `EFAULT` if unreadable. Returns whether a mask was put in force.
pub(super) fn set_user_mask(address: u64, set_size: u64) -> Result<bool, Errno> {
    if address == 0 {
        return Ok(false);
    }
    check_set_size(set_size)?;
    let mask = read_set(address)?;
    signal::set_temporary_mask(&sched::current(), mask);
    Ok(true)
}

/// Ends a call that [`set_user_mask`] put a mask in force for: the old
/// mask returns now, or, when a signal `interrupted` the call, after its
/// handler (Linux `restore_saved_sigmask_unless`).
pub(super) fn end_user_mask(masked: bool, interrupted: bool) {
    if masked {
        signal::restore_saved_mask_unless(&sched::current(), interrupted);
    }
}

pub fn rt_sigtimedwait(set: u64, info: u64, timeout: u64, set_size: u64) -> SysResult {
    check_set_size(set_size)?;
    let wanted = SignalSet(read_set(set)?.0 & !UNBLOCKABLE.0);
    let deadline = if timeout != 0 {
        Some(time::now_ns().saturating_add(read_timespec(timeout)?))
    } else {
        None
    };
    let me = sched::current();
    let taken = match signal::take_pending(&me, wanted) {
        Some(taken) => taken,
        None => {
            // The waited-for signals are unheld while waiting, so that they
            // choose (and wake) this LWP; whatever arrives is taken here.
            let held = me.hold_mask();
            me.set_hold_mask(SignalSet(held.0 & !wanted.0));
            signal::deliver_mask_changed(&me);
            let timed_out = sleep_until(deadline).is_ok();
            me.set_hold_mask(held);
            let taken = signal::take_pending(&me, wanted);
            signal::deliver_mask_changed(&me);
            match taken {
                Some(taken) => taken,
                None if timed_out => return Err(Errno::EAGAIN),
                None => return Err(Errno::EINTR),
            }
        }
    };
    if info != 0 {
        copy_to_user(info, &taken.to_bytes())?;
    }
    Ok(u64::from(taken.signo))
}

/// `restart_syscall`: continues a sleep or a poll that
/// `ERESTART_RESTARTBLOCK` interrupted, to its recorded deadline.
pub fn restart_syscall() -> SysResult {
    let me = sched::current();
    let restart = signal::take_restart(&me);
    drop(me);
    match restart {
        Some(signal::Restart::Sleep {
            deadline,
            remaining,
        }) => super::time::sleep_to_deadline(deadline, remaining),
        Some(signal::Restart::Poll {
            fds,
            count,
            deadline,
        }) => super::poll::poll_to_deadline(fds, count, deadline),
        None => Err(Errno::EINTR),
    }
}
