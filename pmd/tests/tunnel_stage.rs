//! Native tunneling in a real PMD on DPDK net_ring ports, with this test as
//! the management thread: tunnel push (VXLAN, GRE, Geneve) writes exact outer
//! frames; tunnel pop strips them and recirculates the inner frame as received
//! on the tunnel's port, where megaflows on the tunnel metadata send it on;
//! a miss there upcalls with the tunnel metadata in the key and the packets
//! held meanwhile go out after the install; Geneve options become
//! `tun_metadata` fields through the TLV map, and megaflows send by them; bad
//! outer headers (and Geneve options the map refuses), tunnel loops,
//! a full recirculation batch and a header too long for the headroom are
//! dropped with their reasons counted; a tunnel port added at runtime takes
//! pops at once, and none once removed; nothing leaks.
//!
//! Ports: p0 (datapath 0, the "NIC"), p1 (1, a "VM"), p2 (2, another VM or
//! NIC), vxlan_sys_4789 (3), gre_sys (4), genev_sys_6081 (5).
//!
//! One test per file: EAL initialises once per process.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use dpdk_ffi::{Mempool, Ring};
use pipeline::actions::{execute, DpAction, Emitted, TunnelMeta};
use pipeline::flow_key::{ETH_TYPE_IPV4, IPPROTO_UDP, VLAN_CFI};
use pipeline::trafgen::{flows, udp_frame, UdpFlow};
use pipeline::tun_metadata::{TlvMap, TlvMapping};
use pipeline::tunnel::{
    inner_flow_hash, push, udp_src_port, TunnelHeader, TunnelKind, TunnelSpec, FLOW_TNL_F_CSUM,
    FLOW_TNL_F_DONT_FRAGMENT, FLOW_TNL_F_KEY, IPPROTO_GRE, UDP_SRC_MAX, UDP_SRC_MIN,
};
use pipeline::FlowKey;
use pmd::{testing, Datapath, DropReason, FlowActions, FlowSpec, PmdCommand, PmdStats, Upcall};

const VXLAN: u32 = 3;
const GRE: u32 = 4;
const GENEVE: u32 = 5;
const LOCAL: [u8; 4] = [192, 168, 10, 1];
const REMOTE: [u8; 4] = [192, 168, 10, 2];
const NIC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

fn ip(a: [u8; 4]) -> u32 {
    u32::from(Ipv4Addr::from(a))
}

/// The outer headers this host (LOCAL) sends to REMOTE.
fn header(kind: TunnelKind, key: Option<u64>, csum: bool, opts: Vec<u8>) -> Arc<TunnelHeader> {
    let tnl_port = match kind {
        TunnelKind::Vxlan => VXLAN,
        TunnelKind::Gre => GRE,
        TunnelKind::Geneve => GENEVE,
    };
    Arc::new(
        TunnelHeader::new(
            TunnelSpec {
                kind,
                eth_src: NIC_MAC,
                eth_dst: GW_MAC,
                ip_src: ip(LOCAL),
                ip_dst: ip(REMOTE),
                tos: 0,
                ttl: 64,
                df: true,
                dst_port: kind.default_port(),
                key,
                csum,
                geneve_opts: opts,
            },
            tnl_port,
            0,
        )
        .expect("header"),
    )
}

/// What REMOTE sends to this host: the same headers the other way round.
fn from_remote(kind: TunnelKind, key: Option<u64>, csum: bool, inner: &[u8]) -> Vec<u8> {
    from_remote_with(kind, key, csum, Vec::new(), inner)
}

/// [`from_remote`] with Geneve options `opts`.
fn from_remote_with(
    kind: TunnelKind,
    key: Option<u64>,
    csum: bool,
    opts: Vec<u8>,
    inner: &[u8],
) -> Vec<u8> {
    let h = header(kind, key, csum, opts);
    let mut spec = h.spec.clone();
    spec.eth_src = GW_MAC;
    spec.eth_dst = NIC_MAC;
    spec.ip_src = ip(REMOTE);
    spec.ip_dst = ip(LOCAL);
    let h = TunnelHeader::new(spec, h.tnl_port, 0).expect("header");
    let mut f = inner.to_vec();
    assert!(push(&mut f, &h, inner_flow_hash(inner)));
    f
}

/// The test's side of the PMD: commands, upcalls, counters.
struct Ctl {
    commands: Sender<PmdCommand>,
    upcalls: Receiver<Upcall>,
    stats: Arc<PmdStats>,
    /// Drops expected so far, by reason: checked exactly after each step.
    drops: HashMap<DropReason, u64>,
}

impl Ctl {
    fn install(&self, mask: FlowKey, key: FlowKey, actions: Vec<DpAction>) {
        self.commands
            .send(PmdCommand::Install {
                mask,
                key,
                actions: Arc::new(FlowActions::new(actions)),
                stats: Arc::default(),
                packet: None,
            })
            .expect("install");
    }

    fn remove(&self, mask: FlowKey, key: FlowKey) {
        self.commands
            .send(PmdCommand::Remove { mask, key })
            .expect("remove");
    }

    fn barrier(&self) {
        let (done, ack) = crossbeam_channel::bounded(1);
        self.commands
            .send(PmdCommand::Barrier(done))
            .expect("barrier");
        ack.recv_timeout(Duration::from_secs(10))
            .expect("barrier passed");
    }

    /// Expects `n` more drops for `reason` and waits until they are counted;
    /// every other reason must stay where it was.
    fn expect_drops(&mut self, reason: DropReason, n: u64) {
        *self.drops.entry(reason).or_default() += n;
        let want = self.drops[&reason];
        let stats = self.stats.clone();
        testing::wait_for(reason.as_str(), &stats, || {
            stats.drops[reason.index()].get() >= want
        });
        self.check_drops();
    }

    fn check_drops(&self) {
        for r in DropReason::ALL {
            assert_eq!(
                self.stats.drops[r.index()].get(),
                self.drops.get(&r).copied().unwrap_or(0),
                "drops {}",
                r.as_str()
            );
        }
    }
}

/// Waits for `n` frames on `ring` and returns them; no more arrive meanwhile.
fn receive(ring: &Ring, n: usize, stats: &PmdStats) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    testing::wait_for(&format!("{n} frames"), stats, || {
        got.extend(testing::drain_frames(ring));
        got.len() >= n
    });
    std::thread::sleep(Duration::from_millis(20));
    got.extend(testing::drain_frames(ring));
    assert_eq!(got.len(), n, "frames out");
    got
}

/// The outputs of the reference executor, by port.
fn reference(actions: &[DpAction], frame: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut f = frame.to_vec();
    let mut out = Vec::new();
    execute(actions, &mut f, &mut TunnelMeta::default(), &mut out);
    out.into_iter()
        .map(|e| match e {
            Emitted::Output { port, frame, .. } => (port, frame),
            other => panic!("not an output: {other:?}"),
        })
        .collect()
}

fn in_port_mask() -> FlowKey {
    FlowKey {
        in_port: u32::MAX,
        ..FlowKey::default()
    }
}

fn key_in(port: u32) -> FlowKey {
    FlowKey {
        in_port: port,
        ..FlowKey::default()
    }
}

#[test]
fn tunnel_push_pop_and_recirculation() {
    let eal = testing::eal("tunnel_stage");
    let pool = Arc::new(Mempool::pktmbuf("tnl_pool", 8191, 64, 2048 + 128).expect("mempool"));
    let (rings, mut ports) = testing::ring_ports("tn", 3, 4096, &pool);
    ports.push(testing::tunnel_port(
        "vxlan_sys_4789",
        4,
        TunnelKind::Vxlan,
        4789,
    ));
    ports.push(testing::tunnel_port("gre_sys", 5, TunnelKind::Gre, 0));
    ports.push(testing::tunnel_port(
        "genev_sys_6081",
        6,
        TunnelKind::Geneve,
        6081,
    ));
    let dspec = testing::spec(
        &ports,
        vec![],
        Some(FlowSpec {
            emc_insert_inv_prob: 1,
            ..FlowSpec::default()
        }),
    );
    let mut dp = Datapath::start_with_ports(&dspec, ports, pool.clone()).expect("datapath");
    let mut ctl = Ctl {
        upcalls: dp.take_upcalls().expect("upcalls"),
        commands: dp.pmds()[0].commands.clone().expect("commands"),
        stats: dp.pmds()[0].stats.clone(),
        drops: HashMap::new(),
    };
    let stats = ctl.stats.clone();
    assert_eq!(dp.port(3).map(|p| p.kind()), Some("vxlan"));
    assert_eq!(dp.port(4).map(|p| p.kind()), Some("gre"));
    let tx = |port: usize| &rings[2 * port + 1];
    let rx = |port: usize| &rings[2 * port];

    // --- Push. On p2, per inner destination (trafgen's flows differ in
    // nw_dst): VXLAN out p0; GRE with key and checksum out p0 with VLAN 10,
    // and a copy of the inner frame to p1; Geneve with options and UDP
    // checksum out p0.
    let fl: Vec<UdpFlow> = flows(3);
    let dst_mask = FlowKey {
        in_port: u32::MAX,
        dl_type: u16::MAX,
        nw_dst: u32::MAX,
        ..FlowKey::default()
    };
    let push_actions = [
        vec![DpAction::TunnelPush {
            header: header(TunnelKind::Vxlan, Some(0x1388), false, Vec::new()),
            actions: Arc::from(vec![DpAction::Output(0)]),
        }],
        vec![
            DpAction::TunnelPush {
                header: header(TunnelKind::Gre, Some(0xabcd), true, Vec::new()),
                actions: Arc::from(vec![
                    DpAction::PushVlan {
                        tpid: 0x8100,
                        tci: VLAN_CFI | 10,
                    },
                    DpAction::Output(0),
                ]),
            },
            DpAction::Output(1),
        ],
        vec![DpAction::TunnelPush {
            header: header(
                TunnelKind::Geneve,
                Some(7),
                true,
                vec![0x01, 0x02, 0x80, 0x01, 0xde, 0xad, 0xbe, 0xef],
            ),
            actions: Arc::from(vec![DpAction::Output(0)]),
        }],
    ];
    for (flow, actions) in fl.iter().zip(&push_actions) {
        let mut key = FlowKey::default();
        pipeline::parse(&udp_frame(flow, 64, 0), 2, &mut key);
        ctl.install(dst_mask, key, actions.clone());
    }
    ctl.barrier();
    // Two inner flows per destination (different UDP source ports), 10
    // packets each, interleaved.
    let mut inner = Vec::new();
    for seq in 0..10u8 {
        for (i, flow) in fl.iter().enumerate() {
            for sport in [1000u16, 2000] {
                let f = UdpFlow {
                    tp_src: sport + i as u16,
                    ..*flow
                };
                inner.push((i, udp_frame(&f, 80 + 10 * i, seq)));
            }
        }
    }
    let frames: Vec<Vec<u8>> = inner.iter().map(|(_, f)| f.clone()).collect();
    testing::send_frames(rx(2), &pool, &frames);
    let mut want: HashMap<u32, Vec<Vec<u8>>> = HashMap::new();
    for (i, f) in &inner {
        for (port, frame) in reference(&push_actions[*i], f) {
            want.entry(port).or_default().push(frame);
        }
    }
    let got0 = receive(tx(0), 60, &stats);
    let got1 = receive(tx(1), 20, &stats);
    // One PMD, one rx queue: each flow's packets leave in order; the three
    // destinations' megaflows run as separate runs, so compare per flow.
    let by_flow = |v: &[Vec<u8>]| {
        let mut m: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
        for f in v {
            m.entry(flow_id(f)).or_default().push(f.clone());
        }
        m
    };
    same_frames(by_flow(&got0), by_flow(&want[&0]), "outer frames on p0");
    same_frames(by_flow(&got1), by_flow(&want[&1]), "inner copies on p1");
    // Beyond equality with the reference: the UDP source port is in OVS's
    // range, one per inner flow, and differs between flows.
    let mut sports: HashMap<Vec<u8>, u16> = HashMap::new();
    for f in got0.iter().filter(|f| f[23] == IPPROTO_UDP) {
        let sport = u16::from_be_bytes([f[34], f[35]]);
        assert!((UDP_SRC_MIN..=UDP_SRC_MAX).contains(&sport));
        assert_eq!(
            sport,
            udp_src_port(inner_flow_hash(inner_of(f))),
            "source port from the inner flow"
        );
        let prev = sports.entry(flow_id(f)).or_insert(sport);
        assert_eq!(*prev, sport, "one port per flow");
    }
    let distinct: std::collections::HashSet<u16> = sports.values().copied().collect();
    assert_eq!(sports.len(), 4, "two VXLAN and two Geneve flows");
    assert_eq!(distinct.len(), 4, "a port each: {sports:?}");
    // The VXLAN frame in full, written out from RFC 7348 and RFC 791.
    let v = got0
        .iter()
        .find(|f| f[23] == IPPROTO_UDP && f[36..38] == [0x12, 0xb5])
        .expect("a vxlan frame");
    let inner0 = &inner[0].1;
    assert_eq!(&v[..6], &GW_MAC);
    assert_eq!(&v[6..12], &NIC_MAC);
    assert_eq!(&v[12..14], &[0x08, 0x00]);
    let ip_len = (inner0.len() + 36) as u16;
    let mut iph = vec![0x45, 0];
    iph.extend_from_slice(&ip_len.to_be_bytes());
    iph.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    iph.extend_from_slice(&LOCAL);
    iph.extend_from_slice(&REMOTE);
    let mut sum: u32 = iph
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    iph[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    assert_eq!(&v[14..34], iph.as_slice(), "outer IPv4 header");
    assert_eq!(&v[36..38], &4789u16.to_be_bytes());
    assert_eq!(&v[38..40], &((inner0.len() + 16) as u16).to_be_bytes());
    assert_eq!(&v[40..42], &[0, 0], "no UDP checksum asked");
    assert_eq!(&v[42..50], &[0x08, 0, 0, 0, 0, 0x13, 0x88, 0], "VNI 0x1388");
    assert_eq!(&v[50..], inner0.as_slice());
    let t = dp.port_totals(2);
    assert_eq!(t.rx_packets, 60);
    assert_eq!(dp.port_totals(0).tx_packets, 60);
    assert_eq!(dp.port_totals(1).tx_packets, 20);
    ctl.check_drops();

    // --- Pop. On p0, by IP protocol and UDP port: VXLAN, Geneve, GRE pops;
    // on each tunnel port a megaflow on in_port + tun_id + tun_src + tun_dst
    // outputs to p1.
    let l4_mask = FlowKey {
        in_port: u32::MAX,
        dl_type: u16::MAX,
        nw_proto: u8::MAX,
        tp_dst: u16::MAX,
        ..FlowKey::default()
    };
    for (proto, dport, tnl) in [
        (IPPROTO_UDP, 4789, VXLAN),
        (IPPROTO_UDP, 6081, GENEVE),
        (IPPROTO_GRE, 0, GRE),
    ] {
        let key = FlowKey {
            in_port: 0,
            dl_type: ETH_TYPE_IPV4,
            nw_proto: proto,
            tp_dst: dport,
            ..FlowKey::default()
        };
        ctl.install(l4_mask, key, vec![DpAction::TunnelPop(tnl)]);
    }
    let tun_mask = FlowKey {
        in_port: u32::MAX,
        tun_id: u64::MAX,
        tun_src: u32::MAX,
        tun_dst: u32::MAX,
        ..FlowKey::default()
    };
    let tun_key = |port: u32, id: u64| FlowKey {
        in_port: port,
        tun_id: id,
        tun_src: ip(REMOTE),
        tun_dst: ip(LOCAL),
        ..FlowKey::default()
    };
    ctl.install(tun_mask, tun_key(VXLAN, 0x1388), vec![DpAction::Output(1)]);
    ctl.install(tun_mask, tun_key(GRE, 0xabcd), vec![DpAction::Output(1)]);
    ctl.install(tun_mask, tun_key(GENEVE, 7), vec![DpAction::Output(1)]);
    ctl.barrier();
    let mut outer = Vec::new();
    let mut inner_by_kind: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
    for seq in 0..20u8 {
        for (k, (kind, key, csum)) in [
            (TunnelKind::Vxlan, 0x1388, true),
            (TunnelKind::Gre, 0xabcd, true),
            (TunnelKind::Geneve, 7, false),
        ]
        .into_iter()
        .enumerate()
        {
            let f = udp_frame(&fl[k], 70 + 50 * k, seq);
            outer.push(from_remote(kind, Some(key), csum, &f));
            inner_by_kind[k].push(f);
        }
    }
    let base_recirc = stats.recirculations.get();
    testing::send_frames(rx(0), &pool, &outer);
    let got = receive(tx(1), 60, &stats);
    for (k, want) in inner_by_kind.iter().enumerate() {
        let mine: Vec<Vec<u8>> = got
            .iter()
            .filter(|f| f[30..34] == fl[k].nw_dst)
            .cloned()
            .collect();
        assert_eq!(
            &mine, want,
            "inner frames of tunnel {k}, exact and in order"
        );
    }
    assert_eq!(stats.recirculations.get() - base_recirc, 60);
    for (port, n, bytes) in [
        (
            VXLAN,
            20u64,
            inner_by_kind[0].iter().map(|f| f.len() as u64).sum::<u64>(),
        ),
        (
            GRE,
            20,
            inner_by_kind[1].iter().map(|f| f.len() as u64).sum(),
        ),
        (
            GENEVE,
            20,
            inner_by_kind[2].iter().map(|f| f.len() as u64).sum(),
        ),
    ] {
        let t = dp.port_totals(port as usize);
        assert_eq!(
            (t.rx_packets, t.rx_bytes),
            (n, bytes),
            "tunnel port {port} rx"
        );
    }
    assert_eq!(dp.port_totals(0).rx_packets, 60);
    assert_eq!(dp.port_totals(1).tx_packets, 20 + 60);
    ctl.check_drops();

    // --- A miss on the tunnel port: VNI 0x999 has no megaflow there. The
    // upcall's key carries the tunnel metadata; the flow's later packets are
    // held and go out, in order, after the install.
    let miss_inner: Vec<Vec<u8>> = (0..5u8).map(|s| udp_frame(&fl[0], 90, s)).collect();
    let miss_outer: Vec<Vec<u8>> = miss_inner
        .iter()
        .map(|f| from_remote(TunnelKind::Vxlan, Some(0x999), true, f))
        .collect();
    testing::send_frames(rx(0), &pool, &miss_outer);
    let up = ctl
        .upcalls
        .recv_timeout(Duration::from_secs(10))
        .expect("upcall from the tunnel port");
    assert!(up.packet.is_none(), "held in the PMD");
    let mut want_key = FlowKey::default();
    pipeline::parse(&miss_inner[0], VXLAN, &mut want_key);
    want_key.tun_id = 0x999;
    want_key.tun_src = ip(REMOTE);
    want_key.tun_dst = ip(LOCAL);
    want_key.tun_flags = FLOW_TNL_F_KEY | FLOW_TNL_F_DONT_FRAGMENT | FLOW_TNL_F_CSUM;
    assert_eq!(up.key, want_key, "the full key, tunnel metadata included");
    testing::wait_for("4 held", &stats, || stats.upcalls_coalesced.get() >= 4);
    assert!(ctl.upcalls.try_recv().is_err(), "one upcall for the flow");
    assert!(
        testing::drain_frames(tx(1)).is_empty(),
        "nothing out before the install"
    );
    ctl.install(tun_mask, up.key, vec![DpAction::Output(2)]);
    assert_eq!(
        receive(tx(2), 5, &stats),
        miss_inner,
        "held packets in order"
    );
    assert_eq!(dp.port_totals(VXLAN as usize).rx_packets, 25);
    ctl.check_drops();

    // --- Bad outer packets, each dropped with its reason. On p2 one megaflow
    // on in_port alone pops every packet as the tunnel under test.
    let pop_on_p2 = |ctl: &Ctl, tnl: u32| {
        ctl.remove(in_port_mask(), key_in(2));
        ctl.install(in_port_mask(), key_in(2), vec![DpAction::TunnelPop(tnl)]);
        ctl.barrier();
    };
    for flow in &fl {
        let mut key = FlowKey::default();
        pipeline::parse(&udp_frame(flow, 64, 0), 2, &mut key);
        ctl.remove(dst_mask, key);
    }
    pop_on_p2(&ctl, VXLAN);
    let good =
        |csum: bool| from_remote(TunnelKind::Vxlan, Some(0x1388), csum, &inner_by_kind[0][0]);
    let fix_ip = |f: &mut Vec<u8>| {
        f[24] = 0;
        f[25] = 0;
        let mut s: u32 = f[14..34]
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        f[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
    };
    let send1 = |f: Vec<u8>| testing::send_frames(rx(2), &pool, &[f]);
    let vxlan_cases: Vec<(DropReason, Vec<u8>)> = vec![
        (DropReason::TnlPopTruncated, good(false)[..60].to_vec()),
        (DropReason::TnlPopTruncated, good(false)[..14].to_vec()),
        (DropReason::TnlPopNotIpv4, {
            let mut f = good(false);
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            f
        }),
        (DropReason::TnlPopIpChecksum, {
            let mut f = good(false);
            f[22] ^= 1;
            f
        }),
        (DropReason::TnlPopIpLength, {
            let mut f = good(false);
            f[14] = 0x44;
            fix_ip(&mut f);
            f
        }),
        (DropReason::TnlPopFragment, {
            let mut f = good(false);
            f[20] |= 0x20;
            fix_ip(&mut f);
            f
        }),
        (DropReason::TnlPopProtocol, {
            let mut f = good(false);
            f[23] = 6;
            fix_ip(&mut f);
            f
        }),
        (DropReason::TnlPopUdpPort, {
            let mut f = good(false);
            f[37] ^= 1;
            f
        }),
        (DropReason::TnlPopUdpLength, {
            let mut f = good(false);
            f[39] ^= 2;
            f
        }),
        (DropReason::TnlPopUdpChecksum, {
            let mut f = good(true);
            let last = f.len() - 1;
            f[last] ^= 0x10;
            f
        }),
        (DropReason::TnlPopVxlanFlags, {
            let mut f = good(false);
            f[42] = 0;
            f
        }),
    ];
    for (reason, f) in vxlan_cases {
        send1(f);
        ctl.expect_drops(reason, 1);
    }
    pop_on_p2(&ctl, GRE);
    let gre = |csum: bool| from_remote(TunnelKind::Gre, Some(0xabcd), csum, &inner_by_kind[1][0]);
    for (reason, f) in [
        (DropReason::TnlPopGreHeader, {
            let mut f = gre(false);
            f[34] |= 0x40;
            f
        }),
        (DropReason::TnlPopGreProtocol, {
            let mut f = gre(false);
            f[36..38].copy_from_slice(&[0x08, 0x00]);
            f
        }),
        (DropReason::TnlPopGreChecksum, {
            let mut f = gre(true);
            let last = f.len() - 1;
            f[last] ^= 0x10;
            f
        }),
        (DropReason::TnlPopProtocol, good(false)),
    ] {
        send1(f);
        ctl.expect_drops(reason, 1);
    }
    pop_on_p2(&ctl, GENEVE);
    let gnv = || from_remote(TunnelKind::Geneve, Some(7), false, &inner_by_kind[2][0]);
    for (reason, f) in [
        (DropReason::TnlPopGeneveVersion, {
            let mut f = gnv();
            f[42] |= 0x80;
            f
        }),
        (DropReason::TnlPopGeneveProtocol, {
            let mut f = gnv();
            f[44] = 0x08;
            f
        }),
        (DropReason::TnlPopGeneveOptions, {
            let mut f = gnv();
            f[42] = 0x3f;
            f
        }),
    ] {
        send1(f);
        ctl.expect_drops(reason, 1);
    }
    // A pop naming a port that is no tunnel's (p1).
    pop_on_p2(&ctl, 1);
    send1(good(false));
    ctl.expect_drops(DropReason::TnlPopNotTunnelPort, 1);
    // The good packet still passes where it should: out p1 via VXLAN.
    pop_on_p2(&ctl, VXLAN);
    send1(good(true));
    assert_eq!(receive(tx(1), 1, &stats), vec![inner_by_kind[0][0].clone()]);
    ctl.check_drops();

    // --- A loop of tunnels: on the VXLAN port, VNI 0x777 is pushed into
    // VXLAN again and popped again. Each round is a recirculation; the pop
    // beyond MAX_RECIRC_DEPTH is dropped.
    let loop_hdr = header(TunnelKind::Vxlan, Some(0x777), false, Vec::new());
    let mut back = loop_hdr.spec.clone();
    back.ip_src = ip(REMOTE);
    back.ip_dst = ip(LOCAL);
    let back = Arc::new(TunnelHeader::new(back, VXLAN, 0).expect("header"));
    ctl.install(
        tun_mask,
        tun_key(VXLAN, 0x777),
        vec![DpAction::TunnelPush {
            header: back,
            actions: Arc::from(vec![DpAction::TunnelPop(VXLAN)]),
        }],
    );
    ctl.barrier();
    let rx_vxlan = dp.port_totals(VXLAN as usize).rx_packets;
    let base_recirc = stats.recirculations.get();
    send1(from_remote(
        TunnelKind::Vxlan,
        Some(0x777),
        false,
        &inner_by_kind[0][1],
    ));
    ctl.expect_drops(DropReason::RecircDepth, 1);
    assert_eq!(
        stats.recirculations.get() - base_recirc,
        u64::from(pmd::poll_loop::MAX_RECIRC_DEPTH)
    );
    assert_eq!(
        dp.port_totals(VXLAN as usize).rx_packets - rx_vxlan,
        u64::from(pmd::poll_loop::MAX_RECIRC_DEPTH)
    );

    // --- A full recirculation batch: 65 pops of one packet; 64 fit.
    ctl.remove(in_port_mask(), key_in(2));
    ctl.install(
        in_port_mask(),
        key_in(2),
        vec![DpAction::TunnelPop(VXLAN); 65],
    );
    ctl.barrier();
    send1(good(false));
    ctl.expect_drops(DropReason::RecircFull, 1);
    let copies = receive(tx(1), 64, &stats);
    assert!(copies.iter().all(|f| f == &inner_by_kind[0][0]));

    // --- A header longer than the headroom (Geneve with 252 bytes of
    // options: 302 bytes, the mbuf has 128).
    ctl.remove(in_port_mask(), key_in(2));
    ctl.install(
        in_port_mask(),
        key_in(2),
        vec![DpAction::TunnelPush {
            header: header(TunnelKind::Geneve, Some(1), false, vec![0; 252]),
            actions: Arc::from(vec![DpAction::Output(0)]),
        }],
    );
    ctl.barrier();
    send1(inner_by_kind[0][0].clone());
    ctl.expect_drops(DropReason::TnlPushHeadroom, 1);

    // --- The path MTU: VXLAN adds 36 IP bytes, so over a 100-byte path an
    // inner frame may have 64 bytes; a longer one is dropped and counted,
    // the 64-byte one goes out with an outer IP packet of exactly 100.
    let mut small = (*header(TunnelKind::Vxlan, Some(1), false, Vec::new())).clone();
    small.set_path_mtu(100);
    assert_eq!(small.max_inner_frame(), 64);
    ctl.remove(in_port_mask(), key_in(2));
    ctl.install(
        in_port_mask(),
        key_in(2),
        vec![DpAction::TunnelPush {
            header: Arc::new(small),
            actions: Arc::from(vec![DpAction::Output(1)]),
        }],
    );
    ctl.barrier();
    let mut long = inner_by_kind[0][0].clone();
    long.resize(65, 0);
    send1(long);
    ctl.expect_drops(DropReason::TnlPushMtu, 1);
    let mut fits = inner_by_kind[0][0].clone();
    fits.resize(64, 0);
    send1(fits);
    let out = receive(tx(1), 1, &stats);
    assert_eq!(out[0].len(), 114);
    assert_eq!(u16::from_be_bytes([out[0][16], out[0][17]]), 100);

    // --- A tunnel port added at runtime (VXLAN on UDP 8472) is known to the
    // PMD at once; removed, a pop to its number is refused.
    let (spec, port) = testing::tunnel_port("vxlan_sys_8472", 7, TunnelKind::Vxlan, 8472);
    let vx8472 = dp.add_opened_port(spec, port).expect("add tunnel port") as u32;
    assert_eq!(vx8472, 6);
    ctl.remove(in_port_mask(), key_in(2));
    ctl.install(in_port_mask(), key_in(2), vec![DpAction::TunnelPop(vx8472)]);
    ctl.install(tun_mask, tun_key(vx8472, 0x1388), vec![DpAction::Output(1)]);
    ctl.barrier();
    let mut on8472 = good(false);
    on8472[36..38].copy_from_slice(&8472u16.to_be_bytes());
    send1(on8472.clone());
    assert_eq!(receive(tx(1), 1, &stats), vec![inner_by_kind[0][0].clone()]);
    assert_eq!(dp.port_totals(vx8472 as usize).rx_packets, 1);
    send1(good(false));
    ctl.expect_drops(DropReason::TnlPopUdpPort, 1);
    dp.remove_port(vx8472 as usize).expect("remove tunnel port");
    send1(on8472);
    ctl.expect_drops(DropReason::TnlPopNotTunnelPort, 1);

    // --- Simple match on a tunnel port: its megaflows match in_port,
    // recirc_id, dl_type, nw_frag and the tunnel metadata exactly (what a
    // translation of `in_port=vxlan0,...` gives), so the popped packets are
    // classified by their simple key and metadata, without the full parse.
    // VNI 0x1388 goes to p1, VNI 0x2000 to p2, interleaved.
    let (spec, port) = testing::tunnel_port("vxlan_sys_4790", 8, TunnelKind::Vxlan, 4790);
    let vx4790 = dp.add_opened_port(spec, port).expect("add tunnel port") as u32;
    ctl.remove(in_port_mask(), key_in(2));
    ctl.install(in_port_mask(), key_in(2), vec![DpAction::TunnelPop(vx4790)]);
    // The number is the one vx8472 had: its megaflow (not simple) goes first,
    // or the port would take the full path.
    ctl.remove(tun_mask, tun_key(vx8472, 0x1388));
    let simple_tun_mask = FlowKey {
        in_port: u32::MAX,
        recirc_id: u32::MAX,
        dl_type: u16::MAX,
        nw_frag: u8::MAX,
        tun_id: u64::MAX,
        tun_src: u32::MAX,
        tun_dst: u32::MAX,
        tun_flags: u16::MAX,
        ..FlowKey::default()
    };
    let simple_tun_key = |id: u64| FlowKey {
        in_port: vx4790,
        dl_type: ETH_TYPE_IPV4,
        tun_id: id,
        tun_src: ip(REMOTE),
        tun_dst: ip(LOCAL),
        tun_flags: FLOW_TNL_F_KEY | FLOW_TNL_F_DONT_FRAGMENT,
        ..FlowKey::default()
    };
    ctl.install(
        simple_tun_mask,
        simple_tun_key(0x1388),
        vec![DpAction::Output(1)],
    );
    ctl.install(
        simple_tun_mask,
        simple_tun_key(0x2000),
        vec![DpAction::Output(2)],
    );
    ctl.barrier();
    let mut want1 = Vec::new();
    let mut want2 = Vec::new();
    let mut outer = Vec::new();
    for seq in 0..10u8 {
        for (vni, want) in [(0x1388u64, &mut want1), (0x2000, &mut want2)] {
            let f = udp_frame(&fl[0], 64 + usize::from(seq), seq);
            let mut o = from_remote(TunnelKind::Vxlan, Some(vni), false, &f);
            o[36..38].copy_from_slice(&4790u16.to_be_bytes());
            outer.push(o);
            want.push(f);
        }
    }
    let (simple0, recirc0) = (stats.simple_hits.get(), stats.recirculations.get());
    testing::send_frames(rx(2), &pool, &outer);
    assert_eq!(receive(tx(1), 10, &stats), want1, "VNI 0x1388, in order");
    assert_eq!(receive(tx(2), 10, &stats), want2, "VNI 0x2000, in order");
    assert_eq!(stats.recirculations.get() - recirc0, 20);
    // The outer packets' megaflow (in_port alone) is not simple: every simple
    // hit is a popped packet's.
    assert_eq!(
        stats.simple_hits.get() - simple0,
        20,
        "popped packets by simple match"
    );
    assert_eq!(dp.port_totals(vx4790 as usize).rx_packets, 20);

    // --- Simple endpoint match: the outer packets' megaflow as a bridge's
    // translation makes it (`udp,in_port=2,vlan_tci=0/0x1000,dl_dst=NIC,
    // nw_dst=LOCAL,nw_frag=no,tp_dst=4790 actions:tnl_pop`), beside one for
    // another address of the same port that outputs. A burst of both, the
    // other address's packet in the middle: each goes its megaflow's way, in
    // order, and every packet of it (outer and popped) by simple match.
    ctl.remove(in_port_mask(), key_in(2));
    let end_mask = FlowKey {
        in_port: u32::MAX,
        recirc_id: u32::MAX,
        dl_type: u16::MAX,
        dl_dst: [0xff; 6],
        nw_dst: u32::MAX,
        nw_proto: u8::MAX,
        nw_frag: u8::MAX,
        tp_dst: u16::MAX,
        vlan_tci: [0x1000, 0],
        ..FlowKey::default()
    };
    let end_key = |dst: [u8; 4]| FlowKey {
        in_port: 2,
        dl_type: ETH_TYPE_IPV4,
        dl_dst: NIC_MAC,
        nw_dst: ip(dst),
        nw_proto: 17,
        tp_dst: 4790,
        ..FlowKey::default()
    };
    const OTHER: [u8; 4] = [192, 168, 10, 3];
    ctl.install(end_mask, end_key(LOCAL), vec![DpAction::TunnelPop(vx4790)]);
    ctl.install(end_mask, end_key(OTHER), vec![DpAction::Output(0)]);
    ctl.barrier();
    let mut to_other = outer[0].clone();
    to_other[30..34].copy_from_slice(&OTHER);
    let mut burst = outer.clone();
    burst.insert(7, to_other.clone());
    let (simple0, recirc0) = (stats.simple_hits.get(), stats.recirculations.get());
    testing::send_frames(rx(2), &pool, &burst);
    assert_eq!(
        receive(tx(0), 1, &stats),
        vec![to_other.clone()],
        "the other address"
    );
    assert_eq!(receive(tx(1), 10, &stats), want1, "VNI 0x1388, in order");
    assert_eq!(receive(tx(2), 10, &stats), want2, "VNI 0x2000, in order");
    assert_eq!(stats.recirculations.get() - recirc0, 20);
    assert_eq!(
        stats.simple_hits.get() - simple0,
        41,
        "outer and popped packets by simple match"
    );
    assert_eq!(dp.port_totals(vx4790 as usize).rx_packets, 40);
    // One VNI only, in two pop runs (the other address's packet between
    // them): the popped packets are one conversation, looked up once.
    let mut burst: Vec<Vec<u8>> = outer.iter().step_by(2).cloned().collect();
    burst.insert(5, to_other.clone());
    let simple0 = stats.simple_hits.get();
    testing::send_frames(rx(2), &pool, &burst);
    assert_eq!(
        receive(tx(0), 1, &stats),
        vec![to_other.clone()],
        "the other address"
    );
    assert_eq!(
        receive(tx(1), 10, &stats),
        want1,
        "VNI 0x1388 alone, in order"
    );
    assert_eq!(stats.simple_hits.get() - simple0, 21);
    assert_eq!(dp.port_totals(vx4790 as usize).rx_packets, 50);
    // Two pop runs, each one conversation, of two VNIs: not one.
    let mut burst: Vec<Vec<u8>> = outer.iter().step_by(2).take(5).cloned().collect();
    burst.push(to_other.clone());
    burst.extend(outer.iter().skip(1).step_by(2).take(5).cloned());
    testing::send_frames(rx(2), &pool, &burst);
    assert_eq!(receive(tx(0), 1, &stats), vec![to_other.clone()]);
    assert_eq!(receive(tx(1), 5, &stats), want1[..5].to_vec(), "VNI 0x1388");
    assert_eq!(receive(tx(2), 5, &stats), want2[..5].to_vec(), "VNI 0x2000");
    ctl.remove(end_mask, end_key(OTHER));
    dp.remove_port(vx4790 as usize).expect("remove tunnel port");
    ctl.check_drops();

    // --- Geneve options as tun_metadata: with OVN's option mapped to
    // tun_metadata0, the popped packets of VNI 8 go by its value (0x2a to
    // p1, 0x2b to p2, an unmapped non-critical option ignored); an unmapped
    // critical option and a mapped one of another length are dropped with
    // their reasons.
    let mut map = TlvMap::default();
    map.add(&[TlvMapping {
        class: 0x102,
        ty: 0x80,
        len: 4,
        index: 0,
    }])
    .expect("map");
    ctl.commands
        .send(PmdCommand::SetTlvMap(map))
        .expect("tlv map");
    pop_on_p2(&ctl, GENEVE);
    let md_mask = FlowKey {
        in_port: u32::MAX,
        tun_id: u64::MAX,
        tun_md_present: u64::MAX,
        tun_md: [u64::MAX, 0, 0, 0],
        ..FlowKey::default()
    };
    let md_key = |v: u64| FlowKey {
        in_port: GENEVE,
        tun_id: 8,
        tun_md_present: 1,
        tun_md: [v, 0, 0, 0],
        ..FlowKey::default()
    };
    ctl.install(md_mask, md_key(0x2a), vec![DpAction::Output(1)]);
    ctl.install(md_mask, md_key(0x2b), vec![DpAction::Output(2)]);
    ctl.barrier();
    let ovn = |v: u8| vec![0x01, 0x02, 0x80, 0x01, 0, 0, 0, v];
    let gnv_md = |opts: Vec<u8>| {
        from_remote_with(
            TunnelKind::Geneve,
            Some(8),
            false,
            opts,
            &inner_by_kind[2][0],
        )
    };
    let mut unmapped_first = vec![0x00, 0x05, 0x01, 0x01, 0xaa, 0xbb, 0xcc, 0xdd];
    unmapped_first.extend(ovn(0x2a));
    testing::send_frames(
        rx(2),
        &pool,
        &[gnv_md(ovn(0x2a)), gnv_md(ovn(0x2b)), gnv_md(unmapped_first)],
    );
    let inner = inner_by_kind[2][0].clone();
    assert_eq!(
        receive(tx(1), 2, &stats),
        vec![inner.clone(), inner.clone()]
    );
    assert_eq!(receive(tx(2), 1, &stats), vec![inner]);
    send1(gnv_md(vec![0x00, 0x05, 0x81, 0x01, 0, 0, 0, 0]));
    ctl.expect_drops(DropReason::TnlPopGeneveCritical, 1);
    send1(gnv_md(vec![
        0x01, 0x02, 0x80, 0x02, 0, 0, 0, 0, 0, 0, 0, 0x2a,
    ]));
    ctl.expect_drops(DropReason::TnlPopGeneveOptionLength, 1);
    ctl.remove(md_mask, md_key(0x2a));
    ctl.remove(md_mask, md_key(0x2b));

    // --- The end: nothing left anywhere, every mbuf back in the pool.
    ctl.barrier();
    for port in 0..3 {
        assert!(
            testing::drain_frames(tx(port)).is_empty(),
            "p{port}: extra frames"
        );
    }
    assert!(ctl.upcalls.try_recv().is_err(), "no other upcall");
    assert_eq!(stats.upcalls.get(), 1);
    ctl.check_drops();
    drop(ctl);
    dp.stop();
    drop(rings);
    assert_eq!(pool.in_use(), 0, "no mbuf leaked");
    drop(pool);
    eal.cleanup().expect("EAL cleanup");
}

/// What identifies a frame's inner flow in these tests: the inner frame's
/// MAC addresses, IPv4 addresses and UDP ports (every inner frame is
/// trafgen's Ethernet + IPv4 + UDP, its payload the sequence number).
fn flow_id(f: &[u8]) -> Vec<u8> {
    let inner = inner_of(f);
    let mut id = inner[..12].to_vec();
    id.extend_from_slice(&inner[26..38]);
    id
}

/// The inner frame of an outer frame built by these tests (or the frame).
fn inner_of(f: &[u8]) -> &[u8] {
    let mut off = 0;
    if f[12..14] == [0x81, 0x00] {
        off = 4;
    }
    if f[12 + off..14 + off] != [0x08, 0x00] {
        return f;
    }
    let ip = 14 + off;
    match f[ip + 9] {
        17 if f[ip + 22..ip + 24] == [0x12, 0xb5] => &f[ip + 36..],
        17 if f[ip + 22..ip + 24] == [0x17, 0xc1] => {
            let opts = usize::from(f[ip + 28] & 0x3f) * 4;
            &f[ip + 36 + opts..]
        }
        47 => {
            let flags = u16::from_be_bytes([f[ip + 20], f[ip + 21]]);
            let mut len = 4;
            if flags & 0x8000 != 0 {
                len += 4;
            }
            if flags & 0x2000 != 0 {
                len += 4;
            }
            &f[ip + 20 + len..]
        }
        _ => f,
    }
}

/// Frames by flow equal to the reference's, each flow in order; on a
/// difference, the first differing frame of a flow in hex.
fn same_frames(
    got: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    want: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    what: &str,
) {
    let hex = |f: &[u8]| f.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(got.len(), want.len(), "{what}: flows");
    for (flow, w) in &want {
        let g = got.get(flow).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(g.len(), w.len(), "{what}: frames of flow {}", hex(flow));
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert!(
                a == b,
                "{what}: flow {} frame {i}\n got {}\nwant {}",
                hex(flow),
                hex(a),
                hex(b)
            );
        }
    }
}
