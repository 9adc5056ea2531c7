//! The datapath: a mempool, the ports, and the PMD threads that poll them.
//!
//! Ports are numbered by their position in [`DatapathSpec::ports`] (the datapath port
//! number, as OVS's dpif numbers ports apart from their per-bridge OpenFlow numbers).
//! Every port gets one tx queue per PMD, so PMDs never share a tx queue; its rx queues
//! are spread round-robin over the PMDs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use dpdk_ffi::{DpdkError, Link, Mempool, PortConf, PortStats, Quiesce};
use pipeline::tunnel::{TunnelKind, TunnelPortInfo};
use pipeline::StaticForward;

use crossbeam_channel::{Receiver, Sender};

use crate::poll_loop::{self, AssignedRxq, FlowStage, PmdContext, INTERNAL_POLL_EVERY};
use crate::port::{DpdkPort, InternalPort, Port, RxPort, TunnelPort, TxPort, VhostPort};
use crate::quiesce::Quiescence;
use crate::stats::{PmdStats, RxqStats};
use crate::upcall::{PmdCommand, Upcall, UpcallWaker};

/// What the datapath needs to know of a port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSpec {
    pub bridge: String,
    pub name: String,
    /// OpenFlow port number within its bridge.
    pub ofport: u32,
    pub devargs: String,
    pub n_rxq: u16,
    /// What kind of port `devargs` makes.
    pub kind: PortKind,
    /// Rx queues pinned to the PMD of a CPU: (queue, CPU), OVS's
    /// `pmd-rxq-affinity`.
    pub rxq_affinity: Vec<(u16, usize)>,
}

impl PortSpec {
    /// `source` as an error of this port.
    fn error(&self, source: DpdkError) -> DatapathError {
        DatapathError::Port {
            bridge: self.bridge.clone(),
            port: self.name.clone(),
            source,
        }
    }
}

/// The port types the datapath opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PortKind {
    /// `type=dpdk`: a DPDK ethdev from devargs ([`DpdkPort`]).
    #[default]
    Dpdk,
    /// `type=internal`: a `net_tap` device in the host kernel ([`InternalPort`]).
    Internal,
    /// `type=dpdkvhostuser` / `dpdkvhostuserclient`: a `net_vhost` device
    /// ([`VhostPort`]); `client`: the switch connects to QEMU's socket.
    VhostUser { client: bool },
    /// A tunnel's datapath port ([`TunnelPort`], OVS's `vxlan_sys_4789`): no
    /// device; `devargs` is unused. A `tnl_pop` to it checks the outer headers
    /// of `kind` (UDP to `dst_port` for VXLAN and Geneve; 0 for GRE) and
    /// recirculates the inner frame as received here.
    Tunnel { kind: TunnelKind, dst_port: u16 },
}

impl PortKind {
    /// What a `tnl_pop` to a port of this kind expects; `None` for a port
    /// that is not a tunnel's.
    pub fn tunnel(self) -> Option<TunnelPortInfo> {
        match self {
            PortKind::Tunnel { kind, dst_port } => Some(TunnelPortInfo { kind, dst_port }),
            _ => None,
        }
    }
}

/// The whole datapath to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatapathSpec {
    pub ports: Vec<PortSpec>,
    /// One PMD thread per CPU listed.
    pub pmd_cpus: Vec<usize>,
    pub burst: usize,
    pub mbufs: u32,
    pub mbuf_cache: u32,
    /// Static forwarding: (input, output) datapath port numbers.
    pub forward: Vec<(usize, usize)>,
    /// The flow stage for ports without static forwarding: `None` drops their
    /// packets as `no_forward`.
    pub flows: Option<FlowSpec>,
}

/// Flow-cache settings (OVS's `emc-insert-inv-prob` and friends).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSpec {
    /// EMC slots per PMD (0 disables the EMC).
    pub emc_entries: usize,
    /// Insert into the EMC on 1 in N classifier hits (1: always, 0: never).
    pub emc_insert_inv_prob: u32,
    /// Classify packets of ports whose megaflows only match in_port, dl_type,
    /// VLAN and fragment bits without parsing them (OVS's simple match).
    pub simple_match: bool,
    /// Capacity of the upcall queue shared by the PMDs.
    pub upcall_queue: usize,
    /// Capacity of each PMD's command queue.
    pub command_queue: usize,
}

impl Default for FlowSpec {
    fn default() -> Self {
        FlowSpec {
            emc_entries: 8192,
            emc_insert_inv_prob: 100,
            simple_match: true,
            upcall_queue: 4096,
            command_queue: 16384,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("mempool: {0}")]
    Mempool(DpdkError),
    #[error("bridge {bridge:?} port {port:?}: {source}")]
    Port {
        bridge: String,
        port: String,
        source: DpdkError,
    },
    #[error("pmd on cpu {cpu}: {reason}")]
    Pmd { cpu: usize, reason: String },
    #[error("{0}")]
    Spec(String),
}

/// Most datapath ports (numbers 0..MAX_PORTS): each PMD has counters for this
/// many, allocated at start so ports added at runtime need no reallocation of
/// what other threads read.
pub const MAX_PORTS: usize = 1024;

/// Longest wait for every PMD to take up or let go of a port at runtime (a PMD
/// looks at its commands every few microseconds).
const PORT_CHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// A port as the datapath runs it.
pub struct PortInfo {
    pub spec: PortSpec,
    pub port_no: usize,
    port: Arc<dyn Port>,
}

impl PortInfo {
    pub fn kind(&self) -> &'static str {
        self.port.kind()
    }
    pub fn link(&self) -> Link {
        self.port.link()
    }
    /// The port itself, for a thread that reads its link (the slow path's
    /// bond monitor) while the datapath runs.
    pub fn handle(&self) -> Arc<dyn Port> {
        self.port.clone()
    }
    /// The driver's own statistics (errors, misses).
    pub fn driver_stats(&self) -> PortStats {
        self.port.stats()
    }
    pub fn dpdk_port_id(&self) -> Option<u16> {
        self.port.dpdk_port_id()
    }
}

/// The datapath's ports by datapath number, shared: what ports are running
/// now, also after runtime changes.
#[derive(Clone, Default)]
pub struct PortTable(Arc<RwLock<Vec<Option<Arc<PortInfo>>>>>);

impl PortTable {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Option<Arc<PortInfo>>>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Option<Arc<PortInfo>>>> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The port with datapath number `port_no`, if it runs.
    pub fn get(&self, port_no: usize) -> Option<Arc<PortInfo>> {
        self.read().get(port_no).cloned().flatten()
    }
}

/// A running PMD thread, as others see it.
pub struct PmdHandle {
    pub id: usize,
    pub cpu: usize,
    pub lcore: u32,
    /// The rx queues this PMD polls.
    rxqs: Mutex<Vec<RxqInfo>>,
    pub stats: Arc<PmdStats>,
    /// Commands to this PMD (with the flow stage on).
    pub commands: Option<Sender<PmdCommand>>,
    thread: Option<JoinHandle<()>>,
}

/// Per-port totals over all PMDs plus the driver's error counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortTotals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
    /// Extra tx bursts (OVS's `tx_retries`).
    pub tx_retries: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
}

/// An rx queue as its PMD's handle shows it.
#[derive(Clone, Debug)]
pub struct RxqInfo {
    pub port_no: usize,
    pub queue: u16,
    /// Pinned to this PMD by `pmd-rxq-affinity`.
    pub pinned: bool,
    pub stats: Arc<RxqStats>,
}

impl PmdHandle {
    /// (datapath port number, queue) of every rx queue this PMD polls.
    pub fn rxqs(&self) -> Vec<(usize, u16)> {
        lock(&self.rxqs)
            .iter()
            .map(|r| (r.port_no, r.queue))
            .collect()
    }

    /// Every rx queue this PMD polls, with its counters.
    pub fn rxq_info(&self) -> Vec<RxqInfo> {
        lock(&self.rxqs).clone()
    }

    /// Whether a queue is pinned here: then, as OVS's `pmd-rxq-isolate`, the PMD
    /// gets no other queues.
    pub fn isolated(&self) -> bool {
        lock(&self.rxqs).iter().any(|r| r.pinned)
    }
}

/// Where each rx queue of port `p` (with `n_rxq` queues) goes: (queue, PMD
/// index, pinned). A queue its `rxq_affinity` pins goes to the PMD on that
/// CPU (an error if none runs there); the others to the PMD polling the
/// fewest queues among those with no pinned queue (all PMDs if each has
/// one), as OVS assigns them with `pmd-rxq-isolate=true`. `load` counts each
/// PMD's queues and is updated.
fn assign_rxqs(
    p: &PortSpec,
    n_rxq: u16,
    cpus: &[usize],
    isolated: &[bool],
    load: &mut [usize],
) -> Result<Vec<(u16, usize, bool)>, DatapathError> {
    let mut out = Vec::with_capacity(usize::from(n_rxq));
    for &(q, cpu) in &p.rxq_affinity {
        if q >= n_rxq {
            return Err(DatapathError::Spec(format!(
                "port {:?}: pmd-rxq-affinity: queue {q} does not exist (the port has {n_rxq})",
                p.name
            )));
        }
        let pmd = cpus.iter().position(|&c| c == cpu).ok_or_else(|| {
            DatapathError::Spec(format!(
                "port {:?}: pmd-rxq-affinity: queue {q} to CPU {cpu}, where no PMD runs (PMD CPUs: {cpus:?})",
                p.name
            ))
        })?;
        out.push((q, pmd, true));
    }
    let open: Vec<usize> = match (0..cpus.len())
        .filter(|&i| !isolated.get(i).copied().unwrap_or(false))
        .collect::<Vec<_>>()
    {
        v if v.is_empty() => (0..cpus.len()).collect(),
        v => v,
    };
    for q in 0..n_rxq {
        if out.iter().any(|&(pq, _, _)| pq == q) {
            continue;
        }
        let pmd = open
            .iter()
            .copied()
            .min_by_key(|&i| (load.get(i).copied().unwrap_or(0), i))
            .unwrap_or(0);
        out.push((q, pmd, false));
    }
    for &(_, pmd, _) in &out {
        if let Some(l) = load.get_mut(pmd) {
            *l += 1;
        }
    }
    out.sort_by_key(|&(q, _, _)| q);
    Ok(out)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Datapath {
    /// By datapath port number; `None`: a number free again after a removal.
    ports: PortTable,
    pmds: Vec<PmdHandle>,
    stop: Arc<AtomicBool>,
    pool: Arc<Mempool>,
    upcalls: Option<Receiver<Upcall>>,
    /// How the PMDs wake the upcall handler (see [`UpcallWaker`]).
    upcall_waker: Arc<UpcallWaker>,
    /// Held while a port is added or removed (one change at a time).
    changing: Mutex<()>,
    /// The PMDs' quiescent points (what a vhost port waits for when its guest
    /// goes away).
    quiescence: Arc<Quiescence>,
}

/// How often a PMD polls a port of `kind` (see [`INTERNAL_POLL_EVERY`]).
fn poll_every(kind: PortKind) -> u32 {
    match kind {
        PortKind::Dpdk | PortKind::VhostUser { .. } => 1,
        PortKind::Internal => INTERNAL_POLL_EVERY,
        // No rx queue to poll.
        PortKind::Tunnel { .. } => 1,
    }
}

/// Opens the port `p` describes, with one tx queue per PMD.
fn open_port(
    p: &PortSpec,
    n_pmds: usize,
    pool: &Arc<Mempool>,
    quiescence: &Arc<Quiescence>,
) -> Result<Arc<dyn Port>, DatapathError> {
    let conf = PortConf {
        n_rxq: p.n_rxq.max(1),
        n_txq: n_pmds as u16,
        ..PortConf::default()
    };
    let err = |source| p.error(source);
    Ok(match p.kind {
        PortKind::Dpdk => Arc::new(DpdkPort::open(&p.devargs, &conf, pool.clone()).map_err(err)?),
        PortKind::Internal => {
            Arc::new(InternalPort::open(&p.devargs, &conf, pool.clone()).map_err(err)?)
        }
        PortKind::VhostUser { client } => {
            let q = quiescence.clone();
            let quiesce: Quiesce = Arc::new(move || q.wait());
            Arc::new(
                VhostPort::open(&p.devargs, &conf, pool.clone(), client, quiesce).map_err(err)?,
            )
        }
        PortKind::Tunnel { kind, .. } => Arc::new(TunnelPort::new(kind.name(), conf.n_txq)),
    })
}

impl Datapath {
    /// Opens every port and starts the PMD threads. The EAL must be initialised.
    /// On error everything opened so far is closed again.
    pub fn start(spec: &DatapathSpec) -> Result<Datapath, DatapathError> {
        let pool = Arc::new(
            Mempool::pktmbuf("fs_mbuf_pool", spec.mbufs, spec.mbuf_cache, 2048 + 128)
                .map_err(DatapathError::Mempool)?,
        );
        let n_pmds = spec.pmd_cpus.len().max(1);
        let quiescence = Arc::new(Quiescence::new(n_pmds));
        let mut opened: Vec<(PortSpec, Arc<dyn Port>)> = Vec::new();
        for p in &spec.ports {
            let port = open_port(p, n_pmds, &pool, &quiescence)?;
            let mut p = p.clone();
            p.n_rxq = port.n_rxq();
            opened.push((p, port));
        }
        Self::start_over(spec, opened, pool, quiescence)
    }

    /// Starts PMDs over ports opened by the caller (ring ports in tests).
    pub fn start_with_ports(
        spec: &DatapathSpec,
        opened: Vec<(PortSpec, Arc<dyn Port>)>,
        pool: Arc<Mempool>,
    ) -> Result<Datapath, DatapathError> {
        let quiescence = Arc::new(Quiescence::new(spec.pmd_cpus.len().max(1)));
        Self::start_over(spec, opened, pool, quiescence)
    }

    /// Starts PMDs over `opened`, marking their quiescent points in `quiescence`
    /// (which the ports' event handlers wait on).
    fn start_over(
        spec: &DatapathSpec,
        opened: Vec<(PortSpec, Arc<dyn Port>)>,
        pool: Arc<Mempool>,
        quiescence: Arc<Quiescence>,
    ) -> Result<Datapath, DatapathError> {
        let n_ports = opened.len();
        if n_ports > MAX_PORTS {
            return Err(DatapathError::Spec(format!(
                "{n_ports} ports: at most {MAX_PORTS} are supported"
            )));
        }
        for &(i, o) in &spec.forward {
            if i >= n_ports || o >= n_ports {
                return Err(DatapathError::Spec(format!(
                    "forward ({i} -> {o}): no such datapath port (have {n_ports})"
                )));
            }
        }
        let cpus = if spec.pmd_cpus.is_empty() {
            vec![0]
        } else {
            spec.pmd_cpus.clone()
        };
        let pairs: Vec<(u32, u32)> = spec
            .forward
            .iter()
            .map(|&(i, o)| (i as u32, o as u32))
            .collect();

        let upcall_waker = Arc::new(UpcallWaker::default());
        let (upcall_tx, upcall_rx) = match &spec.flows {
            Some(f) => {
                let (tx, rx) = crossbeam_channel::bounded(f.upcall_queue.max(1));
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let mut command_txs: Vec<Option<Sender<PmdCommand>>> = Vec::new();

        // Every (port, rx queue), spread round-robin over the PMDs.
        let mut contexts: Vec<PmdContext> = Vec::new();
        for (id, &cpu) in cpus.iter().enumerate() {
            let mut txqs: Vec<Box<dyn TxPort>> = Vec::with_capacity(n_ports);
            for (p, port) in &opened {
                txqs.push(port.tx_queue(id as u16).map_err(|e| p.error(e))?);
            }
            let flows = match (&spec.flows, &upcall_tx) {
                (Some(f), Some(up)) => {
                    let (ctx_tx, ctx_rx) = crossbeam_channel::bounded(f.command_queue.max(1));
                    command_txs.push(Some(ctx_tx));
                    Some(FlowStage {
                        emc_entries: f.emc_entries,
                        emc_insert_inv_prob: f.emc_insert_inv_prob,
                        simple_match: f.simple_match,
                        upcalls: up.clone(),
                        upcall_waker: upcall_waker.clone(),
                        commands: ctx_rx,
                        pool: pool.clone(),
                    })
                }
                _ => {
                    command_txs.push(None);
                    None
                }
            };
            contexts.push(PmdContext {
                id,
                cpu,
                burst: spec.burst.clamp(1, dpdk_ffi::MAX_BURST),
                rxqs: Vec::new(),
                txqs,
                tunnels: opened.iter().map(|(p, _)| p.kind.tunnel()).collect(),
                forward: StaticForward::new(&pairs),
                flows,
                stats: Arc::new(PmdStats::new(MAX_PORTS)),
                quiescence: quiescence.clone(),
            });
        }
        // PMDs with a pinned queue get no others (OVS's pmd-rxq-isolate).
        let isolated: Vec<bool> = cpus
            .iter()
            .map(|c| {
                opened
                    .iter()
                    .any(|(p, _)| p.rxq_affinity.iter().any(|&(_, cpu)| cpu == *c))
            })
            .collect();
        let mut load = vec![0usize; cpus.len()];
        for (port_no, (p, port)) in opened.iter().enumerate() {
            for (q, pmd, pinned) in assign_rxqs(p, port.n_rxq(), &cpus, &isolated, &mut load)? {
                let rxq = port.rx_queue(q).map_err(|e| p.error(e))?;
                if let Some(ctx) = contexts.get_mut(pmd) {
                    ctx.rxqs.push(AssignedRxq {
                        port_no,
                        queue: q,
                        rxq,
                        poll_every: poll_every(p.kind),
                        pinned,
                        stats: Arc::default(),
                    });
                }
            }
        }

        let stop = Arc::new(AtomicBool::new(false));
        let mut dp = Datapath {
            ports: PortTable(Arc::new(RwLock::new(
                opened
                    .into_iter()
                    .enumerate()
                    .map(|(port_no, (spec, port))| {
                        Some(Arc::new(PortInfo {
                            spec,
                            port_no,
                            port,
                        }))
                    })
                    .collect(),
            ))),
            pmds: Vec::new(),
            stop: stop.clone(),
            pool,
            upcalls: upcall_rx,
            upcall_waker,
            changing: Mutex::new(()),
            quiescence,
        };
        drop(upcall_tx);
        for (ctx, commands) in contexts.into_iter().zip(command_txs) {
            match spawn_pmd(ctx, commands, stop.clone()) {
                Ok(h) => dp.pmds.push(h),
                Err(e) => {
                    dp.shutdown();
                    return Err(e);
                }
            }
        }
        Ok(dp)
    }

    /// The ports, by datapath port number (numbers freed by a removal skipped).
    pub fn ports(&self) -> Vec<Arc<PortInfo>> {
        self.read_ports().iter().flatten().cloned().collect()
    }

    /// The port with datapath number `port_no`.
    pub fn port(&self, port_no: usize) -> Option<Arc<PortInfo>> {
        self.read_ports().get(port_no).cloned().flatten()
    }

    fn read_ports(&self) -> std::sync::RwLockReadGuard<'_, Vec<Option<Arc<PortInfo>>>> {
        self.ports.read()
    }

    fn write_ports(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Option<Arc<PortInfo>>>> {
        self.ports.write()
    }

    /// A handle on the live port table, for threads that look ports up by
    /// datapath number while ports come and go (the slow path's bonds).
    pub fn port_table(&self) -> PortTable {
        self.ports.clone()
    }

    /// Opens the port `spec` describes and has the PMDs serve it, without
    /// stopping them: every PMD gets a tx queue of it, and its rx queues go to the
    /// PMDs polling the fewest queues. Returns its datapath port number: the
    /// lowest free one. Returns once every PMD polls it.
    pub fn add_port(&self, spec: PortSpec) -> Result<usize, DatapathError> {
        let port = open_port(&spec, self.pmds.len().max(1), &self.pool, &self.quiescence)?;
        self.add_opened_port(spec, port)
    }

    /// [`Datapath::add_port`] for a port the caller opened (ring ports in tests).
    pub fn add_opened_port(
        &self,
        mut spec: PortSpec,
        port: Arc<dyn Port>,
    ) -> Result<usize, DatapathError> {
        let _one_at_a_time = lock(&self.changing);
        let commands = self.commands()?;
        let port_no = {
            let ports = self.read_ports();
            ports
                .iter()
                .position(Option::is_none)
                .unwrap_or(ports.len())
        };
        if port_no >= MAX_PORTS {
            return Err(DatapathError::Spec(format!(
                "port {:?}: the datapath has its maximum of {MAX_PORTS} ports",
                spec.name
            )));
        }
        spec.n_rxq = port.n_rxq();
        let err = |source| spec.error(source);
        // Every queue handle first: a failure here leaves the PMDs untouched.
        let mut txqs: Vec<Box<dyn TxPort>> = Vec::with_capacity(self.pmds.len());
        for pmd in &self.pmds {
            txqs.push(port.tx_queue(pmd.id as u16).map_err(err)?);
        }
        let mut load: Vec<usize> = self.pmds.iter().map(|p| lock(&p.rxqs).len()).collect();
        let cpus: Vec<usize> = self.pmds.iter().map(|p| p.cpu).collect();
        let isolated: Vec<bool> = self
            .pmds
            .iter()
            .map(|p| p.isolated() || spec.rxq_affinity.iter().any(|&(_, c)| c == p.cpu))
            .collect();
        let assignment = assign_rxqs(&spec, port.n_rxq(), &cpus, &isolated, &mut load)?;
        let mut rxqs: Vec<Vec<AssignedRxq>> = self.pmds.iter().map(|_| Vec::new()).collect();
        for (q, pmd, pinned) in assignment {
            let rxq: Box<dyn RxPort> = port.rx_queue(q).map_err(err)?;
            if let Some(list) = rxqs.get_mut(pmd) {
                list.push(AssignedRxq {
                    port_no,
                    queue: q,
                    rxq,
                    poll_every: poll_every(spec.kind),
                    pinned,
                    stats: Arc::default(),
                });
            }
        }
        let mut acks = Vec::new();
        for ((pmd, txq), rxqs) in self.pmds.iter().zip(txqs).zip(rxqs) {
            let (done, ack) = crossbeam_channel::bounded(1);
            let queues: Vec<RxqInfo> = rxqs.iter().map(AssignedRxq::info).collect();
            if let Some(q) = commands.get(pmd.id) {
                if q.send(PmdCommand::AddPort {
                    port_no,
                    txq,
                    rxqs,
                    tunnel: spec.kind.tunnel(),
                    done,
                })
                .is_ok()
                {
                    acks.push(ack);
                }
            }
            lock(&pmd.rxqs).extend(queues);
        }
        wait_all(&acks, "add", &spec.name)?;
        let mut ports = self.write_ports();
        while ports.len() <= port_no {
            ports.push(None);
        }
        if let Some(slot) = ports.get_mut(port_no) {
            *slot = Some(Arc::new(PortInfo {
                spec,
                port_no,
                port,
            }));
        }
        Ok(port_no)
    }

    /// Has every PMD let go of port `port_no` (what they queued for it is sent
    /// first), then closes it: its queues and the mbufs in them are freed and a
    /// hot-plugged device is unplugged. The slow path removes the megaflows that
    /// use the port before; a packet a PMD still sends there is a counted drop.
    pub fn remove_port(&self, port_no: usize) -> Result<PortSpec, DatapathError> {
        let _one_at_a_time = lock(&self.changing);
        let commands = self.commands()?;
        let info = self
            .port(port_no)
            .ok_or_else(|| DatapathError::Spec(format!("no datapath port {port_no}")))?;
        let mut acks = Vec::new();
        for pmd in &self.pmds {
            let (done, ack) = crossbeam_channel::bounded(1);
            if let Some(q) = commands.get(pmd.id) {
                if q.send(PmdCommand::RemovePort { port_no, done }).is_ok() {
                    acks.push(ack);
                }
            }
            lock(&pmd.rxqs).retain(|r| r.port_no != port_no);
        }
        wait_all(&acks, "remove", &info.spec.name)?;
        if let Some(slot) = self.write_ports().get_mut(port_no) {
            *slot = None;
        }
        let spec = info.spec.clone();
        // The last handle: the port is stopped, closed and unplugged here (the PMDs
        // dropped their queues, and snapshots are short-lived).
        drop(info);
        Ok(spec)
    }

    /// The PMDs' command queues: runtime port changes need every PMD to have one.
    fn commands(&self) -> Result<Vec<Sender<PmdCommand>>, DatapathError> {
        self.pmds
            .iter()
            .map(|p| {
                p.commands.clone().ok_or_else(|| {
                    DatapathError::Spec(
                        "ports can be added and removed only with the flow stage on".into(),
                    )
                })
            })
            .collect()
    }

    pub fn pmds(&self) -> &[PmdHandle] {
        &self.pmds
    }

    pub fn mempool(&self) -> &Arc<Mempool> {
        &self.pool
    }

    /// The receiving end of the upcall queue (once; `None` without a flow stage).
    pub fn take_upcalls(&mut self) -> Option<Receiver<Upcall>> {
        self.upcalls.take()
    }

    /// What the upcall handler parks on when idle (the PMDs wake it).
    pub fn upcall_waker(&self) -> Arc<UpcallWaker> {
        self.upcall_waker.clone()
    }

    /// Totals of port `port_no` over every PMD, plus the driver's drop and error
    /// counters (rx misses and mbuf shortages count as rx drops).
    pub fn port_totals(&self, port_no: usize) -> PortTotals {
        let mut t = PortTotals::default();
        for pmd in &self.pmds {
            if let Some(c) = pmd.stats.port(port_no) {
                t.rx_packets += c.rx_packets.get();
                t.rx_bytes += c.rx_bytes.get();
                t.tx_packets += c.tx_packets.get();
                t.tx_bytes += c.tx_bytes.get();
                t.tx_dropped += c.tx_dropped.get();
                t.tx_retries += c.tx_retries.get();
            }
        }
        if let Some(p) = self.port(port_no) {
            let d = p.driver_stats();
            t.rx_dropped = d.imissed + d.rx_nombuf;
            t.rx_errors = d.ierrors;
            t.tx_errors = d.oerrors;
        }
        t
    }

    /// Stops the PMD threads (each flushes what it queued) and closes every port.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Stops the PMD threads, each after flushing what it queued; the ports stay
    /// open and every counter stays readable (for the final summary).
    pub fn stop_pmds(&mut self) {
        // Relaxed: PMDs only need to see the flag eventually; join orders the rest.
        self.stop.store(true, Ordering::Relaxed);
        for pmd in &mut self.pmds {
            if let Some(t) = pmd.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn shutdown(&mut self) {
        self.stop_pmds();
        // Dropping the ports (after the PMDs released their queues) stops and
        // closes them: net_pcap writes out its tx file here.
        self.write_ports().clear();
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn spawn_pmd(
    ctx: PmdContext,
    commands: Option<Sender<PmdCommand>>,
    stop: Arc<AtomicBool>,
) -> Result<PmdHandle, DatapathError> {
    let (id, cpu) = (ctx.id, ctx.cpu);
    let rxqs = ctx.rxqs.iter().map(AssignedRxq::info).collect();
    let stats = ctx.stats.clone();
    let (tx, rx) = std::sync::mpsc::channel::<Result<u32, String>>();
    let thread = std::thread::Builder::new()
        .name(format!("pmd-c{cpu:02}"))
        .spawn(move || {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                let _ = tx.send(Err(format!("cannot pin the thread to CPU {cpu}")));
                return;
            }
            let lcore = match dpdk_ffi::register_thread() {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = tx.send(Ok(lcore));
            poll_loop::run(ctx, &stop);
            dpdk_ffi::unregister_thread();
        })
        .map_err(|e| DatapathError::Pmd {
            cpu,
            reason: format!("cannot spawn thread: {e}"),
        })?;
    match rx.recv() {
        Ok(Ok(lcore)) => Ok(PmdHandle {
            id,
            cpu,
            lcore,
            rxqs: Mutex::new(rxqs),
            stats,
            commands,
            thread: Some(thread),
        }),
        Ok(Err(reason)) => {
            let _ = thread.join();
            Err(DatapathError::Pmd { cpu, reason })
        }
        Err(_) => {
            let _ = thread.join();
            Err(DatapathError::Pmd {
                cpu,
                reason: "thread exited during start".into(),
            })
        }
    }
}

/// Waits for every PMD's answer to a port change.
fn wait_all(acks: &[Receiver<()>], what: &str, port: &str) -> Result<(), DatapathError> {
    for ack in acks {
        if ack.recv_timeout(PORT_CHANGE_TIMEOUT).is_err() {
            return Err(DatapathError::Spec(format!(
                "port {port:?}: a PMD did not {what} it within {PORT_CHANGE_TIMEOUT:?}"
            )));
        }
    }
    Ok(())
}
