//! Clocks, sleeps and randomness: `clock_gettime`, `clock_getres`,
//! `gettimeofday`, `nanosleep`, `clock_nanosleep`, `getrandom`, and CPU
//! time (`getrusage`; the CPU-time clocks).
//!
//! CPU time is counted in clock ticks: a tick charges the LWP it
//! interrupts, as user time when it came from user mode. A process's time
//! adds its exited LWPs' and its kernel-only workers' (system time).
//!
//! CLOCK_MONOTONIC (and _RAW, _COARSE, BOOTTIME) is the kernel's clock
//! since boot; CLOCK_REALTIME adds the wall-clock time read from the CMOS
//! clock at boot. Sleeps are interruptible: an exiting process ends them
//! (`EINTR`, with the time left written for `nanosleep`).

use super::SysResult;
use crate::errno::Errno;
use crate::mm::usercopy::{copy_from_user, copy_to_user};
use crate::proc::lwp::WakeReason;
use crate::sync::{Condvar, Mutex};
use crate::time;
use core::sync::atomic::Ordering;

const CLOCK_REALTIME: u64 = 0;
const CLOCK_MONOTONIC: u64 = 1;
const CLOCK_PROCESS_CPUTIME_ID: u64 = 2;
const CLOCK_THREAD_CPUTIME_ID: u64 = 3;
const CLOCK_MONOTONIC_RAW: u64 = 4;
const CLOCK_REALTIME_COARSE: u64 = 5;
const CLOCK_MONOTONIC_COARSE: u64 = 6;
const CLOCK_BOOTTIME: u64 = 7;
const TIMER_ABSTIME: u64 = 1;
const NANOS: u64 = 1_000_000_000;

/// Nanoseconds on `clock` now.
pub fn clock_now(clock: u64) -> Result<u64, Errno> {
    match clock {
        CLOCK_REALTIME | CLOCK_REALTIME_COARSE => Ok(time::realtime_ns()),
        CLOCK_MONOTONIC | CLOCK_MONOTONIC_RAW | CLOCK_MONOTONIC_COARSE | CLOCK_BOOTTIME => {
            Ok(time::now_ns())
        }
        CLOCK_PROCESS_CPUTIME_ID => {
            let (ticks, _) = crate::sched::current().process.cpu_ticks();
            Ok(ticks_to_ns(ticks))
        }
        CLOCK_THREAD_CPUTIME_ID => {
            let lwp = crate::sched::current();
            Ok(ticks_to_ns(lwp.cpu_ticks.load(Ordering::Relaxed)))
        }
        _ => Err(Errno::EINVAL),
    }
}

fn ticks_to_ns(ticks: u64) -> u64 {
    ticks.saturating_mul(NANOS / time::tick_hz().max(1))
}

const RUSAGE_SELF: i64 = 0;
const RUSAGE_CHILDREN: i64 = -1;
const RUSAGE_THREAD: i64 = 1;
/// `struct rusage`: two `timeval`s, then 14 longs.
const RUSAGE_BYTES: usize = 144;

/// `getrusage(who, usage)`: user and system time; the other fields are
/// not kept and read 0. No child processes exist, so their usage is 0.
pub fn getrusage(who: u64, address: u64) -> SysResult {
    let me = crate::sched::current();
    let (all, user) = match who as i64 {
        RUSAGE_SELF => me.process.cpu_ticks(),
        RUSAGE_THREAD => (
            me.cpu_ticks.load(Ordering::Relaxed),
            me.user_ticks.load(Ordering::Relaxed),
        ),
        RUSAGE_CHILDREN => (0, 0),
        _ => return Err(Errno::EINVAL),
    };
    let mut bytes = [0u8; RUSAGE_BYTES];
    let timeval = |ns: u64| {
        let mut t = [0u8; 16];
        t[..8].copy_from_slice(&(ns / NANOS).to_le_bytes());
        t[8..].copy_from_slice(&((ns % NANOS) / 1000).to_le_bytes());
        t
    };
    let user = user.min(all);
    bytes[..16].copy_from_slice(&timeval(ticks_to_ns(user)));
    bytes[16..32].copy_from_slice(&timeval(ticks_to_ns(all - user)));
    copy_to_user(address, &bytes)?;
    Ok(0)
}

fn write_timespec(address: u64, nanoseconds: u64) -> Result<(), Errno> {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&(nanoseconds / NANOS).to_le_bytes());
    bytes[8..].copy_from_slice(&(nanoseconds % NANOS).to_le_bytes());
    copy_to_user(address, &bytes)
}

/// Reads a `struct timespec` as nanoseconds (`EINVAL` if out of range).
pub fn read_timespec(address: u64) -> Result<u64, Errno> {
    let mut bytes = [0u8; 16];
    copy_from_user(&mut bytes, address)?;
    let seconds = i64::from_le_bytes(bytes[..8].try_into().expect("eight bytes"));
    let nanoseconds = i64::from_le_bytes(bytes[8..].try_into().expect("eight bytes"));
    if seconds < 0 || !(0..NANOS as i64).contains(&nanoseconds) {
        return Err(Errno::EINVAL);
    }
    Ok((seconds as u64)
        .saturating_mul(NANOS)
        .saturating_add(nanoseconds as u64))
}

pub fn clock_gettime(clock: u64, address: u64) -> SysResult {
    let now = clock_now(clock)?;
    write_timespec(address, now)?;
    Ok(0)
}

pub fn clock_getres(clock: u64, address: u64) -> SysResult {
    clock_now(clock)?;
    if address != 0 {
        write_timespec(address, 1)?;
    }
    Ok(0)
}

pub fn gettimeofday(timeval: u64, _timezone: u64) -> SysResult {
    if timeval != 0 {
        let now = time::realtime_ns();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&(now / NANOS).to_le_bytes());
        bytes[8..].copy_from_slice(&((now % NANOS) / 1_000).to_le_bytes());
        copy_to_user(timeval, &bytes)?;
    }
    Ok(0)
}

static NEVER: Mutex<()> = Mutex::new(());
static NEVER_NOTIFIED: Condvar = Condvar::new();

/// Sleeps interruptibly until the monotonic `deadline` (forever without
/// one). `Ok` once the deadline has passed; interrupted (a signal, a stop,
/// the exit), `Err` with the time that was left (0 without a deadline).
pub fn sleep_until(deadline: Option<u64>) -> Result<(), u64> {
    loop {
        let guard = NEVER.lock();
        let why = match deadline {
            Some(deadline) => {
                let now = time::now_ns();
                if now >= deadline {
                    return Ok(());
                }
                NEVER_NOTIFIED
                    .wait_timeout_interruptible(guard, deadline - now)
                    .1
            }
            None => NEVER_NOTIFIED.wait_interruptible(guard).1,
        };
        if why == WakeReason::Interrupted {
            return Err(deadline.map_or(0, |deadline| deadline.saturating_sub(time::now_ns())));
        }
    }
}

/// Sleeps `nanoseconds` unless interrupted: `ERESTARTNOHAND` then (the
/// call starts again unless a handler ran, which makes it `EINTR`).
pub fn sleep_interruptibly(nanoseconds: u64) -> Result<(), Errno> {
    sleep_until(Some(time::now_ns().saturating_add(nanoseconds))).map_err(|_| Errno::ERESTARTNOHAND)
}

/// A relative sleep to `deadline` (`nanosleep`, `restart_syscall`):
/// interrupted, it writes the time left to `remaining` (if not 0) and
/// ends with `ERESTART_RESTARTBLOCK`, so it continues to the same deadline
/// unless a handler ran (then `EINTR`).
pub fn sleep_to_deadline(deadline: u64, remaining: u64) -> SysResult {
    match sleep_until(Some(deadline)) {
        Ok(()) => Ok(0),
        Err(left) => {
            if remaining != 0 {
                write_timespec(remaining, left)?;
            }
            let restart = crate::signal::Restart::Sleep {
                deadline,
                remaining,
            };
            crate::signal::set_restart(&crate::sched::current(), restart);
            Err(Errno::ERESTART_RESTARTBLOCK)
        }
    }
}

pub fn nanosleep(request: u64, remaining: u64) -> SysResult {
    let nanoseconds = read_timespec(request)?;
    sleep_to_deadline(time::now_ns().saturating_add(nanoseconds), remaining)
}

pub fn clock_nanosleep(clock: u64, flags: u64, request: u64, remaining: u64) -> SysResult {
    let now = clock_now(clock)?;
    let value = read_timespec(request)?;
    if flags & TIMER_ABSTIME != 0 {
        // An absolute sleep simply starts again with the same arguments.
        sleep_interruptibly(value.saturating_sub(now))?;
        return Ok(0);
    }
    sleep_to_deadline(time::now_ns().saturating_add(value), remaining)
}

/// Fills the buffer from the kernel's generator (not cryptographic: a
/// xorshift stream seeded from the TSC and RDRAND where the CPU has it).
pub fn getrandom(buffer: u64, length: u64, _flags: u64) -> SysResult {
    let length = length.min(1 << 25) as usize;
    let mut chunk = [0u8; 256];
    let mut done = 0;
    while done < length {
        let part = (length - done).min(chunk.len());
        for byte in chunk[..part].iter_mut() {
            *byte = time::random_u64() as u8;
        }
        copy_to_user(buffer + done as u64, &chunk[..part])?;
        done += part;
    }
    Ok(length as u64)
}
