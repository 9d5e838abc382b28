//! Spindle's device drivers.
//!
//! Drivers here know their hardware and nothing of the kernel's threads,
//! processes or network stack: the kernel wraps them in its own locks and
//! decides who calls them. Today: the 16550 UART. PCI and virtio arrive with
//! the network issue.
#![no_std]

pub mod serial;
