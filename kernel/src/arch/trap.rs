//! Interrupt and exception entry, the IDT, fault recovery and fatal reports.
//!
//! Owns the interrupt descriptor table and the 256 entry stubs. Every vector
//! enters through a 16-byte stub inside one `#[unsafe(naked)]` function,
//! which pushes a dummy error code where the CPU pushes none, then the vector
//! number, and jumps to the common entry. The common entry saves every
//! general-purpose register into a `TrapFrame` on the current stack and calls
//! `dispatch` with it; whatever `dispatch` leaves in the frame is restored.
//!
//! Exceptions first consult the fault-recovery table (`.extable`: pairs of
//! faulting-instruction and fix-up addresses, emitted next to the few
//! instructions allowed to fault, such as the probes below and, later, user
//! copies). A recovered fault resumes at the fix-up with `rax` = 0x100 |
//! vector and `rdx` = the fault address. Any other exception is fatal: the
//! report (vector, error code, registers, CR2, backtrace) goes to the console
//! and the machine stops with a failure exit code.
//!
//! Double fault, NMI and machine check run on their own IST stacks (see
//! `gdt`). Interrupt handlers must not allocate or sleep. No locks here
//! besides the console's (fatal path uses `emergency_write`).
//!
//! One IDT serves every CPU (each loads it with `load_idt_on_this_cpu`).
//! Device and IPI vectors: 0x30 the local APIC timer (only the boot CPU's
//! tick advances `time`'s tick count, so the clock's rate does not scale
//! with the CPU count), 0x31 reschedule (a hook for the scheduler), 0x32
//! TLB shootdown (`mm::tlb`), 0x33 call-function (`smp::call_on_cpu`),
//! 0x50-0x6f device vectors (`irq`, which drivers register handlers with).
//! `INTERRUPT_COUNTS` counts, per CPU, timer interrupts and each IPI
//! vector received (atomics, no lock), for tests and diagnostics.

use core::arch::naked_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::VirtAddr;
use x86_64::instructions::tables::lidt;
use x86_64::registers::control::Cr2;
use x86_64::structures::DescriptorTablePointer;

use super::{apic, backtrace, gdt};
use crate::{power, time};

/// Vectors 0x20-0x2f: the legacy PIC range, masked (spurious ones land here).
pub const VECTOR_TIMER: u8 = 0x30;
/// Asks a CPU to run its scheduler (the hook below).
pub const VECTOR_RESCHEDULE: u8 = 0x31;
/// Asks a CPU to flush stale kernel translations (`mm::tlb`).
pub const VECTOR_TLB_SHOOTDOWN: u8 = 0x32;
/// Asks a CPU to run a function posted to it (`smp::call_on_cpu`).
pub const VECTOR_CALL_FUNCTION: u8 = 0x33;
/// Only counted: for tests of IPI delivery that nothing else sends.
pub const VECTOR_TEST_IPI: u8 = 0x34;
pub const VECTOR_SPURIOUS: u8 = 0xff;

const STUB_SIZE: usize = 16;

/// The registers saved on entry, in stack order (lowest address first).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    // Pushed by the CPU.
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// All 256 entry stubs, exactly `STUB_SIZE` bytes each (hand-encoded so no
/// assembler relaxation changes a size). Vectors 8, 10-14, 17, 21, 29 and 30
/// get an error code from the CPU; the others push a zero in its place.
#[unsafe(naked)]
extern "C" fn vector_stubs() {
    naked_asm!(
        ".set spindle_vector, 0",
        ".rept 256",
        "1:",
        ".if (spindle_vector == 8) || ((spindle_vector >= 10) && (spindle_vector <= 14)) || (spindle_vector == 17) || (spindle_vector == 21) || (spindle_vector == 29) || (spindle_vector == 30)",
        ".else",
        ".byte 0x6a, 0x00", // push 0
        ".endif",
        ".byte 0x68", // push imm32
        ".long spindle_vector",
        ".byte 0xe9", // jmp rel32
        ".long {common} - . - 4",
        ".fill 16 - (. - 1b), 1, 0xcc",
        ".set spindle_vector, spindle_vector + 1",
        ".endr",
        common = sym common_entry,
    );
}

/// Saves the registers, calls `dispatch`, restores them and returns from the
/// interrupt. Swaps GS when coming from user mode (per-CPU data, later).
#[unsafe(naked)]
extern "C" fn common_entry() {
    naked_asm!(
        "test qword ptr [rsp + 24], 3",
        "jz 2f",
        "swapgs",
        "2:",
        "push rax",
        "push rbx",
        "push rcx",
        "push rdx",
        "push rsi",
        "push rdi",
        "push rbp",
        "push r8",
        "push r9",
        "push r10",
        "push r11",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "cld",
        "mov rdi, rsp",
        "call {dispatch}",
        // Every return to an interrupted context, and every entry into user
        // mode (system call exit, a new LWP's first entry), ends here.
        ".global spindle_trap_return",
        "spindle_trap_return:",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop r11",
        "pop r10",
        "pop r9",
        "pop r8",
        "pop rbp",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop rcx",
        "pop rbx",
        "pop rax",
        "add rsp, 16",
        "test qword ptr [rsp + 8], 3",
        "jz 3f",
        "swapgs",
        "3:",
        "iretq",
        dispatch = sym dispatch,
    );
}

/// One IDT gate descriptor (64-bit interrupt gate).
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const EMPTY: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attributes: 0,
        offset_middle: 0,
        offset_high: 0,
        reserved: 0,
    };

    fn interrupt_gate(handler: u64, ist: u8) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: gdt::KERNEL_CODE_SELECTOR,
            ist,
            type_attributes: 0x8e, // present, DPL 0, 64-bit interrupt gate
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: spin::Mutex<Idt> = spin::Mutex::new(Idt([Gate::EMPTY; 256]));

/// What `interrupt_count` can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptKind {
    Timer = 0,
    Reschedule = 1,
    TlbShootdown = 2,
    CallFunction = 3,
    Test = 4,
}

const INTERRUPT_KINDS: usize = 5;

static INTERRUPT_COUNTS: [[AtomicU64; INTERRUPT_KINDS]; crate::cpu::MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; INTERRUPT_KINDS] }; crate::cpu::MAX_CPUS];

fn count_interrupt(kind: InterruptKind) {
    if let Some(counts) = INTERRUPT_COUNTS.get(crate::cpu::current_index()) {
        counts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// How many interrupts of `kind` CPU `cpu_index` has received (0 for an
/// index out of range).
pub fn interrupt_count(cpu_index: usize, kind: InterruptKind) -> u64 {
    INTERRUPT_COUNTS
        .get(cpu_index)
        .map_or(0, |counts| counts[kind as usize].load(Ordering::Relaxed))
}

/// Called on every reschedule IPI, after its end of interrupt.
fn reschedule_ipi_hook() {
    crate::sched::preempt_on_interrupt_exit();
}

/// Loads the (already filled) IDT on the running CPU.
pub fn load_idt_on_this_cpu() {
    let idt = IDT.lock();
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::new(idt.0.as_ptr() as u64),
    };
    // SAFETY: the table lives in a static, so it outlives its use by the
    // CPU, and `load_idt` has filled every gate with a stub.
    unsafe { lidt(&pointer) };
}

/// Fills and loads the IDT. With `use_ist`, double fault, NMI and machine
/// check switch to their IST stacks (the TSS must be loaded by then).
pub fn load_idt(use_ist: bool) {
    let stubs = vector_stubs as *const () as u64;
    let mut idt = IDT.lock();
    for (vector, gate) in idt.0.iter_mut().enumerate() {
        let ist = if use_ist {
            gdt::ist_index_for_vector(vector as u8)
        } else {
            0
        };
        *gate = Gate::interrupt_gate(stubs + (vector * STUB_SIZE) as u64, ist);
    }
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::new(idt.0.as_ptr() as u64),
    };
    // SAFETY: the table lives in a static, so it outlives its use by the
    // CPU, and every gate points at a stub of `vector_stubs`.
    unsafe { lidt(&pointer) };
}

pub fn exception_name(vector: u64) -> &'static str {
    match vector {
        0 => "divide error",
        1 => "debug",
        2 => "non-maskable interrupt",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range exceeded",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack-segment fault",
        13 => "general protection",
        14 => "page fault",
        16 => "x87 floating-point error",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD floating-point error",
        20 => "virtualization exception",
        21 => "control protection",
        _ => "reserved exception",
    }
}

/// Looks `rip` up in the fault-recovery table.
fn fixup_for(rip: u64) -> Option<u64> {
    unsafe extern "C" {
        static __extable_start: [u64; 0];
        static __extable_end: [u64; 0];
    }
    // SAFETY: the linker script brackets `.extable` with these symbols; the
    // section holds only (instruction, fix-up) pairs of u64 emitted below.
    let table = unsafe {
        let start = __extable_start.as_ptr();
        let end = __extable_end.as_ptr();
        core::slice::from_raw_parts(start, end.offset_from(start) as usize)
    };
    table
        .chunks_exact(2)
        .find(|entry| entry[0] == rip)
        .map(|entry| entry[1])
}

static SPURIOUS_COUNT: AtomicU64 = AtomicU64::new(0);
static UNEXPECTED_IRQ_COUNT: AtomicU64 = AtomicU64::new(0);

extern "C" fn dispatch(frame: &mut TrapFrame) {
    dispatch_vector(frame);
    if frame.cs & 3 == 3 {
        crate::signal::on_return_to_user(frame, None);
    }
}

fn dispatch_vector(frame: &mut TrapFrame) {
    match frame.vector {
        0..=31 => handle_exception(frame),
        vector if vector == VECTOR_TIMER as u64 => {
            count_interrupt(InterruptKind::Timer);
            if crate::cpu::current_index() == 0 {
                time::on_tick();
            }
            crate::sched::on_tick(frame.cs & 3 == 3);
            apic::end_of_interrupt();
            crate::sched::preempt_on_interrupt_exit();
        }
        vector if vector == VECTOR_RESCHEDULE as u64 => {
            count_interrupt(InterruptKind::Reschedule);
            crate::arch::apic::end_of_interrupt();
            reschedule_ipi_hook();
        }
        vector if vector == VECTOR_TLB_SHOOTDOWN as u64 => {
            count_interrupt(InterruptKind::TlbShootdown);
            crate::mm::tlb::handle_shootdown_ipi();
            apic::end_of_interrupt();
        }
        vector if vector == VECTOR_CALL_FUNCTION as u64 => {
            count_interrupt(InterruptKind::CallFunction);
            // End of interrupt first: a posted function may turn interrupts
            // on (tests do), and further IPIs must be able to arrive then.
            apic::end_of_interrupt();
            super::smp::handle_call_ipi();
        }
        vector if vector == VECTOR_TEST_IPI as u64 => {
            count_interrupt(InterruptKind::Test);
            apic::end_of_interrupt();
        }
        vector if super::irq::is_device_vector(vector) => super::irq::dispatch(vector as u8),
        vector if vector == VECTOR_SPURIOUS as u64 => {
            // Spurious LAPIC interrupts take no EOI.
            SPURIOUS_COUNT.fetch_add(1, Ordering::Relaxed);
        }
        0x20..=0x2f => {
            // A spurious interrupt from the masked legacy PICs.
            SPURIOUS_COUNT.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            if UNEXPECTED_IRQ_COUNT.fetch_add(1, Ordering::Relaxed) == 0 {
                log::warn!("unexpected interrupt vector {:#x}", frame.vector);
            }
            apic::end_of_interrupt();
        }
    }
}

/// Page-fault error code bits.
const PF_WRITE: u64 = 1 << 1;
const PF_INSTRUCTION: u64 = 1 << 4;

fn handle_exception(frame: &mut TrapFrame) {
    let fault_address = if frame.vector == 14 {
        Cr2::read_raw()
    } else {
        0
    };
    let from_user = frame.cs & 3 == 3;
    // A page fault on user memory (from user mode, or from a kernel copy
    // that was interruptible): map the page if a region allows it.
    if frame.vector == 14 && (from_user || frame.rflags & 0x200 != 0) {
        let access = crate::mm::vm::Access {
            write: frame.error_code & PF_WRITE != 0,
            execute: frame.error_code & PF_INSTRUCTION != 0,
        };
        if crate::uproc::resolve_user_fault(fault_address, access) {
            return;
        }
    }
    if from_user {
        crate::uproc::user_fault(frame, exception_name(frame.vector), fault_address);
        return;
    }
    if let Some(fixup) = fixup_for(frame.rip) {
        log::debug!(
            "recovered {} at {:#x} (address {:#x})",
            exception_name(frame.vector),
            frame.rip,
            fault_address
        );
        frame.rax = 0x100 | frame.vector;
        frame.rdx = fault_address;
        frame.rip = fixup;
        return;
    }
    report_fatal(frame);
}

fn report_fatal(frame: &TrapFrame) -> ! {
    let cr2 = Cr2::read_raw();
    let write = crate::console::emergency_write;
    write(format_args!(
        "KERNEL FAULT: vector {} ({}), error code {:#x}\n",
        frame.vector,
        exception_name(frame.vector),
        frame.error_code
    ));
    write(format_args!(
        "  rip {:#018x}  cs {:#06x}  rflags {:#010x}  rsp {:#018x}  ss {:#06x}\n",
        frame.rip, frame.cs, frame.rflags, frame.rsp, frame.ss
    ));
    write(format_args!(
        "  rax {:#018x}  rbx {:#018x}  rcx {:#018x}  rdx {:#018x}\n",
        frame.rax, frame.rbx, frame.rcx, frame.rdx
    ));
    write(format_args!(
        "  rsi {:#018x}  rdi {:#018x}  rbp {:#018x}  r8  {:#018x}\n",
        frame.rsi, frame.rdi, frame.rbp, frame.r8
    ));
    write(format_args!(
        "  r9  {:#018x}  r10 {:#018x}  r11 {:#018x}  r12 {:#018x}\n",
        frame.r9, frame.r10, frame.r11, frame.r12
    ));
    write(format_args!(
        "  r13 {:#018x}  r14 {:#018x}  r15 {:#018x}  cr2 {:#018x}\n",
        frame.r13, frame.r14, frame.r15, cr2
    ));
    let stack_pointer_in_guard = crate::mm::stack::is_guard_page(frame.rsp)
        || (frame.vector == 14 && crate::mm::stack::is_guard_page(cr2));
    if stack_pointer_in_guard {
        write(format_args!(
            "  kernel stack overflow: the stack reached its guard page\n"
        ));
    }
    write(format_args!("  backtrace:\n    {:#018x}\n", frame.rip));
    backtrace::print_from(frame.rbp);
    power::exit(power::ExitCode::Failure);
}

/// How a probe ended.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeResult {
    /// 0 when the instruction completed, else 0x100 | exception vector.
    pub status: u64,
    /// The value read when the probe completed; the fault address when it
    /// stopped on a page fault.
    pub data: u64,
}

impl ProbeResult {
    /// The exception vector that stopped the probe, if any.
    pub fn vector(&self) -> Option<u8> {
        (self.status != 0).then_some((self.status & 0xff) as u8)
    }
}

/// Reads a u64 at `address`, recovering from any fault.
#[unsafe(naked)]
pub extern "C" fn probe_read_u64(address: u64) -> ProbeResult {
    naked_asm!(
        "2: mov rdx, [rdi]",
        "xor eax, eax",
        "ret",
        "3: ret",
        ".pushsection .extable, \"a\"",
        ".balign 8",
        ".quad 2b, 3b",
        ".popsection",
    );
}

/// Executes `ud2`, which must raise #UD and be recovered.
#[unsafe(naked)]
pub extern "C" fn probe_invalid_opcode() -> ProbeResult {
    naked_asm!(
        "xor eax, eax",
        "xor edx, edx",
        "2: ud2",
        "3: ret",
        ".pushsection .extable, \"a\"",
        ".balign 8",
        ".quad 2b, 3b",
        ".popsection",
    );
}

/// Executes `ud2` with no recovery: the fatal path (`crash=exception`).
pub fn raise_unexpected_invalid_opcode() -> ! {
    // SAFETY: deliberately raises #UD, which the fatal handler reports
    // before stopping the machine; nothing runs after it.
    unsafe { core::arch::asm!("ud2", options(noreturn)) }
}

crate::ktests! {
    fn invalid_opcode_is_caught_and_reported() {
        let result = probe_invalid_opcode();
        assert_eq!(result.vector(), Some(6), "result {result:?}");
    }

    fn page_fault_is_caught_with_its_address() {
        // The lower half is unmapped in the kernel's own tables.
        let address = 0x0000_1234_5678_9000u64;
        let result = probe_read_u64(address);
        assert_eq!(result.vector(), Some(14), "result {result:?}");
        assert_eq!(result.data, address);
    }

    fn probe_of_mapped_memory_succeeds() {
        let value = 0x5eed_u64;
        let result = probe_read_u64(&value as *const u64 as u64);
        assert_eq!(result, ProbeResult { status: 0, data: 0x5eed });
    }

    fn non_canonical_address_is_a_general_protection_fault() {
        let result = probe_read_u64(0x8000_0000_0000_0000);
        assert_eq!(result.vector(), Some(13), "result {result:?}");
    }
}
