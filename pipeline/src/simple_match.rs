//! Simple match: megaflows that look only at where a packet came from and its
//! Ethernet type, found without parsing the packet (OVS's `dp_netdev_simple_match`,
//! dpif-netdev 3.0).
//!
//! A megaflow is *simple* when its mask holds `in_port` and `recirc_id` exactly,
//! `dl_type` exactly, and nothing else but bits of the outer VLAN TCI, of
//! `nw_frag` and of the IPv4 TOS byte, and its key's `recirc_id` is 0. It may
//! also match tunnel metadata: as 0 (a tunnel push's megaflow reads the input's
//! `tun_dst`; a fresh packet has none), or as what a tunnel pop found (the
//! megaflows of a tunnel's port, looked up for the popped packets with their
//! metadata: [`PortTable::lookup_tun`]). `in_port=1,actions=output:2`
//! translates to one (`ip,in_port=1,nw_frag=no`). When every megaflow of an input
//! port is simple, and no megaflow leaves `in_port` wild, a packet from that port
//! can only match one of them, and which one depends only on its [`SimpleKey`]
//! ([`crate::parse_simple`]): the PMD skips the parse, the hash, the EMC and the
//! classifier for it.
//!
//! Packets with a `recirc_id` other than 0 never take this path (they come back
//! from a recirculation with their key already built). Simple MAC megaflows
//! (below) match tunnel metadata only as 0.
//!
//! # Simple MAC match
//!
//! `NORMAL` megaflows also match both Ethernet addresses
//! (`ip,in_port=1,vlan_tci=0,dl_src=A,dl_dst=B,nw_frag=no`). A megaflow whose
//! mask is a simple one plus `dl_src` and `dl_dst` exactly (all 48 bits of each)
//! is a *simple MAC* megaflow ([`is_simple_mac`]): it goes to its port's
//! [`MacTable`], keyed by the two addresses, and the port stays simple while
//! every megaflow of it is simple or simple MAC. A packet is then looked up by
//! its two addresses (read from the frame's first 12 bytes, which
//! [`crate::parse_simple`] guarantees are there) and its [`SimpleKey`]: first in
//! the MAC table, then among the port's plain simple megaflows. A megaflow that
//! matches only one of the addresses (an OpenFlow rule's `dl_dst=...`) is not
//! simple: the port takes the full path.
//!
//! # Simple endpoint match
//!
//! A tunnel's outer packets arrive on a physical port for the local endpoint,
//! and the megaflow that pops them matches where they are going:
//! `udp,in_port=2,vlan_tci=0/0x1000,dl_dst=M,nw_dst=A,nw_frag=no,tp_dst=4789`.
//! A megaflow whose mask is a simple one plus `dl_dst` (all 48 bits), `nw_dst`
//! (all 32), `nw_proto` and either all of `tp_dst` (UDP) or none of it, for
//! IPv4, is a *simple endpoint* megaflow ([`is_simple_end`]). A port that has
//! some is looked up by its packets' [`EndKey`] (read at fixed offsets once
//! [`crate::parse_simple`] has checked the headers) as well: first among its
//! endpoint megaflows (a few: one per local endpoint and tunnel type), then as
//! a simple MAC or plain simple port.

use crate::actions::TunnelMeta;
use crate::dpcls::Prefetch;
use crate::flow_cache::FlowRef;
use crate::flow_key::{FlowKey, ETH_TYPE_IPV4, FLOW_NW_FRAG_LATER, IPPROTO_UDP};
use crate::parse::{parse_simple_udp, SimpleKey};

/// Ports above this never take the simple path (their state would be a big
/// table for nothing: datapath ports are numbered densely from 0).
const MAX_PORTS: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Entry {
    dl_type: u16,
    tci_mask: u16,
    tci: u16,
    frag_mask: u8,
    frag: u8,
    tos_mask: u8,
    tos: u8,
    flow: FlowRef,
}

impl Entry {
    /// Whether a packet with `k` is in the megaflow, tunnel metadata aside.
    #[inline(always)]
    fn matches(&self, k: &SimpleKey) -> bool {
        self.dl_type == k.dl_type
            && k.vlan_tci & self.tci_mask == self.tci
            && k.nw_frag & self.frag_mask == self.frag
            && k.nw_tos & self.tos_mask == self.tos
    }
}

/// A plain simple megaflow: an [`Entry`] with the tunnel metadata it matches
/// (simple MAC megaflows match it only as 0, and keep their slots small).
#[derive(Clone, Copy, Debug)]
struct TunEntry {
    e: Entry,
    /// The tunnel metadata bits the megaflow matches, and their values.
    tun_mask: TunnelMeta,
    tun: TunnelMeta,
    /// Whether it matches a packet without tunnel metadata (all of `tun` 0).
    fresh: bool,
}

impl TunEntry {
    /// Whether a packet with `k` and tunnel metadata `t` is in the megaflow.
    #[inline(always)]
    fn matches_tun(&self, k: &SimpleKey, t: &TunnelMeta) -> bool {
        self.e.matches(k)
            && t.tun_id & self.tun_mask.tun_id == self.tun.tun_id
            && t.src & self.tun_mask.src == self.tun.src
            && t.dst & self.tun_mask.dst == self.tun.dst
            && t.flags & self.tun_mask.flags == self.tun.flags
    }
}

/// A simple endpoint megaflow: an [`Entry`] with the destination it matches.
#[derive(Clone, Copy, Debug)]
struct EndEntry {
    e: Entry,
    /// `dl_dst` as the low 48 bits of a [`MacPair`].
    dl_dst: u64,
    /// The [`EndKey`] bits matched, and their values.
    end_mask: EndKey,
    end: EndKey,
}

#[derive(Clone, Debug, Default)]
struct PortState {
    /// Megaflows matching exactly this in_port.
    n_flows: u32,
    /// The simple ones among them.
    entries: Vec<TunEntry>,
    /// The simple MAC ones.
    macs: MacTable,
    /// The simple endpoint ones.
    ends: Vec<EndEntry>,
}

/// Per-port simple-match tables of one PMD's flow cache.
#[derive(Debug, Default)]
pub struct SimpleMatch {
    ports: Vec<PortState>,
    /// Megaflows that do not match `in_port` exactly: they may match a packet of
    /// any port, so while there is one, no port is simple.
    wild_port: u32,
}

/// The mask bits a simple megaflow may have.
fn simple_mask_limit() -> FlowKey {
    let mut m = FlowKey {
        in_port: u32::MAX,
        recirc_id: u32::MAX,
        dl_type: u16::MAX,
        nw_frag: u8::MAX,
        nw_tos: u8::MAX,
        // A fresh packet's tunnel metadata is 0 (only a tunnel pop's
        // recirculation sets it, and recirculated packets take the full
        // path): a megaflow may match it, as 0 (see `simple_with`).
        tun_id: u64::MAX,
        tun_src: u32::MAX,
        tun_dst: u32::MAX,
        tun_flags: u16::MAX,
        ..FlowKey::default()
    };
    m.vlan_tci[0] = u16::MAX;
    m
}

/// Whether the megaflow `mask`/`key` is simple (see the module doc): it may
/// match tunnel metadata, with any values.
pub fn is_simple(mask: &FlowKey, key: &FlowKey) -> bool {
    simple_with(mask, key, &simple_mask_limit())
}

/// Whether the megaflow matches tunnel metadata only as 0 (or not at all).
fn tunnel_as_zero(mask: &FlowKey, key: &FlowKey) -> bool {
    key.tun_id & mask.tun_id == 0
        && key.tun_src & mask.tun_src == 0
        && key.tun_dst & mask.tun_dst == 0
        && key.tun_flags & mask.tun_flags == 0
}

/// Whether the megaflow `mask`/`key` is simple MAC: simple but for `dl_src` and
/// `dl_dst`, which it matches exactly (see the module doc).
pub fn is_simple_mac(mask: &FlowKey, key: &FlowKey) -> bool {
    let mut limit = simple_mask_limit();
    limit.dl_src = [0xff; 6];
    limit.dl_dst = [0xff; 6];
    mask.dl_src == [0xff; 6]
        && mask.dl_dst == [0xff; 6]
        && tunnel_as_zero(mask, key)
        && simple_with(mask, key, &limit)
}

/// Whether the megaflow `mask`/`key` is simple endpoint: simple but for
/// `dl_dst`, `nw_dst` and `nw_proto`, which it matches exactly, and `tp_dst`,
/// which it matches exactly for UDP or not at all; IPv4 only, tunnel metadata
/// only as 0 (see the module doc).
pub fn is_simple_end(mask: &FlowKey, key: &FlowKey) -> bool {
    let mut limit = simple_mask_limit();
    limit.dl_dst = [0xff; 6];
    limit.nw_dst = u32::MAX;
    limit.nw_proto = u8::MAX;
    limit.tp_dst = u16::MAX;
    mask.dl_dst == [0xff; 6]
        && mask.nw_dst == u32::MAX
        && mask.nw_proto == u8::MAX
        && key.dl_type == ETH_TYPE_IPV4
        && match mask.tp_dst {
            0 => true,
            u16::MAX => key.nw_proto == IPPROTO_UDP,
            _ => false,
        }
        && tunnel_as_zero(mask, key)
        && simple_with(mask, key, &limit)
}

/// The destination fields of an IPv4 frame a simple endpoint megaflow
/// matches: `nw_dst` in the high 32 bits, `nw_proto` in bits 16-23 and, for
/// UDP that is not a later fragment, `tp_dst` in the low 16 (as [`crate::parse`]
/// fills the key: 0 for a later fragment). 0 for other ethertypes.
pub type EndKey = u64;

#[inline(always)]
fn end_key_of(nw_dst: u32, nw_proto: u8, tp_dst: u16) -> EndKey {
    u64::from(nw_dst) << 32 | u64::from(nw_proto) << 16 | u64::from(tp_dst)
}

/// The [`EndKey`] of a frame whose [`SimpleKey`] is `k` (from
/// [`crate::parse_simple`], which checked the IPv4 header and the UDP header
/// are there; `None` only for a frame it did not take).
#[inline(always)]
pub fn end_key(data: &[u8], k: &SimpleKey) -> Option<EndKey> {
    if k.dl_type != ETH_TYPE_IPV4 {
        return Some(0);
    }
    let l3 = if k.vlan_tci != 0 { 18 } else { 14 };
    let ip: &[u8; 20] = data.get(l3..)?.first_chunk()?;
    let proto = ip[9];
    let nw_dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
    let tp_dst = if proto == IPPROTO_UDP && k.nw_frag & FLOW_NW_FRAG_LATER == 0 {
        let l4 = l3 + usize::from(ip[0] & 0x0f) * 4;
        let udp: &[u8; 4] = data.get(l4..)?.first_chunk()?;
        u16::from_be_bytes([udp[2], udp[3]])
    } else {
        0
    };
    Some(end_key_of(nw_dst, proto, tp_dst))
}

/// [`crate::parse_simple`] and [`end_key`] of a frame in one read when it is
/// the common UDP frame ([`crate::parse::parse_simple_udp`]).
#[inline(always)]
pub fn parse_simple_end(data: &[u8]) -> Option<(SimpleKey, EndKey)> {
    match parse_simple_udp(data)? {
        (k, Some(d)) => Some((k, end_key_of(d.nw_dst, IPPROTO_UDP, d.tp_dst))),
        (k, None) => Some((k, end_key(data, &k)?)),
    }
}

fn simple_with(mask: &FlowKey, key: &FlowKey, limit: &FlowKey) -> bool {
    mask.in_port == u32::MAX
        && mask.recirc_id == u32::MAX
        && mask.dl_type == u16::MAX
        && key.recirc_id == 0
        && mask
            .words()
            .iter()
            .zip(limit.words())
            .all(|(m, l)| m & !l == 0)
}

impl SimpleMatch {
    /// A megaflow was installed with handle `flow`.
    pub fn add(&mut self, mask: &FlowKey, key: &FlowKey, flow: FlowRef) {
        let Some(st) = self.port_mut(mask, key) else {
            self.wild_port += 1;
            return;
        };
        st.n_flows += 1;
        let entry = Entry {
            dl_type: key.dl_type,
            tci_mask: mask.vlan_tci[0],
            tci: key.vlan_tci[0] & mask.vlan_tci[0],
            frag_mask: mask.nw_frag,
            frag: key.nw_frag & mask.nw_frag,
            tos_mask: mask.nw_tos,
            tos: key.nw_tos & mask.nw_tos,
            flow,
        };
        if is_simple(mask, key) {
            st.entries.push(TunEntry {
                e: entry,
                tun_mask: TunnelMeta::from_key(mask),
                tun: TunnelMeta {
                    tun_id: key.tun_id & mask.tun_id,
                    src: key.tun_src & mask.tun_src,
                    dst: key.tun_dst & mask.tun_dst,
                    flags: key.tun_flags & mask.tun_flags,
                },
                fresh: tunnel_as_zero(mask, key),
            });
        } else if is_simple_mac(mask, key) {
            st.macs.insert(mac_pair_of_key(key), entry);
        } else if is_simple_end(mask, key) {
            st.ends.push(EndEntry {
                e: entry,
                dl_dst: dl_dst_of_key(key),
                end_mask: end_key_of(mask.nw_dst, mask.nw_proto, mask.tp_dst),
                end: end_key_of(key.nw_dst, key.nw_proto, key.tp_dst & mask.tp_dst),
            });
        }
    }

    /// The megaflow `mask`/`key` with handle `flow` was removed.
    pub fn remove(&mut self, mask: &FlowKey, key: &FlowKey, flow: FlowRef) {
        let Some(st) = self.port_mut(mask, key) else {
            self.wild_port = self.wild_port.saturating_sub(1);
            return;
        };
        st.n_flows = st.n_flows.saturating_sub(1);
        if is_simple(mask, key) {
            st.entries.retain(|e| e.e.flow != flow);
        } else if is_simple_mac(mask, key) {
            st.macs.remove(mac_pair_of_key(key), flow);
        } else if is_simple_end(mask, key) {
            st.ends.retain(|e| e.e.flow != flow);
        }
    }

    pub fn clear(&mut self) {
        self.ports.clear();
        self.wild_port = 0;
    }

    /// The state of the port a megaflow matches exactly, or `None` for a megaflow
    /// that may match several ports (or a port beyond [`MAX_PORTS`], counted the
    /// same way so that it disables the simple path rather than escape it).
    fn port_mut(&mut self, mask: &FlowKey, key: &FlowKey) -> Option<&mut PortState> {
        if mask.in_port != u32::MAX {
            return None;
        }
        let p = key.in_port as usize;
        if p >= MAX_PORTS {
            return None;
        }
        if self.ports.len() <= p {
            self.ports.resize(p + 1, PortState::default());
        }
        self.ports.get_mut(p)
    }

    /// Whether packets from `in_port` can be classified by [`SimpleMatch::lookup`]:
    /// the port has megaflows, all of them simple, and no megaflow leaves `in_port`
    /// wild.
    #[inline(always)]
    pub fn enabled(&self, in_port: u32) -> bool {
        self.wild_port == 0
            && self
                .ports
                .get(in_port as usize)
                .is_some_and(PortState::all_simple)
    }

    /// How packets from `in_port` are classified: [`SimpleMode::Off`] unless
    /// [`SimpleMatch::enabled`]; then [`SimpleMode::End`] when the port has
    /// simple endpoint megaflows ([`PortTable::lookup_end`]), else
    /// [`SimpleMode::Mac`] when it has simple MAC megaflows
    /// ([`PortTable::lookup_mac`]), else [`SimpleMode::Plain`]
    /// ([`PortTable::lookup`]).
    #[inline(always)]
    pub fn mode(&self, in_port: u32) -> SimpleMode {
        if self.wild_port != 0 {
            return SimpleMode::Off;
        }
        match self.ports.get(in_port as usize) {
            Some(st) if st.all_simple() => {
                if !st.ends.is_empty() {
                    SimpleMode::End
                } else if st.macs.len != 0 {
                    SimpleMode::Mac
                } else {
                    SimpleMode::Plain
                }
            }
            _ => SimpleMode::Off,
        }
    }

    /// The megaflow a fresh packet (`recirc_id` 0) from `in_port` with these
    /// fields falls in. Exact only where [`SimpleMatch::enabled`] holds.
    #[inline(always)]
    pub fn lookup(&self, in_port: u32, k: &SimpleKey) -> Option<FlowRef> {
        self.port(in_port).lookup(k)
    }

    /// The megaflow a fresh packet from `in_port` with these fields and this
    /// [`mac_pair`] falls in, simple MAC megaflows included. Exact only where
    /// [`SimpleMatch::enabled`] holds.
    #[inline(always)]
    pub fn lookup_mac(&self, in_port: u32, macs: MacPair, k: &SimpleKey) -> Option<FlowRef> {
        self.port(in_port).lookup_mac(macs, k)
    }

    /// The simple megaflows of `in_port`, to look a whole burst up in.
    #[inline(always)]
    pub fn port(&self, in_port: u32) -> PortTable<'_> {
        match self.ports.get(in_port as usize) {
            Some(st) => PortTable {
                entries: st.entries.as_slice(),
                macs: st.macs.slots.as_slice(),
                ends: st.ends.as_slice(),
            },
            None => PortTable {
                entries: &[],
                macs: &[],
                ends: &[],
            },
        }
    }
}

impl PortState {
    /// Whether the port has megaflows and every one is in a table.
    #[inline(always)]
    fn all_simple(&self) -> bool {
        self.n_flows != 0
            && self.entries.len() + self.macs.len + self.ends.len() == self.n_flows as usize
    }
}

/// How a port's packets are classified (see [`SimpleMatch::mode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimpleMode {
    /// The full path (parse, EMC, classifier).
    Off,
    /// Simple match: [`PortTable::lookup`].
    Plain,
    /// Simple MAC match: [`PortTable::lookup_mac`].
    Mac,
    /// Simple endpoint match: [`PortTable::lookup_end`].
    End,
}

/// One port's simple megaflows.
#[derive(Clone, Copy)]
pub struct PortTable<'a> {
    entries: &'a [TunEntry],
    /// The MAC table's slots (empty when it has no entry).
    macs: &'a [MacSlot],
    ends: &'a [EndEntry],
}

impl PortTable<'_> {
    /// Whether the port has simple MAC megaflows: its packets must then be looked
    /// up with [`PortTable::lookup_mac`].
    #[inline(always)]
    pub fn has_macs(&self) -> bool {
        !self.macs.is_empty()
    }

    /// See [`SimpleMatch::lookup_mac`].
    #[inline(always)]
    pub fn lookup_mac(&self, macs: MacPair, k: &SimpleKey) -> Option<FlowRef> {
        self.lookup_mac_at(self.mac_home(macs), macs, k)
    }

    /// Where [`PortTable::lookup_mac`] of `macs` starts probing: to prefetch
    /// ([`PortTable::prefetch_mac`]) a burst's slots before looking them up
    /// ([`PortTable::lookup_mac_at`]). 0 when the port has no MAC table.
    #[inline(always)]
    pub fn mac_home(&self, macs: MacPair) -> usize {
        if self.macs.is_empty() {
            0
        } else {
            mac_home(macs, self.macs.len())
        }
    }

    /// Starts loading the slot at `home` (from [`PortTable::mac_home`]).
    #[inline(always)]
    pub fn prefetch_mac<P: Prefetch>(&self, home: usize) {
        if let Some(s) = self.macs.get(home) {
            P::prefetch(s);
        }
    }

    /// [`PortTable::lookup_mac`] with its start slot computed already.
    #[inline(always)]
    pub fn lookup_mac_at(&self, home: usize, macs: MacPair, k: &SimpleKey) -> Option<FlowRef> {
        MacTable::find(self.macs, home, macs, k).or_else(|| self.lookup(k))
    }

    /// The megaflow a fresh packet with these fields, this [`mac_pair`] and
    /// this [`end_key`] falls in, whatever table it is in. Exact where
    /// [`SimpleMatch::enabled`] holds for the port.
    #[inline(always)]
    pub fn lookup_end(&self, macs: MacPair, end: EndKey, k: &SimpleKey) -> Option<FlowRef> {
        let dl_dst = macs as u64 & DL_DST_BITS;
        self.ends
            .iter()
            .find(|e| e.dl_dst == dl_dst && end & e.end_mask == e.end && e.e.matches(k))
            .map(|e| e.e.flow)
            .or_else(|| {
                if self.has_macs() {
                    self.lookup_mac(macs, k)
                } else {
                    self.lookup(k)
                }
            })
    }

    /// See [`SimpleMatch::lookup`].
    #[inline(always)]
    pub fn lookup(&self, k: &SimpleKey) -> Option<FlowRef> {
        self.entries
            .iter()
            .find(|e| e.fresh && e.e.matches(k))
            .map(|e| e.e.flow)
    }

    /// The megaflow a packet a tunnel pop queued falls in: its [`SimpleKey`] is
    /// `k` (of the inner frame) and its tunnel metadata `t`. Exact where
    /// [`SimpleMatch::mode`] is [`SimpleMode::Plain`] for the tunnel's port.
    #[inline(always)]
    pub fn lookup_tun(&self, k: &SimpleKey, t: &TunnelMeta) -> Option<FlowRef> {
        self.entries
            .iter()
            .find(|e| e.matches_tun(k, t))
            .map(|e| e.e.flow)
    }
}

/// A frame's destination and source MAC (its first 12 bytes, as on the wire) in
/// one number, with a tag bit above them so that it is never 0 (0 marks a free
/// [`MacTable`] slot).
pub type MacPair = u128;

const MAC_PAIR_TAG: u128 = 1 << 96;

/// The [`MacPair`] of a frame: `None` when it is shorter than 12 bytes (never
/// for a frame [`crate::parse_simple`] takes).
#[inline(always)]
pub fn mac_pair(data: &[u8]) -> Option<MacPair> {
    let lo: [u8; 8] = data.get(0..8)?.try_into().ok()?;
    let hi: [u8; 4] = data.get(8..12)?.try_into().ok()?;
    Some(
        u128::from(u64::from_le_bytes(lo))
            | u128::from(u32::from_le_bytes(hi)) << 64
            | MAC_PAIR_TAG,
    )
}

/// The [`MacPair`] a key's `dl_dst` and `dl_src` make: the same number as
/// [`mac_pair`] of the frame the key was parsed from.
pub fn mac_pair_of_key(key: &FlowKey) -> MacPair {
    let mut b = [0u8; 12];
    b[..6].copy_from_slice(&key.dl_dst);
    b[6..].copy_from_slice(&key.dl_src);
    mac_pair(&b).unwrap_or(MAC_PAIR_TAG)
}

/// The bits of a [`MacPair`] that hold the destination address.
const DL_DST_BITS: u64 = (1 << 48) - 1;

/// A key's `dl_dst` as the low bits of the [`MacPair`] of its frame.
fn dl_dst_of_key(key: &FlowKey) -> u64 {
    mac_pair_of_key(key) as u64 & DL_DST_BITS
}

/// One slot of a [`MacTable`]: free when `macs` is 0.
#[derive(Clone, Copy, Debug)]
pub struct MacSlot {
    macs: MacPair,
    entry: Entry,
}

const FREE_SLOT: MacSlot = MacSlot {
    macs: 0,
    entry: Entry {
        dl_type: 0,
        tci_mask: 0,
        tci: 0,
        frag_mask: 0,
        frag: 0,
        tos_mask: 0,
        tos: 0,
        flow: FlowRef { slot: 0, gen: 0 },
    },
};

/// One port's simple MAC megaflows by their two addresses: open addressing with
/// linear probing, at most half full (so a probe always meets a free slot), and
/// removal by shifting later slots back (no tombstones). Megaflows with the same
/// addresses (other ethertypes, VLANs, fragment bits) take a slot each.
/// No slots at all while empty.
#[derive(Clone, Debug, Default)]
struct MacTable {
    slots: Vec<MacSlot>,
    len: usize,
}

/// Smallest non-empty table.
const MAC_TABLE_MIN: usize = 8;

/// Home slot of `macs` in a table of `cap` (a power of two) slots. Every input
/// bit must reach the low bits: hosts' addresses differ in their last bytes,
/// the high half of the pair (a hash that let them fall out put 1,000 sources
/// in one cluster, `perf normal-1k-mac`: 0.14 of testpmd).
#[inline(always)]
fn mac_home(macs: MacPair, cap: usize) -> usize {
    // The 96 bits folded to 64, then a 64-bit finaliser (two multiplies).
    let mut h = (macs as u64) ^ ((macs >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h as usize & (cap - 1)
}

impl MacTable {
    fn insert(&mut self, macs: MacPair, entry: Entry) {
        if (self.len + 1) * 2 > self.slots.len() {
            let cap = (self.slots.len() * 2).max(MAC_TABLE_MIN);
            let old = std::mem::replace(&mut self.slots, vec![FREE_SLOT; cap]);
            self.len = 0;
            for s in old.iter().filter(|s| s.macs != 0) {
                self.place(s.macs, s.entry);
            }
        }
        self.place(macs, entry);
    }

    fn place(&mut self, macs: MacPair, entry: Entry) {
        let cap = self.slots.len();
        let mut i = mac_home(macs, cap);
        for _ in 0..cap {
            match self.slots.get_mut(i) {
                Some(s) if s.macs == 0 => {
                    *s = MacSlot { macs, entry };
                    self.len += 1;
                    return;
                }
                _ => i = (i + 1) & (cap - 1),
            }
        }
    }

    fn remove(&mut self, macs: MacPair, flow: FlowRef) {
        let cap = self.slots.len();
        if cap == 0 {
            return;
        }
        let mut i = mac_home(macs, cap);
        let mut found = None;
        for _ in 0..cap {
            match self.slots.get(i) {
                Some(s) if s.macs == 0 => break,
                Some(s) if s.macs == macs && s.entry.flow == flow => {
                    found = Some(i);
                    break;
                }
                _ => i = (i + 1) & (cap - 1),
            }
        }
        let Some(mut hole) = found else { return };
        self.len -= 1;
        // Backward shift: move each later slot of the cluster into the hole when
        // its home is not between the hole and itself (cyclically).
        let mut j = hole;
        loop {
            j = (j + 1) & (cap - 1);
            let Some(&s) = self.slots.get(j) else { break };
            if s.macs == 0 {
                break;
            }
            let home = mac_home(s.macs, cap);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                if let Some(h) = self.slots.get_mut(hole) {
                    *h = s;
                }
                hole = j;
            }
        }
        if let Some(h) = self.slots.get_mut(hole) {
            *h = FREE_SLOT;
        }
        if self.len == 0 {
            self.slots = Vec::new();
        }
    }

    /// The first megaflow of `macs` (whose home slot is `home`) that takes
    /// `k`. `slots` is empty or a table at most half full.
    #[inline(always)]
    fn find(slots: &[MacSlot], home: usize, macs: MacPair, k: &SimpleKey) -> Option<FlowRef> {
        let cap = slots.len();
        if cap == 0 {
            return None;
        }
        let mut i = home;
        for _ in 0..cap {
            let s = slots.get(i)?;
            if s.macs == 0 {
                return None;
            }
            if s.macs == macs && s.entry.matches(k) {
                return Some(s.entry.flow);
            }
            i = (i + 1) & (cap - 1);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_metadata_is_simple_and_fresh_only_as_zero() {
        let mut mask = FlowKey {
            in_port: u32::MAX,
            recirc_id: u32::MAX,
            dl_type: u16::MAX,
            nw_tos: 3,
            tun_dst: u32::MAX,
            ..FlowKey::default()
        };
        let mut key = FlowKey {
            in_port: 1,
            dl_type: 0x0800,
            ..FlowKey::default()
        };
        assert!(is_simple(&mask, &key));
        let flow = FlowRef::default();
        let sk = SimpleKey {
            dl_type: 0x0800,
            ..SimpleKey::default()
        };
        let mut m = SimpleMatch::default();
        m.add(&mask, &key, flow);
        let t = m.port(1);
        assert_eq!(t.lookup(&sk), Some(flow));
        assert_eq!(t.lookup_tun(&sk, &TunnelMeta::default()), Some(flow));
        // A tunnel's port: only popped packets with that endpoint match.
        key.tun_dst = 0x0a00_0001;
        assert!(is_simple(&mask, &key));
        let mut m = SimpleMatch::default();
        m.add(&mask, &key, flow);
        assert_eq!(m.mode(1), SimpleMode::Plain);
        let t = m.port(1);
        assert_eq!(t.lookup(&sk), None, "a fresh packet has no tunnel metadata");
        let popped = TunnelMeta {
            dst: 0x0a00_0001,
            ..TunnelMeta::default()
        };
        assert_eq!(t.lookup_tun(&sk, &popped), Some(flow));
        let other = TunnelMeta {
            dst: 0x0a00_0002,
            ..TunnelMeta::default()
        };
        assert_eq!(t.lookup_tun(&sk, &other), None);
        // Simple MAC megaflows match it only as 0.
        mask.dl_src = [0xff; 6];
        mask.dl_dst = [0xff; 6];
        assert!(!is_simple_mac(&mask, &key));
        key.tun_dst = 0;
        assert!(is_simple_mac(&mask, &key));
        mask.nw_dst = u32::MAX;
        assert!(!is_simple(&mask, &key));
    }

    /// How far entries sit from their home slot: hosts that differ in any byte
    /// of either address spread over the table.
    #[test]
    fn host_addresses_spread_over_the_table() {
        fn src_low(i: u32) -> [u8; 12] {
            [
                2,
                0,
                0,
                1,
                0,
                (i % 10) as u8,
                2,
                0,
                0,
                0,
                (i >> 8) as u8,
                i as u8,
            ]
        }
        fn dst_low(i: u32) -> [u8; 12] {
            [2, 0, 0, 0, (i >> 8) as u8, i as u8, 2, 0, 0, 1, 0, 0]
        }
        fn oui(i: u32) -> [u8; 12] {
            [2, (i >> 8) as u8, i as u8, 0, 0, 1, 2, 0, 0, 0, 0, 1]
        }
        type Shape = fn(u32) -> [u8; 12];
        let shapes: [(&str, Shape); 3] = [
            ("source low bytes", src_low),
            ("destination low bytes", dst_low),
            ("OUI bytes", oui),
        ];
        for (name, pair) in shapes {
            let mut t = MacTable::default();
            let entry = Entry {
                dl_type: 0x0800,
                tci_mask: 0,
                tci: 0,
                frag_mask: 0,
                frag: 0,
                tos_mask: 0,
                tos: 0,
                flow: FlowRef::default(),
            };
            let n = 1000u32;
            for i in 0..n {
                t.insert(mac_pair(&pair(i)).unwrap(), entry);
            }
            let cap = t.slots.len();
            let dist: Vec<usize> = t
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.macs != 0)
                .map(|(i, s)| (i + cap - mac_home(s.macs, cap)) & (cap - 1))
                .collect();
            let worst = dist.iter().copied().max().unwrap_or(0);
            let mean = dist.iter().sum::<usize>() as f64 / dist.len() as f64;
            // Random homes at half load: about 0.5 on average, a few dozen at
            // worst; one cluster of all would be hundreds.
            assert!(mean < 1.0, "{name}: {mean:.2} slots from home on average");
            assert!(worst < 40, "{name}: an entry {worst} slots from home");
        }
    }
}
