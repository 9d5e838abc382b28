//! Running a guest: spawning QEMU so it can never outlive the runner,
//! capturing its serial log, timing it, and classifying how it ended.
//!
//! A QEMU child gets `PR_SET_PDEATHSIG(SIGKILL)`, which fires when the
//! *thread* that spawned it exits: spawn and wait in the same thread.

use crate::qemu::{EXIT_FAILURE_STATUS, EXIT_SUCCESS_STATUS, QemuConfig};
use anyhow::{Context, Result};
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// The substring of the kernel's ready line.
pub const READY_MARKER: &str = "spindle: ready";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Makes Ctrl-C (and SIGTERM/SIGHUP) set a flag that every wait loop here
/// checks, so guests are stopped and reaped instead of the runner dying.
pub fn install_interrupt_handler() -> Result<()> {
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")
}

/// True once Ctrl-C was pressed (only after `install_interrupt_handler`).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// A spawned QEMU that is stopped and reaped when this value is dropped.
pub struct GuardedChild {
    child: Child,
    reaped: bool,
}

impl GuardedChild {
    /// Spawns `cmd` with a parent-death signal so it dies with this thread.
    pub fn spawn(mut cmd: Command) -> Result<GuardedChild> {
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only
        // calls the async-signal-safe prctl(2) and getppid(2); it allocates
        // nothing (the error is built from a raw errno).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                anyhow::anyhow!("{program} not found: run `cargo spindle setup`")
            } else {
                anyhow::anyhow!("cannot start {program}: {e}")
            }
        })?;
        Ok(GuardedChild {
            child,
            reaped: false,
        })
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Non-blocking: the exit status if the child has ended.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let status = self.child.try_wait().context("waiting for QEMU")?;
        if status.is_some() {
            self.reaped = true;
        }
        Ok(status)
    }

    /// Blocks until the child ends.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        let status = self.child.wait().context("waiting for QEMU")?;
        self.reaped = true;
        Ok(status)
    }

    /// Stops the child: SIGTERM (QEMU then restores the terminal), then
    /// SIGKILL if it is still there after a grace period; always reaps it.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        if self.reaped {
            return self.child.try_wait().ok().flatten();
        }
        if let Ok(Some(status)) = self.try_wait() {
            return Some(status);
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // unreaped child, so it cannot have been recycled for another process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let grace = Instant::now() + Duration::from_secs(2);
        while Instant::now() < grace {
            if let Ok(Some(status)) = self.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        self.wait().ok()
    }
}

impl Drop for GuardedChild {
    fn drop(&mut self) {
        if !self.reaped {
            self.terminate();
        }
    }
}

/// How a guest run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestOutcome {
    /// The guest exited with success (QEMU status 33).
    Success,
    /// The guest exited with failure (QEMU status 35).
    Failure,
    /// Killed by the runner after the time limit.
    Timeout,
    /// Stopped by the runner at the ready line (`RunLimits::stop_at_ready`).
    StoppedAtReady,
    /// Stopped because the user pressed Ctrl-C.
    Interrupted,
    /// Any other end: another status, a signal; with a description.
    Abnormal(String),
}

/// What a guest run produced.
#[derive(Clone, Debug)]
pub struct GuestResult {
    pub outcome: GuestOutcome,
    /// The full serial log (QEMU's stdout), `\r` removed.
    pub log: String,
    /// QEMU's own stderr (error messages about its command line).
    pub stderr: String,
    /// From spawning QEMU to its exit (or to being stopped).
    pub wall: Duration,
    /// From spawning QEMU to the arrival of the ready line, if it came.
    pub ready_after: Option<Duration>,
}

impl GuestResult {
    /// The last `n` lines of the serial log, plus QEMU's stderr if any.
    pub fn log_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.log.lines().collect();
        let start = lines.len().saturating_sub(n);
        let mut out = String::new();
        if start > 0 {
            out.push_str(&format!("[... {start} earlier lines ...]\n"));
        }
        for line in &lines[start..] {
            out.push_str(line);
            out.push('\n');
        }
        if !self.stderr.trim().is_empty() {
            out.push_str("--- QEMU stderr ---\n");
            out.push_str(self.stderr.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Limits for one run.
#[derive(Clone, Copy, Debug)]
pub struct RunLimits {
    /// Kill the guest this long after spawning it.
    pub timeout: Duration,
    /// Kill the guest this long after its ready line, if set.
    pub after_ready: Option<Duration>,
    /// Stop the guest as soon as the ready line arrives.
    pub stop_at_ready: bool,
}

impl RunLimits {
    pub fn timeout(timeout: Duration) -> Self {
        RunLimits {
            timeout,
            after_ready: None,
            stop_at_ready: false,
        }
    }
}

/// Maps QEMU's exit status to an outcome.
pub fn classify_status(status: ExitStatus) -> GuestOutcome {
    match (status.code(), status.signal()) {
        (Some(EXIT_SUCCESS_STATUS), _) => GuestOutcome::Success,
        (Some(EXIT_FAILURE_STATUS), _) => GuestOutcome::Failure,
        (Some(code), _) => GuestOutcome::Abnormal(format!(
            "QEMU exited with status {code} (not the guest's 33 = success or 35 = failure)"
        )),
        (None, Some(sig)) => GuestOutcome::Abnormal(format!("QEMU was killed by signal {sig}")),
        (None, None) => GuestOutcome::Abnormal(format!("QEMU ended oddly: {status}")),
    }
}

/// Boots `config` with serial on a pipe and stdin closed; waits at most
/// `timeout`.
pub fn run_guest(config: &QemuConfig, timeout: Duration) -> Result<GuestResult> {
    run_guest_with(config, RunLimits::timeout(timeout))
}

enum Event {
    Ready(Instant),
    Eof(Instant),
}

/// Boots `config` under `limits`; the guest is always reaped on return.
/// Errors only when QEMU cannot be started at all.
pub fn run_guest_with(config: &QemuConfig, limits: RunLimits) -> Result<GuestResult> {
    let mut config = config.clone();
    config.serial = crate::qemu::Serial::Stdio;
    let mut cmd = config.command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let start = Instant::now();
    let mut guest = GuardedChild::spawn(cmd)?;
    let stdout = guest.child_mut().stdout.take().context("QEMU stdout")?;
    let stderr = guest.child_mut().stderr.take().context("QEMU stderr")?;
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || read_serial(stdout, tx));
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let mut stderr = stderr;
        let _ = stderr.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });

    let mut ready_at: Option<Instant> = None;
    let mut end_at: Option<Instant> = None;
    let outcome = loop {
        let mut deadline = start + limits.timeout;
        if let (Some(ready), Some(after)) = (ready_at, limits.after_ready) {
            deadline = deadline.min(ready + after);
        }
        let now = Instant::now();
        if now >= deadline {
            guest.terminate();
            break GuestOutcome::Timeout;
        }
        if interrupted() {
            guest.terminate();
            break GuestOutcome::Interrupted;
        }
        let slice = (deadline - now).min(Duration::from_millis(50));
        match rx.recv_timeout(slice) {
            Ok(Event::Ready(at)) => {
                ready_at.get_or_insert(at);
                if limits.stop_at_ready {
                    end_at = Some(at);
                    guest.terminate();
                    break GuestOutcome::StoppedAtReady;
                }
            }
            Ok(Event::Eof(at)) => {
                end_at = Some(at);
                break reap_before(&mut guest, deadline);
            }
            Err(RecvTimeoutError::Disconnected) => {
                let outcome = reap_before(&mut guest, deadline);
                end_at = Some(Instant::now());
                break outcome;
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    };
    let end = end_at.unwrap_or_else(Instant::now);
    let log = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(GuestResult {
        outcome,
        log,
        stderr,
        wall: end.duration_since(start),
        ready_after: ready_at.map(|r| r.duration_since(start)),
    })
}

/// After QEMU closed its stdout: waits for its exit until `deadline`.
fn reap_before(guest: &mut GuardedChild, deadline: Instant) -> GuestOutcome {
    loop {
        match guest.try_wait() {
            Ok(Some(status)) => return classify_status(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
            Ok(None) => {
                guest.terminate();
                return GuestOutcome::Timeout;
            }
            Err(e) => return GuestOutcome::Abnormal(format!("{e:#}")),
        }
    }
}

/// Reads QEMU's stdout to the end, reporting the ready line and EOF as they
/// happen; returns the whole log with `\r` removed.
fn read_serial(mut stdout: impl Read, tx: mpsc::Sender<Event>) -> String {
    let mut log: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut line_start = 0;
    let mut ready_sent = false;
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let now = Instant::now();
        log.extend(buf[..n].iter().copied().filter(|&b| b != b'\r'));
        if !ready_sent {
            while let Some(pos) = log[line_start..].iter().position(|&b| b == b'\n') {
                let line = &log[line_start..line_start + pos];
                line_start += pos + 1;
                if String::from_utf8_lossy(line).contains(READY_MARKER) {
                    ready_sent = true;
                    let _ = tx.send(Event::Ready(now));
                    break;
                }
            }
        }
    }
    let _ = tx.send(Event::Eof(Instant::now()));
    String::from_utf8_lossy(&log).into_owned()
}
