//! The kernel's page tables.
//!
//! Owns the one kernel PML4 that the boot stub built (CR3 points at it for
//! good) and every table below its upper-half entries. `init` removes the
//! boot identity map, marks the direct map of non-RAM holes uncached (device
//! registers live there), extends the direct map past 4 GiB and turns on
//! no-execute. Later changes (kernel stacks) go through `map_kernel_data_page`,
//! `remap_kernel_data_page` and `unmap_page` under `PAGE_TABLES`, an
//! `IrqSpinLock` taken before the frame lock. A change that removes or
//! alters a mapping is followed, after the lock is released, by a TLB
//! shootdown (`mm::tlb`) that returns only when every CPU dropped the old
//! translation. `is_mapped` walks the tables without the lock, for the fatal
//! paths.

use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::paging::mapper::{MapToError, Mapper, UnmapError};
use x86_64::structures::paging::{
    FrameAllocator, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size2MiB, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use super::{BOOT_DIRECT_MAP_LIMIT, DIRECT_MAP_BASE, frame, phys_to_virt};
use crate::sync::IrqSpinLock;

const HUGE_PAGE_SIZE: u64 = 2 << 20;

static PAGE_TABLES: IrqSpinLock<()> = IrqSpinLock::new(());
static NO_EXECUTE: AtomicBool = AtomicBool::new(false);
/// The kernel's PML4 (physical), recorded by `init`.
static KERNEL_PML4: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The kernel's own PML4: loaded whenever no user address space is.
pub fn kernel_pml4() -> u64 {
    KERNEL_PML4.load(Ordering::Relaxed)
}

/// Whether page tables may use the no-execute bit.
pub fn no_execute_enabled() -> bool {
    NO_EXECUTE.load(Ordering::Relaxed)
}

/// Loads `root` into CR3 unless it is loaded already.
pub fn switch_address_space(root: u64) {
    let (current, flags) = Cr3::read();
    if current.start_address().as_u64() != root {
        // SAFETY: `root` is the kernel's PML4 or a user address space's,
        // whose upper half is the kernel's; both map everything the kernel
        // is running on.
        unsafe { Cr3::write(PhysFrame::containing_address(PhysAddr::new(root)), flags) };
    }
}

/// Gives page-table frames to the x86_64 crate's mapper.
struct KernelFrameSource;

// SAFETY: frames come from the frame allocator, which hands each out once.
unsafe impl FrameAllocator<Size4KiB> for KernelFrameSource {
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        let run = frame::alloc(1)?;
        Some(PhysFrame::containing_address(PhysAddr::new(run.start)))
    }
}

/// Runs `body` with a mapper over the kernel PML4, under the page-table lock.
fn with_mapper<R>(body: impl FnOnce(&mut OffsetPageTable<'static>) -> R) -> R {
    let _guard = PAGE_TABLES.lock();
    let (pml4_frame, _) = Cr3::read();
    // SAFETY: CR3 holds the kernel PML4, reachable through the direct map at
    // DIRECT_MAP_BASE; the page-table lock makes this the only mutable
    // reference to it for the duration of `body`.
    let mut mapper = unsafe {
        let pml4 = &mut *(phys_to_virt(pml4_frame.start_address().as_u64()) as *mut PageTable);
        OffsetPageTable::new(pml4, VirtAddr::new(DIRECT_MAP_BASE))
    };
    body(&mut mapper)
}

fn flush_all() {
    let (frame, flags) = Cr3::read();
    // SAFETY: reloading CR3 with its own value only flushes the TLB.
    unsafe { Cr3::write(frame, flags | Cr3Flags::empty()) };
}

fn no_execute_flag() -> PageTableFlags {
    if NO_EXECUTE.load(Ordering::Relaxed) {
        PageTableFlags::NO_EXECUTE
    } else {
        PageTableFlags::empty()
    }
}

fn enable_no_execute() {
    let extended = core::arch::x86_64::__cpuid(0x8000_0001);
    if extended.edx & (1 << 20) != 0 {
        // SAFETY: the CPU reports NX support, so setting EFER.NXE is valid;
        // no existing entry has the NX bit set yet.
        unsafe { Efer::update(|flags| flags.insert(EferFlags::NO_EXECUTE_ENABLE)) };
        NO_EXECUTE.store(true, Ordering::Relaxed);
    }
}

/// Finishes the kernel's address space; see the module comment. `ram` lists
/// the RAM ranges of the memory map.
pub fn init(ram: &[Range<u64>]) {
    enable_no_execute();
    KERNEL_PML4.store(Cr3::read().0.start_address().as_u64(), Ordering::Relaxed);
    let is_ram = |range: Range<u64>| {
        ram.iter()
            .any(|r| r.start < range.end && range.start < r.end)
    };
    with_mapper(|mapper| {
        // The lower half now belongs to user processes.
        mapper.level_4_table_mut()[0].set_unused();

        let data = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::HUGE_PAGE;
        let device = data | PageTableFlags::NO_CACHE | PageTableFlags::WRITE_THROUGH;
        for physical in (0..BOOT_DIRECT_MAP_LIMIT).step_by(HUGE_PAGE_SIZE as usize) {
            let page = Page::<Size2MiB>::containing_address(VirtAddr::new(phys_to_virt(physical)));
            let flags = if is_ram(physical..physical + HUGE_PAGE_SIZE) {
                data
            } else {
                device
            };
            // SAFETY: the boot stub mapped this 2 MiB page; only its caching
            // and execute attributes change.
            unsafe { mapper.update_flags(page, flags | no_execute_flag()) }
                .expect("the boot direct map covers 0..4 GiB")
                .ignore();
        }

        let ram_top = ram.iter().map(|range| range.end).max().unwrap_or(0);
        let mut physical = BOOT_DIRECT_MAP_LIMIT;
        while physical < ram_top {
            let page = Page::<Size2MiB>::containing_address(VirtAddr::new(phys_to_virt(physical)));
            let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(physical));
            let flags = if is_ram(physical..physical + HUGE_PAGE_SIZE) {
                data
            } else {
                device
            };
            // SAFETY: maps physical memory into the direct-map window, which
            // nothing else uses; the flags match the memory's kind.
            unsafe {
                mapper.map_to(
                    page,
                    frame,
                    flags | no_execute_flag(),
                    &mut KernelFrameSource,
                )
            }
            .expect("page-table memory for the direct map")
            .ignore();
            physical += HUGE_PAGE_SIZE;
        }
    });
    flush_all();
}

/// Why a mapping failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    OutOfMemory,
    AlreadyMapped,
    NotMapped,
}

/// Maps the 4 KiB page at `virtual_address` to the frame at `physical`,
/// kernel-only, writable, not executable.
pub fn map_kernel_data_page(virtual_address: u64, physical: u64) -> Result<(), MapError> {
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virtual_address));
    let frame = PhysFrame::containing_address(PhysAddr::new(physical));
    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | no_execute_flag();
    with_mapper(|mapper| {
        // SAFETY: callers map frames they own at upper-half addresses that
        // nothing else maps (`mm::stack` owns its region).
        match unsafe { mapper.map_to(page, frame, flags, &mut KernelFrameSource) } {
            Ok(flush) => {
                flush.flush();
                Ok(())
            }
            Err(MapToError::FrameAllocationFailed) => Err(MapError::OutOfMemory),
            Err(_) => Err(MapError::AlreadyMapped),
        }
    })
}

/// Unmaps the 4 KiB page at `virtual_address`; returns the frame it mapped.
/// Every CPU has dropped the translation when this returns (a TLB
/// shootdown after the page-table lock is released), so the caller may
/// free the frame and reuse the address. Call it with interrupts enabled
/// and no spin lock held (`mm::tlb`'s rule) when more than one CPU is
/// online.
pub fn unmap_page(virtual_address: u64) -> Option<u64> {
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virtual_address));
    let physical = with_mapper(|mapper| match mapper.unmap(page) {
        // The shootdown below flushes this CPU too.
        Ok((frame, flush)) => {
            flush.ignore();
            Some(frame.start_address().as_u64())
        }
        Err(UnmapError::PageNotMapped) | Err(_) => None,
    })?;
    shoot_down_page(page);
    Some(physical)
}

/// Unmaps the `pages` 4 KiB pages from `start` with one TLB shootdown for
/// all of them; returns the frames that were mapped (pages that were not
/// mapped are skipped). Same rule as `unmap_page`.
pub fn unmap_pages(start: u64, pages: usize) -> Vec<u64> {
    let first = Page::<Size4KiB>::containing_address(VirtAddr::new(start));
    let mut frames = Vec::with_capacity(pages);
    with_mapper(|mapper| {
        for page in Page::range(first, first + pages as u64) {
            if let Ok((frame, flush)) = mapper.unmap(page) {
                // The shootdown below flushes this CPU too.
                flush.ignore();
                frames.push(frame.start_address().as_u64());
            }
        }
    });
    let start = first.start_address().as_u64();
    if let Err(error) = super::tlb::shootdown(start..start + pages as u64 * first.size()) {
        log::error!(target: "tlb", "shootdown of {start:#x} (+{pages} pages) incomplete: {error:?}");
    }
    frames
}

/// Points the mapped 4 KiB page at `virtual_address` at the frame at
/// `physical` instead (kernel-only, writable, not executable); returns the
/// frame it mapped before. Every CPU sees the new frame when this returns.
/// Same rule as `unmap_page`.
pub fn remap_kernel_data_page(virtual_address: u64, physical: u64) -> Result<u64, MapError> {
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virtual_address));
    let frame = PhysFrame::containing_address(PhysAddr::new(physical));
    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | no_execute_flag();
    let old = with_mapper(|mapper| {
        let (old, flush) = mapper.unmap(page).map_err(|_| MapError::NotMapped)?;
        flush.ignore();
        // SAFETY: the page was mapped a moment ago under the same lock, so
        // its page tables exist and no frame allocation is needed; the
        // caller owns the new frame.
        match unsafe { mapper.map_to(page, frame, flags, &mut KernelFrameSource) } {
            Ok(flush) => {
                flush.ignore();
                Ok(old.start_address().as_u64())
            }
            Err(_) => Err(MapError::OutOfMemory),
        }
    })?;
    shoot_down_page(page);
    Ok(old)
}

fn shoot_down_page(page: Page<Size4KiB>) {
    let start = page.start_address().as_u64();
    if let Err(error) = super::tlb::shootdown(start..start + page.size()) {
        log::error!(target: "tlb", "shootdown of {start:#x} incomplete: {error:?}");
    }
}

/// Whether `virtual_address` is mapped in the kernel's tables. Takes no
/// lock, so the fatal paths can use it; the answer may be stale if another
/// CPU is changing the tables.
pub fn is_mapped(virtual_address: u64) -> bool {
    let (pml4_frame, _) = Cr3::read();
    let mut table = pml4_frame.start_address().as_u64();
    for level in (1..=4).rev() {
        let index = (virtual_address >> (12 + 9 * (level - 1))) & 0x1ff;
        // SAFETY: `table` is a page-table frame reached from CR3, mapped by
        // the direct map; entries are plain u64 reads.
        let entry = unsafe {
            core::ptr::read_volatile((phys_to_virt(table) as *const u64).add(index as usize))
        };
        let flags = PageTableFlags::from_bits_truncate(entry);
        if !flags.contains(PageTableFlags::PRESENT) {
            return false;
        }
        if level == 1 || (level <= 3 && flags.contains(PageTableFlags::HUGE_PAGE)) {
            return true;
        }
        table = entry & 0x000f_ffff_ffff_f000;
    }
    false
}

crate::ktests! {
    fn lower_half_is_unmapped() {
        assert!(!is_mapped(0));
        assert!(!is_mapped(0x0000_7fff_ffff_f000));
        assert!(!is_mapped(0x10_0000), "the boot identity map must be gone");
    }

    fn kernel_and_direct_map_are_mapped() {
        assert!(is_mapped(kernel_image_virtual_start()));
        assert!(is_mapped(phys_to_virt(0x10_0000)));
    }
}

fn kernel_image_virtual_start() -> u64 {
    super::KERNEL_VMA + super::kernel_image().start
}
