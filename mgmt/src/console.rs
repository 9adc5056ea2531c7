//! The per-second rate line on the console, and the final counters on stop.
//!
//! Rates are computed from successive cumulative [`PortSnapshot`]s. Bit rates
//! count plain frame bytes * 8: unlike `dpdk-testpmd`'s "line rate" figures, no
//! 20 bytes of preamble + inter-frame gap are added per packet, so a 64-byte
//! stream at 14.88 Mpps shows as 7.62 Gbps, not 10 Gbps.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::view::{PmdSnapshot, PortSnapshot};

/// Turns successive port snapshots into one rate line per update.
#[derive(Debug, Default)]
pub struct RateMeter {
    prev: Option<(Duration, PortsByName)>,
}

/// Snapshots keyed by (bridge, port).
type PortsByName = HashMap<(String, String), PortSnapshot>;

/// `1234567.0, "pps"` -> `"1.23 Mpps"`; below 1000 no decimals (`"12 pps"`).
pub fn format_rate(value: f64, unit: &str) -> String {
    if value >= 1e9 {
        format!("{:.2} G{unit}", value / 1e9)
    } else if value >= 1e6 {
        format!("{:.2} M{unit}", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.2} k{unit}", value / 1e3)
    } else {
        format!("{value:.0} {unit}")
    }
}

/// Increase of a cumulative counter; one that went backwards was cleared and
/// restarted from zero, so its whole new value is the increase.
fn delta(new: u64, old: u64) -> u64 {
    if new >= old {
        new - old
    } else {
        new
    }
}

fn drops(p: &PortSnapshot) -> u64 {
    p.rx_dropped.saturating_add(p.tx_dropped)
}

fn errors(p: &PortSnapshot) -> u64 {
    p.rx_errors.saturating_add(p.tx_errors)
}

impl RateMeter {
    /// A meter with no baseline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the snapshots taken at `now` (time since the daemon started).
    ///
    /// The first call only records a baseline and returns `None`; each later
    /// call returns the line for the interval since the previous call, e.g.
    /// `[   3s] dpdk0 rx 12.41 Mpps 6.35 Gbps | dpdk1 tx 12.40 Mpps 6.35 Gbps | drops 0 (+0/s)`.
    ///
    /// Per port, `rx` is shown if it received in the interval and `tx` if it
    /// sent; a port that did neither shows `idle`. `drops` is the total of the
    /// ports' rx and tx drops, with its rate; `errors` is added only when
    /// nonzero. A counter that went backwards was cleared and counts from 0;
    /// a port not seen before gets its baseline now (shown `idle`).
    pub fn update(&mut self, now: Duration, ports: &[PortSnapshot]) -> Option<String> {
        let current: PortsByName = ports
            .iter()
            .map(|p| ((p.bridge.clone(), p.name.clone()), p.clone()))
            .collect();
        let (then, prev) = self.prev.replace((now, current))?;
        let dt = now.saturating_sub(then).as_secs_f64();
        let per_sec = |delta: u64| {
            if dt > 0.0 {
                delta as f64 / dt
            } else {
                0.0
            }
        };

        let mut parts = Vec::with_capacity(ports.len() + 1);
        let (mut drops_total, mut drops_delta) = (0u64, 0u64);
        let (mut errors_total, mut errors_delta) = (0u64, 0u64);
        for p in ports {
            let old = prev.get(&(p.bridge.clone(), p.name.clone())).unwrap_or(p);
            let rx_pkts = delta(p.rx_packets, old.rx_packets);
            let rx_bytes = delta(p.rx_bytes, old.rx_bytes);
            let tx_pkts = delta(p.tx_packets, old.tx_packets);
            let tx_bytes = delta(p.tx_bytes, old.tx_bytes);
            let mut part = p.name.clone();
            if rx_pkts > 0 {
                let _ = write!(
                    part,
                    " rx {} {}",
                    format_rate(per_sec(rx_pkts), "pps"),
                    format_rate(per_sec(rx_bytes.saturating_mul(8)), "bps")
                );
            }
            if tx_pkts > 0 {
                let _ = write!(
                    part,
                    " tx {} {}",
                    format_rate(per_sec(tx_pkts), "pps"),
                    format_rate(per_sec(tx_bytes.saturating_mul(8)), "bps")
                );
            }
            if rx_pkts == 0 && tx_pkts == 0 {
                part.push_str(" idle");
            }
            parts.push(part);
            drops_total = drops_total.saturating_add(drops(p));
            drops_delta = drops_delta.saturating_add(delta(drops(p), drops(old)));
            errors_total = errors_total.saturating_add(errors(p));
            errors_delta = errors_delta.saturating_add(delta(errors(p), errors(old)));
        }
        parts.push(format!(
            "drops {drops_total} (+{:.0}/s)",
            per_sec(drops_delta)
        ));
        if errors_total > 0 {
            parts.push(format!(
                "errors {errors_total} (+{:.0}/s)",
                per_sec(errors_delta)
            ));
        }
        Some(format!(
            "[{:>4}s] {}",
            now.as_secs_f64().round() as u64,
            parts.join(" | ")
        ))
    }
}

/// The final counters, printed once on a clean stop: one line per port, one
/// per PMD.
pub fn final_summary(ports: &[PortSnapshot], pmds: &[PmdSnapshot]) -> String {
    let mut out = String::from("final counters:\n");
    for p in ports {
        let _ = writeln!(
            out,
            "  {}/{}: rx {} pkts {} bytes, tx {} pkts {} bytes, dropped rx {} tx {}, errors rx {} tx {}",
            p.bridge,
            p.name,
            p.rx_packets,
            p.rx_bytes,
            p.tx_packets,
            p.tx_bytes,
            p.rx_dropped,
            p.tx_dropped,
            p.rx_errors,
            p.tx_errors
        );
    }
    for p in pmds {
        let _ = write!(
            out,
            "  pmd {} (cpu {}): rx {} pkts, tx {} pkts, {} iterations, busy {:.2}%",
            p.id,
            p.cpu,
            p.rx_packets,
            p.tx_packets,
            p.iterations,
            p.busy_percent()
        );
        let _ = write!(out, ", drops: {}", nonzero_reasons(&p.drops));
        let _ = writeln!(out, ", parse errors: {}", nonzero_reasons(&p.parse_errors));
    }
    out
}

/// `[("a", 1), ("b", 0)]` -> `"a=1 b=0"`; empty -> `"0"`.
/// `reason=count` for every reason (`0` if there are none).
pub(crate) fn reasons(list: &[(&'static str, u64)]) -> String {
    if list.is_empty() {
        return "0".to_string();
    }
    list.iter()
        .map(|(r, n)| format!("{r}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `reason=count` for the non-zero counts only, or `0` when every count is zero.
fn nonzero_reasons(list: &[(&'static str, u64)]) -> String {
    let nonzero: Vec<String> = list
        .iter()
        .filter(|(_, n)| *n != 0)
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    if nonzero.is_empty() {
        "0".to_string()
    } else {
        nonzero.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, rx: (u64, u64), tx: (u64, u64), drops: (u64, u64)) -> PortSnapshot {
        PortSnapshot {
            bridge: "br0".into(),
            name: name.into(),
            rx_packets: rx.0,
            rx_bytes: rx.1,
            tx_packets: tx.0,
            tx_bytes: tx.1,
            rx_dropped: drops.0,
            tx_dropped: drops.1,
            ..Default::default()
        }
    }

    #[test]
    fn rate_lines_exact() {
        let mut m = RateMeter::new();
        let t = Duration::from_secs;
        assert_eq!(
            m.update(
                t(2),
                &[
                    port("dpdk0", (0, 0), (0, 0), (0, 0)),
                    port("dpdk1", (0, 0), (0, 0), (0, 0))
                ]
            ),
            None
        );
        // 12.41 M packets of 64 bytes in one second each way.
        let line = m.update(
            t(3),
            &[
                port("dpdk0", (12_410_000, 794_240_000), (0, 0), (0, 0)),
                port("dpdk1", (0, 0), (12_400_000, 793_600_000), (0, 0)),
            ],
        );
        assert_eq!(
            line.as_deref(),
            Some("[   3s] dpdk0 rx 12.41 Mpps 6.35 Gbps | dpdk1 tx 12.40 Mpps 6.35 Gbps | drops 0 (+0/s)")
        );
        // Two seconds later; drops appear; dpdk1 both directions; slow rates.
        let line = m.update(
            t(5),
            &[
                port("dpdk0", (12_410_000, 794_240_000), (0, 0), (10, 0)),
                port(
                    "dpdk1",
                    (2_000, 3_000_000),
                    (12_402_000, 793_728_000),
                    (0, 4),
                ),
            ],
        );
        assert_eq!(
            line.as_deref(),
            Some("[   5s] dpdk0 idle | dpdk1 rx 1.00 kpps 12.00 Mbps tx 1.00 kpps 512.00 kbps | drops 14 (+7/s)")
        );
        // Counters cleared (went backwards) and a new port appears; errors shown.
        let mut p2 = port("dpdk2", (5, 500), (0, 0), (0, 0));
        p2.rx_errors = 3;
        let line = m.update(
            t(6),
            &[
                port("dpdk0", (10, 1000), (0, 0), (0, 0)),
                port("dpdk1", (0, 0), (0, 0), (0, 0)),
                p2,
            ],
        );
        assert_eq!(
            line.as_deref(),
            Some("[   6s] dpdk0 rx 10 pps 8.00 kbps | dpdk1 idle | dpdk2 idle | drops 0 (+0/s) | errors 3 (+0/s)")
        );
        // Half-second interval doubles the per-second rate.
        let line = m.update(
            t(6) + Duration::from_millis(500),
            &[port("dpdk0", (510, 1000 + 500 * 125), (0, 0), (0, 0))],
        );
        assert_eq!(
            line.as_deref(),
            Some("[   7s] dpdk0 rx 1.00 kpps 1.00 Mbps | drops 0 (+0/s)")
        );
    }

    #[test]
    fn format_rate_units() {
        assert_eq!(format_rate(0.0, "pps"), "0 pps");
        assert_eq!(format_rate(999.4, "pps"), "999 pps");
        assert_eq!(format_rate(1500.0, "bps"), "1.50 kbps");
        assert_eq!(format_rate(2.5e9, "bps"), "2.50 Gbps");
    }

    #[test]
    fn final_summary_exact() {
        let ports = [port("dpdk0", (100, 6400), (99, 6336), (1, 2))];
        let pmds = [PmdSnapshot {
            id: 0,
            cpu: 1,
            iterations: 1000,
            busy_cycles: 250,
            idle_cycles: 750,
            rx_packets: 100,
            tx_packets: 99,
            drops: vec![("tx_full", 1), ("no_forward", 0)],
            ..Default::default()
        }];
        assert_eq!(
            final_summary(&ports, &pmds),
            "final counters:\n  br0/dpdk0: rx 100 pkts 6400 bytes, tx 99 pkts 6336 bytes, dropped rx 1 tx 2, errors rx 0 tx 0\n  pmd 0 (cpu 1): rx 100 pkts, tx 99 pkts, 1000 iterations, busy 25.00%, drops: tx_full=1, parse errors: 0\n"
        );
    }
}
