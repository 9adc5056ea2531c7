//! Real hosts on the switch: network namespaces joined to a bridge by veth pairs.
//!
//! Each test builds its own hosts: a namespace per host with one end of a veth
//! pair (an IP, TX checksum offload off: af_packet would otherwise carry the
//! partial checksums the kernel leaves to the NIC), the other end in the root
//! namespace, attached to the bridge as a `type = "dpdk"` port over
//! `net_af_packetN,iface=<veth>`. The real `ferroswitch` binary runs with a config
//! the test writes (no hugepages, its own `--file-prefix`), and the hosts talk
//! with the kernel's own tools (`ping`, TCP through `python3`).
//!
//! Needs root, `ip`, `ethtool`, `ping` and `python3` (`scripts/setup.sh`
//! installs them). Names carry the test process id and a letter per test, and
//! [`Hosts`] deletes namespaces, veths and the daemon when dropped, also when a
//! test fails. The tests take turns ([`serial`]): each daemon busy-polls a CPU,
//! and this machine has two.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::netns::*;

#[test]
fn two_hosts_ping_and_tcp_through_normal() {
    let _turn = serial();
    let mut h = Hosts::new('a', 2);
    h.start(&[]);
    let (a, b) = (&h.hosts[0], &h.hosts[1]);
    wait_reachable(a, &b.ip, 10);
    assert_eq!(a.ping(&b.ip, 5), 5, "{} -> {}", a.ns, b.ns);
    assert_eq!(b.ping(&a.ip, 5), 5, "{} -> {}", b.ns, a.ns);

    let len = 600_000;
    let (n, server_sum, client_sum) = tcp_transfer(b, a, len);
    assert_eq!(n, len, "bytes received");
    assert_eq!(server_sum, client_sum, "content received");

    // NORMAL learned each host's MAC on its port (OpenFlow ports 1 and 2).
    let fdb = h.fdb();
    for (port, host) in [("1", a), ("2", b)] {
        let entry = (port.to_string(), 0, host.mac());
        assert!(fdb.contains(&entry), "{entry:?} not in {fdb:?}");
    }
    let text = h.ctl_ok(&["fdb-show", &h.bridge]);
    assert!(
        text.contains(&format!("    1     0  {}", a.mac())),
        "{text}"
    );
    assert!(
        text.contains(&format!("    2     0  {}", b.mac())),
        "{text}"
    );
    h.stop();
}

#[test]
fn access_vlans_isolate_hosts() {
    let _turn = serial();
    let mut h = Hosts::new('b', 4);
    // Hosts 0 and 1 on VLAN 10, hosts 2 and 3 on VLAN 20; one IP subnet, so only
    // the VLANs keep them apart.
    h.start(&["  tag = 10", "  tag = 10", "  tag = 20", "  tag = 20"]);
    let hs = &h.hosts;
    wait_reachable(&hs[0], &hs[1].ip, 10);
    wait_reachable(&hs[2], &hs[3].ip, 10);
    assert_eq!(hs[0].ping(&hs[1].ip, 3), 3);
    assert_eq!(hs[1].ping(&hs[0].ip, 3), 3);
    assert_eq!(hs[2].ping(&hs[3].ip, 3), 3);
    assert_eq!(hs[3].ping(&hs[2].ip, 3), 3);

    // Across VLANs: nothing, neither way (all at once: each waits out its timeout).
    let pairs = [(0, 2), (0, 3), (1, 2), (3, 0), (2, 1)];
    let got: Vec<u32> = std::thread::scope(|s| {
        let jobs: Vec<_> = pairs
            .iter()
            .map(|&(f, t)| s.spawn(move || hs[f].ping(&hs[t].ip, 2)))
            .collect();
        jobs.into_iter().map(|j| j.join().expect("ping")).collect()
    });
    for (&(f, t), n) in pairs.iter().zip(&got) {
        assert_eq!(*n, 0, "{} reached {} across VLANs", hs[f].ns, hs[t].ns);
    }
    // Their ARP requests never reached the other VLAN: no neighbour entry for
    // a host of VLAN 10 in a host of VLAN 20.
    for (at, of) in [(2, 0), (2, 1), (3, 0)] {
        let out = hs[at].exec(&["ip", "neigh", "show", &hs[of].ip]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("lladdr"),
            "{} learned {}: {text}",
            hs[at].ns,
            hs[of].ns
        );
    }
    // The MAC table has each host in its own VLAN only.
    let fdb = h.fdb();
    for (i, vlan) in [(0usize, 10u64), (1, 10), (2, 20), (3, 20)] {
        let mac = hs[i].mac();
        let entries: Vec<_> = fdb.iter().filter(|e| e.2 == mac).collect();
        assert_eq!(
            entries,
            [&((i + 1).to_string(), vlan, mac.clone())],
            "host {i} in {fdb:?}"
        );
    }
    h.stop();
}

#[test]
fn host_ip_on_the_bridge_internal_port() {
    let _turn = serial();
    let mut h = Hosts::new('c', 1);
    h.start(&[]);
    let br = h.bridge.clone();

    // The bridge's own port: a tap of its name in the host, shown as OVS shows
    // it, down until the host brings it up.
    let show = h.ctl_ok(&["show"]);
    let local =
        format!("        Port {br}\n            Interface {br}\n                type: internal\n");
    assert!(
        show.contains(&format!("{local}                link_state: down\n")),
        "{show}"
    );
    assert!(
        Path::new("/sys/class/net").join(&br).exists(),
        "no tap {br}"
    );

    // Scenario 4 of the seed: the host's own IP on the bridge's internal port.
    let ip = format!("{}.254", subnet('c'));
    must(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &br]);
    must(&["ip", "link", "set", &br, "up"]);
    let show = h.ctl_ok(&["show"]);
    assert!(show.contains(&local), "{show}");
    assert!(
        !show.contains(&format!("{local}                link_state: down\n")),
        "{show}"
    );

    let ns = &h.hosts[0];
    wait_reachable(ns, &ip, 10);
    assert_eq!(ns.ping(&ip, 5), 5, "namespace -> host");
    let out = run(&["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", &ns.ip]);
    assert_eq!(replies(&out), 3, "host -> namespace");

    // NORMAL learned the host's tap MAC on LOCAL and the namespace on port 1.
    let tap_mac = std::fs::read_to_string(format!("/sys/class/net/{br}/address"))
        .expect("tap address")
        .trim()
        .to_string();
    let fdb = h.fdb();
    assert!(fdb.contains(&("LOCAL".to_string(), 0, tap_mac)), "{fdb:?}");
    assert!(fdb.contains(&("1".to_string(), 0, ns.mac())), "{fdb:?}");

    // Stopping the switch removes its tap (and the host's route with it).
    h.stop();
    assert!(
        !Path::new("/sys/class/net").join(&br).exists(),
        "tap {br} left"
    );
}

/// The bridge's `ovs-vsctl show` block in `ctl show`'s output (up to the next
/// bridge or the version line).
fn bridge_block(show: &str, bridge: &str) -> String {
    let start = format!("    Bridge {bridge}\n");
    let Some(at) = show.find(&start) else {
        return String::new();
    };
    show[at..]
        .lines()
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with("        "))
        .map(|(_, l)| format!("{l}\n"))
        .collect()
}

#[test]
fn bridges_and_ports_built_and_changed_at_runtime() {
    let _turn = serial();
    let mut h = Hosts::new('r', 3);
    // No bridge at all: everything comes from ctl, as with ovs-vsctl.
    let cfg = h.base_config();
    h.launch(&cfg);
    let br = h.bridge.clone();
    assert!(!h.ctl_ok(&["show"]).contains("Bridge"));

    h.ctl_ok(&["add-br", &br]);
    let err = h.ctl(&["add-br", &br]);
    assert!(!err.status.success());
    assert_eq!(
        String::from_utf8_lossy(&err.stderr),
        format!("ferroswitch ctl: add-br: {br}: a bridge of that name already exists\n")
    );
    let devargs: Vec<String> = h
        .host_veths
        .iter()
        .enumerate()
        .map(|(i, hv)| format!("options:dpdk-devargs=net_af_packet{i},iface={hv}"))
        .collect();
    // Hosts 0 and 1 on VLAN 10, host 2 on VLAN 20.
    for (i, tag) in [(0, 10), (1, 10), (2, 20)] {
        h.ctl_ok(&[
            "add-port",
            &br,
            &format!("p{i}"),
            "type=dpdk",
            &devargs[i],
            &format!("tag={tag}"),
        ]);
    }
    let err = h.ctl(&["add-br"]);
    assert_eq!(
        String::from_utf8_lossy(&err.stderr),
        "ferroswitch ctl: add-br: wrong arguments (usage: add-br BRIDGE)\n"
    );
    let err = h.ctl(&["add-port", "nosuchbr", "px", &devargs[0]]);
    assert_eq!(
        String::from_utf8_lossy(&err.stderr),
        "ferroswitch ctl: add-port: nosuchbr: no such bridge\n"
    );
    let err = h.ctl(&["add-port", &br, "px", &devargs[0]]);
    assert!(
        String::from_utf8_lossy(&err.stderr).contains(
            "options.dpdk-devargs: device \"net_af_packet0\" is already used by port \"p0\""
        ),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );
    let port = |i: usize, tag: u16| {
        format!(
            "        Port p{i}\n            tag: {tag}\n            Interface p{i}\n                type: dpdk\n                options: {{dpdk-devargs=\"net_af_packet{i},iface={}\"}}\n",
            h.host_veths[i]
        )
    };
    let local = format!(
        "        Port {br}\n            Interface {br}\n                type: internal\n                link_state: down\n"
    );
    assert_eq!(
        bridge_block(&h.ctl_ok(&["show"]), &br),
        format!(
            // Ports sorted by name, as ovs-vsctl sorts them.
            "    Bridge {br}\n        datapath_type: netdev\n{local}{}{}{}",
            port(0, 10),
            port(1, 10),
            port(2, 20)
        )
    );

    let hs = &h.hosts;
    wait_reachable(&hs[0], &hs[1].ip, 10);
    assert_eq!(hs[0].ping(&hs[2].ip, 2), 0, "VLAN 20 is apart");

    // Host 2 joins VLAN 10.
    h.ctl_ok(&["set-port", "p2", "tag=10"]);
    wait_reachable(&hs[0], &hs[2].ip, 10);

    // Removing and adding back p1 while host 0 pings host 2: not one reply lost.
    let pings = std::thread::scope(|s| {
        let job =
            s.spawn(|| hs[0].exec(&["ping", "-n", "-c", "40", "-i", "0.05", "-W", "1", &hs[2].ip]));
        std::thread::sleep(Duration::from_millis(300));
        h.ctl_ok(&["del-port", &br, "p1"]);
        let show = h.ctl_ok(&["show"]);
        assert!(!show.contains("Port p1\n"), "{show}");
        assert!(!h.ctl_ok(&["port-stats"]).contains("\"p1\""));
        assert_eq!(hs[0].ping(&hs[1].ip, 2), 0, "p1 is gone");
        h.ctl_ok(&["add-port", &br, "p1", &devargs[1], "tag=10"]);
        replies(&job.join().expect("ping"))
    });
    if pings != 40 {
        // What the datapath and MAC learning made of it, for the failure's reader.
        for c in [
            &["pmd-stats-show"][..],
            &["dump-dp-flows"],
            &["fdb-show", &br],
        ] {
            eprintln!("ctl {c:?}:\n{}", String::from_utf8_lossy(&h.ctl(c).stdout));
        }
    }
    assert_eq!(pings, 40, "traffic of other ports undisturbed");
    wait_reachable(&hs[0], &hs[1].ip, 10);
    let err = h.ctl(&["del-port", "nosuch"]);
    assert_eq!(
        String::from_utf8_lossy(&err.stderr),
        "ferroswitch ctl: del-port: nosuch: no such port\n"
    );

    // The bridge goes with its ports and its tap.
    assert!(Path::new("/sys/class/net").join(&br).exists());
    h.ctl_ok(&["del-br", &br]);
    assert!(!h.ctl_ok(&["show"]).contains("Bridge"));
    assert!(
        !Path::new("/sys/class/net").join(&br).exists(),
        "tap {br} left"
    );
    assert_eq!(h.hosts[0].ping(&h.hosts[1].ip, 1), 0);
    h.stop();
}

/// Runs `ip` inside `host`'s namespace; must succeed.
fn ns_must(host: &Host, args: &[&str]) {
    let mut v = vec!["ip", "netns", "exec", host.ns.as_str()];
    v.extend_from_slice(args);
    must(&v);
}

/// A tagged ARP exchange from a raw socket on `dev` (this kernel has no 802.1Q
/// module, so no VLAN subinterfaces: the script tags and reads tags itself).
/// For each (VID, target IP) it broadcasts a who-has tagged with VID from
/// `src_ip` and prints `VID REPLY-VID MAC` for the reply, or `VID none` after a
/// second. Received tags are read from the frame or, when the kernel took the
/// tag off, from PACKET_AUXDATA.
const TAGGED_ARP: &str = r#"
import socket, struct, sys, time
dev, src_ip = sys.argv[1], sys.argv[2]
asks = [(int(v), ip) for v, ip in (a.split('/') for a in sys.argv[3:])]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((dev, 0))
s.setsockopt(263, 8, 1)  # SOL_PACKET, PACKET_AUXDATA
mac = s.getsockname()[4]
for vid, ip in asks:
    arp = struct.pack('!HHBBH6s4s6s4s', 1, 0x0800, 6, 4, 1, mac,
                      socket.inet_aton(src_ip), b'\0' * 6, socket.inet_aton(ip))
    frame = b'\xff' * 6 + mac + struct.pack('!HH', 0x8100, vid) + b'\x08\x06' + arp
    s.send(frame)
    deadline, found = time.time() + 1.0, None
    s.settimeout(0.1)
    while time.time() < deadline and found is None:
        try:
            data, anc, _, _ = s.recvmsg(2048, socket.CMSG_SPACE(20))
        except socket.timeout:
            continue
        tag = None
        for level, kind, cdata in anc:
            if level == 263 and kind == 8 and len(cdata) >= 20:
                status, _, _, _, _, tci, _ = struct.unpack('IIIHHHH', cdata[:20])
                if status & 0x10:  # TP_STATUS_VLAN_VALID
                    tag = tci & 0xfff
        body = data[12:]
        if body[:2] == b'\x81\x00':
            tag = struct.unpack('!H', body[2:4])[0] & 0xfff
            body = body[4:]
        if body[:2] != b'\x08\x06' or len(body) < 30:
            continue
        op = struct.unpack('!H', body[8:10])[0]
        if op == 2 and body[16:20] == socket.inet_aton(ip) and data[:6] == mac:
            found = (tag, body[10:16].hex(':'))
    print(vid, 'none' if found is None else '%s %s' % found, flush=True)
"#;

#[test]
fn a_trunk_carries_both_vlans_tagged() {
    let _turn = serial();
    let mut h = Hosts::new('t', 3);
    // Host 0 on VLAN 10, host 1 on VLAN 20, host 2 a trunk of both.
    h.start(&["  tag = 10", "  tag = 20", "  trunks = [10, 20]"]);
    let hs = &h.hosts;
    let trunk = &hs[2];
    let ask = |asks: &[String]| -> String {
        let mut args = vec!["python3", "-c", TAGGED_ARP, &trunk.dev, &trunk.ip];
        args.extend(asks.iter().map(String::as_str));
        let out = trunk.exec(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (ip0, ip1) = (&hs[0].ip, &hs[1].ip);
    // The first exchanges may meet the upcalls: ask until VLAN 10 answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ask(&[format!("10/{ip0}")]).contains(&hs[0].mac()) {
        assert!(Instant::now() < deadline, "no tagged reply on VLAN 10");
    }
    // Each VLAN's host answers on its VLAN, tagged with it; across, nothing.
    assert_eq!(
        ask(&[
            format!("10/{ip0}"),
            format!("20/{ip1}"),
            format!("10/{ip1}"),
            format!("20/{ip0}"),
        ]),
        format!(
            "10 10 {}\n20 20 {}\n10 none\n20 none\n",
            hs[0].mac(),
            hs[1].mac()
        )
    );
    // The trunk host's MAC is in both VLANs, on the trunk port (3); the access
    // hosts each in their own.
    let fdb = h.fdb();
    let mac = trunk.mac();
    for vlan in [10, 20] {
        assert!(
            fdb.contains(&("3".to_string(), vlan, mac.clone())),
            "{fdb:?}"
        );
    }
    assert!(fdb.contains(&("1".to_string(), 10, hs[0].mac())), "{fdb:?}");
    assert!(fdb.contains(&("2".to_string(), 20, hs[1].mac())), "{fdb:?}");
    h.stop();
}

#[test]
fn a_mac_that_moves_is_followed() {
    let _turn = serial();
    let mut h = Hosts::new('m', 3);
    h.start(&[]);
    let hs = &h.hosts;
    wait_reachable(&hs[0], &hs[1].ip, 10);
    let moved_mac = hs[0].mac();
    let entry = |port: &str| (port.to_string(), 0, moved_mac.clone());
    assert!(h.fdb().contains(&entry("1")));

    // Host 0's MAC and IP move to host 2's wire (port 3), as a VM migrating.
    ns_must(&hs[0], &["ip", "link", "set", &hs[0].dev, "down"]);
    ns_must(
        &hs[2],
        &[
            "ip",
            "addr",
            "del",
            &format!("{}/24", hs[2].ip),
            "dev",
            &hs[2].dev,
        ],
    );
    ns_must(
        &hs[2],
        &["ip", "link", "set", &hs[2].dev, "address", &moved_mac],
    );
    ns_must(
        &hs[2],
        &[
            "ip",
            "addr",
            "add",
            &format!("{}/24", hs[0].ip),
            "dev",
            &hs[2].dev,
        ],
    );
    // The moved host speaks first (as a migrated VM's gratuitous ARP would).
    wait_reachable(&hs[2], &hs[1].ip, 10);
    let fdb = h.fdb();
    assert!(fdb.contains(&entry("3")), "{fdb:?}");
    assert!(!fdb.contains(&entry("1")), "{fdb:?}");
    // Host 1's unicast frames to that MAC now go to port 3.
    assert_eq!(hs[1].ping(&hs[0].ip, 3), 3, "reached at its new port");
    h.stop();
}

#[test]
fn patch_ports_added_at_runtime_join_two_bridges() {
    let _turn = serial();
    let mut h = Hosts::new('p', 2);
    let cfg = h.base_config();
    h.launch(&cfg);
    let (a, b) = (format!("{}a", h.bridge), format!("{}b", h.bridge));
    h.ctl_ok(&["add-br", &a]);
    h.ctl_ok(&["add-br", &b]);
    for (i, br) in [(0, &a), (1, &b)] {
        h.ctl_ok(&[
            "add-port",
            br,
            &format!("p{i}"),
            &format!(
                "options:dpdk-devargs=net_af_packet{i},iface={}",
                h.host_veths[i]
            ),
        ]);
    }
    // One side of the pair: its peer does not exist yet, nothing crosses.
    h.ctl_ok(&["add-port", &a, "pa", "type=patch", "options:peer=pb"]);
    let hs = &h.hosts;
    assert_eq!(
        hs[0].ping(&hs[1].ip, 2),
        0,
        "half a patch pair joins nothing"
    );
    // A peer that does not name it back is refused.
    let err = h.ctl(&["add-port", &b, "pb", "type=patch", "options:peer=px"]);
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("options.peer"),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );
    h.ctl_ok(&["add-port", &b, "pb", "type=patch", "options:peer=pa"]);
    wait_reachable(&hs[0], &hs[1].ip, 10);
    assert_eq!(hs[1].ping(&hs[0].ip, 3), 3);
    let show = h.ctl_ok(&["show"]);
    assert!(
        show.contains(
            "        Port pa\n            Interface pa\n                type: patch\n                options: {peer=pb}\n"
        ),
        "{show}"
    );
    // Each bridge learned the far host behind its patch port.
    let fdb = h.ctl_ok(&["--json", "fdb-show", &a]);
    assert!(fdb.contains(&hs[1].mac()), "{fdb}");

    // Without one side, the bridges are apart again.
    h.ctl_ok(&["del-port", "pb"]);
    assert_eq!(hs[0].ping(&hs[1].ip, 2), 0, "the pair is broken");
    h.stop();
}
