//! Patch ports through the whole datapath on DPDK net_ring ports: the real PMD
//! (flow cache, upcalls), the real slow path (`mgmt::ofproto`, its upcall and
//! revalidator threads) and the real glue (`ferroswitch::slowpath`).
//!
//! Neutron's layout (seeds 001, 003, 004): br-int (`NORMAL`, the VM's port vm1
//! an access port of VLAN 1) joined by patch-tun/patch-int to br-tun, which
//! runs the Neutron fixture's tables (testdata/neutron-br-tun.dump-flows).
//! The tunnels are stubbed by ordinary ports gre2 and gre3 (OpenFlow 2 and 3
//! as in the fixture) until the tunnel issue: a flow per stub sets the
//! network's tunnel id that decapsulation will give, then goes on in the
//! fixture's table 2. Datapath ports: vm1 0, gre2 1, gre3 2; the patch ports
//! have none.
//!
//! 1. The VM's broadcast ARP request leaves exactly on gre3 and gre2 (br-tun's
//!    table 21 floods it to the tunnels), unchanged.
//! 2. The remote host's ARP reply from gre2 reaches the VM on vm1, unchanged;
//!    br-tun learns the remote MAC's tunnel, br-int the MAC on patch-tun.
//! 3. The VM's unicast to the remote host leaves on gre2 only.
//! 4. 30 frames each way: same ports, in order, no further upcall. One upcall
//!    per flow in all.
//!
//! One test per file: EAL initialises once per process.

use std::sync::Arc;

use dpdk_ffi::Mempool;
use ferroswitch::slowpath::SlowPath;
use mgmt::ofproto::{Bridge, BridgePort, OfprotoConfig};
use pipeline::ofproto::normal::VlanMode;
use pipeline::ofproto::syntax::{parse_dump_line, parse_flow, PortMap};
use pipeline::trafgen::{udp_frame, UdpFlow};
use pmd::{testing, Datapath, DropReason, FlowSpec};

const FIXTURE: &str = include_str!("../testdata/neutron-br-tun.dump-flows");

const VM: [u8; 6] = [0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56];
const REMOTE: [u8; 6] = [0xfa, 0x16, 0x3e, 0x65, 0x43, 0x21];

const VM_TO_REMOTE: UdpFlow = UdpFlow {
    dl_src: VM,
    dl_dst: REMOTE,
    nw_src: [10, 0, 0, 1],
    nw_dst: [10, 0, 0, 2],
    tp_src: 5000,
    tp_dst: 6000,
};
const REMOTE_TO_VM: UdpFlow = UdpFlow {
    dl_src: REMOTE,
    dl_dst: VM,
    nw_src: [10, 0, 0, 2],
    nw_dst: [10, 0, 0, 1],
    tp_src: 6000,
    tp_dst: 5000,
};

/// An Ethernet ARP frame (padded to 60 bytes): `op` 1 request, 2 reply.
fn arp(op: u16, src: [u8; 6], dst: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&src);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa);
    f.resize(60, 0);
    f
}

fn bridges() -> Vec<Bridge> {
    let mut br_int = Bridge::new(
        "br-int",
        vec![BridgePort {
            name: "vm1".into(),
            ofport: 1,
            odp: 0,
        }],
    );
    br_int.add_patch("patch-tun", 2, "patch-int");
    br_int
        .set_vlan_mode("vm1", VlanMode::Access { tag: 1 })
        .unwrap();

    let mut br_tun = Bridge::new(
        "br-tun",
        vec![
            BridgePort {
                name: "gre2".into(),
                ofport: 2,
                odp: 1,
            },
            BridgePort {
                name: "gre3".into(),
                ofport: 3,
                odp: 2,
            },
        ],
    );
    br_tun.add_patch("patch-int", 1, "patch-tun");
    let mut fms: Vec<_> = FIXTURE
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_dump_line(l, &PortMap::new()).unwrap())
        .collect();
    // The tunnel stubs: what decapsulation will set, then the fixture's
    // "from a tunnel" path.
    for p in [2, 3] {
        fms.push(
            parse_flow(
                &format!("priority=2,in_port={p} actions=set_tunnel:0x1388,resubmit(,2)"),
                &PortMap::new(),
            )
            .unwrap(),
        );
    }
    br_tun.tables.add_flows(fms, 0).unwrap();
    vec![br_int, br_tun]
}

#[test]
fn patch_ports_join_br_int_and_br_tun_in_the_datapath() {
    let eal = testing::eal("patch_datapath");
    let pool = Arc::new(Mempool::pktmbuf("patch_pool", 4095, 64, 2048 + 128).expect("mempool"));
    let (rings, mut ports) = testing::ring_ports("pp", 3, 1024, &pool);
    for (i, (spec, _)) in ports.iter_mut().enumerate() {
        let (bridge, name, ofport) = [
            ("br-int", "vm1", 1),
            ("br-tun", "gre2", 2),
            ("br-tun", "gre3", 3),
        ][i];
        spec.bridge = bridge.into();
        spec.name = name.into();
        spec.ofport = ofport;
    }
    // Port i: rx ring 2i (the test sends), tx ring 2i+1 (the test drains).
    let (rx_vm, rx_gre2) = (&rings[0], &rings[2]);
    let (tx_vm, tx_gre2, tx_gre3) = (&rings[1], &rings[3], &rings[5]);
    let dspec = testing::spec(&ports, vec![], Some(FlowSpec::default()));
    let mut dp = Datapath::start_with_ports(&dspec, ports, pool.clone()).expect("datapath");
    let stats = dp.pmds()[0].stats.clone();
    let slow =
        SlowPath::start(&mut dp, bridges(), OfprotoConfig::default()).expect("slow path threads");
    let ofproto = slow.ofproto.clone();
    let tx = |port: usize| dp.port_totals(port).tx_packets;

    // --- 1. the VM's broadcast: to both tunnels -------------------------------
    let request = arp(1, VM, [0xff; 6], [10, 0, 0, 1], [0; 6], [10, 0, 0, 2]);
    testing::send_frames(rx_vm, &pool, std::slice::from_ref(&request));
    testing::wait_for("the flood to the tunnels", &stats, || {
        tx(1) >= 1 && tx(2) >= 1
    });
    assert_eq!(
        testing::drain_frames(tx_gre3),
        std::slice::from_ref(&request),
        "gre3"
    );
    assert_eq!(
        testing::drain_frames(tx_gre2),
        std::slice::from_ref(&request),
        "gre2"
    );
    assert_eq!(
        testing::drain_frames(tx_vm),
        Vec::<Vec<u8>>::new(),
        "not back to the VM"
    );

    // --- 2. the reply from gre2: to the VM ------------------------------------
    let reply = arp(2, REMOTE, VM, [10, 0, 0, 2], VM, [10, 0, 0, 1]);
    testing::send_frames(rx_gre2, &pool, std::slice::from_ref(&reply));
    testing::wait_for("the reply to the VM", &stats, || tx(0) >= 1);
    // The reply left inside the upcall's batch; taking the lock waits for the
    // rest of it (revalidation after what it learned).
    drop(ofproto.lock().expect("slow path"));
    assert_eq!(
        testing::drain_frames(tx_vm),
        [reply],
        "vm1: the reply, unchanged"
    );
    assert_eq!(stats.upcalls.get(), 2);

    // --- 3. unicast from the VM: the learned tunnel only ----------------------
    let first = udp_frame(&VM_TO_REMOTE, 100, 0);
    testing::send_frames(rx_vm, &pool, std::slice::from_ref(&first));
    testing::wait_for("the unicast to gre2", &stats, || tx(1) >= 2);
    drop(ofproto.lock().expect("slow path"));
    assert_eq!(
        testing::drain_frames(tx_gre2),
        [first],
        "gre2: the frame, unchanged"
    );
    assert_eq!(stats.upcalls.get(), 3);

    // --- 4. both ways, no more upcalls except the remote's first UDP frame ----
    let back = udp_frame(&REMOTE_TO_VM, 100, 0);
    testing::send_frames(rx_gre2, &pool, std::slice::from_ref(&back));
    testing::wait_for("the remote's first UDP frame", &stats, || tx(0) >= 2);
    drop(ofproto.lock().expect("slow path"));
    assert_eq!(
        testing::drain_frames(tx_vm),
        [back],
        "vm1: the frame, unchanged"
    );
    assert_eq!(stats.upcalls.get(), 4, "one upcall per flow");

    let n = 30u8;
    let (mut out, mut inn) = (Vec::new(), Vec::new());
    for s in 1..=n {
        let o = udp_frame(&VM_TO_REMOTE, 64 + usize::from(s), s);
        let i = udp_frame(&REMOTE_TO_VM, 64 + usize::from(s), s);
        testing::send_frames(rx_vm, &pool, std::slice::from_ref(&o));
        testing::send_frames(rx_gre2, &pool, std::slice::from_ref(&i));
        out.push(o);
        inn.push(i);
    }
    let want_gre2 = 2 + u64::from(n);
    let want_vm = 2 + u64::from(n);
    testing::wait_for("the unicast frames", &stats, || {
        tx(1) >= want_gre2 && tx(0) >= want_vm
    });
    assert_eq!(
        testing::drain_frames(tx_gre2),
        out,
        "VM -> remote: gre2 only, in order"
    );
    assert_eq!(
        testing::drain_frames(tx_vm),
        inn,
        "remote -> VM: vm1 only, in order"
    );
    assert_eq!(
        testing::drain_frames(tx_gre3),
        Vec::<Vec<u8>>::new(),
        "nothing more on gre3"
    );
    assert_eq!(tx(2), 1, "gre3 saw only the broadcast");
    assert_eq!(
        stats.upcalls.get(),
        4,
        "the megaflows carried everything else"
    );
    for r in DropReason::ALL {
        assert_eq!(stats.drops[r.index()].get(), 0, "drops {}", r.as_str());
    }

    {
        let mut o = ofproto.lock().expect("slow path");
        // br-int learned both MACs, the remote one on its patch port (2).
        let fdb = o.fdb_show("br-int").expect("fdb-show");
        let rows: Vec<Vec<&str>> = fdb
            .lines()
            .map(|l| l.split_whitespace().take(3).collect())
            .collect();
        assert_eq!(
            rows,
            [
                ["port", "VLAN", "MAC"],
                ["1", "1", "fa:16:3e:12:34:56"],
                ["2", "1", "fa:16:3e:65:43:21"],
            ],
            "{fdb}"
        );
        // br-tun's learned rule sends the remote MAC to gre2, and counted
        // the 31 UDP frames the VM sent (the ARP reply and the UDP replies
        // never went through table 20).
        let learned = o
            .dump_flows("br-tun", Some("table=20,dl_dst=fa:16:3e:65:43:21"), false)
            .expect("dump-flows");
        assert!(
            learned.contains(" n_packets=31, ")
                && learned.ends_with(" priority=1,vlan_tci=0x0001/0x0fff,dl_dst=fa:16:3e:65:43:21 actions=load:0->NXM_OF_VLAN_TCI[],load:0x1388->NXM_NX_TUN_ID[],output:2\n"),
            "{learned}"
        );
    }

    slow.stop();
    drop(ofproto);
    drop(dp);
    drop(rings);
    assert_eq!(pool.in_use(), 0, "no mbuf leaked");
    drop(pool);
    eal.cleanup().expect("EAL cleanup");
}
