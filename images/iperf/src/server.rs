//! The server (`iperf -s`): tests one after another on one listener.
//!
//! The main thread only accepts. What it does with a connection depends on
//! the [`Gate`]:
//!
//! - idle: the connection is a new test's control connection, served on a
//!   thread of its own (`iperf-ctl`);
//! - waiting for a test's data streams: the connection goes to that test,
//!   which reads its cookie (a stranger's gets `ACCESS_DENIED`);
//! - otherwise busy: `ACCESS_DENIED` at once, without reading (as iperf3).
//!
//! Every control read has a deadline ([`CONTROL_TIMEOUT`] outside the
//! data phase), so a silent or slow peer ends its own test with an error
//! and the server goes on to the next client.

use crate::cpu::CpuMeter;
use crate::proto::{
    self, COOKIE_SIZE, Cookie, Params, ReadFail, Results, State, StreamResult, ie, read_full,
    read_json, stream_id,
};
use crate::sock;
use crate::stream::{DRAIN, Payload, QUIT, RUN, Shared, Stream};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The longest any control read may wait outside the data phase (cookie,
/// parameters, results, the closing `IPERF_DONE`).
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest the data connections of a test may take to arrive.
pub const STREAMS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long past `time + omit` the client may take to send `TEST_END`.
pub const END_GRACE: Duration = Duration::from_secs(10);
/// A test in which no stream moves a byte for this long fails.
pub const NO_DATA_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the control thread looks at the streams during the test.
const TICK: Duration = Duration::from_millis(250);
/// Data connections that may wait to be looked at.
const STREAM_QUEUE: usize = 2 * proto::MAX_STREAMS as usize + 16;

/// What the acceptor does with the next connection.
enum Slot {
    Idle,
    Busy,
    Streams(SyncSender<TcpStream>),
}

struct Gate {
    slot: Mutex<Slot>,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, slot: Slot) {
        *self.lock() = slot;
    }

    fn dispatch(self: &Arc<Self>, s: TcpStream, peer: SocketAddr, one_off: bool) {
        let mut slot = self.lock();
        match &*slot {
            Slot::Idle => {
                *slot = Slot::Busy;
                drop(slot);
                let gate = Arc::clone(self);
                let spawned = std::thread::Builder::new()
                    .name("iperf-ctl".into())
                    .spawn(move || serve(s, peer, gate, one_off));
                if let Err(e) = spawned {
                    println!("iperf: error: peer={peer}: cannot start a control thread: {e}");
                    self.set(Slot::Idle);
                }
            }
            Slot::Busy => deny(s, peer, true),
            Slot::Streams(tx) => match tx.try_send(s) {
                Ok(()) => {}
                Err(TrySendError::Full(s) | TrySendError::Disconnected(s)) => deny(s, peer, true),
            },
        }
    }
}

/// Resets the gate when a test's thread ends, however it ends.
struct Release(Arc<Gate>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.set(Slot::Idle);
    }
}

/// Answers `ACCESS_DENIED` and closes.
fn deny(mut s: TcpStream, peer: SocketAddr, say: bool) {
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = s.write_all(&[State::AccessDenied.code() as u8]);
    if say {
        println!("iperf: busy: denied peer={peer}");
    }
}

/// Runs the server; returns only when it cannot listen.
pub fn run(port: u16, one_off: bool) -> ExitCode {
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("iperf: error: cannot listen on 0.0.0.0:{port}: {e}");
            return ExitCode::from(1);
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    println!("iperf: server listening on 0.0.0.0:{port}");
    let _ = std::io::stdout().flush();
    let gate = Arc::new(Gate {
        slot: Mutex::new(Slot::Idle),
    });
    loop {
        match listener.accept() {
            Ok((s, peer)) => gate.dispatch(s, peer, one_off),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors, a connection reset before accept:
                // carry on after a breath.
                eprintln!("iperf: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// One test, on its `iperf-ctl` thread: runs it, frees the gate, prints
/// its line (and with `-1` ends the process).
fn serve(ctrl: TcpStream, peer: SocketAddr, gate: Arc<Gate>, one_off: bool) {
    let release = Release(Arc::clone(&gate));
    let outcome = {
        let mut t = Session {
            ctrl,
            gate: &gate,
            streams: Vec::new(),
            shared: Arc::new(Shared::default()),
        };
        t.run()
        // Dropping the session stops and joins its streams.
    };
    drop(release);
    let ok = outcome.is_ok();
    match outcome {
        Ok(d) => println!(
            "iperf: done peer={peer} mode={} streams={} sent={} received={} seconds={:.3}",
            d.mode, d.streams, d.sent, d.received, d.seconds
        ),
        Err(e) => println!("iperf: error: peer={peer}: {e}"),
    }
    let _ = std::io::stdout().flush();
    if one_off {
        std::process::exit(if ok { 0 } else { 1 });
    }
}

/// What the `done` line reports.
struct Done {
    mode: &'static str,
    streams: u32,
    sent: u64,
    received: u64,
    seconds: f64,
}

struct Session<'a> {
    ctrl: TcpStream,
    gate: &'a Gate,
    streams: Vec<Stream>,
    shared: Arc<Shared>,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.shared.set_phase(QUIT);
        for s in &mut self.streams {
            s.stop();
        }
    }
}

fn deadline() -> Instant {
    Instant::now() + CONTROL_TIMEOUT
}

impl Session<'_> {
    fn send(&mut self, state: State) -> Result<(), String> {
        proto::write_state(&mut self.ctrl, state)
            .map_err(|e| format!("sending {}: {e}", state.name()))
    }

    /// Tells the client why the test fails (`SERVER_ERROR`), if it still
    /// listens; the failure itself is the caller's.
    fn refuse(&mut self, i_errno: i32, errno: i32) {
        let mut msg = [0u8; 9];
        msg[0] = State::ServerError.code() as u8;
        msg[1..5].copy_from_slice(&i_errno.to_be_bytes());
        msg[5..9].copy_from_slice(&errno.to_be_bytes());
        let _ = self.ctrl.write_all(&msg);
    }

    /// The next state message within `wait`: `Ok(None)` when none came.
    /// The peer closing, or a byte that is no state, is an error.
    fn next_state(&mut self, wait: Duration, during: &str) -> Result<Option<State>, String> {
        let mut b = [0u8; 1];
        match read_full(&mut self.ctrl, &mut b, Instant::now() + wait) {
            Ok(()) => match State::from_code(b[0] as i8) {
                Some(s) => Ok(Some(s)),
                None => {
                    self.refuse(ie::MESSAGE, 0);
                    Err(format!("unknown state message {} {during}", b[0] as i8))
                }
            },
            Err(ReadFail::Timeout) => Ok(None),
            Err(ReadFail::Closed { .. }) => {
                Err(format!("the client closed the control connection {during}"))
            }
            Err(ReadFail::Io(e)) => Err(format!("reading the control connection {during}: {e}")),
        }
    }

    fn run(&mut self) -> Result<Done, String> {
        self.ctrl
            .set_nodelay(true)
            .and_then(|_| self.ctrl.set_write_timeout(Some(CONTROL_TIMEOUT)))
            .map_err(|e| format!("setting up the control connection: {e}"))?;
        let mut raw = [0u8; COOKIE_SIZE];
        read_full(&mut self.ctrl, &mut raw, deadline())
            .map_err(|f| proto::describe_read("the cookie", &f, CONTROL_TIMEOUT))?;
        let cookie = Cookie::from_wire(raw)?;

        self.send(State::ParamExchange)?;
        let json = match read_json(&mut self.ctrl, "parameters", deadline(), CONTROL_TIMEOUT) {
            Ok(j) => j,
            Err(e) => {
                self.refuse(ie::RECVPARAMS, 0);
                return Err(e);
            }
        };
        let params = match Params::from_json(&json) {
            Ok(p) => p,
            Err((code, why)) => {
                self.refuse(code, 0);
                return Err(format!("refused the parameters: {why}"));
            }
        };

        let (tx, rx) = sync_channel(STREAM_QUEUE);
        self.gate.set(Slot::Streams(tx));
        let accepted = self
            .send(State::CreateStreams)
            .and_then(|_| self.accept_streams(&rx, &cookie, &params));
        self.gate.set(Slot::Busy);
        while let Ok(s) = rx.try_recv() {
            if let Ok(peer) = s.peer_addr() {
                deny(s, peer, false);
            }
        }
        accepted?;

        let cpu = CpuMeter::start();
        self.send(State::TestStart)?;
        let mut start = Instant::now();
        self.send(State::TestRunning)?;
        self.shared.set_phase(RUN);
        let payload = if params.repeating_payload {
            Payload::Repeating
        } else {
            Payload::Random
        };
        for i in 0..self.streams.len() {
            let started = self.streams[i].start(&self.shared, params.len, payload);
            if let Err(e) = started {
                self.refuse(ie::INITSTREAM, 0);
                return Err(e);
            }
        }

        // The data phase: wait for TEST_END, watching the omit period, the
        // streams and the time limits.
        let mut omit_end = (params.omit > 0).then(|| start + Duration::from_secs(params.omit));
        let mut base: Vec<u64> = vec![0; self.streams.len()];
        let mut retrans_base: Vec<u64> = vec![0; self.streams.len()];
        let limit = (params.time > 0)
            .then(|| start + Duration::from_secs(params.time + params.omit) + END_GRACE);
        let (mut moved, mut last_move) = (0u64, Instant::now());
        loop {
            let now = Instant::now();
            if let Some(t) = omit_end.filter(|t| now >= *t) {
                // iperf3's omit timer: the counts start again from here.
                base = self.streams.iter().map(Stream::bytes).collect();
                retrans_base = self.streams.iter().map(retransmits).collect();
                start = t;
                omit_end = None;
            }
            if let Some(e) = self.shared.error() {
                let code = if e.contains("writing") {
                    ie::STREAMWRITE
                } else {
                    ie::STREAMREAD
                };
                self.refuse(code, 0);
                return Err(e);
            }
            if limit.is_some_and(|l| now >= l) {
                self.refuse(ie::NOMSG, 0);
                return Err(format!(
                    "no TEST_END within {} s of the test's {} s (time {} + omit {})",
                    END_GRACE.as_secs(),
                    params.time + params.omit,
                    params.time,
                    params.omit
                ));
            }
            let total: u64 = self.streams.iter().map(Stream::bytes).sum();
            if total != moved {
                (moved, last_move) = (total, now);
            } else if now.duration_since(last_move) >= NO_DATA_TIMEOUT {
                self.refuse(ie::NOMSG, 0);
                return Err(format!("no data moved for {} s", NO_DATA_TIMEOUT.as_secs()));
            }
            let wait = omit_end
                .map_or(TICK, |t| t.saturating_duration_since(now).min(TICK))
                .max(Duration::from_millis(1));
            match self.next_state(wait, "during the test")? {
                None | Some(State::TestStart | State::TestRunning) => {}
                Some(State::TestEnd) => break,
                Some(State::ClientTerminate) => return Err("the client terminated the test".into()),
                Some(other) => {
                    self.refuse(ie::MESSAGE, 0);
                    return Err(format!("unexpected {} during the test", other.name()));
                }
            }
        }

        // TEST_END: stop the streams (iperf3 closes them here) and count.
        let end = Instant::now();
        self.shared.set_phase(DRAIN);
        let retrans_end: Vec<u64> = self.streams.iter().map(retransmits).collect();
        let has_retransmits = self
            .streams
            .iter()
            .find(|s| s.sender)
            .is_some_and(|s| sock::tcp_info(s.fd()).is_some());
        let congestion = self
            .streams
            .first()
            .and_then(|s| sock::congestion(s.fd()))
            .unwrap_or_else(|| "unknown".into());
        self.shared.set_phase(QUIT);
        for s in &mut self.streams {
            s.stop();
        }
        let cpu = cpu.finish();
        let seconds = end.saturating_duration_since(start).as_secs_f64();
        let moved: Vec<u64> = self
            .streams
            .iter()
            .zip(&base)
            .map(|(s, b)| s.bytes().saturating_sub(*b))
            .collect();
        let mode = match (params.reverse, params.bidir) {
            (_, true) => "bidir",
            (true, _) => "send",
            _ => "receive",
        };
        let ours = Results {
            cpu,
            sender_has_retransmits: if mode == "receive" {
                -1
            } else {
                i64::from(has_retransmits)
            },
            congestion_used: Some(congestion),
            streams: self
                .streams
                .iter()
                .enumerate()
                .map(|(i, s)| StreamResult {
                    id: i64::from(s.id),
                    bytes: moved[i],
                    retransmits: if s.sender && has_retransmits {
                        retrans_end[i].saturating_sub(retrans_base[i]) as i64
                    } else {
                        -1
                    },
                    jitter: 0.0,
                    errors: 0,
                    packets: 0,
                    start_time: 0.0,
                    end_time: seconds,
                })
                .collect(),
        };

        self.send(State::ExchangeResults)?;
        let theirs = read_json(&mut self.ctrl, "results", deadline(), CONTROL_TIMEOUT)
            .and_then(|m| Results::from_json(&m));
        let theirs = match theirs {
            Ok(r) => r,
            Err(e) => {
                self.refuse(ie::RECVRESULTS, 0);
                return Err(e);
            }
        };
        if let Some(s) = theirs
            .streams
            .iter()
            .find(|r| !self.streams.iter().any(|s| i64::from(s.id) == r.id))
        {
            self.refuse(ie::STREAMID, 0);
            return Err(format!(
                "the client's results name stream {}, which this test does not have",
                s.id
            ));
        }
        proto::write_json(&mut self.ctrl, &ours.to_json())
            .map_err(|e| format!("sending the results: {e}"))?;
        self.send(State::DisplayResults)?;
        match self.next_state(CONTROL_TIMEOUT, "before IPERF_DONE")? {
            Some(State::IperfDone) => {}
            None => {
                return Err(format!(
                    "no IPERF_DONE within {} s",
                    CONTROL_TIMEOUT.as_secs()
                ));
            }
            Some(other) => return Err(format!("{} instead of IPERF_DONE", other.name())),
        }

        let total = |sender: bool| -> u64 {
            self.streams
                .iter()
                .zip(&moved)
                .filter(|(s, _)| s.sender == sender)
                .map(|(_, m)| *m)
                .sum()
        };
        Ok(Done {
            mode,
            streams: params.parallel,
            sent: total(true),
            received: total(false),
            seconds,
        })
    }

    /// Takes the test's data connections as they arrive: the first ones
    /// are the receivers (the client opens its senders first), then the
    /// senders; ids as iperf3 numbers them.
    fn accept_streams(
        &mut self,
        rx: &Receiver<TcpStream>,
        cookie: &Cookie,
        params: &Params,
    ) -> Result<(), String> {
        let receivers = if params.reverse {
            0
        } else {
            params.parallel as usize
        };
        let senders = if params.reverse || params.bidir {
            params.parallel as usize
        } else {
            0
        };
        let want = receivers + senders;
        let until = Instant::now() + STREAMS_TIMEOUT;
        while self.streams.len() < want {
            let left = until.saturating_duration_since(Instant::now());
            let Ok(mut s) = rx.recv_timeout(left) else {
                self.refuse(ie::STREAMACCEPT, 0);
                return Err(format!(
                    "only {} of {want} data connections came within {} s",
                    self.streams.len(),
                    STREAMS_TIMEOUT.as_secs()
                ));
            };
            let mut raw = [0u8; COOKIE_SIZE];
            match read_full(&mut s, &mut raw, until) {
                Ok(()) if &raw == cookie.wire() => {}
                Ok(()) => {
                    // Some other client's connection: iperf3 denies it.
                    if let Ok(peer) = s.peer_addr() {
                        deny(s, peer, true);
                    }
                    continue;
                }
                // It closed or said too little: forget it.
                Err(_) => continue,
            }
            if let Err((code, errno, why)) = configure(&s, params) {
                self.refuse(code, errno);
                return Err(why);
            }
            let index = self.streams.len();
            self.streams
                .push(Stream::new(stream_id(index), index >= receivers, s));
        }
        Ok(())
    }
}

/// A sender's retransmit count so far (0 when the OS does not say).
fn retransmits(s: &Stream) -> u64 {
    if s.sender {
        sock::tcp_info(s.fd()).map_or(0, |t| t.total_retrans)
    } else {
        0
    }
}

/// Applies the test's socket options to a data connection (iperf3 sets
/// them on its listener; here they go on the accepted socket): `window`
/// as `SO_RCVBUF` and `SO_SNDBUF`, checked to have taken (`IESETBUF2`),
/// and `TCP_NODELAY`.
fn configure(s: &TcpStream, params: &Params) -> Result<(), (i32, i32, String)> {
    use std::os::fd::AsRawFd;
    let fd = s.as_raw_fd();
    if params.window > 0 {
        sock::set_window(fd, params.window).map_err(|e| {
            (
                ie::SETBUF,
                e.raw_os_error().unwrap_or(0),
                format!("setting socket buffers of {} bytes: {e}", params.window),
            )
        })?;
        let (snd, rcv) = sock::buffers(fd).map_err(|e| {
            (
                ie::SETBUF,
                e.raw_os_error().unwrap_or(0),
                format!("reading socket buffer sizes: {e}"),
            )
        })?;
        if snd < params.window || rcv < params.window {
            return Err((
                ie::SETBUF2,
                0,
                format!(
                    "asked for {} byte socket buffers, got {snd} (send) and {rcv} (receive)",
                    params.window
                ),
            ));
        }
    }
    if params.nodelay {
        s.set_nodelay(true).map_err(|e| {
            (
                ie::SETNODELAY,
                e.raw_os_error().unwrap_or(0),
                format!("setting TCP_NODELAY: {e}"),
            )
        })?;
    }
    Ok(())
}
