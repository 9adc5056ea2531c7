//! The PMD thread's loop.
//!
//! Hot path: no heap allocation, lock, syscall or log per packet or per iteration.
//! Every buffer the loop uses is allocated before it starts (installing a megaflow,
//! a control message applied between bursts, may grow the flow cache). Drops are
//! counted, never reported by `Result`.
//!
//! Two stages, chosen per input port:
//! - static forwarding (`[[bridge.forward]]`): the whole burst moves to one output;
//! - the flow cache: each packet is parsed into a flow key, looked up in the
//!   exact-match cache and then the megaflow classifier, and executed with its
//!   megaflow's actions; a miss goes to the management thread as an upcall.
//!
//! Tunnels: a tunnel push writes the prebuilt outer headers into the mbuf's
//! headroom and runs the nested actions on the outer packet; a tunnel pop checks
//! and strips the outer headers and queues the inner frame in a fixed per-PMD
//! recirculation batch, which goes through the flow stage's full path after the
//! burst (as received on the tunnel's port, with its tunnel metadata in the
//! key), at most [`MAX_RECIRC_DEPTH`] times per packet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use dpdk_ffi::{rdtsc, Mbuf, MbufBurst, Mempool, TxBuffer, MAX_BURST};
use pipeline::actions::{
    apply_set, finish_push_vlan, prepare_pop_vlan, DpAction, TunnelMeta, VLAN_HEADER_LEN,
};
use pipeline::dpcls::Prefetch;
use pipeline::flow_cache::{FlowCache, FlowRef, Hit};
use pipeline::simple_match::{mac_pair, parse_simple_end, EndKey, MacPair, SimpleMode};
use pipeline::tun_metadata::{TlvMap, TunMd};
use pipeline::tunnel::{
    finish_push, inner_flow_hash, PopError, TunnelHeader, TunnelKind, TunnelPortInfo,
};
use pipeline::{parse, parse_simple, FlowKey, SimpleKey, StaticForward};

use crate::port::{ClosedTx, RxPort, TxPort};
use crate::quiesce::Quiescence;
use crate::stats::{Counter, DropReason, PmdStats, RxqStats};
use crate::upcall::{last_taker, FlowActions, PmdCommand, Upcall, UpcallWaker};

/// Smallest frame that is a frame: an Ethernet header.
const ETH_HEADER_LEN: usize = 14;
/// Distinct flows whose upcall may be in flight at once (per PMD).
const MAX_INFLIGHT: usize = 64;
/// IEEE 802.3 Slow Protocols ethertype (LACP).
const ETH_TYPE_SLOW: u16 = 0x8809;
/// Packets held per flow while its upcall is in flight.
const HELD_PER_FLOW: usize = 64;
/// Iterations between looks at the command queue: a look costs a call and several
/// atomic loads, about a nanosecond per packet if done every iteration (`perf p2p`:
/// 0.93 -> 0.82 of testpmd); every 16 keeps a command's wait in microseconds.
const COMMAND_EVERY: u64 = 16;
/// Control messages applied per look at most (bounds the time away from rx).
const MAX_COMMANDS_PER_ITERATION: usize = 32;
/// Times one packet may be recirculated by tunnel pops (OVS's
/// `MAX_RECIRC_DEPTH`): a pop beyond it is a loop of tunnels, dropped and
/// counted (`recirc_depth`).
pub const MAX_RECIRC_DEPTH: u8 = 6;

/// One rx queue given to a PMD.
pub struct AssignedRxq {
    /// Datapath port number of the queue's port.
    pub port_no: usize,
    pub queue: u16,
    pub rxq: Box<dyn RxPort>,
    /// Polled once every this many iterations (1: every iteration).
    pub poll_every: u32,
    /// Pinned to this PMD (`pmd-rxq-affinity`).
    pub pinned: bool,
    /// Its cycles, for `pmd-rxq-show`.
    pub stats: Arc<RxqStats>,
}

impl AssignedRxq {
    /// What the PMD's handle shows of it.
    pub fn info(&self) -> crate::datapath::RxqInfo {
        crate::datapath::RxqInfo {
            port_no: self.port_no,
            queue: self.queue,
            pinned: self.pinned,
            stats: self.stats.clone(),
        }
    }
}

/// Iterations between two measurements of each rx queue's cycles: the TSC is
/// read around a queue's burst only in these, and the cycles counted times
/// this (a TSC read costs about a packet's forwarding; a sample in 16 keeps
/// `pmd-rxq-show` within a few percent at a negligible cost).
const RXQ_SAMPLE_EVERY: u64 = 16;

/// Iterations between two polls of an internal port's queue. A `net_tap` poll is
/// a `readv` system call even when nothing waits (`perf 1flow`: the tap of the
/// bridge's own port took the PMD from 0.62 to 0.46 of testpmd, polled every
/// iteration). Traffic to and from the host is management traffic: this adds at
/// most a few tens of microseconds to it under load.
pub const INTERNAL_POLL_EVERY: u32 = 128;

/// The flow-cache stage's configuration.
pub struct FlowStage {
    pub emc_entries: usize,
    pub emc_insert_inv_prob: u32,
    pub simple_match: bool,
    pub upcalls: Sender<Upcall>,
    /// Wakes the upcall handler if it sleeps.
    pub upcall_waker: Arc<UpcallWaker>,
    pub commands: Receiver<PmdCommand>,
    /// For copies when a packet goes to several ports.
    pub pool: Arc<Mempool>,
}

/// Everything one PMD thread owns.
pub struct PmdContext {
    pub id: usize,
    pub cpu: usize,
    pub burst: usize,
    pub rxqs: Vec<AssignedRxq>,
    /// This PMD's tx queue of each port, by datapath port number.
    pub txqs: Vec<Box<dyn TxPort>>,
    /// What a tunnel pop to each port checks, by datapath port number (`None`:
    /// not a tunnel's port).
    pub tunnels: Vec<Option<TunnelPortInfo>>,
    /// Static forwarding by datapath port number; ports without an entry go through
    /// the flow stage (or are dropped as `no_forward` when there is none).
    pub forward: StaticForward,
    pub flows: Option<FlowStage>,
    pub stats: Arc<PmdStats>,
    /// Where this PMD marks its quiescent points (index `id`).
    pub quiescence: Arc<Quiescence>,
}

/// A flow whose upcall is in flight, with the packets of it that arrived since
/// (executed in order once its megaflow is installed).
struct Inflight {
    hash: u32,
    key: FlowKey,
    since: u64,
    held: [Option<Mbuf>; HELD_PER_FLOW],
    /// Each held packet's recirculation depth (0: as received).
    depths: [u8; HELD_PER_FLOW],
    n_held: usize,
}

/// What a recirculated packet brings back into the flow stage.
#[derive(Clone, Copy, Default)]
struct RecircMeta {
    /// The tunnel's datapath port: the packet's new `in_port`.
    port: u32,
    /// Tunnel metadata from the outer headers, for the key.
    tun: TunnelMeta,
    /// Recirculations so far, this one included.
    depth: u8,
    /// The pop decoded `tun_metadata` fields: they are in the batch's `md`
    /// at the packet's index.
    md: bool,
}

/// Inner packets tunnel pops queued, waiting for the flow stage (a fixed
/// batch: a pop that finds it full is a counted drop).
struct Recirc {
    burst: MbufBurst,
    meta: Box<[RecircMeta; MAX_BURST]>,
    /// The `tun_metadata` fields of the packets whose meta says `md`.
    md: Box<[TunMd; MAX_BURST]>,
    /// What Geneve options pops decode ([`PmdCommand::SetTlvMap`]).
    tlv: TlvMap,
    /// What the queued packets have in common, kept as they are queued.
    same: Same,
}

/// Whether the packets of a [`Recirc`] batch are one conversation: all of
/// one tunnel port and metadata with one inner [`SimpleKey`] (what a run of a
/// pop-only megaflow usually gives, [`pop_run`] parsing each inner frame as
/// it pops it). The flow stage then looks the batch up once, without a pass
/// over it ([`recirculate`]).
#[derive(Clone, Copy)]
enum Same {
    /// Nothing queued.
    Empty,
    /// Every packet so far has these; `bytes` in all.
    All {
        port: u32,
        tun: TunnelMeta,
        key: SimpleKey,
        bytes: u64,
    },
    /// Packets differ, or one was queued without its key.
    Mixed,
}

impl Recirc {
    /// Queues `m` with its metadata (its `tun_metadata` fields, when
    /// `meta.md`, already in `md` at its index: [`Recirc::decode_md`]);
    /// [`Recirc::same`] is the caller's to keep.
    #[inline(always)]
    fn push(&mut self, m: Mbuf, meta: RecircMeta) -> Result<(), Mbuf> {
        let i = self.burst.len();
        self.burst.push(m)?;
        if let Some(slot) = self.meta.get_mut(i) {
            *slot = meta;
        }
        Ok(())
    }

    /// Decodes Geneve options `opts` into the `md` slot of the packet to be
    /// queued next: whether it has `tun_metadata` fields, or why it is to be
    /// dropped. Out of line: VXLAN and GRE never come here.
    #[inline(never)]
    fn decode_md(&mut self, opts: &[u8]) -> Result<bool, PopError> {
        let i = self.burst.len();
        let mut md = TunMd::default();
        self.tlv.decode(opts, &mut md)?;
        if let Some(slot) = self.md.get_mut(i) {
            *slot = md;
        }
        Ok(md.present != 0)
    }
}

impl Same {
    /// What a batch has in common after `more` were queued behind it.
    fn then(self, more: Same) -> Same {
        match (self, more) {
            (Same::Empty, x) | (x, Same::Empty) => x,
            (
                Same::All {
                    port,
                    tun,
                    key,
                    bytes,
                },
                Same::All {
                    port: p2,
                    tun: t2,
                    key: k2,
                    bytes: b2,
                },
            ) if (port, tun, key) == (p2, t2, k2) => Same::All {
                port,
                tun,
                key,
                bytes: bytes + b2,
            },
            _ => Same::Mixed,
        }
    }
}

/// Per-thread state, allocated once before the loop.
struct Scratch {
    burst: MbufBurst,
    txbufs: Vec<TxBuffer>,
    keys: Box<[FlowKey; MAX_BURST]>,
    hashes: [u32; MAX_BURST],
    hits: [Hit; MAX_BURST],
    /// The runs of the simple-match path.
    runs: [Run; MAX_BURST],
    /// Simple MAC match's per-packet state (boxed: the other fields keep their
    /// places).
    mac_scratch: Box<MacScratch>,
    cache: FlowCache<FlowActions>,
    inflight: Vec<Inflight>,
    /// Packets tunnel pops queued for the flow stage.
    recirc: Recirc,
    /// While a recirculated burst is classified (`recirculating`): each
    /// packet's port, tunnel metadata and depth.
    cur: Box<[RecircMeta; MAX_BURST]>,
    /// And the `tun_metadata` fields of those whose `cur` says `md`.
    cur_md: Box<[TunMd; MAX_BURST]>,
    recirculating: bool,
    /// What a tunnel pop to each port checks (see [`PmdContext::tunnels`]).
    tunnels: Vec<Option<TunnelPortInfo>>,
    /// This PMD's index (upcalls name it).
    pmd: usize,
    tsc_hz: u64,
    now: u64,
}

/// What running actions on a packet reaches: counters, the mempool for
/// copies, the tx buffers and queues, the recirculation batch and the tunnel
/// ports.
struct Exec<'a> {
    stats: &'a PmdStats,
    pool: &'a Mempool,
    txbufs: &'a mut [TxBuffer],
    txqs: &'a mut [Box<dyn TxPort>],
    recirc: &'a mut Recirc,
    tunnels: &'a [Option<TunnelPortInfo>],
}

/// Simple MAC match: each packet's key, addresses and MAC table slot, between
/// the pass that reads (and prefetches) and the one that looks up.
struct MacScratch {
    keys: [SimpleKey; MAX_BURST],
    pairs: [MacPair; MAX_BURST],
    homes: [usize; MAX_BURST],
    ends: [EndKey; MAX_BURST],
}

/// Runs the loop until `stop` is set, then flushes what is queued.
pub fn run(mut ctx: PmdContext, stop: &AtomicBool) {
    let (emc_entries, emc_inv, simple) = ctx.flows.as_ref().map_or((2, 0, false), |f| {
        (f.emc_entries, f.emc_insert_inv_prob, f.simple_match)
    });
    let mut s = Scratch {
        burst: MbufBurst::new(),
        txbufs: (0..ctx.txqs.len()).map(|_| TxBuffer::new()).collect(),
        keys: Box::new([FlowKey::default(); MAX_BURST]),
        hashes: [0; MAX_BURST],
        hits: [Hit::Miss; MAX_BURST],
        runs: [Run::default(); MAX_BURST],
        mac_scratch: Box::new(MacScratch {
            keys: [SimpleKey::default(); MAX_BURST],
            pairs: [0; MAX_BURST],
            homes: [0; MAX_BURST],
            ends: [0; MAX_BURST],
        }),
        cache: FlowCache::new(emc_entries, emc_inv),
        inflight: Vec::with_capacity(MAX_INFLIGHT),
        recirc: Recirc {
            burst: MbufBurst::new(),
            meta: Box::new([RecircMeta::default(); MAX_BURST]),
            md: Box::new([TunMd::default(); MAX_BURST]),
            tlv: TlvMap::default(),
            same: Same::Empty,
        },
        cur: Box::new([RecircMeta::default(); MAX_BURST]),
        cur_md: Box::new([TunMd::default(); MAX_BURST]),
        recirculating: false,
        tunnels: std::mem::take(&mut ctx.tunnels),
        pmd: ctx.id,
        tsc_hz: dpdk_ffi::tsc_hz().max(1),
        now: rdtsc(),
    };
    s.cache.set_simple_match(simple);
    let mut cycles = CycleMeter::new();
    let mut n: u64 = 0;
    ctx.quiescence.set_running(ctx.id, true);
    // Relaxed: the flag carries no data; the thread is joined after it is seen.
    while !stop.load(Ordering::Relaxed) {
        // Between iterations nothing read during the last one is in use.
        ctx.quiescence.pass(ctx.id);
        // Every iteration while an upcall is in flight (its install is awaited),
        // else every COMMAND_EVERY iterations.
        if ctx.flows.is_some() && (!s.inflight.is_empty() || n.is_multiple_of(COMMAND_EVERY)) {
            apply_commands(&mut ctx, &mut s);
        }
        let received = iteration(&mut ctx, &mut s, n);
        if ctx.flows.is_some() {
            // Megaflow counters reach the management thread a few slots per busy
            // iteration (so a busy megaflow is written out once per many hits),
            // all of them when idle.
            if received == 0 {
                s.cache.publish(usize::MAX);
            } else if n.is_multiple_of(PUBLISH_EVERY) {
                s.cache.publish(PUBLISH_SLOTS);
            }
        }
        cycles.iteration_done(&ctx.stats, received > 0);
        s.now = cycles.last;
        n = n.wrapping_add(1);
        if n.is_multiple_of(4096) && ctx.flows.is_some() {
            expire_inflight(&mut ctx, &mut s);
            s.cache.rerank();
            s.cache.adapt_emc();
        }
    }
    cycles.account(&ctx.stats);
    flush_all(&ctx.stats, &mut ctx.txqs, &mut s.txbufs);
    ctx.quiescence.set_running(ctx.id, false);
}

/// Busy iterations between two publications of megaflow counters (see
/// `FlowCache::publish`), and the slots published each time: 4 per iteration on
/// average, so at 100k active megaflows and 200k iterations/s each is published
/// about every 125 ms, and a few hot megaflows once per 8 bursts.
const PUBLISH_EVERY: u64 = 8;
const PUBLISH_SLOTS: usize = 32;

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

/// One poll of every rx queue (of an internal port's, once in `poll_every`
/// iterations) and a flush of every tx buffer. Returns the number
/// of packets received.
#[inline]
fn iteration(ctx: &mut PmdContext, s: &mut Scratch, n: u64) -> usize {
    let mut received = 0usize;
    let stats = &*ctx.stats;
    let sample = n.is_multiple_of(RXQ_SAMPLE_EVERY);
    for a in ctx.rxqs.iter_mut() {
        if a.poll_every > 1 && !n.is_multiple_of(u64::from(a.poll_every)) {
            continue;
        }
        let start = if sample { rdtsc() } else { 0 };
        let n = a.rxq.rx_burst(&mut s.burst, ctx.burst);
        if n == 0 {
            continue;
        }
        received += n;
        match ctx.forward.lookup(a.port_no as u32) {
            Some(out) => static_stage(stats, &mut ctx.txqs, s, a.port_no, out as usize, n),
            None => match &ctx.flows {
                Some(f) => flow_stage(stats, f, &mut ctx.txqs, s, a.port_no, n),
                None => {
                    no_forward(stats, &mut s.burst, a.port_no, n);
                }
            },
        }
        if sample {
            // Busy cycles only, as OVS counts a queue's: a poll that brought
            // nothing is the PMD's idle time.
            a.stats
                .cycles
                .add(rdtsc().wrapping_sub(start).wrapping_mul(RXQ_SAMPLE_EVERY));
        }
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
/// parse per packet, 0.93 without).
#[inline]
fn static_stage(
    stats: &PmdStats,
    txqs: &mut [Box<dyn TxPort>],
    s: &mut Scratch,
    in_port: usize,
    out: usize,
    n: usize,
) {
    let appended = match s.txbufs.get_mut(out) {
        Some(buf) => {
            if buf.room() < n {
                if let Some(txq) = txqs.get_mut(out) {
                    flush_port(stats, out, txq.as_mut(), buf);
                }
            }
            buf.append_burst(&mut s.burst, ETH_HEADER_LEN as u16)
        }
        None => None,
    };
    match appended {
        Some(a) => {
            if a.runts > 0 {
                stats.count_drop(DropReason::Runt, a.runts);
            }
            count_rx(stats, in_port, n, a.bytes + a.runt_bytes);
        }
        None => no_forward(stats, &mut s.burst, in_port, n),
    }
}

#[inline(always)]
fn count_rx(stats: &PmdStats, in_port: usize, n: usize, bytes: u64) {
    if let Some(pc) = stats.port(in_port) {
        pc.rx_packets.add(n as u64);
        pc.rx_bytes.add(bytes);
    }
}

/// Counts and frees a burst that has nowhere to go.
#[cold]
fn no_forward(stats: &PmdStats, burst: &mut MbufBurst, in_port: usize, n: usize) {
    let mut bytes = 0;
    let mut runts = 0;
    for i in 0..n {
        bytes += u64::from(burst.pkt_len(i));
        if usize::from(burst.data_len(i)) < ETH_HEADER_LEN {
            runts += 1;
        }
    }
    stats.count_drop(DropReason::Runt, runts);
    stats.count_drop(DropReason::NoForward, n as u64 - runts);
    count_rx(stats, in_port, n, bytes);
    burst.clear();
}

/// The CPU's prefetch instruction, for the flow cache's burst lookups.
struct CpuPrefetch;

impl Prefetch for CpuPrefetch {
    #[inline(always)]
    fn prefetch<T>(p: &T) {
        dpdk_ffi::prefetch0(p);
    }
}

/// The flow stage: simple match when the port allows it; else parse, look up
/// (EMC when it pays, then classifier), execute; upcall misses. Then the
/// packets tunnel pops queued, if any.
/// Kept out of line: inlined into the iteration it crowds the static stage's
/// registers (`perf p2p`: stack spills in the burst move, 0.91 -> 0.84 of testpmd).
#[inline(never)]
fn flow_stage(
    stats: &PmdStats,
    f: &FlowStage,
    txqs: &mut [Box<dyn TxPort>],
    s: &mut Scratch,
    in_port: usize,
    n: usize,
) {
    let n = n.min(MAX_BURST);
    let done = match s.cache.simple_mode(in_port as u32) {
        SimpleMode::Off => false,
        SimpleMode::Plain => simple_stage(stats, f, txqs, s, in_port, n),
        SimpleMode::Mac => simple_mac_stage(stats, f, txqs, s, in_port, n),
        SimpleMode::End => simple_end_stage(stats, f, txqs, s, in_port, n),
    };
    if done {
        s.burst.clear();
    } else {
        full_path::<false>(stats, f, txqs, s, in_port, n);
    }
    if !s.recirc.burst.is_empty() {
        recirculate(stats, f, txqs, s);
    }
}

/// The full path over the burst in `s.burst`: parse, look up, execute, upcall
/// misses. `RECIRC`: the burst is one of recirculated packets, each with its
/// own input port (a tunnel's), tunnel metadata and depth in `s.cur`, already
/// counted as received (by the pop); else every packet came in on `in_port`.
#[inline(always)]
fn full_path<const RECIRC: bool>(
    stats: &PmdStats,
    f: &FlowStage,
    txqs: &mut [Box<dyn TxPort>],
    s: &mut Scratch,
    in_port: usize,
    n: usize,
) {
    let mut bytes = 0u64;
    let mut runts = 0u64;
    for i in 0..n {
        if !RECIRC {
            bytes += u64::from(s.burst.pkt_len(i));
        }
        let Some(key) = s.keys.get_mut(i) else {
            continue;
        };
        let Some(data) = s.burst.data(i) else {
            continue;
        };
        if data.len() < ETH_HEADER_LEN {
            // Not a frame: dropped below. Its key names no port (megaflows always
            // match in_port), so it misses and is never upcalled.
            runts += 1;
            *key = FlowKey {
                in_port: u32::MAX,
                ..FlowKey::default()
            };
            continue;
        }
        let cur = if RECIRC { s.cur.get(i).copied() } else { None };
        let port = cur.map_or(in_port as u32, |c| c.port);
        if let Some(e) = parse(data, port, key) {
            stats.parse_error(e);
        }
        if let Some(c) = cur {
            // After the parse, which zeroes the metadata.
            c.tun.to_key(key);
            if c.md {
                if let Some(md) = s.cur_md.get(i) {
                    md.to_key(key);
                }
            }
        }
    }
    // Hashing in a second pass: reading a key's words right after the parser wrote
    // its fields stalls on store forwarding (`perf`: a fifth of the PMD's time).
    // The EMC hash only when this burst probes the EMC; misses hash their key
    // below otherwise.
    let use_emc = s.cache.emc_wanted();
    if use_emc {
        for i in 0..n {
            let (Some(key), Some(h)) = (s.keys.get(i), s.hashes.get_mut(i)) else {
                continue;
            };
            *h = emc_hash(&s.burst, i, key);
        }
    }
    if !RECIRC {
        count_rx(stats, in_port, n, bytes);
    }
    let (Some(keys), Some(hashes), Some(hits)) =
        (s.keys.get(..n), s.hashes.get(..n), s.hits.get_mut(..n))
    else {
        return;
    };
    let look = s
        .cache
        .lookup_burst_prefetch::<CpuPrefetch>(keys, hashes, hits, use_emc);
    stats.emc_hits.add(u64::from(look.emc_hits));
    stats.megaflow_hits.add(u64::from(look.megaflow_hits));
    stats.subtable_probes.add(u64::from(look.subtable_probes));

    execute_hits(stats, f, txqs, s, n);

    // Misses: upcall once per flow, hold the flow's later packets meanwhile.
    for i in 0..n {
        if !matches!(s.hits.get(i), Some(Hit::Miss)) {
            continue;
        }
        let Some(&key) = s.keys.get(i) else {
            continue;
        };
        // Before the packet leaves the burst: the hash may be its RSS hash.
        let hash = match s.hashes.get(i) {
            Some(&h) if use_emc => h,
            _ => emc_hash(&s.burst, i, &key),
        };
        let Some(m) = s.burst.take(i) else { continue };
        if m.data().len() < ETH_HEADER_LEN {
            continue; // runt, counted above; freed here
        }
        let depth = if RECIRC {
            s.cur.get(i).map_or(0, |c| c.depth)
        } else {
            0
        };
        miss(stats, f, s, hash, key, m, depth);
    }
    if runts > 0 {
        stats.count_drop(DropReason::Runt, runts);
    }
    s.burst.clear();
}

/// Classifies the packets tunnel pops queued, by the full path, as received
/// on their tunnel's port; what they pop in turn goes round again. Ends: a
/// packet's depth grows by one a round and pops beyond [`MAX_RECIRC_DEPTH`]
/// are dropped. Called between bursts, when `s.burst` is empty.
#[inline(never)]
fn recirculate(stats: &PmdStats, f: &FlowStage, txqs: &mut [Box<dyn TxPort>], s: &mut Scratch) {
    s.burst.clear();
    while !s.recirc.burst.is_empty() {
        if !s.burst.move_from(&mut s.recirc.burst) {
            // Never: s.burst was cleared before the loop and after each round.
            s.burst.clear();
            continue;
        }
        std::mem::swap(&mut s.cur, &mut s.recirc.meta);
        std::mem::swap(&mut s.cur_md, &mut s.recirc.md);
        let same = std::mem::replace(&mut s.recirc.same, Same::Empty);
        let n = s.burst.len();
        stats.recirculations.add(n as u64);
        s.recirculating = true;
        if same_recirc(stats, f, txqs, s, n, same) || simple_recirc(stats, f, txqs, s, n) {
            s.burst.clear();
        } else {
            full_path::<true>(stats, f, txqs, s, 0, n);
        }
        s.recirculating = false;
    }
}

/// A recirculated batch that is one conversation ([`Same::All`]): one
/// simple lookup on its tunnel's port, one run. False (nothing touched) when
/// it is not, or the port is not in plain simple mode, or no simple megaflow
/// takes it.
#[inline(always)]
fn same_recirc(
    stats: &PmdStats,
    f: &FlowStage,
    txqs: &mut [Box<dyn TxPort>],
    s: &mut Scratch,
    n: usize,
    same: Same,
) -> bool {
    let Same::All {
        port,
        tun,
        key,
        bytes,
    } = same
    else {
        return false;
    };
    if s.cache.simple_mode(port) != SimpleMode::Plain {
        return false;
    }
    let Some(flow) = s.cache.simple_port(port).lookup_tun(&key, &tun) else {
        return false;
    };
    stats.simple_hits.add(n as u64);
    let run = Run {
        start: 0,
        end: n,
        flow,
        bytes,
        flags: key.tcp_flags,
    };
    execute_run(stats, f, txqs, s, run);
    true
}

/// Simple match for packets a tunnel pop queued (in `s.burst`, their tunnel's
/// port and metadata in `s.cur`): when each one's tunnel port is in plain simple
/// mode and one of its megaflows takes the packet's [`SimpleKey`] with its
/// tunnel metadata ([`pipeline::simple_match::PortTable::lookup_tun`]), the
/// burst is cut into runs and executed as [`simple_stage`] does; otherwise
/// nothing is touched and it returns false (the full path takes the burst).
/// The packets were counted as received by the pop.
#[inline(never)]
fn simple_recirc(
    stats: &PmdStats,
    f: &FlowStage,
    txqs: &mut [Box<dyn TxPort>],
    s: &mut Scratch,
    n: usize,
) -> bool {
    // A first pass parses; a burst of one port, metadata and key (one inner
    // conversation from one remote endpoint) is then one lookup and one run.
    let keys = &mut s.mac_scratch.keys;
    let mut uniform = true;
    let mut first: Option<(u32, TunnelMeta, SimpleKey)> = None;
    let mut first_word = 0;
    let mut bytes = 0u64;
    for i in 0..n {
        let (Some(sk), Some(meta), Some(slot)) = (
            s.burst.data(i).and_then(parse_simple),
            s.cur.get(i),
            keys.get_mut(i),
        ) else {
            return false;
        };
        *slot = sk;
        bytes += u64::from(s.burst.pkt_len(i));
        match first {
            None => {
                first = Some((meta.port, meta.tun, sk));
                first_word = sk.word();
            }
            Some((port, tun, _)) => {
                uniform &= sk.word() == first_word && (port, tun) == (meta.port, meta.tun);
            }
        }
    }
    if let (true, Some((port, tun, key))) = (uniform, first) {
        let same = Same::All {
            port,
            tun,
            key,
            bytes,
        };
        return same_recirc(stats, f, txqs, s, n, same);
    }
    let cache = &s.cache;
    let (keys, cur) = (&s.mac_scratch.keys, &s.cur);
    let key = |i: usize| {
        let (sk, meta) = (keys.get(i)?, cur.get(i)?);
        Some(((meta.port, meta.tun, *sk), sk.tcp_flags))
    };
    let lookup = |_, &(port, tun, sk): &(u32, TunnelMeta, SimpleKey)| {
        if cache.simple_mode(port) != SimpleMode::Plain {
            return None;
        }
        cache.simple_port(port).lookup_tun(&sk, &tun)
    };
    let Some(n_runs) = cut_runs(&mut s.runs, &s.burst, n, key, lookup) else {
        return false;
    };
    stats.simple_hits.add(n as u64);
    for k in 0..n_runs {
        if let Some(&run) = s.runs.get(k) {
            execute_run(stats, f, txqs, s, run);
        }
    }
    true
}

/// A run of consecutive packets of a burst in one megaflow.
#[derive(Clone, Copy, Default)]
struct Run {
    start: usize,
    end: usize,
    flow: FlowRef,
    bytes: u64,
    flags: u16,
}

/// Cuts packets `0..n` of `burst` into runs of one megaflow (in `runs`):
/// packet `i`'s key and TCP flags are `key(i)`; a key equal to the previous
/// packet's takes its megaflow (the rest of a conversation is not looked up
/// again), another is looked up by `lookup(i, key)`. The number of runs, or
/// `None` (nothing executed) when a key is missing or no simple megaflow
/// takes one.
#[inline(always)]
fn cut_runs<K: Copy + PartialEq>(
    runs: &mut [Run; MAX_BURST],
    burst: &MbufBurst,
    n: usize,
    key: impl Fn(usize) -> Option<(K, u16)>,
    mut lookup: impl FnMut(usize, &K) -> Option<FlowRef>,
) -> Option<usize> {
    let mut n_runs = 0;
    let mut last: Option<(K, FlowRef)> = None;
    for i in 0..n {
        let (k, flags) = key(i)?;
        let r = match last {
            Some((lk, r)) if lk == k => r,
            _ => {
                let r = lookup(i, &k)?;
                last = Some((k, r));
                r
            }
        };
        extend_runs(runs, &mut n_runs, i, r, u64::from(burst.pkt_len(i)), flags);
    }
    Some(n_runs)
}

/// Adds packet `i` (megaflow `flow`) to the runs of a simple-match burst: the
/// last run if it is that megaflow's, else a new run.
#[inline(always)]
fn extend_runs(
    runs: &mut [Run; MAX_BURST],
    n_runs: &mut usize,
    i: usize,
    flow: FlowRef,
    len: u64,
    flags: u16,
) {
    match n_runs.checked_sub(1).and_then(|l| runs.get_mut(l)) {
        Some(run) if run.flow == flow => {
            run.end = i + 1;
            run.bytes += len;
            run.flags |= flags;
        }
        _ => {
            if let Some(run) = runs.get_mut(*n_runs) {
                *run = Run {
                    start: i,
                    end: i + 1,
                    flow,
                    bytes: len,
                    flags,
                };
                *n_runs += 1;
            }
        }
    }
}

/// The hash of packet `i`'s key for the EMC and the in-flight upcalls: the NIC's
/// RSS hash when the port gives one.
#[inline(always)]
fn emc_hash(burst: &MbufBurst, i: usize, key: &FlowKey) -> u32 {
    match burst.rss_hash(i) {
        Some(rss) => rss,
        None => FlowCache::<FlowActions>::hash(key),
    }
}

/// The simple-match path (see `pipeline::simple_match`): when every packet of
/// the burst has a [`pipeline::SimpleKey`] and a simple megaflow of the port
/// takes it, the burst is cut into runs of one megaflow and the runs executed;
/// otherwise nothing is touched and it returns false (the burst takes the full
/// path). A first pass only parses (keeping the keys); a burst whose packets all
/// have the first one's key (one conversation, or one rule for the port) is then
/// one lookup and one run, else a second pass looks each key up (reusing the
/// previous packet's megaflow for the same key) and cuts the runs.
#[inline(always)]
fn simple_stage(
    stats: &PmdStats,
    f: &FlowStage,
    txqs: &mut [Box<dyn TxPort>],
    s: &mut Scratch,
    in_port: usize,
    n: usize,
) -> bool {
    let table = s.cache.simple_port(in_port as u32);
    let keys = &mut s.mac_scratch.keys;
    let mut bytes = 0u64;
    let mut uniform = true;
    let mut first = SimpleKey::default();
    let mut first_word = 0;
    for i in 0..n {
        let (Some(sk), Some(slot)) = (s.burst.data(i).and_then(parse_simple), keys.get_mut(i))
        else {
            return false;
        };
        *slot = sk;
        bytes += u64::from(s.burst.pkt_len(i));
        if i == 0 {
            first = sk;
            first_word = sk.word();
        } else {
            uniform &= sk.word() == first_word;
        }
    }
    if uniform && n > 0 {
        let Some(flow) = table.lookup(&first) else {
            return false;
        };
        let run = whole_burst(stats, &stats.simple_hits, in_port, n, bytes, flow, first);
        execute_run(stats, f, txqs, s, run);
        return true;
    }
    let keys = &s.mac_scratch.keys;
    let key = |i: usize| keys.get(i).map(|k| (*k, k.tcp_flags));
    let lookup = |_, k: &SimpleKey| table.lookup(k);
    let Some(n_runs) = cut_runs(&mut s.runs, &s.burst, n, key, lookup) else {
        return false;
    };
    let cut = Cut { n, bytes, n_runs };
    execute_runs(stats, &stats.simple_hits, f, txqs, s, in_port, cut)
}

/// Simple endpoint match (see `pipeline::simple_match`): [`simple_stage`] for
/// a port that receives a tunnel's outer packets, looked up by their
/// addresses and destination ([`end_key`]) too. A burst whose packets all
/// have the first one's is one lookup and one run; else each packet is looked
/// up, reusing the previous packet's megaflow when all three are the same.
#[inline(never)]
fn simple_end_stage(
    stats: &PmdStats,
    f: &FlowStage,
    txqs: &mut [Box<dyn TxPort>],
    s: &mut Scratch,
    in_port: usize,
    n: usize,
) -> bool {
    let table = s.cache.simple_port(in_port as u32);
    let ms = &mut *s.mac_scratch;
    let mut uniform = true;
    let mut first = (SimpleKey::default(), 0, 0);
    let mut first_word = 0;
    let mut bytes = 0u64;
    for i in 0..n {
        let Some(data) = s.burst.data(i) else {
            return false;
        };
        let (Some((k, end)), Some(macs)) = (parse_simple_end(data), mac_pair(data)) else {
            return false;
        };
        let (Some(sk), Some(mp), Some(e)) =
            (ms.keys.get_mut(i), ms.pairs.get_mut(i), ms.ends.get_mut(i))
        else {
            return false;
        };
        (*sk, *mp, *e) = (k, macs, end);
        bytes += u64::from(s.burst.pkt_len(i));
        if i == 0 {
            first = (k, macs, end);
            first_word = k.word();
        } else {
            uniform &= k.word() == first_word && (macs, end) == (first.1, first.2);
        }
    }
    if uniform && n > 0 {
        let (k, macs, end) = first;
        let Some(flow) = table.lookup_end(macs, end, &k) else {
            return false;
        };
        let run = whole_burst(stats, &stats.simple_hits, in_port, n, bytes, flow, k);
        execute_run(stats, f, txqs, s, run);
        return true;
    }
    let ms = &*s.mac_scratch;
    let key = |i: usize| {
        let (sk, macs, end) = (ms.keys.get(i)?, ms.pairs.get(i)?, ms.ends.get(i)?);
        Some(((*sk, *macs, *end), sk.tcp_flags))
    };
    let lookup =
        |_, &(sk, macs, end): &(SimpleKey, MacPair, EndKey)| table.lookup_end(macs, end, &sk);
    let Some(n_runs) = cut_runs(&mut s.runs, &s.burst, n, key, lookup) else {
        return false;
    };
    let cut = Cut { n, bytes, n_runs };
    execute_runs(stats, &stats.simple_hits, f, txqs, s, in_port, cut)
}

/// A simple-match burst cut into runs: `n` packets, `bytes` in all, in the
/// first `n_runs` of [`Scratch::runs`].
struct Cut {
    n: usize,
    bytes: u64,
    n_runs: usize,
}

/// The end of a simple stage: the burst's packets counted as received on
/// `in_port` and as `hits`, its runs executed.
#[inline(always)]
fn execute_runs(
    stats: &PmdStats,
    hits: &Counter,
    f: &FlowStage,
    txqs: &mut [Box<dyn TxPort>],
    s: &mut Scratch,
    in_port: usize,
    cut: Cut,
) -> bool {
    hits.add(cut.n as u64);
    count_rx(stats, in_port, cut.n, cut.bytes);
    for k in 0..cut.n_runs {
        if let Some(&run) = s.runs.get(k) {
            execute_run(stats, f, txqs, s, run);
        }
    }
    true
}

/// A burst of `n` packets (`bytes` in all) from `in_port` that all have
/// `key` and found `flow` by a simple match: counted as received and as
/// `hits`, and returned as one run.
#[inline(always)]
fn whole_burst(
    stats: &PmdStats,
    hits: &Counter,
    in_port: usize,
    n: usize,
    bytes: u64,
    flow: FlowRef,
    key: SimpleKey,
) -> Run {
    hits.add(n as u64);
    count_rx(stats, in_port, n, bytes);
    Run {
        start: 0,
        end: n,
        flow,
        bytes,
        flags: key.tcp_flags,
    }
}

/// Simple MAC match (see `pipeline::simple_match`): [`simple_stage`] for a
/// port with `NORMAL`'s megaflows, looked up by the packet's Ethernet addresses
/// too, in two passes: the first reads every packet and prefetches its MAC
/// table slot, the second looks up (`perf normal-1k-mac`: the slot's load was a
/// quarter of the PMD's time without the prefetch). A packet with the same
/// addresses as the one before it (a run of one conversation) is not
/// prefetched again, nor looked up again when its [`SimpleKey`] is the same
/// too; a burst that is all one conversation skips the second pass: one lookup,
/// one run (`perf normal-2mac`: 0.56-0.58 of testpmd before, 0.63-0.65 after).
/// Out of line, and apart from [`simple_stage`], so that the plain
/// simple match compiles as it did (`perf 1flow`).
#[inline(never)]
fn simple_mac_stage(
    stats: &PmdStats,
    f: &FlowStage,
    txqs: &mut [Box<dyn TxPort>],
    s: &mut Scratch,
    in_port: usize,
    n: usize,
) -> bool {
    let table = s.cache.simple_port(in_port as u32);
    let ms = &mut *s.mac_scratch;
    let mut prev: MacPair = 0;
    // Whether every packet so far has packet 0's addresses and key (one
    // conversation: the second pass is then a single lookup).
    let mut uniform = true;
    let mut first = SimpleKey::default();
    let mut first_word = 0;
    let mut bytes = 0u64;
    for i in 0..n {
        let Some(data) = s.burst.data(i) else {
            return false;
        };
        let (Some(k), Some(macs)) = (parse_simple(data), mac_pair(data)) else {
            return false;
        };
        let (Some(sk), Some(mp), Some(home)) =
            (ms.keys.get_mut(i), ms.pairs.get_mut(i), ms.homes.get_mut(i))
        else {
            return false;
        };
        *sk = k;
        *mp = macs;
        bytes += u64::from(s.burst.pkt_len(i));
        if i == 0 {
            first = k;
            first_word = k.word();
        } else {
            uniform &= macs == prev && k.word() == first_word;
        }
        if macs != prev {
            *home = table.mac_home(macs);
            table.prefetch_mac::<CpuPrefetch>(*home);
            prev = macs;
        }
    }
    if uniform && n > 0 {
        let Some(&home) = ms.homes.first() else {
            return false;
        };
        let Some(flow) = table.lookup_mac_at(home, prev, &first) else {
            return false;
        };
        let run = whole_burst(
            stats,
            &stats.simple_mac_hits,
            in_port,
            n,
            bytes,
            flow,
            first,
        );
        execute_run(stats, f, txqs, s, run);
        return true;
    }
    let ms = &*s.mac_scratch;
    let key = |i: usize| {
        let (sk, macs) = (ms.keys.get(i)?, ms.pairs.get(i)?);
        Some(((*macs, *sk), sk.tcp_flags))
    };
    // The addresses looked up last and their home slot: a packet's home was
    // computed (and prefetched) in the first pass only when its addresses
    // differ from the packet before it's, which is the one looked up last.
    let mut cur: (MacPair, usize) = (0, 0);
    let lookup = |i: usize, &(macs, sk): &(MacPair, SimpleKey)| {
        if macs != cur.0 {
            cur = (macs, *ms.homes.get(i)?);
        }
        table.lookup_mac_at(cur.1, macs, &sk)
    };
    let Some(n_runs) = cut_runs(&mut s.runs, &s.burst, n, key, lookup) else {
        return false;
    };
    let cut = Cut { n, bytes, n_runs };
    execute_runs(stats, &stats.simple_mac_hits, f, txqs, s, in_port, cut)
}

/// Executes the hits of a classified burst by runs of consecutive packets of one
/// megaflow. Misses are left in the burst.
#[inline(always)]
fn execute_hits(
    stats: &PmdStats,
    f: &FlowStage,
    txqs: &mut [Box<dyn TxPort>],
    s: &mut Scratch,
    n: usize,
) {
    let mut i = 0;
    while i < n {
        let r = match s.hits.get(i) {
            Some(Hit::Emc(r)) | Some(Hit::Megaflow(r)) => *r,
            _ => {
                i += 1;
                continue;
            }
        };
        let mut j = i + 1;
        while j < n
            && matches!(s.hits.get(j), Some(Hit::Emc(x)) | Some(Hit::Megaflow(x)) if *x == r)
        {
            j += 1;
        }
        let (mut bytes, mut flags) = (0u64, 0u16);
        for k in i..j {
            bytes += u64::from(s.burst.pkt_len(k));
            flags |= s.keys.get(k).map_or(0, |key| key.tcp_flags);
        }
        execute_run(
            stats,
            f,
            txqs,
            s,
            Run {
                start: i,
                end: j,
                flow: r,
                bytes,
                flags,
            },
        );
        i = j;
    }
}

/// Executes one run: credited once, and moved straight to the tx buffer when the
/// actions are a single output.
#[inline(always)]
fn execute_run(
    stats: &PmdStats,
    f: &FlowStage,
    txqs: &mut [Box<dyn TxPort>],
    s: &mut Scratch,
    run: Run,
) {
    let (i, j) = (run.start, run.end);
    let Some(out) = s
        .cache
        .credit(run.flow, (j - i) as u32, run.bytes, s.now, run.flags)
    else {
        return;
    };
    match out {
        Some(port) => {
            let port = port as usize;
            if let Some(buf) = s.txbufs.get_mut(port) {
                if buf.room() < j - i {
                    if let Some(txq) = txqs.get_mut(port) {
                        flush_port(stats, port, txq.as_mut(), buf);
                    }
                }
                // Fits after a flush (a run is at most a burst); a packet left
                // behind (impossible) is freed with the burst, counted.
                if buf.append_range(&mut s.burst, i..j, 0).is_none() {
                    stats.count_drop(DropReason::TxFull, (j - i) as u64);
                }
            } else {
                stats.count_drop(DropReason::NoForward, (j - i) as u64);
            }
        }
        None => {
            // Disjoint fields of the scratch: the cache is read while tx buffers fill.
            let Some(flow) = s.cache.get(run.flow) else {
                return;
            };
            if let Some((header, port)) = flow.actions.push_output() {
                // Encapsulation to one port: no dispatch per action.
                let port = port as usize;
                for k in i..j {
                    if let Some(mut m) = s.burst.take(k) {
                        if encapsulate(stats, header, &mut m) {
                            push_tx(stats, port, m, &mut s.txbufs, txqs);
                        }
                    }
                }
                return;
            }
            if let Some(port) = flow.actions.pop_only() {
                pop_run(stats, s, port, i..j);
                return;
            }
            let mut x = Exec {
                stats,
                pool: &f.pool,
                txbufs: &mut s.txbufs,
                txqs,
                recirc: &mut s.recirc,
                tunnels: &s.tunnels,
            };
            let (actions, last) = (flow.actions.actions(), flow.actions.last_output());
            for k in i..j {
                if let Some(m) = s.burst.take(k) {
                    let depth = if s.recirculating {
                        s.cur.get(k).map_or(0, |c| c.depth)
                    } else {
                        0
                    };
                    execute(&mut x, actions, last, m, depth);
                }
            }
        }
    }
}

/// A packet no megaflow took (`depth`: its recirculations so far): held behind
/// its flow's upcall in flight, or upcalled.
#[cold]
fn miss(
    stats: &PmdStats,
    f: &FlowStage,
    s: &mut Scratch,
    hash: u32,
    key: FlowKey,
    m: Mbuf,
    depth: u8,
) {
    let pmd = s.pmd;
    if let Some(e) = s
        .inflight
        .iter_mut()
        .find(|e| e.hash == hash && e.key == key)
    {
        match e.held.get_mut(e.n_held) {
            Some(slot) => {
                *slot = Some(m);
                if let Some(d) = e.depths.get_mut(e.n_held) {
                    *d = depth;
                }
                e.n_held += 1;
                stats.upcalls_coalesced.add(1);
            }
            None => stats.count_drop(DropReason::UpcallHoldFull, 1),
        }
        return;
    }
    // The packet stays here, first of its flow's held packets, so that no
    // later packet of the flow can pass it: a megaflow installed for another
    // flow's upcall may cover this one before its own answer comes back. Only
    // when every in-flight slot is taken does it ride along with the upcall.
    // Slow-protocol frames (LACPDUs, ethertype 0x8809) are consumed by the
    // slow path, which reads them: they go with their upcall (and come back
    // with the install at depth 0: a loop of tunnels through the slow path is
    // bounded by the upcalls it takes).
    let packet = if s.inflight.len() < MAX_INFLIGHT && key.dl_type != ETH_TYPE_SLOW {
        let mut held: [Option<Mbuf>; HELD_PER_FLOW] = std::array::from_fn(|_| None);
        held[0] = Some(m);
        let mut depths = [0; HELD_PER_FLOW];
        depths[0] = depth;
        s.inflight.push(Inflight {
            hash,
            key,
            since: s.now,
            held,
            depths,
            n_held: 1,
        });
        None
    } else {
        Some(m)
    };
    match f.upcalls.try_send(Upcall { pmd, key, packet }) {
        Ok(()) => {
            stats.upcalls.add(1);
            f.upcall_waker.wake();
        }
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            // Nothing will answer: forget the flow (its packet is freed).
            if s.inflight
                .last()
                .is_some_and(|e| e.hash == hash && e.key == key)
            {
                s.inflight.pop();
            }
            stats.count_drop(DropReason::UpcallQueueFull, 1);
        }
    }
}

/// Runs actions on one packet (`depth`: its recirculations so far):
/// set/push/pop in place, copies to every taker (output, tunnel push or pop)
/// but the last, which `last` names; the packet itself goes to that one.
#[inline]
fn execute(x: &mut Exec<'_>, actions: &[DpAction], last: Option<usize>, mut m: Mbuf, depth: u8) {
    for (ai, a) in actions.iter().enumerate() {
        match a {
            taker
            @ (DpAction::Output(_) | DpAction::TunnelPush { .. } | DpAction::TunnelPop(_)) => {
                if Some(ai) == last {
                    take(x, taker, m, depth);
                    return;
                }
                match m.copy(x.pool) {
                    Some(c) => take(x, taker, c, depth),
                    None => x.stats.count_drop(DropReason::NoMbuf, 1),
                }
            }
            DpAction::PushVlan { tpid, tci } => {
                if m.prepend(VLAN_HEADER_LEN as u16) && !finish_push_vlan(m.data_mut(), *tpid, *tci)
                {
                    // Too short to tag: undo the growth.
                    m.adj(VLAN_HEADER_LEN as u16);
                }
            }
            DpAction::PopVlan => {
                if prepare_pop_vlan(m.data_mut()) {
                    m.adj(VLAN_HEADER_LEN as u16);
                }
            }
            DpAction::Controller { .. } => x.stats.count_drop(DropReason::Controller, 1),
            // Tunnel metadata for a push is folded into the push's header by
            // translation: nothing to do per packet.
            DpAction::SetTunnel { .. } | DpAction::Drop => {}
            set => {
                apply_set(set, m.data_mut());
            }
        }
    }
    // No output took the packet.
    x.stats.count_drop(DropReason::FlowDrop, 1);
}

/// Gives `m` to an action that takes a packet: an output, a tunnel push or a
/// tunnel pop.
#[inline]
fn take(x: &mut Exec<'_>, taker: &DpAction, m: Mbuf, depth: u8) {
    match taker {
        DpAction::Output(port) => push_tx(x.stats, *port as usize, m, x.txbufs, x.txqs),
        DpAction::TunnelPush {
            header,
            actions: nested,
        } => tunnel_push(x, header, nested, m, depth),
        DpAction::TunnelPop(port) => tunnel_pop(x, *port, m, depth),
        // Not a taker (see `last_taker`): never called so; freed and counted.
        _ => x.stats.count_drop(DropReason::FlowDrop, 1),
    }
}

/// Tunnel push: `header` into the mbuf's headroom, the per-packet fields
/// filled, then `nested` (the underlay's actions) on the outer packet.
#[inline]
fn tunnel_push(
    x: &mut Exec<'_>,
    header: &TunnelHeader,
    nested: &[DpAction],
    mut m: Mbuf,
    depth: u8,
) {
    if encapsulate(x.stats, header, &mut m) {
        execute(x, nested, last_taker(nested), m, depth);
    }
}

/// Puts `header` in front of `m` and fills the per-packet fields; false (a
/// drop counted; the caller frees `m`) when the packet cannot be
/// encapsulated.
#[inline(always)]
fn encapsulate(stats: &PmdStats, header: &TunnelHeader, m: &mut Mbuf) -> bool {
    // The inner flow's hash for the UDP source port: the NIC's RSS hash when
    // the port gave one, else one of the inner headers, the same for a flow on
    // every path (a pop clears the outer packet's RSS hash).
    let hash = match m.rss_hash() {
        Some(h) => h,
        None => inner_flow_hash(m.data()),
    };
    if m.nb_segs() != 1 {
        stats.count_drop(DropReason::TnlPushError, 1);
        return false;
    }
    if m.pkt_len() as usize > header.max_inner_frame() {
        stats.count_drop(DropReason::TnlPushMtu, 1);
        return false;
    }
    let hlen = header.len();
    if !u16::try_from(hlen).is_ok_and(|h| m.prepend(h)) {
        stats.count_drop(DropReason::TnlPushHeadroom, 1);
        return false;
    }
    let data = m.data_mut();
    match (
        data.first_chunk_mut::<VXLAN_HEADER_LEN>(),
        header.bytes().first_chunk::<VXLAN_HEADER_LEN>(),
    ) {
        // VXLAN's (and option-less Geneve's) 50 bytes as a fixed-size copy.
        (Some(dst), Some(src)) if hlen == VXLAN_HEADER_LEN => *dst = *src,
        _ => {
            if let Some(dst) = data.get_mut(..hlen) {
                dst.copy_from_slice(header.bytes());
            }
        }
    }
    if !finish_push(data, header, hash) {
        stats.count_drop(DropReason::TnlPushError, 1);
        return false;
    }
    true
}

/// Outer headers of VXLAN: Ethernet, IPv4, UDP, VXLAN.
const VXLAN_HEADER_LEN: usize = 50;

/// Tunnel pop: checks the outer headers for tunnel port `port`, strips them
/// and queues the inner frame for recirculation as received on `port`.
#[inline]
fn tunnel_pop(x: &mut Exec<'_>, port: u32, m: Mbuf, depth: u8) {
    let Some(info) = x.tunnels.get(port as usize).copied().flatten() else {
        x.stats.count_drop(DropReason::TnlPopNotTunnelPort, 1);
        return;
    };
    if let Some((len, _, _)) = pop_one::<false, true>(x.stats, x.recirc, info, port, m, depth) {
        x.recirc.same = Same::Mixed;
        if let Some(pc) = x.stats.port(port as usize) {
            pc.rx_packets.add(1);
            pc.rx_bytes.add(len);
        }
    }
}

/// [`tunnel_pop`] of packets `range` of the burst, a run of a megaflow whose
/// only action is a pop to `port`: the port looked up once, the packets
/// counted as received on it once, each inner frame's [`SimpleKey`] read as
/// it is popped (see [`Same`]).
#[inline(always)]
fn pop_run(stats: &PmdStats, s: &mut Scratch, port: u32, range: std::ops::Range<usize>) {
    let n = range.len() as u64;
    let Some(info) = s.tunnels.get(port as usize).copied().flatten() else {
        stats.count_drop(DropReason::TnlPopNotTunnelPort, n);
        return;
    };
    // A loop per kind: only Geneve's looks for options.
    if info.kind == TunnelKind::Geneve {
        pop_run_of::<true>(stats, s, info, port, range);
    } else {
        pop_run_of::<false>(stats, s, info, port, range);
    }
}

/// [`pop_run`] of a port of `info`; `OPTS`: it is Geneve's.
#[inline(always)]
fn pop_run_of<const OPTS: bool>(
    stats: &PmdStats,
    s: &mut Scratch,
    info: TunnelPortInfo,
    port: u32,
    range: std::ops::Range<usize>,
) {
    let (mut packets, mut bytes) = (0u64, 0u64);
    let mut first: Option<(TunnelMeta, SimpleKey)> = None;
    let mut first_word = 0;
    let mut uniform = true;
    let recirculating = s.recirculating;
    for k in range {
        let Some(m) = s.burst.take(k) else { continue };
        let depth = if recirculating {
            s.cur.get(k).map_or(0, |c| c.depth)
        } else {
            0
        };
        if let Some((len, tun, key)) =
            pop_one::<true, OPTS>(stats, &mut s.recirc, info, port, m, depth)
        {
            packets += 1;
            bytes += len;
            match (first, key) {
                (_, None) => uniform = false,
                (None, Some(key)) => {
                    first = Some((tun, key));
                    first_word = key.word();
                }
                (Some((t, _)), Some(key)) => uniform &= key.word() == first_word && t == tun,
            }
        }
    }
    let popped = match first {
        Some((tun, key)) if uniform => Same::All {
            port,
            tun,
            key,
            bytes,
        },
        _ if packets == 0 => Same::Empty,
        _ => Same::Mixed,
    };
    s.recirc.same = s.recirc.same.then(popped);
    if let Some(pc) = stats.port(port as usize) {
        pc.rx_packets.add(packets);
        pc.rx_bytes.add(bytes);
    }
}

/// Strips the outer headers of `m` (checked for tunnel port `port`, of
/// `info`) and queues the inner frame for recirculation: its length, or
/// `None` for a drop, counted; else its length and tunnel metadata and,
/// when `KEYED`, its [`SimpleKey`] (see [`Same`]). `OPTS`: the port may be
/// Geneve's, whose options become `tun_metadata` fields (only Geneve pops
/// find options; a VXLAN or GRE loop leaves the test out).
#[inline(always)]
fn pop_one<const KEYED: bool, const OPTS: bool>(
    stats: &PmdStats,
    recirc: &mut Recirc,
    info: TunnelPortInfo,
    port: u32,
    mut m: Mbuf,
    depth: u8,
) -> Option<(u64, TunnelMeta, Option<SimpleKey>)> {
    if depth >= MAX_RECIRC_DEPTH {
        stats.count_drop(DropReason::RecircDepth, 1);
        return None;
    }
    let p = match pipeline::tunnel::pop(m.data(), info) {
        Ok(p) => p,
        Err(e) => {
            stats.count_drop(DropReason::tnl_pop(e), 1);
            return None;
        }
    };
    // Geneve options: the mapped ones become tun_metadata fields.
    let (at, len) = (usize::from(p.geneve_opts.0), usize::from(p.geneve_opts.1));
    let mut md = false;
    if OPTS && len != 0 {
        let opts = m.data().get(at..at + len).unwrap_or_default();
        match recirc.decode_md(opts) {
            Ok(has) => md = has,
            Err(e) => {
                stats.count_drop(DropReason::tnl_pop(e), 1);
                return None;
            }
        }
    }
    // The outer headers lie in the first segment (pop read only that); the
    // tail is Ethernet padding after the IPv4 packet.
    let tail = (m.pkt_len() as usize).saturating_sub(p.hlen + p.inner_len);
    let stripped = match (u16::try_from(p.hlen), u16::try_from(tail)) {
        (Ok(h), Ok(t)) => m.adj(h) && (t == 0 || m.trim(t)),
        _ => false,
    };
    if !stripped {
        stats.count_drop(DropReason::TnlPopTruncated, 1);
        return None;
    }
    m.clear_rss_hash();
    let meta = RecircMeta {
        port,
        tun: p.meta,
        depth: depth + 1,
        md,
    };
    let key = if KEYED { parse_simple(m.data()) } else { None };
    match recirc.push(m, meta) {
        Ok(()) => Some((p.inner_len as u64, p.meta, key)),
        Err(_dropped) => {
            stats.count_drop(DropReason::RecircFull, 1);
            None
        }
    }
}

#[inline]
fn push_tx(
    stats: &PmdStats,
    port: usize,
    m: Mbuf,
    txbufs: &mut [TxBuffer],
    txqs: &mut [Box<dyn TxPort>],
) {
    let Some(buf) = txbufs.get_mut(port) else {
        stats.count_drop(DropReason::NoForward, 1);
        return;
    };
    if buf.is_full() {
        if let Some(txq) = txqs.get_mut(port) {
            flush_port(stats, port, txq.as_mut(), buf);
        }
    }
    if buf.push(m).is_err() {
        stats.count_drop(DropReason::TxFull, 1);
    }
}

/// Applies the management thread's commands (a bounded number per iteration).
#[inline]
fn apply_commands(ctx: &mut PmdContext, s: &mut Scratch) {
    for _ in 0..MAX_COMMANDS_PER_ITERATION {
        let Some(f) = &ctx.flows else { return };
        let Ok(cmd) = f.commands.try_recv() else {
            break;
        };
        match cmd {
            PmdCommand::AddPort {
                port_no,
                txq,
                rxqs,
                tunnel,
                done,
            } => {
                add_port(ctx, s, port_no, txq, rxqs, tunnel);
                let _ = done.try_send(());
            }
            PmdCommand::RemovePort { port_no, done } => {
                remove_port(ctx, s, port_no);
                let _ = done.try_send(());
            }
            cmd => {
                let Some(f) = &ctx.flows else { return };
                apply_command(&ctx.stats, f, &mut ctx.txqs, s, cmd);
            }
        }
    }
    // What the executed packets popped.
    if !s.recirc.burst.is_empty() {
        if let Some(f) = &ctx.flows {
            recirculate(&ctx.stats, f, &mut ctx.txqs, s);
        }
    }
}

/// Takes over the queues of a port added at runtime (allocates: a control-plane
/// event, between bursts).
#[cold]
fn add_port(
    ctx: &mut PmdContext,
    s: &mut Scratch,
    port_no: usize,
    txq: Box<dyn TxPort>,
    rxqs: Vec<AssignedRxq>,
    tunnel: Option<TunnelPortInfo>,
) {
    if s.tunnels.len() <= port_no {
        s.tunnels.resize(port_no + 1, None);
    }
    if let Some(t) = s.tunnels.get_mut(port_no) {
        *t = tunnel;
    }
    while ctx.txqs.len() <= port_no {
        ctx.txqs.push(Box::new(ClosedTx));
    }
    while s.txbufs.len() < ctx.txqs.len() {
        s.txbufs.push(TxBuffer::new());
    }
    if let Some(slot) = ctx.txqs.get_mut(port_no) {
        *slot = txq;
    }
    ctx.rxqs.extend(rxqs);
}

/// Lets go of a port removed at runtime: what is queued for it is sent first, and
/// its number's counters start again from zero for the next port to get it.
#[cold]
fn remove_port(ctx: &mut PmdContext, s: &mut Scratch, port_no: usize) {
    if let (Some(buf), Some(txq)) = (s.txbufs.get_mut(port_no), ctx.txqs.get_mut(port_no)) {
        if !buf.is_empty() {
            flush_port(&ctx.stats, port_no, txq.as_mut(), buf);
        }
        *txq = Box::new(ClosedTx);
    }
    if let Some(t) = s.tunnels.get_mut(port_no) {
        *t = None;
    }
    ctx.rxqs.retain(|a| a.port_no != port_no);
    if let Some(c) = ctx.stats.port(port_no) {
        for counter in [
            &c.rx_packets,
            &c.rx_bytes,
            &c.tx_packets,
            &c.tx_bytes,
            &c.tx_dropped,
            &c.tx_retries,
        ] {
            counter.set(0);
        }
    }
}

#[cold]
fn apply_command(
    stats: &PmdStats,
    f: &FlowStage,
    txqs: &mut [Box<dyn TxPort>],
    s: &mut Scratch,
    cmd: PmdCommand,
) {
    match cmd {
        PmdCommand::Install {
            mask,
            key,
            actions,
            stats: fstats,
            packet,
        } => {
            s.cache
                .install(&mask, &key, actions.clone(), fstats.clone());
            stats.megaflows.set(s.cache.len() as u64);
            let covers = |k: &FlowKey| {
                k.words()
                    .iter()
                    .zip(mask.words())
                    .zip(key.words())
                    .all(|((a, m), b)| a & m == b & m)
            };
            let mut x = Exec {
                stats,
                pool: &f.pool,
                txbufs: &mut s.txbufs,
                txqs,
                recirc: &mut s.recirc,
                tunnels: &s.tunnels,
            };
            let (acts, last) = (actions.actions(), actions.last_output());
            if let Some(m) = packet {
                fstats.credit(1, u64::from(m.pkt_len()), s.now, 0);
                execute(&mut x, acts, last, m, 0);
            }
            // Flows the megaflow covers: their held packets, each flow in order.
            let mut i = s.inflight.len();
            while i > 0 {
                i -= 1;
                if !s.inflight.get(i).is_some_and(|e| covers(&e.key)) {
                    continue;
                }
                let mut e = s.inflight.swap_remove(i);
                let n_held = e.n_held;
                for (slot, &depth) in e.held.iter_mut().zip(&e.depths).take(n_held) {
                    if let Some(m) = slot.take() {
                        fstats.credit(1, u64::from(m.pkt_len()), s.now, 0);
                        execute(&mut x, acts, last, m, depth);
                    }
                }
            }
        }
        PmdCommand::Execute { actions, packet } => {
            let mut x = Exec {
                stats,
                pool: &f.pool,
                txbufs: &mut s.txbufs,
                txqs,
                recirc: &mut s.recirc,
                tunnels: &s.tunnels,
            };
            execute(&mut x, actions.actions(), actions.last_output(), packet, 0);
        }
        PmdCommand::Remove { mask, key } => {
            s.cache.remove(&mask, &key);
            stats.megaflows.set(s.cache.len() as u64);
        }
        PmdCommand::Flush => {
            s.cache.clear();
            stats.megaflows.set(0);
        }
        PmdCommand::SetTlvMap(map) => s.recirc.tlv = map,
        PmdCommand::Barrier(done) => {
            // Everything before the barrier is applied and every counter visible.
            s.cache.publish(usize::MAX);
            let _ = done.try_send(());
        }
        // Taken by `apply_commands`, which owns the whole context.
        PmdCommand::AddPort { .. } | PmdCommand::RemovePort { .. } => {}
    }
}

/// Forgets upcalls unanswered for a second and drops the packets held for them.
#[cold]
fn expire_inflight(ctx: &mut PmdContext, s: &mut Scratch) {
    let (limit, now) = (s.tsc_hz, s.now);
    let mut i = s.inflight.len();
    while i > 0 {
        i -= 1;
        if s.inflight
            .get(i)
            .is_some_and(|e| now.wrapping_sub(e.since) > limit)
        {
            let e = s.inflight.swap_remove(i);
            ctx.stats
                .count_drop(DropReason::UpcallTimeout, e.n_held as u64);
        }
    }
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
        if r.retries > 0 {
            pc.tx_retries.add(r.retries as u64);
        }
    }
    if r.dropped > 0 {
        stats.count_drop(DropReason::TxFull, r.dropped as u64);
    }
}
