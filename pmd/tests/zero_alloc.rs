//! The PMD loop allocates nothing in steady state: with a counting global allocator,
//! thousands of packets are forwarded between net_ring ports, by the static stage
//! and by the flow stage (parse, EMC/classifier, actions with a VLAN push; then the
//! simple-match path, which skips the parse, and simple MAC match, which looks
//! `NORMAL`'s megaflows up by the two Ethernet addresses; then a VXLAN tunnel
//! push, and a VXLAN tunnel pop whose inner packets are recirculated and
//! classified again on the tunnel's port), while the count of heap allocations
//! (all threads) stays where it was.
//!
//! One test per file: EAL initialises once per process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dpdk_ffi::{CountingAlloc, Mbuf, Mempool, Ring};
use pipeline::actions::DpAction;
use pipeline::tunnel::{inner_flow_hash, push, TunnelHeader, TunnelKind, TunnelSpec};
use pipeline::FlowKey;
use pmd::{testing, Datapath, FlowActions, FlowSpec, PmdCommand, PmdStats};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new();

/// Enqueues `n` copies of `frame` into `ring` (DPDK memory only: no heap).
fn send(ring: &Ring, pool: &Mempool, frame: &[u8], n: usize) {
    for _ in 0..n {
        let m = Mbuf::from_slice(pool, frame).expect("mbuf");
        if ring.enqueue(m).is_err() {
            panic!("ring full");
        }
    }
}

/// Dequeues and frees everything in `ring`; returns the count.
fn drain(ring: &Ring) -> u64 {
    let mut n = 0;
    while let Some(m) = ring.dequeue() {
        drop(m);
        n += 1;
    }
    n
}

/// Waits until the PMD applied every command sent before.
fn barrier(commands: &crossbeam_channel::Sender<PmdCommand>) {
    let (tx_done, rx_done) = crossbeam_channel::bounded(1);
    commands
        .send(PmdCommand::Barrier(tx_done))
        .expect("barrier");
    rx_done
        .recv_timeout(Duration::from_secs(10))
        .expect("barrier passed");
}

/// The counted window: 20 rounds of `send_round` (1000 packets), each waited
/// for until the PMD sent them (by `limit`) and checked by `check` as they
/// leave by `out`; returns the heap allocations made meanwhile.
fn allocations_over_rounds(
    stats: &PmdStats,
    out: &Ring,
    what: &str,
    limit: Instant,
    mut send_round: impl FnMut(),
    mut check: impl FnMut(&[u8]),
) -> u64 {
    let base = stats.tx_packets.get();
    let before = ALLOC.allocations();
    for round in 1..=20u64 {
        send_round();
        while stats.tx_packets.get() < base + round * 1000 {
            assert!(Instant::now() < limit, "not forwarded ({what})");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut n = 0;
        while let Some(m) = out.dequeue() {
            check(m.data());
            n += 1;
        }
        assert_eq!(n, 1000, "{what}");
    }
    ALLOC.allocations() - before
}

#[test]
fn steady_state_forwarding_allocates_nothing() {
    let eal = testing::eal("zero_alloc");
    let pool = Arc::new(Mempool::pktmbuf("zalloc_pool", 8191, 64, 2048 + 128).expect("mempool"));
    let (rings, mut ports) = testing::ring_ports("za", 3, 4096, &pool);
    // Datapath port 3: a VXLAN tunnel's.
    ports.push(testing::tunnel_port(
        "vxlan_sys_4789",
        4,
        TunnelKind::Vxlan,
        4789,
    ));
    // p0 -> p1 statically; p2 through the flow stage.
    let dspec = testing::spec(&ports, vec![(0, 1)], Some(FlowSpec::default()));
    let mut dp = Datapath::start_with_ports(&dspec, ports, pool.clone()).expect("datapath");
    let upcalls = dp.take_upcalls().expect("upcalls");
    let commands = dp.pmds()[0].commands.clone().expect("commands");
    let stats = dp.pmds()[0].stats.clone();
    let frame = pipeline::trafgen::udp_frame(&pipeline::trafgen::flows(1)[0], 64, 0);

    // Warm up: the first packets may touch lazily initialised state.
    send(&rings[0], &pool, &frame, 1000);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.tx_packets.get() < 1000 {
        assert!(Instant::now() < deadline, "warm-up not forwarded");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(drain(&rings[3]), 1000);

    // Steady state: 20 rounds of 1000 packets, no heap allocation anywhere.
    let before = ALLOC.allocations();
    let mut forwarded = 0u64;
    for round in 1..=20u64 {
        send(&rings[0], &pool, &frame, 1000);
        while stats.tx_packets.get() < 1000 + round * 1000 {
            assert!(
                Instant::now() < deadline + Duration::from_secs(30),
                "not forwarded"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        forwarded += drain(&rings[3]);
    }
    let after = ALLOC.allocations();
    assert_eq!(forwarded, 20_000);
    assert_eq!(
        after - before,
        0,
        "the datapath allocated {} times while forwarding 20000 packets",
        after - before
    );

    // The flow stage: the first packet upcalls; install a megaflow (in_port exact)
    // that tags VLAN 5 and outputs to p1, outside the counted window.
    send(&rings[4], &pool, &frame, 1);
    let up = upcalls
        .recv_timeout(Duration::from_secs(10))
        .expect("upcall");
    // Before the install: once applied, it sends the upcalled packet out.
    let base = stats.tx_packets.get();
    let mask = FlowKey {
        in_port: u32::MAX,
        ..FlowKey::default()
    };
    commands
        .send(PmdCommand::Install {
            mask,
            key: up.key,
            actions: Arc::new(FlowActions::new(vec![
                DpAction::PushVlan {
                    tpid: 0x8100,
                    tci: 0x1000 | 5,
                },
                DpAction::Output(1),
            ])),
            stats: Arc::default(),
            packet: up.packet,
        })
        .expect("install");
    // Once the upcalled packet is out, the megaflow is in: then the burst.
    while stats.tx_packets.get() < base + 1 {
        assert!(
            Instant::now() < deadline + Duration::from_secs(30),
            "install"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    send(&rings[4], &pool, &frame, 1000);
    while stats.tx_packets.get() < base + 1001 {
        assert!(
            Instant::now() < deadline + Duration::from_secs(30),
            "flow warm-up"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(drain(&rings[3]), 1001);
    let before = ALLOC.allocations();
    for round in 1..=20u64 {
        send(&rings[4], &pool, &frame, 1000);
        while stats.tx_packets.get() < base + 1001 + round * 1000 {
            assert!(
                Instant::now() < deadline + Duration::from_secs(60),
                "not forwarded"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(drain(&rings[3]), 1000);
    }
    let after = ALLOC.allocations();
    assert_eq!(stats.upcalls.get(), 1, "one upcall, then hits only");
    assert_eq!(
        after - before,
        0,
        "the flow stage allocated {} times while forwarding 20000 packets",
        after - before
    );

    assert_eq!(
        stats.simple_hits.get(),
        0,
        "in_port alone is not a simple mask"
    );

    // The simple-match path: the megaflow replaced by one that matches only
    // in_port, recirc_id, dl_type and nw_frag (what `in_port=2,actions=...`
    // translates to), tagging VLAN 7 now. Every packet then skips the parse.
    let simple_mask = FlowKey {
        in_port: u32::MAX,
        recirc_id: u32::MAX,
        dl_type: u16::MAX,
        nw_frag: u8::MAX,
        ..FlowKey::default()
    };
    commands
        .send(PmdCommand::Remove { mask, key: up.key })
        .expect("remove");
    commands
        .send(PmdCommand::Install {
            mask: simple_mask,
            key: up.key,
            actions: Arc::new(FlowActions::new(vec![
                DpAction::PushVlan {
                    tpid: 0x8100,
                    tci: 0x1000 | 7,
                },
                DpAction::Output(1),
            ])),
            stats: Arc::default(),
            packet: None,
        })
        .expect("install");
    barrier(&commands);
    let mut tagged = frame.clone();
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
    let allocated = allocations_over_rounds(
        &stats,
        &rings[3],
        "simple match",
        deadline + Duration::from_secs(90),
        || {
            send(&rings[4], &pool, &frame, 1000);
        },
        |d| assert_eq!(d, tagged.as_slice(), "tagged with VLAN 7"),
    );
    assert_eq!(stats.simple_hits.get(), 20_000, "all by simple match");
    assert_eq!(stats.upcalls.get(), 1, "still the one upcall");
    assert_eq!(
        allocated, 0,
        "the simple-match path allocated {} times while forwarding 20000 packets",
        allocated
    );

    // Simple MAC match: the simple megaflow replaced by two of NORMAL's shape
    // (both Ethernet addresses exact), one per destination, and the packets
    // alternate between them (a lookup in the MAC table for every packet).
    let mut mac_mask = simple_mask;
    mac_mask.vlan_tci[0] = u16::MAX;
    mac_mask.dl_src = [0xff; 6];
    mac_mask.dl_dst = [0xff; 6];
    let mut flow2 = pipeline::trafgen::flows(1)[0];
    flow2.dl_dst = [0x02, 0, 0, 0, 0, 0x99];
    let frame2 = pipeline::trafgen::udp_frame(&flow2, 64, 0);
    let mut key2 = FlowKey::default();
    pipeline::parse(&frame2, up.key.in_port, &mut key2);
    commands
        .send(PmdCommand::Remove {
            mask: simple_mask,
            key: up.key,
        })
        .expect("remove");
    for key in [up.key, key2] {
        commands
            .send(PmdCommand::Install {
                mask: mac_mask,
                key,
                actions: Arc::new(FlowActions::new(vec![DpAction::Output(1)])),
                stats: Arc::default(),
                packet: None,
            })
            .expect("install");
    }
    barrier(&commands);
    let allocated = allocations_over_rounds(
        &stats,
        &rings[3],
        "simple MAC match",
        deadline + Duration::from_secs(120),
        || {
            for _ in 0..500 {
                send(&rings[4], &pool, &frame, 1);
                send(&rings[4], &pool, &frame2, 1);
            }
        },
        |_| {},
    );
    assert_eq!(
        stats.simple_mac_hits.get(),
        20_000,
        "all by simple MAC match"
    );
    assert_eq!(stats.upcalls.get(), 1, "still the one upcall");
    assert_eq!(
        allocated, 0,
        "simple MAC match allocated {} times while forwarding 20000 packets",
        allocated
    );

    // Tunnel push: every packet of p2 gets a VXLAN header and leaves by p1.
    let header = Arc::new(
        TunnelHeader::new(
            TunnelSpec {
                kind: TunnelKind::Vxlan,
                eth_src: [0x02, 0, 0, 0, 0, 0x0a],
                eth_dst: [0x02, 0, 0, 0, 0, 0x0b],
                ip_src: 0xc0a8_0a01,
                ip_dst: 0xc0a8_0a02,
                tos: 0,
                ttl: 64,
                df: true,
                dst_port: 4789,
                key: Some(5),
                csum: false,
                geneve_opts: Vec::new(),
            },
            3,
            1,
        )
        .expect("header"),
    );
    let mut pushed = frame.clone();
    assert!(push(&mut pushed, &header, inner_flow_hash(&frame)));
    let p2 = FlowKey {
        in_port: 2,
        ..FlowKey::default()
    };
    commands.send(PmdCommand::Flush).expect("flush");
    commands
        .send(PmdCommand::Install {
            mask,
            key: p2,
            actions: Arc::new(FlowActions::new(vec![DpAction::TunnelPush {
                header: header.clone(),
                actions: Arc::from(vec![DpAction::Output(1)]),
            }])),
            stats: Arc::default(),
            packet: None,
        })
        .expect("install");
    barrier(&commands);
    let allocated = allocations_over_rounds(
        &stats,
        &rings[3],
        "tunnel push",
        deadline + Duration::from_secs(150),
        || {
            send(&rings[4], &pool, &frame, 1000);
        },
        |d| assert_eq!(d, pushed.as_slice(), "VXLAN-encapsulated"),
    );
    assert_eq!(
        allocated, 0,
        "tunnel push allocated {} times while forwarding 20000 packets",
        allocated
    );

    // Tunnel pop: p2's VXLAN packets are popped into the tunnel's port 3,
    // recirculated, and a megaflow on port 3 and the VNI sends the inner
    // frames out p1.
    let tnl_mask = FlowKey {
        in_port: u32::MAX,
        tun_id: u64::MAX,
        ..FlowKey::default()
    };
    commands.send(PmdCommand::Flush).expect("flush");
    for (m, k, actions) in [
        (mask, p2, vec![DpAction::TunnelPop(3)]),
        (
            tnl_mask,
            FlowKey {
                in_port: 3,
                tun_id: 5,
                ..FlowKey::default()
            },
            vec![DpAction::Output(1)],
        ),
    ] {
        commands
            .send(PmdCommand::Install {
                mask: m,
                key: k,
                actions: Arc::new(FlowActions::new(actions)),
                stats: Arc::default(),
                packet: None,
            })
            .expect("install");
    }
    barrier(&commands);
    let allocated = allocations_over_rounds(
        &stats,
        &rings[3],
        "tunnel pop",
        deadline + Duration::from_secs(180),
        || {
            send(&rings[4], &pool, &pushed, 1000);
        },
        |d| assert_eq!(d, frame.as_slice(), "decapsulated"),
    );
    assert_eq!(
        stats.recirculations.get(),
        20_000,
        "every packet recirculated"
    );
    assert_eq!(stats.upcalls.get(), 1, "still the one upcall");
    assert_eq!(
        allocated, 0,
        "tunnel pop and recirculation allocated {} times for 20000 packets",
        allocated
    );

    // The counter does count: a Vec allocates.
    let v: Vec<u8> = Vec::with_capacity(16);
    drop(v);
    assert!(ALLOC.allocations() > after);

    drop(commands);
    dp.stop();
    drop(upcalls);
    drop(rings);
    assert_eq!(pool.in_use(), 0);
    drop(pool);
    eal.cleanup().expect("EAL cleanup");
}
