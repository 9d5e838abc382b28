//! FPU/SSE register state for context switching.
//!
//! `FpuState` is a boxed 512-byte FXSAVE area (16-byte aligned). `save`
//! stores the running CPU's x87/MMX/SSE registers into one (`fxsave64`);
//! `restore` loads them back (`fxrstor64`). `FpuState::initial` is the state
//! after `fninit` with MXCSR 0x1f80 (all SIMD exceptions masked), captured
//! once on first use (`INITIAL`, a `spin::Once`; the capturing CPU's own
//! registers are saved and restored around it) and copied from then on.
//! SSE must be enabled on the CPU (`cpu_features::enable_sse`). No locks:
//! a state belongs to whoever owns the box.

use alloc::boxed::Box;

use spin::Once;

/// MXCSR after reset: every SIMD exception masked, round to nearest.
pub const INITIAL_MXCSR: u32 = 0x1f80;
/// The x87 control word after `fninit`.
pub const INITIAL_FPU_CONTROL_WORD: u16 = 0x037f;

#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct FxsaveArea([u8; 512]);

/// A saved FPU/SSE register state (the FXSAVE image).
pub struct FpuState {
    area: Box<FxsaveArea>,
}

static INITIAL: Once<FxsaveArea> = Once::new();

impl FpuState {
    /// A fresh state as after `fninit`, MXCSR 0x1f80, XMM registers zero.
    pub fn initial() -> FpuState {
        let initial = INITIAL.call_once(capture_initial_state);
        FpuState {
            area: Box::new(*initial),
        }
    }

    /// The FXSAVE image.
    pub fn bytes(&self) -> [u8; 512] {
        self.area.0
    }

    /// The saved MXCSR (bytes 24..28 of the image).
    pub fn mxcsr(&self) -> u32 {
        u32::from_le_bytes([
            self.area.0[24],
            self.area.0[25],
            self.area.0[26],
            self.area.0[27],
        ])
    }

    /// The saved x87 control word (bytes 0..2 of the image).
    pub fn control_word(&self) -> u16 {
        u16::from_le_bytes([self.area.0[0], self.area.0[1]])
    }

    /// The saved XMM register `index` (0..16), as bytes.
    pub fn xmm(&self, index: usize) -> Option<[u8; 16]> {
        if index >= 16 {
            return None;
        }
        let start = 160 + 16 * index;
        let bytes = self.area.0.get(start..start + 16)?;
        let mut register = [0u8; 16];
        register.copy_from_slice(bytes);
        Some(register)
    }
}

/// Builds the initial image: reset the x87 unit, load the reset MXCSR,
/// zero the XMM registers, then save. The running CPU's own FPU state is
/// saved first and restored afterwards (interrupts off throughout), so a
/// thread whose registers are live here loses nothing.
fn capture_initial_state() -> FxsaveArea {
    let mut area = FxsaveArea([0; 512]);
    let mut live = FxsaveArea([0; 512]);
    let mxcsr = INITIAL_MXCSR;
    x86_64::instructions::interrupts::without_interrupts(|| {
        // SAFETY: SSE is enabled on every CPU before anything runs here. `fxsave64` writes 512 bytes into `live` and
        // later `area`, both 16-byte aligned and 512 bytes long; `fninit`, `ldmxcsr` of a valid value and the XMM
        // zeroing only touch FPU state, and `fxrstor64` of the image `fxsave64` just took puts that state back.
        unsafe {
            core::arch::asm!(
                "fxsave64 [{live}]",
                "fninit",
                "ldmxcsr [{mxcsr}]",
                ".byte 0x66, 0x0f, 0xef, 0xc0", // pxor xmm0, xmm0
                ".byte 0x66, 0x0f, 0xef, 0xc9", // pxor xmm1, xmm1
                ".byte 0x66, 0x0f, 0xef, 0xd2", // pxor xmm2, xmm2
                ".byte 0x66, 0x0f, 0xef, 0xdb", // pxor xmm3, xmm3
                ".byte 0x66, 0x0f, 0xef, 0xe4", // pxor xmm4, xmm4
                ".byte 0x66, 0x0f, 0xef, 0xed", // pxor xmm5, xmm5
                ".byte 0x66, 0x0f, 0xef, 0xf6", // pxor xmm6, xmm6
                ".byte 0x66, 0x0f, 0xef, 0xff", // pxor xmm7, xmm7
                ".byte 0x66, 0x45, 0x0f, 0xef, 0xc0", // pxor xmm8, xmm8
                ".byte 0x66, 0x45, 0x0f, 0xef, 0xc9", // pxor xmm9, xmm9
                ".byte 0x66, 0x45, 0x0f, 0xef, 0xd2", // pxor xmm10, xmm10
                ".byte 0x66, 0x45, 0x0f, 0xef, 0xdb", // pxor xmm11, xmm11
                ".byte 0x66, 0x45, 0x0f, 0xef, 0xe4", // pxor xmm12, xmm12
                ".byte 0x66, 0x45, 0x0f, 0xef, 0xed", // pxor xmm13, xmm13
                ".byte 0x66, 0x45, 0x0f, 0xef, 0xf6", // pxor xmm14, xmm14
                ".byte 0x66, 0x45, 0x0f, 0xef, 0xff", // pxor xmm15, xmm15
                "fxsave64 [{area}]",
                "fxrstor64 [{live}]",
                mxcsr = in(reg) &mxcsr,
                area = in(reg) area.0.as_mut_ptr(),
                live = in(reg) live.0.as_mut_ptr(),
                options(nostack),
            )
        }
    });
    area
}

/// The running CPU's FPU/SSE registers as an FXSAVE image (the calling
/// user LWP's registers: the kernel never touches them).
pub fn save_live() -> [u8; 512] {
    let mut area = FxsaveArea([0; 512]);
    let enabled = x86_64::instructions::interrupts::are_enabled();
    x86_64::instructions::interrupts::disable();
    // SAFETY: the area is 512 bytes, 16-byte aligned and ours; interrupts
    // are off, so no switch saves or loads these registers meanwhile.
    unsafe {
        core::arch::asm!(
            "fxsave64 [{area}]",
            area = in(reg) area.0.as_mut_ptr(),
            options(nostack, preserves_flags),
        )
    };
    if enabled {
        x86_64::instructions::interrupts::enable();
    }
    area.0
}

/// Loads an FXSAVE image that user mode supplied (`rt_sigreturn`) into the
/// running CPU's registers. The MXCSR's reserved bits are cleared first, so
/// the load cannot fault.
pub fn load_live(image: &[u8; 512]) {
    let mut area = FxsaveArea(*image);
    let mxcsr = u32::from_le_bytes([area.0[24], area.0[25], area.0[26], area.0[27]]) & 0xffff;
    area.0[24..28].copy_from_slice(&mxcsr.to_le_bytes());
    // MXCSR_MASK is written by FXSAVE, ignored by FXRSTOR.
    let enabled = x86_64::instructions::interrupts::are_enabled();
    x86_64::instructions::interrupts::disable();
    // SAFETY: 512 bytes, 16-byte aligned; the MXCSR has only defined bits
    // (bits 16 and up cleared), so `fxrstor64` cannot fault; interrupts are
    // off, so no switch saves these registers half-loaded.
    unsafe {
        core::arch::asm!(
            "fxrstor64 [{area}]",
            area = in(reg) area.0.as_ptr(),
            options(nostack, preserves_flags, readonly),
        )
    };
    if enabled {
        x86_64::instructions::interrupts::enable();
    }
}

/// Saves the running CPU's FPU/SSE registers into `state`.
pub fn save(state: &mut FpuState) {
    // SAFETY: the area is 512 bytes, 16-byte aligned and exclusively ours;
    // `fxsave64` only writes it.
    unsafe {
        core::arch::asm!(
            "fxsave64 [{area}]",
            area = in(reg) state.area.0.as_mut_ptr(),
            options(nostack, preserves_flags),
        )
    };
}

/// Loads the running CPU's FPU/SSE registers from `state`.
pub fn restore(state: &FpuState) {
    // SAFETY: the area is 512 bytes and 16-byte aligned, and it came from `fxsave64` (via `save` or
    // `initial`), so its MXCSR has no reserved bits set and `fxrstor64` cannot fault; it only loads
    // FPU registers, which the soft-float kernel does not use.
    unsafe {
        core::arch::asm!(
            "fxrstor64 [{area}]",
            area = in(reg) state.area.0.as_ptr(),
            options(nostack, preserves_flags, readonly),
        )
    };
}

/// Writes `value` into xmm0 (test support: the kernel emits no SSE).
/// Writes `value` (twice) into xmm0 of the running CPU. For tests of FPU
/// state across context switches.
pub fn write_xmm0_u64(value: u64) {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&value.to_le_bytes());
    bytes[8..].copy_from_slice(&value.to_le_bytes());
    write_xmm0(&bytes);
}

/// Reads the low half of xmm0 of the running CPU (tests).
pub fn read_xmm0_u64() -> u64 {
    let bytes = read_xmm0();
    u64::from_le_bytes(bytes[..8].try_into().expect("eight bytes"))
}

fn write_xmm0(value: &[u8; 16]) {
    // SAFETY: `movdqu xmm0, [rax]` reads 16 bytes from `value`; xmm0 is
    // not used by the soft-float kernel, so clobbering it is harmless.
    unsafe {
        core::arch::asm!(
            ".byte 0xf3, 0x0f, 0x6f, 0x00", // movdqu xmm0, [rax]
            in("rax") value.as_ptr(),
            options(nostack, preserves_flags, readonly),
        )
    };
}

/// Reads xmm0 (test support).
fn read_xmm0() -> [u8; 16] {
    let mut value = [0u8; 16];
    // SAFETY: `movdqu [rax], xmm0` writes 16 bytes into `value`.
    unsafe {
        core::arch::asm!(
            ".byte 0xf3, 0x0f, 0x7f, 0x00", // movdqu [rax], xmm0
            in("rax") value.as_mut_ptr(),
            options(nostack, preserves_flags),
        )
    };
    value
}

crate::ktests! {
    fn sse_is_enabled_on_this_cpu() {
        assert!(super::super::cpu_features::sse_enabled());
    }

    fn initial_state_is_fninit_with_default_mxcsr() {
        let state = FpuState::initial();
        assert_eq!(state.mxcsr(), INITIAL_MXCSR);
        assert_eq!(state.control_word(), INITIAL_FPU_CONTROL_WORD);
        for index in 0..16 {
            assert_eq!(state.xmm(index), Some([0; 16]), "xmm{index}");
        }
        assert_eq!(state.xmm(16), None);
    }

    fn save_and_restore_work_on_every_cpu() {
        /// 1 if SSE is on and xmm0 survives a save, a clobber and a restore
        /// on the running CPU.
        fn round_trip_here() -> u64 {
            let index = crate::cpu::current_index() as u8;
            let value: [u8; 16] = core::array::from_fn(|byte| index ^ (0x5a + byte as u8));
            let mut saved = FpuState::initial();
            write_xmm0(&value);
            save(&mut saved);
            write_xmm0(&[0xff; 16]);
            restore(&saved);
            u64::from(super::super::cpu_features::sse_enabled() && read_xmm0() == value)
        }
        for index in 0..crate::cpu::online_count() {
            assert_eq!(crate::arch::smp::call_on_cpu(index, round_trip_here), Ok(1), "CPU {index}");
        }
    }

    fn save_and_restore_round_trip_xmm0() {
        let first: [u8; 16] = core::array::from_fn(|byte| 0xa0 + byte as u8);
        let second: [u8; 16] = core::array::from_fn(|byte| 0x10 + byte as u8);
        let mut saved = FpuState::initial();
        write_xmm0(&first);
        save(&mut saved);
        assert_eq!(saved.xmm(0), Some(first), "fxsave64 stored xmm0");
        write_xmm0(&second);
        assert_eq!(read_xmm0(), second);
        restore(&saved);
        assert_eq!(read_xmm0(), first, "fxrstor64 brought xmm0 back");
        restore(&FpuState::initial());
        assert_eq!(read_xmm0(), [0; 16], "the initial state zeroes xmm0");
        write_xmm0(&second);
        let _fresh = FpuState::initial();
        assert_eq!(read_xmm0(), second, "making an initial state leaves live registers alone");
    }
}
