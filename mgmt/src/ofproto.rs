//! The slow path: each bridge's OpenFlow tables, upcall handling, revalidation.
//!
//! An upcall (a packet no PMD megaflow matched) is translated through its bridge's
//! tables (`pipeline::ofproto::xlate`); the result becomes a megaflow (mask, masked
//! key, datapath actions) installed in the PMD that missed, with the packet riding
//! along to be executed there. Every installed megaflow is remembered here (OVS's
//! udpif) with the rules its translation hit, so that:
//! - its packet and byte counts, read from the PMD's per-megaflow counters, are
//!   credited to those rules (`n_packets`, `n_bytes`, `idle_age`);
//! - when rules change (add, delete, learn, expiry) every megaflow is re-translated
//!   from its masked key: kept if nothing changed, updated in place if only the
//!   actions changed, removed if the new translation needs key bits the old mask
//!   did not cover (the next packet upcalls again). Packets of unaffected megaflows
//!   keep flowing in the PMDs throughout;
//! - megaflows idle for `idle_ms` are removed, and beyond `flow_limit` the least
//!   recently active go first.
//!
//! `NORMAL` (OVS's learning switch) is each bridge's [`Normal`]: an upcall's
//! translation learns its source MAC ([`Normal::hook`]); revalidation and traces
//! decide without learning ([`Normal::trace_hook`]). Its decisions depend on the
//! MAC table, which megaflow keys do not show, so as in OVS:
//! - whenever a bridge's [`MacTable::generation`] moves (a MAC learned, moved,
//!   aged out, evicted or flushed), the megaflows of that bridge whose translation
//!   reached `NORMAL` are revalidated: a flood becomes a unicast once the
//!   destination is learned, a unicast follows a moved MAC and floods again once
//!   it ages out. Upcalls handled in one batch are revalidated together at its
//!   end ([`Ofproto::revalidate_pending`]), before the slow path's lock is released;
//! - the MAC table ages ([`MacTable::expire`]) in [`Ofproto::run_periodic`];
//! - a megaflow whose counters moved since the last period learns its source MAC
//!   again (the [`MacSource`] its translation recorded, OVS's `XC_NORMAL` xlate
//!   cache entry), so hosts whose frames the datapath forwards without upcalls
//!   stay in the table, and a host that comes back to a port whose megaflow still
//!   exists is moved back. When one MAC is active on several ports in a period,
//!   the megaflow used last (the PMD's timestamp) wins.
//!
//! Patch ports (OVS `type=patch`) join bridges inside the slow path only: a
//! translation starts in the bridge of the upcall's input port and may cross
//! into others (`pipeline::ofproto::xlate::translate_bridges`), so one megaflow
//! covers the whole path. Its rules are remembered with their bridge, and it
//! depends on the MAC table of every bridge whose `NORMAL` it reached; rule
//! changes revalidate every megaflow, whatever bridge it entered on.
//!
//! Tunnel ports (`vxlan`, `gre`, `geneve`) are OpenFlow ports without a device
//! ([`Bridge::tunnels`]); native tunneling asks the route and neighbor tables
//! given by [`Ofproto::set_tunnel_env`] (lock order: this slow path first, then
//! the environment):
//! - an upcall on a tunnel's shared datapath port is mapped to its OpenFlow
//!   tunnel port by the tunnel metadata (`tnl::receive`, OVS's
//!   `tnl_port_receive`); none: a counted drop megaflow;
//! - translations push and pop (`pipeline::ofproto::xlate`); megaflows whose
//!   translation consulted the environment are revalidated when its
//!   generation moves, those waiting for a neighbor every period;
//! - the ARP requests the environment queues are sent as packet-outs from the
//!   route's internal port after each batch and period
//!   ([`Ofproto::revalidate_pending`]).
//!
//! A new bridge holds OVS's default flow, `priority=0 actions=NORMAL`
//! ([`DEFAULT_FLOW`]); flows added with the same match and priority replace it
//! and `del-flows` removes it, as in OVS.
//!
//! The datapath is reached through [`DpControl`], generic over the packet type, so
//! this module runs without DPDK in tests. Datapath port numbers (`odp`) are the
//! datapath's; OpenFlow port numbers are per bridge, as in OVS.
//!
//! Thread safety: one [`Ofproto`] behind a mutex, shared by the upcall handler, the
//! revalidator and the control socket; none of them is a PMD.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use pipeline::actions::{format_dp_actions, DpAction};
use pipeline::flow_cache::FlowStats;
use pipeline::ofproto::action::{Action, RESERVED_PORT_NAMES};
use pipeline::ofproto::bond::{Bond, BondMode};
use pipeline::ofproto::flow_match::Match;
use pipeline::ofproto::lacp::{Lacp, ETH_TYPE_SLOW, LACP_DST};
use pipeline::ofproto::normal::{MacSource, MacTable, Normal, NormalXlate, VlanMode};
use pipeline::ofproto::rule::{FlowMod, OFP_DEFAULT_PRIORITY};
use pipeline::ofproto::syntax::{
    format_dump_line, format_match, parse_flow, parse_flow_filter, parse_flows, FilterMode,
    FormatOptions, PortMap,
};
use pipeline::ofproto::table::{LearnOutcome, RuleId, Tables};
use pipeline::ofproto::tnl::{self, TunnelPortConfig, XlateTunnel};
use pipeline::ofproto::xlate::{
    format_trace_named, translate_bridges, translate_bridges_with, BridgesOptions, NormalDecision,
    NormalHook, PatchPeer, TnlRoute, Translation, TunnelEnv, XlateBridge,
};
use pipeline::tun_metadata::{
    check_flow, flow_uses, format_map, parse_mappings, TlvMap, TlvMapping,
};
use pipeline::tunnel::TunnelKind;
use pipeline::FlowKey;

use crate::config::{BridgeConfig, Config, LacpMode};

/// A bond's LACP system MAC: locally administered, from the bridge and bond
/// names (stable across restarts, different per bond).
fn lacp_system_id(bridge: &str, bond: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bridge.bytes().chain([0]).chain(bond.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    // Locally administered unicast; the last byte leaves room for the members'
    // source MACs (system + 1 + index).
    [0x02, b[1], b[2], b[3], b[4], 0x00]
}

/// What the slow path needs of the datapath.
pub trait DpControl: Send {
    /// A packet, as the datapath hands it over in an upcall.
    type Packet: Send;
    /// Installs (or replaces) a megaflow in PMD `pmd`; `packet` is then executed
    /// with it there.
    fn install(
        &self,
        pmd: usize,
        mask: &FlowKey,
        key: &FlowKey,
        actions: Vec<DpAction>,
        stats: Arc<FlowStats>,
        packet: Option<Self::Packet>,
    );
    /// Removes a megaflow from PMD `pmd`.
    fn remove(&self, pmd: usize, mask: &FlowKey, key: &FlowKey);
    /// Returns once every PMD has applied what was sent to it before and
    /// published its megaflow counters (bounded wait). Default: nothing to wait
    /// for.
    fn barrier(&self) {}
    /// Has every PMD decode Geneve options with `map` (OVS's TLV table).
    /// Default: a datapath that pops nothing needs no map.
    fn set_tlv_map(&self, _map: TlvMap) {}
    /// Whether datapath port `odp`'s link (carrier) is up, `None` when the
    /// datapath cannot tell (bonds then take it as up). Default: `None`.
    fn link_up(&self, _odp: usize) -> Option<bool> {
        None
    }
    /// The bytes of an upcalled packet, for the frames the slow path consumes
    /// itself (LACPDUs). Default: none.
    fn packet_data(&self, _packet: &Self::Packet) -> Vec<u8> {
        Vec::new()
    }
    /// Sends `frame` as it is out of datapath port `odp` (LACPDUs). Default:
    /// nothing is sent.
    fn send(&self, _odp: usize, _frame: &[u8]) {}
    /// Runs datapath `actions` on `frame` (a packet-out: the ARP requests of
    /// native tunneling). Default: each `Output` of the top-level list sends
    /// the frame as it is ([`DpControl::send`]).
    fn execute(&self, frame: &[u8], actions: &[DpAction]) {
        for a in actions {
            if let DpAction::Output(odp) = a {
                self.send(*odp as usize, frame);
            }
        }
    }
}

/// The tunnel environment the slow path translates with: the route and
/// neighbor tables (`TunnelEnv`), shared with whoever maintains them. Lock
/// order: the slow path ([`Ofproto`]) first, then this.
pub type SharedTunnelEnv = Arc<Mutex<dyn TunnelEnv + Send>>;

fn lock_env(env: &SharedTunnelEnv) -> MutexGuard<'_, dyn TunnelEnv + Send + 'static> {
    env.lock().unwrap_or_else(|e| e.into_inner())
}

/// The bridge index of a megaflow that reached no bridge: a packet a tunnel
/// delivered for which no tunnel port matches.
const NO_BRIDGE: usize = usize::MAX;

/// A port of a bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgePort {
    pub name: String,
    pub ofport: u32,
    /// Datapath port number.
    pub odp: usize,
}

/// A patch port of a bridge (OVS `type=patch`): an OpenFlow port with no
/// datapath port; what is output to it enters the bridge that has the port
/// named `peer`, in the same translation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchPort {
    pub name: String,
    pub ofport: u32,
    /// The peer patch port's name (in another bridge).
    pub peer: String,
}

/// The flow OVS installs in a new bridge (`connmgr`'s fail-open flow in the
/// default `standalone` fail mode, with no controller): a plain learning switch.
pub const DEFAULT_FLOW: &str = "priority=0 actions=NORMAL";

/// [`DEFAULT_FLOW`] as a flow mod.
pub fn default_flow() -> FlowMod {
    FlowMod {
        priority: 0,
        actions: vec![Action::Normal],
        ..FlowMod::default()
    }
}

/// One bridge: its ports, OpenFlow tables and learning switch.
pub struct Bridge {
    pub name: String,
    pub ports: Vec<BridgePort>,
    pub tables: Tables,
    pub portmap: PortMap,
    /// The learning switch behind `NORMAL`: port VLAN modes and the MAC table.
    pub normal: Normal,
    /// Its patch ports ([`Bridge::add_patch`]); their peers are found by name
    /// when the slow path starts ([`Ofproto::new`]).
    pub patches: Vec<PatchPort>,
    /// `patches` resolved: peer bridge index and OpenFlow port.
    patch_peers: Vec<PatchPeer>,
    /// Its tunnel ports ([`Bridge::add_tunnel`]).
    pub tunnels: Vec<XlateTunnel>,
    /// The names of its `type=internal` ports (its own port, `LOCAL`, is
    /// internal too): routes leave by them, tunnels end there.
    internal: Vec<String>,
    /// The MAC table generation the bridge's megaflows were last revalidated at.
    mac_generation: u64,
    /// Each bond's LACP (`None` with `lacp=off`), in `normal.bonds()` order.
    lacp: Vec<Option<Lacp>>,
    /// The bonds' generation the bridge's megaflows were last revalidated at.
    bond_generation: u64,
}

impl Bridge {
    /// A bridge with `ports` (all trunks of every VLAN), OVS's default MAC table
    /// and its default flow ([`DEFAULT_FLOW`]) in table 0.
    pub fn new(name: &str, ports: Vec<BridgePort>) -> Bridge {
        let mut portmap = PortMap::new();
        for p in &ports {
            portmap.insert(p.name.clone(), p.ofport);
        }
        let mut tables = Tables::new();
        // A catch-all match with a valid action: nothing for `add` to refuse
        // (`default_flow_is_priority_0_normal` checks it).
        let _ = tables.add(default_flow(), 0);
        Bridge {
            name: name.to_string(),
            ports,
            tables,
            portmap,
            normal: Normal::new(),
            patches: Vec::new(),
            patch_peers: Vec::new(),
            tunnels: Vec::new(),
            internal: Vec::new(),
            mac_generation: 0,
            lacp: Vec::new(),
            bond_generation: 0,
        }
    }

    /// Adds a patch port `name` with OpenFlow number `ofport` whose peer is the
    /// patch port `peer` of another bridge (all patch ports must be added
    /// before [`Ofproto::new`], which joins them).
    pub fn add_patch(&mut self, name: &str, ofport: u32, peer: &str) {
        self.portmap.insert(name.to_string(), ofport);
        self.patches.push(PatchPort {
            name: name.to_string(),
            ofport,
            peer: peer.to_string(),
        });
    }

    /// Adds tunnel port `name` with OpenFlow number `ofport`, sharing datapath
    /// port `odp` (its kind's and UDP port's) with the tunnels like it.
    pub fn add_tunnel(&mut self, name: &str, ofport: u32, odp: usize, config: TunnelPortConfig) {
        self.portmap.insert(name.to_string(), ofport);
        self.tunnels.push(XlateTunnel {
            name: name.to_string(),
            ofport,
            odp: odp as u32,
            config,
        });
    }

    /// Marks port `name` as `type=internal` (a host interface that may have
    /// an address: a tunnel endpoint, a route's port).
    pub fn mark_internal(&mut self, name: &str) {
        if !self.internal.iter().any(|n| n == name) {
            self.internal.push(name.to_string());
        }
    }

    /// Makes the ports named `members` (at least one) bond `name`: `NORMAL`
    /// learns and floods on the bundle and sends by `mode`; `lacp` is `None`
    /// for `lacp=off`, else (active, fast). The members start disabled until
    /// the next [`Ofproto::run_periodic`] sees their links (and LACP).
    pub fn add_bond(
        &mut self,
        name: &str,
        members: &[&str],
        mode: BondMode,
        lacp: Option<(bool, bool)>,
    ) -> Result<(), String> {
        let mut ms = Vec::new();
        for m in members {
            let ofport = self
                .portmap
                .number(m)
                .ok_or_else(|| format!("bond {name:?}: no port named {m:?}"))?;
            ms.push((m.to_string(), ofport));
        }
        if ms.is_empty() {
            return Err(format!("bond {name:?}: no members"));
        }
        let l = lacp.map(|(active, fast)| {
            Lacp::new(
                name,
                ms.clone(),
                active,
                fast,
                lacp_system_id(&self.name, name),
            )
        });
        self.normal
            .add_bond(Bond::new(name, mode, ms, lacp.is_some()))
            .map_err(|e| format!("bond {name:?}: {e}"))?;
        self.lacp.push(l);
        Ok(())
    }

    /// Sets the VLAN mode of the port named `port` (OVS `tag`, `trunks`,
    /// `vlan_mode`); its learned MACs are forgotten when the mode changes. Meant
    /// for a bridge being built: the slow path has no runtime port
    /// reconfiguration yet, which would have to revalidate every megaflow.
    pub fn set_vlan_mode(&mut self, port: &str, mode: VlanMode) -> Result<(), String> {
        let ofport = self
            .portmap
            .number(port)
            .ok_or_else(|| format!("bridge {:?}: no port named {port:?}", self.name))?;
        self.normal
            .set_port(ofport, mode)
            .map_err(|e| format!("port {port:?}: {e}"))
    }

    /// How `fdb-show` names a port: its OpenFlow number, or `LOCAL` (OVS prints
    /// `ofputil_port_to_string` without a port map).
    fn fdb_port_name(port: u32) -> String {
        RESERVED_PORT_NAMES
            .iter()
            .find(|(n, _)| *n == port)
            .map_or_else(|| port.to_string(), |(_, name)| (*name).to_string())
    }

    /// The datapath port of OpenFlow port `ofport` (none for a patch or
    /// tunnel port).
    fn odp_of(&self, ofport: u32) -> Option<usize> {
        self.ports
            .iter()
            .find(|p| p.ofport == ofport)
            .map(|p| p.odp)
    }

    /// Every OpenFlow port: the datapath ports in order, the tunnel ports,
    /// then the patch ports (`NORMAL` floods in this order).
    fn ofports(&self) -> Vec<u32> {
        self.ports
            .iter()
            .map(|p| p.ofport)
            .chain(self.tunnels.iter().map(|t| t.ofport))
            .chain(self.patches.iter().map(|p| p.ofport))
            .collect()
    }

    /// `(OpenFlow port, datapath port)` of every datapath port.
    fn odp_map(&self) -> Vec<(u32, u32)> {
        self.ports
            .iter()
            .map(|p| (p.ofport, p.odp as u32))
            .collect()
    }
}

/// Slow-path settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfprotoConfig {
    /// A megaflow with no packets for this long is removed (OVS: 10 s).
    pub idle_ms: u64,
    /// Most megaflows kept (OVS: 200,000); the least recently active go first.
    pub flow_limit: usize,
}

impl Default for OfprotoConfig {
    fn default() -> Self {
        OfprotoConfig {
            idle_ms: 10_000,
            flow_limit: 200_000,
        }
    }
}

/// One installed megaflow, as the slow path remembers it.
struct UFlow {
    pmd: usize,
    bridge: usize,
    mask: FlowKey,
    /// Masked; `in_port` is the datapath port.
    key: FlowKey,
    actions: Vec<DpAction>,
    /// The rules hit, each with its bridge (patch ports lead to others).
    rules: Vec<(usize, RuleId)>,
    /// The bridges whose `NORMAL` its translation reached: it depends on their
    /// MAC tables.
    normal: Vec<usize>,
    /// What `NORMAL` learned from it (bridge, source), learned again while it
    /// is used.
    mac_sources: Vec<(usize, MacSource)>,
    /// Its translation consulted the tunnel environment (routes, neighbors,
    /// addresses): revalidated when the environment's generation moves.
    tunnel: bool,
    /// Its translation met a neighbor miss: revalidated every period (which
    /// asks for the neighbor again, the environment rate-limiting the ARP
    /// requests) until the neighbor is known.
    tnl_pending: bool,
    /// The ARP senders its translation snooped (bridge, IP, MAC): taught to
    /// the neighbor cache again each period it has packets (OVS's
    /// `XC_TNL_NEIGH`), so a neighbor flushed or aged out is learned back from
    /// the ARP replies this megaflow handles without an upcall.
    snoops: Vec<(String, u32, [u8; 6])>,
    stats: Arc<FlowStats>,
    seen_packets: u64,
    seen_bytes: u64,
    active_ms: u64,
}

type UFlowId = (
    usize,
    [u64; pipeline::FLOW_KEY_WORDS],
    [u64; pipeline::FLOW_KEY_WORDS],
);

/// The megaflows the slow path remembers, by (PMD, mask, masked key).
///
/// Megaflows live in a slab; the hash index holds only slab positions (4 bytes),
/// so growing it moves 4-byte entries and reuses stored hashes instead of moving
/// and rehashing 1 KiB entries (`perf upcall`: a fifth of the upcall handler's
/// time at 100k megaflows went to rehashing a map of whole megaflows).
#[derive(Default)]
struct UFlowMap {
    slab: Vec<Option<UFlow>>,
    hashes: Vec<u64>,
    free: Vec<u32>,
    index: hashbrown::HashTable<u32>,
}

fn uflow_id(f: &UFlow) -> UFlowId {
    (f.pmd, *f.mask.words(), *f.key.words())
}

fn uflow_hash(id: &UFlowId) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = pipeline::hash::WordHasher::default();
    id.hash(&mut h);
    h.finish()
}

impl UFlowMap {
    fn len(&self) -> usize {
        self.slab.len() - self.free.len()
    }

    fn find(&self, id: &UFlowId) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(
                uflow_hash(id),
                |&i| matches!(slab.get(i as usize), Some(Some(f)) if uflow_id(f) == *id),
            )
            .copied()
    }

    /// Inserts `f` under `id` (which must be `f`'s own); returns the megaflow it
    /// replaces.
    fn insert(&mut self, id: UFlowId, f: UFlow) -> Option<UFlow> {
        debug_assert!(uflow_id(&f) == id);
        if let Some(i) = self.find(&id) {
            return self.slab.get_mut(i as usize).and_then(|s| s.replace(f));
        }
        let h = uflow_hash(&id);
        let i = match self.free.pop() {
            Some(i) => {
                if let (Some(s), Some(sh)) = (
                    self.slab.get_mut(i as usize),
                    self.hashes.get_mut(i as usize),
                ) {
                    *s = Some(f);
                    *sh = h;
                }
                i
            }
            None => {
                self.slab.push(Some(f));
                self.hashes.push(h);
                (self.slab.len() - 1) as u32
            }
        };
        let hashes = &self.hashes;
        self.index.insert_unique(h, i, |&j| {
            hashes.get(j as usize).copied().unwrap_or_default()
        });
        None
    }

    fn get(&self, id: &UFlowId) -> Option<&UFlow> {
        let i = self.find(id)?;
        self.slab.get(i as usize)?.as_ref()
    }

    fn get_mut(&mut self, id: &UFlowId) -> Option<&mut UFlow> {
        let i = self.find(id)?;
        self.slab.get_mut(i as usize)?.as_mut()
    }

    fn remove(&mut self, id: &UFlowId) -> Option<UFlow> {
        let slab = &self.slab;
        let entry = self
            .index
            .find_entry(
                uflow_hash(id),
                |&i| matches!(slab.get(i as usize), Some(Some(f)) if uflow_id(f) == *id),
            )
            .ok()?;
        let (i, _) = entry.remove();
        let f = self.slab.get_mut(i as usize)?.take();
        self.free.push(i);
        f
    }

    fn values(&self) -> impl Iterator<Item = &UFlow> + '_ {
        self.slab.iter().flatten()
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut UFlow> + '_ {
        self.slab.iter_mut().flatten()
    }

    fn iter(&self) -> impl Iterator<Item = (UFlowId, &UFlow)> + '_ {
        self.values().map(|f| (uflow_id(f), f))
    }
}

/// Slow-path counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OfprotoStats {
    pub upcalls: u64,
    /// Upcalls whose input port belongs to no bridge (dropped).
    pub upcalls_no_bridge: u64,
    pub megaflows_installed: u64,
    pub megaflows_updated: u64,
    pub megaflows_removed: u64,
    pub revalidations: u64,
    /// Revalidations of a bridge's `NORMAL` megaflows after its MAC table changed.
    pub mac_revalidations: u64,
    /// Revalidations of a bridge's `NORMAL` megaflows after a bond changed.
    pub bond_revalidations: u64,
    /// LACPDUs received on LACP bond members (consumed by the slow path).
    pub lacp_rx: u64,
    /// LACPDUs sent.
    pub lacp_tx: u64,
    pub xlate_errors: u64,
    /// Translations that encapsulated (`tnl_push`), one per push.
    pub tnl_push: u64,
    /// Translations that ended a tunnel (`tnl_pop`), one per pop.
    pub tnl_pop: u64,
    /// Tunnel outputs dropped for want of a route (or remote).
    pub tnl_no_route: u64,
    /// Tunnel outputs dropped for want of the next hop's MAC.
    pub tnl_neighbor_miss: u64,
    /// Tunnel outputs dropped: the outer header could not be built or the
    /// outer packet went nowhere.
    pub tnl_bad_header: u64,
    /// Upcalls from a tunnel datapath port that no tunnel port matched
    /// (remote, local address or key): a drop megaflow is installed.
    pub tnl_rx_no_port: u64,
    /// ARP requests sent for tunnel next hops.
    pub arp_requests: u64,
    /// ARP requests that could not be sent (their route's bridge or port is
    /// gone).
    pub arp_request_errors: u64,
    /// Revalidations of tunnel megaflows after the tunnel environment changed.
    pub tnl_revalidations: u64,
}

pub struct Ofproto<D: DpControl> {
    bridges: Vec<Bridge>,
    /// Datapath port -> (bridge index, OpenFlow port).
    odp: HashMap<usize, (usize, u32)>,
    flows: UFlowMap,
    dp: D,
    cfg: OfprotoConfig,
    start: Instant,
    /// Added to the clock: OVS's `time/warp`, for tests of timeouts and aging.
    warp_ms: u64,
    /// Tables changed since the last revalidation.
    dirty: bool,
    /// Native tunneling's route and neighbor tables (none: tunnel outputs
    /// have no route and nothing ends a tunnel).
    tunnel_env: Option<SharedTunnelEnv>,
    /// The environment's generation the tunnel megaflows were last
    /// revalidated at.
    tnl_generation: u64,
    /// The switch's TLV map (`add-tlv-map`): which Geneve option each
    /// `tun_metadataN` is, for translation and the PMDs' pops.
    tlv: TlvMap,
    pub stats: OfprotoStats,
}

/// Where an upcall's packet entered the OpenFlow world.
enum Ingress {
    /// OpenFlow port `ofport` of bridge `bridge`; `mask`: the key bits that
    /// decided it (the tunnel metadata for a tunnel port, else nothing).
    Port {
        bridge: usize,
        ofport: u32,
        mask: FlowKey,
    },
    /// A tunnel datapath port, but no tunnel port takes the packet; `mask`:
    /// the bits that decided it.
    NoTunnelPort(FlowKey),
    /// A datapath port of no bridge.
    Unknown,
}

/// Whether megaflow `f`'s translation went through bridge `bi` (its input
/// bridge, or one a patch port led to).
fn touches(f: &UFlow, bi: usize) -> bool {
    f.bridge == bi || f.rules.iter().any(|(b, _)| *b == bi) || f.normal.contains(&bi)
}

/// `inner` asks for no bit `outer` lacks.
fn mask_within(inner: &FlowKey, outer: &FlowKey) -> bool {
    inner
        .words()
        .iter()
        .zip(outer.words())
        .all(|(i, o)| i & !o == 0)
}

impl<D: DpControl> Ofproto<D> {
    /// The slow path over `bridges`; patch ports are joined to their peers by
    /// name ([`link_patches`]).
    pub fn new(mut bridges: Vec<Bridge>, dp: D, cfg: OfprotoConfig) -> Ofproto<D> {
        link_patches(&mut bridges);
        let mut odp = HashMap::new();
        for (bi, b) in bridges.iter().enumerate() {
            for p in &b.ports {
                odp.insert(p.odp, (bi, p.ofport));
            }
        }
        let mut o = Ofproto {
            bridges,
            odp,
            flows: UFlowMap::default(),
            dp,
            cfg,
            start: Instant::now(),
            warp_ms: 0,
            dirty: false,
            tunnel_env: None,
            tnl_generation: 0,
            tlv: TlvMap::default(),
            stats: OfprotoStats::default(),
        };
        // Bonds carry traffic from the start when their members' links are up
        // (and LACP sends its first LACPDUs).
        o.run_bonds();
        for b in &mut o.bridges {
            // No megaflow exists yet to revalidate.
            b.bond_generation = b.normal.bonds_generation();
        }
        o
    }

    /// Milliseconds since this slow path started (the tables' and MAC tables'
    /// clock), plus any [`Ofproto::warp`].
    pub fn now_ms(&self) -> u64 {
        (self.start.elapsed().as_millis() as u64).saturating_add(self.warp_ms)
    }

    /// Moves the clock `ms` forward (OVS `ovs-appctl time/warp`): rule timeouts,
    /// megaflow idle times and MAC ages see the time pass at the next
    /// [`Ofproto::run_periodic`].
    pub fn warp(&mut self, ms: u64) {
        self.warp_ms = self.warp_ms.saturating_add(ms);
    }

    pub fn bridges(&self) -> &[Bridge] {
        &self.bridges
    }

    /// Installed megaflows.
    pub fn n_megaflows(&self) -> usize {
        self.flows.len()
    }

    fn bridge_index(&self, name: &str) -> Result<usize, String> {
        self.bridges
            .iter()
            .position(|b| b.name == name)
            .ok_or_else(|| format!("no bridge named {name:?}"))
    }

    /// Gives the slow path native tunneling's route and neighbor tables:
    /// outputs to tunnel ports push through them, packets for a local
    /// endpoint pop, ARP to endpoints is snooped into them, and the ARP
    /// requests they queue are sent ([`Ofproto::revalidate_pending`]). Every
    /// megaflow is revalidated.
    pub fn set_tunnel_env(&mut self, env: SharedTunnelEnv) {
        self.tnl_generation = lock_env(&env).generation();
        self.tunnel_env = Some(env);
        self.revalidate();
    }

    /// Where `key` (datapath `in_port`) entered: the bridge port of its
    /// datapath port, or, for a tunnel's datapath port, the tunnel port its
    /// tunnel metadata selects (OVS's `tnl_port_receive`).
    fn ingress(&self, key: &FlowKey) -> Ingress {
        if let Some(&(bridge, ofport)) = self.odp.get(&(key.in_port as usize)) {
            return Ingress::Port {
                bridge,
                ofport,
                mask: FlowKey::default(),
            };
        }
        let tunnels = || {
            self.bridges
                .iter()
                .enumerate()
                .flat_map(|(bi, b)| b.tunnels.iter().map(move |t| ((bi, t.ofport), t)))
        };
        if !tunnels().any(|(_, t)| t.odp == key.in_port) {
            return Ingress::Unknown;
        }
        let mut mask = FlowKey::default();
        match tnl::receive(tunnels(), key, &mut mask) {
            Some((bridge, ofport)) => Ingress::Port {
                bridge,
                ofport,
                mask,
            },
            None => {
                mask.in_port = u32::MAX;
                mask.recirc_id = u32::MAX;
                Ingress::NoTunnelPort(mask)
            }
        }
    }

    /// Translates `key` (datapath `in_port`) on `bridge`, through patch ports
    /// into other bridges, learning (an upcall) or not (revalidation);
    /// outputs are datapath ports. `in_mask`: what deciding the input port
    /// read (a tunnel's metadata), joined to the mask.
    fn xlate(
        &mut self,
        bridge: usize,
        key: &FlowKey,
        ofport: u32,
        learn: bool,
        in_mask: &FlowKey,
    ) -> Option<Xlated> {
        let now = self.now_ms();
        let mut k = *key;
        k.in_port = ofport;
        let env = self.tunnel_env.clone();
        let mut guard = env.as_ref().map(lock_env);
        let env: Option<&mut dyn TunnelEnv> = match guard.as_deref_mut() {
            Some(e) => Some(e),
            None => None,
        };
        let (t, seen, ports) = translate_all(
            &mut self.bridges,
            bridge,
            &k,
            (learn, false),
            now,
            env,
            self.tlv,
        )?;
        drop(guard);
        let mut t = t;
        for (w, m) in t.mask.words_mut().iter_mut().zip(in_mask.words()) {
            *w |= m;
        }
        // Only a packet's translation learns (revalidation and traces do not,
        // as in OVS).
        if learn {
            for (fm, &bi) in t.learned.iter().zip(&t.learned_bridges) {
                let outcome = match self.bridges.get_mut(bi) {
                    Some(b) => b.tables.learn(fm.clone(), now),
                    None => LearnOutcome::Refused,
                };
                t.learn_outcomes.push(outcome);
            }
        }
        let mut mac_sources: Vec<(usize, MacSource)> = Vec::new();
        let mut normal = Vec::new();
        for (bi, (flows, reached)) in seen.iter().enumerate() {
            let (Some(b), Some(ports)) = (self.bridges.get(bi), ports.get(bi)) else {
                continue;
            };
            if *reached {
                normal.push(bi);
            }
            for f in flows {
                if let Some(src) = b.normal.learning_source(f, ports) {
                    if !mac_sources.contains(&(bi, src)) {
                        mac_sources.push((bi, src));
                    }
                }
            }
        }
        let mut actions = t.actions.clone();
        if !actions.iter().any(|a| {
            matches!(
                a,
                DpAction::Output(_) | DpAction::TunnelPush { .. } | DpAction::TunnelPop(_)
            )
        }) {
            actions.retain(|a| !matches!(a, DpAction::Output(_)));
            if actions.is_empty()
                || actions
                    .iter()
                    .all(|a| !matches!(a, DpAction::Controller { .. }))
            {
                actions = vec![DpAction::Drop];
            }
        }
        let tunnel = t.tunnel.env;
        let tnl_pending = t.tunnel.neighbor_miss > 0;
        Some(Xlated {
            t,
            actions,
            normal,
            mac_sources,
            tunnel,
            tnl_pending,
        })
    }

    /// Handles an upcall from PMD `pmd`: translate (learning), install the megaflow
    /// there with the packet, then revalidate what the upcall changed (learned
    /// flows, the MAC table): [`Ofproto::handle_upcall_deferred`] then
    /// [`Ofproto::revalidate_pending`].
    pub fn handle_upcall(&mut self, pmd: usize, key: FlowKey, packet: D::Packet) {
        self.handle_upcall_deferred(pmd, key, packet);
        self.revalidate_pending();
    }

    /// [`Ofproto::handle_upcall`] without the revalidation, for a batch of
    /// upcalls: the caller runs [`Ofproto::revalidate_pending`] after the batch
    /// (before anyone else may use the slow path), so megaflows installed earlier
    /// in the batch follow what later upcalls learned.
    pub fn handle_upcall_deferred(&mut self, pmd: usize, key: FlowKey, packet: D::Packet) {
        self.stats.upcalls += 1;
        let (bridge, ofport, in_mask) = match self.ingress(&key) {
            Ingress::Port {
                bridge,
                ofport,
                mask,
            } => (bridge, ofport, mask),
            Ingress::NoTunnelPort(mask) => {
                self.tunnel_rx_drop(pmd, key, packet, mask);
                return;
            }
            Ingress::Unknown => {
                self.stats.upcalls_no_bridge += 1;
                return;
            }
        };
        if key.dl_type == ETH_TYPE_SLOW && key.dl_dst == LACP_DST {
            if let Some(packet) = self.lacp_rx(bridge, ofport, pmd, &key, packet) {
                self.handle_not_lacp(pmd, key, packet, bridge, ofport, &in_mask);
            }
            return;
        }
        self.handle_not_lacp(pmd, key, packet, bridge, ofport, &in_mask);
    }

    /// A packet a tunnel delivered that no tunnel port takes (unknown remote,
    /// local address or key): counted, and a drop megaflow over the tunnel
    /// metadata is installed (kept, so that a tunnel port added later takes
    /// the traffic at the next revalidation).
    fn tunnel_rx_drop(&mut self, pmd: usize, key: FlowKey, packet: D::Packet, mask: FlowKey) {
        self.stats.tnl_rx_no_port += 1;
        let mkey = key.masked(&mask);
        let stats: Arc<FlowStats> = Arc::default();
        self.dp.install(
            pmd,
            &mask,
            &mkey,
            vec![DpAction::Drop],
            stats.clone(),
            Some(packet),
        );
        self.stats.megaflows_installed += 1;
        let now = self.now_ms();
        self.flows.insert(
            (pmd, *mask.words(), *mkey.words()),
            UFlow {
                pmd,
                bridge: NO_BRIDGE,
                mask,
                key: mkey,
                actions: vec![DpAction::Drop],
                rules: Vec::new(),
                normal: Vec::new(),
                mac_sources: Vec::new(),
                tunnel: true,
                tnl_pending: false,
                snoops: Vec::new(),
                stats,
                seen_packets: 0,
                seen_bytes: 0,
                active_ms: now,
            },
        );
    }

    /// A slow-protocols frame on `ofport` of `bridge`: a LACPDU on a member of
    /// an LACP bond is consumed here (OVS `SLOW_LACP`): its megaflow is never
    /// kept, so every LACPDU reaches the slow path (the PMD is answered with a
    /// drop megaflow removed right after, which releases what it held for
    /// the flow). Gives the packet back when it is not one.
    fn lacp_rx(
        &mut self,
        bridge: usize,
        ofport: u32,
        pmd: usize,
        key: &FlowKey,
        packet: D::Packet,
    ) -> Option<D::Packet> {
        let now = self.now_ms();
        let b = self.bridges.get_mut(bridge)?;
        let Some(bi) = b
            .normal
            .bonds()
            .iter()
            .position(|bond| bond.has_member(ofport))
        else {
            return Some(packet);
        };
        let Some(Some(lacp)) = b.lacp.get_mut(bi) else {
            return Some(packet);
        };
        let data = self.dp.packet_data(&packet);
        if lacp.process_pdu(ofport, &data, now).is_ok() {
            self.stats.lacp_rx += 1;
        }
        let mask = FlowKey {
            in_port: u32::MAX,
            dl_type: u16::MAX,
            dl_src: [0xff; 6],
            dl_dst: [0xff; 6],
            ..FlowKey::default()
        };
        let mkey = key.masked(&mask);
        self.dp.install(
            pmd,
            &mask,
            &mkey,
            vec![DpAction::Drop],
            Arc::default(),
            Some(packet),
        );
        self.dp.remove(pmd, &mask, &mkey);
        // Answer at once and let the bond follow.
        self.run_bonds();
        self.revalidate_pending();
        None
    }

    /// Every bond's LACP timers (sending the LACPDUs due) and members' links:
    /// the bonds' enabled members and active member follow; a change moves
    /// the bridge's bonds generation, which [`Ofproto::revalidate_pending`]
    /// acts on.
    pub fn run_bonds(&mut self) {
        let now = self.now_ms();
        for b in &mut self.bridges {
            for i in 0..b.normal.bonds().len() {
                let members: Vec<(u32, Option<usize>)> = b
                    .normal
                    .bonds()
                    .get(i)
                    .map(|bond| {
                        bond.members()
                            .iter()
                            .map(|m| (m.ofport, b.odp_of(m.ofport)))
                            .collect()
                    })
                    .unwrap_or_default();
                let links: Vec<(u32, bool)> = members
                    .iter()
                    .map(|&(p, odp)| (p, odp.and_then(|o| self.dp.link_up(o)).unwrap_or(true)))
                    .collect();
                let lacp = b.lacp.get_mut(i).and_then(Option::as_mut);
                let (may, negotiated): (Vec<u32>, bool) = match lacp {
                    Some(l) => {
                        for (p, frame) in l.run(now) {
                            if let Some(Some(odp)) = members.iter().find(|m| m.0 == p).map(|m| m.1)
                            {
                                // A member without carrier sends nothing.
                                if links.iter().any(|&(q, up)| q == p && up) {
                                    self.dp.send(odp, &frame);
                                    self.stats.lacp_tx += 1;
                                }
                            }
                        }
                        (
                            members
                                .iter()
                                .map(|m| m.0)
                                .filter(|&p| l.may_enable(p))
                                .collect(),
                            l.negotiated(),
                        )
                    }
                    None => (Vec::new(), false),
                };
                if let Some(bond) = b.normal.bonds_mut().get_mut(i) {
                    bond.update(
                        |p| links.iter().any(|&(q, up)| q == p && up),
                        |p| may.contains(&p),
                        negotiated,
                    );
                }
            }
        }
    }

    fn handle_not_lacp(
        &mut self,
        pmd: usize,
        key: FlowKey,
        packet: D::Packet,
        bridge: usize,
        ofport: u32,
        in_mask: &FlowKey,
    ) {
        let Some(mut x) = self.xlate(bridge, &key, ofport, true, in_mask) else {
            return;
        };
        if x.t.error.is_some() {
            self.stats.xlate_errors += 1;
        }
        self.count_tunnel(&x.t);
        if x.t
            .learn_outcomes
            .iter()
            .any(|o| matches!(o, LearnOutcome::Added(_) | LearnOutcome::Modified(_)))
        {
            self.dirty = true;
        }
        let mask = x.t.mask;
        let mkey = key.masked(&mask);
        let stats: Arc<FlowStats> = Arc::default();
        let id: UFlowId = (pmd, *mask.words(), *mkey.words());
        let now = self.now_ms();
        self.dp.install(
            pmd,
            &mask,
            &mkey,
            x.actions.clone(),
            stats.clone(),
            Some(packet),
        );
        self.stats.megaflows_installed += 1;
        // The packet itself is credited by the PMD to the new megaflow's stats.
        self.flows.insert(
            id,
            UFlow {
                pmd,
                bridge,
                mask,
                key: mkey,
                actions: x.actions,
                rules: rules_of(&x.t),
                normal: x.normal,
                mac_sources: x.mac_sources,
                tunnel: x.tunnel,
                tnl_pending: x.tnl_pending,
                snoops: std::mem::take(&mut x.t.snoops),
                stats,
                seen_packets: 0,
                seen_bytes: 0,
                active_ms: now,
            },
        );
    }

    /// Counts what native tunneling did in an upcall's translation.
    fn count_tunnel(&mut self, t: &Translation) {
        let (u, s) = (&t.tunnel, &mut self.stats);
        s.tnl_push += u64::from(u.pushes);
        s.tnl_pop += u64::from(u.pops);
        s.tnl_no_route += u64::from(u.no_route);
        s.tnl_neighbor_miss += u64::from(u.neighbor_miss);
        s.tnl_bad_header += u64::from(u.bad_header);
    }

    /// Sends the ARP requests the tunnel environment queued (neighbor misses
    /// of translations): each is a broadcast `who-has NEXT_HOP tell SRC` from
    /// the route's port MAC, translated and executed as if the route's
    /// internal port had sent it on its bridge (so `NORMAL` floods it to the
    /// NICs, tagged as that port's VLAN needs), as OVS's
    /// `tnl_send_arp_request` does.
    fn send_arp_requests(&mut self) {
        let Some(env) = self.tunnel_env.clone() else {
            return;
        };
        let requests = lock_env(&env).take_arp_requests();
        for r in requests {
            self.send_arp_request(&r);
        }
    }

    fn send_arp_request(&mut self, r: &TnlRoute) {
        let port = self.bridge_index(&r.bridge).ok().and_then(|bi| {
            let p = self
                .bridges
                .get(bi)?
                .ports
                .iter()
                .find(|p| p.name == r.port)?;
            Some((bi, p.ofport, p.odp))
        });
        let Some((bi, ofport, odp)) = port else {
            self.stats.arp_request_errors += 1;
            return;
        };
        let frame = crate::neigh::arp_request_for(r).to_vec();
        let mut key = FlowKey::default();
        // A frame built right here: it parses whole.
        let _ = pipeline::parse(&frame, odp as u32, &mut key);
        // A packet-out of the port's own: it learns as any packet does.
        let Some(x) = self.xlate(bi, &key, ofport, true, &FlowKey::default()) else {
            return;
        };
        if x.t
            .learn_outcomes
            .iter()
            .any(|o| matches!(o, LearnOutcome::Added(_) | LearnOutcome::Modified(_)))
        {
            self.dirty = true;
        }
        self.dp.execute(&frame, &x.actions);
        self.stats.arp_requests += 1;
    }

    /// Revalidates what changed since the last revalidation: every megaflow
    /// after a rule change, else the `NORMAL` megaflows of each bridge whose MAC
    /// table changed. Returns once the PMDs have applied the updates.
    ///
    /// Native tunneling: the ARP requests the tunnel environment queued are
    /// sent first, then, when its generation moved (a route, neighbor or
    /// address changed), the megaflows whose translation consulted it are
    /// revalidated too; requests queued by that are sent at the end.
    pub fn revalidate_pending(&mut self) {
        self.send_arp_requests();
        self.revalidate_changes();
        self.send_arp_requests();
    }

    fn revalidate_changes(&mut self) {
        if self.dirty {
            self.revalidate();
            return;
        }
        let tnl_moved = match &self.tunnel_env {
            Some(env) => {
                let g = lock_env(env).generation();
                std::mem::replace(&mut self.tnl_generation, g) != g
            }
            None => false,
        };
        if tnl_moved {
            self.stats.tnl_revalidations += 1;
        }
        let moved: Vec<bool> = self
            .bridges
            .iter_mut()
            .map(|b| {
                let g = b.normal.macs().generation();
                let bg = b.normal.bonds_generation();
                let bonds = std::mem::replace(&mut b.bond_generation, bg) != bg;
                let macs = std::mem::replace(&mut b.mac_generation, g) != g;
                if bonds {
                    self.stats.bond_revalidations += 1;
                } else if macs {
                    self.stats.mac_revalidations += 1;
                }
                bonds || macs
            })
            .collect();
        if moved.contains(&true) || tnl_moved {
            // A megaflow depends on the MAC table of every bridge whose
            // `NORMAL` it reached, through patch ports and tunnels too.
            self.revalidate_where(|f| {
                (tnl_moved && f.tunnel) || f.normal.iter().any(|&b| moved.get(b) == Some(&true))
            });
        }
    }

    /// Re-translates every megaflow after a table change (see the module docs);
    /// returns once the PMDs have applied the resulting updates.
    pub fn revalidate(&mut self) {
        self.dirty = false;
        self.stats.revalidations += 1;
        for b in &mut self.bridges {
            b.mac_generation = b.normal.macs().generation();
            b.bond_generation = b.normal.bonds_generation();
        }
        if let Some(env) = &self.tunnel_env {
            self.tnl_generation = lock_env(env).generation();
        }
        self.revalidate_where(|_| true);
    }

    /// Re-translates the megaflows `select` picks (without learning): kept,
    /// updated in place or removed (see the module docs).
    fn revalidate_where(&mut self, select: impl Fn(&UFlow) -> bool) {
        let changes = self.stats.megaflows_removed + self.stats.megaflows_updated;
        let ids: Vec<UFlowId> = self
            .flows
            .iter()
            .filter(|(_, f)| select(f))
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            let Some(f) = self.flows.get(&id) else {
                continue;
            };
            let (key, old_mask, pmd) = (f.key, f.mask, f.pmd);
            let (bridge, mut x) = match self.ingress(&key) {
                Ingress::Port {
                    bridge,
                    ofport,
                    mask,
                } => match self.xlate(bridge, &key, ofport, false, &mask) {
                    Some(x) => (bridge, x),
                    None => continue,
                },
                Ingress::NoTunnelPort(mask) => (NO_BRIDGE, Xlated::drop(mask)),
                Ingress::Unknown => continue,
            };
            let Some(f) = self.flows.get_mut(&id) else {
                continue;
            };
            if !mask_within(&x.t.mask, &old_mask) {
                self.dp.remove(pmd, &old_mask, &key);
                self.stats.megaflows_removed += 1;
                self.flows.remove(&id);
                continue;
            }
            f.bridge = bridge;
            f.rules = rules_of(&x.t);
            f.normal = x.normal;
            f.mac_sources = x.mac_sources;
            f.tunnel = x.tunnel;
            f.tnl_pending = x.tnl_pending;
            f.snoops = std::mem::take(&mut x.t.snoops);
            if x.actions != f.actions {
                f.actions = x.actions.clone();
                self.dp
                    .install(pmd, &old_mask, &key, x.actions, f.stats.clone(), None);
                self.stats.megaflows_updated += 1;
            }
        }
        if self.stats.megaflows_removed + self.stats.megaflows_updated != changes {
            self.dp.barrier();
        }
    }

    /// Periodic work: credit rule counters from megaflow counters and learn the
    /// sources of the `NORMAL` megaflows used, expire rules (idle/hard timeouts)
    /// and MAC entries, remove idle megaflows and those beyond the limit,
    /// revalidate after any rule or MAC table change.
    pub fn run_periodic(&mut self) {
        let now = self.now_ms();
        // (bridge, VLAN, MAC) -> the source seen last (PMD timestamp) this period.
        let mut active: HashMap<(usize, u16, [u8; 6]), (u64, MacSource)> = HashMap::new();
        let mut snoops: Vec<(String, u32, [u8; 6])> = Vec::new();
        for f in self.flows.values_mut() {
            let p = f.stats.packets();
            let b = f.stats.bytes();
            let dp = p.saturating_sub(f.seen_packets);
            let db = b.saturating_sub(f.seen_bytes);
            if dp > 0 {
                f.active_ms = now;
                for &(bi, r) in &f.rules {
                    if let Some(br) = self.bridges.get_mut(bi) {
                        br.tables.credit(r, dp, db, now);
                    }
                }
                snoops.extend(f.snoops.iter().cloned());
                let used = f.stats.used();
                for &(bi, ref src) in &f.mac_sources {
                    let e = active
                        .entry((bi, src.vlan, src.mac))
                        .or_insert((used, *src));
                    if used >= e.0 {
                        *e = (used, *src);
                    }
                }
            }
            f.seen_packets = p;
            f.seen_bytes = b;
        }
        if let (Some(env), false) = (&self.tunnel_env, snoops.is_empty()) {
            let mut env = lock_env(env);
            for (bridge, ip, mac) in &snoops {
                env.snoop(bridge, *ip, *mac);
            }
        }
        self.run_bonds();
        for ((bi, _, _), (_, src)) in active {
            if let Some(b) = self.bridges.get_mut(bi) {
                b.normal.refresh(&src, now);
            }
        }
        for b in &mut self.bridges {
            if !b.tables.expire(now).is_empty() {
                self.dirty = true;
            }
            b.normal.macs_mut().expire(now);
        }
        let idle = self.cfg.idle_ms;
        let mut gone: Vec<UFlowId> = self
            .flows
            .iter()
            .filter(|(_, f)| now.saturating_sub(f.active_ms) >= idle)
            .map(|(id, _)| id)
            .collect();
        let over = self
            .flows
            .len()
            .saturating_sub(gone.len())
            .saturating_sub(self.cfg.flow_limit);
        if over > 0 {
            // Not idle (those are all in `gone` already), oldest activity first.
            let mut by_age: Vec<(u64, UFlowId)> = self
                .flows
                .iter()
                .filter(|(_, f)| now.saturating_sub(f.active_ms) < idle)
                .map(|(id, f)| (f.active_ms, id))
                .collect();
            by_age.sort_by_key(|(t, _)| *t);
            gone.extend(by_age.into_iter().take(over).map(|(_, id)| id));
        }
        for id in gone {
            if let Some(f) = self.flows.remove(&id) {
                self.dp.remove(f.pmd, &f.mask, &f.key);
                self.stats.megaflows_removed += 1;
            }
        }
        // Tunnel outputs still waiting for their next hop ask again (the
        // environment rate-limits the ARP requests).
        if self.flows.values().any(|f| f.tnl_pending) {
            self.revalidate_where(|f| f.tnl_pending);
        }
        self.revalidate_pending();
    }

    // --- bridges and ports at runtime ----------------------------------------------

    fn index_odp(&mut self) {
        self.odp = self
            .bridges
            .iter()
            .enumerate()
            .flat_map(|(bi, b)| b.ports.iter().map(move |p| (p.odp, (bi, p.ofport))))
            .collect();
    }

    /// Removes the megaflows `select` picks from the PMDs.
    fn remove_where(&mut self, select: impl Fn(&UFlow) -> bool) {
        let ids: Vec<UFlowId> = self
            .flows
            .iter()
            .filter(|(_, f)| select(f))
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            if let Some(f) = self.flows.remove(&id) {
                self.dp.remove(f.pmd, &f.mask, &f.key);
                self.stats.megaflows_removed += 1;
            }
        }
    }

    /// Adds a bridge (`ctl add-br`). Its ports' datapath numbers must be new.
    pub fn add_bridge(&mut self, bridge: Bridge) -> Result<(), String> {
        if self.bridges.iter().any(|b| b.name == bridge.name) {
            return Err(format!("a bridge named {:?} already exists", bridge.name));
        }
        if let Some(p) = bridge.ports.iter().find(|p| self.odp.contains_key(&p.odp)) {
            return Err(format!(
                "port {:?}: datapath port {} is already in use",
                p.name, p.odp
            ));
        }
        self.bridges.push(bridge);
        self.index_odp();
        // Patch ports of other bridges may name the new bridge's.
        link_patches(&mut self.bridges);
        self.revalidate();
        Ok(())
    }

    /// Removes a bridge and its megaflows (`ctl del-br`); returns its ports'
    /// datapath numbers (and those of the tunnel datapath ports only its
    /// tunnels used), once no PMD uses a megaflow of it any more.
    pub fn del_bridge(&mut self, name: &str) -> Result<Vec<usize>, String> {
        let bi = self.bridge_index(name)?;
        self.remove_where(|f| touches(f, bi));
        let b = self.bridges.remove(bi);
        let shift = |i: &mut usize| {
            if *i > bi && *i != NO_BRIDGE {
                *i -= 1;
            }
        };
        for f in self.flows.values_mut() {
            shift(&mut f.bridge);
            f.rules.iter_mut().for_each(|(b, _)| shift(b));
            f.normal.iter_mut().for_each(shift);
            f.mac_sources.iter_mut().for_each(|(b, _)| shift(b));
        }
        self.index_odp();
        // Patch ports of other bridges that led to it lead nowhere now.
        link_patches(&mut self.bridges);
        self.revalidate();
        self.dp.barrier();
        let mut odps: Vec<usize> = b.ports.iter().map(|p| p.odp).collect();
        // The tunnel datapath ports no other bridge's tunnels use.
        for t in &b.tunnels {
            let odp = t.odp as usize;
            let used = self
                .bridges
                .iter()
                .flat_map(|o| &o.tunnels)
                .any(|o| o.odp == t.odp);
            if !used && !odps.contains(&odp) {
                odps.push(odp);
            }
        }
        Ok(odps)
    }

    /// Adds a port to a bridge (`ctl add-port`) with its VLAN mode, then
    /// revalidates the bridge's megaflows: rules may name the port, `NORMAL`
    /// floods to it. Returns once the PMDs forward by the result.
    pub fn add_port(
        &mut self,
        bridge: &str,
        port: BridgePort,
        mode: VlanMode,
    ) -> Result<(), String> {
        self.add_port_kind(bridge, port, mode, false)
    }

    /// [`Ofproto::add_port`] for a `type=internal` port (a host interface:
    /// routes may leave by it and tunnels end there).
    pub fn add_internal_port(
        &mut self,
        bridge: &str,
        port: BridgePort,
        mode: VlanMode,
    ) -> Result<(), String> {
        self.add_port_kind(bridge, port, mode, true)
    }

    fn add_port_kind(
        &mut self,
        bridge: &str,
        port: BridgePort,
        mode: VlanMode,
        internal: bool,
    ) -> Result<(), String> {
        let bi = self.bridge_index(bridge)?;
        if self.odp.contains_key(&port.odp) {
            return Err(format!(
                "port {:?}: datapath port {} is already in use",
                port.name, port.odp
            ));
        }
        let b = self.bridges.get_mut(bi).ok_or("no such bridge")?;
        if b.portmap.number(&port.name).is_some() {
            return Err(format!(
                "bridge {bridge:?} already has a port {:?}",
                port.name
            ));
        }
        if let Some(other) = b.ports.iter().find(|p| p.ofport == port.ofport) {
            return Err(format!(
                "port {:?}: OpenFlow port {} is taken by {:?}",
                port.name, port.ofport, other.name
            ));
        }
        mode.validate()
            .map_err(|e| format!("port {:?}: {e}", port.name))?;
        b.normal
            .set_port(port.ofport, mode)
            .map_err(|e| format!("port {:?}: {e}", port.name))?;
        b.portmap.insert(port.name.clone(), port.ofport);
        if internal {
            b.mark_internal(&port.name);
        }
        b.ports.push(port);
        self.index_odp();
        self.revalidate_where(|f| touches(f, bi));
        Ok(())
    }

    /// Removes a port from its bridge (`ctl del-port`): its megaflows go, the
    /// MACs learned on it are forgotten, the bridge's other megaflows are
    /// revalidated (outputs to the port disappear). Returns its datapath number
    /// once no PMD uses it in a megaflow.
    pub fn del_port(&mut self, bridge: &str, name: &str) -> Result<usize, String> {
        let bi = self.bridge_index(bridge)?;
        let b = self.bridges.get_mut(bi).ok_or("no such bridge")?;
        let pi = b
            .ports
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| format!("bridge {bridge:?} has no port {name:?}"))?;
        let port = b.ports.remove(pi);
        b.portmap.remove(name);
        b.internal.retain(|n| n != name);
        b.normal.remove_port(port.ofport);
        b.mac_generation = b.normal.macs().generation();
        let odp = port.odp as u32;
        self.remove_where(|f| f.key.in_port == odp);
        self.index_odp();
        self.revalidate_where(|f| touches(f, bi));
        self.dp.barrier();
        Ok(port.odp)
    }

    /// Changes a port's VLAN mode (`ctl set-port PORT tag=...`): the MACs
    /// learned on it are forgotten and the bridge's megaflows revalidated.
    pub fn set_port_vlan(
        &mut self,
        bridge: &str,
        port: &str,
        mode: VlanMode,
    ) -> Result<(), String> {
        let bi = self.bridge_index(bridge)?;
        let b = self.bridges.get_mut(bi).ok_or("no such bridge")?;
        b.set_vlan_mode(port, mode)?;
        if let Some(ofport) = b.portmap.number(port) {
            b.normal.macs_mut().flush_port(ofport);
        }
        b.mac_generation = b.normal.macs().generation();
        self.revalidate_where(|f| touches(f, bi));
        Ok(())
    }

    /// Adds a patch port to a bridge (`ctl add-port BR NAME type=patch
    /// options:peer=PEER`): no datapath port; once its peer exists too, output
    /// to it continues in the peer's bridge. Every megaflow is revalidated.
    pub fn add_patch_port(
        &mut self,
        bridge: &str,
        name: &str,
        ofport: u32,
        peer: &str,
    ) -> Result<(), String> {
        let bi = self.bridge_index(bridge)?;
        let b = self.bridges.get_mut(bi).ok_or("no such bridge")?;
        if b.portmap.number(name).is_some() {
            return Err(format!("bridge {bridge:?} already has a port {name:?}"));
        }
        b.add_patch(name, ofport, peer);
        link_patches(&mut self.bridges);
        self.revalidate();
        Ok(())
    }

    /// The datapath port tunnels of `kind` on UDP port `dst_port` share, if a
    /// tunnel port uses one already.
    pub fn tunnel_odp(&self, kind: TunnelKind, dst_port: u16) -> Option<usize> {
        self.bridges
            .iter()
            .flat_map(|b| &b.tunnels)
            .find(|t| t.config.kind == kind && t.config.dst_port == dst_port)
            .map(|t| t.odp as usize)
    }

    /// Adds tunnel port `name` (`ctl add-port BR NAME type=vxlan
    /// options:remote_ip=...`) with OpenFlow number `ofport` on datapath port
    /// `odp` (its kind's: [`Ofproto::tunnel_odp`], or one just opened). Every
    /// megaflow is revalidated: rules may name it, `NORMAL` floods to it, and
    /// packets a tunnel delivered may now be its.
    pub fn add_tunnel_port(
        &mut self,
        bridge: &str,
        name: &str,
        ofport: u32,
        odp: usize,
        config: TunnelPortConfig,
        mode: VlanMode,
    ) -> Result<(), String> {
        let bi = self.bridge_index(bridge)?;
        if self.odp.contains_key(&odp) {
            return Err(format!(
                "port {name:?}: datapath port {odp} is a device's, not a tunnel's"
            ));
        }
        let b = self.bridges.get_mut(bi).ok_or("no such bridge")?;
        if b.portmap.number(name).is_some() {
            return Err(format!("bridge {bridge:?} already has a port {name:?}"));
        }
        if b.portmap.iter().any(|(_, o)| o == ofport) {
            return Err(format!("port {name:?}: OpenFlow port {ofport} is taken"));
        }
        mode.validate().map_err(|e| format!("port {name:?}: {e}"))?;
        b.normal
            .set_port(ofport, mode)
            .map_err(|e| format!("port {name:?}: {e}"))?;
        b.add_tunnel(name, ofport, odp, config);
        self.revalidate();
        Ok(())
    }

    /// Removes tunnel port `name` (`ctl del-port`): every megaflow is
    /// revalidated (packets it took are dropped). Returns its datapath port
    /// when no other tunnel port uses it any more (the caller closes it).
    pub fn del_tunnel_port(&mut self, bridge: &str, name: &str) -> Result<Option<usize>, String> {
        let bi = self.bridge_index(bridge)?;
        let b = self.bridges.get_mut(bi).ok_or("no such bridge")?;
        let ti = b
            .tunnels
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| format!("bridge {bridge:?} has no tunnel port {name:?}"))?;
        let t = b.tunnels.remove(ti);
        b.portmap.remove(name);
        b.normal.remove_port(t.ofport);
        b.mac_generation = b.normal.macs().generation();
        self.revalidate();
        self.dp.barrier();
        let shared = self
            .bridges
            .iter()
            .flat_map(|b| &b.tunnels)
            .any(|o| o.odp == t.odp);
        Ok((!shared).then_some(t.odp as usize))
    }

    /// Removes a patch port (`ctl del-port`): its peer leads nowhere; every
    /// megaflow is revalidated.
    pub fn del_patch_port(&mut self, bridge: &str, name: &str) -> Result<(), String> {
        let bi = self.bridge_index(bridge)?;
        let b = self.bridges.get_mut(bi).ok_or("no such bridge")?;
        let pi = b
            .patches
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| format!("bridge {bridge:?} has no patch port {name:?}"))?;
        let port = b.patches.remove(pi);
        b.portmap.remove(name);
        b.normal.remove_port(port.ofport);
        link_patches(&mut self.bridges);
        self.revalidate();
        Ok(())
    }

    // --- control commands -------------------------------------------------------

    /// `add-flow BR FLOW`.
    pub fn add_flow(&mut self, bridge: &str, text: &str) -> Result<(), String> {
        self.add_flows(bridge, text)
    }

    /// `add-flows BR FILE` (the file's text): all or nothing; `#` comments and blank
    /// lines are skipped. An error names the line and the reason.
    pub fn add_flows(&mut self, bridge: &str, text: &str) -> Result<(), String> {
        let bi = self.bridge_index(bridge)?;
        let now = self.now_ms();
        let b = self.bridges.get_mut(bi).ok_or("no such bridge")?;
        let fms = parse_flows(text, &b.portmap).map_err(|e| e.to_string())?;
        for fm in &fms {
            check_flow(fm, &self.tlv)?;
        }
        b.tables.add_flows(fms, now).map_err(|e| e.to_string())?;
        self.revalidate();
        Ok(())
    }

    /// `add-tlv-map BR MAP`: adds mappings to the switch's TLV map, all or
    /// nothing (the map is one for every bridge, see
    /// [`pipeline::tun_metadata`]).
    pub fn add_tlv_map(&mut self, bridge: &str, text: &str) -> Result<(), String> {
        self.bridge_index(bridge)?;
        let add = parse_mappings(text).map_err(|e| e.to_string())?;
        let mut map = self.tlv;
        map.add(&add).map_err(|e| e.to_string())?;
        self.set_tlv_map(map);
        Ok(())
    }

    /// `del-tlv-map BR [MAP]`: removes those mappings (all without `MAP`),
    /// all or nothing; refused while a flow of any bridge uses a field
    /// removed (OVS's `NXTTMFC_INVALID_TLV_DEL`).
    pub fn del_tlv_map(&mut self, bridge: &str, text: Option<&str>) -> Result<(), String> {
        self.bridge_index(bridge)?;
        let del: Vec<TlvMapping> = match text {
            Some(t) => parse_mappings(t).map_err(|e| e.to_string())?,
            None => self.tlv.mappings().collect(),
        };
        let mut map = self.tlv;
        map.del(&del).map_err(|e| e.to_string())?;
        for b in &self.bridges {
            for (_, r) in b.tables.iter() {
                if let Some((i, _)) = flow_uses(&r.flow)
                    .into_iter()
                    .find(|&(i, _)| map.field(i).is_none() && self.tlv.field(i).is_some())
                {
                    return Err(format!(
                        "tun_metadata{i}: used by a flow of bridge {}, not removed",
                        b.name
                    ));
                }
            }
        }
        self.set_tlv_map(map);
        Ok(())
    }

    /// `dump-tlv-map BR`, as `ovs-ofctl dump-tlv-map` prints it.
    pub fn dump_tlv_map(&self, bridge: &str) -> Result<String, String> {
        self.bridge_index(bridge)?;
        Ok(format_map(&self.tlv))
    }

    /// Takes `map`: the PMDs decode with it once this returns; every
    /// megaflow is translated again (Geneve outputs carry the fields it
    /// maps).
    fn set_tlv_map(&mut self, map: TlvMap) {
        self.tlv = map;
        self.dp.set_tlv_map(map);
        self.dp.barrier();
        self.revalidate();
    }

    /// `del-flows BR [FLOW] [--strict]`.
    pub fn del_flows(
        &mut self,
        bridge: &str,
        filter: Option<&str>,
        strict: bool,
    ) -> Result<usize, String> {
        let bi = self.bridge_index(bridge)?;
        let b = self.bridges.get_mut(bi).ok_or("no such bridge")?;
        let f = parse_flow_filter(
            filter.unwrap_or(""),
            FilterMode::DelFlows { strict },
            &b.portmap,
        )
        .map_err(|e| e.to_string())?;
        let n = b.tables.delete(&f).len();
        self.revalidate();
        Ok(n)
    }

    /// `dump-flows BR [FLOW]`, as `ovs-ofctl dump-flows` prints it.
    pub fn dump_flows(
        &mut self,
        bridge: &str,
        filter: Option<&str>,
        names: bool,
    ) -> Result<String, String> {
        // Counters are credited up to now first, as OVS's are when asked: the
        // PMDs publish theirs at the barrier.
        self.dp.barrier();
        self.run_periodic();
        let bi = self.bridge_index(bridge)?;
        let now = self.now_ms();
        let b = self.bridges.get(bi).ok_or("no such bridge")?;
        let f = parse_flow_filter(filter.unwrap_or(""), FilterMode::DumpFlows, &b.portmap)
            .map_err(|e| e.to_string())?;
        let opts = FormatOptions {
            names: names.then_some(&b.portmap),
        };
        let mut out = String::new();
        for (_, r) in b.tables.dump(&f) {
            out.push_str(&format_dump_line(r, now, &opts));
            out.push('\n');
        }
        Ok(out)
    }

    /// `ofproto-trace BR KEY`: the translation of a flow given in `ovs-ofctl` match
    /// syntax, without side effects (nothing is learned); patch ports show the
    /// peer bridge's part under `bridge("NAME")`.
    pub fn trace(&mut self, bridge: &str, key_text: &str) -> Result<String, String> {
        let bi = self.bridge_index(bridge)?;
        let b = self.bridges.get(bi).ok_or("no such bridge")?;
        let key = parse_key(key_text, &b.portmap)?;
        let name = b.name.clone();
        let env = self.tunnel_env.clone();
        let mut guard = env.as_ref().map(lock_env);
        let env: Option<&mut dyn TunnelEnv> = match guard.as_deref_mut() {
            Some(e) => Some(e),
            None => None,
        };
        let (t, _, _) = translate_all(&mut self.bridges, bi, &key, (false, true), 0, env, self.tlv)
            .ok_or("no such bridge")?;
        Ok(format_trace_named(&t, &name))
    }

    /// `fdb-show BR`: the bridge's MAC table as `ovs-appctl fdb/show` prints it
    /// (ports by OpenFlow number, least recently seen first, ages in seconds).
    pub fn fdb_show(&self, bridge: &str) -> Result<String, String> {
        let bi = self.bridge_index(bridge)?;
        let b = self.bridges.get(bi).ok_or("no such bridge")?;
        Ok(b.normal
            .macs()
            .format_fdb_show(self.now_ms(), Bridge::fdb_port_name))
    }

    /// `fdb-show BR --json`: `[{"port": 1, "port_name": "1", "vlan": 0, "mac":
    /// "02:aa:00:00:00:01", "age": 3}, ...]`, in `fdb-show`'s order (`port_name`
    /// as `fdb-show` prints the port, e.g. `LOCAL`).
    pub fn fdb_show_json(&self, bridge: &str) -> Result<String, String> {
        let bi = self.bridge_index(bridge)?;
        let b = self.bridges.get(bi).ok_or("no such bridge")?;
        let now = self.now_ms();
        let rows: Vec<serde_json::Value> = b
            .normal
            .macs()
            .entries()
            .map(|e| {
                let m = e.mac;
                serde_json::json!({
                    "port": e.port,
                    "port_name": Bridge::fdb_port_name(e.port),
                    "vlan": e.vlan,
                    "mac": format!(
                        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                        m[0], m[1], m[2], m[3], m[4], m[5]
                    ),
                    "age": now.saturating_sub(e.used_ms) / 1000,
                    "static": e.is_static,
                })
            })
            .collect();
        Ok(serde_json::Value::Array(rows).to_string())
    }

    /// `fdb-flush [BR]`: forgets every learned MAC of `bridge`, or of every
    /// bridge (OVS `fdb/flush`); the `NORMAL` megaflows are revalidated (they
    /// flood until the MACs are learned again) before it returns.
    pub fn fdb_flush(&mut self, bridge: Option<&str>) -> Result<String, String> {
        match bridge {
            Some(name) => {
                let bi = self.bridge_index(name)?;
                if let Some(b) = self.bridges.get_mut(bi) {
                    b.normal.macs_mut().flush();
                }
            }
            None => {
                for b in &mut self.bridges {
                    b.normal.macs_mut().flush();
                }
            }
        }
        self.revalidate_pending();
        Ok("table successfully flushed\n".to_string())
    }

    /// `bond-show [BOND]`: every bond (or the one named) as `ovs-appctl
    /// bond/show` prints it.
    pub fn bond_show(&self, bond: Option<&str>) -> Result<String, String> {
        let mut out = String::new();
        for b in &self.bridges {
            for bd in b.normal.bonds() {
                if bond.is_none_or(|n| n == bd.name()) {
                    out.push_str(&bd.format_show());
                }
            }
        }
        match bond {
            Some(n) if out.is_empty() => Err(format!("no such bond {n:?}")),
            _ => Ok(out),
        }
    }

    /// `bond-show --json`: `[{"name", "bond_mode", "lacp_status",
    /// "active_member", "members": [{"name", "ofport", "enabled",
    /// "may_enable", "link"}]}]`.
    pub fn bond_show_json(&self, bond: Option<&str>) -> Result<String, String> {
        let mut rows = Vec::new();
        for b in &self.bridges {
            for bd in b.normal.bonds() {
                if bond.is_some_and(|n| n != bd.name()) {
                    continue;
                }
                let active = bd
                    .active()
                    .and_then(|a| bd.member(a))
                    .map(|m| m.name.clone());
                let members: Vec<serde_json::Value> = bd
                    .members()
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "name": m.name,
                            "ofport": m.ofport,
                            "enabled": m.enabled,
                            "may_enable": m.may_enable,
                            "link": m.link,
                        })
                    })
                    .collect();
                rows.push(serde_json::json!({
                    "name": bd.name(),
                    "bridge": b.name,
                    "bond_mode": bd.mode().as_str(),
                    "lacp_status": bd.lacp_status().as_str(),
                    "active_member": active,
                    "members": members,
                }));
            }
        }
        if let (Some(n), true) = (bond, rows.is_empty()) {
            return Err(format!("no such bond {n:?}"));
        }
        Ok(serde_json::Value::Array(rows).to_string())
    }

    /// `lacp-show [BOND]`: the LACP state of every bond with LACP on (or the one
    /// named), as `ovs-appctl lacp/show` prints it.
    pub fn lacp_show(&self, bond: Option<&str>) -> Result<String, String> {
        let mut out = String::new();
        let mut found = false;
        for b in &self.bridges {
            for (bd, l) in b.normal.bonds().iter().zip(&b.lacp) {
                if bond.is_some_and(|n| n != bd.name()) {
                    continue;
                }
                found = true;
                if let Some(l) = l {
                    out.push_str(&l.format_show());
                }
            }
        }
        match bond {
            Some(n) if !found => Err(format!("no such bond {n:?}")),
            Some(n) if out.is_empty() => Err(format!("bond {n:?} does not run LACP")),
            _ => Ok(out),
        }
    }

    /// `fdb-add BR PORT VLAN MAC` (OVS `fdb/add`): a static MAC table entry,
    /// never aged nor moved by learning. `PORT` is a port name, an OpenFlow
    /// number or `LOCAL`. The `NORMAL` megaflows are revalidated before it
    /// returns (a flood to `MAC` becomes a unicast).
    pub fn fdb_add(
        &mut self,
        bridge: &str,
        port: &str,
        vlan: &str,
        mac: &str,
    ) -> Result<String, String> {
        let bi = self.bridge_index(bridge)?;
        let now = self.now_ms();
        let b = self.bridges.get_mut(bi).ok_or("no such bridge")?;
        let ofport = b
            .ports
            .iter()
            .find(|p| {
                p.name == port
                    || p.ofport.to_string() == port
                    || (port == "LOCAL" && p.ofport == pipeline::flow_key::OFPP_LOCAL)
            })
            .map(|p| p.ofport)
            .ok_or_else(|| format!("bridge {bridge:?} has no port {port:?}"))?;
        let vlan = parse_fdb_vlan(vlan)?;
        let mac = parse_fdb_mac(mac)?;
        b.normal
            .macs_mut()
            .add_static(vlan, mac, ofport, now)
            .map_err(|e| format!("MAC {}: {e}", format_fdb_mac(&mac)))?;
        self.revalidate_pending();
        Ok(String::new())
    }

    /// `fdb-del BR VLAN MAC` (OVS `fdb/del`): removes a static entry; an error
    /// when there is none (learned entries are left alone).
    pub fn fdb_del(&mut self, bridge: &str, vlan: &str, mac: &str) -> Result<String, String> {
        let bi = self.bridge_index(bridge)?;
        let vlan = parse_fdb_vlan(vlan)?;
        let mac = parse_fdb_mac(mac)?;
        let b = self.bridges.get_mut(bi).ok_or("no such bridge")?;
        if !b.normal.macs_mut().del_static(vlan, &mac) {
            return Err(format!(
                "no static entry for MAC {} in VLAN {vlan}",
                format_fdb_mac(&mac)
            ));
        }
        self.revalidate_pending();
        Ok(String::new())
    }

    /// A bridge's MAC table.
    pub fn macs(&self, bridge: &str) -> Result<&MacTable, String> {
        let bi = self.bridge_index(bridge)?;
        self.bridges
            .get(bi)
            .map(|b| b.normal.macs())
            .ok_or_else(|| "no such bridge".to_string())
    }

    /// `dump-dp-flows`: every megaflow with its counters and actions.
    pub fn dump_dp_flows(&mut self) -> String {
        // The PMDs publish their megaflow counters at the barrier.
        self.dp.barrier();
        let now = self.now_ms();
        let mut rows: Vec<(usize, String)> = self
            .flows
            .values()
            .map(|f| {
                let bname = self
                    .bridges
                    .get(f.bridge)
                    .map_or("(no tunnel port)", |b| b.name.as_str());
                (
                    f.pmd,
                    format!(
                        "pmd {} {bname}: {}, packets:{}, bytes:{}, used:{}, actions:{}",
                        f.pmd,
                        format_megaflow(&f.key, &f.mask),
                        f.stats.packets(),
                        f.stats.bytes(),
                        if f.stats.packets() == 0 {
                            "never".to_string()
                        } else {
                            format!("{:.3}s", now.saturating_sub(f.active_ms) as f64 / 1000.0)
                        },
                        format_dp_actions(&f.actions)
                    ),
                )
            })
            .collect();
        rows.sort();
        let mut out = String::new();
        for (_, r) in rows {
            let _ = writeln!(out, "{r}");
        }
        out
    }
}

/// Joins every bridge's patch ports to their peers by name (the patch port of
/// that name on another bridge); a patch port whose peer no other bridge has
/// outputs nothing. Run again after bridges or patch ports are added or
/// removed (with a revalidation of every megaflow).
pub fn link_patches(bridges: &mut [Bridge]) {
    let peers: Vec<Vec<PatchPeer>> = bridges
        .iter()
        .enumerate()
        .map(|(bi, b)| {
            b.patches
                .iter()
                .filter_map(|p| {
                    bridges.iter().enumerate().find_map(|(pbi, pb)| {
                        let q = pb.patches.iter().find(|q| q.name == p.peer)?;
                        (pbi != bi).then_some(PatchPeer {
                            port: p.ofport,
                            peer_bridge: pbi,
                            peer_port: q.ofport,
                        })
                    })
                })
                .collect()
        })
        .collect();
    for (b, p) in bridges.iter_mut().zip(peers) {
        b.patch_peers = p;
    }
}

/// A translation for the datapath.
struct Xlated {
    t: Translation,
    /// The datapath actions, outputs to datapath ports.
    actions: Vec<DpAction>,
    /// The bridges whose `NORMAL` the translation reached.
    normal: Vec<usize>,
    /// What `NORMAL` learns from it, by bridge.
    mac_sources: Vec<(usize, MacSource)>,
    /// It consulted the tunnel environment.
    tunnel: bool,
    /// It met a neighbor miss.
    tnl_pending: bool,
}

impl Xlated {
    /// A drop over `mask` (a packet no port takes).
    fn drop(mask: FlowKey) -> Xlated {
        let mut t = translate_bridges(&mut [], 0, &FlowKey::default(), false);
        t.mask = mask;
        Xlated {
            t,
            actions: vec![DpAction::Drop],
            normal: Vec::new(),
            mac_sources: Vec::new(),
            tunnel: true,
            tnl_pending: false,
        }
    }
}

/// The rules a translation hit, each with its bridge.
fn rules_of(t: &Translation) -> Vec<(usize, RuleId)> {
    t.rule_bridges
        .iter()
        .copied()
        .zip(t.rules.iter().copied())
        .collect()
}

/// Translates `key` (OpenFlow `in_port` of bridge `start`) across `bridges`
/// (patch ports lead from one to another), `NORMAL` learning or not. Learned
/// flows are not applied. Returns the translation, the flows each bridge's
/// `NORMAL` decided on, and each bridge's OpenFlow ports.
/// `env`: native tunneling's tables, if any; snooping only when `learn`.
/// `tlv`: the switch's TLV map.
#[allow(clippy::type_complexity)]
fn translate_all(
    bridges: &mut [Bridge],
    start: usize,
    key: &FlowKey,
    (learn, trace): (bool, bool),
    now: u64,
    env: Option<&mut dyn TunnelEnv>,
    tlv: TlvMap,
) -> Option<(Translation, Vec<(Vec<FlowKey>, bool)>, Vec<Vec<u32>>)> {
    if start >= bridges.len() {
        return None;
    }
    let ports: Vec<Vec<u32>> = bridges.iter().map(Bridge::ofports).collect();
    let odps: Vec<Vec<(u32, u32)>> = bridges.iter().map(Bridge::odp_map).collect();
    let mut hooks: Vec<Recorded<'_>> = Vec::with_capacity(bridges.len());
    let mut parts = Vec::with_capacity(bridges.len());
    let mut internals: Vec<Vec<(u32, &str)>> = Vec::with_capacity(bridges.len());
    for b in bridges.iter_mut() {
        let Bridge {
            name,
            tables,
            normal,
            patch_peers,
            tunnels,
            ports: bports,
            internal,
            ..
        } = b;
        let internal = internal_ports(bports, internal);
        hooks.push(Recorded::new(if learn {
            normal.hook(now)
        } else {
            normal.trace_hook()
        }));
        parts.push((
            name.as_str(),
            &*tables,
            patch_peers.as_slice(),
            tunnels.as_slice(),
        ));
        internals.push(internal);
    }
    let t = {
        let mut xb: Vec<XlateBridge<'_, '_>> = parts
            .iter()
            .zip(hooks.iter_mut())
            .zip(ports.iter().zip(&odps).zip(&internals))
            .map(
                |((&(name, tables, patches, tunnels), hook), ((ports, odp), internal))| {
                    XlateBridge {
                        name,
                        tables,
                        ports,
                        odp: Some(odp),
                        patches,
                        normal: Some(hook as &mut dyn NormalHook),
                        internal,
                        tunnels,
                    }
                },
            )
            .collect();
        translate_bridges_with(
            &mut xb,
            start,
            key,
            BridgesOptions {
                trace,
                tunnel_env: env,
                side_effects: learn,
                tlv_map: tlv,
            },
        )
    };
    let seen = hooks.into_iter().map(|h| (h.seen, h.reached)).collect();
    Some((t, seen, ports))
}

/// A bridge's internal ports, `(ofport, name)`: its own port (`LOCAL`) and
/// those marked `type=internal`.
fn internal_ports<'a>(ports: &'a [BridgePort], internal: &[String]) -> Vec<(u32, &'a str)> {
    ports
        .iter()
        .filter(|p| p.ofport == pipeline::flow_key::OFPP_LOCAL || internal.contains(&p.name))
        .map(|p| (p.ofport, p.name.as_str()))
        .collect()
}

/// A bridge's `NORMAL` hook that also records the flows `NORMAL` decided on
/// while learning (as earlier actions left them), for
/// [`Normal::learning_source`], and whether `NORMAL` ran at all (an
/// encapsulated packet's decisions, which learn nothing, count there).
struct Recorded<'a> {
    hook: NormalXlate<'a>,
    seen: Vec<FlowKey>,
    reached: bool,
    learning: bool,
}

impl<'a> Recorded<'a> {
    fn new(hook: NormalXlate<'a>) -> Self {
        Recorded {
            hook,
            seen: Vec::new(),
            reached: false,
            learning: true,
        }
    }
}

impl NormalHook for Recorded<'_> {
    fn normal(&mut self, flow: &FlowKey, wc: &mut FlowKey, ports: &[u32]) -> NormalDecision {
        self.reached = true;
        if self.learning {
            self.seen.push(*flow);
        }
        self.hook.normal(flow, wc, ports)
    }

    fn set_learning(&mut self, on: bool) {
        self.learning = on;
        self.hook.set_learning(on);
    }
}

/// The bridges of `cfg` as the slow path runs them: datapath ports numbered as
/// [`Config::datapath_ports`] numbers them (bridge order, then port order, then
/// the bridge's own port, `LOCAL`), OpenFlow ports as [`BridgeConfig::ofports`]
/// assigns them, patch ports ([`Bridge::add_patch`]), each port's VLAN mode, the
/// MAC table settings, and the bridge's flows: [`DEFAULT_FLOW`], then the
/// configured ones on top (all or nothing). Errors name the bridge, the port or
/// the flow.
pub fn bridges_from_config(cfg: &Config) -> Result<Vec<Bridge>, String> {
    let dp_ports = cfg.datapath_ports();
    let mut out = Vec::new();
    for b in &cfg.bridges {
        let ofports = b.ofports();
        // Datapath port numbers are positions in `Config::datapath_ports`; the
        // bridge's own port (`LOCAL`) is among them.
        let ports = dp_ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.bridge == b.name)
            .map(|(odp, p)| BridgePort {
                name: p.port.name.clone(),
                ofport: p.ofport,
                odp,
            })
            .collect();
        // Tunnel ports, on their kind's datapath port.
        let mut tunnels = Vec::new();
        for p in b.ports.iter().filter(|p| p.is_tunnel()) {
            let c = p
                .tunnel_config()
                .map_err(|e| format!("bridge {:?}: port {:?}: {e}", b.name, p.name))?;
            let odp = dp_ports
                .iter()
                .position(|d| d.tunnel == Some((c.kind, c.dst_port)))
                .ok_or_else(|| format!("port {:?}: no tunnel datapath port", p.name))?;
            let ofport = ofports
                .iter()
                .find(|(n, _)| *n == p.name)
                .map_or(0, |&(_, o)| o);
            tunnels.push((p.name.clone(), ofport, odp, c));
        }
        out.push(bridge_with_tunnels(b, ports, tunnels)?);
    }
    Ok(out)
}

/// The bridge `b` describes, over `ports` (numbered by the caller): VLAN
/// modes, MAC table settings, [`DEFAULT_FLOW`] and the configured flows.
pub fn bridge_from_config(b: &BridgeConfig, ports: Vec<BridgePort>) -> Result<Bridge, String> {
    bridge_with_tunnels(b, ports, Vec::new())
}

/// [`bridge_from_config`] with the bridge's tunnel ports: (name, OpenFlow
/// port, datapath port, options), one for each tunnel port of `b`.
fn bridge_with_tunnels(
    b: &BridgeConfig,
    ports: Vec<BridgePort>,
    tunnels: Vec<(String, u32, usize, TunnelPortConfig)>,
) -> Result<Bridge, String> {
    if let Some(p) = b
        .ports
        .iter()
        .find(|p| p.is_tunnel() && !tunnels.iter().any(|t| t.0 == p.name))
    {
        return Err(format!(
            "bridge {:?}: tunnel port {:?} has no datapath port",
            b.name, p.name
        ));
    }
    let mut bridge = Bridge::new(&b.name, ports);
    for (name, ofport, odp, c) in tunnels {
        bridge.add_tunnel(&name, ofport, odp, c);
    }
    for p in b.ports.iter().filter(|p| p.is_bond()) {
        let s = p
            .bond_settings()
            .map_err(|e| format!("bridge {:?}: port {:?}: {e}", b.name, p.name))?;
        let members: Vec<&str> = p.interfaces.iter().map(|i| i.name.as_str()).collect();
        let lacp = match s.lacp {
            LacpMode::Off => None,
            LacpMode::Active => Some((true, s.lacp_fast)),
            LacpMode::Passive => Some((false, s.lacp_fast)),
        };
        bridge
            .add_bond(&p.name, &members, s.mode, lacp)
            .map_err(|e| format!("bridge {:?}: {e}", b.name))?;
    }
    let ofports = b.ofports();
    for p in b.ports.iter().filter(|p| p.is_patch()) {
        let ofport = ofports
            .iter()
            .find(|(n, _)| *n == p.name)
            .map_or(0, |&(_, o)| o);
        bridge.add_patch(&p.name, ofport, p.peer().unwrap_or_default());
    }
    for p in b.ports.iter().filter(|p| p.is_internal()) {
        bridge.mark_internal(&p.name);
    }
    configure_normal(&mut bridge, b).map_err(|e| format!("bridge {:?}: {e}", b.name))?;
    let fms = b
        .flows
        .iter()
        .map(|text| parse_flow(text, &bridge.portmap))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bridge {:?}: {e}", b.name))?;
    // The TLV map starts empty (`add-tlv-map` sets it at runtime, as a
    // controller does): no configured flow can use tun_metadata.
    for fm in &fms {
        check_flow(fm, &TlvMap::default()).map_err(|e| format!("bridge {:?}: {e}", b.name))?;
    }
    bridge
        .tables
        .add_flows(fms, 0)
        .map_err(|e| format!("bridge {:?}: {e}", b.name))?;
    Ok(bridge)
}

/// The port VLAN modes and MAC table settings of `cfg` on `bridge`.
fn configure_normal(bridge: &mut Bridge, cfg: &BridgeConfig) -> Result<(), String> {
    for p in &cfg.ports {
        let mode = p
            .vlan_mode()
            .map_err(|e| format!("port {:?}: {e}", p.name))?;
        // A bond's mode is its bundle's: the port its first member has.
        let name = p
            .interfaces
            .first()
            .map_or(p.name.as_str(), |i| i.name.as_str());
        bridge.set_vlan_mode(name, mode)?;
    }
    if let Some(secs) = cfg.mac_aging_time {
        bridge.normal.macs_mut().set_aging_secs(secs);
    }
    if let Some(n) = cfg.mac_table_size {
        bridge.normal.macs_mut().set_max_entries(n);
    }
    Ok(())
}

/// A megaflow as an `ovs-ofctl` match (`in_port=1,ip,nw_dst=10.0.0.7`; `in_port`
/// is the datapath port).
pub fn format_megaflow(key: &FlowKey, mask: &FlowKey) -> String {
    let m = Match::new(*key, *mask);
    let s = format_match(&m, OFP_DEFAULT_PRIORITY, &FormatOptions::default());
    if s.is_empty() {
        "(any)".to_string()
    } else {
        s
    }
}

/// A flow key from `ovs-ofctl` match syntax (`in_port=1,dl_src=...,tcp,tp_dst=80`):
/// fields not given are zero.
pub fn parse_key(text: &str, ports: &PortMap) -> Result<FlowKey, String> {
    let fm = parse_flow(&format!("{text},actions=drop"), ports).map_err(|e| e.to_string())?;
    Ok(fm.match_.key)
}

/// `fdb-add`/`fdb-del`'s VLAN: 0 to 4095.
fn parse_fdb_vlan(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|v| *v <= 4095)
        .ok_or_else(|| format!("invalid VLAN {s:?}: must be 0 to 4095"))
}

/// `fdb-add`/`fdb-del`'s MAC: six hex bytes separated by colons.
fn parse_fdb_mac(s: &str) -> Result<[u8; 6], String> {
    let bad = || format!("invalid MAC {s:?}: must be six hex bytes like 02:00:00:00:00:01");
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next().ok_or_else(bad)?;
        if p.is_empty() || p.len() > 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

fn format_fdb_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A datapath that records what it is asked to do.
    #[derive(Default)]
    struct Recorder {
        log: Mutex<Vec<String>>,
    }

    impl DpControl for &Recorder {
        type Packet = Vec<u8>;
        fn install(
            &self,
            pmd: usize,
            mask: &FlowKey,
            key: &FlowKey,
            actions: Vec<DpAction>,
            _stats: Arc<FlowStats>,
            packet: Option<Vec<u8>>,
        ) {
            self.log.lock().unwrap().push(format!(
                "install pmd{pmd} {} -> {}{}",
                format_megaflow(key, mask),
                format_dp_actions(&actions),
                if packet.is_some() { " +pkt" } else { "" }
            ));
        }
        fn remove(&self, pmd: usize, mask: &FlowKey, key: &FlowKey) {
            self.log
                .lock()
                .unwrap()
                .push(format!("remove pmd{pmd} {}", format_megaflow(key, mask)));
        }
    }

    fn bridge() -> Bridge {
        Bridge::new(
            "br0",
            vec![
                BridgePort {
                    name: "p1".into(),
                    ofport: 1,
                    odp: 10,
                },
                BridgePort {
                    name: "p2".into(),
                    ofport: 2,
                    odp: 11,
                },
            ],
        )
    }

    fn key(in_port: u32, text: &str) -> FlowKey {
        let mut pm = PortMap::new();
        pm.insert("p1", 1);
        let mut k = parse_key(text, &pm).unwrap();
        k.in_port = in_port;
        k
    }

    #[test]
    fn upcall_installs_megaflow_with_datapath_ports_and_revalidates_on_change() {
        let rec = Recorder::default();
        let mut o = Ofproto::new(vec![bridge()], &rec, OfprotoConfig::default());
        o.add_flow("br0", "in_port=1,ip,nw_dst=10.0.0.0/24 actions=output:2")
            .unwrap();
        o.handle_upcall(0, key(10, "ip,nw_dst=10.0.0.7,nw_src=1.2.3.4"), vec![1]);
        {
            let log = rec.log.lock().unwrap();
            assert_eq!(log.len(), 1);
            assert!(log[0].starts_with("install pmd0 "), "{}", log[0]);
            assert!(log[0].ends_with(" -> 11 +pkt"), "{}", log[0]);
            assert!(
                !log[0].contains("1.2.3.4"),
                "nw_src is not in the megaflow: {}",
                log[0]
            );
        }
        assert_eq!(o.n_megaflows(), 1);
        // A rule change that alters the actions updates the megaflow in place.
        o.add_flow(
            "br0",
            "priority=40000,in_port=1,ip,nw_dst=10.0.0.0/24 actions=drop",
        )
        .unwrap();
        {
            let log = rec.log.lock().unwrap();
            assert_eq!(log.len(), 2, "{log:?}");
            assert!(log[1].ends_with(" -> drop"), "{}", log[1]);
        }
        // A rule that needs more bits than the megaflow's mask: removed.
        o.add_flow("br0", "priority=50000,ip,nw_src=1.2.3.4 actions=output:1")
            .unwrap();
        {
            let log = rec.log.lock().unwrap();
            assert_eq!(log.len(), 3, "{log:?}");
            assert!(log[2].starts_with("remove pmd0 "), "{}", log[2]);
        }
        assert_eq!(o.n_megaflows(), 0);
    }

    #[test]
    fn rule_counters_are_credited_from_megaflow_counters() {
        let rec = Recorder::default();
        let mut o = Ofproto::new(vec![bridge()], &rec, OfprotoConfig::default());
        o.add_flow("br0", "in_port=1 actions=output:2").unwrap();
        o.handle_upcall(0, key(10, "ip,nw_dst=10.0.0.1"), vec![]);
        let stats = o.flows.values().next().unwrap().stats.clone();
        stats.credit(5, 320, 0, 0);
        let dump = o.dump_flows("br0", None, false).unwrap();
        assert!(dump.contains("n_packets=5, n_bytes=320,"), "{dump}");
        stats.credit(1, 64, 0, 0);
        let dump = o.dump_flows("br0", None, false).unwrap();
        assert!(dump.contains("n_packets=6, n_bytes=384,"), "{dump}");
    }

    #[test]
    fn idle_megaflows_expire_and_limit_evicts() {
        let rec = Recorder::default();
        let cfg = OfprotoConfig {
            idle_ms: 0,
            flow_limit: 200_000,
        };
        let mut o = Ofproto::new(vec![bridge()], &rec, cfg);
        o.add_flow("br0", "in_port=1,ip actions=output:2").unwrap();
        o.handle_upcall(0, key(10, "ip"), vec![]);
        assert_eq!(o.n_megaflows(), 1);
        o.run_periodic();
        assert_eq!(o.n_megaflows(), 0);
        assert!(rec
            .log
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .starts_with("remove"));

        let cfg = OfprotoConfig {
            idle_ms: 1_000_000,
            flow_limit: 2,
        };
        let rec2 = Recorder::default();
        let mut o = Ofproto::new(vec![bridge()], &rec2, cfg);
        o.add_flow("br0", "in_port=1,ip,nw_dst=10.0.0.0/24 actions=output:2")
            .unwrap();
        o.add_flow("br0", "in_port=1,ip,nw_dst=10.0.1.0/24 actions=output:2")
            .unwrap();
        o.add_flow("br0", "in_port=1,ip,nw_dst=10.0.2.0/24 actions=output:2")
            .unwrap();
        for d in ["10.0.0.1", "10.0.1.1", "10.0.2.1"] {
            o.handle_upcall(0, key(10, &format!("ip,nw_dst={d}")), vec![]);
        }
        assert_eq!(o.n_megaflows(), 3);
        o.run_periodic();
        assert_eq!(o.n_megaflows(), 2);
    }

    #[test]
    fn errors_name_bridge_and_token() {
        let rec = Recorder::default();
        let mut o = Ofproto::new(vec![bridge()], &rec, OfprotoConfig::default());
        assert_eq!(
            o.add_flow("brX", "actions=drop").unwrap_err(),
            "no bridge named \"brX\""
        );
        let e = o
            .add_flow("br0", "nw_src=10.0.0.300 actions=drop")
            .unwrap_err();
        assert!(e.contains("10.0.0.300"), "{e}");
        // All or nothing.
        let e = o
            .add_flows(
                "br0",
                "in_port=1 actions=output:2\nin_port=2 actions=bogus\n",
            )
            .unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        // Only the bridge's default flow.
        let dump = o.dump_flows("br0", None, false).unwrap();
        assert_eq!(dump.lines().count(), 1, "{dump}");
        assert!(dump.ends_with(" priority=0 actions=NORMAL\n"), "{dump}");
    }

    #[test]
    fn trace_names_the_bridge_and_ends_with_datapath_actions() {
        let rec = Recorder::default();
        let mut o = Ofproto::new(vec![bridge()], &rec, OfprotoConfig::default());
        o.add_flow("br0", "in_port=1 actions=resubmit(,1)").unwrap();
        o.add_flow("br0", "table=1 actions=mod_vlan_vid:5,output:2")
            .unwrap();
        let t = o
            .trace("br0", "in_port=p1,dl_dst=00:00:00:00:00:01")
            .unwrap();
        assert!(t.contains("bridge(\"br0\")"), "{t}");
        assert_eq!(
            t.lines().last().unwrap(),
            "Datapath actions: push_vlan(vid=5,pcp=0),11",
            "{t}"
        );
        assert!(
            rec.log.lock().unwrap().is_empty(),
            "a trace installs nothing"
        );
    }

    // --- runtime changes -----------------------------------------------------

    #[test]
    fn ports_come_and_go_and_only_their_megaflows_change() {
        let rec = Recorder::default();
        let other = Bridge::new(
            "br1",
            vec![
                BridgePort {
                    name: "q1".into(),
                    ofport: 1,
                    odp: 20,
                },
                BridgePort {
                    name: "q2".into(),
                    ofport: 2,
                    odp: 21,
                },
            ],
        );
        let mut o = Ofproto::new(vec![three_ports(), other], &rec, OfprotoConfig::default());
        // One flood on each bridge.
        o.handle_upcall(0, l2(20, A, B), vec![]);
        o.handle_upcall(0, l2(10, A, B), vec![]);
        assert_eq!(
            log_of(&rec)[1],
            format!("install pmd0 {MEGAFLOW_AB} -> 11,12 +pkt")
        );

        // A new port of br0: br0's flood reaches it, br1 is untouched.
        let p4 = BridgePort {
            name: "p4".into(),
            ofport: 4,
            odp: 13,
        };
        o.add_port("br0", p4.clone(), VlanMode::default()).unwrap();
        assert_eq!(
            log_of(&rec),
            [format!("install pmd0 {MEGAFLOW_AB} -> 11,12,13")]
        );
        assert_eq!(
            o.add_port("br0", p4.clone(), VlanMode::default())
                .unwrap_err(),
            "port \"p4\": datapath port 13 is already in use"
        );
        assert_eq!(
            o.add_port("br0", BridgePort { odp: 14, ..p4 }, VlanMode::default())
                .unwrap_err(),
            "bridge \"br0\" already has a port \"p4\""
        );
        // Rules can name it at once.
        o.add_flow("br0", "priority=10,in_port=p4 actions=output:p1")
            .unwrap();
        log_of(&rec);

        // B answers from p2: unicast both ways.
        o.handle_upcall(0, l2(11, B, A), vec![]);
        assert_eq!(
            log_of(&rec),
            [
                format!("install pmd0 {MEGAFLOW_BA} -> 10 +pkt"),
                format!("install pmd0 {MEGAFLOW_AB} -> 11"),
            ]
        );
        // p2 goes: its megaflow is removed, B is forgotten, A -> B floods again
        // to the ports left.
        assert_eq!(o.del_port("br0", "p2").unwrap(), 11);
        assert_eq!(
            log_of(&rec),
            [
                format!("remove pmd0 {MEGAFLOW_BA}"),
                format!("install pmd0 {MEGAFLOW_AB} -> 12,13"),
            ]
        );
        assert_eq!(
            o.fdb_show("br0").unwrap(),
            " port  VLAN  MAC                Age\n\
             \x20   1     0  00:00:00:00:00:0a    0\n"
        );
        assert_eq!(
            o.del_port("br0", "p2").unwrap_err(),
            "bridge \"br0\" has no port \"p2\""
        );
        // p3 becomes an access port of VLAN 10: untagged A -> B (VLAN 0) no
        // longer floods there.
        o.set_port_vlan("br0", "p3", VlanMode::Access { tag: 10 })
            .unwrap();
        assert_eq!(log_of(&rec), [format!("install pmd0 {MEGAFLOW_AB} -> 13")]);

        // br1 goes with its megaflow; br0's stay.
        assert_eq!(o.del_bridge("br1").unwrap(), vec![20, 21]);
        let log = log_of(&rec);
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(log[0].starts_with("remove pmd0 ip,in_port=20,"), "{log:?}");
        assert_eq!(o.n_megaflows(), 1);
        assert_eq!(o.bridges().len(), 1);
        // A new bridge's ports upcall to it.
        let br2 = Bridge::new(
            "br2",
            vec![BridgePort {
                name: "r1".into(),
                ofport: 1,
                odp: 20,
            }],
        );
        o.add_bridge(br2).unwrap();
        o.handle_upcall(0, l2(20, A, B), vec![]);
        assert_eq!(o.stats.upcalls_no_bridge, 0);
        assert_eq!(
            o.macs("br2").unwrap().lookup(0, &l2(0, A, B).dl_src),
            Some(1)
        );
    }

    // --- NORMAL --------------------------------------------------------------

    const A: &str = "00:00:00:00:00:0a";
    const B: &str = "00:00:00:00:00:0b";

    fn three_ports() -> Bridge {
        Bridge::new(
            "br0",
            (1..=3)
                .map(|i| BridgePort {
                    name: format!("p{i}"),
                    ofport: i,
                    odp: 9 + i as usize,
                })
                .collect(),
        )
    }

    /// An IPv4 frame from `src` to `dst` received on datapath port `odp`.
    fn l2(odp: u32, src: &str, dst: &str) -> FlowKey {
        key(
            odp,
            &format!("dl_src={src},dl_dst={dst},ip,nw_src=10.0.0.1,nw_dst=10.0.0.2"),
        )
    }

    fn log_of(rec: &Recorder) -> Vec<String> {
        std::mem::take(&mut *rec.log.lock().unwrap())
    }

    /// The megaflow whose key has this `dl_src` and datapath `in_port`.
    fn flow_stats(o: &Ofproto<&Recorder>, odp: u32, src: &str) -> Arc<FlowStats> {
        let mac = parse_key(&format!("dl_src={src}"), &PortMap::new())
            .unwrap()
            .dl_src;
        o.flows
            .values()
            .find(|f| f.key.in_port == odp && f.key.dl_src == mac)
            .map(|f| f.stats.clone())
            .expect("megaflow")
    }

    const MEGAFLOW_AB: &str =
        "ip,in_port=10,vlan_tci=0x0000,dl_src=00:00:00:00:00:0a,dl_dst=00:00:00:00:00:0b,nw_frag=no";
    const MEGAFLOW_BA: &str =
        "ip,in_port=11,vlan_tci=0x0000,dl_src=00:00:00:00:00:0b,dl_dst=00:00:00:00:00:0a,nw_frag=no";

    #[test]
    fn default_flow_is_priority_0_normal() {
        let b = three_ports();
        let rules: Vec<_> = b.tables.iter().collect();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            pipeline::ofproto::syntax::format_flow(&rules[0].1.flow, &FormatOptions::default()),
            DEFAULT_FLOW
        );
    }

    #[test]
    fn normal_floods_then_learns_and_revalidates_the_flood_to_unicast() {
        let rec = Recorder::default();
        let mut o = Ofproto::new(vec![three_ports()], &rec, OfprotoConfig::default());
        // A -> B, B unknown: flooded to every port but the input.
        o.handle_upcall(0, l2(10, A, B), vec![]);
        assert_eq!(
            log_of(&rec),
            [format!("install pmd0 {MEGAFLOW_AB} -> 11,12 +pkt")]
        );
        assert_eq!(
            o.macs("br0")
                .unwrap()
                .lookup(0, &o.flows.values().next().unwrap().key.dl_src),
            Some(1)
        );
        // B -> A: A was learned, so unicast; B is learned, and the flood of
        // A -> B becomes a unicast to B in place.
        o.handle_upcall(0, l2(11, B, A), vec![]);
        assert_eq!(
            log_of(&rec),
            [
                format!("install pmd0 {MEGAFLOW_BA} -> 10 +pkt"),
                format!("install pmd0 {MEGAFLOW_AB} -> 11"),
            ]
        );
        assert_eq!(o.stats.mac_revalidations, 2);
        assert_eq!(o.stats.megaflows_updated, 1);
        assert_eq!(o.n_megaflows(), 2);
        assert_eq!(
            o.fdb_show("br0").unwrap(),
            " port  VLAN  MAC                Age\n\
             \x20   1     0  00:00:00:00:00:0a    0\n\
             \x20   2     0  00:00:00:00:00:0b    0\n"
        );
        // Nothing more changes on a third upcall of known hosts (another flow).
        o.handle_upcall(1, l2(10, A, B), vec![]);
        assert_eq!(
            log_of(&rec),
            [format!("install pmd1 {MEGAFLOW_AB} -> 11 +pkt")]
        );
        assert_eq!(o.stats.mac_revalidations, 2);
    }

    #[test]
    fn a_batch_of_upcalls_is_revalidated_at_its_end() {
        let rec = Recorder::default();
        let mut o = Ofproto::new(vec![three_ports()], &rec, OfprotoConfig::default());
        o.handle_upcall_deferred(0, l2(10, A, B), vec![]);
        o.handle_upcall_deferred(0, l2(11, B, A), vec![]);
        assert_eq!(
            log_of(&rec),
            [
                format!("install pmd0 {MEGAFLOW_AB} -> 11,12 +pkt"),
                format!("install pmd0 {MEGAFLOW_BA} -> 10 +pkt"),
            ]
        );
        o.revalidate_pending();
        assert_eq!(log_of(&rec), [format!("install pmd0 {MEGAFLOW_AB} -> 11")]);
        assert_eq!(o.stats.mac_revalidations, 1);
    }

    #[test]
    fn a_moved_mac_redirects_its_unicast_megaflows() {
        let rec = Recorder::default();
        let mut o = Ofproto::new(vec![three_ports()], &rec, OfprotoConfig::default());
        o.handle_upcall(0, l2(10, A, B), vec![]);
        o.handle_upcall(0, l2(11, B, A), vec![]);
        log_of(&rec);
        // A shows up on p3.
        o.handle_upcall(0, l2(12, A, B), vec![]);
        let log = log_of(&rec);
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(
            log[0].starts_with("install pmd0 ip,in_port=12,") && log[0].ends_with(" -> 11 +pkt"),
            "{log:?}"
        );
        assert_eq!(log[1], format!("install pmd0 {MEGAFLOW_BA} -> 12"));
        assert_eq!(o.macs("br0").unwrap().stats().moved, 1);
        // A back on p1: its old megaflow there still exists, so no upcall; its
        // activity moves A back at the next period.
        flow_stats(&o, 10, A).credit(3, 192, 100, 0);
        o.run_periodic();
        assert_eq!(log_of(&rec), [format!("install pmd0 {MEGAFLOW_BA} -> 10")]);
        assert_eq!(o.macs("br0").unwrap().stats().moved, 2);
    }

    #[test]
    fn the_last_used_megaflow_wins_a_mac_seen_on_two_ports() {
        let rec = Recorder::default();
        let mut o = Ofproto::new(vec![three_ports()], &rec, OfprotoConfig::default());
        o.handle_upcall(0, l2(10, A, B), vec![]);
        o.handle_upcall(0, l2(11, B, A), vec![]);
        o.handle_upcall(0, l2(12, A, B), vec![]);
        log_of(&rec);
        // Both of A's megaflows forwarded this period; p3's last (the move).
        flow_stats(&o, 12, A).credit(1, 64, 2_000, 0);
        flow_stats(&o, 10, A).credit(1, 64, 1_000, 0);
        o.run_periodic();
        assert_eq!(log_of(&rec), Vec::<String>::new(), "A stays on p3");
        assert_eq!(o.macs("br0").unwrap().stats().moved, 1);
    }

    #[test]
    fn an_aged_out_mac_floods_again_unless_its_megaflows_are_used() {
        let rec = Recorder::default();
        let cfg = OfprotoConfig {
            idle_ms: u64::MAX,
            flow_limit: 200_000,
        };
        let mut o = Ofproto::new(vec![three_ports()], &rec, cfg);
        o.handle_upcall(0, l2(10, A, B), vec![]);
        o.handle_upcall(0, l2(11, B, A), vec![]);
        log_of(&rec);
        // A keeps sending (its megaflow's counters move), B is silent.
        o.warp(200_000);
        flow_stats(&o, 10, A).credit(10, 640, 1, 0);
        o.run_periodic();
        assert_eq!(log_of(&rec), Vec::<String>::new());
        o.warp(100_000);
        o.run_periodic();
        // 300 s after B was last seen, it ages out: A -> B floods again; B -> A
        // still goes to A, seen 100 s ago.
        assert_eq!(
            log_of(&rec),
            [format!("install pmd0 {MEGAFLOW_AB} -> 11,12")]
        );
        assert_eq!(
            o.fdb_show("br0").unwrap(),
            " port  VLAN  MAC                Age\n\
             \x20   1     0  00:00:00:00:00:0a  100\n"
        );
        o.warp(200_000);
        o.run_periodic();
        assert_eq!(
            log_of(&rec),
            [format!("install pmd0 {MEGAFLOW_BA} -> 10,12")]
        );
        assert!(o.macs("br0").unwrap().is_empty());
        assert_eq!(o.macs("br0").unwrap().stats().expired, 2);
    }

    #[test]
    fn fdb_flush_floods_until_activity_relearns() {
        let rec = Recorder::default();
        let mut o = Ofproto::new(vec![three_ports()], &rec, OfprotoConfig::default());
        o.handle_upcall(0, l2(10, A, B), vec![]);
        o.handle_upcall(0, l2(11, B, A), vec![]);
        log_of(&rec);
        assert_eq!(
            o.fdb_flush(Some("br0")).unwrap(),
            "table successfully flushed\n"
        );
        let mut log = log_of(&rec);
        log.sort();
        assert_eq!(
            log,
            [
                format!("install pmd0 {MEGAFLOW_AB} -> 11,12"),
                format!("install pmd0 {MEGAFLOW_BA} -> 10,12"),
            ]
        );
        // A's frames still hit their megaflow (no upcall): its counters bring
        // A back into the table, and B -> A is unicast again.
        flow_stats(&o, 10, A).credit(1, 64, 1, 0);
        o.run_periodic();
        assert_eq!(log_of(&rec), [format!("install pmd0 {MEGAFLOW_BA} -> 10")]);
        assert_eq!(o.fdb_flush(None).unwrap(), "table successfully flushed\n");
        assert_eq!(
            o.fdb_flush(Some("brX")).unwrap_err(),
            "no bridge named \"brX\""
        );
        assert_eq!(o.fdb_show("brX").unwrap_err(), "no bridge named \"brX\"");
    }

    #[test]
    fn fdb_add_turns_a_flood_into_a_unicast_that_never_ages() {
        let rec = Recorder::default();
        let cfg = OfprotoConfig {
            idle_ms: u64::MAX,
            flow_limit: 200_000,
        };
        let mut o = Ofproto::new(vec![three_ports()], &rec, cfg);
        o.handle_upcall(0, l2(10, A, B), vec![]);
        assert_eq!(
            log_of(&rec),
            [format!("install pmd0 {MEGAFLOW_AB} -> 11,12 +pkt")]
        );
        // B is static on p2: the flood is revalidated to a unicast.
        assert_eq!(o.fdb_add("br0", "p2", "0", B).unwrap(), "");
        assert_eq!(log_of(&rec), [format!("install pmd0 {MEGAFLOW_AB} -> 11")]);
        // B's frames from p3 do not move it; ageing does not remove it.
        o.handle_upcall(0, l2(12, B, A), vec![]);
        log_of(&rec);
        assert_eq!(
            o.macs("br0").unwrap().lookup(0, &[0, 0, 0, 0, 0, 0x0b]),
            Some(2)
        );
        o.warp(1_000_000);
        o.run_periodic();
        assert_eq!(
            o.macs("br0").unwrap().lookup(0, &[0, 0, 0, 0, 0, 0x0b]),
            Some(2)
        );
        assert_eq!(
            o.fdb_show("br0").unwrap(),
            " port  VLAN  MAC                Age\n\
             \x20   2     0  00:00:00:00:00:0b  static\n"
        );
        // fdb-del: A -> B floods again.
        log_of(&rec);
        assert_eq!(o.fdb_del("br0", "0", B).unwrap(), "");
        assert!(log_of(&rec).contains(&format!("install pmd0 {MEGAFLOW_AB} -> 11,12")));
        assert_eq!(
            o.fdb_del("br0", "0", B).unwrap_err(),
            "no static entry for MAC 00:00:00:00:00:0b in VLAN 0"
        );
    }

    #[test]
    fn trace_decides_by_the_mac_table_without_learning() {
        let rec = Recorder::default();
        let mut o = Ofproto::new(vec![three_ports()], &rec, OfprotoConfig::default());
        let t = o
            .trace("br0", &format!("in_port=p1,dl_src={A},dl_dst={B}"))
            .unwrap();
        // Datapath ports, as OVS prints them (p2 and p3 are 11 and 12).
        assert_eq!(t.lines().last().unwrap(), "Datapath actions: 11,12", "{t}");
        assert!(
            t.contains("no learned MAC for destination, flooding"),
            "{t}"
        );
        assert!(o.macs("br0").unwrap().is_empty(), "a trace learns nothing");
        o.handle_upcall(0, l2(11, B, A), vec![]);
        let t = o
            .trace("br0", &format!("in_port=p1,dl_src={A},dl_dst={B}"))
            .unwrap();
        assert_eq!(t.lines().last().unwrap(), "Datapath actions: 11", "{t}");
    }

    #[test]
    fn del_flows_removes_the_default_flow_for_good() {
        let rec = Recorder::default();
        let mut o = Ofproto::new(vec![three_ports()], &rec, OfprotoConfig::default());
        o.handle_upcall(0, l2(10, A, B), vec![]);
        log_of(&rec);
        assert_eq!(o.del_flows("br0", None, false).unwrap(), 1);
        // The flood megaflow now drops.
        assert_eq!(
            log_of(&rec),
            [format!("install pmd0 {MEGAFLOW_AB} -> drop")]
        );
        o.run_periodic();
        assert_eq!(o.dump_flows("br0", None, false).unwrap(), "");
        o.handle_upcall(0, l2(11, B, A), vec![]);
        let log = log_of(&rec);
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(log[0].ends_with(" -> drop +pkt"), "{log:?}");
    }

    fn config_bridges(toml: &str) -> Vec<Bridge> {
        let cfg = Config::from_toml_str(toml).unwrap();
        cfg.validate(&crate::config::HostFacts {
            ncpus: 2,
            hugepages_free: 1,
            hugetlbfs_mounted: true,
        })
        .unwrap();
        bridges_from_config(&cfg).unwrap()
    }

    const VLAN_BRIDGE: &str = r#"
[[bridge]]
name = "br0"
mac_aging_time = 60
mac_table_size = 100
  [[bridge.port]]
  name = "a1"
  tag = 10
  options = { dpdk-devargs = "net_ring0" }
  [[bridge.port]]
  name = "a2"
  tag = 10
  options = { dpdk-devargs = "net_ring1" }
  [[bridge.port]]
  name = "a3"
  vlan_mode = "access"
  tag = 20
  options = { dpdk-devargs = "net_ring2" }
  [[bridge.port]]
  name = "t"
  trunks = [10, 20]
  options = { dpdk-devargs = "net_ring3" }
"#;

    #[test]
    fn vlan_modes_and_mac_table_settings_come_from_the_config() {
        let bridges = config_bridges(VLAN_BRIDGE);
        let b = &bridges[0];
        assert_eq!(b.normal.macs().aging_secs(), 60);
        assert_eq!(b.normal.macs().max_entries(), 100);
        assert_eq!(b.normal.port_mode(1), &VlanMode::Access { tag: 10 });
        assert_eq!(b.normal.port_mode(3), &VlanMode::Access { tag: 20 });
        let rec = Recorder::default();
        let mut o = Ofproto::new(bridges, &rec, OfprotoConfig::default());
        // Untagged broadcast on access port a1 (VLAN 10): to a2 untagged, to
        // the trunk and the bridge's own port (LOCAL, datapath port 4, a trunk
        // of every VLAN) tagged 10; never to a3 (VLAN 20).
        o.handle_upcall(
            0,
            key(0, &format!("dl_src={A},dl_dst=ff:ff:ff:ff:ff:ff")),
            vec![],
        );
        let log = log_of(&rec);
        assert_eq!(log.len(), 1);
        assert!(
            log[0].ends_with(" -> 1,push_vlan(vid=10,pcp=0),3,4 +pkt"),
            "{log:?}"
        );
        // VLAN 20 from the trunk to A's MAC, unknown in VLAN 20: to a3, untagged,
        // and to LOCAL, tagged.
        o.handle_upcall(
            0,
            key(3, &format!("dl_src={B},dl_dst={A},dl_vlan=20")),
            vec![],
        );
        let log = log_of(&rec);
        assert_eq!(log.len(), 1);
        assert!(
            log[0].ends_with(" -> pop_vlan,2,push_vlan(vid=20,pcp=0),4 +pkt"),
            "{log:?}"
        );
        // VLAN 10 from the trunk to A: learned in VLAN 10 on a1.
        o.handle_upcall(
            0,
            key(3, &format!("dl_src={B},dl_dst={A},dl_vlan=10")),
            vec![],
        );
        let log = log_of(&rec);
        assert!(log[0].ends_with(" -> pop_vlan,0 +pkt"), "{log:?}");
        // A tagged frame on an access port is dropped, and teaches nothing.
        o.handle_upcall(
            0,
            key(
                1,
                &format!("dl_src=00:00:00:00:00:0c,dl_dst={A},dl_vlan=10"),
            ),
            vec![],
        );
        let log = log_of(&rec);
        assert!(log[0].ends_with(" -> drop +pkt"), "{log:?}");
        assert_eq!(
            o.fdb_show("br0").unwrap(),
            " port  VLAN  MAC                Age\n\
             \x20   1    10  00:00:00:00:00:0a    0\n\
             \x20   4    20  00:00:00:00:00:0b    0\n\
             \x20   4    10  00:00:00:00:00:0b    0\n"
        );
    }

    #[test]
    fn the_bridge_port_is_local_in_flows_and_normal() {
        let bridges = config_bridges(
            "[[bridge]]\nname = \"br0\"\nflows = [\"priority=10,in_port=LOCAL,ip actions=output:p1\", \"priority=10,in_port=p1,ip actions=br0\"]\n[[bridge.port]]\nname = \"p1\"\noptions = { dpdk-devargs = \"net_ring0\" }\n",
        );
        let b = &bridges[0];
        assert_eq!(
            b.ports,
            [
                BridgePort {
                    name: "p1".into(),
                    ofport: 1,
                    odp: 0
                },
                BridgePort {
                    name: "br0".into(),
                    ofport: pipeline::flow_key::OFPP_LOCAL,
                    odp: 1
                },
            ]
        );
        let rec = Recorder::default();
        let mut o = Ofproto::new(bridges, &rec, OfprotoConfig::default());
        let mut dump: Vec<String> = o
            .dump_flows("br0", None, false)
            .unwrap()
            .lines()
            .map(|l| l.split_once("priority=").map_or(l, |(_, r)| r).to_string())
            .collect();
        dump.sort();
        assert_eq!(
            dump,
            [
                "0 actions=NORMAL",
                "10,ip,in_port=1 actions=LOCAL",
                "10,ip,in_port=LOCAL actions=output:1",
            ]
        );
        // Datapath port 1 is the bridge's own port.
        o.handle_upcall(0, key(1, "ip,nw_dst=10.0.0.1"), vec![]);
        {
            let l = log_of(&rec);
            assert!(l.len() == 1 && l[0].ends_with(" -> 0 +pkt"), "{l:?}");
        }
        o.handle_upcall(0, key(0, "ip,nw_dst=10.0.0.254"), vec![]);
        {
            let l = log_of(&rec);
            assert!(l.len() == 1 && l[0].ends_with(" -> 1 +pkt"), "{l:?}");
        }
        // NORMAL floods to it (and from it).
        o.handle_upcall(
            0,
            key(0, &format!("arp,dl_src={A},dl_dst=ff:ff:ff:ff:ff:ff")),
            vec![],
        );
        {
            let l = log_of(&rec);
            assert!(l.len() == 1 && l[0].ends_with(" -> 1 +pkt"), "{l:?}");
        }
        o.handle_upcall(
            0,
            key(1, &format!("arp,dl_src={B},dl_dst=ff:ff:ff:ff:ff:ff")),
            vec![],
        );
        {
            let l = log_of(&rec);
            assert!(l.len() == 1 && l[0].ends_with(" -> 0 +pkt"), "{l:?}");
        }
        assert!(o
            .fdb_show("br0")
            .unwrap()
            .contains(&format!("LOCAL     0  {B}")));
    }

    #[test]
    fn config_flows_go_on_top_of_the_default_flow() {
        let with = |flows: &str| {
            config_bridges(&format!(
                "[[bridge]]\nname = \"br0\"\nflows = [{flows}]\n[[bridge.port]]\nname = \"p1\"\noptions = {{ dpdk-devargs = \"net_ring0\" }}\n"
            ))
        };
        let dump = |b: &Bridge| -> Vec<String> {
            b.tables
                .iter()
                .map(|(_, r)| {
                    pipeline::ofproto::syntax::format_flow(&r.flow, &FormatOptions::default())
                })
                .collect()
        };
        let b = with("\"priority=0 actions=drop\"");
        assert_eq!(dump(&b[0]), ["priority=0 actions=drop"]);
        let b = with("\"in_port=1 actions=drop\"");
        let mut flows = dump(&b[0]);
        flows.sort();
        assert_eq!(flows, ["in_port=1 actions=drop", DEFAULT_FLOW]);
        let b = with("");
        assert_eq!(dump(&b[0]), [DEFAULT_FLOW]);
    }
}
