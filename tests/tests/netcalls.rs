//! The `netcalls` image (images/netcalls: the Linux socket system-call
//! layer, check by check) run natively on the host, where every
//! expectation is Linux's own behaviour, and in Spindle, where the same
//! binary must pass the same checks.
//!
//! In Spindle the guest has QEMU user networking with one free host port
//! forwarded to the image's listening port, and connects to itself
//! through the host (`--peer 10.0.2.2:HOSTPORT`): Spindle's stack has no
//! loopback interface. `--closed` is a host port nothing listens on,
//! `--blackhole` an address on slirp's network that nobody answers ARP
//! for, so a connect to it waits (nothing leaves the machine).
//!
//! Verdicts: the run exits 0, prints no `FAIL` line, ends with
//! `netcalls: all N checks passed`, and the Spindle run passed every check
//! the native run passed (by name) but the native-only
//! `connect_sa_restart_restarts` (its event needs a Linux listener's full
//! backlog).

use spindle_runner::images::{self, ImageBoot, ImageResult};
use spindle_runner::{Net, QemuConfig, RunLimits};
use spindle_tests::ctl::prepare;
use spindle_tests::describe;
use spindle_tests::host::run_bounded;
use spindle_tests::images::judge_run;
use spindle_tests::net::free_tcp_port;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

/// The port the image listens on in the guest.
const GUEST_PORT: u16 = 7070;
/// Checks that only the native run makes.
const NATIVE_ONLY: &[&str] = &["connect_sa_restart_restarts"];
/// The longest the native run may take (it takes about 6 s).
const NATIVE_LIMIT: Duration = Duration::from_secs(120);

/// The names of the passed checks, or why the output is not a full pass.
fn passed_checks(output: &str) -> Result<BTreeSet<String>, String> {
    let failed: Vec<&str> = output.lines().filter(|l| l.starts_with("FAIL ")).collect();
    if !failed.is_empty() {
        return Err(format!("failed checks:\n{}", failed.join("\n")));
    }
    let passed: BTreeSet<String> = output
        .lines()
        .filter_map(|l| l.strip_prefix("ok   "))
        .filter_map(|l| l.split(':').next())
        .map(str::to_string)
        .collect();
    let summary = format!("netcalls: all {} checks passed", passed.len());
    if !output.lines().any(|l| l == summary) {
        return Err(format!("no `{summary}` line"));
    }
    Ok(passed)
}

fn native() -> Result<BTreeSet<String>, String> {
    prepare()?;
    let path = images::image_artifact("netcalls");
    let ran = run_bounded(&mut Command::new(path), NATIVE_LIMIT)?;
    if !ran.status.success() {
        return Err(format!("the native run failed: {}", ran.describe()));
    }
    passed_checks(&ran.stdout).map_err(|e| format!("{e}\n{}", ran.describe()))
}

fn spindle() -> Result<ImageResult, String> {
    let p = prepare()?;
    let mut last = String::new();
    for _ in 0..3 {
        let host = free_tcp_port()?;
        let closed = free_tcp_port()?;
        let mut base = QemuConfig::new(&p.kernel).with_smp(2);
        base.mem_mib = 256;
        base.net = Net::User {
            hostfwd: vec![(host, GUEST_PORT)],
        };
        let args = [
            "--listen".to_string(),
            GUEST_PORT.to_string(),
            "--peer".into(),
            format!("10.0.2.2:{host}"),
            "--closed".into(),
            format!("10.0.2.2:{closed}"),
            "--blackhole".into(),
            "10.0.2.99:9".into(),
        ];
        let boot = ImageBoot {
            base,
            image: images::image_artifact("netcalls"),
            argv0: "netcalls".into(),
            args: args.to_vec(),
            respawn: None,
            extra_append: Vec::new(),
            limits: RunLimits::timeout(p.timeout),
        };
        let r = images::run_image(&boot).map_err(|e| format!("{e:#}"))?;
        if r.guest.stderr.contains("host forwarding") {
            last = r.guest.stderr.clone();
            continue;
        }
        return Ok(r);
    }
    Err(format!(
        "QEMU could not forward a free port three times: {last}"
    ))
}

#[test]
fn netcalls_pass_natively() {
    let passed = native().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        passed.len() >= 100,
        "only {} checks ran natively",
        passed.len()
    );
}

#[test]
fn netcalls_pass_in_spindle_as_natively() {
    let r = spindle().unwrap_or_else(|e| panic!("{e}"));
    judge_run(&r, 0, &[]).unwrap_or_else(|e| panic!("{e}"));
    let in_spindle =
        passed_checks(&r.process.output).unwrap_or_else(|e| panic!("{e}\n{}", describe(&r.guest)));
    let on_linux = native().unwrap_or_else(|e| panic!("{e}"));
    let missing: Vec<&String> = on_linux
        .iter()
        .filter(|n| !in_spindle.contains(*n) && !NATIVE_ONLY.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "checks that passed natively did not run in Spindle: {missing:?}\n{}",
        describe(&r.guest)
    );
    let took = r
        .process
        .output
        .lines()
        .find(|l| l.starts_with("netcalls: checks took"))
        .unwrap_or("");
    eprintln!(
        "netcalls: {} checks passed in Spindle ({took}), {} natively",
        in_spindle.len(),
        on_linux.len()
    );
}
