//! The OpenFlow pipeline of one bridge: tables 0..=254, each a classifier of
//! [`Rule`]s, with OVS's flow-mod semantics.
//!
//! # Layer
//!
//! Owned by the management thread (one [`Tables`] per bridge). Translation
//! ([`super::xlate`]) reads it; flow mods, learned flows, datapath statistics and
//! expiry write it. Pure: no I/O, no clock (every time is a `now_ms` argument).
//!
//! # Classifier
//!
//! Tuple-space search, as OVS's `lib/classifier.c` without its staged lookup and
//! prefix tries: the rules of a table are grouped by mask into subtables; a
//! subtable is a hash map from the masked key words (only the mask's non-zero words)
//! to the rules with that match. Subtables are visited in order of their highest
//! priority; the search stops as soon as a subtable's highest priority is below the
//! best match found. The caller's megaflow mask receives the mask of every subtable
//! probed: that is exactly the set of bits the lookup's outcome depended on.
//!
//! Among matching rules the highest priority wins; ties (overlapping rules of the
//! same priority, which OpenFlow leaves undefined) go to the rule added first, so
//! lookups are deterministic and a linear scan can serve as the reference.
//!
//! # Flow-mod semantics (OVS `ofproto.c`)
//!
//! * **add** (`OFPFC_ADD`): a rule with the same table, priority and match is
//!   replaced. As `ovs-ofctl` speaks OpenFlow 1.0, where "add always resets
//!   counters", the replacement is a new rule: new [`RuleId`], counters zero,
//!   created/modified/used = now, the new cookie and timeouts.
//!   `check_overlap` refuses a rule that overlaps one of the same priority.
//! * **modify** (`OFPFC_MODIFY[_STRICT]`): selected rules get the new actions
//!   (and cookie when given); counters, timeouts, `created` and the id are kept;
//!   `modified` is now.
//! * **delete** (`OFPFC_DELETE[_STRICT]`): loose selects every rule whose match is at
//!   least as specific as the filter's (priority ignored); strict the rule with the
//!   same priority and identical match. Cookie/mask and `out_port` narrow both.
//! * **learn** (`learn()` action): as OVS's `ofproto_flow_mod_learn`: an identical
//!   rule (same match, priority, timeouts, cookie, actions) only has `modified`
//!   refreshed (which restarts its hard timeout); a rule with the same match and
//!   priority but other actions is modified (strict modify semantics); otherwise
//!   the flow is added.
//! * **expiry**: hard timeout counts from `modified`, idle timeout from `used`;
//!   a rule expires when `now` is strictly past the deadline (OVS `rule_expire`).
//!
//! # Deviations from OVS
//!
//! * `dump` orders by table, priority (descending), then insertion; OVS dumps in
//!   classifier order (use `--sort` there).
//! * No eviction, no table features, no `delete_learned`, no flow monitors.

use super::action::{Action, OFPP_ANY};
use super::flow_match::Match;
use super::rule::{FlowFilter, FlowMod, Rule, MAX_TABLE_ID};
use crate::flow_key::{FlowKey, FLOW_KEY_WORDS};
use crate::hash::WordHashBuilder;
use std::collections::{BTreeMap, HashMap};

/// Stable handle of a rule: the datapath credits statistics to it. Never reused
/// within one [`Tables`].
pub type RuleId = u64;

/// Number of tables (0..=254).
pub const N_TABLES: usize = MAX_TABLE_ID as usize + 1;

/// Why a flow mod was refused. Messages name the flow's part and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// `table=255` or beyond.
    #[error("table {0}: table id must be at most 254")]
    BadTableId(u8),
    /// The match names a field without its prerequisites.
    #[error("match: {0}")]
    Prereq(#[from] super::flow_match::PrereqError),
    /// `goto_table` must go forward.
    #[error("goto_table:{target}: must name a table after table {table}")]
    GotoBackwards {
        /// The rule's table.
        table: u8,
        /// The goto target.
        target: u8,
    },
    /// A table id in an action is out of range.
    #[error("{action}: table id must be at most 254")]
    BadActionTable {
        /// The action, as written.
        action: &'static str,
    },
    /// `goto_table` is an instruction: nothing may follow it.
    #[error("goto_table must be the last action")]
    GotoNotLast,
    /// `output:TABLE` is only meaningful in packet-out.
    #[error("output:TABLE is only valid in packet-out, not in a flow")]
    OutputTable,
    /// `check_overlap` found a rule of the same priority that overlaps.
    #[error("check_overlap: overlaps an existing rule of priority {priority} in table {table}")]
    Overlap {
        /// Table.
        table: u8,
        /// Priority.
        priority: u16,
    },
}

/// A flow of a batch that was refused, with its position (0-based) in the batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("flow {index}: {error}")]
pub struct BatchError {
    /// Index of the flow in the batch.
    pub index: usize,
    /// Why.
    pub error: TableError,
}

/// Why a rule left the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemovedReason {
    /// Idle timeout.
    IdleTimeout,
    /// Hard timeout.
    HardTimeout,
    /// `del-flows`.
    Delete,
}

/// A rule removed by expiry or deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedRule {
    /// Its id.
    pub id: RuleId,
    /// The rule, with its final counters.
    pub rule: Rule,
    /// Why.
    pub reason: RemovedReason,
}

/// What a learned flow did to the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LearnOutcome {
    /// A new rule.
    Added(RuleId),
    /// An identical rule existed: its `modified` time was refreshed.
    Refreshed(RuleId),
    /// A rule with the same match and priority got the new actions and cookie.
    Modified(RuleId),
    /// The flow was invalid (e.g. its match lacks prerequisites).
    Refused,
}

/// Insertion order, the tie-breaker between rules of equal priority.
type Seq = u64;

struct Slot {
    rule: Rule,
    seq: Seq,
}

/// A rule reference inside a subtable bucket.
#[derive(Clone, Copy, Debug)]
struct Entry {
    priority: u16,
    seq: Seq,
    id: RuleId,
}

/// All the rules of one table sharing one mask.
struct Subtable {
    mask: FlowKey,
    /// Indices of the mask's non-zero words: the hash key is those words of the
    /// masked packet key.
    words: Vec<usize>,
    /// Masked key words -> rules with that match, by priority descending, then
    /// insertion.
    buckets: HashMap<Box<[u64]>, Vec<Entry>, WordHashBuilder>,
    /// Number of rules per priority, for the max-priority bookkeeping.
    prios: BTreeMap<u16, usize>,
    /// Highest priority of the subtable's rules (cached from `prios`).
    max_prio: u16,
    /// Creation order, for a stable subtable order among equal max priorities.
    created: u64,
}

impl Subtable {
    fn new(mask: FlowKey, created: u64) -> Subtable {
        let words = (0..FLOW_KEY_WORDS)
            .filter(|&i| mask.words()[i] != 0)
            .collect();
        Subtable {
            mask,
            words,
            buckets: HashMap::default(),
            prios: BTreeMap::new(),
            max_prio: 0,
            created,
        }
    }

    fn max_priority(&self) -> u16 {
        self.max_prio
    }

    fn update_max(&mut self) {
        self.max_prio = self.prios.keys().next_back().copied().unwrap_or(0);
    }

    /// The masked key words of `key` in `buf`, returned as a slice of it.
    fn hash_key<'b>(&self, key: &FlowKey, buf: &'b mut [u64; FLOW_KEY_WORDS]) -> &'b [u64] {
        let (k, m) = (key.words(), self.mask.words());
        for (n, &i) in self.words.iter().enumerate() {
            // `i < FLOW_KEY_WORDS` by construction, `n < words.len() <= FLOW_KEY_WORDS`.
            buf[n] = k[i] & m[i];
        }
        &buf[..self.words.len()]
    }
}

/// One table: subtables by mask, kept in search order (max priority descending,
/// then creation). Finding a subtable by mask is a linear scan: it happens only
/// on flow mods, and tables have few distinct masks.
#[derive(Default)]
struct Classifier {
    subtables: Vec<Subtable>,
    n_rules: usize,
    n_created: u64,
}

/// Sort key of an entry inside a bucket and between buckets: higher priority
/// first, then earlier insertion.
fn rank(e: &Entry) -> (std::cmp::Reverse<u16>, Seq) {
    (std::cmp::Reverse(e.priority), e.seq)
}

impl Classifier {
    fn resort(&mut self) {
        self.subtables
            .sort_by_key(|st| (std::cmp::Reverse(st.max_priority()), st.created));
    }

    fn find(&self, mask: &FlowKey) -> Option<usize> {
        self.subtables.iter().position(|st| st.mask == *mask)
    }

    fn insert(&mut self, m: &Match, e: Entry) {
        let i = match self.find(&m.mask) {
            Some(i) => i,
            None => {
                self.subtables.push(Subtable::new(m.mask, self.n_created));
                self.n_created += 1;
                self.subtables.len() - 1
            }
        };
        let Some(st) = self.subtables.get_mut(i) else {
            return;
        };
        let before = st.max_priority();
        let mut buf = [0u64; FLOW_KEY_WORDS];
        let hk: Box<[u64]> = st.hash_key(&m.key, &mut buf).into();
        let bucket = st.buckets.entry(hk).or_default();
        let pos = bucket.partition_point(|x| rank(x) < rank(&e));
        bucket.insert(pos, e);
        let first = st.prios.is_empty();
        *st.prios.entry(e.priority).or_default() += 1;
        st.update_max();
        self.n_rules += 1;
        if first || st.max_priority() != before {
            self.resort();
        }
    }

    fn remove(&mut self, m: &Match, id: RuleId) {
        let Some(i) = self.find(&m.mask) else {
            return;
        };
        let Some(st) = self.subtables.get_mut(i) else {
            return;
        };
        let before = st.max_priority();
        let mut buf = [0u64; FLOW_KEY_WORDS];
        let hk = st.hash_key(&m.key, &mut buf);
        let Some(bucket) = st.buckets.get_mut(hk) else {
            return;
        };
        let Some(pos) = bucket.iter().position(|e| e.id == id) else {
            return;
        };
        let e = bucket.remove(pos);
        if bucket.is_empty() {
            st.buckets.remove(hk);
        }
        if let Some(n) = st.prios.get_mut(&e.priority) {
            *n -= 1;
            if *n == 0 {
                st.prios.remove(&e.priority);
            }
        }
        st.update_max();
        self.n_rules -= 1;
        if st.prios.is_empty() {
            self.subtables.remove(i);
        } else if st.max_priority() != before {
            self.resort();
        }
    }

    /// The rule with exactly this match and priority.
    fn find_exact(&self, m: &Match, priority: u16) -> Option<RuleId> {
        let st = self.subtables.get(self.find(&m.mask)?)?;
        let mut buf = [0u64; FLOW_KEY_WORDS];
        let hk = st.hash_key(&m.key, &mut buf);
        st.buckets
            .get(hk)?
            .iter()
            .find(|e| e.priority == priority)
            .map(|e| e.id)
    }

    fn lookup(&self, key: &FlowKey, wc: &mut FlowKey) -> Option<Entry> {
        let mut best: Option<Entry> = None;
        let mut buf = [0u64; FLOW_KEY_WORDS];
        for st in &self.subtables {
            if best.is_some_and(|b| st.max_priority() < b.priority) {
                break;
            }
            for (w, mw) in wc.words_mut().iter_mut().zip(st.mask.words()) {
                *w |= mw;
            }
            let hk = st.hash_key(key, &mut buf);
            if let Some(e) = st.buckets.get(hk).and_then(|b| b.first()) {
                let better = match best {
                    None => true,
                    Some(b) => rank(e) < rank(&b),
                };
                if better {
                    best = Some(*e);
                }
            }
        }
        best
    }
}

/// The OpenFlow tables of one bridge. See the module docs.
pub struct Tables {
    tables: Vec<Classifier>,
    rules: HashMap<RuleId, Slot, WordHashBuilder>,
    next_id: RuleId,
    next_seq: Seq,
}

impl Default for Tables {
    fn default() -> Self {
        Tables::new()
    }
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables")
            .field("n_rules", &self.rules.len())
            .finish()
    }
}

/// Whether two matches can match the same packet.
fn overlaps(a: &Match, b: &Match) -> bool {
    let (ak, am, bk, bm) = (a.key.words(), a.mask.words(), b.key.words(), b.mask.words());
    (0..FLOW_KEY_WORDS).all(|i| (ak[i] ^ bk[i]) & am[i] & bm[i] == 0)
}

/// Checks a flow mod on its own (nothing about the current tables).
pub fn validate(fm: &FlowMod) -> Result<(), TableError> {
    if fm.table_id > MAX_TABLE_ID {
        return Err(TableError::BadTableId(fm.table_id));
    }
    fm.match_.check_prereqs()?;
    validate_actions(fm.table_id, &fm.actions)
}

/// Checks an action list for a rule in `table`.
pub fn validate_actions(table: u8, actions: &[Action]) -> Result<(), TableError> {
    for (i, a) in actions.iter().enumerate() {
        match a {
            Action::GotoTable(t) => {
                if *t > MAX_TABLE_ID {
                    return Err(TableError::BadActionTable {
                        action: "goto_table",
                    });
                }
                if *t <= table {
                    return Err(TableError::GotoBackwards { table, target: *t });
                }
                if i + 1 != actions.len() {
                    return Err(TableError::GotoNotLast);
                }
            }
            Action::Resubmit { table: Some(t), .. } if *t > MAX_TABLE_ID => {
                return Err(TableError::BadActionTable { action: "resubmit" });
            }
            Action::Learn(l) if l.table > MAX_TABLE_ID => {
                return Err(TableError::BadActionTable { action: "learn" });
            }
            Action::Table => return Err(TableError::OutputTable),
            _ => {}
        }
    }
    Ok(())
}

impl Tables {
    /// Empty tables.
    pub fn new() -> Tables {
        Tables {
            tables: (0..N_TABLES).map(|_| Classifier::default()).collect(),
            rules: HashMap::default(),
            next_id: 1,
            next_seq: 0,
        }
    }

    /// Number of rules in all tables.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there is no rule at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of rules in one table.
    pub fn table_len(&self, table: u8) -> usize {
        self.tables.get(usize::from(table)).map_or(0, |c| c.n_rules)
    }

    /// Number of subtables (distinct masks) of a table.
    pub fn n_subtables(&self, table: u8) -> usize {
        self.tables
            .get(usize::from(table))
            .map_or(0, |c| c.subtables.len())
    }

    /// The rule with this id.
    pub fn get(&self, id: RuleId) -> Option<&Rule> {
        self.rules.get(&id).map(|s| &s.rule)
    }

    fn classifier(&self, table: u8) -> Option<&Classifier> {
        self.tables.get(usize::from(table))
    }

    fn insert_slot(&mut self, id: RuleId, slot: Slot) {
        let f = &slot.rule.flow;
        let e = Entry {
            priority: f.priority,
            seq: slot.seq,
            id,
        };
        if let Some(c) = self.tables.get_mut(usize::from(f.table_id)) {
            c.insert(&f.match_, e);
        }
        self.rules.insert(id, slot);
    }

    fn remove_id(&mut self, id: RuleId) -> Option<Rule> {
        let slot = self.rules.remove(&id)?;
        let f = &slot.rule.flow;
        if let Some(c) = self.tables.get_mut(usize::from(f.table_id)) {
            c.remove(&f.match_, id);
        }
        Some(slot.rule)
    }

    /// The rule in `table` with exactly this match and priority.
    pub fn find_exact(&self, table: u8, m: &Match, priority: u16) -> Option<RuleId> {
        self.classifier(table)?.find_exact(m, priority)
    }

    /// Looks `key` up in `table`: the highest-priority matching rule (first added
    /// among equals). Every bit the outcome depended on is OR-ed into `wc`.
    pub fn lookup(&self, table: u8, key: &FlowKey, wc: &mut FlowKey) -> Option<RuleId> {
        self.classifier(table)?.lookup(key, wc).map(|e| e.id)
    }

    /// Inserts a validated flow, replacing an identical one; returns the new id.
    fn insert_new(&mut self, mut fm: FlowMod, now_ms: u64) -> (RuleId, Option<(RuleId, Slot)>) {
        fm.match_.normalize();
        let old = self
            .find_exact(fm.table_id, &fm.match_, fm.priority)
            .and_then(|id| {
                let f = self.rules.get(&id).map(|s| s.rule.flow.clone())?;
                self.tables
                    .get_mut(usize::from(f.table_id))?
                    .remove(&f.match_, id);
                self.rules.remove(&id).map(|s| (id, s))
            });
        let id = self.next_id;
        self.next_id += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.insert_slot(
            id,
            Slot {
                rule: Rule::new(fm, now_ms),
                seq,
            },
        );
        (id, old)
    }

    fn check_overlap(&self, fm: &FlowMod) -> Result<(), TableError> {
        if !fm.flags.check_overlap {
            return Ok(());
        }
        let clash = self.rules.values().any(|s| {
            let f = &s.rule.flow;
            f.table_id == fm.table_id
                && f.priority == fm.priority
                && f.match_ != fm.match_
                && overlaps(&f.match_, &fm.match_)
        });
        if clash {
            return Err(TableError::Overlap {
                table: fm.table_id,
                priority: fm.priority,
            });
        }
        Ok(())
    }

    /// `OFPFC_ADD`: validates and inserts `fm`, replacing a rule with the same
    /// table, priority and match (the replacement is a new rule: see the module
    /// docs). Returns the new rule's id.
    pub fn add(&mut self, fm: FlowMod, now_ms: u64) -> Result<RuleId, TableError> {
        validate(&fm)?;
        self.check_overlap(&fm)?;
        Ok(self.insert_new(fm, now_ms).0)
    }

    /// Adds every flow or none (`ovs-ofctl add-flows` as a bundle): all flows are
    /// validated first; if one is refused, nothing changes and the error names it.
    /// Later flows replace earlier identical ones, as sequential adds would.
    pub fn add_flows(&mut self, fms: Vec<FlowMod>, now_ms: u64) -> Result<Vec<RuleId>, BatchError> {
        for (index, fm) in fms.iter().enumerate() {
            validate(fm).map_err(|error| BatchError { index, error })?;
        }
        // Only check_overlap depends on the tables: apply with an undo log.
        let mut undo: Vec<(RuleId, Option<(RuleId, Slot)>)> = Vec::with_capacity(fms.len());
        let mut ids = Vec::with_capacity(fms.len());
        for (index, fm) in fms.into_iter().enumerate() {
            if let Err(error) = self.check_overlap(&fm) {
                for (new, old) in undo.into_iter().rev() {
                    self.remove_id(new);
                    if let Some((old_id, slot)) = old {
                        self.insert_slot(old_id, slot);
                    }
                }
                return Err(BatchError { index, error });
            }
            let (id, old) = self.insert_new(fm, now_ms);
            ids.push(id);
            undo.push((id, old));
        }
        Ok(ids)
    }

    /// Ids of the rules `filter` selects, in dump order.
    fn select(&self, filter: &FlowFilter) -> Vec<RuleId> {
        let mut v: Vec<(&RuleId, &Slot)> = self
            .rules
            .iter()
            .filter(|(_, s)| filter.selects(&s.rule.flow))
            .collect();
        v.sort_by_key(|(_, s)| {
            (
                s.rule.flow.table_id,
                std::cmp::Reverse(s.rule.flow.priority),
                s.seq,
            )
        });
        v.into_iter().map(|(id, _)| *id).collect()
    }

    /// `dump-flows`: the selected rules, by table, priority descending, then
    /// insertion.
    pub fn dump(&self, filter: &FlowFilter) -> Vec<(RuleId, &Rule)> {
        self.select(filter)
            .into_iter()
            .filter_map(|id| self.get(id).map(|r| (id, r)))
            .collect()
    }

    /// Every rule, in dump order.
    pub fn iter(&self) -> impl Iterator<Item = (RuleId, &Rule)> {
        self.dump(&FlowFilter::default()).into_iter()
    }

    /// `del-flows` (loose or strict per `filter.strict`): removes and returns the
    /// selected rules, in dump order.
    pub fn delete(&mut self, filter: &FlowFilter) -> Vec<RemovedRule> {
        self.select(filter)
            .into_iter()
            .filter_map(|id| {
                self.remove_id(id).map(|rule| RemovedRule {
                    id,
                    rule,
                    reason: RemovedReason::Delete,
                })
            })
            .collect()
    }

    /// `mod-flows` (loose or strict per `filter.strict`): the selected rules get
    /// `actions` (and `new_cookie` if given); counters, timeouts, creation time and
    /// ids are kept, `modified` becomes `now_ms`. Returns the ids modified; the
    /// caller adds the flow when none was (OVS does so when the request has no
    /// cookie mask).
    pub fn modify(
        &mut self,
        filter: &FlowFilter,
        actions: &[Action],
        new_cookie: Option<u64>,
        now_ms: u64,
    ) -> Result<Vec<RuleId>, TableError> {
        let ids = self.select(filter);
        for id in &ids {
            if let Some(s) = self.rules.get(id) {
                validate_actions(s.rule.flow.table_id, actions)?;
            }
        }
        for id in &ids {
            if let Some(s) = self.rules.get_mut(id) {
                s.rule.flow.actions = actions.to_vec();
                if let Some(c) = new_cookie {
                    s.rule.flow.cookie = c;
                }
                s.rule.modified_ms = now_ms;
            }
        }
        Ok(ids)
    }

    /// Applies a flow produced by a `learn()` action (see the module docs).
    pub fn learn(&mut self, fm: FlowMod, now_ms: u64) -> LearnOutcome {
        if validate(&fm).is_err() {
            return LearnOutcome::Refused;
        }
        let mut m = fm.match_;
        m.normalize();
        let Some(id) = self.find_exact(fm.table_id, &m, fm.priority) else {
            return LearnOutcome::Added(self.insert_new(fm, now_ms).0);
        };
        let Some(s) = self.rules.get_mut(&id) else {
            return LearnOutcome::Refused;
        };
        let f = &mut s.rule.flow;
        s.rule.modified_ms = now_ms;
        if f.idle_timeout == fm.idle_timeout
            && f.hard_timeout == fm.hard_timeout
            && f.importance == fm.importance
            && f.flags == fm.flags
            && f.cookie == fm.cookie
            && f.actions == fm.actions
        {
            LearnOutcome::Refreshed(id)
        } else {
            f.actions = fm.actions;
            f.cookie = fm.cookie;
            LearnOutcome::Modified(id)
        }
    }

    /// What [`Tables::learn`] would do with `fm`, without doing it.
    pub fn learn_preview(&self, fm: &FlowMod) -> LearnOutcome {
        if validate(fm).is_err() {
            return LearnOutcome::Refused;
        }
        let mut m = fm.match_;
        m.normalize();
        match self
            .find_exact(fm.table_id, &m, fm.priority)
            .and_then(|id| self.get(id).map(|r| (id, r)))
        {
            None => LearnOutcome::Added(0),
            Some((id, r)) => {
                let f = &r.flow;
                if f.idle_timeout == fm.idle_timeout
                    && f.hard_timeout == fm.hard_timeout
                    && f.importance == fm.importance
                    && f.flags == fm.flags
                    && f.cookie == fm.cookie
                    && f.actions == fm.actions
                {
                    LearnOutcome::Refreshed(id)
                } else {
                    LearnOutcome::Modified(id)
                }
            }
        }
    }

    /// Credits datapath statistics to a rule: counters grow, and `used` moves to
    /// `now_ms` when packets were seen. Returns `false` for an unknown id (a rule
    /// deleted or replaced since the megaflow was installed).
    pub fn credit(&mut self, id: RuleId, packets: u64, bytes: u64, now_ms: u64) -> bool {
        let Some(s) = self.rules.get_mut(&id) else {
            return false;
        };
        let r = &mut s.rule;
        r.n_packets = r.n_packets.saturating_add(packets);
        r.n_bytes = r.n_bytes.saturating_add(bytes);
        if packets > 0 && now_ms > r.used_ms {
            r.used_ms = now_ms;
        }
        true
    }

    /// Removes and returns the rules whose hard timeout (since `modified`) or idle
    /// timeout (since `used`) has passed at `now_ms`, in dump order.
    pub fn expire(&mut self, now_ms: u64) -> Vec<RemovedRule> {
        let mut due: Vec<(RuleId, RemovedReason)> = self
            .rules
            .iter()
            .filter_map(|(id, s)| expiry(&s.rule, now_ms).map(|r| (*id, r)))
            .collect();
        due.sort_by_key(|(id, _)| {
            self.rules.get(id).map(|s| {
                (
                    s.rule.flow.table_id,
                    std::cmp::Reverse(s.rule.flow.priority),
                    s.seq,
                )
            })
        });
        due.into_iter()
            .filter_map(|(id, reason)| {
                self.remove_id(id)
                    .map(|rule| RemovedRule { id, rule, reason })
            })
            .collect()
    }

    /// The earliest time at which [`Tables::expire`] may remove something, if any
    /// rule has a timeout (for the caller's timer).
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.rules
            .values()
            .filter_map(|s| {
                let r = &s.rule;
                let hard = (r.flow.hard_timeout > 0)
                    .then(|| r.modified_ms + u64::from(r.flow.hard_timeout) * 1000 + 1);
                let idle = (r.flow.idle_timeout > 0)
                    .then(|| r.used_ms + u64::from(r.flow.idle_timeout) * 1000 + 1);
                match (hard, idle) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }

    /// Whether `id`'s rule has an output-type action to `port` (`OFPP_ANY`: any).
    pub fn outputs_to(&self, id: RuleId, port: u32) -> bool {
        self.get(id).is_some_and(|r| {
            port == OFPP_ANY || r.flow.actions.iter().any(|a| a.output_port() == Some(port))
        })
    }
}

/// Why `rule` expires at `now_ms`, if it does (hard first, as OVS).
pub fn expiry(rule: &Rule, now_ms: u64) -> Option<RemovedReason> {
    let f = &rule.flow;
    if f.hard_timeout > 0 && now_ms > rule.modified_ms + u64::from(f.hard_timeout) * 1000 {
        return Some(RemovedReason::HardTimeout);
    }
    if f.idle_timeout > 0 && now_ms > rule.used_ms + u64::from(f.idle_timeout) * 1000 {
        return Some(RemovedReason::IdleTimeout);
    }
    None
}

/// Linear-scan lookup over every rule: the reference the classifier is tested
/// against (same tie-break: priority, then insertion order by id).
pub fn lookup_linear(tables: &Tables, table: u8, key: &FlowKey) -> Option<RuleId> {
    tables
        .rules
        .iter()
        .filter(|(_, s)| s.rule.flow.table_id == table && s.rule.flow.match_.matches(key))
        .max_by_key(|(_, s)| (s.rule.flow.priority, std::cmp::Reverse(s.seq)))
        .map(|(id, _)| *id)
}

#[cfg(test)]
mod tests {
    use super::super::syntax::{parse_flow, parse_flow_filter, FilterMode, PortMap};
    use super::*;
    use crate::flow_key::ETH_TYPE_IPV4;

    fn fm(s: &str) -> FlowMod {
        parse_flow(s, &PortMap::new()).unwrap()
    }

    fn filter(s: &str, mode: FilterMode) -> FlowFilter {
        parse_flow_filter(s, mode, &PortMap::new()).unwrap()
    }

    fn key(in_port: u32, dl_dst_last: u8) -> FlowKey {
        FlowKey {
            in_port,
            dl_dst: [0, 0, 0, 0, 0, dl_dst_last],
            dl_type: ETH_TYPE_IPV4,
            nw_src: 0x0a00_0001,
            ..FlowKey::default()
        }
    }

    fn hit(t: &Tables, k: &FlowKey) -> Option<RuleId> {
        let mut wc = FlowKey::default();
        let id = t.lookup(0, k, &mut wc);
        assert_eq!(id, lookup_linear(t, 0, k));
        id
    }

    #[test]
    fn highest_priority_wins_across_subtables() {
        let mut t = Tables::new();
        let low = t.add(fm("priority=1 actions=drop"), 0).unwrap();
        let mid = t.add(fm("priority=5,in_port=1 actions=drop"), 0).unwrap();
        let high = t
            .add(
                fm("priority=9,in_port=1,dl_dst=00:00:00:00:00:07 actions=drop"),
                0,
            )
            .unwrap();
        assert_eq!(t.n_subtables(0), 3);
        assert_eq!(hit(&t, &key(1, 7)), Some(high));
        assert_eq!(hit(&t, &key(1, 8)), Some(mid));
        assert_eq!(hit(&t, &key(2, 7)), Some(low));
        assert_eq!(t.lookup(1, &key(2, 7), &mut FlowKey::default()), None);
    }

    #[test]
    fn early_stop_limits_the_mask() {
        let mut t = Tables::new();
        t.add(fm("priority=9,in_port=1 actions=drop"), 0).unwrap();
        t.add(fm("priority=1,dl_dst=00:00:00:00:00:07 actions=drop"), 0)
            .unwrap();
        let mut wc = FlowKey::default();
        assert!(t.lookup(0, &key(1, 7), &mut wc).is_some());
        // The priority-1 subtable was never probed: dl_dst is not in the mask.
        assert_eq!(wc.in_port, u32::MAX);
        assert_eq!(wc.dl_dst, [0; 6]);
        let mut wc = FlowKey::default();
        t.lookup(0, &key(2, 7), &mut wc);
        assert_eq!(wc.dl_dst, [0xff; 6]);
    }

    #[test]
    fn equal_priority_overlap_goes_to_the_first_added() {
        let mut t = Tables::new();
        let a = t.add(fm("priority=5,in_port=1 actions=drop"), 0).unwrap();
        let b = t
            .add(fm("priority=5,dl_dst=00:00:00:00:00:07 actions=drop"), 0)
            .unwrap();
        assert_eq!(hit(&t, &key(1, 7)), Some(a));
        // Removing and re-adding the first makes it the later one.
        t.delete(&filter("in_port=1", FilterMode::DelFlows { strict: false }));
        let a2 = t.add(fm("priority=5,in_port=1 actions=drop"), 0).unwrap();
        assert_ne!(a, a2);
        assert_eq!(hit(&t, &key(1, 7)), Some(b));
    }

    #[test]
    fn add_replaces_identical_rule_as_a_new_rule() {
        let mut t = Tables::new();
        let a = t
            .add(
                fm("priority=5,in_port=1,idle_timeout=10 actions=output:2"),
                0,
            )
            .unwrap();
        assert!(t.credit(a, 3, 300, 500));
        let b = t
            .add(fm("cookie=0x7,priority=5,in_port=1 actions=output:3"), 1000)
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(t.len(), 1);
        assert!(t.get(a).is_none());
        let r = t.get(b).unwrap();
        assert_eq!((r.n_packets, r.n_bytes), (0, 0));
        assert_eq!((r.created_ms, r.modified_ms, r.used_ms), (1000, 1000, 1000));
        assert_eq!(r.flow.cookie, 7);
        assert_eq!(r.flow.idle_timeout, 0);
        assert_eq!(r.flow.actions, vec![Action::Output(3)]);
        assert!(!t.credit(a, 1, 1, 2000));
        // Another priority is another rule.
        t.add(fm("priority=6,in_port=1 actions=output:3"), 0)
            .unwrap();
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn add_flows_is_all_or_nothing() {
        let mut t = Tables::new();
        let keep = t
            .add(fm("priority=5,in_port=1 actions=output:2"), 0)
            .unwrap();
        let bad = vec![
            fm("priority=5,in_port=1 actions=output:9"),
            fm("priority=1,in_port=2 actions=output:3"),
            FlowMod {
                table_id: 255,
                ..FlowMod::default()
            },
        ];
        let e = t.add_flows(bad, 0).unwrap_err();
        assert_eq!(e.index, 2);
        assert_eq!(e.error, TableError::BadTableId(255));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(keep).unwrap().flow.actions, vec![Action::Output(2)]);

        // A check_overlap conflict found while applying rolls everything back.
        let batch = vec![
            fm("priority=5,in_port=1 actions=output:9"),
            fm("priority=1,in_port=2 actions=output:3"),
            fm("priority=5,check_overlap,dl_dst=00:00:00:00:00:07 actions=drop"),
        ];
        let e = t.add_flows(batch, 0).unwrap_err();
        assert_eq!(e.index, 2);
        assert!(matches!(e.error, TableError::Overlap { .. }));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(keep).unwrap().flow.actions, vec![Action::Output(2)]);
        assert_eq!(hit(&t, &key(1, 7)), Some(keep));

        let ok = vec![
            fm("priority=5,in_port=1 actions=output:9"),
            fm("priority=1,in_port=2 actions=output:3"),
        ];
        let ids = t.add_flows(ok, 0).unwrap();
        assert_eq!(ids.len(), 2);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn validation_errors_name_the_problem() {
        let mut t = Tables::new();
        let back = FlowMod {
            table_id: 3,
            actions: vec![Action::GotoTable(2)],
            ..FlowMod::default()
        };
        let e = t.add(back, 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "goto_table:2: must name a table after table 3"
        );
        let mut bad = fm("actions=drop");
        bad.match_
            .set_field(super::super::field::Field::TpDst, 80, None);
        let e = t.add(bad, 0).unwrap_err();
        assert!(e.to_string().starts_with("match: tp_dst"), "{e}");
        assert!(t.is_empty());
    }

    #[test]
    fn delete_loose_and_strict() {
        let mut t = Tables::new();
        let flows = [
            "priority=5,in_port=1 actions=output:2",
            "priority=6,in_port=1,dl_dst=00:00:00:00:00:07 actions=output:3",
            "priority=5,in_port=2 actions=output:1",
            "table=1,priority=5,in_port=1 actions=output:2",
            "cookie=0x12,priority=1 actions=output:4",
        ];
        t.add_flows(flows.iter().map(|s| fm(s)).collect(), 0)
            .unwrap();
        // Strict: same priority and identical match only (all tables: no table=).
        let gone = t.delete(&filter(
            "priority=5,in_port=1",
            FilterMode::DelFlows { strict: true },
        ));
        assert_eq!(gone.len(), 2);
        assert_eq!(gone[0].rule.flow.table_id, 0);
        assert_eq!(gone[1].rule.flow.table_id, 1);
        assert_eq!(gone[0].reason, RemovedReason::Delete);
        assert!(t
            .delete(&filter("in_port=1", FilterMode::DelFlows { strict: true }))
            .is_empty());
        // Loose: every rule at least as specific, any priority.
        let gone = t.delete(&filter("in_port=1", FilterMode::DelFlows { strict: false }));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].rule.flow.priority, 6);
        // out_port and cookie narrow.
        assert!(t
            .delete(&filter(
                "out_port=9",
                FilterMode::DelFlows { strict: false }
            ))
            .is_empty());
        let gone = t.delete(&filter(
            "cookie=0x10/0xf0",
            FilterMode::DelFlows { strict: false },
        ));
        assert_eq!(gone.len(), 1);
        assert_eq!(t.len(), 1);
        let gone = t.delete(&FlowFilter::default());
        assert_eq!(gone.len(), 1);
        assert!(t.is_empty());
        assert_eq!(t.n_subtables(0), 0);
    }

    #[test]
    fn dump_order_is_table_priority_insertion() {
        let mut t = Tables::new();
        let flows = [
            "table=1,priority=1 actions=drop",
            "priority=1,in_port=1 actions=drop",
            "priority=3,in_port=2 actions=drop",
            "priority=1,in_port=3 actions=drop",
        ];
        let ids = t
            .add_flows(flows.iter().map(|s| fm(s)).collect(), 0)
            .unwrap();
        let order: Vec<RuleId> = t.iter().map(|(id, _)| id).collect();
        assert_eq!(order, vec![ids[2], ids[1], ids[3], ids[0]]);
        let d = t.dump(&filter("table=1", FilterMode::DumpFlows));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn modify_keeps_counters_and_times() {
        let mut t = Tables::new();
        let a = t
            .add(
                fm("priority=5,in_port=1,hard_timeout=10 actions=output:2"),
                0,
            )
            .unwrap();
        t.credit(a, 2, 200, 100);
        let ids = t
            .modify(
                &filter("in_port=1", FilterMode::DelFlows { strict: false }),
                &[Action::Output(4)],
                None,
                500,
            )
            .unwrap();
        assert_eq!(ids, vec![a]);
        let r = t.get(a).unwrap();
        assert_eq!((r.n_packets, r.n_bytes), (2, 200));
        assert_eq!((r.created_ms, r.modified_ms, r.used_ms), (0, 500, 100));
        assert_eq!(r.flow.hard_timeout, 10);
        assert_eq!(r.flow.actions, vec![Action::Output(4)]);
    }

    #[test]
    fn idle_and_hard_timeouts_expire_with_injected_time() {
        let mut t = Tables::new();
        let idle = t
            .add(fm("priority=1,in_port=1,idle_timeout=10 actions=drop"), 0)
            .unwrap();
        let hard = t
            .add(fm("priority=1,in_port=2,hard_timeout=20 actions=drop"), 0)
            .unwrap();
        let both = t
            .add(
                fm("priority=1,in_port=3,idle_timeout=5,hard_timeout=8 actions=drop"),
                0,
            )
            .unwrap();
        let forever = t.add(fm("priority=1,in_port=4 actions=drop"), 0).unwrap();
        assert_eq!(t.next_expiry_ms(), Some(5_001));
        // Traffic keeps the idle rules alive; the hard timeout ignores it.
        t.credit(idle, 1, 64, 9_000);
        t.credit(both, 1, 64, 4_000);
        assert!(t.expire(8_000).is_empty());
        let gone = t.expire(8_001);
        assert_eq!(gone.len(), 1);
        assert_eq!(
            (gone[0].id, gone[0].reason),
            (both, RemovedReason::HardTimeout)
        );
        assert!(t.expire(19_000).is_empty());
        let gone = t.expire(19_001);
        assert_eq!(
            (gone[0].id, gone[0].reason),
            (idle, RemovedReason::IdleTimeout)
        );
        let gone = t.expire(20_001);
        assert_eq!(
            (gone[0].id, gone[0].reason),
            (hard, RemovedReason::HardTimeout)
        );
        assert!(t.expire(u64::MAX / 2).is_empty());
        assert!(t.get(forever).is_some());
        assert_eq!(t.next_expiry_ms(), None);
        // A credit with no packets does not count as use.
        let r = t
            .add(fm("priority=1,in_port=5,idle_timeout=1 actions=drop"), 0)
            .unwrap();
        t.credit(r, 0, 0, 900);
        assert_eq!(t.expire(1_001).len(), 1);
    }

    #[test]
    fn learn_adds_refreshes_or_modifies() {
        let mut t = Tables::new();
        let f =
            fm("table=20,priority=1,hard_timeout=300,dl_dst=00:00:00:00:00:07 actions=output:2");
        let LearnOutcome::Added(id) = t.learn(f.clone(), 0) else {
            panic!()
        };
        t.credit(id, 5, 500, 10);
        assert_eq!(t.learn_preview(&f), LearnOutcome::Refreshed(id));
        assert_eq!(t.learn(f.clone(), 1_000), LearnOutcome::Refreshed(id));
        assert_eq!(t.get(id).unwrap().modified_ms, 1_000);
        let mut g = f.clone();
        g.actions = vec![Action::Output(3)];
        assert_eq!(t.learn(g, 2_000), LearnOutcome::Modified(id));
        let r = t.get(id).unwrap();
        assert_eq!((r.n_packets, r.created_ms, r.modified_ms), (5, 0, 2_000));
        assert_eq!(r.flow.actions, vec![Action::Output(3)]);
        assert_eq!(t.len(), 1);
        // The hard timeout restarts at each refresh.
        assert!(t.expire(300_001).is_empty());
        assert_eq!(t.expire(302_001).len(), 1);
    }

    #[test]
    fn exact_5tuple_rules_share_one_subtable() {
        let mut t = Tables::new();
        let n = 10_000u32;
        let flows: Vec<FlowMod> = (0..n)
            .map(|i| {
                fm(&format!(
                    "priority=10,udp,nw_src=10.{}.{}.1,nw_dst=10.0.0.2,tp_src={},tp_dst=53 actions=output:2",
                    i >> 8,
                    i & 0xff,
                    1000 + (i % 1000)
                ))
            })
            .collect();
        t.add_flows(flows, 0).unwrap();
        assert_eq!(t.len(), n as usize);
        assert_eq!(t.n_subtables(0), 1);
        let k = FlowKey {
            dl_type: ETH_TYPE_IPV4,
            nw_proto: 17,
            nw_src: 0x0a00_0000 | (0x12 << 16) | (0x34 << 8) | 1,
            nw_dst: 0x0a00_0002,
            tp_src: 1000 + ((0x1234 % 1000) as u16),
            tp_dst: 53,
            ..FlowKey::default()
        };
        assert!(hit(&t, &k).is_some());
    }
}
