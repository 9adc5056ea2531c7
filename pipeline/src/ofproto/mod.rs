//! OpenFlow tables: the slow path ("ofproto" + "xlate"), as Open vSwitch has it.
//!
//! # Layer
//!
//! The management thread owns one set of OpenFlow tables per bridge. A packet that
//! misses the PMD's megaflow cache is upcalled, run through these tables
//! (translation) and comes back as datapath actions plus a megaflow mask that the
//! PMD caches. Nothing here runs per packet on a PMD; allocation is fine, but the
//! code stays pure: no I/O, no clock (times are milliseconds the caller passes in),
//! no DPDK.
//!
//! # Model
//!
//! * [`field`]: the field registry (OVS meta-flow): every matchable/writable field
//!   with its `ovs-ofctl`, NXM and OXM names, width, maskability and
//!   prerequisites, read and written on a [`FlowKey`](crate::FlowKey); bit ranges
//!   ([`field::Subfield`]) for `load`/`move`/`learn`.
//! * [`flow_match`]: [`flow_match::Match`], a key plus a wildcard mask (a `FlowKey`
//!   whose 1-bits matter), OVS's `struct match`.
//! * [`action`]: [`action::Action`], OVS's `ofpact`s that `ovs-ofctl` accepts
//!   (output and reserved ports, resubmit, goto_table, VLAN and header rewrites,
//!   set_field/load/move, learn, note).
//! * [`rule`]: [`rule::FlowMod`] (a flow as added), [`rule::Rule`] (with
//!   counters and times), [`rule::FlowFilter`] (del-flows / dump-flows selection).
//! * [`normal`]: the `NORMAL` action: [`normal::Normal`], a learning switch per
//!   bridge and VLAN with OVS's port VLAN modes ([`normal::VlanMode`]) and MAC
//!   table ([`normal::MacTable`], `fdb/show`), plugged into translation as a
//!   [`xlate::NormalHook`].
//! * [`bond`]: bonds (a port of several interfaces) for `NORMAL`: member
//!   choice per `bond_mode`, admissibility, failover ([`bond::Bond`]).
//! * [`lacp`]: LACP (802.1AX) per bond: LACPDUs in and out, partners, which
//!   members may carry traffic ([`lacp::Lacp`]).
//! * [`syntax`]: `ovs-ofctl` text in and out: `add-flow`/`add-flows` lines,
//!   `del-flows`/`dump-flows` selections, `dump-flows` lines (printed in
//!   `match_format`'s field order, actions as `ofpacts_format`), [`syntax::PortMap`].
//! * [`tnl`]: tunnel ports (`vxlan`, `gre`, `geneve`): their options and the
//!   lookup of the tunnel port a decapsulated packet arrived on; translation
//!   turns outputs to them into `tnl_push` and packets for a local endpoint
//!   into `tnl_pop` (native tunneling, with a [`xlate::TunnelEnv`]).
//!
//! # OVS compatibility
//!
//! Flows are written and printed in `ovs-ofctl`'s text syntax so operators' and
//! Neutron's flows load unchanged and `dump-flows` reads the same. Field
//! semantics follow OVS, quirks included: `dl_vlan=N` matches TCI `0x1000|N`
//! under `0x1fff`, `dl_vlan=0xffff` matches untagged packets, `nw_tos` is the TOS
//! byte with the ECN bits masked off, ARP addresses share storage with
//! `nw_src`/`nw_dst`, ICMP type/code with `tp_src`/`tp_dst`. Deviations are
//! documented where they occur.

pub mod action;
pub mod bond;
pub mod field;
pub mod flow_match;
pub mod lacp;
pub mod normal;
pub mod reference;
pub mod rule;
pub mod syntax;
pub mod table;
pub mod tnl;
pub mod xlate;
