//! `cargo spindle bench syscalls`: the `sysbench` image in Spindle and in
//! the Linux baseline guest, with identical QEMU arguments.
//!
//! The same static binary runs in both: in Spindle as the guest process
//! (`-initrd`), in the Linux guest of `../shared/anchors/linux-guest/`
//! (built by its own `build.sh` into `target/linux-guest`) appended to its
//! initramfs as `/bench/sysbench` and started by its exec mode. Both
//! guests get the same machine, firmware, accelerator, CPUs, memory and
//! (no) network; only `-kernel`, `-initrd` and `-append` differ. Runs
//! alternate; the report gives each operation's median and range per
//! system and the Spindle / Linux ratio, and rewrites its section of
//! BENCHMARKS.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::guest::run_guest;
use crate::qemu::{Accel, QemuConfig};

const SECTION_BEGIN: &str =
    "<!-- bench-syscalls:begin (written by `cargo spindle bench syscalls`) -->";
const SECTION_END: &str = "<!-- bench-syscalls:end -->";

/// The anchor's scripts (read-only; run where they are).
pub fn anchor_dir() -> PathBuf {
    crate::workspace_root().join("../shared/anchors/linux-guest")
}

/// Where the anchor's `build.sh` puts the Linux guest for us.
pub fn linux_build_dir() -> PathBuf {
    crate::workspace_root().join("target/linux-guest")
}

/// Builds the Linux guest with the anchor's own script, unless built.
pub fn ensure_linux_guest() -> Result<(PathBuf, PathBuf)> {
    let build = linux_build_dir();
    let (vmlinux, initramfs) = (build.join("vmlinux"), build.join("initramfs.gz"));
    if vmlinux.exists() && initramfs.exists() {
        return Ok((vmlinux, initramfs));
    }
    let script = anchor_dir().join("build.sh");
    if !script.exists() {
        bail!(
            "the Linux baseline's build script is missing: {}",
            script.display()
        );
    }
    std::fs::create_dir_all(&build)?;
    eprintln!(
        "spindle: building the Linux baseline guest with {} (once)",
        script.display()
    );
    let status = Command::new(&script)
        .env("LG_BUILD", &build)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() || !vmlinux.exists() || !initramfs.exists() {
        bail!(
            "{} failed ({status}); see its output above",
            script.display()
        );
    }
    Ok((vmlinux, initramfs))
}

/// Builds the `sysbench` image (release, static musl) and returns its path.
pub fn build_sysbench_image() -> Result<PathBuf> {
    let root = crate::workspace_root();
    let target_dir = root.join("target/images");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args([
            "build",
            "-q",
            "--release",
            "-p",
            "image-sysbench",
            "--target",
            "x86_64-unknown-linux-musl",
            "--target-dir",
        ])
        .arg(&target_dir)
        .status()
        .context("running cargo to build the sysbench image")?;
    if !status.success() {
        bail!("building the sysbench image failed ({status})");
    }
    Ok(target_dir.join("x86_64-unknown-linux-musl/release/sysbench"))
}

/// A newc cpio archive holding `/bench/<name>` (mode 0755) with `data`.
pub fn cpio_with_program(name: &str, data: &[u8]) -> Vec<u8> {
    fn entry(archive: &mut Vec<u8>, inode: u32, path: &str, mode: u32, data: &[u8]) {
        let header = format!(
            "070701{inode:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            path.len() + 1,
            0
        );
        archive.extend_from_slice(header.as_bytes());
        archive.extend_from_slice(path.as_bytes());
        archive.push(0);
        while !archive.len().is_multiple_of(4) {
            archive.push(0);
        }
        archive.extend_from_slice(data);
        while !archive.len().is_multiple_of(4) {
            archive.push(0);
        }
    }
    let mut archive = Vec::new();
    entry(&mut archive, 1, "bench", 0o040755, &[]);
    entry(&mut archive, 2, &format!("bench/{name}"), 0o100755, data);
    entry(&mut archive, 0, "TRAILER!!!", 0, &[]);
    archive
}

/// The `BENCH <name> <ns> ns` lines of one run; requires `BENCH END`.
pub fn parse_bench(log: &str) -> Result<BTreeMap<String, f64>> {
    crate::bench::parse_result_lines(log, "BENCH")
}

pub struct SyscallBenchPlan {
    pub kernel: PathBuf,
    pub image: PathBuf,
    pub accel: Accel,
    pub accel_reason: String,
    pub runs: usize,
    pub smp: u32,
    pub mem_mib: u64,
}

fn base_config(plan: &SyscallBenchPlan, kernel: &Path) -> QemuConfig {
    let mut config = QemuConfig::new(kernel).with_smp(plan.smp);
    config.accel = plan.accel;
    config.mem_mib = plan.mem_mib;
    config
}

fn median_and_range(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    (
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
    )
}

/// Runs the plan; returns the Markdown section.
pub fn run(plan: &SyscallBenchPlan) -> Result<String> {
    let (vmlinux, initramfs) = ensure_linux_guest()?;
    let program =
        std::fs::read(&plan.image).with_context(|| format!("reading {}", plan.image.display()))?;
    let mut combined =
        std::fs::read(&initramfs).with_context(|| format!("reading {}", initramfs.display()))?;
    // Linux looks for the next archive at a 4-byte boundary and skips the
    // zero padding before it.
    while !combined.len().is_multiple_of(4) {
        combined.push(0);
    }
    combined.extend_from_slice(&cpio_with_program("sysbench", &program));
    let combined_path = crate::scratch_dir().join("linux-bench-initramfs");
    std::fs::create_dir_all(crate::scratch_dir())?;
    std::fs::write(&combined_path, &combined)?;

    let mut spindle_config =
        base_config(plan, &plan.kernel).with_append("init=sysbench loglevel=warn");
    spindle_config.extra_args = vec!["-initrd".into(), plan.image.display().to_string()];
    let mut linux_config = base_config(plan, &vmlinux)
        .with_append("console=ttyS0 panic=-1 quiet lg_mode=exec lg_exec=/bench/sysbench");
    linux_config.extra_args = vec!["-initrd".into(), combined_path.display().to_string()];

    let mut spindle: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut linux: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in 0..plan.runs {
        for (system, config, samples) in [
            ("Spindle", &spindle_config, &mut spindle),
            ("Linux", &linux_config, &mut linux),
        ] {
            let result = run_guest(config, Duration::from_secs(600))?;
            let values = parse_bench(&result.log)
                .with_context(|| format!("{system}, run {}:\n{}", run + 1, result.log))?;
            for (name, value) in values {
                samples.entry(name).or_default().push(value);
            }
            eprintln!(
                "spindle: bench syscalls: {system} run {}/{} done",
                run + 1,
                plan.runs
            );
        }
    }
    let mut text = String::from("## System calls: Spindle against Linux\n\n");
    text.push_str(&format!(
        "Measured {} by `cargo spindle bench syscalls --runs {}`: the `sysbench` image (the same static binary) as Spindle's guest process and under the Linux baseline guest, alternating, {} runs each, `-smp {}`, `-m {}M`. Nanoseconds per operation: median (min–max); ratio = Spindle / Linux (below 1 is faster).\n\n",
        crate::bench::today_utc(),
        plan.runs,
        plan.runs,
        plan.smp,
        plan.mem_mib
    ));
    text.push_str("| operation | Spindle ns | Linux ns | Spindle / Linux |\n|---|---|---|---|\n");
    for (name, values) in &spindle {
        let (s, s_min, s_max) = median_and_range(values);
        match linux.get(name) {
            Some(other) => {
                let (l, l_min, l_max) = median_and_range(other);
                text.push_str(&format!("| {name} | {s:.0} ({s_min:.0}–{s_max:.0}) | {l:.0} ({l_min:.0}–{l_max:.0}) | {:.2} |\n", s / l));
            }
            None => text.push_str(&format!(
                "| {name} | {s:.0} ({s_min:.0}–{s_max:.0}) | not run | — |\n"
            )),
        }
    }
    text.push_str(&format!(
        "\nMethod: both guests boot with the same QEMU arguments except `-kernel`/`-initrd`/`-append` (Spindle: its kernel and the image; Linux: the anchor's Debian vmlinux by PVH, its initramfs plus a cpio holding `/bench/sysbench`, exec mode). The program times each operation with `clock_gettime(CLOCK_MONOTONIC)` inside the guest, so under TCG both are emulated time. Accelerator: {} ({}). QEMU: {}. Host: {}.\n",
        match plan.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        },
        plan.accel_reason,
        crate::bench::qemu_version(),
        crate::bench::host_description()
    ));
    Ok(text)
}

/// Writes the section into BENCHMARKS.md.
pub fn update_benchmarks_md(path: &Path, section: &str) -> Result<()> {
    crate::bench::update_benchmarks_md_section(path, SECTION_BEGIN, SECTION_END, section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_is_newc_with_a_trailer() {
        let archive = cpio_with_program("x", b"abc");
        assert!(archive.starts_with(b"070701"));
        assert_eq!(archive.len() % 4, 0);
        let text = String::from_utf8_lossy(&archive);
        assert!(text.contains("bench/x\0"));
        assert!(text.contains("TRAILER!!!"));
        assert!(text.contains("abc"));
    }

    #[test]
    fn bench_lines_need_their_end() {
        let values = parse_bench("BENCH getppid 250 ns\r\nnoise\nBENCH END\n").expect("parses");
        assert_eq!(values.get("getppid"), Some(&250.0));
        assert!(parse_bench("BENCH getppid 250 ns\n").is_err());
    }
}
