//! What each benchmark scenario sends and which rules every contender gets.
//!
//! A [`Scenario`] is the traffic (a pcap replayed forever by `net_pcap`), the
//! ferroswitch bridge configuration (static forwarding or OpenFlow rules), the
//! Open vSwitch [`Setup`] with the same rules, and what testpmd (the forwarding
//! limit, `--forward-mode=io`) needs. The runner measures every scenario the same
//! way; see `runner.rs`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use pipeline::{pcap, trafgen};

use crate::ovs::{BridgeSetup, Port, Setup, BRIDGE};

/// One throughput scenario, ready to run (its pcap written).
pub struct Scenario {
    /// Printed at the start of the result lines (`p2p`, `1flow`, ...).
    pub name: &'static str,
    /// Devargs of the traffic source (net_pcap, infinite_rx) and the sink (net_null).
    pub src: String,
    pub sink: String,
    /// TOML keys of ferroswitch's bridge (before its port tables): `flows`.
    pub fs_bridge_keys: String,
    /// TOML tables after br0's ports: `[[bridge.forward]]`.
    pub fs_bridge_tables: String,
    /// `dpdk.mbufs` for ferroswitch and `--total-num-mbufs` for testpmd, when the
    /// defaults are too few (net_pcap's infinite_rx holds the whole pcap in mbufs).
    pub mbufs: Option<u32>,
    /// The same bridge for OVS.
    pub ovs: Setup,
    /// Megaflows the traffic needs: the warm-up first waits until they are installed
    /// (the count stops growing), so that the window measures the fast path only.
    pub megaflows: Option<usize>,
    /// Static MAC entries (port name, VLAN, MAC) both contenders get right after
    /// they start (`ctl fdb-add` / `ovs-appctl fdb/add`; the same list is in
    /// `ovs.bridges[0].fdb`).
    pub fdb: Vec<(String, u16, String)>,
    /// ferroswitch's two port tables (`src` then `sink`), when they are not
    /// `type = "dpdk"` ports over `src` and `sink`.
    pub fs_ports: Option<String>,
    /// Guests that must run while a contender forwards (pvp).
    pub guests: Option<Guests>,
    /// ferroswitch's whole bridge configuration (`[[bridge]]` tables), when
    /// the scenario is not the one bridge `fs-perf` of the fields above.
    pub fs_bridges: Option<String>,
    /// Native tunneling: the endpoint each contender gets, in a network
    /// namespace of its run.
    pub tunnel: Option<TunnelHost>,
    /// Datapath flows of each contender printed to stderr before its warm-up
    /// (the first ones of `dump-dp-flows` / `dpctl/dump-flows`), to show what
    /// it decided: NORMAL's unicast, tnl_push, tnl_pop.
    pub show_dp_flows: usize,
}

/// The virtio_user NICs of the pvp scenario's guest (`perf guest`), each
/// owning its vhost-user socket (`server=1`): the forwarder connects to both,
/// as OVS's `dpdkvhostuserclient` ports connect to QEMU.
#[derive(Clone, Debug)]
pub struct Guests {
    /// The NIC that sends 64-byte frames.
    pub tx_sock: PathBuf,
    /// The NIC that receives them.
    pub rx_sock: PathBuf,
}

/// Frames per pcap for single-flow scenarios (payload bytes vary, the flow doesn't).
const ONE_FLOW_FRAMES: usize = 64;
/// Length of every benchmark frame (without FCS), as in OVS-DPDK's and testpmd's
/// usual 64-byte figures.
pub const FRAME_LEN: usize = 64;

fn write_pcap(dir: &Path, name: &str, frames: &[Vec<u8>]) -> Result<String> {
    let path = dir.join(format!("{name}.pcap"));
    std::fs::write(&path, pcap::write(frames.iter().map(|f| f.as_slice())))?;
    Ok(format!(
        "net_pcap0,rx_pcap={},infinite_rx=1",
        path.display()
    ))
}

const SINK: &str = "net_null0,no-rx=1";

/// Port to port, static forwarding (`[[bridge.forward]]`): the switch's floor.
pub fn p2p(dir: &Path) -> Result<Scenario> {
    let flow = trafgen::flows(1)[0];
    let frames: Vec<Vec<u8>> = (0..ONE_FLOW_FRAMES)
        .map(|i| trafgen::udp_frame(&flow, FRAME_LEN, i as u8))
        .collect();
    let src = write_pcap(dir, "p2p-64", &frames)?;
    Ok(Scenario {
        name: "p2p",
        ovs: Setup::p2p(&src, SINK),
        src,
        sink: SINK.to_string(),
        fs_bridge_keys: String::new(),
        fs_bridge_tables: "  [[bridge.forward]]\n  in_port = \"src\"\n  output = \"sink\"\n".into(),
        mbufs: None,
        megaflows: None,
        fdb: Vec::new(),
        fs_ports: None,
        guests: None,
        fs_bridges: None,
        tunnel: None,
        show_dp_flows: 0,
    })
}

/// One UDP flow through the OpenFlow path: rule `in_port=src,actions=output:sink`.
pub fn one_flow(dir: &Path) -> Result<Scenario> {
    let flow = trafgen::flows(1)[0];
    let frames: Vec<Vec<u8>> = (0..ONE_FLOW_FRAMES)
        .map(|i| trafgen::udp_frame(&flow, FRAME_LEN, i as u8))
        .collect();
    let src = write_pcap(dir, "1flow-64", &frames)?;
    // ferroswitch's br0 also keeps its default `priority=0 actions=NORMAL` (OVS's
    // is deleted before the rules are added): src's frames never reach it (the
    // lookup stops before the lower-priority catch-all, so the megaflow is the
    // same) and the sink receives nothing.
    let flows = vec!["in_port=src,actions=output:sink".to_string()];
    let mut setup = Setup::p2p(&src, SINK);
    setup.main_bridge().flows = flows.clone();
    Ok(Scenario {
        name: "1flow",
        ovs: setup,
        src,
        sink: SINK.to_string(),
        fs_bridge_keys: toml_flows(&flows),
        fs_bridge_tables: String::new(),
        mbufs: None,
        megaflows: Some(1),
        fdb: Vec::new(),
        fs_ports: None,
        guests: None,
        fs_bridges: None,
        tunnel: None,
        show_dp_flows: 0,
    })
}

/// `n` distinct UDP 5-tuples: source and destination addresses and ports all vary
/// (the source address alone keeps them distinct, up to 2^24).
pub fn five_tuples(n: usize) -> Vec<trafgen::UdpFlow> {
    (0..n)
        .map(|i| {
            let j = (i as u32).wrapping_mul(2_654_435_761); // spread the other fields
            trafgen::UdpFlow {
                dl_src: [0x02, 0, 0, 0, 0, 0x01],
                dl_dst: [0x02, 0, 0, 0, 0, 0x02],
                nw_src: [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
                nw_dst: [172, 16 + (j >> 28) as u8, (j >> 20) as u8, (j >> 12) as u8],
                tp_src: 1024 + (i % 60_000) as u16,
                tp_dst: 1 + (j % 50_000) as u16,
            }
        })
        .collect()
}

fn ip(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

/// The exact 5-tuple rule of `f`, from OpenFlow port 1 (`src`) to 2 (`sink`).
/// Numbers, not names: OVS gets these rules before its ports exist.
pub fn five_tuple_rule(f: &trafgen::UdpFlow) -> String {
    format!(
        "priority=10,udp,in_port=1,nw_src={},nw_dst={},tp_src={},tp_dst={} actions=output:2",
        ip(f.nw_src),
        ip(f.nw_dst),
        f.tp_src,
        f.tp_dst
    )
}

/// The rule table of the many-flow scenarios: one exact 5-tuple rule per flow and
/// a lowest-priority drop.
pub fn five_tuple_rules(flows: &[trafgen::UdpFlow]) -> Vec<String> {
    let mut rules: Vec<String> = flows.iter().map(five_tuple_rule).collect();
    rules.push("priority=0 actions=drop".to_string());
    rules
}

/// Enough mbufs for the pcap held by infinite_rx plus rings and caches: the next
/// power of two minus one (DPDK's best mempool size) above `frames` + 16384.
fn mbufs_for(frames: usize) -> u32 {
    ((frames + 16_384).next_power_of_two() - 1) as u32
}

/// `n` flows against `n` exact 5-tuple rules (+ a drop): every flow needs its own
/// megaflow.
pub fn many_flows(dir: &Path, name: &'static str, n: usize) -> Result<Scenario> {
    let flows = five_tuples(n);
    let frames: Vec<Vec<u8>> = flows
        .iter()
        .map(|f| trafgen::udp_frame(f, FRAME_LEN, 0))
        .collect();
    let src = write_pcap(dir, name, &frames)?;
    let rules = five_tuple_rules(&flows);
    let mut setup = Setup::p2p(&src, SINK);
    setup.main_bridge().flows = rules.clone();
    setup.flows_first = true;
    // net_pcap's infinite_rx keeps the whole pcap in mbufs of OVS's shared mempool.
    if n > 50_000 {
        setup
            .other_config
            .push(("dpdk-socket-mem".to_string(), "1536".to_string()));
    }
    Ok(Scenario {
        name,
        ovs: setup,
        src,
        sink: SINK.to_string(),
        fs_bridge_keys: toml_flows(&rules),
        fs_bridge_tables: String::new(),
        mbufs: Some(mbufs_for(n)),
        megaflows: Some(n),
        fdb: Vec::new(),
        fs_ports: None,
        guests: None,
        fs_bridges: None,
        tunnel: None,
        show_dp_flows: 0,
    })
}

/// `02:00:00:00:HH:LL` for hosts behind the source port (`side` 0) and the sink
/// (`side` 1): host `i` of a side.
pub fn host_mac(side: u8, i: u16) -> [u8; 6] {
    [0x02, 0, 0, side, (i >> 8) as u8, i as u8]
}

fn mac_text(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// The `NORMAL` scenarios: the bridge's default flow (`priority=0
/// actions=NORMAL`) on both contenders, `sources` hosts behind `src` sending
/// UDP to `dests` hosts behind `sink` (source `i` to destination `i % dests`),
/// one frame per source (`sources` 1: 64 frames of the one flow). The
/// destinations are static MAC entries on `sink` in VLAN 0, given to each
/// contender as it starts: every frame is a known unicast, as on a switch
/// whose hosts have all spoken, and nothing floods (not to `sink`, not to the
/// bridge's own tap port). The sources are learned on `src` from the traffic,
/// one megaflow each (`NORMAL` matches both addresses).
pub fn normal(dir: &Path, name: &'static str, sources: u16, dests: u16) -> Result<Scenario> {
    let flow = |i: u16| trafgen::UdpFlow {
        dl_src: host_mac(0, i),
        dl_dst: host_mac(1, i % dests),
        nw_src: [10, 0, (i >> 8) as u8, i as u8],
        nw_dst: [10, 1, 0, (i % dests) as u8],
        tp_src: 1024,
        tp_dst: 4789,
    };
    let frames: Vec<Vec<u8>> = if sources == 1 {
        (0..ONE_FLOW_FRAMES)
            .map(|i| trafgen::udp_frame(&flow(0), FRAME_LEN, i as u8))
            .collect()
    } else {
        (0..sources)
            .map(|i| trafgen::udp_frame(&flow(i), FRAME_LEN, 0))
            .collect()
    };
    let src = write_pcap(dir, name, &frames)?;
    let fdb: Vec<(String, u16, String)> = (0..dests)
        .map(|d| ("sink".to_string(), 0, mac_text(host_mac(1, d))))
        .collect();
    let mut setup = Setup::p2p(&src, SINK);
    setup.main_bridge().flows = vec![DEFAULT_NORMAL.to_string()];
    setup.main_bridge().fdb = fdb.clone();
    Ok(Scenario {
        name,
        ovs: setup,
        src,
        sink: SINK.to_string(),
        // ferroswitch's bridge starts with the same default flow.
        fs_bridge_keys: String::new(),
        fs_bridge_tables: String::new(),
        mbufs: (frames.len() > ONE_FLOW_FRAMES).then(|| mbufs_for(frames.len())),
        megaflows: Some(usize::from(sources)),
        fdb,
        fs_ports: None,
        guests: None,
        fs_bridges: None,
        tunnel: None,
        show_dp_flows: 1,
    })
}

/// OVS's (and ferroswitch's) default flow of a new bridge.
const DEFAULT_NORMAL: &str = "priority=0 actions=NORMAL";

/// A TOML string (basic string, escaped).
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `flows = [ ... ]` of bridge br0, one rule a line (a key of the bridge table: it
/// goes before the first `[[bridge.port]]`).
fn toml_flows(flows: &[String]) -> String {
    let mut out = String::from("  flows = [\n");
    for f in flows {
        out.push_str("    ");
        out.push_str(&toml_str(f));
        out.push_str(",\n");
    }
    out.push_str("  ]\n");
    out
}

/// PVP: a virtio_user guest sends 64-byte frames through the forwarder to a
/// second guest. Every contender connects to the guests' sockets as a client:
/// ferroswitch with `dpdkvhostuserclient` ports, OVS likewise, testpmd with
/// `net_vhost` devices (`client=1`); one rule, `in_port=src,actions=output:sink`.
pub fn pvp(dir: &Path) -> Result<Scenario> {
    let tx_sock = dir.join("pvp-tx.sock");
    let rx_sock = dir.join("pvp-rx.sock");
    let vdev =
        |n: u32, sock: &Path| format!("net_vhost{n},iface={},client=1,queues=1", sock.display());
    let ovs = Setup {
        bridges: vec![BridgeSetup::new(
            BRIDGE,
            vec![
                Port::vhost_client("src", &tx_sock),
                Port::vhost_client("sink", &rx_sock),
            ],
            vec!["in_port=src,actions=output:sink".to_string()],
        )],
        other_config: Vec::new(),
        count_port: "sink".to_string(),
        flows_first: false,
        tunnel: None,
    };
    let port = |name: &str, sock: &Path| {
        format!(
            "  [[bridge.port]]\n  name = \"{name}\"\n  ofport = {}\n  type = \"dpdkvhostuserclient\"\n  options = {{ vhost-server-path = {} }}\n",
            if name == "src" { 1 } else { 2 },
            toml_str(&sock.display().to_string())
        )
    };
    Ok(Scenario {
        name: "pvp",
        src: vdev(0, &tx_sock),
        sink: vdev(1, &rx_sock),
        fs_bridge_keys: "flows = [\"in_port=src actions=output:sink\"]\n".to_string(),
        fs_bridge_tables: String::new(),
        mbufs: None,
        ovs,
        megaflows: None,
        fdb: Vec::new(),
        fs_ports: Some(port("src", &tx_sock) + &port("sink", &rx_sock)),
        guests: Some(Guests { tx_sock, rx_sock }),
        fs_bridges: None,
        tunnel: None,
        show_dp_flows: 0,
    })
}

/// The local tunnel endpoint of the tunnel scenarios, an address of br-phy's
/// own port (a tap device), with the prefix the kernel's connected route
/// covers the remote endpoint by.
pub const TEP_LOCAL: [u8; 4] = [172, 31, 0, 1];
const TEP_PREFIX_LEN: u8 = 24;
/// The remote endpoint: a static neighbor, never a host (the outer packets go
/// to a net_null device).
pub const TEP_REMOTE: [u8; 4] = [172, 31, 0, 2];
/// br-phy's MAC (fixed after start: the outer destination of decap's packets).
pub const TEP_LOCAL_MAC: [u8; 6] = [0x02, 0xfe, 0, 0, 0, 0x01];
/// The remote endpoint's MAC (the static neighbor entry).
pub const TEP_REMOTE_MAC: [u8; 6] = [0x02, 0xfe, 0, 0, 0, 0x02];
/// The tunnel's VNI (`options:key`).
pub const VNI: u32 = 100;
/// VXLAN's UDP port (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// The outer UDP source port of decap's packets (one outer flow; a sender
/// picks it from the inner flow's hash, in the ephemeral range).
const DECAP_UDP_SRC: u16 = 50_000;
/// Ethernet + IPv4 + UDP + VXLAN: what VXLAN adds in front of the inner frame.
pub const VXLAN_OVERHEAD: usize = 14 + 20 + 8 + 8;

/// The tunnel endpoint every contender of a tunnel scenario gets, each in a
/// network namespace of its run: the address, MAC and state of the internal
/// port of bridge `bridge` (its own tap), and the remote endpoint as a static
/// neighbor. The route to the remote is the kernel's connected route of the
/// address, which both switches read from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelHost {
    /// The bridge whose own port is the endpoint (`br-phy`); its tap has the
    /// bridge's name.
    pub bridge: String,
    /// The endpoint's address with prefix length (`172.31.0.1/24`).
    pub addr: String,
    /// The tap's MAC, `xx:xx:xx:xx:xx:xx` (lower case, as `ip link` prints it).
    pub mac: String,
    /// The remote endpoint and its MAC.
    pub remote_ip: String,
    pub remote_mac: String,
}

impl TunnelHost {
    fn new() -> Self {
        TunnelHost {
            bridge: "br-phy".to_string(),
            addr: format!("{}/{TEP_PREFIX_LEN}", ip(TEP_LOCAL)),
            mac: mac_text(TEP_LOCAL_MAC),
            remote_ip: ip(TEP_REMOTE),
            remote_mac: mac_text(TEP_REMOTE_MAC),
        }
    }

    /// The `ip` commands (each after `ip -n NETNS`) that make the tap the
    /// endpoint once the switch has made it: its MAC (if `set_mac`: ferroswitch
    /// has no setting for it; OVS gets its bridge's `hwaddr`), its address, up.
    pub fn ip_commands(&self, set_mac: bool) -> Vec<Vec<String>> {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        let mut cmds = Vec::new();
        if set_mac {
            cmds.push(v(&[
                "link",
                "set",
                "dev",
                &self.bridge,
                "address",
                &self.mac,
            ]));
        }
        cmds.push(v(&["addr", "add", &self.addr, "dev", &self.bridge]));
        cmds.push(v(&["link", "set", "dev", &self.bridge, "up"]));
        cmds
    }

    /// ferroswitch's `ctl` commands: the remote endpoint as a static neighbor
    /// (as OVS's `tnl/neigh/set`).
    pub fn ferroswitch_ctl(&self) -> Vec<Vec<String>> {
        vec![vec![
            "neigh".to_string(),
            "set".to_string(),
            self.bridge.clone(),
            self.remote_ip.clone(),
            self.remote_mac.clone(),
        ]]
    }
}

/// The MAC in `ip -o link show` output (`link/ether xx:..`), if any.
pub fn link_mac(ip_link: &str) -> Option<String> {
    let mut words = ip_link.split_whitespace();
    words.find(|w| *w == "link/ether")?;
    words.next().map(str::to_string)
}

/// Internet checksum (RFC 1071) of `data`: the complement of the folded
/// ones'-complement sum of its 16-bit words.
fn inet_csum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The outer headers of a VXLAN packet.
#[derive(Clone, Copy, Debug)]
pub struct VxlanOuter {
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    pub ip_src: [u8; 4],
    pub ip_dst: [u8; 4],
    pub udp_src: u16,
    pub vni: u32,
}

/// `inner` (an Ethernet frame) in VXLAN over IPv4 (RFC 7348): outer Ethernet,
/// IPv4 (TTL 64, DF, identification 0, header checksum), UDP to 4789 with a
/// zero checksum (as VXLAN senders over IPv4 send by default, OVS's `csum=false`
/// and the Linux kernel's), VXLAN with the I flag and the VNI.
pub fn vxlan_frame(o: &VxlanOuter, inner: &[u8]) -> Vec<u8> {
    let udp_len = (8 + 8 + inner.len()) as u16;
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(VXLAN_OVERHEAD + inner.len());
    f.extend_from_slice(&o.eth_dst);
    f.extend_from_slice(&o.eth_src);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_at = f.len();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&o.ip_src);
    f.extend_from_slice(&o.ip_dst);
    let csum = inet_csum(&f[ip_at..ip_at + 20]);
    f[ip_at + 10..ip_at + 12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&o.udp_src.to_be_bytes());
    f.extend_from_slice(&VXLAN_PORT.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x08, 0, 0, 0]);
    f.extend_from_slice(&(o.vni << 8).to_be_bytes());
    f.extend_from_slice(inner);
    f
}

/// ferroswitch's `[[bridge]]` tables of `bridges`: the same bridges, ports
/// (OpenFlow numbers 1, 2, ... in order, types and options as OVS names them)
/// and flows as OVS gets. Each bridge keeps its default `priority=0
/// actions=NORMAL` besides (OVS's is deleted), as in `1flow`: the scenario's
/// traffic never reaches it.
pub fn fs_bridges_toml(bridges: &[BridgeSetup]) -> String {
    let mut out = String::new();
    for b in bridges {
        out.push_str(&format!("[[bridge]]\nname = {}\n", toml_str(&b.name)));
        out.push_str(&toml_flows(&b.flows));
        for (i, p) in b.ports.iter().enumerate() {
            out.push_str(&format!(
                "  [[bridge.port]]\n  name = {}\n  ofport = {}\n",
                toml_str(&p.name),
                i + 1
            ));
            if p.kind != "dpdk" {
                out.push_str(&format!("  type = {}\n", toml_str(&p.kind)));
            }
            let opts: Vec<String> = p
                .options
                .iter()
                .map(|(k, v)| format!("{k} = {}", toml_str(v)))
                .collect();
            out.push_str(&format!("  options = {{ {} }}\n", opts.join(", ")));
        }
    }
    out
}

/// Which way the tunnel scenarios go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelDir {
    Encap,
    Decap,
}

/// The VXLAN scenarios, on both contenders in a namespace of each run, with
/// the endpoint of [`TunnelHost`] on br-phy's own port and tunnel port
/// `vxlan0` (`remote_ip=172.31.0.2`, `key=100`) on br-int:
///
/// - `vxlan-encap`: 64-byte frames of one UDP flow into br-int's `src`, rule
///   `in_port=src actions=output:vxlan0`: pushed (outer headers from the
///   route through br-phy and the static neighbor), then through br-phy as
///   if from its own port, rule `in_port=LOCAL actions=output:sink`, out of
///   `sink` (net_null): 114-byte packets.
/// - `vxlan-decap`: those VXLAN packets (from the remote endpoint to
///   br-phy's MAC and address) into br-phy's `src`, rule `in_port=src
///   actions=output:LOCAL`: popped at br-phy's own port, the endpoint; the
///   inner frames enter br-int on `vxlan0`, rule `in_port=vxlan0
///   actions=output:sink`, out of `sink`.
///
/// testpmd io-forwards the same pcap between the same vdevs.
pub fn vxlan(dir: &Path, way: TunnelDir) -> Result<Scenario> {
    let flow = trafgen::flows(1)[0];
    let inner: Vec<Vec<u8>> = (0..ONE_FLOW_FRAMES)
        .map(|i| trafgen::udp_frame(&flow, FRAME_LEN, i as u8))
        .collect();
    let (name, frames) = match way {
        TunnelDir::Encap => ("vxlan-encap", inner),
        TunnelDir::Decap => ("vxlan-decap", decap_frames(&inner)),
    };
    let src = write_pcap(dir, name, &frames)?;
    let host = TunnelHost::new();
    let vxlan0 = Port {
        name: "vxlan0".to_string(),
        kind: "vxlan".to_string(),
        options: vec![
            ("remote_ip".to_string(), host.remote_ip.clone()),
            ("key".to_string(), VNI.to_string()),
        ],
    };
    let (br_int, mut br_phy) = match way {
        TunnelDir::Encap => (
            BridgeSetup::new(
                "br-int",
                vec![Port::dpdk("src", &src), vxlan0],
                vec!["in_port=src actions=output:vxlan0".to_string()],
            ),
            BridgeSetup::new(
                &host.bridge,
                vec![Port::dpdk("sink", SINK)],
                vec!["in_port=LOCAL actions=output:sink".to_string()],
            ),
        ),
        TunnelDir::Decap => (
            BridgeSetup::new(
                "br-int",
                vec![vxlan0, Port::dpdk("sink", SINK)],
                vec!["in_port=vxlan0 actions=output:sink".to_string()],
            ),
            BridgeSetup::new(
                &host.bridge,
                vec![Port::dpdk("src", &src)],
                vec!["in_port=src actions=output:LOCAL".to_string()],
            ),
        ),
    };
    br_phy.hwaddr = Some(host.mac.clone());
    let bridges = vec![br_int, br_phy];
    Ok(Scenario {
        name,
        fs_bridges: Some(fs_bridges_toml(&bridges)),
        ovs: Setup {
            bridges,
            other_config: Vec::new(),
            count_port: "sink".to_string(),
            flows_first: false,
            tunnel: Some(host.clone()),
        },
        src,
        sink: SINK.to_string(),
        fs_bridge_keys: String::new(),
        fs_bridge_tables: String::new(),
        mbufs: None,
        // Encap: one megaflow (push); decap: the outer packet's (pop) and the
        // inner one's after it.
        megaflows: Some(match way {
            TunnelDir::Encap => 1,
            TunnelDir::Decap => 2,
        }),
        fdb: Vec::new(),
        fs_ports: None,
        guests: None,
        tunnel: Some(host),
        show_dp_flows: 4,
    })
}

/// Decap's traffic: each inner frame as the remote endpoint sends it to
/// br-phy's endpoint in VNI 100.
fn decap_frames(inner: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let outer = VxlanOuter {
        eth_src: TEP_REMOTE_MAC,
        eth_dst: TEP_LOCAL_MAC,
        ip_src: TEP_REMOTE,
        ip_dst: TEP_LOCAL,
        udp_src: DECAP_UDP_SRC,
        vni: VNI,
    };
    inner.iter().map(|f| vxlan_frame(&outer, f)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::ofproto::syntax::{parse_flows, PortMap};

    #[test]
    fn five_tuples_are_distinct_and_rules_parse() {
        let flows = five_tuples(100_000);
        let set: std::collections::HashSet<_> = flows
            .iter()
            .map(|f| (f.nw_src, f.nw_dst, f.tp_src, f.tp_dst))
            .collect();
        assert_eq!(set.len(), flows.len());
        let rules = five_tuple_rules(&flows[..100]);
        let fms = parse_flows(&rules.join("\n"), &PortMap::new()).unwrap();
        assert_eq!(fms.len(), 101);
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_str(r#"a"b\c"#), r#""a\"b\\c""#);
        let t = toml_flows(&["in_port=src,actions=output:sink".to_string()]);
        assert_eq!(
            t,
            "  flows = [\n    \"in_port=src,actions=output:sink\",\n  ]\n"
        );
    }

    #[test]
    fn normal_scenarios_send_known_unicasts_from_distinct_sources() {
        let dir = std::env::temp_dir().join(format!("fs-perf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sc = normal(&dir, "normal-test", 1000, 10).unwrap();
        let pcap_path = dir.join("normal-test.pcap");
        let frames = pcap::read(&std::fs::read(&pcap_path).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(frames.len(), 1000);
        let sources: std::collections::HashSet<Vec<u8>> =
            frames.iter().map(|f| f.data[6..12].to_vec()).collect();
        assert_eq!(sources.len(), 1000);
        let statics: std::collections::HashSet<String> =
            sc.fdb.iter().map(|(_, _, m)| m.clone()).collect();
        assert!(sc.fdb.iter().all(|(p, v, _)| p == "sink" && *v == 0));
        for f in &frames {
            let dst: [u8; 6] = f.data[0..6].try_into().unwrap();
            assert!(statics.contains(&mac_text(dst)), "{:?} is static", dst);
        }
        assert_eq!(sc.megaflows, Some(1000));
        assert_eq!(sc.ovs.bridges[0].fdb, sc.fdb);
        assert_eq!(sc.ovs.bridges[0].flows, ["priority=0 actions=NORMAL"]);
    }

    /// A directory of one test, removed when dropped.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> TestDir {
            let d = std::env::temp_dir().join(format!("fs-perf-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            TestDir(d)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn pcap_frames(dir: &Path, name: &str) -> Vec<Vec<u8>> {
        let bytes = std::fs::read(dir.join(format!("{name}.pcap"))).unwrap();
        pcap::read(&bytes)
            .unwrap()
            .into_iter()
            .map(|r| r.data)
            .collect()
    }

    /// The inner frames both tunnel scenarios carry: 1flow's.
    fn inner_frames() -> Vec<Vec<u8>> {
        let flow = trafgen::flows(1)[0];
        (0..64)
            .map(|i| trafgen::udp_frame(&flow, 64, i as u8))
            .collect()
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn vxlan_encap_sends_the_inner_frames() {
        let dir = TestDir::new("encap");
        let sc = vxlan(&dir.0, TunnelDir::Encap).unwrap();
        assert_eq!(sc.name, "vxlan-encap");
        assert_eq!(pcap_frames(&dir.0, "vxlan-encap"), inner_frames());
    }

    #[test]
    fn vxlan_decap_frames_are_byte_exact_with_valid_checksums() {
        let dir = TestDir::new("decap");
        let sc = vxlan(&dir.0, TunnelDir::Decap).unwrap();
        assert_eq!(sc.name, "vxlan-decap");
        let frames = pcap_frames(&dir.0, "vxlan-decap");
        let inner = inner_frames();
        assert_eq!(frames.len(), 64);
        // Outer headers, written out: to br-phy's MAC from the remote's;
        // IPv4 length 100, DF, TTL 64, UDP, checksum 0xe247, 172.31.0.2 ->
        // 172.31.0.1; UDP 50000 -> 4789, length 80, no checksum; VXLAN I
        // flag, VNI 100.
        let outer = hex("02fe00000001 02fe00000002 0800
             4500 0064 0000 4000 4011 e247 ac1f0002 ac1f0001
             c350 12b5 0050 0000
             08000000 00006400");
        for (f, i) in frames.iter().zip(&inner) {
            assert_eq!(f.len(), 114);
            assert_eq!(&f[..50], &outer[..]);
            assert_eq!(&f[50..], &i[..]);
            // An independent decoder agrees: outer IPv4 checksum, no UDP
            // checksum, the inner frame's checksums.
            let p = etherparse::SlicedPacket::from_ethernet(f).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
                panic!("outer not IPv4")
            };
            let h = ip.header().to_header();
            assert_eq!(h.calc_header_checksum(), h.header_checksum);
            assert!(h.dont_fragment);
            assert_eq!((h.source, h.destination), (TEP_REMOTE, TEP_LOCAL));
            let Some(etherparse::TransportSlice::Udp(udp)) = p.transport else {
                panic!("outer not UDP")
            };
            assert_eq!(udp.destination_port(), 4789);
            assert_eq!(udp.checksum(), 0);
            assert_eq!(usize::from(udp.length()), 8 + 8 + 64);
            let vx = udp.payload();
            assert_eq!(vx[0], 0x08);
            assert_eq!(u32::from_be_bytes(vx[4..8].try_into().unwrap()) >> 8, VNI);
            let q = etherparse::SlicedPacket::from_ethernet(&vx[8..]).unwrap();
            let Some(etherparse::NetSlice::Ipv4(iip)) = q.net else {
                panic!("inner not IPv4")
            };
            let ih = iip.header().to_header();
            assert_eq!(ih.calc_header_checksum(), ih.header_checksum);
            let Some(etherparse::TransportSlice::Udp(iudp)) = q.transport else {
                panic!("inner not UDP")
            };
            let want = iudp
                .to_header()
                .calc_checksum_ipv4(&ih, iudp.payload())
                .unwrap();
            assert_eq!(iudp.checksum(), want);
        }
        // The switch's own encapsulation of the reverse direction builds the
        // same outer headers, less the per-packet fields (IPv4 length and
        // checksum, UDP source port and length).
        let spec = pipeline::tunnel::TunnelSpec {
            kind: pipeline::tunnel::TunnelKind::Vxlan,
            eth_src: TEP_REMOTE_MAC,
            eth_dst: TEP_LOCAL_MAC,
            ip_src: u32::from_be_bytes(TEP_REMOTE),
            ip_dst: u32::from_be_bytes(TEP_LOCAL),
            tos: 0,
            ttl: 64,
            df: true,
            dst_port: 4789,
            key: Some(u64::from(VNI)),
            csum: false,
            geneve_opts: Vec::new(),
        };
        let hdr = pipeline::tunnel::TunnelHeader::new(spec, 0, 0).unwrap();
        let mut templ = outer.clone();
        for at in [16, 17, 24, 25, 34, 35, 38, 39] {
            templ[at] = 0;
        }
        assert_eq!(hdr.bytes(), &templ[..]);
    }

    #[test]
    fn vxlan_scenarios_configure_ovs_as_native_tunneling_needs() {
        let dir = TestDir::new("ovs");
        let encap = vxlan(&dir.0, TunnelDir::Encap).unwrap();
        let src = format!(
            "net_pcap0,rx_pcap={},infinite_rx=1",
            dir.0.join("vxlan-encap.pcap").display()
        );
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            crate::ovs::vsctl_build_args(&encap.ovs.bridges, true, true),
            s(&[
                "add-br",
                "br-int",
                "--",
                "set",
                "Bridge",
                "br-int",
                "datapath_type=netdev",
                "--",
                "add-br",
                "br-phy",
                "--",
                "set",
                "Bridge",
                "br-phy",
                "datapath_type=netdev",
                "other_config:hwaddr=\"02:fe:00:00:00:01\"",
                "--",
                "add-port",
                "br-int",
                "src",
                "--",
                "set",
                "Interface",
                "src",
                "type=dpdk",
                "ofport_request=1",
                &format!("options:dpdk-devargs={src}"),
                "--",
                "add-port",
                "br-int",
                "vxlan0",
                "--",
                "set",
                "Interface",
                "vxlan0",
                "type=vxlan",
                "ofport_request=2",
                "options:remote_ip=172.31.0.2",
                "options:key=100",
                "--",
                "add-port",
                "br-phy",
                "sink",
                "--",
                "set",
                "Interface",
                "sink",
                "type=dpdk",
                "ofport_request=1",
                "options:dpdk-devargs=net_null0,no-rx=1",
            ])
        );
        assert_eq!(
            encap
                .ovs
                .bridges
                .iter()
                .map(|b| b.flows.clone())
                .collect::<Vec<_>>(),
            [
                s(&["in_port=src actions=output:vxlan0"]),
                s(&["in_port=LOCAL actions=output:sink"])
            ]
        );
        let t = encap.ovs.tunnel.as_ref().unwrap();
        let (ip, appctl) = crate::ovs::tunnel_commands(t);
        assert_eq!(
            ip,
            [
                s(&["addr", "add", "172.31.0.1/24", "dev", "br-phy"]),
                s(&["link", "set", "dev", "br-phy", "up"])
            ]
        );
        assert_eq!(
            appctl,
            [s(&[
                "tnl/neigh/set",
                "br-phy",
                "172.31.0.2",
                "02:fe:00:00:00:02"
            ])]
        );
        assert_eq!(encap.ovs.count_port, "sink");
        assert_eq!(encap.tunnel.as_ref(), Some(t));

        let decap = vxlan(&dir.0, TunnelDir::Decap).unwrap();
        let ports = |b: &BridgeSetup| b.ports.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        let b = &decap.ovs.bridges;
        assert_eq!(
            (ports(&b[0]), ports(&b[1])),
            (s(&["vxlan0", "sink"]), s(&["src"]))
        );
        assert_eq!(b[0].flows, s(&["in_port=vxlan0 actions=output:sink"]));
        assert_eq!(b[1].flows, s(&["in_port=src actions=output:LOCAL"]));
        assert_eq!(b[1].hwaddr.as_deref(), Some("02:fe:00:00:00:01"));
        assert_eq!(decap.megaflows, Some(2));
    }

    #[test]
    fn ferroswitch_gets_the_same_endpoint_by_ip_and_ctl() {
        let t = TunnelHost::new();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            t.ip_commands(true),
            [
                s(&[
                    "link",
                    "set",
                    "dev",
                    "br-phy",
                    "address",
                    "02:fe:00:00:00:01"
                ]),
                s(&["addr", "add", "172.31.0.1/24", "dev", "br-phy"]),
                s(&["link", "set", "dev", "br-phy", "up"])
            ]
        );
        assert_eq!(
            t.ferroswitch_ctl(),
            [s(&[
                "neigh",
                "set",
                "br-phy",
                "172.31.0.2",
                "02:fe:00:00:00:02"
            ])]
        );
    }

    #[test]
    fn link_mac_reads_ip_link_output() {
        let line = "4: br-phy: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state \
                    UNKNOWN mode DEFAULT group default qlen 1000\\    link/ether 02:fe:00:00:00:01 \
                    brd ff:ff:ff:ff:ff:ff";
        assert_eq!(link_mac(line).as_deref(), Some("02:fe:00:00:00:01"));
        assert_eq!(
            link_mac("1: lo: <LOOPBACK> link/loopback 00:00:00:00:00:00"),
            None
        );
    }

    #[test]
    fn mbufs_cover_the_pcap() {
        assert_eq!(mbufs_for(10_000), 32_767);
        assert_eq!(mbufs_for(100_000), 131_071);
    }
}
