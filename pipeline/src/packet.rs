//! The packet-buffer trait the pipeline is generic over.
//!
//! `pmd` implements [`Packet`] for DPDK mbufs; tests, benches and fuzzers use plain
//! byte buffers (`Vec<u8>`, `&mut [u8]`, `Box<[u8]>`). The pipeline never sees where
//! the bytes live.
//!
//! Hot-path rule: `data`/`data_mut` are called per packet; implementations must be
//! O(1) accessors (no allocation, copy, lock or syscall) and must not panic.

/// A packet whose bytes are one contiguous slice starting at the Ethernet header.
///
/// A multi-segment buffer must be linearised (or dropped) before it is handed to
/// the pipeline: headers are only looked for in `data()`.
pub trait Packet {
    /// The frame, from the first byte of the Ethernet header to the last byte of
    /// payload.
    fn data(&self) -> &[u8];
    /// The same bytes, writable (set-field actions rewrite headers in place).
    fn data_mut(&mut self) -> &mut [u8];
}

impl Packet for Vec<u8> {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        self
    }
    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl Packet for Box<[u8]> {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        self
    }
    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl Packet for &mut [u8] {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        self
    }
    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_byte<P: Packet>(p: &P) -> Option<u8> {
        p.data().first().copied()
    }

    fn set_first<P: Packet>(p: &mut P, v: u8) {
        if let Some(b) = p.data_mut().first_mut() {
            *b = v;
        }
    }

    #[test]
    fn vec_packet() {
        let mut v = vec![1u8, 2, 3];
        assert_eq!(first_byte(&v), Some(1));
        set_first(&mut v, 9);
        assert_eq!(v.data(), &[9, 2, 3]);
    }

    #[test]
    fn slice_and_box_packets() {
        let mut buf = [5u8, 6];
        let mut s: &mut [u8] = &mut buf;
        set_first(&mut s, 7);
        assert_eq!(s.data(), &[7, 6]);
        let mut b: Box<[u8]> = vec![].into_boxed_slice();
        assert_eq!(first_byte(&b), None);
        set_first(&mut b, 1); // no panic on an empty packet
        assert!(b.data().is_empty());
    }
}
