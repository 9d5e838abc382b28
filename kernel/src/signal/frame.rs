//! The Linux x86_64 signal frame (`struct rt_sigframe`) and
//! `rt_sigreturn`.
//!
//! Layout, from the frame's lowest address (the handler's stack pointer,
//! 8 bytes short of 16-byte alignment, as after a `call`):
//!
//! ```text
//!   0  pretcode          sa_restorer: where the handler returns to
//!   8  ucontext          uc_flags, uc_link, uc_stack (24), uc_mcontext
//!                        (struct sigcontext, 256), uc_sigmask (8)
//! 312  siginfo           128 bytes
//!      ...               then, 64-byte aligned above, the FXSAVE image
//! ```
//!
//! Owns no state: the frame is built from and read back into the LWP's
//! trap frame, hold mask, alternate stack and FPU registers.

use alloc::sync::Arc;

use super::{SIGSEGV, SigAction, SigInfo, UNBLOCKABLE, code, sa};
use crate::arch::fpu;
use crate::arch::trap::TrapFrame;
use crate::errno::Errno;
use crate::mm::usercopy::{copy_from_user, copy_to_user};
use crate::mm::vm::USER_END;
use crate::proc::lwp::{Lwp, SignalSet};

const UCONTEXT_OFFSET: usize = 8;
const UC_STACK_OFFSET: usize = UCONTEXT_OFFSET + 16;
const MCONTEXT_OFFSET: usize = UCONTEXT_OFFSET + 40;
const SIGMASK_OFFSET: usize = MCONTEXT_OFFSET + 256;
const SIGINFO_OFFSET: usize = SIGMASK_OFFSET + 8;
const FRAME_SIZE: usize = SIGINFO_OFFSET + super::SIGINFO_SIZE;
const FPU_SIZE: u64 = 512;
/// The x86_64 red zone below a user stack pointer, left alone.
const RED_ZONE: u64 = 128;

/// `uc_flags`: the saved SS is valid and restored strictly (as Linux).
const UC_SIGCONTEXT_SS: u64 = 0x2;
const UC_STRICT_RESTORE_SS: u64 = 0x4;

pub const SS_ONSTACK: u32 = 1;
pub const SS_DISABLE: u32 = 2;

/// RFLAGS bits user mode may change through `rt_sigreturn`: CF PF AF ZF
/// SF TF DF OF RF AC.
const USER_FLAGS: u64 =
    0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x800 | 0x1_0000 | 0x4_0000;
/// Cleared for a handler: TF, DF, RF, AC.
const HANDLER_CLEARS: u64 = 0x100 | 0x400 | 0x1_0000 | 0x4_0000;

/// The general registers in `struct sigcontext` order (r8 first), then
/// rsp, rip, eflags.
fn sigcontext_words(frame: &TrapFrame) -> [u64; 18] {
    [
        frame.r8,
        frame.r9,
        frame.r10,
        frame.r11,
        frame.r12,
        frame.r13,
        frame.r14,
        frame.r15,
        frame.rdi,
        frame.rsi,
        frame.rbp,
        frame.rbx,
        frame.rdx,
        frame.rax,
        frame.rcx,
        frame.rsp,
        frame.rip,
        frame.rflags,
    ]
}

/// The `ss_flags` Linux reports for a user stack pointer `sp`.
pub fn alternate_stack_flags(lwp: &Lwp, sp: u64) -> u32 {
    let (base, _, size) = lwp.alternate_stack();
    if size == 0 {
        SS_DISABLE
    } else if sp > base && sp - base <= size {
        SS_ONSTACK
    } else {
        0
    }
}

fn put(bytes: &mut [u8], offset: usize, value: u64) {
    bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

fn get(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("eight bytes"))
}

/// Builds the frame for `info` on the user stack (or the alternate stack)
/// and points `frame` at the handler. `mask` is the mask `rt_sigreturn`
/// puts back. `EFAULT` if the frame cannot be written or the action has
/// no restorer (x86_64 Linux requires `SA_RESTORER`).
pub fn build(
    lwp: &Arc<Lwp>,
    frame: &mut TrapFrame,
    info: &SigInfo,
    action: &SigAction,
    mask: SignalSet,
) -> Result<(), Errno> {
    if action.flags & sa::SA_RESTORER == 0 {
        return Err(Errno::EFAULT);
    }
    let (alt_base, _, alt_size) = lwp.alternate_stack();
    let stack_flags = alternate_stack_flags(lwp, frame.rsp);
    let mut sp = if action.flags & sa::SA_ONSTACK != 0 && stack_flags == 0 {
        alt_base + alt_size
    } else {
        frame.rsp.wrapping_sub(RED_ZONE)
    };
    sp = sp.wrapping_sub(FPU_SIZE) & !63;
    let fpu_address = sp;
    sp = (sp.wrapping_sub(FRAME_SIZE as u64) & !15).wrapping_sub(8);
    let frame_address = sp;
    if frame_address >= USER_END || fpu_address >= USER_END {
        return Err(Errno::EFAULT);
    }

    let mut bytes = [0u8; FRAME_SIZE];
    put(&mut bytes, 0, action.restorer);
    put(
        &mut bytes,
        UCONTEXT_OFFSET,
        UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS,
    );
    put(&mut bytes, UC_STACK_OFFSET, alt_base);
    bytes[UC_STACK_OFFSET + 8..UC_STACK_OFFSET + 12].copy_from_slice(&stack_flags.to_le_bytes());
    put(&mut bytes, UC_STACK_OFFSET + 16, alt_size);
    for (index, word) in sigcontext_words(frame).iter().enumerate() {
        put(&mut bytes, MCONTEXT_OFFSET + index * 8, *word);
    }
    // cs, gs, fs, ss (16 bits each).
    let selectors = MCONTEXT_OFFSET + 18 * 8;
    bytes[selectors..selectors + 2].copy_from_slice(&(frame.cs as u16).to_le_bytes());
    bytes[selectors + 6..selectors + 8].copy_from_slice(&(frame.ss as u16).to_le_bytes());
    put(&mut bytes, MCONTEXT_OFFSET + 19 * 8, info.error_code);
    put(&mut bytes, MCONTEXT_OFFSET + 20 * 8, info.trapno);
    put(&mut bytes, MCONTEXT_OFFSET + 21 * 8, mask.0);
    let cr2 = if info.trapno == 14 { info.addr } else { 0 };
    put(&mut bytes, MCONTEXT_OFFSET + 22 * 8, cr2);
    put(&mut bytes, MCONTEXT_OFFSET + 23 * 8, fpu_address);
    put(&mut bytes, SIGMASK_OFFSET, mask.0);
    bytes[SIGINFO_OFFSET..].copy_from_slice(&info.to_bytes());

    copy_to_user(fpu_address, &fpu::save_live())?;
    copy_to_user(frame_address, &bytes)?;

    frame.rsp = frame_address;
    frame.rip = action.handler;
    frame.rdi = u64::from(info.signo);
    frame.rsi = frame_address + SIGINFO_OFFSET as u64;
    frame.rdx = frame_address + UCONTEXT_OFFSET as u64;
    frame.rax = 0;
    frame.rflags &= !HANDLER_CLEARS;
    Ok(())
}

/// `rt_sigreturn`: puts back what the frame at the user stack pointer
/// (the handler's `ret` popped `pretcode`) saved: registers, mask, FPU
/// registers, alternate stack. A frame that cannot be read, or that would
/// leave user mode with a kernel or non-canonical address, kills the
/// process with `SIGSEGV`. Returns the restored rax.
pub fn sigreturn(lwp: &Arc<Lwp>, frame: &mut TrapFrame) -> Result<u64, Errno> {
    let frame_address = frame.rsp.wrapping_sub(8);
    let mut bytes = [0u8; FRAME_SIZE];
    let word = |bytes: &[u8; FRAME_SIZE], index: usize| get(bytes, MCONTEXT_OFFSET + index * 8);
    let fpu_image = copy_from_user(&mut bytes, frame_address).and_then(|()| {
        if word(&bytes, 15) >= USER_END || word(&bytes, 16) >= USER_END {
            // rsp or rip outside user space: `iretq` would fault in the
            // kernel, or user mode would run kernel addresses.
            return Err(Errno::EFAULT);
        }
        match word(&bytes, 23) {
            0 => Ok(fpu::FpuState::initial().bytes()),
            address => {
                let mut image = [0u8; 512];
                copy_from_user(&mut image, address)?;
                Ok(image)
            }
        }
    });
    let Ok(fpu_image) = fpu_image else {
        super::force_fault(SigInfo::from_sender(SIGSEGV, code::SI_KERNEL, 0));
        return Ok(frame.rax);
    };
    let word = |index: usize| word(&bytes, index);
    frame.r8 = word(0);
    frame.r9 = word(1);
    frame.r10 = word(2);
    frame.r11 = word(3);
    frame.r12 = word(4);
    frame.r13 = word(5);
    frame.r14 = word(6);
    frame.r15 = word(7);
    frame.rdi = word(8);
    frame.rsi = word(9);
    frame.rbp = word(10);
    frame.rbx = word(11);
    frame.rdx = word(12);
    frame.rax = word(13);
    frame.rcx = word(14);
    frame.rsp = word(15);
    frame.rip = word(16);
    frame.rflags = (frame.rflags & !USER_FLAGS) | (word(17) & USER_FLAGS);
    fpu::load_live(&fpu_image);

    let mask = get(&bytes, SIGMASK_OFFSET) & !UNBLOCKABLE.0;
    lwp.set_hold_mask(SignalSet(mask));
    super::deliver::mask_changed(lwp);

    // The alternate stack as the frame recorded it (errors ignored, as
    // Linux's `restore_altstack` does).
    let base = get(&bytes, UC_STACK_OFFSET);
    let flags = u32::from_le_bytes(
        bytes[UC_STACK_OFFSET + 8..UC_STACK_OFFSET + 12]
            .try_into()
            .expect("four bytes"),
    );
    let size = get(&bytes, UC_STACK_OFFSET + 16);
    if alternate_stack_flags(lwp, frame.rsp) != SS_ONSTACK {
        if flags & SS_DISABLE != 0 {
            lwp.set_alternate_stack((0, 0, 0));
        } else if size >= 2048 {
            lwp.set_alternate_stack((base, 0, size));
        }
    }
    Ok(frame.rax)
}
