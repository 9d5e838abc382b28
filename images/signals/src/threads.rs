//! Which thread takes a signal: `tgkill` names one; a process-directed
//! `kill` goes to a thread that does not block it; a new thread starts
//! with its creator's mask.

use crate::abi::{bit, block, getpid, gettid, install, kill, restore, set_mask, tgkill, unblock};
use crate::handlers::{REC, on_signal};
use image_support::{Checker, show};
use libc::SIGUSR1;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a check waits for a handler on another thread.
const LIMIT: Duration = Duration::from_secs(3);

pub fn run(c: &mut Checker) {
    tgkill_targets_thread(c);
    kill_goes_to_unblocking_thread(c);
    new_thread_inherits_the_mask(c);
}

/// A thread that idles in short sleeps until `stop`; `unblock` opens
/// SIGUSR1 in it first. Gives the handle and the thread's tid.
fn idler(stop: &Arc<AtomicBool>, unblock_usr1: bool) -> (JoinHandle<()>, i32) {
    let (tx, rx) = mpsc::channel();
    let stop = Arc::clone(stop);
    let handle = std::thread::spawn(move || {
        if unblock_usr1 {
            unblock(bit(SIGUSR1));
        }
        let _ = tx.send(gettid());
        let start = std::time::Instant::now();
        while !stop.load(SeqCst) && start.elapsed() < 2 * LIMIT {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let tid = rx.recv().unwrap_or(-1);
    (handle, tid)
}

fn tgkill_targets_thread(c: &mut Checker) {
    let old = install(SIGUSR1, on_signal, libc::SA_RESTART, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let (a, tid_a) = idler(&stop, false);
    let (b, tid_b) = idler(&stop, false);
    let mut seen = Vec::new();
    let mut ok = true;
    for tid in [tid_b, tid_a] {
        REC.reset();
        let r = tgkill(getpid(), tid, SIGUSR1);
        let handled = REC.wait_count(1, LIMIT);
        let on = REC.tid.load(SeqCst);
        ok &= r == Ok(0) && handled && on == tid;
        seen.push(format!("tgkill to {tid}: {}, handled on {on}", show(r)));
    }
    stop.store(true, SeqCst);
    let _ = (a.join(), b.join());
    restore(SIGUSR1, &old);
    c.check(
        "tgkill_runs_handler_on_named_thread",
        ok,
        format!("{} (expected each on its own thread)", seen.join("; ")),
    );
}

fn kill_goes_to_unblocking_thread(c: &mut Checker) {
    let old = install(SIGUSR1, on_signal, libc::SA_RESTART, 0);
    let mask = block(bit(SIGUSR1));
    let stop = Arc::new(AtomicBool::new(false));
    let (other, tid) = idler(&stop, true);
    REC.reset();
    let r = kill(getpid(), SIGUSR1);
    let handled = REC.wait_count(1, LIMIT);
    let on = REC.tid.load(SeqCst);
    stop.store(true, SeqCst);
    let _ = other.join();
    set_mask(mask);
    restore(SIGUSR1, &old);
    c.check(
        "kill_goes_to_thread_not_blocking_it",
        r == Ok(0) && handled && on == tid,
        format!(
            "main blocks SIGUSR1, thread {tid} does not: kill {}, handled {} on {on} \
             (main is {})",
            show(r),
            if handled { "once" } else { "never" },
            gettid()
        ),
    );
}

/// A process-directed SIGUSR1 waits, pending, while main (the only
/// thread) blocks it; a thread created meanwhile inherits the block (musl
/// holds every signal across `clone` and the new thread restores the
/// creator's mask), so nothing runs the handler until main unblocks it,
/// and then main does. A kernel that starts a new thread with an empty
/// mask runs the handler on that thread before it restores its mask.
fn new_thread_inherits_the_mask(c: &mut Checker) {
    let old = install(SIGUSR1, on_signal, libc::SA_RESTART, 0);
    let mask = block(bit(SIGUSR1));
    REC.reset();
    let r = kill(getpid(), SIGUSR1);
    let child = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(20));
        gettid()
    })
    .join()
    .unwrap_or(-1);
    let early = REC.count();
    set_mask(mask);
    let handled = REC.wait_count(1, LIMIT);
    let on = REC.tid.load(SeqCst);
    restore(SIGUSR1, &old);
    let main = gettid();
    c.check(
        "new_thread_inherits_the_mask",
        r == Ok(0) && early == 0 && handled && on == main,
        format!(
            "kill {} while main blocks SIGUSR1; thread {child} created and joined: {early} \
             handler runs before main unblocked (expected 0), then {} on {on} (main is \
             {main})",
            show(r),
            if handled { "handled" } else { "never handled" }
        ),
    );
}
