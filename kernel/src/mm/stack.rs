//! Kernel stacks, each with an unmapped guard page below it.
//!
//! Owns the stack region of the kernel address space
//! (`STACK_REGION_BASE`, 512 GiB). A stack takes a slot of `pages + 1`
//! virtual pages: the lowest stays unmapped (the guard, so an overflow
//! faults instead of corrupting memory), the rest map freshly allocated
//! frames. Dropping a `KernelStack` unmaps its pages (one TLB shootdown, so
//! drop it with interrupts on and no spin lock held once other CPUs are
//! online), frees its frames and keeps its slot for reuse by a stack of the
//! same size. `SLOTS` (spin lock) guards the
//! bump pointer and the free slots; it is taken before the page-table lock.

use alloc::vec::Vec;

use super::{PAGE_SIZE, frame, paging};
use crate::sync::IrqSpinLock;

pub const STACK_REGION_BASE: u64 = 0xffff_ff00_0000_0000;
const STACK_REGION_END: u64 = STACK_REGION_BASE + (512 << 30);

struct Slots {
    next: u64,
    /// Freed slots: (guard page address, pages).
    free: Vec<(u64, usize)>,
}

static SLOTS: IrqSpinLock<Slots> = IrqSpinLock::new(Slots {
    next: STACK_REGION_BASE,
    free: Vec::new(),
});

/// A mapped kernel stack.
#[derive(Debug)]
pub struct KernelStack {
    guard: u64,
    pages: usize,
}

impl KernelStack {
    /// A stack of `pages` 4 KiB pages, or `None` when memory is exhausted.
    pub fn new(pages: usize) -> Option<KernelStack> {
        assert!(pages > 0, "a kernel stack needs at least one page");
        let guard = {
            let mut slots = SLOTS.lock();
            match slots.free.iter().position(|&(_, size)| size == pages) {
                Some(index) => slots.free.swap_remove(index).0,
                None => {
                    let guard = slots.next;
                    let end = guard + (pages as u64 + 1) * PAGE_SIZE;
                    if end > STACK_REGION_END {
                        return None;
                    }
                    slots.next = end;
                    guard
                }
            }
        };
        let stack = KernelStack { guard, pages };
        for page in 0..pages {
            let address = stack.bottom() + page as u64 * PAGE_SIZE;
            let run = frame::alloc(1)?; // `stack` drops here and frees what it mapped
            if paging::map_kernel_data_page(address, run.start).is_err() {
                frame::free(run);
                return None;
            }
        }
        Some(stack)
    }

    /// The lowest mapped address.
    pub fn bottom(&self) -> u64 {
        self.guard + PAGE_SIZE
    }

    /// One past the highest mapped address: the initial stack pointer.
    pub fn top(&self) -> u64 {
        self.bottom() + self.pages as u64 * PAGE_SIZE
    }

    /// The unmapped page under the stack.
    pub fn guard_page(&self) -> u64 {
        self.guard
    }
}

/// Gives back the spare capacity of the free-slot list (before leak
/// checks; the slots themselves stay for reuse).
pub fn trim_caches() {
    SLOTS.lock().free.shrink_to_fit();
}

impl Drop for KernelStack {
    fn drop(&mut self) {
        // One TLB shootdown for the whole stack: drop a stack with
        // interrupts on and no spin lock held (`mm::tlb`'s rule).
        for physical in paging::unmap_pages(self.bottom(), self.pages) {
            frame::free(frame::FrameRun {
                start: physical,
                count: 1,
            });
        }
        SLOTS.lock().free.push((self.guard, self.pages));
    }
}

/// Whether `address` lies in the stack region but on no mapped page: a
/// guard page, or an unused slot.
pub fn is_guard_page(address: u64) -> bool {
    (STACK_REGION_BASE..STACK_REGION_END).contains(&address) && !paging::is_mapped(address)
}

crate::ktests! {
    fn stack_is_mapped_above_an_unmapped_guard() {
        let stack = KernelStack::new(4).expect("a stack");
        assert!(!paging::is_mapped(stack.guard_page()));
        assert!(is_guard_page(stack.guard_page() + 8));
        assert!(!is_guard_page(stack.bottom()));
        assert!(paging::is_mapped(stack.bottom()));
        assert!(paging::is_mapped(stack.top() - 8));
        let probe = crate::arch::trap::probe_read_u64(stack.guard_page() + PAGE_SIZE - 8);
        assert_eq!(probe.vector(), Some(14), "reading the guard page must fault");
        let probe = crate::arch::trap::probe_read_u64(stack.top() - 8);
        assert_eq!(probe.status, 0);
    }

    fn stacks_return_their_frames() {
        let _quiet = crate::compat::sysinit::quiesce();
        let frames_before = frame::free_count();
        let stacks: Vec<KernelStack> = (0..8).map(|_| KernelStack::new(4).expect("a stack")).collect();
        assert!(frame::free_count() <= frames_before - 32);
        drop(stacks);
        // Page tables created for the region stay; allow for those.
        let table_frames = 4;
        assert!(frame::free_count() + table_frames >= frames_before,
            "leaked {} frames", frames_before - frame::free_count());
        // A second round reuses the slots and the tables: no loss at all.
        let frames_between = frame::free_count();
        let stacks: Vec<KernelStack> = (0..8).map(|_| KernelStack::new(4).expect("a stack")).collect();
        drop(stacks);
        assert_eq!(frame::free_count(), frames_between);
    }
}
