//! The slow path: each bridge's OpenFlow tables, upcall handling, revalidation.
//!
//! An upcall (a packet no PMD megaflow matched) is translated through its bridge's
//! tables (`pipeline::ofproto::xlate`); the result becomes a megaflow (mask, masked
//! key, datapath actions) installed in the PMD that missed, with the packet riding
//! along to be executed there. Every installed megaflow is remembered here (OVS's
//! udpif) with the rules its translation hit, so that:
//! - its packet and byte counts, read from the PMD's per-megaflow counters, are
//!   credited to those rules (`n_packets`, `n_bytes`, `idle_age`);
//! - when rules change (add, delete, learn, expiry) every megaflow is re-translated
//!   from its masked key: kept if nothing changed, updated in place if only the
//!   actions changed, removed if the new translation needs key bits the old mask
//!   did not cover (the next packet upcalls again). Packets of unaffected megaflows
//!   keep flowing in the PMDs throughout;
//! - megaflows idle for `idle_ms` are removed, and beyond `flow_limit` the least
//!   recently active go first.
//!
//! The datapath is reached through [`DpControl`], generic over the packet type, so
//! this module runs without DPDK in tests. Datapath port numbers (`odp`) are the
//! datapath's; OpenFlow port numbers are per bridge, as in OVS.
//!
//! Thread safety: one [`Ofproto`] behind a mutex, shared by the upcall handler, the
//! revalidator and the control socket; none of them is a PMD.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use pipeline::actions::{format_dp_actions, DpAction};
use pipeline::flow_cache::FlowStats;
use pipeline::ofproto::flow_match::Match;
use pipeline::ofproto::rule::OFP_DEFAULT_PRIORITY;
use pipeline::ofproto::syntax::{
    format_dump_line, format_match, parse_flow, parse_flow_filter, parse_flows, FilterMode,
    FormatOptions, PortMap,
};
use pipeline::ofproto::table::{LearnOutcome, RuleId, Tables};
use pipeline::ofproto::xlate::{
    format_trace_named, translate, translate_and_learn, Translation, XlateOptions,
};
use pipeline::FlowKey;

/// What the slow path needs of the datapath.
pub trait DpControl: Send {
    /// A packet, as the datapath hands it over in an upcall.
    type Packet: Send;
    /// Installs (or replaces) a megaflow in PMD `pmd`; `packet` is then executed
    /// with it there.
    fn install(
        &self,
        pmd: usize,
        mask: &FlowKey,
        key: &FlowKey,
        actions: Vec<DpAction>,
        stats: Arc<FlowStats>,
        packet: Option<Self::Packet>,
    );
    /// Removes a megaflow from PMD `pmd`.
    fn remove(&self, pmd: usize, mask: &FlowKey, key: &FlowKey);
    /// Returns once every PMD has applied what was sent to it before (bounded
    /// wait). Default: nothing to wait for.
    fn barrier(&self) {}
}

/// A port of a bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgePort {
    pub name: String,
    pub ofport: u32,
    /// Datapath port number.
    pub odp: usize,
}

/// One bridge: its ports and OpenFlow tables.
pub struct Bridge {
    pub name: String,
    pub ports: Vec<BridgePort>,
    pub tables: Tables,
    pub portmap: PortMap,
}

impl Bridge {
    pub fn new(name: &str, ports: Vec<BridgePort>) -> Bridge {
        let mut portmap = PortMap::new();
        for p in &ports {
            portmap.insert(p.name.clone(), p.ofport);
        }
        Bridge {
            name: name.to_string(),
            ports,
            tables: Tables::new(),
            portmap,
        }
    }

    fn ofports(&self) -> Vec<u32> {
        self.ports.iter().map(|p| p.ofport).collect()
    }

    fn odp_of(&self, ofport: u32) -> Option<usize> {
        self.ports
            .iter()
            .find(|p| p.ofport == ofport)
            .map(|p| p.odp)
    }
}

/// Slow-path settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfprotoConfig {
    /// A megaflow with no packets for this long is removed (OVS: 10 s).
    pub idle_ms: u64,
    /// Most megaflows kept (OVS: 200,000); the least recently active go first.
    pub flow_limit: usize,
}

impl Default for OfprotoConfig {
    fn default() -> Self {
        OfprotoConfig {
            idle_ms: 10_000,
            flow_limit: 200_000,
        }
    }
}

/// One installed megaflow, as the slow path remembers it.
struct UFlow {
    pmd: usize,
    bridge: usize,
    mask: FlowKey,
    /// Masked; `in_port` is the datapath port.
    key: FlowKey,
    actions: Vec<DpAction>,
    rules: Vec<RuleId>,
    stats: Arc<FlowStats>,
    seen_packets: u64,
    seen_bytes: u64,
    active_ms: u64,
}

type UFlowId = (
    usize,
    [u64; pipeline::FLOW_KEY_WORDS],
    [u64; pipeline::FLOW_KEY_WORDS],
);

/// The megaflows the slow path remembers, by (PMD, mask, masked key).
///
/// Megaflows live in a slab; the hash index holds only slab positions (4 bytes),
/// so growing it moves 4-byte entries and reuses stored hashes instead of moving
/// and rehashing 1 KiB entries (`perf upcall`: a fifth of the upcall handler's
/// time at 100k megaflows went to rehashing a map of whole megaflows).
#[derive(Default)]
struct UFlowMap {
    slab: Vec<Option<UFlow>>,
    hashes: Vec<u64>,
    free: Vec<u32>,
    index: hashbrown::HashTable<u32>,
}

fn uflow_id(f: &UFlow) -> UFlowId {
    (f.pmd, *f.mask.words(), *f.key.words())
}

fn uflow_hash(id: &UFlowId) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = pipeline::hash::WordHasher::default();
    id.hash(&mut h);
    h.finish()
}

impl UFlowMap {
    fn len(&self) -> usize {
        self.slab.len() - self.free.len()
    }

    fn find(&self, id: &UFlowId) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(
                uflow_hash(id),
                |&i| matches!(slab.get(i as usize), Some(Some(f)) if uflow_id(f) == *id),
            )
            .copied()
    }

    /// Inserts `f` under `id` (which must be `f`'s own); returns the megaflow it
    /// replaces.
    fn insert(&mut self, id: UFlowId, f: UFlow) -> Option<UFlow> {
        debug_assert!(uflow_id(&f) == id);
        if let Some(i) = self.find(&id) {
            return self.slab.get_mut(i as usize).and_then(|s| s.replace(f));
        }
        let h = uflow_hash(&id);
        let i = match self.free.pop() {
            Some(i) => {
                if let (Some(s), Some(sh)) = (
                    self.slab.get_mut(i as usize),
                    self.hashes.get_mut(i as usize),
                ) {
                    *s = Some(f);
                    *sh = h;
                }
                i
            }
            None => {
                self.slab.push(Some(f));
                self.hashes.push(h);
                (self.slab.len() - 1) as u32
            }
        };
        let hashes = &self.hashes;
        self.index.insert_unique(h, i, |&j| {
            hashes.get(j as usize).copied().unwrap_or_default()
        });
        None
    }

    fn get(&self, id: &UFlowId) -> Option<&UFlow> {
        let i = self.find(id)?;
        self.slab.get(i as usize)?.as_ref()
    }

    fn get_mut(&mut self, id: &UFlowId) -> Option<&mut UFlow> {
        let i = self.find(id)?;
        self.slab.get_mut(i as usize)?.as_mut()
    }

    fn remove(&mut self, id: &UFlowId) -> Option<UFlow> {
        let slab = &self.slab;
        let entry = self
            .index
            .find_entry(
                uflow_hash(id),
                |&i| matches!(slab.get(i as usize), Some(Some(f)) if uflow_id(f) == *id),
            )
            .ok()?;
        let (i, _) = entry.remove();
        let f = self.slab.get_mut(i as usize)?.take();
        self.free.push(i);
        f
    }

    fn keys(&self) -> impl Iterator<Item = UFlowId> + '_ {
        self.values().map(uflow_id)
    }

    fn values(&self) -> impl Iterator<Item = &UFlow> + '_ {
        self.slab.iter().flatten()
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut UFlow> + '_ {
        self.slab.iter_mut().flatten()
    }

    fn iter(&self) -> impl Iterator<Item = (UFlowId, &UFlow)> + '_ {
        self.values().map(|f| (uflow_id(f), f))
    }
}

/// Slow-path counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OfprotoStats {
    pub upcalls: u64,
    /// Upcalls whose input port belongs to no bridge (dropped).
    pub upcalls_no_bridge: u64,
    pub megaflows_installed: u64,
    pub megaflows_updated: u64,
    pub megaflows_removed: u64,
    pub revalidations: u64,
    pub xlate_errors: u64,
}

pub struct Ofproto<D: DpControl> {
    bridges: Vec<Bridge>,
    /// Datapath port -> (bridge index, OpenFlow port).
    odp: HashMap<usize, (usize, u32)>,
    flows: UFlowMap,
    dp: D,
    cfg: OfprotoConfig,
    start: Instant,
    /// Tables changed since the last revalidation.
    dirty: bool,
    pub stats: OfprotoStats,
}

/// `inner` asks for no bit `outer` lacks.
fn mask_within(inner: &FlowKey, outer: &FlowKey) -> bool {
    inner
        .words()
        .iter()
        .zip(outer.words())
        .all(|(i, o)| i & !o == 0)
}

impl<D: DpControl> Ofproto<D> {
    pub fn new(bridges: Vec<Bridge>, dp: D, cfg: OfprotoConfig) -> Ofproto<D> {
        let mut odp = HashMap::new();
        for (bi, b) in bridges.iter().enumerate() {
            for p in &b.ports {
                odp.insert(p.odp, (bi, p.ofport));
            }
        }
        Ofproto {
            bridges,
            odp,
            flows: UFlowMap::default(),
            dp,
            cfg,
            start: Instant::now(),
            dirty: false,
            stats: OfprotoStats::default(),
        }
    }

    /// Milliseconds since this slow path started (the tables' clock).
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn bridges(&self) -> &[Bridge] {
        &self.bridges
    }

    /// Installed megaflows.
    pub fn n_megaflows(&self) -> usize {
        self.flows.len()
    }

    fn bridge_index(&self, name: &str) -> Result<usize, String> {
        self.bridges
            .iter()
            .position(|b| b.name == name)
            .ok_or_else(|| format!("no bridge named {name:?}"))
    }

    /// Translates `key` (datapath `in_port`) on `bridge`; outputs become datapath
    /// ports (outputs to ports the bridge lacks are dropped from the list).
    fn xlate(
        &mut self,
        bridge: usize,
        key: &FlowKey,
        ofport: u32,
        learn: bool,
    ) -> Option<(Translation, Vec<DpAction>)> {
        let now = self.now_ms();
        let b = self.bridges.get_mut(bridge)?;
        let mut k = *key;
        k.in_port = ofport;
        let ports = b.ofports();
        let t = if learn {
            translate_and_learn(&mut b.tables, &k, &ports, XlateOptions::default(), now)
        } else {
            translate(&b.tables, &k, &ports, XlateOptions::default())
        };
        let mut actions: Vec<DpAction> = t
            .actions
            .iter()
            .filter_map(|a| match a {
                DpAction::Output(p) => b.odp_of(*p).map(|o| DpAction::Output(o as u32)),
                other => Some(other.clone()),
            })
            .collect();
        if !actions.iter().any(|a| matches!(a, DpAction::Output(_))) {
            actions.retain(|a| !matches!(a, DpAction::Output(_)));
            if actions.is_empty()
                || actions
                    .iter()
                    .all(|a| !matches!(a, DpAction::Controller { .. }))
            {
                actions = vec![DpAction::Drop];
            }
        }
        Some((t, actions))
    }

    /// Handles an upcall from PMD `pmd`: translate (learning), install the megaflow
    /// there with the packet. Revalidates first if anything was learned.
    pub fn handle_upcall(&mut self, pmd: usize, key: FlowKey, packet: D::Packet) {
        self.stats.upcalls += 1;
        let Some(&(bridge, ofport)) = self.odp.get(&(key.in_port as usize)) else {
            self.stats.upcalls_no_bridge += 1;
            return;
        };
        let Some((t, actions)) = self.xlate(bridge, &key, ofport, true) else {
            return;
        };
        if t.error.is_some() {
            self.stats.xlate_errors += 1;
        }
        if t.learn_outcomes
            .iter()
            .any(|o| matches!(o, LearnOutcome::Added(_) | LearnOutcome::Modified(_)))
        {
            self.dirty = true;
        }
        let mask = t.mask;
        let mkey = key.masked(&mask);
        let stats: Arc<FlowStats> = Arc::default();
        let id: UFlowId = (pmd, *mask.words(), *mkey.words());
        let now = self.now_ms();
        self.dp.install(
            pmd,
            &mask,
            &mkey,
            actions.clone(),
            stats.clone(),
            Some(packet),
        );
        self.stats.megaflows_installed += 1;
        // The packet itself is credited by the PMD to the new megaflow's stats.
        self.flows.insert(
            id,
            UFlow {
                pmd,
                bridge,
                mask,
                key: mkey,
                actions,
                rules: t.rules,
                stats,
                seen_packets: 0,
                seen_bytes: 0,
                active_ms: now,
            },
        );
        if self.dirty {
            self.revalidate();
        }
    }

    /// Re-translates every megaflow after a table change (see the module docs);
    /// returns once the PMDs have applied the resulting updates.
    pub fn revalidate(&mut self) {
        self.dirty = false;
        self.stats.revalidations += 1;
        let changes = self.stats.megaflows_removed + self.stats.megaflows_updated;
        let ids: Vec<UFlowId> = self.flows.keys().collect();
        for id in ids {
            let Some(f) = self.flows.get(&id) else {
                continue;
            };
            let (bridge, key, old_mask, pmd) = (f.bridge, f.key, f.mask, f.pmd);
            let Some(&(_, ofport)) = self.odp.get(&(key.in_port as usize)) else {
                continue;
            };
            let Some((t, actions)) = self.xlate(bridge, &key, ofport, false) else {
                continue;
            };
            let Some(f) = self.flows.get_mut(&id) else {
                continue;
            };
            if !mask_within(&t.mask, &old_mask) {
                self.dp.remove(pmd, &old_mask, &key);
                self.stats.megaflows_removed += 1;
                self.flows.remove(&id);
                continue;
            }
            f.rules = t.rules;
            if actions != f.actions {
                f.actions = actions.clone();
                self.dp
                    .install(pmd, &old_mask, &key, actions, f.stats.clone(), None);
                self.stats.megaflows_updated += 1;
            }
        }
        if self.stats.megaflows_removed + self.stats.megaflows_updated != changes {
            self.dp.barrier();
        }
    }

    /// Periodic work: credit rule counters from megaflow counters, expire rules
    /// (idle/hard timeouts), remove idle megaflows and those beyond the limit,
    /// revalidate after any rule change.
    pub fn run_periodic(&mut self) {
        let now = self.now_ms();
        for f in self.flows.values_mut() {
            let p = f.stats.packets();
            let b = f.stats.bytes();
            let dp = p.saturating_sub(f.seen_packets);
            let db = b.saturating_sub(f.seen_bytes);
            if dp > 0 {
                f.active_ms = now;
                if let Some(br) = self.bridges.get_mut(f.bridge) {
                    for r in &f.rules {
                        br.tables.credit(*r, dp, db, now);
                    }
                }
            }
            f.seen_packets = p;
            f.seen_bytes = b;
        }
        for b in &mut self.bridges {
            if !b.tables.expire(now).is_empty() {
                self.dirty = true;
            }
        }
        let idle = self.cfg.idle_ms;
        let mut gone: Vec<UFlowId> = self
            .flows
            .iter()
            .filter(|(_, f)| now.saturating_sub(f.active_ms) >= idle)
            .map(|(id, _)| id)
            .collect();
        let over = self
            .flows
            .len()
            .saturating_sub(gone.len())
            .saturating_sub(self.cfg.flow_limit);
        if over > 0 {
            // Not idle (those are all in `gone` already), oldest activity first.
            let mut by_age: Vec<(u64, UFlowId)> = self
                .flows
                .iter()
                .filter(|(_, f)| now.saturating_sub(f.active_ms) < idle)
                .map(|(id, f)| (f.active_ms, id))
                .collect();
            by_age.sort_by_key(|(t, _)| *t);
            gone.extend(by_age.into_iter().take(over).map(|(_, id)| id));
        }
        for id in gone {
            if let Some(f) = self.flows.remove(&id) {
                self.dp.remove(f.pmd, &f.mask, &f.key);
                self.stats.megaflows_removed += 1;
            }
        }
        if self.dirty {
            self.revalidate();
        }
    }

    // --- control commands -------------------------------------------------------

    /// `add-flow BR FLOW`.
    pub fn add_flow(&mut self, bridge: &str, text: &str) -> Result<(), String> {
        self.add_flows(bridge, text)
    }

    /// `add-flows BR FILE` (the file's text): all or nothing; `#` comments and blank
    /// lines are skipped. An error names the line and the reason.
    pub fn add_flows(&mut self, bridge: &str, text: &str) -> Result<(), String> {
        let bi = self.bridge_index(bridge)?;
        let now = self.now_ms();
        let b = self.bridges.get_mut(bi).ok_or("no such bridge")?;
        let fms = parse_flows(text, &b.portmap).map_err(|e| e.to_string())?;
        b.tables.add_flows(fms, now).map_err(|e| e.to_string())?;
        self.revalidate();
        Ok(())
    }

    /// `del-flows BR [FLOW] [--strict]`.
    pub fn del_flows(
        &mut self,
        bridge: &str,
        filter: Option<&str>,
        strict: bool,
    ) -> Result<usize, String> {
        let bi = self.bridge_index(bridge)?;
        let b = self.bridges.get_mut(bi).ok_or("no such bridge")?;
        let f = parse_flow_filter(
            filter.unwrap_or(""),
            FilterMode::DelFlows { strict },
            &b.portmap,
        )
        .map_err(|e| e.to_string())?;
        let n = b.tables.delete(&f).len();
        self.revalidate();
        Ok(n)
    }

    /// `dump-flows BR [FLOW]`, as `ovs-ofctl dump-flows` prints it.
    pub fn dump_flows(
        &mut self,
        bridge: &str,
        filter: Option<&str>,
        names: bool,
    ) -> Result<String, String> {
        // Counters are credited up to now first, as OVS's are when asked.
        self.run_periodic();
        let bi = self.bridge_index(bridge)?;
        let now = self.now_ms();
        let b = self.bridges.get(bi).ok_or("no such bridge")?;
        let f = parse_flow_filter(filter.unwrap_or(""), FilterMode::DumpFlows, &b.portmap)
            .map_err(|e| e.to_string())?;
        let opts = FormatOptions {
            names: names.then_some(&b.portmap),
        };
        let mut out = String::new();
        for (_, r) in b.tables.dump(&f) {
            out.push_str(&format_dump_line(r, now, &opts));
            out.push('\n');
        }
        Ok(out)
    }

    /// `ofproto-trace BR KEY`: the translation of a flow given in `ovs-ofctl` match
    /// syntax, without side effects (nothing is learned).
    pub fn trace(&mut self, bridge: &str, key_text: &str) -> Result<String, String> {
        let bi = self.bridge_index(bridge)?;
        let b = self.bridges.get(bi).ok_or("no such bridge")?;
        let key = parse_key(key_text, &b.portmap)?;
        let t = translate(
            &b.tables,
            &key,
            &b.ofports(),
            XlateOptions {
                trace: true,
                normal: None,
            },
        );
        Ok(format_trace_named(&t, &b.name))
    }

    /// `dump-dp-flows`: every megaflow with its counters and actions.
    pub fn dump_dp_flows(&mut self) -> String {
        let now = self.now_ms();
        let mut rows: Vec<(usize, String)> = self
            .flows
            .values()
            .map(|f| {
                let bname = self.bridges.get(f.bridge).map_or("?", |b| b.name.as_str());
                (
                    f.pmd,
                    format!(
                        "pmd {} {bname}: {}, packets:{}, bytes:{}, used:{}, actions:{}",
                        f.pmd,
                        format_megaflow(&f.key, &f.mask),
                        f.stats.packets(),
                        f.stats.bytes(),
                        if f.stats.packets() == 0 {
                            "never".to_string()
                        } else {
                            format!("{:.3}s", now.saturating_sub(f.active_ms) as f64 / 1000.0)
                        },
                        format_dp_actions(&f.actions)
                    ),
                )
            })
            .collect();
        rows.sort();
        let mut out = String::new();
        for (_, r) in rows {
            let _ = writeln!(out, "{r}");
        }
        out
    }
}

/// A megaflow as an `ovs-ofctl` match (`in_port=1,ip,nw_dst=10.0.0.7`; `in_port`
/// is the datapath port).
pub fn format_megaflow(key: &FlowKey, mask: &FlowKey) -> String {
    let m = Match::new(*key, *mask);
    let s = format_match(&m, OFP_DEFAULT_PRIORITY, &FormatOptions::default());
    if s.is_empty() {
        "(any)".to_string()
    } else {
        s
    }
}

/// A flow key from `ovs-ofctl` match syntax (`in_port=1,dl_src=...,tcp,tp_dst=80`):
/// fields not given are zero.
pub fn parse_key(text: &str, ports: &PortMap) -> Result<FlowKey, String> {
    let fm = parse_flow(&format!("{text},actions=drop"), ports).map_err(|e| e.to_string())?;
    Ok(fm.match_.key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A datapath that records what it is asked to do.
    #[derive(Default)]
    struct Recorder {
        log: Mutex<Vec<String>>,
    }

    impl DpControl for &Recorder {
        type Packet = Vec<u8>;
        fn install(
            &self,
            pmd: usize,
            mask: &FlowKey,
            key: &FlowKey,
            actions: Vec<DpAction>,
            _stats: Arc<FlowStats>,
            packet: Option<Vec<u8>>,
        ) {
            self.log.lock().unwrap().push(format!(
                "install pmd{pmd} {} -> {}{}",
                format_megaflow(key, mask),
                format_dp_actions(&actions),
                if packet.is_some() { " +pkt" } else { "" }
            ));
        }
        fn remove(&self, pmd: usize, mask: &FlowKey, key: &FlowKey) {
            self.log
                .lock()
                .unwrap()
                .push(format!("remove pmd{pmd} {}", format_megaflow(key, mask)));
        }
    }

    fn bridge() -> Bridge {
        Bridge::new(
            "br0",
            vec![
                BridgePort {
                    name: "p1".into(),
                    ofport: 1,
                    odp: 10,
                },
                BridgePort {
                    name: "p2".into(),
                    ofport: 2,
                    odp: 11,
                },
            ],
        )
    }

    fn key(in_port: u32, text: &str) -> FlowKey {
        let mut pm = PortMap::new();
        pm.insert("p1", 1);
        let mut k = parse_key(text, &pm).unwrap();
        k.in_port = in_port;
        k
    }

    #[test]
    fn upcall_installs_megaflow_with_datapath_ports_and_revalidates_on_change() {
        let rec = Recorder::default();
        let mut o = Ofproto::new(vec![bridge()], &rec, OfprotoConfig::default());
        o.add_flow("br0", "in_port=1,ip,nw_dst=10.0.0.0/24 actions=output:2")
            .unwrap();
        o.handle_upcall(0, key(10, "ip,nw_dst=10.0.0.7,nw_src=1.2.3.4"), vec![1]);
        {
            let log = rec.log.lock().unwrap();
            assert_eq!(log.len(), 1);
            assert!(log[0].starts_with("install pmd0 "), "{}", log[0]);
            assert!(log[0].ends_with(" -> 11 +pkt"), "{}", log[0]);
            assert!(
                !log[0].contains("1.2.3.4"),
                "nw_src is not in the megaflow: {}",
                log[0]
            );
        }
        assert_eq!(o.n_megaflows(), 1);
        // A rule change that alters the actions updates the megaflow in place.
        o.add_flow(
            "br0",
            "priority=40000,in_port=1,ip,nw_dst=10.0.0.0/24 actions=drop",
        )
        .unwrap();
        {
            let log = rec.log.lock().unwrap();
            assert_eq!(log.len(), 2, "{log:?}");
            assert!(log[1].ends_with(" -> drop"), "{}", log[1]);
        }
        // A rule that needs more bits than the megaflow's mask: removed.
        o.add_flow("br0", "priority=50000,ip,nw_src=1.2.3.4 actions=output:1")
            .unwrap();
        {
            let log = rec.log.lock().unwrap();
            assert_eq!(log.len(), 3, "{log:?}");
            assert!(log[2].starts_with("remove pmd0 "), "{}", log[2]);
        }
        assert_eq!(o.n_megaflows(), 0);
    }

    #[test]
    fn rule_counters_are_credited_from_megaflow_counters() {
        let rec = Recorder::default();
        let mut o = Ofproto::new(vec![bridge()], &rec, OfprotoConfig::default());
        o.add_flow("br0", "in_port=1 actions=output:2").unwrap();
        o.handle_upcall(0, key(10, "ip,nw_dst=10.0.0.1"), vec![]);
        let stats = o.flows.values().next().unwrap().stats.clone();
        stats.credit(5, 320, 0, 0);
        let dump = o.dump_flows("br0", None, false).unwrap();
        assert!(dump.contains("n_packets=5, n_bytes=320,"), "{dump}");
        stats.credit(1, 64, 0, 0);
        let dump = o.dump_flows("br0", None, false).unwrap();
        assert!(dump.contains("n_packets=6, n_bytes=384,"), "{dump}");
    }

    #[test]
    fn idle_megaflows_expire_and_limit_evicts() {
        let rec = Recorder::default();
        let cfg = OfprotoConfig {
            idle_ms: 0,
            flow_limit: 200_000,
        };
        let mut o = Ofproto::new(vec![bridge()], &rec, cfg);
        o.add_flow("br0", "in_port=1,ip actions=output:2").unwrap();
        o.handle_upcall(0, key(10, "ip"), vec![]);
        assert_eq!(o.n_megaflows(), 1);
        o.run_periodic();
        assert_eq!(o.n_megaflows(), 0);
        assert!(rec
            .log
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .starts_with("remove"));

        let cfg = OfprotoConfig {
            idle_ms: 1_000_000,
            flow_limit: 2,
        };
        let rec2 = Recorder::default();
        let mut o = Ofproto::new(vec![bridge()], &rec2, cfg);
        o.add_flow("br0", "in_port=1,ip,nw_dst=10.0.0.0/24 actions=output:2")
            .unwrap();
        o.add_flow("br0", "in_port=1,ip,nw_dst=10.0.1.0/24 actions=output:2")
            .unwrap();
        o.add_flow("br0", "in_port=1,ip,nw_dst=10.0.2.0/24 actions=output:2")
            .unwrap();
        for d in ["10.0.0.1", "10.0.1.1", "10.0.2.1"] {
            o.handle_upcall(0, key(10, &format!("ip,nw_dst={d}")), vec![]);
        }
        assert_eq!(o.n_megaflows(), 3);
        o.run_periodic();
        assert_eq!(o.n_megaflows(), 2);
    }

    #[test]
    fn errors_name_bridge_and_token() {
        let rec = Recorder::default();
        let mut o = Ofproto::new(vec![bridge()], &rec, OfprotoConfig::default());
        assert_eq!(
            o.add_flow("brX", "actions=drop").unwrap_err(),
            "no bridge named \"brX\""
        );
        let e = o
            .add_flow("br0", "nw_src=10.0.0.300 actions=drop")
            .unwrap_err();
        assert!(e.contains("10.0.0.300"), "{e}");
        // All or nothing.
        let e = o
            .add_flows(
                "br0",
                "in_port=1 actions=output:2\nin_port=2 actions=bogus\n",
            )
            .unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        assert_eq!(o.dump_flows("br0", None, false).unwrap(), "");
    }

    #[test]
    fn trace_names_the_bridge_and_ends_with_datapath_actions() {
        let rec = Recorder::default();
        let mut o = Ofproto::new(vec![bridge()], &rec, OfprotoConfig::default());
        o.add_flow("br0", "in_port=1 actions=resubmit(,1)").unwrap();
        o.add_flow("br0", "table=1 actions=mod_vlan_vid:5,output:2")
            .unwrap();
        let t = o
            .trace("br0", "in_port=p1,dl_dst=00:00:00:00:00:01")
            .unwrap();
        assert!(t.contains("bridge(\"br0\")"), "{t}");
        assert_eq!(
            t.lines().last().unwrap(),
            "Datapath actions: push_vlan(vid=5,pcp=0),2",
            "{t}"
        );
        assert!(
            rec.log.lock().unwrap().is_empty(),
            "a trace installs nothing"
        );
    }
}
