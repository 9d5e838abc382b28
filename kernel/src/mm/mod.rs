//! Memory management: physical frames, the kernel heap, kernel page tables
//! and kernel stacks.
//!
//! Virtual layout (upper half only; the lower half belongs to the user
//! process of later issues and is unmapped in the kernel's tables):
//!
//! | range                                  | what                               |
//! |----------------------------------------|------------------------------------|
//! | `0xffff_8000_0000_0000` + physical     | direct map of all physical memory  |
//! | `0xffff_ff00_0000_0000` ..             | kernel stacks, each under a guard  |
//! | `0xffff_ffff_8000_0000` + physical     | the kernel image (first GiB)       |
//!
//! Lock order (outer first): page tables (`paging`) -> frames (`frame`) ->
//! heap (`heap`). All three are `IrqSpinLock`s; interrupt handlers take none
//! of them. TLB shootdowns (`tlb`) run with none of them held.

pub mod frame;
pub mod heap;
pub mod paging;
pub mod stack;
pub mod tlb;
pub mod usercopy;
pub mod vm;

use core::ops::Range;

use crate::pvh::{BootInfo, MemoryKind};

pub const PAGE_SIZE: u64 = 4096;
pub const DIRECT_MAP_BASE: u64 = 0xffff_8000_0000_0000;
pub const KERNEL_VMA: u64 = 0xffff_ffff_8000_0000;
/// The boot page tables map this much physical memory directly.
pub const BOOT_DIRECT_MAP_LIMIT: u64 = 4 << 30;
/// Memory below 1 MiB (firmware, start info, command line) is never given
/// to the frame allocator; `arch::smp` puts its AP trampoline and temporary
/// page tables at 0x8000..0xc000 there.
const LOW_MEMORY_LIMIT: u64 = 1 << 20;

/// The end of the highest RAM range below 4 GiB (set by `init`): device
/// windows below 4 GiB (PCI BARs) start above it.
static LOW_RAM_END: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The end of RAM below 4 GiB, per the boot memory map.
pub fn low_ram_end() -> u64 {
    LOW_RAM_END.load(core::sync::atomic::Ordering::Relaxed)
}

/// The direct-map address of a physical address.
pub const fn phys_to_virt(physical: u64) -> u64 {
    DIRECT_MAP_BASE + physical
}

/// The physical range occupied by the kernel image.
pub fn kernel_image() -> Range<u64> {
    unsafe extern "C" {
        static __kernel_phys_start: u8;
        static __kernel_phys_end: u8;
    }
    // Only the symbols' addresses are used, never their contents.
    (&raw const __kernel_phys_start) as u64..(&raw const __kernel_phys_end) as u64
}

fn align_up(value: u64, alignment: u64) -> u64 {
    value.div_ceil(alignment) * alignment
}

fn align_down(value: u64, alignment: u64) -> u64 {
    value / alignment * alignment
}

/// A fixed-capacity list of ranges, usable before the heap exists.
mod heapless_ranges {
    use core::ops::Range;

    const CAPACITY: usize = 128;

    pub struct Ranges {
        items: [Range<u64>; CAPACITY],
        length: usize,
    }

    impl Ranges {
        pub const fn new() -> Self {
            Self {
                items: [const { 0..0 }; CAPACITY],
                length: 0,
            }
        }

        pub fn push(&mut self, range: Range<u64>) {
            if range.is_empty() {
                return;
            }
            if self.length == CAPACITY {
                log::warn!("memory map too fragmented; ignoring {range:#x?}");
                return;
            }
            self.items[self.length] = range;
            self.length += 1;
        }

        pub fn as_slice(&self) -> &[Range<u64>] {
            &self.items[..self.length]
        }

        /// Removes `hole` from every range, splitting where needed.
        pub fn subtract(&mut self, hole: &Range<u64>) {
            let old = core::mem::replace(self, Ranges::new());
            for range in old.as_slice() {
                if range.end <= hole.start || hole.end <= range.start {
                    self.push(range.clone());
                } else {
                    self.push(range.start..hole.start.max(range.start));
                    self.push(hole.end.min(range.end)..range.end);
                }
            }
        }
    }
}

/// What `init` found, for the boot log.
pub struct MemorySummary {
    pub ram_bytes: u64,
    pub usable_bytes: u64,
    pub heap_bytes: u64,
}

/// Sets up frames, heap and the kernel's page tables from the PVH memory
/// map. Runs once, on the boot CPU, before anything allocates.
pub fn init(boot: &BootInfo) -> MemorySummary {
    let mut usable = heapless_ranges::Ranges::new();
    let mut ram = heapless_ranges::Ranges::new();
    for region in boot.memory_map() {
        if region.kind == MemoryKind::Ram {
            ram.push(region.range.clone());
            usable.push(
                align_up(region.range.start, PAGE_SIZE)..align_down(region.range.end, PAGE_SIZE),
            );
        }
    }
    // Reserved regions may overlap RAM entries; carve them out.
    for region in boot.memory_map() {
        if region.kind != MemoryKind::Ram {
            usable.subtract(&region.range);
        }
    }
    usable.subtract(&(0..LOW_MEMORY_LIMIT));
    usable.subtract(&kernel_image());
    for module in boot.modules() {
        usable.subtract(&(align_down(module.start, PAGE_SIZE)..align_up(module.end, PAGE_SIZE)));
    }
    let low_ram_end = ram
        .as_slice()
        .iter()
        .filter(|range| range.start < BOOT_DIRECT_MAP_LIMIT)
        .map(|range| range.end.min(BOOT_DIRECT_MAP_LIMIT))
        .max()
        .unwrap_or(0);
    LOW_RAM_END.store(low_ram_end, core::sync::atomic::Ordering::Relaxed);
    let ram_bytes: u64 = ram
        .as_slice()
        .iter()
        .map(|range| range.end - range.start)
        .sum();
    let usable_bytes: u64 = usable
        .as_slice()
        .iter()
        .map(|range| range.end - range.start)
        .sum();

    // The heap comes first: the frame allocator keeps its free lists on it.
    let heap_bytes = heap::size_for_usable_memory(usable_bytes);
    let heap_range = usable
        .as_slice()
        .iter()
        .find(|range| range.end <= BOOT_DIRECT_MAP_LIMIT && range.end - range.start >= heap_bytes)
        .map(|range| range.start..range.start + heap_bytes)
        .expect("no usable memory range below 4 GiB is large enough for the kernel heap");
    heap::init(phys_to_virt(heap_range.start), heap_bytes as usize);
    usable.subtract(&heap_range);

    // Frames the boot page tables already map first, so that extending the
    // direct map can take its page-table frames from them.
    for range in usable.as_slice() {
        frame::add_range(range.start..range.end.min(BOOT_DIRECT_MAP_LIMIT));
    }
    paging::init(ram.as_slice());
    for range in usable.as_slice() {
        frame::add_range(range.start.max(BOOT_DIRECT_MAP_LIMIT)..range.end);
    }
    MemorySummary {
        ram_bytes,
        usable_bytes,
        heap_bytes,
    }
}
