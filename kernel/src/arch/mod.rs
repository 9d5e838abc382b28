//! x86_64 support: boot entry, descriptor tables, traps, APICs, timers,
//! per-CPU pointer, CPU start-up and IPIs, SSE/FPU state, device vectors.
//!
//! The only place besides `mm` with inline assembly and raw hardware
//! access; everything above uses the safe functions exported here.

pub mod apic;
pub mod backtrace;
mod boot;
pub mod context;
pub mod cpu_features;
pub mod fpu;
pub mod gdt;
pub mod irq;
pub mod percpu;
pub mod pit;
pub mod rtc;
pub mod smp;
pub mod syscall;
pub mod trap;

/// Switches to a new stack whose top is `stack_top` and calls `continuation`
/// there; the old stack is abandoned.
pub fn switch_stack_and_call(stack_top: u64, continuation: extern "C" fn() -> !) -> ! {
    // SAFETY: `stack_top` is the 16-byte aligned top of a mapped kernel stack that nobody else
    // uses; the continuation never returns, so nothing ever runs on the old stack again. rbp is
    // cleared so backtraces end at the continuation.
    unsafe {
        core::arch::asm!(
            "mov rsp, {top}",
            "xor ebp, ebp",
            "call {continuation}",
            "ud2",
            top = in(reg) stack_top,
            continuation = in(reg) continuation,
            options(noreturn),
        )
    }
}

/// Halts until the next interrupt (interrupts on).
pub fn wait_for_interrupt() {
    x86_64::instructions::interrupts::enable_and_hlt();
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Reads the time-stamp counter.
pub fn read_tsc() -> u64 {
    // SAFETY: rdtsc has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Sets the FS base (user mode's thread pointer) of this CPU.
pub fn set_fs_base(base: u64) {
    use x86_64::registers::model_specific::FsBase;
    if let Ok(base) = x86_64::VirtAddr::try_new(base) {
        FsBase::write(base);
    }
}
