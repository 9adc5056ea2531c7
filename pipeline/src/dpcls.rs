//! The megaflow classifier (OVS's dpcls): tuple-space search over [`FlowKey`] words.
//!
//! One [`Subtable`] per distinct mask, each a hash table of masked keys. A lookup
//! probes subtables in rank order (most hits first; [`Dpcls::rerank`] re-sorts) and
//! returns the first hit. Megaflows are installed from sound translations, so any
//! megaflow a packet matches carries the packet's actions: the first hit is right.
//!
//! Fast path: `lookup`/`lookup_batch` neither allocate nor lock; they only update the
//! hit counters of the subtable they hit. Inserting or removing a megaflow may grow or
//! shrink a table (allocation): that happens when a PMD applies a control message
//! between bursts, never per packet.
//!
//! Thread safety: a `Dpcls` is owned by one PMD thread; nothing in it is shared.

use hashbrown::HashTable;

use crate::flow_key::{FlowKey, FLOW_KEY_WORDS};

type Words = [u64; FLOW_KEY_WORDS];

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(MIX).rotate_left(29)
}

/// A mask with the indices of its non-zero words, so hashing and comparing touch
/// only the words the mask cares about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    words: Words,
    idx: [u8; FLOW_KEY_WORDS],
    n: u8,
}

impl Mask {
    pub fn new(mask: &FlowKey) -> Mask {
        let words = *mask.words();
        let mut idx = [0u8; FLOW_KEY_WORDS];
        let mut n = 0u8;
        for (i, w) in words.iter().enumerate() {
            if *w != 0 {
                if let Some(slot) = idx.get_mut(n as usize) {
                    *slot = i as u8;
                    n += 1;
                }
            }
        }
        Mask { words, idx, n }
    }

    /// The mask as a key-shaped value.
    pub fn to_key(&self) -> FlowKey {
        let mut k = FlowKey::default();
        *k.words_mut() = self.words;
        k
    }

    #[inline(always)]
    fn active(&self) -> &[u8] {
        self.idx.get(..self.n as usize).unwrap_or(&[])
    }

    /// Hash of `key & mask` over the mask's non-zero words.
    #[inline]
    fn hash(&self, key: &Words) -> u64 {
        let mut h = u64::from(self.n);
        for &i in self.active() {
            let i = i as usize;
            if let (Some(k), Some(m)) = (key.get(i), self.words.get(i)) {
                h = mix(h, k & m);
            }
        }
        h ^ (h >> 32)
    }

    /// `key & mask == stored` (stored is already masked).
    #[inline]
    fn matches(&self, stored: &Words, key: &Words) -> bool {
        self.active().iter().all(|&i| {
            let i = i as usize;
            matches!((key.get(i), self.words.get(i), stored.get(i)), (Some(k), Some(m), Some(s)) if k & m == *s)
        })
    }

    fn apply(&self, key: &FlowKey) -> Words {
        let mut out = [0u64; FLOW_KEY_WORDS];
        for ((o, k), m) in out.iter_mut().zip(key.words()).zip(&self.words) {
            *o = k & m;
        }
        out
    }
}

struct Entry<V> {
    hash: u64,
    key: Words,
    value: V,
}

/// All megaflows with one mask.
pub struct Subtable<V> {
    mask: Mask,
    table: HashTable<Entry<V>>,
    hits: u64,
}

impl<V> Subtable<V> {
    pub fn mask(&self) -> &Mask {
        &self.mask
    }
    pub fn len(&self) -> usize {
        self.table.len()
    }
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
    /// Hits since the last [`Dpcls::rerank`].
    pub fn hits(&self) -> u64 {
        self.hits
    }
}

/// The classifier.
pub struct Dpcls<V> {
    subtables: Vec<Subtable<V>>,
    len: usize,
}

impl<V> Default for Dpcls<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> Dpcls<V> {
    pub fn new() -> Self {
        Dpcls {
            subtables: Vec::new(),
            len: 0,
        }
    }

    /// Number of megaflows.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn subtables(&self) -> &[Subtable<V>] {
        &self.subtables
    }

    /// Installs the megaflow `key`/`mask`; replaces (and returns) the value of an
    /// identical megaflow.
    pub fn insert(&mut self, mask: &FlowKey, key: &FlowKey, value: V) -> Option<V> {
        let m = Mask::new(mask);
        let pos = match self.subtables.iter().position(|s| s.mask == m) {
            Some(p) => p,
            None => {
                self.subtables.push(Subtable {
                    mask: m,
                    table: HashTable::new(),
                    hits: 0,
                });
                self.subtables.len() - 1
            }
        };
        let st = self.subtables.get_mut(pos)?;
        let masked = st.mask.apply(key);
        let hash = st.mask.hash(&masked);
        match st.table.find_mut(hash, |e| e.key == masked) {
            Some(e) => Some(std::mem::replace(&mut e.value, value)),
            None => {
                st.table.insert_unique(
                    hash,
                    Entry {
                        hash,
                        key: masked,
                        value,
                    },
                    |e| e.hash,
                );
                self.len += 1;
                None
            }
        }
    }

    /// Removes the megaflow `key`/`mask` (an empty subtable goes too).
    pub fn remove(&mut self, mask: &FlowKey, key: &FlowKey) -> Option<V> {
        let m = Mask::new(mask);
        let pos = self.subtables.iter().position(|s| s.mask == m)?;
        let st = self.subtables.get_mut(pos)?;
        let masked = st.mask.apply(key);
        let hash = st.mask.hash(&masked);
        let entry = st.table.find_entry(hash, |e| e.key == masked).ok()?;
        let (e, _) = entry.remove();
        self.len -= 1;
        if st.table.is_empty() {
            self.subtables.remove(pos);
        }
        Some(e.value)
    }

    /// The value of the megaflow `key` falls in, and how many subtables were probed.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey) -> (Option<&V>, u32) {
        let words = key.words();
        let mut probed = 0u32;
        for st in self.subtables.iter_mut() {
            probed += 1;
            let h = st.mask.hash(words);
            if let Some(e) = st.table.find(h, |e| st.mask.matches(&e.key, words)) {
                st.hits += 1;
                return (Some(&e.value), probed);
            }
        }
        (None, probed)
    }

    /// Looks up the keys of a batch whose bit is set in `todo` (bit i: `keys[i]`; at
    /// most 64 keys), subtable by subtable, so each subtable's mask stays hot while the
    /// batch goes through it. `out[i]` gets key i's value (`None` on a miss; entries
    /// not in `todo` are left alone). Returns the number of subtable probes made.
    #[inline]
    pub fn lookup_batch(&mut self, keys: &[FlowKey], todo: u64, out: &mut [Option<V>]) -> u32
    where
        V: Copy,
    {
        let n = keys.len().min(out.len()).min(64);
        let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        let mut todo = todo & all;
        let mut rest = todo;
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            if let Some(o) = out.get_mut(i) {
                *o = None;
            }
        }
        let mut probes = 0u32;
        for st in self.subtables.iter_mut() {
            if todo == 0 {
                break;
            }
            let mut rest = todo;
            while rest != 0 {
                let i = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                let (Some(key), Some(slot)) = (keys.get(i), out.get_mut(i)) else {
                    continue;
                };
                probes += 1;
                let words = key.words();
                let h = st.mask.hash(words);
                if let Some(e) = st.table.find(h, |e| st.mask.matches(&e.key, words)) {
                    *slot = Some(e.value);
                    st.hits += 1;
                    todo &= !(1u64 << i);
                }
            }
        }
        probes
    }

    /// Sorts subtables by hits since the last call (most first) and resets the hits.
    pub fn rerank(&mut self) {
        self.subtables.sort_by_key(|s| std::cmp::Reverse(s.hits));
        for st in &mut self.subtables {
            st.hits = 0;
        }
    }

    /// Every megaflow as (mask, masked key, value).
    pub fn iter(&self) -> impl Iterator<Item = (FlowKey, FlowKey, &V)> + '_ {
        self.subtables.iter().flat_map(|st| {
            let mask = st.mask.to_key();
            st.table.iter().map(move |e| {
                let mut k = FlowKey::default();
                *k.words_mut() = e.key;
                (mask, k, &e.value)
            })
        })
    }

    /// Keeps the megaflows for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&FlowKey, &FlowKey, &mut V) -> bool) {
        for st in &mut self.subtables {
            let mask = st.mask.to_key();
            let before = st.table.len();
            st.table.retain(|e| {
                let mut k = FlowKey::default();
                *k.words_mut() = e.key;
                keep(&mask, &k, &mut e.value)
            });
            self.len -= before - st.table.len();
        }
        self.subtables.retain(|st| !st.table.is_empty());
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

    #[test]
    fn insert_lookup_remove() {
        let mut c = Dpcls::new();
        let m_port = key(|k| k.in_port = u32::MAX);
        let m_dst = key(|k| {
            k.in_port = u32::MAX;
            k.nw_dst = 0xffff_ff00;
        });
        assert_eq!(c.insert(&m_port, &key(|k| k.in_port = 1), 10), None);
        assert_eq!(
            c.insert(
                &m_dst,
                &key(|k| {
                    k.in_port = 2;
                    k.nw_dst = 0x0a00_0005;
                }),
                20
            ),
            None
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c.subtables().len(), 2);
        let p = key(|k| {
            k.in_port = 2;
            k.nw_dst = 0x0a00_0077;
            k.tp_dst = 80;
        });
        assert_eq!(c.lookup(&p).0, Some(&20));
        assert_eq!(c.lookup(&key(|k| k.in_port = 1)).0, Some(&10));
        assert_eq!(c.lookup(&key(|k| k.in_port = 3)), (None, 2));
        // Replace keeps one entry.
        assert_eq!(c.insert(&m_port, &key(|k| k.in_port = 1), 11), Some(10));
        assert_eq!(c.len(), 2);
        assert_eq!(c.remove(&m_dst, &p), Some(20));
        assert_eq!(c.subtables().len(), 1, "empty subtable removed");
        assert_eq!(c.lookup(&p).0, None);
    }

    #[test]
    fn rerank_puts_hot_subtables_first() {
        let mut c = Dpcls::new();
        let m1 = key(|k| k.in_port = u32::MAX);
        let m2 = key(|k| k.tp_dst = u16::MAX);
        c.insert(&m1, &key(|k| k.in_port = 1), 1);
        c.insert(&m2, &key(|k| k.tp_dst = 53), 2);
        for _ in 0..5 {
            c.lookup(&key(|k| k.tp_dst = 53));
        }
        c.rerank();
        assert_eq!(c.subtables()[0].mask().to_key(), m2);
        assert_eq!(c.lookup(&key(|k| k.tp_dst = 53)), (Some(&2), 1));
    }

    /// A random sparse key over a few fields with few values, so masks and keys collide.
    fn arb_key() -> impl Strategy<Value = FlowKey> {
        (0u32..4, 0u32..4, 0u16..3, 0u8..3, any::<u8>()).prop_map(|(p, d, t, b, x)| {
            key(|k| {
                k.in_port = p;
                k.nw_dst = 0x0a00_0000 | d | (u32::from(x) << 8);
                k.tp_dst = t;
                k.dl_dst = [b, 0, 0, 0, 0, x];
            })
        })
    }

    fn arb_mask() -> impl Strategy<Value = FlowKey> {
        (
            any::<bool>(),
            prop_oneof![Just(0u32), Just(0xffu32), Just(0xffff_ffffu32)],
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(p, d, t, b)| {
                key(|k| {
                    k.in_port = if p { u32::MAX } else { 0 };
                    k.nw_dst = d;
                    k.tp_dst = if t { u16::MAX } else { 0 };
                    k.dl_dst = if b { [0xff, 0, 0, 0, 0, 0] } else { [0; 6] };
                })
            })
    }

    fn masked(k: &FlowKey, m: &FlowKey) -> FlowKey {
        let mut out = FlowKey::default();
        for ((o, a), b) in out.words_mut().iter_mut().zip(k.words()).zip(m.words()) {
            *o = a & b;
        }
        out
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Box<(FlowKey, FlowKey)>, u32),
        Remove(usize),
    }

    proptest! {
        /// The classifier agrees with a linear scan over the same megaflows, through
        /// insertions, replacements and deletions. Megaflows here may overlap with
        /// different values, so the reference accepts any matching entry's value, and
        /// checks a miss exactly.
        #[test]
        fn matches_linear_scan(
            ops in prop::collection::vec(
                prop_oneof![
                    3 => (arb_mask(), arb_key(), 0u32..1000).prop_map(|(m, k, v)| Op::Insert(Box::new((m, k)), v)),
                    1 => (0usize..64).prop_map(Op::Remove),
                ],
                1..60,
            ),
            probes in prop::collection::vec(arb_key(), 1..40),
        ) {
            let mut c = Dpcls::new();
            let mut reference: Vec<(FlowKey, FlowKey, u32)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(mk_pair, v) => {
                        let (m, k) = *mk_pair;
                        let mk = masked(&k, &m);
                        let old = reference.iter().position(|(rm, rk, _)| *rm == m && *rk == mk);
                        let expect = old.map(|i| reference[i].2);
                        match old {
                            Some(i) => reference[i].2 = v,
                            None => reference.push((m, mk, v)),
                        }
                        prop_assert_eq!(c.insert(&m, &k, v), expect);
                    }
                    Op::Remove(i) if !reference.is_empty() => {
                        let (m, k, v) = reference.remove(i % reference.len());
                        prop_assert_eq!(c.remove(&m, &k), Some(v));
                    }
                    Op::Remove(_) => {}
                }
                prop_assert_eq!(c.len(), reference.len());
            }
            let mut out = vec![None; probes.len()];
            c.lookup_batch(&probes, u64::MAX, &mut out);
            for (p, batch) in probes.iter().zip(&out) {
                let hits: Vec<u32> = reference
                    .iter()
                    .filter(|(m, k, _)| masked(p, m) == *k)
                    .map(|(_, _, v)| *v)
                    .collect();
                let (single, _) = c.lookup(p);
                match single {
                    None => prop_assert!(hits.is_empty()),
                    Some(v) => prop_assert!(hits.contains(v)),
                }
                prop_assert_eq!(*batch, single.copied());
            }
            c.rerank();
            for p in &probes {
                let hits = reference.iter().any(|(m, k, _)| masked(p, m) == *k);
                prop_assert_eq!(c.lookup(p).0.is_some(), hits);
            }
            prop_assert_eq!(c.iter().count(), reference.len());
        }
    }
}
