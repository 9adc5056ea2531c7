//! Static port-to-port forwarding: the stage used until OpenFlow tables exist.
//!
//! Hot-path rule: [`StaticForward::lookup`] runs per packet (or per batch): no
//! allocation, lock or panic. Building the table ([`StaticForward::new`]) allocates
//! and happens on the management thread; the PMD receives the finished table.

/// Largest `in_port` + 1 kept in the dense array. OVS numbers ports from 1 upward,
/// so real ports land here; special ports such as
/// [`OFPP_LOCAL`](crate::flow_key::OFPP_LOCAL) go to the sorted fallback.
const DENSE_PORTS: u32 = 4096;

/// A fixed map `in_port -> out_port` (OpenFlow port numbers, OVS numbering).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaticForward {
    /// Indexed by `in_port` for `in_port < DENSE_PORTS`; as long as the largest such
    /// port + 1.
    dense: Vec<Option<u32>>,
    /// `(in_port, out_port)` for `in_port >= DENSE_PORTS`, sorted by `in_port`,
    /// unique.
    sparse: Vec<(u32, u32)>,
}

impl StaticForward {
    /// Builds the map from `(in_port, out_port)` pairs. When an `in_port` appears
    /// twice, the later pair wins.
    pub fn new(pairs: &[(u32, u32)]) -> Self {
        let mut dense: Vec<Option<u32>> = Vec::new();
        let mut sparse: Vec<(u32, u32)> = Vec::new();
        for &(in_port, out_port) in pairs {
            if in_port < DENSE_PORTS {
                let i = in_port as usize;
                if dense.len() <= i {
                    dense.resize(i + 1, None);
                }
                if let Some(slot) = dense.get_mut(i) {
                    *slot = Some(out_port);
                }
            } else {
                match sparse.binary_search_by_key(&in_port, |&(p, _)| p) {
                    Ok(i) => {
                        if let Some(e) = sparse.get_mut(i) {
                            e.1 = out_port;
                        }
                    }
                    Err(i) => sparse.insert(i, (in_port, out_port)),
                }
            }
        }
        StaticForward { dense, sparse }
    }

    /// The output port for a packet from `in_port`, or `None` (drop).
    /// O(1) for ports below 4096, a binary search above.
    #[inline]
    pub fn lookup(&self, in_port: u32) -> Option<u32> {
        match self.dense.get(in_port as usize) {
            Some(&out) => out,
            None if in_port < DENSE_PORTS => None,
            None => self.lookup_sparse(in_port),
        }
    }

    #[cold]
    fn lookup_sparse(&self, in_port: u32) -> Option<u32> {
        self.sparse
            .binary_search_by_key(&in_port, |&(p, _)| p)
            .ok()
            .and_then(|i| self.sparse.get(i))
            .map(|&(_, out)| out)
    }

    /// Number of `in_port`s with an output.
    pub fn len(&self) -> usize {
        self.dense.iter().filter(|e| e.is_some()).count() + self.sparse.len()
    }

    /// True when no port forwards anywhere.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(in_port, out_port)` pairs in ascending `in_port` order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.dense
            .iter()
            .zip(0u32..)
            .filter_map(|(out, in_port)| out.map(|o| (in_port, o)))
            .chain(self.sparse.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow_key::OFPP_LOCAL;

    #[test]
    fn empty() {
        let f = StaticForward::new(&[]);
        assert!(f.is_empty());
        assert_eq!(f.lookup(0), None);
        assert_eq!(f.lookup(1), None);
        assert_eq!(f.lookup(u32::MAX), None);
        assert_eq!(f, StaticForward::default());
    }

    #[test]
    fn pair_of_ports_both_directions() {
        let f = StaticForward::new(&[(1, 2), (2, 1)]);
        assert_eq!(f.lookup(1), Some(2));
        assert_eq!(f.lookup(2), Some(1));
        assert_eq!(f.lookup(0), None);
        assert_eq!(f.lookup(3), None);
        assert_eq!(f.lookup(4095), None);
        assert_eq!(f.lookup(100_000), None);
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn later_duplicate_wins() {
        let f = StaticForward::new(&[(1, 2), (1, 3), (OFPP_LOCAL, 1), (OFPP_LOCAL, 5)]);
        assert_eq!(f.lookup(1), Some(3));
        assert_eq!(f.lookup(OFPP_LOCAL), Some(5));
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn large_and_special_ports() {
        let f = StaticForward::new(&[
            (OFPP_LOCAL, 1),
            (1, OFPP_LOCAL),
            (4095, 4096),
            (4096, 4095),
            (70_000, 3),
            (5000, 4),
        ]);
        assert_eq!(f.lookup(OFPP_LOCAL), Some(1));
        assert_eq!(f.lookup(1), Some(OFPP_LOCAL));
        assert_eq!(f.lookup(4095), Some(4096));
        assert_eq!(f.lookup(4096), Some(4095));
        assert_eq!(f.lookup(70_000), Some(3));
        assert_eq!(f.lookup(5000), Some(4));
        assert_eq!(f.lookup(5001), None);
        assert_eq!(f.lookup(u32::MAX), None);
        let all: Vec<_> = f.iter().collect();
        assert_eq!(
            all,
            vec![
                (1, OFPP_LOCAL),
                (4095, 4096),
                (4096, 4095),
                (5000, 4),
                (70_000, 3),
                (OFPP_LOCAL, 1)
            ]
        );
    }

    #[test]
    fn port_zero_and_self_loop() {
        let f = StaticForward::new(&[(0, 0), (7, 7)]);
        assert_eq!(f.lookup(0), Some(0));
        assert_eq!(f.lookup(7), Some(7));
        assert_eq!(f.lookup(6), None);
    }
}
