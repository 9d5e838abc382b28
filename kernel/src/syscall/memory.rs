//! Memory system calls: `mmap` (anonymous, private or shared within the
//! one process), `munmap`, `mprotect`, `madvise`, `brk`.
//!
//! They change the process's layout under its `layout` mutex, and keep it
//! until the page tables match (pages unmapped, protections rewritten), so
//! a page fault or a new mapping never sees a page on its way out; pages
//! come on first touch (`vm::resolve_fault`). New mappings go top-down below the
//! main stack. Linux's argument rules and errno values: unaligned
//! addresses and zero lengths are `EINVAL`, file-backed mappings `EBADF`
//! (there are no files), exhausted space `ENOMEM`.

use alloc::sync::Arc;
use alloc::vec::Vec;

use super::SysResult;
use crate::errno::Errno;
use crate::mm::PAGE_SIZE;
use crate::mm::vm::{AddressSpace, Layout, Region, RegionKind, USER_START, prot};
use crate::uproc::exec::{STACK_SIZE, STACK_TOP};

const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
/// Flags accepted and ignored (hints).
const MAP_IGNORED: u64 = 0x100 /* GROWSDOWN */ | 0x4000 /* NORESERVE */ | 0x8000 /* POPULATE */
    | 0x1_0000 /* NONBLOCK */ | 0x2_0000 /* STACK */ | 0x4_0000 /* HUGETLB */ | 0x800 /* DENYWRITE */
    | 0x1000 /* EXECUTABLE */ | 0x2000 /* LOCKED */;
const PROT_KNOWN: u64 = 0x7;

const MADV_DONTNEED: u64 = 4;
const MADV_FREE: u64 = 8;

/// Mappings live below the stack region.
const MMAP_TOP: u64 = STACK_TOP - STACK_SIZE - PAGE_SIZE;

fn current_vm() -> Result<Arc<AddressSpace>, Errno> {
    crate::sched::current()
        .process
        .vm
        .lock()
        .clone()
        .ok_or(Errno::EFAULT)
}

fn page_aligned(value: u64) -> bool {
    value.is_multiple_of(PAGE_SIZE)
}

fn length_in_pages(length: u64) -> Result<u64, Errno> {
    if length == 0 {
        return Err(Errno::EINVAL);
    }
    length
        .checked_add(PAGE_SIZE - 1)
        .map(|end| end & !(PAGE_SIZE - 1))
        .ok_or(Errno::ENOMEM)
}

/// Cuts `range` out of the layout, splitting regions at its edges.
/// Returns the removed pieces.
fn carve(layout: &mut Layout, start: u64, end: u64) -> Vec<(u64, Region)> {
    let overlapping: Vec<(u64, Region)> = layout
        .regions
        .range(..end)
        .filter(|(region_start, region)| **region_start < end && region.end > start)
        .map(|(&region_start, region)| (region_start, *region))
        .collect();
    let mut removed = Vec::new();
    for (region_start, region) in overlapping {
        layout.regions.remove(&region_start);
        if region_start < start {
            layout.regions.insert(
                region_start,
                Region {
                    end: start,
                    ..region
                },
            );
        }
        if region.end > end {
            layout.regions.insert(end, region);
        }
        let piece_start = region_start.max(start);
        removed.push((
            piece_start,
            Region {
                end: region.end.min(end),
                ..region
            },
        ));
    }
    removed
}

fn overlaps(layout: &Layout, start: u64, end: u64) -> bool {
    layout
        .regions
        .range(..end)
        .any(|(&region_start, region)| region_start < end && region.end > start)
}

/// The highest free gap of `length` bytes below `MMAP_TOP`.
fn find_gap(layout: &Layout, length: u64) -> Option<u64> {
    let mut ceiling = MMAP_TOP;
    for (&start, region) in layout.regions.range(..MMAP_TOP).rev() {
        if region.end <= ceiling && ceiling - region.end >= length {
            return Some(ceiling - length);
        }
        ceiling = ceiling.min(start);
    }
    let floor = layout.brk.max(USER_START) + (64 << 20);
    (ceiling >= floor + length).then(|| ceiling - length)
}

pub fn mmap(
    address: u64,
    length: u64,
    protection: u64,
    flags: u64,
    fd: u64,
    offset: u64,
) -> SysResult {
    let length = length_in_pages(length)?;
    if protection & !PROT_KNOWN != 0 || !page_aligned(offset) {
        return Err(Errno::EINVAL);
    }
    let sharing = flags & (MAP_SHARED | MAP_PRIVATE);
    if sharing == 0 || sharing == (MAP_SHARED | MAP_PRIVATE) {
        return Err(Errno::EINVAL);
    }
    if flags
        & !(MAP_SHARED
            | MAP_PRIVATE
            | MAP_FIXED
            | MAP_ANONYMOUS
            | MAP_FIXED_NOREPLACE
            | MAP_IGNORED)
        != 0
    {
        return Err(Errno::EINVAL);
    }
    if flags & MAP_ANONYMOUS == 0 {
        let _ = fd;
        return Err(Errno::EBADF);
    }
    let vm = current_vm()?;
    let mut layout = vm.layout.lock();
    let fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0;
    let start = if fixed {
        if !page_aligned(address) {
            return Err(Errno::EINVAL);
        }
        let end = address.checked_add(length).ok_or(Errno::ENOMEM)?;
        if address < USER_START || end > MMAP_TOP {
            return Err(Errno::ENOMEM);
        }
        if overlaps(&layout, address, end) {
            if flags & MAP_FIXED_NOREPLACE != 0 {
                return Err(Errno::EEXIST);
            }
            let removed = carve(&mut layout, address, end);
            drop(removed);
            vm.unmap_pages(address..end);
        }
        address
    } else {
        // A hint that fits is honoured, else the highest gap.
        let hint_fits = address >= USER_START
            && page_aligned(address)
            && address
                .checked_add(length)
                .is_some_and(|end| end <= MMAP_TOP && !overlaps(&layout, address, end));
        if hint_fits {
            address
        } else {
            find_gap(&layout, length).ok_or(Errno::ENOMEM)?
        }
    };
    layout.regions.insert(
        start,
        Region {
            end: start + length,
            prot: protection as u32,
            kind: RegionKind::Anonymous,
        },
    );
    Ok(start)
}

fn checked_range(address: u64, length: u64) -> Result<(u64, u64), Errno> {
    if !page_aligned(address) {
        return Err(Errno::EINVAL);
    }
    let length = length_in_pages(length)?;
    let end = address.checked_add(length).ok_or(Errno::EINVAL)?;
    if end > crate::mm::vm::USER_END {
        return Err(Errno::EINVAL);
    }
    Ok((address, end))
}

pub fn munmap(address: u64, length: u64) -> SysResult {
    let (start, end) = checked_range(address, length)?;
    let vm = current_vm()?;
    let mut layout = vm.layout.lock();
    let removed = carve(&mut layout, start, end);
    // The layout stays locked until the pages are gone: a fault or mmap in
    // the freed range must not see (or reuse) pages about to be freed.
    for (piece_start, piece) in removed {
        vm.unmap_pages(piece_start..piece.end);
    }
    drop(layout);
    Ok(0)
}

pub fn mprotect(address: u64, length: u64, protection: u64) -> SysResult {
    if protection & !PROT_KNOWN != 0 {
        return Err(Errno::EINVAL);
    }
    let (start, end) = checked_range(address, length)?;
    let vm = current_vm()?;
    let mut layout = vm.layout.lock();
    // Linux requires the whole range to be mapped.
    let mut covered = start;
    for (&region_start, region) in layout.regions.range(..end) {
        if region.end <= covered {
            continue;
        }
        if region_start > covered {
            break;
        }
        covered = region.end;
    }
    if covered < end {
        return Err(Errno::ENOMEM);
    }
    let pieces = carve(&mut layout, start, end);
    for (piece_start, piece) in pieces {
        layout.regions.insert(
            piece_start,
            Region {
                prot: protection as u32,
                ..piece
            },
        );
    }
    vm.protect_pages(start..end, protection as u32);
    drop(layout);
    Ok(0)
}

pub fn madvise(address: u64, length: u64, advice: u64) -> SysResult {
    if !page_aligned(address) {
        return Err(Errno::EINVAL);
    }
    if length == 0 {
        return Ok(0);
    }
    let (start, end) = checked_range(address, length)?;
    if advice == MADV_DONTNEED || advice == MADV_FREE {
        // The pages go; the next touch finds zeroes.
        let vm = current_vm()?;
        let _layout = vm.layout.lock();
        vm.unmap_pages(start..end);
    }
    Ok(0)
}

pub fn brk(requested: u64) -> SysResult {
    let vm = current_vm()?;
    let mut layout = vm.layout.lock();
    let current = layout.brk;
    if requested == 0 || requested < layout.brk_start {
        return Ok(current);
    }
    let old_end = current.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let new_end = match requested.checked_add(PAGE_SIZE - 1) {
        Some(end) => end & !(PAGE_SIZE - 1),
        None => return Ok(current),
    };
    if new_end > old_end {
        if new_end > MMAP_TOP || overlaps(&layout, old_end, new_end) {
            return Ok(current);
        }
        // The heap grows by a region of its own (earlier pieces may have
        // been split by mprotect; they stay as they are).
        layout.regions.insert(
            old_end,
            Region {
                end: new_end,
                prot: prot::READ | prot::WRITE,
                kind: RegionKind::Heap,
            },
        );
    } else if new_end < old_end {
        carve(&mut layout, new_end, old_end);
        vm.unmap_pages(new_end..old_end);
        layout.brk = requested;
        return Ok(requested);
    }
    layout.brk = requested;
    Ok(requested)
}
