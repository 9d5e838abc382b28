//! iperf3's human output: its units (`unit_snprintf`), its line formats
//! (iperf_locale.c) and the RFC 1123 timestamp of its JSON.

/// Bytes the way iperf3's `%ss` with format `A` shows them: 1024-based,
/// four significant places (`"3.16 GBytes"`).
pub fn bytes(n: f64) -> String {
    scaled(n, 1024.0, ["Byte", "KByte", "MByte", "GByte", "TByte"]) + "s"
}

/// A rate in bytes per second the way iperf3's format `a` shows it:
/// bits, 1000-based (`"27.2 Gbits/sec"`).
pub fn rate(bytes_per_second: f64) -> String {
    scaled(
        bytes_per_second * 8.0,
        1000.0,
        ["bit", "Kbit", "Mbit", "Gbit", "Tbit"],
    ) + "s/sec"
}

fn scaled(mut n: f64, base: f64, labels: [&str; 5]) -> String {
    if !n.is_finite() || n < 0.0 {
        n = 0.0;
    }
    let mut unit = 0;
    while n >= base && unit < labels.len() - 1 {
        n /= base;
        unit += 1;
    }
    let label = labels[unit];
    if n < 9.995 {
        format!("{n:4.2} {label}")
    } else if n < 99.95 {
        format!("{n:4.1} {label}")
    } else {
        format!("{n:4.0} {label}")
    }
}

pub const SEPARATOR: &str = "- - - - - - - - - - - - - - - - - - - - - - - - -";

/// The interval/summary table header.
pub fn header(bidir: bool, retransmits: bool, cwnd: bool) -> &'static str {
    match (bidir, retransmits, cwnd) {
        (false, false, _) => "[ ID] Interval           Transfer     Bitrate",
        (true, false, _) => "[ ID][Role] Interval           Transfer     Bitrate",
        (false, true, false) => "[ ID] Interval           Transfer     Bitrate         Retr",
        (true, true, false) => "[ ID][Role] Interval           Transfer     Bitrate         Retr",
        (false, true, true) => "[ ID] Interval           Transfer     Bitrate         Retr  Cwnd",
        (true, true, true) => {
            "[ ID][Role] Interval           Transfer     Bitrate         Retr  Cwnd"
        }
    }
}

/// What a table line is about: a stream (`[  5]`) or the sum (`[SUM]`).
#[derive(Clone, Copy)]
pub enum Who {
    Stream(i64),
    Sum,
}

/// Extra columns of a line.
pub enum Extra {
    None,
    Retransmits(i64),
    RetransmitsCwnd(i64, u64),
}

/// One table line, in iperf3's `report_*bw*_format` layouts.
pub struct Row<'a> {
    pub who: Who,
    /// `[TX-C]` and the like in a bidirectional test, else empty.
    pub role: &'a str,
    pub start: f64,
    pub end: f64,
    pub bytes: u64,
    /// The time the rate is over.
    pub seconds: f64,
    pub extra: Extra,
    /// `sender`, `receiver`, `(omitted)` or empty.
    pub tail: &'a str,
}

impl Row<'_> {
    pub fn render(&self) -> String {
        let id = match self.who {
            Who::Stream(fd) => format!("[{fd:3}]"),
            Who::Sum => "[SUM]".to_string(),
        };
        let per_second = if self.seconds > 0.0 {
            self.bytes as f64 / self.seconds
        } else {
            0.0
        };
        let (b, r) = (bytes(self.bytes as f64), rate(per_second));
        let (role, tail) = (self.role, self.tail);
        let interval = format!("{:6.2}-{:<6.2}", self.start, self.end);
        match self.extra {
            Extra::None => format!("{id}{role} {interval} sec  {b}  {r}                  {tail}"),
            Extra::Retransmits(n) => {
                format!("{id}{role} {interval} sec  {b}  {r}  {n:3}             {tail}")
            }
            Extra::RetransmitsCwnd(n, cwnd) => {
                let c = bytes(cwnd as f64);
                format!("{id}{role} {interval} sec  {b}  {r}  {n:3}   {c}       {tail}")
            }
        }
    }
}

/// `Thu, 26 Nov 2026 03:50:05 GMT` for seconds since the epoch.
pub fn rfc1123(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_match_iperf3() {
        assert_eq!(bytes(3_393_847_296.0), "3.16 GBytes");
        assert_eq!(bytes(131_072.0), " 128 KBytes");
        assert_eq!(bytes(0.0), "0.00 Bytes");
        assert_eq!(rate(3_393_847_296.0), "27.2 Gbits/sec");
        assert_eq!(rate(125_000.0), "1.00 Mbits/sec");
        assert_eq!(bytes(1_000.0 * 1024.0), "1000 KBytes");
    }

    #[test]
    fn lines_match_iperf3() {
        let row = |who, role, start, end, bytes, extra, tail| {
            Row {
                who,
                role,
                start,
                end,
                bytes,
                seconds: end - start,
                extra,
                tail,
            }
            .render()
        };
        assert_eq!(
            row(
                Who::Stream(5),
                "",
                0.0,
                1.0,
                3_393_847_296,
                Extra::None,
                "receiver"
            ),
            "[  5]   0.00-1.00   sec  3.16 GBytes  27.2 Gbits/sec                  receiver"
        );
        assert_eq!(
            row(
                Who::Sum,
                "[TX-C]",
                1.0,
                2.0,
                1_048_576,
                Extra::Retransmits(3),
                "sender"
            ),
            "[SUM][TX-C]   1.00-2.00   sec  1.00 MBytes  8.39 Mbits/sec    3             sender"
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc1123(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(rfc1123(1_795_665_005), "Thu, 26 Nov 2026 03:50:05 GMT");
        assert_eq!(rfc1123(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }
}
