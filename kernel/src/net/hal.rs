//! The DMA HAL virtio-drivers runs on: device-visible memory comes from the
//! frame allocator and is reached through the direct map, where physical
//! and virtual addresses differ by `DIRECT_MAP_BASE`.
//!
//! Owns no state. Allocation failures are reported to the driver as
//! physical address 0, which it turns into `Error::DmaError`. Buffers
//! shared with the device must live in the direct map (frames or heap);
//! the virtqueue code never shares anything else.

use core::ptr::NonNull;

use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use crate::mm::{self, DIRECT_MAP_BASE, frame};

pub struct KernelHal;

/// Physical address of a direct-map virtual address.
pub fn direct_map_phys(virtual_address: u64) -> u64 {
    debug_assert!((DIRECT_MAP_BASE..mm::KERNEL_VMA).contains(&virtual_address));
    virtual_address - DIRECT_MAP_BASE
}

// SAFETY: `dma_alloc` returns zeroed, physically contiguous frames that
// nothing else uses until `dma_dealloc` gives them back; translations go
// through the direct map, which covers all RAM and the (uncached) MMIO
// holes below 4 GiB.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match frame::alloc_zeroed(pages) {
            Some(run) => {
                let virtual_address = mm::phys_to_virt(run.start) as *mut u8;
                (
                    run.start,
                    NonNull::new(virtual_address).unwrap_or(NonNull::dangling()),
                )
            }
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        frame::free(frame::FrameRun {
            start: paddr,
            count: pages.max(1).next_power_of_two(),
        });
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(mm::phys_to_virt(paddr) as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        direct_map_phys(buffer.as_ptr().cast::<u8>() as u64)
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// Device registers reached through the direct map (uncached there).
/// Callers pass addresses derived from a BAR the PCI layer assigned.
pub(super) fn mmio_read_u8(virtual_address: u64) -> u8 {
    // SAFETY: a mapped, uncached device register inside an assigned BAR;
    // a volatile access of its natural width.
    unsafe { core::ptr::read_volatile(virtual_address as *const u8) }
}

pub(super) fn mmio_read_u16(virtual_address: u64) -> u16 {
    // SAFETY: as in `mmio_read_u8`; the register is 2-byte aligned.
    unsafe { core::ptr::read_volatile(virtual_address as *const u16) }
}

pub(super) fn mmio_write_u16(virtual_address: u64, value: u16) {
    // SAFETY: as in `mmio_read_u8`; the register is 2-byte aligned.
    unsafe { core::ptr::write_volatile(virtual_address as *mut u16, value) }
}
