//! `cargo spindle bench boot`: time from spawning QEMU to Spindle's ready
//! line, beside the "firmware floor" (a kernel that exits at its first
//! instruction), for several machine/firmware pairs; prints a table and
//! records it in BENCHMARKS.md.

use crate::guest::{GuestOutcome, RunLimits, run_guest_with};
use crate::qemu::{Accel, Firmware, Machine, QemuConfig};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SECTION_BEGIN: &str = "<!-- bench-boot:begin (written by `cargo spindle bench boot`) -->";
const SECTION_END: &str = "<!-- bench-boot:end -->";
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Summary of repeated timings, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

/// (median, min, max, count) of `values`; `None` when empty. The median
/// of an even count is the mean of the middle two.
pub fn median_range(values: &[f64]) -> Option<(f64, f64, f64, usize)> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    Some((median, v[0], v[n - 1], n))
}

impl Stats {
    /// `None` for an empty sample.
    pub fn of(samples: &[Duration]) -> Option<Stats> {
        let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        let (median, min, max, runs) = median_range(&ms)?;
        Some(Stats {
            median,
            min,
            max,
            runs,
        })
    }

    fn cell(&self) -> String {
        format!("{:.1} ({:.1}–{:.1})", self.median, self.min, self.max)
    }
}

/// One machine/firmware pair to measure.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub machine: Machine,
    pub firmware: Firmware,
}

impl Variant {
    fn label(&self) -> String {
        let m = match self.machine {
            Machine::Q35 => "q35",
            Machine::Pc => "pc",
        };
        let f = match self.firmware {
            Firmware::Qboot => "qboot",
            Firmware::Seabios => "SeaBIOS",
        };
        format!("{m} + {f}")
    }
}

/// The default comparison set: the default boot first.
pub fn default_variants() -> Vec<Variant> {
    vec![
        Variant {
            machine: Machine::Q35,
            firmware: Firmware::Qboot,
        },
        Variant {
            machine: Machine::Q35,
            firmware: Firmware::Seabios,
        },
        Variant {
            machine: Machine::Pc,
            firmware: Firmware::Qboot,
        },
    ]
}

/// What to measure.
pub struct BenchPlan {
    pub runs: usize,
    pub variants: Vec<Variant>,
    pub accel: Accel,
    pub accel_reason: String,
    /// The kernel to time, or why there is none.
    pub kernel: std::result::Result<PathBuf, String>,
    pub profile_name: &'static str,
    pub floor: PathBuf,
}

struct Row {
    variant: Variant,
    floor: Stats,
    kernel: std::result::Result<Stats, String>,
}

fn config_for(kernel: &Path, v: Variant, accel: Accel) -> QemuConfig {
    let mut c = QemuConfig::new(kernel);
    c.machine = v.machine;
    c.firmware = v.firmware;
    c.accel = accel;
    c
}

fn time_floor(plan: &BenchPlan, v: Variant) -> Result<Duration> {
    let config = config_for(&plan.floor, v, plan.accel);
    let r = run_guest_with(&config, RunLimits::timeout(RUN_TIMEOUT))?;
    match r.outcome.clone() {
        GuestOutcome::Success => Ok(r.wall),
        GuestOutcome::Interrupted => bail!("interrupted"),
        other => bail!(
            "the floor kernel did not exit with success under {}: {other:?}\n{}",
            v.label(),
            r.log_tail(20)
        ),
    }
}

fn time_kernel(plan: &BenchPlan, kernel: &Path, v: Variant) -> Result<Duration> {
    let config = config_for(kernel, v, plan.accel);
    let limits = RunLimits {
        timeout: RUN_TIMEOUT,
        after_ready: None,
        stop_at_ready: true,
    };
    let r = run_guest_with(&config, limits)?;
    match (r.outcome.clone(), r.ready_after) {
        (GuestOutcome::StoppedAtReady, Some(t)) => Ok(t),
        (GuestOutcome::Interrupted, _) => bail!("interrupted"),
        (other, _) => bail!(
            "Spindle did not reach `{}` under {}: {other:?}\n{}",
            crate::guest::READY_MARKER,
            v.label(),
            r.log_tail(30)
        ),
    }
}

/// Runs the plan: floor and kernel runs interleaved, so drift in the host's
/// load hits both alike. Returns the report text (markdown).
pub fn run(plan: &BenchPlan) -> Result<String> {
    let mut rows = Vec::new();
    for &v in &plan.variants {
        if v.firmware == Firmware::Qboot && !Path::new(crate::qemu::QBOOT_ROM).is_file() {
            eprintln!(
                "spindle: skipping {}: {} is missing",
                v.label(),
                crate::qemu::QBOOT_ROM
            );
            continue;
        }
        eprintln!("spindle: bench {} ({} runs each)", v.label(), plan.runs);
        let mut floor = Vec::new();
        let mut kernel = Vec::new();
        let mut kernel_err: Option<String> = plan.kernel.as_ref().err().cloned();
        for _ in 0..plan.runs {
            floor.push(time_floor(plan, v)?);
            if let (Ok(k), None) = (&plan.kernel, &kernel_err) {
                match time_kernel(plan, k, v) {
                    Ok(t) => kernel.push(t),
                    Err(e) if crate::guest::interrupted() => return Err(e),
                    Err(e) => {
                        eprintln!("spindle: {e:#}");
                        kernel_err = Some("did not reach the ready line".into());
                    }
                }
            }
        }
        let floor = Stats::of(&floor).context("no runs")?;
        let kernel = match kernel_err {
            Some(e) => Err(e),
            None => Stats::of(&kernel).ok_or_else(|| "no runs".to_string()),
        };
        rows.push(Row {
            variant: v,
            floor,
            kernel,
        });
    }
    if rows.is_empty() {
        bail!("nothing to measure");
    }
    Ok(report(plan, &rows))
}

fn report(plan: &BenchPlan, rows: &[Row]) -> String {
    let mut t = String::new();
    t.push_str("| machine + firmware | floor: QEMU start → exit 33 (ms) | Spindle: QEMU start → `spindle: ready` (ms) | Spindle − floor (ms) |\n");
    t.push_str("|---|---|---|---|\n");
    for r in rows {
        let (k, d) = match &r.kernel {
            Ok(k) => (k.cell(), format!("{:.1}", k.median - r.floor.median)),
            Err(e) => (format!("n/a ({e})"), "n/a".to_string()),
        };
        t.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r.variant.label(),
            r.floor.cell(),
            k,
            d
        ));
    }
    let first = rows[0].variant;
    let root = crate::workspace_root();
    let kernel_path = plan
        .kernel
        .as_ref()
        .ok()
        .map(|k| k.strip_prefix(&root).unwrap_or(k).to_path_buf())
        .unwrap_or_else(|| PathBuf::from("<kernel>"));
    let cmd = config_for(&kernel_path, first, plan.accel).command_line();
    format!(
        "## Boot time\n\n\
         Measured {date} by `cargo spindle bench boot --runs {runs}`: median (min–max) of {runs} runs each.\n\n\
         {t}\n\
         Method: the runner spawns QEMU with the serial console on a pipe and stamps the moment the line \
         containing `spindle: ready` arrives (QEMU is then stopped). The floor is a {floor_len}-byte PVH ELF the \
         runner generates whose first instruction writes 0x10 to the isa-debug-exit port; its time runs from \
         spawning QEMU to QEMU's exit with status 33, i.e. the cost of QEMU and firmware alone. Floor and \
         Spindle runs alternate. Spindle kernel: {profile} build.\n\n\
         - Machine: {host}\n\
         - QEMU: {qemu}; accelerator {accel} ({reason})\n\
         - Command ({label}):\n\n    {cmd}\n",
        date = today_utc(),
        runs = plan.runs,
        profile = plan.profile_name,
        host = host_description(),
        qemu = qemu_version(),
        accel = plan.accel,
        reason = plan.accel_reason,
        label = first.label(),
        floor_len = crate::floor::floor_elf().len(),
    )
}

/// The `<PREFIX> <name> <value> ns` result lines a guest benchmark prints,
/// which must end with `<PREFIX> END` (other `<PREFIX>` lines, such as
/// `SKIP` notes, are ignored). Values may have decimals.
pub fn parse_result_lines(
    log: &str,
    prefix: &str,
) -> Result<std::collections::BTreeMap<String, f64>> {
    let mut results = std::collections::BTreeMap::new();
    let mut ended = false;
    for line in log.lines().map(|line| line.trim_end_matches('\r')) {
        let Some(rest) = line
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix(' '))
        else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            ["END"] => ended = true,
            [name, value, "ns"] => {
                let value: f64 = value
                    .parse()
                    .with_context(|| format!("bad {prefix} value in {line:?}"))?;
                results.insert((*name).to_string(), value);
            }
            _ => {}
        }
    }
    if !ended {
        anyhow::bail!("the guest did not finish its benchmarks (no `{prefix} END`)");
    }
    Ok(results)
}

/// Replaces (or appends) the boot-time section of BENCHMARKS.md.
pub fn update_benchmarks_md(path: &Path, section: &str) -> Result<()> {
    update_benchmarks_md_section(path, SECTION_BEGIN, SECTION_END, section)
}

/// Replaces (or appends) the section between `begin` and `end` of
/// BENCHMARKS.md.
pub fn update_benchmarks_md_section(
    path: &Path,
    begin: &str,
    end: &str,
    section: &str,
) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "# Spindle benchmarks\n\nSections between markers are rewritten by the runner.\n"
                .to_string()
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let new = splice_between(&old, begin, end, section);
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

/// `old` with the boot-time section replaced by `section`.
pub fn splice_section(old: &str, section: &str) -> String {
    splice_between(old, SECTION_BEGIN, SECTION_END, section)
}

/// `old` with the text between the markers replaced by `section`.
pub fn splice_between(old: &str, begin: &str, end: &str, section: &str) -> String {
    let block = format!("{begin}\n{}\n{end}", section.trim_end());
    match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{}{}", &old[..b], block, &old[e + end.len()..])
        }
        _ => format!("{}\n{}\n", old.trim_end(), block),
    }
}

pub fn host_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cpus} CPUs available")
}

pub fn qemu_version() -> String {
    tool_version(crate::qemu::QEMU_BIN)
}

/// The first line `program --version` prints, or "unknown version".
pub fn tool_version(program: &str) -> String {
    std::process::Command::new(program)
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

/// Today's date (UTC) as YYYY-MM-DD, from the system clock.
pub fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_median_min_max() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        let s = Stats::of(&ms(&[30, 10, 20])).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (20.0, 10.0, 30.0, 3));
        let s = Stats::of(&ms(&[40, 10, 20, 30])).unwrap();
        assert_eq!(s.median, 25.0);
        assert!(Stats::of(&[]).is_none());
    }

    #[test]
    fn section_is_replaced_not_duplicated() {
        let first = splice_section("# B\n\nintro\n", "## Boot time\nA");
        assert!(first.starts_with("# B\n\nintro\n"));
        let second = splice_section(&first, "## Boot time\nB");
        assert_eq!(second.matches(SECTION_BEGIN).count(), 1);
        assert!(second.contains("\nB\n") && !second.contains("\nA\n"));
        assert!(second.starts_with("# B\n\nintro\n"));
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
