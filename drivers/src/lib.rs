//! Spindle's device drivers.
//!
//! Drivers here know their hardware and nothing of the kernel's threads,
//! processes or network stack: the kernel wraps them in its own locks and
//! decides who calls them: the 16550 UART and the PCI building blocks
//! (configuration access, BAR assignment, MSI-X); virtio-net arrives with
//! the network issue. Host unit tests build with `std`.
#![cfg_attr(not(test), no_std)]

pub mod pci;
pub mod serial;
