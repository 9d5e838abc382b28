//! Spindle's device drivers.
//!
//! Drivers here know their hardware and nothing of the kernel's threads,
//! processes or network stack: the kernel wraps them in its own locks and
//! decides who calls them: the 16550 UART, PCI configuration access and
//! virtio-net's queues.
#![no_std]

extern crate alloc;

pub mod serial;
pub mod virtio_net;
