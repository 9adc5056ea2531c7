//! Header parsing: frame bytes -> [`FlowKey`].
//!
//! Hot-path rule: this runs once per received packet (tens of Mpps per core). It
//! must not allocate, lock, log, or panic **on any input bytes**: no `unwrap`,
//! `expect`, or slice indexing whose bounds depend on the packet. Headers are
//! read through [`Hdr`], a fixed-size view obtained with one bounds check
//! (`get` + `first_chunk`); its accessors take compile-time offsets that are checked
//! against the header size at compile time, so after the one check every read is
//! panic-free. Multi-byte fields are read with `from_be_bytes`.
//!
//! # What is parsed (OVS `miniflow_extract` semantics)
//!
//! Ethernet II and 802.3 (LLC/SNAP ethertype, else `dl_type` =
//! [`FLOW_DL_TYPE_NONE`]); up to two VLAN tags with TPID 0x8100 or 0x88a8; ARP and
//! RARP (Ethernet/IPv4 only); IPv4 (options skipped via IHL, L2 padding ignored via
//! total length, fragments); IPv6 (hop-by-hop, routing, destination options,
//! fragment and AH extension headers, at most [`MAX_IPV6_EXT_HEADERS`]); TCP, UDP,
//! SCTP ports, ICMP and ICMPv6 type/code, ICMPv6 neighbour discovery target and
//! link-layer address options.
//!
//! A header's fields are written to the key only when the whole header is present
//! and sane; parsing then stops at the first problem and reports it, so a partial
//! key always holds the outer headers. Fragments other than the first have no L4
//! fields (IPv6 later fragments get `nw_proto` = 44, as in OVS).

use crate::flow_key::{
    FlowKey, ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_MIN, ETH_TYPE_RARP,
    ETH_TYPE_VLAN_8021AD, ETH_TYPE_VLAN_8021Q, FLOW_DL_TYPE_NONE, FLOW_NW_FRAG_ANY,
    FLOW_NW_FRAG_LATER, IPPROTO_FRAGMENT, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP,
    IPPROTO_UDP, TCP_FLAGS_MASK, VLAN_CFI,
};
use crate::stats::ParseError;

/// Most IPv6 extension headers walked before giving up with
/// [`ParseError::TooManyIpv6ExtHeaders`]. Bounds the per-packet work on crafted
/// packets; real traffic carries at most a handful.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// Byte offsets of the network and transport headers in the frame, for actions that
/// rewrite them. [`Offsets::NONE`] when the header is absent or was not reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Offsets {
    /// Start of the L3 header: after the VLAN tags and any LLC/SNAP header.
    /// Set whenever the L2 headers parsed, whatever `dl_type` is.
    pub l3: u16,
    /// Start of the L4 header: after IPv4 options / IPv6 extension headers. Set
    /// only for IPv4/IPv6 packets that carry an L4 header (not later fragments).
    pub l4: u16,
}

impl Offsets {
    /// Marks an absent header.
    pub const NONE: u16 = u16::MAX;
}

impl Default for Offsets {
    fn default() -> Self {
        Offsets {
            l3: Self::NONE,
            l4: Self::NONE,
        }
    }
}

/// Fills `key` (fully overwritten: every field reset first) from the frame bytes.
/// Returns None when every present header parsed, or Some(reason) when parsing stopped
/// early: the key then holds what was parsed up to that point (partial key).
///
/// Metadata fields (`recirc_id`, tunnel, registers, `metadata`) are zero afterwards;
/// the caller sets them when the packet has any.
#[inline]
pub fn parse(data: &[u8], in_port: u32, key: &mut FlowKey) -> Option<ParseError> {
    parse_with_offsets(data, in_port, key).0
}

/// [`parse`], also returning where the L3 and L4 headers start.
#[inline]
pub fn parse_with_offsets(
    data: &[u8],
    in_port: u32,
    key: &mut FlowKey,
) -> (Option<ParseError>, Offsets) {
    *key = FlowKey::default();
    key.in_port = in_port;
    let mut ofs = Offsets::default();
    let r = parse_frame(data, key, &mut ofs);
    (r.err(), ofs)
}

/// A header of `N` bytes whose presence has been checked once.
///
/// Accessors take the field offset as a const generic and check `OFF + len <= N`
/// at compile time, so they cannot panic.
#[derive(Clone, Copy)]
struct Hdr<'a, const N: usize>(&'a [u8; N]);

impl<'a, const N: usize> Hdr<'a, N> {
    /// The `N` bytes at `off` in `data`, or `None` if `data` is too short.
    #[inline(always)]
    fn at(data: &'a [u8], off: usize) -> Option<Self> {
        data.get(off..)?.first_chunk::<N>().map(Hdr)
    }

    #[inline(always)]
    fn u8<const OFF: usize>(self) -> u8 {
        const { assert!(OFF < N) }
        // In bounds: OFF < N is checked at compile time above.
        self.0[OFF]
    }

    #[inline(always)]
    fn bytes<const OFF: usize, const LEN: usize>(self) -> [u8; LEN] {
        const { assert!(OFF + LEN <= N) }
        let mut out = [0u8; LEN];
        // In bounds and same length: OFF + LEN <= N is checked at compile time.
        out.copy_from_slice(&self.0[OFF..OFF + LEN]);
        out
    }

    #[inline(always)]
    fn be16<const OFF: usize>(self) -> u16 {
        u16::from_be_bytes(self.bytes::<OFF, 2>())
    }

    #[inline(always)]
    fn be32<const OFF: usize>(self) -> u32 {
        u32::from_be_bytes(self.bytes::<OFF, 4>())
    }
}

/// `off` as an [`Offsets`] value. Header offsets are bounded far below 65535 (L2 is at
/// most 30 bytes, IPv6 extension headers at most 8 * 2 KiB), so the fallback is
/// unreachable; it only keeps the conversion panic-free.
#[inline(always)]
fn ofs16(off: usize) -> u16 {
    u16::try_from(off).unwrap_or(Offsets::NONE)
}

#[inline(always)]
fn is_vlan_tpid(t: u16) -> bool {
    t == ETH_TYPE_VLAN_8021Q || t == ETH_TYPE_VLAN_8021AD
}

#[inline(always)]
fn parse_frame(data: &[u8], key: &mut FlowKey, ofs: &mut Offsets) -> Result<(), ParseError> {
    // Ethernet: dst(6) src(6) type(2).
    let eth = Hdr::<14>::at(data, 0).ok_or(ParseError::TruncatedEthernet)?;
    key.dl_dst = eth.bytes::<0, 6>();
    key.dl_src = eth.bytes::<6, 6>();
    // `pos` is the offset of the current TPID/ethertype field.
    let mut pos = 12;
    let mut ethertype = eth.be16::<12>();

    // VLAN tags: tpid(2) tci(2) then the next ethertype(2).
    for (tci, tpid) in key.vlan_tci.iter_mut().zip(key.vlan_tpid.iter_mut()) {
        if !is_vlan_tpid(ethertype) {
            break;
        }
        let Some(tag) = Hdr::<6>::at(data, pos) else {
            key.dl_type = ethertype;
            return Err(ParseError::TruncatedVlan);
        };
        *tpid = ethertype;
        *tci = tag.be16::<2>() | VLAN_CFI;
        pos += 4;
        ethertype = tag.be16::<4>();
    }
    if is_vlan_tpid(ethertype) {
        key.dl_type = ethertype;
        return Err(ParseError::TooManyVlans);
    }

    let mut l3 = pos + 2;
    key.dl_type = if ethertype >= ETH_TYPE_MIN {
        ethertype
    } else {
        // 802.3 length field. An LLC/SNAP header with OUI 0 carries an ethertype.
        match Hdr::<8>::at(data, l3) {
            Some(llc) if llc.bytes::<0, 6>() == [0xaa, 0xaa, 0x03, 0, 0, 0] => {
                l3 += 8;
                let t = llc.be16::<6>();
                if t >= ETH_TYPE_MIN {
                    t
                } else {
                    FLOW_DL_TYPE_NONE
                }
            }
            _ => FLOW_DL_TYPE_NONE,
        }
    };
    ofs.l3 = ofs16(l3);
    // l3 <= data.len(): the header views above covered every byte before it.
    let l3data = data.get(l3..).unwrap_or_default();

    match key.dl_type {
        ETH_TYPE_IPV4 => parse_ipv4(l3data, l3, key, ofs),
        ETH_TYPE_IPV6 => parse_ipv6(l3data, l3, key, ofs),
        ETH_TYPE_ARP | ETH_TYPE_RARP => parse_arp(l3data, key),
        _ => Ok(()),
    }
}

#[inline(always)]
fn parse_arp(l3: &[u8], key: &mut FlowKey) -> Result<(), ParseError> {
    // hrd(2) pro(2) hln(1) pln(1) op(2) sha(6) spa(4) tha(6) tpa(4)
    let arp = Hdr::<28>::at(l3, 0).ok_or(ParseError::TruncatedArp)?;
    if arp.be16::<0>() != 1
        || arp.be16::<2>() != ETH_TYPE_IPV4
        || arp.u8::<4>() != 6
        || arp.u8::<5>() != 4
    {
        return Err(ParseError::UnsupportedArp);
    }
    let op = arp.be16::<6>();
    key.nw_proto = u8::try_from(op).unwrap_or(0);
    key.arp_sha = arp.bytes::<8, 6>();
    key.nw_src = arp.be32::<14>();
    key.arp_tha = arp.bytes::<18, 6>();
    key.nw_dst = arp.be32::<24>();
    Ok(())
}

#[inline(always)]
fn parse_ipv4(
    l3: &[u8],
    l3_off: usize,
    key: &mut FlowKey,
    ofs: &mut Offsets,
) -> Result<(), ParseError> {
    let ip = Hdr::<20>::at(l3, 0).ok_or(ParseError::TruncatedIpv4)?;
    let ver_ihl = ip.u8::<0>();
    if ver_ihl >> 4 != 4 {
        return Err(ParseError::BadIpv4Header);
    }
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    let tot_len = usize::from(ip.be16::<2>());
    if ihl < 20 || tot_len < ihl {
        return Err(ParseError::BadIpv4Header);
    }
    if ihl > l3.len() {
        return Err(ParseError::TruncatedIpv4);
    }
    key.nw_tos = ip.u8::<1>();
    let frag_off = ip.be16::<6>();
    key.nw_ttl = ip.u8::<8>();
    key.nw_proto = ip.u8::<9>();
    key.nw_src = ip.be32::<12>();
    key.nw_dst = ip.be32::<16>();
    // MF set or fragment offset non-zero.
    if frag_off & 0x3fff != 0 {
        key.nw_frag = FLOW_NW_FRAG_ANY;
        if frag_off & 0x1fff != 0 {
            key.nw_frag |= FLOW_NW_FRAG_LATER;
        }
    }
    // The payload ends at the total length: Ethernet padding is not L4 data.
    let Some(payload) = l3.get(ihl..tot_len) else {
        return Err(ParseError::TruncatedIpv4);
    };
    if key.nw_frag & FLOW_NW_FRAG_LATER != 0 {
        return Ok(());
    }
    ofs.l4 = ofs16(l3_off + ihl);
    parse_l4(key.nw_proto, false, payload, key)
}

#[inline(always)]
fn parse_ipv6(
    l3: &[u8],
    l3_off: usize,
    key: &mut FlowKey,
    ofs: &mut Offsets,
) -> Result<(), ParseError> {
    // ver/tc/label(4) plen(2) nxt(1) hlim(1) src(16) dst(16)
    let ip = Hdr::<40>::at(l3, 0).ok_or(ParseError::TruncatedIpv6)?;
    let vtcfl = ip.be32::<0>();
    if vtcfl >> 28 != 6 {
        return Err(ParseError::BadIpv6Header);
    }
    // Truncation: the shift leaves exactly the 8 traffic-class bits.
    key.nw_tos = (vtcfl >> 20) as u8;
    key.ipv6_label = vtcfl & 0x000f_ffff;
    let plen = usize::from(ip.be16::<4>());
    let mut next = ip.u8::<6>();
    key.nw_proto = next;
    key.nw_ttl = ip.u8::<7>();
    key.ipv6_src = ip.bytes::<8, 16>();
    key.ipv6_dst = ip.bytes::<24, 16>();
    let Some(payload) = l3.get(40..40 + plen) else {
        return Err(ParseError::TruncatedIpv6);
    };

    // Extension headers. `pos` is the offset in `payload` of the header `next` names.
    let mut pos = 0usize;
    let mut walked = 0usize;
    loop {
        const HOPOPT: u8 = 0;
        const ROUTING: u8 = 43;
        const DSTOPTS: u8 = 60;
        const AH: u8 = 51;
        let ext = match next {
            HOPOPT | ROUTING | DSTOPTS | AH | IPPROTO_FRAGMENT => {
                if walked == MAX_IPV6_EXT_HEADERS {
                    return Err(ParseError::TooManyIpv6ExtHeaders);
                }
                walked += 1;
                // Every extension header is at least 8 bytes.
                Hdr::<8>::at(payload, pos).ok_or(ParseError::TruncatedIpv6ExtHeader)?
            }
            _ => break,
        };
        let hdr_len = match next {
            IPPROTO_FRAGMENT => {
                // nxt(1) reserved(1) offset(13 bits) res(2) M(1) id(4)
                let offlg = ext.be16::<2>();
                if offlg & 0xfff9 != 0 {
                    key.nw_frag = FLOW_NW_FRAG_ANY;
                    if offlg & 0xfff8 != 0 {
                        key.nw_frag |= FLOW_NW_FRAG_LATER;
                        key.nw_proto = IPPROTO_FRAGMENT;
                        return Ok(());
                    }
                }
                8
            }
            AH => (usize::from(ext.u8::<1>()) + 2) * 4,
            _ => (usize::from(ext.u8::<1>()) + 1) * 8,
        };
        if payload.len() - pos < hdr_len {
            // `pos <= payload.len()`: the 8-byte view at `pos` succeeded.
            return Err(ParseError::TruncatedIpv6ExtHeader);
        }
        next = ext.u8::<0>();
        key.nw_proto = next;
        pos += hdr_len;
    }
    ofs.l4 = ofs16(l3_off + 40 + pos);
    let l4 = payload.get(pos..).unwrap_or_default();
    parse_l4(next, true, l4, key)
}

#[inline(always)]
fn parse_l4(proto: u8, ipv6: bool, l4: &[u8], key: &mut FlowKey) -> Result<(), ParseError> {
    match proto {
        IPPROTO_TCP => {
            // src(2) dst(2) seq(4) ack(4) off/flags(2) ...
            let tcp = Hdr::<20>::at(l4, 0).ok_or(ParseError::TruncatedL4)?;
            let ctl = tcp.be16::<12>();
            let hdr_len = usize::from(ctl >> 12) * 4;
            if hdr_len < 20 {
                return Err(ParseError::BadTcpHeader);
            }
            if hdr_len > l4.len() {
                return Err(ParseError::TruncatedL4);
            }
            key.tp_src = tcp.be16::<0>();
            key.tp_dst = tcp.be16::<2>();
            key.tcp_flags = ctl & TCP_FLAGS_MASK;
            Ok(())
        }
        IPPROTO_UDP => {
            let udp = Hdr::<8>::at(l4, 0).ok_or(ParseError::TruncatedL4)?;
            key.tp_src = udp.be16::<0>();
            key.tp_dst = udp.be16::<2>();
            Ok(())
        }
        IPPROTO_SCTP => {
            let sctp = Hdr::<12>::at(l4, 0).ok_or(ParseError::TruncatedL4)?;
            key.tp_src = sctp.be16::<0>();
            key.tp_dst = sctp.be16::<2>();
            Ok(())
        }
        IPPROTO_ICMP if !ipv6 => {
            let icmp = Hdr::<8>::at(l4, 0).ok_or(ParseError::TruncatedL4)?;
            key.tp_src = u16::from(icmp.u8::<0>());
            key.tp_dst = u16::from(icmp.u8::<1>());
            Ok(())
        }
        IPPROTO_ICMPV6 if ipv6 => parse_icmpv6(l4, key),
        _ => Ok(()),
    }
}

#[inline(always)]
fn parse_icmpv6(l4: &[u8], key: &mut FlowKey) -> Result<(), ParseError> {
    const ND_NEIGHBOR_SOLICIT: u8 = 135;
    const ND_NEIGHBOR_ADVERT: u8 = 136;
    let icmp = Hdr::<8>::at(l4, 0).ok_or(ParseError::TruncatedL4)?;
    let (ty, code) = (icmp.u8::<0>(), icmp.u8::<1>());
    key.tp_src = u16::from(ty);
    key.tp_dst = u16::from(code);
    if code != 0 || (ty != ND_NEIGHBOR_SOLICIT && ty != ND_NEIGHBOR_ADVERT) {
        return Ok(());
    }
    parse_nd(l4, key)
}

/// Neighbour solicitation/advertisement: type(1) code(1) csum(2) flags(4) target(16)
/// then options: type(1) len-in-8-octets(1) data.
#[cold]
fn parse_nd(l4: &[u8], key: &mut FlowKey) -> Result<(), ParseError> {
    const ND_OPT_SOURCE_LINKADDR: u8 = 1;
    const ND_OPT_TARGET_LINKADDR: u8 = 2;
    let nd = Hdr::<24>::at(l4, 0).ok_or(ParseError::TruncatedL4)?;
    key.nd_target = nd.bytes::<8, 16>();
    let mut opts = l4.get(24..).unwrap_or_default();
    while let Some(opt) = Hdr::<8>::at(opts, 0) {
        let opt_len = usize::from(opt.u8::<1>()) * 8;
        if opt_len == 0 || opt_len > opts.len() {
            return Err(bad_nd(key));
        }
        if opt_len == 8 {
            let lladdr = opt.bytes::<2, 6>();
            match opt.u8::<0>() {
                ND_OPT_SOURCE_LINKADDR => {
                    if key.arp_sha != [0; 6] {
                        return Err(bad_nd(key));
                    }
                    key.arp_sha = lladdr;
                }
                ND_OPT_TARGET_LINKADDR => {
                    if key.arp_tha != [0; 6] {
                        return Err(bad_nd(key));
                    }
                    key.arp_tha = lladdr;
                }
                _ => {}
            }
        }
        opts = opts.get(opt_len..).unwrap_or_default();
    }
    Ok(())
}

#[cold]
fn bad_nd(key: &mut FlowKey) -> ParseError {
    key.nd_target = [0; 16];
    key.arp_sha = [0; 6];
    key.arp_tha = [0; 6];
    ParseError::BadNdOption
}
