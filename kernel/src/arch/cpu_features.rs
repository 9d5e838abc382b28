//! CPU feature set-up shared by every CPU: SSE for later FPU context
//! switching, and the CPU's identity as CPUID reports it.
//!
//! Owns the running CPU's CR0.EM/MP/TS and CR4.OSFXSR/OSXMMEXCPT bits. The
//! kernel itself is soft-float and never emits SSE; enabling it only lets
//! code that uses it explicitly (`fpu`, user mode later) do so. Each CPU
//! calls `enable_sse` on itself; no shared state, no locks.

use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};

/// Enables SSE on the running CPU: x87 not emulated (CR0.EM clear), WAIT
/// honours TS (CR0.MP set), no lazy-FPU trap (CR0.TS clear), FXSAVE and
/// FXRSTOR cover the XMM state (CR4.OSFXSR) and SIMD exceptions are
/// reported as #XM (CR4.OSXMMEXCPT).
pub fn enable_sse() {
    let mut cr0 = Cr0::read();
    cr0.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
    cr0.insert(Cr0Flags::MONITOR_COPROCESSOR);
    let mut cr4 = Cr4::read();
    cr4.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE);
    // SAFETY: every x86_64 CPU has SSE2 and FXSR; these bits only change
    // how FPU/SSE instructions behave, which the kernel never emits.
    unsafe {
        Cr0::write(cr0);
        Cr4::write(cr4);
    }
}

/// Whether SSE is enabled on the running CPU (for tests).
pub fn sse_enabled() -> bool {
    let cr0 = Cr0::read();
    let cr4 = Cr4::read();
    !cr0.contains(Cr0Flags::EMULATE_COPROCESSOR)
        && cr0.contains(Cr0Flags::MONITOR_COPROCESSOR)
        && cr4.contains(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE)
}

/// The running CPU's initial local APIC id (CPUID leaf 1, EBX bits 31-24);
/// readable before the local APIC is mapped.
pub fn initial_apic_id() -> u32 {
    core::arch::x86_64::__cpuid(1).ebx >> 24
}
