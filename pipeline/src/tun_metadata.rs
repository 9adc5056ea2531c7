//! Geneve options as flow metadata: the TLV map (OVS's `add-tlv-map`,
//! `NXT_TLV_TABLE_MOD`) and the `tun_metadata0`..`tun_metadata3` fields it
//! maps options to.
//!
//! A mapping `{class=C,type=T,len=L}->tun_metadataN` says: a received Geneve
//! option of class `C` and type `T` whose data is `L` bytes is field
//! `tun_metadataN` of the inner packet's flow key, and a packet sent to a
//! Geneve port carries an option `C`/`T` of `L` bytes for every mapped field it
//! has. Flows match and set the fields as any other (`tun_metadata0=0x2a`,
//! `set_field:0x2a->tun_metadata0`).
//!
//! # The key
//!
//! [`FlowKey::tun_md`] holds field `N`'s value in slot `N`, right-aligned
//! (the option data as a big-endian number), and bit `N` of
//! [`FlowKey::tun_md_present`] says the packet has the field. A match on a
//! field requires it present (as OVS).
//!
//! # Receiving (the PMD's pop)
//!
//! [`TlvMap::decode`] walks the option area once: a mapped option of the
//! mapped length fills its field; a mapped option of another length, or an
//! unmapped option with the critical bit (type bit 7, RFC 8926 section 3.5)
//! drops the packet (as OVS, which fails the flow extraction); other unmapped
//! options are ignored.
//!
//! # Deviations from OVS
//!
//! * Four fields (`tun_metadata0`..`tun_metadata3`, OVS: 64) of at most 8
//!   bytes each (OVS: 124, 256 in all): the key keeps a 64-bit slot per
//!   field. OVN's one option (class 0x0102, type 0x80, 4 bytes) fits.
//! * One map for the switch, not one per bridge: the datapath pops Geneve
//!   for every bridge through one port per UDP port (`genev_sys_6081`), and
//!   decodes with it.

use std::fmt;

use crate::flow_key::FlowKey;
use crate::ofproto::action::{Action, LearnField};
use crate::ofproto::field::Subfield;
use crate::ofproto::rule::FlowMod;
use crate::tunnel::{geneve_options, PopError};

/// How many `tun_metadataN` fields there are.
pub const TUN_METADATA_FIELDS: usize = 4;
/// Longest option data a field holds, in bytes.
pub const TUN_METADATA_MAX_LEN: u8 = 8;
/// The critical bit of a Geneve option's type.
pub const GENEVE_CRIT_OPT_TYPE: u8 = 0x80;

/// The `tun_metadata` fields of one packet, as a pop decodes them; the
/// datapath keeps them beside the packet until its key is built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TunMd {
    /// Bit `N`: `tun_metadataN` is present.
    pub present: u64,
    /// Field `N`'s value in slot `N`.
    pub values: [u64; TUN_METADATA_FIELDS],
}

impl TunMd {
    /// Writes the fields into a flow key.
    #[inline]
    pub fn to_key(&self, key: &mut FlowKey) {
        key.tun_md_present = self.present;
        key.tun_md = self.values;
    }
}

/// One mapping of the TLV map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TlvMapping {
    /// Option class.
    pub class: u16,
    /// Option type (bit 7 is the critical bit).
    pub ty: u8,
    /// Option data length in bytes: a multiple of 4, 4..=8.
    pub len: u8,
    /// The field: `tun_metadata<index>`.
    pub index: u8,
}

impl fmt::Display for TlvMapping {
    /// OVS's syntax: `{class=0x102,type=0x80,len=4}->tun_metadata0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{class={:#x},type={:#x},len={}}}->tun_metadata{}",
            self.class, self.ty, self.len, self.index
        )
    }
}

/// Why a TLV map change or mapping text was refused (OVS's `NXTTMFC_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlvError {
    /// The text is not `{class=C,type=T,len=L}->tun_metadataN`.
    Syntax(String),
    /// `len` not a multiple of 4 in 4..=8 (`NXTTMFC_BAD_OPT_LEN`).
    BadLength(TlvMapping),
    /// No field `tun_metadataN` of that index (`NXTTMFC_BAD_FIELD_IDX`).
    BadField(TlvMapping),
    /// The field is already mapped (`NXTTMFC_ALREADY_MAPPED`).
    AlreadyMapped(TlvMapping),
    /// The class and type are already mapped (`NXTTMFC_DUP_ENTRY`).
    Duplicate(TlvMapping),
    /// A deletion names a mapping the map does not have
    /// (`NXTTMFC_INVALID_TLV_DEL`).
    NotMapped(TlvMapping),
}

impl fmt::Display for TlvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlvError::Syntax(s) => write!(
                f,
                "{s:?}: not a TLV mapping ({{class=C,type=T,len=L}}->tun_metadataN)"
            ),
            TlvError::BadLength(m) => write!(
                f,
                "{m}: len must be 4 or 8 (a multiple of 4, at most {TUN_METADATA_MAX_LEN})"
            ),
            TlvError::BadField(m) => write!(
                f,
                "{m}: no such field (tun_metadata0 to tun_metadata{})",
                TUN_METADATA_FIELDS - 1
            ),
            TlvError::AlreadyMapped(m) => {
                write!(f, "{m}: tun_metadata{} is already mapped", m.index)
            }
            TlvError::Duplicate(m) => write!(
                f,
                "{m}: class {:#x} type {:#x} is already mapped",
                m.class, m.ty
            ),
            TlvError::NotMapped(m) => write!(f, "{m}: no such mapping"),
        }
    }
}

impl std::error::Error for TlvError {}

/// The TLV map: which Geneve option each `tun_metadataN` is. Small and
/// `Copy`: each PMD keeps its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlvMap {
    /// By field index: (class, type, len).
    fields: [Option<(u16, u8, u8)>; TUN_METADATA_FIELDS],
}

impl TlvMap {
    /// The mapping of field `index`, if it is mapped.
    pub fn field(&self, index: usize) -> Option<TlvMapping> {
        let (class, ty, len) = (*self.fields.get(index)?)?;
        Some(TlvMapping {
            class,
            ty,
            len,
            index: index as u8,
        })
    }

    /// Every mapping, by field index.
    pub fn mappings(&self) -> impl Iterator<Item = TlvMapping> + '_ {
        (0..TUN_METADATA_FIELDS).filter_map(|i| self.field(i))
    }

    /// Option bytes the mappings take in all.
    pub fn allocated(&self) -> usize {
        self.mappings().map(|m| usize::from(m.len)).sum()
    }

    /// Adds `add`, all or nothing.
    pub fn add(&mut self, add: &[TlvMapping]) -> Result<(), TlvError> {
        let mut next = *self;
        for &m in add {
            if m.len == 0 || m.len % 4 != 0 || m.len > TUN_METADATA_MAX_LEN {
                return Err(TlvError::BadLength(m));
            }
            let taken = |(c, t, _): &(u16, u8, u8)| (*c, *t) == (m.class, m.ty);
            let duplicate = next.fields.iter().flatten().any(taken);
            match next.fields.get_mut(usize::from(m.index)) {
                None => return Err(TlvError::BadField(m)),
                Some(Some(_)) => return Err(TlvError::AlreadyMapped(m)),
                Some(None) if duplicate => return Err(TlvError::Duplicate(m)),
                Some(slot) => *slot = Some((m.class, m.ty, m.len)),
            }
        }
        *self = next;
        Ok(())
    }

    /// Removes `del` (each exactly as mapped), all or nothing.
    pub fn del(&mut self, del: &[TlvMapping]) -> Result<(), TlvError> {
        let mut next = *self;
        for &m in del {
            match next.fields.get_mut(usize::from(m.index)) {
                Some(slot) if *slot == Some((m.class, m.ty, m.len)) => *slot = None,
                _ => return Err(TlvError::NotMapped(m)),
            }
        }
        *self = next;
        Ok(())
    }

    /// The `tun_metadata` fields of a Geneve option area (see the module
    /// doc) in `md`, cleared first. Allocation-free, no panic on any bytes.
    #[inline]
    pub fn decode(&self, opts: &[u8], md: &mut TunMd) -> Result<(), PopError> {
        *md = TunMd::default();
        for opt in geneve_options(opts) {
            let (class, ty, data) = opt?;
            let found = self.fields.iter().enumerate().find_map(|(i, f)| {
                f.filter(|&(c, t, _)| (c, t) == (class, ty))
                    .map(|f| (i, f.2))
            });
            match found {
                Some((i, l)) if usize::from(l) == data.len() => {
                    let v = data.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b));
                    if let Some(slot) = md.values.get_mut(i) {
                        *slot = v;
                        md.present |= 1 << i;
                    }
                }
                Some(_) => return Err(PopError::GeneveOptionLength),
                None if ty & GENEVE_CRIT_OPT_TYPE != 0 => return Err(PopError::GeneveCritical),
                None => {}
            }
        }
        Ok(())
    }

    /// The Geneve options for `key`'s present, mapped fields, by field index
    /// (what a push to a Geneve port carries); marks in `mask` the bits that
    /// decided them.
    pub fn encode(&self, key: &FlowKey, mask: &mut FlowKey) -> Vec<u8> {
        let mut out = Vec::new();
        for m in self.mappings() {
            let bit = 1u64 << m.index;
            mask.tun_md_present |= bit;
            if key.tun_md_present & bit == 0 {
                continue;
            }
            let i = usize::from(m.index);
            let v = key.tun_md.get(i).copied().unwrap_or(0);
            if let Some(w) = mask.tun_md.get_mut(i) {
                *w = u64::MAX;
            }
            out.extend_from_slice(&m.class.to_be_bytes());
            out.push(m.ty);
            out.push(m.len / 4);
            let bytes = v.to_be_bytes();
            out.extend_from_slice(bytes.get(8 - usize::from(m.len)..).unwrap_or_default());
        }
        out
    }
}

/// Each `tun_metadata` field a flow reads or writes, with how many of its
/// low bits it needs: `(N, bits)`, in the order found.
pub fn flow_uses(fm: &FlowMod) -> Vec<(usize, u16)> {
    fn width(v: u128) -> u16 {
        (128 - v.leading_zeros()) as u16
    }
    fn sub(out: &mut Vec<(usize, u16)>, s: &Subfield) {
        if let Some(i) = s.field.tun_metadata_index() {
            out.push((i, s.ofs + s.n_bits));
        }
    }
    let mut out = Vec::new();
    // A match needs the bits of its value: the slot's bits above the
    // mapping's width are 0 in every packet, so a mask over them is
    // harmless (an unmasked match masks the whole slot).
    let m = &fm.match_;
    for i in 0..TUN_METADATA_FIELDS {
        let mask = m.mask.tun_md.get(i).copied().unwrap_or(0);
        if mask != 0 || m.mask.tun_md_present & (1 << i) != 0 {
            let value = m.key.tun_md.get(i).copied().unwrap_or(0);
            out.push((i, width(u128::from(value))));
        }
    }
    for a in &fm.actions {
        match a {
            Action::SetField { field, value, .. } => {
                if let Some(i) = field.tun_metadata_index() {
                    out.push((i, width(*value)));
                }
            }
            Action::Load { dst, .. } | Action::OutputReg(dst) => sub(&mut out, dst),
            Action::Move { src, dst } => {
                sub(&mut out, src);
                sub(&mut out, dst);
            }
            Action::Learn(spec) => {
                for f in &spec.specs {
                    match f {
                        LearnField::MatchField { dst, src }
                        | LearnField::LoadField { src, dst } => {
                            sub(&mut out, src);
                            sub(&mut out, dst);
                        }
                        LearnField::MatchValue { dst, .. } | LearnField::LoadValue { dst, .. } => {
                            sub(&mut out, dst)
                        }
                        LearnField::Output { src } => sub(&mut out, src),
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether `map` maps every `tun_metadata` field `fm` uses, wide enough for
/// the bits it uses (OVS refuses a flow on an unmapped field); the error
/// names the field and the reason.
pub fn check_flow(fm: &FlowMod, map: &TlvMap) -> Result<(), String> {
    for (i, bits) in flow_uses(fm) {
        let Some(m) = map.field(i) else {
            return Err(format!(
                "tun_metadata{i}: not mapped to a Geneve option (add-tlv-map first)"
            ));
        };
        if bits > u16::from(m.len) * 8 {
            return Err(format!(
                "tun_metadata{i}: uses {bits} bits, its mapping {m} has {}",
                u16::from(m.len) * 8
            ));
        }
    }
    Ok(())
}

/// Parses a comma-separated list of mappings,
/// `{class=0xffff,type=0,len=4}->tun_metadata0,{...}->tun_metadata1`.
pub fn parse_mappings(text: &str) -> Result<Vec<TlvMapping>, TlvError> {
    let bad = || TlvError::Syntax(text.to_string());
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let body = rest.strip_prefix('{').ok_or_else(bad)?;
        let (fields, after) = body.split_once('}').ok_or_else(bad)?;
        let after = after.trim_start().strip_prefix("->").ok_or_else(bad)?;
        let after = after.trim_start();
        let name_end = after.find(',').unwrap_or(after.len());
        let (name, tail) = after.split_at(name_end);
        rest = tail.strip_prefix(',').unwrap_or(tail).trim_start();
        let index = name
            .trim()
            .strip_prefix("tun_metadata")
            .and_then(|n| n.parse::<u8>().ok())
            .ok_or_else(bad)?;
        let (mut class, mut ty, mut len) = (None, None, None);
        for kv in fields.split(',') {
            let (k, v) = kv.split_once('=').ok_or_else(bad)?;
            let v = v.trim();
            let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                Some(h) => u32::from_str_radix(h, 16),
                None => v.parse::<u32>(),
            }
            .map_err(|_| bad())?;
            match k.trim() {
                "class" => class = Some(u16::try_from(n).map_err(|_| bad())?),
                "type" => ty = Some(u8::try_from(n).map_err(|_| bad())?),
                "len" => len = Some(u8::try_from(n).map_err(|_| bad())?),
                _ => return Err(bad()),
            }
        }
        let (Some(class), Some(ty), Some(len)) = (class, ty, len) else {
            return Err(bad());
        };
        out.push(TlvMapping {
            class,
            ty,
            len,
            index,
        });
    }
    Ok(out)
}

/// `dump-tlv-map`'s table, as `ovs-ofctl dump-tlv-map` prints it.
pub fn format_map(map: &TlvMap) -> String {
    let mut s = format!(
        " max option space={} max fields={}\n allocated option space={}\n\n mapping table:\n  class  type  length  match field\n ------  ----  ------  --------------\n",
        TUN_METADATA_FIELDS * usize::from(TUN_METADATA_MAX_LEN),
        TUN_METADATA_FIELDS,
        map.allocated()
    );
    for m in map.mappings() {
        s.push_str(&format!(
            " {:>#6x}  {:>#4x}  {:<6}  tun_metadata{}\n",
            m.class, m.ty, m.len, m.index
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ovn() -> TlvMapping {
        TlvMapping {
            class: 0x0102,
            ty: 0x80,
            len: 4,
            index: 0,
        }
    }

    #[test]
    fn parse_and_print_round_trip() {
        let m = parse_mappings("{class=0x102,type=0x80,len=4}->tun_metadata0,{class=0xffff,type=3,len=8}->tun_metadata2").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0], ovn());
        assert_eq!(
            m[1].to_string(),
            "{class=0xffff,type=0x3,len=8}->tun_metadata2"
        );
        for bad in [
            "",
            "{class=1,type=2}->tun_metadata0",
            "{class=1,type=2,len=4}->reg0",
            "{class=0x10000,type=0,len=4}->tun_metadata0",
            "class=1",
        ] {
            if bad.is_empty() {
                assert_eq!(parse_mappings(bad), Ok(vec![]));
            } else {
                assert!(
                    matches!(parse_mappings(bad), Err(TlvError::Syntax(_))),
                    "{bad}"
                );
            }
        }
    }

    #[test]
    fn add_and_del_are_all_or_nothing() {
        let mut map = TlvMap::default();
        map.add(&[ovn()]).unwrap();
        let second = TlvMapping {
            index: 1,
            ty: 1,
            ..ovn()
        };
        let refused = [
            (TlvMapping { len: 6, ..second }, "len must be 4 or 8"),
            (TlvMapping { len: 12, ..second }, "len must be 4 or 8"),
            (TlvMapping { index: 4, ..second }, "no such field"),
            (
                TlvMapping { ty: 2, ..ovn() },
                "tun_metadata0 is already mapped",
            ),
            (
                TlvMapping { index: 2, ..ovn() },
                "class 0x102 type 0x80 is already mapped",
            ),
        ];
        for (bad, why) in refused {
            let before = map;
            let e = map.add(&[second, bad]).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
            assert_eq!(map, before, "nothing applied");
        }
        map.add(&[second]).unwrap();
        assert_eq!(map.allocated(), 8);
        let e = map
            .del(&[second, TlvMapping { len: 8, ..ovn() }])
            .unwrap_err();
        assert_eq!(e, TlvError::NotMapped(TlvMapping { len: 8, ..ovn() }));
        assert_eq!(map.mappings().count(), 2);
        map.del(&[second]).unwrap();
        assert_eq!(map.mappings().collect::<Vec<_>>(), [ovn()]);
    }

    #[test]
    fn decode_fills_mapped_fields_and_refuses_what_ovs_refuses() {
        let mut map = TlvMap::default();
        map.add(&[
            ovn(),
            TlvMapping {
                class: 0xffff,
                ty: 1,
                len: 8,
                index: 3,
            },
        ])
        .unwrap();
        let mut md = TunMd::default();
        // An unmapped non-critical option, then both mapped ones.
        let opts = [
            0x00, 0x05, 0x01, 1, 0xaa, 0xbb, 0xcc, 0xdd, //
            0x01, 0x02, 0x80, 1, 0, 0, 0, 0x2a, //
            0xff, 0xff, 0x01, 2, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        assert_eq!(map.decode(&opts, &mut md), Ok(()));
        assert_eq!(md.present, 0b1001);
        assert_eq!(md.values, [0x2a, 0, 0, 0x0102_0304_0506_0708]);
        let mut k = FlowKey::default();
        md.to_key(&mut k);
        // Encoding gives the mapped ones back, by field index.
        let mut mask = FlowKey::default();
        let enc = map.encode(&k, &mut mask);
        assert_eq!(enc, opts[8..]);
        assert_eq!(mask.tun_md_present, 0b1001);
        assert_eq!(mask.tun_md, [u64::MAX, 0, 0, u64::MAX]);
        // A mapped option of another length; an unknown critical one; an
        // option running past the area.
        let wrong_len = [0x01, 0x02, 0x80, 2, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(
            map.decode(&wrong_len, &mut md),
            Err(PopError::GeneveOptionLength)
        );
        let critical = [0x00, 0x05, 0x81, 1, 0, 0, 0, 0];
        assert_eq!(
            map.decode(&critical, &mut md),
            Err(PopError::GeneveCritical)
        );
        let past = [0x00, 0x05, 0x01, 2, 0, 0, 0, 0];
        assert_eq!(map.decode(&past, &mut md), Err(PopError::GeneveOptions));
        // No options: nothing present.
        assert_eq!(map.decode(&[], &mut md), Ok(()));
        assert_eq!(md, TunMd::default());
        // Any bytes: no panic.
        for len in 0..24 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 5) as u8).collect();
            let _ = map.decode(&junk, &mut md);
        }
    }

    #[test]
    fn dump_lists_mappings() {
        let mut map = TlvMap::default();
        map.add(&[ovn()]).unwrap();
        let s = format_map(&map);
        assert!(
            s.starts_with(" max option space=32 max fields=4\n allocated option space=4\n"),
            "{s}"
        );
        assert!(s.ends_with("  0x102  0x80  4       tun_metadata0\n"), "{s}");
    }
}
