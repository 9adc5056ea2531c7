//! Neutron's br-tun (testdata/neutron-br-tun.dump-flows, seed 002) traced end to
//! end: flood from patch-int, learning from a tunnel, unicast to the learned MAC;
//! and the ARP responder turning a real ARP request into a byte-exact reply.

use pipeline::actions::{execute, format_dp_actions, DpAction, Emitted, TunnelMeta};
use pipeline::flow_key::{FlowKey, ETH_TYPE_ARP, VLAN_CFI};
use pipeline::ofproto::rule::FlowFilter;
use pipeline::ofproto::syntax::{
    format_dump_line, parse_dump_line, parse_flow, FormatOptions, PortMap,
};
use pipeline::ofproto::table::{LearnOutcome, Tables};
use pipeline::ofproto::xlate::{
    format_trace, translate, translate_and_learn, Translation, XlateOptions,
};

const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/neutron-br-tun.dump-flows"
));

/// br-tun's ports: patch-int = 1, the GRE tunnels = 2 and 3.
const PORTS: [u32; 3] = [1, 2, 3];
const PATCH_INT: u32 = 1;
const VM_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56];
const REMOTE_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0x65, 0x43, 0x21];

fn br_tun() -> Tables {
    let ports = PortMap::new();
    let flows = FIXTURE
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_dump_line(l, &ports).unwrap())
        .collect();
    let mut t = Tables::new();
    t.add_flows(flows, 0).unwrap();
    assert_eq!(t.len(), 14);
    t
}

fn trace(t: &mut Tables, key: &FlowKey, now_ms: u64) -> Translation {
    let x = translate_and_learn(
        t,
        key,
        &PORTS,
        XlateOptions {
            trace: true,
            normal: None,
        },
        now_ms,
    );
    eprintln!("{}", format_trace(&x));
    x
}

fn eth_key(in_port: u32, src: [u8; 6], dst: [u8; 6], vlan: Option<u16>) -> FlowKey {
    let mut k = FlowKey {
        in_port,
        dl_src: src,
        dl_dst: dst,
        dl_type: 0x0800,
        nw_src: 0x0a00_0001,
        nw_dst: 0x0a00_0002,
        nw_proto: 17,
        nw_ttl: 64,
        tp_src: 1000,
        tp_dst: 2000,
        ..FlowKey::default()
    };
    if let Some(v) = vlan {
        k.vlan_tci[0] = VLAN_CFI | v;
        k.vlan_tpid[0] = 0x8100;
    }
    k
}

#[test]
fn broadcast_from_patch_int_floods_to_tunnels() {
    let mut t = br_tun();
    let k = eth_key(PATCH_INT, VM_MAC, [0xff; 6], Some(1));
    let x = trace(&mut t, &k, 1000);
    assert_eq!(x.error, None);
    // OVS commits the tunnel (at tunnel output) before the VLAN change.
    assert_eq!(
        format_dp_actions(&x.actions),
        "set(tunnel(tun_id=0x1388)),pop_vlan,3,2"
    );
    assert!(x.learned.is_empty());
    // table 0 in_port=1, table 1 multicast, table 21 dl_vlan=1
    assert_eq!(x.rules.len(), 3);
    let text = format_trace(&x);
    assert!(text.ends_with("Datapath actions: set(tunnel(tun_id=0x1388)),pop_vlan,3,2\n"));
    assert!(
        text.contains(" 0. in_port=1, priority 1\n    resubmit(,1)\n"),
        "{text}"
    );
    assert!(text.contains("21. dl_vlan=1, priority 1\n"), "{text}");
}

#[test]
fn from_tunnel_learns_then_unicast_goes_to_that_tunnel_only() {
    let mut t = br_tun();
    // (b) A packet from tunnel 2 with tun_id 0x1388, untagged.
    let mut k = eth_key(2, REMOTE_MAC, VM_MAC, None);
    k.tun_id = 0x1388;
    let x = trace(&mut t, &k, 5_000);
    assert_eq!(x.error, None);
    assert_eq!(format_dp_actions(&x.actions), "push_vlan(vid=1,pcp=0),1");
    assert_eq!(x.learned.len(), 1);
    let LearnOutcome::Added(id) = x.learn_outcomes[0] else {
        panic!("{:?}", x.learn_outcomes)
    };
    let text = format_trace(&x);
    assert!(
        text.contains(" -> learned rule added: table=20, hard_timeout=300, priority=1,vlan_tci=0x0001/0x0fff,dl_dst=fa:16:3e:65:43:21 actions=load:0->NXM_OF_VLAN_TCI[],load:0x1388->NXM_NX_TUN_ID[],output:2\n"),
        "{text}"
    );
    // The new rule in dump-flows, as ovs-ofctl prints it.
    let r = t.get(id).unwrap();
    assert_eq!(
        format_dump_line(r, 5_000, &FormatOptions::default()),
        " cookie=0x0, duration=0s, table=20, n_packets=0, n_bytes=0, hard_timeout=300, idle_age=0, priority=1,vlan_tci=0x0001/0x0fff,dl_dst=fa:16:3e:65:43:21 actions=load:0->NXM_OF_VLAN_TCI[],load:0x1388->NXM_NX_TUN_ID[],output:2"
    );
    let dump: Vec<_> = t
        .dump(&FlowFilter {
            table: Some(20),
            ..FlowFilter::default()
        })
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(dump.len(), 3);
    assert!(dump.contains(&id));

    // The same packet again only refreshes the learned rule.
    let x2 = trace(&mut t, &k, 7_000);
    assert_eq!(x2.learn_outcomes, vec![LearnOutcome::Refreshed(id)]);
    assert_eq!(t.get(id).unwrap().modified_ms, 7_000);

    // (c) Unicast from patch-int to the learned MAC on VLAN 1.
    let k = eth_key(PATCH_INT, VM_MAC, REMOTE_MAC, Some(1));
    let x = trace(&mut t, &k, 8_000);
    assert_eq!(
        format_dp_actions(&x.actions),
        "set(tunnel(tun_id=0x1388)),pop_vlan,2"
    );
    assert!(x.rules.contains(&id));

    // The fixture's own learned rule (hard_timeout=300, added at 0) goes first;
    // ours counts from its last refresh.
    assert!(t.expire(300_000).is_empty());
    let gone = t.expire(300_001);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].rule.flow.table_id, 20);
    assert_ne!(gone[0].id, id);
    assert!(t.expire(7_000 + 300_000).is_empty());
    let gone = t.expire(7_000 + 300_001);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].id, id);
    let x = translate(&t, &k, &PORTS, XlateOptions::default());
    assert_eq!(
        format_dp_actions(&x.actions),
        "set(tunnel(tun_id=0x1388)),pop_vlan,3,2"
    );
}

#[test]
fn unknown_tunnel_id_is_dropped() {
    let mut t = br_tun();
    let mut k = eth_key(3, REMOTE_MAC, VM_MAC, None);
    k.tun_id = 0x99;
    let x = trace(&mut t, &k, 0);
    assert_eq!(x.actions, vec![DpAction::Drop]);
    assert_eq!(format_dp_actions(&x.actions), "drop");
    assert!(format_trace(&x).ends_with("Datapath actions: drop\n"));
}

/// The ARP part of a frame.
struct Arp {
    op: u16,
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
}

/// An Ethernet + ARP frame, built by hand (VLAN-tagged when `vlan` is set).
fn arp_frame(vlan: Option<u16>, eth_dst: [u8; 6], eth_src: [u8; 6], arp: Arp) -> Vec<u8> {
    let Arp {
        op,
        sha,
        spa,
        tha,
        tpa,
    } = arp;
    let mut f = Vec::new();
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&eth_src);
    if let Some(v) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&ETH_TYPE_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa);
    f
}

#[test]
fn arp_responder_turns_request_into_reply() {
    let ports = PortMap::new();
    let mut t = Tables::new();
    t.add(
        parse_flow(
            "table=21,priority=1,arp,dl_vlan=1,nw_dst=10.0.0.3 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:fa:16:3e:aa:bb:cc,load:0x2->NXM_OF_ARP_OP[],move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],load:0xfa163eaabbcc->NXM_NX_ARP_SHA[],load:0xa000003->NXM_OF_ARP_SPA[],IN_PORT",
            &ports,
        )
        .unwrap(),
        0,
    )
    .unwrap();
    t.add(
        parse_flow("table=0,priority=1,in_port=1 actions=resubmit(,21)", &ports).unwrap(),
        0,
    )
    .unwrap();

    let vm_a: [u8; 6] = [0xfa, 0x16, 0x3e, 0x00, 0x00, 0x0a];
    let vm_b: [u8; 6] = [0xfa, 0x16, 0x3e, 0xaa, 0xbb, 0xcc];
    let request = arp_frame(
        Some(1),
        [0xff; 6],
        vm_a,
        Arp {
            op: 1,
            sha: vm_a,
            spa: [10, 0, 0, 1],
            tha: [0; 6],
            tpa: [10, 0, 0, 3],
        },
    );
    let mut key = FlowKey::default();
    assert_eq!(pipeline::parse(&request, PATCH_INT, &mut key), None);

    let x = translate(
        &t,
        &key,
        &PORTS,
        XlateOptions {
            trace: true,
            normal: None,
        },
    );
    eprintln!("{}", format_trace(&x));
    assert_eq!(x.error, None);
    assert_eq!(
        format_dp_actions(&x.actions),
        "set(eth(src=fa:16:3e:aa:bb:cc,dst=fa:16:3e:00:00:0a)),set(arp(sip=10.0.0.3,tip=10.0.0.1,op=2,sha=fa:16:3e:aa:bb:cc,tha=fa:16:3e:00:00:0a)),1"
    );

    let mut frame = request.clone();
    let mut tun = TunnelMeta::default();
    let mut out = Vec::new();
    execute(&x.actions, &mut frame, &mut tun, &mut out);
    let expected = arp_frame(
        Some(1),
        vm_a,
        vm_b,
        Arp {
            op: 2,
            sha: vm_b,
            spa: [10, 0, 0, 3],
            tha: vm_a,
            tpa: [10, 0, 0, 1],
        },
    );
    assert_eq!(out.len(), 1);
    let Emitted::Output { port, frame, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(*port, PATCH_INT);
    assert_eq!(frame, &expected);

    // Cross-check the reply with etherparse's own view of it.
    let p = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else {
        panic!("no ethernet")
    };
    assert_eq!(eth.destination(), vm_a);
    assert_eq!(eth.source(), vm_b);
    let Some(etherparse::NetSlice::Arp(arp)) = p.net else {
        panic!("not arp: {:?}", p.net)
    };
    assert_eq!(arp.operation(), etherparse::ArpOperation::REPLY);
    assert_eq!(arp.sender_hw_addr(), vm_b);
    assert_eq!(arp.sender_protocol_addr(), [10, 0, 0, 3]);
    assert_eq!(arp.target_hw_addr(), vm_a);
    assert_eq!(arp.target_protocol_addr(), [10, 0, 0, 1]);

    // A request for another address is not answered.
    let other = arp_frame(
        Some(1),
        [0xff; 6],
        vm_a,
        Arp {
            op: 1,
            sha: vm_a,
            spa: [10, 0, 0, 1],
            tha: [0; 6],
            tpa: [10, 0, 0, 9],
        },
    );
    pipeline::parse(&other, PATCH_INT, &mut key);
    let x = translate(&t, &key, &PORTS, XlateOptions::default());
    assert_eq!(x.actions, vec![DpAction::Drop]);
}
