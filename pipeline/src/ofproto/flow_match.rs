//! [`Match`]: a flow key plus a wildcard mask, OVS's `struct match`.
//!
//! The mask is a [`FlowKey`] whose 1-bits are the bits that matter. The invariant
//! `key == key & mask` holds for every `Match` built through this API, so two
//! matches are equal exactly when their fields are equal, and
//! [`Match::matches`] is one masked compare per word.

use super::field::{Field, Prereq, OFP10_VLAN_NONE};
use crate::flow_key::{FlowKey, FLOW_KEY_WORDS, VLAN_CFI, VLAN_PCP_MASK, VLAN_VID_MASK};

/// A flow match: `key` holds the values, `mask` the bits that matter.
/// Invariant: `key == key & mask` (see [`Match::normalize`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Match {
    /// Values; bits outside `mask` are zero.
    pub key: FlowKey,
    /// 1-bits are the bits a packet must agree on.
    pub mask: FlowKey,
}

/// A match names a field whose prerequisites it does not pin down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: prerequisites not met (needs {})", .field.name(), .prereq.describe())]
pub struct PrereqError {
    /// The field whose prerequisites are missing.
    pub field: Field,
    /// What it needs.
    pub prereq: Prereq,
}

impl Match {
    /// The match that matches everything.
    #[inline]
    pub fn catchall() -> Match {
        Match::default()
    }

    /// A match from a key and mask; bits of `key` outside `mask` are cleared.
    #[inline]
    pub fn new(key: FlowKey, mask: FlowKey) -> Match {
        let mut m = Match { key, mask };
        m.normalize();
        m
    }

    /// An exact match on every bit of `key`.
    pub fn exact(key: &FlowKey) -> Match {
        let mut mask = FlowKey::default();
        for w in mask.words_mut() {
            *w = u64::MAX;
        }
        Match { key: *key, mask }
    }

    /// Restores the invariant `key == key & mask`.
    #[inline]
    pub fn normalize(&mut self) {
        let mask = *self.mask.words();
        for (k, m) in self.key.words_mut().iter_mut().zip(mask) {
            *k &= m;
        }
    }

    /// Whether the packet key agrees with the match on every masked bit.
    #[inline]
    pub fn matches(&self, pkt: &FlowKey) -> bool {
        let (k, m, p) = (self.key.words(), self.mask.words(), pkt.words());
        let mut diff = 0u64;
        for i in 0..FLOW_KEY_WORDS {
            diff |= (p[i] & m[i]) ^ k[i];
        }
        diff == 0
    }

    /// Whether the match has no masked bit (matches every packet).
    #[inline]
    pub fn is_catchall(&self) -> bool {
        self.mask.words().iter().all(|&w| w == 0)
    }

    /// Sets `field` to `value` under `mask` (both in the field's width): the
    /// field's bits in the match mask become `mask`, its key bits `value & mask`.
    /// Bits of other fields sharing storage are untouched. No quirks: see
    /// [`Match::set_field`] for OVS's per-field semantics.
    pub fn set_masked(&mut self, field: Field, value: u128, mask: u128) {
        field.set_raw(&mut self.mask, mask);
        field.set_raw(&mut self.key, value & mask);
    }

    /// Sets `field` as `ovs-ofctl` does for `field=value[/mask]` (OVS `mf_set` /
    /// `match_set_*`), with its quirks:
    ///
    /// * `dl_vlan=N` matches a tag with VID N: TCI `0x1000|N`, mask `0x1fff`;
    ///   `dl_vlan=0xffff` matches "no tag": TCI 0, mask `0xffff`.
    /// * `dl_vlan_pcp=P` matches a tag with priority P: TCI `0x1000|P<<13`, mask
    ///   `0xf000` (CFI and PCP bits), so it implies a tag is present.
    /// * Everything else is [`Match::set_masked`]; `mask = None` is exact.
    pub fn set_field(&mut self, field: Field, value: u128, mask: Option<u128>) {
        let full = field.full_mask();
        match field {
            Field::DlVlan if mask.is_none() => {
                if value == u128::from(OFP10_VLAN_NONE) {
                    self.key.vlan_tci[0] = 0;
                    self.mask.vlan_tci[0] = 0xffff;
                } else {
                    let vid = value as u16 & VLAN_VID_MASK;
                    self.key.vlan_tci[0] =
                        (self.key.vlan_tci[0] & !(VLAN_VID_MASK | VLAN_CFI)) | vid | VLAN_CFI;
                    self.mask.vlan_tci[0] |= VLAN_VID_MASK | VLAN_CFI;
                }
            }
            Field::VlanPcp if mask.is_none() => {
                let pcp = ((value as u16) << 13) & VLAN_PCP_MASK;
                self.key.vlan_tci[0] =
                    (self.key.vlan_tci[0] & !(VLAN_PCP_MASK | VLAN_CFI)) | pcp | VLAN_CFI;
                self.mask.vlan_tci[0] |= VLAN_PCP_MASK | VLAN_CFI;
            }
            // OVS's match_set_icmp_type/code: the 8-bit value lives in the 16-bit
            // tp_src/tp_dst, matched on all 16 bits.
            Field::IcmpType | Field::Icmpv6Type if mask.is_none() => {
                self.key.tp_src = value as u16 & 0xff;
                self.mask.tp_src = 0xffff;
            }
            Field::IcmpCode | Field::Icmpv6Code if mask.is_none() => {
                self.key.tp_dst = value as u16 & 0xff;
                self.mask.tp_dst = 0xffff;
            }
            _ => self.set_masked(field, value, mask.unwrap_or(full) & full),
        }
        self.normalize();
    }

    /// The field's value and mask, in the field's width.
    #[inline]
    pub fn get(&self, field: Field) -> (u128, u128) {
        (field.get(&self.key), field.get(&self.mask))
    }

    /// Clears the field from the match (wildcards it).
    pub fn clear(&mut self, field: Field) {
        field.set_raw(&mut self.mask, 0);
        field.set_raw(&mut self.key, 0);
    }

    /// Whether the match looks at any bit of `field`.
    #[inline]
    pub fn has(&self, field: Field) -> bool {
        field.get(&self.mask) != 0
    }

    /// Checks that every field the match looks at has its prerequisites pinned down
    /// (OVS rejects such flows with "prerequisites not met").
    ///
    /// The check is by storage, since fields share it (`tp_src` is also
    /// `icmp_type`, `nw_src` also `arp_spa`): masked `nw_src`/`nw_dst` need IPv4 or
    /// ARP, `nw_proto` IP or ARP, `nw_tos`/`nw_ttl`/`nw_frag` IP, IPv6 fields IPv6,
    /// `tp_src`/`tp_dst` TCP, UDP, SCTP, ICMP or ICMPv6, `tcp_flags` TCP,
    /// `arp_sha`/`arp_tha` ARP. The error names the field by its `ovs-ofctl` name.
    /// The flow parser checks each field by the name the user wrote, which is
    /// stricter (`udp,tcp_src=80` fails there).
    pub fn check_prereqs(&self) -> Result<(), PrereqError> {
        let (k, m) = (&self.key, &self.mask);
        let err = |field, prereq| Err(PrereqError { field, prereq });
        let ok = |p: Prereq| p.ok_for_match(k, m);
        if (m.nw_src | m.nw_dst) != 0 && !ok(Prereq::Ipv4) && !ok(Prereq::Arp) {
            let f = if m.nw_src != 0 {
                Field::IpSrc
            } else {
                Field::IpDst
            };
            return err(f, Prereq::Ipv4);
        }
        if m.nw_proto != 0 && !ok(Prereq::IpAny) && !ok(Prereq::Arp) {
            return err(Field::IpProto, Prereq::IpAny);
        }
        for (bits, f) in [
            (m.nw_tos & 0xfc, Field::NwTos),
            (m.nw_tos & 0x03, Field::NwEcn),
            (m.nw_ttl, Field::NwTtl),
            (m.nw_frag, Field::IpFrag),
        ] {
            if bits != 0 && !ok(Prereq::IpAny) {
                return err(f, Prereq::IpAny);
            }
        }
        for (set, f) in [
            (m.ipv6_src != [0; 16], Field::Ipv6Src),
            (m.ipv6_dst != [0; 16], Field::Ipv6Dst),
            (m.ipv6_label != 0, Field::Ipv6Label),
        ] {
            if set && !ok(Prereq::Ipv6) {
                return err(f, Prereq::Ipv6);
            }
        }
        let l4 = ok(Prereq::TcpUdpSctp) || ok(Prereq::Icmpv4) || ok(Prereq::Icmpv6);
        if m.tp_src != 0 && !l4 {
            return err(Field::TpSrc, Prereq::TcpUdpSctp);
        }
        if m.tp_dst != 0 && !l4 {
            return err(Field::TpDst, Prereq::TcpUdpSctp);
        }
        if m.tcp_flags != 0 && !ok(Prereq::Tcp) {
            return err(Field::TcpFlags, Prereq::Tcp);
        }
        if m.arp_sha != [0; 6] && !ok(Prereq::Arp) {
            return err(Field::ArpSha, Prereq::Arp);
        }
        if m.arp_tha != [0; 6] && !ok(Prereq::Arp) {
            return err(Field::ArpTha, Prereq::Arp);
        }
        Ok(())
    }

    /// Whether every packet this match matches is also matched by `general`: for
    /// each bit `general` looks at, `self` looks at it too with the same value.
    /// This is the `del-flows` (loose) / `dump-flows` filter test (OVS
    /// `cls_rule_is_loose_match` / `match_covers`).
    pub fn is_covered_by(&self, general: &Match) -> bool {
        let (gk, gm) = (general.key.words(), general.mask.words());
        let (sk, sm) = (self.key.words(), self.mask.words());
        (0..FLOW_KEY_WORDS).all(|i| gm[i] & !sm[i] == 0 && (sk[i] & gm[i]) == gk[i])
    }

    /// Bitwise-ORs `other`'s mask into this match's mask (for building megaflow
    /// masks); the key is re-normalized.
    pub fn union_mask(&mut self, other: &FlowKey) {
        let o = *other.words();
        for (m, w) in self.mask.words_mut().iter_mut().zip(o) {
            *m |= w;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow_key::{ETH_TYPE_IPV4, IPPROTO_TCP};

    #[test]
    fn catchall_matches_everything() {
        let m = Match::catchall();
        assert!(m.is_catchall());
        assert!(m.matches(&FlowKey::default()));
        let k = FlowKey {
            in_port: 3,
            ..FlowKey::default()
        };
        assert!(m.matches(&k));
    }

    #[test]
    fn masked_fields() {
        let mut m = Match::catchall();
        m.set_field(Field::EthDst, 0x0100_0000_0000, Some(0x0100_0000_0000));
        let mut k = FlowKey {
            dl_dst: [0xff; 6],
            ..FlowKey::default()
        };
        assert!(m.matches(&k));
        k.dl_dst[0] = 0xfe;
        assert!(!m.matches(&k));
        assert_eq!(m.key.dl_dst, [1, 0, 0, 0, 0, 0]);
        assert!(!m.is_catchall());
    }

    #[test]
    fn dl_vlan_quirks() {
        let mut m = Match::catchall();
        m.set_field(Field::DlVlan, 1, None);
        assert_eq!((m.key.vlan_tci[0], m.mask.vlan_tci[0]), (0x1001, 0x1fff));
        let mut m = Match::catchall();
        m.set_field(Field::DlVlan, 0xffff, None);
        assert_eq!((m.key.vlan_tci[0], m.mask.vlan_tci[0]), (0, 0xffff));
        let mut m = Match::catchall();
        m.set_field(Field::VlanPcp, 5, None);
        assert_eq!((m.key.vlan_tci[0], m.mask.vlan_tci[0]), (0xb000, 0xf000));
        let mut m = Match::catchall();
        m.set_field(Field::VlanTci, 0x0001, Some(0x0fff));
        assert_eq!((m.key.vlan_tci[0], m.mask.vlan_tci[0]), (0x0001, 0x0fff));
    }

    #[test]
    fn prereq_errors_name_field() {
        let mut m = Match::catchall();
        m.set_field(Field::IpSrc, 0x0a00_0001, None);
        let e = m.check_prereqs().unwrap_err();
        assert_eq!(e.to_string(), "nw_src: prerequisites not met (needs ip)");
        let mut m = Match::catchall();
        m.set_field(Field::Ipv6Src, 1, None);
        let e = m.check_prereqs().unwrap_err();
        assert_eq!(
            e.to_string(),
            "ipv6_src: prerequisites not met (needs ipv6)"
        );
        let mut m = Match::catchall();
        m.set_field(Field::EthType, u128::from(ETH_TYPE_IPV4), None);
        m.set_field(Field::IpProto, u128::from(IPPROTO_TCP), None);
        m.set_field(Field::TcpFlags, 2, None);
        assert!(m.check_prereqs().is_ok());
    }

    #[test]
    fn covered_by() {
        let mut general = Match::catchall();
        general.set_field(Field::InPort, 3, None);
        let mut specific = general;
        specific.set_field(Field::EthDst, 1, None);
        assert!(specific.is_covered_by(&general));
        assert!(!general.is_covered_by(&specific));
        assert!(specific.is_covered_by(&Match::catchall()));
    }
}
