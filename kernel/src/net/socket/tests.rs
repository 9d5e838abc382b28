//! Kernel tests of the socket layer over `net::loopback_stack()`: the
//! socket API in-kernel (no user memory, no descriptor table), with a
//! joinable kernel thread for the other end where both must block.

use alloc::sync::Arc;
use alloc::vec::Vec;

use super::*;
use crate::ktest::wait_until;

fn tcp() -> Arc<Socket> {
    Socket::new(StackRef::Plain(crate::net::loopback_stack()), Kind::Tcp)
}

fn udp() -> Arc<Socket> {
    Socket::new(StackRef::Plain(crate::net::loopback_stack()), Kind::Udp)
}

const LOCALHOST: [u8; 4] = [127, 0, 0, 1];

fn listener(port: u16, backlog: i32) -> Arc<Socket> {
    let server = tcp();
    server
        .setsockopt(opt::SOL_SOCKET, opt::SO_REUSEADDR, &1i32.to_le_bytes())
        .expect("SO_REUSEADDR");
    server.bind(SockAddr::new(LOCALHOST, port)).expect("bind");
    server.listen(backlog).expect("listen");
    server
}

fn ready(socket: &Socket, mask: u16) -> bool {
    wait_until(5_000, || socket.poll_events() & mask != 0)
}

/// Sends all of `data` (blocking), as `write` would.
fn send_all(socket: &Socket, data: &[u8]) {
    let mut sent = 0;
    while sent < data.len() {
        sent += socket.send(&data[sent..], None, 0, false).expect("send");
    }
}

/// Receives until end of stream or `limit` bytes.
fn recv_until(socket: &Socket, limit: usize) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = alloc::vec![0u8; 64 * 1024];
    while received.len() < limit {
        let (count, _) = socket.recv(&mut buffer, 0, false).expect("recv");
        if count == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..count]);
    }
    received
}

fn pattern(length: usize, seed: u32) -> Vec<u8> {
    let mut state = seed;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    })
}

crate::ktests! {
    fn listen_connect_accept() {
        let server = listener(5001, 1);
        assert_eq!(server.local_addr(), SockAddr::new(LOCALHOST, 5001));
        let client = tcp();
        assert_eq!(client.connect(SockAddr::new(LOCALHOST, 5001), true), Err(Errno::EINPROGRESS));
        let (accepted, peer) = server.accept(false).expect("accept");
        assert!(ready(&client, POLLOUT));
        assert_eq!(client.getsockopt(opt::SOL_SOCKET, opt::SO_ERROR).expect("SO_ERROR"), 0i32.to_le_bytes());
        assert_eq!(peer, client.local_addr());
        assert!(EPHEMERAL.contains(&peer.port));
        assert_eq!(client.peer_addr(), Ok(SockAddr::new(LOCALHOST, 5001)));
        assert_eq!(accepted.local_addr(), SockAddr::new(LOCALHOST, 5001));
        assert_eq!(accepted.peer_addr(), Ok(peer));
        // As Linux: the next connect reports the non-blocking one's success,
        // later ones EISCONN.
        assert_eq!(client.connect(SockAddr::new(LOCALHOST, 5001), false), Ok(()));
        assert_eq!(client.connect(SockAddr::new(LOCALHOST, 5001), false), Err(Errno::EISCONN));
        // The port is taken while the listener lives.
        assert_eq!(tcp().bind(SockAddr::new(LOCALHOST, 5001)), Err(Errno::EADDRINUSE));
        assert_eq!(
            client.setsockopt(opt::IPPROTO_TCP, opt::TCP_NODELAY, &1i32.to_le_bytes()),
            Ok(())
        );
        assert_eq!(client.getsockopt(opt::SOL_SOCKET, 999), Err(Errno::ENOPROTOOPT));
        assert_eq!(client.getsockopt(opt::SOL_SOCKET, opt::SO_TYPE), Ok(1i32.to_le_bytes().to_vec()));
    }

    fn megabyte_both_ways_with_checksum() {
        const SIZE: usize = 1 << 20;
        let server = listener(5002, 1);
        let worker = crate::kthread::Builder::new("ktest-net-peer")
            .joinable()
            .spawn(move || {
                let (peer, _) = server.accept(false).expect("accept");
                let received = recv_until(&peer, SIZE);
                assert_eq!(received.len(), SIZE);
                assert_eq!(checksum(&received), checksum(&pattern(SIZE, 7)));
                send_all(&peer, &pattern(SIZE, 11));
            })
            .expect("peer thread");
        let client = tcp();
        client.connect(SockAddr::new(LOCALHOST, 5002), false).expect("connect");
        send_all(&client, &pattern(SIZE, 7));
        let back = recv_until(&client, SIZE);
        crate::kthread::join(&worker).expect("join");
        assert_eq!(back.len(), SIZE);
        assert_eq!(checksum(&back), checksum(&pattern(SIZE, 11)));
    }

    fn end_of_stream_after_close() {
        let server = listener(5003, 1);
        let client = tcp();
        client.connect(SockAddr::new(LOCALHOST, 5003), true).err();
        let (peer, _) = server.accept(false).expect("accept");
        send_all(&client, b"hello");
        drop(client);
        assert_eq!(recv_until(&peer, 100), b"hello");
        let mut buffer = [0u8; 8];
        assert_eq!(peer.recv(&mut buffer, 0, false), Ok((0, None)));
        assert!(peer.poll_events() & (POLLIN | POLLRDHUP) == POLLIN | POLLRDHUP);
    }

    fn nonblocking_calls_say_eagain() {
        let server = listener(5004, 1);
        assert_eq!(server.accept(true).err(), Some(Errno::EAGAIN));
        let client = tcp();
        client.connect(SockAddr::new(LOCALHOST, 5004), true).err();
        let (peer, _) = server.accept(false).expect("accept");
        let mut buffer = [0u8; 8];
        assert_eq!(peer.recv(&mut buffer, 0, true), Err(Errno::EAGAIN));
        assert_eq!(peer.recv(&mut buffer, MSG_DONTWAIT, false), Err(Errno::EAGAIN));
        // SO_RCVTIMEO: EAGAIN once the time is out.
        let mut timeval = [0u8; 16];
        timeval[8..].copy_from_slice(&20_000i64.to_le_bytes());
        peer.setsockopt(opt::SOL_SOCKET, opt::SO_RCVTIMEO, &timeval).expect("SO_RCVTIMEO");
        assert_eq!(peer.recv(&mut buffer, 0, false), Err(Errno::EAGAIN));
        // Filling the send side ends in EAGAIN too.
        let block = alloc::vec![0u8; 64 * 1024];
        let mut queued = 0;
        loop {
            match client.send(&block, None, 0, true) {
                Ok(count) => queued += count,
                Err(error) => {
                    assert_eq!(error, Errno::EAGAIN);
                    break;
                }
            }
            assert!(queued < 64 << 20, "the send buffer never fills");
        }
        assert!(queued >= DEFAULT_BUFFER);
        // Shut for writing: EPIPE.
        client.shutdown(SHUT_WR).expect("shutdown");
        assert_eq!(client.send(b"x", None, 0, true), Err(Errno::EPIPE));
    }

    fn refused_connection() {
        let client = tcp();
        assert_eq!(client.connect(SockAddr::new(LOCALHOST, 5999), false), Err(Errno::ECONNREFUSED));
        let late = tcp();
        assert_eq!(late.connect(SockAddr::new(LOCALHOST, 5999), true), Err(Errno::EINPROGRESS));
        assert!(ready(&late, POLLERR));
        assert_eq!(
            late.getsockopt(opt::SOL_SOCKET, opt::SO_ERROR).expect("SO_ERROR"),
            Errno::ECONNREFUSED.code().to_le_bytes()
        );
    }

    fn poll_readiness() {
        let server = listener(5005, 1);
        assert_eq!(server.poll_events() & POLLIN, 0);
        let client = tcp();
        assert_eq!(client.poll_events(), POLLOUT | POLLWRNORM | POLLHUP);
        client.connect(SockAddr::new(LOCALHOST, 5005), true).err();
        assert!(ready(&server, POLLIN));
        let (peer, _) = server.accept(true).expect("accept");
        assert!(ready(&client, POLLOUT));
        assert_eq!(peer.poll_events() & POLLIN, 0);
        assert_eq!(peer.poll_events() & POLLOUT, POLLOUT);
        client.send(b"ping", None, 0, false).expect("send");
        assert!(ready(&peer, POLLIN));
        assert_eq!(peer.pending_bytes(), 4);
        assert_eq!(peer.poll_events() & POLLRDHUP, 0);
        client.shutdown(SHUT_WR).expect("shutdown");
        assert!(ready(&peer, POLLRDHUP));
        let mut buffer = [0u8; 16];
        assert_eq!(peer.recv(&mut buffer, 0, false), Ok((4, None)));
        assert_eq!(peer.recv(&mut buffer, 0, false), Ok((0, None)));
        peer.shutdown(SHUT_WR).expect("shutdown");
        assert!(ready(&client, POLLHUP));
    }

    fn backlog_of_four() {
        let server = listener(5006, 4);
        let clients: Vec<Arc<Socket>> = (0..4)
            .map(|_| {
                let client = tcp();
                assert_eq!(client.connect(SockAddr::new(LOCALHOST, 5006), true), Err(Errno::EINPROGRESS));
                client
            })
            .collect();
        for client in &clients {
            assert!(ready(client, POLLOUT));
            assert!(client.peer_addr().is_ok());
        }
        let mut peers = Vec::new();
        for _ in 0..4 {
            let (peer, address) = server.accept(true).expect("a pending connection");
            assert!(clients.iter().any(|client| client.local_addr() == address));
            peers.push(peer);
        }
        assert_eq!(server.accept(true).err(), Some(Errno::EAGAIN));
        // The listener was replenished: a fifth connection is accepted.
        let fifth = tcp();
        fifth.connect(SockAddr::new(LOCALHOST, 5006), false).expect("connect");
        assert!(server.accept(false).is_ok());
    }

    fn udp_round_trip() {
        let a = udp();
        a.bind(SockAddr::new(LOCALHOST, 5007)).expect("bind");
        let b = udp();
        assert_eq!(b.send(b"x", None, 0, false), Err(Errno::EDESTADDRREQ));
        b.send(b"question", Some(SockAddr::new(LOCALHOST, 5007)), 0, false).expect("send");
        let b_address = b.local_addr();
        assert!(EPHEMERAL.contains(&b_address.port));
        let mut buffer = [0u8; 64];
        let (count, from) = a.recv(&mut buffer, 0, false).expect("recv");
        assert_eq!(&buffer[..count], b"question");
        let from = from.expect("a sender");
        assert_eq!(from.port, b_address.port);
        a.send(b"answer!", Some(from), 0, false).expect("reply");
        assert!(ready(&b, POLLIN));
        assert_eq!(b.pending_bytes(), 7);
        let mut small = [0u8; 3];
        let (count, from) = b.recv(&mut small, MSG_TRUNC, false).expect("recv");
        assert_eq!((count, &small), (7, b"ans"));
        assert_eq!(from, Some(SockAddr::new(LOCALHOST, 5007)));
        assert_eq!(b.recv(&mut buffer, 0, true), Err(Errno::EAGAIN));
        // Connected: the default destination.
        b.connect(SockAddr::new(LOCALHOST, 5007), false).expect("connect");
        b.send(b"again", None, 0, false).expect("send");
        let (count, _) = a.recv(&mut buffer, 0, false).expect("recv");
        assert_eq!(&buffer[..count], b"again");
    }
}
