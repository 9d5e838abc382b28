//! `sysbench`: the guest half of `cargo spindle bench syscalls`.
//!
//! - `syscall_getppid`: raw `syscall(SYS_getppid)` round trip (100,000);
//! - `futex_ping_pong`: two threads hand a token back and forth through an
//!   `AtomicU32` with FUTEX_WAIT/FUTEX_WAKE (private), per round trip
//!   (10,000);
//! - `thread_create_join`: `std::thread::spawn` + `join` of an empty
//!   closure (1,000).
//!
//! Prints `BENCH <name> <ns_per_op> ns` per benchmark and `BENCH END`.
//! `--quick` divides every count by 10 (for the test suite). Times are
//! CLOCK_MONOTONIC as the guest sees it.

use image_support::{Args, sys, usage_error};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

fn main() -> ExitCode {
    let mut args = Args::from_env();
    let divisor = if args.flag("--quick") { 10 } else { 1 };
    if let Some(extra) = args.rest().first() {
        return usage_error(
            "sysbench",
            &format!("unexpected argument {extra:?} (usage: sysbench [--quick])"),
        );
    }
    let mut failed = false;
    report("syscall_getppid", 100_000 / divisor, getppid_loop);
    failed |= !report("futex_ping_pong", 10_000 / divisor, ping_pong);
    failed |= !report("thread_create_join", 1_000 / divisor, create_join);
    println!("BENCH END");
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs `f(n)` (true when it worked) and prints the per-operation time.
fn report(name: &str, n: u32, f: fn(u32) -> bool) -> bool {
    let start = Instant::now();
    let ok = f(n);
    let ns = start.elapsed().as_nanos() / u128::from(n.max(1));
    if ok {
        println!("BENCH {name} {ns} ns");
    } else {
        println!("sysbench: {name} FAILED");
    }
    ok
}

fn getppid_loop(n: u32) -> bool {
    let mut ok = true;
    for _ in 0..n {
        // SAFETY: getppid takes no arguments and touches no memory.
        ok &= unsafe { sys(libc::SYS_getppid, &[]) }.is_ok();
    }
    ok
}

fn futex(word: &AtomicU32, op: i32, val: u32) -> Result<i64, i32> {
    // SAFETY: `word` is a live AtomicU32; no timeout pointer.
    unsafe {
        sys(
            libc::SYS_futex,
            &[
                word.as_ptr() as u64,
                (op | libc::FUTEX_PRIVATE_FLAG) as u64,
                val as u64,
                0,
            ],
        )
    }
}

/// Waits until `word` holds `want`.
fn wait_for(word: &AtomicU32, want: u32) -> bool {
    loop {
        let v = word.load(Ordering::Acquire);
        if v == want {
            return true;
        }
        match futex(word, libc::FUTEX_WAIT, v) {
            Ok(_) | Err(libc::EAGAIN) | Err(libc::EINTR) => {}
            Err(_) => return false,
        }
    }
}

fn ping_pong(n: u32) -> bool {
    let word = Arc::new(AtomicU32::new(0));
    let partner = {
        let word = Arc::clone(&word);
        std::thread::spawn(move || {
            for i in 0..n {
                if !wait_for(&word, 2 * i + 1) {
                    return false;
                }
                word.store(2 * i + 2, Ordering::Release);
                if futex(&word, libc::FUTEX_WAKE, 1).is_err() {
                    return false;
                }
            }
            true
        })
    };
    let mut ok = true;
    for i in 0..n {
        word.store(2 * i + 1, Ordering::Release);
        ok &= futex(&word, libc::FUTEX_WAKE, 1).is_ok();
        if !wait_for(&word, 2 * i + 2) {
            ok = false;
            break;
        }
    }
    partner.join().unwrap_or(false) && ok
}

fn create_join(n: u32) -> bool {
    (0..n).all(|_| std::thread::spawn(|| {}).join().is_ok())
}
