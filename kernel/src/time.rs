//! Time: the monotonic clock and the periodic tick.
//!
//! Owns the TSC calibration (counts per second and the scaled multiplier
//! that turns TSC deltas into nanoseconds), the TSC value at kernel entry
//! (time zero), the local APIC timer rate and the tick counter. All of it is
//! written once at boot by the boot CPU (before interrupts are on) and read
//! lock-free afterwards through atomics. The TSC is calibrated against the
//! PIT, a clock of known frequency, first thing at boot; the APIC timer is
//! then calibrated against the TSC. Each measurement compares two tight
//! samples of both clocks, so a host that stops this vCPU for a while (TCG
//! on a busy machine) cannot skew it; the median of five measurements
//! counts.
//!
//! States: uncalibrated (`now_ns` returns 0) -> clock running (TSC
//! calibrated) -> ticking (APIC timer calibrated and started).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::{self, apic, pit, trap};

/// Each clock is measured this many times; the median counts.
const CALIBRATION_ROUNDS: usize = 5;
/// The PIT window of one TSC measurement: at least 2 ms.
const CALIBRATION_PIT_COUNTS: u16 = (pit::FREQUENCY_HZ / 500) as u16;
/// The TSC window of one APIC timer measurement: at least 1 ms.
const APIC_CALIBRATION_NS: u64 = 1_000_000;
pub const DEFAULT_TICK_HZ: u64 = 250;

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per TSC count, times 2^32.
static NS_PER_TSC_SCALED: AtomicU64 = AtomicU64::new(0);
static APIC_TIMER_HZ: AtomicU64 = AtomicU64::new(0);
static TICK_HZ: AtomicU64 = AtomicU64::new(0);
static TICKS: AtomicU64 = AtomicU64::new(0);

/// Wall-clock nanoseconds at time zero (from the CMOS clock).
static BOOT_EPOCH_NS: AtomicU64 = AtomicU64::new(0);
static RANDOM_STATE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);

/// Reads the wall clock once (at boot, after the TSC is calibrated).
pub fn init_wall_clock() {
    if let Some(seconds) = arch::rtc::read_unix_seconds() {
        BOOT_EPOCH_NS.store(
            (seconds * 1_000_000_000).saturating_sub(now_ns()),
            Ordering::Relaxed,
        );
    }
    let features = core::arch::x86_64::__cpuid(1);
    let mut seed = arch::read_tsc() ^ BOOT_EPOCH_NS.load(Ordering::Relaxed);
    if features.ecx & (1 << 30) != 0 {
        let mut hardware = 0u64;
        // SAFETY: CPUID says RDRAND exists; it only writes `hardware`.
        if unsafe { core::arch::x86_64::_rdrand64_step(&mut hardware) } == 1 {
            seed ^= hardware;
        }
    }
    RANDOM_STATE.store(seed | 1, Ordering::Relaxed);
}

/// Nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    BOOT_EPOCH_NS.load(Ordering::Relaxed) + now_ns()
}

/// A pseudo-random number (xorshift64*, seeded at boot; not for keys).
pub fn random_u64() -> u64 {
    let mut state = RANDOM_STATE.load(Ordering::Relaxed);
    loop {
        let mut next = state ^ arch::read_tsc().rotate_left(17);
        next ^= next >> 12;
        next ^= next << 25;
        next ^= next >> 27;
        match RANDOM_STATE.compare_exchange_weak(state, next, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => return next.wrapping_mul(0x2545_f491_4f6c_dd1d),
            Err(current) => state = current,
        }
    }
}

/// Marks time zero. Called first thing in `kmain`.
pub fn mark_boot() {
    BOOT_TSC.store(arch::read_tsc(), Ordering::Relaxed);
}

/// The median of `rounds` measurements. The host may deschedule the vCPU
/// in the middle of a measurement (a guest under TCG on a busy machine),
/// which skews that one round; the median ignores a minority of such rounds.
fn median_of<const ROUNDS: usize>(mut measure: impl FnMut() -> u64) -> u64 {
    let mut samples = [0u64; ROUNDS];
    for sample in samples.iter_mut() {
        *sample = measure();
    }
    samples.sort_unstable();
    samples[ROUNDS / 2]
}

/// Measures the TSC against the PIT and starts the clock: from here on
/// `now_ns` counts from kernel entry. Returns the TSC rate in Hz.
pub fn calibrate_tsc() -> u64 {
    let tsc_hz = median_of::<CALIBRATION_ROUNDS>(|| {
        pit::start_countdown();
        let (tsc_start, pit_start) = pit::tight_sample();
        while pit_start.wrapping_sub(pit::read_count()) < CALIBRATION_PIT_COUNTS {
            core::hint::spin_loop();
        }
        let (tsc_end, pit_end) = pit::tight_sample();
        let pit_counts = u64::from(pit_start.wrapping_sub(pit_end)).max(1);
        (tsc_end - tsc_start) * pit::FREQUENCY_HZ / pit_counts
    });
    let scaled = ((1_000_000_000u128 << 32) / u128::from(tsc_hz.max(1))) as u64;
    TSC_HZ.store(tsc_hz, Ordering::Relaxed);
    NS_PER_TSC_SCALED.store(scaled, Ordering::Release);
    tsc_hz
}

/// The clock and the APIC timer's elapsed counts, read as close together as
/// this vCPU allows (best of a few tries).
fn tight_apic_sample() -> (u64, u64) {
    let mut best = (u64::MAX, 0, 0);
    for _ in 0..5 {
        let before = now_ns();
        let counts = apic::timer_elapsed_counts();
        let after = now_ns();
        if after - before < best.0 {
            best = (after - before, before + (after - before) / 2, counts);
        }
    }
    (best.1, best.2)
}

/// Measures the local APIC timer (its divided clock) against the calibrated
/// TSC. Returns its rate in Hz.
pub fn calibrate_apic_timer() -> u64 {
    let apic_timer_hz = median_of::<CALIBRATION_ROUNDS>(|| {
        apic::timer_start_free_running();
        let (start_ns, start_counts) = tight_apic_sample();
        while now_ns() - start_ns < APIC_CALIBRATION_NS {
            core::hint::spin_loop();
        }
        let (end_ns, end_counts) = tight_apic_sample();
        (end_counts - start_counts) * 1_000_000_000 / (end_ns - start_ns).max(1)
    });
    APIC_TIMER_HZ.store(apic_timer_hz, Ordering::Relaxed);
    apic_timer_hz
}

/// Nanoseconds since kernel entry; 0 before calibration.
pub fn now_ns() -> u64 {
    let scaled = NS_PER_TSC_SCALED.load(Ordering::Acquire);
    let elapsed = arch::read_tsc().saturating_sub(BOOT_TSC.load(Ordering::Relaxed));
    ((u128::from(elapsed) * u128::from(scaled)) >> 32) as u64
}

/// Starts the periodic tick at `hz` on this CPU.
pub fn start_tick(hz: u64) {
    let hz = hz.clamp(1, 10_000);
    let counts = (APIC_TIMER_HZ.load(Ordering::Relaxed) / hz).clamp(1, u64::from(u32::MAX)) as u32;
    TICK_HZ.store(hz, Ordering::Relaxed);
    apic::timer_start_periodic(trap::VECTOR_TIMER, counts);
}

/// The timer interrupt's work.
pub fn on_tick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

/// Ticks since `start_tick`.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

pub fn tick_hz() -> u64 {
    TICK_HZ.load(Ordering::Relaxed)
}

/// Sleeps (halting the CPU) until `count` more ticks have passed.
pub fn wait_ticks(count: u64) {
    let target = ticks() + count;
    while ticks() < target {
        arch::wait_for_interrupt();
    }
}

crate::ktests! {
    fn clock_is_monotonic_and_advances() {
        let mut previous = now_ns();
        for _ in 0..10_000 {
            let now = now_ns();
            assert!(now >= previous, "clock went back from {previous} to {now}");
            previous = now;
        }
        let start = now_ns();
        wait_ticks(2);
        assert!(now_ns() > start, "the clock did not advance across two ticks");
    }

    fn clock_rate_matches_the_tick() {
        // On the boot CPU, whose timer drives `ticks`, so each wait ends at
        // a tick edge. Windows of 10 ticks, each from a tick edge. A late
        // tick (the host did not run this vCPU) makes a window look
        // longer, never shorter, so the shortest of five windows counts.
        crate::ktest::on_cpu(0, || {
            let ticks_per_window = 10;
            let mut shortest = u64::MAX;
            for _ in 0..5 {
                wait_ticks(1);
                let start = now_ns();
                wait_ticks(ticks_per_window);
                shortest = shortest.min(now_ns() - start);
            }
            let expected = ticks_per_window * 1_000_000_000 / tick_hz();
            assert!(
                shortest * 10 >= expected * 9 && shortest * 10 <= expected * 12,
                "{ticks_per_window} ticks at {} Hz took at least {shortest} ns by the clock, expected {expected} ns",
                tick_hz()
            );
        });
    }

    fn clock_rate_matches_the_pit() {
        // At least 20 ms of PIT counts against the clock, from tight
        // samples of both.
        let tight_pair = || {
            let (tsc, count) = pit::tight_sample();
            let nanoseconds = ((u128::from(tsc - BOOT_TSC.load(Ordering::Relaxed))
                * u128::from(NS_PER_TSC_SCALED.load(Ordering::Relaxed)))
                >> 32) as u64;
            (nanoseconds, count)
        };
        pit::start_countdown();
        let (start_ns, start_count) = tight_pair();
        while start_count.wrapping_sub(pit::read_count()) < (pit::FREQUENCY_HZ / 50) as u16 {
            core::hint::spin_loop();
        }
        let (end_ns, end_count) = tight_pair();
        let pit_ns = u64::from(start_count.wrapping_sub(end_count)) * 1_000_000_000 / pit::FREQUENCY_HZ;
        let clock_ns = end_ns - start_ns;
        assert!(
            clock_ns * 100 >= pit_ns * 95 && clock_ns * 100 <= pit_ns * 105,
            "{pit_ns} ns of PIT took {clock_ns} ns by the clock"
        );
    }

    fn apic_timer_rate_matches_the_clock() {
        apic::timer_start_free_running();
        let (start_ns, start_counts) = tight_apic_sample();
        while now_ns() - start_ns < 5_000_000 {
            core::hint::spin_loop();
        }
        let (end_ns, end_counts) = tight_apic_sample();
        let measured = (end_counts - start_counts) * 1_000_000_000 / (end_ns - start_ns);
        let calibrated = APIC_TIMER_HZ.load(Ordering::Relaxed);
        // Restart the tick the free-running measurement replaced.
        start_tick(tick_hz());
        assert!(
            measured * 100 >= calibrated * 95 && measured * 100 <= calibrated * 105,
            "APIC timer runs at {measured} Hz, calibrated {calibrated} Hz"
        );
    }

    fn calibration_is_plausible() {
        let tsc_hz = tsc_hz();
        assert!((100_000_000..20_000_000_000).contains(&tsc_hz), "TSC at {tsc_hz} Hz");
        assert!(APIC_TIMER_HZ.load(Ordering::Relaxed) > 1_000, "APIC timer too slow");
    }
}
