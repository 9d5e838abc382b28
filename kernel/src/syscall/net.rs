//! Linux socket system calls over `net::socket`: `socket`, `bind`,
//! `listen`, `accept`/`accept4`, `connect`, `sendto`/`recvfrom`,
//! `sendmsg`/`recvmsg`, `shutdown`, `getsockname`/`getpeername`,
//! `setsockopt`/`getsockopt`, `socketpair` (`EOPNOTSUPP`), and the socket
//! halves of `read`/`write`/`readv`/`writev` (`io`).
//!
//! Owns no state. User memory is copied into kernel buffers of at most
//! `CHUNK` bytes before a socket sees it (and out of them after), so no
//! lock is held across a user copy. `EPIPE` raises `SIGPIPE` for the
//! calling LWP unless `MSG_NOSIGNAL`. Locks: fd table (lookups only) →
//! stack → socket state, all inside `net::socket`.

use alloc::sync::Arc;
use alloc::vec::Vec;

use super::SysResult;
use crate::errno::Errno;
use crate::fd::{self, File, FileKind, O_NONBLOCK, O_RDWR};
use crate::mm::usercopy::{
    check_range, check_writable, copy_from_user, copy_to_user, read_u32, read_u64, write_u32,
};
use crate::net::socket::{
    AF_INET, AF_UNSPEC, Kind, MSG_NOSIGNAL, MSG_TRUNC, SOCK_CLOEXEC, SOCK_DGRAM, SOCK_NONBLOCK,
    SOCK_STREAM, SOCKADDR_IN_SIZE, SockAddr, Socket, StackRef,
};
use crate::sched;

/// Bytes moved between user memory and a stream socket per step.
const CHUNK: usize = 64 * 1024;
/// The largest datagram a call carries.
const MAX_DATAGRAM: usize = 65_535;
const AF_UNIX: u64 = 1;
const AF_INET6: u64 = 10;
const IPPROTO_TCP: u64 = 6;
const IPPROTO_UDP: u64 = 17;
/// Linux `IOV_MAX`.
const IOV_MAX: u64 = 1024;

fn socket_of(fd: u64) -> Result<(Arc<File>, Arc<Socket>), Errno> {
    let file = fd::current_file(fd)?;
    let socket = Arc::clone(file.socket()?);
    Ok((file, socket))
}

/// A user `struct sockaddr` of `length` bytes: its first bytes (up to a
/// `sockaddr_in`'s 16) and how many. `EINVAL` for a length outside
/// 0..=128 (`sockaddr_storage`), `EFAULT` if unreadable.
fn read_sockaddr_bytes(
    address: u64,
    length: u64,
) -> Result<([u8; SOCKADDR_IN_SIZE], usize), Errno> {
    let length = length as i32;
    if !(0..=128).contains(&length) {
        return Err(Errno::EINVAL);
    }
    let mut bytes = [0u8; SOCKADDR_IN_SIZE];
    let length = (length as usize).min(SOCKADDR_IN_SIZE);
    copy_from_user(&mut bytes[..length], address)?;
    Ok((bytes, length))
}

/// Reads a `struct sockaddr_in` of `length` bytes (AF_UNSPEC accepted
/// when `unspec`, as Linux's UDP `sendmsg` does).
fn read_sockaddr(address: u64, length: u64, unspec: bool) -> Result<SockAddr, Errno> {
    let (bytes, length) = read_sockaddr_bytes(address, length)?;
    SockAddr::parse(&bytes[..length], unspec)
}

/// Writes `address` to a user buffer of `*length_ptr` bytes (truncated,
/// as Linux does) and its full size to `*length_ptr`.
fn write_sockaddr(buffer: u64, length_ptr: u64, address: SockAddr) -> Result<(), Errno> {
    if buffer == 0 {
        return Ok(());
    }
    let length = read_u32(length_ptr)? as i32;
    if length < 0 {
        return Err(Errno::EINVAL);
    }
    let bytes = address.to_bytes();
    copy_to_user(buffer, &bytes[..(length as usize).min(SOCKADDR_IN_SIZE)])?;
    write_u32(length_ptr, SOCKADDR_IN_SIZE as u32)
}

/// `SIGPIPE` for the calling LWP after `EPIPE`, unless `MSG_NOSIGNAL`.
fn pipe_signal<T>(result: Result<T, Errno>, flags: u32) -> Result<T, Errno> {
    if result.as_ref().err() == Some(&Errno::EPIPE) && flags & MSG_NOSIGNAL == 0 {
        let me = sched::current();
        let info = crate::signal::SigInfo::from_sender(crate::signal::SIGPIPE, 0, me.process.pid);
        let _ = crate::signal::send_to_lwp(&me, info);
    }
    result
}

/// Linux's `NPROTO` (address families) and `SOCK_MAX` (socket types).
const NPROTO: u64 = 46;
const SOCK_MAX: u32 = 11;

/// `socket`, checked in Linux's order: flags, family range, type range,
/// then what the family supports.
pub fn socket(domain: u64, kind: u64, protocol: u64) -> SysResult {
    let kind = kind as u32;
    let flags = kind & !0xf;
    if flags & !(SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    let domain = domain as i32 as i64;
    if !(0..NPROTO as i64).contains(&domain) {
        return Err(Errno::EAFNOSUPPORT);
    }
    if kind & 0xf >= SOCK_MAX {
        return Err(Errno::EINVAL);
    }
    match domain as u64 {
        d if d == u64::from(AF_INET) => {}
        AF_UNIX | AF_INET6 => return Err(Errno::EAFNOSUPPORT),
        _ => return Err(Errno::EAFNOSUPPORT),
    }
    let kind = match (kind & 0xf, protocol) {
        (SOCK_STREAM, 0 | IPPROTO_TCP) => Kind::Tcp,
        (SOCK_DGRAM, 0 | IPPROTO_UDP) => Kind::Udp,
        (SOCK_STREAM | SOCK_DGRAM | 3, _) => return Err(Errno::EPROTONOSUPPORT),
        _ => return Err(Errno::ESOCKTNOSUPPORT),
    };
    let me = sched::current();
    let attachment = crate::net::attach(&me.process)?;
    let socket = Socket::new(StackRef::Attachment(attachment), kind);
    let status = O_RDWR
        | if flags & SOCK_NONBLOCK != 0 {
            O_NONBLOCK
        } else {
            0
        };
    let file = File::new(FileKind::Socket(socket), status);
    Ok(fd::install_current(file, flags & SOCK_CLOEXEC != 0)? as u64)
}

pub fn socketpair(_domain: u64, _kind: u64, _protocol: u64, _pair: u64) -> SysResult {
    Err(Errno::EOPNOTSUPP)
}

/// `bind`: AF_UNSPEC is taken for AF_INET only with INADDR_ANY (Linux's
/// compatibility rule).
pub fn bind(fd: u64, address: u64, length: u64) -> SysResult {
    let (_file, socket) = socket_of(fd)?;
    let (bytes, length) = read_sockaddr_bytes(address, length)?;
    let parsed = SockAddr::parse(&bytes[..length], true)?;
    if u16::from_le_bytes([bytes[0], bytes[1]]) == AF_UNSPEC && !parsed.ip.is_unspecified() {
        return Err(Errno::EAFNOSUPPORT);
    }
    socket.bind(parsed)?;
    Ok(0)
}

pub fn listen(fd: u64, backlog: u64) -> SysResult {
    let (_file, socket) = socket_of(fd)?;
    socket.listen(backlog as i32)?;
    Ok(0)
}

pub fn connect(fd: u64, address: u64, length: u64) -> SysResult {
    let (file, socket) = socket_of(fd)?;
    let (bytes, length) = read_sockaddr_bytes(address, length)?;
    if length < 2 {
        return Err(Errno::EINVAL);
    }
    // AF_UNSPEC dissolves the socket's association (Linux's disconnect).
    if u16::from_le_bytes([bytes[0], bytes[1]]) == AF_UNSPEC {
        socket.disconnect();
        return Ok(0);
    }
    let address = SockAddr::parse(&bytes[..length], false)?;
    socket.connect(address, file.nonblocking())?;
    Ok(0)
}

pub fn accept4(fd: u64, address: u64, length_ptr: u64, flags: u64) -> SysResult {
    let flags = flags as u32;
    if flags & !(SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    let (file, socket) = socket_of(fd)?;
    if address != 0 {
        read_u32(length_ptr)?;
    }
    let (accepted, peer) = socket.accept(file.nonblocking())?;
    let status = O_RDWR
        | if flags & SOCK_NONBLOCK != 0 {
            O_NONBLOCK
        } else {
            0
        };
    write_sockaddr(address, length_ptr, peer)?;
    let file = File::new(FileKind::Socket(accepted), status);
    Ok(fd::install_current(file, flags & SOCK_CLOEXEC != 0)? as u64)
}

pub fn accept(fd: u64, address: u64, length_ptr: u64) -> SysResult {
    accept4(fd, address, length_ptr, 0)
}

/// Sends the bytes of the user `segments` (base, length): a datagram whole,
/// a stream in chunks until all is queued, or until an error or a
/// non-blocking stop after some bytes went (then the count).
pub(super) fn send_segments(
    file: &File,
    socket: &Socket,
    segments: &[(u64, u64)],
    to: Option<SockAddr>,
    flags: u32,
) -> SysResult {
    let total: u64 = segments.iter().map(|(_, length)| length).sum();
    let nonblocking = file.nonblocking();
    if socket.kind() == Kind::Udp {
        if total > MAX_DATAGRAM as u64 {
            return Err(Errno::EMSGSIZE);
        }
        let mut datagram = Vec::with_capacity(total as usize);
        for &(base, length) in segments {
            let start = datagram.len();
            datagram.resize(start + length as usize, 0);
            copy_from_user(&mut datagram[start..], base)?;
        }
        let result = socket.send(&datagram, to, flags, nonblocking);
        return pipe_signal(result, flags).map(|count| count as u64);
    }
    let mut chunk = alloc::vec![0u8; (total as usize).min(CHUNK)];
    let mut sent = 0u64;
    for &(base, length) in segments {
        let mut done = 0u64;
        while done < length {
            let part = ((length - done) as usize).min(chunk.len());
            if let Err(error) = copy_from_user(&mut chunk[..part], base + done) {
                return if sent > 0 { Ok(sent) } else { Err(error) };
            }
            let mut offset = 0;
            while offset < part {
                match socket.send(&chunk[offset..part], to, flags, nonblocking) {
                    Ok(count) => offset += count,
                    Err(_) if sent + offset as u64 > 0 => return Ok(sent + offset as u64),
                    Err(error) => return pipe_signal(Err(error), flags),
                }
            }
            done += part as u64;
            sent += part as u64;
        }
    }
    Ok(sent)
}

/// Receives into the user `segments`: returns the count (a datagram's full
/// length with `MSG_TRUNC`), the sender, and whether a datagram was cut.
pub(super) fn recv_segments(
    file: &File,
    socket: &Socket,
    segments: &[(u64, u64)],
    flags: u32,
) -> Result<(u64, Option<SockAddr>, bool), Errno> {
    let total: u64 = segments.iter().map(|(_, length)| length).sum();
    for &(base, length) in segments {
        check_range(base, length as usize)?;
    }
    let capacity = match socket.kind() {
        Kind::Tcp => (total as usize).min(CHUNK),
        Kind::Udp => (total as usize).min(MAX_DATAGRAM),
    };
    if socket.kind() == Kind::Tcp {
        // What TCP takes from the socket is gone from it: a buffer that
        // cannot take it fails first, the data stays queued (as Linux
        // keeps what it could not copy). UDP drops the datagram, as Linux.
        let mut left = capacity;
        for &(base, length) in segments {
            let part = (length as usize).min(left);
            check_writable(base, part)?;
            left -= part;
        }
    }
    let mut buffer = alloc::vec![0u8; capacity];
    let (count, from) = socket.recv(&mut buffer, flags, file.nonblocking())?;
    let copied = count.min(capacity);
    let mut offset = 0;
    for &(base, length) in segments {
        if offset >= copied {
            break;
        }
        let part = (length as usize).min(copied - offset);
        copy_to_user(base, &buffer[offset..offset + part])?;
        offset += part;
    }
    let truncated = socket.kind() == Kind::Udp && flags & MSG_TRUNC != 0 && count > capacity;
    Ok((count as u64, from, truncated))
}

pub fn sendto(
    fd: u64,
    buffer: u64,
    length: u64,
    flags: u64,
    address: u64,
    address_length: u64,
) -> SysResult {
    let (file, socket) = socket_of(fd)?;
    let to = if address != 0 && socket.kind() == Kind::Udp {
        Some(read_sockaddr(address, address_length, true)?)
    } else {
        None
    };
    let length = length.min(isize::MAX as u64);
    send_segments(&file, &socket, &[(buffer, length)], to, flags as u32)
}

pub fn recvfrom(
    fd: u64,
    buffer: u64,
    length: u64,
    flags: u64,
    address: u64,
    length_ptr: u64,
) -> SysResult {
    let (file, socket) = socket_of(fd)?;
    let length = length.min(isize::MAX as u64);
    let (count, from, _) = recv_segments(&file, &socket, &[(buffer, length)], flags as u32)?;
    if address != 0 {
        match from {
            Some(from) => write_sockaddr(address, length_ptr, from)?,
            None => write_u32(length_ptr, 0)?,
        }
    }
    Ok(count)
}

/// Reads an iovec array.
pub(super) fn iovecs(address: u64, count: u64) -> Result<Vec<(u64, u64)>, Errno> {
    if count > IOV_MAX {
        return Err(Errno::EINVAL);
    }
    let mut vectors = Vec::with_capacity(count as usize);
    let mut total = 0u64;
    for index in 0..count {
        let base = read_u64(address + index * 16)?;
        let length = read_u64(address + index * 16 + 8)?;
        total = total.checked_add(length).ok_or(Errno::EINVAL)?;
        if total > isize::MAX as u64 {
            return Err(Errno::EINVAL);
        }
        vectors.push((base, length));
    }
    Ok(vectors)
}

/// `struct msghdr` fields: name, namelen, iov, iovlen, control,
/// controllen, flags.
struct MsgHdr {
    name: u64,
    name_length: u32,
    iov: u64,
    iov_length: u64,
}

const MSGHDR_SIZE: usize = 56;

/// Reads a `struct msghdr`: more than `IOV_MAX` iovecs is `EMSGSIZE`
/// (Linux's `copy_msghdr_from_user`).
fn read_msghdr(address: u64) -> Result<MsgHdr, Errno> {
    let mut bytes = [0u8; MSGHDR_SIZE];
    copy_from_user(&mut bytes, address)?;
    let word =
        |offset: usize| u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap_or([0; 8]));
    if word(24) > IOV_MAX {
        return Err(Errno::EMSGSIZE);
    }
    Ok(MsgHdr {
        name: word(0),
        name_length: word(8) as u32,
        iov: word(16),
        iov_length: word(24),
    })
}

pub fn sendmsg(fd: u64, message: u64, flags: u64) -> SysResult {
    let (file, socket) = socket_of(fd)?;
    let header = read_msghdr(message)?;
    let segments = iovecs(header.iov, header.iov_length)?;
    let to = if header.name != 0 && socket.kind() == Kind::Udp {
        Some(read_sockaddr(
            header.name,
            u64::from(header.name_length),
            true,
        )?)
    } else {
        None
    };
    send_segments(&file, &socket, &segments, to, flags as u32)
}

pub fn recvmsg(fd: u64, message: u64, flags: u64) -> SysResult {
    let (file, socket) = socket_of(fd)?;
    let header = read_msghdr(message)?;
    let segments = iovecs(header.iov, header.iov_length)?;
    let (count, from, truncated) = recv_segments(&file, &socket, &segments, flags as u32)?;
    if header.name != 0 {
        let name_length = match from {
            Some(from) => {
                let bytes = from.to_bytes();
                let part = (header.name_length as usize).min(SOCKADDR_IN_SIZE);
                copy_to_user(header.name, &bytes[..part])?;
                SOCKADDR_IN_SIZE as u32
            }
            None => 0,
        };
        write_u32(message + 8, name_length)?;
    }
    // No control messages; msg_flags says whether a datagram was cut.
    copy_to_user(message + 40, &0u64.to_le_bytes())?;
    write_u32(message + 48, if truncated { MSG_TRUNC } else { 0 })?;
    Ok(count)
}

pub fn shutdown(fd: u64, how: u64) -> SysResult {
    let (_file, socket) = socket_of(fd)?;
    socket.shutdown(how as u32)?;
    Ok(0)
}

pub fn getsockname(fd: u64, address: u64, length_ptr: u64) -> SysResult {
    let (_file, socket) = socket_of(fd)?;
    write_sockaddr(address, length_ptr, socket.local_addr())?;
    Ok(0)
}

pub fn getpeername(fd: u64, address: u64, length_ptr: u64) -> SysResult {
    let (_file, socket) = socket_of(fd)?;
    let peer = socket.peer_addr()?;
    write_sockaddr(address, length_ptr, peer)?;
    Ok(0)
}

pub fn setsockopt(fd: u64, level: u64, name: u64, value: u64, length: u64) -> SysResult {
    let (_file, socket) = socket_of(fd)?;
    let length = length as i32;
    if length < 0 {
        return Err(Errno::EINVAL);
    }
    let mut bytes = alloc::vec![0u8; (length as usize).min(64)];
    copy_from_user(&mut bytes, value)?;
    socket.setsockopt(level as u32, name as u32, &bytes)?;
    Ok(0)
}

pub fn getsockopt(fd: u64, level: u64, name: u64, value: u64, length_ptr: u64) -> SysResult {
    let (_file, socket) = socket_of(fd)?;
    let length = read_u32(length_ptr)? as i32;
    if length < 0 {
        return Err(Errno::EINVAL);
    }
    let bytes = socket.getsockopt(level as u32, name as u32)?;
    let part = (length as usize).min(bytes.len());
    copy_to_user(value, &bytes[..part])?;
    write_u32(length_ptr, part as u32)?;
    Ok(0)
}
