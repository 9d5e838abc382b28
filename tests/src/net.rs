//! Helpers for the `net` integration test: a guest running a network image
//! (`echo`, `http`) with TCP ports forwarded from 127.0.0.1 (free ports,
//! so guests boot in parallel) or on a raw-frame link, its control
//! channel, and host-side clients: a checked echo stream, HTTP GET, and
//! hand-built frames and TCP (`frames`, `session`); `watch`, `cycles` and
//! `storm` judge what the control channel and the console show.
//!
//! Theory: every socket has read and write timeouts and every wait a
//! deadline, so a guest that stops answering fails a test with a message,
//! never hangs it. A failure message names what was expected and what
//! came instead; the caller adds the console's tail.

pub mod cycles;
pub mod frames;
pub mod session;
pub mod storm;
pub mod watch;

use crate::ctl::{CtlGuest, Prepared, TargetBoot};
use serde_json::Value;
use spindle_runner::{Machine, Net};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// `echo`'s default port.
pub const ECHO_PORT: u16 = 7777;
/// `http`'s default port.
pub const HTTP_PORT: u16 = 8080;
/// The network worker LWPs of the first virtio-net device.
pub const RX_WORKER: &str = "vnet0-rx0";
pub const TX_WORKER: &str = "vnet0-tx0";
/// How long a socket may sit without progress before a test calls it hung.
pub const STALL: Duration = Duration::from_secs(30);

/// Ports handed out by this test process, so parallel boots never share one.
static CLAIMED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

fn claim(port: u16) -> bool {
    CLAIMED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(port)
}

/// A TCP port free on 127.0.0.1 now and never handed out before here.
pub fn free_tcp_port() -> Result<u16, String> {
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding TCP: {e}"))?;
        let port = l
            .local_addr()
            .map_err(|e| format!("TCP address: {e}"))?
            .port();
        if claim(port) {
            return Ok(port);
        }
    }
    Err("no free TCP port on 127.0.0.1 after 100 tries".into())
}

/// A UDP port free on 127.0.0.1 now and never handed out before here.
pub fn free_udp_port() -> Result<u16, String> {
    for _ in 0..100 {
        let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("binding UDP: {e}"))?;
        let port = s
            .local_addr()
            .map_err(|e| format!("UDP address: {e}"))?
            .port();
        if claim(port) {
            return Ok(port);
        }
    }
    Err("no free UDP port on 127.0.0.1 after 100 tries".into())
}

/// How to boot a network image.
#[derive(Clone, Debug)]
pub struct NetBoot {
    /// `echo` or `http` (an entry of `spindle_runner::images::IMAGES`).
    pub image: &'static str,
    pub args: Vec<String>,
    /// The port the image listens on (its listening line names it).
    pub port: u16,
    pub smp: u32,
    pub mem_mib: u64,
    pub respawn: Option<u32>,
    /// Guest TCP ports to forward from free host ports (user networking).
    pub forward: Vec<u16>,
    /// Raw-frame link instead of user networking (`frames::FrameLink`),
    /// the guest configured with `frames::GUEST_NET_ARGS`.
    pub frame_link: bool,
    /// More kernel command-line words.
    pub append: Vec<&'static str>,
    pub machine: Machine,
}

impl NetBoot {
    /// `echo` on its default port, forwarded; 2 CPUs, 256 MiB.
    pub fn echo() -> NetBoot {
        NetBoot {
            image: "echo",
            args: Vec::new(),
            port: ECHO_PORT,
            smp: 2,
            mem_mib: 256,
            respawn: None,
            forward: vec![ECHO_PORT],
            frame_link: false,
            append: Vec::new(),
            machine: Machine::Q35,
        }
    }

    /// `http` on its default port, forwarded; 2 CPUs, 256 MiB.
    pub fn http() -> NetBoot {
        NetBoot {
            image: "http",
            port: HTTP_PORT,
            forward: vec![HTTP_PORT],
            ..NetBoot::echo()
        }
    }
}

/// A running guest with a network image, its control channel and its
/// forwarded ports (or frame link).
pub struct NetGuest {
    pub g: CtlGuest,
    pub image: &'static str,
    pub port: u16,
    /// `(guest port, host port)`.
    forwards: Vec<(u16, u16)>,
    pub link: Option<frames::FrameLink>,
}

impl NetGuest {
    /// Boots `b` (retrying twice when QEMU could not bind a forwarded port
    /// some other program took meanwhile). Does not wait for the image.
    pub fn boot(p: &Prepared, b: &NetBoot) -> Result<NetGuest, String> {
        let mut last = String::new();
        for _ in 0..3 {
            let forwards: Vec<(u16, u16)> = b
                .forward
                .iter()
                .map(|&g| free_tcp_port().map(|h| (g, h)))
                .collect::<Result<_, _>>()?;
            let link = if b.frame_link {
                Some(frames::FrameLink::open()?)
            } else {
                None
            };
            let net = match &link {
                Some(l) => l.net(),
                None => Net::User {
                    hostfwd: forwards.iter().map(|&(g, h)| (h, g)).collect(),
                },
            };
            let mut append: Vec<String> = if b.frame_link {
                frames::GUEST_NET_ARGS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                Vec::new()
            };
            append.extend(b.append.iter().map(|s| s.to_string()));
            let boot = TargetBoot {
                smp: b.smp,
                mem_mib: b.mem_mib,
                kworkers: 0,
                respawn: b.respawn,
                image: Some((b.image, b.args.clone())),
                net,
                append,
                machine: b.machine,
            };
            match CtlGuest::boot(p, &boot) {
                Ok(g) => {
                    return Ok(NetGuest {
                        g,
                        image: b.image,
                        port: b.port,
                        forwards,
                        link,
                    });
                }
                Err(e) if e.contains("host forwarding") || e.contains("Address already in use") => {
                    last = e;
                }
                Err(e) => return Err(format!("booting {}: {e}", b.image)),
            }
        }
        Err(format!("booting {}: three tries failed: {last}", b.image))
    }

    /// The host address forwarded to the guest's `guest_port`.
    pub fn addr(&self, guest_port: u16) -> Result<SocketAddr, String> {
        self.forwards
            .iter()
            .find(|(g, _)| *g == guest_port)
            .map(|&(_, h)| SocketAddr::from(([127, 0, 0, 1], h)))
            .ok_or_else(|| format!("guest port {guest_port} is not forwarded"))
    }

    /// The host address of the image's own port.
    pub fn service(&self) -> Result<SocketAddr, String> {
        self.addr(self.port)
    }

    /// The image's listening line, `IMAGE: listening on 0.0.0.0:PORT`.
    pub fn listening_line(&self) -> String {
        format!("{}: listening on 0.0.0.0:{}", self.image, self.port)
    }

    /// Waits for the listening line at console line `from` or later;
    /// returns its index. The image saying it cannot listen, or the
    /// process ending first, fails at once with that line.
    pub fn wait_listening(&self, from: usize) -> Result<usize, String> {
        let want = self.listening_line();
        let refused = format!("{}: cannot listen", self.image);
        let ended = format!("spindle: process {} (pid ", self.image);
        let (i, line) = self.g.wait_line(
            from,
            &format!(
                "`{want}` (the image listening: needs virtio-net, the stack and socket calls)"
            ),
            |l| {
                l.contains(&want)
                    || l.contains(&refused)
                    || l.contains(&ended)
                    || l.contains("spindle: cannot run")
            },
            self.g.timeout(),
        )?;
        if line.contains(&want) {
            Ok(i)
        } else {
            Err(format!("expected `{want}`, but the console says `{line}`"))
        }
    }

    /// The pid of the running process named after the image (from `ps`).
    pub fn pid(&mut self) -> Result<u64, String> {
        let procs = crate::ctl::parse_ps(&self.g.ok("ps")?)?;
        let mine: Vec<&crate::ctl::Proc> = procs
            .iter()
            .filter(|p| p.pid != 0 && p.name.contains(self.image) && p.state == "running")
            .collect();
        match mine.as_slice() {
            [p] => Ok(p.pid),
            _ => Err(format!(
                "expected one running process named {} in ps: {procs:?}",
                self.image
            )),
        }
    }

    /// `rings`, read strictly.
    pub fn rings(&mut self) -> Result<Vec<Ring>, String> {
        parse_rings(&self.g.ok("rings")?)
    }

    /// The RX and TX rings of `pid`.
    pub fn rx_tx(&mut self, pid: u64) -> Result<(Ring, Ring), String> {
        let rings = self.rings()?;
        let pick = |name: &str, kind: &str| {
            let mut it = rings.iter().filter(|r| r.pid == pid && r.name == name);
            match (it.next(), it.next()) {
                (Some(r), None) if r.kind == kind => Ok(r.clone()),
                (Some(r), None) => Err(format!("ring {name} has kind {}, not {kind}", r.kind)),
                (None, _) => Err(format!("no ring {name} of pid {pid} in rings: {rings:?}")),
                _ => Err(format!("two rings {name} of pid {pid}: {rings:?}")),
            }
        };
        Ok((pick(RX_WORKER, "rx")?, pick(TX_WORKER, "tx")?))
    }
}

/// One entry of `rings` (docs/network.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    pub pid: u64,
    pub name: String,
    pub kind: String,
    pub state: String,
    pub requests: String,
    /// The worker LWP's id (`null` while it has none).
    pub worker: Option<u64>,
    pub frames: u64,
    pub bytes: u64,
    pub kicks: u64,
    pub interrupts: u64,
    pub suppressed: u64,
    pub drops: u64,
    pub in_flight: u64,
}

fn num(v: &Value, key: &str) -> Result<u64, String> {
    v.get(key)
        .ok_or_else(|| format!("a ring has no `{key}`: {v}"))?
        .as_u64()
        .ok_or_else(|| format!("a ring's `{key}` is not a whole number: {v}"))
}

fn text(v: &Value, key: &str) -> Result<String, String> {
    v.get(key)
        .ok_or_else(|| format!("a ring has no `{key}`: {v}"))?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("a ring's `{key}` is not a string: {v}"))
}

/// `rings` -> its entries; a missing or mistyped field is an error.
pub fn parse_rings(v: &Value) -> Result<Vec<Ring>, String> {
    let list = v
        .get("rings")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("`rings` has no `rings` list: {v}"))?;
    list.iter()
        .map(|r| {
            let worker = match r.get("worker") {
                Some(Value::Null) => None,
                Some(w) => Some(
                    w.as_u64()
                        .ok_or_else(|| format!("a ring's `worker` is odd: {r}"))?,
                ),
                None => return Err(format!("a ring has no `worker`: {r}")),
            };
            Ok(Ring {
                pid: num(r, "pid")?,
                name: text(r, "name")?,
                kind: text(r, "kind")?,
                state: text(r, "state")?,
                requests: text(r, "requests")?,
                worker,
                frames: num(r, "frames")?,
                bytes: num(r, "bytes")?,
                kicks: num(r, "kicks")?,
                interrupts: num(r, "interrupts")?,
                suppressed: num(r, "suppressed")?,
                drops: num(r, "drops")?,
                in_flight: num(r, "in_flight")?,
            })
        })
        .collect()
}

/// Byte `i` of the seeded stream the echo client sends: random access, so
/// any stretch can be regenerated to check what came back.
pub fn stream_word(seed: u64, word: u64) -> u64 {
    // splitmix64 of (seed, word index).
    let mut z = seed
        .wrapping_add(word.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with the stream's bytes from `offset` on.
pub fn fill_stream(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut i = 0usize;
    while i < buf.len() {
        let at = offset + i as u64;
        let word = stream_word(seed, at / 8).to_le_bytes();
        let skip = (at % 8) as usize;
        let n = (8 - skip).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&word[skip..skip + n]);
        i += n;
    }
}

/// An order-sensitive 64-bit checksum (Fletcher style), fed in pieces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checksum {
    a: u64,
    b: u64,
    pub len: u64,
}

impl Checksum {
    pub fn update(&mut self, data: &[u8]) {
        let (mut a, mut b) = (self.a, self.b);
        for &x in data {
            a = a.wrapping_add(u64::from(x) + 1);
            b = b.wrapping_add(a);
        }
        self.a = a;
        self.b = b;
        self.len += data.len() as u64;
    }

    pub fn value(&self) -> u64 {
        self.a ^ self.b.rotate_left(32)
    }
}

/// Live counters of an echo transfer.
#[derive(Debug, Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

/// How an echo transfer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EchoEnd {
    /// Every byte came back.
    Complete,
    /// The guest closed its side (EOF) before echoing everything.
    EarlyEof,
    /// The connection failed with this error (reset, broken pipe ...).
    Error(ErrorKind, String),
    /// Nothing moved for the stall limit: a hang.
    Stalled(String),
}

/// What an echo transfer did.
#[derive(Clone, Debug)]
pub struct EchoReport {
    pub total: u64,
    pub sent: u64,
    pub received: u64,
    pub sent_sum: Checksum,
    pub received_sum: Checksum,
    /// The offset of the first byte that came back different.
    pub first_mismatch: Option<u64>,
    pub end: EchoEnd,
    /// How the sending side ended (`None`: it sent everything).
    pub send_error: Option<String>,
    pub elapsed: Duration,
}

impl EchoReport {
    /// Everything sent came back intact, checksums equal.
    pub fn check_complete(&self) -> Result<(), String> {
        if self.end == EchoEnd::Complete
            && self.sent == self.total
            && self.received == self.total
            && self.first_mismatch.is_none()
            && self.sent_sum == self.received_sum
            && self.send_error.is_none()
        {
            return Ok(());
        }
        Err(format!(
            "echo of {} bytes: sent {}, received {}, checksums {:#018x} / {:#018x}, first \
             differing byte {:?}, ended {:?}, sender {:?}, after {:.1} s",
            self.total,
            self.sent,
            self.received,
            self.sent_sum.value(),
            self.received_sum.value(),
            self.first_mismatch,
            self.end,
            self.send_error,
            self.elapsed.as_secs_f64()
        ))
    }

    /// Mbit/s over the whole transfer, one direction.
    pub fn mbit_per_s(&self) -> f64 {
        self.received as f64 * 8.0 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// An echo transfer in the background: `total` bytes of the stream seeded
/// `seed` are sent while the echo is read back and compared.
pub struct EchoTransfer {
    pub progress: Arc<Progress>,
    done: mpsc::Receiver<EchoReport>,
    pub total: u64,
}

/// Connects to `addr` with timeouts on everything.
pub fn connect(addr: SocketAddr, stall: Duration) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.set_read_timeout(Some(stall))
        .and_then(|_| s.set_write_timeout(Some(stall)))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

fn is_stall(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

impl EchoTransfer {
    /// Connects and starts; socket operations that make no progress for
    /// `stall` end the transfer as `Stalled`.
    pub fn start(
        addr: SocketAddr,
        total: u64,
        seed: u64,
        stall: Duration,
    ) -> Result<EchoTransfer, String> {
        let stream = connect(addr, stall)?;
        let progress = Arc::new(Progress::default());
        let (tx, rx) = mpsc::channel();
        let p = Arc::clone(&progress);
        std::thread::Builder::new()
            .name("echo-transfer".into())
            .spawn(move || {
                let _ = tx.send(run_echo(stream, total, seed, &p));
            })
            .map_err(|e| format!("starting the transfer thread: {e}"))?;
        Ok(EchoTransfer {
            progress,
            done: rx,
            total,
        })
    }

    pub fn sent(&self) -> u64 {
        self.progress.sent.load(Ordering::Relaxed)
    }

    pub fn received(&self) -> u64 {
        self.progress.received.load(Ordering::Relaxed)
    }

    /// Waits until at least `bytes` came back.
    pub fn wait_received(&self, bytes: u64, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while self.received() < bytes {
            if Instant::now() >= deadline {
                return Err(format!(
                    "only {} of the first {bytes} bytes came back (sent {}) within {:.0} s",
                    self.received(),
                    self.sent(),
                    timeout.as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The report, once the transfer ends (within `limit`).
    pub fn join(self, limit: Duration) -> Result<EchoReport, String> {
        self.done.recv_timeout(limit).map_err(|_| {
            format!(
                "the echo transfer of {} bytes did not end within {:.0} s (sent {}, received {})",
                self.total,
                limit.as_secs_f64(),
                self.progress.sent.load(Ordering::Relaxed),
                self.progress.received.load(Ordering::Relaxed)
            )
        })
    }
}

const CHUNK: usize = 64 * 1024;

fn run_echo(stream: TcpStream, total: u64, seed: u64, p: &Arc<Progress>) -> EchoReport {
    let started = Instant::now();
    let writer = stream.try_clone();
    let pw = Arc::clone(p);
    let sender = std::thread::Builder::new().name("echo-send".into()).spawn(
        move || -> (Checksum, Option<String>) {
            let mut sum = Checksum::default();
            let mut w = match writer {
                Ok(w) => w,
                Err(e) => return (sum, Some(format!("cloning the socket: {e}"))),
            };
            let mut buf = vec![0u8; CHUNK];
            let mut at = 0u64;
            while at < total {
                let n = (total - at).min(CHUNK as u64) as usize;
                fill_stream(seed, at, &mut buf[..n]);
                if let Err(e) = w.write_all(&buf[..n]) {
                    let why = if is_stall(&e) {
                        format!("no send progress for the stall limit at byte {at}")
                    } else {
                        format!("{e} at byte {at}")
                    };
                    return (sum, Some(why));
                }
                sum.update(&buf[..n]);
                at += n as u64;
                pw.sent.store(at, Ordering::Relaxed);
            }
            let _ = w.shutdown(Shutdown::Write);
            (sum, None)
        },
    );
    let mut r = stream;
    let mut buf = vec![0u8; CHUNK];
    let mut want = vec![0u8; CHUNK];
    let mut received_sum = Checksum::default();
    let mut received = 0u64;
    let mut first_mismatch = None;
    let end = loop {
        match r.read(&mut buf) {
            Ok(0) => {
                break if received == total {
                    EchoEnd::Complete
                } else {
                    EchoEnd::EarlyEof
                };
            }
            Ok(n) => {
                let got = &buf[..n];
                received_sum.update(got);
                if first_mismatch.is_none() {
                    fill_stream(seed, received, &mut want[..n]);
                    if got != &want[..n] {
                        let k = got.iter().zip(&want[..n]).position(|(a, b)| a != b);
                        first_mismatch = Some(received + k.unwrap_or(0) as u64);
                    }
                }
                received += n as u64;
                p.received.store(received, Ordering::Relaxed);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if is_stall(&e) => {
                break EchoEnd::Stalled(format!(
                    "no echo for the stall limit after {received} bytes"
                ));
            }
            Err(e) => break EchoEnd::Error(e.kind(), e.to_string()),
        }
    };
    if !matches!(end, EchoEnd::Complete) {
        // Unblock a sender stuck on a full window.
        let _ = r.shutdown(Shutdown::Both);
    }
    let (sent_sum, send_error) = match sender {
        Ok(h) => h
            .join()
            .unwrap_or((Checksum::default(), Some("the sender panicked".into()))),
        Err(e) => (Checksum::default(), Some(format!("no sender thread: {e}"))),
    };
    EchoReport {
        total,
        sent: p.sent.load(Ordering::Relaxed),
        received,
        sent_sum,
        received_sum,
        first_mismatch,
        end,
        send_error,
        elapsed: started.elapsed(),
    }
}

/// One HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 client connection (keep-alive), with timeouts.
pub struct HttpConnection {
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl HttpConnection {
    pub fn open(addr: SocketAddr, stall: Duration) -> Result<HttpConnection, String> {
        Ok(HttpConnection {
            reader: BufReader::new(connect(addr, stall)?),
            addr,
        })
    }

    /// Sends `request` (raw bytes) and reads one response.
    pub fn raw(&mut self, request: &[u8]) -> Result<HttpResponse, String> {
        self.reader
            .get_mut()
            .write_all(request)
            .map_err(|e| format!("sending to {}: {e}", self.addr))?;
        read_response(&mut self.reader).map_err(|e| format!("reading from {}: {e}", self.addr))
    }

    /// `GET path`, keeping the connection open unless `close`.
    pub fn get(&mut self, path: &str, close: bool) -> Result<HttpResponse, String> {
        let connection = if close { "close" } else { "keep-alive" };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: spindle\r\nUser-Agent: spindle-tests\r\n\
             Connection: {connection}\r\n\r\n"
        );
        self.raw(req.as_bytes())
            .map_err(|e| format!("GET {path}: {e}"))
    }

    /// True when the server has closed the connection (EOF within `wait`).
    pub fn closed_by_server(&mut self, wait: Duration) -> bool {
        let s = self.reader.get_ref();
        let _ = s.set_read_timeout(Some(wait));
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
            || matches!(self.reader.read(&mut b), Err(e) if e.kind() == ErrorKind::ConnectionReset)
    }
}

/// `GET path` on a connection of its own (`Connection: close`).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<HttpResponse, String> {
    HttpConnection::open(addr, STALL)?.get(path, true)
}

fn read_line(r: &mut impl BufRead) -> Result<String, String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
    if line.is_empty() {
        return Err("the connection closed before a response".into());
    }
    if line.len() > 16 * 1024 {
        return Err("a response line over 16 KiB".into());
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| "a response line that is not UTF-8".into())
}

/// Reads one response; its body by `Content-Length`.
pub fn read_response(r: &mut impl BufRead) -> Result<HttpResponse, String> {
    let status_line = read_line(r)?;
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("a bad status line {status_line:?}"));
    };
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| format!("a bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| format!("a bad header line {line:?}"))?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
        if headers.len() > 100 {
            return Err("more than 100 headers".into());
        }
    }
    let response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let len: u64 = response
        .header("content-length")
        .ok_or_else(|| format!("no Content-Length in {:?}", response.headers))?
        .parse()
        .map_err(|_| format!("a bad Content-Length in {:?}", response.headers))?;
    let mut body = Vec::with_capacity(len.min(1 << 28) as usize);
    let got = r
        .take(len)
        .read_to_end(&mut body)
        .map_err(|e| format!("after {} of {len} body bytes: {e}", body.len()))?;
    if got as u64 != len {
        return Err(format!("the body ended after {got} of {len} bytes"));
    }
    Ok(HttpResponse { body, ..response })
}

/// `http`'s `/bytes/N` pattern: byte i is `i % 251`.
pub fn check_pattern(body: &[u8]) -> Result<(), String> {
    match body
        .iter()
        .enumerate()
        .position(|(i, &b)| b != (i % 251) as u8)
    {
        None => Ok(()),
        Some(i) => Err(format!(
            "byte {i} of the body is {}, the pattern says {}",
            body[i],
            i % 251
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_stream_is_random_access() {
        let mut whole = vec![0u8; 1000];
        fill_stream(7, 0, &mut whole);
        let mut part = vec![0u8; 333];
        fill_stream(7, 501, &mut part);
        assert_eq!(&whole[501..834], &part[..]);
        let mut other = vec![0u8; 1000];
        fill_stream(8, 0, &mut other);
        assert_ne!(whole, other);
        let (mut a, mut b) = (Checksum::default(), Checksum::default());
        a.update(&whole);
        b.update(&whole[..10]);
        b.update(&whole[10..]);
        assert_eq!(a, b);
        let mut c = Checksum::default();
        let mut swapped = whole.clone();
        swapped.swap(0, 1);
        c.update(&swapped);
        assert_ne!(a.value(), c.value());
    }

    #[test]
    fn rings_are_read_strictly() {
        let r = json!({"pid": 2, "name": "vnet0-rx0", "kind": "rx", "state": "RUN",
            "requests": "", "worker": 5, "frames": 123, "bytes": 45678, "kicks": 3,
            "interrupts": 40, "suppressed": 12, "drops": 0, "in_flight": 256});
        let rings = parse_rings(&json!({"rings": [r.clone()]})).unwrap();
        assert_eq!(rings[0].worker, Some(5));
        assert_eq!(rings[0].frames, 123);
        let mut bad = r.clone();
        bad["frames"] = json!("x");
        assert!(parse_rings(&json!({"rings": [bad]})).is_err());
        let mut none = r;
        none["worker"] = json!(null);
        assert_eq!(
            parse_rings(&json!({"rings": [none]})).unwrap()[0].worker,
            None
        );
        assert!(parse_rings(&json!([])).is_err());
    }

    #[test]
    fn responses_parse() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: y\r\n\r\nabcHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let mut r = BufReader::new(&raw[..]);
        let a = read_response(&mut r).unwrap();
        assert_eq!(
            (a.status, a.body.as_slice(), a.header("x")),
            (200, &b"abc"[..], Some("y"))
        );
        assert_eq!(read_response(&mut r).unwrap().status, 404);
        assert!(read_response(&mut r).is_err());
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc";
        assert!(read_response(&mut BufReader::new(&short[..])).is_err());
        assert!(check_pattern(&[0, 1, 2]).is_ok());
        assert!(check_pattern(&[0, 1, 3]).is_err());
    }

    /// The echo client against a local echo server (a thread here).
    #[test]
    fn the_echo_client_checks_what_comes_back() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for (i, s) in l.incoming().enumerate() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let mut at = 0u64;
                    loop {
                        let n = match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        // The second connection corrupts byte 5000.
                        if i == 1 && (at..at + n as u64).contains(&5000) {
                            buf[(5000 - at) as usize] ^= 1;
                        }
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        at += n as u64;
                    }
                    let _ = s.shutdown(Shutdown::Write);
                });
            }
        });
        let t = EchoTransfer::start(addr, 3_000_000, 1, STALL).unwrap();
        let r = t.join(Duration::from_secs(60)).unwrap();
        r.check_complete().unwrap();
        let t = EchoTransfer::start(addr, 100_000, 2, STALL).unwrap();
        let r = t.join(Duration::from_secs(60)).unwrap();
        assert_eq!(r.first_mismatch, Some(5000));
        assert!(r.check_complete().is_err());
    }
}
