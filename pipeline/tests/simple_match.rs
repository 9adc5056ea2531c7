//! The simple-match path against the full one: for random megaflow sets (simple
//! and not, exact and wild in_port) and random frames, wherever the flow cache says
//! a port is simple, `parse_simple` + `simple_lookup` finds a megaflow exactly when
//! parse + the EMC/classifier lookup does, and the megaflow it finds matches the
//! packet's full key.

use std::collections::HashMap;
use std::sync::Arc;

use pipeline::flow_cache::{FlowCache, FlowRef, Hit};
use pipeline::flow_key::{ETH_TYPE_ARP, ETH_TYPE_IPV4};
use pipeline::simple_match::{
    end_key, is_simple, is_simple_end, is_simple_mac, mac_pair, parse_simple_end, SimpleMode,
};
use pipeline::{parse, parse_simple, FlowKey, ParseError};
use proptest::prelude::*;

/// A frame: optional VLAN tag, then IPv4/UDP (with fragment bits) or ARP or a
/// made-up ethertype.
#[derive(Clone, Debug)]
struct Frame {
    vid: Option<u16>,
    kind: u8,
    /// IPv4 TOS byte.
    tos: u8,
    frag: u16,
    dst: u8,
    /// Ethernet source and destination, each one of three addresses.
    macs: (u8, u8),
}

fn frame() -> impl Strategy<Value = Frame> {
    (
        prop_oneof![Just(None), (1u16..4).prop_map(Some)],
        0u8..3,
        prop_oneof![Just(0u16), Just(0x2000), Just(0x0005)],
        0u8..3,
        (0u8..3, 0u8..3),
        prop_oneof![Just(0u8), Just(1), Just(3), Just(0xb8)],
    )
        .prop_map(|(vid, kind, frag, dst, macs, tos)| Frame {
            vid,
            kind,
            tos,
            frag,
            dst,
            macs,
        })
}

fn bytes(f: &Frame) -> Vec<u8> {
    let mut b = vec![0x02, 0, 0, 0, 0x10, f.macs.1, 0x02, 0, 0, 0, 0x20, f.macs.0];
    if let Some(v) = f.vid {
        b.extend_from_slice(&[0x81, 0x00]);
        b.extend_from_slice(&v.to_be_bytes());
    }
    match f.kind {
        0 => {
            b.extend_from_slice(&ETH_TYPE_IPV4.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[1] = f.tos;
            ip[2..4].copy_from_slice(&28u16.to_be_bytes());
            ip[6..8].copy_from_slice(&f.frag.to_be_bytes());
            ip[8] = 64;
            ip[9] = 17;
            ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
            ip[16..20].copy_from_slice(&[10, 0, 0, f.dst]);
            b.extend_from_slice(&ip);
            b.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        }
        1 => {
            b.extend_from_slice(&ETH_TYPE_ARP.to_be_bytes());
            b.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            b.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 10, 0, 0, 1]);
            b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, f.dst]);
        }
        _ => {
            b.extend_from_slice(&[0x88, 0xb5]);
            b.extend_from_slice(&[f.dst; 46]);
        }
    }
    b
}

/// Mask shapes: four simple ones, one that reads nw_dst, one with in_port
/// wild, and a tunnel push's (simple: the ECN bits and the input's tunnel
/// destination, which a fresh packet has as 0).
fn mask(shape: u8) -> FlowKey {
    let mut m = FlowKey {
        in_port: u32::MAX,
        recirc_id: u32::MAX,
        dl_type: u16::MAX,
        ..FlowKey::default()
    };
    match shape {
        0 => {}
        1 => m.nw_frag = 3,
        2 => m.vlan_tci[0] = 0x1fff,
        3 => {
            m.vlan_tci[0] = 0xffff;
            m.nw_frag = 1;
        }
        4 => m.nw_dst = u32::MAX,
        6 => {
            m.nw_tos = 3;
            m.tun_dst = u32::MAX;
            m.nw_frag = 3;
        }
        _ => m.in_port = 0,
    }
    m
}

/// Mask shapes with MACs: simple ones and simple MAC ones (as `NORMAL` makes:
/// both addresses, the outer TCI, the fragment bits), one with only `dl_dst`,
/// one that also reads `nw_dst`, one with in_port wild.
fn mac_mask(shape: u8) -> FlowKey {
    if shape < 4 {
        return mask(shape);
    }
    let mut m = mask(0);
    m.dl_src = [0xff; 6];
    m.dl_dst = [0xff; 6];
    match shape {
        4 => {}
        5 => {
            m.vlan_tci[0] = 0xffff;
            m.nw_frag = 3;
        }
        6 => m.vlan_tci[0] = 0x1fff,
        7 => m.dl_src = [0; 6],
        8 => m.nw_dst = u32::MAX,
        _ => m.in_port = 0,
    }
    m
}

/// A flow cache with, for each `(mask, port, frame)`, the megaflow of the
/// frame's key (received on `port`) under `mask` installed, then those at
/// `removals` (indices into them) removed; and the live megaflows by handle.
fn cache_with(
    flows: impl Iterator<Item = (FlowKey, u32, Vec<u8>)>,
    removals: &[usize],
) -> (FlowCache<u32>, HashMap<FlowRef, (FlowKey, FlowKey)>) {
    let mut c: FlowCache<u32> = FlowCache::new(64, 1);
    let mut installed: HashMap<FlowRef, (FlowKey, FlowKey)> = HashMap::new();
    let mut order = Vec::new();
    for (m, port, frame) in flows {
        let mut k = FlowKey::default();
        parse(&frame, port, &mut k);
        let r = c.install(&m, &k, Arc::new(0), Arc::default());
        installed.retain(|_, (im, ik)| !(*im == m && *ik == k.masked(&m)));
        installed.insert(r, (m, k.masked(&m)));
        order.push((m, k));
    }
    for &i in removals {
        if let Some((m, k)) = order.get(i) {
            if let Some(_gone) = c.remove(m, k) {
                installed.retain(|_, (im, ik)| !(im == m && *ik == k.masked(m)));
            }
        }
    }
    (c, installed)
}

/// The full path's answer for `data` received on `port`: the parser's
/// complaint, the key, the hit.
fn full_lookup(
    c: &mut FlowCache<u32>,
    data: &[u8],
    port: u32,
) -> (Option<ParseError>, FlowKey, Hit) {
    let mut key = FlowKey::default();
    let err = parse(data, port, &mut key);
    let mut hits = [Hit::Miss];
    c.lookup_burst(
        std::slice::from_ref(&key),
        &[FlowCache::<u32>::hash(&key)],
        &mut hits,
    );
    (err, key, hits[0])
}

proptest! {
    #[test]
    fn simple_path_equals_full_path(
        flows in prop::collection::vec((0u8..7, 1u32..3, frame()), 0..12),
        removals in prop::collection::vec(0usize..12, 0..4),
        packets in prop::collection::vec((1u32..3, frame()), 1..40),
    ) {
        let (mut c, installed) = cache_with(
            flows.iter().map(|(shape, port, f)| (mask(*shape), *port, bytes(f))),
            &removals,
        );
        for (port, f) in &packets {
            let data = bytes(f);
            let (err, key, hit) = full_lookup(&mut c, &data, *port);
            prop_assert_eq!(err, None);
            let full = !matches!(hit, Hit::Miss);
            if !c.simple_enabled(*port) {
                // Not simple: some megaflow that may match this port is not.
                let blocker = installed
                    .values()
                    .any(|(m, k)| !is_simple(m, k) && (m.in_port == 0 || k.in_port == *port));
                let none = !installed
                    .values()
                    .any(|(m, k)| m.in_port == u32::MAX && k.in_port == *port);
                prop_assert!(blocker || none, "port {} could be simple", port);
                continue;
            }
            let sk = parse_simple(&data).expect("these frames all take the simple reader");
            let got = c.simple_lookup(*port, &sk);
            prop_assert_eq!(got.is_some(), full, "simple {:?} vs full {:?}", got, hit);
            if let Some(r) = got {
                let (m, k) = installed.get(&r).expect("a live megaflow");
                prop_assert_eq!(key.masked(m), *k);
            }
        }
    }
}

proptest! {
    #[test]
    fn simple_mac_path_equals_full_path(
        flows in prop::collection::vec((0u8..10, 1u32..3, frame()), 0..16),
        removals in prop::collection::vec(0usize..16, 0..6),
        packets in prop::collection::vec((1u32..3, frame()), 1..40),
    ) {
        let (mut c, installed) = cache_with(
            flows.iter().map(|(shape, port, f)| (mac_mask(*shape), *port, bytes(f))),
            &removals,
        );
        for (port, f) in &packets {
            let data = bytes(f);
            let (err, key, hit) = full_lookup(&mut c, &data, *port);
            prop_assert_eq!(err, None);
            let full = !matches!(hit, Hit::Miss);
            let has_mac = installed
                .values()
                .any(|(m, k)| is_simple_mac(m, k) && k.in_port == *port);
            let want_mode = match (c.simple_enabled(*port), has_mac) {
                (false, _) => SimpleMode::Off,
                (true, false) => SimpleMode::Plain,
                (true, true) => SimpleMode::Mac,
            };
            prop_assert_eq!(c.simple_mode(*port), want_mode);
            if !c.simple_enabled(*port) {
                let blocker = installed.values().any(|(m, k)| {
                    !is_simple(m, k) && !is_simple_mac(m, k)
                        && (m.in_port == 0 || k.in_port == *port)
                });
                let none = !installed
                    .values()
                    .any(|(m, k)| m.in_port == u32::MAX && k.in_port == *port);
                prop_assert!(blocker || none, "port {} could be simple", port);
                continue;
            }
            let sk = parse_simple(&data).expect("these frames all take the simple reader");
            let macs = mac_pair(&data).expect("a frame has its addresses");
            let got = c.simple_lookup_mac(*port, macs, &sk);
            prop_assert_eq!(got.is_some(), full, "simple {:?} vs full {:?}", got, hit);
            if let Some(r) = got {
                let (m, k) = installed.get(&r).expect("a live megaflow");
                prop_assert_eq!(key.masked(m), *k);
            }
            // Without MAC megaflows on the port, the plain lookup says the same.
            if !has_mac {
                prop_assert_eq!(c.simple_lookup(*port, &sk), got);
            }
        }
    }
}

/// Mask shapes with destinations: simple ones, a tunnel endpoint's (as a
/// bridge pops VXLAN: `dl_dst`, `nw_dst`, `nw_proto`, `tp_dst`, the outer TCI's
/// CFI bit, the fragment bits), a GRE endpoint's (no `tp_dst`), a simple MAC
/// one, one with only part of `tp_dst`, one with in_port wild.
fn end_mask(shape: u8) -> FlowKey {
    if shape < 3 {
        return mask(shape);
    }
    let mut m = mask(1);
    m.dl_dst = [0xff; 6];
    m.nw_dst = u32::MAX;
    m.nw_proto = u8::MAX;
    match shape {
        3 => {
            m.tp_dst = u16::MAX;
            m.vlan_tci[0] = 0x1000;
        }
        4 => {}
        5 => return mac_mask(5),
        6 => m.tp_dst = 0xff00,
        _ => {
            m.tp_dst = u16::MAX;
            m.in_port = 0;
        }
    }
    m
}

/// [`bytes`] with the IPv4 packet's protocol (UDP or GRE) and UDP
/// destination port chosen.
fn end_bytes(f: &Frame, gre: bool, dport: u16) -> Vec<u8> {
    let mut b = bytes(f);
    if f.kind == 0 {
        let l3 = if f.vid.is_some() { 18 } else { 14 };
        if gre {
            b[l3 + 9] = 47;
        }
        b[l3 + 22..l3 + 24].copy_from_slice(&dport.to_be_bytes());
    }
    b
}

proptest! {
    #[test]
    fn simple_end_path_equals_full_path(
        flows in prop::collection::vec(
            (0u8..8, 1u32..3, frame(), any::<bool>(), prop_oneof![Just(4789u16), Just(6081)]),
            0..12,
        ),
        removals in prop::collection::vec(0usize..12, 0..4),
        packets in prop::collection::vec(
            (1u32..3, frame(), any::<bool>(), prop_oneof![Just(4789u16), Just(6081), Just(2)]),
            1..40,
        ),
    ) {
        let (mut c, installed) = cache_with(
            flows.iter().map(|(shape, port, f, gre, dport)| (end_mask(*shape), *port, end_bytes(f, *gre, *dport))),
            &removals,
        );
        for (port, f, gre, dport) in &packets {
            let data = end_bytes(f, *gre, *dport);
            let (err, key, hit) = full_lookup(&mut c, &data, *port);
            prop_assert_eq!(err, None);
            let full = !matches!(hit, Hit::Miss);
            let has_end = installed
                .values()
                .any(|(m, k)| is_simple_end(m, k) && k.in_port == *port);
            if !c.simple_enabled(*port) {
                let blocker = installed.values().any(|(m, k)| {
                    !is_simple(m, k) && !is_simple_mac(m, k) && !is_simple_end(m, k)
                        && (m.in_port == 0 || k.in_port == *port)
                });
                let none = !installed
                    .values()
                    .any(|(m, k)| m.in_port == u32::MAX && k.in_port == *port);
                prop_assert!(blocker || none, "port {} could be simple", port);
                continue;
            }
            prop_assert_eq!(c.simple_mode(*port) == SimpleMode::End, has_end);
            let sk = parse_simple(&data).expect("these frames all take the simple reader");
            let macs = mac_pair(&data).expect("a frame has its addresses");
            let end = end_key(&data, &sk).expect("a frame the simple reader took");
            prop_assert_eq!(parse_simple_end(&data), Some((sk, end)));
            let got = c.simple_port(*port).lookup_end(macs, end, &sk);
            prop_assert_eq!(got.is_some(), full, "simple {:?} vs full {:?}", got, hit);
            if let Some(r) = got {
                let (m, k) = installed.get(&r).expect("a live megaflow");
                prop_assert_eq!(key.masked(m), *k);
            }
        }
    }
}

/// Many simple MAC megaflows on one port (the table grows and shrinks through
/// several sizes; removal shifts clusters back): every installed one is found
/// by its packet, every removed one is gone, and the port stays simple.
#[test]
fn mac_table_grows_and_shrinks_exactly() {
    let mut c: FlowCache<u32> = FlowCache::new(64, 1);
    let m = mac_mask(5);
    let frame_of = |i: u16| {
        let f = Frame {
            vid: None,
            kind: 0,
            tos: 0,
            frag: 0,
            dst: 1,
            macs: (0, 0),
        };
        let mut b = bytes(&f);
        b[4..6].copy_from_slice(&(i % 7).to_be_bytes());
        b[10..12].copy_from_slice(&i.to_be_bytes());
        b
    };
    let key_of = |i: u16| {
        let mut k = FlowKey::default();
        parse(&frame_of(i), 1, &mut k);
        k
    };
    let mut refs = HashMap::new();
    for i in 0..1000u16 {
        refs.insert(i, c.install(&m, &key_of(i), Arc::new(0), Arc::default()));
    }
    assert!(c.simple_enabled(1));
    let look = |c: &FlowCache<u32>, i: u16| {
        let d = frame_of(i);
        c.simple_lookup_mac(1, mac_pair(&d).unwrap(), &parse_simple(&d).unwrap())
    };
    for i in 0..1000u16 {
        assert_eq!(look(&c, i), Some(refs[&i]), "flow {i}");
    }
    for i in (0..1000u16).filter(|i| i % 3 != 0) {
        assert!(c.remove(&m, &key_of(i)).is_some());
    }
    for i in 0..1000u16 {
        let want = (i % 3 == 0).then(|| refs[&i]);
        assert_eq!(look(&c, i), want, "flow {i} after removals");
    }
    for i in (0..1000u16).filter(|i| i % 3 == 0) {
        assert!(c.remove(&m, &key_of(i)).is_some());
    }
    assert!(!c.simple_enabled(1), "no megaflow left");
    assert_eq!(look(&c, 0), None);
}
