//! User address spaces: the lower half of a process's page tables and the
//! layout of its regions.
//!
//! Owns, per `AddressSpace`: a PML4 whose upper half is the kernel's (the
//! kernel-half PML4 entries are fixed before the first address space is
//! made, so sharing them by copy is safe), the page tables and frames of
//! the lower half, and the region map (`regions`, a sleeping mutex: page
//! faults and system calls that change the layout take it). Page-table
//! edits happen under `tables` (an `IrqSpinLock`, inside `regions`), and
//! TLB shootdowns after unmapping or protecting run with neither held.
//!
//! Pages are allocated on first touch (`resolve_fault`), zero-filled,
//! except the ones `populate` fills at load time. Inspectors (`pstack`,
//! core files) read only pages that are present (`read_present`,
//! `next_present_page`), under `tables`, and never fault one in. Teardown frees every
//! user frame and table. States: live (attached to a process, its CR3
//! loaded by the CPUs running its LWPs) -> torn down (after every LWP of
//! the process is gone).

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::structures::paging::PageTableFlags as Flags;

use super::{PAGE_SIZE, frame, paging, phys_to_virt, tlb};
use crate::errno::Errno;
use crate::sync::{IrqSpinLock, Mutex};

/// One past the highest user address.
pub const USER_END: u64 = 0x0000_8000_0000_0000;
/// Nothing is ever mapped below this (null-pointer guard).
pub const USER_START: u64 = 0x1_0000;

/// Protection bits, with Linux's `PROT_*` values.
pub mod prot {
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
    pub const EXEC: u32 = 4;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    Image,
    Heap,
    Stack,
    Anonymous,
}

#[derive(Debug, Clone, Copy)]
pub struct Region {
    pub end: u64,
    pub prot: u32,
    pub kind: RegionKind,
}

/// The layout: regions by start address, the program break.
pub struct Layout {
    pub regions: BTreeMap<u64, Region>,
    pub brk_start: u64,
    pub brk: u64,
}

/// Whether a region with protection `prot` allows `access`.
fn region_allows(prot: u32, access: Access) -> bool {
    (!access.write || prot & prot::WRITE != 0)
        && (!access.execute || prot & prot::EXEC != 0)
        && prot != 0
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub struct AddressSpace {
    pub id: u64,
    pml4: u64,
    tables: IrqSpinLock<()>,
    pub layout: Mutex<Layout>,
}

/// The kind of access that faulted.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub write: bool,
    pub execute: bool,
}

const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

fn table_entry(table: u64, index: usize) -> *mut u64 {
    (phys_to_virt(table) as *mut u64).wrapping_add(index)
}

fn index_at(address: u64, level: u32) -> usize {
    ((address >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

fn leaf_flags(region_prot: u32) -> Flags {
    let mut flags = Flags::PRESENT | Flags::USER_ACCESSIBLE;
    if region_prot & prot::WRITE != 0 {
        flags |= Flags::WRITABLE;
    }
    if region_prot & prot::EXEC == 0 && paging::no_execute_enabled() {
        flags |= Flags::NO_EXECUTE;
    }
    flags
}

impl AddressSpace {
    /// An empty address space (`ENOMEM` if no frame for its PML4).
    pub fn new() -> Result<Arc<AddressSpace>, Errno> {
        let run = frame::alloc_zeroed(1).ok_or(Errno::ENOMEM)?;
        let kernel = paging::kernel_pml4();
        for index in 256..512 {
            // SAFETY: both PML4s are page-table frames reached through the
            // direct map; the new one is ours alone, and the kernel's upper
            // half entries are only read.
            unsafe { table_entry(run.start, index).write(table_entry(kernel, index).read()) };
        }
        Ok(Arc::new(AddressSpace {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            pml4: run.start,
            tables: IrqSpinLock::new(()),
            layout: Mutex::new(Layout {
                regions: BTreeMap::new(),
                brk_start: 0,
                brk: 0,
            }),
        }))
    }

    /// The value for CR3.
    pub fn root(&self) -> u64 {
        self.pml4
    }

    /// The level-1 entry for `address`, creating tables if `create`. Call
    /// with `tables` held.
    fn leaf_entry(&self, address: u64, create: bool) -> Result<Option<*mut u64>, Errno> {
        let mut table = self.pml4;
        for level in (2..=4).rev() {
            let entry = table_entry(table, index_at(address, level));
            // SAFETY: `table` is a page-table frame of this address space
            // (reached through the direct map) and `tables` is held.
            let value = unsafe { entry.read() };
            if value & Flags::PRESENT.bits() == 0 {
                if !create {
                    return Ok(None);
                }
                let run = frame::alloc_zeroed(1).ok_or(Errno::ENOMEM)?;
                let flags = Flags::PRESENT | Flags::WRITABLE | Flags::USER_ACCESSIBLE;
                // SAFETY: as above; the new table is zeroed and ours.
                unsafe { entry.write(run.start | flags.bits()) };
                table = run.start;
            } else {
                table = value & ADDRESS_MASK;
            }
        }
        Ok(Some(table_entry(table, index_at(address, 1))))
    }

    /// Maps a fresh zeroed frame at `address` (page-aligned) if nothing is
    /// mapped there. Returns the frame's physical address.
    fn map_zeroed(&self, address: u64, region_prot: u32) -> Result<u64, Errno> {
        let _tables = self.tables.lock();
        let entry = self.leaf_entry(address, true)?.expect("created");
        // SAFETY: a leaf entry of this address space, under `tables`.
        let value = unsafe { entry.read() };
        if value & Flags::PRESENT.bits() != 0 {
            return Ok(value & ADDRESS_MASK);
        }
        let run = frame::alloc_zeroed(1).ok_or(Errno::ENOMEM)?;
        // SAFETY: as above.
        unsafe { entry.write(run.start | leaf_flags(region_prot).bits()) };
        Ok(run.start)
    }

    /// The physical address and flags behind a user address.
    pub fn translate(&self, address: u64) -> Option<(u64, Flags)> {
        let _tables = self.tables.lock();
        let entry = self.leaf_entry(address, false).ok()??;
        // SAFETY: a leaf entry of this address space, under `tables`.
        let value = unsafe { entry.read() };
        let flags = Flags::from_bits_truncate(value);
        flags
            .contains(Flags::PRESENT)
            .then_some(((value & ADDRESS_MASK) | (address & 0xfff), flags))
    }

    /// Copies the user memory at `address` into `buffer` if every page it
    /// touches is present, without faulting anything in (for inspectors:
    /// `pstack`, core files). Returns false, with `buffer` partly written,
    /// if a page is absent or the range leaves user memory.
    pub fn read_present(&self, address: u64, buffer: &mut [u8]) -> bool {
        let Some(end) = address.checked_add(buffer.len() as u64) else {
            return false;
        };
        if address < USER_START || end > USER_END {
            return false;
        }
        // Held across the copies: a frame is only freed after its entry
        // was cleared under `tables`, so a present entry's frame stays.
        let _tables = self.tables.lock();
        let mut done = 0;
        while done < buffer.len() {
            let at = address + done as u64;
            let Ok(Some(entry)) = self.leaf_entry(at, false) else {
                return false;
            };
            // SAFETY: a leaf entry of this address space, under `tables`.
            let value = unsafe { entry.read() };
            if value & Flags::PRESENT.bits() == 0 {
                return false;
            }
            let offset = at & (PAGE_SIZE - 1);
            let length = ((PAGE_SIZE - offset) as usize).min(buffer.len() - done);
            let source = phys_to_virt((value & ADDRESS_MASK) + offset) as *const u8;
            // SAFETY: `length` bytes inside one present frame of this space
            // (direct map), which cannot be freed while `tables` is held;
            // the destination is our own buffer.
            unsafe { core::ptr::copy_nonoverlapping(source, buffer[done..].as_mut_ptr(), length) };
            done += length;
        }
        true
    }

    /// The first present page at or after `from` and below `end`, found by
    /// walking the tables and skipping whole absent tables, so sparse
    /// reservations cost little.
    pub fn next_present_page(&self, from: u64, end: u64) -> Option<u64> {
        let end = end.min(USER_END);
        let mut address = from & !(PAGE_SIZE - 1);
        let _tables = self.tables.lock();
        'pages: while address < end {
            let mut table = self.pml4;
            for level in (1..=4).rev() {
                let entry = table_entry(table, index_at(address, level));
                // SAFETY: `table` is a page-table frame of this address
                // space, reached through the direct map, and `tables` is
                // held.
                let value = unsafe { entry.read() };
                if value & Flags::PRESENT.bits() == 0 {
                    let span = 1u64 << (12 + 9 * (level - 1));
                    address = (address & !(span - 1)) + span;
                    continue 'pages;
                }
                if level == 1 {
                    return Some(address);
                }
                table = value & ADDRESS_MASK;
            }
        }
        None
    }

    /// Clears the leaf entries in `range`, returning the frames they held.
    fn clear_range(&self, range: Range<u64>) -> Vec<u64> {
        let mut freed = Vec::new();
        let _tables = self.tables.lock();
        let mut address = range.start;
        while address < range.end {
            if let Ok(Some(entry)) = self.leaf_entry(address, false) {
                // SAFETY: a leaf entry of this address space, under `tables`.
                let value = unsafe { entry.read() };
                if value & Flags::PRESENT.bits() != 0 {
                    freed.push(value & ADDRESS_MASK);
                    // SAFETY: as above.
                    unsafe { entry.write(0) };
                }
            }
            address += PAGE_SIZE;
        }
        freed
    }

    /// Unmaps `range` and frees its frames (after the TLB shootdown).
    pub fn unmap_pages(&self, range: Range<u64>) {
        let freed = self.clear_range(range.clone());
        if !freed.is_empty() {
            let _ = tlb::shootdown(range);
        }
        for physical in freed {
            frame::free(frame::FrameRun {
                start: physical,
                count: 1,
            });
        }
    }

    /// Rewrites the protection of the mapped pages in `range`.
    pub fn protect_pages(&self, range: Range<u64>, region_prot: u32) {
        let mut changed = false;
        {
            let _tables = self.tables.lock();
            let mut address = range.start;
            while address < range.end {
                if let Ok(Some(entry)) = self.leaf_entry(address, false) {
                    // SAFETY: a leaf entry of this address space, under `tables`.
                    let value = unsafe { entry.read() };
                    if value & Flags::PRESENT.bits() != 0 {
                        // SAFETY: as above.
                        unsafe {
                            entry.write((value & ADDRESS_MASK) | leaf_flags(region_prot).bits())
                        };
                        changed = true;
                    }
                }
                address += PAGE_SIZE;
            }
        }
        if changed {
            let _ = tlb::shootdown(range);
        }
    }

    /// Handles a fault at `address`: maps a zeroed page if a region allows
    /// the access. Returns false for a real fault (no region, or the region
    /// forbids it).
    pub fn resolve_fault(&self, address: u64, access: Access) -> bool {
        if !(USER_START..USER_END).contains(&address) {
            return false;
        }
        let layout = self.layout.lock();
        let Some((_, region)) = layout.regions.range(..=address).next_back() else {
            return false;
        };
        if address >= region.end {
            return false;
        }
        if !region_allows(region.prot, access) {
            return false;
        }
        let page = address & !(PAGE_SIZE - 1);
        if let Some((_, flags)) = self.translate(page) {
            // Present already: only a write to a read-only page is a fault.
            return !access.write || flags.contains(Flags::WRITABLE);
        }
        self.map_zeroed(page, region.prot).is_ok()
    }

    /// Whether every byte of `range` lies in regions that allow `access`,
    /// its pages present or not (a copy faults missing ones in): lets a
    /// call refuse a buffer before it takes data it could not hand over.
    pub fn allows(&self, range: Range<u64>, access: Access) -> bool {
        if range.is_empty() {
            return true;
        }
        if range.start < USER_START || range.end > USER_END {
            return false;
        }
        let layout = self.layout.lock();
        let mut at = range.start;
        while at < range.end {
            let Some((_, region)) = layout.regions.range(..=at).next_back() else {
                return false;
            };
            if at >= region.end || !region_allows(region.prot, access) {
                return false;
            }
            at = region.end;
        }
        true
    }

    /// Maps and fills the pages of `range` now (used by the loader):
    /// `fill` is called with each page's address and its bytes.
    pub fn populate(
        &self,
        range: Range<u64>,
        region_prot: u32,
        mut fill: impl FnMut(u64, &mut [u8]),
    ) -> Result<(), Errno> {
        let mut page = range.start & !(PAGE_SIZE - 1);
        while page < range.end {
            let physical = self.map_zeroed(page, region_prot | prot::WRITE)?;
            // SAFETY: the frame was just mapped for this address space and
            // is reached through the direct map; nothing runs in this
            // address space yet while the loader fills it.
            let bytes = unsafe {
                core::slice::from_raw_parts_mut(
                    phys_to_virt(physical) as *mut u8,
                    PAGE_SIZE as usize,
                )
            };
            fill(page, bytes);
            page += PAGE_SIZE;
        }
        // Drop the temporary write permission the filling needed.
        if region_prot & prot::WRITE == 0 {
            self.protect_pages(range.start & !(PAGE_SIZE - 1)..page, region_prot);
        }
        Ok(())
    }

    /// Frees every user page and page table. The address space must not be
    /// loaded on any CPU (every LWP of its process is gone).
    pub fn teardown(&self) {
        let _tables = self.tables.lock();
        // SAFETY: the lower half (PML4 entries 0..256) holds only this
        // address space's tables and frames, reached through the direct
        // map; no CPU runs with this PML4 any more.
        unsafe { free_table(self.pml4, 4, 0..256) };
        drop(_tables);
        self.layout.lock().regions.clear();
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        frame::free(frame::FrameRun {
            start: self.pml4,
            count: 1,
        });
    }
}

/// Frees the tables below `table` (a level-`level` table) for `indices`,
/// and the user frames they map.
///
/// # Safety
/// `table` must be a page table of a user address space that no CPU uses.
unsafe fn free_table(table: u64, level: u32, indices: Range<usize>) {
    for index in indices {
        let entry = table_entry(table, index);
        // SAFETY: per the caller.
        let value = unsafe { entry.read() };
        if value & Flags::PRESENT.bits() == 0 {
            continue;
        }
        let next = value & ADDRESS_MASK;
        if level > 1 {
            // SAFETY: per the caller: `next` is a lower-level table of it.
            unsafe { free_table(next, level - 1, 0..512) };
        }
        frame::free(frame::FrameRun {
            start: next,
            count: 1,
        });
        // SAFETY: per the caller.
        unsafe { entry.write(0) };
    }
}
