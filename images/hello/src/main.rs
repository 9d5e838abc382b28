//! `hello`: the smallest useful guest. Prints `hello from spindle`, then
//! every argument as `argv[i] = ...` (argv[0] included), then acts on its
//! options:
//!
//! - `--threads N`: spawns N threads that each print `thread <i> of <N>`,
//!   and joins them;
//! - `--sleep-ms N`: prints `sleeping N ms`, makes one `nanosleep` of N
//!   milliseconds, and prints `slept N ms (measured M ms, returned R)` (R
//!   the raw result: 0, or minus an errno);
//! - `--poll-ms N`: the same with one `poll` of no descriptors and a
//!   timeout of N ms: `polling N ms`, then `polled N ms (measured M ms,
//!   returned R)`. A stop and continue in the middle (`ctl pstop`/`prun`)
//!   must not end either early nor make it wait its whole time again: both
//!   go on to their first deadline (`restart_syscall`);
//! - `--exit CODE`: exits with CODE (0..=255) instead of 0;
//! - `--touch-kernel`: reads kernel memory (0xffff_8000_0000_0000) from user
//!   mode, which must end the process with SIGSEGV (it never returns);
//! - `--thread-exit`: leaves through the thread-exit system call (`exit`,
//!   not `exit_group`), so the process ends because its last user thread
//!   did.
//!
//! A malformed option value exits with status 2 and says why.

use image_support::{Args, usage_error};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    println!("hello from spindle");
    for (i, arg) in std::env::args_os().enumerate() {
        println!("argv[{i}] = {}", arg.to_string_lossy());
    }
    let mut args = Args::from_env();
    let threads: u32 = match args.take("--threads") {
        Ok(n) => n.unwrap_or(0),
        Err(e) => return usage_error("hello", &e),
    };
    let sleep_ms: u64 = match args.take("--sleep-ms") {
        Ok(n) => n.unwrap_or(0),
        Err(e) => return usage_error("hello", &e),
    };
    let poll_ms: i32 = match args.take("--poll-ms") {
        Ok(n) => n.unwrap_or(0),
        Err(e) => return usage_error("hello", &e),
    };
    let exit: u8 = match args.take("--exit") {
        Ok(n) => n.unwrap_or(0),
        Err(e) => return usage_error("hello", &format!("{e} (0..=255)")),
    };
    if args.flag("--touch-kernel") {
        println!("reading kernel memory from user mode");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // SAFETY: none: this read must fault, and the kernel must end the
        // process for it (the test of that rule).
        let value = unsafe { std::ptr::read_volatile(0xffff_8000_0000_0000_u64 as *const u64) };
        println!("hello: read {value:#x} from kernel memory: the kernel let user mode in");
        return ExitCode::FAILURE;
    }
    if threads > 0 {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                std::thread::Builder::new()
                    .name(format!("hello-{i}"))
                    .spawn(move || println!("thread {i} of {threads}"))
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            match h {
                Ok(h) => {
                    if h.join().is_err() {
                        println!("hello: thread {i} panicked");
                        return ExitCode::FAILURE;
                    }
                }
                Err(e) => {
                    println!("hello: cannot create thread {i}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        println!("joined {threads} threads");
    }
    if sleep_ms > 0 {
        let request = libc::timespec {
            tv_sec: (sleep_ms / 1000) as _,
            tv_nsec: ((sleep_ms % 1000) * 1_000_000) as libc::c_long,
        };
        timed("slept", "sleeping", sleep_ms, || {
            // SAFETY: `request` is a live timespec; no remainder wanted.
            unsafe { libc::syscall(libc::SYS_nanosleep, &request, std::ptr::null_mut::<u8>()) }
        });
    }
    if poll_ms > 0 {
        timed("polled", "polling", poll_ms as u64, || {
            // SAFETY: no descriptors: the null array is never read.
            unsafe { libc::syscall(libc::SYS_poll, std::ptr::null_mut::<u8>(), 0, poll_ms) }
        });
    }
    if exit != 0 {
        println!("exiting with status {exit}");
    }
    if args.flag("--thread-exit") {
        println!("leaving through the thread-exit system call");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // SAFETY: ends this (the last) thread; nothing runs after it.
        unsafe { libc::syscall(libc::SYS_exit, i64::from(exit)) };
    }
    ExitCode::from(exit)
}

/// Prints `{before} N ms`, runs `call` (a raw system call), then prints
/// `{after} N ms (measured M ms, returned R)`, R being 0 or minus an errno.
fn timed(after: &str, before: &str, ms: u64, call: impl FnOnce() -> libc::c_long) {
    println!("{before} {ms} ms");
    let start = Instant::now();
    let returned = match call() {
        -1 => -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)),
        r => r,
    };
    println!(
        "{after} {ms} ms (measured {} ms, returned {returned})",
        start.elapsed().as_millis()
    );
}
