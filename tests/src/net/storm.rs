//! The signal storm of the `net` tests: the `echo` image's flood (10,000
//! process-directed signals of five kinds, sent by the process to itself:
//! `image_support::flood`) while a checked echo flows, the workers, rings
//! and representative sampled until the flood reports.
//!
//! Theory: the flood runs inside the guest, so the storm goes as fast as
//! the kernel delivers; the host only starts it (one `ctl kill -USR2`) and
//! watches. The flood must end while the echo still flows (fewer bytes
//! back than its total when the flood's line appears), pass
//! [`Flood::check`], and its handlers' tids must include no kernel-only
//! LWP's; at every sample the workers are the same kernel-only LWPs with
//! every signal held and none pending; the echo comes back byte-exact.

use super::watch::{check_workers, storm_sample};
use super::{EchoTransfer, NetGuest, STALL};
use crate::ctl::{Flood, Lwp, flood_done, summary};
use std::time::{Duration, Instant};

/// Bytes each way of the echo that flows during the flood: enough to
/// outlast it (TCG moves 5-20 MB/s; the flood takes a few seconds).
pub const FLOOD_ECHO_BYTES: u64 = 64_000_000;
/// Bytes of each short echo started, one after another, while the flood
/// runs: client threads come and go during it.
const CHURN_BYTES: u64 = 200_000;
/// The flood's line must come within this long of the `kill -USR2`.
const FLOOD_WAIT: Duration = Duration::from_secs(60);
/// The rest of the echo must end within this long.
const ECHO_WAIT: Duration = Duration::from_secs(300);

/// `echo: flood handler tids T1,T2,... untracked U`: the distinct tids
/// the flood's handlers ran on, and the runs no slot was left for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerTids {
    pub tids: Vec<i64>,
    pub untracked: u64,
}

pub fn parse_handler_tids(line: &str) -> Option<HandlerTids> {
    let key = ": flood handler tids ";
    let rest = &line[line.find(key)? + key.len()..];
    let (list, untracked) = rest.split_once("untracked ")?;
    let tids = match list.trim() {
        "" => Vec::new(),
        list => list
            .split(',')
            .map(|t| t.parse().ok())
            .collect::<Option<Vec<i64>>>()?,
    };
    Some(HandlerTids {
        tids,
        untracked: untracked.trim().parse().ok()?,
    })
}

/// The kernel-only LWPs among `lwps` that a handler ran on.
pub fn kernel_handlers<'a>(h: &HandlerTids, lwps: &'a [Lwp]) -> Vec<&'a Lwp> {
    lwps.iter()
        .filter(|l| l.kernel_only && h.tids.contains(&l.tid))
        .collect()
}

/// What a flood storm showed.
#[derive(Debug)]
pub struct FloodStorm {
    pub flood: Flood,
    pub handlers: HandlerTids,
    /// Handler tids with the name of their LWP (`?` if it is gone).
    pub handler_names: Vec<String>,
    /// The workers' tids (RX, TX).
    pub worker_tids: (i64, i64),
    /// From the `kill -USR2` to the flood's line.
    pub elapsed: Duration,
    pub samples: u32,
    /// Short echoes (each a client thread) started and ended meanwhile.
    pub churned: u32,
    /// Bytes back of the echo when the flood's line appeared, of its
    /// total.
    pub received_at_done: u64,
    pub total: u64,
    /// The whole echo.
    pub echo_elapsed: Duration,
}

/// Starts a checked echo of [`FLOOD_ECHO_BYTES`] (stream `seed`) and,
/// once it flows, the flood of `pid` (an `echo` process); samples with
/// [`storm_sample`] until the flood's line, at least once; then judges
/// the flood, its handler tids and the echo (module top).
pub fn check_flood_storm(n: &mut NetGuest, pid: u64, seed: u64) -> Result<FloodStorm, String> {
    let t = EchoTransfer::start(n.service()?, FLOOD_ECHO_BYTES, seed, STALL)?;
    t.wait_received(1_000_000, Duration::from_secs(120))?;
    let (rx0, tx0, _) = check_workers(n, pid)?;
    let mark = n.g.line_count();
    let started = Instant::now();
    let v = n.g.ok(&format!("kill -USR2 {pid}"))?;
    if v["pid"] != pid || v["signal"] != 12 {
        return Err(format!("`kill -USR2 {pid}` said {v}"));
    }
    let is_done = |l: &str| l.starts_with("echo: flood done ");
    let (mut samples, mut churned) = (0u32, 0u32);
    let mut churn = EchoTransfer::start(n.service()?, CHURN_BYTES, seed + 1, STALL)?;
    loop {
        if churn.received() >= churn.total {
            churn
                .join(STALL)?
                .check_complete()
                .map_err(|e| format!("short echo {} during the flood: {e}", churned + 1))?;
            churned += 1;
            churn = EchoTransfer::start(n.service()?, CHURN_BYTES, seed + 1, STALL)?;
        }
        storm_sample(n, pid, &rx0, &tx0)
            .map_err(|e| format!("sample {} of the flood: {e}", samples + 1))?;
        samples += 1;
        if n.g.wait_line(mark, "", is_done, Duration::ZERO).is_ok() {
            break;
        }
        if started.elapsed() > FLOOD_WAIT {
            return Err(format!(
                "no `echo: flood done` line within {:.0} s of `kill -USR2`",
                FLOOD_WAIT.as_secs_f64()
            ));
        }
    }
    let (elapsed, received_at_done) = (started.elapsed(), t.received());
    let (at, flood) = flood_done(&n.g, "echo", mark, Duration::ZERO)?;
    let (_, line) = n.g.wait_line(
        at,
        "`echo: flood handler tids ...`",
        |l| l.starts_with("echo: flood handler tids "),
        Duration::from_secs(10),
    )?;
    let handlers =
        parse_handler_tids(&line).ok_or_else(|| format!("unreadable tids line {line:?}"))?;
    storm_sample(n, pid, &rx0, &tx0).map_err(|e| format!("after the flood: {e}"))?;
    let lwps = n.g.lwps(pid)?;
    if handlers.tids.is_empty() || handlers.untracked != 0 {
        return Err(format!("the handler tids are incomplete: {line:?}"));
    }
    for w in [&rx0, &tx0] {
        if handlers.tids.contains(&w.tid) {
            return Err(format!(
                "a flood handler ran on {} (tid {}): {line:?}",
                w.name, w.tid
            ));
        }
    }
    let kernel = kernel_handlers(&handlers, &lwps);
    if !kernel.is_empty() {
        return Err(format!(
            "flood handlers ran on kernel-only LWPs: {kernel:?}"
        ));
    }
    if received_at_done >= t.total {
        return Err(format!(
            "the echo of {} bytes had ended before the flood did ({:.1} s): the flood did \
             not run during traffic",
            t.total,
            elapsed.as_secs_f64()
        ));
    }
    churn
        .join(STALL)?
        .check_complete()
        .map_err(|e| format!("the last short echo of the flood: {e}"))?;
    churned += 1;
    let total = t.total;
    let report = t.join(ECHO_WAIT)?;
    report
        .check_complete()
        .map_err(|e| format!("the echo during the flood: {e}"))?;
    let handler_names = handlers
        .tids
        .iter()
        .map(|tid| {
            let name = lwps.iter().find(|l| l.tid == *tid).map_or("?", |l| &l.name);
            format!("{tid} ({name})")
        })
        .collect();
    if n.pid()? != pid {
        return Err(format!(
            "the process changed during the flood: {}",
            summary(&lwps)
        ));
    }
    Ok(FloodStorm {
        flood,
        handlers,
        handler_names,
        worker_tids: (rx0.tid, tx0.tid),
        elapsed,
        samples,
        churned,
        received_at_done,
        total,
        echo_elapsed: report.elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lwp(tid: i64, kernel_only: bool) -> Lwp {
        Lwp {
            id: tid as u64,
            tid,
            name: format!("l{tid}"),
            state: "running".into(),
            kernel_only,
            flags: Vec::new(),
            cpu_ms: 0,
            hold_mask: "0x0".into(),
            pending: Some(0),
            wchan: None,
            switches: None,
            parked: None,
        }
    }

    #[test]
    fn handler_tids_parse_strictly() {
        let h = parse_handler_tids("echo: flood handler tids 3,17 untracked 0").unwrap();
        assert_eq!(h.tids, [3, 17]);
        assert_eq!(h.untracked, 0);
        let none = parse_handler_tids("echo: flood handler tids  untracked 2").unwrap();
        assert_eq!((none.tids.len(), none.untracked), (0, 2));
        assert_eq!(
            parse_handler_tids("echo: flood handler tids 3,x untracked 0"),
            None
        );
        assert_eq!(parse_handler_tids("echo: flood handler tids 3"), None);
        assert_eq!(parse_handler_tids("echo: flood done sent 1"), None);
    }

    #[test]
    fn handlers_on_kernel_lwps_are_found() {
        let lwps = [lwp(3, false), lwp(4, true), lwp(5, true)];
        let h = parse_handler_tids("echo: flood handler tids 3,5 untracked 0").unwrap();
        let k: Vec<i64> = kernel_handlers(&h, &lwps).iter().map(|l| l.tid).collect();
        assert_eq!(k, [5]);
        let user_only = parse_handler_tids("echo: flood handler tids 3 untracked 0").unwrap();
        assert!(kernel_handlers(&user_only, &lwps).is_empty());
    }
}
