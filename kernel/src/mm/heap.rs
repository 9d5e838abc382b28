//! The kernel heap: the global allocator.
//!
//! Owns one physically contiguous region, reached through the direct map and
//! carved out at boot before the frame allocator starts (whose free lists
//! need the heap). A buddy allocator (`buddy_system_allocator::Heap`) behind
//! an `IrqSpinLock` serves `alloc`. The heap does not grow; its size is a
//! fraction of RAM. Bytes in use are readable for leak tests.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use buddy_system_allocator::Heap;

use crate::sync::IrqSpinLock;

const MIN_HEAP_BYTES: u64 = 4 << 20;
const MAX_HEAP_BYTES: u64 = 256 << 20;

struct KernelHeap(IrqSpinLock<Heap<32>>);

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(IrqSpinLock::new(Heap::new()));

// SAFETY: every allocation comes from the buddy heap under its lock, which
// returns blocks of at least `layout.size()` bytes aligned to `layout.align()`
// and never hands out a block twice.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0
            .lock()
            .alloc(layout)
            .map_or(core::ptr::null_mut(), |block| block.as_ptr())
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if let Some(block) = NonNull::new(pointer) {
            // SAFETY: per GlobalAlloc's contract, `pointer` came from `alloc`
            // with this `layout` and is not used again.
            unsafe { self.0.lock().dealloc(block, layout) };
        }
    }
}

/// The heap size for a machine with `usable` bytes of free RAM: an eighth,
/// within 4 MiB..256 MiB, rounded to 2 MiB.
pub fn size_for_usable_memory(usable: u64) -> u64 {
    (usable / 8).clamp(MIN_HEAP_BYTES, MAX_HEAP_BYTES) & !((2 << 20) - 1)
}

/// Hands `[start, start + size)` (direct-map addresses) to the heap.
pub fn init(start: u64, size: usize) {
    // SAFETY: `mm::init` carved this range out of usable RAM, so nothing
    // else uses it, and it is mapped writable through the direct map.
    unsafe { HEAP.0.lock().init(start as usize, size) };
}

/// Bytes handed out by the heap now (rounded to its block sizes).
pub fn bytes_in_use() -> usize {
    HEAP.0.lock().stats_alloc_actual()
}

/// Bytes the heap manages.
pub fn total_bytes() -> usize {
    HEAP.0.lock().stats_total_bytes()
}

crate::ktests! {
    fn allocations_return_the_counter() {
        use alloc::{boxed::Box, string::String, vec::Vec};
        let _quiet = crate::compat::sysinit::quiesce();
        let before = bytes_in_use();
        {
            let boxed = Box::new([7u8; 1000]);
            let mut vector: Vec<u64> = (0..10_000).collect();
            let text = String::from("spindle");
            assert!(bytes_in_use() >= before + 1000 + 80_000);
            vector.retain(|value| value % 2 == 0);
            assert_eq!(vector.len(), 5_000);
            assert_eq!(boxed[999], 7);
            assert_eq!(text.len(), 7);
        }
        assert_eq!(bytes_in_use(), before);
    }

    fn large_and_aligned_allocations() {
        let layout = Layout::from_size_align(1 << 20, 1 << 16).expect("valid layout");
        let _quiet = crate::compat::sysinit::quiesce();
        let before = bytes_in_use();
        // SAFETY: the layout is non-zero in size; the block is freed with
        // the same layout.
        unsafe {
            let block = alloc::alloc::alloc(layout);
            assert!(!block.is_null());
            assert_eq!(block as usize % (1 << 16), 0);
            block.write_bytes(0xa5, 1 << 20);
            alloc::alloc::dealloc(block, layout);
        }
        assert_eq!(bytes_in_use(), before);
    }

    fn heap_size_rule() {
        assert_eq!(size_for_usable_memory(0), MIN_HEAP_BYTES);
        assert_eq!(size_for_usable_memory(1 << 30), 128 << 20);
        assert_eq!(size_for_usable_memory(1 << 40), MAX_HEAP_BYTES);
        assert!(total_bytes() as u64 >= MIN_HEAP_BYTES - 4096);
    }
}
