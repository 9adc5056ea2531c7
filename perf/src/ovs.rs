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
//! A scenario describes what it needs with a [`Setup`] (ports and OpenFlow rules);
//! [`throughput`] measures it exactly as the ferroswitch runner does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::procstat;
use crate::runner::{self, Opts, Ramp, Sample};

/// The DPDK build of ovs-vswitchd that Debian's `openvswitch-switch-dpdk` installs
/// (the `ovs-vswitchd` alternative keeps pointing at the plain build).
pub const VSWITCHD_DPDK: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// Not `br0`: the userspace datapath makes a persistent tap of the bridge's name
/// (and `ovs-netdev`), which would then stand in the way of a ferroswitch bridge
/// `br0` (each of whose bridges makes a tap of its name too).
const BRIDGE: &str = "fs-perf-ovs";

/// The taps OVS's userspace datapath leaves behind: removed after each run.
const OVS_TAPS: [&str; 2] = [BRIDGE, "ovs-netdev"];

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

/// What a scenario asks of OVS: bridge [`BRIDGE`] (netdev datapath) with these ports
/// (OpenFlow port numbers 1, 2, ... in this order), its flow table replaced by
/// `flows` (`ovs-ofctl add-flows` syntax; port names allowed unless `flows_first`),
/// and the port whose transmitted packets are counted.
#[derive(Clone, Debug)]
pub struct Setup {
    pub ports: Vec<Port>,
    pub flows: Vec<String>,
    /// Extra `Open_vSwitch . other_config:K=V` (e.g. `emc-insert-inv-prob`), set
    /// before ovs-vswitchd starts. Empty means OVS's defaults.
    pub other_config: Vec<(String, String)>,
    /// The port whose tx packets are the forwarding rate.
    pub count_port: String,
    /// Add the flows before the ports, so that the first packet already meets the
    /// whole table (a cold megaflow cache, as ferroswitch starting with its flows in
    /// the config). The flows must then name ports by number (1, 2, ... in `ports`
    /// order): ovs-ofctl resolves names only of existing ports.
    pub flows_first: bool,
    /// Static MAC entries (port name, VLAN, MAC): `ovs-appctl fdb/add` once the
    /// bridge has its ports and flows.
    pub fdb: Vec<(String, u16, String)>,
}

impl Setup {
    /// Port to port: everything from `src` goes out of `sink`, one static rule.
    pub fn p2p(src_devargs: &str, sink_devargs: &str) -> Self {
        Setup {
            ports: vec![
                Port::dpdk("src", src_devargs),
                Port::dpdk("sink", sink_devargs),
            ],
            flows: vec!["in_port=src,actions=output:sink".to_string()],
            other_config: Vec::new(),
            count_port: "sink".to_string(),
            flows_first: false,
            fdb: Vec::new(),
        }
    }
}

/// A running private OVS-DPDK instance. Dropping it tears everything down.
pub struct Ovs {
    dir: PathBuf,
    file_prefix: String,
    ovsdb: Option<Child>,
    vswitchd: Option<Child>,
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
        };
        ovs.start_ovsdb(opts)?;
        ovs.configure(opts, setup)?;
        ovs.start_vswitchd(opts)?;
        ovs.build_bridge(setup)?;
        Ok(ovs)
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
        c.args(["-c", &opts.main_cpu.to_string(), VSWITCHD_DPDK])
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

    fn build_bridge(&mut self, setup: &Setup) -> Result<()> {
        let mut args: Vec<String> = vec![
            "add-br".into(),
            BRIDGE.into(),
            "--".into(),
            "set".into(),
            "Bridge".into(),
            BRIDGE.into(),
            "datapath_type=netdev".into(),
        ];
        if setup.flows_first {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = self.vsctl(&a);
            self.check_alive()?;
            r.map_err(|e| anyhow::anyhow!("{e:#}{}", self.log_errors()))?;
            self.replace_flows(setup)?;
            args.clear();
        }
        for (i, p) in setup.ports.iter().enumerate() {
            if !args.is_empty() {
                args.push("--".into());
            }
            args.extend([
                "add-port".into(),
                BRIDGE.into(),
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
        // ovs-vsctl waits until ovs-vswitchd has applied the change (DPDK init
        // included, which takes a while with 1 GiB of hugepages).
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = self.vsctl(&args);
        self.check_alive()?;
        r.map_err(|e| anyhow::anyhow!("{e:#}{}", self.log_errors()))?;
        for p in &setup.ports {
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
        for (port, vlan, mac) in &setup.fdb {
            self.appctl(&["fdb/add", BRIDGE, port, &vlan.to_string(), mac])?;
        }
        Ok(())
    }

    /// Replaces the bridge's default NORMAL flow with the scenario's rules.
    fn replace_flows(&self, setup: &Setup) -> Result<()> {
        self.ofctl(&["del-flows", BRIDGE])?;
        let flows = self.path("flows.txt");
        std::fs::write(&flows, setup.flows.join("\n") + "\n")?;
        let flows = flows.display().to_string();
        self.ofctl(&["add-flows", BRIDGE, &flows])?;
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
        let out = self.ofctl(&["dump-ports", BRIDGE, port]).ok()?;
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
        for tap in OVS_TAPS {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", tap])
                .stderr(std::process::Stdio::null())
                .status();
        }
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
/// stops growing (bounded by `--settle-max`).
pub fn throughput(
    opts: &Opts,
    setup: &Setup,
    rep: usize,
    megaflows: Option<usize>,
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
    if !setup.fdb.is_empty() {
        // What NORMAL decided: one megaflow, to check that nothing floods.
        let dump = ovs.appctl(&["dpctl/dump-flows"]).unwrap_or_default();
        if let Some(l) = dump.lines().find(|l| l.contains("actions:")) {
            eprintln!("  ovs: {l}");
        }
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
