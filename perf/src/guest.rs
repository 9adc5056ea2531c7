//! The pvp scenario's guests: one DPDK process with two `virtio_user` NICs,
//! each owning its vhost-user socket (`server=1`, so every forwarder connects
//! as OVS's `dpdkvhostuserclient` ports do). One thread sends 64-byte frames on
//! the first and receives (and frees) on the second, burst by burst.
//!
//! Two `dpdk-testpmd` guests (`txonly`, `rxonly`) would have to share the one
//! CPU the forwarder leaves free: then the sender and the receiver run in turns
//! of scheduler slices, and while the receiver sleeps its ring (256 slots) fills
//! in microseconds, so every forwarder measured the scheduler (about 35 kpps).
//! Interleaving both at burst granularity in one thread keeps the receiver
//! draining while the sender sends.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use dpdk_ffi::{Eal, EthPort, Mbuf, MbufBurst, Mempool, PortConf, TxBuffer};
use pipeline::trafgen;

/// Frames per send.
const BURST: usize = 32;

/// Runs the guest on `cpu` until SIGINT or SIGTERM.
pub fn run(tx_sock: &Path, rx_sock: &Path, cpu: usize, prefix: &str) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let args: Vec<String> = [
        "perf-guest".to_string(),
        "-l".into(),
        cpu.to_string(),
        "--no-pci".into(),
        // vhost-user maps at most 8 memory regions: one file for all.
        "--single-file-segments".into(),
        "-m".into(),
        "512".into(),
        format!("--file-prefix={prefix}"),
        "--log-level=4".into(),
        "--no-telemetry".into(),
    ]
    .into();
    let eal = Eal::init(&args).context("guest EAL")?;
    let result = forward(tx_sock, rx_sock, &stop);
    let _ = eal.cleanup();
    result
}

fn forward(tx_sock: &Path, rx_sock: &Path, stop: &AtomicBool) -> Result<()> {
    let pool = Arc::new(Mempool::pktmbuf("guest_pool", 16383, 256, 2048 + 128)?);
    let conf = PortConf::default();
    let open = |n: u32, sock: &Path| {
        EthPort::open(
            &format!("virtio_user{n},path={},queues=1,server=1", sock.display()),
            &conf,
            pool.clone(),
        )
        .with_context(|| format!("virtio_user on {}", sock.display()))
    };
    let tx_port = open(0, tx_sock)?;
    let rx_port = open(1, rx_sock)?;
    let mut txq = tx_port.tx_queue(0)?;
    let mut rxq = rx_port.rx_queue(0)?;
    let frame = trafgen::udp_frame(&trafgen::flows(1)[0], crate::scenario::FRAME_LEN, 0);
    let mut buf = TxBuffer::new();
    let mut burst = MbufBurst::new();
    // Relaxed: a stop flag set by the signal handler; it carries no data.
    while !stop.load(Ordering::Relaxed) {
        while buf.len() < BURST {
            let Some(m) = Mbuf::from_slice(&pool, &frame) else {
                break;
            };
            if buf.push(m).is_err() {
                break;
            }
        }
        // What the forwarder's ring does not take is freed: the sender runs
        // ahead of any forwarder.
        let _ = txq.flush(&mut buf);
        rxq.rx_burst(&mut burst, BURST);
        burst.clear();
    }
    drop((txq, rxq, burst, buf));
    drop((tx_port, rx_port));
    Ok(())
}
