//! Frame-pointer backtraces for panics and fatal exceptions.
//!
//! The kernel is built with frame pointers, so each frame begins with the
//! caller's `rbp` followed by the return address. The walk only follows
//! frames that lie in mapped upper-half memory, so a corrupt chain ends the
//! walk instead of faulting again. Addresses are printed raw; resolve them
//! with `addr2line -e <kernel ELF>`.

use crate::mm::paging;

const MAX_FRAMES: usize = 32;

/// Prints the return addresses of the frame chain starting at `rbp`.
pub fn print_from(mut rbp: u64) {
    for _ in 0..MAX_FRAMES {
        if rbp == 0 || !rbp.is_multiple_of(8) || rbp < 0xffff_8000_0000_0000 {
            break;
        }
        if !paging::is_mapped(rbp) || !paging::is_mapped(rbp + 8) {
            break;
        }
        // SAFETY: both words were just checked to be mapped kernel memory;
        // reading them has no side effects.
        let (caller_rbp, return_address) =
            unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
        if return_address == 0 {
            break;
        }
        crate::console::emergency_write(format_args!("    {return_address:#018x}\n"));
        rbp = caller_rbp;
    }
}

/// The current frame pointer.
#[inline(always)]
pub fn current_frame_pointer() -> u64 {
    let rbp: u64;
    // SAFETY: reads a register, no memory access.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags))
    };
    rbp
}
