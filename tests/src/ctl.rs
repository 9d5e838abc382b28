//! Helpers for the `ctl` integration test: a live guest running the
//! `target` image with its COM2 on a unix socket, its console read line by
//! line as it comes, the control channel used directly through
//! `spindle_runner::ctl::CtlConnection`, and typed, strict readings of the
//! reply values (a missing or mistyped field is a failure, not a default).
//!
//! Theory: the thread that boots a guest owns its QEMU (the parent-death
//! signal is per thread) and stops it when the `CtlGuest` is dropped;
//! every wait has a deadline, and every failure message carries the tail
//! of the console.

use serde_json::Value;
use spindle_runner::ctl::{CtlConnection, Reply};
use spindle_runner::guest::GuardedChild;
use spindle_runner::images;
use spindle_runner::kbuild::{Profile, build_kernel};
use spindle_runner::{Machine, Net, QemuConfig, setup};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod gdb;
pub use gdb::{GdbReport, check_core_header, count_info_threads, gdb_batch, gdb_on_core};

/// The kernel-only LWPs `test.kworkers=2` places in the process.
pub const KWORKERS: [&str; 2] = ["kworker-0", "kworker-1"];
/// The named user threads of `target` besides its main thread.
pub const USER_THREADS: [&str; 3] = ["spinner", "pauser", "sleeper"];
/// Every signal held: the hold mask of a kernel-only LWP.
pub const ALL_HELD: &str = "0xffffffffffffffff";

/// The debug kernel and the `target` image, built once per test binary.
pub struct Prepared {
    pub kernel: PathBuf,
    pub image: PathBuf,
    pub timeout: Duration,
}

/// Builds what the tests boot (once; later calls share the outcome).
pub fn prepare() -> Result<&'static Prepared, String> {
    static PREPARED: OnceLock<Result<Prepared, String>> = OnceLock::new();
    PREPARED
        .get_or_init(|| {
            setup::setup(false).map_err(|e| format!("cargo spindle setup failed: {e:#}"))?;
            let timeout = crate::timeout_from_env()?;
            let kernel = build_kernel(Profile::Debug).map_err(|e| format!("{e:#}"))?;
            images::build_images().map_err(|e| format!("{e:#}"))?;
            let image = images::image_artifact("target");
            if !image.is_file() {
                return Err(format!(
                    "the `target` image is not built ({} is missing): images/target must be \
                     listed in spindle_runner::images::IMAGES",
                    image.display()
                ));
            }
            Ok(Prepared {
                kernel,
                image,
                timeout,
            })
        })
        .as_ref()
        .map_err(String::clone)
}

/// How to boot `target`.
#[derive(Clone, Debug)]
pub struct TargetBoot {
    pub smp: u32,
    pub mem_mib: u64,
    pub kworkers: u32,
    /// `respawn=N`: run the image N more times after it ends.
    pub respawn: Option<u32>,
    /// Another image than `target`, with its arguments.
    pub image: Option<(&'static str, Vec<String>)>,
    /// The guest's network (none by default).
    pub net: Net,
    /// More kernel command-line words (`net.ip=...`).
    pub append: Vec<String>,
    pub machine: Machine,
}

impl Default for TargetBoot {
    fn default() -> Self {
        TargetBoot {
            smp: 2,
            mem_mib: 128,
            kworkers: 2,
            respawn: None,
            image: None,
            net: Net::None,
            append: Vec::new(),
            machine: Machine::Q35,
        }
    }
}

#[derive(Default)]
struct ConsoleState {
    lines: Vec<String>,
    partial: Vec<u8>,
    eof: bool,
}

/// The console (COM1), split into lines as it arrives.
#[derive(Default)]
struct Console {
    state: Mutex<ConsoleState>,
    changed: Condvar,
}

impl Console {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConsoleState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn feed(&self, bytes: &[u8]) {
        let mut s = self.lock();
        for &b in bytes {
            match b {
                b'\r' => {}
                b'\n' => {
                    let line = String::from_utf8_lossy(&s.partial).into_owned();
                    s.partial.clear();
                    s.lines.push(line);
                }
                _ => s.partial.push(b),
            }
        }
        self.changed.notify_all();
    }

    fn end(&self) {
        let mut s = self.lock();
        if !s.partial.is_empty() {
            let line = String::from_utf8_lossy(&s.partial).into_owned();
            s.partial.clear();
            s.lines.push(line);
        }
        s.eof = true;
        self.changed.notify_all();
    }
}

/// A running guest with its control channel connected.
pub struct CtlGuest {
    qemu: GuardedChild,
    console: Arc<Console>,
    stderr: Arc<Mutex<String>>,
    pub ctl: CtlConnection,
    dir: PathBuf,
    timeout: Duration,
}

impl CtlGuest {
    /// Boots `target` as `boot` says, with COM2 on a socket in a fresh
    /// directory, and connects to it before the guest gets far.
    pub fn boot(p: &Prepared, boot: &TargetBoot) -> Result<CtlGuest, String> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "spindle-ctl-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let socket = dir.join("ctl.sock");
        let mut config = QemuConfig::new(&p.kernel).with_smp(boot.smp);
        config.mem_mib = boot.mem_mib;
        config.machine = boot.machine;
        config.ctl_socket = Some(socket.clone());
        let (name, args) = match &boot.image {
            Some((name, args)) => (*name, args.clone()),
            None => ("target", Vec::new()),
        };
        config.initrd = Some(if boot.image.is_some() {
            images::image_artifact(name)
        } else {
            p.image.clone()
        });
        config.net = boot.net.clone();
        let mut words = boot.append.clone();
        if boot.kworkers > 0 {
            words.push(format!("test.kworkers={}", boot.kworkers));
        }
        let words = words.join(" ");
        config.append = Some(
            images::compose_append(Some(&words), name, boot.respawn, &args)
                .map_err(|e| format!("{e:#}"))?,
        );
        let mut cmd = config.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut qemu = GuardedChild::spawn(cmd).map_err(|e| format!("{e:#}"))?;
        let console = Arc::new(Console::default());
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut out) = qemu.child_mut().stdout.take() {
            let c = Arc::clone(&console);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match out.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => c.feed(&buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                c.end();
            });
        }
        if let Some(mut err) = qemu.child_mut().stderr.take() {
            let s = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                s.lock().unwrap_or_else(|p| p.into_inner()).push_str(&text);
            });
        }
        let ctl = match CtlConnection::connect_timeout(&socket, Duration::from_secs(30)) {
            Ok(c) => c,
            Err(e) => {
                qemu.terminate();
                std::thread::sleep(Duration::from_millis(100));
                let why = stderr.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("{e:#}\nQEMU stderr:\n{why}"));
            }
        };
        Ok(CtlGuest {
            qemu,
            console,
            stderr,
            ctl,
            dir,
            timeout: p.timeout,
        })
    }

    /// The per-boot limit (for waits on the console).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A scratch directory that goes away with the guest.
    pub fn scratch(&self) -> &Path {
        &self.dir
    }

    /// How many whole console lines have arrived.
    pub fn line_count(&self) -> usize {
        self.console.lock().lines.len()
    }

    /// The console so far, lines joined.
    pub fn log(&self) -> String {
        let s = self.console.lock();
        let mut out = s.lines.join("\n");
        out.push('\n');
        out
    }

    /// The last 60 console lines and QEMU's stderr, for failure messages.
    pub fn tail(&self) -> String {
        let s = self.console.lock();
        let start = s.lines.len().saturating_sub(60);
        let mut out = format!("--- last {} console lines ---\n", s.lines.len() - start);
        for l in &s.lines[start..] {
            out.push_str(l);
            out.push('\n');
        }
        let err = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        if !err.trim().is_empty() {
            out.push_str("--- QEMU stderr ---\n");
            out.push_str(err.trim_end());
            out.push('\n');
        }
        out
    }

    /// Waits for the first line at index `from` or later that `want`
    /// accepts; returns its index and text.
    pub fn wait_line(
        &self,
        from: usize,
        what: &str,
        want: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<(usize, String), String> {
        let deadline = Instant::now() + timeout;
        let mut s = self.console.lock();
        loop {
            if let Some(i) = (from..s.lines.len()).find(|&i| want(&s.lines[i])) {
                return Ok((i, s.lines[i].clone()));
            }
            if s.eof {
                return Err(format!("the guest ended before printing {what}"));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "no {what} on the console within {:.0} s",
                    timeout.as_secs_f64()
                ));
            }
            s = self
                .console
                .changed
                .wait_timeout(s, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Waits for `target: ready pid P` at index `from` or later.
    pub fn wait_ready(&self, from: usize) -> Result<(usize, u64), String> {
        let (i, line) = self.wait_line(
            from,
            "`target: ready pid P`",
            |l| parse_ready(l).is_some(),
            self.timeout,
        )?;
        let pid = parse_ready(&line).ok_or("unreachable: the ready line did not parse")?;
        Ok((i, pid))
    }

    /// Sends `command`; after an earlier timeout, first puts the channel
    /// back in step.
    pub fn request(&mut self, command: &str) -> Result<Reply, String> {
        if self.ctl.broken().is_some() {
            self.ctl
                .resync(Duration::from_millis(500), Duration::from_secs(30))
                .map_err(|e| format!("`{command}`: the channel is out of step: {e:#}"))?;
        }
        self.ctl
            .request(command)
            .map_err(|e| format!("`{command}`: no reply: {e:#}"))
    }

    /// The value of an ok reply to `command`; a guest error is a failure.
    pub fn ok(&mut self, command: &str) -> Result<Value, String> {
        match self.request(command)? {
            Reply::Ok { value, .. } => Ok(value),
            Reply::Error(e) => Err(format!("`{command}`: the guest said error: {e}")),
        }
    }

    /// The message of an error reply to `command`; ok is a failure.
    pub fn guest_error(&mut self, command: &str) -> Result<String, String> {
        let shown: String = command.chars().take(40).collect();
        match self.request(command)? {
            Reply::Error(e) if !e.trim().is_empty() => Ok(e),
            Reply::Error(_) => Err(format!("`{shown}`: an error reply with no message")),
            Reply::Ok { value, .. } => Err(format!(
                "`{shown}`: expected an error reply, got ok: {value}"
            )),
        }
    }

    /// `lwps PID`, read strictly.
    pub fn lwps(&mut self, pid: u64) -> Result<Vec<Lwp>, String> {
        let v = self.ok(&format!("lwps {pid}"))?;
        let (got, lwps) = parse_lwps(&v)?;
        if got != pid {
            return Err(format!("`lwps {pid}` answered for pid {got}"));
        }
        Ok(lwps)
    }

    /// The LWPs of `pid` once the pauser and the sleeper are blocked (a
    /// wait channel each), waiting up to 30 s for that.
    pub fn settled_lwps(&mut self, pid: u64) -> Result<Vec<Lwp>, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let lwps = self.lwps(pid)?;
            let blocked = ["pauser", "sleeper"]
                .iter()
                .all(|n| find(&lwps, n).is_ok_and(|l| l.wchan.is_some()));
            if blocked {
                return Ok(lwps);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the pauser and the sleeper are not both blocked (with a wait channel) \
                     after 30 s: {}",
                    summary(&lwps)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for CtlGuest {
    fn drop(&mut self) {
        self.qemu.terminate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pid in `target: ready pid P`.
pub fn parse_ready(line: &str) -> Option<u64> {
    let at = line.find("target: ready pid ")?;
    line[at + "target: ready pid ".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `IMAGE: flood done sent N handled M on-user-threads K rt-sent A
/// rt-handled B std-sent C std-handled D` (`image_support::flood`, in
/// `target` and `echo`): real-time (queued) signals apart from standard
/// ones, which merge while pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flood {
    pub sent: u64,
    pub handled: u64,
    pub on_user_threads: u64,
    pub rt_sent: u64,
    pub rt_handled: u64,
    pub std_sent: u64,
    pub std_handled: u64,
}

/// Signals one flood sends (`image_support::flood::SIGNALS`).
pub const FLOOD_SIGNALS: u64 = 10_000;

impl Flood {
    /// Every one of [`FLOOD_SIGNALS`] sent; every real-time one handled
    /// (they queue), standard ones at most once each (they merge while
    /// pending); every handler ran on a user thread (kernel-only LWPs
    /// never take a signal).
    pub fn check(&self) -> Result<(), String> {
        let consistent = self.sent == FLOOD_SIGNALS
            && self.sent == self.rt_sent + self.std_sent
            && self.handled == self.rt_handled + self.std_handled
            && self.rt_sent > 0
            && self.rt_handled == self.rt_sent
            && self.std_handled <= self.std_sent
            && self.on_user_threads == self.handled;
        if consistent {
            return Ok(());
        }
        Err(format!(
            "the flood: {self:?}; expected {FLOOD_SIGNALS} sent, every real-time one handled, \
             all on user threads"
        ))
    }
}

/// `image`'s `IMAGE: flood done ...` line after console line `mark`
/// (waiting up to `timeout`), with no `IMAGE: flood send errors` line
/// before it, passing [`Flood::check`]; its index and the flood.
pub fn flood_done(
    g: &CtlGuest,
    image: &str,
    mark: usize,
    timeout: Duration,
) -> Result<(usize, Flood), String> {
    let done = format!("{image}: flood done ");
    let (at, line) = g.wait_line(
        mark,
        &format!("`{done}...`"),
        |l| l.contains(&done),
        timeout,
    )?;
    let errors = format!("{image}: flood send errors");
    if let Ok((_, e)) = g.wait_line(mark, "send errors", |l| l.contains(&errors), Duration::ZERO) {
        return Err(format!("the flood could not send everything: {e:?}"));
    }
    let flood = parse_flood(&line).ok_or_else(|| format!("unreadable flood line {line:?}"))?;
    flood.check()?;
    Ok((at, flood))
}

pub fn parse_flood(line: &str) -> Option<Flood> {
    let at = line.find(": flood done ")?;
    let words: Vec<&str> = line[at + ": flood done".len()..]
        .split_whitespace()
        .collect();
    let get = |key: &str| {
        let i = words.iter().position(|w| *w == key)?;
        words.get(i + 1)?.parse::<u64>().ok()
    };
    Some(Flood {
        sent: get("sent")?,
        handled: get("handled")?,
        on_user_threads: get("on-user-threads")?,
        rt_sent: get("rt-sent")?,
        rt_handled: get("rt-handled")?,
        std_sent: get("std-sent")?,
        std_handled: get("std-handled")?,
    })
}

fn get<'a>(v: &'a Value, key: &str, what: &str) -> Result<&'a Value, String> {
    v.get(key)
        .ok_or_else(|| format!("{what} has no `{key}`: {v}"))
}

fn get_u64(v: &Value, key: &str, what: &str) -> Result<u64, String> {
    get(v, key, what)?
        .as_u64()
        .ok_or_else(|| format!("{what}: `{key}` is not a whole number: {v}"))
}

fn get_i64(v: &Value, key: &str, what: &str) -> Result<i64, String> {
    get(v, key, what)?
        .as_i64()
        .ok_or_else(|| format!("{what}: `{key}` is not a whole number: {v}"))
}

fn get_str(v: &Value, key: &str, what: &str) -> Result<String, String> {
    get(v, key, what)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{what}: `{key}` is not a string: {v}"))
}

fn get_array<'a>(v: &'a Value, key: &str, what: &str) -> Result<&'a Vec<Value>, String> {
    get(v, key, what)?
        .as_array()
        .ok_or_else(|| format!("{what}: `{key}` is not an array: {v}"))
}

/// One entry of `lwps`.
#[derive(Clone, Debug, PartialEq)]
pub struct Lwp {
    pub id: u64,
    pub tid: i64,
    pub name: String,
    pub state: String,
    pub kernel_only: bool,
    pub flags: Vec<String>,
    pub cpu_ms: u64,
    pub hold_mask: String,
    /// The LWP's own pending signals (not its process's), if reported.
    pub pending: Option<u64>,
    pub wchan: Option<String>,
    /// Context switches, if the guest reports them.
    pub switches: Option<u64>,
    /// Parked (held still with a user snapshot), if the guest says.
    pub parked: Option<bool>,
}

impl Lwp {
    /// Reported stopped or parked (by `parked`, its state or a flag).
    pub fn is_stopped(&self) -> bool {
        let stopped = |s: &str| {
            let s = s.to_ascii_lowercase();
            s.contains("stop") || s.contains("park")
        };
        self.parked == Some(true) || stopped(&self.state) || self.flags.iter().any(|f| stopped(f))
    }
}

/// `lwps` -> (pid, LWPs).
pub fn parse_lwps(v: &Value) -> Result<(u64, Vec<Lwp>), String> {
    let pid = get_u64(v, "pid", "lwps")?;
    let mut out = Vec::new();
    for l in get_array(v, "lwps", "lwps")? {
        let what = "an lwps entry";
        let flags = get_array(l, "flags", what)?
            .iter()
            .map(|f| {
                f.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{what}: a flag that is not a string: {l}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let wchan = match get(l, "wchan", what)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            _ => return Err(format!("{what}: `wchan` is neither a string nor null: {l}")),
        };
        let switches = match l.get("switches") {
            None => None,
            Some(s) => Some(
                s.as_u64()
                    .ok_or_else(|| format!("{what}: `switches` is not a whole number: {l}"))?,
            ),
        };
        let pending = match l.get("pending") {
            None => None,
            Some(p) => Some(
                p.as_str()
                    .and_then(|h| h.strip_prefix("0x"))
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("{what}: `pending` is not a 0x hex string: {l}"))?,
            ),
        };
        let parked = match l.get("parked") {
            None => None,
            Some(p) => Some(
                p.as_bool()
                    .ok_or_else(|| format!("{what}: `parked` is not a boolean: {l}"))?,
            ),
        };
        out.push(Lwp {
            id: get_u64(l, "id", what)?,
            tid: get_i64(l, "tid", what)?,
            name: get_str(l, "name", what)?,
            state: get_str(l, "state", what)?,
            kernel_only: get(l, "kernel_only", what)?
                .as_bool()
                .ok_or_else(|| format!("{what}: `kernel_only` is not a boolean: {l}"))?,
            flags,
            cpu_ms: get_u64(l, "cpu_ms", what)?,
            hold_mask: get_str(l, "hold_mask", what)?,
            pending,
            wchan,
            switches,
            parked,
        });
    }
    Ok((pid, out))
}

/// The LWP named `name`.
pub fn find<'a>(lwps: &'a [Lwp], name: &str) -> Result<&'a Lwp, String> {
    let mut it = lwps.iter().filter(|l| l.name == name);
    match (it.next(), it.next()) {
        (Some(l), None) => Ok(l),
        (None, _) => Err(format!("no LWP named {name:?} in {:?}", names(lwps))),
        (Some(_), Some(_)) => Err(format!("two LWPs named {name:?} in {:?}", names(lwps))),
    }
}

/// `id name state wchan` of each LWP, for messages.
pub fn summary(lwps: &[Lwp]) -> String {
    lwps.iter()
        .map(|l| {
            format!(
                "{} {} {} {}",
                l.id,
                l.name,
                l.state,
                l.wchan.as_deref().unwrap_or("-")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn names(lwps: &[Lwp]) -> Vec<&str> {
    lwps.iter().map(|l| l.name.as_str()).collect()
}

/// The ids of the LWPs `keep` accepts.
pub fn ids(lwps: &[Lwp], keep: impl Fn(&Lwp) -> bool) -> BTreeSet<u64> {
    lwps.iter().filter(|l| keep(l)).map(|l| l.id).collect()
}

/// One entry of `ps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u64,
    pub name: String,
    pub state: String,
    pub lwps: u64,
    pub representative: Option<u64>,
}

pub fn parse_ps(v: &Value) -> Result<Vec<Proc>, String> {
    let list = v
        .as_array()
        .ok_or_else(|| format!("ps is not an array: {v}"))?;
    list.iter()
        .map(|p| {
            let what = "a ps entry";
            let representative = match get(p, "representative", what)? {
                Value::Null => None,
                r => Some(r.as_u64().ok_or_else(|| {
                    format!("{what}: `representative` is neither an id nor null: {p}")
                })?),
            };
            Ok(Proc {
                pid: get_u64(p, "pid", what)?,
                name: get_str(p, "name", what)?,
                state: get_str(p, "state", what)?,
                lwps: get_u64(p, "lwps", what)?,
                representative,
            })
        })
        .collect()
}

/// `stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    pub free_frames: u64,
    pub heap_bytes: u64,
    pub lwps: u64,
    pub processes: u64,
}

pub fn parse_stats(v: &Value) -> Result<Stats, String> {
    Ok(Stats {
        free_frames: get_u64(v, "free_frames", "stats")?,
        heap_bytes: get_u64(v, "heap_bytes", "stats")?,
        lwps: get_u64(v, "lwps", "stats")?,
        processes: get_u64(v, "processes", "stats")?,
    })
}

/// One thread of `pstack`: its ids and `(pc, symbol)` per frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackThread {
    pub id: u64,
    pub tid: i64,
    pub frames: Vec<(String, Option<String>)>,
}

impl StackThread {
    /// True when a frame's symbol mentions `function`.
    pub fn has(&self, function: &str) -> bool {
        self.frames
            .iter()
            .any(|(_, s)| s.as_deref().is_some_and(|s| s.contains(function)))
    }
}

pub fn parse_pstack(v: &Value) -> Result<(u64, Vec<StackThread>), String> {
    let pid = get_u64(v, "pid", "pstack")?;
    let mut out = Vec::new();
    for t in get_array(v, "threads", "pstack")? {
        let what = "a pstack thread";
        let mut frames = Vec::new();
        for f in get_array(t, "frames", what)? {
            let pc = get_str(f, "pc", "a pstack frame")?;
            if !pc.starts_with("0x") || u64::from_str_radix(&pc[2..], 16).is_err() {
                return Err(format!("a pstack frame's pc is not 0x-hex: {f}"));
            }
            let symbol = match get(f, "symbol", "a pstack frame")? {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                _ => return Err(format!("a pstack frame's symbol is odd: {f}")),
            };
            frames.push((pc, symbol));
        }
        out.push(StackThread {
            id: get_u64(t, "id", what)?,
            tid: get_i64(t, "tid", what)?,
            frames,
        });
    }
    Ok((pid, out))
}

/// Named checks on one guest: each runs, failures are gathered, and the
/// group fails with all of them (and the console's tail) at the end.
#[derive(Default)]
pub struct Checks {
    run: Vec<String>,
    failed: Vec<String>,
}

impl Checks {
    pub fn check(&mut self, name: &str, result: Result<(), String>) {
        self.run.push(name.to_string());
        if let Err(why) = result {
            self.failed.push(format!("{name}: {why}"));
        }
    }

    /// `Ok` when every check passed.
    pub fn finish(self, guest: &CtlGuest) -> Result<(), String> {
        if self.failed.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{} of {} checks failed ({}):\n- {}\n{}",
            self.failed.len(),
            self.run.len(),
            self.run.join(", "),
            self.failed.join("\n- "),
            guest.tail()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn console_markers_parse() {
        assert_eq!(parse_ready("target: ready pid 3"), Some(3));
        assert_eq!(parse_ready("xxtarget: ready pid 12 (4 threads)"), Some(12));
        assert_eq!(parse_ready("target: ready pid x"), None);
        assert_eq!(
            parse_flood(
                "target: flood done sent 10000 handled 9000 on-user-threads 9000 \
                 rt-sent 4000 rt-handled 4000 std-sent 6000 std-handled 5000"
            ),
            Some(Flood {
                sent: 10000,
                handled: 9000,
                on_user_threads: 9000,
                rt_sent: 4000,
                rt_handled: 4000,
                std_sent: 6000,
                std_handled: 5000,
            })
        );
        let mut f = parse_flood(
            "target: flood done sent 10000 handled 9000 on-user-threads 9000 \
             rt-sent 4000 rt-handled 4000 std-sent 6000 std-handled 5000",
        )
        .unwrap();
        assert_eq!(f.check(), Ok(()));
        f.on_user_threads -= 1;
        assert!(f.check().is_err());
        f.on_user_threads += 1;
        f.rt_handled -= 1;
        f.handled -= 1;
        assert!(f.check().is_err());
        let echo = "echo: flood done sent 5 handled 4 on-user-threads 4 rt-sent 2 \
                    rt-handled 2 std-sent 3 std-handled 2";
        assert_eq!(
            parse_flood(echo).map(|f| (f.sent, f.std_handled)),
            Some((5, 2))
        );
        assert_eq!(parse_flood("target: flood done sent 1 handled"), None);
        assert_eq!(
            parse_flood("target: flood done sent 1 handled 1 on-user-threads 1"),
            None
        );
    }

    #[test]
    fn replies_are_read_strictly() {
        let l = json!({"id": 3, "tid": 3, "name": "spinner", "state": "running",
            "kernel_only": false, "flags": [], "class": "TS", "priority": 1, "cpu": 0,
            "cpu_ms": 5, "hold_mask": "0x0", "wchan": null, "switches": 7});
        let (pid, lwps) = parse_lwps(&json!({"pid": 1, "lwps": [l.clone()]})).unwrap();
        assert_eq!(
            (pid, lwps[0].switches, lwps[0].wchan.clone()),
            (1, Some(7), None)
        );
        assert!(!lwps[0].is_stopped());
        assert_eq!(lwps[0].pending, None);
        let mut pending = l.clone();
        pending["pending"] = json!("0x200");
        let with = parse_lwps(&json!({"pid": 1, "lwps": [pending.clone()]})).unwrap();
        assert_eq!(with.1[0].pending, Some(0x200));
        pending["pending"] = json!("200");
        assert!(parse_lwps(&json!({"pid": 1, "lwps": [pending]})).is_err());
        let mut parked = l.clone();
        parked["parked"] = json!(true);
        assert!(parse_lwps(&json!({"pid": 1, "lwps": [parked]})).unwrap().1[0].is_stopped());
        let mut bad = l;
        bad["kernel_only"] = json!("no");
        assert!(parse_lwps(&json!({"pid": 1, "lwps": [bad]})).is_err());
        assert!(
            parse_ps(&json!([{"pid": 0, "name": "proc0", "state": "running",
            "lwps": 3, "representative": null}]))
            .is_ok()
        );
        assert!(parse_ps(&json!([{"pid": 0}])).is_err());
        assert!(parse_stats(&json!({"free_frames": 1, "heap_bytes": 2})).is_err());
        let st = json!({"pid": 1, "threads": [{"id": 3, "tid": 3,
            "frames": [{"pc": "0x40", "symbol": "_ZN6target12spin_forever17h0E+0x4"}]}]});
        let (_, threads) = parse_pstack(&st).unwrap();
        assert!(threads[0].has("spin_forever") && !threads[0].has("wait_in_pause"));
        let badpc = json!({"pid": 1, "threads": [{"id": 3, "tid": 3,
            "frames": [{"pc": "40", "symbol": null}]}]});
        assert!(parse_pstack(&badpc).is_err());
    }
}
