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

    fn apply(&self, key: &FlowKey) -> Words {
        let mut out = [0u64; FLOW_KEY_WORDS];
        for ((o, k), m) in out.iter_mut().zip(key.words()).zip(&self.words) {
            *o = k & m;
        }
        out
    }
}

/// Slots per bucket: one 64-byte cache line of signatures and row numbers.
const SLOTS: usize = 8;
/// A slot never used since the last rebuild: a probe that sees one stops.
const EMPTY: u32 = u32::MAX;
/// A slot whose megaflow was removed: probes go past it, inserts reuse it.
const TOMB: u32 = u32::MAX - 1;

/// Eight (signature, row) slots, one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    sig: [u32; SLOTS],
    row: [u32; SLOTS],
}

const EMPTY_BUCKET: Bucket = Bucket {
    sig: [0; SLOTS],
    row: [EMPTY; SLOTS],
};

/// Memory prefetch hint for batch lookups. This crate stays free of `unsafe`, so
/// the hint comes from the caller (the PMD passes the CPU's prefetch instruction);
/// [`NoPrefetch`] does nothing.
pub trait Prefetch {
    /// Starts bringing the cache line at `p` in; never faults, has no effect on
    /// memory.
    fn prefetch<T>(p: &T);
}

/// No prefetching (tests, the slow path).
pub struct NoPrefetch;

impl Prefetch for NoPrefetch {
    #[inline(always)]
    fn prefetch<T>(_: &T) {}
}

/// Signature stored in a slot: the hash's high half (the bucket comes from the low
/// bits).
#[inline(always)]
fn sig_of(h: u64) -> u32 {
    (h >> 32) as u32
}

/// What a classifier entry yields, stored as one word of its row (so a hit reads
/// the key and the value from one cache line).
pub trait RowValue: Copy {
    fn to_word(self) -> u64;
    fn from_word(w: u64) -> Self;
}

impl RowValue for u32 {
    fn to_word(self) -> u64 {
        u64::from(self)
    }
    fn from_word(w: u64) -> Self {
        w as u32
    }
}

/// Eight words, cache-line aligned: rows are made of these.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([u64; 8]);

/// All megaflows with one mask.
///
/// Layout for big tables (100k megaflows must not cost a cache miss per word): a
/// bucket array of 8 signature/row slots per cache line, probed linearly, and the
/// rows: each the mask's non-zero words of a masked key (`n` words) followed by
/// its value, in whole cache lines (one line for up to 7 words). A lookup reads
/// one bucket line and one row line; [`Dpcls::lookup_batch_prefetch`] prefetches
/// each level for a whole batch before reading it.
pub struct Subtable<V> {
    mask: Mask,
    buckets: Vec<Bucket>,
    /// Slots holding a row or a tombstone (what drives a rebuild).
    used_slots: usize,
    /// Rows, `stride` lines each.
    lines: Vec<Line>,
    stride: usize,
    /// Whether row `r` holds a megaflow.
    live: Vec<bool>,
    free_rows: Vec<u32>,
    len: usize,
    hits: u64,
    _value: std::marker::PhantomData<V>,
}

impl<V: RowValue> Subtable<V> {
    fn new(mask: Mask) -> Self {
        let stride = (usize::from(mask.n) + 1).div_ceil(8);
        Subtable {
            mask,
            buckets: Vec::new(),
            used_slots: 0,
            lines: Vec::new(),
            stride,
            live: Vec::new(),
            free_rows: Vec::new(),
            len: 0,
            hits: 0,
            _value: std::marker::PhantomData,
        }
    }

    pub fn mask(&self) -> &Mask {
        &self.mask
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Hits since the last [`Dpcls::rerank`].
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Word `j` of row `r` (`j == n`: the value).
    #[inline(always)]
    fn word(&self, r: u32, j: usize) -> u64 {
        self.lines
            .get(r as usize * self.stride + j / 8)
            .and_then(|l| l.0.get(j % 8))
            .copied()
            .unwrap_or(0)
    }

    #[inline(always)]
    fn set_word(&mut self, r: u32, j: usize, w: u64) {
        if let Some(x) = self
            .lines
            .get_mut(r as usize * self.stride + j / 8)
            .and_then(|l| l.0.get_mut(j % 8))
        {
            *x = w;
        }
    }

    /// The first line of row `r`, to prefetch.
    #[inline(always)]
    fn row_line(&self, r: u32) -> Option<&Line> {
        self.lines.get(r as usize * self.stride)
    }

    #[inline(always)]
    fn value(&self, r: u32) -> V {
        V::from_word(self.word(r, usize::from(self.mask.n)))
    }

    /// Whether row `r` is `key & mask`.
    #[inline(always)]
    fn row_matches(&self, r: u32, key: &Words) -> bool {
        self.mask.active().iter().enumerate().all(|(j, &i)| {
            let i = i as usize;
            matches!((key.get(i), self.mask.words.get(i)), (Some(k), Some(m)) if k & m == self.word(r, j))
        })
    }

    /// The hash of row `r` (equal to the mask's hash of any key it matches).
    fn row_hash(&self, r: u32) -> u64 {
        let h = (0..usize::from(self.mask.n))
            .fold(u64::from(self.mask.n), |h, j| mix(h, self.word(r, j)));
        h ^ (h >> 32)
    }

    #[inline(always)]
    fn home(&self, h: u64) -> usize {
        (h as usize) & self.buckets.len().wrapping_sub(1)
    }

    /// The (bucket, slot) holding the row that matches `key`, probing from the
    /// home bucket of `h` until a bucket with a never-used slot.
    #[inline]
    fn find_slot(&self, h: u64, key: &Words) -> Option<(usize, usize)> {
        let nb = self.buckets.len();
        if nb == 0 {
            return None;
        }
        let sig = sig_of(h);
        let mut b = self.home(h);
        for _ in 0..nb {
            let bucket = self.buckets.get(b)?;
            let mut open = false;
            for (s, (&r, &g)) in bucket.row.iter().zip(&bucket.sig).enumerate() {
                if r == EMPTY {
                    open = true;
                } else if r != TOMB && g == sig && self.row_matches(r, key) {
                    return Some((b, s));
                }
            }
            if open {
                return None;
            }
            b = (b + 1) & (nb - 1);
        }
        None
    }

    #[inline]
    fn find(&self, h: u64, key: &Words) -> Option<u32> {
        let (b, s) = self.find_slot(h, key)?;
        self.buckets.get(b)?.row.get(s).copied()
    }

    /// Puts row `r` (hash `h`) in the first free or tombstoned slot of its probe
    /// sequence. The table must have room (see [`Subtable::reserve_one`]).
    fn place(&mut self, h: u64, r: u32) {
        let nb = self.buckets.len();
        let mut b = self.home(h);
        for _ in 0..nb {
            if let Some(bucket) = self.buckets.get_mut(b) {
                if let Some(s) = bucket.row.iter().position(|&x| x == EMPTY || x == TOMB) {
                    if bucket.row.get(s) == Some(&EMPTY) {
                        self.used_slots += 1;
                    }
                    if let (Some(rs), Some(gs)) = (bucket.row.get_mut(s), bucket.sig.get_mut(s)) {
                        *rs = r;
                        *gs = sig_of(h);
                    }
                    return;
                }
            }
            b = (b + 1) & (nb - 1);
        }
    }

    /// Rebuilds the bucket array for `len` rows at most half full, dropping
    /// tombstones.
    fn rebuild(&mut self, len: usize) {
        let nb = (len * 2).div_ceil(SLOTS).max(1).next_power_of_two();
        self.buckets.clear();
        self.buckets.resize(nb, EMPTY_BUCKET);
        self.used_slots = 0;
        let live: Vec<u32> = (0..self.live.len() as u32)
            .filter(|&r| self.live.get(r as usize) == Some(&true))
            .collect();
        for r in live {
            let h = self.row_hash(r);
            self.place(h, r);
        }
    }

    /// Makes room for one more row: the buckets stay at most half used
    /// (rows plus tombstones).
    fn reserve_one(&mut self) {
        if (self.used_slots + 1) * 2 > self.buckets.len() * SLOTS {
            self.rebuild((self.len + 1).max(self.len * 2));
        }
    }

    fn insert(&mut self, masked: &Words, value: V) -> Option<V> {
        let h = self.mask.hash(masked);
        let n = usize::from(self.mask.n);
        if let Some(r) = self.find(h, masked) {
            let old = self.value(r);
            self.set_word(r, n, value.to_word());
            return Some(old);
        }
        self.reserve_one();
        let r = match self.free_rows.pop() {
            Some(r) => r,
            None => {
                let r = self.live.len() as u32;
                self.lines
                    .resize(self.lines.len() + self.stride, Line::default());
                self.live.push(false);
                r
            }
        };
        let idx = self.mask.idx;
        for (j, &i) in idx.iter().take(n).enumerate() {
            self.set_word(r, j, masked.get(i as usize).copied().unwrap_or(0));
        }
        self.set_word(r, n, value.to_word());
        if let Some(l) = self.live.get_mut(r as usize) {
            *l = true;
        }
        self.place(h, r);
        self.len += 1;
        None
    }

    fn remove(&mut self, masked: &Words) -> Option<V> {
        let h = self.mask.hash(masked);
        let (b, s) = self.find_slot(h, masked)?;
        self.remove_at(b, s)
    }

    fn remove_at(&mut self, b: usize, s: usize) -> Option<V> {
        let bucket = self.buckets.get_mut(b)?;
        let r = std::mem::replace(bucket.row.get_mut(s)?, TOMB);
        if let Some(g) = bucket.sig.get_mut(s) {
            *g = 0;
        }
        let v = self.value(r);
        if let Some(l) = self.live.get_mut(r as usize) {
            *l = false;
        }
        self.free_rows.push(r);
        self.len -= 1;
        // Many tombstones: probes get long. Rebuild for what is left.
        if (self.used_slots - self.len) * 4 > self.buckets.len() * SLOTS {
            self.rebuild(self.len);
        }
        Some(v)
    }

    /// The masked key of row `r` as a full key.
    fn row_key(&self, r: u32) -> FlowKey {
        let mut k = FlowKey::default();
        let words = k.words_mut();
        for (j, &i) in self.mask.active().iter().enumerate() {
            if let Some(o) = words.get_mut(i as usize) {
                *o = self.word(r, j);
            }
        }
        k
    }

    fn live_rows(&self) -> impl Iterator<Item = (u32, V)> + '_ {
        self.live
            .iter()
            .enumerate()
            .filter(|(_, &l)| l)
            .map(|(r, _)| (r as u32, self.value(r as u32)))
    }
}

/// The classifier.
pub struct Dpcls<V> {
    subtables: Vec<Subtable<V>>,
    len: usize,
}

impl<V: RowValue> Default for Dpcls<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: RowValue> Dpcls<V> {
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
                self.subtables.push(Subtable::new(m));
                self.subtables.len() - 1
            }
        };
        let st = self.subtables.get_mut(pos)?;
        let masked = st.mask.apply(key);
        let old = st.insert(&masked, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes the megaflow `key`/`mask` (an empty subtable goes too).
    pub fn remove(&mut self, mask: &FlowKey, key: &FlowKey) -> Option<V> {
        let m = Mask::new(mask);
        let pos = self.subtables.iter().position(|s| s.mask == m)?;
        let st = self.subtables.get_mut(pos)?;
        let masked = st.mask.apply(key);
        let v = st.remove(&masked)?;
        self.len -= 1;
        if st.is_empty() {
            self.subtables.remove(pos);
        }
        Some(v)
    }

    /// The value of the megaflow `key` falls in, and how many subtables were probed.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey) -> (Option<V>, u32) {
        let words = key.words();
        let mut probed = 0u32;
        for st in self.subtables.iter_mut() {
            probed += 1;
            let h = st.mask.hash(words);
            if let Some(r) = st.find(h, words) {
                st.hits += 1;
                return (Some(st.value(r)), probed);
            }
        }
        (None, probed)
    }

    /// [`Dpcls::lookup_batch_prefetch`] without prefetching.
    #[inline]
    pub fn lookup_batch(&mut self, keys: &[FlowKey], todo: u64, out: &mut [Option<V>]) -> u32 {
        self.lookup_batch_prefetch::<NoPrefetch>(keys, todo, out)
    }

    /// Looks up the keys of a batch whose bit is set in `todo` (bit i: `keys[i]`; at
    /// most 64 keys), subtable by subtable, so each subtable's mask stays hot while the
    /// batch goes through it. `out[i]` gets key i's value (`None` on a miss; entries
    /// not in `todo` are left alone). Returns the number of subtable probes made.
    ///
    /// Each subtable is visited in three passes over the batch so that memory
    /// latency overlaps: hash every key and prefetch its bucket; scan the buckets
    /// for a matching signature and prefetch that row and value; compare.
    #[inline]
    pub fn lookup_batch_prefetch<P: Prefetch>(
        &mut self,
        keys: &[FlowKey],
        todo: u64,
        out: &mut [Option<V>],
    ) -> u32 {
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
        let mut hs = [0u64; 64];
        let mut cand = [EMPTY; 64];
        let mut probes = 0u32;
        for st in self.subtables.iter_mut() {
            if todo == 0 {
                break;
            }
            if st.buckets.is_empty() {
                continue;
            }
            // Pass 1: hashes, bucket prefetches.
            let mut rest = todo;
            while rest != 0 {
                let i = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                let (Some(key), Some(h)) = (keys.get(i), hs.get_mut(i)) else {
                    continue;
                };
                *h = st.mask.hash(key.words());
                if let Some(b) = st.buckets.get(st.home(*h)) {
                    P::prefetch(b);
                }
                probes += 1;
            }
            // Pass 2: the first signature match of the home bucket; prefetch its
            // row and value.
            let mut rest = todo;
            while rest != 0 {
                let i = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                let (Some(&h), Some(c)) = (hs.get(i), cand.get_mut(i)) else {
                    continue;
                };
                *c = EMPTY;
                let Some(b) = st.buckets.get(st.home(h)) else {
                    continue;
                };
                let sig = sig_of(h);
                for (&g, &r) in b.sig.iter().zip(&b.row) {
                    if g == sig && r < TOMB {
                        *c = r;
                        break;
                    }
                }
                if *c != EMPTY {
                    if let Some(l) = st.row_line(*c) {
                        P::prefetch(l);
                    }
                }
            }
            // Pass 3: compare; anything else (a signature collision, an overflowed
            // bucket) takes the full probe.
            let mut rest = todo;
            while rest != 0 {
                let i = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                let (Some(key), Some(&h), Some(&c)) = (keys.get(i), hs.get(i), cand.get(i)) else {
                    continue;
                };
                let words = key.words();
                let r = if c != EMPTY && st.row_matches(c, words) {
                    Some(c)
                } else {
                    st.find(h, words)
                };
                if let Some(r) = r {
                    if let Some(o) = out.get_mut(i) {
                        *o = Some(st.value(r));
                    }
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
    pub fn iter(&self) -> impl Iterator<Item = (FlowKey, FlowKey, V)> + '_ {
        self.subtables.iter().flat_map(|st| {
            let mask = st.mask.to_key();
            st.live_rows().map(move |(r, v)| (mask, st.row_key(r), v))
        })
    }

    /// Keeps the megaflows for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&FlowKey, &FlowKey, V) -> bool) {
        for st in &mut self.subtables {
            let mask = st.mask.to_key();
            let rows: Vec<u32> = st.live_rows().map(|(r, _)| r).collect();
            for r in rows {
                let k = st.row_key(r);
                if !keep(&mask, &k, st.value(r)) {
                    let h = st.row_hash(r);
                    if let Some((b, s)) = st.find_slot(h, k.words()) {
                        st.remove_at(b, s);
                    }
                }
            }
        }
        self.subtables.retain(|st| !st.is_empty());
        self.len = self.subtables.iter().map(|st| st.len).sum();
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
        assert_eq!(c.lookup(&p).0, Some(20));
        assert_eq!(c.lookup(&key(|k| k.in_port = 1)).0, Some(10));
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
        assert_eq!(c.lookup(&key(|k| k.tp_dst = 53)), (Some(2), 1));
    }

    /// Many megaflows in one subtable, through growth, tombstones and rebuilds:
    /// every live one is found (single and batch), every removed one is not.
    #[test]
    fn big_table_with_churn() {
        let mut c = Dpcls::new();
        let m = key(|k| {
            k.in_port = u32::MAX;
            k.nw_src = u32::MAX;
            k.tp_dst = u16::MAX;
        });
        let k = |i: u32| {
            key(|k| {
                k.in_port = i % 7;
                k.nw_src = i.wrapping_mul(2_654_435_761);
                k.tp_dst = (i % 1000) as u16;
                k.tp_src = 99; // not in the mask
            })
        };
        let mut live = std::collections::HashMap::new();
        for round in 0..4u32 {
            for i in 0..5000u32 {
                let id = round * 3000 + i;
                assert_eq!(c.insert(&m, &k(id), id), live.insert(id, id));
            }
            // Remove two in three of this round's range.
            for i in (0..5000u32).filter(|i| i % 3 != 0) {
                let id = round * 3000 + i;
                assert_eq!(c.remove(&m, &k(id)), live.remove(&id), "remove {id}");
            }
            assert_eq!(c.len(), live.len());
        }
        c.retain(|_, _, v| v % 2 == 0);
        live.retain(|_, v| *v % 2 == 0);
        assert_eq!(c.len(), live.len());
        assert_eq!(c.iter().count(), live.len());
        let probes: Vec<u32> = (0..17_000u32).collect();
        for chunk in probes.chunks(64) {
            let keys: Vec<FlowKey> = chunk.iter().map(|&i| k(i)).collect();
            let mut out = vec![None; keys.len()];
            c.lookup_batch(&keys, u64::MAX, &mut out);
            for (&i, got) in chunk.iter().zip(&out) {
                assert_eq!(*got, live.get(&i).copied(), "batch {i}");
                assert_eq!(c.lookup(&k(i)).0, live.get(&i).copied(), "single {i}");
            }
        }
        for (mask, mk, v) in c.iter() {
            assert_eq!(mask, m);
            assert_eq!(mk, masked(&k(v), &m));
        }
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
                    Some(v) => prop_assert!(hits.contains(&v)),
                }
                prop_assert_eq!(*batch, single);
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
