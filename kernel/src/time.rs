//! Time: the monotonic clock and the periodic tick.
//!
//! Owns the TSC calibration (counts per second and the scaled multiplier
//! that turns TSC deltas into nanoseconds), the TSC value at kernel entry
//! (time zero), the local APIC timer rate and the tick counter. All of it is
//! written once at boot by the boot CPU (before interrupts are on) and read
//! lock-free afterwards through atomics. Both the TSC and the APIC timer are
//! calibrated against the PIT, a clock of known frequency.
//!
//! States: uncalibrated (`now_ns` returns 0) -> calibrated -> ticking.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::{self, apic, pit, trap};

/// The PIT window used for calibration: 25 ms.
const CALIBRATION_PIT_COUNTS: u16 = (pit::FREQUENCY_HZ / 40) as u16;
pub const DEFAULT_TICK_HZ: u64 = 100;

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per TSC count, times 2^32.
static NS_PER_TSC_SCALED: AtomicU64 = AtomicU64::new(0);
static APIC_TIMER_HZ: AtomicU64 = AtomicU64::new(0);
static TICK_HZ: AtomicU64 = AtomicU64::new(0);
static TICKS: AtomicU64 = AtomicU64::new(0);

/// Marks time zero. Called first thing in `kmain`.
pub fn mark_boot() {
    BOOT_TSC.store(arch::read_tsc(), Ordering::Relaxed);
}

/// What calibration measured, for the boot log.
#[derive(Debug, Clone, Copy)]
pub struct Calibration {
    pub tsc_hz: u64,
    pub apic_timer_hz: u64,
}

/// Measures the TSC and the local APIC timer (divided clock) against the PIT.
pub fn calibrate() -> Calibration {
    let mut tsc_start = 0;
    let (tsc_end, apic_counts) = pit::measure(
        CALIBRATION_PIT_COUNTS,
        || {
            apic::timer_start_free_running();
            tsc_start = arch::read_tsc();
        },
        || (arch::read_tsc(), apic::timer_elapsed_counts()),
    );
    let window = u64::from(CALIBRATION_PIT_COUNTS);
    let tsc_hz = (tsc_end - tsc_start) * pit::FREQUENCY_HZ / window;
    let apic_timer_hz = apic_counts * pit::FREQUENCY_HZ / window;
    let scaled = ((1_000_000_000u128 << 32) / u128::from(tsc_hz.max(1))) as u64;
    TSC_HZ.store(tsc_hz, Ordering::Relaxed);
    APIC_TIMER_HZ.store(apic_timer_hz, Ordering::Relaxed);
    NS_PER_TSC_SCALED.store(scaled, Ordering::Release);
    Calibration {
        tsc_hz,
        apic_timer_hz,
    }
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
        // Start on a tick edge, then time 20 ticks with the clock.
        wait_ticks(1);
        let start = now_ns();
        let ticks_to_wait = 20;
        wait_ticks(ticks_to_wait);
        let elapsed = now_ns() - start;
        let expected = ticks_to_wait * 1_000_000_000 / tick_hz();
        // Ticks can arrive late on a busy host (never early): allow 20%
        // early (calibration error) and 50% late.
        assert!(
            elapsed * 10 >= expected * 8 && elapsed * 10 <= expected * 15,
            "{ticks_to_wait} ticks at {} Hz took {elapsed} ns by the clock, expected {expected} ns",
            tick_hz()
        );
    }

    fn clock_rate_matches_the_pit() {
        // 50 ms of the PIT, timed by the monotonic clock.
        let pit_counts = (pit::FREQUENCY_HZ / 20) as u16;
        let mut start = 0;
        let end = pit::measure(pit_counts, || start = now_ns(), now_ns);
        let elapsed = end - start;
        let expected = 50_000_000;
        assert!(
            elapsed * 10 >= expected * 8 && elapsed * 10 <= expected * 15,
            "50 ms of PIT took {elapsed} ns by the clock"
        );
    }

    fn calibration_is_plausible() {
        let tsc_hz = TSC_HZ.load(Ordering::Relaxed);
        assert!((100_000_000..20_000_000_000).contains(&tsc_hz), "TSC at {tsc_hz} Hz");
        assert!(APIC_TIMER_HZ.load(Ordering::Relaxed) > 1_000, "APIC timer too slow");
    }
}
