//! Instructions that fault, each at a known address with a known length,
//! so a handler can step over it (`rip += length`) and so the expected
//! `si_addr` and `rip` are known. Naked functions: no prologue, the bytes
//! are exactly the instructions written (the unit tests check them).

use std::arch::naked_asm;

/// `mov rax, qword ptr [rdi]`: 48 8b 07.
pub const LOAD_LEN: u64 = 3;
/// `mov qword ptr [rdi], rdi`: 48 89 3f.
pub const STORE_LEN: u64 = 3;
/// `ud2`: 0f 0b.
pub const UD2_LEN: u64 = 2;
/// `div rsi`: 48 f7 f6, after `mov rax, rdi` (48 89 f8) and
/// `xor edx, edx` (31 d2).
pub const DIV_LEN: u64 = 3;
pub const DIV_OFFSET: u64 = 5;

/// Loads the word at `addr` (the load is the first instruction).
///
/// # Safety
/// Faults unless `addr` is readable; the caller handles the SIGSEGV.
#[unsafe(naked)]
pub unsafe extern "C" fn load(addr: u64) -> u64 {
    naked_asm!("mov rax, qword ptr [rdi]", "ret")
}

/// Stores `addr` at `addr` (the store is the first instruction).
///
/// # Safety
/// Faults unless `addr` is writable; the caller handles the SIGSEGV or
/// owns the memory.
#[unsafe(naked)]
pub unsafe extern "C" fn store(addr: u64) {
    naked_asm!("mov qword ptr [rdi], rdi", "ret")
}

/// `ud2` (the first instruction).
///
/// # Safety
/// Always raises SIGILL; the caller handles it.
#[unsafe(naked)]
pub unsafe extern "C" fn ud2() {
    naked_asm!("ud2", "ret")
}

/// `dividend / divisor` with `div` at [`div_address`].
///
/// # Safety
/// Raises SIGFPE when `divisor` is 0; the caller handles it.
#[unsafe(naked)]
pub unsafe extern "C" fn divide(dividend: u64, divisor: u64) -> u64 {
    naked_asm!("mov rax, rdi", "xor edx, edx", "div rsi", "ret")
}

/// The address of the `div` instruction in [`divide`].
pub fn div_address() -> u64 {
    divide as *const () as u64 + DIV_OFFSET
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(addr: u64, n: usize) -> Vec<u8> {
        // SAFETY: code is readable and each function is longer than `n`.
        unsafe { std::slice::from_raw_parts(addr as *const u8, n).to_vec() }
    }

    #[test]
    fn the_instructions_are_encoded_as_documented() {
        assert_eq!(bytes(load as *const () as u64, 3), [0x48, 0x8b, 0x07]);
        assert_eq!(bytes(store as *const () as u64, 3), [0x48, 0x89, 0x3f]);
        assert_eq!(bytes(ud2 as *const () as u64, 2), [0x0f, 0x0b]);
        assert_eq!(
            bytes(divide as *const () as u64, 5),
            [0x48, 0x89, 0xf8, 0x31, 0xd2]
        );
        assert_eq!(bytes(div_address(), 3), [0x48, 0xf7, 0xf6]);
    }

    #[test]
    fn the_functions_work_on_good_input() {
        let mut word = 0u64;
        let p = &mut word as *mut u64 as u64;
        // SAFETY: `word` is live, readable and writable; 9 / 2 is defined.
        unsafe {
            store(p);
            assert_eq!(load(p), p);
            assert_eq!(divide(9, 2), 4);
        }
    }
}
