//! Reading the in-kernel test protocol out of a serial log.
//!
//! Lines (each at the start of a line, no timestamp):
//! `KTEST LIST <name>`, `KTEST BEGIN count=<n>`, `KTEST RUN <name>`,
//! `KTEST PASS <name> (<micros> us)`, `KTEST FAIL <name>: <message>`,
//! `KTEST END passed=<p> failed=<f>`.

/// What the log says about one test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TestStatus {
    Passed {
        micros: Option<u64>,
    },
    Failed {
        message: String,
    },
    /// `KTEST RUN` was printed but neither PASS nor FAIL: the guest crashed,
    /// hung or was stopped while the test ran.
    Unfinished,
    /// The test never started.
    NotRun,
}

/// Everything the protocol lines in one log say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KtestReport {
    /// Names from `KTEST LIST` lines, in order.
    pub listed: Vec<String>,
    /// `count=` from `KTEST BEGIN`.
    pub begin_count: Option<usize>,
    /// Names from `KTEST RUN` lines, in order.
    pub started: Vec<String>,
    /// Results in order of appearance.
    pub results: Vec<(String, TestStatus)>,
    /// `(passed, failed)` from `KTEST END`.
    pub end: Option<(usize, usize)>,
    /// Protocol lines that could not be parsed.
    pub malformed: Vec<String>,
}

impl KtestReport {
    /// The status of the test `name`.
    pub fn status_of(&self, name: &str) -> TestStatus {
        if let Some((_, status)) = self.results.iter().find(|(n, _)| n == name) {
            return status.clone();
        }
        if self.started.iter().any(|n| n == name) {
            TestStatus::Unfinished
        } else {
            TestStatus::NotRun
        }
    }

    /// Names that have a result or started but are not in `expected`.
    pub fn unexpected<'a>(&'a self, expected: &[String]) -> Vec<&'a str> {
        let mut out: Vec<&str> = Vec::new();
        let names = self
            .started
            .iter()
            .chain(self.results.iter().map(|(n, _)| n));
        for name in names {
            if !expected.contains(name) && !out.contains(&name.as_str()) {
                out.push(name);
            }
        }
        out
    }
}

/// Parses every `KTEST` line of `log`.
pub fn parse(log: &str) -> KtestReport {
    let mut r = KtestReport::default();
    for raw in log.lines() {
        let line = raw.trim_end_matches('\r');
        let Some(rest) = line.strip_prefix("KTEST ") else {
            continue;
        };
        let (word, arg) = rest.split_once(' ').unwrap_or((rest, ""));
        let ok = match word {
            "LIST" => push_name(&mut r.listed, arg),
            "RUN" => push_name(&mut r.started, arg),
            "BEGIN" => arg
                .strip_prefix("count=")
                .and_then(|n| n.trim().parse().ok())
                .map(|n| r.begin_count = Some(n))
                .is_some(),
            "PASS" => parse_pass(arg).map(|res| r.results.push(res)).is_some(),
            "FAIL" => parse_fail(arg).map(|res| r.results.push(res)).is_some(),
            "END" => parse_end(arg).map(|end| r.end = Some(end)).is_some(),
            _ => false,
        };
        if !ok {
            r.malformed.push(line.to_string());
        }
    }
    r
}

fn push_name(names: &mut Vec<String>, arg: &str) -> bool {
    let name = arg.trim();
    let valid = !name.is_empty() && !name.contains(char::is_whitespace);
    if valid {
        names.push(name.to_string());
    }
    valid
}

/// `<name> (<micros> us)`; the timing is optional.
fn parse_pass(arg: &str) -> Option<(String, TestStatus)> {
    let (name, timing) = match arg.split_once(" (") {
        Some((name, timing)) => (name, Some(timing)),
        None => (arg.trim(), None),
    };
    if name.is_empty() || name.contains(' ') {
        return None;
    }
    let micros = timing
        .and_then(|t| t.strip_suffix(" us)"))
        .and_then(|t| t.parse().ok());
    Some((name.to_string(), TestStatus::Passed { micros }))
}

/// `<name>: <message>`.
fn parse_fail(arg: &str) -> Option<(String, TestStatus)> {
    let (name, message) = match arg.split_once(": ") {
        Some((name, message)) => (name, message.to_string()),
        None => (arg.trim_end_matches(':'), String::from("(no message)")),
    };
    if name.is_empty() || name.contains(' ') {
        return None;
    }
    Some((name.to_string(), TestStatus::Failed { message }))
}

/// `passed=<p> failed=<f>`.
fn parse_end(arg: &str) -> Option<(usize, usize)> {
    let mut passed = None;
    let mut failed = None;
    for field in arg.split_whitespace() {
        match field.split_once('=') {
            Some(("passed", v)) => passed = v.parse().ok(),
            Some(("failed", v)) => failed = v.parse().ok(),
            _ => return None,
        }
    }
    Some((passed?, failed?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL_RUN: &str = "\
[    0.010000] INFO  mem: 128 MiB usable\r
KTEST BEGIN count=3\r
KTEST RUN mem::frames_alloc_free\r
KTEST PASS mem::frames_alloc_free (812 us)\r
KTEST RUN mem::heap_grows\r
[    0.020000] WARN  mem: something chatty\r
KTEST FAIL mem::heap_grows: expected 4096, got 0\r
KTEST RUN acpi::cpu_count\r
KTEST PASS acpi::cpu_count (44 us)\r
KTEST END passed=2 failed=1\r
";

    #[test]
    fn full_run_with_a_failure() {
        let r = parse(FULL_RUN);
        assert_eq!(r.begin_count, Some(3));
        assert_eq!(r.end, Some((2, 1)));
        assert_eq!(
            r.status_of("mem::frames_alloc_free"),
            TestStatus::Passed { micros: Some(812) }
        );
        assert_eq!(
            r.status_of("mem::heap_grows"),
            TestStatus::Failed {
                message: "expected 4096, got 0".into()
            }
        );
        assert_eq!(
            r.status_of("acpi::cpu_count"),
            TestStatus::Passed { micros: Some(44) }
        );
        assert_eq!(r.status_of("nope::missing"), TestStatus::NotRun);
        assert!(r.malformed.is_empty(), "{:?}", r.malformed);
    }

    #[test]
    fn panic_mid_run_leaves_later_tests_not_run() {
        let log = "KTEST BEGIN count=3\nKTEST RUN a::one\nKTEST PASS a::one (1 us)\n\
                   KTEST RUN a::two\nKTEST FAIL a::two: panicked at kernel/src/a.rs:9:5:\n\
                   boom\nKERNEL PANIC: test panicked\n";
        let r = parse(log);
        assert_eq!(
            r.status_of("a::one"),
            TestStatus::Passed { micros: Some(1) }
        );
        match r.status_of("a::two") {
            TestStatus::Failed { message } => assert!(message.starts_with("panicked at")),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.status_of("a::three"), TestStatus::NotRun);
        assert_eq!(r.end, None);
    }

    #[test]
    fn test_running_when_the_guest_died_is_unfinished() {
        let r = parse("KTEST BEGIN count=2\nKTEST RUN a::one\nKERNEL FAULT: vector 6\n");
        assert_eq!(r.status_of("a::one"), TestStatus::Unfinished);
        assert_eq!(r.status_of("a::two"), TestStatus::NotRun);
    }

    #[test]
    fn list_mode_and_protocol_lines_only_at_line_start() {
        let log = "[ 0.1] INFO  boot\nKTEST LIST mem::a\nKTEST LIST acpi::b\n\
                   noise KTEST LIST not::this\n";
        let r = parse(log);
        assert_eq!(r.listed, vec!["mem::a".to_string(), "acpi::b".to_string()]);
    }

    #[test]
    fn malformed_lines_are_collected_not_fatal() {
        let r = parse("KTEST BEGIN count=x\nKTEST PASS\nKTEST END passed=1\nKTEST WHAT\n");
        assert_eq!(r.malformed.len(), 4, "{:?}", r.malformed);
        assert_eq!(r.begin_count, None);
        assert_eq!(r.end, None);
    }

    #[test]
    fn unexpected_names_are_reported_once() {
        let r = parse("KTEST RUN a::x\nKTEST PASS a::x (1 us)\nKTEST RUN a::y\n");
        assert_eq!(r.unexpected(&["a::y".to_string()]), vec!["a::x"]);
    }
}
