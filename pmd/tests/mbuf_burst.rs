//! `MbufBurst` bookkeeping with real mbufs: every packet a burst holds is
//! freed exactly once, whatever was taken out of it before, and moving a
//! burst's packets into another moves their ownership.
//!
//! One test per file: EAL initialises once per process.

use dpdk_ffi::{Mbuf, MbufBurst, Mempool};
use pmd::testing;

#[test]
fn bursts_free_what_they_hold_and_move_it() {
    let eal = testing::eal("mbuf_burst");
    {
        let pool = Mempool::pktmbuf("mbuf_burst", 255, 0, 2048 + 128).expect("pool");
        let one = || Mbuf::alloc(&pool).expect("mbuf");

        // Every packet taken, then cleared: nothing to free. Pushed again and
        // one taken: clear frees the other (a stale count of taken packets
        // would skip it).
        let mut b = MbufBurst::new();
        for _ in 0..2 {
            b.push(one()).is_ok().then_some(()).expect("room");
        }
        let taken: Vec<Mbuf> = (0..2).filter_map(|i| b.take(i)).collect();
        b.clear();
        drop(taken);
        assert_eq!(pool.in_use(), 0);
        for _ in 0..3 {
            b.push(one()).is_ok().then_some(()).expect("room");
        }
        let t = b.take(0).expect("packet 0");
        b.clear();
        assert_eq!(pool.in_use(), 1, "packets 1 and 2 freed by clear");
        drop(t);
        assert_eq!(pool.in_use(), 0);

        // Moving: the packets (and a taken slot) go over, the source is empty.
        let mut src = MbufBurst::new();
        for _ in 0..4 {
            src.push(one()).is_ok().then_some(()).expect("room");
        }
        let t = src.take(1).expect("packet 1");
        let mut dst = MbufBurst::new();
        assert!(dst.move_from(&mut src));
        assert_eq!((dst.len(), src.len()), (4, 0));
        assert!(dst.data(1).is_none(), "the taken slot stays empty");
        assert!(dst.data(3).is_some());
        // Into a burst that holds packets: refused, nothing moved.
        src.push(one()).is_ok().then_some(()).expect("room");
        assert!(!dst.move_from(&mut src));
        assert_eq!((dst.len(), src.len()), (4, 1));
        drop(src);
        drop(t);
        assert_eq!(pool.in_use(), 3);
        dst.clear();
        assert_eq!(pool.in_use(), 0);
    }
    eal.cleanup().expect("EAL cleanup");
}
