//! UDP sockets: one smoltcp UDP socket bound to the socket's port (created
//! at bind, or at the first send, receive or connect, which bind an
//! ephemeral port), and an optional peer set by `connect` (the default
//! destination, and the only source datagrams are taken from).
//!
//! Every function runs with the stack and the socket state locked (see
//! `super`); none sleeps, none polls the interface.

use core::task::Waker;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::wire::Ipv4Address;

use super::{
    Attempt, MSG_DONTROUTE, MSG_PEEK, MSG_TRUNC, Options, POLLERR, POLLIN, POLLOUT, SockAddr, State,
};
use crate::errno::Errno;
use crate::net::StackInner;

/// Datagrams queued per direction.
const PACKETS: usize = 64;
/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

#[derive(Default)]
pub struct Udp {
    pub handle: Option<SocketHandle>,
    /// Set by `connect`.
    pub peer: Option<SockAddr>,
}

fn buffer(bytes: usize) -> udp::PacketBuffer<'static> {
    udp::PacketBuffer::new(
        alloc::vec![udp::PacketMetadata::EMPTY; PACKETS],
        alloc::vec![0u8; bytes.max(MAX_DATAGRAM)],
    )
}

/// Creates the smoltcp socket on the bound address, unless there is one.
pub fn open(inner: &mut StackInner, state: &mut State) -> Result<(), Errno> {
    if state.udp.handle.is_some() {
        return Ok(());
    }
    let local = state.local.ok_or(Errno::EINVAL)?;
    super::reserve(
        state.options.rcvbuf.max(MAX_DATAGRAM) + state.options.sndbuf.max(MAX_DATAGRAM),
    )?;
    let mut socket = udp::Socket::new(buffer(state.options.rcvbuf), buffer(state.options.sndbuf));
    socket
        .bind(local.listen_endpoint())
        .map_err(|_| Errno::EINVAL)?;
    socket.set_hop_limit(Some(state.options.ttl));
    state.udp.handle = Some(inner.sockets.add(socket));
    Ok(())
}

pub fn send(
    inner: &mut StackInner,
    state: &mut State,
    data: &[u8],
    to: Option<SockAddr>,
    flags: u32,
) -> Result<Attempt<usize>, Errno> {
    if state.shut_wr {
        return Err(Errno::EPIPE);
    }
    let mut destination = to.or(state.udp.peer).ok_or(Errno::EDESTADDRREQ)?;
    if destination.ip.is_unspecified() {
        destination.ip = Ipv4Address::new(127, 0, 0, 1);
    }
    if destination.port == 0 {
        return Err(Errno::EINVAL);
    }
    if !super::addr::routable(inner, destination.ip, flags & MSG_DONTROUTE != 0) {
        return Err(Errno::ENETUNREACH);
    }
    let handle = state.udp.handle.ok_or(Errno::EINVAL)?;
    let socket = inner.sockets.get_mut::<udp::Socket>(handle);
    if data.len() > MAX_DATAGRAM || data.len() > socket.payload_send_capacity() {
        return Err(Errno::EMSGSIZE);
    }
    match socket.send_slice(data, destination.endpoint()) {
        Ok(()) => Ok(Attempt::Done(data.len())),
        Err(udp::SendError::BufferFull) => Ok(Attempt::Wait),
        Err(udp::SendError::Unaddressable) => Err(Errno::ENETUNREACH),
    }
}

/// Takes one datagram (from the peer, when connected) into `buffer`:
/// the bytes copied (its whole length with `MSG_TRUNC`) and its sender.
pub fn recv(
    inner: &mut StackInner,
    state: &mut State,
    buffer: &mut [u8],
    flags: u32,
) -> Result<Attempt<(usize, SockAddr)>, Errno> {
    if state.shut_rd {
        return Ok(Attempt::Done((0, SockAddr::UNSPECIFIED)));
    }
    let handle = state.udp.handle.ok_or(Errno::EINVAL)?;
    let socket = inner.sockets.get_mut::<udp::Socket>(handle);
    loop {
        let (length, from) = match socket.peek() {
            Ok((payload, meta)) => (payload.len(), SockAddr::from_endpoint(meta.endpoint)),
            Err(_) => return Ok(Attempt::Wait),
        };
        if state.udp.peer.is_some_and(|peer| peer != from) {
            let _ = socket.recv();
            continue;
        }
        let copied = length.min(buffer.len());
        if flags & MSG_PEEK != 0 {
            if let Ok((payload, _)) = socket.peek() {
                buffer[..copied].copy_from_slice(&payload[..copied]);
            }
        } else if let Ok((payload, _)) = socket.recv() {
            buffer[..copied].copy_from_slice(&payload[..copied]);
        }
        let reported = if flags & MSG_TRUNC != 0 {
            length
        } else {
            copied
        };
        return Ok(Attempt::Done((reported, from)));
    }
}

pub fn poll_events(inner: &mut StackInner, state: &mut State) -> u16 {
    let mut events = if state.error.is_some() { POLLERR } else { 0 };
    if state.shut_rd {
        events |= POLLIN;
    }
    match state.udp.handle {
        None => events | POLLOUT,
        Some(handle) => {
            let socket = inner.sockets.get::<udp::Socket>(handle);
            if socket.can_recv() {
                events |= POLLIN;
            }
            if socket.can_send() {
                events |= POLLOUT;
            }
            events
        }
    }
}

/// Registers `waker` for both directions of the smoltcp socket, if any.
pub fn register(inner: &mut StackInner, state: &State, waker: &Waker) {
    if let Some(handle) = state.udp.handle {
        let socket = inner.sockets.get_mut::<udp::Socket>(handle);
        socket.register_recv_waker(waker);
        socket.register_send_waker(waker);
    }
}

/// The size of the next datagram.
pub fn pending_bytes(inner: &mut StackInner, state: &mut State) -> usize {
    match state.udp.handle {
        Some(handle) => inner
            .sockets
            .get_mut::<udp::Socket>(handle)
            .peek()
            .map_or(0, |(payload, _)| payload.len()),
        None => 0,
    }
}

pub fn close(inner: &mut StackInner, state: &mut State) {
    if let Some(handle) = state.udp.handle.take() {
        inner.sockets.remove(handle);
    }
}

pub fn apply_options(inner: &mut StackInner, state: &mut State, options: &Options) {
    if let Some(handle) = state.udp.handle {
        inner
            .sockets
            .get_mut::<udp::Socket>(handle)
            .set_hop_limit(Some(options.ttl));
    }
}
