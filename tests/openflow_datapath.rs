//! The whole OpenFlow datapath on DPDK net_ring ports: the real PMD (flow cache,
//! upcalls), the real slow path (`mgmt::ofproto` with its upcall and revalidator
//! threads) and the real glue (`ferroswitch::slowpath`). The test feeds and drains
//! the rings.
//!
//! 1. Many flows through a flow table (copies to two ports, VLAN push and pop,
//!    Ethernet rewrite, drops) give exactly the frames the pure translator and the
//!    reference executor predict, per port and in per-flow order, with exact rule
//!    counters in dump-flows.
//! 2. A rule change mid-stream switches one flow's output exactly at the change,
//!    while packets of another flow, sent all along, are all delivered.
//!
//! One test per file: EAL initialises once per process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dpdk_ffi::Mempool;
use ferroswitch::slowpath::SlowPath;
use mgmt::ofproto::{Bridge, BridgePort, OfprotoConfig};
use pipeline::actions::{execute, DpAction, Emitted, TunnelMeta};
use pipeline::ofproto::syntax::parse_flows;
use pipeline::ofproto::table::Tables;
use pipeline::ofproto::xlate::{translate, XlateOptions};
use pipeline::trafgen::{flows, udp_frame};
use pipeline::FlowKey;
use pmd::{testing, Datapath, DropReason, FlowSpec};

const FLOWS: &str = "\
priority=100,udp,nw_dst=10.1.0.0 actions=output:p1
priority=100,udp,nw_dst=10.1.0.1 actions=mod_dl_dst:02:bb:00:00:00:01,output:p1,output:p2
priority=100,dl_vlan=7 actions=strip_vlan,output:p2
priority=90,udp,in_port=p0 actions=mod_vlan_vid:30,output:p2
priority=0 actions=drop
";

fn bridge_ports() -> Vec<BridgePort> {
    (0..3)
        .map(|i| BridgePort {
            name: format!("p{i}"),
            ofport: i as u32 + 1,
            odp: i,
        })
        .collect()
}

fn with_vlan(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&[0x81, 0x00]);
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// The IPv4 destination's last byte (the flow id here), behind any VLAN tag.
fn flow_id(frame: &[u8]) -> Option<u8> {
    let off = if frame.get(12..14) == Some(&[0x81, 0x00]) {
        4
    } else {
        0
    };
    if frame.get(12 + off..14 + off) != Some(&[0x08, 0x00]) {
        return None;
    }
    frame.get(33 + off).copied()
}

/// The payload's fill byte (the sequence number here): the frame's last byte.
fn seq(frame: &[u8]) -> u8 {
    *frame.last().unwrap_or(&0)
}

#[test]
fn openflow_datapath_exact_output_and_rule_change_mid_stream() {
    let eal = testing::eal("openflow_datapath");
    let pool = Arc::new(Mempool::pktmbuf("ofdp_pool", 16383, 64, 2048 + 128).expect("mempool"));
    let (rings, ports) = testing::ring_ports("of", 3, 8192, &pool);
    let dspec = testing::spec(&ports, vec![], Some(FlowSpec::default()));
    let mut dp = Datapath::start_with_ports(&dspec, ports, pool.clone()).expect("datapath");
    let stats = dp.pmds()[0].stats.clone();

    // The slow path, as the daemon runs it.
    let mut bridge = Bridge::new("br0", bridge_ports());
    let fms = parse_flows(FLOWS, &bridge.portmap).expect("flows");
    bridge.tables.add_flows(fms.clone(), 0).expect("add flows");
    let slow = SlowPath::start(&mut dp, vec![bridge], OfprotoConfig::default())
        .expect("slow path threads");
    let ofproto = slow.ofproto.clone();

    // --- 1. many flows, exact output -------------------------------------------
    let fl = flows(40);
    let mut input: Vec<Vec<u8>> = Vec::new();
    for s in 0..25u8 {
        for (i, f) in fl.iter().enumerate() {
            let frame = udp_frame(f, 64 + (i % 5) * 100, s);
            input.push(if i % 10 == 9 {
                with_vlan(&frame, 7)
            } else {
                frame
            });
        }
        // An ARP request per round: no rule but the drop.
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 9, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 9, 10, 0, 0, 9, 0, 0, 0, 0, 0, 0, 10, 0, 0, s]);
        arp.resize(60, 0);
        input.push(arp);
    }
    // Expected: the pure translator on a copy of the tables, run by the reference
    // executor over the frame bytes.
    let mut tables = Tables::new();
    tables.add_flows(fms, 0).expect("reference tables");
    let mut expect: HashMap<u32, Vec<Vec<u8>>> = HashMap::new();
    let mut expected_drops = 0u64;
    for f in &input {
        let mut key = FlowKey::default();
        pipeline::parse(f, 1, &mut key);
        let t = translate(&tables, &key, &[1, 2, 3], XlateOptions::default());
        let mut frame = f.clone();
        let mut out = Vec::new();
        execute(&t.actions, &mut frame, &mut TunnelMeta::default(), &mut out);
        if t.actions == [DpAction::Drop] {
            expected_drops += 1;
        }
        for e in out {
            if let Emitted::Output { port, frame, .. } = e {
                expect.entry(port).or_default().push(frame);
            }
        }
    }
    testing::send_frames(&rings[0], &pool, &input);
    let want_tx = (expect.get(&2).map_or(0, Vec::len) + expect.get(&3).map_or(0, Vec::len)) as u64;
    testing::wait_for("phase 1 output", &stats, || {
        stats.tx_packets.get() >= want_tx
            && stats.drops[DropReason::FlowDrop.index()].get() >= expected_drops
    });
    assert_eq!(stats.tx_packets.get(), want_tx);
    assert_eq!(
        stats.drops[DropReason::FlowDrop.index()].get(),
        expected_drops
    );
    for r in DropReason::ALL
        .iter()
        .filter(|r| **r != DropReason::FlowDrop)
    {
        assert_eq!(stats.drops[r.index()].get(), 0, "drops {}", r.as_str());
    }
    assert_eq!(
        stats.emc_hits.get()
            + stats.megaflow_hits.get()
            + stats.upcalls.get()
            + stats.upcalls_coalesced.get(),
        input.len() as u64,
        "every packet classified once"
    );
    for (ring, ofport) in [(3usize, 2u32), (5, 3)] {
        let got = testing::drain_frames(&rings[ring]);
        let want = expect.remove(&ofport).unwrap_or_default();
        assert_eq!(got.len(), want.len(), "port {ofport}: count");
        let mut got_by: HashMap<Option<u8>, Vec<Vec<u8>>> = HashMap::new();
        let mut want_by: HashMap<Option<u8>, Vec<Vec<u8>>> = HashMap::new();
        for f in got {
            got_by.entry(flow_id(&f)).or_default().push(f);
        }
        for f in want {
            want_by.entry(flow_id(&f)).or_default().push(f);
        }
        assert_eq!(got_by, want_by, "port {ofport}: frames per flow, in order");
    }
    // Rule counters: the 10.1.0.0 rule saw 25 packets, the catch-all UDP rule the
    // 34 other untagged UDP flows' 25 rounds, the drop rule the ARPs.
    let dump = ofproto
        .lock()
        .unwrap()
        .dump_flows("br0", None, false)
        .expect("dump-flows");
    let n_packets = |needle: &str| -> u64 {
        let line = dump
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} in {dump}"));
        let v = line
            .split("n_packets=")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap();
        v.parse().unwrap()
    };
    assert_eq!(n_packets("nw_dst=10.1.0.0 actions=output:2"), 25, "{dump}");
    assert_eq!(n_packets("priority=90"), 25 * 34, "{dump}");
    assert_eq!(n_packets("dl_vlan=7"), 25 * 4, "{dump}");
    assert_eq!(n_packets("priority=0"), 25, "{dump}");

    // --- 2. a rule change mid-stream -------------------------------------------
    let flow_a = fl[0]; // 10.1.0.0 -> p1, to be moved to p2
    let flow_c = fl[2]; // 10.1.0.2 -> p2 with VLAN 30, all along
    let c_frames: Vec<Vec<u8>> = (0..200u8).map(|s| udp_frame(&flow_c, 64, s)).collect();
    // Counted before the sender starts: it runs concurrently from here on.
    let tx0 = stats.tx_packets.get();
    let sender = {
        let (ring, pool, frames) = (rings[0].clone(), pool.clone(), c_frames.clone());
        std::thread::spawn(move || {
            for chunk in frames.chunks(10) {
                testing::send_frames(&ring, &pool, chunk);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let before: Vec<Vec<u8>> = (0..100u8).map(|s| udp_frame(&flow_a, 64, s)).collect();
    let after: Vec<Vec<u8>> = (100..200u8).map(|s| udp_frame(&flow_a, 64, s)).collect();
    let p1_before = dp.port_totals(1).tx_packets;
    testing::send_frames(&rings[0], &pool, &before);
    testing::wait_for("flow A before the change", &stats, || {
        dp.port_totals(1).tx_packets >= p1_before + 100
    });
    ofproto
        .lock()
        .unwrap()
        .add_flow("br0", "priority=200,udp,nw_dst=10.1.0.0 actions=output:p2")
        .expect("add-flow");
    testing::send_frames(&rings[0], &pool, &after);
    sender.join().expect("sender");
    testing::wait_for("phase 2 output", &stats, || {
        stats.tx_packets.get() >= tx0 + 400
    });
    let p1 = testing::drain_frames(&rings[3]);
    let p2 = testing::drain_frames(&rings[5]);
    let a_p1: Vec<u8> = p1
        .iter()
        .filter(|f| flow_id(f) == Some(0))
        .map(|f| seq(f))
        .collect();
    let a_p2: Vec<u8> = p2
        .iter()
        .filter(|f| flow_id(f) == Some(0))
        .map(|f| seq(f))
        .collect();
    assert_eq!(
        a_p1,
        (0..100).collect::<Vec<u8>>(),
        "flow A before the change: p1, in order"
    );
    assert_eq!(
        a_p2,
        (100..200).collect::<Vec<u8>>(),
        "flow A after the change: p2, in order"
    );
    let c_p2: Vec<u8> = p2
        .iter()
        .filter(|f| flow_id(f) == Some(2))
        .map(|f| seq(f))
        .collect();
    assert_eq!(
        c_p2,
        (0..200).collect::<Vec<u8>>(),
        "flow C: every packet, in order"
    );
    assert_eq!(stats.tx_packets.get(), tx0 + 400);

    // Shut down: slow path, then PMDs and ports.
    slow.stop();
    drop(ofproto);
    drop(dp);
    drop(rings);
    assert_eq!(pool.in_use(), 0, "no mbuf leaked");
    drop(pool);
    eal.cleanup().expect("EAL cleanup");
}
