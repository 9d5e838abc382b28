//! Devices: the buses the kernel finds them on. Today: PCI (`pci`), which
//! the network layer's virtio-net driver sits on.

pub mod pci;
