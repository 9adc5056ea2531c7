//! Translation ("xlate"): runs a packet's flow key through the OpenFlow tables and
//! produces datapath actions, the megaflow mask, learned flows, the rules hit and
//! (optionally) a trace, as OVS's `ofproto/ofproto-dpif-xlate.c` does.
//!
//! # Layer
//!
//! Management thread only (upcalls, revalidation, `ofproto/trace`). Pure: no I/O,
//! no clock; the tables are only read. Learned flows come back as
//! [`Translation::learned`] and are applied by the caller
//! ([`translate_and_learn`] does both), so, as in OVS, a translation never sees
//! the flows it learns itself.
//!
//! # Semantics mirrored from OVS
//!
//! * Lookup starts in table 0. A table miss drops (no controller); after a
//!   `resubmit` that misses, the calling action list continues.
//! * `resubmit(P,T)` looks up with `in_port = P` but runs the rule's actions with the
//!   packet's own in_port (OVS restores it before executing). `goto_table` behaves as
//!   a final resubmit. Depth is bounded by [`MAX_RESUBMIT_DEPTH`] (64), the total
//!   number of resubmits by [`MAX_RESUBMITS`] and the actions executed by
//!   [`MAX_ACTIONS`]: exceeding one ends translation with [`XlateError`] and the
//!   datapath actions become a counted `drop`, never a hang or a panic.
//! * Output to the input port is skipped except through `in_port`/`IN_PORT`;
//!   `FLOOD` and `ALL` send to every bridge port but the input port; outputs to
//!   ports the bridge does not have are skipped (OVS: "Nonexistent output port").
//!   `LOCAL` always exists.
//! * Header changes are committed lazily (OVS `commit_odp_actions`): the translator
//!   tracks the flow as the actions left it and as the datapath last saw it, and
//!   before each output emits only what changed, in OVS's order: tunnel, Ethernet,
//!   L3 (IPv4/IPv6/ARP), L4 ports, ICMP, then VLAN pops/pushes. Set actions carry
//!   only the changed fields (masked sets with full-field masks).
//! * `mod_vlan_vid`/`mod_vlan_pcp` push a tag when there is none (OpenFlow 1.0
//!   behaviour); `strip_vlan`/`pop_vlan` remove the outer tag; `push_vlan` pushes an
//!   empty tag (VID 0).
//! * `set_field`, `load` and `move` touch a field only when the packet has it
//!   (prerequisites checked on the current flow, OVS `mf_are_prereqs_ok`).
//! * `dec_ttl` on a TTL of 0 or 1 sends the packet to the controller (counted) and
//!   stops the current action list.
//! * `learn` builds a flow from the packet's current fields; the caller applies it
//!   with [`Tables::learn`] (add, or refresh/modify an identical one).
//! * `NORMAL` asks a [`NormalHook`] (the bridge's learning switch,
//!   [`super::normal::Normal`]) for its outputs, each with the outer VLAN tag the
//!   packet must carry there; the translator sets that tag on the flow, commits
//!   (so a retag becomes `push_vlan`/`pop_vlan` exactly as `mod_vlan_vid` or
//!   `strip_vlan` would), outputs, and puts the flow's tags back, so actions
//!   after `NORMAL` see the packet as it was. Without a hook `NORMAL` outputs
//!   nothing and flags [`Translation::normal_unsupported`].
//!
//! * Patch ports ([`translate_bridges`]): an output to one continues in the
//!   peer bridge within the same translation (OVS `patch_port_output`).
//!
//! # Native tunneling ([`translate_bridges_with`] and a [`TunnelEnv`])
//!
//! * Output to a tunnel port ([`XlateBridge::tunnels`], OVS's
//!   `native_tunnel_output`): the remote is the port's `remote_ip` or the
//!   flow's `tun_dst` (`remote_ip=flow`), the key its `out_key` or the flow's
//!   `tun_id` (`key=flow`); [`TunnelEnv::route`] gives the bridge and internal
//!   port the outer packet leaves by and the outer source (unless `local_ip`
//!   is set), [`TunnelEnv::neighbor`] the next hop's MAC. Header changes are
//!   committed (not the tunnel metadata: it goes into the header), the outer
//!   headers are built once ([`TunnelHeader::new`]), and the outer packet is
//!   translated in the route's bridge as if received on the route's port: its
//!   tables (`NORMAL`, VLAN tags, bonds) decide where it goes, without
//!   learning and with its mask bits dropped (they read the outer headers,
//!   constants of this translation). The result is one
//!   [`DpAction::TunnelPush`] carrying those actions. No route, no neighbor
//!   (then [`TunnelEnv::neighbor_miss`] queues an ARP request), a header that
//!   cannot be built, or an outer translation that outputs nothing: no output,
//!   with a trace note and a counter ([`Translation::tunnel`]). A remote equal
//!   to the address the packet itself was tunnelled to is refused (OVS: "Not
//!   tunneling to our own address").
//! * Terminating (OVS's `terminate_native_tunnel`): an output to an internal
//!   port ([`XlateBridge::internal`]) that [`TunnelEnv::port_has_ip`], of an
//!   untagged, unfragmented IPv4 packet to a local address
//!   ([`TunnelEnv::is_local_ip`]) on a tunnel's protocol (GRE, or UDP to the
//!   `dst_port` of a VXLAN or Geneve port of any bridge) becomes
//!   [`DpAction::TunnelPop`] of that tunnel's datapath port. When the env knows
//!   the port's MAC ([`TunnelEnv::port_mac`]) the destination MAC must be it.
//!   ARP going to such a port is snooped into the neighbor cache
//!   ([`TunnelEnv::snoop`]) on upcalls, and output as usual.
//! * The outer TOS is the port's `tos` (or the inner DSCP with
//!   `tos=inherit`), its ECN bits the inner packet's (CE sent as ECT(0)); the
//!   TTL the port's `ttl` (or the inner one with `ttl=inherit`).
//! * [`Translation::tunnel`] says whether the result depends on the env
//!   (routes, neighbors, addresses): such megaflows are revalidated when
//!   [`TunnelEnv::generation`] moves.
//!
//! # The megaflow mask
//!
//! [`Translation::mask`] has a 1 for every key bit the result depended on, and is
//! sound: any key equal to the input on those bits translates to the same datapath
//! actions (property-tested). It is the union of:
//! * `in_port`, `recirc_id`, `dl_type` (and `nw_frag` for IP), always, as OVS;
//! * the mask of every subtable probed by each lookup (see `table`);
//! * the bits read by actions (move/learn/output:reg sources, prerequisite fields,
//!   `dec_ttl`'s TTL), the bits written by set actions (whether a set is emitted
//!   depends on the original value), every VLAN field when VLAN tags are touched,
//!   and every field a committed set action carries in full.
//!
//! Across patch ports it is the union over every bridge visited, less what the
//! peer reads of the fields it sees cleared (registers, `metadata`, tunnel):
//! constants there, not key bits (property-tested with two bridges).
//!
//! # Deviations
//!
//! * No mirrors, conntrack, groups, meters or recirculation;
//!   `set(tunnel(..))` is committed before outputs to ordinary ports too (OVS
//!   commits the tunnel only at tunnel ports); at a tunnel port the tunnel
//!   metadata goes into the pushed header instead.
//! * Geneve options are `tun_metadata0`..`tun_metadata3` through one TLV
//!   map for the switch ([`BridgesOptions::tlv_map`], see
//!   [`crate::tun_metadata`]).
//! * ARP requests, not only replies and gratuitous ARPs, are snooped (as the
//!   Linux kernel learns from requests it receives).
//! * `fin_idle_timeout`/`fin_hard_timeout` of `learn` are ignored.

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::action::{Action, LearnField, LearnSpec, OFPP_LOCAL, OFPP_MAX};
use super::field::{Field, Subfield};
use super::flow_match::Match;
use super::rule::{FlowMod, FlowModFlags};
use super::table::{LearnOutcome, RuleId, Tables};
use super::tnl::{TnlInherit, TnlKey, XlateTunnel, DEFAULT_TTL};
use crate::actions::DpAction;
use crate::flow_key::{
    FlowKey, ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_RARP, ETH_TYPE_VLAN_8021Q,
    FLOW_MAX_VLAN_HEADERS, FLOW_NW_FRAG_LATER, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP,
    IPPROTO_TCP, IPPROTO_UDP, VLAN_CFI, VLAN_PCP_MASK, VLAN_PCP_SHIFT, VLAN_VID_MASK,
};
use crate::tun_metadata::TlvMap;
use crate::tunnel::{TunnelHeader, TunnelKind, TunnelSpec, IPPROTO_GRE};

/// Deepest resubmit/goto nesting (OVS `MAX_DEPTH`).
pub const MAX_RESUBMIT_DEPTH: usize = 64;
/// Most resubmits in one translation (OVS `MAX_RESUBMITS` = 64 * 64).
pub const MAX_RESUBMITS: usize = MAX_RESUBMIT_DEPTH * MAX_RESUBMIT_DEPTH;
/// Most actions executed in one translation (above [`MAX_RESUBMITS`], since every
/// resubmit is an action).
pub const MAX_ACTIONS: usize = 4 * MAX_RESUBMITS;

/// Why a translation was cut short (its datapath actions are then `drop`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum XlateError {
    /// Resubmits nested deeper than [`MAX_RESUBMIT_DEPTH`] (usually a loop).
    #[error("resubmit nested deeper than {MAX_RESUBMIT_DEPTH} (loop?), packet dropped")]
    TooDeep,
    /// More than [`MAX_RESUBMITS`] resubmits.
    #[error("more than {MAX_RESUBMITS} resubmits, packet dropped")]
    TooManyResubmits,
    /// More than [`MAX_ACTIONS`] actions executed.
    #[error("more than {MAX_ACTIONS} actions executed, packet dropped")]
    TooManyActions,
}

/// The text `NORMAL` reports until the learning switch exists.
pub const NORMAL_UNSUPPORTED: &str =
    "NORMAL is not supported yet (learning switch comes with the bridging issue)";

/// One output of a `NORMAL` decision: a port and the outer VLAN tag the packet
/// carries on the wire there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormalOutput {
    /// The OpenFlow port.
    pub port: u32,
    /// The outer tag's TCI (VID and PCP; the CFI bit is set by the translator),
    /// or `None` for no outer tag: an outer tag the packet has is popped, as by
    /// `strip_vlan`, and an inner one becomes the outer. A tag given for an
    /// untagged packet is pushed with TPID 0x8100; a tagged packet keeps its TPID.
    pub vlan: Option<u16>,
}

impl NormalOutput {
    /// An output that leaves the packet's VLAN tags as `flow` has them.
    pub fn unchanged(port: u32, flow: &FlowKey) -> Self {
        let tci = flow.vlan_tci[0];
        NormalOutput {
            port,
            vlan: (tci & VLAN_CFI != 0).then_some(tci),
        }
    }
}

/// A remark a `NORMAL` decision leaves in the trace (`ofproto/trace`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormalNote {
    /// Printed ` -> text` (OVS `OFT_DETAIL`), e.g. "forwarding to learned port".
    Detail(&'static str),
    /// Printed ` >> text` (OVS `OFT_WARN`), e.g. a VLAN the port does not carry.
    Warn(&'static str),
}

/// What `NORMAL` does with a packet: the outputs, in order (none = drop), and
/// why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NormalDecision {
    /// Where the packet goes, each with its outer VLAN tag.
    pub outputs: Vec<NormalOutput>,
    /// A remark for the trace.
    pub note: Option<NormalNote>,
}

/// The L2 learning switch behind the `NORMAL` action, supplied by the caller.
pub trait NormalHook {
    /// Where `flow` goes among the bridge's `ports`. The translator skips the
    /// input port and ports the bridge lacks, and before each output sets the
    /// outer tag the output asks for and commits header changes. Every key bit
    /// the decision read must be OR-ed into `wc`; the VLAN bits an output's
    /// retag depends on are marked by the commit.
    fn normal(&mut self, flow: &FlowKey, wc: &mut FlowKey, ports: &[u32]) -> NormalDecision;
    /// Whether the decisions that follow may learn (side effects). The
    /// translator turns learning off while it translates an encapsulated
    /// packet in the underlay bridge (OVS disables side effects there) and on
    /// again otherwise. Default: ignored.
    fn set_learning(&mut self, _on: bool) {}
}

/// The route native tunneling found for a remote endpoint
/// ([`TunnelEnv::route`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TnlRoute {
    /// The bridge that owns the route: the encapsulated packet continues there.
    pub bridge: String,
    /// The internal port of that bridge the route's prefix lives on (the
    /// packet enters the bridge as if sent by it; OVS's `out_dev`).
    pub port: String,
    /// That port's MAC: the outer Ethernet source.
    pub mac: [u8; 6],
    /// Outer IPv4 source, host order: the route's preferred source.
    pub src: u32,
    /// The next hop, host order: the gateway, or the destination itself on a
    /// directly connected prefix.
    pub next_hop: u32,
    /// The path MTU (IP bytes): the MTU of `port` in the kernel. An
    /// encapsulated packet longer than this is dropped (and counted) by the
    /// datapath: the inner packet may have this minus the outer headers.
    pub mtu: u16,
}

/// What native tunneling asks of the slow path's route and neighbor tables,
/// supplied by the caller of translation.
pub trait TunnelEnv {
    /// Longest-prefix match for the destination `dst` (host order).
    fn route(&self, dst: u32) -> Option<TnlRoute>;
    /// The neighbor cache's MAC for `ip` (host order) on `bridge`.
    fn neighbor(&self, bridge: &str, ip: u32) -> Option<[u8; 6]>;
    /// Whether `ip` (host order) is an address of one of the switch's internal
    /// ports: a tunnel packet sent to it is for a local endpoint.
    fn is_local_ip(&self, ip: u32) -> bool;
    /// Whether internal port `port` has an IPv4 address (OVS's
    /// `xport_has_ip`): only outputs to such ports can end a native tunnel.
    fn port_has_ip(&self, port: &str) -> bool;
    /// Learns `ip` at `mac` on `bridge` from an ARP packet translation sees
    /// going to a port with an IP (OVS's `tnl_neigh_snoop`).
    fn snoop(&mut self, bridge: &str, ip: u32, mac: [u8; 6]);
    /// Records that translation found no neighbor for `route.next_hop`: the
    /// implementation queues an ARP request for it (rate-limited per address).
    fn neighbor_miss(&mut self, route: &TnlRoute);
    /// The ARP requests due now (queued by [`TunnelEnv::neighbor_miss`]), each
    /// as the route it resolves: the slow path sends each from `route.port`
    /// (source `route.mac`/`route.src`, target `route.next_hop`).
    fn take_arp_requests(&mut self) -> Vec<TnlRoute>;
    /// Moves whenever a route, a neighbor or a local address changes: the slow
    /// path then revalidates the megaflows of tunnel traffic.
    fn generation(&self) -> u64;
    /// The MAC of internal port `port`, if known: a packet output there ends a
    /// native tunnel only if it is addressed to it (OVS's tunnel port map
    /// matches the device's MAC). Default: unknown, not checked.
    fn port_mac(&self, _port: &str) -> Option<[u8; 6]> {
        None
    }
}

/// What native tunneling did in one translation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelUse {
    /// The result depends on the [`TunnelEnv`] (a route, a neighbor, a local
    /// address or an internal port's address was consulted): revalidate the
    /// megaflow when [`TunnelEnv::generation`] moves.
    pub env: bool,
    /// Encapsulations emitted ([`DpAction::TunnelPush`]).
    pub pushes: u32,
    /// Decapsulations emitted ([`DpAction::TunnelPop`]).
    pub pops: u32,
    /// Tunnel outputs dropped: no route to the remote (or no remote, or no
    /// tunnel environment).
    pub no_route: u32,
    /// Tunnel outputs dropped: the next hop's MAC is unknown (an ARP request
    /// was queued, except in traces).
    pub neighbor_miss: u32,
    /// Tunnel outputs dropped: the outer header could not be built (a key too
    /// wide for the kind), or the outer packet went nowhere.
    pub bad_header: u32,
    /// ARP packets snooped into the neighbor cache.
    pub snooped: u32,
}

/// One line of a trace, with its nesting depth: the lookup in table 0 is at depth
/// 0, the actions of a rule (and the lookups they resubmit to) one deeper than
/// its table. Events are in execution order (a pre-order walk of the trace tree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// A lookup in `table`; `rule` is the rule hit, with its text (`match,
    /// priority N`), or `None` for a miss.
    Table {
        /// Nesting depth.
        depth: usize,
        /// Table id.
        table: u8,
        /// The rule hit and its description.
        rule: Option<(RuleId, String)>,
    },
    /// An action executed, in `ovs-ofctl` syntax.
    Action {
        /// Nesting depth (that of the table whose rule it belongs to).
        depth: usize,
        /// The action's text.
        text: String,
    },
    /// A remark on the preceding action (printed ` -> text`).
    Detail {
        /// Nesting depth.
        depth: usize,
        /// The remark.
        text: String,
    },
    /// A warning (printed ` >> text`).
    Warn {
        /// Nesting depth.
        depth: usize,
        /// The warning.
        text: String,
    },
    /// Translation entered another bridge through a patch port (printed
    /// `bridge("NAME")`, underlined); the lookups there are its children.
    Bridge {
        /// Nesting depth (that of the actions of the rule that output).
        depth: usize,
        /// The bridge's name.
        name: String,
    },
}

/// The result of translating one flow key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The key translated.
    pub input: FlowKey,
    /// The flow as the actions left it.
    pub final_flow: FlowKey,
    /// Datapath actions; `[Drop]` when nothing is output.
    pub actions: Vec<DpAction>,
    /// Megaflow mask (see the module docs).
    pub mask: FlowKey,
    /// Every rule hit, in order (a rule hit twice appears twice), for crediting
    /// the datapath's statistics.
    pub rules: Vec<RuleId>,
    /// The bridge (its index in [`translate_bridges`]'s slice) of each of
    /// [`Translation::rules`]; all 0 for [`translate`].
    pub rule_bridges: Vec<usize>,
    /// Flows built by `learn` actions, in order, for [`Tables::learn`].
    pub learned: Vec<FlowMod>,
    /// The bridge of each of [`Translation::learned`] (whose tables learn it).
    pub learned_bridges: Vec<usize>,
    /// The bridges translation ran in, the first one first, each once (more
    /// than one only through patch ports).
    pub bridges: Vec<usize>,
    /// What applying `learned` did (filled by [`translate_and_learn`]).
    pub learn_outcomes: Vec<LearnOutcome>,
    /// The trace, when asked for.
    pub trace: Vec<TraceEvent>,
    /// Why translation was cut short, if it was.
    pub error: Option<XlateError>,
    /// A `NORMAL` action ran without a learning switch.
    pub normal_unsupported: bool,
    /// Packets sent to the controller (`controller`, `dec_ttl` expiry).
    pub n_controller: u32,
    /// What native tunneling did.
    pub tunnel: TunnelUse,
    /// The ARP senders its snooping saw, (bridge, IP, MAC), also when it
    /// learned nothing (revalidations): the slow path teaches them to the
    /// neighbor cache again while the megaflow is used (OVS's xlate cache
    /// entry `XC_TNL_NEIGH`), so that a neighbor flushed or aged out comes
    /// back from ARP replies the datapath handles itself.
    pub snoops: Vec<(String, u32, [u8; 6])>,
}

/// Options of a translation.
#[derive(Default)]
pub struct XlateOptions<'a> {
    /// Record a trace (costs string formatting: off on the upcall path).
    pub trace: bool,
    /// The learning switch behind `NORMAL`.
    pub normal: Option<&'a mut dyn NormalHook>,
}

/// Translates `key` through `tables` on a bridge with the given OpenFlow ports
/// (outputs name OpenFlow ports; no patch ports).
pub fn translate(
    tables: &Tables,
    key: &FlowKey,
    ports: &[u32],
    opts: XlateOptions<'_>,
) -> Translation {
    let mut one = [XlateBridge {
        name: "br",
        tables,
        ports,
        odp: None,
        patches: &[],
        normal: opts.normal,
        internal: &[],
        tunnels: &[],
    }];
    translate_bridges(&mut one, 0, key, opts.trace)
}

/// A patch port of a bridge (OVS `type=patch`, `options:peer`): what is output
/// to `port` enters bridge `peer_bridge` on its port `peer_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchPeer {
    /// The patch port's OpenFlow number in its own bridge.
    pub port: u32,
    /// The peer's bridge: an index into the slice given to
    /// [`translate_bridges`].
    pub peer_bridge: usize,
    /// The peer port's OpenFlow number in its bridge.
    pub peer_port: u32,
}

/// One bridge as [`translate_bridges`] sees it.
pub struct XlateBridge<'a, 'h> {
    /// Its name, for the trace (`bridge("NAME")`).
    pub name: &'a str,
    /// Its OpenFlow tables.
    pub tables: &'a Tables,
    /// Its OpenFlow ports, patch ports included (`FLOOD`, `NORMAL`).
    pub ports: &'a [u32],
    /// Datapath port of each OpenFlow port that has one, `(ofport, odp)`:
    /// outputs become `DpAction::Output(odp)`, and an output to a port without
    /// one (nor a patch) is skipped. `None`: outputs keep OpenFlow numbers.
    pub odp: Option<&'a [(u32, u32)]>,
    /// Its patch ports.
    pub patches: &'a [PatchPeer],
    /// The learning switch behind its `NORMAL`.
    pub normal: Option<&'h mut dyn NormalHook>,
    /// Its internal ports (its own and `type=internal` ones), `(ofport,
    /// name)`: the ports routes leave by and tunnel endpoints live on.
    pub internal: &'a [(u32, &'a str)],
    /// Its tunnel ports.
    pub tunnels: &'a [XlateTunnel],
}

/// Options of [`translate_bridges_with`].
#[derive(Default)]
pub struct BridgesOptions<'e> {
    /// Record a trace. A trace has no side effects: no snooping, no ARP
    /// request queued.
    pub trace: bool,
    /// Native tunneling's route and neighbor tables; without them tunnel
    /// outputs find no route and nothing ends a tunnel.
    pub tunnel_env: Option<&'e mut dyn TunnelEnv>,
    /// A packet's own translation (an upcall): ARP snooping feeds the
    /// neighbor cache. Revalidation leaves it off (it still queues ARP
    /// requests for neighbor misses: the env rate-limits them).
    pub side_effects: bool,
    /// The switch's TLV map: which Geneve option each `tun_metadataN` is (an
    /// output to a Geneve port carries the packet's mapped fields as
    /// options).
    pub tlv_map: TlvMap,
}

/// Translates `key`, which arrived on bridge `start` (`key.in_port` is an
/// OpenFlow port of that bridge), through `bridges` joined by patch ports, as
/// OVS's `patch_port_output` does: an output to a patch port continues in the
/// peer bridge's table 0 with `in_port` the peer port, `metadata`, registers
/// and tunnel metadata cleared and the header changes made so far kept;
/// afterwards the calling bridge's flow comes back for its further actions.
/// Each crossing counts as a resubmit (depth and total), so a loop of patch
/// ports ends in [`XlateError::TooDeep`] (or `TooManyResubmits`): the packet is
/// dropped. The mask is the union over every bridge visited; rules and learned
/// flows carry their bridge ([`Translation::rule_bridges`],
/// [`Translation::learned_bridges`]).
pub fn translate_bridges(
    bridges: &mut [XlateBridge<'_, '_>],
    start: usize,
    key: &FlowKey,
    trace: bool,
) -> Translation {
    translate_bridges_with(
        bridges,
        start,
        key,
        BridgesOptions {
            trace,
            ..BridgesOptions::default()
        },
    )
}

/// [`translate_bridges`] with native tunneling (see the module docs): tunnel
/// ports of `bridges` push, outputs to internal ports with an address may pop,
/// as `opts.tunnel_env` says.
pub fn translate_bridges_with(
    bridges: &mut [XlateBridge<'_, '_>],
    start: usize,
    key: &FlowKey,
    opts: BridgesOptions<'_>,
) -> Translation {
    // Every tunnel datapath port, by kind and UDP port, for terminating.
    let mut tnl_ports: Vec<(TunnelKind, u16, u32)> = Vec::new();
    for t in bridges.iter().flat_map(|b| b.tunnels.iter()) {
        let e = (t.config.kind, t.config.dst_port, t.odp);
        if !tnl_ports.iter().any(|p| (p.0, p.1) == (e.0, e.1)) {
            tnl_ports.push(e);
        }
    }
    let trace = opts.trace;
    let mut cx = Ctx {
        br: bridges,
        env: opts.tunnel_env,
        tlv_map: opts.tlv_map,
        side_effects: opts.side_effects && !trace,
        tnl_ports,
        nested: 0,
        tnl: TunnelUse::default(),
        snoops: Vec::new(),
        in_tun_dst: key.tun_dst,
        read_in_tun_dst: false,
        cur: start,
        tracing: trace,
        flow: *key,
        base: *key,
        wc: FlowKey::default(),
        out: Vec::new(),
        rules: Vec::new(),
        rule_bridges: Vec::new(),
        learned: Vec::new(),
        learned_bridges: Vec::new(),
        visited: vec![start],
        trace: Vec::new(),
        n_actions: 0,
        n_resubmits: 0,
        depth: 0,
        tshift: 0,
        error: None,
        normal_unsupported: false,
        n_controller: 0,
    };
    cx.wc.in_port = u32::MAX;
    cx.wc.recirc_id = u32::MAX;
    cx.wc.dl_type = u16::MAX;
    if key.is_ip() {
        cx.wc.nw_frag |= 0x03;
    }
    if cx.br.get(start).is_some() {
        cx.table(0, None);
    }
    if cx.read_in_tun_dst {
        cx.wc.tun_dst = u32::MAX;
    }
    let mut actions = cx.out;
    if cx.error.is_some() {
        actions.clear();
    }
    if actions.is_empty() {
        actions.push(DpAction::Drop);
    }
    Translation {
        input: *key,
        final_flow: cx.flow,
        actions,
        mask: cx.wc,
        rules: cx.rules,
        rule_bridges: cx.rule_bridges,
        learned: cx.learned,
        learned_bridges: cx.learned_bridges,
        bridges: cx.visited,
        learn_outcomes: Vec::new(),
        trace: cx.trace,
        error: cx.error,
        normal_unsupported: cx.normal_unsupported,
        n_controller: cx.n_controller,
        tunnel: cx.tnl,
        snoops: cx.snoops,
    }
}

/// [`translate`], then applies the learned flows to `tables` at `now_ms`
/// (recording [`Translation::learn_outcomes`]). This is what a packet does to a
/// bridge; tracing several keys in order with it lets later keys see what earlier
/// ones learned.
pub fn translate_and_learn(
    tables: &mut Tables,
    key: &FlowKey,
    ports: &[u32],
    opts: XlateOptions<'_>,
    now_ms: u64,
) -> Translation {
    let mut t = translate(tables, key, ports, opts);
    t.learn_outcomes = t
        .learned
        .iter()
        .map(|fm| tables.learn(fm.clone(), now_ms))
        .collect();
    t
}

/// Counters of translation outcomes, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XlateStats {
    /// Translations run.
    pub translations: u64,
    /// Cut short by [`XlateError::TooDeep`].
    pub too_deep: u64,
    /// Cut short by [`XlateError::TooManyResubmits`].
    pub too_many_resubmits: u64,
    /// Cut short by [`XlateError::TooManyActions`].
    pub too_many_actions: u64,
    /// Hit `NORMAL` without a learning switch.
    pub normal_unsupported: u64,
    /// Packets sent to the controller.
    pub controller: u64,
    /// Tunnel encapsulations emitted.
    pub tnl_push: u64,
    /// Tunnel decapsulations emitted.
    pub tnl_pop: u64,
    /// Tunnel outputs dropped for want of a route.
    pub tnl_no_route: u64,
    /// Tunnel outputs dropped for want of the next hop's MAC.
    pub tnl_neighbor_miss: u64,
    /// Tunnel outputs dropped: the header could not be built or the outer
    /// packet went nowhere.
    pub tnl_bad_header: u64,
}

impl XlateStats {
    /// Counts one translation's outcome.
    pub fn record(&mut self, t: &Translation) {
        self.translations += 1;
        match t.error {
            Some(XlateError::TooDeep) => self.too_deep += 1,
            Some(XlateError::TooManyResubmits) => self.too_many_resubmits += 1,
            Some(XlateError::TooManyActions) => self.too_many_actions += 1,
            None => {}
        }
        self.normal_unsupported += u64::from(t.normal_unsupported);
        self.controller += u64::from(t.n_controller);
        self.tnl_push += u64::from(t.tunnel.pushes);
        self.tnl_pop += u64::from(t.tunnel.pops);
        self.tnl_no_route += u64::from(t.tunnel.no_route);
        self.tnl_neighbor_miss += u64::from(t.tunnel.neighbor_miss);
        self.tnl_bad_header += u64::from(t.tunnel.bad_header);
    }
}

/// ORs `m` into `wc`.
fn or_mask(wc: &mut FlowKey, m: &FlowKey) {
    for (w, x) in wc.words_mut().iter_mut().zip(m.words()) {
        *w |= x;
    }
}

/// Marks in `wc` the key bits that `field`'s value bits `value_mask` live in.
fn mark_field(wc: &mut FlowKey, field: Field, value_mask: u128) {
    let mut m = FlowKey::default();
    field.set_raw(&mut m, value_mask);
    or_mask(wc, &m);
}

fn mark_subfield(wc: &mut FlowKey, sf: &Subfield) {
    mark_field(wc, sf.field, sf.value_mask());
}

/// Marks every VLAN field (both tags' TCI and TPID).
fn mark_vlans(wc: &mut FlowKey) {
    wc.vlan_tci = [u16::MAX; FLOW_MAX_VLAN_HEADERS];
    wc.vlan_tpid = [u16::MAX; FLOW_MAX_VLAN_HEADERS];
}

fn is_vlan_field(f: Field) -> bool {
    matches!(
        f,
        Field::VlanTci | Field::DlVlan | Field::VlanVid | Field::VlanPcp
    )
}

/// Fields OpenFlow does not let actions write (OVS `mf->writable == false`).
fn is_writable(f: Field) -> bool {
    !matches!(
        f,
        Field::EthType | Field::IpProto | Field::IpFrag | Field::TcpFlags
    )
}

/// The VLAN tags present, outer first: tags count while their CFI bit is set.
fn vlan_stack(k: &FlowKey) -> ([(u16, u16); FLOW_MAX_VLAN_HEADERS], usize) {
    let mut s = [(0, 0); FLOW_MAX_VLAN_HEADERS];
    let mut n = 0;
    for (slot, (tpid, tci)) in s.iter_mut().zip(k.vlan_tpid.iter().zip(k.vlan_tci.iter())) {
        if tci & VLAN_CFI == 0 {
            break;
        }
        let tpid = if *tpid == 0 {
            ETH_TYPE_VLAN_8021Q
        } else {
            *tpid
        };
        *slot = (tpid, *tci);
        n += 1;
    }
    (s, n)
}

/// Sets the flow's outer VLAN tag: `Some(tci)` gives the outer tag that TCI (CFI
/// set), pushing an 802.1Q tag onto an untagged packet (OpenFlow 1.0
/// `mod_vlan_vid`); `None` removes the outer tag, an inner one moving out
/// (`strip_vlan`). Datapath actions follow at the next commit.
fn set_outer_vlan(f: &mut FlowKey, tci: Option<u16>) {
    match tci {
        Some(tci) => {
            if f.vlan_tci[0] & VLAN_CFI == 0 {
                f.vlan_tpid[0] = ETH_TYPE_VLAN_8021Q;
            }
            f.vlan_tci[0] = tci | VLAN_CFI;
        }
        None => {
            if f.vlan_tci[0] & VLAN_CFI != 0 {
                if f.vlan_tci[1] & VLAN_CFI != 0 {
                    f.vlan_tci[0] = f.vlan_tci[1];
                    f.vlan_tpid[0] = f.vlan_tpid[1];
                } else {
                    f.vlan_tci[0] = 0;
                    f.vlan_tpid[0] = 0;
                }
                f.vlan_tci[1] = 0;
                f.vlan_tpid[1] = 0;
            }
        }
    }
}

/// The outer tag's TCI, 0 when the packet is untagged.
fn outer_tci(f: &FlowKey) -> u16 {
    if f.vlan_tci[0] & VLAN_CFI != 0 {
        f.vlan_tci[0]
    } else {
        0
    }
}

/// Maps a 16-bit OpenFlow 1.0 port (as `NXM_OF_IN_PORT` holds it) to 32 bits.
fn port_from_u16(p: u128) -> Option<u32> {
    let p = u32::try_from(p).ok()?;
    if p > 0xffff {
        return None;
    }
    Some(if p >= 0xfff8 { 0xffff_0000 | p } else { p })
}

/// The datapath port of OpenFlow port `port` of `b` (itself when `b` maps
/// none).
fn odp_of(b: &XlateBridge<'_, '_>, port: u32) -> Option<u32> {
    match b.odp {
        None => Some(port),
        Some(map) => map.iter().find(|(o, _)| *o == port).map(|&(_, d)| d),
    }
}

/// The flow of the packet `spec` encapsulates, received on `in_port` of the
/// underlay bridge: the outer Ethernet and IPv4 headers, the UDP destination
/// port (the source port is per packet: 0 here), nothing else.
fn outer_flow(spec: &TunnelSpec, in_port: u32) -> FlowKey {
    FlowKey {
        in_port,
        dl_type: ETH_TYPE_IPV4,
        dl_src: spec.eth_src,
        dl_dst: spec.eth_dst,
        nw_src: spec.ip_src,
        nw_dst: spec.ip_dst,
        nw_proto: if spec.kind.is_udp() {
            IPPROTO_UDP
        } else {
            IPPROTO_GRE
        },
        nw_tos: spec.tos,
        nw_ttl: spec.ttl,
        tp_dst: if spec.kind.is_udp() { spec.dst_port } else { 0 },
        ..FlowKey::default()
    }
}

struct Ctx<'b, 'a, 'h, 'e> {
    /// Every bridge patch ports may lead to.
    br: &'b mut [XlateBridge<'a, 'h>],
    /// Native tunneling's tables.
    env: Option<&'e mut dyn TunnelEnv>,
    /// Which Geneve option each `tun_metadataN` is.
    tlv_map: TlvMap,
    /// ARP snooping allowed (a packet's translation, not a trace).
    side_effects: bool,
    /// Every tunnel datapath port: (kind, UDP port, datapath port).
    tnl_ports: Vec<(TunnelKind, u16, u32)>,
    /// Encapsulated packets being translated in their underlay bridge (no
    /// learning there).
    nested: usize,
    tnl: TunnelUse,
    /// See [`Translation::snoops`].
    snoops: Vec<(String, u32, [u8; 6])>,
    /// The tunnel destination the packet arrived with (0 if none, and in the
    /// underlay): a tunnel output back to it is refused.
    in_tun_dst: u32,
    /// `in_tun_dst` was read (outside the underlay): `tun_dst` joins the mask.
    read_in_tun_dst: bool,
    /// The bridge translating now.
    cur: usize,
    tracing: bool,
    /// The packet as the actions so far made it.
    flow: FlowKey,
    /// The packet as the datapath actions emitted so far make it.
    base: FlowKey,
    wc: FlowKey,
    out: Vec<DpAction>,
    rules: Vec<RuleId>,
    rule_bridges: Vec<usize>,
    learned: Vec<FlowMod>,
    learned_bridges: Vec<usize>,
    visited: Vec<usize>,
    trace: Vec<TraceEvent>,
    n_actions: usize,
    n_resubmits: usize,
    /// Enclosing resubmits and patch crossings (bounded by
    /// [`MAX_RESUBMIT_DEPTH`]).
    depth: usize,
    /// Added to `depth` in the trace: one per patch crossing, whose
    /// `bridge(..)` line sits between the output and the peer's tables.
    tshift: usize,
    error: Option<XlateError>,
    normal_unsupported: bool,
    n_controller: u32,
}

impl<'a> Ctx<'_, 'a, '_, '_> {
    /// The current bridge's tables (`cur` is always a valid index: checked at
    /// the start and at each patch crossing).
    fn tables(&self) -> Option<&'a Tables> {
        self.br.get(self.cur).map(|b| b.tables)
    }

    fn ports(&self) -> &'a [u32] {
        self.br.get(self.cur).map_or(&[], |b| b.ports)
    }

    /// The trace depth of the current table.
    fn td(&self) -> usize {
        self.depth + self.tshift
    }

    fn warn(&mut self, text: impl Into<String>) {
        if self.tracing {
            let depth = self.td() + 1;
            self.trace.push(TraceEvent::Warn {
                depth,
                text: text.into(),
            });
        }
    }

    fn detail(&mut self, text: impl Into<String>) {
        if self.tracing {
            let depth = self.td() + 1;
            self.trace.push(TraceEvent::Detail {
                depth,
                text: text.into(),
            });
        }
    }

    /// Looks up `table` (with `in_port` replaced for the lookup only) and runs the
    /// rule's actions. `self.depth` is the number of enclosing resubmits; in the
    /// trace, the table is at that depth and its actions one deeper.
    fn table(&mut self, table: u8, in_port: Option<u32>) {
        if self.depth >= MAX_RESUBMIT_DEPTH {
            self.error = Some(XlateError::TooDeep);
            self.warn(XlateError::TooDeep.to_string());
            return;
        }
        let saved = self.flow.in_port;
        if let Some(p) = in_port {
            self.flow.in_port = p;
        }
        let Some(tables) = self.tables() else {
            return;
        };
        let hit = tables.lookup(table, &self.flow, &mut self.wc);
        self.flow.in_port = saved;
        let rule = hit.and_then(|id| tables.get(id).map(|r| (id, r)));
        if self.tracing {
            self.trace.push(TraceEvent::Table {
                depth: self.td(),
                table,
                rule: rule.map(|(id, r)| (id, text::rule_brief(r))),
            });
        }
        let Some((id, rule)) = rule else {
            if self.tracing {
                self.trace.push(TraceEvent::Action {
                    depth: self.td() + 1,
                    text: "drop".into(),
                });
            }
            return;
        };
        self.rules.push(id);
        self.rule_bridges.push(self.cur);
        self.run_actions(table, &rule.flow.actions);
    }

    fn run_actions(&mut self, table: u8, actions: &[Action]) {
        if actions.is_empty() && self.tracing {
            self.trace.push(TraceEvent::Action {
                depth: self.td() + 1,
                text: "drop".into(),
            });
        }
        for a in actions {
            if self.error.is_some() {
                return;
            }
            self.n_actions += 1;
            if self.n_actions > MAX_ACTIONS {
                self.error = Some(XlateError::TooManyActions);
                self.warn(XlateError::TooManyActions.to_string());
                return;
            }
            if self.tracing {
                self.trace.push(TraceEvent::Action {
                    depth: self.td() + 1,
                    text: text::action(a),
                });
            }
            if self.action(table, a) {
                return;
            }
        }
    }

    /// Executes one action; returns `true` when the rest of the list must be
    /// skipped (`dec_ttl` expiry).
    fn action(&mut self, table: u8, a: &Action) -> bool {
        match a {
            Action::Output(p) => self.output(*p, false),
            Action::OutputReg(sf) => {
                mark_subfield(&mut self.wc, sf);
                let v = sf.read(&self.flow);
                match port_from_u16(v).and_then(Action::output) {
                    Some(Action::OutputReg(_)) | None => {
                        self.warn(format!("output:{sf}: {v:#x} is not a port"));
                    }
                    Some(act) => return self.action(table, &act),
                }
            }
            Action::InPort => {
                let p = self.flow.in_port;
                self.output(p, true);
            }
            Action::Local => self.output(OFPP_LOCAL, false),
            Action::Flood | Action::All => {
                let in_port = self.flow.in_port;
                for &p in self.ports() {
                    if p != in_port {
                        self.emit_output(p);
                    }
                }
            }
            Action::Normal => self.normal(),
            Action::Controller { max_len } => {
                self.commit();
                self.out.push(DpAction::Controller { max_len: *max_len });
                self.n_controller += 1;
            }
            Action::Table => self.warn("output:TABLE is only valid in packet-out, ignored"),
            Action::Resubmit { port, table: t } => {
                self.n_resubmits += 1;
                if self.n_resubmits > MAX_RESUBMITS {
                    self.error = Some(XlateError::TooManyResubmits);
                    self.warn(XlateError::TooManyResubmits.to_string());
                    return true;
                }
                self.depth += 1;
                self.table(t.unwrap_or(table), *port);
                self.depth -= 1;
            }
            Action::GotoTable(t) => {
                self.n_resubmits += 1;
                if self.n_resubmits > MAX_RESUBMITS {
                    self.error = Some(XlateError::TooManyResubmits);
                    self.warn(XlateError::TooManyResubmits.to_string());
                    return true;
                }
                self.depth += 1;
                self.table(*t, None);
                self.depth -= 1;
            }
            Action::ModVlanVid(vid) => {
                mark_vlans(&mut self.wc);
                let tci = (outer_tci(&self.flow) & !VLAN_VID_MASK) | (vid & VLAN_VID_MASK);
                set_outer_vlan(&mut self.flow, Some(tci));
            }
            Action::ModVlanPcp(pcp) => {
                mark_vlans(&mut self.wc);
                let tci = (outer_tci(&self.flow) & !VLAN_PCP_MASK)
                    | ((u16::from(*pcp) << VLAN_PCP_SHIFT) & VLAN_PCP_MASK);
                set_outer_vlan(&mut self.flow, Some(tci));
            }
            Action::StripVlan | Action::PopVlan => {
                mark_vlans(&mut self.wc);
                set_outer_vlan(&mut self.flow, None);
            }
            Action::PushVlan(tpid) => {
                mark_vlans(&mut self.wc);
                let f = &mut self.flow;
                if f.vlan_tci[0] & VLAN_CFI != 0 {
                    f.vlan_tci[1] = f.vlan_tci[0];
                    f.vlan_tpid[1] = f.vlan_tpid[0];
                } else {
                    f.vlan_tci[1] = 0;
                    f.vlan_tpid[1] = 0;
                }
                f.vlan_tpid[0] = *tpid;
                f.vlan_tci[0] = VLAN_CFI;
            }
            Action::ModDlSrc(m) => {
                self.wc.dl_src = [0xff; 6];
                self.flow.dl_src = *m;
            }
            Action::ModDlDst(m) => {
                self.wc.dl_dst = [0xff; 6];
                self.flow.dl_dst = *m;
            }
            Action::ModNwSrc(ip) => {
                if self.flow.dl_type == ETH_TYPE_IPV4 {
                    self.wc.nw_src = u32::MAX;
                    self.flow.nw_src = *ip;
                }
            }
            Action::ModNwDst(ip) => {
                if self.flow.dl_type == ETH_TYPE_IPV4 {
                    self.wc.nw_dst = u32::MAX;
                    self.flow.nw_dst = *ip;
                }
            }
            Action::ModNwTos(tos) => {
                if self.flow.is_ip() {
                    self.wc.nw_tos |= 0xfc;
                    self.flow.nw_tos = (self.flow.nw_tos & 0x03) | (tos & 0xfc);
                }
            }
            Action::ModTpSrc(p) | Action::ModTpDst(p) => {
                if self.flow.is_ip() && self.flow.nw_frag & FLOW_NW_FRAG_LATER == 0 {
                    self.wc.nw_proto = u8::MAX;
                    if matches!(a, Action::ModTpSrc(_)) {
                        self.wc.tp_src = u16::MAX;
                        self.flow.tp_src = *p;
                    } else {
                        self.wc.tp_dst = u16::MAX;
                        self.flow.tp_dst = *p;
                    }
                }
            }
            Action::DecTtl => {
                if self.flow.is_ip() {
                    self.wc.nw_ttl = u8::MAX;
                    if self.flow.nw_ttl > 1 {
                        self.flow.nw_ttl -= 1;
                    } else {
                        self.detail("TTL expired: sent to the controller, actions stop");
                        self.commit();
                        self.out.push(DpAction::Controller { max_len: u16::MAX });
                        self.n_controller += 1;
                        return true;
                    }
                }
            }
            Action::SetTunnel(id) | Action::SetTunnel64(id) => {
                self.wc.tun_id = u64::MAX;
                self.flow.tun_id = *id;
            }
            Action::SetField { field, value, mask } => {
                self.write_field(*field, *value, *mask);
            }
            Action::Load { dst, value } => {
                let vm = dst.value_mask();
                self.write_field(dst.field, value << dst.ofs, vm);
            }
            Action::Move { src, dst } => {
                if !is_writable(dst.field) {
                    self.warn(format!("{}: field is not writable", dst.field.name()));
                } else if src.field.prereqs_ok(&self.flow, Some(&mut self.wc))
                    && dst.field.prereqs_ok(&self.flow, Some(&mut self.wc))
                {
                    mark_subfield(&mut self.wc, src);
                    let v = src.read(&self.flow);
                    self.write_field(dst.field, v << dst.ofs, dst.value_mask());
                }
            }
            Action::Learn(spec) => self.learn(spec),
            Action::Note(_) => {}
        }
        false
    }

    /// Writes `value` under `mask` (both in the field's value space) into the
    /// current flow, if the packet has the field; marks the bits written.
    fn write_field(&mut self, field: Field, value: u128, mask: u128) {
        if !is_writable(field) {
            self.warn(format!("{}: field is not writable", field.name()));
            return;
        }
        if !field.prereqs_ok(&self.flow, Some(&mut self.wc)) {
            self.detail(format!(
                "{}: the packet has no such field, not set",
                field.name()
            ));
            return;
        }
        if is_vlan_field(field) {
            mark_vlans(&mut self.wc);
        } else {
            mark_field(&mut self.wc, field, mask);
        }
        let old = field.get(&self.flow);
        field.set(&mut self.flow, (old & !mask) | (value & mask));
        // A tag made present by a write gets the default TPID (OVS
        // `flow_fix_vlan_tpid`).
        if self.flow.vlan_tci[0] & VLAN_CFI != 0 && self.flow.vlan_tpid[0] == 0 {
            self.flow.vlan_tpid[0] = ETH_TYPE_VLAN_8021Q;
        }
    }

    fn port_exists(&self, p: u32) -> bool {
        p == OFPP_LOCAL || self.ports().contains(&p)
    }

    /// Sends the packet, as the actions left it, out OpenFlow port `port` of
    /// the current bridge (which exists): into the peer bridge for a patch
    /// port, else a commit and a datapath output.
    fn emit_output(&mut self, port: u32) {
        let Some(b) = self.br.get(self.cur) else {
            return;
        };
        if let Some(peer) = b.patches.iter().find(|p| p.port == port).copied() {
            self.patch_output(peer);
            return;
        }
        if let Some(t) = b.tunnels.iter().find(|t| t.ofport == port) {
            let t = t.clone();
            self.tunnel_output(&t);
            return;
        }
        let dp = odp_of(b, port);
        let internal = b
            .internal
            .iter()
            .find(|(o, _)| *o == port)
            .map(|&(_, name)| name);
        let Some(dp) = dp else {
            self.warn(format!("port {port} has no datapath port, not output"));
            return;
        };
        self.commit();
        if let Some(name) = internal {
            if let Some(tnl_port) = self.terminate(name) {
                self.out.push(DpAction::TunnelPop(tnl_port));
                return;
            }
        }
        self.out.push(DpAction::Output(dp));
    }

    /// OVS's `native_tunnel_output`: the packet, as the actions left it, goes
    /// out tunnel port `t` (see the module docs).
    fn tunnel_output(&mut self, t: &XlateTunnel) {
        if self.error.is_some() {
            return;
        }
        let c = &t.config;
        self.detail(format!("output to native tunnel {}", t.name));
        let remote = match c.remote_ip {
            Some(ip) => ip,
            None => {
                self.wc.tun_dst = u32::MAX;
                self.flow.tun_dst
            }
        };
        if remote == 0 {
            self.warn("native tunnel routing failed: no remote (remote_ip=flow, tun_dst 0)");
            self.tnl.no_route += 1;
            return;
        }
        // The address this packet was tunnelled to is ours (0 for a packet
        // no tunnel delivered: the datapath zeroes the tunnel metadata). It
        // is the input's, whatever bridge this is: marked at the end (a patch
        // crossing drops the peer's tunnel bits).
        self.read_in_tun_dst |= self.nested == 0;
        let ours = self.in_tun_dst;
        if ours != 0 && remote == ours {
            self.warn("Not tunneling to our own address");
            return;
        }
        // What the header takes from the packet, read whatever the route and
        // neighbor say: the megaflow's mask then stays the same when they
        // change, and revalidation updates it in place.
        let key = match c.out_key {
            TnlKey::Absent => None,
            TnlKey::Fixed(k) => Some(k),
            TnlKey::Flow => {
                self.wc.tun_id = u64::MAX;
                Some(self.flow.tun_id)
            }
        };
        let ip = self.flow.is_ip();
        let mut tos = match c.tos {
            TnlInherit::Fixed(t) => t,
            TnlInherit::Inherit if ip => {
                self.wc.nw_tos |= 0xfc;
                self.flow.nw_tos & 0xfc
            }
            TnlInherit::Inherit => 0,
        };
        if ip {
            // ECN follows the inner packet; CE goes out as ECT(0).
            self.wc.nw_tos |= 0x03;
            let ecn = self.flow.nw_tos & 0x03;
            tos = (tos & 0xfc) | if ecn == 0x03 { 0x02 } else { ecn };
        }
        let ttl = match c.ttl {
            TnlInherit::Fixed(t) => t,
            TnlInherit::Inherit if ip => {
                self.wc.nw_ttl = u8::MAX;
                self.flow.nw_ttl
            }
            TnlInherit::Inherit => DEFAULT_TTL,
        };
        // The packet as it is now is what gets encapsulated (its tunnel
        // metadata goes into the header): committed first, as OVS commits
        // before any output, whatever the route says.
        self.commit_headers(false);
        let Some(env) = self.env.as_deref_mut() else {
            self.warn("native tunnel routing failed (no route table)");
            self.tnl.no_route += 1;
            return;
        };
        self.tnl.env = true;
        // Geneve carries the packet's mapped tun_metadata fields.
        let geneve_opts = if c.kind == TunnelKind::Geneve {
            self.tlv_map.encode(&self.flow, &mut self.wc)
        } else {
            Vec::new()
        };
        let Some(route) = env.route(remote) else {
            self.warn(format!(
                "native tunnel routing failed: no route to {}",
                Ipv4Addr::from(remote)
            ));
            self.tnl.no_route += 1;
            return;
        };
        let neighbor = env.neighbor(&route.bridge, route.next_hop);
        if neighbor.is_none() && !self.tracing {
            env.neighbor_miss(&route);
        }
        self.detail(format!(
            "tunneling to {} via {}",
            Ipv4Addr::from(remote),
            route.port
        ));
        // The underlay bridge and the port the route leaves by.
        let under = self.br.iter().enumerate().find_map(|(bi, b)| {
            if b.name != route.bridge {
                return None;
            }
            let (ofport, _) = b.internal.iter().find(|(_, n)| *n == route.port)?;
            Some((bi, *ofport, odp_of(b, *ofport)?))
        });
        let Some((ubr, uport, uodp)) = under else {
            self.warn(format!(
                "native tunnel routing failed: bridge {} has no internal port {}",
                route.bridge, route.port
            ));
            self.tnl.no_route += 1;
            return;
        };
        let Some(dmac) = neighbor else {
            self.detail(format!(
                "neighbor cache miss for {} on bridge {}, sending ARP request",
                Ipv4Addr::from(route.next_hop),
                route.bridge
            ));
            self.tnl.neighbor_miss += 1;
            return;
        };
        let spec = TunnelSpec {
            kind: c.kind,
            eth_src: route.mac,
            eth_dst: dmac,
            ip_src: c.local_ip.unwrap_or(route.src),
            ip_dst: remote,
            tos,
            ttl,
            df: c.df_default,
            dst_port: c.dst_port,
            key,
            csum: c.csum,
            geneve_opts,
        };
        let outer = outer_flow(&spec, uport);
        let header = match TunnelHeader::new(spec, t.odp, uodp) {
            Ok(mut h) => {
                h.set_path_mtu(route.mtu);
                h
            }
            Err(e) => {
                self.warn(format!("native tunnel header build failed: {e}"));
                self.tnl.bad_header += 1;
                return;
            }
        };
        self.detail(format!(
            "tunneling from {} {} to {} {}",
            text::mac(&route.mac),
            Ipv4Addr::from(header.spec.ip_src),
            text::mac(&dmac),
            Ipv4Addr::from(remote)
        ));
        self.detail(format!(
            "path MTU {} ({}): inner MTU {} (IP), longer inner packets are dropped",
            route.mtu,
            route.port,
            usize::from(route.mtu).saturating_sub(header.ip_overhead() + 14)
        ));
        let Some(actions) = self.underlay(ubr, outer) else {
            return;
        };
        if actions.is_empty() {
            self.warn("the encapsulated packet goes nowhere in its bridge, not output");
            self.tnl.bad_header += 1;
            return;
        }
        self.tnl.pushes += 1;
        self.out.push(DpAction::TunnelPush {
            header: Arc::new(header),
            actions: actions.into(),
        });
    }

    /// Translates the encapsulated packet `outer` in bridge `ubr`, received
    /// on its port `outer.in_port` (OVS's `patch_port_output` from a native
    /// tunnel): nothing learned, the mask bits it reads dropped (the outer
    /// headers are constants of this translation), the rules it hits kept for
    /// their counters. Returns its datapath actions (`None` when the
    /// translation was cut short).
    fn underlay(&mut self, ubr: usize, outer: FlowKey) -> Option<Vec<DpAction>> {
        let name = self.br.get(ubr).map(|b| b.name)?;
        self.n_resubmits += 1;
        if self.n_resubmits > MAX_RESUBMITS {
            self.error = Some(XlateError::TooManyResubmits);
            self.warn(XlateError::TooManyResubmits.to_string());
            return None;
        }
        if self.tracing {
            let depth = self.td() + 1;
            self.trace.push(TraceEvent::Bridge {
                depth,
                name: name.to_string(),
            });
        }
        let (flow, base, wc, cur) = (self.flow, self.base, self.wc, self.cur);
        let (n_learned, in_tun_dst) = (self.learned.len(), self.in_tun_dst);
        let out = std::mem::take(&mut self.out);
        self.flow = outer;
        self.base = outer;
        self.in_tun_dst = 0;
        self.cur = ubr;
        if !self.visited.contains(&ubr) {
            self.visited.push(ubr);
        }
        self.nested += 1;
        self.depth += 1;
        self.tshift += 1;
        self.table(0, None);
        self.depth -= 1;
        self.tshift -= 1;
        self.nested -= 1;
        self.learned.truncate(n_learned);
        self.learned_bridges.truncate(n_learned);
        let actions = std::mem::replace(&mut self.out, out);
        (self.flow, self.base, self.wc, self.cur) = (flow, base, wc, cur);
        self.in_tun_dst = in_tun_dst;
        self.error.is_none().then_some(actions)
    }

    /// OVS's `terminate_native_tunnel` for an output to internal port `name`
    /// (header changes committed): the datapath port of the tunnel the packet
    /// is for, if it is for a local endpoint; ARP is snooped on the way.
    fn terminate(&mut self, name: &str) -> Option<u32> {
        let env = self.env.as_deref_mut()?;
        // Whether the port has an address (and which) is the env's: the
        // decision depends on it either way.
        self.tnl.env = true;
        if !env.port_has_ip(name) {
            return None;
        }
        let f = self.flow;
        if f.dl_type == ETH_TYPE_ARP {
            self.snoop();
            return None;
        }
        // dl_type and nw_frag are in every mask.
        if f.dl_type != ETH_TYPE_IPV4 || f.nw_frag != 0 {
            return None;
        }
        self.wc.vlan_tci[0] |= VLAN_CFI;
        if f.vlan_tci[0] & VLAN_CFI != 0 {
            return None;
        }
        if let Some(mac) = env.port_mac(name) {
            self.wc.dl_dst = [0xff; 6];
            if f.dl_dst != mac {
                return None;
            }
        }
        self.wc.nw_dst = u32::MAX;
        if !env.is_local_ip(f.nw_dst) {
            return None;
        }
        self.wc.nw_proto = u8::MAX;
        let found = match f.nw_proto {
            IPPROTO_GRE => self
                .tnl_ports
                .iter()
                .find(|(k, _, _)| *k == TunnelKind::Gre)
                .copied(),
            IPPROTO_UDP => {
                self.wc.tp_dst = u16::MAX;
                self.tnl_ports
                    .iter()
                    .find(|(k, p, _)| k.is_udp() && *p == f.tp_dst)
                    .copied()
            }
            _ => None,
        };
        let (kind, _, odp) = found?;
        self.detail(format!(
            "{} packet for local endpoint {}: tnl_pop({odp})",
            kind.name(),
            Ipv4Addr::from(f.nw_dst)
        ));
        self.tnl.pops += 1;
        Some(odp)
    }

    /// OVS's `tnl_neigh_snoop` for an ARP packet going to an internal port
    /// with an address: a reply or request from a sender with an address and
    /// a MAC teaches the neighbor cache (upcalls only).
    fn snoop(&mut self) {
        let f = self.flow;
        self.wc.nw_proto = u8::MAX;
        if !matches!(f.nw_proto, 1 | 2) {
            return;
        }
        self.wc.arp_sha = [0xff; 6];
        self.wc.nw_src = u32::MAX;
        if f.arp_sha == [0; 6] || f.nw_src == 0 {
            return;
        }
        let bridge = self.br.get(self.cur).map_or("", |b| b.name);
        if self.side_effects {
            if let Some(env) = self.env.as_deref_mut() {
                env.snoop(bridge, f.nw_src, f.arp_sha);
                self.tnl.snooped += 1;
            }
        }
        if !self.tracing {
            self.snoops.push((bridge.to_string(), f.nw_src, f.arp_sha));
        }
        self.detail(format!(
            "ARP: {} is at {} (neighbor cache of bridge {bridge})",
            Ipv4Addr::from(f.nw_src),
            text::mac(&f.arp_sha)
        ));
    }

    /// OVS `patch_port_output`: translation goes on in the peer bridge, then
    /// comes back (see [`translate_bridges`]).
    fn patch_output(&mut self, peer: PatchPeer) {
        if self.error.is_some() {
            return;
        }
        let Some(name) = self.br.get(peer.peer_bridge).map(|b| b.name) else {
            self.warn(format!("patch port {}: no peer bridge", peer.port));
            return;
        };
        self.n_resubmits += 1;
        if self.n_resubmits > MAX_RESUBMITS {
            self.error = Some(XlateError::TooManyResubmits);
            self.warn(XlateError::TooManyResubmits.to_string());
            return;
        }
        if self.tracing {
            let depth = self.td() + 1;
            self.trace.push(TraceEvent::Bridge {
                depth,
                name: name.to_string(),
            });
        }
        let (flow, cur) = (self.flow, self.cur);
        // The peer sees no tunnel, metadata or registers whatever the packet
        // had: what its lookups read of them are constants, not key bits.
        // Nor does it see the datapath's tunnel: its commits set a tunnel only
        // when its own actions set one (OVS leaves the tunnel out of commits
        // but at tunnel ports), so they depend on no key bit either.
        let wc = self.wc;
        let b = &mut self.base;
        let base_tun = (b.tun_id, b.tun_src, b.tun_dst, b.tun_flags);
        (b.tun_id, b.tun_src, b.tun_dst, b.tun_flags) = (0, 0, 0, 0);
        let n_out = self.out.len();
        let f = &mut self.flow;
        f.in_port = peer.peer_port;
        f.metadata = 0;
        f.regs = [0; crate::flow_key::FLOW_N_REGS];
        (f.tun_id, f.tun_src, f.tun_dst, f.tun_flags) = (0, 0, 0, 0);
        (f.tun_md_present, f.tun_md) = (0, Default::default());
        self.cur = peer.peer_bridge;
        if !self.visited.contains(&peer.peer_bridge) {
            self.visited.push(peer.peer_bridge);
        }
        self.depth += 1;
        self.tshift += 1;
        self.table(0, None);
        self.depth -= 1;
        self.tshift -= 1;
        self.cur = cur;
        self.flow = flow;
        let w = &mut self.wc;
        w.metadata = wc.metadata;
        w.regs = wc.regs;
        (w.tun_id, w.tun_src, w.tun_dst, w.tun_flags) =
            (wc.tun_id, wc.tun_src, wc.tun_dst, wc.tun_flags);
        (w.tun_md_present, w.tun_md) = (wc.tun_md_present, wc.tun_md);
        // The datapath's tunnel: each field as the peer set it, if it did,
        // else as it was.
        let (mut id, mut src, mut dst) = (false, false, false);
        for a in self.out.get(n_out..).unwrap_or_default() {
            if let DpAction::SetTunnel {
                tun_id,
                src: s,
                dst: d,
            } = a
            {
                id |= tun_id.is_some();
                src |= s.is_some();
                dst |= d.is_some();
            }
        }
        let b = &mut self.base;
        if !id {
            b.tun_id = base_tun.0;
        }
        if !src {
            b.tun_src = base_tun.1;
        }
        if !dst {
            b.tun_dst = base_tun.2;
        }
        b.tun_flags = base_tun.3;
    }

    fn output(&mut self, port: u32, to_in_port: bool) {
        if !to_in_port && port == self.flow.in_port {
            self.detail("skipping output to input port");
            return;
        }
        if port >= OFPP_MAX && port != OFPP_LOCAL {
            self.warn(format!("output to reserved port {port:#x} ignored"));
            return;
        }
        if !self.port_exists(port) {
            self.warn(format!("Nonexistent output port {port}"));
            return;
        }
        self.emit_output(port);
    }

    fn normal(&mut self) {
        let ports = self.ports();
        let Some(hook) = self
            .br
            .get_mut(self.cur)
            .and_then(|b| b.normal.as_deref_mut())
        else {
            self.normal_unsupported = true;
            self.warn(NORMAL_UNSUPPORTED);
            return;
        };
        hook.set_learning(self.nested == 0);
        let decision = hook.normal(&self.flow, &mut self.wc, ports);
        match decision.note {
            Some(NormalNote::Detail(text)) => self.detail(text),
            Some(NormalNote::Warn(text)) => self.warn(text),
            None => {}
        }
        // Each output sees the packet retagged for its port; the flow's own tags
        // come back after it (OVS `output_normal`), so later actions see the
        // packet as NORMAL found it.
        let in_port = self.flow.in_port;
        let tags = (self.flow.vlan_tci, self.flow.vlan_tpid);
        for o in decision.outputs {
            if o.port == in_port || !self.port_exists(o.port) {
                continue;
            }
            set_outer_vlan(&mut self.flow, o.vlan);
            self.emit_output(o.port);
            (self.flow.vlan_tci, self.flow.vlan_tpid) = tags;
        }
    }

    fn learn(&mut self, spec: &LearnSpec) {
        let mut m = Match::catchall();
        let mut actions = Vec::new();
        for s in &spec.specs {
            match s {
                LearnField::MatchField { dst, src } => {
                    mark_subfield(&mut self.wc, src);
                    let v = src.read(&self.flow);
                    dst.write(&mut m.key, v);
                    let mut fm = FlowKey::default();
                    dst.field.set_raw(&mut fm, dst.value_mask());
                    or_mask(&mut m.mask, &fm);
                }
                LearnField::MatchValue { dst, value } => {
                    dst.write(&mut m.key, *value);
                    let mut fm = FlowKey::default();
                    dst.field.set_raw(&mut fm, dst.value_mask());
                    or_mask(&mut m.mask, &fm);
                }
                LearnField::LoadField { src, dst } => {
                    mark_subfield(&mut self.wc, src);
                    let value = src.read(&self.flow);
                    actions.push(Action::Load { dst: *dst, value });
                }
                LearnField::LoadValue { dst, value } => {
                    actions.push(Action::Load {
                        dst: *dst,
                        value: *value,
                    });
                }
                LearnField::Output { src } => {
                    mark_subfield(&mut self.wc, src);
                    let v = src.read(&self.flow);
                    if let Some(a) = port_from_u16(v).and_then(Action::output) {
                        actions.push(a);
                    }
                }
            }
        }
        m.normalize();
        let fm = FlowMod {
            table_id: spec.table,
            priority: spec.priority,
            cookie: spec.cookie,
            idle_timeout: spec.idle_timeout,
            hard_timeout: spec.hard_timeout,
            importance: 0,
            flags: FlowModFlags {
                send_flow_rem: spec.flags.send_flow_rem,
                check_overlap: false,
            },
            match_: m,
            actions,
        };
        if self.tracing {
            let what = match self.tables().map(|t| t.learn_preview(&fm)) {
                None => "learned rule refused",
                Some(LearnOutcome::Added(_)) => "learned rule added",
                Some(LearnOutcome::Refreshed(_)) => "learned rule refreshed",
                Some(LearnOutcome::Modified(_)) => "learned rule modified",
                Some(LearnOutcome::Refused) => "learned rule refused",
            };
            let text = format!("{what}: {}", text::flow_mod(&fm));
            self.detail(text);
        }
        self.learned.push(fm);
        self.learned_bridges.push(self.cur);
    }

    /// Emits the datapath actions that bring the packet from `base` to `flow`
    /// (OVS `commit_odp_actions`), marking what they depend on.
    fn commit(&mut self) {
        self.commit_headers(true);
    }

    /// [`Ctx::commit`], the tunnel metadata too when `tunnel` (not before a
    /// tunnel push, whose header carries it).
    fn commit_headers(&mut self, tunnel: bool) {
        let (f, b, wc) = (&self.flow, &mut self.base, &mut self.wc);
        let out = &mut self.out;

        // Tunnel metadata.
        let tun_id = (tunnel && f.tun_id != b.tun_id).then_some(f.tun_id);
        let tsrc = (tunnel && f.tun_src != b.tun_src).then_some(f.tun_src);
        let tdst = (tunnel && f.tun_dst != b.tun_dst).then_some(f.tun_dst);
        if tun_id.is_some() || tsrc.is_some() || tdst.is_some() {
            if tun_id.is_some() {
                wc.tun_id = u64::MAX;
            }
            if tsrc.is_some() {
                wc.tun_src = u32::MAX;
            }
            if tdst.is_some() {
                wc.tun_dst = u32::MAX;
            }
            out.push(DpAction::SetTunnel {
                tun_id,
                src: tsrc,
                dst: tdst,
            });
            (b.tun_id, b.tun_src, b.tun_dst) = (f.tun_id, f.tun_src, f.tun_dst);
        }

        // Ethernet.
        let src = (f.dl_src != b.dl_src).then_some(f.dl_src);
        let dst = (f.dl_dst != b.dl_dst).then_some(f.dl_dst);
        if src.is_some() || dst.is_some() {
            if src.is_some() {
                wc.dl_src = [0xff; 6];
            }
            if dst.is_some() {
                wc.dl_dst = [0xff; 6];
            }
            out.push(DpAction::SetEth { src, dst });
            (b.dl_src, b.dl_dst) = (f.dl_src, f.dl_dst);
        }

        // L3 (dl_type is always in the mask).
        match f.dl_type {
            ETH_TYPE_IPV4 => {
                let src = (f.nw_src != b.nw_src).then_some(f.nw_src);
                let dst = (f.nw_dst != b.nw_dst).then_some(f.nw_dst);
                let tos = (f.nw_tos != b.nw_tos).then_some(f.nw_tos);
                let ttl = (f.nw_ttl != b.nw_ttl).then_some(f.nw_ttl);
                if src.is_some() || dst.is_some() || tos.is_some() || ttl.is_some() {
                    if src.is_some() {
                        wc.nw_src = u32::MAX;
                    }
                    if dst.is_some() {
                        wc.nw_dst = u32::MAX;
                    }
                    if tos.is_some() {
                        wc.nw_tos = u8::MAX;
                    }
                    if ttl.is_some() {
                        wc.nw_ttl = u8::MAX;
                    }
                    out.push(DpAction::SetIpv4 { src, dst, tos, ttl });
                    (b.nw_src, b.nw_dst, b.nw_tos, b.nw_ttl) =
                        (f.nw_src, f.nw_dst, f.nw_tos, f.nw_ttl);
                }
            }
            ETH_TYPE_IPV6 => {
                let src = (f.ipv6_src != b.ipv6_src).then_some(f.ipv6_src);
                let dst = (f.ipv6_dst != b.ipv6_dst).then_some(f.ipv6_dst);
                let tclass = (f.nw_tos != b.nw_tos).then_some(f.nw_tos);
                let hlimit = (f.nw_ttl != b.nw_ttl).then_some(f.nw_ttl);
                let label = (f.ipv6_label != b.ipv6_label).then_some(f.ipv6_label);
                if src.is_some()
                    || dst.is_some()
                    || tclass.is_some()
                    || hlimit.is_some()
                    || label.is_some()
                {
                    if src.is_some() {
                        wc.ipv6_src = [0xff; 16];
                    }
                    if dst.is_some() {
                        wc.ipv6_dst = [0xff; 16];
                    }
                    if tclass.is_some() {
                        wc.nw_tos = u8::MAX;
                    }
                    if hlimit.is_some() {
                        wc.nw_ttl = u8::MAX;
                    }
                    if label.is_some() {
                        wc.ipv6_label = u32::MAX;
                    }
                    out.push(DpAction::SetIpv6 {
                        src,
                        dst,
                        tclass,
                        hlimit,
                        label,
                    });
                    (b.ipv6_src, b.ipv6_dst, b.nw_tos, b.nw_ttl, b.ipv6_label) =
                        (f.ipv6_src, f.ipv6_dst, f.nw_tos, f.nw_ttl, f.ipv6_label);
                }
            }
            ETH_TYPE_ARP | ETH_TYPE_RARP => {
                let op = (f.nw_proto != b.nw_proto).then_some(u16::from(f.nw_proto));
                let spa = (f.nw_src != b.nw_src).then_some(f.nw_src);
                let tpa = (f.nw_dst != b.nw_dst).then_some(f.nw_dst);
                let sha = (f.arp_sha != b.arp_sha).then_some(f.arp_sha);
                let tha = (f.arp_tha != b.arp_tha).then_some(f.arp_tha);
                if op.is_some() || spa.is_some() || tpa.is_some() || sha.is_some() || tha.is_some()
                {
                    if op.is_some() {
                        wc.nw_proto = u8::MAX;
                    }
                    if spa.is_some() {
                        wc.nw_src = u32::MAX;
                    }
                    if tpa.is_some() {
                        wc.nw_dst = u32::MAX;
                    }
                    if sha.is_some() {
                        wc.arp_sha = [0xff; 6];
                    }
                    if tha.is_some() {
                        wc.arp_tha = [0xff; 6];
                    }
                    out.push(DpAction::SetArp {
                        op,
                        spa,
                        tpa,
                        sha,
                        tha,
                    });
                    (b.nw_proto, b.nw_src, b.nw_dst, b.arp_sha, b.arp_tha) =
                        (f.nw_proto, f.nw_src, f.nw_dst, f.arp_sha, f.arp_tha);
                }
            }
            _ => {}
        }

        // L4 ports / ICMP type and code: only IP packets with an L4 header.
        if f.is_ip() && (f.tp_src != b.tp_src || f.tp_dst != b.tp_dst) {
            // Which set action depends on the protocol and fragment bits.
            wc.nw_proto = u8::MAX;
            let src = (f.tp_src != b.tp_src).then_some(f.tp_src);
            let dst = (f.tp_dst != b.tp_dst).then_some(f.tp_dst);
            let v6 = f.dl_type == ETH_TYPE_IPV6;
            let emitted = if f.nw_frag & FLOW_NW_FRAG_LATER != 0 {
                false
            } else {
                match f.nw_proto {
                    IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
                        out.push(DpAction::SetL4 {
                            proto: f.nw_proto,
                            src,
                            dst,
                        });
                        true
                    }
                    IPPROTO_ICMP if !v6 => {
                        out.push(DpAction::SetIcmp {
                            v6,
                            icmp_type: src.map(|v| v as u8),
                            icmp_code: dst.map(|v| v as u8),
                        });
                        true
                    }
                    IPPROTO_ICMPV6 if v6 => {
                        out.push(DpAction::SetIcmp {
                            v6,
                            icmp_type: src.map(|v| v as u8),
                            icmp_code: dst.map(|v| v as u8),
                        });
                        true
                    }
                    _ => false,
                }
            };
            if emitted {
                if src.is_some() {
                    wc.tp_src = u16::MAX;
                }
                if dst.is_some() {
                    wc.tp_dst = u16::MAX;
                }
                (b.tp_src, b.tp_dst) = (f.tp_src, f.tp_dst);
            }
        }

        // VLAN: pop the base's tags down to the common inner ones, push the flow's.
        let (fs, fnum) = vlan_stack(f);
        let (bs, bnum) = vlan_stack(b);
        let mut common = 0;
        while common < fnum.min(bnum) && fs[fnum - 1 - common] == bs[bnum - 1 - common] {
            common += 1;
        }
        if common < fnum || common < bnum {
            mark_vlans(wc);
            for _ in common..bnum {
                out.push(DpAction::PopVlan);
            }
            for i in (0..fnum - common).rev() {
                let (tpid, tci) = fs[i];
                out.push(DpAction::PushVlan { tpid, tci });
            }
            b.vlan_tci = f.vlan_tci;
            b.vlan_tpid = f.vlan_tpid;
        }
    }
}

/// Prints a translation as `ovs-appctl ofproto/trace` does: the tables, rules and
/// actions visited (nested resubmits indented), then `Final flow:`, `Megaflow:`
/// and, last, `Datapath actions:`. The bridge is called `br`; see
/// [`format_trace_named`].
pub fn format_trace(t: &Translation) -> String {
    format_trace_named(t, "br")
}

/// [`format_trace`] with the bridge's name in the `bridge("NAME")` header.
pub fn format_trace_named(t: &Translation, bridge: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!("Flow: {}\n\n", text::flow(&t.input)));
    let title = format!("bridge(\"{bridge}\")");
    s.push_str(&format!("{title}\n{}\n", "-".repeat(title.len())));
    print_nodes(&mut s, &t.trace, 0);
    s.push('\n');
    if t.final_flow == t.input {
        s.push_str("Final flow: unchanged\n");
    } else {
        s.push_str(&format!("Final flow: {}\n", text::flow(&t.final_flow)));
    }
    s.push_str(&format!(
        "Megaflow: {}\n",
        text::megaflow(&t.input, &t.mask)
    ));
    if let Some(e) = t.error {
        s.push_str(&format!("Translation failed ({e})\n"));
    }
    s.push_str(&format!(
        "Datapath actions: {}\n",
        crate::actions::format_dp_actions(&t.actions)
    ));
    s
}

fn event_depth(e: &TraceEvent) -> usize {
    match e {
        TraceEvent::Table { depth, .. }
        | TraceEvent::Action { depth, .. }
        | TraceEvent::Detail { depth, .. }
        | TraceEvent::Warn { depth, .. }
        | TraceEvent::Bridge { depth, .. } => *depth,
    }
}

/// Prints a list of sibling trace nodes and their children. A table node owns the
/// events after it that are deeper than it.
fn print_nodes(out: &mut String, events: &[TraceEvent], level: usize) {
    // Split `events` into sibling nodes at the depth of the first one.
    let Some(first) = events.first() else {
        return;
    };
    let d = event_depth(first);
    let mut i = 0;
    while i < events.len() {
        let ev = &events[i];
        // Children: following events deeper than this table node.
        let mut j = i + 1;
        let parent = matches!(ev, TraceEvent::Table { .. } | TraceEvent::Bridge { .. });
        if parent {
            while j < events.len() && event_depth(&events[j]) > d {
                j += 1;
            }
        }
        let last = j >= events.len();
        let terminal = !parent;
        // OVS `oftrace_node_print_details`: a node is indented unless it is the
        // last of its list and not terminal, so tail resubmits do not nest.
        let more = usize::from(!last || terminal);
        let indent = " ".repeat((level + more) * 4);
        match ev {
            TraceEvent::Table { table, rule, .. } => {
                let text = match rule {
                    Some((_, r)) => r.clone(),
                    None => "No match.".to_string(),
                };
                out.push_str(&format!("{indent}{table:2}. {text}\n"));
                print_nodes(out, &events[i + 1..j], level + 2 * more);
            }
            TraceEvent::Action { text, .. } => out.push_str(&format!("{indent}{text}\n")),
            TraceEvent::Detail { text, .. } => out.push_str(&format!("{indent} -> {text}\n")),
            TraceEvent::Warn { text, .. } => out.push_str(&format!("{indent} >> {text}\n")),
            TraceEvent::Bridge { name, .. } => {
                // OVS `oftrace_node_print_details`: a blank line, the title,
                // and dashes under it.
                let title = format!("bridge(\"{name}\")");
                out.push_str(&format!(
                    "\n{indent}{title}\n{indent}{}\n",
                    "-".repeat(title.len())
                ));
                print_nodes(out, &events[i + 1..j], level + 2 * more);
            }
        }
        i = j;
    }
}

/// Text of trace lines, through `syntax`'s formatters.
mod text {
    use super::super::action::Action;
    use super::super::flow_match::Match;
    use super::super::rule::{FlowMod, Rule, OFP_DEFAULT_PRIORITY};
    use super::super::syntax::{format_action, format_flow, format_match, FormatOptions};
    use crate::flow_key::{
        FlowKey, ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_RARP, IPPROTO_ICMP,
        IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
    };

    /// `match, priority N[, cookie 0x..]` as `ofproto/trace` shows a rule.
    pub(super) fn rule_brief(r: &Rule) -> String {
        let f = &r.flow;
        let m = format_match(&f.match_, OFP_DEFAULT_PRIORITY, &FormatOptions::default());
        let mut s = if m.is_empty() {
            format!("priority {}", f.priority)
        } else {
            format!("{m}, priority {}", f.priority)
        };
        if f.cookie != 0 {
            s.push_str(&format!(", cookie {:#x}", f.cookie));
        }
        s
    }

    pub(super) fn mac(m: &[u8; 6]) -> String {
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }

    pub(super) fn action(a: &Action) -> String {
        format_action(a, &FormatOptions::default())
    }

    pub(super) fn flow_mod(f: &FlowMod) -> String {
        format_flow(f, &FormatOptions::default())
    }

    /// The fields a packet of this key's protocol has, as a mask (OVS
    /// `flow_format` prints those).
    fn relevant(k: &FlowKey) -> FlowKey {
        let mut m = FlowKey {
            in_port: u32::MAX,
            dl_src: [0xff; 6],
            dl_dst: [0xff; 6],
            dl_type: u16::MAX,
            ..FlowKey::default()
        };
        m.vlan_tci[0] = u16::MAX;
        if k.tun_id != 0 || k.tun_src != 0 || k.tun_dst != 0 {
            m.tun_id = u64::MAX;
            m.tun_src = if k.tun_src != 0 { u32::MAX } else { 0 };
            m.tun_dst = if k.tun_dst != 0 { u32::MAX } else { 0 };
        }
        if k.tun_md_present != 0 {
            m.tun_md_present = u64::MAX;
            for (mv, kv) in m.tun_md.iter_mut().zip(k.tun_md) {
                *mv = if kv != 0 { u64::MAX } else { 0 };
            }
        }
        if k.metadata != 0 {
            m.metadata = u64::MAX;
        }
        for (mr, kr) in m.regs.iter_mut().zip(k.regs) {
            if kr != 0 {
                *mr = u32::MAX;
            }
        }
        match k.dl_type {
            ETH_TYPE_IPV4 | ETH_TYPE_IPV6 => {
                if k.dl_type == ETH_TYPE_IPV4 {
                    m.nw_src = u32::MAX;
                    m.nw_dst = u32::MAX;
                } else {
                    m.ipv6_src = [0xff; 16];
                    m.ipv6_dst = [0xff; 16];
                    m.ipv6_label = 0xf_ffff;
                }
                m.nw_proto = u8::MAX;
                m.nw_tos = u8::MAX;
                m.nw_ttl = u8::MAX;
                m.nw_frag = 0x03;
                if matches!(
                    k.nw_proto,
                    IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_ICMP | IPPROTO_ICMPV6
                ) {
                    m.tp_src = u16::MAX;
                    m.tp_dst = u16::MAX;
                }
                if k.nw_proto == IPPROTO_TCP {
                    m.tcp_flags = 0x0fff;
                }
            }
            ETH_TYPE_ARP | ETH_TYPE_RARP => {
                m.nw_src = u32::MAX;
                m.nw_dst = u32::MAX;
                m.nw_proto = u8::MAX;
                m.arp_sha = [0xff; 6];
                m.arp_tha = [0xff; 6];
            }
            _ => {}
        }
        m
    }

    /// A packet's flow key, its protocol's fields spelled out.
    pub(super) fn flow(k: &FlowKey) -> String {
        format_match(
            &Match::new(*k, relevant(k)),
            OFP_DEFAULT_PRIORITY,
            &FormatOptions::default(),
        )
    }

    /// The megaflow: the input key under the translation's mask.
    pub(super) fn megaflow(k: &FlowKey, mask: &FlowKey) -> String {
        format_match(
            &Match::new(*k, *mask),
            OFP_DEFAULT_PRIORITY,
            &FormatOptions::default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::syntax::{parse_flow, PortMap};
    use super::*;
    use crate::actions::format_dp_actions;

    const PORTS: [u32; 4] = [1, 2, 3, 4];

    fn tables(flows: &[&str]) -> Tables {
        let mut t = Tables::new();
        let fms = flows
            .iter()
            .map(|s| parse_flow(s, &PortMap::new()).unwrap())
            .collect();
        t.add_flows(fms, 0).unwrap();
        t
    }

    fn key(in_port: u32) -> FlowKey {
        FlowKey {
            in_port,
            dl_type: ETH_TYPE_IPV4,
            dl_src: [0, 0, 0, 0, 0, 1],
            dl_dst: [0, 0, 0, 0, 0, 2],
            nw_src: 0x0a00_0001,
            nw_dst: 0x0a00_0002,
            nw_proto: IPPROTO_TCP,
            nw_ttl: 64,
            tp_src: 1000,
            tp_dst: 80,
            ..FlowKey::default()
        }
    }

    fn run(t: &Tables, k: &FlowKey) -> Translation {
        translate(
            t,
            k,
            &PORTS,
            XlateOptions {
                trace: true,
                normal: None,
            },
        )
    }

    fn dp(t: &Tables, k: &FlowKey) -> String {
        format_dp_actions(&run(t, k).actions)
    }

    #[test]
    fn outputs_skip_in_port_unless_asked() {
        let t = tables(&["actions=output:1,output:2,in_port,output:9,LOCAL"]);
        assert_eq!(dp(&t, &key(1)), "2,1,4294967294");
        let t = tables(&["actions=FLOOD"]);
        assert_eq!(dp(&t, &key(2)), "1,3,4");
        let t = tables(&["actions=ALL"]);
        assert_eq!(dp(&t, &key(4)), "1,2,3");
        let x = run(&tables(&["actions=output:9"]), &key(1));
        assert_eq!(x.actions, vec![DpAction::Drop]);
        assert!(format_trace(&x).contains(" >> Nonexistent output port 9"));
    }

    #[test]
    fn miss_and_empty_actions_drop() {
        let t = Tables::new();
        let x = run(&t, &key(1));
        assert_eq!(x.actions, vec![DpAction::Drop]);
        assert!(x.rules.is_empty());
        assert_eq!(
            format_trace(&x).lines().nth(4),
            Some(" 0. No match."),
            "{}",
            format_trace(&x)
        );
        let t = tables(&["priority=0 actions=drop"]);
        assert_eq!(dp(&t, &key(1)), "drop");
        assert_eq!(run(&t, &key(1)).rules.len(), 1);
    }

    #[test]
    fn commits_are_lazy_and_minimal() {
        // Set once, output twice: one set action. Set and restore: nothing.
        let t = tables(&[
            "actions=mod_dl_src:00:00:00:00:00:09,output:2,output:3,mod_dl_src:00:00:00:00:00:01,output:4",
        ]);
        assert_eq!(
            dp(&t, &key(1)),
            "set(eth(src=00:00:00:00:00:09)),2,3,set(eth(src=00:00:00:00:00:01)),4"
        );
        let t = tables(&["actions=mod_nw_dst:10.0.0.9,mod_nw_dst:10.0.0.2,output:2"]);
        assert_eq!(dp(&t, &key(1)), "2");
        // No output: the sets are never emitted.
        let t = tables(&["actions=mod_nw_dst:10.0.0.9,dec_ttl"]);
        assert_eq!(dp(&t, &key(1)), "drop");
        // OVS's order: eth, ipv4, l4, vlan.
        let t = tables(&[
            "actions=mod_vlan_vid:5,mod_tp_dst:8080,dec_ttl,mod_dl_dst:00:00:00:00:00:07,output:2",
        ]);
        assert_eq!(
            dp(&t, &key(1)),
            "set(eth(dst=00:00:00:00:00:07)),set(ipv4(ttl=63)),set(tcp(dst=8080)),push_vlan(vid=5,pcp=0),2"
        );
    }

    #[test]
    fn vlan_changes_pop_and_push() {
        let mut k = key(1);
        k.vlan_tci[0] = VLAN_CFI | (3 << VLAN_PCP_SHIFT) | 10;
        k.vlan_tpid[0] = ETH_TYPE_VLAN_8021Q;
        let t = tables(&["actions=mod_vlan_vid:20,output:2"]);
        assert_eq!(dp(&t, &k), "pop_vlan,push_vlan(vid=20,pcp=3),2");
        let t = tables(&["actions=strip_vlan,output:2,push_vlan:0x88a8,mod_vlan_vid:7,output:3"]);
        assert_eq!(
            dp(&t, &k),
            "pop_vlan,2,push_vlan(tpid=0x88a8,vid=7,pcp=0),3"
        );
        // Pushing a second tag keeps the first.
        let t = tables(&["actions=push_vlan:0x88a8,output:2"]);
        assert_eq!(dp(&t, &k), "push_vlan(tpid=0x88a8,vid=0,pcp=0),2");
        // Stripping an untagged packet does nothing.
        let t = tables(&["actions=strip_vlan,output:2"]);
        assert_eq!(dp(&t, &key(1)), "2");
    }

    #[test]
    fn resubmit_in_port_is_for_the_lookup_only() {
        let t = tables(&[
            "table=0,in_port=1 actions=resubmit(3,1),output:4",
            "table=1,in_port=3 actions=in_port,output:3",
        ]);
        // table 1 matched in_port=3, but IN_PORT and the skip rule see port 1.
        assert_eq!(dp(&t, &key(1)), "1,3,4");
        let x = run(&t, &key(1));
        assert_eq!(x.rules.len(), 2);
        assert_eq!(x.mask.in_port, u32::MAX);
    }

    #[test]
    fn goto_table_continues_in_a_later_table() {
        let t = tables(&[
            "table=0 actions=mod_nw_tos:16,goto_table:5",
            "table=5,ip,nw_tos=16 actions=output:3",
        ]);
        assert_eq!(dp(&t, &key(1)), "set(ipv4(tos=0x10)),3");
    }

    #[test]
    fn resubmit_depth_is_bounded_and_counted() {
        let t = tables(&["actions=resubmit(,0)"]);
        let x = run(&t, &key(1));
        assert_eq!(x.error, Some(XlateError::TooDeep));
        assert_eq!(x.actions, vec![DpAction::Drop]);
        assert_eq!(x.rules.len(), MAX_RESUBMIT_DEPTH);
        let mut stats = XlateStats::default();
        stats.record(&x);
        assert_eq!(stats.too_deep, 1);
        assert!(format_trace(&x).contains("Translation failed"));

        // A wide tree: 70 x 70 resubmits, two levels deep.
        let fan = |t: u8| vec![format!("resubmit(,{t})"); 70].join(",");
        let t = tables(&[
            &format!("table=0 actions={}", fan(1)),
            &format!("table=1 actions={}", fan(2)),
            "table=2 actions=output:2",
        ]);
        let x = run(&t, &key(1));
        assert_eq!(x.error, Some(XlateError::TooManyResubmits));
        assert_eq!(x.actions, vec![DpAction::Drop]);
        stats.record(&x);
        assert_eq!(stats.too_many_resubmits, 1);

        // Many actions per level, few levels.
        let many = vec!["note:00"; 2000].join(",");
        let t = tables(&[
            &format!("table=0 actions={many},resubmit(,1),resubmit(,1),resubmit(,1)"),
            &format!("table=1 actions={many},resubmit(,2),resubmit(,2),resubmit(,2)"),
            &format!("table=2 actions={many},output:2"),
        ]);
        let x = run(&t, &key(1));
        assert_eq!(x.error, Some(XlateError::TooManyActions));
        stats.record(&x);
        assert_eq!(stats.too_many_actions, 1);
        assert_eq!(stats.translations, 3);
    }

    #[test]
    fn dec_ttl_expiry_goes_to_the_controller_and_stops_the_list() {
        let t = tables(&[
            "table=0 actions=resubmit(,1),output:3",
            "table=1 actions=dec_ttl,output:2",
        ]);
        let mut k = key(1);
        assert_eq!(dp(&t, &k), "set(ipv4(ttl=63)),2,3");
        k.nw_ttl = 1;
        let x = run(&t, &k);
        assert_eq!(
            format_dp_actions(&x.actions),
            "userspace(controller(max_len=65535)),3"
        );
        assert_eq!(x.n_controller, 1);
    }

    #[test]
    fn normal_without_hook_is_flagged() {
        let t = tables(&["actions=NORMAL,output:2"]);
        let x = run(&t, &key(1));
        assert!(x.normal_unsupported);
        assert_eq!(format_dp_actions(&x.actions), "2");
        assert!(format_trace(&x).contains(NORMAL_UNSUPPORTED));

        struct ToAll;
        impl NormalHook for ToAll {
            fn normal(
                &mut self,
                flow: &FlowKey,
                wc: &mut FlowKey,
                ports: &[u32],
            ) -> NormalDecision {
                wc.dl_dst = [0xff; 6];
                let ports = if flow.dl_dst[0] & 1 != 0 {
                    ports.to_vec()
                } else {
                    vec![3]
                };
                NormalDecision {
                    outputs: ports
                        .into_iter()
                        .map(|p| NormalOutput::unchanged(p, flow))
                        .collect(),
                    note: None,
                }
            }
        }
        let mut hook = ToAll;
        let x = translate(
            &t,
            &key(1),
            &PORTS,
            XlateOptions {
                trace: false,
                normal: Some(&mut hook),
            },
        );
        assert!(!x.normal_unsupported);
        assert_eq!(format_dp_actions(&x.actions), "3,2");
        assert_eq!(x.mask.dl_dst, [0xff; 6]);
    }

    /// A hook that sends port 2 the packet tagged VLAN 10 (keeping its PCP),
    /// port 3 untagged and port 1 (the input port) anything.
    struct Retag;
    impl NormalHook for Retag {
        fn normal(&mut self, flow: &FlowKey, wc: &mut FlowKey, _: &[u32]) -> NormalDecision {
            wc.vlan_tci[0] = u16::MAX;
            let pcp = flow.vlan_tci[0] & VLAN_PCP_MASK;
            NormalDecision {
                outputs: vec![
                    NormalOutput {
                        port: 1,
                        vlan: None,
                    },
                    NormalOutput {
                        port: 2,
                        vlan: Some(pcp | 10),
                    },
                    NormalOutput {
                        port: 3,
                        vlan: None,
                    },
                ],
                note: Some(NormalNote::Detail("retagging")),
            }
        }
    }

    fn run_normal(t: &Tables, k: &FlowKey) -> Translation {
        translate(
            t,
            k,
            &PORTS,
            XlateOptions {
                trace: true,
                normal: Some(&mut Retag),
            },
        )
    }

    #[test]
    fn normal_outputs_retag_through_the_commit_and_restore_the_flow() {
        let t = tables(&["actions=NORMAL,output:4"]);
        // Untagged in: push for port 2, pop back for port 3, port 4 (after
        // NORMAL) sees the packet untagged again; port 1 is the input port.
        let x = run_normal(&t, &key(1));
        assert_eq!(
            format_dp_actions(&x.actions),
            "push_vlan(vid=10,pcp=0),2,pop_vlan,3,4"
        );
        assert_eq!(x.final_flow, key(1));
        assert_eq!(x.mask.vlan_tci, [u16::MAX; 2]);
        assert!(format_trace(&x).contains(" -> retagging"));

        // Tagged VLAN 10 with PCP 5 in: port 2 needs no change, port 3 a pop, and
        // port 4 the tag back as it came.
        let mut k = key(1);
        k.vlan_tci[0] = VLAN_CFI | (5 << VLAN_PCP_SHIFT) | 10;
        k.vlan_tpid[0] = ETH_TYPE_VLAN_8021Q;
        let x = run_normal(&t, &k);
        assert_eq!(
            format_dp_actions(&x.actions),
            "2,pop_vlan,3,push_vlan(vid=10,pcp=5),4"
        );
        assert_eq!(x.final_flow, k);

        // Tagged VLAN 20: retagging is a pop and a push, as for mod_vlan_vid.
        k.vlan_tci[0] = VLAN_CFI | 20;
        let x = run_normal(&t, &k);
        assert_eq!(
            format_dp_actions(&x.actions),
            "pop_vlan,push_vlan(vid=10,pcp=0),2,pop_vlan,3,push_vlan(vid=20,pcp=0),4"
        );
        let t = tables(&["actions=mod_vlan_vid:10,output:2"]);
        assert_eq!(dp(&t, &k), "pop_vlan,push_vlan(vid=10,pcp=0),2");
    }

    #[test]
    fn set_field_needs_the_field() {
        // arp_op on an IP packet is not set; dl_type joins the mask.
        // (The flow parser refuses this; a FlowMod built in code is checked at
        // run time.)
        let mut t = Tables::new();
        let f = FlowMod {
            actions: vec![
                Action::Load {
                    dst: Subfield::whole(Field::ArpOp),
                    value: 2,
                },
                Action::Output(2),
            ],
            ..FlowMod::default()
        };
        t.add(f, 0).unwrap();
        let x = run(&t, &key(1));
        assert_eq!(format_dp_actions(&x.actions), "2");
        assert_eq!(x.final_flow.nw_proto, IPPROTO_TCP);
        let t = tables(&["tcp actions=set_field:8080->tcp_dst,output:2"]);
        assert_eq!(dp(&t, &key(1)), "set(tcp(dst=8080)),2");
    }

    #[test]
    fn move_and_output_reg() {
        let t = tables(&[
            "actions=move:NXM_OF_IN_PORT[]->NXM_NX_REG0[0..15],load:3->NXM_NX_REG1[],output:NXM_NX_REG1[0..15],output:NXM_NX_REG0[0..15]",
        ]);
        // output to reg0 = in_port is skipped like any output to the input port.
        let x = run(&t, &key(1));
        assert_eq!(format_dp_actions(&x.actions), "3");
        assert_eq!(x.final_flow.regs[..2], [1, 3]);
    }

    #[test]
    fn trace_nests_non_tail_resubmits() {
        let t = tables(&[
            "table=0,in_port=1 actions=resubmit(,1),resubmit(,2)",
            "table=1 actions=output:2",
            "table=2,priority=7 actions=resubmit(,3)",
        ]);
        let x = run(&t, &key(1));
        let text = format_trace(&x);
        let body: Vec<&str> = text.lines().skip(4).take(8).collect();
        assert_eq!(
            body,
            vec![
                " 0. in_port=1, priority 32768",
                "    resubmit(,1)",
                "     1. priority 32768",
                "            output:2",
                "    resubmit(,2)",
                " 2. priority 7",
                "    resubmit(,3)",
                " 3. No match.",
            ],
            "{text}"
        );
        assert!(text.ends_with("Datapath actions: 2\n"), "{text}");
    }
}
