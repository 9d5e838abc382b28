#![allow(dead_code, unused)]
use alloc::vec::Vec;
use virtio_drivers::transport::pci::bus::{DeviceFunction, PciRoot, ConfigurationAccess};
use crate::errno::Errno;
pub struct PciDevice { pub function: DeviceFunction, pub vendor_id: u16, pub device_id: u16 }
pub fn devices() -> Vec<PciDevice> { Vec::new() }
pub struct AnyCam;
impl ConfigurationAccess for AnyCam { fn read_word(&self, _: DeviceFunction, _: u8) -> u32 { 0 } fn write_word(&mut self, _: DeviceFunction, _: u8, _: u32) {} unsafe fn unsafe_clone(&self) -> Self { AnyCam } }
pub fn with_root<R>(f: impl FnOnce(&mut PciRoot<AnyCam>) -> R) -> R { let mut r = PciRoot::new(AnyCam); f(&mut r) }
pub fn read_config(_: DeviceFunction, _: u8) -> u32 { 0 }
pub fn enable_msix(_: DeviceFunction, _: &[u8]) -> Result<(), Errno> { Err(Errno::ENODEV) }
pub fn disable_msix(_: DeviceFunction) {}
pub fn intx_gsi(_: DeviceFunction) -> Option<u32> { None }
