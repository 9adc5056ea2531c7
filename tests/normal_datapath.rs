//! `NORMAL` through the whole datapath on DPDK net_ring ports: the real PMD (flow
//! cache, upcalls), the real slow path (`mgmt::ofproto` with its upcall and
//! revalidator threads, the bridge's own `Normal`) and the real glue
//! (`ferroswitch::slowpath`). The bridge has nothing but OVS's default flow,
//! `priority=0 actions=NORMAL`. The test feeds and drains the rings.
//!
//! Host A sits behind p0, host B behind p1; p2 is a third port.
//! 1. A's first frame to B (B unknown) is flooded: the very frame out p1 and p2.
//! 2. B's reply goes to A only (A was learned): out p0, nothing on p2. B is
//!    learned on the way, and the megaflow that flooded A -> B is revalidated to
//!    a unicast to p1 before the slow path lets go of its lock.
//! 3. 50 frames each way, interleaved: A -> B only on p1, B -> A only on p0, in
//!    order, with no further upcall (both megaflows serve them) and nothing more
//!    on p2.
//!
//! `fdb-show` lists A on port 1 and B on port 2. One test per file: EAL
//! initialises once per process.

use std::sync::Arc;

use dpdk_ffi::Mempool;
use ferroswitch::slowpath::SlowPath;
use mgmt::ofproto::{Bridge, BridgePort, OfprotoConfig};
use pipeline::trafgen::{udp_frame, UdpFlow};
use pmd::{testing, Datapath, DropReason, FlowSpec};

const MAC_A: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x01];
const MAC_B: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 0x02];

const A_TO_B: UdpFlow = UdpFlow {
    dl_src: MAC_A,
    dl_dst: MAC_B,
    nw_src: [10, 0, 0, 1],
    nw_dst: [10, 0, 0, 2],
    tp_src: 5000,
    tp_dst: 6000,
};
const B_TO_A: UdpFlow = UdpFlow {
    dl_src: MAC_B,
    dl_dst: MAC_A,
    nw_src: [10, 0, 0, 2],
    nw_dst: [10, 0, 0, 1],
    tp_src: 6000,
    tp_dst: 5000,
};

fn bridge_ports() -> Vec<BridgePort> {
    (0..3)
        .map(|i| BridgePort {
            name: format!("p{i}"),
            ofport: i as u32 + 1,
            odp: i,
        })
        .collect()
}

#[test]
fn normal_datapath_flood_then_unicast_both_ways() {
    let eal = testing::eal("normal_datapath");
    let pool = Arc::new(Mempool::pktmbuf("normal_pool", 4095, 64, 2048 + 128).expect("mempool"));
    let (rings, ports) = testing::ring_ports("nm", 3, 1024, &pool);
    // Port i: rx ring 2i (the test sends), tx ring 2i+1 (the test drains).
    let (rx_p0, rx_p1) = (&rings[0], &rings[2]);
    let (tx_p0, tx_p1, tx_p2) = (&rings[1], &rings[3], &rings[5]);
    let dspec = testing::spec(&ports, vec![], Some(FlowSpec::default()));
    let mut dp = Datapath::start_with_ports(&dspec, ports, pool.clone()).expect("datapath");
    let stats = dp.pmds()[0].stats.clone();

    // The slow path, as the daemon runs it, with the bridge's default flow only.
    let bridge = Bridge::new("br0", bridge_ports());
    let slow = SlowPath::start(&mut dp, vec![bridge], OfprotoConfig::default())
        .expect("slow path threads");
    let ofproto = slow.ofproto.clone();
    let tx = |port: usize| dp.port_totals(port).tx_packets;

    // --- 1. A -> B, B unknown: flooded ----------------------------------------
    let first = udp_frame(&A_TO_B, 100, 0);
    testing::send_frames(rx_p0, &pool, std::slice::from_ref(&first));
    testing::wait_for("the flood of A's first frame", &stats, || {
        tx(1) >= 1 && tx(2) >= 1
    });
    assert_eq!(
        testing::drain_frames(tx_p1),
        std::slice::from_ref(&first),
        "p1: the frame, unchanged"
    );
    assert_eq!(
        testing::drain_frames(tx_p2),
        [first],
        "p2: the frame, unchanged"
    );
    assert_eq!(
        testing::drain_frames(tx_p0),
        Vec::<Vec<u8>>::new(),
        "never back out p0"
    );

    // --- 2. B -> A: unicast to the learned port -------------------------------
    let reply = udp_frame(&B_TO_A, 100, 0);
    testing::send_frames(rx_p1, &pool, std::slice::from_ref(&reply));
    testing::wait_for("B's reply", &stats, || tx(0) >= 1);
    // The reply left inside the upcall's batch; taking the lock waits for the
    // rest of that batch: the revalidation of A -> B and its barrier.
    drop(ofproto.lock().expect("slow path"));
    assert_eq!(
        testing::drain_frames(tx_p0),
        [reply],
        "p0: the reply, unchanged"
    );
    assert_eq!(stats.upcalls.get(), 2, "one upcall per direction");

    // --- 3. both ways, unicast, no more upcalls -------------------------------
    let n = 50u8;
    let mut both = Vec::new();
    let (mut a_to_b, mut b_to_a) = (Vec::new(), Vec::new());
    for s in 1..=n {
        let ab = udp_frame(&A_TO_B, 64 + usize::from(s), s);
        let ba = udp_frame(&B_TO_A, 64 + usize::from(s), s);
        a_to_b.push(ab.clone());
        b_to_a.push(ba.clone());
        both.push((ab, ba));
    }
    for (ab, ba) in &both {
        testing::send_frames(rx_p0, &pool, std::slice::from_ref(ab));
        testing::send_frames(rx_p1, &pool, std::slice::from_ref(ba));
    }
    // Each of p0 and p1 already sent one frame (steps 1 and 2).
    let want = u64::from(n) + 1;
    testing::wait_for("the unicast frames", &stats, || {
        tx(0) >= want && tx(1) >= want
    });
    assert_eq!(
        testing::drain_frames(tx_p1),
        a_to_b,
        "A -> B: p1 only, in order"
    );
    assert_eq!(
        testing::drain_frames(tx_p0),
        b_to_a,
        "B -> A: p0 only, in order"
    );
    assert_eq!(
        testing::drain_frames(tx_p2),
        Vec::<Vec<u8>>::new(),
        "nothing more flooded"
    );
    assert_eq!(tx(2), 1, "p2 saw only the first flood");
    assert_eq!(
        stats.upcalls.get(),
        2,
        "the megaflows carried everything after the first two"
    );
    for r in DropReason::ALL {
        assert_eq!(stats.drops[r.index()].get(), 0, "drops {}", r.as_str());
    }

    // The learned MACs, as fdb-show prints them (ages vary with the run).
    let fdb = ofproto
        .lock()
        .expect("slow path")
        .fdb_show("br0")
        .expect("fdb-show");
    let rows: Vec<Vec<&str>> = fdb
        .lines()
        .map(|l| l.split_whitespace().take(3).collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["port", "VLAN", "MAC"],
            ["1", "0", "02:aa:00:00:00:01"],
            ["2", "0", "02:bb:00:00:00:02"],
        ],
        "{fdb}"
    );

    // Shut down: slow path, then PMDs and ports.
    slow.stop();
    drop(ofproto);
    drop(dp);
    drop(rings);
    assert_eq!(pool.in_use(), 0, "no mbuf leaked");
    drop(pool);
    eal.cleanup().expect("EAL cleanup");
}
