//! The Open vSwitch with DPDK peer (`--peer ovs`): a private, throw-away OVS-DPDK
//! instance on the same virtual devices, flows and traffic as ferroswitch.
//!
//! Each run gets a directory of its own under the temp dir (database, sockets, pid
//! files, logs; `OVS_RUNDIR`/`OVS_DBDIR`/`OVS_LOGDIR`/`OVS_SYSCONFDIR` point there, so
//! the system's /var/run/openvswitch is never touched), a fresh database from the
//! installed schema, an `ovsdb-server` on a private unix socket and the DPDK-enabled
//! `ovs-vswitchd` (Debian's `openvswitch-switch-dpdk`) with one PMD on the forwarding
//! CPU and everything else on the main CPU. [`Ovs`] tears it all down when dropped,
//! on every path: both daemons stopped, the directory and the DPDK runtime files of
//! its `--file-prefix` removed.
//!
//! A scenario describes what it needs with a [`Setup`] (bridges, their ports and
//! OpenFlow rules; for the tunnel scenarios also the tunnel endpoint, set up in a
//! network namespace of the run: see `netns.rs`); [`throughput`] measures it
//! exactly as the ferroswitch runner does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns::Netns;
use crate::procstat;
use crate::runner::{self, Opts, Ramp, Sample};
use crate::scenario::TunnelHost;

/// The DPDK build of ovs-vswitchd that Debian's `openvswitch-switch-dpdk` installs
/// (the `ovs-vswitchd` alternative keeps pointing at the plain build).
pub const VSWITCHD_DPDK: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// The bridge of the one-bridge scenarios. Not `br0`: the userspace datapath
/// makes a persistent tap of the bridge's name (and `ovs-netdev`), which would
/// then stand in the way of a ferroswitch bridge `br0` (each of whose bridges
/// makes a tap of its name too). The tunnel scenarios run in a namespace of
/// their own, where the bridges have their usual names.
pub const BRIDGE: &str = "fs-perf-ovs";

/// The tap OVS's userspace datapath makes besides one per bridge: these taps
/// are left behind, and removed after each run.
const OVS_NETDEV_TAP: &str = "ovs-netdev";

/// Fails with install instructions when OVS-DPDK is not installed.
pub fn check_installed() -> Result<()> {
    for p in [VSWITCHD_DPDK, SCHEMA] {
        if !Path::new(p).exists() {
            bail!(
                "--peer ovs needs Open vSwitch with DPDK ({p} is missing): run \
                 `FERROSWITCH_PERF_PEERS=1 bash scripts/setup.sh` as root \
                 (installs openvswitch-switch-dpdk, keeps its system service stopped)"
            );
        }
    }
    for tool in [
        "ovsdb-tool",
        "ovsdb-server",
        "ovs-vsctl",
        "ovs-ofctl",
        "taskset",
    ] {
        if Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!("--peer ovs needs {tool} on PATH (openvswitch-switch-dpdk, util-linux)");
        }
    }
    Ok(())
}

/// Other ovs-vswitchd processes (a system service, a leftover of a killed run): they
/// poll cores and spoil every figure.
pub fn stray_vswitchds() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("ovs-vswitchd"))
        })
        .collect()
}

/// One bridge port: `add-port BRIDGE NAME -- set Interface NAME type=KIND options:K=V...`.
#[derive(Clone, Debug)]
pub struct Port {
    pub name: String,
    /// Interface type: `dpdk` for a DPDK ethdev (vdevs included), later also
    /// `dpdkvhostuserclient`, `vxlan`, ...
    pub kind: String,
    pub options: Vec<(String, String)>,
}

impl Port {
    /// A vhost-user port connecting to the socket a guest owns (`type=dpdkvhostuserclient`).
    pub fn vhost_client(name: &str, sock: &std::path::Path) -> Self {
        Port {
            name: name.to_string(),
            kind: "dpdkvhostuserclient".to_string(),
            options: vec![("vhost-server-path".to_string(), sock.display().to_string())],
        }
    }

    /// A DPDK port on the device EAL probes from `devargs` (e.g. `net_null0,no-rx=1`).
    pub fn dpdk(name: &str, devargs: &str) -> Self {
        Port {
            name: name.to_string(),
            kind: "dpdk".to_string(),
            options: vec![("dpdk-devargs".to_string(), devargs.to_string())],
        }
    }
}

/// One bridge (netdev datapath) with these ports (OpenFlow port numbers 1, 2,
/// ... in this order), its flow table replaced by `flows` (`ovs-ofctl
/// add-flows` syntax; port names allowed unless [`Setup::flows_first`]).
#[derive(Clone, Debug)]
pub struct BridgeSetup {
    pub name: String,
    pub ports: Vec<Port>,
    pub flows: Vec<String>,
    /// Static MAC entries (port name, VLAN, MAC): `ovs-appctl fdb/add` once the
    /// bridge has its ports and flows.
    pub fdb: Vec<(String, u16, String)>,
    /// The MAC of the bridge's own (internal) port: `other_config:hwaddr`, OVS's
    /// way to fix it (it would put back its own choice over an `ip link set
    /// address` at its next reconfiguration).
    pub hwaddr: Option<String>,
}

impl BridgeSetup {
    pub fn new(name: &str, ports: Vec<Port>, flows: Vec<String>) -> Self {
        BridgeSetup {
            name: name.to_string(),
            ports,
            flows,
            fdb: Vec::new(),
            hwaddr: None,
        }
    }
}

/// What a scenario asks of OVS: its bridges, and the port whose transmitted
/// packets are counted.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The one-bridge scenarios have one, named [`BRIDGE`].
    pub bridges: Vec<BridgeSetup>,
    /// Extra `Open_vSwitch . other_config:K=V` (e.g. `emc-insert-inv-prob`), set
    /// before ovs-vswitchd starts. Empty means OVS's defaults.
    pub other_config: Vec<(String, String)>,
    /// The port whose tx packets are the forwarding rate (port names are unique
    /// across the bridges).
    pub count_port: String,
    /// Add the flows before the ports, so that the first packet already meets the
    /// whole table (a cold megaflow cache, as ferroswitch starting with its flows in
    /// the config). The flows must then name ports by number (1, 2, ... in `ports`
    /// order): ovs-ofctl resolves names only of existing ports.
    pub flows_first: bool,
    /// Native tunneling: ovs-vswitchd runs in a network namespace of its own,
    /// where the endpoint's address goes on its bridge's tap once the bridges
    /// are built ([`tunnel_commands`]).
    pub tunnel: Option<TunnelHost>,
}

impl Setup {
    /// Port to port: everything from `src` goes out of `sink`, one static rule.
    pub fn p2p(src_devargs: &str, sink_devargs: &str) -> Self {
        Setup {
            bridges: vec![BridgeSetup::new(
                BRIDGE,
                vec![
                    Port::dpdk("src", src_devargs),
                    Port::dpdk("sink", sink_devargs),
                ],
                vec!["in_port=src,actions=output:sink".to_string()],
            )],
            other_config: Vec::new(),
            count_port: "sink".to_string(),
            flows_first: false,
            tunnel: None,
        }
    }

    /// The first bridge (the only one of the one-bridge scenarios).
    pub fn main_bridge(&mut self) -> &mut BridgeSetup {
        &mut self.bridges[0]
    }
}

/// `ovs-vsctl` arguments (one transaction) that add `bridges` (netdev datapath,
/// with their `hwaddr`) if `add_bridges`, and their ports (with `ofport_request`
/// 1, 2, ... in order) if `add_ports`.
pub fn vsctl_build_args(
    bridges: &[BridgeSetup],
    add_bridges: bool,
    add_ports: bool,
) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let sep = |args: &mut Vec<String>| {
        if !args.is_empty() {
            args.push("--".into());
        }
    };
    if add_bridges {
        for b in bridges {
            sep(&mut args);
            args.extend([
                "add-br".into(),
                b.name.clone(),
                "--".into(),
                "set".into(),
                "Bridge".into(),
                b.name.clone(),
                "datapath_type=netdev".into(),
            ]);
            if let Some(mac) = &b.hwaddr {
                args.push(format!("other_config:hwaddr=\"{mac}\""));
            }
        }
    }
    if add_ports {
        for b in bridges {
            for (i, p) in b.ports.iter().enumerate() {
                sep(&mut args);
                args.extend([
                    "add-port".into(),
                    b.name.clone(),
                    p.name.clone(),
                    "--".into(),
                    "set".into(),
                    "Interface".into(),
                    p.name.clone(),
                    format!("type={}", p.kind),
                    format!("ofport_request={}", i + 1),
                ]);
                args.extend(p.options.iter().map(|(k, v)| format!("options:{k}={v}")));
            }
        }
    }
    args
}

/// What OVS needs for native tunneling once its bridges exist: the `ip`
/// commands (each after `ip -n NETNS`) that put the endpoint's address on its
/// bridge's tap and bring it up (the kernel's connected route, which OVS
/// caches, then leads to the remote endpoint), and the `ovs-appctl` commands
/// (the remote endpoint as a static neighbor; run first, so that no ARP
/// request goes out when the route appears). The tap's MAC is the bridge's
/// `hwaddr` ([`BridgeSetup::hwaddr`]), not set here.
pub fn tunnel_commands(t: &TunnelHost) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let ip = t.ip_commands(false);
    let appctl = vec![vec![
        "tnl/neigh/set".to_string(),
        t.bridge.clone(),
        t.remote_ip.clone(),
        t.remote_mac.clone(),
    ]];
    (ip, appctl)
}

/// A running private OVS-DPDK instance. Dropping it tears everything down.
pub struct Ovs {
    dir: PathBuf,
    file_prefix: String,
    ovsdb: Option<Child>,
    vswitchd: Option<Child>,
    /// Each port's bridge (for `dump-ports`), and the bridges (their taps).
    port_bridges: Vec<(String, String)>,
    bridges: Vec<String>,
    /// The namespace ovs-vswitchd runs in (tunnel scenarios), deleted after it
    /// stopped.
    netns: Option<Netns>,
}

impl Ovs {
    /// Starts ovsdb-server and ovs-vswitchd in a fresh directory, then builds the
    /// bridge, ports and flows of `setup`. `tag` makes the directory and the DPDK
    /// file prefix unique.
    pub fn start(opts: &Opts, setup: &Setup, tag: &str) -> Result<Ovs> {
        let dir = std::env::temp_dir().join(format!("fs-perf-ovs-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // From here on, Drop cleans up whatever was started.
        let mut ovs = Ovs {
            dir,
            file_prefix: format!("fs-perf-ovs-{tag}"),
            ovsdb: None,
            vswitchd: None,
            port_bridges: setup
                .bridges
                .iter()
                .flat_map(|b| b.ports.iter().map(|p| (p.name.clone(), b.name.clone())))
                .collect(),
            bridges: setup.bridges.iter().map(|b| b.name.clone()).collect(),
            netns: None,
        };
        if setup.tunnel.is_some() {
            ovs.netns = Some(Netns::create(&format!("fs-perf-ovs-{tag}"))?);
        }
        ovs.start_ovsdb(opts)?;
        ovs.configure(opts, setup)?;
        ovs.start_vswitchd(opts)?;
        ovs.build_bridges(setup)?;
        if let Some(t) = &setup.tunnel {
            ovs.tunnel_endpoint(t)?;
        }
        Ok(ovs)
    }

    /// The namespace ovs-vswitchd runs in, if any.
    pub fn netns(&self) -> Option<&Netns> {
        self.netns.as_ref()
    }

    /// Makes the tunnel endpoint (see [`tunnel_commands`]: the remote as a
    /// static neighbor first, then the address on its bridge's tap, in the
    /// run's namespace), checks that the tap has the bridge's `hwaddr` (the
    /// outer destination MAC of what it decapsulates) and waits until OVS's
    /// route table, which caches the kernel's, leads to the remote through
    /// that bridge.
    fn tunnel_endpoint(&self, t: &TunnelHost) -> Result<()> {
        let ns = self
            .netns
            .as_ref()
            .context("a tunnel scenario runs in a namespace")?;
        let (ip, appctl) = tunnel_commands(t);
        for args in &appctl {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            self.appctl(&a)?;
        }
        for args in &ip {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            ns.ip(&a)?;
        }
        let mac = crate::scenario::link_mac(&ns.ip(&["-o", "link", "show", "dev", &t.bridge])?);
        if mac.as_deref() != Some(t.mac.as_str()) {
            bail!(
                "OVS's tap {} has MAC {:?}, not its bridge's hwaddr {}",
                t.bridge,
                mac,
                t.mac
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.appctl(&["ovs/route/lookup", &t.remote_ip]);
            if got
                .as_ref()
                .is_ok_and(|o| o.lines().any(|l| l.trim() == format!("dev {}", t.bridge)))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "OVS's route to {} is not through {} within 10 s: {}",
                    t.remote_ip,
                    t.bridge,
                    match got {
                        Ok(o) => o.trim().replace('\n', "; "),
                        Err(e) => format!("{e:#}"),
                    }
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A command of the OVS tool set with the private directories in its environment.
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
            c.env(var, &self.dir);
        }
        c.stdin(Stdio::null());
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn db_remote(&self) -> String {
        format!("unix:{}", self.path("db.sock").display())
    }

    /// Runs a tool to completion; its stdout on success, an error with its stderr
    /// otherwise.
    fn run(&self, mut c: Command) -> Result<String> {
        let what = format!("{c:?}");
        let out = c.output().with_context(|| format!("running {what}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ovs-vsctl --db=<private> ARGS`.
    pub fn vsctl(&self, args: &[&str]) -> Result<String> {
        let mut c = self.cmd("ovs-vsctl");
        c.arg(format!("--db={}", self.db_remote()))
            .arg("--timeout=30")
            .args(args);
        self.run(c)
    }

    /// `ovs-ofctl ARGS` (the bridge's management socket is found through OVS_RUNDIR).
    pub fn ofctl(&self, args: &[&str]) -> Result<String> {
        let mut c = self.cmd("ovs-ofctl");
        c.args(args);
        self.run(c)
    }

    fn start_ovsdb(&mut self, opts: &Opts) -> Result<()> {
        let db = self.path("conf.db");
        let mut c = self.cmd("ovsdb-tool");
        c.arg("create").arg(&db).arg(SCHEMA);
        self.run(c)?;
        let mut c = self.cmd("taskset");
        c.args(["-c", &opts.main_cpu.to_string(), "ovsdb-server"])
            .arg(&db)
            .arg(format!("--remote=punix:{}", self.path("db.sock").display()))
            .arg(format!(
                "--pidfile={}",
                self.path("ovsdb-server.pid").display()
            ))
            .arg(format!(
                "--unixctl={}",
                self.path("ovsdb-server.ctl").display()
            ))
            .arg(format!(
                "--log-file={}",
                self.path("ovsdb-server.log").display()
            ))
            .arg("-vconsole:off")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.ovsdb = Some(c.spawn().context("starting ovsdb-server")?);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.path("db.sock").exists() {
            if let Some(Ok(Some(st))) = self.ovsdb.as_mut().map(|c| c.try_wait()) {
                bail!("ovsdb-server exited during start-up ({st})");
            }
            if Instant::now() > deadline {
                bail!("ovsdb-server did not open its socket within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Initialises the database and sets the DPDK knobs, before ovs-vswitchd reads
    /// them (most take effect only at its start).
    fn configure(&self, opts: &Opts, setup: &Setup) -> Result<()> {
        let eal = format!(
            "--file-prefix={} --no-pci --huge-unlink --log-level=4",
            self.file_prefix
        );
        let mut kv = vec![
            ("dpdk-init".to_string(), "true".to_string()),
            // EAL's lcore threads (and the vswitchd main thread) on the main CPU.
            (
                "dpdk-lcore-mask".to_string(),
                format!("{:#x}", 1u128 << opts.main_cpu),
            ),
            // Exactly one PMD thread, on the forwarding CPU.
            (
                "pmd-cpu-mask".to_string(),
                format!("{:#x}", 1u128 << opts.fwd_cpu),
            ),
            // 1 GiB of hugepages up front (perf checks 512 x 2 MiB are free).
            ("dpdk-socket-mem".to_string(), "1024".to_string()),
            ("dpdk-extra".to_string(), eal),
        ];
        // The scenario's settings replace the defaults of the same key.
        kv.retain(|(k, _)| !setup.other_config.iter().any(|(o, _)| o == k));
        kv.extend(setup.other_config.iter().cloned());
        let sets: Vec<String> = kv
            .iter()
            .map(|(k, v)| format!("other_config:{k}={v}"))
            .collect();
        let mut args = vec!["--no-wait", "init", "--", "set", "Open_vSwitch", "."];
        args.extend(sets.iter().map(String::as_str));
        self.vsctl(&args)?;
        Ok(())
    }

    fn start_vswitchd(&mut self, opts: &Opts) -> Result<()> {
        // The process starts on the main CPU (its non-PMD threads stay there); OVS
        // pins the PMD to pmd-cpu-mask itself.
        let mut c = self.cmd("taskset");
        c.args(["-c", &opts.main_cpu.to_string()]);
        if let Some(ns) = &self.netns {
            c.args(ns.exec_prefix());
        }
        c.arg(VSWITCHD_DPDK)
            .arg(self.db_remote())
            .arg(format!(
                "--pidfile={}",
                self.path("ovs-vswitchd.pid").display()
            ))
            .arg(format!(
                "--unixctl={}",
                self.path("ovs-vswitchd.ctl").display()
            ))
            .arg(format!(
                "--log-file={}",
                self.path("ovs-vswitchd.log").display()
            ))
            .arg("-vconsole:off")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.vswitchd = Some(c.spawn().context("starting ovs-vswitchd-dpdk")?);
        Ok(())
    }

    /// Fails if ovs-vswitchd is gone, with the errors of its log.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(Ok(Some(st))) = self.vswitchd.as_mut().map(|c| c.try_wait()) {
            bail!("ovs-vswitchd exited ({st}){}", self.log_errors());
        }
        Ok(())
    }

    /// The last warning and error lines of the vswitchd log, for error messages (the
    /// log itself goes with the directory).
    fn log_errors(&self) -> String {
        let log = std::fs::read_to_string(self.path("ovs-vswitchd.log")).unwrap_or_default();
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("|ERR|") || l.contains("|EMER|") || l.contains("|WARN|"))
            .collect();
        if bad.is_empty() {
            return String::new();
        }
        let tail = &bad[bad.len().saturating_sub(12)..];
        format!("; ovs-vswitchd log:\n  {}", tail.join("\n  "))
    }

    fn build_bridges(&mut self, setup: &Setup) -> Result<()> {
        if setup.flows_first {
            let args = vsctl_build_args(&setup.bridges, true, false);
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = self.vsctl(&a);
            self.check_alive()?;
            r.map_err(|e| anyhow::anyhow!("{e:#}{}", self.log_errors()))?;
            self.replace_flows(setup)?;
        }
        // ovs-vsctl waits until ovs-vswitchd has applied the change (DPDK init
        // included, which takes a while with 1 GiB of hugepages).
        let args = vsctl_build_args(&setup.bridges, !setup.flows_first, true);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = self.vsctl(&a);
        self.check_alive()?;
        r.map_err(|e| anyhow::anyhow!("{e:#}{}", self.log_errors()))?;
        for p in setup.bridges.iter().flat_map(|b| &b.ports) {
            let ofport = self.vsctl(&["get", "Interface", &p.name, "ofport"])?;
            if ofport.trim().parse::<i64>().unwrap_or(-1) < 1 {
                let err = self
                    .vsctl(&["get", "Interface", &p.name, "error"])
                    .unwrap_or_default();
                bail!(
                    "OVS could not open port {}: {}{}",
                    p.name,
                    err.trim(),
                    self.log_errors()
                );
            }
        }
        if !setup.flows_first {
            self.replace_flows(setup)?;
        }
        for b in &setup.bridges {
            for (port, vlan, mac) in &b.fdb {
                self.appctl(&["fdb/add", &b.name, port, &vlan.to_string(), mac])?;
            }
        }
        Ok(())
    }

    /// Replaces each bridge's default NORMAL flow with the scenario's rules.
    fn replace_flows(&self, setup: &Setup) -> Result<()> {
        for b in &setup.bridges {
            self.ofctl(&["del-flows", &b.name])?;
            let flows = self.path(&format!("flows-{}.txt", b.name));
            std::fs::write(&flows, b.flows.join("\n") + "\n")?;
            let flows = flows.display().to_string();
            self.ofctl(&["add-flows", &b.name, &flows])?;
        }
        Ok(())
    }

    /// `ovs-appctl -t <this instance's ovs-vswitchd> ARGS`.
    pub fn appctl(&self, args: &[&str]) -> Result<String> {
        let mut c = self.cmd("ovs-appctl");
        c.arg("-t")
            .arg(self.path("ovs-vswitchd.ctl"))
            .arg("--timeout=30")
            .args(args);
        self.run(c)
    }

    /// Datapath flows (megaflows) installed now, over all PMDs (`dpctl/show`'s
    /// `flows:` line; cheap, unlike dumping them).
    pub fn megaflows(&self) -> Option<usize> {
        let out = self.appctl(&["dpctl/show"]).ok()?;
        out.lines()
            .find_map(|l| l.trim().strip_prefix("flows:"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The datapath flows (`dpctl/dump-flows`), one a line.
    pub fn dp_flows(&self) -> Vec<String> {
        self.appctl(&["dpctl/dump-flows"])
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("actions:"))
            .map(str::to_string)
            .collect()
    }

    /// `upcall/show`'s flows line (current, average, max, limit), for diagnostics:
    /// OVS adapts its flow limit as it goes (from 10,000 up).
    pub fn upcall_flows_line(&self) -> String {
        self.appctl(&["upcall/show"])
            .ok()
            .and_then(|o| {
                o.lines()
                    .find(|l| l.trim_start().starts_with("flows"))
                    .map(|l| l.trim().to_string())
            })
            .unwrap_or_default()
    }

    /// The process id of ovs-vswitchd.
    pub fn vswitchd_pid(&self) -> Option<u32> {
        self.vswitchd.as_ref().map(Child::id)
    }

    /// The thread id of the PMD on `cpu` (named `pmd-cNN/id:M` by OVS).
    pub fn pmd_thread(&self, cpu: usize) -> Option<u32> {
        procstat::find_thread(self.vswitchd_pid()?, &format!("pmd-c{cpu:02}/"))
    }

    /// Packets transmitted so far by `port`, live from the device
    /// (`ovs-ofctl dump-ports`; the Interface table's statistics lag up to 5 s).
    pub fn tx_packets(&self, port: &str) -> Option<u64> {
        let bridge = &self.port_bridges.iter().find(|(p, _)| p == port)?.1;
        let out = self.ofctl(&["dump-ports", bridge, port]).ok()?;
        let rest = &out[out.find("tx pkts=")? + "tx pkts=".len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }

    /// Stops a daemon: SIGTERM, SIGKILL after 10 s.
    fn stop(child: &mut Child) {
        runner::signal_and_wait(child, "-TERM");
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        if let Some(mut c) = self.vswitchd.take() {
            Ovs::stop(&mut c);
        }
        if let Some(mut c) = self.ovsdb.take() {
            Ovs::stop(&mut c);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // The taps it leaves behind: in its namespace (deleted with it, after
        // them) or the host's.
        let ns: Vec<String> = match &self.netns {
            Some(ns) => vec!["-n".into(), ns.name().into()],
            None => Vec::new(),
        };
        for tap in self
            .bridges
            .iter()
            .map(String::as_str)
            .chain([OVS_NETDEV_TAP])
        {
            let _ = std::process::Command::new("ip")
                .args(&ns)
                .args(["link", "del", tap])
                .stderr(std::process::Stdio::null())
                .status();
        }
        drop(self.netns.take());
        // EAL's runtime directory and any hugepage files of this prefix.
        for base in ["/var/run/dpdk", "/run/dpdk"] {
            let _ = std::fs::remove_dir_all(Path::new(base).join(&self.file_prefix));
        }
        if let Ok(d) = std::fs::read_dir("/dev/hugepages") {
            for e in d.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name
                    .strip_prefix(self.file_prefix.as_str())
                    .is_some_and(|r| r.starts_with("map_") || r.starts_with("seg"))
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// Starts OVS with `setup`, waits until `setup.count_port` transmits and the PMD is
/// up, warms up, then counts that port's packets and the PMD thread's CPU time over
/// the window, as the ferroswitch runner does. OVS is gone when this returns.
///
/// With `megaflows`, the warm-up first waits until OVS's megaflow count reaches it or
/// stops growing (bounded by `--settle-max`). The first `show_flows` datapath
/// flows go to stderr, to show what OVS decided.
pub fn throughput(
    opts: &Opts,
    setup: &Setup,
    rep: usize,
    megaflows: Option<usize>,
    show_flows: usize,
) -> Result<Sample> {
    let tag = format!("{}-{rep}", std::process::id());
    let mut ovs = Ovs::start(opts, setup, &tag)?;
    let pid = ovs.vswitchd_pid().context("ovs-vswitchd pid")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let tid = loop {
        ovs.check_alive()?;
        if ovs.tx_packets(&setup.count_port).is_some_and(|n| n > 0) {
            if let Some(t) = ovs.pmd_thread(opts.fwd_cpu) {
                break t;
            }
        }
        if Instant::now() > deadline {
            bail!(
                "OVS forwarded nothing out of {} within 30 s{}",
                setup.count_port,
                ovs.log_errors()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if let Some(target) = megaflows {
        let (n, secs) = runner::settle(opts, target, || ovs.megaflows());
        eprintln!(
            "  ovs: {n} megaflows after {secs:.1} s (want {target}); {}",
            ovs.upcall_flows_line()
        );
    }
    for l in ovs.dp_flows().iter().take(show_flows) {
        eprintln!("  ovs: {l}");
    }
    std::thread::sleep(Duration::from_secs(opts.warmup));
    let sample = |what| -> Result<(Instant, u64, f64)> {
        let t = Instant::now();
        let n = ovs
            .tx_packets(&setup.count_port)
            .with_context(|| format!("reading OVS {what} counters"))?;
        let c = procstat::thread_cpu_seconds(pid, tid).context("reading OVS PMD CPU time")?;
        Ok((t, n, c))
    };
    let (t0, n0, c0) = sample("start")?;
    std::thread::sleep(Duration::from_secs(opts.window));
    let (t1, n1, c1) = sample("end")?;
    ovs.check_alive()?;
    let pkts = n1.saturating_sub(n0) as f64;
    Ok(Sample {
        wall_mpps: pkts / (t1 - t0).as_secs_f64() / 1e6,
        cpu_mpps: pkts / (c1 - c0).max(1e-3) / 1e6,
    })
}

/// A check of a scenario on OVS alone, not a measurement (`perf check`):
/// starts OVS with `setup`, waits until `setup.count_port` transmits, prints
/// the datapath flows and (tunnels) the tables native tunneling used, then
/// the packets counted over `secs`. OVS is gone when this returns.
pub fn check(opts: &Opts, setup: &Setup, secs: u64) -> Result<()> {
    let tag = format!("{}-check", std::process::id());
    let mut ovs = Ovs::start(opts, setup, &tag)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ovs.tx_packets(&setup.count_port).unwrap_or(0) == 0 {
        ovs.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "OVS forwarded nothing out of {} within 30 s{}",
                setup.count_port,
                ovs.log_errors()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Past the first packets' upcalls.
    std::thread::sleep(Duration::from_secs(1));
    println!("ovs dpctl/dump-flows:");
    for l in ovs.dp_flows() {
        println!("  {l}");
    }
    if let Some(t) = &setup.tunnel {
        for args in [
            vec!["ovs/route/show"],
            vec!["ovs/route/lookup", t.remote_ip.as_str()],
            vec!["tnl/neigh/show"],
            vec!["tnl/ports/show", "-v"],
        ] {
            println!("ovs-appctl {}:", args.join(" "));
            for l in ovs
                .appctl(&args)
                .unwrap_or_else(|e| format!("{e:#}"))
                .lines()
            {
                println!("  {l}");
            }
        }
        if let Some(ns) = ovs.netns() {
            println!("ip -n {} addr show dev {}:", ns.name(), t.bridge);
            for l in ns.ip(&["addr", "show", "dev", &t.bridge])?.lines() {
                println!("  {l}");
            }
        }
    }
    let n0 = ovs.tx_packets(&setup.count_port).unwrap_or(0);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let n1 = ovs.tx_packets(&setup.count_port).unwrap_or(0);
    ovs.check_alive()?;
    println!(
        "ovs: {} packets out of {} in {:.1} s ({:.2} Mpps wall-clock; a check, not a measurement)",
        n1.saturating_sub(n0),
        setup.count_port,
        t0.elapsed().as_secs_f64(),
        n1.saturating_sub(n0) as f64 / t0.elapsed().as_secs_f64() / 1e6
    );
    Ok(())
}

/// Flow setup from a cold cache: starts OVS with `setup` (which should have
/// `flows_first`, so traffic meets the whole table) and samples its megaflow count
/// until `target` is reached or the count stops growing. OVS is gone when this
/// returns.
pub fn flow_setup(opts: &Opts, setup: &Setup, rep: usize, target: usize) -> Result<Ramp> {
    let tag = format!("{}-fs{rep}", std::process::id());
    let mut ovs = Ovs::start(opts, setup, &tag)?;
    let ramp = runner::ramp(opts, target, || ovs.megaflows());
    eprintln!("  ovs: {}", ovs.upcall_flows_line());
    ovs.check_alive()?;
    ramp
}
