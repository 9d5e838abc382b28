//! `cargo test`'s signal suite: boots the `signals` image under the kernel
//! and checks Linux signal semantics from the process's side.
//!
//! - `signals` with no arguments runs every semantic check in one process
//!   (see `images/signals`): all must print `ok`, none `FAIL`, and the
//!   process must exit 0, on one CPU and on two.
//! - `signals fault segv|ill|fpe` faults in a thread other than main with
//!   no handler: the kernel must report `killed by signal 11|4|8`. These
//!   boots have no control channel, so no core can be written and the
//!   status must not claim one (`(core dumped)`); the core itself, with a
//!   channel, is `ctl.rs`'s `ctl_fatal_fault_sends_a_core_gdb_reads`. With
//!   `--no-core` (RLIMIT_CORE 0) the same.
//! - `signals raise TERM|QUIT|CONT`: default actions (terminate, core
//!   action without a channel, continue).
//! - 201 runs of `signals fault segv --no-core` and of `signals raise
//!   KILL` (`respawn=200`): every run killed by signal 11 (9) and no memory
//!   lost.
//!
//! Every boot has kernel-only workers in the process (`test.kworkers=2`),
//! which must never take a signal nor keep a dying process alive. One boot
//! per trial; the boots of the selected trials all start at once, each in
//! its own thread (which owns its QEMU), as in `images.rs`.

use spindle_runner::guest::{GuestOutcome, RunLimits};
use spindle_runner::images::{self, ImageBoot, ImageResult, ProcessEnd};
use spindle_runner::kbuild::{Profile, build_kernel};
use spindle_runner::{QemuConfig, setup};
use spindle_tests::describe;
use spindle_tests::images::{
    Case, Judge, judge_prefixes, judge_run, kernel_failure, memory_returns_each_run, run_cases,
};

/// Kernel-only workers placed in every process.
const KWORKERS: &str = "test.kworkers=2";
/// The leak trial runs the faulting image 1 + RESPAWN times.
const RESPAWN: usize = 200;

fn main() {
    run_cases("signals", plan())
}

/// Every check passed: exit status 0, a success power-off, no `FAIL`
/// line, at least one `ok` line and the `signals: all N checks passed`
/// summary.
fn judge_all_checks(r: &ImageResult) -> Result<(), String> {
    judge_run(r, 0, &[])?;
    judge_prefixes(r, &["ok   ", "signals: all "])
}

/// One run, killed by `signal`, with a core dump exactly when `core`; the
/// guest powered off as failure; the output has every prefix in
/// `prefixes`.
fn judge_killed(r: &ImageResult, signal: u32, core: bool, prefixes: &[&str]) -> Result<(), String> {
    let fail = |what: String| Err(format!("{what}\n{}", describe(&r.guest)));
    if let Some(m) = kernel_failure(r) {
        return fail(format!("the kernel reported `{m}`"));
    }
    if let Some(c) = &r.process.cannot_run {
        return fail(format!("the kernel refused the image: {c}"));
    }
    let pid = match r.process.ends.as_slice() {
        [ProcessEnd::Killed { signal: s, pid, .. }] if *s == signal.to_string() => *pid,
        ends => {
            return fail(format!(
                "expected one end, killed by signal {signal}; saw {ends:?}"
            ));
        }
    };
    let dumped = r.process.core_dumped(pid);
    if dumped != core {
        return fail(format!(
            "killed by signal {signal} {} `(core dumped)`, expected {}",
            if dumped { "with" } else { "without" },
            if core { "a core" } else { "none" }
        ));
    }
    if r.guest.outcome != GuestOutcome::Failure {
        return fail(format!(
            "the guest ended {:?}; a process killed by a signal should power off as Failure",
            r.guest.outcome
        ));
    }
    judge_prefixes(r, prefixes)
}

/// `runs` runs, each killed by `signal` without a core; the free frames
/// after every run equal those after the first, and from the second run on
/// equal those before that run (the first run fills the kernel's caches);
/// the heap does not grow ([`no_growth`]).
fn judge_killed_runs(r: &ImageResult, runs: usize, signal: u32) -> Result<(), String> {
    let fail = |what: String| Err(format!("{what}\n{}", describe(&r.guest)));
    if let Some(m) = kernel_failure(r) {
        return fail(format!("the kernel reported `{m}`"));
    }
    let ends = &r.process.ends;
    if ends.len() != runs {
        return fail(format!("expected {runs} runs, saw {} ends", ends.len()));
    }
    let want = signal.to_string();
    if let Some((i, end)) = ends
        .iter()
        .enumerate()
        .find(|(_, e)| !matches!(e, ProcessEnd::Killed { signal: s, .. } if *s == want))
    {
        return fail(format!(
            "run {} ended {end:?}, expected killed by signal {signal}",
            i + 1
        ));
    }
    if !r.process.dumped_core.is_empty() {
        return fail(format!(
            "RLIMIT_CORE was 0, yet pids {:?} dumped core",
            r.process.dumped_core
        ));
    }
    memory_returns_each_run(r, runs).or_else(fail)?;
    // And every run ends with the frames the first one ended with.
    let after = &r.process.memory_after;
    if let Some((run, m)) = after
        .iter()
        .enumerate()
        .find(|(_, m)| m.free_frames != after[0].free_frames)
    {
        return fail(format!(
            "free frames after run {} ({}) differ from after run 1 ({}): frames leaked",
            run + 1,
            m.free_frames,
            after[0].free_frames
        ));
    }
    if r.guest.outcome != GuestOutcome::Failure {
        return fail(format!(
            "the last run was killed, so the guest should power off as Failure, not {:?}",
            r.guest.outcome
        ));
    }
    Ok(())
}

fn words(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Builds the kernel and the images and makes the cases. An error here
/// becomes one failing trial.
fn plan() -> Result<Vec<Case>, String> {
    if images::find_image("signals").is_none() {
        return Err(
            "the runner does not know the `signals` image: it must be listed in IMAGES in \
             runner/src/images.rs"
                .into(),
        );
    }
    setup::setup(false).map_err(|e| format!("cargo spindle setup failed: {e:#}"))?;
    let timeout = spindle_tests::timeout_from_env()?;
    let kernel = build_kernel(Profile::Debug).map_err(|e| format!("{e:#}"))?;
    images::build_images().map_err(|e| format!("{e:#}"))?;
    let limits = RunLimits::timeout(timeout);
    let boot = |smp: u32, args: &[&str]| {
        let mut base = QemuConfig::new(&kernel).with_smp(smp);
        base.mem_mib = 128;
        ImageBoot {
            base,
            image: images::image_artifact("signals"),
            argv0: "signals".into(),
            args: words(args),
            respawn: None,
            extra_append: vec![KWORKERS.into()],
            limits,
        }
    };
    let case = |name: &str, boot: ImageBoot, judge: Judge| Case {
        name: name.into(),
        boot,
        judge,
    };
    let killed = |signal: u32, core: bool, prefixes: &'static [&'static str]| -> Judge {
        Box::new(move |r: &ImageResult| judge_killed(r, signal, core, prefixes))
    };
    const FAULTING: &[&str] = &["signals: faulting at 0x"];
    const RAISING: &[&str] = &["signals: raising SIG"];
    Ok(vec![
        case(
            "signals::all_checks_pass_smp1",
            boot(1, &[]),
            Box::new(judge_all_checks),
        ),
        case(
            "signals::all_checks_pass_smp2",
            boot(2, &[]),
            Box::new(judge_all_checks),
        ),
        case(
            "fault::segv_in_a_thread_is_killed_by_11",
            boot(2, &["fault", "segv"]),
            killed(11, false, FAULTING),
        ),
        case(
            "fault::ill_in_a_thread_is_killed_by_4",
            boot(2, &["fault", "ill"]),
            killed(4, false, FAULTING),
        ),
        case(
            "fault::fpe_in_a_thread_is_killed_by_8",
            boot(2, &["fault", "fpe"]),
            killed(8, false, FAULTING),
        ),
        case(
            "fault::segv_with_rlimit_core_0_dumps_no_core",
            boot(2, &["fault", "segv", "--no-core"]),
            killed(
                11,
                false,
                &["signals: core dumps disabled", "signals: faulting at 0x"],
            ),
        ),
        case(
            "raise::term_terminates_without_core",
            boot(2, &["raise", "TERM"]),
            killed(15, false, RAISING),
        ),
        case(
            "raise::quit_terminates",
            boot(2, &["raise", "QUIT"]),
            killed(3, false, RAISING),
        ),
        case(
            "raise::cont_is_survived",
            boot(2, &["raise", "CONT"]),
            Box::new(|r: &ImageResult| judge_run(r, 0, &["signals: survived SIGCONT"])),
        ),
        case(
            "respawn::segv_no_core_201_runs_lose_no_memory",
            ImageBoot {
                respawn: Some(RESPAWN as u32),
                ..boot(2, &["fault", "segv", "--no-core"])
            },
            Box::new(|r: &ImageResult| judge_killed_runs(r, RESPAWN + 1, 11)),
        ),
        case(
            "respawn::sigkill_201_runs_lose_no_memory",
            ImageBoot {
                respawn: Some(RESPAWN as u32),
                ..boot(2, &["raise", "KILL"])
            },
            Box::new(|r: &ImageResult| judge_killed_runs(r, RESPAWN + 1, 9)),
        ),
    ])
}
