//! `threads`: thread creation, futexes and thread-local storage.
//!
//! 1. 64 threads are created and joined; each reports its index.
//! 2. Contention: 64 threads x 2000 increments of one `Mutex<u64>` (musl's
//!    mutex sleeps in `futex` under contention); the total must be exact.
//! 3. Raw futexes on an `AtomicU32`: a ping-pong of 1000 round trips between
//!    two threads with `FUTEX_WAIT`/`FUTEX_WAKE`, once with the private ops
//!    and once with the shared ones; then a `FUTEX_WAIT` on an unchanging
//!    word with a 10 ms timeout must fail with ETIMEDOUT after >= 10 ms.
//! 4. `thread_local!`: 64 live threads each set their own value and read it
//!    back after all have written, and the TLS addresses are all distinct.
//!
//! Prints a line per check; exits 0 when all pass, 1 otherwise.

use image_support::{Checker, errno_name, sys};
use std::cell::Cell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const THREADS: usize = 64;
const INCREMENTS: u64 = 2000;
const ROUND_TRIPS: u32 = 1000;

fn main() -> std::process::ExitCode {
    let mut c = Checker::new("threads");
    create_and_join(&mut c);
    mutex_contention(&mut c);
    ping_pong(&mut c, true);
    ping_pong(&mut c, false);
    wait_timeout(&mut c);
    thread_locals(&mut c);
    c.finish()
}

fn create_and_join(c: &mut Checker) {
    let ran = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    let mut spawn_errors = Vec::new();
    for i in 0..THREADS {
        let ran = Arc::clone(&ran);
        match std::thread::Builder::new().spawn(move || {
            ran.fetch_add(1, Ordering::SeqCst);
            i
        }) {
            Ok(h) => handles.push(h),
            Err(e) => spawn_errors.push(format!("thread {i}: {e}")),
        }
    }
    let mut joined = Vec::new();
    for h in handles {
        if let Ok(i) = h.join() {
            joined.push(i);
        }
    }
    joined.sort_unstable();
    let all: Vec<usize> = (0..THREADS).collect();
    c.check(
        "create_join_64",
        spawn_errors.is_empty() && joined == all && ran.load(Ordering::SeqCst) == THREADS,
        format!(
            "{} created, {} joined with their own index, {} ran{}",
            THREADS - spawn_errors.len(),
            joined.len(),
            ran.load(Ordering::SeqCst),
            if spawn_errors.is_empty() {
                String::new()
            } else {
                format!("; errors: {}", spawn_errors.join("; "))
            }
        ),
    );
}

fn mutex_contention(c: &mut Checker) {
    let counter = Arc::new(Mutex::new(0u64));
    let start = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                for _ in 0..INCREMENTS {
                    *counter.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                }
            })
        })
        .collect();
    let mut joined_ok = true;
    for h in handles {
        joined_ok &= h.join().is_ok();
    }
    let total = *counter.lock().unwrap_or_else(|p| p.into_inner());
    let want = THREADS as u64 * INCREMENTS;
    c.check(
        "mutex_contention",
        joined_ok && total == want,
        format!(
            "{THREADS} threads x {INCREMENTS} increments = {total} (expected {want}) in {} ms",
            start.elapsed().as_millis()
        ),
    );
}

fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    private: bool,
    timeout: Option<&libc::timespec>,
) -> Result<i64, i32> {
    let op = if private {
        libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG
    } else {
        libc::FUTEX_WAIT
    };
    let ts = timeout.map_or(0, |t| t as *const libc::timespec as u64);
    // SAFETY: `word` is a live AtomicU32 and `ts` is null or a live timespec;
    // FUTEX_WAIT only reads them.
    unsafe {
        sys(
            libc::SYS_futex,
            &[word.as_ptr() as u64, op as u64, expected as u64, ts],
        )
    }
}

fn futex_wake(word: &AtomicU32, private: bool) -> Result<i64, i32> {
    let op = if private {
        libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG
    } else {
        libc::FUTEX_WAKE
    };
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe { sys(libc::SYS_futex, &[word.as_ptr() as u64, op as u64, 1]) }
}

/// Two threads pass a token through `word`: the main thread sets odd
/// values and waits for the next even one; the partner the reverse. Every
/// hand-off is a store, a FUTEX_WAKE, and (usually) a FUTEX_WAIT.
fn ping_pong(c: &mut Checker, private: bool) {
    let name = if private {
        "futex_ping_pong_private"
    } else {
        "futex_ping_pong_shared"
    };
    let word = Arc::new(AtomicU32::new(0));
    let bad = Arc::new(Mutex::new(Vec::<String>::new()));
    let start = Instant::now();
    let partner = {
        let (word, bad) = (Arc::clone(&word), Arc::clone(&bad));
        std::thread::spawn(move || {
            for round in 0..ROUND_TRIPS {
                let ping = 2 * round + 1;
                loop {
                    let v = word.load(Ordering::Acquire);
                    if v == ping {
                        break;
                    }
                    if let Err(e) = futex_wait(&word, v, private, None)
                        && e != libc::EAGAIN
                        && e != libc::EINTR
                    {
                        bad.lock()
                            .unwrap()
                            .push(format!("partner wait: {}", errno_name(e)));
                        return;
                    }
                }
                word.store(ping + 1, Ordering::Release);
                if let Err(e) = futex_wake(&word, private) {
                    bad.lock()
                        .unwrap()
                        .push(format!("partner wake: {}", errno_name(e)));
                    return;
                }
            }
        })
    };
    let mut woken = 0i64;
    for round in 0..ROUND_TRIPS {
        let ping = 2 * round + 1;
        word.store(ping, Ordering::Release);
        match futex_wake(&word, private) {
            Ok(n) => woken += n,
            Err(e) => {
                bad.lock()
                    .unwrap()
                    .push(format!("main wake: {}", errno_name(e)));
                break;
            }
        }
        let mut failed = false;
        loop {
            let v = word.load(Ordering::Acquire);
            if v == ping + 1 {
                break;
            }
            if let Err(e) = futex_wait(&word, v, private, None)
                && e != libc::EAGAIN
                && e != libc::EINTR
            {
                bad.lock()
                    .unwrap()
                    .push(format!("main wait: {}", errno_name(e)));
                failed = true;
                break;
            }
        }
        if failed {
            break;
        }
    }
    let joined = partner.join().is_ok();
    let errors = bad.lock().unwrap().clone();
    let last = word.load(Ordering::SeqCst);
    c.check(
        name,
        joined && errors.is_empty() && last == 2 * ROUND_TRIPS,
        format!(
            "{ROUND_TRIPS} round trips in {} ms ({} wake-ups woke a waiter), final word {last}{}",
            start.elapsed().as_millis(),
            woken,
            if errors.is_empty() {
                String::new()
            } else {
                format!("; errors: {}", errors.join("; "))
            }
        ),
    );
}

fn wait_timeout(c: &mut Checker) {
    let word = AtomicU32::new(7);
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 10_000_000,
    };
    let start = Instant::now();
    let r = futex_wait(&word, 7, true, Some(&ts));
    let took = start.elapsed();
    c.check(
        "futex_wait_timeout",
        r == Err(libc::ETIMEDOUT) && took >= Duration::from_millis(10),
        format!(
            "FUTEX_WAIT with a 10 ms timeout: {} after {} us (expected ETIMEDOUT after >= 10000 us)",
            image_support::show(r),
            took.as_micros()
        ),
    );
}

thread_local! {
    static MINE: Cell<u64> = const { Cell::new(0) };
}

fn thread_locals(c: &mut Checker) {
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let value = 0x5eed_0000 + i as u64;
                MINE.with(|m| m.set(value));
                let addr = MINE.with(|m| m as *const Cell<u64> as usize);
                // Everyone has written before anyone reads back, and no
                // thread exits (freeing its TLS) before all addresses exist.
                barrier.wait();
                let back = MINE.with(|m| m.get());
                (i, value == back, addr)
            })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        if let Ok(r) = h.join() {
            results.push(r);
        }
    }
    let main_value = MINE.with(|m| m.get());
    let kept = results.iter().filter(|r| r.1).count();
    let addrs: HashSet<usize> = results.iter().map(|r| r.2).collect();
    c.check(
        "thread_local_values",
        results.len() == THREADS && kept == THREADS && main_value == 0,
        format!(
            "{kept} of {THREADS} threads read back their own value; the main thread's is {main_value} (expected 0)"
        ),
    );
    c.check(
        "thread_local_addresses",
        addrs.len() == THREADS,
        format!(
            "{} distinct TLS addresses among {THREADS} live threads",
            addrs.len()
        ),
    );
}
