//! Support for DPDK tests on virtual devices: the EAL of a test process and ports
//! backed by DPDK rings the test fills and drains. Not used by the switch itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dpdk_ffi::{Eal, EthPort, Mbuf, Mempool, Ring};

use crate::datapath::{PortKind, PortSpec};
use crate::port::{DpdkPort, Port, TunnelPort};
use crate::stats::{DropReason, PmdStats};

/// Initialises the EAL of this test process: no hugepages, no PCI, a
/// `--file-prefix` unique to `name` and the process, so tests never collide.
pub fn eal(name: &str) -> Eal {
    let args: Vec<String> = vec![
        name.into(),
        "-l".into(),
        "0".into(),
        "--no-huge".into(),
        "-m".into(),
        "256".into(),
        "--no-pci".into(),
        format!("--file-prefix=fs-{name}-{}", std::process::id()),
        "--log-level=warning".into(),
        "--no-telemetry".into(),
    ];
    Eal::init(&args).expect("EAL init")
}

/// The CPU for a test's PMD: 1 when the machine has two CPUs or more, else 0.
pub fn pmd_cpu() -> usize {
    let cpus = core_affinity::get_core_ids().map_or(1, |c| c.len());
    usize::from(cpus > 1)
}

/// Ports as [`crate::Datapath::start_with_ports`] takes them.
pub type OpenedPorts = Vec<(PortSpec, Arc<dyn Port>)>;

/// `n` ports `p0`..`p{n-1}` (OpenFlow ports 1..=n, bridge `br0`), each over two
/// rings: `rings[2 * i]` is what port i receives (the test enqueues there),
/// `rings[2 * i + 1]` what it sends (the test dequeues there). `tag` keeps the
/// DPDK names of several calls apart.
pub fn ring_ports(
    tag: &str,
    n: usize,
    ring_size: u32,
    pool: &Arc<Mempool>,
) -> (Vec<Arc<Ring>>, OpenedPorts) {
    let mut rings = Vec::new();
    let mut ports: OpenedPorts = Vec::new();
    for i in 0..n {
        let rx = Arc::new(Ring::create(&format!("{tag}rx{i}"), ring_size).expect("ring"));
        let tx = Arc::new(Ring::create(&format!("{tag}tx{i}"), ring_size).expect("ring"));
        let eth = EthPort::from_rings(
            &format!("{tag}_p{i}"),
            std::slice::from_ref(&rx),
            std::slice::from_ref(&tx),
            pool.clone(),
        )
        .expect("ring port");
        rings.push(rx);
        rings.push(tx);
        let spec = PortSpec {
            bridge: "br0".into(),
            name: format!("p{i}"),
            ofport: i as u32 + 1,
            devargs: String::new(),
            n_rxq: 1,
            kind: PortKind::Dpdk,
            rxq_affinity: Vec::new(),
        };
        ports.push((spec, Arc::new(DpdkPort::from_eth(eth))));
    }
    (rings, ports)
}

/// A tunnel's datapath port (no device) named `name` in bridge `br0`, for a
/// test datapath with one PMD: push it after [`ring_ports`]' ports; its
/// datapath number is its position.
pub fn tunnel_port(
    name: &str,
    ofport: u32,
    kind: pipeline::tunnel::TunnelKind,
    dst_port: u16,
) -> (PortSpec, Arc<dyn Port>) {
    let spec = PortSpec {
        bridge: "br0".into(),
        name: name.into(),
        ofport,
        devargs: String::new(),
        n_rxq: 0,
        kind: PortKind::Tunnel { kind, dst_port },
        rxq_affinity: Vec::new(),
    };
    (spec, Arc::new(TunnelPort::new(kind.name(), 1)))
}

/// The spec of a test datapath over `ports`: one PMD on [`pmd_cpu`], bursts of 32,
/// the caller's mempool (`mbufs` unused), the given static forwarding and flow stage.
pub fn spec(
    ports: &OpenedPorts,
    forward: Vec<(usize, usize)>,
    flows: Option<crate::FlowSpec>,
) -> crate::DatapathSpec {
    crate::DatapathSpec {
        ports: ports.iter().map(|(s, _)| s.clone()).collect(),
        pmd_cpus: vec![pmd_cpu()],
        burst: 32,
        mbufs: 0,
        mbuf_cache: 0,
        forward,
        flows,
    }
}

/// Enqueues a copy of each frame into `ring` (an rx ring of [`ring_ports`]),
/// waiting while the ring is full.
pub fn send_frames(ring: &Ring, pool: &Mempool, frames: &[Vec<u8>]) {
    for f in frames {
        let mut m = Mbuf::from_slice(pool, f).expect("mbuf");
        loop {
            match ring.enqueue(m) {
                Ok(()) => break,
                Err(back) => {
                    m = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }
}

/// Dequeues everything in `ring` (a tx ring of [`ring_ports`]): the frames.
pub fn drain_frames(ring: &Ring) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(m) = ring.dequeue() {
        out.push(m.data().to_vec());
    }
    out
}

/// Polls `done` until it holds; after 30 s panics with `what` and the PMD's
/// counters.
pub fn wait_for(what: &str, stats: &PmdStats, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        if Instant::now() > deadline {
            let drops: Vec<String> = DropReason::ALL
                .iter()
                .map(|r| format!("{}={}", r.as_str(), stats.drops[r.index()].get()))
                .collect();
            panic!(
                "timed out waiting for {what}: rx {} tx {} simple {} simple-mac {} emc {} megaflow {} upcalls {} held {} drops {}",
                stats.rx_packets.get(),
                stats.tx_packets.get(),
                stats.simple_hits.get(),
                stats.simple_mac_hits.get(),
                stats.emc_hits.get(),
                stats.megaflow_hits.get(),
                stats.upcalls.get(),
                stats.upcalls_coalesced.get(),
                drops.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
