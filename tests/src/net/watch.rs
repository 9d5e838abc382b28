//! What the `net` tests watch through the control channel while traffic
//! flows: the network workers as `lwps` shows them, the rings as `rings`
//! shows them, the process's representative in `ps`, and the drop
//! counters.
//!
//! Theory: each helper reads fresh replies and judges them strictly; a
//! failure names the LWP or ring and what it showed, so a kernel that
//! lets a signal reach a worker, swaps a worker, or flips a ring out of
//! `RUN` fails with the evidence.

use super::{NetGuest, RX_WORKER, Ring, TX_WORKER};
use crate::ctl::{ALL_HELD, Lwp, find, parse_lwps, parse_ps, summary};
use spindle_runner::ctl::render::render_lwps;
use std::collections::BTreeSet;

/// The network workers of `pid`: exactly one LWP named each, kernel-only,
/// every signal held, none pending of its own, flagged `K` in the
/// rendered table; no user LWP has a worker's name. Returns `(rx, tx)`
/// and every LWP.
pub fn check_workers(n: &mut NetGuest, pid: u64) -> Result<(Lwp, Lwp, Vec<Lwp>), String> {
    let v = n.g.ok(&format!("lwps {pid}"))?;
    let (got, lwps) = parse_lwps(&v)?;
    if got != pid {
        return Err(format!("`lwps {pid}` answered for pid {got}"));
    }
    let table = render_lwps(&v);
    let mut out = Vec::new();
    for name in [RX_WORKER, TX_WORKER] {
        let w = find(&lwps, name)?;
        if !w.kernel_only || w.hold_mask.to_ascii_lowercase() != ALL_HELD {
            return Err(format!(
                "{name}: expected kernel_only and hold_mask {ALL_HELD}: {w:?}"
            ));
        }
        if w.pending != Some(0) {
            return Err(format!("{name}: expected no signal pending (0x0): {w:?}"));
        }
        let row = table
            .lines()
            .find(|r| r.split_whitespace().nth(2) == Some(name))
            .ok_or_else(|| format!("no row for {name} in\n{table}"))?;
        let flags = row.split_whitespace().nth(4).unwrap_or("");
        if !flags.split(',').any(|f| f == "K") {
            return Err(format!("{name}'s row lacks the K flag: `{row}`"));
        }
        out.push(w.clone());
    }
    if let Some(l) = lwps
        .iter()
        .find(|l| !l.kernel_only && l.name.starts_with("vnet"))
    {
        return Err(format!("a user LWP has a worker's name: {l:?}"));
    }
    let tx = out.pop().ok_or("unreachable")?;
    let rx = out.pop().ok_or("unreachable")?;
    Ok((rx, tx, lwps))
}

/// Both rings of `pid` in `RUN` with no request pending, served by the
/// workers `rx` and `tx`; returns them.
pub fn check_rings_run(
    n: &mut NetGuest,
    pid: u64,
    rx: &Lwp,
    tx: &Lwp,
) -> Result<(Ring, Ring), String> {
    let (rr, tr) = n.rx_tx(pid)?;
    for (r, w) in [(&rr, rx), (&tr, tx)] {
        if r.state != "RUN" || !r.requests.is_empty() {
            return Err(format!("expected RUN with no request pending: {r:?}"));
        }
        if r.worker != Some(w.id) {
            return Err(format!(
                "ring {} is served by LWP {:?}, not by its worker {} ({})",
                r.name, r.worker, w.id, w.name
            ));
        }
    }
    Ok((rr, tr))
}

/// One look during a signal storm against the workers seen before it
/// (`rx0`, `tx0`): the same LWPs, still kernel-only with every signal
/// held, not in signal code, not stopped; both rings in `RUN` with no
/// request, served by them; `ps` shows `pid` running with a
/// representative (the signal target) that is a user LWP, never a worker.
pub fn storm_sample(n: &mut NetGuest, pid: u64, rx0: &Lwp, tx0: &Lwp) -> Result<(), String> {
    let (rx, tx, lwps) = check_workers(n, pid)?;
    for (w, first) in [(&rx, rx0), (&tx, tx0)] {
        if w.id != first.id || w.tid != first.tid {
            return Err(format!(
                "{} changed during the storm: {first:?} -> {w:?}",
                w.name
            ));
        }
        if let Some(wchan) = w.wchan.as_deref().filter(|c| c.contains("signal")) {
            return Err(format!(
                "{} waits in signal code ({wchan}) during the storm: {w:?}",
                w.name
            ));
        }
        if w.is_stopped() {
            return Err(format!("{} is stopped during the storm: {w:?}", w.name));
        }
    }
    check_rings_run(n, pid, &rx, &tx)?;
    let procs = parse_ps(&n.g.ok("ps")?)?;
    let p = procs
        .iter()
        .find(|p| p.pid == pid)
        .ok_or_else(|| format!("pid {pid} is not in ps: {procs:?}"))?;
    if p.state != "running" {
        return Err(format!("pid {pid} is {} during the storm: {p:?}", p.state));
    }
    match p.representative {
        Some(r) if r == rx.id || r == tx.id => Err(format!(
            "the representative (signal target) of pid {pid} is the worker {r}: {}",
            summary(&lwps)
        )),
        Some(r) => representative_is_user(n, pid, r, &lwps),
        None => Err(format!("pid {pid} has no representative: {p:?}")),
    }
}

/// `ps` named `r` the representative of `pid`, after `before` was read:
/// `r` is a user LWP in `before` or in a reading after `ps`, or (the
/// image's short-lived client threads come and go between two readings)
/// an LWP newer than every one in `before` that is gone again, which can
/// only be one the image made: the kernel-only ones are the two workers,
/// which the caller has ruled out.
fn representative_is_user(
    n: &mut NetGuest,
    pid: u64,
    r: u64,
    before: &[Lwp],
) -> Result<(), String> {
    let user = |lwps: &[Lwp]| lwps.iter().find(|l| l.id == r).map(|l| !l.kernel_only);
    let after = n.g.lwps(pid)?;
    let newest = before.iter().map(|l| l.id).max().unwrap_or(0);
    match (user(before), user(&after)) {
        (Some(true), _) | (None, Some(true)) => Ok(()),
        (None, None) if r > newest => Ok(()),
        _ => Err(format!(
            "the representative {r} of pid {pid} is no user LWP of it: before `ps` {}; after {}",
            summary(before),
            summary(&after)
        )),
    }
}

/// `(id, tid, name, kernel_only)` of every LWP: what must not change
/// across a stop and a resume.
pub fn identities(lwps: &[Lwp]) -> BTreeSet<(u64, i64, String, bool)> {
    lwps.iter()
        .map(|l| (l.id, l.tid, l.name.clone(), l.kernel_only))
        .collect()
}

/// The sum of the drop counters: every ring's `drops` plus every `stats`
/// figure whose name mentions `drop`.
pub fn drop_count(n: &mut NetGuest) -> Result<u64, String> {
    let rings: u64 = n.rings()?.iter().map(|r| r.drops).sum();
    let stats = n.g.ok("stats")?;
    let extra: u64 = stats
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.contains("drop"))
                .filter_map(|(_, v)| v.as_u64())
                .sum()
        })
        .unwrap_or(0);
    Ok(rings + extra)
}
