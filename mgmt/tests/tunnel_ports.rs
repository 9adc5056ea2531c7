//! Tunnel ports in the slow path: Neutron's br-int joined by patch ports to
//! br-tun (the fixture's tables, testdata/neutron-br-tun.dump-flows, loaded
//! unchanged) whose ports 2 and 3 are VXLAN tunnel ports with
//! `in_key=flow, out_key=flow`, and the underlay br-phy with the NIC eth0 and
//! the tunnel endpoint tep0 (172.168.1.1), seeds 000-002.
//!
//! The datapath is a recorder (megaflows installed, updated, removed, and
//! packets executed); the route and neighbor tables are a small `TunnelEnv`
//! of the test's that learns what is snooped and moves its generation as
//! tnl-ctl's does.
//!
//! Datapath ports, as `Config::datapath_ports` numbers them: vm1 0, br-int 1,
//! br-tun 2, eth0 3, tep0 4, br-phy 5, vxlan_sys_4789 6.

mod common;

use std::sync::{Arc, Mutex};

use common::Recorder;

use mgmt::config::Config;
use mgmt::control::{handle, Request};
use mgmt::ofproto::{
    bridges_from_config, parse_key, Bridge, Ofproto, OfprotoConfig, SharedTunnelEnv,
};
use mgmt::view::StaticView;
use pipeline::ofproto::syntax::{parse_dump_line, PortMap};
use pipeline::ofproto::xlate::{TnlRoute, TunnelEnv};
use pipeline::FlowKey;

const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/neutron-br-tun.dump-flows"
));

const VM: &str = "fa:16:3e:12:34:56";
const REMOTE: &str = "fa:16:3e:65:43:21";
const TEP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
const R2: [u8; 6] = [0xaa, 0, 0, 0, 0, 0x02];
const R3: [u8; 6] = [0xaa, 0, 0, 0, 0, 0x03];

const VXLAN_SYS: u32 = 6;

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
}

/// Route and neighbor tables: one connected prefix, 172.168.1.0/24 on tep0.
#[derive(Default)]
struct Env {
    neighbors: Vec<(String, u32, [u8; 6])>,
    /// Neighbor misses queued as ARP requests.
    queued: Vec<TnlRoute>,
    /// Next hops asked for in the current rate-limit window (the test ends
    /// a window by clearing it).
    asked: Vec<u32>,
    snooped: Vec<(String, u32, [u8; 6])>,
    generation: u64,
}

impl Env {
    fn set_neighbor(&mut self, bridge: &str, ip: u32, mac: [u8; 6]) {
        self.neighbors
            .retain(|(b, i, _)| !(b == bridge && *i == ip));
        self.neighbors.push((bridge.to_string(), ip, mac));
        self.generation += 1;
    }
}

impl TunnelEnv for Env {
    fn route(&self, dst: u32) -> Option<TnlRoute> {
        (dst & 0xffff_ff00 == ip("172.168.1.0")).then(|| TnlRoute {
            bridge: "br-phy".into(),
            port: "tep0".into(),
            mac: TEP_MAC,
            src: ip("172.168.1.1"),
            next_hop: dst,
            mtu: 1500,
        })
    }
    fn neighbor(&self, bridge: &str, ip: u32) -> Option<[u8; 6]> {
        self.neighbors
            .iter()
            .find(|(b, i, _)| b == bridge && *i == ip)
            .map(|e| e.2)
    }
    fn is_local_ip(&self, a: u32) -> bool {
        a == ip("172.168.1.1")
    }
    fn port_has_ip(&self, port: &str) -> bool {
        port == "tep0"
    }
    fn port_mac(&self, port: &str) -> Option<[u8; 6]> {
        (port == "tep0").then_some(TEP_MAC)
    }
    fn snoop(&mut self, bridge: &str, ip: u32, mac: [u8; 6]) {
        self.snooped.push((bridge.to_string(), ip, mac));
        if self.neighbor(bridge, ip) != Some(mac) {
            self.set_neighbor(bridge, ip, mac);
        }
    }
    fn neighbor_miss(&mut self, route: &TnlRoute) {
        if !self.asked.contains(&route.next_hop) {
            self.asked.push(route.next_hop);
            self.queued.push(route.clone());
        }
    }
    fn take_arp_requests(&mut self) -> Vec<TnlRoute> {
        std::mem::take(&mut self.queued)
    }
    fn generation(&self) -> u64 {
        self.generation
    }
}

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
  name = "vx2"
  type = "vxlan"
  options = { remote_ip = "172.168.1.2", in_key = "flow", out_key = "flow" }
  [[bridge.port]]
  name = "vx3"
  type = "vxlan"
  options = { remote_ip = "172.168.1.3", in_key = "flow", out_key = "flow" }
[[bridge]]
name = "br-phy"
  [[bridge.port]]
  name = "eth0"
  options = { dpdk-devargs = "net_null1" }
  [[bridge.port]]
  name = "tep0"
  type = "internal"
"#;

fn config() -> Config {
    let cfg = Config::from_toml_str(CONFIG).unwrap();
    cfg.validate(&mgmt::config::HostFacts {
        ncpus: 2,
        hugepages_free: 1024,
        hugetlbfs_mounted: true,
    })
    .unwrap();
    cfg
}

/// The bridges as the daemon builds them, the fixture loaded on br-tun.
fn neutron() -> Vec<Bridge> {
    let cfg = config();
    let dp: Vec<String> = cfg
        .datapath_ports()
        .into_iter()
        .map(|p| p.port.name)
        .collect();
    assert_eq!(
        dp,
        [
            "vm1",
            "br-int",
            "br-tun",
            "eth0",
            "tep0",
            "br-phy",
            "vxlan_sys_4789"
        ]
    );
    let mut bridges = bridges_from_config(&cfg).unwrap();
    let fms = FIXTURE
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_dump_line(l, &PortMap::new()).unwrap())
        .collect();
    bridges[1].tables.add_flows(fms, 0).unwrap();
    bridges
}

/// The slow path with both remote endpoints' MACs known.
fn slow_path(rec: &Recorder) -> (Ofproto<&Recorder>, Arc<Mutex<Env>>) {
    let env = Arc::new(Mutex::new(Env::default()));
    {
        let mut e = env.lock().unwrap();
        e.set_neighbor("br-phy", ip("172.168.1.2"), R2);
        e.set_neighbor("br-phy", ip("172.168.1.3"), R3);
    }
    let mut o = Ofproto::new(neutron(), rec, OfprotoConfig::default());
    let shared: SharedTunnelEnv = env.clone();
    o.set_tunnel_env(shared);
    (o, env)
}

fn key(in_port: u32, text: &str) -> FlowKey {
    let mut k = parse_key(text, &PortMap::new()).unwrap();
    k.in_port = in_port;
    k
}

/// The VM's broadcast ARP request (vm1, datapath port 0).
fn vm_arp_request() -> FlowKey {
    key(
        0,
        &format!("arp,dl_src={VM},dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_spa=10.0.0.1,arp_tpa=10.0.0.2,arp_sha={VM}"),
    )
}

/// The remote VM's reply, decapsulated: on vxlan_sys_4789 with the tunnel
/// metadata of a packet from 172.168.1.2 to us, VNI 0x1388.
fn remote_reply() -> FlowKey {
    let mut k = key(
        VXLAN_SYS,
        &format!("arp,dl_src={REMOTE},dl_dst={VM},arp_op=2,arp_spa=10.0.0.2,arp_tpa=10.0.0.1,arp_sha={REMOTE},arp_tha={VM}"),
    );
    k.tun_id = 0x1388;
    k.tun_src = ip("172.168.1.2");
    k.tun_dst = ip("172.168.1.1");
    k
}

/// A UDP packet from the VM to the remote VM.
fn vm_to_remote() -> FlowKey {
    key(
        0,
        &format!("udp,dl_src={VM},dl_dst={REMOTE},nw_src=10.0.0.1,nw_dst=10.0.0.2,nw_ttl=64,tp_src=1000,tp_dst=2000"),
    )
}

/// `clone(tnl_push(...))` to endpoint `.N` at `mac` with the network's VNI,
/// then the underlay's `actions`.
fn push(n: u8, mac: &str, actions: &str) -> String {
    format!(
        "clone(tnl_push(tnl_port(6),header(size=50,type=4,eth(dst={mac},src=02:00:00:00:01:01,dl_type=0x0800),\
ipv4(src=172.168.1.1,dst=172.168.1.{n},proto=17,tos=0,ttl=64,frag=0x4000),udp(src=0,dst=4789,csum=0x0),\
vxlan(flags=0x8000000,vni=0x1388)),out_port(4)),{actions})"
    )
}

// The megaflows: what br-int's NORMAL read, and, for packets from the VM, the
// tunnel destination they came with (none: a tunnel output never goes back
// to it) and the ECN bits the outer header copies; for the reply, all of its
// tunnel metadata (the tunnel port lookup).
const MF_ARP_REQUEST: &str =
    "arp,tun_dst=0.0.0.0,in_port=0,vlan_tci=0x0000,dl_src=fa:16:3e:12:34:56,dl_dst=ff:ff:ff:ff:ff:ff";
const MF_REPLY: &str = "arp,tun_id=0x1388,tun_src=172.168.1.2,tun_dst=172.168.1.1,in_port=6,vlan_tci=0x0000,dl_src=fa:16:3e:65:43:21,dl_dst=fa:16:3e:12:34:56";
const MF_VM_TO_REMOTE: &str =
    "ip,tun_dst=0.0.0.0,in_port=0,vlan_tci=0x0000,dl_src=fa:16:3e:12:34:56,dl_dst=fa:16:3e:65:43:21,nw_ecn=0,nw_frag=no";

#[test]
fn a_broadcast_floods_to_every_tunnel_with_its_vni() {
    let rec = Recorder::default();
    let (mut o, _env) = slow_path(&rec);
    o.handle_upcall(0, vm_arp_request(), ());
    // br-int floods (LOCAL tagged, patch-tun); br-tun's table 21 strips the
    // tag, sets the tunnel id and outputs to both tunnels: each a push with
    // VNI 0x1388 to its endpoint, and br-phy's NORMAL floods the outer packet
    // (the endpoints' MACs are not learned yet): eth0 and br-phy's LOCAL.
    assert_eq!(
        rec.take(),
        [format!(
            "install pmd0 {MF_ARP_REQUEST} -> push_vlan(vid=1,pcp=0),1,pop_vlan,{},{} +pkt",
            push(3, "aa:00:00:00:00:03", "3,5"),
            push(2, "aa:00:00:00:00:02", "3,5")
        )]
    );
    assert_eq!(o.stats.tnl_push, 2);
    assert_eq!(o.stats.xlate_errors, 0);
    // The outer packets learned nothing in br-phy.
    assert!(o.macs("br-phy").unwrap().is_empty());
}

#[test]
fn a_reply_from_a_tunnel_is_learned_in_table_20_and_unicast_goes_back_by_it() {
    let rec = Recorder::default();
    let (mut o, _env) = slow_path(&rec);

    // 1. The reply arrives on vxlan_sys_4789 from 172.168.1.2: it is vx2's
    //    (OpenFlow port 2). br-tun's table 0 sends in_port=2 to table 2 (VNI
    //    0x1388 -> VLAN 1), table 10 learns and outputs to patch-int, br-int
    //    floods in VLAN 1. The megaflow matches the tunnel metadata the lookup
    //    read.
    o.handle_upcall(0, remote_reply(), ());
    assert_eq!(
        rec.take(),
        [format!(
            "install pmd0 {MF_REPLY} -> 0,push_vlan(vid=1,pcp=0),1 +pkt"
        )]
    );
    let learned = o
        .dump_flows("br-tun", Some("table=20,dl_dst=fa:16:3e:65:43:21"), false)
        .unwrap();
    assert!(
        learned.ends_with(" hard_timeout=300, idle_age=0, priority=1,vlan_tci=0x0001/0x0fff,dl_dst=fa:16:3e:65:43:21 actions=load:0->NXM_OF_VLAN_TCI[],load:0x1388->NXM_NX_TUN_ID[],output:2\n"),
        "{learned}"
    );
    // br-int learned the remote VM on its patch port.
    assert_eq!(
        o.fdb_show("br-int").unwrap(),
        " port  VLAN  MAC                Age\n    2     1  fa:16:3e:65:43:21    0\n"
    );

    // 2. Unicast from the VM: br-int to patch-tun, br-tun's learned flow to
    //    vx2 only, VNI from the tunnel id the flow loaded. (br-int learned
    //    the VM: the reply's megaflow now goes to it only.)
    o.handle_upcall(0, vm_to_remote(), ());
    assert_eq!(
        rec.take(),
        [
            format!(
                "install pmd0 {MF_VM_TO_REMOTE} -> {} +pkt",
                push(2, "aa:00:00:00:00:02", "3,5")
            ),
            format!("install pmd0 {MF_REPLY} -> 0"),
        ]
    );

    // 3. The same reply from 172.168.1.3 is vx3's: learning moves the remote
    //    VM to port 3, and the unicast megaflow follows (rule change).
    let mut k = remote_reply();
    k.tun_src = ip("172.168.1.3");
    o.handle_upcall(0, k, ());
    let log = rec.take();
    assert!(
        log.contains(&format!(
            "install pmd0 {MF_VM_TO_REMOTE} -> {}",
            push(3, "aa:00:00:00:00:03", "3,5")
        )),
        "{log:#?}"
    );

    // 4. An unknown endpoint has no tunnel port: a counted drop over the
    //    tunnel metadata.
    let mut k = remote_reply();
    k.tun_src = ip("172.168.1.9");
    o.handle_upcall(1, k, ());
    assert_eq!(
        rec.take(),
        ["install pmd1 tun_id=0x1388,tun_src=172.168.1.9,tun_dst=172.168.1.1,in_port=6 -> drop +pkt"]
    );
    assert_eq!(o.stats.tnl_rx_no_port, 1);
    assert!(o.dump_dp_flows().contains("pmd 1 (no tunnel port): "));
}

#[test]
fn in_key_fixed_takes_only_its_key() {
    let rec = Recorder::default();
    let text = CONFIG.replace(
        "remote_ip = \"172.168.1.2\", in_key = \"flow\", out_key = \"flow\"",
        "remote_ip = \"172.168.1.2\", key = \"0x1388\"",
    );
    let cfg = Config::from_toml_str(&text).unwrap();
    let mut bridges = bridges_from_config(&cfg).unwrap();
    let fms = FIXTURE
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_dump_line(l, &PortMap::new()).unwrap())
        .collect();
    bridges[1].tables.add_flows(fms, 0).unwrap();
    let mut o = Ofproto::new(bridges, &rec, OfprotoConfig::default());
    o.handle_upcall(0, remote_reply(), ());
    assert_eq!(
        rec.take(),
        [format!(
            "install pmd0 {MF_REPLY} -> 0,push_vlan(vid=1,pcp=0),1 +pkt"
        )]
    );
    let mut k = remote_reply();
    k.tun_id = 0x1389;
    o.handle_upcall(0, k, ());
    assert_eq!(
        rec.take(),
        ["install pmd0 tun_id=0x1389,tun_src=172.168.1.2,tun_dst=172.168.1.1,in_port=6 -> drop +pkt"]
    );
    assert_eq!(o.stats.tnl_rx_no_port, 1);
}

/// The ARP request frame for `target` from tep0, as built independently here.
fn expected_arp_request(target: [u8; 4]) -> String {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&TEP_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01]);
    f.extend_from_slice(&TEP_MAC);
    f.extend_from_slice(&[172, 168, 1, 1]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    assert_eq!(
        mgmt::neigh::arp_request(TEP_MAC, ip("172.168.1.1"), u32::from_be_bytes(target)).to_vec(),
        f
    );
    f.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_neighbor_miss_sends_an_arp_request_and_the_reply_starts_the_traffic() {
    let rec = Recorder::default();
    let env = Arc::new(Mutex::new(Env::default()));
    let mut o = Ofproto::new(neutron(), &rec, OfprotoConfig::default());
    o.set_tunnel_env(env.clone());

    // 1. Unicast to the remote VM through vx2: the next hop's MAC is unknown,
    //    the packet is dropped (its megaflow reads what the push will read:
    //    it is updated in place once the neighbor is known), and at the end
    //    of the batch the ARP request goes out as
    //    a packet-out from tep0: br-phy's NORMAL floods it to eth0 and
    //    br-phy's LOCAL. (br-int learned the VM: the reply's megaflow goes to
    //    it only; that revalidation meets the miss again, within the env's
    //    rate limit.)
    o.handle_upcall(0, remote_reply(), ());
    rec.take();
    o.handle_upcall(0, vm_to_remote(), ());
    assert_eq!(
        rec.take(),
        [
            format!("install pmd0 {MF_VM_TO_REMOTE} -> drop +pkt"),
            format!("execute {} -> 3,5", expected_arp_request([172, 168, 1, 2])),
            format!("install pmd0 {MF_REPLY} -> 0"),
        ]
    );
    assert_eq!((o.stats.tnl_neighbor_miss, o.stats.arp_requests), (1, 1));
    // The request taught br-phy where tep0 is.
    assert_eq!(
        o.macs("br-phy").unwrap().lookup(0, &TEP_MAC),
        Some(2),
        "{}",
        o.fdb_show("br-phy").unwrap()
    );

    // 2. Each period asks again while the neighbor is unknown, as the env's
    //    rate limit lets it (here: once its window is over).
    o.run_periodic();
    assert!(rec.take().is_empty());
    env.lock().unwrap().asked.clear();
    o.run_periodic();
    assert_eq!(
        rec.take(),
        [format!(
            "execute {} -> 3,5",
            expected_arp_request([172, 168, 1, 2])
        )]
    );

    // 3. The reply comes in on eth0 (datapath port 3) to tep0's MAC: br-phy
    //    learns the endpoint on eth0 and delivers it to tep0, snooping it on
    //    the way. The neighbor is known: the drop megaflow becomes the push,
    //    unicast to eth0 as br-phy learned.
    let reply = key(
        3,
        "arp,dl_src=aa:00:00:00:00:02,dl_dst=02:00:00:00:01:01,arp_op=2,arp_spa=172.168.1.2,arp_tpa=172.168.1.1,arp_sha=aa:00:00:00:00:02,arp_tha=02:00:00:00:01:01",
    );
    o.handle_upcall(0, reply, ());
    assert_eq!(
        env.lock().unwrap().snooped,
        [("br-phy".to_string(), ip("172.168.1.2"), R2)]
    );
    let log = rec.take();
    assert_eq!(
        log,
        [
            "install pmd0 arp,in_port=3,vlan_tci=0x0000,dl_src=aa:00:00:00:00:02,dl_dst=02:00:00:00:01:01,arp_spa=172.168.1.2,arp_op=2,arp_sha=aa:00:00:00:00:02 -> 4 +pkt".to_string(),
            format!(
                "install pmd0 {MF_VM_TO_REMOTE} -> {}",
                push(2, "aa:00:00:00:00:02", "3")
            ),
        ]
    );
    assert_eq!(o.stats.tnl_revalidations, 1);
    // Nothing pending: no more requests.
    o.run_periodic();
    assert!(rec.take().is_empty());
}

/// A neighbor flushed (`ctl neigh flush`, or aged out) while the megaflow of
/// its ARP replies lives: the replies to the next ARP request hit that
/// megaflow in the datapath, no upcall snoops them, so the periodic work
/// teaches the neighbor cache again from the megaflows that snooped and have
/// had packets since (OVS's `XC_TNL_NEIGH`), and the push comes back.
#[test]
fn a_flushed_neighbor_is_learned_back_from_its_arp_megaflow() {
    let rec = Recorder::default();
    let env = Arc::new(Mutex::new(Env::default()));
    let mut o = Ofproto::new(neutron(), &rec, OfprotoConfig::default());
    o.set_tunnel_env(env.clone());
    o.handle_upcall(0, remote_reply(), ());
    o.handle_upcall(0, vm_to_remote(), ());
    let reply = key(
        3,
        "arp,dl_src=aa:00:00:00:00:02,dl_dst=02:00:00:00:01:01,arp_op=2,arp_spa=172.168.1.2,arp_tpa=172.168.1.1,arp_sha=aa:00:00:00:00:02,arp_tha=02:00:00:00:01:01",
    );
    o.handle_upcall(0, reply, ());
    rec.take();
    let snooped = ("br-phy".to_string(), ip("172.168.1.2"), R2);
    assert_eq!(env.lock().unwrap().snooped, std::slice::from_ref(&snooped));
    let arp_mf = "arp,in_port=3,vlan_tci=0x0000,dl_src=aa:00:00:00:00:02,dl_dst=02:00:00:00:01:01,arp_spa=172.168.1.2,arp_op=2,arp_sha=aa:00:00:00:00:02";
    let arp_stats = rec
        .stats
        .lock()
        .unwrap()
        .iter()
        .rfind(|(mf, _)| mf == arp_mf)
        .map(|(_, s)| s.clone())
        .expect("the ARP reply's megaflow");
    // Its packet (the upcall's) was seen at the first period.
    arp_stats.credit(1, 42, 1, 0);
    o.run_periodic();
    assert_eq!(
        env.lock().unwrap().snooped,
        [snooped.clone(), snooped.clone()]
    );
    rec.take();

    // The flush: the push megaflow becomes a drop (and asks for the
    // neighbor); the ARP megaflow saw nothing new, teaches nothing.
    {
        let mut e = env.lock().unwrap();
        e.neighbors.clear();
        e.generation += 1;
        e.asked.clear();
        e.snooped.clear();
    }
    o.run_periodic();
    assert_eq!(
        rec.take(),
        [
            format!("install pmd0 {MF_VM_TO_REMOTE} -> drop"),
            format!("execute {} -> 3,5", expected_arp_request([172, 168, 1, 2])),
        ]
    );
    assert!(env.lock().unwrap().snooped.is_empty());

    // The reply hits the ARP megaflow in the datapath: the next period
    // learns it back, and the push returns.
    arp_stats.credit(1, 42, 2, 0);
    o.run_periodic();
    assert_eq!(env.lock().unwrap().snooped, [snooped]);
    o.run_periodic();
    assert_eq!(
        rec.take(),
        [format!(
            "install pmd0 {MF_VM_TO_REMOTE} -> {}",
            push(2, "aa:00:00:00:00:02", "3")
        )]
    );
}

#[test]
fn a_neighbor_change_revalidates_the_tunnel_megaflows_only() {
    let rec = Recorder::default();
    let (mut o, env) = slow_path(&rec);
    o.handle_upcall(0, remote_reply(), ());
    o.handle_upcall(0, vm_to_remote(), ());
    // A megaflow that never met the tunnel environment: br-int only.
    o.handle_upcall(
        0,
        key(
            0,
            &format!("dl_type=0x88cc,dl_src={VM},dl_dst=01:80:c2:00:00:0e"),
        ),
        (),
    );
    rec.take();
    let revalidations = o.stats.tnl_revalidations;
    // The remote endpoint's MAC changes (the env's generation moves): the
    // push follows at the next revalidation point.
    env.lock()
        .unwrap()
        .set_neighbor("br-phy", ip("172.168.1.2"), [0xaa, 0, 0, 0, 0, 0x22]);
    o.run_periodic();
    assert_eq!(
        rec.take(),
        [format!(
            "install pmd0 {MF_VM_TO_REMOTE} -> {}",
            push(2, "aa:00:00:00:00:22", "3,5")
        )]
    );
    assert_eq!(o.stats.tnl_revalidations, revalidations + 1);
    // Nothing moved: nothing done.
    o.run_periodic();
    assert!(rec.take().is_empty());
}

#[test]
fn a_packet_for_the_endpoint_is_popped_and_its_inner_frame_reaches_the_vm() {
    let rec = Recorder::default();
    let (mut o, _env) = slow_path(&rec);
    // br-phy knows tep0's MAC (say from the host's own traffic).
    o.fdb_add("br-phy", "tep0", "0", "02:00:00:00:01:01")
        .unwrap();
    rec.take();
    // The outer packet from 172.168.1.2 on eth0.
    let outer = key(
        3,
        "udp,dl_src=aa:00:00:00:00:02,dl_dst=02:00:00:00:01:01,nw_src=172.168.1.2,nw_dst=172.168.1.1,nw_ttl=64,tp_src=50000,tp_dst=4789",
    );
    o.handle_upcall(0, outer, ());
    assert_eq!(
        rec.take(),
        ["install pmd0 udp,in_port=3,vlan_tci=0x0000,dl_src=aa:00:00:00:00:02,dl_dst=02:00:00:00:01:01,nw_dst=172.168.1.1,nw_frag=no,tp_dst=4789 -> tnl_pop(6) +pkt"]
    );
    assert_eq!(o.stats.tnl_pop, 1);
    // Another UDP port is the host's: delivered to tep0.
    let mut other = outer;
    other.tp_dst = 53;
    o.handle_upcall(0, other, ());
    assert_eq!(
        rec.take(),
        ["install pmd0 udp,in_port=3,vlan_tci=0x0000,dl_src=aa:00:00:00:00:02,dl_dst=02:00:00:00:01:01,nw_dst=172.168.1.1,nw_frag=no,tp_dst=53 -> 4 +pkt"]
    );
    // The trace tells.
    let t = o
        .trace(
            "br-phy",
            "in_port=eth0,udp,dl_src=aa:00:00:00:00:02,dl_dst=02:00:00:00:01:01,nw_src=172.168.1.2,nw_dst=172.168.1.1,tp_dst=4789",
        )
        .unwrap();
    assert!(
        t.contains(" -> vxlan packet for local endpoint 172.168.1.1: tnl_pop(6)")
            && t.ends_with("Datapath actions: tnl_pop(6)\n"),
        "{t}"
    );
}

#[test]
fn tunnel_ports_show_as_ovs_vsctl_shows_them() {
    let cfg = config();
    let view = StaticView::new(Vec::new(), Vec::new());
    let r = handle(&Request::new("show", Vec::new()), &view, &cfg);
    assert!(r.ok, "{r:?}");
    let tun: Vec<&str> = r
        .output
        .lines()
        .skip_while(|l| *l != "    Bridge br-tun")
        .take_while(|l| !l.starts_with("    ferroswitch_version"))
        .collect();
    assert_eq!(
        tun.join("\n"),
        r#"    Bridge br-tun
        datapath_type: netdev
        Port br-tun
            Interface br-tun
                type: internal
        Port patch-int
            Interface patch-int
                type: patch
                options: {peer=patch-tun}
        Port vx2
            Interface vx2
                type: vxlan
                options: {in_key=flow, out_key=flow, remote_ip="172.168.1.2"}
        Port vx3
            Interface vx3
                type: vxlan
                options: {in_key=flow, out_key=flow, remote_ip="172.168.1.3"}"#
    );
}

#[test]
fn tunnel_ports_come_and_go_at_runtime() {
    use pipeline::ofproto::normal::VlanMode;
    use pipeline::ofproto::tnl::TunnelPortConfig;
    use pipeline::tunnel::TunnelKind;

    let rec = Recorder::default();
    let (mut o, _env) = slow_path(&rec);
    // A packet from an endpoint no port has: dropped.
    let mut k = remote_reply();
    k.tun_src = ip("172.168.1.9");
    o.handle_upcall(0, k, ());
    let mf = "tun_id=0x1388,tun_src=172.168.1.9,tun_dst=172.168.1.1,in_port=6";
    assert_eq!(rec.take(), [format!("install pmd0 {mf} -> drop +pkt")]);

    // A port for it joins the shared datapath port: the drop megaflow goes
    // (the port's translation reads more than it matched).
    assert_eq!(o.tunnel_odp(TunnelKind::Vxlan, 4789), Some(6));
    assert_eq!(o.tunnel_odp(TunnelKind::Gre, 0), None);
    let c = TunnelPortConfig::from_options(
        TunnelKind::Vxlan,
        [("remote_ip", "172.168.1.9"), ("key", "flow")],
    )
    .unwrap();
    o.add_tunnel_port("br-tun", "vx9", 9, 6, c.clone(), VlanMode::default())
        .unwrap();
    assert_eq!(rec.take(), [format!("remove pmd0 {mf}")]);
    let e = o
        .add_tunnel_port("br-tun", "vx9", 10, 6, c.clone(), VlanMode::default())
        .unwrap_err();
    assert_eq!(e, "bridge \"br-tun\" already has a port \"vx9\"");
    let e = o
        .add_tunnel_port("br-tun", "vx10", 9, 6, c, VlanMode::default())
        .unwrap_err();
    assert_eq!(e, "port \"vx10\": OpenFlow port 9 is taken");
    // Its packets are its: in_port=9 in br-tun, whose table 0 drops them
    // (the fixture knows ports 1 to 3 only).
    let mut k = remote_reply();
    k.tun_src = ip("172.168.1.9");
    let t = o.trace("br-tun", "in_port=vx9,tun_id=0x1388,arp").unwrap();
    assert!(t.contains(" 0. priority 0\n    drop\n"), "{t}");
    o.handle_upcall(0, k, ());
    assert_eq!(rec.take().len(), 1);

    // The shared datapath port is given back with the last tunnel.
    assert_eq!(o.del_tunnel_port("br-tun", "vx2").unwrap(), None);
    assert_eq!(o.del_tunnel_port("br-tun", "vx3").unwrap(), None);
    assert_eq!(o.del_tunnel_port("br-tun", "vx9").unwrap(), Some(6));
    assert_eq!(
        o.del_tunnel_port("br-tun", "vx9").unwrap_err(),
        "bridge \"br-tun\" has no tunnel port \"vx9\""
    );
    assert_eq!(o.tunnel_odp(TunnelKind::Vxlan, 4789), None);
}
