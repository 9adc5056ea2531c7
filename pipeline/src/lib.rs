//! ferroswitch packet pipeline: the datapath's logic, as a pure library.
//!
//! # Layer
//!
//! `pipeline` sits below `pmd` (which drives it over bursts of DPDK mbufs) and
//! `mgmt` (which uses its types on the slow path). It depends on nothing of ours and
//! on no DPDK: everything is generic over the [`packet::Packet`] buffer trait, so the
//! same code runs on mbufs in production and on `Vec<u8>` in tests, benches and
//! fuzzers.
//!
//! Today it holds:
//! * [`actions`]: datapath actions ([`actions::DpAction`]), their OVS-style text
//!   form and a reference executor over frame bytes;
//! * [`packet`]: the packet-buffer trait;
//! * [`flow_key`]: [`FlowKey`], the fixed-layout match key (also viewable as `u64`
//!   words for the classifier);
//! * [`mod@parse`]: header parsing from frame bytes into a `FlowKey`;
//! * [`stats`]: [`ParseError`], the counted reasons a parse stopped early;
//! * [`pcap`]: classic pcap files read and written in memory;
//! * [`trafgen`]: UDP frames and flow mixes for tests, the demo and benchmarks;
//! * [`tunnel`]: VXLAN, GRE and Geneve outer headers, built once per
//!   encapsulation; per packet, push completion, pop checks (the metadata or
//!   the reason to drop) and the inner flow hash;
//! * [`tun_metadata`]: the TLV map of Geneve options to `tun_metadataN` fields;
//! * [`forward`]: [`StaticForward`], port-to-port forwarding until OpenFlow tables
//!   replace it.
//!
//! # Invariants
//!
//! * **Pure**: no I/O, no threads, no clocks, no global state, no logging.
//! * **No `unsafe`**: `#![forbid(unsafe_code)]`; byte views go through `zerocopy`
//!   and checked slices.
//! * **No allocation per packet**: per-packet functions (`parse`, `lookup`, counter
//!   updates) work on caller-owned values; only constructors that run on the
//!   management thread allocate.
//! * **No panic on packet bytes**: no `unwrap`/`expect`/indexing reachable from
//!   packet contents. A bad packet yields a partial key and a [`ParseError`] that
//!   the caller counts.
//!
//! # Must not
//!
//! Depend on `dpdk-ffi`, `pmd` or `mgmt`; block, lock or allocate on the fast path;
//! return `Result` from per-packet code where a counter will do.
#![forbid(unsafe_code)]

pub mod actions;
pub mod dpcls;
pub mod emc;
pub mod flow_cache;
pub mod flow_key;
pub mod forward;
pub mod hash;
pub mod ofproto;
pub mod packet;
pub mod parse;
pub mod pcap;
pub mod simple_match;
pub mod stats;
pub mod trafgen;
pub mod tun_metadata;
pub mod tunnel;

pub use flow_key::{FlowKey, FLOW_KEY_WORDS};
pub use forward::StaticForward;
pub use packet::Packet;
pub use parse::{parse, parse_simple, parse_with_offsets, Offsets, SimpleKey};
pub use stats::{ParseError, ParseErrorCounters};
