//! The RX worker's look at each received frame before the stack sees it:
//! truncated headers, lengths past the frame, bad checksums and TCP
//! options that do not parse are dropped here and counted on the ring.
//! Owns nothing. Checksums are verified once, here (the stack is told the
//! "hardware" checked them), on the worker's own copy of the frame, never
//! on the shared DMA buffer (no second read of what the device wrote).

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpPacket, EthernetFrame, EthernetProtocol, Icmpv4Packet, IpAddress, IpProtocol, Ipv4Packet,
    TcpPacket, TcpRepr, UdpPacket,
};

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    Ethernet,
    Arp,
    Ipv4Header,
    Ipv4Checksum,
    Tcp,
    Udp,
    Icmp,
}

/// `Ok` if the stack may see `frame`.
pub fn check_frame(frame: &[u8]) -> Result<(), Malformed> {
    let ethernet = EthernetFrame::new_checked(frame).map_err(|_| Malformed::Ethernet)?;
    match ethernet.ethertype() {
        EthernetProtocol::Arp => {
            ArpPacket::new_checked(ethernet.payload()).map_err(|_| Malformed::Arp)?;
            Ok(())
        }
        EthernetProtocol::Ipv4 => check_ipv4(ethernet.payload()),
        // Anything else the stack ignores by itself.
        _ => Ok(()),
    }
}

fn check_ipv4(packet: &[u8]) -> Result<(), Malformed> {
    let ip = Ipv4Packet::new_checked(packet).map_err(|_| Malformed::Ipv4Header)?;
    if !ip.verify_checksum() {
        return Err(Malformed::Ipv4Checksum);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        // Fragments are not reassembled; the stack drops them.
        return Ok(());
    }
    let source = IpAddress::Ipv4(ip.src_addr());
    let destination = IpAddress::Ipv4(ip.dst_addr());
    let payload = ip.payload();
    match ip.next_header() {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(payload).map_err(|_| Malformed::Tcp)?;
            if !tcp.verify_checksum(&source, &destination) {
                return Err(Malformed::Tcp);
            }
            TcpRepr::parse(
                &tcp,
                &source,
                &destination,
                &ChecksumCapabilities::ignored(),
            )
            .map_err(|_| Malformed::Tcp)?;
            Ok(())
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(payload).map_err(|_| Malformed::Udp)?;
            if !udp.verify_checksum(&source, &destination) {
                return Err(Malformed::Udp);
            }
            Ok(())
        }
        IpProtocol::Icmp => {
            let icmp = Icmpv4Packet::new_checked(payload).map_err(|_| Malformed::Icmp)?;
            if !icmp.verify_checksum() {
                return Err(Malformed::Icmp);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// What the stack is told about checksums on an Ethernet device: verified
/// on receive by `check_frame`, computed on transmit by the stack.
pub fn checksum_capabilities() -> ChecksumCapabilities {
    use smoltcp::phy::Checksum;
    let mut capabilities = ChecksumCapabilities::default();
    capabilities.ipv4 = Checksum::Tx;
    capabilities.tcp = Checksum::Tx;
    capabilities.udp = Checksum::Tx;
    capabilities.icmpv4 = Checksum::Tx;
    capabilities
}

crate::ktests! {
    fn good_and_broken_frames_are_told_apart() {
        // A valid ARP request, then the same truncated.
        let mut arp = [0u8; 42];
        arp[..6].fill(0xff);
        arp[6..12].copy_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x57]);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        arp[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(check_frame(&arp), Ok(()));
        assert_eq!(check_frame(&arp[..20]), Err(Malformed::Arp));
        assert_eq!(check_frame(&arp[..10]), Err(Malformed::Ethernet));
        // An IPv4 header whose total length runs past the frame.
        let mut ip = [0u8; 34];
        ip[12..14].copy_from_slice(&[0x08, 0x00]);
        ip[14] = 0x45;
        ip[16..18].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(check_frame(&ip), Err(Malformed::Ipv4Header));
        // Right length, wrong header checksum.
        ip[16..18].copy_from_slice(&20u16.to_be_bytes());
        ip[24..26].copy_from_slice(&[0x12, 0x34]);
        assert_eq!(check_frame(&ip), Err(Malformed::Ipv4Checksum));
    }
}
