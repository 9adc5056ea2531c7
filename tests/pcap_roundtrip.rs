//! End to end through the real daemon: a known pcap in by net_pcap `rx_pcap`, through
//! the switch's static forwarding, out by net_pcap `tx_pcap`; the output must equal
//! the input byte for byte and every counter must be exact — as `ctl port-stats
//! --json`, `ctl show` and `GET /metrics` report them while the daemon runs, and in
//! the final counters it prints after SIGINT.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pipeline::{pcap, trafgen};

const BIN: &str = env!("CARGO_BIN_EXE_ferroswitch");

struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ctl(sock: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(sock)
        .args(args)
        .output()
        .expect("run ferroswitch ctl")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to metrics");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

/// The frames that must come out: UDP of sizes from 60 to 1514, a frame that is
/// exactly an Ethernet header, an ARP request and a truncated IPv4 packet (static
/// forwarding passes what it cannot parse; only runts are dropped).
fn frames() -> Vec<Vec<u8>> {
    let flows = trafgen::flows(16);
    let mut v: Vec<Vec<u8>> = (0..200)
        .map(|i| trafgen::udp_frame(&flows[i % flows.len()], 60 + (i * 37) % 1455, i as u8))
        .collect();
    let mut eth_only = vec![0u8; 14];
    eth_only[..6].copy_from_slice(&[0xff; 6]);
    eth_only[12..14].copy_from_slice(&[0x88, 0xb5]);
    v.push(eth_only);
    let mut arp = Vec::new();
    arp.extend_from_slice(&[0xff; 6]);
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1]);
    arp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    arp.resize(60, 0);
    v.push(arp);
    let mut cut = trafgen::udp_frame(&flows[0], 200, 7);
    cut.truncate(30);
    v.push(cut);
    v
}

#[test]
fn pcap_through_the_daemon_byte_for_byte_with_exact_counters() {
    let dir = std::env::temp_dir().join(format!("fs-pcap-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let input = frames();
    // Into the switch: the frames, with a 10-byte runt in the middle (dropped).
    let runt = vec![0xee_u8; 10];
    let mut sent: Vec<&[u8]> = input.iter().map(|f| f.as_slice()).collect();
    sent.insert(100, &runt);
    let in_pcap = dir.join("in.pcap");
    let out_pcap = dir.join("out.pcap");
    std::fs::write(&in_pcap, pcap::write(sent.iter().copied())).expect("write pcap");
    let sock = dir.join("fs.ctl");
    // The bridge's own port is a tap device of its name in the host: unique
    // per test process.
    let br = format!("fs-rt-{}", std::process::id());
    let metrics = format!("127.0.0.1:{}", free_port());
    let cfg = format!(
        r#"[dpdk]
hugepages = false
memory_mb = 256
file_prefix = "fs-pcap-rt-{pid}"
log_level = "warning"
[control]
socket = "{sock}"
[metrics]
listen = "{metrics}"
console = false
[[bridge]]
name = "{br}"
  [[bridge.port]]
  name = "in0"
  ofport = 5
  options = {{ dpdk-devargs = "net_pcap0,rx_pcap={inp}" }}
  [[bridge.port]]
  name = "out0"
  options = {{ dpdk-devargs = "net_pcap1,tx_pcap={outp}" }}
  [[bridge.forward]]
  in_port = "in0"
  output = "out0"
"#,
        pid = std::process::id(),
        sock = sock.display(),
        br = br,
        inp = in_pcap.display(),
        outp = out_pcap.display(),
    );
    let cfg_path = dir.join("rt.toml");
    std::fs::write(&cfg_path, cfg).expect("write config");
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferroswitch");
    let mut d = Daemon {
        child: Some(child),
        dir: dir.clone(),
    };

    // Wait until every input packet was received and sent.
    let n = input.len() as u64;
    let in_bytes: u64 = input.iter().map(|f| f.len() as u64).sum();
    let runt_len = runt.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let stats = loop {
        if let Some(c) = d.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                let out = d.child.take().unwrap().wait_with_output().unwrap();
                panic!(
                    "daemon exited early ({st}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let out = ctl(&sock, &["--json", "port-stats"]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            let tx = v
                .as_array()
                .and_then(|a| a.iter().find(|p| p["name"] == "out0"))
                .and_then(|p| p["tx_packets"].as_u64())
                .unwrap_or(0);
            if tx >= n {
                break v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "switch did not forward the pcap in 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let port = |name: &str| {
        stats
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no port {name} in {stats}"))
    };
    let (in0, out0) = (port("in0"), port("out0"));
    assert_eq!(in0["ofport"], 5);
    assert_eq!(out0["ofport"], 1, "lowest free OpenFlow number");
    assert_eq!(in0["rx_packets"], n + 1);
    assert_eq!(in0["rx_bytes"], in_bytes + runt_len);
    assert_eq!(in0["tx_packets"], 0);
    assert_eq!(out0["tx_packets"], n);
    assert_eq!(out0["tx_bytes"], in_bytes);
    assert_eq!(out0["rx_packets"], 0);
    for p in [&in0, &out0] {
        for k in ["rx_dropped", "tx_dropped", "rx_errors", "tx_errors"] {
            assert_eq!(p[k], 0, "{k} of {}", p["name"]);
        }
    }

    // ctl show: the bridge tree.
    let show = ctl(&sock, &["show"]);
    assert!(show.status.success());
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains(&format!("    Bridge {br}\n")), "{show}");
    // The bridge's own internal port, as ovs-vsctl shows it; its tap starts down.
    assert!(
        show.contains(&format!(
            "        Port {br}\n            Interface {br}\n                type: internal\n                link_state: down\n"
        )),
        "{show}"
    );
    assert!(
        show.contains("        Port in0\n            Interface in0\n"),
        "{show}"
    );
    assert!(show.contains("                type: dpdk\n"), "{show}");
    // An unknown command is an error naming it.
    let bad = ctl(&sock, &["no-such-command"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no-such-command"));

    // The same figures on /metrics.
    let body = http_get(&metrics, "/metrics");
    assert!(
        body.starts_with("HTTP/1.1 200") || body.starts_with("HTTP/1.0 200"),
        "{body}"
    );
    for line in [
        format!(
            "ferroswitch_port_rx_packets_total{{bridge=\"{br}\",port=\"in0\"}} {}",
            n + 1
        ),
        format!("ferroswitch_port_tx_packets_total{{bridge=\"{br}\",port=\"out0\"}} {n}"),
        format!("ferroswitch_port_tx_bytes_total{{bridge=\"{br}\",port=\"out0\"}} {in_bytes}"),
        "ferroswitch_pmd_drops_total{pmd=\"0\",reason=\"runt\"} 1".to_string(),
        "ferroswitch_pmd_drops_total{pmd=\"0\",reason=\"no_forward\"} 0".to_string(),
        "ferroswitch_pmd_drops_total{pmd=\"0\",reason=\"tx_full\"} 0".to_string(),
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in:\n{body}"
        );
    }

    // SIGINT: clean stop, exit 0, final counters printed, tx pcap written.
    let child = d.child.take().expect("daemon");
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("final counters"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{br}/out0: rx 0 pkts 0 bytes, tx {n} pkts {in_bytes} bytes"
        )),
        "{stdout}"
    );
    assert!(!sock.exists(), "control socket removed on stop");

    let got = pcap::read(&std::fs::read(&out_pcap).expect("read tx pcap")).expect("parse tx pcap");
    assert_eq!(got.len(), input.len());
    for (i, (g, s)) in got.iter().zip(&input).enumerate() {
        assert_eq!(&g.data, s, "packet {i} differs");
    }
}

#[test]
fn config_errors_name_the_field_and_start_nothing() {
    let dir = std::env::temp_dir().join(format!("fs-cfg-err-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cases = [
        (
            "[[bridge]]\nname = \"br0\"\n[[bridge.port]]\nname = \"p0\"\ntype = \"bogus\"\n",
            "unknown port type \"bogus\"",
        ),
        ("[pmd]\ncpus = [4096]\n", "pmd.cpus[0]: CPU 4096 out of range"),
        ("[dpdk]\nhugepage = true\n", "hugepage"),
        (
            "[[bridge]]\nname = \"br0\"\n[[bridge.port]]\nname = \"p0\"\noptions = { dpdk-devargs = \"xyz\" }\n",
            "options.dpdk-devargs",
        ),
        (
            "[[bridge]]\nname = \"br0\"\n[[bridge.port]]\nname = \"p0\"\noptions = { dpdk-devargs = \"net_null0\" }\n[[bridge.port]]\nname = \"p0\"\noptions = { dpdk-devargs = \"net_null1\" }\n",
            "duplicate port name \"p0\"",
        ),
    ];
    for (i, (toml, want)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, toml).expect("write");
        let out = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} must fail");
        assert!(err.contains(want), "case {i}: {err:?} lacks {want:?}");
        assert!(!err.contains("EAL"), "case {i}: EAL must not start: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
