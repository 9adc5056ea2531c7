//! ferroswitch benchmarks: scenarios that run the real switch and its peers
//! (`dpdk-testpmd`, the forwarding limit; with `--peer ovs` also Open vSwitch with
//! DPDK) side by side on the same virtual devices, in alternating repetitions, and
//! print medians.
//!
//! Never run anything else of yours (builds, tests) while this measures: the machine
//! has two cores and a PMD owns one.

mod fastpath;
mod guest;
mod netns;
mod ovs;
mod procstat;
mod runner;
mod scenario;
mod xlate;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "perf", about = "ferroswitch side-by-side benchmarks")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Measurement window per repetition, seconds.
    #[arg(long, global = true, default_value_t = 10)]
    window: u64,
    /// Warm-up before each window, seconds.
    #[arg(long, global = true, default_value_t = 3)]
    warmup: u64,
    /// Repetitions of each contender (alternating).
    #[arg(long, global = true, default_value_t = 3)]
    reps: usize,
    /// CPU of the forwarding thread (the PMD; testpmd's forwarding lcore).
    #[arg(long, global = true, default_value_t = 1)]
    fwd_cpu: usize,
    /// CPU of the main/management thread.
    #[arg(long, global = true, default_value_t = 0)]
    main_cpu: usize,
    /// The ferroswitch binary (default: target/release/ferroswitch, built if missing).
    #[arg(long, global = true)]
    ferroswitch: Option<PathBuf>,
    /// Also measure this peer (repeatable): `ovs` = Open vSwitch with DPDK, a
    /// private instance on the same vdevs and flows (needs openvswitch-switch-dpdk:
    /// `FERROSWITCH_PERF_PEERS=1 bash scripts/setup.sh`).
    #[arg(long, global = true, value_enum)]
    peer: Vec<runner::Peer>,
    /// Longest wait, seconds, for a contender to start (100k flows are parsed at
    /// start-up) and for its megaflows to be installed before the warm-up.
    #[arg(long, global = true, default_value_t = 120)]
    settle_max: u64,
}

#[derive(Subcommand)]
enum Scenario {
    /// Port to port: net_pcap infinite_rx (64-byte frames) -> 1 PMD -> net_null,
    /// static forwarding, against dpdk-testpmd --forward-mode=io on the same vdevs.
    P2p,
    /// One UDP flow through the OpenFlow path: `in_port=src,actions=output:sink`.
    #[command(name = "1flow")]
    OneFlow,
    /// 10k UDP flows against 10k exact 5-tuple rules (+ priority=0 drop).
    #[command(name = "10k-flows")]
    Flows10k,
    /// 100k UDP flows against 100k exact 5-tuple rules (+ priority=0 drop).
    #[command(name = "100k-flows")]
    Flows100k,
    /// NORMAL (the default flow) between 2 MACs: one UDP flow from a source MAC
    /// learned on `src` to a destination static on `sink`.
    #[command(name = "normal-2mac")]
    Normal2Mac,
    /// NORMAL with 1,000 source MACs learned on `src` (1,000 megaflows), sending
    /// to 10 destinations static on `sink`.
    #[command(name = "normal-1k-mac")]
    Normal1kMac,
    /// PVP: a virtio_user guest (testpmd txonly) sends 64-byte frames through one
    /// PMD to a second guest (rxonly); the forwarder connects to both guests'
    /// sockets (ferroswitch and OVS: dpdkvhostuserclient ports; testpmd: net_vhost
    /// client=1, io forwarding).
    Pvp,
    /// VXLAN encapsulation (native tunneling): 64-byte frames of one UDP flow
    /// into br-int's `src`, `in_port=src actions=output:vxlan0` (remote_ip
    /// 172.31.0.2, key 100), pushed and sent through br-phy (whose own port has
    /// 172.31.0.1/24; static neighbor 172.31.0.2), `in_port=LOCAL
    /// actions=output:sink`; 114-byte packets out. Each contender runs in a
    /// network namespace of its own.
    #[command(name = "vxlan-encap")]
    VxlanEncap,
    /// VXLAN decapsulation: those 114-byte VXLAN packets (172.31.0.2 ->
    /// 172.31.0.1, VNI 100) into br-phy's `src`, `in_port=src
    /// actions=output:LOCAL`, popped at br-phy's endpoint, the inner frames
    /// into br-int on vxlan0, `in_port=vxlan0 actions=output:sink`.
    #[command(name = "vxlan-decap")]
    VxlanDecap,
    /// One contender alone on a scenario for a few seconds: its datapath
    /// flows (tunnels: route and neighbor tables too) and what it forwarded
    /// (a check of the setup, not a measurement).
    #[command(hide = true)]
    Check {
        #[arg(value_enum)]
        scenario: runner::CheckScenario,
        #[arg(long, value_enum)]
        contender: runner::Contender,
        /// Seconds to count over.
        #[arg(long, default_value_t = 3)]
        secs: u64,
    },
    /// The pvp guest (run by `pvp` itself): sends 64-byte frames on a
    /// virtio_user NIC on TX_SOCK, receives on one on RX_SOCK.
    #[command(hide = true)]
    Guest {
        tx_sock: PathBuf,
        rx_sock: PathBuf,
        #[arg(long)]
        cpu: usize,
        #[arg(long)]
        prefix: String,
    },
    /// New megaflows per second from a cold cache: 100k flows, 100k rules.
    #[command(name = "flow-setup")]
    FlowSetup,
    /// Nanoseconds per packet of the flow stage's pure parts: parse, hash, EMC hit,
    /// burst lookups (no DPDK).
    Fastpath {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 1.0)]
        secs: f64,
    },
    /// Upcalls per second the slow path handles with a do-nothing datapath, through
    /// N exact 5-tuple rules (no DPDK).
    Upcall {
        #[arg(long, default_value_t = 100_000)]
        rules: usize,
    },
    /// Translations per second through br-tun and 10k/100k-rule tables (no DPDK).
    Xlate {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let opts = runner::Opts {
        window: cli.window,
        warmup: cli.warmup,
        reps: cli.reps.max(1),
        fwd_cpu: cli.fwd_cpu,
        main_cpu: cli.main_cpu,
        ferroswitch: cli.ferroswitch,
        peers: cli.peer,
        settle_max: cli.settle_max,
    };
    match cli.scenario {
        Scenario::P2p => runner::p2p(&opts),
        Scenario::OneFlow => runner::flows(&opts, runner::FlowScenario::OneFlow),
        Scenario::Flows10k => runner::flows(&opts, runner::FlowScenario::Flows10k),
        Scenario::Flows100k => runner::flows(&opts, runner::FlowScenario::Flows100k),
        Scenario::Normal2Mac => runner::flows(&opts, runner::FlowScenario::Normal2Mac),
        Scenario::Normal1kMac => runner::flows(&opts, runner::FlowScenario::Normal1kMac),
        Scenario::FlowSetup => runner::flow_setup(&opts),
        Scenario::Pvp => runner::pvp(&opts),
        Scenario::VxlanEncap => runner::tunnel(&opts, scenario::TunnelDir::Encap),
        Scenario::VxlanDecap => runner::tunnel(&opts, scenario::TunnelDir::Decap),
        Scenario::Check {
            scenario: sc,
            contender,
            secs,
        } => runner::check(&opts, sc, contender, secs),
        Scenario::Guest {
            tx_sock,
            rx_sock,
            cpu,
            prefix,
        } => guest::run(&tx_sock, &rx_sock, cpu, &prefix),
        Scenario::Xlate { secs } => xlate::run(&opts, secs),
        Scenario::Fastpath { secs } => fastpath::run(secs),
        Scenario::Upcall { rules } => fastpath::upcalls(rules),
    }
}
