//! Tunnel headers for native tunneling: VXLAN, GRE (Ethernet over GRE) and
//! Geneve, over IPv4.
//!
//! # Layer
//!
//! The slow path decides everything about an encapsulation at translation time
//! (route, source address, next-hop MAC, key) and writes it into a
//! [`TunnelSpec`]; [`TunnelHeader::new`] turns that into the outer header bytes
//! once, and the datapath action [`crate::actions::DpAction::TunnelPush`] carries
//! them. Per packet the fast path only copies the bytes in front of the frame and
//! fills what depends on the packet: the IPv4 total length and header checksum,
//! the UDP length, source port (from the inner flow's hash) and checksum when
//! asked for, the GRE checksum when asked for.
//!
//! Per packet ([`finish_push`], [`pop`], [`inner_flow_hash`]): pure functions
//! over byte slices, no allocation, no panic on any bytes.
//! - Push: the datapath copies [`TunnelHeader::bytes`] in front of the inner
//!   frame (into the mbuf's headroom) and [`finish_push`] fills the per-packet
//!   fields; [`push`] does both on a `Vec` (tests, the reference executor).
//! - Pop: [`pop`] checks a received frame's outer headers for a tunnel port
//!   ([`TunnelPortInfo`]: kind and UDP port) and returns how many bytes to strip
//!   and the tunnel metadata (`tun_id`, `tun_src`, `tun_dst`, OVS's
//!   `FLOW_TNL_F_*` flags), or a [`PopError`] that the datapath counts.
//!
//! Wire formats: VXLAN RFC 7348 (flags `0x08`, 24-bit VNI, UDP 4789), Geneve
//! RFC 8926 (version 0, options in 4-byte units, protocol 0x6558, 24-bit VNI,
//! UDP 6081), GRE RFC 2784/2890 (C and K bits, protocol 0x6558 for Ethernet).
//! The outer IPv4 header has no options and IP id 0; DF is set when
//! `df_default` is (OVS's default).

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Range;

use crate::actions::TunnelMeta;
use crate::flow_key::{
    FlowKey, ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_VLAN_8021AD, ETH_TYPE_VLAN_8021Q,
    FLOW_NW_FRAG_LATER, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
};

/// IANA UDP port of VXLAN.
pub const VXLAN_DST_PORT: u16 = 4789;
/// IANA UDP port of Geneve.
pub const GENEVE_DST_PORT: u16 = 6081;
/// Ethertype of transparent Ethernet bridging (the payload of GRE and Geneve).
pub const ETH_TYPE_TEB: u16 = 0x6558;
/// IP protocol number of GRE.
pub const IPPROTO_GRE: u8 = 47;
/// Outer Ethernet header length.
pub const ETH_LEN: usize = 14;
/// Outer IPv4 header length (no options).
pub const IPV4_LEN: usize = 20;
/// UDP header length.
pub const UDP_LEN: usize = 8;
/// VXLAN header length.
pub const VXLAN_LEN: usize = 8;
/// Geneve base header length (options follow).
pub const GENEVE_LEN: usize = 8;
/// Longest Geneve option area (the 6-bit length in 4-byte units).
pub const GENEVE_MAX_OPTS: usize = 63 * 4;
/// Lowest UDP source port used for VXLAN/Geneve (OVS's `tnl_udp_port_min`).
pub const UDP_SRC_MIN: u16 = 32768;
/// Highest UDP source port used (OVS's `tnl_udp_port_max`).
pub const UDP_SRC_MAX: u16 = 61000;

/// The kind of tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TunnelKind {
    /// VXLAN over UDP.
    Vxlan,
    /// Ethernet over GRE (Linux `gretap`), with or without key.
    Gre,
    /// Geneve over UDP.
    Geneve,
}

impl TunnelKind {
    /// The name OVS gives the port type (`vxlan`, `gre`, `geneve`).
    pub fn name(self) -> &'static str {
        match self {
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::Gre => "gre",
            TunnelKind::Geneve => "geneve",
        }
    }

    /// OVS's `OVS_VPORT_TYPE_*` number, printed as `type=` in `tnl_push`.
    pub fn ovs_type(self) -> u8 {
        match self {
            TunnelKind::Gre => 3,
            TunnelKind::Vxlan => 4,
            TunnelKind::Geneve => 6,
        }
    }

    /// The default UDP destination port (0 for GRE).
    pub fn default_port(self) -> u16 {
        match self {
            TunnelKind::Vxlan => VXLAN_DST_PORT,
            TunnelKind::Geneve => GENEVE_DST_PORT,
            TunnelKind::Gre => 0,
        }
    }

    /// Whether the tunnel rides on UDP.
    pub fn is_udp(self) -> bool {
        !matches!(self, TunnelKind::Gre)
    }
}

/// Everything about one encapsulation that the slow path decides.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TunnelSpec {
    /// The tunnel kind.
    pub kind: TunnelKind,
    /// Outer Ethernet source: the MAC of the internal port the route leaves by.
    pub eth_src: [u8; 6],
    /// Outer Ethernet destination: the next hop's MAC from the neighbor cache.
    pub eth_dst: [u8; 6],
    /// Outer IPv4 source, host order.
    pub ip_src: u32,
    /// Outer IPv4 destination (the remote endpoint), host order.
    pub ip_dst: u32,
    /// Outer TOS byte.
    pub tos: u8,
    /// Outer TTL.
    pub ttl: u8,
    /// Set the outer DF bit.
    pub df: bool,
    /// UDP destination port (VXLAN, Geneve); ignored for GRE.
    pub dst_port: u16,
    /// Tunnel key: the VNI (low 24 bits) for VXLAN and Geneve, the GRE key (low
    /// 32 bits) for GRE. `None` for GRE means no key field; VXLAN and Geneve
    /// always carry a VNI (`None` = 0).
    pub key: Option<u64>,
    /// Compute the outer UDP checksum (VXLAN, Geneve) or carry a GRE checksum.
    pub csum: bool,
    /// Geneve options, already encoded as TLVs (a multiple of 4 bytes, at most
    /// [`GENEVE_MAX_OPTS`]); empty for the others.
    pub geneve_opts: Vec<u8>,
}

/// Why a [`TunnelSpec`] cannot be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelError {
    /// Geneve options not a multiple of 4 bytes or longer than 252.
    GeneveOptions(usize),
    /// A VNI wider than 24 bits.
    VniTooWide(u64),
    /// A GRE key wider than 32 bits.
    KeyTooWide(u64),
    /// Geneve options on a tunnel that is not Geneve.
    OptionsNotGeneve,
}

impl fmt::Display for TunnelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelError::GeneveOptions(n) => write!(
                f,
                "geneve options are {n} bytes: must be a multiple of 4, at most {GENEVE_MAX_OPTS}"
            ),
            TunnelError::VniTooWide(v) => write!(f, "VNI {v:#x} is wider than 24 bits"),
            TunnelError::KeyTooWide(v) => write!(f, "GRE key {v:#x} is wider than 32 bits"),
            TunnelError::OptionsNotGeneve => f.write_str("options are only for geneve"),
        }
    }
}

impl std::error::Error for TunnelError {}

/// Prebuilt outer headers of one encapsulation, and where the per-packet fields
/// are. Made once at translation time; the datapath copies [`bytes`](Self::bytes)
/// in front of each frame and patches the per-packet fields.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TunnelHeader {
    /// What it was built from.
    pub spec: TunnelSpec,
    /// Datapath port of the tunnel (OVS's `tnl_port`).
    pub tnl_port: u32,
    /// Datapath port the route leaves by (OVS's `out_port`: the underlay
    /// bridge's internal port). Informational: the actions that follow the push
    /// decide where the packet goes.
    pub out_port: u32,
    bytes: Box<[u8]>,
    /// One's-complement sum (unfolded) of the outer IPv4 header as built (total
    /// length and checksum 0): per packet only the total length is added.
    ip_sum: u64,
    /// Sum of the UDP pseudo-header's fixed part (addresses, protocol).
    pseudo_sum: u64,
    /// The longest inner frame the path takes (see
    /// [`TunnelHeader::set_path_mtu`]); `usize::MAX` until a path MTU is set.
    max_inner: usize,
}

impl TunnelHeader {
    /// Builds the outer headers for `spec`. Per-packet fields (IPv4 total length
    /// and checksum, UDP source port, length and checksum, GRE checksum) are 0.
    pub fn new(spec: TunnelSpec, tnl_port: u32, out_port: u32) -> Result<Self, TunnelError> {
        let mut b = Vec::with_capacity(ETH_LEN + IPV4_LEN + UDP_LEN + GENEVE_LEN);
        if spec.kind != TunnelKind::Geneve && !spec.geneve_opts.is_empty() {
            return Err(TunnelError::OptionsNotGeneve);
        }
        let key = spec.key.unwrap_or(0);
        match spec.kind {
            TunnelKind::Vxlan | TunnelKind::Geneve if key > 0x00ff_ffff => {
                return Err(TunnelError::VniTooWide(key));
            }
            TunnelKind::Gre if key > 0xffff_ffff => return Err(TunnelError::KeyTooWide(key)),
            _ => {}
        }
        let opts = spec.geneve_opts.len();
        if !opts.is_multiple_of(4) || opts > GENEVE_MAX_OPTS {
            return Err(TunnelError::GeneveOptions(opts));
        }
        // Ethernet.
        b.extend_from_slice(&spec.eth_dst);
        b.extend_from_slice(&spec.eth_src);
        b.extend_from_slice(&0x0800u16.to_be_bytes());
        // IPv4: version/IHL, TOS, total length (per packet), id 0, flags/fragment,
        // TTL, protocol, checksum (per packet), addresses.
        b.extend_from_slice(&[0x45, spec.tos, 0, 0, 0, 0]);
        b.extend_from_slice(&(if spec.df { 0x4000u16 } else { 0 }).to_be_bytes());
        let proto = if spec.kind.is_udp() { 17 } else { IPPROTO_GRE };
        b.extend_from_slice(&[spec.ttl, proto, 0, 0]);
        b.extend_from_slice(&spec.ip_src.to_be_bytes());
        b.extend_from_slice(&spec.ip_dst.to_be_bytes());
        match spec.kind {
            TunnelKind::Vxlan => {
                udp(&mut b, spec.dst_port);
                // Flags: the I bit (VNI valid); VNI in the top 24 bits of the
                // second word.
                b.extend_from_slice(&0x0800_0000u32.to_be_bytes());
                b.extend_from_slice(&((key as u32) << 8).to_be_bytes());
            }
            TunnelKind::Geneve => {
                udp(&mut b, spec.dst_port);
                // Version 0, option length in 4-byte words; no O or C flag.
                b.push((opts / 4) as u8);
                b.push(0);
                b.extend_from_slice(&ETH_TYPE_TEB.to_be_bytes());
                b.extend_from_slice(&((key as u32) << 8).to_be_bytes());
                b.extend_from_slice(&spec.geneve_opts);
            }
            TunnelKind::Gre => {
                b.extend_from_slice(&gre_flags(&spec).to_be_bytes());
                b.extend_from_slice(&ETH_TYPE_TEB.to_be_bytes());
                if spec.csum {
                    // Checksum (per packet) and reserved.
                    b.extend_from_slice(&[0, 0, 0, 0]);
                }
                if let Some(k) = spec.key {
                    b.extend_from_slice(&(k as u32).to_be_bytes());
                }
            }
        }
        let ip_sum = sum_bytes(b.get(ETH_LEN..ETH_LEN + IPV4_LEN).unwrap_or_default(), 0);
        let pseudo_sum = sum_bytes(&spec.ip_src.to_be_bytes(), 0)
            + sum_bytes(&spec.ip_dst.to_be_bytes(), 0)
            + u64::from(IPPROTO_UDP);
        Ok(TunnelHeader {
            spec,
            tnl_port,
            out_port,
            bytes: b.into_boxed_slice(),
            ip_sum,
            pseudo_sum,
            max_inner: usize::MAX,
        })
    }

    /// The outer headers, per-packet fields zero.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Length of the outer headers: what the encapsulation adds to a frame.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: there is always an outer Ethernet and IPv4 header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Sets the path MTU (IP bytes: the MTU of the underlay port the route
    /// leaves by). The outer IPv4 packet is the outer headers after the
    /// Ethernet one plus the whole inner frame, so the longest inner frame is
    /// the MTU minus [`TunnelHeader::ip_overhead`]; the datapath drops and
    /// counts longer ones rather than fragment the outer packet (OVS-DPDK
    /// drops what exceeds a port's MTU too).
    pub fn set_path_mtu(&mut self, mtu: u16) {
        self.max_inner = usize::from(mtu).saturating_sub(self.ip_overhead());
    }

    /// Bytes the encapsulation adds to the IP packet the underlay carries: the
    /// outer headers but the Ethernet one (36 for VXLAN and option-less Geneve,
    /// 28 for GRE with a key). Over a 1500-byte path a VXLAN inner frame may
    /// have 1464 bytes, so its IP packet 1450: OVS's usual VXLAN MTU.
    pub fn ip_overhead(&self) -> usize {
        self.bytes.len() - ETH_LEN
    }

    /// The longest inner frame (Ethernet header included) the path takes.
    #[inline]
    pub fn max_inner_frame(&self) -> usize {
        self.max_inner
    }

    /// Offset of the outer IPv4 header in [`bytes`](Self::bytes).
    pub const fn ip_offset(&self) -> usize {
        ETH_LEN
    }

    /// Offset of the UDP or GRE header in [`bytes`](Self::bytes).
    pub const fn l4_offset(&self) -> usize {
        ETH_LEN + IPV4_LEN
    }
}

fn udp(b: &mut Vec<u8>, dst_port: u16) {
    // Source port, length and checksum are per packet.
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&dst_port.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0]);
}

fn gre_flags(spec: &TunnelSpec) -> u16 {
    let mut f = 0;
    if spec.csum {
        f |= 0x8000;
    }
    if spec.key.is_some() {
        f |= 0x2000;
    }
    f
}

/// The UDP source port for an inner flow hash: spread over
/// [`UDP_SRC_MIN`]..=[`UDP_SRC_MAX`] as OVS does, so that the underlay's ECMP
/// and the receiver's RSS see each inner flow as its own.
#[inline]
pub fn udp_src_port(hash: u32) -> u16 {
    let range = u32::from(UDP_SRC_MAX - UDP_SRC_MIN) + 1;
    UDP_SRC_MIN + ((((hash as u64) * u64::from(range)) >> 32) as u16)
}

struct Mac<'a>(&'a [u8; 6]);

impl fmt::Display for Mac<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Prints OVS's `tnl_push(...)` form:
/// `tnl_push(tnl_port(4),header(size=50,type=4,eth(dst=..,src=..,dl_type=0x0800),
/// ipv4(src=..,dst=..,proto=17,tos=0,ttl=64,frag=0x4000),udp(src=0,dst=4789,csum=0x0),
/// vxlan(flags=0x8000000,vni=0x7b)),out_port(1))`.
impl fmt::Display for TunnelHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.spec;
        write!(
            f,
            "tnl_push(tnl_port({}),header(size={},type={},eth(dst={},src={},dl_type=0x0800),",
            self.tnl_port,
            self.len(),
            s.kind.ovs_type(),
            Mac(&s.eth_dst),
            Mac(&s.eth_src)
        )?;
        let proto = if s.kind.is_udp() { 17 } else { IPPROTO_GRE };
        write!(
            f,
            "ipv4(src={},dst={},proto={},tos={},ttl={},frag={:#x}),",
            Ipv4Addr::from(s.ip_src),
            Ipv4Addr::from(s.ip_dst),
            proto,
            // C's "%#x" prints 0 without the prefix.
            if s.tos == 0 {
                "0".to_string()
            } else {
                format!("{:#x}", s.tos)
            },
            s.ttl,
            if s.df { 0x4000 } else { 0 }
        )?;
        let key = s.key.unwrap_or(0);
        match s.kind {
            TunnelKind::Vxlan => write!(
                f,
                "udp(src=0,dst={},csum={:#x}),vxlan(flags=0x8000000,vni={key:#x})",
                s.dst_port,
                if s.csum { 0xffff } else { 0 }
            )?,
            TunnelKind::Geneve => {
                write!(
                    f,
                    "udp(src=0,dst={},csum={:#x}),geneve(vni={key:#x}",
                    s.dst_port,
                    if s.csum { 0xffff } else { 0 }
                )?;
                if !s.geneve_opts.is_empty() {
                    // OVS's form: {class=..,type=..,len=..,0xDATA} per option.
                    f.write_str(",options(")?;
                    for opt in geneve_options(&s.geneve_opts).map_while(Result::ok) {
                        let (class, ty, data) = opt;
                        write!(f, "{{class={class:#x},type={ty:#x},len={}", data.len())?;
                        if !data.is_empty() {
                            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
                            match hex.trim_start_matches('0') {
                                "" => f.write_str(",0x0")?,
                                digits => write!(f, ",0x{digits}")?,
                            }
                        }
                        f.write_str("}")?;
                    }
                    f.write_str(")")?;
                }
                f.write_str(")")?;
            }
            TunnelKind::Gre => {
                write!(f, "gre((flags={:#x},proto={ETH_TYPE_TEB:#x})", gre_flags(s))?;
                if s.csum {
                    f.write_str(",csum=0x0")?;
                }
                if let Some(k) = s.key {
                    write!(f, ",key={k:#x}")?;
                }
                f.write_str(")")?;
            }
        }
        write!(f, "),out_port({}))", self.out_port)
    }
}

/// OVS's tunnel flags (`FLOW_TNL_F_*`), as the pop sets them in
/// [`FlowKey::tun_flags`]: an OAM frame (Geneve's O bit).
pub const FLOW_TNL_F_OAM: u16 = 1 << 0;
/// The outer IPv4 header had DF set.
pub const FLOW_TNL_F_DONT_FRAGMENT: u16 = 1 << 1;
/// The outer packet carried a checksum (UDP or GRE), and it was right.
pub const FLOW_TNL_F_CSUM: u16 = 1 << 2;
/// The outer packet carried a key (VXLAN and Geneve always: the VNI; GRE with
/// the K bit).
pub const FLOW_TNL_F_KEY: u16 = 1 << 3;

/// What the datapath knows of a tunnel's datapath port: which headers a
/// `tnl_pop` to it expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TunnelPortInfo {
    /// The tunnel kind.
    pub kind: TunnelKind,
    /// UDP destination port (VXLAN, Geneve); 0 and unused for GRE.
    pub dst_port: u16,
}

impl TunnelPortInfo {
    /// A port of `kind` on its IANA port.
    pub fn default_for(kind: TunnelKind) -> TunnelPortInfo {
        TunnelPortInfo {
            kind,
            dst_port: kind.default_port(),
        }
    }
}

// ---------------------------------------------------------------------------
// Checksums.

/// Adds `data` to a one's-complement sum as big-endian 16-bit words (an odd
/// last byte is the high half of a word), four bytes at a time; `acc` stays
/// unfolded (a u64 holds the sum of any frame).
#[inline]
fn sum_bytes(data: &[u8], mut acc: u64) -> u64 {
    let (words, rest) = data.as_chunks::<4>();
    for w in words {
        acc += u64::from(u32::from_be_bytes(*w));
    }
    let mut last = [0u8; 4];
    if let Some(dst) = last.get_mut(..rest.len()) {
        dst.copy_from_slice(rest);
    }
    acc + u64::from(u32::from_be_bytes(last))
}

/// [`sum_bytes`] of a whole number of 32-bit words, unrolled (an IPv4 header
/// without options). The words are read in the machine's order: a sum in
/// either order folds to 0xffff exactly when the other does (RFC 1071's byte
/// order independence), which is all a check asks.
#[inline(always)]
fn sum_words<const N: usize>(data: &[u8; N]) -> u64 {
    let (words, _) = data.as_chunks::<4>();
    words
        .iter()
        .map(|w| u64::from(u32::from_ne_bytes(*w)))
        .sum()
}

/// Folds a sum into 16 bits with end-around carries (2^16 and 2^32 are both 1
/// modulo 0xffff, so summing 32-bit words and folding is the 16-bit sum).
#[inline]
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[inline]
fn be16(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..)?
        .first_chunk::<2>()
        .map(|w| u16::from_be_bytes(*w))
}

#[inline]
fn be32(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..)?
        .first_chunk::<4>()
        .map(|w| u32::from_be_bytes(*w))
}

#[inline]
fn put16(b: &mut [u8], off: usize, v: u16) {
    if let Some(w) = b.get_mut(off..).and_then(|t| t.first_chunk_mut::<2>()) {
        *w = v.to_be_bytes();
    }
}

// ---------------------------------------------------------------------------
// Push.

/// Completes an encapsulation in place. `pkt` is `header`'s
/// [`bytes`](TunnelHeader::bytes) followed by the inner frame (the caller
/// copied them in front of it); this fills the per-packet fields: the IPv4
/// total length and header checksum, and for VXLAN/Geneve the UDP source port
/// ([`udp_src_port`] of `hash`, the inner flow's hash), length and, when
/// `spec.csum`, checksum (pseudo-header plus the whole UDP packet; 0 is sent as
/// 0xffff); for GRE with `spec.csum` the GRE checksum (header and payload).
///
/// False, with nothing filled, when `pkt` is shorter than the header or the
/// outer IPv4 packet would be longer than 65535 bytes. Allocates nothing;
/// reads only bytes it is given.
#[inline]
pub fn finish_push(pkt: &mut [u8], header: &TunnelHeader, hash: u32) -> bool {
    if pkt.len() < header.len() {
        return false;
    }
    let Ok(ip_len) = u16::try_from(pkt.len() - ETH_LEN) else {
        return false;
    };
    put16(pkt, ETH_LEN + 2, ip_len);
    put16(pkt, ETH_LEN + 10, !fold(header.ip_sum + u64::from(ip_len)));
    let l4 = ETH_LEN + IPV4_LEN;
    let spec = &header.spec;
    if spec.kind.is_udp() {
        // The header holds at least IPv4 + UDP: no underflow.
        let udp_len = ip_len.saturating_sub(IPV4_LEN as u16);
        put16(pkt, l4, udp_src_port(hash));
        put16(pkt, l4 + 4, udp_len);
        put16(pkt, l4 + 6, 0);
        if spec.csum {
            let sum = sum_bytes(
                pkt.get(l4..).unwrap_or_default(),
                header.pseudo_sum + u64::from(udp_len),
            );
            let c = !fold(sum);
            put16(pkt, l4 + 6, if c == 0 { 0xffff } else { c });
        }
    } else if spec.csum {
        put16(pkt, l4 + 4, 0);
        let c = !fold(sum_bytes(pkt.get(l4..).unwrap_or_default(), 0));
        put16(pkt, l4 + 4, c);
    }
    true
}

/// [`finish_push`] for a frame in a `Vec`: puts `header` in front of `frame`
/// and fills the per-packet fields. False (frame unchanged) when the outer
/// packet would be too long. For tests and the reference executor; the
/// datapath writes the header into the mbuf's headroom instead.
pub fn push(frame: &mut Vec<u8>, header: &TunnelHeader, hash: u32) -> bool {
    let mut pkt = Vec::with_capacity(header.len() + frame.len());
    pkt.extend_from_slice(header.bytes());
    pkt.extend_from_slice(frame);
    if !finish_push(&mut pkt, header, hash) {
        return false;
    }
    *frame = pkt;
    true
}

/// Per-word multipliers of the inner flow hash (odd, from the digits of pi
/// and e): each word is multiplied by its own, so the multiplies are
/// independent and run in parallel rather than as a chain (a chain of six was
/// a quarter of a tunnel push's time).
const HASH_MUL: [u64; 8] = [
    0x9e37_79b9_7f4a_7c15,
    0xbf58_476d_1ce4_e5b9,
    0x94d0_49bb_1331_11eb,
    0x2545_f491_4f6c_dd1d,
    0x243f_6a88_85a3_08d3 | 1,
    0x1319_8a2e_0370_7345,
    0xa409_3822_299f_31d1,
    0x0827_2ed2_f15b_4c35,
];

/// The words of an inner flow, each multiplied by its position's constant
/// and summed.
struct FlowHash {
    h: u64,
    i: usize,
}

impl FlowHash {
    #[inline(always)]
    fn new() -> FlowHash {
        FlowHash {
            h: 0x243f_6a88_85a3_08d3,
            i: 0,
        }
    }

    #[inline(always)]
    fn add(&mut self, x: u64) {
        let k = HASH_MUL[self.i % HASH_MUL.len()];
        self.h = self
            .h
            .wrapping_add((x ^ (k >> 7)).wrapping_mul(k).rotate_left(31));
        self.i += 1;
    }
}

#[inline(always)]
fn finish_hash(h: u64) -> u32 {
    let h = (h ^ (h >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (h ^ (h >> 32)) as u32
}

/// Hash of what identifies an inner flow, as a NIC's RSS hash would: for IPv4
/// the addresses, protocol and (TCP, UDP, SCTP, first fragments only) ports;
/// for IPv6 the addresses and flow label; for anything else the Ethernet
/// addresses and type. Same value as
/// [`inner_flow_hash_key`] of the frame's key (for frames the parser takes
/// without error; a tested equivalence). Cheap enough per packet: reads at most
/// the first 78 bytes, parses no options.
///
/// The datapath uses it for the UDP source port of packets whose port gave no
/// RSS hash: from the frame rather than the flow key so that a flow keeps its
/// port on every path (the simple-match path has no key; the EMC's hash exists
/// only for the bursts that probe it).
#[inline]
pub fn inner_flow_hash(frame: &[u8]) -> u32 {
    // The common frame first, with one bounds check: untagged IPv4 without
    // options, UDP, not a later fragment (what the general code below
    // concludes for it).
    if let Some(h) = frame.first_chunk::<42>() {
        if h[12] == 0x08
            && h[13] == 0x00
            && h[14] == 0x45
            && h[23] == IPPROTO_UDP
            && u16::from_be_bytes([h[20], h[21]]) & 0x1fff == 0
        {
            let mut fh = FlowHash::new();
            fh.add(
                u64::from(u32::from_be_bytes([h[26], h[27], h[28], h[29]])) << 32
                    | u64::from(u32::from_be_bytes([h[30], h[31], h[32], h[33]])),
            );
            fh.add(
                (u64::from(IPPROTO_UDP) << 32)
                    | u64::from(u32::from_be_bytes([h[34], h[35], h[36], h[37]])),
            );
            return finish_hash(fh.h);
        }
    }
    let (Some(dst), Some(src)) = (
        frame.first_chunk::<6>(),
        frame.get(6..).and_then(|b| b.first_chunk::<6>()),
    ) else {
        return 0;
    };
    let mut off = 12;
    let mut dl_type = be16(frame, off).unwrap_or(0);
    for _ in 0..2 {
        if dl_type != ETH_TYPE_VLAN_8021Q && dl_type != ETH_TYPE_VLAN_8021AD {
            break;
        }
        off += 4;
        dl_type = be16(frame, off).unwrap_or(0);
    }
    let l3 = off + 2;
    let mut h = FlowHash::new();
    match dl_type {
        ETH_TYPE_IPV4 => {
            if let Some(ip) = frame.get(l3..).and_then(|b| b.first_chunk::<20>()) {
                h.add(
                    u64::from(be32(ip, 12).unwrap_or(0)) << 32
                        | u64::from(be32(ip, 16).unwrap_or(0)),
                );
                let proto = ip[9];
                let later = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                let ports = if later {
                    0
                } else {
                    l4_ports(frame.get(l3 + ihl..).unwrap_or_default(), proto)
                };
                h.add((u64::from(proto) << 32) | u64::from(ports));
                return finish_hash(h.h);
            }
        }
        ETH_TYPE_IPV6 => {
            if let Some(ip) = frame.get(l3..).and_then(|b| b.first_chunk::<40>()) {
                for w in ip.get(8..40).unwrap_or_default().as_chunks::<8>().0 {
                    h.add(u64::from_be_bytes(*w));
                }
                h.add(u64::from(be32(ip, 0).unwrap_or(0) & 0x000f_ffff));
                return finish_hash(h.h);
            }
        }
        _ => {}
    }
    // Not IP (or its header cut short): the Ethernet addresses and type.
    let mut d = [0u8; 8];
    d[..6].copy_from_slice(dst);
    let mut s = [0u8; 8];
    s[..6].copy_from_slice(src);
    h.add(u64::from_be_bytes(d) | u64::from(dl_type));
    h.add(u64::from_be_bytes(s));
    finish_hash(h.h)
}

/// The ports of an L4 header as the parser reads them (TCP needs its whole
/// header), `src << 16 | dst`; 0 for other protocols or short headers.
#[inline]
fn l4_ports(l4: &[u8], proto: u8) -> u32 {
    let need = match proto {
        IPPROTO_TCP => {
            let hl = usize::from(l4.get(12).copied().unwrap_or(0) >> 4) * 4;
            if hl < 20 {
                return 0;
            }
            hl
        }
        IPPROTO_UDP => 8,
        IPPROTO_SCTP => 12,
        _ => return 0,
    };
    if l4.len() < need {
        return 0;
    }
    be32(l4, 0).unwrap_or(0)
}

/// [`inner_flow_hash`] computed from a parsed key (the reference executor's
/// `execute_on_key` uses it for the outer UDP source port).
pub fn inner_flow_hash_key(key: &FlowKey) -> u32 {
    let mut h = FlowHash::new();
    match key.dl_type {
        ETH_TYPE_IPV4 => {
            h.add((u64::from(key.nw_src) << 32) | u64::from(key.nw_dst));
            let ports = match key.nw_proto {
                IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP
                    if key.nw_frag & FLOW_NW_FRAG_LATER == 0 =>
                {
                    (u32::from(key.tp_src) << 16) | u32::from(key.tp_dst)
                }
                _ => 0,
            };
            h.add((u64::from(key.nw_proto) << 32) | u64::from(ports));
        }
        ETH_TYPE_IPV6 => {
            for a in [&key.ipv6_src, &key.ipv6_dst] {
                for w in a.as_chunks::<8>().0 {
                    h.add(u64::from_be_bytes(*w));
                }
            }
            h.add(u64::from(key.ipv6_label & 0x000f_ffff));
        }
        _ => {
            let mut d = [0u8; 8];
            d[..6].copy_from_slice(&key.dl_dst);
            let mut s = [0u8; 8];
            s[..6].copy_from_slice(&key.dl_src);
            h.add(u64::from_be_bytes(d) | u64::from(key.dl_type));
            h.add(u64::from_be_bytes(s));
        }
    }
    finish_hash(h.h)
}

// ---------------------------------------------------------------------------
// Pop.

/// Why a `tnl_pop` refused a packet. The datapath counts each as its own drop
/// reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PopError {
    /// The pop names a datapath port that is not a tunnel port.
    NotTunnelPort,
    /// Shorter than its outer headers say (Ethernet, IPv4, UDP/GRE, tunnel
    /// header, options), or an inner frame shorter than an Ethernet header.
    Truncated,
    /// Not IPv4 (ethertype after at most one 802.1Q tag, or IP version).
    NotIpv4,
    /// An IPv4 fragment (more-fragments bit or an offset).
    Fragment,
    /// The outer IPv4 header checksum is wrong.
    IpChecksum,
    /// IHL below 5, or a total length shorter than the header.
    IpLength,
    /// Not UDP (VXLAN, Geneve) or not GRE (GRE).
    Protocol,
    /// The UDP destination port is not the tunnel port's.
    UdpPort,
    /// The UDP length disagrees with the IPv4 total length.
    UdpLength,
    /// A non-zero UDP checksum that is wrong.
    UdpChecksum,
    /// VXLAN flags other than just the I bit (VNI valid), or reserved bits set.
    VxlanFlags,
    /// GRE version not 0, or routing, strict-route, recursion or other
    /// reserved flag bits set.
    GreHeader,
    /// GRE protocol not transparent Ethernet bridging (0x6558).
    GreProtocol,
    /// The GRE checksum is wrong.
    GreChecksum,
    /// Geneve version not 0.
    GeneveVersion,
    /// Geneve protocol not transparent Ethernet bridging (0x6558).
    GeneveProtocol,
    /// Geneve options longer than the UDP payload, or an option running
    /// past the option area.
    GeneveOptions,
    /// A Geneve option the TLV map maps, of another length than the
    /// mapping's.
    GeneveOptionLength,
    /// A Geneve option the TLV map does not map, with the critical bit.
    GeneveCritical,
}

impl PopError {
    /// How many there are.
    pub const COUNT: usize = 19;
    /// Every reason, in declaration order.
    pub const ALL: [PopError; Self::COUNT] = [
        PopError::NotTunnelPort,
        PopError::Truncated,
        PopError::NotIpv4,
        PopError::Fragment,
        PopError::IpChecksum,
        PopError::IpLength,
        PopError::Protocol,
        PopError::UdpPort,
        PopError::UdpLength,
        PopError::UdpChecksum,
        PopError::VxlanFlags,
        PopError::GreHeader,
        PopError::GreProtocol,
        PopError::GreChecksum,
        PopError::GeneveVersion,
        PopError::GeneveProtocol,
        PopError::GeneveOptions,
        PopError::GeneveOptionLength,
        PopError::GeneveCritical,
    ];

    /// A short name (the datapath's drop reason is `tnl_pop_` and this).
    pub fn as_str(self) -> &'static str {
        match self {
            PopError::NotTunnelPort => "not_tunnel_port",
            PopError::Truncated => "truncated",
            PopError::NotIpv4 => "not_ipv4",
            PopError::Fragment => "fragment",
            PopError::IpChecksum => "ip_csum",
            PopError::IpLength => "ip_len",
            PopError::Protocol => "protocol",
            PopError::UdpPort => "udp_port",
            PopError::UdpLength => "udp_len",
            PopError::UdpChecksum => "udp_csum",
            PopError::VxlanFlags => "vxlan_flags",
            PopError::GreHeader => "gre_header",
            PopError::GreProtocol => "gre_protocol",
            PopError::GreChecksum => "gre_csum",
            PopError::GeneveVersion => "geneve_version",
            PopError::GeneveProtocol => "geneve_protocol",
            PopError::GeneveOptions => "geneve_options",
            PopError::GeneveOptionLength => "geneve_opt_len",
            PopError::GeneveCritical => "geneve_critical",
        }
    }
}

impl fmt::Display for PopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A packet a `tnl_pop` accepted: where its inner frame is, and the tunnel
/// metadata of its outer headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Popped {
    /// Bytes of outer headers in front of the inner frame (what to strip).
    pub hlen: usize,
    /// Length of the inner frame; bytes after it (padding beyond the IPv4
    /// total length) are to be trimmed.
    pub inner_len: usize,
    /// `tun_id` (VNI or GRE key, 0 without one), `src`/`dst` (outer IPv4
    /// addresses), `flags` ([`FLOW_TNL_F_DONT_FRAGMENT`], [`FLOW_TNL_F_CSUM`],
    /// [`FLOW_TNL_F_KEY`], [`FLOW_TNL_F_OAM`]).
    pub meta: TunnelMeta,
    /// Where the Geneve options are in the frame (empty for the others):
    /// the datapath decodes them with its TLV map
    /// ([`crate::tun_metadata::TlvMap::decode`]).
    pub geneve_opts: (u16, u16),
}

impl Popped {
    /// The inner frame's range in the outer frame.
    pub fn inner(&self) -> Range<usize> {
        self.hlen..self.hlen + self.inner_len
    }
}

/// The Ethernet + IPv4 part of a received tunnel packet.
struct OuterIp {
    /// UDP or GRE header offset.
    l4: usize,
    /// End of the IPv4 packet (its total length from the IPv4 header).
    end: usize,
    proto: u8,
    src: u32,
    dst: u32,
    flags: u16,
}

/// Checks the outer Ethernet (at most one 802.1Q tag) and IPv4 headers.
#[inline(always)]
fn outer_ipv4(frame: &[u8]) -> Result<OuterIp, PopError> {
    let mut l3 = ETH_LEN;
    let mut dl_type = be16(frame, 12).ok_or(PopError::Truncated)?;
    if dl_type == ETH_TYPE_VLAN_8021Q {
        dl_type = be16(frame, 16).ok_or(PopError::Truncated)?;
        l3 += 4;
    }
    if dl_type != ETH_TYPE_IPV4 {
        return Err(PopError::NotIpv4);
    }
    let ip = frame.get(l3..).unwrap_or_default();
    let fixed = ip.first_chunk::<20>().ok_or(PopError::Truncated)?;
    if fixed[0] >> 4 != 4 {
        return Err(PopError::NotIpv4);
    }
    let ihl = usize::from(fixed[0] & 0x0f) * 4;
    if ihl < IPV4_LEN {
        return Err(PopError::IpLength);
    }
    let sum = if ihl == IPV4_LEN {
        sum_words(fixed)
    } else {
        sum_bytes(ip.get(..ihl).ok_or(PopError::Truncated)?, 0)
    };
    if fold(sum) != 0xffff {
        return Err(PopError::IpChecksum);
    }
    let tot = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
    if tot < ihl {
        return Err(PopError::IpLength);
    }
    if tot > ip.len() {
        return Err(PopError::Truncated);
    }
    let frag = u16::from_be_bytes([fixed[6], fixed[7]]);
    if frag & 0x3fff != 0 {
        return Err(PopError::Fragment);
    }
    Ok(OuterIp {
        l4: l3 + ihl,
        end: l3 + tot,
        proto: fixed[9],
        src: be32(fixed, 12).unwrap_or(0),
        dst: be32(fixed, 16).unwrap_or(0),
        flags: if frag & 0x4000 != 0 {
            FLOW_TNL_F_DONT_FRAGMENT
        } else {
            0
        },
    })
}

/// Checks a received frame's outer headers for a tunnel port of `port`'s kind
/// and UDP port, and returns where the inner frame is with the tunnel
/// metadata; or why the packet is to be dropped.
///
/// Outer Ethernet with at most one 802.1Q tag; IPv4 with options allowed,
/// checksum and lengths checked, no fragments; then per kind:
/// - VXLAN (RFC 7348): UDP to `dst_port`, UDP length and (non-zero) checksum
///   right, flags exactly the I bit, reserved bits zero; `tun_id` = VNI.
/// - Geneve (RFC 8926): as UDP above; version 0, protocol 0x6558, options
///   within the packet; `tun_id` = VNI, the O bit sets [`FLOW_TNL_F_OAM`].
/// - GRE (RFC 2784/2890): IP protocol 47, version 0, only the C, K and S
///   flags, protocol 0x6558, checksum right when present; `tun_id` = key.
///
/// Pure and allocation-free; no panic on any bytes.
#[inline(always)]
pub fn pop(frame: &[u8], port: TunnelPortInfo) -> Result<Popped, PopError> {
    if port.kind == TunnelKind::Vxlan {
        if let Some(p) = pop_vxlan_plain(frame, port.dst_port) {
            return Ok(p);
        }
    }
    pop_general(frame, port)
}

/// [`pop`] of any frame, field by field.
#[inline(always)]
fn pop_general(frame: &[u8], port: TunnelPortInfo) -> Result<Popped, PopError> {
    let ip = outer_ipv4(frame)?;
    let mut flags = ip.flags;
    let payload = frame.get(ip.l4..ip.end).ok_or(PopError::Truncated)?;
    let mut geneve_opts = (0, 0);
    let (tun_id, hdr_len) = match port.kind {
        TunnelKind::Vxlan | TunnelKind::Geneve => {
            if ip.proto != IPPROTO_UDP {
                return Err(PopError::Protocol);
            }
            let udp = payload.first_chunk::<8>().ok_or(PopError::Truncated)?;
            if u16::from_be_bytes([udp[2], udp[3]]) != port.dst_port {
                return Err(PopError::UdpPort);
            }
            if usize::from(u16::from_be_bytes([udp[4], udp[5]])) != payload.len() {
                return Err(PopError::UdpLength);
            }
            if u16::from_be_bytes([udp[6], udp[7]]) != 0 {
                let pseudo = sum_bytes(&ip.src.to_be_bytes(), 0)
                    + sum_bytes(&ip.dst.to_be_bytes(), 0)
                    + u64::from(IPPROTO_UDP)
                    + payload.len() as u64;
                if fold(sum_bytes(payload, pseudo)) != 0xffff {
                    return Err(PopError::UdpChecksum);
                }
                flags |= FLOW_TNL_F_CSUM;
            }
            let t = payload.get(UDP_LEN..).unwrap_or_default();
            let h = t.first_chunk::<8>().ok_or(PopError::Truncated)?;
            let vni = u64::from(u32::from_be_bytes([h[4], h[5], h[6], h[7]]) >> 8);
            flags |= FLOW_TNL_F_KEY;
            if port.kind == TunnelKind::Vxlan {
                if u32::from_be_bytes([h[0], h[1], h[2], h[3]]) != 0x0800_0000 || h[7] != 0 {
                    return Err(PopError::VxlanFlags);
                }
                (vni, UDP_LEN + VXLAN_LEN)
            } else {
                if h[0] >> 6 != 0 {
                    return Err(PopError::GeneveVersion);
                }
                if u16::from_be_bytes([h[2], h[3]]) != ETH_TYPE_TEB {
                    return Err(PopError::GeneveProtocol);
                }
                let opts = usize::from(h[0] & 0x3f) * 4;
                if UDP_LEN + GENEVE_LEN + opts > payload.len() {
                    return Err(PopError::GeneveOptions);
                }
                if h[1] & 0x80 != 0 {
                    flags |= FLOW_TNL_F_OAM;
                }
                let at = ip.l4 + UDP_LEN + GENEVE_LEN;
                geneve_opts = (
                    u16::try_from(at).unwrap_or(u16::MAX),
                    u16::try_from(opts).unwrap_or(0),
                );
                (vni, UDP_LEN + GENEVE_LEN + opts)
            }
        }
        TunnelKind::Gre => {
            if ip.proto != IPPROTO_GRE {
                return Err(PopError::Protocol);
            }
            let g = payload.first_chunk::<4>().ok_or(PopError::Truncated)?;
            let gflags = u16::from_be_bytes([g[0], g[1]]);
            // C, K and S are the only flags of RFC 2890; the version is 0.
            if gflags & !(GRE_CSUM | GRE_KEY | GRE_SEQ) != 0 {
                return Err(PopError::GreHeader);
            }
            if u16::from_be_bytes([g[2], g[3]]) != ETH_TYPE_TEB {
                return Err(PopError::GreProtocol);
            }
            let mut len = 4;
            if gflags & GRE_CSUM != 0 {
                if payload.len() < len + 4 {
                    return Err(PopError::Truncated);
                }
                if fold(sum_bytes(payload, 0)) != 0xffff {
                    return Err(PopError::GreChecksum);
                }
                flags |= FLOW_TNL_F_CSUM;
                len += 4;
            }
            let mut key = 0;
            if gflags & GRE_KEY != 0 {
                key = u64::from(be32(payload, len).ok_or(PopError::Truncated)?);
                flags |= FLOW_TNL_F_KEY;
                len += 4;
            }
            if gflags & GRE_SEQ != 0 {
                len += 4;
            }
            (key, len)
        }
    };
    let inner_len = payload
        .len()
        .checked_sub(hdr_len)
        .ok_or(PopError::Truncated)?;
    if inner_len < ETH_LEN {
        return Err(PopError::Truncated);
    }
    Ok(Popped {
        hlen: ip.l4 + hdr_len,
        inner_len,
        meta: TunnelMeta {
            tun_id,
            src: ip.src,
            dst: ip.dst,
            flags,
        },
        geneve_opts,
    })
}

/// [`pop`] of the common VXLAN packet, with one bounds check: untagged,
/// IPv4 without options, UDP without a checksum. `None` for any other frame,
/// and for one of those that [`pop`] would drop (its general code then says
/// why); otherwise what that code returns.
#[inline(always)]
fn pop_vxlan_plain(frame: &[u8], dst_port: u16) -> Option<Popped> {
    const HLEN: usize = ETH_LEN + IPV4_LEN + UDP_LEN + VXLAN_LEN;
    let h: &[u8; HLEN] = frame.first_chunk()?;
    // The headers as four big-endian words, each checked with a mask.
    let word = |at: usize| {
        h.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes)
    };
    // Ethertype, version and IHL, TOS, total length, identification.
    let eth_ip = word(12);
    // Flags and fragment offset, TTL, protocol, checksum, source (half).
    let frag_proto = word(20);
    // UDP: source port, destination port, length, checksum.
    let udp = word(34);
    // VXLAN: flags, reserved, VNI, reserved.
    let vxlan = word(42);
    let ip: &[u8; IPV4_LEN] = h.get(ETH_LEN..)?.first_chunk()?;
    let tot = ((eth_ip >> 16) & 0xffff) as usize;
    if eth_ip >> 40 != (u64::from(ETH_TYPE_IPV4) << 8) | 0x45
        || frag_proto & 0x3fff_00ff_0000_0000 != u64::from(IPPROTO_UDP) << 32
        || (udp >> 32) & 0xffff != u64::from(dst_port)
        || udp & 0xffff != 0
        || ((udp >> 16) & 0xffff) as usize + IPV4_LEN != tot
        || vxlan & 0xffff_ffff_0000_00ff != 0x0800_0000 << 32
        || ETH_LEN + tot > frame.len()
        || fold(sum_words(ip)) != 0xffff
    {
        return None;
    }
    let inner_len = tot.checked_sub(IPV4_LEN + UDP_LEN + VXLAN_LEN)?;
    if inner_len < ETH_LEN {
        return None;
    }
    let df = if frag_proto & (0x4000 << 48) != 0 {
        FLOW_TNL_F_DONT_FRAGMENT
    } else {
        0
    };
    Some(Popped {
        hlen: HLEN,
        inner_len,
        meta: TunnelMeta {
            tun_id: (vxlan >> 8) & 0xff_ffff,
            src: be32(ip, 12).unwrap_or(0),
            dst: be32(ip, 16).unwrap_or(0),
            flags: df | FLOW_TNL_F_KEY,
        },
        geneve_opts: (0, 0),
    })
}

/// The options of a Geneve option area (RFC 8926 section 3.5), in order:
/// each one's class, type and data; an option running past the area's end
/// is [`PopError::GeneveOptions`] and ends the walk. No allocation, no
/// panic on any bytes.
pub fn geneve_options(
    area: &[u8],
) -> impl Iterator<Item = Result<(u16, u8, &[u8]), PopError>> + '_ {
    let mut rest = Some(area);
    std::iter::from_fn(move || {
        let r = rest.take()?;
        if r.is_empty() {
            return None;
        }
        let Some((h, tail)) = r.split_first_chunk::<4>() else {
            return Some(Err(PopError::GeneveOptions));
        };
        let len = usize::from(h[3] & 0x1f) * 4;
        let Some((data, next)) = tail.split_at_checked(len) else {
            return Some(Err(PopError::GeneveOptions));
        };
        rest = Some(next);
        Some(Ok((u16::from_be_bytes([h[0], h[1]]), h[2], data)))
    })
}

/// GRE flag bits (RFC 2784, 2890).
const GRE_CSUM: u16 = 0x8000;
const GRE_KEY: u16 = 0x2000;
const GRE_SEQ: u16 = 0x1000;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: TunnelKind) -> TunnelSpec {
        TunnelSpec {
            kind,
            eth_src: [0x02, 0, 0, 0, 0, 0x01],
            eth_dst: [0x02, 0, 0, 0, 0, 0x02],
            ip_src: u32::from(Ipv4Addr::new(172, 168, 1, 1)),
            ip_dst: u32::from(Ipv4Addr::new(172, 168, 1, 2)),
            tos: 0,
            ttl: 64,
            df: true,
            dst_port: kind.default_port(),
            key: Some(0x7b),
            csum: false,
            geneve_opts: Vec::new(),
        }
    }

    /// The one-check VXLAN pop agrees with the general one: on a good
    /// frame, on every single-byte change of its outer headers, and on every
    /// length of it.
    #[test]
    fn plain_vxlan_pop_is_the_general_pop() {
        let h = TunnelHeader::new(spec(TunnelKind::Vxlan), 4, 1).unwrap();
        let mut good = h.bytes().to_vec();
        good.extend_from_slice(&[0x5a; 64]);
        let tot = (good.len() - ETH_LEN) as u16;
        put16(&mut good, 16, tot);
        put16(&mut good, 38, tot - IPV4_LEN as u16);
        let sum = fold(sum_bytes(&good[ETH_LEN..ETH_LEN + IPV4_LEN], 0));
        put16(&mut good, 24, !sum);
        let port = TunnelPortInfo::default_for(TunnelKind::Vxlan);
        let fast = pop_vxlan_plain(&good, port.dst_port).expect("a plain VXLAN frame");
        assert_eq!(Ok(fast), pop_general(&good, port));
        assert_eq!(fast.hlen, 50);
        assert_eq!(fast.inner_len, 64);
        assert_eq!(fast.meta.tun_id, 0x7b);
        let mut taken = 0;
        let mut check = |f: &[u8]| {
            if let Some(p) = pop_vxlan_plain(f, port.dst_port) {
                assert_eq!(Ok(p), pop_general(f, port), "{f:02x?}");
                taken += 1;
            }
            assert_eq!(pop(f, port), pop_general(f, port), "{f:02x?}");
        };
        for at in 0..50 {
            for x in [0x01, 0x08, 0x40, 0x80, 0xff] {
                let mut f = good.clone();
                f[at] ^= x;
                check(&f);
            }
        }
        for len in 0..good.len() {
            check(&good[..len]);
        }
        // Changes both take (Ethernet addresses, UDP source port, VNI) are
        // taken by the one check; the rest are refused by both (the IPv4
        // checksum covers its header), or left to the general code.
        assert!(taken > 50, "{taken}");
    }

    #[test]
    fn vxlan_header_bytes() {
        let h = TunnelHeader::new(spec(TunnelKind::Vxlan), 4, 1).unwrap();
        let want: &[u8] = &[
            2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, // eth
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 172, 168, 1, 1, 172, 168, 1,
            2, // ipv4
            0, 0, 0x12, 0xb5, 0, 0, 0, 0, // udp
            0x08, 0, 0, 0, 0, 0, 0x7b, 0, // vxlan
        ];
        assert_eq!(h.bytes(), want);
        assert_eq!(h.len(), 50);
        assert_eq!(
            h.to_string(),
            "tnl_push(tnl_port(4),header(size=50,type=4,eth(dst=02:00:00:00:00:02,\
             src=02:00:00:00:00:01,dl_type=0x0800),ipv4(src=172.168.1.1,dst=172.168.1.2,\
             proto=17,tos=0,ttl=64,frag=0x4000),udp(src=0,dst=4789,csum=0x0),\
             vxlan(flags=0x8000000,vni=0x7b)),out_port(1))"
        );
    }

    #[test]
    fn gre_header_bytes() {
        let mut s = spec(TunnelKind::Gre);
        s.csum = true;
        let h = TunnelHeader::new(s.clone(), 3, 1).unwrap();
        assert_eq!(&h.bytes()[23..24], &[47]);
        assert_eq!(
            &h.bytes()[34..],
            &[0xa0, 0x00, 0x65, 0x58, 0, 0, 0, 0, 0, 0, 0, 0x7b]
        );
        s.csum = false;
        s.key = None;
        let h = TunnelHeader::new(s, 3, 1).unwrap();
        assert_eq!(&h.bytes()[34..], &[0, 0, 0x65, 0x58]);
        assert!(h.to_string().contains("gre((flags=0x0,proto=0x6558))"));
    }

    #[test]
    fn geneve_header_bytes() {
        let mut s = spec(TunnelKind::Geneve);
        s.geneve_opts = vec![0x01, 0x02, 0x80, 0x01, 0xde, 0xad, 0xbe, 0xef];
        let h = TunnelHeader::new(s, 6, 1).unwrap();
        assert_eq!(
            &h.bytes()[34..],
            &[
                0, 0, 0x17, 0xc1, 0, 0, 0, 0, // udp
                2, 0, 0x65, 0x58, 0, 0, 0x7b, 0, // geneve, 2 words of options
                0x01, 0x02, 0x80, 0x01, 0xde, 0xad, 0xbe, 0xef,
            ]
        );
        let text = h.to_string();
        assert!(
            text.contains(",options({class=0x102,type=0x80,len=4,0xdeadbeef}))"),
            "{text}"
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = spec(TunnelKind::Vxlan);
        s.key = Some(1 << 24);
        assert_eq!(
            TunnelHeader::new(s, 1, 1),
            Err(TunnelError::VniTooWide(1 << 24))
        );
        let mut s = spec(TunnelKind::Geneve);
        s.geneve_opts = vec![0; 3];
        assert_eq!(
            TunnelHeader::new(s, 1, 1),
            Err(TunnelError::GeneveOptions(3))
        );
        let mut s = spec(TunnelKind::Gre);
        s.geneve_opts = vec![0; 4];
        assert_eq!(
            TunnelHeader::new(s, 1, 1),
            Err(TunnelError::OptionsNotGeneve)
        );
    }

    #[test]
    fn udp_source_ports_stay_in_range() {
        for h in [0, 1, 0x7fff_ffff, 0xffff_ffff, 0x1234_5678] {
            let p = udp_src_port(h);
            assert!((UDP_SRC_MIN..=UDP_SRC_MAX).contains(&p), "{p}");
        }
        assert_eq!(udp_src_port(0), UDP_SRC_MIN);
        assert_eq!(udp_src_port(u32::MAX), UDP_SRC_MAX);
    }
}
