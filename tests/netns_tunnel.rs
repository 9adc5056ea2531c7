//! Tunnels end to end with real hosts: ferroswitch "hypervisors", each in a
//! network namespace of its own (its tunnel endpoint address and routes would
//! otherwise meet the host's and each other's), with a "VM" namespace on
//! br-int (an af_packet veth) and the underlay NIC on br-phy (an af_packet
//! veth), the tunnel endpoint (tep) being br-phy's own port, the tap the
//! test gives an address with `ip addr add` + `ip link set up` in the
//! daemon's namespace, as a host does.
//!
//! - The remote end is the Linux kernel's own `vxlan` device in a namespace:
//!   the wire format is right, not merely self-consistent (ping, TCP, the
//!   neighbor learned from the switch's own ARP request, tcpdump's decoding
//!   of the underlay).
//! - Two ferroswitch hypervisors joined by a veth underlay, across VXLAN, GRE
//!   (with and without key) and Geneve. This machine's kernel has no
//!   `gretap` or `geneve` module, so for those two switch to switch is the
//!   interoperability available here (tcpdump still decodes them).
//! - Re-steering without a restart: the tep's address changes under running
//!   traffic; `neigh flush` and recovery by ARP.
//! - A VXLAN packet with an unknown VNI from the kernel peer: dropped, counted.
//! - Neutron's br-int + patch ports + br-tun with the fixture's flows on two
//!   hypervisors: flooding to the tunnel with the network's VNI, learning in
//!   table 20, unicast by the learned rule (seed 002).
//! - Path MTU: oversize inner packets dropped and counted (`tnl_push_mtu`),
//!   following the kernel MTU of the tep's port.
//!
//! Needs root, `ip`, `ethtool`, `ping`, `python3`, `tcpdump`
//! (`scripts/setup.sh`). Every namespace is removed and every daemon stopped
//! when its [`Hosts`] guard is dropped, also when a test fails; the tests
//! take turns ([`serial`]).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::*;

/// Runs `ARGS` in namespace `ns`; it must succeed. Its stdout.
fn nsx(ns: &str, args: &[&str]) -> String {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    must(&v)
}

/// Makes namespace `ns` (no IPv6 in it: no router solicitations or DAD on
/// the taps and veths, so what the test counts is only its own traffic) and
/// records it in `h` for removal.
fn add_ns(h: &mut Hosts, ns: &str) {
    let _ = run(&["ip", "netns", "del", ns]);
    must(&["ip", "netns", "add", ns]);
    h.hosts.push(Host {
        ns: ns.to_string(),
        dev: String::new(),
        ip: String::new(),
    });
    no_ipv6(ns);
    nsx(ns, &["ip", "link", "set", "lo", "up"]);
}

fn no_ipv6(ns: &str) {
    nsx(
        ns,
        &[
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
    );
}

/// A veth pair between two namespaces, both ends up, TX checksum offload
/// off (af_packet would otherwise carry partial checksums).
fn veth(ns_a: &str, a: &str, ns_b: &str, b: &str) {
    must(&[
        "ip", "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b,
    ]);
    for (ns, d) in [(ns_a, a), (ns_b, b)] {
        nsx(ns, &["ethtool", "-K", d, "tx", "off"]);
        nsx(ns, &["ip", "link", "set", d, "up"]);
    }
}

/// The switch's side of a veth: a NIC the switch owns, as if bound to DPDK.
/// Its kernel must not answer ARP on it for the tep's address (it would,
/// with the veth's MAC, racing the tep's own reply).
fn nic(ns: &str, dev: &str) {
    nsx(ns, &["ip", "link", "set", dev, "arp", "off"]);
}

fn mac_of(ns: &str, dev: &str) -> String {
    nsx(ns, &["cat", &format!("/sys/class/net/{dev}/address")])
        .trim()
        .to_string()
}

/// One hypervisor: a daemon in its own namespace, a VM namespace per
/// `vms` entry ((bridge, VM address/len, MTU)), each on its bridge's
/// af_packet port `vm`, and the underlay veth end `uplink` in the daemon's
/// namespace (made by the caller) on br-phy as port `eth0`.
struct Hypervisor {
    h: Hosts,
    /// The daemon's namespace.
    sw: String,
    /// The VMs, in the order given.
    vms: Vec<Host>,
}

impl Hypervisor {
    /// Namespaces and VM veths; the daemon is not started yet.
    fn new(letter: char, vms: &[(&str, &str, u32)]) -> Hypervisor {
        let mut h = Hosts::new(letter, 0);
        h.use_daemon_namespace();
        let sw = h.daemon_ns.clone().expect("daemon namespace");
        no_ipv6(&sw);
        let mut hosts = Vec::new();
        for (i, (_, cidr, mtu)) in vms.iter().enumerate() {
            let ns = format!("{}-vm{i}", h.prefix);
            add_ns(&mut h, &ns);
            let dev = format!("{}v{i}", h.prefix);
            veth(&sw, &format!("{}w{i}", h.prefix), &ns, &dev);
            nic(&sw, &format!("{}w{i}", h.prefix));
            nsx(&ns, &["ip", "link", "set", &dev, "mtu", &mtu.to_string()]);
            nsx(&ns, &["ip", "addr", "add", cidr, "dev", &dev]);
            hosts.push(Host {
                ns,
                dev,
                ip: cidr.split('/').next().unwrap_or_default().to_string(),
            });
        }
        Hypervisor { h, sw, vms: hosts }
    }

    /// Starts the daemon: bridge `vms[i].0` with the VM's port `vm` and the
    /// TOML of `extra[bridge]` (tunnel ports, flows), then br-phy with
    /// `uplink` as `eth0`; `pmd` is the `[pmd]` table.
    fn start(
        &mut self,
        vms: &[(&str, &str, u32)],
        extra: &[(&str, &str)],
        uplink: &str,
        pmd: &str,
    ) {
        self.start_with(vms, extra, uplink, pmd, "");
    }

    /// [`Hypervisor::start`], with `vm_keys` (`  tag = 1\n`) added to each
    /// VM's port table.
    fn start_with(
        &mut self,
        vms: &[(&str, &str, u32)],
        extra: &[(&str, &str)],
        uplink: &str,
        pmd: &str,
        vm_keys: &str,
    ) {
        self.start_on(vms, extra, uplink, None, pmd, vm_keys);
    }

    /// [`Hypervisor::start_with`], br-phy's uplink port being the TOML
    /// table `uplink_port` (when given) instead of `uplink`'s af_packet.
    fn start_on(
        &mut self,
        vms: &[(&str, &str, u32)],
        extra: &[(&str, &str)],
        uplink: &str,
        uplink_port: Option<&str>,
        pmd: &str,
        vm_keys: &str,
    ) {
        let mut cfg = self.h.base_config();
        cfg.push_str(pmd);
        let mut bridges: Vec<&str> = vms.iter().map(|v| v.0).collect();
        for (b, _) in extra {
            if !bridges.contains(b) {
                bridges.push(b);
            }
        }
        let mut n = 0;
        for b in bridges {
            cfg.push_str(&format!("[[bridge]]\nname = \"{b}\"\n"));
            for (text_b, text) in extra {
                if *text_b == b {
                    cfg.push_str(text);
                }
            }
            for (i, _) in vms.iter().enumerate().filter(|(_, v)| v.0 == b) {
                cfg.push_str(&format!(
                    "  [[bridge.port]]\n  name = \"vm{i}\"\n  options = {{ dpdk-devargs = \"net_af_packet{n},iface={}w{i}\" }}\n{vm_keys}",
                    self.h.prefix
                ));
                n += 1;
            }
        }
        let eth0 = format!(
            "  [[bridge.port]]\n  name = \"eth0\"\n  options = {{ dpdk-devargs = \"net_af_packet{n},iface={uplink}\" }}\n"
        );
        cfg.push_str(&format!(
            "[[bridge]]\nname = \"br-phy\"\n{}",
            uplink_port.unwrap_or(&eth0)
        ));
        self.h.launch(&cfg);
    }

    /// Gives br-phy (the tep) `cidr` and brings it up; waits until the
    /// switch's route table has it.
    fn set_tep(&self, cidr: &str) {
        nsx(&self.sw, &["ip", "addr", "add", cidr, "dev", "br-phy"]);
        nsx(&self.sw, &["ip", "link", "set", "br-phy", "up"]);
        let ip = cidr.split('/').next().unwrap_or_default();
        let want = format!("Cached: {ip}/32 dev br-phy SRC {ip} local\n");
        wait_for(10, || self.h.ctl_ok(&["route", "show"]).contains(&want))
            .unwrap_or_else(|| panic!("{want} not in {}", self.h.ctl_ok(&["route", "show"])));
    }

    fn ctl(&self, args: &[&str]) -> String {
        self.h.ctl_ok(args)
    }
}

/// Two hypervisors ([`Hypervisor::new`] of each letter and VM list) whose
/// daemons' namespaces are joined by a veth underlay; with the underlay's
/// ends (`<prefix>u0`), for their br-phy.
fn joined(
    a: (char, &[(&str, &str, u32)]),
    b: (char, &[(&str, &str, u32)]),
) -> (Hypervisor, Hypervisor, String, String) {
    let (ha, hb) = (Hypervisor::new(a.0, a.1), Hypervisor::new(b.0, b.1));
    let (ua, ub) = (format!("{}u0", ha.h.prefix), format!("{}u0", hb.h.prefix));
    veth(&ha.sw, &ua, &hb.sw, &ub);
    nic(&ha.sw, &ua);
    nic(&hb.sw, &ub);
    (ha, hb, ua, ub)
}

/// Polls `f` every 100 ms for at most `secs` seconds: `Some(())` once true.
fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return Some(());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `tcpdump -w` on `dev` in `ns`, stopped (SIGINT) and read back with
/// `tcpdump -nn -r` by [`Capture::stop`].
struct Capture {
    child: Option<Child>,
    file: PathBuf,
}

impl Capture {
    fn start(ns: &str, dev: &str, file: PathBuf, filter: &[&str]) -> Capture {
        let _ = std::fs::remove_file(&file);
        let mut args = vec![
            "netns".to_string(),
            "exec".into(),
            ns.into(),
            "tcpdump".into(),
            "-U".into(),
            "--immediate-mode".into(),
            "-i".into(),
            dev.into(),
            "-w".into(),
            file.display().to_string(),
        ];
        args.extend(filter.iter().map(|s| s.to_string()));
        let mut child = Command::new("ip")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcpdump");
        // tcpdump says "listening on" once capturing.
        let mut err = child.stderr.take().expect("tcpdump stderr");
        let line = read_line(&mut err);
        assert!(line.contains("listening on"), "tcpdump: {line}");
        // Keep the pipe drained (tcpdump's summary at exit).
        std::thread::spawn(move || {
            use std::io::Read;
            let mut rest = Vec::new();
            let _ = err.read_to_end(&mut rest);
        });
        Capture {
            child: Some(child),
            file,
        }
    }

    /// Stops the capture: `tcpdump -nn -r` of what it wrote (`extra`: more
    /// flags, `-v`).
    fn stop(&mut self, extra: &[&str]) -> String {
        if let Some(mut c) = self.child.take() {
            stop_daemon(&mut c);
        }
        self.read(extra)
    }

    /// `tcpdump -nn EXTRA -r` of what the capture wrote so far.
    fn read(&self, extra: &[&str]) -> String {
        let mut args = vec!["tcpdump", "-nn"];
        args.extend_from_slice(extra);
        let f = self.file.display().to_string();
        args.extend_from_slice(&["-r", &f]);
        let out = run(&args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A TCP transfer of `len` bytes from `client` to `server`: every byte
/// arrives, unchanged.
fn tcp_exact(server: &Host, client: &Host, len: usize) {
    let (n, server_sum, client_sum) = tcp_transfer(server, client, len);
    assert_eq!(n, len, "bytes {} -> {}", client.ns, server.ns);
    assert_eq!(
        server_sum, client_sum,
        "SHA-256 {} -> {}",
        client.ns, server.ns
    );
}

/// `ctl dump-dp-flows` lines that contain every one of `parts`.
fn dp_flows_with(hv: &Hypervisor, parts: &[&str]) -> Vec<String> {
    hv.ctl(&["dump-dp-flows"])
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .map(str::to_string)
        .collect()
}

/// No megaflow expires while a test reads their counters.
const PMD: &str = "[pmd]\nmegaflow_idle_ms = 600000\n";

/// The kernel-peer setup: the switch's hypervisor (VM 10.0.0.1/24 on br-int,
/// VXLAN port `vx0` with VNI 5000 to 192.168.77.2, tep 192.168.77.1/24 on
/// br-phy) and namespace `<prefix>-pe` whose kernel has 192.168.77.2/24 on
/// the underlay veth and a `vxlan` device vx0 (VNI 5000, remote
/// 192.168.77.1) with 10.0.0.2/24. Returns the hypervisor, the peer's
/// underlay device and the peer as a host on vx0.
fn kernel_peer(letter: char) -> (Hypervisor, String, Host) {
    let vms = [("br-int", "10.0.0.1/24", 1450)];
    let mut hv = Hypervisor::new(letter, &vms);
    let p = hv.h.prefix.clone();
    let peer = format!("{p}-pe");
    add_ns(&mut hv.h, &peer);
    let (up0, up1) = (format!("{p}u0"), format!("{p}u1"));
    veth(&hv.sw, &up0, &peer, &up1);
    nic(&hv.sw, &up0);
    nsx(
        &peer,
        &["ip", "addr", "add", "192.168.77.2/24", "dev", &up1],
    );
    nsx(
        &peer,
        &[
            "ip",
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "5000",
            "remote",
            "192.168.77.1",
            "local",
            "192.168.77.2",
            "dstport",
            "4789",
            "dev",
            &up1,
        ],
    );
    // The kernel's MTU for it: the underlay's 1500 less 50; the VM has the same.
    assert!(nsx(&peer, &["ip", "link", "show", "vx0"]).contains(" mtu 1450 "));
    nsx(&peer, &["ethtool", "-K", "vx0", "tx", "off"]);
    nsx(&peer, &["ip", "addr", "add", "10.0.0.2/24", "dev", "vx0"]);
    nsx(&peer, &["ip", "link", "set", "vx0", "up"]);
    let remote_vm = Host {
        ns: peer,
        dev: "vx0".into(),
        ip: "10.0.0.2".into(),
    };
    hv.start(
        &vms,
        &[(
            "br-int",
            "  [[bridge.port]]\n  name = \"vx0\"\n  type = \"vxlan\"\n  options = { remote_ip = \"192.168.77.2\", key = \"5000\" }\n",
        )],
        &up0,
        PMD,
    );
    hv.set_tep("192.168.77.1/24");
    (hv, up1, remote_vm)
}

const NEIGH_HEADER: &str = "IP                                            MAC                 Bridge\n\
                            ==========================================================================\n";

/// `ctl neigh show`'s line of a learned entry.
fn neigh_line(ip: &str, mac: &str, bridge: &str) -> String {
    format!("{ip:<46}{mac:<20}{bridge}\n")
}

/// The (outer, inner) line pairs of `tcpdump -nn -t -r`'s text for
/// tunnelled packets (tcpdump prints the inner packet on the next line).
fn tunnelled(text: &str, outer_has: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    (0..lines.len())
        .filter(|&i| lines[i].contains(outer_has))
        .map(|i| {
            let next = lines.get(i + 1).copied().unwrap_or_default();
            (lines[i].to_string(), next.to_string())
        })
        .collect()
}

/// The number after `field` in a flow dump line, up to the next comma.
fn count_after(line: &str, field: &str) -> u64 {
    line.split(field)
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {line}"))
}

/// The `packets:N` of a `dump-dp-flows` line.
fn dp_packets(line: &str) -> u64 {
    count_after(line, ", packets:")
}

/// Kernel interop, VXLAN: see [`kernel_peer`].
#[test]
fn vxlan_with_the_linux_kernel() {
    let _turn = serial();
    let (mut hv, up1, remote_vm) = kernel_peer('k');
    let peer = remote_vm.ns.clone();
    let vm = hv.vms[0].clone();
    let vm_mac = vm.mac();
    let vx_mac = mac_of(&peer, "vx0");
    let tep_mac = mac_of(&hv.sw, "br-phy");
    let peer_mac = mac_of(&peer, &up1);

    // The first packets: the switch does not know 192.168.77.2's MAC yet; it
    // asks (ARP from br-phy's tap address) and learns the reply.
    let mut cap = Capture::start(&peer, &up1, hv.h.dir.join("underlay.pcap"), &[]);
    assert_eq!(hv.ctl(&["neigh", "show"]), NEIGH_HEADER);
    wait_reachable(&vm, "10.0.0.2", 15);
    assert_eq!(
        hv.ctl(&["neigh", "show"]),
        format!(
            "{NEIGH_HEADER}{}",
            neigh_line("192.168.77.2", &peer_mac, "br-phy")
        )
    );
    assert_eq!(vm.ping("10.0.0.2", 5), 5, "VM -> kernel vxlan");
    assert_eq!(remote_vm.ping("10.0.0.1", 5), 5, "kernel vxlan -> VM");
    cap.stop(&[]);

    // The switch's ARP request for the peer's tep, from the tep's MAC and
    // address, answered by the peer's kernel.
    let arp = cap_lines_with(&cap, &["-e", "-t"], &["ARP", " 192.168.77."]);
    assert_eq!(
        arp,
        [
            format!("{tep_mac} > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 192.168.77.2 tell 192.168.77.1, length 28"),
            format!("{peer_mac} > {tep_mac}, ethertype ARP (0x0806), length 42: Reply 192.168.77.2 is-at {peer_mac}, length 28"),
        ],
        "ARP on the underlay"
    );
    // Everything else on the underlay is VXLAN, VNI 5000, both ways, with
    // valid outer IPv4 and inner ICMP checksums (tcpdump -v checks them),
    // every echo request answered.
    let text = cap.read(&["-t"]);
    let pairs = tunnelled(&text, "VXLAN");
    assert_eq!(pairs.len() * 2 + 2, text.lines().count(), "{text}");
    let mut requests = [0, 0];
    let mut replies = [0, 0];
    for (outer, inner) in &pairs {
        let (dir, src, dst) = if outer.starts_with("IP 192.168.77.1.") {
            (0, "10.0.0.1", "10.0.0.2")
        } else {
            (1, "10.0.0.2", "10.0.0.1")
        };
        let sender = ["192.168.77.1", "192.168.77.2"][dir];
        let receiver = ["192.168.77.2", "192.168.77.1"][dir];
        assert!(
            outer.starts_with(&format!("IP {sender}."))
                && outer.ends_with(&format!(
                    " > {receiver}.4789: VXLAN, flags [I] (0x08), vni 5000"
                )),
            "{outer}"
        );
        if inner.starts_with(&format!("IP {src} > {dst}: ICMP echo request")) {
            requests[dir] += 1;
        } else if inner.starts_with(&format!("IP {src} > {dst}: ICMP echo reply")) {
            replies[dir] += 1;
        } else {
            assert!(inner.starts_with("ARP, "), "{inner}");
        }
    }
    assert!(requests[0] >= 6 && requests[1] == 5, "{requests:?} {text}");
    assert_eq!(
        replies,
        [requests[1], requests[0]],
        "every request answered"
    );
    let verbose = cap.read(&["-v"]);
    assert!(
        !verbose.contains("bad cksum") && !verbose.contains("wrong"),
        "{verbose}"
    );

    // TCP both ways, exact bytes: MSS for the 1450-byte MTU, full-size inner
    // frames of 1464 bytes in 1514-byte outer ones.
    tcp_exact(&remote_vm, &vm, 1_000_000);
    tcp_exact(&vm, &remote_vm, 1_000_000);

    // The megaflows: the VM's IP traffic pushed with the exact outer header
    // (next hop's MAC from the neighbor cache, tep MAC and address, VNI
    // 0x1388 = 5000) and sent through br-phy's eth0 (datapath: vm0 0,
    // br-int 1, eth0 2, br-phy 3, vxlan_sys_4789 4); the peer's VXLAN to
    // the tep popped; the popped frames matched on their tunnel metadata.
    let push = dp_flows_with(
        &hv,
        &[
            "br-int: ip,tun_dst=0.0.0.0,in_port=0,",
            &format!("dl_src={vm_mac},dl_dst={vx_mac},"),
        ],
    );
    assert_eq!(push.len(), 1, "{push:?}");
    assert!(
        push[0].ends_with(&format!(
            "actions:clone(tnl_push(tnl_port(4),header(size=50,type=4,eth(dst={peer_mac},src={tep_mac},dl_type=0x0800),ipv4(src=192.168.77.1,dst=192.168.77.2,proto=17,tos=0,ttl=64,frag=0x4000),udp(src=0,dst=4789,csum=0x0),vxlan(flags=0x8000000,vni=0x1388)),out_port(3)),2)"
        )),
        "{}",
        push[0]
    );
    let pop = dp_flows_with(&hv, &["br-phy: udp,in_port=2,", "actions:tnl_pop(4)"]);
    assert_eq!(pop.len(), 1, "{pop:?}");
    assert!(
        pop[0].contains(&format!(
            "dl_dst={tep_mac},nw_dst=192.168.77.1,nw_frag=no,tp_dst=4789,"
        )),
        "{}",
        pop[0]
    );
    let popped = dp_flows_with(
        &hv,
        &[
            "br-int: ",
            ",tun_id=0x1388,tun_src=192.168.77.2,tun_dst=192.168.77.1,in_port=4,",
        ],
    );
    assert!(
        popped.iter().all(|l| l.ends_with(", actions:0")),
        "{popped:?}"
    );
    // Every popped packet came back once (recirculation) and matched one of
    // those, and the tunnel's datapath port counted it received.
    let n_pop = dp_packets(&pop[0]);
    assert!(n_pop > 700, "{}", pop[0]);
    assert_eq!(popped.iter().map(|l| dp_packets(l)).sum::<u64>(), n_pop);
    let pmd = hv.ctl(&["pmd-stats-show"]);
    assert!(
        pmd.contains(&format!("  packet recirculations: {n_pop}\n")),
        "{pmd}"
    );
    let ports: serde_json::Value =
        serde_json::from_str(&hv.ctl(&["--json", "port-stats", "vxlan_sys_4789"])).expect("json");
    assert_eq!(ports[0]["rx_packets"], n_pop, "{ports}");
    hv.h.stop();
}

/// The lines of `tcpdump -nn FLAGS -r` of the capture's file containing
/// every one of `parts`.
fn cap_lines_with(cap: &Capture, flags: &[&str], parts: &[&str]) -> Vec<String> {
    let mut args = vec!["tcpdump", "-nn"];
    args.extend_from_slice(flags);
    let f = cap.file.display().to_string();
    args.extend_from_slice(&["-r", &f]);
    let out = run(&args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .map(str::to_string)
        .collect()
}

/// The tunnels of [`two_switches_across_vxlan_gre_and_geneve`]: bridge, VM
/// subnet, port type, key option (none: GRE without key), what tcpdump
/// prints of the outer header.
const KINDS: [(&str, &str, &str, Option<u32>, &str); 4] = [
    (
        "br-vx",
        "10.1.0",
        "vxlan",
        Some(5000),
        "VXLAN, flags [I] (0x08), vni 5000",
    ),
    (
        "br-gre",
        "10.2.0",
        "gre",
        Some(7),
        "GREv0, key=0x7, length ",
    ),
    ("br-gren", "10.3.0", "gre", None, "GREv0, length "),
    (
        "br-gnv",
        "10.4.0",
        "geneve",
        Some(9),
        "Geneve, Flags [none], vni 0x9",
    ),
];

/// Two ferroswitch hypervisors joined by a veth underlay (teps 192.168.88.1
/// and .2 on br-phy), a VM pair per tunnel kind, each pair on its own bridge
/// and tunnel: ping and TCP across each. The kernel here has no `gretap` or
/// `geneve` module, so for GRE and Geneve switch to switch is the
/// interoperability available; tcpdump decoding the underlay is the
/// independent reading of their wire format.
#[test]
fn two_switches_across_vxlan_gre_and_geneve() {
    let _turn = serial();
    let vms_of = |host: u8| -> Vec<(&'static str, String, u32)> {
        KINDS
            .iter()
            .map(|(b, net, ..)| (*b, format!("{net}.{host}/24"), 1400))
            .collect()
    };
    let (va, vb) = (vms_of(1), vms_of(2));
    let va: Vec<(&str, &str, u32)> = va.iter().map(|(b, c, m)| (*b, c.as_str(), *m)).collect();
    let vb: Vec<(&str, &str, u32)> = vb.iter().map(|(b, c, m)| (*b, c.as_str(), *m)).collect();
    let (mut a, mut b, ua, ub) = joined(('l', &va), ('m', &vb));
    let ports = |remote: &str| -> Vec<(&'static str, String)> {
        KINDS
            .iter()
            .map(|(br, _, kind, key, _)| {
                let key = key.map(|k| format!(", key = \"{k}\"")).unwrap_or_default();
                (
                    *br,
                    format!(
                        "  [[bridge.port]]\n  name = \"t-{br}\"\n  type = \"{kind}\"\n  options = {{ remote_ip = \"{remote}\"{key} }}\n"
                    ),
                )
            })
            .collect()
    };
    let (pa, pb) = (ports("192.168.88.2"), ports("192.168.88.1"));
    let pa: Vec<(&str, &str)> = pa.iter().map(|(b, t)| (*b, t.as_str())).collect();
    let pb: Vec<(&str, &str)> = pb.iter().map(|(b, t)| (*b, t.as_str())).collect();
    a.start(&va, &pa, &ua, PMD);
    // The other daemon's PMD on the other CPU.
    b.start(
        &vb,
        &pb,
        &ub,
        "[pmd]\nmegaflow_idle_ms = 600000\nmgmt_cpu = 1\ncpus = [0]\n",
    );
    a.set_tep("192.168.88.1/24");
    b.set_tep("192.168.88.2/24");

    // Each side's capture shows what it receives (the af_packet ports'
    // transmissions bypass the sender's taps).
    let mut cap_a = Capture::start(&a.sw, &ua, a.h.dir.join("underlay.pcap"), &[]);
    let mut cap_b = Capture::start(&b.sw, &ub, b.h.dir.join("underlay.pcap"), &[]);
    for (i, (br, ..)) in KINDS.iter().enumerate() {
        let (x, y) = (&a.vms[i], &b.vms[i]);
        wait_reachable(x, &y.ip, 15);
        assert_eq!(x.ping(&y.ip, 3), 3, "{br} a -> b");
        assert_eq!(y.ping(&x.ip, 3), 3, "{br} b -> a");
    }
    cap_a.stop(&[]);
    cap_b.stop(&[]);
    // tcpdump decodes each tunnel's packets both ways, with the right key,
    // carrying every echo request and reply of the VMs on its bridge.
    for (cap, src, dst, isrc, idst) in [
        (&cap_b, "192.168.88.1", "192.168.88.2", 1, 2),
        (&cap_a, "192.168.88.2", "192.168.88.1", 2, 1),
    ] {
        let text = cap.read(&["-t"]);
        for (br, net, _, _, outer) in KINDS {
            let count = |what: &str| {
                tunnelled(&text, outer)
                    .iter()
                    .filter(|(o, inner)| {
                        // GRE and Geneve: tcpdump prints the inner packet on
                        // the same line; VXLAN on the next.
                        let inner = if o.contains(": IP ") || o.contains(": ARP") {
                            o
                        } else {
                            inner
                        };
                        o.starts_with(&format!("IP {src}"))
                            && o.contains(&format!(" > {dst}"))
                            && inner.contains(&format!(
                                "IP {net}.{isrc} > {net}.{idst}: ICMP echo {what},"
                            ))
                    })
                    .count()
            };
            let (requests, replies) = (count("request"), count("reply"));
            if isrc == 1 {
                assert!(
                    requests >= 4 && replies == 3,
                    "{br} {src}: {requests} {replies}\n{text}"
                );
            } else {
                assert!(
                    requests == 3 && replies >= 4,
                    "{br} {src}: {requests} {replies}\n{text}"
                );
            }
        }
    }

    // TCP both ways across each tunnel, exact bytes (full-size frames of
    // the VMs' 1400-byte MTU).
    for (x, y) in a.vms.iter().zip(&b.vms) {
        tcp_exact(y, x, 500_000);
        tcp_exact(x, y, 500_000);
    }

    // Each side learned the other's tep (br-phy's tap) by ARP.
    for (x, y, ip) in [(&a, &b, "192.168.88.2"), (&b, &a, "192.168.88.1")] {
        assert_eq!(
            x.ctl(&["neigh", "show"]),
            format!(
                "{NEIGH_HEADER}{}",
                neigh_line(ip, &mac_of(&y.sw, "br-phy"), "br-phy")
            )
        );
    }
    // Each VM's IP traffic is pushed with its tunnel's header (tcpdump has
    // read these on the wire above): a's tep MAC and address to b's, then
    // out through br-phy.
    let (a_mac, b_mac) = (mac_of(&a.sw, "br-phy"), mac_of(&b.sw, "br-phy"));
    let eth_ip = |proto: u8| {
        format!(
            "eth(dst={b_mac},src={a_mac},dl_type=0x0800),ipv4(src=192.168.88.1,dst=192.168.88.2,proto={proto},tos=0,ttl=64,frag=0x4000),"
        )
    };
    for (i, (br, _, _, _, _)) in KINDS.iter().enumerate() {
        let header = match i {
            0 => format!("header(size=50,type=4,{}udp(src=0,dst=4789,csum=0x0),vxlan(flags=0x8000000,vni=0x1388))", eth_ip(17)),
            1 => format!("header(size=42,type=3,{}gre((flags=0x2000,proto=0x6558),key=0x7))", eth_ip(47)),
            2 => format!("header(size=38,type=3,{}gre((flags=0x0,proto=0x6558)))", eth_ip(47)),
            _ => format!("header(size=50,type=6,{}udp(src=0,dst=6081,csum=0x0),geneve(vni=0x9))", eth_ip(17)),
        };
        let vm_mac = a.vms[i].mac();
        let push = dp_flows_with(
            &a,
            &[
                &format!("{br}: ip,tun_dst=0.0.0.0,"),
                &format!("dl_src={vm_mac},"),
            ],
        );
        assert_eq!(push.len(), 1, "{push:?}");
        assert!(push[0].contains(&header), "{} lacks {header}", push[0]);
    }
    a.h.stop();
    b.h.stop();
}

/// `ping -c count -i 0.1` from `from` to `ip`, in a thread: its replies.
fn ping_in_background(from: &Host, ip: &str, count: u32) -> std::thread::JoinHandle<u32> {
    let (from, ip) = (from.clone(), ip.to_string());
    std::thread::spawn(move || {
        let out = from.exec(&[
            "ping",
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.1",
            "-W",
            "1",
            &ip,
        ]);
        replies(&out)
    })
}

/// Route and neighbor changes under running traffic, without a restart:
/// the tep's address changes (the kernel peer's remote with it); a kernel
/// route sends the peer's tep through another next hop, which the switch
/// does not know yet (an ARP request for it, then traffic); `neigh flush`,
/// then recovery by ARP.
#[test]
fn route_and_neighbor_changes_resteer_the_tunnel() {
    let _turn = serial();
    let (mut hv, up1, remote_vm) = kernel_peer('n');
    let peer = remote_vm.ns.clone();
    let vm = hv.vms[0].clone();
    let tep_mac = mac_of(&hv.sw, "br-phy");
    let peer_mac = mac_of(&peer, &up1);
    wait_reachable(&vm, "10.0.0.2", 15);
    let pid = hv.h.daemon.as_ref().expect("daemon").id();

    // The tep moves from 192.168.77.1 to .11 while the VM pings.
    let pings = ping_in_background(&vm, "10.0.0.2", 60);
    std::thread::sleep(Duration::from_millis(1500));
    nsx(
        &hv.sw,
        &["ip", "addr", "del", "192.168.77.1/24", "dev", "br-phy"],
    );
    nsx(
        &hv.sw,
        &["ip", "addr", "add", "192.168.77.11/24", "dev", "br-phy"],
    );
    nsx(
        &peer,
        &[
            "ip",
            "link",
            "set",
            "vx0",
            "type",
            "vxlan",
            "remote",
            "192.168.77.11",
        ],
    );
    let want = "Route Table:\n\
                Cached: 192.168.77.11/32 dev br-phy SRC 192.168.77.11 local\n\
                Cached: 192.168.77.0/24 dev br-phy SRC 192.168.77.11\n";
    assert!(
        wait_for(10, || hv.ctl(&["route", "show"]) == want).is_some(),
        "{}",
        hv.ctl(&["route", "show"])
    );
    let got = pings.join().expect("ping");
    // Lost at most in the moment of the change (60 pings over 6 s).
    assert!(got >= 45, "{got} of 60 replies across the tep change");
    assert_eq!(vm.ping("10.0.0.2", 5), 5, "after the change");
    assert_eq!(
        remote_vm.ping("10.0.0.1", 5),
        5,
        "after the change, from the peer"
    );
    let push = dp_flows_with(&hv, &["br-int: ip,", "tnl_push("]);
    assert_eq!(push.len(), 1, "{push:?}");
    assert!(
        push[0].contains(&format!("eth(dst={peer_mac},src={tep_mac},dl_type=0x0800),ipv4(src=192.168.77.11,dst=192.168.77.2,")),
        "{}",
        push[0]
    );

    // A kernel route through another next hop, 192.168.77.3 (the peer's
    // second address): the switch asks for it and goes on once answered.
    nsx(
        &peer,
        &["ip", "addr", "add", "192.168.77.3/24", "dev", &up1],
    );
    let mut cap = Capture::start(&peer, &up1, hv.h.dir.join("arp.pcap"), &["arp"]);
    let pings = ping_in_background(&vm, "10.0.0.2", 40);
    std::thread::sleep(Duration::from_millis(1000));
    nsx(
        &hv.sw,
        &[
            "ip",
            "route",
            "add",
            "192.168.77.2/32",
            "via",
            "192.168.77.3",
            "dev",
            "br-phy",
        ],
    );
    assert!(
        wait_for(10, || hv.ctl(&["route", "lookup", "192.168.77.2"])
            == "src 192.168.77.11\ngateway 192.168.77.3\ndev br-phy\n")
        .is_some(),
        "{}",
        hv.ctl(&["route", "show"])
    );
    let got = pings.join().expect("ping");
    assert!(got >= 30, "{got} of 40 replies across the route change");
    assert_eq!(
        hv.ctl(&["neigh", "show"]),
        format!(
            "{NEIGH_HEADER}{}{}",
            neigh_line("192.168.77.2", &peer_mac, "br-phy"),
            neigh_line("192.168.77.3", &peer_mac, "br-phy")
        )
    );
    // `neigh flush`: the next packet misses, the switch asks again, and
    // traffic recovers.
    assert_eq!(hv.ctl(&["neigh", "flush"]), "OK\n");
    assert_eq!(hv.ctl(&["neigh", "show"]), NEIGH_HEADER);
    // (The push megaflows turn into drops at the slow path's next period:
    // a packet may still go before.) Pinging until the neighbor is back and
    // the megaflow pushes again.
    let back = neigh_line("192.168.77.3", &peer_mac, "br-phy");
    assert!(
        wait_for(10, || {
            vm.ping("10.0.0.2", 1);
            hv.ctl(&["neigh", "show"]).contains(&back)
                && dp_flows_with(&hv, &["br-int: ip,", "actions:clone(tnl_push("]).len() == 1
        })
        .is_some(),
        "{}{}",
        hv.ctl(&["neigh", "show"]),
        hv.ctl(&["dump-dp-flows"])
    );
    let n = vm.ping("10.0.0.2", 5);
    assert_eq!(
        n,
        5,
        "after neigh flush: {}\n{}",
        hv.ctl(&["neigh", "show"]),
        hv.ctl(&["dump-dp-flows"])
    );
    assert_eq!(
        hv.ctl(&["neigh", "show"]),
        format!(
            "{NEIGH_HEADER}{}",
            neigh_line("192.168.77.3", &peer_mac, "br-phy")
        )
    );
    cap.stop(&[]);
    let asks = cap_lines_with(
        &cap,
        &["-e", "-t"],
        &["Request who-has 192.168.77.3 tell 192.168.77.11"],
    );
    assert_eq!(
        asks.len(),
        2,
        "one ARP request for the new next hop, one after the flush: {asks:?}"
    );
    assert!(
        asks.iter()
            .all(|l| l.starts_with(&format!("{tep_mac} > ff:ff:ff:ff:ff:ff,"))),
        "{asks:?}"
    );
    // The same daemon all along.
    assert_eq!(hv.h.daemon.as_ref().expect("daemon").id(), pid);
    assert!(hv
        .h
        .daemon
        .as_mut()
        .expect("daemon")
        .try_wait()
        .expect("wait")
        .is_none());
    hv.h.stop();
}

/// A VXLAN packet with a VNI no tunnel port has (the kernel peer's second
/// device, VNI 5001): popped, then dropped by a drop megaflow on its tunnel
/// metadata, counted there and in `pmd-stats-show`'s `flow_drop`; the VM
/// sees nothing of it.
#[test]
fn unknown_vni_is_dropped_and_counted() {
    let _turn = serial();
    let (mut hv, up1, remote_vm) = kernel_peer('o');
    let peer = remote_vm.ns.clone();
    let vm = hv.vms[0].clone();
    wait_reachable(&vm, "10.0.0.2", 15);
    // If VNI 5001 reached the VM, it would answer on 10.0.1.1.
    nsx(
        &vm.ns,
        &["ip", "addr", "add", "10.0.1.1/24", "dev", &vm.dev],
    );
    nsx(
        &peer,
        &[
            "ip",
            "link",
            "add",
            "vx1",
            "type",
            "vxlan",
            "id",
            "5001",
            "remote",
            "192.168.77.1",
            "local",
            "192.168.77.2",
            "dstport",
            "4789",
            "dev",
            &up1,
        ],
    );
    nsx(&peer, &["ip", "addr", "add", "10.0.1.2/24", "dev", "vx1"]);
    nsx(&peer, &["ip", "link", "set", "vx1", "up"]);
    nsx(
        &peer,
        &[
            "ip",
            "neigh",
            "add",
            "10.0.1.1",
            "lladdr",
            &vm.mac(),
            "dev",
            "vx1",
        ],
    );
    let vm_rx = || {
        nsx(
            &vm.ns,
            &[
                "cat",
                &format!("/sys/class/net/{}/statistics/rx_packets", vm.dev),
            ],
        )
    };
    let flow_drop = || {
        let pmd = hv.ctl(&["pmd-stats-show"]);
        pmd.split("flow_drop=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{pmd}"))
    };
    let tnl_rx = || {
        let v: serde_json::Value =
            serde_json::from_str(&hv.ctl(&["--json", "port-stats", "vxlan_sys_4789"]))
                .expect("json");
        v[0]["rx_packets"].as_u64().expect("rx_packets")
    };
    let (rx0, drops0, tnl0) = (vm_rx(), flow_drop(), tnl_rx());
    let bad = Host {
        ns: peer.clone(),
        dev: "vx1".into(),
        ip: "10.0.1.2".into(),
    };
    assert_eq!(bad.ping("10.0.1.1", 5), 0, "VNI 5001 reached the VM");
    assert_eq!(vm_rx(), rx0, "the VM received something");
    // All 5 popped (the tunnel's datapath port counts them), then dropped.
    assert_eq!(tnl_rx() - tnl0, 5);
    let drop = dp_flows_with(
        &hv,
        &[
            "(no tunnel port): ",
            "tun_id=0x1389,tun_src=192.168.77.2,tun_dst=192.168.77.1,in_port=4,",
        ],
    );
    assert_eq!(drop.len(), 1, "{drop:?} {}", hv.ctl(&["dump-dp-flows"]));
    assert!(drop[0].ends_with(", actions:drop"), "{}", drop[0]);
    assert_eq!(dp_packets(&drop[0]), 5, "{}", drop[0]);
    assert_eq!(flow_drop() - drops0, 5);
    // VNI 5000 still goes through.
    assert_eq!(vm.ping("10.0.0.2", 3), 3);
    hv.h.stop();
}

/// Seed 002's br-tun, as `ovs-ofctl dump-flows` printed it.
const BR_TUN_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/neutron-br-tun.dump-flows"
);

/// A `dump-flows` line with its counters and ages (`duration`, `n_packets`,
/// `n_bytes`, `idle_age`, `hard_age`) written `*`.
fn flow_shape(line: &str) -> String {
    line.split(", ")
        .map(|part| {
            let part = part.trim_start();
            match part.split_once('=') {
                Some((k, _))
                    if ["duration", "n_packets", "n_bytes", "idle_age", "hard_age"]
                        .contains(&k) =>
                {
                    format!("{k}=*")
                }
                _ => part.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `n_packets=N` of a `dump-flows` line.
fn flow_packets(line: &str) -> u64 {
    count_after(line, "n_packets=")
}

/// Seeds 001-002 with two ferroswitch hypervisors joined by a veth underlay
/// (teps 192.168.99.1 and .2 on br-phy): each has Neutron's br-int (the VM
/// on an access port of VLAN 1, patch-tun), br-tun with the fixture's flows
/// loaded unchanged (patch-int OpenFlow port 1, the VXLAN tunnel to the
/// other hypervisor port 2 with `in_key=flow, out_key=flow`; the fixture's
/// table 21 also outputs to port 3, which does not exist here and is
/// skipped, as in OVS), and br-phy with the underlay NIC. The first packet,
/// VM a's ARP broadcast, is flooded to the tunnel with VNI 0x1388 (tun_id of
/// the fixture's VLAN 1); the reply comes back through the tunnel and br-tun
/// learns VM b's MAC in table 20 (load of the tun_id, output to the tunnel);
/// unicast then goes by the learned flow.
#[test]
fn neutron_br_tun_floods_and_learns_across_tunnels() {
    let _turn = serial();
    let va = [("br-int", "10.0.0.1/24", 1450)];
    let vb = [("br-int", "10.0.0.2/24", 1450)];
    let (mut a, mut b, ua, ub) = joined(('p', &va), ('q', &vb));
    let extra = |remote: &str| -> [(&'static str, String); 2] {
        [
            (
                "br-int",
                "  [[bridge.port]]\n  name = \"patch-tun\"\n  type = \"patch\"\n  options = { peer = \"patch-int\" }\n".to_string(),
            ),
            (
                "br-tun",
                format!(
                    "  [[bridge.port]]\n  name = \"patch-int\"\n  type = \"patch\"\n  ofport = 1\n  options = {{ peer = \"patch-tun\" }}\n\
                     \x20 [[bridge.port]]\n  name = \"vxlan-tep\"\n  type = \"vxlan\"\n  ofport = 2\n  options = {{ remote_ip = \"{remote}\", in_key = \"flow\", out_key = \"flow\" }}\n"
                ),
            ),
        ]
    };
    let (ea, eb) = (extra("192.168.99.2"), extra("192.168.99.1"));
    let ea: Vec<(&str, &str)> = ea.iter().map(|(b, t)| (*b, t.as_str())).collect();
    let eb: Vec<(&str, &str)> = eb.iter().map(|(b, t)| (*b, t.as_str())).collect();
    a.start_with(&va, &ea, &ua, PMD, "  tag = 1\n");
    b.start_with(
        &vb,
        &eb,
        &ub,
        "[pmd]\nmegaflow_idle_ms = 600000\nmgmt_cpu = 1\ncpus = [0]\n",
        "  tag = 1\n",
    );
    for hv in [&a, &b] {
        let out = hv.ctl(&["add-flows", "br-tun", BR_TUN_FIXTURE]);
        assert_eq!(out, "", "add-flows: {out}");
        // Loaded unchanged: the same rules, OVS's default flow replaced by
        // the fixture's table 0 drop.
        let fixture = std::fs::read_to_string(BR_TUN_FIXTURE).expect("fixture");
        let want: Vec<String> = fixture
            .lines()
            .map(|l| {
                let s = flow_shape(l);
                // The fixture's learned rule was 116255 s old, ours is new.
                s.replace(
                    ", hard_timeout=300, idle_age=*, hard_age=*,",
                    ", hard_timeout=300, idle_age=*,",
                )
            })
            .collect();
        let got: Vec<String> = hv
            .ctl(&["dump-flows", "br-tun"])
            .lines()
            .map(|l| flow_shape(l).replace(", hard_age=*,", ","))
            .collect();
        let want: Vec<String> = want
            .iter()
            .map(|l| l.replace(", hard_age=*,", ","))
            .collect();
        assert_eq!(got, want);
    }
    a.set_tep("192.168.99.1/24");
    b.set_tep("192.168.99.2/24");
    let (x, y) = (a.vms[0].clone(), b.vms[0].clone());
    let (x_mac, y_mac) = (x.mac(), y.mac());

    // What each side receives on the underlay (af_packet transmissions
    // bypass the sender's taps).
    let mut cap_b = Capture::start(&b.sw, &ub, b.h.dir.join("underlay.pcap"), &[]);
    let mut cap_a = Capture::start(&a.sw, &ua, a.h.dir.join("underlay.pcap"), &[]);
    // The first attempts may be dropped while each switch asks for the
    // other's tep by ARP (a missing next hop); then the VMs' ARP goes.
    wait_reachable(&x, "10.0.0.2", 15);
    let text_b = cap_b.stop(&["-t"]);
    let text_a = cap_a.stop(&["-t"]);
    // The first tunnelled packet b's side receives is VM a's ARP broadcast,
    // VNI 5000 = 0x1388, untagged (table 21 strips VLAN 1).
    let first = tunnelled(&text_b, "VXLAN");
    assert!(!first.is_empty(), "{text_b}");
    assert!(
        first[0].0.starts_with("IP 192.168.99.1.")
            && first[0]
                .0
                .ends_with(" > 192.168.99.2.4789: VXLAN, flags [I] (0x08), vni 5000"),
        "{text_b}"
    );
    assert_eq!(
        first[0].1, "ARP, Request who-has 10.0.0.2 tell 10.0.0.1, length 28",
        "{text_b}"
    );
    // The reply: from b's tep to a's, same VNI, to VM a's MAC.
    let reply = tunnelled(&text_a, "VXLAN");
    assert!(
        reply.iter().any(|(o, i)| o.starts_with("IP 192.168.99.2.")
            && o.ends_with(" > 192.168.99.1.4789: VXLAN, flags [I] (0x08), vni 5000")
            && i == &format!("ARP, Reply 10.0.0.2 is-at {y_mac}, length 28")),
        "{text_a}"
    );
    // a's broadcast megaflow: br-int floods in VLAN 1 to patch-tun, br-tun
    // pushes VNI 0x1388 towards b's tep.
    let flood = dp_flows_with(
        &a,
        &[
            "br-int: arp,",
            &format!("dl_src={x_mac},dl_dst=ff:ff:ff:ff:ff:ff"),
        ],
    );
    assert_eq!(flood.len(), 1, "{}", a.ctl(&["dump-dp-flows"]));
    assert!(
        flood[0].contains("ipv4(src=192.168.99.1,dst=192.168.99.2,proto=17,tos=0,ttl=64,frag=0x4000),udp(src=0,dst=4789,csum=0x0),vxlan(flags=0x8000000,vni=0x1388))"),
        "{}",
        flood[0]
    );

    // Each br-tun learned the other VM in table 20: VLAN 1, its MAC, back
    // with tun_id 0x1388 to the tunnel port it came from (port 2).
    let learned = |hv: &Hypervisor, mac: &str| -> String {
        let out = hv.ctl(&["dump-flows", "br-tun", &format!("table=20,dl_dst={mac}")]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{}", hv.ctl(&["dump-flows", "br-tun"]));
        lines[0].to_string()
    };
    for (hv, mac) in [(&a, &y_mac), (&b, &x_mac)] {
        assert_eq!(
            flow_shape(&learned(hv, mac)).replace(", hard_age=*,", ","),
            format!(
                "cookie=0x0, duration=*, table=20, n_packets=*, n_bytes=*, hard_timeout=300, idle_age=*, priority=1,vlan_tci=0x0001/0x0fff,dl_dst={mac} actions=load:0->NXM_OF_VLAN_TCI[],load:0x1388->NXM_NX_TUN_ID[],output:2"
            )
        );
    }

    // Ping both ways, every request answered; a's unicast to VM b goes by
    // the learned flow (its counter grows by at least the 5 requests and 5
    // replies a sends), pushed with VNI 0x1388.
    let before = flow_packets(&learned(&a, &y_mac));
    assert_eq!(x.ping("10.0.0.2", 5), 5, "a -> b");
    assert_eq!(y.ping("10.0.0.1", 5), 5, "b -> a");
    assert!(
        wait_for(5, || flow_packets(&learned(&a, &y_mac)) >= before + 10).is_some(),
        "{before} -> {}",
        learned(&a, &y_mac)
    );
    let unicast = dp_flows_with(
        &a,
        &["br-int: ip,", &format!("dl_src={x_mac},dl_dst={y_mac},")],
    );
    assert_eq!(unicast.len(), 1, "{}", a.ctl(&["dump-dp-flows"]));
    assert!(
        unicast[0].contains("vxlan(flags=0x8000000,vni=0x1388)),out_port(")
            && unicast[0].matches("tnl_push(").count() == 1,
        "{}",
        unicast[0]
    );
    a.h.stop();
    b.h.stop();
}

/// The sum of `pmd-stats-show`'s `tnl_push_mtu=N` (none printed: 0).
fn tnl_push_mtu_drops(hv: &Hypervisor) -> u64 {
    let pmd = hv.ctl(&["pmd-stats-show"]);
    pmd.split("tnl_push_mtu=")
        .skip(1)
        .map(|r| {
            r.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{pmd}"))
        })
        .sum()
}

/// `ping -c count -s size -M do` (DF, no local fragmentation): its replies.
fn ping_df(from: &Host, ip: &str, size: u32, count: u32) -> u32 {
    replies(&from.exec(&[
        "ping",
        "-n",
        "-c",
        &count.to_string(),
        "-i",
        "0.2",
        "-W",
        "1",
        "-s",
        &size.to_string(),
        "-M",
        "do",
        ip,
    ]))
}

/// Path MTU against the kernel peer ([`kernel_peer`]) with the VM's MTU
/// raised to 1500 over a 1500-byte underlay: a 1500-byte IP packet (inner
/// frame 1514 > 1464) is dropped and counted as `tnl_push_mtu`, exactly one
/// per echo request; 1450 bytes pass. The route lookup and `ofproto-trace`
/// report the path MTU; lowering br-phy's kernel MTU to 1400 re-derives the
/// route's MTU and the pushing megaflows: then 1400 bytes are dropped too.
#[test]
fn oversize_inner_packets_are_dropped_and_counted() {
    let _turn = serial();
    let (mut hv, _up1, remote_vm) = kernel_peer('r');
    let vm = hv.vms[0].clone();
    nsx(&vm.ns, &["ip", "link", "set", &vm.dev, "mtu", "1500"]);
    wait_reachable(&vm, "10.0.0.2", 15);
    let route = |mtu: u32| {
        let out = hv.ctl(&["--json", "route", "lookup", "192.168.77.2"]);
        out.contains(&format!("\"mtu\":{mtu}"))
    };
    assert!(
        route(1500),
        "{}",
        hv.ctl(&["--json", "route", "lookup", "192.168.77.2"])
    );
    let trace_line = |mtu: u32| {
        format!(
            "path MTU {mtu} (br-phy): inner MTU {} (IP), longer inner packets are dropped",
            mtu - 50
        )
    };
    let trace = || {
        hv.ctl(&[
            "ofproto-trace",
            "br-int",
            &format!(
                "in_port=vm0,icmp,dl_src={},dl_dst={},nw_src=10.0.0.1,nw_dst=10.0.0.2",
                vm.mac(),
                mac_of(&remote_vm.ns, "vx0")
            ),
        ])
    };
    let t = trace();
    assert_eq!(
        t.lines()
            .filter(|l| l.trim() == format!("-> {}", trace_line(1500)))
            .count(),
        1,
        "{t}"
    );

    // 1472 bytes of ICMP payload: a 1500-byte IP packet, dropped at the push.
    let d0 = tnl_push_mtu_drops(&hv);
    assert_eq!(
        ping_df(&vm, "10.0.0.2", 1472, 4),
        0,
        "1500 bytes went through"
    );
    assert_eq!(
        tnl_push_mtu_drops(&hv) - d0,
        4,
        "{}",
        hv.ctl(&["pmd-stats-show"])
    );
    // 1422: a 1450-byte IP packet, the inner MTU, answered.
    assert_eq!(ping_df(&vm, "10.0.0.2", 1422, 4), 4, "1450 bytes");
    assert_eq!(tnl_push_mtu_drops(&hv) - d0, 4);

    // The tep's kernel MTU goes down to 1400: the route follows, the
    // megaflows that push are rebuilt with the new path MTU.
    nsx(&hv.sw, &["ip", "link", "set", "br-phy", "mtu", "1400"]);
    assert!(
        wait_for(10, || route(1400)).is_some(),
        "{}",
        hv.ctl(&["--json", "route", "lookup", "192.168.77.2"])
    );
    let t = trace();
    assert_eq!(
        t.lines()
            .filter(|l| l.trim() == format!("-> {}", trace_line(1400)))
            .count(),
        1,
        "{t}"
    );
    // The slow path revalidates the megaflows that consulted the route
    // table on the revalidator's next 50 ms tick after the table's
    // generation moved (which the route lookup above saw): well before
    // 300 ms the push megaflow carries the new path MTU. 1372 bytes of
    // payload: a 1400-byte IP packet, now over 1350.
    std::thread::sleep(Duration::from_millis(300));
    let d1 = tnl_push_mtu_drops(&hv);
    assert_eq!(
        ping_df(&vm, "10.0.0.2", 1372, 3),
        0,
        "1400 bytes went through after the MTU change: {}",
        hv.ctl(&["dump-dp-flows"])
    );
    assert_eq!(
        tnl_push_mtu_drops(&hv) - d1,
        3,
        "{}",
        hv.ctl(&["pmd-stats-show"])
    );
    assert_eq!(ping_df(&vm, "10.0.0.2", 1322, 3), 3, "1350 bytes");
    assert_eq!(tnl_push_mtu_drops(&hv) - d1, 3);
    hv.h.stop();
}

/// `args` refused by `hv`'s daemon: its error text.
fn ctl_err(hv: &Hypervisor, args: &[&str]) -> String {
    let out = hv.h.ctl(args);
    assert!(!out.status.success(), "{args:?} accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Geneve options as metadata (OVN's way of carrying the logical ports):
/// with the TLV map `{class=0x102,type=0x80,len=4}->tun_metadata0` on both
/// hypervisors, each VM's packets get `tun_metadata0=0x2a` before `NORMAL`
/// sends them through the Geneve tunnel, and the receiving side takes from
/// the tunnel only packets carrying that value. Ping works; tcpdump reads
/// the option on the underlay; the receiving megaflow matches it. When one
/// side sends 0x2b instead, the other drops its packets (by the flow). The
/// map refuses changes that would strand a flow.
#[test]
fn geneve_options_are_tun_metadata() {
    let _turn = serial();
    let va = [("br-gnv", "10.4.0.1/24", 1400)];
    let vb = [("br-gnv", "10.4.0.2/24", 1400)];
    let (mut a, mut b, ua, ub) = joined(('g', &va), ('h', &vb));
    let port = |remote: &str| {
        format!(
            "  [[bridge.port]]\n  name = \"gnv0\"\n  type = \"geneve\"\n  options = {{ remote_ip = \"{remote}\", key = \"9\" }}\n"
        )
    };
    let (pa, pb) = (port("192.168.88.2"), port("192.168.88.1"));
    a.start(&va, &[("br-gnv", &pa)], &ua, PMD);
    b.start(
        &vb,
        &[("br-gnv", &pb)],
        &ub,
        "[pmd]\nmegaflow_idle_ms = 600000\nmgmt_cpu = 1\ncpus = [0]\n",
    );
    a.set_tep("192.168.88.1/24");
    b.set_tep("192.168.88.2/24");

    let map = "{class=0x102,type=0x80,len=4}->tun_metadata0";
    // Before the map, a flow on tun_metadata0 is refused, naming the field.
    let err = ctl_err(&a, &["add-flow", "br-gnv", "tun_metadata0=1,actions=drop"]);
    assert!(
        err.contains("tun_metadata0: not mapped to a Geneve option"),
        "{err}"
    );
    for hv in [&a, &b] {
        hv.ctl(&["add-tlv-map", "br-gnv", map]);
        hv.ctl(&[
            "add-flow",
            "br-gnv",
            "priority=100,in_port=vm0,actions=set_field:0x2a->tun_metadata0,NORMAL",
        ]);
        hv.ctl(&[
            "add-flow",
            "br-gnv",
            "priority=100,in_port=gnv0,tun_metadata0=0x2a,actions=NORMAL",
        ]);
        hv.ctl(&[
            "add-flow",
            "br-gnv",
            "priority=90,in_port=gnv0,actions=drop",
        ]);
    }
    assert_eq!(
        a.ctl(&["dump-tlv-map", "br-gnv"]),
        " max option space=32 max fields=4\n allocated option space=4\n\n mapping table:\n  class  type  length  match field\n ------  ----  ------  --------------\n  0x102  0x80  4       tun_metadata0\n"
    );
    // Refusals name the field and the reason; nothing changes.
    let err = ctl_err(
        &a,
        &[
            "add-tlv-map",
            "br-gnv",
            "{class=0x102,type=0x80,len=4}->tun_metadata1",
        ],
    );
    assert!(
        err.contains("class 0x102 type 0x80 is already mapped"),
        "{err}"
    );
    let err = ctl_err(&a, &["del-tlv-map", "br-gnv"]);
    assert!(
        err.contains("tun_metadata0: used by a flow of bridge br-gnv"),
        "{err}"
    );
    let err = ctl_err(
        &a,
        &[
            "add-flow",
            "br-gnv",
            "tun_metadata0=0x100000000,actions=drop",
        ],
    );
    assert!(err.contains("tun_metadata0: uses 33 bits"), "{err}");

    let mut cap = Capture::start(&b.sw, &ub, b.h.dir.join("underlay.pcap"), &[]);
    let (x, y) = (&a.vms[0], &b.vms[0]);
    wait_reachable(x, &y.ip, 15);
    assert_eq!(x.ping(&y.ip, 3), 3, "a -> b");
    cap.stop(&[]);
    let text = cap.read(&["-t", "-v"]);
    // tcpdump reads OVN's option (4 bytes of header, 4 of data) on every
    // echo request.
    let opt = "192.168.88.1.";
    let with_option = text
        .lines()
        .filter(|l| {
            l.contains(opt)
                && l.contains("> 192.168.88.2.6081: Geneve, Flags [none], vni 0x9, options [class Open Virtual Networking (OVN) (0x102) type 0x80(C) len 8]")
        })
        .count();
    assert!(with_option >= 3, "{text}");
    // The receiving megaflow matches the option's value.
    let rx = dp_flows_with(&b, &["br-gnv: ip,tun_id=0x9,", ",tun_metadata0=0x2a,"]);
    assert_eq!(rx.len(), 1, "{}", b.ctl(&["dump-dp-flows"]));
    let push = dp_flows_with(&a, &["br-gnv: ip,tun_dst=0.0.0.0,"]);
    assert!(
        push.iter()
            .any(|l| l.contains("geneve(vni=0x9,options({class=0x102,type=0x80,len=4,0x2a}))")),
        "{push:?}"
    );

    // a now sends 0x2b: b's drop rule takes its packets.
    a.ctl(&[
        "add-flow",
        "br-gnv",
        "priority=100,in_port=vm0,actions=set_field:0x2b->tun_metadata0,NORMAL",
    ]);
    assert_eq!(x.ping(&y.ip, 3), 0, "a -> b with 0x2b");
    let drops = b.ctl(&["dump-flows", "br-gnv"]);
    let line = drops
        .lines()
        .find(|l| l.contains("priority=90,in_port=1 actions=drop"))
        .unwrap_or_else(|| panic!("{drops}"));
    assert!(count_after(line, "n_packets=") >= 3, "{drops}");
    a.h.stop();
    b.h.stop();
}

/// A tunnel of [`gre_geneve_and_vxlan_with_a_linux_guest`] between the
/// switch's bridge `bridge` (its VM `NET.1`) and the guest's device (`NET.2`).
struct GuestTunnel {
    bridge: &'static str,
    net: &'static str,
    /// The switch's port type and options.
    kind: &'static str,
    options: &'static str,
    /// The guest's device: `vm-image.sh`'s `KIND/KEY/CSUM[/EXTRA]`.
    guest: &'static str,
    /// The inner MTU in the switch's trace; the kernel's for its device too,
    /// but for the metadata device (no path of its own: the kernel gives it
    /// its largest MTU).
    mtu: u32,
    kernel_mtu: bool,
    /// The push header of the switch's megaflow, after the outer Ethernet
    /// and IPv4 headers: its size, type and tunnel part.
    size_type: &'static str,
    tunnel: &'static str,
}

/// GRE without key, GRE with key and checksum, Geneve and VXLAN with UDP
/// checksums, and Geneve carrying OVN's option (class 0x102, type 0x80, 4
/// bytes) as `tun_metadata0`: the guest's is a metadata (`external`) device
/// whose tc filters write the option on everything it sends and let in only
/// packets that carry it with the value 0x2a.
const GUEST_TUNNELS: [GuestTunnel; 5] = [
    GuestTunnel {
        bridge: "br-gre",
        net: "10.1.0",
        kind: "gre",
        options: "",
        guest: "gretap/0/0",
        mtu: 1462,
        kernel_mtu: true,
        size_type: "size=38,type=3",
        tunnel: "gre((flags=0x0,proto=0x6558)))",
    },
    GuestTunnel {
        bridge: "br-grek",
        net: "10.2.0",
        kind: "gre",
        options: ", key = \"7\", csum = \"true\"",
        guest: "gretap/7/1",
        mtu: 1454,
        kernel_mtu: true,
        size_type: "size=46,type=3",
        tunnel: "gre((flags=0xa000,proto=0x6558),csum=0x0,key=0x7))",
    },
    GuestTunnel {
        bridge: "br-gnv",
        net: "10.3.0",
        kind: "geneve",
        options: ", key = \"9\", csum = \"true\"",
        guest: "geneve/9/1",
        mtu: 1450,
        kernel_mtu: true,
        size_type: "size=50,type=6",
        tunnel: "udp(src=0,dst=6081,csum=0xffff),geneve(vni=0x9))",
    },
    GuestTunnel {
        bridge: "br-vx",
        net: "10.4.0",
        kind: "vxlan",
        options: ", key = \"5000\", csum = \"true\"",
        guest: "vxlan/5000/1",
        mtu: 1450,
        kernel_mtu: true,
        size_type: "size=50,type=4",
        tunnel: "udp(src=0,dst=4789,csum=0xffff),vxlan(flags=0x8000000,vni=0x1388))",
    },
    GuestTunnel {
        bridge: "br-gnvo",
        net: "10.5.0",
        kind: "geneve",
        options: ", key = \"11\", dst_port = \"6082\"",
        guest: "genevex/11/0/6082,0102:80:0000002a",
        mtu: 1442,
        kernel_mtu: false,
        size_type: "size=58,type=6",
        tunnel: "udp(src=0,dst=6082,csum=0x0),geneve(vni=0xb,options({class=0x102,type=0x80,len=4,0x2a})))",
    },
];

/// Bytes the guest and the test send each other per tunnel: `seq 1 N`.
const GUEST_LINES: u32 = 20_000;

/// `seq 1 GUEST_LINES` and its SHA-256 in hex.
fn guest_data() -> (Vec<u8>, String) {
    let data: String = (1..=GUEST_LINES).map(|i| format!("{i}\n")).collect();
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(data.as_bytes())?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    let hex = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string();
    (data.into_bytes(), hex)
}

/// Kernel interop for GRE (with and without key, with checksums), Geneve
/// (plain, and with an option as `tun_metadata0`) and VXLAN with UDP
/// checksums: this machine's kernel has no `gretap` or `geneve` driver, so
/// the remote end is a QEMU guest booting Debian's cloud kernel, whose
/// `ip_gre`, `geneve` and `vxlan` modules make the devices and whose tc
/// writes and checks the Geneve option (`scripts/vm-image.sh ... tunnels`).
/// Its virtio NIC is the underlay, a `dpdkvhostuserclient` port of br-phy;
/// each tunnel has a bridge with a VM namespace on the switch's side. Both
/// ways over each tunnel: 5 pings and `seq 1 20000` over TCP, exact bytes;
/// the switch's inner MTU is the kernel's for each device with a path of its
/// own (all but the metadata one); the megaflows carry the expected
/// headers and nothing was dropped. Last, the switch writes another option
/// value and the guest's filter drops its packets.
#[test]
fn gre_geneve_and_vxlan_with_a_linux_guest() {
    let _turn = serial();
    let vms: Vec<(&str, String, u32)> = GUEST_TUNNELS
        .iter()
        .map(|t| (t.bridge, format!("{}.1/24", t.net), 1400))
        .collect();
    let vms: Vec<(&str, &str, u32)> = vms.iter().map(|(b, c, m)| (*b, c.as_str(), *m)).collect();
    let mut hv = Hypervisor::new('v', &vms);
    let dir = hv.h.dir.clone();
    let kernel = common::vm::build_image(&dir, Some("tunnels"));
    let ports: Vec<(&str, String)> = GUEST_TUNNELS
        .iter()
        .map(|t| {
            (
                t.bridge,
                format!(
                    "  [[bridge.port]]\n  name = \"t-{}\"\n  type = \"{}\"\n  options = {{ remote_ip = \"192.168.77.2\"{} }}\n",
                    t.bridge, t.kind, t.options
                ),
            )
        })
        .collect();
    let ports: Vec<(&str, &str)> = ports.iter().map(|(b, t)| (*b, t.as_str())).collect();
    let sock = dir.join("guest.sock");
    let uplink = format!(
        "  [[bridge.port]]\n  name = \"eth0\"\n  type = \"dpdkvhostuserclient\"\n  options = {{ vhost-server-path = \"{}\" }}\n",
        sock.display()
    );
    // The PMD on CPU 1, the guest on CPU 0.
    hv.start_on(
        &vms,
        &ports,
        "",
        Some(&uplink),
        "[pmd]\nmegaflow_idle_ms = 600000\ncpus = [1]\n",
        "",
    );
    hv.set_tep("192.168.77.1/24");
    // OVN's option as tun_metadata0 on br-gnvo: set to 0x2a on what its VM
    // sends; from the tunnel only what carries 0x2a is let in.
    let gnvo = GUEST_TUNNELS.len() - 1;
    let gnvo_br = GUEST_TUNNELS[gnvo].bridge;
    let set_option = |value: &str| {
        hv.ctl(&[
            "add-flow",
            gnvo_br,
            &format!(
                "priority=100,in_port=vm{gnvo},actions=set_field:{value}->tun_metadata0,NORMAL"
            ),
        ]);
    };
    hv.ctl(&[
        "add-tlv-map",
        gnvo_br,
        "{class=0x102,type=0x80,len=4}->tun_metadata0",
    ]);
    set_option("0x2a");
    hv.ctl(&[
        "add-flow",
        gnvo_br,
        &format!("priority=100,in_port=t-{gnvo_br},tun_metadata0=0x2a,actions=NORMAL"),
    ]);
    hv.ctl(&[
        "add-flow",
        gnvo_br,
        &format!("priority=90,in_port=t-{gnvo_br},actions=drop"),
    ]);

    // A TCP sink on each VM for the guest's transfer.
    let (data, sha) = guest_data();
    let sink = |ip: &str| {
        format!(
            "import hashlib, socket\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{ip}', 5001)); s.listen(1); s.settimeout(300)\n\
             c, _ = s.accept(); c.settimeout(60); h = hashlib.sha256(); n = 0\n\
             while True:\n\
             \x20   b = c.recv(65536)\n\
             \x20   if not b: break\n\
             \x20   h.update(b); n += len(b)\n\
             print(n, h.hexdigest(), flush=True)\n"
        )
    };
    let sinks: Vec<Child> = hv
        .vms
        .iter()
        .map(|vm| {
            Command::new("ip")
                .args(["netns", "exec", &vm.ns, "python3", "-c", &sink(&vm.ip)])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a TCP sink")
        })
        .collect();

    let tunnels: Vec<String> = GUEST_TUNNELS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let (kind, rest) = t.guest.split_once('/').unwrap_or_default();
            format!("g{i}/{kind}/{}.2/{rest}", t.net)
        })
        .collect();
    let serial = dir.join("guest.serial");
    let log = dir.join("guest.qemu");
    let guest = common::vm::Guest {
        kernel: &kernel,
        initrd: &dir.join("initramfs.cpio.gz"),
        append: format!(
            "fs_ip=192.168.77.2 fs_peer=192.168.77.1 fs_role=tunnels fs_lines={GUEST_LINES} fs_tunnels={}",
            tunnels.join("+")
        ),
        chardev: format!("socket,path={},server=on,wait=off", sock.display()),
        mac: "52:54:00:77:00:02",
        serial: &serial,
        log: &log,
    };
    let mut qemu = QemuGuard(guest.spawn());
    let read_serial =
        || String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    let t = Instant::now();
    wait_for(300, || read_serial().contains("FS ready")).unwrap_or_else(|| {
        panic!(
            "the guest's tunnels: no \"FS ready\" in 300 s\n--- serial:\n{}\n--- qemu:\n{}\n--- flows:\n{}",
            read_serial(),
            std::fs::read_to_string(&log).unwrap_or_default(),
            hv.ctl(&["dump-dp-flows"])
        )
    });
    eprintln!(
        "guest booted and sent over {} tunnels in {:.1} s",
        GUEST_TUNNELS.len(),
        t.elapsed().as_secs_f64()
    );
    assert!(qemu.0.try_wait().expect("qemu").is_none(), "QEMU exited");

    // Guest -> switch: its kernel's devices (MTU as the kernel computes it
    // for each), its pings all answered, its bytes all received.
    let text = read_serial();
    for (i, t) in GUEST_TUNNELS
        .iter()
        .enumerate()
        .filter(|(_, t)| t.kernel_mtu)
    {
        let line = format!("FS g{i} up mtu {}", t.mtu);
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    for (i, mut sink) in sinks.into_iter().enumerate() {
        let dev = format!("g{i}");
        assert!(
            text.contains(&format!(
                "FS {dev} ping 5 packets transmitted, 5 packets received"
            )),
            "{dev}'s pings:\n{text}"
        );
        let tx = format!("FS {dev} tx bytes={} sha256={sha}", data.len());
        assert!(text.contains(&tx), "{tx} in\n{text}");
        let mut out = String::new();
        use std::io::Read;
        sink.stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .expect("read");
        let _ = sink.wait();
        assert_eq!(
            out.trim(),
            format!("{} {sha}", data.len()),
            "{} received over {dev}",
            hv.vms[i].ns
        );
    }

    // Switch -> guest: pings and a transfer into the guest's sink, which
    // prints what it got for each connection.
    let send = |ip: &str| {
        format!(
            "import socket, sys\n\
             data = sys.stdin.buffer.read()\n\
             c = socket.create_connection(('{ip}', 5001), timeout=30)\n\
             c.sendall(data); c.shutdown(socket.SHUT_WR); c.settimeout(60)\n\
             while c.recv(65536): pass\n"
        )
    };
    for (i, t) in GUEST_TUNNELS.iter().enumerate() {
        let (br, vm) = (t.bridge, &hv.vms[i]);
        let ip = format!("{}.2", t.net);
        assert_eq!(vm.ping(&ip, 5), 5, "{br} VM -> guest");
        // The switch's inner MTU for the tunnel is the guest kernel's for
        // its device (the headers' sizes agree).
        let neigh = vm.exec(&["ip", "neigh", "show", &ip]);
        let neigh = String::from_utf8_lossy(&neigh.stdout);
        let mac = neigh
            .split(" lladdr ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("{br}: no MAC for {ip}: {neigh}"));
        let trace = hv.ctl(&[
            "ofproto-trace",
            br,
            &format!(
                "in_port=vm{i},icmp,dl_src={},dl_dst={mac},nw_src={},nw_dst={ip}",
                vm.mac(),
                vm.ip
            ),
        ]);
        let want = format!(
            "-> path MTU 1500 (br-phy): inner MTU {} (IP), longer inner packets are dropped",
            t.mtu
        );
        assert!(
            trace.lines().any(|l| l.trim() == want),
            "{br}: {want} in\n{trace}"
        );
        let mut c = Command::new("ip")
            .args(["netns", "exec", &vm.ns, "python3", "-c", &send(&ip)])
            .stdin(Stdio::piped())
            .spawn()
            .expect("TCP client");
        {
            use std::io::Write;
            c.stdin
                .take()
                .expect("stdin")
                .write_all(&data)
                .expect("send");
        }
        assert!(c.wait().expect("client").success(), "{br}: TCP to {ip}");
        let rx = format!("FS rx bytes={} sha256={sha}", data.len());
        wait_for(30, || read_serial().matches(&rx).count() > i)
            .unwrap_or_else(|| panic!("{br}: {rx} in\n{}", read_serial()));
    }

    // The pushes carry each tunnel's header to the guest's underlay MAC;
    // packets from the guest were popped on each tunnel's datapath port,
    // none refused.
    let guest_mac = "52:54:00:77:00:02";
    let tep_mac = mac_of(&hv.sw, "br-phy");
    for (i, t) in GUEST_TUNNELS.iter().enumerate() {
        let proto = if t.kind == "gre" { 47 } else { 17 };
        let header = format!(
            "header({},eth(dst={guest_mac},src={tep_mac},dl_type=0x0800),ipv4(src=192.168.77.1,dst=192.168.77.2,proto={proto},tos=0,ttl=64,frag=0x4000),{}",
            t.size_type, t.tunnel
        );
        let push = dp_flows_with(
            &hv,
            &[
                &format!("{}: ip,tun_dst=0.0.0.0,", t.bridge),
                &format!("dl_src={},", hv.vms[i].mac()),
            ],
        );
        assert_eq!(push.len(), 1, "{push:?}");
        assert!(push[0].contains(&header), "{} lacks {header}", push[0]);
    }
    // What the guest sent with the option matched tun_metadata0=0x2a.
    let with_option = dp_flows_with(&hv, &[&format!("{gnvo_br}: "), "tun_metadata0=0x2a"]);
    assert!(
        with_option.iter().map(|l| dp_packets(l)).sum::<u64>() > 100,
        "{with_option:?}"
    );
    for dp_port in [
        "gre_sys",
        "genev_sys_6081",
        "vxlan_sys_4789",
        "genev_sys_6082",
    ] {
        let stats: serde_json::Value =
            serde_json::from_str(&hv.ctl(&["--json", "port-stats", dp_port])).expect("json");
        assert!(
            stats[0]["rx_packets"].as_u64().unwrap_or(0) > 100,
            "{dp_port} popped: {stats}"
        );
    }
    let pmd = hv.ctl(&["pmd-stats-show"]);
    let refused: u64 = pmd
        .split("tnl_pop_")
        .skip(1)
        .map(|r| {
            let n = r.split('=').nth(1).unwrap_or_default();
            n.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{pmd}"))
        })
        .sum();
    assert_eq!(refused, 0, "no pop refused:\n{pmd}");

    // The switch writes 0x2b instead: the guest's filter drops its echo
    // requests (the guest's kernel reads the option the switch wrote).
    set_option("0x2b");
    let vm = &hv.vms[gnvo];
    assert_eq!(vm.ping(&format!("{}.2", GUEST_TUNNELS[gnvo].net), 3), 0);
    set_option("0x2a");
    assert_eq!(vm.ping(&format!("{}.2", GUEST_TUNNELS[gnvo].net), 3), 3);
    drop(qemu);
    hv.h.stop();
}

/// Kills QEMU when the test ends, passed or failed.
struct QemuGuard(Child);

impl Drop for QemuGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
