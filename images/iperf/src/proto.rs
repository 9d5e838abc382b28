//! The iperf3 (3.12) control protocol, as this program speaks it.
//!
//! A test runs over one TCP control connection plus one TCP connection per
//! data stream, all to the server's one port:
//!
//! 1. The client sends its 37-byte cookie (36 characters and a NUL).
//! 2. Every step after that is a one-byte signed state message ([`State`]).
//!    The server sends `PARAM_EXCHANGE`; the client answers with its
//!    parameters, a JSON object framed by a 4-byte big-endian length.
//! 3. The server sends `CREATE_STREAMS`; the client opens every data
//!    connection, each starting with the same cookie. A connection with
//!    another cookie gets `ACCESS_DENIED` and is closed.
//! 4. `TEST_START`, `TEST_RUNNING` (server to client): data flows.
//! 5. The client ends the test with `TEST_END`; the server answers
//!    `EXCHANGE_RESULTS`, the client sends its results JSON, the server its
//!    own, then `DISPLAY_RESULTS`; the client closes with `IPERF_DONE`.
//!
//! The server reports a failure with `SERVER_ERROR` followed by two 32-bit
//! network-order integers, iperf3's `i_errno` and the system `errno`; a
//! busy server answers any other control connection with `ACCESS_DENIED`.
//!
//! Streams are numbered as iperf3's `iperf_add_stream` does (1, then 3,
//! 4, 5, ...: see [`stream_id`]); each side looks the other's results up
//! by those ids, so both must create the streams in the same order
//! (client: senders first, then receivers; server: in accept order, the
//! receivers first).

use serde_json::{Map, Value, json};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// iperf3's port.
pub const DEFAULT_PORT: u16 = 5201;
/// A cookie on the wire: 36 characters and a NUL.
pub const COOKIE_SIZE: usize = 37;
/// iperf3's default TCP block size (`DEFAULT_TCP_BLKSIZE`).
pub const DEFAULT_LEN: usize = 128 * 1024;
/// iperf3's largest block (`MAX_BLOCKSIZE`).
pub const MAX_LEN: usize = 1024 * 1024;
/// iperf3's most parallel streams (`MAX_STREAMS`).
pub const MAX_STREAMS: u32 = 128;
/// iperf3's largest socket buffer request (`MAX_TCP_BUFFER`).
pub const MAX_WINDOW: u64 = 512 * 1024 * 1024;
/// iperf3's longest test (`MAX_TIME`).
pub const MAX_TIME: u64 = 86_400;
/// The longest `-O` the client accepts (iperf3 3.12's limit).
pub const MAX_OMIT_CLI: u64 = 60;
/// The longest omit period the server accepts from a peer.
pub const MAX_OMIT_PEER: u64 = 3_600;
/// The largest JSON document (parameters or results) read from a peer.
pub const MAX_JSON: usize = 256 * 1024;

/// What this side claims in `client_version`: the protocol it implements.
pub const PROTOCOL_VERSION: &str = "3.12";

/// The one-byte state messages (iperf_api.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    TestStart,
    TestRunning,
    TestEnd,
    ParamExchange,
    CreateStreams,
    ServerTerminate,
    ClientTerminate,
    ExchangeResults,
    DisplayResults,
    IperfDone,
    AccessDenied,
    ServerError,
}

impl State {
    /// The byte on the wire (a signed char).
    pub fn code(self) -> i8 {
        match self {
            State::TestStart => 1,
            State::TestRunning => 2,
            State::TestEnd => 4,
            State::ParamExchange => 9,
            State::CreateStreams => 10,
            State::ServerTerminate => 11,
            State::ClientTerminate => 12,
            State::ExchangeResults => 13,
            State::DisplayResults => 14,
            State::IperfDone => 16,
            State::AccessDenied => -1,
            State::ServerError => -2,
        }
    }

    /// The state a byte names; `None` for anything else (including the
    /// states iperf3 defines but never sends).
    pub fn from_code(code: i8) -> Option<State> {
        Some(match code {
            1 => State::TestStart,
            2 => State::TestRunning,
            4 => State::TestEnd,
            9 => State::ParamExchange,
            10 => State::CreateStreams,
            11 => State::ServerTerminate,
            12 => State::ClientTerminate,
            13 => State::ExchangeResults,
            14 => State::DisplayResults,
            16 => State::IperfDone,
            -1 => State::AccessDenied,
            -2 => State::ServerError,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            State::TestStart => "TEST_START",
            State::TestRunning => "TEST_RUNNING",
            State::TestEnd => "TEST_END",
            State::ParamExchange => "PARAM_EXCHANGE",
            State::CreateStreams => "CREATE_STREAMS",
            State::ServerTerminate => "SERVER_TERMINATE",
            State::ClientTerminate => "CLIENT_TERMINATE",
            State::ExchangeResults => "EXCHANGE_RESULTS",
            State::DisplayResults => "DISPLAY_RESULTS",
            State::IperfDone => "IPERF_DONE",
            State::AccessDenied => "ACCESS_DENIED",
            State::ServerError => "SERVER_ERROR",
        }
    }
}

/// The id iperf3 gives the `index`-th stream (0-based) of a test:
/// 1, 3, 4, 5, ... (`iperf_add_stream` starts counting the second at 3).
pub fn stream_id(index: usize) -> u32 {
    if index == 0 { 1 } else { index as u32 + 2 }
}

/// iperf3's error numbers (`i_errno`) this program sends or names.
pub mod ie {
    pub const DURATION: i32 = 5;
    pub const NUMSTREAMS: i32 = 6;
    pub const BLOCKSIZE: i32 = 7;
    pub const BUFSIZE: i32 = 8;
    pub const OMIT: i32 = 12;
    pub const UNIMP: i32 = 13;
    pub const REVERSEBIDIR: i32 = 25;
    pub const MESSAGE: i32 = 110;
    pub const RECVPARAMS: i32 = 114;
    pub const RECVRESULTS: i32 = 117;
    pub const SETNODELAY: i32 = 122;
    pub const SETBUF: i32 = 124;
    pub const SETBUF2: i32 = 141;
    pub const NOMSG: i32 = 144;
    pub const INITSTREAM: i32 = 201;
    pub const STREAMACCEPT: i32 = 204;
    pub const STREAMWRITE: i32 = 205;
    pub const STREAMREAD: i32 = 206;
    pub const STREAMID: i32 = 208;
}

/// iperf3's text for an `i_errno` (iperf_error.c), for the ones a server
/// may send; `None` for numbers this program does not know.
pub fn ie_text(code: i32) -> Option<&'static str> {
    Some(match code {
        1 => "cannot be both server and client",
        5 => "test duration too long (maximum = 86400 seconds)",
        6 => "number of parallel streams too large (maximum = 128)",
        7 => "block size too large (maximum = 1048576 bytes)",
        8 => "socket buffer size too large (maximum = 536870912 bytes)",
        10 => "TCP MSS too large (maximum = 9216 bytes)",
        12 => "bogus value for --omit",
        13 => "an option you are trying to set is not implemented yet",
        25 => "cannot be both reverse and bidirectional",
        27 => "total required bandwidth is larger than server limit",
        101 => "test initialization failed",
        102 => "unable to start listener for connections",
        104 => "unable to accept connection from client",
        106 => "unable to receive cookie at server",
        107 => "unable to write to the control socket",
        108 => "unable to read from the control socket",
        109 => "control socket has closed unexpectedly",
        110 => "received an unknown control message",
        111 => "unable to send control message",
        112 => "unable to receive control message",
        114 => "unable to receive parameters from client",
        115 => "unable to package results",
        116 => "unable to send results",
        117 => "unable to receive results",
        119 => "the client has terminated",
        120 => "the server has terminated",
        121 => "the server is busy running a test. try again later",
        122 => "unable to set TCP/SCTP NODELAY",
        123 => "unable to set TCP/SCTP MSS",
        124 => "unable to set socket buffer size",
        125 => "unable to set IP TOS",
        131 => "protocol does not exist",
        134 => {
            "unable to set TCP_CONGESTION: Supplied congestion control algorithm not supported on this host"
        }
        141 => "socket buffer size not set correctly",
        142 => "test authorization failed",
        144 => "idle timeout for receiving data",
        200 => "unable to create a new stream",
        201 => "unable to initialize stream",
        202 => "unable to start stream listener",
        204 => "unable to accept stream connection",
        205 => "unable to write to stream socket",
        206 => "unable to read from stream socket",
        207 => "stream socket has closed unexpectedly",
        208 => "stream has an invalid id",
        _ => return None,
    })
}

/// The message a client shows for `SERVER_ERROR (i_errno, errno)`.
pub fn server_error_text(i_errno: i32, errno: i32) -> String {
    let what = match ie_text(i_errno) {
        Some(t) => t.to_string(),
        None => format!("server error {i_errno}"),
    };
    if errno != 0 {
        format!("{what}: {}", std::io::Error::from_raw_os_error(errno))
    } else {
        what
    }
}

/// A test's cookie: 36 characters of `[a-z2-7]` on the wire with a NUL.
#[derive(Clone, PartialEq, Eq)]
pub struct Cookie([u8; COOKIE_SIZE]);

impl Cookie {
    /// A fresh random cookie, as iperf3's `make_cookie` draws them.
    pub fn generate() -> Cookie {
        const CHARS: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        let mut raw = [0u8; COOKIE_SIZE];
        crate::sock::random_bytes(&mut raw);
        let mut out = [0u8; COOKIE_SIZE];
        for (o, r) in out.iter_mut().zip(raw.iter()).take(COOKIE_SIZE - 1) {
            *o = CHARS[usize::from(*r) % CHARS.len()];
        }
        Cookie(out)
    }

    /// Checks a cookie read from a peer: 36 printable ASCII characters and
    /// a NUL (iperf3 only ever sends `[a-z2-7]`).
    pub fn from_wire(raw: [u8; COOKIE_SIZE]) -> Result<Cookie, String> {
        let (text, nul) = raw.split_at(COOKIE_SIZE - 1);
        if nul != [0] {
            return Err("bad cookie: its 37th byte is not a NUL".into());
        }
        if let Some(b) = text.iter().find(|b| !b.is_ascii_graphic()) {
            return Err(format!(
                "bad cookie: byte {b:#04x} is not a printable character"
            ));
        }
        Ok(Cookie(raw))
    }

    pub fn wire(&self) -> &[u8; COOKIE_SIZE] {
        &self.0
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0[..COOKIE_SIZE - 1]).into_owned()
    }
}

/// Why a read from a peer failed, for messages and for iperf3's codes.
#[derive(Debug)]
pub enum ReadFail {
    /// End of stream after `got` bytes.
    Closed {
        got: usize,
    },
    /// Nothing for the time limit.
    Timeout,
    Io(std::io::Error),
}

/// Reads exactly `buf.len()` bytes before `deadline` (each read bounded by
/// what is left of it, so a peer trickling bytes cannot stretch it).
pub fn read_full(s: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), ReadFail> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadFail::Timeout);
        }
        // A zero duration means "no timeout" to the OS: left is not zero.
        s.set_read_timeout(Some(left)).map_err(ReadFail::Io)?;
        match s.read(&mut buf[got..]) {
            Ok(0) => return Err(ReadFail::Closed { got }),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(ReadFail::Timeout),
            Err(e) => return Err(ReadFail::Io(e)),
        }
    }
    Ok(())
}

/// A read or write that ran into its socket timeout.
pub fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// `what` failed to arrive: a sentence naming the cause.
pub fn describe_read(what: &str, fail: &ReadFail, limit: Duration) -> String {
    match fail {
        ReadFail::Closed { got: 0 } => format!("the peer closed the connection before {what}"),
        ReadFail::Closed { got } => {
            format!("the peer closed the connection after {got} bytes of {what}")
        }
        ReadFail::Timeout => format!("{what} did not come within {} s", limit.as_secs_f64()),
        ReadFail::Io(e) => format!("reading {what}: {e}"),
    }
}

/// Writes a state byte.
pub fn write_state(s: &mut TcpStream, state: State) -> std::io::Result<()> {
    s.write_all(&[state.code() as u8])
}

/// Writes a JSON object with its 4-byte big-endian length, in one write.
pub fn write_json(s: &mut TcpStream, value: &Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    let mut framed = Vec::with_capacity(4 + body.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&body);
    s.write_all(&framed)
}

/// Reads one framed JSON object (at most [`MAX_JSON`] bytes) before
/// `deadline`. The error is a sentence about `what`.
pub fn read_json(
    s: &mut TcpStream,
    what: &str,
    deadline: Instant,
    limit: Duration,
) -> Result<Map<String, Value>, String> {
    let mut len = [0u8; 4];
    read_full(s, &mut len, deadline)
        .map_err(|f| describe_read(&format!("the length of the {what}"), &f, limit))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_JSON {
        return Err(format!(
            "the {what} would be {len} bytes, over the {MAX_JSON}-byte limit"
        ));
    }
    let mut body = vec![0u8; len];
    read_full(s, &mut body, deadline)
        .map_err(|f| describe_read(&format!("the {what}"), &f, limit))?;
    parse_object(&body).map_err(|e| format!("the {what} are not a JSON object: {e}"))
}

/// Parses a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!("found {}", kind_of(&other))),
        Err(e) => Err(e.to_string()),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A whole number from a JSON value: an integer, or a float with no
/// fraction. iperf3's cJSON holds numbers as 64-bit integers and prints
/// negative ones as unsigned (-1 as 18446744073709551615): an integer
/// over `i64::MAX` is read back as the negative number it stands for.
pub fn whole(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    if let Some(u) = v.as_u64() {
        return Some(u as i64);
    }
    let f = v.as_f64()?;
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e18).then_some(f as i64)
}

/// The test parameters the client sends (`send_parameters`).
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Seconds the client runs after the omit period (0: an end condition
    /// in bytes or blocks instead).
    pub time: u64,
    pub omit: u64,
    /// Byte and block end conditions (the client enforces them).
    pub bytes: u64,
    pub blocks: u64,
    pub parallel: u32,
    pub reverse: bool,
    pub bidir: bool,
    /// `SO_SNDBUF`/`SO_RCVBUF` request for every data socket (0: none).
    pub window: u64,
    pub len: usize,
    pub nodelay: bool,
    /// Payload: a repeating pattern instead of random bytes.
    pub repeating_payload: bool,
}

impl Params {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("tcp".into(), Value::Bool(true));
        m.insert("omit".into(), json!(self.omit));
        m.insert("time".into(), json!(self.time));
        m.insert("num".into(), json!(self.bytes));
        m.insert("blockcount".into(), json!(self.blocks));
        m.insert("parallel".into(), json!(self.parallel));
        if self.reverse {
            m.insert("reverse".into(), Value::Bool(true));
        }
        if self.bidir {
            m.insert("bidirectional".into(), Value::Bool(true));
        }
        if self.window > 0 {
            m.insert("window".into(), json!(self.window));
        }
        m.insert("len".into(), json!(self.len));
        if self.nodelay {
            m.insert("nodelay".into(), Value::Bool(true));
        }
        m.insert("pacing_timer".into(), json!(1000));
        m.insert("client_version".into(), json!(PROTOCOL_VERSION));
        Value::Object(m)
    }

    /// Reads a client's parameters as iperf3's `get_parameters` does (a
    /// flag is on when its key is present), but strictly: a value of the
    /// wrong type or out of range, or an option this server does not
    /// implement, is an error with the `i_errno` to send back.
    pub fn from_json(m: &Map<String, Value>) -> Result<Params, (i32, String)> {
        let flag = |key: &str| matches!(m.get(key), Some(v) if !matches!(v, Value::Null | Value::Bool(false)));
        let number = |key: &str, default: u64, max: u64, code: i32| -> Result<u64, (i32, String)> {
            match m.get(key) {
                None => Ok(default),
                Some(v) => match whole(v) {
                    Some(n) if n >= 0 && n as u64 <= max => Ok(n as u64),
                    Some(n) => Err((
                        code,
                        format!("parameter `{key}` = {n} is out of range 0..={max}"),
                    )),
                    None => Err((
                        ie::RECVPARAMS,
                        format!("parameter `{key}` is not a whole number: {v}"),
                    )),
                },
            }
        };
        for key in ["udp", "sctp"] {
            if m.contains_key(key) {
                return Err((
                    ie::UNIMP,
                    format!("only TCP tests are implemented (the client asked for {key})"),
                ));
            }
        }
        for key in [
            "MSS",
            "bandwidth",
            "fqrate",
            "burst",
            "TOS",
            "congestion",
            "flowlabel",
        ] {
            if let Some(v) = m.get(key).filter(|v| whole(v) != Some(0)) {
                return Err((
                    ie::UNIMP,
                    format!("option `{key}` ({v}) is not implemented"),
                ));
            }
        }
        let p = Params {
            time: number("time", 10, MAX_TIME, ie::DURATION)?,
            omit: number("omit", 0, MAX_OMIT_PEER, ie::OMIT)?,
            bytes: number("num", 0, u64::MAX >> 1, ie::RECVPARAMS)?,
            blocks: number("blockcount", 0, u64::MAX >> 1, ie::RECVPARAMS)?,
            parallel: number("parallel", 1, u64::from(MAX_STREAMS), ie::NUMSTREAMS)? as u32,
            reverse: flag("reverse"),
            bidir: flag("bidirectional"),
            window: number("window", 0, MAX_WINDOW, ie::BUFSIZE)?,
            len: number("len", DEFAULT_LEN as u64, MAX_LEN as u64, ie::BLOCKSIZE)? as usize,
            nodelay: flag("nodelay"),
            repeating_payload: flag("repeating_payload"),
        };
        if p.parallel == 0 {
            return Err((ie::NUMSTREAMS, "parameter `parallel` is 0".into()));
        }
        if p.len == 0 {
            return Err((ie::BLOCKSIZE, "parameter `len` is 0".into()));
        }
        if p.reverse && p.bidir {
            return Err((ie::REVERSEBIDIR, "both reverse and bidirectional".into()));
        }
        Ok(p)
    }
}

/// One stream's entry in a results exchange (`send_results`).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamResult {
    pub id: i64,
    pub bytes: u64,
    /// -1 when the sender has no retransmit counts (or this is a receiver).
    pub retransmits: i64,
    pub jitter: f64,
    pub errors: i64,
    pub packets: i64,
    pub start_time: f64,
    pub end_time: f64,
}

/// The results one side sends the other.
#[derive(Clone, Debug, PartialEq)]
pub struct Results {
    pub cpu: [f64; 3],
    /// 1 or 0 for a sending side (has retransmit counts or not), -1 for a
    /// side that only received.
    pub sender_has_retransmits: i64,
    pub congestion_used: Option<String>,
    pub streams: Vec<StreamResult>,
}

impl Results {
    pub fn to_json(&self) -> Value {
        let streams: Vec<Value> = self
            .streams
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "bytes": s.bytes,
                    "retransmits": s.retransmits,
                    "jitter": s.jitter,
                    "errors": s.errors,
                    "packets": s.packets,
                    "start_time": s.start_time,
                    "end_time": s.end_time,
                })
            })
            .collect();
        let mut m = Map::new();
        m.insert("cpu_util_total".into(), json!(self.cpu[0]));
        m.insert("cpu_util_user".into(), json!(self.cpu[1]));
        m.insert("cpu_util_system".into(), json!(self.cpu[2]));
        m.insert(
            "sender_has_retransmits".into(),
            json!(self.sender_has_retransmits),
        );
        if let Some(c) = &self.congestion_used {
            m.insert("congestion_used".into(), json!(c));
        }
        m.insert("streams".into(), Value::Array(streams));
        Value::Object(m)
    }

    /// Reads a peer's results; the fields iperf3's `get_results` requires
    /// must be there and be numbers.
    pub fn from_json(m: &Map<String, Value>) -> Result<Results, String> {
        let float = |m: &Map<String, Value>, key: &str| -> Result<f64, String> {
            m.get(key)
                .ok_or_else(|| format!("the results have no `{key}`"))?
                .as_f64()
                .ok_or_else(|| format!("the results' `{key}` is not a number"))
        };
        let int = |m: &Map<String, Value>, key: &str| -> Result<i64, String> {
            whole(
                m.get(key)
                    .ok_or_else(|| format!("the results have no `{key}`"))?,
            )
            .ok_or_else(|| format!("the results' `{key}` is not a whole number"))
        };
        let cpu = [
            float(m, "cpu_util_total")?,
            float(m, "cpu_util_user")?,
            float(m, "cpu_util_system")?,
        ];
        let sender_has_retransmits = int(m, "sender_has_retransmits")?;
        let congestion_used = m
            .get("congestion_used")
            .and_then(Value::as_str)
            .map(str::to_string);
        let list = m
            .get("streams")
            .and_then(Value::as_array)
            .ok_or("the results have no `streams` list")?;
        let mut streams = Vec::with_capacity(list.len());
        for s in list {
            let s = s
                .as_object()
                .ok_or("a stream in the results is not an object")?;
            let bytes = int(s, "bytes")?;
            streams.push(StreamResult {
                id: int(s, "id")?,
                bytes: u64::try_from(bytes)
                    .map_err(|_| format!("a stream's `bytes` is negative: {bytes}"))?,
                retransmits: int(s, "retransmits")?,
                jitter: float(s, "jitter")?,
                errors: int(s, "errors")?,
                packets: int(s, "packets")?,
                start_time: s.get("start_time").and_then(Value::as_f64).unwrap_or(0.0),
                end_time: s.get("end_time").and_then(Value::as_f64).unwrap_or(0.0),
            });
        }
        Ok(Results {
            cpu,
            sender_has_retransmits,
            congestion_used,
            streams,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for code in -128i8..=127 {
            if let Some(s) = State::from_code(code) {
                assert_eq!(s.code(), code);
            }
        }
        assert_eq!(State::from_code(-2), Some(State::ServerError));
        assert_eq!(State::from_code(3), None);
    }

    #[test]
    fn ids_follow_iperf_add_stream() {
        let ids: Vec<u32> = (0..5).map(stream_id).collect();
        assert_eq!(ids, [1, 3, 4, 5, 6]);
    }

    #[test]
    fn cookies_are_checked() {
        let c = Cookie::generate();
        assert_eq!(c.text().len(), 36);
        assert!(
            c.text()
                .bytes()
                .all(|b| b"abcdefghijklmnopqrstuvwxyz234567".contains(&b))
        );
        assert!(Cookie::from_wire(*c.wire()).is_ok());
        let mut bad = *c.wire();
        bad[36] = b'x';
        assert!(Cookie::from_wire(bad).is_err());
        let mut bad = *c.wire();
        bad[3] = 0;
        assert!(Cookie::from_wire(bad).is_err());
        assert!(Cookie::generate() != c);
    }

    #[test]
    fn parameters_round_trip_and_are_checked() {
        let p = Params {
            time: 2,
            omit: 1,
            bytes: 0,
            blocks: 0,
            parallel: 4,
            reverse: false,
            bidir: true,
            window: 262_144,
            len: 16_384,
            nodelay: false,
            repeating_payload: false,
        };
        let Value::Object(m) = p.to_json() else {
            panic!()
        };
        assert_eq!(Params::from_json(&m), Ok(p));
        let with = |k: &str, v: Value| {
            let mut m = m.clone();
            m.insert(k.into(), v);
            Params::from_json(&m)
        };
        assert_eq!(with("parallel", json!(129)).unwrap_err().0, ie::NUMSTREAMS);
        assert_eq!(with("len", json!(2_000_000)).unwrap_err().0, ie::BLOCKSIZE);
        assert_eq!(with("time", json!("ten")).unwrap_err().0, ie::RECVPARAMS);
        assert_eq!(with("udp", json!(true)).unwrap_err().0, ie::UNIMP);
        assert_eq!(
            with("reverse", json!(true)).unwrap_err().0,
            ie::REVERSEBIDIR
        );
        assert!(with("bandwidth", json!(0)).is_ok());
        // iperf3 3.12 prints -1 as an unsigned 64-bit number.
        assert_eq!(
            whole(&serde_json::from_str("18446744073709551615").unwrap()),
            Some(-1)
        );
        // cJSON prints big integers as floats.
        assert_eq!(with("window", json!(262144.0)).unwrap().window, 262_144);
    }

    #[test]
    fn results_round_trip_and_are_checked() {
        let r = Results {
            cpu: [1.5, 1.0, 0.5],
            sender_has_retransmits: 1,
            congestion_used: Some("cubic".into()),
            streams: vec![StreamResult {
                id: 3,
                bytes: 5_000_000_000,
                retransmits: 2,
                jitter: 0.0,
                errors: 0,
                packets: 0,
                start_time: 0.0,
                end_time: 2.0,
            }],
        };
        let Value::Object(m) = r.to_json() else {
            panic!()
        };
        assert_eq!(Results::from_json(&m).unwrap(), r);
        let mut m2 = m.clone();
        m2.remove("cpu_util_user");
        assert!(Results::from_json(&m2).is_err());
        let mut m3 = m;
        m3.insert("streams".into(), json!([{"id": 1}]));
        assert!(Results::from_json(&m3).is_err());
    }

    #[test]
    fn only_objects_parse() {
        assert!(parse_object(b"{\"a\":1}").is_ok());
        assert!(parse_object(b"[1]").is_err());
        assert!(parse_object(b"{nope").is_err());
        assert!(parse_object(b"").is_err());
    }
}
