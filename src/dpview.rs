//! The management layer's view of the running datapath: snapshots of the PMDs'
//! counters and the ports' identity and driver statistics.

use std::sync::{Arc, Mutex};

use mgmt::view::{DatapathView, PmdSnapshot, PortSnapshot, RxqSnapshot};
use pipeline::ParseError;
use pmd::{Datapath, DropReason};

pub struct DpView {
    pub dp: Arc<Datapath>,
    pub tsc_hz: u64,
    /// The PMD counters at the last `pmd-stats-clear`.
    pub baseline: Mutex<Vec<PmdSnapshot>>,
}

impl DpView {
    pub fn new(dp: Arc<Datapath>, tsc_hz: u64) -> DpView {
        DpView {
            dp,
            tsc_hz,
            baseline: Mutex::new(Vec::new()),
        }
    }
}

impl DatapathView for DpView {
    fn ports(&self) -> Vec<PortSnapshot> {
        port_snapshots(&self.dp)
    }

    fn pmds(&self) -> Vec<PmdSnapshot> {
        pmd_snapshots(&self.dp, self.tsc_hz)
    }

    fn pmds_since_clear(&self) -> Vec<PmdSnapshot> {
        let base = self.baseline.lock().unwrap_or_else(|e| e.into_inner());
        self.pmds()
            .into_iter()
            .map(|p| match base.iter().find(|b| b.id == p.id) {
                Some(b) => p.since(b),
                None => p,
            })
            .collect()
    }

    fn clear_pmd_stats(&self) {
        let now = self.pmds();
        *self.baseline.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }
}

pub fn port_snapshots(dp: &Datapath) -> Vec<PortSnapshot> {
    dp.ports()
        .iter()
        .map(|p| {
            let t = dp.port_totals(p.port_no);
            let link = p.link();
            PortSnapshot {
                bridge: p.spec.bridge.clone(),
                name: p.spec.name.clone(),
                ofport: mgmt::config::ofport_display(p.spec.ofport),
                port_type: p.kind().to_string(),
                devargs: p.spec.devargs.clone(),
                dpdk_port_id: p.dpdk_port_id().unwrap_or(u16::MAX),
                n_rxq: p.spec.n_rxq,
                link_up: link.up,
                link_speed_mbps: link.speed_mbps,
                rx_packets: t.rx_packets,
                rx_bytes: t.rx_bytes,
                tx_packets: t.tx_packets,
                tx_bytes: t.tx_bytes,
                rx_dropped: t.rx_dropped,
                tx_dropped: t.tx_dropped,
                tx_retries: t.tx_retries,
                rx_errors: t.rx_errors,
                tx_errors: t.tx_errors,
            }
        })
        .collect()
}

pub fn pmd_snapshots(dp: &Datapath, tsc_hz: u64) -> Vec<PmdSnapshot> {
    let port_name = |no: usize| dp.port(no).map(|p| p.spec.name.clone()).unwrap_or_default();
    dp.pmds()
        .iter()
        .map(|h| {
            let s = &h.stats;
            PmdSnapshot {
                id: h.id,
                cpu: h.cpu,
                lcore: h.lcore,
                rxqs: h
                    .rxq_info()
                    .iter()
                    .map(|r| RxqSnapshot {
                        port: port_name(r.port_no),
                        queue: r.queue,
                        pinned: r.pinned,
                        cycles: r.stats.cycles.get(),
                    })
                    .collect(),
                iterations: s.iterations.get(),
                busy_cycles: s.busy_cycles.get(),
                idle_cycles: s.idle_cycles.get(),
                rx_packets: s.rx_packets.get(),
                tx_packets: s.tx_packets.get(),
                simple_hits: s.simple_hits.get(),
                simple_mac_hits: s.simple_mac_hits.get(),
                emc_hits: s.emc_hits.get(),
                megaflow_hits: s.megaflow_hits.get(),
                subtable_lookups: s.subtable_probes.get(),
                upcalls: s.upcalls.get(),
                upcalls_coalesced: s.upcalls_coalesced.get(),
                recirculations: s.recirculations.get(),
                megaflows: s.megaflows.get(),
                drops: DropReason::ALL
                    .iter()
                    .map(|r| (r.as_str(), s.drops[r.index()].get()))
                    .collect(),
                parse_errors: ParseError::ALL
                    .iter()
                    .map(|e| (e.as_str(), s.parse_errors[e.index()].get()))
                    .collect(),
                tsc_hz,
            }
        })
        .collect()
}
