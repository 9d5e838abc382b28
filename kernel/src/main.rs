//! Spindle: a bootable x86_64 unikernel.
//!
//! Boot sequence (boot CPU, `kmain`, on the boot stack):
//! 1. time zero, console, the TSC clock (calibrated against the PIT), an IDT
//!    without IST (so early faults are reported);
//! 2. the PVH start info (memory map, command line, RSDP), then logging;
//! 3. memory: heap, frames, the kernel's page tables;
//! 4. GDT and TSS with guarded IST stacks, the IDT with IST;
//! 5. a switch to a guarded kernel stack (`kmain_on_kernel_stack`);
//! 6. ACPI, the APICs, the PCI bus (enumeration, BARs), APIC timer
//!    calibration, the periodic tick, interrupts on;
//! 7. the ready line, then the in-kernel tests (`ktest=`) or idle.
//!
//! Subsystems (each opens with its own theory statement): `arch` (entry,
//! descriptor tables, traps, APICs, PIT), `mm` (frames, heap, page tables,
//! stacks), `time`, `platform` (ACPI), `dev` (PCI), `console`, `cmdline`, `pvh`,
//! `ktest`, `power`, `panic`, `sync`.

#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod cmdline;
mod compat;
mod console;
mod cpu;
mod ctl;
mod dev;
mod errno;
mod fd;
mod kbench;
mod ktest;
mod kthread;
mod mm;
mod net;
mod panic;
mod platform;
mod power;
mod proc;
mod pvh;
mod sched;
mod signal;
mod sync;
mod syscall;
mod time;
mod uproc;

use core::sync::atomic::{AtomicU64, Ordering};

use log::LevelFilter;

/// The boot CPU's kernel stack: 64 KiB.
const BOOT_KERNEL_STACK_PAGES: usize = 16;

/// The RSDP address from the start info (0: none given), for the second
/// half of the boot, which runs on another stack.
static RSDP_FROM_START_INFO: AtomicU64 = AtomicU64::new(0);

/// The boot modules (the guest image), kept from the start info.
static BOOT_MODULES: sync::IrqSpinLock<alloc::vec::Vec<core::ops::Range<u64>>> =
    sync::IrqSpinLock::new(alloc::vec::Vec::new());

/// The boot CPU's kernel stack, handed from `kmain` to the scheduler.
static MAIN_STACK: sync::IrqSpinLock<Option<mm::stack::KernelStack>> = sync::IrqSpinLock::new(None);

fn log_level(value: Option<&str>) -> Result<LevelFilter, &str> {
    match value {
        None => Ok(LevelFilter::Info),
        Some(text) => text.parse().map_err(|_| text),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn kmain(start_info_physical: u64) -> ! {
    time::mark_boot();
    console::init();
    // Per-CPU block and GS base, SSE on the boot CPU.
    cpu::init_boot_cpu();
    arch::cpu_features::enable_sse();
    time::calibrate_tsc();
    time::init_wall_clock();
    arch::trap::load_idt(false);

    let boot = match pvh::BootInfo::read(start_info_physical) {
        Ok(boot) => boot,
        Err(error) => panic!("unusable PVH start info at {start_info_physical:#x}: {error}"),
    };
    let command_line = cmdline::get();
    let level = log_level(command_line.value("loglevel"));
    console::init_logger(level.unwrap_or(LevelFilter::Info));
    log::info!(
        target: "spindle",
        "Spindle {} booting (PVH start info v{}); command line: {:?}",
        env!("CARGO_PKG_VERSION"),
        boot.start_info_version,
        command_line.as_str()
    );
    if let Err(bad) = level {
        log::warn!(
            "loglevel={bad:?} is not one of off, error, warn, info, debug, trace; using info"
        );
    }
    for region in boot.memory_map() {
        log::debug!(
            "memory map: {:#012x}..{:#012x} {:?}",
            region.range.start,
            region.range.end,
            region.kind
        );
    }

    let memory = mm::init(&boot);
    log::info!(
        target: "mem",
        "{} MiB RAM, {} MiB usable, heap {} MiB, {} free frames",
        memory.ram_bytes >> 20,
        memory.usable_bytes >> 20,
        memory.heap_bytes >> 20,
        mm::frame::free_count()
    );
    arch::gdt::init();
    arch::trap::load_idt(true);

    RSDP_FROM_START_INFO.store(boot.rsdp.unwrap_or(0), Ordering::Relaxed);
    *BOOT_MODULES.lock() = boot.modules().to_vec();
    let smap = arch::syscall::init_this_cpu();
    mm::usercopy::set_smap_enabled(smap);
    let stack = mm::stack::KernelStack::new(BOOT_KERNEL_STACK_PAGES)
        .expect("memory for the boot kernel stack");
    let top = stack.top();
    // The boot flow continues on this stack as proc0's LWP `main`, which
    // owns it from then on.
    *MAIN_STACK.lock() = Some(stack);
    arch::switch_stack_and_call(top, kmain_on_kernel_stack)
}

extern "C" fn kmain_on_kernel_stack() -> ! {
    let rsdp = match RSDP_FROM_START_INFO.load(Ordering::Relaxed) {
        0 => None,
        address => Some(address),
    };
    let platform = match platform::init(rsdp) {
        Ok(platform) => platform,
        Err(error) => panic!("cannot read the ACPI tables: {error}"),
    };
    log::info!(
        target: "acpi",
        "{} CPUs (APIC ids {:?}), local APIC at {:#x}, {} I/O APIC(s), {} interrupt override(s), {}",
        platform.cpus.len(),
        platform.cpus.iter().map(|cpu| cpu.apic_id).collect::<alloc::vec::Vec<_>>(),
        platform.local_apic_address,
        platform.io_apics.len(),
        platform.overrides.len(),
        match platform.ecam.first() {
            Some(window) => alloc::format!(
                "PCIe ECAM at {:#x} (segment {}, buses {}-{})",
                window.base, window.segment, window.first_bus, window.last_bus
            ),
            None => alloc::string::String::from("no PCIe ECAM (port I/O configuration)"),
        }
    );

    log::debug!(
        "ACPI RSDP {}",
        match platform.rsdp {
            0 => alloc::string::String::from("found by scanning the BIOS area"),
            address => alloc::format!("at {address:#x} (from the start info)"),
        }
    );
    for entry in &platform.overrides {
        log::debug!(
            "ISA IRQ {} -> GSI {} (flags {:#x})",
            entry.isa_irq,
            entry.gsi,
            entry.flags
        );
    }
    arch::apic::disable_legacy_pics();
    arch::apic::init_local(platform.local_apic_address);
    for io_apic in &platform.io_apics {
        let io_apic = arch::apic::add_io_apic(io_apic.id, io_apic.address, io_apic.gsi_base);
        log::debug!(
            "I/O APIC {} at GSI {}: {} inputs, all masked",
            io_apic.id,
            io_apic.gsi_base,
            io_apic.inputs
        );
    }
    dev::pci::init(platform);
    net::probe();

    let apic_timer_hz = time::calibrate_apic_timer();
    let tsc_hz = time::tsc_hz();
    let hz = cmdline::get()
        .value("hz")
        .and_then(|hz| hz.parse().ok())
        .unwrap_or(time::DEFAULT_TICK_HZ);
    time::start_tick(hz);
    let main_stack = MAIN_STACK.lock().take().expect("kmain left the boot stack");
    sched::init_boot_cpu(main_stack);
    x86_64::instructions::interrupts::enable();
    log::info!(
        target: "time",
        "timer calibrated: TSC {}.{:03} MHz (against the PIT), APIC timer {}.{:03} MHz (divided by {}, against the TSC), tick {} Hz",
        tsc_hz / 1_000_000,
        tsc_hz / 1_000 % 1_000,
        apic_timer_hz / 1_000_000,
        apic_timer_hz / 1_000 % 1_000,
        arch::apic::TIMER_DIVISOR,
        time::tick_hz()
    );

    // Every other CPU enters the scheduler as its idle LWP.
    arch::smp::start_application_processors(sched::enter_application_processor);
    compat::sysinit::run_all();
    ctl::start();

    log::info!(target: "spindle", "ready (boot took {} us)", time::now_ns() / 1_000);

    if let Some(selection) = cmdline::get().value("ktest") {
        ktest::run(selection);
    }
    if cmdline::get().value("kbench").is_some() {
        kbench::run();
    }
    let modules = BOOT_MODULES.lock().clone();
    if uproc::start(&modules) {
        // The supervisor runs the process and powers off when it is done;
        // the boot flow's work is over.
        kthread::exit(0);
    }
    match cmdline::get().value("crash") {
        None => {}
        Some("panic") => panic!("deliberate panic (crash=panic)"),
        Some("exception") => arch::trap::raise_unexpected_invalid_opcode(),
        Some("stack-overflow") => {
            let depth = overflow_stack(0);
            panic!("recursed {depth} levels without hitting the guard page");
        }
        Some("hang") => {
            log::warn!("crash=hang: spinning forever with interrupts on");
            loop {
                core::hint::spin_loop();
            }
        }
        Some(other) => {
            log::warn!(
                "crash={other:?} is not one of panic, exception, stack-overflow, hang; ignored"
            )
        }
    }
    log::info!(target: "spindle", "no guest image (-initrd): idling");
    // The CPUs' idle LWPs take over.
    kthread::exit(0)
}

/// Recurses until the kernel stack's guard page stops it (`crash=stack-overflow`).
fn overflow_stack(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 64]);
    if depth == u64::MAX {
        return 0;
    }
    overflow_stack(depth + 1) + frame[depth as usize % 64]
}
