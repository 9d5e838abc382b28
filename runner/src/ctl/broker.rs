//! The runner's broker: it holds the one connection QEMU's control socket
//! accepts, saves the cores the guest sends, and serves `cargo spindle
//! ctl` clients on a socket of its own.
//!
//! Theory: one guest thread owns the guest connection and is the only one
//! to touch it; client threads hand it one command at a time through a
//! channel and relay its reply, payload included, in the guest's own wire
//! format. Between requests the guest thread reads events, so a core is
//! saved as soon as it arrives. A failure of the host side reaches a
//! client as `{"broker_error":..}`, never as a guest error. Everything runs
//! in background threads: the console of `cargo spindle run` is untouched.

use super::registry::{self, Instance, Paths};
use super::{CoreDump, CtlConnection, Event, GCORE_TIMEOUT, MAX_COMMAND_BYTES, Reply};
use anyhow::{Context, Result};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// How long the broker waits for QEMU to create its socket.
const QEMU_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// The guest thread alternates between waiting for a job and reading
/// events, each for this long.
const POLL: Duration = Duration::from_millis(50);
/// A client line longer than this is refused without reaching the guest
/// (which itself refuses lines over [`MAX_COMMAND_BYTES`]).
const MAX_CLIENT_LINE: usize = 16 * MAX_COMMAND_BYTES;

/// Where cores go: `core.<image>.<pid>` in `dir` (the current directory
/// when `None`).
#[derive(Clone, Debug)]
pub struct CoreSink {
    pub dir: Option<PathBuf>,
    pub image: String,
}

impl CoreSink {
    /// The file for the core of `pid`.
    pub fn path_for(&self, pid: u64) -> PathBuf {
        let name = format!("core.{}.{pid}", self.image);
        match &self.dir {
            Some(d) => d.join(name),
            None => PathBuf::from(name),
        }
    }

    /// Saves `core`; returns the one-line report for stderr.
    pub fn save(&self, core: &CoreDump) -> String {
        let path = self.path_for(core.pid);
        match std::fs::write(&path, &core.data) {
            Ok(()) => format!(
                "spindle: core of pid {} (signal {}) saved to {} ({} bytes)",
                core.pid,
                core.signal,
                path.display(),
                core.data.len()
            ),
            Err(e) => format!(
                "spindle: core of pid {} (signal {}) could not be saved to {}: {e}",
                core.pid,
                core.signal,
                path.display()
            ),
        }
    }
}

/// Prints a broker message (stderr in the runner).
pub type Notify = Arc<dyn Fn(&str) + Send + Sync>;

/// One command from a client, and where its outcome goes.
struct Job {
    command: String,
    reply: Sender<Result<Reply, String>>,
}

/// Serves clients on `listener` and the guest at `qemu_socket` from
/// background threads, until the process ends.
pub fn spawn(listener: UnixListener, qemu_socket: PathBuf, cores: CoreSink, notify: Notify) {
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("ctl-guest".into())
        .spawn(move || guest_loop(&qemu_socket, jobs_rx, &cores, &notify))
        .ok();
    std::thread::Builder::new()
        .name("ctl-listen".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let jobs = jobs_tx.clone();
                std::thread::spawn(move || serve_client(stream, &jobs));
            }
        })
        .ok();
}

fn guest_loop(qemu_socket: &Path, jobs: Receiver<Job>, cores: &CoreSink, notify: &Notify) {
    let mut conn = match CtlConnection::connect_timeout(qemu_socket, QEMU_CONNECT_TIMEOUT) {
        Ok(c) => c,
        Err(e) => return refuse_all(&jobs, &format!("no connection to the guest: {e:#}")),
    };
    let closed = loop {
        let outcome = match jobs.recv_timeout(POLL) {
            Ok(job) => {
                let result = match conn.broken() {
                    // A late reply may still be on its way: let it pass.
                    Some(_) => conn.resync(Duration::from_millis(500), GCORE_TIMEOUT),
                    None => Ok(()),
                }
                .and_then(|()| conn.request(&job.command));
                let failed = result.as_ref().err().map(|e| format!("{e:#}"));
                let _ = job.reply.send(result.map_err(|e| format!("{e:#}")));
                failed
            }
            Err(RecvTimeoutError::Timeout) if conn.broken().is_none() => {
                conn.poll_events(POLL).err().map(|e| format!("{e:#}"))
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some("the broker stopped".into()),
        };
        save_cores(&mut conn, cores, notify);
        if let Some(why) = outcome
            && (conn.is_closed() || why == "the broker stopped")
        {
            break why;
        }
    };
    refuse_all(
        &jobs,
        &format!("the guest's control channel is gone: {closed}"),
    );
}

fn save_cores(conn: &mut CtlConnection, cores: &CoreSink, notify: &Notify) {
    for event in conn.take_events() {
        if let Event::Core(core) = event {
            notify(&cores.save(&core));
        }
    }
}

/// Answers every later job with `why`.
fn refuse_all(jobs: &Receiver<Job>, why: &str) {
    while let Ok(job) = jobs.recv() {
        let _ = job.reply.send(Err(why.to_string()));
    }
}

/// Reads one line of at most `MAX_CLIENT_LINE` bytes; `Ok(None)` at the
/// end; a longer line is read to its end and returned as `Err(length)`.
fn read_client_line(reader: &mut impl BufRead) -> std::io::Result<Option<Result<String, usize>>> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_CLIENT_LINE as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') && line.len() > MAX_CLIENT_LINE {
        let mut rest = Vec::new();
        let more = reader.read_until(b'\n', &mut rest)?;
        return Ok(Some(Err(line.len() + more)));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(Some(Ok(String::from_utf8_lossy(&line).into_owned())))
}

fn serve_client(stream: UnixStream, jobs: &Sender<Job>) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    while let Ok(Some(line)) = read_client_line(&mut reader) {
        let out = match line {
            Err(len) => error_line(&format!(
                "command too long ({len} bytes; at most {MAX_COMMAND_BYTES})"
            )),
            Ok(command) if command.trim().is_empty() => error_line("empty command (try `help`)"),
            Ok(command) => forward(jobs, command),
        };
        if writer
            .write_all(&out)
            .and_then(|()| writer.flush())
            .is_err()
        {
            return;
        }
    }
}

fn error_line(message: &str) -> Vec<u8> {
    let mut out = json!({ "error": message }).to_string().into_bytes();
    out.push(b'\n');
    out
}

fn broker_error_line(message: &str) -> Vec<u8> {
    let mut out = json!({ "broker_error": message }).to_string().into_bytes();
    out.push(b'\n');
    out
}

/// Runs `command` on the guest thread; the reply in wire format.
fn forward(jobs: &Sender<Job>, command: String) -> Vec<u8> {
    let (tx, rx) = mpsc::channel();
    if jobs.send(Job { command, reply: tx }).is_err() {
        return broker_error_line("the broker has no guest connection");
    }
    match rx.recv() {
        Ok(Ok(reply)) => {
            let mut out = reply.json_line().into_bytes();
            out.push(b'\n');
            if let Some(payload) = reply.payload() {
                out.extend_from_slice(payload);
                out.push(b'\n');
            }
            out
        }
        Ok(Err(why)) => broker_error_line(&why),
        Err(_) => broker_error_line("the broker's guest thread ended"),
    }
}

/// The control channel of one `cargo spindle run`: its files in the
/// runtime directory and the broker. Dropping it removes the files.
pub struct RunBroker {
    paths: Paths,
    listener: Option<UnixListener>,
    cores: CoreSink,
    image: Option<String>,
}

impl RunBroker {
    /// Makes the runtime directory and binds the broker's socket, named by
    /// this process's pid.
    pub fn prepare(dir: &Path, image: Option<&Path>, cores: CoreSink) -> Result<RunBroker> {
        registry::ensure_private_dir(dir)?;
        let paths = Paths::for_runner(dir, std::process::id());
        paths.check()?;
        // Files with our pid can only be a dead runner's.
        paths.remove_all();
        let listener = UnixListener::bind(&paths.socket)
            .with_context(|| format!("listening on {}", paths.socket.display()))?;
        Ok(RunBroker {
            paths,
            listener: Some(listener),
            cores,
            image: image.map(|p| p.display().to_string()),
        })
    }

    /// Where QEMU must listen for the guest's COM2.
    pub fn qemu_socket(&self) -> &Path {
        &self.paths.qemu_socket
    }

    /// The broker's socket (what `cargo spindle ctl` uses).
    pub fn socket(&self) -> &Path {
        &self.paths.socket
    }

    /// Registers the instance (now that QEMU runs) and starts the broker.
    pub fn start(&mut self, qemu_pid: u32, notify: Notify) -> Result<()> {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let instance = Instance {
            runner_pid: std::process::id(),
            qemu_pid: Some(qemu_pid),
            socket: self.paths.socket.clone(),
            qemu_socket: self.paths.qemu_socket.clone(),
            image: self.image.clone(),
            started,
        };
        registry::write_entry(&self.paths, &instance)?;
        if let Some(listener) = self.listener.take() {
            spawn(
                listener,
                self.paths.qemu_socket.clone(),
                self.cores.clone(),
                notify,
            );
        }
        Ok(())
    }
}

impl Drop for RunBroker {
    fn drop(&mut self) {
        self.paths.remove_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::CtlConnection;
    use std::io::BufReader;
    use std::sync::Mutex;

    /// A fake guest on `qemu_socket`: answers `ps`, `gcore 7` (with a
    /// payload), sends a core event first, and says `error` to the rest.
    fn fake_guest(listener: UnixListener) {
        let (stream, _) = listener.accept().unwrap();
        let mut w = stream.try_clone().unwrap();
        w.write_all(b"{\"event\":\"hello\",\"version\":1}\n")
            .unwrap();
        w.write_all(b"{\"event\":\"core\",\"pid\":7,\"signal\":11,\"bytes\":4}\n\x7fELF\n")
            .unwrap();
        let mut r = BufReader::new(stream);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            let reply: &[u8] = match line.trim_end() {
                "ps" => b"{\"ok\":[{\"pid\":0,\"name\":\"proc0\"}]}\n",
                "gcore 7" => b"{\"ok\":{\"pid\":7,\"signal\":0,\"bytes\":3}}\nab\n\n",
                "quit" => return,
                _ => b"{\"error\":\"unknown command\"}\n",
            };
            w.write_all(reply).unwrap();
            line.clear();
        }
    }

    #[test]
    fn the_broker_relays_replies_and_payloads_and_saves_cores() {
        let dir = std::env::temp_dir().join(format!("spindle-broker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cores = CoreSink {
            dir: Some(dir.clone()),
            image: "target".into(),
        };
        let mut broker = RunBroker::prepare(&dir, None, cores).unwrap();
        let guest = UnixListener::bind(broker.qemu_socket()).unwrap();
        let guest_thread = std::thread::spawn(move || fake_guest(guest));
        let notes = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = Arc::clone(&notes);
        broker
            .start(
                4242,
                Arc::new(move |m: &str| sink.lock().unwrap().push(m.to_string())),
            )
            .unwrap();
        let live = registry::live_instances(&dir);
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].qemu_pid, Some(4242));

        let mut c = CtlConnection::connect(broker.socket()).unwrap();
        let ps = c.request("ps").unwrap();
        assert_eq!(ps.value().unwrap()[0]["name"], "proc0");
        let core = c.request("gcore 7").unwrap();
        assert_eq!(core.payload(), Some(&b"ab\n"[..]));
        assert_eq!(
            c.request("bogus").unwrap(),
            Reply::Error("unknown command".into())
        );
        let long = "x".repeat(MAX_CLIENT_LINE + 10);
        let err = c.request(&long).unwrap().error().unwrap().to_string();
        assert!(err.contains("too long"), "{err}");
        assert!(c.request("ps").unwrap().is_ok());
        // Events stay with the broker: the client saw none.
        assert!(c.take_events().is_empty());

        let saved = dir.join("core.target.7");
        for _ in 0..100 {
            if saved.exists() && !notes.lock().unwrap().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(std::fs::read(&saved).unwrap(), b"\x7fELF");
        assert_eq!(
            notes.lock().unwrap().as_slice(),
            [format!(
                "spindle: core of pid 7 (signal 11) saved to {} (4 bytes)",
                saved.display()
            )]
        );

        // The guest goes away: clients get a broker error, not a hang, and
        // the connection to the broker stays usable.
        for command in ["quit", "ps"] {
            let err = c.request(command);
            assert!(
                err.as_ref()
                    .is_err_and(|e| e.is::<crate::ctl::BrokerError>()),
                "{command}: {err:?}"
            );
        }
        guest_thread.join().unwrap();
        let socket = broker.socket().to_path_buf();
        let entry = Paths::for_runner(&dir, std::process::id()).entry;
        drop(broker);
        assert!(!entry.exists() && !socket.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
