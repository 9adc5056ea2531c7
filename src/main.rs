//! ferroswitch: a DPDK poll-mode virtual switch.
//!
//! Wiring only: parse the command line, load and check the config, initialise the
//! EAL, start the datapath (ports + PMD threads) and the management threads, wait
//! for SIGINT/SIGTERM, stop everything in reverse order.

use ferroswitch::{demo, dpview, ofctl, reconfig, slowpath};

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use mgmt::config::{Config, HostFacts};

#[derive(Parser)]
#[command(
    name = "ferroswitch",
    version,
    about = "A DPDK poll-mode virtual switch"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the switch daemon. Without --config, runs the embedded demo: a generated
    /// pcap replayed forever by a net_pcap port, forwarded to a net_null port.
    Run {
        /// TOML configuration file (every key has a default; an empty file is valid).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Check the configuration and print the EAL arguments, then exit.
        #[arg(long)]
        check: bool,
    },
    /// Talk to the running daemon over its control socket.
    ///
    /// Commands: show, port-stats [PORT], pmd-stats-show, pmd-rxq-show,
    /// pmd-stats-clear,
    /// add-br BRIDGE, del-br BRIDGE, add-port BRIDGE PORT [type=T] [options:K=V]...
    /// [other_config:K=V] [tag=N] [trunks=N,M] [vlan_mode=M] [n_rxq=N]
    /// [ofport_request=N],
    /// del-port [BRIDGE] PORT, set-port PORT [tag=N] [trunks=N,M] [vlan_mode=M]
    /// (runtime changes, not written to the config file),
    /// add-flow BRIDGE FLOW, add-flows BRIDGE FILE (all or nothing; - for stdin),
    /// del-flows BRIDGE [FLOW] [--strict], dump-flows BRIDGE [FLOW] [--names],
    /// ofproto-trace BRIDGE FLOW, dump-dp-flows, fdb-show BRIDGE (the learned MACs,
    /// as ovs-appctl fdb/show), fdb-flush [BRIDGE], fdb-add BRIDGE PORT VLAN MAC,
    /// fdb-del BRIDGE VLAN MAC (static MACs, as ovs-appctl fdb/add, fdb/del),
    /// bond-show [BOND], lacp-show [BOND], add-tlv-map BRIDGE MAP,
    /// del-tlv-map BRIDGE [MAP], dump-tlv-map BRIDGE (Geneve options as
    /// tun_metadata0..3, one map for the switch, as ovs-ofctl *-tlv-map),
    /// route add PREFIX/LEN BRIDGE [GW] [src=IP], route del PREFIX/LEN,
    /// route show, route lookup IP (the tunnel route table, as ovs-appctl
    /// ovs/route/*), neigh show, neigh set BRIDGE IP MAC, neigh flush [BRIDGE],
    /// neigh aging [SECS] (the tunnel neighbor cache, as ovs-appctl
    /// tnl/neigh/*), version, help.
    Ctl {
        /// Control socket (default: $FERROSWITCH_CTL or /var/run/ferroswitch/ferroswitch.ctl).
        #[arg(long, short)]
        socket: Option<PathBuf>,
        /// Machine-readable JSON output.
        #[arg(long)]
        json: bool,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// OpenFlow flow files offline: no daemon, no DPDK.
    #[command(subcommand)]
    Ofctl(OfctlCmd),
}

#[derive(Subcommand)]
enum OfctlCmd {
    /// Print the flows of FILE normalized (as ovs-ofctl prints them), or the first
    /// error with its line. dump-flows output is accepted (counters are ignored).
    ParseFlows {
        file: PathBuf,
        /// Port names: NAME=NUMBER,...
        #[arg(long, default_value = "")]
        ports: String,
    },
    /// Trace flow keys through the flows of a sandbox bridge, in order (a rule
    /// learned by one key applies to the next, as does a MAC NORMAL learned), like
    /// ovs-appctl ofproto/trace; each
    /// trace ends with `Datapath actions: ...`.
    Trace {
        /// The flows (ovs-ofctl add-flows syntax or dump-flows output).
        #[arg(long)]
        flows: PathBuf,
        /// The bridge's ports: NAME=NUMBER,... (default: the ports the flows name).
        #[arg(long, default_value = "")]
        ports: String,
        /// Flow keys in ovs-ofctl match syntax, e.g. 'in_port=1,dl_dst=ff:ff:ff:ff:ff:ff'.
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run { config, check } => run(config, check),
        Cmd::Ctl {
            socket,
            json,
            command,
        } => ctl(socket, json, command),
        Cmd::Ofctl(c) => run_ofctl(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferroswitch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_ofctl(c: OfctlCmd) -> Result<ExitCode> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let out = match c {
        OfctlCmd::ParseFlows { file, ports } => {
            let ports = ofctl::parse_ports(&ports).map_err(anyhow::Error::msg)?;
            ofctl::parse_flows_text(&read(&file)?, &ports)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
        }
        OfctlCmd::Trace { flows, ports, keys } => {
            let ports = ofctl::parse_ports(&ports).map_err(anyhow::Error::msg)?;
            ofctl::trace(&read(&flows)?, &ports, &keys)
                .map_err(|e| anyhow::anyhow!("{}: {e}", flows.display()))?
        }
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn ctl(socket: Option<PathBuf>, json: bool, command: Vec<String>) -> Result<ExitCode> {
    let path = socket.unwrap_or_else(mgmt::control::default_socket_path);
    let mut words = command.into_iter();
    let cmd = words.next().unwrap_or_default();
    let mut args: Vec<String> = words.collect();
    // add-flows sends the file's text: the daemon need not see the client's files.
    if cmd == "add-flows" {
        if let Some(file) = args.get_mut(1) {
            *file = if file == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading flows from stdin")?
            } else {
                std::fs::read_to_string(&*file).with_context(|| format!("cannot read {file}"))?
            };
        }
    }
    let req = mgmt::control::Request { cmd, args, json };
    let resp = mgmt::control::call(&path, &req)?;
    if resp.ok {
        print!("{}", resp.output);
        if !resp.output.ends_with('\n') && !resp.output.is_empty() {
            println!();
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "ferroswitch ctl: {}",
            resp.error.as_deref().unwrap_or("request failed")
        );
        Ok(ExitCode::FAILURE)
    }
}

fn run(config: Option<PathBuf>, check: bool) -> Result<ExitCode> {
    let host = HostFacts::probe();
    let mut demo_dir = None;
    let cfg = match &config {
        Some(path) => Config::load(path)?,
        None => {
            let dir = std::env::temp_dir().join(format!("ferroswitch-demo-{}", std::process::id()));
            let pcap = demo::write_pcap(&dir).context("writing the demo pcap")?;
            demo_dir = Some(dir);
            let mut cfg = demo::config(&pcap);
            if host.hugepages_free == 0 || !host.hugetlbfs_mounted {
                eprintln!(
                    "ferroswitch: demo: no free hugepages, running without them \
                     (slower; see README to set them up)"
                );
                cfg.dpdk.hugepages = false;
            }
            cfg
        }
    };
    cfg.validate(&host)?;
    cfg.check_internal_interfaces(mgmt::config::interface_exists)?;
    let eal_args = cfg.eal_args();
    if check {
        println!("configuration OK");
        println!("EAL arguments: {}", eal_args.join(" "));
        return Ok(ExitCode::SUCCESS);
    }
    let spec = datapath_spec(&cfg, host.ncpus)?;
    for p in cfg.bridges.iter().flat_map(|b| &b.ports) {
        reconfig::make_socket_dir(&cfg, p).map_err(anyhow::Error::msg)?;
    }

    // Signals first: a Ctrl-C during start-up must still stop cleanly.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }

    let bridges = slowpath::bridges(&cfg).map_err(anyhow::Error::msg)?;

    let eal = dpdk_ffi::Eal::init(&eal_args).context("EAL initialisation")?;
    let mut dp = match pmd::Datapath::start(&spec) {
        Ok(dp) => dp,
        Err(e) => {
            let _ = eal.cleanup();
            bail!("{e}");
        }
    };

    // Native tunneling's route table and neighbor cache: kept from the
    // kernel by the `mgmt-route` thread, shown and changed by `ctl route` /
    // `ctl neigh`, asked by translation (`TunnelEnv`).
    let tunnel = mgmt::tunnel_env::TunnelTables::shared(&cfg.tunnel.neighbor);

    // The slow path: OpenFlow tables, upcalls, revalidation.
    let slow = slowpath::SlowPath::start(
        &mut dp,
        bridges,
        mgmt::ofproto::OfprotoConfig {
            idle_ms: cfg.pmd.megaflow_idle_ms,
            flow_limit: cfg.pmd.flow_limit,
        },
    )
    .context("starting the slow-path threads")?;
    let ofproto = slow.ofproto.clone();
    ofproto
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .set_tunnel_env(tunnel.clone());
    let dp = Arc::new(dp);
    let view = Arc::new(dpview::DpView::new(dp.clone(), dpdk_ffi::tsc_hz()));
    let socket = cfg.control.socket.clone();
    let cfg = reconfig::shared_config(cfg);
    let changes = Arc::new(reconfig::Reconfig::new(
        cfg.clone(),
        dp.clone(),
        ofproto.clone(),
    ));
    let mgmt_stop = Arc::new(AtomicBool::new(false));
    let extras = mgmt::ManagementExtras {
        commands: Some(reconfig::chain(
            reconfig::commands(changes.clone()),
            mgmt::udpif::commands(ofproto.clone()),
        )),
        tunnel: Some(tunnel.clone()),
        ..Default::default()
    };
    let mgmt = match mgmt::spawn_management(cfg.clone(), view.clone(), mgmt_stop.clone(), extras) {
        Ok(m) => m,
        Err(e) => {
            drop(view);
            drop(changes);
            slow.stop();
            drop(ofproto);
            if let Ok(dp) = Arc::try_unwrap(dp) {
                dp.stop();
            }
            let _ = eal.cleanup();
            bail!("{e}");
        }
    };
    eprintln!(
        "ferroswitch: running: {} port(s), {} PMD thread(s) on CPU(s) {:?}; control socket {}; Ctrl-C stops",
        spec.ports.len(),
        dp.pmds().len(),
        spec.pmd_cpus,
        socket.display(),
    );

    // Relaxed: the flag is set by the signal handler and carries no data.
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("ferroswitch: stopping");
    mgmt_stop.store(true, Ordering::Relaxed);
    mgmt.join();
    drop(changes);
    slow.stop();
    drop(ofproto);
    let tsc_hz = view.tsc_hz;
    drop(view);
    let Ok(mut dp) = Arc::try_unwrap(dp) else {
        bail!("internal error: datapath still referenced at shutdown");
    };
    dp.stop_pmds();
    println!(
        "{}",
        mgmt::console::final_summary(
            &dpview::port_snapshots(&dp),
            &dpview::pmd_snapshots(&dp, tsc_hz)
        )
    );
    dp.stop();
    eal.cleanup().context("EAL cleanup")?;
    if let Some(dir) = demo_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(ExitCode::SUCCESS)
}

/// The datapath's view of the config: ports numbered as
/// [`Config::datapath_ports`] numbers them (bridge order, each bridge's ports then
/// its own internal port), static forwarding by those numbers.
fn datapath_spec(cfg: &Config, ncpus: usize) -> Result<pmd::DatapathSpec> {
    let dp_ports = cfg.datapath_ports();
    let ports = dp_ports
        .iter()
        .map(|p| pmd::PortSpec {
            bridge: p.bridge.clone(),
            name: p.port.name.clone(),
            ofport: p.ofport,
            devargs: p.devargs.clone(),
            n_rxq: p.port.n_rxq,
            kind: reconfig::port_kind(&p.port),
            // Checked with the config.
            rxq_affinity: p.port.rxq_affinity().unwrap_or_default(),
        })
        .collect();
    let mut forward = Vec::new();
    for b in &cfg.bridges {
        let no = |name: &str| {
            dp_ports
                .iter()
                .position(|p| p.bridge == b.name && p.port.name == name)
        };
        for f in &b.forwards {
            match (no(&f.in_port), no(&f.output)) {
                (Some(i), Some(o)) => forward.push((i, o)),
                _ => bail!(
                    "bridge {:?}: forward {} -> {}: no such port",
                    b.name,
                    f.in_port,
                    f.output
                ),
            }
        }
    }
    Ok(pmd::DatapathSpec {
        ports,
        pmd_cpus: cfg.resolved_pmd_cpus(ncpus),
        burst: cfg.pmd.burst,
        mbufs: cfg.dpdk.mbufs,
        mbuf_cache: cfg.dpdk.mbuf_cache,
        forward,
        flows: Some(pmd::FlowSpec {
            emc_entries: cfg.pmd.emc_entries,
            emc_insert_inv_prob: cfg.pmd.emc_insert_inv_prob,
            simple_match: cfg.pmd.simple_match,
            ..pmd::FlowSpec::default()
        }),
    })
}
