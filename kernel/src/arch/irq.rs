#![allow(dead_code, unused)]
use crate::errno::Errno;
pub fn register(_: fn(usize), _: usize) -> Result<u8, Errno> { Err(Errno::EBUSY) }
pub fn unregister(_: u8) {}
pub fn route_gsi(_: u32, _: u8, _: bool) -> Result<(), Errno> { Ok(()) }
pub fn unroute_gsi(_: u32) {}
