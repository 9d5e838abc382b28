//! `cargo test`'s guest-process suite: boots each image in `images/` as
//! Spindle's process and checks its output and exit status; boots broken
//! images and checks the kernel refuses them without falling over; runs
//! `hello` 201 times (`respawn=200`) and checks no memory is lost.
//!
//! One boot per trial; the boots of the selected trials all start at once,
//! each in its own thread (which owns its QEMU), as in `kernel.rs`.
//!
//! Needs the kernel side of the process contract (see
//! `spindle_runner::images`): without it every trial here fails, saying
//! what was missing from the log.

use spindle_runner::guest::RunLimits;
use spindle_runner::images::{self, ImageBoot, ImageResult, corrupt};
use spindle_runner::kbuild::{Profile, build_kernel};
use spindle_runner::{QemuConfig, setup};
use spindle_tests::images::{
    Case, Judge, judge_empty_initrd, judge_killed, judge_prefixes, judge_refused, judge_respawn,
    judge_run, judge_worker_exits, run_cases,
};
use std::path::PathBuf;
use std::time::Duration;

/// The fuzzer's seed in the suite (any fixed value replays exactly).
const FUZZ_SEED: &str = "24301";
/// The kernel-only-worker exit trials run `hello` 1 + WORKER_RESPAWN times.
const WORKER_RESPAWN: usize = 20;
/// `hello` runs 1 + RESPAWN times in the respawn trial.
const RESPAWN: usize = 200;

fn main() {
    run_cases("images", plan())
}

fn words(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Builds the kernel and the images, writes the broken images, and makes
/// the cases. An error here becomes one failing trial.
fn plan() -> Result<Vec<Case>, String> {
    setup::setup(false).map_err(|e| format!("cargo spindle setup failed: {e:#}"))?;
    let timeout = spindle_tests::timeout_from_env()?;
    let kernel = build_kernel(Profile::Debug).map_err(|e| format!("{e:#}"))?;
    images::build_images().map_err(|e| format!("{e:#}"))?;
    let limits = RunLimits::timeout(timeout);
    let base = |smp: u32, mem_mib: u64| {
        let mut c = QemuConfig::new(&kernel).with_smp(smp);
        c.mem_mib = mem_mib;
        c
    };
    let boot = |image: &str, smp: u32, mem: u64, args: &[&str]| ImageBoot {
        base: base(smp, mem),
        image: images::image_artifact(image),
        argv0: image.to_string(),
        args: words(args),
        respawn: None,
        extra_append: Vec::new(),
        limits,
    };
    let all_checks = |name: &'static str| -> Judge {
        Box::new(move |r: &ImageResult| {
            judge_run(r, 0, &[])?;
            judge_prefixes(r, &[&format!("{name}: all ")])
        })
    };
    let mut cases = vec![
        Case {
            name: "image::hello_prints_its_arguments_and_exits_with_3".into(),
            boot: boot(
                "hello",
                2,
                128,
                &["one", "two=2", "--threads", "2", "--exit", "3"],
            ),
            judge: Box::new(|r: &ImageResult| {
                judge_run(
                    r,
                    3,
                    &[
                        "hello from spindle",
                        "argv[0] = hello",
                        "argv[1] = one",
                        "argv[2] = two=2",
                        "argv[3] = --threads",
                        "argv[4] = 2",
                        "argv[5] = --exit",
                        "argv[6] = 3",
                        "thread 0 of 2",
                        "thread 1 of 2",
                        "joined 2 threads",
                        "exiting with status 3",
                    ],
                )
            }),
        },
        Case {
            name: "image::threads_smp2".into(),
            boot: boot("threads", 2, 128, &[]),
            judge: all_checks("threads"),
        },
        Case {
            name: "image::threads_smp4".into(),
            boot: boot("threads", 4, 128, &[]),
            judge: all_checks("threads"),
        },
        Case {
            name: "image::memory".into(),
            boot: boot("memory", 2, 256, &[]),
            judge: all_checks("memory"),
        },
        Case {
            name: "image::clock".into(),
            boot: boot("clock", 2, 128, &[]),
            judge: all_checks("clock"),
        },
        Case {
            name: "image::badcalls".into(),
            boot: boot("badcalls", 2, 128, &[]),
            judge: all_checks("badcalls"),
        },
        Case {
            name: "image::fuzz_survives_100000_calls".into(),
            boot: boot("fuzz", 2, 128, &["--seed", FUZZ_SEED]),
            judge: Box::new(|r: &ImageResult| {
                judge_run(r, 0, &["fuzz: done, the process survived"])?;
                judge_prefixes(
                    r,
                    &[
                        &format!("fuzz: seed {FUZZ_SEED}, 100000 calls"),
                        "fuzz: 100000 calls made",
                        "fuzz: errors by errno:",
                    ],
                )
            }),
        },
        Case {
            name: "image::sysbench_quick".into(),
            boot: boot("sysbench", 2, 128, &["--quick"]),
            judge: Box::new(|r: &ImageResult| {
                judge_run(r, 0, &["BENCH END"])?;
                judge_prefixes(
                    r,
                    &[
                        "BENCH syscall_getppid ",
                        "BENCH futex_ping_pong ",
                        "BENCH thread_create_join ",
                    ],
                )
            }),
        },
        Case {
            name: "image::chello".into(),
            boot: boot("chello", 2, 128, &["x", "y"]),
            judge: Box::new(|r: &ImageResult| {
                judge_run(
                    r,
                    0,
                    &[
                        "hello from chello (C, musl, static)",
                        "argc = 3",
                        "argv[0] = chello",
                        "argv[1] = x",
                        "argv[2] = y",
                        "chello: thread joined, value 42",
                    ],
                )
            }),
        },
        Case {
            name: "fault::user_mode_touching_kernel_memory_is_killed_with_sigsegv".into(),
            boot: boot("hello", 2, 128, &["--touch-kernel"]),
            judge: Box::new(|r: &ImageResult| judge_killed(r, "11")),
        },
        Case {
            name: "exit::exit_group_ends_the_process_with_kernel_only_workers_inside".into(),
            boot: ImageBoot {
                respawn: Some(WORKER_RESPAWN as u32),
                extra_append: vec!["test.kworkers=3".into()],
                ..boot("hello", 4, 128, &["--threads", "4"])
            },
            judge: Box::new(|r: &ImageResult| judge_worker_exits(r, WORKER_RESPAWN + 1, 0)),
        },
        Case {
            name: "exit::last_user_thread_ends_the_process_while_workers_sleep".into(),
            boot: ImageBoot {
                respawn: Some(WORKER_RESPAWN as u32),
                extra_append: vec!["test.kworkers=3".into()],
                ..boot("hello", 2, 128, &["--thread-exit", "--exit", "5"])
            },
            judge: Box::new(|r: &ImageResult| judge_worker_exits(r, WORKER_RESPAWN + 1, 5)),
        },
        Case {
            name: "respawn::hello_201_runs_leave_memory_as_after_the_first".into(),
            boot: ImageBoot {
                respawn: Some(RESPAWN as u32),
                ..boot("hello", 2, 128, &[])
            },
            judge: Box::new(|r: &ImageResult| judge_respawn(r, RESPAWN + 1)),
        },
    ];

    // Broken images, made from the hello binary.
    let hello = std::fs::read(images::image_artifact("hello"))
        .map_err(|e| format!("reading the hello image: {e}"))?;
    let dir = spindle_runner::scratch_dir().join("bad-images");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    type Corruption = fn(&[u8]) -> Vec<u8>;
    let variants: [(&str, Corruption); 4] = [
        ("truncated_to_100_bytes", corrupt::truncated),
        ("bad_magic", corrupt::bad_magic),
        ("program_headers_past_the_end", corrupt::phdrs_past_end),
        ("other_machine", corrupt::other_machine),
    ];
    for (name, make) in variants {
        let path: PathBuf = dir.join(name);
        std::fs::write(&path, make(&hello))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        cases.push(Case {
            name: format!("bad_image::{name}"),
            boot: ImageBoot {
                base: base(1, 128),
                image: path,
                argv0: "init".into(),
                args: Vec::new(),
                respawn: None,
                extra_append: Vec::new(),
                limits,
            },
            judge: Box::new(judge_refused),
        });
    }

    // A dynamically linked program (PT_INTERP): musl-gcc without -static.
    let dynamic = dir.join("dynamically_linked");
    let src = spindle_runner::workspace_root().join("images/chello/chello.c");
    let built = std::process::Command::new("musl-gcc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&dynamic)
        .arg(&src)
        .status()
        .map_err(|e| format!("running musl-gcc: {e}"))?;
    if !built.success() {
        return Err(format!("musl-gcc could not build {}", dynamic.display()));
    }
    cases.push(Case {
        name: "bad_image::dynamically_linked".into(),
        boot: ImageBoot {
            base: base(1, 128),
            image: dynamic,
            argv0: "init".into(),
            args: Vec::new(),
            respawn: None,
            extra_append: Vec::new(),
            limits,
        },
        judge: Box::new(judge_refused),
    });

    // An empty -initrd: QEMU hands the kernel no boot module at all (seen:
    // the kernel logs "no guest image"), so the kernel cannot tell it from
    // no -initrd and idles. What must hold: the runner refuses the file
    // before booting, and the kernel, booted with it anyway, does not fall
    // over (it refuses it, or idles until 5 s after its ready line).
    let empty = dir.join("empty_file");
    std::fs::write(&empty, corrupt::empty(&hello))
        .map_err(|e| format!("writing {}: {e}", empty.display()))?;
    let runner_verdict = match images::resolve_image(&empty.to_string_lossy()) {
        Ok(_) => Err("the runner accepted an empty file as an image".to_string()),
        Err(e) if format!("{e:#}").contains("empty") => Ok(()),
        Err(e) => Err(format!(
            "the runner refused the empty file without saying it is empty: {e:#}"
        )),
    };
    cases.push(Case {
        name: "bad_image::empty_file".into(),
        boot: ImageBoot {
            base: base(1, 128),
            image: empty,
            argv0: "init".into(),
            args: Vec::new(),
            respawn: None,
            extra_append: Vec::new(),
            limits: RunLimits {
                timeout,
                after_ready: Some(Duration::from_secs(5)),
                stop_at_ready: false,
            },
        },
        judge: Box::new(move |r: &ImageResult| {
            runner_verdict.clone()?;
            judge_empty_initrd(r)
        }),
    });
    Ok(cases)
}
