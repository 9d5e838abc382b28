//! BAR sizing after boot, answered from what boot learnt (see
//! `BarSizing`).

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use virtio_drivers::transport::pci::bus::DeviceFunction;

/// BAR sizing after boot, answered from what boot learnt.
///
/// Sizing a BAR (virtio-drivers does it every time a transport is built,
/// and for the MSI-X table) turns the function's memory decoding off,
/// writes all-ones to the BAR and restores both. Doing that while the
/// device is in use makes its registers vanish for a moment, and under
/// QEMU's multi-threaded TCG it has crashed QEMU (a vCPU's MMIO read
/// racing the remap). So `AnyCam` learns each BAR's answer to the
/// all-ones probe while boot sizes it; after `freeze_bar_sizes` a probe
/// of a known BAR is answered from that, and neither the probe, its
/// restore, nor the decode-off command write reach the hardware. Bus 0
/// only (the only bus enumerated). Probes are serialised by their
/// callers (the kernel's PCI lock), so plain atomics suffice.
pub(super) struct BarSizing {
    pub(super) frozen: AtomicBool,
    /// Per (device, function, BAR): a probe is in progress.
    pub(super) probing: [AtomicBool; BAR_SLOTS],
    /// Per (device, function, BAR): the value read after the all-ones
    /// write (0: not learnt).
    pub(super) responses: [AtomicU32; BAR_SLOTS],
}

const BAR_SLOTS: usize = 32 * 8 * 6;
const FIRST_BAR_OFFSET: u8 = 0x10;
pub(super) const COMMAND_OFFSET: u8 = 0x04;
/// I/O and memory space decoding in the command register.
pub(super) const DECODE_BITS: u32 = 0b11;

pub(super) static BAR_SIZING: BarSizing = BarSizing {
    frozen: AtomicBool::new(false),
    probing: [const { AtomicBool::new(false) }; BAR_SLOTS],
    responses: [const { AtomicU32::new(0) }; BAR_SLOTS],
};

pub(super) fn bar_slot(function: DeviceFunction, offset: u8) -> Option<usize> {
    if function.bus != 0
        || function.device >= 32
        || function.function >= 8
        || !(FIRST_BAR_OFFSET..FIRST_BAR_OFFSET + 24).contains(&offset)
        || !offset.is_multiple_of(4)
    {
        return None;
    }
    let bar = usize::from((offset - FIRST_BAR_OFFSET) / 4);
    Some((usize::from(function.device) * 8 + usize::from(function.function)) * 6 + bar)
}

/// Whether boot learnt BAR `index`'s answer to the sizing probe.
pub fn bar_size_learnt(function: DeviceFunction, index: u8) -> bool {
    bar_slot(function, FIRST_BAR_OFFSET + index * 4)
        .is_some_and(|slot| BAR_SIZING.responses[slot].load(Ordering::Acquire) != 0)
}

/// From now on, BAR probes are answered from what was learnt (see
/// `BarSizing`). Call once every BAR has been sized at boot.
pub fn freeze_bar_sizes() {
    BAR_SIZING.frozen.store(true, Ordering::Release);
}
