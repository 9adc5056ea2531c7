//! The datapath: a mempool, the ports, and the PMD threads that poll them.
//!
//! Ports are numbered by their position in [`DatapathSpec::ports`] (the datapath port
//! number, as OVS's dpif numbers ports apart from their per-bridge OpenFlow numbers).
//! Every port gets one tx queue per PMD, so PMDs never share a tx queue; its rx queues
//! are spread round-robin over the PMDs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use dpdk_ffi::{DpdkError, Link, Mempool, PortConf, PortStats};
use pipeline::StaticForward;

use crossbeam_channel::{Receiver, Sender};

use crate::poll_loop::{self, AssignedRxq, FlowStage, PmdContext, INTERNAL_POLL_EVERY};
use crate::port::{DpdkPort, InternalPort, Port, TxPort};
use crate::stats::PmdStats;
use crate::upcall::{PmdCommand, Upcall};

/// What the datapath needs to know of a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub bridge: String,
    pub name: String,
    /// OpenFlow port number within its bridge.
    pub ofport: u32,
    pub devargs: String,
    pub n_rxq: u16,
    /// What kind of port `devargs` makes.
    pub kind: PortKind,
}

/// The port types the datapath opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PortKind {
    /// `type=dpdk`: a DPDK ethdev from devargs ([`DpdkPort`]).
    #[default]
    Dpdk,
    /// `type=internal`: a `net_tap` device in the host kernel ([`InternalPort`]).
    Internal,
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

/// A running PMD thread, as others see it.
pub struct PmdHandle {
    pub id: usize,
    pub cpu: usize,
    pub lcore: u32,
    /// (datapath port number, queue) polled by this PMD.
    pub rxqs: Vec<(usize, u16)>,
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
    pub rx_errors: u64,
    pub tx_errors: u64,
}

pub struct Datapath {
    ports: Vec<PortInfo>,
    pmds: Vec<PmdHandle>,
    stop: Arc<AtomicBool>,
    pool: Arc<Mempool>,
    upcalls: Option<Receiver<Upcall>>,
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
        let mut opened: Vec<(PortSpec, Arc<dyn Port>)> = Vec::new();
        for p in &spec.ports {
            let conf = PortConf {
                n_rxq: p.n_rxq.max(1),
                n_txq: n_pmds as u16,
                ..PortConf::default()
            };
            let err = |source| DatapathError::Port {
                bridge: p.bridge.clone(),
                port: p.name.clone(),
                source,
            };
            let port: Arc<dyn Port> = match p.kind {
                PortKind::Dpdk => {
                    Arc::new(DpdkPort::open(&p.devargs, &conf, pool.clone()).map_err(err)?)
                }
                PortKind::Internal => {
                    Arc::new(InternalPort::open(&p.devargs, &conf, pool.clone()).map_err(err)?)
                }
            };
            let mut p = p.clone();
            p.n_rxq = port.n_rxq();
            opened.push((p, port));
        }
        Self::start_with_ports(spec, opened, pool)
    }

    /// Starts PMDs over ports opened by the caller (ring ports in tests).
    pub fn start_with_ports(
        spec: &DatapathSpec,
        opened: Vec<(PortSpec, Arc<dyn Port>)>,
        pool: Arc<Mempool>,
    ) -> Result<Datapath, DatapathError> {
        let n_ports = opened.len();
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
        let err_port = |p: &PortSpec, source| DatapathError::Port {
            bridge: p.bridge.clone(),
            port: p.name.clone(),
            source,
        };

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
                txqs.push(port.tx_queue(id as u16).map_err(|e| err_port(p, e))?);
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
                forward: StaticForward::new(&pairs),
                flows,
                stats: Arc::new(PmdStats::new(n_ports)),
            });
        }
        let mut next = 0usize;
        for (port_no, (p, port)) in opened.iter().enumerate() {
            for q in 0..port.n_rxq() {
                let rxq = port.rx_queue(q).map_err(|e| err_port(p, e))?;
                if let Some(ctx) = contexts.get_mut(next % cpus.len()) {
                    ctx.rxqs.push(AssignedRxq {
                        port_no,
                        queue: q,
                        rxq,
                        poll_every: match p.kind {
                            PortKind::Dpdk => 1,
                            PortKind::Internal => INTERNAL_POLL_EVERY,
                        },
                    });
                }
                next += 1;
            }
        }

        let stop = Arc::new(AtomicBool::new(false));
        let mut dp = Datapath {
            ports: opened
                .into_iter()
                .enumerate()
                .map(|(port_no, (spec, port))| PortInfo {
                    spec,
                    port_no,
                    port,
                })
                .collect(),
            pmds: Vec::new(),
            stop: stop.clone(),
            pool,
            upcalls: upcall_rx,
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

    pub fn ports(&self) -> &[PortInfo] {
        &self.ports
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
            }
        }
        if let Some(p) = self.ports.get(port_no) {
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
        self.ports.clear();
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
    let rxqs = ctx.rxqs.iter().map(|a| (a.port_no, a.queue)).collect();
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
            rxqs,
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
