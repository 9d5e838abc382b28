//! `cargo spindle bench ...`: the subcommands' bodies (the binary's, not
//! the library's): build what they measure, run the library's benchmark,
//! print the report and put it into BENCHMARKS.md.

use super::*;

pub(crate) fn bench_boot(
    runs: u32,
    machine: Option<Machine>,
    firmware: Option<Firmware>,
    debug: bool,
    accel: AccelChoice,
    no_write: bool,
) -> Result<u8> {
    let decision = decide_for_host(accel);
    let profile = if debug {
        Profile::Debug
    } else {
        Profile::Release
    };
    let kernel = build_kernel(profile).map_err(|e| {
        eprintln!("spindle: {e:#}; timing the floor kernel only");
        format!("{e:#}")
            .lines()
            .next()
            .unwrap_or("build failed")
            .to_string()
    });
    let mut variants = bench::default_variants();
    if machine.is_some() || firmware.is_some() {
        variants = vec![bench::Variant {
            machine: machine.unwrap_or(Machine::Q35),
            firmware: firmware.unwrap_or_else(spindle_runner::qemu::default_firmware),
        }];
    }
    let plan = bench::BenchPlan {
        runs: runs as usize,
        variants,
        accel: decision.accel,
        accel_reason: decision.reason,
        kernel,
        profile_name: if debug { "debug" } else { "release" },
        floor: floor::write_floor_kernel()?,
    };
    let report = bench::run(&plan)?;
    println!("{report}");
    if !no_write {
        let path = spindle_runner::workspace_root().join("BENCHMARKS.md");
        bench::update_benchmarks_md(&path, &report)?;
        eprintln!("spindle: updated {}", path.display());
    }
    Ok(0)
}

pub(crate) fn bench_sched(
    runs: u32,
    smp: u32,
    debug: bool,
    accel: AccelChoice,
    no_write: bool,
) -> Result<u8> {
    let decision = decide_for_host(accel);
    let kernel = build_kernel(if debug {
        Profile::Debug
    } else {
        Profile::Release
    })?;
    let plan = spindle_runner::bench_sched::SchedBenchPlan {
        kernel,
        accel: decision.accel,
        accel_reason: decision.reason,
        runs: runs as usize,
        smp,
    };
    let report = spindle_runner::bench_sched::run(&plan)?;
    publish(
        &report,
        no_write,
        spindle_runner::bench_sched::update_benchmarks_md,
    )
}

pub(crate) fn bench_syscalls(
    runs: u32,
    smp: u32,
    accel: AccelChoice,
    no_write: bool,
) -> Result<u8> {
    let decision = decide_for_host(accel);
    let kernel = build_kernel(Profile::Release)?;
    let image = spindle_runner::bench_syscalls::build_sysbench_image()?;
    let plan = spindle_runner::bench_syscalls::SyscallBenchPlan {
        kernel,
        image,
        accel: decision.accel,
        accel_reason: decision.reason,
        runs: runs as usize,
        smp,
        mem_mib: 512,
    };
    let report = spindle_runner::bench_syscalls::run(&plan)?;
    publish(
        &report,
        no_write,
        spindle_runner::bench_syscalls::update_benchmarks_md,
    )
}

pub(crate) struct NetArgs {
    pub(crate) runs: u32,
    pub(crate) seconds: u32,
    pub(crate) net: IperfNetChoice,
    pub(crate) smp: u32,
    pub(crate) mem: u64,
    pub(crate) accel: AccelChoice,
    pub(crate) cpu: Option<String>,
    pub(crate) only: Option<NetSystemChoice>,
    pub(crate) no_write: bool,
}

pub(crate) fn bench_net(a: NetArgs) -> Result<u8> {
    use spindle_runner::bench_net::{self, NetBenchPlan, System};
    let decision = decide_for_host(a.accel);
    eprintln!("spindle: accel {} ({})", decision.accel, decision.reason);
    let systems = match a.only {
        None => vec![System::Spindle, System::Linux],
        Some(NetSystemChoice::Spindle) => vec![System::Spindle],
        Some(NetSystemChoice::Linux) => vec![System::Linux],
    };
    let kernel = build_kernel(Profile::Release)?;
    let image = if systems.contains(&System::Spindle) {
        images::build_images()?;
        Some(images::resolve_image("iperf")?.path)
    } else {
        None
    };
    let plan = NetBenchPlan {
        kernel,
        image,
        accel: decision.accel,
        accel_reason: decision.reason,
        runs: a.runs as usize,
        seconds: a.seconds,
        net: a.net.net(),
        smp: a.smp,
        mem_mib: a.mem,
        cpu: a.cpu,
        systems,
    };
    let result = bench_net::run(&plan)?;
    if !result.failures.is_empty() {
        println!("Failures:\n{}", result.failures);
    }
    eprintln!(
        "spindle: bench net: console logs and iperf3 reports in {}",
        result.raw_dir.display()
    );
    if a.only.is_some() && !a.no_write {
        eprintln!("spindle: bench net: --only: BENCHMARKS.md left alone");
    }
    publish(
        &result.section,
        a.no_write || a.only.is_some(),
        bench_net::update_benchmarks_md,
    )
}

/// Prints a benchmark report and, unless `no_write`, puts it into its
/// section of BENCHMARKS.md with `update`.
fn publish(
    report: &str,
    no_write: bool,
    update: fn(&std::path::Path, &str) -> Result<()>,
) -> Result<u8> {
    println!("{report}");
    if !no_write {
        let path = spindle_runner::workspace_root().join("BENCHMARKS.md");
        update(&path, report)?;
        eprintln!("spindle: updated {}", path.display());
    }
    Ok(0)
}
