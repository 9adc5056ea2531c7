//! Tunnel push and pop over byte buffers: round trips byte for byte, every
//! reason a pop refuses a packet, the inner flow hash against the parser, the
//! reference executors, and tcpdump as an independent decoder of the wire
//! format.

use std::net::Ipv4Addr;
use std::sync::Arc;

use pipeline::actions::{
    execute, execute_on_key, execute_with_ports, DpAction, Emitted, TunnelMeta,
};
use pipeline::flow_key::{ETH_TYPE_VLAN_8021Q, VLAN_CFI};
use pipeline::parse;
use pipeline::tun_metadata::{TlvMap, TlvMapping, TunMd};
use pipeline::tunnel::{
    finish_push, inner_flow_hash, inner_flow_hash_key, pop, push, udp_src_port, PopError,
    TunnelHeader, TunnelKind, TunnelPortInfo, TunnelSpec, FLOW_TNL_F_CSUM,
    FLOW_TNL_F_DONT_FRAGMENT, FLOW_TNL_F_KEY, FLOW_TNL_F_OAM, UDP_SRC_MAX, UDP_SRC_MIN,
};
use pipeline::FlowKey;
use proptest::prelude::*;

const SRC: [u8; 4] = [172, 168, 1, 1];
const DST: [u8; 4] = [172, 168, 1, 2];
const GENEVE_OPTS: [u8; 8] = [0x01, 0x02, 0x80, 0x01, 0xde, 0xad, 0xbe, 0xef];

fn spec(kind: TunnelKind, key: Option<u64>, csum: bool) -> TunnelSpec {
    TunnelSpec {
        kind,
        eth_src: [0x02, 0, 0, 0, 0, 0x01],
        eth_dst: [0x02, 0, 0, 0, 0, 0x02],
        ip_src: u32::from(Ipv4Addr::from(SRC)),
        ip_dst: u32::from(Ipv4Addr::from(DST)),
        tos: 0,
        ttl: 64,
        df: true,
        dst_port: kind.default_port(),
        key,
        csum,
        geneve_opts: if kind == TunnelKind::Geneve {
            GENEVE_OPTS.to_vec()
        } else {
            Vec::new()
        },
    }
}

fn header(kind: TunnelKind, key: Option<u64>, csum: bool) -> TunnelHeader {
    TunnelHeader::new(spec(kind, key, csum), 7, 1).expect("header")
}

/// An inner UDP frame; `sport` tells flows apart.
fn inner_udp(sport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2([0xfa, 0x16, 0x3e, 0, 0, 1], [0xfa, 0x16, 0x3e, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(sport, 2000)
        .write(&mut out, payload)
        .expect("frame");
    out
}

fn port(kind: TunnelKind) -> TunnelPortInfo {
    TunnelPortInfo::default_for(kind)
}

/// RFC 1071 checksum, written independently of the crate's (16 bits at a time).
fn rfc1071(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Rewrites the outer IPv4 header checksum (IPv4 at `l3`) after a test
/// corrupted another field.
fn fix_ip_csum(f: &mut [u8], l3: usize) {
    let ihl = usize::from(f[l3] & 0x0f) * 4;
    f[l3 + 10] = 0;
    f[l3 + 11] = 0;
    let c = rfc1071(&f[l3..l3 + ihl]);
    f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// Every header shape: (kind, key, csum).
fn shapes() -> Vec<(TunnelKind, Option<u64>, bool)> {
    vec![
        (TunnelKind::Vxlan, Some(0x7b), false),
        (TunnelKind::Vxlan, Some(0xff_ffff), true),
        (TunnelKind::Vxlan, None, false),
        (TunnelKind::Gre, None, false),
        (TunnelKind::Gre, Some(0x1234_5678), false),
        (TunnelKind::Gre, Some(5), true),
        (TunnelKind::Gre, None, true),
        (TunnelKind::Geneve, Some(0x7b), false),
        (TunnelKind::Geneve, Some(1), true),
    ]
}

/// Checks the per-packet fields of a pushed frame against independent
/// computations (etherparse for IPv4 and UDP, RFC 1071 for GRE).
fn check_outer(f: &[u8], h: &TunnelHeader, inner: &[u8], hash: u32) {
    let hl = h.len();
    assert_eq!(&f[hl..], inner, "inner frame intact");
    // Everything but the per-packet fields is the prebuilt header.
    let mut fixed = f[..hl].to_vec();
    for r in [16..18, 24..26] {
        fixed[r].fill(0);
    }
    if h.spec.kind.is_udp() {
        fixed[34..36].fill(0);
        fixed[38..42].fill(0);
    } else if h.spec.csum {
        fixed[38..40].fill(0);
    }
    assert_eq!(fixed, h.bytes(), "header bytes");
    let (ip, rest) = etherparse::Ipv4Header::from_slice(&f[14..]).expect("outer ipv4");
    assert_eq!(usize::from(ip.total_len), f.len() - 14);
    assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "ipv4 csum");
    assert_eq!(ip.dont_fragment, h.spec.df);
    if h.spec.kind.is_udp() {
        let (udp, payload) = etherparse::UdpHeader::from_slice(rest).expect("udp");
        assert_eq!(udp.source_port, udp_src_port(hash));
        assert_eq!(udp.destination_port, h.spec.dst_port);
        assert_eq!(usize::from(udp.length), rest.len());
        if h.spec.csum {
            assert_eq!(
                udp.checksum,
                udp.calc_checksum_ipv4(&ip, payload).expect("csum"),
                "udp csum"
            );
        } else {
            assert_eq!(udp.checksum, 0);
        }
    } else if h.spec.csum {
        assert_eq!(rfc1071(rest), 0, "gre csum verifies to zero");
        assert_ne!(&rest[4..6], &[0, 0]);
    }
}

#[test]
fn push_then_pop_round_trips() {
    for (kind, key, csum) in shapes() {
        let h = header(kind, key, csum);
        for (i, payload) in [&b"x"[..], b"hello world", &[0xa5; 1400]]
            .iter()
            .enumerate()
        {
            let inner = inner_udp(1000 + i as u16, payload);
            let hash = inner_flow_hash(&inner);
            let mut f = inner.clone();
            assert!(push(&mut f, &h, hash));
            check_outer(&f, &h, &inner, hash);
            let p = pop(&f, port(kind)).unwrap_or_else(|e| panic!("{kind:?} {key:?} {csum}: {e}"));
            assert_eq!(&f[p.inner()], &inner[..], "{kind:?}");
            assert_eq!(p.hlen, h.len());
            let mut flags = FLOW_TNL_F_DONT_FRAGMENT;
            if kind != TunnelKind::Gre || key.is_some() {
                flags |= FLOW_TNL_F_KEY;
            }
            if csum {
                flags |= FLOW_TNL_F_CSUM;
            }
            assert_eq!(
                p.meta,
                TunnelMeta {
                    tun_id: key.unwrap_or(0),
                    src: u32::from(Ipv4Addr::from(SRC)),
                    dst: u32::from(Ipv4Addr::from(DST)),
                    flags,
                },
                "{kind:?} {key:?} {csum}"
            );
            if kind == TunnelKind::Geneve {
                let (at, len) = p.geneve_opts;
                assert_eq!(&f[usize::from(at)..][..usize::from(len)], &GENEVE_OPTS);
            }
        }
    }
}

#[test]
fn push_fills_only_per_packet_fields_in_place() {
    // finish_push over a buffer the caller laid out (as the datapath does in
    // the mbuf's headroom), with stale bytes in the per-packet fields.
    let h = header(TunnelKind::Vxlan, Some(9), true);
    let inner = inner_udp(5, b"abc");
    let mut buf = vec![0xee; h.len()];
    buf.copy_from_slice(h.bytes());
    buf[16] = 0xff; // stale total length
    buf[40] = 0x12; // stale UDP checksum
    buf.extend_from_slice(&inner);
    assert!(finish_push(&mut buf, &h, 77));
    check_outer(&buf, &h, &inner, 77);
    // Shorter than the header: nothing written.
    let mut short = h.bytes()[..20].to_vec();
    assert!(!finish_push(&mut short, &h, 1));
    assert_eq!(short, &h.bytes()[..20]);
    // An outer packet past 65535 bytes of IPv4 is refused.
    let mut huge = vec![0u8; 70_000];
    huge[..h.len()].copy_from_slice(h.bytes());
    assert!(!finish_push(&mut huge, &h, 1));
    let mut inner_huge = vec![0u8; 65_500];
    assert!(!push(&mut inner_huge, &h, 1));
    assert_eq!(inner_huge.len(), 65_500);
}

#[test]
fn pop_takes_vlan_tag_ip_options_and_padding() {
    let h = header(TunnelKind::Vxlan, Some(42), true);
    let inner = inner_udp(1, b"payload");
    let mut f = inner.clone();
    assert!(push(&mut f, &h, 3));
    // One 802.1Q tag on the outer frame.
    let mut tagged = f.clone();
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x0a]);
    let p = pop(&tagged, port(TunnelKind::Vxlan)).expect("tagged");
    assert_eq!(p.hlen, h.len() + 4);
    assert_eq!(&tagged[p.inner()], &inner[..]);
    // IPv4 options (8 bytes of NOPs and an end): IHL 7.
    let mut opts = f.clone();
    opts.splice(34..34, [1, 1, 1, 1, 1, 1, 1, 0]);
    opts[14] = 0x47;
    let tot = u16::from_be_bytes([opts[16], opts[17]]) + 8;
    opts[16..18].copy_from_slice(&tot.to_be_bytes());
    fix_ip_csum(&mut opts, 14);
    let p = pop(&opts, port(TunnelKind::Vxlan)).expect("options");
    assert_eq!(p.hlen, h.len() + 8);
    assert_eq!(&opts[p.inner()], &inner[..]);
    // Ethernet padding after the IPv4 packet is not part of the inner frame.
    let mut padded = f.clone();
    padded.extend_from_slice(&[0; 6]);
    let p = pop(&padded, port(TunnelKind::Vxlan)).expect("padded");
    assert_eq!(&padded[p.inner()], &inner[..]);
    assert_eq!(p.hlen + p.inner_len + 6, padded.len());
    // A GRE packet with a sequence number (RFC 2890 S bit): skipped.
    let h = header(TunnelKind::Gre, Some(3), false);
    let mut g = inner.clone();
    assert!(push(&mut g, &h, 0));
    g[34] |= 0x10;
    g.splice(42..42, [0, 0, 0, 9]);
    let tot = u16::from_be_bytes([g[16], g[17]]) + 4;
    g[16..18].copy_from_slice(&tot.to_be_bytes());
    fix_ip_csum(&mut g, 14);
    let p = pop(&g, port(TunnelKind::Gre)).expect("seq");
    assert_eq!(p.meta.tun_id, 3);
    assert_eq!(&g[p.inner()], &inner[..]);
    // Geneve's O bit is OVS's OAM flag; DF clear leaves DONT_FRAGMENT clear.
    let mut s = spec(TunnelKind::Geneve, Some(8), false);
    s.df = false;
    let h = TunnelHeader::new(s, 1, 1).expect("geneve");
    let mut o = inner.clone();
    assert!(push(&mut o, &h, 0));
    o[43] |= 0x80;
    let p = pop(&o, port(TunnelKind::Geneve)).expect("oam");
    assert_eq!(p.meta.flags, FLOW_TNL_F_KEY | FLOW_TNL_F_OAM);
    // A tunnel port on another UDP port.
    let mut s = spec(TunnelKind::Vxlan, Some(8), false);
    s.dst_port = 8472;
    let h = TunnelHeader::new(s, 1, 1).expect("vxlan 8472");
    let mut v = inner.clone();
    assert!(push(&mut v, &h, 0));
    let info = TunnelPortInfo {
        kind: TunnelKind::Vxlan,
        dst_port: 8472,
    };
    assert_eq!(&v[pop(&v, info).expect("8472").inner()], &inner[..]);
    assert_eq!(pop(&v, port(TunnelKind::Vxlan)), Err(PopError::UdpPort));
}

fn pushed(kind: TunnelKind, key: Option<u64>, csum: bool) -> Vec<u8> {
    let mut f = inner_udp(1, b"hello world");
    assert!(push(&mut f, &header(kind, key, csum), 99));
    f
}

/// Applies `edit` to a pushed frame and pops it as `kind`.
fn refused(
    kind: TunnelKind,
    key: Option<u64>,
    csum: bool,
    edit: impl FnOnce(&mut Vec<u8>),
) -> Result<(), PopError> {
    let mut f = pushed(kind, key, csum);
    edit(&mut f);
    pop(&f, port(kind)).map(|_| ())
}

#[test]
fn pop_refuses_bad_outer_headers_with_their_reason() {
    use PopError::*;
    use TunnelKind::*;
    let cases: Vec<(&str, Result<(), PopError>, PopError)> = vec![
        (
            "ipv6 ethertype",
            refused(Vxlan, Some(1), false, |f| {
                f[12..14].copy_from_slice(&[0x86, 0xdd])
            }),
            NotIpv4,
        ),
        (
            "qinq outer tag",
            refused(Vxlan, Some(1), false, |f| {
                f.splice(12..12, [0x88, 0xa8, 0, 1]);
            }),
            NotIpv4,
        ),
        (
            "ip version 6",
            refused(Vxlan, Some(1), false, |f| {
                f[14] = 0x65;
                fix_ip_csum(f, 14)
            }),
            NotIpv4,
        ),
        (
            "ihl 4",
            refused(Vxlan, Some(1), false, |f| f[14] = 0x44),
            IpLength,
        ),
        (
            "total length below header",
            refused(Vxlan, Some(1), false, |f| {
                f[16..18].copy_from_slice(&19u16.to_be_bytes());
                fix_ip_csum(f, 14)
            }),
            IpLength,
        ),
        (
            "total length past the frame",
            refused(Vxlan, Some(1), false, |f| {
                let n = f.len() as u16 - 13;
                f[16..18].copy_from_slice(&n.to_be_bytes());
                fix_ip_csum(f, 14)
            }),
            Truncated,
        ),
        (
            "ip checksum",
            refused(Gre, None, false, |f| f[25] ^= 1),
            IpChecksum,
        ),
        (
            "more fragments",
            refused(Vxlan, Some(1), false, |f| {
                f[20] |= 0x20;
                fix_ip_csum(f, 14)
            }),
            Fragment,
        ),
        (
            "fragment offset",
            refused(Gre, Some(1), false, |f| {
                f[21] = 1;
                fix_ip_csum(f, 14)
            }),
            Fragment,
        ),
        (
            "vxlan over gre port",
            {
                let f = pushed(Vxlan, Some(1), false);
                pop(&f, port(Gre)).map(|_| ())
            },
            Protocol,
        ),
        (
            "gre over vxlan port",
            {
                let f = pushed(Gre, Some(1), false);
                pop(&f, port(Vxlan)).map(|_| ())
            },
            Protocol,
        ),
        (
            "geneve on the vxlan port",
            {
                let f = pushed(Geneve, Some(1), false);
                pop(&f, port(Vxlan)).map(|_| ())
            },
            UdpPort,
        ),
        (
            "udp length",
            refused(Vxlan, Some(1), false, |f| f[39] ^= 4),
            UdpLength,
        ),
        (
            "udp checksum",
            refused(Vxlan, Some(1), true, |f| *f.last_mut().unwrap() ^= 0x40),
            UdpChecksum,
        ),
        (
            "vxlan I flag missing",
            refused(Vxlan, Some(1), false, |f| f[42] = 0),
            VxlanFlags,
        ),
        (
            "vxlan other flag",
            refused(Vxlan, Some(1), false, |f| f[42] = 0x88),
            VxlanFlags,
        ),
        (
            "vxlan reserved byte",
            refused(Vxlan, Some(1), false, |f| f[49] = 1),
            VxlanFlags,
        ),
        (
            "gre routing bit",
            refused(Gre, Some(1), false, |f| f[34] |= 0x40),
            GreHeader,
        ),
        (
            "gre version 1",
            refused(Gre, Some(1), false, |f| f[35] |= 1),
            GreHeader,
        ),
        (
            "gre protocol ipv4",
            refused(Gre, Some(1), false, |f| f[36..38].copy_from_slice(&[8, 0])),
            GreProtocol,
        ),
        (
            "gre checksum",
            refused(Gre, Some(1), true, |f| *f.last_mut().unwrap() ^= 0x40),
            GreChecksum,
        ),
        (
            "gre key past the end",
            refused(Gre, Some(1), false, |f| {
                f.truncate(42);
                f[16..18].copy_from_slice(&28u16.to_be_bytes());
                fix_ip_csum(f, 14)
            }),
            Truncated,
        ),
        (
            "geneve version 1",
            refused(Geneve, Some(1), false, |f| f[42] |= 0x40),
            GeneveVersion,
        ),
        (
            "geneve protocol",
            refused(Geneve, Some(1), false, |f| {
                f[44..46].copy_from_slice(&[8, 0])
            }),
            GeneveProtocol,
        ),
        (
            "geneve options past the end",
            refused(Geneve, Some(1), false, |f| f[42] = 0x3f),
            GeneveOptions,
        ),
        (
            "inner frame shorter than ethernet",
            {
                let h = header(Vxlan, Some(1), false);
                let mut f = vec![0xab; 13];
                assert!(push(&mut f, &h, 0));
                pop(&f, port(Vxlan)).map(|_| ())
            },
            Truncated,
        ),
    ];
    let mut seen = std::collections::HashSet::new();
    for (what, got, want) in cases {
        assert_eq!(got, Err(want), "{what}");
        seen.insert(want);
    }
    // Every prefix of a good packet is truncated, whatever the kind.
    for (kind, key, csum) in shapes() {
        let f = pushed(kind, key, csum);
        for n in 0..f.len() {
            assert_eq!(
                pop(&f[..n], port(kind)),
                Err(Truncated),
                "{kind:?} cut at {n}"
            );
        }
    }
    // NotTunnelPort comes from the executors (the port's kind is unknown).
    let mut out = Vec::new();
    execute(
        &[DpAction::TunnelPop(5)],
        &mut pushed(Vxlan, Some(1), false),
        &mut TunnelMeta::default(),
        &mut out,
    );
    assert_eq!(
        out,
        vec![Emitted::PopDropped {
            port: 5,
            reason: NotTunnelPort
        }]
    );
    seen.insert(NotTunnelPort);
    // The option errors come from the TLV map's decode of the options a pop
    // found (the datapath's next step): this packet's one option is OVN's
    // (class 0x102, critical type 0x80, 4 bytes of data).
    let f = pushed(Geneve, Some(1), false);
    let p = pop(&f, port(Geneve)).expect("pops");
    let (at, len) = (usize::from(p.geneve_opts.0), usize::from(p.geneve_opts.1));
    let opts = &f[at..at + len];
    let ovn = |len| TlvMapping {
        class: 0x102,
        ty: 0x80,
        len,
        index: 2,
    };
    let mut md = TunMd::default();
    let mut map = TlvMap::default();
    assert_eq!(map.decode(opts, &mut md), Err(GeneveCritical), "unmapped");
    seen.insert(GeneveCritical);
    map.add(&[ovn(8)]).expect("map");
    assert_eq!(map.decode(opts, &mut md), Err(GeneveOptionLength));
    seen.insert(GeneveOptionLength);
    let mut map = TlvMap::default();
    map.add(&[ovn(4)]).expect("map");
    assert_eq!(map.decode(opts, &mut md), Ok(()));
    assert_eq!((md.present, md.values), (0b100, [0, 0, 0xdead_beef, 0]));
    for r in PopError::ALL {
        assert!(seen.contains(&r), "{r:?} has no test");
    }
}

/// Inner frames of every shape the hash distinguishes: IPv4 TCP/UDP/ICMP, fragments,
/// IPv6, VLAN-tagged, ARP.
fn inner_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<[u8; 6]>(),
        any::<[u8; 6]>(),
        any::<[u8; 4]>(),
        any::<[u8; 4]>(),
        any::<u16>(),
        any::<u16>(),
        0u8..7,
        proptest::option::of(0u16..4095),
    )
        .prop_map(|(s, d, a, b, sp, dp, shape, vlan)| {
            let mut out = Vec::new();
            let eth = etherparse::PacketBuilder::ethernet2(s, d);
            let payload = b"0123456789";
            match (shape, vlan) {
                (0, None) => eth.ipv4(a, b, 9).udp(sp, dp).write(&mut out, payload),
                (0, Some(v)) => eth
                    .single_vlan(etherparse::VlanId::try_new(v).unwrap())
                    .ipv4(a, b, 9)
                    .udp(sp, dp)
                    .write(&mut out, payload),
                (1, _) => eth
                    .ipv4(a, b, 9)
                    .tcp(sp, dp, 1, 100)
                    .write(&mut out, payload),
                (2, _) => eth
                    .ipv4(a, b, 9)
                    .icmpv4_echo_request(sp, dp)
                    .write(&mut out, payload),
                (3, _) => {
                    let mut a6 = [0u8; 16];
                    a6[..4].copy_from_slice(&a);
                    a6[12..].copy_from_slice(&b);
                    eth.ipv6(a6, [b[0]; 16], 9)
                        .udp(sp, dp)
                        .write(&mut out, payload)
                }
                (4, _) => {
                    // A later fragment: ports are not read.
                    let r = eth.ipv4(a, b, 9).udp(sp, dp).write(&mut out, payload);
                    out[20] = 0x00;
                    out[21] = 0x10;
                    r
                }
                (5, _) => {
                    out.extend_from_slice(&d);
                    out.extend_from_slice(&s);
                    out.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
                    out.extend_from_slice(&[0; 20]);
                    Ok(())
                }
                _ => eth.ipv4(a, b, 9).tcp(sp, dp, 1, 100).write(&mut out, &[]),
            }
            .expect("frame");
            out
        })
}

proptest! {
    #[test]
    fn inner_hash_of_bytes_equals_hash_of_key(f in inner_frame()) {
        let mut k = FlowKey::default();
        let err = parse(&f, 3, &mut k);
        prop_assert_eq!(err, None);
        prop_assert_eq!(inner_flow_hash(&f), inner_flow_hash_key(&k));
    }

    #[test]
    fn pop_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), kind in 0usize..3) {
        let kind = [TunnelKind::Vxlan, TunnelKind::Gre, TunnelKind::Geneve][kind];
        let _ = pop(&bytes, port(kind));
        let _ = inner_flow_hash(&bytes);
    }

    #[test]
    fn corrupted_packets_never_panic_and_accepted_ones_stay_in_bounds(
        shape in 0usize..9,
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
        cut in any::<prop::sample::Index>(),
    ) {
        let (kind, key, csum) = shapes()[shape];
        let mut f = pushed(kind, key, csum);
        let i = at.index(f.len());
        f[i] ^= xor;
        let n = f.len() - cut.index(8);
        f.truncate(n);
        if let Ok(p) = pop(&f, port(kind)) {
            prop_assert!(p.inner().end <= f.len());
            prop_assert!(p.inner_len >= 14);
        }
    }
}

#[test]
fn udp_source_port_follows_the_inner_flow() {
    let h = header(TunnelKind::Vxlan, Some(1), false);
    let sport = |f: &[u8]| {
        let mut v = f.to_vec();
        assert!(push(&mut v, &h, inner_flow_hash(f)));
        u16::from_be_bytes([v[34], v[35]])
    };
    let a = inner_udp(1000, b"a");
    let a2 = inner_udp(1000, b"a different payload");
    let b = inner_udp(1001, b"a");
    assert_eq!(sport(&a), sport(&a2), "one flow, one port");
    assert_ne!(sport(&a), sport(&b), "two flows, two ports");
    let ports: std::collections::HashSet<u16> =
        (0..200).map(|p| sport(&inner_udp(p, b"x"))).collect();
    assert!(
        ports.len() > 190,
        "{} distinct ports of 200 flows",
        ports.len()
    );
    assert!(ports
        .iter()
        .all(|p| (UDP_SRC_MIN..=UDP_SRC_MAX).contains(p)));
}

#[test]
fn executor_pushes_a_copy_and_pops_it_back() {
    let h = Arc::new(header(TunnelKind::Vxlan, Some(0x1388), false));
    let inner = inner_udp(4000, b"round trip");
    let actions = [
        DpAction::TunnelPush {
            header: h.clone(),
            actions: Arc::from(vec![
                DpAction::PushVlan {
                    tpid: ETH_TYPE_VLAN_8021Q,
                    tci: VLAN_CFI | 10,
                },
                DpAction::Output(1),
            ]),
        },
        DpAction::Output(2),
    ];
    let mut frame = inner.clone();
    let mut t = TunnelMeta::default();
    let mut out = Vec::new();
    execute(&actions, &mut frame, &mut t, &mut out);
    assert_eq!(frame, inner, "the packet itself is left as it was");
    let mut want = inner.clone();
    assert!(push(&mut want, &h, inner_flow_hash(&inner)));
    want.splice(12..12, [0x81, 0x00, 0x00, 0x0a]);
    assert_eq!(
        out,
        vec![
            Emitted::Output {
                port: 1,
                frame: want.clone(),
                tunnel: TunnelMeta::default()
            },
            Emitted::Output {
                port: 2,
                frame: inner.clone(),
                tunnel: TunnelMeta::default()
            },
        ]
    );
    // The tagged outer frame, popped by a megaflow on the physical port.
    let ports = |p: u32| (p == 9).then(|| port(TunnelKind::Vxlan));
    let mut outer = want;
    let mut out = Vec::new();
    execute_with_ports(
        &[DpAction::TunnelPop(9), DpAction::TunnelPop(8)],
        &mut outer,
        &mut TunnelMeta::default(),
        &ports,
        &mut out,
    );
    assert_eq!(
        out,
        vec![
            Emitted::Recirculate {
                port: 9,
                frame: inner,
                tunnel: TunnelMeta {
                    tun_id: 0x1388,
                    src: u32::from(Ipv4Addr::from(SRC)),
                    dst: u32::from(Ipv4Addr::from(DST)),
                    flags: FLOW_TNL_F_KEY | FLOW_TNL_F_DONT_FRAGMENT,
                },
            },
            Emitted::PopDropped {
                port: 8,
                reason: PopError::NotTunnelPort
            },
        ]
    );
}

#[test]
fn key_executor_matches_frame_executor_through_pushes() {
    for (kind, key, csum) in shapes() {
        let h = Arc::new(header(kind, key, csum));
        let actions = [
            DpAction::SetIpv4 {
                src: None,
                dst: Some(0x0a00_0063),
                tos: None,
                ttl: None,
            },
            DpAction::TunnelPush {
                header: h,
                actions: Arc::from(vec![
                    DpAction::Output(1),
                    DpAction::PushVlan {
                        tpid: ETH_TYPE_VLAN_8021Q,
                        tci: VLAN_CFI | 7,
                    },
                    DpAction::Output(4),
                ]),
            },
            DpAction::Output(2),
        ];
        let mut frame = inner_udp(777, b"key vs frame");
        let mut k0 = FlowKey::default();
        assert_eq!(parse(&frame, 3, &mut k0), None);
        let mut out = Vec::new();
        execute(&actions, &mut frame, &mut TunnelMeta::default(), &mut out);
        let by_key = execute_on_key(&actions, &k0);
        assert_eq!(out.len(), 3);
        assert_eq!(by_key.len(), 3);
        for (e, (port, key)) in out.iter().zip(by_key) {
            let Emitted::Output { port: p, frame, .. } = e else {
                panic!("not an output: {e:?}");
            };
            assert_eq!(*p, port);
            let mut k = FlowKey::default();
            parse(frame, 3, &mut k);
            assert_eq!(k, key, "{kind:?} {key:?} {csum} port {port}");
        }
    }
    // A pop outputs nothing at the key level.
    assert!(execute_on_key(&[DpAction::TunnelPop(1)], &FlowKey::default()).is_empty());
}

/// The pushed frames decoded by tcpdump: an independent reading of the wire
/// format (this kernel has no gretap or geneve to send them to).
#[test]
fn tcpdump_decodes_pushed_frames() {
    let Ok(out) = std::process::Command::new("tcpdump")
        .arg("--version")
        .output()
    else {
        panic!("tcpdump is not installed (scripts/setup.sh installs it)");
    };
    assert!(out.status.success());
    let inner = inner_udp(1234, b"decode me");
    let frames: Vec<(&str, Vec<u8>)> = vec![
        (
            "vxlan",
            pushed_inner(TunnelKind::Vxlan, Some(0x7b), true, &inner),
        ),
        (
            "gre key",
            pushed_inner(TunnelKind::Gre, Some(0x1234), false, &inner),
        ),
        (
            "gre csum",
            pushed_inner(TunnelKind::Gre, None, true, &inner),
        ),
        (
            "gre key csum",
            pushed_inner(TunnelKind::Gre, Some(0x99), true, &inner),
        ),
        (
            "geneve",
            pushed_inner(TunnelKind::Geneve, Some(0x7b), true, &inner),
        ),
    ];
    // Controls: tcpdump does see a wrong IPv4 or UDP checksum.
    let mut bad_ip = frames[0].1.clone();
    bad_ip[24] ^= 1;
    let mut bad_udp = frames[0].1.clone();
    bad_udp[40] ^= 1;
    let dir = std::env::temp_dir().join(format!("fs-tnl-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pushed.pcap");
    std::fs::write(
        &file,
        pipeline::pcap::write(
            frames
                .iter()
                .map(|(_, f)| f.as_slice())
                .chain([bad_ip.as_slice(), bad_udp.as_slice()]),
        ),
    )
    .unwrap();
    let out = std::process::Command::new("tcpdump")
        .args(["-nn", "-vv", "-e", "-r"])
        .arg(&file)
        .output()
        .expect("tcpdump");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // One record per frame: a record starts with a timestamp at column 0.
    let mut records: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            records.push(String::new());
        }
        if let Some(r) = records.last_mut() {
            r.push_str(line.trim());
            r.push('\n');
        }
    }
    assert_eq!(records.len(), frames.len() + 2, "{text}");
    assert!(records[frames.len()].contains("bad cksum"), "{text}");
    assert!(
        records[frames.len() + 1].contains("bad udp cksum"),
        "{text}"
    );
    let outer = "02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype IPv4 (0x0800)";
    let inner_macs = "fa:16:3e:00:00:01 > fa:16:3e:00:00:02, ethertype IPv4 (0x0800)";
    let inner_ips = "10.0.0.1.1234 > 10.0.0.2.2000: [udp sum ok] UDP, length 9";
    for ((what, _), r) in frames.iter().zip(&records) {
        assert!(!r.contains("bad"), "{what}: {r}");
        assert!(r.contains(outer), "{what}: {r}");
        assert!(r.contains(inner_macs), "{what}: {r}");
        assert!(r.contains(inner_ips), "{what}: {r}");
        assert!(r.contains("flags [DF]"), "{what}: {r}");
    }
    let want = [
        vec!["172.168.1.1.", " > 172.168.1.2.4789: [udp sum ok] VXLAN, flags [I] (0x08), vni 123"],
        vec!["172.168.1.1 > 172.168.1.2: GREv0, Flags [key present], key=0x1234, proto TEB (0x6558)"],
        vec!["172.168.1.1 > 172.168.1.2: GREv0, Flags [checksum present], sum 0x", "proto TEB (0x6558)"],
        vec!["GREv0, Flags [checksum present, key present], sum 0x", "key=0x99, proto TEB (0x6558)"],
        vec![
            " > 172.168.1.2.6081: [udp sum ok] Geneve, Flags [none], vni 0x7b, proto TEB (0x6558), \
             options [class Open Virtual Networking (OVN) (0x102) type 0x80(C) len 8 data deadbeef]",
        ],
    ];
    for (((what, _), r), want) in frames.iter().zip(&records).zip(want) {
        for w in want {
            assert!(r.contains(w), "{what}: want {w:?} in\n{r}");
        }
    }
}

fn pushed_inner(kind: TunnelKind, key: Option<u64>, csum: bool, inner: &[u8]) -> Vec<u8> {
    let mut f = inner.to_vec();
    assert!(push(
        &mut f,
        &header(kind, key, csum),
        inner_flow_hash(inner)
    ));
    f
}
