//! The flow key: every packet field and piece of metadata a flow can match on.
//!
//! Hot-path rule: a `FlowKey` is filled once per packet by [`crate::parse()`], then
//! hashed and compared by the exact-match cache and the megaflow classifier. It is a
//! plain `Copy` value: no heap, no pointers, no `Drop`. Code here must not allocate,
//! lock, log or panic.
//!
//! # Layout
//!
//! The struct is `#[repr(C, align(8))]` with explicit padding, so it has no
//! uninitialised bytes and is exactly [`FLOW_KEY_WORDS`] `u64` words long. The
//! classifier treats a key and a mask (a `FlowKey` too, with 1-bits where the match
//! cares) as `[u64; FLOW_KEY_WORDS]` through [`FlowKey::words`], so masked hashing
//! and comparison are word loops with no per-field code. Fields are grouped so that
//! the ones most matches look at (metadata, L2, L3 addresses, L4 ports) sit in few
//! words. Padding fields are always zero after [`crate::parse()`].
//!
//! # Byte order
//!
//! * Integer fields (`u16`, `u32`, `u64`) hold **host-order** values: `dl_type` of an
//!   IPv4 frame is `0x0800`, `nw_src` of 10.0.0.1 is `0x0a00_0001`
//!   (`std::net::Ipv4Addr::from(key.nw_src)` gives the address back).
//! * Byte-array fields (`dl_src`, `dl_dst`, `arp_sha`, `arp_tha`, `ipv6_src`,
//!   `ipv6_dst`, `nd_target`) hold the bytes **as on the wire** (network order).
//!
//! # Field sharing (OVS semantics)
//!
//! As in Open vSwitch's `struct flow`, some fields are shared between protocols:
//!
//! * ARP/RARP: `nw_src` = sender IP (`arp_spa`), `nw_dst` = target IP (`arp_tpa`),
//!   `nw_proto` = opcode (`arp_op`, only when it fits in 8 bits, else 0),
//!   `arp_sha`/`arp_tha` = sender/target hardware address.
//! * ICMP/ICMPv6: `tp_src` = type, `tp_dst` = code.
//! * ICMPv6 neighbour discovery: `nd_target` = target address, `arp_sha` = source
//!   link-layer address option (`nd_sll`), `arp_tha` = target link-layer address
//!   option (`nd_tll`).
//!
//! Accessors with the OpenFlow names ([`FlowKey::arp_spa`], [`FlowKey::nd_sll`], ...)
//! read the shared fields.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Number of `u64` words in a [`FlowKey`].
pub const FLOW_KEY_WORDS: usize = 31;

/// Number of VLAN tags a key holds (outer first), as OVS's `FLOW_MAX_VLAN_HEADERS`.
pub const FLOW_MAX_VLAN_HEADERS: usize = 2;

/// Number of 32-bit registers (`reg0`..`reg15`, OVS `FLOW_N_REGS`).
pub const FLOW_N_REGS: usize = 16;

/// `dl_type` of an 802.3 frame with a length field and no SNAP ethertype
/// (OVS `FLOW_DL_TYPE_NONE`).
pub const FLOW_DL_TYPE_NONE: u16 = 0x05ff;
/// Smallest value of the ethertype field that is an ethertype rather than an
/// 802.3 length.
pub const ETH_TYPE_MIN: u16 = 0x0600;
/// Ethertype of IPv4.
pub const ETH_TYPE_IPV4: u16 = 0x0800;
/// Ethertype of ARP.
pub const ETH_TYPE_ARP: u16 = 0x0806;
/// Ethertype of RARP (parsed like ARP).
pub const ETH_TYPE_RARP: u16 = 0x8035;
/// Ethertype of IPv6.
pub const ETH_TYPE_IPV6: u16 = 0x86dd;
/// TPID of an 802.1Q (customer) VLAN tag.
pub const ETH_TYPE_VLAN_8021Q: u16 = 0x8100;
/// TPID of an 802.1ad (service, "QinQ" outer) VLAN tag.
pub const ETH_TYPE_VLAN_8021AD: u16 = 0x88a8;

/// Bit set in `vlan_tci[i]` when tag `i` is present (OVS `VLAN_CFI`). The packet's own
/// DEI/CFI bit is not kept, as in OVS. `vlan_tci[i] == 0` means "no tag".
pub const VLAN_CFI: u16 = 0x1000;
/// VLAN ID bits of a TCI.
pub const VLAN_VID_MASK: u16 = 0x0fff;
/// Priority (PCP) bits of a TCI.
pub const VLAN_PCP_MASK: u16 = 0xe000;
/// Shift of the priority bits in a TCI.
pub const VLAN_PCP_SHIFT: u16 = 13;

/// `nw_frag` bit: the packet is an IP fragment (OVS `FLOW_NW_FRAG_ANY`).
pub const FLOW_NW_FRAG_ANY: u8 = 1;
/// `nw_frag` bit: the packet is a fragment other than the first, so it carries no
/// L4 header (OVS `FLOW_NW_FRAG_LATER`).
pub const FLOW_NW_FRAG_LATER: u8 = 2;

/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IPv6 next-header value of the fragment header; also the `nw_proto` of IPv6
/// later fragments, as in OVS.
pub const IPPROTO_FRAGMENT: u8 = 44;
/// IP protocol number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// IP protocol number of SCTP.
pub const IPPROTO_SCTP: u8 = 132;

/// Mask of the 12 TCP flag bits kept in `tcp_flags` (FIN..CWR plus NS and the three
/// reserved bits), as OVS's `TCP_FLAGS`.
pub const TCP_FLAGS_MASK: u16 = 0x0fff;
/// TCP FIN flag.
pub const TCP_FIN: u16 = 0x001;
/// TCP SYN flag.
pub const TCP_SYN: u16 = 0x002;
/// TCP RST flag.
pub const TCP_RST: u16 = 0x004;
/// TCP PSH flag.
pub const TCP_PSH: u16 = 0x008;
/// TCP ACK flag.
pub const TCP_ACK: u16 = 0x010;
/// TCP URG flag.
pub const TCP_URG: u16 = 0x020;
/// TCP ECE flag.
pub const TCP_ECE: u16 = 0x040;
/// TCP CWR flag.
pub const TCP_CWR: u16 = 0x080;
/// TCP NS flag.
pub const TCP_NS: u16 = 0x100;

/// OpenFlow port number of the bridge's local (internal) port, OVS `OFPP_LOCAL`.
pub const OFPP_LOCAL: u32 = 0xffff_fffe;

/// Every field a flow can match on. See the module docs for layout, byte order and
/// the fields shared between protocols.
///
/// Fields that the packet did not have (no VLAN tag, not IP, ...) are zero.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C, align(8))]
pub struct FlowKey {
    // --- word 0..=9: pipeline metadata (not from the packet) ---
    /// OpenFlow port the packet arrived on (`in_port`).
    pub in_port: u32,
    /// Recirculation id; 0 for a packet fresh from a port.
    pub recirc_id: u32,
    /// OpenFlow `metadata` field.
    pub metadata: u64,
    /// Registers `reg0`..`reg15`.
    pub regs: [u32; FLOW_N_REGS],

    // --- word 10..=12: tunnel metadata (set by tunnel pop, 0 otherwise) ---
    /// Tunnel id (VNI / GRE key), host order.
    pub tun_id: u64,
    /// Outer IPv4 source of the tunnel, host order.
    pub tun_src: u32,
    /// Outer IPv4 destination of the tunnel, host order.
    pub tun_dst: u32,
    /// Tunnel flags (OVS `FLOW_TNL_F_*`).
    pub tun_flags: u16,

    // --- L2 ---
    /// Ethertype after the VLAN tags (and after an LLC/SNAP header);
    /// [`FLOW_DL_TYPE_NONE`] for an 802.3 frame without SNAP ethertype.
    pub dl_type: u16,
    /// TCI of the outer (`[0]`) and inner (`[1]`) VLAN tag with [`VLAN_CFI`] set;
    /// 0 when the tag is absent.
    pub vlan_tci: [u16; FLOW_MAX_VLAN_HEADERS],
    /// TPID of each VLAN tag (0x8100 or 0x88a8); 0 when the tag is absent.
    pub vlan_tpid: [u16; FLOW_MAX_VLAN_HEADERS],
    /// L4 source port; ICMP/ICMPv6 type.
    pub tp_src: u16,
    /// L4 destination port; ICMP/ICMPv6 code.
    pub tp_dst: u16,
    /// Ethernet source address, wire order.
    pub dl_src: [u8; 6],
    /// Ethernet destination address, wire order.
    pub dl_dst: [u8; 6],
    /// TCP flags, 12 bits ([`TCP_FLAGS_MASK`]); 0 for non-TCP.
    pub tcp_flags: u16,
    /// IP protocol / IPv6 upper-layer next header; ARP opcode (if <= 255).
    pub nw_proto: u8,
    /// IPv4 TOS / IPv6 traffic class byte (DSCP << 2 | ECN).
    pub nw_tos: u8,

    // --- L3 ---
    /// IPv4 source address (host order); ARP sender IP.
    pub nw_src: u32,
    /// IPv4 destination address (host order); ARP target IP.
    pub nw_dst: u32,
    /// IPv6 flow label (20 bits), host order.
    pub ipv6_label: u32,
    /// IPv4 TTL / IPv6 hop limit.
    pub nw_ttl: u8,
    /// Fragment bits: [`FLOW_NW_FRAG_ANY`], [`FLOW_NW_FRAG_LATER`].
    pub nw_frag: u8,
    /// Explicit padding, always zero.
    pub pad0: [u8; 2],
    /// IPv6 source address, wire order.
    pub ipv6_src: [u8; 16],
    /// IPv6 destination address, wire order.
    pub ipv6_dst: [u8; 16],
    /// ICMPv6 neighbour solicitation/advertisement target, wire order.
    pub nd_target: [u8; 16],
    /// ARP sender hardware address; ND source link-layer address option.
    pub arp_sha: [u8; 6],
    /// ARP target hardware address; ND target link-layer address option.
    pub arp_tha: [u8; 6],
    /// Explicit padding, always zero.
    pub pad1: [u8; 4],

    // --- word 26..=30: Geneve options (set by a tunnel pop, 0 otherwise) ---
    /// Bit `N`: `tun_metadataN` is present (see [`crate::tun_metadata`]).
    pub tun_md_present: u64,
    /// `tun_metadataN`'s value in slot `N`, right-aligned.
    pub tun_md: [u64; crate::tun_metadata::TUN_METADATA_FIELDS],
}

// The classifier's word view relies on this; zerocopy's `IntoBytes` derive already
// proves there is no implicit padding.
const _: () = assert!(core::mem::size_of::<FlowKey>() == FLOW_KEY_WORDS * 8);
const _: () = assert!(core::mem::align_of::<FlowKey>() == 8);

impl FlowKey {
    /// `self & mask`, word by word: the key as a megaflow with that mask sees it.
    #[inline]
    pub fn masked(&self, mask: &FlowKey) -> FlowKey {
        let mut out = FlowKey::default();
        for ((o, k), m) in out
            .words_mut()
            .iter_mut()
            .zip(self.words())
            .zip(mask.words())
        {
            *o = k & m;
        }
        out
    }

    /// The key as `u64` words, for masked hashing and comparison.
    ///
    /// The mapping of fields to words follows the struct layout on the host's
    /// endianness: use the same view for keys and masks and never persist it.
    #[inline(always)]
    pub fn words(&self) -> &[u64; FLOW_KEY_WORDS] {
        zerocopy::transmute_ref!(self)
    }

    /// Mutable word view, see [`FlowKey::words`].
    #[inline(always)]
    pub fn words_mut(&mut self) -> &mut [u64; FLOW_KEY_WORDS] {
        zerocopy::transmute_mut!(self)
    }

    /// ARP opcode (shared with `nw_proto`).
    #[inline]
    pub fn arp_op(&self) -> u8 {
        self.nw_proto
    }

    /// ARP sender protocol address, host order (shared with `nw_src`).
    #[inline]
    pub fn arp_spa(&self) -> u32 {
        self.nw_src
    }

    /// ARP target protocol address, host order (shared with `nw_dst`).
    #[inline]
    pub fn arp_tpa(&self) -> u32 {
        self.nw_dst
    }

    /// ND source link-layer address option (shared with `arp_sha`).
    #[inline]
    pub fn nd_sll(&self) -> [u8; 6] {
        self.arp_sha
    }

    /// ND target link-layer address option (shared with `arp_tha`).
    #[inline]
    pub fn nd_tll(&self) -> [u8; 6] {
        self.arp_tha
    }

    /// ICMP/ICMPv6 type (shared with `tp_src`; the value fits in 8 bits).
    #[inline]
    pub fn icmp_type(&self) -> u16 {
        self.tp_src
    }

    /// ICMP/ICMPv6 code (shared with `tp_dst`; the value fits in 8 bits).
    #[inline]
    pub fn icmp_code(&self) -> u16 {
        self.tp_dst
    }

    /// VLAN ID of the outer tag, or `None` when the packet is untagged.
    #[inline]
    pub fn vlan_vid(&self) -> Option<u16> {
        (self.vlan_tci[0] & VLAN_CFI != 0).then_some(self.vlan_tci[0] & VLAN_VID_MASK)
    }

    /// Whether `dl_type` is IPv4 or IPv6.
    #[inline]
    pub fn is_ip(&self) -> bool {
        self.dl_type == ETH_TYPE_IPV4 || self.dl_type == ETH_TYPE_IPV6
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn size_is_whole_words() {
        assert_eq!(size_of::<FlowKey>(), FLOW_KEY_WORDS * 8);
    }

    #[test]
    fn u64_fields_are_word_aligned() {
        assert_eq!(offset_of!(FlowKey, metadata) % 8, 0);
        assert_eq!(offset_of!(FlowKey, tun_id) % 8, 0);
    }

    #[test]
    fn default_is_all_zero_words() {
        let k = FlowKey::default();
        assert!(k.words().iter().all(|&w| w == 0));
        assert!(k.as_bytes().iter().all(|&b| b == 0));
    }

    #[test]
    fn words_alias_fields() {
        let mut k = FlowKey {
            in_port: 7,
            ..FlowKey::default()
        };
        // in_port is the first four bytes of word 0 on any endianness.
        assert_eq!(k.words()[0].to_ne_bytes()[..4], 7u32.to_ne_bytes());
        k.words_mut()[1] = 0x1122_3344_5566_7788;
        assert_eq!(k.metadata, 0x1122_3344_5566_7788);
        // Writing all-ones through the word view sets every field, pads included.
        for w in k.words_mut() {
            *w = u64::MAX;
        }
        assert_eq!(k.pad1, [0xff; 4]);
        assert_eq!(k.ipv6_dst, [0xff; 16]);
    }

    #[test]
    fn masked_compare_via_words() {
        let a = FlowKey {
            dl_type: ETH_TYPE_IPV4,
            nw_src: 0x0a00_0001,
            tp_dst: 80,
            ..FlowKey::default()
        };
        let b = FlowKey { tp_dst: 443, ..a };
        let mask = FlowKey {
            dl_type: 0xffff,
            nw_src: 0xffff_ff00,
            ..FlowKey::default()
        };
        let eq = a
            .words()
            .iter()
            .zip(b.words())
            .zip(mask.words())
            .all(|((x, y), m)| x & m == y & m);
        assert!(eq);
        assert_ne!(a, b);
    }

    #[test]
    fn accessors() {
        let k = FlowKey {
            nw_proto: 1,
            nw_src: 1,
            nw_dst: 2,
            arp_sha: [1; 6],
            arp_tha: [2; 6],
            tp_src: 8,
            tp_dst: 0,
            vlan_tci: [VLAN_CFI | 100, 0],
            dl_type: ETH_TYPE_ARP,
            ..FlowKey::default()
        };
        assert_eq!(k.arp_op(), 1);
        assert_eq!(k.arp_spa(), 1);
        assert_eq!(k.arp_tpa(), 2);
        assert_eq!(k.nd_sll(), [1; 6]);
        assert_eq!(k.nd_tll(), [2; 6]);
        assert_eq!(k.icmp_type(), 8);
        assert_eq!(k.icmp_code(), 0);
        assert_eq!(k.vlan_vid(), Some(100));
        assert!(!k.is_ip());
        assert_eq!(FlowKey::default().vlan_vid(), None);
    }
}
