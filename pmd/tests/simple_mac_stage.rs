//! Simple MAC match on DPDK net_ring ports: megaflows of `NORMAL`'s shape
//! (in_port, recirc_id, dl_type, outer TCI, nw_frag and both Ethernet
//! addresses exact) installed by the test, then traffic between several MAC
//! pairs, interleaved: every packet is classified by simple MAC match (no
//! parse, no EMC, no classifier), leaves by its megaflow's port byte for byte
//! and in order, and each megaflow is credited exactly. An unknown pair
//! upcalls; a megaflow matching only `dl_dst` sends the port down the full path.
//!
//! One test per file: EAL initialises once per process.

use std::sync::Arc;
use std::time::Duration;

use dpdk_ffi::{Mempool, Ring};
use pipeline::actions::DpAction;
use pipeline::flow_cache::FlowStats;
use pipeline::trafgen::{udp_frame, UdpFlow};
use pipeline::FlowKey;
use pmd::{testing, Datapath, DropReason, FlowActions, FlowSpec, PmdCommand, PmdStats};

fn mac(last: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, last]
}

fn udp(src: u8, dst: u8, seq: u8) -> Vec<u8> {
    let f = UdpFlow {
        dl_src: mac(src),
        dl_dst: mac(dst),
        nw_src: [10, 0, 0, src],
        nw_dst: [10, 0, 0, dst],
        tp_src: 1000,
        tp_dst: 2000,
    };
    udp_frame(&f, 64, seq)
}

/// An ARP request from `src` to `dst` (unicast, as a cache refresh is).
fn arp(src: u8, dst: u8) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&mac(dst));
    b.extend_from_slice(&mac(src));
    b.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    b.extend_from_slice(&mac(src));
    b.extend_from_slice(&[10, 0, 0, src]);
    b.extend_from_slice(&[0; 6]);
    b.extend_from_slice(&[10, 0, 0, dst]);
    b.resize(60, 0);
    b
}

/// `NORMAL`'s megaflow mask for an untagged frame (the translator's: in_port,
/// recirc_id, dl_type, the whole outer TCI, both addresses; nw_frag for IP).
fn normal_mask(ip: bool) -> FlowKey {
    let mut m = FlowKey {
        in_port: u32::MAX,
        recirc_id: u32::MAX,
        dl_type: u16::MAX,
        dl_src: [0xff; 6],
        dl_dst: [0xff; 6],
        nw_frag: if ip { u8::MAX } else { 0 },
        ..FlowKey::default()
    };
    m.vlan_tci[0] = u16::MAX;
    m
}

fn key_of(frame: &[u8], in_port: u32) -> FlowKey {
    let mut k = FlowKey::default();
    assert_eq!(pipeline::parse(frame, in_port, &mut k), None);
    k
}

fn install(
    commands: &crossbeam_channel::Sender<PmdCommand>,
    mask: FlowKey,
    key: FlowKey,
    out: u32,
) -> Arc<FlowStats> {
    let stats: Arc<FlowStats> = Arc::default();
    commands
        .send(PmdCommand::Install {
            mask,
            key,
            actions: Arc::new(FlowActions::new(vec![DpAction::Output(out)])),
            stats: stats.clone(),
            packet: None,
        })
        .expect("install");
    stats
}

fn barrier(commands: &crossbeam_channel::Sender<PmdCommand>) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    commands.send(PmdCommand::Barrier(tx)).expect("barrier");
    rx.recv_timeout(Duration::from_secs(10))
        .expect("barrier passed");
}

fn wait_tx(stats: &PmdStats, n: u64) {
    testing::wait_for(&format!("{n} packets sent"), stats, || {
        stats.tx_packets.get() >= n
    });
}

fn drain(ring: &Ring) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    while let Some(m) = ring.dequeue() {
        v.push(m.data().to_vec());
    }
    v
}

#[test]
fn simple_mac_match_forwards_by_both_addresses() {
    let eal = testing::eal("simple_mac");
    let pool = Arc::new(Mempool::pktmbuf("smac_pool", 8191, 64, 2048 + 128).expect("mempool"));
    let (rings, ports) = testing::ring_ports("sm", 3, 4096, &pool);
    let dspec = testing::spec(&ports, vec![], Some(FlowSpec::default()));
    let mut dp = Datapath::start_with_ports(&dspec, ports, pool.clone()).expect("datapath");
    let upcalls = dp.take_upcalls().expect("upcalls");
    let commands = dp.pmds()[0].commands.clone().expect("commands");
    let stats = dp.pmds()[0].stats.clone();

    // From p0 (datapath port 0): 1->2 and 3->2 UDP to p1, 1->4 UDP and 1->2
    // ARP to p2.
    let f12 = install(&commands, normal_mask(true), key_of(&udp(1, 2, 0), 0), 1);
    let f32 = install(&commands, normal_mask(true), key_of(&udp(3, 2, 0), 0), 1);
    let f14 = install(&commands, normal_mask(true), key_of(&udp(1, 4, 0), 0), 2);
    let a12 = install(&commands, normal_mask(false), key_of(&arp(1, 2), 0), 2);
    barrier(&commands);

    // 200 rounds of: 1->2, 1->2, ARP 1->2, 3->2, 1->4 (runs, the same pair
    // with another ethertype, and changes of pair inside every burst).
    let mut frames = Vec::new();
    let (mut to_p1, mut to_p2) = (Vec::new(), Vec::new());
    for seq in 0..200u32 {
        let s = seq as u8;
        for (f, port) in [
            (udp(1, 2, s), 1),
            (udp(1, 2, s.wrapping_add(1)), 1),
            (arp(1, 2), 2),
            (udp(3, 2, s), 1),
            (udp(1, 4, s), 2),
        ] {
            if port == 1 {
                to_p1.push(f.clone());
            } else {
                to_p2.push(f.clone());
            }
            frames.push(f);
        }
    }
    for chunk in frames.chunks(500) {
        testing::send_frames(&rings[0], &pool, chunk);
        std::thread::sleep(Duration::from_millis(2));
    }
    wait_tx(&stats, 1000);
    assert_eq!(drain(&rings[3]), to_p1, "p1: exact frames, in order");
    assert_eq!(drain(&rings[5]), to_p2, "p2: exact frames, in order");
    assert_eq!(stats.simple_mac_hits.get(), 1000, "all by simple MAC match");
    assert_eq!(stats.simple_hits.get(), 0);
    assert_eq!(stats.emc_hits.get() + stats.megaflow_hits.get(), 0);
    assert_eq!(stats.upcalls.get(), 0);
    barrier(&commands);
    assert_eq!(
        [f12.packets(), f32.packets(), f14.packets(), a12.packets()],
        [400, 200, 200, 200],
        "each megaflow credited"
    );
    assert_eq!(f12.bytes(), 400 * 64);
    let t = (dp.port_totals(1), dp.port_totals(2));
    assert_eq!((t.0.tx_packets, t.1.tx_packets), (600, 400));

    // Whole bursts of one conversation (looked up once per burst).
    let one: Vec<Vec<u8>> = (0..96u8).map(|s| udp(1, 2, s)).collect();
    for chunk in one.chunks(32) {
        testing::send_frames(&rings[0], &pool, chunk);
        std::thread::sleep(Duration::from_millis(2));
    }
    wait_tx(&stats, 1096);
    assert_eq!(
        drain(&rings[3]),
        one,
        "p1: one conversation, exact and in order"
    );
    assert_eq!(stats.simple_mac_hits.get(), 1096);
    barrier(&commands);
    assert_eq!((f12.packets(), f12.bytes()), (496, 496 * 64));

    // An unknown pair: its burst takes the full path and upcalls.
    testing::send_frames(&rings[0], &pool, &[udp(5, 2, 0)]);
    let up = upcalls
        .recv_timeout(Duration::from_secs(10))
        .expect("upcall");
    assert_eq!(up.key, key_of(&udp(5, 2, 0), 0));
    assert_eq!(stats.upcalls.get(), 1);
    assert_eq!(stats.simple_mac_hits.get(), 1096, "not by simple match");
    commands
        .send(PmdCommand::Install {
            mask: normal_mask(true),
            key: up.key,
            actions: Arc::new(FlowActions::new(vec![DpAction::Output(1)])),
            stats: Arc::default(),
            packet: up.packet,
        })
        .expect("install");
    wait_tx(&stats, 1097);
    testing::send_frames(&rings[0], &pool, &[udp(5, 2, 1), udp(1, 2, 1)]);
    wait_tx(&stats, 1099);
    assert_eq!(
        drain(&rings[3]),
        vec![udp(5, 2, 0), udp(5, 2, 1), udp(1, 2, 1)]
    );
    assert_eq!(stats.simple_mac_hits.get(), 1098);

    // A megaflow of p0 that matches dl_dst only is not simple: p0's packets
    // then go through the EMC and the classifier, to the same outputs.
    let mut dst_only = normal_mask(true);
    dst_only.dl_src = [0; 6];
    install(&commands, dst_only, key_of(&udp(9, 9, 0), 0), 2);
    barrier(&commands);
    testing::send_frames(&rings[0], &pool, &[udp(1, 2, 7), udp(1, 4, 7)]);
    wait_tx(&stats, 1101);
    assert_eq!(drain(&rings[3]), vec![udp(1, 2, 7)]);
    assert_eq!(drain(&rings[5]), vec![udp(1, 4, 7)]);
    assert_eq!(stats.simple_mac_hits.get(), 1098);
    assert_eq!(stats.emc_hits.get() + stats.megaflow_hits.get(), 2);
    assert_eq!(stats.upcalls.get(), 1);
    for r in DropReason::ALL {
        assert_eq!(stats.drops[r.index()].get(), 0, "drops {}", r.as_str());
    }

    drop(commands);
    dp.stop();
    drop(upcalls);
    drop(rings);
    assert_eq!(pool.in_use(), 0, "no mbuf leaked");
    drop(pool);
    eal.cleanup().expect("EAL cleanup");
}
