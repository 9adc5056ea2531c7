//! Flow table entries: what `add-flow` asks for ([`FlowMod`]), what a table holds
//! ([`Rule`]) and what `del-flows` / `dump-flows` select ([`FlowFilter`]).
//!
//! Times are plain `u64` milliseconds since an epoch the caller chooses (this
//! crate has no clock): the management thread passes its monotonic "now".

use super::action::{Action, OFPP_ANY};
use super::flow_match::Match;

/// OpenFlow's default flow priority (`OFP_DEFAULT_PRIORITY`).
pub const OFP_DEFAULT_PRIORITY: u16 = 0x8000;
/// Highest table id a flow may be added to (255 = "all tables" in requests).
pub const MAX_TABLE_ID: u8 = 254;

/// Flags of a flow mod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowModFlags {
    /// `send_flow_rem`: tell the controller when the flow is removed.
    pub send_flow_rem: bool,
    /// `check_overlap`: refuse to add a flow overlapping one of the same priority.
    pub check_overlap: bool,
}

/// A flow as `ovs-ofctl add-flow` describes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowMod {
    /// Table, 0..=254.
    pub table_id: u8,
    /// Priority, higher wins (default [`OFP_DEFAULT_PRIORITY`]).
    pub priority: u16,
    /// Opaque controller cookie.
    pub cookie: u64,
    /// Seconds without a hit before the flow expires; 0 = never.
    pub idle_timeout: u16,
    /// Seconds after which the flow expires regardless; 0 = never.
    pub hard_timeout: u16,
    /// Eviction importance (OpenFlow 1.4); 0 = default.
    pub importance: u16,
    /// Flags.
    pub flags: FlowModFlags,
    /// The match.
    pub match_: Match,
    /// The actions; empty = drop.
    pub actions: Vec<Action>,
}

impl Default for FlowMod {
    fn default() -> Self {
        FlowMod {
            table_id: 0,
            priority: OFP_DEFAULT_PRIORITY,
            cookie: 0,
            idle_timeout: 0,
            hard_timeout: 0,
            importance: 0,
            flags: FlowModFlags::default(),
            match_: Match::catchall(),
            actions: Vec::new(),
        }
    }
}

/// A flow installed in a table, with its counters and times.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The flow as added.
    pub flow: FlowMod,
    /// Packets that hit the rule.
    pub n_packets: u64,
    /// Bytes of those packets.
    pub n_bytes: u64,
    /// When the rule was added (ms, caller's epoch).
    pub created_ms: u64,
    /// When the rule was last added or modified (hard timeout and `hard_age`
    /// count from here).
    pub modified_ms: u64,
    /// When the rule was last hit (idle timeout and `idle_age` count from here);
    /// `created_ms` until the first hit.
    pub used_ms: u64,
}

impl Rule {
    /// A fresh rule with zero counters, created, modified and used at `now_ms`.
    pub fn new(flow: FlowMod, now_ms: u64) -> Rule {
        Rule {
            flow,
            n_packets: 0,
            n_bytes: 0,
            created_ms: now_ms,
            modified_ms: now_ms,
            used_ms: now_ms,
        }
    }
}

/// Which flows a `del-flows` / `dump-flows` request selects (OVS `struct
/// rule_criteria`).
///
/// * Loose (`strict == false`): a rule is selected when its match is covered by
///   `match_` (every bit the filter names, the rule matches with the same value;
///   see [`Match::is_covered_by`]); priority is ignored.
/// * Strict: the rule's match equals `match_` and its priority equals `priority`.
///
/// In both modes: `table` (`None` = all tables), `cookie` under `cookie_mask`
/// (mask 0 = any cookie) and `out_port` (`OFPP_ANY` = any; otherwise the rule must
/// have an output-type action to that port) narrow the selection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowFilter {
    /// Table to look in; `None` = all.
    pub table: Option<u8>,
    /// The match the rules are compared with.
    pub match_: Match,
    /// Strict (exact match and priority) or loose (covered match).
    pub strict: bool,
    /// Priority for strict mode.
    pub priority: u16,
    /// Cookie value, compared under `cookie_mask`.
    pub cookie: u64,
    /// Cookie mask; 0 = any cookie.
    pub cookie_mask: u64,
    /// Only rules that output to this port; `OFPP_ANY` = any.
    pub out_port: u32,
}

impl Default for FlowFilter {
    fn default() -> Self {
        FlowFilter {
            table: None,
            match_: Match::catchall(),
            strict: false,
            priority: OFP_DEFAULT_PRIORITY,
            cookie: 0,
            cookie_mask: 0,
            out_port: OFPP_ANY,
        }
    }
}

impl FlowFilter {
    /// Whether the filter selects `flow` (table included).
    pub fn selects(&self, flow: &FlowMod) -> bool {
        if self.table.is_some_and(|t| t != flow.table_id) {
            return false;
        }
        if (flow.cookie ^ self.cookie) & self.cookie_mask != 0 {
            return false;
        }
        let m = if self.strict {
            flow.priority == self.priority && flow.match_ == self.match_
        } else {
            flow.match_.is_covered_by(&self.match_)
        };
        m && (self.out_port == OFPP_ANY
            || flow
                .actions
                .iter()
                .any(|a| a.output_port() == Some(self.out_port)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::field::Field;
    use super::*;

    #[test]
    fn filter_loose_strict_cookie_out_port() {
        let mut f = FlowMod {
            table_id: 2,
            priority: 1,
            cookie: 0xab,
            actions: vec![Action::Output(3)],
            ..FlowMod::default()
        };
        f.match_.set_field(Field::InPort, 1, None);
        let all = FlowFilter::default();
        assert!(all.selects(&f));
        let t3 = FlowFilter {
            table: Some(3),
            ..FlowFilter::default()
        };
        assert!(!t3.selects(&f));
        let ck = FlowFilter {
            cookie: 0xa0,
            cookie_mask: 0xf0,
            ..FlowFilter::default()
        };
        assert!(ck.selects(&f));
        let ck = FlowFilter {
            cookie: 0xb0,
            cookie_mask: 0xf0,
            ..FlowFilter::default()
        };
        assert!(!ck.selects(&f));
        let strict = FlowFilter {
            strict: true,
            ..FlowFilter::default()
        };
        assert!(!strict.selects(&f));
        let strict = FlowFilter {
            strict: true,
            priority: 1,
            match_: f.match_,
            ..FlowFilter::default()
        };
        assert!(strict.selects(&f));
        let op = FlowFilter {
            out_port: 4,
            ..FlowFilter::default()
        };
        assert!(!op.selects(&f));
    }
}
