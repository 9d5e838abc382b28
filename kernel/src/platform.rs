//! The platform as ACPI describes it: CPUs, interrupt controllers, PCIe.
//!
//! Owns `PLATFORM`, filled once at boot from the ACPI tables (through the
//! `acpi` crate, starting from the RSDP the PVH start info names, or found
//! by scanning the BIOS area when it names none) and read-only afterwards:
//! - MADT: local APIC address, each CPU's APIC id, the I/O APICs and the
//!   ISA interrupt source overrides;
//! - MCFG: PCIe ECAM windows, when present (`q35` has one; `pc` does not).

use alloc::vec::Vec;
use core::ptr::NonNull;

use acpi::madt::{Madt, MadtEntry};
use acpi::mcfg::Mcfg;
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use spin::Once;

use crate::mm::phys_to_virt;

/// ACPI tables are reached through the direct map; nothing to unmap.
#[derive(Debug, Clone, Copy)]
struct DirectMap;

impl AcpiHandler for DirectMap {
    unsafe fn map_physical_region<T>(
        &self,
        physical: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let virtual_address = phys_to_virt(physical as u64) as *mut T;
        // SAFETY: the direct map covers all physical memory below 4 GiB,
        // where firmware keeps the ACPI tables, and the pointer is non-null.
        unsafe {
            PhysicalMapping::new(
                physical,
                NonNull::new(virtual_address).expect("direct-map addresses are non-null"),
                size,
                size,
                *self,
            )
        }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    pub apic_id: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct IoApicInfo {
    pub id: u8,
    pub address: u64,
    pub gsi_base: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct InterruptOverride {
    pub isa_irq: u8,
    pub gsi: u32,
    pub flags: u16,
}

#[derive(Debug, Clone, Copy)]
pub struct EcamWindow {
    pub base: u64,
    pub segment: u16,
    pub first_bus: u8,
    pub last_bus: u8,
}

#[derive(Debug)]
pub struct Platform {
    pub rsdp: u64,
    pub local_apic_address: u64,
    /// Enabled (or online-capable) CPUs, boot CPU included.
    pub cpus: Vec<Cpu>,
    pub io_apics: Vec<IoApicInfo>,
    pub overrides: Vec<InterruptOverride>,
    pub ecam: Vec<EcamWindow>,
}

static PLATFORM: Once<Platform> = Once::new();

/// Why ACPI could not describe the platform.
#[derive(Debug)]
pub enum PlatformError {
    Tables(acpi::AcpiError),
    NoMadt(acpi::AcpiError),
}

impl core::fmt::Display for PlatformError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PlatformError::Tables(error) => write!(f, "no valid RSDP/RSDT/XSDT: {error:?}"),
            PlatformError::NoMadt(error) => write!(f, "no MADT: {error:?}"),
        }
    }
}

const MADT_CPU_ENABLED: u32 = 1 << 0;
const MADT_CPU_ONLINE_CAPABLE: u32 = 1 << 1;

/// A MADT processor entry the kernel may start: enabled or online-capable.
fn usable_cpu(flags: u32) -> bool {
    flags & (MADT_CPU_ENABLED | MADT_CPU_ONLINE_CAPABLE) != 0
}

/// Reads the ACPI tables. `rsdp_hint` is the address from the PVH start
/// info, if it gave one.
pub fn init(rsdp_hint: Option<u64>) -> Result<&'static Platform, PlatformError> {
    // SAFETY: the RSDP address comes from the boot protocol (or the BIOS
    // area scan); the crate validates signatures and checksums before use.
    let tables = unsafe {
        match rsdp_hint {
            Some(address) => AcpiTables::from_rsdp(DirectMap, address as usize),
            None => AcpiTables::search_for_rsdp_bios(DirectMap),
        }
    }
    .map_err(PlatformError::Tables)?;

    let madt = tables.find_table::<Madt>().map_err(PlatformError::NoMadt)?;
    let mut platform = Platform {
        rsdp: rsdp_hint.unwrap_or(0),
        local_apic_address: u64::from(madt.get().local_apic_address),
        cpus: Vec::new(),
        io_apics: Vec::new(),
        overrides: Vec::new(),
        ecam: Vec::new(),
    };
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::LocalApic(cpu) if usable_cpu(cpu.flags) => {
                platform.cpus.push(Cpu {
                    apic_id: u32::from(cpu.apic_id),
                });
            }
            MadtEntry::LocalX2Apic(cpu) if usable_cpu(cpu.flags) => {
                platform.cpus.push(Cpu {
                    apic_id: cpu.x2apic_id,
                });
            }
            MadtEntry::IoApic(io_apic) => platform.io_apics.push(IoApicInfo {
                id: io_apic.io_apic_id,
                address: u64::from(io_apic.io_apic_address),
                gsi_base: io_apic.global_system_interrupt_base,
            }),
            MadtEntry::InterruptSourceOverride(entry) => {
                platform.overrides.push(InterruptOverride {
                    isa_irq: entry.irq,
                    gsi: entry.global_system_interrupt,
                    flags: entry.flags,
                })
            }
            MadtEntry::LocalApicAddressOverride(entry) => {
                platform.local_apic_address = entry.local_apic_address;
            }
            _ => {}
        }
    }
    if let Ok(mcfg) = tables.find_table::<Mcfg>() {
        for window in mcfg.get().entries() {
            platform.ecam.push(EcamWindow {
                base: window.base_address,
                segment: window.pci_segment_group,
                first_bus: window.bus_number_start,
                last_bus: window.bus_number_end,
            });
        }
    }
    Ok(PLATFORM.call_once(|| platform))
}

/// The platform, once `init` has run.
pub fn get() -> Option<&'static Platform> {
    PLATFORM.get()
}

crate::ktests! {
    fn cpu_count_matches_the_machine() {
        let platform = get().expect("ACPI was read at boot");
        let expected: usize = crate::cmdline::get()
            .value("test.cpus")
            .expect("the harness passes test.cpus=N (QEMU's -smp)")
            .parse()
            .expect("test.cpus is a number");
        assert_eq!(platform.cpus.len(), expected, "MADT CPUs: {:?}", platform.cpus);
    }

    fn boot_cpu_is_listed_and_apic_ids_are_unique() {
        let platform = get().expect("ACPI was read at boot");
        let boot_apic = crate::arch::apic::local_id();
        assert!(platform.cpus.iter().any(|cpu| cpu.apic_id == boot_apic), "boot APIC {boot_apic} missing");
        let mut ids: Vec<u32> = platform.cpus.iter().map(|cpu| cpu.apic_id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), platform.cpus.len(), "duplicate APIC ids");
    }

    fn io_apic_and_timer_override_are_present() {
        let platform = get().expect("ACPI was read at boot");
        assert!(!platform.io_apics.is_empty(), "no I/O APIC in the MADT");
        assert!(crate::arch::apic::io_apic_inputs() >= 24);
        // QEMU routes the PIT's IRQ 0 to GSI 2 on both pc and q35.
        assert!(platform.overrides.iter().any(|o| o.isa_irq == 0 && o.gsi == 2), "{:?}", platform.overrides);
    }

    fn ecam_window_is_sane_when_present() {
        let platform = get().expect("ACPI was read at boot");
        for window in &platform.ecam {
            assert_eq!(window.base % (1 << 20), 0, "ECAM base {:#x} not 1 MiB aligned", window.base);
            assert!(window.first_bus <= window.last_bus);
        }
    }
}
