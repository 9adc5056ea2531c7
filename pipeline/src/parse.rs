//! Header parsing: frame bytes -> [`FlowKey`].
//!
//! Hot-path rule: this runs once per received packet (tens of Mpps per core). It
//! must not allocate, lock, log, or panic **on any input bytes**: no `unwrap`,
//! `expect`, or slice indexing whose bounds depend on the packet. Headers are
//! read through `Hdr`, a fixed-size view obtained with one bounds check
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

/// What a "simple match" megaflow can look at (see
/// [`crate::flow_cache::FlowCache::simple_lookup`]): the fields of the key that
/// [`parse`] would fill that such a megaflow matches on, plus the TCP flags its
/// counters accumulate.
/// `repr(C)`: the fields in [`SimpleKey::word`]'s order, so that the word is
/// the struct's own eight bytes.
#[derive(Clone, Copy, Debug, Default, Eq)]
#[repr(C)]
pub struct SimpleKey {
    pub dl_type: u16,
    /// Outer VLAN TCI with [`VLAN_CFI`] set, 0 when untagged.
    pub vlan_tci: u16,
    pub nw_frag: u8,
    /// The IPv4 TOS byte (DSCP and ECN), 0 for other ethertypes: a tunnel's
    /// megaflows match the ECN bits (the outer header copies them).
    pub nw_tos: u8,
    pub tcp_flags: u16,
}

impl SimpleKey {
    /// Every field in one word: equal words, equal keys. A loop comparing
    /// many keys with one keeps that one's word.
    #[inline(always)]
    pub fn word(&self) -> u64 {
        u64::from(self.dl_type)
            | u64::from(self.vlan_tci) << 16
            | u64::from(self.nw_frag) << 32
            | u64::from(self.nw_tos) << 40
            | u64::from(self.tcp_flags) << 48
    }
}

/// One comparison of words instead of one per field: the fast path compares
/// each packet's key with the burst's first.
impl PartialEq for SimpleKey {
    #[inline(always)]
    fn eq(&self, other: &Self) -> bool {
        self.word() == other.word()
    }
}

/// The [`SimpleKey`] of a frame, read without a full parse: `Some` only for
/// frames that [`parse`] takes without any error and whose key it fills with
/// exactly these values — Ethernet II with at most one VLAN tag carrying ARP,
/// well-formed IPv4 (with its L4 header) or any other ethertype but IPv6. For
/// anything else (IPv6, two tags, 802.3 frames, malformed or truncated headers)
/// `None`: the caller takes the full parser, which counts the error.
#[inline(always)]
pub fn parse_simple(data: &[u8]) -> Option<SimpleKey> {
    if let Some((k, _)) = simple_udp(data) {
        return Some(k);
    }
    parse_simple_general(data)
}

/// A UDP datagram's IPv4 destination and UDP destination port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpDst {
    pub nw_dst: u32,
    pub tp_dst: u16,
}

/// [`parse_simple`], with the IPv4 and UDP destination of the common frame
/// (untagged IPv4 without options, UDP, not a fragment) read from the same
/// checked header; `None` beside the key for any other frame.
#[inline(always)]
pub fn parse_simple_udp(data: &[u8]) -> Option<(SimpleKey, Option<UdpDst>)> {
    if let Some((k, d)) = simple_udp(data) {
        return Some((k, Some(d)));
    }
    parse_simple_general(data).map(|k| (k, None))
}

/// The common frame, with one bounds check: untagged IPv4 without options,
/// not a fragment, UDP with its whole header inside the total length and the
/// total length inside the frame. Exactly what the general code concludes for
/// such a frame.
#[inline(always)]
fn simple_udp(data: &[u8]) -> Option<(SimpleKey, UdpDst)> {
    let h = Hdr::<42>::at(data, 0)?;
    let tot_len = usize::from(h.be16::<16>());
    if h.be16::<12>() == ETH_TYPE_IPV4
        && h.u8::<14>() == 0x45
        && h.be16::<20>() & 0x3fff == 0
        && h.u8::<23>() == IPPROTO_UDP
        && tot_len >= 28
        && 14 + tot_len <= data.len()
    {
        let k = SimpleKey {
            dl_type: ETH_TYPE_IPV4,
            vlan_tci: 0,
            nw_frag: 0,
            nw_tos: h.u8::<15>(),
            tcp_flags: 0,
        };
        let d = UdpDst {
            nw_dst: u32::from(h.be16::<30>()) << 16 | u32::from(h.be16::<32>()),
            tp_dst: h.be16::<36>(),
        };
        return Some((k, d));
    }
    None
}

/// [`parse_simple`] of any frame, field by field.
#[inline(always)]
fn parse_simple_general(data: &[u8]) -> Option<SimpleKey> {
    let eth = Hdr::<14>::at(data, 0)?;
    let mut ethertype = eth.be16::<12>();
    let mut l3 = 14;
    let mut vlan_tci = 0;
    if is_vlan_tpid(ethertype) {
        let tag = Hdr::<6>::at(data, 12)?;
        vlan_tci = tag.be16::<2>() | VLAN_CFI;
        ethertype = tag.be16::<4>();
        l3 = 18;
        if is_vlan_tpid(ethertype) {
            return None;
        }
    }
    if ethertype < ETH_TYPE_MIN {
        return None;
    }
    let mut k = SimpleKey {
        dl_type: ethertype,
        vlan_tci,
        nw_frag: 0,
        nw_tos: 0,
        tcp_flags: 0,
    };
    let l3data = data.get(l3..)?;
    match ethertype {
        ETH_TYPE_IPV6 => return None,
        ETH_TYPE_ARP | ETH_TYPE_RARP => {
            let arp = Hdr::<28>::at(l3data, 0)?;
            if arp.be16::<0>() != 1
                || arp.be16::<2>() != ETH_TYPE_IPV4
                || arp.u8::<4>() != 6
                || arp.u8::<5>() != 4
            {
                return None;
            }
        }
        ETH_TYPE_IPV4 => {
            let ip = Hdr::<20>::at(l3data, 0)?;
            let ver_ihl = ip.u8::<0>();
            let ihl = usize::from(ver_ihl & 0x0f) * 4;
            let tot_len = usize::from(ip.be16::<2>());
            if ver_ihl >> 4 != 4 || ihl < 20 || tot_len < ihl {
                return None;
            }
            let payload = l3data.get(ihl..tot_len)?;
            k.nw_tos = ip.u8::<1>();
            let frag_off = ip.be16::<6>();
            if frag_off & 0x3fff != 0 {
                k.nw_frag = FLOW_NW_FRAG_ANY;
                if frag_off & 0x1fff != 0 {
                    k.nw_frag |= FLOW_NW_FRAG_LATER;
                    return Some(k);
                }
            }
            let need = match ip.u8::<9>() {
                IPPROTO_TCP => {
                    let tcp = Hdr::<20>::at(payload, 0)?;
                    let ctl = tcp.be16::<12>();
                    let hdr_len = usize::from(ctl >> 12) * 4;
                    if hdr_len < 20 || hdr_len > payload.len() {
                        return None;
                    }
                    k.tcp_flags = ctl & TCP_FLAGS_MASK;
                    0
                }
                IPPROTO_UDP | IPPROTO_ICMP => 8,
                IPPROTO_SCTP => 12,
                _ => 0,
            };
            if payload.len() < need {
                return None;
            }
        }
        _ => {}
    }
    Some(k)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow_key::*;
    use etherparse::{
        ArpHardwareId, ArpOperation, ArpPacket, EtherType, IpDscp, IpEcn, IpFragOffset, IpHeaders,
        IpNumber, Ipv4Extensions, Ipv4Header, Ipv6Extensions, Ipv6FlowLabel, Ipv6FragmentHeader,
        Ipv6Header, Ipv6RawExtHeader, PacketBuilder, TcpOptionElement, VlanId,
    };

    /// Keys that differ in any one field, by any bit, are unequal; equal
    /// fields, equal keys.
    #[test]
    fn simple_key_equality_sees_every_field() {
        let base = SimpleKey {
            dl_type: 0x0800,
            vlan_tci: 0x1005,
            nw_frag: 1,
            nw_tos: 0xb8,
            tcp_flags: 0x012,
        };
        assert_eq!(base, base.clone());
        // Each field's width and a flip of one of its bits.
        type Flip = fn(&mut SimpleKey, u32);
        let flips: [(u32, Flip); 5] = [
            (16, |k, b| k.dl_type ^= 1 << b),
            (16, |k, b| k.vlan_tci ^= 1 << b),
            (8, |k, b| k.nw_frag ^= 1 << b),
            (8, |k, b| k.nw_tos ^= 1 << b),
            (16, |k, b| k.tcp_flags ^= 1 << b),
        ];
        for (bits, flip) in flips {
            for bit in 0..bits {
                let mut k = base;
                flip(&mut k, bit);
                assert_ne!(k, base, "{k:?}");
            }
        }
    }

    /// `parse_simple` against `parse` on one frame: when it answers, the parse is
    /// clean and agrees; returns whether it answered.
    fn simple_agrees(frame: &[u8]) -> bool {
        let mut key = FlowKey::default();
        let err = parse(frame, 1, &mut key);
        match parse_simple(frame) {
            Some(sk) => {
                assert_eq!(err, None, "{frame:02x?}");
                assert_eq!(
                    (sk.dl_type, sk.vlan_tci, sk.nw_frag, sk.tcp_flags),
                    (key.dl_type, key.vlan_tci[0], key.nw_frag, key.tcp_flags),
                    "{frame:02x?}"
                );
                true
            }
            None => false,
        }
    }

    /// Every boundary of the IPv4 and L4 checks: total lengths around each L4
    /// header's size, TCP data offsets, fragment bits, one tag or none, frames cut
    /// short. The simple reader must answer exactly when the parser is clean (for
    /// IPv4 frames, which it always reads).
    #[test]
    fn simple_reader_boundaries() {
        let mut answered = 0;
        for tagged in [false, true] {
            for proto in [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_SCTP, 47] {
                for tot_len in 0u16..64 {
                    for frag in [0u16, 0x4000, 0x2000, 0x0001, 0x2001] {
                        for doff in [4u8, 5, 6, 15] {
                            let mut f = Vec::new();
                            f.extend_from_slice(&DST);
                            f.extend_from_slice(&SRC);
                            if tagged {
                                f.extend_from_slice(&[0x81, 0x00, 0x20, 0x0a]);
                            }
                            f.extend_from_slice(&ETH_TYPE_IPV4.to_be_bytes());
                            let mut ip = [0u8; 20];
                            ip[0] = 0x45;
                            ip[2..4].copy_from_slice(&tot_len.to_be_bytes());
                            ip[6..8].copy_from_slice(&frag.to_be_bytes());
                            ip[8] = 64;
                            ip[9] = proto;
                            f.extend_from_slice(&ip);
                            let mut l4 = [0u8; 44];
                            l4[12] = doff << 4;
                            l4[13] = 0x12;
                            f.extend_from_slice(&l4);
                            for cut in [f.len(), 14 + 20 + 8, 30, 13] {
                                let frame = f.get(..cut).unwrap_or(&f);
                                let mut key = FlowKey::default();
                                let clean = parse(frame, 1, &mut key).is_none();
                                let got = simple_agrees(frame);
                                assert_eq!(got, clean, "{frame:02x?}");
                                answered += usize::from(got);
                            }
                        }
                    }
                }
            }
        }
        assert!(
            answered > 1000,
            "the simple reader answered {answered} times"
        );
        // Not for it: IPv6, two tags, 802.3 length.
        let v6 = [DST.as_slice(), &SRC, &[0x86, 0xdd], &[0x60; 60]].concat();
        assert!(!simple_agrees(&v6));
        let qinq = [
            DST.as_slice(),
            &SRC,
            &[0x88, 0xa8, 0, 1, 0x81, 0, 0, 2, 0x08, 0x06],
        ]
        .concat();
        assert!(!simple_agrees(&qinq));
        let llc = [DST.as_slice(), &SRC, &[0x00, 0x40], &[0xaa; 50]].concat();
        assert!(!simple_agrees(&llc));
    }

    const SRC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
    const DST: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
    const IN_PORT: u32 = 3;
    const V6_SRC: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11];
    const V6_DST: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x22,
    ];

    fn run(frame: &[u8]) -> (Option<ParseError>, FlowKey) {
        let mut key = FlowKey::default();
        let r = parse(frame, IN_PORT, &mut key);
        (r, key)
    }

    fn ok(frame: &[u8]) -> FlowKey {
        let (r, key) = run(frame);
        assert_eq!(r, None, "unexpected parse error, key {key:?}");
        key
    }

    /// The key an Ethernet-only parse of `dl_type` gives.
    fn l2_key(dl_type: u16) -> FlowKey {
        FlowKey {
            in_port: IN_PORT,
            dl_src: SRC,
            dl_dst: DST,
            dl_type,
            ..FlowKey::default()
        }
    }

    fn eth_hdr(ethertype: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&DST);
        v.extend_from_slice(&SRC);
        v.extend_from_slice(&ethertype.to_be_bytes());
        v
    }

    /// Hand-built IPv4 header (checksum left 0: the parser does not verify it).
    fn ipv4_hdr(proto: u8, opts: &[u8], payload_len: usize, frag: u16) -> Vec<u8> {
        assert_eq!(opts.len() % 4, 0);
        let ihl = 20 + opts.len();
        let mut v = vec![0x40 | (ihl / 4) as u8, 0x2e];
        v.extend_from_slice(&((ihl + payload_len) as u16).to_be_bytes());
        v.extend_from_slice(&[0x12, 0x34]);
        v.extend_from_slice(&frag.to_be_bytes());
        v.extend_from_slice(&[64, proto, 0, 0, 10, 0, 0, 1, 192, 168, 1, 2]);
        v.extend_from_slice(opts);
        v
    }

    fn udp_frame_v4() -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(5353, 53)
            .write(&mut f, &[1, 2, 3, 4])
            .unwrap();
        f
    }

    #[test]
    fn plain_ethernet_unknown_ethertype() {
        let mut f = eth_hdr(0x88cc);
        f.extend_from_slice(&[0u8; 46]);
        let (r, ofs) = {
            let mut k = FlowKey::default();
            let (r, ofs) = parse_with_offsets(&f, IN_PORT, &mut k);
            assert_eq!(k, l2_key(0x88cc));
            (r, ofs)
        };
        assert_eq!(r, None);
        assert_eq!(
            ofs,
            Offsets {
                l3: 14,
                l4: Offsets::NONE
            }
        );
        // Exactly 14 bytes is a complete (empty-payload) frame.
        assert_eq!(ok(&f[..14]), l2_key(0x88cc));
    }

    #[test]
    fn key_is_fully_overwritten() {
        let f = udp_frame_v4();
        let mut key = FlowKey::default();
        for w in key.words_mut() {
            *w = u64::MAX;
        }
        assert_eq!(parse(&f, IN_PORT, &mut key), None);
        assert_eq!(key, ok(&f));
        assert_eq!(key.pad0, [0; 2]);
        assert_eq!(key.pad1, [0; 4]);
        assert_eq!(key.regs, [0; FLOW_N_REGS]);
        assert_eq!((key.metadata, key.recirc_id, key.tun_id), (0, 0, 0));
    }

    #[test]
    fn ipv4_udp() {
        let f = udp_frame_v4();
        let k = ok(&f);
        assert_eq!(
            k,
            FlowKey {
                nw_src: 0x0a00_0001,
                nw_dst: 0x0a00_0002,
                nw_proto: IPPROTO_UDP,
                nw_ttl: 64,
                tp_src: 5353,
                tp_dst: 53,
                ..l2_key(ETH_TYPE_IPV4)
            }
        );
        let mut k2 = FlowKey::default();
        assert_eq!(
            parse_with_offsets(&f, IN_PORT, &mut k2).1,
            Offsets { l3: 14, l4: 34 }
        );
    }

    #[test]
    fn vlan_8021q() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .single_vlan(VlanId::try_new(100).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 32)
            .udp(1000, 2000)
            .write(&mut f, &[0; 8])
            .unwrap();
        // PCP 5, DEI clear.
        f[14] |= 5 << 5;
        let k = ok(&f);
        assert_eq!(
            k,
            FlowKey {
                vlan_tci: [(5 << VLAN_PCP_SHIFT) | VLAN_CFI | 100, 0],
                vlan_tpid: [ETH_TYPE_VLAN_8021Q, 0],
                nw_src: 0x0a00_0001,
                nw_dst: 0x0a00_0002,
                nw_proto: IPPROTO_UDP,
                nw_ttl: 32,
                tp_src: 1000,
                tp_dst: 2000,
                ..l2_key(ETH_TYPE_IPV4)
            }
        );
        assert_eq!(k.vlan_vid(), Some(100));
        let mut k2 = FlowKey::default();
        assert_eq!(
            parse_with_offsets(&f, IN_PORT, &mut k2).1,
            Offsets { l3: 18, l4: 38 }
        );
    }

    #[test]
    fn vlan_zero_vid_is_still_a_tag() {
        let mut f = eth_hdr(ETH_TYPE_VLAN_8021Q);
        f.extend_from_slice(&[0x00, 0x00, 0x88, 0xcc]);
        let k = ok(&f);
        assert_eq!(k.vlan_tci, [VLAN_CFI, 0]);
        assert_eq!(k.vlan_vid(), Some(0));
        assert_eq!(k.dl_type, 0x88cc);
    }

    #[test]
    fn qinq() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .double_vlan(VlanId::try_new(10).unwrap(), VlanId::try_new(4094).unwrap())
            .ipv6(V6_SRC, V6_DST, 255)
            .udp(1, 2)
            .write(&mut f, &[])
            .unwrap();
        assert_eq!(&f[12..14], &[0x88, 0xa8]);
        let k = ok(&f);
        assert_eq!(
            k,
            FlowKey {
                vlan_tci: [VLAN_CFI | 10, VLAN_CFI | 4094],
                vlan_tpid: [ETH_TYPE_VLAN_8021AD, ETH_TYPE_VLAN_8021Q],
                ipv6_src: V6_SRC,
                ipv6_dst: V6_DST,
                nw_proto: IPPROTO_UDP,
                nw_ttl: 255,
                tp_src: 1,
                tp_dst: 2,
                ..l2_key(ETH_TYPE_IPV6)
            }
        );
    }

    #[test]
    fn three_vlan_tags() {
        let mut f = eth_hdr(ETH_TYPE_VLAN_8021AD);
        f.extend_from_slice(&[0x00, 0x01, 0x81, 0x00]);
        f.extend_from_slice(&[0x00, 0x02, 0x81, 0x00]);
        f.extend_from_slice(&[0x00, 0x03, 0x08, 0x00]);
        f.extend_from_slice(&ipv4_hdr(IPPROTO_UDP, &[], 8, 0));
        f.extend_from_slice(&[0; 8]);
        let (r, k) = run(&f);
        assert_eq!(r, Some(ParseError::TooManyVlans));
        assert_eq!(
            k,
            FlowKey {
                vlan_tci: [VLAN_CFI | 1, VLAN_CFI | 2],
                vlan_tpid: [ETH_TYPE_VLAN_8021AD, ETH_TYPE_VLAN_8021Q],
                ..l2_key(ETH_TYPE_VLAN_8021Q)
            }
        );
    }

    #[test]
    fn arp_request() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, [0xff; 6])
            .arp(
                ArpPacket::new(
                    ArpHardwareId::ETHERNET,
                    EtherType::IPV4,
                    ArpOperation::REQUEST,
                    &SRC,
                    &[10, 0, 0, 1],
                    &[0; 6],
                    &[10, 0, 0, 254],
                )
                .unwrap(),
            )
            .write(&mut f)
            .unwrap();
        // Padded to the Ethernet minimum, as on the wire.
        f.resize(60, 0);
        let k = ok(&f);
        assert_eq!(
            k,
            FlowKey {
                dl_dst: [0xff; 6],
                nw_proto: 1,
                nw_src: 0x0a00_0001,
                nw_dst: 0x0a00_00fe,
                arp_sha: SRC,
                arp_tha: [0; 6],
                ..l2_key(ETH_TYPE_ARP)
            }
        );
        assert_eq!(
            (k.arp_op(), k.arp_spa(), k.arp_tpa()),
            (1, 0x0a00_0001, 0x0a00_00fe)
        );
    }

    fn arp_bytes(hrd: u16, pro: u16, hln: u8, pln: u8, op: u16) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&hrd.to_be_bytes());
        a.extend_from_slice(&pro.to_be_bytes());
        a.extend_from_slice(&[hln, pln]);
        a.extend_from_slice(&op.to_be_bytes());
        a.extend_from_slice(&[0xaa; 6]);
        a.extend_from_slice(&[1, 2, 3, 4]);
        a.extend_from_slice(&[0xbb; 6]);
        a.extend_from_slice(&[5, 6, 7, 8]);
        a
    }

    #[test]
    fn arp_reply_rarp_and_odd_ops() {
        let mut f = eth_hdr(ETH_TYPE_ARP);
        f.extend(arp_bytes(1, 0x0800, 6, 4, 2));
        let k = ok(&f);
        assert_eq!(
            k,
            FlowKey {
                nw_proto: 2,
                nw_src: 0x0102_0304,
                nw_dst: 0x0506_0708,
                arp_sha: [0xaa; 6],
                arp_tha: [0xbb; 6],
                ..l2_key(ETH_TYPE_ARP)
            }
        );
        // RARP parses the same way.
        let mut f = eth_hdr(ETH_TYPE_RARP);
        f.extend(arp_bytes(1, 0x0800, 6, 4, 3));
        let k = ok(&f);
        assert_eq!(
            (k.dl_type, k.nw_proto, k.nw_src),
            (ETH_TYPE_RARP, 3, 0x0102_0304)
        );
        // An opcode above 255 does not fit nw_proto: 0, like OVS.
        let mut f = eth_hdr(ETH_TYPE_ARP);
        f.extend(arp_bytes(1, 0x0800, 6, 4, 0x0101));
        let k = ok(&f);
        assert_eq!((k.nw_proto, k.nw_src), (0, 0x0102_0304));
    }

    #[test]
    fn arp_unsupported_and_truncated() {
        for (hrd, pro, hln, pln) in [
            (6, 0x0800, 6, 4),
            (1, 0x86dd, 6, 4),
            (1, 0x0800, 8, 4),
            (1, 0x0800, 6, 16),
        ] {
            let mut f = eth_hdr(ETH_TYPE_ARP);
            f.extend(arp_bytes(hrd, pro, hln, pln, 1));
            assert_eq!(
                run(&f),
                (Some(ParseError::UnsupportedArp), l2_key(ETH_TYPE_ARP))
            );
        }
        let mut f = eth_hdr(ETH_TYPE_ARP);
        f.extend(arp_bytes(1, 0x0800, 6, 4, 1));
        for len in 14..f.len() {
            assert_eq!(
                run(&f[..len]),
                (Some(ParseError::TruncatedArp), l2_key(ETH_TYPE_ARP)),
                "len {len}"
            );
        }
    }

    #[test]
    fn ipv4_tcp_with_options_and_flags() {
        let mut ip =
            Ipv4Header::new(0, 17, IpNumber::TCP, [172, 16, 0, 1], [172, 16, 0, 2]).unwrap();
        ip.dscp = IpDscp::try_new(46).unwrap();
        ip.ecn = IpEcn::ONE;
        ip.dont_fragment = true;
        // Router alert (4 bytes) + NOPs (4 bytes): IHL 7.
        ip.options = [0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00].into();
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .ip(IpHeaders::Ipv4(ip, Ipv4Extensions::default()))
            .tcp(49152, 443, 1, 1024)
            .syn()
            .ack(7)
            .ece()
            .cwr()
            .ns()
            .options(&[
                TcpOptionElement::MaximumSegmentSize(1460),
                TcpOptionElement::WindowScale(7),
                TcpOptionElement::SelectiveAcknowledgementPermitted,
            ])
            .unwrap()
            .write(&mut f, b"hello")
            .unwrap();
        assert_eq!(f[14] & 0x0f, 7);
        let mut k = FlowKey::default();
        let (r, ofs) = parse_with_offsets(&f, IN_PORT, &mut k);
        assert_eq!(r, None);
        assert_eq!(
            k,
            FlowKey {
                nw_src: 0xac10_0001,
                nw_dst: 0xac10_0002,
                nw_proto: IPPROTO_TCP,
                nw_tos: (46 << 2) | 1,
                nw_ttl: 17,
                tp_src: 49152,
                tp_dst: 443,
                tcp_flags: TCP_SYN | TCP_ACK | TCP_ECE | TCP_CWR | TCP_NS,
                ..l2_key(ETH_TYPE_IPV4)
            }
        );
        assert_eq!(
            ofs,
            Offsets {
                l3: 14,
                l4: 14 + 28
            }
        );
    }

    #[test]
    fn tcp_flags_keep_12_bits() {
        let mut f = eth_hdr(ETH_TYPE_IPV4);
        f.extend(ipv4_hdr(IPPROTO_TCP, &[], 20, 0));
        let mut tcp = vec![0, 80, 0, 81, 0, 0, 0, 0, 0, 0, 0, 0];
        tcp.extend_from_slice(&[0x5f, 0xff]); // doff 5, every flag and reserved bit
        tcp.extend_from_slice(&[0; 6]);
        f.extend(tcp);
        let k = ok(&f);
        assert_eq!((k.tp_src, k.tp_dst, k.tcp_flags), (80, 81, 0x0fff));
    }

    #[test]
    fn icmp_echo() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(0x1234, 1)
            .write(&mut f, &[0xab; 16])
            .unwrap();
        let k = ok(&f);
        assert_eq!(
            k,
            FlowKey {
                nw_src: 0x0a00_0001,
                nw_dst: 0x0a00_0002,
                nw_proto: IPPROTO_ICMP,
                nw_ttl: 64,
                tp_src: 8,
                tp_dst: 0,
                ..l2_key(ETH_TYPE_IPV4)
            }
        );
        // Destination unreachable / port unreachable: type 3 code 3.
        let mut f = eth_hdr(ETH_TYPE_IPV4);
        f.extend(ipv4_hdr(IPPROTO_ICMP, &[], 8, 0));
        f.extend_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]);
        let k = ok(&f);
        assert_eq!((k.icmp_type(), k.icmp_code()), (3, 3));
    }

    #[test]
    fn sctp_ports() {
        let mut f = eth_hdr(ETH_TYPE_IPV4);
        f.extend(ipv4_hdr(IPPROTO_SCTP, &[], 12, 0));
        f.extend_from_slice(&[0x0b, 0x59, 0x0b, 0x5a, 0, 0, 0, 0, 0, 0, 0, 0]);
        let k = ok(&f);
        assert_eq!((k.nw_proto, k.tp_src, k.tp_dst), (IPPROTO_SCTP, 2905, 2906));
    }

    #[test]
    fn unknown_ip_protocol_is_fine() {
        let mut f = eth_hdr(ETH_TYPE_IPV4);
        f.extend(ipv4_hdr(47, &[], 4, 0)); // GRE
        f.extend_from_slice(&[0, 0, 0x65, 0x58]);
        let k = ok(&f);
        assert_eq!((k.nw_proto, k.tp_src, k.tp_dst), (47, 0, 0));
    }

    #[test]
    fn ipv4_fragments() {
        let udp = [0x04, 0xd2, 0x00, 0x35, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        let base = FlowKey {
            nw_src: 0x0a00_0001,
            nw_dst: 0xc0a8_0102,
            nw_proto: IPPROTO_UDP,
            nw_tos: 0x2e,
            nw_ttl: 64,
            ..l2_key(ETH_TYPE_IPV4)
        };
        // First fragment: MF set, offset 0 -> ANY, L4 parsed.
        let mut f = eth_hdr(ETH_TYPE_IPV4);
        f.extend(ipv4_hdr(IPPROTO_UDP, &[], udp.len(), 0x2000));
        f.extend_from_slice(&udp);
        assert_eq!(
            ok(&f),
            FlowKey {
                nw_frag: FLOW_NW_FRAG_ANY,
                tp_src: 1234,
                tp_dst: 53,
                ..base
            }
        );
        // Later fragment with MF: ANY|LATER, no L4 even if the bytes look like UDP.
        for frag in [0x2000 | 185, 185, 0x1fff] {
            let mut f = eth_hdr(ETH_TYPE_IPV4);
            f.extend(ipv4_hdr(IPPROTO_UDP, &[], udp.len(), frag));
            f.extend_from_slice(&udp);
            let mut k = FlowKey::default();
            let (r, ofs) = parse_with_offsets(&f, IN_PORT, &mut k);
            assert_eq!(r, None);
            assert_eq!(
                k,
                FlowKey {
                    nw_frag: FLOW_NW_FRAG_ANY | FLOW_NW_FRAG_LATER,
                    ..base
                }
            );
            assert_eq!(
                ofs,
                Offsets {
                    l3: 14,
                    l4: Offsets::NONE
                }
            );
        }
        // DF alone is not a fragment.
        let mut f = eth_hdr(ETH_TYPE_IPV4);
        f.extend(ipv4_hdr(IPPROTO_UDP, &[], udp.len(), 0x4000));
        f.extend_from_slice(&udp);
        assert_eq!(ok(&f).nw_frag, 0);
    }

    #[test]
    fn ipv4_padding_is_not_l4() {
        // UDP header cut by the IPv4 total length, then Ethernet padding: the padding
        // must not complete the UDP header.
        let mut f = eth_hdr(ETH_TYPE_IPV4);
        f.extend(ipv4_hdr(IPPROTO_UDP, &[], 4, 0));
        f.extend_from_slice(&[0, 1, 0, 2]);
        f.resize(60, 0);
        let (r, k) = run(&f);
        assert_eq!(r, Some(ParseError::TruncatedL4));
        assert_eq!(
            (k.nw_proto, k.nw_src, k.tp_src),
            (IPPROTO_UDP, 0x0a00_0001, 0)
        );
        // A complete UDP header followed by padding is fine.
        let mut f = eth_hdr(ETH_TYPE_IPV4);
        f.extend(ipv4_hdr(IPPROTO_UDP, &[], 8, 0));
        f.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        f.resize(60, 0xee);
        let k = ok(&f);
        assert_eq!((k.tp_src, k.tp_dst), (1, 2));
    }

    #[test]
    fn bad_ipv4_headers() {
        let good = {
            let mut f = eth_hdr(ETH_TYPE_IPV4);
            f.extend(ipv4_hdr(IPPROTO_UDP, &[], 8, 0));
            f.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
            f
        };
        type Mutation = (&'static str, fn(&mut Vec<u8>));
        let cases: [Mutation; 5] = [
            ("version 6", |f| f[14] = 0x65),
            ("version 0", |f| f[14] = 0x05),
            ("ihl 4", |f| f[14] = 0x44),
            ("ihl 0", |f| f[14] = 0x40),
            ("tot_len < ihl*4", |f| {
                f[16..18].copy_from_slice(&19u16.to_be_bytes())
            }),
        ];
        for (what, mutate) in cases {
            let mut f = good.clone();
            mutate(&mut f);
            assert_eq!(
                run(&f),
                (Some(ParseError::BadIpv4Header), l2_key(ETH_TYPE_IPV4)),
                "{what}"
            );
        }
        // IHL 15 (60 bytes) in a 42-byte frame: truncated, nothing filled.
        let mut f = good.clone();
        f[14] = 0x4f;
        f[16..18].copy_from_slice(&60u16.to_be_bytes());
        assert_eq!(
            run(&f),
            (Some(ParseError::TruncatedIpv4), l2_key(ETH_TYPE_IPV4))
        );
    }

    #[test]
    fn bad_tcp_data_offset() {
        for doff in [0u8, 4] {
            let mut f = eth_hdr(ETH_TYPE_IPV4);
            f.extend(ipv4_hdr(IPPROTO_TCP, &[], 20, 0));
            f.extend_from_slice(&[0, 80, 0, 81, 0, 0, 0, 0, 0, 0, 0, 0, doff << 4, 0x02]);
            f.extend_from_slice(&[0; 6]);
            let (r, k) = run(&f);
            assert_eq!(r, Some(ParseError::BadTcpHeader));
            assert_eq!((k.nw_proto, k.tp_src, k.tcp_flags), (IPPROTO_TCP, 0, 0));
        }
        // Data offset beyond the IP payload (options missing).
        let mut f = eth_hdr(ETH_TYPE_IPV4);
        f.extend(ipv4_hdr(IPPROTO_TCP, &[], 20, 0));
        f.extend_from_slice(&[0, 80, 0, 81, 0, 0, 0, 0, 0, 0, 0, 0, 0x60, 0x02]);
        f.extend_from_slice(&[0; 6]);
        assert_eq!(run(&f).0, Some(ParseError::TruncatedL4));
    }

    fn v6_header(next: u8, payload_len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        // version 6, traffic class 0xb8, flow label 0x12345
        v.extend_from_slice(&((6u32 << 28) | (0xb8 << 20) | 0x12345).to_be_bytes());
        v.extend_from_slice(&(payload_len as u16).to_be_bytes());
        v.extend_from_slice(&[next, 7]);
        v.extend_from_slice(&V6_SRC);
        v.extend_from_slice(&V6_DST);
        v
    }

    fn v6_key() -> FlowKey {
        FlowKey {
            ipv6_src: V6_SRC,
            ipv6_dst: V6_DST,
            ipv6_label: 0x12345,
            nw_tos: 0xb8,
            nw_ttl: 7,
            ..l2_key(ETH_TYPE_IPV6)
        }
    }

    #[test]
    fn ipv6_tcp() {
        let ip = Ipv6Header {
            traffic_class: 0x28,
            flow_label: Ipv6FlowLabel::try_new(0xabcde).unwrap(),
            payload_length: 0,
            next_header: IpNumber::TCP,
            hop_limit: 63,
            source: V6_SRC,
            destination: V6_DST,
        };
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .ip(IpHeaders::Ipv6(ip, Ipv6Extensions::default()))
            .tcp(22, 40000, 9, 100)
            .psh()
            .ack(1)
            .fin()
            .write(&mut f, b"bye")
            .unwrap();
        let mut k = FlowKey::default();
        let (r, ofs) = parse_with_offsets(&f, IN_PORT, &mut k);
        assert_eq!(r, None);
        assert_eq!(
            k,
            FlowKey {
                ipv6_src: V6_SRC,
                ipv6_dst: V6_DST,
                ipv6_label: 0xabcde,
                nw_tos: 0x28,
                nw_ttl: 63,
                nw_proto: IPPROTO_TCP,
                tp_src: 22,
                tp_dst: 40000,
                tcp_flags: TCP_PSH | TCP_ACK | TCP_FIN,
                ..l2_key(ETH_TYPE_IPV6)
            }
        );
        assert_eq!(ofs, Offsets { l3: 14, l4: 54 });
    }

    fn v6_udp_with_exts(frag: Option<(u16, bool)>) -> Vec<u8> {
        let ip = Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: 0,
            next_header: IpNumber::UDP,
            hop_limit: 1,
            source: V6_SRC,
            destination: V6_DST,
        };
        let exts = Ipv6Extensions {
            hop_by_hop_options: Some(
                // Router alert option + PadN to 14 bytes: a 16-byte header.
                Ipv6RawExtHeader::new_raw(
                    IpNumber::UDP,
                    &[5, 2, 0, 0, 1, 6, 0, 0, 0, 0, 0, 0, 0, 0],
                )
                .unwrap(),
            ),
            fragment: frag.map(|(off, more)| {
                Ipv6FragmentHeader::new(
                    IpNumber::UDP,
                    IpFragOffset::try_new(off).unwrap(),
                    more,
                    0xdead_beef,
                )
            }),
            ..Ipv6Extensions::default()
        };
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .ip(IpHeaders::Ipv6(ip, exts))
            .udp(546, 547)
            .write(&mut f, &[0; 12])
            .unwrap();
        f
    }

    #[test]
    fn ipv6_hop_by_hop_and_fragment() {
        let base = FlowKey {
            ipv6_src: V6_SRC,
            ipv6_dst: V6_DST,
            nw_ttl: 1,
            ..l2_key(ETH_TYPE_IPV6)
        };
        // Hop-by-hop only.
        let f = v6_udp_with_exts(None);
        assert_eq!(f[14 + 6], 0, "next header is hop-by-hop");
        let mut k = FlowKey::default();
        let (r, ofs) = parse_with_offsets(&f, IN_PORT, &mut k);
        assert_eq!(r, None);
        assert_eq!(
            k,
            FlowKey {
                nw_proto: IPPROTO_UDP,
                tp_src: 546,
                tp_dst: 547,
                ..base
            }
        );
        assert_eq!(ofs.l4, 14 + 40 + 16);

        // Hop-by-hop + first fragment (M=1, offset 0): ANY, L4 parsed.
        let f = v6_udp_with_exts(Some((0, true)));
        let mut k = FlowKey::default();
        let (r, ofs) = parse_with_offsets(&f, IN_PORT, &mut k);
        assert_eq!(r, None);
        assert_eq!(
            k,
            FlowKey {
                nw_proto: IPPROTO_UDP,
                nw_frag: FLOW_NW_FRAG_ANY,
                tp_src: 546,
                tp_dst: 547,
                ..base
            }
        );
        assert_eq!(ofs.l4, 14 + 40 + 16 + 8);

        // Atomic fragment (offset 0, M=0): not a fragment.
        let k = ok(&v6_udp_with_exts(Some((0, false))));
        assert_eq!((k.nw_frag, k.nw_proto, k.tp_src), (0, IPPROTO_UDP, 546));

        // Later fragments: ANY|LATER, nw_proto = 44 (OVS), no L4.
        for (off, more) in [(100, true), (100, false)] {
            let f = v6_udp_with_exts(Some((off, more)));
            let mut k = FlowKey::default();
            let (r, ofs) = parse_with_offsets(&f, IN_PORT, &mut k);
            assert_eq!(r, None);
            assert_eq!(
                k,
                FlowKey {
                    nw_proto: IPPROTO_FRAGMENT,
                    nw_frag: FLOW_NW_FRAG_ANY | FLOW_NW_FRAG_LATER,
                    ..base
                }
            );
            assert_eq!(ofs.l4, Offsets::NONE);
        }
    }

    #[test]
    fn ipv6_routing_dstopts_and_ah() {
        // dstopts(8) -> routing(24) -> AH(12 + 4 ICV = 16) -> UDP
        let mut payload = Vec::new();
        payload.extend_from_slice(&[43, 0, 1, 4, 0, 0, 0, 0]);
        payload.extend_from_slice(&[51, 2, 0, 1]);
        payload.extend_from_slice(&[0; 20]);
        payload.extend_from_slice(&[17, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
        payload.extend_from_slice(&[0x30, 0x39, 0x00, 0x50, 0, 8, 0, 0]);
        let mut f = eth_hdr(ETH_TYPE_IPV6);
        f.extend(v6_header(60, payload.len()));
        f.extend(payload);
        let mut k = FlowKey::default();
        let (r, ofs) = parse_with_offsets(&f, IN_PORT, &mut k);
        assert_eq!(r, None);
        assert_eq!(
            k,
            FlowKey {
                nw_proto: IPPROTO_UDP,
                tp_src: 12345,
                tp_dst: 80,
                ..v6_key()
            }
        );
        assert_eq!(ofs.l4, 14 + 40 + 8 + 24 + 16);
    }

    #[test]
    fn ipv6_ext_header_limits() {
        // MAX_IPV6_EXT_HEADERS destination-options headers then UDP: fine.
        let build = |n: usize| {
            let mut payload = Vec::new();
            for i in 0..n {
                let next = if i + 1 == n { IPPROTO_UDP } else { 60 };
                payload.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
            }
            payload.extend_from_slice(&[0, 7, 0, 9, 0, 8, 0, 0]);
            let mut f = eth_hdr(ETH_TYPE_IPV6);
            f.extend(v6_header(60, payload.len()));
            f.extend(payload);
            f
        };
        let k = ok(&build(MAX_IPV6_EXT_HEADERS));
        assert_eq!((k.nw_proto, k.tp_src, k.tp_dst), (IPPROTO_UDP, 7, 9));
        let (r, k) = run(&build(MAX_IPV6_EXT_HEADERS + 1));
        assert_eq!(r, Some(ParseError::TooManyIpv6ExtHeaders));
        assert_eq!((k.nw_proto, k.tp_src, k.ipv6_src), (60, 0, V6_SRC));

        // A hop-by-hop header claiming 16 bytes with 8 in the payload.
        let mut f = eth_hdr(ETH_TYPE_IPV6);
        f.extend(v6_header(0, 8));
        f.extend_from_slice(&[17, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            run(&f),
            (
                Some(ParseError::TruncatedIpv6ExtHeader),
                FlowKey {
                    nw_proto: 0,
                    ..v6_key()
                }
            )
        );
        // An extension header shorter than 8 bytes.
        let mut f = eth_hdr(ETH_TYPE_IPV6);
        f.extend(v6_header(44, 4));
        f.extend_from_slice(&[17, 0, 0, 0]);
        assert_eq!(
            run(&f),
            (
                Some(ParseError::TruncatedIpv6ExtHeader),
                FlowKey {
                    nw_proto: IPPROTO_FRAGMENT,
                    ..v6_key()
                }
            )
        );
    }

    #[test]
    fn ipv6_bad_version_and_truncated_payload() {
        let mut f = eth_hdr(ETH_TYPE_IPV6);
        f.extend(v6_header(IPPROTO_UDP, 8));
        f.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        assert_eq!(ok(&f).tp_dst, 2);
        let mut bad = f.clone();
        bad[14] = 0x45;
        assert_eq!(
            run(&bad),
            (Some(ParseError::BadIpv6Header), l2_key(ETH_TYPE_IPV6))
        );
        // Payload length beyond the frame: IPv6 fields kept, L4 not parsed.
        let mut long = f.clone();
        long[18..20].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(
            run(&long),
            (
                Some(ParseError::TruncatedIpv6),
                FlowKey {
                    nw_proto: IPPROTO_UDP,
                    ..v6_key()
                }
            )
        );
        // Padding after the payload is ignored.
        let mut padded = f.clone();
        padded.extend_from_slice(&[0xff; 10]);
        assert_eq!(ok(&padded), ok(&f));
    }

    #[test]
    fn icmpv6_echo() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .ipv6(V6_SRC, V6_DST, 64)
            .icmpv6_echo_request(1, 2)
            .write(&mut f, &[0; 4])
            .unwrap();
        let k = ok(&f);
        assert_eq!(
            k,
            FlowKey {
                ipv6_src: V6_SRC,
                ipv6_dst: V6_DST,
                nw_ttl: 64,
                nw_proto: IPPROTO_ICMPV6,
                tp_src: 128,
                tp_dst: 0,
                ..l2_key(ETH_TYPE_IPV6)
            }
        );
    }

    const TARGET: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99];

    fn nd_frame(ty: u8, code: u8, opts: &[u8]) -> Vec<u8> {
        let mut icmp = vec![ty, code, 0, 0, 0x60, 0, 0, 0];
        icmp.extend_from_slice(&TARGET);
        icmp.extend_from_slice(opts);
        let mut f = eth_hdr(ETH_TYPE_IPV6);
        f.extend(v6_header(IPPROTO_ICMPV6, icmp.len()));
        f.extend(icmp);
        f
    }

    #[test]
    fn icmpv6_neighbor_discovery() {
        let sll = [1, 1, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf];
        let tll = [2, 1, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6];
        let nonce = [14, 1, 0, 0, 0, 0, 0, 0];
        // NS with a nonce and a source link-layer address option.
        let k = ok(&nd_frame(135, 0, &[nonce, sll].concat()));
        assert_eq!(
            k,
            FlowKey {
                nw_proto: IPPROTO_ICMPV6,
                tp_src: 135,
                tp_dst: 0,
                nd_target: TARGET,
                arp_sha: [0xa, 0xb, 0xc, 0xd, 0xe, 0xf],
                ..v6_key()
            }
        );
        assert_eq!(k.nd_sll(), [0xa, 0xb, 0xc, 0xd, 0xe, 0xf]);
        // NA with a target link-layer address option.
        let k = ok(&nd_frame(136, 0, &tll));
        assert_eq!(
            (k.tp_src, k.nd_target, k.nd_tll()),
            (136, TARGET, [1, 2, 3, 4, 5, 6])
        );
        assert_eq!(k.nd_sll(), [0; 6]);
        // No options, trailing bytes shorter than an option are ignored.
        let k = ok(&nd_frame(135, 0, &[1, 1, 0]));
        assert_eq!((k.nd_target, k.arp_sha), (TARGET, [0; 6]));
        // Non-zero code: not ND.
        let k = ok(&nd_frame(135, 1, &sll));
        assert_eq!((k.tp_src, k.tp_dst, k.nd_target), (135, 1, [0; 16]));
        // Bad options: length 0, past the end, repeated SLL / TLL.
        for opts in [
            vec![1, 0, 0, 0, 0, 0, 0, 0],
            vec![1, 2, 0, 0, 0, 0, 0, 0],
            [sll, sll].concat(),
            [tll, tll].concat(),
        ] {
            let (r, k) = run(&nd_frame(135, 0, &opts));
            assert_eq!(r, Some(ParseError::BadNdOption), "{opts:?}");
            assert_eq!(
                k,
                FlowKey {
                    nw_proto: IPPROTO_ICMPV6,
                    tp_src: 135,
                    ..v6_key()
                }
            );
        }
        // ND body shorter than the target address.
        let mut f = eth_hdr(ETH_TYPE_IPV6);
        f.extend(v6_header(IPPROTO_ICMPV6, 12));
        f.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0x80, 0, 0]);
        let (r, k) = run(&f);
        assert_eq!(r, Some(ParseError::TruncatedL4));
        assert_eq!((k.tp_src, k.nd_target), (135, [0; 16]));
    }

    #[test]
    fn icmp_in_ipv6_and_icmpv6_in_ipv4_are_not_parsed() {
        let mut f = eth_hdr(ETH_TYPE_IPV6);
        f.extend(v6_header(IPPROTO_ICMP, 8));
        f.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ok(&f).tp_src, 0);
        let mut f = eth_hdr(ETH_TYPE_IPV4);
        f.extend(ipv4_hdr(IPPROTO_ICMPV6, &[], 8, 0));
        f.extend_from_slice(&[128, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ok(&f).tp_src, 0);
    }

    #[test]
    fn ieee_802_3_frames() {
        // LLC (STP BPDU): no ethertype.
        let mut f = eth_hdr(38);
        f.extend_from_slice(&[0x42, 0x42, 0x03, 0, 0, 0, 0, 0]);
        f.resize(60, 0);
        let mut k = FlowKey::default();
        let (r, ofs) = parse_with_offsets(&f, IN_PORT, &mut k);
        assert_eq!((r, k), (None, l2_key(FLOW_DL_TYPE_NONE)));
        assert_eq!(ofs.l3, 14);
        // Length field 0x05ff and a frame with no room for LLC.
        assert_eq!(ok(&eth_hdr(0x05ff)), l2_key(FLOW_DL_TYPE_NONE));
        // LLC/SNAP with OUI 0 and ethertype IPv4: parsed as IPv4 after 8 bytes.
        let mut f = eth_hdr(36);
        f.extend_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00]);
        f.extend(ipv4_hdr(IPPROTO_UDP, &[], 8, 0));
        f.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        let mut k = FlowKey::default();
        let (r, ofs) = parse_with_offsets(&f, IN_PORT, &mut k);
        assert_eq!(r, None);
        assert_eq!(
            (k.dl_type, k.nw_src, k.tp_dst),
            (ETH_TYPE_IPV4, 0x0a00_0001, 2)
        );
        assert_eq!(ofs, Offsets { l3: 22, l4: 42 });
        // SNAP with another OUI, or a SNAP "ethertype" below 0x600: none.
        let mut f = eth_hdr(36);
        f.extend_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0x0c, 0x20, 0x00]);
        assert_eq!(ok(&f), l2_key(FLOW_DL_TYPE_NONE));
        let mut f = eth_hdr(36);
        f.extend_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x05, 0xdc]);
        assert_eq!(ok(&f), l2_key(FLOW_DL_TYPE_NONE));
        // 802.3 inside a VLAN tag.
        let mut f = eth_hdr(ETH_TYPE_VLAN_8021Q);
        f.extend_from_slice(&[0, 5, 0, 46]);
        f.extend_from_slice(&[0xfe, 0xfe, 0x03, 0, 0, 0, 0, 0]);
        let k = ok(&f);
        assert_eq!(
            (k.dl_type, k.vlan_tci[0]),
            (FLOW_DL_TYPE_NONE, VLAN_CFI | 5)
        );
    }

    /// VLAN + IPv4 (one option word) + TCP (8 bytes of options) + 10 bytes payload.
    fn vlan_ipv4_tcp() -> Vec<u8> {
        let mut f = eth_hdr(ETH_TYPE_VLAN_8021Q);
        f.extend_from_slice(&[0x20, 0x07, 0x08, 0x00]); // PCP 1, VID 7
        f.extend(ipv4_hdr(IPPROTO_TCP, &[1, 1, 1, 0], 28 + 10, 0));
        f.extend_from_slice(&[0x1f, 0x90, 0xc0, 0x00, 0, 0, 0, 1, 0, 0, 0, 0, 0x70, 0x12]);
        f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(&[2, 4, 5, 0xb4, 1, 1, 1, 0]);
        f.extend_from_slice(&[0x55; 10]);
        assert_eq!(f.len(), 18 + 24 + 28 + 10);
        f
    }

    #[test]
    fn truncation_sweep_vlan_ipv4_tcp() {
        let full = vlan_ipv4_tcp();
        let eth_only = l2_key(ETH_TYPE_VLAN_8021Q);
        let vlan = FlowKey {
            vlan_tci: [VLAN_CFI | 0x2007, 0],
            vlan_tpid: [ETH_TYPE_VLAN_8021Q, 0],
            ..l2_key(ETH_TYPE_IPV4)
        };
        let ip = FlowKey {
            nw_src: 0x0a00_0001,
            nw_dst: 0xc0a8_0102,
            nw_proto: IPPROTO_TCP,
            nw_tos: 0x2e,
            nw_ttl: 64,
            ..vlan
        };
        let complete = FlowKey {
            tp_src: 8080,
            tp_dst: 49152,
            tcp_flags: TCP_SYN | TCP_ACK,
            ..ip
        };
        assert_eq!(ok(&full), complete);
        for len in 0..full.len() {
            let (r, k) = run(&full[..len]);
            let want = match len {
                0..=13 => (
                    ParseError::TruncatedEthernet,
                    FlowKey {
                        in_port: IN_PORT,
                        ..FlowKey::default()
                    },
                ),
                14..=17 => (ParseError::TruncatedVlan, eth_only),
                18..=41 => (ParseError::TruncatedIpv4, vlan),
                _ => (ParseError::TruncatedIpv4, ip),
            };
            assert_eq!((r, k), (Some(want.0), want.1), "len {len}");
        }
    }

    #[test]
    fn truncation_sweep_with_consistent_ip_length() {
        // As above, but the IPv4 total length follows the truncation, so the TCP
        // header itself is what is cut.
        let full = vlan_ipv4_tcp();
        for len in 42..full.len() {
            let mut f = full[..len].to_vec();
            f[20..22].copy_from_slice(&((len - 18) as u16).to_be_bytes());
            let (r, k) = run(&f);
            let want = if len < 70 {
                Some(ParseError::TruncatedL4)
            } else {
                None
            };
            assert_eq!(r, want, "len {len}");
            assert_eq!(k.nw_src, 0x0a00_0001, "len {len}");
            assert_eq!(k.vlan_tci[0], VLAN_CFI | 0x2007, "len {len}");
            assert_eq!(k.tp_src, if len < 70 { 0 } else { 8080 }, "len {len}");
        }
    }

    #[test]
    fn truncation_sweep_qinq_ipv6_ext_udp() {
        // QinQ + IPv6 + hop-by-hop(16) + fragment(8) + UDP(8) + 12 payload.
        let inner = v6_udp_with_exts(Some((0, true)));
        let mut full = inner[..12].to_vec();
        full.extend_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x0b]);
        full.extend_from_slice(&inner[12..]);
        let complete = ok(&full);
        assert_eq!(complete.vlan_tci, [VLAN_CFI | 10, VLAN_CFI | 11]);
        assert_eq!((complete.nw_frag, complete.tp_src), (FLOW_NW_FRAG_ANY, 546));
        for len in 0..full.len() {
            let (r, k) = run(&full[..len]);
            let want = match len {
                0..=13 => ParseError::TruncatedEthernet,
                14..=21 => ParseError::TruncatedVlan,
                _ => ParseError::TruncatedIpv6,
            };
            assert_eq!(r, Some(want), "len {len}");
            if len >= 18 {
                assert_eq!(k.vlan_tci[0], VLAN_CFI | 10, "len {len}");
            }
            if len >= 62 {
                assert_eq!(
                    (k.ipv6_src, k.nw_ttl, k.tp_src),
                    (V6_SRC, 1, 0),
                    "len {len}"
                );
            } else {
                assert_eq!(k.ipv6_src, [0; 16], "len {len}");
            }
        }
    }

    #[test]
    fn truncation_sweep_ipv6_with_consistent_payload_length() {
        // Ethernet + IPv6 + hop-by-hop(16) + fragment(8) + UDP(8) + 12 payload, the
        // payload length following the cut: each extension header and then UDP is cut.
        let full = v6_udp_with_exts(Some((0, true)));
        assert_eq!(full.len(), 54 + 16 + 8 + 8 + 12);
        for len in 54..full.len() {
            let mut f = full[..len].to_vec();
            f[18..20].copy_from_slice(&((len - 54) as u16).to_be_bytes());
            let (r, k) = run(&f);
            let (want, proto, frag) = match len - 54 {
                0..=15 => (Some(ParseError::TruncatedIpv6ExtHeader), 0, 0),
                16..=23 => (
                    Some(ParseError::TruncatedIpv6ExtHeader),
                    IPPROTO_FRAGMENT,
                    0,
                ),
                24..=31 => (Some(ParseError::TruncatedL4), IPPROTO_UDP, FLOW_NW_FRAG_ANY),
                _ => (None, IPPROTO_UDP, FLOW_NW_FRAG_ANY),
            };
            assert_eq!(r, want, "len {len}");
            assert_eq!((k.nw_proto, k.nw_frag), (proto, frag), "len {len}");
            assert_eq!(
                (k.ipv6_dst, k.dl_type),
                (V6_DST, ETH_TYPE_IPV6),
                "len {len}"
            );
            assert_eq!(k.tp_src, if want.is_none() { 546 } else { 0 }, "len {len}");
        }
    }

    #[test]
    fn empty_and_tiny_frames() {
        for len in 0..14 {
            let f = vec![0xffu8; len];
            assert_eq!(
                run(&f),
                (
                    Some(ParseError::TruncatedEthernet),
                    FlowKey {
                        in_port: IN_PORT,
                        ..FlowKey::default()
                    }
                )
            );
        }
    }
}
