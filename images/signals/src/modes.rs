//! The process-ending modes: `fault` (an unhandled fault in a thread other
//! than main) and `raise` (a signal with its default action).

use crate::abi::{self, bit, set_disposition, unmapped_page};
use crate::faults;
use std::io::Write;
use std::process::ExitCode;

/// What a signal does by default (Linux `signal(7)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Terminate,
    Core,
    Ignore,
    Stop,
    Continue,
}

/// Linux's standard signals: number, name without `SIG`, default action.
const SIGNALS: [(i32, &str, Action); 31] = {
    use Action::*;
    [
        (1, "HUP", Terminate),
        (2, "INT", Terminate),
        (3, "QUIT", Core),
        (4, "ILL", Core),
        (5, "TRAP", Core),
        (6, "ABRT", Core),
        (7, "BUS", Core),
        (8, "FPE", Core),
        (9, "KILL", Terminate),
        (10, "USR1", Terminate),
        (11, "SEGV", Core),
        (12, "USR2", Terminate),
        (13, "PIPE", Terminate),
        (14, "ALRM", Terminate),
        (15, "TERM", Terminate),
        (16, "STKFLT", Terminate),
        (17, "CHLD", Ignore),
        (18, "CONT", Continue),
        (19, "STOP", Stop),
        (20, "TSTP", Stop),
        (21, "TTIN", Stop),
        (22, "TTOU", Stop),
        (23, "URG", Ignore),
        (24, "XCPU", Core),
        (25, "XFSZ", Core),
        (26, "VTALRM", Terminate),
        (27, "PROF", Terminate),
        (28, "WINCH", Ignore),
        (29, "IO", Terminate),
        (30, "PWR", Terminate),
        (31, "SYS", Core),
    ]
};

/// `TERM`, `SIGTERM`, `term` or `15`.
fn parse_signal(word: &str) -> Option<(i32, &'static str, Action)> {
    let upper = word.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .copied()
        .find(|(n, s, _)| *s == name || name.parse::<i32>() == Ok(*n))
}

fn flush() {
    let _ = std::io::stdout().flush();
}

/// `raise SIG`: the signal with its default action, sent to this thread.
/// Survivors (ignore, continue) print `signals: survived SIG<NAME>` and
/// exit 0; a terminating signal that fails to terminate exits 1.
pub fn raise(word: &str) -> ExitCode {
    let Some((sig, name, action)) = parse_signal(word) else {
        return image_support::usage_error("signals", &format!("raise: unknown signal {word:?}"));
    };
    println!("signals: raising SIG{name} (signal {sig}, default action {action:?})");
    flush();
    if sig != libc::SIGKILL && sig != libc::SIGSTOP {
        set_disposition(sig, libc::SIG_DFL);
    }
    abi::unblock(bit(sig));
    let r = abi::raise_here(sig);
    println!("signals: survived SIG{name}");
    match (r, action) {
        (Ok(_), Action::Ignore | Action::Continue) => ExitCode::SUCCESS,
        (r, _) => {
            println!(
                "signals: SIG{name} should have ended the process (tgkill: {})",
                image_support::show(r)
            );
            ExitCode::FAILURE
        }
    }
}

/// `fault segv|ill|fpe [--no-core]`: a thread named `faulter` faults with
/// no handler (the runtime's SIGSEGV handler is removed first) while the
/// main thread waits to join it. `--no-core` sets RLIMIT_CORE to 0 first.
pub fn fault(kind: &str, no_core: bool) -> ExitCode {
    if !["segv", "ill", "fpe"].contains(&kind) {
        return image_support::usage_error(
            "signals",
            &format!("fault: {kind:?} is not segv, ill or fpe"),
        );
    }
    if no_core {
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit and getrlimit read and write live structures.
        let (set, now) = unsafe {
            let set = libc::setrlimit(libc::RLIMIT_CORE, &zero);
            let mut now = libc::rlimit {
                rlim_cur: 1,
                rlim_max: 1,
            };
            libc::getrlimit(libc::RLIMIT_CORE, &mut now);
            (set, now)
        };
        if set != 0 || now.rlim_cur != 0 {
            println!(
                "signals: setrlimit(RLIMIT_CORE, 0) failed: {} (now {})",
                std::io::Error::last_os_error(),
                now.rlim_cur
            );
            return ExitCode::FAILURE;
        }
        println!("signals: core dumps disabled (RLIMIT_CORE 0)");
    }
    for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE] {
        set_disposition(sig, libc::SIG_DFL);
    }
    let kind = kind.to_string();
    let faulter = std::thread::Builder::new()
        .name("faulter".into())
        .spawn(move || fault_now(&kind));
    match faulter {
        Ok(h) => {
            let _ = h.join();
            println!("signals: the fault did not end the process");
        }
        Err(e) => println!("signals: cannot start the faulting thread: {e}"),
    }
    ExitCode::FAILURE
}

fn fault_now(kind: &str) {
    // This first line also sets up stdout's buffer, so nothing allocates
    // between making the hole below and the load (an allocation could
    // map memory right there).
    println!("signals: thread faulter faults ({kind})");
    flush();
    // SAFETY (all three): each faults on purpose, with no handler, which
    // must end the process; none returns.
    unsafe {
        match kind {
            "segv" => {
                let Some(hole) = unmapped_page() else {
                    println!("signals: could not make an unmapped page");
                    return;
                };
                println!("signals: faulting at {hole:#x}");
                flush();
                faults::load(hole);
            }
            "ill" => {
                println!(
                    "signals: faulting at {:#x}",
                    faults::ud2 as *const () as u64
                );
                flush();
                faults::ud2();
            }
            _ => {
                println!("signals: faulting at {:#x}", faults::div_address());
                flush();
                faults::divide(1, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_numbers_parse() {
        assert_eq!(parse_signal("TERM").map(|s| s.0), Some(15));
        assert_eq!(parse_signal("sigquit").map(|s| s.2), Some(Action::Core));
        assert_eq!(parse_signal("18").map(|s| s.1), Some("CONT"));
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(parse_signal("32"), None);
        for (i, (n, _, _)) in SIGNALS.iter().enumerate() {
            assert_eq!(*n as usize, i + 1);
        }
    }
}
