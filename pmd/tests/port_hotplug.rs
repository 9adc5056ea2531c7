//! Ports added and removed while the PMD runs: a net_ring port added at runtime
//! is polled and sent to with exact frames and counters; removed, it is no longer
//! polled, its number's counters start again from zero, and the number is given
//! to the next port added. An internal port (a net_tap device, whose rx queue
//! holds mbufs) added and removed gives back every mbuf it took.
//!
//! One test per file: EAL initialises once per process.

use std::sync::Arc;
use std::time::Duration;

use dpdk_ffi::Mempool;
use pipeline::actions::DpAction;
use pipeline::flow_cache::FlowStats;
use pipeline::trafgen::{flows, udp_frame};
use pipeline::FlowKey;
use pmd::{testing, Datapath, DropReason, FlowActions, FlowSpec, PmdCommand, PortKind, PortSpec};

/// Sends a barrier to the PMD and waits for it: every command before it applied.
fn barrier(dp: &Datapath) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    dp.pmds()[0]
        .commands
        .as_ref()
        .expect("command queue")
        .send(PmdCommand::Barrier(tx))
        .expect("barrier");
    rx.recv_timeout(Duration::from_secs(10)).expect("barrier");
}

#[test]
fn ports_come_and_go_while_the_pmd_runs() {
    let eal = testing::eal("port_hotplug");
    let pool = Arc::new(Mempool::pktmbuf("hp_pool", 8191, 64, 2048 + 128).expect("mempool"));
    let (rings, mut ports) = testing::ring_ports("hp", 4, 1024, &pool);
    // p2 and p3 are added later; p0 and p1 start with the datapath.
    let p3 = ports.pop().expect("p3");
    let p2 = ports.pop().expect("p2");
    let dspec = testing::spec(&ports, vec![], Some(FlowSpec::default()));
    let mut dp = Datapath::start_with_ports(&dspec, ports, pool.clone()).expect("datapath");
    let upcalls = dp.take_upcalls().expect("upcall queue");
    let commands = dp.pmds()[0].commands.clone().expect("command queue");
    let stats = dp.pmds()[0].stats.clone();

    // The test's management thread: datapath port 0 <-> 2, by in_port only.
    let mask = FlowKey {
        in_port: u32::MAX,
        ..FlowKey::default()
    };
    let handler = std::thread::spawn(move || {
        let mut installs = 0;
        while let Ok(up) = upcalls.recv_timeout(Duration::from_secs(5)) {
            let out = if up.key.in_port == 0 { 2 } else { 0 };
            commands
                .send(PmdCommand::Install {
                    mask,
                    key: up.key,
                    actions: Arc::new(FlowActions::new(vec![DpAction::Output(out)])),
                    stats: Arc::new(FlowStats::default()),
                    packet: up.packet,
                })
                .expect("command");
            installs += 1;
        }
        installs
    });

    // Added at runtime: the lowest free number, polled by the PMD.
    let port_no = dp.add_opened_port(p2.0, p2.1).expect("add p2");
    assert_eq!(port_no, 2);
    assert_eq!(dp.pmds()[0].rxqs(), vec![(0, 0), (1, 0), (2, 0)]);
    assert_eq!(dp.ports().len(), 3);

    let fl = flows(2);
    let a: Vec<Vec<u8>> = (0..50u8).map(|i| udp_frame(&fl[0], 64, i)).collect();
    let b: Vec<Vec<u8>> = (0..40u8).map(|i| udp_frame(&fl[1], 70, i)).collect();
    testing::send_frames(&rings[0], &pool, &a);
    testing::wait_for("p0 -> p2", &stats, || stats.tx_packets.get() >= 50);
    testing::send_frames(&rings[4], &pool, &b);
    testing::wait_for("p2 -> p0", &stats, || stats.tx_packets.get() >= 90);
    assert_eq!(testing::drain_frames(&rings[5]), a, "p2 sent exactly a");
    assert_eq!(testing::drain_frames(&rings[1]), b, "p0 sent exactly b");
    let t2 = dp.port_totals(2);
    assert_eq!(
        (t2.rx_packets, t2.rx_bytes, t2.tx_packets, t2.tx_bytes),
        (40, 40 * 70, 50, 50 * 64)
    );

    // Removed: no longer polled, counters of number 2 back to zero.
    let spec = dp.remove_port(2).expect("remove p2");
    assert_eq!(spec.name, "p2");
    assert!(dp.port(2).is_none());
    assert_eq!(dp.ports().len(), 2);
    assert_eq!(dp.pmds()[0].rxqs(), vec![(0, 0), (1, 0)]);
    assert_eq!(dp.port_totals(2), pmd::PortTotals::default());
    let err = dp.remove_port(2).expect_err("already gone");
    assert_eq!(err.to_string(), "no datapath port 2");
    // A frame left in p2's rx ring is no longer received.
    testing::send_frames(&rings[4], &pool, &b[..1]);
    // The megaflow to number 2 is still installed (nothing here removed it):
    // its packets are counted drops, never sent anywhere.
    let drops_before = stats.drops[DropReason::TxFull.index()].get();
    testing::send_frames(&rings[0], &pool, &a[..10]);
    testing::wait_for("drops to the removed port", &stats, || {
        stats.drops[DropReason::TxFull.index()].get() >= drops_before + 10
    });
    barrier(&dp);
    assert_eq!(stats.tx_packets.get(), 90);
    assert_eq!(rings[4].count(), 1, "the removed port was not polled");
    assert_eq!(testing::drain_frames(&rings[5]), Vec::<Vec<u8>>::new());

    // The next port added gets number 2 again, with fresh counters.
    let port_no = dp.add_opened_port(p3.0, p3.1).expect("add p3");
    assert_eq!(port_no, 2);
    assert_eq!(dp.port(2).expect("p3").spec.name, "p3");
    testing::send_frames(&rings[0], &pool, &a[..5]);
    testing::wait_for("p0 -> p3", &stats, || stats.tx_packets.get() >= 95);
    assert_eq!(testing::drain_frames(&rings[7]), a[..5].to_vec());
    let t3 = dp.port_totals(2);
    assert_eq!((t3.rx_packets, t3.tx_packets, t3.tx_bytes), (0, 5, 5 * 64));

    // An internal port: its tap's rx queue takes mbufs from the pool; removed,
    // every one comes back.
    barrier(&dp);
    let free_before = pool.available();
    let iface = format!("fshp{}", std::process::id() % 100_000);
    let tap = PortSpec {
        bridge: "br0".into(),
        name: iface.clone(),
        ofport: 9,
        devargs: format!("net_tap9,iface={iface}"),
        n_rxq: 1,
        kind: PortKind::Internal,
        rxq_affinity: Vec::new(),
    };
    let tap_no = dp.add_port(tap).expect("add internal port");
    assert_eq!(tap_no, 3);
    assert!(
        std::path::Path::new("/sys/class/net").join(&iface).exists(),
        "the tap exists"
    );
    let taken = free_before - pool.available();
    assert!(taken > 0, "the tap's rx queue holds mbufs");
    dp.remove_port(tap_no).expect("remove internal port");
    barrier(&dp);
    assert_eq!(pool.available(), free_before, "all {taken} mbufs back");
    assert!(
        !std::path::Path::new("/sys/class/net").join(&iface).exists(),
        "the tap is gone"
    );

    drop(dp);
    assert!(handler.join().expect("handler") >= 2);
    drop(rings);
    assert_eq!(pool.in_use(), 0, "no mbuf leaked");
    drop(pool);
    eal.cleanup().expect("EAL cleanup");
}
