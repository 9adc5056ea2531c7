//! Translation across patch ports (`translate_bridges`, OVS
//! `patch_port_output`): exact datapath actions, megaflow masks, rules per
//! bridge and the flow state the peer sees and the caller gets back.
//!
//! Bridge A (index 0): port 1 (datapath 10), port 3 (datapath 13), patch
//! port 2. Bridge B (index 1): patch port 1, port 2 (datapath 20). A's 2 and
//! B's 1 are peers.

use pipeline::actions::format_dp_actions;
use pipeline::flow_key::{FlowKey, ETH_TYPE_IPV4, IPPROTO_UDP};
use pipeline::ofproto::flow_match::Match;
use pipeline::ofproto::rule::OFP_DEFAULT_PRIORITY;
use pipeline::ofproto::syntax::{format_match, parse_flow, FormatOptions, PortMap};
use pipeline::ofproto::table::Tables;
use pipeline::ofproto::xlate::{
    format_trace_named, translate_bridges, PatchPeer, Translation, XlateBridge,
};

fn tables(flows: &[&str]) -> Tables {
    let mut t = Tables::new();
    let fms = flows
        .iter()
        .map(|s| parse_flow(s, &PortMap::new()).unwrap())
        .collect();
    t.add_flows(fms, 0).unwrap();
    t
}

const A_PORTS: [u32; 3] = [1, 2, 3];
const A_ODP: [(u32, u32); 2] = [(1, 10), (3, 13)];
const A_PATCH: [PatchPeer; 1] = [PatchPeer {
    port: 2,
    peer_bridge: 1,
    peer_port: 1,
}];
const B_PORTS: [u32; 2] = [1, 2];
const B_ODP: [(u32, u32); 1] = [(2, 20)];
const B_PATCH: [PatchPeer; 1] = [PatchPeer {
    port: 1,
    peer_bridge: 0,
    peer_port: 2,
}];

fn run(a: &Tables, b: &Tables, key: &FlowKey) -> Translation {
    let mut br = [
        XlateBridge {
            name: "br-a",
            tables: a,
            ports: &A_PORTS,
            odp: Some(&A_ODP),
            patches: &A_PATCH,
            normal: None,
            internal: &[],
            tunnels: &[],
        },
        XlateBridge {
            name: "br-b",
            tables: b,
            ports: &B_PORTS,
            odp: Some(&B_ODP),
            patches: &B_PATCH,
            normal: None,
            internal: &[],
            tunnels: &[],
        },
    ];
    translate_bridges(&mut br, 0, key, true)
}

fn udp(in_port: u32) -> FlowKey {
    FlowKey {
        in_port,
        dl_type: ETH_TYPE_IPV4,
        dl_src: [2, 0, 0, 0, 0, 1],
        dl_dst: [2, 0, 0, 0, 0, 2],
        nw_src: 0x0a00_0001,
        nw_dst: 0x0a00_0002,
        nw_proto: IPPROTO_UDP,
        nw_ttl: 64,
        tp_src: 1000,
        tp_dst: 2000,
        ..FlowKey::default()
    }
}

fn megaflow(t: &Translation) -> String {
    format_match(
        &Match::new(t.input, t.mask),
        OFP_DEFAULT_PRIORITY,
        &FormatOptions::default(),
    )
}

#[test]
fn output_to_a_patch_port_continues_in_the_peer_bridge() {
    let a = tables(&["in_port=1,ip,nw_dst=10.0.0.2 actions=mod_dl_dst:02:00:00:00:00:99,output:2"]);
    let b = tables(&["priority=5,in_port=1,udp,tp_dst=2000 actions=mod_nw_tos:32,output:2"]);
    let t = run(&a, &b, &udp(1));
    assert_eq!(t.error, None);
    // A's change (dl_dst) is kept in B; B's output is datapath port 20.
    assert_eq!(
        format_dp_actions(&t.actions),
        "set(eth(dst=02:00:00:00:00:99)),set(ipv4(tos=0x20)),20"
    );
    // The union of both bridges' reads: A's in_port and nw_dst, B's nw_proto
    // and tp_dst (B's in_port is a constant, the peer port), and the fields
    // the sets carry.
    assert_eq!(
        megaflow(&t),
        "udp,in_port=1,dl_dst=02:00:00:00:00:02,nw_dst=10.0.0.2,nw_tos=0,nw_ecn=0,nw_frag=no,tp_dst=2000"
    );
    assert_eq!(t.rule_bridges, [0, 1]);
    assert_eq!(t.bridges, [0, 1]);
    let trace = format_trace_named(&t, "br-a");
    assert!(
        trace.contains(
            " 0. ip,in_port=1,nw_dst=10.0.0.2, priority 32768\n    mod_dl_dst:02:00:00:00:00:99\n    output:2\n\nbridge(\"br-b\")\n--------------\n 0. udp,in_port=1,tp_dst=2000, priority 5\n    mod_nw_tos:32\n    output:2\n"
        ),
        "{trace}"
    );
}

#[test]
fn the_caller_gets_its_flow_back_after_the_peer() {
    // B tags the packet; A's next output must see it untagged again.
    let a = tables(&["in_port=1 actions=output:2,output:3"]);
    let b = tables(&["in_port=1 actions=mod_vlan_vid:5,output:2"]);
    let t = run(&a, &b, &udp(1));
    assert_eq!(
        format_dp_actions(&t.actions),
        "push_vlan(vid=5,pcp=0),20,pop_vlan,13"
    );
    assert_eq!(t.final_flow, udp(1));
    // The patch port is not A's last action: B's block is indented under it.
    let trace = format_trace_named(&t, "br-a");
    assert!(
        trace.contains(
            "\n 0. in_port=1, priority 32768\n    output:2\n\n    bridge(\"br-b\")\n    --------------\n         0. in_port=1, priority 32768\n            mod_vlan_vid:5\n            output:2\n    output:3\n"
        ),
        "{trace}"
    );
}

#[test]
fn the_peer_sees_in_port_its_patch_port_and_no_registers_metadata_or_tunnel() {
    let a = tables(&["in_port=1 actions=output:2"]);
    let b = tables(&[
        "priority=9,reg0=7 actions=output:2",
        "priority=8,metadata=0x5 actions=output:2",
        "priority=7,tun_id=0x99 actions=output:2",
        "priority=6,in_port=1,tun_id=0,metadata=0,reg0=0 actions=mod_vlan_vid:1,output:2",
    ]);
    let mut k = udp(1);
    k.regs[0] = 7;
    k.metadata = 5;
    k.tun_id = 0x99;
    let t = run(&a, &b, &k);
    assert_eq!(t.error, None);
    // Only the last rule matches, and B's output does not clear the
    // datapath's tunnel (B never saw it).
    assert_eq!(format_dp_actions(&t.actions), "push_vlan(vid=1,pcp=0),20");
    assert_eq!(t.rule_bridges, [0, 1]);
    // B's reads of the cleared fields are of constants: no register,
    // metadata or tunnel bit in the mask.
    assert_eq!(megaflow(&t), "ip,in_port=1,vlan_tci=0x0000,nw_frag=no");
    // After B, A's flow is the packet's again.
    assert_eq!(t.final_flow, k);
}
