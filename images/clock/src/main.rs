//! `clock`: time, identity and small process-information system calls.
//!
//! All through raw system calls (`image_support::sys`): on the host, libc
//! would answer `clock_gettime` and `gettimeofday` from the vDSO without
//! entering the kernel; here every check reaches it.
//!
//! - `clock_gettime` MONOTONIC and REALTIME advance (REALTIME is after
//!   2020-01-01);
//! - `nanosleep` of 50 ms takes >= 50 ms by CLOCK_MONOTONIC;
//!   `clock_nanosleep` relative (20 ms) and absolute (TIMER_ABSTIME, 20 ms
//!   ahead) likewise;
//! - `gettimeofday` agrees with CLOCK_REALTIME within a second;
//! - `sched_yield` returns 0;
//! - `getrandom` fills 256 bytes (not all zero, two fills differ);
//! - `uname`: sysname `Linux` and a machine of `x86_64`, other fields
//!   printed;
//! - getpid/gettid (equal in the main thread, different in another
//!   thread)/getppid/getuid/geteuid/getgid/getegid;
//! - `sched_getaffinity` reports at least one CPU;
//! - `prlimit64(0, RLIMIT_STACK, NULL, &old)` reports a current limit > 0.
//! - CPU time: while a second thread spins for 200 ms the main thread
//!   sleeps; then `getrusage(RUSAGE_SELF)` and CLOCK_PROCESS_CPUTIME_ID
//!   show at least 50 ms (the spinner's time counts for the process), and
//!   the main thread's own (`RUSAGE_THREAD`, CLOCK_THREAD_CPUTIME_ID) is
//!   below the process's by at least 50 ms; `RUSAGE_CHILDREN` is zero; a
//!   bad `who` is `EINVAL`, a bad pointer `EFAULT`.

use image_support::{Checker, SysResult, show, sys};
use std::time::Duration;

fn now(clock: i32) -> Result<Duration, i32> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the kernel writes one timespec into `ts`.
    unsafe {
        sys(
            libc::SYS_clock_gettime,
            &[clock as u64, &mut ts as *mut libc::timespec as u64],
        )?
    };
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    }
}

fn main() -> std::process::ExitCode {
    let mut c = Checker::new("clock");
    clocks_advance(&mut c);
    sleeps(&mut c);
    misc(&mut c);
    identity(&mut c);
    cpu_time(&mut c);
    c.finish()
}

fn clocks_advance(c: &mut Checker) {
    let (m1, r1) = (now(libc::CLOCK_MONOTONIC), now(libc::CLOCK_REALTIME));
    // Busy for a moment so both clocks must move.
    let spin_until = m1.map(|m| m + Duration::from_millis(2));
    let mut spins = 0u64;
    while let Ok(t) = now(libc::CLOCK_MONOTONIC) {
        spins += 1;
        if spin_until.map_or(true, |u| t >= u) || spins > 50_000_000 {
            break;
        }
    }
    let (m2, r2) = (now(libc::CLOCK_MONOTONIC), now(libc::CLOCK_REALTIME));
    c.check(
        "clock_monotonic_advances",
        matches!((m1, m2), (Ok(a), Ok(b)) if b > a),
        format!("{m1:?} -> {m2:?} ({spins} reads)"),
    );
    let y2020 = Duration::from_secs(1_577_836_800);
    c.check(
        "clock_realtime_advances",
        matches!((r1, r2), (Ok(a), Ok(b)) if b > a && a > y2020),
        format!("{r1:?} -> {r2:?} seconds since 1970 (expected after 2020)"),
    );
}

fn timed(f: impl FnOnce() -> SysResult) -> (SysResult, Duration) {
    let start = now(libc::CLOCK_MONOTONIC).unwrap_or_default();
    let r = f();
    let end = now(libc::CLOCK_MONOTONIC).unwrap_or_default();
    (r, end.saturating_sub(start))
}

fn sleeps(c: &mut Checker) {
    let want = Duration::from_millis(50);
    let ts = timespec(want);
    // SAFETY: reads `ts`; the remainder pointer is null.
    let (r, took) = timed(|| unsafe {
        sys(
            libc::SYS_nanosleep,
            &[&ts as *const libc::timespec as u64, 0],
        )
    });
    c.check(
        "nanosleep_50ms",
        r == Ok(0) && took >= want,
        format!(
            "{} after {} us (expected >= 50000 us)",
            show(r),
            took.as_micros()
        ),
    );
    let want = Duration::from_millis(20);
    let ts = timespec(want);
    // SAFETY: as above.
    let (r, took) = timed(|| unsafe {
        sys(
            libc::SYS_clock_nanosleep,
            &[
                libc::CLOCK_MONOTONIC as u64,
                0,
                &ts as *const libc::timespec as u64,
                0,
            ],
        )
    });
    c.check(
        "clock_nanosleep_relative_20ms",
        r == Ok(0) && took >= want,
        format!(
            "{} after {} us (expected >= 20000 us)",
            show(r),
            took.as_micros()
        ),
    );
    let deadline = now(libc::CLOCK_MONOTONIC).unwrap_or_default() + want;
    let ts = timespec(deadline);
    // SAFETY: as above.
    let r = unsafe {
        sys(
            libc::SYS_clock_nanosleep,
            &[
                libc::CLOCK_MONOTONIC as u64,
                libc::TIMER_ABSTIME as u64,
                &ts as *const libc::timespec as u64,
                0,
            ],
        )
    };
    let after = now(libc::CLOCK_MONOTONIC).unwrap_or_default();
    c.check(
        "clock_nanosleep_absolute",
        r == Ok(0) && after >= deadline,
        format!(
            "{}; woke {} us after the deadline (expected >= 0)",
            show(r),
            after.as_micros() as i128 - deadline.as_micros() as i128
        ),
    );
}

fn misc(c: &mut Checker) {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: writes one timeval; the timezone pointer is null.
    let r = unsafe {
        sys(
            libc::SYS_gettimeofday,
            &[&mut tv as *mut libc::timeval as u64, 0],
        )
    };
    let real = now(libc::CLOCK_REALTIME).unwrap_or_default();
    let tod = Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    let apart = real.abs_diff(tod);
    c.check(
        "gettimeofday",
        r == Ok(0) && apart < Duration::from_secs(1) && tv.tv_usec < 1_000_000,
        format!(
            "{} {}.{:06} s, {} us from CLOCK_REALTIME",
            show(r),
            tv.tv_sec,
            tv.tv_usec,
            apart.as_micros()
        ),
    );
    // SAFETY: no arguments.
    let r = unsafe { sys(libc::SYS_sched_yield, &[]) };
    c.check("sched_yield", r == Ok(0), show(r));

    let mut a = [0u8; 256];
    let mut b = [0u8; 256];
    // SAFETY: the kernel writes at most 256 bytes into each buffer.
    let (ra, rb) = unsafe {
        (
            sys(libc::SYS_getrandom, &[a.as_mut_ptr() as u64, 256, 0]),
            sys(libc::SYS_getrandom, &[b.as_mut_ptr() as u64, 256, 0]),
        )
    };
    c.check(
        "getrandom",
        ra == Ok(256) && rb == Ok(256) && a != b && a.iter().any(|&x| x != 0),
        format!(
            "{} and {}; first bytes {:02x?}; the two fills differ: {}",
            show(ra),
            show(rb),
            &a[..8],
            a != b
        ),
    );

    // SAFETY: utsname is plain bytes; the kernel fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: writes one utsname.
    let r = unsafe { sys(libc::SYS_uname, &[&mut u as *mut libc::utsname as u64]) };
    let field = |f: &[libc::c_char]| -> String {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&ch| ch != 0)
            .map(|&ch| ch as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let (sys_name, machine) = (field(&u.sysname), field(&u.machine));
    c.check(
        "uname",
        r == Ok(0) && sys_name == "Linux" && machine == "x86_64",
        format!(
            "{}: sysname={sys_name:?} nodename={:?} release={:?} version={:?} machine={machine:?}",
            show(r),
            field(&u.nodename),
            field(&u.release),
            field(&u.version)
        ),
    );
}

fn identity(c: &mut Checker) {
    // SAFETY: these take no arguments and touch no memory.
    let call = |nr| unsafe { sys(nr, &[]) };
    let pid = call(libc::SYS_getpid);
    let tid = call(libc::SYS_gettid);
    let other_tid = std::thread::spawn(move || call(libc::SYS_gettid))
        .join()
        .unwrap_or(Err(0));
    c.check(
        "getpid_gettid",
        matches!(pid, Ok(p) if p > 0) && tid == pid && other_tid.is_ok() && other_tid != tid,
        format!(
            "pid {}, main tid {}, another thread's tid {}",
            show(pid),
            show(tid),
            show(other_tid)
        ),
    );
    let ppid = call(libc::SYS_getppid);
    c.check("getppid", matches!(ppid, Ok(p) if p >= 0), show(ppid));
    for (name, nr) in [
        ("getuid", libc::SYS_getuid),
        ("geteuid", libc::SYS_geteuid),
        ("getgid", libc::SYS_getgid),
        ("getegid", libc::SYS_getegid),
    ] {
        let r = call(nr);
        c.check(name, matches!(r, Ok(v) if v >= 0), show(r));
    }
    let mut mask = [0u64; 16];
    // SAFETY: the kernel writes at most 128 bytes into `mask`.
    let r = unsafe {
        sys(
            libc::SYS_sched_getaffinity,
            &[
                0,
                std::mem::size_of_val(&mask) as u64,
                mask.as_mut_ptr() as u64,
            ],
        )
    };
    let cpus: u32 = mask.iter().map(|w| w.count_ones()).sum();
    c.check(
        "sched_getaffinity",
        matches!(r, Ok(n) if n > 0 && n % 8 == 0) && cpus >= 1,
        format!("{} ({cpus} CPUs in the mask)", show(r)),
    );
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads nothing (new limit null), writes one rlimit.
    let r = unsafe {
        sys(
            libc::SYS_prlimit64,
            &[
                0,
                libc::RLIMIT_STACK as u64,
                0,
                &mut old as *mut libc::rlimit as u64,
            ],
        )
    };
    c.check(
        "prlimit64_stack",
        r == Ok(0) && old.rlim_cur > 0 && old.rlim_cur <= old.rlim_max,
        format!(
            "{}: soft {} hard {}",
            show(r),
            limit(old.rlim_cur),
            limit(old.rlim_max)
        ),
    );
}

fn limit(v: libc::rlim_t) -> String {
    if v == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// `getrusage(who)`: user + system time, or the errno.
fn rusage(who: i32) -> Result<(Duration, libc::rusage), i32> {
    // SAFETY: rusage is plain data; all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes one rusage.
    unsafe {
        sys(
            libc::SYS_getrusage,
            &[who as i64 as u64, &mut usage as *mut libc::rusage as u64],
        )?
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok((time(usage.ru_utime) + time(usage.ru_stime), usage))
}

fn cpu_time(c: &mut Checker) {
    let spin = Duration::from_millis(200);
    let spinner = std::thread::spawn(move || {
        let start = now(libc::CLOCK_MONOTONIC).unwrap_or_default();
        let mut spins = 0u64;
        while now(libc::CLOCK_MONOTONIC).unwrap_or_default() < start + spin && spins < 100_000_000 {
            spins += 1;
        }
    });
    let _ = spinner.join();
    let least = Duration::from_millis(50);
    let process = rusage(libc::RUSAGE_SELF);
    let thread = rusage(libc::RUSAGE_THREAD);
    c.check(
        "getrusage_self_counts_every_thread",
        matches!((process, thread), (Ok((p, _)), Ok((t, _))) if p >= least && p >= t + least),
        format!(
            "process {:?}, main thread {:?} (a thread spun {spin:?} while the main thread slept)",
            process.map(|u| u.0),
            thread.map(|u| u.0)
        ),
    );
    let (pc, tc) = (
        now(libc::CLOCK_PROCESS_CPUTIME_ID),
        now(libc::CLOCK_THREAD_CPUTIME_ID),
    );
    c.check(
        "cpu_time_clocks",
        matches!((pc, tc), (Ok(p), Ok(t)) if p >= least && p >= t + least),
        format!("CLOCK_PROCESS_CPUTIME_ID {pc:?}, CLOCK_THREAD_CPUTIME_ID {tc:?}"),
    );
    let children = rusage(libc::RUSAGE_CHILDREN);
    c.check(
        "getrusage_children",
        matches!(children, Ok((d, _)) if d == Duration::ZERO),
        format!("{:?}", children.map(|u| u.0)),
    );
    let r = rusage(7).map(|_| 0);
    c.expect_errno("getrusage_bad_who", r, libc::EINVAL);
    // SAFETY: a deliberately bad pointer: the kernel must refuse it.
    let r = unsafe { sys(libc::SYS_getrusage, &[0, 0x10]) };
    c.expect_errno("getrusage_bad_pointer", r, libc::EFAULT);
}
