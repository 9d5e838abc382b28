//! The panic handler: report, backtrace, stop with a failure exit code.
//!
//! A panic inside an in-kernel test is reported as that test's failure
//! first. A panic while panicking only stops the machine.

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::{arch, console, ktest, power};

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    x86_64::instructions::interrupts::disable();
    if PANICKING.swap(true, Ordering::SeqCst) {
        console::emergency_write(format_args!("KERNEL PANIC: panic while panicking\n"));
        power::exit(power::ExitCode::Failure);
    }
    let location = info
        .location()
        .map_or(("?", 0, 0), |l| (l.file(), l.line(), l.column()));
    let place = format_args!("{}:{}:{}", location.0, location.1, location.2);
    ktest::report_panic(format_args!("panicked at {}: {}", place, info.message()));
    console::emergency_write(format_args!(
        "KERNEL PANIC: at {}: {}\n  backtrace:\n",
        place,
        info.message()
    ));
    arch::backtrace::print_from(arch::backtrace::current_frame_pointer());
    power::exit(power::ExitCode::Failure)
}
