//! The slow path over a bond, with a datapath that records what it is asked
//! and whose links the test sets: megaflows follow the bond's active member,
//! a member's carrier going down moves them (revalidated in place), LACPDUs
//! are consumed (no megaflow kept) and answered, and LACP enables members.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mgmt::ofproto::{Bridge, BridgePort, DpControl, Ofproto, OfprotoConfig};
use pipeline::actions::{format_dp_actions, DpAction};
use pipeline::flow_cache::FlowStats;
use pipeline::flow_key::ETH_TYPE_IPV4;
use pipeline::ofproto::bond::BondMode;
use pipeline::ofproto::lacp::{
    build_pdu, parse_pdu, LacpInfo, ETH_TYPE_SLOW, LACP_DST, STATE_ACTIVITY, STATE_AGGREGATION,
    STATE_COLLECTING, STATE_DISTRIBUTING, STATE_SYNC, STATE_TIMEOUT,
};
use pipeline::FlowKey;

#[derive(Default)]
struct Dp {
    log: Mutex<Vec<String>>,
    links: Mutex<HashMap<usize, bool>>,
    sent: Mutex<Vec<(usize, Vec<u8>)>>,
}

impl DpControl for &Dp {
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
            "install pmd{pmd} in_port={} dl_type={:#06x} -> {}{}",
            key.in_port & mask.in_port,
            key.dl_type,
            format_dp_actions(&actions),
            if packet.is_some() { " +pkt" } else { "" }
        ));
    }
    fn remove(&self, pmd: usize, _mask: &FlowKey, key: &FlowKey) {
        self.log.lock().unwrap().push(format!(
            "remove pmd{pmd} in_port={} dl_type={:#06x}",
            key.in_port, key.dl_type
        ));
    }
    fn link_up(&self, odp: usize) -> Option<bool> {
        Some(*self.links.lock().unwrap().get(&odp).unwrap_or(&true))
    }
    fn packet_data(&self, packet: &Vec<u8>) -> Vec<u8> {
        packet.clone()
    }
    fn send(&self, odp: usize, frame: &[u8]) {
        self.sent.lock().unwrap().push((odp, frame.to_vec()));
    }
}

const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

/// Port `host` (OpenFlow 1, datapath 10) and bond `bond0` of `eth0` (2, 11)
/// and `eth1` (3, 12).
fn bridge(mode: BondMode, lacp: Option<(bool, bool)>) -> Bridge {
    let ports = [("host", 1, 10), ("eth0", 2, 11), ("eth1", 3, 12)]
        .iter()
        .map(|&(n, of, odp)| BridgePort {
            name: n.into(),
            ofport: of,
            odp,
        })
        .collect();
    let mut b = Bridge::new("br0", ports);
    b.add_bond("bond0", &["eth0", "eth1"], mode, lacp).unwrap();
    b
}

fn frame(odp: u32, src: [u8; 6], dst: [u8; 6]) -> FlowKey {
    FlowKey {
        in_port: odp,
        dl_src: src,
        dl_dst: dst,
        dl_type: ETH_TYPE_IPV4,
        ..FlowKey::default()
    }
}

fn take(dp: &Dp) -> Vec<String> {
    std::mem::take(&mut *dp.log.lock().unwrap())
}

#[test]
fn megaflows_follow_the_active_member_when_its_link_goes_down() {
    let dp = Dp::default();
    let mut o = Ofproto::new(
        vec![bridge(BondMode::ActiveBackup, None)],
        &dp,
        OfprotoConfig::default(),
    );
    // A floods: one copy, to the active member eth0.
    o.handle_upcall(0, frame(10, A, [0xff; 6]), vec![]);
    assert_eq!(
        take(&dp),
        ["install pmd0 in_port=10 dl_type=0x0800 -> 11 +pkt"]
    );
    // B answers through eth0 (learned on the bond): unicast to A, and A's
    // unicast to B goes to eth0.
    o.handle_upcall(0, frame(11, B, A), vec![]);
    assert_eq!(
        take(&dp),
        ["install pmd0 in_port=11 dl_type=0x0800 -> 10 +pkt"]
    );
    o.handle_upcall(0, frame(10, A, B), vec![]);
    assert_eq!(
        take(&dp),
        ["install pmd0 in_port=10 dl_type=0x0800 -> 11 +pkt"]
    );
    // eth0 loses its carrier: at the next periodic run eth1 is active and both
    // megaflows towards the bond (the flood, the unicast) are updated in place;
    // B's megaflow from eth0 now drops (inactive member).
    dp.links.lock().unwrap().insert(11, false);
    o.run_periodic();
    let mut log = take(&dp);
    log.sort();
    assert_eq!(
        log,
        [
            "install pmd0 in_port=10 dl_type=0x0800 -> 12",
            "install pmd0 in_port=10 dl_type=0x0800 -> 12",
            "install pmd0 in_port=11 dl_type=0x0800 -> drop",
        ]
    );
    assert_eq!(o.stats.bond_revalidations, 1);
    assert_eq!(
        o.bond_show(Some("bond0")).unwrap(),
        "---- bond0 ----\nbond_mode: active-backup\nlacp_status: off\nactive member: eth1\n\
         \nmember eth0: disabled\n  may_enable: false\n  link: down\n\
         \nmember eth1: enabled\n  active member\n  may_enable: true\n  link: up\n"
    );
    // B's frames on eth1 now pass (eth0's megaflow from B now drops).
    o.handle_upcall(0, frame(12, B, A), vec![]);
    assert_eq!(
        take(&dp),
        ["install pmd0 in_port=12 dl_type=0x0800 -> 10 +pkt"]
    );
    assert_eq!(
        o.bond_show(Some("nope")).unwrap_err(),
        "no such bond \"nope\""
    );
    let json: serde_json::Value = serde_json::from_str(&o.bond_show_json(None).unwrap()).unwrap();
    assert_eq!(json[0]["active_member"], "eth1");
    assert_eq!(json[0]["members"][0]["link"], false);
}

#[test]
fn lacpdus_are_consumed_answered_and_enable_members() {
    let dp = Dp::default();
    let mut o = Ofproto::new(
        vec![bridge(BondMode::BalanceTcp, Some((true, true)))],
        &dp,
        OfprotoConfig::default(),
    );
    // Active LACP: a LACPDU out of each member at once.
    let sent = std::mem::take(&mut *dp.sent.lock().unwrap());
    assert_eq!(sent.iter().map(|s| s.0).collect::<Vec<_>>(), [11, 12]);
    let ours = parse_pdu(&sent[0].1).unwrap().actor;
    assert_eq!(ours.port, 2);
    assert!(o
        .bond_show(None)
        .unwrap()
        .contains("lacp_status: configured"));
    // Nothing passes the bond before negotiation.
    o.handle_upcall(0, frame(10, A, [0xff; 6]), vec![]);
    assert_eq!(
        take(&dp),
        ["install pmd0 in_port=10 dl_type=0x0800 -> drop +pkt"]
    );

    // The partner's LACPDU on eth0: consumed, no megaflow kept, answered.
    let partner = |state: u8, about_us: &LacpInfo| {
        let actor = LacpInfo {
            sys_priority: 65535,
            sys_id: [0x52, 0x54, 0, 0, 0, 1],
            key: 9,
            port_priority: 255,
            port: 1,
            state,
        };
        build_pdu([0x52, 0x54, 0, 0, 0, 2], &actor, about_us)
    };
    let lacp_key = FlowKey {
        in_port: 11,
        dl_src: [0x52, 0x54, 0, 0, 0, 2],
        dl_dst: LACP_DST,
        dl_type: ETH_TYPE_SLOW,
        ..FlowKey::default()
    };
    let st = STATE_ACTIVITY | STATE_TIMEOUT | STATE_AGGREGATION;
    o.handle_upcall(0, lacp_key, partner(st, &ours));
    assert_eq!(
        take(&dp),
        [
            "install pmd0 in_port=11 dl_type=0x8809 -> drop +pkt",
            "remove pmd0 in_port=11 dl_type=0x8809"
        ]
    );
    assert_eq!(o.n_megaflows(), 1);
    assert_eq!(o.stats.lacp_rx, 1);
    let sent = std::mem::take(&mut *dp.sent.lock().unwrap());
    let answer = sent.iter().find(|s| s.0 == 11).expect("an answer on eth0");
    let ours = parse_pdu(&answer.1).unwrap().actor;
    assert_eq!(
        ours.state & (STATE_SYNC | STATE_COLLECTING | STATE_DISTRIBUTING),
        STATE_SYNC | STATE_COLLECTING | STATE_DISTRIBUTING
    );
    // The partner in sync: eth0 carries traffic, eth1 (no partner) does not.
    let full = st | STATE_SYNC | STATE_COLLECTING | STATE_DISTRIBUTING;
    o.handle_upcall(0, lacp_key, partner(full, &ours));
    let show = o.bond_show(None).unwrap();
    assert!(show.contains("lacp_status: negotiated"), "{show}");
    assert!(show.contains("member eth0: enabled"), "{show}");
    assert!(show.contains("member eth1: disabled"), "{show}");
    let lacp = o.lacp_show(Some("bond0")).unwrap();
    assert!(
        lacp.contains(
            "partner state: activity timeout aggregation synchronized collecting distributing"
        ),
        "{lacp}"
    );
    assert!(lacp.contains("member: eth0: current attached"), "{lacp}");
    // The flood that dropped is revalidated: balance-tcp now hashes L3/L4
    // fields its mask lacks, so it is removed (the next packet upcalls).
    let log = take(&dp);
    assert_eq!(
        log[2..],
        ["remove pmd0 in_port=10 dl_type=0x0800".to_string()],
        "{log:?}"
    );
    o.handle_upcall(0, frame(10, A, [0xff; 6]), vec![]);
    assert_eq!(
        take(&dp),
        ["install pmd0 in_port=10 dl_type=0x0800 -> 11 +pkt"]
    );
}

#[test]
fn bridges_from_config_make_the_bond_with_its_vlan_mode_on_the_bundle() {
    let cfg = mgmt::config::Config::from_toml_str(
        r#"
[[bridge]]
name = "br0"
  [[bridge.port]]
  name = "host"
  options = { dpdk-devargs = "net_null0" }
  [[bridge.port]]
  name = "bond0"
  bond_mode = "balance-slb"
  lacp = "passive"
  tag = 10
    [[bridge.port.interface]]
    name = "eth0"
    options = { dpdk-devargs = "net_null1" }
    [[bridge.port.interface]]
    name = "eth1"
    options = { dpdk-devargs = "net_null2" }
"#,
    )
    .unwrap();
    let bridges = mgmt::ofproto::bridges_from_config(&cfg).unwrap();
    let b = &bridges[0];
    let ports: Vec<(&str, u32, usize)> = b
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.ofport, p.odp))
        .collect();
    assert_eq!(
        ports,
        [
            ("host", 1, 0),
            ("eth0", 2, 1),
            ("eth1", 3, 2),
            ("br0", pipeline::flow_key::OFPP_LOCAL, 3)
        ]
    );
    let bond = &b.normal.bonds()[0];
    assert_eq!(bond.name(), "bond0");
    assert_eq!(bond.mode(), BondMode::BalanceSlb);
    assert_eq!(bond.bundle(), 2);
    assert_eq!(
        b.normal.port_mode(2),
        &pipeline::ofproto::normal::VlanMode::Access { tag: 10 }
    );
    // Passive LACP and no partner: nothing sent, nothing enabled.
    let dp = Dp::default();
    let o = Ofproto::new(bridges, &dp, OfprotoConfig::default());
    assert!(dp.sent.lock().unwrap().is_empty());
    let show = o.lacp_show(None).unwrap();
    assert!(show.contains("  status: passive\n"), "{show}");
    assert!(o
        .bond_show(None)
        .unwrap()
        .contains("lacp_status: configured"));
}
