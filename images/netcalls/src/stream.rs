//! One TCP connection at a time through the listener: names, options,
//! vectored I/O, MSG_PEEK, FIONREAD, half-close, EPIPE and SIGPIPE,
//! O_NONBLOCK and non-blocking connect.

use crate::Env;
use crate::sys::{self, runs};
use image_support::{Checker, show};
use libc::*;
use std::time::Duration;

pub fn run(c: &mut Checker, env: &Env) {
    match crate::pair(env) {
        Ok((client, server)) => {
            names(c, env, client, server);
            options(c, client);
            vectored(c, client, server);
            half_close(c, client, server);
            let _ = sys::close(client);
            let _ = sys::close(server);
        }
        Err(e) => {
            c.check("stream_pair", false, e);
        }
    }
    nonblocking(c, env);
    nonblocking_connect(c, env);
    disconnect(c, env);
}

/// `connect(AF_UNSPEC)` on a connected stream socket (Linux's
/// `tcp_disconnect`): 0; the socket is unconnected (`getpeername`
/// ENOTCONN; the next send reports the reset, ECONNRESET) and its peer
/// sees the connection end; it can connect again.
fn disconnect(c: &mut Checker, env: &Env) {
    let Some((client, server)) = crate::checked_pair(c, env, "disconnect_pair") else {
        return;
    };
    c.expect_ok(
        "tcp_connect_af_unspec_disconnects",
        sys::connect(client, &sys::UNSPEC),
    );
    c.expect_errno(
        "tcp_getpeername_after_disconnect",
        sys::name(client, true, 16).map(|_| 0),
        ENOTCONN,
    );
    c.expect_errno(
        "tcp_send_after_disconnect",
        sys::send(client, b"x", MSG_NOSIGNAL),
        ECONNRESET,
    );
    let _ = sys::poll1(server, POLLIN, 5000);
    let mut buf = [0u8; 8];
    let r = sys::recv(server, &mut buf, MSG_DONTWAIT);
    c.check(
        "tcp_peer_sees_the_disconnect",
        matches!(r, Ok(0) | Err(ECONNRESET)),
        show(r),
    );
    let _ = sys::close(server);
    let again = sys::connect(client, &env.peer);
    c.expect_ok("tcp_connect_after_disconnect", again);
    if again.is_ok()
        && let Ok((accepted, _)) = sys::accept(env.listener, 0)
    {
        let _ = sys::close(accepted);
    }
    let _ = sys::close(client);
}

fn names(c: &mut Checker, env: &Env, client: i64, server: i64) {
    let mine = sys::name(client, false, 16);
    c.check(
        "getsockname_connected",
        mine.is_ok_and(|(a, l)| {
            let (family, ip, port) = sys::parts(&a);
            l == 16 && family == AF_INET as u16 && ip != [0; 4] && port != 0
        }),
        format!("{:?}", mine.map(|(a, l)| (sys::show_addr(&a), l))),
    );
    let peer = sys::name(client, true, 16);
    c.check(
        "getpeername_is_the_address_connected",
        peer.is_ok_and(|(a, _)| a == env.peer),
        format!("{:?}", peer.map(|(a, _)| sys::show_addr(&a))),
    );
    let local = sys::name(server, false, 16);
    c.check(
        "accepted_getsockname_has_listening_port",
        local.is_ok_and(|(a, _)| sys::parts(&a).2 == env.port),
        format!("{:?}", local.map(|(a, _)| sys::show_addr(&a))),
    );
    let short = sys::name(client, true, 4);
    c.check(
        "getpeername_short_buffer_truncates",
        short.is_ok_and(|(a, l)| l == 16 && a[..4] == env.peer[..4] && a[4..] == [0; 12]),
        format!("{short:?}"),
    );
}

fn options(c: &mut Checker, fd: i64) {
    let kind = sys::getsockopt(fd, SOL_SOCKET, SO_TYPE, 16);
    c.check(
        "so_type_stream",
        kind == Ok((SOCK_STREAM, 4)),
        format!("{kind:?}"),
    );
    let err = sys::getsockopt(fd, SOL_SOCKET, SO_ERROR, 16);
    c.check("so_error_zero", err == Ok((0, 4)), format!("{err:?}"));
    let nodelay = sys::getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, 16);
    c.check(
        "tcp_nodelay_default_off",
        nodelay == Ok((0, 4)),
        format!("{nodelay:?}"),
    );
    let set = sys::setint(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    let nodelay = sys::getint(fd, IPPROTO_TCP, TCP_NODELAY);
    c.check(
        "tcp_nodelay_set",
        set.is_ok() && nodelay == Ok(1),
        format!("{} {nodelay:?}", show(set)),
    );
    for (name, opt) in [("so_rcvbuf", SO_RCVBUF), ("so_sndbuf", SO_SNDBUF)] {
        let before = sys::getsockopt(fd, SOL_SOCKET, opt, 16);
        c.check(
            &format!("{name}_is_an_int"),
            before.is_ok_and(|(v, l)| v > 0 && l == 4),
            format!("{before:?}"),
        );
        let set = sys::setint(fd, SOL_SOCKET, opt, 65536);
        let after = sys::getint(fd, SOL_SOCKET, opt);
        c.check(
            &format!("{name}_set_reads_back_doubled"),
            set.is_ok() && after == Ok(131072),
            format!("{} {after:?}", show(set)),
        );
    }
    let short = sys::getsockopt(fd, SOL_SOCKET, SO_TYPE, 2);
    c.check(
        "getsockopt_short_length",
        short.is_ok_and(|(_, l)| l == 2),
        format!("{short:?}"),
    );
}

fn vectored(c: &mut Checker, client: i64, server: i64) {
    let (mut a, mut b, mut d) = (*b"one-", *b"two--", *b"three!");
    let iov = sys::iovecs(&mut [&mut a, &mut b, &mut d]);
    let wrote = sys::rwv(client, &iov, true);
    c.check("writev_three_iovecs", wrote == Ok(15), show(wrote));
    let _ = sys::poll1(server, POLLIN, 5000);
    let n = sys::fionread(server);
    c.check(
        "fionread_counts_queued_bytes",
        n.is_ok_and(|n| n > 0 && n <= 15),
        show(n),
    );
    let mut peek = [0u8; 4];
    let peeked = sys::recv(server, &mut peek, MSG_PEEK);
    c.check(
        "msg_peek",
        peeked == Ok(4) && &peek == b"one-",
        format!("{} {peek:?}", show(peeked)),
    );
    let (mut x, mut y, mut z) = ([0u8; 7], [0u8; 3], [0u8; 5]);
    let mut got = Vec::new();
    while got.len() < 15 {
        let iov = sys::iovecs(&mut [&mut x, &mut y, &mut z]);
        match sys::rwv(server, &iov, false) {
            Ok(n) if n > 0 => {
                let all: Vec<u8> = x.iter().chain(&y).chain(&z).copied().collect();
                got.extend_from_slice(&all[..n as usize]);
            }
            other => {
                c.check(
                    "readv_three_iovecs",
                    false,
                    format!("{} after {got:?}", show(other)),
                );
                return;
            }
        }
    }
    c.check(
        "readv_three_iovecs",
        got == b"one-two--three!",
        String::from_utf8_lossy(&got),
    );

    let (mut a, mut b, mut d) = (*b"ab", *b"cde", *b"f");
    let mut iov = sys::iovecs(&mut [&mut a, &mut b, &mut d]);
    let m = sys::msghdr(&mut iov, None);
    // SAFETY: a live msghdr over live iovecs.
    let sent = unsafe { sys::msg_raw(client, &m as *const _ as u64, 0, true) };
    c.check("sendmsg_three_iovecs", sent == Ok(6), show(sent));
    let _ = sys::poll1(server, POLLIN, 5000);
    let (mut x, mut y) = ([0u8; 4], [0u8; 2]);
    let mut iov = sys::iovecs(&mut [&mut x, &mut y]);
    let mut name = [0xffu8; 16];
    let mut m = sys::msghdr(&mut iov, Some(&mut name));
    m.msg_flags = 0x7777;
    // SAFETY: a live msghdr over live iovecs and name buffer.
    let got = unsafe { sys::msg_raw(server, &mut m as *mut _ as u64, MSG_WAITALL, false) };
    let bytes: Vec<u8> = x
        .iter()
        .chain(&y)
        .copied()
        .take(got.unwrap_or(0).max(0) as usize)
        .collect();
    c.check(
        "recvmsg_two_iovecs_waitall",
        got == Ok(6) && bytes == b"abcdef",
        format!("{} {:?}", show(got), String::from_utf8_lossy(&bytes)),
    );
    c.check(
        "recvmsg_tcp_name_and_flags",
        m.msg_namelen == 0 && m.msg_flags == 0,
        format!("namelen {} flags {:#x}", m.msg_namelen, m.msg_flags),
    );
}

/// The client shuts its sending half: the server reads the end of the
/// stream, and sending now is EPIPE with SIGPIPE (none with MSG_NOSIGNAL).
fn half_close(c: &mut Checker, client: i64, server: i64) {
    let _ = sys::send(client, b"last", 0);
    c.expect_ok("shutdown_wr", sys::shutdown(client, SHUT_WR));
    let ready = sys::poll1(server, POLLIN | POLLRDHUP, 5000);
    let got = sys::recv_exact(server, 4);
    c.check(
        "data_before_fin_arrives",
        got.as_deref() == Ok(b"last"),
        format!("{got:?}"),
    );
    let rdhup = sys::poll1(server, POLLIN | POLLRDHUP, 5000);
    c.check(
        "poll_rdhup_after_peer_shutdown",
        rdhup.is_ok_and(|(n, r)| n == 1 && r & POLLRDHUP != 0 && r & POLLIN != 0),
        format!("{ready:?} then {rdhup:?}"),
    );
    let mut buf = [0u8; 4];
    c.check(
        "recv_end_of_stream",
        sys::recv(server, &mut buf, 0) == Ok(0),
        "0 bytes",
    );

    let before = runs(SIGPIPE);
    c.expect_errno(
        "send_after_shut_wr_nosignal",
        sys::send(client, b"x", MSG_NOSIGNAL),
        EPIPE,
    );
    c.check(
        "msg_nosignal_no_sigpipe",
        runs(SIGPIPE) == before,
        format!("{} SIGPIPEs", runs(SIGPIPE) - before),
    );
    c.expect_errno("send_after_shut_wr", sys::send(client, b"x", 0), EPIPE);
    c.check(
        "sigpipe_delivered",
        runs(SIGPIPE) == before + 1,
        format!("{} SIGPIPEs", runs(SIGPIPE) - before),
    );
    // SAFETY: a live one-byte buffer.
    let wrote = unsafe { image_support::sys(SYS_write, &[client as u64, b"y".as_ptr() as u64, 1]) };
    c.expect_errno("write_after_shut_wr", wrote, EPIPE);
    c.check(
        "write_raises_sigpipe",
        runs(SIGPIPE) == before + 2,
        format!("{} SIGPIPEs", runs(SIGPIPE) - before),
    );
    // The server may still send: the client's receiving half is open.
    let sent = sys::send(server, b"back", 0);
    let got = sys::recv_exact(client, 4);
    c.check(
        "half_closed_reverse_direction",
        sent == Ok(4) && got.as_deref() == Ok(b"back"),
        format!("{} {got:?}", show(sent)),
    );
}

fn nonblocking(c: &mut Checker, env: &Env) {
    let fl = sys::fcntl(env.listener, F_GETFL, 0).unwrap_or(0);
    let set = sys::fcntl(env.listener, F_SETFL, fl | O_NONBLOCK as i64);
    let now = sys::fcntl(env.listener, F_GETFL, 0);
    c.check(
        "fcntl_setfl_o_nonblock",
        set.is_ok()
            && now.is_ok_and(|f| f as i32 & O_NONBLOCK != 0 && f as i32 & O_ACCMODE == O_RDWR),
        format!("{} {}", show(set), show(now)),
    );
    c.expect_errno(
        "accept_nonblocking_eagain",
        sys::accept(env.listener, 0).map(|(f, _)| f),
        EAGAIN,
    );
    let _ = sys::fcntl(env.listener, F_SETFL, fl);
    match crate::pair(env) {
        Ok((client, server)) => {
            let mut buf = [0u8; 4];
            c.expect_errno(
                "recv_msg_dontwait_eagain",
                sys::recv(server, &mut buf, MSG_DONTWAIT),
                EAGAIN,
            );
            let _ = sys::fcntl(server, F_SETFL, O_NONBLOCK as i64);
            c.expect_errno(
                "recv_nonblocking_eagain",
                sys::recv(server, &mut buf, 0),
                EAGAIN,
            );
            // SAFETY: a live buffer.
            let read = unsafe {
                image_support::sys(SYS_read, &[server as u64, buf.as_mut_ptr() as u64, 4])
            };
            c.expect_errno("read_nonblocking_eagain", read, EAGAIN);
            let _ = sys::close(client);
            let _ = sys::close(server);
        }
        Err(e) => {
            c.check("nonblocking_pair", false, e);
        }
    }
}

fn nonblocking_connect(c: &mut Checker, env: &Env) {
    let Ok(fd) = sys::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0) else {
        c.check("nonblocking_connect_socket", false, "no socket");
        return;
    };
    c.expect_errno(
        "connect_nonblocking_einprogress",
        sys::connect(fd, &env.peer),
        EINPROGRESS,
    );
    let ready = sys::poll1(fd, POLLOUT, 10_000);
    c.check(
        "connect_completes_writable",
        ready.is_ok_and(|(n, r)| n == 1 && r & POLLOUT != 0),
        format!("{ready:?}"),
    );
    let err = sys::getint(fd, SOL_SOCKET, SO_ERROR);
    c.check("connect_so_error_0", err == Ok(0), format!("{err:?}"));
    // Linux: the first connect after the attempt completed reports it (0),
    // the next one EISCONN.
    c.expect_ok("connect_again_reports_success", sys::connect(fd, &env.peer));
    c.expect_errno(
        "connect_third_eisconn",
        sys::connect(fd, &env.peer),
        EISCONN,
    );
    // Take the connection off the listener.
    let _ = sys::poll1(env.listener, POLLIN, 5000);
    if let Ok((server, _)) = sys::accept(env.listener, 0) {
        let _ = sys::close(server);
    }
    let _ = sys::close(fd);

    let Ok(fd) = sys::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0) else {
        return;
    };
    c.expect_errno(
        "connect_refused_nonblocking_einprogress",
        sys::connect(fd, &env.closed),
        EINPROGRESS,
    );
    let ready = sys::poll1(fd, POLLOUT, 10_000);
    c.check(
        "refused_connect_polls_pollerr",
        ready.is_ok_and(|(n, r)| n == 1 && r & POLLERR != 0),
        format!("{ready:?}"),
    );
    let err = sys::getint(fd, SOL_SOCKET, SO_ERROR);
    let again = sys::getint(fd, SOL_SOCKET, SO_ERROR);
    c.check(
        "refused_connect_so_error_once",
        err == Ok(ECONNREFUSED) && again == Ok(0),
        format!("{err:?} then {again:?}"),
    );
    let _ = sys::close(fd);
    std::thread::sleep(Duration::from_millis(1));
}
