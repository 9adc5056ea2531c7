//! LACP (IEEE 802.1AX, formerly 802.3ad) for a bond, as OVS's `lib/lacp.c`
//! runs it: LACPDUs in and out, each member's partner, and which members may
//! carry traffic.
//!
//! # Layer
//!
//! Management thread only, pure: the slow path hands received LACPDUs to
//! [`Lacp::process_pdu`], calls [`Lacp::run`] periodically (it returns the
//! frames to send, one per member due), and asks [`Lacp::may_enable`] per
//! member when it updates the bond. Times are the caller's milliseconds.
//!
//! # The frame (802.1AX-2008 5.4.2)
//!
//! Ethernet to `01:80:c2:00:00:02`, ethertype 0x8809 (slow protocols), then:
//! subtype 1 (LACP), version 1; the actor TLV (type 1, length 20: system
//! priority, system MAC, key, port priority, port number, state, 3 reserved);
//! the partner TLV (type 2, length 20, the same fields as the actor saw its
//! partner); the collector TLV (type 3, length 16: max delay, 12 reserved); the
//! terminator (type 0, length 0) and 50 reserved bytes: 110 bytes after the
//! ethertype, 124 with the Ethernet header.
//!
//! # State machine (OVS's simplification of 802.1AX)
//!
//! * A member is *current* while LACPDUs arrive: each one resets a timer of
//!   three periods of our own rate (`lacp-time`: fast 1 s, slow 30 s). When it
//!   runs out the member is *expired* (the partner is assumed to want fast
//!   PDUs, and out of sync), and after three more periods *defaulted* (partner
//!   forgotten).
//! * A current member whose partner aggregates is *attached* when its partner
//!   is the same system as the bond's lead (the current member with the best
//!   partner system priority and MAC): it then advertises sync, collecting and
//!   distributing, and it *may be enabled* once its partner says in sync too.
//! * While no member is current the bond is not negotiated
//!   ([`Lacp::negotiated`]) and every member advertises collecting and
//!   distributing (OVS does the same), so a partner may come up.
//! * LACPDUs go out on every member when LACP is active or the partner is,
//!   every second when the partner asked for fast PDUs (its timeout bit), else
//!   every 30 s, and at once when what we would send changed since the last
//!   one (OVS's rule; 802.1AX also resends when the partner's view of us is
//!   stale).
//!
//! # Deviations from 802.1AX
//!
//! No churn detection, no marker protocol responder, no aggregator selection
//! among several partners beyond "the lead's partner system"; ports are the
//! members' OpenFlow numbers and the key is the bond's first member's.

use std::fmt::Write as _;

/// Slow protocols destination MAC.
pub const LACP_DST: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x02];
/// Slow protocols ethertype.
pub const ETH_TYPE_SLOW: u16 = 0x8809;
/// Slow protocols subtype of LACP.
pub const LACP_SUBTYPE: u8 = 1;
/// Length of a LACPDU frame without FCS.
pub const LACP_FRAME_LEN: usize = 124;

/// Actor/partner state bits.
pub const STATE_ACTIVITY: u8 = 1 << 0;
/// Short timeout: the sender wants fast PDUs.
pub const STATE_TIMEOUT: u8 = 1 << 1;
/// The link may aggregate.
pub const STATE_AGGREGATION: u8 = 1 << 2;
/// In sync: attached to the right aggregator.
pub const STATE_SYNC: u8 = 1 << 3;
/// Collecting frames.
pub const STATE_COLLECTING: u8 = 1 << 4;
/// Distributing frames.
pub const STATE_DISTRIBUTING: u8 = 1 << 5;
/// Partner information is defaulted.
pub const STATE_DEFAULTED: u8 = 1 << 6;
/// Partner information expired.
pub const STATE_EXPIRED: u8 = 1 << 7;

/// Fast periodic time, ms.
pub const FAST_PERIOD_MS: u64 = 1_000;
/// Slow periodic time, ms.
pub const SLOW_PERIOD_MS: u64 = 30_000;
/// Periods without a LACPDU before the partner's information expires.
pub const RX_MULTIPLIER: u64 = 3;

/// One end's information in a LACPDU (an actor or partner TLV).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LacpInfo {
    /// System priority.
    pub sys_priority: u16,
    /// System MAC.
    pub sys_id: [u8; 6],
    /// Aggregation key.
    pub key: u16,
    /// Port priority.
    pub port_priority: u16,
    /// Port number.
    pub port: u16,
    /// State bits (`STATE_*`).
    pub state: u8,
}

impl LacpInfo {
    fn read(tlv: &[u8]) -> Option<LacpInfo> {
        let b = |i: usize| tlv.get(i).copied();
        let u16_at = |i: usize| Some(u16::from_be_bytes([b(i)?, b(i + 1)?]));
        let mut sys_id = [0u8; 6];
        sys_id.copy_from_slice(tlv.get(2..8)?);
        Some(LacpInfo {
            sys_priority: u16_at(0)?,
            sys_id,
            key: u16_at(8)?,
            port_priority: u16_at(10)?,
            port: u16_at(12)?,
            state: b(14)?,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.sys_priority.to_be_bytes());
        out.extend_from_slice(&self.sys_id);
        out.extend_from_slice(&self.key.to_be_bytes());
        out.extend_from_slice(&self.port_priority.to_be_bytes());
        out.extend_from_slice(&self.port.to_be_bytes());
        out.push(self.state);
        out.extend_from_slice(&[0; 3]);
    }
}

/// A parsed LACPDU: the sender (actor) and what it knows of us (partner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LacpPdu {
    /// The sender.
    pub actor: LacpInfo,
    /// The sender's view of its partner.
    pub partner: LacpInfo,
}

/// Why a frame is not a LACPDU we take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LacpError {
    /// Shorter than a LACPDU.
    #[error("truncated LACPDU")]
    Truncated,
    /// Not ethertype 0x8809 subtype 1.
    #[error("not a LACPDU")]
    NotLacp,
    /// A TLV type or length that is not 802.1AX's.
    #[error("malformed LACPDU TLV")]
    BadTlv,
}

/// Whether `frame` is a slow-protocols frame of subtype LACP (what the slow
/// path must take instead of forwarding).
pub fn is_lacp_frame(frame: &[u8]) -> bool {
    frame.get(12..15) == Some(&[0x88, 0x09, LACP_SUBTYPE][..])
}

/// Parses a LACPDU frame (Ethernet header included, untagged). Version 1
/// and later are accepted, as 802.1AX says.
pub fn parse_pdu(frame: &[u8]) -> Result<LacpPdu, LacpError> {
    if frame.len() < 14 + 2 + 20 + 20 {
        return Err(LacpError::Truncated);
    }
    if !is_lacp_frame(frame) {
        return Err(LacpError::NotLacp);
    }
    let tlv = |at: usize, ty: u8| -> Result<LacpInfo, LacpError> {
        match frame.get(at..at + 2) {
            Some([t, 20]) if *t == ty => {
                LacpInfo::read(frame.get(at + 2..at + 20).ok_or(LacpError::Truncated)?)
                    .ok_or(LacpError::Truncated)
            }
            Some(_) => Err(LacpError::BadTlv),
            None => Err(LacpError::Truncated),
        }
    };
    Ok(LacpPdu {
        actor: tlv(16, 1)?,
        partner: tlv(36, 2)?,
    })
}

/// Builds a LACPDU frame from `src` (124 bytes, no FCS).
pub fn build_pdu(src: [u8; 6], actor: &LacpInfo, partner: &LacpInfo) -> Vec<u8> {
    let mut f = Vec::with_capacity(LACP_FRAME_LEN);
    f.extend_from_slice(&LACP_DST);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETH_TYPE_SLOW.to_be_bytes());
    f.extend_from_slice(&[LACP_SUBTYPE, 1]);
    f.extend_from_slice(&[1, 20]);
    actor.write(&mut f);
    f.extend_from_slice(&[2, 20]);
    partner.write(&mut f);
    f.extend_from_slice(&[3, 16]);
    f.extend_from_slice(&[0; 14]); // max delay 0, 12 reserved
    f.extend_from_slice(&[0, 0]); // terminator
    f.resize(LACP_FRAME_LEN, 0);
    f
}

/// `STATE_*` bits as `lacp/show` prints them.
pub fn format_state(state: u8) -> String {
    let names = [
        (STATE_ACTIVITY, "activity"),
        (STATE_TIMEOUT, "timeout"),
        (STATE_AGGREGATION, "aggregation"),
        (STATE_SYNC, "synchronized"),
        (STATE_COLLECTING, "collecting"),
        (STATE_DISTRIBUTING, "distributing"),
        (STATE_DEFAULTED, "defaulted"),
        (STATE_EXPIRED, "expired"),
    ];
    names
        .iter()
        .filter(|(b, _)| state & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(" ")
}

fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Where a member's partner information stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberStatus {
    /// LACPDUs arrive.
    Current,
    /// They stopped: the partner is kept a while, out of sync.
    Expired,
    /// No partner.
    Defaulted,
}

impl MemberStatus {
    fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Current => "current",
            MemberStatus::Expired => "expired",
            MemberStatus::Defaulted => "defaulted",
        }
    }
}

/// One member's LACP state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LacpMember {
    /// Interface name.
    pub name: String,
    /// OpenFlow port (the LACP port number).
    pub ofport: u32,
    /// Partner status.
    pub status: MemberStatus,
    /// The partner, as its last LACPDU described itself.
    pub partner: LacpInfo,
    /// Attached to the bond's aggregator (see the module docs).
    pub attached: bool,
    /// The actor information last sent: a LACPDU goes out at once when ours
    /// changed since.
    last_sent: Option<LacpInfo>,
    /// When the partner information expires (ms), for current/expired members.
    rx_deadline: u64,
    /// When the next periodic LACPDU is due (ms).
    tx_due: u64,
    /// Where our LACPDUs come from.
    mac: [u8; 6],
}

/// A bond's LACP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lacp {
    name: String,
    active: bool,
    fast: bool,
    sys_priority: u16,
    sys_id: [u8; 6],
    key: u16,
    members: Vec<LacpMember>,
    negotiated: bool,
}

impl Lacp {
    /// LACP for bond `name` over `members` (interface name, OpenFlow port):
    /// `active` (else passive), `fast` (`lacp-time=fast`), system `sys_id`
    /// with OVS's default priority 65534. Member *i* sends from `sys_id` with
    /// its last byte plus *i*.
    pub fn new(
        name: &str,
        members: Vec<(String, u32)>,
        active: bool,
        fast: bool,
        sys_id: [u8; 6],
    ) -> Lacp {
        let key = members.first().map_or(1, |m| m.1 as u16);
        Lacp {
            name: name.to_string(),
            active,
            fast,
            sys_priority: 65534,
            sys_id,
            key,
            members: members
                .into_iter()
                .enumerate()
                .map(|(i, (name, ofport))| {
                    let mut mac = sys_id;
                    mac[5] = mac[5].wrapping_add(i as u8 + 1);
                    LacpMember {
                        name,
                        ofport,
                        status: MemberStatus::Defaulted,
                        partner: LacpInfo::default(),
                        attached: false,
                        last_sent: None,
                        rx_deadline: 0,
                        tx_due: 0,
                        mac,
                    }
                })
                .collect(),
            negotiated: false,
        }
    }

    /// The bond's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The members.
    pub fn members(&self) -> &[LacpMember] {
        &self.members
    }

    /// Whether some member has a current partner (OVS `LACP_NEGOTIATED`).
    pub fn negotiated(&self) -> bool {
        self.negotiated
    }

    /// Whether LACP lets member `ofport` carry traffic: attached, and its
    /// partner in sync.
    pub fn may_enable(&self, ofport: u32) -> bool {
        self.member(ofport)
            .is_some_and(|m| m.attached && m.partner.state & STATE_SYNC != 0)
    }

    fn member(&self, ofport: u32) -> Option<&LacpMember> {
        self.members.iter().find(|m| m.ofport == ofport)
    }

    fn rx_timeout(&self) -> u64 {
        RX_MULTIPLIER
            * if self.fast {
                FAST_PERIOD_MS
            } else {
                SLOW_PERIOD_MS
            }
    }

    /// What member `m` says about itself (the actor TLV).
    fn actor(&self, m: &LacpMember) -> LacpInfo {
        let mut state = STATE_AGGREGATION;
        if self.active {
            state |= STATE_ACTIVITY;
        }
        if self.fast {
            state |= STATE_TIMEOUT;
        }
        if m.attached {
            state |= STATE_SYNC;
        }
        if m.attached || !self.negotiated {
            state |= STATE_COLLECTING | STATE_DISTRIBUTING;
        }
        match m.status {
            MemberStatus::Current => {}
            MemberStatus::Expired => state |= STATE_EXPIRED,
            MemberStatus::Defaulted => state |= STATE_DEFAULTED,
        }
        LacpInfo {
            sys_priority: self.sys_priority,
            sys_id: self.sys_id,
            key: self.key,
            port_priority: 65535,
            port: m.ofport as u16,
            state,
        }
    }

    /// A LACPDU `frame` received on member `ofport` at `now_ms`. Returns an
    /// error for frames that are not valid LACPDUs (ignored).
    pub fn process_pdu(&mut self, ofport: u32, frame: &[u8], now_ms: u64) -> Result<(), LacpError> {
        let pdu = parse_pdu(frame)?;
        let timeout = self.rx_timeout();
        let Some(m) = self.members.iter_mut().find(|m| m.ofport == ofport) else {
            return Ok(());
        };
        m.status = MemberStatus::Current;
        m.partner = pdu.actor;
        m.rx_deadline = now_ms.saturating_add(timeout);
        self.update_attached();
        Ok(())
    }

    /// Timers at `now_ms`: expires partners, then returns the LACPDUs due,
    /// (member OpenFlow port, frame), one per member at most.
    pub fn run(&mut self, now_ms: u64) -> Vec<(u32, Vec<u8>)> {
        let timeout = self.rx_timeout();
        let mut changed = false;
        for m in &mut self.members {
            if m.status == MemberStatus::Defaulted || now_ms < m.rx_deadline {
                continue;
            }
            changed = true;
            if m.status == MemberStatus::Current {
                // The partner is assumed to want fast PDUs and to be out of sync.
                m.status = MemberStatus::Expired;
                m.partner.state |= STATE_TIMEOUT;
                m.partner.state &= !STATE_SYNC;
                m.rx_deadline = now_ms.saturating_add(timeout);
            } else {
                m.status = MemberStatus::Defaulted;
                m.partner = LacpInfo::default();
            }
        }
        if changed {
            self.update_attached();
        }
        let mut out = Vec::new();
        for i in 0..self.members.len() {
            let Some(m) = self.members.get(i) else {
                continue;
            };
            let actor = self.actor(m);
            let partner_active = m.partner.state & STATE_ACTIVITY != 0;
            if !self.active && !partner_active {
                continue;
            }
            if m.last_sent == Some(actor) && now_ms < m.tx_due {
                continue;
            }
            let period = if m.partner.state & STATE_TIMEOUT != 0 {
                FAST_PERIOD_MS
            } else {
                SLOW_PERIOD_MS
            };
            let frame = build_pdu(m.mac, &actor, &m.partner);
            let ofport = m.ofport;
            if let Some(m) = self.members.get_mut(i) {
                m.tx_due = now_ms.saturating_add(period);
                m.last_sent = Some(actor);
            }
            out.push((ofport, frame));
        }
        out
    }

    /// Recomputes the lead, the attached members and `negotiated`.
    fn update_attached(&mut self) {
        let lead = self
            .members
            .iter()
            .filter(|m| m.status == MemberStatus::Current)
            .map(|m| (m.partner.sys_priority, m.partner.sys_id))
            .min();
        self.negotiated = lead.is_some();
        for m in &mut self.members {
            let attached = m.status == MemberStatus::Current
                && m.partner.state & STATE_AGGREGATION != 0
                && Some((m.partner.sys_priority, m.partner.sys_id)) == lead;
            m.attached = attached;
        }
    }

    /// `ovs-appctl lacp/show` for this bond: its settings, then each member's
    /// status, actor and partner with their state flags.
    pub fn format_show(&self) -> String {
        let mut s = format!("---- {} ----\n", self.name);
        let _ = writeln!(
            s,
            "  status: {}",
            if self.active { "active" } else { "passive" }.to_string()
                + if self.negotiated { " negotiated" } else { "" }
        );
        let _ = writeln!(s, "  sys_id: {}", format_mac(&self.sys_id));
        let _ = writeln!(s, "  sys_priority: {}", self.sys_priority);
        let _ = writeln!(s, "  aggregation key: {}", self.key);
        let _ = writeln!(
            s,
            "  lacp_time: {}",
            if self.fast { "fast" } else { "slow" }
        );
        for m in &self.members {
            let actor = self.actor(m);
            let _ = writeln!(
                s,
                "\nmember: {}: {} {}",
                m.name,
                m.status.as_str(),
                if m.attached { "attached" } else { "detached" }
            );
            let _ = writeln!(s, "  port_id: {}", m.ofport);
            let _ = writeln!(s, "  port_priority: {}", actor.port_priority);
            let _ = writeln!(s, "  may_enable: {}", self.may_enable(m.ofport));
            let _ = writeln!(s, "\n  actor sys_id: {}", format_mac(&actor.sys_id));
            let _ = writeln!(s, "  actor sys_priority: {}", actor.sys_priority);
            let _ = writeln!(s, "  actor port_id: {}", actor.port);
            let _ = writeln!(s, "  actor port_priority: {}", actor.port_priority);
            let _ = writeln!(s, "  actor key: {}", actor.key);
            let _ = writeln!(s, "  actor state: {}", format_state(actor.state));
            let _ = writeln!(s, "\n  partner sys_id: {}", format_mac(&m.partner.sys_id));
            let _ = writeln!(s, "  partner sys_priority: {}", m.partner.sys_priority);
            let _ = writeln!(s, "  partner port_id: {}", m.partner.port);
            let _ = writeln!(s, "  partner port_priority: {}", m.partner.port_priority);
            let _ = writeln!(s, "  partner key: {}", m.partner.key);
            let _ = writeln!(s, "  partner state: {}", format_state(m.partner.state));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARTNER_SYS: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const OUR_SYS: [u8; 6] = [0x02, 0xfe, 0, 0, 0, 0];

    /// A LACPDU as a Linux bond sends it, written out byte by byte from
    /// 802.1AX 5.4.2: actor (the partner switch) port `port` with `state`,
    /// and its view of us.
    fn linux_pdu(port: u16, state: u8, about_us: &LacpInfo) -> Vec<u8> {
        let mut f = vec![
            0x01, 0x80, 0xc2, 0x00, 0x00, 0x02, // slow protocols group address
            0x52, 0x54, 0x00, 0x12, 0x34, 0x99, // source: the slave's MAC
            0x88, 0x09, // slow protocols
            0x01, 0x01, // subtype LACP, version 1
            0x01, 0x14, // actor information, length 20
            0xff, 0xff, // system priority 65535
            0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // system
            0x00, 0x09, // key 9
            0x00, 0xff, // port priority 255
        ];
        f.extend_from_slice(&port.to_be_bytes());
        f.extend_from_slice(&[state, 0, 0, 0]);
        f.extend_from_slice(&[0x02, 0x14]); // partner information, length 20
        f.extend_from_slice(&about_us.sys_priority.to_be_bytes());
        f.extend_from_slice(&about_us.sys_id);
        f.extend_from_slice(&about_us.key.to_be_bytes());
        f.extend_from_slice(&about_us.port_priority.to_be_bytes());
        f.extend_from_slice(&about_us.port.to_be_bytes());
        f.extend_from_slice(&[about_us.state, 0, 0, 0]);
        f.extend_from_slice(&[0x03, 0x10]); // collector information, length 16
        f.extend_from_slice(&[0; 14]);
        f.extend_from_slice(&[0x00, 0x00]); // terminator
        f.extend_from_slice(&[0; 50]);
        assert_eq!(f.len(), 124);
        f
    }

    fn lacp(active: bool, fast: bool) -> Lacp {
        Lacp::new(
            "bond0",
            vec![("eth0".into(), 1), ("eth1".into(), 2)],
            active,
            fast,
            OUR_SYS,
        )
    }

    #[test]
    fn pdu_layout_round_trips_byte_for_byte() {
        let actor = LacpInfo {
            sys_priority: 65534,
            sys_id: OUR_SYS,
            key: 1,
            port_priority: 65535,
            port: 2,
            state: 0x3f,
        };
        let f = build_pdu([2, 0, 0, 0, 0, 1], &actor, &LacpInfo::default());
        assert_eq!(f.len(), LACP_FRAME_LEN);
        assert_eq!(&f[..6], &LACP_DST);
        assert_eq!(&f[12..18], &[0x88, 0x09, 1, 1, 1, 20]);
        assert_eq!(&f[18..20], &[0xff, 0xfe]);
        assert_eq!(&f[20..26], &OUR_SYS);
        assert_eq!(&f[26..34], &[0, 1, 0xff, 0xff, 0, 2, 0x3f, 0]);
        assert_eq!(&f[36..38], &[2, 20]);
        assert_eq!(&f[56..58], &[3, 16]);
        assert_eq!(&f[72..74], &[0, 0]);
        let p = parse_pdu(&f).unwrap();
        assert_eq!(p.actor, actor);
        assert_eq!(p.partner, LacpInfo::default());
        // Truncated, other subtypes and bad TLVs are refused.
        assert_eq!(parse_pdu(&f[..40]), Err(LacpError::Truncated));
        let mut marker = f.clone();
        marker[14] = 2;
        assert_eq!(parse_pdu(&marker), Err(LacpError::NotLacp));
        let mut bad = f.clone();
        bad[17] = 19;
        assert_eq!(parse_pdu(&bad), Err(LacpError::BadTlv));
        for n in 0..f.len() {
            let _ = parse_pdu(&f[..n]);
        }
    }

    #[test]
    fn active_member_negotiates_with_a_linux_partner() {
        let mut l = lacp(true, true);
        // Active: PDUs go out at once on both members, not in sync, collecting
        // and distributing (nothing negotiated yet), defaulted.
        let out = l.run(0);
        assert_eq!(out.len(), 2);
        let ours = parse_pdu(&out[0].1).unwrap().actor;
        assert_eq!(out[0].0, 1);
        assert_eq!(
            ours.state,
            STATE_ACTIVITY
                | STATE_TIMEOUT
                | STATE_AGGREGATION
                | STATE_COLLECTING
                | STATE_DISTRIBUTING
                | STATE_DEFAULTED
        );
        assert_eq!(ours.sys_id, OUR_SYS);
        assert_eq!(ours.port, 1);
        assert!(!l.may_enable(1));
        // Nothing more until the periodic time, the partner being slow so far.
        assert!(l.run(500).is_empty());

        // The Linux bond answers on eth0: active, fast, aggregating, not yet in
        // sync.
        let st = STATE_ACTIVITY | STATE_TIMEOUT | STATE_AGGREGATION;
        l.process_pdu(1, &linux_pdu(1, st, &ours), 600).unwrap();
        assert!(l.negotiated());
        assert_eq!(l.members()[0].status, MemberStatus::Current);
        assert!(l.members()[0].attached);
        assert!(!l.may_enable(1), "partner not in sync yet");
        // We answer at once: attached, in sync, collecting distributing.
        let out = l.run(600);
        let sent = out.iter().find(|(p, _)| *p == 1).unwrap();
        let pdu = parse_pdu(&sent.1).unwrap();
        assert_eq!(
            pdu.actor.state,
            STATE_ACTIVITY
                | STATE_TIMEOUT
                | STATE_AGGREGATION
                | STATE_SYNC
                | STATE_COLLECTING
                | STATE_DISTRIBUTING
        );
        assert_eq!(pdu.partner.sys_id, PARTNER_SYS);
        assert_eq!(pdu.partner.state, st);
        // The partner is in sync and collecting distributing: eth0 may carry
        // traffic; eth1 (no partner, negotiated bond) may not and stops
        // advertising collecting distributing.
        let full = st | STATE_SYNC | STATE_COLLECTING | STATE_DISTRIBUTING;
        l.process_pdu(1, &linux_pdu(1, full, &pdu.actor), 700)
            .unwrap();
        assert!(l.may_enable(1));
        assert!(!l.may_enable(2));
        let e1 = l.actor(&l.members()[1].clone());
        assert_eq!(e1.state & (STATE_SYNC | STATE_COLLECTING), 0);
        // Nothing changed for us: no PDU. A fast partner gets one every second
        // (the last went out at 600).
        assert!(l.run(700).is_empty());
        assert!(l.run(1_599).iter().all(|(p, _)| *p != 1));
        assert!(l.run(1_600).iter().any(|(p, _)| *p == 1));
        // Silence: expired after 3 s, then defaulted 3 s later.
        l.run(3_699);
        assert_eq!(l.members()[0].status, MemberStatus::Current);
        l.run(3_700);
        assert_eq!(l.members()[0].status, MemberStatus::Expired);
        assert!(!l.may_enable(1));
        assert!(!l.negotiated());
        l.run(6_700);
        assert_eq!(l.members()[0].status, MemberStatus::Defaulted);
        assert_eq!(l.members()[0].partner, LacpInfo::default());
    }

    #[test]
    fn passive_waits_for_an_active_partner() {
        let mut l = lacp(false, false);
        assert!(l.run(0).is_empty());
        assert!(l.run(60_000).is_empty());
        let st = STATE_ACTIVITY | STATE_AGGREGATION;
        l.process_pdu(2, &linux_pdu(7, st, &LacpInfo::default()), 100)
            .unwrap();
        let out = l.run(100);
        assert_eq!(out.len(), 1, "only the member with an active partner");
        assert_eq!(out[0].0, 2);
        // A slow partner: the next periodic PDU in 30 s.
        assert!(l.run(30_099).is_empty());
        assert_eq!(l.run(30_100).len(), 1);
        assert!(l.format_show().contains("member: eth1: current attached"));
    }

    #[test]
    fn state_flags_print_like_ovs() {
        assert_eq!(
            format_state(0x3d),
            "activity aggregation synchronized collecting distributing"
        );
        assert_eq!(format_state(0xc0), "defaulted expired");
    }
}
