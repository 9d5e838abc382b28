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
        let (median, min, max, n) = crate::bench::median_range(values)?;
        Some(Summary {
            median,
            min,
            max,
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
    let _ = std::fs::write(
        raw_dir.join("records.json"),
        serde_json::to_string_pretty(&records_json(&boots))?,
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
        host_iperf3: crate::bench::tool_version("iperf3"),
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

mod report;

pub use report::*;

#[cfg(test)]
mod tests;
