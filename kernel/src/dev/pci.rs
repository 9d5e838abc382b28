//! The PCI bus: configuration access, enumeration, BAR placement, MSI-X
//! and INTx routing for the drivers above (virtio-net first).
//!
//! Owns `BUS`, an `IrqSpinLock` over the one `PciRoot<AnyCam>` (ECAM from
//! the ACPI MCFG window through the direct map, else port I/O 0xCF8/0xCFC),
//! an alias of the same configuration access for the registers `PciRoot`
//! does not expose (MSI-X, interrupt line and pin; both are only ever used
//! under `BUS`, so config cycles never interleave), the devices found at
//! boot and the BAR window. `BUS` is a leaf lock apart from the console,
//! heap and I/O APIC locks taken under it; callers may hold sleeping locks
//! (a driver's `Mutex`) when they call in, never the other way round.
//!
//! `init` (boot, one CPU) enumerates bus 0 (QEMU's `q35` and `pc` put
//! every device there), moves any memory BAR the direct map cannot reach
//! (above 4 GiB) back to zero, and gives every zero memory BAR (qboot
//! leaves them all at zero) an address from a window in the 32-bit PCI
//! hole: from the end of low RAM (at least 0xc000_0000) to the I/O APIC at
//! 0xfec0_0000, skipping ECAM and BARs the firmware placed. The direct map
//! maps that hole uncached, so a BAR's physical address plus
//! `DIRECT_MAP_BASE` is its register window.
//!
//! INTx: `intx_gsi` maps a bus-0 device's pin to a GSI. `q35`: QEMU's ACPI
//! `_PRT` (slots 0-0x17: PIRQ E + (slot + pin - 1) mod 4, slot 0x18 and
//! 0x1e: PIRQ E + pin - 1, slots 0x19-0x1d and 0x1f: PIRQ A + pin - 1) with
//! PIRQ A-H wired to GSI 16-23 in APIC mode. `pc` (PIIX): link
//! (slot - 1 + pin - 1) mod 4 (QEMU's `pci_slot_get_pirq`, pin 1 = INTA),
//! whose ISA IRQ the PIIX register 0x60 + link
//! holds (`init` gives unrouted links the usual 10, 10, 11, 11); the IRQ goes
//! through the MADT's overrides to a GSI (QEMU's MADT calls PIIX's IRQs
//! 5, 9, 10, 11 level-triggered active-high; QEMU's I/O APIC ignores the
//! polarity bit, so `route_gsi(gsi, v, true)` works on both machines).
//! Elsewhere: the interrupt line register as the firmware left it.

use alloc::vec::Vec;
use core::ops::Range;

use spindle_drivers::pci::{self as hw, AnyCam, BarWindow, MemoryBar, PortCam};
use virtio_drivers::transport::pci::bus::{
    Cam, ConfigurationAccess, DeviceFunction, HeaderType, MmioCam, PciRoot,
};

use crate::arch::irq;
use crate::errno::Errno;
use crate::mm::{BOOT_DIRECT_MAP_LIMIT, phys_to_virt};
use crate::platform::Platform;
use crate::sync::IrqSpinLock;

/// BAR placement never goes below this (QEMU's and SeaBIOS's usual start
/// of the 32-bit hole on q35, just past its ECAM window).
const HOLE_FLOOR: u64 = 0xc000_0000;
/// The I/O APIC, HPET and local APIC live from here up.
const HOLE_END: u64 = 0xfec0_0000;
const WINDOW_ALIGN: u64 = 16 << 20;

/// PIIX3's PIRQ route control registers (function 00:01.0, 0x60-0x63).
const PIIX_PIRQ_ROUTE: u8 = 0x60;
const PIIX_DEFAULT_IRQS: [u8; 4] = [10, 10, 11, 11];

/// One PCI function as found at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciDevice {
    pub function: DeviceFunction,
    pub vendor_id: u16,
    pub device_id: u16,
    pub class: u8,
    pub subclass: u8,
    /// 1 = INTA .. 4 = INTD, 0 = no INTx.
    pub interrupt_pin: u8,
    /// What the firmware wrote (0 or 0xff: nothing).
    pub interrupt_line: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chipset {
    Q35,
    Piix,
    Other,
}

struct Bus {
    root: PciRoot<AnyCam>,
    /// The same configuration access as `root`'s, for what `PciRoot` does
    /// not expose. Used only under `BUS`.
    cam: AnyCam,
    devices: Vec<PciDevice>,
    window: Range<u64>,
    chipset: Chipset,
}

static BUS: IrqSpinLock<Option<Bus>> = IrqSpinLock::new(None);

const HOST_BRIDGE: DeviceFunction = DeviceFunction {
    bus: 0,
    device: 0,
    function: 0,
};
const PIIX_ISA: DeviceFunction = DeviceFunction {
    bus: 0,
    device: 1,
    function: 0,
};

fn port_cams() -> (AnyCam, AnyCam) {
    // SAFETY: the kernel has no other user of ports 0xCF8-0xCFF, and both
    // values live in `BUS`, whose lock serialises every access.
    unsafe { (AnyCam::Port(PortCam::new()), AnyCam::Port(PortCam::new())) }
}

/// A bus without devices over port I/O: what `with_root` uses before (or
/// without) `init`.
fn port_bus() -> Bus {
    let (cam, alias) = port_cams();
    Bus {
        root: PciRoot::new(cam),
        cam: alias,
        devices: Vec::new(),
        window: 0..0,
        chipset: Chipset::Other,
    }
}

/// ECAM when ACPI describes a usable window for segment 0 from bus 0,
/// else port I/O.
fn choose_cams(platform: &Platform) -> (AnyCam, AnyCam) {
    let Some(window) = platform
        .ecam
        .iter()
        .find(|window| window.segment == 0 && window.first_bus == 0)
    else {
        return port_cams();
    };
    let size = u64::from(Cam::Ecam.size());
    let fits = window.base % (1 << 20) == 0
        && window.base >= crate::mm::low_ram_end()
        && window
            .base
            .checked_add(size)
            .is_some_and(|end| end <= BOOT_DIRECT_MAP_LIMIT);
    if !fits {
        log::warn!(
            target: "pci",
            "ECAM window at {:#x} is outside the uncached direct map below 4 GiB; using port I/O",
            window.base
        );
        return port_cams();
    }
    // The direct map covers 0..4 GiB for good, mapping non-RAM holes (this
    // window lies above low RAM) uncached.
    // SAFETY: so the 256 MiB from `base` are device memory valid for 'static;
    // the alias is used only under `BUS`, like the original, never at once.
    let (cam, alias) = unsafe {
        let cam = MmioCam::new(phys_to_virt(window.base) as *mut u8, Cam::Ecam);
        let alias = cam.unsafe_clone();
        (AnyCam::Ecam(cam), AnyCam::Ecam(alias))
    };
    if cam.read_word(HOST_BRIDGE, 0) == u32::MAX {
        log::warn!(target: "pci", "ECAM at {:#x} answers nothing; using port I/O", window.base);
        return port_cams();
    }
    (cam, alias)
}

/// The BAR window: the 32-bit hole above low RAM, minus ECAM.
fn bar_window(platform: &Platform) -> BarWindow {
    let start = crate::mm::low_ram_end()
        .next_multiple_of(WINDOW_ALIGN)
        .max(HOLE_FLOOR);
    let mut window = BarWindow::new(start.min(HOLE_END), HOLE_END);
    for ecam in &platform.ecam {
        let buses = u64::from(ecam.last_bus.saturating_sub(ecam.first_bus)) + 1;
        window.reserve(ecam.base..ecam.base.saturating_add(buses << 20));
    }
    window
}

fn pin_name(pin: u8) -> char {
    match pin {
        1..=4 => (b'A' + pin - 1) as char,
        _ => '-',
    }
}

fn describe_bars(bars: &[Option<MemoryBar>; 6]) -> alloc::string::String {
    use core::fmt::Write;
    let mut text = alloc::string::String::new();
    for bar in bars.iter().flatten() {
        let _ = write!(
            text,
            " bar{}={:#x}+{:#x}{}{}",
            bar.index,
            bar.address,
            bar.size,
            if bar.width64 { "/64" } else { "" },
            if bar.assigned { "*" } else { "" }
        );
    }
    text
}

/// Enumerates bus 0, places BARs, logs one line per function. Call once,
/// at boot, after ACPI and the APICs are set up.
pub fn init(platform: &Platform) {
    let (cam, alias) = choose_cams(platform);
    let mechanism = cam.name();
    let mut bus = Bus {
        root: PciRoot::new(cam),
        cam: alias,
        devices: Vec::new(),
        window: 0..0,
        chipset: Chipset::Other,
    };
    let found: Vec<_> = bus.root.enumerate_bus(0).collect();
    bus.chipset = match found.first() {
        Some((function, info)) if *function == HOST_BRIDGE && info.vendor_id == 0x8086 => {
            match info.device_id {
                0x29c0 => Chipset::Q35,
                0x1237 => Chipset::Piix,
                _ => Chipset::Other,
            }
        }
        _ => Chipset::Other,
    };
    let mut window = bar_window(platform);

    // First pass: what the firmware placed stays, unless the direct map
    // cannot reach it; either way the window keeps clear of it.
    let mut placeable = Vec::new();
    for (function, info) in &found {
        let host_bridge = info.class == 0x06 && info.subclass == 0x00;
        if info.header_type != HeaderType::Standard || host_bridge {
            continue;
        }
        match hw::clear_bars_above(&mut bus.root, *function, BOOT_DIRECT_MAP_LIMIT) {
            Ok(0) => {}
            Ok(moved) => {
                log::info!(target: "pci", "pci {function}: {moved} BAR(s) above 4 GiB will be moved")
            }
            Err(error) => {
                log::warn!(target: "pci", "pci {function}: unusable BARs ({error:?}); skipped");
                continue;
            }
        }
        match hw::memory_bars(&mut bus.root, *function) {
            Ok(bars) => {
                for bar in bars.iter().flatten().filter(|bar| bar.address != 0) {
                    if !window.reserve(bar.address..bar.address.saturating_add(bar.size)) {
                        log::warn!(target: "pci", "pci {function}: too many firmware BARs to avoid");
                    }
                }
                placeable.push(*function);
            }
            Err(error) => {
                log::warn!(target: "pci", "pci {function}: unusable BARs ({error:?}); skipped")
            }
        }
    }
    if bus.chipset == Chipset::Piix {
        route_piix_links(&mut bus.cam);
    }

    // Second pass: place the rest, enable decoding, log each function.
    for (function, info) in &found {
        let (line, pin) = hw::interrupt_line_pin(&bus.cam, *function);
        let bars = if placeable.contains(function) {
            match hw::assign_unset_bars(&mut bus.root, *function, &mut window) {
                Ok(bars) => describe_bars(&bars),
                Err(error) => {
                    log::warn!(
                        target: "pci",
                        "pci {function}: cannot place BARs in {:#x?} ({error:?}); device disabled",
                        window.range()
                    );
                    alloc::string::String::from(" (BARs not placed)")
                }
            }
        } else {
            alloc::string::String::new()
        };
        let device = PciDevice {
            function: *function,
            vendor_id: info.vendor_id,
            device_id: info.device_id,
            class: info.class,
            subclass: info.subclass,
            interrupt_pin: pin,
            interrupt_line: line,
        };
        bus.devices.push(device);
        let gsi = intx_gsi_of(&bus, platform, &device);
        log::info!(
            target: "pci",
            "pci {} {:04x}:{:04x} class {:02x}.{:02x} pin {} gsi {}{}",
            function,
            info.vendor_id,
            info.device_id,
            info.class,
            info.subclass,
            pin_name(pin),
            gsi.map_or(alloc::string::String::from("-"), |gsi| alloc::format!("{gsi}")),
            bars
        );
    }
    bus.window = window.range();
    // Every BAR has been sized: from now on probes are answered without
    // turning decoding off (see `spindle_drivers::pci::BarSizing`).
    hw::freeze_bar_sizes();
    log::info!(
        target: "pci",
        "pci: {} function(s) on bus 0 via {}, {:?} chipset, BAR window {:#x}..{:#x} ({:#x} used)",
        bus.devices.len(),
        mechanism,
        bus.chipset,
        window.range().start,
        window.range().end,
        window.used().end - window.used().start
    );
    *BUS.lock() = Some(bus);
}

/// Points every PIIX PIRQ link the firmware left unrouted at its usual ISA
/// IRQ, so INTx reaches the I/O APIC (qboot and SeaBIOS route all four
/// already; this covers firmware that does not).
fn route_piix_links(cam: &mut AnyCam) {
    let routes = cam.read_word(PIIX_ISA, PIIX_PIRQ_ROUTE);
    let mut updated = routes;
    for (link, default) in PIIX_DEFAULT_IRQS.iter().enumerate() {
        let shift = link * 8;
        let route = (routes >> shift) as u8;
        if route & 0x80 != 0 || route & 0x0f < 3 {
            updated = (updated & !(0xff << shift)) | u32::from(*default) << shift;
        }
    }
    if updated != routes {
        cam.write_word(PIIX_ISA, PIIX_PIRQ_ROUTE, updated);
    }
    log::debug!(target: "pci", "PIIX PIRQ routes {routes:#010x} -> {updated:#010x}");
}

/// The GSI of a bus-0 device's INTx pin; see the module comment.
fn intx_gsi_of(bus: &Bus, platform: &Platform, device: &PciDevice) -> Option<u32> {
    let pin = device.interrupt_pin;
    if !(1..=4).contains(&pin) {
        return None;
    }
    let slot = device.function.device;
    let pin0 = u32::from(pin - 1);
    match bus.chipset {
        Chipset::Q35 if device.function.bus == 0 => Some(match slot {
            0x00..=0x17 => 20 + (u32::from(slot) + pin0) % 4,
            0x18 | 0x1e => 20 + pin0,
            _ => 16 + pin0,
        }),
        Chipset::Piix if device.function.bus == 0 => {
            // QEMU's `pci_slot_get_pirq`: (pin + slot - 1) mod 4.
            let link = (u32::from(slot) + 3 + pin0) % 4;
            let route = (bus.cam.read_word(PIIX_ISA, PIIX_PIRQ_ROUTE) >> (link * 8)) as u8;
            (route & 0x80 == 0 && route & 0x0f >= 3).then(|| isa_to_gsi(platform, route & 0x0f))
        }
        _ => match device.interrupt_line {
            0 | 0xff => None,
            line => Some(isa_to_gsi(platform, line)),
        },
    }
}

fn isa_to_gsi(platform: &Platform, irq: u8) -> u32 {
    platform
        .overrides
        .iter()
        .find(|entry| entry.isa_irq == irq)
        .map_or(u32::from(irq), |entry| entry.gsi)
}

/// Every function found at boot.
pub fn devices() -> Vec<PciDevice> {
    BUS.lock()
        .as_ref()
        .map(|bus| bus.devices.clone())
        .unwrap_or_default()
}

/// The window BARs were placed in (empty before `init`).
pub fn bar_window_range() -> Range<u64> {
    BUS.lock().as_ref().map_or(0..0, |bus| bus.window.clone())
}

/// Runs `f` with the PCI root, under the bus lock (interrupts off: keep
/// it short, never sleep in `f`). Before `init`, a port I/O root.
pub fn with_root<R>(f: impl FnOnce(&mut PciRoot<AnyCam>) -> R) -> R {
    let mut guard = BUS.lock();
    let bus = guard.get_or_insert_with(port_bus);
    f(&mut bus.root)
}

/// Reads the configuration word at `offset` (rounded down to 4) of
/// `function`.
pub fn read_config(function: DeviceFunction, offset: u8) -> u32 {
    let mut guard = BUS.lock();
    let bus = guard.get_or_insert_with(port_bus);
    bus.cam.read_word(function, offset & !3)
}

/// The GSI a bus-0 function's INTx pin reaches, if it has one.
pub fn intx_gsi(function: DeviceFunction) -> Option<u32> {
    let platform = crate::platform::get()?;
    let guard = BUS.lock();
    let bus = guard.as_ref()?;
    let device = bus
        .devices
        .iter()
        .find(|device| device.function == function)?;
    intx_gsi_of(bus, platform, device)
}

/// The MSI-X table of `function` as a pointer into the direct map, after
/// checking it lies inside its BAR, in the uncached hole below 4 GiB.
fn msix_table(
    bus: &mut Bus,
    function: DeviceFunction,
) -> Result<(hw::MsixCapability, *mut u32), Errno> {
    // An absent function reads as all ones, which looks like a capability list.
    if !bus.devices.iter().any(|device| device.function == function) {
        return Err(Errno::EINVAL);
    }
    let capability = hw::find_msix(&bus.root, &bus.cam, function).ok_or(Errno::EINVAL)?;
    let bar = bus
        .root
        .bar_info(function, capability.table_bar)
        .ok()
        .flatten()
        .and_then(|bar| bar.memory_address_size())
        .filter(|(address, _)| *address != 0)
        .ok_or(Errno::EINVAL)?;
    let (base, size) = bar;
    let table_bytes = u64::from(capability.entries) * 16;
    let start = base
        .checked_add(u64::from(capability.table_offset))
        .ok_or(Errno::EINVAL)?;
    let end = start.checked_add(table_bytes).ok_or(Errno::EINVAL)?;
    let bar_end = base.checked_add(size).ok_or(Errno::EINVAL)?;
    if end > bar_end || end > BOOT_DIRECT_MAP_LIMIT || start < crate::mm::low_ram_end() {
        return Err(Errno::EINVAL);
    }
    Ok((capability, phys_to_virt(start) as *mut u32))
}

/// Programs MSI-X entries 0..n-1 of `function` with `vectors` (device
/// vectors from `irq::register`) for the boot CPU, enables MSI-X and
/// unmasks. `EINVAL` when the function has no usable MSI-X table, has
/// fewer entries, or a vector is not a device vector.
pub fn enable_msix(function: DeviceFunction, vectors: &[u8]) -> Result<(), Errno> {
    if vectors.is_empty()
        || vectors
            .iter()
            .any(|vector| !irq::is_device_vector(u64::from(*vector)))
    {
        return Err(Errno::EINVAL);
    }
    let mut guard = BUS.lock();
    let bus = guard.get_or_insert_with(port_bus);
    let (capability, table) = msix_table(bus, function)?;
    if vectors.len() > usize::from(capability.entries) {
        return Err(Errno::EINVAL);
    }
    // Function-masked while the entries change.
    hw::set_msix_control(&mut bus.cam, function, &capability, true, true);
    for (index, vector) in vectors.iter().enumerate() {
        let (address, data) = irq::msi_address_data(*vector);
        // SAFETY: `msix_table` checked the table lies inside the function's
        // BAR in the uncached direct map and has more than `index` entries;
        // `BUS` keeps other writers out.
        unsafe { hw::write_msix_entry(table, index as u16, address, data) };
    }
    hw::set_msix_control(&mut bus.cam, function, &capability, true, false);
    Ok(())
}

/// Masks every MSI-X entry of `function` and turns MSI-X off (a no-op
/// for a function without MSI-X).
pub fn disable_msix(function: DeviceFunction) {
    let mut guard = BUS.lock();
    let bus = guard.get_or_insert_with(port_bus);
    let Ok((capability, table)) = msix_table(bus, function) else {
        return;
    };
    hw::set_msix_control(&mut bus.cam, function, &capability, true, true);
    for index in 0..capability.entries {
        // SAFETY: as in `enable_msix`.
        unsafe { hw::mask_msix_entry(table, index, true) };
    }
    hw::set_msix_control(&mut bus.cam, function, &capability, false, false);
}

/// Whether MSI-X of `function` is (enabled, function-masked).
pub fn msix_state(function: DeviceFunction) -> Option<(bool, bool)> {
    let guard = BUS.lock();
    let bus = guard.as_ref()?;
    bus.devices
        .iter()
        .find(|device| device.function == function)?;
    let capability = hw::find_msix(&bus.root, &bus.cam, function)?;
    Some(hw::msix_control(&bus.cam, function, &capability))
}

crate::ktests! {
    fn host_bridge_is_found() {
        let devices = devices();
        assert!(
            devices.iter().any(|device| device.function == HOST_BRIDGE && device.class == 0x06),
            "{devices:?}"
        );
        // The root answers for it too.
        let vendor = with_root(|root| root.enumerate_bus(0).next().map(|(_, info)| info.vendor_id));
        assert_eq!(vendor, Some(0x8086));
    }

    fn virtio_net_bars_msix_and_vector() {
        let Some(nic) = devices().into_iter().find(|device| {
            device.vendor_id == 0x1af4 && matches!(device.device_id, 0x1041 | 0x1000)
        }) else {
            log::info!("no virtio-net function (boot with --net user); BAR checks skipped");
            return;
        };
        let window = bar_window_range();
        assert!(!window.is_empty());
        let bars = with_root(|root| hw::memory_bars(root, nic.function)).expect("bars");
        let mut memory = 0;
        for bar in bars.iter().flatten() {
            memory += 1;
            assert_ne!(bar.address, 0, "BAR {} unset", bar.index);
            assert!(
                window.start <= bar.address && bar.address + bar.size <= window.end,
                "BAR {} at {:#x}+{:#x} outside {:#x?}",
                bar.index, bar.address, bar.size, window
            );
            assert_eq!(bar.address % bar.size.max(4096), 0, "BAR {} misaligned", bar.index);
            // Sized again here, and answered from what boot learnt.
            assert!(hw::bar_size_learnt(nic.function, bar.index), "BAR {} not learnt", bar.index);
        }
        assert!(memory > 0, "virtio-net has a memory BAR");
        let (_, command) = with_root(|root| root.get_status_command(nic.function));
        use virtio_drivers::transport::pci::bus::Command;
        assert!(command.contains(Command::MEMORY_SPACE | Command::BUS_MASTER));
        assert!(nic.interrupt_pin != 0);
        assert!(intx_gsi(nic.function).is_some(), "virtio-net has an INTx GSI");

        use core::sync::atomic::{AtomicUsize, Ordering};
        static SEEN: AtomicUsize = AtomicUsize::new(0);
        fn handler(data: usize) {
            SEEN.fetch_add(data, Ordering::SeqCst);
        }
        let vector = irq::register(handler, 1).expect("a device vector");
        enable_msix(nic.function, &[vector]).expect("MSI-X on virtio-net");
        assert_eq!(msix_state(nic.function), Some((true, false)));
        assert_eq!(enable_msix(nic.function, &[0x30]), Err(Errno::EINVAL));
        let before = irq::count(vector);
        crate::arch::apic::send_ipi(crate::cpu::current_index(), vector).expect("self IPI");
        assert!(crate::ktest::wait_until(1000, || irq::count(vector) > before));
        assert!(SEEN.load(Ordering::SeqCst) >= 1);
        disable_msix(nic.function);
        assert_eq!(msix_state(nic.function), Some((false, false)));
        irq::unregister(vector);
    }

    fn functions_without_msix_are_refused() {
        assert_eq!(enable_msix(HOST_BRIDGE, &[irq::FIRST_VECTOR]), Err(Errno::EINVAL));
        disable_msix(HOST_BRIDGE);
        let absent = DeviceFunction { bus: 0, device: 31, function: 7 };
        assert_eq!(intx_gsi(absent), None);
        assert_eq!(enable_msix(absent, &[irq::FIRST_VECTOR]), Err(Errno::EINVAL));
    }
}
