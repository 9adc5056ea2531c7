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
