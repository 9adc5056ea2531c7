//! The management layer's read-only view of the datapath.
//!
//! The binary implements [`DatapathView`] over the real PMD threads (reading their
//! per-PMD counters and the ports' `rte_eth_stats`); tests implement it over plain
//! vectors ([`StaticView`]). Nothing in `mgmt` reaches into PMD state any other way.
//!
//! # Thread safety
//! A view is shared by the control-socket, metrics and console threads, hence
//! `Send + Sync`. Snapshots are owned copies: a reader never holds a reference into
//! memory a PMD writes.

use std::sync::Mutex;

use serde::Serialize;

/// Counters and identity of one datapath instance, read on demand by the
/// management threads.
pub trait DatapathView: Send + Sync {
    /// One snapshot per port, in a stable order (bridge order, then port order).
    fn ports(&self) -> Vec<PortSnapshot>;
    /// One snapshot per PMD thread, ordered by PMD id. Counters are cumulative
    /// since start (Prometheus counters never go back).
    fn pmds(&self) -> Vec<PmdSnapshot>;

    /// The same, counted since the last [`DatapathView::clear_pmd_stats`]
    /// (`pmd-stats-show`). Default: since start.
    fn pmds_since_clear(&self) -> Vec<PmdSnapshot> {
        self.pmds()
    }

    /// `pmd-stats-clear`: restart what [`DatapathView::pmds_since_clear`] counts.
    fn clear_pmd_stats(&self) {}
}

/// One port's identity and cumulative counters.
///
/// Counters are cumulative since the port started (or since the last
/// `pmd-stats-clear`); consumers must tolerate them going backwards (a reset).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortSnapshot {
    /// Bridge the port belongs to.
    pub bridge: String,
    /// Port (and interface) name, unique across bridges.
    pub name: String,
    /// OpenFlow port number within the bridge.
    pub ofport: u32,
    /// Port type as configured (`dpdk`, ...).
    pub port_type: String,
    /// DPDK devargs the port was probed with (empty for ports without a device).
    pub devargs: String,
    /// DPDK ethdev port id.
    pub dpdk_port_id: u16,
    /// Number of rx queues.
    pub n_rxq: u16,
    /// Link state as last reported by the driver.
    pub link_up: bool,
    /// Link speed in Mbit/s (0 if unknown).
    pub link_speed_mbps: u32,
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received (frame bytes, no preamble/IFG).
    pub rx_bytes: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted (frame bytes, no preamble/IFG).
    pub tx_bytes: u64,
    /// Packets the port dropped on receive (no mbuf, rx queue full: `imissed`).
    pub rx_dropped: u64,
    /// Packets dropped on transmit (tx queue full, freed by the PMD).
    pub tx_dropped: u64,
    /// Extra tx bursts for packets the port did not take at once (OVS's
    /// `tx_retries`; for vhost, the guest's ring was full).
    pub tx_retries: u64,
    /// Receive errors reported by the driver.
    pub rx_errors: u64,
    /// Transmit errors reported by the driver.
    pub tx_errors: u64,
}

/// One rx queue of a PMD.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RxqSnapshot {
    /// The port's name.
    pub port: String,
    pub queue: u16,
    /// Pinned to its PMD by `pmd-rxq-affinity`.
    pub pinned: bool,
    /// TSC cycles the PMD spent on its bursts that brought packets.
    pub cycles: u64,
}

impl RxqSnapshot {
    /// Queue `queue` of port `port`, unpinned, no cycles counted.
    pub fn new(port: &str, queue: u16) -> RxqSnapshot {
        RxqSnapshot {
            port: port.to_string(),
            queue,
            ..RxqSnapshot::default()
        }
    }
}

/// One PMD thread's identity, rx-queue assignment and cumulative counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PmdSnapshot {
    /// PMD index (0-based).
    pub id: usize,
    /// CPU the thread is pinned to.
    pub cpu: usize,
    /// DPDK lcore id the thread is registered as.
    pub lcore: u32,
    /// Rx queues polled by this PMD.
    pub rxqs: Vec<RxqSnapshot>,
    /// Poll-loop iterations.
    pub iterations: u64,
    /// TSC cycles spent in iterations that received at least one packet.
    pub busy_cycles: u64,
    /// TSC cycles spent in iterations that received nothing.
    pub idle_cycles: u64,
    /// Packets received by this PMD.
    pub rx_packets: u64,
    /// Packets transmitted by this PMD.
    pub tx_packets: u64,
    /// Packets classified by the simple-match path (no parse, no lookup).
    pub simple_hits: u64,
    /// Packets classified by simple MAC match (no parse, a lookup by the two
    /// Ethernet addresses).
    pub simple_mac_hits: u64,
    /// Packets found in the exact-match cache.
    pub emc_hits: u64,
    /// Packets found by the megaflow classifier.
    pub megaflow_hits: u64,
    /// Classifier subtables probed, over all lookups.
    pub subtable_lookups: u64,
    /// Packets sent to the slow path (misses with a successful upcall).
    pub upcalls: u64,
    /// Packets of a flow whose upcall was in flight, held for its megaflow.
    pub upcalls_coalesced: u64,
    /// Inner packets a tunnel pop sent through the flow stage again.
    pub recirculations: u64,
    /// Megaflows installed in this PMD now (a gauge).
    pub megaflows: u64,
    /// Datapath drop reason -> count (e.g. `tx_full`, `no_forward`, `runt`).
    pub drops: Vec<(&'static str, u64)>,
    /// Parse error reason (`pipeline::stats::ParseError::as_str`) -> count.
    pub parse_errors: Vec<(&'static str, u64)>,
    /// TSC frequency in Hz, to turn cycles into time.
    pub tsc_hz: u64,
}

impl PmdSnapshot {
    /// These counters minus those of `base` (an earlier snapshot of the same PMD):
    /// what was counted since. Gauges (`megaflows`, `tsc_hz`) and identity stay.
    pub fn since(&self, base: &PmdSnapshot) -> PmdSnapshot {
        let sub = |a: &[(&'static str, u64)], b: &[(&'static str, u64)]| {
            a.iter()
                .map(|(r, n)| {
                    let before = b.iter().find(|(br, _)| br == r).map_or(0, |(_, m)| *m);
                    (*r, n.saturating_sub(before))
                })
                .collect()
        };
        PmdSnapshot {
            iterations: self.iterations.saturating_sub(base.iterations),
            busy_cycles: self.busy_cycles.saturating_sub(base.busy_cycles),
            idle_cycles: self.idle_cycles.saturating_sub(base.idle_cycles),
            rx_packets: self.rx_packets.saturating_sub(base.rx_packets),
            tx_packets: self.tx_packets.saturating_sub(base.tx_packets),
            simple_hits: self.simple_hits.saturating_sub(base.simple_hits),
            simple_mac_hits: self.simple_mac_hits.saturating_sub(base.simple_mac_hits),
            emc_hits: self.emc_hits.saturating_sub(base.emc_hits),
            megaflow_hits: self.megaflow_hits.saturating_sub(base.megaflow_hits),
            subtable_lookups: self.subtable_lookups.saturating_sub(base.subtable_lookups),
            upcalls: self.upcalls.saturating_sub(base.upcalls),
            upcalls_coalesced: self
                .upcalls_coalesced
                .saturating_sub(base.upcalls_coalesced),
            recirculations: self.recirculations.saturating_sub(base.recirculations),
            drops: sub(&self.drops, &base.drops),
            parse_errors: sub(&self.parse_errors, &base.parse_errors),
            rxqs: self
                .rxqs
                .iter()
                .map(|r| {
                    let before = base
                        .rxqs
                        .iter()
                        .find(|b| b.port == r.port && b.queue == r.queue)
                        .map_or(0, |b| b.cycles);
                    RxqSnapshot {
                        cycles: r.cycles.saturating_sub(before),
                        ..r.clone()
                    }
                })
                .collect(),
            ..self.clone()
        }
    }

    /// Share of cycles spent busy, in percent (0.0 when no cycles were counted).
    pub fn busy_percent(&self) -> f64 {
        let total = self.busy_cycles.saturating_add(self.idle_cycles);
        if total == 0 {
            0.0
        } else {
            self.busy_cycles as f64 * 100.0 / total as f64
        }
    }
}

/// A [`DatapathView`] over fixed vectors, replaceable at any time.
///
/// For tests, demos and for the window before the PMDs exist.
#[derive(Debug, Default)]
pub struct StaticView {
    state: Mutex<(Vec<PortSnapshot>, Vec<PmdSnapshot>)>,
}

impl StaticView {
    /// A view returning these snapshots.
    pub fn new(ports: Vec<PortSnapshot>, pmds: Vec<PmdSnapshot>) -> Self {
        Self {
            state: Mutex::new((ports, pmds)),
        }
    }

    /// Replace the snapshots returned from now on.
    pub fn set(&self, ports: Vec<PortSnapshot>, pmds: Vec<PmdSnapshot>) {
        // A poisoned lock only means another thread panicked mid-`set`; the
        // tuple is still a valid value, so keep serving it.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *state = (ports, pmds);
    }
}

impl DatapathView for StaticView {
    fn ports(&self) -> Vec<PortSnapshot> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0.clone()
    }

    fn pmds(&self) -> Vec<PmdSnapshot> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.1.clone()
    }
}
