//! The exact-match cache (EMC): per PMD, a fixed array of recently seen flow keys
//! and what they map to, in front of the megaflow classifier.
//!
//! Fast path: lookups and inserts neither allocate nor lock; the array is allocated
//! once. Each key has two candidate slots (from two parts of its hash); a lookup
//! compares the stored hash, then the key. Inserting happens with probability
//! 1/`insert_inv_prob` per miss (as OVS's `emc-insert-inv-prob`), so a flood of
//! one-packet flows does not thrash the cache.
//!
//! Compact slots: the cache holds IPv4 keys fresh from the parser ([`eligible`]),
//! whose only non-zero words are the [`COMPACT_WORDS`]; it stores and compares just
//! those (9 of 26 words: slots of 88 bytes instead of 224, a compare a third as
//! long). Other keys (IPv6, ARP, non-IP, recirculated) skip the EMC and go to the
//! megaflow classifier. Exactness rests on the parser's invariant, tested below:
//! for an IPv4 packet it leaves registers, metadata, IPv6, ND and ARP hardware
//! address words zero, and `recirc_id` is 0 for every key it builds. The inner
//! packets of a tunnel pop are cached too: the datapath writes only their
//! tunnel fields after the parse, and those are compact words.
//!
//! Thread safety: owned by one PMD thread.

use crate::flow_key::{FlowKey, ETH_TYPE_IPV4, FLOW_KEY_WORDS};

/// The words an IPv4 key from the parser can have non-zero: `in_port` and
/// `recirc_id`; tunnel id and addresses; tunnel flags, ethertype and VLAN TCIs;
/// VLAN TPIDs and L4 ports; Ethernet addresses; TCP flags, protocol and TOS; IPv4
/// addresses; IPv6 label (0), TTL and fragment bits.
pub const COMPACT_WORDS: [usize; 9] = [0, 10, 11, 12, 13, 14, 15, 16, 17];
const N: usize = COMPACT_WORDS.len();
const _: () = assert!(FLOW_KEY_WORDS > 17);

/// Whether the EMC takes this key: an IPv4 packet's key from the parser,
/// without `tun_metadata` fields (the compact words leave them out).
#[inline(always)]
pub fn eligible(key: &FlowKey) -> bool {
    key.dl_type == ETH_TYPE_IPV4 && key.recirc_id == 0 && key.tun_md_present == 0
}

#[inline(always)]
fn compact(key: &FlowKey) -> [u64; N] {
    let w = key.words();
    COMPACT_WORDS.map(|i| w.get(i).copied().unwrap_or(0))
}

#[derive(Clone)]
struct Slot<V> {
    hash: u32,
    valid: bool,
    words: [u64; N],
    value: V,
}

/// The cache. `V` is what a hit yields (a handle to the megaflow).
pub struct Emc<V: Copy + Default> {
    slots: Box<[Slot<V>]>,
    mask: usize,
    insert_inv_prob: u32,
    rng: u32,
}

/// A hash of the [`COMPACT_WORDS`]: three independent lanes of three words, so the
/// multiplies overlap. Only EMC-eligible keys are hashed for the EMC; the subset
/// affects how keys spread, never what matches.
#[inline]
pub fn key_hash(key: &FlowKey) -> u32 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    #[inline(always)]
    fn m(h: u64, x: u64) -> u64 {
        (h ^ x).wrapping_mul(K).rotate_left(31)
    }
    let c = compact(key);
    let a = m(m(m(0x243f_6a88_85a3_08d3, c[0]), c[4]), c[7]);
    let b = m(m(m(0x1319_8a2e_0370_7344, c[3]), c[5]), c[8]);
    let d = m(m(m(0xa409_3822_299f_31d0, c[6]), c[1]), c[2]);
    let h = a ^ b.rotate_left(21) ^ d.rotate_left(42);
    let h = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (h ^ (h >> 32)) as u32
}

/// Compact-word equality, branch-free.
#[inline(always)]
fn same_words(a: &[u64; N], b: &[u64; N]) -> bool {
    a.iter().zip(b).fold(0u64, |d, (x, y)| d | (x ^ y)) == 0
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
                    words: [0; N],
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

    /// Whether misses insert (the EMC is on); when not, prefetching its slots is wasted.
    #[inline(always)]
    pub fn inserting(&self) -> bool {
        self.insert_inv_prob != 0
    }

    /// Prefetches the two slots `hash` may be cached in.
    #[inline(always)]
    pub fn prefetch<P: crate::dpcls::Prefetch>(&self, hash: u32) {
        for i in self.candidates(hash) {
            if let Some(s) = self.slots.get(i) {
                P::prefetch(s);
            }
        }
    }

    /// The value cached for exactly `key` (whose [`key_hash`] is `hash`).
    #[inline]
    pub fn lookup(&self, hash: u32, key: &FlowKey) -> Option<V> {
        if !eligible(key) {
            return None;
        }
        let words = compact(key);
        for i in self.candidates(hash) {
            if let Some(s) = self.slots.get(i) {
                if s.valid && s.hash == hash && same_words(&s.words, &words) {
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
        if self.insert_inv_prob == 0 || !eligible(key) {
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

    /// Caches `key` -> `value` unconditionally (if the key is [`eligible`]).
    #[inline]
    pub fn insert(&mut self, hash: u32, key: &FlowKey, value: V) {
        if !eligible(key) {
            return;
        }
        let words = compact(key);
        let [a, b] = self.candidates(hash);
        let takes = |s: &Slot<V>| !s.valid || (s.hash == hash && same_words(&s.words, &words));
        let target = match (self.slots.get(a), self.slots.get(b)) {
            (Some(s), _) if takes(s) => a,
            (_, Some(s)) if takes(s) => b,
            // Both taken by other keys: alternate victims by hash bit.
            _ if hash & 0x8000_0000 != 0 => b,
            _ => a,
        };
        if let Some(s) = self.slots.get_mut(target) {
            s.hash = hash;
            s.valid = true;
            s.words = words;
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
            dl_type: ETH_TYPE_IPV4,
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
        // Same hash, different key: the compare refuses it.
        let other = key(1, 0x0a000002);
        assert_eq!(e.lookup(h, &other), None);
        e.invalidate_if(|v| *v == 7);
        assert_eq!(e.lookup(h, &k), None);
    }

    #[test]
    fn ineligible_keys_are_never_cached() {
        let mut e: Emc<u32> = Emc::new(64, 1);
        let mut v6 = key(1, 0);
        v6.dl_type = crate::flow_key::ETH_TYPE_IPV6;
        let mut recirc = key(1, 5);
        recirc.recirc_id = 3;
        for k in [v6, recirc] {
            e.insert(key_hash(&k), &k, 1);
            assert_eq!(e.lookup(key_hash(&k), &k), None);
        }
        assert!(e.is_empty());
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
        let mut found = 0;
        for i in 0..2000u32 {
            let k = key(i % 7, i);
            if let Some(v) = e.lookup(key_hash(&k), &k) {
                assert_eq!(v, i);
                found += 1;
            }
        }
        assert!(found > 100, "{found}");
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

    /// The invariant compact slots rest on: for IPv4 packets the parser leaves every
    /// word outside COMPACT_WORDS zero (tagged, TCP with options and flags, UDP,
    /// ICMP, fragments, truncated), and recirc_id is always 0.
    #[test]
    fn parser_leaves_non_compact_words_zero_for_ipv4() {
        use etherparse::PacketBuilder;
        let mut frames: Vec<Vec<u8>> = Vec::new();
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .single_vlan(7.try_into().unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 9)
            .tcp(1, 2, 3, 4)
            .syn()
            .ack(5)
            .write(&mut f, &[1, 2, 3])
            .unwrap();
        frames.push(f);
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [3; 6])
            .ipv4([1, 2, 3, 4], [5, 6, 7, 8], 64)
            .udp(53, 5353)
            .write(&mut f, &[0; 30])
            .unwrap();
        frames.push(f.clone());
        let mut frag = f.clone();
        frag[20] = 0x20; // MF
        frag[21] = 0x10; // offset
        frames.push(frag);
        let mut icmp = Vec::new();
        PacketBuilder::ethernet2([2; 6], [3; 6])
            .ipv4([1, 2, 3, 4], [5, 6, 7, 8], 64)
            .icmpv4_echo_request(1, 2)
            .write(&mut icmp, &[9; 8])
            .unwrap();
        frames.push(icmp);
        for base in frames.clone() {
            for cut in 14..base.len() {
                frames.push(base[..cut].to_vec());
            }
        }
        for (n, fr) in frames.iter().enumerate() {
            let mut k = FlowKey::default();
            // Start dirty: parse must reset what it does not set.
            for w in k.words_mut() {
                *w = u64::MAX;
            }
            crate::parse(fr, 3, &mut k);
            assert_eq!(k.recirc_id, 0);
            if k.dl_type != ETH_TYPE_IPV4 {
                continue;
            }
            for (i, w) in k.words().iter().enumerate() {
                if !COMPACT_WORDS.contains(&i) {
                    assert_eq!(*w, 0, "frame {n}: word {i} non-zero");
                }
            }
        }
    }
}
