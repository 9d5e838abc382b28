//! The 16550 UART, driven by polling through x86 port I/O.
//!
//! Owns one UART's registers. It has no lock of its own: the caller keeps one
//! `Uart16550` behind whatever lock fits (the kernel console uses an
//! interrupt-safe spin lock, the control channel a sleeping mutex).
//! `is_present` tells whether a UART answers at the base at all (an empty
//! I/O port reads as 0xff), before anything else is done with it.

use x86_64::instructions::port::Port;

/// The standard I/O base of COM1.
pub const COM1: u16 = 0x3f8;
/// The standard I/O base of COM2 (the kernel's control channel).
pub const COM2: u16 = 0x2f8;

const DATA: u16 = 0;
const INTERRUPT_ENABLE: u16 = 1;
const FIFO_CONTROL: u16 = 2;
const LINE_CONTROL: u16 = 3;
const MODEM_CONTROL: u16 = 4;
const LINE_STATUS: u16 = 5;
const SCRATCH: u16 = 7;

const LINE_STATUS_DATA_READY: u8 = 0x01;
const LINE_STATUS_TRANSMIT_EMPTY: u8 = 0x20;

/// Bytes the transmit FIFO takes once it is empty (16550A).
const TRANSMIT_FIFO_DEPTH: usize = 16;

/// One 16550-compatible UART at an I/O port base.
pub struct Uart16550 {
    base: u16,
    /// `init` turned the FIFOs on: an empty transmitter takes a burst.
    fifo_enabled: bool,
}

impl Uart16550 {
    /// A UART at `base`; call [`Uart16550::init`] before use.
    pub const fn new(base: u16) -> Self {
        Self {
            base,
            fifo_enabled: false,
        }
    }

    fn write_register(&mut self, register: u16, value: u8) {
        // SAFETY: the port lies in this UART's eight-register window, which
        // the caller named as a 16550 by constructing this driver.
        unsafe { Port::<u8>::new(self.base + register).write(value) }
    }

    fn read_register(&mut self, register: u16) -> u8 {
        // SAFETY: as in `write_register`; reading a UART register has no
        // effect beyond the UART.
        unsafe { Port::<u8>::new(self.base + register).read() }
    }

    /// Whether a UART answers at this base: its line status is not the
    /// 0xff of an empty port and its scratch register keeps what is
    /// written to it. Leaves the scratch register changed, nothing else.
    pub fn is_present(&mut self) -> bool {
        if self.read_register(LINE_STATUS) == 0xff {
            return false;
        }
        [0x5a, 0xa5].iter().all(|&pattern| {
            self.write_register(SCRATCH, pattern);
            self.read_register(SCRATCH) == pattern
        })
    }

    /// 115200 baud, 8N1, FIFOs on, interrupts off.
    pub fn init(&mut self) {
        self.write_register(INTERRUPT_ENABLE, 0x00);
        self.write_register(LINE_CONTROL, 0x80); // divisor latch access
        self.write_register(DATA, 0x01); // divisor 1: 115200 baud
        self.write_register(INTERRUPT_ENABLE, 0x00);
        self.write_register(LINE_CONTROL, 0x03); // 8 bits, no parity, 1 stop
        self.write_register(FIFO_CONTROL, 0xc7); // enable and clear FIFOs
        self.write_register(MODEM_CONTROL, 0x03); // DTR | RTS
        self.fifo_enabled = true;
    }

    /// Sends one byte, waiting for room in the transmitter.
    pub fn write_byte(&mut self, byte: u8) {
        while self.read_register(LINE_STATUS) & LINE_STATUS_TRANSMIT_EMPTY == 0 {
            core::hint::spin_loop();
        }
        self.write_register(DATA, byte);
    }

    /// Sends `bytes`, turning `\n` into `\r\n` as terminals expect.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if byte == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(byte);
        }
    }

    /// Sends `bytes` exactly as they are (binary data: no `\n`
    /// translation); with the FIFOs on, a FIFO's worth per wait.
    pub fn write_raw(&mut self, bytes: &[u8]) {
        let burst = if self.fifo_enabled {
            TRANSMIT_FIFO_DEPTH
        } else {
            1
        };
        for chunk in bytes.chunks(burst) {
            while self.read_register(LINE_STATUS) & LINE_STATUS_TRANSMIT_EMPTY == 0 {
                core::hint::spin_loop();
            }
            for &byte in chunk {
                self.write_register(DATA, byte);
            }
        }
    }

    /// A received byte, if one is waiting.
    pub fn try_read_byte(&mut self) -> Option<u8> {
        if self.read_register(LINE_STATUS) & LINE_STATUS_DATA_READY != 0 {
            Some(self.read_register(DATA))
        } else {
            None
        }
    }
}
