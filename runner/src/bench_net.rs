//! `cargo spindle bench net`: TCP throughput of Spindle's `iperf` image
//! against the Linux baseline guest (iperf3 3.12 in the anchor's Debian
//! initramfs), booted with identical QEMU arguments.
//!
//! Method. Both guests get the same QEMU command line but for `-kernel`,
//! `-initrd` and `-append`: machine, firmware, accelerator, `-cpu`,
//! memory, CPUs, the control-channel chardev (COM2; only Spindle answers
//! on it), the netdev (one `Wiring` for the whole bench, so the same
//! forwarded port or the same tap) and `-name bench-net,debug-threads=on`
//! (which names QEMU's threads for the per-thread CPU figures). In every
//! test the guest is the iperf3 server and the host's iperf3 the client:
//! host -> guest is plain `-c`, guest -> host is `-R`. So one boot serves
//! both directions and QEMU's arguments never depend on the direction.
//! (The anchor's `run.sh` measures guest -> host the other way round, with
//! the guest as client and a host `iperf3 -s`, and a slirp without the
//! forward; its g2h figures are therefore a slightly different path,
//! slirp's outbound NAT instead of its inbound forward.)
//!
//! Per repetition and system: one boot, boot-to-ready (QEMU spawned ->
//! the ready line: Spindle's `iperf: server listening on`, Linux's
//! `GUEST READY`, printed once iperf3's port is LISTENing), then one
//! host -> guest and one guest -> host test, then QEMU is killed. The
//! order of the systems alternates per repetition (S L, L S, S L, ...).
//! During each test: QEMU's per-thread CPU (utime + stime of
//! /proc/<qemu>/task/*/stat, summed by thread name), the host's busy
//! share (/proc/stat), and for Spindle the guest's CPU per LWP of the
//! iperf process (`lwps` on the control channel, before, once a second,
//! and after the test; `cpu_ms` is tick-sampled). A failed boot or test
//! is recorded with its reason and the console's last lines, and the
//! bench goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::ctl::{CtlConnection, Reply};
use crate::guest;
use crate::iperf::{self, Direction, HostTest};
use crate::iperf_session::{self, BootedGuest, IperfNet, Wiring};
use crate::netns;
use crate::qemu::{Accel, QemuConfig};

const SECTION_BEGIN: &str = "<!-- bench-net:begin (written by `cargo spindle bench net`) -->";
const SECTION_END: &str = "<!-- bench-net:end -->";
/// The Linux guest's ready line (after iperf3 -s listens).
pub const LINUX_READY: &str = "GUEST READY";
/// QEMU's `-name`: names the threads (vCPU, main loop) for /proc.
pub const QEMU_NAME: &str = "bench-net,debug-threads=on";
const BOOT_LIMIT: Duration = Duration::from_secs(180);
/// A pause before each test, the same for both systems.
const SETTLE: Duration = Duration::from_secs(1);
/// Console lines kept with a failure.
const TAIL_LINES: usize = 25;

/// One of the two guests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum System {
    Spindle,
    Linux,
}

impl System {
    pub fn label(self) -> &'static str {
        match self {
            System::Spindle => "Spindle",
            System::Linux => "Linux",
        }
    }
}

/// The two directions, in the order each boot runs them.
pub const DIRECTIONS: [Direction; 2] = [Direction::HostToGuest, Direction::GuestToHost];

/// What `bench net` measures.
pub struct NetBenchPlan {
    /// Spindle's (release) kernel.
    pub kernel: PathBuf,
    /// The `iperf` image (needed when Spindle is measured).
    pub image: Option<PathBuf>,
    pub accel: Accel,
    pub accel_reason: String,
    pub runs: usize,
    pub seconds: u32,
    pub net: IperfNet,
    pub smp: u32,
    pub mem_mib: u64,
    /// `-cpu` for both (`None`: the runner's default for the accelerator).
    pub cpu: Option<String>,
    /// Which systems to boot (both, unless debugging one side).
    pub systems: Vec<System>,
}

/// CPU of one group of the guest's LWPs over a test.
#[derive(Clone, Debug, PartialEq)]
pub struct LwpShare {
    /// `name (kernel-only)` or `name (user)` for the iperf process's
    /// LWPs, `name (pid N)` for another process's.
    pub label: String,
    /// LWPs under this label seen during the test.
    pub count: usize,
    /// CPU ms over the test's wall ms, in % (one guest CPU = 100).
    pub pct: f64,
}

/// The figures of one successful test.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    pub gbit_per_s: f64,
    pub retransmits: Option<u64>,
    /// From starting the host's iperf3 to its exit.
    pub wall_s: f64,
    /// QEMU's CPU per thread name, % of one host core over `wall_s`.
    pub qemu_threads: BTreeMap<String, f64>,
    /// The host's busy time over the test, % of all its CPUs.
    pub host_busy_pct: Option<f64>,
    /// The host's iperf3 process, % of one core (its `host_total`).
    pub host_iperf3_pct: Option<f64>,
    /// Everything else on the host, % of one core: busy time of all
    /// CPUs minus QEMU and the host's iperf3 (other processes, the host
    /// kernel's work not charged to either).
    pub host_rest_pct: Option<f64>,
    /// The guest's iperf server as it measures itself (iperf3's
    /// `remote_total`: its process CPU over the test, % of one CPU).
    pub guest_iperf3_pct: Option<f64>,
    /// Spindle only: the iperf process's LWPs; `Err` says why not.
    pub guest_lwps: Option<Result<Vec<LwpShare>, String>>,
}

impl Measured {
    pub fn qemu_total(&self) -> f64 {
        self.qemu_threads.values().fold(0.0, |a, b| a + b)
    }
}

/// One test of one boot.
#[derive(Clone, Debug)]
pub struct TestRecord {
    pub direction: Direction,
    pub outcome: Result<Measured, String>,
    /// Other QEMU processes running on the host when the test began.
    pub other_qemus: usize,
}

/// One boot.
#[derive(Clone, Debug)]
pub struct BootRecord {
    pub system: System,
    /// 1-based repetition.
    pub run: usize,
    /// QEMU spawned -> ready line, or why it never came.
    pub ready: Result<Duration, String>,
    pub tests: Vec<TestRecord>,
    /// The console's last lines when something failed.
    pub failure_tail: Option<String>,
}

/// Median, range and count of a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// `None` for an empty sample; the median of an even count is the
    /// mean of the middle two.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Some(Summary {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    /// `1.23 [1.10–1.31], n=3` with `decimals` digits.
    pub fn cell(&self, decimals: usize) -> String {
        format!(
            "{:.d$} [{:.d$}–{:.d$}], n={}",
            self.median,
            self.min,
            self.max,
            self.n,
            d = decimals
        )
    }
}

/// Spindle / Linux of two medians, as a table cell.
pub fn ratio_cell(spindle: Option<Summary>, linux: Option<Summary>) -> String {
    match (spindle, linux) {
        (Some(s), Some(l)) if l.median > 0.0 => format!("{:.2}", s.median / l.median),
        _ => "—".to_string(),
    }
}

// ---- /proc ---------------------------------------------------------------

/// utime + stime (clock ticks) of one `/proc/<pid>/task/<tid>/stat` line.
/// The name in parentheses may hold spaces and parentheses itself
/// (`CPU 0/TCG`), so the fields are counted after the last `)`.
pub fn parse_task_stat(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 (state) is fields[0]; utime is field 14,
    // stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// One thread of a process at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskTicks {
    pub tid: u32,
    pub comm: String,
    pub ticks: u64,
}

/// Every thread of `pid` with its CPU ticks so far (threads that vanish
/// while being read are skipped).
pub fn task_ticks(pid: u32) -> Vec<TaskTicks> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let path = entry.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue;
        };
        if let Some(ticks) = parse_task_stat(&stat) {
            out.push(TaskTicks {
                tid,
                comm: comm.trim_end().to_string(),
                ticks,
            });
        }
    }
    out
}

/// CPU per thread name between two snapshots, in % of one core over
/// `wall_s`. A thread born in between counts from zero; one that ended in
/// between is lost (QEMU's vCPU and main-loop threads live as long as
/// QEMU).
pub fn thread_split(
    before: &[TaskTicks],
    after: &[TaskTicks],
    ticks_per_s: f64,
    wall_s: f64,
) -> BTreeMap<String, f64> {
    let mut split = BTreeMap::new();
    if wall_s <= 0.0 || ticks_per_s <= 0.0 {
        return split;
    }
    for t in after {
        let start = before
            .iter()
            .find(|b| b.tid == t.tid)
            .map_or(0, |b| b.ticks);
        let pct = t.ticks.saturating_sub(start) as f64 / ticks_per_s / wall_s * 100.0;
        *split.entry(t.comm.clone()).or_insert(0.0) += pct;
    }
    split
}

/// (busy, total) jiffies of the `cpu ` line of /proc/stat; busy is user,
/// nice, system, irq, softirq and steal; total adds idle and iowait.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 8 {
        return None;
    }
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    Some((busy, busy + v[3] + v[4]))
}

fn host_stat() -> Option<(u64, u64)> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn host_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// (host, remote) `end.cpu_utilization_percent.*_total` of iperf3's report.
pub fn iperf3_cpu(report: &Value) -> (Option<f64>, Option<f64>) {
    let cpu = report.pointer("/end/cpu_utilization_percent");
    let get = |k: &str| cpu.and_then(|c| c.get(k)).and_then(Value::as_f64);
    (get("host_total"), get("remote_total"))
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf(3) has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// QEMU processes other than `ours` (a noise indicator).
fn other_qemus(ours: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != ours)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end().starts_with("qemu-system"))
        })
        .count()
}

// ---- the guest's LWPs (Spindle) ------------------------------------------

/// One LWP in one `lwps` reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LwpSample {
    pub pid: u64,
    pub id: u64,
    /// See [`LwpShare::label`].
    pub label: String,
    pub cpu_ms: u64,
}

/// The LWPs of an `lwps PID` reply value; `process` is the iperf
/// process, whose LWPs are labelled by kind, the others' by pid.
pub fn parse_lwps(value: &Value, process: u64) -> Result<Vec<LwpSample>> {
    let (Some(pid), Some(list)) = (
        value.get("pid").and_then(Value::as_u64),
        value.get("lwps").and_then(Value::as_array),
    ) else {
        bail!("`lwps` reply without `pid` or an `lwps` array: {value}");
    };
    list.iter()
        .map(|l| {
            let id = l.get("id").and_then(Value::as_u64);
            let name = l.get("name").and_then(Value::as_str);
            let cpu = l.get("cpu_ms").and_then(Value::as_u64);
            let kernel_only = l.get("kernel_only").and_then(Value::as_bool) == Some(true);
            match (id, name, cpu) {
                (Some(id), Some(name), Some(cpu_ms)) => Ok(LwpSample {
                    pid,
                    id,
                    label: if pid != process {
                        format!("{name} (pid {pid})")
                    } else if kernel_only {
                        format!("{name} (kernel-only)")
                    } else {
                        format!("{name} (user)")
                    },
                    cpu_ms,
                }),
                _ => bail!("an LWP without id, name or cpu_ms: {l}"),
            }
        })
        .collect()
}

/// Follows the LWPs over a test: the first `cpu_ms` seen of each (0 for
/// one born during the test) and the last. Sampling during the test keeps
/// most of the CPU of an LWP that exits before the end.
#[derive(Clone, Debug, Default)]
pub struct LwpTracker {
    first: BTreeMap<(u64, u64), u64>,
    last: BTreeMap<(u64, u64), LwpSample>,
    started: bool,
}

impl LwpTracker {
    /// One sample: the LWPs of every process asked about at one moment.
    pub fn record(&mut self, sample: Vec<LwpSample>) {
        for l in sample {
            let key = (l.pid, l.id);
            if !self.started {
                self.first.insert(key, l.cpu_ms);
            } else {
                self.first.entry(key).or_insert(0);
            }
            self.last.insert(key, l);
        }
        self.started = true;
    }

    /// CPU per label over `wall_ms`, in %, busiest first.
    pub fn shares(&self, wall_ms: f64) -> Vec<LwpShare> {
        let mut groups: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
        for (key, l) in &self.last {
            let used = l
                .cpu_ms
                .saturating_sub(self.first.get(key).copied().unwrap_or(0));
            let g = groups.entry(&l.label).or_insert((0, 0));
            g.0 += 1;
            g.1 += used;
        }
        let mut out: Vec<LwpShare> = groups
            .into_iter()
            .map(|(label, (count, ms))| LwpShare {
                label: label.to_string(),
                count,
                pct: if wall_ms > 0.0 {
                    ms as f64 / wall_ms * 100.0
                } else {
                    0.0
                },
            })
            .collect();
        out.sort_by(|a, b| b.pct.total_cmp(&a.pct).then(a.label.cmp(&b.label)));
        out
    }
}

/// One `lwps` sample into `tracker`; the first error stops sampling.
fn sample_lwps(
    tracker: &mut LwpTracker,
    error: &mut Option<String>,
    ctl: &mut Option<&mut Result<GuestCtl, String>>,
) {
    if error.is_some() {
        return;
    }
    match ctl.as_deref_mut() {
        Some(Ok(c)) => match c.lwps() {
            Ok(s) => tracker.record(s),
            Err(e) => *error = Some(format!("{e:#}")),
        },
        Some(Err(e)) => *error = Some(e.clone()),
        None => {}
    }
}

/// The control channel to a Spindle guest: the iperf process and every
/// process `ps` listed when it was ready (the kernel's, with the idle
/// LWPs, and housekeeping).
struct GuestCtl {
    ctl: CtlConnection,
    process: u64,
    pids: Vec<u64>,
}

impl GuestCtl {
    fn lwps(&mut self) -> Result<Vec<LwpSample>> {
        if self.ctl.broken().is_some() {
            self.ctl
                .resync(Duration::from_millis(200), Duration::from_secs(5))?;
        }
        let mut all = Vec::new();
        for pid in self.pids.clone() {
            let command = format!("lwps {pid}");
            match self.ctl.request_timeout(&command, Duration::from_secs(5))? {
                Reply::Ok { value, .. } => all.extend(parse_lwps(&value, self.process)?),
                Reply::Error(e) => bail!("`{command}`: the guest said: {e}"),
            }
        }
        Ok(all)
    }
}

// ---- running -------------------------------------------------------------

/// The kernel command-line words that put the Linux guest on `net`.
pub fn linux_net_words(net: IperfNet) -> String {
    match net {
        IperfNet::User => "lg_ip=10.0.2.15/24 lg_gw=10.0.2.2".to_string(),
        IperfNet::Tap => format!("lg_ip={}/30 lg_gw={}", netns::GUEST_IP, netns::HOST_IP),
    }
}

/// The two configurations: identical but for kernel, initrd and append.
pub fn configs(
    plan: &NetBenchPlan,
    wiring: &Wiring,
    vmlinux: &Path,
    initramfs: &Path,
    socket: &Path,
) -> Result<(QemuConfig, QemuConfig)> {
    let mut base = QemuConfig::new(&plan.kernel).with_smp(plan.smp);
    base.accel = plan.accel;
    base.mem_mib = plan.mem_mib;
    base.cpu = plan.cpu.clone();
    base.ctl_socket = Some(socket.to_path_buf());
    base.extra_args = vec!["-name".into(), QEMU_NAME.into()];
    wiring.apply(&mut base);

    let mut spindle = base.clone();
    spindle.initrd = plan.image.clone();
    let words = format!("loglevel=warn {}", wiring.guest_args);
    spindle.append = Some(crate::images::compose_append(
        Some(words.trim()),
        "iperf",
        None,
        &["-s".to_string()],
    )?);

    let mut linux = base;
    linux.kernel = vmlinux.to_path_buf();
    linux.initrd = Some(initramfs.to_path_buf());
    linux.append = Some(format!(
        "console=ttyS0 panic=-1 quiet lg_mode=server {} lg_port={}",
        linux_net_words(plan.net),
        iperf::GUEST_PORT
    ));
    Ok((spindle, linux))
}

/// The order of the systems in repetition `run` (0-based): alternating,
/// so neither always goes first.
pub fn order(systems: &[System], run: usize) -> Vec<System> {
    let mut v = systems.to_vec();
    if run % 2 == 1 {
        v.reverse();
    }
    v
}

struct Session<'a> {
    plan: &'a NetBenchPlan,
    wiring: &'a Wiring,
    socket: &'a Path,
    raw_dir: &'a Path,
    raw: Vec<Value>,
}

impl Session<'_> {
    fn boot(&mut self, system: System, config: &QemuConfig, run: usize) -> Result<BootRecord> {
        let _ = std::fs::remove_file(self.socket);
        let marker = match system {
            System::Spindle => iperf_session::SPINDLE_LISTENING,
            System::Linux => LINUX_READY,
        };
        let mut record = BootRecord {
            system,
            run,
            ready: Err(String::new()),
            tests: Vec::new(),
            failure_tail: None,
        };
        let mut guest = match BootedGuest::boot(config, marker, BOOT_LIMIT) {
            Ok(g) => g,
            Err(e) => {
                if guest::interrupted() {
                    bail!("interrupted");
                }
                // The error carries the console's last lines.
                let text = format!("{e:#}");
                let (why, tail) = text.split_once('\n').unwrap_or((&text, ""));
                record.ready = Err(why.to_string());
                record.failure_tail = Some(tail.to_string());
                eprintln!("spindle: bench net: {} run {run}: {text}", system.label());
                return Ok(record);
            }
        };
        record.ready = Ok(guest.ready_after);
        eprintln!(
            "spindle: bench net: {} run {run}: ready after {:.2} s",
            system.label(),
            guest.ready_after.as_secs_f64()
        );
        let mut ctl = match system {
            System::Spindle => Some(connect_ctl(self.socket)),
            System::Linux => None,
        };
        for direction in DIRECTIONS {
            std::thread::sleep(SETTLE);
            let test = self.test(&guest, direction, ctl.as_mut(), system, run)?;
            match &test.outcome {
                Ok(m) => eprintln!(
                    "spindle: bench net: {} run {run}: {}: {:.3} Gbit/s",
                    system.label(),
                    direction.label(),
                    m.gbit_per_s
                ),
                Err(e) => {
                    eprintln!(
                        "spindle: bench net: {} run {run}: {}: FAILED: {e}\n{}",
                        system.label(),
                        direction.label(),
                        guest.tail(TAIL_LINES)
                    );
                    record.failure_tail = Some(guest.tail(TAIL_LINES));
                }
            }
            record.tests.push(test);
        }
        guest.kill();
        let log_name = format!("{}-run{run}.log", system.label().to_lowercase());
        let _ = std::fs::write(self.raw_dir.join(log_name), guest.log());
        Ok(record)
    }

    fn test(
        &mut self,
        guest: &BootedGuest,
        direction: Direction,
        mut ctl: Option<&mut Result<GuestCtl, String>>,
        system: System,
        run: usize,
    ) -> Result<TestRecord> {
        let pid = guest.qemu_pid();
        let other = other_qemus(pid);
        let test = HostTest {
            direction,
            seconds: self.plan.seconds,
            parallel: 1,
        };
        let mut tracker = LwpTracker::default();
        let mut lwp_error: Option<String> = None;
        sample_lwps(&mut tracker, &mut lwp_error, &mut ctl);
        let lwp_start = Instant::now();
        let threads_before = task_ticks(pid);
        let host_before = host_stat();
        let started = Instant::now();
        let limit = Duration::from_secs(u64::from(self.plan.seconds) + 40);
        let raw = iperf_session::run_host_iperf3(self.wiring.iperf3(&test), limit, |_| {
            sample_lwps(&mut tracker, &mut lwp_error, &mut ctl)
        });
        let wall_s = started.elapsed().as_secs_f64();
        let threads_after = task_ticks(pid);
        let host_after = host_stat();
        let lwp_wall_ms = lwp_start.elapsed().as_secs_f64() * 1e3;
        sample_lwps(&mut tracker, &mut lwp_error, &mut ctl);
        if guest::interrupted() {
            bail!("interrupted");
        }
        let raw = match raw {
            Ok(v) => v,
            Err(e) => {
                return Ok(TestRecord {
                    direction,
                    outcome: Err(format!("{e:#}")),
                    other_qemus: other,
                });
            }
        };
        self.raw.push(json!({
            "system": system.label(), "run": run, "direction": direction.label(), "iperf3": raw
        }));
        let outcome = iperf::parse_report(&test, &raw)
            .map_err(|e| format!("{e:#}"))
            .and_then(|report| {
                let rate = match direction {
                    Direction::GuestToHost => report.guest_to_host,
                    _ => report.host_to_guest,
                }
                .ok_or_else(|| "iperf3's report lacks the direction's rate".to_string())?;
                let host_busy_pct = match (host_before, host_after) {
                    (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                        Some((b1 - b0) as f64 / (t1 - t0) as f64 * 100.0)
                    }
                    _ => None,
                };
                let (host_iperf3_pct, guest_iperf3_pct) = iperf3_cpu(&raw);
                let qemu_threads =
                    thread_split(&threads_before, &threads_after, clock_ticks_per_s(), wall_s);
                let qemu_total = qemu_threads.values().fold(0.0, |a, b| a + b);
                let host_rest_pct = match (host_busy_pct, host_iperf3_pct) {
                    (Some(busy), Some(iperf3)) => Some(busy * host_cpus() - qemu_total - iperf3),
                    _ => None,
                };
                Ok(Measured {
                    gbit_per_s: rate.gbit_per_s(),
                    retransmits: rate.retransmits,
                    wall_s,
                    qemu_threads,
                    host_busy_pct,
                    host_iperf3_pct,
                    host_rest_pct,
                    guest_iperf3_pct,
                    guest_lwps: match system {
                        System::Linux => None,
                        System::Spindle => Some(match lwp_error {
                            Some(e) => Err(e),
                            None => Ok(tracker.shares(lwp_wall_ms)),
                        }),
                    },
                })
            });
        Ok(TestRecord {
            direction,
            outcome,
            other_qemus: other,
        })
    }
}

fn connect_ctl(socket: &Path) -> Result<GuestCtl, String> {
    let mut ctl = CtlConnection::connect_timeout(socket, Duration::from_secs(10))
        .map_err(|e| format!("control channel: {e:#}"))?;
    let process = iperf_session::iperf_pid(&mut ctl).map_err(|e| format!("{e:#}"))?;
    let ps = match ctl.request("ps") {
        Ok(Reply::Ok { value, .. }) => value,
        Ok(Reply::Error(e)) => return Err(format!("`ps`: the guest said: {e}")),
        Err(e) => return Err(format!("`ps`: {e:#}")),
    };
    let mut pids: Vec<u64> = ps
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("pid").and_then(Value::as_u64))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Ok(GuestCtl { ctl, process, pids })
}

/// Everything one `bench net` produced.
pub struct NetBenchResult {
    /// The Markdown section for BENCHMARKS.md.
    pub section: String,
    /// Failures with the console's last lines (printed, not written).
    pub failures: String,
    /// Where the console logs and iperf3 reports were kept.
    pub raw_dir: PathBuf,
}

/// Runs the plan.
pub fn run(plan: &NetBenchPlan) -> Result<NetBenchResult> {
    if plan.systems.contains(&System::Spindle) && plan.image.is_none() {
        bail!("measuring Spindle needs the iperf image");
    }
    let (vmlinux, initramfs) = crate::bench_syscalls::ensure_linux_guest()?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let raw_dir = crate::scratch_dir().join(format!("bench-net/{stamp}"));
    std::fs::create_dir_all(&raw_dir)?;
    let sock_dir = crate::scratch_dir().join(format!("bench-net-{}", std::process::id()));
    std::fs::create_dir_all(&sock_dir)?;
    let socket = sock_dir.join("ctl.sock");
    let wiring = Wiring::new(plan.net)?;
    let (spindle_config, linux_config) = configs(plan, &wiring, &vmlinux, &initramfs, &socket)?;
    let mut session = Session {
        plan,
        wiring: &wiring,
        socket: &socket,
        raw_dir: &raw_dir,
        raw: Vec::new(),
    };
    let mut boots = Vec::new();
    let outcome = (|| -> Result<()> {
        for run in 0..plan.runs {
            for system in order(&plan.systems, run) {
                let config = match system {
                    System::Spindle => &spindle_config,
                    System::Linux => &linux_config,
                };
                boots.push(session.boot(system, config, run + 1)?);
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&sock_dir);
    outcome?;
    let _ = std::fs::write(
        raw_dir.join("iperf3.json"),
        serde_json::to_string_pretty(&Value::Array(session.raw))?,
    );
    let context = ReportContext {
        date: crate::bench::today_utc(),
        runs: plan.runs,
        seconds: plan.seconds,
        net: plan.net,
        smp: plan.smp,
        mem_mib: plan.mem_mib,
        cpu: plan.cpu.clone(),
        cpu_in_use: cpu_in_use(&spindle_config),
        accel: plan.accel,
        accel_reason: plan.accel_reason.clone(),
        qemu: crate::bench::qemu_version(),
        host: crate::bench::host_description(),
        host_iperf3: host_iperf3_version(),
        spindle_command: display_command(&spindle_config, &wiring),
        linux_command: display_command(&linux_config, &wiring),
    };
    Ok(NetBenchResult {
        section: render_section(&context, &boots),
        failures: render_failures(&boots),
        raw_dir,
    })
}

/// The `-cpu` value of `config`'s command line.
fn cpu_in_use(config: &QemuConfig) -> String {
    let args = config.args();
    args.windows(2)
        .find(|w| w[0] == "-cpu")
        .map_or_else(|| "?".to_string(), |w| w[1].clone())
}

fn host_iperf3_version() -> String {
    std::process::Command::new("iperf3")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown version".into())
}

/// The command line with paths relative to the workspace (and the
/// namespace prefix with a tap).
fn display_command(config: &QemuConfig, wiring: &Wiring) -> String {
    let root = crate::workspace_root();
    let rel = |p: &Path| p.strip_prefix(&root).unwrap_or(p).to_path_buf();
    let mut c = config.clone();
    c.kernel = rel(&c.kernel);
    c.initrd = c.initrd.as_deref().map(rel);
    c.ctl_socket = c.ctl_socket.as_deref().map(rel);
    let line = c.command_line();
    match &wiring.namespace {
        Some(ns) => format!("ip netns exec {} {line}", ns.name()),
        None => line,
    }
}

// ---- the report ----------------------------------------------------------

/// The facts the section states besides the measurements.
pub struct ReportContext {
    pub date: String,
    pub runs: usize,
    pub seconds: u32,
    pub net: IperfNet,
    pub smp: u32,
    pub mem_mib: u64,
    /// `--cpu` as given.
    pub cpu: Option<String>,
    /// The `-cpu` value on the command lines.
    pub cpu_in_use: String,
    pub accel: Accel,
    pub accel_reason: String,
    pub qemu: String,
    pub host: String,
    pub host_iperf3: String,
    pub spindle_command: String,
    pub linux_command: String,
}

fn net_label(net: IperfNet) -> &'static str {
    match net {
        IperfNet::User => "user",
        IperfNet::Tap => "tap",
    }
}

fn arrow(d: Direction) -> &'static str {
    match d {
        Direction::HostToGuest => "host → guest",
        Direction::GuestToHost => "guest → host",
        Direction::Bidir => "both ways",
    }
}

fn measured(
    boots: &[BootRecord],
    system: System,
    direction: Direction,
) -> impl Iterator<Item = &Measured> {
    boots
        .iter()
        .filter(move |b| b.system == system)
        .flat_map(|b| b.tests.iter())
        .filter(move |t| t.direction == direction)
        .filter_map(|t| t.outcome.as_ref().ok())
}

fn throughput(boots: &[BootRecord], system: System, direction: Direction) -> Option<Summary> {
    let v: Vec<f64> = measured(boots, system, direction)
        .map(|m| m.gbit_per_s)
        .collect();
    Summary::of(&v)
}

fn boot_times(boots: &[BootRecord], system: System) -> Option<Summary> {
    let v: Vec<f64> = boots
        .iter()
        .filter(|b| b.system == system)
        .filter_map(|b| b.ready.as_ref().ok())
        .map(Duration::as_secs_f64)
        .collect();
    Summary::of(&v)
}

/// Attempts and failures of one system and direction (`None`: boots).
fn attempts(boots: &[BootRecord], system: System, direction: Option<Direction>) -> (usize, usize) {
    let mine = boots.iter().filter(|b| b.system == system);
    match direction {
        None => {
            let all: Vec<_> = mine.collect();
            (all.len(), all.iter().filter(|b| b.ready.is_err()).count())
        }
        Some(d) => {
            // A boot that never got ready is a failure of its tests too.
            let mut n = 0;
            let mut failed = 0;
            for b in mine {
                n += 1;
                match b.tests.iter().find(|t| t.direction == d) {
                    Some(t) if t.outcome.is_ok() => {}
                    _ => failed += 1,
                }
            }
            (n, failed)
        }
    }
}

fn summary_cell(s: Option<Summary>, decimals: usize, attempts: (usize, usize)) -> String {
    let mut cell = match s {
        Some(s) => s.cell(decimals),
        None => "no result".to_string(),
    };
    if attempts.1 > 0 {
        cell.push_str(&format!(" ({} of {} failed)", attempts.1, attempts.0));
    }
    cell
}

/// The medians of a per-test map (missing keys count as 0) and of the
/// per-test totals.
fn median_split<'a>(
    maps: impl Iterator<Item = &'a BTreeMap<String, f64>>,
) -> (Vec<(String, f64)>, f64) {
    let maps: Vec<&BTreeMap<String, f64>> = maps.collect();
    let keys: BTreeSet<&String> = maps.iter().flat_map(|m| m.keys()).collect();
    let mut out: Vec<(String, f64)> = keys
        .into_iter()
        .map(|k| {
            let v: Vec<f64> = maps
                .iter()
                .map(|m| m.get(k).copied().unwrap_or(0.0))
                .collect();
            (k.clone(), Summary::of(&v).map_or(0.0, |s| s.median))
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let totals: Vec<f64> = maps
        .iter()
        .map(|m| m.values().fold(0.0, |a, b| a + b))
        .collect();
    (out, Summary::of(&totals).map_or(0.0, |s| s.median))
}

/// `v` rounded to a whole number, never `-0`.
pub fn whole(v: f64) -> String {
    let text = format!("{v:.0}");
    if text == "-0" { "0".to_string() } else { text }
}

fn join_split(split: &[(String, f64)]) -> String {
    split
        .iter()
        .filter(|(_, v)| *v >= 0.5)
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Per system and direction: the median QEMU thread split, total, host busy.
struct CpuRow {
    system: System,
    direction: Direction,
    n: usize,
    threads: Vec<(String, f64)>,
    total: f64,
    host_busy: Option<f64>,
    host_iperf3: Option<f64>,
    host_rest: Option<f64>,
    guest_iperf3: Option<f64>,
    gbit: Option<f64>,
    /// Spindle: the guest's LWPs.
    lwps: Option<LwpRow>,
}

/// The median LWP split (label, %), the median of the rest of the
/// guest's CPUs, and how many tests had a split.
struct LwpRow {
    split: Vec<(String, f64)>,
    rest: f64,
    n: usize,
}

fn cpu_rows(boots: &[BootRecord], systems: &[System], smp: u32) -> Vec<CpuRow> {
    let mut rows = Vec::new();
    for &system in systems {
        for direction in DIRECTIONS {
            let ms: Vec<&Measured> = measured(boots, system, direction).collect();
            if ms.is_empty() {
                continue;
            }
            let (threads, total) = median_split(ms.iter().map(|m| &m.qemu_threads));
            let median_of = |f: &dyn Fn(&Measured) -> Option<f64>| {
                let v: Vec<f64> = ms.iter().filter_map(|m| f(m)).collect();
                Summary::of(&v).map(|s| s.median)
            };
            let gbit: Vec<f64> = ms.iter().map(|m| m.gbit_per_s).collect();
            let lwp_maps: Vec<BTreeMap<String, f64>> = ms
                .iter()
                .filter_map(|m| m.guest_lwps.as_ref()?.as_ref().ok())
                .map(|shares| shares.iter().map(|s| (s.label.clone(), s.pct)).collect())
                .collect();
            let lwps = (!lwp_maps.is_empty()).then(|| {
                let (split, _) = median_split(lwp_maps.iter());
                let rest: Vec<f64> = lwp_maps
                    .iter()
                    .map(|m| f64::from(smp) * 100.0 - m.values().fold(0.0, |a, b| a + b))
                    .collect();
                LwpRow {
                    split,
                    rest: Summary::of(&rest).map_or(0.0, |s| s.median),
                    n: lwp_maps.len(),
                }
            });
            rows.push(CpuRow {
                system,
                direction,
                n: ms.len(),
                threads,
                total,
                host_busy: median_of(&|m| m.host_busy_pct),
                host_iperf3: median_of(&|m| m.host_iperf3_pct),
                host_rest: median_of(&|m| m.host_rest_pct),
                guest_iperf3: median_of(&|m| m.guest_iperf3_pct),
                gbit: Summary::of(&gbit).map(|s| s.median),
                lwps,
            });
        }
    }
    rows
}

fn systems_in(boots: &[BootRecord]) -> Vec<System> {
    let set: BTreeSet<System> = boots.iter().map(|b| b.system).collect();
    set.into_iter().collect()
}

/// The Markdown section.
pub fn render_section(ctx: &ReportContext, boots: &[BootRecord]) -> String {
    let systems = systems_in(boots);
    let both = systems.len() == 2;
    let mut t = String::from("## Network: Spindle against Linux (iperf3)\n\n");
    t.push_str(&format!(
        "Measured {} by `cargo spindle bench net --runs {} --seconds {} --net {}{}{}{}`: {} boot{} per system, alternating, each serving one {} s host → guest and one {} s guest → host TCP test (1 stream); `-smp {}`, `-m {}M`, `-cpu {}`, accelerator {}. Median [min–max], n = tests that produced a result; ratio = Spindle / Linux of the medians (above 1: Spindle faster for throughput, slower for boot).\n\n",
        ctx.date,
        ctx.runs,
        ctx.seconds,
        net_label(ctx.net),
        if ctx.smp != 1 { format!(" --smp {}", ctx.smp) } else { String::new() },
        if ctx.mem_mib != 512 { format!(" --mem {}M", ctx.mem_mib) } else { String::new() },
        ctx.cpu.as_ref().map_or(String::new(), |c| format!(" --cpu {c}")),
        ctx.runs,
        if ctx.runs == 1 { "" } else { "s" },
        ctx.seconds,
        ctx.seconds,
        ctx.smp,
        ctx.mem_mib,
        ctx.cpu_in_use,
        ctx.accel,
    ));
    t.push_str("| measure | Spindle | Linux | Spindle / Linux |\n|---|---|---|---|\n");
    let cell = |system: System, s: Option<Summary>, d: usize, dir: Option<Direction>| {
        if systems.contains(&system) {
            summary_cell(s, d, attempts(boots, system, dir))
        } else {
            "not run".to_string()
        }
    };
    for d in DIRECTIONS {
        let s = throughput(boots, System::Spindle, d);
        let l = throughput(boots, System::Linux, d);
        t.push_str(&format!(
            "| {}, Gbit/s | {} | {} | {} |\n",
            arrow(d),
            cell(System::Spindle, s, 3, Some(d)),
            cell(System::Linux, l, 3, Some(d)),
            if both { ratio_cell(s, l) } else { "—".into() }
        ));
    }
    let s = boot_times(boots, System::Spindle);
    let l = boot_times(boots, System::Linux);
    t.push_str(&format!(
        "| QEMU start → ready, s | {} | {} | {} |\n",
        cell(System::Spindle, s, 3, None),
        cell(System::Linux, l, 3, None),
        if both { ratio_cell(s, l) } else { "—".into() }
    ));

    let failures: Vec<String> = boots
        .iter()
        .flat_map(|b| {
            let boot = b
                .ready
                .as_ref()
                .err()
                .map(|e| format!("{} run {}: no ready line: {e}", b.system.label(), b.run));
            let tests = b.tests.iter().filter_map(move |t| {
                t.outcome.as_ref().err().map(|e| {
                    format!(
                        "{} run {}, {}: {}",
                        b.system.label(),
                        b.run,
                        arrow(t.direction),
                        first_line(e)
                    )
                })
            });
            boot.into_iter().chain(tests)
        })
        .collect();
    if !failures.is_empty() {
        t.push_str("\nFailed runs (recorded, not retried):\n\n");
        for f in &failures {
            t.push_str(&format!("- {f}\n"));
        }
    }

    let rows = cpu_rows(boots, &systems, ctx.smp);
    if !rows.is_empty() {
        t.push_str(&format!(
            "\n### CPU during the tests\n\nHost side, % of one host core over the test's wall time (median of the tests): QEMU's threads (`CPU n/TCG` = vCPU, `qemu-system-x86` = the main loop: slirp or tap I/O and virtio-net's backend), the host's iperf3 (its own `host_total`), the rest of the host (all CPUs' busy time minus those two: other processes and kernel work charged to neither; a difference of separately sampled counters, good to about ±2); host busy = % of all {} host CPUs.\n\n",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ));
        t.push_str("| system | direction | n | QEMU threads | QEMU total | host iperf3 | rest of the host | host busy |\n|---|---|---|---|---|---|---|---|\n");
        let pct = |v: Option<f64>| v.map_or("—".to_string(), whole);
        for r in &rows {
            t.push_str(&format!(
                "| {} | {} | {} | {} | {:.0} | {} | {} | {} |\n",
                r.system.label(),
                arrow(r.direction),
                r.n,
                join_split(&r.threads),
                r.total,
                pct(r.host_iperf3),
                pct(r.host_rest),
                pct(r.host_busy)
            ));
        }
        let lwp_rows: Vec<&CpuRow> = rows.iter().filter(|r| r.lwps.is_some()).collect();
        if !lwp_rows.is_empty() {
            t.push_str(&format!(
                "\nSpindle's guest CPU by LWP, % of the test's wall time (one guest CPU = 100, {} CPU{}; median of the tests; LWPs under 0.5 % left out). `cpu_ms` comes from `lwps` on the control channel for every process (before the test, once a second during it, after it), counted at the guest's clock tick. `(kernel-only)` and `(user)` are the iperf process's LWPs: the `vnet0-*` workers and the program's threads; `(pid 0)` is the kernel's process (`idle/N` = CPU N's idle loop, `ctl` = the control channel, which answers these samples), `(pid 1)` housekeeping. \"not attributed\" = the guest's CPUs × wall time minus all of these.\n\n",
                ctx.smp,
                if ctx.smp == 1 { "" } else { "s" }
            ));
            t.push_str("| direction | n | LWPs | not attributed |\n|---|---|---|---|\n");
            for r in lwp_rows {
                let LwpRow { split, rest, n } = r.lwps.as_ref().expect("filtered");
                t.push_str(&format!(
                    "| {} | {} | {} | {:.0} |\n",
                    arrow(r.direction),
                    n,
                    join_split(split),
                    rest
                ));
            }
        }
        t.push_str("\n### Where the time goes (measured, per test, medians)\n\n");
        for r in &rows {
            t.push_str(&where_line(r, ctx.smp));
        }
    }
    let noisy: usize = boots
        .iter()
        .flat_map(|b| &b.tests)
        .filter(|t| t.other_qemus > 0)
        .count();
    t.push_str(&format!(
        "\nMethod: both guests boot with identical QEMU arguments except `-kernel`/`-initrd`/`-append`. Spindle: the release kernel with the `iperf` image as its process (`iperf -s`), ready at `{}`. Linux: the anchor's Debian kernel (vmlinux by PVH) and initramfs (../shared/anchors/linux-guest, iperf3 3.12 in the guest), `lg_mode=server`, ready at `GUEST READY`, which its /init prints once iperf3's port is in LISTEN. The control-channel chardev (COM2) is on both command lines; only Spindle answers on it. In both directions the guest is the iperf3 server and the host's iperf3 ({}) the client: host → guest is `iperf3 -c`, guest → host is `iperf3 -c -R`, so QEMU's arguments (one forward) do not change with the direction and one boot serves both tests. This differs from the anchor's `run.sh`, whose guest → host runs the guest as iperf3 client against a host `iperf3 -s` (slirp's outbound path instead of its inbound forward); its figures are a reference, not this table's. Throughput is iperf3's `end.sum_received` (the receiving side). Per boot: spawn QEMU, wait for the ready line (boot time = spawn → line), 1 s pause, host → guest, 1 s pause, guest → host, kill QEMU. QEMU's thread CPU is utime + stime from /proc/<qemu>/task/*/stat, before and after each test, summed by thread name (`-name bench-net,debug-threads=on`). {} Host: {}. QEMU: {}. Accelerator: {} ({}). Network: {}.\n",
        iperf_session::SPINDLE_LISTENING,
        ctx.host_iperf3,
        if noisy > 0 {
            format!("{noisy} test(s) ran while another QEMU process was running on the host.")
        } else {
            "No other QEMU process was running during any test.".to_string()
        },
        ctx.host,
        ctx.qemu,
        ctx.accel,
        ctx.accel_reason,
        match ctx.net {
            IperfNet::User => "QEMU user networking (slirp), the host's iperf3 connects to a forwarded 127.0.0.1 port; the guest is 10.0.2.15/24",
            IperfNet::Tap => "a tap in a private network namespace (host 192.168.100.1/30, guest .2), QEMU and the host's iperf3 inside it; no vhost",
        }
    ));
    t.push_str(&format!(
        "\n- Spindle:\n\n    {}\n\n- Linux:\n\n    {}\n",
        ctx.spindle_command, ctx.linux_command
    ));
    t
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// One "where the time goes" bullet, from the measured medians only.
fn where_line(r: &CpuRow, smp: u32) -> String {
    let mut s = format!(
        "- {}, {} ({} Gbit/s): QEMU used {:.0} % of a host core",
        r.system.label(),
        arrow(r.direction),
        r.gbit.map_or("—".into(), |g| format!("{g:.3}")),
        r.total
    );
    if !r.threads.is_empty() {
        let top: Vec<String> = r
            .threads
            .iter()
            .filter(|(_, v)| *v >= 1.0)
            .map(|(k, v)| format!("{k} {v:.0} %"))
            .collect();
        s.push_str(&format!(" ({})", top.join(", ")));
    }
    if let Some(g) = r.gbit.filter(|g| *g > 0.0) {
        s.push_str(&format!(
            ", {:.2} host-core-seconds per Gbit",
            r.total / 100.0 / g
        ));
    }
    if let Some(b) = r.host_busy {
        s.push_str(&format!("; the host was {b:.0} % busy"));
        if let (Some(i), Some(rest)) = (r.host_iperf3, r.host_rest) {
            s.push_str(&format!(
                " (its iperf3 {i:.0} %, everything else {} % of a core)",
                whole(rest)
            ));
        }
    }
    if r.system == System::Linux
        && let Some(g) = r.guest_iperf3
    {
        s.push_str(&format!(
                ". In the guest, iperf3 reports its own process CPU (user + system) as {g:.0} % of the guest's CPU{}",
                if smp == 1 { "" } else { "s" }
            ));
    }

    if let Some(LwpRow { split, rest, .. }) = &r.lwps {
        let sum = |keep: &dyn Fn(&str) -> bool| -> f64 {
            split
                .iter()
                .filter(|(k, _)| keep(k))
                .fold(0.0, |a, (_, v)| a + v)
        };
        let workers: Vec<String> = split
            .iter()
            .filter(|(k, v)| k.ends_with("(kernel-only)") && *v >= 0.5)
            .map(|(k, v)| format!("{} {v:.0} %", k.trim_end_matches(" (kernel-only)")))
            .collect();
        let is_idle = |k: &str| k.starts_with("idle/");
        s.push_str(&format!(
            ". In the guest ({smp} CPU{}): the kernel-only workers {:.0} %{}, the iperf user LWPs {:.0} %, idle {:.0} %, other kernel LWPs {:.0} %, not attributed to an LWP {:.0} %",
            if smp == 1 { "" } else { "s" },
            sum(&|k| k.ends_with("(kernel-only)")),
            if workers.is_empty() {
                String::new()
            } else {
                format!(" ({})", workers.join(", "))
            },
            sum(&|k| k.ends_with("(user)")),
            sum(&is_idle),
            sum(&|k| k.contains("(pid ") && !is_idle(k)),
            rest,
        ));
    }
    s.push_str(".\n");
    s
}

/// Failures with the console's last lines, for the terminal.
pub fn render_failures(boots: &[BootRecord]) -> String {
    let mut out = String::new();
    for b in boots {
        let failed_tests: Vec<&TestRecord> =
            b.tests.iter().filter(|t| t.outcome.is_err()).collect();
        if b.ready.is_ok() && failed_tests.is_empty() {
            continue;
        }
        out.push_str(&format!("== {} run {}: ", b.system.label(), b.run));
        match &b.ready {
            Err(e) => out.push_str(&format!("no ready line: {e}\n")),
            Ok(_) => {
                let list: Vec<String> = failed_tests
                    .iter()
                    .map(|t| {
                        format!(
                            "{}: {}",
                            arrow(t.direction),
                            t.outcome.as_ref().err().map_or("", |e| e.as_str())
                        )
                    })
                    .collect();
                out.push_str(&list.join("; "));
                out.push('\n');
            }
        }
        if let Some(tail) = &b.failure_tail {
            out.push_str("-- console, last lines --\n");
            out.push_str(tail.trim_end());
            out.push('\n');
        }
    }
    out
}

/// Writes the section into BENCHMARKS.md.
pub fn update_benchmarks_md(path: &Path, section: &str) -> Result<()> {
    crate::bench::update_benchmarks_md_section(path, SECTION_BEGIN, SECTION_END, section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_median_range_count() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Summary::of(&[]).is_none());
        assert_eq!(s.cell(2), "2.00 [1.00–3.00], n=3");
        let l = Summary::of(&[4.0]).unwrap();
        assert_eq!(ratio_cell(Some(s), Some(l)), "0.50");
        assert_eq!(ratio_cell(None, Some(l)), "—");
    }

    #[test]
    fn task_stat_names_may_hold_spaces_and_parentheses() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime ...
        let line = "4242 (CPU 0/TCG) S 1 2 3 0 -1 4194368 10 0 0 0 1234 56 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_task_stat(line), Some(1290));
        let odd = "7 (a) b (c)) R 1 2 3 0 -1 0 0 0 0 0 7 8 0 0";
        assert_eq!(parse_task_stat(odd), Some(15));
        assert_eq!(parse_task_stat("7 (short) R 1 2"), None);
        assert_eq!(parse_task_stat("no parenthesis"), None);
    }

    #[test]
    fn thread_split_sums_by_name_over_the_wall_time() {
        let t = |tid, comm: &str, ticks| TaskTicks {
            tid,
            comm: comm.into(),
            ticks,
        };
        let before = vec![
            t(1, "qemu-system-x86", 100),
            t(2, "CPU 0/TCG", 50),
            t(3, "worker", 5),
        ];
        let after = vec![
            t(1, "qemu-system-x86", 300),
            t(2, "CPU 0/TCG", 850),
            t(4, "worker", 100),
        ];
        // 100 ticks/s over 10 s: 1000 ticks = one core.
        let split = thread_split(&before, &after, 100.0, 10.0);
        assert_eq!(split["qemu-system-x86"], 20.0);
        assert_eq!(split["CPU 0/TCG"], 80.0);
        // A thread born during the test counts from zero.
        assert_eq!(split["worker"], 10.0);
        assert!(thread_split(&before, &after, 100.0, 0.0).is_empty());
    }

    #[test]
    fn proc_stat_busy_and_total() {
        let text = "cpu  100 10 50 800 20 5 5 10 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_proc_stat(text), Some((180, 1000)));
        assert_eq!(parse_proc_stat("cpu0 1 2 3\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 2 3\n"), None);
    }

    fn lwp(pid: u64, id: u64, label: &str, cpu_ms: u64) -> LwpSample {
        LwpSample {
            pid,
            id,
            label: label.into(),
            cpu_ms,
        }
    }

    #[test]
    fn lwps_parse_from_the_control_channel_reply() {
        let v = json!({"pid": 2, "lwps": [
            {"id": 1, "tid": 2, "name": "iperf", "kernel_only": false, "cpu_ms": 40},
            {"id": 2, "tid": 3, "name": "vnet0-rx0", "kernel_only": true, "cpu_ms": 1200}
        ]});
        let l = parse_lwps(&v, 2).unwrap();
        assert_eq!(l[0], lwp(2, 1, "iperf (user)", 40));
        assert_eq!(l[1], lwp(2, 2, "vnet0-rx0 (kernel-only)", 1200));
        let k = json!({"pid": 0, "lwps": [
            {"id": 2, "name": "idle/0", "kernel_only": true, "cpu_ms": 9}
        ]});
        assert_eq!(parse_lwps(&k, 2).unwrap()[0].label, "idle/0 (pid 0)");
        assert!(parse_lwps(&json!({"pid": 2}), 2).is_err());
        assert!(parse_lwps(&json!({"lwps": []}), 2).is_err());
        assert!(parse_lwps(&json!({"pid": 2, "lwps": [{"id": 1}]}), 2).is_err());
    }

    #[test]
    fn lwp_tracker_counts_births_and_keeps_the_last_sample_of_the_dead() {
        let mut tr = LwpTracker::default();
        tr.record(vec![
            lwp(2, 1, "iperf (user)", 100),
            lwp(2, 2, "vnet0-rx0 (kernel-only)", 1000),
            lwp(0, 2, "idle/0 (pid 0)", 50_000),
        ]);
        // LWP 3 is born, then dies before the last sample.
        tr.record(vec![
            lwp(2, 1, "iperf (user)", 300),
            lwp(2, 2, "vnet0-rx0 (kernel-only)", 4000),
            lwp(2, 3, "iperf (user)", 500),
            lwp(0, 2, "idle/0 (pid 0)", 51_000),
        ]);
        tr.record(vec![
            lwp(2, 1, "iperf (user)", 400),
            lwp(2, 2, "vnet0-rx0 (kernel-only)", 6000),
            lwp(0, 2, "idle/0 (pid 0)", 52_000),
        ]);
        let shares = tr.shares(10_000.0);
        assert_eq!(shares[0].label, "vnet0-rx0 (kernel-only)");
        assert_eq!(shares[0].pct, 50.0);
        // Same LWP id in another process: a different LWP.
        assert_eq!(
            (shares[1].label.as_str(), shares[1].pct),
            ("idle/0 (pid 0)", 20.0)
        );
        // (400 - 100) + 500 over 10 s.
        assert_eq!((shares[2].pct, shares[2].count), (8.0, 2));
    }

    #[test]
    fn whole_numbers_have_no_negative_zero() {
        assert_eq!(whole(-0.3), "0");
        assert_eq!(whole(-1.2), "-1");
        assert_eq!(whole(2.6), "3");
    }

    #[test]
    fn iperf3_reports_both_ends_cpu() {
        let r =
            json!({"end": {"cpu_utilization_percent": {"host_total": 1.5, "remote_total": 60.0}}});
        assert_eq!(iperf3_cpu(&r), (Some(1.5), Some(60.0)));
        assert_eq!(iperf3_cpu(&json!({"end": {}})), (None, None));
    }

    #[test]
    fn systems_alternate_which_goes_first() {
        let both = [System::Spindle, System::Linux];
        assert_eq!(order(&both, 0), both);
        assert_eq!(order(&both, 1), [System::Linux, System::Spindle]);
        assert_eq!(order(&both, 2), both);
    }

    #[test]
    fn linux_guest_addresses_follow_the_network() {
        assert_eq!(
            linux_net_words(IperfNet::User),
            "lg_ip=10.0.2.15/24 lg_gw=10.0.2.2"
        );
        assert_eq!(
            linux_net_words(IperfNet::Tap),
            "lg_ip=192.168.100.2/30 lg_gw=192.168.100.1"
        );
    }

    fn measured_test(direction: Direction, gbit: f64, lwps: bool) -> TestRecord {
        let mut threads = BTreeMap::new();
        threads.insert("CPU 0/TCG".to_string(), 80.0);
        threads.insert("qemu-system-x86".to_string(), 20.0);
        TestRecord {
            direction,
            outcome: Ok(Measured {
                gbit_per_s: gbit,
                retransmits: None,
                wall_s: 10.0,
                qemu_threads: threads,
                host_busy_pct: Some(60.0),
                host_iperf3_pct: Some(5.0),
                host_rest_pct: Some(15.0),
                guest_iperf3_pct: Some(50.0),
                guest_lwps: lwps.then(|| {
                    Ok(vec![
                        LwpShare {
                            label: "vnet0-rx0 (kernel-only)".into(),
                            count: 1,
                            pct: 40.0,
                        },
                        LwpShare {
                            label: "iperf (user)".into(),
                            count: 2,
                            pct: 30.0,
                        },
                    ])
                }),
            }),
            other_qemus: 0,
        }
    }

    fn context() -> ReportContext {
        ReportContext {
            date: "2026-11-26".into(),
            runs: 2,
            seconds: 10,
            net: IperfNet::User,
            smp: 1,
            mem_mib: 512,
            cpu: None,
            cpu_in_use: "max".into(),
            accel: Accel::Tcg,
            accel_reason: "forced".into(),
            qemu: "QEMU 7.2".into(),
            host: "AMD EPYC, 2 CPUs available".into(),
            host_iperf3: "iperf 3.12".into(),
            spindle_command: "qemu-system-x86_64 -kernel spindle".into(),
            linux_command: "qemu-system-x86_64 -kernel vmlinux".into(),
        }
    }

    #[test]
    fn the_section_has_medians_ratios_failures_and_splits() {
        let boots = vec![
            BootRecord {
                system: System::Spindle,
                run: 1,
                ready: Ok(Duration::from_millis(500)),
                tests: vec![
                    measured_test(Direction::HostToGuest, 1.0, true),
                    measured_test(Direction::GuestToHost, 0.5, true),
                ],
                failure_tail: None,
            },
            BootRecord {
                system: System::Linux,
                run: 1,
                ready: Ok(Duration::from_millis(2000)),
                tests: vec![
                    measured_test(Direction::HostToGuest, 2.0, false),
                    measured_test(Direction::GuestToHost, 1.0, false),
                ],
                failure_tail: None,
            },
            BootRecord {
                system: System::Spindle,
                run: 2,
                ready: Ok(Duration::from_millis(700)),
                tests: vec![
                    measured_test(Direction::HostToGuest, 3.0, true),
                    TestRecord {
                        direction: Direction::GuestToHost,
                        outcome: Err("iperf3: the server has terminated\nmore".into()),
                        other_qemus: 1,
                    },
                ],
                failure_tail: Some("panic: oops".into()),
            },
            BootRecord {
                system: System::Linux,
                run: 2,
                ready: Err("the guest did not print \"GUEST READY\" in time".into()),
                tests: vec![],
                failure_tail: Some("last".into()),
            },
        ];
        let s = render_section(&context(), &boots);
        assert!(
            s.contains("`-smp 1`, `-m 512M`, `-cpu max`, accelerator tcg."),
            "{s}"
        );
        assert!(
            s.contains("| host → guest, Gbit/s | 2.000 [1.000–3.000], n=2 | 2.000 [2.000–2.000], n=1 (1 of 2 failed) | 1.00 |"),
            "{s}"
        );
        assert!(
            s.contains("| guest → host, Gbit/s | 0.500 [0.500–0.500], n=1 (1 of 2 failed) | 1.000 [1.000–1.000], n=1 (1 of 2 failed) | 0.50 |"),
            "{s}"
        );
        assert!(
            s.contains("| QEMU start → ready, s | 0.600 [0.500–0.700], n=2 | 2.000 [2.000–2.000], n=1 (1 of 2 failed) | 0.30 |"),
            "{s}"
        );
        assert!(
            s.contains("- Spindle run 2, guest → host: iperf3: the server has terminated\n"),
            "{s}"
        );
        assert!(s.contains("- Linux run 2: no ready line"), "{s}");
        assert!(
            s.contains(
                "| Spindle | host → guest | 2 | CPU 0/TCG 80, qemu-system-x86 20 | 100 | 5 | 15 | 60 |"
            ),
            "{s}"
        );
        assert!(
            s.contains("| host → guest | 2 | vnet0-rx0 (kernel-only) 40, iperf (user) 30 | 30 |"),
            "{s}"
        );
        assert!(s.contains("- Spindle, host → guest (2.000 Gbit/s): QEMU used 100 % of a host core (CPU 0/TCG 80 %, qemu-system-x86 20 %), 0.50 host-core-seconds per Gbit; the host was 60 % busy (its iperf3 5 %, everything else 15 % of a core). In the guest (1 CPU): the kernel-only workers 40 % (vnet0-rx0 40 %), the iperf user LWPs 30 %, idle 0 %, other kernel LWPs 0 %, not attributed to an LWP 30 %.\n"), "{s}");
        assert!(s.contains("- Linux, guest → host (1.000 Gbit/s)"), "{s}");
        assert!(
            s.contains("In the guest, iperf3 reports its own process CPU (user + system) as 50 % of the guest's CPU.\n"),
            "{s}"
        );
        assert!(s.contains("1 test(s) ran while another QEMU"), "{s}");
        assert!(
            s.contains("    qemu-system-x86_64 -kernel vmlinux\n"),
            "{s}"
        );

        let f = render_failures(&boots);
        assert!(
            f.contains("== Spindle run 2: guest → host: iperf3: the server has terminated"),
            "{f}"
        );
        assert!(f.contains("panic: oops"), "{f}");
        assert!(f.contains("== Linux run 2: no ready line"), "{f}");
        assert!(!f.contains("run 1"), "{f}");
    }

    #[test]
    fn one_system_alone_has_no_ratio() {
        let boots = vec![BootRecord {
            system: System::Linux,
            run: 1,
            ready: Ok(Duration::from_secs(2)),
            tests: vec![measured_test(Direction::HostToGuest, 2.0, false)],
            failure_tail: None,
        }];
        let s = render_section(&context(), &boots);
        assert!(
            s.contains("| host → guest, Gbit/s | not run | 2.000 [2.000–2.000], n=1 | — |"),
            "{s}"
        );
        assert!(
            s.contains("| guest → host, Gbit/s | not run | no result (1 of 1 failed) | — |"),
            "{s}"
        );
    }
}
