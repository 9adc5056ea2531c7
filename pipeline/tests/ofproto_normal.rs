//! The `NORMAL` action end to end: packets (flow keys) in, exact datapath actions
//! out, through `translate` with `priority=0 actions=NORMAL` in table 0 and a
//! `Normal` learning switch as the hook. Flooding, learning, MAC moves, aging,
//! table-size eviction, every port VLAN mode, reserved destinations, the
//! megaflow mask (and its soundness, property-tested), `fdb/show` and traces that
//! learn nothing.

use pipeline::actions::format_dp_actions;
use pipeline::flow_key::{FlowKey, ETH_TYPE_IPV4, ETH_TYPE_VLAN_8021AD, VLAN_CFI, VLAN_PCP_SHIFT};
use pipeline::ofproto::normal::{MacStats, Normal, VlanMode, VlanSet};
use pipeline::ofproto::syntax::{parse_flow, PortMap};
use pipeline::ofproto::table::Tables;
use pipeline::ofproto::xlate::{format_trace, translate, Translation, XlateOptions};
use proptest::prelude::*;

const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
const BCAST: [u8; 6] = [0xff; 6];

/// A bridge: OpenFlow ports, table 0 = `priority=0 actions=NORMAL`, the switch.
struct Bridge {
    tables: Tables,
    ports: Vec<u32>,
    normal: Normal,
}

impl Bridge {
    fn new(ports: &[u32]) -> Self {
        Self::with_flows(ports, &["priority=0 actions=NORMAL"])
    }

    fn with_flows(ports: &[u32], flows: &[&str]) -> Self {
        let mut tables = Tables::new();
        let fms = flows
            .iter()
            .map(|f| parse_flow(f, &PortMap::new()).unwrap())
            .collect();
        tables.add_flows(fms, 0).unwrap();
        Bridge {
            tables,
            ports: ports.to_vec(),
            normal: Normal::new(),
        }
    }

    fn mode(&mut self, port: u32, mode: VlanMode) -> &mut Self {
        self.normal.set_port(port, mode).unwrap();
        self
    }

    /// An upcall at `now_ms`: translates, learning.
    fn packet(&mut self, k: &FlowKey, now_ms: u64) -> Translation {
        let mut hook = self.normal.hook(now_ms);
        translate(
            &self.tables,
            k,
            &self.ports,
            XlateOptions {
                trace: true,
                normal: Some(&mut hook),
            },
        )
    }

    /// The datapath actions of an upcall at `now_ms`.
    fn dp_at(&mut self, k: &FlowKey, now_ms: u64) -> String {
        format_dp_actions(&self.packet(k, now_ms).actions)
    }

    /// The datapath actions of an upcall at time 0.
    fn dp(&mut self, k: &FlowKey) -> String {
        format_dp_actions(&self.packet(k, 0).actions)
    }

    /// `ofproto/trace`: the same decision, nothing learned.
    fn trace(&self, k: &FlowKey) -> Translation {
        let mut hook = self.normal.trace_hook();
        translate(
            &self.tables,
            k,
            &self.ports,
            XlateOptions {
                trace: true,
                normal: Some(&mut hook),
            },
        )
    }
}

/// An IPv4/UDP frame; `tci` is the outer tag's VID and PCP (CFI added), or
/// `None` for untagged.
fn frame(in_port: u32, src: [u8; 6], dst: [u8; 6], tci: Option<u16>) -> FlowKey {
    let mut k = FlowKey {
        in_port,
        dl_src: src,
        dl_dst: dst,
        dl_type: ETH_TYPE_IPV4,
        nw_src: 0x0a00_0001,
        nw_dst: 0x0a00_0002,
        nw_proto: 17,
        nw_ttl: 64,
        tp_src: 1000,
        tp_dst: 2000,
        ..FlowKey::default()
    };
    if let Some(tci) = tci {
        k.vlan_tci[0] = VLAN_CFI | tci;
        k.vlan_tpid[0] = 0x8100;
    }
    k
}

fn pcp(p: u16) -> u16 {
    p << VLAN_PCP_SHIFT
}

fn trunks(vids: &[u16]) -> Option<VlanSet> {
    Some(VlanSet::from_vids(vids.iter().copied()).unwrap())
}

#[test]
fn unknown_unicast_floods_to_every_port_but_the_input() {
    let mut br = Bridge::new(&[1, 2, 3, 4]);
    assert_eq!(br.dp(&frame(1, A, B, None)), "2,3,4");
    assert_eq!(br.dp(&frame(3, C, B, None)), "1,2,4");
    assert_eq!(br.dp(&frame(4, C, BCAST, None)), "1,2,3");
    // A multicast destination floods even when "learned" nowhere.
    assert_eq!(br.dp(&frame(2, C, [0x01, 0, 0x5e, 0, 0, 1], None)), "1,3,4");
    let x = br.packet(&frame(1, A, B, None), 0);
    assert!(
        format_trace(&x).contains(" -> no learned MAC for destination, flooding"),
        "{}",
        format_trace(&x)
    );
}

#[test]
fn learned_unicast_goes_to_exactly_one_port() {
    let mut br = Bridge::new(&[1, 2, 3, 4]);
    // A speaks on port 1 (flooded: B is unknown); B answers from port 3.
    assert_eq!(br.dp(&frame(1, A, B, None)), "2,3,4");
    let x = br.packet(&frame(3, B, A, None), 1000);
    assert_eq!(format_dp_actions(&x.actions), "1");
    assert!(format_trace(&x).contains(" -> forwarding to learned port"));
    // Now both are known.
    assert_eq!(br.dp(&frame(1, A, B, None)), "3");
    assert_eq!(br.normal.macs().lookup(0, &A), Some(1));
    assert_eq!(br.normal.macs().lookup(0, &B), Some(3));
    // A frame to a MAC learned on its own input port is dropped (OVS).
    let x = br.packet(&frame(1, C, A, None), 0);
    assert_eq!(format_dp_actions(&x.actions), "drop");
    assert!(format_trace(&x).contains(" -> learned port is input port, dropping"));
    // A frame whose source is its destination: learned first, then dropped.
    assert_eq!(
        br.dp(&frame(
            2,
            [0x02, 0, 0, 0, 0, 0x0d],
            [0x02, 0, 0, 0, 0, 0x0d],
            None
        )),
        "drop"
    );
    // Broadcast from a known host still floods.
    assert_eq!(br.dp(&frame(3, B, BCAST, None)), "1,2,4");
    // Group sources are never learned.
    br.dp(&frame(4, BCAST, A, None));
    assert_eq!(br.normal.macs().lookup(0, &BCAST), None);
    assert_eq!(br.normal.macs().len(), 4);
}

#[test]
fn a_mac_that_moves_is_followed_and_the_generation_moves() {
    let mut br = Bridge::new(&[1, 2, 3, 4]);
    br.dp(&frame(1, A, BCAST, None));
    assert_eq!(br.dp(&frame(3, B, A, None)), "1");
    let g = br.normal.macs().generation();
    // The same traffic from A changes nothing.
    br.dp(&frame(1, A, BCAST, None));
    assert_eq!(br.normal.macs().generation(), g);
    // A moves to port 2 (a VM migrated).
    assert_eq!(br.dp(&frame(2, A, BCAST, None)), "1,3,4");
    assert_ne!(br.normal.macs().generation(), g);
    assert_eq!(br.dp(&frame(3, B, A, None)), "2");
    assert_eq!(br.normal.macs().stats().moved, 1);
}

#[test]
fn entries_age_out_after_300_seconds() {
    let mut br = Bridge::new(&[1, 2, 3]);
    br.dp_at(&frame(1, A, BCAST, None), 10_000);
    assert_eq!(br.normal.macs_mut().expire(10_000 + 299_999), 0);
    assert_eq!(br.dp_at(&frame(2, B, A, None), 309_999), "1");
    // B's frame to A did not refresh A: A ages 300 s after it was last seen.
    assert_eq!(br.normal.macs_mut().expire(310_000), 1);
    assert_eq!(br.dp_at(&frame(2, B, A, None), 311_000), "1,3");
    assert_eq!(br.normal.macs().stats().expired, 1);
    // Frames from A refresh it.
    br.dp_at(&frame(1, A, BCAST, None), 400_000);
    br.dp_at(&frame(1, A, BCAST, None), 600_000);
    assert_eq!(br.normal.macs_mut().expire(610_999), 0);
    assert_eq!(
        br.normal.macs_mut().expire(611_000),
        1,
        "B, last seen at 311 s"
    );
    assert_eq!(br.normal.macs_mut().expire(899_999), 0);
    assert_eq!(br.normal.macs().lookup(0, &A), Some(1));
    assert_eq!(br.normal.macs_mut().expire(900_000), 1);
    assert!(br.normal.macs().is_empty());
}

#[test]
fn a_full_table_evicts_the_biggest_ports_oldest_entry() {
    let mut br = Bridge::new(&[1, 2, 3]);
    br.normal.macs_mut().set_max_entries(10);
    let mac = |i: u8| [0x02, 0, 0, 0, 1, i];
    // Port 1 floods the table with 8 sources, port 2 has 2 hosts.
    br.packet(&frame(2, A, BCAST, None), 0);
    br.packet(&frame(2, B, BCAST, None), 0);
    for i in 0..8 {
        br.packet(&frame(1, mac(i), BCAST, None), 1);
    }
    assert_eq!(br.normal.macs().len(), 10);
    // Another source on port 1 evicts port 1's oldest, not port 2's hosts.
    br.packet(&frame(1, mac(8), BCAST, None), 2);
    assert_eq!(br.normal.macs().len(), 10);
    assert_eq!(br.normal.macs().lookup(0, &mac(0)), None);
    assert_eq!(br.dp(&frame(3, C, A, None)), "2");
    assert_eq!(br.dp(&frame(3, C, B, None)), "2");
    // C, new on port 3, evicted port 1's next oldest, mac(1).
    assert_eq!(br.dp(&frame(2, A, mac(0), None)), "1,3");
    assert_eq!(br.dp(&frame(2, A, mac(1), None)), "1,3");
    assert_eq!(br.dp(&frame(2, A, mac(2), None)), "1");
    assert_eq!(
        br.normal.macs().stats(),
        MacStats {
            learned: 12,
            evicted: 2,
            ..MacStats::default()
        }
    );
}

/// Ports: 1 and 2 access VLAN 10, 3 access VLAN 20, 4 trunk (all VLANs),
/// 5 trunk of VLAN 10 only, 6 trunk of VLAN 20 only.
fn vlan_bridge() -> Bridge {
    let mut br = Bridge::new(&[1, 2, 3, 4, 5, 6]);
    br.mode(1, VlanMode::Access { tag: 10 })
        .mode(2, VlanMode::Access { tag: 10 })
        .mode(3, VlanMode::Access { tag: 20 })
        .mode(
            5,
            VlanMode::Trunk {
                trunks: trunks(&[10]),
            },
        )
        .mode(
            6,
            VlanMode::Trunk {
                trunks: trunks(&[20]),
            },
        );
    br
}

#[test]
fn access_port_frames_are_tagged_on_trunks() {
    let mut br = vlan_bridge();
    // Untagged on access port 1 is VLAN 10: port 2 as is, trunks 4 and 5 tagged.
    assert_eq!(
        br.dp(&frame(1, A, BCAST, None)),
        "2,push_vlan(vid=10,pcp=0),4,5"
    );
    assert_eq!(br.normal.macs().lookup(10, &A), Some(1));
    // Priority-tagged (VID 0) is VLAN 10 too, and its PCP is kept.
    assert_eq!(
        br.dp(&frame(1, B, BCAST, Some(pcp(5)))),
        "pop_vlan,2,push_vlan(vid=10,pcp=5),4,5"
    );
    // A tagged frame on an access port is dropped, and not learned.
    let x = br.packet(&frame(1, C, BCAST, Some(10)), 0);
    assert_eq!(format_dp_actions(&x.actions), "drop");
    assert!(format_trace(&x).contains(" >> disallowed VLAN VID for this input port, dropping"));
    assert_eq!(br.normal.macs().lookup(10, &C), None);
    // Known unicast from an access port to a host behind a trunk.
    br.dp(&frame(4, C, A, Some(10)));
    assert_eq!(br.dp(&frame(1, A, C, None)), "push_vlan(vid=10,pcp=0),4");
}

#[test]
fn trunk_frames_reach_access_ports_of_their_vlan_untagged() {
    let mut br = vlan_bridge();
    assert_eq!(
        br.dp(&frame(4, A, BCAST, Some(10))),
        "pop_vlan,1,2,push_vlan(vid=10,pcp=0),5"
    );
    assert_eq!(
        br.dp(&frame(4, A, BCAST, Some(20))),
        "pop_vlan,3,push_vlan(vid=20,pcp=0),6"
    );
    // The PCP of a tagged frame goes along where it stays tagged.
    assert_eq!(
        br.dp(&frame(4, B, BCAST, Some(pcp(3) | 10))),
        "pop_vlan,1,2,push_vlan(vid=10,pcp=3),5"
    );
    // VLAN 30: only the all-VLAN trunk carries it, and that is the input port.
    assert_eq!(br.dp(&frame(4, A, BCAST, Some(30))), "drop");
    // Untagged on a trunk is VLAN 0, which no other port carries here.
    assert_eq!(br.dp(&frame(4, A, BCAST, None)), "drop");
    // Learned per VLAN: A is on port 4 in VLANs 10, 20 and 30.
    assert_eq!(br.dp(&frame(1, C, A, None)), "push_vlan(vid=10,pcp=0),4");
    assert_eq!(br.dp(&frame(3, C, A, None)), "push_vlan(vid=20,pcp=0),4");
    // A 802.1ad outer tag is the frame's VLAN too, and keeps its TPID.
    let mut k = frame(5, C, BCAST, Some(10));
    k.vlan_tpid[0] = ETH_TYPE_VLAN_8021AD;
    assert_eq!(
        br.dp(&k),
        "pop_vlan,1,2,push_vlan(tpid=0x88a8,vid=10,pcp=0),4"
    );
}

#[test]
fn a_trunk_with_a_vlan_list_drops_other_vlans() {
    let mut br = vlan_bridge();
    for k in [
        frame(5, A, BCAST, Some(20)),
        frame(5, A, BCAST, None),
        frame(6, A, BCAST, Some(10)),
    ] {
        let x = br.packet(&k, 0);
        assert_eq!(format_dp_actions(&x.actions), "drop", "{k:?}");
        assert!(format_trace(&x).contains("disallowed VLAN VID"));
    }
    assert!(br.normal.macs().is_empty());
    assert_eq!(
        br.dp(&frame(5, A, BCAST, Some(10))),
        "pop_vlan,1,2,push_vlan(vid=10,pcp=0),4"
    );
}

#[test]
fn broadcast_stays_in_its_vlan() {
    let mut br = Bridge::new(&[1, 2, 3, 4, 5]);
    br.mode(1, VlanMode::Access { tag: 10 })
        .mode(2, VlanMode::Access { tag: 20 })
        .mode(3, VlanMode::Access { tag: 10 })
        .mode(4, VlanMode::Access { tag: 20 });
    assert_eq!(
        br.dp(&frame(1, A, BCAST, None)),
        "3,push_vlan(vid=10,pcp=0),5"
    );
    assert_eq!(
        br.dp(&frame(2, B, BCAST, None)),
        "4,push_vlan(vid=20,pcp=0),5"
    );
    // A is unknown in VLAN 20 though known in VLAN 10: flood within VLAN 20.
    assert_eq!(br.dp(&frame(4, C, A, None)), "2,push_vlan(vid=20,pcp=0),5");
    assert_eq!(br.dp(&frame(3, C, A, None)), "1");
}

#[test]
fn native_vlans_untagged_and_tagged() {
    // 1 native-untagged 10 trunking 20, 2 access 10, 3 trunk, 4 native-tagged
    // 10 (all VLANs), 5 access 20.
    let mut br = Bridge::new(&[1, 2, 3, 4, 5]);
    br.mode(
        1,
        VlanMode::NativeUntagged {
            tag: 10,
            trunks: trunks(&[20]),
        },
    )
    .mode(2, VlanMode::Access { tag: 10 })
    .mode(
        4,
        VlanMode::NativeTagged {
            tag: 10,
            trunks: None,
        },
    )
    .mode(5, VlanMode::Access { tag: 20 });
    // Untagged on the native port is VLAN 10; the native-tagged port tags it.
    assert_eq!(
        br.dp(&frame(1, A, BCAST, None)),
        "2,push_vlan(vid=10,pcp=0),3,4"
    );
    // Tagged with the native VLAN is accepted as VLAN 10.
    assert_eq!(
        br.dp(&frame(1, A, BCAST, Some(10))),
        "pop_vlan,2,push_vlan(vid=10,pcp=0),3,4"
    );
    assert_eq!(br.dp(&frame(1, A, BCAST, Some(20))), "3,4,pop_vlan,5");
    assert_eq!(br.dp(&frame(1, A, BCAST, Some(30))), "drop");
    // VLAN 10 leaves the native-untagged port untagged, VLAN 20 tagged.
    assert_eq!(
        br.dp(&frame(3, B, BCAST, Some(10))),
        "pop_vlan,1,2,push_vlan(vid=10,pcp=0),4"
    );
    assert_eq!(br.dp(&frame(3, B, BCAST, Some(20))), "1,4,pop_vlan,5");
    // Untagged on the native-tagged port is VLAN 10 as well.
    assert_eq!(
        br.dp(&frame(4, C, BCAST, None)),
        "1,2,push_vlan(vid=10,pcp=0),3"
    );
    // Native ports never carry VLAN 0.
    assert_eq!(br.dp(&frame(3, B, BCAST, None)), "drop");
    // Unicast to A (learned on port 1 in VLAN 10 and 20).
    assert_eq!(br.dp(&frame(2, B, A, None)), "1");
    assert_eq!(br.dp(&frame(5, B, A, None)), "push_vlan(vid=20,pcp=0),1");
}

#[test]
fn vlan_0_priority_tags_survive_trunks_only_with_a_pcp() {
    let mut br = Bridge::new(&[1, 2, 3]);
    br.mode(3, VlanMode::Access { tag: 0 });
    assert_eq!(br.dp(&frame(1, A, BCAST, Some(pcp(6)))), "2,pop_vlan,3");
    assert_eq!(br.dp(&frame(1, A, BCAST, Some(0))), "pop_vlan,2,3");
    assert_eq!(br.dp(&frame(3, B, BCAST, None)), "1,2");
}

#[test]
fn reserved_destinations_are_dropped_unless_forward_bpdu() {
    let mut br = Bridge::new(&[1, 2, 3]);
    let stp = [0x01, 0x80, 0xc2, 0, 0, 0];
    let lldp = [0x01, 0x80, 0xc2, 0, 0, 0x0e];
    let x = br.packet(&frame(1, A, stp, None), 0);
    assert_eq!(format_dp_actions(&x.actions), "drop");
    assert!(format_trace(&x).contains(" -> packet has reserved destination MAC, dropping"));
    assert_eq!(br.dp(&frame(1, A, lldp, None)), "drop");
    assert!(br.normal.macs().is_empty(), "not learned either");
    br.normal.set_forward_bpdu(true);
    assert_eq!(br.dp(&frame(1, A, stp, None)), "2,3");
    assert_eq!(br.normal.macs().lookup(0, &A), Some(1));
}

#[test]
fn frames_from_unknown_ports_and_partial_tags_are_dropped() {
    let mut br = Bridge::new(&[1, 2, 3]);
    let x = br.packet(&frame(9, A, BCAST, None), 0);
    assert_eq!(format_dp_actions(&x.actions), "drop");
    assert!(format_trace(&x).contains(" >> no input bundle, dropping"));
    // A truncated tag: the parser leaves dl_type = 0x8100 and no CFI.
    let mut k = frame(1, A, BCAST, None);
    k.dl_type = 0x8100;
    let x = br.packet(&k, 0);
    assert_eq!(format_dp_actions(&x.actions), "drop");
    assert!(format_trace(&x).contains(" >> partial VLAN tag, dropping"));
    assert!(br.normal.macs().is_empty());
}

#[test]
fn the_megaflow_mask_has_what_normal_read() {
    let mut br = vlan_bridge();
    let x = br.packet(&frame(4, A, B, Some(pcp(2) | 10)), 0);
    assert_eq!(x.mask.in_port, u32::MAX);
    assert_eq!(x.mask.dl_src, [0xff; 6]);
    assert_eq!(x.mask.dl_dst, [0xff; 6]);
    assert_eq!(x.mask.dl_type, u16::MAX);
    // VID and CFI always; here a retag was committed, so all VLAN bits.
    assert_eq!(x.mask.vlan_tci[0], u16::MAX);
    // No L3/L4 bits.
    assert_eq!((x.mask.nw_src, x.mask.nw_dst, x.mask.tp_src), (0, 0, 0));

    // A trunk-to-trunk frame that keeps its tag: VID and CFI, not the PCP.
    let mut br = Bridge::new(&[1, 2]);
    let x = br.packet(&frame(1, A, B, Some(pcp(2) | 10)), 0);
    assert_eq!(format_dp_actions(&x.actions), "2");
    assert_eq!(x.mask.vlan_tci[0], 0x1fff);
    assert_eq!(x.mask.vlan_tpid, [0, 0]);
    // An untagged one: the whole (zero) TCI, since VID 0 makes the PCP matter.
    let x = br.packet(&frame(1, A, B, None), 0);
    assert_eq!(x.mask.vlan_tci[0], u16::MAX);
}

#[test]
fn actions_after_normal_see_the_packet_unchanged() {
    let mut br = Bridge::with_flows(&[1, 2, 3, 4], &["priority=0 actions=NORMAL,output:4"]);
    br.mode(1, VlanMode::Access { tag: 10 })
        .mode(2, VlanMode::Access { tag: 10 })
        .mode(4, VlanMode::Access { tag: 20 });
    // NORMAL: port 2 untagged, port 3 (trunk) tagged 10; then output:4 sends
    // the packet as it came, untagged.
    let x = br.packet(&frame(1, A, BCAST, None), 0);
    assert_eq!(
        format_dp_actions(&x.actions),
        "2,push_vlan(vid=10,pcp=0),3,pop_vlan,4"
    );
    assert_eq!(x.final_flow, frame(1, A, BCAST, None));
}

#[test]
fn normal_sees_the_packet_as_earlier_actions_left_it() {
    let mut br = Bridge::with_flows(
        &[1, 2, 3],
        &[
            "in_port=1 actions=mod_vlan_vid:10,NORMAL",
            "priority=0 actions=NORMAL",
        ],
    );
    br.mode(2, VlanMode::Access { tag: 10 });
    // Tagged 10 by the rule, NORMAL puts the frame in VLAN 10: the access port
    // gets it as it came (no push, no pop), the trunk tagged.
    let x = br.packet(&frame(1, A, BCAST, None), 0);
    assert_eq!(format_dp_actions(&x.actions), "2,push_vlan(vid=10,pcp=0),3");
    assert_eq!(br.normal.macs().lookup(10, &A), Some(1));
    assert_eq!(br.normal.macs().lookup(0, &A), None);
    assert_eq!(br.dp(&frame(2, B, A, None)), "push_vlan(vid=10,pcp=0),1");
}

#[test]
fn a_trace_decides_without_learning() {
    let mut br = Bridge::new(&[1, 2, 3]);
    let x = br.trace(&frame(1, A, B, None));
    assert_eq!(format_dp_actions(&x.actions), "2,3");
    assert!(br.normal.macs().is_empty());
    br.packet(&frame(2, B, A, None), 0);
    let g = br.normal.macs().generation();
    let x = br.trace(&frame(1, A, B, None));
    assert_eq!(format_dp_actions(&x.actions), "2");
    let x = br.trace(&frame(3, C, A, None));
    assert_eq!(format_dp_actions(&x.actions), "1,2", "A was never learned");
    assert_eq!(br.normal.macs().generation(), g);
    assert_eq!(br.normal.macs().len(), 1);
}

#[test]
fn fdb_show_after_traffic() {
    let mut br = vlan_bridge();
    br.packet(&frame(1, A, BCAST, None), 1_000);
    br.packet(&frame(4, B, BCAST, Some(20)), 2_500);
    br.packet(&frame(6, C, A, Some(20)), 3_000);
    br.packet(&frame(1, A, B, None), 30_000);
    let names = |p: u32| format!("p{p}");
    assert_eq!(
        br.normal.macs().format_fdb_show(42_000, names),
        " port  VLAN  MAC                Age\n\
         \x20  p4    20  02:00:00:00:00:0b   39\n\
         \x20  p6    20  02:00:00:00:00:0c   39\n\
         \x20  p1    10  02:00:00:00:00:0a   12\n"
    );
}

/// Keys over a small universe, so random pairs often agree on a mask.
fn small_key() -> impl Strategy<Value = FlowKey> {
    let macs = prop::sample::select(vec![A, B, C, BCAST, [0x01, 0x80, 0xc2, 0, 0, 1]]);
    let tci = prop_oneof![
        Just(None),
        (prop::sample::select(vec![0u16, 10, 20, 30]), 0u16..8)
            .prop_map(|(vid, p)| Some(vid | pcp(p))),
    ];
    (
        1u32..=8,
        macs.clone(),
        macs,
        tci,
        any::<bool>(),
        any::<u32>(),
        any::<u16>(),
    )
        .prop_map(|(in_port, src, dst, tci, qinq, nw_src, tp)| {
            let mut k = frame(in_port, src, dst, tci);
            if qinq && tci.is_some() {
                k.vlan_tpid[0] = ETH_TYPE_VLAN_8021AD;
                k.vlan_tci[1] = VLAN_CFI | 7;
                k.vlan_tpid[1] = 0x8100;
            }
            k.nw_src = nw_src;
            k.tp_src = tp;
            k
        })
}

/// Every mode, VLAN 0 on trunks (where the PCP decides a priority tag) included:
/// 1, 2 access 10; 3 access 20; 4 native-untagged 20 trunking 10; 5 trunk of 10;
/// 6 trunk of 0 and 20; 7 native-tagged 10; 8 trunk of all VLANs.
fn every_mode_bridge() -> Bridge {
    let mut br = Bridge::new(&[1, 2, 3, 4, 5, 6, 7, 8]);
    br.mode(1, VlanMode::Access { tag: 10 })
        .mode(2, VlanMode::Access { tag: 10 })
        .mode(3, VlanMode::Access { tag: 20 })
        .mode(
            4,
            VlanMode::NativeUntagged {
                tag: 20,
                trunks: trunks(&[10]),
            },
        )
        .mode(
            5,
            VlanMode::Trunk {
                trunks: trunks(&[10]),
            },
        )
        .mode(
            6,
            VlanMode::Trunk {
                trunks: trunks(&[0, 20]),
            },
        )
        .mode(
            7,
            VlanMode::NativeTagged {
                tag: 10,
                trunks: None,
            },
        );
    br
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Soundness: a key equal to another on the megaflow mask translates to the
    /// same datapath actions, whatever the port modes and learned MACs.
    #[test]
    fn normal_megaflow_masks_are_sound(
        learn in prop::collection::vec(small_key(), 0..8),
        k1 in small_key(),
        other in small_key(),
    ) {
        let mut br = every_mode_bridge();
        for (i, k) in learn.iter().enumerate() {
            br.packet(k, i as u64);
        }
        let x1 = br.trace(&k1);
        let mut k2 = other;
        for ((w2, w1), m) in k2.words_mut().iter_mut().zip(k1.words()).zip(x1.mask.words()) {
            *w2 = (w1 & m) | (*w2 & !m);
        }
        let x2 = br.trace(&k2);
        prop_assert_eq!(
            format_dp_actions(&x1.actions),
            format_dp_actions(&x2.actions),
            "k1 {:?}\nk2 {:?}",
            k1,
            k2
        );
    }
}
