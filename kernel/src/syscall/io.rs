//! Console I/O for the guest process: fds 0 (stdin: end of file), 1 and 2
//! (stdout, stderr: the serial console, raw, apart from kernel log lines,
//! which carry a timestamp). Other descriptors are `EBADF`.

use alloc::vec::Vec;

use super::SysResult;
use crate::errno::Errno;
use crate::mm::usercopy::{copy_from_user, copy_to_user, read_u64};

/// Bytes copied from user memory per console write.
const CHUNK: usize = 512;
/// Linux `IOV_MAX`.
const IOV_MAX: u64 = 1024;

fn check_fd(fd: u64) -> Result<(), Errno> {
    if fd <= 2 { Ok(()) } else { Err(Errno::EBADF) }
}

pub fn write(fd: u64, buffer: u64, length: u64) -> SysResult {
    check_fd(fd)?;
    if fd == 0 {
        return Err(Errno::EBADF);
    }
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

pub fn read(fd: u64, buffer: u64, length: u64) -> SysResult {
    check_fd(fd)?;
    if fd != 0 {
        return Err(Errno::EBADF);
    }
    crate::mm::usercopy::check_range(buffer, length.min(isize::MAX as u64) as usize)?;
    // The console has no input for the process: end of file.
    Ok(0)
}

fn iovecs(address: u64, count: u64) -> Result<Vec<(u64, u64)>, Errno> {
    if count > IOV_MAX {
        return Err(Errno::EINVAL);
    }
    let mut vectors = Vec::with_capacity(count as usize);
    for index in 0..count {
        let base = read_u64(address + index * 16)?;
        let length = read_u64(address + index * 16 + 8)?;
        if length > isize::MAX as u64 {
            return Err(Errno::EINVAL);
        }
        vectors.push((base, length));
    }
    Ok(vectors)
}

pub fn writev(fd: u64, address: u64, count: u64) -> SysResult {
    check_fd(fd)?;
    let mut total = 0u64;
    for (base, length) in iovecs(address, count)? {
        match write(fd, base, length) {
            Ok(written) => total += written,
            Err(error) if total == 0 => return Err(error),
            Err(_) => break,
        }
    }
    Ok(total)
}

pub fn readv(fd: u64, address: u64, count: u64) -> SysResult {
    check_fd(fd)?;
    iovecs(address, count)?;
    read(fd, 0, 0)
}

pub fn close(fd: u64) -> SysResult {
    check_fd(fd).map(|_| 0)
}

/// `TCGETS` and `TIOCGWINSZ`: the console is not a terminal to the process.
pub fn ioctl(fd: u64, _request: u64, _argument: u64) -> SysResult {
    check_fd(fd)?;
    Err(Errno::ENOTTY)
}

const F_GETFD: u64 = 1;
const F_SETFD: u64 = 2;
const F_GETFL: u64 = 3;

pub fn fcntl(fd: u64, command: u64, _argument: u64) -> SysResult {
    check_fd(fd)?;
    match command {
        F_GETFD | F_SETFD => Ok(0),
        F_GETFL => Ok(if fd == 0 { 0 } else { 1 }), // O_RDONLY / O_WRONLY
        _ => Err(Errno::EINVAL),
    }
}

const POLLIN: u16 = 0x1;
const POLLOUT: u16 = 0x4;
const POLLNVAL: u16 = 0x20;

/// Descriptors 0-2 are always ready (stdin at end of file, output
/// writable); others are `POLLNVAL`. Never needs to wait.
fn poll_ready(fds: u64, count: u64) -> SysResult {
    if count > 4096 {
        return Err(Errno::EINVAL);
    }
    let mut ready = 0;
    for index in 0..count {
        let entry = fds + index * 8;
        let mut raw = [0u8; 8];
        copy_from_user(&mut raw, entry)?;
        let fd = i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let events = u16::from_le_bytes([raw[4], raw[5]]);
        let revents = match fd {
            fd if fd < 0 => 0,
            0 => events & POLLIN,
            1 | 2 => events & POLLOUT,
            _ => POLLNVAL,
        };
        if revents != 0 {
            ready += 1;
        }
        copy_to_user(entry + 6, &revents.to_le_bytes())?;
    }
    Ok(ready)
}

pub fn poll(fds: u64, count: u64, timeout_ms: i32) -> SysResult {
    let ready = poll_ready(fds, count)?;
    if ready == 0 && timeout_ms != 0 {
        // Nothing can become ready: sleep out the timeout (interruptibly).
        let nanoseconds = if timeout_ms < 0 {
            u64::MAX
        } else {
            timeout_ms as u64 * 1_000_000
        };
        super::time::sleep_interruptibly(nanoseconds)?;
    }
    Ok(ready)
}

pub fn ppoll(fds: u64, count: u64, timeout: u64) -> SysResult {
    let ready = poll_ready(fds, count)?;
    if ready == 0 && timeout != 0 {
        let nanoseconds = super::time::read_timespec(timeout)?;
        if nanoseconds > 0 {
            super::time::sleep_interruptibly(nanoseconds)?;
        }
    }
    Ok(ready)
}

pub fn getcwd(buffer: u64, size: u64) -> SysResult {
    if size < 2 {
        return Err(Errno::ERANGE);
    }
    copy_to_user(buffer, b"/\0")?;
    Ok(2)
}
