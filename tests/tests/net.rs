//! `cargo test`'s network suite: boots the `echo` and `http` images with
//! virtio-net (QEMU user networking with forwarded ports, or a raw-frame
//! link over UDP) and drives them from the host, watching the kernel's
//! network workers and rings through the control channel.
//!
//! One guest per group of checks (each TCG boot costs seconds), the groups
//! in parallel (one test each, run by the standard harness's threads);
//! inside a group every check runs and the group reports all failures at
//! once with the console's tail. Every socket has timeouts and every wait
//! a deadline: a guest that stops answering fails a test, never hangs it.
//!
//! Needs the kernel side of docs/network.md (virtio-net, the stack, the
//! Linux socket calls, the `vnet0-rx0`/`vnet0-tx0` workers, `ctl rings`):
//! until it lands every test here fails, saying what was missing (first:
//! no `echo: listening on 0.0.0.0:7777` line).

use spindle_runner::ctl::render::{render_lwps, render_rings};
use spindle_runner::images::{Teardown, parse_process_log};
use spindle_tests::ctl::{
    Checks, Lwp, Stats, find, parse_flood, parse_lwps, parse_ps, parse_stats, prepare, summary,
};
use spindle_tests::host::HostImage;
use spindle_tests::net::cycles::{
    check_cycle_memory, check_stats_back, client_ended, next_run, teardown_summary,
};
use spindle_tests::net::frames::{
    FrameLink, GUEST_IP, GUEST_MAC, HOST_IP, flood_frame, malformed_cleanup, malformed_frames,
    show_ip,
};
use spindle_tests::net::session::{checksum_broken, echo_over_link};
use spindle_tests::net::storm::{check_flood_storm, parse_handler_tids};
use spindle_tests::net::watch::{check_rings_run, check_workers, drop_count, identities};
use spindle_tests::net::{
    ECHO_PORT, EchoEnd, EchoTransfer, HttpConnection, NetBoot, NetGuest, RX_WORKER, STALL,
    TX_WORKER, check_pattern, connect, fill_stream, http_get,
};
use std::collections::BTreeSet;
use std::io::Read;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// The big echo: 100 MB out and the same 100 MB back on one connection.
const ECHO_BYTES: u64 = 100_000_000;
/// The longest the big echo may take (TCG with slirp does 50-150 Mbit/s,
/// so about 10-20 s alone; guests booting in parallel slow it down).
const ECHO_LIMIT: Duration = Duration::from_secs(600);
/// Transfers that must still be flowing while the control channel works.
const BUSY_BYTES: u64 = 64_000_000;
/// SIGKILL cycles per direction (each a run of the image: `respawn`).
const KILL_CYCLES: u32 = 100;
/// Bytes that must have moved in a cycle before the SIGKILL.
const KILL_AFTER_BYTES: u64 = 256 * 1024;
/// Frames in the flood through the raw-frame link.
const FLOOD_FRAMES: u32 = 10_000;
/// Of the flood, at least this many must reach the guest's RX ring (the
/// host drops datagrams QEMU does not read in time).
const FLOOD_MIN_DELIVERED: u64 = 1_000;
/// Of the flood's 3,333 frames that call for an answer (a third: SYNs to
/// a closed port, pings), at least this many must be answered during it
/// (a Linux guest under TCG answers all of them).
const FLOOD_MIN_ANSWERS: u64 = 100;
/// Bytes echoed over a hand-built TCP connection on the raw-frame link.
const LINK_ECHO_BYTES: usize = 50_000;

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Boots `b` and waits for the image's listening line; returns the guest,
/// the line's index and the process's pid.
fn boot_listening(b: &NetBoot) -> Result<(NetGuest, usize, u64), String> {
    let p = prepare()?;
    let mut n = NetGuest::boot(p, b)?;
    let at = n
        .wait_listening(0)
        .map_err(|e| format!("{e}\n{}", n.g.tail()))?;
    let pid = n.pid().map_err(|e| format!("{e}\n{}", n.g.tail()))?;
    Ok((n, at, pid))
}

/// (a) + (c): 100 MB echoed on one connection (both directions at once)
/// with the checksums equal; while it flows, `lwps` shows the two
/// kernel-only workers and `rings` both rings running, their frame and
/// byte counters growing.
#[test]
fn net_echo_100mb_checksummed_with_workers_and_rings() -> Result<(), String> {
    let (mut n, at, pid) = boot_listening(&NetBoot::echo())?;
    let t = EchoTransfer::start(n.service()?, ECHO_BYTES, 0x5eed_0001, STALL)?;
    let mut checks = Checks::default();
    let flowing = t.wait_received(1_000_000, Duration::from_secs(120));
    let r = flowing.clone().and_then(|_| {
        check_workers(&mut n, pid)?;
        let table = render_lwps(&n.g.ok(&format!("lwps {pid}"))?);
        println!("net echo: `ctl lwps {pid}` while the echo flows:\n{table}");
        Ok(())
    });
    checks.check("workers while traffic flows", r);
    let r = flowing.and_then(|_| check_rings_grow(&mut n, pid, &t));
    checks.check("rings run and count", r);
    let r = t.join(ECHO_LIMIT).and_then(|report| {
        report.check_complete()?;
        println!(
            "net echo: {} MB each way in {:.1} s ({:.0} Mbit/s each way)",
            mb(report.received),
            report.elapsed.as_secs_f64(),
            report.mbit_per_s()
        );
        let done = format!("done, {ECHO_BYTES} bytes");
        n.g.wait_line(
            at,
            &format!("`echo: client ... {done}`"),
            |l| l.starts_with("echo: client ") && l.ends_with(&done),
            Duration::from_secs(30),
        )
        .map(drop)
    });
    checks.check("100 MB echo", r);
    checks.finish(&n.g)
}

/// Two readings of `rings` 500 ms apart while `t` flows: RX and TX of
/// `pid` in RUN, no request pending, frames and bytes growing, the worker
/// ids those of the `lwps` workers; the table renders one row per ring.
fn check_rings_grow(n: &mut NetGuest, pid: u64, t: &EchoTransfer) -> Result<(), String> {
    let (rx1, tx1) = n.rx_tx(pid)?;
    std::thread::sleep(Duration::from_millis(500));
    if t.received() >= t.total {
        return Err("the transfer ended before the second reading".into());
    }
    let (rx2, tx2) = n.rx_tx(pid)?;
    for r in [&rx1, &tx1, &rx2, &tx2] {
        if r.state != "RUN" || !r.requests.is_empty() {
            return Err(format!("expected RUN with no request pending: {r:?}"));
        }
    }
    for (a, b) in [(&rx1, &rx2), (&tx1, &tx2)] {
        if b.frames <= a.frames || b.bytes <= a.bytes {
            return Err(format!(
                "{}: frames {} -> {}, bytes {} -> {} in 500 ms of traffic: not growing",
                a.name, a.frames, b.frames, a.bytes, b.bytes
            ));
        }
    }
    let (rxw, txw, _) = check_workers(n, pid)?;
    if rx2.worker != Some(rxw.id) || tx2.worker != Some(txw.id) {
        return Err(format!(
            "the rings' workers {:?}/{:?} are not the LWPs {}/{}",
            rx2.worker, tx2.worker, rxw.id, txw.id
        ));
    }
    let table = render_rings(&n.g.ok("rings")?);
    let rows = table
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(&pid.to_string()))
        .count();
    if rows != 2 {
        return Err(format!("expected 2 rows for pid {pid} in\n{table}"));
    }
    Ok(())
}

/// (b): `/` and `/bytes/1000000` to a host client; keep-alive serves
/// several requests on one connection, `Connection: close` closes it;
/// unknown paths 404, a malformed request 400.
#[test]
fn net_http_serves_a_page_and_a_megabyte() -> Result<(), String> {
    let (n, _, _) = boot_listening(&NetBoot::http())?;
    let mut checks = Checks::default();
    for (name, r) in http_checks(n.service()?) {
        checks.check(name, r);
    }
    checks.finish(&n.g)
}

/// The `http` image's contract, checked from a client at `addr`.
fn http_checks(addr: SocketAddr) -> Vec<(&'static str, Result<(), String>)> {
    let mut out = Vec::new();
    let r = http_get(addr, "/").and_then(|resp| {
        let html = String::from_utf8_lossy(&resp.body);
        let kind = resp.header("content-type").unwrap_or("");
        if resp.status != 200
            || !kind.starts_with("text/html")
            || !html.contains("<title>Spindle</title>")
        {
            return Err(format!("GET / gave {} ({kind}): {html:?}", resp.status));
        }
        Ok(())
    });
    out.push(("GET /", r));
    let r = http_get(addr, "/bytes/1000000").and_then(|resp| {
        if resp.status != 200 || resp.body.len() != 1_000_000 {
            return Err(format!(
                "GET /bytes/1000000 gave {} with {} bytes",
                resp.status,
                resp.body.len()
            ));
        }
        check_pattern(&resp.body)
    });
    out.push(("GET /bytes/1000000", r));
    let r = (|| {
        let mut c = HttpConnection::open(addr, STALL)?;
        let responses = [
            c.get("/bytes/1000", false)?,
            c.get("/no/such/page", false)?,
            c.get("/", false)?,
            c.get("/bytes/70000", true)?,
        ];
        let got: Vec<u16> = responses.iter().map(|r| r.status).collect();
        if got != [200, 404, 200, 200] {
            return Err(format!("four requests on one connection gave {got:?}"));
        }
        check_pattern(&responses[0].body)?;
        check_pattern(&responses[3].body)?;
        if responses[3].body.len() != 70000 {
            return Err(format!(
                "/bytes/70000 gave {} bytes",
                responses[3].body.len()
            ));
        }
        if !c.closed_by_server(Duration::from_secs(10)) {
            return Err("the server kept the connection after `Connection: close`".into());
        }
        Ok(())
    })();
    out.push(("keep-alive then close", r));
    let r = (|| {
        let mut c = HttpConnection::open(addr, STALL)?;
        let resp = c.raw(b"NONSENSE\r\n\r\n")?;
        if resp.status != 400 {
            return Err(format!("a malformed request gave {}", resp.status));
        }
        if !c.closed_by_server(Duration::from_secs(10)) {
            return Err("the connection stayed open after a 400".into());
        }
        Ok(())
    })();
    out.push(("bad request", r));
    out
}

/// (d) + (e): the `echo` image floods itself with 10,000 process-directed
/// signals of five kinds (one `ctl kill -USR2`) while a checked echo
/// flows and short echoes (client threads) come and go: until the flood
/// reports, every sample shows the workers as the same LWPs, kernel-only
/// with every signal held and none pending, not stopped nor in signal
/// code, both rings in `RUN` with no request and the representative a
/// user LWP; the flood sent everything, every real-time signal was
/// handled and every handler ran on a user thread, none on a worker's
/// tid; it ended before the echo, which completes byte-exact
/// (`spindle_tests::net::storm`). Then `pstop` during another echo parks
/// every LWP and freezes both rings' counters for a second; after `prun`
/// the LWPs are the same ids, the workers still kernel-only with every
/// signal held, and that echo completes intact.
#[test]
fn net_signal_storm_and_pstop_during_traffic() -> Result<(), String> {
    let (mut n, _, pid) = boot_listening(&NetBoot::echo())?;
    let mut checks = Checks::default();
    let r = check_flood_storm(&mut n, pid, 0x5eed_1000).map(|s| {
        let f = &s.flood;
        println!(
            "net storm: flood of {} signals in {:.1} s ({} handled: {} of {} real-time, {} of {} \
             standard; {} on user threads), {} samples, {} short echoes, handler tids {} \
             (workers {} and {})",
            f.sent,
            s.elapsed.as_secs_f64(),
            f.handled,
            f.rt_handled,
            f.rt_sent,
            f.std_handled,
            f.std_sent,
            f.on_user_threads,
            s.samples,
            s.churned,
            s.handler_names.join(", "),
            s.worker_tids.0,
            s.worker_tids.1
        );
        println!(
            "net storm: the echo had {:.1} of {:.1} MB back when the flood ended; done in {:.1} s",
            mb(s.received_at_done),
            mb(s.total),
            s.echo_elapsed.as_secs_f64()
        );
    });
    checks.check("signal flood", r);
    let r = check_pstop(&mut n, pid);
    checks.check("pstop/prun", r);
    checks.finish(&n.g)
}

/// The ids listed under `key` in a `pstop` or `prun` reply.
fn reply_ids(v: &serde_json::Value, key: &str) -> Result<BTreeSet<u64>, String> {
    v.get(key)
        .and_then(|a| a.as_array())
        .ok_or_else(|| format!("no `{key}` list in {v}"))?
        .iter()
        .map(|id| id.as_u64().ok_or_else(|| format!("an odd id in {v}")))
        .collect()
}

fn check_pstop(n: &mut NetGuest, pid: u64) -> Result<(), String> {
    let t = EchoTransfer::start(n.service()?, BUSY_BYTES, 0x5eed_0003, STALL)?;
    t.wait_received(2_000_000, Duration::from_secs(120))?;
    let (_, _, before) = check_workers(n, pid)?;
    let stopped = n.g.ok(&format!("pstop {pid}"))?;
    let frozen = (|| {
        let lwps = n.g.lwps(pid)?;
        let running: Vec<&Lwp> = lwps.iter().filter(|l| !l.is_stopped()).collect();
        if !running.is_empty() {
            return Err(format!("after pstop, not parked: {running:?}"));
        }
        if identities(&lwps) != identities(&before) {
            return Err(format!(
                "pstop changed the LWPs: before {}, stopped {}",
                summary(&before),
                summary(&lwps)
            ));
        }
        for name in [RX_WORKER, TX_WORKER] {
            find(&lwps, name)?;
        }
        let (rx1, tx1) = n.rx_tx(pid)?;
        std::thread::sleep(Duration::from_secs(1));
        let (rx2, tx2) = n.rx_tx(pid)?;
        for (a, b) in [(&rx1, &rx2), (&tx1, &tx2)] {
            if (a.frames, a.bytes) != (b.frames, b.bytes) {
                return Err(format!(
                    "{} moved while stopped: frames {} -> {}, bytes {} -> {}",
                    a.name, a.frames, b.frames, a.bytes, b.bytes
                ));
            }
        }
        if t.received() >= t.total {
            return Err("the transfer finished while the process was stopped".into());
        }
        Ok(())
    })();
    // Resume whatever happened, so the transfer can end.
    let resumed = n.g.ok(&format!("prun {pid}"));
    frozen?;
    let resumed = resumed?;
    let resumed_after = (|| {
        // `prun` releases the LWPs; each unparks when it next runs.
        let deadline = Instant::now() + Duration::from_secs(10);
        let (rx, tx, after) = loop {
            let (rx, tx, after) = check_workers(n, pid)?;
            match after.iter().find(|l| l.is_stopped()) {
                None => break (rx, tx, after),
                Some(l) if Instant::now() >= deadline => {
                    return Err(format!("still stopped 10 s after prun: {l:?}"));
                }
                Some(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        if identities(&after) != identities(&before) {
            return Err(format!(
                "the LWPs after prun are not those before pstop: before {}, after {}",
                summary(&before),
                summary(&after)
            ));
        }
        check_rings_run(n, pid, &rx, &tx)?;
        let ids: BTreeSet<u64> = before.iter().map(|l| l.id).collect();
        for (reply, key) in [(&stopped, "stopped"), (&resumed, "running")] {
            if reply_ids(reply, key)? != ids {
                return Err(format!("the `{key}` ids {reply} are not the LWPs {ids:?}"));
            }
        }
        Ok(())
    })();
    println!("net pstop: `pstop` said {stopped}, `prun` said {resumed}");
    let report = t.join(ECHO_LIMIT)?;
    resumed_after?;
    report.check_complete()
}

/// The fallbacks: the `pc` machine (PCI configuration through port I/O,
/// no ECAM) with MSI-X refused on the command line (`net.irq=intx`), so
/// the device interrupts through its INTx line and the I/O APIC. An echo
/// still completes byte-exact, and the rings say `intx` and count
/// interrupts.
#[test]
fn net_intx_on_the_pc_machine_echoes() -> Result<(), String> {
    let b = NetBoot {
        machine: spindle_runner::Machine::Pc,
        smp: 1,
        append: vec!["net.irq=intx"],
        ..NetBoot::echo()
    };
    let (mut n, _, _) = boot_listening(&b)?;
    let t = EchoTransfer::start(n.service()?, 4_000_000, 7, STALL)?;
    t.join(ECHO_LIMIT)
        .and_then(|r| r.check_complete())
        .map_err(|e| format!("echo over INTx: {e}\n{}", n.g.tail()))?;
    let rings = n.g.ok("rings")?;
    let rings = rings
        .get("rings")
        .and_then(|r| r.as_array())
        .ok_or_else(|| format!("rings reply without rings: {rings}"))?;
    if rings.len() != 2 {
        return Err(format!("expected 2 rings, got {rings:?}"));
    }
    let mut interrupts = 0;
    for ring in rings {
        if ring.get("interrupts_via").and_then(|v| v.as_str()) != Some("intx") {
            return Err(format!("a ring not on INTx: {ring}"));
        }
        interrupts += ring.get("interrupts").and_then(|v| v.as_u64()).unwrap_or(0);
    }
    if interrupts == 0 {
        return Err(format!("no INTx interrupt counted: {rings:?}"));
    }
    if !n.g.log().contains("no MSI-X (net.irq=intx); using INTx") {
        return Err(format!(
            "the console does not show the fallback\n{}",
            n.g.tail()
        ));
    }
    Ok(())
}

/// `ctl stats` once every user LWP of `pid` sleeps, one of them in a
/// socket call (the image waits in `accept`; `echo`'s flood thread waits
/// for its signal): a process that has just printed its listening line
/// may still touch a page or two on its way there.
fn settled_stats(n: &mut NetGuest, pid: u64) -> Result<Stats, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, lwps) = parse_lwps(&n.g.ok(&format!("lwps {pid}"))?)?;
        let users: Vec<&Lwp> = lwps.iter().filter(|l| !l.kernel_only).collect();
        let in_socket_call =
            |l: &&Lwp| l.wchan.as_deref().is_some_and(|w| w.contains("net/socket"));
        if users.iter().all(|l| l.state == "sleeping") && users.iter().any(in_socket_call) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "pid {pid}'s LWPs never all slept, one in a socket call: {lwps:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    parse_stats(&n.g.ok("stats")?)
}

/// After the kill cycles (`teardowns` read, `started` when they began,
/// `settled` the stats with run 2 listening, `pid` the last run): prints
/// the teardown summary and compares the stats with the last run
/// listening to run 2's (`check_stats_back`).
fn after_the_cycles(
    n: &mut NetGuest,
    what: &str,
    teardowns: &[Teardown],
    started: Instant,
    settled: Option<Stats>,
    pid: u64,
) -> Result<(), String> {
    println!(
        "{} in {:.1} s",
        teardown_summary(what, teardowns),
        started.elapsed().as_secs_f64()
    );
    let after = settled_stats(n, pid)?;
    let before = settled.ok_or("fewer than 2 cycles")?;
    check_stats_back(what, KILL_CYCLES, before, after).map_err(|e| format!("{e}\n{}", n.g.tail()))
}

/// A kill cycle's failure message: which cycle, what, the console tail.
fn cycle_failure(n: &NetGuest, cycle: u32, e: String) -> String {
    format!("cycle {} of {KILL_CYCLES}: {e}\n{}", cycle + 1, n.g.tail())
}

/// (f), host to guest: `KILL_CYCLES` times, an echo (host sending, guest
/// reading and echoing) is cut by SIGKILL after `KILL_AFTER_BYTES`; the
/// host client sees an error or EOF, never a hang; the kernel reports the
/// death and a teardown with both workers inside, prints its memory
/// lines, `rings` no longer lists the dead pid, and the next run
/// (`respawn`) has its rings in `RUN` and serves again (every cycle:
/// `cycles::next_run`). Memory comes back after every run.
#[test]
fn net_sigkill_mid_echo_respawns() -> Result<(), String> {
    let b = NetBoot {
        respawn: Some(KILL_CYCLES),
        ..NetBoot::echo()
    };
    let (mut n, mut at, mut pid) = boot_listening(&b)?;
    let fail = cycle_failure;
    let (mut settled, mut teardowns) = (None, Vec::new());
    let started = Instant::now();
    for cycle in 0..KILL_CYCLES {
        if cycle == 1 {
            settled = Some(settled_stats(&mut n, pid).map_err(|e| fail(&n, cycle, e))?);
        }
        let t = EchoTransfer::start(n.service()?, 1 << 40, u64::from(cycle), STALL)
            .map_err(|e| fail(&n, cycle, e))?;
        t.wait_received(KILL_AFTER_BYTES, Duration::from_secs(120))
            .map_err(|e| fail(&n, cycle, e))?;
        n.g.ok(&format!("kill -KILL {pid}"))
            .map_err(|e| fail(&n, cycle, e))?;
        let report = t
            .join(STALL + Duration::from_secs(30))
            .map_err(|e| fail(&n, cycle, e))?;
        client_ended(&report.end, report.received, report.total).map_err(|e| fail(&n, cycle, e))?;
        if report.first_mismatch.is_some() {
            return Err(fail(
                &n,
                cycle,
                format!("corrupt echo before the kill: {report:?}"),
            ));
        }
        let (next_at, next, teardown) =
            next_run(&mut n, at, pid).map_err(|e| fail(&n, cycle, e))?;
        (at, pid) = (next_at, next);
        teardowns.push(teardown);
    }
    after_the_cycles(&mut n, "echo", &teardowns, started, settled, pid)?;
    // The last run serves a whole echo.
    let t = EchoTransfer::start(n.service()?, 1_000_000, 99, STALL)?;
    t.join(ECHO_LIMIT)
        .and_then(|r| r.check_complete())
        .map_err(|e| format!("after the cycles: {e}\n{}", n.g.tail()))?;
    check_cycle_memory(&n, KILL_CYCLES).map_err(|e| format!("{e}\n{}", n.g.tail()))
}

/// (f), guest to host: as `net_sigkill_mid_echo_respawns`, with the
/// `http` image streaming `/bytes/2000000000` to the host, cut by SIGKILL
/// after `KILL_AFTER_BYTES` arrived.
#[test]
fn net_sigkill_mid_download_respawns() -> Result<(), String> {
    const HUGE: u64 = 2_000_000_000;
    let b = NetBoot {
        respawn: Some(KILL_CYCLES),
        ..NetBoot::http()
    };
    let (mut n, mut at, mut pid) = boot_listening(&b)?;
    let fail = cycle_failure;
    let (mut settled, mut teardowns) = (None, Vec::new());
    let started = Instant::now();
    for cycle in 0..KILL_CYCLES {
        if cycle == 1 {
            settled = Some(settled_stats(&mut n, pid).map_err(|e| fail(&n, cycle, e))?);
        }
        let mut s = connect(n.service()?, STALL).map_err(|e| fail(&n, cycle, e))?;
        let req = format!("GET /bytes/{HUGE} HTTP/1.1\r\nHost: spindle\r\n\r\n");
        std::io::Write::write_all(&mut s, req.as_bytes())
            .map_err(|e| fail(&n, cycle, format!("sending the request: {e}")))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        let mut killed_at = None;
        let started = Instant::now();
        let end = loop {
            if killed_at.is_none() && got >= KILL_AFTER_BYTES {
                n.g.ok(&format!("kill -KILL {pid}"))
                    .map_err(|e| fail(&n, cycle, e))?;
                killed_at = Some(got);
            }
            match s.read(&mut buf) {
                Ok(0) => break EchoEnd::EarlyEof,
                Ok(k) => got += k as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break EchoEnd::Stalled(format!(
                        "nothing for {:.0} s after {got} bytes",
                        STALL.as_secs_f64()
                    ));
                }
                Err(e) => break EchoEnd::Error(e.kind(), e.to_string()),
            }
            if started.elapsed() > ECHO_LIMIT {
                break EchoEnd::Stalled(format!(
                    "still reading after {:.0} s",
                    ECHO_LIMIT.as_secs_f64()
                ));
            }
        };
        if killed_at.is_none() {
            return Err(fail(
                &n,
                cycle,
                format!("the download ended ({end:?}) after {got} bytes, before the SIGKILL"),
            ));
        }
        client_ended(&end, got, HUGE).map_err(|e| fail(&n, cycle, e))?;
        let (next_at, next, teardown) =
            next_run(&mut n, at, pid).map_err(|e| fail(&n, cycle, e))?;
        (at, pid) = (next_at, next);
        teardowns.push(teardown);
    }
    after_the_cycles(&mut n, "download", &teardowns, started, settled, pid)?;
    let resp = http_get(n.service()?, "/bytes/100000")
        .map_err(|e| format!("after the cycles: {e}\n{}", n.g.tail()))?;
    if resp.status != 200 || resp.body.len() != 100_000 {
        return Err(format!(
            "after the cycles GET /bytes/100000 gave {} with {} bytes\n{}",
            resp.status,
            resp.body.len(),
            n.g.tail()
        ));
    }
    check_cycle_memory(&n, KILL_CYCLES).map_err(|e| format!("{e}\n{}", n.g.tail()))
}

/// (g): through the raw-frame link (`-netdev socket`, the guest at
/// 192.168.76.2): the guest answers ARP, ping and a SYN to the echo port,
/// and echoes `LINK_ECHO_BYTES` over a TCP connection built by hand
/// (`session::echo_over_link`). Then every malformed frame (truncated
/// headers, bad checksums, bogus TCP options, lying lengths, 9000-byte
/// frames), three times each and each followed by an ARP probe: the drop
/// counters (`rings` drops plus `stats` figures mentioning drop) grow by
/// at least one per frame with a broken checksum. Then a flood of 10,000
/// frames: the drops grow again. Afterwards it still answers all three
/// and echoes over a new hand-built connection, the process still runs
/// (the echo image's client line names the connections), and the kernel
/// neither panicked nor faulted.
#[test]
fn net_malformed_frames_leave_the_guest_answering() -> Result<(), String> {
    let b = NetBoot {
        frame_link: true,
        forward: Vec::new(),
        ..NetBoot::echo()
    };
    let (mut n, _, pid) = boot_listening(&b)?;
    let Some(link) = n.link.take() else {
        return Err("no frame link".into());
    };
    let up = |link: &FrameLink, seq: u16, wait: Duration| {
        let mac = link.arp_probe(wait)?;
        if mac != GUEST_MAC {
            return Err(format!(
                "the guest answered ARP with MAC {mac:02x?}, not {GUEST_MAC:02x?}"
            ));
        }
        link.ping(seq, wait)?;
        link.syn_ack(ECHO_PORT, 41000 + seq, wait)
    };
    up(&link, 1, Duration::from_secs(60))
        .and_then(|_| link_echo(&n, &link, 42001))
        .map_err(|e| {
            format!(
                "before any malformed frame, the guest at {} does not serve: {e}\n{}",
                show_ip(GUEST_IP),
                n.g.tail()
            )
        })?;
    let drops_before = drop_count(&mut n).map_err(|e| format!("{e}\n{}", n.g.tail()))?;
    let mut checks = Checks::default();
    let r = (|| {
        for (name, frame) in malformed_frames() {
            for _ in 0..3 {
                link.send(&frame)?;
            }
            link.arp_probe(Duration::from_secs(20))
                .map_err(|e| format!("after `{name}`: {e}"))?;
        }
        for reset in malformed_cleanup() {
            link.send(&reset)?;
        }
        Ok(())
    })();
    checks.check("malformed frames one by one", r);
    // Each frame above was followed by an answered ARP probe: the RX
    // worker has judged them all.
    let drops_malformed = drop_count(&mut n);
    let r = drops_malformed.clone().and_then(|drops| {
        let broken: Vec<&str> = malformed_frames()
            .iter()
            .filter(|(_, f)| checksum_broken(f))
            .map(|(name, _)| *name)
            .collect();
        let want = 3 * broken.len() as u64;
        println!("net malformed: drops {drops_before} before the malformed frames, {drops} after");
        if drops < drops_before + want {
            return Err(format!(
                "the malformed frames raised the drops from {drops_before} to {drops}: want at \
                 least {want} more (3 copies each of {broken:?}, whose checksums do not hold)"
            ));
        }
        Ok(())
    });
    checks.check("drops from the malformed frames", r);
    let r = (|| {
        let (rx0, _) = n.rx_tx(pid)?;
        let answers = link.flood(FLOOD_FRAMES, flood_frame)?;
        up(&link, 2, Duration::from_secs(60)).map_err(|e| format!("after the flood: {e}"))?;
        if answers < FLOOD_MIN_ANSWERS {
            return Err(format!(
                "the guest sent {answers} frames during the flood (RSTs to its SYNs to a \
                 closed port, ping replies; want at least {FLOOD_MIN_ANSWERS})"
            ));
        }
        let (rx1, _) = n.rx_tx(pid)?;
        let delivered = rx1.frames.saturating_sub(rx0.frames);
        if delivered < FLOOD_MIN_DELIVERED {
            return Err(format!(
                "the RX ring counted {delivered} frames during a flood of {FLOOD_FRAMES} (want \
                 at least {FLOOD_MIN_DELIVERED})"
            ));
        }
        // A third of the flood has a broken checksum.
        let (before, drops) = (drops_malformed?, drop_count(&mut n)?);
        println!("net malformed: {delivered} flood frames delivered, drops {before} -> {drops}");
        if drops <= before {
            return Err(format!(
                "the flood ({delivered} frames delivered, a third with broken checksums) \
                 counted no drop: {before} before, {drops} after"
            ));
        }
        Ok(())
    })();
    checks.check("flood", r);
    let r = link_echo(&n, &link, 42002);
    checks.check("echo over the link after the flood", r);
    let r = (|| {
        let procs = parse_ps(&n.g.ok("ps")?)?;
        if !procs.iter().any(|p| p.pid == pid && p.state == "running") {
            return Err(format!("pid {pid} is no longer running: {procs:?}"));
        }
        let log = n.g.log();
        for bad in ["KERNEL PANIC", "KERNEL FAULT"] {
            if log.contains(bad) {
                return Err(format!("the console shows `{bad}`"));
            }
        }
        let ends = parse_process_log(&log).ends;
        if !ends.is_empty() {
            return Err(format!("the process ended: {ends:?}"));
        }
        Ok(())
    })();
    checks.check("still up", r);
    checks.finish(&n.g)
}

/// `LINK_ECHO_BYTES` of the seeded stream echoed over a hand-built TCP
/// connection from `sport`: every byte back in order, and the image's
/// line `echo: client 192.168.76.1:SPORT done, N bytes`.
fn link_echo(n: &NetGuest, link: &FrameLink, sport: u16) -> Result<(), String> {
    let mut data = vec![0u8; LINK_ECHO_BYTES];
    fill_stream(u64::from(sport), 0, &mut data);
    let back = echo_over_link(link, ECHO_PORT, sport, &data, Duration::from_secs(30))
        .map_err(|e| format!("echo over the link from port {sport}: {e}"))?;
    if let Some(i) = (0..data.len()).find(|&i| back.get(i) != Some(&data[i])) {
        return Err(format!(
            "echo over the link from port {sport}: {} bytes back, the first wrong at {i}",
            back.len()
        ));
    }
    let line = format!(
        "echo: client {}:{sport} done, {LINK_ECHO_BYTES} bytes",
        show_ip(HOST_IP)
    );
    n.g.wait_line(
        0,
        &format!("`{line}`"),
        |l| l == line,
        Duration::from_secs(30),
    )
    .map(drop)
}

/// Sends `signal` (`-USR1` ...) to the host process `pid` with kill(1).
fn host_kill(signal: &str, pid: u32) -> Result<(), String> {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .map_err(|e| format!("running kill: {e}"))?;
    if !status.success() {
        return Err(format!("kill {signal} failed: {status}"));
    }
    Ok(())
}

/// The images and the clients agree on the host (no guest): `echo` run
/// natively echoes 20 MB intact through the checked client while SIGUSR1
/// arrives, prints its client and signal lines; with a client connected,
/// its flood passes `Flood::check` with readable handler tids; `http`
/// passes `http_checks`. Checks the test instruments themselves, so a
/// network test failing under Spindle points at the kernel.
#[test]
fn net_images_and_clients_agree_on_the_host() -> Result<(), String> {
    let (mut echo, port) = HostImage::start("echo")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let t = EchoTransfer::start(addr, 20_000_000, 0x5eed_0004, STALL)?;
    t.wait_received(1_000_000, Duration::from_secs(30))?;
    for _ in 0..5 {
        host_kill("-USR1", echo.child.id())?;
    }
    t.join(Duration::from_secs(120))?.check_complete()?;
    echo.wait(|l| l.starts_with("echo: client 127.0.0.1:") && l.ends_with("done, 20000000 bytes"))?;
    let line = echo.wait(|l| l.starts_with("echo: SIGUSR1 handled "))?;
    if line == "echo: SIGUSR1 handled 0 times" {
        return Err(line);
    }
    // An idle client's thread is the one that may take the flood.
    let idle = connect(addr, STALL)?;
    host_kill("-USR2", echo.child.id())?;
    let line = echo.wait(|l| l.starts_with("echo: flood done "))?;
    parse_flood(&line)
        .ok_or_else(|| format!("unreadable {line:?}"))?
        .check()?;
    let line = echo.wait(|l| l.starts_with("echo: flood handler tids "))?;
    match parse_handler_tids(&line) {
        Some(h) if !h.tids.is_empty() && h.untracked == 0 => println!("net host: {line}"),
        _ => {
            return Err(format!(
                "odd handler tids {line:?} (seen {:?})",
                echo.seen()
            ));
        }
    }
    drop(idle);
    let (_http, port) = HostImage::start("http")?;
    let failed: Vec<String> = http_checks(SocketAddr::from(([127, 0, 0, 1], port)))
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e}")))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n"))
    }
}
