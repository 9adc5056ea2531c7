//! A fast hasher for tables keyed by flow-key words and internal ids.
//!
//! A multiply-rotate fold over 64-bit words: several times cheaper than the
//! standard library's SipHash on the 50-400-byte keys of flow tables. It is not
//! DoS-resistant, and need not be where it is used: the keys inserted come from
//! flow mods and the datapath's own translations (bounded by the flow limit), not
//! from packets; a packet can only look up.

use std::hash::{BuildHasherDefault, Hasher};

/// See the module docs.
#[derive(Clone, Copy, Default)]
pub struct WordHasher(u64);

/// For `HashMap<K, V, WordHashBuilder>`.
pub type WordHashBuilder = BuildHasherDefault<WordHasher>;

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        let h = self.0;
        (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_ne_bytes(w));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, w: u64) {
        self.0 = (self.0 ^ w)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }

    fn write_u32(&mut self, w: u32) {
        self.write_u64(u64::from(w));
    }

    fn write_usize(&mut self, w: usize) {
        self.write_u64(w as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::{BuildHasher, Hash};

    fn h<T: Hash>(t: &T) -> u64 {
        WordHashBuilder::default().hash_one(t)
    }

    #[test]
    fn spreads_keys_that_differ_in_one_word() {
        // 10k 5-tuple-like keys differing in one word each: no collisions of the
        // full hash, and the low 14 bits (a 16k-bucket table) well spread.
        let keys: Vec<[u64; 6]> = (0..10_000u64)
            .map(|i| [1, 0x0800, i << 16, 17, 0, 0])
            .collect();
        let full: HashSet<u64> = keys.iter().map(h).collect();
        assert_eq!(full.len(), keys.len());
        let low: HashSet<u64> = keys.iter().map(|k| h(k) & 0x3fff).collect();
        assert!(low.len() > 7_000, "{} distinct low-bit buckets", low.len());
    }
}
