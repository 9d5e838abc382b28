//! I/O on descriptors: `read`, `write`, `readv`, `writev`, `close`,
//! `ioctl`, `fcntl`, `dup`, `dup2`, `dup3`, `getcwd`.
//!
//! Descriptors come from the process's table (`crate::fd`): the console
//! (0: stdin at end of file; 1, 2: the serial console, raw, apart from
//! kernel log lines, which carry a timestamp), sockets (through
//! `syscall::net`) and epoll instances. Owns no state; the table lock is
//! held only to look up, install or remove (closed files are dropped after
//! it is released).

use super::SysResult;
use super::net::{iovecs, recv_segments, send_segments};
use crate::errno::Errno;
use crate::fd::{self, File, FileKind, O_NONBLOCK};
use crate::mm::usercopy::{copy_from_user, copy_to_user, read_u32, write_u32};
use crate::sched;

/// Bytes copied from user memory per console write.
const CHUNK: usize = 512;

fn console_write(buffer: u64, length: u64) -> SysResult {
    let length = length.min(isize::MAX as u64) as usize;
    let mut chunk = [0u8; CHUNK];
    let mut written = 0usize;
    while written < length {
        let part = (length - written).min(CHUNK);
        if let Err(error) = copy_from_user(&mut chunk[..part], buffer + written as u64) {
            // Linux reports what it wrote before the fault, else EFAULT.
            return if written > 0 {
                Ok(written as u64)
            } else {
                Err(error)
            };
        }
        crate::console::write_bytes(&chunk[..part]);
        written += part;
    }
    Ok(written as u64)
}

fn write_segments(file: &File, segments: &[(u64, u64)]) -> SysResult {
    match &file.kind {
        FileKind::Stdin => Err(Errno::EBADF),
        FileKind::Console => {
            let mut total = 0u64;
            for &(base, length) in segments {
                match console_write(base, length) {
                    Ok(written) => total += written,
                    Err(error) if total == 0 => return Err(error),
                    Err(_) => break,
                }
            }
            Ok(total)
        }
        FileKind::Socket(socket) => send_segments(file, socket, segments, None, 0),
        FileKind::Epoll(_) => Err(Errno::EINVAL),
    }
}

fn read_segments(file: &File, segments: &[(u64, u64)]) -> SysResult {
    match &file.kind {
        FileKind::Stdin => {
            for &(base, length) in segments {
                crate::mm::usercopy::check_range(base, length as usize)?;
            }
            // The console has no input for the process: end of file.
            Ok(0)
        }
        FileKind::Console => Err(Errno::EBADF),
        FileKind::Socket(socket) => {
            recv_segments(file, socket, segments, 0).map(|(count, ..)| count)
        }
        FileKind::Epoll(_) => Err(Errno::EINVAL),
    }
}

pub fn write(fd: u64, buffer: u64, length: u64) -> SysResult {
    let file = fd::current_file(fd)?;
    write_segments(&file, &[(buffer, length.min(isize::MAX as u64))])
}

pub fn read(fd: u64, buffer: u64, length: u64) -> SysResult {
    let file = fd::current_file(fd)?;
    read_segments(&file, &[(buffer, length.min(isize::MAX as u64))])
}

pub fn writev(fd: u64, address: u64, count: u64) -> SysResult {
    let file = fd::current_file(fd)?;
    write_segments(&file, &iovecs(address, count)?)
}

pub fn readv(fd: u64, address: u64, count: u64) -> SysResult {
    let file = fd::current_file(fd)?;
    read_segments(&file, &iovecs(address, count)?)
}

pub fn close(fd: u64) -> SysResult {
    let fd = fd::number(fd)?;
    let file = sched::current().process.files.lock().remove(fd)?;
    // The last reference closes the socket, outside the table lock.
    drop(file);
    Ok(0)
}

const TCGETS: u64 = 0x5401;
const FIONREAD: u64 = 0x541B;
const FIONBIO: u64 = 0x5421;
const FIONCLEX: u64 = 0x5450;
const FIOCLEX: u64 = 0x5451;

pub fn ioctl(fd: u64, request: u64, argument: u64) -> SysResult {
    let file = fd::current_file(fd)?;
    match request as u32 as u64 {
        FIONBIO => {
            file.set_nonblocking(read_u32(argument)? != 0);
            Ok(0)
        }
        FIOCLEX | FIONCLEX => {
            let fd = fd::number(fd)?;
            let me = sched::current();
            me.process
                .files
                .lock()
                .set_cloexec(fd, request == FIOCLEX)?;
            Ok(0)
        }
        FIONREAD => match &file.kind {
            FileKind::Socket(socket) => {
                let pending = socket.pending_bytes().min(i32::MAX as usize) as u32;
                write_u32(argument, pending)?;
                Ok(0)
            }
            FileKind::Stdin => {
                write_u32(argument, 0)?;
                Ok(0)
            }
            _ => Err(Errno::ENOTTY),
        },
        // The console is not a terminal to the process (`TCGETS`,
        // `TIOCGWINSZ`, ...).
        TCGETS => Err(Errno::ENOTTY),
        _ => Err(Errno::ENOTTY),
    }
}

const F_DUPFD: u64 = 0;
const F_GETFD: u64 = 1;
const F_SETFD: u64 = 2;
const F_GETFL: u64 = 3;
const F_SETFL: u64 = 4;
const F_DUPFD_CLOEXEC: u64 = 1030;
const FD_CLOEXEC: u64 = 1;
const O_CLOEXEC: u64 = 0o2000000;

pub fn fcntl(fd: u64, command: u64, argument: u64) -> SysResult {
    let number = fd::number(fd)?;
    let me = sched::current();
    match command {
        F_DUPFD | F_DUPFD_CLOEXEC => {
            let minimum = argument as u32 as usize;
            if minimum >= fd::MAX_FDS {
                return Err(Errno::EINVAL);
            }
            let mut table = me.process.files.lock();
            let file = table.get(number)?;
            Ok(table.install_from(minimum, file, command == F_DUPFD_CLOEXEC)? as u64)
        }
        F_GETFD => Ok(u64::from(me.process.files.lock().cloexec(number)?)),
        F_SETFD => {
            me.process
                .files
                .lock()
                .set_cloexec(number, argument & FD_CLOEXEC != 0)?;
            Ok(0)
        }
        F_GETFL => Ok(u64::from(
            me.process.files.lock().get(number)?.status_flags(),
        )),
        F_SETFL => {
            let file = me.process.files.lock().get(number)?;
            file.set_nonblocking(argument as u32 & O_NONBLOCK != 0);
            Ok(0)
        }
        _ => {
            me.process.files.lock().get(number)?;
            Err(Errno::EINVAL)
        }
    }
}

pub fn dup(fd: u64) -> SysResult {
    let number = fd::number(fd)?;
    let me = sched::current();
    let mut table = me.process.files.lock();
    let file = table.get(number)?;
    Ok(table.install(file, false)? as u64)
}

fn dup_to(old: u64, new: u64, cloexec: bool) -> SysResult {
    let old = fd::number(old)?;
    let new = fd::number(new)?;
    let me = sched::current();
    let replaced = me.process.files.lock().duplicate_to(old, new, cloexec)?;
    drop(replaced);
    Ok(new as u64)
}

pub fn dup2(old: u64, new: u64) -> SysResult {
    if old as u32 == new as u32 {
        fd::current_file(old)?;
        return Ok(new as u32 as u64);
    }
    dup_to(old, new, false)
}

pub fn dup3(old: u64, new: u64, flags: u64) -> SysResult {
    if flags & !O_CLOEXEC != 0 || old as u32 == new as u32 {
        return Err(Errno::EINVAL);
    }
    dup_to(old, new, flags & O_CLOEXEC != 0)
}

pub fn getcwd(buffer: u64, size: u64) -> SysResult {
    if size < 2 {
        return Err(Errno::ERANGE);
    }
    copy_to_user(buffer, b"/\0")?;
    Ok(2)
}
