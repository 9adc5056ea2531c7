//! Datapath actions: what a megaflow does to a packet, how it prints, and a
//! reference executor over frame bytes.
//!
//! # Layer
//!
//! [`DpAction`] is the datapath's vocabulary, the output of OpenFlow translation
//! (`ofproto::xlate`) and the input of the fast path: the equivalent of OVS's
//! `OVS_ACTION_ATTR_*` netlink actions (`lib/odp-util.c` prints them,
//! `lib/odp-execute.c` runs them). Set actions carry only the fields that change
//! (`None` = left alone), like the userspace datapath's masked sets with full-field
//! masks, and print as OVS prints those: `set(eth(src=..))`, `set(ipv4(ttl=63))`.
//!
//! [`execute`] is a pure, allocation-per-output executor over a `Vec<u8>` frame:
//! VLAN push/pop, Ethernet/IPv4/IPv6/L4/ICMP/ARP rewrites with checksum updates,
//! tunnel metadata, tunnel push (header in front of a copy, nested actions) and
//! pop (the inner frame emitted for recirculation, or the reason it was refused:
//! [`execute_with_ports`]). It is the reference the fast path's batch executor (next issue)
//! is tested against, and what tests use to check translations byte for byte.
//!
//! # Invariants
//!
//! * Pure: no I/O, no clock. No panic on any frame bytes: every header access is a
//!   checked `get`; an action whose header is missing or truncated leaves the frame
//!   unchanged (OVS's `odp_execute` does the same).
//! * Set actions never change the frame's length; only VLAN push/pop do.

use crate::flow_key::{
    FlowKey, ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_RARP, ETH_TYPE_VLAN_8021AD,
    ETH_TYPE_VLAN_8021Q, FLOW_NW_FRAG_LATER, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP,
    IPPROTO_TCP, IPPROTO_UDP, VLAN_CFI, VLAN_PCP_SHIFT, VLAN_VID_MASK,
};
use crate::tunnel::{
    self, inner_flow_hash, inner_flow_hash_key, PopError, TunnelHeader, TunnelPortInfo,
};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// One datapath action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DpAction {
    /// Send a copy of the packet, as it is now, to this OpenFlow port.
    Output(u32),
    /// Push a VLAN tag as the new outer tag. `tci` has [`VLAN_CFI`] set (OVS's "tag
    /// present" convention); the bit is cleared on the wire.
    PushVlan {
        /// 0x8100 or 0x88a8.
        tpid: u16,
        /// TCI with [`VLAN_CFI`] set.
        tci: u16,
    },
    /// Remove the outer VLAN tag.
    PopVlan,
    /// Rewrite the Ethernet addresses.
    SetEth {
        /// New source address.
        src: Option<[u8; 6]>,
        /// New destination address.
        dst: Option<[u8; 6]>,
    },
    /// Rewrite IPv4 header fields (header checksum and L4 pseudo-header checksum
    /// updated).
    SetIpv4 {
        /// New source address, host order.
        src: Option<u32>,
        /// New destination address, host order.
        dst: Option<u32>,
        /// New TOS byte.
        tos: Option<u8>,
        /// New TTL.
        ttl: Option<u8>,
    },
    /// Rewrite IPv6 header fields (L4 pseudo-header checksum updated).
    SetIpv6 {
        /// New source address.
        src: Option<[u8; 16]>,
        /// New destination address.
        dst: Option<[u8; 16]>,
        /// New traffic class.
        tclass: Option<u8>,
        /// New hop limit.
        hlimit: Option<u8>,
        /// New flow label (20 bits).
        label: Option<u32>,
    },
    /// Rewrite TCP, UDP or SCTP ports (checksum updated).
    SetL4 {
        /// IP protocol of the L4 header: TCP, UDP or SCTP.
        proto: u8,
        /// New source port.
        src: Option<u16>,
        /// New destination port.
        dst: Option<u16>,
    },
    /// Rewrite ICMP/ICMPv6 type and code (checksum updated).
    SetIcmp {
        /// `true` for ICMPv6.
        v6: bool,
        /// New type.
        icmp_type: Option<u8>,
        /// New code.
        icmp_code: Option<u8>,
    },
    /// Rewrite ARP fields.
    SetArp {
        /// New opcode.
        op: Option<u16>,
        /// New sender protocol address, host order.
        spa: Option<u32>,
        /// New target protocol address, host order.
        tpa: Option<u32>,
        /// New sender hardware address.
        sha: Option<[u8; 6]>,
        /// New target hardware address.
        tha: Option<[u8; 6]>,
    },
    /// Set tunnel metadata for a later tunnel push (not written into the frame).
    SetTunnel {
        /// New tunnel id.
        tun_id: Option<u64>,
        /// New outer source IPv4 address, host order.
        src: Option<u32>,
        /// New outer destination IPv4 address, host order.
        dst: Option<u32>,
    },
    /// Send a copy to the controller (counted; there is no controller yet).
    Controller {
        /// Bytes of the packet to send (OpenFlow `max_len`).
        max_len: u16,
    },
    /// Native tunnel encapsulation, OVS's `clone(tnl_push(...),ACTIONS)`: a copy
    /// of the packet (the packet itself when nothing follows) gets `header` in
    /// front of it, per-packet fields filled, and then goes through `actions`:
    /// the underlay bridge's translation of the outer packet (outputs to the
    /// NIC or bond, VLAN push). Actions after this one see the packet as it was.
    TunnelPush {
        /// The prebuilt outer headers.
        header: Arc<TunnelHeader>,
        /// What happens to the encapsulated packet.
        actions: Arc<[DpAction]>,
    },
    /// Native tunnel decapsulation, OVS's `tnl_pop(PORT)`: the outer headers are
    /// checked and stripped, and the inner frame is classified again as received
    /// on datapath port `PORT` (the tunnel's) with `tun_id`, `tun_src`,
    /// `tun_dst` and `tun_flags` from the outer headers.
    TunnelPop(u32),
    /// Explicit drop: emitted only when a translation outputs nothing.
    Drop,
}

/// Prints `actions` as OVS prints datapath actions: comma-separated, `drop` for an
/// empty list.
pub fn format_dp_actions(actions: &[DpAction]) -> String {
    if actions.is_empty() {
        return "drop".to_string();
    }
    let mut s = String::new();
    for (i, a) in actions.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&a.to_string());
    }
    s
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

/// Writes `name=value` items separated by commas.
struct Items<'a, 'b> {
    f: &'a mut fmt::Formatter<'b>,
    first: bool,
}

impl Items<'_, '_> {
    fn item(&mut self, name: &str, v: impl fmt::Display) -> fmt::Result {
        if !self.first {
            self.f.write_str(",")?;
        }
        self.first = false;
        write!(self.f, "{name}={v}")
    }
}

impl fmt::Display for DpAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DpAction::Output(p) => write!(f, "{p}"),
            DpAction::PushVlan { tpid, tci } => {
                f.write_str("push_vlan(")?;
                if *tpid != ETH_TYPE_VLAN_8021Q {
                    write!(f, "tpid={tpid:#06x},")?;
                }
                write!(
                    f,
                    "vid={},pcp={}",
                    tci & VLAN_VID_MASK,
                    tci >> VLAN_PCP_SHIFT
                )?;
                if tci & VLAN_CFI == 0 {
                    f.write_str(",cfi=0")?;
                }
                f.write_str(")")
            }
            DpAction::PopVlan => f.write_str("pop_vlan"),
            DpAction::SetEth { src, dst } => {
                f.write_str("set(eth(")?;
                let mut it = Items { f, first: true };
                if let Some(m) = src {
                    it.item("src", Mac(m))?;
                }
                if let Some(m) = dst {
                    it.item("dst", Mac(m))?;
                }
                f.write_str("))")
            }
            DpAction::SetIpv4 { src, dst, tos, ttl } => {
                f.write_str("set(ipv4(")?;
                let mut it = Items { f, first: true };
                if let Some(a) = src {
                    it.item("src", Ipv4Addr::from(*a))?;
                }
                if let Some(a) = dst {
                    it.item("dst", Ipv4Addr::from(*a))?;
                }
                if let Some(t) = tos {
                    it.item("tos", format_args!("{t:#x}"))?;
                }
                if let Some(t) = ttl {
                    it.item("ttl", t)?;
                }
                f.write_str("))")
            }
            DpAction::SetIpv6 {
                src,
                dst,
                tclass,
                hlimit,
                label,
            } => {
                f.write_str("set(ipv6(")?;
                let mut it = Items { f, first: true };
                if let Some(a) = src {
                    it.item("src", Ipv6Addr::from(*a))?;
                }
                if let Some(a) = dst {
                    it.item("dst", Ipv6Addr::from(*a))?;
                }
                if let Some(l) = label {
                    it.item("label", format_args!("{l:#x}"))?;
                }
                if let Some(t) = tclass {
                    it.item("tclass", format_args!("{t:#x}"))?;
                }
                if let Some(h) = hlimit {
                    it.item("hlimit", h)?;
                }
                f.write_str("))")
            }
            DpAction::SetL4 { proto, src, dst } => {
                let name = match *proto {
                    IPPROTO_TCP => "tcp",
                    IPPROTO_UDP => "udp",
                    _ => "sctp",
                };
                write!(f, "set({name}(")?;
                let mut it = Items { f, first: true };
                if let Some(p) = src {
                    it.item("src", p)?;
                }
                if let Some(p) = dst {
                    it.item("dst", p)?;
                }
                f.write_str("))")
            }
            DpAction::SetIcmp {
                v6,
                icmp_type,
                icmp_code,
            } => {
                f.write_str(if *v6 { "set(icmpv6(" } else { "set(icmp(" })?;
                let mut it = Items { f, first: true };
                if let Some(t) = icmp_type {
                    it.item("type", t)?;
                }
                if let Some(c) = icmp_code {
                    it.item("code", c)?;
                }
                f.write_str("))")
            }
            DpAction::SetArp {
                op,
                spa,
                tpa,
                sha,
                tha,
            } => {
                f.write_str("set(arp(")?;
                let mut it = Items { f, first: true };
                if let Some(a) = spa {
                    it.item("sip", Ipv4Addr::from(*a))?;
                }
                if let Some(a) = tpa {
                    it.item("tip", Ipv4Addr::from(*a))?;
                }
                if let Some(o) = op {
                    it.item("op", o)?;
                }
                if let Some(m) = sha {
                    it.item("sha", Mac(m))?;
                }
                if let Some(m) = tha {
                    it.item("tha", Mac(m))?;
                }
                f.write_str("))")
            }
            DpAction::SetTunnel { tun_id, src, dst } => {
                f.write_str("set(tunnel(")?;
                let mut it = Items { f, first: true };
                if let Some(id) = tun_id {
                    it.item("tun_id", format_args!("{id:#x}"))?;
                }
                if let Some(a) = src {
                    it.item("src", Ipv4Addr::from(*a))?;
                }
                if let Some(a) = dst {
                    it.item("dst", Ipv4Addr::from(*a))?;
                }
                f.write_str("))")
            }
            DpAction::Controller { max_len } => {
                write!(f, "userspace(controller(max_len={max_len}))")
            }
            DpAction::TunnelPush { header, actions } => {
                write!(f, "clone({header}")?;
                for a in actions.iter() {
                    write!(f, ",{a}")?;
                }
                f.write_str(")")
            }
            DpAction::TunnelPop(p) => write!(f, "tnl_pop({p})"),
            DpAction::Drop => f.write_str("drop"),
        }
    }
}

/// Tunnel metadata that travels with a packet through the datapath.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TunnelMeta {
    /// Tunnel id (VNI / GRE key).
    pub tun_id: u64,
    /// Outer IPv4 source, host order.
    pub src: u32,
    /// Outer IPv4 destination, host order.
    pub dst: u32,
    /// OVS's tunnel flags (`tunnel::FLOW_TNL_F_*`), set by a tunnel pop.
    pub flags: u16,
}

impl TunnelMeta {
    /// The tunnel metadata of a flow key.
    pub fn from_key(key: &FlowKey) -> Self {
        TunnelMeta {
            tun_id: key.tun_id,
            src: key.tun_src,
            dst: key.tun_dst,
            flags: key.tun_flags,
        }
    }

    /// Writes the metadata into a flow key's tunnel fields.
    pub fn to_key(&self, key: &mut FlowKey) {
        key.tun_id = self.tun_id;
        key.tun_src = self.src;
        key.tun_dst = self.dst;
        key.tun_flags = self.flags;
    }
}

/// What [`execute`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Emitted {
    /// A copy of the frame for a port, with the tunnel metadata at that point.
    Output {
        /// OpenFlow port.
        port: u32,
        /// The frame bytes.
        frame: Vec<u8>,
        /// Tunnel metadata for a tunnel push.
        tunnel: TunnelMeta,
    },
    /// A copy (truncated to `max_len`) for the controller.
    Controller {
        /// The frame bytes.
        frame: Vec<u8>,
    },
    /// A `tnl_pop` took the packet: its inner frame is to be classified again
    /// as received on the tunnel's datapath port, with this tunnel metadata
    /// in the key (the datapath recirculates it).
    Recirculate {
        /// The tunnel's datapath port (the new `in_port`).
        port: u32,
        /// The inner frame.
        frame: Vec<u8>,
        /// `tun_id`, `tun_src`, `tun_dst`, `tun_flags` from the outer headers.
        tunnel: TunnelMeta,
    },
    /// A `tnl_pop` refused the packet (the datapath drops it, counting the
    /// reason).
    PopDropped {
        /// The port the pop named.
        port: u32,
        /// Why.
        reason: PopError,
    },
}

/// Runs `actions` over `frame` in order, appending each output copy to `out`.
/// `frame` ends up as the packet looks after the last action. Actions whose header
/// the frame lacks (or has truncated) are skipped; nothing panics on any bytes.
///
/// Knows no tunnel ports: a `tnl_pop` emits [`Emitted::PopDropped`] with
/// [`PopError::NotTunnelPort`]; [`execute_with_ports`] knows them.
pub fn execute(
    actions: &[DpAction],
    frame: &mut Vec<u8>,
    tunnel: &mut TunnelMeta,
    out: &mut Vec<Emitted>,
) {
    execute_with_ports(actions, frame, tunnel, &|_| None, out);
}

/// [`execute`] with the datapath's tunnel ports: `ports(p)` tells the kind and
/// UDP port of tunnel port `p` (`None`: not a tunnel port).
///
/// - `TunnelPush { header, actions }`: a copy of the frame gets `header`
///   ([`tunnel::push`], the UDP source port from [`inner_flow_hash`] of the
///   frame, as the datapath computes it when the port gave no RSS hash) and
///   runs `actions` (with no tunnel metadata: an outer packet has none); the
///   frame itself is left as it was for what follows. An outer packet too long
///   for IPv4 runs nothing.
/// - `TunnelPop(p)`: the frame's outer headers are checked ([`tunnel::pop`])
///   and its inner frame emitted as [`Emitted::Recirculate`], or the reason as
///   [`Emitted::PopDropped`]; the frame is left as it was.
pub fn execute_with_ports(
    actions: &[DpAction],
    frame: &mut Vec<u8>,
    tunnel: &mut TunnelMeta,
    ports: &dyn Fn(u32) -> Option<TunnelPortInfo>,
    out: &mut Vec<Emitted>,
) {
    for a in actions {
        match a {
            DpAction::Output(port) => out.push(Emitted::Output {
                port: *port,
                frame: frame.clone(),
                tunnel: *tunnel,
            }),
            DpAction::Controller { max_len } => {
                let n = frame.len().min(usize::from(*max_len));
                out.push(Emitted::Controller {
                    frame: frame.get(..n).unwrap_or_default().to_vec(),
                });
            }
            DpAction::PushVlan { tpid, tci } => push_vlan(frame, *tpid, *tci),
            DpAction::PopVlan => pop_vlan(frame),
            set @ (DpAction::SetEth { .. }
            | DpAction::SetIpv4 { .. }
            | DpAction::SetIpv6 { .. }
            | DpAction::SetL4 { .. }
            | DpAction::SetIcmp { .. }
            | DpAction::SetArp { .. }) => {
                apply_set(set, frame);
            }
            DpAction::SetTunnel { tun_id, src, dst } => {
                if let Some(v) = tun_id {
                    tunnel.tun_id = *v;
                }
                if let Some(v) = src {
                    tunnel.src = *v;
                }
                if let Some(v) = dst {
                    tunnel.dst = *v;
                }
            }
            DpAction::TunnelPush {
                header,
                actions: nested,
            } => {
                let mut outer = frame.clone();
                if frame.len() <= header.max_inner_frame()
                    && tunnel::push(&mut outer, header, inner_flow_hash(frame))
                {
                    let mut t = TunnelMeta::default();
                    execute_with_ports(nested, &mut outer, &mut t, ports, out);
                }
            }
            DpAction::TunnelPop(port) => {
                let port = *port;
                let popped = ports(port)
                    .ok_or(PopError::NotTunnelPort)
                    .and_then(|info| tunnel::pop(frame, info));
                out.push(match popped {
                    Ok(p) => Emitted::Recirculate {
                        port,
                        frame: frame.get(p.inner()).unwrap_or_default().to_vec(),
                        tunnel: p.meta,
                    },
                    Err(reason) => Emitted::PopDropped { port, reason },
                });
            }
            DpAction::Drop => {}
        }
    }
}

/// Applies one length-preserving set action (`SetEth`, `SetIpv4`, `SetIpv6`, `SetL4`,
/// `SetIcmp`, `SetArp`) to `frame` in place, checksums included; any buffer type
/// works (the fast path passes mbuf data). Returns false, changing nothing, for
/// the other actions.
pub fn apply_set(action: &DpAction, frame: &mut [u8]) -> bool {
    match action {
        DpAction::SetEth { src, dst } => {
            if let Some(d) = dst {
                write_bytes(frame, 0, d);
            }
            if let Some(s) = src {
                write_bytes(frame, 6, s);
            }
        }
        DpAction::SetIpv4 { src, dst, tos, ttl } => set_ipv4(frame, *src, *dst, *tos, *ttl),
        DpAction::SetIpv6 {
            src,
            dst,
            tclass,
            hlimit,
            label,
        } => set_ipv6(frame, *src, *dst, *tclass, *hlimit, *label),
        DpAction::SetL4 { proto, src, dst } => set_l4(frame, *proto, *src, *dst),
        DpAction::SetIcmp {
            v6,
            icmp_type,
            icmp_code,
        } => set_icmp(frame, *v6, *icmp_type, *icmp_code),
        DpAction::SetArp {
            op,
            spa,
            tpa,
            sha,
            tha,
        } => set_arp(frame, *op, *spa, *tpa, *sha, *tha),
        _ => return false,
    }
    true
}

/// Bytes a VLAN tag adds.
pub const VLAN_HEADER_LEN: usize = 4;

/// Second half of a VLAN push on a buffer the caller has just grown by
/// [`VLAN_HEADER_LEN`] bytes at the front: moves the MAC addresses to the new front
/// and writes the tag after them. False (nothing written) if the frame is too short
/// to hold MACs + tag.
pub fn finish_push_vlan(frame: &mut [u8], tpid: u16, tci: u16) -> bool {
    if frame.len() < 12 + VLAN_HEADER_LEN {
        return false;
    }
    frame.copy_within(VLAN_HEADER_LEN..VLAN_HEADER_LEN + 12, 0);
    put16(frame, 12, tpid);
    put16(frame, 14, tci & !VLAN_CFI);
    true
}

/// First half of a VLAN pop: if the frame has an outer VLAN tag (and the ethertype
/// after it), moves the MAC addresses over the tag and returns true; the caller
/// then removes [`VLAN_HEADER_LEN`] bytes from the front. False: no tag, unchanged.
pub fn prepare_pop_vlan(frame: &mut [u8]) -> bool {
    if frame.len() < 12 + VLAN_HEADER_LEN + 2 || !be16_at(frame, 12).is_some_and(is_vlan_tpid) {
        return false;
    }
    frame.copy_within(0..12, VLAN_HEADER_LEN);
    true
}

fn write_bytes(frame: &mut [u8], off: usize, bytes: &[u8]) {
    if let Some(dst) = frame.get_mut(off..off + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn be16_at(frame: &[u8], off: usize) -> Option<u16> {
    frame
        .get(off..off + 2)
        .and_then(|b| b.first_chunk::<2>())
        .map(|b| u16::from_be_bytes(*b))
}

fn put16(frame: &mut [u8], off: usize, v: u16) {
    write_bytes(frame, off, &v.to_be_bytes());
}

fn is_vlan_tpid(t: u16) -> bool {
    t == ETH_TYPE_VLAN_8021Q || t == ETH_TYPE_VLAN_8021AD
}

fn push_vlan(frame: &mut Vec<u8>, tpid: u16, tci: u16) {
    if frame.len() < 12 {
        return;
    }
    frame.splice(0..0, [0u8; VLAN_HEADER_LEN]);
    finish_push_vlan(frame, tpid, tci);
}

fn pop_vlan(frame: &mut Vec<u8>) {
    // A tag needs its 4 bytes plus the inner ethertype after it.
    if prepare_pop_vlan(frame) {
        frame.drain(..VLAN_HEADER_LEN);
    }
}

/// Where the L3 and L4 headers are, and which L3/L4 protocol, re-read from the
/// frame (VLAN actions move them).
struct Layout {
    dl_type: u16,
    l3: usize,
    /// L4 offset when the packet has an L4 header (not a later fragment).
    l4: Option<usize>,
    nw_proto: u8,
}

fn layout(frame: &[u8]) -> Option<Layout> {
    let mut key = FlowKey::default();
    let (_, ofs) = crate::parse::parse_with_offsets(frame, 0, &mut key);
    if ofs.l3 == crate::parse::Offsets::NONE {
        return None;
    }
    let l4 = (ofs.l4 != crate::parse::Offsets::NONE && key.nw_frag & FLOW_NW_FRAG_LATER == 0)
        .then_some(usize::from(ofs.l4));
    Some(Layout {
        dl_type: key.dl_type,
        l3: usize::from(ofs.l3),
        l4,
        nw_proto: key.nw_proto,
    })
}

/// One's-complement checksum update for a 16-bit word changing from `old` to `new`
/// (RFC 1624, eqn. 3).
fn csum_update16(csum: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!csum) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    // Folded twice, the sum fits in 16 bits.
    !(sum as u16)
}

fn csum_update_bytes(mut csum: u16, old: &[u8], new: &[u8]) -> u16 {
    for (o, n) in old.chunks(2).zip(new.chunks(2)) {
        let w = |c: &[u8]| {
            u16::from_be_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
        };
        csum = csum_update16(csum, w(o), w(n));
    }
    csum
}

/// Folds a change of pseudo-header bytes (addresses) into the L4 checksum.
fn l4_pseudo_update(frame: &mut [u8], lay: &Layout, old: &[u8], new: &[u8]) {
    let Some(l4) = lay.l4 else { return };
    let csum_off = match lay.nw_proto {
        IPPROTO_TCP => l4 + 16,
        IPPROTO_UDP => l4 + 6,
        IPPROTO_ICMPV6 if lay.dl_type == ETH_TYPE_IPV6 => l4 + 2,
        _ => return,
    };
    let Some(c) = be16_at(frame, csum_off) else {
        return;
    };
    if lay.nw_proto == IPPROTO_UDP && c == 0 && lay.dl_type == ETH_TYPE_IPV4 {
        return; // IPv4 UDP without checksum.
    }
    let mut n = csum_update_bytes(c, old, new);
    if lay.nw_proto == IPPROTO_UDP && n == 0 {
        n = 0xffff;
    }
    put16(frame, csum_off, n);
}

/// Replaces `frame[off..off+new.len()]`, returning the old bytes (empty when out
/// of range, in which case nothing is written).
fn swap_bytes<const N: usize>(frame: &mut [u8], off: usize, new: [u8; N]) -> Option<[u8; N]> {
    let dst = frame.get_mut(off..off + N)?;
    let mut old = [0u8; N];
    old.copy_from_slice(dst);
    dst.copy_from_slice(&new);
    Some(old)
}

fn set_ipv4(
    frame: &mut [u8],
    src: Option<u32>,
    dst: Option<u32>,
    tos: Option<u8>,
    ttl: Option<u8>,
) {
    let Some(lay) = layout(frame) else { return };
    if lay.dl_type != ETH_TYPE_IPV4 || frame.len() < lay.l3 + 20 {
        return;
    }
    let l3 = lay.l3;
    let hdr_csum = l3 + 10;
    for (off, v) in [(l3 + 12, src), (l3 + 16, dst)] {
        if let Some(v) = v {
            if let Some(old) = swap_bytes(frame, off, v.to_be_bytes()) {
                let c = be16_at(frame, hdr_csum).unwrap_or(0);
                put16(
                    frame,
                    hdr_csum,
                    csum_update_bytes(c, &old, &v.to_be_bytes()),
                );
                l4_pseudo_update(frame, &lay, &old, &v.to_be_bytes());
            }
        }
    }
    // TOS shares a 16-bit word with version/IHL, TTL with the protocol.
    for (word_off, hi, v) in [(l3, false, tos), (l3 + 8, true, ttl)] {
        if let Some(v) = v {
            let Some(old) = be16_at(frame, word_off) else {
                continue;
            };
            let new = if hi {
                (old & 0x00ff) | (u16::from(v) << 8)
            } else {
                (old & 0xff00) | u16::from(v)
            };
            put16(frame, word_off, new);
            let c = be16_at(frame, hdr_csum).unwrap_or(0);
            put16(frame, hdr_csum, csum_update16(c, old, new));
        }
    }
}

fn set_ipv6(
    frame: &mut [u8],
    src: Option<[u8; 16]>,
    dst: Option<[u8; 16]>,
    tclass: Option<u8>,
    hlimit: Option<u8>,
    label: Option<u32>,
) {
    let Some(lay) = layout(frame) else { return };
    if lay.dl_type != ETH_TYPE_IPV6 || frame.len() < lay.l3 + 40 {
        return;
    }
    let l3 = lay.l3;
    for (off, v) in [(l3 + 8, src), (l3 + 24, dst)] {
        if let Some(v) = v {
            if let Some(old) = swap_bytes(frame, off, v) {
                l4_pseudo_update(frame, &lay, &old, &v);
            }
        }
    }
    let Some(first) = frame.get(l3..l3 + 4).and_then(|b| b.first_chunk::<4>()) else {
        return;
    };
    let mut w = u32::from_be_bytes(*first);
    if let Some(tc) = tclass {
        w = (w & !0x0ff0_0000) | (u32::from(tc) << 20);
    }
    if let Some(l) = label {
        w = (w & !0x000f_ffff) | (l & 0x000f_ffff);
    }
    write_bytes(frame, l3, &w.to_be_bytes());
    if let Some(h) = hlimit {
        write_bytes(frame, l3 + 7, &[h]);
    }
}

fn set_l4(frame: &mut [u8], proto: u8, src: Option<u16>, dst: Option<u16>) {
    let Some(lay) = layout(frame) else { return };
    let Some(l4) = lay.l4 else { return };
    if lay.nw_proto != proto {
        return;
    }
    let csum_off = match proto {
        IPPROTO_TCP => Some(l4 + 16),
        IPPROTO_UDP => Some(l4 + 6),
        _ => None,
    };
    for (off, v) in [(l4, src), (l4 + 2, dst)] {
        let Some(v) = v else { continue };
        let Some(old) = be16_at(frame, off) else {
            continue;
        };
        put16(frame, off, v);
        if let Some(co) = csum_off {
            if let Some(c) = be16_at(frame, co) {
                if !(proto == IPPROTO_UDP && c == 0 && lay.dl_type == ETH_TYPE_IPV4) {
                    let mut n = csum_update16(c, old, v);
                    if proto == IPPROTO_UDP && n == 0 {
                        n = 0xffff;
                    }
                    put16(frame, co, n);
                }
            }
        }
    }
    if proto == IPPROTO_SCTP {
        sctp_recompute_crc(frame, l4);
    }
}

/// SCTP's CRC32c over the whole SCTP packet with the checksum field zeroed.
fn sctp_recompute_crc(frame: &mut [u8], l4: usize) {
    let Some(seg) = frame.get_mut(l4..) else {
        return;
    };
    if seg.len() < 12 {
        return;
    }
    write_bytes(seg, 8, &[0; 4]);
    let mut crc: u32 = !0;
    for &b in seg.iter() {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    // SCTP stores the CRC32c in little-endian byte order.
    write_bytes(seg, 8, &(!crc).to_le_bytes());
}

fn set_icmp(frame: &mut [u8], v6: bool, ty: Option<u8>, code: Option<u8>) {
    let Some(lay) = layout(frame) else { return };
    let Some(l4) = lay.l4 else { return };
    let ok = if v6 {
        lay.dl_type == ETH_TYPE_IPV6 && lay.nw_proto == IPPROTO_ICMPV6
    } else {
        lay.dl_type == ETH_TYPE_IPV4 && lay.nw_proto == IPPROTO_ICMP
    };
    if !ok {
        return;
    }
    let Some(old) = be16_at(frame, l4) else {
        return;
    };
    let [mut t, mut c] = old.to_be_bytes();
    if let Some(v) = ty {
        t = v;
    }
    if let Some(v) = code {
        c = v;
    }
    let new = u16::from_be_bytes([t, c]);
    put16(frame, l4, new);
    if let Some(cs) = be16_at(frame, l4 + 2) {
        put16(frame, l4 + 2, csum_update16(cs, old, new));
    }
}

fn set_arp(
    frame: &mut [u8],
    op: Option<u16>,
    spa: Option<u32>,
    tpa: Option<u32>,
    sha: Option<[u8; 6]>,
    tha: Option<[u8; 6]>,
) {
    let Some(lay) = layout(frame) else { return };
    if !(lay.dl_type == ETH_TYPE_ARP || lay.dl_type == ETH_TYPE_RARP) || frame.len() < lay.l3 + 28 {
        return;
    }
    let l3 = lay.l3;
    if let Some(v) = op {
        put16(frame, l3 + 6, v);
    }
    if let Some(v) = sha {
        write_bytes(frame, l3 + 8, &v);
    }
    if let Some(v) = spa {
        write_bytes(frame, l3 + 14, &v.to_be_bytes());
    }
    if let Some(v) = tha {
        write_bytes(frame, l3 + 18, &v);
    }
    if let Some(v) = tpa {
        write_bytes(frame, l3 + 24, &v.to_be_bytes());
    }
}

/// Applies `actions` to a flow key instead of frame bytes: the key each output
/// would parse to (datapath-visible fields only change). Outputs are returned as
/// `(port, key)` in order; `Controller` outputs use port `0xfffffffd`
/// (`OFPP_CONTROLLER`). Used by differential tests of translation (lazy commit
/// vs. eager semantics).
///
/// `TunnelPush` runs its nested actions on the key the outer packet parses to
/// (the header's fields, `in_port` kept, everything else zero; the UDP source
/// port from [`inner_flow_hash_key`], equal to what [`execute`] writes).
/// `TunnelPop` outputs nothing here: the inner packet is not in the key, and
/// what happens to it is another megaflow's business after recirculation.
pub fn execute_on_key(actions: &[DpAction], key: &FlowKey) -> Vec<(u32, FlowKey)> {
    const OFPP_CONTROLLER: u32 = 0xffff_fffd;
    let mut k = *key;
    let mut out = Vec::new();
    for a in actions {
        match a {
            DpAction::Output(p) => out.push((*p, k)),
            DpAction::Controller { .. } => out.push((OFPP_CONTROLLER, k)),
            DpAction::PushVlan { tpid, tci } => {
                k.vlan_tci[1] = k.vlan_tci[0];
                k.vlan_tpid[1] = k.vlan_tpid[0];
                k.vlan_tci[0] = *tci;
                k.vlan_tpid[0] = *tpid;
            }
            DpAction::PopVlan => {
                k.vlan_tci[0] = k.vlan_tci[1];
                k.vlan_tpid[0] = k.vlan_tpid[1];
                k.vlan_tci[1] = 0;
                k.vlan_tpid[1] = 0;
            }
            DpAction::SetEth { src, dst } => {
                if let Some(v) = src {
                    k.dl_src = *v;
                }
                if let Some(v) = dst {
                    k.dl_dst = *v;
                }
            }
            DpAction::SetIpv4 { src, dst, tos, ttl } => {
                if let Some(v) = src {
                    k.nw_src = *v;
                }
                if let Some(v) = dst {
                    k.nw_dst = *v;
                }
                if let Some(v) = tos {
                    k.nw_tos = *v;
                }
                if let Some(v) = ttl {
                    k.nw_ttl = *v;
                }
            }
            DpAction::SetIpv6 {
                src,
                dst,
                tclass,
                hlimit,
                label,
            } => {
                if let Some(v) = src {
                    k.ipv6_src = *v;
                }
                if let Some(v) = dst {
                    k.ipv6_dst = *v;
                }
                if let Some(v) = tclass {
                    k.nw_tos = *v;
                }
                if let Some(v) = hlimit {
                    k.nw_ttl = *v;
                }
                if let Some(v) = label {
                    k.ipv6_label = *v;
                }
            }
            DpAction::SetL4 { src, dst, .. } => {
                if let Some(v) = src {
                    k.tp_src = *v;
                }
                if let Some(v) = dst {
                    k.tp_dst = *v;
                }
            }
            DpAction::SetIcmp {
                icmp_type,
                icmp_code,
                ..
            } => {
                if let Some(v) = icmp_type {
                    k.tp_src = u16::from(*v);
                }
                if let Some(v) = icmp_code {
                    k.tp_dst = u16::from(*v);
                }
            }
            DpAction::SetArp {
                op,
                spa,
                tpa,
                sha,
                tha,
            } => {
                if let Some(v) = op {
                    k.nw_proto = u8::try_from(*v).unwrap_or(0);
                }
                if let Some(v) = spa {
                    k.nw_src = *v;
                }
                if let Some(v) = tpa {
                    k.nw_dst = *v;
                }
                if let Some(v) = sha {
                    k.arp_sha = *v;
                }
                if let Some(v) = tha {
                    k.arp_tha = *v;
                }
            }
            DpAction::SetTunnel { tun_id, src, dst } => {
                if let Some(v) = tun_id {
                    k.tun_id = *v;
                }
                if let Some(v) = src {
                    k.tun_src = *v;
                }
                if let Some(v) = dst {
                    k.tun_dst = *v;
                }
            }
            DpAction::TunnelPush {
                header,
                actions: nested,
            } => {
                out.extend(execute_on_key(nested, &outer_key(header, &k)));
            }
            DpAction::TunnelPop(_) => {}
            DpAction::Drop => {}
        }
    }
    out
}

/// The key of `inner`'s packet encapsulated with `header`, as the parser reads
/// it (with `inner`'s `in_port`).
fn outer_key(header: &TunnelHeader, inner: &FlowKey) -> FlowKey {
    let s = &header.spec;
    let mut o = FlowKey {
        in_port: inner.in_port,
        dl_dst: s.eth_dst,
        dl_src: s.eth_src,
        dl_type: ETH_TYPE_IPV4,
        nw_src: s.ip_src,
        nw_dst: s.ip_dst,
        nw_tos: s.tos,
        nw_ttl: s.ttl,
        nw_proto: if s.kind.is_udp() {
            IPPROTO_UDP
        } else {
            tunnel::IPPROTO_GRE
        },
        ..FlowKey::default()
    };
    if s.kind.is_udp() {
        o.tp_src = tunnel::udp_src_port(inner_flow_hash_key(inner));
        o.tp_dst = s.dst_port;
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    fn udp_frame(vlan: Option<u16>) -> Vec<u8> {
        let builder =
            etherparse::PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]);
        let mut out = Vec::new();
        match vlan {
            Some(v) => builder
                .single_vlan(etherparse::VlanId::try_new(v).unwrap())
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(1000, 2000)
                .write(&mut out, b"hello world")
                .unwrap(),
            None => builder
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(1000, 2000)
                .write(&mut out, b"hello world")
                .unwrap(),
        }
        out
    }

    fn tcp_frame() -> Vec<u8> {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1000, 80, 1, 1000)
            .write(&mut out, b"payload")
            .unwrap();
        out
    }

    /// Checks IPv4 header and L4 checksums by recomputing them with etherparse.
    fn checksums_ok(frame: &[u8]) -> bool {
        let p = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            return false;
        };
        let hdr = ip.header().to_header();
        if hdr.calc_header_checksum() != hdr.header_checksum {
            return false;
        }
        match p.transport {
            Some(etherparse::TransportSlice::Udp(u)) => {
                let h = u.to_header();
                h.checksum == h.calc_checksum_ipv4(&hdr, u.payload()).unwrap()
            }
            Some(etherparse::TransportSlice::Tcp(t)) => {
                let h = t.to_header();
                h.checksum == h.calc_checksum_ipv4(&hdr, t.payload()).unwrap()
            }
            _ => true,
        }
    }

    #[test]
    fn format_like_ovs() {
        let a = [
            DpAction::SetTunnel {
                tun_id: Some(0x1388),
                src: None,
                dst: None,
            },
            DpAction::PopVlan,
            DpAction::Output(3),
            DpAction::Output(2),
        ];
        assert_eq!(
            format_dp_actions(&a),
            "set(tunnel(tun_id=0x1388)),pop_vlan,3,2"
        );
        let a = [
            DpAction::PushVlan {
                tpid: ETH_TYPE_VLAN_8021Q,
                tci: VLAN_CFI | 1,
            },
            DpAction::Output(1),
        ];
        assert_eq!(format_dp_actions(&a), "push_vlan(vid=1,pcp=0),1");
        let a = [DpAction::PushVlan {
            tpid: ETH_TYPE_VLAN_8021AD,
            tci: VLAN_CFI | (5 << 13) | 100,
        }];
        assert_eq!(
            format_dp_actions(&a),
            "push_vlan(tpid=0x88a8,vid=100,pcp=5)"
        );
        assert_eq!(format_dp_actions(&[]), "drop");
        assert_eq!(format_dp_actions(&[DpAction::Drop]), "drop");
        let a = [DpAction::SetIpv4 {
            src: None,
            dst: Some(0x0a00_0003),
            tos: None,
            ttl: Some(63),
        }];
        assert_eq!(format_dp_actions(&a), "set(ipv4(dst=10.0.0.3,ttl=63))");
        let a = [DpAction::SetEth {
            src: Some([0xfa, 0x16, 0x3e, 0xaa, 0xbb, 0xcc]),
            dst: None,
        }];
        assert_eq!(format_dp_actions(&a), "set(eth(src=fa:16:3e:aa:bb:cc))");
        let a = [DpAction::SetL4 {
            proto: IPPROTO_TCP,
            src: None,
            dst: Some(8080),
        }];
        assert_eq!(format_dp_actions(&a), "set(tcp(dst=8080))");
        let a = [DpAction::SetArp {
            op: Some(2),
            spa: Some(0x0a00_0003),
            tpa: None,
            sha: None,
            tha: None,
        }];
        assert_eq!(format_dp_actions(&a), "set(arp(sip=10.0.0.3,op=2))");
    }

    #[test]
    fn vlan_push_pop_round_trip() {
        let plain = udp_frame(None);
        let tagged = udp_frame(Some(5));
        let mut f = plain.clone();
        let mut t = TunnelMeta::default();
        let mut out = Vec::new();
        execute(
            &[DpAction::PushVlan {
                tpid: ETH_TYPE_VLAN_8021Q,
                tci: VLAN_CFI | 5,
            }],
            &mut f,
            &mut t,
            &mut out,
        );
        assert_eq!(f, tagged);
        execute(&[DpAction::PopVlan], &mut f, &mut t, &mut out);
        assert_eq!(f, plain);
        // Popping an untagged frame does nothing.
        execute(&[DpAction::PopVlan], &mut f, &mut t, &mut out);
        assert_eq!(f, plain);
        assert!(out.is_empty());
    }

    #[test]
    fn set_ipv4_and_ports_keep_checksums_valid() {
        for (mut f, proto) in [
            (udp_frame(Some(7)), IPPROTO_UDP),
            (tcp_frame(), IPPROTO_TCP),
        ] {
            let acts = [
                DpAction::SetIpv4 {
                    src: Some(0xc0a8_0101),
                    dst: Some(0x0a0a_0a0a),
                    tos: Some(0x10),
                    ttl: Some(3),
                },
                DpAction::SetL4 {
                    proto,
                    src: Some(4242),
                    dst: Some(53),
                },
                DpAction::SetEth {
                    src: Some([0xaa; 6]),
                    dst: Some([0xbb; 6]),
                },
                DpAction::Output(9),
            ];
            let mut t = TunnelMeta::default();
            let mut out = Vec::new();
            execute(&acts, &mut f, &mut t, &mut out);
            assert!(checksums_ok(&f), "{proto}");
            let mut k = FlowKey::default();
            assert_eq!(parse(&f, 0, &mut k), None);
            assert_eq!(
                (k.nw_src, k.nw_dst, k.nw_tos, k.nw_ttl),
                (0xc0a8_0101, 0x0a0a_0a0a, 0x10, 3)
            );
            assert_eq!((k.tp_src, k.tp_dst), (4242, 53));
            assert_eq!((k.dl_src, k.dl_dst), ([0xaa; 6], [0xbb; 6]));
            assert_eq!(out.len(), 1);
        }
    }

    #[test]
    fn key_executor_matches_frame_executor() {
        let mut f = udp_frame(Some(7));
        let mut k0 = FlowKey::default();
        parse(&f, 1, &mut k0);
        let acts = [
            DpAction::PopVlan,
            DpAction::SetIpv4 {
                src: None,
                dst: Some(0x0102_0304),
                tos: None,
                ttl: Some(9),
            },
            DpAction::Output(2),
            DpAction::PushVlan {
                tpid: ETH_TYPE_VLAN_8021AD,
                tci: VLAN_CFI | 3,
            },
            DpAction::Output(3),
        ];
        let mut t = TunnelMeta::default();
        let mut out = Vec::new();
        execute(&acts, &mut f, &mut t, &mut out);
        let by_key = execute_on_key(&acts, &k0);
        assert_eq!(out.len(), by_key.len());
        for (e, (port, key)) in out.iter().zip(by_key) {
            let Emitted::Output { port: p, frame, .. } = e else {
                panic!("not an output")
            };
            assert_eq!(*p, port);
            let mut k = FlowKey::default();
            parse(frame, 1, &mut k);
            assert_eq!(k, key);
        }
    }

    #[test]
    fn garbage_frames_do_not_panic() {
        let acts = [
            DpAction::PopVlan,
            DpAction::SetIpv4 {
                src: Some(1),
                dst: Some(2),
                tos: Some(3),
                ttl: Some(4),
            },
            DpAction::SetL4 {
                proto: IPPROTO_SCTP,
                src: Some(1),
                dst: Some(2),
            },
            DpAction::SetArp {
                op: Some(2),
                spa: Some(1),
                tpa: Some(2),
                sha: Some([1; 6]),
                tha: Some([2; 6]),
            },
            DpAction::SetIcmp {
                v6: false,
                icmp_type: Some(0),
                icmp_code: Some(0),
            },
            DpAction::PushVlan {
                tpid: ETH_TYPE_VLAN_8021Q,
                tci: VLAN_CFI,
            },
        ];
        let base = udp_frame(Some(1));
        for n in 0..base.len() {
            let mut f = base[..n].to_vec();
            let mut t = TunnelMeta::default();
            let mut out = Vec::new();
            execute(&acts, &mut f, &mut t, &mut out);
        }
    }
}
