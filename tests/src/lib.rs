//! Helpers for the `kernel` integration test: boot groups shared by many
//! trials, and the rules that turn a guest run into pass/fail verdicts.
//!
//! Every judgement here is a pure function of a `GuestResult`, so the
//! failure-path trials check the very rules the kernel trials use.

pub mod ctl;
pub mod host;
pub mod images;
pub mod net;

use spindle_runner::GuestResult;
use spindle_runner::guest::{GuestOutcome, READY_MARKER};
use spindle_runner::ktest::{self, TestStatus};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Lines of guest log quoted in a failure message.
pub const LOG_TAIL_LINES: usize = 60;
/// Default per-boot time limit; `SPINDLE_TEST_TIMEOUT` (seconds) overrides.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The per-boot time limit from the environment.
pub fn timeout_from_env() -> Result<Duration, String> {
    match std::env::var("SPINDLE_TEST_TIMEOUT") {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(s) if s > 0 => Ok(Duration::from_secs(s)),
            _ => Err(format!(
                "SPINDLE_TEST_TIMEOUT={v:?}: expected a whole number of seconds > 0"
            )),
        },
    }
}

/// What a shared boot produces: the run, or why QEMU could not start.
pub type BootResult = Result<GuestResult, String>;
type BootJob = Box<dyn FnOnce() -> BootResult + Send>;

/// A boot whose result several trials share. It runs in its own thread
/// (which also owns the QEMU child) and starts at most once.
pub struct SharedBoot {
    job: Mutex<Option<BootJob>>,
    result: Mutex<Option<Arc<BootResult>>>,
    done: Condvar,
}

impl SharedBoot {
    pub fn new(job: impl FnOnce() -> BootResult + Send + 'static) -> Arc<Self> {
        Arc::new(SharedBoot {
            job: Mutex::new(Some(Box::new(job))),
            result: Mutex::new(None),
            done: Condvar::new(),
        })
    }

    /// Starts the boot in the background unless it already started.
    pub fn start(self: &Arc<Self>) {
        let job = self.job.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(job) = job {
            let me = Arc::clone(self);
            std::thread::spawn(move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                    .unwrap_or_else(|_| Err("the boot thread panicked".to_string()));
                *me.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(outcome));
                me.done.notify_all();
            });
        }
    }

    /// Starts the boot if needed and waits for its result.
    pub fn wait(self: &Arc<Self>) -> Arc<BootResult> {
        self.start();
        let mut slot = self.result.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = slot.as_ref() {
                return Arc::clone(r);
            }
            slot = self.done.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A description of the run for failure messages.
pub fn describe(r: &GuestResult) -> String {
    let outcome = match &r.outcome {
        GuestOutcome::Success => "the guest exited with success".to_string(),
        GuestOutcome::Failure => "the guest exited with failure".to_string(),
        GuestOutcome::Timeout => format!(
            "the guest was killed after {:.1} s (timeout)",
            r.wall.as_secs_f64()
        ),
        GuestOutcome::StoppedAtReady => "the guest was stopped at its ready line".to_string(),
        GuestOutcome::Interrupted => "the run was interrupted".to_string(),
        GuestOutcome::Abnormal(why) => format!("abnormal end: {why}"),
    };
    format!(
        "{outcome}; last {LOG_TAIL_LINES} lines of its log:\n{}",
        r.log_tail(LOG_TAIL_LINES)
    )
}

/// The names printed by a `ktest=list` boot, or why there are none.
pub fn listed_tests(r: &GuestResult) -> Result<Vec<String>, String> {
    let report = ktest::parse(&r.log);
    if r.outcome != GuestOutcome::Success {
        return Err(format!(
            "the ktest=list boot did not succeed: {}",
            describe(r)
        ));
    }
    if report.listed.is_empty() {
        return Err(format!(
            "the ktest=list boot listed no tests: {}",
            describe(r)
        ));
    }
    Ok(report.listed)
}

/// Verdict for the in-guest test `name` from its group's boot.
pub fn judge_test(r: &GuestResult, name: &str) -> Result<(), String> {
    match ktest::parse(&r.log).status_of(name) {
        TestStatus::Passed { .. } => Ok(()),
        TestStatus::Failed { message } => Err(format!("{name} failed: {message}\n{}", describe(r))),
        TestStatus::Unfinished => Err(format!(
            "{name} started but never finished (the guest crashed, hung or stopped during it)\n{}",
            describe(r)
        )),
        TestStatus::NotRun => Err(format!("{name} never ran\n{}", describe(r))),
    }
}

/// Verdict for a group's boot as a whole: the exit status must agree with
/// the test results, and the protocol must be complete and consistent.
pub fn judge_boot(r: &GuestResult, expected: &[String]) -> Result<(), String> {
    let report = ktest::parse(&r.log);
    let mut problems = Vec::new();
    let failed = report
        .results
        .iter()
        .filter(|(_, s)| matches!(s, TestStatus::Failed { .. }))
        .count();
    let passed = report.results.len() - failed;
    match (&r.outcome, failed) {
        (GuestOutcome::Success, 0) | (GuestOutcome::Failure, 1..) => {}
        (GuestOutcome::Success, _) => {
            problems.push("exited with success although tests failed".into())
        }
        (GuestOutcome::Failure, 0) => {
            problems.push("exited with failure although no test failed".into())
        }
        (other, _) => problems.push(format!("did not exit by itself ({other:?})")),
    }
    if report.begin_count != Some(expected.len()) {
        problems.push(format!(
            "KTEST BEGIN count={:?}, but ktest=list listed {}",
            report.begin_count,
            expected.len()
        ));
    }
    if failed == 0 && report.end != Some((passed, failed)) {
        problems.push(format!(
            "KTEST END {:?} does not match the results seen (passed={passed} failed={failed})",
            report.end
        ));
    }
    let unexpected = report.unexpected(expected);
    if !unexpected.is_empty() {
        problems.push(format!(
            "ran tests ktest=list did not list: {}",
            unexpected.join(", ")
        ));
    }
    if !report.malformed.is_empty() {
        problems.push(format!("malformed KTEST lines: {:?}", report.malformed));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n{}", problems.join("\n"), describe(r)))
    }
}

/// The deliberate crashes the kernel offers (`crash=<kind>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    Panic,
    Exception,
    StackOverflow,
    Hang,
}

impl Crash {
    pub fn arg(self) -> &'static str {
        match self {
            Crash::Panic => "crash=panic",
            Crash::Exception => "crash=exception",
            Crash::StackOverflow => "crash=stack-overflow",
            Crash::Hang => "crash=hang",
        }
    }
}

/// Checks that a deliberate crash was seen as the failure it is.
pub fn judge_crash(kind: Crash, r: &GuestResult) -> Result<(), String> {
    let fail = |what: &str| Err(format!("{}: {what}\n{}", kind.arg(), describe(r)));
    if r.ready_after.is_none() {
        return fail(&format!(
            "the guest never printed `{READY_MARKER}`, so the crash was not what stopped it"
        ));
    }
    let log = r.log.to_ascii_lowercase();
    match kind {
        Crash::Panic if r.outcome != GuestOutcome::Failure => {
            fail("expected a failure exit (status 35)")
        }
        Crash::Panic if !r.log.contains("KERNEL PANIC:") => {
            fail("no `KERNEL PANIC:` report in the log")
        }
        Crash::Exception if r.outcome != GuestOutcome::Failure => {
            fail("expected a failure exit (status 35)")
        }
        Crash::Exception if !r.log.contains("KERNEL FAULT:") => {
            fail("no `KERNEL FAULT:` report in the log")
        }
        Crash::Exception if !(log.contains("vector") || log.contains("invalid opcode")) => {
            fail("the fault report names neither the vector nor `invalid opcode`")
        }
        Crash::StackOverflow if r.outcome != GuestOutcome::Failure => {
            fail("expected a failure exit (status 35)")
        }
        Crash::StackOverflow if !r.log.contains("KERNEL FAULT: vector 8 (double fault)") => {
            fail("no double-fault report: the guard page or the IST stack did not work")
        }
        Crash::StackOverflow if !r.log.contains("kernel stack overflow") => {
            fail("the fault report does not name the stack overflow")
        }
        Crash::Hang if r.outcome != GuestOutcome::Timeout => {
            fail("expected the harness to time the guest out")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: GuestOutcome, log: &str, ready: bool) -> GuestResult {
        GuestResult {
            outcome,
            log: log.to_string(),
            stderr: String::new(),
            wall: Duration::from_millis(500),
            ready_after: ready.then(|| Duration::from_millis(100)),
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const GOOD: &str = "[ 0.1] INFO  spindle: ready\nKTEST BEGIN count=2\nKTEST RUN a::x\n\
                        KTEST PASS a::x (3 us)\nKTEST RUN a::y\nKTEST PASS a::y (4 us)\n\
                        KTEST END passed=2 failed=0\n";

    #[test]
    fn a_clean_group_passes() {
        let r = result(GuestOutcome::Success, GOOD, true);
        assert!(judge_test(&r, "a::x").is_ok());
        assert!(judge_boot(&r, &names(&["a::x", "a::y"])).is_ok());
        assert!(judge_test(&r, "a::z").unwrap_err().contains("never ran"));
    }

    #[test]
    fn exit_status_contradicting_results_fails_the_boot() {
        let r = result(GuestOutcome::Failure, GOOD, true);
        assert!(judge_boot(&r, &names(&["a::x", "a::y"])).is_err());
        let r = result(GuestOutcome::Timeout, GOOD, true);
        assert!(judge_boot(&r, &names(&["a::x", "a::y"])).is_err());
        // A test the list did not announce.
        let r = result(GuestOutcome::Success, GOOD, true);
        assert!(judge_boot(&r, &names(&["a::x"])).is_err());
    }

    #[test]
    fn a_crash_mid_test_fails_it_with_the_log() {
        let log = "KTEST BEGIN count=2\nKTEST RUN a::x\nKERNEL FAULT: vector 14\n";
        let r = result(GuestOutcome::Failure, log, true);
        let err = judge_test(&r, "a::x").unwrap_err();
        assert!(
            err.contains("never finished") && err.contains("KERNEL FAULT"),
            "{err}"
        );
        assert!(judge_test(&r, "a::y").unwrap_err().contains("never ran"));
    }

    #[test]
    fn crash_rules_reject_a_successful_guest() {
        let ok = result(
            GuestOutcome::Success,
            "spindle: ready\nKERNEL PANIC: x\n",
            true,
        );
        assert!(judge_crash(Crash::Panic, &ok).is_err());
        let panic = result(
            GuestOutcome::Failure,
            "spindle: ready\nKERNEL PANIC: x\n",
            true,
        );
        assert!(judge_crash(Crash::Panic, &panic).is_ok());
        assert!(judge_crash(Crash::Exception, &panic).is_err());
        let fault = result(
            GuestOutcome::Failure,
            "KERNEL FAULT: vector 6 (invalid opcode)\n",
            true,
        );
        assert!(judge_crash(Crash::Exception, &fault).is_ok());
        let early = result(GuestOutcome::Failure, "KERNEL FAULT: vector 6\n", false);
        assert!(judge_crash(Crash::Exception, &early).is_err());
        let hung = result(GuestOutcome::Timeout, "spindle: ready\n", true);
        assert!(judge_crash(Crash::Hang, &hung).is_ok());
        let exited = result(GuestOutcome::Success, "spindle: ready\n", true);
        assert!(judge_crash(Crash::Hang, &exited).is_err());
    }
}
