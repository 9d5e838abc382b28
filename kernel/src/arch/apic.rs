//! The local APIC (xAPIC, memory-mapped), the I/O APICs and the legacy PICs.
//!
//! Owns: every CPU's local APIC registers (one address, set once at boot,
//! then read-only; each CPU reaches its own APIC there, so no lock), the
//! interrupt command register (ICR) through which IPIs go out (its two
//! halves are written with interrupts off, so a handler on the same CPU
//! cannot interleave its own IPI), the I/O APIC table
//! (`IO_APICS`, a spin lock held only while one redirection entry is
//! written), and the 8259 PICs, which are remapped away from the exception
//! vectors and masked for good. Register windows are reached through the
//! direct map, which maps non-RAM holes uncached.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;
use x86_64::registers::model_specific::Msr;

use crate::mm::phys_to_virt;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;

const REG_ID: u64 = 0x20;
const REG_TASK_PRIORITY: u64 = 0x80;
const REG_EOI: u64 = 0xb0;
const REG_SPURIOUS: u64 = 0xf0;
const REG_ICR_LOW: u64 = 0x300;
const REG_ICR_HIGH: u64 = 0x310;
const REG_LVT_TIMER: u64 = 0x320;
const REG_LVT_LINT0: u64 = 0x350;
const REG_TIMER_INITIAL: u64 = 0x380;
const REG_TIMER_CURRENT: u64 = 0x390;
const REG_TIMER_DIVIDE: u64 = 0x3e0;

const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_TRIGGER_LEVEL: u32 = 1 << 15;
const ICR_DELIVERY_INIT: u32 = 0b101 << 8;
const ICR_DELIVERY_STARTUP: u32 = 0b110 << 8;
const ICR_ALL_BUT_SELF: u32 = 0b11 << 18;
/// Polls of the delivery-status bit before an IPI counts as stuck.
const ICR_POLL_LIMIT: u32 = 1_000_000;

const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
const SPURIOUS_ENABLE: u32 = 1 << 8;
/// Divide configuration 0b0011: divide by 16.
const TIMER_DIVIDE_BY_16: u32 = 0b0011;
pub const TIMER_DIVISOR: u64 = 16;

static LOCAL_APIC: AtomicU64 = AtomicU64::new(0);

fn local_read(register: u64) -> u32 {
    let base = LOCAL_APIC.load(Ordering::Relaxed);
    debug_assert_ne!(base, 0, "local APIC used before init");
    // SAFETY: `base` maps the 4 KiB local APIC register page (uncached, via
    // the direct map) and `register` is one of its 16-byte aligned registers.
    unsafe { core::ptr::read_volatile((base + register) as *const u32) }
}

fn local_write(register: u64, value: u32) {
    let base = LOCAL_APIC.load(Ordering::Relaxed);
    debug_assert_ne!(base, 0, "local APIC used before init");
    // SAFETY: as in `local_read`.
    unsafe { core::ptr::write_volatile((base + register) as *mut u32, value) }
}

/// Remaps the 8259 PICs to vectors 0x20-0x2f and masks every line, so they
/// can neither deliver nor collide with exception vectors.
pub fn disable_legacy_pics() {
    let writes: [(u16, u8); 10] = [
        (0x20, 0x11), // ICW1: init, ICW4 follows
        (0xa0, 0x11),
        (0x21, 0x20), // ICW2: master at 0x20
        (0xa1, 0x28), // slave at 0x28
        (0x21, 0x04), // ICW3: slave on line 2
        (0xa1, 0x02),
        (0x21, 0x01), // ICW4: 8086 mode
        (0xa1, 0x01),
        (0x21, 0xff), // mask everything
        (0xa1, 0xff),
    ];
    for (port, value) in writes {
        // SAFETY: 0x20/0x21/0xa0/0xa1 are the PICs' command and data ports;
        // this is their documented initialisation sequence.
        unsafe { Port::<u8>::new(port).write(value) };
    }
}

/// Enables the boot CPU's local APIC at physical address `physical`.
pub fn init_local(physical: u64) {
    LOCAL_APIC.store(phys_to_virt(physical), Ordering::Relaxed);
    enable_local();
}

/// Enables the running CPU's local APIC (at the address `init_local`
/// recorded): no task priority, LINT0 and timer masked, spurious vector set.
pub fn enable_local() {
    let mut msr = Msr::new(IA32_APIC_BASE);
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; setting the enable
    // bit keeps the base address the firmware (and ACPI) reported.
    unsafe {
        let value = msr.read();
        msr.write(value | APIC_BASE_ENABLE);
    }
    local_write(REG_TASK_PRIORITY, 0);
    local_write(REG_LVT_LINT0, LVT_MASKED);
    local_write(REG_LVT_TIMER, LVT_MASKED);
    local_write(
        REG_SPURIOUS,
        SPURIOUS_ENABLE | u32::from(super::trap::VECTOR_SPURIOUS),
    );
}

/// The local APIC id of the running CPU.
pub fn local_id() -> u32 {
    local_read(REG_ID) >> 24
}

/// Why an IPI was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpiError {
    /// No online CPU has that index.
    NoSuchCpu,
    /// The local APIC kept the previous IPI pending.
    DeliveryStuck,
}

/// Writes the ICR (destination first, then the command, which sends) with
/// interrupts off and waits until the APIC has accepted the IPI.
fn send_command(destination_apic_id: u32, command: u32) -> Result<(), IpiError> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        wait_for_delivery()?;
        local_write(REG_ICR_HIGH, destination_apic_id << 24);
        local_write(REG_ICR_LOW, command);
        wait_for_delivery()
    })
}

fn wait_for_delivery() -> Result<(), IpiError> {
    for _ in 0..ICR_POLL_LIMIT {
        if local_read(REG_ICR_LOW) & ICR_DELIVERY_PENDING == 0 {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(IpiError::DeliveryStuck)
}

/// Sends a fixed interrupt on `vector` to the online CPU `cpu_index` (which
/// may be the running CPU).
pub fn send_ipi(cpu_index: usize, vector: u8) -> Result<(), IpiError> {
    let apic_id = crate::cpu::apic_id_of(cpu_index).ok_or(IpiError::NoSuchCpu)?;
    send_command(apic_id, u32::from(vector))
}

/// Sends a fixed interrupt on `vector` to every CPU but the running one.
pub fn send_ipi_all_but_self(vector: u8) -> Result<(), IpiError> {
    send_command(0, ICR_ALL_BUT_SELF | u32::from(vector))
}

/// Sends INIT (assert) to the CPU with `apic_id`: it resets and waits for a
/// startup IPI. Also stops a CPU that failed to start.
pub fn send_init(apic_id: u32) -> Result<(), IpiError> {
    send_command(
        apic_id,
        ICR_DELIVERY_INIT | ICR_LEVEL_ASSERT | ICR_TRIGGER_LEVEL,
    )?;
    // The de-assert message older CPUs want; newer ones ignore it.
    send_command(apic_id, ICR_DELIVERY_INIT | ICR_TRIGGER_LEVEL)
}

/// Sends a startup IPI: the CPU with `apic_id` starts in real mode at
/// physical `page_number << 12`.
pub fn send_startup(apic_id: u32, page_number: u8) -> Result<(), IpiError> {
    send_command(
        apic_id,
        ICR_DELIVERY_STARTUP | ICR_LEVEL_ASSERT | u32::from(page_number),
    )
}

/// Signals the end of the interrupt being handled.
pub fn end_of_interrupt() {
    local_write(REG_EOI, 0);
}

/// Starts the timer counting down from its maximum with its interrupt
/// masked; `timer_elapsed_counts` tells how far it got. For calibration.
pub fn timer_start_free_running() {
    local_write(REG_TIMER_DIVIDE, TIMER_DIVIDE_BY_16);
    local_write(REG_LVT_TIMER, LVT_MASKED);
    local_write(REG_TIMER_INITIAL, u32::MAX);
}

/// Counts (of the divided clock) since `timer_start_free_running`.
pub fn timer_elapsed_counts() -> u64 {
    u64::from(u32::MAX - local_read(REG_TIMER_CURRENT))
}

/// Starts the periodic timer: an interrupt on `vector` every `counts`
/// divided-clock counts.
pub fn timer_start_periodic(vector: u8, counts: u32) {
    local_write(REG_TIMER_DIVIDE, TIMER_DIVIDE_BY_16);
    local_write(REG_LVT_TIMER, LVT_TIMER_PERIODIC | u32::from(vector));
    local_write(REG_TIMER_INITIAL, counts.max(1));
}

/// One I/O APIC.
#[derive(Debug, Clone, Copy)]
pub struct IoApic {
    pub id: u8,
    registers: u64,
    pub gsi_base: u32,
    pub inputs: u32,
}

impl IoApic {
    fn read(&self, index: u32) -> u32 {
        // SAFETY: `registers` maps this I/O APIC's register window (index
        // register at +0, data window at +0x10); the IO_APICS lock or boot
        // (single CPU) serialises the index/data pair.
        unsafe {
            core::ptr::write_volatile(self.registers as *mut u32, index);
            core::ptr::read_volatile((self.registers + 0x10) as *const u32)
        }
    }

    fn write(&self, index: u32, value: u32) {
        // SAFETY: as in `read`.
        unsafe {
            core::ptr::write_volatile(self.registers as *mut u32, index);
            core::ptr::write_volatile((self.registers + 0x10) as *mut u32, value);
        }
    }

    fn mask(&self, input: u32) {
        self.write(0x10 + 2 * input, LVT_MASKED);
        self.write(0x11 + 2 * input, 0);
    }
}

static IO_APICS: spin::Mutex<Vec<IoApic>> = spin::Mutex::new(Vec::new());

/// Takes over the I/O APIC at `physical` serving GSIs from `gsi_base`, with
/// every input masked. Returns it for the boot log.
pub fn add_io_apic(id: u8, physical: u64, gsi_base: u32) -> IoApic {
    let mut io_apic = IoApic {
        id,
        registers: phys_to_virt(physical),
        gsi_base,
        inputs: 0,
    };
    io_apic.inputs = ((io_apic.read(1) >> 16) & 0xff) + 1;
    for input in 0..io_apic.inputs {
        io_apic.mask(input);
    }
    IO_APICS.lock().push(io_apic);
    io_apic
}

/// How many I/O APIC inputs are known (all masked until a driver routes one).
pub fn io_apic_inputs() -> u32 {
    IO_APICS.lock().iter().map(|io_apic| io_apic.inputs).sum()
}

/// Redirection-entry bits of an I/O APIC input.
const REDIRECT_ACTIVE_LOW: u32 = 1 << 13;
const REDIRECT_LEVEL: u32 = 1 << 15;

/// Routes `gsi` to `vector` on the CPU with local APIC id `apic_id`
/// (fixed delivery, physical destination) and unmasks it. Level-triggered
/// and active-low with `level_active_low` (PCI INTx), else edge-triggered
/// and active-high (ISA). False when no I/O APIC serves `gsi`.
pub fn route_gsi(gsi: u32, vector: u8, apic_id: u32, level_active_low: bool) -> bool {
    let io_apics = IO_APICS.lock();
    let Some(io_apic) = io_apics
        .iter()
        .find(|io_apic| gsi >= io_apic.gsi_base && gsi - io_apic.gsi_base < io_apic.inputs)
    else {
        return false;
    };
    let input = gsi - io_apic.gsi_base;
    let mut low = u32::from(vector);
    if level_active_low {
        low |= REDIRECT_ACTIVE_LOW | REDIRECT_LEVEL;
    }
    // Destination first, while the input is still masked.
    io_apic.write(0x10 + 2 * input, LVT_MASKED);
    io_apic.write(0x11 + 2 * input, (apic_id & 0xff) << 24);
    io_apic.write(0x10 + 2 * input, low);
    true
}

/// Masks `gsi` again. False when no I/O APIC serves it.
pub fn mask_gsi(gsi: u32) -> bool {
    let io_apics = IO_APICS.lock();
    match io_apics
        .iter()
        .find(|io_apic| gsi >= io_apic.gsi_base && gsi - io_apic.gsi_base < io_apic.inputs)
    {
        Some(io_apic) => {
            io_apic.mask(gsi - io_apic.gsi_base);
            true
        }
        None => false,
    }
}
