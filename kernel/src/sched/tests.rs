//! In-kernel tests of the scheduler and the sleep/wake-up primitives:
//! preemption, timeslices, FPU state, timed and interruptible sleeps,
//! callouts, lost wake-up races across CPUs, load balancing and memory.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::*;
use crate::ktest::wait_until;
use crate::kthread::{self, Builder};
use crate::sync::{Condvar, Mutex};

fn spin_for_ns(nanoseconds: u64) {
    let until = time::now_ns() + nanoseconds;
    while time::now_ns() < until {
        core::hint::spin_loop();
    }
}

crate::ktests! {
    fn higher_priority_wakeup_preempts_at_once() {
        static LOW_SPINNING: AtomicBool = AtomicBool::new(false);
        static HIGH_RAN: AtomicBool = AtomicBool::new(false);
        static LOW_SAW_HIGH: AtomicBool = AtomicBool::new(false);
        let cpu = online_cpus().last().expect("a CPU");
        let low = Builder::new("low").cpu(cpu).priority(40).joinable().spawn(|| {
            LOW_SPINNING.store(true, Ordering::SeqCst);
            let until = time::now_ns() + 3_000_000_000;
            while time::now_ns() < until && !HIGH_RAN.load(Ordering::SeqCst) {
                core::hint::spin_loop();
            }
            LOW_SAW_HIGH.store(HIGH_RAN.load(Ordering::SeqCst), Ordering::SeqCst);
        }).expect("low");
        assert!(wait_until(2_000, || LOW_SPINNING.load(Ordering::SeqCst)));
        let high = Builder::new("high").cpu(cpu).priority(110).joinable().spawn(|| {
            HIGH_RAN.store(true, Ordering::SeqCst);
        }).expect("high");
        kthread::join(&high).expect("join high");
        kthread::join(&low).expect("join low");
        assert!(LOW_SAW_HIGH.load(Ordering::SeqCst), "the high-priority thread waited for the spinning low one");
    }

    fn equal_priorities_share_the_cpu_in_timeslices() {
        static COUNTS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
        static INTERLEAVED: AtomicU32 = AtomicU32::new(0);
        let cpu = online_cpus().last().expect("a CPU");
        let mut threads = Vec::new();
        for index in [0usize, 1] {
            threads.push(Builder::new("slice").cpu(cpu).priority(50).joinable().spawn(move || {
                let other = 1 - index;
                let seen = COUNTS[other].load(Ordering::SeqCst);
                let until = time::now_ns() + 300_000_000;
                while time::now_ns() < until {
                    COUNTS[index].fetch_add(1, Ordering::Relaxed);
                }
                if COUNTS[other].load(Ordering::SeqCst) > seen {
                    INTERLEAVED.fetch_add(1, Ordering::SeqCst);
                }
            }).expect("slice thread"));
        }
        for thread in &threads {
            kthread::join(thread).expect("join");
        }
        assert_eq!(INTERLEAVED.load(Ordering::SeqCst), 2, "two busy threads of equal priority did not alternate");
    }

    fn fpu_state_survives_context_switches() {
        static FAILURES: AtomicU32 = AtomicU32::new(0);
        let cpu = online_cpus().next().expect("a CPU");
        let mut threads = Vec::new();
        for index in 0..3u64 {
            threads.push(Builder::new("fpu").cpu(cpu).flags(flags::MPSAFE | flags::USES_FPU).joinable().spawn(move || {
                let pattern = 0x1111_1111_1111_1111u64 * (index + 1);
                for round in 0..200u64 {
                    arch::fpu::write_xmm0_u64(pattern ^ round);
                    yield_now();
                    if arch::fpu::read_xmm0_u64() != pattern ^ round {
                        FAILURES.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }).expect("fpu thread"));
        }
        for thread in &threads {
            kthread::join(thread).expect("join");
        }
        assert_eq!(FAILURES.load(Ordering::SeqCst), 0, "xmm0 changed across a switch");
    }

    fn timed_sleep_lasts_at_least_its_duration() {
        for milliseconds in [1u64, 10, 30] {
            let started = time::now_ns();
            sleep_ns(milliseconds * 1_000_000);
            let slept = time::now_ns() - started;
            assert!(slept >= milliseconds * 1_000_000, "asked {milliseconds} ms, slept {slept} ns");
            assert!(slept < milliseconds * 1_000_000 + 500_000_000, "asked {milliseconds} ms, slept {slept} ns");
        }
    }

    fn condvar_wait_times_out_or_is_notified() {
        let lock = Arc::new(Mutex::new(false));
        let changed = Arc::new(Condvar::new());
        let started = time::now_ns();
        let (guard, result) = changed.wait_timeout(lock.lock(), 30_000_000);
        drop(guard);
        assert_eq!(result, WakeReason::TimedOut);
        assert!(time::now_ns() - started >= 30_000_000);
        assert_eq!(changed.waiter_count(), 0, "a timed-out waiter left its entry");

        let (notifier_lock, notifier_changed) = (Arc::clone(&lock), Arc::clone(&changed));
        Builder::new("notifier").spawn(move || {
            sleep_ns(5_000_000);
            *notifier_lock.lock() = true;
            notifier_changed.notify_one();
        }).expect("notifier");
        let mut guard = lock.lock();
        let mut result = WakeReason::Notified;
        while !*guard {
            let (next, why) = changed.wait_timeout(guard, 5_000_000_000);
            guard = next;
            result = why;
            if why == WakeReason::TimedOut {
                break;
            }
        }
        assert!(*guard, "not notified within 5 s");
        assert_eq!(result, WakeReason::Notified);
    }

    fn interruptible_sleep_is_interrupted_and_uninterruptible_is_not() {
        static RESULT: AtomicU32 = AtomicU32::new(0);
        let lock = Arc::new(Mutex::new(()));
        let changed = Arc::new(Condvar::new());
        let (l, c) = (Arc::clone(&lock), Arc::clone(&changed));
        let sleeper = Builder::new("interruptible").joinable().spawn(move || {
            let (_guard, why) = c.wait_interruptible(l.lock());
            RESULT.store(if why == WakeReason::Interrupted { 1 } else { 2 }, Ordering::SeqCst);
        }).expect("sleeper");
        assert!(wait_until(2_000, || sleeper.state() == LwpState::Sleeping));
        interrupt(&sleeper);
        kthread::join(&sleeper).expect("join");
        assert_eq!(RESULT.load(Ordering::SeqCst), 1);

        let (l, c) = (Arc::clone(&lock), Arc::clone(&changed));
        let stubborn = Builder::new("uninterruptible").joinable().spawn(move || {
            drop(c.wait(l.lock()));
        }).expect("sleeper");
        assert!(wait_until(2_000, || stubborn.state() == LwpState::Sleeping));
        interrupt(&stubborn);
        sleep_ns(20_000_000);
        assert_eq!(stubborn.state(), LwpState::Sleeping, "an uninterruptible sleep was interrupted");
        changed.notify_all();
        kthread::join(&stubborn).expect("join");
    }

    fn callout_fires_after_its_deadline_and_cancel_stops_it() {
        static FIRED_AT: AtomicU64 = AtomicU64::new(0);
        static CANCELLED_FIRED: AtomicBool = AtomicBool::new(false);
        let deadline = time::now_ns() + 20_000_000;
        callout::schedule_at(deadline, || FIRED_AT.store(time::now_ns(), Ordering::SeqCst));
        let handle = callout::schedule_at(time::now_ns() + 20_000_000, || CANCELLED_FIRED.store(true, Ordering::SeqCst));
        assert!(callout::cancel(handle));
        assert!(!callout::cancel(handle), "cancelling twice");
        assert!(wait_until(2_000, || FIRED_AT.load(Ordering::SeqCst) != 0));
        assert!(FIRED_AT.load(Ordering::SeqCst) >= deadline, "fired early");
        sleep_ns(40_000_000);
        assert!(!CANCELLED_FIRED.load(Ordering::SeqCst));
    }

    fn ping_pong_across_cpus_loses_no_wakeup() {
        const ROUNDS: u32 = 5_000;
        let turn = Arc::new(Mutex::new(0u32));
        let changed = Arc::new(Condvar::new());
        let cpus: Vec<usize> = online_cpus().collect();
        let mut players = Vec::new();
        for player in 0..2u32 {
            let (turn, changed) = (Arc::clone(&turn), Arc::clone(&changed));
            let cpu = cpus[player as usize % cpus.len()];
            players.push(Builder::new("ping-pong").cpu(cpu).joinable().spawn(move || {
                for _ in 0..ROUNDS {
                    let mut guard = turn.lock();
                    while *guard % 2 != player {
                        guard = changed.wait(guard);
                    }
                    *guard += 1;
                    changed.notify_all();
                }
            }).expect("player"));
        }
        let done = wait_until(60_000, || *turn.lock() == 2 * ROUNDS);
        assert!(done, "ping-pong stalled at {} of {}: a wake-up was lost", *turn.lock(), 2 * ROUNDS);
        for player in &players {
            kthread::join(player).expect("join");
        }
    }

    fn wakeup_racing_with_sleep_decision_is_never_lost() {
        // Many sleepers re-check a generation number and sleep; a notifier
        // bumps it and broadcasts as fast as it can, on other CPUs. Every
        // sleeper must see every 100th generation without a timeout.
        static PROGRESS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
        static STOP: AtomicBool = AtomicBool::new(false);
        let generation = Arc::new(Mutex::new(0u64));
        let changed = Arc::new(Condvar::new());
        let mut threads = Vec::new();
        for index in [0usize, 1, 2, 3] {
            let (generation, changed) = (Arc::clone(&generation), Arc::clone(&changed));
            threads.push(Builder::new("sleeper").joinable().spawn(move || {
                let mut seen = 0;
                while !STOP.load(Ordering::SeqCst) {
                    let mut guard = generation.lock();
                    while *guard == seen && !STOP.load(Ordering::SeqCst) {
                        guard = changed.wait(guard);
                    }
                    seen = *guard;
                    PROGRESS[index].store(seen, Ordering::SeqCst);
                }
            }).expect("sleeper"));
        }
        let (g, c) = (Arc::clone(&generation), Arc::clone(&changed));
        let notifier = Builder::new("notifier").joinable().spawn(move || {
            for _ in 0..20_000u32 {
                *g.lock() += 1;
                c.notify_all();
            }
        }).expect("notifier");
        kthread::join(&notifier).expect("join notifier");
        let last = *generation.lock();
        let all_caught_up = wait_until(10_000, || PROGRESS.iter().all(|p| p.load(Ordering::SeqCst) == last));
        STOP.store(true, Ordering::SeqCst);
        {
            *generation.lock() += 1;
            changed.notify_all();
        }
        for thread in &threads {
            kthread::join(thread).expect("join");
        }
        assert!(all_caught_up, "a sleeper missed the last wake-up: {:?} of {last}",
            PROGRESS.iter().map(|p| p.load(Ordering::SeqCst)).collect::<Vec<_>>());
    }

    fn sleep_and_timeouts_race_across_cpus() {
        // A sleeper bound to each CPU waits with short timeouts while
        // wakers on other CPUs notify at random moments; timeouts and
        // notifications race, and each sleep must end exactly once. The
        // race runs until every sleeper has ended ROUNDS_EACH sleeps (a
        // loaded host may take many times longer than an idle one).
        const ROUNDS_EACH: u64 = 50;
        static ROUNDS: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];
        static STOP: AtomicBool = AtomicBool::new(false);
        let lock = Arc::new(Mutex::new(()));
        let changed = Arc::new(Condvar::new());
        let mut threads = Vec::new();
        let cpus: Vec<usize> = online_cpus().take(16).collect();
        for (index, cpu) in cpus.iter().copied().enumerate() {
            let (l, c) = (Arc::clone(&lock), Arc::clone(&changed));
            threads.push(Builder::new("racer").cpu(cpu).joinable().spawn(move || {
                while !STOP.load(Ordering::SeqCst) {
                    let (_guard, _why) = c.wait_timeout(l.lock(), 1_000_000);
                    ROUNDS[index].fetch_add(1, Ordering::SeqCst);
                }
            }).expect("racer"));
            let c = Arc::clone(&changed);
            threads.push(Builder::new("waker").joinable().spawn(move || {
                let mut spin = 1u64;
                while !STOP.load(Ordering::SeqCst) {
                    spin = spin.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) % 200_000;
                    spin_for_ns(spin);
                    c.notify_one();
                    yield_now();
                }
            }).expect("waker"));
        }
        let racers = cpus.len().min(ROUNDS.len());
        let all_raced = crate::ktest::wait_until(60_000, || {
            ROUNDS[..racers].iter().all(|r| r.load(Ordering::SeqCst) >= ROUNDS_EACH)
        });
        STOP.store(true, Ordering::SeqCst);
        changed.notify_all();
        for thread in &threads {
            kthread::join(thread).expect("join");
        }
        let rounds: Vec<u64> = ROUNDS[..racers].iter().map(|r| r.load(Ordering::SeqCst)).collect();
        assert!(all_raced, "a sleeper stopped ending its sleeps: rounds per CPU {rounds:?}");
        assert_eq!(changed.waiter_count(), 0, "stale waiter entries were left behind");
    }

    fn sleeping_mutex_serialises_its_holders() {
        static TOTAL: AtomicU64 = AtomicU64::new(0);
        let counter = Arc::new(Mutex::new(0u64));
        let mut threads = Vec::new();
        for _ in 0..4 {
            let counter = Arc::clone(&counter);
            threads.push(Builder::new("mutex-user").joinable().spawn(move || {
                for round in 0..1_000u32 {
                    let mut guard = counter.lock();
                    let value = *guard;
                    if round % 16 == 0 {
                        yield_now();
                    }
                    *guard = value + 1;
                    TOTAL.fetch_add(1, Ordering::Relaxed);
                }
            }).expect("mutex user"));
        }
        for thread in &threads {
            kthread::join(thread).expect("join");
        }
        assert_eq!(*counter.lock(), 4_000, "an update was lost: the mutex let two holders in");
    }

    fn unbound_threads_spread_over_the_cpus() {
        static USED: AtomicU64 = AtomicU64::new(0);
        let cpus = online_cpus().count();
        let mut threads = Vec::new();
        for _ in 0..cpus * 2 {
            threads.push(Builder::new("spreader").joinable().spawn(|| {
                let until = time::now_ns() + 200_000_000;
                while time::now_ns() < until {
                    USED.fetch_or(1u64 << current_cpu(), Ordering::SeqCst);
                    core::hint::spin_loop();
                }
            }).expect("spreader"));
        }
        for thread in &threads {
            kthread::join(thread).expect("join");
        }
        let used = USED.load(Ordering::SeqCst).count_ones() as usize;
        assert_eq!(used, cpus, "busy unbound threads used {used} of {cpus} CPUs");
    }

    fn ten_thousand_threads_leave_no_memory_behind() {
        let quiet = crate::compat::sysinit::quiesce();
        let batch_of_100 = || {
            let batch: Vec<_> = (0..100).map(|_| Builder::new("many").joinable().spawn(|| {}).expect("spawn")).collect();
            for lwp in &batch {
                assert_eq!(kthread::join(lwp), Ok(0));
            }
            for lwp in &batch {
                kthread::wait_until_off_cpu(lwp);
            }
            drop(batch);
            kthread::reaper::drain();
        };
        let settle = || {
            kthread::reaper::drain();
            trim_caches();
            crate::proc::trim_caches();
            crate::mm::stack::trim_caches();
        };
        // Warm up: 400 threads at once, far more than a batch of 100 ever has
        // alive, so the stack slots and their page tables reach their
        // working size; caches are trimmed before each reading.
        let warm: Vec<_> = (0..400).map(|_| Builder::new("warm").joinable().spawn(|| {}).expect("spawn")).collect();
        for lwp in &warm {
            kthread::join(lwp).expect("join");
        }
        for lwp in &warm {
            kthread::wait_until_off_cpu(lwp);
        }
        drop(warm);
        // A few batches as well: the batches' own pattern (a stack slot
        // taken from the bump pointer while another CPU still frees one,
        // a list reaching its capacity) may grow a structure once; a leak
        // shows as growth over the 100 batches measured below.
        for _ in 0..3 {
            batch_of_100();
        }
        settle();
        let (frames, heap, lwps) = (crate::mm::frame::free_count(), crate::mm::heap::bytes_in_use(), crate::proc::lwp_count());
        for _ in 0..100 {
            batch_of_100();
        }
        settle();
        let after = (crate::mm::frame::free_count(), crate::mm::heap::bytes_in_use(), crate::proc::lwp_count());
        drop(quiet);
        assert_eq!(after.2, lwps, "LWPs left behind");
        assert_eq!(after.0, frames, "frames leaked (before {frames}, after {})", after.0);
        assert_eq!(after.1, heap, "heap bytes leaked (before {heap}, after {})", after.1);
    }

    fn join_after_the_thread_exited_returns_at_once() {
        // The exit is recorded under the LWP's exit lock, so a join that
        // comes after it cannot miss it (the lost-wakeup race of joins that
        // sleep on the thread handle).
        let lwp = Builder::new("quick-exit").joinable().spawn(|| kthread::exit(7)).expect("spawn");
        assert!(wait_until(2_000, || lwp.exit.lock().exited));
        sleep_ns(10_000_000);
        let started = time::now_ns();
        assert_eq!(kthread::join(&lwp), Ok(7));
        assert!(time::now_ns() - started < 100_000_000, "join of an exited thread waited");
        assert_eq!(kthread::join(&lwp), Err(crate::errno::Errno::EINVAL), "joined twice");
    }

    fn every_cpu_has_an_idle_lwp_in_proc0() {
        let names: Vec<_> = crate::proc::proc0().lwps().iter().map(|lwp| lwp.name()).collect();
        for cpu in online_cpus() {
            assert!(names.iter().any(|name| *name == alloc::format!("idle/{cpu}")), "no idle/{cpu} in {names:?}");
        }
        assert_eq!(online_cpus().count(), crate::cpu::online_count());
    }
}
