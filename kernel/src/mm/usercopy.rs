//! Copying to and from user memory, with fault recovery.
//!
//! Every user pointer a system call receives goes through here. A range
//! must lie entirely below `vm::USER_END` without wrapping (else
//! `EFAULT`). The copy itself is `rep movsb` with an entry in the fault
//! recovery table: a page fault on a user page that a region allows is
//! resolved and the copy resumes; any other fault ends the copy with
//! `EFAULT`, never a kernel fault. With SMAP on, the copy opens user access
//! (`stac`) only for its own duration. No locks: callers must hold no spin
//! lock (a fault may take the address space's layout mutex).

use core::arch::naked_asm;
use core::sync::atomic::{AtomicBool, Ordering};

use super::vm::USER_END;
use crate::errno::Errno;

static SMAP: AtomicBool = AtomicBool::new(false);

/// Records that CR4.SMAP is on (every CPU turns it on at boot alike).
pub fn set_smap_enabled(enabled: bool) {
    SMAP.store(enabled, Ordering::Relaxed);
}

/// Checks that `[address, address + length)` is user memory.
pub fn check_range(address: u64, length: usize) -> Result<(), Errno> {
    let end = address.checked_add(length as u64).ok_or(Errno::EFAULT)?;
    if end > USER_END {
        return Err(Errno::EFAULT);
    }
    Ok(())
}

/// Checks that the calling process may write `[address, address + length)`
/// (its regions allow it; pages may still be missing): for calls that
/// must not take data they then could not hand over (`EFAULT` first).
pub fn check_writable(address: u64, length: usize) -> Result<(), Errno> {
    check_range(address, length)?;
    let end = address + length as u64;
    let vm = crate::sched::current().process.vm.lock().clone();
    let access = super::vm::Access {
        write: true,
        execute: false,
    };
    match vm {
        Some(vm) if vm.allows(address..end, access) => Ok(()),
        _ => Err(Errno::EFAULT),
    }
}

/// Copies `length` bytes; returns 0, or non-zero after an unrecoverable
/// fault.
#[unsafe(naked)]
extern "C" fn copy_bytes_plain(destination: *mut u8, source: *const u8, length: usize) -> u64 {
    naked_asm!(
        "mov rcx, rdx",
        "2: rep movsb",
        "xor eax, eax",
        "ret",
        "3: mov eax, 1",
        "ret",
        ".pushsection .extable, \"a\"",
        ".balign 8",
        ".quad 2b, 3b",
        ".popsection",
    );
}

/// As `copy_bytes_plain`, with user access opened for SMAP.
#[unsafe(naked)]
extern "C" fn copy_bytes_smap(destination: *mut u8, source: *const u8, length: usize) -> u64 {
    naked_asm!(
        "mov rcx, rdx",
        "stac",
        "2: rep movsb",
        "clac",
        "xor eax, eax",
        "ret",
        "3: clac",
        "mov eax, 1",
        "ret",
        ".pushsection .extable, \"a\"",
        ".balign 8",
        ".quad 2b, 3b",
        ".popsection",
    );
}

fn copy(destination: *mut u8, source: *const u8, length: usize) -> Result<(), Errno> {
    if length == 0 {
        return Ok(());
    }
    let status = if SMAP.load(Ordering::Relaxed) {
        copy_bytes_smap(destination, source, length)
    } else {
        copy_bytes_plain(destination, source, length)
    };
    if status == 0 {
        Ok(())
    } else {
        Err(Errno::EFAULT)
    }
}

/// Fills `destination` from user memory at `source`.
pub fn copy_from_user(destination: &mut [u8], source: u64) -> Result<(), Errno> {
    check_range(source, destination.len())?;
    copy(
        destination.as_mut_ptr(),
        source as *const u8,
        destination.len(),
    )
}

/// Writes `source` to user memory at `destination`.
pub fn copy_to_user(destination: u64, source: &[u8]) -> Result<(), Errno> {
    check_range(destination, source.len())?;
    copy(destination as *mut u8, source.as_ptr(), source.len())
}

pub fn read_u32(address: u64) -> Result<u32, Errno> {
    let mut bytes = [0u8; 4];
    copy_from_user(&mut bytes, address)?;
    Ok(u32::from_le_bytes(bytes))
}

pub fn read_u64(address: u64) -> Result<u64, Errno> {
    let mut bytes = [0u8; 8];
    copy_from_user(&mut bytes, address)?;
    Ok(u64::from_le_bytes(bytes))
}

pub fn write_u32(address: u64, value: u32) -> Result<(), Errno> {
    copy_to_user(address, &value.to_le_bytes())
}

crate::ktests! {
    fn kernel_and_wrapping_ranges_are_refused() {
        let mut buffer = [0u8; 8];
        assert_eq!(copy_from_user(&mut buffer, 0xffff_8000_0000_0000), Err(Errno::EFAULT));
        assert_eq!(copy_from_user(&mut buffer, USER_END - 4), Err(Errno::EFAULT));
        assert_eq!(copy_from_user(&mut buffer, u64::MAX - 2), Err(Errno::EFAULT));
        assert_eq!(copy_to_user(0xffff_ffff_8000_0000, &buffer), Err(Errno::EFAULT));
        assert_eq!(check_range(0x1000, 0), Ok(()));
    }

    fn unmapped_user_memory_is_efault_not_a_kernel_fault() {
        // The kernel's own tables map nothing in the lower half.
        let mut buffer = [0u8; 16];
        assert_eq!(copy_from_user(&mut buffer, 0x40_0000), Err(Errno::EFAULT));
        assert_eq!(copy_to_user(0x40_0000, &buffer), Err(Errno::EFAULT));
        assert_eq!(read_u64(0x7fff_0000_0000), Err(Errno::EFAULT));
    }
}
