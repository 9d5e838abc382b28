//! `cargo spindle`: the command-line front end of `spindle_runner`.

mod bench_commands;

use anyhow::{Context, Result, bail};
use bench_commands::{NetArgs, bench_boot, bench_net, bench_sched, bench_syscalls};
use clap::{Args, Parser, Subcommand};
use spindle_runner::accel::{AccelChoice, decide_for_host};
use spindle_runner::ctl::broker::{CoreSink, Notify, RunBroker};
use spindle_runner::ctl::registry;
use spindle_runner::guest::{self, GuardedChild};
use spindle_runner::kbuild::{Profile, build_kernel};
use spindle_runner::qemu::Serial;
use spindle_runner::{Firmware, Machine, Net, QemuConfig, bench, floor, gdb, images, setup};
use std::io::{Read, Write};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "cargo spindle",
    about = "Build, boot, test, benchmark and debug Spindle under QEMU"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what this machine lacks (Rust targets, QEMU, iperf3, musl-tools).
    Setup {
        /// Also install gdb.
        #[arg(long)]
        gdb: bool,
    },
    /// Build the kernel and the guest images; print their paths.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Boot Spindle with its serial console on this terminal (and its
    /// control channel offered to `cargo spindle ctl`).
    Run(RunArgs),
    /// Send one command to a running guest's control channel: ps,
    /// lwps [PID], pstop PID, prun PID, pstack PID, gcore PID,
    /// kill -SIG PID, stats, rings, help. Exit status: 0 ok, 1 the guest said
    /// error, 2 no running guest or no answer.
    Ctl(CtlArgs),
    /// Throughput: boot Spindle serving iperf3 (the `iperf` image), run the
    /// host's iperf3 against it, print the result, then end the guest
    /// process and print its teardown (workers gone, memory returned).
    Iperf(IperfArgs),
    /// Measure boot time or the scheduler.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
    /// Boot Spindle paused and attach gdb to QEMU's gdb stub.
    Gdb {
        #[command(flatten)]
        boot: BootArgs,
        /// Do not start gdb: keep QEMU paused in the foreground and print the
        /// QEMU and gdb commands (to paste into another terminal).
        #[arg(long)]
        print: bool,
        /// TCP port for the gdb stub on 127.0.0.1 (default: a free one).
        #[arg(long)]
        gdb_port: Option<u16>,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Time from spawning QEMU to `spindle: ready`, beside the firmware floor.
    Boot {
        /// Runs per variant.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        runs: u32,
        /// Measure only this machine (default: q35+qboot, q35+SeaBIOS, pc+qboot).
        #[arg(long, value_enum)]
        machine: Option<Machine>,
        /// Measure only this firmware.
        #[arg(long, value_enum)]
        firmware: Option<Firmware>,
        /// Time the debug kernel instead of the release one.
        #[arg(long)]
        debug: bool,
        #[arg(long, value_enum, default_value = "auto")]
        accel: AccelChoice,
        /// Do not update BENCHMARKS.md.
        #[arg(long)]
        no_write: bool,
    },
    /// System calls, futex ping-pong and thread create+join of the same
    /// static program in Spindle and in the Linux baseline guest.
    Syscalls {
        /// Runs per system (alternating).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
        runs: u32,
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
        smp: u32,
        #[arg(long, value_enum, default_value = "auto")]
        accel: AccelChoice,
        /// Do not update BENCHMARKS.md.
        #[arg(long)]
        no_write: bool,
    },
    /// TCP throughput (iperf3, both directions) and boot-to-ready of
    /// Spindle's `iperf` image against the Linux baseline guest, with
    /// identical QEMU arguments; QEMU's per-thread CPU and, for Spindle,
    /// the guest's CPU per LWP during each test.
    Net {
        /// Boots per system (alternating); each serves both directions.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
        runs: u32,
        /// Length of each iperf3 test.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=600))]
        seconds: u32,
        /// user: slirp with a forward from a free 127.0.0.1 port; tap: a
        /// tap in a private network namespace (root).
        #[arg(long, value_enum, default_value = "user")]
        net: IperfNetChoice,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
        smp: u32,
        /// Guest memory: MiB, or with a K/M/G suffix.
        #[arg(long, default_value = "512M", value_parser = parse_mem)]
        mem: u64,
        #[arg(long, value_enum, default_value = "auto")]
        accel: AccelChoice,
        /// QEMU's -cpu model for both guests (default: max under TCG,
        /// host under KVM, as every runner command).
        #[arg(long, value_name = "MODEL")]
        cpu: Option<String>,
        /// Boot only this system (for debugging one side: no ratio, and
        /// BENCHMARKS.md is not written).
        #[arg(long, value_enum)]
        only: Option<NetSystemChoice>,
        /// Do not update BENCHMARKS.md.
        #[arg(long)]
        no_write: bool,
    },
    /// Scheduler micro-benchmarks: context switch, thread create + join,
    /// cross-CPU wake-up latency (in-guest, nanoseconds).
    Sched {
        /// Boots to take the median over.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
        runs: u32,
        /// CPUs (at least 2 for the cross-CPU cases).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
        smp: u32,
        /// Time the debug kernel instead of the release one.
        #[arg(long)]
        debug: bool,
        #[arg(long, value_enum, default_value = "auto")]
        accel: AccelChoice,
        /// Do not update BENCHMARKS.md.
        #[arg(long)]
        no_write: bool,
    },
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    boot: BootArgs,
    /// Run this guest program: an image name (see `cargo spindle build`) or
    /// the path of a static x86_64 Linux ELF. The process's exit status
    /// becomes the runner's.
    #[arg(long, value_name = "NAME|PATH")]
    image: Option<String>,
    /// With --image: start the program N more times after it exits.
    #[arg(long, value_name = "N", requires = "image")]
    respawn: Option<u32>,
    /// Where cores the guest sends are saved, as core.<image>.<pid>
    /// (default: the current directory).
    #[arg(long, value_name = "DIR")]
    core_dir: Option<std::path::PathBuf>,
    /// With --image: the process's arguments (argv[1..]); printable ASCII
    /// without spaces.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

#[derive(Args)]
struct IperfArgs {
    /// Test length in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=3600))]
    seconds: u32,
    /// Parallel TCP streams.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=32))]
    parallel: u32,
    /// Guest to host (iperf3 -R) instead of host to guest.
    #[arg(long, conflicts_with = "bidir")]
    reverse: bool,
    /// Both directions at once (iperf3 --bidir).
    #[arg(long)]
    bidir: bool,
    /// Print one JSON document (summary, teardown, iperf3's own report).
    #[arg(long)]
    json: bool,
    /// user: slirp, a forward from a free 127.0.0.1 port; tap: a tap in a
    /// private network namespace (root), removed afterwards.
    #[arg(long, value_enum, default_value = "user")]
    net: IperfNetChoice,
    /// Boot the unoptimised (debug) kernel instead of the release one.
    #[arg(long)]
    debug: bool,
    #[arg(long, value_enum, default_value = "auto")]
    accel: AccelChoice,
    /// Number of CPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    smp: u32,
    /// Guest memory: MiB, or with a K/M/G suffix.
    #[arg(long, default_value = "256M", value_parser = parse_mem)]
    mem: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum IperfNetChoice {
    User,
    Tap,
}

impl IperfNetChoice {
    fn net(self) -> spindle_runner::iperf_session::IperfNet {
        use spindle_runner::iperf_session::IperfNet;
        match self {
            IperfNetChoice::User => IperfNet::User,
            IperfNetChoice::Tap => IperfNet::Tap,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum NetSystemChoice {
    Spindle,
    Linux,
}

#[derive(Args)]
struct CtlArgs {
    /// Print the reply's JSON value instead of a table or text.
    #[arg(long)]
    json: bool,
    /// The guest of the `cargo spindle run` with this pid (default: the
    /// only one running, else the newest).
    #[arg(long, value_name = "PID", conflicts_with = "socket")]
    instance: Option<u32>,
    /// Talk to this socket instead of looking the guest up.
    #[arg(long, value_name = "PATH")]
    socket: Option<std::path::PathBuf>,
    /// gcore: write the core to FILE (default: core.<pid>).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<std::path::PathBuf>,
    /// The command, e.g. `ps`, `lwps 1`, `kill -USR2 1`.
    #[arg(value_name = "COMMAND")]
    command: String,
    /// The command's arguments.
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum NetChoice {
    /// virtio-net on QEMU user networking (slirp), with TCP forwards.
    User,
    /// virtio-net whose frames travel in UDP datagrams on 127.0.0.1
    /// (`--udp LOCAL:REMOTE`); no slirp: set `net.ip=` with --append.
    Socket,
    None,
}

fn parse_forward(s: &str) -> Result<(u16, u16), String> {
    spindle_runner::qemu::parse_forward(s)
}

fn parse_udp(s: &str) -> Result<(u16, u16), String> {
    let bad = || {
        format!(
            "--udp {s:?}: expected LOCAL:REMOTE, two UDP ports (1-65535) on 127.0.0.1: \
             QEMU listens on LOCAL and sends the guest's frames to REMOTE"
        )
    };
    let (l, r) = s.split_once(':').ok_or_else(bad)?;
    match (l.parse::<u16>(), r.parse::<u16>()) {
        (Ok(l), Ok(r)) if l != 0 && r != 0 => Ok((l, r)),
        _ => Err(bad()),
    }
}

#[derive(Args)]
struct BootArgs {
    /// Boot the release build.
    #[arg(long)]
    release: bool,
    #[arg(long, value_enum, default_value = "auto")]
    accel: AccelChoice,
    /// Number of CPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=255))]
    smp: u32,
    /// Guest memory: MiB, or with a K/M/G suffix.
    #[arg(long, default_value = "128M", value_parser = parse_mem)]
    mem: u64,
    /// Kernel command line, e.g. "loglevel=debug" or "ktest=all".
    #[arg(long)]
    append: Option<String>,
    #[arg(long, value_enum, default_value = "none")]
    net: NetChoice,
    /// With --net user: forward TCP 127.0.0.1:HOST to the guest's port
    /// GUEST (a lone PORT: the same on both sides). Repeatable.
    #[arg(long = "forward", value_name = "HOST:GUEST", value_parser = parse_forward)]
    forwards: Vec<(u16, u16)>,
    /// With --net user: forward 127.0.0.1:PORT to the guest's PORT (the
    /// default when no --forward is given: 5201).
    #[arg(long, value_name = "PORT")]
    hostfwd_port: Option<u16>,
    /// With --net socket: QEMU's UDP ports on 127.0.0.1.
    #[arg(long, value_name = "LOCAL:REMOTE", value_parser = parse_udp)]
    udp: Option<(u16, u16)>,
    #[arg(long, value_enum, default_value = "q35")]
    machine: Machine,
    /// Default: qboot when installed, else SeaBIOS.
    #[arg(long, value_enum)]
    firmware: Option<Firmware>,
}

fn parse_mem(s: &str) -> Result<u64, String> {
    spindle_runner::size::parse_mem_mib(s).map_err(|e| e.to_string())
}

impl BootArgs {
    fn config(&self, kernel: std::path::PathBuf) -> Result<QemuConfig> {
        let decision = decide_for_host(self.accel);
        eprintln!("spindle: accel {} ({})", decision.accel, decision.reason);
        let mut c = QemuConfig::new(kernel);
        c.accel = decision.accel;
        c.machine = self.machine;
        if let Some(fw) = self.firmware {
            if fw == Firmware::Qboot
                && !std::path::Path::new(spindle_runner::qemu::QBOOT_ROM).is_file()
            {
                bail!(
                    "--firmware qboot: {} is missing (run `cargo spindle setup`)",
                    spindle_runner::qemu::QBOOT_ROM
                );
            }
            c.firmware = fw;
        }
        c.smp = self.smp;
        c.mem_mib = self.mem;
        c.append = self.append.clone();
        c.net = self.network()?;
        Ok(c)
    }

    /// The network the flags ask for; flags that do not fit it are errors.
    fn network(&self) -> Result<Net> {
        if self.net != NetChoice::User && (!self.forwards.is_empty() || self.hostfwd_port.is_some())
        {
            bail!("--forward and --hostfwd-port need --net user");
        }
        if self.net != NetChoice::Socket && self.udp.is_some() {
            bail!("--udp needs --net socket");
        }
        Ok(match self.net {
            NetChoice::None => Net::None,
            NetChoice::User => {
                let mut hostfwd = self.forwards.clone();
                if let Some(p) = self.hostfwd_port {
                    hostfwd.push((p, p));
                }
                if hostfwd.is_empty() {
                    hostfwd.push((5201, 5201));
                }
                let mut hosts: Vec<u16> = hostfwd.iter().map(|f| f.0).collect();
                hosts.sort_unstable();
                if let Some(w) = hosts.windows(2).find(|w| w[0] == w[1]) {
                    bail!("host port {} is forwarded twice", w[0]);
                }
                Net::User { hostfwd }
            }
            NetChoice::Socket => {
                let Some((udp_local, udp_remote)) = self.udp else {
                    bail!("--net socket needs --udp LOCAL:REMOTE");
                };
                Net::Socket {
                    udp_local,
                    udp_remote,
                }
            }
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("spindle: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cmd: Cmd) -> Result<u8> {
    let with_gdb = matches!(cmd, Cmd::Gdb { .. } | Cmd::Setup { gdb: true });
    // `ctl` only talks to a running guest: nothing to install or build.
    if !matches!(cmd, Cmd::Ctl(_)) {
        setup::setup(with_gdb)?;
    }
    guest::install_interrupt_handler()?;
    match cmd {
        Cmd::Setup { .. } => Ok(0),
        Cmd::Ctl(a) => spindle_runner::ctl::cli::run(&spindle_runner::ctl::cli::CtlOptions {
            json: a.json,
            instance: a.instance,
            socket: a.socket,
            output: a.output,
            words: std::iter::once(a.command).chain(a.args).collect(),
        }),
        Cmd::Build { release } => {
            let path = build_kernel(Profile::from_release(release))?;
            println!("{}", path.display());
            for (name, path) in images::build_images()? {
                println!("image {name}: {}", path.display());
            }
            Ok(0)
        }
        Cmd::Run(run_args) => run(&run_args),
        Cmd::Iperf(a) => iperf(&a),
        Cmd::Bench {
            what:
                BenchCmd::Boot {
                    runs,
                    machine,
                    firmware,
                    debug,
                    accel,
                    no_write,
                },
        } => bench_boot(runs, machine, firmware, debug, accel, no_write),
        Cmd::Bench {
            what:
                BenchCmd::Sched {
                    runs,
                    smp,
                    debug,
                    accel,
                    no_write,
                },
        } => bench_sched(runs, smp, debug, accel, no_write),
        Cmd::Bench {
            what:
                BenchCmd::Syscalls {
                    runs,
                    smp,
                    accel,
                    no_write,
                },
        } => bench_syscalls(runs, smp, accel, no_write),
        Cmd::Bench {
            what:
                BenchCmd::Net {
                    runs,
                    seconds,
                    net,
                    smp,
                    mem,
                    accel,
                    cpu,
                    only,
                    no_write,
                },
        } => bench_net(NetArgs {
            runs,
            seconds,
            net,
            smp,
            mem,
            accel,
            cpu,
            only,
            no_write,
        }),
        Cmd::Gdb {
            boot,
            print,
            gdb_port,
        } => {
            let kernel = build_kernel(Profile::from_release(boot.release))?;
            let mut config = boot.config(kernel.clone())?;
            config.gdb_port = Some(match gdb_port {
                Some(p) => p,
                None => gdb::free_port()?,
            });
            config.paused = true;
            if !print {
                let log = spindle_runner::scratch_dir().join("gdb-serial.log");
                std::fs::create_dir_all(spindle_runner::scratch_dir())?;
                std::fs::write(&log, "").with_context(|| format!("creating {}", log.display()))?;
                eprintln!("spindle: guest serial output goes to {}", log.display());
                config.serial = Serial::File(log);
            }
            let code = gdb::session(&config, &kernel, print)?;
            Ok(u8::try_from(code).unwrap_or(2))
        }
    }
}

/// `cargo spindle run`: the guest's exit status becomes ours; with
/// `--image`, the process's.
///
/// QEMU's serial output is copied to our stdout as it arrives (QEMU keeps
/// the terminal as its stdin) and scanned afterwards for the kernel's
/// `spindle: process ... exited with status S` line. The guest's COM2 goes
/// to the broker (`spindle_runner::ctl::broker`), in background threads.
fn run(run_args: &RunArgs) -> Result<u8> {
    let boot = &run_args.boot;
    if run_args.image.is_none() && !run_args.args.is_empty() {
        bail!("process arguments after `--` need --image");
    }
    // Check what the user typed before spending time on builds.
    if let Some(spec) = &run_args.image {
        for (i, a) in run_args.args.iter().enumerate() {
            images::check_word(&format!("argument {}", i + 1), a)?;
        }
        // A path, or an unknown name, can be judged now; a known image's
        // file exists only after the build below.
        if spec.contains('/')
            || std::path::Path::new(spec).exists()
            || images::find_image(spec).is_none()
        {
            images::resolve_image(spec)?;
        }
    }
    if let Some(dir) = &run_args.core_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--core-dir {}: cannot create it", dir.display()))?;
    }
    let kernel = build_kernel(Profile::from_release(boot.release))?;
    let mut config = boot.config(kernel)?;
    let mut image_name = "guest".to_string();
    if let Some(spec) = &run_args.image {
        if images::find_image(spec).is_some() && !spec.contains('/') {
            images::build_images()?;
        }
        let image = images::resolve_image(spec)?;
        config.append = Some(images::compose_append(
            boot.append.as_deref(),
            &image.argv0,
            run_args.respawn,
            &run_args.args,
        )?);
        image_name = image.argv0.clone();
        config.initrd = Some(image.path);
    }
    let cores = CoreSink {
        dir: run_args.core_dir.clone(),
        image: image_name,
    };
    let dir = registry::runtime_dir();
    // The console matters more than the control channel: without one the
    // guest still runs.
    let mut broker = match RunBroker::prepare(&dir, config.initrd.as_deref(), cores) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("spindle: no control channel for this guest: {e:#}");
            None
        }
    };
    config.ctl_socket = broker.as_ref().map(|b| b.qemu_socket().to_path_buf());
    let mut cmd = config.command();
    cmd.stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut qemu = GuardedChild::spawn(cmd)?;
    if let Some(b) = broker.as_mut() {
        let notify: Notify = Arc::new(|m: &str| eprintln!("{m}"));
        if let Err(e) = b.start(qemu.id(), notify) {
            eprintln!("spindle: no control channel for this guest: {e:#}");
            broker = None;
        }
    }
    let serial = qemu.child_mut().stdout.take().context("QEMU stdout")?;
    let tee = std::thread::spawn(move || tee_to_stdout(serial));
    let outcome = loop {
        if let Some(status) = qemu.try_wait()? {
            break if guest::interrupted() {
                guest::GuestOutcome::Interrupted
            } else {
                guest::classify_status(status)
            };
        }
        if guest::interrupted() {
            qemu.terminate();
            eprintln!("spindle: interrupted");
            break guest::GuestOutcome::Interrupted;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = tee.join().unwrap_or_default();
    // The registry entry and the sockets go now, also after Ctrl-C.
    drop(broker);
    let process = images::parse_process_log(&log);
    let (code, note) = images::runner_exit_code(&outcome, &process);
    if let Some(note) = note {
        eprintln!("spindle: {note}");
    }
    match &outcome {
        guest::GuestOutcome::Failure if process.ends.is_empty() => {
            eprintln!("spindle: the guest exited with failure")
        }
        guest::GuestOutcome::Abnormal(why) => eprintln!("spindle: abnormal end: {why}"),
        _ => {}
    }
    Ok(code)
}

fn iperf(a: &IperfArgs) -> Result<u8> {
    use spindle_runner::iperf::{Direction, HostTest};
    use spindle_runner::iperf_session::IperfPlan;
    let net = a.net.net();
    let kernel = build_kernel(Profile::from_release(!a.debug))?;
    images::build_images()?;
    let image = images::resolve_image("iperf")?.path;
    let decision = decide_for_host(a.accel);
    eprintln!("spindle: accel {} ({})", decision.accel, decision.reason);
    let mut config = spindle_runner::QemuConfig::new(kernel);
    config.accel = decision.accel;
    config.smp = a.smp;
    config.mem_mib = a.mem;
    let direction = if a.bidir {
        Direction::Bidir
    } else if a.reverse {
        Direction::GuestToHost
    } else {
        Direction::HostToGuest
    };
    let result = spindle_runner::iperf_session::run(IperfPlan {
        test: HostTest {
            direction,
            seconds: a.seconds,
            parallel: a.parallel,
        },
        net,
        config,
        image,
        json: a.json,
    });
    // Ctrl-C: everything is stopped and removed by now.
    if result.is_err() && guest::interrupted() {
        eprintln!("spindle: interrupted");
        return Ok(130);
    }
    result
}

/// Copies QEMU's serial output to our stdout as it comes; returns all of
/// it (`\r` removed) for the exit-status scan.
fn tee_to_stdout(mut serial: impl Read) -> String {
    let mut log = Vec::new();
    let mut buf = [0u8; 4096];
    let stdout = std::io::stdout();
    loop {
        let n = match serial.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut out = stdout.lock();
        // A closed stdout (`| head`) must not stop the guest or the scan.
        let _ = out.write_all(&buf[..n]).and_then(|_| out.flush());
        log.extend(buf[..n].iter().copied().filter(|&b| b != b'\r'));
    }
    String::from_utf8_lossy(&log).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctl(args: &[&str]) -> Result<CtlArgs, clap::Error> {
        let argv = ["cargo-spindle", "ctl"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Cmd::Ctl(a) => Ok(a),
            _ => panic!("not ctl"),
        }
    }

    #[test]
    fn ctl_takes_the_command_words_as_typed() {
        let a = ctl(&["kill", "-USR2", "5"]).unwrap();
        assert_eq!(a.command, "kill");
        assert_eq!(a.args, ["-USR2", "5"]);
        assert!(!a.json);
        let a = ctl(&["--json", "--instance", "42", "lwps", "1"]).unwrap();
        assert!(a.json);
        assert_eq!(a.instance, Some(42));
        assert_eq!(a.args, ["1"]);
        let a = ctl(&["-o", "/tmp/c", "gcore", "3"]).unwrap();
        assert_eq!(a.output.as_deref(), Some(std::path::Path::new("/tmp/c")));
        // The runner's own flags may also follow the command word.
        let a = ctl(&["lwps", "--json", "1"]).unwrap();
        assert!(a.json && a.args == ["1"]);
    }

    fn iperf_args(args: &[&str]) -> Result<IperfArgs, clap::Error> {
        let argv = ["cargo-spindle", "iperf"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Cmd::Iperf(a) => Ok(a),
            _ => panic!("not iperf"),
        }
    }

    #[test]
    fn iperf_flags_have_defaults_and_limits() {
        let a = iperf_args(&[]).unwrap();
        assert_eq!((a.seconds, a.parallel, a.smp, a.mem), (10, 1, 1, 256));
        assert!(!a.reverse && !a.bidir && !a.json && !a.debug);
        assert_eq!(a.net, IperfNetChoice::User);
        let a = iperf_args(&[
            "--reverse",
            "--parallel",
            "4",
            "--seconds",
            "3",
            "--net",
            "tap",
        ])
        .unwrap();
        assert!(a.reverse && a.parallel == 4 && a.seconds == 3 && a.net == IperfNetChoice::Tap);
        for bad in [
            &["--reverse", "--bidir"][..],
            &["--parallel", "0"],
            &["--parallel", "33"],
            &["--seconds", "0"],
            &["--net", "socket"],
            &["--seconds", "ten"],
        ] {
            assert!(iperf_args(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn boot(args: &[&str]) -> Result<BootArgs, clap::Error> {
        let argv = ["cargo-spindle", "run"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Cmd::Run(a) => Ok(a.boot),
            _ => panic!("not run"),
        }
    }

    fn network(args: &[&str]) -> Result<Net, String> {
        boot(args)
            .map_err(|e| e.to_string())?
            .network()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn net_flags_choose_the_netdev() {
        assert_eq!(network(&[]), Ok(Net::None));
        assert_eq!(network(&["--net", "user"]), Ok(Net::user_forwarding(5201)));
        assert_eq!(
            network(&["--net", "user", "--hostfwd-port", "6000"]),
            Ok(Net::user_forwarding(6000))
        );
        assert_eq!(
            network(&["--net", "user", "--forward", "8080:80", "--forward", "7777"]),
            Ok(Net::User {
                hostfwd: vec![(8080, 80), (7777, 7777)]
            })
        );
        assert_eq!(
            network(&["--net", "socket", "--udp", "4000:4001"]),
            Ok(Net::Socket {
                udp_local: 4000,
                udp_remote: 4001
            })
        );
    }

    #[test]
    fn bad_net_flags_say_what_is_wrong() {
        let err = |args: &[&str], want: &str| {
            let e = network(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        };
        err(&["--net", "user", "--forward", "80:x"], "HOST:GUEST");
        err(&["--net", "user", "--forward", "0"], "not a TCP port");
        err(&["--forward", "80:80"], "need --net user");
        err(
            &["--net", "none", "--hostfwd-port", "80"],
            "need --net user",
        );
        err(
            &["--net", "user", "--forward", "80:1", "--forward", "80:2"],
            "forwarded twice",
        );
        err(&["--net", "socket"], "needs --udp");
        err(&["--net", "socket", "--udp", "4000"], "LOCAL:REMOTE");
        err(&["--net", "user", "--udp", "1:2"], "needs --net socket");
        err(&["--net", "bogus"], "invalid value");
    }

    #[test]
    fn bad_ctl_flags_are_clap_errors() {
        assert!(ctl(&[]).is_err());
        assert!(ctl(&["--bogus", "ps"]).is_err());
        assert!(ctl(&["--instance", "x", "ps"]).is_err());
        assert!(ctl(&["--instance", "1", "--socket", "/s", "ps"]).is_err());
    }
}
