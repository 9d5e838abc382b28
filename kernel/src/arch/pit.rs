//! The 8254 PIT, used once at boot as the known clock that calibrates the
//! TSC and the local APIC timer.
//!
//! Channel 2 is gated through port 0x61 and counts down at 1.193182 MHz in
//! mode 0; bit 5 of port 0x61 rises when it reaches zero. No lock: only the
//! boot CPU calls it, before other CPUs run.

use x86_64::instructions::port::Port;

pub const FREQUENCY_HZ: u64 = 1_193_182;

/// Busy-waits for `counts` PIT ticks (at most 65535, about 54.9 ms), calling
/// `on_start` right after the countdown starts and returning the result of
/// `on_end` called right after it ends.
pub fn measure<T>(counts: u16, on_start: impl FnOnce(), on_end: impl FnOnce() -> T) -> T {
    let mut gate = Port::<u8>::new(0x61);
    let mut command = Port::<u8>::new(0x43);
    let mut channel2 = Port::<u8>::new(0x42);
    // SAFETY: ports 0x42/0x43/0x61 are the PIT channel 2 data, PIT command
    // and the gate/speaker control; the sequence programs channel 2 in
    // one-shot mode with the speaker off and touches nothing else.
    unsafe {
        let control = gate.read();
        gate.write((control & !0x02) | 0x01); // speaker off, gate on
        command.write(0b1011_0000); // channel 2, low/high byte, mode 0, binary
        channel2.write(counts as u8);
        channel2.write((counts >> 8) as u8);
        // Restart the count by toggling the gate.
        let control = gate.read();
        gate.write(control & !0x01);
        gate.write(control | 0x01);
    }
    on_start();
    // SAFETY: reading the status port has no side effects.
    while unsafe { gate.read() } & 0x20 == 0 {
        core::hint::spin_loop();
    }
    on_end()
}
