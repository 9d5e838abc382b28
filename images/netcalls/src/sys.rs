//! Raw Linux socket, readiness and signal calls (the `syscall`
//! instruction, so no libc wrapper retries or rewrites anything), and the
//! structures they take, laid out as the kernel reads them.

use image_support::{SysResult, sys};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

/// An address no program has mapped (Linux keeps the first 64 KiB free).
pub const UNMAPPED: u64 = 0x1000;
/// A 16-byte socket address of family `AF_UNSPEC`, every other byte 0.
pub const UNSPEC: [u8; 16] = [0; 16];
/// The first byte of the kernel half.
pub const KERNEL_ADDR: u64 = 0xffff_8000_0000_0000;
/// The only `sigsetsize` x86_64 Linux accepts.
pub const SIGSET_SIZE: u64 = 8;

/// A `struct sockaddr_in` (16 bytes) for `ip:port`.
pub fn sin(ip: [u8; 4], port: u16) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    a[2..4].copy_from_slice(&port.to_be_bytes());
    a[4..8].copy_from_slice(&ip);
    a
}

/// The family, address and port of a `sockaddr_in`.
pub fn parts(a: &[u8; 16]) -> (u16, [u8; 4], u16) {
    (
        u16::from_ne_bytes([a[0], a[1]]),
        [a[4], a[5], a[6], a[7]],
        u16::from_be_bytes([a[2], a[3]]),
    )
}

pub fn show_addr(a: &[u8; 16]) -> String {
    let (family, ip, port) = parts(a);
    format!(
        "family {family} {}.{}.{}.{}:{port}",
        ip[0], ip[1], ip[2], ip[3]
    )
}

fn p<T>(x: &T) -> u64 {
    x as *const T as u64
}

fn pm<T>(x: &mut T) -> u64 {
    x as *mut T as u64
}

pub fn socket(domain: i32, kind: i32, protocol: i32) -> SysResult {
    // SAFETY: socket touches no memory.
    unsafe {
        sys(
            libc::SYS_socket,
            &[domain as u64, kind as u64, protocol as u64],
        )
    }
}

pub fn tcp() -> SysResult {
    socket(libc::AF_INET, libc::SOCK_STREAM, 0)
}

pub fn udp() -> SysResult {
    socket(libc::AF_INET, libc::SOCK_DGRAM, 0)
}

pub fn close(fd: i64) -> SysResult {
    // SAFETY: close touches no memory; callers close only their own fds.
    unsafe { sys(libc::SYS_close, &[fd as u64]) }
}

/// `bind`/`connect` with a raw address pointer and length.
///
/// # Safety
/// `addr` is read for `len` bytes: a live buffer, or a bad address the
/// kernel must refuse.
pub unsafe fn bind_raw(fd: i64, addr: u64, len: u64) -> SysResult {
    // SAFETY: the caller's promise.
    unsafe { sys(libc::SYS_bind, &[fd as u64, addr, len]) }
}

/// # Safety
/// As [`bind_raw`].
pub unsafe fn connect_raw(fd: i64, addr: u64, len: u64) -> SysResult {
    // SAFETY: the caller's promise.
    unsafe { sys(libc::SYS_connect, &[fd as u64, addr, len]) }
}

pub fn bind(fd: i64, a: &[u8; 16]) -> SysResult {
    // SAFETY: a live 16-byte address.
    unsafe { bind_raw(fd, p(a), 16) }
}

pub fn connect(fd: i64, a: &[u8; 16]) -> SysResult {
    // SAFETY: a live 16-byte address.
    unsafe { connect_raw(fd, p(a), 16) }
}

pub fn listen(fd: i64, backlog: i32) -> SysResult {
    // SAFETY: listen touches no memory.
    unsafe { sys(libc::SYS_listen, &[fd as u64, backlog as u64]) }
}

/// `accept4` with the peer's address.
pub fn accept(fd: i64, flags: i32) -> Result<(i64, [u8; 16]), i32> {
    let mut a = [0u8; 16];
    let mut len: u32 = 16;
    // SAFETY: a live 16-byte buffer and its length.
    unsafe {
        sys(
            libc::SYS_accept4,
            &[fd as u64, pm(&mut a), pm(&mut len), flags as u64],
        )
    }
    .map(|fd| (fd, a))
}

/// `getsockname` (`peer`: `getpeername`) into a buffer of `len` bytes:
/// the address and the length the kernel reported.
pub fn name(fd: i64, peer: bool, len: i32) -> Result<([u8; 16], i32), i32> {
    let mut a = [0u8; 16];
    let mut l = len;
    let nr = if peer {
        libc::SYS_getpeername
    } else {
        libc::SYS_getsockname
    };
    // SAFETY: a live 16-byte buffer; `l` never exceeds 16 when positive.
    unsafe { sys(nr, &[fd as u64, pm(&mut a), pm(&mut l)]) }.map(|_| (a, l))
}

/// # Safety
/// `buf` is read for `len` bytes (or is a bad address the kernel refuses).
pub unsafe fn sendto_raw(
    fd: i64,
    buf: u64,
    len: usize,
    flags: i32,
    to: Option<&[u8; 16]>,
) -> SysResult {
    let (addr, alen) = to.map_or((0, 0), |a| (p(a), 16));
    // SAFETY: the caller's promise.
    unsafe {
        sys(
            libc::SYS_sendto,
            &[fd as u64, buf, len as u64, flags as u64, addr, alen],
        )
    }
}

pub fn send(fd: i64, data: &[u8], flags: i32) -> SysResult {
    // SAFETY: a live slice.
    unsafe { sendto_raw(fd, data.as_ptr() as u64, data.len(), flags, None) }
}

pub fn sendto(fd: i64, data: &[u8], flags: i32, to: &[u8; 16]) -> SysResult {
    // SAFETY: a live slice and address.
    unsafe { sendto_raw(fd, data.as_ptr() as u64, data.len(), flags, Some(to)) }
}

/// # Safety
/// `buf` is written for `len` bytes (or is a bad address the kernel
/// refuses).
pub unsafe fn recv_raw(fd: i64, buf: u64, len: usize, flags: i32) -> SysResult {
    // SAFETY: the caller's promise.
    unsafe {
        sys(
            libc::SYS_recvfrom,
            &[fd as u64, buf, len as u64, flags as u64, 0, 0],
        )
    }
}

pub fn recv(fd: i64, buf: &mut [u8], flags: i32) -> SysResult {
    // SAFETY: a live mutable slice.
    unsafe { recv_raw(fd, buf.as_mut_ptr() as u64, buf.len(), flags) }
}

/// Receives exactly `n` bytes (several calls if need be).
pub fn recv_exact(fd: i64, n: usize) -> Result<Vec<u8>, i32> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match recv(fd, &mut out[got..], 0)? {
            0 => return Err(0),
            k => got += k as usize,
        }
    }
    Ok(out)
}

pub fn iovecs(bufs: &mut [&mut [u8]]) -> Vec<libc::iovec> {
    bufs.iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect()
}

/// `readv` (`write`: `writev`) over `iov`.
pub fn rwv(fd: i64, iov: &[libc::iovec], write: bool) -> SysResult {
    let nr = if write {
        libc::SYS_writev
    } else {
        libc::SYS_readv
    };
    // SAFETY: every iovec points into a live buffer of its length.
    unsafe { sys(nr, &[fd as u64, iov.as_ptr() as u64, iov.len() as u64]) }
}

/// # Safety
/// `msg` and what it points to are live (or bad addresses the kernel
/// refuses).
pub unsafe fn msg_raw(fd: i64, msg: u64, flags: i32, send: bool) -> SysResult {
    let nr = if send {
        libc::SYS_sendmsg
    } else {
        libc::SYS_recvmsg
    };
    // SAFETY: the caller's promise.
    unsafe { sys(nr, &[fd as u64, msg, flags as u64]) }
}

/// A `msghdr` over `iov` with an optional name buffer.
pub fn msghdr(iov: &mut [libc::iovec], name: Option<&mut [u8; 16]>) -> libc::msghdr {
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = iov.as_mut_ptr();
    m.msg_iovlen = iov.len() as _;
    if let Some(n) = name {
        m.msg_name = n.as_mut_ptr().cast();
        m.msg_namelen = 16;
    }
    m
}

pub fn shutdown(fd: i64, how: i32) -> SysResult {
    // SAFETY: shutdown touches no memory.
    unsafe { sys(libc::SYS_shutdown, &[fd as u64, how as u64]) }
}

/// `getsockopt` of an int-sized option with a buffer of `len` bytes: the
/// value and the length reported.
pub fn getsockopt(fd: i64, level: i32, opt: i32, len: i32) -> Result<(i32, i32), i32> {
    let mut v: [u8; 16] = [0; 16];
    let mut l = len;
    // SAFETY: a live 16-byte buffer; `l` is at most 16.
    unsafe {
        sys(
            libc::SYS_getsockopt,
            &[fd as u64, level as u64, opt as u64, pm(&mut v), pm(&mut l)],
        )
    }
    .map(|_| (i32::from_ne_bytes([v[0], v[1], v[2], v[3]]), l))
}

pub fn getint(fd: i64, level: i32, opt: i32) -> Result<i32, i32> {
    getsockopt(fd, level, opt, 4).map(|(v, _)| v)
}

/// # Safety
/// `value` is read for `len` bytes, `len_ptr` read and written (or bad
/// addresses the kernel refuses).
pub unsafe fn getsockopt_raw(fd: i64, level: i32, opt: i32, value: u64, len_ptr: u64) -> SysResult {
    // SAFETY: the caller's promise.
    unsafe {
        sys(
            libc::SYS_getsockopt,
            &[fd as u64, level as u64, opt as u64, value, len_ptr],
        )
    }
}

/// `setsockopt` with `bytes` as the value.
pub fn setsockopt(fd: i64, level: i32, opt: i32, bytes: &[u8]) -> SysResult {
    // SAFETY: a live slice.
    unsafe {
        sys(
            libc::SYS_setsockopt,
            &[
                fd as u64,
                level as u64,
                opt as u64,
                bytes.as_ptr() as u64,
                bytes.len() as u64,
            ],
        )
    }
}

pub fn setint(fd: i64, level: i32, opt: i32, v: i32) -> SysResult {
    setsockopt(fd, level, opt, &v.to_ne_bytes())
}

/// `SO_RCVTIMEO`/`SO_SNDTIMEO` in milliseconds.
pub fn set_timeout(fd: i64, opt: i32, ms: u64) -> SysResult {
    let tv = libc::timeval {
        tv_sec: (ms / 1000) as _,
        tv_usec: ((ms % 1000) * 1000) as _,
    };
    // SAFETY: a live timeval viewed as bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts(p(&tv) as *const u8, std::mem::size_of::<libc::timeval>())
    };
    setsockopt(fd, libc::SOL_SOCKET, opt, bytes)
}

pub fn fcntl(fd: i64, cmd: i32, arg: i64) -> SysResult {
    // SAFETY: F_GETFL/F_SETFL touch no memory.
    unsafe { sys(libc::SYS_fcntl, &[fd as u64, cmd as u64, arg as u64]) }
}

/// `FIONREAD` on x86_64 (libc's type for it differs between targets).
const FIONREAD: u64 = 0x541B;

/// `ioctl(FIONREAD)`: bytes ready to read.
pub fn fionread(fd: i64) -> SysResult {
    let mut n: i32 = -1;
    // SAFETY: FIONREAD writes one int.
    unsafe { sys(libc::SYS_ioctl, &[fd as u64, FIONREAD, pm(&mut n)]) }.map(|_| n as i64)
}

/// `poll` of one descriptor for `events`: the count and `revents`.
pub fn poll1(fd: i64, events: i16, timeout_ms: i32) -> Result<(i64, i16), i32> {
    let mut pfd = libc::pollfd {
        fd: fd as i32,
        events,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    unsafe { sys(libc::SYS_poll, &[pm(&mut pfd), 1, timeout_ms as u64]) }.map(|n| (n, pfd.revents))
}

/// `ppoll` of one descriptor with an optional timeout (written back) and
/// mask.
pub fn ppoll1(
    fd: i64,
    events: i16,
    timeout: Option<&mut libc::timespec>,
    mask: Option<u64>,
    setsize: u64,
) -> Result<(i64, i16), i32> {
    let mut pfd = libc::pollfd {
        fd: fd as i32,
        events,
        revents: 0,
    };
    let ts = timeout.map_or(0, pm);
    let m = mask.unwrap_or(0);
    let mp = if mask.is_some() { p(&m) } else { 0 };
    // SAFETY: a live pollfd, timespec and mask (or nulls).
    unsafe { sys(libc::SYS_ppoll, &[pm(&mut pfd), 1, ts, mp, setsize]) }.map(|n| (n, pfd.revents))
}

/// `ppoll` with raw pointers.
///
/// # Safety
/// Live or bad addresses only; the kernel reads `fds`, `ts`, `mask` and
/// writes `fds` and `ts`.
pub unsafe fn ppoll_raw(fds: u64, n: u64, ts: u64, mask: u64, setsize: u64) -> SysResult {
    // SAFETY: the caller's promise.
    unsafe { sys(libc::SYS_ppoll, &[fds, n, ts, mask, setsize]) }
}

/// A one-word `fd_set` with `fd` (below 64) set.
pub fn fdset(fd: i64) -> u64 {
    1u64 << fd
}

/// `select` with one-word sets (null when `None`) and an optional
/// timeval (written back).
pub fn select(
    nfds: i64,
    read: Option<&mut u64>,
    write: Option<&mut u64>,
    timeout: Option<&mut libc::timeval>,
) -> SysResult {
    // SAFETY: live words and timeval, or nulls.
    unsafe {
        sys(
            libc::SYS_select,
            &[
                nfds as u64,
                read.map_or(0, pm),
                write.map_or(0, pm),
                0,
                timeout.map_or(0, pm),
            ],
        )
    }
}

/// `pselect6` with one-word read/write sets, an optional timespec
/// (written back) and the raw sixth argument (`{ mask ptr, size }`
/// address, 0 for none).
pub fn pselect6(
    nfds: i64,
    read: Option<&mut u64>,
    write: Option<&mut u64>,
    timeout: Option<&mut libc::timespec>,
    sig: u64,
) -> SysResult {
    // SAFETY: live words, timespec and argument pack, or nulls; `sig` is
    // built by [`SigPack`] or a bad address the kernel must refuse.
    unsafe {
        sys(
            libc::SYS_pselect6,
            &[
                nfds as u64,
                read.map_or(0, pm),
                write.map_or(0, pm),
                0,
                timeout.map_or(0, pm),
                sig,
            ],
        )
    }
}

/// `pselect6`'s sixth argument: a mask pointer and its size.
#[repr(C)]
pub struct SigPack {
    pub mask: u64,
    pub size: u64,
}

impl SigPack {
    pub fn addr(&self) -> u64 {
        p(self)
    }
}

pub fn epoll_create() -> SysResult {
    // SAFETY: epoll_create1 touches no memory.
    unsafe { sys(libc::SYS_epoll_create1, &[libc::EPOLL_CLOEXEC as u64]) }
}

pub fn epoll_add(ep: i64, fd: i64, events: u32) -> SysResult {
    let ev = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    // SAFETY: one live epoll_event.
    unsafe {
        sys(
            libc::SYS_epoll_ctl,
            &[ep as u64, libc::EPOLL_CTL_ADD as u64, fd as u64, p(&ev)],
        )
    }
}

/// `epoll_pwait` for one event (`mask` None: null, i.e. `epoll_wait`):
/// the count and the event's bits and data.
pub fn epoll_wait1(
    ep: i64,
    timeout_ms: i32,
    mask: Option<u64>,
    setsize: u64,
) -> Result<(i64, u32, u64), i32> {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    let m = mask.unwrap_or(0);
    let mp = if mask.is_some() { p(&m) } else { 0 };
    // SAFETY: one live epoll_event and a live mask (or null).
    unsafe {
        sys(
            libc::SYS_epoll_pwait,
            &[ep as u64, pm(&mut ev), 1, timeout_ms as u64, mp, setsize],
        )
    }
    .map(|n| (n, ev.events, ev.u64))
}

// ---- signals

pub fn getpid() -> i32 {
    // SAFETY: getpid touches no memory.
    unsafe { sys(libc::SYS_getpid, &[]) }.unwrap_or(-1) as i32
}

pub fn gettid() -> i32 {
    // SAFETY: gettid touches no memory.
    unsafe { sys(libc::SYS_gettid, &[]) }.unwrap_or(-1) as i32
}

pub fn tgkill(tid: i32, sig: i32) -> SysResult {
    // SAFETY: tgkill touches no memory.
    unsafe { sys(libc::SYS_tgkill, &[getpid() as u64, tid as u64, sig as u64]) }
}

pub const fn bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

/// `rt_sigprocmask(how, set)`: the old mask (`set` None: only read).
pub fn sigmask(how: i32, set: Option<u64>) -> u64 {
    let s = set.unwrap_or(0);
    let sp = if set.is_some() { p(&s) } else { 0 };
    let mut old = 0u64;
    // SAFETY: live 8-byte sets.
    let r = unsafe {
        sys(
            libc::SYS_rt_sigprocmask,
            &[how as u64, sp, pm(&mut old), SIGSET_SIZE],
        )
    };
    r.map(|_| old).unwrap_or(u64::MAX)
}

pub fn current_mask() -> u64 {
    sigmask(libc::SIG_BLOCK, None)
}

pub fn pending() -> u64 {
    let mut set = 0u64;
    // SAFETY: a live 8-byte set.
    let r = unsafe { sys(libc::SYS_rt_sigpending, &[pm(&mut set), SIGSET_SIZE]) };
    r.map(|_| set).unwrap_or(u64::MAX)
}

/// Handler runs per signal number, and the `uc_sigmask` (the mask
/// `rt_sigreturn` puts back) and in-force mask of the last run.
pub static RUNS: [AtomicU32; 65] = [const { AtomicU32::new(0) }; 65];
pub static FRAME_MASK: AtomicU64 = AtomicU64::new(0);

/// Offset of `uc_sigmask` in the kernel's `struct ucontext` (flags, link,
/// the 24-byte stack, the 256-byte mcontext).
const UC_SIGMASK: usize = 8 + 8 + 24 + 256;

extern "C" fn on_signal(sig: i32, _info: *mut libc::siginfo_t, uc: *mut std::ffi::c_void) {
    if let Some(n) = RUNS.get(sig as usize) {
        n.fetch_add(1, SeqCst);
    }
    // SAFETY: the kernel passes a live ucontext; the mask is 8-aligned.
    let mask = unsafe { *((uc as *const u8).add(UC_SIGMASK) as *const u64) };
    FRAME_MASK.store(mask, SeqCst);
}

pub fn runs(sig: i32) -> u32 {
    RUNS[sig as usize].load(SeqCst)
}

/// Installs the counting handler for `sig` with `SA_SIGINFO | flags`.
pub fn handle(sig: i32, flags: i32) {
    // SAFETY: sigaction reads the live structure; the handler only
    // touches atomics.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_signal as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO | flags;
        libc::sigemptyset(&mut act.sa_mask);
        if libc::sigaction(sig, &act, std::ptr::null_mut()) != 0 {
            panic!("sigaction({sig}) failed");
        }
    }
}
