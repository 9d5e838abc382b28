//! CPU use over a test, as iperf3's `cpu_util`: the process's CPU time
//! (`CLOCK_PROCESS_CPUTIME_ID`, what `clock()` reads) and its user and
//! system split (`getrusage(RUSAGE_SELF)`), each as a percentage of the
//! wall-clock time between [`CpuMeter::start`] and [`CpuMeter::finish`].
//!
//! On an OS without `getrusage` (Spindle answers `ENOSYS`) the split is
//! unknown: the whole process time is reported as user time, system 0.
//! The first failure is remembered, so the call is tried once per process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static NO_RUSAGE: AtomicBool = AtomicBool::new(false);

/// The process's CPU time.
fn process_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a live timespec for the kernel to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    ))
}

/// `(user, system)` CPU time of the process.
fn rusage() -> Option<(Duration, Duration)> {
    if NO_RUSAGE.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: rusage is plain data; all-zero is valid.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: r is a live rusage for the kernel to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) } != 0 {
        NO_RUSAGE.store(true, Ordering::Relaxed);
        return None;
    }
    let tv = |t: libc::timeval| {
        Duration::from_micros(t.tv_sec.max(0) as u64 * 1_000_000 + t.tv_usec.max(0) as u64)
    };
    Some((tv(r.ru_utime), tv(r.ru_stime)))
}

/// A measurement in progress.
pub struct CpuMeter {
    wall: Instant,
    process: Option<Duration>,
    split: Option<(Duration, Duration)>,
}

impl CpuMeter {
    pub fn start() -> CpuMeter {
        CpuMeter {
            wall: Instant::now(),
            process: process_time(),
            split: rusage(),
        }
    }

    /// `[total, user, system]` percent since `start`.
    pub fn finish(&self) -> [f64; 3] {
        let wall = self.wall.elapsed().as_secs_f64();
        if wall <= 0.0 {
            return [0.0; 3];
        }
        let pct = |d: Duration| d.as_secs_f64() / wall * 100.0;
        let total = match (self.process, process_time()) {
            (Some(a), Some(b)) => pct(b.saturating_sub(a)),
            _ => 0.0,
        };
        match (self.split, rusage()) {
            (Some((u0, s0)), Some((u1, s1))) => [
                total,
                pct(u1.saturating_sub(u0)),
                pct(s1.saturating_sub(s0)),
            ],
            _ => [total, total, 0.0],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_work_shows_up() {
        let m = CpuMeter::start();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(50) {
            x = crate::sock::splitmix(x);
        }
        std::hint::black_box(x);
        let [total, user, system] = m.finish();
        assert!(total > 10.0, "total {total}");
        assert!(user >= 0.0 && system >= 0.0);
    }
}
