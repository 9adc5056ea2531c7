//! Ports and the pinned poll-mode driver (PMD) threads.
//!
//! Layer: between `dpdk-ffi` (the only DPDK caller) and `pipeline` (packet logic).
//! A [`Datapath`] opens the ports, spreads their rx queues over the PMD threads and
//! starts one thread per configured CPU. Each PMD thread is pinned, registered with
//! DPDK, and loops: receive a burst from each of its rx queues, run the pipeline over
//! the burst, queue outputs per port, flush every tx buffer once per iteration.
//!
//! Thread safety: each PMD owns its queues, tx buffers and scratch state outright.
//! What others see of it is its [`stats::PmdStats`], written only by that PMD and read
//! by the management thread (single-writer counters, see `stats.rs`).
//!
//! Must not: call DPDK except through `dpdk-ffi`'s safe types; allocate, lock, log or
//! make a syscall per packet.
#![forbid(unsafe_code)]

pub mod datapath;
pub mod poll_loop;
pub mod port;
pub mod quiesce;
pub mod stats;
pub mod testing;
pub mod upcall;

pub use datapath::{
    Datapath, DatapathError, DatapathSpec, FlowSpec, PmdHandle, PortInfo, PortKind, PortSpec,
    PortTable, PortTotals, RxqInfo, MAX_PORTS,
};
pub use port::{ClosedTx, DpdkPort, InternalPort, Port, RxPort, TunnelPort, TxPort, VhostPort};
pub use stats::{DropReason, PmdStats, PortCounters, RxqStats};
pub use upcall::{FlowActions, PmdCommand, Upcall, UpcallWaker};
