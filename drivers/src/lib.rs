//! Spindle's device drivers.
//!
//! Drivers here know their hardware and nothing of the kernel's threads,
//! processes or network stack: the kernel wraps them in its own locks and
//! decides who calls them: the 16550 UART, the PCI building blocks
//! (configuration access, BAR assignment, MSI-X) and virtio-net's queues.
//! Host unit tests build with `std`.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod pci;
pub mod serial;
pub mod virtio_net;
