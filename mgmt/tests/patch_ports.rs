//! Patch ports in the slow path: Neutron's br-int (`NORMAL`, the VM on an
//! access port of VLAN 1) joined by patch-tun/patch-int to br-tun with the
//! Neutron fixture's tables (testdata/neutron-br-tun.dump-flows, seeds 001,
//! 003, 004); the tunnels are stubbed by ordinary ports gre2 and gre3 until the
//! tunnel issue, so a packet "from a tunnel" is an upcall whose key already
//! carries the tunnel id, as tunnel decapsulation will give it.
//!
//! The datapath is a recorder: every install, update and removal is checked
//! exactly, with datapath port numbers (vm1 0, br-int 1, gre2 2, gre3 3,
//! br-tun 4; the patch ports have none).

mod common;

use common::Recorder;

use mgmt::config::Config;
use mgmt::ofproto::{bridges_from_config, parse_key, Ofproto};
use mgmt::ofproto::{Bridge, OfprotoConfig};
use pipeline::ofproto::syntax::{parse_dump_line, PortMap};
use pipeline::FlowKey;

const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/neutron-br-tun.dump-flows"
));

const VM: &str = "fa:16:3e:12:34:56";
const REMOTE: &str = "fa:16:3e:65:43:21";

const CONFIG: &str = r#"
[[bridge]]
name = "br-int"
  [[bridge.port]]
  name = "vm1"
  tag = 1
  options = { dpdk-devargs = "net_null0" }
  [[bridge.port]]
  name = "patch-tun"
  type = "patch"
  options = { peer = "patch-int" }
[[bridge]]
name = "br-tun"
  [[bridge.port]]
  name = "patch-int"
  type = "patch"
  options = { peer = "patch-tun" }
  [[bridge.port]]
  name = "gre2"
  options = { dpdk-devargs = "net_null1" }
  [[bridge.port]]
  name = "gre3"
  options = { dpdk-devargs = "net_null2" }
"#;

/// br-int and br-tun as the daemon builds them from [`CONFIG`], the fixture
/// loaded on br-tun (its `priority=0 actions=drop` replaces the default flow).
fn neutron() -> Vec<Bridge> {
    let cfg = Config::from_toml_str(CONFIG).unwrap();
    let mut bridges = bridges_from_config(&cfg).unwrap();
    let fms = FIXTURE
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_dump_line(l, &PortMap::new()).unwrap())
        .collect();
    bridges[1].tables.add_flows(fms, 0).unwrap();
    assert_eq!(bridges[1].tables.len(), 14);
    bridges
}

fn key(in_port: u32, text: &str) -> FlowKey {
    let mut k = parse_key(text, &PortMap::new()).unwrap();
    k.in_port = in_port;
    k
}

/// A broadcast ARP request from the VM (vm1, datapath port 0).
fn vm_arp_request() -> FlowKey {
    key(
        0,
        &format!("arp,dl_src={VM},dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_spa=10.0.0.1,arp_tpa=10.0.0.2,arp_sha={VM}"),
    )
}

/// The remote host's unicast reply to the VM, from the stub tunnel gre2
/// (datapath port 2) with the network's tunnel id.
fn remote_reply() -> FlowKey {
    let mut k = key(
        2,
        &format!("arp,dl_src={REMOTE},dl_dst={VM},arp_op=2,arp_spa=10.0.0.2,arp_tpa=10.0.0.1,arp_sha={REMOTE},arp_tha={VM}"),
    );
    k.tun_id = 0x1388;
    k
}

/// An IPv4/UDP frame from the VM to the remote host.
fn vm_to_remote() -> FlowKey {
    key(
        0,
        &format!("udp,dl_src={VM},dl_dst={REMOTE},nw_src=10.0.0.1,nw_dst=10.0.0.2,nw_ttl=64,tp_src=1000,tp_dst=2000"),
    )
}

// The megaflows: what br-int's NORMAL read (in_port, VLAN, both MACs) and,
// for the reply, br-tun's table 2 (tun_id). br-tun's reads after the patch
// port (its in_port, the destination's multicast bit, dl_vlan) are within
// them; no tunnel bit comes from br-tun's commits.
const MF_ARP_REQUEST: &str =
    "arp,in_port=0,vlan_tci=0x0000,dl_src=fa:16:3e:12:34:56,dl_dst=ff:ff:ff:ff:ff:ff";
const MF_REPLY: &str =
    "arp,tun_id=0x1388,in_port=2,vlan_tci=0x0000,dl_src=fa:16:3e:65:43:21,dl_dst=fa:16:3e:12:34:56";
const MF_VM_TO_REMOTE: &str =
    "ip,in_port=0,vlan_tci=0x0000,dl_src=fa:16:3e:12:34:56,dl_dst=fa:16:3e:65:43:21,nw_frag=no";

#[test]
fn broadcast_from_the_vm_goes_through_br_tun_to_every_tunnel() {
    let rec = Recorder::default();
    let mut o = Ofproto::new(neutron(), &rec, OfprotoConfig::default());
    o.handle_upcall(0, vm_arp_request(), ());
    // br-int floods: LOCAL (a trunk: tagged 1) and patch-tun, where br-tun's
    // tables 0, 1 and 21 strip the tag, set the tunnel id and output to both
    // tunnels.
    assert_eq!(
        rec.take(),
        [format!(
            "install pmd0 {MF_ARP_REQUEST} -> push_vlan(vid=1,pcp=0),1,set(tunnel(tun_id=0x1388)),pop_vlan,3,2 +pkt"
        )]
    );
    assert_eq!(o.stats.xlate_errors, 0);
    // br-int learned the VM on vm1; br-tun learned nothing (no NORMAL there).
    let fdb = o.fdb_show("br-int").unwrap();
    assert_eq!(
        fdb,
        " port  VLAN  MAC                Age\n    1     1  fa:16:3e:12:34:56    0\n"
    );
    assert!(o.macs("br-tun").unwrap().is_empty());
}

#[test]
fn reply_from_a_tunnel_learns_and_reaches_the_vm_then_unicast_both_ways() {
    let rec = Recorder::default();
    let mut o = Ofproto::new(neutron(), &rec, OfprotoConfig::default());

    // 1. The reply comes first, the VM unknown to br-int: br-tun tags it
    //    (VLAN 1), learns the remote host's tunnel and sends it through
    //    patch-int; br-int floods it on VLAN 1: vm1 (access: untagged, as
    //    received) and LOCAL (trunk: tagged).
    o.handle_upcall(0, remote_reply(), ());
    assert_eq!(
        rec.take(),
        [format!(
            "install pmd0 {MF_REPLY} -> 0,push_vlan(vid=1,pcp=0),1 +pkt"
        )]
    );
    // br-int learned the remote MAC on its patch port (2), VLAN 1.
    assert_eq!(
        o.fdb_show("br-int").unwrap(),
        " port  VLAN  MAC                Age\n    2     1  fa:16:3e:65:43:21    0\n"
    );
    // br-tun's learned rule, as the fixture's learn builds it.
    let learned = o
        .dump_flows("br-tun", Some("table=20,dl_dst=fa:16:3e:65:43:21"), false)
        .unwrap();
    assert!(
        learned.ends_with(" hard_timeout=300, idle_age=0, priority=1,vlan_tci=0x0001/0x0fff,dl_dst=fa:16:3e:65:43:21 actions=load:0->NXM_OF_VLAN_TCI[],load:0x1388->NXM_NX_TUN_ID[],output:2\n"),
        "{learned}"
    );

    // 2. The VM's broadcast: flooded as before. br-int now knows the VM, so
    //    the reply's megaflow, whose input port is on br-tun but which used
    //    br-int's NORMAL, is revalidated to the VM's port only.
    o.handle_upcall(0, vm_arp_request(), ());
    assert_eq!(
        rec.take(),
        [
            format!("install pmd0 {MF_ARP_REQUEST} -> push_vlan(vid=1,pcp=0),1,set(tunnel(tun_id=0x1388)),pop_vlan,3,2 +pkt"),
            format!("install pmd0 {MF_REPLY} -> 0"),
        ]
    );

    // 3. Unicast from the VM: br-int sends it to patch-tun (learned), br-tun
    //    to the learned tunnel only.
    o.handle_upcall(0, vm_to_remote(), ());
    assert_eq!(
        rec.take(),
        [format!(
            "install pmd0 {MF_VM_TO_REMOTE} -> set(tunnel(tun_id=0x1388)),2 +pkt"
        )]
    );

    // 4. A rule change in br-tun revalidates the megaflow that entered on
    //    br-int: the remote host moved to gre3.
    o.add_flow(
        "br-tun",
        &format!("table=20,priority=2,vlan_tci=0x0001/0x0fff,dl_dst={REMOTE} actions=load:0->NXM_OF_VLAN_TCI[],set_tunnel:0x1388,output:3"),
    )
    .unwrap();
    assert_eq!(
        rec.take(),
        [format!(
            "install pmd0 {MF_VM_TO_REMOTE} -> set(tunnel(tun_id=0x1388)),3"
        )]
    );
    assert_eq!(o.n_megaflows(), 3);

    // 5. Counters: every rule the megaflow hit, in both bridges, is credited.
    let stats = rec
        .stats
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(mf, _)| mf == MF_VM_TO_REMOTE)
        .map(|(_, s)| s.clone())
        .unwrap();
    stats.credit(5, 500, 1, 0);
    o.run_periodic();
    let int = o.dump_flows("br-int", None, false).unwrap();
    assert!(
        int.contains(" n_packets=5, n_bytes=500,") && int.ends_with(" priority=0 actions=NORMAL\n"),
        "{int}"
    );
    let tun = o.dump_flows("br-tun", None, false).unwrap();
    let counted: Vec<&str> = tun
        .lines()
        .filter(|l| l.contains(" n_packets=5, n_bytes=500,"))
        .map(|l| l.rsplit(", ").next().unwrap())
        .collect();
    assert_eq!(
        counted,
        [
            "priority=1,in_port=1 actions=resubmit(,1)",
            "priority=0,dl_dst=00:00:00:00:00:00/01:00:00:00:00:00 actions=resubmit(,20)",
            "priority=2,vlan_tci=0x0001/0x0fff,dl_dst=fa:16:3e:65:43:21 actions=load:0->NXM_OF_VLAN_TCI[],set_tunnel:0x1388,output:3",
        ],
        "{tun}"
    );
}

/// Revalidation re-translates the reply's megaflow, whose path runs br-tun's
/// `learn`, without learning: the learned rule keeps its hard timeout from the
/// packet that learned it, and expires.
#[test]
fn revalidation_across_the_patch_does_not_learn() {
    let rec = Recorder::default();
    let mut o = Ofproto::new(neutron(), &rec, OfprotoConfig::default());
    o.handle_upcall(0, remote_reply(), ());
    let filter = Some("table=20,dl_dst=fa:16:3e:65:43:21");
    assert_eq!(
        o.dump_flows("br-tun", filter, false)
            .unwrap()
            .lines()
            .count(),
        1
    );
    o.warp(200_000);
    // A rule change in br-int revalidates every megaflow, the reply's too.
    o.add_flow("br-int", "priority=5,dl_type=0x88cc actions=drop")
        .unwrap();
    o.warp(101_000);
    o.run_periodic();
    assert_eq!(
        o.dump_flows("br-tun", filter, false).unwrap(),
        "",
        "learned at 0 with hard_timeout=300: gone at 301 s"
    );
}

#[test]
fn trace_shows_the_crossing_into_br_tun() {
    // As OVS prints it: the patch port is NORMAL's last output, so br-tun's
    // block is the last node of table 0's and, like a tail resubmit, is not
    // indented.
    let rec = Recorder::default();
    let mut o = Ofproto::new(neutron(), &rec, OfprotoConfig::default());
    let t = o
        .trace(
            "br-int",
            &format!("in_port=vm1,arp,dl_src={VM},dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1"),
        )
        .unwrap();
    assert_eq!(
        t,
        "Flow: arp,in_port=1,vlan_tci=0x0000,dl_src=fa:16:3e:12:34:56,dl_dst=ff:ff:ff:ff:ff:ff,arp_spa=0.0.0.0,arp_tpa=0.0.0.0,arp_op=1,arp_sha=00:00:00:00:00:00,arp_tha=00:00:00:00:00:00

bridge(\"br-int\")
----------------
 0. priority 0
    NORMAL
     -> no learned MAC for destination, flooding

bridge(\"br-tun\")
----------------
 0. in_port=1, priority 1
    resubmit(,1)
 1. dl_dst=01:00:00:00:00:00/01:00:00:00:00:00, priority 0
    resubmit(,21)
21. dl_vlan=1, priority 1
    strip_vlan
    set_tunnel:0x1388
    output:3
    output:2

Final flow: unchanged
Megaflow: arp,in_port=1,vlan_tci=0x0000,dl_src=fa:16:3e:12:34:56,dl_dst=ff:ff:ff:ff:ff:ff
Datapath actions: push_vlan(vid=1,pcp=0),1,set(tunnel(tun_id=0x1388)),pop_vlan,3,2
"
    );
    assert!(rec.take().is_empty(), "a trace installs nothing");
    assert!(
        o.macs("br-int").unwrap().is_empty(),
        "a trace learns nothing"
    );
}

/// Two bridges joined by two patch pairs, both plain learning switches: a
/// broadcast loops from one to the other. Translation stops at OVS's depth
/// limit and the packet is dropped.
#[test]
fn a_loop_of_patch_ports_is_cut_and_dropped() {
    let cfg = Config::from_toml_str(
        r#"
[[bridge]]
name = "br-a"
  [[bridge.port]]
  name = "a0"
  options = { dpdk-devargs = "net_null0" }
  [[bridge.port]]
  name = "a-b1"
  type = "patch"
  options = { peer = "b-a1" }
  [[bridge.port]]
  name = "a-b2"
  type = "patch"
  options = { peer = "b-a2" }
[[bridge]]
name = "br-b"
  [[bridge.port]]
  name = "b-a1"
  type = "patch"
  options = { peer = "a-b1" }
  [[bridge.port]]
  name = "b-a2"
  type = "patch"
  options = { peer = "a-b2" }
"#,
    )
    .unwrap();
    let rec = Recorder::default();
    let mut o = Ofproto::new(
        bridges_from_config(&cfg).unwrap(),
        &rec,
        OfprotoConfig::default(),
    );
    let k = key(
        0,
        "dl_src=02:00:00:00:00:01,dl_dst=ff:ff:ff:ff:ff:ff,dl_type=0x88b5",
    );
    o.handle_upcall(0, k, ());
    let log = rec.take();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].ends_with(" -> drop +pkt"), "{log:?}");
    assert_eq!(o.stats.xlate_errors, 1);
    let t = o
        .trace(
            "br-a",
            "in_port=a0,dl_src=02:00:00:00:00:01,dl_dst=ff:ff:ff:ff:ff:ff,dl_type=0x88b5",
        )
        .unwrap();
    assert!(
        t.contains(" >> resubmit nested deeper than 64 (loop?), packet dropped\n"),
        "{t}"
    );
    assert_eq!(t.matches("bridge(\"br-b\")").count(), 32, "{t}");
    assert!(t.ends_with("Translation failed (resubmit nested deeper than 64 (loop?), packet dropped)\nDatapath actions: drop\n"), "{t}");
}

/// `ctl show` lists the patch ports as `ovs-vsctl show` does: `type: patch`
/// and `options: {peer=...}`, no link state (they have no device).
#[test]
fn show_lists_patch_ports_with_their_peer() {
    use mgmt::control::{handle, Request};
    use mgmt::view::StaticView;
    let cfg = Config::from_toml_str(CONFIG).unwrap();
    let r = handle(
        &Request::new("show", vec![]),
        &StaticView::new(vec![], vec![]),
        &cfg,
    );
    assert!(r.ok, "{r:?}");
    let body: String = r.output.lines().skip(1).map(|l| format!("{l}\n")).collect();
    assert_eq!(
        body,
        "    Bridge br-int
        datapath_type: netdev
        Port br-int
            Interface br-int
                type: internal
        Port patch-tun
            Interface patch-tun
                type: patch
                options: {peer=patch-int}
        Port vm1
            tag: 1
            Interface vm1
                type: dpdk
                options: {dpdk-devargs=net_null0}
    Bridge br-tun
        datapath_type: netdev
        Port br-tun
            Interface br-tun
                type: internal
        Port gre2
            Interface gre2
                type: dpdk
                options: {dpdk-devargs=net_null1}
        Port gre3
            Interface gre3
                type: dpdk
                options: {dpdk-devargs=net_null2}
        Port patch-int
            Interface patch-int
                type: patch
                options: {peer=patch-tun}
    ferroswitch_version: \"0.1.0\"
"
    );
}
