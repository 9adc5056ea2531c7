//! Real hosts on two bridges joined by a patch pair: namespace A on bridge 1,
//! namespace B on bridge 2, both bridges plain learning switches (`NORMAL`),
//! joined by patch ports `<prefix>pa` / `<prefix>pb`. The hosts ping each other
//! through both bridges; each bridge learned the far host behind its patch port.
//!
//! As `tests/netns_bridge.rs`: each host is a namespace with one end of a veth
//! pair (an IP, TX checksum offload off), the other end a `net_af_packet` port
//! of its bridge; the real `ferroswitch` binary runs with a config the test
//! writes. Needs root, `ip`, `ethtool` and `ping`. Names carry the test process
//! id; [`Setup`] removes namespaces, veths and the daemon when dropped, also when
//! the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferroswitch");

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

fn must(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces, veths and the daemon; all removed on drop.
struct Setup {
    prefix: String,
    namespaces: Vec<String>,
    veths: Vec<String>,
    daemon: Option<Child>,
    dir: PathBuf,
    sock: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            stop_daemon(&mut c);
        }
        for ns in &self.namespaces {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        for v in &self.veths {
            if Path::new("/sys/class/net").join(v).exists() {
                let _ = run(&["ip", "link", "del", v]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/fs-patch-{}", self.prefix));
    }
}

/// SIGINT, then SIGKILL if it has not stopped within 5 s.
fn stop_daemon(c: &mut Child) -> Option<std::process::ExitStatus> {
    let _ = run(&["kill", "-INT", &c.id().to_string()]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = c.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
    None
}

impl Setup {
    fn ns_exec(&self, i: usize, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", self.namespaces[i].as_str()];
        v.extend_from_slice(args);
        run(&v)
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("ctl")
            .arg("--socket")
            .arg(&self.sock)
            .args(args)
            .output()
            .expect("run ferroswitch ctl")
    }

    fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ping -c count` from namespace `i`: the number of replies.
    fn ping(&self, i: usize, ip: &str, count: u32) -> u32 {
        let out = self.ns_exec(
            i,
            &[
                "ping",
                "-n",
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-W",
                "1",
                ip,
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| {
                let (_, rest) = l.split_once(" packets transmitted, ")?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no ping summary in: {text}"))
    }

    fn mac(&self, i: usize, dev: &str) -> String {
        let out = self.ns_exec(i, &["cat", &format!("/sys/class/net/{dev}/address")]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

#[test]
fn two_hosts_on_two_bridges_joined_by_patch_ports_ping() {
    let prefix = format!("f{:05}p", std::process::id() % 100_000);
    let dir = std::env::temp_dir().join(format!("fs-patch-{prefix}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut s = Setup {
        prefix: prefix.clone(),
        namespaces: Vec::new(),
        veths: Vec::new(),
        daemon: None,
        sock: dir.join("fs.ctl"),
        dir,
    };
    let n = std::process::id() as usize;
    let net = format!("10.{}.{}", 100 + (n / 250) % 150, n % 250);
    let ips = [format!("{net}.1"), format!("{net}.2")];
    for (i, ip) in ips.iter().enumerate() {
        let ns = format!("{prefix}-ns{i}");
        let dev = format!("{prefix}n{i}");
        let hv = format!("{prefix}h{i}");
        let _ = run(&["ip", "netns", "del", &ns]);
        let _ = run(&["ip", "link", "del", &hv]);
        must(&["ip", "netns", "add", &ns]);
        s.namespaces.push(ns.clone());
        must(&[
            "ip", "link", "add", &hv, "type", "veth", "peer", "name", &dev,
        ]);
        s.veths.push(hv.clone());
        must(&["ip", "link", "set", &dev, "netns", &ns]);
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{hv}/disable_ipv6"), "1");
        must(&["ip", "link", "set", &hv, "up"]);
        for args in [
            vec!["ethtool", "-K", &dev, "tx", "off"],
            vec!["ip", "addr", "add", &format!("{ip}/24"), "dev", &dev],
            vec!["ip", "link", "set", &dev, "up"],
        ] {
            let mut v = vec!["ip", "netns", "exec", ns.as_str()];
            v.extend_from_slice(&args);
            must(&v);
        }
    }

    let (br1, br2) = (format!("{prefix}b1"), format!("{prefix}b2"));
    let (pa, pb) = (format!("{prefix}pa"), format!("{prefix}pb"));
    let cfg = format!(
        r#"[dpdk]
hugepages = false
memory_mb = 256
file_prefix = "fs-patch-{prefix}"
log_level = "warning"
[control]
socket = "{sock}"
[metrics]
listen = "off"
console = false
[[bridge]]
name = "{br1}"
  [[bridge.port]]
  name = "p0"
  options = {{ dpdk-devargs = "net_af_packet0,iface={h0}" }}
  [[bridge.port]]
  name = "{pa}"
  type = "patch"
  options = {{ peer = "{pb}" }}
[[bridge]]
name = "{br2}"
  [[bridge.port]]
  name = "{pb}"
  type = "patch"
  options = {{ peer = "{pa}" }}
  [[bridge.port]]
  name = "p1"
  options = {{ dpdk-devargs = "net_af_packet1,iface={h1}" }}
"#,
        sock = s.sock.display(),
        h0 = s.veths[0],
        h1 = s.veths[1],
    );
    let path = s.dir.join("switch.toml");
    std::fs::write(&path, cfg).expect("write config");
    s.daemon = Some(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ferroswitch"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s.ctl(&["show"]).status.success() {
        if let Some(Ok(Some(st))) = s.daemon.as_mut().map(Child::try_wait) {
            panic!("ferroswitch exited ({st})");
        }
        assert!(
            Instant::now() < deadline,
            "ferroswitch did not start in 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let show = s.ctl_ok(&["show"]);
    assert!(
        show.contains(&format!(
            "        Port {pa}\n            Interface {pa}\n                type: patch\n                options: {{peer={pb}}}\n"
        )),
        "{show}"
    );

    // The first ping may lose its first request to ARP; then every one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.ping(0, &ips[1], 1) == 0 {
        assert!(
            Instant::now() < deadline,
            "no reply through the patch ports in 10 s"
        );
    }
    assert_eq!(s.ping(0, &ips[1], 5), 5, "ns0 -> ns1");
    assert_eq!(s.ping(1, &ips[0], 5), 5, "ns1 -> ns0");

    // Each bridge learned its own host on its port (1) and the far host
    // behind its patch port (br1: pa is 2; br2: pb is 1, p1 is 2).
    let (m0, m1) = (
        s.mac(0, &format!("{prefix}n0")),
        s.mac(1, &format!("{prefix}n1")),
    );
    let fdb = |br: &str| -> Vec<(String, String)> {
        let out = s.ctl_ok(&["--json", "fdb-show", br]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("fdb json");
        let mut rows: Vec<(String, String)> = v
            .as_array()
            .expect("fdb array")
            .iter()
            .map(|e| {
                (
                    e["port_name"].as_str().unwrap_or_default().to_string(),
                    e["mac"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        rows.sort();
        rows
    };
    let mut want1 = vec![("1".to_string(), m0.clone()), ("2".to_string(), m1.clone())];
    want1.sort();
    assert_eq!(fdb(&br1), want1);
    let mut want2 = vec![("1".to_string(), m0), ("2".to_string(), m1)];
    want2.sort();
    assert_eq!(fdb(&br2), want2);

    let mut c = s.daemon.take().expect("daemon running");
    let st = stop_daemon(&mut c).expect("daemon stops within 5 s of SIGINT");
    assert!(st.success(), "daemon exit status {st}");
}
