//! `signals`: Linux signal semantics, checked from user mode.
//!
//! With no arguments, every check runs in this one process and prints one
//! line (`ok   name: detail` or `FAIL name: detail`); the exit status is 0
//! when all pass. The checks, in order:
//!
//! - delivery (`delivery.rs`): siginfo of `tgkill` (`SI_TKILL`) and `kill`
//!   (`SI_USER`) with `si_pid`; a blocked signal stays pending and is
//!   handled at unblock; `rt_sigaction` reads back; the handler's
//!   `sa_mask` is in force inside it and the old mask is back after;
//!   `SA_NODEFER` nests, without it the second delivery waits;
//!   `SA_RESETHAND`; `SIG_IGN` discards (also at unblock, and flushes a
//!   pending signal); SIGCHLD, SIGURG and SIGWINCH are ignored by default;
//! - threads (`threads.rs`): `tgkill` runs the handler on the named thread;
//!   a process-directed `kill` is handled by the thread that does not
//!   block it;
//! - blocking calls (`interrupt.rs`): a raw `FUTEX_WAIT` keeps waiting
//!   across a `SA_RESTART` handler and fails with EINTR without it;
//!   nanosleep and clock_nanosleep fail with EINTR and fill in the time
//!   remaining, poll and ppoll fail with EINTR, pause too (all even with
//!   `SA_RESTART`); `rt_sigsuspend` waits under its mask, returns EINTR
//!   and puts the old mask back; `rt_sigtimedwait` takes a pending signal
//!   at once, times out with EAGAIN, and is woken by another thread's
//!   `tgkill` or `kill`;
//! - context (`context.rs`): `SA_ONSTACK` runs the handler on the
//!   `sigaltstack` (which then reports `SS_ONSTACK`); faults caught by a
//!   handler that steps over the instruction: an unmapped load (SIGSEGV,
//!   `SEGV_MAPERR`), a store to a read-only page (`SEGV_ACCERR`), `ud2`
//!   (SIGILL, `ILL_ILLOPN`), division by zero (SIGFPE, `FPE_INTDIV`), each
//!   with Linux's `si_addr` and `rip`; `rt_sigreturn` restores general and
//!   XMM registers a handler clobbered, and the ucontext showed them;
//! - errors (`errors.rs`): bad signal numbers, missing pids and tids,
//!   `SIGKILL`/`SIGSTOP` cannot be caught or blocked, wrong `sigsetsize`,
//!   bad pointers (EFAULT).
//!
//! Other modes, which end the process:
//!
//! - `signals fault segv|ill|fpe [--no-core]`: a thread other than main
//!   faults with no handler, after printing `signals: faulting at <addr>`;
//!   `--no-core` sets RLIMIT_CORE to 0 first, so no core is dumped.
//! - `signals raise SIG` (`TERM`, `SIGQUIT`, `18`...): the signal with its
//!   default action; ignored or continuing signals print
//!   `signals: survived SIG<NAME>` and exit 0.

mod abi;
mod context;
mod delivery;
mod errors;
mod faults;
mod handlers;
mod interrupt;
mod modes;
mod threads;

use image_support::{Args, Checker, usage_error};
use std::process::ExitCode;

const USAGE: &str = "usage: signals [fault segv|ill|fpe [--no-core] | raise SIG]";

fn main() -> ExitCode {
    let mut args = Args::from_env();
    let no_core = args.flag("--no-core");
    match args.rest() {
        [] if !no_core => run_checks(),
        [mode, kind] if mode == "fault" => modes::fault(kind, no_core),
        [mode, sig] if mode == "raise" && !no_core => modes::raise(sig),
        _ => usage_error("signals", USAGE),
    }
}

fn run_checks() -> ExitCode {
    let mut c = Checker::new("signals");
    let start = std::time::Instant::now();
    delivery::run(&mut c);
    threads::run(&mut c);
    interrupt::run(&mut c);
    context::run(&mut c);
    errors::run(&mut c);
    let left = abi::pending();
    c.check(
        "nothing_left_pending",
        left == 0,
        format!("pending at the end: {}", abi::names(left)),
    );
    println!("signals: checks took {} ms", start.elapsed().as_millis());
    c.finish()
}
