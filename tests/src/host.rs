//! Programs the tests run natively on the host: an image (the same static
//! binary Spindle runs) as a server whose stdout is read line by line, and
//! any command run to completion within a time limit.
//!
//! Theory: every child is killed when its handle is dropped (a failing or
//! panicking test leaves no process behind) and every wait has a limit,
//! so a program that hangs fails the test with what it printed so far.

use crate::ctl::prepare;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long [`HostImage::wait`] waits for a line.
pub const LINE_WAIT: Duration = Duration::from_secs(30);

/// A host process of an image, killed when dropped, its stdout as lines.
pub struct HostImage {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
}

impl HostImage {
    /// Runs image `name` natively with port 0 (`NAME 0`) and reads its
    /// listening line `NAME: listening on 0.0.0.0:PORT`; returns the
    /// process and the port it took.
    pub fn start(name: &str) -> Result<(HostImage, u16), String> {
        let prefix = format!("{name}: listening on 0.0.0.0:");
        HostImage::start_with(name, &["0"], &prefix)
    }

    /// Runs image `name` natively with `args` and waits for the line that
    /// starts with `listening` and ends with the port.
    pub fn start_with(
        name: &str,
        args: &[&str],
        listening: &str,
    ) -> Result<(HostImage, u16), String> {
        prepare()?;
        let path = spindle_runner::images::image_artifact(name);
        let mut child = Command::new(&path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running {}: {e}", path.display()))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut me = HostImage {
            child,
            lines,
            seen: Vec::new(),
        };
        let line = me.wait(|l| l.starts_with(listening))?;
        let port = line[listening.len()..]
            .parse()
            .map_err(|_| format!("unreadable listening line {line:?}"))?;
        Ok((me, port))
    }

    /// The next line `want` accepts (within [`LINE_WAIT`]).
    pub fn wait(&mut self, want: impl Fn(&str) -> bool) -> Result<String, String> {
        self.wait_for(want, LINE_WAIT)
    }

    /// The next line `want` accepts, within `limit`; the error quotes the
    /// lines read so far.
    pub fn wait_for(
        &mut self,
        want: impl Fn(&str) -> bool,
        limit: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if want(&l) {
                        return Ok(l);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "the expected line did not come within {:.0} s; the output so far:\n{}",
                        limit.as_secs_f64(),
                        self.seen.join("\n")
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait().ok().flatten();
                    return Err(format!(
                        "the program closed its output (status {status:?}) before the expected line; its output:\n{}",
                        self.seen.join("\n")
                    ));
                }
            }
        }
    }

    /// Every line read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }
}

impl Drop for HostImage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a bounded run printed and how it ended.
#[derive(Clone, Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Ran {
    /// Both outputs, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "status {}, after {:.1} s\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.elapsed.as_secs_f64(),
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Kills the child on every way out.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn drain(r: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut r) = r {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = r.read_to_end(&mut bytes);
            let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
        });
    }
    rx
}

/// Runs `cmd` (stdin empty, outputs captured) to its end; kills it after
/// `limit` and fails, quoting what it printed.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Ran, String> {
    let started = Instant::now();
    let what = format!("{cmd:?}");
    let mut child = Reaper(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running {what}: {e}"))?,
    );
    let out = drain(child.0.stdout.take());
    let err = drain(child.0.stderr.take());
    let status = loop {
        match child.0.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if started.elapsed() >= limit => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
    };
    if status.is_none() {
        let _ = child.0.kill();
    }
    let exit = child
        .0
        .wait()
        .map_err(|e| format!("waiting for {what}: {e}"))?;
    // The pipes close when the process is gone (a grandchild holding them
    // would be a bug of the program under test: bounded all the same).
    let grace = Duration::from_secs(5);
    let ran = Ran {
        status: exit,
        stdout: out.recv_timeout(grace).unwrap_or_default(),
        stderr: err.recv_timeout(grace).unwrap_or_default(),
        elapsed: started.elapsed(),
    };
    match status {
        Some(_) => Ok(ran),
        None => Err(format!(
            "{what} did not end within {:.0} s (killed); {}",
            limit.as_secs_f64(),
            ran.describe()
        )),
    }
}
