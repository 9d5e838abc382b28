//! `cargo test`'s iperf suite: the `iperf` image in Spindle against the
//! host's real `iperf3` (3.12), in both roles, over QEMU user networking.
//!
//! - `iperf_guest_server_*`: one guest serving (`iperf -s`, respawned
//!   once): host `iperf3 -c` for 3 s host -> guest, guest -> host (`-R`)
//!   and with `-P 4`; malformed control traffic (a short cookie, garbage
//!   JSON, a close right after the cookie) each get an `iperf: error:`
//!   line and the next real client is served; a SIGKILL in the middle of
//!   a test makes the host's iperf3 fail (never hang), the kernel reports
//!   the teardown with both network workers gone, and the respawned
//!   server serves again; its own end returns every frame.
//! - `iperf_guest_client_*`: the guest as client (`iperf -c 10.0.2.2`)
//!   against a host `iperf3 -s -1`: `-P 4`, `-R`, `--bidir`, one boot each.
//!
//! Every wait has a deadline; a guest that stops answering fails a test.

use serde_json::Value;
use spindle_runner::iperf::{Direction, HostTest, parse_report};
use spindle_runner::iperf_session::run_host_iperf3;
use spindle_runner::process_log::parse_process_log;
use spindle_tests::ctl::{Checks, prepare};
use spindle_tests::net::{NetBoot, NetGuest, STALL, free_tcp_port};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const IPERF_PORT: u16 = 5201;
const LISTENING: &str = "iperf: server listening on 0.0.0.0:5201";
/// A host iperf3 test may take this long beyond its own length (TCG,
/// guests booting in parallel).
const SLACK: Duration = Duration::from_secs(60);

/// `iperf: done peer=.. mode=.. streams=N sent=B received=B seconds=S`.
#[derive(Debug, Clone, PartialEq)]
struct Done {
    mode: String,
    streams: u64,
    sent: u64,
    received: u64,
}

fn parse_done(line: &str) -> Option<Done> {
    let rest = &line[line.find("iperf: done ")? + "iperf: done ".len()..];
    let field = |key: &str| {
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    };
    Some(Done {
        mode: field("mode")?.to_string(),
        streams: field("streams")?.parse().ok()?,
        sent: field("sent")?.parse().ok()?,
        received: field("received")?.parse().ok()?,
    })
}

fn iperf_boot(args: &[&str], forward: bool, respawn: Option<u32>) -> NetBoot {
    NetBoot {
        image: "iperf",
        args: args.iter().map(|s| s.to_string()).collect(),
        port: IPERF_PORT,
        smp: 1,
        mem_mib: 256,
        respawn,
        forward: if forward { vec![IPERF_PORT] } else { vec![] },
        ..NetBoot::echo()
    }
}

/// Waits for the server's listening line at `from` or later.
fn wait_listening(n: &NetGuest, from: usize) -> Result<usize, String> {
    n.g.wait_line(
        from,
        &format!("`{LISTENING}`"),
        |l| l.contains(LISTENING),
        n.g.timeout(),
    )
    .map(|(i, _)| i)
}

/// The next `iperf: done` line at `from` or later: (index, figures).
fn wait_done(n: &NetGuest, from: usize) -> Result<(usize, Done), String> {
    let (i, line) = n.g.wait_line(
        from,
        "an `iperf: done` line",
        |l| l.contains("iperf: done ") || l.contains("iperf: error: "),
        STALL,
    )?;
    parse_done(&line)
        .map(|d| (i, d))
        .ok_or_else(|| format!("the guest said `{line}` instead of `iperf: done ...`"))
}

fn host_test(
    addr: SocketAddr,
    test: &HostTest,
) -> Result<(Value, spindle_runner::iperf::Report), String> {
    let mut cmd = Command::new("iperf3");
    cmd.args(test.iperf3_args(&addr.ip().to_string(), addr.port()));
    let limit = Duration::from_secs(u64::from(test.seconds)) + SLACK;
    let raw = run_host_iperf3(cmd, limit, |_| {}).map_err(|e| format!("{e:#}"))?;
    let report = parse_report(test, &raw).map_err(|e| format!("{e:#}"))?;
    Ok((raw, report))
}

/// One host-client test against the guest server; the guest's `done`
/// line must agree with iperf3's byte counts.
fn served(
    n: &NetGuest,
    from: &mut usize,
    direction: Direction,
    parallel: u32,
) -> Result<String, String> {
    let test = HostTest {
        direction,
        seconds: 3,
        parallel,
    };
    let (_, report) = host_test(n.service()?, &test)?;
    let (i, done) = wait_done(n, *from)?;
    *from = i + 1;
    let (want_mode, bytes_ok, rate) = match direction {
        Direction::HostToGuest => {
            let r = report
                .host_to_guest
                .clone()
                .ok_or("no host -> guest rate")?;
            ("receive", done.received == r.bytes, r)
        }
        Direction::GuestToHost => {
            let r = report
                .guest_to_host
                .clone()
                .ok_or("no guest -> host rate")?;
            // The host received at most what the guest sent.
            ("send", done.sent >= r.bytes && r.bytes > 0, r)
        }
        Direction::Bidir => return Err("not used here".into()),
    };
    if done.mode != want_mode || done.streams != u64::from(parallel) || !bytes_ok {
        return Err(format!(
            "the guest's {done:?} does not match iperf3's {rate:?} ({want_mode}, {parallel} streams)"
        ));
    }
    if rate.bits_per_second <= 0.0 {
        return Err(format!("a zero rate: {rate:?}"));
    }
    Ok(format!("{:.1} Mbit/s", rate.bits_per_second / 1e6))
}

/// The next `iperf: error:` line after `from`; returns its index.
fn wait_error(n: &NetGuest, from: usize) -> Result<usize, String> {
    n.g.wait_line(
        from,
        "an `iperf: error:` line",
        |l| l.contains("iperf: error: "),
        STALL,
    )
    .map(|(i, _)| i)
}

fn control(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, STALL).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(STALL)).map_err(|e| e.to_string())?;
    Ok(s)
}

const COOKIE: &[u8; 37] = b"spindletestcookie0123456789abcdefghi\0";

/// Sends the cookie and reads the server's first state byte (9:
/// PARAM_EXCHANGE).
fn past_cookie(addr: SocketAddr) -> Result<TcpStream, String> {
    let mut s = control(addr)?;
    s.write_all(COOKIE).map_err(|e| e.to_string())?;
    let mut state = [0u8; 1];
    s.read_exact(&mut state)
        .map_err(|e| format!("no state byte after the cookie: {e}"))?;
    if state[0] != 9 {
        return Err(format!("state {} after the cookie, expected 9", state[0]));
    }
    Ok(s)
}

type BadClient = Box<dyn Fn() -> Result<(), String>>;

/// Malformed control traffic: each case gets an error line, then a real
/// client is served.
fn bad_clients(n: &NetGuest, from: &mut usize) -> Result<(), String> {
    let addr = n.service()?;
    let cases: [(&str, BadClient); 3] = [
        (
            "a short cookie, then close",
            Box::new(move || {
                control(addr)?
                    .write_all(b"short")
                    .map_err(|e| e.to_string())
            }),
        ),
        (
            "garbage JSON",
            Box::new(move || {
                let mut s = past_cookie(addr)?;
                let junk = b"{\"tcp\": tru";
                s.write_all(&(junk.len() as u32).to_be_bytes())
                    .and_then(|_| s.write_all(junk))
                    .map_err(|e| e.to_string())?;
                // The server answers with an error state or closes.
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
                Ok(())
            }),
        ),
        (
            "a close right after the cookie",
            Box::new(move || past_cookie(addr).map(drop)),
        ),
    ];
    for (what, case) in cases {
        case().map_err(|e| format!("{what}: {e}"))?;
        let i = wait_error(n, *from).map_err(|e| format!("{what}: {e}"))?;
        *from = i + 1;
    }
    served(n, from, Direction::HostToGuest, 1)
        .map(drop)
        .map_err(|e| format!("the client after the bad ones: {e}"))
}

/// A SIGKILL in the middle of a 30 s test.
fn kill_mid_test(n: &mut NetGuest, from: &mut usize, pid: u64) -> Result<(), String> {
    let addr = n.service()?;
    let test = HostTest {
        direction: Direction::HostToGuest,
        seconds: 30,
        parallel: 2,
    };
    let host = std::thread::spawn(move || host_test(addr, &test));
    let deadline = Instant::now() + STALL;
    // Kill once data flows (the RX ring has moved some megabytes).
    loop {
        let (rx, _) = n.rx_tx(pid)?;
        if rx.bytes > 4_000_000 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!("no data reached the guest within {STALL:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let killed_at = Instant::now();
    n.g.ok(&format!("kill -KILL {pid}"))?;
    let wait = Instant::now() + Duration::from_secs(40);
    while !host.is_finished() {
        if Instant::now() >= wait {
            return Err(
                "the host's iperf3 still runs 40 s after the guest process was killed".into(),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match host.join().map_err(|_| "the iperf3 thread panicked")? {
        Err(e) if e.contains("iperf3") => {}
        Err(e) => return Err(format!("iperf3 failed oddly: {e}")),
        Ok((raw, _)) => {
            return Err(format!(
                "the host's iperf3 reported success {:.1} s after the kill: {}",
                killed_at.elapsed().as_secs_f64(),
                raw.get("end").map(Value::to_string).unwrap_or_default()
            ));
        }
    }
    let (i, line) = n.g.wait_line(
        *from,
        "the teardown line",
        |l| l.contains("spindle: teardown of pid"),
        STALL,
    )?;
    let log = parse_process_log(&n.g.log());
    let t = log
        .teardowns
        .iter()
        .find(|t| t.pid == pid)
        .ok_or_else(|| format!("unparsed teardown line `{line}`"))?;
    if t.workers != 2 || t.last_lwp_gone_us == 0 || t.freed_us < t.last_lwp_gone_us {
        return Err(format!("odd teardown figures: {t:?}"));
    }
    *from = wait_listening(n, i)? + 1;
    Ok(())
}

#[test]
fn iperf_guest_server_serves_host_iperf3_bad_clients_and_a_kill() -> Result<(), String> {
    let p = prepare()?;
    let mut n = NetGuest::boot(p, &iperf_boot(&["-s"], true, Some(1)))?;
    let mut from = wait_listening(&n, 0).map_err(|e| format!("{e}\n{}", n.g.tail()))?;
    let pid = n.pid().map_err(|e| format!("{e}\n{}", n.g.tail()))?;
    let mut checks = Checks::default();
    for (name, direction, parallel) in [
        ("host -> guest, 3 s", Direction::HostToGuest, 1),
        ("guest -> host (-R), 3 s", Direction::GuestToHost, 1),
        ("host -> guest, -P 4, 3 s", Direction::HostToGuest, 4),
    ] {
        let r = served(&n, &mut from, direction, parallel);
        if let Ok(rate) = &r {
            eprintln!("iperf {name}: {rate}");
        }
        checks.check(name, r.map(drop));
    }
    checks.check("malformed control traffic", bad_clients(&n, &mut from));
    checks.check("SIGKILL mid-test", kill_mid_test(&mut n, &mut from, pid));
    // The respawned server serves, and its own end gives back every frame.
    let again = (|| {
        served(&n, &mut from, Direction::GuestToHost, 1)?;
        let pid = n.pid()?;
        n.g.ok(&format!("kill -TERM {pid}"))?;
        n.g.wait_line(
            from,
            "the second run's memory line",
            |l| l.contains("spindle: memory after exit"),
            STALL,
        )?;
        std::thread::sleep(Duration::from_millis(200));
        let log = parse_process_log(&n.g.log());
        match (log.memory_before.get(1), log.memory_after.get(1)) {
            (Some(b), Some(a)) if b.free_frames == a.free_frames => Ok(()),
            (b, a) => Err(format!("run 2: frames before {b:?}, after {a:?}")),
        }
    })();
    checks.check("the respawned server serves and returns its memory", again);
    checks.finish(&n.g)
}

/// The guest as client against a host `iperf3 -s -1`, one boot per case.
#[test]
fn iperf_guest_client_against_host_iperf3() -> Result<(), String> {
    let p = prepare()?;
    let mut failures = Vec::new();
    for (name, extra, direction) in [
        ("-P 4", &["-P", "4"][..], Direction::HostToGuest),
        ("-R", &["-R"][..], Direction::GuestToHost),
        ("--bidir", &["--bidir"][..], Direction::Bidir),
    ] {
        let r = (|| {
            let port = free_tcp_port()?;
            let mut server = spindle_runner::guest::GuardedChild::spawn({
                let mut c = Command::new("iperf3");
                c.args(["-s", "-1", "-J", "-B", "127.0.0.1", "-p", &port.to_string()])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                c
            })
            .map_err(|e| format!("{e:#}"))?;
            std::thread::sleep(Duration::from_millis(300));
            let port = port.to_string();
            let mut args = vec!["-c", "10.0.2.2", "-p", &port, "-t", "3"];
            args.extend_from_slice(extra);
            let n = NetGuest::boot(p, &iperf_boot(&args, false, None))?;
            let (_, done) = wait_done(&n, 0).map_err(|e| format!("{e}\n{}", n.g.tail()))?;
            let deadline = Instant::now() + SLACK;
            let status = loop {
                if let Some(s) = server.try_wait().map_err(|e| format!("{e:#}"))? {
                    break s;
                }
                if Instant::now() >= deadline {
                    return Err("the host's iperf3 -s -1 did not end".to_string());
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            let mut out = String::new();
            if let Some(mut o) = server.child_mut().stdout.take() {
                let _ = o.read_to_string(&mut out);
            }
            let v: Value = serde_json::from_str(&out)
                .map_err(|e| format!("the host server's JSON ({status}): {e}: {out}"))?;
            if let Some(e) = v.get("error") {
                return Err(format!("the host server says {e}"));
            }
            let end = &v["end"];
            let got = |k: &str| end[k]["bytes"].as_u64().unwrap_or(0);
            // The host server's view: what it received from the guest is
            // sum_received; with -R it sent (sum_sent).
            let ok = match direction {
                Direction::HostToGuest => {
                    got("sum_received") > 0 && got("sum_received") <= done.sent
                }
                Direction::GuestToHost => got("sum_sent") > 0 && done.received > 0,
                Direction::Bidir => got("sum_received") > 0 && done.received > 0 && done.sent > 0,
            };
            if !ok || !status.success() {
                return Err(format!("host server {status}, end {end}; guest {done:?}"));
            }
            n.g.wait_line(
                0,
                "the client's end",
                |l| l.contains("spindle: process iperf (pid"),
                STALL,
            )?;
            let log = parse_process_log(&n.g.log());
            if log.statuses() != vec![0] {
                return Err(format!(
                    "the guest client ended {:?}\n{}",
                    log.ends,
                    n.g.tail()
                ));
            }
            Ok(())
        })();
        if let Err(e) = r {
            failures.push(format!("{name}: {e}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}
