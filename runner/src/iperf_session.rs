//! `cargo spindle iperf`: boot a guest that serves iperf3, run the host's
//! `iperf3` against it, then end the guest process and report its
//! teardown. `bench net` uses the same pieces for Spindle and for the
//! Linux baseline guest.
//!
//! Pieces: [`BootedGuest`] spawns QEMU (its stdout is the serial
//! console, collected by a reader thread into a shared buffer) and waits
//! for a marker line; [`run_host_iperf3`] runs the host's iperf3 with a
//! wall-clock limit, calling back once a second for a progress line;
//! [`run`] is the whole `cargo spindle iperf`. Every child (QEMU, iperf3)
//! is killed on every exit path, and with `--net tap` the namespace goes
//! with the [`TapNamespace`] guard. Ctrl-C only sets a flag
//! (`guest::interrupted`) that every wait loop here checks.

use crate::ctl::{CtlConnection, Reply};
use crate::guest::{self, GuardedChild};
use crate::iperf::{self, GUEST_PORT, HostTest, Report};
use crate::netns::{self, TapNamespace};
use crate::process_log::{self, ProcessLog};
use crate::qemu::{Net, QemuConfig};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the Spindle guest prints once its server listens.
pub const SPINDLE_LISTENING: &str = "iperf: server listening on";

/// A running guest and its serial console.
pub struct BootedGuest {
    qemu: GuardedChild,
    console: Arc<Mutex<String>>,
    /// From spawning QEMU to the marker line.
    pub ready_after: Duration,
}

impl BootedGuest {
    /// Spawns `config` and waits (at most `limit`) for `marker` on the
    /// serial console.
    pub fn boot(config: &QemuConfig, marker: &str, limit: Duration) -> Result<BootedGuest> {
        let mut cmd = config.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut qemu = GuardedChild::spawn(cmd)?;
        let console = Arc::new(Mutex::new(String::new()));
        let stdout = qemu.child_mut().stdout.take().context("QEMU stdout")?;
        let stderr = qemu.child_mut().stderr.take().context("QEMU stderr")?;
        collect(stdout, Arc::clone(&console));
        collect(stderr, Arc::clone(&console));
        let mut guest = BootedGuest {
            qemu,
            console,
            ready_after: Duration::ZERO,
        };
        guest.wait_for(marker, started + limit)?;
        guest.ready_after = started.elapsed();
        Ok(guest)
    }

    /// Everything the console printed so far (`\r` removed).
    pub fn log(&self) -> String {
        self.console
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The last `n` lines of the console.
    pub fn tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits for `text` on the console until `deadline`; QEMU ending,
    /// the deadline or Ctrl-C first is an error.
    pub fn wait_for(&mut self, text: &str, deadline: Instant) -> Result<()> {
        loop {
            if self.log().contains(text) {
                return Ok(());
            }
            if let Some(status) = self.qemu.try_wait()? {
                // Let the reader threads drain what is left.
                std::thread::sleep(Duration::from_millis(100));
                if self.log().contains(text) {
                    return Ok(());
                }
                bail!(
                    "QEMU ended ({status}) before the guest printed {text:?}; last lines:\n{}",
                    self.tail(30)
                );
            }
            if guest::interrupted() {
                bail!("interrupted");
            }
            if Instant::now() >= deadline {
                bail!(
                    "the guest did not print {text:?} in time; last lines:\n{}",
                    self.tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until QEMU exits (the guest powered off) or `limit` passes.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.qemu.try_wait()? {
                std::thread::sleep(Duration::from_millis(100));
                return Ok(status);
            }
            if guest::interrupted() {
                bail!("interrupted");
            }
            if Instant::now() >= deadline {
                bail!(
                    "the guest did not power off within {limit:?}; last lines:\n{}",
                    self.tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// QEMU's pid (for per-thread CPU figures from /proc).
    pub fn qemu_pid(&self) -> u32 {
        self.qemu.id()
    }

    /// Stops QEMU now.
    pub fn kill(&mut self) {
        self.qemu.terminate();
    }
}

/// Appends everything `from` yields to `into` (`\r` dropped), in a thread.
fn collect(mut from: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
                    into.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_str(&text);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
}

/// Runs `cmd` (an `iperf3 ... -J`) to completion, at most `limit`, and
/// returns its JSON report. `tick` is called about once a second with the
/// time elapsed. iperf3 killed, not finished, or without a JSON report
/// is an error; a report carrying iperf3's `error` is returned as is.
pub fn run_host_iperf3(
    mut cmd: Command,
    limit: Duration,
    mut tick: impl FnMut(Duration),
) -> Result<Value> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = GuardedChild::spawn(cmd).context("starting the host's iperf3")?;
    let out = Arc::new(Mutex::new(String::new()));
    collect(
        child.child_mut().stdout.take().context("iperf3 stdout")?,
        Arc::clone(&out),
    );
    let err = Arc::new(Mutex::new(String::new()));
    collect(
        child.child_mut().stderr.take().context("iperf3 stderr")?,
        Arc::clone(&err),
    );
    let started = Instant::now();
    let mut next_tick = Duration::from_secs(1);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if guest::interrupted() {
            child.terminate();
            bail!("interrupted");
        }
        let elapsed = started.elapsed();
        if elapsed >= limit {
            child.terminate();
            bail!("the host's iperf3 did not finish within {limit:?} (killed)");
        }
        if elapsed >= next_tick {
            tick(elapsed);
            next_tick += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The reader threads see EOF right after the exit.
    std::thread::sleep(Duration::from_millis(100));
    let text = out.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => Ok(v),
        Err(_) => bail!(
            "the host's iperf3 ended ({status}) without a JSON report; it said: {}",
            err.lock().unwrap_or_else(|p| p.into_inner()).trim()
        ),
    }
}

/// Where `cargo spindle iperf` runs the guest's network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IperfNet {
    /// slirp with a forward from a free host port to the guest's 5201.
    User,
    /// A tap in a private namespace (root).
    Tap,
}

/// `cargo spindle iperf`'s choices.
pub struct IperfPlan {
    pub test: HostTest,
    pub net: IperfNet,
    /// QEMU's settings: kernel, accel, CPUs, memory (network and image are
    /// set here).
    pub config: QemuConfig,
    /// The `iperf` image.
    pub image: PathBuf,
    pub json: bool,
}

/// A host TCP port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free TCP port")?;
    Ok(l.local_addr()?.port())
}

/// The network side of one boot: QEMU's netdev, the guest's extra
/// command-line words, where the host's iperf3 connects, and how it runs.
pub struct Wiring {
    pub net: Net,
    pub guest_args: &'static str,
    pub target: String,
    pub port: u16,
    pub namespace: Option<TapNamespace>,
}

impl Wiring {
    pub fn new(kind: IperfNet) -> Result<Wiring> {
        Ok(match kind {
            IperfNet::User => {
                let port = free_port()?;
                Wiring {
                    net: Net::User {
                        hostfwd: vec![(port, GUEST_PORT)],
                    },
                    guest_args: "",
                    target: "127.0.0.1".into(),
                    port,
                    namespace: None,
                }
            }
            IperfNet::Tap => Wiring {
                net: Net::Tap {
                    ifname: netns::TAP_NAME.into(),
                },
                guest_args: netns::GUEST_NET_ARGS,
                target: netns::GUEST_IP.into(),
                port: GUEST_PORT,
                namespace: Some(TapNamespace::create()?),
            },
        })
    }

    /// The host's `iperf3` (inside the namespace with a tap).
    pub fn iperf3(&self, test: &HostTest) -> Command {
        let mut cmd = match &self.namespace {
            Some(ns) => ns.command("iperf3"),
            None => Command::new("iperf3"),
        };
        cmd.args(test.iperf3_args(&self.target, self.port));
        cmd
    }

    /// Puts `config` on this network.
    pub fn apply(&self, config: &mut QemuConfig) {
        config.net = self.net.clone();
        config.netns = self.namespace.as_ref().map(|ns| ns.name().to_string());
    }
}

fn ok(ctl: &mut CtlConnection, command: &str) -> Result<Value> {
    match ctl.request(command)? {
        Reply::Ok { value, .. } => Ok(value),
        Reply::Error(e) => bail!("`{command}`: the guest said: {e}"),
    }
}

/// The running `iperf` process's pid, from `ps`.
pub fn iperf_pid(ctl: &mut CtlConnection) -> Result<u64> {
    let ps = ok(ctl, "ps")?;
    ps.as_array()
        .into_iter()
        .flatten()
        .find(|p| p.get("name").and_then(Value::as_str) == Some("iperf"))
        .and_then(|p| p.get("pid").and_then(Value::as_u64))
        .with_context(|| format!("no `iperf` process in ps: {ps}"))
}

/// Bytes through the rings of `pid`: (rx, tx).
fn ring_bytes(ctl: &mut CtlConnection, pid: u64) -> Option<(u64, u64)> {
    let rings = ok(ctl, "rings").ok()?;
    let (mut rx, mut tx) = (0, 0);
    for r in rings.get("rings")?.as_array()? {
        if r.get("pid").and_then(Value::as_u64) != Some(pid) {
            continue;
        }
        let bytes = r.get("bytes").and_then(Value::as_u64).unwrap_or(0);
        match r.get("kind").and_then(Value::as_str) {
            Some("rx") => rx += bytes,
            Some("tx") => tx += bytes,
            _ => {}
        }
    }
    Some((rx, tx))
}

fn stats(ctl: &mut CtlConnection) -> Result<(u64, u64)> {
    let v = ok(ctl, "stats")?;
    let field = |k: &str| v.get(k).and_then(Value::as_u64);
    match (field("free_frames"), field("heap_bytes")) {
        (Some(f), Some(h)) => Ok((f, h)),
        _ => bail!("`stats` without free_frames/heap_bytes: {v}"),
    }
}

/// The teardown figures after the process ended.
fn teardown_report(log: &ProcessLog, live: (u64, u64)) -> Result<(String, Value, bool)> {
    let (Some(t), Some(before), Some(after), Some(end)) = (
        log.teardowns.first(),
        log.memory_before.first(),
        log.memory_after.first(),
        log.ends.first(),
    ) else {
        bail!("the guest's log lacks the process's end, teardown or memory lines");
    };
    let complete = after.free_frames == before.free_frames;
    let ended = match end {
        process_log::ProcessEnd::Exited { pid, status, .. } => {
            format!("pid {pid} exited with status {status}")
        }
        process_log::ProcessEnd::Killed { pid, signal, .. } => {
            format!("pid {pid} killed by signal {signal}")
        }
    };
    let text = format!(
        "teardown: {ended}; {} kernel-only workers inside at exit; last LWP gone {:.1} ms after exit began; \
         resources freed after {:.1} ms\n\
         teardown: {} frames returned ({} free while running, {} after exit, {} before the process: {}); \
         heap {} bytes returned ({} in use while running, {} after exit, {} before)",
        t.workers,
        t.last_lwp_gone_us as f64 / 1000.0,
        t.freed_us as f64 / 1000.0,
        after.free_frames.saturating_sub(live.0),
        live.0,
        after.free_frames,
        before.free_frames,
        if complete {
            "all back".to_string()
        } else {
            format!(
                "{} missing",
                before.free_frames as i64 - after.free_frames as i64
            )
        },
        live.1.saturating_sub(after.heap_bytes),
        live.1,
        after.heap_bytes,
        before.heap_bytes
    );
    let value = json!({
        "workers": t.workers,
        "last_lwp_gone_us": t.last_lwp_gone_us,
        "resources_freed_us": t.freed_us,
        "free_frames": {"before": before.free_frames, "running": live.0, "after": after.free_frames},
        "heap_bytes": {"before": before.heap_bytes, "running": live.1, "after": after.heap_bytes},
        "frames_all_returned": complete,
    });
    Ok((text, value, complete))
}

/// Prints progress on stderr: one line rewritten on a terminal.
struct ProgressLine {
    terminal: bool,
    drawn: bool,
}

impl ProgressLine {
    fn new() -> ProgressLine {
        ProgressLine {
            terminal: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    fn show(&mut self, text: &str) {
        let mut e = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(e, "\r\x1b[2K{text}");
        } else {
            let _ = writeln!(e, "{text}");
        }
        let _ = e.flush();
        self.drawn = true;
    }

    fn finish(&mut self) {
        if self.terminal && self.drawn {
            eprintln!();
        }
        self.drawn = false;
    }
}

/// `cargo spindle iperf`. Returns the runner's exit status.
pub fn run(plan: IperfPlan) -> Result<u8> {
    let wiring = Wiring::new(plan.net)?;
    let dir = crate::scratch_dir().join(format!("iperf-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("ctl.sock");
    let _ = std::fs::remove_file(&socket);
    let mut config = plan.config.clone();
    wiring.apply(&mut config);
    config.ctl_socket = Some(socket.clone());
    config.initrd = Some(plan.image.clone());
    let words = format!("loglevel=warn {}", wiring.guest_args);
    config.append = Some(crate::images::compose_append(
        Some(words.trim()),
        "iperf",
        None,
        &["-s".to_string()],
    )?);
    eprintln!(
        "spindle: iperf: booting ({} CPU, {} MiB, {:?}, net {:?})",
        config.smp, config.mem_mib, config.accel, plan.net
    );
    let result = session(&plan, &wiring, &config, &socket);
    let _ = std::fs::remove_dir_all(&dir);
    drop(wiring);
    result
}

fn session(
    plan: &IperfPlan,
    wiring: &Wiring,
    config: &QemuConfig,
    socket: &std::path::Path,
) -> Result<u8> {
    let mut guest = BootedGuest::boot(config, SPINDLE_LISTENING, Duration::from_secs(180))?;
    let mut ctl = CtlConnection::connect_timeout(socket, Duration::from_secs(10))
        .context("connecting to the guest's control channel")?;
    let pid = iperf_pid(&mut ctl)?;
    eprintln!(
        "spindle: iperf: guest listening after {:.2} s (pid {pid}); host iperf3 -> {}:{} ({}), {} s, {} stream(s)",
        guest.ready_after.as_secs_f64(),
        wiring.target,
        wiring.port,
        plan.test.direction.label(),
        plan.test.seconds,
        plan.test.parallel
    );
    let mut progress = ProgressLine::new();
    let mut last = (Instant::now(), ring_bytes(&mut ctl, pid));
    let seconds = plan.test.seconds;
    let limit = Duration::from_secs(u64::from(seconds) + 60);
    let raw = run_host_iperf3(wiring.iperf3(&plan.test), limit, |elapsed| {
        let now = (Instant::now(), ring_bytes(&mut ctl, pid));
        let rates = match (last.1, now.1) {
            (Some((rx0, tx0)), Some((rx1, tx1))) => {
                let dt = now.0.duration_since(last.0).as_secs_f64().max(1e-3);
                let gbit = |a: u64, b: u64| b.saturating_sub(a) as f64 * 8.0 / dt / 1e9;
                format!(
                    "guest rx {:.3} Gbit/s, tx {:.3} Gbit/s",
                    gbit(rx0, rx1),
                    gbit(tx0, tx1)
                )
            }
            _ => "rings unreadable".into(),
        };
        progress.show(&format!(
            "iperf: {:>3}/{seconds} s  {rates}",
            elapsed.as_secs()
        ));
        last = now;
    });
    progress.finish();
    let raw = raw?;
    let report: Result<Report> = iperf::parse_report(&plan.test, &raw);
    // The process ends either way: the teardown is half of the story.
    let live = stats(&mut ctl)?;
    ok(&mut ctl, &format!("kill -TERM {pid}"))?;
    guest.wait_exit(Duration::from_secs(60))?;
    let log = process_log::parse_process_log(&guest.log());
    let (teardown_text, teardown_json, complete) = teardown_report(&log, live)?;
    let report = report?;
    if plan.json {
        let doc = json!({
            "summary": iperf::summary_json(&report),
            "boot_to_listening_s": guest.ready_after.as_secs_f64(),
            "teardown": teardown_json,
            "iperf3": raw,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", iperf::render(&report));
        println!("{}", iperf::summary_line(&report));
        println!("{teardown_text}");
    }
    if !complete {
        eprintln!("spindle: iperf: frames were not all returned after the process ended");
        return Ok(1);
    }
    Ok(0)
}
