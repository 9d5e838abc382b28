//! Clocks, sleeps and randomness: `clock_gettime`, `clock_getres`,
//! `gettimeofday`, `nanosleep`, `clock_nanosleep`, `getrandom`.
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
        CLOCK_PROCESS_CPUTIME_ID | CLOCK_THREAD_CPUTIME_ID => {
            let lwp = crate::sched::current();
            let ticks = lwp.cpu_ticks.load(core::sync::atomic::Ordering::Relaxed);
            Ok(ticks * (NANOS / time::tick_hz().max(1)))
        }
        _ => Err(Errno::EINVAL),
    }
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

/// Sleeps `nanoseconds` unless interrupted (`EINTR`, with the time left).
pub fn sleep_interruptibly(nanoseconds: u64) -> Result<(), (Errno, u64)> {
    let deadline = time::now_ns().saturating_add(nanoseconds);
    loop {
        let now = time::now_ns();
        if now >= deadline {
            return Ok(());
        }
        let guard = NEVER.lock();
        let (_guard, why) = NEVER_NOTIFIED.wait_timeout_interruptible(guard, deadline - now);
        if why == WakeReason::Interrupted {
            crate::sched::current().set_interrupt_pending(false);
            return Err((Errno::EINTR, deadline.saturating_sub(time::now_ns())));
        }
    }
}

pub fn nanosleep(request: u64, remaining: u64) -> SysResult {
    let nanoseconds = read_timespec(request)?;
    match sleep_interruptibly(nanoseconds) {
        Ok(()) => Ok(0),
        Err((error, left)) => {
            if remaining != 0 {
                let _ = write_timespec(remaining, left);
            }
            Err(error)
        }
    }
}

pub fn clock_nanosleep(clock: u64, flags: u64, request: u64, remaining: u64) -> SysResult {
    let now = clock_now(clock)?;
    let value = read_timespec(request)?;
    let nanoseconds = if flags & TIMER_ABSTIME != 0 {
        value.saturating_sub(now)
    } else {
        value
    };
    match sleep_interruptibly(nanoseconds) {
        Ok(()) => Ok(0),
        Err((error, left)) => {
            if remaining != 0 && flags & TIMER_ABSTIME == 0 {
                let _ = write_timespec(remaining, left);
            }
            Err(error)
        }
    }
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
