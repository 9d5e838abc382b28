//! Socket objects: AF_INET stream (TCP, `tcp`) and datagram (UDP, `udp`)
//! sockets over smoltcp sockets of one `Stack`.
//!
//! Owns each socket's state (`State`: its phase, smoltcp handles, bound
//! address, options, shutdown bits and pending error) and the registry of
//! bound ports (`PORTS`, per stack and protocol). System calls copy user
//! memory into kernel buffers first: nothing here touches user memory, the
//! descriptor table or the current process.
//!
//! Locks, in order: fd table → stack (`Stack::lock`) → socket state (a
//! sleeping mutex, only ever taken with the stack lock held, never held
//! across a sleep) → `PORTS`; wake signals (`super::wake`) after the stack.
//! Each socket has a `Signal`, the waker of all its smoltcp sockets: a
//! blocking call checks, then `arm`s (joins the signal, registers the
//! waker, which a wake consumes) and sleeps (`Stack::wait`), all with the
//! stack lock held, so no change between the check and the sleep is
//! missed. smoltcp wakes the signal on data, room and state changes; calls
//! that change a socket's setup (bind, listen, connect, accept, shutdown,
//! options, a datagram socket's first send or receive) notify it
//! themselves, under the stack lock. Nothing here polls the interface:
//! calls that queue or free buffer space, close, connect or listen `kick`
//! the stack after releasing its lock.

mod addr;
mod tcp;
pub(crate) mod tests;
mod udp;

use alloc::sync::Arc;
use alloc::vec::Vec;

use smoltcp::wire::{IpAddress, Ipv4Address};

pub use addr::{AF_UNSPEC, SOCKADDR_IN_SIZE, SockAddr};

use super::wake::{Signal, Watch};
use super::{Attachment, Stack, StackInner};
use crate::errno::Errno;
use crate::sync::Mutex;
use crate::time;

pub const AF_INET: u16 = 2;
pub const SOCK_STREAM: u32 = 1;
pub const SOCK_DGRAM: u32 = 2;
pub const SOCK_NONBLOCK: u32 = 0o4000;
pub const SOCK_CLOEXEC: u32 = 0o2000000;

pub const POLLIN: u16 = 0x1;
pub const POLLPRI: u16 = 0x2;
pub const POLLOUT: u16 = 0x4;
pub const POLLERR: u16 = 0x8;
pub const POLLHUP: u16 = 0x10;
pub const POLLNVAL: u16 = 0x20;
pub const POLLRDNORM: u16 = 0x40;
pub const POLLWRNORM: u16 = 0x100;
pub const POLLRDHUP: u16 = 0x2000;

pub const MSG_PEEK: u32 = 0x2;
pub const MSG_DONTROUTE: u32 = 0x4;
pub const MSG_TRUNC: u32 = 0x20;
pub const MSG_DONTWAIT: u32 = 0x40;
pub const MSG_WAITALL: u32 = 0x100;
pub const MSG_NOSIGNAL: u32 = 0x4000;

pub const SHUT_RD: u32 = 0;
pub const SHUT_WR: u32 = 1;
pub const SHUT_RDWR: u32 = 2;

/// Option levels and names, Linux's values.
pub mod opt {
    pub const SOL_SOCKET: u32 = 1;
    pub const IPPROTO_IP: u32 = 0;
    pub const IPPROTO_TCP: u32 = 6;
    pub const IPPROTO_UDP: u32 = 17;
    pub const SO_REUSEADDR: u32 = 2;
    pub const SO_TYPE: u32 = 3;
    pub const SO_ERROR: u32 = 4;
    pub const SO_DONTROUTE: u32 = 5;
    pub const SO_BROADCAST: u32 = 6;
    pub const SO_SNDBUF: u32 = 7;
    pub const SO_RCVBUF: u32 = 8;
    pub const SO_KEEPALIVE: u32 = 9;
    pub const SO_OOBINLINE: u32 = 10;
    pub const SO_LINGER: u32 = 13;
    pub const SO_REUSEPORT: u32 = 15;
    pub const SO_RCVLOWAT: u32 = 18;
    pub const SO_SNDLOWAT: u32 = 19;
    pub const SO_RCVTIMEO: u32 = 20;
    pub const SO_SNDTIMEO: u32 = 21;
    pub const SO_ACCEPTCONN: u32 = 30;
    pub const SO_PROTOCOL: u32 = 38;
    pub const SO_DOMAIN: u32 = 39;
    pub const IP_TOS: u32 = 1;
    pub const IP_TTL: u32 = 2;
    pub const TCP_NODELAY: u32 = 1;
    pub const TCP_MAXSEG: u32 = 2;
    pub const TCP_KEEPIDLE: u32 = 4;
    pub const TCP_KEEPINTVL: u32 = 5;
    pub const TCP_KEEPCNT: u32 = 6;
}

/// Default TCP buffer per direction (and the most `SO_RCVBUF`/`SO_SNDBUF`
/// may ask for is `MAX_BUFFER`).
pub const DEFAULT_BUFFER: usize = 256 * 1024;
const MIN_BUFFER: usize = 4 * 1024;
const MAX_BUFFER: usize = 4 * 1024 * 1024;
/// Ephemeral ports (Linux's `ip_local_port_range` as IANA has it).
const EPHEMERAL: core::ops::RangeInclusive<u16> = 49152..=65535;

/// Heap kept for the rest of the kernel when socket buffers are sized.
const HEAP_RESERVE: usize = 2 << 20;

/// Refuses (`ENOMEM`) socket buffers of `bytes` that the heap cannot spare,
/// rather than failing an allocation.
fn reserve(bytes: usize) -> Result<(), Errno> {
    let free = crate::mm::heap::total_bytes().saturating_sub(crate::mm::heap::bytes_in_use());
    if free < bytes.saturating_add(HEAP_RESERVE) {
        Err(Errno::ENOMEM)
    } else {
        Ok(())
    }
}

/// What a socket's stack belongs to: a process's attachment, or a bare
/// stack (kernel tests).
pub enum StackRef {
    Attachment(Arc<Attachment>),
    Plain(Arc<Stack>),
}

impl StackRef {
    pub fn stack(&self) -> &Stack {
        match self {
            StackRef::Attachment(attachment) => &attachment.stack,
            StackRef::Plain(stack) => stack,
        }
    }

    fn clone_ref(&self) -> StackRef {
        match self {
            StackRef::Attachment(attachment) => StackRef::Attachment(Arc::clone(attachment)),
            StackRef::Plain(stack) => StackRef::Plain(Arc::clone(stack)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Udp,
}

/// Socket options that are remembered (and applied where smoltcp can).
#[derive(Clone, Copy)]
struct Options {
    reuse_addr: bool,
    reuse_port: bool,
    keepalive: bool,
    nodelay: bool,
    broadcast: bool,
    rcvbuf: usize,
    sndbuf: usize,
    /// `SO_RCVTIMEO` / `SO_SNDTIMEO` in nanoseconds (None: forever).
    rcvtimeo: Option<u64>,
    sndtimeo: Option<u64>,
    ttl: u8,
    tos: u8,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            reuse_addr: false,
            reuse_port: false,
            keepalive: false,
            nodelay: false,
            broadcast: false,
            rcvbuf: DEFAULT_BUFFER,
            sndbuf: DEFAULT_BUFFER,
            rcvtimeo: None,
            sndtimeo: None,
            ttl: 64,
            tos: 0,
        }
    }
}

/// A socket's state (under its mutex, inside the stack lock).
struct State {
    options: Options,
    /// The address it is bound to (explicitly or by an automatic bind).
    local: Option<SockAddr>,
    /// Its port in `PORTS` (owned: accepted sockets share the listener's).
    registered: Option<u16>,
    /// The pending error `SO_ERROR` reports (and clears).
    error: Option<Errno>,
    shut_rd: bool,
    shut_wr: bool,
    tcp: tcp::Phase,
    udp: udp::Udp,
}

/// An AF_INET socket.
pub struct Socket {
    stack: StackRef,
    kind: Kind,
    state: Mutex<State>,
    /// Woken when the socket may have changed (see the module comment).
    signal: Arc<Signal>,
    /// `signal` as the waker of its smoltcp sockets.
    waker: core::task::Waker,
}

/// A bound port of one stack and protocol.
struct PortEntry {
    stack: usize,
    kind: Kind,
    port: u16,
    reuse_port: bool,
    users: usize,
}

static PORTS: Mutex<Vec<PortEntry>> = Mutex::new(Vec::new());

fn stack_id(stack: &Stack) -> usize {
    stack as *const Stack as usize
}

/// Takes `port` (0: a free ephemeral one) for `kind` on `stack`.
fn register_port(stack: &Stack, kind: Kind, port: u16, reuse_port: bool) -> Result<u16, Errno> {
    let id = stack_id(stack);
    let mut ports = PORTS.lock();
    let taken = |ports: &Vec<PortEntry>, port: u16| {
        ports
            .iter()
            .find(|entry| entry.stack == id && entry.kind == kind && entry.port == port)
            .map(|entry| entry.reuse_port)
    };
    if port != 0 {
        return match taken(&ports, port) {
            None => {
                ports.push(PortEntry {
                    stack: id,
                    kind,
                    port,
                    reuse_port,
                    users: 1,
                });
                Ok(port)
            }
            Some(true) if reuse_port => {
                if let Some(entry) = ports
                    .iter_mut()
                    .find(|entry| entry.stack == id && entry.kind == kind && entry.port == port)
                {
                    entry.users += 1;
                }
                Ok(port)
            }
            Some(_) => Err(Errno::EADDRINUSE),
        };
    }
    let span = u32::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
    let start = (time::random_u64() % u64::from(span)) as u32;
    for offset in 0..span {
        let candidate = EPHEMERAL.start() + ((start + offset) % span) as u16;
        if taken(&ports, candidate).is_none() {
            ports.push(PortEntry {
                stack: id,
                kind,
                port: candidate,
                reuse_port,
                users: 1,
            });
            return Ok(candidate);
        }
    }
    Err(Errno::EADDRINUSE)
}

fn unregister_port(stack: &Stack, kind: Kind, port: u16) {
    let id = stack_id(stack);
    let mut ports = PORTS.lock();
    if let Some(index) = ports
        .iter()
        .position(|entry| entry.stack == id && entry.kind == kind && entry.port == port)
    {
        ports[index].users -= 1;
        if ports[index].users == 0 {
            ports.swap_remove(index);
        }
    }
}

/// Whether `ip` may be bound on the interface (unspecified, or one of its
/// addresses, or loopback when it has a loopback address).
fn local_address_ok(inner: &StackInner, ip: Ipv4Address) -> bool {
    ip.is_unspecified()
        || inner.iface.has_ip_addr(IpAddress::Ipv4(ip))
        || (ip.is_loopback()
            && inner
                .iface
                .ip_addrs()
                .iter()
                .any(|cidr| match cidr.address() {
                    IpAddress::Ipv4(address) => address.is_loopback(),
                }))
}

/// A deadline `timeout` from now (None: forever).
fn deadline_after(timeout: Option<u64>) -> Option<u64> {
    timeout.map(|timeout| time::now_ns().saturating_add(timeout))
}

/// What an interrupted wait returns: a restart without a timeout, `EINTR`
/// with one (Linux's `sock_intr_errno`).
fn interrupted(timeout: Option<u64>) -> Errno {
    if timeout.is_some() {
        Errno::EINTR
    } else {
        Errno::ERESTARTSYS
    }
}

/// How an attempt of a blocking call went.
enum Attempt<T> {
    Done(T),
    /// Not yet: wait for the next poll of the interface.
    Wait,
}

impl Socket {
    /// A new socket of `kind` on `stack`.
    pub fn new(stack: StackRef, kind: Kind) -> Arc<Socket> {
        let signal = Arc::new(Signal::batched(stack.stack().batch()));
        Arc::new(Socket {
            stack,
            kind,
            waker: core::task::Waker::from(Arc::clone(&signal)),
            signal,
            state: Mutex::new(State {
                options: Options::default(),
                local: None,
                registered: None,
                error: None,
                shut_rd: false,
                shut_wr: false,
                tcp: tcp::Phase::Idle,
                udp: udp::Udp::default(),
            }),
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn stack(&self) -> &Stack {
        self.stack.stack()
    }

    /// Runs `body` with the stack and the socket state locked.
    fn with<R>(&self, body: impl FnOnce(&mut StackInner, &mut State) -> R) -> R {
        let mut inner = self.stack().lock();
        let mut state = self.state.lock();
        body(&mut inner, &mut state)
    }

    /// `with` for a change of the socket's setup: its waiters are woken
    /// (still under the stack lock) to look again.
    fn change<R>(&self, body: impl FnOnce(&mut StackInner, &mut State) -> R) -> R {
        self.with(|inner, state| {
            let result = body(inner, state);
            self.signal.notify();
            result
        })
    }

    /// Puts `watch` on this socket's signal and registers the signal as
    /// the waker of its smoltcp sockets (`inner`: its stack, locked since
    /// the caller's check).
    pub fn arm(&self, inner: &mut StackInner, watch: &mut Watch) {
        let state = self.state.lock();
        match self.kind {
            Kind::Tcp => tcp::register(inner, &state, &self.waker),
            Kind::Udp => udp::register(inner, &state, &self.waker),
        }
        watch.add(&self.signal);
    }

    /// Runs `attempt` until it is done, sleeping between polls of the
    /// interface: `EAGAIN` at once when `nonblocking`, `timeout_error` once
    /// `timeout` (ns) has passed, `ERESTARTSYS`/`EINTR` when interrupted.
    /// Kicks the stack afterwards when `kick`.
    fn block<T>(
        &self,
        nonblocking: bool,
        timeout: Option<u64>,
        timeout_error: Errno,
        kick: bool,
        mut attempt: impl FnMut(&mut StackInner, &mut State) -> Result<Attempt<T>, Errno>,
    ) -> Result<T, Errno> {
        let stack = self.stack();
        let deadline = deadline_after(timeout);
        let mut watch = None;
        let mut inner = stack.lock();
        let result = loop {
            let outcome = {
                let mut state = self.state.lock();
                attempt(&mut inner, &mut state)
            };
            match outcome {
                Ok(Attempt::Done(value)) => break Ok(value),
                Err(error) => break Err(error),
                Ok(Attempt::Wait) if nonblocking => break Err(Errno::EAGAIN),
                Ok(Attempt::Wait) => {}
            }
            if deadline.is_some_and(|deadline| time::now_ns() >= deadline) {
                break Err(timeout_error);
            }
            let watch = watch.get_or_insert_with(Watch::new);
            self.arm(&mut inner, watch);
            inner = match stack.wait(inner, watch, deadline) {
                Ok(inner) => inner,
                Err(Errno::ENETDOWN) => return Err(Errno::ENETDOWN),
                Err(_) => {
                    if kick {
                        stack.kick();
                    }
                    return Err(interrupted(timeout));
                }
            };
        };
        drop(inner);
        if kick {
            stack.kick();
        }
        result
    }

    /// Binds to `address` (port 0: an ephemeral port).
    pub fn bind(&self, address: SockAddr) -> Result<(), Errno> {
        self.change(|inner, state| {
            if state.local.is_some() || !matches!(state.tcp, tcp::Phase::Idle) {
                return Err(Errno::EINVAL);
            }
            if !local_address_ok(inner, address.ip) {
                return Err(Errno::EADDRNOTAVAIL);
            }
            let port = register_port(
                self.stack(),
                self.kind,
                address.port,
                state.options.reuse_port,
            )?;
            state.registered = Some(port);
            state.local = Some(SockAddr {
                ip: address.ip,
                port,
            });
            if self.kind == Kind::Udp {
                udp::open(inner, state)?;
            }
            Ok(())
        })
    }

    /// Binds a datagram socket (an ephemeral port unless bound) and makes
    /// its smoltcp socket, unless made; that is a change (`change`).
    fn open_udp(&self) -> Result<(), Errno> {
        self.with(|inner, state| {
            if state.udp.handle.is_some() {
                return Ok(());
            }
            self.autobind(state)?;
            let result = udp::open(inner, state);
            self.signal.notify();
            result
        })
    }

    /// Binds to an ephemeral port on any address unless bound.
    fn autobind(&self, state: &mut State) -> Result<SockAddr, Errno> {
        if let Some(local) = state.local {
            return Ok(local);
        }
        let port = register_port(self.stack(), self.kind, 0, false)?;
        state.registered = Some(port);
        let local = SockAddr {
            ip: Ipv4Address::UNSPECIFIED,
            port,
        };
        state.local = Some(local);
        Ok(local)
    }

    /// The bound or connected local address (`getsockname`).
    pub fn local_addr(&self) -> SockAddr {
        self.with(|inner, state| match self.kind {
            Kind::Tcp => tcp::local_addr(inner, state),
            Kind::Udp => state.local.unwrap_or(SockAddr::UNSPECIFIED),
        })
    }

    /// The peer (`getpeername`; `ENOTCONN` when there is none).
    pub fn peer_addr(&self) -> Result<SockAddr, Errno> {
        self.with(|inner, state| match self.kind {
            Kind::Tcp => tcp::peer_addr(inner, state),
            Kind::Udp => state.udp.peer.ok_or(Errno::ENOTCONN),
        })
    }

    /// Readiness: `POLLIN`, `POLLOUT`, `POLLERR`, `POLLHUP`, `POLLRDHUP`.
    pub fn poll_events(&self) -> u16 {
        let mut inner = self.stack().lock();
        self.poll_events_in(&mut inner)
    }

    /// Readiness, with the stack (this socket's) already locked.
    pub fn poll_events_in(&self, inner: &mut StackInner) -> u16 {
        let mut state = self.state.lock();
        let events = match self.kind {
            Kind::Tcp => tcp::poll_events(inner, &mut state),
            Kind::Udp => udp::poll_events(inner, &mut state),
        };
        let mut extra = 0;
        if events & POLLIN != 0 {
            extra |= POLLRDNORM;
        }
        if events & POLLOUT != 0 {
            extra |= POLLWRNORM;
        }
        events | extra
    }

    /// Bytes that a `recv` would return now (`FIONREAD`).
    pub fn pending_bytes(&self) -> usize {
        self.with(|inner, state| match self.kind {
            Kind::Tcp => tcp::pending_bytes(inner, state),
            Kind::Udp => udp::pending_bytes(inner, state),
        })
    }

    /// Sends from `data` (to `to` for an unconnected datagram socket).
    /// A stream socket queues what fits once there is room (a partial
    /// transfer); a datagram is sent whole. `EPIPE` once the sending half
    /// is shut (the caller raises `SIGPIPE`).
    pub fn send(
        &self,
        data: &[u8],
        to: Option<SockAddr>,
        flags: u32,
        nonblocking: bool,
    ) -> Result<usize, Errno> {
        let nonblocking = nonblocking || flags & MSG_DONTWAIT != 0;
        let timeout = self.with(|_, state| state.options.sndtimeo);
        match self.kind {
            Kind::Tcp => self.block(nonblocking, timeout, Errno::EAGAIN, true, |inner, state| {
                tcp::send(inner, state, data)
            }),
            Kind::Udp => {
                if to.is_none() && !self.with(|_, state| state.udp.peer.is_some()) {
                    return Err(Errno::EDESTADDRREQ);
                }
                self.open_udp()?;
                self.block(nonblocking, timeout, Errno::EAGAIN, true, |inner, state| {
                    udp::send(inner, state, data, to, flags)
                })
            }
        }
    }

    /// Receives into `buffer`: returns the bytes received (a datagram's
    /// full length with `MSG_TRUNC`) and the sender. 0 at end of stream.
    pub fn recv(
        &self,
        buffer: &mut [u8],
        flags: u32,
        nonblocking: bool,
    ) -> Result<(usize, Option<SockAddr>), Errno> {
        let nonblocking = nonblocking || flags & MSG_DONTWAIT != 0;
        let timeout = self.with(|_, state| state.options.rcvtimeo);
        match self.kind {
            Kind::Tcp => {
                let mut got = 0;
                let result =
                    self.block(nonblocking, timeout, Errno::EAGAIN, true, |inner, state| {
                        tcp::recv(inner, state, buffer, &mut got, flags)
                    });
                match result {
                    Ok(count) => Ok((count, None)),
                    // MSG_WAITALL: what came before the interruption.
                    Err(_) if got > 0 => Ok((got, None)),
                    Err(error) => Err(error),
                }
            }
            Kind::Udp => {
                self.open_udp()?;
                self.block(nonblocking, timeout, Errno::EAGAIN, true, |inner, state| {
                    udp::recv(inner, state, buffer, flags)
                })
                .map(|(length, from)| (length, Some(from)))
            }
        }
    }

    /// Shuts down the receiving (`SHUT_RD`), sending (`SHUT_WR`: FIN) or
    /// both halves.
    pub fn shutdown(&self, how: u32) -> Result<(), Errno> {
        if how > SHUT_RDWR {
            return Err(Errno::EINVAL);
        }
        let result = self.change(|inner, state| match self.kind {
            Kind::Tcp => tcp::shutdown(inner, state, how),
            Kind::Udp => {
                if state.udp.peer.is_none() {
                    return Err(Errno::ENOTCONN);
                }
                state.shut_rd |= how != SHUT_WR;
                state.shut_wr |= how != SHUT_RD;
                Ok(())
            }
        });
        self.stack().kick();
        result
    }

    /// Sets an option from its bytes.
    pub fn setsockopt(&self, level: u32, name: u32, value: &[u8]) -> Result<(), Errno> {
        let int = || -> Result<i32, Errno> {
            if value.len() < 4 {
                return Err(Errno::EINVAL);
            }
            Ok(i32::from_le_bytes([value[0], value[1], value[2], value[3]]))
        };
        let timeval = || -> Result<Option<u64>, Errno> {
            if value.len() < 16 {
                return Err(Errno::EINVAL);
            }
            let seconds = i64::from_le_bytes(value[..8].try_into().map_err(|_| Errno::EINVAL)?);
            let micros = i64::from_le_bytes(value[8..16].try_into().map_err(|_| Errno::EINVAL)?);
            if !(0..1_000_000).contains(&micros) {
                return Err(Errno::EDOM);
            }
            if seconds < 0 || (seconds == 0 && micros == 0) {
                return Ok(None);
            }
            Ok(Some(
                (seconds as u64)
                    .saturating_mul(1_000_000_000)
                    .saturating_add(micros as u64 * 1_000),
            ))
        };
        use opt::*;
        let result = self.change(|inner, state| {
            let options = &mut state.options;
            match (level, name) {
                (SOL_SOCKET, SO_REUSEADDR) => options.reuse_addr = int()? != 0,
                (SOL_SOCKET, SO_REUSEPORT) => options.reuse_port = int()? != 0,
                (SOL_SOCKET, SO_BROADCAST) => options.broadcast = int()? != 0,
                (SOL_SOCKET, SO_KEEPALIVE) => options.keepalive = int()? != 0,
                (SOL_SOCKET, SO_RCVBUF) => {
                    options.rcvbuf = (int()?.max(0) as usize * 2).clamp(MIN_BUFFER, MAX_BUFFER)
                }
                (SOL_SOCKET, SO_SNDBUF) => {
                    options.sndbuf = (int()?.max(0) as usize * 2).clamp(MIN_BUFFER, MAX_BUFFER)
                }
                (SOL_SOCKET, SO_RCVTIMEO) => options.rcvtimeo = timeval()?,
                (SOL_SOCKET, SO_SNDTIMEO) => options.sndtimeo = timeval()?,
                (SOL_SOCKET, SO_LINGER | SO_OOBINLINE | SO_DONTROUTE) => {
                    int()?;
                }
                (SOL_SOCKET, SO_RCVLOWAT | SO_SNDLOWAT) => {
                    int()?;
                }
                (IPPROTO_IP, IP_TTL) => {
                    let ttl = int()?;
                    options.ttl = match ttl {
                        -1 => 64,
                        1..=255 => ttl as u8,
                        _ => return Err(Errno::EINVAL),
                    }
                }
                (IPPROTO_IP, IP_TOS) => options.tos = int()? as u8,
                (IPPROTO_TCP, TCP_NODELAY) if self.kind == Kind::Tcp => {
                    options.nodelay = int()? != 0
                }
                (IPPROTO_TCP, TCP_MAXSEG | TCP_KEEPIDLE | TCP_KEEPINTVL | TCP_KEEPCNT)
                    if self.kind == Kind::Tcp =>
                {
                    if int()? < 1 {
                        return Err(Errno::EINVAL);
                    }
                }
                (SOL_SOCKET | IPPROTO_IP | IPPROTO_TCP | IPPROTO_UDP, _) => {
                    return Err(Errno::ENOPROTOOPT);
                }
                _ => return Err(Errno::ENOPROTOOPT),
            }
            let options = state.options;
            match self.kind {
                Kind::Tcp => tcp::apply_options(inner, state, &options),
                Kind::Udp => udp::apply_options(inner, state, &options),
            }
            Ok(())
        });
        self.stack().kick();
        result
    }

    /// An option's value, as the bytes Linux gives (an int, a timeval or
    /// a linger).
    pub fn getsockopt(&self, level: u32, name: u32) -> Result<Vec<u8>, Errno> {
        use opt::*;
        let int = |value: i32| Ok(value.to_le_bytes().to_vec());
        let timeval = |value: Option<u64>| {
            let value = value.unwrap_or(0);
            let mut bytes = (value / 1_000_000_000).to_le_bytes().to_vec();
            bytes.extend_from_slice(&((value % 1_000_000_000) / 1_000).to_le_bytes());
            Ok(bytes)
        };
        self.with(|inner, state| {
            let options = state.options;
            match (level, name) {
                (SOL_SOCKET, SO_TYPE) => int(match self.kind {
                    Kind::Tcp => SOCK_STREAM as i32,
                    Kind::Udp => SOCK_DGRAM as i32,
                }),
                (SOL_SOCKET, SO_PROTOCOL) => int(match self.kind {
                    Kind::Tcp => IPPROTO_TCP as i32,
                    Kind::Udp => IPPROTO_UDP as i32,
                }),
                (SOL_SOCKET, SO_DOMAIN) => int(i32::from(AF_INET)),
                (SOL_SOCKET, SO_ERROR) => {
                    if self.kind == Kind::Tcp {
                        tcp::refresh(inner, state);
                    }
                    int(state.error.take().map_or(0, Errno::code))
                }
                (SOL_SOCKET, SO_REUSEADDR) => int(options.reuse_addr as i32),
                (SOL_SOCKET, SO_REUSEPORT) => int(options.reuse_port as i32),
                (SOL_SOCKET, SO_BROADCAST) => int(options.broadcast as i32),
                (SOL_SOCKET, SO_KEEPALIVE) => int(options.keepalive as i32),
                (SOL_SOCKET, SO_RCVBUF) => int(options.rcvbuf as i32),
                (SOL_SOCKET, SO_SNDBUF) => int(options.sndbuf as i32),
                (SOL_SOCKET, SO_RCVTIMEO) => timeval(options.rcvtimeo),
                (SOL_SOCKET, SO_SNDTIMEO) => timeval(options.sndtimeo),
                (SOL_SOCKET, SO_ACCEPTCONN) => {
                    int(matches!(state.tcp, tcp::Phase::Listening { .. }) as i32)
                }
                (SOL_SOCKET, SO_LINGER) => Ok(alloc::vec![0; 8]),
                (SOL_SOCKET, SO_OOBINLINE | SO_DONTROUTE) => int(0),
                (SOL_SOCKET, SO_RCVLOWAT | SO_SNDLOWAT) => int(1),
                (IPPROTO_IP, IP_TTL) => int(i32::from(options.ttl)),
                (IPPROTO_IP, IP_TOS) => int(i32::from(options.tos)),
                (IPPROTO_TCP, TCP_NODELAY) if self.kind == Kind::Tcp => int(options.nodelay as i32),
                (IPPROTO_TCP, TCP_MAXSEG) if self.kind == Kind::Tcp => int(tcp::MSS as i32),
                (IPPROTO_TCP, TCP_KEEPIDLE) if self.kind == Kind::Tcp => int(7200),
                (IPPROTO_TCP, TCP_KEEPINTVL) if self.kind == Kind::Tcp => int(75),
                (IPPROTO_TCP, TCP_KEEPCNT) if self.kind == Kind::Tcp => int(9),
                _ => Err(Errno::ENOPROTOOPT),
            }
        })
    }

    /// Listens with a backlog of `backlog` pending connections.
    pub fn listen(&self, backlog: i32) -> Result<(), Errno> {
        if self.kind != Kind::Tcp {
            return Err(Errno::EOPNOTSUPP);
        }
        let result = self.change(|inner, state| {
            self.autobind(state)?;
            tcp::listen(inner, state, backlog)
        });
        self.stack().kick();
        result
    }

    /// Takes a pending connection: the new socket and its peer.
    pub fn accept(&self, nonblocking: bool) -> Result<(Arc<Socket>, SockAddr), Errno> {
        if self.kind != Kind::Tcp {
            return Err(Errno::EOPNOTSUPP);
        }
        let timeout = self.with(|_, state| state.options.rcvtimeo);
        let (handle, local, peer, options) =
            self.block(nonblocking, timeout, Errno::EAGAIN, true, |inner, state| {
                let attempt = tcp::accept(inner, state);
                if let Ok(Attempt::Done(_)) = attempt {
                    // A fresh listener took the slot: other callers arm it.
                    self.signal.notify();
                }
                attempt
            })?;
        let socket = Socket::new(self.stack.clone_ref(), Kind::Tcp);
        {
            let mut state = socket.state.lock();
            state.options = options;
            state.local = Some(local);
            state.tcp = tcp::Phase::connected(handle);
        }
        Ok((socket, peer))
    }

    /// `connect(AF_UNSPEC)`: a datagram socket forgets its peer; a stream
    /// socket drops its connection or listeners (`tcp::disconnect`).
    pub fn disconnect(&self) {
        match self.kind {
            Kind::Udp => self.change(|_, state| state.udp.peer = None),
            Kind::Tcp => {
                self.change(tcp::disconnect);
                self.stack().kick();
            }
        }
    }

    /// Connects to `address`: a stream socket waits for the handshake
    /// (`EINPROGRESS` when non-blocking); a datagram socket sets its peer.
    pub fn connect(&self, address: SockAddr, nonblocking: bool) -> Result<(), Errno> {
        match self.kind {
            Kind::Udp => self.change(|inner, state| {
                self.autobind(state)?;
                udp::open(inner, state)?;
                state.udp.peer = Some(address);
                Ok(())
            }),
            Kind::Tcp => {
                let step = self.change(|inner, state| {
                    let local = self.autobind(state)?;
                    tcp::connect(inner, state, local, address, nonblocking)
                });
                self.stack().kick();
                match step? {
                    tcp::Connect::Reported => return Ok(()),
                    tcp::Connect::Started if nonblocking => return Err(Errno::EINPROGRESS),
                    tcp::Connect::Started | tcp::Connect::Waiting => {}
                }
                let timeout = self.with(|_, state| state.options.sndtimeo);
                let capped = timeout.unwrap_or(tcp::CONNECT_TIMEOUT_NS);
                let result = self.block(
                    false,
                    Some(capped),
                    Errno::ETIMEDOUT,
                    false,
                    tcp::connect_finished,
                );
                match result {
                    Err(Errno::ETIMEDOUT) if timeout.is_some() => Err(Errno::EINPROGRESS),
                    Err(Errno::ETIMEDOUT) => {
                        self.change(tcp::abort_connect);
                        self.stack().kick();
                        Err(Errno::ETIMEDOUT)
                    }
                    Err(Errno::EINTR) if timeout.is_none() => Err(Errno::ERESTARTSYS),
                    other => other,
                }
            }
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let stack = self.stack.stack();
        {
            let mut inner = stack.lock();
            let mut state = self.state.lock();
            match self.kind {
                Kind::Tcp => tcp::close(&mut inner, &mut state),
                Kind::Udp => udp::close(&mut inner, &mut state),
            }
            if let Some(port) = state.registered.take() {
                unregister_port(stack, self.kind, port);
            }
        }
        stack.kick();
    }
}
