//! The GS-based per-CPU pointer (see `crate::cpu` for the blocks).
//!
//! Owns IA32_GS_BASE and IA32_KERNEL_GS_BASE of the running CPU. In kernel
//! mode GS base holds the running CPU's `cpu::PerCpu` block and
//! IA32_KERNEL_GS_BASE holds user mode's GS base (0 until user mode
//! exists), so a `swapgs` on each privilege change keeps the block in GS
//! whenever kernel code runs. No locks: each CPU touches only its own MSRs.

use x86_64::VirtAddr;
use x86_64::registers::model_specific::{GsBase, KernelGsBase};

use crate::cpu::{OFFSET_INDEX, OFFSET_SELF};

/// Points the running CPU's GS base at `block` (a `cpu::PerCpu` address)
/// and clears the user-mode GS base that `swapgs` would bring in.
pub fn set_gs_base(block: u64) {
    GsBase::write(VirtAddr::new(block));
    KernelGsBase::write(VirtAddr::new(0));
}

/// The running CPU's GS base.
pub fn gs_base() -> u64 {
    GsBase::read().as_u64()
}

/// The CPU index stored in the running CPU's block (`gs:[8]`).
#[inline]
pub fn read_index() -> u64 {
    let index: u64;
    // SAFETY: GS base points at this CPU's `cpu::PerCpu` block (set by `cpu::init_boot_cpu` or the
    // AP entry before any caller can run here; `cpu::current_index` does not call this before
    // that), whose word at OFFSET_INDEX is the index. A plain read with no side effects.
    unsafe {
        core::arch::asm!(
            "mov {index}, gs:[{offset}]",
            index = out(reg) index,
            offset = const OFFSET_INDEX,
            options(nostack, preserves_flags, readonly),
        )
    };
    index
}

/// The block address stored in the running CPU's block (`gs:[0]`).
pub fn read_self_address() -> u64 {
    let address: u64;
    // SAFETY: as in `read_index`; offset 0 holds the block's own address.
    unsafe {
        core::arch::asm!(
            "mov {address}, gs:[{offset}]",
            address = out(reg) address,
            offset = const OFFSET_SELF,
            options(nostack, preserves_flags, readonly),
        )
    };
    address
}
