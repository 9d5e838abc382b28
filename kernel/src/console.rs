//! The kernel console on COM1 and the `log` backend.
//!
//! Owns the COM1 UART (behind `CONSOLE`, an `IrqSpinLock`; it is a leaf lock:
//! nothing else is taken while it is held). Log lines carry the monotonic
//! time since boot and the level: `[    0.012345] INFO  mem: ...`. Raw lines
//! (`println!`) carry no prefix; the test harness and fatal reports use them
//! because the host parses them. The level comes from `loglevel=` on the
//! kernel command line (default `info`).
//!
//! Fatal paths (panic, unexpected exceptions) use `emergency_write`, which
//! writes without the lock when the lock cannot be had: a garbled line is
//! better than a silent hang.

use core::fmt::{self, Write};

use log::{LevelFilter, Log, Metadata, Record};
use spindle_drivers::serial::{COM1, Uart16550};

use crate::{sync::IrqSpinLock, time};

static CONSOLE: IrqSpinLock<Uart16550> = IrqSpinLock::new(Uart16550::new(COM1));

struct ConsoleWriter<'a>(&'a mut Uart16550);

impl Write for ConsoleWriter<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0.write_bytes(text.as_bytes());
        Ok(())
    }
}

pub fn init() {
    CONSOLE.lock().init();
}

/// Writes formatted text to the console, under the console lock.
pub fn write_fmt(args: fmt::Arguments) {
    let mut uart = CONSOLE.lock();
    // Writing to the UART cannot fail.
    let _ = ConsoleWriter(&mut uart).write_fmt(args);
}

/// Writes raw bytes (the guest process's output) under the console lock.
pub fn write_bytes(bytes: &[u8]) {
    CONSOLE.lock().write_bytes(bytes);
}

/// Writes formatted text even if this CPU already holds the console lock.
pub fn emergency_write(args: fmt::Arguments) {
    match CONSOLE.try_lock() {
        Some(mut uart) => {
            let _ = ConsoleWriter(&mut uart).write_fmt(args);
        }
        None => {
            let mut uart = Uart16550::new(COM1);
            let _ = ConsoleWriter(&mut uart).write_fmt(args);
        }
    }
}

/// Prints a raw line (no timestamp or level) to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::write_fmt(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

struct ConsoleLogger;

static LOGGER: ConsoleLogger = ConsoleLogger;

impl Log for ConsoleLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let nanos = time::now_ns();
        let target = match record.target() {
            "spindle_kernel" => "spindle",
            target => target.strip_prefix("spindle_kernel::").unwrap_or(target),
        };
        write_fmt(format_args!(
            "[{:5}.{:06}] {:<5} {}: {}\n",
            nanos / 1_000_000_000,
            (nanos % 1_000_000_000) / 1_000,
            record.level(),
            target,
            record.args()
        ));
    }

    fn flush(&self) {}
}

/// Installs the logger at `level`.
pub fn init_logger(level: LevelFilter) {
    // Only fails if a logger is already set, which `kmain` never does twice.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
