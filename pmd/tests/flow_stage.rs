//! The flow stage on DPDK net_ring ports, with this test as the management thread:
//! misses arrive as upcalls, the test installs megaflows (the upcalled packet rides
//! along and is delivered), later packets hit the EMC or the classifier. Output is
//! checked byte for byte against the pure reference executor, in per-flow order,
//! with exact counters.
//!
//! One test per file: EAL initialises once per process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dpdk_ffi::{Mbuf, Mempool};
use pipeline::actions::{execute, DpAction, Emitted, TunnelMeta};
use pipeline::flow_cache::FlowStats;
use pipeline::trafgen::{flows, udp_frame};
use pipeline::FlowKey;
use pmd::{testing, Datapath, DropReason, FlowActions, FlowSpec, PmdCommand};

/// The actions for each of the three flows (by nw_dst's last byte).
fn actions_for(key: &FlowKey) -> Vec<DpAction> {
    match key.nw_dst & 0xff {
        0 => vec![
            DpAction::PushVlan {
                tpid: 0x8100,
                tci: 0x1000 | 10,
            },
            DpAction::Output(1),
        ],
        1 => vec![
            DpAction::SetEth {
                src: None,
                dst: Some([0x02, 0xaa, 0, 0, 0, 1]),
            },
            DpAction::Output(1),
            DpAction::PopVlan, // no tag: a no-op
            DpAction::Output(2),
        ],
        _ => vec![DpAction::Drop],
    }
}

#[test]
fn flow_stage_upcalls_installs_and_executes() {
    let eal = testing::eal("flow_stage");
    let pool = Arc::new(Mempool::pktmbuf("flow_pool", 8191, 64, 2048 + 128).expect("mempool"));
    let (rings, ports) = testing::ring_ports("fs", 3, 2048, &pool);
    let dspec = testing::spec(
        &ports,
        vec![],
        Some(FlowSpec {
            emc_insert_inv_prob: 1,
            ..FlowSpec::default()
        }),
    );
    let mut dp = Datapath::start_with_ports(&dspec, ports, pool.clone()).expect("datapath");
    let upcalls = dp.take_upcalls().expect("upcall queue");
    let commands = dp.pmds()[0].commands.clone().expect("command queue");
    let stats = dp.pmds()[0].stats.clone();

    // The test's "management thread": translate by the table above, mask on
    // in_port + dl_type + nw_dst.
    let mask = FlowKey {
        in_port: u32::MAX,
        dl_type: u16::MAX,
        nw_dst: u32::MAX,
        ..FlowKey::default()
    };
    let flow_stats: Vec<Arc<FlowStats>> = (0..3).map(|_| Arc::default()).collect();
    let fs = flow_stats.clone();
    let handler = std::thread::spawn(move || {
        let mut installs = 0;
        while let Ok(up) = upcalls.recv_timeout(Duration::from_secs(5)) {
            let idx = (up.key.nw_dst & 0xff) as usize;
            commands
                .send(PmdCommand::Install {
                    mask,
                    key: up.key,
                    actions: Arc::new(FlowActions::new(actions_for(&up.key))),
                    stats: fs[idx.min(2)].clone(),
                    packet: up.packet,
                })
                .expect("command");
            installs += 1;
        }
        installs
    });

    // 100 packets of each of three flows, interleaved; the fill byte numbers them.
    let fl: Vec<_> = flows(3);
    let mut frames: Vec<(usize, Vec<u8>)> = Vec::new();
    for seq in 0..100u8 {
        for (f, flow) in fl.iter().enumerate() {
            frames.push((f, udp_frame(flow, 60 + f * 10, seq)));
        }
    }
    for chunk in frames.chunks(30) {
        for (_, fr) in chunk {
            if rings[0]
                .enqueue(Mbuf::from_slice(&pool, fr).expect("mbuf"))
                .is_err()
            {
                panic!("ring full");
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // And a runt (shorter than an Ethernet header): counted and dropped, never
    // upcalled nor forwarded.
    if rings[0]
        .enqueue(Mbuf::from_slice(&pool, &[0x02; 10]).expect("mbuf"))
        .is_err()
    {
        panic!("ring full");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats.tx_packets.get() < 300
        || stats.drops[DropReason::FlowDrop.index()].get() < 100
        || stats.drops[DropReason::Runt.index()].get() < 1
    {
        assert!(
            Instant::now() < deadline,
            "not forwarded: tx {}",
            stats.tx_packets.get()
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    // Exact counters.
    let total = 300u64;
    let hits = stats.emc_hits.get() + stats.megaflow_hits.get();
    let ups = stats.upcalls.get();
    assert_eq!(
        hits + ups + stats.upcalls_coalesced.get(),
        total,
        "every packet classified once"
    );
    assert!(ups >= 3, "each flow upcalled at least once");
    assert!(stats.emc_hits.get() > 0, "the EMC serves repeat packets");
    for r in DropReason::ALL {
        let want = match r {
            DropReason::FlowDrop => 100,
            DropReason::Runt => 1,
            _ => 0,
        };
        assert_eq!(stats.drops[r.index()].get(), want, "drops {}", r.as_str());
    }
    // Megaflow counters are published by the PMD over time; a barrier makes
    // them all visible.
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    dp.pmds()[0]
        .commands
        .as_ref()
        .expect("command queue")
        .send(PmdCommand::Barrier(done_tx))
        .expect("barrier");
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("barrier passed");
    for (i, s) in flow_stats.iter().enumerate() {
        assert_eq!(s.packets(), 100, "flow {i} credited");
    }
    assert_eq!(stats.megaflows.get(), 3);
    let t1 = dp.port_totals(1);
    let t2 = dp.port_totals(2);
    assert_eq!((t1.tx_packets, t2.tx_packets), (200, 100));

    // Byte for byte against the reference executor, in per-flow order.
    let mut expect: HashMap<u32, Vec<Vec<u8>>> = HashMap::new();
    for (_, fr) in &frames {
        let mut key = FlowKey::default();
        pipeline::parse(fr, 0, &mut key);
        let mut frame = fr.clone();
        let mut out = Vec::new();
        execute(
            &actions_for(&key),
            &mut frame,
            &mut TunnelMeta::default(),
            &mut out,
        );
        for e in out {
            if let Emitted::Output { port, frame, .. } = e {
                expect.entry(port).or_default().push(frame);
            }
        }
    }
    for port in [1u32, 2] {
        let mut got = Vec::new();
        while let Some(m) = rings[2 * port as usize + 1].dequeue() {
            got.push(m.data().to_vec());
        }
        let want = expect.remove(&port).unwrap_or_default();
        assert_eq!(got.len(), want.len(), "port {port} count");
        // Per flow (by destination IP), the order is the input order.
        let by_flow = |v: &Vec<Vec<u8>>, ip_last: u8| -> Vec<Vec<u8>> {
            v.iter()
                .filter(|f| {
                    let off = if f.get(12..14) == Some(&[0x81, 0x00]) {
                        4
                    } else {
                        0
                    };
                    f.get(33 + off) == Some(&ip_last)
                })
                .cloned()
                .collect()
        };
        for ip_last in 0..3u8 {
            assert_eq!(
                by_flow(&got, ip_last),
                by_flow(&want, ip_last),
                "port {port} flow {ip_last}"
            );
        }
    }

    drop(dp);
    let installs = handler.join().expect("handler");
    assert!(installs >= 3);
    drop(rings);
    assert_eq!(pool.in_use(), 0, "no mbuf leaked");
    drop(pool);
    eal.cleanup().expect("EAL cleanup");
}
