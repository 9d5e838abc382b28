//! PCI building blocks: configuration access, BAR assignment, MSI-X.
//!
//! Owns no global state and takes no lock. The kernel keeps one
//! `PciRoot<AnyCam>` (and, for the registers `PciRoot` does not expose,
//! an alias of the same `AnyCam`) behind its own lock, and calls in here
//! with them; every function here assumes its caller serialises access to
//! the configuration space (port I/O's address/data pair needs it).
//!
//! - `PortCam`: configuration mechanism #1, ports 0xCF8 (address) and 0xCFC
//!   (data), 256 bytes per function; `AnyCam` is either that or ECAM
//!   (`MmioCam`), so one `PciRoot<AnyCam>` type serves both machines.
//! - `BarWindow`: a bump allocator over a physical address window that
//!   skips reserved ranges; `assign_unset_bars` gives every memory BAR the
//!   firmware left at zero an address from it (naturally aligned, at least
//!   a page), then turns on memory decoding and bus mastering.
//! - MSI-X: the capability (id 0x11), its message control register (bit 15
//!   enable, bit 14 function mask) and table entries (16 bytes each:
//!   address low, address high, data, vector control bit 0 = masked).

use core::ops::Range;
use core::sync::atomic::Ordering;

use virtio_drivers::transport::pci::bus::{
    BarInfo, Command, ConfigurationAccess, DeviceFunction, MemoryBarType, MmioCam, PciError,
    PciRoot,
};
use x86_64::instructions::port::Port;

/// The configuration-space address port of mechanism #1.
pub const CONFIG_ADDRESS_PORT: u16 = 0xcf8;
/// The configuration-space data port of mechanism #1.
pub const CONFIG_DATA_PORT: u16 = 0xcfc;
/// Capability id of MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;
/// Offset of the interrupt line (byte 0) and pin (byte 1) register.
pub const INTERRUPT_OFFSET: u8 = 0x3c;
/// BARs are allocated in whole pages, so each can be mapped on its own.
pub const BAR_MIN_ALIGN: u64 = 4096;

const BAR0_OFFSET: u8 = 0x10;
const MSIX_ENABLE: u32 = 1 << 15;
const MSIX_FUNCTION_MASK: u32 = 1 << 14;
const MSIX_ENTRY_SIZE: usize = 16;
/// The local APIC's MSI address window.
const MSI_ADDRESS_BASE: u64 = 0xfee0_0000;

/// Configuration access through ports 0xCF8/0xCFC.
#[derive(Debug)]
pub struct PortCam {
    _private: (),
}

impl PortCam {
    /// # Safety
    ///
    /// The caller owns ports 0xCF8-0xCFF (nothing else uses them) and
    /// serialises every access made through the returned value and its
    /// clones.
    pub const unsafe fn new() -> Self {
        PortCam { _private: () }
    }

    fn address(function: DeviceFunction, offset: u8) -> u32 {
        0x8000_0000
            | u32::from(function.bus) << 16
            | u32::from(function.device & 0x1f) << 11
            | u32::from(function.function & 0x7) << 8
            | u32::from(offset & 0xfc)
    }
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, function: DeviceFunction, offset: u8) -> u32 {
        let mut address = Port::<u32>::new(CONFIG_ADDRESS_PORT);
        let mut data = Port::<u32>::new(CONFIG_DATA_PORT);
        // SAFETY: `new`'s contract gives this value the configuration ports
        // and serialises its users, so the address/data pair is not split.
        unsafe {
            address.write(Self::address(function, offset));
            data.read()
        }
    }

    fn write_word(&mut self, function: DeviceFunction, offset: u8, value: u32) {
        let mut address = Port::<u32>::new(CONFIG_ADDRESS_PORT);
        let mut data = Port::<u32>::new(CONFIG_DATA_PORT);
        // SAFETY: as in `read_word`.
        unsafe {
            address.write(Self::address(function, offset));
            data.write(value);
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam { _private: () }
    }
}

mod bar_sizing;

use bar_sizing::{BAR_SIZING, COMMAND_OFFSET, DECODE_BITS, bar_slot};
pub use bar_sizing::{bar_size_learnt, freeze_bar_sizes};

/// ECAM or port I/O, chosen at boot.
pub enum AnyCam {
    Ecam(MmioCam<'static>),
    Port(PortCam),
}

impl AnyCam {
    fn read_hardware(&self, function: DeviceFunction, offset: u8) -> u32 {
        match self {
            AnyCam::Ecam(cam) => cam.read_word(function, offset),
            AnyCam::Port(cam) => cam.read_word(function, offset),
        }
    }

    fn write_hardware(&mut self, function: DeviceFunction, offset: u8, value: u32) {
        match self {
            AnyCam::Ecam(cam) => cam.write_word(function, offset, value),
            AnyCam::Port(cam) => cam.write_word(function, offset, value),
        }
    }

    /// Which mechanism this is, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            AnyCam::Ecam(_) => "ECAM",
            AnyCam::Port(_) => "port I/O",
        }
    }
}

impl ConfigurationAccess for AnyCam {
    fn read_word(&self, function: DeviceFunction, offset: u8) -> u32 {
        if let Some(slot) = bar_slot(function, offset)
            && BAR_SIZING.probing[slot].load(Ordering::Acquire)
        {
            let learnt = BAR_SIZING.responses[slot].load(Ordering::Acquire);
            if BAR_SIZING.frozen.load(Ordering::Acquire) && learnt != 0 {
                return learnt;
            }
            let response = self.read_hardware(function, offset);
            BAR_SIZING.responses[slot].store(response, Ordering::Release);
            return response;
        }
        self.read_hardware(function, offset)
    }

    fn write_word(&mut self, function: DeviceFunction, offset: u8, value: u32) {
        let frozen = BAR_SIZING.frozen.load(Ordering::Acquire);
        if let Some(slot) = bar_slot(function, offset) {
            let known = BAR_SIZING.responses[slot].load(Ordering::Acquire) != 0;
            if value == u32::MAX {
                BAR_SIZING.probing[slot].store(true, Ordering::Release);
                if frozen && known {
                    return;
                }
            } else if BAR_SIZING.probing[slot].swap(false, Ordering::AcqRel) && frozen && known {
                // The restore after an answered probe: the BAR never
                // changed.
                return;
            }
        } else if frozen && offset == COMMAND_OFFSET {
            let current = self.read_hardware(function, offset) & 0xffff;
            if value & 0xffff == current & !DECODE_BITS && current & DECODE_BITS != 0 {
                // Decoding off only to size a BAR, which is answered above.
                return;
            }
        }
        self.write_hardware(function, offset, value)
    }

    unsafe fn unsafe_clone(&self) -> Self {
        // SAFETY: the caller takes on `unsafe_clone`'s contract.
        unsafe {
            match self {
                AnyCam::Ecam(cam) => AnyCam::Ecam(cam.unsafe_clone()),
                AnyCam::Port(cam) => AnyCam::Port(cam.unsafe_clone()),
            }
        }
    }
}

const MAX_RESERVED: usize = 32;

/// A bump allocator for BAR addresses inside `start..end`, skipping
/// reserved ranges (firmware-assigned BARs, ECAM, other devices).
#[derive(Debug, Clone)]
pub struct BarWindow {
    start: u64,
    next: u64,
    end: u64,
    reserved: [Range<u64>; MAX_RESERVED],
    reserved_count: usize,
}

impl BarWindow {
    /// An empty window over `start..end` (nothing allocated yet).
    pub const fn new(start: u64, end: u64) -> Self {
        BarWindow {
            start,
            next: start,
            end,
            reserved: [const { 0..0 }; MAX_RESERVED],
            reserved_count: 0,
        }
    }

    /// The whole window.
    pub fn range(&self) -> Range<u64> {
        self.start..self.end
    }

    /// The part handed out so far (including skipped reserved ranges).
    pub fn used(&self) -> Range<u64> {
        self.start..self.next
    }

    /// Keeps `range` out of future allocations. False when the list of
    /// reserved ranges is full (nothing is reserved then).
    pub fn reserve(&mut self, range: Range<u64>) -> bool {
        if range.is_empty() || range.end <= self.start || self.end <= range.start {
            return true;
        }
        if self.reserved_count == MAX_RESERVED {
            return false;
        }
        self.reserved[self.reserved_count] = range;
        self.reserved_count += 1;
        true
    }

    /// Whether `range` lies inside the window.
    pub fn contains(&self, range: &Range<u64>) -> bool {
        self.start <= range.start && range.end <= self.end && range.start <= range.end
    }

    /// `size` bytes (a power of two), aligned to their size (at least a
    /// page). None when `size` is not a power of two or does not fit.
    pub fn allocate(&mut self, size: u64) -> Option<u64> {
        if size == 0 || !size.is_power_of_two() {
            return None;
        }
        let size = size.max(BAR_MIN_ALIGN);
        let mut candidate = self.next;
        loop {
            candidate = candidate.checked_next_multiple_of(size)?;
            let end = candidate.checked_add(size)?;
            if end > self.end {
                return None;
            }
            let overlap = self.reserved[..self.reserved_count]
                .iter()
                .filter(|r| r.start < end && candidate < r.end)
                .map(|r| r.end)
                .max();
            match overlap {
                Some(past) => candidate = past,
                None => {
                    self.next = end;
                    return Some(candidate);
                }
            }
        }
    }
}

/// One memory BAR after assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBar {
    pub index: u8,
    pub address: u64,
    pub size: u64,
    pub width64: bool,
    pub prefetchable: bool,
    /// This call gave it its address (the firmware had left it at zero).
    pub assigned: bool,
}

/// Why a function's BARs could not all be given addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarError {
    /// The device reports a BAR type that does not exist.
    InvalidType(PciError),
    /// A BAR that must lie below 1 MiB (not supported).
    Below1MiB { index: u8 },
    /// The window has no room for a BAR of this size (or the size is odd).
    NoSpace { index: u8, size: u64 },
}

/// The memory BARs of `function` (a type 0 header), without changing any.
pub fn memory_bars<C: ConfigurationAccess>(
    root: &mut PciRoot<C>,
    function: DeviceFunction,
) -> Result<[Option<MemoryBar>; 6], BarError> {
    let bars = root.bars(function).map_err(BarError::InvalidType)?;
    let mut result = [None; 6];
    for (index, bar) in bars.iter().enumerate() {
        if let Some(BarInfo::Memory {
            address_type,
            prefetchable,
            address,
            size,
        }) = bar
        {
            result[index] = Some(MemoryBar {
                index: index as u8,
                address: *address,
                size: *size,
                width64: *address_type == MemoryBarType::Width64,
                prefetchable: *prefetchable,
                assigned: false,
            });
        }
    }
    Ok(result)
}

/// Sets every memory BAR of `function` whose range reaches past `limit`
/// back to zero (with memory decoding off), so `assign_unset_bars` places
/// it again. Returns how many it cleared.
pub fn clear_bars_above<C: ConfigurationAccess>(
    root: &mut PciRoot<C>,
    function: DeviceFunction,
    limit: u64,
) -> Result<u8, BarError> {
    let bars = memory_bars(root, function)?;
    let mut cleared = 0;
    for bar in bars.iter().flatten() {
        if bar.address != 0 && bar.address.saturating_add(bar.size) > limit {
            let (_, command) = root.get_status_command(function);
            root.set_command(function, command - Command::MEMORY_SPACE);
            if bar.width64 {
                root.set_bar_64(function, bar.index, 0);
            } else {
                root.set_bar_32(function, bar.index, 0);
            }
            cleared += 1;
        }
    }
    Ok(cleared)
}

/// Gives every memory BAR of `function` (a type 0 header) that reads as
/// zero an address from `window`, 32- and 64-bit alike, then enables
/// memory decoding and bus mastering. On an error memory decoding is
/// turned off (a BAR left at zero would decode over RAM) and the BARs
/// already placed keep their addresses.
pub fn assign_unset_bars<C: ConfigurationAccess>(
    root: &mut PciRoot<C>,
    function: DeviceFunction,
    window: &mut BarWindow,
) -> Result<[Option<MemoryBar>; 6], BarError> {
    let result = assign(root, function, window);
    let (_, command) = root.get_status_command(function);
    match &result {
        Ok(bars) => {
            let mut command = command | Command::BUS_MASTER;
            if bars.iter().any(Option::is_some) {
                command |= Command::MEMORY_SPACE;
            }
            root.set_command(function, command);
        }
        Err(_) => root.set_command(function, command - Command::MEMORY_SPACE),
    }
    result
}

fn assign<C: ConfigurationAccess>(
    root: &mut PciRoot<C>,
    function: DeviceFunction,
    window: &mut BarWindow,
) -> Result<[Option<MemoryBar>; 6], BarError> {
    let mut bars = memory_bars(root, function)?;
    for bar in bars.iter_mut().flatten() {
        if bar.address != 0 {
            continue;
        }
        if bar.size == 0 {
            continue;
        }
        if !bar.width64 && bar.size > u64::from(u32::MAX) {
            return Err(BarError::NoSpace {
                index: bar.index,
                size: bar.size,
            });
        }
        let address = window.allocate(bar.size).ok_or(BarError::NoSpace {
            index: bar.index,
            size: bar.size,
        })?;
        if bar.width64 {
            root.set_bar_64(function, bar.index, address);
        } else {
            let Ok(address32) = u32::try_from(address) else {
                return Err(BarError::NoSpace {
                    index: bar.index,
                    size: bar.size,
                });
            };
            root.set_bar_32(function, bar.index, address32);
        }
        bar.address = address;
        bar.assigned = true;
    }
    if let Some(bar) = bars
        .iter()
        .flatten()
        .find(|bar| bar.address == 0 && bar.size != 0)
    {
        return Err(BarError::Below1MiB { index: bar.index });
    }
    Ok(bars)
}

/// Reads a BAR's programmed memory address straight from configuration
/// space (no sizing, so decoding is left alone). None for an I/O BAR or
/// an index out of range.
pub fn bar_address<C: ConfigurationAccess>(
    cam: &C,
    function: DeviceFunction,
    index: u8,
) -> Option<u64> {
    if index >= 6 {
        return None;
    }
    let low = cam.read_word(function, BAR0_OFFSET + 4 * index);
    if low & 1 != 0 {
        return None;
    }
    let high = if low & 0b110 == 0b100 && index < 5 {
        cam.read_word(function, BAR0_OFFSET + 4 * (index + 1))
    } else {
        0
    };
    Some(u64::from(low & !0xf) | u64::from(high) << 32)
}

/// The interrupt line (what firmware wrote, 0xff or 0 if nothing) and pin
/// (1 = INTA .. 4 = INTD, 0 = none) of `function`.
pub fn interrupt_line_pin<C: ConfigurationAccess>(cam: &C, function: DeviceFunction) -> (u8, u8) {
    let word = cam.read_word(function, INTERRUPT_OFFSET);
    (word as u8, (word >> 8) as u8)
}

/// The MSI-X capability of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixCapability {
    /// Where the capability sits in configuration space.
    pub offset: u8,
    pub table_bar: u8,
    pub table_offset: u32,
    pub pba_bar: u8,
    pub pba_offset: u32,
    /// Table size (1..=2048).
    pub entries: u16,
}

/// Finds and decodes the MSI-X capability, if the function has one. The
/// capability list is walked for at most 48 entries (a looping list ends).
pub fn find_msix<C: ConfigurationAccess>(
    root: &PciRoot<C>,
    cam: &C,
    function: DeviceFunction,
) -> Option<MsixCapability> {
    let capability = root
        .capabilities(function)
        .take(48)
        .find(|capability| capability.id == CAP_ID_MSIX)?;
    parse_msix(cam, function, capability.offset)
}

/// Decodes an MSI-X capability at `offset`.
pub fn parse_msix<C: ConfigurationAccess>(
    cam: &C,
    function: DeviceFunction,
    offset: u8,
) -> Option<MsixCapability> {
    if offset > 0xf4 || offset & 3 != 0 {
        return None;
    }
    let header = cam.read_word(function, offset);
    if header as u8 != CAP_ID_MSIX {
        return None;
    }
    let table = cam.read_word(function, offset + 4);
    let pba = cam.read_word(function, offset + 8);
    let capability = MsixCapability {
        offset,
        table_bar: (table & 7) as u8,
        table_offset: table & !7,
        pba_bar: (pba & 7) as u8,
        pba_offset: pba & !7,
        entries: ((header >> 16) & 0x7ff) as u16 + 1,
    };
    (capability.table_bar < 6 && capability.pba_bar < 6).then_some(capability)
}

/// Sets the MSI-X enable (bit 15) and function mask (bit 14) bits of the
/// message control register.
pub fn set_msix_control<C: ConfigurationAccess>(
    cam: &mut C,
    function: DeviceFunction,
    capability: &MsixCapability,
    enable: bool,
    function_mask: bool,
) {
    let mut word = cam.read_word(function, capability.offset);
    word &= !((MSIX_ENABLE | MSIX_FUNCTION_MASK) << 16);
    if enable {
        word |= MSIX_ENABLE << 16;
    }
    if function_mask {
        word |= MSIX_FUNCTION_MASK << 16;
    }
    cam.write_word(function, capability.offset, word);
}

/// The (enable, function mask) bits of the message control register.
pub fn msix_control<C: ConfigurationAccess>(
    cam: &C,
    function: DeviceFunction,
    capability: &MsixCapability,
) -> (bool, bool) {
    let control = cam.read_word(function, capability.offset) >> 16;
    (
        control & MSIX_ENABLE != 0,
        control & MSIX_FUNCTION_MASK != 0,
    )
}

/// The MSI message that delivers `vector` to the local APIC `apic_id`
/// (fixed delivery, physical destination, edge).
pub fn msi_message(apic_id: u8, vector: u8) -> (u64, u32) {
    (
        MSI_ADDRESS_BASE | u64::from(apic_id) << 12,
        u32::from(vector),
    )
}

/// Programs MSI-X table entry `index` to send `vector` to `apic_id` and
/// unmasks it (the entry is masked while it changes).
///
/// # Safety
///
/// `table` is the mapped (uncached) MSI-X table, with more than `index`
/// entries, that nothing else writes meanwhile.
pub unsafe fn program_msix_entry(table: *mut u32, index: u16, apic_id: u8, vector: u8) {
    let (address, data) = msi_message(apic_id, vector);
    // SAFETY: the caller's guarantee is `write_msix_entry`'s.
    unsafe { write_msix_entry(table, index, address, data) }
}

/// Writes MSI-X table entry `index` with the message (`address`, `data`)
/// and unmasks it (the entry is masked while it changes).
///
/// # Safety
///
/// As for `program_msix_entry`.
pub unsafe fn write_msix_entry(table: *mut u32, index: u16, address: u64, data: u32) {
    let entry = table.wrapping_byte_add(usize::from(index) * MSIX_ENTRY_SIZE);
    // SAFETY: the caller guarantees the entry is mapped and ours; every
    // access is an aligned 32-bit one, as MSI-X requires.
    unsafe {
        let control = entry.add(3).read_volatile();
        entry.add(3).write_volatile(control | 1);
        entry.write_volatile(address as u32);
        entry.add(1).write_volatile((address >> 32) as u32);
        entry.add(2).write_volatile(data);
        entry.add(3).write_volatile(control & !1);
    }
}

/// Masks (or unmasks) MSI-X table entry `index`.
///
/// # Safety
///
/// As for `program_msix_entry`.
pub unsafe fn mask_msix_entry(table: *mut u32, index: u16, masked: bool) {
    let entry = table.wrapping_byte_add(usize::from(index) * MSIX_ENTRY_SIZE);
    // SAFETY: as in `program_msix_entry`.
    unsafe {
        let control = entry.add(3).read_volatile();
        entry
            .add(3)
            .write_volatile(if masked { control | 1 } else { control & !1 });
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;

    const FUNCTION: DeviceFunction = DeviceFunction {
        bus: 0,
        device: 3,
        function: 0,
    };

    /// 256 bytes of configuration space; BARs keep their read-only low bits
    /// (the size mask) like hardware does.
    struct FakeCam {
        space: [u32; 64],
        /// Per BAR dword: bits that cannot be written.
        bar_fixed: [u32; 6],
        writes: Vec<(u8, u32)>,
    }

    impl FakeCam {
        fn new() -> Self {
            FakeCam {
                space: [0; 64],
                bar_fixed: [0xffff_ffff; 6],
                writes: Vec::new(),
            }
        }

        /// A memory BAR of `size` at dword `index` (and the next, 64-bit).
        fn memory_bar(&mut self, index: usize, size: u64, width64: bool) {
            let kind = if width64 { 0b100 } else { 0 };
            self.space[4 + index] = kind;
            self.bar_fixed[index] = (size as u32).wrapping_sub(1) | 0xf;
            if width64 {
                self.space[4 + index + 1] = 0;
                self.bar_fixed[index + 1] = ((size - 1) >> 32) as u32;
            }
        }
    }

    impl ConfigurationAccess for FakeCam {
        fn read_word(&self, function: DeviceFunction, offset: u8) -> u32 {
            assert_eq!(function, FUNCTION);
            self.space[usize::from(offset / 4)]
        }

        fn write_word(&mut self, function: DeviceFunction, offset: u8, value: u32) {
            assert_eq!(function, FUNCTION);
            self.writes.push((offset, value));
            let slot = usize::from(offset / 4);
            if (4..10).contains(&slot) {
                let fixed = self.bar_fixed[slot - 4];
                self.space[slot] = (self.space[slot] & fixed) | (value & !fixed);
            } else if slot == 1 {
                // Status is read-only here; command is writable.
                self.space[1] = (self.space[1] & 0xffff_0000) | (value & 0xffff);
            } else {
                self.space[slot] = value;
            }
        }

        unsafe fn unsafe_clone(&self) -> Self {
            FakeCam {
                space: self.space,
                bar_fixed: self.bar_fixed,
                writes: Vec::new(),
            }
        }
    }

    #[test]
    fn window_aligns_naturally_and_refuses_overflow() {
        let mut window = BarWindow::new(0xc000_1000, 0xc010_0000);
        assert_eq!(window.allocate(0x4000), Some(0xc000_4000));
        assert_eq!(window.allocate(0x1000), Some(0xc000_8000));
        // Smaller than a page still takes a page.
        assert_eq!(window.allocate(0x100), Some(0xc000_9000));
        assert_eq!(window.allocate(0x80000), Some(0xc008_0000));
        assert_eq!(window.allocate(0x80000), None, "does not fit");
        assert_eq!(window.allocate(0x3000), None, "not a power of two");
        assert_eq!(window.allocate(0), None);
        assert_eq!(window.allocate(0x1000), None, "exhausted");
    }

    #[test]
    fn window_never_wraps() {
        let mut window = BarWindow::new(u64::MAX - 0x1fff, u64::MAX);
        assert_eq!(window.allocate(0x1000), Some(u64::MAX - 0x1fff));
        // The next page would end past 2^64.
        assert_eq!(window.allocate(0x1000), None);
        assert_eq!(window.allocate(1 << 63), None);
    }

    #[test]
    fn window_skips_reserved_ranges() {
        let mut window = BarWindow::new(0x1000_0000, 0x2000_0000);
        assert!(window.reserve(0x1000_0000..0x1000_3000));
        assert!(window.reserve(0x1000_4000..0x1000_5000));
        assert!(window.reserve(0x3000_0000..0x3000_1000), "outside: ignored");
        assert_eq!(window.allocate(0x1000), Some(0x1000_3000));
        assert_eq!(window.allocate(0x1000), Some(0x1000_5000));
        assert_eq!(window.allocate(0x4000), Some(0x1000_8000));
        assert!(window.contains(&(0x1000_8000..0x1000_c000)));
        assert!(!window.contains(&(0x0fff_f000..0x1000_1000)));
    }

    #[test]
    fn unset_bars_get_addresses_and_decoding_is_enabled() {
        let mut cam = FakeCam::new();
        cam.memory_bar(0, 0x1000, false);
        cam.memory_bar(1, 0x4000, true); // dwords 1 and 2
        cam.memory_bar(4, 0x10_0000, false);
        cam.space[4 + 4] = 0xfe00_0000; // set by firmware
        cam.space[4 + 3] = 0xc001; // an I/O BAR
        cam.bar_fixed[3] = 0x1f;
        let mut root = PciRoot::new(cam);
        let mut window = BarWindow::new(0xc000_0000, 0xd000_0000);
        let bars = assign_unset_bars(&mut root, FUNCTION, &mut window).expect("assigned");
        let bar0 = bars[0].expect("bar 0");
        let bar1 = bars[1].expect("bar 1");
        let bar4 = bars[4].expect("bar 4");
        assert!(bar0.assigned && bar1.assigned && !bar4.assigned);
        assert_eq!(bar0.address, 0xc000_0000);
        assert_eq!(bar1.address, 0xc000_4000);
        assert!(bar1.width64);
        assert_eq!(bar4.address, 0xfe00_0000);
        assert!(bars[2].is_none() && bars[3].is_none() && bars[5].is_none());
        let again = memory_bars(&mut root, FUNCTION).expect("bars");
        assert_eq!(again[0].map(|bar| bar.address), Some(0xc000_0000));
        assert_eq!(again[1].map(|bar| bar.address), Some(0xc000_4000));
        let (_, command) = root.get_status_command(FUNCTION);
        assert!(command.contains(Command::MEMORY_SPACE | Command::BUS_MASTER));
        assert!(!command.contains(Command::IO_SPACE));
    }

    #[test]
    fn full_window_leaves_decoding_off() {
        let mut cam = FakeCam::new();
        cam.memory_bar(0, 0x10_0000, false);
        cam.space[1] = 0x2; // memory decoding on
        let mut root = PciRoot::new(cam);
        let mut window = BarWindow::new(0xc000_0000, 0xc000_8000);
        let error = assign_unset_bars(&mut root, FUNCTION, &mut window).unwrap_err();
        assert_eq!(
            error,
            BarError::NoSpace {
                index: 0,
                size: 0x10_0000
            }
        );
        let (_, command) = root.get_status_command(FUNCTION);
        assert!(!command.contains(Command::MEMORY_SPACE));
    }

    #[test]
    fn bars_above_the_limit_are_cleared() {
        let mut cam = FakeCam::new();
        cam.memory_bar(0, 0x4000, true);
        cam.space[4] = 0x8000_000c;
        cam.space[5] = 0x1;
        let mut root = PciRoot::new(cam);
        assert_eq!(clear_bars_above(&mut root, FUNCTION, 1 << 32), Ok(1));
        let bars = memory_bars(&mut root, FUNCTION).expect("bars");
        assert_eq!(bars[0].map(|bar| bar.address), Some(0));
    }

    fn msix_cam() -> FakeCam {
        let mut cam = FakeCam::new();
        cam.space[1] = 1 << 20; // status: capability list
        cam.space[0x34 / 4] = 0x40;
        // Vendor-specific capability at 0x40, then MSI-X at 0x98.
        cam.space[0x40 / 4] = 0x0010_9809;
        cam.space[0x98 / 4] = 0x0002_0011; // 3 entries, next 0
        cam.space[0x9c / 4] = 0x0000_1001; // table: BAR 1, offset 0x1000
        cam.space[0xa0 / 4] = 0x0000_0802; // PBA: BAR 2, offset 0x800
        cam
    }

    #[test]
    fn msix_capability_is_found_and_parsed() {
        let cam = msix_cam();
        // SAFETY: the fake has no hardware behind it.
        let alias = unsafe { cam.unsafe_clone() };
        let root = PciRoot::new(cam);
        let capability = find_msix(&root, &alias, FUNCTION).expect("MSI-X");
        assert_eq!(
            capability,
            MsixCapability {
                offset: 0x98,
                table_bar: 1,
                table_offset: 0x1000,
                pba_bar: 2,
                pba_offset: 0x800,
                entries: 3,
            }
        );
    }

    #[test]
    fn no_capability_list_means_no_msix() {
        let mut cam = msix_cam();
        cam.space[1] = 0;
        // SAFETY: the fake has no hardware behind it.
        let alias = unsafe { cam.unsafe_clone() };
        let root = PciRoot::new(cam);
        assert_eq!(find_msix(&root, &alias, FUNCTION), None);
        assert_eq!(parse_msix(&alias, FUNCTION, 0x40), None, "wrong id");
        assert_eq!(parse_msix(&alias, FUNCTION, 0x99), None, "misaligned");
    }

    #[test]
    fn looping_capability_list_ends() {
        let mut cam = msix_cam();
        cam.space[0x40 / 4] = 0x0010_4009; // points at itself
        // SAFETY: the fake has no hardware behind it.
        let alias = unsafe { cam.unsafe_clone() };
        let root = PciRoot::new(cam);
        assert_eq!(find_msix(&root, &alias, FUNCTION), None);
    }

    #[test]
    fn msix_control_bits() {
        let mut cam = msix_cam();
        let capability = parse_msix(&cam, FUNCTION, 0x98).expect("MSI-X");
        set_msix_control(&mut cam, FUNCTION, &capability, true, true);
        assert_eq!(cam.space[0x98 / 4], 0xc002_0011);
        assert_eq!(msix_control(&cam, FUNCTION, &capability), (true, true));
        set_msix_control(&mut cam, FUNCTION, &capability, true, false);
        assert_eq!(cam.space[0x98 / 4], 0x8002_0011);
        set_msix_control(&mut cam, FUNCTION, &capability, false, false);
        assert_eq!(cam.space[0x98 / 4], 0x0002_0011);
    }

    #[test]
    fn msix_entries_are_programmed_and_unmasked() {
        // Three entries, all masked as after reset.
        let mut table = [0u32; 12];
        for entry in table.chunks_mut(4) {
            entry[3] = 1;
        }
        // SAFETY: `table` is a local array with three entries.
        unsafe { program_msix_entry(table.as_mut_ptr(), 1, 2, 0x51) };
        assert_eq!(&table[4..8], &[0xfee0_2000, 0, 0x51, 0]);
        assert_eq!(table[3], 1, "entry 0 untouched");
        assert_eq!(table[11], 1, "entry 2 untouched");
        // SAFETY: as above.
        unsafe { mask_msix_entry(table.as_mut_ptr(), 1, true) };
        assert_eq!(table[7], 1);
        assert_eq!(msi_message(0, 0x60), (0xfee0_0000, 0x60));
    }

    #[test]
    fn port_address_encoding() {
        let function = DeviceFunction {
            bus: 1,
            device: 2,
            function: 3,
        };
        assert_eq!(PortCam::address(function, 0x3e), 0x8001_133c);
    }
}
