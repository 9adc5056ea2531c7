//! The PMD thread's loop.
//!
//! Hot path: no allocation, lock, syscall or log per packet or per iteration. Every
//! buffer the loop uses is allocated before it starts. Drops are counted, never
//! reported by `Result`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dpdk_ffi::{rdtsc, MbufBurst, TxBuffer};
use pipeline::{parse, FlowKey, StaticForward};

use crate::port::{RxPort, TxPort};
use crate::stats::{DropReason, PmdStats};

/// Smallest frame that is a frame: an Ethernet header.
const ETH_HEADER_LEN: usize = 14;

/// One rx queue given to a PMD.
pub struct AssignedRxq {
    /// Datapath port number of the queue's port.
    pub port_no: usize,
    pub queue: u16,
    pub rxq: Box<dyn RxPort>,
}

/// Everything one PMD thread owns.
pub struct PmdContext {
    pub id: usize,
    pub cpu: usize,
    pub burst: usize,
    pub rxqs: Vec<AssignedRxq>,
    /// This PMD's tx queue of each port, by datapath port number.
    pub txqs: Vec<Box<dyn TxPort>>,
    /// Static forwarding by datapath port number, until flow tables replace it.
    pub forward: StaticForward,
    pub stats: Arc<PmdStats>,
}

/// Per-thread scratch, allocated once before the loop.
struct Scratch {
    burst: MbufBurst,
    txbufs: Vec<TxBuffer>,
    key: FlowKey,
}

/// Runs the loop until `stop` is set, then flushes what is queued.
pub fn run(mut ctx: PmdContext, stop: &AtomicBool) {
    let mut s = Scratch {
        burst: MbufBurst::new(),
        txbufs: (0..ctx.txqs.len()).map(|_| TxBuffer::new()).collect(),
        key: FlowKey::default(),
    };
    // Relaxed: the flag carries no data; the thread is joined after it is seen.
    while !stop.load(Ordering::Relaxed) {
        iteration(&mut ctx, &mut s);
    }
    flush_all(&ctx.stats, &mut ctx.txqs, &mut s.txbufs);
}

#[inline]
fn iteration(ctx: &mut PmdContext, s: &mut Scratch) {
    let start = rdtsc();
    let mut received = 0usize;
    let stats = &*ctx.stats;
    for a in ctx.rxqs.iter_mut() {
        let n = a.rxq.rx_burst(&mut s.burst, ctx.burst);
        if n == 0 {
            continue;
        }
        received += n;
        process_burst(stats, &ctx.forward, &mut ctx.txqs, s, a.port_no, n);
    }
    flush_all(stats, &mut ctx.txqs, &mut s.txbufs);
    let end = rdtsc();
    stats.iterations.add(1);
    if received > 0 {
        stats.rx_packets.add(received as u64);
        stats.busy_cycles.add(end.wrapping_sub(start));
    } else {
        stats.idle_cycles.add(end.wrapping_sub(start));
    }
}

/// Parses each packet of the burst and moves it to its output's tx buffer; what is
/// left in the burst (drops) is freed in bulk at the end.
#[inline]
fn process_burst(
    stats: &PmdStats,
    forward: &StaticForward,
    txqs: &mut [Box<dyn TxPort>],
    s: &mut Scratch,
    in_port: usize,
    n: usize,
) {
    let out = forward.lookup(in_port as u32).map(|o| o as usize);
    let mut rx_bytes = 0u64;
    let mut runts = 0u64;
    let mut unforwarded = 0u64;
    for i in 0..n {
        rx_bytes += u64::from(s.burst.pkt_len(i));
        let Some(data) = s.burst.data(i) else {
            continue;
        };
        if let Some(e) = parse(data, in_port as u32, &mut s.key) {
            stats.parse_error(e);
            if data.len() < ETH_HEADER_LEN {
                runts += 1;
                continue;
            }
        }
        let (Some(o), Some(buf)) = (out, out.and_then(|o| s.txbufs.get_mut(o))) else {
            unforwarded += 1;
            continue;
        };
        if buf.is_full() {
            if let Some(txq) = txqs.get_mut(o) {
                flush_port(stats, o, txq.as_mut(), buf);
            }
        }
        if let Some(m) = s.burst.take(i) {
            // Cannot fail: a full buffer was flushed just above.
            let _ = buf.push(m);
        }
    }
    if let Some(pc) = stats.port(in_port) {
        pc.rx_packets.add(n as u64);
        pc.rx_bytes.add(rx_bytes);
    }
    if runts > 0 {
        stats.drop(DropReason::Runt, runts);
    }
    if unforwarded > 0 {
        stats.drop(DropReason::NoForward, unforwarded);
    }
    s.burst.clear();
}

#[inline]
fn flush_all(stats: &PmdStats, txqs: &mut [Box<dyn TxPort>], txbufs: &mut [TxBuffer]) {
    for (port_no, (buf, txq)) in txbufs.iter_mut().zip(txqs.iter_mut()).enumerate() {
        if !buf.is_empty() {
            flush_port(stats, port_no, txq.as_mut(), buf);
        }
    }
}

#[inline]
fn flush_port(stats: &PmdStats, port_no: usize, txq: &mut dyn TxPort, buf: &mut TxBuffer) {
    let r = txq.flush(buf);
    stats.tx_packets.add(r.sent as u64);
    if let Some(pc) = stats.port(port_no) {
        pc.tx_packets.add(r.sent as u64);
        pc.tx_bytes.add(r.sent_bytes);
        if r.dropped > 0 {
            pc.tx_dropped.add(r.dropped as u64);
        }
    }
    if r.dropped > 0 {
        stats.drop(DropReason::TxFull, r.dropped as u64);
    }
}
