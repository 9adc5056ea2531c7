//! The exact-match cache (EMC): per PMD, a fixed array of recently seen full flow
//! keys and what they map to, in front of the megaflow classifier.
//!
//! Fast path: lookups and inserts neither allocate nor lock; the array is allocated
//! once. Each key has two candidate slots (from two parts of its hash); a lookup
//! compares the stored hash, then the whole key. Inserting happens with probability
//! 1/`insert_inv_prob` per miss (as OVS's `emc-insert-inv-prob`), so a flood of
//! one-packet flows does not thrash the cache.
//!
//! Thread safety: owned by one PMD thread.

use crate::flow_key::{FlowKey, FLOW_KEY_WORDS};

#[derive(Clone)]
struct Slot<V> {
    hash: u32,
    valid: bool,
    key: FlowKey,
    value: V,
}

/// The cache. `V` is what a hit yields (a handle to the megaflow).
pub struct Emc<V: Copy + Default> {
    slots: Box<[Slot<V>]>,
    mask: usize,
    insert_inv_prob: u32,
    rng: u32,
}

/// The words [`key_hash`] reads: those that tell packets apart (`in_port` and
/// `recirc_id`; tunnel id and addresses; ethertype and VLANs; L4 ports; Ethernet
/// addresses; TCP flags, protocol and TOS; IPv4 addresses; IPv6 addresses).
/// Registers, metadata, ND and ARP hardware addresses are left out: they are zero
/// from the parser or follow from what is hashed. The EMC compares whole keys, so
/// the subset only affects how keys spread, never what matches.
const HASHED_WORDS: [usize; 12] = [0, 13, 18, 12, 14, 19, 16, 15, 20, 10, 11, 21];

/// A hash of the key's distinguishing words: four independent lanes of three
/// words each, so the multiplies overlap (`perf` showed the whole-key loop at
/// a third of the PMD's time on 64-byte packets).
#[inline]
pub fn key_hash(key: &FlowKey) -> u32 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    #[inline(always)]
    fn m(h: u64, x: u64) -> u64 {
        (h ^ x).wrapping_mul(K).rotate_left(31)
    }
    let w = key.words();
    let g = |i: usize| {
        HASHED_WORDS
            .get(i)
            .and_then(|&j| w.get(j))
            .copied()
            .unwrap_or(0)
    };
    let a = m(m(m(0x243f_6a88_85a3_08d3, g(0)), g(1)), g(2));
    let b = m(m(m(0x1319_8a2e_0370_7344, g(3)), g(4)), g(5));
    let c = m(m(m(0xa409_3822_299f_31d0, g(6)), g(7)), g(8));
    let d = m(m(m(0x082e_fa98_ec4e_6c89, g(9)), g(10)), g(11));
    let h = a ^ b.rotate_left(16) ^ c.rotate_left(32) ^ d.rotate_left(48);
    let h = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (h ^ (h >> 32)) as u32
}

const _: () = assert!(FLOW_KEY_WORDS > 21);

/// Whole-key equality without a `memcmp` call (`perf`: the call cost 8% of the
/// PMD's time on EMC hits).
#[inline(always)]
fn same_key(a: &FlowKey, b: &FlowKey) -> bool {
    a.words()
        .iter()
        .zip(b.words())
        .fold(0u64, |d, (x, y)| d | (x ^ y))
        == 0
}

impl<V: Copy + Default> Emc<V> {
    /// A cache of `entries` slots (rounded up to a power of two, at least 2); an
    /// `insert_inv_prob` of 0 disables inserting, 1 inserts on every miss.
    pub fn new(entries: usize, insert_inv_prob: u32) -> Emc<V> {
        let n = entries.max(2).next_power_of_two();
        Emc {
            slots: vec![
                Slot {
                    hash: 0,
                    valid: false,
                    key: FlowKey::default(),
                    value: V::default(),
                };
                n
            ]
            .into_boxed_slice(),
            mask: n - 1,
            insert_inv_prob,
            rng: 0x2545_f491,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    #[inline(always)]
    fn candidates(&self, hash: u32) -> [usize; 2] {
        let a = hash as usize & self.mask;
        let b = (hash.rotate_right(16) as usize) & self.mask;
        [a, b]
    }

    /// The value cached for exactly `key` (whose [`key_hash`] is `hash`).
    #[inline]
    pub fn lookup(&self, hash: u32, key: &FlowKey) -> Option<V> {
        for i in self.candidates(hash) {
            if let Some(s) = self.slots.get(i) {
                if s.valid && s.hash == hash && same_key(&s.key, key) {
                    return Some(s.value);
                }
            }
        }
        None
    }

    /// After a miss: caches `key` -> `value` with probability 1/insert_inv_prob,
    /// into an empty or mismatching candidate slot (the first if both are full).
    #[inline]
    pub fn maybe_insert(&mut self, hash: u32, key: &FlowKey, value: V) {
        if self.insert_inv_prob == 0 {
            return;
        }
        if self.insert_inv_prob > 1 {
            // xorshift32: cheap, deterministic per PMD.
            let mut x = self.rng;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.rng = x;
            if !x.is_multiple_of(self.insert_inv_prob) {
                return;
            }
        }
        self.insert(hash, key, value);
    }

    /// Caches `key` -> `value` unconditionally.
    #[inline]
    pub fn insert(&mut self, hash: u32, key: &FlowKey, value: V) {
        let [a, b] = self.candidates(hash);
        let target = match (self.slots.get(a), self.slots.get(b)) {
            (Some(s), _) if !s.valid || (s.hash == hash && s.key == *key) => a,
            (_, Some(s)) if !s.valid || (s.hash == hash && s.key == *key) => b,
            _ => {
                // Both taken by other keys: alternate victims by hash bit.
                if hash & 0x8000_0000 != 0 {
                    b
                } else {
                    a
                }
            }
        };
        if let Some(s) = self.slots.get_mut(target) {
            s.hash = hash;
            s.valid = true;
            s.key = *key;
            s.value = value;
        }
    }

    /// Drops every entry for which `stale` returns true.
    pub fn invalidate_if(&mut self, mut stale: impl FnMut(&V) -> bool) {
        for s in self.slots.iter_mut() {
            if s.valid && stale(&s.value) {
                s.valid = false;
            }
        }
    }

    pub fn clear(&mut self) {
        for s in self.slots.iter_mut() {
            s.valid = false;
        }
    }

    /// Entries in use.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.valid).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u32, dst: u32) -> FlowKey {
        FlowKey {
            in_port: port,
            nw_dst: dst,
            ..FlowKey::default()
        }
    }

    #[test]
    fn hit_after_insert_miss_otherwise() {
        let mut e: Emc<u32> = Emc::new(64, 1);
        let k = key(1, 0x0a000001);
        let h = key_hash(&k);
        assert_eq!(e.lookup(h, &k), None);
        e.maybe_insert(h, &k, 7);
        assert_eq!(e.lookup(h, &k), Some(7));
        // Same hash, different key: a full compare refuses it.
        let other = key(1, 0x0a000002);
        assert_eq!(e.lookup(h, &other), None);
        e.invalidate_if(|v| *v == 7);
        assert_eq!(e.lookup(h, &k), None);
    }

    #[test]
    fn insert_probability_and_disable() {
        let mut off: Emc<u32> = Emc::new(1024, 0);
        let mut sometimes: Emc<u32> = Emc::new(1024, 10);
        for i in 0..1000 {
            let k = key(i, i);
            off.maybe_insert(key_hash(&k), &k, i);
            sometimes.maybe_insert(key_hash(&k), &k, i);
        }
        assert_eq!(off.len(), 0);
        let n = sometimes.len();
        assert!((40..=200).contains(&n), "about 1 in 10 inserted, got {n}");
    }

    #[test]
    fn every_cached_key_maps_to_its_own_value() {
        let mut e: Emc<u32> = Emc::new(256, 1);
        for i in 0..2000u32 {
            let k = key(i % 7, i);
            e.insert(key_hash(&k), &k, i);
        }
        for i in 0..2000u32 {
            let k = key(i % 7, i);
            if let Some(v) = e.lookup(key_hash(&k), &k) {
                assert_eq!(v, i);
            }
        }
        assert!(e.len() <= 256);
        e.clear();
        assert!(e.is_empty());
    }

    #[test]
    fn hash_spreads_small_differences() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..4096u32 {
            seen.insert(key_hash(&key(1, i)) & 0xfff);
        }
        assert!(
            seen.len() > 2400,
            "only {} distinct low-12-bit hashes",
            seen.len()
        );
    }
}
