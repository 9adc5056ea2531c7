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
//! Wire formats: VXLAN RFC 7348 (flags `0x08`, 24-bit VNI, UDP 4789), Geneve
//! RFC 8926 (version 0, options in 4-byte units, protocol 0x6558, 24-bit VNI,
//! UDP 6081), GRE RFC 2784/2890 (C and K bits, protocol 0x6558 for Ethernet).
//! The outer IPv4 header has no options and IP id 0; DF is set when
//! `df_default` is (OVS's default).

use std::fmt;
use std::net::Ipv4Addr;

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
        Ok(TunnelHeader {
            spec,
            tnl_port,
            out_port,
            bytes: b.into_boxed_slice(),
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
                    f.write_str(",options(")?;
                    for b in &s.geneve_opts {
                        write!(f, "{b:02x}")?;
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
