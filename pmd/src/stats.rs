//! Per-PMD counters.
//!
//! Thread safety: every counter has exactly one writer, its PMD thread, which updates
//! it with a relaxed load and store (no locked read-modify-write on the fast path);
//! the management thread reads with relaxed loads. Relaxed is enough: counters are
//! independent monotonic values and readers need no ordering with other memory, only
//! an untorn 64-bit value, which atomics give.

use std::sync::atomic::{AtomicU64, Ordering};

use pipeline::tunnel::PopError;
use pipeline::ParseError;

/// One single-writer counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning PMD calls this.
    #[inline(always)]
    pub fn add(&self, n: u64) {
        // Relaxed: single writer (module doc), so load+store cannot lose updates.
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub fn get(&self) -> u64 {
        // Relaxed: a reader wants an untorn recent value, no ordering.
        self.0.load(Ordering::Relaxed)
    }

    /// Resets to 0 (only for the owner, or while the owner is stopped).
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// Sets the value (a gauge; only the owner calls this).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// Why the datapath dropped a packet (parse errors are counted apart: a packet with a
/// partial key may still be forwarded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than an Ethernet header: not a frame.
    Runt,
    /// No forwarding entry for the input port.
    NoForward,
    /// The output port did not take the packet (its tx queue was full).
    TxFull,
    /// The megaflow's actions output nothing (OpenFlow `drop`, table miss, ...).
    FlowDrop,
    /// A cache miss found the upcall queue full.
    UpcallQueueFull,
    /// A packet of a flow whose upcall was in flight found the hold queue full.
    UpcallHoldFull,
    /// An upcall was not answered in time; the packets held for it were dropped.
    UpcallTimeout,
    /// Sent to the controller, and there is none yet.
    Controller,
    /// No mbuf for a copy (output to several ports).
    NoMbuf,
    /// A tunnel push found too little headroom for the outer headers (the
    /// mbuf has 128 bytes; a Geneve header with long options needs more).
    TnlPushHeadroom,
    /// A tunnel push on a packet of several segments, or whose outer IPv4
    /// packet would exceed 65535 bytes.
    TnlPushError,
    /// A tunnel push of an inner frame the path cannot carry: the outer IPv4
    /// packet would exceed the path MTU (the route's port's MTU). Not
    /// fragmented.
    TnlPushMtu,
    /// A tunnel pop names a port that is not a tunnel port.
    TnlPopNotTunnelPort,
    /// Tunnel pop: shorter than its outer headers say.
    TnlPopTruncated,
    /// Tunnel pop: not IPv4.
    TnlPopNotIpv4,
    /// Tunnel pop: an IPv4 fragment.
    TnlPopFragment,
    /// Tunnel pop: wrong outer IPv4 header checksum.
    TnlPopIpChecksum,
    /// Tunnel pop: bad IHL or total length.
    TnlPopIpLength,
    /// Tunnel pop: not UDP (VXLAN, Geneve) or GRE (GRE).
    TnlPopProtocol,
    /// Tunnel pop: UDP destination port not the tunnel port's.
    TnlPopUdpPort,
    /// Tunnel pop: UDP length disagrees with the IPv4 length.
    TnlPopUdpLength,
    /// Tunnel pop: wrong UDP checksum.
    TnlPopUdpChecksum,
    /// Tunnel pop: VXLAN flags not just the I bit, or reserved bits set.
    TnlPopVxlanFlags,
    /// Tunnel pop: GRE version or reserved flags (routing, ...) set.
    TnlPopGreHeader,
    /// Tunnel pop: GRE protocol not Ethernet (0x6558).
    TnlPopGreProtocol,
    /// Tunnel pop: wrong GRE checksum.
    TnlPopGreChecksum,
    /// Tunnel pop: Geneve version not 0.
    TnlPopGeneveVersion,
    /// Tunnel pop: Geneve protocol not Ethernet (0x6558).
    TnlPopGeneveProtocol,
    /// Tunnel pop: Geneve options past the end of the packet.
    TnlPopGeneveOptions,
    /// Tunnel pop: a mapped Geneve option of another length than its
    /// mapping's.
    TnlPopGeneveOptionLength,
    /// Tunnel pop: an unmapped Geneve option with the critical bit.
    TnlPopGeneveCritical,
    /// A tunnel pop on a packet already recirculated
    /// [`crate::poll_loop::MAX_RECIRC_DEPTH`] times (a loop of tunnels).
    RecircDepth,
    /// A tunnel pop found the PMD's recirculation batch full.
    RecircFull,
}

impl DropReason {
    pub const COUNT: usize = 33;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Runt,
        DropReason::NoForward,
        DropReason::TxFull,
        DropReason::FlowDrop,
        DropReason::UpcallQueueFull,
        DropReason::UpcallHoldFull,
        DropReason::UpcallTimeout,
        DropReason::Controller,
        DropReason::NoMbuf,
        DropReason::TnlPushHeadroom,
        DropReason::TnlPushError,
        DropReason::TnlPushMtu,
        DropReason::TnlPopNotTunnelPort,
        DropReason::TnlPopTruncated,
        DropReason::TnlPopNotIpv4,
        DropReason::TnlPopFragment,
        DropReason::TnlPopIpChecksum,
        DropReason::TnlPopIpLength,
        DropReason::TnlPopProtocol,
        DropReason::TnlPopUdpPort,
        DropReason::TnlPopUdpLength,
        DropReason::TnlPopUdpChecksum,
        DropReason::TnlPopVxlanFlags,
        DropReason::TnlPopGreHeader,
        DropReason::TnlPopGreProtocol,
        DropReason::TnlPopGreChecksum,
        DropReason::TnlPopGeneveVersion,
        DropReason::TnlPopGeneveProtocol,
        DropReason::TnlPopGeneveOptions,
        DropReason::TnlPopGeneveOptionLength,
        DropReason::TnlPopGeneveCritical,
        DropReason::RecircDepth,
        DropReason::RecircFull,
    ];

    /// The drop reason of a refused tunnel pop.
    #[inline]
    pub fn tnl_pop(e: PopError) -> DropReason {
        match e {
            PopError::NotTunnelPort => DropReason::TnlPopNotTunnelPort,
            PopError::Truncated => DropReason::TnlPopTruncated,
            PopError::NotIpv4 => DropReason::TnlPopNotIpv4,
            PopError::Fragment => DropReason::TnlPopFragment,
            PopError::IpChecksum => DropReason::TnlPopIpChecksum,
            PopError::IpLength => DropReason::TnlPopIpLength,
            PopError::Protocol => DropReason::TnlPopProtocol,
            PopError::UdpPort => DropReason::TnlPopUdpPort,
            PopError::UdpLength => DropReason::TnlPopUdpLength,
            PopError::UdpChecksum => DropReason::TnlPopUdpChecksum,
            PopError::VxlanFlags => DropReason::TnlPopVxlanFlags,
            PopError::GreHeader => DropReason::TnlPopGreHeader,
            PopError::GreProtocol => DropReason::TnlPopGreProtocol,
            PopError::GreChecksum => DropReason::TnlPopGreChecksum,
            PopError::GeneveVersion => DropReason::TnlPopGeneveVersion,
            PopError::GeneveProtocol => DropReason::TnlPopGeneveProtocol,
            PopError::GeneveOptions => DropReason::TnlPopGeneveOptions,
            PopError::GeneveOptionLength => DropReason::TnlPopGeneveOptionLength,
            PopError::GeneveCritical => DropReason::TnlPopGeneveCritical,
        }
    }

    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// Label value for metrics and `pmd-stats-show`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::NoForward => "no_forward",
            DropReason::TxFull => "tx_full",
            DropReason::FlowDrop => "flow_drop",
            DropReason::UpcallQueueFull => "upcall_queue_full",
            DropReason::UpcallHoldFull => "upcall_hold_full",
            DropReason::UpcallTimeout => "upcall_timeout",
            DropReason::Controller => "controller",
            DropReason::NoMbuf => "no_mbuf",
            DropReason::TnlPushHeadroom => "tnl_push_headroom",
            DropReason::TnlPushError => "tnl_push_error",
            DropReason::TnlPushMtu => "tnl_push_mtu",
            DropReason::TnlPopNotTunnelPort => "tnl_pop_not_tunnel_port",
            DropReason::TnlPopTruncated => "tnl_pop_truncated",
            DropReason::TnlPopNotIpv4 => "tnl_pop_not_ipv4",
            DropReason::TnlPopFragment => "tnl_pop_fragment",
            DropReason::TnlPopIpChecksum => "tnl_pop_ip_csum",
            DropReason::TnlPopIpLength => "tnl_pop_ip_len",
            DropReason::TnlPopProtocol => "tnl_pop_protocol",
            DropReason::TnlPopUdpPort => "tnl_pop_udp_port",
            DropReason::TnlPopUdpLength => "tnl_pop_udp_len",
            DropReason::TnlPopUdpChecksum => "tnl_pop_udp_csum",
            DropReason::TnlPopVxlanFlags => "tnl_pop_vxlan_flags",
            DropReason::TnlPopGreHeader => "tnl_pop_gre_header",
            DropReason::TnlPopGreProtocol => "tnl_pop_gre_protocol",
            DropReason::TnlPopGreChecksum => "tnl_pop_gre_csum",
            DropReason::TnlPopGeneveVersion => "tnl_pop_geneve_version",
            DropReason::TnlPopGeneveProtocol => "tnl_pop_geneve_protocol",
            DropReason::TnlPopGeneveOptions => "tnl_pop_geneve_options",
            DropReason::TnlPopGeneveOptionLength => "tnl_pop_geneve_opt_len",
            DropReason::TnlPopGeneveCritical => "tnl_pop_geneve_critical",
            DropReason::RecircDepth => "recirc_depth",
            DropReason::RecircFull => "recirc_full",
        }
    }
}

/// What a PMD counts for one of its rx queues (`pmd-rxq-show`).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct RxqStats {
    /// TSC cycles spent on the queue's bursts that brought packets (their
    /// processing included), estimated from one iteration in 16.
    pub cycles: Counter,
}

/// What one PMD counted for one port.
#[derive(Debug, Default)]
pub struct PortCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    pub tx_dropped: Counter,
    /// Extra tx bursts for packets the port did not take at once.
    pub tx_retries: Counter,
}

/// The counters of one PMD thread. Cache-line aligned so two PMDs never share a line.
#[derive(Debug)]
#[repr(align(64))]
pub struct PmdStats {
    pub iterations: Counter,
    /// TSC cycles of iterations that received at least one packet. Counted per
    /// group of a few iterations (see `poll_loop::CycleMeter`): exact under steady
    /// load or idleness, an estimate when the two mix within microseconds.
    pub busy_cycles: Counter,
    /// TSC cycles of iterations that received nothing (same accounting).
    pub idle_cycles: Counter,
    pub rx_packets: Counter,
    pub tx_packets: Counter,
    /// Packets classified by the simple-match path (no parse, no cache lookup).
    pub simple_hits: Counter,
    /// Packets classified by simple MAC match (no parse, a lookup by the two
    /// Ethernet addresses; `NORMAL`'s megaflows).
    pub simple_mac_hits: Counter,
    /// Packets found in the exact-match cache.
    pub emc_hits: Counter,
    /// Packets found by the megaflow classifier.
    pub megaflow_hits: Counter,
    /// Classifier subtables probed (over `megaflow_hits` + misses: the average
    /// lookups per hit OVS shows).
    pub subtable_probes: Counter,
    /// Packets sent to the management thread for translation.
    pub upcalls: Counter,
    /// Packets of a flow already upcalled, held until its megaflow arrives.
    pub upcalls_coalesced: Counter,
    /// Inner packets a tunnel pop sent through the flow stage again (OVS's
    /// "packet recirculations").
    pub recirculations: Counter,
    /// Megaflows installed by the management thread (a gauge, set by the PMD).
    pub megaflows: Counter,
    pub drops: [Counter; DropReason::COUNT],
    pub parse_errors: [Counter; ParseError::COUNT],
    /// Indexed by datapath port number (position in [`crate::DatapathSpec::ports`]).
    pub ports: Box<[PortCounters]>,
}

impl PmdStats {
    pub fn new(n_ports: usize) -> PmdStats {
        PmdStats {
            iterations: Counter::default(),
            busy_cycles: Counter::default(),
            idle_cycles: Counter::default(),
            rx_packets: Counter::default(),
            tx_packets: Counter::default(),
            simple_hits: Counter::default(),
            simple_mac_hits: Counter::default(),
            emc_hits: Counter::default(),
            megaflow_hits: Counter::default(),
            subtable_probes: Counter::default(),
            upcalls: Counter::default(),
            upcalls_coalesced: Counter::default(),
            recirculations: Counter::default(),
            megaflows: Counter::default(),
            drops: std::array::from_fn(|_| Counter::default()),
            parse_errors: std::array::from_fn(|_| Counter::default()),
            ports: (0..n_ports).map(|_| PortCounters::default()).collect(),
        }
    }

    #[inline(always)]
    pub fn count_drop(&self, reason: DropReason, n: u64) {
        if let Some(c) = self.drops.get(reason.index()) {
            c.add(n);
        }
    }

    #[inline(always)]
    pub fn parse_error(&self, e: ParseError) {
        if let Some(c) = self.parse_errors.get(e.index()) {
            c.add(1);
        }
    }

    pub fn port(&self, port_no: usize) -> Option<&PortCounters> {
        self.ports.get(port_no)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_once_with_its_own_name() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let names: std::collections::HashSet<&str> =
            DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), DropReason::COUNT);
        for e in PopError::ALL {
            assert_eq!(
                DropReason::tnl_pop(e).as_str(),
                format!("tnl_pop_{}", e.as_str())
            );
        }
    }
}
