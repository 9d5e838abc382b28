//! Data streams: one thread per stream (`iperf-stream<ID>`), each with
//! one buffer of the test's block size allocated when it starts, moving
//! bytes with plain `read`/`write` and counting them in an atomic of its
//! own cache line (no lock, allocation or other system call per block).
//!
//! A test's streams share a [`Shared`] phase:
//!
//! - [`RUN`]: senders write, receivers read and count;
//! - [`DRAIN`]: senders stop after the write in progress (their socket's
//!   send timeout bounds it); receivers keep reading but stop counting
//!   (a client waiting for the results must not let the server's sends
//!   block);
//! - [`QUIT`]: every thread returns at its next read or write.
//!
//! Each stream socket has [`POLL`] read and write timeouts so a thread
//! notices a phase change even when its peer goes quiet; [`Stream::stop`]
//! also shuts the socket down to wake it at once. A socket error while
//! running is the test's error ([`Shared::error`]); after that, errors are
//! the expected end of the connection and are ignored.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub const RUN: u8 = 1;
pub const DRAIN: u8 = 2;
pub const QUIT: u8 = 3;

/// How long a stream thread may sit in one read or write before it looks
/// at the phase again.
pub const POLL: Duration = Duration::from_millis(200);
/// Stream threads only move bytes: a small stack is plenty.
const STACK: usize = 256 * 1024;

/// What a test's stream threads share.
#[derive(Default)]
pub struct Shared {
    phase: AtomicU8,
    error: Mutex<Option<String>>,
}

impl Shared {
    pub fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    pub fn set_phase(&self, phase: u8) {
        self.phase.store(phase, Ordering::Release);
    }

    /// Records a stream failure (the first one is kept).
    fn fail(&self, message: String) {
        let mut e = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            *e = Some(message);
        }
    }

    /// The first stream failure, if any.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A byte counter alone on its cache line.
#[repr(align(64))]
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a sender writes: random bytes (iperf3's default) or iperf3's
/// `--repeating-payload` pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    Random,
    Repeating,
}

/// One data connection of a test.
pub struct Stream {
    pub id: u32,
    pub sender: bool,
    /// The control thread's handle (for shutdown, `TCP_INFO`, addresses).
    pub sock: TcpStream,
    counter: Arc<Counter>,
    shared: Option<Arc<Shared>>,
    thread: Option<JoinHandle<()>>,
}

impl Stream {
    pub fn new(id: u32, sender: bool, sock: TcpStream) -> Stream {
        Stream {
            id,
            sender,
            sock,
            counter: Arc::new(Counter::default()),
            shared: None,
            thread: None,
        }
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Bytes moved so far (while the phase was [`RUN`]; a sender also
    /// counts the write in progress when the phase changed).
    pub fn bytes(&self) -> u64 {
        self.counter.get()
    }

    /// Starts the stream's thread with a `len`-byte buffer.
    pub fn start(
        &mut self,
        shared: &Arc<Shared>,
        len: usize,
        payload: Payload,
    ) -> Result<(), String> {
        let sock = self
            .sock
            .try_clone()
            .map_err(|e| format!("stream {}: duplicating the socket: {e}", self.id))?;
        sock.set_read_timeout(Some(POLL))
            .and_then(|_| sock.set_write_timeout(Some(POLL)))
            .map_err(|e| format!("stream {}: setting socket timeouts: {e}", self.id))?;
        let (id, sender) = (self.id, self.sender);
        let counter = Arc::clone(&self.counter);
        let shared = Arc::clone(shared);
        self.shared = Some(Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name(format!("iperf-stream{id}"))
            .stack_size(STACK)
            .spawn(move || {
                let buf = block(len, payload);
                if sender {
                    send_loop(sock, &buf, &shared, &counter, id);
                } else {
                    receive_loop(sock, buf, &shared, &counter, id);
                }
            })
            .map_err(|e| format!("stream {id}: cannot start its thread: {e}"))?;
        self.thread = Some(thread);
        Ok(())
    }

    /// Waits for the thread (the caller has set a phase that ends it).
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Ends the thread now: [`QUIT`], the socket shut down, joined.
    pub fn stop(&mut self) {
        if let Some(s) = &self.shared {
            s.set_phase(QUIT);
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        self.join();
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A block of `len` bytes of the payload.
fn block(len: usize, payload: Payload) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    match payload {
        // iperf3's fill_with_repeating_pattern: "0123456789" repeated.
        Payload::Repeating => {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = b'0' + (i % 10) as u8;
            }
        }
        Payload::Random => {
            let mut seed = [0u8; 8];
            crate::sock::random_bytes(&mut seed);
            let mut x = u64::from_ne_bytes(seed);
            for chunk in buf.chunks_mut(8) {
                x = crate::sock::splitmix(x);
                let bytes = x.to_ne_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
        }
    }
    buf
}

fn is_retry(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::Interrupted || crate::proto::is_timeout(e)
}

fn send_loop(mut sock: TcpStream, buf: &[u8], shared: &Shared, counter: &Counter, id: u32) {
    let mut at = 0;
    while shared.phase() == RUN {
        match sock.write(&buf[at..]) {
            Ok(0) => {
                shared.fail(format!("stream {id}: the socket took no bytes"));
                return;
            }
            Ok(n) => {
                counter.add(n);
                at += n;
                if at == buf.len() {
                    at = 0;
                }
            }
            Err(e) if is_retry(&e) => {}
            Err(e) => {
                if shared.phase() == RUN {
                    shared.fail(format!("stream {id}: writing: {e}"));
                }
                return;
            }
        }
    }
}

fn receive_loop(
    mut sock: TcpStream,
    mut buf: Vec<u8>,
    shared: &Shared,
    counter: &Counter,
    id: u32,
) {
    loop {
        match sock.read(&mut buf) {
            // The peer closed this stream: nothing more will come (iperf3
            // does not call that an error).
            Ok(0) => return,
            Ok(n) => match shared.phase() {
                RUN => counter.add(n),
                QUIT => return,
                _ => {}
            },
            Err(e) if is_retry(&e) => {
                if shared.phase() == QUIT {
                    return;
                }
            }
            Err(e) => {
                if shared.phase() == RUN {
                    shared.fail(format!("stream {id}: reading: {e}"));
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn a_sender_and_a_receiver_agree_after_drain() {
        let (a, b) = pair();
        let shared = Arc::new(Shared::default());
        shared.set_phase(RUN);
        let mut tx = Stream::new(1, true, a);
        let mut rx = Stream::new(1, false, b);
        tx.start(&shared, 16 * 1024, Payload::Random).unwrap();
        rx.start(&shared, 16 * 1024, Payload::Repeating).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(tx.bytes() > 0 && rx.bytes() > 0);
        // A receiver-only phase change: the sender stops, the receiver
        // drains without counting.
        shared.set_phase(DRAIN);
        let t = Instant::now();
        tx.join();
        assert!(t.elapsed() < Duration::from_secs(2));
        let sent = tx.bytes();
        assert!(rx.bytes() <= sent);
        tx.stop();
        rx.stop();
        assert_eq!(tx.bytes(), sent);
        assert!(shared.error().is_none(), "{:?}", shared.error());
    }

    #[test]
    fn a_reset_while_running_is_an_error() {
        let (a, b) = pair();
        let shared = Arc::new(Shared::default());
        shared.set_phase(RUN);
        let mut tx = Stream::new(3, true, a);
        tx.start(&shared, 128 * 1024, Payload::Random).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(b);
        let t = Instant::now();
        while shared.error().is_none() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(shared.error().unwrap().starts_with("stream 3: writing"));
    }
}
