//! Test and benchmark traffic: Ethernet/IPv4/UDP frames with correct checksums, and
//! flow mixes. Used by the demo's traffic source, tests and `perf`.

/// One UDP flow's headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpFlow {
    pub dl_src: [u8; 6],
    pub dl_dst: [u8; 6],
    pub nw_src: [u8; 4],
    pub nw_dst: [u8; 4],
    pub tp_src: u16,
    pub tp_dst: u16,
}

/// Internet checksum (RFC 1071) of `data`, folded, not yet complemented.
fn ones_sum(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// A frame of exactly `frame_len` bytes (no FCS; at least 42: Ethernet + IPv4 + UDP)
/// carrying `flow`, its payload filled with `fill`.
pub fn udp_frame(flow: &UdpFlow, frame_len: usize, fill: u8) -> Vec<u8> {
    let frame_len = frame_len.max(42);
    let ip_len = (frame_len - 14) as u16;
    let udp_len = ip_len - 20;
    let mut f = Vec::with_capacity(frame_len);
    f.extend_from_slice(&flow.dl_dst);
    f.extend_from_slice(&flow.dl_src);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&flow.nw_src);
    f.extend_from_slice(&flow.nw_dst);
    let csum = !(ones_sum(&f[ip_start..ip_start + 20], 0) as u16);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());
    let udp_start = f.len();
    f.extend_from_slice(&flow.tp_src.to_be_bytes());
    f.extend_from_slice(&flow.tp_dst.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(frame_len, fill);
    // UDP checksum over the pseudo-header and the datagram.
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&flow.nw_src);
    pseudo.extend_from_slice(&flow.nw_dst);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&udp_len.to_be_bytes());
    let sum = ones_sum(&f[udp_start..], ones_sum(&pseudo, 0));
    let mut udp_csum = !(sum as u16);
    if udp_csum == 0 {
        udp_csum = 0xffff;
    }
    f[udp_start + 6..udp_start + 8].copy_from_slice(&udp_csum.to_be_bytes());
    f
}

/// `n` distinct flows from 10.0.0.1 to 10.1.x.y, UDP ports varying with the index.
pub fn flows(n: usize) -> Vec<UdpFlow> {
    (0..n)
        .map(|i| UdpFlow {
            dl_src: [0x02, 0, 0, 0, 0, 0x01],
            dl_dst: [0x02, 0, 0, 0, 0, 0x02],
            nw_src: [10, 0, 0, 1],
            nw_dst: [10, 1, (i >> 8) as u8, i as u8],
            tp_src: 1024 + (i % 50000) as u16,
            tp_dst: 5000,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_parses_with_valid_checksums() {
        let flow = flows(3)[2];
        let f = udp_frame(&flow, 64, 0xab);
        assert_eq!(f.len(), 64);
        let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            panic!("not ipv4")
        };
        assert_eq!(ip.header().destination(), [10, 1, 0, 2]);
        assert_eq!(
            ip.header().to_header().calc_header_checksum(),
            ip.header().header_checksum()
        );
        let Some(etherparse::TransportSlice::Udp(udp)) = p.transport else {
            panic!("not udp")
        };
        assert_eq!(udp.source_port(), 1026);
        let expect = udp
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), udp.payload())
            .unwrap();
        assert_eq!(udp.checksum(), expect);
    }

    #[test]
    fn short_lengths_are_raised_to_the_minimum() {
        assert_eq!(udp_frame(&flows(1)[0], 10, 0).len(), 42);
    }
}
