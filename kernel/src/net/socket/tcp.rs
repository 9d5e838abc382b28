//! TCP sockets: phases (idle, listening with a backlog of smoltcp
//! listeners, connecting, connected, failed) and the operations on them.
//!
//! Every function runs with the stack and the socket state locked (see
//! `super`); none sleeps, none polls the interface. A listening socket is
//! several smoltcp sockets listening on the same port (one per backlog
//! slot, at most `MAX_BACKLOG`); `accept` takes an established one and
//! puts a fresh listener in its place.

use alloc::vec::Vec;
use core::task::Waker;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, RecvError, State as TcpState};
use smoltcp::time::Duration;
use smoltcp::wire::Ipv4Address;

use super::{
    Attempt, MSG_PEEK, MSG_WAITALL, Options, POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDHUP, SHUT_RD,
    SHUT_WR, SockAddr, State,
};
use crate::errno::Errno;
use crate::net::StackInner;

/// What `TCP_MAXSEG` reports.
pub const MSS: usize = 1460;
/// How long a blocking `connect` waits for the handshake without
/// `SO_SNDTIMEO` (Linux gives up after about as long).
pub const CONNECT_TIMEOUT_NS: u64 = 75_000_000_000;
/// The most listening smoltcp sockets (pending connections) per port.
pub const MAX_BACKLOG: usize = 8;
/// Keep-alive interval with `SO_KEEPALIVE`.
const KEEPALIVE: Duration = Duration::from_secs(75);

pub enum Phase {
    Idle,
    Listening {
        handles: Vec<SocketHandle>,
    },
    Connecting {
        handle: SocketHandle,
    },
    Connected {
        handle: SocketHandle,
        /// A reset was reported to `recv` once (later calls see EOF).
        reset_reported: bool,
        /// A `connect` call has seen the connection established (Linux's
        /// `SS_CONNECTED`): after a non-blocking connect, the next
        /// `connect` reports success once, later ones `EISCONN`.
        announced: bool,
    },
    /// The last `connect` failed (its error is in `State::error`).
    Failed,
}

impl Phase {
    pub fn connected(handle: SocketHandle) -> Phase {
        Phase::Connected {
            handle,
            reset_reported: false,
            announced: true,
        }
    }
}

/// What a `connect` call found or did.
pub enum Connect {
    /// A new attempt started (the SYN is queued).
    Started,
    /// An attempt is under way: a blocking call waits for it.
    Waiting,
    /// A non-blocking attempt completed: reported as success now.
    Reported,
}

/// The receiving half of a connection.
#[derive(PartialEq, Eq)]
enum Rx {
    Open,
    /// The peer's FIN came.
    Finished,
    /// Closed without a FIN: reset.
    Reset,
}

fn rx_state(socket: &mut tcp::Socket) -> Rx {
    // The peer's FIN came (bytes before it may still wait to be read).
    if matches!(
        socket.state(),
        TcpState::CloseWait | TcpState::LastAck | TcpState::Closing | TcpState::TimeWait
    ) {
        return Rx::Finished;
    }
    match socket.peek(0) {
        Ok(_) => Rx::Open,
        Err(RecvError::Finished) => Rx::Finished,
        Err(RecvError::InvalidState) => Rx::Reset,
    }
}

fn new_socket(options: &Options) -> Result<tcp::Socket<'static>, Errno> {
    super::reserve(options.rcvbuf + options.sndbuf)?;
    let rx = tcp::SocketBuffer::new(alloc::vec![0u8; options.rcvbuf]);
    let tx = tcp::SocketBuffer::new(alloc::vec![0u8; options.sndbuf]);
    let mut socket = tcp::Socket::new(rx, tx);
    configure(&mut socket, options);
    Ok(socket)
}

fn configure(socket: &mut tcp::Socket, options: &Options) {
    socket.set_nagle_enabled(!options.nodelay);
    socket.set_keep_alive(options.keepalive.then_some(KEEPALIVE));
    socket.set_hop_limit(Some(options.ttl));
}

fn listener(
    inner: &mut StackInner,
    local: SockAddr,
    options: &Options,
) -> Result<SocketHandle, Errno> {
    let mut socket = new_socket(options)?;
    socket
        .listen(local.listen_endpoint())
        .map_err(|_| Errno::EINVAL)?;
    Ok(inner.sockets.add(socket))
}

/// Moves a connecting socket on once its handshake ended.
pub fn refresh(inner: &mut StackInner, state: &mut State) {
    if let Phase::Connecting { handle } = state.tcp {
        match inner.sockets.get::<tcp::Socket>(handle).state() {
            TcpState::SynSent | TcpState::SynReceived => {}
            TcpState::Closed => {
                inner.sockets.remove(handle);
                state.tcp = Phase::Failed;
                state.error = Some(Errno::ECONNREFUSED);
            }
            _ => {
                state.tcp = Phase::Connected {
                    handle,
                    reset_reported: false,
                    announced: false,
                }
            }
        }
    }
}

/// `connect` as Linux's `__inet_stream_connect`: an attempt under way is
/// waited for by a blocking call (a restarted one) and `EALREADY` for a
/// non-blocking one; an unroutable peer is `ENETUNREACH`.
pub fn connect(
    inner: &mut StackInner,
    state: &mut State,
    local: SockAddr,
    mut remote: SockAddr,
    nonblocking: bool,
) -> Result<Connect, Errno> {
    refresh(inner, state);
    match &mut state.tcp {
        Phase::Connected { announced, .. } if !*announced => {
            *announced = true;
            return Ok(Connect::Reported);
        }
        Phase::Connected { .. } | Phase::Listening { .. } => return Err(Errno::EISCONN),
        Phase::Connecting { .. } if nonblocking => return Err(Errno::EALREADY),
        Phase::Connecting { .. } => return Ok(Connect::Waiting),
        Phase::Idle | Phase::Failed => {}
    }
    if remote.ip.is_unspecified() {
        remote.ip = Ipv4Address::new(127, 0, 0, 1);
    }
    if remote.port == 0 {
        return Err(Errno::ECONNREFUSED);
    }
    if !super::addr::routable(inner, remote.ip, false) {
        return Err(Errno::ENETUNREACH);
    }
    let mut socket = new_socket(&state.options)?;
    socket
        .connect(
            inner.iface.context(),
            remote.endpoint(),
            local.listen_endpoint(),
        )
        .map_err(|error| match error {
            tcp::ConnectError::InvalidState => Errno::EISCONN,
            tcp::ConnectError::Unaddressable => Errno::ENETUNREACH,
        })?;
    let handle = inner.sockets.add(socket);
    state.tcp = Phase::Connecting { handle };
    state.error = None;
    Ok(Connect::Started)
}

/// Whether the handshake of `connect` ended: `Err` with why it failed.
pub fn connect_finished(inner: &mut StackInner, state: &mut State) -> Result<Attempt<()>, Errno> {
    refresh(inner, state);
    match &mut state.tcp {
        Phase::Connected { announced, .. } => {
            *announced = true;
            Ok(Attempt::Done(()))
        }
        Phase::Connecting { .. } => Ok(Attempt::Wait),
        Phase::Failed => Err(state.error.take().unwrap_or(Errno::ECONNREFUSED)),
        Phase::Idle | Phase::Listening { .. } => Err(Errno::ENOTCONN),
    }
}

/// Gives up a connection attempt (its time ran out).
pub fn abort_connect(inner: &mut StackInner, state: &mut State) {
    if let Phase::Connecting { handle } = state.tcp {
        inner.sockets.get_mut::<tcp::Socket>(handle).abort();
        inner.release_tcp(handle);
        state.tcp = Phase::Failed;
        state.error = None;
    }
}

pub fn listen(inner: &mut StackInner, state: &mut State, backlog: i32) -> Result<(), Errno> {
    refresh(inner, state);
    match state.tcp {
        Phase::Listening { .. } => return Ok(()),
        Phase::Connected { .. } | Phase::Connecting { .. } => return Err(Errno::EINVAL),
        Phase::Idle | Phase::Failed => {}
    }
    let local = state.local.ok_or(Errno::EINVAL)?;
    let count = (backlog.max(1) as usize).min(MAX_BACKLOG);
    let mut handles = Vec::with_capacity(count);
    for _ in 0..count {
        match listener(inner, local, &state.options) {
            Ok(handle) => handles.push(handle),
            Err(error) => {
                for handle in handles {
                    inner.sockets.remove(handle);
                }
                return Err(error);
            }
        }
    }
    state.tcp = Phase::Listening { handles };
    state.error = None;
    Ok(())
}

/// Takes an established connection off the listener: its handle, local
/// and peer addresses, and the options it inherits.
pub fn accept(
    inner: &mut StackInner,
    state: &mut State,
) -> Result<Attempt<(SocketHandle, SockAddr, SockAddr, Options)>, Errno> {
    let options = state.options;
    let Some(local) = state.local else {
        return Err(Errno::EINVAL);
    };
    let Phase::Listening { handles } = &mut state.tcp else {
        return Err(Errno::EINVAL);
    };
    for slot in handles.iter_mut() {
        let socket = inner.sockets.get::<tcp::Socket>(*slot);
        match socket.state() {
            TcpState::Listen | TcpState::SynReceived => continue,
            TcpState::Closed => {
                // Reset before it was accepted: listen again in its place.
                let replacement = listener(inner, local, &options)?;
                inner.sockets.remove(*slot);
                *slot = replacement;
                continue;
            }
            _ => {}
        }
        let (Some(local_endpoint), Some(remote)) =
            (socket.local_endpoint(), socket.remote_endpoint())
        else {
            continue;
        };
        let replacement = listener(inner, local, &options)?;
        let handle = core::mem::replace(slot, replacement);
        return Ok(Attempt::Done((
            handle,
            SockAddr::from_endpoint(local_endpoint),
            SockAddr::from_endpoint(remote),
            options,
        )));
    }
    Ok(Attempt::Wait)
}

pub fn send(
    inner: &mut StackInner,
    state: &mut State,
    data: &[u8],
) -> Result<Attempt<usize>, Errno> {
    refresh(inner, state);
    let handle = match state.tcp {
        Phase::Connecting { .. } => return Ok(Attempt::Wait),
        Phase::Connected { handle, .. } => handle,
        _ => return Err(state.error.take().unwrap_or(Errno::EPIPE)),
    };
    if state.shut_wr {
        return Err(Errno::EPIPE);
    }
    let socket = inner.sockets.get_mut::<tcp::Socket>(handle);
    if !socket.may_send() {
        return Err(Errno::EPIPE);
    }
    if data.is_empty() {
        return Ok(Attempt::Done(0));
    }
    if !socket.can_send() {
        return Ok(Attempt::Wait);
    }
    match socket.send_slice(data) {
        Ok(0) => Ok(Attempt::Wait),
        Ok(count) => Ok(Attempt::Done(count)),
        Err(_) => Err(Errno::EPIPE),
    }
}

/// Receives into `buffer[*got..]`, adding to `*got`; done with what came
/// (all of it for `MSG_WAITALL`), at end of stream, or on a reset.
pub fn recv(
    inner: &mut StackInner,
    state: &mut State,
    buffer: &mut [u8],
    got: &mut usize,
    flags: u32,
) -> Result<Attempt<usize>, Errno> {
    refresh(inner, state);
    let (handle, reset_reported) = match &mut state.tcp {
        Phase::Connecting { .. } => return Ok(Attempt::Wait),
        Phase::Connected {
            handle,
            reset_reported,
            ..
        } => (*handle, reset_reported),
        _ => return Err(state.error.take().unwrap_or(Errno::ENOTCONN)),
    };
    if state.shut_rd || buffer.is_empty() {
        return Ok(Attempt::Done(*got));
    }
    let socket = inner.sockets.get_mut::<tcp::Socket>(handle);
    let peek = flags & MSG_PEEK != 0;
    let result = if peek {
        let room = &mut buffer[*got..];
        socket.peek(room.len()).map(|data| {
            room[..data.len()].copy_from_slice(data);
            data.len()
        })
    } else {
        socket.recv_slice(&mut buffer[*got..])
    };
    let rx = match result {
        Ok(count) => {
            *got += count;
            rx_state(socket)
        }
        Err(RecvError::Finished) => Rx::Finished,
        Err(RecvError::InvalidState) => Rx::Reset,
    };
    let wait_all = flags & MSG_WAITALL != 0 && !peek;
    if *got == buffer.len() || (*got > 0 && (!wait_all || rx != Rx::Open)) {
        return Ok(Attempt::Done(*got));
    }
    match rx {
        Rx::Open => Ok(Attempt::Wait),
        Rx::Finished => Ok(Attempt::Done(*got)),
        Rx::Reset if *reset_reported => Ok(Attempt::Done(0)),
        Rx::Reset => {
            *reset_reported = true;
            Err(Errno::ECONNRESET)
        }
    }
}

pub fn poll_events(inner: &mut StackInner, state: &mut State) -> u16 {
    refresh(inner, state);
    let error = if state.error.is_some() { POLLERR } else { 0 };
    match &state.tcp {
        Phase::Idle | Phase::Failed => POLLOUT | POLLHUP | error,
        Phase::Connecting { .. } => error,
        Phase::Listening { handles } => {
            let ready = handles.iter().any(|handle| {
                !matches!(
                    inner.sockets.get::<tcp::Socket>(*handle).state(),
                    TcpState::Listen | TcpState::SynReceived | TcpState::Closed
                )
            });
            if ready { POLLIN } else { 0 }
        }
        Phase::Connected { handle, .. } => {
            let socket = inner.sockets.get_mut::<tcp::Socket>(*handle);
            let mut events = error;
            let rx = rx_state(socket);
            if socket.can_recv() {
                events |= POLLIN;
            }
            let receive_down = state.shut_rd || rx != Rx::Open;
            if receive_down {
                events |= POLLIN | POLLRDHUP;
            }
            if rx == Rx::Reset && !socket.can_recv() {
                events |= POLLERR;
            }
            let closed = socket.state() == TcpState::Closed;
            if state.shut_wr || socket.can_send() || closed {
                events |= POLLOUT;
            }
            if closed || (receive_down && state.shut_wr) {
                events |= POLLHUP;
            }
            events
        }
    }
}

/// Registers `waker` for both directions of every smoltcp socket of the
/// socket (the listeners of a listening one).
pub fn register(inner: &mut StackInner, state: &State, waker: &Waker) {
    let handles: &[SocketHandle] = match &state.tcp {
        Phase::Listening { handles } => handles,
        Phase::Connecting { handle } | Phase::Connected { handle, .. } => {
            core::slice::from_ref(handle)
        }
        Phase::Idle | Phase::Failed => &[],
    };
    for handle in handles {
        let socket = inner.sockets.get_mut::<tcp::Socket>(*handle);
        socket.register_recv_waker(waker);
        socket.register_send_waker(waker);
    }
}

pub fn pending_bytes(inner: &mut StackInner, state: &mut State) -> usize {
    match state.tcp {
        Phase::Connected { handle, .. } => inner.sockets.get::<tcp::Socket>(handle).recv_queue(),
        _ => 0,
    }
}

pub fn shutdown(inner: &mut StackInner, state: &mut State, how: u32) -> Result<(), Errno> {
    refresh(inner, state);
    let Phase::Connected { handle, .. } = state.tcp else {
        return Err(Errno::ENOTCONN);
    };
    if how != SHUT_WR {
        state.shut_rd = true;
    }
    if how != SHUT_RD && !state.shut_wr {
        state.shut_wr = true;
        inner.sockets.get_mut::<tcp::Socket>(handle).close();
    }
    Ok(())
}

/// The last reference is gone: FIN, or RST when unread data remains (as
/// Linux does); the stack frees the smoltcp socket once it is closed.
/// Stops listening: the listeners still waiting go at once, the ones a
/// peer reached are reset.
fn stop_listening(inner: &mut StackInner, handles: Vec<SocketHandle>) {
    for handle in handles {
        let socket = inner.sockets.get_mut::<tcp::Socket>(handle);
        if socket.state() == TcpState::Listen {
            inner.sockets.remove(handle);
        } else {
            socket.abort();
            inner.release_tcp(handle);
        }
    }
}

/// `connect(AF_UNSPEC)` (Linux's `tcp_disconnect`): whatever the socket
/// was doing ends at once, a connection (or a connect under way) with a
/// reset reported by the next call (`ECONNRESET`), and the socket is
/// unconnected again: it may connect or listen anew.
pub fn disconnect(inner: &mut StackInner, state: &mut State) {
    state.error = None;
    match core::mem::replace(&mut state.tcp, Phase::Idle) {
        Phase::Listening { handles } => stop_listening(inner, handles),
        Phase::Connecting { handle } | Phase::Connected { handle, .. } => {
            inner.sockets.get_mut::<tcp::Socket>(handle).abort();
            inner.release_tcp(handle);
            state.error = Some(Errno::ECONNRESET);
        }
        Phase::Idle | Phase::Failed => {}
    }
}

pub fn close(inner: &mut StackInner, state: &mut State) {
    match core::mem::replace(&mut state.tcp, Phase::Idle) {
        Phase::Listening { handles } => stop_listening(inner, handles),
        Phase::Connecting { handle } => {
            inner.sockets.get_mut::<tcp::Socket>(handle).abort();
            inner.release_tcp(handle);
        }
        Phase::Connected { handle, .. } => {
            let socket = inner.sockets.get_mut::<tcp::Socket>(handle);
            if socket.recv_queue() > 0 {
                socket.abort();
            } else {
                socket.close();
            }
            inner.release_tcp(handle);
        }
        Phase::Idle | Phase::Failed => {}
    }
}

pub fn local_addr(inner: &mut StackInner, state: &mut State) -> SockAddr {
    let handle = match state.tcp {
        Phase::Connected { handle, .. } | Phase::Connecting { handle } => handle,
        _ => return state.local.unwrap_or(SockAddr::UNSPECIFIED),
    };
    inner
        .sockets
        .get::<tcp::Socket>(handle)
        .local_endpoint()
        .map(SockAddr::from_endpoint)
        .or(state.local)
        .unwrap_or(SockAddr::UNSPECIFIED)
}

pub fn peer_addr(inner: &mut StackInner, state: &mut State) -> Result<SockAddr, Errno> {
    refresh(inner, state);
    let Phase::Connected { handle, .. } = state.tcp else {
        return Err(Errno::ENOTCONN);
    };
    inner
        .sockets
        .get::<tcp::Socket>(handle)
        .remote_endpoint()
        .map(SockAddr::from_endpoint)
        .ok_or(Errno::ENOTCONN)
}

pub fn apply_options(inner: &mut StackInner, state: &mut State, options: &Options) {
    let handles: Vec<SocketHandle> = match &state.tcp {
        Phase::Listening { handles } => handles.clone(),
        Phase::Connecting { handle } | Phase::Connected { handle, .. } => alloc::vec![*handle],
        Phase::Idle | Phase::Failed => Vec::new(),
    };
    for handle in handles {
        configure(inner.sockets.get_mut::<tcp::Socket>(handle), options);
    }
}
