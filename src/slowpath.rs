//! Glue between the slow path (`mgmt::ofproto`) and the PMDs: megaflow installs
//! and removals become `PmdCommand`s on the PMDs' command queues.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use dpdk_ffi::{Mbuf, Mempool};
use mgmt::config::Config;
use mgmt::ofproto::{Bridge, DpControl, Ofproto, OfprotoConfig};
use pipeline::actions::DpAction;
use pipeline::flow_cache::FlowStats;
use pipeline::tun_metadata::TlvMap;
use pipeline::FlowKey;
use pmd::{FlowActions, PmdCommand};

/// The PMDs' command queues, by PMD index, and what the slow path sends and
/// reads itself: the mempool its frames (LACPDUs) are built in, the ports
/// whose links bonds follow.
pub struct PmdControl {
    pub commands: Vec<Sender<PmdCommand>>,
    /// Where frames the slow path sends are allocated.
    pub pool: Option<Arc<Mempool>>,
    /// The datapath's running ports, by datapath port number.
    pub ports: pmd::PortTable,
}

impl DpControl for PmdControl {
    /// What an upcall carries back: the packet only when its PMD could not hold
    /// it (see `pmd::upcall`); usually the PMD holds it and this is `None`.
    type Packet = Option<Mbuf>;

    fn install(
        &self,
        pmd: usize,
        mask: &FlowKey,
        key: &FlowKey,
        actions: Vec<DpAction>,
        stats: Arc<FlowStats>,
        packet: Option<Option<Mbuf>>,
    ) {
        if let Some(q) = self.commands.get(pmd) {
            // A PMD drains its queue every iteration, so this waits at most briefly;
            // after shutdown the send fails and the packet is freed with the message.
            let _ = q.send(PmdCommand::Install {
                mask: *mask,
                key: *key,
                actions: Arc::new(FlowActions::new(actions)),
                stats,
                packet: packet.flatten(),
            });
        }
    }

    fn remove(&self, pmd: usize, mask: &FlowKey, key: &FlowKey) {
        if let Some(q) = self.commands.get(pmd) {
            let _ = q.send(PmdCommand::Remove {
                mask: *mask,
                key: *key,
            });
        }
    }

    fn set_tlv_map(&self, map: TlvMap) {
        for q in &self.commands {
            let _ = q.send(PmdCommand::SetTlvMap(map));
        }
    }

    fn barrier(&self) {
        let acks: Vec<_> = self
            .commands
            .iter()
            .filter_map(|q| {
                let (tx, rx) = crossbeam_channel::bounded(1);
                q.send(PmdCommand::Barrier(tx)).ok().map(|()| rx)
            })
            .collect();
        for rx in acks {
            // A PMD applies commands every iteration: microseconds. The bound only
            // matters if a PMD is gone.
            let _ = rx.recv_timeout(BARRIER_TIMEOUT);
        }
    }

    fn link_up(&self, odp: usize) -> Option<bool> {
        self.ports.get(odp).map(|p| p.link().up)
    }

    fn packet_data(&self, packet: &Option<Mbuf>) -> Vec<u8> {
        // Slow-protocol frames (LACPDUs) come with their upcall; others are
        // held by their PMD.
        packet
            .as_ref()
            .map(|m| m.data().to_vec())
            .unwrap_or_default()
    }

    fn send(&self, odp: usize, frame: &[u8]) {
        // Any PMD will do (each has a tx queue on every port): the first.
        let (Some(pool), Some(q)) = (&self.pool, self.commands.first()) else {
            return;
        };
        let Some(packet) = Mbuf::from_slice(pool, frame) else {
            return; // mempool exhausted: the next periodic frame goes instead
        };
        let _ = q.send(PmdCommand::Execute {
            actions: Arc::new(FlowActions::new(vec![DpAction::Output(odp as u32)])),
            packet,
        });
    }

    fn execute(&self, frame: &[u8], actions: &[DpAction]) {
        // As `send`, with the slow path's actions (an ARP request's
        // translation: outputs, VLAN pushes).
        let (Some(pool), Some(q)) = (&self.pool, self.commands.first()) else {
            return;
        };
        let Some(packet) = Mbuf::from_slice(pool, frame) else {
            return; // mempool exhausted: the request is asked again later
        };
        let _ = q.send(PmdCommand::Execute {
            actions: Arc::new(FlowActions::new(actions.to_vec())),
            packet,
        });
    }
}

/// Longest wait for a PMD to acknowledge a barrier.
const BARRIER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The bridges of the config with their ports numbered as the datapath numbers
/// them (bridge order, then port order), their VLAN modes and MAC table settings,
/// and their flows: `priority=0 actions=NORMAL`, then the configured ones
/// ([`mgmt::ofproto::bridges_from_config`]).
pub fn bridges(cfg: &Config) -> Result<Vec<Bridge>, String> {
    mgmt::ofproto::bridges_from_config(cfg)
}

/// The running slow path: the OpenFlow state shared with the control socket, the
/// upcall handler and the revalidator.
pub struct SlowPath {
    pub ofproto: Arc<Mutex<Ofproto<PmdControl>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl SlowPath {
    /// Starts the slow path of `dp` over `bridges`: installs go to the PMDs'
    /// command queues; the upcall handler reads the datapath's upcall queue (if it
    /// has one: a datapath without a flow stage upcalls nothing).
    pub fn start(
        dp: &mut pmd::Datapath,
        bridges: Vec<Bridge>,
        cfg: OfprotoConfig,
    ) -> std::io::Result<SlowPath> {
        let control = PmdControl {
            commands: dp
                .pmds()
                .iter()
                .filter_map(|p| p.commands.clone())
                .collect(),
            pool: Some(dp.mempool().clone()),
            ports: dp.port_table(),
        };
        let ofproto = Arc::new(Mutex::new(Ofproto::new(bridges, control, cfg)));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = match dp.take_upcalls() {
            Some(rx) => {
                let waker = dp.upcall_waker();
                let queue = rx.clone();
                let park = move |limit| waker.park(|| !queue.is_empty(), limit);
                let recv = move || {
                    rx.try_recv()
                        .ok()
                        .map(|u: pmd::Upcall| (u.pmd, u.key, u.packet))
                };
                mgmt::udpif::spawn(ofproto.clone(), recv, park, stop.clone())?
            }
            None => Vec::new(),
        };
        Ok(SlowPath {
            ofproto,
            stop,
            threads,
        })
    }

    /// Stops the threads and waits for them.
    pub fn stop(self) {
        // Relaxed: a stop flag; the joins order the rest.
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}
