//! Error paths of the socket calls: Linux's exact errno for bad domains,
//! types, protocols, lengths, families, states, descriptors and pointers,
//! and never a crash.

use crate::Env;
use crate::sys::{self, KERNEL_ADDR, UNMAPPED, sin};
use image_support::{Checker, show};
use libc::*;

pub fn run(c: &mut Checker, env: &Env) {
    creation(c);
    binding(c, env);
    states(c, env);
    datagrams(c, env);
    pointers(c, env);
}

fn creation(c: &mut Checker) {
    c.expect_errno(
        "socket_bad_domain",
        sys::socket(12345, SOCK_STREAM, 0),
        EAFNOSUPPORT,
    );
    c.expect_errno(
        "socket_bad_flags",
        sys::socket(AF_INET, SOCK_STREAM | 0x100, 0),
        EINVAL,
    );
    c.expect_errno("socket_type_past_max", sys::socket(AF_INET, 12, 0), EINVAL);
    c.expect_errno(
        "socket_unknown_type",
        sys::socket(AF_INET, 7, 0),
        ESOCKTNOSUPPORT,
    );
    c.expect_errno(
        "socket_stream_udp",
        sys::socket(AF_INET, SOCK_STREAM, IPPROTO_UDP),
        EPROTONOSUPPORT,
    );
    c.expect_errno(
        "socket_dgram_tcp",
        sys::socket(AF_INET, SOCK_DGRAM, IPPROTO_TCP),
        EPROTONOSUPPORT,
    );
    if let Some(fd) = c.expect_ok(
        "socket_tcp_explicit_protocol",
        sys::socket(AF_INET, SOCK_STREAM, IPPROTO_TCP),
    ) {
        let got = sys::getint(fd, SOL_SOCKET, SO_PROTOCOL);
        c.check(
            "so_protocol_tcp",
            got == Ok(IPPROTO_TCP),
            format!("{got:?}"),
        );
        let _ = sys::close(fd);
    }
    if let Some(fd) = c.expect_ok(
        "socket_nonblock_cloexec",
        sys::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0),
    ) {
        let fl = sys::fcntl(fd, F_GETFL, 0);
        let fd_fl = sys::fcntl(fd, F_GETFD, 0);
        c.check(
            "sock_nonblock_sets_o_nonblock",
            fl.is_ok_and(|f| f as i32 & O_NONBLOCK != 0) && fd_fl == Ok(FD_CLOEXEC as i64),
            format!("F_GETFL {} F_GETFD {}", show(fl), show(fd_fl)),
        );
        let _ = sys::close(fd);
    }
}

fn binding(c: &mut Checker, env: &Env) {
    let Ok(fd) = sys::tcp() else {
        c.check("binding_socket", false, "no socket");
        return;
    };
    let a = sin([0; 4], 0);
    // SAFETY: a live 16-byte address read for 8 bytes.
    c.expect_errno(
        "bind_short_addrlen",
        unsafe { sys::bind_raw(fd, a.as_ptr() as u64, 8) },
        EINVAL,
    );
    let mut six = sin([0; 4], 0);
    six[..2].copy_from_slice(&(AF_INET6 as u16).to_ne_bytes());
    // SAFETY: a live address; the short length is checked first.
    c.expect_errno(
        "bind_short_addrlen_before_family",
        unsafe { sys::bind_raw(fd, six.as_ptr() as u64, 8) },
        EINVAL,
    );
    c.expect_errno("bind_wrong_family", sys::bind(fd, &six), EAFNOSUPPORT);
    // SAFETY: a length past sockaddr_storage is refused before any read.
    c.expect_errno(
        "bind_addrlen_past_storage",
        unsafe { sys::bind_raw(fd, a.as_ptr() as u64, 129) },
        EINVAL,
    );
    c.expect_errno(
        "bind_port_in_use",
        sys::bind(fd, &sin([0; 4], env.port)),
        EADDRINUSE,
    );
    c.expect_errno(
        "bind_foreign_address",
        sys::bind(fd, &sin([203, 0, 113, 1], 0)),
        EADDRNOTAVAIL,
    );
    c.expect_ok("bind_af_unspec_any", sys::bind(fd, &sys::UNSPEC));
    c.expect_errno("bind_twice", sys::bind(fd, &sin([0; 4], 0)), EINVAL);
    let name = sys::name(fd, false, 16);
    c.check(
        "bind_port_0_picks_a_port",
        name.is_ok_and(|(a, l)| {
            l == 16 && sys::parts(&a).0 == AF_INET as u16 && sys::parts(&a).2 != 0
        }),
        format!("{:?}", name.map(|(a, l)| (sys::show_addr(&a), l))),
    );
    let _ = sys::close(fd);
}

fn states(c: &mut Checker, env: &Env) {
    let Ok(fd) = sys::tcp() else {
        c.check("states_socket", false, "no socket");
        return;
    };
    c.expect_errno(
        "accept_not_listening",
        sys::accept(fd, 0).map(|(f, _)| f),
        EINVAL,
    );
    c.expect_errno(
        "accept4_bad_flags",
        sys::accept(env.listener, 0x1).map(|(f, _)| f),
        EINVAL,
    );
    let mut buf = [0u8; 8];
    c.expect_errno("recv_unconnected_tcp", sys::recv(fd, &mut buf, 0), ENOTCONN);
    c.expect_errno(
        "send_unconnected_tcp",
        sys::send(fd, b"x", MSG_NOSIGNAL),
        EPIPE,
    );
    c.expect_errno(
        "getpeername_unconnected",
        sys::name(fd, true, 16).map(|_| 0),
        ENOTCONN,
    );
    c.expect_errno("shutdown_bad_how", sys::shutdown(fd, 5), EINVAL);
    c.expect_errno("shutdown_unconnected", sys::shutdown(fd, SHUT_WR), ENOTCONN);
    c.expect_errno(
        "getsockopt_unknown",
        sys::getint(fd, SOL_SOCKET, 9999).map(i64::from),
        ENOPROTOOPT,
    );
    c.expect_errno(
        "setsockopt_unknown_tcp",
        sys::setint(fd, IPPROTO_TCP, 9999, 1),
        ENOPROTOOPT,
    );
    c.expect_errno(
        "setsockopt_short_int",
        sys::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &[1, 0]),
        EINVAL,
    );
    let a = sin([0; 4], 0);
    // SAFETY: a live address read for 8 bytes.
    c.expect_errno(
        "connect_short_addrlen",
        unsafe { sys::connect_raw(fd, a.as_ptr() as u64, 8) },
        EINVAL,
    );
    let mut six = env.closed;
    six[..2].copy_from_slice(&(AF_INET6 as u16).to_ne_bytes());
    c.expect_errno("connect_wrong_family", sys::connect(fd, &six), EAFNOSUPPORT);
    c.expect_errno(
        "connect_refused",
        sys::connect(fd, &env.closed),
        ECONNREFUSED,
    );
    let err = sys::getint(fd, SOL_SOCKET, SO_ERROR);
    c.check(
        "so_error_consumed_by_connect",
        err == Ok(0),
        format!("{err:?}"),
    );
    let _ = sys::close(fd);

    if let Ok(u) = sys::udp() {
        c.expect_errno("listen_udp", sys::listen(u, 1), EOPNOTSUPP);
        c.expect_errno("accept_udp", sys::accept(u, 0).map(|(f, _)| f), EOPNOTSUPP);
        let _ = sys::close(u);
    }
    c.expect_errno("bind_not_a_socket", sys::bind(1, &sin([0; 4], 0)), ENOTSOCK);
    c.expect_errno("bind_bad_fd", sys::bind(999, &sin([0; 4], 0)), EBADF);
    c.expect_errno(
        "getsockopt_not_a_socket",
        sys::getint(1, SOL_SOCKET, SO_TYPE).map(i64::from),
        ENOTSOCK,
    );
}

fn datagrams(c: &mut Checker, env: &Env) {
    let Ok(u) = sys::udp() else {
        c.check("datagrams_socket", false, "no socket");
        return;
    };
    c.expect_errno(
        "udp_send_no_destination",
        sys::send(u, b"x", 0),
        EDESTADDRREQ,
    );
    c.expect_errno(
        "udp_shutdown_unconnected",
        sys::shutdown(u, SHUT_RDWR),
        ENOTCONN,
    );
    c.expect_ok("udp_connect", sys::connect(u, &env.closed));
    let peer = sys::name(u, true, 16);
    c.check(
        "udp_getpeername",
        peer.is_ok_and(|(a, _)| a == env.closed),
        format!("{:?}", peer.map(|(a, _)| sys::show_addr(&a))),
    );
    c.expect_ok(
        "udp_connect_af_unspec_disconnects",
        sys::connect(u, &sys::UNSPEC),
    );
    c.expect_errno(
        "udp_getpeername_after_disconnect",
        sys::name(u, true, 16).map(|_| 0),
        ENOTCONN,
    );
    c.expect_errno(
        "udp_send_after_disconnect",
        sys::send(u, b"x", 0),
        EDESTADDRREQ,
    );
    c.expect_errno(
        "udp_sendto_port_0",
        sys::sendto(u, b"x", 0, &sin([10, 0, 2, 2], 0)),
        EINVAL,
    );
    // MSG_DONTROUTE: only hosts on a local network; this one is on none
    // (nothing is sent).
    c.expect_errno(
        "udp_sendto_unroutable",
        sys::sendto(u, b"x", MSG_DONTROUTE, &sin([203, 0, 113, 1], 9)),
        ENETUNREACH,
    );
    let big = vec![0u8; 65_508];
    c.expect_errno(
        "udp_datagram_too_big",
        sys::sendto(u, &big, 0, &env.closed),
        EMSGSIZE,
    );
    let _ = sys::close(u);
}

fn pointers(c: &mut Checker, env: &Env) {
    let Ok(fd) = sys::tcp() else {
        c.check("pointers_socket", false, "no socket");
        return;
    };
    // SAFETY: the kernel must refuse both addresses.
    unsafe {
        c.expect_errno(
            "bind_unmapped_address",
            sys::bind_raw(fd, UNMAPPED, 16),
            EFAULT,
        );
        c.expect_errno(
            "connect_kernel_address",
            sys::connect_raw(fd, KERNEL_ADDR, 16),
            EFAULT,
        );
    }
    let mut v = [0u8; 4];
    let mut len: i32 = 4;
    // SAFETY: each call has one bad pointer the kernel must refuse; the
    // others are live.
    unsafe {
        c.expect_errno(
            "getsockopt_bad_length_pointer",
            sys::getsockopt_raw(fd, SOL_SOCKET, SO_TYPE, v.as_mut_ptr() as u64, UNMAPPED),
            EFAULT,
        );
        c.expect_errno(
            "getsockopt_bad_value_pointer",
            sys::getsockopt_raw(
                fd,
                SOL_SOCKET,
                SO_TYPE,
                UNMAPPED,
                &mut len as *mut i32 as u64,
            ),
            EFAULT,
        );
    }
    let mut negative: i32 = -1;
    // SAFETY: live buffers; the length is refused.
    c.expect_errno(
        "getsockopt_negative_length",
        unsafe {
            sys::getsockopt_raw(
                fd,
                SOL_SOCKET,
                SO_TYPE,
                v.as_mut_ptr() as u64,
                &mut negative as *mut i32 as u64,
            )
        },
        EINVAL,
    );
    c.expect_errno(
        "getsockname_negative_length",
        sys::name(fd, false, -1).map(|_| 0),
        EINVAL,
    );
    let _ = sys::close(fd);

    // A connection with data waiting, for the receive side.
    let Some((client, server)) = crate::checked_pair(c, env, "pointers_pair") else {
        return;
    };
    // SAFETY: unmapped memory the kernel must refuse to read.
    let sent = unsafe { sys::sendto_raw(client, UNMAPPED, 16, 0, None) };
    c.expect_errno("send_from_unmapped", sent, EFAULT);
    let _ = sys::send(client, b"data", 0);
    let _ = sys::poll1(server, POLLIN, 5000);
    // SAFETY: a kernel address the kernel must refuse to write.
    c.expect_errno(
        "recv_into_kernel",
        unsafe { sys::recv_raw(server, KERNEL_ADDR, 4, 0) },
        EFAULT,
    );
    // User memory the process may not write: nothing is taken either.
    // SAFETY: an unmapped user page the kernel must refuse to write.
    let unmapped = unsafe { sys::recv_raw(server, UNMAPPED, 4, 0) };
    c.expect_errno("recv_into_unmapped", unmapped, EFAULT);
    // SAFETY: a fresh private anonymous read-only page, unmapped after.
    let read_only = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if read_only == libc::MAP_FAILED {
        c.check("recv_into_read_only", false, "mmap failed".to_string());
    } else {
        // SAFETY: a mapped page the kernel must refuse to write.
        let r = unsafe { sys::recv_raw(server, read_only as u64, 4, 0) };
        c.expect_errno("recv_into_read_only", r, EFAULT);
        // SAFETY: the page mapped above, no longer used.
        unsafe { libc::munmap(read_only, 4096) };
    }
    let got = sys::recv_exact(server, 4);
    c.check(
        "recv_after_efault_gets_the_data",
        got.as_deref() == Ok(b"data"),
        format!("{got:?}"),
    );
    // SAFETY: bad message headers and iovec arrays the kernel must refuse.
    unsafe {
        c.expect_errno(
            "sendmsg_bad_header",
            sys::msg_raw(client, UNMAPPED, 0, true),
            EFAULT,
        );
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }];
        let mut m = sys::msghdr(&mut iov, None);
        m.msg_iov = UNMAPPED as *mut libc::iovec;
        c.expect_errno(
            "sendmsg_bad_iovec_array",
            sys::msg_raw(client, &m as *const _ as u64, 0, true),
            EFAULT,
        );
        m.msg_iovlen = 1025;
        c.expect_errno(
            "sendmsg_too_many_iovecs",
            sys::msg_raw(client, &m as *const _ as u64, 0, true),
            EMSGSIZE,
        );
        c.expect_errno(
            "writev_too_many_iovecs",
            image_support::sys(SYS_writev, &[client as u64, UNMAPPED, 1025]),
            EINVAL,
        );
    }
    let _ = sys::close(client);
    let _ = sys::close(server);
}
