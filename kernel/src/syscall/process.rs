//! Process and thread system calls: `exit`, `exit_group`, `clone` (threads),
//! `set_tid_address`, `set_robust_list`, ids, `arch_prctl`, `uname`,
//! resource limits (`RLIMIT_CORE` may be changed; the others are fixed),
//! affinity. The signal calls are in `signal`.

use alloc::sync::Arc;
use core::sync::atomic::Ordering;

use super::SysResult;
use crate::arch::trap::TrapFrame;
use crate::errno::Errno;
use crate::mm::usercopy::{copy_from_user, copy_to_user, write_u32};
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
    // The tid stores and `clear_child_tid` are in place before the new
    // thread can run, as in Linux: musl's thread list lock holds the
    // owner's tid (`pthread->tid`, from CLONE_PARENT_SETTID) and is
    // released by the exiting thread's CLONE_CHILD_CLEARTID; a thread
    // that ran first would see tid 0, or exit without releasing the lock.
    // A store that faults is ignored, as Linux ignores it.
    let prepare = |lwp: &Arc<crate::proc::lwp::Lwp>| {
        let tid = uproc::tid_of(lwp) as u32;
        if flags & CLONE_CHILD_CLEARTID != 0 {
            lwp.clear_child_tid.store(child_tid, Ordering::Release);
        }
        if flags & CLONE_CHILD_SETTID != 0 {
            let _ = write_u32(child_tid, tid);
        }
        if flags & CLONE_PARENT_SETTID != 0 {
            let _ = write_u32(parent_tid, tid);
        }
    };
    let lwp = uproc::spawn_user_lwp(
        &process,
        &me.name(),
        child,
        fs_base,
        me.hold_mask(),
        prepare,
    )?;
    Ok(uproc::tid_of(&lwp) as u64)
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

const PR_SET_NAME: u64 = 15;
const PR_GET_NAME: u64 = 16;
/// `TASK_COMM_LEN`: names are at most 15 bytes and a NUL.
const NAME_LENGTH: usize = 16;

/// `prctl`: the thread's name (`PR_SET_NAME`, `PR_GET_NAME`), which the
/// control channel shows; other options are `EINVAL`.
pub fn prctl(option: u64, argument: u64) -> SysResult {
    let me = sched::current();
    match option {
        PR_SET_NAME => {
            let mut name = alloc::vec::Vec::with_capacity(NAME_LENGTH);
            for offset in 0..NAME_LENGTH as u64 - 1 {
                let mut byte = [0u8; 1];
                copy_from_user(&mut byte, argument.wrapping_add(offset))?;
                if byte[0] == 0 {
                    break;
                }
                name.push(byte[0]);
            }
            me.set_name(&alloc::string::String::from_utf8_lossy(&name));
            Ok(0)
        }
        PR_GET_NAME => {
            let mut bytes = [0u8; NAME_LENGTH];
            let name = me.name();
            let length = name.len().min(NAME_LENGTH - 1);
            bytes[..length].copy_from_slice(&name.as_bytes()[..length]);
            copy_to_user(argument, &bytes)?;
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
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
const RLIMIT_CORE: u64 = 4;
const RLIMIT_NOFILE: u64 = 7;
const RLIM_INFINITY: u64 = u64::MAX;

fn limit_of(resource: u64) -> Result<(u64, u64), Errno> {
    match resource {
        RLIMIT_CORE => {
            let limit = sched::current().process.core_limit();
            Ok((limit, RLIM_INFINITY))
        }
        RLIMIT_STACK => Ok((
            crate::uproc::exec::STACK_SIZE,
            crate::uproc::exec::STACK_SIZE,
        )),
        RLIMIT_NOFILE => Ok((crate::fd::MAX_FDS as u64, crate::fd::MAX_FDS as u64)),
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
    if old_limit != 0 {
        write_limit(old_limit, limit)?;
    }
    if new_limit != 0 {
        set_limit(resource, new_limit)?;
    }
    Ok(0)
}

/// Applies a `struct rlimit` from user memory: only `RLIMIT_CORE` may
/// change (the others are fixed here: `EPERM`).
fn set_limit(resource: u64, address: u64) -> Result<(), Errno> {
    let mut bytes = [0u8; 16];
    copy_from_user(&mut bytes, address)?;
    let current = u64::from_le_bytes(bytes[..8].try_into().expect("eight bytes"));
    let maximum = u64::from_le_bytes(bytes[8..].try_into().expect("eight bytes"));
    if current > maximum {
        return Err(Errno::EINVAL);
    }
    if resource != RLIMIT_CORE {
        return Err(Errno::EPERM);
    }
    sched::current().process.set_core_limit(current);
    Ok(())
}

pub fn setrlimit(resource: u64, address: u64) -> SysResult {
    limit_of(resource)?;
    set_limit(resource, address)?;
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
