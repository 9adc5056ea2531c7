//! A naive reference interpreter of the OpenFlow tables, for differential tests
//! of [`super::xlate`].
//!
//! It shares nothing with the translator but the field registry: lookups are a
//! linear scan of every rule ([`super::table::lookup_linear`]), actions are applied
//! eagerly to one flow key, and each output records the packet as it is at that
//! moment. The translator's lazy datapath actions, replayed over the input key
//! ([`crate::actions::execute_on_key`]), must give the same packets on the same
//! ports ([`visible`] projects away what the datapath cannot see). No megaflow
//! mask, no trace, no performance: clarity only.

use super::action::{Action, LearnField, OFPP_CONTROLLER, OFPP_LOCAL, OFPP_MAX};
use super::field::Field;
use super::flow_match::Match;
use super::rule::{FlowMod, FlowModFlags};
use super::table::{lookup_linear, RuleId, Tables};
use super::xlate::{MAX_ACTIONS, MAX_RESUBMITS, MAX_RESUBMIT_DEPTH};
use crate::flow_key::{
    FlowKey, ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_RARP, ETH_TYPE_VLAN_8021Q,
    FLOW_NW_FRAG_LATER, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
    VLAN_CFI, VLAN_PCP_MASK, VLAN_PCP_SHIFT, VLAN_VID_MASK,
};

/// What the reference interpreter computed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefResult {
    /// Each packet sent: port (`OFPP_CONTROLLER` for the controller) and the flow
    /// key at that moment. Empty when `failed`.
    pub outputs: Vec<(u32, FlowKey)>,
    /// Rules hit, in order.
    pub rules: Vec<RuleId>,
    /// Flows learned, in order.
    pub learned: Vec<FlowMod>,
    /// A bound (depth, resubmits, actions) was exceeded.
    pub failed: bool,
}

/// Runs `key` through `tables` on a bridge with `ports`.
pub fn run(tables: &Tables, key: &FlowKey, ports: &[u32]) -> RefResult {
    let mut r = Ref {
        tables,
        ports,
        flow: *key,
        res: RefResult::default(),
        n_actions: 0,
        n_resubmits: 0,
    };
    r.table(0, None, 0);
    if r.res.failed {
        r.res.outputs.clear();
    }
    r.res
}

/// The part of a key the datapath can observe in a packet: tunnel metadata,
/// Ethernet addresses, the VLAN tags present, and the L3/L4 fields of the
/// packet's protocol.
pub fn visible(k: &FlowKey) -> FlowKey {
    let mut v = FlowKey {
        tun_id: k.tun_id,
        tun_src: k.tun_src,
        tun_dst: k.tun_dst,
        dl_src: k.dl_src,
        dl_dst: k.dl_dst,
        dl_type: k.dl_type,
        ..FlowKey::default()
    };
    for i in 0..2 {
        if k.vlan_tci[i] & VLAN_CFI == 0 {
            break;
        }
        v.vlan_tci[i] = k.vlan_tci[i];
        v.vlan_tpid[i] = if k.vlan_tpid[i] == 0 {
            ETH_TYPE_VLAN_8021Q
        } else {
            k.vlan_tpid[i]
        };
    }
    let l4 = |v: &mut FlowKey, icmp: u8| {
        if k.nw_frag & FLOW_NW_FRAG_LATER != 0 {
            return;
        }
        match k.nw_proto {
            IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
                v.tp_src = k.tp_src;
                v.tp_dst = k.tp_dst;
            }
            p if p == icmp => {
                v.tp_src = k.tp_src & 0xff;
                v.tp_dst = k.tp_dst & 0xff;
            }
            _ => {}
        }
    };
    match k.dl_type {
        ETH_TYPE_IPV4 => {
            (v.nw_src, v.nw_dst, v.nw_tos, v.nw_ttl, v.nw_proto) =
                (k.nw_src, k.nw_dst, k.nw_tos, k.nw_ttl, k.nw_proto);
            l4(&mut v, IPPROTO_ICMP);
        }
        ETH_TYPE_IPV6 => {
            (v.ipv6_src, v.ipv6_dst, v.nw_tos, v.nw_ttl, v.nw_proto) =
                (k.ipv6_src, k.ipv6_dst, k.nw_tos, k.nw_ttl, k.nw_proto);
            v.ipv6_label = k.ipv6_label & 0xf_ffff;
            l4(&mut v, IPPROTO_ICMPV6);
        }
        ETH_TYPE_ARP | ETH_TYPE_RARP => {
            (v.nw_src, v.nw_dst, v.nw_proto, v.arp_sha, v.arp_tha) =
                (k.nw_src, k.nw_dst, k.nw_proto, k.arp_sha, k.arp_tha);
        }
        _ => {}
    }
    v
}

struct Ref<'a> {
    tables: &'a Tables,
    ports: &'a [u32],
    flow: FlowKey,
    res: RefResult,
    n_actions: usize,
    n_resubmits: usize,
}

impl Ref<'_> {
    fn table(&mut self, table: u8, in_port: Option<u32>, depth: usize) {
        if depth >= MAX_RESUBMIT_DEPTH {
            self.res.failed = true;
            return;
        }
        let mut k = self.flow;
        if let Some(p) = in_port {
            k.in_port = p;
        }
        let Some(id) = lookup_linear(self.tables, table, &k) else {
            return;
        };
        let Some(rule) = self.tables.get(id) else {
            return;
        };
        self.res.rules.push(id);
        for a in &rule.flow.actions {
            if self.res.failed {
                return;
            }
            self.n_actions += 1;
            if self.n_actions > MAX_ACTIONS {
                self.res.failed = true;
                return;
            }
            if self.act(table, a, depth) {
                return;
            }
        }
    }

    fn send(&mut self, port: u32) {
        self.res.outputs.push((port, self.flow));
    }

    fn output(&mut self, port: u32, allow_in_port: bool) {
        let exists = port == OFPP_LOCAL || (port < OFPP_MAX && self.ports.contains(&port));
        if (allow_in_port || port != self.flow.in_port) && exists {
            self.send(port);
        }
    }

    fn resubmit(&mut self, table: u8, port: Option<u32>, depth: usize) -> bool {
        self.n_resubmits += 1;
        if self.n_resubmits > MAX_RESUBMITS {
            self.res.failed = true;
            return true;
        }
        self.table(table, port, depth + 1);
        false
    }

    fn write(&mut self, field: Field, value: u128, mask: u128) {
        if matches!(
            field,
            Field::EthType | Field::IpProto | Field::IpFrag | Field::TcpFlags
        ) || !field.prereqs_ok(&self.flow, None)
        {
            return;
        }
        let old = field.get(&self.flow);
        field.set(&mut self.flow, (old & !mask) | (value & mask));
        if self.flow.vlan_tci[0] & VLAN_CFI != 0 && self.flow.vlan_tpid[0] == 0 {
            self.flow.vlan_tpid[0] = ETH_TYPE_VLAN_8021Q;
        }
    }

    /// Applies one action; `true` stops the rest of the list.
    fn act(&mut self, table: u8, a: &Action, depth: usize) -> bool {
        let f = &mut self.flow;
        match a {
            Action::Output(p) => self.output(*p, false),
            Action::InPort => self.output(self.flow.in_port, true),
            Action::Local => self.output(OFPP_LOCAL, false),
            Action::OutputReg(sf) => {
                let v = sf.read(&self.flow);
                if v <= 0xffff {
                    let p = v as u32;
                    let p = if p >= 0xfff8 { 0xffff_0000 | p } else { p };
                    if let Some(act) = Action::output(p) {
                        if !matches!(act, Action::OutputReg(_)) {
                            return self.act(table, &act, depth);
                        }
                    }
                }
            }
            Action::Flood | Action::All => {
                for &p in self.ports {
                    if p != self.flow.in_port {
                        self.send(p);
                    }
                }
            }
            Action::Normal | Action::Table | Action::Note(_) => {}
            Action::Controller { .. } => self.send(OFPP_CONTROLLER),
            Action::Resubmit { port, table: t } => {
                return self.resubmit(t.unwrap_or(table), *port, depth);
            }
            Action::GotoTable(t) => return self.resubmit(*t, None, depth),
            Action::ModVlanVid(vid) => {
                if f.vlan_tci[0] & VLAN_CFI == 0 {
                    f.vlan_tci[0] = VLAN_CFI;
                    f.vlan_tpid[0] = ETH_TYPE_VLAN_8021Q;
                }
                f.vlan_tci[0] = (f.vlan_tci[0] & !VLAN_VID_MASK) | (vid & VLAN_VID_MASK);
            }
            Action::ModVlanPcp(pcp) => {
                if f.vlan_tci[0] & VLAN_CFI == 0 {
                    f.vlan_tci[0] = VLAN_CFI;
                    f.vlan_tpid[0] = ETH_TYPE_VLAN_8021Q;
                }
                f.vlan_tci[0] = (f.vlan_tci[0] & !VLAN_PCP_MASK)
                    | ((u16::from(*pcp) << VLAN_PCP_SHIFT) & VLAN_PCP_MASK);
            }
            Action::StripVlan | Action::PopVlan => {
                if f.vlan_tci[0] & VLAN_CFI != 0 {
                    let inner = f.vlan_tci[1] & VLAN_CFI != 0;
                    f.vlan_tci[0] = if inner { f.vlan_tci[1] } else { 0 };
                    f.vlan_tpid[0] = if inner { f.vlan_tpid[1] } else { 0 };
                    f.vlan_tci[1] = 0;
                    f.vlan_tpid[1] = 0;
                }
            }
            Action::PushVlan(tpid) => {
                let present = f.vlan_tci[0] & VLAN_CFI != 0;
                f.vlan_tci[1] = if present { f.vlan_tci[0] } else { 0 };
                f.vlan_tpid[1] = if present { f.vlan_tpid[0] } else { 0 };
                f.vlan_tci[0] = VLAN_CFI;
                f.vlan_tpid[0] = *tpid;
            }
            Action::ModDlSrc(m) => f.dl_src = *m,
            Action::ModDlDst(m) => f.dl_dst = *m,
            Action::ModNwSrc(ip) if f.dl_type == ETH_TYPE_IPV4 => f.nw_src = *ip,
            Action::ModNwDst(ip) if f.dl_type == ETH_TYPE_IPV4 => f.nw_dst = *ip,
            Action::ModNwTos(t) if f.is_ip() => f.nw_tos = (f.nw_tos & 0x03) | (t & 0xfc),
            Action::ModTpSrc(p) if f.is_ip() && f.nw_frag & FLOW_NW_FRAG_LATER == 0 => {
                f.tp_src = *p;
            }
            Action::ModTpDst(p) if f.is_ip() && f.nw_frag & FLOW_NW_FRAG_LATER == 0 => {
                f.tp_dst = *p;
            }
            Action::ModNwSrc(_)
            | Action::ModNwDst(_)
            | Action::ModNwTos(_)
            | Action::ModTpSrc(_)
            | Action::ModTpDst(_) => {}
            Action::DecTtl => {
                if f.is_ip() {
                    if f.nw_ttl > 1 {
                        f.nw_ttl -= 1;
                    } else {
                        self.send(OFPP_CONTROLLER);
                        return true;
                    }
                }
            }
            Action::SetTunnel(id) | Action::SetTunnel64(id) => f.tun_id = *id,
            Action::SetField { field, value, mask } => self.write(*field, *value, *mask),
            Action::Load { dst, value } => {
                self.write(dst.field, value << dst.ofs, dst.value_mask());
            }
            Action::Move { src, dst } => {
                let writable = !matches!(
                    dst.field,
                    Field::EthType | Field::IpProto | Field::IpFrag | Field::TcpFlags
                );
                if writable
                    && src.field.prereqs_ok(&self.flow, None)
                    && dst.field.prereqs_ok(&self.flow, None)
                {
                    let v = src.read(&self.flow);
                    self.write(dst.field, v << dst.ofs, dst.value_mask());
                }
            }
            Action::Learn(spec) => {
                let mut m = Match::catchall();
                let mut actions = Vec::new();
                for s in &spec.specs {
                    match s {
                        LearnField::MatchField { dst, src } => {
                            dst.write(&mut m.key, src.read(&self.flow));
                            let mut one = FlowKey::default();
                            dst.field.set_raw(&mut one, dst.value_mask());
                            for (w, o) in m.mask.words_mut().iter_mut().zip(one.words()) {
                                *w |= o;
                            }
                        }
                        LearnField::MatchValue { dst, value } => {
                            dst.write(&mut m.key, *value);
                            let mut one = FlowKey::default();
                            dst.field.set_raw(&mut one, dst.value_mask());
                            for (w, o) in m.mask.words_mut().iter_mut().zip(one.words()) {
                                *w |= o;
                            }
                        }
                        LearnField::LoadField { src, dst } => actions.push(Action::Load {
                            dst: *dst,
                            value: src.read(&self.flow),
                        }),
                        LearnField::LoadValue { dst, value } => actions.push(Action::Load {
                            dst: *dst,
                            value: *value,
                        }),
                        LearnField::Output { src } => {
                            let v = src.read(&self.flow);
                            if v <= 0xffff {
                                let p = v as u32;
                                let p = if p >= 0xfff8 { 0xffff_0000 | p } else { p };
                                if let Some(a) = Action::output(p) {
                                    actions.push(a);
                                }
                            }
                        }
                    }
                }
                m.normalize();
                self.res.learned.push(FlowMod {
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
                });
            }
        }
        false
    }
}
