//! LWP context switching.
//!
//! A switched-out LWP's kernel stack holds its callee-saved registers and
//! flags; its `Context` holds the stack pointer. `switch` saves the running
//! LWP's registers on its stack, stores its stack pointer, loads the next
//! LWP's and restores its registers. A new LWP's stack is prepared so the
//! first switch to it "returns" into its entry function. No locks: the
//! scheduler guarantees that an LWP's context is only written by the CPU
//! switching away from it and only read by a CPU switching to it after the
//! write (the LWP's `on_cpu` handshake).

use core::arch::naked_asm;
use core::sync::atomic::{AtomicU64, Ordering};

/// The saved stack pointer of an LWP that is not running.
#[derive(Debug)]
pub struct Context {
    stack_pointer: AtomicU64,
}

/// RFLAGS of a new LWP: interrupts off (its entry turns them on).
const INITIAL_RFLAGS: u64 = 0x2;

impl Context {
    /// The context of an LWP that is running now (it is filled in when the
    /// LWP first switches away).
    pub const fn running() -> Context {
        Context {
            stack_pointer: AtomicU64::new(0),
        }
    }

    /// A context whose first switch enters `entry` on the stack whose top
    /// (16-byte aligned) is `stack_top`. The stack must be mapped and unused.
    pub fn new_thread(stack_top: u64, entry: extern "C" fn() -> !) -> Context {
        assert_eq!(stack_top % 16, 0, "stack top must be 16-byte aligned");
        // Top down: a zero fake return address (so `entry` starts with the
        // stack aligned as after a call), the entry as the return address of
        // `switch_stacks`, then rbp rbx r12 r13 r14 r15 (zero) and RFLAGS.
        let frame: [u64; 9] = [
            INITIAL_RFLAGS,
            0,
            0,
            0,
            0,
            0,
            0,
            entry as *const () as u64,
            0,
        ];
        let stack_pointer = stack_top - (frame.len() * 8) as u64;
        for (index, value) in frame.iter().enumerate() {
            let slot = (stack_pointer + index as u64 * 8) as *mut u64;
            // SAFETY: the caller hands over a mapped, unused stack; the nine
            // words below its top belong to it.
            unsafe { slot.write(*value) };
        }
        Context {
            stack_pointer: AtomicU64::new(stack_pointer),
        }
    }
}

/// Switches from the running LWP (`from`) to `to`.
///
/// # Safety
/// Interrupts must be off; `from` must be the context of the LWP running
/// on this CPU and `to` the saved context of an LWP that no CPU runs (its
/// switch-out has completed); both must stay alive until the switch is done
/// (the scheduler's per-CPU slots keep them).
pub unsafe fn switch(from: *const Context, to: *const Context) {
    // SAFETY: per the caller; the two stack-pointer slots are valid for
    // the duration of the switch.
    unsafe {
        let to_stack_pointer = (*to).stack_pointer.load(Ordering::Acquire);
        switch_stacks((*from).stack_pointer.as_ptr(), to_stack_pointer);
    }
}

#[unsafe(naked)]
extern "C" fn switch_stacks(save_stack_pointer_to: *mut u64, load_stack_pointer: u64) {
    naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "pushfq",
        "mov [rdi], rsp",
        "mov rsp, rsi",
        "popfq",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    );
}
