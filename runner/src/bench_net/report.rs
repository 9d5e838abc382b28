//! `bench net`'s report: the Markdown section (tables, CPU splits, where
//! the time goes, method), the failures list and `records.json`.

use super::*;

/// The facts the section states besides the measurements.
pub struct ReportContext {
    pub date: String,
    pub runs: usize,
    pub seconds: u32,
    pub net: IperfNet,
    pub smp: u32,
    pub mem_mib: u64,
    /// `--cpu` as given.
    pub cpu: Option<String>,
    /// The `-cpu` value on the command lines.
    pub cpu_in_use: String,
    pub accel: Accel,
    pub accel_reason: String,
    pub qemu: String,
    pub host: String,
    pub host_iperf3: String,
    pub spindle_command: String,
    pub linux_command: String,
}

fn net_label(net: IperfNet) -> &'static str {
    match net {
        IperfNet::User => "user",
        IperfNet::Tap => "tap",
    }
}

fn arrow(d: Direction) -> &'static str {
    match d {
        Direction::HostToGuest => "host → guest",
        Direction::GuestToHost => "guest → host",
        Direction::Bidir => "both ways",
    }
}

fn measured(
    boots: &[BootRecord],
    system: System,
    direction: Direction,
) -> impl Iterator<Item = &Measured> {
    boots
        .iter()
        .filter(move |b| b.system == system)
        .flat_map(|b| b.tests.iter())
        .filter(move |t| t.direction == direction)
        .filter_map(|t| t.outcome.as_ref().ok())
}

fn throughput(boots: &[BootRecord], system: System, direction: Direction) -> Option<Summary> {
    let v: Vec<f64> = measured(boots, system, direction)
        .map(|m| m.gbit_per_s)
        .collect();
    Summary::of(&v)
}

fn boot_times(boots: &[BootRecord], system: System) -> Option<Summary> {
    let v: Vec<f64> = boots
        .iter()
        .filter(|b| b.system == system)
        .filter_map(|b| b.ready.as_ref().ok())
        .map(Duration::as_secs_f64)
        .collect();
    Summary::of(&v)
}

/// Attempts and failures of one system and direction (`None`: boots).
fn attempts(boots: &[BootRecord], system: System, direction: Option<Direction>) -> (usize, usize) {
    let mine = boots.iter().filter(|b| b.system == system);
    match direction {
        None => {
            let all: Vec<_> = mine.collect();
            (all.len(), all.iter().filter(|b| b.ready.is_err()).count())
        }
        Some(d) => {
            // A boot that never got ready is a failure of its tests too.
            let mut n = 0;
            let mut failed = 0;
            for b in mine {
                n += 1;
                match b.tests.iter().find(|t| t.direction == d) {
                    Some(t) if t.outcome.is_ok() => {}
                    _ => failed += 1,
                }
            }
            (n, failed)
        }
    }
}

fn summary_cell(s: Option<Summary>, decimals: usize, attempts: (usize, usize)) -> String {
    let mut cell = match s {
        Some(s) => s.cell(decimals),
        None => "no result".to_string(),
    };
    if attempts.1 > 0 {
        cell.push_str(&format!(" ({} of {} failed)", attempts.1, attempts.0));
    }
    cell
}

/// The medians of a per-test map (missing keys count as 0) and of the
/// per-test totals.
fn median_split<'a>(
    maps: impl Iterator<Item = &'a BTreeMap<String, f64>>,
) -> (Vec<(String, f64)>, f64) {
    let maps: Vec<&BTreeMap<String, f64>> = maps.collect();
    let keys: BTreeSet<&String> = maps.iter().flat_map(|m| m.keys()).collect();
    let mut out: Vec<(String, f64)> = keys
        .into_iter()
        .map(|k| {
            let v: Vec<f64> = maps
                .iter()
                .map(|m| m.get(k).copied().unwrap_or(0.0))
                .collect();
            (k.clone(), Summary::of(&v).map_or(0.0, |s| s.median))
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let totals: Vec<f64> = maps
        .iter()
        .map(|m| m.values().fold(0.0, |a, b| a + b))
        .collect();
    (out, Summary::of(&totals).map_or(0.0, |s| s.median))
}

/// `v` rounded to a whole number, never `-0`.
pub fn whole(v: f64) -> String {
    let text = format!("{v:.0}");
    if text == "-0" { "0".to_string() } else { text }
}

fn join_split(split: &[(String, f64)]) -> String {
    split
        .iter()
        .filter(|(_, v)| *v >= 0.5)
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Per system and direction: the median QEMU thread split, total, host busy.
struct CpuRow {
    system: System,
    direction: Direction,
    n: usize,
    threads: Vec<(String, f64)>,
    total: f64,
    host_busy: Option<f64>,
    host_iperf3: Option<f64>,
    host_rest: Option<f64>,
    guest_iperf3: Option<f64>,
    gbit: Option<f64>,
    /// Spindle: the guest's LWPs.
    lwps: Option<LwpRow>,
}

/// The median LWP split (label, %), the median of the rest of the
/// guest's CPUs, and how many tests had a split.
struct LwpRow {
    split: Vec<(String, f64)>,
    rest: f64,
    n: usize,
}

fn cpu_rows(boots: &[BootRecord], systems: &[System], smp: u32) -> Vec<CpuRow> {
    let mut rows = Vec::new();
    for &system in systems {
        for direction in DIRECTIONS {
            let ms: Vec<&Measured> = measured(boots, system, direction).collect();
            if ms.is_empty() {
                continue;
            }
            let (threads, total) = median_split(ms.iter().map(|m| &m.qemu_threads));
            let median_of = |f: &dyn Fn(&Measured) -> Option<f64>| {
                let v: Vec<f64> = ms.iter().filter_map(|m| f(m)).collect();
                Summary::of(&v).map(|s| s.median)
            };
            let gbit: Vec<f64> = ms.iter().map(|m| m.gbit_per_s).collect();
            let lwp_maps: Vec<BTreeMap<String, f64>> = ms
                .iter()
                .filter_map(|m| m.guest_lwps.as_ref()?.as_ref().ok())
                .map(|shares| shares.iter().map(|s| (s.label.clone(), s.pct)).collect())
                .collect();
            let lwps = (!lwp_maps.is_empty()).then(|| {
                let (split, _) = median_split(lwp_maps.iter());
                let rest: Vec<f64> = lwp_maps
                    .iter()
                    .map(|m| f64::from(smp) * 100.0 - m.values().fold(0.0, |a, b| a + b))
                    .collect();
                LwpRow {
                    split,
                    rest: Summary::of(&rest).map_or(0.0, |s| s.median),
                    n: lwp_maps.len(),
                }
            });
            rows.push(CpuRow {
                system,
                direction,
                n: ms.len(),
                threads,
                total,
                host_busy: median_of(&|m| m.host_busy_pct),
                host_iperf3: median_of(&|m| m.host_iperf3_pct),
                host_rest: median_of(&|m| m.host_rest_pct),
                guest_iperf3: median_of(&|m| m.guest_iperf3_pct),
                gbit: Summary::of(&gbit).map(|s| s.median),
                lwps,
            });
        }
    }
    rows
}

fn systems_in(boots: &[BootRecord]) -> Vec<System> {
    let set: BTreeSet<System> = boots.iter().map(|b| b.system).collect();
    set.into_iter().collect()
}

/// The Markdown section.
pub fn render_section(ctx: &ReportContext, boots: &[BootRecord]) -> String {
    let systems = systems_in(boots);
    let both = systems.len() == 2;
    let mut t = String::from("## Network: Spindle against Linux (iperf3)\n\n");
    t.push_str(&format!(
        "Measured {} by `cargo spindle bench net --runs {} --seconds {} --net {}{}{}{}`: {} boot{} per system, alternating, each serving one {} s host → guest and one {} s guest → host TCP test (1 stream); `-smp {}`, `-m {}M`, `-cpu {}`, accelerator {}. Median [min–max], n = tests that produced a result; ratio = Spindle / Linux of the medians (above 1: Spindle faster for throughput, slower for boot).\n\n",
        ctx.date,
        ctx.runs,
        ctx.seconds,
        net_label(ctx.net),
        if ctx.smp != 1 { format!(" --smp {}", ctx.smp) } else { String::new() },
        if ctx.mem_mib != 512 { format!(" --mem {}M", ctx.mem_mib) } else { String::new() },
        ctx.cpu.as_ref().map_or(String::new(), |c| format!(" --cpu {c}")),
        ctx.runs,
        if ctx.runs == 1 { "" } else { "s" },
        ctx.seconds,
        ctx.seconds,
        ctx.smp,
        ctx.mem_mib,
        ctx.cpu_in_use,
        ctx.accel,
    ));
    t.push_str("| measure | Spindle | Linux | Spindle / Linux |\n|---|---|---|---|\n");
    let cell = |system: System, s: Option<Summary>, d: usize, dir: Option<Direction>| {
        if systems.contains(&system) {
            summary_cell(s, d, attempts(boots, system, dir))
        } else {
            "not run".to_string()
        }
    };
    for d in DIRECTIONS {
        let s = throughput(boots, System::Spindle, d);
        let l = throughput(boots, System::Linux, d);
        t.push_str(&format!(
            "| {}, Gbit/s | {} | {} | {} |\n",
            arrow(d),
            cell(System::Spindle, s, 3, Some(d)),
            cell(System::Linux, l, 3, Some(d)),
            if both { ratio_cell(s, l) } else { "—".into() }
        ));
    }
    let s = boot_times(boots, System::Spindle);
    let l = boot_times(boots, System::Linux);
    t.push_str(&format!(
        "| QEMU start → ready, s | {} | {} | {} |\n",
        cell(System::Spindle, s, 3, None),
        cell(System::Linux, l, 3, None),
        if both { ratio_cell(s, l) } else { "—".into() }
    ));
    t.push_str(&noise_line(boots));

    let failures: Vec<String> = boots
        .iter()
        .flat_map(|b| {
            let boot = b
                .ready
                .as_ref()
                .err()
                .map(|e| format!("{} run {}: no ready line: {e}", b.system.label(), b.run));
            let tests = b.tests.iter().filter_map(move |t| {
                t.outcome.as_ref().err().map(|e| {
                    format!(
                        "{} run {}, {}: {}",
                        b.system.label(),
                        b.run,
                        arrow(t.direction),
                        first_line(e)
                    )
                })
            });
            boot.into_iter().chain(tests)
        })
        .collect();
    if !failures.is_empty() {
        t.push_str("\nFailed runs (recorded, not retried):\n\n");
        for f in &failures {
            t.push_str(&format!("- {f}\n"));
        }
    }

    let rows = cpu_rows(boots, &systems, ctx.smp);
    if !rows.is_empty() {
        t.push_str(&format!(
            "\n### CPU during the tests\n\nHost side, % of one host core over the test's wall time (median of the tests): QEMU's threads (`CPU n/TCG` = vCPU, `qemu-system-x86` = the main loop: slirp or tap I/O and virtio-net's backend), the host's iperf3 (its own `host_total`), the rest of the host (all CPUs' busy time minus those two: other processes and kernel work charged to neither; a difference of separately sampled counters, good to about ±2); host busy = % of all {} host CPUs.\n\n",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ));
        t.push_str("| system | direction | n | QEMU threads | QEMU total | host iperf3 | rest of the host | host busy |\n|---|---|---|---|---|---|---|---|\n");
        let pct = |v: Option<f64>| v.map_or("—".to_string(), whole);
        for r in &rows {
            t.push_str(&format!(
                "| {} | {} | {} | {} | {:.0} | {} | {} | {} |\n",
                r.system.label(),
                arrow(r.direction),
                r.n,
                join_split(&r.threads),
                r.total,
                pct(r.host_iperf3),
                pct(r.host_rest),
                pct(r.host_busy)
            ));
        }
        let lwp_rows: Vec<&CpuRow> = rows.iter().filter(|r| r.lwps.is_some()).collect();
        if !lwp_rows.is_empty() {
            t.push_str(&format!(
                "\nSpindle's guest CPU by LWP, % of the test's wall time (one guest CPU = 100, {} CPU{}; median of the tests; LWPs under 0.5 % left out). `cpu_ms` comes from `lwps` on the control channel for every process (before the test, once a second during it, after it), counted at the guest's clock tick. `(kernel-only)` and `(user)` are the iperf process's LWPs: the `vnet0-*` workers and the program's threads; `(pid 0)` is the kernel's process (`idle/N` = CPU N's idle loop, `ctl` = the control channel, which answers these samples), `(pid 1)` housekeeping. \"not attributed\" = the guest's CPUs × wall time minus all of these.\n\n",
                ctx.smp,
                if ctx.smp == 1 { "" } else { "s" }
            ));
            t.push_str("| direction | n | LWPs | not attributed |\n|---|---|---|---|\n");
            for r in lwp_rows {
                let LwpRow { split, rest, n } = r.lwps.as_ref().expect("filtered");
                t.push_str(&format!(
                    "| {} | {} | {} | {:.0} |\n",
                    arrow(r.direction),
                    n,
                    join_split(split),
                    rest
                ));
            }
        }
        t.push_str("\n### Where the time goes (measured, per test, medians)\n\n");
        for r in &rows {
            t.push_str(&where_line(r, ctx.smp));
        }
    }
    let noisy: usize = boots
        .iter()
        .flat_map(|b| &b.tests)
        .filter(|t| t.other_qemus > 0)
        .count();
    t.push_str(&format!(
        "\nMethod: both guests boot with identical QEMU arguments except `-kernel`/`-initrd`/`-append`. Spindle: the release kernel with the `iperf` image as its process (`iperf -s`), ready at `{}`. Linux: the anchor's Debian kernel (vmlinux by PVH) and initramfs (../shared/anchors/linux-guest, iperf3 3.12 in the guest), `lg_mode=server`, ready at `GUEST READY`, which its /init prints once iperf3's port is in LISTEN. The control-channel chardev (COM2) is on both command lines; only Spindle answers on it. In both directions the guest is the iperf3 server and the host's iperf3 ({}) the client: host → guest is `iperf3 -c`, guest → host is `iperf3 -c -R`, so QEMU's arguments (one forward) do not change with the direction and one boot serves both tests. This differs from the anchor's `run.sh`, whose guest → host runs the guest as iperf3 client against a host `iperf3 -s` (slirp's outbound path instead of its inbound forward); its figures are a reference, not this table's. Throughput is iperf3's `end.sum_received` (the receiving side). Per boot: spawn QEMU, wait for the ready line (boot time = spawn → line), 1 s pause, host → guest, 1 s pause, guest → host, kill QEMU. QEMU's thread CPU is utime + stime from /proc/<qemu>/task/*/stat, before and after each test, summed by thread name (`-name bench-net,debug-threads=on`). The guest's own figure is its iperf server's report of its process CPU time over the test (iperf3's `remote_total`): for Linux this includes the kernel's work in iperf3's system calls (not softirq work), for Spindle the process's kernel-only workers. {} Host: {}. QEMU: {}. Accelerator: {} ({}). Network: {}.\n",
        iperf_session::SPINDLE_LISTENING,
        ctx.host_iperf3,
        if noisy > 0 {
            format!("{noisy} test(s) ran while another QEMU process was running on the host.")
        } else {
            "No other QEMU process was running during any test.".to_string()
        },
        ctx.host,
        ctx.qemu,
        ctx.accel,
        ctx.accel_reason,
        match ctx.net {
            IperfNet::User => "QEMU user networking (slirp), the host's iperf3 connects to a forwarded 127.0.0.1 port; the guest is 10.0.2.15/24",
            IperfNet::Tap => "a tap in a private network namespace (host 192.168.100.1/30, guest .2), QEMU and the host's iperf3 inside it; no vhost",
        }
    ));
    t.push_str(&format!(
        "\n- Spindle:\n\n    {}\n\n- Linux:\n\n    {}\n",
        ctx.spindle_command, ctx.linux_command
    ));
    t
}

/// Above this, other work on the host (% of one core) is called noise.
pub const NOISE_PCT: f64 = 10.0;

/// How much other work the host did during the tests.
pub fn noise_line(boots: &[BootRecord]) -> String {
    let rest: Vec<f64> = boots
        .iter()
        .flat_map(|b| &b.tests)
        .filter_map(|t| t.outcome.as_ref().ok()?.host_rest_pct)
        .collect();
    if rest.is_empty() {
        return String::new();
    }
    let noisy: Vec<f64> = rest.iter().copied().filter(|&r| r > NOISE_PCT).collect();
    if noisy.is_empty() {
        format!(
            "\nHost noise: in all {} tests, work other than QEMU and the host's iperf3 took under {NOISE_PCT:.0} % of a host core.\n",
            rest.len()
        )
    } else {
        format!(
            "\nHost noise: in {} of {} tests, work other than QEMU and the host's iperf3 took more than {NOISE_PCT:.0} % of a host core (up to {:.0} %); that work competed with QEMU for the host's CPUs, so those tests' figures may be low.\n",
            noisy.len(),
            rest.len(),
            noisy.iter().copied().fold(0.0, f64::max)
        )
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// One "where the time goes" bullet, from the measured medians only.
fn where_line(r: &CpuRow, smp: u32) -> String {
    let mut s = format!(
        "- {}, {} ({} Gbit/s): QEMU used {:.0} % of a host core",
        r.system.label(),
        arrow(r.direction),
        r.gbit.map_or("—".into(), |g| format!("{g:.3}")),
        r.total
    );
    if !r.threads.is_empty() {
        let top: Vec<String> = r
            .threads
            .iter()
            .filter(|(_, v)| *v >= 1.0)
            .map(|(k, v)| format!("{k} {v:.0} %"))
            .collect();
        s.push_str(&format!(" ({})", top.join(", ")));
    }
    if let Some(g) = r.gbit.filter(|g| *g > 0.0) {
        s.push_str(&format!(
            ", {:.2} host-core-seconds per Gbit",
            r.total / 100.0 / g
        ));
    }
    if let Some(b) = r.host_busy {
        s.push_str(&format!("; the host was {b:.0} % busy"));
        if let (Some(i), Some(rest)) = (r.host_iperf3, r.host_rest) {
            s.push_str(&format!(
                " (its iperf3 {i:.0} %, everything else {} % of a core)",
                whole(rest)
            ));
        }
    }
    if let Some(g) = r.guest_iperf3 {
        s.push_str(&format!(
            ". The guest's iperf server reports its own process CPU as {g:.0} % of the guest's CPU{}",
            if smp == 1 { "" } else { "s" }
        ));
    }
    if let Some(LwpRow { split, rest, .. }) = &r.lwps {
        let sum = |keep: &dyn Fn(&str) -> bool| -> f64 {
            split
                .iter()
                .filter(|(k, _)| keep(k))
                .fold(0.0, |a, (_, v)| a + v)
        };
        let workers: Vec<String> = split
            .iter()
            .filter(|(k, v)| k.ends_with("(kernel-only)") && *v >= 0.5)
            .map(|(k, v)| format!("{} {v:.0} %", k.trim_end_matches(" (kernel-only)")))
            .collect();
        let is_idle = |k: &str| k.starts_with("idle/");
        s.push_str(&format!(
            ". In the guest ({smp} CPU{}): the kernel-only workers {:.0} %{}, the iperf user LWPs {:.0} %, idle {:.0} %, other kernel LWPs {:.0} %, not attributed to an LWP {:.0} %",
            if smp == 1 { "" } else { "s" },
            sum(&|k| k.ends_with("(kernel-only)")),
            if workers.is_empty() {
                String::new()
            } else {
                format!(" ({})", workers.join(", "))
            },
            sum(&|k| k.ends_with("(user)")),
            sum(&is_idle),
            sum(&|k| k.contains("(pid ") && !is_idle(k)),
            rest,
        ));
    }
    s.push_str(".\n");
    s
}

/// Failures with the console's last lines, for the terminal.
pub fn render_failures(boots: &[BootRecord]) -> String {
    let mut out = String::new();
    for b in boots {
        let failed_tests: Vec<&TestRecord> =
            b.tests.iter().filter(|t| t.outcome.is_err()).collect();
        if b.ready.is_ok() && failed_tests.is_empty() {
            continue;
        }
        out.push_str(&format!("== {} run {}: ", b.system.label(), b.run));
        match &b.ready {
            Err(e) => out.push_str(&format!("no ready line: {e}\n")),
            Ok(_) => {
                let list: Vec<String> = failed_tests
                    .iter()
                    .map(|t| {
                        format!(
                            "{}: {}",
                            arrow(t.direction),
                            t.outcome.as_ref().err().map_or("", |e| e.as_str())
                        )
                    })
                    .collect();
                out.push_str(&list.join("; "));
                out.push('\n');
            }
        }
        if let Some(tail) = &b.failure_tail {
            out.push_str("-- console, last lines --\n");
            out.push_str(tail.trim_end());
            out.push('\n');
        }
    }
    out
}

/// Writes the section into BENCHMARKS.md.
pub fn update_benchmarks_md(path: &Path, section: &str) -> Result<()> {
    crate::bench::update_benchmarks_md_section(path, SECTION_BEGIN, SECTION_END, section)
}

/// Every boot and test as measured (for `records.json`).
pub fn records_json(boots: &[BootRecord]) -> Value {
    let boots: Vec<Value> = boots
        .iter()
        .map(|b| {
            let tests: Vec<Value> = b
                .tests
                .iter()
                .map(|t| {
                    let outcome = match &t.outcome {
                        Err(e) => json!({ "error": e }),
                        Ok(m) => json!({
                            "gbit_per_s": m.gbit_per_s,
                            "retransmits": m.retransmits,
                            "wall_s": m.wall_s,
                            "qemu_threads_pct": m.qemu_threads,
                            "host_busy_pct": m.host_busy_pct,
                            "host_iperf3_pct": m.host_iperf3_pct,
                            "host_rest_pct": m.host_rest_pct,
                            "guest_iperf3_pct": m.guest_iperf3_pct,
                            "guest_lwps": match &m.guest_lwps {
                                None => Value::Null,
                                Some(Err(e)) => json!({ "error": e }),
                                Some(Ok(shares)) => shares
                                    .iter()
                                    .map(|s| json!({"label": s.label, "count": s.count, "pct": s.pct}))
                                    .collect(),
                            },
                        }),
                    };
                    json!({
                        "direction": t.direction.label(),
                        "other_qemus": t.other_qemus,
                        "outcome": outcome,
                    })
                })
                .collect();
            json!({
                "system": b.system.label(),
                "run": b.run,
                "ready_s": b.ready.as_ref().ok().map(Duration::as_secs_f64),
                "ready_error": b.ready.as_ref().err(),
                "tests": tests,
            })
        })
        .collect();
    Value::Array(boots)
}
