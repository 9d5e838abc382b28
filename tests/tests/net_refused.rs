//! A ring worker refused by the LWP limit (`kern.maxlwp`), end to end: the
//! `http` image's first network call fails with `EAGAIN`, the process
//! ends normally, no worker is left inside it, and every frame is back.
//!
//! The limit counts every LWP in the system. A first guest measures how
//! many a listening `http` guest has (`ctl stats`): the kernel's (the
//! same in every guest here: each has its control channel), the image's
//! main thread and the two workers. Before the image's first
//! network call, then, `C = lwps - 2` LWPs exist. The attach opens the
//! device on an LWP of its own (gone again before the workers are made),
//! then creates the TX worker, then the RX worker: `kern.maxlwp = C + 1`
//! refuses the TX worker and `C + 2` the RX one (the kernel names the
//! ring it refused); `C + 3` lets the image listen, so the figures are
//! exact.

use spindle_runner::images::{ProcessEnd, parse_process_log};
use spindle_tests::ctl::{parse_stats, prepare};
use spindle_tests::net::{NetBoot, NetGuest};

/// The port `http` listens on.
const PORT: u16 = 8080;

/// `http` with `kern.maxlwp=limit` (none: no limit), booted with its
/// control channel like every guest here, so the kernel's LWPs are the
/// same in each.
fn boot(limit: Option<u64>) -> Result<NetGuest, String> {
    let p = prepare()?;
    let append = limit
        .map(|limit| -> &'static str { Box::leak(format!("kern.maxlwp={limit}").into_boxed_str()) })
        .into_iter()
        .collect();
    NetGuest::boot(
        p,
        &NetBoot {
            append,
            ..NetBoot::http()
        },
    )
}

/// The run ended as a refused attach must: the kernel names the refused
/// `ring`, the listen failed with `EAGAIN`, the process exited with
/// status 1, its teardown found no worker inside, and the free frames
/// are back.
fn judge_refused(n: &NetGuest, ring: &str) -> Result<(), String> {
    let end = "spindle: memory after exit";
    n.g.wait_line(0, end, |l| l.starts_with(end), n.g.timeout())?;
    let log = n.g.log();
    let named = format!("net: {ring}: the worker could not be created (EAGAIN)");
    if !log.contains(&named) {
        return Err(format!("no `{named}` line"));
    }
    let refused =
        format!("http: cannot listen on 0.0.0.0:{PORT}: Resource temporarily unavailable");
    if !log.lines().any(|l| l.starts_with(&refused)) {
        return Err(format!("no `{refused}` line"));
    }
    let process = parse_process_log(&log);
    match process.ends.as_slice() {
        [ProcessEnd::Exited { status: 1, .. }] => {}
        other => return Err(format!("expected one exit with status 1, saw {other:?}")),
    }
    match process.teardowns.as_slice() {
        [t] if t.workers == 0 => {}
        other => return Err(format!("expected a teardown with no worker, saw {other:?}")),
    }
    match (process.memory_before.first(), process.memory_after.first()) {
        (Some(before), Some(after)) if before.free_frames == after.free_frames => Ok(()),
        (before, after) => Err(format!(
            "frames not back: before {before:?}, after {after:?}"
        )),
    }
}

#[test]
fn net_worker_refused_by_the_lwp_limit_fails_the_first_call() -> Result<(), String> {
    let mut n = boot(None)?;
    n.wait_listening(0)
        .map_err(|e| format!("{e}\n{}", n.g.tail()))?;
    let lwps = parse_stats(&n.g.ok("stats")?)?.lwps;
    drop(n);
    let before_first_call = lwps
        .checked_sub(2)
        .ok_or_else(|| format!("a listening http guest has only {lwps} LWPs"))?;
    for (ring, extra) in [("vnet0-tx0", 1), ("vnet0-rx0", 2)] {
        let limit = before_first_call + extra;
        let n = boot(Some(limit))?;
        judge_refused(&n, ring).map_err(|e| format!("kern.maxlwp={limit}: {e}\n{}", n.g.tail()))?;
        println!(
            "kern.maxlwp={limit}: {ring}'s worker refused, the listen failed with EAGAIN, frames back"
        );
    }
    // One more LWP and the image listens: the limits above were exact.
    let limit = before_first_call + 3;
    let n = boot(Some(limit))?;
    n.wait_listening(0)
        .map_err(|e| format!("kern.maxlwp={limit}: {e}\n{}", n.g.tail()))?;
    println!("kern.maxlwp={limit}: http listens ({lwps} LWPs with it listening)");
    Ok(())
}
