//! The field registry, as OVS's meta-flow (`lib/meta-flow.c`, `ovs-fields(7)`).
//!
//! A [`Field`] names one matchable / writable piece of a [`FlowKey`]: its
//! `ovs-ofctl` name, its NXM/OXM names and aliases, its width, whether it takes a
//! mask, the prerequisites a match must carry before it may name the field, and how
//! to read and write it in a key.
//!
//! # Values
//!
//! A field's value is a `u128` holding the field in its **own width and network
//! meaning**, right-aligned: a MAC is the 48-bit big-endian integer
//! (`fa:16:3e:00:00:01` = `0xfa163e000001`), an IPv4 address its 32-bit number,
//! `dl_vlan` the 12-bit VID, `vlan_tci` the 16-bit TCI including the CFI
//! ("present") bit, `nw_tos` the TOS byte with the ECN bits cleared, `ip_dscp`
//! the 6-bit DSCP. Bit `i` of a value is bit `i` of the field as NXM numbers it, so
//! `NXM_OF_VLAN_TCI[0..11]` is `value & 0xfff`.
//!
//! # Fields sharing storage
//!
//! As in OVS, several fields read the same `FlowKey` bits: `tp_src`, `tcp_src`,
//! `udp_src`, `sctp_src`, `icmp_type` and `icmpv6_type` are all `tp_src`;
//! `arp_spa` is `nw_src`; `arp_op` is `nw_proto`; `vlan_tci`, `dl_vlan`,
//! `vlan_vid` and `vlan_pcp` are all views of `vlan_tci[0]`. They differ in name,
//! width and prerequisites.
//!
//! # Setting a value vs. setting a mask
//!
//! [`Field::set`] is OVS's `mf_set_flow_value`: it may have side effects that
//! keep the key meaningful (setting `dl_vlan` or `vlan_pcp` also sets the CFI bit,
//! as OVS does). [`Field::set_mask`] writes exactly the field's bits and nothing
//! else: it is what a match's wildcard side and a megaflow mask need.

use crate::flow_key::{
    FlowKey, ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_RARP, IPPROTO_ICMP,
    IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, VLAN_CFI, VLAN_PCP_MASK,
    VLAN_PCP_SHIFT, VLAN_VID_MASK,
};

/// One field of the registry. See the module docs for value conventions.
///
/// The discriminants index [`Field::ALL`]; the order is the registry's, not the
/// order `match_format` prints in (see `syntax`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// `in_port`, `NXM_OF_IN_PORT`: 16-bit OpenFlow 1.0 port number (reserved
    /// ports 0xfff8..=0xffff map to the 32-bit 0xfffffff8..=0xffffffff).
    InPort,
    /// `in_port_oxm`, `OXM_OF_IN_PORT`: 32-bit OpenFlow 1.1+ port number.
    InPortOxm,
    /// `metadata`, `OXM_OF_METADATA`: 64 bits.
    Metadata,
    /// `reg0`, `NXM_NX_REG0`.
    Reg0,
    /// `reg1`, `NXM_NX_REG1`.
    Reg1,
    /// `reg2`, `NXM_NX_REG2`.
    Reg2,
    /// `reg3`, `NXM_NX_REG3`.
    Reg3,
    /// `reg4`, `NXM_NX_REG4`.
    Reg4,
    /// `reg5`, `NXM_NX_REG5`.
    Reg5,
    /// `reg6`, `NXM_NX_REG6`.
    Reg6,
    /// `reg7`, `NXM_NX_REG7`.
    Reg7,
    /// `reg8`, `NXM_NX_REG8`.
    Reg8,
    /// `reg9`, `NXM_NX_REG9`.
    Reg9,
    /// `reg10`, `NXM_NX_REG10`.
    Reg10,
    /// `reg11`, `NXM_NX_REG11`.
    Reg11,
    /// `reg12`, `NXM_NX_REG12`.
    Reg12,
    /// `reg13`, `NXM_NX_REG13`.
    Reg13,
    /// `reg14`, `NXM_NX_REG14`.
    Reg14,
    /// `reg15`, `NXM_NX_REG15`.
    Reg15,
    /// `tun_id` (`tunnel_id`), `NXM_NX_TUN_ID`, `OXM_OF_TUNNEL_ID`: 64 bits.
    TunId,
    /// `tun_src`, `NXM_NX_TUN_IPV4_SRC`.
    TunSrc,
    /// `tun_dst`, `NXM_NX_TUN_IPV4_DST`.
    TunDst,
    /// `tun_metadata0`, `NXM_NX_TUN_METADATA0`: the Geneve option the TLV
    /// map maps to it ([`crate::tun_metadata`]), 64 bits at most.
    TunMetadata0,
    /// `tun_metadata1`, `NXM_NX_TUN_METADATA1`.
    TunMetadata1,
    /// `tun_metadata2`, `NXM_NX_TUN_METADATA2`.
    TunMetadata2,
    /// `tun_metadata3`, `NXM_NX_TUN_METADATA3`.
    TunMetadata3,
    /// `dl_src` (`eth_src`), `NXM_OF_ETH_SRC`, `OXM_OF_ETH_SRC`.
    EthSrc,
    /// `dl_dst` (`eth_dst`), `NXM_OF_ETH_DST`, `OXM_OF_ETH_DST`.
    EthDst,
    /// `dl_type` (`eth_type`), `NXM_OF_ETH_TYPE`, `OXM_OF_ETH_TYPE`.
    EthType,
    /// `vlan_tci`, `NXM_OF_VLAN_TCI`: the 16-bit TCI with the CFI bit meaning
    /// "a tag is present".
    VlanTci,
    /// `dl_vlan`: OpenFlow 1.0 VLAN id, 12 bits (0xffff in a match means "no tag").
    DlVlan,
    /// `vlan_vid`, `OXM_OF_VLAN_VID`: 13 bits, the VID plus the present bit 0x1000.
    VlanVid,
    /// `dl_vlan_pcp` (`vlan_pcp`), `OXM_OF_VLAN_PCP`: 3 bits.
    VlanPcp,
    /// `nw_src` (`ip_src`), `NXM_OF_IP_SRC`, `OXM_OF_IPV4_SRC`.
    IpSrc,
    /// `nw_dst` (`ip_dst`), `NXM_OF_IP_DST`, `OXM_OF_IPV4_DST`.
    IpDst,
    /// `ipv6_src`, `NXM_NX_IPV6_SRC`, `OXM_OF_IPV6_SRC`.
    Ipv6Src,
    /// `ipv6_dst`, `NXM_NX_IPV6_DST`, `OXM_OF_IPV6_DST`.
    Ipv6Dst,
    /// `ipv6_label`, `NXM_NX_IPV6_LABEL`, `OXM_OF_IPV6_FLABEL`: 20 bits.
    Ipv6Label,
    /// `nw_proto` (`ip_proto`), `NXM_OF_IP_PROTO`, `OXM_OF_IP_PROTO`.
    IpProto,
    /// `nw_tos`, `NXM_OF_IP_TOS`: the TOS byte with its ECN bits zero (DSCP << 2).
    NwTos,
    /// `ip_dscp`, `OXM_OF_IP_DSCP`: the 6-bit DSCP.
    IpDscp,
    /// `nw_ecn` (`ip_ecn`), `NXM_NX_IP_ECN`, `OXM_OF_IP_ECN`: 2 bits.
    NwEcn,
    /// `nw_ttl`, `NXM_NX_IP_TTL`.
    NwTtl,
    /// `ip_frag` (`nw_frag`), `NXM_NX_IP_FRAG`: 2 bits (any, later).
    IpFrag,
    /// `tp_src`: transport source port of TCP, UDP or SCTP (OpenFlow 1.0 name).
    TpSrc,
    /// `tp_dst`: transport destination port of TCP, UDP or SCTP.
    TpDst,
    /// `tcp_src`, `NXM_OF_TCP_SRC`, `OXM_OF_TCP_SRC`.
    TcpSrc,
    /// `tcp_dst`, `NXM_OF_TCP_DST`, `OXM_OF_TCP_DST`.
    TcpDst,
    /// `udp_src`, `NXM_OF_UDP_SRC`, `OXM_OF_UDP_SRC`.
    UdpSrc,
    /// `udp_dst`, `NXM_OF_UDP_DST`, `OXM_OF_UDP_DST`.
    UdpDst,
    /// `sctp_src`, `OXM_OF_SCTP_SRC`.
    SctpSrc,
    /// `sctp_dst`, `OXM_OF_SCTP_DST`.
    SctpDst,
    /// `tcp_flags`, `NXM_NX_TCP_FLAGS`: 12 bits.
    TcpFlags,
    /// `icmp_type`, `NXM_OF_ICMP_TYPE`, `OXM_OF_ICMPV4_TYPE`.
    IcmpType,
    /// `icmp_code`, `NXM_OF_ICMP_CODE`, `OXM_OF_ICMPV4_CODE`.
    IcmpCode,
    /// `icmpv6_type`, `NXM_NX_ICMPV6_TYPE`, `OXM_OF_ICMPV6_TYPE`.
    Icmpv6Type,
    /// `icmpv6_code`, `NXM_NX_ICMPV6_CODE`, `OXM_OF_ICMPV6_CODE`.
    Icmpv6Code,
    /// `arp_op`, `NXM_OF_ARP_OP`, `OXM_OF_ARP_OP`: 16 bits (stored in `nw_proto`, so
    /// only opcodes up to 255 are representable, as in OVS).
    ArpOp,
    /// `arp_spa`, `NXM_OF_ARP_SPA`, `OXM_OF_ARP_SPA`.
    ArpSpa,
    /// `arp_tpa`, `NXM_OF_ARP_TPA`, `OXM_OF_ARP_TPA`.
    ArpTpa,
    /// `arp_sha`, `NXM_NX_ARP_SHA`, `OXM_OF_ARP_SHA`.
    ArpSha,
    /// `arp_tha`, `NXM_NX_ARP_THA`, `OXM_OF_ARP_THA`.
    ArpTha,
}

/// What a match must already pin down before it may name a field
/// (OVS `enum mf_prereqs`). "Pin down" means: matched exactly, with a value that
/// satisfies the prerequisite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prereq {
    /// No prerequisite.
    None,
    /// A VLAN tag is present (CFI bit matched and set).
    Vlan,
    /// `dl_type` is ARP or RARP.
    Arp,
    /// `dl_type` is IPv4.
    Ipv4,
    /// `dl_type` is IPv6.
    Ipv6,
    /// `dl_type` is IPv4 or IPv6.
    IpAny,
    /// IPv4/IPv6 and `nw_proto` is TCP.
    Tcp,
    /// IPv4/IPv6 and `nw_proto` is UDP.
    Udp,
    /// IPv4/IPv6 and `nw_proto` is SCTP.
    Sctp,
    /// IPv4/IPv6 and `nw_proto` is TCP, UDP or SCTP (the generic `tp_src`/`tp_dst`).
    TcpUdpSctp,
    /// IPv4 and `nw_proto` is ICMP.
    Icmpv4,
    /// IPv6 and `nw_proto` is ICMPv6.
    Icmpv6,
}

/// How a field's value is written in text (OVS `enum mf_string`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldFormat {
    /// Decimal (`nw_proto=6`); a masked value prints as `0xV/0xM`.
    Decimal,
    /// Hexadecimal with `0x` (`dl_type=0x0800` prints `0x800`).
    Hex,
    /// Ethernet address `aa:bb:cc:dd:ee:ff`.
    Ethernet,
    /// Dotted-quad IPv4 address; CIDR masks print as `/N`.
    Ipv4,
    /// IPv6 address; CIDR masks print as `/N`.
    Ipv6,
    /// OpenFlow port number or reserved port name (`LOCAL`, `IN_PORT`, ...).
    OfpPort,
    /// IP fragment type (`no`, `yes`, `first`, `later`, `not_later`).
    Frag,
    /// TCP flags, as `+syn-ack` or hex.
    TcpFlags,
}

/// Static description of one [`Field`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldInfo {
    /// The field described.
    pub field: Field,
    /// `ovs-ofctl` match name as `match_format` prints it (`dl_src`, `nw_dst`).
    pub name: &'static str,
    /// meta-flow name (`mf->name`, `ovs-fields(7)`: `eth_src`, `ip_dst`), used by
    /// `set_field:V->F` and by learn's immediate match specs.
    pub mf_name: &'static str,
    /// NXM name if the field has one (`NXM_OF_ETH_SRC`). Subfields print with it.
    pub nxm: Option<&'static str>,
    /// OXM name if the field has one (`OXM_OF_ETH_SRC`).
    pub oxm: Option<&'static str>,
    /// Other accepted names.
    pub aliases: &'static [&'static str],
    /// Width in bits.
    pub n_bits: u16,
    /// Whether a match may give an arbitrary bitwise mask.
    pub maskable: bool,
    /// What a match must pin down first.
    pub prereq: Prereq,
    /// Text format of values.
    pub format: FieldFormat,
}

macro_rules! fi {
    ($f:ident, $name:expr, $mf:expr, $nxm:expr, $oxm:expr, [$($alias:expr),*], $bits:expr,
     $maskable:expr, $pre:ident, $fmt:ident) => {
        FieldInfo {
            field: Field::$f,
            name: $name,
            mf_name: $mf,
            nxm: $nxm,
            oxm: $oxm,
            aliases: &[$($alias),*],
            n_bits: $bits,
            maskable: $maskable,
            prereq: Prereq::$pre,
            format: FieldFormat::$fmt,
        }
    };
}

macro_rules! tun_md {
    ($f:ident, $name:expr, $nxm:expr) => {
        fi!($f, $name, $name, Some($nxm), None, [], 64, true, None, Hex)
    };
}

macro_rules! reg {
    ($f:ident, $name:expr, $nxm:expr) => {
        fi!($f, $name, $name, Some($nxm), None, [], 32, true, None, Hex)
    };
}

/// The registry, indexed by `Field as usize`.
#[rustfmt::skip]
static FIELDS: [FieldInfo; 62] = [
    fi!(
        InPort,
        "in_port",
        "in_port",
        Some("NXM_OF_IN_PORT"),
        None,
        [],
        16,
        false,
        None,
        OfpPort
    ),
    fi!(
        InPortOxm,
        "in_port_oxm",
        "in_port_oxm",
        None,
        Some("OXM_OF_IN_PORT"),
        [],
        32,
        false,
        None,
        OfpPort
    ),
    fi!(
        Metadata,
        "metadata",
        "metadata",
        None,
        Some("OXM_OF_METADATA"),
        [],
        64,
        true,
        None,
        Hex
    ),
    reg!(Reg0, "reg0", "NXM_NX_REG0"),
    reg!(Reg1, "reg1", "NXM_NX_REG1"),
    reg!(Reg2, "reg2", "NXM_NX_REG2"),
    reg!(Reg3, "reg3", "NXM_NX_REG3"),
    reg!(Reg4, "reg4", "NXM_NX_REG4"),
    reg!(Reg5, "reg5", "NXM_NX_REG5"),
    reg!(Reg6, "reg6", "NXM_NX_REG6"),
    reg!(Reg7, "reg7", "NXM_NX_REG7"),
    reg!(Reg8, "reg8", "NXM_NX_REG8"),
    reg!(Reg9, "reg9", "NXM_NX_REG9"),
    reg!(Reg10, "reg10", "NXM_NX_REG10"),
    reg!(Reg11, "reg11", "NXM_NX_REG11"),
    reg!(Reg12, "reg12", "NXM_NX_REG12"),
    reg!(Reg13, "reg13", "NXM_NX_REG13"),
    reg!(Reg14, "reg14", "NXM_NX_REG14"),
    reg!(Reg15, "reg15", "NXM_NX_REG15"),
    fi!(
        TunId,
        "tun_id",
        "tun_id",
        Some("NXM_NX_TUN_ID"),
        Some("OXM_OF_TUNNEL_ID"),
        ["tunnel_id"],
        64,
        true,
        None,
        Hex
    ),
    fi!(
        TunSrc,
        "tun_src",
        "tun_src",
        Some("NXM_NX_TUN_IPV4_SRC"),
        None,
        [],
        32,
        true,
        None,
        Ipv4
    ),
    fi!(
        TunDst,
        "tun_dst",
        "tun_dst",
        Some("NXM_NX_TUN_IPV4_DST"),
        None,
        [],
        32,
        true,
        None,
        Ipv4
    ),
    tun_md!(TunMetadata0, "tun_metadata0", "NXM_NX_TUN_METADATA0"),
    tun_md!(TunMetadata1, "tun_metadata1", "NXM_NX_TUN_METADATA1"),
    tun_md!(TunMetadata2, "tun_metadata2", "NXM_NX_TUN_METADATA2"),
    tun_md!(TunMetadata3, "tun_metadata3", "NXM_NX_TUN_METADATA3"),
    fi!(
        EthSrc,
        "dl_src",
        "eth_src",
        Some("NXM_OF_ETH_SRC"),
        Some("OXM_OF_ETH_SRC"),
        [],
        48,
        true,
        None,
        Ethernet
    ),
    fi!(
        EthDst,
        "dl_dst",
        "eth_dst",
        Some("NXM_OF_ETH_DST"),
        Some("OXM_OF_ETH_DST"),
        [],
        48,
        true,
        None,
        Ethernet
    ),
    fi!(
        EthType,
        "dl_type",
        "eth_type",
        Some("NXM_OF_ETH_TYPE"),
        Some("OXM_OF_ETH_TYPE"),
        [],
        16,
        false,
        None,
        Hex
    ),
    fi!(
        VlanTci,
        "vlan_tci",
        "vlan_tci",
        Some("NXM_OF_VLAN_TCI"),
        None,
        [],
        16,
        true,
        None,
        Hex
    ),
    fi!(
        DlVlan,
        "dl_vlan",
        "dl_vlan",
        None,
        None,
        [],
        12,
        false,
        None,
        Decimal
    ),
    fi!(
        VlanVid,
        "vlan_vid",
        "vlan_vid",
        None,
        Some("OXM_OF_VLAN_VID"),
        [],
        13,
        true,
        None,
        Decimal
    ),
    fi!(
        VlanPcp,
        "dl_vlan_pcp",
        "vlan_pcp",
        None,
        Some("OXM_OF_VLAN_PCP"),
        [],
        3,
        false,
        None,
        Decimal
    ),
    fi!(
        IpSrc,
        "nw_src",
        "ip_src",
        Some("NXM_OF_IP_SRC"),
        Some("OXM_OF_IPV4_SRC"),
        [],
        32,
        true,
        Ipv4,
        Ipv4
    ),
    fi!(
        IpDst,
        "nw_dst",
        "ip_dst",
        Some("NXM_OF_IP_DST"),
        Some("OXM_OF_IPV4_DST"),
        [],
        32,
        true,
        Ipv4,
        Ipv4
    ),
    fi!(
        Ipv6Src,
        "ipv6_src",
        "ipv6_src",
        Some("NXM_NX_IPV6_SRC"),
        Some("OXM_OF_IPV6_SRC"),
        [],
        128,
        true,
        Ipv6,
        Ipv6
    ),
    fi!(
        Ipv6Dst,
        "ipv6_dst",
        "ipv6_dst",
        Some("NXM_NX_IPV6_DST"),
        Some("OXM_OF_IPV6_DST"),
        [],
        128,
        true,
        Ipv6,
        Ipv6
    ),
    fi!(
        Ipv6Label,
        "ipv6_label",
        "ipv6_label",
        Some("NXM_NX_IPV6_LABEL"),
        Some("OXM_OF_IPV6_FLABEL"),
        [],
        20,
        true,
        Ipv6,
        Hex
    ),
    fi!(
        IpProto,
        "nw_proto",
        "nw_proto",
        Some("NXM_OF_IP_PROTO"),
        Some("OXM_OF_IP_PROTO"),
        ["ip_proto"],
        8,
        false,
        IpAny,
        Decimal
    ),
    fi!(
        NwTos,
        "nw_tos",
        "nw_tos",
        Some("NXM_OF_IP_TOS"),
        None,
        [],
        8,
        false,
        IpAny,
        Decimal
    ),
    fi!(
        IpDscp,
        "ip_dscp",
        "ip_dscp",
        None,
        Some("OXM_OF_IP_DSCP"),
        [],
        6,
        false,
        IpAny,
        Decimal
    ),
    fi!(
        NwEcn,
        "nw_ecn",
        "nw_ecn",
        Some("NXM_NX_IP_ECN"),
        Some("OXM_OF_IP_ECN"),
        ["ip_ecn"],
        2,
        false,
        IpAny,
        Decimal
    ),
    fi!(
        NwTtl,
        "nw_ttl",
        "nw_ttl",
        Some("NXM_NX_IP_TTL"),
        None,
        [],
        8,
        false,
        IpAny,
        Decimal
    ),
    fi!(
        IpFrag,
        "nw_frag",
        "ip_frag",
        Some("NXM_NX_IP_FRAG"),
        None,
        [],
        2,
        true,
        IpAny,
        Frag
    ),
    fi!(
        TpSrc,
        "tp_src",
        "tp_src",
        None,
        None,
        [],
        16,
        true,
        TcpUdpSctp,
        Decimal
    ),
    fi!(
        TpDst,
        "tp_dst",
        "tp_dst",
        None,
        None,
        [],
        16,
        true,
        TcpUdpSctp,
        Decimal
    ),
    fi!(
        TcpSrc,
        "tcp_src",
        "tcp_src",
        Some("NXM_OF_TCP_SRC"),
        Some("OXM_OF_TCP_SRC"),
        [],
        16,
        true,
        Tcp,
        Decimal
    ),
    fi!(
        TcpDst,
        "tcp_dst",
        "tcp_dst",
        Some("NXM_OF_TCP_DST"),
        Some("OXM_OF_TCP_DST"),
        [],
        16,
        true,
        Tcp,
        Decimal
    ),
    fi!(
        UdpSrc,
        "udp_src",
        "udp_src",
        Some("NXM_OF_UDP_SRC"),
        Some("OXM_OF_UDP_SRC"),
        [],
        16,
        true,
        Udp,
        Decimal
    ),
    fi!(
        UdpDst,
        "udp_dst",
        "udp_dst",
        Some("NXM_OF_UDP_DST"),
        Some("OXM_OF_UDP_DST"),
        [],
        16,
        true,
        Udp,
        Decimal
    ),
    fi!(
        SctpSrc,
        "sctp_src",
        "sctp_src",
        None,
        Some("OXM_OF_SCTP_SRC"),
        [],
        16,
        true,
        Sctp,
        Decimal
    ),
    fi!(
        SctpDst,
        "sctp_dst",
        "sctp_dst",
        None,
        Some("OXM_OF_SCTP_DST"),
        [],
        16,
        true,
        Sctp,
        Decimal
    ),
    fi!(
        TcpFlags,
        "tcp_flags",
        "tcp_flags",
        Some("NXM_NX_TCP_FLAGS"),
        None,
        [],
        12,
        true,
        Tcp,
        TcpFlags
    ),
    fi!(
        IcmpType,
        "icmp_type",
        "icmp_type",
        Some("NXM_OF_ICMP_TYPE"),
        Some("OXM_OF_ICMPV4_TYPE"),
        ["icmpv4_type"],
        8,
        false,
        Icmpv4,
        Decimal
    ),
    fi!(
        IcmpCode,
        "icmp_code",
        "icmp_code",
        Some("NXM_OF_ICMP_CODE"),
        Some("OXM_OF_ICMPV4_CODE"),
        ["icmpv4_code"],
        8,
        false,
        Icmpv4,
        Decimal
    ),
    fi!(
        Icmpv6Type,
        "icmpv6_type",
        "icmpv6_type",
        Some("NXM_NX_ICMPV6_TYPE"),
        Some("OXM_OF_ICMPV6_TYPE"),
        [],
        8,
        false,
        Icmpv6,
        Decimal
    ),
    fi!(
        Icmpv6Code,
        "icmpv6_code",
        "icmpv6_code",
        Some("NXM_NX_ICMPV6_CODE"),
        Some("OXM_OF_ICMPV6_CODE"),
        [],
        8,
        false,
        Icmpv6,
        Decimal
    ),
    fi!(
        ArpOp,
        "arp_op",
        "arp_op",
        Some("NXM_OF_ARP_OP"),
        Some("OXM_OF_ARP_OP"),
        [],
        16,
        false,
        Arp,
        Decimal
    ),
    fi!(
        ArpSpa,
        "arp_spa",
        "arp_spa",
        Some("NXM_OF_ARP_SPA"),
        Some("OXM_OF_ARP_SPA"),
        [],
        32,
        true,
        Arp,
        Ipv4
    ),
    fi!(
        ArpTpa,
        "arp_tpa",
        "arp_tpa",
        Some("NXM_OF_ARP_TPA"),
        Some("OXM_OF_ARP_TPA"),
        [],
        32,
        true,
        Arp,
        Ipv4
    ),
    fi!(
        ArpSha,
        "arp_sha",
        "arp_sha",
        Some("NXM_NX_ARP_SHA"),
        Some("OXM_OF_ARP_SHA"),
        [],
        48,
        true,
        Arp,
        Ethernet
    ),
    fi!(
        ArpTha,
        "arp_tha",
        "arp_tha",
        Some("NXM_NX_ARP_THA"),
        Some("OXM_OF_ARP_THA"),
        [],
        48,
        true,
        Arp,
        Ethernet
    ),
];

/// OVS's `OFP10_VLAN_NONE`: `dl_vlan=0xffff` matches packets without a VLAN tag.
pub const OFP10_VLAN_NONE: u16 = 0xffff;

/// The 16-bit OpenFlow 1.0 port space's first reserved port (`OFPP_MAX`+1 = 0xff00
/// is "max"; reserved names start at 0xfff8).
const OFP10_RESERVED_FIRST: u32 = 0xfff8;
/// Offset between a 16-bit reserved port and its 32-bit OpenFlow 1.1 number.
const OFP11_RESERVED_OFFSET: u32 = 0xffff_0000;

#[inline]
fn mac_to_u128(m: [u8; 6]) -> u128 {
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(&m);
    u128::from(u64::from_be_bytes(b))
}

#[inline]
fn u128_to_mac(v: u128) -> [u8; 6] {
    let b = (v as u64).to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

impl Field {
    /// Every field, in registry order.
    pub const ALL: [Field; 62] = {
        let mut all = [Field::InPort; 62];
        let mut i = 0;
        while i < 62 {
            all[i] = FIELDS[i].field;
            i += 1;
        }
        all
    };

    /// The field's static description.
    #[inline]
    pub fn info(self) -> &'static FieldInfo {
        // In bounds: `FIELDS` has one entry per variant, in declaration order
        // (checked by the `registry_is_indexed_by_discriminant` test).
        &FIELDS[self as usize]
    }

    /// `ovs-ofctl` match name (`dl_src`).
    #[inline]
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Width in bits.
    #[inline]
    pub fn n_bits(self) -> u16 {
        self.info().n_bits
    }

    /// All-ones value of the field's width.
    #[inline]
    pub fn full_mask(self) -> u128 {
        ones(self.n_bits())
    }

    /// Whether arbitrary bitwise masks are allowed in a match.
    #[inline]
    pub fn maskable(self) -> bool {
        self.info().maskable
    }

    /// What a match must pin down before naming this field.
    #[inline]
    pub fn prereq(self) -> Prereq {
        self.info().prereq
    }

    /// Name used when printing a subfield (`mf_format_subfield`): the NXM name if
    /// any, else the OXM name, else the meta-flow name.
    #[inline]
    pub fn subfield_name(self) -> &'static str {
        let i = self.info();
        i.nxm.or(i.oxm).unwrap_or(i.mf_name)
    }

    /// Register field `reg{n}`, `n < 16`.
    pub fn reg(n: usize) -> Option<Field> {
        Field::ALL
            .get(Field::Reg0 as usize + n)
            .copied()
            .filter(|_| n < 16)
    }

    /// Looks a field up by any of its names (ofctl name, meta-flow name, NXM, OXM,
    /// aliases). NXM/OXM names are matched case-sensitively, as OVS does; the
    /// others are lower-case only.
    pub fn from_name(name: &str) -> Option<Field> {
        FIELDS
            .iter()
            .find(|i| {
                i.name == name
                    || i.mf_name == name
                    || i.nxm == Some(name)
                    || i.oxm == Some(name)
                    || i.aliases.contains(&name)
            })
            .map(|i| i.field)
    }

    /// Reads the field from a key (OVS `mf_get_value`).
    pub fn get(self, k: &FlowKey) -> u128 {
        use Field::*;
        match self {
            InPort => {
                let p = k.in_port;
                if p >= OFP11_RESERVED_OFFSET | OFP10_RESERVED_FIRST {
                    u128::from(p & 0xffff)
                } else if p < 0xff00 {
                    u128::from(p)
                } else {
                    // Not representable in 16 bits; OVS maps such ports to
                    // OFPP_NONE.
                    0xffff
                }
            }
            InPortOxm => u128::from(k.in_port),
            Metadata => u128::from(k.metadata),
            Reg0 | Reg1 | Reg2 | Reg3 | Reg4 | Reg5 | Reg6 | Reg7 | Reg8 | Reg9 | Reg10 | Reg11
            | Reg12 | Reg13 | Reg14 | Reg15 => u128::from(k.regs[self as usize - Reg0 as usize]),
            TunId => u128::from(k.tun_id),
            TunSrc => u128::from(k.tun_src),
            TunDst => u128::from(k.tun_dst),
            TunMetadata0 | TunMetadata1 | TunMetadata2 | TunMetadata3 => {
                u128::from(k.tun_md[self as usize - TunMetadata0 as usize])
            }
            EthSrc => mac_to_u128(k.dl_src),
            EthDst => mac_to_u128(k.dl_dst),
            EthType => u128::from(k.dl_type),
            VlanTci => u128::from(k.vlan_tci[0]),
            DlVlan => u128::from(k.vlan_tci[0] & VLAN_VID_MASK),
            VlanVid => u128::from(k.vlan_tci[0] & (VLAN_VID_MASK | VLAN_CFI)),
            VlanPcp => u128::from(k.vlan_tci[0] >> VLAN_PCP_SHIFT),
            IpSrc | ArpSpa => u128::from(k.nw_src),
            IpDst | ArpTpa => u128::from(k.nw_dst),
            Ipv6Src => u128::from_be_bytes(k.ipv6_src),
            Ipv6Dst => u128::from_be_bytes(k.ipv6_dst),
            Ipv6Label => u128::from(k.ipv6_label & 0xf_ffff),
            IpProto | ArpOp => u128::from(k.nw_proto),
            NwTos => u128::from(k.nw_tos & 0xfc),
            IpDscp => u128::from(k.nw_tos >> 2),
            NwEcn => u128::from(k.nw_tos & 0x03),
            NwTtl => u128::from(k.nw_ttl),
            IpFrag => u128::from(k.nw_frag & 0x03),
            TpSrc | TcpSrc | UdpSrc | SctpSrc => u128::from(k.tp_src),
            TpDst | TcpDst | UdpDst | SctpDst => u128::from(k.tp_dst),
            IcmpType | Icmpv6Type => u128::from(k.tp_src & 0xff),
            IcmpCode | Icmpv6Code => u128::from(k.tp_dst & 0xff),
            TcpFlags => u128::from(k.tcp_flags & 0x0fff),
            ArpSha => mac_to_u128(k.arp_sha),
            ArpTha => mac_to_u128(k.arp_tha),
        }
    }

    /// Writes exactly the field's bits of `v` (truncated to the field's width) into
    /// `k`, leaving every other bit alone. Used for masks and by `load`/`move`.
    pub fn set_raw(self, k: &mut FlowKey, v: u128) {
        use Field::*;
        let v = v & self.full_mask();
        match self {
            InPort => {
                let v = v as u32;
                k.in_port = if v >= OFP10_RESERVED_FIRST {
                    OFP11_RESERVED_OFFSET | v
                } else {
                    v
                };
            }
            InPortOxm => k.in_port = v as u32,
            Metadata => k.metadata = v as u64,
            Reg0 | Reg1 | Reg2 | Reg3 | Reg4 | Reg5 | Reg6 | Reg7 | Reg8 | Reg9 | Reg10 | Reg11
            | Reg12 | Reg13 | Reg14 | Reg15 => {
                k.regs[self as usize - Reg0 as usize] = v as u32;
            }
            TunId => k.tun_id = v as u64,
            TunSrc => k.tun_src = v as u32,
            TunDst => k.tun_dst = v as u32,
            // Written, the field is present (OVS: a tun_metadata field set by
            // an action or a match exists).
            TunMetadata0 | TunMetadata1 | TunMetadata2 | TunMetadata3 => {
                let i = self as usize - TunMetadata0 as usize;
                k.tun_md[i] = v as u64;
                k.tun_md_present |= 1 << i;
            }
            EthSrc => k.dl_src = u128_to_mac(v),
            EthDst => k.dl_dst = u128_to_mac(v),
            EthType => k.dl_type = v as u16,
            VlanTci => k.vlan_tci[0] = v as u16,
            DlVlan => k.vlan_tci[0] = (k.vlan_tci[0] & !VLAN_VID_MASK) | v as u16,
            VlanVid => {
                k.vlan_tci[0] = (k.vlan_tci[0] & !(VLAN_VID_MASK | VLAN_CFI)) | v as u16;
            }
            VlanPcp => {
                k.vlan_tci[0] = (k.vlan_tci[0] & !VLAN_PCP_MASK) | ((v as u16) << VLAN_PCP_SHIFT);
            }
            IpSrc | ArpSpa => k.nw_src = v as u32,
            IpDst | ArpTpa => k.nw_dst = v as u32,
            Ipv6Src => k.ipv6_src = v.to_be_bytes(),
            Ipv6Dst => k.ipv6_dst = v.to_be_bytes(),
            Ipv6Label => k.ipv6_label = (k.ipv6_label & !0xf_ffff) | v as u32,
            // arp_op is 16 bits in OpenFlow but lives in the 8-bit nw_proto, as in
            // OVS: the high byte is dropped.
            IpProto | ArpOp => k.nw_proto = v as u8,
            NwTos => k.nw_tos = (k.nw_tos & 0x03) | (v as u8 & 0xfc),
            IpDscp => k.nw_tos = (k.nw_tos & 0x03) | ((v as u8) << 2),
            NwEcn => k.nw_tos = (k.nw_tos & 0xfc) | v as u8,
            NwTtl => k.nw_ttl = v as u8,
            IpFrag => k.nw_frag = (k.nw_frag & !0x03) | v as u8,
            TpSrc | TcpSrc | UdpSrc | SctpSrc => k.tp_src = v as u16,
            TpDst | TcpDst | UdpDst | SctpDst => k.tp_dst = v as u16,
            IcmpType | Icmpv6Type => k.tp_src = v as u16,
            IcmpCode | Icmpv6Code => k.tp_dst = v as u16,
            TcpFlags => k.tcp_flags = (k.tcp_flags & !0x0fff) | v as u16,
            ArpSha => k.arp_sha = u128_to_mac(v),
            ArpTha => k.arp_tha = u128_to_mac(v),
        }
    }

    /// Sets the field in a packet key with OVS's side effects
    /// (`mf_set_flow_value`): setting `dl_vlan` or `vlan_pcp` also sets the CFI
    /// ("tag present") bit, as OVS's `flow_set_dl_vlan`/`flow_set_vlan_pcp` do;
    /// `dl_vlan` = 0xffff (`OFP10_VLAN_NONE`) removes the tag. Other fields are
    /// [`Field::set_raw`].
    pub fn set(self, k: &mut FlowKey, v: u128) {
        match self {
            Field::DlVlan if v == u128::from(OFP10_VLAN_NONE) => k.vlan_tci[0] = 0,
            Field::DlVlan => {
                self.set_raw(k, v);
                k.vlan_tci[0] |= VLAN_CFI;
            }
            Field::VlanPcp => {
                self.set_raw(k, v);
                k.vlan_tci[0] |= VLAN_CFI;
            }
            _ => self.set_raw(k, v),
        }
    }

    /// Writes a mask for this field into a mask key: exactly the field's bits, as
    /// [`Field::set_raw`] (the name says what the key is for). A
    /// `tun_metadata` field's mask also covers its present bit unless it is 0.
    #[inline]
    pub fn set_mask(self, mask: &mut FlowKey, m: u128) {
        self.set_raw(mask, m);
        if let Some(i) = self.tun_metadata_index() {
            if m == 0 {
                mask.tun_md_present &= !(1 << i);
            }
        }
    }

    /// `N` of `tun_metadataN`; `None` for the other fields.
    #[inline]
    pub fn tun_metadata_index(self) -> Option<usize> {
        use Field::*;
        match self {
            TunMetadata0 | TunMetadata1 | TunMetadata2 | TunMetadata3 => {
                Some(self as usize - TunMetadata0 as usize)
            }
            _ => None,
        }
    }

    /// Whether `pkt` (a packet's key) satisfies the field's prerequisites, as OVS's
    /// `mf_are_prereqs_ok` checks before `load`/`move`/`set_field` touch a field.
    /// If `wc` is given, the bits examined are marked in it (megaflow mask).
    pub fn prereqs_ok(self, pkt: &FlowKey, wc: Option<&mut FlowKey>) -> bool {
        self.prereq().ok_for_packet(pkt, wc)
    }
}

impl Prereq {
    /// Human text used in errors: `"tp_dst=80": prerequisites not met (needs tcp,
    /// udp or sctp)`.
    pub fn describe(self) -> &'static str {
        match self {
            Prereq::None => "nothing",
            Prereq::Vlan => "a VLAN tag (vlan_tci with 0x1000 set)",
            Prereq::Arp => "arp or rarp",
            Prereq::Ipv4 => "ip",
            Prereq::Ipv6 => "ipv6",
            Prereq::IpAny => "ip or ipv6",
            Prereq::Tcp => "tcp or tcp6",
            Prereq::Udp => "udp or udp6",
            Prereq::Sctp => "sctp or sctp6",
            Prereq::TcpUdpSctp => "tcp, udp or sctp",
            Prereq::Icmpv4 => "icmp",
            Prereq::Icmpv6 => "icmp6",
        }
    }

    /// Whether a match (`key`, `mask`) pins the prerequisite down: every field the
    /// prerequisite names is matched exactly with a satisfying value.
    pub fn ok_for_match(self, key: &FlowKey, mask: &FlowKey) -> bool {
        let dl = |t: u16| mask.dl_type == 0xffff && key.dl_type == t;
        let ip_any = || dl(ETH_TYPE_IPV4) || dl(ETH_TYPE_IPV6);
        let proto = |p: u8| mask.nw_proto == 0xff && key.nw_proto == p;
        match self {
            Prereq::None => true,
            Prereq::Vlan => mask.vlan_tci[0] & VLAN_CFI != 0 && key.vlan_tci[0] & VLAN_CFI != 0,
            Prereq::Arp => dl(ETH_TYPE_ARP) || dl(ETH_TYPE_RARP),
            Prereq::Ipv4 => dl(ETH_TYPE_IPV4),
            Prereq::Ipv6 => dl(ETH_TYPE_IPV6),
            Prereq::IpAny => ip_any(),
            Prereq::Tcp => ip_any() && proto(IPPROTO_TCP),
            Prereq::Udp => ip_any() && proto(IPPROTO_UDP),
            Prereq::Sctp => ip_any() && proto(IPPROTO_SCTP),
            Prereq::TcpUdpSctp => {
                ip_any() && (proto(IPPROTO_TCP) || proto(IPPROTO_UDP) || proto(IPPROTO_SCTP))
            }
            Prereq::Icmpv4 => dl(ETH_TYPE_IPV4) && proto(IPPROTO_ICMP),
            Prereq::Icmpv6 => dl(ETH_TYPE_IPV6) && proto(IPPROTO_ICMPV6),
        }
    }

    /// Whether a packet key satisfies the prerequisite. If `wc` is given, marks the
    /// fields examined (`dl_type`, `nw_proto`, the VLAN CFI bit) in it, as OVS's
    /// `mf_are_prereqs_ok` does for the megaflow.
    pub fn ok_for_packet(self, pkt: &FlowKey, wc: Option<&mut FlowKey>) -> bool {
        let is_ip = pkt.dl_type == ETH_TYPE_IPV4 || pkt.dl_type == ETH_TYPE_IPV6;
        let (ok, dl, proto, cfi) = match self {
            Prereq::None => (true, false, false, false),
            Prereq::Vlan => (pkt.vlan_tci[0] & VLAN_CFI != 0, false, false, true),
            Prereq::Arp => (
                pkt.dl_type == ETH_TYPE_ARP || pkt.dl_type == ETH_TYPE_RARP,
                true,
                false,
                false,
            ),
            Prereq::Ipv4 => (pkt.dl_type == ETH_TYPE_IPV4, true, false, false),
            Prereq::Ipv6 => (pkt.dl_type == ETH_TYPE_IPV6, true, false, false),
            Prereq::IpAny => (is_ip, true, false, false),
            Prereq::Tcp => (is_ip && pkt.nw_proto == IPPROTO_TCP, true, is_ip, false),
            Prereq::Udp => (is_ip && pkt.nw_proto == IPPROTO_UDP, true, is_ip, false),
            Prereq::Sctp => (is_ip && pkt.nw_proto == IPPROTO_SCTP, true, is_ip, false),
            Prereq::TcpUdpSctp => (
                is_ip && matches!(pkt.nw_proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP),
                true,
                is_ip,
                false,
            ),
            Prereq::Icmpv4 => (
                pkt.dl_type == ETH_TYPE_IPV4 && pkt.nw_proto == IPPROTO_ICMP,
                true,
                pkt.dl_type == ETH_TYPE_IPV4,
                false,
            ),
            Prereq::Icmpv6 => (
                pkt.dl_type == ETH_TYPE_IPV6 && pkt.nw_proto == IPPROTO_ICMPV6,
                true,
                pkt.dl_type == ETH_TYPE_IPV6,
                false,
            ),
        };
        if let Some(wc) = wc {
            if dl {
                wc.dl_type = 0xffff;
            }
            if proto {
                wc.nw_proto = 0xff;
            }
            if cfi {
                wc.vlan_tci[0] |= VLAN_CFI;
            }
        }
        ok
    }
}

/// All-ones in the low `n` bits (`n <= 128`).
#[inline]
pub fn ones(n: u16) -> u128 {
    if n >= 128 {
        u128::MAX
    } else {
        (1u128 << n) - 1
    }
}

/// A bit range of a field, as NXM writes it: `NXM_OF_VLAN_TCI[0..11]` (bits 0 to 11
/// inclusive), `NXM_NX_REG0[5]` (one bit), `NXM_OF_ETH_DST[]` (the whole field).
/// OVS `struct mf_subfield`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Subfield {
    /// The field.
    pub field: Field,
    /// First bit (0 = least significant).
    pub ofs: u16,
    /// Number of bits, at least 1; `ofs + n_bits <= field.n_bits()`.
    pub n_bits: u16,
}

/// Why a subfield is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubfieldError {
    /// The range is empty, reversed or past the field's end.
    #[error("bits {start}..{end} out of range for {width}-bit field {field}")]
    OutOfRange {
        /// Field name as written.
        field: &'static str,
        /// First bit.
        start: u32,
        /// Last bit.
        end: u32,
        /// Width of the field.
        width: u16,
    },
}

impl Subfield {
    /// The whole field (`F[]`).
    #[inline]
    pub fn whole(field: Field) -> Subfield {
        Subfield {
            field,
            ofs: 0,
            n_bits: field.n_bits(),
        }
    }

    /// Bits `start..=end` of `field` (NXM's inclusive `[start..end]`).
    pub fn range(field: Field, start: u32, end: u32) -> Result<Subfield, SubfieldError> {
        let width = field.n_bits();
        if start > end || end >= u32::from(width) {
            return Err(SubfieldError::OutOfRange {
                field: field.subfield_name(),
                start,
                end,
                width,
            });
        }
        Ok(Subfield {
            field,
            ofs: start as u16,
            n_bits: (end - start + 1) as u16,
        })
    }

    /// Whether this is the whole field.
    #[inline]
    pub fn is_whole(&self) -> bool {
        self.ofs == 0 && self.n_bits == self.field.n_bits()
    }

    /// Mask of the range in the field's value space.
    #[inline]
    pub fn value_mask(&self) -> u128 {
        ones(self.n_bits) << self.ofs
    }

    /// Reads the bits, right-aligned (OVS `mf_read_subfield`).
    #[inline]
    pub fn read(&self, k: &FlowKey) -> u128 {
        (self.field.get(k) >> self.ofs) & ones(self.n_bits)
    }

    /// Writes the low `n_bits` of `v` into the range, leaving the field's other
    /// bits alone (OVS `mf_write_subfield_flow`: the field is read, patched and
    /// written back raw).
    #[inline]
    pub fn write(&self, k: &mut FlowKey, v: u128) {
        let m = self.value_mask();
        let old = self.field.get(k);
        self.field.set_raw(k, (old & !m) | ((v << self.ofs) & m));
    }

    /// Sets the range's bits to 1 in a mask key (the megaflow "looked at" mask).
    #[inline]
    pub fn mark(&self, mask: &mut FlowKey) {
        let old = self.field.get(mask);
        self.field.set_raw(mask, old | self.value_mask());
    }
}

impl core::fmt::Display for Subfield {
    /// `NXM_OF_VLAN_TCI[0..11]`, `NXM_NX_REG0[5]`, `NXM_OF_ETH_DST[]`, as
    /// `mf_format_subfield`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = self.field.subfield_name();
        if self.is_whole() {
            write!(f, "{name}[]")
        } else if self.n_bits == 1 {
            write!(f, "{name}[{}]", self.ofs)
        } else {
            write!(f, "{name}[{}..{}]", self.ofs, self.ofs + self.n_bits - 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_indexed_by_discriminant() {
        for (i, info) in FIELDS.iter().enumerate() {
            assert_eq!(info.field as usize, i, "{:?}", info.field);
            assert_eq!(Field::ALL[i], info.field);
            assert!(info.n_bits >= 1 && info.n_bits <= 128);
        }
    }

    #[test]
    fn names_are_unique() {
        let mut seen = std::collections::HashMap::new();
        for info in &FIELDS {
            let mut names = vec![info.name, info.mf_name];
            names.extend(info.nxm);
            names.extend(info.oxm);
            names.extend(info.aliases.iter().copied());
            names.sort_unstable();
            names.dedup();
            for n in names {
                if let Some(prev) = seen.insert(n, info.field) {
                    panic!("{n} names both {prev:?} and {:?}", info.field);
                }
            }
        }
        assert_eq!(Field::from_name("NXM_OF_VLAN_TCI"), Some(Field::VlanTci));
        assert_eq!(Field::from_name("tunnel_id"), Some(Field::TunId));
        assert_eq!(Field::from_name("OXM_OF_METADATA"), Some(Field::Metadata));
        assert_eq!(Field::from_name("reg15"), Some(Field::Reg15));
        assert_eq!(Field::from_name("eth_dst"), Some(Field::EthDst));
        assert_eq!(Field::from_name("foo"), None);
    }

    #[test]
    fn get_set_roundtrip_every_field() {
        for f in Field::ALL {
            let mut k = FlowKey::default();
            let v = 0x5a5a_5a5a_5a5a_5a5a_5a5a_5a5a_5a5a_5a5a & f.full_mask();
            f.set_raw(&mut k, v);
            let expect = match f {
                // 16-bit in_port 0x5a5a is an ordinary port.
                Field::ArpOp => v & 0xff,
                Field::NwTos => v & 0xfc,
                _ => v,
            };
            assert_eq!(f.get(&k), expect, "{f:?}");
        }
    }

    #[test]
    fn vlan_views() {
        let mut k = FlowKey::default();
        Field::DlVlan.set(&mut k, 5);
        assert_eq!(k.vlan_tci[0], 0x1005);
        Field::VlanPcp.set(&mut k, 3);
        assert_eq!(k.vlan_tci[0], 0x7005);
        assert_eq!(Field::VlanVid.get(&k), 0x1005);
        assert_eq!(Field::DlVlan.get(&k), 5);
        Field::DlVlan.set(&mut k, 0xffff);
        assert_eq!(k.vlan_tci[0], 0);
    }

    #[test]
    fn tos_views() {
        let mut k = FlowKey {
            nw_tos: 0x03,
            ..FlowKey::default()
        };
        Field::NwTos.set(&mut k, 0xb8);
        assert_eq!(k.nw_tos, 0xbb);
        assert_eq!(Field::IpDscp.get(&k), 0x2e);
        assert_eq!(Field::NwEcn.get(&k), 3);
    }

    #[test]
    fn in_port_16_bit_mapping() {
        let mut k = FlowKey::default();
        Field::InPort.set(&mut k, 0xfffe);
        assert_eq!(k.in_port, crate::flow_key::OFPP_LOCAL);
        assert_eq!(Field::InPort.get(&k), 0xfffe);
        Field::InPort.set(&mut k, 7);
        assert_eq!(k.in_port, 7);
    }

    #[test]
    fn subfields() {
        let sf = Subfield::range(Field::VlanTci, 0, 11).unwrap();
        assert_eq!(sf.to_string(), "NXM_OF_VLAN_TCI[0..11]");
        assert_eq!(
            Subfield::whole(Field::EthDst).to_string(),
            "NXM_OF_ETH_DST[]"
        );
        assert_eq!(
            Subfield::range(Field::Reg0, 5, 5).unwrap().to_string(),
            "NXM_NX_REG0[5]"
        );
        assert_eq!(
            Subfield::whole(Field::Metadata).to_string(),
            "OXM_OF_METADATA[]"
        );
        assert!(Subfield::range(Field::VlanTci, 0, 16).is_err());
        assert!(Subfield::range(Field::VlanTci, 3, 2).is_err());
        let mut k = FlowKey {
            vlan_tci: [0xf123, 0],
            ..FlowKey::default()
        };
        assert_eq!(sf.read(&k), 0x123);
        sf.write(&mut k, 0xabc);
        assert_eq!(k.vlan_tci[0], 0xfabc);
        let mut m = FlowKey::default();
        sf.mark(&mut m);
        assert_eq!(m.vlan_tci[0], 0x0fff);
        let hi = Subfield::range(Field::EthSrc, 40, 47).unwrap();
        let mut k = FlowKey::default();
        hi.write(&mut k, 0xfa);
        assert_eq!(k.dl_src, [0xfa, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn prereqs() {
        let mut key = FlowKey::default();
        let mut mask = FlowKey::default();
        assert!(!Prereq::TcpUdpSctp.ok_for_match(&key, &mask));
        key.dl_type = ETH_TYPE_IPV4;
        mask.dl_type = 0xffff;
        key.nw_proto = IPPROTO_UDP;
        mask.nw_proto = 0xff;
        assert!(Prereq::TcpUdpSctp.ok_for_match(&key, &mask));
        assert!(Prereq::Udp.ok_for_match(&key, &mask));
        assert!(!Prereq::Tcp.ok_for_match(&key, &mask));
        let mut wc = FlowKey::default();
        assert!(Field::UdpSrc.prereqs_ok(&key, Some(&mut wc)));
        assert_eq!((wc.dl_type, wc.nw_proto), (0xffff, 0xff));
    }
}
