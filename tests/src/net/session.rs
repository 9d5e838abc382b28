//! A TCP connection to the guest built by hand over a raw-frame link
//! (`frames::FrameLink`): handshake, data, the echo of it acknowledged as
//! it comes, and a FIN each way; plus which frames carry a checksum that
//! does not hold (the kernel's RX checks must drop and count each).
//!
//! Theory: the host side plays a small but honest TCP: in-order data
//! only (anything else is answered with a duplicate ACK), its own data
//! sent within the guest's window and sent again from the first
//! unacknowledged byte when nothing moves for `RETRY`. Every segment the
//! guest sends is checked (IPv4 and TCP checksums, addresses, ports), and
//! every byte that comes back is compared with what was sent.

use super::frames::{
    ACK, ETH_IPV4, FIN, FrameLink, GUEST_IP, HOST_IP, HOST_MAC, PROTO_ICMP, PROTO_TCP, PSH, RST,
    SYN, Tcp, arp_request_frame, checksum, parse_ethernet, parse_ipv4, tcp_checksum, tcp_frame,
};
use std::time::{Duration, Instant};

/// The payload of one segment from the host.
const MSS: usize = 1000;
/// No progress for this long: send again from the first unacked byte.
const RETRY: Duration = Duration::from_millis(400);

/// A TCP segment from the guest: its header fields and payload.
struct Segment {
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    payload: Vec<u8>,
}

/// The segment in `frame` if it is TCP from `GUEST_IP:port` to
/// `HOST_IP:sport`, to `HOST_MAC`, with both checksums right.
fn segment_from(frame: &[u8], port: u16, sport: u16) -> Option<Segment> {
    let (dst, _, ty, body) = parse_ethernet(frame)?;
    let ip = parse_ipv4(body)?;
    let s = ip.payload;
    if ty != ETH_IPV4 || dst != HOST_MAC || ip.src != GUEST_IP || ip.dst != HOST_IP {
        return None;
    }
    if ip.proto != PROTO_TCP || s.len() < 20 || tcp_checksum(ip.src, ip.dst, s) != 0 {
        return None;
    }
    let be16 = |o: usize| u16::from_be_bytes([s[o], s[o + 1]]);
    let be32 = |o: usize| u32::from_be_bytes([s[o], s[o + 1], s[o + 2], s[o + 3]]);
    let offset = usize::from(s[12] >> 4) * 4;
    if be16(0) != port || be16(2) != sport || offset < 20 || offset > s.len() {
        return None;
    }
    Some(Segment {
        seq: be32(4),
        ack: be32(8),
        flags: s[13],
        window: be16(14),
        payload: s[offset..].to_vec(),
    })
}

/// The state of the host side of the connection.
struct Conn {
    port: u16,
    sport: u16,
    /// Our first data byte's sequence number (ISS + 1).
    base: u32,
    /// The guest's first data byte's sequence number (its ISS + 1).
    peer_base: u32,
    /// Bytes of ours the guest acknowledged (our FIN counts one).
    acked: usize,
    /// Bytes of ours sent (from `acked` on, possibly again).
    sent: usize,
    window: usize,
    received: Vec<u8>,
    peer_fin: bool,
    reset: bool,
}

impl Conn {
    fn segment(&self, flags: u8, at: usize, payload: &[u8]) -> Vec<u8> {
        tcp_frame(&Tcp {
            sport: self.sport,
            dport: self.port,
            seq: self.base.wrapping_add(at as u32),
            ack: self.rcv_next(),
            flags,
            window: 65535,
            options: Vec::new(),
            payload: payload.to_vec(),
        })
    }

    fn rcv_next(&self) -> u32 {
        self.peer_base
            .wrapping_add(self.received.len() as u32)
            .wrapping_add(u32::from(self.peer_fin))
    }

    /// Takes one guest segment; `true` when it moved something.
    fn take(&mut self, link: &FrameLink, s: Segment, limit: usize) -> Result<bool, String> {
        if s.flags & RST != 0 {
            self.reset = true;
            return Ok(true);
        }
        let mut moved = false;
        if s.flags & ACK != 0 {
            let acked = s.ack.wrapping_sub(self.base) as usize;
            if acked > self.acked && acked <= limit {
                self.acked = acked;
                self.sent = self.sent.max(acked);
                moved = true;
            }
            self.window = usize::from(s.window);
        }
        let has_data = !s.payload.is_empty() || s.flags & FIN != 0;
        // How much of the segment we have already (a resent segment may
        // overlap what came): only what follows is taken.
        let have = self.rcv_next().wrapping_sub(s.seq) as usize;
        if has_data && !self.peer_fin && have <= s.payload.len() {
            let new = &s.payload[have..];
            self.received.extend_from_slice(new);
            self.peer_fin = s.flags & FIN != 0;
            moved |= !new.is_empty() || self.peer_fin;
        }
        if has_data {
            // In order or not, say where we are.
            link.send(&self.segment(ACK, self.sent, &[]))?;
        }
        Ok(moved)
    }
}

/// Connects from `HOST_IP:sport` to the guest's `port` over `link`, sends
/// `data`, reads the echo back, closes; returns what came back (the
/// caller compares). Fails on a reset, on a segment past what was sent,
/// or when nothing moves for `timeout`.
pub fn echo_over_link(
    link: &FrameLink,
    port: u16,
    sport: u16,
    data: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    link.drain()?;
    let iss = 0x2000_0000u32.wrapping_add(u32::from(sport) << 12);
    let syn = tcp_frame(&Tcp::syn(sport, port, iss));
    let synack = link.exchange(&syn, timeout, |f| {
        segment_from(f, port, sport).filter(|s| s.flags & (SYN | ACK) == SYN | ACK)
    })?;
    let Some(synack) = synack else {
        return Err(format!(
            "no SYN-ACK from port {port} within {:.0} s",
            timeout.as_secs_f64()
        ));
    };
    if synack.ack != iss.wrapping_add(1) {
        return Err(format!(
            "the SYN-ACK acknowledges {}, not {}",
            synack.ack,
            iss.wrapping_add(1)
        ));
    }
    let mut c = Conn {
        port,
        sport,
        base: iss.wrapping_add(1),
        peer_base: synack.seq.wrapping_add(1),
        acked: 0,
        sent: 0,
        window: usize::from(synack.window),
        received: Vec::new(),
        peer_fin: false,
        reset: false,
    };
    link.send(&c.segment(ACK, 0, &[]))?;
    // Our FIN is byte `data.len()`; the guest acknowledging it makes
    // `acked` one more.
    let end = data.len() + 1;
    let probe = arp_request_frame(GUEST_IP);
    let mut last_progress = Instant::now();
    loop {
        if c.reset {
            return Err(format!(
                "the guest reset the connection ({} of {} bytes acknowledged, {} echoed)",
                c.acked,
                data.len(),
                c.received.len()
            ));
        }
        let fin_acked = c.acked == end;
        if fin_acked && c.peer_fin {
            link.send(&c.segment(ACK, end, &[]))?;
            return Ok(c.received);
        }
        if last_progress.elapsed() > timeout {
            return Err(format!(
                "no progress for {:.0} s: {} of {} bytes acknowledged, {} echoed, FIN {}",
                timeout.as_secs_f64(),
                c.acked.min(data.len()),
                data.len(),
                c.received.len(),
                if c.peer_fin {
                    "received"
                } else {
                    "not received"
                }
            ));
        }
        // Data within the window, then our FIN once all came back.
        while c.sent < data.len() && c.sent < c.acked + c.window.max(1) {
            let room = c.acked + c.window.max(1) - c.sent;
            let len = MSS.min(data.len() - c.sent).min(room);
            link.send(&c.segment(ACK | PSH, c.sent, &data[c.sent..c.sent + len]))?;
            c.sent += len;
        }
        if c.sent == data.len() && c.acked >= data.len() && c.received.len() >= data.len() {
            link.send(&c.segment(ACK | FIN, data.len(), &[]))?;
            c.sent = end;
        }
        // The resent frame is an ARP request: harmless, unlike a stray ACK.
        let mut moved = Ok(false);
        let got = link.exchange(&probe, RETRY, |f| {
            let s = segment_from(f, port, sport)?;
            moved = c.take(link, s, end);
            matches!(moved, Err(_) | Ok(true)).then_some(())
        })?;
        if moved? && got.is_some() {
            last_progress = Instant::now();
        } else {
            // Nothing moved: send again from the first unacked byte.
            c.sent = c.acked;
        }
        if c.received.len() > data.len() {
            return Err(format!(
                "{} bytes came back, {} were sent",
                c.received.len(),
                data.len()
            ));
        }
    }
}

/// True for a frame whose IPv4 header checksum, or (under a sound IPv4
/// header) whose TCP or ICMP checksum, does not hold: the kernel's RX
/// frame checks must drop (and count) every such frame.
pub fn checksum_broken(frame: &[u8]) -> bool {
    let Some((_, _, ETH_IPV4, p)) = parse_ethernet(frame) else {
        return false;
    };
    if p.len() < 20 || p[0] >> 4 != 4 {
        return false;
    }
    let ihl = usize::from(p[0] & 0xf) * 4;
    if ihl < 20 || ihl > p.len() {
        return false;
    }
    if checksum(&p[..ihl]) != 0 {
        return true;
    }
    let Some(ip) = parse_ipv4(p) else {
        return false;
    };
    let fragment = u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0;
    let s = ip.payload;
    match ip.proto {
        _ if fragment => false,
        PROTO_TCP => s.len() >= 20 && tcp_checksum(ip.src, ip.dst, s) != 0,
        PROTO_ICMP => s.len() >= 8 && checksum(s) != 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::frames::{flood_frame, malformed_frames};

    #[test]
    fn the_broken_checksums_are_the_named_ones() {
        let mut broken: Vec<&str> = malformed_frames()
            .iter()
            .filter(|(_, f)| checksum_broken(f))
            .map(|(n, _)| *n)
            .collect();
        broken.sort_unstable();
        assert_eq!(
            broken,
            [
                "bad ICMP checksum",
                "bad IPv4 header checksum",
                "bad TCP checksum"
            ]
        );
        let flood: Vec<u32> = (0..12)
            .filter(|&i| checksum_broken(&flood_frame(i)))
            .collect();
        assert_eq!(flood, [1, 5, 7, 11]);
    }

    #[test]
    fn guest_segments_are_read_strictly() {
        let mut t = Tcp::syn(7777, 41000, 99);
        t.flags = ACK | PSH;
        t.payload = b"echo".to_vec();
        let mut f = tcp_frame(&t);
        // From the guest to the host: swap the addresses (checksums hold,
        // the pseudo-header sums the same).
        let (src, dst) = (f[26..30].to_vec(), f[30..34].to_vec());
        f[26..30].copy_from_slice(&dst);
        f[30..34].copy_from_slice(&src);
        f[0..6].copy_from_slice(&HOST_MAC);
        let s = segment_from(&f, 7777, 41000).expect("a segment");
        assert_eq!((s.seq, s.payload.as_slice()), (99, &b"echo"[..]));
        assert!(segment_from(&f, 7777, 41001).is_none());
        let last = f.len() - 1;
        f[last] ^= 1;
        assert!(segment_from(&f, 7777, 41000).is_none());
    }
}
