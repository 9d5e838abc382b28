//! Ethernet, ARP, IPv4, ICMP and TCP frames built by hand (with correct
//! checksums, or deliberately broken), their parsing, and a link to a
//! guest on QEMU's `-netdev socket,udp=...` (raw frames in UDP datagrams).
//!
//! The guest on that link is `GUEST_IP` (`net.ip=192.168.76.2/24
//! net.gw=192.168.76.1`) with QEMU's default MAC; the host side plays
//! `HOST_IP` with `HOST_MAC` and answers the guest's ARP requests for it.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

pub type Mac = [u8; 6];
pub type Ip = [u8; 4];

/// QEMU's default MAC for the first NIC (no `mac=` on the device).
pub const GUEST_MAC: Mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The host side's MAC: locally administered, unicast.
pub const HOST_MAC: Mac = [0x02, 0x00, 0x00, 0x76, 0x00, 0x01];
pub const BROADCAST: Mac = [0xff; 6];
pub const GUEST_IP: Ip = [192, 168, 76, 2];
/// The gateway the guest is given; the host side answers for it.
pub const HOST_IP: Ip = [192, 168, 76, 1];
/// The kernel command-line words for a guest on this link.
pub const GUEST_NET_ARGS: [&str; 2] = ["net.ip=192.168.76.2/24", "net.gw=192.168.76.1"];

pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_ARP: u16 = 0x0806;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn ethernet(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An ARP packet for Ethernet/IPv4 (`op` 1 request, 2 reply).
pub fn arp(op: u16, sha: Mac, spa: Ip, tha: Mac, tpa: Ip) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0x00, 6, 4];
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&sha);
    p.extend_from_slice(&spa);
    p.extend_from_slice(&tha);
    p.extend_from_slice(&tpa);
    p
}

/// "Who has `target`? Tell HOST_IP", broadcast.
pub fn arp_request_frame(target: Ip) -> Vec<u8> {
    let body = arp(1, HOST_MAC, HOST_IP, [0; 6], target);
    ethernet(BROADCAST, HOST_MAC, ETH_ARP, &body)
}

/// "HOST_IP is at HOST_MAC", to `mac`/`ip`.
pub fn arp_reply_frame(mac: Mac, ip: Ip) -> Vec<u8> {
    let body = arp(2, HOST_MAC, HOST_IP, mac, ip);
    ethernet(mac, HOST_MAC, ETH_ARP, &body)
}

/// An IPv4 header without options (checksum filled in) and `payload`.
pub fn ipv4(src: Ip, dst: Ip, proto: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x40, 0]); // don't fragment
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An ICMP echo request (type 8) or reply (0), checksum filled in.
pub fn icmp_echo(kind: u8, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut p = vec![kind, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(data);
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// A TCP segment's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Raw option bytes (padded with zeros to a multiple of 4).
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Tcp {
    /// A SYN from `sport` to `dport` with an MSS option of 1460.
    pub fn syn(sport: u16, dport: u16, seq: u32) -> Tcp {
        Tcp {
            sport,
            dport,
            seq,
            ack: 0,
            flags: SYN,
            window: 65535,
            options: vec![2, 4, 0x05, 0xb4],
            payload: Vec::new(),
        }
    }
}

/// The TCP checksum over the IPv4 pseudo-header and `segment`.
pub fn tcp_checksum(src: Ip, dst: Ip, segment: &[u8]) -> u16 {
    let mut buf = Vec::with_capacity(12 + segment.len());
    buf.extend_from_slice(&src);
    buf.extend_from_slice(&dst);
    buf.extend_from_slice(&[0, PROTO_TCP]);
    buf.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    buf.extend_from_slice(segment);
    checksum(&buf)
}

/// The segment's bytes, checksum filled in (as from `src` to `dst`).
pub fn tcp_segment(src: Ip, dst: Ip, t: &Tcp) -> Vec<u8> {
    let mut options = t.options.clone();
    while !options.len().is_multiple_of(4) {
        options.push(0);
    }
    let offset = ((20 + options.len()) / 4) as u8;
    let mut s = Vec::with_capacity(20 + options.len() + t.payload.len());
    s.extend_from_slice(&t.sport.to_be_bytes());
    s.extend_from_slice(&t.dport.to_be_bytes());
    s.extend_from_slice(&t.seq.to_be_bytes());
    s.extend_from_slice(&t.ack.to_be_bytes());
    s.push(offset << 4);
    s.push(t.flags);
    s.extend_from_slice(&t.window.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    s.extend_from_slice(&options);
    s.extend_from_slice(&t.payload);
    let c = tcp_checksum(src, dst, &s);
    s[16..18].copy_from_slice(&c.to_be_bytes());
    s
}

/// An IPv4 frame from the host side to the guest.
pub fn ipv4_frame(proto: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    ethernet(
        GUEST_MAC,
        HOST_MAC,
        ETH_IPV4,
        &ipv4(HOST_IP, GUEST_IP, proto, id, payload),
    )
}

pub fn tcp_frame(t: &Tcp) -> Vec<u8> {
    ipv4_frame(PROTO_TCP, 1, &tcp_segment(HOST_IP, GUEST_IP, t))
}

pub fn icmp_echo_frame(id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    ipv4_frame(PROTO_ICMP, seq, &icmp_echo(8, id, seq, data))
}

/// `(dst, src, ethertype, payload)` of a frame of at least 14 bytes.
pub fn parse_ethernet(f: &[u8]) -> Option<(Mac, Mac, u16, &[u8])> {
    if f.len() < 14 {
        return None;
    }
    let dst: Mac = f[0..6].try_into().ok()?;
    let src: Mac = f[6..12].try_into().ok()?;
    Some((dst, src, u16::from_be_bytes([f[12], f[13]]), &f[14..]))
}

/// An Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sha: Mac,
    pub spa: Ip,
    pub tha: Mac,
    pub tpa: Ip,
}

pub fn parse_arp(p: &[u8]) -> Option<Arp> {
    if p.len() < 28 || p[0..6] != [0, 1, 0x08, 0x00, 6, 4] {
        return None;
    }
    Some(Arp {
        op: u16::from_be_bytes([p[6], p[7]]),
        sha: p[8..14].try_into().ok()?,
        spa: p[14..18].try_into().ok()?,
        tha: p[18..24].try_into().ok()?,
        tpa: p[24..28].try_into().ok()?,
    })
}

/// A well-formed IPv4 packet (header checksum right, lengths consistent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4<'a> {
    pub src: Ip,
    pub dst: Ip,
    pub proto: u8,
    pub payload: &'a [u8],
}

pub fn parse_ipv4(p: &[u8]) -> Option<Ipv4<'_>> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if ihl < 20 || total < ihl || total > p.len() || checksum(&p[..ihl]) != 0 {
        return None;
    }
    Some(Ipv4 {
        src: p[12..16].try_into().ok()?,
        dst: p[16..20].try_into().ok()?,
        proto: p[9],
        payload: &p[ihl..total],
    })
}

/// A TCP header whose checksum is right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpHeader {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
}

pub fn parse_tcp(ip: &Ipv4<'_>) -> Option<TcpHeader> {
    let s = ip.payload;
    if ip.proto != PROTO_TCP || s.len() < 20 || tcp_checksum(ip.src, ip.dst, s) != 0 {
        return None;
    }
    let be32 = |o: usize| u32::from_be_bytes([s[o], s[o + 1], s[o + 2], s[o + 3]]);
    Some(TcpHeader {
        sport: u16::from_be_bytes([s[0], s[1]]),
        dport: u16::from_be_bytes([s[2], s[3]]),
        seq: be32(4),
        ack: be32(8),
        flags: s[13],
        window: u16::from_be_bytes([s[14], s[15]]),
    })
}

/// `(type, id, seq, data)` of an ICMP echo message whose checksum is right.
pub fn parse_icmp_echo<'a>(ip: &Ipv4<'a>) -> Option<(u8, u16, u16, &'a [u8])> {
    let p = ip.payload;
    if ip.proto != PROTO_ICMP || p.len() < 8 || checksum(p) != 0 {
        return None;
    }
    Some((
        p[0],
        u16::from_be_bytes([p[4], p[5]]),
        u16::from_be_bytes([p[6], p[7]]),
        &p[8..],
    ))
}

/// A TCP frame with `options` as given (no padding) and the data offset
/// `offset` (in 32-bit words) written as is; the checksum is right for
/// the bytes as built.
fn tcp_frame_raw(options: &[u8], offset: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Tcp::syn(40000, 7777, 1000);
    t.options = Vec::new();
    t.payload = Vec::new();
    let mut s = tcp_segment(HOST_IP, GUEST_IP, &t);
    s.extend_from_slice(options);
    s.extend_from_slice(payload);
    s[12] = offset << 4;
    s[16..18].copy_from_slice(&[0, 0]);
    let c = tcp_checksum(HOST_IP, GUEST_IP, &s);
    s[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(PROTO_TCP, 2, &s)
}

/// Rewrites the IPv4 header checksum of an IPv4 frame after an edit.
fn fix_ip_checksum(f: &mut [u8]) {
    let ihl = usize::from(f[14] & 0xf) * 4;
    let end = (14 + ihl).min(f.len());
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&f[14..end]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Deliberately broken frames, each with a name: every one must be
/// dropped (or answered with an error) without upsetting the guest.
pub fn malformed_frames() -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let syn = tcp_frame(&Tcp::syn(40000, 7777, 1000));
    let ping = icmp_echo_frame(0x4242, 1, b"spindle");

    // No empty frame: QEMU's socket backend takes a 0-byte datagram for
    // the end of the connection and stops reading the link for good.
    v.push(("1-byte frame", vec![0xff]));
    v.push(("truncated Ethernet header (10 bytes)", syn[..10].to_vec()));
    v.push((
        "Ethernet header only, IPv4 type",
        ethernet(GUEST_MAC, HOST_MAC, ETH_IPV4, &[]),
    ));
    v.push(("truncated IPv4 header (10 bytes)", syn[..24].to_vec()));
    let mut f = syn.clone();
    f[14] = 0x44; // IHL 4: below the minimum
    fix_ip_checksum(&mut f);
    v.push(("IPv4 IHL 4", f));
    let mut f = syn.clone();
    f[14] = 0x4f; // IHL 15: 60 bytes of header, options garbage
    fix_ip_checksum(&mut f);
    v.push(("IPv4 IHL 15 with garbage options", f));
    let mut f = syn.clone();
    f[14] = 0x65; // version 6 in an IPv4 frame
    fix_ip_checksum(&mut f);
    v.push(("IP version 6 under the IPv4 type", f));
    let mut f = syn.clone();
    f[24] ^= 0x55;
    v.push(("bad IPv4 header checksum", f));
    let mut f = syn.clone();
    f[16..18].copy_from_slice(&4000u16.to_be_bytes());
    fix_ip_checksum(&mut f);
    v.push(("IPv4 total length larger than the frame", f));
    let mut f = syn.clone();
    f[16..18].copy_from_slice(&12u16.to_be_bytes());
    fix_ip_checksum(&mut f);
    v.push(("IPv4 total length below the header", f));
    let mut f = syn.clone();
    f[20..22].copy_from_slice(&[0x20, 0x10]); // more fragments, offset 128
    fix_ip_checksum(&mut f);
    v.push(("IPv4 fragment with nothing before it", f));
    let mut f = syn.clone();
    f[20..22].copy_from_slice(&[0x1f, 0xff]); // MF, the largest offset
    fix_ip_checksum(&mut f);
    v.push(("IPv4 fragment at the largest offset", f));
    // TCP: a 10-byte header, the IP length saying so.
    let seg = tcp_segment(HOST_IP, GUEST_IP, &Tcp::syn(40000, 7777, 1000));
    v.push((
        "truncated TCP header (10 bytes)",
        ipv4_frame(PROTO_TCP, 3, &seg[..10]),
    ));
    let mut f = syn.clone();
    let last = f.len() - 1;
    f[last] ^= 0xff; // inside the options: the TCP checksum no longer holds
    v.push(("bad TCP checksum", f));
    v.push(("TCP data offset 2", tcp_frame_raw(&[], 2, &[])));
    v.push((
        "TCP data offset 15 past the segment",
        tcp_frame_raw(&[2, 4, 5, 0xb4], 15, &[]),
    ));
    v.push((
        "TCP option length 0",
        tcp_frame_raw(&[2, 0, 5, 0xb4], 6, &[]),
    ));
    v.push(("TCP option length 1", tcp_frame_raw(&[8, 1, 0, 0], 6, &[])));
    v.push((
        "TCP option running past the header",
        tcp_frame_raw(&[8, 40, 0, 0], 6, &[]),
    ));
    v.push((
        "TCP MSS option of length 3",
        tcp_frame_raw(&[2, 3, 5, 0, 1, 1, 1, 1], 7, &[]),
    ));
    v.push((
        "TCP MSS option of length 6",
        tcp_frame_raw(&[2, 6, 5, 0xb4, 0, 0, 1, 0], 7, &[]),
    ));
    v.push(("TCP MSS 0", tcp_frame_raw(&[2, 4, 0, 0], 6, &[])));
    v.push((
        "TCP window scale of length 2 and shift 200",
        tcp_frame_raw(&[3, 2, 1, 1, 3, 3, 200, 1], 7, &[]),
    ));
    v.push((
        "TCP SACK option of length 3",
        tcp_frame_raw(&[5, 3, 0, 0, 0, 0, 0, 0], 7, &[]),
    ));
    v.push((
        "TCP option kind 255 with length 255",
        tcp_frame_raw(&[255, 255, 0, 0], 6, &[]),
    ));
    v.push((
        "TCP with every flag set",
        tcp_frame(&Tcp {
            flags: 0xff,
            ..Tcp::syn(40001, 7777, 5)
        }),
    ));
    v.push((
        "TCP RST|SYN with data to the echo port",
        tcp_frame(&Tcp {
            flags: SYN | RST,
            payload: vec![0xaa; 100],
            ..Tcp::syn(40002, 7777, 5)
        }),
    ));
    v.push((
        "TCP ACK for a connection that does not exist",
        tcp_frame(&Tcp {
            flags: ACK | PSH,
            ack: 12345,
            payload: b"hello".to_vec(),
            ..Tcp::syn(40003, 7777, 99)
        }),
    ));
    let mut f = ping.clone();
    let last = f.len() - 1;
    f[last] ^= 0x01;
    v.push(("bad ICMP checksum", f));
    v.push((
        "ICMP truncated to 2 bytes",
        ipv4_frame(PROTO_ICMP, 4, &[8, 0]),
    ));
    v.push(("unknown IP protocol 253", ipv4_frame(253, 5, &[1, 2, 3, 4])));
    v.push((
        "ARP truncated to 10 bytes",
        ethernet(
            BROADCAST,
            HOST_MAC,
            ETH_ARP,
            &arp(1, HOST_MAC, HOST_IP, [0; 6], GUEST_IP)[..10],
        ),
    ));
    let mut bad_arp = arp(1, HOST_MAC, HOST_IP, [0; 6], GUEST_IP);
    bad_arp[4] = 200; // hardware address length
    v.push((
        "ARP with hardware length 200",
        ethernet(BROADCAST, HOST_MAC, ETH_ARP, &bad_arp),
    ));
    v.push((
        "ARP reply from a broadcast MAC",
        ethernet(
            GUEST_MAC,
            BROADCAST,
            ETH_ARP,
            &arp(2, BROADCAST, HOST_IP, GUEST_MAC, GUEST_IP),
        ),
    ));
    v.push((
        "unknown ethertype 0x88b5",
        ethernet(GUEST_MAC, HOST_MAC, 0x88b5, &[0; 46]),
    ));
    v.push((
        "VLAN-tagged frame",
        ethernet(GUEST_MAC, HOST_MAC, 0x8100, &[0, 5, 0x08, 0x00, 0x45, 0]),
    ));
    // 9000 bytes: a jumbo frame past the guest's MTU, as an IPv4 packet
    // whose lengths agree, and as garbage.
    let mut big = Tcp::syn(40004, 7777, 7);
    big.flags = ACK;
    big.payload = vec![0x5a; 9000 - 14 - 20 - 24];
    v.push(("oversized IPv4/TCP frame of 9000 bytes", tcp_frame(&big)));
    let mut junk = ethernet(GUEST_MAC, HOST_MAC, ETH_IPV4, &[]);
    junk.resize(9000, 0xa5);
    v.push(("oversized garbage frame of 9000 bytes", junk));
    let mut f = ipv4_frame(PROTO_ICMP, 6, &icmp_echo(8, 1, 1, &vec![0x11; 2000]));
    f.truncate(1514);
    v.push(("ICMP echo cut at 1514 bytes, lengths saying 2042", f));
    v
}

/// Resets for the half-open connections the malformed frames may have
/// started (their SYNs with odd options but valid checksums, from ports
/// 40000-40004 to the echo port), so later SYNs find the listener free.
pub fn malformed_cleanup() -> Vec<Vec<u8>> {
    [
        (40000, 1000),
        (40001, 5),
        (40002, 5),
        (40003, 99),
        (40004, 7),
    ]
    .into_iter()
    .map(|(sport, iss): (u16, u32)| {
        tcp_frame(&Tcp {
            flags: RST,
            seq: iss.wrapping_add(1),
            options: Vec::new(),
            ..Tcp::syn(sport, 7777, 0)
        })
    })
    .collect()
}

/// Frame `i` of a flood: valid and broken frames in turn (SYNs to a port
/// nobody listens on, bad checksums, truncations, ARP requests for other
/// addresses, pings).
pub fn flood_frame(i: u32) -> Vec<u8> {
    let port = 20000 + (i % 20000) as u16;
    match i % 6 {
        0 => tcp_frame(&Tcp::syn(port, 9, i)),
        1 => {
            let mut f = tcp_frame(&Tcp::syn(port, 7777, i));
            let last = f.len() - 1;
            f[last] ^= 0x80;
            f
        }
        2 => tcp_frame(&Tcp::syn(port, 7777, i))[..30].to_vec(),
        3 => arp_request_frame([192, 168, 76, (i % 200) as u8 + 50]),
        4 => icmp_echo_frame(0x7777, i as u16, &[0x33; 56]),
        _ => {
            let mut f = tcp_frame(&Tcp::syn(port, 7777, i));
            f[24] ^= 0xff; // bad IPv4 checksum
            f
        }
    }
}

/// The host end of a `-netdev socket,udp=...` link.
pub struct FrameLink {
    sock: UdpSocket,
    qemu: SocketAddr,
    /// The UDP port QEMU listens on (`localaddr`).
    pub udp_local: u16,
    /// Our UDP port, where QEMU sends the guest's frames (`udp`).
    pub udp_remote: u16,
}

impl FrameLink {
    /// Binds our end now; QEMU's port is a free one.
    pub fn open() -> Result<FrameLink, String> {
        let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("binding UDP: {e}"))?;
        let udp_remote = sock
            .local_addr()
            .map_err(|e| format!("UDP address: {e}"))?
            .port();
        let udp_local = super::free_udp_port()?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| format!("UDP timeout: {e}"))?;
        Ok(FrameLink {
            sock,
            qemu: SocketAddr::from(([127, 0, 0, 1], udp_local)),
            udp_local,
            udp_remote,
        })
    }

    /// The netdev for QEMU.
    pub fn net(&self) -> spindle_runner::Net {
        spindle_runner::Net::Socket {
            udp_local: self.udp_local,
            udp_remote: self.udp_remote,
        }
    }

    /// Hands one frame to QEMU for the guest. An empty frame is refused:
    /// QEMU would take the 0-byte datagram for the end of the link.
    pub fn send(&self, frame: &[u8]) -> Result<(), String> {
        if frame.is_empty() {
            return Err("an empty frame would end QEMU's side of the link".into());
        }
        match self.sock.send_to(frame, self.qemu) {
            Ok(_) => Ok(()),
            // Nobody listening yet (QEMU starting): the datagram is lost,
            // as a frame on a wire would be.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            Err(e) => Err(format!("sending a frame of {} bytes: {e}", frame.len())),
        }
    }

    /// Receives the guest's frames until `want` accepts one or `timeout`
    /// passes, answering the guest's ARP requests for `HOST_IP` on the
    /// way and re-sending `resend` every 500 ms (a first frame may be
    /// lost while the guest starts).
    pub fn exchange<T>(
        &self,
        resend: &[u8],
        timeout: Duration,
        mut want: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<Option<T>, String> {
        let deadline = Instant::now() + timeout;
        let mut next_send = Instant::now();
        let mut buf = vec![0u8; 65536];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if now >= next_send {
                self.send(resend)?;
                next_send = now + Duration::from_millis(500);
            }
            let n = match self.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                            | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(format!("receiving frames: {e}")),
            };
            let frame = &buf[..n];
            if let Some((_, src, ETH_ARP, body)) = parse_ethernet(frame)
                && let Some(a) = parse_arp(body)
                && a.op == 1
                && a.tpa == HOST_IP
            {
                self.send(&arp_reply_frame(src, a.spa))?;
            }
            if let Some(t) = want(frame) {
                return Ok(Some(t));
            }
        }
    }

    /// Takes every frame waiting from the guest without blocking (answering
    /// its ARP requests for `HOST_IP`); returns how many there were.
    pub fn drain(&self) -> Result<u64, String> {
        self.sock
            .set_nonblocking(true)
            .map_err(|e| format!("UDP non-blocking: {e}"))?;
        let mut buf = vec![0u8; 65536];
        let mut count = 0u64;
        let outcome = loop {
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    count += 1;
                    if let Some((_, src, ETH_ARP, body)) = parse_ethernet(&buf[..n])
                        && let Some(a) = parse_arp(body)
                        && a.op == 1
                        && a.tpa == HOST_IP
                        && let Err(e) = self.send(&arp_reply_frame(src, a.spa))
                    {
                        break Err(e);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(count),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionRefused
                    ) => {}
                Err(e) => break Err(format!("receiving frames: {e}")),
            }
        };
        self.sock
            .set_nonblocking(false)
            .map_err(|e| format!("UDP blocking: {e}"))?;
        outcome
    }

    /// Sends `count` frames made by `make` in bursts of 16 with a
    /// millisecond between bursts, taking the guest's frames meanwhile;
    /// returns how many frames came from the guest during the flood and
    /// the second after it.
    pub fn flood(&self, count: u32, make: impl Fn(u32) -> Vec<u8>) -> Result<u64, String> {
        let mut answers = 0;
        for i in 0..count {
            self.send(&make(i))?;
            if i % 16 == 15 {
                answers += self.drain()?;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            answers += self.drain()?;
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(answers)
    }

    /// The guest answers an ARP request for `GUEST_IP`; returns its MAC.
    pub fn arp_probe(&self, timeout: Duration) -> Result<Mac, String> {
        let got = self.exchange(&arp_request_frame(GUEST_IP), timeout, |f| {
            let (dst, _, ty, body) = parse_ethernet(f)?;
            let a = parse_arp(body)?;
            (ty == ETH_ARP && dst == HOST_MAC && a.op == 2 && a.spa == GUEST_IP && a.tpa == HOST_IP)
                .then_some(a.sha)
        })?;
        got.ok_or_else(|| {
            format!(
                "no ARP reply for {} within {:.0} s",
                show_ip(GUEST_IP),
                timeout.as_secs_f64()
            )
        })
    }

    /// The guest answers an ICMP echo request with the same id, seq and data.
    pub fn ping(&self, seq: u16, timeout: Duration) -> Result<(), String> {
        let data = format!("spindle ping {seq}").into_bytes();
        let got = self.exchange(&icmp_echo_frame(0x5e5e, seq, &data), timeout, |f| {
            let (dst, _, ty, body) = parse_ethernet(f)?;
            let ip = parse_ipv4(body)?;
            let (kind, id, s, d) = parse_icmp_echo(&ip)?;
            (ty == ETH_IPV4
                && dst == HOST_MAC
                && ip.src == GUEST_IP
                && kind == 0
                && id == 0x5e5e
                && s == seq
                && d == data.as_slice())
            .then_some(())
        })?;
        got.ok_or_else(|| {
            format!(
                "no ICMP echo reply (seq {seq}) within {:.0} s",
                timeout.as_secs_f64()
            )
        })
    }

    /// A SYN to the guest's `port` is answered by a SYN-ACK acknowledging
    /// it; the half-open connection is then reset.
    pub fn syn_ack(&self, port: u16, sport: u16, timeout: Duration) -> Result<(), String> {
        let iss = 0x1000_0000u32.wrapping_add(u32::from(sport) << 8);
        let got = self.exchange(&tcp_frame(&Tcp::syn(sport, port, iss)), timeout, |f| {
            let (dst, _, ty, body) = parse_ethernet(f)?;
            let ip = parse_ipv4(body)?;
            let t = parse_tcp(&ip)?;
            (ty == ETH_IPV4 && dst == HOST_MAC && t.sport == port && t.dport == sport).then_some(t)
        })?;
        let Some(t) = got else {
            return Err(format!(
                "no TCP answer from port {port} to a SYN within {:.0} s",
                timeout.as_secs_f64()
            ));
        };
        if t.flags & (SYN | ACK) != SYN | ACK || t.ack != iss.wrapping_add(1) {
            return Err(format!(
                "a SYN to port {port} (seq {iss}) was answered with flags {:#04x}, ack {} \
                 instead of a SYN-ACK acknowledging {}",
                t.flags,
                t.ack,
                iss.wrapping_add(1)
            ));
        }
        self.send(&tcp_frame(&Tcp {
            flags: RST,
            seq: iss.wrapping_add(1),
            options: Vec::new(),
            ..Tcp::syn(sport, port, 0)
        }))
    }
}

pub fn show_ip(ip: Ip) -> String {
    format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        // RFC 1071's example.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
        let f = icmp_echo_frame(1, 2, b"odd");
        let ip = parse_ipv4(&f[14..]).expect("a valid IPv4 packet");
        assert_eq!(parse_icmp_echo(&ip), Some((8, 1, 2, &b"odd"[..])));
        let f = tcp_frame(&Tcp::syn(1234, 7777, 42));
        let ip = parse_ipv4(&f[14..]).unwrap();
        assert_eq!((ip.src, ip.dst), (HOST_IP, GUEST_IP));
        let t = parse_tcp(&ip).expect("a valid TCP header");
        assert_eq!((t.sport, t.dport, t.seq, t.flags), (1234, 7777, 42, SYN));
        assert_eq!(ip.payload.len(), 24); // 20 + MSS
    }

    #[test]
    fn a_known_ipv4_header_checksum() {
        // Wikipedia's IPv4 header checksum example: 0xb861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn arp_round_trips() {
        let f = arp_request_frame(GUEST_IP);
        let (dst, src, ty, body) = parse_ethernet(&f).unwrap();
        assert_eq!((dst, src, ty), (BROADCAST, HOST_MAC, ETH_ARP));
        let a = parse_arp(body).unwrap();
        assert_eq!((a.op, a.spa, a.tpa), (1, HOST_IP, GUEST_IP));
    }

    #[test]
    fn malformed_frames_really_are() {
        let frames = malformed_frames();
        assert!(frames.len() >= 30);
        let mut names: Vec<&str> = frames.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), frames.len(), "names repeat");
        let find = |n: &str| &frames.iter().find(|(m, _)| *m == n).unwrap().1;
        assert!(parse_ipv4(&find("bad IPv4 header checksum")[14..]).is_none());
        assert!(parse_ipv4(&find("IPv4 total length larger than the frame")[14..]).is_none());
        let bad_tcp = find("bad TCP checksum");
        assert!(parse_tcp(&parse_ipv4(&bad_tcp[14..]).unwrap()).is_none());
        // The option frames are well-formed IPv4 with valid TCP checksums:
        // only the options are wrong.
        let opt = find("TCP option length 0");
        let ip = parse_ipv4(&opt[14..]).unwrap();
        assert_eq!(parse_tcp(&ip).unwrap().flags, SYN);
        assert_eq!(find("oversized IPv4/TCP frame of 9000 bytes").len(), 9000);
        assert_eq!(find("oversized garbage frame of 9000 bytes").len(), 9000);
        assert_eq!(find("truncated Ethernet header (10 bytes)").len(), 10);
        for i in 0..12 {
            assert!(!flood_frame(i).is_empty());
        }
    }
}
