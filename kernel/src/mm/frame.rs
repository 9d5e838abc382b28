//! The physical frame allocator.
//!
//! Owns every 4 KiB frame of usable RAM that is not the kernel image, the
//! heap or a boot module. A buddy allocator (`buddy_system_allocator`) keeps
//! the free blocks; requests are rounded up to a power of two frames and
//! naturally aligned. Counters of free and total frames let tests prove that
//! nothing leaks. One `IrqSpinLock` (`FRAMES`) guards allocator and counters;
//! the allocator's free lists live on the kernel heap, so the heap lock nests
//! inside it.

use core::ops::Range;

use buddy_system_allocator::FrameAllocator;

use super::{PAGE_SIZE, phys_to_virt};
use crate::sync::IrqSpinLock;

struct Frames {
    allocator: FrameAllocator<32>,
    total: usize,
    free: usize,
}

static FRAMES: IrqSpinLock<Frames> = IrqSpinLock::new(Frames {
    allocator: FrameAllocator::new(),
    total: 0,
    free: 0,
});

/// A run of physically contiguous frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRun {
    pub start: u64,
    pub count: usize,
}

impl FrameRun {
    pub fn end(&self) -> u64 {
        self.start + self.count as u64 * PAGE_SIZE
    }
}

/// Hands the frames of a page-aligned physical range to the allocator.
pub fn add_range(range: Range<u64>) {
    if range.start >= range.end {
        return;
    }
    let first = (range.start / PAGE_SIZE) as usize;
    let end = (range.end / PAGE_SIZE) as usize;
    let mut frames = FRAMES.lock();
    frames.allocator.add_frame(first, end);
    frames.total += end - first;
    frames.free += end - first;
}

/// Allocates `count` contiguous frames (rounded up to a power of two, and
/// aligned to that size). Returns `None` when memory is exhausted.
pub fn alloc(count: usize) -> Option<FrameRun> {
    let count = count.max(1).next_power_of_two();
    let mut frames = FRAMES.lock();
    let first = frames.allocator.alloc(count)?;
    frames.free -= count;
    Some(FrameRun {
        start: first as u64 * PAGE_SIZE,
        count,
    })
}

/// Allocates `count` frames filled with zeroes.
pub fn alloc_zeroed(count: usize) -> Option<FrameRun> {
    let run = alloc(count)?;
    let bytes = run.count * PAGE_SIZE as usize;
    // SAFETY: the frames were just allocated, so nothing else refers to
    // them, and the direct map covers all RAM.
    unsafe { core::ptr::write_bytes(phys_to_virt(run.start) as *mut u8, 0, bytes) };
    Some(run)
}

/// Returns a run obtained from `alloc`.
pub fn free(run: FrameRun) {
    debug_assert!(run.count.is_power_of_two());
    let mut frames = FRAMES.lock();
    frames
        .allocator
        .dealloc((run.start / PAGE_SIZE) as usize, run.count);
    frames.free += run.count;
}

/// How many frames are free now.
pub fn free_count() -> usize {
    FRAMES.lock().free
}

/// How many frames the allocator manages.
pub fn total_count() -> usize {
    FRAMES.lock().total
}

crate::ktests! {
    fn alloc_and_free_return_the_counters() {
        let _quiet = crate::compat::sysinit::quiesce();
        let before = free_count();
        let one = alloc(1).expect("a frame");
        let three = alloc(3).expect("three frames");
        assert_eq!(three.count, 4, "requests round up to a power of two");
        assert_eq!(three.start % (4 * PAGE_SIZE), 0, "runs are naturally aligned");
        assert_eq!(free_count(), before - 5);
        assert!(one.end() <= three.start || three.end() <= one.start, "runs overlap");
        free(one);
        free(three);
        assert_eq!(free_count(), before);
    }

    fn zeroed_frames_are_zero_and_writable() {
        let run = alloc_zeroed(2).expect("two frames");
        let words = phys_to_virt(run.start) as *mut u64;
        for index in 0..(2 * PAGE_SIZE as usize / 8) {
            // SAFETY: the run is ours and mapped by the direct map.
            unsafe {
                assert_eq!(words.add(index).read(), 0);
                words.add(index).write(index as u64);
                assert_eq!(words.add(index).read(), index as u64);
            }
        }
        free(run);
    }

    fn many_allocations_come_back() {
        let _quiet = crate::compat::sysinit::quiesce();
        let before = free_count();
        let mut runs = alloc::vec::Vec::new();
        for _ in 0..256 {
            runs.push(alloc(1).expect("a frame"));
        }
        let mut starts: alloc::vec::Vec<u64> = runs.iter().map(|run| run.start).collect();
        starts.sort_unstable();
        starts.dedup();
        assert_eq!(starts.len(), 256, "a frame was handed out twice");
        for run in runs {
            free(run);
        }
        assert_eq!(free_count(), before);
    }

    fn exhaustion_is_reported_not_fatal() {
        assert!(alloc(total_count() * 2).is_none());
    }
}
