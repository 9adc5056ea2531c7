//! `NORMAL` over a bond: flow keys in, exact datapath actions and megaflow masks
//! out. Ports 1 and 4 are plain ports, 2 and 3 the members of bond `bond0`
//! (bundle 2). Learning on the bundle, one flood copy per bundle, member choice
//! per mode, failover, admissibility.

use pipeline::actions::format_dp_actions;
use pipeline::flow_key::{FlowKey, ETH_TYPE_IPV4, IPPROTO_TCP};
use pipeline::ofproto::bond::{Bond, BondMode};
use pipeline::ofproto::normal::Normal;
use pipeline::ofproto::syntax::{parse_flow, PortMap};
use pipeline::ofproto::table::Tables;
use pipeline::ofproto::xlate::{format_trace, translate, Translation, XlateOptions};

const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
const BCAST: [u8; 6] = [0xff; 6];
const PORTS: [u32; 4] = [1, 2, 3, 4];

struct Bridge {
    tables: Tables,
    normal: Normal,
}

impl Bridge {
    fn new(mode: BondMode, lacp: bool) -> Bridge {
        let mut tables = Tables::new();
        let fm = parse_flow("priority=0 actions=NORMAL", &PortMap::new()).unwrap();
        tables.add_flows(vec![fm], 0).unwrap();
        let mut normal = Normal::new();
        normal
            .add_bond(Bond::new(
                "bond0",
                mode,
                vec![("eth0".into(), 2), ("eth1".into(), 3)],
                lacp,
            ))
            .unwrap();
        let mut b = Bridge { tables, normal };
        b.links(true, true);
        b
    }

    /// Sets the members' carriers (LACP, when on, lets every member with
    /// carrier through); returns whether the bond changed.
    fn links(&mut self, eth0: bool, eth1: bool) -> bool {
        let bond = &mut self.normal.bonds_mut()[0];
        bond.update(|p| if p == 2 { eth0 } else { eth1 }, |_| true, true)
    }

    fn packet(&mut self, k: &FlowKey) -> Translation {
        let mut hook = self.normal.hook(0);
        translate(
            &self.tables,
            k,
            &PORTS,
            XlateOptions {
                trace: true,
                normal: Some(&mut hook),
            },
        )
    }

    fn dp(&mut self, k: &FlowKey) -> String {
        format_dp_actions(&self.packet(k).actions)
    }
}

/// The mask of a `NORMAL` decision on an untagged IPv4 frame: input port,
/// recirculation id, ethertype, both MACs, the whole outer TCI (VID 0: its PCP
/// decides a trunk's priority tag), the fragment bits.
fn normal_mask() -> FlowKey {
    let mut m = FlowKey {
        in_port: u32::MAX,
        recirc_id: u32::MAX,
        dl_type: u16::MAX,
        dl_src: [0xff; 6],
        dl_dst: [0xff; 6],
        nw_frag: 3,
        ..FlowKey::default()
    };
    m.vlan_tci[0] = 0xffff;
    m
}

fn frame(in_port: u32, src: [u8; 6], dst: [u8; 6]) -> FlowKey {
    FlowKey {
        in_port,
        dl_src: src,
        dl_dst: dst,
        dl_type: ETH_TYPE_IPV4,
        nw_src: 0x0a00_0001,
        nw_dst: 0x0a00_0002,
        nw_proto: IPPROTO_TCP,
        nw_ttl: 64,
        tp_src: 1000,
        tp_dst: 80,
        ..FlowKey::default()
    }
}

#[test]
fn active_backup_floods_once_learns_on_the_bundle_and_fails_over() {
    let mut b = Bridge::new(BondMode::ActiveBackup, false);
    assert_eq!(b.normal.bonds()[0].active(), Some(2));
    // A broadcast from port 1: one copy to the bond (its active member), one to 4.
    let x = b.packet(&frame(1, A, BCAST));
    assert_eq!(format_dp_actions(&x.actions), "2,4");
    // The mask is NORMAL's: no L3/L4 bit for active-backup.
    assert_eq!(x.mask, normal_mask());
    // B answers through the active member: learned on the bundle (port 2).
    assert_eq!(b.dp(&frame(2, B, A)), "1");
    assert_eq!(b.normal.macs().lookup(0, &B), Some(2));
    assert_eq!(b.dp(&frame(1, A, B)), "2");
    // A frame on the backup member is dropped and teaches nothing.
    let x = b.packet(&frame(3, C, A));
    assert_eq!(format_dp_actions(&x.actions), "drop");
    assert!(format_trace(&x).contains("frame on an inactive active-backup member, dropping"));
    assert_eq!(b.normal.macs().lookup(0, &C), None);
    // eth0 loses carrier: eth1 is active; B stays learned on the bundle and is
    // reached through eth1; flooding uses eth1.
    let g = b.normal.bonds_generation();
    assert!(b.links(false, true));
    assert_ne!(b.normal.bonds_generation(), g);
    assert_eq!(b.dp(&frame(1, A, B)), "3");
    assert_eq!(b.dp(&frame(4, C, BCAST)), "1,3");
    assert_eq!(b.dp(&frame(3, B, C)), "4");
    assert_eq!(b.normal.macs().lookup(0, &B), Some(2));
    // The old active member is now the inactive one.
    assert_eq!(b.dp(&frame(2, B, C)), "drop");
    // No member up: unicast to the bond drops, floods skip it.
    b.links(false, false);
    assert_eq!(b.dp(&frame(1, A, B)), "drop");
    assert_eq!(b.dp(&frame(1, A, BCAST)), "4");
}

#[test]
fn balance_tcp_spreads_l4_flows_with_an_l4_mask() {
    let mut b = Bridge::new(BondMode::BalanceTcp, true);
    // LACP negotiated (see `Bridge::links`): both members enabled; a flood is
    // one copy to the bond.
    let out = b.dp(&frame(1, A, BCAST));
    assert!(out == "2,4" || out == "3,4", "{out}");
    assert_eq!(b.dp(&frame(2, B, A)), "1");
    assert_eq!(b.dp(&frame(3, B, A)), "1");
    let mut used = Vec::new();
    for port in 0..32u16 {
        let mut k = frame(1, A, B);
        k.tp_src = 2000 + port;
        let x = b.packet(&k);
        let out = format_dp_actions(&x.actions);
        assert!(out == "2" || out == "3", "{out}");
        // NORMAL's mask plus the 5-tuple the hash read.
        let mut want = normal_mask();
        want.nw_src = u32::MAX;
        want.nw_dst = u32::MAX;
        want.nw_proto = 0xff;
        want.tp_src = 0xffff;
        want.tp_dst = 0xffff;
        assert_eq!(x.mask, want);
        if !used.contains(&out) {
            used.push(out);
        }
    }
    assert_eq!(used.len(), 2, "32 TCP flows use both members");
}

#[test]
fn balance_tcp_without_lacp_and_lacp_without_partner_carry_nothing() {
    let mut b = Bridge::new(BondMode::BalanceTcp, false);
    assert_eq!(b.dp(&frame(2, B, A)), "drop");
    let mut l = Bridge::new(BondMode::BalanceSlb, true);
    l.normal.bonds_mut()[0].update(|_| true, |_| false, false);
    assert_eq!(l.dp(&frame(2, B, A)), "drop");
    assert_eq!(l.dp(&frame(1, A, BCAST)), "4");
}

#[test]
fn balance_slb_hashes_sources_and_drops_reflections() {
    let mut b = Bridge::new(BondMode::BalanceSlb, false);
    let m = b.normal.bonds()[0]
        .choose_member(&frame(1, A, BCAST), 0, &mut FlowKey::default())
        .unwrap();
    // One copy to the bond, by the member A's MAC hashes to.
    assert_eq!(b.dp(&frame(1, A, BCAST)), format!("{m},4"));
    // A is learned on port 1: A's own frame coming back on a member is dropped.
    let x = b.packet(&frame(3, A, C));
    assert_eq!(format_dp_actions(&x.actions), "drop");
    assert!(format_trace(&x).contains("source MAC learned on another port"));
    // Unicast from B on the non-active member is fine in SLB.
    assert_eq!(b.dp(&frame(3, B, A)), "1");
    assert_eq!(b.normal.macs().lookup(0, &B), Some(2));
}
