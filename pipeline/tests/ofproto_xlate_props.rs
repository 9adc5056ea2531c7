//! Property tests of translation: the classifier + lazy-commit translator agrees
//! with the naive reference interpreter, and the megaflow mask is sound.

use pipeline::actions::execute_on_key;
use pipeline::flow_key::{
    FlowKey, ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_VLAN_8021AD, ETH_TYPE_VLAN_8021Q,
    FLOW_KEY_WORDS, VLAN_CFI,
};
use pipeline::ofproto::action::{Action, LearnField, LearnSpec};
use pipeline::ofproto::field::{Field, Subfield};
use pipeline::ofproto::flow_match::Match;
use pipeline::ofproto::reference::{self, visible};
use pipeline::ofproto::rule::FlowMod;
use pipeline::ofproto::table::Tables;
use pipeline::ofproto::xlate::{translate, Translation, XlateOptions};
use proptest::prelude::*;

const PORTS: [u32; 4] = [1, 2, 3, 4];
const N_TABLES: u8 = 4;

const MACS: [[u8; 6]; 4] = [
    [0, 0, 0, 0, 0, 1],
    [0, 0, 0, 0, 0, 2],
    [0xff; 6],
    [0x01, 0x00, 0x5e, 0, 0, 1],
];
const IPS: [u32; 3] = [0x0a00_0001, 0x0a00_0002, 0x0a00_0103];

fn mac() -> impl Strategy<Value = [u8; 6]> {
    prop::sample::select(MACS.to_vec())
}

fn ip() -> impl Strategy<Value = u32> {
    prop::sample::select(IPS.to_vec())
}

/// Packet keys over small domains, so that rules hit often.
fn key() -> impl Strategy<Value = FlowKey> {
    (
        (
            1u32..=4,
            prop::sample::select(vec![ETH_TYPE_IPV4, ETH_TYPE_ARP, ETH_TYPE_IPV6, 0x88cc]),
            0usize..3,
            0u16..3,
            0u16..2,
            any::<bool>(),
            mac(),
            mac(),
        ),
        (
            ip(),
            ip(),
            prop::sample::select(vec![6u8, 17, 1, 58, 47]),
            prop::sample::select(vec![80u16, 443, 8]),
            prop::sample::select(vec![0u8, 1, 2, 64]),
            prop::sample::select(vec![0u8, 0, 0, 1, 3]),
            prop::sample::select(vec![0u64, 0x1388]),
            0u32..3,
            mac(),
        ),
    )
        .prop_map(
            |(
                (in_port, dl_type, n_vlans, vid, pcp, qinq, src, dst),
                (nw_src, nw_dst, proto, tp, ttl, frag, tun_id, reg0, sha),
            )| {
                let mut k = FlowKey {
                    in_port,
                    dl_type,
                    dl_src: src,
                    dl_dst: dst,
                    tun_id,
                    ..FlowKey::default()
                };
                k.regs[0] = reg0;
                for i in 0..n_vlans {
                    k.vlan_tci[i] = VLAN_CFI | (pcp << 13) | (vid + i as u16);
                    k.vlan_tpid[i] = if qinq && i == 0 {
                        ETH_TYPE_VLAN_8021AD
                    } else {
                        ETH_TYPE_VLAN_8021Q
                    };
                }
                match dl_type {
                    ETH_TYPE_IPV4 | ETH_TYPE_IPV6 => {
                        if dl_type == ETH_TYPE_IPV4 {
                            k.nw_src = nw_src;
                            k.nw_dst = nw_dst;
                        } else {
                            k.ipv6_src[15] = nw_src as u8;
                            k.ipv6_dst[15] = nw_dst as u8;
                        }
                        k.nw_proto = proto;
                        k.nw_ttl = ttl;
                        k.nw_frag = frag;
                        if frag & 2 == 0 {
                            k.tp_src = tp;
                            k.tp_dst = 80;
                        }
                    }
                    ETH_TYPE_ARP => {
                        k.nw_src = nw_src;
                        k.nw_dst = nw_dst;
                        k.nw_proto = 1 + (proto & 1);
                        k.arp_sha = sha;
                    }
                    _ => {}
                }
                k
            },
        )
}

/// A match: a template key and which fields to match (prerequisites added).
fn rule_match() -> impl Strategy<Value = Match> {
    (key(), any::<[u16; 3]>(), 0u8..3).prop_map(|(k, sel, vmode)| {
        // Each field is matched with probability 1/8: rules overlap and hit.
        let sel = sel[0] & sel[1] & sel[2];
        let mut m = Match::catchall();
        let on = |b: u16| sel & (1 << b) != 0;
        let set = |m: &mut Match, f: Field| m.set_field(f, f.get(&k), None);
        if on(0) {
            set(&mut m, Field::InPort);
        }
        if on(1) {
            match vmode {
                0 => m.set_field(Field::VlanTci, u128::from(k.vlan_tci[0]), None),
                1 => m.set_field(
                    Field::VlanTci,
                    u128::from(k.vlan_tci[0] & 0x0fff),
                    Some(0x0fff),
                ),
                _ => m.set_field(
                    Field::VlanTci,
                    u128::from(k.vlan_tci[0] & VLAN_CFI),
                    Some(0x1000),
                ),
            }
        }
        if on(2) {
            m.set_field(
                Field::EthDst,
                u128::from(k.dl_dst[0] & 1) << 40,
                Some(0x0100_0000_0000),
            );
        }
        if on(3) {
            set(&mut m, Field::EthDst);
        }
        if on(4) {
            set(&mut m, Field::EthSrc);
        }
        if on(5) {
            set(&mut m, Field::TunId);
        }
        if on(6) {
            set(&mut m, Field::Reg0);
        }
        let l3 = on(7) || on(8) || on(9) || on(10);
        if on(11) || l3 {
            set(&mut m, Field::EthType);
        }
        if k.dl_type == ETH_TYPE_IPV4 || k.dl_type == ETH_TYPE_ARP {
            if on(7) {
                set(&mut m, Field::IpSrc);
            }
            if on(8) {
                m.set_field(
                    Field::IpDst,
                    u128::from(k.nw_dst & 0xffff_ff00),
                    Some(0xffff_ff00),
                );
            }
        }
        if (k.dl_type == ETH_TYPE_IPV4 || k.dl_type == ETH_TYPE_IPV6) && (on(9) || on(10)) {
            set(&mut m, Field::IpProto);
            if on(10) && matches!(k.nw_proto, 6 | 17) {
                set(&mut m, Field::TpSrc);
            }
        }
        if k.dl_type == ETH_TYPE_IPV4 && on(12) {
            set(&mut m, Field::NwTtl);
        }
        m
    })
}

fn sf(f: Field) -> Subfield {
    Subfield::whole(f)
}

fn learn_spec() -> impl Strategy<Value = Action> {
    (0u8..N_TABLES, 0u16..3, 0u16..2).prop_map(|(table, priority, hard)| {
        Action::Learn(Box::new(LearnSpec {
            table,
            priority,
            hard_timeout: hard * 300,
            specs: vec![
                LearnField::MatchField {
                    dst: Subfield::range(Field::VlanTci, 0, 11).unwrap(),
                    src: Subfield::range(Field::VlanTci, 0, 11).unwrap(),
                },
                LearnField::MatchField {
                    dst: sf(Field::EthDst),
                    src: sf(Field::EthSrc),
                },
                LearnField::LoadValue {
                    dst: sf(Field::VlanTci),
                    value: 0,
                },
                LearnField::LoadField {
                    src: sf(Field::TunId),
                    dst: sf(Field::TunId),
                },
                LearnField::Output {
                    src: sf(Field::InPort),
                },
            ],
            ..LearnSpec::default()
        }))
    })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (1u32..=5).prop_map(Action::Output),
        1 => Just(Action::InPort),
        1 => Just(Action::Flood),
        1 => Just(Action::All),
        1 => Just(Action::Local),
        1 => Just(Action::Controller { max_len: 128 }),
        4 => (prop::option::of(1u32..=4), prop::option::of(0u8..N_TABLES))
            .prop_map(|(port, table)| Action::Resubmit { port, table }),
        2 => (0u16..4).prop_map(Action::ModVlanVid),
        1 => (0u8..8).prop_map(Action::ModVlanPcp),
        2 => Just(Action::StripVlan),
        1 => prop::sample::select(vec![ETH_TYPE_VLAN_8021Q, ETH_TYPE_VLAN_8021AD])
            .prop_map(Action::PushVlan),
        1 => mac().prop_map(Action::ModDlSrc),
        1 => mac().prop_map(Action::ModDlDst),
        1 => ip().prop_map(Action::ModNwSrc),
        1 => ip().prop_map(Action::ModNwDst),
        1 => prop::sample::select(vec![0u8, 0x10, 0xfc]).prop_map(Action::ModNwTos),
        1 => prop::sample::select(vec![80u16, 8]).prop_map(Action::ModTpSrc),
        1 => prop::sample::select(vec![80u16, 443]).prop_map(Action::ModTpDst),
        1 => Just(Action::DecTtl),
        1 => prop::sample::select(vec![0u64, 0x1388, 7]).prop_map(Action::SetTunnel),
        1 => (0u128..3).prop_map(|value| Action::Load { dst: sf(Field::Reg0), value }),
        1 => prop::sample::select(vec![0u128, 0x1005, 0x0001])
            .prop_map(|value| Action::Load { dst: sf(Field::VlanTci), value }),
        1 => Just(Action::Load { dst: sf(Field::ArpOp), value: 2 }),
        1 => Just(Action::Load { dst: Subfield::range(Field::IpSrc, 0, 7).unwrap(), value: 9 }),
        1 => Just(Action::SetField { field: Field::TpDst, value: 53, mask: 0xffff }),
        1 => Just(Action::Move { src: sf(Field::EthSrc), dst: sf(Field::EthDst) }),
        1 => Just(Action::Move { src: sf(Field::ArpSha), dst: sf(Field::ArpTha) }),
        1 => Just(Action::Move { src: sf(Field::ArpSpa), dst: sf(Field::ArpTpa) }),
        1 => Just(Action::Move {
            src: Subfield::range(Field::InPort, 0, 15).unwrap(),
            dst: Subfield::range(Field::Reg0, 0, 15).unwrap(),
        }),
        1 => Just(Action::Move {
            src: Subfield::range(Field::Reg0, 0, 15).unwrap(),
            dst: Subfield::range(Field::TunId, 0, 15).unwrap(),
        }),
        1 => Just(Action::OutputReg(Subfield::range(Field::Reg0, 0, 15).unwrap())),
        1 => learn_spec(),
    ]
}

fn flow_mod() -> impl Strategy<Value = FlowMod> {
    (
        prop_oneof![2 => Just(0u8), 3 => 0u8..N_TABLES],
        0u16..4,
        rule_match(),
        prop::collection::vec(action(), 0..5),
        0u8..N_TABLES,
        any::<bool>(),
    )
        .prop_map(
            |(table_id, priority, match_, mut actions, goto, use_goto)| {
                if use_goto && goto > table_id {
                    actions.push(Action::GotoTable(goto));
                }
                FlowMod {
                    table_id,
                    priority,
                    match_,
                    actions,
                    ..FlowMod::default()
                }
            },
        )
}

fn tables_from(fms: Vec<FlowMod>) -> Tables {
    let mut t = Tables::new();
    for fm in fms {
        // Matches without prerequisites are refused: skip them.
        let _ = t.add(fm, 0);
    }
    t
}

fn xlate(t: &Tables, k: &FlowKey) -> Translation {
    translate(t, k, &PORTS, XlateOptions::default())
}

fn outputs_of(t: &Translation) -> Vec<(u32, FlowKey)> {
    if t.error.is_some() {
        return Vec::new();
    }
    execute_on_key(&t.actions, &t.input)
        .into_iter()
        .map(|(p, k)| (p, visible(&k)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(768))]

    #[test]
    fn translation_equals_reference(
        fms in prop::collection::vec(flow_mod(), 1..14),
        keys in prop::collection::vec(key(), 1..6),
    ) {
        let t = tables_from(fms);
        for k in &keys {
            let x = xlate(&t, k);
            let r = reference::run(&t, k, &PORTS);
            prop_assert_eq!(&x.rules, &r.rules, "rules hit");
            prop_assert_eq!(x.error.is_some(), r.failed, "error {:?}", x.error);
            prop_assert_eq!(&x.learned, &r.learned, "learned");
            let want: Vec<(u32, FlowKey)> =
                r.outputs.iter().map(|(p, k)| (*p, visible(k))).collect();
            prop_assert_eq!(outputs_of(&x), want, "actions {:?}", x.actions);
        }
    }

    #[test]
    fn megaflow_mask_is_sound(
        fms in prop::collection::vec(flow_mod(), 1..14),
        k in key(),
        noise in prop::collection::vec(any::<u64>(), FLOW_KEY_WORDS * 4),
        other in prop::collection::vec(key(), 3),
    ) {
        let t = tables_from(fms);
        let x = xlate(&t, &k);
        // Keys agreeing with k on the mask: random bits elsewhere, from noise
        // and from other plausible keys.
        let mut variants = Vec::new();
        for chunk in noise.chunks(FLOW_KEY_WORDS) {
            let mut v = FlowKey::default();
            v.words_mut().copy_from_slice(chunk);
            variants.push(v);
        }
        variants.extend(other);
        for r in variants {
            let mut k2 = k;
            for ((w, m), n) in k2.words_mut().iter_mut().zip(x.mask.words()).zip(r.words()) {
                *w = (*w & m) | (n & !m);
            }
            let y = xlate(&t, &k2);
            prop_assert_eq!(&y.actions, &x.actions, "k2={:?}", k2);
            prop_assert_eq!(&y.rules, &x.rules);
            prop_assert_eq!(&y.learned, &x.learned);
            prop_assert_eq!(y.error, x.error);
        }
    }
}

/// Two bridges of [`PORTS`] whose port 4 are peers (patch ports): the same
/// soundness, and determinism of rules and learned flows per bridge.
mod patch {
    use super::*;
    use pipeline::ofproto::xlate::{translate_bridges, PatchPeer, XlateBridge};

    const A_ODP: [(u32, u32); 3] = [(1, 11), (2, 12), (3, 13)];
    const B_ODP: [(u32, u32); 3] = [(1, 21), (2, 22), (3, 23)];
    const A_PATCH: [PatchPeer; 1] = [PatchPeer {
        port: 4,
        peer_bridge: 1,
        peer_port: 4,
    }];
    const B_PATCH: [PatchPeer; 1] = [PatchPeer {
        port: 4,
        peer_bridge: 0,
        peer_port: 4,
    }];

    fn xlate2(a: &Tables, b: &Tables, k: &FlowKey) -> Translation {
        let mut br = [
            XlateBridge {
                name: "a",
                tables: a,
                ports: &PORTS,
                odp: Some(&A_ODP),
                patches: &A_PATCH,
                normal: None,
                internal: &[],
                tunnels: &[],
            },
            XlateBridge {
                name: "b",
                tables: b,
                ports: &PORTS,
                odp: Some(&B_ODP),
                patches: &B_PATCH,
                normal: None,
                internal: &[],
                tunnels: &[],
            },
        ];
        translate_bridges(&mut br, 0, k, false)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn megaflow_mask_is_sound_across_patch_ports(
            fa in prop::collection::vec(flow_mod(), 1..10),
            fb in prop::collection::vec(flow_mod(), 1..10),
            k in key(),
            noise in prop::collection::vec(any::<u64>(), FLOW_KEY_WORDS * 4),
            other in prop::collection::vec(key(), 3),
        ) {
            let (a, b) = (tables_from(fa), tables_from(fb));
            let x = xlate2(&a, &b, &k);
            let mut variants = Vec::new();
            for chunk in noise.chunks(FLOW_KEY_WORDS) {
                let mut v = FlowKey::default();
                v.words_mut().copy_from_slice(chunk);
                variants.push(v);
            }
            variants.extend(other);
            for r in variants {
                let mut k2 = k;
                for ((w, m), n) in k2.words_mut().iter_mut().zip(x.mask.words()).zip(r.words()) {
                    *w = (*w & m) | (n & !m);
                }
                let y = xlate2(&a, &b, &k2);
                prop_assert_eq!(&y.actions, &x.actions, "k2={:?}", k2);
                prop_assert_eq!(&y.rules, &x.rules);
                prop_assert_eq!(&y.rule_bridges, &x.rule_bridges);
                prop_assert_eq!(&y.learned, &x.learned);
                prop_assert_eq!(&y.learned_bridges, &x.learned_bridges);
                prop_assert_eq!(y.error, x.error);
            }
        }
    }
}
