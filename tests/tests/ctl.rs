//! `cargo test`'s control-channel suite: boots the `target` image (with
//! `test.kworkers=2`: two kernel-only LWPs sleeping in its process) and
//! drives the guest's COM2 directly with `spindle_runner::ctl`.
//!
//! One guest per group of checks (each TCG boot costs seconds), the
//! groups in parallel (one test each, run by the standard harness's
//! threads). Inside a group every check runs and the group reports all
//! the failures at once with the console's tail.
//!
//! Needs the kernel side of docs/control-channel.md and images/target:
//! until they land, every test here fails, saying what was missing.

use spindle_runner::ctl::render::render_lwps;
use spindle_runner::ctl::{Event, GCORE_TIMEOUT, Reply};
use spindle_runner::images::{ProcessEnd, parse_process_log};
use spindle_tests::ctl::{
    ALL_HELD, Checks, CtlGuest, KWORKERS, Lwp, TargetBoot, USER_THREADS, check_core_header, find,
    flood_done, gdb_batch, gdb_on_core, ids, names, parse_ps, parse_pstack, parse_stats, prepare,
};
use spindle_tests::images::HEAP_SLACK_BYTES;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Frames a process's page tables may differ by between two runs of the
/// same program (random placement). A leaked LWP costs more than this in
/// kernel stack alone, and the console's exact before/after figures catch
/// any leak of a whole run.
const ASLR_FRAME_SLACK: u64 = 8;

/// The functions the three named user threads wait or spin in.
const WAITS: [(&str, &str); 3] = [
    ("spinner", "spin_forever"),
    ("pauser", "wait_in_pause"),
    ("sleeper", "wait_in_futex"),
];

fn user(lwps: &[Lwp]) -> Vec<&Lwp> {
    lwps.iter().filter(|l| !l.kernel_only).collect()
}

/// A fault no handler takes ends the process with a core, sent on the
/// channel as an event, that gdb opens: the faulting thread first with its
/// signal and fault address, every user LWP a thread, the kernel-only LWPs
/// absent.
#[test]
fn ctl_fatal_fault_sends_a_core_gdb_reads() -> Result<(), String> {
    let p = prepare()?;
    let boot = TargetBoot {
        image: Some(("signals", vec!["fault".into(), "segv".into()])),
        ..TargetBoot::default()
    };
    let mut g = CtlGuest::boot(p, &boot)?;
    let (at, line) = g.wait_line(
        0,
        "the fault",
        |l| l.contains("signals: faulting at 0x"),
        g.timeout(),
    )?;
    let address = line
        .rsplit("0x")
        .next()
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| format!("no address in {line:?}"))?;
    let event = g
        .ctl
        .wait_event(|e| matches!(e, Event::Core(_)), g.timeout())
        .map_err(|e| format!("waiting for the core: {e:#}"))?;
    let Some(Event::Core(core)) = event else {
        return Err(format!("no core event arrived\n{}", g.tail()));
    };
    g.wait_line(
        at,
        "the death report",
        |l| l.contains("killed by signal 11 (core dumped)"),
        g.timeout(),
    )?;
    if core.signal != 11 {
        return Err(format!(
            "core event for signal {}, expected 11",
            core.signal
        ));
    }
    check_core_header(&core.data)?;
    let path = g.scratch().join("core.signals");
    std::fs::write(&path, &core.data).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let image = spindle_runner::images::image_artifact("signals");
    let commands = [
        "info threads",
        "thread apply all bt",
        "p $_siginfo.si_signo",
        "p/x $_siginfo._sifields._sigfault.si_addr",
        "info registers rip",
    ];
    let Some(report) = gdb_batch(&image, &path, &commands)? else {
        println!("ctl fatal fault: skipping the gdb part: gdb is not installed");
        return Ok(());
    };
    let out = &report.output;
    let wanted = [
        "Program terminated with signal SIGSEGV".to_string(),
        "$1 = 11".to_string(),
        format!("$2 = {address:#x}"),
        // The faulting thread comes first, stopped in the faulting function.
        "[Current thread is 1 (LWP".to_string(),
        "rip            0x".to_string(),
        "<signals::faults::".to_string(),
    ];
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|w| !out.contains(w.as_str()))
        .collect();
    // Two user threads (main waiting to join, the faulter); the two
    // kernel-only LWPs are not in the core.
    if !missing.is_empty() || report.threads != 2 {
        return Err(format!(
            "gdb on the fault core: missing {missing:?}, {} threads (expected 2):\n{out}",
            report.threads
        ));
    }
    Ok(())
}

/// ps, lwps, pstack, gcore (and gdb on the core), then bad input.
#[test]
fn ctl_inspects_a_live_process() -> Result<(), String> {
    let p = prepare()?;
    let mut g = CtlGuest::boot(p, &TargetBoot::default())?;
    let (_, pid) = g.wait_ready(0)?;
    let lwps = match g.settled_lwps(pid) {
        Ok(l) => l,
        Err(e) => return Err(format!("{e}\n{}", g.tail())),
    };
    let mut checks = Checks::default();
    let r = check_ps(&mut g, pid, &lwps);
    checks.check("ps", r);
    let r = check_lwps(&mut g, pid, &lwps);
    checks.check("lwps", r);
    let r = check_pstack(&mut g, pid, &lwps);
    checks.check("pstack", r);
    let r = check_gcore(&mut g, pid, &lwps, &p.image);
    checks.check("gcore", r);
    let r = check_bad_input(&mut g, pid);
    checks.check("bad input", r);
    let r = check_events(&mut g);
    checks.check("events", r);
    checks.finish(&g)
}

/// A signal flood leaves the kernel-only LWPs alone (same switches, state
/// and wait channel, nothing pending of their own); pstop parks every
/// LWP and prun releases the same ones.
#[test]
fn ctl_floods_stops_and_resumes_a_process() -> Result<(), String> {
    let p = prepare()?;
    let mut g = CtlGuest::boot(p, &TargetBoot::default())?;
    let (_, pid) = g.wait_ready(0)?;
    if let Err(e) = g.settled_lwps(pid) {
        return Err(format!("{e}\n{}", g.tail()));
    }
    let mut checks = Checks::default();
    let r = check_flood(&mut g, pid);
    checks.check("flood", r);
    let r = check_pstop_prun(&mut g, pid);
    checks.check("pstop/prun", r);
    checks.finish(&g)
}

/// `kill -KILL` ends the process (twice, with `respawn=2`), and the
/// memory comes back.
#[test]
fn ctl_kill_ends_the_process_and_memory_returns() -> Result<(), String> {
    let p = prepare()?;
    let boot = TargetBoot {
        respawn: Some(2),
        ..TargetBoot::default()
    };
    let mut g = CtlGuest::boot(p, &boot)?;
    let mut checks = Checks::default();
    let r = check_kill_and_memory(&mut g);
    checks.check("kill and memory", r);
    checks.finish(&g)
}

/// How long `hello`'s `nanosleep` and `poll` ask to wait.
const CALL_MS: u64 = 4000;

/// A stop and a continue (`pstop`, `prun`) in the middle of a `nanosleep`
/// and of a `poll` with a timeout: neither ends early (no handler ran, so
/// no `EINTR`) nor waits its whole time again after `prun`; both go on to
/// their first deadline (`restart_syscall`), as on Linux.
#[test]
fn ctl_stop_and_continue_keep_sleep_and_poll_deadlines() -> Result<(), String> {
    let p = prepare()?;
    let ms = CALL_MS.to_string();
    let args = ["--sleep-ms", &ms, "--poll-ms", &ms].map(String::from);
    let boot = TargetBoot {
        image: Some(("hello", args.to_vec())),
        kworkers: 0,
        ..TargetBoot::default()
    };
    let mut g = CtlGuest::boot(p, &boot)?;
    let mut checks = Checks::default();
    let mut at = 0;
    for (before, after) in [("sleeping", "slept"), ("polling", "polled")] {
        let r = stop_in_the_middle(&mut g, &mut at, before, after);
        checks.check(after, r);
    }
    checks.finish(&g)
}

/// Waits for `{before} CALL_MS ms`, stops the process 0.5 s into the call
/// for 1 s, and judges `{after} CALL_MS ms (measured M ms, returned R)`:
/// R is 0, M at least `CALL_MS`, and M short of what a call started again
/// with its whole time after `prun` would take (`prun`'s time + `CALL_MS`,
/// less 0.5 s for the console's delay).
fn stop_in_the_middle(
    g: &mut CtlGuest,
    at: &mut usize,
    before: &str,
    after: &str,
) -> Result<(), String> {
    let started = format!("{before} {CALL_MS} ms");
    let (i, _) = g.wait_line(*at, &started, |l| l == started, g.timeout())?;
    let began = Instant::now();
    let pid = parse_ps(&g.ok("ps")?)?
        .iter()
        .find(|p| p.name == "hello")
        .map(|p| p.pid)
        .ok_or("no hello process in ps")?;
    std::thread::sleep(Duration::from_millis(500));
    g.ok(&format!("pstop {pid}"))?;
    let held: Vec<Lwp> = g.lwps(pid)?;
    if held.iter().any(|l| !l.is_stopped()) {
        return Err(format!("after pstop, not every LWP is parked: {held:?}"));
    }
    std::thread::sleep(Duration::from_millis(1000));
    g.ok(&format!("prun {pid}"))?;
    let resumed_ms = began.elapsed().as_millis() as u64;
    let ended = format!("{after} {CALL_MS} ms (measured ");
    let (j, line) = g.wait_line(i, &ended, |l| l.starts_with(&ended), g.timeout())?;
    *at = j + 1;
    let (measured, returned) = line
        .strip_prefix(&ended)
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|rest| rest.split_once(" ms, returned "))
        .and_then(|(m, r)| Some((m.parse::<u64>().ok()?, r.parse::<i64>().ok()?)))
        .ok_or_else(|| format!("unreadable line {line:?}"))?;
    if returned != 0 {
        return Err(format!(
            "the call returned {returned} after the stop: {line:?}"
        ));
    }
    if measured < CALL_MS {
        return Err(format!("the call ended early: {line:?}"));
    }
    let again = resumed_ms + CALL_MS - 500;
    if measured >= again {
        return Err(format!(
            "the call took {measured} ms with prun {resumed_ms} ms in: it waited its whole \
             time again ({line:?})"
        ));
    }
    println!("{after}: {measured} ms with a stop from 0.5 s to {resumed_ms} ms");
    Ok(())
}

fn check_ps(g: &mut CtlGuest, pid: u64, lwps: &[Lwp]) -> Result<(), String> {
    let procs = parse_ps(&g.ok("ps")?)?;
    if !procs.iter().any(|p| p.pid == 0) {
        return Err(format!("no proc0 (pid 0) in ps: {procs:?}"));
    }
    let me = procs
        .iter()
        .find(|p| p.pid == pid)
        .ok_or_else(|| format!("no pid {pid} in ps: {procs:?}"))?;
    if !me.name.contains("target") || me.state != "running" {
        return Err(format!("expected target, running; ps says {me:?}"));
    }
    if me.lwps != lwps.len() as u64 {
        return Err(format!(
            "ps counts {} LWPs, lwps lists {}",
            me.lwps,
            lwps.len()
        ));
    }
    representative_is_user(me.representative, lwps, "with pauser and sleeper blocked")
}

fn representative_is_user(rep: Option<u64>, lwps: &[Lwp], when: &str) -> Result<(), String> {
    let rep = rep.ok_or_else(|| format!("no representative LWP {when}"))?;
    match lwps.iter().find(|l| l.id == rep) {
        Some(l) if !l.kernel_only && !l.name.starts_with("kworker") => Ok(()),
        Some(l) => Err(format!(
            "the representative {when} is {l:?}, not a user LWP"
        )),
        None => Err(format!("the representative {rep} {when} is not in lwps")),
    }
}

fn check_lwps(g: &mut CtlGuest, pid: u64, lwps: &[Lwp]) -> Result<(), String> {
    // Without an argument: the guest process.
    let v = g.ok("lwps")?;
    let (default_pid, _) = spindle_tests::ctl::parse_lwps(&v)?;
    if default_pid != pid {
        return Err(format!(
            "plain `lwps` answered for pid {default_pid}, not {pid}"
        ));
    }
    let all_ids = ids(lwps, |_| true);
    if all_ids.len() != lwps.len() {
        return Err(format!("LWP ids repeat: {lwps:?}"));
    }
    let kernel: Vec<&Lwp> = lwps.iter().filter(|l| l.kernel_only).collect();
    if kernel.len() != KWORKERS.len() {
        return Err(format!(
            "{} kernel-only LWPs, expected {KWORKERS:?}: {:?}",
            kernel.len(),
            names(lwps)
        ));
    }
    for name in KWORKERS {
        let w = find(lwps, name)?;
        if !w.kernel_only || w.hold_mask.to_ascii_lowercase() != ALL_HELD {
            return Err(format!(
                "{name}: expected kernel_only and hold_mask {ALL_HELD}: {w:?}"
            ));
        }
    }
    let users = user(lwps);
    let user_names: BTreeSet<&str> = users.iter().map(|l| l.name.as_str()).collect();
    if users.len() != USER_THREADS.len() + 1
        || USER_THREADS.iter().any(|n| !user_names.contains(n))
        || user_names.iter().any(|n| n.starts_with("kworker"))
    {
        return Err(format!(
            "expected 4 user LWPs (main, {USER_THREADS:?}); got {user_names:?}"
        ));
    }
    // The rendering marks exactly the kernel-only rows with K.
    let table = render_lwps(&v);
    for l in lwps {
        let row = table
            .lines()
            .find(|r| r.split_whitespace().nth(2) == Some(l.name.as_str()))
            .ok_or_else(|| format!("no row for {} in\n{table}", l.name))?;
        let flags = row.split_whitespace().nth(4).unwrap_or("");
        if flags.split(',').any(|f| f == "K") != l.kernel_only {
            return Err(format!("the K flag is wrong in the row `{row}`"));
        }
    }
    Ok(())
}

fn check_pstack(g: &mut CtlGuest, pid: u64, lwps: &[Lwp]) -> Result<(), String> {
    let (got, threads) = parse_pstack(&g.ok(&format!("pstack {pid}"))?)?;
    if got != pid {
        return Err(format!("pstack answered for pid {got}"));
    }
    let stacked: BTreeSet<u64> = threads.iter().map(|t| t.id).collect();
    let users = ids(lwps, |l| !l.kernel_only);
    if stacked != users || threads.len() != users.len() {
        return Err(format!(
            "pstack threads {stacked:?}, but the user LWPs are {users:?}"
        ));
    }
    for (name, function) in WAITS {
        let lwp = find(lwps, name)?;
        let t = threads
            .iter()
            .find(|t| t.id == lwp.id)
            .ok_or("unreachable")?;
        if t.tid != lwp.tid || !t.has(function) {
            return Err(format!(
                "{name} (LWP {}, tid {}): expected a frame in {function}; got {t:?}",
                lwp.id, lwp.tid
            ));
        }
    }
    Ok(())
}

fn check_gcore(
    g: &mut CtlGuest,
    pid: u64,
    lwps: &[Lwp],
    image: &std::path::Path,
) -> Result<(), String> {
    let command = format!("gcore {pid}");
    let reply = g
        .ctl
        .request_timeout(&command, GCORE_TIMEOUT)
        .map_err(|e| format!("`{command}`: no reply: {e:#}"))?;
    let (value, core) = match reply {
        Reply::Ok {
            value,
            payload: Some(core),
        } => (value, core),
        other => {
            return Err(format!(
                "`{command}`: expected ok with a core, got {other:?}"
            ));
        }
    };
    if value["pid"] != pid || value["signal"] != 0 || value["bytes"] != core.len() as u64 {
        return Err(format!(
            "`{command}` said {value} for a core of {} bytes",
            core.len()
        ));
    }
    check_core_header(&core)?;
    let path = g.scratch().join(format!("core.target.{pid}"));
    std::fs::write(&path, &core).map_err(|e| format!("writing {}: {e}", path.display()))?;
    // The process runs on after its core was taken.
    let procs = parse_ps(&g.ok("ps")?)?;
    match procs.iter().find(|p| p.pid == pid) {
        Some(p) if p.state == "running" => {}
        other => return Err(format!("after gcore the process is {other:?}")),
    }
    let report = match gdb_on_core(image, &path)? {
        Some(r) => r,
        None => {
            println!("ctl gcore: skipping the gdb part: gdb is not installed");
            return Ok(());
        }
    };
    let users = user(lwps).len();
    if report.threads != users {
        return Err(format!(
            "gdb shows {} threads in the core, the process has {users} user LWPs:\n{}",
            report.threads, report.output
        ));
    }
    let missing: Vec<&str> = WAITS
        .iter()
        .map(|(_, f)| *f)
        .filter(|f| !report.output.contains(f))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "gdb's backtraces lack {missing:?}:\n{}",
            report.output
        ));
    }
    Ok(())
}

fn check_bad_input(g: &mut CtlGuest, pid: u64) -> Result<(), String> {
    let long = "x".repeat(300);
    let bad = [
        "frobnicate",
        "lwps abc",
        "pstop 999",
        "kill -FOO 1",
        long.as_str(),
        "pstop 0",
        "gcore 0",
        "kill -9 0",
        "pstack",
    ];
    let mut problems = Vec::new();
    for command in bad {
        if let Err(e) = g.guest_error(command) {
            problems.push(e);
        }
    }
    // Still in step and answering.
    match g.ok("ps").and_then(|v| parse_ps(&v)) {
        Ok(procs) if procs.iter().any(|p| p.pid == pid) => {}
        Ok(procs) => problems.push(format!(
            "after the bad input, ps lacks pid {pid}: {procs:?}"
        )),
        Err(e) => problems.push(format!("after the bad input: {e}")),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The events seen so far are well formed (a hello, if it came before the
/// connection, says version 1; nothing dumped core).
fn check_events(g: &mut CtlGuest) -> Result<(), String> {
    g.ctl
        .poll_events(Duration::from_millis(100))
        .map_err(|e| format!("{e:#}"))?;
    for e in g.ctl.take_events() {
        match e {
            spindle_runner::ctl::Event::Hello { version: 1 } => {}
            other => return Err(format!("unexpected event {other:?}")),
        }
    }
    Ok(())
}

fn check_flood(g: &mut CtlGuest, pid: u64) -> Result<(), String> {
    let before = g.lwps(pid)?;
    let mark = g.line_count();
    let sent = g.ok(&format!("kill -USR2 {pid}"))?;
    if sent["pid"] != pid || sent["signal"] != 12 {
        return Err(format!("`kill -USR2 {pid}` said {sent}"));
    }
    flood_done(g, "target", mark, g.timeout())?;
    let after = g.lwps(pid)?;
    for name in KWORKERS {
        let (b, a) = (find(&before, name)?, find(&after, name)?);
        let (Some(sb), Some(sa)) = (b.switches, a.switches) else {
            return Err(format!("lwps reports no `switches` for {name}"));
        };
        if sb != sa || b.state != a.state || b.wchan != a.wchan {
            return Err(format!(
                "{name} moved during the flood: before {b:?}, after {a:?}"
            ));
        }
        if a.pending != Some(0) {
            return Err(format!("{name} has signals pending after the flood: {a:?}"));
        }
    }
    if ids(&before, |_| true) != ids(&after, |_| true) {
        return Err(format!(
            "the LWPs changed: before {:?}, after {:?}",
            names(&before),
            names(&after)
        ));
    }
    Ok(())
}

fn check_pstop_prun(g: &mut CtlGuest, pid: u64) -> Result<(), String> {
    let all = ids(&g.lwps(pid)?, |_| true);
    let v = g.ok(&format!("pstop {pid}"))?;
    let stopped = id_list(&v, "stopped")?;
    if stopped != all {
        return Err(format!("pstop stopped {stopped:?}; the LWPs are {all:?}"));
    }
    let parked = g.lwps(pid)?;
    let running: Vec<&Lwp> = parked.iter().filter(|l| !l.is_stopped()).collect();
    if !running.is_empty() || ids(&parked, |_| true) != all {
        return Err(format!("after pstop, not parked: {running:?}"));
    }
    let procs = parse_ps(&g.ok("ps")?)?;
    let me = procs
        .iter()
        .find(|p| p.pid == pid)
        .ok_or("the process left ps")?;
    if me.state != "stopped" {
        return Err(format!("after pstop ps says {me:?}"));
    }
    representative_is_user(me.representative, &parked, "while stopped")?;
    let spun = find(&parked, "spinner")?.cpu_ms;
    std::thread::sleep(Duration::from_secs(1));
    let later = find(&g.lwps(pid)?, "spinner")?.cpu_ms;
    if later != spun {
        return Err(format!(
            "the stopped spinner's CPU time went from {spun} ms to {later} ms"
        ));
    }
    let v = g.ok(&format!("prun {pid}"))?;
    let resumed = id_list(&v, "running")?;
    if resumed != stopped {
        return Err(format!(
            "prun resumed {resumed:?}; pstop stopped {stopped:?}"
        ));
    }
    // prun releases the parked LWPs; each clears its mark when it next
    // runs, which on a loaded host takes a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let again = loop {
        let again = g.lwps(pid)?;
        let parked = again.iter().any(|l| l.is_stopped());
        if !parked || std::time::Instant::now() >= deadline {
            break again;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let still: Vec<&Lwp> = again.iter().filter(|l| l.is_stopped()).collect();
    if !still.is_empty() || ids(&again, |_| true) != all {
        return Err(format!("after prun, still parked after 10 s: {still:?}"));
    }
    let procs = parse_ps(&g.ok("ps")?)?;
    match procs.iter().find(|p| p.pid == pid) {
        Some(p) if p.state == "running" => {}
        other => return Err(format!("after prun ps says {other:?}")),
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = find(&g.lwps(pid)?, "spinner")?.cpu_ms;
        if now > later {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the resumed spinner's CPU time stayed at {now} ms for 20 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn id_list(v: &serde_json::Value, key: &str) -> Result<BTreeSet<u64>, String> {
    v.get(key)
        .and_then(|l| l.as_array())
        .ok_or_else(|| format!("no `{key}` list in {v}"))?
        .iter()
        .map(|i| {
            i.as_u64()
                .ok_or_else(|| format!("an id that is not a number in {v}"))
        })
        .collect()
}

/// Kills the running process with SIGKILL and waits for the next run;
/// returns where the next run's ready line is and its pid.
fn kill_and_wait(g: &mut CtlGuest, pid: u64, from: usize) -> Result<(usize, u64), String> {
    let v = g.ok(&format!("kill -KILL {pid}"))?;
    if v["pid"] != pid || v["signal"] != 9 {
        return Err(format!("`kill -KILL {pid}` said {v}"));
    }
    let end = format!("spindle: process target (pid {pid}) killed by signal 9");
    let (at, line) = g.wait_line(from, &format!("`{end}`"), |l| l.contains(&end), g.timeout())?;
    if line.contains("core dumped") {
        return Err(format!("SIGKILL dumped core: {line:?}"));
    }
    let (ready_at, next) = g.wait_ready(at)?;
    if next == pid {
        return Err(format!("the next run has the same pid {pid}"));
    }
    Ok((ready_at, next))
}

/// Run 1 is killed (it also fills the kernel's caches); then run 2. The
/// kernel measures `stats` as it does its `memory before process` /
/// `memory after exit` lines (callouts held still, caches trimmed), so:
/// after run 2's death the memory is back to its figure before run 2
/// (frames exact, heap within `HEAP_SLACK_BYTES`); and `stats`, taken in
/// runs 2 and 3 at the same point of the program, shows the same LWPs and
/// processes, the same heap (within the slack) and the same frames in use
/// over the line before each run (within `ASLR_FRAME_SLACK`: the image,
/// stacks and mappings land at random addresses, so the page tables that
/// map them differ by a frame or two between runs).
fn check_kill_and_memory(g: &mut CtlGuest) -> Result<(), String> {
    let (at1, p1) = g.wait_ready(0)?;
    let (at2, p2) = kill_and_wait(g, p1, at1)?;
    let lwps2 = g.settled_lwps(p2)?;
    let s2 = parse_stats(&g.ok("stats")?)?;
    let procs2 = parse_ps(&g.ok("ps")?)?;
    let (_, p3) = kill_and_wait(g, p2, at2)?;
    g.settled_lwps(p3)?;
    let s3 = parse_stats(&g.ok("stats")?)?;

    let log = parse_process_log(&g.log());
    let killed = |pid: u64| {
        log.ends.iter().any(|e| {
            matches!(e, ProcessEnd::Killed { pid: p, signal, .. } if *p == pid && signal == "9")
        })
    };
    if !killed(p1) || !killed(p2) || log.core_dumped(p1) || log.core_dumped(p2) {
        return Err(format!("the ends on the console: {:?}", log.ends));
    }
    let (Some(before2), Some(after2), Some(before3)) = (
        log.memory_before.get(1),
        log.memory_after.get(1),
        log.memory_before.get(2),
    ) else {
        return Err(format!(
            "expected memory lines before runs 1-3 and after runs 1-2: before {:?}, after {:?}",
            log.memory_before, log.memory_after
        ));
    };
    if after2.free_frames != before2.free_frames
        || after2.heap_bytes.abs_diff(before2.heap_bytes) > HEAP_SLACK_BYTES
    {
        return Err(format!(
            "memory before run 2 {before2:?}, after its SIGKILL {after2:?}: not back"
        ));
    }
    if s2.processes != procs2.len() as u64
        || s2.lwps < lwps2.len() as u64
        || s2.free_frames >= before2.free_frames
    {
        return Err(format!(
            "stats in run 2 {s2:?}: expected the {} processes of ps, at least the {} LWPs of \
             the process, and fewer free frames than the {} before it",
            procs2.len(),
            lwps2.len(),
            before2.free_frames
        ));
    }
    let cost2 = before2.free_frames - s2.free_frames;
    let cost3 = before3.free_frames.saturating_sub(s3.free_frames);
    if cost3.abs_diff(cost2) > ASLR_FRAME_SLACK
        || (s3.lwps, s3.processes) != (s2.lwps, s2.processes)
        || s3.heap_bytes.abs_diff(s2.heap_bytes) > HEAP_SLACK_BYTES
    {
        return Err(format!(
            "run 2 and run 3 differ at the same point: stats {s2:?} then {s3:?}; frames in \
             use by the process {cost2} then {cost3}"
        ));
    }
    Ok(())
}
