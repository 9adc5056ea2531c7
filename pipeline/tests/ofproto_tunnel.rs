//! Native tunneling in translation (`translate_bridges_with` and a
//! `TunnelEnv`): outputs to VXLAN, GRE and Geneve ports become
//! `clone(tnl_push(..),UNDERLAY ACTIONS)` with the underlay bridge's `NORMAL`
//! (VLAN tags included) inside; no route and neighbor misses drop with a note
//! and a counter; packets for a local endpoint become `tnl_pop` with an exact
//! megaflow mask; ARP going to an endpoint is snooped.
//!
//! The topology (seed 000, scenario 5): an overlay bridge `br-int` (index 0)
//! with a VM port and tunnel ports, and an underlay `br-phy` (index 1) with a
//! NIC `eth0` (trunk) and the tunnel endpoint `tep0` (internal, access VLAN
//! 10, 172.168.1.1).
//!
//! | bridge | port | OpenFlow | datapath |
//! |---|---|---|---|
//! | br-int | vm1 | 1 | 1 |
//! | br-int | vx1 (vxlan to 172.168.1.2, key 123) | 2 | 100 (`vxlan_sys_4789`) |
//! | br-int | gre1 (gre to 172.168.1.3, no key, csum) | 3 | 101 (`gre_sys`) |
//! | br-int | gnv1 (geneve to 10.9.0.5, key flow) | 4 | 102 (`genev_sys_6081`) |
//! | br-int | vxf (vxlan, remote and key flow, tos and ttl inherit) | 5 | 100 |
//! | br-int | br-int | LOCAL | 2 |
//! | br-phy | eth0 | 1 | 10 |
//! | br-phy | tep0 | 2 | 12 |
//! | br-phy | br-phy | LOCAL | 11 |

use pipeline::actions::{format_dp_actions, DpAction};
use pipeline::flow_key::{FlowKey, ETH_TYPE_ARP, ETH_TYPE_IPV4, IPPROTO_UDP, OFPP_LOCAL, VLAN_CFI};
use pipeline::ofproto::normal::{Normal, VlanMode};
use pipeline::ofproto::syntax::{parse_flow, PortMap};
use pipeline::ofproto::table::Tables;
use pipeline::ofproto::tnl::{TunnelPortConfig, XlateTunnel};
use pipeline::ofproto::xlate::{
    format_trace_named, translate_bridges_with, BridgesOptions, NormalHook, TnlRoute, Translation,
    TunnelEnv, XlateBridge,
};
use pipeline::tunnel::TunnelKind;

const VM: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const TEP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
const R2: [u8; 6] = [0xaa, 0, 0, 0, 0, 0x02];
const R3: [u8; 6] = [0xaa, 0, 0, 0, 0, 0x03];
const GW: [u8; 6] = [0xaa, 0, 0, 0, 0, 0xfe];

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
}

/// The route and neighbor tables, recording what translation asks of them.
#[derive(Default)]
struct Env {
    /// (prefix, length, route).
    routes: Vec<(u32, u32, TnlRoute)>,
    /// (bridge, IP, MAC).
    neighbors: Vec<(String, u32, [u8; 6])>,
    local: Vec<u32>,
    with_ip: Vec<(String, [u8; 6])>,
    snooped: Vec<(String, u32, [u8; 6])>,
    misses: Vec<TnlRoute>,
}

impl TunnelEnv for Env {
    fn route(&self, dst: u32) -> Option<TnlRoute> {
        self.routes
            .iter()
            .filter(|(p, len, _)| {
                let m = if *len == 0 { 0 } else { u32::MAX << (32 - len) };
                dst & m == *p
            })
            .max_by_key(|(_, len, _)| *len)
            .map(|(_, _, r)| {
                let mut r = r.clone();
                if r.next_hop == 0 {
                    r.next_hop = dst;
                }
                r
            })
    }
    fn neighbor(&self, bridge: &str, ip: u32) -> Option<[u8; 6]> {
        self.neighbors
            .iter()
            .find(|(b, i, _)| b == bridge && *i == ip)
            .map(|e| e.2)
    }
    fn is_local_ip(&self, ip: u32) -> bool {
        self.local.contains(&ip)
    }
    fn port_has_ip(&self, port: &str) -> bool {
        self.with_ip.iter().any(|(p, _)| p == port)
    }
    fn port_mac(&self, port: &str) -> Option<[u8; 6]> {
        self.with_ip.iter().find(|(p, _)| p == port).map(|e| e.1)
    }
    fn snoop(&mut self, bridge: &str, ip: u32, mac: [u8; 6]) {
        self.snooped.push((bridge.to_string(), ip, mac));
    }
    fn neighbor_miss(&mut self, route: &TnlRoute) {
        self.misses.push(route.clone());
    }
    fn take_arp_requests(&mut self) -> Vec<TnlRoute> {
        std::mem::take(&mut self.misses)
    }
    fn generation(&self) -> u64 {
        0
    }
}

fn tep_route(next_hop: u32) -> TnlRoute {
    TnlRoute {
        bridge: "br-phy".into(),
        port: "tep0".into(),
        mac: TEP_MAC,
        src: ip("172.168.1.1"),
        next_hop,
        mtu: 1500,
    }
}

fn env() -> Env {
    Env {
        routes: vec![
            (ip("172.168.1.0"), 24, tep_route(0)),
            (ip("10.9.0.0"), 16, tep_route(ip("172.168.1.254"))),
        ],
        neighbors: vec![
            ("br-phy".into(), ip("172.168.1.2"), R2),
            ("br-phy".into(), ip("172.168.1.3"), R3),
            ("br-phy".into(), ip("172.168.1.254"), GW),
        ],
        local: vec![ip("172.168.1.1")],
        with_ip: vec![("tep0".into(), TEP_MAC)],
        ..Env::default()
    }
}

fn tables(flows: &[&str]) -> Tables {
    let mut t = Tables::new();
    let fms = flows
        .iter()
        .map(|s| parse_flow(s, &PortMap::new()).unwrap())
        .collect();
    t.add_flows(fms, 0).unwrap();
    t
}

fn tunnel(
    name: &str,
    ofport: u32,
    odp: u32,
    kind: TunnelKind,
    opts: &[(&str, &str)],
) -> XlateTunnel {
    XlateTunnel {
        name: name.into(),
        ofport,
        odp,
        config: TunnelPortConfig::from_options(kind, opts.iter().copied()).unwrap(),
    }
}

fn tunnels() -> Vec<XlateTunnel> {
    vec![
        tunnel(
            "vx1",
            2,
            100,
            TunnelKind::Vxlan,
            &[("remote_ip", "172.168.1.2"), ("key", "123")],
        ),
        tunnel(
            "gre1",
            3,
            101,
            TunnelKind::Gre,
            &[("remote_ip", "172.168.1.3"), ("csum", "true")],
        ),
        tunnel(
            "gnv1",
            4,
            102,
            TunnelKind::Geneve,
            &[("remote_ip", "10.9.0.5"), ("key", "flow")],
        ),
        tunnel(
            "vxf",
            5,
            100,
            TunnelKind::Vxlan,
            &[
                ("remote_ip", "flow"),
                ("key", "flow"),
                ("tos", "inherit"),
                ("ttl", "inherit"),
            ],
        ),
    ]
}

const INT_PORTS: [u32; 6] = [1, 2, 3, 4, 5, OFPP_LOCAL];
const INT_ODP: [(u32, u32); 2] = [(1, 1), (OFPP_LOCAL, 2)];
const PHY_PORTS: [u32; 3] = [1, 2, OFPP_LOCAL];
const PHY_ODP: [(u32, u32); 3] = [(1, 10), (2, 12), (OFPP_LOCAL, 11)];

struct World {
    int: Tables,
    phy: Tables,
    phy_normal: Normal,
    tunnels: Vec<XlateTunnel>,
    env: Env,
}

impl World {
    /// `flows` on br-int; br-phy is `NORMAL` with the remote endpoints and
    /// the gateway learned on eth0 in VLAN 10.
    fn new(flows: &[&str]) -> World {
        let mut phy_normal = Normal::new();
        phy_normal
            .set_port(2, VlanMode::Access { tag: 10 })
            .unwrap();
        for mac in [R2, R3, GW] {
            phy_normal.macs_mut().learn(10, mac, 1, 0);
        }
        World {
            int: tables(flows),
            phy: tables(&["actions=NORMAL"]),
            phy_normal,
            tunnels: tunnels(),
            env: env(),
        }
    }

    fn run_with(
        &mut self,
        key: &FlowKey,
        start: usize,
        trace: bool,
        side_effects: bool,
    ) -> Translation {
        let int_internal = [(OFPP_LOCAL, "br-int")];
        let phy_internal = [(2, "tep0"), (OFPP_LOCAL, "br-phy")];
        let mut hook = self.phy_normal.hook(0);
        let mut br = [
            XlateBridge {
                name: "br-int",
                tables: &self.int,
                ports: &INT_PORTS,
                odp: Some(&INT_ODP),
                patches: &[],
                normal: None,
                internal: &int_internal,
                tunnels: &self.tunnels,
            },
            XlateBridge {
                name: "br-phy",
                tables: &self.phy,
                ports: &PHY_PORTS,
                odp: Some(&PHY_ODP),
                patches: &[],
                normal: Some(&mut hook as &mut dyn NormalHook),
                internal: &phy_internal,
                tunnels: &[],
            },
        ];
        translate_bridges_with(
            &mut br,
            start,
            key,
            BridgesOptions {
                trace,
                tunnel_env: Some(&mut self.env),
                side_effects,
                ..Default::default()
            },
        )
    }

    /// An upcall's translation starting on br-int.
    fn run(&mut self, key: &FlowKey) -> Translation {
        self.run_with(key, 0, false, true)
    }

    fn dp(&mut self, key: &FlowKey) -> String {
        format_dp_actions(&self.run(key).actions)
    }

    fn trace(&mut self, key: &FlowKey, start: usize) -> String {
        let t = self.run_with(key, start, true, false);
        format_trace_named(&t, if start == 0 { "br-int" } else { "br-phy" })
    }
}

/// A UDP packet from the VM.
fn vm_udp() -> FlowKey {
    FlowKey {
        in_port: 1,
        dl_type: ETH_TYPE_IPV4,
        dl_src: VM,
        dl_dst: PEER,
        nw_src: ip("10.0.0.1"),
        nw_dst: ip("10.0.0.2"),
        nw_proto: IPPROTO_UDP,
        nw_ttl: 64,
        tp_src: 1000,
        tp_dst: 2000,
        ..FlowKey::default()
    }
}

/// The megaflow line of a translation (in the trace's syntax).
fn megaflow(t: &Translation) -> String {
    format_trace_named(t, "br-int")
        .lines()
        .find_map(|l| l.strip_prefix("Megaflow: ").map(str::to_string))
        .unwrap()
}

const VXLAN_HDR: &str = "tnl_push(tnl_port(100),header(size=50,type=4,eth(dst=aa:00:00:00:00:02,src=02:00:00:00:01:01,dl_type=0x0800),ipv4(src=172.168.1.1,dst=172.168.1.2,proto=17,tos=0,ttl=64,frag=0x4000),udp(src=0,dst=4789,csum=0x0),vxlan(flags=0x8000000,vni=0x7b)),out_port(12))";

#[test]
fn vxlan_output_pushes_and_the_underlay_normal_tags_for_the_nic() {
    let mut w = World::new(&["in_port=1 actions=output:2"]);
    let t = w.run(&vm_udp());
    // br-phy's NORMAL: the outer packet enters on tep0 (access VLAN 10), the
    // remote endpoint's MAC is learned on eth0 (a trunk): tagged out eth0.
    assert_eq!(
        format_dp_actions(&t.actions),
        format!("clone({VXLAN_HDR},push_vlan(vid=10,pcp=0),10)")
    );
    // The header as the datapath gets it.
    let DpAction::TunnelPush { header, actions } = &t.actions[0] else {
        panic!("{:?}", t.actions)
    };
    assert_eq!((header.tnl_port, header.out_port), (100, 12));
    assert_eq!(header.len(), 50);
    assert_eq!(actions.len(), 2);
    assert_eq!(t.tunnel.pushes, 1);
    assert!(t.tunnel.env);
    // The mask: the rule's in_port, the inner ECN bits the outer TOS copies,
    // the tunnel destination the packet came with (none: not back to it);
    // nothing of the outer packet (br-phy's reads are constants).
    assert_eq!(
        megaflow(&t),
        "ip,tun_dst=0.0.0.0,in_port=1,nw_ecn=0,nw_frag=no"
    );
    // br-phy learned nothing from the outer packet (no side effects there).
    assert_eq!(w.phy_normal.macs().lookup(10, &TEP_MAC), None);
    // The underlay bridge is visited (its NORMAL and rules matter).
    assert_eq!(t.bridges, vec![0, 1]);
    assert_eq!(t.rule_bridges, vec![0, 1]);
}

#[test]
fn an_unknown_endpoint_mac_floods_in_the_underlay() {
    let mut w = World::new(&["in_port=1 actions=output:2"]);
    w.phy_normal.macs_mut().flush();
    // Flooded from tep0 (VLAN 10): eth0 and LOCAL are trunks, both tagged.
    assert_eq!(
        w.dp(&vm_udp()),
        format!("clone({VXLAN_HDR},push_vlan(vid=10,pcp=0),10,11)")
    );
}

#[test]
fn gre_and_geneve_headers_and_the_gateway_as_next_hop() {
    let mut w = World::new(&["in_port=1 actions=output:3,set_tunnel:0x1388,output:4"]);
    let t = w.run(&vm_udp());
    assert_eq!(
        format_dp_actions(&t.actions),
        "clone(tnl_push(tnl_port(101),header(size=42,type=3,eth(dst=aa:00:00:00:00:03,src=02:00:00:00:01:01,dl_type=0x0800),\
ipv4(src=172.168.1.1,dst=172.168.1.3,proto=47,tos=0,ttl=64,frag=0x4000),gre((flags=0x8000,proto=0x6558),csum=0x0)),out_port(12)),push_vlan(vid=10,pcp=0),10),\
clone(tnl_push(tnl_port(102),header(size=50,type=6,eth(dst=aa:00:00:00:00:fe,src=02:00:00:00:01:01,dl_type=0x0800),\
ipv4(src=172.168.1.1,dst=10.9.0.5,proto=17,tos=0,ttl=64,frag=0x4000),udp(src=0,dst=6081,csum=0x0),geneve(vni=0x1388)),out_port(12)),push_vlan(vid=10,pcp=0),10)"
    );
    assert_eq!(t.tunnel.pushes, 2);
    // key=flow read the tunnel id, which set_tunnel wrote: in the mask.
    assert_eq!(t.mask.tun_id, u64::MAX);
}

#[test]
fn remote_and_key_from_the_flow_with_inherited_tos_and_ttl() {
    let mut w =
        World::new(&["in_port=1 actions=set_field:172.168.1.2->tun_dst,set_tunnel:0x42,output:5"]);
    let mut k = vm_udp();
    k.nw_tos = 0xb8 | 0x03; // DSCP 46, ECN CE
    k.nw_ttl = 17;
    let t = w.run(&k);
    // tos: the inner DSCP, CE as ECT(0); ttl: the inner one.
    assert_eq!(
        format_dp_actions(&t.actions),
        "clone(tnl_push(tnl_port(100),header(size=50,type=4,eth(dst=aa:00:00:00:00:02,src=02:00:00:00:01:01,dl_type=0x0800),\
ipv4(src=172.168.1.1,dst=172.168.1.2,proto=17,tos=0xba,ttl=17,frag=0x4000),udp(src=0,dst=4789,csum=0x0),vxlan(flags=0x8000000,vni=0x42)),out_port(12)),push_vlan(vid=10,pcp=0),10)"
    );
    assert_eq!(
        (t.mask.tun_dst, t.mask.tun_id, t.mask.nw_tos, t.mask.nw_ttl),
        (u32::MAX, u64::MAX, 0xff, 0xff)
    );

    // key=flow sends the key a packet arrived with (a tunnel delivered it
    // to br-int, to our address 172.168.1.1, with key 7).
    let mut w = World::new(&["actions=output:4"]);
    let mut k = vm_udp();
    k.tun_src = ip("172.168.1.3");
    k.tun_dst = ip("172.168.1.1");
    k.tun_id = 7;
    let t = w.run(&k);
    let DpAction::TunnelPush { header, .. } = &t.actions[0] else {
        panic!("{:?}", t.actions)
    };
    assert_eq!(
        (header.spec.ip_dst, header.spec.key, header.spec.eth_dst),
        (ip("10.9.0.5"), Some(7), GW)
    );
}

#[test]
fn no_route_no_remote_and_bad_keys_drop_with_a_note() {
    // remote_ip=flow with no tun_dst.
    let mut w = World::new(&["in_port=1 actions=output:5"]);
    let t = w.run(&vm_udp());
    assert_eq!(t.actions, vec![DpAction::Drop]);
    assert_eq!(t.tunnel.no_route, 1);
    assert!(w
        .trace(&vm_udp(), 0)
        .contains(" >> native tunnel routing failed: no remote (remote_ip=flow, tun_dst 0)"));

    // No route to the remote.
    let mut w =
        World::new(&["in_port=1 actions=set_field:192.0.2.9->tun_dst,output:5,output:LOCAL"]);
    let t = w.run(&vm_udp());
    // (An ordinary port gets the tunnel metadata as a set: a deviation the
    // xlate docs describe.)
    assert_eq!(
        format_dp_actions(&t.actions),
        "set(tunnel(dst=192.0.2.9)),2"
    );
    assert_eq!(t.tunnel.no_route, 1);
    assert!(t.tunnel.env, "a route added later changes the result");
    let trace = w.trace(&vm_udp(), 0);
    assert!(
        trace.contains(" >> native tunnel routing failed: no route to 192.0.2.9"),
        "{trace}"
    );

    // A VNI too wide for VXLAN from key=flow.
    let mut w = World::new(&[
        "in_port=1 actions=set_field:172.168.1.2->tun_dst,set_tunnel:0x1000000,output:5",
    ]);
    let t = w.run(&vm_udp());
    assert_eq!(t.actions, vec![DpAction::Drop]);
    assert_eq!(t.tunnel.bad_header, 1);
    assert!(w
        .trace(&vm_udp(), 0)
        .contains(" >> native tunnel header build failed: VNI 0x1000000 is wider than 24 bits"));

    // Without a tunnel environment no tunnel has a route.
    let mut w = World::new(&["in_port=1 actions=output:2"]);
    let int_internal = [(OFPP_LOCAL, "br-int")];
    let mut br = [XlateBridge {
        name: "br-int",
        tables: &w.int,
        ports: &INT_PORTS,
        odp: Some(&INT_ODP),
        patches: &[],
        normal: None,
        internal: &int_internal,
        tunnels: &w.tunnels,
    }];
    let t = translate_bridges_with(&mut br, 0, &vm_udp(), BridgesOptions::default());
    assert_eq!(t.actions, vec![DpAction::Drop]);
    assert_eq!(t.tunnel.no_route, 1);
    w.env.misses.clear();
}

#[test]
fn a_neighbor_miss_drops_and_queues_an_arp_request_but_a_trace_does_not() {
    let mut w = World::new(&["in_port=1 actions=output:2,output:LOCAL"]);
    w.env.neighbors.clear();
    let t = w.run(&vm_udp());
    assert_eq!(format_dp_actions(&t.actions), "2");
    assert_eq!(t.tunnel.neighbor_miss, 1);
    assert_eq!(
        w.env.take_arp_requests(),
        vec![tep_route(ip("172.168.1.2"))]
    );
    // Revalidation (no side effects) still asks: the env rate-limits.
    let t = w.run_with(&vm_udp(), 0, false, false);
    assert_eq!(t.tunnel.neighbor_miss, 1);
    assert_eq!(w.env.take_arp_requests().len(), 1);
    let trace = w.trace(&vm_udp(), 0);
    assert!(
        trace.contains(
            "     -> output to native tunnel vx1\n     -> tunneling to 172.168.1.2 via tep0\n     -> neighbor cache miss for 172.168.1.2 on bridge br-phy, sending ARP request\n"
        ),
        "{trace}"
    );
    assert!(w.env.misses.is_empty(), "a trace queues no ARP request");
    // Through the gateway: the gateway is asked for.
    let mut w = World::new(&["in_port=1 actions=output:4"]);
    w.env.neighbors.clear();
    w.run(&vm_udp());
    assert_eq!(
        w.env.take_arp_requests(),
        vec![tep_route(ip("172.168.1.254"))]
    );
}

#[test]
fn the_trace_shows_the_underlay_bridge() {
    // As for patch ports: the underlay's block is the last node of table 0's,
    // so it is not indented.
    let mut w = World::new(&["in_port=1 actions=output:2"]);
    let trace = w.trace(&vm_udp(), 0);
    let want = "\
 0. in_port=1, priority 32768
    output:2
     -> output to native tunnel vx1
     -> tunneling to 172.168.1.2 via tep0
     -> tunneling from 02:00:00:00:01:01 172.168.1.1 to aa:00:00:00:00:02 172.168.1.2
     -> path MTU 1500 (tep0): inner MTU 1450 (IP), longer inner packets are dropped

bridge(\"br-phy\")
----------------
 0. priority 32768
    NORMAL
     -> forwarding to learned port

Final flow: unchanged
Megaflow: ip,tun_dst=0.0.0.0,in_port=1,nw_ecn=0,nw_frag=no
";
    assert!(trace.contains(want), "{trace}");
}

/// A VXLAN packet from the remote endpoint, received on br-phy's eth0 tagged
/// VLAN 10, to tep0's MAC and address.
fn vxlan_in() -> FlowKey {
    FlowKey {
        in_port: 1,
        dl_type: ETH_TYPE_IPV4,
        vlan_tci: [VLAN_CFI | 10, 0],
        vlan_tpid: [0x8100, 0],
        dl_src: R2,
        dl_dst: TEP_MAC,
        nw_src: ip("172.168.1.2"),
        nw_dst: ip("172.168.1.1"),
        nw_proto: IPPROTO_UDP,
        nw_ttl: 64,
        tp_src: 40000,
        tp_dst: 4789,
        ..FlowKey::default()
    }
}

#[test]
fn a_packet_for_the_local_endpoint_is_popped_with_an_exact_mask() {
    let mut w = World::new(&[]);
    w.phy_normal.macs_mut().learn(10, TEP_MAC, 2, 0);
    let t = w.run_with(&vxlan_in(), 1, false, true);
    // NORMAL sends it to tep0 (access: the tag popped), where it ends.
    assert_eq!(format_dp_actions(&t.actions), "pop_vlan,tnl_pop(100)");
    assert_eq!(t.tunnel.pops, 1);
    assert_eq!(
        megaflow(&t),
        "udp,in_port=1,dl_vlan=10,dl_vlan_pcp=0,dl_src=aa:00:00:00:00:02,dl_dst=02:00:00:00:01:01,nw_dst=172.168.1.1,nw_frag=no,tp_dst=4789"
    );
    // GRE: IP protocol 47, any UDP port unread.
    let mut k = vxlan_in();
    k.nw_proto = 47;
    k.tp_src = 0;
    k.tp_dst = 0;
    let t = w.run_with(&k, 1, false, true);
    assert_eq!(format_dp_actions(&t.actions), "pop_vlan,tnl_pop(101)");
    assert_eq!(t.mask.tp_dst, 0);
    assert_eq!(t.mask.nw_proto, 0xff);
    // Geneve's port.
    let mut k = vxlan_in();
    k.tp_dst = 6081;
    assert_eq!(
        format_dp_actions(&w.run_with(&k, 1, false, true).actions),
        "pop_vlan,tnl_pop(102)"
    );

    // Not ours: another address, another UDP port, a fragment, another MAC
    // (then NORMAL's output to tep0 is just an output).
    for change in [
        |k: &mut FlowKey| k.nw_dst = ip("172.168.1.9"),
        |k: &mut FlowKey| k.tp_dst = 4790,
        |k: &mut FlowKey| k.nw_frag = 1,
        |k: &mut FlowKey| k.nw_proto = 6,
    ] {
        let mut k = vxlan_in();
        change(&mut k);
        let t = w.run_with(&k, 1, false, true);
        assert_eq!(format_dp_actions(&t.actions), "pop_vlan,12", "{k:?}");
        assert!(t.tunnel.env);
    }
    let mut k = vxlan_in();
    k.dl_dst = [0xff; 6];
    let t = w.run_with(&k, 1, false, true);
    assert_eq!(
        format_dp_actions(&t.actions),
        "pop_vlan,12,push_vlan(vid=10,pcp=0),11"
    );
    assert_eq!(t.mask.nw_dst, 0, "the MAC decided first");

    // A port without an address ends nothing.
    w.env.with_ip.clear();
    let t = w.run_with(&vxlan_in(), 1, false, true);
    assert_eq!(format_dp_actions(&t.actions), "pop_vlan,12");
    assert!(t.tunnel.env, "an address added later changes the result");
    assert_eq!(t.mask.nw_dst, 0);
}

/// An ARP packet on br-phy from the remote endpoint to tep0.
fn arp(op: u8) -> FlowKey {
    FlowKey {
        in_port: 1,
        dl_type: ETH_TYPE_ARP,
        vlan_tci: [VLAN_CFI | 10, 0],
        vlan_tpid: [0x8100, 0],
        dl_src: R2,
        dl_dst: if op == 1 { [0xff; 6] } else { TEP_MAC },
        nw_src: ip("172.168.1.2"),
        nw_dst: ip("172.168.1.1"),
        nw_proto: op,
        arp_sha: R2,
        arp_tha: if op == 1 { [0; 6] } else { TEP_MAC },
        ..FlowKey::default()
    }
}

#[test]
fn arp_to_the_endpoint_is_snooped_and_delivered() {
    let mut w = World::new(&[]);
    w.phy_normal.macs_mut().learn(10, TEP_MAC, 2, 0);
    let t = w.run_with(&arp(2), 1, false, true);
    assert_eq!(format_dp_actions(&t.actions), "pop_vlan,12");
    assert_eq!(
        w.env.snooped,
        vec![("br-phy".to_string(), ip("172.168.1.2"), R2)]
    );
    assert_eq!(t.tunnel.snooped, 1);
    assert_eq!(
        megaflow(&t),
        "arp,in_port=1,dl_vlan=10,dl_vlan_pcp=0,dl_src=aa:00:00:00:00:02,dl_dst=02:00:00:00:01:01,arp_spa=172.168.1.2,arp_op=2,arp_sha=aa:00:00:00:00:02"
    );
    // A request (broadcast: flooded, snooped at tep0).
    w.env.snooped.clear();
    let t = w.run_with(&arp(1), 1, false, true);
    assert_eq!(
        format_dp_actions(&t.actions),
        "pop_vlan,12,push_vlan(vid=10,pcp=0),11"
    );
    assert_eq!(
        w.env.snooped,
        vec![("br-phy".to_string(), ip("172.168.1.2"), R2)]
    );
    // Revalidation and traces do not snoop; other opcodes and probes
    // (sender 0.0.0.0) are not snooped.
    w.env.snooped.clear();
    w.run_with(&arp(2), 1, false, false);
    assert!(w.trace(&arp(2), 1).contains(
        " -> ARP: 172.168.1.2 is at aa:00:00:00:00:02 (neighbor cache of bridge br-phy)"
    ));
    let mut k = arp(2);
    k.nw_proto = 3;
    w.run_with(&k, 1, false, true);
    let mut k = arp(1);
    k.nw_src = 0;
    w.run_with(&k, 1, false, true);
    assert!(w.env.snooped.is_empty(), "{:?}", w.env.snooped);
}

#[test]
fn no_tunneling_back_to_our_own_address() {
    // A packet a tunnel delivered to 172.168.1.2 (say we were that endpoint)
    // is not sent back to it.
    let mut w = World::new(&["actions=output:2"]);
    let mut k = vm_udp();
    k.tun_dst = ip("172.168.1.2");
    k.tun_src = ip("172.168.1.3");
    let t = w.run(&k);
    assert_eq!(t.actions, vec![DpAction::Drop]);
    assert!(w
        .trace(&k, 0)
        .contains(" >> Not tunneling to our own address"));
}

mod soundness {
    use super::*;
    use proptest::prelude::*;

    /// br-int's flows: tunnel outputs chosen by fields of every kind the
    /// tunnel code reads (tos, ttl, tunnel metadata), a set tunnel
    /// destination, and LOCAL.
    const FLOWS: &[&str] = &[
        "priority=10,ip,nw_tos=0xb8 actions=output:5",
        "priority=8,tun_id=7 actions=output:4,output:2",
        "priority=6,udp actions=output:2,output:3",
        "priority=4,arp actions=set_field:172.168.1.3->tun_dst,output:5,output:LOCAL",
        "priority=1 actions=output:5,output:4",
    ];

    fn pick<T: Clone + std::fmt::Debug + 'static>(v: Vec<T>) -> impl Strategy<Value = T> {
        prop::sample::select(v)
    }

    fn any_key() -> impl Strategy<Value = (usize, FlowKey)> {
        let macs = vec![TEP_MAC, [0xff; 6], R2, PEER, VM];
        let ips = vec![
            ip("172.168.1.1"),
            ip("172.168.1.2"),
            ip("172.168.1.3"),
            ip("10.9.0.5"),
            0,
        ];
        (
            (
                0usize..2,
                pick(vec![1u32, 2, OFPP_LOCAL]),
                pick(vec![ETH_TYPE_IPV4, ETH_TYPE_ARP, 0x86dd]),
                pick(vec![0u16, VLAN_CFI | 10, VLAN_CFI | 20]),
                pick(macs.clone()),
                pick(macs.clone()),
                pick(ips.clone()),
                pick(ips.clone()),
            ),
            (
                pick(vec![17u8, 47, 6, 1, 2]),
                pick(vec![4789u16, 6081, 53]),
                pick(vec![0u8, 3, 0xb8, 0xbb]),
                pick(vec![1u8, 64]),
                pick(vec![0u8, 1, 3]),
                pick(vec![0u64, 7, 0x1388, 1 << 24]),
                pick(ips),
                pick(macs),
            ),
        )
            .prop_map(
                |(
                    (start, in_port, dl_type, vlan, src, dst, nw_src, nw_dst),
                    (proto, tp_dst, tos, ttl, frag, tun_id, tun_dst, sha),
                )| {
                    let mut k = FlowKey {
                        in_port,
                        dl_type,
                        dl_src: src,
                        dl_dst: dst,
                        nw_src,
                        nw_dst,
                        nw_proto: proto,
                        tp_dst,
                        nw_tos: tos,
                        nw_ttl: ttl,
                        nw_frag: frag,
                        tun_id,
                        tun_dst,
                        arp_sha: sha,
                        ..FlowKey::default()
                    };
                    if vlan != 0 {
                        k.vlan_tci[0] = vlan;
                        k.vlan_tpid[0] = 0x8100;
                    }
                    (start, k)
                },
            )
    }

    /// A translation without side effects (nothing learned between the two).
    fn xlate(w: &mut World, key: &FlowKey, start: usize) -> Translation {
        let int_internal = [(OFPP_LOCAL, "br-int")];
        let phy_internal = [(2, "tep0"), (OFPP_LOCAL, "br-phy")];
        let mut hook = w.phy_normal.trace_hook();
        let mut br = [
            XlateBridge {
                name: "br-int",
                tables: &w.int,
                ports: &INT_PORTS,
                odp: Some(&INT_ODP),
                patches: &[],
                normal: None,
                internal: &int_internal,
                tunnels: &w.tunnels,
            },
            XlateBridge {
                name: "br-phy",
                tables: &w.phy,
                ports: &PHY_PORTS,
                odp: Some(&PHY_ODP),
                patches: &[],
                normal: Some(&mut hook as &mut dyn NormalHook),
                internal: &phy_internal,
                tunnels: &[],
            },
        ];
        translate_bridges_with(
            &mut br,
            start,
            key,
            BridgesOptions {
                trace: false,
                tunnel_env: Some(&mut w.env),
                side_effects: false,
                ..Default::default()
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Soundness: a key equal to another on the megaflow mask translates
        /// to the same datapath actions, through pushes (header fields from
        /// the packet, routes, neighbor misses) and pops.
        #[test]
        fn tunnel_megaflow_masks_are_sound(
            (start, k1) in any_key(),
            (_, other) in any_key(),
            known_gw in any::<bool>(),
        ) {
            let mut w = World::new(FLOWS);
            if !known_gw {
                w.env.neighbors.retain(|(_, i, _)| *i != ip("172.168.1.254"));
            }
            w.phy_normal.macs_mut().learn(10, TEP_MAC, 2, 0);
            let x1 = xlate(&mut w, &k1, start);
            let mut k2 = other;
            k2.in_port = k1.in_port;
            for ((w2, w1), m) in k2.words_mut().iter_mut().zip(k1.words()).zip(x1.mask.words()) {
                *w2 = (w1 & m) | (*w2 & !m);
            }
            let x2 = xlate(&mut w, &k2, start);
            prop_assert_eq!(
                format_dp_actions(&x1.actions),
                format_dp_actions(&x2.actions),
                "start {}\nk1 {:?}\nk2 {:?}",
                start,
                k1,
                k2
            );
        }
    }
}
