//! Helpers shared by the tests with real hosts in network namespaces
//! (`netns_bridge.rs`, `netns_bond.rs`): hosts, veths, the daemon, `ctl`.
//! Each test binary uses some of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ferroswitch");

/// One test at a time: one PMD polling at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a command; its output.
pub fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

/// Whether this kernel can make `ip link add ... type KIND` devices (the test
/// VM's kernel has no bonding driver, for one).
pub fn link_kind_available(kind: &str) -> bool {
    let name = format!("fsk{:05}", std::process::id() % 100_000);
    let ok = run(&["ip", "link", "add", &name, "type", kind])
        .status
        .success();
    if ok {
        let _ = run(&["ip", "link", "del", &name]);
    }
    ok
}

/// Runs a command that must succeed.
pub fn must(args: &[&str]) -> String {
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

/// A unique prefix for this test's names: `f` + 5 digits of the pid + the
/// test's letter (7 bytes; interface names allow 15).
pub fn prefix(letter: char) -> String {
    format!("f{:05}{letter}", std::process::id() % 100_000)
}

/// A /24 of this test: 10.X.Y.0 from the pid and the test's letter, so that
/// the root namespace's address of one run does not meet another's.
pub fn subnet(letter: char) -> String {
    let n = std::process::id() as usize * 4 + (letter as usize % 4);
    format!("10.{}.{}", 100 + (n / 250) % 150, n % 250)
}

/// One host: a namespace and its veth.
#[derive(Clone)]
pub struct Host {
    pub ns: String,
    /// The veth end inside the namespace.
    pub dev: String,
    pub ip: String,
}

impl Host {
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", &self.ns];
        v.extend_from_slice(args);
        run(&v)
    }

    pub fn mac(&self) -> String {
        let out = self.exec(&["cat", &format!("/sys/class/net/{}/address", self.dev)]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `ping -c count` to `ip`: the number of replies.
    pub fn ping(&self, ip: &str, count: u32) -> u32 {
        let out = self.exec(&[
            "ping",
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            ip,
        ]);
        replies(&out)
    }
}

/// The "N received" of ping's summary.
pub fn replies(out: &Output) -> u32 {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(" packets transmitted, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no ping summary in: {text}"))
}

/// The test's hosts, bridge and daemon; everything is removed on drop.
pub struct Hosts {
    pub prefix: String,
    pub bridge: String,
    pub hosts: Vec<Host>,
    /// The veth ends in the root namespace, one per host (the bridge's ports).
    pub host_veths: Vec<String>,
    pub daemon: Option<Child>,
    pub dir: PathBuf,
    pub sock: PathBuf,
    /// The test's /24 (`10.X.Y`).
    pub net: String,
    /// The network namespace the daemon runs in, `None` for the root one
    /// (removed on drop). Two daemons' `net_af_packet` ports in one namespace
    /// may pick the same `PACKET_FANOUT` group id (DPDK derives it from the
    /// pid and the interface index) and fail to start.
    pub daemon_ns: Option<String>,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            stop_daemon(&mut c);
        }
        for h in &self.hosts {
            let _ = run(&["ip", "netns", "del", &h.ns]);
        }
        if let Some(ns) = &self.daemon_ns {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        for v in &self.host_veths {
            // Gone with its peer's namespace, unless that failed.
            if Path::new("/sys/class/net").join(v).exists() {
                let _ = run(&["ip", "link", "del", v]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/fs-netns-{}", self.prefix));
    }
}

/// SIGINT, then SIGKILL if it has not stopped within 5 s.
pub fn stop_daemon(c: &mut Child) -> Option<std::process::ExitStatus> {
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

impl Hosts {
    /// `n` hosts `<prefix>-ns<i>` with IPs `<subnet>.<i+1>/24` on veths
    /// `<prefix>n<i>` (namespace side) and `<prefix>h<i>` (root side).
    pub fn new(letter: char, n: usize) -> Hosts {
        let prefix = prefix(letter);
        let dir = std::env::temp_dir().join(format!("fs-netns-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut h = Hosts {
            bridge: format!("{prefix}br"),
            hosts: Vec::new(),
            host_veths: Vec::new(),
            daemon: None,
            sock: dir.join("fs.ctl"),
            dir,
            prefix: prefix.clone(),
            net: subnet(letter),
            daemon_ns: None,
        };
        let net = h.net.clone();
        for i in 0..n {
            let ns = format!("{prefix}-ns{i}");
            let dev = format!("{prefix}n{i}");
            let hv = format!("{prefix}h{i}");
            // Leftovers of a killed earlier run with the same pid.
            let _ = run(&["ip", "netns", "del", &ns]);
            let _ = run(&["ip", "link", "del", &hv]);
            must(&["ip", "netns", "add", &ns]);
            h.hosts.push(Host {
                ns: ns.clone(),
                dev: dev.clone(),
                ip: format!("{net}.{}", i + 1),
            });
            must(&[
                "ip", "link", "add", &hv, "type", "veth", "peer", "name", &dev,
            ]);
            h.host_veths.push(hv.clone());
            must(&["ip", "link", "set", &dev, "netns", &ns]);
            // The root side is only a wire into the switch: no IPv6 chatter.
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{hv}/disable_ipv6"), "1");
            must(&["ip", "link", "set", &hv, "up"]);
            let host = &h.hosts[i];
            let nsx = |args: &[&str]| {
                let mut v = vec!["ip", "netns", "exec", ns.as_str()];
                v.extend_from_slice(args);
                must(&v);
            };
            nsx(&["ethtool", "-K", &dev, "tx", "off"]);
            nsx(&["ip", "addr", "add", &format!("{}/24", host.ip), "dev", &dev]);
            nsx(&["ip", "link", "set", &dev, "up"]);
            nsx(&["ip", "link", "set", "lo", "up"]);
        }
        h
    }

    /// A host with two links to the switch: a Linux device made with
    /// `link_args` (`type bond mode 802.3ad ...`, or `type bridge stp_state 0`)
    /// over two veths, enslaved in order; returns the host (its `dev` is that
    /// device) and the two root-side veth ends, in the same order (both also in
    /// `host_veths`, removed on drop). Its IP is `<subnet>.100`.
    pub fn add_two_link_host(&mut self, link_args: &[&str]) -> (Host, [String; 2]) {
        let p = &self.prefix;
        let ns = format!("{p}-nsb");
        let bond = format!("{p}bd");
        let _ = run(&["ip", "netns", "del", &ns]);
        must(&["ip", "netns", "add", &ns]);
        let ip = format!("{}.100", self.net);
        let host = Host {
            ns: ns.clone(),
            dev: bond.clone(),
            ip: ip.clone(),
        };
        // In the guard's list before anything can fail.
        self.hosts.push(host.clone());
        let nsx = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", ns.as_str()];
            v.extend_from_slice(args);
            must(&v);
        };
        let mut add = vec!["ip", "link", "add", bond.as_str()];
        add.extend_from_slice(link_args);
        nsx(&add);
        let mut roots = Vec::new();
        for i in 0..2 {
            let hv = format!("{p}b{i}");
            let dev = format!("{p}m{i}");
            let _ = run(&["ip", "link", "del", &hv]);
            must(&[
                "ip", "link", "add", &hv, "type", "veth", "peer", "name", &dev,
            ]);
            self.host_veths.push(hv.clone());
            must(&["ip", "link", "set", &dev, "netns", &ns]);
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{hv}/disable_ipv6"), "1");
            must(&["ip", "link", "set", &hv, "up"]);
            nsx(&["ethtool", "-K", &dev, "tx", "off"]);
            nsx(&["ip", "link", "set", &dev, "master", &bond]);
            nsx(&["ip", "link", "set", &dev, "up"]);
            roots.push(hv);
        }
        let _ = run(&[
            "ip", "netns", "exec", &ns, "ethtool", "-K", &bond, "tx", "off",
        ]);
        // A fixed MAC: a bridge otherwise takes its ports' lowest, which
        // could change under the hosts' ARP caches when a link goes.
        if link_args.contains(&"bridge") {
            nsx(&["ip", "link", "set", &bond, "address", "02:00:00:00:be:01"]);
        }
        nsx(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &bond]);
        nsx(&["ip", "link", "set", &bond, "up"]);
        nsx(&["ip", "link", "set", "lo", "up"]);
        let [a, b]: [String; 2] = roots.try_into().expect("two veths");
        (host, [a, b])
    }

    /// Runs the daemon in a network namespace of its own, `<prefix>-sw`, and
    /// moves the root-side veths (the bridge's ports) there.
    pub fn use_daemon_namespace(&mut self) {
        let ns = format!("{}-sw", self.prefix);
        let _ = run(&["ip", "netns", "del", &ns]);
        must(&["ip", "netns", "add", &ns]);
        for v in &self.host_veths {
            must(&["ip", "link", "set", v, "netns", &ns]);
            must(&["ip", "netns", "exec", &ns, "ip", "link", "set", v, "up"]);
        }
        must(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        self.daemon_ns = Some(ns);
    }

    /// Writes the config (bridge with one af_packet port per host, `port_keys`
    /// of host i added to its port table), starts the daemon and waits until its
    /// control socket answers.
    pub fn start(&mut self, port_keys: &[&str]) {
        let mut ports = String::new();
        for (i, hv) in self.host_veths.iter().enumerate() {
            ports.push_str(&format!(
                "  [[bridge.port]]\n  name = \"p{i}\"\n  options = {{ dpdk-devargs = \"net_af_packet{i},iface={hv}\" }}\n{}\n",
                port_keys.get(i).copied().unwrap_or("")
            ));
        }
        self.start_with_ports(&ports);
    }

    /// Writes the config with `ports` (`[[bridge.port]]` tables) as the
    /// bridge's ports, starts the daemon and waits until its control socket
    /// answers.
    pub fn start_with_ports(&mut self, ports: &str) {
        let mut cfg = self.base_config();
        cfg.push_str(&format!("[[bridge]]\nname = \"{}\"\n", self.bridge));
        cfg.push_str(ports);
        self.launch(&cfg);
    }

    /// The daemon's settings, without bridges.
    pub fn base_config(&self) -> String {
        format!(
            r#"[dpdk]
hugepages = false
memory_mb = 256
file_prefix = "fs-netns-{prefix}"
log_level = "warning"
[control]
socket = "{sock}"
[metrics]
listen = "off"
console = false
"#,
            prefix = self.prefix,
            sock = self.sock.display(),
        )
    }

    /// Writes `cfg`, starts the daemon on it and waits until its control socket
    /// answers.
    pub fn launch(&mut self, cfg: &str) {
        let path = self.dir.join("switch.toml");
        std::fs::write(&path, cfg).expect("write config");
        let mut cmd = match &self.daemon_ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                // `ip netns exec` execs the daemon: the child is the daemon.
                c.args(["netns", "exec", ns, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferroswitch");
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.daemon.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    let out = self.daemon.take().map(|c| c.wait_with_output());
                    let err = out
                        .and_then(Result::ok)
                        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                        .unwrap_or_default();
                    panic!("ferroswitch exited ({st}): {err}");
                }
            }
            if self.ctl(&["show"]).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ferroswitch did not start in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("ctl")
            .arg("--socket")
            .arg(&self.sock)
            .args(args)
            .output()
            .expect("run ferroswitch ctl")
    }

    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctl --json fdb-show`: (port, vlan, mac) entries.
    pub fn fdb(&self) -> Vec<(String, u64, String)> {
        let out = self.ctl_ok(&["--json", "fdb-show", &self.bridge]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("fdb json");
        v.as_array()
            .expect("fdb array")
            .iter()
            .map(|e| {
                (
                    e["port_name"].as_str().unwrap_or_default().to_string(),
                    e["vlan"].as_u64().unwrap_or(u64::MAX),
                    e["mac"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Stops the daemon with SIGINT: it must exit 0 (taps removed, EAL cleaned).
    pub fn stop(&mut self) {
        let mut c = self.daemon.take().expect("daemon running");
        let st = stop_daemon(&mut c).expect("daemon stops within 5 s of SIGINT");
        assert!(st.success(), "daemon exit status {st}");
    }
}

/// Pings until one reply comes back (ARP and the first upcalls settle), at most
/// `secs` seconds.
pub fn wait_reachable(from: &Host, ip: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while from.ping(ip, 1) == 0 {
        assert!(
            Instant::now() < deadline,
            "{} cannot reach {ip} in {secs} s",
            from.ns
        );
    }
}

/// One line from `r`, without its newline, read a byte at a time so that
/// nothing after it is consumed (the rest stays in the pipe).
pub fn read_line(r: &mut impl std::io::Read) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while r.read(&mut b).map(|n| n == 1).unwrap_or(false) && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// TCP from `client` to `server` through the switch: `len` bytes of a known
/// pattern; returns (bytes received, SHA-256 the server computed, SHA-256 the
/// client computed of what it sent).
pub fn tcp_transfer(server: &Host, client: &Host, len: usize) -> (usize, String, String) {
    let port = "5201";
    let srv = format!(
        "import hashlib, socket\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{ip}', {port})); s.listen(1); s.settimeout(20)\n\
         print('listening', flush=True)\n\
         c, _ = s.accept(); c.settimeout(20); h = hashlib.sha256(); n = 0\n\
         while True:\n\
         \x20   b = c.recv(65536)\n\
         \x20   if not b: break\n\
         \x20   h.update(b); n += len(b)\n\
         print(n, h.hexdigest(), flush=True)\n",
        ip = server.ip
    );
    let cli = format!(
        "import hashlib, socket, time\n\
         data = bytes((i * 7 + i // 251) % 256 for i in range({len}))\n\
         for _ in range(50):\n\
         \x20   try:\n\
         \x20       c = socket.create_connection(('{ip}', {port}), timeout=5); break\n\
         \x20   except OSError:\n\
         \x20       time.sleep(0.1)\n\
         c.sendall(data); c.shutdown(socket.SHUT_WR); c.settimeout(20)\n\
         while c.recv(65536): pass\n\
         print(len(data), hashlib.sha256(data).hexdigest(), flush=True)\n",
        ip = server.ip
    );
    let mut server_proc = Command::new("ip")
        .args(["netns", "exec", &server.ns, "python3", "-c", &srv])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the TCP server");
    // Wait for "listening" so the client's first connect finds the socket.
    let mut stdout = server_proc.stdout.take().expect("server stdout");
    assert_eq!(read_line(&mut stdout), "listening");
    let client_out = client.exec(&["python3", "-c", &cli]);
    assert!(
        client_out.status.success(),
        "TCP client: {}",
        String::from_utf8_lossy(&client_out.stderr)
    );
    let server_out = {
        use std::io::Read;
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest);
        let st = server_proc.wait().expect("server");
        assert!(st.success(), "TCP server exited {st}");
        rest
    };
    let mut it = server_out.split_whitespace();
    let n: usize = it
        .next()
        .and_then(|s| s.parse().ok())
        .expect("server count");
    let server_sum = it.next().unwrap_or_default().to_string();
    let client_text = String::from_utf8_lossy(&client_out.stdout).into_owned();
    let mut it = client_text.split_whitespace();
    assert_eq!(it.next(), Some(len.to_string().as_str()));
    (n, server_sum, it.next().unwrap_or_default().to_string())
}
