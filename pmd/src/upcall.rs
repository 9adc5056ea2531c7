//! Messages between the PMDs and the management thread.
//!
//! A PMD that finds no megaflow for a packet sends an [`Upcall`] (the key) on the
//! bounded upcall channel and goes on polling; a full channel is a counted drop,
//! never a wait. The packet stays in the PMD, first of the packets it holds for
//! that flow (it rides along with the upcall only when the PMD has no room to
//! hold it). The management thread translates the key through the OpenFlow tables
//! and answers the PMD that missed with [`PmdCommand::Install`]; the PMD then runs
//! the held packets of every flow the new megaflow covers, each flow in arrival
//! order. Holding the upcalled packet in the PMD keeps that order even when a
//! megaflow installed for another flow's upcall covers a flow whose own answer
//! is still on its way. PMDs apply commands between bursts.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dpdk_ffi::Mbuf;
use pipeline::actions::DpAction;
use pipeline::flow_cache::FlowStats;
use pipeline::tun_metadata::TlvMap;
use pipeline::tunnel::{TunnelHeader, TunnelPortInfo};
use pipeline::FlowKey;

use crate::poll_loop::AssignedRxq;
use crate::port::TxPort;

/// How the upcall handler sleeps when it has been idle a while, and how a PMD
/// wakes it without ever blocking: the handler raises `parked`, checks the queue
/// once more, and parks (with a timeout); a PMD that has queued an upcall
/// unparks it only when the flag is up (a futex wake-up, which does not block).
/// Both sides put a full fence between their write and their read, so either
/// the PMD sees the flag or the handler sees the upcall.
#[derive(Default)]
pub struct UpcallWaker {
    parked: AtomicBool,
    handler: OnceLock<std::thread::Thread>,
}

impl UpcallWaker {
    /// Called by a PMD after queuing an upcall.
    #[inline]
    pub fn wake(&self) {
        fence(Ordering::SeqCst);
        // Relaxed after the fence: see the type's comment.
        if self.parked.load(Ordering::Relaxed) {
            if let Some(t) = self.handler.get() {
                t.unpark();
            }
        }
    }

    /// Called by the handler thread: sleeps up to `limit` unless `queued()`
    /// says an upcall is waiting (or one arrives meanwhile).
    pub fn park(&self, queued: impl Fn() -> bool, limit: Duration) {
        let _ = self.handler.set(std::thread::current());
        self.parked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if !queued() {
            std::thread::park_timeout(limit);
        }
        self.parked.store(false, Ordering::Relaxed);
    }
}

/// A packet that missed the PMD's flow cache.
pub struct Upcall {
    /// The PMD that missed (its index in the datapath).
    pub pmd: usize,
    /// The packet's key; `in_port` is the datapath port number.
    pub key: FlowKey,
    /// The packet, only when the PMD could not hold it itself (every in-flight
    /// slot taken); normally the PMD keeps it first in line for its flow.
    pub packet: Option<Mbuf>,
}

/// A megaflow's actions, ready for the PMD: output ports are datapath port numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowActions {
    actions: Vec<DpAction>,
    /// Index of the last action that takes the packet (`Output`, `TunnelPush`,
    /// `TunnelPop`): the packet itself goes there, earlier ones get copies.
    last_output: Option<usize>,
    /// The port, when the actions are just one output (the common case, taken
    /// without dispatching on each action).
    single_output: Option<u32>,
    /// The header and the port, when the actions are just a tunnel push whose
    /// outer packet goes to one port (a hypervisor's encapsulation, taken
    /// without dispatching on each action).
    push_output: Option<(Arc<TunnelHeader>, u32)>,
    /// The tunnel's port, when the actions are just a tunnel pop (an
    /// endpoint's outer packets, popped without dispatching on each action).
    pop_only: Option<u32>,
}

impl pipeline::flow_cache::CacheActions for FlowActions {
    fn single_output(&self) -> Option<u32> {
        self.single_output
    }
}

impl FlowActions {
    pub fn new(actions: Vec<DpAction>) -> FlowActions {
        let last_output = last_taker(&actions);
        let single_output = match actions.as_slice() {
            [DpAction::Output(p)] => Some(*p),
            _ => None,
        };
        let push_output = match actions.as_slice() {
            [DpAction::TunnelPush { header, actions }] => match actions.as_ref() {
                [DpAction::Output(p)] => Some((header.clone(), *p)),
                _ => None,
            },
            _ => None,
        };
        let pop_only = match actions.as_slice() {
            [DpAction::TunnelPop(p)] => Some(*p),
            _ => None,
        };
        FlowActions {
            actions,
            last_output,
            single_output,
            push_output,
            pop_only,
        }
    }

    /// The tunnel header and output port when the actions are a tunnel push
    /// and one output of the outer packet.
    pub fn push_output(&self) -> Option<(&TunnelHeader, u32)> {
        self.push_output.as_ref().map(|(h, p)| (&**h, *p))
    }

    pub fn single_output(&self) -> Option<u32> {
        self.single_output
    }

    /// The tunnel's port when the actions are just a tunnel pop.
    pub fn pop_only(&self) -> Option<u32> {
        self.pop_only
    }

    pub fn actions(&self) -> &[DpAction] {
        &self.actions
    }

    /// Index of the last action that takes the packet (an output, a tunnel
    /// push or pop); the actions before it that take it get copies.
    pub fn last_output(&self) -> Option<usize> {
        self.last_output
    }
}

/// Index of the last action of `actions` that takes the packet itself
/// (`Output`, `TunnelPush`, `TunnelPop`).
#[inline]
pub fn last_taker(actions: &[DpAction]) -> Option<usize> {
    actions.iter().rposition(|a| {
        matches!(
            a,
            DpAction::Output(_) | DpAction::TunnelPush { .. } | DpAction::TunnelPop(_)
        )
    })
}

/// What the management thread asks of a PMD.
pub enum PmdCommand {
    /// Installs (or replaces) the megaflow `key`/`mask`, then executes `packet`
    /// (an upcalled packet the PMD could not hold) and the packets held for
    /// every flow it covers.
    Install {
        mask: FlowKey,
        key: FlowKey,
        actions: Arc<FlowActions>,
        stats: Arc<FlowStats>,
        packet: Option<Mbuf>,
    },
    /// Executes a packet with actions, installing nothing.
    Execute {
        actions: Arc<FlowActions>,
        packet: Mbuf,
    },
    /// Removes the megaflow `key`/`mask`.
    Remove { mask: FlowKey, key: FlowKey },
    /// Removes every megaflow.
    Flush,
    /// Decodes Geneve options with this TLV map from now on.
    SetTlvMap(TlvMap),
    /// Answers on the channel once every command sent before it is applied (so a
    /// rule change can return only when the PMDs forward by it).
    Barrier(crossbeam_channel::Sender<()>),
    /// Starts serving a port added at runtime: this PMD's tx queue of it and the
    /// rx queues this PMD is to poll (and, for a tunnel's port, what a
    /// `tnl_pop` to it checks); answers on `done` once they are in use.
    AddPort {
        port_no: usize,
        txq: Box<dyn TxPort>,
        rxqs: Vec<AssignedRxq>,
        tunnel: Option<TunnelPortInfo>,
        done: crossbeam_channel::Sender<()>,
    },
    /// Stops serving a port: sends what is queued for it, drops its queues (the
    /// number's tx queue becomes a [`crate::port::ClosedTx`]) and zeroes this
    /// PMD's counters of it; answers on `done` once the queues are released.
    RemovePort {
        port_no: usize,
        done: crossbeam_channel::Sender<()>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    /// An upcall queued before the park, or while the handler sleeps, ends
    /// the park at once; with nothing queued it lasts its limit.
    #[test]
    fn parked_handler_is_woken_by_a_queued_upcall() {
        let w = Arc::new(UpcallWaker::default());
        let queued = Arc::new(AtomicUsize::new(1));
        let t = Instant::now();
        w.park(
            || queued.load(Ordering::SeqCst) > 0,
            Duration::from_secs(10),
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "queued before the park"
        );

        queued.store(0, Ordering::SeqCst);
        let t = Instant::now();
        w.park(
            || queued.load(Ordering::SeqCst) > 0,
            Duration::from_millis(50),
        );
        assert!(t.elapsed() >= Duration::from_millis(50), "nothing queued");

        let (w2, q2) = (w.clone(), queued.clone());
        let pmd = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            q2.store(1, Ordering::SeqCst);
            w2.wake();
        });
        let t = Instant::now();
        w.park(
            || queued.load(Ordering::SeqCst) > 0,
            Duration::from_secs(10),
        );
        assert!(t.elapsed() < Duration::from_secs(5), "woken by the PMD");
        pmd.join().expect("pmd thread");
    }
}
