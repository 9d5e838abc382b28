//! Process and thread system calls: `exit`, `exit_group`, `clone` (threads),
//! `set_tid_address`, `set_robust_list`, ids, `arch_prctl`, `uname`,
//! resource limits, affinity, and the signal-state calls Rust's and musl's
//! start-up make (`rt_sigaction`, `rt_sigprocmask`, `sigaltstack`: state is
//! recorded; delivery arrives with the signals issue).

use alloc::sync::Arc;
use core::sync::atomic::Ordering;

use super::SysResult;
use crate::arch::trap::TrapFrame;
use crate::errno::Errno;
use crate::mm::usercopy::{copy_from_user, copy_to_user, write_u32};
use crate::proc::lwp::SignalSet;
use crate::{sched, uproc};

pub fn exit(code: u64) -> SysResult {
    uproc::exit_lwp(code as i32)
}

pub fn exit_group(code: u64) -> SysResult {
    uproc::exit_group(code as i32)
}

pub fn getpid() -> SysResult {
    Ok(u64::from(sched::current().process.pid))
}

pub fn gettid() -> SysResult {
    Ok(uproc::tid_of(&sched::current()) as u64)
}

pub fn sched_yield() -> SysResult {
    sched::yield_now();
    Ok(0)
}

const CLONE_VM: u64 = 0x100;
const CLONE_FS: u64 = 0x200;
const CLONE_FILES: u64 = 0x400;
const CLONE_SIGHAND: u64 = 0x800;
const CLONE_THREAD: u64 = 0x1_0000;
const CLONE_SYSVSEM: u64 = 0x4_0000;
const CLONE_SETTLS: u64 = 0x8_0000;
const CLONE_PARENT_SETTID: u64 = 0x10_0000;
const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
const CLONE_DETACHED: u64 = 0x40_0000;
const CLONE_CHILD_SETTID: u64 = 0x100_0000;
const THREAD_FLAGS: u64 = CLONE_VM | CLONE_SIGHAND | CLONE_THREAD;
const ACCEPTED: u64 = THREAD_FLAGS
    | CLONE_FS
    | CLONE_FILES
    | CLONE_SYSVSEM
    | CLONE_SETTLS
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID
    | CLONE_DETACHED
    | CLONE_CHILD_SETTID;

/// `clone(flags, stack, parent_tid, child_tid, tls)`: threads only (a new
/// process would need a second address space: `ENOSYS`).
pub fn clone(
    flags: u64,
    stack: u64,
    parent_tid: u64,
    child_tid: u64,
    tls: u64,
    frame: &TrapFrame,
) -> SysResult {
    if flags & THREAD_FLAGS != THREAD_FLAGS {
        return Err(Errno::ENOSYS);
    }
    if flags & !(ACCEPTED | 0xff) != 0 {
        return Err(Errno::EINVAL);
    }
    let me = sched::current();
    let process = Arc::clone(&me.process);
    let mut child = *frame;
    child.rax = 0;
    if stack != 0 {
        child.rsp = stack;
    }
    let fs_base = if flags & CLONE_SETTLS != 0 {
        tls
    } else {
        me.fs_base.load(Ordering::Relaxed)
    };
    let lwp = uproc::spawn_user_lwp(&process, &me.name(), child, fs_base)?;
    let tid = uproc::tid_of(&lwp);
    if flags & CLONE_CHILD_CLEARTID != 0 {
        lwp.clear_child_tid.store(child_tid, Ordering::Release);
    }
    if flags & CLONE_CHILD_SETTID != 0 {
        let _ = write_u32(child_tid, tid as u32);
    }
    if flags & CLONE_PARENT_SETTID != 0 {
        write_u32(parent_tid, tid as u32)?;
    }
    Ok(tid as u64)
}

pub fn set_tid_address(address: u64) -> SysResult {
    let me = sched::current();
    me.clear_child_tid.store(address, Ordering::Release);
    Ok(uproc::tid_of(&me) as u64)
}

pub fn set_robust_list(_head: u64, length: u64) -> SysResult {
    // The list is only walked on a thread's death with robust mutexes
    // held; recorded as accepted (24 bytes is `struct robust_list_head`).
    if length != 24 {
        Err(Errno::EINVAL)
    } else {
        Ok(0)
    }
}

const ARCH_SET_GS: u64 = 0x1001;
const ARCH_SET_FS: u64 = 0x1002;
const ARCH_GET_FS: u64 = 0x1003;
const ARCH_GET_GS: u64 = 0x1004;

pub fn arch_prctl(code: u64, address: u64) -> SysResult {
    let me = sched::current();
    match code {
        ARCH_SET_FS => {
            if address >= crate::mm::vm::USER_END {
                return Err(Errno::EPERM);
            }
            me.fs_base.store(address, Ordering::Relaxed);
            crate::arch::set_fs_base(address);
            Ok(0)
        }
        ARCH_GET_FS => {
            copy_to_user(address, &me.fs_base.load(Ordering::Relaxed).to_le_bytes())?;
            Ok(0)
        }
        ARCH_SET_GS | ARCH_GET_GS => Err(Errno::EINVAL),
        _ => Err(Errno::EINVAL),
    }
}

pub fn uname(address: u64) -> SysResult {
    let fields: [&str; 6] = [
        "Linux",
        "spindle",
        "6.1.0-spindle",
        concat!("#1 Spindle ", env!("CARGO_PKG_VERSION")),
        "x86_64",
        "(none)",
    ];
    let mut buffer = [0u8; 65 * 6];
    for (index, field) in fields.iter().enumerate() {
        buffer[index * 65..index * 65 + field.len()].copy_from_slice(field.as_bytes());
    }
    copy_to_user(address, &buffer)?;
    Ok(0)
}

const RLIMIT_STACK: u64 = 3;
const RLIMIT_NOFILE: u64 = 7;
const RLIM_INFINITY: u64 = u64::MAX;

fn limit_of(resource: u64) -> Result<(u64, u64), Errno> {
    match resource {
        RLIMIT_STACK => Ok((
            crate::uproc::exec::STACK_SIZE,
            crate::uproc::exec::STACK_SIZE,
        )),
        RLIMIT_NOFILE => Ok((3, 3)),
        0..=15 => Ok((RLIM_INFINITY, RLIM_INFINITY)),
        _ => Err(Errno::EINVAL),
    }
}

fn write_limit(address: u64, (current, maximum): (u64, u64)) -> Result<(), Errno> {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&current.to_le_bytes());
    bytes[8..].copy_from_slice(&maximum.to_le_bytes());
    copy_to_user(address, &bytes)
}

pub fn getrlimit(resource: u64, address: u64) -> SysResult {
    write_limit(address, limit_of(resource)?)?;
    Ok(0)
}

pub fn prlimit64(pid: u64, resource: u64, new_limit: u64, old_limit: u64) -> SysResult {
    let me = sched::current();
    if pid != 0 && pid != u64::from(me.process.pid) {
        return Err(Errno::ESRCH);
    }
    let limit = limit_of(resource)?;
    if new_limit != 0 {
        let mut bytes = [0u8; 16];
        copy_from_user(&mut bytes, new_limit)?;
        // Limits are fixed here; raising or lowering them is not allowed.
        return Err(Errno::EPERM);
    }
    if old_limit != 0 {
        write_limit(old_limit, limit)?;
    }
    Ok(0)
}

pub fn sched_getaffinity(pid: u64, length: u64, mask: u64) -> SysResult {
    if pid != 0 && sched::current().process.pid as u64 != pid {
        return Err(Errno::ESRCH);
    }
    if length < 8 || !length.is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    let mut bits = 0u64;
    for cpu in sched::online_cpus() {
        bits |= 1 << cpu;
    }
    copy_to_user(mask, &bits.to_le_bytes())?;
    Ok(8)
}

pub fn getcpu(cpu: u64, node: u64) -> SysResult {
    if cpu != 0 {
        write_u32(cpu, sched::current_cpu() as u32)?;
    }
    if node != 0 {
        write_u32(node, 0)?;
    }
    Ok(0)
}

const SIGKILL: u64 = 9;
const SIGSTOP: u64 = 19;
/// `struct sigaction` on x86_64: handler, flags, restorer, mask.
const SIGACTION_SIZE: usize = 32;

pub fn rt_sigaction(signal: u64, action: u64, old_action: u64, set_size: u64) -> SysResult {
    if set_size != 8 || !(1..=64).contains(&signal) {
        return Err(Errno::EINVAL);
    }
    let process = Arc::clone(&sched::current().process);
    if old_action != 0 {
        let old = process.signals.lock().actions[(signal - 1) as usize].to_bytes();
        copy_to_user(old_action, &old)?;
    }
    if action != 0 {
        if signal == SIGKILL || signal == SIGSTOP {
            return Err(Errno::EINVAL);
        }
        let mut new = [0u8; SIGACTION_SIZE];
        copy_from_user(&mut new, action)?;
        process.signals.lock().actions[(signal - 1) as usize] =
            crate::signal::SigAction::from_bytes(&new);
    }
    Ok(0)
}

const SIG_BLOCK: u64 = 0;
const SIG_UNBLOCK: u64 = 1;
const SIG_SETMASK: u64 = 2;

pub fn rt_sigprocmask(how: u64, set: u64, old_set: u64, set_size: u64) -> SysResult {
    if set_size != 8 {
        return Err(Errno::EINVAL);
    }
    let me = sched::current();
    let current = me.hold_mask();
    if set != 0 {
        let mut bytes = [0u8; 8];
        copy_from_user(&mut bytes, set)?;
        // SIGKILL and SIGSTOP can never be held.
        let requested = u64::from_le_bytes(bytes) & !((1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1)));
        let new = match how {
            SIG_BLOCK => current.0 | requested,
            SIG_UNBLOCK => current.0 & !requested,
            SIG_SETMASK => requested,
            _ => return Err(Errno::EINVAL),
        };
        if old_set != 0 {
            copy_to_user(old_set, &current.0.to_le_bytes())?;
        }
        me.set_hold_mask(SignalSet(new));
        return Ok(0);
    }
    if old_set != 0 {
        copy_to_user(old_set, &current.0.to_le_bytes())?;
    }
    Ok(0)
}

const SS_DISABLE: u32 = 2;

/// Records the alternate signal stack (used once signals are delivered).
pub fn sigaltstack(new: u64, old: u64) -> SysResult {
    let me = sched::current();
    if old != 0 {
        let current = me.alternate_stack();
        let mut bytes = [0u8; 24];
        bytes[..8].copy_from_slice(&current.0.to_le_bytes());
        let flags = if current.2 == 0 { SS_DISABLE } else { 0 };
        bytes[8..12].copy_from_slice(&flags.to_le_bytes());
        bytes[16..].copy_from_slice(&current.2.to_le_bytes());
        copy_to_user(old, &bytes)?;
    }
    if new != 0 {
        let mut bytes = [0u8; 24];
        copy_from_user(&mut bytes, new)?;
        let base = u64::from_le_bytes(bytes[..8].try_into().expect("eight bytes"));
        let flags = u32::from_le_bytes(bytes[8..12].try_into().expect("four bytes"));
        let size = u64::from_le_bytes(bytes[16..].try_into().expect("eight bytes"));
        if flags & !SS_DISABLE != 0 {
            return Err(Errno::EINVAL);
        }
        if flags & SS_DISABLE != 0 {
            me.set_alternate_stack((0, 0, 0));
        } else {
            const MINSIGSTKSZ: u64 = 2048;
            if size < MINSIGSTKSZ {
                return Err(Errno::ENOMEM);
            }
            me.set_alternate_stack((base, 0, size));
        }
    }
    Ok(0)
}
