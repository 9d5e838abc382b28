//! Blocking calls and signals: which calls a handled signal interrupts
//! with EINTR and which `SA_RESTART` resumes; `rt_sigsuspend`,
//! `rt_sigtimedwait` and `pause`.
//!
//! A blocked call runs in a helper thread; the main thread waits until the
//! helper is about to make the call, gives it [`SETTLE`] to get into the
//! kernel, and sends SIGUSR1 with `tgkill`. Helpers block every other
//! standard signal, so a helper left stuck by a failure cannot take a
//! process-directed signal meant for a later check.

use crate::abi::{
    self, SIGSET_SIZE, SigSet, bit, block, current_mask, futex_wait, futex_wake, getpid, gettid,
    install, kill, names, nanos, restore, set_mask, tgkill, timespec_ms,
};
use crate::handlers::{REC, on_signal};
use image_support::{Checker, SysResult, show, sys};
use libc::{SIGUSR1, SIGUSR2};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Time for a helper to get from "about to call" into the blocking call.
const SETTLE: Duration = Duration::from_millis(30);
/// How long a check waits for something that should take milliseconds.
const LIMIT: Duration = Duration::from_secs(3);
/// How long the timed calls ask to sleep.
const SLEEP_MS: u64 = 1000;

pub fn run(c: &mut Checker) {
    futex_wait_restarts(c);
    futex_wait_eintr(c);
    sleeps_and_polls_eintr(c);
    pause_eintr(c);
    sigsuspend_waits(c);
    sigsuspend_takes_pending(c);
    sigtimedwait_takes_pending(c);
    sigtimedwait_times_out(c);
    sigtimedwait_woken(c, false);
    sigtimedwait_woken(c, true);
}

/// A helper thread about to make one blocking call.
struct Blocker<T> {
    handle: JoinHandle<(T, Duration)>,
    tid: i32,
}

impl<T: Send + 'static> Blocker<T> {
    /// Starts `call` in a new thread; returns once it is about to block.
    fn start(call: impl FnOnce() -> T + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            set_mask(0x7fff_ffff & !bit(SIGUSR1));
            let _ = tx.send(gettid());
            let start = Instant::now();
            let r = call();
            (r, start.elapsed())
        });
        let tid = rx.recv().unwrap_or(-1);
        std::thread::sleep(SETTLE);
        Blocker { handle, tid }
    }

    /// Sends SIGUSR1 to the helper.
    fn signal(&self) -> SysResult {
        tgkill(getpid(), self.tid, SIGUSR1)
    }

    /// True when the call returned within `limit`.
    fn finishes_within(&self, limit: Duration) -> bool {
        let start = Instant::now();
        while !self.handle.is_finished() {
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// The call's result and how long it took; `None` when it has not
    /// returned (the thread is left behind, never joined).
    fn result(self) -> Option<(T, Duration)> {
        if self.finishes_within(LIMIT) {
            self.handle.join().ok()
        } else {
            None
        }
    }
}

fn futex_wait_restarts(c: &mut Checker) {
    let old = install(SIGUSR1, on_signal, libc::SA_RESTART, 0);
    REC.reset();
    let word = Arc::new(AtomicU32::new(0));
    let w = Arc::clone(&word);
    let b = Blocker::start(move || futex_wait(&w, 0));
    let sent = b.signal();
    let handled = REC.wait_count(1, LIMIT);
    let on_helper = REC.tid.load(SeqCst) == b.tid;
    // Restarted, the call goes on waiting until a FUTEX_WAKE.
    let still_waiting = !b.finishes_within(Duration::from_millis(100));
    let start = Instant::now();
    while !b.handle.is_finished() && start.elapsed() < LIMIT {
        let _ = futex_wake(&word);
        std::thread::sleep(Duration::from_millis(2));
    }
    let result = b.result();
    if result.is_none() {
        word.store(1, SeqCst);
        let _ = futex_wake(&word);
    }
    restore(SIGUSR1, &old);
    let r = result.as_ref().map(|(r, _)| *r);
    c.check(
        "futex_wait_sa_restart_keeps_waiting",
        sent == Ok(0) && handled && on_helper && still_waiting && r == Some(Ok(0)),
        format!(
            "signal {}, handled on the waiter: {}; still waiting 100 ms after the handler: \
             {still_waiting}; after FUTEX_WAKE the wait returned {} (expected ok 0)",
            show(sent),
            handled && on_helper,
            r.map_or("nothing (still blocked)".into(), show)
        ),
    );
}

fn futex_wait_eintr(c: &mut Checker) {
    let old = install(SIGUSR1, on_signal, 0, 0);
    REC.reset();
    let word = Arc::new(AtomicU32::new(0));
    let w = Arc::clone(&word);
    let b = Blocker::start(move || futex_wait(&w, 0));
    let sent = b.signal();
    let result = b.result();
    if result.is_none() {
        word.store(1, SeqCst);
        let _ = futex_wake(&word);
    }
    restore(SIGUSR1, &old);
    let r = result.map(|(r, _)| r);
    c.check(
        "futex_wait_without_sa_restart_eintr",
        sent == Ok(0) && REC.count() == 1 && r == Some(Err(libc::EINTR)),
        format!(
            "signal {}, handled {}; the wait returned {} (expected EINTR, no wake needed)",
            show(sent),
            REC.count(),
            r.map_or("nothing within 3 s".into(), show)
        ),
    );
}

/// A sleep of SLEEP_MS through the raw call `nr` with a remaining-time
/// output; the result and the remaining time.
fn sleep_call(clock: bool) -> (SysResult, libc::timespec) {
    let req = timespec_ms(SLEEP_MS);
    let mut rem = timespec_ms(0);
    let (req_p, rem_p) = (&req as *const _ as u64, &mut rem as *mut _ as u64);
    // SAFETY: both pointers are live timespecs.
    let r = unsafe {
        if clock {
            sys(
                libc::SYS_clock_nanosleep,
                &[libc::CLOCK_MONOTONIC as u64, 0, req_p, rem_p],
            )
        } else {
            sys(libc::SYS_nanosleep, &[req_p, rem_p])
        }
    };
    (r, rem)
}

/// nanosleep, clock_nanosleep, poll and ppoll return EINTR after a
/// handler even with SA_RESTART; the sleeps fill in the time remaining.
fn sleeps_and_polls_eintr(c: &mut Checker) {
    let old = install(SIGUSR1, on_signal, libc::SA_RESTART, 0);
    for (name, clock) in [
        ("nanosleep_eintr_fills_rem", false),
        ("clock_nanosleep_eintr_fills_rem", true),
    ] {
        REC.reset();
        let b = Blocker::start(move || sleep_call(clock));
        let sent = b.signal();
        let got = b.result();
        let (ok, what) = match got {
            Some(((r, rem), took)) => {
                let left = nanos(&rem);
                let want_max = SLEEP_MS as i128 * 1_000_000;
                (
                    r == Err(libc::EINTR) && left > 0 && left < want_max,
                    format!(
                        "returned {} after {} ms with rem {} ms",
                        show(r),
                        took.as_millis(),
                        left / 1_000_000
                    ),
                )
            }
            None => (false, "still asleep 3 s after the signal".into()),
        };
        c.check(
            name,
            ok && sent == Ok(0) && REC.count() == 1,
            format!(
                "{SLEEP_MS} ms sleep, SA_RESTART handler, signal {}: {what} \
                 (expected EINTR, 0 < rem < {SLEEP_MS} ms)",
                show(sent)
            ),
        );
    }
    for (name, use_ppoll) in [("poll_eintr", false), ("ppoll_eintr", true)] {
        REC.reset();
        let b = Blocker::start(move || {
            let ts = timespec_ms(SLEEP_MS);
            // SAFETY: no fds (nfds 0); `ts` is a live timespec.
            unsafe {
                if use_ppoll {
                    sys(
                        libc::SYS_ppoll,
                        &[0, 0, &ts as *const _ as u64, 0, SIGSET_SIZE],
                    )
                } else {
                    sys(libc::SYS_poll, &[0, 0, SLEEP_MS])
                }
            }
        });
        let sent = b.signal();
        let got = b.result();
        let r = got.as_ref().map(|(r, _)| *r);
        c.check(
            name,
            sent == Ok(0) && REC.count() == 1 && r == Some(Err(libc::EINTR)),
            format!(
                "no fds, {SLEEP_MS} ms timeout, SA_RESTART handler: returned {} after {} ms \
                 (expected EINTR)",
                r.map_or("nothing within 3 s".into(), show),
                got.map_or(0, |(_, t)| t.as_millis())
            ),
        );
    }
    restore(SIGUSR1, &old);
}

fn pause_eintr(c: &mut Checker) {
    let old = install(SIGUSR1, on_signal, libc::SA_RESTART, 0);
    REC.reset();
    // SAFETY: pause touches no memory.
    let b = Blocker::start(|| unsafe { sys(libc::SYS_pause, &[]) });
    let sent = b.signal();
    let r = b.result().map(|(r, _)| r);
    restore(SIGUSR1, &old);
    c.check(
        "pause_eintr_after_handler",
        sent == Ok(0) && REC.count() == 1 && r == Some(Err(libc::EINTR)),
        format!(
            "pause with a SA_RESTART handler returned {} (expected EINTR)",
            r.map_or("nothing within 3 s".into(), show)
        ),
    );
}

fn sigsuspend(mask: SigSet) -> SysResult {
    // SAFETY: a live u64 of SIGSET_SIZE bytes.
    unsafe {
        sys(
            libc::SYS_rt_sigsuspend,
            &[&mask as *const SigSet as u64, SIGSET_SIZE],
        )
    }
}

/// SIGUSR1 blocked; `rt_sigsuspend` with a mask that opens it (and closes
/// SIGUSR2) sleeps until another thread sends it, runs the handler under
/// the suspend mask, returns EINTR and puts the old mask back.
fn sigsuspend_waits(c: &mut Checker) {
    let old = install(SIGUSR1, on_signal, 0, 0);
    REC.reset();
    let saved = block(bit(SIGUSR1));
    let before = current_mask();
    let main_tid = gettid();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(SETTLE);
        tgkill(getpid(), main_tid, SIGUSR1)
    });
    let suspend_mask = (before & !bit(SIGUSR1)) | bit(SIGUSR2);
    let start = Instant::now();
    let r = sigsuspend(suspend_mask);
    let took = start.elapsed();
    let after = current_mask();
    let inside = REC.mask.load(SeqCst);
    let sent = sender.join().unwrap_or(Err(-1));
    set_mask(saved);
    restore(SIGUSR1, &old);
    let want_inside = suspend_mask | bit(SIGUSR1);
    c.check(
        "sigsuspend_waits_then_eintr",
        r == Err(libc::EINTR)
            && sent == Ok(0)
            && REC.count() == 1
            && took >= SETTLE / 2
            && inside == want_inside
            && after == before,
        format!(
            "returned {} after {} ms (the signal came after {} ms); mask in the handler {} \
             (expected {}); mask after {} (expected the old {})",
            show(r),
            took.as_millis(),
            SETTLE.as_millis(),
            names(inside),
            names(want_inside),
            names(after),
            names(before)
        ),
    );
}

fn sigsuspend_takes_pending(c: &mut Checker) {
    let old = install(SIGUSR1, on_signal, 0, 0);
    REC.reset();
    let saved = block(bit(SIGUSR1));
    let before = current_mask();
    let sent = abi::raise_here(SIGUSR1);
    let start = Instant::now();
    let r = sigsuspend(before & !bit(SIGUSR1));
    let took = start.elapsed();
    let after = current_mask();
    set_mask(saved);
    restore(SIGUSR1, &old);
    c.check(
        "sigsuspend_takes_pending_at_once",
        sent == Ok(0) && r == Err(libc::EINTR) && REC.count() == 1 && after == before,
        format!(
            "SIGUSR1 pending and blocked: returned {} after {} ms, handled {}, mask after {} \
             (expected EINTR at once, 1, {})",
            show(r),
            took.as_millis(),
            REC.count(),
            names(after),
            names(before)
        ),
    );
}

/// `rt_sigtimedwait(set, &info, timeout)`: the signal and its siginfo.
fn sigtimedwait(set: SigSet, timeout_ms: u64) -> (SysResult, abi::Info) {
    let ts = timespec_ms(timeout_ms);
    // SAFETY: a zeroed siginfo_t is valid; every pointer is live.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = sys(
            libc::SYS_rt_sigtimedwait,
            &[
                &set as *const SigSet as u64,
                &mut info as *mut libc::siginfo_t as u64,
                &ts as *const libc::timespec as u64,
                SIGSET_SIZE,
            ],
        );
        (r, abi::read_info(&info))
    }
}

fn sigtimedwait_takes_pending(c: &mut Checker) {
    let saved = block(bit(SIGUSR2));
    let sent = kill(getpid(), SIGUSR2);
    let start = Instant::now();
    let (r, info) = sigtimedwait(bit(SIGUSR2), SLEEP_MS);
    let took = start.elapsed();
    let left = abi::pending();
    set_mask(saved);
    c.check(
        "sigtimedwait_takes_pending_signal",
        sent == Ok(0)
            && r == Ok(SIGUSR2 as i64)
            && info.signo == SIGUSR2
            && info.code == libc::SI_USER
            && info.pid == getpid()
            && took < Duration::from_millis(SLEEP_MS / 2)
            && left & bit(SIGUSR2) == 0,
        format!(
            "returned {} after {} ms, si_signo {}, si_code {}, si_pid {}, pending after {} \
             (expected {SIGUSR2} at once, {SIGUSR2}, SI_USER, {}, not pending)",
            show(r),
            took.as_millis(),
            info.signo,
            info.code,
            info.pid,
            names(left),
            getpid()
        ),
    );
}

fn sigtimedwait_times_out(c: &mut Checker) {
    let saved = block(bit(SIGUSR2));
    let timeout = 50;
    let start = Instant::now();
    let (r, _) = sigtimedwait(bit(SIGUSR2), timeout);
    let took = start.elapsed();
    set_mask(saved);
    c.check(
        "sigtimedwait_times_out_eagain",
        r == Err(libc::EAGAIN) && took >= Duration::from_millis(timeout),
        format!(
            "nothing pending, {timeout} ms timeout: {} after {} ms (expected EAGAIN after \
             >= {timeout} ms)",
            show(r),
            took.as_millis()
        ),
    );
}

/// Another thread sends SIGUSR2 (`tgkill` to the main thread, or a
/// process-directed `kill` while the sender blocks it) during the wait.
fn sigtimedwait_woken(c: &mut Checker, by_kill: bool) {
    let saved = block(bit(SIGUSR2));
    let main_tid = gettid();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(SETTLE);
        if by_kill {
            kill(getpid(), SIGUSR2)
        } else {
            tgkill(getpid(), main_tid, SIGUSR2)
        }
    });
    let start = Instant::now();
    let (r, info) = sigtimedwait(bit(SIGUSR2), LIMIT.as_millis() as u64);
    let took = start.elapsed();
    let sent = sender.join().unwrap_or(Err(-1));
    set_mask(saved);
    let (name, want_code, code) = if by_kill {
        ("sigtimedwait_woken_by_kill", libc::SI_USER, "SI_USER")
    } else {
        ("sigtimedwait_woken_by_tgkill", libc::SI_TKILL, "SI_TKILL")
    };
    c.check(
        name,
        sent == Ok(0)
            && r == Ok(SIGUSR2 as i64)
            && info.signo == SIGUSR2
            && info.code == want_code
            && took < LIMIT / 2,
        format!(
            "signal sent by another thread after {} ms: returned {} after {} ms, si_code {} \
             (expected {SIGUSR2}, {want_code} ({code}))",
            SETTLE.as_millis(),
            show(r),
            took.as_millis(),
            info.code
        ),
    );
}
