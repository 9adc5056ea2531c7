//! Rx queues pinned to PMDs (`pmd-rxq-affinity`) and their cycle counts: a
//! pinned queue goes to the PMD on its CPU, which then polls no other queue
//! (OVS's `pmd-rxq-isolate`); a pin to a CPU without a PMD is refused; the
//! queue that receives traffic accumulates cycles, an idle one none.
//!
//! One test per file: EAL initialises once per process.

use std::sync::Arc;

use dpdk_ffi::{EthPort, Mempool, Ring};
use pipeline::trafgen::{flows, udp_frame};
use pmd::{testing, Datapath, DpdkPort, FlowSpec, PortKind, PortSpec};

/// `n` ring ports `{tag}{i}` named `p{first + i}` with one rx ring and two tx
/// rings (one per PMD): (rx rings, tx ring pairs, ports).
#[allow(clippy::type_complexity)]
fn two_pmd_ports(
    tag: &str,
    first: usize,
    n: usize,
    pool: &Arc<Mempool>,
) -> (Vec<Arc<Ring>>, Vec<[Arc<Ring>; 2]>, testing::OpenedPorts) {
    let (mut rxs, mut txs, mut ports) = (Vec::new(), Vec::new(), testing::OpenedPorts::new());
    for i in 0..n {
        let ring =
            |what: &str| Arc::new(Ring::create(&format!("{tag}{what}{i}"), 1024).expect("ring"));
        let rx = ring("rx");
        let tx = [ring("txa"), ring("txb")];
        let eth = EthPort::from_rings(
            &format!("{tag}_p{i}"),
            std::slice::from_ref(&rx),
            &tx,
            pool.clone(),
        )
        .expect("ring port");
        let spec = PortSpec {
            bridge: "br0".into(),
            name: format!("p{}", first + i),
            ofport: (first + i) as u32 + 1,
            n_rxq: 1,
            kind: PortKind::Dpdk,
            ..PortSpec::default()
        };
        ports.push((spec, Arc::new(DpdkPort::from_eth(eth))));
        rxs.push(rx);
        txs.push(tx);
    }
    (rxs, txs, ports)
}

#[test]
fn pinned_queues_isolate_their_pmd_and_count_cycles() {
    let eal = testing::eal("rxq_affinity");
    let pool = Arc::new(Mempool::pktmbuf("aff_pool", 4095, 64, 2048 + 128).expect("mempool"));

    // A pin to a CPU where no PMD runs is refused, naming the port and queue.
    let (bad_rings, ports) = testing::ring_ports("bad", 1, 256, &pool);
    let mut spec = testing::spec(&ports, vec![], Some(FlowSpec::default()));
    spec.pmd_cpus = vec![1];
    let mut ports = ports;
    ports[0].0.rxq_affinity = vec![(0, 7)];
    spec.ports[0].rxq_affinity = vec![(0, 7)];
    let err = Datapath::start_with_ports(&spec, ports, pool.clone())
        .err()
        .expect("refused");
    assert_eq!(
        err.to_string(),
        "port \"p0\": pmd-rxq-affinity: queue 0 to CPU 7, where no PMD runs (PMD CPUs: [1])"
    );
    // Its rings go before the EAL does.
    drop(bad_rings);

    // Three ports on two PMDs (CPUs 0 and 1); p0's queue pinned to CPU 1.
    let (rx, tx, mut ports) = two_pmd_ports("aff", 0, 3, &pool);
    ports[0].0.rxq_affinity = vec![(0, 1)];
    // Static forwards carry the traffic; the flow stage gives the PMDs the
    // command queues that runtime port changes use.
    let mut spec = testing::spec(
        &ports,
        vec![(0, 1), (1, 2), (2, 0)],
        Some(FlowSpec::default()),
    );
    spec.pmd_cpus = vec![0, 1];
    let dp = Datapath::start_with_ports(&spec, ports, pool.clone()).expect("datapath");
    assert_eq!(dp.pmds()[0].rxqs(), vec![(1, 0), (2, 0)]);
    assert_eq!(dp.pmds()[1].rxqs(), vec![(0, 0)]);
    assert!(dp.pmds()[1].isolated());
    assert!(!dp.pmds()[0].isolated());

    // A port added at runtime goes to the PMD that is not isolated.
    let (_rx2, _tx2, mut more) = two_pmd_ports("affm", 3, 1, &pool);
    let (extra_spec, extra) = more.pop().expect("port");
    assert_eq!(dp.add_opened_port(extra_spec, extra).expect("add"), 3);
    assert_eq!(dp.pmds()[0].rxqs(), vec![(1, 0), (2, 0), (3, 0)]);
    // And one pinned at runtime goes where it is pinned.
    let (_rx3, _tx3, mut pinned) = two_pmd_ports("affp", 4, 1, &pool);
    let (mut pin_spec, pin_port) = pinned.pop().expect("port");
    pin_spec.rxq_affinity = vec![(0, 1)];
    assert_eq!(dp.add_opened_port(pin_spec, pin_port).expect("add"), 4);
    assert_eq!(dp.pmds()[1].rxqs(), vec![(0, 0), (4, 0)]);

    // Traffic into p0 (statically forwarded to p1): its queue counts cycles,
    // p2's (idle) none.
    let frames: Vec<Vec<u8>> = (0..500u32)
        .map(|i| udp_frame(&flows(1)[0], 64, i as u8))
        .collect();
    let stats = dp.pmds()[1].stats.clone();
    testing::send_frames(&rx[0], &pool, &frames);
    testing::wait_for("500 frames out of p1", &stats, || {
        dp.port_totals(1).tx_packets >= 500
    });
    let cycles = |pmd: usize, port: usize| {
        dp.pmds()[pmd]
            .rxq_info()
            .iter()
            .find(|r| r.port_no == port)
            .map(|r| r.stats.cycles.get())
            .expect("queue")
    };
    assert!(cycles(1, 0) > 0, "p0's queue counted its bursts");
    assert_eq!(cycles(0, 2), 0, "p2 received nothing");
    assert!(dp.pmds()[1].rxq_info()[0].pinned);
    // p0 is polled by the PMD on CPU 1 (index 1): its second tx ring of p1.
    assert_eq!(testing::drain_frames(&tx[1][1]).len(), 500);
    assert_eq!(testing::drain_frames(&tx[1][0]).len(), 0);

    drop(dp);

    // A tx queue whose ring has room for 13 of 32 packets: the first burst
    // takes 13, the retry none; 19 are dropped, one retry counted.
    let txr = Arc::new(Ring::create("aff_full_tx", 64).expect("ring"));
    let rxr = Arc::new(Ring::create("aff_full_rx", 64).expect("ring"));
    let eth = EthPort::from_rings(
        "aff_full",
        std::slice::from_ref(&rxr),
        std::slice::from_ref(&txr),
        pool.clone(),
    )
    .expect("ring port");
    let frame = udp_frame(&flows(1)[0], 64, 0);
    testing::send_frames(&txr, &pool, &vec![frame.clone(); 50]);
    let mut txq = eth.tx_queue(0).expect("tx queue");
    let mut buf = dpdk_ffi::TxBuffer::new();
    for _ in 0..32 {
        assert!(buf
            .push(dpdk_ffi::Mbuf::from_slice(&pool, &frame).expect("mbuf"))
            .is_ok());
    }
    let r = txq.flush(&mut buf);
    assert_eq!((r.sent, r.dropped, r.retries), (13, 19, 1));
    drop(txq);
    drop(eth);
    assert_eq!(testing::drain_frames(&txr).len(), 63);
    drop((txr, rxr));
    drop((rx, tx, _rx2, _tx2, _rx3, _tx3));
    assert_eq!(pool.in_use(), 0, "no mbuf leaked");
    drop(pool);
    eal.cleanup().expect("EAL cleanup");
}
