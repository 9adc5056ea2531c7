//! DPDK integration test on net_ring ports built over rings this test fills and
//! drains: packets in, the exact packets and counters out.
//!
//! One test function per file: EAL initialises once per process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dpdk_ffi::{Mbuf, Mempool};
use pipeline::ParseError;
use pmd::{testing, Datapath, DropReason};

fn udp_frame(i: u16, payload_len: usize) -> Vec<u8> {
    let payload = vec![i as u8; payload_len];
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2([0x02, 0, 0, 0, 0, 1], [0x02, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1000 + i, 2000)
        .write(&mut out, &payload)
        .expect("build frame");
    out
}

#[test]
fn ring_ports_forward_exact_packets_and_counters() {
    let eal = testing::eal("ring_forward");
    let pool = Arc::new(Mempool::pktmbuf("ring_test_pool", 4095, 32, 2048 + 128).expect("mempool"));
    let (rings, ports) = testing::ring_ports("rf", 2, 1024, &pool);

    // Into p0: 100 UDP frames of growing size, one runt, one truncated IPv4.
    let mut sent = Vec::new();
    for i in 0..100u16 {
        sent.push(udp_frame(i, 18 + i as usize * 7));
    }
    let mut truncated = udp_frame(999, 30);
    truncated.truncate(14 + 10);
    sent.push(truncated.clone());
    let runt = vec![0xffu8; 10];
    for f in &sent {
        rings[0]
            .enqueue(Mbuf::from_slice(&pool, f).expect("mbuf"))
            .unwrap_or_else(|_| panic!("ring full"));
    }
    rings[0]
        .enqueue(Mbuf::from_slice(&pool, &runt).expect("mbuf"))
        .unwrap_or_else(|_| panic!("ring full"));
    // Into p1: 3 frames with no forwarding entry for p1.
    for i in 0..3u16 {
        rings[2]
            .enqueue(Mbuf::from_slice(&pool, &udp_frame(500 + i, 20)).expect("mbuf"))
            .unwrap_or_else(|_| panic!("ring full"));
    }

    let dspec = testing::spec(&ports, vec![(0, 1)], None);
    let dp = Datapath::start_with_ports(&dspec, ports, pool.clone()).expect("datapath");

    let total_in = sent.len() as u64 + 1 + 3;
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = dp.pmds()[0].stats.clone();
    while stats.rx_packets.get() < total_in || stats.tx_packets.get() < sent.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "datapath did not forward in time"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let t0 = dp.port_totals(0);
    let t1 = dp.port_totals(1);
    let in_bytes: u64 = sent.iter().map(|f| f.len() as u64).sum::<u64>() + runt.len() as u64;
    let out_bytes: u64 = sent.iter().map(|f| f.len() as u64).sum();
    assert_eq!(t0.rx_packets, sent.len() as u64 + 1);
    assert_eq!(t0.rx_bytes, in_bytes);
    assert_eq!(t0.tx_packets, 0);
    assert_eq!(t1.rx_packets, 3);
    assert_eq!(t1.tx_packets, sent.len() as u64);
    assert_eq!(t1.tx_bytes, out_bytes);
    assert_eq!(t1.tx_dropped, 0);
    assert_eq!(stats.drops[DropReason::Runt.index()].get(), 1);
    assert_eq!(stats.drops[DropReason::NoForward.index()].get(), 3);
    assert_eq!(stats.drops[DropReason::TxFull.index()].get(), 0);
    // The static stage forwards without parsing: no parse error is counted.
    let parse_errors: u64 = ParseError::ALL
        .iter()
        .map(|e| stats.parse_errors[e.index()].get())
        .sum();
    assert_eq!(parse_errors, 0);
    dp.stop();

    // Out of p1, in order, byte for byte.
    let mut got = Vec::new();
    while let Some(m) = rings[3].dequeue() {
        got.push(m.data().to_vec());
    }
    assert_eq!(got.len(), sent.len());
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(g, s, "packet {i} differs");
    }
    assert_eq!(rings[1].count(), 0, "nothing may leave by the input port");
    drop(got);
    drop(rings);
    // Every mbuf went back to the pool: none leaked by the datapath.
    assert_eq!(pool.in_use(), 0);
    drop(pool);
    eal.cleanup().expect("EAL cleanup");
}
