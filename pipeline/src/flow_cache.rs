//! A PMD's flow cache: the megaflows it holds, found through the exact-match cache
//! first and the megaflow classifier second.
//!
//! Megaflows live in a slab; the EMC and the classifier hold [`FlowRef`] handles
//! (slot + generation). Removing a megaflow bumps its slot's generation, so EMC
//! entries that still point at it stop matching at once, with no EMC sweep.
//!
//! Fast path: [`FlowCache::lookup_burst`] neither allocates nor locks. Installing and
//! removing happen between bursts (control messages), and may allocate.
//!
//! Thread safety: owned by one PMD. The per-megaflow [`FlowStats`] are shared with the
//! management thread (which reads them for revalidation and rule counters): the PMD
//! is their only writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::dpcls::{Dpcls, NoPrefetch, Prefetch};
use crate::emc::{key_hash, Emc};
use crate::flow_key::FlowKey;
use crate::parse::SimpleKey;
use crate::simple_match::{PortTable, SimpleMatch};

/// Handle of a megaflow in a PMD's slab.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowRef {
    pub slot: u32,
    pub gen: u32,
}

/// Counters of one megaflow, written by its PMD only (relaxed load + store), read
/// by the management thread (relaxed loads: independent monotonic values).
#[derive(Debug, Default)]
pub struct FlowStats {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// PMD-side time of the last hit (TSC or any monotonic clock the PMD uses).
    pub used: AtomicU64,
    /// OR of the TCP flags seen.
    pub tcp_flags: AtomicU64,
}

impl FlowStats {
    /// Credits a batch of `packets` packets of `bytes` bytes, used at `now`.
    #[inline]
    pub fn credit(&self, packets: u64, bytes: u64, now: u64, tcp_flags: u16) {
        // Relaxed load+store: the owning PMD is the only writer.
        self.packets.store(
            self.packets.load(Ordering::Relaxed) + packets,
            Ordering::Relaxed,
        );
        self.bytes.store(
            self.bytes.load(Ordering::Relaxed) + bytes,
            Ordering::Relaxed,
        );
        self.used.store(now, Ordering::Relaxed);
        if tcp_flags != 0 {
            let f = self.tcp_flags.load(Ordering::Relaxed) | u64::from(tcp_flags);
            self.tcp_flags.store(f, Ordering::Relaxed);
        }
    }

    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// One installed megaflow: what a hit needs, and nothing else, so that a slot is
/// small (24 bytes) and the slab of 100k megaflows stays in cache. Its mask and key
/// live in the classifier.
pub struct Megaflow<A> {
    pub actions: Arc<A>,
    pub stats: Arc<FlowStats>,
    /// [`CacheActions::single_output`] of the actions, kept here so the common
    /// case never reads them.
    pub single_output: Option<u32>,
}

/// What the flow cache needs to know of a megaflow's actions.
pub trait CacheActions {
    /// The port, when the actions are exactly one output.
    fn single_output(&self) -> Option<u32>;
}

/// Test and benchmark actions: a bare number, never a single output.
impl CacheActions for u32 {
    fn single_output(&self) -> Option<u32> {
        None
    }
}

struct Slot<A> {
    gen: u32,
    flow: Option<Megaflow<A>>,
}

/// Where a packet's megaflow was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hit {
    Emc(FlowRef),
    Megaflow(FlowRef),
    Miss,
}

/// Lookup counters of one burst.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BurstLookup {
    pub emc_hits: u32,
    pub megaflow_hits: u32,
    pub misses: u32,
    /// Subtables probed by the classifier for this burst.
    pub subtable_probes: u32,
}

pub struct FlowCache<A> {
    slots: Vec<Slot<A>>,
    free: Vec<u32>,
    cls: Dpcls<FlowRef>,
    emc: Emc<FlowRef>,
    simple: SimpleMatch,
    simple_on: bool,
}

impl<A: CacheActions> FlowCache<A> {
    /// `emc_entries` slots of EMC (0 disables it), inserting on 1 in
    /// `emc_insert_inv_prob` classifier hits.
    pub fn new(emc_entries: usize, emc_insert_inv_prob: u32) -> FlowCache<A> {
        let inv = if emc_entries == 0 {
            0
        } else {
            emc_insert_inv_prob
        };
        FlowCache {
            slots: Vec::new(),
            free: Vec::new(),
            cls: Dpcls::new(),
            simple: SimpleMatch::default(),
            simple_on: true,
            emc: Emc::new(emc_entries.max(2), inv),
        }
    }

    /// Installed megaflows.
    pub fn len(&self) -> usize {
        self.cls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cls.is_empty()
    }

    pub fn n_subtables(&self) -> usize {
        self.cls.subtables().len()
    }

    /// Installs a megaflow (replacing one with the same mask and masked key).
    pub fn install(
        &mut self,
        mask: &FlowKey,
        key: &FlowKey,
        actions: Arc<A>,
        stats: Arc<FlowStats>,
    ) -> FlowRef {
        let flow = Megaflow {
            single_output: actions.single_output(),
            actions,
            stats,
        };
        if let Some(old) = self.remove(mask, key) {
            drop(old);
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot { gen: 0, flow: None });
                (self.slots.len() - 1) as u32
            }
        };
        let r = match self.slots.get_mut(slot as usize) {
            Some(s) => {
                s.flow = Some(flow);
                FlowRef { slot, gen: s.gen }
            }
            None => FlowRef::default(),
        };
        self.cls.insert(mask, key, r);
        self.simple.add(mask, &key.masked(mask), r);
        r
    }

    /// Removes the megaflow with this mask and (masked) key; returns it.
    pub fn remove(&mut self, mask: &FlowKey, key: &FlowKey) -> Option<Megaflow<A>> {
        let r = self.cls.remove(mask, key)?;
        self.simple.remove(mask, &key.masked(mask), r);
        let s = self.slots.get_mut(r.slot as usize)?;
        // A new generation: EMC entries holding the old handle stop matching.
        s.gen = s.gen.wrapping_add(1);
        self.free.push(r.slot);
        s.flow.take()
    }

    /// Removes every megaflow.
    pub fn clear(&mut self) {
        let all: Vec<(FlowKey, FlowKey)> = self.cls.iter().map(|(m, k, _)| (m, k)).collect();
        for (m, k) in all {
            self.remove(&m, &k);
        }
        self.simple.clear();
        self.emc.clear();
    }

    /// The megaflow behind a handle, if it is still installed.
    #[inline]
    pub fn get(&self, r: FlowRef) -> Option<&Megaflow<A>> {
        let s = self.slots.get(r.slot as usize)?;
        if s.gen != r.gen {
            return None;
        }
        s.flow.as_ref()
    }

    /// Turns the simple-match path on or off (on by default; see
    /// [`crate::simple_match`]).
    pub fn set_simple_match(&mut self, on: bool) {
        self.simple_on = on;
    }

    /// Whether packets from `in_port` (with `recirc_id` 0) can be classified by
    /// [`FlowCache::simple_lookup`] alone.
    #[inline(always)]
    pub fn simple_enabled(&self, in_port: u32) -> bool {
        self.simple_on && self.simple.enabled(in_port)
    }

    /// The megaflow of a fresh packet from `in_port` whose [`SimpleKey`] is `k`;
    /// exact only while [`FlowCache::simple_enabled`] holds for the port.
    #[inline(always)]
    pub fn simple_lookup(&self, in_port: u32, k: &SimpleKey) -> Option<FlowRef> {
        self.simple.lookup(in_port, k)
    }

    /// `in_port`'s simple megaflows, for [`FlowCache::simple_lookup`] over a burst.
    #[inline(always)]
    pub fn simple_port(&self, in_port: u32) -> PortTable<'_> {
        self.simple.port(in_port)
    }

    /// Prefetches what executing the megaflow behind `r` reads: its counters, and
    /// its actions unless they are a single output. Reads the slot, so call it a
    /// while after the lookup that prefetched the slot.
    #[inline(always)]
    pub fn prefetch_flow<P: Prefetch>(&self, r: FlowRef) {
        if let Some(f) = self
            .slots
            .get(r.slot as usize)
            .and_then(|s| s.flow.as_ref())
        {
            P::prefetch(&*f.stats);
            if f.single_output.is_none() {
                P::prefetch(&*f.actions);
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Megaflow<A>> + '_ {
        self.slots.iter().filter_map(|s| s.flow.as_ref())
    }

    /// [`FlowCache::lookup_burst_prefetch`] without prefetching.
    #[inline]
    pub fn lookup_burst(
        &mut self,
        keys: &[FlowKey],
        hashes: &[u32],
        hits: &mut [Hit],
    ) -> BurstLookup {
        self.lookup_burst_prefetch::<NoPrefetch>(keys, hashes, hits)
    }

    /// Looks up a burst: `hits[i]` gets where key i's megaflow was found (EMC first,
    /// then the classifier in one batch). `hashes[i]` is key i's [`key_hash`] (or the
    /// NIC's RSS hash); pass what [`FlowCache::hash`] gives if you have none.
    ///
    /// Memory is touched level by level for the whole burst, each level prefetched
    /// with `P` before it is read: EMC slots, then the classifier (see
    /// [`Dpcls::lookup_batch_prefetch`]), then the megaflows' slots, and last the
    /// actions and counters that executing the burst will read.
    #[inline]
    pub fn lookup_burst_prefetch<P: Prefetch>(
        &mut self,
        keys: &[FlowKey],
        hashes: &[u32],
        hits: &mut [Hit],
    ) -> BurstLookup {
        let n = keys.len().min(hashes.len()).min(hits.len()).min(64);
        let mut res = BurstLookup::default();
        if self.emc.inserting() {
            for &h in hashes.iter().take(n) {
                self.emc.prefetch::<P>(h);
            }
        }
        let mut missing: u64 = 0;
        for i in 0..n {
            let (Some(k), Some(&h), Some(out)) = (keys.get(i), hashes.get(i), hits.get_mut(i))
            else {
                continue;
            };
            *out = Hit::Miss;
            if let Some(r) = self.emc.lookup(h, k) {
                if self.get(r).is_some() {
                    *out = Hit::Emc(r);
                    res.emc_hits += 1;
                    continue;
                }
            }
            missing |= 1u64 << i;
        }
        if missing == 0 {
            return res;
        }
        let mut found = [None::<FlowRef>; 64];
        res.subtable_probes = self
            .cls
            .lookup_batch_prefetch::<P>(keys, missing, &mut found);
        let mut rest = missing;
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            let (Some(k), Some(&h), Some(out), Some(f)) =
                (keys.get(i), hashes.get(i), hits.get_mut(i), found.get(i))
            else {
                continue;
            };
            // The classifier holds no stale handles (removal takes them out): no
            // generation check here, the slot is read (and checked) by `get`.
            match f {
                Some(r) => {
                    if let Some(s) = self.slots.get(r.slot as usize) {
                        P::prefetch(s);
                    }
                    *out = Hit::Megaflow(*r);
                    res.megaflow_hits += 1;
                    self.emc.maybe_insert(h, k, *r);
                }
                None => res.misses += 1,
            }
        }
        res
    }

    /// The hash the cache uses for a key when the port gave no RSS hash.
    #[inline]
    pub fn hash(key: &FlowKey) -> u32 {
        key_hash(key)
    }

    /// Re-sorts the classifier's subtables by recent hits.
    pub fn rerank(&mut self) {
        self.cls.rerank();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(f: impl FnOnce(&mut FlowKey)) -> FlowKey {
        let mut k = FlowKey::default();
        f(&mut k);
        k
    }

    fn lookup1(c: &mut FlowCache<u32>, k: &FlowKey) -> Hit {
        let mut hits = [Hit::Miss];
        c.lookup_burst(
            std::slice::from_ref(k),
            &[FlowCache::<u32>::hash(k)],
            &mut hits,
        );
        hits[0]
    }

    #[test]
    fn emc_then_classifier_then_miss() {
        let mut c: FlowCache<u32> = FlowCache::new(1024, 1);
        let m = key(|k| k.in_port = u32::MAX);
        let r = c.install(&m, &key(|k| k.in_port = 1), Arc::new(7), Arc::default());
        let p = key(|k| {
            k.in_port = 1;
            k.dl_type = crate::flow_key::ETH_TYPE_IPV4;
            k.tp_dst = 80;
        });
        assert_eq!(lookup1(&mut c, &p), Hit::Megaflow(r));
        assert_eq!(
            lookup1(&mut c, &p),
            Hit::Emc(r),
            "inserted into the EMC on the hit"
        );
        assert_eq!(c.get(r).map(|f| *f.actions), Some(7));
        // Removal makes the EMC entry stale at once.
        assert!(c.remove(&m, &p).is_some());
        assert_eq!(lookup1(&mut c, &p), Hit::Miss);
        // The slot is reused with a new generation; the old handle stays dead.
        let r2 = c.install(&m, &key(|k| k.in_port = 1), Arc::new(8), Arc::default());
        assert_eq!(r2.slot, r.slot);
        assert_ne!(r2.gen, r.gen);
        assert!(c.get(r).is_none());
        assert_eq!(lookup1(&mut c, &p), Hit::Megaflow(r2));
    }

    #[test]
    fn stats_credit() {
        let s = FlowStats::default();
        s.credit(3, 192, 10, 0x02);
        s.credit(1, 64, 12, 0x10);
        assert_eq!((s.packets(), s.bytes(), s.used()), (4, 256, 12));
        assert_eq!(s.tcp_flags.load(Ordering::Relaxed), 0x12);
    }

    fn arb_key() -> impl Strategy<Value = FlowKey> {
        (0u32..3, 0u32..4, 0u16..3).prop_map(|(p, d, t)| {
            key(|k| {
                k.in_port = p;
                k.nw_dst = d;
                k.tp_dst = t;
            })
        })
    }

    fn arb_mask() -> impl Strategy<Value = FlowKey> {
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(p, d, t)| {
            key(|k| {
                k.in_port = if p { u32::MAX } else { 0 };
                k.nw_dst = if d { u32::MAX } else { 0 };
                k.tp_dst = if t { u16::MAX } else { 0 };
            })
        })
    }

    proptest! {
        /// EMC + classifier give what a linear scan of the installed megaflows gives,
        /// through installs and removals mixed with lookups (so the EMC holds stale
        /// handles). Megaflows from sound translations never disagree where they
        /// overlap; here they are made disjoint by giving overlapping ones one value.
        #[test]
        fn equals_linear_scan(
            ops in prop::collection::vec((any::<bool>(), arb_mask(), arb_key(), 1u32..4), 1..80),
            probes in prop::collection::vec(arb_key(), 1..64),
        ) {
            let mut c: FlowCache<u32> = FlowCache::new(64, 1);
            let mut reference: Vec<(FlowKey, FlowKey, u32)> = Vec::new();
            // A megaflow's value is a function of the packet (here: tp_dst), as with a
            // sound translation, so overlapping megaflows agree.
            let value_of = |k: &FlowKey| u32::from(k.tp_dst) + 100;
            for (install, m, k, _) in ops {
                let mk = k.masked(&m);
                let sound = m.tp_dst == u16::MAX;
                if install && sound {
                    reference.retain(|(rm, rk, _)| !(*rm == m && *rk == mk));
                    reference.push((m, mk, value_of(&k)));
                    c.install(&m, &k, Arc::new(value_of(&k)), Arc::default());
                } else if !install {
                    let had = reference.iter().position(|(rm, rk, _)| *rm == m && *rk == mk);
                    let got = c.remove(&m, &k);
                    prop_assert_eq!(had.is_some(), got.is_some());
                    if let Some(i) = had {
                        reference.remove(i);
                    }
                }
                // Look up between changes, so the EMC fills and goes stale.
                for p in &probes {
                    let expect = reference.iter().find(|(rm, rk, _)| p.masked(rm) == *rk).map(|(_, _, v)| *v);
                    let got = match lookup1(&mut c, p) {
                        Hit::Emc(r) | Hit::Megaflow(r) => c.get(r).map(|f| *f.actions),
                        Hit::Miss => None,
                    };
                    prop_assert_eq!(got, expect);
                }
            }
            prop_assert_eq!(c.len(), reference.len());
        }
    }
}
