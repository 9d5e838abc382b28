//! `cargo spindle bench sched`: the scheduler micro-benchmarks.
//!
//! Boots the kernel with `kbench=all` on 2 CPUs (so the cross-CPU cases
//! run), several times, gathers its `KBENCH <name> <ns> ns` lines and
//! reports the median and range of each over the boots; writes its own
//! section of BENCHMARKS.md.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::guest::{GuestOutcome, run_guest};
use crate::qemu::{Accel, QemuConfig};

const SECTION_BEGIN: &str = "<!-- bench-sched:begin (written by `cargo spindle bench sched`) -->";
const SECTION_END: &str = "<!-- bench-sched:end -->";

/// What each benchmark measures, in the order reported.
const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "switch_same_cpu",
        "context switch: two LWPs bound to one CPU yielding to each other (per switch)",
    ),
    (
        "ping_pong_cross_cpu",
        "ping-pong across two CPUs through a sleeping mutex and condition variable (per one-way hand-off)",
    ),
    (
        "kthread_create_join",
        "kernel thread create + join, empty body",
    ),
    (
        "wakeup_latency_cross_cpu",
        "wake-up latency: `notify_one` on CPU 0 to the sleeper running on CPU 1",
    ),
];

/// The `KBENCH name value ns` lines of one boot (whole nanoseconds).
pub fn parse_kbench(log: &str) -> Result<BTreeMap<String, u64>> {
    let values = crate::bench::parse_result_lines(log, "KBENCH")?;
    Ok(values
        .into_iter()
        .map(|(name, value)| (name, value as u64))
        .collect())
}

pub struct SchedBenchPlan {
    pub kernel: std::path::PathBuf,
    pub accel: Accel,
    pub accel_reason: String,
    pub runs: usize,
    pub smp: u32,
}

/// Runs the plan; returns the Markdown section.
pub fn run(plan: &SchedBenchPlan) -> Result<String> {
    let mut samples: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for run in 0..plan.runs {
        let mut config = QemuConfig::new(&plan.kernel)
            .with_smp(plan.smp)
            .with_append("kbench=all loglevel=warn");
        config.accel = plan.accel;
        let result = run_guest(&config, Duration::from_secs(300))?;
        if result.outcome != GuestOutcome::Success {
            bail!(
                "benchmark boot {} ended {:?}:\n{}",
                run + 1,
                result.outcome,
                result.log
            );
        }
        for (name, value) in parse_kbench(&result.log)? {
            samples.entry(name).or_default().push(value);
        }
        eprintln!("spindle: bench sched run {}/{} done", run + 1, plan.runs);
    }
    Ok(report(plan, &samples))
}

fn report(plan: &SchedBenchPlan, samples: &BTreeMap<String, Vec<u64>>) -> String {
    let mut text = String::new();
    text.push_str("## Scheduler\n\n");
    text.push_str(&format!(
        "Measured {} by `cargo spindle bench sched --runs {}`: each benchmark's in-guest median, then the median (min–max) of those over {} boots with `-smp {}`.\n\n",
        crate::bench::today_utc(),
        plan.runs,
        plan.runs,
        plan.smp
    ));
    text.push_str("| benchmark | ns | what |\n|---|---|---|\n");
    for (name, description) in DESCRIPTIONS {
        let cell = match samples.get(*name) {
            Some(values) if !values.is_empty() => {
                let mut sorted = values.clone();
                sorted.sort_unstable();
                format!(
                    "{} ({}–{})",
                    sorted[sorted.len() / 2],
                    sorted[0],
                    sorted[sorted.len() - 1]
                )
            }
            _ => "not run".to_string(),
        };
        text.push_str(&format!("| {name} | {cell} | {description} |\n"));
    }
    text.push_str(&format!(
        "\nMethod: the kernel is booted with `kbench=all`; each benchmark runs in kernel threads at priority 120 and reads the guest's TSC clock (`time::now_ns`), so under TCG the numbers are emulated time, useful to compare Spindle's own changes, not hardware. Accelerator: {} ({}). QEMU: {}. Host: {}.\n",
        match plan.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        },
        plan.accel_reason,
        crate::bench::qemu_version(),
        crate::bench::host_description()
    ));
    text
}

/// Writes the section into BENCHMARKS.md.
pub fn update_benchmarks_md(path: &std::path::Path, section: &str) -> Result<()> {
    crate::bench::update_benchmarks_md_section(path, SECTION_BEGIN, SECTION_END, section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_results_and_requires_the_end() {
        let log =
            "KBENCH BEGIN cpus=2\r\nKBENCH switch_same_cpu 1234 ns\nKBENCH SKIP x: y\nKBENCH END\n";
        let results = parse_kbench(log).expect("parses");
        assert_eq!(results.get("switch_same_cpu"), Some(&1234));
        assert_eq!(results.len(), 1);
        assert!(parse_kbench("KBENCH switch_same_cpu 1 ns\n").is_err());
        assert!(parse_kbench("KBENCH a notanumber ns\nKBENCH END\n").is_err());
    }
}
