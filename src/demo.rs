//! The embedded demo: `ferroswitch run` with no config.
//!
//! Virtual devices only: `demo-src` is a net_pcap port replaying a generated pcap
//! forever (`infinite_rx`); an OpenFlow rule on `br0` sends it to `demo-sink`, a
//! net_null port that discards what it is sent and receives nothing (`no-rx=1`).
//! The pcap holds a mix of 64 UDP flows with frame sizes from 64 to 1518 bytes.

use std::path::{Path, PathBuf};

use mgmt::config::{BridgeConfig, Config, PortConfig};
use pipeline::{pcap, trafgen};

/// Frame sizes of the demo mix (IMIX-like: mostly small, some large).
const SIZES: [usize; 8] = [64, 64, 64, 64, 128, 512, 594, 1518];

/// Writes the demo pcap into `dir` and returns its path.
pub fn write_pcap(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let flows = trafgen::flows(64);
    let frames: Vec<Vec<u8>> = flows
        .iter()
        .enumerate()
        .map(|(i, f)| trafgen::udp_frame(f, SIZES[i % SIZES.len()] - 4, i as u8))
        .collect();
    let path = dir.join("demo.pcap");
    std::fs::write(&path, pcap::write(frames.iter().map(|f| f.as_slice())))?;
    Ok(path)
}

/// The demo configuration around the pcap at `pcap_path`.
pub fn config(pcap_path: &Path) -> Config {
    let port = |name: &str, ofport: u32, devargs: String| PortConfig {
        name: name.into(),
        port_type: "dpdk".into(),
        ofport: Some(ofport),
        n_rxq: 1,
        options: [("dpdk-devargs".to_string(), devargs)]
            .into_iter()
            .collect(),
        ..PortConfig::default()
    };
    let mut cfg = Config::default();
    cfg.dpdk.file_prefix = "ferroswitch-demo".into();
    cfg.dpdk.mbufs = 8191;
    cfg.bridges.push(BridgeConfig {
        name: "br0".into(),
        ports: vec![
            port(
                "demo-src",
                1,
                format!("net_pcap0,rx_pcap={},infinite_rx=1", pcap_path.display()),
            ),
            port("demo-sink", 2, "net_null0,no-rx=1".into()),
        ],
        forwards: Vec::new(),
        flows: vec!["in_port=demo-src,actions=output:demo-sink".into()],
        ..BridgeConfig::default()
    });
    cfg
}
