//! `ovs-ofctl` flow syntax: every field form, shorthand, action and error message,
//! and the ARP responder rule of seed 002.

use pipeline::ofproto::action::{Action, LearnField, OFPP_LOCAL};
use pipeline::ofproto::field::{Field, Subfield};
use pipeline::ofproto::rule::{FlowMod, Rule};
use pipeline::ofproto::syntax::{
    format_dump_line, format_flow, parse_flow, parse_flow_filter, parse_flows, FilterMode,
    FormatOptions, PortMap,
};
use pipeline::FlowKey;

fn ports() -> PortMap {
    [("patch-int", 1u32), ("vxlan-0a000002", 3), ("gre 1", 4)]
        .into_iter()
        .collect()
}

fn parse(s: &str) -> FlowMod {
    parse_flow(s, &ports()).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Parses `input` and checks it prints as `expect` (no-stats form), and that the
/// printed text parses back to the same flow.
fn norm(input: &str, expect: &str) {
    let f = parse(input);
    let out = format_flow(&f, &FormatOptions::default());
    assert_eq!(out, expect, "input: {input}");
    assert_eq!(parse(&out), f, "reparse of {out}");
}

fn err(input: &str) -> String {
    match parse_flow(input, &ports()) {
        Ok(f) => panic!("{input} parsed: {f:?}"),
        Err(e) => e.to_string(),
    }
}

// --- match fields -----------------------------------------------------------

#[test]
fn l2_fields_and_masks() {
    norm("in_port=3,actions=drop", "in_port=3 actions=drop");
    norm(
        "dl_src=FA:16:3E:00:00:01,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions=drop",
        "dl_src=fa:16:3e:00:00:01,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=drop",
    );
    norm(
        "eth_dst=ff:ff:ff:ff:ff:ff actions=drop",
        "dl_dst=ff:ff:ff:ff:ff:ff actions=drop",
    );
    norm("dl_type=0x88cc actions=drop", "dl_type=0x88cc actions=drop");
    norm("dl_type=0x0800 actions=drop", "ip actions=drop");
    norm("eth_type=2054 actions=drop", "arp actions=drop");
}

#[test]
fn vlan_forms() {
    norm("dl_vlan=1 actions=drop", "dl_vlan=1 actions=drop");
    norm(
        "dl_vlan=0xffff actions=drop",
        "vlan_tci=0x0000 actions=drop",
    );
    norm("vlan_tci=0 actions=drop", "vlan_tci=0x0000 actions=drop");
    norm(
        "vlan_tci=0x0001/0x0fff actions=drop",
        "vlan_tci=0x0001/0x0fff actions=drop",
    );
    norm(
        "vlan_tci=0x1005/0x1fff actions=drop",
        "dl_vlan=5 actions=drop",
    );
    norm("dl_vlan_pcp=5 actions=drop", "dl_vlan_pcp=5 actions=drop");
    norm(
        "dl_vlan=7,dl_vlan_pcp=2 actions=drop",
        "dl_vlan=7,dl_vlan_pcp=2 actions=drop",
    );
    norm(
        "vlan_tci=0x1000/0x1000 actions=drop",
        "vlan_tci=0x1000/0x1000 actions=drop",
    );
    let f = parse("dl_vlan=1 actions=drop");
    assert_eq!(
        (f.match_.key.vlan_tci[0], f.match_.mask.vlan_tci[0]),
        (0x1001, 0x1fff)
    );
}

#[test]
fn l3_fields_and_masks() {
    norm(
        "ip,nw_src=10.0.0.0/24 actions=drop",
        "ip,nw_src=10.0.0.0/24 actions=drop",
    );
    norm(
        "ip,nw_src=10.0.0.0/255.255.255.0 actions=drop",
        "ip,nw_src=10.0.0.0/24 actions=drop",
    );
    norm(
        "ip,nw_dst=10.0.0.1/255.0.255.0 actions=drop",
        "ip,nw_dst=10.0.0.0/255.0.255.0 actions=drop",
    );
    norm(
        "ip,nw_src=10.1.2.3/8 actions=drop",
        "ip,nw_src=10.0.0.0/8 actions=drop",
    );
    norm(
        "ip,nw_dst=1.2.3.4/32 actions=drop",
        "ip,nw_dst=1.2.3.4 actions=drop",
    );
    norm("ip,nw_proto=47 actions=drop", "ip,nw_proto=47 actions=drop");
    norm(
        "ip,nw_tos=184,nw_ecn=3,nw_ttl=64 actions=drop",
        "ip,nw_tos=184,nw_ecn=3,nw_ttl=64 actions=drop",
    );
    norm(
        "ip,ip_frag=first actions=drop",
        "ip,nw_frag=first actions=drop",
    );
    norm(
        "ip,nw_frag=later actions=drop",
        "ip,nw_frag=later actions=drop",
    );
    norm("ip,nw_frag=no actions=drop", "ip,nw_frag=no actions=drop");
    norm("ip,nw_frag=yes actions=drop", "ip,nw_frag=yes actions=drop");
    norm(
        "ip,nw_frag=not_later actions=drop",
        "ip,nw_frag=not_later actions=drop",
    );
    norm(
        "ipv6,ipv6_src=2001:db8::/32,ipv6_dst=::1,ipv6_label=0x12345 actions=drop",
        "ipv6,ipv6_src=2001:db8::/32,ipv6_dst=::1,ipv6_label=0x12345 actions=drop",
    );
    norm(
        "ipv6,ipv6_label=5/0xf actions=drop",
        "ipv6,ipv6_label=0x00005/0x0000f actions=drop",
    );
}

#[test]
fn l4_fields_and_shorthands() {
    norm("tcp,tp_dst=80 actions=drop", "tcp,tp_dst=80 actions=drop");
    norm("udp,udp_src=53 actions=drop", "udp,tp_src=53 actions=drop");
    norm(
        "tcp,tp_dst=0x1000/0xf000 actions=drop",
        "tcp,tp_dst=0x1000/0xf000 actions=drop",
    );
    norm("sctp6,tp_src=9 actions=drop", "sctp6,tp_src=9 actions=drop");
    norm(
        "icmp,icmp_type=8,icmp_code=0 actions=drop",
        "icmp,icmp_type=8,icmp_code=0 actions=drop",
    );
    norm(
        "icmp6,icmpv6_type=135 actions=drop",
        "icmp6,icmp_type=135 actions=drop",
    );
    norm(
        "tcp,tcp_flags=+syn-ack actions=drop",
        "tcp,tcp_flags=+syn-ack actions=drop",
    );
    norm(
        "tcp,tcp_flags=0x012 actions=drop",
        "tcp,tcp_flags=syn|ack actions=drop",
    );
    norm("tcp6 actions=drop", "tcp6 actions=drop");
    norm("udp6 actions=drop", "udp6 actions=drop");
    norm("rarp actions=drop", "rarp actions=drop");
    norm("igmp actions=drop", "igmp actions=drop");
    norm(
        "dl_type=0x800,nw_proto=6,tp_src=1 actions=drop",
        "tcp,tp_src=1 actions=drop",
    );
}

#[test]
fn arp_fields() {
    norm(
        "arp,arp_op=1,arp_spa=10.0.0.1,arp_tpa=10.0.0.0/8,arp_sha=fa:16:3e:00:00:01,arp_tha=00:00:00:00:00:00 actions=drop",
        "arp,arp_spa=10.0.0.1,arp_tpa=10.0.0.0/8,arp_op=1,arp_sha=fa:16:3e:00:00:01,arp_tha=00:00:00:00:00:00 actions=drop",
    );
    // OpenFlow 1.0 names for the ARP addresses.
    norm(
        "arp,nw_dst=10.0.0.3 actions=drop",
        "arp,arp_tpa=10.0.0.3 actions=drop",
    );
    norm("arp,nw_proto=2 actions=drop", "arp,arp_op=2 actions=drop");
}

#[test]
fn metadata_tunnel_registers() {
    norm("tun_id=0x1388 actions=drop", "tun_id=0x1388 actions=drop");
    norm(
        "tunnel_id=5000/0xffff actions=drop",
        "tun_id=0x1388/0xffff actions=drop",
    );
    norm("tun_id=0 actions=drop", "tun_id=0 actions=drop");
    norm(
        "tun_src=192.168.0.1,tun_dst=192.168.0.0/16 actions=drop",
        "tun_src=192.168.0.1,tun_dst=192.168.0.0/16 actions=drop",
    );
    norm(
        "reg0=5,reg15=0x10/0xf0 actions=drop",
        "reg0=0x5,reg15=0x10/0xf0 actions=drop",
    );
    norm(
        "metadata=0x1/0xff actions=drop",
        "metadata=0x1/0xff actions=drop",
    );
    norm("NXM_NX_REG3=7 actions=drop", "reg3=0x7 actions=drop");
}

#[test]
fn match_field_order_is_ovs() {
    // match_format order: priority, shorthand, regs, tunnel, metadata, in_port,
    // vlan, dl_src, dl_dst, addresses, proto, tos/ecn/ttl, frag, ports, flags.
    norm(
        "tcp_flags=+syn,tp_dst=22,nw_ttl=3,nw_src=1.1.1.1,dl_dst=00:00:00:00:00:02,dl_src=00:00:00:00:00:01,dl_vlan=9,in_port=2,metadata=1,tun_id=7,reg1=1,tcp,priority=7 actions=drop",
        "priority=7,tcp,reg1=0x1,tun_id=0x7,metadata=0x1,in_port=2,dl_vlan=9,dl_src=00:00:00:00:00:01,dl_dst=00:00:00:00:00:02,nw_src=1.1.1.1,nw_ttl=3,tp_dst=22,tcp_flags=+syn actions=drop",
    );
}

#[test]
fn flow_header_fields() {
    norm(
        "table=3 priority=0 cookie=0x1f idle_timeout=10 hard_timeout=300 importance=2 send_flow_rem actions=drop",
        "cookie=0x1f, table=3, idle_timeout=10, hard_timeout=300, send_flow_rem, importance=2, priority=0 actions=drop",
    );
    norm("priority=32768 actions=NORMAL", "actions=NORMAL");
    norm(
        "  priority=1 , in_port=1\tactions=output:2",
        "priority=1,in_port=1 actions=output:2",
    );
}

#[test]
fn port_names() {
    let p = ports();
    let f = parse("in_port=patch-int actions=output:vxlan-0a000002,\"gre 1\"");
    assert_eq!(f.match_.key.in_port, 1);
    assert_eq!(f.actions, vec![Action::Output(3), Action::Output(4)]);
    let names = FormatOptions { names: Some(&p) };
    assert_eq!(
        format_flow(&f, &names),
        "in_port=patch-int actions=output:vxlan-0a000002,output:\"gre 1\""
    );
    assert_eq!(
        format_flow(&f, &FormatOptions::default()),
        "in_port=1 actions=output:3,output:4"
    );
    assert_eq!(parse(&format_flow(&f, &names)), f);
    let f = parse("in_port=\"patch-int\",actions=drop");
    assert_eq!(f.match_.key.in_port, 1);
    let f = parse("in_port=LOCAL actions=in_port");
    assert_eq!(f.match_.key.in_port, OFPP_LOCAL);
    assert_eq!(format_flow(&f, &names), "in_port=LOCAL actions=IN_PORT");
    let f = parse("in_port=65534 actions=drop");
    assert_eq!(
        f.match_.key.in_port, OFPP_LOCAL,
        "16-bit reserved numbers map"
    );
}

// --- actions ----------------------------------------------------------------

#[test]
fn every_action_parses_and_prints() {
    let cases = [
        ("output:3", "output:3"),
        ("3", "output:3"),
        ("output:NXM_OF_IN_PORT[]", "output:NXM_OF_IN_PORT[]"),
        ("output:NXM_NX_REG0[0..15]", "output:NXM_NX_REG0[0..15]"),
        ("in_port", "IN_PORT"),
        ("IN_PORT", "IN_PORT"),
        ("output:IN_PORT", "IN_PORT"),
        ("normal", "NORMAL"),
        ("output:NORMAL", "NORMAL"),
        ("flood", "FLOOD"),
        ("all", "ALL"),
        ("local", "LOCAL"),
        ("output:LOCAL", "LOCAL"),
        ("controller", "CONTROLLER:65535"),
        ("CONTROLLER:100", "CONTROLLER:100"),
        ("controller(max_len=128)", "CONTROLLER:128"),
        ("output:CONTROLLER", "CONTROLLER:65535"),
        ("resubmit(,2)", "resubmit(,2)"),
        ("resubmit(1,2)", "resubmit(1,2)"),
        ("resubmit:5", "resubmit:5"),
        ("resubmit(5)", "resubmit:5"),
        ("resubmit(IN_PORT,4)", "resubmit(,4)"),
        ("mod_vlan_vid:1", "mod_vlan_vid:1"),
        ("mod_vlan_pcp:7", "mod_vlan_pcp:7"),
        ("strip_vlan", "strip_vlan"),
        ("pop_vlan", "pop_vlan"),
        ("push_vlan:0x8100", "push_vlan:0x8100"),
        ("push_vlan:34984", "push_vlan:0x88a8"),
        (
            "mod_dl_src:FA:16:3E:AA:BB:CC",
            "mod_dl_src:fa:16:3e:aa:bb:cc",
        ),
        (
            "mod_dl_dst:00:00:00:00:00:01",
            "mod_dl_dst:00:00:00:00:00:01",
        ),
        ("mod_nw_src:10.0.0.1", "mod_nw_src:10.0.0.1"),
        ("mod_nw_dst:10.0.0.2", "mod_nw_dst:10.0.0.2"),
        ("mod_nw_tos:184", "mod_nw_tos:184"),
        ("mod_tp_src:80", "mod_tp_src:80"),
        ("mod_tp_dst:443", "mod_tp_dst:443"),
        ("dec_ttl", "dec_ttl"),
        ("set_tunnel:0x1388", "set_tunnel:0x1388"),
        ("set_tunnel:5000", "set_tunnel:0x1388"),
        ("set_tunnel:0", "set_tunnel:0"),
        ("set_tunnel:0x100000000", "set_tunnel64:0x100000000"),
        ("set_tunnel64:0x5", "set_tunnel64:0x5"),
        ("set_field:10.0.0.1->tun_dst", "set_field:10.0.0.1->tun_dst"),
        (
            "set_field:fa:16:3e:00:00:01->eth_src",
            "set_field:fa:16:3e:00:00:01->eth_src",
        ),
        ("set_field:0x1388->tun_id", "set_field:0x1388->tun_id"),
        ("set_field:5/0xf->reg0", "set_field:0x5/0xf->reg0"),
        ("set_field:4097->vlan_vid", "set_field:4097->vlan_vid"),
        ("set_field:0x800->eth_type", "set_field:0x800->eth_type"),
        ("load:0->NXM_OF_VLAN_TCI[]", "load:0->NXM_OF_VLAN_TCI[]"),
        (
            "load:0x1388->NXM_NX_TUN_ID[]",
            "load:0x1388->NXM_NX_TUN_ID[]",
        ),
        ("load:5000->NXM_NX_TUN_ID[]", "load:0x1388->NXM_NX_TUN_ID[]"),
        ("load:1->NXM_NX_REG0[3]", "load:0x1->NXM_NX_REG0[3]"),
        (
            "load:0xf->OXM_OF_METADATA[4..7]",
            "load:0xf->OXM_OF_METADATA[4..7]",
        ),
        ("load:1->reg2", "load:0x1->NXM_NX_REG2[]"),
        (
            "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]",
            "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]",
        ),
        (
            "move:NXM_NX_REG0[0..11]->NXM_OF_VLAN_TCI[0..11]",
            "move:NXM_NX_REG0[0..11]->NXM_OF_VLAN_TCI[0..11]",
        ),
        (
            "move:OXM_OF_IN_PORT[]->NXM_NX_REG1[]",
            "move:OXM_OF_IN_PORT[]->NXM_NX_REG1[]",
        ),
        ("note:a1b2", "note:a1.b2.00.00.00.00"),
        (
            "note:01.02.03.04.05.06.07",
            "note:01.02.03.04.05.06.07.00.00.00.00.00.00.00",
        ),
        ("goto_table:2", "goto_table:2"),
        ("drop", "drop"),
    ];
    for (input, expect) in cases {
        norm(
            &format!("table=1,actions={input}"),
            &format!("table=1, actions={expect}"),
        );
    }
}

#[test]
fn set_field_prints_meta_flow_names() {
    norm(
        "ip actions=set_field:10.0.0.1->nw_dst,set_field:10.0.0.0/255.0.0.0->ip_src",
        "ip actions=set_field:10.0.0.1->ip_dst,set_field:10.0.0.0/8->ip_src",
    );
    norm(
        "tcp actions=set_field:80->tcp_dst",
        "tcp actions=set_field:80->tcp_dst",
    );
    norm(
        "tcp actions=set_field:80/0xf0->tp_dst",
        "tcp actions=set_field:80/0xf0->tp_dst",
    );
    norm(
        "arp actions=set_field:2->arp_op,set_field:fa:16:3e:00:00:01->arp_sha",
        "arp actions=set_field:2->arp_op,set_field:fa:16:3e:00:00:01->arp_sha",
    );
}

#[test]
fn learn_forms() {
    let text = "learn(table=20,hard_timeout=300,priority=1,NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:0->NXM_OF_VLAN_TCI[],load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[],output:NXM_OF_IN_PORT[])";
    norm(
        &format!("table=10,priority=1 actions={text},output:1"),
        &format!("table=10, priority=1 actions={text},output:1"),
    );
    let f = parse(&format!("actions={text}"));
    let Action::Learn(l) = &f.actions[0] else {
        panic!("not learn")
    };
    assert_eq!((l.table, l.hard_timeout, l.priority), (20, 300, 1));
    let tci = Subfield::range(Field::VlanTci, 0, 11).unwrap();
    assert_eq!(l.specs[0], LearnField::MatchField { dst: tci, src: tci });
    assert_eq!(
        l.specs[1],
        LearnField::MatchField {
            dst: Subfield::whole(Field::EthDst),
            src: Subfield::whole(Field::EthSrc)
        }
    );
    assert_eq!(
        l.specs[4],
        LearnField::Output {
            src: Subfield::whole(Field::InPort)
        }
    );
    norm(
        "actions=learn(dl_type=0x800,nw_dst=10.0.0.1,NXM_OF_VLAN_TCI[0..11]=0x5,idle_timeout=5,fin_idle_timeout=1,fin_hard_timeout=2,cookie=0x9,send_flow_rem,delete_learned,in_port=LOCAL,load:0x5->NXM_NX_REG0[])",
        "actions=learn(table=1,idle_timeout=5,fin_idle_timeout=1,fin_hard_timeout=2,send_flow_rem,delete_learned,cookie=0x9,eth_type=0x800,ip_dst=10.0.0.1,NXM_OF_VLAN_TCI[0..11]=0x5,in_port=LOCAL,load:0x5->NXM_NX_REG0[])",
    );
}

/// Seed 002's ARP responder, as the Neutron agent writes it.
#[test]
fn arp_responder_rule() {
    let input = "table=21,priority=1,arp,dl_vlan=1,nw_dst=10.0.0.3 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:fa:16:3e:aa:bb:cc,load:0x2->NXM_OF_ARP_OP[],move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],load:0xfa163eaabbcc->NXM_NX_ARP_SHA[],load:0xa000003->NXM_OF_ARP_SPA[],IN_PORT";
    let f = parse(input);
    assert_eq!(f.table_id, 21);
    assert_eq!(f.match_.key.nw_dst, 0x0a00_0003);
    assert_eq!(f.actions.len(), 8);
    assert_eq!(f.actions[7], Action::InPort);
    // match_format prints ARP addresses as arp_tpa; actions print unchanged.
    let rule = Rule::new(f.clone(), 5_000);
    assert_eq!(
        format_dump_line(&rule, 7_250, &FormatOptions::default()),
        " cookie=0x0, duration=2.25s, table=21, n_packets=0, n_bytes=0, idle_age=2, priority=1,arp,dl_vlan=1,arp_tpa=10.0.0.3 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:fa:16:3e:aa:bb:cc,load:0x2->NXM_OF_ARP_OP[],move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],load:0xfa163eaabbcc->NXM_NX_ARP_SHA[],load:0xa000003->NXM_OF_ARP_SPA[],IN_PORT"
    );
    // Applying the loads/moves to a request key gives the reply's fields.
    let mut k = FlowKey {
        dl_type: 0x0806,
        nw_proto: 1,
        dl_src: [0xfa, 0x16, 0x3e, 0, 0, 1],
        dl_dst: [0xff; 6],
        arp_sha: [0xfa, 0x16, 0x3e, 0, 0, 1],
        nw_src: 0x0a00_0001,
        nw_dst: 0x0a00_0003,
        vlan_tci: [0x1001, 0],
        ..FlowKey::default()
    };
    assert!(f.match_.matches(&k));
    for a in &f.actions {
        match a {
            Action::Move { src, dst } => {
                let v = src.read(&k);
                dst.write(&mut k, v);
            }
            Action::Load { dst, value } => dst.write(&mut k, *value),
            Action::ModDlSrc(m) => k.dl_src = *m,
            _ => {}
        }
    }
    assert_eq!(k.dl_dst, [0xfa, 0x16, 0x3e, 0, 0, 1]);
    assert_eq!(k.dl_src, [0xfa, 0x16, 0x3e, 0xaa, 0xbb, 0xcc]);
    assert_eq!(k.nw_proto, 2);
    assert_eq!(k.arp_tha, [0xfa, 0x16, 0x3e, 0, 0, 1]);
    assert_eq!(k.arp_sha, [0xfa, 0x16, 0x3e, 0xaa, 0xbb, 0xcc]);
    assert_eq!((k.nw_src, k.nw_dst), (0x0a00_0003, 0x0a00_0001));
}

// --- dump lines -------------------------------------------------------------

#[test]
fn dump_line_format() {
    let mut f = parse("table=20,priority=1,hard_timeout=300,vlan_tci=0x0001/0x0fff,dl_dst=fa:16:3e:1f:19:55 actions=load:0->NXM_OF_VLAN_TCI[],load:0x1388->NXM_NX_TUN_ID[],output:3");
    f.cookie = 0;
    let rule = Rule {
        flow: f,
        n_packets: 3917,
        n_bytes: 797_884,
        created_ms: 0,
        modified_ms: 116_255_067 - 52_000,
        used_ms: 116_255_067 - 52_500,
    };
    assert_eq!(
        format_dump_line(&rule, 116_255_067, &FormatOptions::default()),
        " cookie=0x0, duration=116255.067s, table=20, n_packets=3917, n_bytes=797884, hard_timeout=300, idle_age=52, hard_age=52, priority=1,vlan_tci=0x0001/0x0fff,dl_dst=fa:16:3e:1f:19:55 actions=load:0->NXM_OF_VLAN_TCI[],load:0x1388->NXM_NX_TUN_ID[],output:3"
    );
    // Whole seconds: no decimals; hard_age equal to the duration is omitted;
    // a catch-all with the default priority prints no match at all.
    let rule = Rule::new(parse("actions=drop"), 1000);
    assert_eq!(
        format_dump_line(&rule, 3000, &FormatOptions::default()),
        " cookie=0x0, duration=2s, table=0, n_packets=0, n_bytes=0, idle_age=2, actions=drop"
    );
    // Ages are capped at 65534 as NXST_FLOW carries them.
    let rule = Rule::new(parse("priority=0 actions=drop"), 0);
    assert_eq!(
        format_dump_line(&rule, 100_000_100, &FormatOptions::default()),
        " cookie=0x0, duration=100000.1s, table=0, n_packets=0, n_bytes=0, idle_age=65534, hard_age=65534, priority=0 actions=drop"
    );
}

// --- filters ----------------------------------------------------------------

#[test]
fn del_flows_filters() {
    let p = ports();
    let loose = parse_flow_filter(
        "table=20,dl_dst=fa:16:3e:1f:19:55",
        FilterMode::DelFlows { strict: false },
        &p,
    )
    .unwrap();
    assert_eq!(loose.table, Some(20));
    assert!(!loose.strict);
    let learned = parse(
        "table=20,priority=1,vlan_tci=0x0001/0x0fff,dl_dst=fa:16:3e:1f:19:55 actions=output:3",
    );
    assert!(loose.selects(&learned));
    let other = parse("table=20,priority=0 actions=resubmit(,21)");
    assert!(!loose.selects(&other));

    let strict = parse_flow_filter(
        "table=20,priority=0",
        FilterMode::DelFlows { strict: true },
        &p,
    )
    .unwrap();
    assert!(strict.selects(&other));
    assert!(!strict.selects(&learned));

    let ck = parse_flow_filter("cookie=0x10/0xf0,out_port=3", FilterMode::DumpFlows, &p).unwrap();
    assert_eq!(
        (ck.cookie, ck.cookie_mask, ck.out_port, ck.table),
        (0x10, 0xf0, 3, None)
    );
    let mut l2 = learned.clone();
    l2.cookie = 0x1f;
    assert!(ck.selects(&l2));
    assert!(!ck.selects(&learned));

    let all = parse_flow_filter("", FilterMode::DelFlows { strict: false }, &p).unwrap();
    assert!(all.selects(&learned) && all.selects(&other));
}

#[test]
fn add_flows_file() {
    let text = "# br-tun\n\ntable=0,priority=1,in_port=1 actions=resubmit(,1)\n  table=0,priority=0 actions=drop\n";
    let flows = parse_flows(text, &PortMap::new()).unwrap();
    assert_eq!(flows.len(), 2);
    let e = parse_flows(
        "priority=1 actions=drop\nfoo=1 actions=drop\n",
        &PortMap::new(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "line 2: unknown field \"foo\"");
}

// --- errors -----------------------------------------------------------------

#[test]
fn error_messages() {
    let cases = [
        ("ip,nw_src=10.0.0.300 actions=drop", "\"nw_src=10.0.0.300\": invalid IP address"),
        ("tp_dst=80 actions=drop", "\"tp_dst=80\": prerequisites not met (needs tcp, udp or sctp)"),
        ("udp,tcp_src=80 actions=drop", "\"tcp_src=80\": prerequisites not met (needs tcp or tcp6)"),
        ("nw_src=10.0.0.1 actions=drop", "\"nw_src=10.0.0.1\": prerequisites not met (needs ip, arp or rarp)"),
        ("arp_sha=00:00:00:00:00:01 actions=drop", "\"arp_sha=00:00:00:00:00:01\": prerequisites not met (needs arp or rarp)"),
        ("ipv6_src=::1 actions=drop", "\"ipv6_src=::1\": prerequisites not met (needs ipv6)"),
        ("ip,icmp_type=1 actions=drop", "\"icmp_type=1\": prerequisites not met (needs icmp or icmp6)"),
        ("foo=1 actions=drop", "unknown field \"foo\""),
        ("actions=bar", "unknown action \"bar\""),
        ("actions=output:NXM_FOO[]", "unknown field \"NXM_FOO\""),
        ("in_port=1", "\"in_port=1\": must specify an action"),
        ("in_port=nosuch actions=drop", "\"in_port=nosuch\": invalid or unknown port"),
        ("actions=output:nosuch", "\"output:nosuch\": invalid or unknown port"),
        ("actions=drop,output:1", "\"drop\": \"drop\" must not be accompanied by any other action or instruction"),
        ("table=3 actions=goto_table:2", "\"goto_table:2\": goto_table must name a later table than 3"),
        ("actions=goto_table:2,output:1", "\"output:1\": actions may not follow goto_table"),
        ("table=255 actions=drop", "\"table=255\": table 255 is not valid for adding flows"),
        ("table=256 actions=drop", "\"table=256\": table id out of range"),
        ("priority=65536 actions=drop", "\"priority=65536\": number out of range"),
        ("priority=x actions=drop", "\"priority=x\": invalid number"),
        ("cookie=1/1 actions=drop", "\"cookie=1/1\": flow additions cannot use a cookie mask"),
        ("dl_vlan=5000 actions=drop", "\"dl_vlan=5000\": value too large for 12-bit field dl_vlan"),
        ("ip,nw_tos=3 actions=drop", "\"nw_tos=3\": 3 is not a valid value for field nw_tos"),
        ("dl_type=0x800/0xff00 actions=drop", "\"dl_type=0x800/0xff00\": field does not support masking"),
        ("dl_src=00:00:00:00:00 actions=drop", "\"dl_src=00:00:00:00:00\": invalid Ethernet address"),
        ("ip,nw_src=1.2.3.4/33 actions=drop", "\"nw_src=1.2.3.4/33\": network prefix bits not between 0 and 32"),
        ("ip,nw_frag=maybe actions=drop", "\"nw_frag=maybe\": invalid frag type"),
        ("tun_id=zz actions=drop", "\"tun_id=zz\": invalid numeric value"),
        ("in_port= actions=drop", "\"in_port=\": field missing value"),
        ("tcp=1 actions=drop", "\"tcp=1\": shorthand takes no value"),
        ("actions=mod_vlan_vid:4096", "\"mod_vlan_vid:4096\": VLAN VID out of range"),
        ("actions=mod_vlan_pcp:8", "\"mod_vlan_pcp:8\": VLAN PCP out of range"),
        ("actions=push_vlan:0x800", "\"push_vlan:0x800\": not a valid VLAN ethertype"),
        ("actions=mod_nw_tos:3", "\"mod_nw_tos:3\": not a valid TOS"),
        ("actions=mod_dl_src:zz", "\"mod_dl_src:zz\": invalid Ethernet address"),
        ("actions=mod_nw_dst:1.2.3", "\"mod_nw_dst:1.2.3\": invalid IP address"),
        ("actions=resubmit(,)", "\"resubmit(,)\": at least one argument is required"),
        ("actions=load:0x10000->NXM_OF_VLAN_TCI[]", "\"load:0x10000->NXM_OF_VLAN_TCI[]\": value 0x10000 does not fit into 16 bits"),
        ("actions=load:1", "\"load:1\": missing `->'"),
        ("actions=load:2->NXM_OF_ARP_OP[]", "\"load:2->NXM_OF_ARP_OP[]\": prerequisites not met (needs arp or rarp)"),
        ("actions=move:NXM_OF_ETH_SRC[]->NXM_OF_VLAN_TCI[]", "\"move:NXM_OF_ETH_SRC[]->NXM_OF_VLAN_TCI[]\": source field is 48 bits wide but destination is 16 bits wide"),
        ("actions=move:NXM_NX_REG0[0..40]->NXM_NX_REG1[]", "\"NXM_NX_REG0[0..40]\": bits 0..40 out of range for 32-bit field NXM_NX_REG0"),
        ("actions=set_field:1->foo", "unknown field \"foo\""),
        ("actions=set_field:10.0.0.1->nw_dst", "\"set_field:10.0.0.1->nw_dst\": prerequisites not met (needs ip, arp or rarp)"),
        ("actions=note:1", "\"note:1\": invalid hex digits in note"),
        ("actions=learn(table=255)", "\"learn(table=255)\": table id 255 not valid for `learn' action"),
        ("actions=learn(NXM_OF_ETH_DST[]=NXM_OF_VLAN_TCI[])", "\"NXM_OF_ETH_DST[]=NXM_OF_VLAN_TCI[]\": bit widths of NXM_OF_ETH_DST[] (48) and NXM_OF_VLAN_TCI[] (16) differ"),
        ("actions=learn(NXM_OF_VLAN_TCI[0..3]=0x10)", "\"NXM_OF_VLAN_TCI[0..3]=0x10\": value 0x10 does not fit into 4 bits"),
    ];
    for (input, expect) in cases {
        assert_eq!(err(input), expect, "input: {input}");
    }
}

#[test]
fn filter_errors() {
    let p = PortMap::new();
    let e = |s: &str, m| parse_flow_filter(s, m, &p).unwrap_err().to_string();
    assert_eq!(
        e("cookie=1", FilterMode::DelFlows { strict: false }),
        "\"cookie=1\": cannot set cookie"
    );
    assert_eq!(
        e("priority=1", FilterMode::DelFlows { strict: false }),
        "unknown field \"priority\""
    );
    assert_eq!(
        e("hard_timeout=1", FilterMode::DumpFlows),
        "unknown field \"hard_timeout\""
    );
    assert_eq!(
        e("out_port=x", FilterMode::DumpFlows),
        "\"out_port=x\": is not a valid OpenFlow port"
    );
}
