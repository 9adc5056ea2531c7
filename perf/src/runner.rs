//! Runs ferroswitch and dpdk-testpmd (and, with `--peer ovs`, Open vSwitch with
//! DPDK) on the same virtual devices, one after the other, and measures each over a
//! window after a warm-up.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns::Netns;
use crate::scenario::{self, Scenario, TunnelDir, TunnelHost};
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
    /// Longest wait for start-up and for megaflows to be installed, seconds.
    pub settle_max: u64,
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

/// What every scenario run needs: the binary, a work directory (removed with the
/// DPDK runtime directories of this run's contenders on every path, errors
/// included, when the guard drops).
struct Run {
    bin: PathBuf,
    dir: PathBuf,
    _cleanup: RemoveOnDrop,
}

fn prepare(opts: &Opts, what: &str) -> Result<Run> {
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
                "{what}: warning: ovs-vswitchd already running (pid {stray:?}): it may poll a core \
                 and spoil every figure; stop it (service openvswitch-switch stop)"
            );
        }
    }
    let bin = ferroswitch_bin(opts)?;
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("ferroswitch-perf-{pid}"));
    std::fs::create_dir_all(&dir)?;
    let mut leftovers = vec![dir.clone(), dpdk_runtime_dir(&format!("fs-perf-{pid}"))];
    leftovers.extend((1..=opts.reps).map(|r| dpdk_runtime_dir(&format!("fs-perf-tp-{pid}-{r}"))));
    // The pvp guests' runtime directories.
    for r in 1..=opts.reps {
        for who in ["fs", "tp", "ovs"] {
            leftovers.push(dpdk_runtime_dir(&format!("fs-perf-g-{who}{r}-{pid}")));
        }
    }
    Ok(Run {
        bin,
        dir,
        _cleanup: RemoveOnDrop(leftovers),
    })
}

/// Medians of one scenario's repetitions.
struct Medians {
    fs: Sample,
    tp: Sample,
    ovs: Option<Sample>,
}

/// Runs ferroswitch, testpmd and the peers on `sc` in alternating repetitions.
fn measure(opts: &Opts, run: &Run, sc: &Scenario) -> Result<Medians> {
    let name = sc.name;
    let mut fs = Vec::new();
    let mut tp = Vec::new();
    let mut ov = Vec::new();
    // The pvp guests run around each contender's run, started afresh.
    let guests = |who: &str, rep: usize| -> Result<Option<GuestProcs>> {
        sc.guests
            .as_ref()
            .map(|g| start_guests(opts, g, &format!("{who}{rep}")))
            .transpose()
    };
    for rep in 1..=opts.reps {
        let g = guests("fs", rep)?;
        let f = run_ferroswitch(opts, &run.bin, &run.dir, sc, rep)?;
        drop(g);
        eprintln!(
            "{name} rep {rep}: ferroswitch {:.2} Mpps wall, {:.2} Mpps on-CPU",
            f.wall_mpps, f.cpu_mpps
        );
        fs.push(f);
        let g = guests("tp", rep)?;
        let t = run_testpmd(opts, sc, rep)?;
        drop(g);
        eprintln!(
            "{name} rep {rep}: testpmd     {:.2} Mpps wall, {:.2} Mpps on-CPU",
            t.wall_mpps, t.cpu_mpps
        );
        tp.push(t);
        if opts.has_peer(Peer::Ovs) {
            let g = guests("ovs", rep)?;
            let o = ovs::throughput(opts, &sc.ovs, rep, sc.megaflows, sc.show_dp_flows)?;
            drop(g);
            eprintln!(
                "{name} rep {rep}: ovs         {:.2} Mpps wall, {:.2} Mpps on-CPU",
                o.wall_mpps, o.cpu_mpps
            );
            ov.push(o);
        }
    }
    let med = |v: &[Sample]| Sample {
        wall_mpps: median(v.iter().map(|s| s.wall_mpps).collect()),
        cpu_mpps: median(v.iter().map(|s| s.cpu_mpps).collect()),
    };
    Ok(Medians {
        fs: med(&fs),
        tp: med(&tp),
        ovs: (!ov.is_empty()).then(|| med(&ov)),
    })
}

/// `NAME[ wall-clock] ferroswitch_mpps=X testpmd_mpps=Y ratio=X/Y[ ovs_mpps=W]`.
fn result_line(name: &str, m: &Medians, f: fn(&Sample) -> f64) -> String {
    let (fs, tp) = (f(&m.fs), f(&m.tp));
    // Peers' figures go at the end of the line: ` ovs_mpps=W`.
    let peer = m
        .ovs
        .as_ref()
        .map(|o| format!(" ovs_mpps={:.2}", f(o)))
        .unwrap_or_default();
    format!(
        "{name} ferroswitch_mpps={fs:.2} testpmd_mpps={tp:.2} ratio={:.3}{peer}",
        fs / tp.max(1e-9)
    )
}

/// The running guests of a pvp run: SIGINT and waited for when dropped.
struct GuestProcs(Vec<Child>);

impl Drop for GuestProcs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            signal_and_wait(c, "-INT");
        }
    }
}

/// Starts the pvp guest (`perf guest`, see `guest.rs`): one process, its
/// thread on the main CPU (the forwarder owns the other), owning both sockets
/// (`server=1`). Returns once the first socket exists: the guest opens its
/// NICs in turn, and `virtio_user` in server mode waits in its probe for the
/// forwarder to connect before the next one is made.
fn start_guests(opts: &Opts, g: &scenario::Guests, tag: &str) -> Result<GuestProcs> {
    for sock in [&g.tx_sock, &g.rx_sock] {
        let _ = std::fs::remove_file(sock);
    }
    let child = Command::new(std::env::current_exe()?)
        .arg("guest")
        .arg(&g.tx_sock)
        .arg(&g.rx_sock)
        .arg("--cpu")
        .arg(opts.main_cpu.to_string())
        .arg("--prefix")
        .arg(format!("fs-perf-g-{tag}-{}", std::process::id()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the pvp guest")?;
    let procs = GuestProcs(vec![child]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !g.tx_sock.exists() {
        if Instant::now() > deadline {
            bail!("pvp guest: no socket {} after 20 s", g.tx_sock.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(procs)
}

/// PVP: a virtio_user guest's 64-byte frames through the forwarder to a second
/// guest; every contender connects to the guests' sockets. Prints the wall-clock
/// and the on-CPU line.
pub fn pvp(opts: &Opts) -> Result<()> {
    let run = prepare(opts, "pvp")?;
    let sc = scenario::pvp(&run.dir)?;
    let m = measure(opts, &run, &sc)?;
    eprintln!("{}", result_line("pvp wall-clock", &m, |s| s.wall_mpps));
    println!("{}", result_line("pvp", &m, |s| s.cpu_mpps));
    Ok(())
}

/// Port-to-port: 64-byte frames from net_pcap infinite_rx to net_null, static
/// forwarding. Prints the wall-clock and the on-CPU line.
pub fn p2p(opts: &Opts) -> Result<()> {
    let run = prepare(opts, "p2p")?;
    let sc = scenario::p2p(&run.dir)?;
    let m = measure(opts, &run, &sc)?;
    println!("{}", result_line("p2p wall-clock", &m, |s| s.wall_mpps));
    println!("{}", result_line("p2p", &m, |s| s.cpu_mpps));
    Ok(())
}

/// The OpenFlow scenarios (`1flow`, `10k-flows`, `100k-flows`): the wall-clock
/// figures go to stderr, the one result line (on-CPU medians) to stdout.
pub fn flows(opts: &Opts, which: FlowScenario) -> Result<()> {
    let name = which.name();
    let run = prepare(opts, name)?;
    let sc = match which {
        FlowScenario::OneFlow => scenario::one_flow(&run.dir)?,
        FlowScenario::Flows10k => scenario::many_flows(&run.dir, name, 10_000)?,
        FlowScenario::Flows100k => scenario::many_flows(&run.dir, name, 100_000)?,
        FlowScenario::Normal2Mac => scenario::normal(&run.dir, name, 1, 1)?,
        FlowScenario::Normal1kMac => scenario::normal(&run.dir, name, 1000, 10)?,
    };
    let m = measure(opts, &run, &sc)?;
    eprintln!(
        "{}",
        result_line(&format!("{name} wall-clock"), &m, |s| s.wall_mpps)
    );
    println!("{}", result_line(name, &m, |s| s.cpu_mpps));
    Ok(())
}

/// The VXLAN scenarios (`vxlan-encap`, `vxlan-decap`): the wall-clock figures
/// go to stderr, the one result line (on-CPU medians) to stdout.
pub fn tunnel(opts: &Opts, way: TunnelDir) -> Result<()> {
    let run = prepare(opts, "vxlan")?;
    let sc = scenario::vxlan(&run.dir, way)?;
    let name = sc.name;
    let m = measure(opts, &run, &sc)?;
    eprintln!(
        "{}",
        result_line(&format!("{name} wall-clock"), &m, |s| s.wall_mpps)
    );
    println!("{}", result_line(name, &m, |s| s.cpu_mpps));
    Ok(())
}

/// Who `perf check` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Contender {
    Ferroswitch,
    Ovs,
}

/// The scenarios `perf check` takes: the tunnel ones, and two of one bridge
/// (OpenFlow, NORMAL) to check the one-bridge setups with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckScenario {
    #[value(name = "vxlan-encap")]
    VxlanEncap,
    #[value(name = "vxlan-decap")]
    VxlanDecap,
    #[value(name = "1flow")]
    OneFlow,
    #[value(name = "normal-2mac")]
    Normal2Mac,
}

/// `perf check`: one contender alone on a scenario, briefly: set up as for a
/// measurement, then what it forwards shown (its datapath flows; for tunnels
/// its route and neighbor tables) and counted over `secs`. Not a
/// measurement: no warm-up, no testpmd, wall-clock only.
pub fn check(opts: &Opts, which: CheckScenario, who: Contender, secs: u64) -> Result<()> {
    if hugepages_free() < 512 {
        bail!(
            "perf needs at least 512 free hugepages (have {}): run scripts/setup.sh",
            hugepages_free()
        );
    }
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("ferroswitch-perf-{pid}"));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveOnDrop(vec![
        dir.clone(),
        dpdk_runtime_dir(&format!("fs-perf-{pid}")),
    ]);
    let sc = match which {
        CheckScenario::VxlanEncap => scenario::vxlan(&dir, TunnelDir::Encap)?,
        CheckScenario::VxlanDecap => scenario::vxlan(&dir, TunnelDir::Decap)?,
        CheckScenario::OneFlow => scenario::one_flow(&dir)?,
        CheckScenario::Normal2Mac => scenario::normal(&dir, "normal-2mac", 1, 1)?,
    };
    match who {
        Contender::Ovs => {
            ovs::check_installed()?;
            ovs::check(opts, &sc.ovs, secs)
        }
        Contender::Ferroswitch => {
            let bin = ferroswitch_bin(opts)?;
            let d = start_ferroswitch(opts, &bin, &dir, &sc, "check", Ready::Pmd)?;
            for (port, vlan, mac) in &sc.fdb {
                fs_ctl(
                    &bin,
                    &d.sock,
                    &["fdb-add", "fs-perf", port, &vlan.to_string(), mac],
                )?;
            }
            if let Some(t) = &sc.tunnel {
                ferroswitch_tunnel_endpoint(&bin, &d, t)?;
            }
            wait_forwarding(&bin, &d)?;
            std::thread::sleep(Duration::from_secs(1));
            let mut show = vec![vec!["dump-dp-flows"]];
            if let Some(t) = &sc.tunnel {
                show.extend([
                    vec!["route", "show"],
                    vec!["route", "lookup", t.remote_ip.as_str()],
                    vec!["neigh", "show"],
                ]);
            }
            for args in show {
                println!("ferroswitch ctl {}:", args.join(" "));
                for l in fs_ctl(&bin, &d.sock, &args)
                    .unwrap_or_else(|e| format!("{e:#}"))
                    .lines()
                {
                    println!("  {l}");
                }
            }
            let n0 = sink_tx_packets(&bin, &d.sock).unwrap_or(0);
            let t0 = Instant::now();
            std::thread::sleep(Duration::from_secs(secs));
            let n1 = sink_tx_packets(&bin, &d.sock).unwrap_or(0);
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "ferroswitch: {} packets out of sink in {secs:.1} s ({:.2} Mpps wall-clock; a check, not a measurement)",
                n1.saturating_sub(n0),
                n1.saturating_sub(n0) as f64 / secs / 1e6
            );
            Ok(())
        }
    }
}

/// The throughput scenarios through the OpenFlow tables.
#[derive(Clone, Copy, Debug)]
pub enum FlowScenario {
    OneFlow,
    Flows10k,
    Flows100k,
    Normal2Mac,
    Normal1kMac,
}

impl FlowScenario {
    pub fn name(self) -> &'static str {
        match self {
            FlowScenario::OneFlow => "1flow",
            FlowScenario::Flows10k => "10k-flows",
            FlowScenario::Flows100k => "100k-flows",
            FlowScenario::Normal2Mac => "normal-2mac",
            FlowScenario::Normal1kMac => "normal-1k-mac",
        }
    }
}

/// Flows of the flow-setup scenario: every one needs a megaflow of its own.
pub const SETUP_FLOWS: usize = 100_000;
/// The ramp is timed until this fraction of the flows has a megaflow.
const RAMP_END: f64 = 0.9;

/// One observed megaflow ramp.
#[derive(Clone, Copy, Debug)]
pub struct Ramp {
    /// Megaflows at the first and the last sample of the ramp.
    pub first: usize,
    pub last: usize,
    /// Seconds between those samples.
    pub secs: f64,
    /// The count stopped growing before the target.
    pub plateau: bool,
}

impl Ramp {
    pub fn flows_per_s(&self) -> f64 {
        self.last.saturating_sub(self.first) as f64 / self.secs.max(1e-6)
    }
}

/// Samples a megaflow count as the cache fills from cold: from the first sample
/// that answers until `RAMP_END` of `target` (or until it stops growing for 3 s,
/// or `--settle-max`). A sample's time is the middle of its request; samples are
/// paced to leave the switch most of its time (a dump can hold the slow path).
pub fn ramp(opts: &Opts, target: usize, mut count: impl FnMut() -> Option<usize>) -> Result<Ramp> {
    let end_at = (target as f64 * RAMP_END).ceil() as usize;
    let start = Instant::now();
    let limit = Duration::from_secs(opts.settle_max);
    let mut first: Option<(Instant, usize)> = None;
    let mut last_growth: Option<(Instant, usize)> = None;
    loop {
        let t0 = Instant::now();
        let n = count();
        let t1 = Instant::now();
        let at = t0 + (t1 - t0) / 2;
        if let Some(n) = n {
            let (ft, fnn) = *first.get_or_insert((at, n));
            if last_growth.is_none_or(|(_, m)| n > m) {
                last_growth = Some((at, n));
            }
            let (gt, gn) = last_growth.unwrap_or((at, n));
            let done = n >= end_at;
            let stalled = at.duration_since(gt) >= Duration::from_secs(3);
            if done || stalled || start.elapsed() > limit {
                let (lt, ln) = if done { (at, n) } else { (gt, gn) };
                if fnn * 2 > ln.max(1) {
                    eprintln!(
                        "  warning: {fnn} of {ln} megaflows were already installed at the first \
                         sample; the ramp was mostly missed"
                    );
                }
                return Ok(Ramp {
                    first: fnn,
                    last: ln,
                    secs: lt.duration_since(ft).as_secs_f64(),
                    plateau: !done,
                });
            }
        } else if start.elapsed() > limit {
            bail!("no megaflow count within {} s", opts.settle_max);
        }
        // Pace: at most a quarter of the time counting (the ctl client runs on the
        // management CPU, beside the upcall handler).
        std::thread::sleep((t1 - t0) * 3 + Duration::from_millis(5));
    }
}

/// Waits until the megaflow count reaches `target` or stops growing for 3 s
/// (bounded by `--settle-max`); returns the count and the seconds waited.
pub fn settle(
    opts: &Opts,
    target: usize,
    mut count: impl FnMut() -> Option<usize>,
) -> (usize, f64) {
    let start = Instant::now();
    let mut best = 0;
    let mut since = Instant::now();
    loop {
        let n = count().unwrap_or(0);
        if n > best {
            best = n;
            since = Instant::now();
        }
        if n >= target
            || since.elapsed() >= Duration::from_secs(3)
            || start.elapsed() >= Duration::from_secs(opts.settle_max)
        {
            return (n, start.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// New megaflows per second from a cold cache: 100k distinct flows against the
/// 100k-rule table, each contender started with its flows and the traffic running
/// from its first packet; medians over the repetitions.
pub fn flow_setup(opts: &Opts) -> Result<()> {
    let run = prepare(opts, "flow-setup")?;
    let sc = scenario::many_flows(&run.dir, "flow-setup", SETUP_FLOWS)?;
    let mut fs = Vec::new();
    let mut ov = Vec::new();
    let show = |who: &str, rep: usize, r: &Ramp| {
        eprintln!(
            "flow-setup rep {rep}: {who:<11} {:.0} megaflows/s ({} -> {} in {:.2} s{})",
            r.flows_per_s(),
            r.first,
            r.last,
            r.secs,
            if r.plateau { ", stopped growing" } else { "" }
        );
    };
    for rep in 1..=opts.reps {
        let r = ferroswitch_ramp(opts, &run, &sc, rep)?;
        show("ferroswitch", rep, &r);
        fs.push(r.flows_per_s());
        if opts.has_peer(Peer::Ovs) {
            let r = ovs::flow_setup(opts, &sc.ovs, rep, SETUP_FLOWS)?;
            show("ovs", rep, &r);
            ov.push(r.flows_per_s());
        }
    }
    let peer = if ov.is_empty() {
        String::new()
    } else {
        format!(" ovs_flows_per_s={:.0}", median(ov))
    };
    println!("flow-setup ferroswitch_flows_per_s={:.0}{peer}", median(fs));
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
    signal_and_wait(child, "-INT");
}

/// Sends `signal` (as `kill` takes it, e.g. `-TERM`) and waits for the process to
/// exit, SIGKILL after 10 s.
pub fn signal_and_wait(child: &mut Child, signal: &str) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .stderr(Stdio::null())
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

/// ferroswitch's configuration for scenario `sc`: one PMD on the forwarding CPU,
/// bridge `fs-perf` (its own port is a tap device of that name; OVS's bridge has
/// another name) with the scenario's flows, ports `src` (OpenFlow port 1) and
/// `sink` (2), and the scenario's static forwarding.
fn ferroswitch_config(opts: &Opts, sock: &Path, sc: &Scenario) -> String {
    let mbufs = sc
        .mbufs
        .map(|n| format!("mbufs = {n}\n"))
        .unwrap_or_default();
    let bridges = sc.fs_bridges.clone().unwrap_or_else(|| {
        format!(
            "[[bridge]]\nname = \"fs-perf\"\n{keys}{ports}{tables}",
            ports = sc.fs_ports.clone().unwrap_or_else(|| format!(
                "  [[bridge.port]]\n  name = \"src\"\n  ofport = 1\n  options = {{ dpdk-devargs = \"{}\" }}\n  [[bridge.port]]\n  name = \"sink\"\n  ofport = 2\n  options = {{ dpdk-devargs = \"{}\" }}\n",
                sc.src, sc.sink
            )),
            keys = sc.fs_bridge_keys,
            tables = sc.fs_bridge_tables,
        )
    });
    format!(
        r#"[dpdk]
file_prefix = "fs-perf-{pid}"
log_level = "warning"
{mbufs}[pmd]
mgmt_cpu = {main}
cpus = [{fwd}]
[control]
socket = "{sock}"
[metrics]
listen = "off"
console = false
{bridges}"#,
        pid = std::process::id(),
        main = opts.main_cpu,
        fwd = opts.fwd_cpu,
        sock = sock.display(),
    )
}

/// A running ferroswitch (SIGINT and waited for when dropped; then its
/// namespace, if any, is deleted).
struct Daemon {
    child: Child,
    sock: PathBuf,
    /// The PMD thread.
    tid: u32,
    /// The namespace it runs in (tunnel scenarios).
    netns: Option<Netns>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        interrupt(&mut self.child);
    }
}

/// How far [`start_ferroswitch`] waits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ready {
    /// The control socket answers and the PMD thread exists.
    Pmd,
    /// The control socket file exists: the PMDs were started just before it (they
    /// forward from then on), so a cold cache's ramp can be watched from here.
    Socket,
}

/// Starts ferroswitch on `sc` and waits until it is `ready` (start-up time to
/// stderr: large flow tables are parsed then).
fn start_ferroswitch(
    opts: &Opts,
    bin: &Path,
    dir: &Path,
    sc: &Scenario,
    tag: &str,
    ready: Ready,
) -> Result<Daemon> {
    let sock = dir.join("fs.ctl");
    let _ = std::fs::remove_file(&sock);
    let cfg_path = dir.join(format!("{}.toml", sc.name));
    std::fs::write(&cfg_path, ferroswitch_config(opts, &sock, sc))?;
    let log_path = dir.join(format!("ferroswitch-{tag}.log"));
    let log = std::fs::File::create(&log_path)?;
    // Tunnel scenarios: in a namespace of this run (see netns.rs).
    let netns = sc
        .tunnel
        .as_ref()
        .map(|_| Netns::create(&format!("fs-perf-{}-fs{tag}", std::process::id())))
        .transpose()?;
    let started = Instant::now();
    let mut cmd = match &netns {
        Some(ns) => ns.exec(&bin.display().to_string()),
        None => Command::new(bin),
    };
    let child = cmd
        .args(["run", "--config"])
        .arg(&cfg_path)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting ferroswitch")?;
    let mut d = Daemon {
        child,
        sock,
        tid: 0,
        netns,
    };
    let pid = d.child.id();
    let deadline = started + Duration::from_secs(opts.settle_max.max(30));
    d.tid = loop {
        if let Ok(Some(st)) = d.child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!(
                "ferroswitch exited during start-up ({st}): {}",
                log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            );
        }
        if ready == Ready::Socket && d.sock.exists() {
            break 0;
        }
        if ready == Ready::Pmd && sink_tx_packets(bin, &d.sock).is_some() {
            if let Some(t) = procstat::find_thread(pid, "pmd-c") {
                break t;
            }
        }
        if Instant::now() > deadline {
            bail!(
                "ferroswitch did not come up within {} s",
                opts.settle_max.max(30)
            );
        }
        std::thread::sleep(Duration::from_millis(match ready {
            Ready::Pmd => 20,
            Ready::Socket => 1,
        }));
    };
    if sc.megaflows.is_some() {
        eprintln!(
            "  ferroswitch: up in {:.2} s (config {} KiB)",
            started.elapsed().as_secs_f64(),
            std::fs::metadata(&cfg_path)
                .map(|m| m.len() / 1024)
                .unwrap_or(0)
        );
    }
    Ok(d)
}

fn run_ferroswitch(
    opts: &Opts,
    bin: &Path,
    dir: &Path,
    sc: &Scenario,
    rep: usize,
) -> Result<Sample> {
    let d = start_ferroswitch(opts, bin, dir, sc, &rep.to_string(), Ready::Pmd)?;
    let mut mf = MegaflowCounter::new(bin, &d.sock);
    for (port, vlan, mac) in &sc.fdb {
        mf.ctl(&["fdb-add", "fs-perf", port, &vlan.to_string(), mac])
            .with_context(|| format!("ctl fdb-add fs-perf {port} {vlan} {mac}"))?;
    }
    if let Some(t) = &sc.tunnel {
        ferroswitch_tunnel_endpoint(bin, &d, t)?;
        wait_forwarding(bin, &d)?;
    }
    if let Some(target) = sc.megaflows {
        let (n, secs) = settle(opts, target, || mf.count());
        eprintln!(
            "  ferroswitch: {n} megaflows after {secs:.1} s (want {target}; counted by {})",
            mf.source()
        );
    }
    // What it decided (NORMAL: one megaflow, nothing floods; tunnels: push, pop).
    // (Not otherwise: a dump formats every megaflow and holds the slow path.)
    if sc.show_dp_flows > 0 {
        let dump = mf.ctl(&["dump-dp-flows"]).unwrap_or_default();
        for l in dump.lines().take(sc.show_dp_flows) {
            eprintln!("  ferroswitch: {l}");
        }
    }
    measure_ferroswitch(opts, bin, &d)
}

/// `ferroswitch ctl --socket SOCK ARGS`: its stdout, or an error with its
/// output.
fn fs_ctl(bin: &Path, sock: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin)
        .arg("ctl")
        .arg("--socket")
        .arg(sock)
        .args(args)
        .output()
        .with_context(|| format!("running ferroswitch ctl {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ferroswitch ctl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes br-phy's tap the tunnel endpoint once ferroswitch made it (the
/// remote as a static neighbor first, so that no ARP request goes out when
/// the route appears; then the tap's MAC, address and link), and waits until
/// the switch's route table, which follows the kernel, leads to the remote
/// through br-phy from the endpoint's address with the tap's MAC.
fn ferroswitch_tunnel_endpoint(bin: &Path, d: &Daemon, t: &TunnelHost) -> Result<()> {
    let ns = d
        .netns
        .as_ref()
        .context("a tunnel scenario runs in a namespace")?;
    for args in t.ferroswitch_ctl() {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        fs_ctl(bin, &d.sock, &a)?;
    }
    for args in t.ip_commands(true) {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        ns.ip(&a)?;
    }
    let want_src = t.addr.split('/').next().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = fs_ctl(bin, &d.sock, &["--json", "route", "lookup", &t.remote_ip]);
        let v: Option<serde_json::Value> =
            got.as_ref().ok().and_then(|o| serde_json::from_str(o).ok());
        if let Some(v) = &v {
            if v["bridge"] == t.bridge.as_str()
                && v["src"] == want_src
                && v["mac"] == t.mac.as_str()
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "ferroswitch's route to {} is not through {} from {} with MAC {} within 10 s: \
                 route lookup says {}",
                t.remote_ip,
                t.bridge,
                want_src,
                t.mac,
                match (&got, &v) {
                    (_, Some(v)) => v.to_string(),
                    (Err(e), None) => format!("{e:#}"),
                    (Ok(o), None) => o.trim().to_string(),
                }
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (up to 30 s) until ferroswitch forwards out of `sink` (1,000
/// packets), as the OVS runner waits for its first ones; the error shows the
/// tables a tunnel needs.
fn wait_forwarding(bin: &Path, d: &Daemon) -> Result<()> {
    let first = sink_tx_packets(bin, &d.sock).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink_tx_packets(bin, &d.sock).unwrap_or(0) < first + 1000 {
        if Instant::now() > deadline {
            let show =
                |args: &[&str]| fs_ctl(bin, &d.sock, args).unwrap_or_else(|e| format!("{e:#}"));
            bail!(
                "ferroswitch forwarded nothing out of sink within 30 s\n\
                 route show:\n{}\nneigh show:\n{}\ndump-dp-flows:\n{}",
                show(&["route", "show"]),
                show(&["neigh", "show"]),
                show(&["dump-dp-flows"])
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Flow setup from a cold cache: ferroswitch starts with the whole table in its
/// config and the traffic from its first packet; the ramp of its megaflow count.
fn ferroswitch_ramp(opts: &Opts, run: &Run, sc: &Scenario, rep: usize) -> Result<Ramp> {
    let mut tag = format!("fs{rep}");
    let mut mf_gauge = None;
    loop {
        let d = start_ferroswitch(opts, &run.bin, &run.dir, sc, &tag, Ready::Socket)?;
        let mut mf = MegaflowCounter::new(&run.bin, &d.sock);
        mf.gauge = mf_gauge;
        let r = ramp(opts, SETUP_FLOWS, || mf.count())?;
        // A daemon with the gauge's field that does not fill it yet reports 0:
        // then again, counting with dump-dp-flows.
        if mf.gauge == Some(true) && r.last == 0 && mf.dump_count().unwrap_or(0) > 0 {
            eprintln!("  ferroswitch: the megaflows gauge stays 0; again with dump-dp-flows");
            mf_gauge = Some(false);
            tag.push('d');
            continue;
        }
        eprintln!("  ferroswitch: megaflows counted by {}", mf.source());
        return Ok(r);
    }
}

/// ferroswitch's megaflow count: the per-PMD `megaflows` gauge of `pmd-stats-show
/// --json` where the daemon reports it, else the lines of `dump-dp-flows` (which
/// formats every megaflow under the slow path's lock: slower, and it holds up
/// upcalls while it runs).
struct MegaflowCounter<'a> {
    bin: &'a Path,
    sock: &'a Path,
    /// None: not decided yet; Some(true): the gauge; Some(false): dump-dp-flows.
    gauge: Option<bool>,
}

impl<'a> MegaflowCounter<'a> {
    fn new(bin: &'a Path, sock: &'a Path) -> Self {
        MegaflowCounter {
            bin,
            sock,
            gauge: None,
        }
    }

    fn source(&self) -> &'static str {
        match self.gauge {
            Some(true) => "pmd-stats-show's megaflows gauge",
            Some(false) => "dump-dp-flows lines",
            None => "nothing yet",
        }
    }

    fn ctl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(self.bin)
            .arg("ctl")
            .arg("--socket")
            .arg(self.sock)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sum of the PMDs' `megaflows`, if every PMD reports one.
    fn gauge_count(&self) -> Option<usize> {
        let out = self.ctl(&["--json", "pmd-stats-show"])?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v.as_array()?
            .iter()
            .map(|p| p.get("megaflows")?.as_u64().map(|n| n as usize))
            .sum()
    }

    fn dump_count(&self) -> Option<usize> {
        let out = self.ctl(&["dump-dp-flows"])?;
        Some(out.lines().filter(|l| !l.trim().is_empty()).count())
    }

    /// The count now; the first answer decides the source (the gauge if
    /// `pmd-stats-show --json` has it).
    fn count(&mut self) -> Option<usize> {
        match self.gauge {
            Some(true) => self.gauge_count(),
            Some(false) => self.dump_count(),
            None => {
                if let Some(g) = self.gauge_count() {
                    self.gauge = Some(true);
                    return Some(g);
                }
                let d = self.dump_count()?;
                self.gauge = Some(false);
                Some(d)
            }
        }
    }
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

fn measure_ferroswitch(opts: &Opts, bin: &Path, d: &Daemon) -> Result<Sample> {
    let pid = d.child.id();
    std::thread::sleep(Duration::from_secs(opts.warmup));
    let sample = |what| -> Result<(Instant, u64, f64)> {
        let t = Instant::now();
        let n =
            sink_tx_packets(bin, &d.sock).with_context(|| format!("reading {what} counters"))?;
        let c = procstat::thread_cpu_seconds(pid, d.tid).context("reading PMD CPU time")?;
        Ok((t, n, c))
    };
    let (t0, n0, c0) = sample("start")?;
    std::thread::sleep(Duration::from_secs(opts.window));
    let (t1, n1, c1) = sample("end")?;
    let pkts = n1.saturating_sub(n0) as f64;
    Ok(Sample {
        wall_mpps: pkts / (t1 - t0).as_secs_f64() / 1e6,
        cpu_mpps: pkts / (c1 - c0).max(1e-3) / 1e6,
    })
}

fn run_testpmd(opts: &Opts, sc: &Scenario, rep: usize) -> Result<Sample> {
    let mbufs = sc.mbufs.map(|n| format!("--total-num-mbufs={n}"));
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
            &sc.src,
            "--vdev",
            &sc.sink,
            "--",
        ])
        .args([
            "--forward-mode=io",
            "--nb-cores=1",
            "--burst=32",
            "--stats-period=1",
        ])
        .args(mbufs)
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

#[cfg(test)]
mod tests {
    use super::*;
    use mgmt::config::{Config, HostFacts, PLANNED_PORT_TYPES};
    use pipeline::ofproto::syntax::parse_flows;

    fn opts() -> Opts {
        Opts {
            window: 10,
            warmup: 3,
            reps: 3,
            fwd_cpu: 1,
            main_cpu: 0,
            ferroswitch: None,
            peers: Vec::new(),
            settle_max: 120,
        }
    }

    const HOST: HostFacts = HostFacts {
        ncpus: 2,
        hugepages_free: 1024,
        hugetlbfs_mounted: true,
    };

    /// ferroswitch's config of a tunnel scenario has OVS's bridges, ports (in
    /// order, same OpenFlow numbers, types and options) and flows; it is
    /// valid once the switch has tunnel ports (until then, refused for that
    /// reason only).
    #[test]
    fn vxlan_configs_are_ovs_setups() {
        let dir = std::env::temp_dir().join(format!("fs-perf-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for way in [TunnelDir::Encap, TunnelDir::Decap] {
            let sc = scenario::vxlan(&dir, way).unwrap();
            let text = ferroswitch_config(&opts(), Path::new("/tmp/x.ctl"), &sc);
            let cfg = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(cfg.bridges.len(), sc.ovs.bridges.len());
            for (fb, ob) in cfg.bridges.iter().zip(&sc.ovs.bridges) {
                assert_eq!(fb.name, ob.name);
                assert_eq!(fb.flows, ob.flows);
                assert_eq!(fb.ports.len(), ob.ports.len());
                for (i, (fp, op)) in fb.ports.iter().zip(&ob.ports).enumerate() {
                    assert_eq!(fp.name, op.name);
                    assert_eq!(fp.ofport, Some(i as u32 + 1));
                    assert_eq!(fp.port_type, op.kind);
                    let opts: Vec<(String, String)> = fp
                        .options
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    let mut want = op.options.clone();
                    want.sort();
                    assert_eq!(opts, want);
                }
                // The rules name the bridge's ports (LOCAL: its own).
                let rules = parse_flows(&fb.flows.join("\n"), &fb.portmap()).unwrap();
                assert_eq!(rules.len(), 1);
            }
            let r = cfg.validate(&HOST);
            if PLANNED_PORT_TYPES.contains(&"vxlan") {
                let e = r.unwrap_err().to_string();
                assert!(e.contains("type \"vxlan\" is not supported yet"), "{e}");
            } else {
                r.unwrap_or_else(|e| panic!("{e}\n{text}"));
            }
        }
        // The one-bridge scenarios keep their bridge fs-perf.
        let sc = scenario::p2p(&dir).unwrap();
        let cfg =
            Config::from_toml_str(&ferroswitch_config(&opts(), Path::new("/x"), &sc)).unwrap();
        cfg.validate(&HOST).unwrap();
        assert_eq!(cfg.bridges[0].name, "fs-perf");
        assert_eq!(cfg.bridges[0].forwards.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
