//! The Xen PVH start info: what the boot loader (QEMU) tells the kernel.
//!
//! `BootInfo::read` copies everything the kernel needs out of the firmware's
//! `hvm_start_info` (memory map, modules such as `-initrd`, the RSDP
//! address, the command line) into kernel-owned storage, checking the magic
//! number and bounding every count, so nothing later depends on memory the
//! frame allocator may hand out. Read-only afterwards.

use core::ops::Range;

use crate::mm::phys_to_virt;

const START_INFO_MAGIC: u32 = 0x336e_c578;
const MAX_MEMORY_REGIONS: usize = 128;
const MAX_MODULES: usize = 8;
const MAX_COMMAND_LINE: usize = 4096;

#[repr(C)]
#[derive(Clone, Copy)]
struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    module_count: u32,
    module_list_address: u64,
    command_line_address: u64,
    rsdp_address: u64,
    memory_map_address: u64,
    memory_map_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct HvmMemoryMapEntry {
    address: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct HvmModuleEntry {
    address: u64,
    size: u64,
    command_line_address: u64,
    reserved: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    Ram,
    Reserved,
    AcpiReclaimable,
    AcpiNvs,
    Unusable,
    Other(u32),
}

impl MemoryKind {
    fn from_e820(kind: u32) -> Self {
        match kind {
            1 => MemoryKind::Ram,
            2 => MemoryKind::Reserved,
            3 => MemoryKind::AcpiReclaimable,
            4 => MemoryKind::AcpiNvs,
            5 => MemoryKind::Unusable,
            other => MemoryKind::Other(other),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MemoryRegion {
    pub range: Range<u64>,
    pub kind: MemoryKind,
}

/// Why the start info could not be used.
#[derive(Debug, Clone, Copy)]
pub enum StartInfoError {
    BadMagic(u32),
    NoMemoryMap,
}

impl core::fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartInfoError::BadMagic(magic) => {
                write!(f, "magic {magic:#x}, expected {START_INFO_MAGIC:#x}")
            }
            StartInfoError::NoMemoryMap => f.write_str("no memory map (start info version 0?)"),
        }
    }
}

pub struct BootInfo {
    regions: [MemoryRegion; MAX_MEMORY_REGIONS],
    region_count: usize,
    modules: [Range<u64>; MAX_MODULES],
    module_count: usize,
    pub rsdp: Option<u64>,
    pub start_info_version: u32,
}

/// Reads a `T` at physical address `physical`.
///
/// # Safety
/// `physical..physical + size_of::<T>()` must be memory below 4 GiB that the
/// firmware filled with a valid `T`.
unsafe fn read_physical<T: Copy>(physical: u64) -> T {
    // SAFETY: per the caller; the boot page tables map 0..4 GiB in the
    // direct map, and unaligned reads are allowed.
    unsafe { core::ptr::read_unaligned(phys_to_virt(physical) as *const T) }
}

impl BootInfo {
    /// Copies the start info at `physical` (from `ebx` at entry). Also hands
    /// the command line to `cmdline::init`.
    pub fn read(physical: u64) -> Result<BootInfo, StartInfoError> {
        // SAFETY: the PVH boot protocol puts hvm_start_info at this address;
        // the magic number is checked before any field is trusted.
        let start: HvmStartInfo = unsafe { read_physical(physical) };
        if start.magic != START_INFO_MAGIC {
            return Err(StartInfoError::BadMagic(start.magic));
        }
        let mut info = BootInfo {
            regions: [const {
                MemoryRegion {
                    range: 0..0,
                    kind: MemoryKind::Reserved,
                }
            }; MAX_MEMORY_REGIONS],
            region_count: 0,
            modules: [const { 0..0 }; MAX_MODULES],
            module_count: 0,
            rsdp: (start.rsdp_address != 0).then_some(start.rsdp_address),
            start_info_version: start.version,
        };
        if start.version < 1 || start.memory_map_address == 0 || start.memory_map_entries == 0 {
            return Err(StartInfoError::NoMemoryMap);
        }
        let entries = (start.memory_map_entries as usize).min(MAX_MEMORY_REGIONS);
        for index in 0..entries {
            let address =
                start.memory_map_address + (index * size_of::<HvmMemoryMapEntry>()) as u64;
            // SAFETY: the start info (version >= 1) says the memory map has
            // `memory_map_entries` entries at this address.
            let entry: HvmMemoryMapEntry = unsafe { read_physical(address) };
            let end = entry.address.saturating_add(entry.size);
            info.regions[info.region_count] = MemoryRegion {
                range: entry.address..end,
                kind: MemoryKind::from_e820(entry.kind),
            };
            info.region_count += 1;
        }
        for index in 0..(start.module_count as usize).min(MAX_MODULES) {
            let address = start.module_list_address + (index * size_of::<HvmModuleEntry>()) as u64;
            // SAFETY: the start info lists `module_count` entries here.
            let module: HvmModuleEntry = unsafe { read_physical(address) };
            info.modules[info.module_count] =
                module.address..module.address.saturating_add(module.size);
            info.module_count += 1;
        }
        let mut command_line = [0u8; MAX_COMMAND_LINE];
        if start.command_line_address != 0 {
            for (offset, byte) in command_line.iter_mut().enumerate() {
                // SAFETY: the command line is a NUL-terminated string at this
                // address; reading stops at the NUL.
                *byte = unsafe { read_physical(start.command_line_address + offset as u64) };
                if *byte == 0 {
                    break;
                }
            }
        }
        crate::cmdline::init(&command_line);
        Ok(info)
    }

    pub fn memory_map(&self) -> &[MemoryRegion] {
        &self.regions[..self.region_count]
    }

    /// Physical ranges of the boot modules (`-initrd`).
    pub fn modules(&self) -> &[Range<u64>] {
        &self.modules[..self.module_count]
    }
}
