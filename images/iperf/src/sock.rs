//! What `std` lacks, through `libc`: socket buffer sizes, `TCP_INFO`,
//! `TCP_CONGESTION`, `TCP_MAXSEG`, a connect that sets the buffers first
//! (so the window scale the SYN offers fits them, as iperf3 does), random
//! bytes and `uname`.
//!
//! Every call here either succeeds or returns the OS error; none of them
//! panics. `TCP_INFO` and `TCP_CONGESTION` are optional: an OS without them
//! (Spindle) gets `None`, and the caller reports what it could not learn
//! the way iperf3 does (no retransmit counts, congestion `unknown`).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, RawFd};
use std::time::{Duration, Instant};

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the option value is a live c_int and its exact size is passed.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
}

fn get_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are live and len holds value's size, so the
    // kernel writes at most that many bytes.
    check(unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// Asks for `bytes` of receive and send buffer (`SO_RCVBUF`, then
/// `SO_SNDBUF`, as iperf3's `-w`).
pub fn set_window(fd: RawFd, bytes: u64) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "window over 2 GiB"))?;
    set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, value)?;
    set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, value)
}

/// The buffers the socket has: `(SO_SNDBUF, SO_RCVBUF)`.
pub fn buffers(fd: RawFd) -> io::Result<(u64, u64)> {
    let snd = get_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)?;
    let rcv = get_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)?;
    Ok((snd.max(0) as u64, rcv.max(0) as u64))
}

/// `TCP_MAXSEG` of a connected socket.
pub fn mss(fd: RawFd) -> Option<u64> {
    get_int(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG)
        .ok()
        .filter(|&m| m > 0)
        .map(|m| m as u64)
}

/// Linux's `struct tcp_info` up to `tcpi_snd_wnd` (declared here rather
/// than taken from `libc`, whose glibc and musl versions differ in length).
#[repr(C)]
struct RawTcpInfo {
    /// state, ca_state, retransmits, probes, backoff, options, wscale, flags
    head: [u8; 8],
    /// rto ... total_retrans (24 words; see [`TcpInfo`] for the ones used)
    words: [u32; 24],
    /// pacing_rate, max_pacing_rate, bytes_acked, bytes_received
    rates: [u64; 4],
    /// segs_out, segs_in, notsent_bytes, min_rtt, data_segs_in, data_segs_out
    segs: [u32; 6],
    /// delivery_rate, busy_time, rwnd_limited, sndbuf_limited
    times: [u64; 4],
    /// delivered, delivered_ce
    delivered: [u32; 2],
    /// bytes_sent, bytes_retrans
    bytes: [u64; 2],
    /// dsack_dups, reord_seen, rcv_ooopack, snd_wnd
    tail: [u32; 4],
}

const WORD_SND_MSS: usize = 2;
const WORD_PMTU: usize = 13;
const WORD_RTT: usize = 15;
const WORD_RTTVAR: usize = 16;
const WORD_SND_CWND: usize = 18;
const WORD_TOTAL_RETRANS: usize = 23;
/// Bytes of `tcp_info` up to and including `tcpi_total_retrans`.
const THROUGH_TOTAL_RETRANS: usize = 8 + 24 * 4;

/// What iperf3 reads from `TCP_INFO` for a sender.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    pub total_retrans: u64,
    /// Congestion window in bytes (`snd_cwnd * snd_mss`).
    pub snd_cwnd: u64,
    /// The peer's advertised window (0 when the kernel is too old to say).
    pub snd_wnd: u64,
    /// Microseconds.
    pub rtt: u64,
    pub rttvar: u64,
    pub pmtu: u64,
}

/// `TCP_INFO`, or `None` when the OS has no such option.
pub fn tcp_info(fd: RawFd) -> Option<TcpInfo> {
    // SAFETY: RawTcpInfo is plain integers; all-zero is a valid value.
    let mut raw: RawTcpInfo = unsafe { zeroed() };
    let mut len = size_of::<RawTcpInfo>() as libc::socklen_t;
    // SAFETY: raw and len are live; len is raw's size, so the kernel writes
    // at most that many bytes and reports how many it wrote.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut raw as *mut RawTcpInfo).cast(),
            &mut len,
        )
    };
    if ret < 0 || (len as usize) < THROUGH_TOTAL_RETRANS {
        return None;
    }
    let w = |i: usize| u64::from(raw.words[i]);
    Some(TcpInfo {
        total_retrans: w(WORD_TOTAL_RETRANS),
        snd_cwnd: w(WORD_SND_CWND) * w(WORD_SND_MSS),
        snd_wnd: if len as usize >= size_of::<RawTcpInfo>() {
            u64::from(raw.tail[3])
        } else {
            0
        },
        rtt: w(WORD_RTT),
        rttvar: w(WORD_RTTVAR),
        pmtu: w(WORD_PMTU),
    })
}

/// The congestion-control algorithm (`TCP_CONGESTION`), if the OS says.
pub fn congestion(fd: RawFd) -> Option<String> {
    let mut name = [0u8; 16];
    let mut len = name.len() as libc::socklen_t;
    // SAFETY: name and len are live; len is name's size.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if ret < 0 {
        return None;
    }
    let len = (len as usize).min(name.len());
    let end = name[..len].iter().position(|&b| b == 0).unwrap_or(len);
    let text = String::from_utf8_lossy(&name[..end]).into_owned();
    (!text.is_empty()).then_some(text)
}

/// A socket address in the form `connect(2)` takes.
fn raw_address(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for
            // sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain data; all-zero is valid.
            let mut sin6: libc::sockaddr_in6 = unsafe { zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            // SAFETY: sockaddr_storage is larger than and aligned for
            // sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Connects to `addr` within `timeout`, with `window` bytes of buffers
/// (when not 0) set before the SYN, as iperf3's `iperf_tcp_connect`.
pub fn connect(addr: SocketAddr, window: u64, timeout: Duration) -> io::Result<TcpStream> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor nothing else owns; the TcpStream
    // closes it on every path from here on.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    if window > 0 {
        set_window(fd, window)?;
    }
    stream.set_nonblocking(true)?;
    let (storage, len) = raw_address(&addr);
    // SAFETY: storage holds a socket address of len bytes.
    let ret = unsafe { libc::connect(fd, (&storage as *const libc::sockaddr_storage).cast(), len) };
    if ret < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        wait_writable(fd, timeout)?;
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Waits (`poll`) until `fd` is writable, within `timeout`.
fn wait_writable(fd: RawFd, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {} s", timeout.as_secs_f64()),
            ));
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: p is one live pollfd.
        let ret = unsafe { libc::poll(&mut p, 1, ms) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if ret > 0 {
            return Ok(());
        }
    }
}

/// Fills `buf` with random bytes (`getrandom`); if the OS cannot, with a
/// generator seeded from the clock and the process id (never panics).
pub fn random_bytes(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: rest is live and writable for rest.len() bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        } else if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        } else {
            break;
        }
    }
    if filled < buf.len() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ (buf.as_ptr() as u64);
        for b in &mut buf[filled..] {
            x = splitmix(x);
            *b = x as u8;
        }
    }
}

/// One step of splitmix64.
pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `uname -a` in iperf3's form: sysname nodename release version machine.
pub fn system_info() -> String {
    // SAFETY: utsname is plain data; all-zero is valid.
    let mut u: libc::utsname = unsafe { zeroed() };
    // SAFETY: u is a live utsname for the kernel to fill.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::from("unknown");
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!(
        "{} {} {} {} {}",
        field(&u.sysname),
        field(&u.nodename),
        field(&u.release),
        field(&u.version),
        field(&u.machine)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    #[test]
    fn the_layout_matches_linux() {
        assert_eq!(size_of::<RawTcpInfo>(), 232);
        assert_eq!(THROUGH_TOTAL_RETRANS, 104);
    }

    #[test]
    fn connect_sets_the_window_and_reads_tcp_state() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let s = connect(addr, 256 * 1024, Duration::from_secs(5)).unwrap();
        let (_peer, _) = l.accept().unwrap();
        let (snd, rcv) = buffers(s.as_raw_fd()).unwrap();
        assert!(snd >= 256 * 1024 && rcv >= 256 * 1024, "{snd} {rcv}");
        // Linux has both; other systems may lack them.
        if cfg!(target_os = "linux") {
            assert!(tcp_info(s.as_raw_fd()).is_some());
            assert!(congestion(s.as_raw_fd()).is_some());
            assert!(mss(s.as_raw_fd()).is_some());
        }
        drop(l);
        let refused = connect(addr, 0, Duration::from_secs(5));
        assert!(refused.is_err());
    }

    #[test]
    fn random_bytes_fill() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        random_bytes(&mut a);
        random_bytes(&mut b);
        assert_ne!(a, b);
        assert!(!system_info().is_empty());
    }
}
