//! The host side of the control channel (docs/control-channel.md): a
//! client for the guest's COM2, as QEMU's unix socket or as the runner's
//! broker socket, which speak the same protocol.
//!
//! Theory: one request is in flight at a time; its reply is one JSON line
//! (`{"ok":..}` or `{"error":".."}`), followed by `bytes` raw bytes and a
//! `\n` when the JSON names a byte count. Events (`{"event":..}`, perhaps
//! with a payload of their own) may arrive between replies: they are read
//! whole and queued, never mistaken for a reply. Every read has a
//! deadline, so a silent or broken guest gives an error, never a hang;
//! after a timeout or a malformed message the connection is out of step
//! and refuses requests until [`CtlConnection::resync`] drains it.
//!
//! The broker adds one line of its own: `{"broker_error":".."}`, a failure
//! of the host side (no guest connection), reported here as an `Err`.

pub mod broker;
pub mod cli;
pub mod registry;
pub mod render;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The per-request limit for every command but `gcore`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The per-request limit for `gcore` (the core crosses a serial port).
pub const GCORE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `connect` waits for QEMU to create its socket.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest command line the guest accepts (without the `\n`).
pub const MAX_COMMAND_BYTES: usize = 256;
/// A JSON line longer than this is not believed.
const MAX_LINE_BYTES: usize = 16 << 20;
/// A payload larger than this is not believed (more than any guest's RAM
/// the runner boots).
const MAX_PAYLOAD_BYTES: u64 = 64 << 30;

/// The guest's answer to one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `{"ok":value}`, with the raw bytes that followed it if the value
    /// named a byte count (`gcore`).
    Ok {
        value: Value,
        payload: Option<Vec<u8>>,
    },
    /// `{"error":"message"}`.
    Error(String),
}

impl Reply {
    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Ok { .. })
    }

    /// The value of an ok reply.
    pub fn value(&self) -> Option<&Value> {
        match self {
            Reply::Ok { value, .. } => Some(value),
            Reply::Error(_) => None,
        }
    }

    /// The payload of an ok reply that had one.
    pub fn payload(&self) -> Option<&[u8]> {
        match self {
            Reply::Ok { payload, .. } => payload.as_deref(),
            Reply::Error(_) => None,
        }
    }

    /// The guest's error message.
    pub fn error(&self) -> Option<&str> {
        match self {
            Reply::Ok { .. } => None,
            Reply::Error(e) => Some(e),
        }
    }

    /// The value, or the guest's error as an `Err`.
    pub fn into_value(self) -> Result<Value, String> {
        match self {
            Reply::Ok { value, .. } => Ok(value),
            Reply::Error(e) => Err(e),
        }
    }

    /// The reply as it travels: its JSON line (without `\n`).
    pub fn json_line(&self) -> String {
        match self {
            Reply::Ok { value, .. } => serde_json::json!({ "ok": value }).to_string(),
            Reply::Error(e) => serde_json::json!({ "error": e }).to_string(),
        }
    }
}

/// A core file the guest sent when a process died of a signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreDump {
    pub pid: u64,
    pub signal: u64,
    pub data: Vec<u8>,
}

/// A line the guest sent on its own.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The guest's control thread started.
    Hello { version: u64 },
    /// A process died of a signal that dumps core.
    Core(CoreDump),
    /// An event this client does not know, kept as it came.
    Other {
        value: Value,
        payload: Option<Vec<u8>>,
    },
}

/// The per-request limit for `command`: `gcore` gets [`GCORE_TIMEOUT`].
pub fn timeout_for(command: &str) -> Duration {
    match command.split_whitespace().next() {
        Some("gcore") => GCORE_TIMEOUT,
        _ => DEFAULT_TIMEOUT,
    }
}

/// The byte count a reply value or an event names, if any.
fn byte_count(value: &Value) -> Result<Option<u64>> {
    match value.get("bytes") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= MAX_PAYLOAD_BYTES => Ok(Some(n)),
            _ => bail!("the guest named an impossible byte count {v}"),
        },
    }
}

/// One message from the other end.
enum Incoming {
    Reply(Reply),
    Event(Event),
    BrokerError(String),
}

/// A connection to a guest's control channel (or to the runner's broker).
pub struct CtlConnection {
    stream: UnixStream,
    path: PathBuf,
    buf: Vec<u8>,
    events: VecDeque<Event>,
    /// Why the connection is out of step, once it is.
    broken: Option<String>,
    /// The other end closed the connection.
    closed: bool,
}

impl CtlConnection {
    /// Connects to `socket_path`, retrying for [`CONNECT_TIMEOUT`] while
    /// the socket does not exist yet or refuses (QEMU still starting).
    pub fn connect(socket_path: impl AsRef<Path>) -> Result<CtlConnection> {
        Self::connect_timeout(socket_path, CONNECT_TIMEOUT)
    }

    /// [`connect`](Self::connect) with its own limit.
    pub fn connect_timeout(
        socket_path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<CtlConnection> {
        let path = socket_path.as_ref();
        let deadline = Instant::now() + timeout;
        loop {
            match UnixStream::connect(path) {
                Ok(stream) => return Ok(Self::from_stream(stream, path)),
                Err(e)
                    if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused)
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(anyhow!(e)).with_context(|| {
                        format!(
                            "cannot connect to the control socket {} (waited {:.1} s)",
                            path.display(),
                            timeout.as_secs_f64()
                        )
                    });
                }
            }
        }
    }

    /// Wraps a connected stream (`path` is only for messages).
    pub fn from_stream(stream: UnixStream, path: impl AsRef<Path>) -> CtlConnection {
        CtlConnection {
            stream,
            path: path.as_ref().to_path_buf(),
            buf: Vec::new(),
            events: VecDeque::new(),
            broken: None,
            closed: false,
        }
    }

    /// The socket this connection went to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why the connection refuses requests, if it does.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// True once the other end closed the connection (QEMU exited).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Sends `command` and returns the guest's reply, waiting at most
    /// [`timeout_for`] the command. `Err` means no reply: the connection
    /// failed, timed out, or the other end sent something malformed.
    pub fn request(&mut self, command: &str) -> Result<Reply> {
        self.request_timeout(command, timeout_for(command))
    }

    /// [`request`](Self::request) with its own limit.
    pub fn request_timeout(&mut self, command: &str, timeout: Duration) -> Result<Reply> {
        if let Some(why) = &self.broken {
            bail!("the control connection is out of step ({why}); it needs a resync");
        }
        if command.contains('\n') {
            bail!("a command is one line: {command:?} holds a newline");
        }
        if command.trim().is_empty() {
            bail!("empty command (try `help`)");
        }
        let result = self.exchange(command, timeout);
        if let Err(e) = &result
            && !e.is::<BrokerError>()
        {
            self.broken = Some(format!("{e:#}"));
        }
        result
    }

    fn exchange(&mut self, command: &str, timeout: Duration) -> Result<Reply> {
        let deadline = Instant::now() + timeout;
        let mut line = Vec::with_capacity(command.len() + 1);
        line.extend_from_slice(command.as_bytes());
        line.push(b'\n');
        let left = deadline.saturating_duration_since(Instant::now());
        self.stream
            .set_write_timeout(Some(left.max(Duration::from_millis(1))))
            .context("setting the write timeout")?;
        if let Err(e) = self.stream.write_all(&line) {
            if matches!(
                e.kind(),
                ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::NotConnected
            ) {
                self.closed = true;
            }
            bail!("cannot send {command:?} to {}: {e}", self.path.display());
        }
        loop {
            match self.read_message(deadline, Duration::ZERO)? {
                None => bail!(
                    "no reply to {command:?} within {:.0} s",
                    timeout.as_secs_f64()
                ),
                Some(Incoming::Event(e)) => self.events.push_back(e),
                Some(Incoming::Reply(r)) => return Ok(r),
                Some(Incoming::BrokerError(m)) => return Err(BrokerError(m).into()),
            }
        }
    }

    /// Reads the events that arrive within `wait` (an event that started
    /// arriving is read to its end, up to [`GCORE_TIMEOUT`]); they join the
    /// queue. `Err` when the connection failed.
    pub fn poll_events(&mut self, wait: Duration) -> Result<()> {
        if let Some(why) = &self.broken {
            bail!("the control connection is out of step ({why})");
        }
        let idle = Instant::now() + wait;
        let result = self.poll_inner(idle);
        if result.is_err() {
            self.broken = result.as_ref().err().map(|e| format!("{e:#}"));
        }
        result
    }

    fn poll_inner(&mut self, idle: Instant) -> Result<()> {
        loop {
            match self.read_message(idle, GCORE_TIMEOUT)? {
                None => return Ok(()),
                Some(Incoming::Event(e)) => self.events.push_back(e),
                Some(Incoming::Reply(r)) => {
                    bail!("a reply arrived with no request: {}", r.json_line())
                }
                Some(Incoming::BrokerError(m)) => bail!("the broker said: {m}"),
            }
        }
    }

    /// The events received so far, oldest first; the queue is emptied.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// Waits up to `timeout` for an event that `want` accepts; returns it
    /// and queues the others.
    pub fn wait_event(
        &mut self,
        want: impl Fn(&Event) -> bool,
        timeout: Duration,
    ) -> Result<Option<Event>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.events.iter().position(&want) {
                return Ok(self.events.remove(i));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.poll_events((deadline - now).min(Duration::from_millis(100)))?;
        }
    }

    /// Puts an out-of-step connection back in step: discards what arrives
    /// until the line has been quiet for `quiet` (at most `limit` in all),
    /// then accepts requests again.
    pub fn resync(&mut self, quiet: Duration, limit: Duration) -> Result<()> {
        let end = Instant::now() + limit;
        self.buf.clear();
        let mut scratch = vec![0u8; 64 * 1024];
        loop {
            let now = Instant::now();
            if now >= end {
                bail!(
                    "the control channel did not go quiet within {:.0} s",
                    limit.as_secs_f64()
                );
            }
            self.stream
                .set_read_timeout(Some(quiet.min(end - now).max(Duration::from_millis(1))))
                .context("setting the read timeout")?;
            match self.stream.read(&mut scratch) {
                Ok(0) => {
                    self.closed = true;
                    bail!("the control channel closed");
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => bail!("reading the control channel: {e}"),
            }
        }
        self.broken = None;
        Ok(())
    }

    /// Reads more bytes into the buffer; `Ok(false)` when `deadline`
    /// passed first.
    fn fill(&mut self, deadline: Instant) -> Result<bool> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            self.stream
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
                .context("setting the read timeout")?;
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    bail!(
                        "the control channel {} closed (did the guest stop?)",
                        self.path.display()
                    );
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if is_timeout(&e) => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => bail!("reading the control channel {}: {e}", self.path.display()),
            }
        }
    }

    /// Reads one whole message. `Ok(None)`: nothing began to arrive by
    /// `idle`. Once it began, the rest must come by `idle` or within
    /// `rest` of its first byte, whichever is later.
    fn read_message(&mut self, idle: Instant, rest: Duration) -> Result<Option<Incoming>> {
        let mut deadline = if self.buf.is_empty() {
            None
        } else {
            Some(idle.max(Instant::now() + rest))
        };
        let line = loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line[..pos]).into_owned();
                let text = text.trim_end_matches('\r').to_string();
                if text.trim().is_empty() {
                    // A stray newline carries nothing.
                    if self.buf.is_empty() {
                        deadline = None;
                    }
                    continue;
                }
                break text;
            }
            if self.buf.len() > MAX_LINE_BYTES {
                bail!("the guest sent a line longer than {MAX_LINE_BYTES} bytes without a newline");
            }
            let until = deadline.unwrap_or(idle);
            if !self.fill(until)? {
                if deadline.is_none() {
                    return Ok(None);
                }
                bail!(
                    "the guest stopped in the middle of a line: {:?}",
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)])
                );
            }
            deadline.get_or_insert_with(|| idle.max(Instant::now() + rest));
        };
        let deadline = deadline.unwrap_or_else(|| idle.max(Instant::now() + rest));
        let value: Value = serde_json::from_str(&line)
            .map_err(|e| anyhow!("the guest sent a line that is not JSON ({e}): {line:?}"))?;
        let Some(object) = value.as_object() else {
            bail!("the guest sent JSON that is not an object: {line:?}");
        };
        if let Some(kind) = object.get("event") {
            let kind = kind.as_str().unwrap_or("").to_string();
            let payload = match byte_count(&value)? {
                // An event's payload may be a whole core: give it time.
                Some(n) => {
                    Some(self.read_payload(n, deadline.max(Instant::now() + GCORE_TIMEOUT))?)
                }
                None => None,
            };
            return Ok(Some(Incoming::Event(make_event(&kind, value, payload))));
        }
        if let Some(ok) = object.get("ok") {
            let payload = match byte_count(ok)? {
                Some(n) => Some(self.read_payload(n, deadline)?),
                None => None,
            };
            return Ok(Some(Incoming::Reply(Reply::Ok {
                value: ok.clone(),
                payload,
            })));
        }
        if let Some(error) = object.get("error") {
            let message = match error {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            return Ok(Some(Incoming::Reply(Reply::Error(message))));
        }
        if let Some(m) = object.get("broker_error") {
            let message = m.as_str().map_or_else(|| m.to_string(), str::to_string);
            return Ok(Some(Incoming::BrokerError(message)));
        }
        bail!("the guest sent a line that is neither a reply nor an event: {line:?}")
    }

    /// Reads exactly `n` payload bytes and the `\n` after them.
    fn read_payload(&mut self, n: u64, deadline: Instant) -> Result<Vec<u8>> {
        let n = usize::try_from(n).context("payload too large for this host")?;
        while self.buf.len() < n + 1 {
            if !self.fill(deadline)? {
                bail!(
                    "the guest announced {n} bytes but sent {} before the time limit",
                    self.buf.len().min(n)
                );
            }
        }
        if self.buf[n] != b'\n' {
            bail!(
                "the {n} bytes of a payload were not followed by a newline (got {:#04x})",
                self.buf[n]
            );
        }
        let data: Vec<u8> = self.buf.drain(..n).collect();
        self.buf.drain(..1);
        Ok(data)
    }
}

fn make_event(kind: &str, value: Value, payload: Option<Vec<u8>>) -> Event {
    let num = |k: &str| value.get(k).and_then(Value::as_u64);
    match (kind, payload) {
        ("hello", None) => match num("version") {
            Some(version) => Event::Hello { version },
            None => Event::Other {
                value,
                payload: None,
            },
        },
        ("core", Some(data)) => match (num("pid"), num("signal")) {
            (Some(pid), Some(signal)) => Event::Core(CoreDump { pid, signal, data }),
            _ => Event::Other {
                value,
                payload: Some(data),
            },
        },
        (_, payload) => Event::Other { value, payload },
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A failure the broker reported (`{"broker_error":..}`): the host side
/// has no working guest connection. The connection to the broker itself
/// stays in step.
#[derive(Debug)]
pub struct BrokerError(pub String);

impl std::fmt::Display for BrokerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the runner's broker: {}", self.0)
    }
}

impl std::error::Error for BrokerError {}

#[cfg(test)]
mod tests;
