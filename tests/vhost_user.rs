//! vhost-user ports with DPDK `virtio_user` guests: each guest is a
//! `dpdk-testpmd` process (a second DPDK process, as a VM's virtio-net driver
//! would be) forwarding between its virtio NIC and a `net_pcap` port. Guest 1
//! replays a pcap into the switch's `dpdkvhostuser` port `vm1` (the switch owns
//! the socket); the switch forwards it to `dpdkvhostuserclient` port `vm2`,
//! whose socket guest 2 owns (`server=1`); guest 2 records what it receives.
//! The recording must equal the pcap, frame for frame.
//!
//! Then the guest of `vm2` is restarted, and the switch itself: in client mode
//! the switch reconnects to the running guest by itself, and frames flow again.
//!
//! Needs root and `dpdk-testpmd` (package `dpdk`, `scripts/setup.sh`). The guests
//! run their lcores on CPU 0, the switch's PMD on CPU 1.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{ctl, ctl_json, stop};

use pipeline::pcap;
use pipeline::trafgen::{flows, udp_frame};

use common::netns::BIN;

/// Processes and files of the test, removed on drop (also when it fails).
struct Setup {
    dir: PathBuf,
    switch: Option<Child>,
    guests: Vec<Child>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for c in self.guests.iter_mut().chain(self.switch.as_mut()) {
            stop(c);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        for p in ["fs-vhost", "fs-vhost-g1", "fs-vhost-g2"] {
            let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{p}-{}", std::process::id()));
        }
    }
}

impl Setup {
    fn ctl(&self, args: &[&str]) -> Output {
        ctl(&self.dir.join("fs.ctl"), args)
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        ctl_json(&self.dir.join("fs.ctl"), args)
    }

    /// Starts the switch and waits for its control socket.
    fn start_switch(&mut self) {
        let log = std::fs::File::create(self.dir.join("switch.log")).expect("log");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(self.dir.join("switch.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ferroswitch");
        self.switch = Some(child);
        wait("the control socket", 30, || {
            self.ctl(&["show"]).status.success()
        });
    }

    /// A testpmd guest: a virtio_user NIC on `socket` (`server`: the guest
    /// owns the socket) and a net_pcap port with `pcap_args`, forwarding
    /// between them.
    fn guest(&mut self, name: &str, socket: &Path, server: bool, pcap_args: &str) -> usize {
        let server = if server { ",server=1" } else { "" };
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log");
        let child = Command::new("dpdk-testpmd")
            .args(["--lcores", "0@0,1@0", "--no-huge", "-m", "256", "--no-pci"])
            .arg(format!(
                "--file-prefix=fs-vhost-{name}-{}",
                std::process::id()
            ))
            .arg(format!(
                "--vdev=virtio_user0,path={},queues=1{server}",
                socket.display()
            ))
            .arg(format!("--vdev=net_pcap0,{pcap_args}"))
            .args(["--", "--forward-mode=io", "--total-num-mbufs=4096", "-a"])
            // Without --no-flush-rx testpmd would read and drop the pcap before
            // forwarding; --stats-period keeps it running without a terminal.
            .args(["--no-flush-rx", "--stats-period", "1000"])
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("start dpdk-testpmd (package dpdk)");
        self.guests.push(child);
        self.guests.len() - 1
    }

    /// The `ctl --json show` entry of port `name`.
    fn port(&self, name: &str) -> serde_json::Value {
        let show = self.json(&["show"]);
        show["bridges"][0]["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no port {name} in {show}"))
    }

    fn status(&self, name: &str) -> String {
        self.port(name)["vhost"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// `ctl --json port-stats PORT`'s `field`.
    fn stat(&self, name: &str, field: &str) -> u64 {
        let v = self.json(&["port-stats", name]);
        v[0][field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} in {v}"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("switch.log")).unwrap_or_default()
    }
}

fn wait(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The frames of each flow (IPv4 addresses and UDP ports), in order.
fn by_flow(frames: &[Vec<u8>]) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
    let mut m: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for f in frames {
        let flow = f.get(26..38).unwrap_or_default().to_vec();
        m.entry(flow).or_default().push(f.clone());
    }
    m
}

/// Asserts that `got` has exactly the frames of `want`, each flow's in order
/// (while a flow's first packet is upcalled, packets of other flows may pass
/// it, as in OVS); if not, says where they part (frames are long).
fn same_frames(got: &[Vec<u8>], want: &[Vec<u8>], what: &str) {
    let (g, w) = (by_flow(got), by_flow(want));
    if g == w {
        return;
    }
    let mut detail = format!("got {} frames, want {}", got.len(), want.len());
    for (flow, wf) in &w {
        let gf = g.get(flow).cloned().unwrap_or_default();
        if &gf != wf {
            let first = gf.iter().zip(wf).position(|(a, b)| a != b);
            detail += &format!(
                "; flow {flow:02x?}: {} frames, want {}, first different frame {first:?}",
                gf.len(),
                wf.len()
            );
        }
    }
    for (flow, gf) in &g {
        if !w.contains_key(flow) {
            detail += &format!(
                "; unexpected {} frame(s) of {flow:02x?}, the first: {:02x?}",
                gf.len(),
                gf[0]
            );
        }
    }
    panic!("{what}: {detail}");
}

fn frames_of(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_default();
    pcap::read(&bytes)
        .map(|rs| rs.into_iter().map(|r| r.data).collect())
        .unwrap_or_default()
}

#[test]
fn virtio_user_guests_through_vhost_ports_and_restarts() {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("fs-vhost-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut s = Setup {
        dir: dir.clone(),
        switch: None,
        guests: Vec::new(),
    };
    // 60 UDP frames of three flows and several lengths.
    let fl = flows(3);
    let frames: Vec<Vec<u8>> = (0..60u8)
        .map(|i| udp_frame(&fl[usize::from(i % 3)], 60 + usize::from(i) * 7, i))
        .collect();
    std::fs::write(
        dir.join("in.pcap"),
        pcap::write(frames.iter().map(|f| f.as_slice())),
    )
    .expect("pcap");
    // The bridge's own tap is not part of the test: what the kernel sends
    // there (an MLD report as the tap comes and goes) is dropped instead of
    // NORMAL's flood.
    let vm2_sock = dir.join("vm2.sock");
    std::fs::write(
        dir.join("switch.toml"),
        format!(
            r#"[dpdk]
hugepages = false
memory_mb = 256
file_prefix = "fs-vhost-{pid}"
vhost_sock_dir = "{dir}/socks"
[pmd]
cpus = [1]
[control]
socket = "{dir}/fs.ctl"
[metrics]
listen = "off"
console = false
[[bridge]]
name = "fsvh{pid}"
flows = ["in_port=vm1 actions=output:vm2", "in_port=vm2 actions=output:vm1", "priority=0 actions=drop"]
  [[bridge.port]]
  name = "vm1"
  type = "dpdkvhostuser"
  [[bridge.port]]
  name = "vm2"
  type = "dpdkvhostuserclient"
  options = {{ vhost-server-path = "{vm2}" }}
"#,
            dir = dir.display(),
            vm2 = vm2_sock.display(),
        ),
    )
    .expect("config");
    s.start_switch();
    let vm1_sock = dir.join("socks/vm1");
    assert!(vm1_sock.exists(), "the switch made vm1's socket");
    assert_eq!(
        s.port("vm1")["vhost"],
        serde_json::json!({"mode": "server", "socket": vm1_sock, "status": "disconnected"})
    );

    // Guest 2 owns vm2's socket; the switch connects to it by itself.
    let out1 = dir.join("out1.pcap");
    let g2 = s.guest(
        "g2",
        &vm2_sock,
        true,
        &format!("tx_pcap={}", out1.display()),
    );
    wait("vm2 connected", 20, || s.status("vm2") == "connected");
    // Guest 1 replays the pcap into vm1: every frame reaches guest 2, in order.
    let in_pcap = dir.join("in.pcap");
    let replay = format!("rx_pcap={}", in_pcap.display());
    let g1 = s.guest("g1", &vm1_sock, false, &replay);
    wait("60 frames out of vm2", 20, || {
        s.stat("vm2", "tx_packets") >= 60
    });
    assert_eq!(s.status("vm1"), "connected");
    assert_eq!(s.stat("vm1", "rx_packets"), 60);
    assert_eq!(s.stat("vm2", "tx_packets"), 60);
    assert_eq!(s.stat("vm2", "tx_dropped"), 0);
    // Guest 2 writes its recording when it stops.
    let st = stop(&mut s.guests[g2]);
    assert!(st.is_some(), "guest 2 stops on SIGINT");
    same_frames(
        &frames_of(&out1),
        &frames,
        "guest 2 received the pcap exactly",
    );
    wait("vm2 down", 10, || s.status("vm2") == "disconnected");
    // The link watcher looks every 200 ms.
    for event in [
        "port vm2: link up",
        "port vm1: link up",
        "port vm2: link down",
    ] {
        wait(&format!("{event:?} logged"), 5, || s.log().contains(event));
    }

    // Guest 2 comes back (a VM restarted): the switch reconnects, frames flow.
    let out2 = dir.join("out2.pcap");
    let g2 = s.guest(
        "g2",
        &vm2_sock,
        true,
        &format!("tx_pcap={}", out2.display()),
    );
    wait("vm2 reconnected", 20, || s.status("vm2") == "connected");
    // Guest 1 sends the pcap again.
    stop(&mut s.guests[g1]);
    let g1 = s.guest("g1", &vm1_sock, false, &replay);
    wait("60 more frames", 20, || s.stat("vm2", "tx_packets") >= 120);
    stop(&mut s.guests[g2]);
    same_frames(&frames_of(&out2), &frames, "after the guest's restart");

    // The switch restarts with the same config while guest 2 runs: the switch
    // reconnects to it (client mode), the guest does nothing.
    let out3 = dir.join("out3.pcap");
    let g2 = s.guest(
        "g2",
        &vm2_sock,
        true,
        &format!("tx_pcap={}", out3.display()),
    );
    wait("vm2 connected", 20, || s.status("vm2") == "connected");
    let mut sw = s.switch.take().expect("switch");
    let st = stop(&mut sw).expect("the switch stops on SIGINT");
    assert!(st.success(), "switch exit status {st}");
    assert!(!vm1_sock.exists(), "the switch removed vm1's socket");
    s.start_switch();
    wait("vm2 connected after the switch's restart", 20, || {
        s.status("vm2") == "connected"
    });
    // Guest 1 lost its switch: it starts again and replays the pcap.
    stop(&mut s.guests[g1]);
    s.guest("g1", &vm1_sock, false, &replay);
    wait("60 frames after the switch's restart", 20, || {
        s.stat("vm2", "tx_packets") >= 60
    });
    stop(&mut s.guests[g2]);
    same_frames(&frames_of(&out3), &frames, "after the switch's restart");
}
