//! Prometheus text exposition (format 0.0.4) on `GET /metrics`.
//!
//! Rendered by hand from a [`DatapathView`] on every scrape; nothing is cached,
//! so a scrape costs one snapshot of each port and PMD.
//!
//! # Metric families
//!
//! Per port, labels `bridge`, `port`:
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `ferroswitch_port_rx_packets_total` | counter | packets received |
//! | `ferroswitch_port_rx_bytes_total` | counter | frame bytes received |
//! | `ferroswitch_port_tx_packets_total` | counter | packets transmitted |
//! | `ferroswitch_port_tx_bytes_total` | counter | frame bytes transmitted |
//! | `ferroswitch_port_rx_dropped_total` | counter | packets dropped on receive |
//! | `ferroswitch_port_tx_dropped_total` | counter | packets dropped on transmit |
//! | `ferroswitch_port_tx_retries_total` | counter | extra tx bursts (full guest ring) |
//! | `ferroswitch_port_rx_errors_total` | counter | receive errors |
//! | `ferroswitch_port_tx_errors_total` | counter | transmit errors |
//! | `ferroswitch_port_link_up` | gauge | 1 if the link is up |
//!
//! Per PMD, labels `pmd`, `cpu`:
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `ferroswitch_pmd_busy_cycles_total` | counter | TSC cycles in iterations that received packets |
//! | `ferroswitch_pmd_idle_cycles_total` | counter | TSC cycles in iterations that received nothing |
//! | `ferroswitch_pmd_iterations_total` | counter | poll-loop iterations |
//! | `ferroswitch_pmd_rx_packets_total` | counter | packets received |
//! | `ferroswitch_pmd_tx_packets_total` | counter | packets transmitted |
//! | `ferroswitch_pmd_tsc_hz` | gauge | TSC frequency, to turn cycles into seconds |
//!
//! Per PMD and reason, labels `pmd`, `reason`:
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `ferroswitch_pmd_drops_total` | counter | datapath drops by reason (`tx_full`, `no_forward`, ...) |
//! | `ferroswitch_parse_errors_total` | counter | malformed packets by parse error |
//!
//! And `ferroswitch_build_info{version}` (gauge, always 1).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use thiserror::Error;

use crate::view::{DatapathView, PmdSnapshot, PortSnapshot};

/// Content type of the 0.0.4 text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Errors starting the metrics endpoint.
#[derive(Debug, Error)]
pub enum MetricsError {
    /// The listen address could not be bound.
    #[error("metrics.listen: cannot bind {addr}: {reason}")]
    Bind {
        /// The configured address.
        addr: String,
        /// Why, e.g. `Address in use`.
        reason: String,
    },
    /// The server thread could not be started.
    #[error("metrics: cannot start thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Escape a label value: backslash, double quote and newline.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes families with their HELP and TYPE lines.
struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // HELP text escapes backslash and newline only.
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label_value(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

type PortField = fn(&PortSnapshot) -> u64;
type PmdField = fn(&PmdSnapshot) -> u64;

const PORT_FAMILIES: &[(&str, &str, &str, PortField)] = &[
    (
        "ferroswitch_port_rx_packets_total",
        "counter",
        "Packets received on the port.",
        |p| p.rx_packets,
    ),
    (
        "ferroswitch_port_rx_bytes_total",
        "counter",
        "Frame bytes received on the port.",
        |p| p.rx_bytes,
    ),
    (
        "ferroswitch_port_tx_packets_total",
        "counter",
        "Packets transmitted on the port.",
        |p| p.tx_packets,
    ),
    (
        "ferroswitch_port_tx_bytes_total",
        "counter",
        "Frame bytes transmitted on the port.",
        |p| p.tx_bytes,
    ),
    (
        "ferroswitch_port_rx_dropped_total",
        "counter",
        "Packets dropped on receive (no mbuf, rx queue full).",
        |p| p.rx_dropped,
    ),
    (
        "ferroswitch_port_tx_dropped_total",
        "counter",
        "Packets dropped on transmit (tx queue full).",
        |p| p.tx_dropped,
    ),
    (
        "ferroswitch_port_tx_retries_total",
        "counter",
        "Extra transmit bursts for packets the port did not take at once (a full guest ring, for vhost).",
        |p| p.tx_retries,
    ),
    (
        "ferroswitch_port_rx_errors_total",
        "counter",
        "Receive errors reported by the driver.",
        |p| p.rx_errors,
    ),
    (
        "ferroswitch_port_tx_errors_total",
        "counter",
        "Transmit errors reported by the driver.",
        |p| p.tx_errors,
    ),
    (
        "ferroswitch_port_link_up",
        "gauge",
        "1 if the port's link is up, 0 if down.",
        |p| u64::from(p.link_up),
    ),
];

const PMD_FAMILIES: &[(&str, &str, &str, PmdField)] = &[
    (
        "ferroswitch_pmd_busy_cycles_total",
        "counter",
        "TSC cycles the PMD spent in iterations that received packets.",
        |p| p.busy_cycles,
    ),
    (
        "ferroswitch_pmd_idle_cycles_total",
        "counter",
        "TSC cycles the PMD spent in iterations that received nothing.",
        |p| p.idle_cycles,
    ),
    (
        "ferroswitch_pmd_iterations_total",
        "counter",
        "Poll-loop iterations of the PMD.",
        |p| p.iterations,
    ),
    (
        "ferroswitch_pmd_rx_packets_total",
        "counter",
        "Packets received by the PMD.",
        |p| p.rx_packets,
    ),
    (
        "ferroswitch_pmd_tx_packets_total",
        "counter",
        "Packets transmitted by the PMD.",
        |p| p.tx_packets,
    ),
    (
        "ferroswitch_pmd_simple_match_hits_total",
        "counter",
        "Packets the PMD classified by simple match (no parse, no lookup).",
        |p| p.simple_hits,
    ),
    (
        "ferroswitch_pmd_simple_mac_match_hits_total",
        "counter",
        "Packets the PMD classified by simple MAC match (no parse, a lookup by the Ethernet addresses).",
        |p| p.simple_mac_hits,
    ),
    (
        "ferroswitch_pmd_emc_hits_total",
        "counter",
        "Packets found in the PMD's exact-match cache.",
        |p| p.emc_hits,
    ),
    (
        "ferroswitch_pmd_megaflow_hits_total",
        "counter",
        "Packets found by the PMD's megaflow classifier.",
        |p| p.megaflow_hits,
    ),
    (
        "ferroswitch_pmd_subtable_lookups_total",
        "counter",
        "Megaflow classifier subtables probed.",
        |p| p.subtable_lookups,
    ),
    (
        "ferroswitch_pmd_upcalls_total",
        "counter",
        "Packets sent to the slow path (flow-cache misses upcalled).",
        |p| p.upcalls,
    ),
    (
        "ferroswitch_pmd_upcalls_coalesced_total",
        "counter",
        "Packets held while their flow's upcall was in flight.",
        |p| p.upcalls_coalesced,
    ),
    (
        "ferroswitch_pmd_recirculations_total",
        "counter",
        "Inner packets a tunnel pop sent through the flow stage again.",
        |p| p.recirculations,
    ),
    (
        "ferroswitch_pmd_megaflows",
        "gauge",
        "Megaflows installed in the PMD.",
        |p| p.megaflows,
    ),
    (
        "ferroswitch_pmd_tsc_hz",
        "gauge",
        "TSC frequency of the PMD's CPU in Hz (cycles per second).",
        |p| p.tsc_hz,
    ),
];

/// Render every family in the 0.0.4 text format. Families always carry HELP
/// and TYPE lines, even with no samples.
pub fn render(view: &dyn DatapathView) -> String {
    let ports = view.ports();
    let pmds = view.pmds();
    let mut w = Writer { out: String::new() };

    w.family(
        "ferroswitch_build_info",
        "gauge",
        "Always 1; the version label is the running ferroswitch version.",
    );
    w.sample(
        "ferroswitch_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );

    for (name, kind, help, field) in PORT_FAMILIES {
        w.family(name, kind, help);
        for p in &ports {
            w.sample(name, &[("bridge", &p.bridge), ("port", &p.name)], field(p));
        }
    }

    for (name, kind, help, field) in PMD_FAMILIES {
        w.family(name, kind, help);
        for p in &pmds {
            let (id, cpu) = (p.id.to_string(), p.cpu.to_string());
            w.sample(name, &[("pmd", &id), ("cpu", &cpu)], field(p));
        }
    }

    type Reasons = fn(&PmdSnapshot) -> &[(&'static str, u64)];
    let by_reason: [(&str, &str, Reasons); 2] = [
        (
            "ferroswitch_pmd_drops_total",
            "Packets the datapath dropped, by reason.",
            |p| &p.drops,
        ),
        (
            "ferroswitch_parse_errors_total",
            "Packets whose headers could only be partly parsed, by reason.",
            |p| &p.parse_errors,
        ),
    ];
    for (name, help, reasons) in by_reason {
        w.family(name, "counter", help);
        for p in &pmds {
            let id = p.id.to_string();
            for (reason, count) in reasons(p) {
                w.sample(name, &[("pmd", &id), ("reason", reason)], *count);
            }
        }
    }
    w.out
}

/// A bound, not yet serving, metrics endpoint.
pub struct MetricsServer {
    server: tiny_http::Server,
    listen: String,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("listen", &self.listen)
            .finish()
    }
}

impl MetricsServer {
    /// Bind `listen` (`host:port`; port 0 picks a free one).
    pub fn bind(listen: &str) -> Result<MetricsServer, MetricsError> {
        let server = tiny_http::Server::http(listen).map_err(|e| {
            let reason = match e.downcast_ref::<std::io::Error>() {
                Some(io) => crate::config::io_reason(io),
                None => e.to_string(),
            };
            MetricsError::Bind {
                addr: listen.to_string(),
                reason,
            }
        })?;
        Ok(MetricsServer {
            server,
            listen: listen.to_string(),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.server_addr().to_ip()
    }

    /// Serve on a thread named `mgmt-metrics` until `stop` is set (checked
    /// every 100 ms).
    pub fn spawn(
        self,
        view: Arc<dyn DatapathView>,
        stop: Arc<AtomicBool>,
    ) -> Result<JoinHandle<()>, MetricsError> {
        std::thread::Builder::new()
            .name("mgmt-metrics".to_string())
            .spawn(move || self.run(&*view, &stop))
            .map_err(MetricsError::Spawn)
    }

    fn run(self, view: &dyn DatapathView, stop: &AtomicBool) {
        // Relaxed: `stop` is a standalone flag; no data is published with it.
        while !stop.load(Ordering::Relaxed) {
            match self.server.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(request)) => respond(request, view),
                Ok(None) => {}
                // An accept error (e.g. EMFILE) must not spin the CPU.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

fn header(name: &str, value: &str) -> Option<tiny_http::Header> {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

fn respond(request: tiny_http::Request, view: &dyn DatapathView) {
    let path = request.url().split('?').next().unwrap_or("").to_string();
    let method = request.method().clone();
    let get = matches!(method, tiny_http::Method::Get | tiny_http::Method::Head);
    let (status, content_type, body) = match (get, path.as_str()) {
        (true, "/metrics") => (200, CONTENT_TYPE, render(view)),
        (true, "/") => (
            200,
            "text/html; charset=utf-8",
            "<html><head><title>ferroswitch</title></head><body>\
             <h1>ferroswitch</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n"
                .to_string(),
        ),
        (true, _) => (404, "text/plain; charset=utf-8", "not found\n".to_string()),
        (false, _) => (
            405,
            "text/plain; charset=utf-8",
            "method not allowed (use GET)\n".to_string(),
        ),
    };
    let mut response = tiny_http::Response::from_string(body).with_status_code(status);
    if let Some(h) = header("Content-Type", content_type) {
        response = response.with_header(h);
    }
    if status == 405 {
        if let Some(h) = header("Allow", "GET, HEAD") {
            response = response.with_header(h);
        }
    }
    // The client may have gone away; nothing to do about it.
    let _ = request.respond(response);
}

/// Bind `listen` and serve on a thread until `stop` is set.
pub fn serve(
    listen: &str,
    view: Arc<dyn DatapathView>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, MetricsError> {
    MetricsServer::bind(listen)?.spawn(view, stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::StaticView;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    pub(crate) fn sample_view() -> StaticView {
        StaticView::new(
            vec![
                PortSnapshot {
                    bridge: "br0".into(),
                    name: "dpdk0".into(),
                    ofport: 1,
                    port_type: "dpdk".into(),
                    link_up: true,
                    rx_packets: 100,
                    rx_bytes: 6400,
                    rx_dropped: 2,
                    rx_errors: 1,
                    ..Default::default()
                },
                PortSnapshot {
                    bridge: "br0".into(),
                    name: "we\"ird\\po\nrt".into(),
                    ofport: 2,
                    tx_packets: 99,
                    tx_bytes: 6336,
                    tx_dropped: 3,
                    tx_errors: 4,
                    ..Default::default()
                },
            ],
            vec![PmdSnapshot {
                id: 0,
                cpu: 1,
                lcore: 1,
                rxqs: vec![crate::view::RxqSnapshot::new("dpdk0", 0)],
                iterations: 1000,
                busy_cycles: 400,
                idle_cycles: 600,
                rx_packets: 100,
                tx_packets: 99,
                simple_hits: 5,
                simple_mac_hits: 4,
                emc_hits: 90,
                megaflow_hits: 8,
                subtable_lookups: 15,
                upcalls: 2,
                upcalls_coalesced: 1,
                recirculations: 4,
                megaflows: 3,
                drops: vec![("tx_full", 3), ("no_forward", 0)],
                parse_errors: vec![("runt", 1)],
                tsc_hz: 2_000_000_000,
            }],
        )
    }

    const EXPECTED: &str = r#"# HELP ferroswitch_build_info Always 1; the version label is the running ferroswitch version.
# TYPE ferroswitch_build_info gauge
ferroswitch_build_info{version="0.1.0"} 1
# HELP ferroswitch_port_rx_packets_total Packets received on the port.
# TYPE ferroswitch_port_rx_packets_total counter
ferroswitch_port_rx_packets_total{bridge="br0",port="dpdk0"} 100
ferroswitch_port_rx_packets_total{bridge="br0",port="we\"ird\\po\nrt"} 0
# HELP ferroswitch_port_rx_bytes_total Frame bytes received on the port.
# TYPE ferroswitch_port_rx_bytes_total counter
ferroswitch_port_rx_bytes_total{bridge="br0",port="dpdk0"} 6400
ferroswitch_port_rx_bytes_total{bridge="br0",port="we\"ird\\po\nrt"} 0
# HELP ferroswitch_port_tx_packets_total Packets transmitted on the port.
# TYPE ferroswitch_port_tx_packets_total counter
ferroswitch_port_tx_packets_total{bridge="br0",port="dpdk0"} 0
ferroswitch_port_tx_packets_total{bridge="br0",port="we\"ird\\po\nrt"} 99
# HELP ferroswitch_port_tx_bytes_total Frame bytes transmitted on the port.
# TYPE ferroswitch_port_tx_bytes_total counter
ferroswitch_port_tx_bytes_total{bridge="br0",port="dpdk0"} 0
ferroswitch_port_tx_bytes_total{bridge="br0",port="we\"ird\\po\nrt"} 6336
# HELP ferroswitch_port_rx_dropped_total Packets dropped on receive (no mbuf, rx queue full).
# TYPE ferroswitch_port_rx_dropped_total counter
ferroswitch_port_rx_dropped_total{bridge="br0",port="dpdk0"} 2
ferroswitch_port_rx_dropped_total{bridge="br0",port="we\"ird\\po\nrt"} 0
# HELP ferroswitch_port_tx_dropped_total Packets dropped on transmit (tx queue full).
# TYPE ferroswitch_port_tx_dropped_total counter
ferroswitch_port_tx_dropped_total{bridge="br0",port="dpdk0"} 0
ferroswitch_port_tx_dropped_total{bridge="br0",port="we\"ird\\po\nrt"} 3
# HELP ferroswitch_port_tx_retries_total Extra transmit bursts for packets the port did not take at once (a full guest ring, for vhost).
# TYPE ferroswitch_port_tx_retries_total counter
ferroswitch_port_tx_retries_total{bridge="br0",port="dpdk0"} 0
ferroswitch_port_tx_retries_total{bridge="br0",port="we\"ird\\po\nrt"} 0
# HELP ferroswitch_port_rx_errors_total Receive errors reported by the driver.
# TYPE ferroswitch_port_rx_errors_total counter
ferroswitch_port_rx_errors_total{bridge="br0",port="dpdk0"} 1
ferroswitch_port_rx_errors_total{bridge="br0",port="we\"ird\\po\nrt"} 0
# HELP ferroswitch_port_tx_errors_total Transmit errors reported by the driver.
# TYPE ferroswitch_port_tx_errors_total counter
ferroswitch_port_tx_errors_total{bridge="br0",port="dpdk0"} 0
ferroswitch_port_tx_errors_total{bridge="br0",port="we\"ird\\po\nrt"} 4
# HELP ferroswitch_port_link_up 1 if the port's link is up, 0 if down.
# TYPE ferroswitch_port_link_up gauge
ferroswitch_port_link_up{bridge="br0",port="dpdk0"} 1
ferroswitch_port_link_up{bridge="br0",port="we\"ird\\po\nrt"} 0
# HELP ferroswitch_pmd_busy_cycles_total TSC cycles the PMD spent in iterations that received packets.
# TYPE ferroswitch_pmd_busy_cycles_total counter
ferroswitch_pmd_busy_cycles_total{pmd="0",cpu="1"} 400
# HELP ferroswitch_pmd_idle_cycles_total TSC cycles the PMD spent in iterations that received nothing.
# TYPE ferroswitch_pmd_idle_cycles_total counter
ferroswitch_pmd_idle_cycles_total{pmd="0",cpu="1"} 600
# HELP ferroswitch_pmd_iterations_total Poll-loop iterations of the PMD.
# TYPE ferroswitch_pmd_iterations_total counter
ferroswitch_pmd_iterations_total{pmd="0",cpu="1"} 1000
# HELP ferroswitch_pmd_rx_packets_total Packets received by the PMD.
# TYPE ferroswitch_pmd_rx_packets_total counter
ferroswitch_pmd_rx_packets_total{pmd="0",cpu="1"} 100
# HELP ferroswitch_pmd_tx_packets_total Packets transmitted by the PMD.
# TYPE ferroswitch_pmd_tx_packets_total counter
ferroswitch_pmd_tx_packets_total{pmd="0",cpu="1"} 99
# HELP ferroswitch_pmd_simple_match_hits_total Packets the PMD classified by simple match (no parse, no lookup).
# TYPE ferroswitch_pmd_simple_match_hits_total counter
ferroswitch_pmd_simple_match_hits_total{pmd="0",cpu="1"} 5
# HELP ferroswitch_pmd_simple_mac_match_hits_total Packets the PMD classified by simple MAC match (no parse, a lookup by the Ethernet addresses).
# TYPE ferroswitch_pmd_simple_mac_match_hits_total counter
ferroswitch_pmd_simple_mac_match_hits_total{pmd="0",cpu="1"} 4
# HELP ferroswitch_pmd_emc_hits_total Packets found in the PMD's exact-match cache.
# TYPE ferroswitch_pmd_emc_hits_total counter
ferroswitch_pmd_emc_hits_total{pmd="0",cpu="1"} 90
# HELP ferroswitch_pmd_megaflow_hits_total Packets found by the PMD's megaflow classifier.
# TYPE ferroswitch_pmd_megaflow_hits_total counter
ferroswitch_pmd_megaflow_hits_total{pmd="0",cpu="1"} 8
# HELP ferroswitch_pmd_subtable_lookups_total Megaflow classifier subtables probed.
# TYPE ferroswitch_pmd_subtable_lookups_total counter
ferroswitch_pmd_subtable_lookups_total{pmd="0",cpu="1"} 15
# HELP ferroswitch_pmd_upcalls_total Packets sent to the slow path (flow-cache misses upcalled).
# TYPE ferroswitch_pmd_upcalls_total counter
ferroswitch_pmd_upcalls_total{pmd="0",cpu="1"} 2
# HELP ferroswitch_pmd_upcalls_coalesced_total Packets held while their flow's upcall was in flight.
# TYPE ferroswitch_pmd_upcalls_coalesced_total counter
ferroswitch_pmd_upcalls_coalesced_total{pmd="0",cpu="1"} 1
# HELP ferroswitch_pmd_recirculations_total Inner packets a tunnel pop sent through the flow stage again.
# TYPE ferroswitch_pmd_recirculations_total counter
ferroswitch_pmd_recirculations_total{pmd="0",cpu="1"} 4
# HELP ferroswitch_pmd_megaflows Megaflows installed in the PMD.
# TYPE ferroswitch_pmd_megaflows gauge
ferroswitch_pmd_megaflows{pmd="0",cpu="1"} 3
# HELP ferroswitch_pmd_tsc_hz TSC frequency of the PMD's CPU in Hz (cycles per second).
# TYPE ferroswitch_pmd_tsc_hz gauge
ferroswitch_pmd_tsc_hz{pmd="0",cpu="1"} 2000000000
# HELP ferroswitch_pmd_drops_total Packets the datapath dropped, by reason.
# TYPE ferroswitch_pmd_drops_total counter
ferroswitch_pmd_drops_total{pmd="0",reason="tx_full"} 3
ferroswitch_pmd_drops_total{pmd="0",reason="no_forward"} 0
# HELP ferroswitch_parse_errors_total Packets whose headers could only be partly parsed, by reason.
# TYPE ferroswitch_parse_errors_total counter
ferroswitch_parse_errors_total{pmd="0",reason="runt"} 1
"#;

    #[test]
    fn render_exact() {
        let got = render(&sample_view());
        for (i, (g, e)) in got.lines().zip(EXPECTED.lines()).enumerate() {
            assert_eq!(g, e, "line {}", i + 1);
        }
        assert_eq!(got, EXPECTED);
    }

    #[test]
    fn render_empty_view_has_every_family() {
        let got = render(&StaticView::default());
        let help = got.lines().filter(|l| l.starts_with("# HELP ")).count();
        let types = got.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(help, 28);
        assert_eq!(types, 28);
        // Only build_info has a sample.
        let samples: Vec<&str> = got.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(samples, ["ferroswitch_build_info{version=\"0.1.0\"} 1"]);
        for line in got.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut parts = line.split(' ').skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name.starts_with("ferroswitch_"), "{line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
        }
    }

    fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        (head.to_string(), body.to_string())
    }

    #[test]
    fn serve_over_http() {
        let server = MetricsServer::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = server
            .spawn(Arc::new(sample_view()), Arc::clone(&stop))
            .unwrap();

        let (head, body) = http_get(addr, "/metrics");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.lines()
                .any(|l| l.eq_ignore_ascii_case(&format!("content-type: {CONTENT_TYPE}"))),
            "{head}"
        );
        assert_eq!(body, EXPECTED);

        let (head, body) = http_get(addr, "/");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.contains("href=\"/metrics\""), "{body}");

        let (head, _) = http_get(addr, "/nope");
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");

        // The same address cannot be bound twice, and the error names it.
        let err = MetricsServer::bind(&addr.to_string()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("metrics.listen: cannot bind {addr}: Address in use")
        );

        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
    }
}
