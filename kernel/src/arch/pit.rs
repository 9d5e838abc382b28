//! The 8254 PIT, used at boot as the known clock that calibrates the TSC.
//!
//! Channel 2 (gated through port 0x61, speaker off) counts down from 0xffff
//! at 1.193182 MHz in mode 0; its count is latched and read back. Readers
//! pair each count with TSC reads taken just before and after, so time the
//! host spends not running this vCPU between two pairs cancels out. No lock:
//! only the boot CPU (and tests, on one CPU at a time) use it.

use x86_64::instructions::port::Port;

pub const FREQUENCY_HZ: u64 = 1_193_182;

const CHANNEL2_DATA: u16 = 0x42;
const COMMAND: u16 = 0x43;
const GATE_CONTROL: u16 = 0x61;

/// Starts channel 2 counting down from 0xffff (it wraps after ~54.9 ms).
pub fn start_countdown() {
    let mut gate = Port::<u8>::new(GATE_CONTROL);
    let mut command = Port::<u8>::new(COMMAND);
    let mut channel2 = Port::<u8>::new(CHANNEL2_DATA);
    // SAFETY: ports 0x42/0x43/0x61 are PIT channel 2's data port, the PIT
    // command port and the gate/speaker control; this programs channel 2
    // (speaker off) and touches nothing else.
    unsafe {
        let control = gate.read();
        gate.write(control & !0x03); // gate off, speaker off
        command.write(0b1011_0000); // channel 2, low/high byte, mode 0, binary
        channel2.write(0xff);
        channel2.write(0xff);
        gate.write((control & !0x02) | 0x01); // gate on: counting starts
    }
}

/// The current count of channel 2.
pub fn read_count() -> u16 {
    let mut command = Port::<u8>::new(COMMAND);
    let mut channel2 = Port::<u8>::new(CHANNEL2_DATA);
    // SAFETY: the latch command freezes channel 2's count for the two reads
    // that follow; no other state changes.
    unsafe {
        command.write(0b1000_0000); // latch channel 2
        let low = channel2.read();
        let high = channel2.read();
        u16::from_le_bytes([low, high])
    }
}

/// The TSC and the PIT count read as close together as this vCPU allows:
/// the best of a few tries, judged by the TSC time the PIT read took.
/// Returns (TSC at the read, PIT count).
pub fn tight_sample() -> (u64, u16) {
    let mut best = (u64::MAX, 0, 0);
    for _ in 0..5 {
        let before = super::read_tsc();
        let count = read_count();
        let after = super::read_tsc();
        if after - before < best.0 {
            best = (after - before, before + (after - before) / 2, count);
        }
    }
    (best.1, best.2)
}
