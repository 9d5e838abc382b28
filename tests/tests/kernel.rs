//! `cargo test`'s Spindle suite: boots the kernel under QEMU and reports
//! every in-kernel test as a trial `<group>::<test>`, plus host-side trials
//! that check the failure paths (panic, fault, hang) are caught.
//!
//! Boots run in parallel, one per group, each in its own thread; trials wait
//! for their group's boot. Only boots that some selected trial needs start.

use libtest_mimic::{Arguments, Failed, Trial};
use spindle_runner::guest::{GuestOutcome, RunLimits};
use spindle_runner::kbuild::{Profile, build_kernel};
use spindle_runner::{Net, QemuConfig, floor, run_guest, run_guest_with, setup};
use spindle_tests::{Crash, SharedBoot, judge_boot, judge_crash, judge_test, listed_tests};
use std::sync::Arc;
use std::time::Duration;

/// How long a hung guest may run past its ready line before it is killed.
const HANG_GRACE: Duration = Duration::from_secs(10);

struct Group {
    name: &'static str,
    smp: u32,
}

const GROUPS: [Group; 3] = [
    Group {
        name: "smp1",
        smp: 1,
    },
    Group {
        name: "smp2",
        smp: 2,
    },
    Group {
        name: "smp4",
        smp: 4,
    },
];

fn main() {
    let args = Arguments::from_args();
    let (trials, boots) = match plan() {
        Ok(p) => p,
        Err(e) => {
            let msg = e.clone();
            (
                vec![Trial::test("setup::host_tools", move || {
                    Err(Failed::from(msg))
                })],
                vec![],
            )
        }
    };
    // Start the boots the selected trials need, all at once.
    for (boot, trial_names) in &boots {
        let wanted = trials.iter().any(|t| {
            trial_names.iter().any(|n| n == t.name())
                && !args.is_filtered_out(t)
                && !args.is_ignored(t)
        });
        if wanted && !args.list {
            boot.start();
        }
    }
    libtest_mimic::run(&args, trials).exit();
}

type Boots = Vec<(Arc<SharedBoot>, Vec<String>)>;

/// Installs tools, builds the kernel, lists its tests, and makes the trials.
/// An error here becomes one failing trial.
fn plan() -> Result<(Vec<Trial>, Boots), String> {
    setup::setup(false).map_err(|e| format!("cargo spindle setup failed: {e:#}"))?;
    let timeout = spindle_tests::timeout_from_env()?;
    let mut trials = Vec::new();
    let mut boots: Boots = Vec::new();

    // Host-side plumbing check that needs no Spindle code at all.
    let floor = floor::write_floor_kernel().map_err(|e| format!("{e:#}"))?;
    trials.push(Trial::test(
        "host::floor_kernel_exits_with_success",
        move || {
            let r = run_guest(&QemuConfig::new(&floor), timeout).map_err(|e| format!("{e:#}"))?;
            match r.outcome {
                GuestOutcome::Success => Ok(()),
                _ => Err(spindle_tests::describe(&r).into()),
            }
        },
    ));

    let kernel = match build_kernel(Profile::Debug) {
        Ok(k) => k,
        Err(e) => {
            let msg = format!("{e:#}");
            trials.push(Trial::test("build::kernel", move || Err(msg.into())));
            return Ok((trials, boots));
        }
    };
    // Every boot has a virtio-net device on user networking: the network
    // tests (net::tests) drive the real device.
    let mut base = QemuConfig::new(&kernel);
    base.net = Net::User { hostfwd: vec![] };

    // Discover the in-kernel tests.
    let list =
        run_guest(&base.clone().with_append("ktest=list"), timeout).map_err(|e| format!("{e:#}"));
    match list.and_then(|r| listed_tests(&r)) {
        Ok(names) => add_groups(&base, timeout, &names, &mut trials, &mut boots),
        Err(e) => trials.push(Trial::test("discover::ktest_list", move || Err(e.into()))),
    }

    for kind in [
        Crash::Panic,
        Crash::Exception,
        Crash::StackOverflow,
        Crash::Hang,
    ] {
        add_crash(&base, timeout, kind, &mut trials, &mut boots);
    }
    Ok((trials, boots))
}

fn add_groups(
    base: &QemuConfig,
    timeout: Duration,
    names: &[String],
    trials: &mut Vec<Trial>,
    boots: &mut Boots,
) {
    for group in &GROUPS {
        let config = base
            .clone()
            .with_smp(group.smp)
            .with_append(format!("ktest=all test.cpus={}", group.smp));
        let boot =
            SharedBoot::new(move || run_guest(&config, timeout).map_err(|e| format!("{e:#}")));
        let mut trial_names = Vec::new();
        for name in names {
            let trial_name = format!("{}::{name}", group.name);
            let (boot, name) = (Arc::clone(&boot), name.clone());
            trials.push(Trial::test(&trial_name, move || {
                let r = boot.wait();
                let r = r.as_ref().as_ref().map_err(String::clone)?;
                judge_test(r, &name).map_err(Failed::from)
            }));
            trial_names.push(trial_name);
        }
        let trial_name = format!("{}::boot_outcome", group.name);
        let (b, expected) = (Arc::clone(&boot), names.to_vec());
        trials.push(Trial::test(&trial_name, move || {
            let r = b.wait();
            let r = r.as_ref().as_ref().map_err(String::clone)?;
            judge_boot(r, &expected).map_err(Failed::from)
        }));
        trial_names.push(trial_name);
        boots.push((boot, trial_names));
    }
}

fn add_crash(
    base: &QemuConfig,
    timeout: Duration,
    kind: Crash,
    trials: &mut Vec<Trial>,
    boots: &mut Boots,
) {
    let config = base.clone().with_append(kind.arg());
    let limits = RunLimits {
        timeout,
        after_ready: (kind == Crash::Hang).then_some(HANG_GRACE),
        stop_at_ready: false,
    };
    let boot =
        SharedBoot::new(move || run_guest_with(&config, limits).map_err(|e| format!("{e:#}")));
    let name = match kind {
        Crash::Panic => "failure_paths::panic_is_reported",
        Crash::Exception => "failure_paths::exception_is_reported",
        Crash::StackOverflow => "failure_paths::stack_overflow_is_reported",
        Crash::Hang => "failure_paths::hang_is_reported",
    };
    let b = Arc::clone(&boot);
    trials.push(Trial::test(name, move || {
        let r = b.wait();
        let r = r.as_ref().as_ref().map_err(String::clone)?;
        judge_crash(kind, r).map_err(Failed::from)
    }));
    boots.push((boot, vec![name.to_string()]));
}
