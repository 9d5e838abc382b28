//! NetBSD `kthread(9)`: `kthread_create`, `kthread_exit`, `kthread_join`,
//! `kthread_destroy`.
//!
//! Threads belong to proc0. `PRI_NONE` selects `PRI_KTHREAD` (96, fixed
//! round robin) or, with `KTHREAD_TS`, `MAXPRI_USER` (63, timeshare).
//! `KTHREAD_IDLE` creates the thread idle (never made runnable by
//! create); without `KTHREAD_MPSAFE` it runs holding the big kernel lock;
//! `KTHREAD_INTR` requires `KTHREAD_MPSAFE`; `KTHREAD_MUSTJOIN` requires
//! `newlp`, and then `kthread_exit` blocks until `kthread_join` is called.
//! A CPU binds the thread there. Names are truncated to 15 characters
//! (`MAXCOMLEN - 1`). Errors: `ENOMEM` (no stack), `EAGAIN` (LWP limit),
//! `EINVAL` (flag combinations NetBSD asserts against).

use alloc::string::String;
use alloc::sync::Arc;
use core::fmt::{self, Write};

use crate::errno::Errno;
use crate::kthread::{self, Builder};
use crate::proc::lwp::{self, Lwp, SchedClass};
use crate::sched;

/// "No particular priority": take the default.
pub const PRI_NONE: i32 = -1;
pub const PRI_KTHREAD: i32 = lwp::PRI_KTHREAD as i32;
pub const MAXPRI_USER: i32 = lwp::MAXPRI_USER as i32;

pub const KTHREAD_IDLE: u32 = 0x01;
pub const KTHREAD_MPSAFE: u32 = 0x02;
pub const KTHREAD_INTR: u32 = 0x04;
pub const KTHREAD_TS: u32 = 0x08;
pub const KTHREAD_MUSTJOIN: u32 = 0x10;
const KNOWN_FLAGS: u32 =
    KTHREAD_IDLE | KTHREAD_MPSAFE | KTHREAD_INTR | KTHREAD_TS | KTHREAD_MUSTJOIN;

/// NetBSD's `MAXCOMLEN`: names keep 15 characters and the NUL.
pub const MAXCOMLEN: usize = 16;

/// A CPU, as `struct cpu_info *` names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuInfo {
    pub index: usize,
}

/// The `lwp_t *` of a kernel thread.
pub type LwpRef = Arc<Lwp>;

/// Formats `fmt` into a name of at most `MAXCOMLEN - 1` characters.
fn thread_name(fmt: fmt::Arguments) -> String {
    let mut name = String::new();
    let _ = name.write_fmt(fmt);
    name.chars().take(MAXCOMLEN - 1).collect()
}

/// `kthread_create(pri, flags, ci, func, arg, newlp, fmt, ...)`.
pub fn kthread_create<A: Send + 'static>(
    pri: i32,
    flags: u32,
    ci: Option<CpuInfo>,
    func: fn(A),
    arg: A,
    newlp: Option<&mut Option<LwpRef>>,
    fmt: fmt::Arguments,
) -> Result<(), Errno> {
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & KTHREAD_INTR != 0 && flags & KTHREAD_MPSAFE == 0 {
        return Err(Errno::EINVAL);
    }
    if flags & KTHREAD_MUSTJOIN != 0 && newlp.is_none() {
        return Err(Errno::EINVAL);
    }
    let timeshare = flags & KTHREAD_TS != 0;
    let priority = match pri {
        PRI_NONE if timeshare => MAXPRI_USER,
        PRI_NONE => PRI_KTHREAD,
        other => other,
    };
    let priority = u8::try_from(priority).map_err(|_| Errno::EINVAL)?;
    let class = if timeshare {
        SchedClass::Timeshare
    } else {
        SchedClass::FixedRoundRobin
    };
    let mut lwp_flags = 0;
    if flags & KTHREAD_MPSAFE != 0 {
        lwp_flags |= lwp::flags::MPSAFE;
    }
    if flags & KTHREAD_INTR != 0 {
        lwp_flags |= lwp::flags::INTR;
    }
    let mut builder = Builder::new(&thread_name(fmt))
        .class(class, priority)
        .flags(lwp_flags);
    if let Some(cpu) = ci {
        builder = builder.cpu(cpu.index);
    }
    if flags & KTHREAD_IDLE != 0 {
        builder = builder.start_stopped();
    }
    if flags & KTHREAD_MUSTJOIN != 0 {
        builder = builder.joinable();
    }
    let lwp = builder.spawn(move || func(arg))?;
    if let Some(slot) = newlp {
        *slot = Some(lwp);
    }
    Ok(())
}

/// `kthread_exit(ecode)`: ends the calling thread. A non-zero code is only
/// logged. A `MUSTJOIN` thread first waits until `kthread_join` is called.
pub fn kthread_exit(ecode: i32) -> ! {
    let me = sched::current();
    if ecode != 0 {
        log::warn!("kthread {:?} exited with error {ecode}", me.name());
    }
    if me.has_flag(lwp::flags::JOINABLE) {
        let mut exit = me.exit.lock();
        while !exit.join_requested {
            exit = me.exit_changed.wait(exit);
        }
    }
    drop(me);
    kthread::exit(ecode)
}

/// `kthread_join(l)`: waits for a `MUSTJOIN` thread to exit. Only once per
/// thread; `EINVAL` otherwise. Returns 0 (as `Ok`).
pub fn kthread_join(l: &LwpRef) -> Result<(), Errno> {
    if !l.has_flag(lwp::flags::JOINABLE) {
        return Err(Errno::EINVAL);
    }
    {
        let mut exit = l.exit.lock();
        if exit.join_requested {
            return Err(Errno::EINVAL);
        }
        exit.join_requested = true;
        l.exit_changed.notify_all();
    }
    kthread::join(l).map(|_| ())
}

/// `kthread_destroy(l)`: removes a thread still idle (`KTHREAD_IDLE`, never
/// started). `EINVAL` for any other thread.
pub fn kthread_destroy(l: &LwpRef) -> Result<(), Errno> {
    kthread::destroy_unstarted(l)
}

crate::ktests! {
    fn pri_none_is_pri_kthread_in_the_round_robin_class() {
        let mut lwp = None;
        kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, None, |_: ()| kthread_exit(0), (), Some(&mut lwp), format_args!("pri-none"))
            .expect("kthread_create");
        let lwp = lwp.expect("newlp is set");
        assert_eq!(i32::from(lwp.sched.lock().base_priority), PRI_KTHREAD);
        assert_eq!(lwp.class(), SchedClass::FixedRoundRobin);
        assert!(Arc::ptr_eq(&lwp.process, &crate::proc::proc0()), "NetBSD kthreads live in proc0");
        kthread_join(&lwp).expect("join");
    }

    fn pri_none_with_ts_is_maxpri_user_timeshare() {
        let mut lwp = None;
        kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_TS | KTHREAD_MUSTJOIN, None, |_: ()| kthread_exit(0), (), Some(&mut lwp), format_args!("pri-none-ts"))
            .expect("kthread_create");
        let lwp = lwp.expect("newlp is set");
        assert_eq!(i32::from(lwp.sched.lock().base_priority), MAXPRI_USER);
        assert_eq!(lwp.class(), SchedClass::Timeshare);
        kthread_join(&lwp).expect("join");
    }

    fn explicit_priority_is_kept_and_bad_ones_refused() {
        let mut lwp = None;
        kthread_create(80, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, None, |_: ()| kthread_exit(0), (), Some(&mut lwp), format_args!("pri-80"))
            .expect("kthread_create");
        let lwp = lwp.expect("newlp is set");
        assert_eq!(lwp.sched.lock().base_priority, 80);
        kthread_join(&lwp).expect("join");
        for bad in [-2, 128, 1000] {
            let result = kthread_create(bad, KTHREAD_MPSAFE, None, |_: ()| kthread_exit(0), (), None, format_args!("bad"));
            assert_eq!(result, Err(Errno::EINVAL), "priority {bad}");
        }
        let result = kthread_create(PRI_NONE, 0x100, None, |_: ()| kthread_exit(0), (), None, format_args!("bad-flag"));
        assert_eq!(result, Err(Errno::EINVAL), "unknown flag");
    }

    fn idle_thread_is_created_idle_and_destroyed_unrun() {
        use core::sync::atomic::{AtomicBool, Ordering};
        static RAN: AtomicBool = AtomicBool::new(false);
        let mut lwp = None;
        kthread_create(PRI_NONE, KTHREAD_IDLE | KTHREAD_MPSAFE, None, |_: ()| RAN.store(true, Ordering::SeqCst), (), Some(&mut lwp), format_args!("idle-one"))
            .expect("kthread_create");
        let lwp = lwp.expect("newlp is set");
        crate::sched::sleep_ns(50_000_000);
        assert_eq!(lwp.state(), lwp::LwpState::Idle);
        assert!(!RAN.load(Ordering::SeqCst), "an idle thread ran without being started");
        let before = crate::proc::proc0().lwp_count();
        kthread_destroy(&lwp).expect("destroy an idle thread");
        assert_eq!(crate::proc::proc0().lwp_count(), before - 1);
        assert_eq!(lwp.state(), lwp::LwpState::Zombie);
        assert!(!RAN.load(Ordering::SeqCst));
    }

    fn destroy_refuses_a_thread_that_was_started() {
        let mut lwp = None;
        kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, None, |_: ()| kthread_exit(0), (), Some(&mut lwp), format_args!("started"))
            .expect("kthread_create");
        let lwp = lwp.expect("newlp is set");
        assert_eq!(kthread_destroy(&lwp), Err(Errno::EINVAL));
        kthread_join(&lwp).expect("join");
    }

    fn thread_without_mpsafe_runs_holding_the_big_lock() {
        use core::sync::atomic::{AtomicU32, Ordering};
        // 1: held, 2: not held.
        static SEEN: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];
        for (slot, flags) in [(0usize, KTHREAD_MUSTJOIN), (1usize, KTHREAD_MUSTJOIN | KTHREAD_MPSAFE)] {
            let mut lwp = None;
            kthread_create(PRI_NONE, flags, None, |slot: usize| {
                let held = crate::sync::biglock::held_by_current();
                SEEN[slot].store(if held { 1 } else { 2 }, Ordering::SeqCst);
                kthread_exit(0)
            }, slot, Some(&mut lwp), format_args!("biglock-{slot}"))
            .expect("kthread_create");
            kthread_join(&lwp.expect("newlp")).expect("join");
        }
        assert_eq!(SEEN[0].load(Ordering::SeqCst), 1, "a thread without KTHREAD_MPSAFE must hold the big lock");
        assert_eq!(SEEN[1].load(Ordering::SeqCst), 2, "an MP-safe thread must not hold the big lock");
        assert!(!crate::sync::biglock::held_by_current());
    }

    fn non_mpsafe_thread_may_drop_the_big_lock_explicitly() {
        use core::sync::atomic::{AtomicU32, Ordering};
        static STEPS: AtomicU32 = AtomicU32::new(0);
        let mut lwp = None;
        kthread_create(PRI_NONE, KTHREAD_MUSTJOIN, None, |_: ()| {
            let held_at_entry = crate::sync::biglock::held_by_current();
            crate::sync::biglock::release();
            let dropped = !crate::sync::biglock::held_by_current();
            crate::sync::biglock::acquire();
            let retaken = crate::sync::biglock::held_by_current();
            if held_at_entry && dropped && retaken {
                STEPS.store(3, Ordering::SeqCst);
            }
            kthread_exit(0)
        }, (), Some(&mut lwp), format_args!("drops-biglock"))
        .expect("kthread_create");
        kthread_join(&lwp.expect("newlp")).expect("join");
        assert_eq!(STEPS.load(Ordering::SeqCst), 3, "held at entry, dropped, retaken");
        assert!(!crate::sync::biglock::held_by_current());
    }

    fn big_lock_keeps_non_mpsafe_threads_apart() {
        use core::sync::atomic::{AtomicU32, Ordering};
        static INSIDE: AtomicU32 = AtomicU32::new(0);
        static OVERLAPS: AtomicU32 = AtomicU32::new(0);
        static ROUNDS: AtomicU32 = AtomicU32::new(0);
        let threads = crate::sched::online_cpus().count().max(2);
        let mut lwps = alloc::vec::Vec::new();
        for index in 0..threads {
            let mut lwp = None;
            kthread_create(PRI_NONE, KTHREAD_MUSTJOIN, None, |_: usize| {
                for _ in 0..200 {
                    if INSIDE.fetch_add(1, Ordering::SeqCst) != 0 {
                        OVERLAPS.fetch_add(1, Ordering::SeqCst);
                    }
                    let until = crate::time::now_ns() + 50_000;
                    while crate::time::now_ns() < until {
                        core::hint::spin_loop();
                    }
                    INSIDE.fetch_sub(1, Ordering::SeqCst);
                    ROUNDS.fetch_add(1, Ordering::SeqCst);
                    crate::sched::yield_now();
                }
                kthread_exit(0)
            }, index, Some(&mut lwp), format_args!("biglock-user-{index}"))
            .expect("kthread_create");
            lwps.push(lwp.expect("newlp"));
        }
        for lwp in &lwps {
            kthread_join(lwp).expect("join");
        }
        assert_eq!(ROUNDS.load(Ordering::SeqCst), 200 * threads as u32);
        assert_eq!(OVERLAPS.load(Ordering::SeqCst), 0, "two non-MP-safe threads ran at once");
    }

    fn intr_requires_mpsafe() {
        let result = kthread_create(PRI_NONE, KTHREAD_INTR, None, |_: ()| kthread_exit(0), (), None, format_args!("intr"));
        assert_eq!(result, Err(Errno::EINVAL));
        let mut lwp = None;
        kthread_create(PRI_NONE, KTHREAD_INTR | KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, None, |_: ()| kthread_exit(0), (), Some(&mut lwp), format_args!("intr-ok"))
            .expect("kthread_create");
        let lwp = lwp.expect("newlp");
        assert!(lwp.has_flag(lwp::flags::INTR));
        kthread_join(&lwp).expect("join");
    }

    fn bound_thread_only_ever_runs_on_its_cpu() {
        use core::sync::atomic::{AtomicU64, Ordering};
        static MISPLACED: AtomicU64 = AtomicU64::new(0);
        static SAMPLES: AtomicU64 = AtomicU64::new(0);
        let cpus: alloc::vec::Vec<usize> = crate::sched::online_cpus().collect();
        let mut lwps = alloc::vec::Vec::new();
        for &cpu in &cpus {
            let mut lwp = None;
            kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, Some(CpuInfo { index: cpu }), |cpu: usize| {
                for round in 0..5_000u32 {
                    if crate::sched::current_cpu() != cpu {
                        MISPLACED.fetch_add(1, Ordering::SeqCst);
                    }
                    SAMPLES.fetch_add(1, Ordering::Relaxed);
                    if round % 50 == 0 {
                        crate::sched::yield_now();
                    }
                    if round % 1_000 == 0 {
                        crate::sched::sleep_ns(1);
                    }
                }
                kthread_exit(0)
            }, cpu, Some(&mut lwp), format_args!("bound-{cpu}"))
            .expect("kthread_create");
            let lwp = lwp.expect("newlp");
            assert_eq!(lwp.bound_cpu(), Some(cpu));
            lwps.push(lwp);
        }
        for lwp in &lwps {
            kthread_join(lwp).expect("join");
        }
        assert_eq!(SAMPLES.load(Ordering::SeqCst), 5_000 * cpus.len() as u64);
        assert_eq!(MISPLACED.load(Ordering::SeqCst), 0, "a bound thread ran on another CPU");
    }

    fn bad_cpu_is_refused() {
        let result = kthread_create(PRI_NONE, KTHREAD_MPSAFE, Some(CpuInfo { index: crate::cpu::MAX_CPUS + 5 }), |_: ()| kthread_exit(0), (), None, format_args!("nowhere"));
        assert_eq!(result, Err(Errno::EINVAL));
    }

    fn timeshare_priority_falls_with_cpu_use_and_rises_with_sleep() {
        use core::sync::atomic::{AtomicU32, Ordering};
        static AT_START: AtomicU32 = AtomicU32::new(0);
        static AFTER_SPIN: AtomicU32 = AtomicU32::new(0);
        static AFTER_SLEEP: AtomicU32 = AtomicU32::new(0);
        let mut lwp = None;
        kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_TS | KTHREAD_MUSTJOIN, None, |_: ()| {
            let me = crate::sched::current();
            AT_START.store(u32::from(me.priority()), Ordering::SeqCst);
            // Use the CPU until 100 ticks have been charged to it (on a
            // loaded host that takes longer than 100 ticks of time).
            let spin_ns = 100 * 1_000_000_000 / crate::time::tick_hz();
            let charged = || me.cpu_ticks.load(Ordering::SeqCst);
            let (first, deadline) = (charged(), crate::time::now_ns() + 60_000_000_000);
            while charged() - first < 100 && crate::time::now_ns() < deadline {
                core::hint::spin_loop();
            }
            AFTER_SPIN.store(u32::from(me.priority()), Ordering::SeqCst);
            crate::sched::sleep_ns(spin_ns);
            AFTER_SLEEP.store(u32::from(me.priority()), Ordering::SeqCst);
            kthread_exit(0)
        }, (), Some(&mut lwp), format_args!("timeshare"))
        .expect("kthread_create");
        kthread_join(&lwp.expect("newlp")).expect("join");
        let (start, spun, slept) = (AT_START.load(Ordering::SeqCst), AFTER_SPIN.load(Ordering::SeqCst), AFTER_SLEEP.load(Ordering::SeqCst));
        assert_eq!(start, MAXPRI_USER as u32);
        assert!(spun + 5 <= start, "priority did not fall with CPU use: {start} -> {spun}");
        assert!(slept > spun, "priority did not rise after sleeping: {spun} -> {slept}");
        assert!(slept <= start, "priority rose above its base: {slept}");
    }

    fn fixed_priority_does_not_move() {
        use core::sync::atomic::{AtomicU32, Ordering};
        static AFTER_SPIN: AtomicU32 = AtomicU32::new(0);
        let mut lwp = None;
        kthread_create(70, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, None, |_: ()| {
            let until = crate::time::now_ns() + 100 * 1_000_000_000 / crate::time::tick_hz();
            while crate::time::now_ns() < until {
                core::hint::spin_loop();
            }
            AFTER_SPIN.store(u32::from(crate::sched::current().priority()), Ordering::SeqCst);
            kthread_exit(0)
        }, (), Some(&mut lwp), format_args!("fixed"))
        .expect("kthread_create");
        kthread_join(&lwp.expect("newlp")).expect("join");
        assert_eq!(AFTER_SPIN.load(Ordering::SeqCst), 70);
    }

    fn name_comes_from_fmt_truncated_to_15_characters() {
        let mut lwp = None;
        kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, None, |_: ()| kthread_exit(0), (), Some(&mut lwp), format_args!("worker-{}-of-a-long-name", 7))
            .expect("kthread_create");
        let lwp = lwp.expect("newlp");
        assert_eq!(lwp.name(), "worker-7-of-a-l");
        assert_eq!(lwp.name().len(), MAXCOMLEN - 1);
        kthread_join(&lwp).expect("join");
    }

    fn mustjoin_exit_blocks_until_join() {
        let mut lwp = None;
        kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, None, |_: ()| kthread_exit(0), (), Some(&mut lwp), format_args!("mustjoin"))
            .expect("kthread_create");
        let lwp = lwp.expect("newlp");
        crate::sched::sleep_ns(50_000_000);
        assert!(!lwp.exit.lock().exited, "kthread_exit of a MUSTJOIN thread returned before kthread_join");
        assert_eq!(lwp.state(), lwp::LwpState::Sleeping);
        kthread_join(&lwp).expect("join");
        assert!(lwp.exit.lock().exited);
    }

    fn mustjoin_requires_newlp() {
        let result = kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, None, |_: ()| kthread_exit(0), (), None, format_args!("no-newlp"));
        assert_eq!(result, Err(Errno::EINVAL));
    }

    fn join_returns_once_the_thread_exits() {
        let mut lwp = None;
        kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, None, |_: ()| {
            crate::sched::sleep_ns(20_000_000);
            kthread_exit(0)
        }, (), Some(&mut lwp), format_args!("late-exit"))
        .expect("kthread_create");
        let lwp = lwp.expect("newlp");
        let started = crate::time::now_ns();
        assert_eq!(kthread_join(&lwp), Ok(()));
        assert!(crate::time::now_ns() - started >= 15_000_000, "join returned before the thread slept");
        assert!(lwp.exit.lock().exited);
        // It may still be leaving its CPU; it becomes a zombie right after.
        assert!(crate::ktest::wait_until(2_000, || lwp.state() == lwp::LwpState::Zombie));
    }

    fn join_only_once_and_only_mustjoin() {
        let mut lwp = None;
        kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, None, |_: ()| kthread_exit(0), (), Some(&mut lwp), format_args!("join-twice"))
            .expect("kthread_create");
        let lwp = lwp.expect("newlp");
        assert_eq!(kthread_join(&lwp), Ok(()));
        assert_eq!(kthread_join(&lwp), Err(Errno::EINVAL), "a second join");
        let mut detached = None;
        kthread_create(PRI_NONE, KTHREAD_MPSAFE, None, |_: ()| {
            crate::sched::sleep_ns(10_000_000);
            kthread_exit(0)
        }, (), Some(&mut detached), format_args!("detached"))
        .expect("kthread_create");
        assert_eq!(kthread_join(&detached.expect("newlp")), Err(Errno::EINVAL), "join of a thread without MUSTJOIN");
    }

    fn nonzero_exit_code_is_only_logged() {
        let mut lwp = None;
        kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, None, |_: ()| kthread_exit(5), (), Some(&mut lwp), format_args!("ecode"))
            .expect("kthread_create");
        assert_eq!(kthread_join(&lwp.expect("newlp")), Ok(()));
    }

    fn many_concurrent_joins_all_complete() {
        use core::sync::atomic::{AtomicU32, Ordering};
        static JOINED: AtomicU32 = AtomicU32::new(0);
        const PAIRS: u32 = 16;
        for index in 0..PAIRS {
            let mut target = None;
            kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, None, |_: ()| {
                crate::sched::sleep_ns(5_000_000);
                kthread_exit(0)
            }, (), Some(&mut target), format_args!("joinee-{index}"))
            .expect("kthread_create");
            let target = target.expect("newlp");
            kthread_create(PRI_NONE, KTHREAD_MPSAFE, None, |target: LwpRef| {
                if kthread_join(&target).is_ok() {
                    JOINED.fetch_add(1, Ordering::SeqCst);
                }
                kthread_exit(0)
            }, target, None, format_args!("joiner-{index}"))
            .expect("kthread_create");
        }
        assert!(
            crate::ktest::wait_until(10_000, || JOINED.load(Ordering::SeqCst) == PAIRS),
            "only {} of {PAIRS} concurrent joins completed", JOINED.load(Ordering::SeqCst)
        );
    }

    fn eagain_at_the_thread_limit() {
        use core::sync::atomic::Ordering;
        let limits = &crate::proc::LIMITS;
        let saved = limits.max_lwps.load(Ordering::SeqCst);
        limits.max_lwps.store(crate::proc::lwp_count(), Ordering::SeqCst);
        let result = kthread_create(PRI_NONE, KTHREAD_MPSAFE, None, |_: ()| kthread_exit(0), (), None, format_args!("over-limit"));
        limits.max_lwps.store(saved, Ordering::SeqCst);
        assert_eq!(result, Err(Errno::EAGAIN));
    }

    fn enomem_when_no_stack_can_be_had() {
        // Threads of earlier tests may free stacks meanwhile: hoard again
        // and retry until creation meets an empty frame allocator.
        let mut hoard = alloc::vec::Vec::new();
        let mut result = Ok(());
        for _ in 0..5 {
            while let Some(run) = crate::mm::frame::alloc(1) {
                hoard.push(run);
            }
            result = kthread_create(PRI_NONE, KTHREAD_MPSAFE, None, |_: ()| kthread_exit(0), (), None, format_args!("no-memory"));
            if result == Err(Errno::ENOMEM) {
                break;
            }
        }
        for run in hoard {
            crate::mm::frame::free(run);
        }
        assert_eq!(result, Err(Errno::ENOMEM));
    }
}
