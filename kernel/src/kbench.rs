//! In-kernel micro-benchmarks of the scheduler, run with `kbench=all`.
//!
//! Each prints `KBENCH <name> <nanoseconds> ns` (the median of its rounds)
//! for `cargo spindle bench sched`, which boots the kernel and gathers the
//! lines. Times are in the guest's monotonic clock (TSC), so under TCG
//! they measure emulated time.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::kthread::{self, Builder};
use crate::sync::{Condvar, Mutex};
use crate::{power, println, sched, time};

fn median(mut samples: Vec<u64>) -> u64 {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or(0)
}

fn report(name: &str, nanoseconds: u64) {
    println!("KBENCH {name} {nanoseconds} ns");
}

/// Two LWPs on one CPU yielding to each other: one yield = one switch.
fn switch_same_cpu() -> u64 {
    const YIELDS: u64 = 2_000;
    static READY: AtomicU64 = AtomicU64::new(0);
    let cpu = sched::online_cpus().next().expect("a CPU");
    let mut rounds = Vec::new();
    for _ in 0..5 {
        READY.store(0, Ordering::SeqCst);
        let started = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let started = Arc::clone(&started);
                Builder::new("bench-yield")
                    .cpu(cpu)
                    .priority(120)
                    .joinable()
                    .spawn(move || {
                        READY.fetch_add(1, Ordering::SeqCst);
                        while READY.load(Ordering::SeqCst) < 2 {
                            sched::yield_now();
                        }
                        let _ = started.compare_exchange(
                            0,
                            time::now_ns(),
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        );
                        for _ in 0..YIELDS {
                            sched::yield_now();
                        }
                    })
                    .expect("bench thread")
            })
            .collect();
        for thread in &threads {
            kthread::join(thread).expect("join");
        }
        let elapsed = time::now_ns() - started.load(Ordering::SeqCst);
        rounds.push(elapsed / (2 * YIELDS));
    }
    median(rounds)
}

/// A round trip between LWPs on two CPUs through a mutex and condition
/// variable; half of it is one wake-up plus switch.
fn ping_pong_cross_cpu() -> Option<u64> {
    const ROUNDS: u32 = 500;
    let cpus: Vec<usize> = sched::online_cpus().take(2).collect();
    if cpus.len() < 2 {
        return None;
    }
    let turn = Arc::new(Mutex::new(0u32));
    let changed = Arc::new(Condvar::new());
    let started = time::now_ns();
    let players: Vec<_> = (0..2u32)
        .map(|player| {
            let (turn, changed) = (Arc::clone(&turn), Arc::clone(&changed));
            Builder::new("bench-pong")
                .cpu(cpus[player as usize])
                .priority(120)
                .joinable()
                .spawn(move || {
                    for _ in 0..ROUNDS {
                        let mut guard = turn.lock();
                        while *guard % 2 != player {
                            guard = changed.wait(guard);
                        }
                        *guard += 1;
                        changed.notify_one();
                    }
                })
                .expect("bench thread")
        })
        .collect();
    for player in &players {
        kthread::join(player).expect("join");
    }
    Some((time::now_ns() - started) / (2 * u64::from(ROUNDS)))
}

/// Creating a kernel thread and joining it.
fn create_join() -> u64 {
    let mut samples = Vec::new();
    for _ in 0..300 {
        let started = time::now_ns();
        let lwp = Builder::new("bench-empty")
            .joinable()
            .spawn(|| {})
            .expect("spawn");
        kthread::join(&lwp).expect("join");
        samples.push(time::now_ns() - started);
    }
    kthread::reaper::drain();
    median(samples)
}

/// From `notify_one` on one CPU to the sleeper running on another.
fn wakeup_latency_cross_cpu() -> Option<u64> {
    let cpus: Vec<usize> = sched::online_cpus().take(2).collect();
    if cpus.len() < 2 {
        return None;
    }
    static NOTIFIED_AT: AtomicU64 = AtomicU64::new(0);
    static STOP: AtomicBool = AtomicBool::new(false);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let state = Arc::new(Mutex::new(0u64));
    let changed = Arc::new(Condvar::new());
    STOP.store(false, Ordering::SeqCst);
    let (s, st, c) = (
        Arc::clone(&samples),
        Arc::clone(&state),
        Arc::clone(&changed),
    );
    let sleeper = Builder::new("bench-sleeper")
        .cpu(cpus[1])
        .priority(120)
        .joinable()
        .spawn(move || {
            let mut seen = 0;
            loop {
                let mut guard = st.lock();
                while *guard == seen && !STOP.load(Ordering::SeqCst) {
                    guard = c.wait(guard);
                }
                let woke = time::now_ns();
                if STOP.load(Ordering::SeqCst) {
                    return;
                }
                seen = *guard;
                drop(guard);
                s.lock().push(woke - NOTIFIED_AT.load(Ordering::SeqCst));
            }
        })
        .expect("sleeper");
    let waker = Builder::new("bench-waker")
        .cpu(cpus[0])
        .priority(120)
        .joinable()
        .spawn(move || {
            for _ in 0..200 {
                sched::sleep_ns(1_000_000);
                let mut guard = state.lock();
                *guard += 1;
                NOTIFIED_AT.store(time::now_ns(), Ordering::SeqCst);
                changed.notify_one();
            }
            STOP.store(true, Ordering::SeqCst);
            let _guard = state.lock();
            changed.notify_all();
        })
        .expect("waker");
    kthread::join(&waker).expect("join");
    kthread::join(&sleeper).expect("join");
    let samples = core::mem::take(&mut *samples.lock());
    Some(median(samples))
}

/// Runs every benchmark, prints the results and stops the machine.
pub fn run() -> ! {
    println!("KBENCH BEGIN cpus={}", sched::online_cpus().count());
    report("switch_same_cpu", switch_same_cpu());
    match ping_pong_cross_cpu() {
        Some(nanoseconds) => report("ping_pong_cross_cpu", nanoseconds),
        None => println!("KBENCH SKIP ping_pong_cross_cpu: needs 2 CPUs"),
    }
    report("kthread_create_join", create_join());
    match wakeup_latency_cross_cpu() {
        Some(nanoseconds) => report("wakeup_latency_cross_cpu", nanoseconds),
        None => println!("KBENCH SKIP wakeup_latency_cross_cpu: needs 2 CPUs"),
    }
    println!("KBENCH END");
    power::exit(power::ExitCode::Success)
}
