//! Reading back what the guest process did from the serial log: its ends
//! (exit status or signal), the kernel's memory figures around each run,
//! its own output apart from kernel lines, and the runner's exit code from
//! all that. The line formats are the kernel contract documented in
//! `images.rs`; a death by signal may end in ` (core dumped)`.

use crate::guest::GuestOutcome;

/// How one run of the process ended, from the kernel's line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessEnd {
    Exited {
        argv0: String,
        pid: u64,
        status: i32,
    },
    Killed {
        argv0: String,
        pid: u64,
        signal: String,
    },
}

/// The kernel's memory figures (`<F> free frames, <H> heap bytes in use`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryFigures {
    pub free_frames: u64,
    pub heap_bytes: u64,
}

/// `spindle: teardown of pid <N>: <W> kernel-only workers inside at exit,
/// last LWP gone <X> us after exit began, resources freed after <Y> us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Teardown {
    pub pid: u64,
    /// Kernel-only LWPs (the network workers) inside when exit began.
    pub workers: u64,
    /// From exit's start until the last LWP (a worker, with a network
    /// device) had left, in microseconds.
    pub last_lwp_gone_us: u64,
    /// From exit's start until the address space, descriptors and device
    /// attachment were freed, in microseconds.
    pub freed_us: u64,
}

fn parse_teardown(rest: &str) -> Option<Teardown> {
    let rest = rest.strip_prefix("teardown of pid ")?;
    let (pid, rest) = rest.split_once(": ")?;
    let (workers, rest) = rest.split_once(" kernel-only workers inside at exit, last LWP gone ")?;
    let (gone, rest) = rest.split_once(" us after exit began, resources freed after ")?;
    let freed = rest.strip_suffix(" us")?;
    Some(Teardown {
        pid: pid.parse().ok()?,
        workers: workers.parse().ok()?,
        last_lwp_gone_us: gone.parse().ok()?,
        freed_us: freed.trim().parse().ok()?,
    })
}

/// What the serial log says about the process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessLog {
    /// One entry per run, in order.
    pub ends: Vec<ProcessEnd>,
    /// `spindle: cannot run <argv0>: <why>`: the whole line after `spindle: `.
    pub cannot_run: Option<String>,
    /// The pids whose `killed by signal` line ended in `(core dumped)`.
    pub dumped_core: Vec<u64>,
    pub memory_before: Vec<MemoryFigures>,
    pub memory_after: Vec<MemoryFigures>,
    /// One per run whose exit the kernel timed.
    pub teardowns: Vec<Teardown>,
    /// The process's output: every line after the first
    /// `memory before process` line that is neither a kernel log line nor a
    /// `spindle: ` line.
    pub output: String,
}

impl ProcessLog {
    /// The exit statuses of the runs that exited (not killed).
    pub fn statuses(&self) -> Vec<i32> {
        self.ends
            .iter()
            .filter_map(|e| match e {
                ProcessEnd::Exited { status, .. } => Some(*status),
                ProcessEnd::Killed { .. } => None,
            })
            .collect()
    }

    /// True when the kernel said the process `pid` was killed with
    /// `(core dumped)`.
    pub fn core_dumped(&self, pid: u64) -> bool {
        self.dumped_core.contains(&pid)
    }
}

/// True for a kernel log line: `[ <seconds>.<micros>] LEVEL ...`.
pub fn is_kernel_log_line(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('[') else {
        return false;
    };
    let Some((stamp, after)) = rest.split_once(']') else {
        return false;
    };
    let stamp = stamp.trim();
    let stamp_ok = stamp.split_once('.').is_some_and(|(s, f)| {
        !s.is_empty()
            && !f.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && f.bytes().all(|b| b.is_ascii_digit())
    });
    let level = after.split_whitespace().next().unwrap_or("");
    stamp_ok && ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level)
}

fn parse_memory(rest: &str) -> Option<MemoryFigures> {
    // "<F> free frames, <H> heap bytes in use"
    let (frames, heap) = rest.split_once(',')?;
    let free_frames = frames
        .trim()
        .strip_suffix("free frames")?
        .trim()
        .parse()
        .ok()?;
    let heap_bytes = heap
        .trim()
        .strip_suffix("heap bytes in use")?
        .trim()
        .parse()
        .ok()?;
    Some(MemoryFigures {
        free_frames,
        heap_bytes,
    })
}

/// Parses the end line after `spindle: `; the flag says `(core dumped)`.
fn parse_end(rest: &str) -> Option<(ProcessEnd, bool)> {
    // "process <argv0> (pid <N>) exited with status <S>" or
    // "process <argv0> (pid <N>) killed by signal <SIG>", optionally
    // followed by " (core dumped)"
    let rest = rest.strip_prefix("process ")?;
    let open = rest.rfind(" (pid ")?;
    let argv0 = rest[..open].to_string();
    let (pid, tail) = rest[open + 6..].split_once(") ")?;
    let pid: u64 = pid.parse().ok()?;
    if let Some(s) = tail.strip_prefix("exited with status ") {
        let end = ProcessEnd::Exited {
            argv0,
            pid,
            status: s.trim().parse().ok()?,
        };
        return Some((end, false));
    }
    let signal = tail.strip_prefix("killed by signal ")?.trim();
    let (signal, dumped) = match signal.strip_suffix("(core dumped)") {
        Some(s) => (s.trim_end(), true),
        None => (signal, false),
    };
    if signal.is_empty() || signal.contains(char::is_whitespace) {
        return None;
    }
    let end = ProcessEnd::Killed {
        argv0,
        pid,
        signal: signal.to_string(),
    };
    Some((end, dumped))
}

/// Reads the process's story out of a serial log.
pub fn parse_process_log(log: &str) -> ProcessLog {
    let mut p = ProcessLog::default();
    let mut started = false;
    for line in log.lines().map(|l| l.trim_end_matches('\r')) {
        if is_kernel_log_line(line) {
            continue;
        }
        // The kernel's lines may follow process output that did not end
        // its line, so look for them anywhere.
        if let Some(at) = line.find("spindle: ") {
            let rest = &line[at + "spindle: ".len()..];
            let before = &line[..at];
            if started && !before.is_empty() {
                p.output.push_str(before);
                p.output.push('\n');
            }
            if let Some(m) = rest.strip_prefix("memory before process: ") {
                started = true;
                p.memory_before.extend(parse_memory(m));
            } else if let Some(m) = rest.strip_prefix("memory after exit: ") {
                p.memory_after.extend(parse_memory(m));
            } else if let Some(t) = parse_teardown(rest) {
                p.teardowns.push(t);
            } else if let Some((end, dumped)) = parse_end(rest) {
                if let (ProcessEnd::Killed { pid, .. }, true) = (&end, dumped) {
                    p.dumped_core.push(*pid);
                }
                p.ends.push(end);
            } else if rest.starts_with("cannot run ") && p.cannot_run.is_none() {
                p.cannot_run = Some(rest.to_string());
            }
            continue;
        }
        if started {
            p.output.push_str(line);
            p.output.push('\n');
        }
    }
    p
}

/// The runner's exit status for `cargo spindle run`: the process's status
/// when the kernel reported one and powered off consistently with it;
/// otherwise as without an image (0 success, 1 failure, 2 anything else,
/// 130 interrupted). `killed by signal` gives 128 + the signal number when
/// the kernel names it by number, else 1. The note, if any, says why the
/// status is not simply the process's.
pub fn runner_exit_code(outcome: &GuestOutcome, log: &ProcessLog) -> (u8, Option<String>) {
    let base = match outcome {
        GuestOutcome::Success => 0,
        GuestOutcome::Failure => 1,
        GuestOutcome::Interrupted => return (130, None),
        _ => 2,
    };
    let Some(last) = log.ends.last() else {
        let note = log
            .cannot_run
            .as_ref()
            .map(|c| format!("the kernel said: {c}"));
        return (base, note);
    };
    match (last, outcome) {
        (ProcessEnd::Exited { status, .. }, GuestOutcome::Success) if *status == 0 => (0, None),
        (ProcessEnd::Exited { status, .. }, GuestOutcome::Failure) if *status != 0 => {
            (u8::try_from(*status & 0xff).unwrap_or(1), None)
        }
        (ProcessEnd::Killed { signal, .. }, GuestOutcome::Failure) => {
            let code = signal
                .parse::<u8>()
                .ok()
                .filter(|s| *s < 128)
                .map_or(1, |s| 128 + s);
            (code, None)
        }
        (end, _) => (
            if base == 0 { 1 } else { base },
            Some(format!(
                "the kernel's power-off ({outcome:?}) contradicts the process's end ({end:?})"
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn killed(argv0: &str, pid: u64, signal: &str) -> ProcessEnd {
        ProcessEnd::Killed {
            argv0: argv0.into(),
            pid,
            signal: signal.into(),
        }
    }

    #[test]
    fn signal_deaths_with_and_without_a_core_are_parsed() {
        let log = "spindle: memory before process: 5 free frames, 6 heap bytes in use\n\
                   spindle: process target (pid 2) killed by signal 9\n\
                   spindle: process target (pid 3) killed by signal 11 (core dumped)\n\
                   outputspindle: process my prog (pid 4) killed by signal SIGABRT (core dumped)\n\
                   spindle: process target (pid 5) exited with status 0\n";
        let p = parse_process_log(log);
        assert_eq!(
            p.ends,
            vec![
                killed("target", 2, "9"),
                killed("target", 3, "11"),
                killed("my prog", 4, "SIGABRT"),
                ProcessEnd::Exited {
                    argv0: "target".into(),
                    pid: 5,
                    status: 0
                },
            ]
        );
        assert_eq!(p.dumped_core, vec![3, 4]);
        assert!(!p.core_dumped(2) && p.core_dumped(3) && !p.core_dumped(5));
        assert_eq!(p.output, "output\n");
        // The status is the signal's either way.
        let one = |line: &str| ProcessLog {
            ends: parse_process_log(line).ends,
            ..Default::default()
        };
        let dumped = one("spindle: process t (pid 1) killed by signal 11 (core dumped)");
        assert_eq!(runner_exit_code(&GuestOutcome::Failure, &dumped).0, 139);
    }

    #[test]
    fn malformed_signal_lines_are_not_process_ends() {
        for line in [
            "spindle: process t (pid 1) killed by signal (core dumped)",
            "spindle: process t (pid 1) killed by signal 9 (core",
            "spindle: process t (pid 1) killed by signal 9 and more",
            "spindle: process t (pid 1) killed by signal",
        ] {
            let p = parse_process_log(line);
            assert!(p.ends.is_empty(), "{line}: {:?}", p.ends);
            assert!(p.dumped_core.is_empty(), "{line}");
        }
    }

    #[test]
    fn teardown_lines_are_read_and_malformed_ones_ignored() {
        let log = "spindle: process iperf (pid 2) killed by signal 15\n\
                   spindle: teardown of pid 2: 2 kernel-only workers inside at exit, last LWP gone 1514 us after exit began, resources freed after 5146 us\n\
                   spindle: teardown of pid 3: x kernel-only workers inside at exit, last LWP gone 1 us after exit began, resources freed after 2 us\n\
                   spindle: teardown of pid 4: 1 kernel-only workers inside at exit\n";
        let p = parse_process_log(log);
        assert_eq!(
            p.teardowns,
            vec![Teardown {
                pid: 2,
                workers: 2,
                last_lwp_gone_us: 1514,
                freed_us: 5146
            }]
        );
        assert_eq!(p.ends, vec![killed("iperf", 2, "15")]);
    }
}
