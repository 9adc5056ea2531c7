//! Ethernet ports: hot-plug probe from devargs, configure, start, exclusive queue
//! handles, link, statistics, and close on drop.

use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use crate::error::{call_error, DpdkError, Result};
use crate::mbuf::{MbufBurst, TxBuffer, TxResult};
use crate::mempool::Mempool;
use crate::ring::Ring;
use crate::sys;
use crate::Eal;

/// Queue and descriptor counts of a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConf {
    pub n_rxq: u16,
    pub n_txq: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub promiscuous: bool,
}

impl Default for PortConf {
    fn default() -> Self {
        PortConf {
            n_rxq: 1,
            n_txq: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            promiscuous: true,
        }
    }
}

/// Link state as `rte_eth_link_get_nowait` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
    pub speed_mbps: u32,
}

/// Basic port statistics (`rte_eth_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// Packets the hardware dropped because rx queues were full.
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    /// Rx mbuf allocation failures.
    pub rx_nombuf: u64,
}

struct PortInner {
    id: u16,
    name: String,
    /// Bus name for hot-unplug ("vdev", "pci"), when this port was hot-plugged by us.
    hotplug_bus: Option<&'static str>,
    n_rxq: u16,
    n_txq: u16,
    /// Which queue handles are handed out (rx then tx): each queue has one owner.
    taken: Mutex<(Vec<bool>, Vec<bool>)>,
    _pool: Arc<Mempool>,
    _rings: Vec<Arc<Ring>>,
}

impl Drop for PortInner {
    fn drop(&mut self) {
        // Every queue handle holds an Arc of this, so no thread polls the port now.
        // SAFETY: port id was valid when opened; stop/close tolerate a stopped port.
        unsafe {
            sys::rte_eth_dev_stop(self.id);
            sys::rte_eth_dev_close(self.id);
        }
        if let Some(bus) = self.hotplug_bus {
            hotplug_remove(bus, &self.name);
        }
    }
}

/// Unplugs a device we hot-plugged (errors ignored: this is teardown).
fn hotplug_remove(bus: &str, name: &str) {
    if let (Ok(bus_c), Ok(name_c)) = (CString::new(bus), CString::new(name)) {
        // SAFETY: both are valid C strings; removal of an already-released port's
        // device is handled by the drivers (they find no ethdev and return).
        unsafe { sys::rte_eal_hotplug_remove(bus_c.as_ptr(), name_c.as_ptr()) };
    }
}

/// A started Ethernet port. Cloning shares it; the port is stopped, closed and (if
/// hot-plugged by us) removed when the last clone and the last queue handle are gone.
#[derive(Clone)]
pub struct EthPort {
    inner: Arc<PortInner>,
}

/// The device name DPDK registers for `devargs`: the part before the first comma,
/// with a short PCI address given its domain.
pub fn device_name(devargs: &str) -> String {
    let name = devargs.split(',').next().unwrap_or("").trim();
    let is_short_pci = name.len() == 7
        && name.as_bytes().get(2) == Some(&b':')
        && name.as_bytes().get(5) == Some(&b'.');
    if is_short_pci {
        format!("0000:{name}")
    } else {
        name.to_string()
    }
}

fn port_by_name(name: &str) -> Option<u16> {
    let c = CString::new(name).ok()?;
    let mut id = 0u16;
    // SAFETY: c is a valid C string and id a valid out-pointer for the call.
    let ret = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
    (ret == 0).then_some(id)
}

impl EthPort {
    /// Hot-plugs the device named by `devargs` (a PCI address or a vdev such as
    /// `net_pcap0,rx_pcap=in.pcap`), then configures and starts it.
    pub fn open(devargs: &str, conf: &PortConf, pool: Arc<Mempool>) -> Result<EthPort> {
        if !Eal::is_initialised() {
            return Err(DpdkError::Invalid(format!(
                "rte_dev_probe({devargs}): EAL is not initialised"
            )));
        }
        let name = device_name(devargs);
        // Probed at EAL init (a PCI device on the `-a` allowlist): use it as it is;
        // it is not ours to unplug.
        if let Some(id) = port_by_name(&name) {
            return Self::setup(id, name, None, conf, pool, Vec::new());
        }
        let c = CString::new(devargs)
            .map_err(|_| DpdkError::Invalid(format!("devargs {devargs:?} has a NUL byte")))?;
        // SAFETY: c is a valid C string; probing only reads it.
        let ret = unsafe { sys::rte_dev_probe(c.as_ptr()) };
        if ret < 0 {
            return Err(call_error(format!("rte_dev_probe({devargs})"), ret));
        }
        let bus = if name.contains(':') { "pci" } else { "vdev" };
        let Some(id) = port_by_name(&name) else {
            hotplug_remove(bus, &name);
            return Err(DpdkError::Invalid(format!(
                "rte_dev_probe({devargs}): device {name:?} is not an Ethernet port"
            )));
        };
        let hotplug_bus = Some(bus);
        Self::setup(id, name, hotplug_bus, conf, pool, Vec::new())
    }

    /// A port over DPDK rings (`rte_eth_from_rings`): what is enqueued on `rx[i]` is
    /// received on queue i, what is sent on queue i lands on `tx[i]`. For tests.
    pub fn from_rings(
        name: &str,
        rx: &[Arc<Ring>],
        tx: &[Arc<Ring>],
        pool: Arc<Mempool>,
    ) -> Result<EthPort> {
        let cname = CString::new(name)
            .map_err(|_| DpdkError::Invalid(format!("port name {name:?} has a NUL byte")))?;
        let mut rxp: Vec<*mut sys::rte_ring> = rx.iter().map(|r| r.as_ptr()).collect();
        let mut txp: Vec<*mut sys::rte_ring> = tx.iter().map(|r| r.as_ptr()).collect();
        // SAFETY: the ring pointers are valid (the Arcs are kept by the port below,
        // so they outlive it); the arrays are read during the call only.
        let ret = unsafe {
            sys::rte_eth_from_rings(
                cname.as_ptr(),
                rxp.as_mut_ptr(),
                rxp.len() as u32,
                txp.as_mut_ptr(),
                txp.len() as u32,
                0,
            )
        };
        if ret < 0 {
            return Err(call_error(format!("rte_eth_from_rings({name})"), ret));
        }
        let conf = PortConf {
            n_rxq: rx.len() as u16,
            n_txq: tx.len() as u16,
            ..PortConf::default()
        };
        let mut rings = rx.to_vec();
        rings.extend(tx.iter().cloned());
        Self::setup(ret as u16, name.to_string(), None, &conf, pool, rings)
    }

    fn setup(
        id: u16,
        name: String,
        hotplug_bus: Option<&'static str>,
        conf: &PortConf,
        pool: Arc<Mempool>,
        rings: Vec<Arc<Ring>>,
    ) -> Result<EthPort> {
        // Built first so that any failure below stops, closes and unplugs the port.
        let inner = Arc::new(PortInner {
            id,
            name: name.clone(),
            hotplug_bus,
            n_rxq: conf.n_rxq,
            n_txq: conf.n_txq,
            taken: Mutex::new((
                vec![false; conf.n_rxq as usize],
                vec![false; conf.n_txq as usize],
            )),
            _pool: pool.clone(),
            _rings: rings,
        });
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: id is a valid port (just looked up/created), info a valid out-struct.
        let ret = unsafe { sys::rte_eth_dev_info_get(id, &mut info) };
        if ret < 0 {
            return Err(call_error(format!("rte_eth_dev_info_get({name})"), ret));
        }
        if conf.n_rxq == 0 || conf.n_rxq > info.max_rx_queues {
            return Err(DpdkError::Invalid(format!(
                "port {name}: {} rx queues asked, the device has 1..={}",
                conf.n_rxq, info.max_rx_queues
            )));
        }
        if conf.n_txq == 0 || conf.n_txq > info.max_tx_queues {
            return Err(DpdkError::Invalid(format!(
                "port {name}: {} tx queues asked, the device has 1..={}",
                conf.n_txq, info.max_tx_queues
            )));
        }
        let eth_conf = sys::rte_eth_conf::default();
        // SAFETY: valid port id and a zeroed (default) configuration that outlives the call.
        let ret = unsafe { sys::rte_eth_dev_configure(id, conf.n_rxq, conf.n_txq, &eth_conf) };
        if ret < 0 {
            return Err(call_error(format!("rte_eth_dev_configure({name})"), ret));
        }
        // SAFETY: valid port id.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        let socket = if socket < 0 {
            sys::SOCKET_ID_ANY
        } else {
            socket
        };
        for q in 0..conf.n_rxq {
            // SAFETY: configured port, queue < n_rxq; NULL rx_conf means the driver's
            // defaults; the pool outlives the port (PortInner holds an Arc).
            let ret = unsafe {
                sys::rte_eth_rx_queue_setup(
                    id,
                    q,
                    conf.rx_desc,
                    socket as u32,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            if ret < 0 {
                return Err(call_error(
                    format!("rte_eth_rx_queue_setup({name}, {q})"),
                    ret,
                ));
            }
        }
        for q in 0..conf.n_txq {
            // SAFETY: configured port, queue < n_txq; NULL tx_conf means defaults.
            let ret = unsafe {
                sys::rte_eth_tx_queue_setup(id, q, conf.tx_desc, socket as u32, std::ptr::null())
            };
            if ret < 0 {
                return Err(call_error(
                    format!("rte_eth_tx_queue_setup({name}, {q})"),
                    ret,
                ));
            }
        }
        // SAFETY: the port is configured with its queues set up.
        let ret = unsafe { sys::rte_eth_dev_start(id) };
        if ret < 0 {
            return Err(call_error(format!("rte_eth_dev_start({name})"), ret));
        }
        if conf.promiscuous {
            // SAFETY: started port; some virtual drivers do not support it (ignored).
            unsafe { sys::rte_eth_promiscuous_enable(id) };
        }
        Ok(EthPort { inner })
    }

    pub fn id(&self) -> u16 {
        self.inner.id
    }

    /// The DPDK device name (`net_pcap0`, `0000:01:00.0`, ...).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn n_rxq(&self) -> u16 {
        self.inner.n_rxq
    }

    pub fn n_txq(&self) -> u16 {
        self.inner.n_txq
    }

    /// The exclusive handle of rx queue `q` (an error if out of range or taken).
    pub fn rx_queue(&self, q: u16) -> Result<RxQueue> {
        self.take(q, true)?;
        Ok(RxQueue {
            port: self.inner.clone(),
            queue: q,
            _not_sync: PhantomData,
        })
    }

    /// The exclusive handle of tx queue `q`.
    pub fn tx_queue(&self, q: u16) -> Result<TxQueue> {
        self.take(q, false)?;
        Ok(TxQueue {
            port: self.inner.clone(),
            queue: q,
            _not_sync: PhantomData,
        })
    }

    fn take(&self, q: u16, rx: bool) -> Result<()> {
        let mut t = self.inner.taken.lock().unwrap_or_else(|e| e.into_inner());
        let v = if rx { &mut t.0 } else { &mut t.1 };
        let kind = if rx { "rx" } else { "tx" };
        match v.get_mut(q as usize) {
            None => Err(DpdkError::Invalid(format!(
                "port {}: no {kind} queue {q}",
                self.inner.name
            ))),
            Some(true) => Err(DpdkError::Invalid(format!(
                "port {}: {kind} queue {q} already has an owner",
                self.inner.name
            ))),
            Some(slot) => {
                *slot = true;
                Ok(())
            }
        }
    }

    pub fn link(&self) -> Link {
        let mut l = sys::rte_eth_link::default();
        // SAFETY: valid port, valid out-struct; the nowait variant does not block.
        let ret = unsafe { sys::rte_eth_link_get_nowait(self.inner.id, &mut l) };
        if ret < 0 {
            return Link::default();
        }
        Link {
            up: l.link_status() != 0,
            speed_mbps: l.link_speed,
        }
    }

    /// Statistics as the driver counts them. Readable from any thread while PMDs run
    /// (drivers keep per-queue counters; a read may be a few packets behind).
    pub fn stats(&self) -> PortStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid port, valid out-struct.
        let ret = unsafe { sys::rte_eth_stats_get(self.inner.id, &mut s) };
        if ret < 0 {
            return PortStats::default();
        }
        PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Extended statistics, by name.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>> {
        let id = self.inner.id;
        // SAFETY: a NULL array with size 0 asks for the count only.
        let n = unsafe { sys::rte_eth_xstats_get_names(id, std::ptr::null_mut(), 0) };
        if n < 0 {
            return Err(call_error("rte_eth_xstats_get_names", n));
        }
        let mut names = vec![sys::rte_eth_xstat_name::default(); n as usize];
        let mut vals = vec![sys::rte_eth_xstat::default(); n as usize];
        // SAFETY: both arrays have n elements, as passed.
        let got_names = unsafe { sys::rte_eth_xstats_get_names(id, names.as_mut_ptr(), n as u32) };
        // SAFETY: as above.
        let got = unsafe { sys::rte_eth_xstats_get(id, vals.as_mut_ptr(), n as u32) };
        if got_names < 0 || got < 0 {
            return Err(call_error("rte_eth_xstats_get", got.min(got_names)));
        }
        let count = (got.min(got_names).min(n)) as usize;
        let mut out = Vec::with_capacity(count);
        for v in vals.iter().take(count) {
            let Some(nm) = names.get(v.id as usize) else {
                continue;
            };
            // SAFETY: the driver wrote a NUL-terminated name within the fixed array
            // (RTE_ETH_XSTATS_NAME_SIZE); the array is zero-initialised, so a
            // terminator exists even if the driver wrote nothing.
            let s = unsafe { CStr::from_ptr(nm.name.as_ptr()) };
            out.push((s.to_string_lossy().into_owned(), v.value));
        }
        Ok(out)
    }

    /// Sets the link administratively down (`rte_eth_dev_set_link_down`). On a
    /// `net_tap` port the kernel interface goes down (as `ip link set NAME
    /// down`); the port keeps its queues, and its link follows the interface
    /// when the host brings it up again.
    pub fn set_link_down(&self) -> Result<()> {
        // The port id is valid while `self.inner` lives (closed only in its Drop).
        // SAFETY: a valid port id (above); the call takes no pointers.
        let ret = unsafe { sys::rte_eth_dev_set_link_down(self.inner.id) };
        if ret < 0 {
            return Err(call_error(
                format!("rte_eth_dev_set_link_down({})", self.inner.name),
                ret,
            ));
        }
        Ok(())
    }

    /// The port's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        let mut a = sys::rte_ether_addr::default();
        // SAFETY: valid port, valid out-struct.
        unsafe { sys::rte_eth_macaddr_get(self.inner.id, &mut a) };
        a.addr_bytes
    }
}

/// Exclusive handle of one rx queue. `Send` but not `Sync`: one thread polls it.
/// Keeps the port open while it exists.
pub struct RxQueue {
    port: Arc<PortInner>,
    queue: u16,
    _not_sync: PhantomData<Cell<()>>,
}

impl RxQueue {
    pub fn port_id(&self) -> u16 {
        self.port.id
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Receives up to `max` (at most [`MAX_BURST`]) packets into `burst`, which is
    /// cleared first. Returns the count.
    #[inline]
    pub fn rx_burst(&mut self, burst: &mut MbufBurst, max: usize) -> usize {
        let (port, queue) = (self.port.id, self.queue);
        // SAFETY: the driver fills at most the count given, with mbufs that become ours (fill's contract); the port is started and open while this handle (an Arc) lives; this handle is the queue's only owner (taken exclusively, not Sync).
        unsafe { burst.fill(max, |pkts, n| sys::fs_rx_burst(port, queue, pkts, n)) }
    }
}

impl Drop for RxQueue {
    fn drop(&mut self) {
        let mut t = self.port.taken.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = t.0.get_mut(self.queue as usize) {
            *s = false;
        }
    }
}

/// Exclusive handle of one tx queue. `Send` but not `Sync`.
pub struct TxQueue {
    port: Arc<PortInner>,
    queue: u16,
    _not_sync: PhantomData<Cell<()>>,
}

impl TxQueue {
    pub fn port_id(&self) -> u16 {
        self.port.id
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Sends what `buf` holds; what the port does not take (after retrying while it
    /// makes progress) is freed. `buf` is empty afterwards.
    #[inline]
    pub fn flush(&mut self, buf: &mut TxBuffer) -> TxResult {
        let (port, queue) = (self.port.id, self.queue);
        // SAFETY: the driver takes ownership of exactly the first mbufs it counts (send_all's contract); the port is started and kept open by our Arc; this handle is the queue's only owner.
        unsafe { buf.send_all(|pkts, n| sys::fs_tx_burst(port, queue, pkts, n)) }
    }
}

impl Drop for TxQueue {
    fn drop(&mut self) {
        let mut t = self.port.taken.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = t.1.get_mut(self.queue as usize) {
            *s = false;
        }
    }
}
