//! The host's `iperf3` against a guest: its command line, and reading its
//! `-J` report back into rates per direction, iperf3's familiar table and
//! a one-line summary.
//!
//! The host's iperf3 is always the client and the guest the server (port
//! [`GUEST_PORT`]), in every direction: host -> guest is plain `-c`,
//! guest -> host is `-R`, both at once `--bidir`. The guest's QEMU
//! arguments therefore do not depend on the direction (slirp needs only
//! one forward), which keeps `bench net`'s runs comparable. Booting the
//! guest and running the test is `iperf_session`'s.
//!
//! Which of iperf3's sums is which direction, with the host as client:
//! `end.sum_received` is what the test's receiver got (the guest for
//! `-c`, the host for `-R`); with `--bidir` the reverse direction is in
//! `end.sum_received_bidir_reverse`. Retransmits are the sender's
//! (`sum_sent.retransmits`), absent when the sender cannot count them.

use anyhow::{Result, bail};
use serde_json::Value;

/// The port the guest's iperf server listens on (iperf3's default).
pub const GUEST_PORT: u16 = 5201;

/// Which way the data flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    HostToGuest,
    GuestToHost,
    Bidir,
}

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Direction::HostToGuest => "host -> guest",
            Direction::GuestToHost => "guest -> host",
            Direction::Bidir => "both ways",
        }
    }
}

/// One host-side iperf3 test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostTest {
    pub direction: Direction,
    pub seconds: u32,
    pub parallel: u32,
}

impl HostTest {
    /// `iperf3`'s arguments for a test against `target:port`, with a JSON
    /// report on stdout.
    pub fn iperf3_args(&self, target: &str, port: u16) -> Vec<String> {
        let mut args: Vec<String> = [
            "-c",
            target,
            "-p",
            &port.to_string(),
            "-t",
            &self.seconds.to_string(),
            "-P",
            &self.parallel.to_string(),
            "-J",
            "--connect-timeout",
            "10000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match self.direction {
            Direction::HostToGuest => {}
            Direction::GuestToHost => args.push("-R".into()),
            Direction::Bidir => args.push("--bidir".into()),
        }
        args
    }
}

/// One direction's figures for the whole test.
#[derive(Clone, Debug, PartialEq)]
pub struct Rate {
    /// Bytes the receiver got.
    pub bytes: u64,
    pub seconds: f64,
    pub bits_per_second: f64,
    /// The sender's retransmits, when it counts them.
    pub retransmits: Option<u64>,
}

impl Rate {
    pub fn gbit_per_s(&self) -> f64 {
        self.bits_per_second / 1e9
    }
}

/// One reporting interval of one direction (iperf3's `sum` rows).
#[derive(Clone, Debug, PartialEq)]
pub struct IntervalRow {
    pub start: f64,
    pub end: f64,
    pub bytes: u64,
    pub bits_per_second: f64,
    pub retransmits: Option<u64>,
}

/// A finished test, read from iperf3's `-J` report.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub test: HostTest,
    pub host_to_guest: Option<Rate>,
    pub guest_to_host: Option<Rate>,
    /// (the test's first direction, the reverse direction with --bidir).
    pub intervals: Vec<(IntervalRow, Option<IntervalRow>)>,
    /// Sent/received summaries for the table: (label, row).
    pub totals: Vec<(String, IntervalRow)>,
}

fn number(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn row(v: &Value) -> Option<IntervalRow> {
    Some(IntervalRow {
        start: number(v, "start")?,
        end: number(v, "end")?,
        bytes: number(v, "bytes")? as u64,
        bits_per_second: number(v, "bits_per_second")?,
        retransmits: v.get("retransmits").and_then(Value::as_u64),
    })
}

fn rate(end: &Value, received: &str, sent: &str) -> Result<Rate> {
    let Some(r) = end.get(received) else {
        bail!("iperf3's report has no end.{received}");
    };
    let (Some(bytes), Some(seconds), Some(bps)) = (
        number(r, "bytes"),
        number(r, "seconds"),
        number(r, "bits_per_second"),
    ) else {
        bail!("iperf3's end.{received} lacks bytes, seconds or bits_per_second: {r}");
    };
    Ok(Rate {
        bytes: bytes as u64,
        seconds,
        bits_per_second: bps,
        retransmits: end
            .get(sent)
            .and_then(|s| s.get("retransmits"))
            .and_then(Value::as_u64),
    })
}

/// Reads iperf3's `-J` output. iperf3's own `error` becomes the error.
pub fn parse_report(test: &HostTest, json: &Value) -> Result<Report> {
    if let Some(error) = json.get("error").and_then(Value::as_str) {
        bail!("iperf3: {error}");
    }
    let Some(end) = json.get("end") else {
        bail!("iperf3's report has no `end` section");
    };
    let forward = rate(end, "sum_received", "sum_sent")?;
    let (host_to_guest, guest_to_host) = match test.direction {
        Direction::HostToGuest => (Some(forward), None),
        Direction::GuestToHost => (None, Some(forward)),
        Direction::Bidir => {
            let reverse = rate(end, "sum_received_bidir_reverse", "sum_sent_bidir_reverse")?;
            (Some(forward), Some(reverse))
        }
    };
    let intervals = json
        .get("intervals")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|i| {
                    let first = row(i.get("sum")?)?;
                    let reverse = i.get("sum_bidir_reverse").and_then(row);
                    Some((first, reverse))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut totals = Vec::new();
    let bidir = test.direction == Direction::Bidir;
    for (key, label) in [
        ("sum_sent", if bidir { "[TX-C]" } else { "[SUM]" }),
        ("sum_received", if bidir { "[TX-C]" } else { "[SUM]" }),
        ("sum_sent_bidir_reverse", "[RX-C]"),
        ("sum_received_bidir_reverse", "[RX-C]"),
    ] {
        if let Some(r) = end.get(key).and_then(row) {
            let role = if key.starts_with("sum_sent") {
                "sender"
            } else {
                "receiver"
            };
            totals.push((format!("{label} {role}"), r));
        }
    }
    Ok(Report {
        test: test.clone(),
        host_to_guest,
        guest_to_host,
        intervals,
        totals,
    })
}

/// iperf3's transfer unit (powers of 1024).
fn transfer(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GBytes", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MBytes", b / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KBytes", b / 1024.0)
    }
}

/// iperf3's bitrate unit (powers of 1000).
fn bitrate(bps: f64) -> String {
    if bps >= 1e9 {
        format!("{:.2} Gbits/sec", bps / 1e9)
    } else if bps >= 1e6 {
        format!("{:.0} Mbits/sec", bps / 1e6)
    } else {
        format!("{:.0} Kbits/sec", bps / 1e3)
    }
}

fn table_row(label: &str, r: &IntervalRow, note: &str) -> String {
    let retr = r.retransmits.map(|n| n.to_string()).unwrap_or_default();
    format!(
        "{label:<7} {:>6.2}-{:<6.2} sec  {:>12}  {:>15}  {retr:>5}  {note}",
        r.start,
        r.end,
        transfer(r.bytes),
        bitrate(r.bits_per_second)
    )
    .trim_end()
    .to_string()
}

/// The report as iperf3 prints it: interval sums, then sender/receiver.
pub fn render(report: &Report) -> String {
    let bidir = report.test.direction == Direction::Bidir;
    let mut out = String::from("[ ID]   Interval           Transfer          Bitrate   Retr\n");
    for (first, reverse) in &report.intervals {
        out += &table_row(if bidir { "[TX-C]" } else { "[SUM]" }, first, "");
        out.push('\n');
        if let Some(r) = reverse {
            out += &table_row("[RX-C]", r, "");
            out.push('\n');
        }
    }
    out += "- - - - - - - - - - - - - - - - - - - - - - - - -\n";
    for (label, r) in &report.totals {
        let (tag, role) = label.split_once(' ').unwrap_or((label, ""));
        out += &table_row(tag, r, role);
        out.push('\n');
    }
    out
}

fn direction_summary(label: &str, rate: &Rate) -> String {
    let retr = match rate.retransmits {
        Some(n) => format!("{n} retransmits"),
        None => "retransmits not counted".into(),
    };
    format!("{label} {:.3} Gbit/s ({retr})", rate.gbit_per_s())
}

/// `iperf: host -> guest 1.234 Gbit/s (0 retransmits); 4 streams, 10 s`.
pub fn summary_line(report: &Report) -> String {
    let mut parts = Vec::new();
    if let Some(r) = &report.host_to_guest {
        parts.push(direction_summary("host -> guest", r));
    }
    if let Some(r) = &report.guest_to_host {
        parts.push(direction_summary("guest -> host", r));
    }
    format!(
        "iperf: {}; {} stream{}, {} s",
        parts.join(", "),
        report.test.parallel,
        if report.test.parallel == 1 { "" } else { "s" },
        report.test.seconds
    )
}

/// The summary as JSON (for `--json`).
pub fn summary_json(report: &Report) -> Value {
    let rate = |r: &Option<Rate>| match r {
        Some(r) => serde_json::json!({
            "bytes": r.bytes,
            "seconds": r.seconds,
            "bits_per_second": r.bits_per_second,
            "retransmits": r.retransmits,
        }),
        None => Value::Null,
    };
    serde_json::json!({
        "direction": report.test.direction.label(),
        "seconds": report.test.seconds,
        "parallel": report.test.parallel,
        "host_to_guest": rate(&report.host_to_guest),
        "guest_to_host": rate(&report.guest_to_host),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn test(direction: Direction) -> HostTest {
        HostTest {
            direction,
            seconds: 10,
            parallel: 2,
        }
    }

    fn sum(start: f64, end: f64, bytes: u64, retr: Option<u64>) -> Value {
        let mut v = json!({"start": start, "end": end, "seconds": end - start,
                           "bytes": bytes, "bits_per_second": bytes as f64 * 8.0 / (end - start)});
        if let Some(r) = retr {
            v["retransmits"] = json!(r);
        }
        v
    }

    #[test]
    fn arguments_follow_the_direction() {
        let args = test(Direction::GuestToHost).iperf3_args("127.0.0.1", 4000);
        assert_eq!(
            args.join(" "),
            "-c 127.0.0.1 -p 4000 -t 10 -P 2 -J --connect-timeout 10000 -R"
        );
        assert!(
            test(Direction::Bidir)
                .iperf3_args("h", 1)
                .contains(&"--bidir".to_string())
        );
        assert!(
            !test(Direction::HostToGuest)
                .iperf3_args("h", 1)
                .contains(&"-R".to_string())
        );
    }

    #[test]
    fn one_way_reports_give_the_receivers_rate_and_the_senders_retransmits() {
        let doc = json!({
            "intervals": [{"sum": sum(0.0, 1.0, 1_000_000, Some(3))}],
            "end": {"sum_sent": sum(0.0, 10.0, 125_000_000, Some(7)),
                    "sum_received": sum(0.0, 10.0, 125_000_000, None)}
        });
        let r = parse_report(&test(Direction::HostToGuest), &doc).unwrap();
        let h2g = r.host_to_guest.as_ref().unwrap();
        assert_eq!((h2g.bytes, h2g.retransmits), (125_000_000, Some(7)));
        assert!((h2g.gbit_per_s() - 0.1).abs() < 1e-9);
        assert!(r.guest_to_host.is_none());
        assert_eq!(r.intervals.len(), 1);
        let line = summary_line(&r);
        assert!(
            line.contains("host -> guest 0.100 Gbit/s (7 retransmits)"),
            "{line}"
        );
        let table = render(&r);
        assert!(
            table.contains("sender") && table.contains("receiver"),
            "{table}"
        );
        assert!(table.contains("100 Mbits/sec"), "{table}");

        let reverse = parse_report(&test(Direction::GuestToHost), &doc).unwrap();
        assert!(reverse.host_to_guest.is_none() && reverse.guest_to_host.is_some());
    }

    #[test]
    fn bidir_reports_both_directions() {
        let doc = json!({
            "intervals": [{"sum": sum(0.0, 1.0, 10, None), "sum_bidir_reverse": sum(0.0, 1.0, 20, None)}],
            "end": {"sum_sent": sum(0.0, 10.0, 100, None), "sum_received": sum(0.0, 10.0, 100, None),
                    "sum_sent_bidir_reverse": sum(0.0, 10.0, 200, None),
                    "sum_received_bidir_reverse": sum(0.0, 10.0, 200, None)}
        });
        let r = parse_report(&test(Direction::Bidir), &doc).unwrap();
        assert_eq!(r.host_to_guest.unwrap().bytes, 100);
        assert_eq!(r.guest_to_host.unwrap().bytes, 200);
        assert_eq!(r.totals.len(), 4);
    }

    #[test]
    fn iperf3_errors_and_truncated_reports_are_errors() {
        let t = test(Direction::HostToGuest);
        let e = parse_report(&t, &json!({"error": "unable to connect to server"})).unwrap_err();
        assert!(format!("{e}").contains("unable to connect"), "{e}");
        assert!(parse_report(&t, &json!({"start": {}})).is_err());
        assert!(parse_report(&t, &json!({"end": {"sum_received": {"bytes": 1}}})).is_err());
        let bidir_missing = json!({"end": {"sum_received": sum(0.0, 1.0, 1, None)}});
        assert!(parse_report(&test(Direction::Bidir), &bidir_missing).is_err());
    }
}
