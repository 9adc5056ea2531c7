//! The port layer: what a PMD needs of a port, and the DPDK ethdev implementation.
//!
//! Every port type (DPDK ethdev from devargs: a PCI address or a vdev such as
//! net_pcap, net_null, net_ring, net_tap, net_af_packet; internal ports, which are
//! net_tap devices in the host kernel; vhost-user devices) hands out exclusive rx and
//! tx queue handles that a PMD owns.

use std::sync::Arc;

use dpdk_ffi::{
    EthPort, Link, MbufBurst, Mempool, PortConf, PortStats, Quiesce, RxQueue, TxBuffer, TxQueue,
    TxResult, VhostDevice, VhostRxQueue, VhostTxQueue, MAX_BURST,
};

/// One rx queue owned by a PMD.
pub trait RxPort: Send {
    /// Receives up to `max` packets into `burst` (cleared first); returns the count.
    fn rx_burst(&mut self, burst: &mut MbufBurst, max: usize) -> usize;
}

/// One tx queue owned by a PMD.
pub trait TxPort: Send {
    /// Sends what `buf` holds; frees what the port would not take.
    /// `buf` is empty afterwards.
    fn flush(&mut self, buf: &mut TxBuffer) -> TxResult;
}

/// A port of the datapath.
pub trait Port: Send + Sync {
    /// The port's kind as `ovs-vsctl` shows it (`dpdk`, ...).
    fn kind(&self) -> &'static str;
    fn n_rxq(&self) -> u16;
    fn n_txq(&self) -> u16;
    fn rx_queue(&self, q: u16) -> dpdk_ffi::Result<Box<dyn RxPort>>;
    fn tx_queue(&self, q: u16) -> dpdk_ffi::Result<Box<dyn TxPort>>;
    fn link(&self) -> Link;
    fn stats(&self) -> PortStats;
    /// The DPDK port id, where there is one.
    fn dpdk_port_id(&self) -> Option<u16>;
}

impl RxPort for RxQueue {
    #[inline]
    fn rx_burst(&mut self, burst: &mut MbufBurst, max: usize) -> usize {
        RxQueue::rx_burst(self, burst, max)
    }
}

impl TxPort for TxQueue {
    #[inline]
    fn flush(&mut self, buf: &mut TxBuffer) -> TxResult {
        TxQueue::flush(self, buf)
    }
}

/// What a PMD holds for a datapath port number whose port was removed at runtime:
/// packets still sent there (by a megaflow not yet gone) are freed and counted as
/// dropped.
pub struct ClosedTx;

impl TxPort for ClosedTx {
    fn flush(&mut self, buf: &mut TxBuffer) -> TxResult {
        buf.discard()
    }
}

/// A tunnel's datapath port (OVS's `vxlan_sys_4789`, `gre_sys`,
/// `genev_sys_6081`): no device. Packets enter it only by a tunnel pop, which
/// classifies the inner frame as received here; nothing is ever sent to it (a
/// tunnel output is a push), so its tx queues free and count what they get.
pub struct TunnelPort {
    /// `vxlan`, `gre` or `geneve`.
    kind: &'static str,
    n_txq: u16,
}

impl TunnelPort {
    /// A tunnel port of `kind` with `n_txq` (closed) tx queues.
    pub fn new(kind: &'static str, n_txq: u16) -> TunnelPort {
        TunnelPort { kind, n_txq }
    }
}

impl Port for TunnelPort {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn n_rxq(&self) -> u16 {
        0
    }
    fn n_txq(&self) -> u16 {
        self.n_txq
    }
    fn rx_queue(&self, _q: u16) -> dpdk_ffi::Result<Box<dyn RxPort>> {
        Err(dpdk_ffi::DpdkError::Invalid(
            "a tunnel port has no rx queue".into(),
        ))
    }
    fn tx_queue(&self, _q: u16) -> dpdk_ffi::Result<Box<dyn TxPort>> {
        Ok(Box::new(ClosedTx))
    }
    fn link(&self) -> Link {
        Link {
            up: true,
            speed_mbps: 0,
        }
    }
    fn stats(&self) -> PortStats {
        PortStats::default()
    }
    fn dpdk_port_id(&self) -> Option<u16> {
        None
    }
}

/// A DPDK ethdev port (type `dpdk`).
pub struct DpdkPort {
    eth: EthPort,
    /// `dpdk`, `internal` for an [`InternalPort`], `dpdkvhostuser[client]` for a
    /// [`VhostPort`].
    kind: &'static str,
    /// For a `net_af_packet` device: the kernel interface whose carrier is the
    /// port's link (see [`af_packet_iface`]).
    carrier_iface: Option<String>,
}

/// The `iface=` of a `net_af_packet` device's arguments. DPDK 22.11's
/// af_packet driver reports its link up from `dev_start` on and never reads
/// the interface again (its `link_update` does nothing), so a veth whose peer
/// went down still shows up; the port's link is read from the kernel's
/// `/sys/class/net/IFACE/carrier` instead.
pub fn af_packet_iface(devargs: &str) -> Option<String> {
    let mut parts = devargs.split(',');
    if !parts.next()?.starts_with("net_af_packet") {
        return None;
    }
    parts
        .find_map(|kv| kv.strip_prefix("iface="))
        .map(str::to_string)
}

/// Empties the rx queues of a just-opened `net_af_packet` device. DPDK
/// 22.11's driver opens its socket for every protocol, sets up the receive
/// ring, and only then binds the socket to its interface: until the bind the
/// ring takes frames of every interface of the host. One such frame, a
/// neighbour's, polled as if received on the new port, teaches MAC learning
/// that the neighbour is behind it (`tests/netns_bridge.rs`: a host's
/// address learned on a port added at runtime, and its traffic sent there
/// until the next frame from it). The ring holds at most `ring` frames; what
/// arrives while it is emptied is dropped with the strays.
fn drain_strays(eth: &EthPort, ring: u16) -> dpdk_ffi::Result<()> {
    let mut burst = MbufBurst::new();
    for q in 0..eth.n_rxq() {
        let mut rxq = eth.rx_queue(q)?;
        for _ in 0..=usize::from(ring) / MAX_BURST {
            if rxq.rx_burst(&mut burst, MAX_BURST) == 0 {
                break;
            }
            burst.clear();
        }
    }
    Ok(())
}

/// The carrier of kernel interface `iface`: `carrier` reads 1; an interface
/// that is administratively down (the file then fails to read) or gone is down.
fn kernel_carrier(iface: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/carrier"))
        .is_ok_and(|s| s.trim() == "1")
}

impl DpdkPort {
    /// Hot-plugs and starts the device `devargs`.
    pub fn open(devargs: &str, conf: &PortConf, pool: Arc<Mempool>) -> dpdk_ffi::Result<DpdkPort> {
        let eth = EthPort::open(devargs, conf, pool)?;
        let carrier_iface = af_packet_iface(devargs);
        if carrier_iface.is_some() {
            drain_strays(&eth, conf.rx_desc)?;
        }
        Ok(DpdkPort {
            eth,
            kind: "dpdk",
            carrier_iface,
        })
    }

    /// Wraps an already started port (e.g. one built over rings in tests).
    pub fn from_eth(eth: EthPort) -> DpdkPort {
        DpdkPort {
            eth,
            kind: "dpdk",
            carrier_iface: None,
        }
    }

    pub fn eth(&self) -> &EthPort {
        &self.eth
    }
}

impl Port for DpdkPort {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn n_rxq(&self) -> u16 {
        self.eth.n_rxq()
    }
    fn n_txq(&self) -> u16 {
        self.eth.n_txq()
    }
    fn rx_queue(&self, q: u16) -> dpdk_ffi::Result<Box<dyn RxPort>> {
        Ok(Box::new(self.eth.rx_queue(q)?))
    }
    fn tx_queue(&self, q: u16) -> dpdk_ffi::Result<Box<dyn TxPort>> {
        Ok(Box::new(self.eth.tx_queue(q)?))
    }
    fn link(&self) -> Link {
        let link = self.eth.link();
        match &self.carrier_iface {
            Some(iface) => Link {
                up: kernel_carrier(iface),
                ..link
            },
            None => link,
        }
    }
    fn stats(&self) -> PortStats {
        self.eth.stats()
    }
    fn dpdk_port_id(&self) -> Option<u16> {
        Some(self.eth.id())
    }
}

/// An internal port (OVS `type=internal`, and every bridge's own port): a DPDK
/// `net_tap` device whose kernel interface the host configures (an IP, routes).
///
/// Like OVS's, its interface starts administratively down: the kernel refuses
/// frames the switch sends to it (the driver counts tx errors, the PMD tx
/// drops) and the host sends nothing until `ip link set NAME up`. Its link state is the
/// interface's.
pub struct InternalPort;

impl InternalPort {
    /// Hot-plugs `devargs` (`net_tapN,iface=NAME`), starts it and sets its
    /// interface down: a [`DpdkPort`] of kind `internal`.
    ///
    /// The kernel spreads the frames it sends over every queue of a
    /// multi-queue tap, so the port gets as many rx queues as tx queues (one per
    /// PMD) even when fewer were asked for: each queue is polled.
    pub fn open(devargs: &str, conf: &PortConf, pool: Arc<Mempool>) -> dpdk_ffi::Result<DpdkPort> {
        let n = conf.n_rxq.max(conf.n_txq);
        let conf = PortConf {
            n_rxq: n,
            n_txq: n,
            ..conf.clone()
        };
        let eth = EthPort::open(devargs, &conf, pool)?;
        eth.set_link_down()?;
        Ok(DpdkPort {
            eth,
            kind: "internal",
            carrier_iface: None,
        })
    }
}

/// A vhost-user port (OVS `type=dpdkvhostuser` and `dpdkvhostuserclient`): a
/// DPDK `net_vhost` device, the backend of a VM's virtio-net NIC, whose bursts
/// go straight through librte_vhost ([`VhostDevice`]).
///
/// It gets `queues` for the larger of its rx queues and the PMDs' tx queues
/// (the device has as many of each); a guest that enables fewer queue pairs
/// leaves the others empty. Its link is up while a guest driver is attached.
/// Partial checksums a guest leaves to the backend (VIRTIO_NET_F_CSUM) are
/// completed in software as packets are received; TSO is not offered to guests
/// (`tso=0`, the driver's default).
pub struct VhostPort {
    dev: VhostDevice,
    client: bool,
}

impl VhostPort {
    /// Hot-plugs `devargs` (`net_vhostN,iface=SOCKET[,client=1]`) with its
    /// queue count and starts it. When its guest goes away, `quiesce` waits for
    /// the PMDs to stop using the device before it is freed.
    pub fn open(
        devargs: &str,
        conf: &PortConf,
        pool: Arc<Mempool>,
        client: bool,
        quiesce: Quiesce,
    ) -> dpdk_ffi::Result<VhostPort> {
        let queues = conf.n_rxq.max(conf.n_txq).max(1);
        let dev = VhostDevice::open(&format!("{devargs},queues={queues}"), conf, pool)?;
        dev.set_quiesce(quiesce);
        Ok(VhostPort { dev, client })
    }
}

impl RxPort for VhostRxQueue {
    #[inline]
    fn rx_burst(&mut self, burst: &mut MbufBurst, max: usize) -> usize {
        VhostRxQueue::rx_burst(self, burst, max)
    }
}

impl TxPort for VhostTxQueue {
    #[inline]
    fn flush(&mut self, buf: &mut TxBuffer) -> TxResult {
        VhostTxQueue::flush(self, buf)
    }
}

impl Port for VhostPort {
    fn kind(&self) -> &'static str {
        if self.client {
            "dpdkvhostuserclient"
        } else {
            "dpdkvhostuser"
        }
    }
    fn n_rxq(&self) -> u16 {
        self.dev.eth().n_rxq()
    }
    fn n_txq(&self) -> u16 {
        self.dev.eth().n_txq()
    }
    fn rx_queue(&self, q: u16) -> dpdk_ffi::Result<Box<dyn RxPort>> {
        Ok(Box::new(self.dev.rx_queue(q)?))
    }
    fn tx_queue(&self, q: u16) -> dpdk_ffi::Result<Box<dyn TxPort>> {
        Ok(Box::new(self.dev.tx_queue(q)?))
    }
    fn link(&self) -> Link {
        self.dev.link()
    }
    fn stats(&self) -> PortStats {
        self.dev.stats()
    }
    fn dpdk_port_id(&self) -> Option<u16> {
        Some(self.dev.eth().id())
    }
}
