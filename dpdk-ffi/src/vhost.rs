//! vhost-user ports whose packets go straight through librte_vhost.
//!
//! The device is a `net_vhost` ethdev: the driver owns the socket (server or
//! client, reconnecting), negotiates with the guest, reports the link and raises
//! link and queue events. Its burst functions are not used: they add per-packet
//! work (extended statistics by size and cast, a flag handshake per call) that
//! costs about a tenth of a PMD's time in a vhost-to-vhost forward (`perf pvp`).
//! Instead each queue handle calls `rte_vhost_dequeue_burst` /
//! `rte_vhost_enqueue_burst` with the device's current vid, as Open vSwitch does.
//!
//! The vid comes from the driver's events, in the thread that handles the
//! vhost-user socket: a link-up event publishes it, a link-down event withdraws
//! it and then waits until no queue handle can still be using it (the caller's
//! `quiesce`: the PMDs pass a quiescent point) before the driver lets the
//! library free the device.

use std::ffi::c_void;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::{call_error, Result};
use crate::ethdev::{EthPort, Link, PortConf, PortStats, RxQueue, TxQueue};
use crate::mbuf::{MbufBurst, TxBuffer, TxResult};
use crate::mempool::Mempool;
use crate::sys;

/// Waits until no queue handle of any port can be inside a burst that began
/// before the call (see the module comment).
pub type Quiesce = Arc<dyn Fn() + Send + Sync>;

/// What the event callback and the queue handles share.
struct Shared {
    port_id: u16,
    /// The guest's device while a driver is attached, else -1.
    vid: AtomicI32,
    /// Virtqueues the device has (a queue pair is two): bursts on others are
    /// not made (the library would log an error for each).
    n_vrings: AtomicU32,
    quiesce: OnceLock<Quiesce>,
    /// Last, so that it closes the port after the callbacks are unregistered.
    eth: EthPort,
    pool: Arc<Mempool>,
}

const EVENTS: [sys::rte_eth_event_type; 2] = [
    sys::rte_eth_event_type_RTE_ETH_EVENT_INTR_LSC,
    sys::rte_eth_event_type_RTE_ETH_EVENT_QUEUE_STATE,
];

impl Shared {
    /// Follows the driver: publishes the current vid and vring count, or
    /// withdraws the vid and waits for the queue handles to let go of it.
    fn refresh(&self) {
        // SAFETY: the port id of an open net_vhost device (closed only after Drop unregisters the callbacks); the call only takes the driver's lock.
        let vid = unsafe { sys::rte_eth_vhost_get_vid_from_port_id(self.port_id) };
        if vid < 0 {
            // SeqCst: ordered before the quiescence check's reads of the PMDs'
            // counters, so that a burst after their next quiescent point sees -1.
            if self.vid.swap(-1, Ordering::SeqCst) >= 0 {
                if let Some(q) = self.quiesce.get() {
                    q();
                }
            }
            return;
        }
        // SAFETY: vid is the driver's live device (its destroy callback reaches us, and clears it, before the library frees it).
        let n = unsafe { sys::rte_vhost_get_vring_num(vid) };
        // Release: the count is read with the vid.
        self.n_vrings.store(u32::from(n), Ordering::Release);
        self.vid.store(vid, Ordering::Release);
    }

    /// The vid when virtqueue `vring` can be used now.
    #[inline(always)]
    fn vid_for(&self, vring: u16) -> Option<i32> {
        // Acquire: pairs with the Release stores in `refresh`.
        let vid = self.vid.load(Ordering::Acquire);
        (vid >= 0 && u32::from(vring) < self.n_vrings.load(Ordering::Acquire)).then_some(vid)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        for ev in EVENTS {
            loop {
                // SAFETY: unregisters exactly what `VhostDevice::open` registered (same function, same argument: this struct's address).
                let ret = unsafe {
                    sys::rte_eth_dev_callback_unregister(
                        self.port_id,
                        ev,
                        Some(on_event),
                        self as *const Shared as *mut c_void,
                    )
                };
                // -EAGAIN: the callback is running right now; it is short.
                if ret != -libc::EAGAIN {
                    break;
                }
                std::thread::yield_now();
            }
        }
    }
}

/// The driver's link and queue events, in its vhost-user thread.
extern "C" fn on_event(
    _port_id: u16,
    _event: sys::rte_eth_event_type,
    cb_arg: *mut c_void,
    _ret_param: *mut c_void,
) -> i32 {
    // SAFETY: cb_arg is a live `Shared`: registered with its address, unregistered (waiting out a running call) before it is freed.
    let shared = unsafe { &*(cb_arg as *const Shared) };
    shared.refresh();
    0
}

/// A started vhost-user device with direct bursts (see the module comment).
pub struct VhostDevice {
    shared: Arc<Shared>,
}

impl VhostDevice {
    /// Opens `devargs` (a `net_vhostN,iface=...` device) as [`EthPort::open`]
    /// does and follows its events.
    pub fn open(devargs: &str, conf: &PortConf, pool: Arc<Mempool>) -> Result<VhostDevice> {
        let eth = EthPort::open(devargs, conf, pool.clone())?;
        let shared = Arc::new(Shared {
            port_id: eth.id(),
            vid: AtomicI32::new(-1),
            n_vrings: AtomicU32::new(0),
            quiesce: OnceLock::new(),
            eth,
            pool,
        });
        let arg = Arc::as_ptr(&shared) as *mut c_void;
        for ev in EVENTS {
            // SAFETY: a started port; `arg` stays valid until Shared's Drop unregisters the callback (the Arc keeps the memory).
            let ret = unsafe {
                sys::rte_eth_dev_callback_register(shared.port_id, ev, Some(on_event), arg)
            };
            if ret < 0 {
                return Err(call_error(
                    format!("rte_eth_dev_callback_register({})", shared.eth.name()),
                    ret,
                ));
            }
        }
        // A guest may have attached before the callbacks were in place.
        shared.refresh();
        Ok(VhostDevice { shared })
    }

    /// Sets how a link-down waits for the queue handles (once; later calls are
    /// ignored). Until it is set, no handle is assumed to be in use.
    pub fn set_quiesce(&self, q: Quiesce) {
        let _ = self.shared.quiesce.set(q);
    }

    pub fn eth(&self) -> &EthPort {
        &self.shared.eth
    }

    pub fn link(&self) -> Link {
        self.shared.eth.link()
    }

    pub fn stats(&self) -> PortStats {
        self.shared.eth.stats()
    }

    /// Rx queue `q`: the guest's transmit virtqueue of pair `q`.
    pub fn rx_queue(&self, q: u16) -> Result<VhostRxQueue> {
        Ok(VhostRxQueue {
            _owner: self.shared.eth.rx_queue(q)?,
            vring: q * 2 + 1,
            shared: self.shared.clone(),
        })
    }

    /// Tx queue `q`: the guest's receive virtqueue of pair `q`.
    pub fn tx_queue(&self, q: u16) -> Result<VhostTxQueue> {
        Ok(VhostTxQueue {
            _owner: self.shared.eth.tx_queue(q)?,
            vring: q * 2,
            shared: self.shared.clone(),
        })
    }
}

/// An rx queue of a [`VhostDevice`], with one owner (as [`RxQueue`]).
pub struct VhostRxQueue {
    /// The ethdev queue handle, held for its exclusive ownership only.
    _owner: RxQueue,
    vring: u16,
    shared: Arc<Shared>,
}

impl VhostRxQueue {
    /// Receives up to `max` packets into `burst` (cleared first).
    #[inline]
    pub fn rx_burst(&mut self, burst: &mut MbufBurst, max: usize) -> usize {
        burst.clear();
        let Some(vid) = self.shared.vid_for(self.vring) else {
            return 0;
        };
        let (vring, port, pool) = (self.vring, self.shared.port_id, self.shared.pool.as_ptr());
        // SAFETY: the library fills at most the count given, with mbufs that become ours (fill's contract); vid stays live until the PMDs pass a quiescent point after it is withdrawn (module comment); this handle owns the virtqueue; Shared holds the pool.
        unsafe {
            burst.fill(max, |pkts, n| {
                sys::fs_vhost_rx(vid, vring, pool, port, pkts, n)
            })
        }
    }
}

/// A tx queue of a [`VhostDevice`], with one owner (as [`TxQueue`]).
pub struct VhostTxQueue {
    /// The ethdev queue handle, held for its exclusive ownership only.
    _owner: TxQueue,
    vring: u16,
    shared: Arc<Shared>,
}

impl VhostTxQueue {
    /// Copies what `buf` holds into the guest's ring, retrying while the ring
    /// takes more; what it does not take (a full ring, or no guest) is freed and
    /// counted as dropped. `buf` is empty afterwards.
    #[inline]
    pub fn flush(&mut self, buf: &mut TxBuffer) -> TxResult {
        let Some(vid) = self.shared.vid_for(self.vring) else {
            return buf.discard();
        };
        let vring = self.vring;
        // SAFETY: fs_vhost_tx copies and frees exactly the first mbufs it counts, so they leave our ownership (send_all's contract); vid is live as in rx; this handle owns the virtqueue.
        unsafe { buf.send_all(|pkts, n| sys::fs_vhost_tx(vid, vring, pkts, n)) }
    }
}
