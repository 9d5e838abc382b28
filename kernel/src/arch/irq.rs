//! Device interrupt vectors: the IDT range `FIRST_VECTOR..FIRST_VECTOR +
//! VECTOR_COUNT` (0x50..0x70), handed to drivers one vector at a time.
//!
//! Entry: every IDT vector already has a naked stub in `trap` that pushes
//! its number, saves the registers and calls `trap::dispatch`; for this
//! range `dispatch` calls `dispatch` here with the vector number, with
//! interrupts off (interrupt gates). That looks the handler up, runs it,
//! counts the interrupt, sends the local APIC's end of interrupt and then
//! takes the same preemption exit as the timer (`sched::
//! preempt_on_interrupt_exit`).
//!
//! Owns: `SLOTS`, one `IrqSpinLock` per vector holding the handler and its
//! datum. `register` claims a free slot, `unregister` empties it; the
//! dispatcher holds the slot's lock while the handler runs, so once
//! `unregister` returns no CPU is still inside the old handler (never call
//! `unregister` for a vector from its own handler). `COUNTS`: atomics, no
//! lock. Locks taken here are leaves, except that a handler runs under its
//! slot lock and may take other IRQ-safe locks (a doorbell, a wait queue).
//! Handlers must be IRQ-safe: no sleeping, no sleeping locks.
//!
//! Legacy INTx goes through the I/O APICs (`route_gsi` / `unroute_gsi`,
//! `apic::route_gsi` takes the I/O APIC table's lock); MSI and MSI-X
//! messages come from `msi_address_data`. Every route targets the boot
//! CPU.

use core::sync::atomic::{AtomicU64, Ordering};

use super::apic;
use crate::errno::Errno;
use crate::sync::IrqSpinLock;

/// The first device vector (priority class 5, above the timer's 3).
pub const FIRST_VECTOR: u8 = 0x50;
/// How many device vectors there are (0x50..0x70).
pub const VECTOR_COUNT: usize = 32;

#[derive(Clone, Copy)]
struct Slot {
    handler: fn(usize),
    data: usize,
}

static SLOTS: [IrqSpinLock<Option<Slot>>; VECTOR_COUNT] =
    [const { IrqSpinLock::new(None) }; VECTOR_COUNT];
static COUNTS: [AtomicU64; VECTOR_COUNT] = [const { AtomicU64::new(0) }; VECTOR_COUNT];
/// Interrupts on a device vector with no handler.
static UNCLAIMED: AtomicU64 = AtomicU64::new(0);

fn slot_index(vector: u8) -> Option<usize> {
    let index = usize::from(vector.checked_sub(FIRST_VECTOR)?);
    (index < VECTOR_COUNT).then_some(index)
}

/// Whether `vector` is one of the device vectors.
pub fn is_device_vector(vector: u64) -> bool {
    u8::try_from(vector).ok().and_then(slot_index).is_some()
}

/// Claims a free vector and installs `handler`, which will be called with
/// `data` on every interrupt on it (interrupts off, must not sleep).
/// `EAGAIN` when every device vector is taken.
pub fn register(handler: fn(usize), data: usize) -> Result<u8, Errno> {
    for (index, slot) in SLOTS.iter().enumerate() {
        let mut slot = slot.lock();
        if slot.is_none() {
            *slot = Some(Slot { handler, data });
            COUNTS[index].store(0, Ordering::Relaxed);
            return Ok(FIRST_VECTOR + index as u8);
        }
    }
    Err(Errno::EAGAIN)
}

/// Frees `vector` (a no-op for a vector that is not a registered device
/// vector). Waits for a handler running on another CPU to finish. The
/// caller stops the source first (masks the MSI-X entry, unroutes the GSI);
/// a late interrupt is counted as unclaimed.
pub fn unregister(vector: u8) {
    if let Some(index) = slot_index(vector) {
        *SLOTS[index].lock() = None;
    }
}

/// Interrupts received on `vector` since it was registered (0 for a vector
/// outside the range).
pub fn count(vector: u8) -> u64 {
    slot_index(vector).map_or(0, |index| COUNTS[index].load(Ordering::Relaxed))
}

/// Interrupts that arrived on a device vector without a handler.
pub fn unclaimed_count() -> u64 {
    UNCLAIMED.load(Ordering::Relaxed)
}

/// Called by `trap::dispatch` for a device vector, interrupts off.
pub(super) fn dispatch(vector: u8) {
    if let Some(index) = slot_index(vector) {
        let slot = SLOTS[index].lock();
        match *slot {
            Some(Slot { handler, data }) => {
                COUNTS[index].fetch_add(1, Ordering::Relaxed);
                handler(data);
            }
            None => {
                UNCLAIMED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    apic::end_of_interrupt();
    crate::sched::preempt_on_interrupt_exit();
}

/// The boot CPU's local APIC id: every device interrupt goes there.
fn boot_apic_id() -> u32 {
    crate::cpu::apic_id_of(0).unwrap_or_else(apic::local_id)
}

/// Routes I/O APIC input `gsi` to device vector `vector` on the boot CPU
/// and unmasks it: level-triggered active-low with `level_active_low`
/// (PCI INTx), else edge-triggered active-high. `EINVAL` for a vector
/// outside the device range or a GSI no I/O APIC serves.
pub fn route_gsi(gsi: u32, vector: u8, level_active_low: bool) -> Result<(), Errno> {
    if slot_index(vector).is_none() {
        return Err(Errno::EINVAL);
    }
    if apic::route_gsi(gsi, vector, boot_apic_id(), level_active_low) {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

/// Masks `gsi` again. `EINVAL` for a GSI no I/O APIC serves.
pub fn unroute_gsi(gsi: u32) -> Result<(), Errno> {
    if apic::mask_gsi(gsi) {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

/// The MSI message (address, data) that raises `vector` on the boot CPU.
pub fn msi_address_data(vector: u8) -> (u64, u32) {
    spindle_drivers::pci::msi_message(boot_apic_id() as u8, vector)
}

crate::ktests! {
    fn self_ipi_runs_the_handler_and_counts() {
        use core::sync::atomic::AtomicUsize;
        static SEEN: AtomicUsize = AtomicUsize::new(0);
        fn handler(data: usize) {
            assert!(!x86_64::instructions::interrupts::are_enabled());
            SEEN.store(data, Ordering::SeqCst);
        }
        SEEN.store(0, Ordering::SeqCst);
        let vector = register(handler, 0x5eed).expect("a free device vector");
        assert!(is_device_vector(u64::from(vector)));
        assert_eq!(count(vector), 0);
        let cpu = crate::cpu::current_index();
        x86_64::instructions::interrupts::without_interrupts(|| {
            apic::send_ipi(cpu, vector).expect("self IPI");
        });
        assert!(crate::ktest::wait_until(1000, || count(vector) == 1), "count {}", count(vector));
        assert_eq!(SEEN.load(Ordering::SeqCst), 0x5eed);
        unregister(vector);
        let unclaimed = unclaimed_count();
        apic::send_ipi(crate::cpu::current_index(), vector).expect("self IPI");
        assert!(crate::ktest::wait_until(1000, || unclaimed_count() > unclaimed));
        assert_eq!(count(vector), 1, "an unregistered vector runs no handler");
    }

    fn vectors_are_allocated_until_exhausted() {
        fn nothing(_: usize) {}
        let mut taken = alloc::vec::Vec::new();
        while let Ok(vector) = register(nothing, 0) {
            assert!(!taken.contains(&vector));
            taken.push(vector);
            assert!(taken.len() <= VECTOR_COUNT);
        }
        assert!(!taken.is_empty());
        assert_eq!(register(nothing, 0), Err(Errno::EAGAIN));
        let first = taken[0];
        unregister(first);
        assert_eq!(register(nothing, 0), Ok(first), "a freed vector is reused");
        for vector in taken {
            unregister(vector);
        }
    }

    fn route_gsi_checks_its_arguments() {
        let inputs = apic::io_apic_inputs();
        let beyond = crate::platform::get()
            .map(|platform| platform.io_apics.iter().map(|io| io.gsi_base).max().unwrap_or(0))
            .unwrap_or(0)
            + inputs;
        assert_eq!(route_gsi(beyond, FIRST_VECTOR, true), Err(Errno::EINVAL));
        assert_eq!(route_gsi(u32::MAX, FIRST_VECTOR, true), Err(Errno::EINVAL));
        assert_eq!(unroute_gsi(beyond), Err(Errno::EINVAL));
        // A vector outside the device range is refused before any I/O APIC
        // is touched.
        assert_eq!(route_gsi(16, 0x30, true), Err(Errno::EINVAL));
        // The last input exists: routing and unrouting it succeed.
        if let Some(io_apic) = crate::platform::get().and_then(|platform| platform.io_apics.first()) {
            let last = io_apic.gsi_base + inputs.min(24) - 1;
            assert_eq!(route_gsi(last, FIRST_VECTOR, true), Ok(()));
            assert_eq!(unroute_gsi(last), Ok(()));
        }
    }

    fn msi_message_targets_the_boot_cpu() {
        let (address, data) = msi_address_data(0x55);
        assert_eq!(address & 0xfff0_0fff, 0xfee0_0000, "address {address:#x}");
        assert_eq!((address >> 12) & 0xff, u64::from(boot_apic_id()));
        assert_eq!(data, 0x55);
    }
}
