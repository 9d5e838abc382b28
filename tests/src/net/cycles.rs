//! The SIGKILL cycles of the `net` tests (a network image run again and
//! again with `respawn`, each run killed mid-transfer): how one cycle's
//! end is judged, from the host client, the kernel's console lines and
//! `ctl rings`, and how the memory of all cycles is judged at the end.
//!
//! Theory: the kernel says what its teardown did (`killed by signal 9`,
//! then `teardown of pid N: W kernel-only workers inside at exit ...`),
//! and the control channel shows what is left; a cycle passes only when
//! both agree with the viona model: the workers were inside at the exit,
//! the last of them left before the resources were freed, the dead pid's
//! rings are gone and the next run's rings run.

use super::{EchoEnd, NetGuest, RX_WORKER, TX_WORKER};
use crate::ctl::Stats;
use crate::images::HEAP_SLACK_BYTES;
use spindle_runner::images::{ProcessEnd, Teardown, parse_process_log};
use std::time::{Duration, Instant};

/// The longest a killed process's teardown may take, exit's start to
/// resources freed (TCG on a loaded host: a generous bound, still finite).
pub const TEARDOWN_LIMIT_US: u64 = 10_000_000;
/// How far the free frames of two live runs, each idle and listening, may
/// differ: two runs of the same image were seen 1 frame apart either way
/// (and stable so within a run, rings identical), while the figures
/// between runs (`check_cycle_memory`) agree exactly. A frame lost per
/// cycle would show 100 apart.
pub const LIVE_FRAME_SLACK: u64 = 2;
/// How long the next run's rings may take to reach `RUN` after its
/// listening line.
const RUN_WAIT: Duration = Duration::from_secs(10);

/// One SIGKILL cycle's outcome on the host side: the client ended with an
/// error or EOF (never a stall), having moved this many bytes.
pub fn client_ended(end: &EchoEnd, moved: u64, total: u64) -> Result<(), String> {
    match end {
        EchoEnd::EarlyEof | EchoEnd::Error(..) => Ok(()),
        EchoEnd::Complete => Err(format!("all {total} bytes came back despite the SIGKILL")),
        EchoEnd::Stalled(why) => Err(format!(
            "the host client hung after the SIGKILL ({why}, {moved} bytes moved): the dying \
             process's connections must be reset or closed"
        )),
    }
}

/// Waits for the kernel's line that the image (pid) was killed by
/// SIGKILL; returns its index.
pub fn wait_killed(n: &NetGuest, from: usize, pid: u64) -> Result<usize, String> {
    let end = format!(
        "spindle: process {} (pid {pid}) killed by signal 9",
        n.image
    );
    let (at, line) = n.g.wait_line(
        from,
        &format!("`{end}`"),
        |l| l.contains(&end),
        n.g.timeout(),
    )?;
    if line.contains("core dumped") {
        return Err(format!("SIGKILL dumped core: {line:?}"));
    }
    Ok(at)
}

/// Waits for the kernel's teardown line of `pid` (at `from` or later)
/// and judges it: both network workers were inside at the exit, the last
/// LWP left no later than the resources were freed, and that took at most
/// `TEARDOWN_LIMIT_US`. Returns the line's index and its figures.
pub fn wait_teardown(n: &NetGuest, from: usize, pid: u64) -> Result<(usize, Teardown), String> {
    let head = format!("spindle: teardown of pid {pid}: ");
    let (at, line) = n.g.wait_line(
        from,
        &format!("`{head}W kernel-only workers inside at exit, ...`"),
        |l| l.contains(&head),
        n.g.timeout(),
    )?;
    let t = parse_process_log(&line)
        .teardowns
        .first()
        .copied()
        .ok_or_else(|| format!("the teardown line does not parse: {line:?}"))?;
    let workers = [RX_WORKER, TX_WORKER].len() as u64;
    if t.pid != pid || t.workers != workers {
        return Err(format!(
            "pid {pid} had {} kernel-only workers inside at exit, expected {workers} \
             ({RX_WORKER}, {TX_WORKER}): {line:?}",
            t.workers
        ));
    }
    if t.last_lwp_gone_us > t.freed_us {
        return Err(format!(
            "pid {pid}'s resources were freed {} us after exit began, before its last LWP left \
             ({} us): {line:?}",
            t.freed_us, t.last_lwp_gone_us
        ));
    }
    if t.freed_us > TEARDOWN_LIMIT_US {
        return Err(format!(
            "pid {pid}'s teardown took {} us (limit {TEARDOWN_LIMIT_US}): {line:?}",
            t.freed_us
        ));
    }
    Ok((at, t))
}

/// `rings` after the death of `dead` and the start of `next`: nothing of
/// `dead` is listed, and `next`'s two rings reach `RUN` with no request
/// pending and a worker each (within `RUN_WAIT`).
pub fn check_rings_moved_on(n: &mut NetGuest, dead: u64, next: u64) -> Result<(), String> {
    let deadline = Instant::now() + RUN_WAIT;
    loop {
        let rings = n.rings()?;
        if let Some(r) = rings.iter().find(|r| r.pid == dead) {
            return Err(format!(
                "`rings` still lists a ring of the dead pid {dead}: {r:?}"
            ));
        }
        let (rx, tx) = n.rx_tx(next)?;
        let running = [&rx, &tx]
            .iter()
            .all(|r| r.state == "RUN" && r.requests.is_empty() && r.worker.is_some());
        if running {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the rings of the next run (pid {next}) are not both RUN with a worker and no \
                 request {:.0} s after it listened: {rx:?} {tx:?}",
                RUN_WAIT.as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After a SIGKILL of `pid` (console lines from `at` on): the kernel
/// reports the death and a teardown with both workers inside
/// (`wait_teardown`), the next run (`respawn`) listens with another pid,
/// and `check_rings_moved_on`. Returns where the next run's listening
/// line is, its pid, and the teardown's figures.
pub fn next_run(n: &mut NetGuest, at: usize, pid: u64) -> Result<(usize, u64, Teardown), String> {
    let killed = wait_killed(n, at, pid)?;
    let (_, teardown) = wait_teardown(n, killed, pid)?;
    let at = n.wait_listening(killed + 1)?;
    let next = n.pid()?;
    if next == pid {
        return Err(format!("the next run has the same pid {pid}"));
    }
    check_rings_moved_on(n, pid, next)?;
    Ok((at, next, teardown))
}

/// The teardowns of the cycles, for the record: how many, the slowest.
pub fn teardown_summary(what: &str, all: &[Teardown]) -> String {
    let slowest_gone = all.iter().map(|t| t.last_lwp_gone_us).max().unwrap_or(0);
    let slowest_freed = all.iter().map(|t| t.freed_us).max().unwrap_or(0);
    format!(
        "{what}: {} teardowns, each with {} workers inside; last LWP gone after at most {} us, \
         resources freed after at most {} us",
        all.len(),
        [RX_WORKER, TX_WORKER].len(),
        slowest_gone,
        slowest_freed
    )
}

/// `ctl stats` with run 2 listening (`before`) against the same with the
/// last run listening (both idle, the device attached, its workers
/// asleep, `after` read the same way): the same LWPs and processes, the
/// frames within `LIVE_FRAME_SLACK` and the heap within `HEAP_SLACK_BYTES`.
/// Prints both.
pub fn check_stats_back(
    what: &str,
    cycles: u32,
    before: Stats,
    after: Stats,
) -> Result<(), String> {
    println!("{what}: stats with run 2 listening {before:?}");
    println!("{what}: stats with run {} listening {after:?}", cycles + 1);
    let same = before.lwps == after.lwps
        && before.processes == after.processes
        && before.free_frames.abs_diff(after.free_frames) <= LIVE_FRAME_SLACK
        && before.heap_bytes.abs_diff(after.heap_bytes) <= HEAP_SLACK_BYTES;
    if same {
        Ok(())
    } else {
        Err(format!(
            "{what}: stats not back after {cycles} kill cycles: {before:?} before, {after:?} \
             after (frames may differ by {LIVE_FRAME_SLACK}, the heap by {HEAP_SLACK_BYTES})"
        ))
    }
}

/// After the cycles: every run killed by 9 (no core), a memory line
/// before each run and after each killed one, a teardown line with both
/// workers for each, and from run 2 on the frames exactly back after each
/// run and the heap within `HEAP_SLACK_BYTES`, without growth over the
/// runs.
pub fn check_cycle_memory(n: &NetGuest, cycles: u32) -> Result<(), String> {
    let log = parse_process_log(&n.g.log());
    let cycles = cycles as usize;
    let killed = log
        .ends
        .iter()
        .filter(|e| matches!(e, ProcessEnd::Killed { signal, .. } if signal == "9"))
        .count();
    if killed != cycles || log.ends.len() != cycles || !log.dumped_core.is_empty() {
        return Err(format!(
            "expected {cycles} runs killed by signal 9 without a core: ends {:?}",
            log.ends
        ));
    }
    let workers = [RX_WORKER, TX_WORKER].len() as u64;
    if log.teardowns.len() != cycles || log.teardowns.iter().any(|t| t.workers != workers) {
        return Err(format!(
            "expected {cycles} teardown lines with {workers} workers each: {:?}",
            log.teardowns
        ));
    }
    let (before, after) = (&log.memory_before, &log.memory_after);
    if before.len() < cycles + 1 || after.len() != cycles {
        return Err(format!(
            "expected {} `memory before process` and {cycles} `memory after exit` lines, saw \
             {} and {}",
            cycles + 1,
            before.len(),
            after.len()
        ));
    }
    for run in 1..cycles {
        let (b, a) = (before[run], after[run]);
        if a.free_frames != b.free_frames || a.heap_bytes.abs_diff(b.heap_bytes) > HEAP_SLACK_BYTES
        {
            return Err(format!(
                "run {}: memory before {b:?}, after its SIGKILL {a:?}: not back",
                run + 1
            ));
        }
    }
    if cycles >= 2 {
        let (settled, last) = (after[1].heap_bytes, after[cycles - 1].heap_bytes);
        println!(
            "memory after run 2: {:?}; after run {cycles}: {:?}",
            after[1],
            after[cycles - 1]
        );
        if last > settled + HEAP_SLACK_BYTES {
            return Err(format!(
                "heap after run {cycles} is {last} bytes, run 2 left {settled}: the heap grows"
            ));
        }
    }
    Ok(())
}
