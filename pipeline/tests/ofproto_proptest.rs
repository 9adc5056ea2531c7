//! Property test: `parse(print(flow)) == flow` for random flows: matches over many
//! fields (with their prerequisites), random action lists including learn, load,
//! move, resubmit and set_field; through both the `--no-stats` form and the
//! `dump-flows` line.

use pipeline::ofproto::action::{
    Action, LearnField, LearnFlags, LearnSpec, OFPP_ALL, OFPP_CONTROLLER, OFPP_FLOOD, OFPP_IN_PORT,
    OFPP_LOCAL, OFPP_NORMAL,
};
use pipeline::ofproto::field::{Field, Subfield};
use pipeline::ofproto::flow_match::Match;
use pipeline::ofproto::rule::{FlowMod, FlowModFlags, Rule};
use pipeline::ofproto::syntax::{
    format_dump_line, format_flow, parse_dump_line, parse_flow, FormatOptions, PortMap,
};
use proptest::prelude::*;

/// Fields without prerequisites: fair game for set_field/load/move in any flow.
const NOPRE: [Field; 30] = [
    Field::InPort,
    Field::InPortOxm,
    Field::Metadata,
    Field::Reg0,
    Field::Reg1,
    Field::Reg2,
    Field::Reg3,
    Field::Reg4,
    Field::Reg5,
    Field::Reg6,
    Field::Reg7,
    Field::Reg8,
    Field::Reg9,
    Field::Reg10,
    Field::Reg11,
    Field::Reg12,
    Field::Reg13,
    Field::Reg14,
    Field::Reg15,
    Field::TunId,
    Field::TunSrc,
    Field::TunDst,
    Field::EthSrc,
    Field::EthDst,
    Field::EthType,
    Field::VlanTci,
    Field::DlVlan,
    Field::VlanVid,
    Field::VlanPcp,
    Field::Reg0,
];

/// Fields a random set_field may name (no prerequisites, value round-trips).
const SET_FIELDS: [Field; 10] = [
    Field::Metadata,
    Field::Reg5,
    Field::TunId,
    Field::TunDst,
    Field::EthSrc,
    Field::EthDst,
    Field::EthType,
    Field::VlanTci,
    Field::VlanVid,
    Field::VlanPcp,
];

/// Fields a learn spec may match on with an immediate whole-field value.
const LEARN_VALUE_FIELDS: [Field; 11] = [
    Field::EthSrc,
    Field::EthDst,
    Field::EthType,
    Field::VlanTci,
    Field::TunId,
    Field::Reg0,
    Field::Metadata,
    Field::IpDst,
    Field::IpProto,
    Field::TpDst,
    Field::InPort,
];

const RESERVED: [u32; 5] = [
    OFPP_LOCAL,
    OFPP_NORMAL,
    OFPP_FLOOD,
    OFPP_ALL,
    OFPP_CONTROLLER,
];

/// Protocol classes of a match: (dl_type, nw_proto).
const CLASSES: [(Option<u16>, Option<u8>); 16] = [
    (None, None),
    (Some(0x0800), None),
    (Some(0x86dd), None),
    (Some(0x0806), None),
    (Some(0x8035), None),
    (Some(0x0800), Some(6)),
    (Some(0x0800), Some(17)),
    (Some(0x0800), Some(132)),
    (Some(0x0800), Some(1)),
    (Some(0x86dd), Some(6)),
    (Some(0x86dd), Some(17)),
    (Some(0x86dd), Some(58)),
    (Some(0x0800), Some(47)),
    (Some(0x86dd), Some(47)),
    (Some(0x88cc), None),
    (Some(0x0800), Some(2)),
];

fn nz(m: u128, full: u128) -> u128 {
    let m = m & full;
    if m == 0 {
        full
    } else {
        m
    }
}

/// Builds a valid match from a class and raw random material.
fn build_match(class: usize, picks: &[(u8, u128, u128)]) -> Match {
    let (dl, proto) = CLASSES[class % CLASSES.len()];
    let mut m = Match::catchall();
    if let Some(dl) = dl {
        m.set_field(Field::EthType, u128::from(dl), None);
    }
    if let Some(p) = proto {
        m.set_field(Field::IpProto, u128::from(p), None);
    }
    let is_ip = dl == Some(0x0800);
    let is_ip6 = dl == Some(0x86dd);
    let is_arp = matches!(dl, Some(0x0806) | Some(0x8035));
    let l4 = matches!(proto, Some(6) | Some(17) | Some(132)) && (is_ip || is_ip6);
    let icmp = (is_ip && proto == Some(1)) || (is_ip6 && proto == Some(58));
    for &(sel, v, mk) in picks {
        let mut set = |f: Field, masked: bool| {
            let full = f.full_mask();
            let mask = masked.then(|| nz(mk, full));
            m.set_field(f, v & full, mask);
        };
        match sel % 16 {
            0 => {
                let p = if v % 4 == 0 {
                    RESERVED[(v as usize / 4) % RESERVED.len()]
                } else {
                    (v % 0xff00) as u32
                };
                m.key.in_port = p;
                m.mask.in_port = u32::MAX;
            }
            1 => set(Field::reg((v % 16) as usize).unwrap(), true),
            2 => set(Field::TunId, true),
            3 => set(
                if v & 1 == 0 {
                    Field::TunSrc
                } else {
                    Field::TunDst
                },
                true,
            ),
            4 => set(Field::Metadata, true),
            5 => match v % 5 {
                0 => m.set_field(Field::DlVlan, mk % 4096, None),
                1 => m.set_field(Field::VlanPcp, mk % 8, None),
                2 => {
                    m.set_field(Field::DlVlan, mk % 4096, None);
                    m.set_field(Field::VlanPcp, (mk >> 20) % 8, None);
                }
                3 => m.set_field(Field::DlVlan, 0xffff, None),
                _ => m.set_field(Field::VlanTci, mk & 0xffff, Some(nz(mk >> 16, 0xffff))),
            },
            6 => set(
                if v & 1 == 0 {
                    Field::EthSrc
                } else {
                    Field::EthDst
                },
                true,
            ),
            7 | 8 if is_ip => set(
                if sel & 1 == 0 {
                    Field::IpSrc
                } else {
                    Field::IpDst
                },
                true,
            ),
            7 | 8 if is_ip6 => set(
                if sel & 1 == 0 {
                    Field::Ipv6Src
                } else {
                    Field::Ipv6Dst
                },
                true,
            ),
            7 | 8 if is_arp => set(
                if sel & 1 == 0 {
                    Field::ArpSpa
                } else {
                    Field::ArpTpa
                },
                true,
            ),
            9 if is_ip || is_ip6 => match v % 4 {
                0 => m.set_field(Field::NwTos, mk & 0xfc, None),
                1 => m.set_field(Field::NwEcn, mk & 3, None),
                2 => m.set_field(Field::NwTtl, mk & 0xff, None),
                _ => {
                    let (fv, fm) = [(0, 1), (1, 1), (1, 3), (3, 3), (0, 2)][(mk % 5) as usize];
                    m.set_field(Field::IpFrag, fv, Some(fm));
                }
            },
            9 if is_arp => set(
                if v & 1 == 0 {
                    Field::ArpSha
                } else {
                    Field::ArpTha
                },
                true,
            ),
            10 if is_arp && proto.is_none() => m.set_field(Field::ArpOp, mk & 0xff, None),
            10 if is_ip6 => set(Field::Ipv6Label, true),
            11 | 12 if l4 => set(
                if sel & 1 == 0 {
                    Field::TpSrc
                } else {
                    Field::TpDst
                },
                true,
            ),
            11 | 12 if icmp => {
                let f = if sel & 1 == 0 {
                    Field::IcmpType
                } else {
                    Field::IcmpCode
                };
                m.set_field(f, v & 0xff, None);
            }
            13 if l4 && proto == Some(6) => set(Field::TcpFlags, true),
            _ => {}
        }
    }
    m
}

fn subfield_in(field: Field, a: u16, b: u16) -> Subfield {
    let w = field.n_bits();
    let (a, b) = (a % w, b % w);
    Subfield::range(field, u32::from(a.min(b)), u32::from(a.max(b))).unwrap()
}

fn subfield() -> impl Strategy<Value = Subfield> {
    (0..NOPRE.len(), any::<u16>(), any::<u16>()).prop_map(|(i, a, b)| subfield_in(NOPRE[i], a, b))
}

/// A destination subfield with the same width as `src`, in a field wide enough.
fn same_width(src: Subfield, pick: usize, ofs: u16) -> Subfield {
    let wide: Vec<Field> = NOPRE
        .iter()
        .copied()
        .filter(|f| f.n_bits() >= src.n_bits)
        .collect();
    let f = wide[pick % wide.len()];
    let ofs = ofs % (f.n_bits() - src.n_bits + 1);
    Subfield::range(f, u32::from(ofs), u32::from(ofs + src.n_bits - 1)).unwrap()
}

fn learn_field() -> impl Strategy<Value = LearnField> {
    prop_oneof![
        (subfield(), any::<usize>(), any::<u16>()).prop_map(|(dst, p, o)| {
            let src = same_width(dst, p, o);
            let src = if src.field == dst.field && src.ofs == dst.ofs {
                dst
            } else {
                src
            };
            LearnField::MatchField { dst, src }
        }),
        (subfield(), any::<u128>()).prop_map(|(dst, v)| LearnField::MatchValue {
            dst,
            value: v & ((1u128 << dst.n_bits.min(127)) - 1)
        }),
        (0..LEARN_VALUE_FIELDS.len(), any::<u128>()).prop_map(|(i, v)| {
            let f = LEARN_VALUE_FIELDS[i];
            LearnField::MatchValue {
                dst: Subfield::whole(f),
                value: v & f.full_mask(),
            }
        }),
        (subfield(), any::<u128>()).prop_map(|(dst, v)| LearnField::LoadValue {
            dst,
            value: v & ((1u128 << dst.n_bits.min(127)) - 1)
        }),
        (subfield(), any::<usize>(), any::<u16>()).prop_map(|(src, p, o)| LearnField::LoadField {
            src,
            dst: same_width(src, p, o)
        }),
        subfield().prop_map(|src| LearnField::Output { src }),
    ]
}

fn learn() -> impl Strategy<Value = Action> {
    (
        (0u8..=254, any::<u16>(), any::<u16>(), any::<u16>()),
        (
            any::<u16>(),
            any::<u16>(),
            any::<u64>(),
            any::<(bool, bool)>(),
        ),
        prop::collection::vec(learn_field(), 0..6),
    )
        .prop_map(
            |((table, priority, idle, hard), (fi, fh, cookie, (a, b)), specs)| {
                Action::Learn(Box::new(LearnSpec {
                    table,
                    priority,
                    idle_timeout: idle,
                    hard_timeout: hard,
                    fin_idle_timeout: fi,
                    fin_hard_timeout: fh,
                    cookie,
                    flags: LearnFlags {
                        send_flow_rem: a,
                        delete_learned: b,
                    },
                    specs,
                }))
            },
        )
}

fn port() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..0xff00, 0x1_0000u32..0x100_0000]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        port().prop_map(Action::Output),
        subfield().prop_map(Action::OutputReg),
        Just(Action::InPort),
        Just(Action::Normal),
        Just(Action::Flood),
        Just(Action::All),
        Just(Action::Local),
        Just(Action::Table),
        any::<u16>().prop_map(|max_len| Action::Controller { max_len }),
        (
            prop::option::of(prop_oneof![port(), Just(OFPP_LOCAL)]),
            prop::option::of(0u8..255)
        )
            .prop_filter("one argument", |(p, t)| p.is_some() || t.is_some())
            .prop_map(|(port, table)| Action::Resubmit { port, table }),
        (0u16..4096).prop_map(Action::ModVlanVid),
        (0u8..8).prop_map(Action::ModVlanPcp),
        Just(Action::StripVlan),
        Just(Action::PopVlan),
        prop_oneof![Just(0x8100u16), Just(0x88a8)].prop_map(Action::PushVlan),
        any::<[u8; 6]>().prop_map(Action::ModDlSrc),
        any::<[u8; 6]>().prop_map(Action::ModDlDst),
        any::<u32>().prop_map(Action::ModNwSrc),
        any::<u32>().prop_map(Action::ModNwDst),
        any::<u8>().prop_map(|t| Action::ModNwTos(t & 0xfc)),
        any::<u16>().prop_map(Action::ModTpSrc),
        any::<u16>().prop_map(Action::ModTpDst),
        Just(Action::DecTtl),
        any::<u32>().prop_map(|t| Action::SetTunnel(u64::from(t))),
        any::<u64>().prop_map(Action::SetTunnel64),
        (
            0..SET_FIELDS.len(),
            any::<u128>(),
            any::<u128>(),
            any::<bool>()
        )
            .prop_map(|(i, v, m, masked)| {
                let field = SET_FIELDS[i];
                let full = field.full_mask();
                let mask = if masked && field.maskable() {
                    nz(m, full)
                } else {
                    full
                };
                Action::SetField {
                    field,
                    value: v & mask,
                    mask,
                }
            }),
        (subfield(), any::<u128>()).prop_map(|(dst, v)| Action::Load {
            dst,
            value: v & ((1u128 << dst.n_bits.min(127)) - 1)
        }),
        (subfield(), any::<usize>(), any::<u16>()).prop_map(|(src, p, o)| Action::Move {
            src,
            dst: same_width(src, p, o)
        }),
        learn(),
        (0usize..3, any::<[u8; 22]>()).prop_map(|(k, b)| Action::Note(b[..6 + 8 * k].to_vec())),
    ]
}

fn flow() -> impl Strategy<Value = FlowMod> {
    (
        (
            0u8..=253,
            any::<u16>(),
            any::<u64>(),
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
        ),
        (any::<(bool, bool)>(), 0usize..CLASSES.len()),
        prop::collection::vec((any::<u8>(), any::<u128>(), any::<u128>()), 0..8),
        prop::collection::vec(action(), 0..6),
        prop::option::of(any::<u8>()),
    )
        .prop_map(
            |(
                (table_id, priority, cookie, idle, hard, imp),
                ((a, b), class),
                picks,
                mut actions,
                goto,
            )| {
                if let Some(g) = goto {
                    let t = table_id + 1 + g % (254 - table_id);
                    actions.push(Action::GotoTable(t));
                }
                FlowMod {
                    table_id,
                    priority,
                    cookie,
                    idle_timeout: idle,
                    hard_timeout: hard,
                    importance: imp,
                    flags: FlowModFlags {
                        send_flow_rem: a,
                        check_overlap: b,
                    },
                    match_: build_match(class, &picks),
                    actions,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_print_roundtrip(f in flow()) {
        let ports = PortMap::new();
        let text = format_flow(&f, &FormatOptions::default());
        let back = parse_flow(&text, &ports).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(&back, &f, "text: {}", text);
        // Printing is a fixed point.
        prop_assert_eq!(format_flow(&back, &FormatOptions::default()), text);
    }

    #[test]
    fn dump_line_roundtrip(f in flow(), age in 0u64..200_000_000, n in any::<u32>()) {
        let mut rule = Rule::new(f.clone(), 1_000);
        rule.n_packets = u64::from(n);
        rule.used_ms = 1_000 + age / 2;
        let line = format_dump_line(&rule, 1_000 + age, &FormatOptions::default());
        prop_assert!(line.starts_with(" cookie=0x"));
        let back = parse_dump_line(&line, &PortMap::new())
            .map_err(|e| TestCaseError::fail(format!("{line}: {e}")))?;
        prop_assert_eq!(back, f, "line: {}", line);
    }

    #[test]
    fn match_is_normalized(class in 0usize..CLASSES.len(),
                           picks in prop::collection::vec((any::<u8>(), any::<u128>(), any::<u128>()), 0..8)) {
        let m = build_match(class, &picks);
        let mut n = m;
        n.normalize();
        prop_assert_eq!(n, m);
        prop_assert!(m.check_prereqs().is_ok(), "{:?}", m.check_prereqs());
        prop_assert!(m.matches(&m.key));
    }
}

#[test]
fn in_port_reserved_is_not_output() {
    assert_eq!(Action::output(OFPP_IN_PORT), Some(Action::InPort));
}
