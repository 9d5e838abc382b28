//! The client (`iperf -c HOST`): one test against an iperf3 server, its
//! control connection on a thread named `iperf-ctl`, each data stream on
//! its own (`iperf-stream<ID>`).
//!
//! Output is iperf3's: per-second interval lines and the sender/receiver
//! summary (or, with `-J`, the same figures as iperf3's JSON document),
//! then `iperf: done ...` (see the crate documentation).

use crate::cli::ClientOptions;
use crate::cpu::CpuMeter;
use crate::proto::{
    self, Cookie, Params, ReadFail, Results, State, StreamResult, read_full, read_json, stream_id,
};
use crate::report::{self, Extra, Row, SEPARATOR, Who};
use crate::sock;
use crate::stream::{DRAIN, Payload, QUIT, RUN, Shared, Stream};
use serde_json::{Map, Value, json};
use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest a connection to the server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest any control read may wait outside the data phase.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// iperf3's reporting interval.
const INTERVAL: Duration = Duration::from_secs(1);
/// A last interval shorter than this (10% of an interval, iperf3's rule)
/// is not shown.
const SHORTEST_INTERVAL: f64 = 0.1;

/// Runs a test; the exit status is 0 on success, 1 on a test error.
mod output;

pub fn run(opts: ClientOptions) -> ExitCode {
    let spawned = std::thread::Builder::new()
        .name("iperf-ctl".into())
        .spawn(move || test(opts));
    let code = match spawned {
        Ok(h) => h.join().unwrap_or(1),
        Err(e) => {
            eprintln!("iperf: error: cannot start the control thread: {e}");
            1
        }
    };
    ExitCode::from(code)
}

fn test(opts: ClientOptions) -> u8 {
    let mut c = Client::new(opts);
    let outcome = c.run();
    c.shared.set_phase(QUIT);
    for s in &mut c.streams {
        s.s.stop();
    }
    match outcome {
        Ok(()) => {
            c.finish(None);
            0
        }
        Err(e) => {
            c.finish(Some(&e));
            1
        }
    }
}

/// A data stream and its accounting.
struct ClientStream {
    s: Stream,
    /// The counter where the current epoch (after the omit period) began.
    base: u64,
    /// The counter at the last interval boundary.
    last: u64,
    /// The stream's bytes of the test (after the omit period).
    total: u64,
    retrans_base: u64,
    retrans_last: u64,
    retrans_total: u64,
    max_cwnd: u64,
    max_snd_wnd: u64,
    max_rtt: u64,
    min_rtt: u64,
    sum_rtt: u64,
    rtt_samples: u64,
    /// The server's entry for this stream.
    peer: Option<StreamResult>,
}

impl ClientStream {
    fn fd(&self) -> i64 {
        i64::from(self.s.fd())
    }
}

/// One stream's share of an interval.
struct Slice {
    bytes: u64,
    retrans: u64,
    tcp: Option<sock::TcpInfo>,
}

/// One direction's figures in the summary.
struct Direction {
    /// Whether this client sends in this direction.
    we_send: bool,
    sender_time: f64,
    receiver_time: f64,
    /// Retransmit counts are known for the sender of this direction.
    retransmits: bool,
    /// `(stream index, sent, received, retransmits)`.
    rows: Vec<(usize, u64, u64, i64)>,
}

impl Direction {
    fn sent(&self) -> u64 {
        self.rows.iter().map(|r| r.1).sum()
    }

    fn received(&self) -> u64 {
        self.rows.iter().map(|r| r.2).sum()
    }

    fn retransmitted(&self) -> i64 {
        self.rows.iter().map(|r| r.3.max(0)).sum()
    }
}

struct Client {
    o: ClientOptions,
    cookie: Cookie,
    ctrl: Option<TcpStream>,
    peer: Option<SocketAddr>,
    streams: Vec<ClientStream>,
    shared: Arc<Shared>,
    /// This side sends and can read retransmit counts (`TCP_INFO`).
    has_retransmits: bool,
    /// Where interval times count from (reset when the omit period ends).
    epoch: Instant,
    interval_start: Instant,
    /// The next interval is the first of its epoch (prints the header).
    first_of_epoch: bool,
    /// Seconds from the epoch to the end of the test.
    seconds: f64,
    cpu: [f64; 3],
    theirs: Option<Results>,
    congestion: String,
    start: Map<String, Value>,
    intervals: Vec<Value>,
}

fn bits_per_second(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 * 8.0 / seconds
    } else {
        0.0
    }
}

impl Client {
    fn new(o: ClientOptions) -> Client {
        let now = Instant::now();
        Client {
            o,
            cookie: Cookie::generate(),
            ctrl: None,
            peer: None,
            streams: Vec::new(),
            shared: Arc::new(Shared::default()),
            has_retransmits: false,
            epoch: now,
            interval_start: now,
            first_of_epoch: true,
            seconds: 0.0,
            cpu: [0.0; 3],
            theirs: None,
            congestion: "unknown".into(),
            start: Map::new(),
            intervals: Vec::new(),
        }
    }

    fn human(&self) -> bool {
        !self.o.json
    }

    fn mode(&self) -> &'static str {
        match (self.o.reverse, self.o.bidir) {
            (_, true) => "bidir",
            (true, _) => "receive",
            _ => "send",
        }
    }

    fn ctrl(&mut self) -> Result<&mut TcpStream, String> {
        self.ctrl
            .as_mut()
            .ok_or_else(|| "no control connection".to_string())
    }

    /// Reads the next state message within `wait`; the server's own
    /// failures (busy, an error, terminated) and a closed connection are
    /// errors. `Ok(None)`: nothing came.
    fn next_state(&mut self, wait: Duration, waiting_for: &str) -> Result<Option<State>, String> {
        let ctrl = self.ctrl()?;
        let mut b = [0u8; 1];
        match read_full(ctrl, &mut b, Instant::now() + wait) {
            Ok(()) => {}
            Err(ReadFail::Timeout) => return Ok(None),
            Err(ReadFail::Closed { .. }) => {
                return Err(format!(
                    "control socket has closed unexpectedly (waiting for {waiting_for})"
                ));
            }
            Err(ReadFail::Io(e)) => return Err(format!("reading the control socket: {e}")),
        }
        match State::from_code(b[0] as i8) {
            Some(State::AccessDenied) => Err(proto::server_error_text(121, 0)),
            Some(State::ServerTerminate) => Err(proto::server_error_text(120, 0)),
            Some(State::ServerError) => {
                let mut codes = [0u8; 8];
                read_full(ctrl, &mut codes, Instant::now() + CONTROL_TIMEOUT).map_err(|f| {
                    proto::describe_read("the server's error codes", &f, CONTROL_TIMEOUT)
                })?;
                let i_errno = i32::from_be_bytes([codes[0], codes[1], codes[2], codes[3]]);
                let errno = i32::from_be_bytes([codes[4], codes[5], codes[6], codes[7]]);
                Err(proto::server_error_text(i_errno, errno))
            }
            Some(s) => Ok(Some(s)),
            None => Err(format!(
                "received an unknown control message ({})",
                b[0] as i8
            )),
        }
    }

    /// Waits for `want` (within [`CONTROL_TIMEOUT`]).
    fn expect(&mut self, want: State) -> Result<(), String> {
        match self.next_state(CONTROL_TIMEOUT, want.name())? {
            Some(s) if s == want => Ok(()),
            Some(s) => Err(format!(
                "the server sent {} while this client waited for {}",
                s.name(),
                want.name()
            )),
            None => Err(format!(
                "no {} from the server within {} s",
                want.name(),
                CONTROL_TIMEOUT.as_secs()
            )),
        }
    }

    fn send_state(&mut self, state: State) -> Result<(), String> {
        let ctrl = self.ctrl()?;
        proto::write_state(ctrl, state)
            .map_err(|e| format!("unable to send control message {}: {e}", state.name()))
    }

    fn params(&self) -> Params {
        Params {
            time: self.o.time,
            omit: self.o.omit,
            bytes: 0,
            blocks: 0,
            parallel: self.o.parallel,
            reverse: self.o.reverse,
            bidir: self.o.bidir,
            window: self.o.window,
            len: self.o.len,
            nodelay: false,
            repeating_payload: false,
        }
    }

    fn run(&mut self) -> Result<(), String> {
        let host = self.o.host.clone();
        let port = self.o.port;
        let addr = resolve(&host, port)?;
        let now_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.start.insert(
            "version".into(),
            json!(format!(
                "iperf (spindle) {} (iperf3 {} protocol)",
                env!("CARGO_PKG_VERSION"),
                proto::PROTOCOL_VERSION
            )),
        );
        self.start
            .insert("system_info".into(), json!(sock::system_info()));
        self.start.insert(
            "timestamp".into(),
            json!({"time": report::rfc1123(now_secs), "timesecs": now_secs}),
        );
        self.start
            .insert("connecting_to".into(), json!({"host": host, "port": port}));
        if self.human() {
            println!("Connecting to host {host}, port {port}");
            if self.o.reverse {
                println!("Reverse mode, remote host {host} is sending");
            }
        }

        let mut ctrl = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| format!("unable to connect to server {addr}: {e}"))?;
        ctrl.set_nodelay(true)
            .and_then(|_| ctrl.set_write_timeout(Some(CONTROL_TIMEOUT)))
            .map_err(|e| format!("setting up the control connection: {e}"))?;
        ctrl.write_all(self.cookie.wire())
            .map_err(|e| format!("unable to send cookie to server: {e}"))?;
        self.peer = Some(ctrl.peer_addr().unwrap_or(addr));
        let mss = sock::mss(std::os::fd::AsRawFd::as_raw_fd(&ctrl)).unwrap_or(0);
        self.ctrl = Some(ctrl);
        self.start
            .insert("cookie".into(), json!(self.cookie.text()));
        self.start.insert("tcp_mss_default".into(), json!(mss));
        self.start.insert("target_bitrate".into(), json!(0));

        self.expect(State::ParamExchange)?;
        let params = self.params().to_json();
        proto::write_json(self.ctrl()?, &params)
            .map_err(|e| format!("unable to send parameters to server: {e}"))?;
        self.expect(State::CreateStreams)?;
        self.create_streams(addr)?;
        self.expect(State::TestStart)?;
        let cpu = CpuMeter::start();
        let start = Instant::now();
        self.start.insert(
            "test_start".into(),
            json!({
                "protocol": "TCP", "num_streams": self.o.parallel, "blksize": self.o.len,
                "omit": self.o.omit, "duration": self.o.time, "bytes": 0, "blocks": 0,
                "reverse": i32::from(self.o.reverse), "tos": 0, "target_bitrate": 0,
            }),
        );
        self.expect(State::TestRunning)?;
        self.shared.set_phase(RUN);
        for s in &mut self.streams {
            s.s.start(&self.shared, self.o.len, Payload::Random)?;
        }
        self.run_intervals(start)?;

        // The end: senders stop after their write in progress, receivers
        // keep draining (uncounted) until the server closes.
        self.shared.set_phase(DRAIN);
        let stop = Instant::now();
        for s in self.streams.iter_mut().filter(|s| s.s.sender) {
            s.s.join();
        }
        let last = stop
            .saturating_duration_since(self.interval_start)
            .as_secs_f64();
        if last >= SHORTEST_INTERVAL {
            self.interval(stop, false);
        }
        self.seconds = stop.saturating_duration_since(self.epoch).as_secs_f64();
        for s in &mut self.streams {
            s.total = s.s.bytes().saturating_sub(s.base);
            let retrans = if s.s.sender {
                sock::tcp_info(s.s.fd()).map_or(s.retrans_last, |t| t.total_retrans)
            } else {
                0
            };
            s.retrans_total = retrans.saturating_sub(s.retrans_base);
        }
        if let Some(c) = self
            .streams
            .first()
            .and_then(|s| sock::congestion(s.s.fd()))
        {
            self.congestion = c;
        }
        self.cpu = cpu.finish();
        self.send_state(State::TestEnd)?;

        self.expect(State::ExchangeResults)?;
        let ours = self.results().to_json();
        proto::write_json(self.ctrl()?, &ours)
            .map_err(|e| format!("unable to send results: {e}"))?;
        let theirs = read_json(
            self.ctrl()?,
            "server's results",
            Instant::now() + CONTROL_TIMEOUT,
            CONTROL_TIMEOUT,
        )
        .and_then(|m| Results::from_json(&m))
        .map_err(|e| format!("unable to receive results: {e}"))?;
        for r in &theirs.streams {
            let Some(s) = self.streams.iter_mut().find(|s| i64::from(s.s.id) == r.id) else {
                return Err(format!(
                    "stream has an invalid id: the server's results name stream {}",
                    r.id
                ));
            };
            s.peer = Some(r.clone());
        }
        self.theirs = Some(theirs);
        self.expect(State::DisplayResults)?;

        self.shared.set_phase(QUIT);
        for s in &mut self.streams {
            s.s.stop();
        }
        self.send_state(State::IperfDone)?;
        self.ctrl = None;
        Ok(())
    }

    /// Opens the data connections: the senders first, then (bidirectional)
    /// the receivers, each with the cookie.
    fn create_streams(&mut self, addr: SocketAddr) -> Result<(), String> {
        let n = self.o.parallel as usize;
        let roles: Vec<bool> = if self.o.bidir {
            (0..2 * n).map(|i| i < n).collect()
        } else {
            vec![!self.o.reverse; n]
        };
        let mut connected = Vec::new();
        for (i, sender) in roles.into_iter().enumerate() {
            let id = stream_id(i);
            let mut s = sock::connect(addr, self.o.window, CONNECT_TIMEOUT)
                .map_err(|e| format!("unable to connect stream {id} to {addr}: {e}"))?;
            s.set_write_timeout(Some(CONTROL_TIMEOUT))
                .and_then(|_| s.write_all(self.cookie.wire()))
                .map_err(|e| format!("unable to send cookie on stream {id}: {e}"))?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
            let (snd, rcv) = sock::buffers(fd)
                .map_err(|e| format!("unable to read socket buffer sizes: {e}"))?;
            if self.o.window > 0 && (snd < self.o.window || rcv < self.o.window) {
                return Err(format!(
                    "socket buffer size not set correctly: asked for {}, got {snd} (send) and {rcv} (receive)",
                    self.o.window
                ));
            }
            self.start
                .insert("sock_bufsize".into(), json!(self.o.window));
            self.start.insert("sndbuf_actual".into(), json!(snd));
            self.start.insert("rcvbuf_actual".into(), json!(rcv));
            let local = s.local_addr().map_err(|e| format!("stream {id}: {e}"))?;
            let remote = s.peer_addr().map_err(|e| format!("stream {id}: {e}"))?;
            if self.human() {
                println!(
                    "[{:3}] local {} port {} connected to {} port {}",
                    fd,
                    local.ip(),
                    local.port(),
                    remote.ip(),
                    remote.port()
                );
            }
            connected.push(json!({
                "socket": fd, "local_host": local.ip().to_string(), "local_port": local.port(),
                "remote_host": remote.ip().to_string(), "remote_port": remote.port(),
            }));
            self.streams.push(ClientStream {
                s: Stream::new(id, sender, s),
                base: 0,
                last: 0,
                total: 0,
                retrans_base: 0,
                retrans_last: 0,
                retrans_total: 0,
                max_cwnd: 0,
                max_snd_wnd: 0,
                max_rtt: 0,
                min_rtt: 0,
                sum_rtt: 0,
                rtt_samples: 0,
                peer: None,
            });
        }
        self.start
            .insert("connected".into(), Value::Array(connected));
        self.has_retransmits = !self.o.reverse
            && self
                .streams
                .iter()
                .find(|s| s.s.sender)
                .is_some_and(|s| sock::tcp_info(s.s.fd()).is_some());
        Ok(())
    }

    /// The data phase: an interval line every second, the omit period's
    /// end, and any message from the server (only failures may come).
    fn run_intervals(&mut self, start: Instant) -> Result<(), String> {
        let end_at = start + Duration::from_secs(self.o.time + self.o.omit);
        let mut omit_end = (self.o.omit > 0).then(|| start + Duration::from_secs(self.o.omit));
        self.epoch = start;
        self.interval_start = start;
        self.first_of_epoch = true;
        let mut next_tick = start + INTERVAL;
        loop {
            if let Some(e) = self.shared.error() {
                return Err(e);
            }
            let now = Instant::now();
            if omit_end.is_some_and(|t| now >= t) {
                // iperf3's omit timer: the last omitted interval, then
                // every count starts again from here.
                self.interval(now, true);
                for s in &mut self.streams {
                    s.base = s.last;
                    s.retrans_base = s.retrans_last;
                }
                self.epoch = now;
                self.interval_start = now;
                self.first_of_epoch = true;
                next_tick = now + INTERVAL;
                omit_end = None;
                continue;
            }
            if now >= end_at {
                return Ok(());
            }
            if now >= next_tick {
                self.interval(now, omit_end.is_some());
                next_tick += INTERVAL;
                if next_tick <= now {
                    next_tick = now + INTERVAL;
                }
                continue;
            }
            let boundary = omit_end.map_or(next_tick, |t| t.min(next_tick)).min(end_at);
            let wait = boundary
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            match self.next_state(wait, "the end of the test")? {
                None | Some(State::TestRunning) => {}
                Some(s) => return Err(format!("the server sent {} during the test", s.name())),
            }
        }
    }

    /// Closes the interval ending `now`: reads every stream's counters,
    /// prints the lines or records the JSON.
    fn interval(&mut self, now: Instant, omitted: bool) {
        let seconds = now
            .saturating_duration_since(self.interval_start)
            .as_secs_f64();
        let st = self
            .interval_start
            .saturating_duration_since(self.epoch)
            .as_secs_f64();
        let et = now.saturating_duration_since(self.epoch).as_secs_f64();
        let has_retransmits = self.has_retransmits;
        let slices: Vec<Slice> = self
            .streams
            .iter_mut()
            .map(|s| {
                let bytes = s.s.bytes();
                let delta = bytes.saturating_sub(s.last);
                s.last = bytes;
                let tcp = (has_retransmits && s.s.sender)
                    .then(|| sock::tcp_info(s.s.fd()))
                    .flatten();
                let mut retrans = 0;
                if let Some(t) = tcp {
                    retrans = t.total_retrans.saturating_sub(s.retrans_last);
                    s.retrans_last = t.total_retrans;
                    s.max_cwnd = s.max_cwnd.max(t.snd_cwnd);
                    s.max_snd_wnd = s.max_snd_wnd.max(t.snd_wnd);
                    s.max_rtt = s.max_rtt.max(t.rtt);
                    if s.rtt_samples == 0 || t.rtt < s.min_rtt {
                        s.min_rtt = t.rtt;
                    }
                    s.sum_rtt += t.rtt;
                    s.rtt_samples += 1;
                }
                Slice {
                    bytes: delta,
                    retrans,
                    tcp,
                }
            })
            .collect();
        self.interval_start = now;
        let first = std::mem::replace(&mut self.first_of_epoch, false);
        let tail = if omitted { "(omitted)" } else { "" };
        let mut streams_json = Vec::new();
        let mut interval = Map::new();
        for sender in self.blocks() {
            let role = self.role(sender);
            let (mut sum, mut sum_retrans) = (0u64, 0u64);
            for (i, s) in self
                .streams
                .iter()
                .enumerate()
                .filter(|(_, s)| s.s.sender == sender)
            {
                let slice = &slices[i];
                sum += slice.bytes;
                sum_retrans += slice.retrans;
                let detailed = has_retransmits && sender;
                if self.human() {
                    if i == 0 {
                        if first {
                            println!("{}", report::header(self.o.bidir, has_retransmits, true));
                        } else if self.o.parallel > 1 {
                            println!("{SEPARATOR}");
                        }
                    }
                    let extra = match slice.tcp {
                        Some(t) if detailed => {
                            Extra::RetransmitsCwnd(slice.retrans as i64, t.snd_cwnd)
                        }
                        _ => Extra::None,
                    };
                    let row = Row {
                        who: Who::Stream(s.fd()),
                        role,
                        start: st,
                        end: et,
                        bytes: slice.bytes,
                        seconds,
                        extra,
                        tail,
                    };
                    println!("{}", row.render());
                }
                let mut j = json!({
                    "socket": s.fd(), "start": st, "end": et, "seconds": seconds,
                    "bytes": slice.bytes, "bits_per_second": bits_per_second(slice.bytes, seconds),
                    "omitted": omitted, "sender": sender,
                });
                if detailed {
                    let t = slice.tcp.unwrap_or_default();
                    j["retransmits"] = json!(slice.retrans);
                    j["snd_cwnd"] = json!(t.snd_cwnd);
                    j["snd_wnd"] = json!(t.snd_wnd);
                    j["rtt"] = json!(t.rtt);
                    j["rttvar"] = json!(t.rttvar);
                    j["pmtu"] = json!(t.pmtu);
                }
                streams_json.push(j);
            }
            let detailed = has_retransmits && sender;
            if self.human() && self.o.parallel > 1 {
                let extra = if detailed {
                    Extra::Retransmits(sum_retrans as i64)
                } else {
                    Extra::None
                };
                let row = Row {
                    who: Who::Sum,
                    role,
                    start: st,
                    end: et,
                    bytes: sum,
                    seconds,
                    extra,
                    tail,
                };
                println!("{}", row.render());
            }
            let mut j = json!({
                "start": st, "end": et, "seconds": seconds, "bytes": sum,
                "bits_per_second": bits_per_second(sum, seconds), "omitted": omitted, "sender": sender,
            });
            if detailed {
                j["retransmits"] = json!(sum_retrans);
            }
            interval.insert(self.sum_name(sender, "sum"), j);
        }
        interval.insert("streams".into(), Value::Array(streams_json));
        self.intervals.push(Value::Object(interval));
        let _ = std::io::stdout().flush();
    }

    /// The stream roles in iperf3's reporting order: senders, then
    /// receivers (a one-way test has one of them).
    fn blocks(&self) -> Vec<bool> {
        if self.o.bidir {
            vec![true, false]
        } else {
            vec![!self.o.reverse]
        }
    }

    fn role(&self, sender: bool) -> &'static str {
        match (self.o.bidir, sender) {
            (false, _) => "",
            (true, true) => "[TX-C]",
            (true, false) => "[RX-C]",
        }
    }

    /// iperf3's JSON name: the server-to-client half of a bidirectional
    /// test is `<name>_bidir_reverse`.
    fn sum_name(&self, sender: bool, name: &str) -> String {
        if self.o.bidir && !sender {
            format!("{name}_bidir_reverse")
        } else {
            name.to_string()
        }
    }

    /// What this client sends the server at the end.
    fn results(&self) -> Results {
        Results {
            cpu: self.cpu,
            sender_has_retransmits: if self.o.reverse {
                -1
            } else {
                i64::from(self.has_retransmits)
            },
            congestion_used: Some(self.congestion.clone()),
            streams: self
                .streams
                .iter()
                .map(|s| StreamResult {
                    id: i64::from(s.s.id),
                    bytes: s.total,
                    retransmits: if s.s.sender && self.has_retransmits {
                        s.retrans_total as i64
                    } else {
                        -1
                    },
                    jitter: 0.0,
                    errors: 0,
                    packets: 0,
                    start_time: 0.0,
                    end_time: self.seconds,
                })
                .collect(),
        }
    }

    /// The summary of one direction (our senders, or our receivers).
    fn direction(&self, we_send: bool) -> Direction {
        let theirs_retransmits = self
            .theirs
            .as_ref()
            .is_some_and(|t| t.sender_has_retransmits > 0);
        let retransmits = if we_send {
            self.has_retransmits
        } else {
            theirs_retransmits
        };
        let mut rows = Vec::new();
        let mut peer_time = None;
        for (i, s) in self
            .streams
            .iter()
            .enumerate()
            .filter(|(_, s)| s.s.sender == we_send)
        {
            let peer_bytes = s.peer.as_ref().map_or(0, |p| p.bytes);
            if peer_time.is_none() {
                peer_time = s
                    .peer
                    .as_ref()
                    .map(|p| p.end_time - p.start_time)
                    .filter(|t| *t > 0.0);
            }
            let (sent, received, retrans) = if we_send {
                (
                    s.total,
                    peer_bytes,
                    if retransmits {
                        s.retrans_total as i64
                    } else {
                        -1
                    },
                )
            } else {
                let r = s.peer.as_ref().map_or(-1, |p| p.retransmits);
                (peer_bytes, s.total, if retransmits { r } else { -1 })
            };
            rows.push((i, sent, received, retrans));
        }
        let ours = self.seconds;
        let theirs = peer_time.unwrap_or(ours);
        Direction {
            we_send,
            sender_time: if we_send { ours } else { theirs },
            receiver_time: if we_send { theirs } else { ours },
            retransmits,
            rows,
        }
    }

    /// Prints the summary (or the JSON document) and the `done` line.
    fn finish(&mut self, error: Option<&str>) {
        let directions: Vec<Direction> = if error.is_none() {
            self.blocks()
                .into_iter()
                .map(|b| self.direction(b))
                .collect()
        } else {
            Vec::new()
        };
        if self.human() && error.is_none() {
            self.print_summary(&directions);
        }
        if self.o.json {
            let mut doc = Map::new();
            doc.insert("start".into(), Value::Object(self.start.clone()));
            doc.insert(
                "intervals".into(),
                Value::Array(std::mem::take(&mut self.intervals)),
            );
            doc.insert("end".into(), self.end_json(&directions));
            if let Some(e) = error {
                doc.insert("error".into(), json!(e));
            }
            let text = serde_json::to_string_pretty(&Value::Object(doc))
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
            println!("{text}");
        }
        let _ = std::io::stdout().flush();
        let line = match error {
            Some(e) => format!("iperf: error: {e}"),
            None => {
                let total = |we_send: bool| -> u64 {
                    self.streams
                        .iter()
                        .filter(|s| s.s.sender == we_send)
                        .map(|s| s.total)
                        .sum()
                };
                let peer = self.peer.map_or_else(
                    || format!("{}:{}", self.o.host, self.o.port),
                    |p| p.to_string(),
                );
                format!(
                    "iperf: done peer={peer} mode={} streams={} sent={} received={} seconds={:.3}",
                    self.mode(),
                    self.o.parallel,
                    total(true),
                    total(false),
                    self.seconds
                )
            }
        };
        if error.is_some() || self.o.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

/// The server's address: the first IPv4 one, else the first.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{host} has no address"))
}
