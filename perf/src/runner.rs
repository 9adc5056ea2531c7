//! Runs ferroswitch and dpdk-testpmd (and, with `--peer ovs`, Open vSwitch with
//! DPDK) on the same virtual devices, one after the other, and measures each over a
//! window after a warm-up.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pipeline::{pcap, trafgen};

use crate::{ovs, procstat};

/// Optional contenders besides ferroswitch and testpmd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// Open vSwitch with the DPDK datapath (Debian's openvswitch-switch-dpdk).
    Ovs,
}

pub struct Opts {
    pub window: u64,
    pub warmup: u64,
    pub reps: usize,
    pub fwd_cpu: usize,
    pub main_cpu: usize,
    pub ferroswitch: Option<PathBuf>,
    pub peers: Vec<Peer>,
}

impl Opts {
    fn has_peer(&self, p: Peer) -> bool {
        self.peers.contains(&p)
    }
}

/// One measurement window of one contender.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Packets per second of wall-clock time, in millions.
    pub wall_mpps: f64,
    /// Packets per second of the forwarding thread's own CPU time, in millions.
    pub cpu_mpps: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn hugepages_free() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The ferroswitch binary to measure: the given one, or target/release/ferroswitch
/// (built first).
fn ferroswitch_bin(opts: &Opts) -> Result<PathBuf> {
    if let Some(p) = &opts.ferroswitch {
        return Ok(p.clone());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new("cargo")
        .args(["build", "--release", "--bin", "ferroswitch"])
        .current_dir(&root)
        .status()
        .context("running cargo build --release --bin ferroswitch")?;
    if !status.success() {
        bail!("building ferroswitch failed");
    }
    Ok(root.join("target/release/ferroswitch"))
}

/// Port-to-port: 64-byte frames from net_pcap infinite_rx to net_null.
pub fn p2p(opts: &Opts) -> Result<()> {
    if hugepages_free() < 512 {
        bail!(
            "perf needs at least 512 free hugepages (have {}): run scripts/setup.sh",
            hugepages_free()
        );
    }
    if opts.has_peer(Peer::Ovs) {
        ovs::check_installed()?;
        let stray = ovs::stray_vswitchds();
        if !stray.is_empty() {
            eprintln!(
                "p2p: warning: ovs-vswitchd already running (pid {stray:?}): it may poll a core \
                 and spoil every figure; stop it (service openvswitch-switch stop)"
            );
        }
    }
    let bin = ferroswitch_bin(opts)?;
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("ferroswitch-perf-{pid}"));
    std::fs::create_dir_all(&dir)?;
    // The work directory and the DPDK runtime directories of this run's contenders
    // go away on every path, errors included.
    let mut leftovers = vec![dir.clone(), dpdk_runtime_dir(&format!("fs-perf-{pid}"))];
    leftovers.extend((1..=opts.reps).map(|r| dpdk_runtime_dir(&format!("fs-perf-tp-{pid}-{r}"))));
    let _cleanup = RemoveOnDrop(leftovers);
    let flow = trafgen::flows(1)[0];
    let frames: Vec<Vec<u8>> = (0..64).map(|i| trafgen::udp_frame(&flow, 64, i)).collect();
    let pcap_path = dir.join("p2p-64.pcap");
    std::fs::write(&pcap_path, pcap::write(frames.iter().map(|f| f.as_slice())))?;
    let src = format!("net_pcap0,rx_pcap={},infinite_rx=1", pcap_path.display());
    let sink = "net_null0,no-rx=1".to_string();
    let ovs_setup = ovs::Setup::p2p(&src, &sink);

    let mut fs = Vec::new();
    let mut tp = Vec::new();
    let mut ov = Vec::new();
    for rep in 1..=opts.reps {
        let f = run_ferroswitch(opts, &bin, &dir, &src, &sink, rep)?;
        eprintln!(
            "p2p rep {rep}: ferroswitch {:.2} Mpps wall, {:.2} Mpps on-CPU",
            f.wall_mpps, f.cpu_mpps
        );
        fs.push(f);
        let t = run_testpmd(opts, &src, &sink, rep)?;
        eprintln!(
            "p2p rep {rep}: testpmd     {:.2} Mpps wall, {:.2} Mpps on-CPU",
            t.wall_mpps, t.cpu_mpps
        );
        tp.push(t);
        if opts.has_peer(Peer::Ovs) {
            let o = ovs::throughput(opts, &ovs_setup, rep)?;
            eprintln!(
                "p2p rep {rep}: ovs         {:.2} Mpps wall, {:.2} Mpps on-CPU",
                o.wall_mpps, o.cpu_mpps
            );
            ov.push(o);
        }
    }
    let fs_wall = median(fs.iter().map(|s| s.wall_mpps).collect());
    let tp_wall = median(tp.iter().map(|s| s.wall_mpps).collect());
    let fs_cpu = median(fs.iter().map(|s| s.cpu_mpps).collect());
    let tp_cpu = median(tp.iter().map(|s| s.cpu_mpps).collect());
    // Peers' figures go at the end of the line: ` ovs_mpps=W`.
    let peer = |f: fn(&Sample) -> f64| -> String {
        if ov.is_empty() {
            String::new()
        } else {
            format!(" ovs_mpps={:.2}", median(ov.iter().map(f).collect()))
        }
    };
    println!(
        "p2p wall-clock ferroswitch_mpps={fs_wall:.2} testpmd_mpps={tp_wall:.2} ratio={:.3}{}",
        fs_wall / tp_wall.max(1e-9),
        peer(|s| s.wall_mpps)
    );
    println!(
        "p2p ferroswitch_mpps={fs_cpu:.2} testpmd_mpps={tp_cpu:.2} ratio={:.3}{}",
        fs_cpu / tp_cpu.max(1e-9),
        peer(|s| s.cpu_mpps)
    );
    Ok(())
}

/// Directories removed when dropped.
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// EAL's runtime directory of a `--file-prefix` (as root).
fn dpdk_runtime_dir(prefix: &str) -> PathBuf {
    Path::new("/var/run/dpdk").join(prefix)
}

/// Sends SIGINT and waits for the process to exit (SIGKILL after 10 s).
fn interrupt(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn run_ferroswitch(
    opts: &Opts,
    bin: &Path,
    dir: &Path,
    src: &str,
    sink: &str,
    rep: usize,
) -> Result<Sample> {
    let sock = dir.join("fs.ctl");
    let cfg = format!(
        r#"[dpdk]
file_prefix = "fs-perf-{pid}"
log_level = "warning"
[pmd]
mgmt_cpu = {main}
cpus = [{fwd}]
[control]
socket = "{sock}"
[metrics]
listen = "off"
console = false
[[bridge]]
name = "br0"
  [[bridge.port]]
  name = "src"
  options = {{ dpdk-devargs = "{src}" }}
  [[bridge.port]]
  name = "sink"
  options = {{ dpdk-devargs = "{sink}" }}
  [[bridge.forward]]
  in_port = "src"
  output = "sink"
"#,
        pid = std::process::id(),
        main = opts.main_cpu,
        fwd = opts.fwd_cpu,
        sock = sock.display(),
    );
    let cfg_path = dir.join("p2p.toml");
    std::fs::write(&cfg_path, cfg)?;
    let log = std::fs::File::create(dir.join(format!("ferroswitch-{rep}.log")))?;
    let mut child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting ferroswitch")?;
    let result = measure_ferroswitch(opts, bin, &sock, &mut child);
    interrupt(&mut child);
    result
}

fn sink_tx_packets(bin: &Path, sock: &Path) -> Option<u64> {
    let out = Command::new(bin)
        .args(["ctl", "--json", "--socket"])
        .arg(sock)
        .arg("port-stats")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()?
        .iter()
        .find(|p| p["name"] == "sink")?
        .get("tx_packets")?
        .as_u64()
}

fn measure_ferroswitch(opts: &Opts, bin: &Path, sock: &Path, child: &mut Child) -> Result<Sample> {
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let tid = loop {
        if let Ok(Some(st)) = child.try_wait() {
            bail!("ferroswitch exited during start-up ({st})");
        }
        if sink_tx_packets(bin, sock).is_some() {
            if let Some(t) = procstat::find_thread(pid, "pmd-c") {
                break t;
            }
        }
        if Instant::now() > deadline {
            bail!("ferroswitch did not come up within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(opts.warmup));
    let sample = |what| -> Result<(Instant, u64, f64)> {
        let t = Instant::now();
        let n = sink_tx_packets(bin, sock).with_context(|| format!("reading {what} counters"))?;
        let c = procstat::thread_cpu_seconds(pid, tid).context("reading PMD CPU time")?;
        Ok((t, n, c))
    };
    let (t0, n0, c0) = sample("start")?;
    std::thread::sleep(Duration::from_secs(opts.window));
    let (t1, n1, c1) = sample("end")?;
    let pkts = (n1 - n0) as f64;
    Ok(Sample {
        wall_mpps: pkts / (t1 - t0).as_secs_f64() / 1e6,
        cpu_mpps: pkts / (c1 - c0).max(1e-3) / 1e6,
    })
}

fn run_testpmd(opts: &Opts, src: &str, sink: &str, rep: usize) -> Result<Sample> {
    let mut child = Command::new("stdbuf")
        .args(["-oL", "dpdk-testpmd"])
        .arg("-l")
        .arg(format!("{},{}", opts.main_cpu, opts.fwd_cpu))
        .arg(format!(
            "--file-prefix=fs-perf-tp-{}-{rep}",
            std::process::id()
        ))
        .args([
            "--no-pci",
            "--log-level=4",
            "--vdev",
            src,
            "--vdev",
            sink,
            "--",
        ])
        .args([
            "--forward-mode=io",
            "--nb-cores=1",
            "--burst=32",
            "--stats-period=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting dpdk-testpmd (apt-get install dpdk)")?;
    let pid = child.id();
    // (arrival time, port 1 TX-packets, forwarding thread CPU seconds) per period.
    let samples: Arc<Mutex<Vec<(Instant, u64, f64)>>> = Arc::default();
    let stdout = child.stdout.take().context("testpmd stdout")?;
    let s2 = samples.clone();
    let reader = std::thread::spawn(move || {
        let mut in_port1 = false;
        let mut tid = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("NIC statistics for port") {
                in_port1 = line.contains("port 1 ");
            } else if in_port1 && line.trim_start().starts_with("TX-packets:") {
                let now = Instant::now();
                let n = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok());
                if tid.is_none() {
                    tid = procstat::find_thread(pid, "rte-worker");
                }
                let cpu = tid.and_then(|t| procstat::thread_cpu_seconds(pid, t));
                if let (Some(n), Some(cpu)) = (n, cpu) {
                    s2.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((now, n, cpu));
                }
            }
        }
    });
    let total = Duration::from_secs(opts.warmup + opts.window + 3);
    let start = Instant::now();
    while start.elapsed() < total {
        if let Ok(Some(st)) = child.try_wait() {
            bail!("dpdk-testpmd exited early ({st})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    interrupt(&mut child);
    let _ = reader.join();
    let s = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // The first sample at or after the warm-up, and the one closest to a window later.
    let first = s
        .iter()
        .position(|(t, _, _)| t.duration_since(start) >= Duration::from_secs(opts.warmup))
        .context("testpmd printed no statistics after the warm-up")?;
    let (t0, n0, c0) = s[first];
    let want = t0 + Duration::from_secs(opts.window);
    let &(t1, n1, c1) = s[first..]
        .iter()
        .min_by_key(|(t, _, _)| if *t > want { *t - want } else { want - *t })
        .context("no end sample")?;
    if t1 <= t0 {
        bail!("testpmd statistics cover no window");
    }
    let pkts = n1.saturating_sub(n0) as f64;
    Ok(Sample {
        wall_mpps: pkts / (t1 - t0).as_secs_f64() / 1e6,
        cpu_mpps: pkts / (c1 - c0).max(1e-3) / 1e6,
    })
}
