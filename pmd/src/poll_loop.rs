//! The PMD thread's loop.
//!
//! Hot path: no allocation, lock, syscall or log per packet or per iteration. Every
//! buffer the loop uses is allocated before it starts. Drops are counted, never
//! reported by `Result`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dpdk_ffi::{rdtsc, MbufBurst, TxBuffer};
use pipeline::StaticForward;

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
}

/// Runs the loop until `stop` is set, then flushes what is queued.
pub fn run(mut ctx: PmdContext, stop: &AtomicBool) {
    let mut s = Scratch {
        burst: MbufBurst::new(),
        txbufs: (0..ctx.txqs.len()).map(|_| TxBuffer::new()).collect(),
    };
    // Relaxed: the flag carries no data; the thread is joined after it is seen.
    let mut cycles = CycleMeter::new();
    while !stop.load(Ordering::Relaxed) {
        let received = iteration(&mut ctx, &mut s);
        cycles.iteration_done(&ctx.stats, received > 0);
    }
    cycles.account(&ctx.stats);
    flush_all(&ctx.stats, &mut ctx.txqs, &mut s.txbufs);
}

/// Iterations per TSC read. A TSC read costs about as much as forwarding one packet,
/// so it is amortised over several iterations (`perf p2p`: 3% of the PMD's time at
/// one read per iteration).
const TSC_EVERY: u32 = 8;

/// Busy/idle cycle accounting. The TSC is read once per [`TSC_EVERY`] iterations
/// and the elapsed cycles are split between busy and idle in proportion to the
/// iterations of each kind: exact under steady load or steady idleness, an
/// estimate when the two mix within a few microseconds.
struct CycleMeter {
    last: u64,
    iterations: u32,
    busy_iterations: u32,
}

impl CycleMeter {
    fn new() -> CycleMeter {
        CycleMeter {
            last: rdtsc(),
            iterations: 0,
            busy_iterations: 0,
        }
    }

    #[inline(always)]
    fn iteration_done(&mut self, stats: &PmdStats, busy: bool) {
        self.iterations += 1;
        self.busy_iterations += u32::from(busy);
        if self.iterations == TSC_EVERY {
            self.account(stats);
        }
    }

    #[inline]
    fn account(&mut self, stats: &PmdStats) {
        let now = rdtsc();
        let elapsed = now.wrapping_sub(self.last);
        let iters = u64::from(self.iterations.max(1));
        let busy = elapsed * u64::from(self.busy_iterations) / iters;
        stats.busy_cycles.add(busy);
        stats.idle_cycles.add(elapsed - busy);
        stats.iterations.add(u64::from(self.iterations));
        self.last = now;
        self.iterations = 0;
        self.busy_iterations = 0;
    }
}

/// One poll of every rx queue and a flush of every tx buffer. Returns the number
/// of packets received.
#[inline]
fn iteration(ctx: &mut PmdContext, s: &mut Scratch) -> usize {
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
    if received > 0 {
        stats.rx_packets.add(received as u64);
    }
    received
}

/// The static forwarding stage: every packet of a burst leaves by the output of its
/// input port, so the burst moves to that port's tx buffer whole, in one pass that
/// also drops runts (by a field of the mbuf header, already in cache).
///
/// No flow key is extracted here: nothing in this stage would read it, and parsing
/// costs more per packet than forwarding does (`perf p2p`: 0.48 of testpmd with a
/// parse per packet). Key extraction (`pipeline::parse`) runs once flow tables
/// decide forwarding.
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
    let appended = match (out, out.and_then(|o| s.txbufs.get_mut(o))) {
        (Some(o), Some(buf)) => {
            if buf.room() < n {
                if let Some(txq) = txqs.get_mut(o) {
                    flush_port(stats, o, txq.as_mut(), buf);
                }
            }
            buf.append_burst(&mut s.burst, ETH_HEADER_LEN as u16)
        }
        _ => None,
    };
    let rx_bytes = match appended {
        Some(a) => {
            if a.runts > 0 {
                stats.drop(DropReason::Runt, a.runts);
            }
            a.bytes + a.runt_bytes
        }
        None => no_forward(stats, &mut s.burst, n),
    };
    if let Some(pc) = stats.port(in_port) {
        pc.rx_packets.add(n as u64);
        pc.rx_bytes.add(rx_bytes);
    }
}

/// Counts and frees a burst that has nowhere to go; returns its bytes.
#[cold]
fn no_forward(stats: &PmdStats, burst: &mut MbufBurst, n: usize) -> u64 {
    let mut bytes = 0;
    let mut runts = 0;
    for i in 0..n {
        bytes += u64::from(burst.pkt_len(i));
        if usize::from(burst.data_len(i)) < ETH_HEADER_LEN {
            runts += 1;
        }
    }
    stats.drop(DropReason::Runt, runts);
    stats.drop(DropReason::NoForward, n as u64 - runts);
    burst.clear();
    bytes
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
