//! The `NORMAL` action: an 802.1D learning switch per bridge and VLAN, with Open
//! vSwitch's port VLAN modes, as `xlate_normal` (`ofproto/ofproto-dpif-xlate.c`)
//! and `lib/mac-learning.c` behave.
//!
//! # Layer
//!
//! Management thread only: the translator calls [`Normal`] (through
//! [`Normal::hook`] or [`Normal::trace_hook`], both [`NormalHook`]s) when a rule's
//! actions reach `NORMAL`, on an upcall, a revalidation or a trace. Pure: no I/O,
//! no clock (times are milliseconds the caller passes in), allocation is fine.
//!
//! # Model
//!
//! * [`VlanMode`]: a port's VLAN mode, the OVS `Port` table's `vlan_mode`, `tag`
//!   and `trunks` ([`VlanMode::from_ovs`] applies OVS's implicit mode: a `tag`
//!   makes an access port, none a trunk). It says which VLAN a received frame
//!   belongs to ([`VlanMode::input_vlan`]), which VLANs the port carries
//!   ([`VlanMode::carries`]) and how a frame leaves it ([`VlanMode::output_tci`]).
//! * [`MacTable`]: (VLAN, MAC) -> (port, last seen), OVS's `struct mac_learning`:
//!   unicast sources only, aging (300 s by default), a size limit (8192) with OVS's
//!   fair eviction, and a [`MacTable::generation`] that moves on every change that
//!   can change a forwarding decision (so the slow path knows when to revalidate
//!   megaflows). Static entries (`fdb/add`, [`MacTable::add_static`]) never age,
//!   are never evicted and never move: learning leaves them as they are.
//! * [`Normal`]: one bridge's port modes and MAC table, and the decision itself.
//!
//! # The decision (OVS `xlate_normal`)
//!
//! 1. The input port must be a bridge port (or `LOCAL`), else drop ("no input
//!    bundle").
//! 2. A frame whose ethertype says VLAN but whose tag is incomplete is dropped.
//! 3. The frame's VLAN comes from its outer tag and the input port's mode; a VID
//!    the port does not accept drops the frame.
//! 4. Reserved destinations (802.1D `01:80:c2:00:00:0x`, and the Cisco and
//!    Extreme protocol addresses OVS lists in `eth_addr_is_reserved`) are dropped
//!    unless `forward_bpdu` is set (OVS `other_config:forward-bpdu`, default
//!    false).
//! 5. The source MAC is learned on the input port in that VLAN (not by a trace).
//! 6. A unicast destination learned in the VLAN goes to its port, or is dropped
//!    when that is the input port. Multicast, broadcast and unknown unicast are
//!    flooded to every other port that carries the VLAN, in bridge port order.
//! 7. Each output carries the tag its port's mode gives it: none on access ports,
//!    none on a native-untagged port for its native VLAN, none for VLAN 0 with
//!    PCP 0 on a trunk; otherwise the VLAN with the frame's PCP.
//!
//! # Megaflow mask
//!
//! The decision reads `in_port` (always in the mask), `dl_type` (always),
//! `dl_src` (learning: a new source must upcall), `dl_dst` and the outer tag's VID
//! and CFI bits (OVS un-wildcards the same). The outer PCP is marked too when the
//! frame's VID is 0: it then decides whether a trunk output keeps a priority tag
//! (OVS leaves it to the commit; marking it here keeps the mask sound). Every
//! retag an output needs is a VLAN change the translator's commit marks in full.
//! The decision also depends on the MAC table, which the key does not show: the
//! caller revalidates megaflows built with `NORMAL` when
//! [`MacTable::generation`] moves.
//!
//! # Deviations from OVS
//!
//! * Only the outer tag is the frame's VLAN (OVS's default `vlan-limit=1`); an
//!   inner tag is payload, left as it is. No `dot1q-tunnel` mode, no
//!   `use_priority_tags`, no `flood_vlans`.
//! * Bonds ([`Bond`], OVS's bundles of several interfaces): MACs are learned
//!   on the bundle ([`Bond::bundle`]), a frame received on a member passes the
//!   bond's admissibility check first ([`Bond::admissibility`]), and an output
//!   to the bundle, learned or flooded (one copy per bundle), leaves by the
//!   member the bond chooses ([`Bond::choose_member`]). No gratuitous-ARP lock.
//!   The decision then also depends on the bonds' state: the caller
//!   revalidates when [`Normal::bonds_generation`] moves.
//! * No mirrors, no multicast snooping, no static FDB entries, no STP/RSTP port states.
//! * An entry is refreshed by every frame the slow path sees from it (OVS at most
//!   once a second); frames the datapath forwards do not refresh it unless the
//!   caller feeds megaflow activity back through [`Normal::refresh`] with the
//!   megaflow's [`Normal::learning_source`] (OVS does this through its xlate
//!   cache when it pushes megaflow statistics; `mgmt::ofproto` does it when a
//!   megaflow's counters move).
//! * A unicast output to a learned port is dropped when that port no longer
//!   carries the VLAN (OVS flushes a port's entries when its mode changes, as
//!   [`Normal::set_port`] does, so this only guards against misuse).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use super::action::OFPP_LOCAL;
use super::bond::{Admissibility, Bond};
use super::xlate::{NormalDecision, NormalHook, NormalNote, NormalOutput};
use crate::flow_key::{
    FlowKey, ETH_TYPE_VLAN_8021AD, ETH_TYPE_VLAN_8021Q, VLAN_CFI, VLAN_PCP_MASK, VLAN_VID_MASK,
};

/// Number of VLAN IDs (0..=4095).
pub const VLAN_N_VIDS: usize = 4096;
/// Default MAC aging time, seconds (OVS `other_config:mac-aging-time`).
pub const MAC_DEFAULT_AGING_SECS: u32 = 300;
/// Shortest aging time accepted; shorter ones are raised to it (as OVS).
pub const MAC_MIN_AGING_SECS: u32 = 15;
/// Longest aging time accepted; longer ones are lowered to it (as OVS).
pub const MAC_MAX_AGING_SECS: u32 = 3600;
/// Default MAC table size (OVS `other_config:mac-table-size`).
pub const MAC_DEFAULT_MAX: usize = 8192;
/// Smallest table size accepted (as OVS).
pub const MAC_MIN_MAX: usize = 10;
/// Largest table size accepted (as OVS).
pub const MAC_MAX_MAX: usize = 1_000_000;

/// A configuration value NORMAL cannot use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VlanError {
    /// A VLAN ID above 4095.
    #[error("VLAN ID {0} is out of range (0 to 4095)")]
    BadVid(u16),
    /// A `vlan_mode` OVS does not have (or ferroswitch does not support).
    #[error("vlan_mode {0:?} is not one of access, trunk, native-tagged, native-untagged")]
    UnknownMode(String),
}

/// A set of VLAN IDs: OVS's VLAN bitmap, as the `trunks` column gives it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VlanSet {
    bits: [u64; VLAN_N_VIDS / 64],
}

impl VlanSet {
    /// The empty set.
    pub const fn new() -> Self {
        VlanSet {
            bits: [0; VLAN_N_VIDS / 64],
        }
    }

    /// The set of `vids`; fails on the first VID above 4095.
    pub fn from_vids(vids: impl IntoIterator<Item = u16>) -> Result<Self, VlanError> {
        let mut s = VlanSet::new();
        for v in vids {
            s.insert(v)?;
        }
        Ok(s)
    }

    /// Adds `vid`.
    pub fn insert(&mut self, vid: u16) -> Result<(), VlanError> {
        let w = self
            .bits
            .get_mut(usize::from(vid / 64))
            .ok_or(VlanError::BadVid(vid))?;
        *w |= 1 << (vid % 64);
        Ok(())
    }

    /// Removes `vid` (nothing happens for one not in the set).
    pub fn remove(&mut self, vid: u16) {
        if let Some(w) = self.bits.get_mut(usize::from(vid / 64)) {
            *w &= !(1 << (vid % 64));
        }
    }

    /// Whether `vid` is in the set (never for VIDs above 4095).
    pub fn contains(&self, vid: u16) -> bool {
        self.bits
            .get(usize::from(vid / 64))
            .is_some_and(|w| w & (1 << (vid % 64)) != 0)
    }

    /// Number of VIDs in the set.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    /// The VIDs, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..VLAN_N_VIDS as u16).filter(|&v| self.contains(v))
    }
}

impl Default for VlanSet {
    fn default() -> Self {
        VlanSet::new()
    }
}

impl fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// A bridge port's VLAN mode (OVS `Port` `vlan_mode`, `tag`, `trunks`).
///
/// `trunks: None` means every VLAN, as an empty `trunks` column does in OVS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VlanMode {
    /// Carries VLAN `tag` only, untagged on the wire. Received frames must be
    /// untagged or priority-tagged (VID 0); tagged ones are dropped.
    Access {
        /// The port's VLAN.
        tag: u16,
    },
    /// Carries the VLANs in `trunks`, tagged on the wire except VLAN 0 (an
    /// untagged frame is in VLAN 0). A received frame whose VLAN is not in
    /// `trunks` is dropped: with `trunks` given and 0 not in it, that includes
    /// untagged frames.
    Trunk {
        /// The VLANs carried, `None` for all.
        trunks: Option<VlanSet>,
    },
    /// A trunk whose untagged frames are in VLAN `tag`, which leaves tagged.
    NativeTagged {
        /// The native VLAN (always carried).
        tag: u16,
        /// The other VLANs carried, `None` for all (VLAN 0 never, unless `tag` is 0).
        trunks: Option<VlanSet>,
    },
    /// A trunk whose untagged frames are in VLAN `tag`, which leaves untagged.
    NativeUntagged {
        /// The native VLAN (always carried).
        tag: u16,
        /// The other VLANs carried, `None` for all (VLAN 0 never, unless `tag` is 0).
        trunks: Option<VlanSet>,
    },
}

impl Default for VlanMode {
    /// A port with no `tag` and no `trunks`: a trunk of every VLAN.
    fn default() -> Self {
        VlanMode::Trunk { trunks: None }
    }
}

/// The mode of a port nobody configured.
static DEFAULT_MODE: VlanMode = VlanMode::Trunk { trunks: None };

impl VlanMode {
    /// The mode OVS derives from a `Port` row (`bridge.c` `port_configure`, then
    /// `ofproto-dpif.c` `bundle_set`): without `vlan_mode`, a `tag` makes an
    /// access port (its `trunks` ignored) and no tag a trunk; `access` and the
    /// native modes without a `tag` use VLAN 0; `trunk` ignores `tag`.
    pub fn from_ovs(
        vlan_mode: Option<&str>,
        tag: Option<u16>,
        trunks: Option<VlanSet>,
    ) -> Result<Self, VlanError> {
        if let Some(t) = tag.filter(|&t| usize::from(t) >= VLAN_N_VIDS) {
            return Err(VlanError::BadVid(t));
        }
        let trunks = trunks.filter(|t| !t.is_empty());
        let mode = match vlan_mode {
            None => match tag {
                Some(tag) => VlanMode::Access { tag },
                None => VlanMode::Trunk { trunks },
            },
            Some("access") => VlanMode::Access {
                tag: tag.unwrap_or(0),
            },
            Some("trunk") => VlanMode::Trunk { trunks },
            Some("native-tagged") => VlanMode::NativeTagged {
                tag: tag.unwrap_or(0),
                trunks,
            },
            Some("native-untagged") => VlanMode::NativeUntagged {
                tag: tag.unwrap_or(0),
                trunks,
            },
            Some(other) => return Err(VlanError::UnknownMode(other.to_string())),
        };
        Ok(mode)
    }

    /// Checks the VIDs the mode names.
    pub fn validate(&self) -> Result<(), VlanError> {
        match self {
            VlanMode::Access { tag }
            | VlanMode::NativeTagged { tag, .. }
            | VlanMode::NativeUntagged { tag, .. }
                if usize::from(*tag) >= VLAN_N_VIDS =>
            {
                Err(VlanError::BadVid(*tag))
            }
            _ => Ok(()),
        }
    }

    /// Whether the trunk side of the port carries `vlan` (OVS
    /// `xbundle_trunks_vlan`, with `bundle_set`'s rule that a native port always
    /// trunks its native VLAN and never VLAN 0).
    fn trunks_vlan(&self, vlan: u16) -> bool {
        let listed = |trunks: &Option<VlanSet>| trunks.as_ref().is_none_or(|t| t.contains(vlan));
        match self {
            VlanMode::Access { .. } => false,
            VlanMode::Trunk { trunks } => usize::from(vlan) < VLAN_N_VIDS && listed(trunks),
            VlanMode::NativeTagged { tag, trunks } | VlanMode::NativeUntagged { tag, trunks } => {
                if *tag == 0 {
                    usize::from(vlan) < VLAN_N_VIDS && listed(trunks)
                } else {
                    vlan == *tag || (vlan != 0 && usize::from(vlan) < VLAN_N_VIDS && listed(trunks))
                }
            }
        }
    }

    /// Whether the port carries VLAN `vlan` (OVS `xbundle_includes_vlan`).
    pub fn carries(&self, vlan: u16) -> bool {
        match self {
            VlanMode::Access { tag } => vlan == *tag,
            _ => self.trunks_vlan(vlan),
        }
    }

    /// The VLAN of a frame received on this port whose outer VID is `vid` (0 for
    /// an untagged or priority-tagged frame), or `None` when the port refuses it
    /// (OVS `input_vid_is_valid` and the input VLAN translation).
    pub fn input_vlan(&self, vid: u16) -> Option<u16> {
        match self {
            VlanMode::Access { tag } => (vid == 0).then_some(*tag),
            VlanMode::Trunk { .. } => self.trunks_vlan(vid).then_some(vid),
            VlanMode::NativeTagged { tag, .. } | VlanMode::NativeUntagged { tag, .. } => {
                if vid == 0 {
                    Some(*tag)
                } else {
                    self.trunks_vlan(vid).then_some(vid)
                }
            }
        }
    }

    /// The outer tag a frame of VLAN `vlan` with priority bits `pcp` (already in
    /// TCI position) leaves this port with: `None` for untagged, else the TCI
    /// without the CFI bit (OVS `xvlan_output_translate` and `xvlan_put`).
    pub fn output_tci(&self, vlan: u16, pcp: u16) -> Option<u16> {
        match self {
            VlanMode::Access { .. } => None,
            VlanMode::NativeUntagged { tag, .. } if vlan == *tag => None,
            _ => {
                let tci = (vlan & VLAN_VID_MASK) | (pcp & VLAN_PCP_MASK);
                (tci != 0).then_some(tci)
            }
        }
    }
}

/// Whether `mac` is a group (multicast or broadcast) address.
pub fn is_multicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}

/// Whether a bridge must not forward frames to `mac` (OVS
/// `eth_addr_is_reserved`): 802.1D/802.1Q reserved `01:80:c2:00:00:00` to `0f`
/// (STP, pause, LACP, 802.1X, LLDP...), Extreme EDP/EAPS, and Cisco ISL, CDP/VTP/
/// DTP/PAgP/UDLD, PVST+, UplinkFast and CFM addresses.
pub fn is_reserved_mac(mac: &[u8; 6]) -> bool {
    match mac {
        [0x01, 0x80, 0xc2, 0x00, 0x00, last] => *last <= 0x0f,
        [0x00, 0xe0, 0x2b, 0x00, 0x00, last] => matches!(last, 0x00 | 0x04 | 0x06),
        [0x01, 0x00, 0x0c, 0x00, 0x00, 0x00]
        | [0x01, 0x00, 0x0c, 0xcc, 0xcc, 0xcc | 0xcd]
        | [0x01, 0x00, 0x0c, 0xcd, 0xcd, 0xcd] => true,
        [0x01, 0x00, 0x0c, 0xcc, 0xcc, last] => (0xc0..=0xc7).contains(last),
        _ => false,
    }
}

/// `aa:bb:cc:dd:ee:ff`.
fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// One MAC table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacEntry {
    /// The VLAN it was learned in.
    pub vlan: u16,
    /// The MAC address.
    pub mac: [u8; 6],
    /// The port it was last seen on.
    pub port: u32,
    /// When it was last seen (the caller's milliseconds); for a static entry,
    /// when it was added.
    pub used_ms: u64,
    /// Added by [`MacTable::add_static`]: never aged, evicted or moved.
    pub is_static: bool,
}

/// What a frame teaches the MAC table: (VLAN, MAC) seen on a port (see
/// [`Normal::learning_source`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacSource {
    /// The frame's VLAN (after the input port's mode).
    pub vlan: u16,
    /// The source MAC (unicast).
    pub mac: [u8; 6],
    /// The input port.
    pub port: u32,
}

/// What [`MacTable::learn`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// Nothing: a multicast or broadcast source is never learned.
    Ignored,
    /// A new entry (possibly after evicting another).
    New,
    /// The MAC was known on another port in this VLAN and moved.
    Moved {
        /// The port it was on.
        from: u32,
    },
    /// Known on this port already: only its age was reset.
    Refreshed,
    /// A static entry has this MAC in this VLAN: nothing changes (OVS does not
    /// update static entries).
    Static,
}

/// MAC table counters (OVS `fdb/stats-show`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MacStats {
    /// Entries added.
    pub learned: u64,
    /// Entries aged out.
    pub expired: u64,
    /// Entries evicted to make room.
    pub evicted: u64,
    /// MAC moves between ports.
    pub moved: u64,
}

type MacKey = (u16, [u8; 6]);

#[derive(Clone, Copy, Debug)]
struct Slot {
    port: u32,
    used_ms: u64,
    /// Position in the LRU order: larger is more recent.
    seq: u64,
}

/// The learning table: (VLAN, MAC) -> port, OVS `struct mac_learning`.
///
/// * Only unicast source MACs are learned.
/// * An entry not seen for the aging time (default [`MAC_DEFAULT_AGING_SECS`]) is
///   removed by [`MacTable::expire`], which the caller runs periodically (OVS
///   `mac_learning_run`); lookups do not check ages, so forwarding changes only
///   when the table does.
/// * When full ([`MAC_DEFAULT_MAX`] entries by default) a new entry evicts the
///   least recently used entry of the port holding the most entries (OVS
///   `evict_mac_entry_fairly`: a port flooding the table with sources evicts its
///   own entries first); among equally large ports, the one whose oldest entry
///   is oldest.
/// * Times are the caller's milliseconds. The table keeps the latest time it was
///   given and never goes back, so a clock that steps backwards delays aging
///   but cannot reorder it.
/// * [`MacTable::generation`] changes whenever an entry is added, moves or is
///   removed: the moments when a `NORMAL` decision (and so a megaflow) may have
///   changed. Refreshing an entry does not change it.
#[derive(Clone, Debug)]
pub struct MacTable {
    entries: HashMap<MacKey, Slot>,
    /// Static entries: (VLAN, MAC) -> (port, when added). Apart from the
    /// learned ones: no LRU position, no share of the size limit.
    statics: BTreeMap<MacKey, (u32, u64)>,
    /// seq -> key, least recently used first.
    lru: BTreeMap<u64, MacKey>,
    /// (port, seq): each port's entries, least recently used first.
    port_lru: BTreeSet<(u32, u64)>,
    /// Entries per port (ports with none are absent).
    port_count: BTreeMap<u32, usize>,
    next_seq: u64,
    clock_ms: u64,
    aging_secs: u32,
    max_entries: usize,
    generation: u64,
    stats: MacStats,
}

impl Default for MacTable {
    fn default() -> Self {
        MacTable::new()
    }
}

impl MacTable {
    /// An empty table with OVS's defaults: 300 s aging, 8192 entries.
    pub fn new() -> Self {
        MacTable {
            entries: HashMap::new(),
            statics: BTreeMap::new(),
            lru: BTreeMap::new(),
            port_lru: BTreeSet::new(),
            port_count: BTreeMap::new(),
            next_seq: 0,
            clock_ms: 0,
            aging_secs: MAC_DEFAULT_AGING_SECS,
            max_entries: MAC_DEFAULT_MAX,
            generation: 0,
            stats: MacStats::default(),
        }
    }

    /// The aging time, seconds.
    pub fn aging_secs(&self) -> u32 {
        self.aging_secs
    }

    /// Sets the aging time (clamped to 15..=3600 s as OVS does) and returns the
    /// value applied. It applies to existing entries at the next
    /// [`MacTable::expire`].
    pub fn set_aging_secs(&mut self, secs: u32) -> u32 {
        self.aging_secs = secs.clamp(MAC_MIN_AGING_SECS, MAC_MAX_AGING_SECS);
        self.aging_secs
    }

    /// The size limit.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Sets the size limit (clamped to 10..=1000000 as OVS does), evicting
    /// entries fairly down to it; returns the value applied.
    pub fn set_max_entries(&mut self, n: usize) -> usize {
        self.max_entries = n.clamp(MAC_MIN_MAX, MAC_MAX_MAX);
        while self.entries.len() > self.max_entries {
            if !self.evict_one() {
                break;
            }
        }
        self.max_entries
    }

    /// Number of entries, static ones included.
    pub fn len(&self) -> usize {
        self.entries.len() + self.statics.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.statics.is_empty()
    }

    /// Changes whenever an entry is added, moved or removed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Counters since the table was made.
    pub fn stats(&self) -> MacStats {
        self.stats
    }

    /// The port `mac` was learned on in `vlan`; never for a group address (OVS
    /// `mac_learning_lookup`).
    pub fn lookup(&self, vlan: u16, mac: &[u8; 6]) -> Option<u32> {
        if is_multicast(mac) {
            return None;
        }
        let key = (vlan, *mac);
        match self.statics.get(&key) {
            Some(&(port, _)) => Some(port),
            None => self.entries.get(&key).map(|s| s.port),
        }
    }

    /// The entry for `mac` in `vlan`.
    pub fn get(&self, vlan: u16, mac: &[u8; 6]) -> Option<MacEntry> {
        let key = (vlan, *mac);
        if let Some(&(port, used_ms)) = self.statics.get(&key) {
            return Some(MacEntry {
                vlan,
                mac: *mac,
                port,
                used_ms,
                is_static: true,
            });
        }
        self.entries.get(&key).map(|s| MacEntry {
            vlan,
            mac: *mac,
            port: s.port,
            used_ms: s.used_ms,
            is_static: false,
        })
    }

    /// Every entry: the learned ones least recently used first (the order
    /// `fdb/show` prints), then the static ones by VLAN and MAC.
    pub fn entries(&self) -> impl Iterator<Item = MacEntry> + '_ {
        self.lru
            .values()
            .chain(self.statics.keys())
            .filter_map(|k| self.get(k.0, &k.1))
    }

    /// Adds a static entry: `mac` in `vlan` is on `port` until
    /// [`MacTable::del_static`] or a flush, whatever frames say (OVS
    /// `mac_learning_add_static_entry`, `fdb/add`). It replaces a learned entry
    /// of the same MAC and VLAN. A group address is refused (it is never looked
    /// up). Returns whether the table changed.
    pub fn add_static(
        &mut self,
        vlan: u16,
        mac: [u8; 6],
        port: u32,
        now_ms: u64,
    ) -> Result<bool, &'static str> {
        if is_multicast(&mac) {
            return Err("a multicast or broadcast MAC cannot be a static entry");
        }
        if vlan > VLAN_VID_MASK {
            return Err("VLAN must be 0 to 4095");
        }
        self.clock_ms = self.clock_ms.max(now_ms);
        let key = (vlan, mac);
        let learned = self.remove(&key);
        let old = self.statics.insert(key, (port, self.clock_ms));
        let changed = match old {
            Some((p, _)) => p != port,
            None => learned.is_none_or(|s| s.port != port),
        };
        // remove() moved the generation already when a learned entry went.
        if changed && learned.is_none() {
            self.generation += 1;
        }
        Ok(changed || learned.is_some())
    }

    /// Removes the static entry of `mac` in `vlan` (OVS `fdb/del`); returns
    /// whether there was one. Learned entries are left alone.
    pub fn del_static(&mut self, vlan: u16, mac: &[u8; 6]) -> bool {
        let gone = self.statics.remove(&(vlan, *mac)).is_some();
        if gone {
            self.generation += 1;
        }
        gone
    }

    /// Records that a frame from `mac` arrived on `port` in `vlan` at `now_ms`
    /// (OVS `mac_learning_insert` + `mac_entry_set_port`).
    pub fn learn(&mut self, vlan: u16, mac: [u8; 6], port: u32, now_ms: u64) -> Learned {
        if is_multicast(&mac) {
            return Learned::Ignored;
        }
        self.clock_ms = self.clock_ms.max(now_ms);
        let key = (vlan, mac);
        if self.statics.contains_key(&key) {
            return Learned::Static;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let outcome = match self.entries.get(&key).copied() {
            Some(old) => {
                self.lru.remove(&old.seq);
                self.port_lru.remove(&(old.port, old.seq));
                if old.port == port {
                    Learned::Refreshed
                } else {
                    self.uncount(old.port);
                    *self.port_count.entry(port).or_insert(0) += 1;
                    self.stats.moved += 1;
                    self.generation += 1;
                    Learned::Moved { from: old.port }
                }
            }
            None => {
                if self.entries.len() >= self.max_entries {
                    self.evict_one();
                }
                *self.port_count.entry(port).or_insert(0) += 1;
                self.stats.learned += 1;
                self.generation += 1;
                Learned::New
            }
        };
        self.entries.insert(
            key,
            Slot {
                port,
                used_ms: self.clock_ms,
                seq,
            },
        );
        self.lru.insert(seq, key);
        self.port_lru.insert((port, seq));
        outcome
    }

    /// Removes the entries not seen for the aging time by `now_ms`; returns how
    /// many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        self.clock_ms = self.clock_ms.max(now_ms);
        let aging_ms = u64::from(self.aging_secs) * 1000;
        let mut n = 0;
        // Entries are stamped with a clock that never goes back, so LRU order is
        // also age order: stop at the first one still young.
        while let Some((_, &key)) = self.lru.first_key_value() {
            let expired = self
                .entries
                .get(&key)
                .is_none_or(|s| s.used_ms.saturating_add(aging_ms) <= self.clock_ms);
            if !expired {
                break;
            }
            self.remove(&key);
            self.stats.expired += 1;
            n += 1;
        }
        n
    }

    /// Removes every entry, static ones included; returns how many (OVS
    /// `fdb/flush`).
    pub fn flush(&mut self) -> usize {
        let n = self.len();
        if n > 0 {
            self.entries.clear();
            self.statics.clear();
            self.lru.clear();
            self.port_lru.clear();
            self.port_count.clear();
            self.generation += 1;
        }
        n
    }

    /// Removes the entries on `port` (learned and static: the port is gone);
    /// returns how many.
    pub fn flush_port(&mut self, port: u32) -> usize {
        let before = self.statics.len();
        self.statics.retain(|_, (p, _)| *p != port);
        let statics = before - self.statics.len();
        if statics > 0 {
            self.generation += 1;
        }
        let keys: Vec<MacKey> = self
            .port_lru
            .range((port, 0)..=(port, u64::MAX))
            .filter_map(|(_, seq)| self.lru.get(seq).copied())
            .collect();
        for k in &keys {
            self.remove(k);
        }
        keys.len() + statics
    }

    /// `ovs-appctl fdb/show BR`: a header, then one line per entry, least
    /// recently used first, with the port (as `port_name` gives it), the VLAN,
    /// the MAC and the seconds since the entry was last seen at `now_ms`
    /// (`static` for a static entry, as OVS prints it).
    pub fn format_fdb_show(&self, now_ms: u64, port_name: impl Fn(u32) -> String) -> String {
        let mut s = String::from(" port  VLAN  MAC                Age\n");
        for e in self.entries() {
            let age = if e.is_static {
                "static".to_string()
            } else {
                format!("{:>3}", now_ms.saturating_sub(e.used_ms) / 1000)
            };
            s.push_str(&format!(
                "{:>5}  {:>4}  {}  {age}\n",
                port_name(e.port),
                e.vlan,
                format_mac(&e.mac),
            ));
        }
        s
    }

    fn uncount(&mut self, port: u32) {
        if let Some(c) = self.port_count.get_mut(&port) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.port_count.remove(&port);
            }
        }
    }

    fn remove(&mut self, key: &MacKey) -> Option<Slot> {
        let slot = self.entries.remove(key)?;
        self.lru.remove(&slot.seq);
        self.port_lru.remove(&(slot.port, slot.seq));
        self.uncount(slot.port);
        self.generation += 1;
        Some(slot)
    }

    /// Evicts the least recently used entry of the port with the most entries
    /// (ties: the port whose oldest entry is oldest). Returns whether one was.
    fn evict_one(&mut self) -> bool {
        let Some(most) = self.port_count.values().copied().max() else {
            return false;
        };
        let victim = self
            .port_count
            .iter()
            .filter(|&(_, &c)| c == most)
            .filter_map(|(&p, _)| self.port_lru.range((p, 0)..=(p, u64::MAX)).next())
            .min_by_key(|&&(_, seq)| seq)
            .and_then(|(_, seq)| self.lru.get(seq).copied());
        match victim {
            Some(key) => {
                self.remove(&key);
                self.stats.evicted += 1;
                true
            }
            None => false,
        }
    }
}

/// One bridge's learning switch: its ports' VLAN modes and its MAC table.
#[derive(Clone, Debug, Default)]
pub struct Normal {
    ports: BTreeMap<u32, VlanMode>,
    macs: MacTable,
    forward_bpdu: bool,
    bonds: Vec<Bond>,
    /// Member OpenFlow port -> index in `bonds`.
    members: BTreeMap<u32, usize>,
}

impl Normal {
    /// No port configured (every port a trunk of all VLANs), an empty table with
    /// OVS's defaults, reserved destinations dropped.
    pub fn new() -> Self {
        Normal::default()
    }

    /// Sets `port`'s VLAN mode. When it changes, the MACs learned on the port are
    /// forgotten (OVS `bundle_set` flushes them), since they may belong to VLANs
    /// the port no longer carries.
    pub fn set_port(&mut self, port: u32, mode: VlanMode) -> Result<(), VlanError> {
        mode.validate()?;
        if *self.port_mode(port) != mode {
            self.macs.flush_port(port);
        }
        if mode == VlanMode::default() {
            self.ports.remove(&port);
        } else {
            self.ports.insert(port, mode);
        }
        Ok(())
    }

    /// Forgets `port`: its mode and the MACs learned on it.
    pub fn remove_port(&mut self, port: u32) {
        self.ports.remove(&port);
        self.macs.flush_port(port);
    }

    /// `port`'s VLAN mode (the default trunk when none was set).
    pub fn port_mode(&self, port: u32) -> &VlanMode {
        self.ports.get(&port).unwrap_or(&DEFAULT_MODE)
    }

    /// Whether reserved destinations (see [`is_reserved_mac`]) are forwarded.
    pub fn forward_bpdu(&self) -> bool {
        self.forward_bpdu
    }

    /// OVS `other_config:forward-bpdu` (default false: reserved destinations are
    /// dropped). Changing it changes decisions without touching the MAC table:
    /// the caller revalidates.
    pub fn set_forward_bpdu(&mut self, on: bool) {
        self.forward_bpdu = on;
    }

    /// Adds a bond: its members' frames are learned on, and flooded to, the
    /// bundle ([`Bond::bundle`]; its VLAN mode is the bundle's). Members that
    /// already belong to another bond are refused.
    pub fn add_bond(&mut self, bond: Bond) -> Result<(), String> {
        if let Some(m) = bond
            .members()
            .iter()
            .find(|m| self.members.contains_key(&m.ofport))
        {
            return Err(format!("port {} is already a member of a bond", m.ofport));
        }
        let i = self.bonds.len();
        for m in bond.members() {
            self.members.insert(m.ofport, i);
        }
        self.bonds.push(bond);
        Ok(())
    }

    /// The bonds.
    pub fn bonds(&self) -> &[Bond] {
        &self.bonds
    }

    /// The bonds, to update their members' state ([`Bond::update`]).
    pub fn bonds_mut(&mut self) -> &mut [Bond] {
        &mut self.bonds
    }

    /// Moves whenever any bond's forwarding state does ([`Bond::generation`]).
    pub fn bonds_generation(&self) -> u64 {
        self.bonds.iter().map(Bond::generation).sum()
    }

    /// The bond `port` is a member of.
    pub fn bond_of(&self, port: u32) -> Option<&Bond> {
        self.members.get(&port).and_then(|&i| self.bonds.get(i))
    }

    /// The bundle a port belongs to: its bond's [`Bond::bundle`], or itself.
    pub fn bundle_of(&self, port: u32) -> u32 {
        self.bond_of(port).map_or(port, Bond::bundle)
    }

    /// The MAC table.
    pub fn macs(&self) -> &MacTable {
        &self.macs
    }

    /// The MAC table, to configure, expire or flush it.
    pub fn macs_mut(&mut self) -> &mut MacTable {
        &mut self.macs
    }

    /// What `NORMAL` learns from `flow` on a bridge with `ports`: the VLAN, the
    /// source MAC and the input port, or `None` when the decision drops the
    /// frame before learning (no such input port, partial tag, a VID the port
    /// refuses, reserved destination) or the source is a group address.
    ///
    /// The slow path keeps it with each megaflow that ran `NORMAL` and learns it
    /// again ([`Normal::refresh`]) whenever that megaflow forwards packets, as OVS
    /// does from its xlate cache (`XC_NORMAL`): frames the datapath forwards
    /// never reach the slow path, yet must keep their source's entry alive.
    pub fn learning_source(&self, flow: &FlowKey, ports: &[u32]) -> Option<MacSource> {
        let mut scratch = FlowKey::default();
        let (port, vlan, _) = self.admit(flow, &mut scratch, ports).ok()?;
        (!is_multicast(&flow.dl_src)).then_some(MacSource {
            vlan,
            mac: flow.dl_src,
            port,
        })
    }

    /// Learns `src` again at `now_ms` (see [`Normal::learning_source`]); nothing
    /// happens when its port no longer carries its VLAN (the port's mode changed
    /// since `src` was computed).
    pub fn refresh(&mut self, src: &MacSource, now_ms: u64) -> Learned {
        if !self.port_mode(src.port).carries(src.vlan) {
            return Learned::Ignored;
        }
        self.macs.learn(src.vlan, src.mac, src.port, now_ms)
    }

    /// Steps 1 to 4 of the decision (see the module docs): the input port, the
    /// frame's VLAN and its PCP bits, or why the frame is dropped. Marks in `wc`
    /// the bits read.
    fn admit(
        &self,
        flow: &FlowKey,
        wc: &mut FlowKey,
        ports: &[u32],
    ) -> Result<(u32, u16, u16), NormalNote> {
        wc.dl_src = [0xff; 6];
        wc.dl_dst = [0xff; 6];
        wc.vlan_tci[0] |= VLAN_VID_MASK | VLAN_CFI;

        let member = flow.in_port;
        if member != OFPP_LOCAL && !ports.contains(&member) {
            return Err(NormalNote::Warn("no input bundle, dropping"));
        }
        let in_port = self.bundle_of(member);
        let tci = flow.vlan_tci[0];
        let tagged = tci & VLAN_CFI != 0;
        if !tagged && matches!(flow.dl_type, ETH_TYPE_VLAN_8021Q | ETH_TYPE_VLAN_8021AD) {
            return Err(NormalNote::Warn("partial VLAN tag, dropping"));
        }
        let (vid, pcp) = if tagged {
            (tci & VLAN_VID_MASK, tci & VLAN_PCP_MASK)
        } else {
            (0, 0)
        };
        if vid == 0 {
            // VLAN 0 leaves trunks tagged only when its PCP is not 0.
            wc.vlan_tci[0] |= VLAN_PCP_MASK;
        }
        let Some(vlan) = self.port_mode(in_port).input_vlan(vid) else {
            return Err(NormalNote::Warn(
                "disallowed VLAN VID for this input port, dropping",
            ));
        };
        if !self.forward_bpdu && is_reserved_mac(&flow.dl_dst) {
            return Err(NormalNote::Detail(
                "packet has reserved destination MAC, dropping",
            ));
        }
        if let Some(bond) = self.bond_of(member) {
            match bond.admissibility(member, &flow.dl_dst) {
                Admissibility::Accept => {}
                Admissibility::Drop(why) => return Err(NormalNote::Detail(why)),
                Admissibility::DropIfMoved => {
                    let learned = self.macs.lookup(vlan, &flow.dl_src);
                    if learned.is_some_and(|p| p != in_port) {
                        return Err(NormalNote::Detail(
                            "SLB bond: source MAC learned on another port, dropping",
                        ));
                    }
                }
            }
        }
        Ok((in_port, vlan, pcp))
    }

    /// The hook for a packet's translation (an upcall): learns the source MAC at
    /// `now_ms`, then decides.
    pub fn hook(&mut self, now_ms: u64) -> NormalXlate<'_> {
        NormalXlate {
            normal: NormalRef::Learning(self, now_ms),
            learning: true,
        }
    }

    /// The hook for `ofproto/trace` and revalidation: the same decision, nothing
    /// learned.
    pub fn trace_hook(&self) -> NormalXlate<'_> {
        NormalXlate {
            normal: NormalRef::ReadOnly(self),
            learning: false,
        }
    }
}

enum NormalRef<'a> {
    Learning(&'a mut Normal, u64),
    ReadOnly(&'a Normal),
}

/// [`Normal`] as the translator's [`NormalHook`], learning or not (see
/// [`Normal::hook`] and [`Normal::trace_hook`]).
pub struct NormalXlate<'a> {
    normal: NormalRef<'a>,
    /// Learning hook, learning now (off while the translator handles an
    /// encapsulated packet: [`NormalHook::set_learning`]).
    learning: bool,
}

impl NormalXlate<'_> {
    fn get(&self) -> &Normal {
        match &self.normal {
            NormalRef::Learning(n, _) => n,
            NormalRef::ReadOnly(n) => n,
        }
    }
}

fn drop_with(note: NormalNote) -> NormalDecision {
    NormalDecision {
        outputs: Vec::new(),
        note: Some(note),
    }
}

impl NormalHook for NormalXlate<'_> {
    fn set_learning(&mut self, on: bool) {
        self.learning = on && matches!(self.normal, NormalRef::Learning(..));
    }

    fn normal(&mut self, flow: &FlowKey, wc: &mut FlowKey, ports: &[u32]) -> NormalDecision {
        let (in_port, vlan, pcp) = match self.get().admit(flow, wc, ports) {
            Ok(src) => src,
            Err(note) => return drop_with(note),
        };
        if let (NormalRef::Learning(n, now_ms), true) = (&mut self.normal, self.learning) {
            n.macs.learn(vlan, flow.dl_src, in_port, *now_ms);
        }

        let n = self.get();
        // A bundle's output leaves by the member its bond chooses (none when no
        // member is enabled).
        let mut output = |port: u32| -> Option<NormalOutput> {
            let member = match n.bond_of(port) {
                Some(b) => b.choose_member(flow, vlan, wc)?,
                None => port,
            };
            Some(NormalOutput {
                port: member,
                vlan: n.port_mode(port).output_tci(vlan, pcp),
            })
        };
        match n.macs.lookup(vlan, &flow.dl_dst) {
            Some(p) if p == in_port => {
                drop_with(NormalNote::Detail("learned port is input port, dropping"))
            }
            Some(p) if p != OFPP_LOCAL && !ports.contains(&p) => {
                drop_with(NormalNote::Warn("learned port is unknown, dropping"))
            }
            Some(p) if !n.port_mode(p).carries(vlan) => drop_with(NormalNote::Warn(
                "learned port does not carry the VLAN, dropping",
            )),
            Some(p) => match output(p) {
                Some(o) => NormalDecision {
                    outputs: vec![o],
                    note: Some(NormalNote::Detail("forwarding to learned port")),
                },
                None => drop_with(NormalNote::Detail(
                    "learned bond has no enabled member, dropping",
                )),
            },
            None => NormalDecision {
                // One copy per bundle: a bond is flooded to through the port
                // it is known by.
                outputs: ports
                    .iter()
                    .filter(|&&p| {
                        p != in_port && n.bundle_of(p) == p && n.port_mode(p).carries(vlan)
                    })
                    .filter_map(|&p| output(p))
                    .collect(),
                note: Some(NormalNote::Detail(
                    "no learned MAC for destination, flooding",
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [0, 0, 0, 0, 0, 0x0a];
    const B: [u8; 6] = [0, 0, 0, 0, 0, 0x0b];
    const C: [u8; 6] = [0, 0, 0, 0, 0, 0x0c];

    fn set(vids: &[u16]) -> Option<VlanSet> {
        Some(VlanSet::from_vids(vids.iter().copied()).unwrap())
    }

    fn mac(i: u16) -> [u8; 6] {
        let [hi, lo] = i.to_be_bytes();
        [0x02, 0, 0, 0, hi, lo]
    }

    #[test]
    fn vlan_set_holds_vids_0_to_4095() {
        let mut s = VlanSet::from_vids([0, 10, 4095]).unwrap();
        assert!(s.contains(0) && s.contains(10) && s.contains(4095));
        assert!(!s.contains(11) && !s.contains(4096) && !s.contains(u16::MAX));
        assert_eq!(s.len(), 3);
        assert_eq!(s.iter().collect::<Vec<_>>(), [0, 10, 4095]);
        assert_eq!(format!("{s:?}"), "{0, 10, 4095}");
        s.remove(10);
        s.remove(9999);
        assert_eq!(s.len(), 2);
        assert_eq!(s.insert(4096), Err(VlanError::BadVid(4096)));
        assert_eq!(
            VlanSet::from_vids([1, 5000]).unwrap_err().to_string(),
            "VLAN ID 5000 is out of range (0 to 4095)"
        );
        assert!(VlanSet::new().is_empty());
    }

    #[test]
    fn from_ovs_applies_the_implicit_mode() {
        assert_eq!(
            VlanMode::from_ovs(None, Some(10), set(&[20])),
            Ok(VlanMode::Access { tag: 10 })
        );
        assert_eq!(
            VlanMode::from_ovs(None, None, None),
            Ok(VlanMode::default())
        );
        assert_eq!(
            VlanMode::from_ovs(None, None, set(&[20])),
            Ok(VlanMode::Trunk { trunks: set(&[20]) })
        );
        // An empty trunks column is every VLAN.
        assert_eq!(
            VlanMode::from_ovs(Some("trunk"), Some(5), Some(VlanSet::new())),
            Ok(VlanMode::Trunk { trunks: None })
        );
        assert_eq!(
            VlanMode::from_ovs(Some("native-untagged"), Some(10), set(&[20])),
            Ok(VlanMode::NativeUntagged {
                tag: 10,
                trunks: set(&[20])
            })
        );
        assert_eq!(
            VlanMode::from_ovs(Some("native-tagged"), None, None),
            Ok(VlanMode::NativeTagged {
                tag: 0,
                trunks: None
            })
        );
        assert_eq!(
            VlanMode::from_ovs(Some("access"), None, None),
            Ok(VlanMode::Access { tag: 0 })
        );
        assert_eq!(
            VlanMode::from_ovs(Some("dot1q-tunnel"), Some(10), None)
                .unwrap_err()
                .to_string(),
            "vlan_mode \"dot1q-tunnel\" is not one of access, trunk, native-tagged, native-untagged"
        );
        assert_eq!(
            VlanMode::from_ovs(None, Some(4096), None),
            Err(VlanError::BadVid(4096))
        );
        assert_eq!(
            VlanMode::Access { tag: 5000 }.validate(),
            Err(VlanError::BadVid(5000))
        );
    }

    #[test]
    fn input_vlan_follows_ovs_input_vid_is_valid() {
        let access = VlanMode::Access { tag: 10 };
        assert_eq!(access.input_vlan(0), Some(10));
        assert_eq!(access.input_vlan(10), None);
        assert_eq!(access.input_vlan(20), None);

        let all = VlanMode::default();
        assert_eq!(all.input_vlan(0), Some(0));
        assert_eq!(all.input_vlan(4095), Some(4095));
        assert_eq!(all.input_vlan(4096), None);

        // A trunk list without 0 refuses untagged frames, as in OVS.
        let t10 = VlanMode::Trunk { trunks: set(&[10]) };
        assert_eq!(t10.input_vlan(10), Some(10));
        assert_eq!(t10.input_vlan(20), None);
        assert_eq!(t10.input_vlan(0), None);
        let t0 = VlanMode::Trunk {
            trunks: set(&[0, 10]),
        };
        assert_eq!(t0.input_vlan(0), Some(0));

        for native in [
            VlanMode::NativeUntagged {
                tag: 10,
                trunks: set(&[20]),
            },
            VlanMode::NativeTagged {
                tag: 10,
                trunks: set(&[20]),
            },
        ] {
            assert_eq!(native.input_vlan(0), Some(10));
            assert_eq!(
                native.input_vlan(10),
                Some(10),
                "native VLAN always trunked"
            );
            assert_eq!(native.input_vlan(20), Some(20));
            assert_eq!(native.input_vlan(30), None);
        }
    }

    #[test]
    fn carries_and_output_tags() {
        let pcp = 5 << 13;
        let access = VlanMode::Access { tag: 10 };
        assert!(access.carries(10) && !access.carries(0) && !access.carries(20));
        assert_eq!(access.output_tci(10, pcp), None);

        let all = VlanMode::default();
        assert!(all.carries(0) && all.carries(10));
        assert_eq!(all.output_tci(10, pcp), Some(pcp | 10));
        assert_eq!(all.output_tci(10, 0), Some(10));
        // VLAN 0: untagged, unless the PCP needs a priority tag.
        assert_eq!(all.output_tci(0, 0), None);
        assert_eq!(all.output_tci(0, pcp), Some(pcp));

        let nu = VlanMode::NativeUntagged {
            tag: 10,
            trunks: None,
        };
        assert!(nu.carries(10) && nu.carries(20) && !nu.carries(0));
        assert_eq!(nu.output_tci(10, pcp), None);
        assert_eq!(nu.output_tci(20, pcp), Some(pcp | 20));

        let nt = VlanMode::NativeTagged {
            tag: 10,
            trunks: set(&[0, 20]),
        };
        assert!(nt.carries(10) && nt.carries(20) && !nt.carries(0) && !nt.carries(30));
        assert_eq!(nt.output_tci(10, 0), Some(10));
    }

    #[test]
    fn reserved_addresses_are_ovs_list() {
        for last in 0..=0x0f {
            assert!(is_reserved_mac(&[0x01, 0x80, 0xc2, 0, 0, last]));
        }
        assert!(!is_reserved_mac(&[0x01, 0x80, 0xc2, 0, 0, 0x10]));
        assert!(!is_reserved_mac(&[0x01, 0x80, 0xc2, 0, 0, 0x21]));
        assert!(is_reserved_mac(&[0x01, 0x00, 0x0c, 0xcc, 0xcc, 0xcc]));
        assert!(is_reserved_mac(&[0x01, 0x00, 0x0c, 0xcc, 0xcc, 0xcd]));
        assert!(is_reserved_mac(&[0x01, 0x00, 0x0c, 0xcd, 0xcd, 0xcd]));
        assert!(is_reserved_mac(&[0x01, 0x00, 0x0c, 0x00, 0x00, 0x00]));
        assert!(is_reserved_mac(&[0x01, 0x00, 0x0c, 0xcc, 0xcc, 0xc7]));
        assert!(!is_reserved_mac(&[0x01, 0x00, 0x0c, 0xcc, 0xcc, 0xc8]));
        assert!(is_reserved_mac(&[0x00, 0xe0, 0x2b, 0, 0, 0x04]));
        assert!(!is_reserved_mac(&[0x00, 0xe0, 0x2b, 0, 0, 0x05]));
        assert!(!is_reserved_mac(&[0xff; 6]));
        assert!(!is_reserved_mac(&A));
    }

    #[test]
    fn learn_reports_new_move_refresh_and_ignores_groups() {
        let mut t = MacTable::new();
        assert_eq!(t.generation(), 0);
        assert_eq!(t.learn(0, A, 1, 1000), Learned::New);
        assert_eq!(t.generation(), 1);
        assert_eq!(t.learn(0, A, 1, 2000), Learned::Refreshed);
        assert_eq!(t.generation(), 1, "a refresh changes no decision");
        assert_eq!(t.get(0, &A).map(|e| e.used_ms), Some(2000));
        assert_eq!(t.learn(0, A, 2, 3000), Learned::Moved { from: 1 });
        assert_eq!(t.generation(), 2);
        assert_eq!(t.lookup(0, &A), Some(2));
        // Per VLAN: the same MAC in VLAN 10 is another entry.
        assert_eq!(t.learn(10, A, 3, 3000), Learned::New);
        assert_eq!(t.lookup(10, &A), Some(3));
        assert_eq!(t.lookup(20, &A), None);
        assert_eq!(t.learn(0, [0xff; 6], 1, 0), Learned::Ignored);
        assert_eq!(t.learn(0, [0x01, 0, 0x5e, 0, 0, 1], 1, 0), Learned::Ignored);
        assert_eq!(t.lookup(0, &[0xff; 6]), None);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.stats(),
            MacStats {
                learned: 2,
                moved: 1,
                ..MacStats::default()
            }
        );
    }

    #[test]
    fn entries_age_out_after_the_aging_time() {
        let mut t = MacTable::new();
        t.learn(0, A, 1, 1_000);
        t.learn(0, B, 2, 100_000);
        t.learn(0, A, 1, 200_000); // refresh: A is now the younger
        let g = t.generation();
        assert_eq!(t.expire(399_999), 0);
        assert_eq!(t.expire(400_000), 1, "B: last seen 100 s, aged at 400 s");
        assert_eq!(t.lookup(0, &B), None);
        assert_eq!(t.generation(), g + 1);
        assert_eq!(t.expire(499_999), 0);
        // A clock that steps back does not age anything more (or less).
        assert_eq!(t.expire(10), 0);
        assert_eq!(t.expire(500_000), 1);
        assert!(t.is_empty());
        assert_eq!(t.stats().expired, 2);

        assert_eq!(t.set_aging_secs(1), MAC_MIN_AGING_SECS);
        assert_eq!(t.set_aging_secs(100_000), MAC_MAX_AGING_SECS);
        assert_eq!(t.set_aging_secs(60), 60);
        t.learn(0, C, 1, 1_000_000);
        assert_eq!(t.expire(1_059_999), 0);
        assert_eq!(t.expire(1_060_000), 1);
    }

    #[test]
    fn a_full_table_evicts_from_the_port_with_most_entries() {
        let mut t = MacTable::new();
        assert_eq!(t.set_max_entries(3), MAC_MIN_MAX);
        assert_eq!(t.set_max_entries(2_000_000), MAC_MAX_MAX);
        t.set_max_entries(10);
        // Port 1 holds 7 entries, port 2 holds 3; port 2's are the oldest.
        for i in 0..3 {
            t.learn(0, mac(100 + i), 2, 0);
        }
        for i in 0..7 {
            t.learn(0, mac(i), 1, 0);
        }
        assert_eq!(t.len(), 10);
        // A new MAC on port 2 evicts port 1's least recently used, not port
        // 2's older entries.
        t.learn(0, mac(200), 2, 0);
        assert_eq!(t.len(), 10);
        assert_eq!(t.lookup(0, &mac(0)), None);
        assert!((100..103).all(|i| t.lookup(0, &mac(i)) == Some(2)));
        // Refreshing mac(1) makes mac(2) port 1's least recently used.
        t.learn(0, mac(1), 1, 0);
        t.learn(0, mac(201), 3, 0);
        assert_eq!(t.lookup(0, &mac(2)), None);
        assert_eq!(t.lookup(0, &mac(1)), Some(1));
        // Ports 1 and 2 now hold 5 and 4... evict until they tie at 4: the port
        // whose oldest entry is oldest loses it (port 2's mac(100)).
        t.learn(0, mac(202), 3, 0);
        assert_eq!(t.lookup(0, &mac(3)), None, "port 1 had 5");
        t.learn(0, mac(203), 3, 0);
        assert_eq!(t.lookup(0, &mac(100)), None, "tie at 4: the oldest entry");
        assert_eq!(t.stats().evicted, 4);
        assert_eq!(t.len(), 10);

        // Shrinking evicts fairly too.
        let g = t.generation();
        t.set_max_entries(MAC_MIN_MAX);
        assert_eq!(t.len(), 10);
        assert_eq!(t.generation(), g);
    }

    #[test]
    fn flushes_count_and_move_the_generation() {
        let mut t = MacTable::new();
        assert_eq!(t.flush(), 0);
        assert_eq!(t.generation(), 0);
        t.learn(0, A, 1, 0);
        t.learn(10, A, 1, 0);
        t.learn(0, B, 2, 0);
        let g = t.generation();
        assert_eq!(t.flush_port(3), 0);
        assert_eq!(t.generation(), g);
        assert_eq!(t.flush_port(1), 2);
        assert_eq!(t.generation(), g + 2);
        assert_eq!(t.lookup(0, &B), Some(2));
        assert_eq!(t.flush(), 1);
        assert!(t.is_empty());
        assert_eq!(t.generation(), g + 3);
        // The structures are consistent after flushes: learning works as new.
        assert_eq!(t.learn(0, A, 1, 0), Learned::New);
        assert_eq!(t.entries().count(), 1);
    }

    #[test]
    fn fdb_show_prints_like_ovs_appctl() {
        let mut t = MacTable::new();
        t.learn(0, A, 1, 1_000);
        t.learn(10, B, 12, 5_000);
        t.learn(1234, C, OFPP_LOCAL, 65_000);
        let name = |p: u32| {
            if p == OFPP_LOCAL {
                "LOCAL".to_string()
            } else {
                p.to_string()
            }
        };
        assert_eq!(
            t.format_fdb_show(65_500, name),
            " port  VLAN  MAC                Age\n\
             \x20   1     0  00:00:00:00:00:0a   64\n\
             \x20  12    10  00:00:00:00:00:0b   60\n\
             LOCAL  1234  00:00:00:00:00:0c    0\n"
        );
        assert_eq!(
            MacTable::new().format_fdb_show(0, name),
            " port  VLAN  MAC                Age\n"
        );
    }

    #[test]
    fn static_entries_stay_put() {
        let mut t = MacTable::new();
        t.set_aging_secs(15);
        t.learn(0, A, 1, 0);
        let g = t.generation();
        // A static entry replaces the learned one (and moves it).
        assert_eq!(t.add_static(0, A, 2, 0), Ok(true));
        assert_eq!(t.lookup(0, &A), Some(2));
        assert!(t.generation() > g);
        // The same again changes nothing.
        let g = t.generation();
        assert_eq!(t.add_static(0, A, 2, 0), Ok(false));
        assert_eq!(t.generation(), g);
        // Frames do not move it, ageing and eviction leave it.
        assert_eq!(t.learn(0, A, 1, 1_000), Learned::Static);
        assert_eq!(t.lookup(0, &A), Some(2));
        t.learn(0, B, 1, 1_000);
        assert_eq!(t.expire(1_000_000), 1);
        assert_eq!(t.lookup(0, &A), Some(2));
        assert_eq!(t.lookup(0, &B), None);
        t.set_max_entries(10);
        for i in 0..30 {
            t.learn(0, mac(100 + i), 3, 1_000_000);
        }
        assert_eq!(t.lookup(0, &A), Some(2));
        assert_eq!(t.len(), 11, "10 learned and the static one");
        // Other VLANs are other entries.
        assert_eq!(t.lookup(5, &A), None);
        assert_eq!(t.get(0, &A).map(|e| e.is_static), Some(true));
        // Refused: group addresses, VLANs beyond 4095.
        assert!(t.add_static(0, [0xff; 6], 2, 0).is_err());
        assert!(t.add_static(4096, B, 2, 0).is_err());
        // del_static removes only static entries.
        assert!(!t.del_static(0, &mac(100 + 29)));
        let g = t.generation();
        assert!(t.del_static(0, &A));
        assert!(t.generation() > g);
        assert_eq!(t.lookup(0, &A), None);
        assert_eq!(t.learn(0, A, 1, 1_000_000), Learned::New);
        // A port's removal and a flush take static entries too.
        t.add_static(0, C, 4, 0).unwrap();
        assert_eq!(t.flush_port(4), 1);
        assert_eq!(t.lookup(0, &C), None);
        t.add_static(0, C, 4, 0).unwrap();
        assert_eq!(t.flush(), 11, "10 learned (the limit) and the static one");
        assert!(t.is_empty());
    }

    #[test]
    fn fdb_show_prints_static_entries_as_ovs() {
        let mut t = MacTable::new();
        t.learn(0, A, 1, 1_000);
        t.add_static(10, B, 2, 2_000).unwrap();
        assert_eq!(
            t.format_fdb_show(5_000, |p| p.to_string()),
            " port  VLAN  MAC                Age\n\
             \x20   1     0  00:00:00:00:00:0a    4\n\
             \x20   2    10  00:00:00:00:00:0b  static\n"
        );
    }

    #[test]
    fn learning_source_is_what_the_hook_learns() {
        let mut n = Normal::new();
        n.set_port(1, VlanMode::Access { tag: 10 }).unwrap();
        let mut k = FlowKey {
            in_port: 1,
            dl_src: A,
            dl_dst: [0xff; 6],
            dl_type: 0x0800,
            ..FlowKey::default()
        };
        let src = n.learning_source(&k, &[1, 2]).unwrap();
        assert_eq!(
            src,
            MacSource {
                vlan: 10,
                mac: A,
                port: 1
            }
        );
        let mut wc = FlowKey::default();
        n.hook(5_000).normal(&k, &mut wc, &[1, 2]);
        assert_eq!(n.macs().get(10, &A).map(|e| e.port), Some(1));
        // Refreshing moves the entry's age, not the generation.
        let g = n.macs().generation();
        assert_eq!(n.refresh(&src, 9_000), Learned::Refreshed);
        assert_eq!(n.macs().get(10, &A).map(|e| e.used_ms), Some(9_000));
        assert_eq!(n.macs().generation(), g);
        // A flushed entry comes back.
        n.macs_mut().flush();
        assert_eq!(n.refresh(&src, 9_500), Learned::New);
        // Not once the port no longer carries the VLAN.
        n.set_port(1, VlanMode::Access { tag: 20 }).unwrap();
        assert_eq!(n.refresh(&src, 10_000), Learned::Ignored);
        assert!(n.macs().is_empty());

        // Frames NORMAL drops before learning teach nothing.
        assert_eq!(n.learning_source(&k, &[2]), None, "no input bundle");
        k.vlan_tci[0] = VLAN_CFI | 30;
        assert_eq!(n.learning_source(&k, &[1, 2]), None, "VID refused");
        k.vlan_tci[0] = 0;
        k.dl_dst = [0x01, 0x80, 0xc2, 0, 0, 0];
        assert_eq!(n.learning_source(&k, &[1, 2]), None, "reserved");
        k.dl_dst = B;
        k.dl_src = [0xff; 6];
        assert_eq!(n.learning_source(&k, &[1, 2]), None, "group source");
    }

    #[test]
    fn set_port_flushes_the_port_only_when_its_mode_changes() {
        let mut n = Normal::new();
        n.macs_mut().learn(0, A, 1, 0);
        n.macs_mut().learn(0, B, 2, 0);
        n.set_port(1, VlanMode::default()).unwrap();
        assert_eq!(n.macs().len(), 2);
        n.set_port(1, VlanMode::Access { tag: 10 }).unwrap();
        assert_eq!(n.macs().lookup(0, &A), None);
        assert_eq!(n.macs().lookup(0, &B), Some(2));
        assert_eq!(n.port_mode(1), &VlanMode::Access { tag: 10 });
        assert_eq!(
            n.set_port(1, VlanMode::Access { tag: 4096 }),
            Err(VlanError::BadVid(4096))
        );
        assert_eq!(n.port_mode(1), &VlanMode::Access { tag: 10 });
        n.remove_port(2);
        assert!(n.macs().is_empty());
        n.remove_port(1);
        assert_eq!(n.port_mode(1), &VlanMode::default());
    }
}
