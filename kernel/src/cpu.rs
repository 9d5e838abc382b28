//! Per-CPU identity: which CPU is running this code.
//!
//! Owns `BLOCKS`, a static array of `MAX_CPUS` per-CPU blocks (no heap), and
//! `ONLINE`, the number of CPUs that came online. CPU indices are dense:
//! 0 is the boot CPU, then the application processors in ACPI MADT order of
//! those that came online (`arch::smp` assigns them one at a time). The
//! running CPU's GS base (IA32_GS_BASE) points at its own block, so
//! `current_index` is one `mov rax, gs:[8]` (in `arch::percpu`). In kernel
//! mode GS always holds the block and IA32_KERNEL_GS_BASE holds user mode's
//! value; the trap entry's `swapgs` (and later the system call entry)
//! exchanges them on every ring 3 -> ring 0 transition and back.
//!
//! States of a block: unused -> prepared (the boot CPU wrote index, APIC id
//! and self pointer before starting the CPU) -> online (`ONLINE` counts it;
//! from then on its fields are read-only). A prepared block whose CPU never
//! reported in is reused for the next CPU. No locks: the fields are atomics
//! written before the block is published through `ONLINE` (Release/Acquire).
//!
//! Layout (fixed, read by assembly): offset 0 the block's own address,
//! offset 8 the CPU index, offset 16 and 24 two scratch words reserved for
//! the system call entry (user stack pointer, kernel stack pointer).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::arch;

/// The most CPUs the kernel will run on; further MADT entries are ignored.
pub const MAX_CPUS: usize = 64;

/// Offset of the block's own address in a block (`gs:[0]`).
pub const OFFSET_SELF: usize = 0;
/// Offset of the CPU index in a block (`gs:[8]`).
pub const OFFSET_INDEX: usize = 8;
/// Offset of the system call entry's user stack pointer scratch word.
pub const OFFSET_USER_STACK_SCRATCH: usize = 16;
/// Offset of the system call entry's kernel stack top.
pub const OFFSET_KERNEL_STACK_TOP: usize = 24;

/// One CPU's block; GS base points at it while the CPU runs kernel code.
#[repr(C, align(64))]
pub struct PerCpu {
    self_address: AtomicU64,
    index: AtomicU64,
    /// Reserved for the system call entry: the interrupted user stack pointer.
    pub user_stack_scratch: AtomicU64,
    /// Reserved for the system call entry: the kernel stack to switch to.
    pub kernel_stack_top: AtomicU64,
    apic_id: AtomicU32,
}

impl PerCpu {
    const fn new() -> PerCpu {
        PerCpu {
            self_address: AtomicU64::new(0),
            index: AtomicU64::new(0),
            user_stack_scratch: AtomicU64::new(0),
            kernel_stack_top: AtomicU64::new(0),
            apic_id: AtomicU32::new(0),
        }
    }

    fn address(&self) -> u64 {
        self as *const PerCpu as u64
    }
}

const _: () = {
    assert!(core::mem::offset_of!(PerCpu, self_address) == OFFSET_SELF);
    assert!(core::mem::offset_of!(PerCpu, index) == OFFSET_INDEX);
    assert!(core::mem::offset_of!(PerCpu, user_stack_scratch) == OFFSET_USER_STACK_SCRATCH);
    assert!(core::mem::offset_of!(PerCpu, kernel_stack_top) == OFFSET_KERNEL_STACK_TOP);
};

static BLOCKS: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];
static ONLINE: AtomicUsize = AtomicUsize::new(0);
/// Set once the boot CPU's GS base is valid; before that every caller is
/// the boot CPU, index 0.
static BOOT_CPU_READY: AtomicBool = AtomicBool::new(false);

/// Makes the running (boot) CPU CPU 0. Call once, early in `kmain`.
pub fn init_boot_cpu() {
    prepare(0, arch::cpu_features::initial_apic_id());
    enter(0);
    ONLINE.store(1, Ordering::Release);
    BOOT_CPU_READY.store(true, Ordering::Release);
}

/// Writes block `index` for the CPU with `apic_id`, before that CPU starts.
/// Returns false if `index` is out of range.
pub(crate) fn prepare(index: usize, apic_id: u32) -> bool {
    let Some(block) = BLOCKS.get(index) else {
        return false;
    };
    block.self_address.store(block.address(), Ordering::Relaxed);
    block.index.store(index as u64, Ordering::Relaxed);
    block.apic_id.store(apic_id, Ordering::Relaxed);
    block.user_stack_scratch.store(0, Ordering::Relaxed);
    block.kernel_stack_top.store(0, Ordering::Relaxed);
    true
}

/// On the CPU that owns block `index`: points GS base at it.
pub(crate) fn enter(index: usize) {
    if let Some(block) = BLOCKS.get(index) {
        arch::percpu::set_gs_base(block.address());
    }
}

/// Publishes the prepared block `index` as online. Called by the boot CPU
/// once the CPU reported in; blocks come online in index order.
pub(crate) fn mark_online(index: usize) {
    debug_assert_eq!(index, ONLINE.load(Ordering::Relaxed));
    ONLINE.store(index + 1, Ordering::Release);
}

/// The index of the running CPU (0 = boot CPU).
#[inline]
pub fn current_index() -> usize {
    if !BOOT_CPU_READY.load(Ordering::Relaxed) {
        return 0;
    }
    arch::percpu::read_index() as usize
}

/// How many CPUs are online.
pub fn online_count() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// The local APIC id of online CPU `index`.
pub fn apic_id_of(index: usize) -> Option<u32> {
    (index < online_count()).then(|| BLOCKS[index].apic_id.load(Ordering::Relaxed))
}

/// The running CPU's block.
pub fn current() -> &'static PerCpu {
    &BLOCKS[current_index().min(MAX_CPUS - 1)]
}

crate::ktests! {
    fn boot_cpu_is_index_zero_with_its_own_block() {
        // Checked from a thread bound to the boot CPU.
        crate::ktest::on_cpu(0, || {
            assert_eq!(current_index(), 0);
            assert!(online_count() >= 1);
            assert_eq!(apic_id_of(0), Some(crate::arch::apic::local_id()));
            assert_eq!(arch::percpu::read_self_address(), BLOCKS[0].address());
            assert_eq!(current().address(), BLOCKS[0].address());
            assert_eq!(apic_id_of(online_count()), None);
            assert_eq!(apic_id_of(usize::MAX), None);
        });
    }

    fn apic_ids_of_online_cpus_are_unique_and_listed_by_acpi() {
        let platform = crate::platform::get().expect("ACPI was read at boot");
        let mut ids: alloc::vec::Vec<u32> =
            (0..online_count()).map(|index| apic_id_of(index).expect("online")).collect();
        for id in &ids {
            assert!(platform.cpus.iter().any(|cpu| cpu.apic_id == *id), "APIC id {id} not in the MADT");
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), online_count(), "duplicate APIC ids");
    }
}
