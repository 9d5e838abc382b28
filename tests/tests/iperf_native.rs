//! The `iperf` image run natively on the host (the same static binary
//! Spindle runs) against the real iperf3 3.12 (`cargo spindle setup`
//! installs it), never against a reimplementation:
//!
//! - our server serves one iperf3 client after another (default, `-P 4`,
//!   `-R`, `--bidir`, `-l 16K`, `-w 256K`, `-O 1`), and its `iperf: done`
//!   line agrees with iperf3's JSON on the bytes;
//! - our client against `iperf3 -s -1` (default, `-P 4`, `-R`,
//!   `--bidir`): both succeed and both JSON documents agree on the bytes
//!   each side measured;
//! - malformed control traffic gives `iperf: error:` lines and the server
//!   then serves iperf3 again; a silent client is cut off within the
//!   documented 5 s;
//! - a busy server denies a second iperf3 (iperf3's "the server is busy
//!   running a test") while the first test completes;
//! - bad flags exit with status 2 and the usage.
//!
//! Ports are free ones (`-p 0` for our server), so the tests run in
//! parallel; every child is killed when dropped and every wait bounded.
//! Throughput figures go to stderr (`-- --nocapture` shows them).

use serde_json::Value;
use spindle_tests::ctl::prepare;
use spindle_tests::host::{HostImage, Ran, run_bounded};
use spindle_tests::net::free_tcp_port;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// The longest an iperf3 or iperf run of a few seconds may take.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// The server's control-read limit (images/iperf, `CONTROL_TIMEOUT`).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
const LISTENING: &str = "iperf: server listening on 0.0.0.0:";
/// iperf3's message for `ACCESS_DENIED`.
const BUSY: &str = "the server is busy running a test";

fn server() -> Result<(HostImage, u16), String> {
    HostImage::start_with("iperf", &["-s", "-p", "0"], LISTENING)
}

fn iperf3(args: &[String]) -> Result<Ran, String> {
    run_bounded(Command::new("iperf3").args(args), RUN_LIMIT)
}

fn ours(args: &[String]) -> Result<Ran, String> {
    prepare()?;
    let path = spindle_runner::images::image_artifact("iperf");
    run_bounded(Command::new(path).args(args), RUN_LIMIT)
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// An `iperf: done ...` line.
#[derive(Debug)]
struct Done {
    peer: String,
    mode: String,
    streams: u32,
    sent: u64,
    received: u64,
    seconds: f64,
}

fn parse_done(line: &str) -> Result<Done, String> {
    let rest = line
        .strip_prefix("iperf: done ")
        .ok_or_else(|| format!("not a done line: {line:?}"))?;
    let mut fields = std::collections::BTreeMap::new();
    for word in rest.split(' ') {
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| format!("{word:?} in {line:?} is not KEY=VALUE"))?;
        fields.insert(k, v);
    }
    let get = |k: &str| {
        fields
            .get(k)
            .copied()
            .ok_or_else(|| format!("no {k}= in {line:?}"))
    };
    let int = |k: &str| -> Result<u64, String> {
        get(k)?
            .parse()
            .map_err(|_| format!("{k}= is not a number in {line:?}"))
    };
    let seconds = get("seconds")?;
    if seconds.split_once('.').map(|(_, f)| f.len()) != Some(3) {
        return Err(format!("seconds= should have three decimals in {line:?}"));
    }
    Ok(Done {
        peer: get("peer")?.to_string(),
        mode: get("mode")?.to_string(),
        streams: int("streams")? as u32,
        sent: int("sent")?,
        received: int("received")?,
        seconds: seconds
            .parse()
            .map_err(|_| format!("bad seconds= in {line:?}"))?,
    })
}

/// A JSON document printed by `who`, without an `error`.
fn document(text: &str, who: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| format!("{who}'s output is not JSON ({e}):\n{text}"))?;
    if let Some(e) = v.get("error") {
        return Err(format!("{who}'s JSON reports an error: {e}"));
    }
    Ok(v)
}

/// The value at a dotted path.
fn at<'a>(v: &'a Value, path: &str) -> Result<&'a Value, String> {
    path.split('.').try_fold(v, |v, key| {
        v.get(key)
            .ok_or_else(|| format!("the JSON has no `{path}` (missing `{key}`)"))
    })
}

fn bytes_at(v: &Value, path: &str) -> Result<u64, String> {
    at(v, path)?
        .as_u64()
        .ok_or_else(|| format!("`{path}` is not a whole number"))
}

/// A positive rate at `path` (bits per second), in Mbit/s.
fn rate_at(v: &Value, path: &str) -> Result<f64, String> {
    let r = at(v, path)?
        .as_f64()
        .ok_or_else(|| format!("`{path}` is not a number"))?;
    if r > 0.0 {
        Ok(r / 1e6)
    } else {
        Err(format!("`{path}` is {r}, not positive"))
    }
}

fn same(what: &str, a: u64, b: u64) -> Result<(), String> {
    if a == b {
        Ok(())
    } else {
        Err(format!("{what}: {a} != {b}"))
    }
}

/// A test of our server by `iperf3 -c`.
struct ServerCase {
    name: &'static str,
    args: &'static [&'static str],
    /// The `mode=` our server reports.
    mode: &'static str,
    streams: u32,
}

const SERVER_CASES: [ServerCase; 7] = [
    ServerCase {
        name: "default",
        args: &[],
        mode: "receive",
        streams: 1,
    },
    ServerCase {
        name: "-P 4",
        args: &["-P", "4"],
        mode: "receive",
        streams: 4,
    },
    ServerCase {
        name: "-R",
        args: &["-R"],
        mode: "send",
        streams: 1,
    },
    ServerCase {
        name: "--bidir",
        args: &["--bidir"],
        mode: "bidir",
        streams: 1,
    },
    ServerCase {
        name: "-l 16K",
        args: &["-l", "16K"],
        mode: "receive",
        streams: 1,
    },
    ServerCase {
        name: "-w 256K",
        args: &["-w", "256K"],
        mode: "receive",
        streams: 1,
    },
    ServerCase {
        name: "-O 1",
        args: &["-O", "1"],
        mode: "receive",
        streams: 1,
    },
];

/// Runs one `iperf3 -c` against the server and checks both sides; returns
/// the figures for the log.
fn server_case(srv: &mut HostImage, port: u16, case: &ServerCase) -> Result<String, String> {
    let mut args = words(&["-c", "127.0.0.1", "-p", &port.to_string(), "-t", "2", "-J"]);
    args.extend(words(case.args));
    let ran = iperf3(&args)?;
    let line = srv.wait(|l| l.starts_with("iperf: done ") || l.starts_with("iperf: error: "))?;
    if !ran.status.success() {
        return Err(format!(
            "iperf3 failed: {}\nour server: {line}",
            ran.describe()
        ));
    }
    let v = document(&ran.stdout, "iperf3").map_err(|e| format!("{e}\nour server: {line}"))?;
    let d = parse_done(&line)?;
    if d.mode != case.mode || d.streams != case.streams {
        return Err(format!(
            "expected mode={} streams={}: {line}",
            case.mode, case.streams
        ));
    }
    if d.seconds < 1.5 || d.seconds > 4.0 {
        return Err(format!(
            "a 2 s test took seconds={} on our server",
            d.seconds
        ));
    }
    let sent = rate_at(&v, "end.sum_sent.bits_per_second")?;
    let received = rate_at(&v, "end.sum_received.bits_per_second")?;
    let mut figures =
        format!("client->server {sent:.0} Mbit/s sent, {received:.0} Mbit/s received");
    match case.mode {
        "receive" => {
            same(
                "our received= vs iperf3's end.sum_received.bytes",
                d.received,
                bytes_at(&v, "end.sum_received.bytes")?,
            )?;
            same("our sent= in a receive test", d.sent, 0)?;
        }
        "send" => {
            same(
                "our sent= vs iperf3's end.sum_sent.bytes",
                d.sent,
                bytes_at(&v, "end.sum_sent.bytes")?,
            )?;
            same("our received= in a send test", d.received, 0)?;
            figures =
                format!("server->client {sent:.0} Mbit/s sent, {received:.0} Mbit/s received");
        }
        _ => {
            same(
                "our received= vs iperf3's end.sum_received.bytes",
                d.received,
                bytes_at(&v, "end.sum_received.bytes")?,
            )?;
            same(
                "our sent= vs iperf3's end.sum_sent_bidir_reverse.bytes",
                d.sent,
                bytes_at(&v, "end.sum_sent_bidir_reverse.bytes")?,
            )?;
            let back = rate_at(&v, "end.sum_received_bidir_reverse.bits_per_second")?;
            figures += &format!("; server->client {back:.0} Mbit/s received");
        }
    }
    let streams = at(&v, "end.streams")?.as_array().map_or(0, Vec::len);
    let want = case.streams as usize * if case.mode == "bidir" { 2 } else { 1 };
    if streams != want {
        return Err(format!("iperf3 reports {streams} streams, expected {want}"));
    }
    match case.name {
        "-l 16K" => same(
            "iperf3's blksize",
            bytes_at(&v, "start.test_start.blksize")?,
            16_384,
        )?,
        "-w 256K" => same(
            "iperf3's sock_bufsize",
            bytes_at(&v, "start.sock_bufsize")?,
            262_144,
        )?,
        "-O 1" => {
            same("iperf3's omit", bytes_at(&v, "start.test_start.omit")?, 1)?;
            let omitted = at(&v, "intervals")?
                .as_array()
                .is_some_and(|i| i.iter().any(|i| i["sum"]["omitted"] == Value::Bool(true)));
            if !omitted {
                return Err("iperf3 shows no omitted interval".into());
            }
        }
        _ => {}
    }
    Ok(format!("{figures} (ours: {line})"))
}

/// 1: one server, seven iperf3 clients one after another.
#[test]
fn our_server_serves_iperf3_clients_one_after_another() -> Result<(), String> {
    let (mut srv, port) = server()?;
    for case in &SERVER_CASES {
        let figures = server_case(&mut srv, port, case)
            .map_err(|e| format!("iperf3 -c {}: {e}", case.name))?;
        eprintln!("iperf3 -c {:8} -> our server: {figures}", case.name);
    }
    Ok(())
}

/// 2: our client against `iperf3 -s -1 -J`: both succeed, and each byte
/// count the server measured is the one our client reports.
fn client_case(extra: &[&str], mode: &str) -> Result<(), String> {
    let port = free_tcp_port()?.to_string();
    let srv_args = words(&["-s", "-1", "-p", &port, "-J"]);
    let srv = std::thread::spawn(move || iperf3(&srv_args));
    let mut args = words(&["-c", "127.0.0.1", "-p", &port, "-t", "2", "-J"]);
    args.extend(words(extra));
    // iperf3 prints nothing until its test ends: retry while it is not
    // listening yet.
    let started = Instant::now();
    let ran = loop {
        let ran = ours(&args)?;
        if !ran.status.success()
            && ran.stderr.contains("Connection refused")
            && started.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        break ran;
    };
    let srv = srv
        .join()
        .map_err(|_| "the iperf3 -s thread panicked".to_string())??;
    if !ran.status.success() || !srv.status.success() {
        return Err(format!(
            "our client: {}\niperf3 -s: {}",
            ran.describe(),
            srv.describe()
        ));
    }
    let v = document(&ran.stdout, "our client")?;
    let s = document(&srv.stdout, "iperf3 -s")?;
    let line = ran
        .stderr
        .lines()
        .find(|l| l.starts_with("iperf: done "))
        .ok_or_else(|| format!("no done line from our client:\n{}", ran.stderr))?;
    let d = parse_done(line)?;
    if d.mode != mode || !d.peer.ends_with(&format!(":{port}")) {
        return Err(format!(
            "expected mode={mode} and the server's port in {line:?}"
        ));
    }
    at(&v, "start.connected")?
        .as_array()
        .filter(|c| !c.is_empty())
        .ok_or("our start.connected is empty")?;
    at(&v, "intervals")?
        .as_array()
        .filter(|i| i.iter().all(|i| i.get("sum").is_some()))
        .filter(|i| !i.is_empty())
        .ok_or("our intervals are empty or lack `sum`")?;
    // Each direction: the bytes the measuring side (the receiver for
    // client->server, the sender for server->client; iperf3 -s writes its
    // JSON before the results exchange) reported, on both documents.
    let mut figures = Vec::new();
    if mode != "receive" {
        let path = "end.sum_received.bytes";
        same(
            &format!("{path} (ours vs iperf3 -s)"),
            bytes_at(&v, path)?,
            bytes_at(&s, path)?,
        )?;
        same(
            "our sent= vs our end.sum_sent.bytes",
            d.sent,
            bytes_at(&v, "end.sum_sent.bytes")?,
        )?;
        figures.push(format!(
            "client->server {:.0} Mbit/s sent, {:.0} Mbit/s received",
            rate_at(&v, "end.sum_sent.bits_per_second")?,
            rate_at(&s, "end.sum_received.bits_per_second")?
        ));
    }
    if mode != "send" {
        let sum = if mode == "bidir" {
            "_bidir_reverse"
        } else {
            ""
        };
        let path = format!("end.sum_sent{sum}.bytes");
        same(
            &format!("{path} (ours vs iperf3 -s)"),
            bytes_at(&v, &path)?,
            bytes_at(&s, &path)?,
        )?;
        let path = format!("end.sum_received{sum}.bytes");
        same(
            &format!("our received= vs our {path}"),
            d.received,
            bytes_at(&v, &path)?,
        )?;
        figures.push(format!(
            "server->client {:.0} Mbit/s sent, {:.0} Mbit/s received",
            rate_at(&s, &format!("end.sum_sent{sum}.bits_per_second"))?,
            rate_at(&v, &format!("end.sum_received{sum}.bits_per_second"))?
        ));
    }
    let count = |v: &Value| at(v, "end.streams").map(|s| s.as_array().map_or(0, Vec::len));
    same(
        "end.streams entries (ours vs iperf3 -s)",
        count(&v)? as u64,
        count(&s)? as u64,
    )?;
    eprintln!(
        "our client {extra:?} -> iperf3 -s: {} ({line})",
        figures.join("; ")
    );
    Ok(())
}

#[test]
fn our_client_against_iperf3_server_default() -> Result<(), String> {
    client_case(&[], "send")
}

#[test]
fn our_client_against_iperf3_server_parallel_4() -> Result<(), String> {
    client_case(&["-P", "4"], "send")
}

#[test]
fn our_client_against_iperf3_server_reverse() -> Result<(), String> {
    client_case(&["-R"], "receive")
}

#[test]
fn our_client_against_iperf3_server_bidir() -> Result<(), String> {
    client_case(&["--bidir"], "bidir")
}

/// A control connection to the server, with timeouts.
fn control(port: u16) -> Result<(TcpStream, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connecting: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let me = s.local_addr().map_err(|e| e.to_string())?.to_string();
    Ok((s, me))
}

/// A well-formed cookie.
const COOKIE: &[u8; 37] = b"spindletestspindletestspindletest234\0";

/// Sends the cookie and reads `PARAM_EXCHANGE` (9).
fn hello(s: &mut TcpStream) -> Result<(), String> {
    s.write_all(COOKIE)
        .map_err(|e| format!("sending the cookie: {e}"))?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)
        .map_err(|e| format!("reading PARAM_EXCHANGE: {e}"))?;
    same(
        "the state after the cookie (PARAM_EXCHANGE)",
        u64::from(b[0]),
        9,
    )
}

/// Reads the rest of what the server says until it closes: expects
/// `SERVER_ERROR` (-2) with `i_errno`.
fn expect_server_error(s: &mut TcpStream, i_errno: i32) -> Result<(), String> {
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let mut want = vec![0xfe];
    want.extend_from_slice(&i_errno.to_be_bytes());
    want.extend_from_slice(&0i32.to_be_bytes());
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "expected SERVER_ERROR {i_errno} ({want:?}), the server sent {got:?}"
        ))
    }
}

/// 3: malformed control traffic; each gives one error line naming the
/// peer, and iperf3 is served afterwards.
#[test]
fn our_server_survives_malformed_control_traffic() -> Result<(), String> {
    let (mut srv, port) = server()?;
    type Act = fn(&mut TcpStream) -> Result<(), String>;
    let cases: [(&str, Act, &str); 5] = [
        (
            "bad cookie (short, then close)",
            |s| s.write_all(b"short cookie").map_err(|e| e.to_string()),
            "cookie",
        ),
        (
            "garbage JSON",
            |s| {
                hello(s)?;
                let body = b"this is { not JSON";
                s.write_all(&(body.len() as u32).to_be_bytes())
                    .map_err(|e| e.to_string())?;
                s.write_all(body).map_err(|e| e.to_string())?;
                expect_server_error(s, 114)
            },
            "JSON",
        ),
        (
            "a 100 MB length prefix",
            |s| {
                hello(s)?;
                s.write_all(&100_000_000u32.to_be_bytes())
                    .map_err(|e| e.to_string())?;
                expect_server_error(s, 114)
            },
            "limit",
        ),
        (
            "close right after the cookie",
            |s| s.write_all(COOKIE).map_err(|e| e.to_string()),
            "parameters",
        ),
        (
            "close in the middle of the JSON",
            |s| {
                hello(s)?;
                s.write_all(&200u32.to_be_bytes())
                    .map_err(|e| e.to_string())?;
                s.write_all(b"{\"tcp\":true,\"time\":")
                    .map_err(|e| e.to_string())
            },
            "parameters",
        ),
    ];
    for (name, act, says) in cases {
        let (mut s, me) = control(port)?;
        act(&mut s).map_err(|e| format!("{name}: {e}"))?;
        let _ = s.shutdown(Shutdown::Both);
        drop(s);
        let prefix = format!("iperf: error: peer={me}: ");
        let line = srv
            .wait(|l| l.starts_with(&prefix))
            .map_err(|e| format!("{name}: {e}"))?;
        if !line.contains(says) {
            return Err(format!("{name}: expected `{says}` in {line:?}"));
        }
        eprintln!("{name}: {line}");
    }
    // A client that says nothing is cut off at the control timeout.
    let (mut s, me) = control(port)?;
    let t = Instant::now();
    let prefix = format!("iperf: error: peer={me}: ");
    let line = srv.wait_for(
        |l| l.starts_with(&prefix),
        CONTROL_TIMEOUT + Duration::from_secs(10),
    )?;
    let waited = t.elapsed();
    if waited < CONTROL_TIMEOUT - Duration::from_millis(500)
        || waited > CONTROL_TIMEOUT + Duration::from_secs(3)
        || !line.contains("cookie")
    {
        return Err(format!(
            "silent client: {line:?} after {:.1} s (the bound is {} s)",
            waited.as_secs_f64(),
            CONTROL_TIMEOUT.as_secs()
        ));
    }
    let mut rest = Vec::new();
    let closed = s.read_to_end(&mut rest).is_ok() && rest.is_empty();
    if !closed {
        return Err(format!(
            "silent client: the server did not just close the connection ({rest:?})"
        ));
    }
    eprintln!("silent client: {line} after {:.2} s", waited.as_secs_f64());
    // And the server still serves.
    let ran = iperf3(&words(&[
        "-c",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-t",
        "1",
        "-J",
    ]))?;
    let line = srv.wait(|l| l.starts_with("iperf: done ") || l.starts_with("iperf: error: "))?;
    if !ran.status.success() {
        return Err(format!(
            "iperf3 after the malformed traffic: {}",
            ran.describe()
        ));
    }
    let v = document(&ran.stdout, "iperf3")?;
    same(
        "our received= vs iperf3's sum_received",
        parse_done(&line)?.received,
        bytes_at(&v, "end.sum_received.bytes")?,
    )?;
    Ok(())
}

/// 4: while a 3 s test runs, a second iperf3 gets "busy"; the first ends
/// well.
#[test]
fn our_busy_server_denies_a_second_client() -> Result<(), String> {
    let (mut srv, port) = server()?;
    let p = port.to_string();
    let first_args = words(&["-c", "127.0.0.1", "-p", &p, "-t", "3", "-J"]);
    let first = std::thread::spawn(move || iperf3(&first_args));
    std::thread::sleep(Duration::from_millis(1000));
    let second = iperf3(&words(&["-c", "127.0.0.1", "-p", &p, "-t", "1"]))?;
    let first = first
        .join()
        .map_err(|_| "the first client's thread panicked".to_string())??;
    if second.status.success() || !second.stderr.contains(BUSY) {
        return Err(format!(
            "the second iperf3 should be told `{BUSY}`: {}",
            second.describe()
        ));
    }
    if !first.status.success() {
        return Err(format!("the first iperf3 failed: {}", first.describe()));
    }
    let v = document(&first.stdout, "the first iperf3")?;
    srv.wait(|l| l.starts_with("iperf: busy: denied peer=127.0.0.1:"))?;
    let line = srv.wait(|l| l.starts_with("iperf: done ") || l.starts_with("iperf: error: "))?;
    let d = parse_done(&line)?;
    same(
        "our received= vs the first iperf3's sum_received",
        d.received,
        bytes_at(&v, "end.sum_received.bytes")?,
    )?;
    if d.seconds < 2.5 {
        return Err(format!("the first test should have run 3 s: {line}"));
    }
    eprintln!(
        "busy: second iperf3 said {:?}; first: {line}",
        second.stderr.trim()
    );
    Ok(())
}

/// 5: bad flags exit 2 with the usage; `-h` exits 0.
#[test]
fn bad_flags_exit_2_with_the_usage() -> Result<(), String> {
    let bad: [&[&str]; 12] = [
        &[],
        &["-x"],
        &["-s", "-c", "127.0.0.1"],
        &["-c"],
        &["-c", "h", "-P", "0"],
        &["-c", "h", "-t", "abc"],
        &["-c", "h", "-R", "--bidir"],
        &["-s", "-t", "3"],
        &["-c", "h", "-l", "2M"],
        &["-c", "h", "-w", "lots"],
        &["-s", "-p", "65536"],
        &["-c", "h", "-1"],
    ];
    for args in bad {
        let ran = ours(&words(args))?;
        if ran.status.code() != Some(2)
            || !ran.stderr.starts_with("iperf: ")
            || !ran.stderr.contains("usage: iperf -s")
        {
            return Err(format!(
                "iperf {args:?}: expected status 2 and the usage: {}",
                ran.describe()
            ));
        }
    }
    let help = ours(&words(&["-h"]))?;
    if !help.status.success() || !help.stdout.contains("usage: iperf -s") {
        return Err(format!("iperf -h: {}", help.describe()));
    }
    Ok(())
}
