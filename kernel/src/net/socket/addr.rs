//! IPv4 socket addresses (`struct sockaddr_in`) as the socket calls read
//! and write them, and whether the interface can reach one.
//!
//! Owns no state. Parsing follows Linux's order: the length is checked
//! before the family (`EINVAL` first, then `EAFNOSUPPORT`).

use smoltcp::wire::{IpAddress, IpCidr, IpEndpoint, IpListenEndpoint, Ipv4Address};

use super::AF_INET;
use crate::errno::Errno;
use crate::net::StackInner;

/// An IPv4 socket address (`struct sockaddr_in`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockAddr {
    pub ip: Ipv4Address,
    pub port: u16,
}

/// `sizeof(struct sockaddr_in)`.
pub const SOCKADDR_IN_SIZE: usize = 16;

impl SockAddr {
    pub const fn new(ip: [u8; 4], port: u16) -> SockAddr {
        SockAddr {
            ip: Ipv4Address::new(ip[0], ip[1], ip[2], ip[3]),
            port,
        }
    }

    pub const UNSPECIFIED: SockAddr = SockAddr::new([0; 4], 0);

    /// Parses a `struct sockaddr_in` (`EINVAL` if short, then
    /// `EAFNOSUPPORT` for another family than AF_INET, or than AF_UNSPEC
    /// when `unspec` allows it).
    pub fn parse(bytes: &[u8], unspec: bool) -> Result<SockAddr, Errno> {
        if bytes.len() < SOCKADDR_IN_SIZE {
            return Err(Errno::EINVAL);
        }
        let family = u16::from_le_bytes([bytes[0], bytes[1]]);
        if family != AF_INET && !(unspec && family == AF_UNSPEC) {
            return Err(Errno::EAFNOSUPPORT);
        }
        Ok(SockAddr {
            ip: Ipv4Address::new(bytes[4], bytes[5], bytes[6], bytes[7]),
            port: u16::from_be_bytes([bytes[2], bytes[3]]),
        })
    }

    /// The `struct sockaddr_in` bytes.
    pub fn to_bytes(self) -> [u8; SOCKADDR_IN_SIZE] {
        let mut bytes = [0u8; SOCKADDR_IN_SIZE];
        bytes[..2].copy_from_slice(&AF_INET.to_le_bytes());
        bytes[2..4].copy_from_slice(&self.port.to_be_bytes());
        bytes[4..8].copy_from_slice(&self.ip.octets());
        bytes
    }

    pub(super) fn endpoint(self) -> IpEndpoint {
        IpEndpoint::new(IpAddress::Ipv4(self.ip), self.port)
    }

    pub(super) fn listen_endpoint(self) -> IpListenEndpoint {
        IpListenEndpoint {
            addr: (!self.ip.is_unspecified()).then_some(IpAddress::Ipv4(self.ip)),
            port: self.port,
        }
    }

    pub(super) fn from_endpoint(endpoint: IpEndpoint) -> SockAddr {
        match endpoint.addr {
            IpAddress::Ipv4(ip) => SockAddr {
                ip,
                port: endpoint.port,
            },
        }
    }
}

/// `AF_UNSPEC`: "no address" (`connect` of a datagram socket disconnects).
pub const AF_UNSPEC: u16 = 0;

/// Whether the interface can send to `ip`: a broadcast or multicast
/// address, one on a network of the interface, or (unless `on_link_only`,
/// `MSG_DONTROUTE`) any other through a default route (`ENETUNREACH`
/// otherwise, as Linux's route lookup).
pub fn routable(inner: &StackInner, ip: Ipv4Address, on_link_only: bool) -> bool {
    ip.is_broadcast()
        || ip.is_multicast()
        || inner.iface.ip_addrs().iter().any(|cidr| match cidr {
            IpCidr::Ipv4(cidr) => cidr.contains_addr(&ip),
        })
        || (!on_link_only && inner.iface.routes().get_default_ipv4_route().is_some())
}
