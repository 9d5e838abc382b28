//! Stopping the machine.
//!
//! With QEMU's `isa-debug-exit` device (port 0xf4, which the runner always
//! adds), writing a value ends QEMU with status `(value << 1) | 1`: 0x10 for
//! success (33) and 0x11 for failure (35). Without the device the write does
//! nothing and the CPU halts cleanly with interrupts off.

use x86_64::instructions::port::Port;

const DEBUG_EXIT_PORT: u16 = 0xf4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0x10,
    Failure = 0x11,
}

pub fn exit(code: ExitCode) -> ! {
    // SAFETY: port 0xf4 is isa-debug-exit under the runner; on a machine
    // without it, an unclaimed port write is ignored.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(code as u32) };
    crate::console::emergency_write(format_args!(
        "spindle: halted ({})\n",
        if code == ExitCode::Success {
            "success"
        } else {
            "failure"
        }
    ));
    crate::arch::halt_forever()
}
