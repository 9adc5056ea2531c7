//! Bonds: a bridge port ("bundle") of several interfaces, as OVS's `lib/bond.c`
//! runs them for `NORMAL`.
//!
//! # Layer
//!
//! Management thread only, pure: the caller feeds each member's carrier and
//! LACP verdict in ([`Bond::update`]) and [`super::normal::Normal`] asks the
//! bond which member a frame leaves by ([`Bond::choose_member`]) and whether a
//! frame received on a member is taken at all ([`Bond::admissibility`]).
//!
//! # Model
//!
//! * A member is an interface with its own OpenFlow port. It *may be enabled*
//!   when its carrier is up and, with LACP on, LACP has it collecting and
//!   distributing (OVS `may_enable`); it is *enabled* when it may be (no
//!   `updelay`/`downdelay` yet).
//! * `active-backup`: one active member carries everything. It changes only when
//!   it stops being enabled: the first enabled member in configuration order
//!   takes over (OVS keeps the new one when the old one returns: no revert).
//! * `balance-slb`: a frame leaves by a member chosen from a hash of its source
//!   MAC and VLAN over the enabled members.
//! * `balance-tcp`: by a hash of its IP addresses, protocol and L4 ports (plain
//!   source/destination MACs for non-IP frames); it needs LACP, as in OVS.
//! * The bond's MACs are learned on the bundle ([`Bond::bundle`], its first
//!   member's OpenFlow port, which is also what `fdb/show` prints, as OVS prints
//!   "a port" of the bundle).
//!
//! Every change of a member's enabled state or of the active member moves
//! [`Bond::generation`]: the `NORMAL` megaflows must then be revalidated.
//!
//! # Deviations from OVS
//!
//! * No hash buckets and no rebalancing: SLB and TCP hashes pick among the
//!   enabled members directly (`hash % n`), so a member going down moves flows
//!   of other members too.
//! * No gratuitous-ARP exception in SLB's "drop if the source moved" rule, no
//!   `bond-primary`, no `lacp-fallback-ab`, no `updelay`/`downdelay`.

use crate::flow_key::{
    FlowKey, ETH_TYPE_IPV4, ETH_TYPE_IPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
};

/// How a bond spreads frames over its members (OVS `bond_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BondMode {
    /// One active member; the others wait.
    ActiveBackup,
    /// Source MAC and VLAN hash.
    BalanceSlb,
    /// L3/L4 hash; needs LACP.
    BalanceTcp,
}

impl BondMode {
    /// `active-backup`, `balance-slb` or `balance-tcp`.
    pub fn parse(s: &str) -> Option<BondMode> {
        match s {
            "active-backup" => Some(BondMode::ActiveBackup),
            "balance-slb" => Some(BondMode::BalanceSlb),
            "balance-tcp" => Some(BondMode::BalanceTcp),
            _ => None,
        }
    }

    /// The name OVS uses.
    pub fn as_str(self) -> &'static str {
        match self {
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceSlb => "balance-slb",
            BondMode::BalanceTcp => "balance-tcp",
        }
    }
}

/// Where LACP stands on a bond (OVS `enum lacp_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LacpStatus {
    /// `lacp=off`.
    Off,
    /// LACP on, no partner agreed yet: the bond carries nothing.
    Configured,
    /// LACP on and at least one member is in a negotiated aggregation.
    Negotiated,
}

impl LacpStatus {
    /// As `bond/show` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            LacpStatus::Off => "off",
            LacpStatus::Configured => "configured",
            LacpStatus::Negotiated => "negotiated",
        }
    }
}

/// One member of a bond.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BondMember {
    /// The interface name.
    pub name: String,
    /// Its OpenFlow port.
    pub ofport: u32,
    /// Carrier, as last reported.
    pub link: bool,
    /// Carrier up and (with LACP) collecting and distributing.
    pub may_enable: bool,
    /// Carries traffic.
    pub enabled: bool,
}

/// What to do with a frame received on a member (OVS `enum bond_verdict`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admissibility {
    /// Take it.
    Accept,
    /// Drop it, for this reason (a trace note).
    Drop(&'static str),
    /// Take it unless its source MAC is learned on another bundle (SLB: it is
    /// probably our own frame coming back on another member).
    DropIfMoved,
}

/// A bond: its mode and members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bond {
    name: String,
    mode: BondMode,
    members: Vec<BondMember>,
    active: Option<u32>,
    lacp: LacpStatus,
    generation: u64,
}

impl Bond {
    /// A bond named `name` of `members` (interface name, OpenFlow port; at least
    /// one), all down until the first [`Bond::update`]; `lacp` says whether
    /// LACP is on.
    pub fn new(name: &str, mode: BondMode, members: Vec<(String, u32)>, lacp: bool) -> Bond {
        Bond {
            name: name.to_string(),
            mode,
            members: members
                .into_iter()
                .map(|(name, ofport)| BondMember {
                    name,
                    ofport,
                    link: false,
                    may_enable: false,
                    enabled: false,
                })
                .collect(),
            active: None,
            lacp: if lacp {
                LacpStatus::Configured
            } else {
                LacpStatus::Off
            },
            generation: 0,
        }
    }

    /// The bond (port) name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The mode.
    pub fn mode(&self) -> BondMode {
        self.mode
    }

    /// The members, in configuration order.
    pub fn members(&self) -> &[BondMember] {
        &self.members
    }

    /// The member with OpenFlow port `ofport`.
    pub fn member(&self, ofport: u32) -> Option<&BondMember> {
        self.members.iter().find(|m| m.ofport == ofport)
    }

    /// Whether `ofport` is a member.
    pub fn has_member(&self, ofport: u32) -> bool {
        self.member(ofport).is_some()
    }

    /// The port the bond's MACs are learned on: its first member's.
    pub fn bundle(&self) -> u32 {
        self.members.first().map_or(0, |m| m.ofport)
    }

    /// The active member (active-backup's carrier of all traffic; in the other
    /// modes the member multicast is accepted on).
    pub fn active(&self) -> Option<u32> {
        self.active
    }

    /// The LACP status.
    pub fn lacp_status(&self) -> LacpStatus {
        self.lacp
    }

    /// Moves whenever a member's enabled state or the active member changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Takes each member's carrier (`link`) and, with LACP on, whether LACP lets
    /// it carry traffic (`lacp_may_enable`: collecting and distributing) and
    /// whether the bond's LACP negotiated at all; re-elects the active member if
    /// it is no longer enabled. Returns whether anything that forwarding depends
    /// on changed (then [`Bond::generation`] moved).
    pub fn update(
        &mut self,
        link: impl Fn(u32) -> bool,
        lacp_may_enable: impl Fn(u32) -> bool,
        lacp_negotiated: bool,
    ) -> bool {
        let lacp_on = self.lacp != LacpStatus::Off;
        let mut changed = false;
        let status = match (lacp_on, lacp_negotiated) {
            (false, _) => LacpStatus::Off,
            (true, false) => LacpStatus::Configured,
            (true, true) => LacpStatus::Negotiated,
        };
        if status != self.lacp {
            self.lacp = status;
            changed = true;
        }
        for m in &mut self.members {
            m.link = link(m.ofport);
            m.may_enable = m.link && (!lacp_on || lacp_may_enable(m.ofport));
            if m.enabled != m.may_enable {
                m.enabled = m.may_enable;
                changed = true;
            }
        }
        let active_ok = self
            .active
            .and_then(|a| self.member(a))
            .is_some_and(|m| m.enabled);
        if !active_ok {
            let next = self.members.iter().find(|m| m.enabled).map(|m| m.ofport);
            if next != self.active {
                self.active = next;
                changed = true;
            }
        }
        if changed {
            self.generation += 1;
        }
        changed
    }

    /// What to do with a frame to `dl_dst` received on member `member` (OVS
    /// `bond_check_admissibility`).
    pub fn admissibility(&self, member: u32, dl_dst: &[u8; 6]) -> Admissibility {
        let Some(m) = self.member(member) else {
            return Admissibility::Drop("not a bond member, dropping");
        };
        match self.lacp {
            // A partner that negotiated is trusted; it sends nothing on disabled
            // members.
            LacpStatus::Negotiated => {
                return if m.enabled || m.may_enable {
                    Admissibility::Accept
                } else {
                    Admissibility::Drop("bond member is disabled, dropping")
                };
            }
            LacpStatus::Configured => {
                return Admissibility::Drop("LACP negotiation incomplete, dropping");
            }
            LacpStatus::Off => {}
        }
        if self.mode == BondMode::BalanceTcp {
            return Admissibility::Drop("balance-tcp bond without LACP, dropping");
        }
        if dl_dst[0] & 1 != 0 && self.active != Some(member) {
            return Admissibility::Drop("multicast on a non-active bond member, dropping");
        }
        match self.mode {
            BondMode::ActiveBackup if self.active != Some(member) => {
                Admissibility::Drop("frame on an inactive active-backup member, dropping")
            }
            BondMode::BalanceSlb => Admissibility::DropIfMoved,
            _ => Admissibility::Accept,
        }
    }

    /// The member a frame of `flow` in VLAN `vlan` leaves by, or `None` when no
    /// member is enabled; marks in `wc` the key bits the choice read.
    pub fn choose_member(&self, flow: &FlowKey, vlan: u16, wc: &mut FlowKey) -> Option<u32> {
        if self.mode == BondMode::ActiveBackup {
            return self
                .active
                .filter(|&a| self.member(a).is_some_and(|m| m.enabled));
        }
        let enabled: Vec<u32> = self
            .members
            .iter()
            .filter(|m| m.enabled)
            .map(|m| m.ofport)
            .collect();
        if enabled.is_empty() {
            return None;
        }
        let h = match self.mode {
            BondMode::BalanceTcp => hash_l4(flow, wc),
            _ => {
                wc.dl_src = [0xff; 6];
                let mut h = mix(0, u64::from(vlan));
                h = mix(h, mac_u64(&flow.dl_src));
                h
            }
        };
        enabled.get((h % enabled.len() as u64) as usize).copied()
    }

    /// `ovs-appctl bond/show` for this bond: mode, LACP status, active member,
    /// then each member with its state.
    pub fn format_show(&self) -> String {
        let mut s = format!("---- {} ----\n", self.name);
        s.push_str(&format!("bond_mode: {}\n", self.mode.as_str()));
        s.push_str(&format!("lacp_status: {}\n", self.lacp.as_str()));
        let active = self
            .active
            .and_then(|a| self.member(a))
            .map_or("<none>", |m| m.name.as_str());
        s.push_str(&format!("active member: {active}\n"));
        for m in &self.members {
            s.push_str(&format!(
                "\nmember {}: {}\n",
                m.name,
                if m.enabled { "enabled" } else { "disabled" }
            ));
            if self.active == Some(m.ofport) {
                s.push_str("  active member\n");
            }
            s.push_str(&format!(
                "  may_enable: {}\n  link: {}\n",
                m.may_enable,
                if m.link { "up" } else { "down" }
            ));
        }
        s
    }
}

fn mac_u64(m: &[u8; 6]) -> u64 {
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(m);
    u64::from_be_bytes(b)
}

/// One round of a 64-bit mixer (splitmix64's finaliser over `h ^ v`).
fn mix(h: u64, v: u64) -> u64 {
    let mut z = (h ^ v).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// balance-tcp's hash: IP addresses and protocol, plus the ports of TCP, UDP
/// and SCTP; the MAC addresses for other frames. Marks what it reads.
fn hash_l4(flow: &FlowKey, wc: &mut FlowKey) -> u64 {
    let mut h = 0;
    match flow.dl_type {
        ETH_TYPE_IPV4 => {
            wc.nw_src = u32::MAX;
            wc.nw_dst = u32::MAX;
            wc.nw_proto = u8::MAX;
            h = mix(h, u64::from(flow.nw_src));
            h = mix(h, u64::from(flow.nw_dst));
        }
        ETH_TYPE_IPV6 => {
            wc.ipv6_src = [0xff; 16];
            wc.ipv6_dst = [0xff; 16];
            wc.nw_proto = u8::MAX;
            for half in [&flow.ipv6_src, &flow.ipv6_dst] {
                let (a, b) = half.split_at(8);
                let mut x = [0u8; 8];
                x.copy_from_slice(a);
                h = mix(h, u64::from_be_bytes(x));
                x.copy_from_slice(b);
                h = mix(h, u64::from_be_bytes(x));
            }
        }
        _ => {
            wc.dl_src = [0xff; 6];
            wc.dl_dst = [0xff; 6];
            h = mix(h, mac_u64(&flow.dl_src));
            return mix(h, mac_u64(&flow.dl_dst));
        }
    }
    h = mix(h, u64::from(flow.nw_proto));
    if matches!(flow.nw_proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
        wc.tp_src = u16::MAX;
        wc.tp_dst = u16::MAX;
        h = mix(h, u64::from(flow.tp_src) << 16 | u64::from(flow.tp_dst));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bond(mode: BondMode, lacp: bool) -> Bond {
        Bond::new(
            "bond0",
            mode,
            vec![("eth0".into(), 1), ("eth1".into(), 2)],
            lacp,
        )
    }

    #[test]
    fn active_backup_fails_over_and_does_not_revert() {
        let mut b = bond(BondMode::ActiveBackup, false);
        assert_eq!(b.active(), None);
        assert!(b.update(|_| true, |_| false, false));
        assert_eq!(b.active(), Some(1));
        let g = b.generation();
        assert!(!b.update(|_| true, |_| false, false));
        assert_eq!(b.generation(), g);
        // eth0 loses carrier: eth1 takes over.
        assert!(b.update(|p| p != 1, |_| false, false));
        assert_eq!(b.active(), Some(2));
        assert!(!b.member(1).unwrap().enabled);
        // eth0 back: eth1 stays active.
        assert!(b.update(|_| true, |_| false, false));
        assert_eq!(b.active(), Some(2));
        // Both down: no active member, nothing leaves.
        assert!(b.update(|_| false, |_| false, false));
        assert_eq!(b.active(), None);
        let mut wc = FlowKey::default();
        assert_eq!(b.choose_member(&FlowKey::default(), 0, &mut wc), None);
    }

    #[test]
    fn admissibility_follows_ovs() {
        let bcast = [0xff; 6];
        let uni = [2, 0, 0, 0, 0, 1];
        let mut ab = bond(BondMode::ActiveBackup, false);
        ab.update(|_| true, |_| false, false);
        assert_eq!(ab.admissibility(1, &uni), Admissibility::Accept);
        assert_eq!(
            ab.admissibility(2, &uni),
            Admissibility::Drop("frame on an inactive active-backup member, dropping")
        );
        assert_eq!(
            ab.admissibility(2, &bcast),
            Admissibility::Drop("multicast on a non-active bond member, dropping")
        );
        let mut slb = bond(BondMode::BalanceSlb, false);
        slb.update(|_| true, |_| false, false);
        assert_eq!(slb.admissibility(2, &uni), Admissibility::DropIfMoved);
        assert!(matches!(
            slb.admissibility(2, &bcast),
            Admissibility::Drop(_)
        ));
        let mut tcp = bond(BondMode::BalanceTcp, false);
        tcp.update(|_| true, |_| false, false);
        assert!(matches!(tcp.admissibility(1, &uni), Admissibility::Drop(_)));
        // LACP on: nothing before negotiation, then enabled members only.
        let mut l = bond(BondMode::BalanceTcp, true);
        l.update(|_| true, |_| false, false);
        assert_eq!(l.lacp_status(), LacpStatus::Configured);
        assert!(matches!(l.admissibility(1, &uni), Admissibility::Drop(_)));
        assert_eq!(l.active(), None);
        l.update(|_| true, |p| p == 2, true);
        assert_eq!(l.lacp_status(), LacpStatus::Negotiated);
        assert_eq!(l.admissibility(2, &bcast), Admissibility::Accept);
        assert!(matches!(l.admissibility(1, &uni), Admissibility::Drop(_)));
        assert_eq!(l.active(), Some(2));
    }

    #[test]
    fn balance_modes_hash_and_mark_what_they_read() {
        let mut tcp = bond(BondMode::BalanceTcp, true);
        tcp.update(|_| true, |_| true, true);
        let mut seen = [false; 3];
        for port in 0..64u16 {
            let flow = FlowKey {
                dl_type: ETH_TYPE_IPV4,
                nw_proto: IPPROTO_TCP,
                nw_src: 0x0a00_0001,
                nw_dst: 0x0a00_0002,
                tp_src: 1000 + port,
                tp_dst: 80,
                ..FlowKey::default()
            };
            let mut wc = FlowKey::default();
            let m = tcp.choose_member(&flow, 0, &mut wc).unwrap();
            seen[m as usize] = true;
            assert_eq!(
                (wc.nw_src, wc.nw_dst, wc.nw_proto, wc.tp_src, wc.tp_dst),
                (u32::MAX, u32::MAX, 0xff, 0xffff, 0xffff)
            );
            assert_eq!(wc.dl_src, [0; 6], "the L4 hash reads no MAC");
            // The same flow always takes the same member.
            assert_eq!(tcp.choose_member(&flow, 0, &mut wc), Some(m));
        }
        assert!(seen[1] && seen[2], "64 flows use both members");
        let mut slb = bond(BondMode::BalanceSlb, false);
        slb.update(|_| true, |_| false, false);
        let mut seen = [false; 3];
        for i in 0..64u8 {
            let flow = FlowKey {
                dl_src: [2, 0, 0, 0, 0, i],
                ..FlowKey::default()
            };
            let mut wc = FlowKey::default();
            seen[slb.choose_member(&flow, 0, &mut wc).unwrap() as usize] = true;
            assert_eq!(wc.dl_src, [0xff; 6]);
            assert_eq!(wc.nw_src, 0);
        }
        assert!(seen[1] && seen[2]);
        // One member down: everything on the other.
        slb.update(|p| p == 2, |_| false, false);
        for i in 0..16u8 {
            let flow = FlowKey {
                dl_src: [2, 0, 0, 0, 0, i],
                ..FlowKey::default()
            };
            assert_eq!(
                slb.choose_member(&flow, 0, &mut FlowKey::default()),
                Some(2)
            );
        }
    }

    #[test]
    fn bond_show_text() {
        let mut b = bond(BondMode::ActiveBackup, false);
        b.update(|p| p == 2, |_| false, false);
        assert_eq!(
            b.format_show(),
            "---- bond0 ----\nbond_mode: active-backup\nlacp_status: off\nactive member: eth1\n\
             \nmember eth0: disabled\n  may_enable: false\n  link: down\n\
             \nmember eth1: enabled\n  active member\n  may_enable: true\n  link: up\n"
        );
    }
}
