//! The `syscall` instruction's entry, and entering user mode.
//!
//! Owns the system-call MSRs of each CPU (EFER.SCE, STAR, LSTAR, FMASK),
//! SMEP/SMAP enabling, and the entry stub. The stub swaps to the kernel GS,
//! saves the user stack pointer in the per-CPU block, switches to the
//! running LWP's kernel stack (`PerCpu::kernel_stack_top`, which the
//! scheduler keeps current), and builds the same `TrapFrame` interrupts
//! build, so the system-call layer and signal delivery see one layout. It
//! returns through the common trap exit (`iretq`), which also takes a new
//! LWP into user mode the first time (`enter_user`). Interrupts stay off
//! in the stub (FMASK clears IF); the dispatcher turns them on.

use core::arch::naked_asm;

use x86_64::registers::control::{Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags, Msr};

use super::trap::TrapFrame;
use crate::cpu::{OFFSET_KERNEL_STACK_TOP, OFFSET_USER_STACK_SCRATCH};

/// User code and data selectors (GDT entries 4 and 3, RPL 3).
pub const USER_CODE_SELECTOR: u64 = (4 << 3) | 3;
pub const USER_DATA_SELECTOR: u64 = (3 << 3) | 3;
/// The `vector` a system call's trap frame carries.
pub const SYSCALL_MARKER: u64 = 0x100;
/// RFLAGS of a thread entering user mode: interrupts on.
pub const USER_RFLAGS: u64 = 0x202;

const IA32_STAR: u32 = 0xc000_0081;
const IA32_LSTAR: u32 = 0xc000_0082;
const IA32_FMASK: u32 = 0xc000_0084;
/// Cleared on entry: TF, IF, DF, NT, AC.
const SYSCALL_FLAGS_MASK: u64 = 0x100 | 0x200 | 0x400 | 0x4000 | 0x4_0000;

unsafe extern "C" {
    fn spindle_trap_return();
}

#[unsafe(naked)]
extern "C" fn syscall_entry() {
    naked_asm!(
        "swapgs",
        "mov gs:[{scratch}], rsp",
        "mov rsp, gs:[{kernel_stack}]",
        "push {user_data}",
        "push qword ptr gs:[{scratch}]",
        "push r11",
        "push {user_code}",
        "push rcx",
        "push 0",
        "push {marker}",
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
        "xor ebp, ebp",
        "mov rdi, rsp",
        "call {dispatch}",
        "jmp {exit}",
        scratch = const OFFSET_USER_STACK_SCRATCH,
        kernel_stack = const OFFSET_KERNEL_STACK_TOP,
        user_data = const USER_DATA_SELECTOR,
        user_code = const USER_CODE_SELECTOR,
        marker = const SYSCALL_MARKER,
        dispatch = sym crate::syscall::dispatch,
        exit = sym spindle_trap_return,
    );
}

/// Sets up `syscall` and SMEP/SMAP on the running CPU. Returns whether
/// SMAP is on (the CPU has it).
pub fn init_this_cpu() -> bool {
    // SAFETY: the selectors match the GDT layout (`gdt`), LSTAR is the
    // entry stub above, and FMASK keeps interrupts off until the stub has
    // switched stacks.
    unsafe {
        Efer::update(|flags| flags.insert(EferFlags::SYSTEM_CALL_EXTENSIONS));
        Msr::new(IA32_STAR).write((0x13u64 << 48) | (0x08u64 << 32));
        Msr::new(IA32_LSTAR).write(syscall_entry as *const () as u64);
        Msr::new(IA32_FMASK).write(SYSCALL_FLAGS_MASK);
    }
    let features = core::arch::x86_64::__cpuid_count(7, 0);
    let smep = features.ebx & (1 << 7) != 0;
    let smap = features.ebx & (1 << 20) != 0;
    // SAFETY: only bits the CPU reports are set; the kernel never runs
    // user code, and touches user memory only through `usercopy`, which
    // opens access with `stac` when SMAP is on.
    unsafe {
        Cr4::update(|flags| {
            if smep {
                flags.insert(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION);
            }
            if smap {
                flags.insert(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION);
            }
        });
    }
    smap
}

/// Bytes a trap frame takes at the top of a kernel stack.
pub const TRAP_FRAME_SIZE: u64 = core::mem::size_of::<TrapFrame>() as u64;

/// Places `frame` at the top of a kernel stack whose LWP has not run yet
/// (its context starts below that area; see `sched::new_thread_context`).
pub fn place_user_frame(stack_top: u64, frame: &TrapFrame) {
    let place = (stack_top - TRAP_FRAME_SIZE) as *mut TrapFrame;
    // SAFETY: the stack is mapped and belongs to an LWP that has not run;
    // its top `TRAP_FRAME_SIZE` bytes are kept free for this frame.
    unsafe { place.write(*frame) };
}

/// Enters user mode with the frame at the top of the running LWP's kernel
/// stack (`place_user_frame`), where every later entry from user mode will
/// put its own. Like every return to user mode, it passes through the
/// signal layer first (a process stopped or exiting meanwhile, a signal
/// already pending).
pub fn enter_user(stack_top: u64) -> ! {
    let place = stack_top - TRAP_FRAME_SIZE;
    // SAFETY: the frame lies at the top of the running LWP's own kernel
    // stack, placed there by its creator before it first ran; nothing else
    // refers to it while the LWP runs, and it stays mapped with the stack.
    let frame = unsafe { &mut *(place as *mut TrapFrame) };
    crate::signal::on_return_to_user(frame, None);
    x86_64::instructions::interrupts::disable();
    // SAFETY: `stack_top` is the top of the running LWP's own kernel stack, whose top frame its
    // creator filled with user selectors and an RFLAGS with IF; the stack pointer moves there and
    // the common exit pops it and `iretq`s to user mode, with interrupts off until then.
    unsafe {
        core::arch::asm!(
            "mov rsp, {frame}",
            "jmp {exit}",
            frame = in(reg) place,
            exit = sym spindle_trap_return,
            options(noreturn),
        )
    }
}
