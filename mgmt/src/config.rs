//! The daemon's configuration: `ferroswitch run --config FILE.toml`.
//!
//! Every key has a default, so an empty file is a valid configuration (no bridges).
//! Unknown keys are errors. Every error names the field path and the reason, e.g.
//! `pmd.cpus[0]: CPU 7 out of range (this machine has CPUs 0-1)`.
//!
//! Loading is two steps: [`Config::from_toml_str`] / [`Config::load`] check syntax,
//! types and unknown keys; [`Config::validate`] checks meaning against the host
//! ([`HostFacts`]): CPU ranges, hugepages, port types, devargs, names. The daemon
//! does both before it starts anything.
//!
//! ```toml
//! [dpdk]
//! eal_args = []                  # extra EAL args appended verbatim
//! hugepages = true               # false => EAL gets --no-huge -m <memory_mb>
//! memory_mb = 512                # only used with hugepages = false
//! file_prefix = "ferroswitch"    # --file-prefix
//! log_level = "notice"           # emerg..debug or 1..8
//! mbufs = 16383                  # mempool size
//! mbuf_cache = 256
//!
//! [pmd]
//! cpus = []                      # default: every CPU except mgmt_cpu
//! mgmt_cpu = 0                   # EAL main lcore + management thread
//! burst = 32                     # 1..=64
//! emc_entries = 8192             # per PMD, 0 disables the EMC
//! emc_insert_inv_prob = 100      # insert on 1 in N megaflow hits
//! simple_match = true            # no parse for in_port/dl_type-only megaflows
//! megaflow_idle_ms = 10000       # idle megaflows removed after this
//! flow_limit = 200000            # most megaflows kept
//!
//! [control]
//! socket = "/var/run/ferroswitch/ferroswitch.ctl"
//!
//! [metrics]
//! listen = "127.0.0.1:9477"      # "" or "off" disables
//! console = true                 # per-second rate line on stdout
//!
//! [[bridge]]
//! name = "br0"
//! flows = ["priority=10,in_port=dpdk0 actions=output:dpdk1"]  # on top of
//!                                # "priority=0 actions=NORMAL", which every bridge
//!                                # starts with (a priority=0 catch-all replaces it)
//! mac_aging_time = 300           # seconds, 15..=3600 (OVS other_config:mac-aging-time)
//! mac_table_size = 8192          # 10..=1000000 (OVS other_config:mac-table-size)
//!   [[bridge.port]]
//!   name = "dpdk0"
//!   type = "dpdk"                # or "internal": a tap device of the port's name
//!                                # in the host (no options); every bridge also has
//!                                # one of its own name, OpenFlow port LOCAL;
//!                                # or "patch" with options = { peer = "NAME" }:
//!                                # joined to the patch port NAME of another
//!                                # bridge (no device, no queues);
//!                                # or "vxlan", "gre", "geneve": a tunnel port,
//!                                # options = { remote_ip = "172.168.1.2", key = "flow" }
//!                                # (remote_ip IPv4 or "flow", local_ip, key/in_key/
//!                                # out_key N or "flow", dst_port, tos N or "inherit",
//!                                # ttl N or "inherit", df_default, csum; OVS's
//!                                # defaults), no device of its own: the datapath has
//!                                # one port per tunnel type and UDP port
//!   ofport = 1                   # optional
//!   n_rxq = 1                    # 1..=16
//!   options = { dpdk-devargs = "net_pcap0,rx_pcap=/tmp/in.pcap" }
//!   tag = 10                     # NORMAL's VLANs, as OVS's Port table: an access
//!   trunks = [10, 20]            # port of VLAN 10, or a trunk of these VLANs
//!   vlan_mode = "access"         # access, trunk, native-tagged, native-untagged
//!   [[bridge.port]]              # a bond: a port of several interfaces
//!   name = "bond0"
//!   bond_mode = "active-backup"  # or balance-slb, balance-tcp (needs lacp)
//!   lacp = "active"              # off (default), active, passive
//!   other_config = { lacp-time = "fast" }   # fast (1 s) or slow (30 s, default)
//!     [[bridge.port.interface]]  # at least 2; each its own datapath and OpenFlow port
//!     name = "eth0"
//!     type = "dpdk"              # the only type a member may have
//!     ofport = 5                 # optional
//!     n_rxq = 1
//!     options = { dpdk-devargs = "net_af_packet0,iface=veth0" }
//!   [[bridge.forward]]
//!   in_port = "dpdk0"
//!   output = "dpdk1"
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pipeline::ofproto::bond::BondMode;
use pipeline::ofproto::normal::{
    VlanError, VlanMode, VlanSet, MAC_MAX_AGING_SECS, MAC_MAX_MAX, MAC_MIN_AGING_SECS, MAC_MIN_MAX,
};
use pipeline::ofproto::syntax::{parse_flow, PortMap};
use pipeline::ofproto::table::Tables;
use pipeline::ofproto::tnl::{self, TunnelPortConfig};
use pipeline::tunnel::TunnelKind;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Default control socket path.
pub const DEFAULT_CONTROL_SOCKET: &str = "/var/run/ferroswitch/ferroswitch.ctl";
/// Default metrics listen address.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9477";
/// Program name put first in the EAL argv.
pub const EAL_PROGRAM_NAME: &str = "ferroswitch";

/// Port types accepted today.
pub const SUPPORTED_PORT_TYPES: &[&str] = &[
    "dpdk",
    "internal",
    "patch",
    "dpdkvhostuser",
    "dpdkvhostuserclient",
    "vxlan",
    "gre",
    "geneve",
];
/// Port types Open vSwitch has that ferroswitch will support but does not yet.
pub const PLANNED_PORT_TYPES: &[&str] = &[];
/// vdev drivers accepted in `options.dpdk-devargs` (`net_<driver><N>`).
pub const VDEV_DRIVERS: &[&str] = &[
    "pcap",
    "null",
    "ring",
    "tap",
    "af_packet",
    "vhost",
    "virtio_user",
];
/// Default `dpdk.vhost_sock_dir`.
pub const DEFAULT_VHOST_SOCK_DIR: &str = "/var/run/ferroswitch";
/// The option of `type = "dpdkvhostuserclient"`: the socket QEMU listens on.
pub const VHOST_SERVER_PATH: &str = "vhost-server-path";
/// Longest unix socket path (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Option keys accepted for `type = "patch"`.
pub const PATCH_PORT_OPTIONS: &[&str] = &["peer"];
/// Option keys accepted for `type = "dpdk"`.
pub const DPDK_PORT_OPTIONS: &[&str] = &["dpdk-devargs"];
/// `other_config` keys accepted on a bond port.
pub const BOND_OTHER_CONFIG: &[&str] = &["lacp-time"];
/// The `other_config` key pinning a port's rx queues to PMD CPUs
/// (`"QUEUE:CPU,..."`), as OVS's Interface `other_config:pmd-rxq-affinity`.
pub const PMD_RXQ_AFFINITY: &str = "pmd-rxq-affinity";

/// Largest `pmd.burst` (the datapath's batch arrays hold this many packets).
pub const MAX_BURST: usize = 64;
/// Largest `n_rxq` per port.
pub const MAX_RXQ: u16 = 16;
/// Largest OpenFlow port number a port may request (OFPP_MAX is 0xff00).
pub const MAX_OFPORT: u32 = 0xfeff;
/// The OpenFlow port number of a bridge's own internal port (OVS `OFPP_LOCAL`,
/// `LOCAL` in flows), as the slow path numbers ports (32-bit).
pub const OFPORT_LOCAL: u32 = pipeline::flow_key::OFPP_LOCAL;
/// [`OFPORT_LOCAL`] as OVS's database shows it (`ofport: 65534`, OpenFlow 1.0's
/// 16-bit `OFPP_LOCAL`).
pub const OFPORT_LOCAL_OVSDB: u32 = 0xfffe;

/// The OpenFlow port number as `ovs-vsctl` and `--json` output show it:
/// [`OFPORT_LOCAL`] is 65534, others are themselves.
pub fn ofport_display(ofport: u32) -> u32 {
    if ofport == OFPORT_LOCAL {
        OFPORT_LOCAL_OVSDB
    } else {
        ofport
    }
}
/// DPDK's `RTE_MEMPOOL_CACHE_MAX_SIZE`.
pub const MAX_MBUF_CACHE: u32 = 512;

/// A configuration error: the field path and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// A field has a bad value, or the file has a bad key or syntax.
    #[error("{path}: {reason}")]
    Invalid {
        /// Field path, e.g. `pmd.cpus[0]` or `bridge[0].port[1] "dpdk1"`.
        path: String,
        /// What is wrong, e.g. `CPU 7 out of range (this machine has CPUs 0-1)`.
        reason: String,
    },
    /// The file could not be read.
    #[error("cannot read config {}: {reason}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The file was read but its content is invalid.
    #[error("{}: {inner}", file.display())]
    InFile {
        /// The file.
        file: PathBuf,
        /// The error in its content.
        inner: Box<ConfigError>,
    },
}

impl ConfigError {
    /// The field path (`pmd.cpus[0]`), or `None` for a file that cannot be read.
    pub fn path(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { path, .. } => Some(path),
            ConfigError::Read { .. } => None,
            ConfigError::InFile { inner, .. } => inner.path(),
        }
    }

    /// The reason alone, without the path.
    pub fn reason(&self) -> &str {
        match self {
            ConfigError::Invalid { reason, .. } | ConfigError::Read { reason, .. } => reason,
            ConfigError::InFile { inner, .. } => inner.reason(),
        }
    }

    /// The error for `--json` output:
    /// `{"error": <Display>, "file": ..., "path": ..., "reason": ...}`.
    pub fn to_json(&self) -> serde_json::Value {
        let file = match self {
            ConfigError::Read { file, .. } | ConfigError::InFile { file, .. } => {
                Some(file.display().to_string())
            }
            ConfigError::Invalid { .. } => None,
        };
        serde_json::json!({
            "error": self.to_string(),
            "file": file,
            "path": self.path(),
            "reason": self.reason(),
        })
    }

    pub(crate) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[dpdk]`: EAL settings.
    pub dpdk: DpdkConfig,
    /// `[pmd]`: PMD threads.
    pub pmd: PmdConfig,
    /// `[control]`: control socket.
    pub control: ControlConfig,
    /// `[metrics]`: Prometheus endpoint and console line.
    pub metrics: MetricsConfig,
    /// `[tunnel]`: native tunneling's tables.
    pub tunnel: TunnelConfig,
    /// `[[bridge]]`: bridges and their ports.
    #[serde(rename = "bridge")]
    pub bridges: Vec<BridgeConfig>,
}

/// `[tunnel]`: native tunneling's route and neighbor tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TunnelConfig {
    /// `[tunnel.neighbor]`: the neighbor (ARP) cache (`aging_time`, seconds a
    /// learned entry lives unused; 900 as in OVS).
    pub neighbor: crate::neigh::NeighConfig,
}

/// `[dpdk]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpdkConfig {
    /// Extra EAL arguments, appended verbatim after the generated ones.
    pub eal_args: Vec<String>,
    /// Use hugepages; `false` runs EAL with `--no-huge -m <memory_mb>`.
    pub hugepages: bool,
    /// Memory in MB when `hugepages = false`.
    pub memory_mb: u32,
    /// EAL `--file-prefix` (hugepage files and runtime dir name).
    pub file_prefix: String,
    /// DPDK log level: `emerg`, `alert`, `crit`, `err`, `warning`, `notice`,
    /// `info`, `debug` or `1`..`8`.
    pub log_level: String,
    /// Number of mbufs in the packet mempool.
    pub mbufs: u32,
    /// Per-lcore mempool cache size.
    pub mbuf_cache: u32,
    /// Where `type = "dpdkvhostuser"` ports make their sockets (one per port,
    /// named after it), as OVS's `other_config:vhost-sock-dir`.
    pub vhost_sock_dir: PathBuf,
}

impl Default for DpdkConfig {
    fn default() -> Self {
        Self {
            eal_args: Vec::new(),
            hugepages: true,
            memory_mb: 512,
            file_prefix: "ferroswitch".to_string(),
            log_level: "notice".to_string(),
            mbufs: 16383,
            mbuf_cache: 256,
            vhost_sock_dir: PathBuf::from(DEFAULT_VHOST_SOCK_DIR),
        }
    }
}

/// `[pmd]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PmdConfig {
    /// CPUs for PMD threads, one thread each. Empty: every CPU except `mgmt_cpu`.
    pub cpus: Vec<usize>,
    /// CPU of the EAL main lcore and the management thread.
    pub mgmt_cpu: usize,
    /// Packets per rx burst, 1..=64.
    pub burst: usize,
    /// Exact-match cache slots per PMD (0 disables the EMC), at most 1048576.
    pub emc_entries: usize,
    /// Insert into the EMC on 1 in N megaflow hits (OVS's `emc-insert-inv-prob`;
    /// 1 = always, 0 = never).
    pub emc_insert_inv_prob: u32,
    /// Classify packets of ports whose megaflows only match in_port, dl_type,
    /// VLAN and fragment bits without parsing them (OVS's simple match).
    pub simple_match: bool,
    /// A megaflow with no packets for this many milliseconds is removed.
    pub megaflow_idle_ms: u64,
    /// Most megaflows kept (OVS's `flow-limit`); the least recently active go first.
    pub flow_limit: usize,
}

impl Default for PmdConfig {
    fn default() -> Self {
        Self {
            cpus: Vec::new(),
            mgmt_cpu: 0,
            burst: 32,
            emc_entries: 8192,
            emc_insert_inv_prob: 100,
            simple_match: true,
            megaflow_idle_ms: 10_000,
            flow_limit: 200_000,
        }
    }
}

/// `[control]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Unix socket path served for `ferroswitch ctl`.
    pub socket: PathBuf,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` for `GET /metrics`; `""` or `"off"` disables it.
    pub listen: String,
    /// Print a rate line on stdout every second.
    pub console: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_METRICS_LISTEN.to_string(),
            console: true,
        }
    }
}

impl MetricsConfig {
    /// The address to listen on, or `None` when metrics are disabled.
    pub fn listen_addr(&self) -> Option<&str> {
        match self.listen.trim() {
            "" | "off" => None,
            addr => Some(addr),
        }
    }
}

/// `[[bridge]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeConfig {
    /// Bridge name.
    pub name: String,
    /// `[[bridge.port]]`.
    #[serde(rename = "port")]
    pub ports: Vec<PortConfig>,
    /// `[[bridge.forward]]`: static port-to-port forwarding, bypassing the
    /// OpenFlow tables for the ports named.
    #[serde(rename = "forward")]
    pub forwards: Vec<ForwardConfig>,
    /// OpenFlow flows in `ovs-ofctl add-flow` syntax, added at start (all or
    /// nothing) on top of the flow every bridge starts with, `priority=0
    /// actions=NORMAL` (a flow with the same match and priority replaces it, e.g.
    /// `priority=0 actions=drop`). Port names may stand for OpenFlow port numbers.
    pub flows: Vec<String>,
    /// Seconds a learned MAC stays without frames from it, 15..=3600; default
    /// 300 (OVS `other_config:mac-aging-time`).
    pub mac_aging_time: Option<u32>,
    /// Most learned MACs, 10..=1000000; default 8192 (OVS
    /// `other_config:mac-table-size`).
    pub mac_table_size: Option<usize>,
}

impl BridgeConfig {
    /// The bridge's ports by name, for flow syntax (its own port, named after
    /// the bridge, is `LOCAL`).
    pub fn portmap(&self) -> PortMap {
        self.ofports().into_iter().collect()
    }

    /// The bridge's own internal port, OVS's bridge local port: named after the
    /// bridge, OpenFlow port `LOCAL` ([`OFPORT_LOCAL`]), a trunk of every VLAN.
    /// Every bridge has one; the config cannot declare a port of that name.
    pub fn local_port(&self) -> PortConfig {
        PortConfig {
            name: self.name.clone(),
            port_type: "internal".to_string(),
            ..PortConfig::default()
        }
    }

    /// Every interface of the bridge as a port of its own, in order: a plain
    /// port, or each member of a bond ([`PortConfig::interface_ports`]); not
    /// the bridge's own port. Each is a datapath port with an OpenFlow number.
    pub fn interfaces(&self) -> Vec<PortConfig> {
        self.ports
            .iter()
            .flat_map(PortConfig::interface_ports)
            .collect()
    }

    /// Every port of the bridge: the configured ports in order, then
    /// [`BridgeConfig::local_port`].
    pub fn all_ports(&self) -> Vec<PortConfig> {
        let mut v = self.ports.clone();
        v.push(self.local_port());
        v
    }
}

/// A port as the datapath runs it ([`Config::datapath_ports`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathPort {
    /// The bridge's name.
    pub bridge: String,
    /// The port, as configured (or made: the bridge's local port).
    pub port: PortConfig,
    /// Its OpenFlow port number in the bridge ([`OFPORT_LOCAL`] for the
    /// bridge's own port).
    pub ofport: u32,
    /// The DPDK device: `options.dpdk-devargs`, or `net_tapN,iface=NAME` for an
    /// internal port.
    pub devargs: String,
    /// The bond (port) this interface is a member of; `port` is then the
    /// member interface.
    pub bond: Option<String>,
    /// A tunnel datapath port (`vxlan_sys_4789`, ...): its kind and UDP port
    /// (0 for GRE). It belongs to no bridge (`bridge` is empty): every tunnel
    /// port of that kind and UDP port shares it.
    pub tunnel: Option<(TunnelKind, u16)>,
}

/// `[[bridge.port.interface]]`: a member of a bond port (OVS's Interface
/// table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Interface name, unique among all ports and interfaces.
    pub name: String,
    /// Interface type; `dpdk` (the default) only.
    #[serde(rename = "type")]
    pub iface_type: String,
    /// Requested OpenFlow port number; default: lowest free.
    pub ofport: Option<u32>,
    /// Rx queues, 1..=16.
    pub n_rxq: u16,
    /// `dpdk-devargs`.
    pub options: BTreeMap<String, String>,
}

impl Default for InterfaceConfig {
    fn default() -> Self {
        InterfaceConfig {
            name: String::new(),
            iface_type: "dpdk".to_string(),
            ofport: None,
            n_rxq: 1,
            options: BTreeMap::new(),
        }
    }
}

/// LACP on a bond (OVS `Port` `lacp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LacpMode {
    /// No LACP.
    Off,
    /// Sends LACPDUs whether or not the partner does.
    Active,
    /// Answers a partner's LACPDUs only.
    Passive,
}

/// A bond port's settings, checked ([`PortConfig::bond_settings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BondSettings {
    /// `bond_mode`; default active-backup.
    pub mode: BondMode,
    /// `lacp`; default off.
    pub lacp: LacpMode,
    /// `other_config:lacp-time=fast`: LACPDUs every second, else every 30 s.
    pub lacp_fast: bool,
}

/// `[[bridge.port]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortConfig {
    /// Port (and interface) name, unique across all bridges.
    pub name: String,
    /// Port type; default `dpdk`.
    #[serde(rename = "type")]
    pub port_type: String,
    /// Requested OpenFlow port number (`ofport_request`); default: lowest free.
    pub ofport: Option<u32>,
    /// Rx queues, 1..=16.
    pub n_rxq: u16,
    /// Type-specific options, e.g. `dpdk-devargs`.
    pub options: BTreeMap<String, String>,
    /// The port's VLAN for `NORMAL` (OVS `tag`): without `vlan_mode`, makes an
    /// access port of that VLAN.
    pub tag: Option<u16>,
    /// The VLANs a trunk carries (OVS `trunks`); empty or absent: all.
    pub trunks: Vec<u16>,
    /// OVS `vlan_mode`: `access`, `trunk`, `native-tagged` or
    /// `native-untagged`; default: `access` with a `tag`, else `trunk`.
    pub vlan_mode: Option<String>,
    /// `[[bridge.port.interface]]`: with two or more, the port is a bond of
    /// these interfaces (and has no `type` or `options` of its own).
    #[serde(rename = "interface")]
    pub interfaces: Vec<InterfaceConfig>,
    /// A bond's `bond_mode`: `active-backup` (default), `balance-slb`,
    /// `balance-tcp`.
    pub bond_mode: Option<String>,
    /// A bond's `lacp`: `off` (default), `active`, `passive`.
    pub lacp: Option<String>,
    /// A bond's `other_config`: `lacp-time` (`fast` or `slow`).
    pub other_config: BTreeMap<String, String>,
}

impl Default for PortConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            port_type: "dpdk".to_string(),
            ofport: None,
            n_rxq: 1,
            options: BTreeMap::new(),
            tag: None,
            trunks: Vec::new(),
            vlan_mode: None,
            interfaces: Vec::new(),
            bond_mode: None,
            lacp: None,
            other_config: BTreeMap::new(),
        }
    }
}

impl PortConfig {
    /// OVS `type=internal`: a tap device of the port's name in the host kernel.
    pub fn is_internal(&self) -> bool {
        self.port_type == "internal"
    }

    /// OVS `type=dpdkvhostuser` (the switch owns the socket) or
    /// `dpdkvhostuserclient` (QEMU owns it, the switch connects and reconnects).
    pub fn is_vhost(&self) -> bool {
        self.port_type == "dpdkvhostuser" || self.port_type == "dpdkvhostuserclient"
    }

    /// `type=dpdkvhostuserclient`.
    pub fn is_vhost_client(&self) -> bool {
        self.port_type == "dpdkvhostuserclient"
    }

    /// OVS `type=patch`: no device; joins its bridge to the bridge of its
    /// `options.peer`.
    pub fn is_patch(&self) -> bool {
        self.port_type == "patch"
    }

    /// OVS `type=vxlan`, `gre` or `geneve`: an OpenFlow port with no device
    /// of its own ([`PortConfig::tunnel_config`]).
    pub fn is_tunnel(&self) -> bool {
        tnl::kind_of_type(&self.port_type).is_some()
    }

    /// A tunnel port's options, checked; the error names the option and the
    /// reason (`options.remote_ip: ...`).
    pub fn tunnel_config(&self) -> Result<TunnelPortConfig, String> {
        let kind = tnl::kind_of_type(&self.port_type)
            .ok_or_else(|| format!("type \"{}\" is not a tunnel", self.port_type))?;
        TunnelPortConfig::from_options(
            kind,
            self.options.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .map_err(|e| e.to_string())
    }

    /// Whether the port has a device of its own in the datapath (not a patch
    /// or tunnel port).
    pub fn has_device(&self) -> bool {
        !self.is_patch() && !self.is_tunnel()
    }

    /// `options.peer` of a patch port.
    pub fn peer(&self) -> Option<&str> {
        self.options.get("peer").map(String::as_str)
    }

    /// A bond: a port with interfaces of its own.
    pub fn is_bond(&self) -> bool {
        !self.interfaces.is_empty()
    }

    /// The port's interfaces as ports of their own (what the datapath runs): a
    /// bond's members, or the port itself.
    pub fn interface_ports(&self) -> Vec<PortConfig> {
        if !self.is_bond() {
            return vec![self.clone()];
        }
        self.interfaces
            .iter()
            .map(|i| PortConfig {
                name: i.name.clone(),
                port_type: i.iface_type.clone(),
                ofport: i.ofport,
                n_rxq: i.n_rxq,
                options: i.options.clone(),
                ..PortConfig::default()
            })
            .collect()
    }

    /// A bond's `bond_mode`, `lacp` and `other_config`, checked; the error names
    /// the field and the reason.
    pub fn bond_settings(&self) -> Result<BondSettings, String> {
        let mode = match self.bond_mode.as_deref() {
            None => BondMode::ActiveBackup,
            Some(m) => BondMode::parse(m).ok_or_else(|| {
                format!("bond_mode: {m:?} is not one of active-backup, balance-slb, balance-tcp")
            })?,
        };
        let lacp = match self.lacp.as_deref() {
            None | Some("off") => LacpMode::Off,
            Some("active") => LacpMode::Active,
            Some("passive") => LacpMode::Passive,
            Some(l) => return Err(format!("lacp: {l:?} is not one of off, active, passive")),
        };
        if let Some(k) = self
            .other_config
            .keys()
            .find(|k| !BOND_OTHER_CONFIG.contains(&k.as_str()))
        {
            return Err(format!(
                "other_config.{k}: unknown key (expected {})",
                BOND_OTHER_CONFIG.join(", ")
            ));
        }
        let lacp_fast = match self.other_config.get("lacp-time").map(String::as_str) {
            None | Some("slow") => false,
            Some("fast") => true,
            Some(t) => {
                return Err(format!(
                    "other_config.lacp-time: {t:?} is not one of fast, slow"
                ))
            }
        };
        Ok(BondSettings {
            mode,
            lacp,
            lacp_fast,
        })
    }

    /// `other_config.pmd-rxq-affinity` as (queue, CPU) pairs: `"0:3,1:7"`
    /// pins queue 0 to the PMD on CPU 3 and queue 1 to CPU 7. Each queue must
    /// be below `n_rxq` and appear once.
    pub fn rxq_affinity(&self) -> Result<Vec<(u16, usize)>, String> {
        let Some(text) = self.other_config.get(PMD_RXQ_AFFINITY) else {
            return Ok(Vec::new());
        };
        let field = format!("other_config.{PMD_RXQ_AFFINITY}");
        let mut out: Vec<(u16, usize)> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let pair = item.split_once(':').and_then(|(q, c)| {
                Some((
                    q.trim().parse::<u16>().ok()?,
                    c.trim().parse::<usize>().ok()?,
                ))
            });
            let Some((q, cpu)) = pair else {
                return Err(format!(
                    "{field}: {item:?} is not QUEUE:CPU (e.g. \"0:1,1:1\")"
                ));
            };
            if q >= self.n_rxq {
                return Err(format!(
                    "{field}: queue {q} does not exist (n_rxq = {})",
                    self.n_rxq
                ));
            }
            if out.iter().any(|&(oq, _)| oq == q) {
                return Err(format!("{field}: queue {q} is pinned twice"));
            }
            out.push((q, cpu));
        }
        Ok(out)
    }

    /// `options.dpdk-devargs`, if set.
    pub fn devargs(&self) -> Option<&str> {
        self.options.get("dpdk-devargs").map(String::as_str)
    }

    /// The port's VLAN mode from `tag`, `trunks` and `vlan_mode`, as OVS derives
    /// it ([`VlanMode::from_ovs`]). The error names the field and the reason.
    pub fn vlan_mode(&self) -> Result<VlanMode, String> {
        let mut trunks = VlanSet::new();
        for (i, &vid) in self.trunks.iter().enumerate() {
            trunks
                .insert(vid)
                .map_err(|e| format!("trunks[{i}]: {e}"))?;
        }
        VlanMode::from_ovs(self.vlan_mode.as_deref(), self.tag, Some(trunks)).map_err(|e| match e {
            VlanError::BadVid(_) => format!("tag: {e}"),
            VlanError::UnknownMode(m) => format!(
                "vlan_mode: {m:?} is not one of access, trunk, native-tagged, native-untagged"
            ),
        })
    }
}

/// `[[bridge.forward]]`: every packet received on `in_port` goes out `output`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardConfig {
    /// Input port name.
    pub in_port: String,
    /// Output port name.
    pub output: String,
}

/// What the host offers, as far as validation needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    /// CPUs are numbered `0..ncpus`.
    pub ncpus: usize,
    /// `HugePages_Free` from /proc/meminfo (default hugepage size).
    pub hugepages_free: u64,
    /// A hugetlbfs is mounted (/proc/mounts).
    pub hugetlbfs_mounted: bool,
}

impl HostFacts {
    /// Read the facts from /sys and /proc. Unreadable files count as "none"
    /// (no hugepages, not mounted); the CPU count falls back to
    /// `available_parallelism`, then 1.
    pub fn probe() -> HostFacts {
        let ncpus = std::fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|s| parse_cpu_list_max(&s))
            .map(|max| max + 1)
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1);
        let hugepages_free = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| parse_meminfo_hugepages_free(&s))
            .unwrap_or(0);
        let hugetlbfs_mounted = std::fs::read_to_string("/proc/mounts")
            .map(|s| mounts_have_hugetlbfs(&s))
            .unwrap_or(false);
        HostFacts {
            ncpus,
            hugepages_free,
            hugetlbfs_mounted,
        }
    }
}

/// Highest CPU number in a kernel CPU list such as `0-3,5,8-9`.
fn parse_cpu_list_max(list: &str) -> Option<usize> {
    list.trim()
        .split(',')
        .filter(|part| !part.is_empty())
        .map(|part| part.rsplit('-').next().unwrap_or(part).trim().parse().ok())
        .try_fold(None::<usize>, |acc, n: Option<usize>| {
            n.map(|n| Some(acc.map_or(n, |a| a.max(n))))
        })
        .flatten()
}

/// `HugePages_Free:` from /proc/meminfo text.
fn parse_meminfo_hugepages_free(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        line.strip_prefix("HugePages_Free:")
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Whether /proc/mounts text lists a hugetlbfs mount.
fn mounts_have_hugetlbfs(mounts: &str) -> bool {
    mounts
        .lines()
        .any(|line| line.split_whitespace().nth(2) == Some("hugetlbfs"))
}

/// A parsed `dpdk-devargs` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Devargs {
    /// A PCI device, normalised to `DDDD:BB:DD.F`, with its arguments.
    Pci {
        /// `DDDD:BB:DD.F`.
        address: String,
        /// Everything after the first comma (may be empty).
        args: String,
    },
    /// A virtual device `net_<driver><N>`.
    Vdev {
        /// Device name, e.g. `net_pcap0`.
        name: String,
        /// Driver, e.g. `pcap`.
        driver: String,
    },
}

impl Devargs {
    /// The device name DPDK knows the port by (`net_pcap0`, `0000:01:00.0`).
    pub fn device_name(&self) -> &str {
        match self {
            Devargs::Pci { address, .. } => address,
            Devargs::Vdev { name, .. } => name,
        }
    }

    /// Parse and syntax-check a devargs string. The error is the reason only
    /// (the caller adds the field path).
    pub fn parse(devargs: &str) -> Result<Devargs, String> {
        let (head, args) = match devargs.split_once(',') {
            Some((h, a)) => (h, Some(a)),
            None => (devargs, None),
        };
        if let Some(args) = args {
            for arg in args.split(',') {
                match arg.split_once('=') {
                    Some((k, _)) if !k.is_empty() => {}
                    _ => {
                        return Err(format!(
                            "argument \"{arg}\" in \"{devargs}\" is not key=value"
                        ))
                    }
                }
            }
        }
        if let Some(address) = parse_pci_address(head) {
            return Ok(Devargs::Pci {
                address,
                args: args.unwrap_or("").to_string(),
            });
        }
        if let Some(rest) = head.strip_prefix("net_") {
            let driver = rest.trim_end_matches(|c: char| c.is_ascii_digit());
            let index = &rest[driver.len()..];
            if !driver.is_empty() && !index.is_empty() {
                if VDEV_DRIVERS.contains(&driver) {
                    return Ok(Devargs::Vdev {
                        name: head.to_string(),
                        driver: driver.to_string(),
                    });
                }
                return Err(format!(
                    "unknown vdev driver \"{driver}\" in \"{devargs}\" (expected one of {})",
                    VDEV_DRIVERS.join(", ")
                ));
            }
        }
        Err(format!(
            "\"{devargs}\" is neither a PCI address nor a vdev name (net_<driver><N>)"
        ))
    }
}

/// `DDDD:BB:DD.F` or `BB:DD.F` (hex; function 0-7), normalised to the long form
/// in lower case.
fn parse_pci_address(s: &str) -> Option<String> {
    fn hex(s: &str, len: usize) -> bool {
        s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
    }
    let (bdf, func) = s.rsplit_once('.')?;
    if !(func.len() == 1 && matches!(func.as_bytes().first(), Some(b'0'..=b'7'))) {
        return None;
    }
    let parts: Vec<&str> = bdf.split(':').collect();
    let (domain, bus, dev) = match parts.as_slice() {
        [d, b, v] => (*d, *b, *v),
        [b, v] => ("0000", *b, *v),
        _ => return None,
    };
    if !(hex(domain, 4) && hex(bus, 2) && hex(dev, 2)) {
        return None;
    }
    // Device numbers are 5 bits.
    if u8::from_str_radix(dev, 16).ok()? > 0x1f {
        return None;
    }
    Some(format!("{domain}:{bus}:{dev}.{func}").to_ascii_lowercase())
}

/// DPDK log level name or number -> numeric level 1..=8.
fn parse_log_level(level: &str) -> Option<u32> {
    let n = match level.trim().to_ascii_lowercase().as_str() {
        "emerg" | "emergency" => 1,
        "alert" => 2,
        "crit" | "critical" => 3,
        "err" | "error" => 4,
        "warning" | "warn" => 5,
        "notice" => 6,
        "info" => 7,
        "debug" => 8,
        other => other.parse().ok()?,
    };
    (1..=8).contains(&n).then_some(n)
}

/// Interface-name rule: what a tap/kernel device can be called (IFNAMSIZ - 1).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("required (a name such as \"br0\")".to_string());
    }
    if name.len() > 15 {
        return Err(format!(
            "\"{name}\" is {} bytes long; at most 15 (a Linux interface name)",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "\"{name}\" contains {c:?}; use letters, digits, '_', '-' or '.'"
        ));
    }
    Ok(())
}

fn describe_cpus(ncpus: usize) -> String {
    match ncpus {
        0 | 1 => "this machine has CPU 0 only".to_string(),
        n => format!("this machine has CPUs 0-{}", n - 1),
    }
}

impl Config {
    /// Parse TOML text. Checks syntax, types and unknown keys; not meaning (see
    /// [`Config::validate`]).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.inner();
            let mut reason = inner.message().trim().to_string();
            if let Some(span) = inner.span() {
                let line = text
                    .get(..span.start)
                    .map_or(1, |before| before.matches('\n').count() + 1);
                let _ = write!(reason, " (line {line})");
            }
            let path = if path == "." || path.is_empty() {
                "config".to_string()
            } else {
                path
            };
            ConfigError::invalid(path, reason)
        })
    }

    /// Read and parse a file; errors name the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: path.to_path_buf(),
            reason: io_reason(&e),
        })?;
        Config::from_toml_str(&text).map_err(|inner| ConfigError::InFile {
            file: path.to_path_buf(),
            inner: Box::new(inner),
        })
    }

    /// Check the configuration's meaning against the host. Returns the first
    /// error found, in file order.
    pub fn validate(&self, host: &HostFacts) -> Result<(), ConfigError> {
        self.validate_dpdk(host)?;
        self.validate_pmd(host)?;
        self.validate_control()?;
        self.validate_metrics()?;
        self.tunnel
            .neighbor
            .validate()
            .map_err(|e| ConfigError::invalid("tunnel.neighbor", e))?;
        self.validate_bridges(false)
    }

    fn validate_dpdk(&self, host: &HostFacts) -> Result<(), ConfigError> {
        let d = &self.dpdk;
        if parse_log_level(&d.log_level).is_none() {
            return Err(ConfigError::invalid(
                "dpdk.log_level",
                format!(
                    "\"{}\" is not a log level (expected emerg, alert, crit, err, warning, notice, info, debug or 1..8)",
                    d.log_level
                ),
            ));
        }
        if d.file_prefix.is_empty()
            || d.file_prefix
                .chars()
                .any(|c| c == '/' || c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError::invalid(
                "dpdk.file_prefix",
                format!(
                    "\"{}\" must be non-empty, without '/' or spaces",
                    d.file_prefix
                ),
            ));
        }
        if d.mbufs == 0 {
            return Err(ConfigError::invalid("dpdk.mbufs", "must be at least 1"));
        }
        if d.mbuf_cache > MAX_MBUF_CACHE {
            return Err(ConfigError::invalid(
                "dpdk.mbuf_cache",
                format!("{} exceeds DPDK's limit of {MAX_MBUF_CACHE}", d.mbuf_cache),
            ));
        }
        // rte_mempool_create refuses cache_size * 1.5 > n.
        if u64::from(d.mbuf_cache) * 3 > u64::from(d.mbufs) * 2 {
            return Err(ConfigError::invalid(
                "dpdk.mbuf_cache",
                format!(
                    "{} is too large for dpdk.mbufs = {} (DPDK needs mbuf_cache * 1.5 <= mbufs)",
                    d.mbuf_cache, d.mbufs
                ),
            ));
        }
        if d.hugepages {
            if host.hugepages_free == 0 || !host.hugetlbfs_mounted {
                return Err(ConfigError::invalid(
                    "dpdk.hugepages",
                    "no free hugepages (HugePages_Free is 0 in /proc/meminfo and/or no hugetlbfs mounted); run 'echo 1024 > /proc/sys/vm/nr_hugepages' or set dpdk.hugepages = false",
                ));
            }
        } else if d.memory_mb == 0 {
            return Err(ConfigError::invalid(
                "dpdk.memory_mb",
                "must be at least 1 when dpdk.hugepages = false",
            ));
        }
        Ok(())
    }

    fn validate_pmd(&self, host: &HostFacts) -> Result<(), ConfigError> {
        let p = &self.pmd;
        if p.mgmt_cpu >= host.ncpus {
            return Err(ConfigError::invalid(
                "pmd.mgmt_cpu",
                format!(
                    "CPU {} out of range ({})",
                    p.mgmt_cpu,
                    describe_cpus(host.ncpus)
                ),
            ));
        }
        for (i, &cpu) in p.cpus.iter().enumerate() {
            let path = format!("pmd.cpus[{i}]");
            if cpu >= host.ncpus {
                return Err(ConfigError::invalid(
                    path,
                    format!("CPU {cpu} out of range ({})", describe_cpus(host.ncpus)),
                ));
            }
            if cpu == p.mgmt_cpu {
                return Err(ConfigError::invalid(
                    path,
                    format!("CPU {cpu} is the management CPU (pmd.mgmt_cpu)"),
                ));
            }
            if let Some(first) = p.cpus.iter().position(|&c| c == cpu) {
                if first < i {
                    return Err(ConfigError::invalid(
                        path,
                        format!("CPU {cpu} listed twice (also pmd.cpus[{first}])"),
                    ));
                }
            }
        }
        if p.emc_entries > 1 << 20 {
            return Err(ConfigError::invalid(
                "pmd.emc_entries",
                format!("{} out of range (0..=1048576)", p.emc_entries),
            ));
        }
        if p.flow_limit == 0 {
            return Err(ConfigError::invalid(
                "pmd.flow_limit",
                "0 out of range (at least 1)",
            ));
        }
        if p.burst == 0 || p.burst > MAX_BURST {
            return Err(ConfigError::invalid(
                "pmd.burst",
                format!("{} out of range (1..={MAX_BURST})", p.burst),
            ));
        }
        Ok(())
    }

    fn validate_control(&self) -> Result<(), ConfigError> {
        let socket = &self.control.socket;
        let len = socket.as_os_str().len();
        if len == 0 {
            return Err(ConfigError::invalid("control.socket", "must not be empty"));
        }
        // sun_path is 108 bytes including the terminating NUL.
        if len > 107 {
            return Err(ConfigError::invalid(
                "control.socket",
                format!("path is {len} bytes long; a unix socket path allows at most 107"),
            ));
        }
        Ok(())
    }

    fn validate_metrics(&self) -> Result<(), ConfigError> {
        if let Some(addr) = self.metrics.listen_addr() {
            let ok = addr.parse::<SocketAddr>().is_ok()
                || addr
                    .strip_prefix("localhost:")
                    .is_some_and(|port| port.parse::<u16>().is_ok());
            if !ok {
                return Err(ConfigError::invalid(
                    "metrics.listen",
                    format!(
                        "\"{addr}\" is not an address:port (e.g. \"127.0.0.1:9477\"), \"\" or \"off\""
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The bridges' rules. `dangling_patches`: a patch port's peer may not
    /// exist yet (a change at runtime adds one port of a pair at a time, and
    /// OVS, too, keeps a patch port whose peer is missing); a config file must
    /// name both.
    pub(crate) fn validate_bridges(&self, dangling_patches: bool) -> Result<(), ConfigError> {
        fn check_bond(port: &PortConfig) -> Result<(), String> {
            if port.interfaces.len() < 2 {
                return Err("interface: a bond needs at least 2 interfaces".to_string());
            }
            if port.port_type != "dpdk" {
                return Err(format!(
                    "type: a bond has no type of its own (its interfaces have), got \"{}\"",
                    port.port_type
                ));
            }
            if let Some(k) = port.options.keys().next() {
                return Err(format!(
                    "options.{k}: a bond has no options of its own (its interfaces have)"
                ));
            }
            if port.ofport.is_some() {
                return Err("ofport: a bond has none; each interface has its own".to_string());
            }
            if let Some((ii, i)) = port
                .interfaces
                .iter()
                .enumerate()
                .find(|(_, i)| i.iface_type != "dpdk")
            {
                return Err(format!(
                    "interface[{ii}].type: a bond member must be \"dpdk\", got \"{}\"",
                    i.iface_type
                ));
            }
            let s = port.bond_settings()?;
            if s.mode == BondMode::BalanceTcp && s.lacp == LacpMode::Off {
                return Err("bond_mode: balance-tcp needs lacp (active or passive)".to_string());
            }
            Ok(())
        }

        // Bridge names, and the names of the bridges' own (future internal) ports.
        let mut bridge_names: HashMap<&str, usize> = HashMap::new();
        for (bi, bridge) in self.bridges.iter().enumerate() {
            check_name(&bridge.name)
                .map_err(|r| ConfigError::invalid(format!("bridge[{bi}].name"), r))?;
            if let Some(&first) = bridge_names.get(bridge.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("bridge[{bi}].name"),
                    format!(
                        "duplicate bridge name \"{}\" (also bridge[{first}])",
                        bridge.name
                    ),
                ));
            }
            bridge_names.insert(&bridge.name, bi);
        }

        // The names of tap devices the switch creates: bridges' own ports and
        // internal ports.
        let internal_names: BTreeSet<&str> = self
            .bridges
            .iter()
            .flat_map(|b| {
                std::iter::once(b.name.as_str()).chain(
                    b.ports
                        .iter()
                        .filter(|p| p.is_internal())
                        .map(|p| p.name.as_str()),
                )
            })
            .collect();
        // Port and interface name -> (bridge index, where in it), across all
        // bridges (names are global, as in OVS).
        let mut port_owner: HashMap<String, (usize, String)> = HashMap::new();
        // Device name -> port name: one device cannot back two ports.
        let mut devices: HashMap<String, String> = HashMap::new();
        // Each tunnel port's receive identity, with its name.
        type TunnelId = (TunnelKind, u16, Option<u32>, Option<u32>, tnl::TnlKey);
        let mut tunnels: Vec<(TunnelId, String)> = Vec::new();
        for (bi, bridge) in self.bridges.iter().enumerate() {
            let mut ofports: HashMap<u32, String> = HashMap::new();
            // Each plain port, and each bond with then its members, as
            // (path, port): a member is checked as a port of its own.
            let mut entries: Vec<(String, PortConfig)> = Vec::new();
            for (pi, port) in bridge.ports.iter().enumerate() {
                entries.push((format!("port[{pi}]"), port.clone()));
                if port.is_bond() {
                    check_bond(port).map_err(|r| {
                        ConfigError::invalid(
                            format!("bridge[{bi}].port[{pi}] \"{}\"", port.name),
                            r,
                        )
                    })?;
                    for (ii, member) in port.interface_ports().into_iter().enumerate() {
                        entries.push((format!("port[{pi}].interface[{ii}]"), member));
                    }
                } else if let Some(field) = [
                    ("bond_mode", port.bond_mode.is_some()),
                    ("lacp", port.lacp.is_some()),
                ]
                .iter()
                .find_map(|(f, set)| set.then_some(f))
                {
                    return Err(ConfigError::invalid(
                        format!("bridge[{bi}].port[{pi}] \"{}\"", port.name),
                        format!("{field}: only a bond (a port with [[bridge.port.interface]] entries) has one"),
                    ));
                } else if !port.other_config.is_empty() {
                    let at = format!("bridge[{bi}].port[{pi}] \"{}\"", port.name);
                    if let Some(k) = port.other_config.keys().find(|k| *k != PMD_RXQ_AFFINITY) {
                        return Err(ConfigError::invalid(
                            at,
                            format!("other_config.{k}: unknown key (a port takes {PMD_RXQ_AFFINITY}; a bond lacp-time)"),
                        ));
                    }
                    if port.is_patch() || port.is_internal() || port.is_tunnel() {
                        return Err(ConfigError::invalid(
                            at,
                            format!("other_config.{PMD_RXQ_AFFINITY}: a {} port has no queues of its own to pin", port.port_type),
                        ));
                    }
                    port.rxq_affinity()
                        .map_err(|r| ConfigError::invalid(at, r))?;
                }
            }
            for (pi, port) in &entries {
                check_name(&port.name)
                    .map_err(|r| ConfigError::invalid(format!("bridge[{bi}].{pi}.name"), r))?;
                let at = format!("bridge[{bi}].{pi} \"{}\"", port.name);
                if let Some((obi, opi)) = port_owner.get(port.name.as_str()) {
                    let other = &self.bridges[*obi].name;
                    let also = if *obi == bi {
                        format!("twice in bridge \"{other}\": {opi} and {pi}")
                    } else {
                        format!("also bridge \"{other}\"")
                    };
                    return Err(ConfigError::invalid(
                        format!("bridge \"{}\"", bridge.name),
                        format!("duplicate port name \"{}\" ({also})", port.name),
                    ));
                }
                if bridge_names.contains_key(port.name.as_str()) {
                    return Err(ConfigError::invalid(
                        at,
                        format!(
                            "name clashes with bridge \"{}\" (every bridge has an internal port of its own name)",
                            port.name
                        ),
                    ));
                }
                port_owner.insert(port.name.clone(), (bi, pi.clone()));
                if port.is_bond() {
                    // Its type, options and OpenFlow number are its members'.
                    port.vlan_mode().map_err(|r| ConfigError::invalid(&at, r))?;
                    continue;
                }

                check_port_type(&port.port_type).map_err(|r| ConfigError::invalid(&at, r))?;
                if port.n_rxq == 0 || port.n_rxq > MAX_RXQ {
                    return Err(ConfigError::invalid(
                        at,
                        format!("n_rxq: {} out of range (1..={MAX_RXQ})", port.n_rxq),
                    ));
                }
                if let Some(ofport) = port.ofport {
                    if ofport == 0 || ofport > MAX_OFPORT {
                        return Err(ConfigError::invalid(
                            at,
                            format!("ofport: {ofport} out of range (1..={MAX_OFPORT})"),
                        ));
                    }
                    if let Some(other) = ofports.insert(ofport, port.name.clone()) {
                        return Err(ConfigError::invalid(
                            at,
                            format!("ofport: {ofport} already requested by port \"{other}\""),
                        ));
                    }
                }
                if port.is_vhost() {
                    self.check_vhost_port(port, &at, &mut devices)?;
                } else if port.is_tunnel() {
                    if port.n_rxq != 1 {
                        return Err(ConfigError::invalid(
                            at,
                            "n_rxq: a tunnel port has no queues (it has no device)",
                        ));
                    }
                    let c = port
                        .tunnel_config()
                        .map_err(|r| ConfigError::invalid(&at, r))?;
                    // OVS refuses two tunnel ports that would receive the
                    // same packets.
                    let id = (c.kind, c.dst_port, c.remote_ip, c.local_ip, c.in_key);
                    if let Some(other) = tunnels.iter().find(|(t, _)| *t == id).map(|(_, n)| n) {
                        return Err(ConfigError::invalid(
                            at,
                            format!(
                                "options: same type, remote_ip, local_ip, key and dst_port as tunnel port \"{other}\" (a received packet would match both)"
                            ),
                        ));
                    }
                    tunnels.push((id, port.name.clone()));
                } else if port.is_patch() {
                    if port.n_rxq != 1 {
                        return Err(ConfigError::invalid(
                            at,
                            "n_rxq: a patch port has no queues (it has no device)",
                        ));
                    }
                    if port.options.contains_key("dpdk-devargs") {
                        return Err(ConfigError::invalid(
                            at,
                            "options.dpdk-devargs: a patch port has no device",
                        ));
                    }
                    if let Some(key) = port
                        .options
                        .keys()
                        .find(|k| !PATCH_PORT_OPTIONS.contains(&k.as_str()))
                    {
                        return Err(ConfigError::invalid(
                            at,
                            format!(
                                "options.{key}: unknown option for type \"patch\" (expected peer)"
                            ),
                        ));
                    }
                    if port.peer().is_none_or(str::is_empty) {
                        return Err(ConfigError::invalid(
                            at,
                            "options.peer: required for type \"patch\" (the name of the patch port in the other bridge)",
                        ));
                    }
                } else if port.is_internal() {
                    if let Some(key) = port.options.keys().next() {
                        return Err(ConfigError::invalid(
                            at,
                            format!(
                                "options.{key}: type \"internal\" takes no options (its tap device is named after the port)"
                            ),
                        ));
                    }
                } else {
                    if let Some(key) = port
                        .options
                        .keys()
                        .find(|k| !DPDK_PORT_OPTIONS.contains(&k.as_str()))
                    {
                        return Err(ConfigError::invalid(
                            at,
                            format!(
                                "options.{key}: unknown option for type \"{}\" (expected {})",
                                port.port_type,
                                DPDK_PORT_OPTIONS.join(", ")
                            ),
                        ));
                    }
                    let Some(devargs) = port.devargs() else {
                        return Err(ConfigError::invalid(
                            at,
                            format!(
                                "options.dpdk-devargs: required for type \"{}\" (a PCI address or a vdev such as \"net_pcap0,rx_pcap=in.pcap\")",
                                port.port_type
                            ),
                        ));
                    };
                    let parsed = Devargs::parse(devargs).map_err(|r| {
                        ConfigError::invalid(&at, format!("options.dpdk-devargs: {r}"))
                    })?;
                    let device = parsed.device_name().to_string();
                    if let Some(other) = devices.get(&device) {
                        return Err(ConfigError::invalid(
                            at,
                            format!(
                                "options.dpdk-devargs: device \"{device}\" is already used by port \"{other}\""
                            ),
                        ));
                    }
                    if let Some(iface) = tap_iface(&parsed, devargs) {
                        if internal_names.contains(iface) {
                            return Err(ConfigError::invalid(
                                at,
                                format!(
                                    "options.dpdk-devargs: iface \"{iface}\" is the tap device of internal port \"{iface}\""
                                ),
                            ));
                        }
                    }
                    devices.insert(device, port.name.clone());
                }
                port.vlan_mode().map_err(|r| ConfigError::invalid(&at, r))?;
            }
            for (field, value, range) in [
                (
                    "mac_aging_time",
                    bridge.mac_aging_time.map(|v| v as usize),
                    (MAC_MIN_AGING_SECS as usize, MAC_MAX_AGING_SECS as usize),
                ),
                (
                    "mac_table_size",
                    bridge.mac_table_size,
                    (MAC_MIN_MAX, MAC_MAX_MAX),
                ),
            ] {
                if let Some(v) = value.filter(|v| !(range.0..=range.1).contains(v)) {
                    return Err(ConfigError::invalid(
                        format!("bridge[{bi}].{field}"),
                        format!("{v} out of range ({}..={})", range.0, range.1),
                    ));
                }
            }

            let names: BTreeSet<String> = bridge
                .interfaces()
                .into_iter()
                .filter(PortConfig::has_device)
                .map(|p| p.name)
                .collect();
            let mut forwarded: HashMap<&str, usize> = HashMap::new();
            for (fi, fwd) in bridge.forwards.iter().enumerate() {
                let at = format!("bridge[{bi}].forward[{fi}]");
                for (field, value) in [("in_port", &fwd.in_port), ("output", &fwd.output)] {
                    if value.is_empty() {
                        return Err(ConfigError::invalid(
                            format!("{at}.{field}"),
                            "required (a port name)",
                        ));
                    }
                    if !names.contains(value) {
                        let why = if let Some(p) = bridge.ports.iter().find(|p| p.name == *value) {
                            format!("port \"{value}\" is a {} port (a static forward needs a datapath port)", p.port_type)
                        } else {
                            format!("no port \"{value}\" in bridge \"{}\"", bridge.name)
                        };
                        return Err(ConfigError::invalid(format!("{at}.{field}"), why));
                    }
                }
                if fwd.in_port == fwd.output {
                    return Err(ConfigError::invalid(
                        format!("{at}.output"),
                        format!(
                            "same as in_port \"{}\" (a packet is never sent back out its in port)",
                            fwd.in_port
                        ),
                    ));
                }
                if let Some(first) = forwarded.insert(&fwd.in_port, fi) {
                    return Err(ConfigError::invalid(
                        format!("{at}.in_port"),
                        format!(
                            "port \"{}\" already has a forward (bridge[{bi}].forward[{first}])",
                            fwd.in_port
                        ),
                    ));
                }
            }

            // Flows: each must parse, and the whole list must go into the tables
            // as the bridge starts them (with the default flow).
            let portmap = bridge.portmap();
            let mut fms = Vec::with_capacity(bridge.flows.len());
            for (fi, text) in bridge.flows.iter().enumerate() {
                match parse_flow(text, &portmap) {
                    Ok(fm) => fms.push(fm),
                    Err(e) => {
                        return Err(ConfigError::invalid(
                            format!("bridge[{bi}].flows[{fi}]"),
                            e.to_string(),
                        ))
                    }
                }
            }
            let mut tables = Tables::new();
            // A catch-all with a valid action: `add` refuses nothing there.
            let _ = tables.add(crate::ofproto::default_flow(), 0);
            if let Err(e) = tables.add_flows(fms, 0) {
                return Err(ConfigError::invalid(
                    format!("bridge[{bi}].flows[{}]", e.index),
                    e.error.to_string(),
                ));
            }
        }
        self.validate_patch_peers(&port_owner, dangling_patches)
    }

    /// Each patch port's peer is a patch port of another bridge whose own peer
    /// is this port (OVS's patch ports come in such pairs).
    fn validate_patch_peers(
        &self,
        port_owner: &HashMap<String, (usize, String)>,
        dangling_patches: bool,
    ) -> Result<(), ConfigError> {
        for (bi, bridge) in self.bridges.iter().enumerate() {
            for (pi, port) in bridge.ports.iter().enumerate() {
                let Some(peer) = port.peer().filter(|_| port.is_patch()) else {
                    continue;
                };
                let at = format!("bridge[{bi}].port[{pi}] \"{}\"", port.name);
                let Some(&(obi, _)) = port_owner.get(peer) else {
                    if dangling_patches {
                        continue;
                    }
                    return Err(ConfigError::invalid(
                        at,
                        format!("options.peer: no port named \"{peer}\""),
                    ));
                };
                let Some(other) = self
                    .bridges
                    .get(obi)
                    .and_then(|b| b.interfaces().into_iter().find(|p| p.name == peer))
                else {
                    continue;
                };
                if !other.is_patch() {
                    return Err(ConfigError::invalid(
                        at,
                        format!(
                            "options.peer: port \"{peer}\" is of type \"{}\", not a patch port",
                            other.port_type
                        ),
                    ));
                }
                if obi == bi {
                    return Err(ConfigError::invalid(
                        at,
                        format!(
                            "options.peer: port \"{peer}\" is on the same bridge \"{}\" (a patch port joins two bridges)",
                            bridge.name
                        ),
                    ));
                }
                if other.peer() != Some(port.name.as_str()) {
                    return Err(ConfigError::invalid(
                        at,
                        format!(
                            "options.peer: patch port \"{peer}\" has peer {:?}, not \"{}\" (each must name the other)",
                            other.peer().unwrap_or_default(),
                            port.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The devargs of vhost port `port` as DPDK device `net_vhost<index>`:
    /// its socket, and `client=1` for a client (the vhost library then
    /// reconnects whenever the socket's server comes back). The datapath adds
    /// the queue count.
    pub fn vhost_devargs(&self, port: &PortConfig, index: u32) -> String {
        let sock = self.vhost_socket(port).unwrap_or_default();
        let client = if port.is_vhost_client() {
            ",client=1"
        } else {
            ""
        };
        format!("net_vhost{index},iface={}{client}", sock.display())
    }

    /// The vhost-user socket of a vhost port: `options.vhost-server-path` for a
    /// client, `dpdk.vhost_sock_dir/NAME` for a server; `None` for other ports.
    pub fn vhost_socket(&self, port: &PortConfig) -> Option<PathBuf> {
        if port.is_vhost_client() {
            port.options.get(VHOST_SERVER_PATH).map(PathBuf::from)
        } else if port.is_vhost() {
            Some(self.dpdk.vhost_sock_dir.join(&port.name))
        } else {
            None
        }
    }

    /// A vhost port's options and socket: a client needs an absolute
    /// `vhost-server-path`, a server takes no options; no two ports share a
    /// socket (`devices` holds them, as it holds DPDK device names).
    fn check_vhost_port(
        &self,
        port: &PortConfig,
        at: &str,
        devices: &mut HashMap<String, String>,
    ) -> Result<(), ConfigError> {
        let allowed: &[&str] = if port.is_vhost_client() {
            &[VHOST_SERVER_PATH]
        } else {
            &[]
        };
        if let Some(key) = port.options.keys().find(|k| !allowed.contains(&k.as_str())) {
            let why = if port.is_vhost_client() {
                format!("unknown option for type \"dpdkvhostuserclient\" (expected {VHOST_SERVER_PATH})")
            } else {
                "type \"dpdkvhostuser\" takes no options (its socket is dpdk.vhost_sock_dir/NAME; for a socket QEMU owns use type \"dpdkvhostuserclient\" with vhost-server-path)".to_string()
            };
            return Err(ConfigError::invalid(at, format!("options.{key}: {why}")));
        }
        let field = if port.is_vhost_client() {
            format!("options.{VHOST_SERVER_PATH}")
        } else {
            "dpdk.vhost_sock_dir".to_string()
        };
        let Some(sock) = self.vhost_socket(port) else {
            return Err(ConfigError::invalid(
                at,
                format!("{field}: required for type \"dpdkvhostuserclient\" (the socket QEMU listens on)"),
            ));
        };
        let text = sock.to_string_lossy().into_owned();
        if !sock.is_absolute() {
            return Err(ConfigError::invalid(
                at,
                format!("{field}: {text:?} is not an absolute path"),
            ));
        }
        if text.len() > MAX_SOCKET_PATH || text.contains(',') {
            return Err(ConfigError::invalid(
                at,
                format!("{field}: socket path {text:?} is longer than {MAX_SOCKET_PATH} bytes or has a ','"),
            ));
        }
        let key = format!("vhost socket {text}");
        if let Some(other) = devices.get(&key) {
            return Err(ConfigError::invalid(
                at,
                format!("{field}: socket {text:?} is already used by port \"{other}\""),
            ));
        }
        devices.insert(key, port.name.clone());
        Ok(())
    }

    /// The CPUs PMD threads run on: `pmd.cpus` if set, else every CPU below
    /// `ncpus` except `pmd.mgmt_cpu`. On a single-CPU host that default is
    /// empty, so the one PMD shares the management CPU (slow, but it runs).
    pub fn resolved_pmd_cpus(&self, ncpus: usize) -> Vec<usize> {
        if !self.pmd.cpus.is_empty() {
            return self.pmd.cpus.clone();
        }
        let cpus: Vec<usize> = (0..ncpus).filter(|&c| c != self.pmd.mgmt_cpu).collect();
        if cpus.is_empty() {
            vec![self.pmd.mgmt_cpu]
        } else {
            cpus
        }
    }

    /// The numeric DPDK log level (1..=8) of `dpdk.log_level`, `None` if invalid.
    pub fn log_level_number(&self) -> Option<u32> {
        parse_log_level(&self.dpdk.log_level)
    }

    /// The EAL argv, program name first:
    ///
    /// `ferroswitch -l <mgmt_cpu> --file-prefix <p> --log-level <1..8>`, then
    /// `--no-huge -m <memory_mb>` when `dpdk.hugepages = false`, then
    /// `-a <pci>[,args]` for each PCI port (in bridge/port order; the allowlist,
    /// so EAL probes no other NIC), `--no-pci` if no port is a PCI device, then
    /// `dpdk.eal_args` verbatim. Virtual devices are not named here: the datapath
    /// hot-plugs them (`rte_dev_probe`), as it does for ports added at runtime.
    ///
    /// Only the main lcore is given to EAL (`-l`); PMD threads are registered as
    /// non-EAL lcores by the datapath. With hugepages we deliberately do not pass
    /// `--huge-unlink`: it would stop secondary processes (`dpdk-proc-info`,
    /// `dpdk-pdump`) from attaching, and EAL already reclaims stale hugepage
    /// files of its own `--file-prefix` at start. The log level is passed as a
    /// number because EAL matches level names by prefix.
    ///
    /// Call after [`Config::validate`]: ports with unparsable devargs are skipped.
    pub fn eal_args(&self) -> Vec<String> {
        let mut args = vec![
            EAL_PROGRAM_NAME.to_string(),
            "-l".to_string(),
            self.pmd.mgmt_cpu.to_string(),
            "--file-prefix".to_string(),
            self.dpdk.file_prefix.clone(),
            "--log-level".to_string(),
            self.log_level_number().unwrap_or(6).to_string(),
        ];
        if !self.dpdk.hugepages {
            args.push("--no-huge".to_string());
            args.push("-m".to_string());
            args.push(self.dpdk.memory_mb.to_string());
        }
        let mut any_pci = false;
        for port in self.bridges.iter().flat_map(|b| b.interfaces()) {
            let Some(devargs) = port.devargs() else {
                continue;
            };
            match Devargs::parse(devargs) {
                Ok(Devargs::Pci { .. }) => {
                    any_pci = true;
                    args.push("-a".to_string());
                    args.push(devargs.to_string());
                }
                Ok(Devargs::Vdev { .. }) | Err(_) => {}
            }
        }
        if !any_pci {
            args.push("--no-pci".to_string());
        }
        args.extend(self.dpdk.eal_args.iter().cloned());
        args
    }

    /// Every port the datapath runs, numbered by position (the datapath port
    /// number): bridge by bridge, each bridge's configured ports in order and
    /// then its own internal port ([`BridgeConfig::all_ports`]), patch and
    /// tunnel ports left out (they have an OpenFlow number but no device);
    /// last, one deviceless port per tunnel type and UDP port that tunnel
    /// ports use ([`DatapathPort::tunnel`]), named as OVS names them
    /// (`vxlan_sys_4789`, `gre_sys`, `genev_sys_6081`), in the order of their
    /// first port. Internal ports get `net_tapN,iface=NAME` with the lowest
    /// indices N that no configured `net_tapN` device uses, in this order.
    ///
    /// Call after [`Config::validate`].
    pub fn datapath_ports(&self) -> Vec<DatapathPort> {
        let used = |wanted: &str| -> BTreeSet<u32> {
            self.bridges
                .iter()
                .flat_map(|b| b.interfaces())
                .filter_map(|p| match Devargs::parse(p.devargs()?) {
                    Ok(Devargs::Vdev { name, driver }) if driver == wanted => name
                        .strip_prefix("net_")?
                        .strip_prefix(wanted)?
                        .parse()
                        .ok(),
                    _ => None,
                })
                .collect()
        };
        let (used_taps, used_vhosts) = (used("tap"), used("vhost"));
        let mut next_vhost = 0u32;
        let mut next_tap = 0u32;
        let mut out = Vec::new();
        for b in &self.bridges {
            let ofports = b.ofports();
            let bond_of = |name: &str| {
                b.ports
                    .iter()
                    .find(|p| p.is_bond() && p.interfaces.iter().any(|i| i.name == name))
                    .map(|p| p.name.clone())
            };
            let mut ports = b.interfaces();
            ports.push(b.local_port());
            // Patch and tunnel ports have no device: the datapath never sees
            // them.
            for p in ports.into_iter().filter(PortConfig::has_device) {
                let ofport = ofports
                    .iter()
                    .find(|(n, _)| *n == p.name)
                    .map_or(0, |&(_, o)| o);
                let devargs = if p.is_vhost() {
                    while used_vhosts.contains(&next_vhost) {
                        next_vhost += 1;
                    }
                    let d = self.vhost_devargs(&p, next_vhost);
                    next_vhost += 1;
                    d
                } else if p.is_internal() {
                    while used_taps.contains(&next_tap) {
                        next_tap += 1;
                    }
                    let d = format!("net_tap{next_tap},iface={}", p.name);
                    next_tap += 1;
                    d
                } else {
                    p.devargs().unwrap_or_default().to_string()
                };
                out.push(DatapathPort {
                    bridge: b.name.clone(),
                    bond: bond_of(&p.name),
                    port: p,
                    ofport,
                    devargs,
                    tunnel: None,
                });
            }
        }
        for p in self.bridges.iter().flat_map(|b| &b.ports) {
            let Ok(c) = p.tunnel_config() else {
                continue;
            };
            let id = (c.kind, c.dst_port);
            if out.iter().any(|d| d.tunnel == Some(id)) {
                continue;
            }
            let mut options = BTreeMap::new();
            if c.kind.is_udp() {
                options.insert("dst_port".to_string(), c.dst_port.to_string());
            }
            out.push(DatapathPort {
                bridge: String::new(),
                port: PortConfig {
                    name: c.datapath_port_name(),
                    port_type: c.kind.name().to_string(),
                    options,
                    ..PortConfig::default()
                },
                ofport: 0,
                devargs: String::new(),
                bond: None,
                tunnel: Some(id),
            });
        }
        out
    }

    /// Checks that no network interface of the host already has the name of a
    /// tap device the switch would create (bridges' own ports and internal
    /// ports); `exists` tells whether an interface exists
    /// ([`interface_exists`] on a real host). A `net_tap` cannot open an
    /// interface another program made (a persistent tap left by Open vSwitch,
    /// a veth), and must not take over one of another running switch.
    pub fn check_internal_interfaces(
        &self,
        exists: impl Fn(&str) -> bool,
    ) -> Result<(), ConfigError> {
        for (bi, b) in self.bridges.iter().enumerate() {
            let taken = |name: &str| {
                format!(
                    "a network interface \"{name}\" already exists on this host; the switch makes a tap device of that name (remove it with 'ip link del {name}' or choose another name)"
                )
            };
            if exists(&b.name) {
                return Err(ConfigError::invalid(
                    format!("bridge[{bi}].name"),
                    taken(&b.name),
                ));
            }
            for (pi, p) in b.ports.iter().enumerate() {
                if p.is_internal() && exists(&p.name) {
                    return Err(ConfigError::invalid(
                        format!("bridge[{bi}].port[{pi}].name"),
                        taken(&p.name),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Find a port by name: (bridge, port).
    pub fn find_port(&self, name: &str) -> Option<(&BridgeConfig, &PortConfig)> {
        self.bridges
            .iter()
            .find_map(|b| b.ports.iter().find(|p| p.name == name).map(|p| (b, p)))
    }
}

fn check_port_type(port_type: &str) -> Result<(), String> {
    if SUPPORTED_PORT_TYPES.contains(&port_type) {
        Ok(())
    } else if PLANNED_PORT_TYPES.contains(&port_type) {
        Err(format!("type \"{port_type}\" is not supported yet"))
    } else {
        let expected: Vec<&str> = SUPPORTED_PORT_TYPES
            .iter()
            .chain(PLANNED_PORT_TYPES)
            .copied()
            .collect();
        Err(format!(
            "unknown port type \"{port_type}\" (expected one of {})",
            expected.join(", ")
        ))
    }
}

impl BridgeConfig {
    /// OpenFlow port numbers of the interfaces ([`BridgeConfig::interfaces`]:
    /// a bond's members have one each, the bond none), in order: its `ofport`
    /// if it asked for one, otherwise the lowest number >= 1 that no port of the bridge asked
    /// for or already got (assigned in port order); last, the bridge's own port
    /// with [`OFPORT_LOCAL`].
    pub fn ofports(&self) -> Vec<(String, u32)> {
        let ifaces = self.interfaces();
        let mut used: BTreeSet<u32> = ifaces.iter().filter_map(|p| p.ofport).collect();
        let mut next = 1u32;
        ifaces
            .iter()
            .map(|p| {
                let n = match p.ofport {
                    Some(n) => n,
                    None => {
                        while used.contains(&next) {
                            next += 1;
                        }
                        used.insert(next);
                        next
                    }
                };
                (p.name.clone(), n)
            })
            .chain(std::iter::once((self.name.clone(), OFPORT_LOCAL)))
            .collect()
    }
}

/// Whether the host has a network interface called `name` (in this process's
/// network namespace: /sys/class/net).
pub fn interface_exists(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && Path::new("/sys/class/net").join(name).exists()
}

/// The `iface=` of a `net_tap` device's arguments.
fn tap_iface<'a>(parsed: &Devargs, devargs: &'a str) -> Option<&'a str> {
    match parsed {
        Devargs::Vdev { driver, .. } if driver == "tap" => devargs
            .split(',')
            .skip(1)
            .find_map(|kv| kv.strip_prefix("iface=")),
        _ => None,
    }
}

/// A short, stable description of an I/O error ("No such file", "Permission
/// denied") for messages that already name the path.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::NotFound => "No such file".to_string(),
        ErrorKind::PermissionDenied => "Permission denied".to_string(),
        ErrorKind::ConnectionRefused => "Connection refused".to_string(),
        ErrorKind::AddrInUse => "Address in use".to_string(),
        ErrorKind::AddrNotAvailable => "Address not available".to_string(),
        _ => {
            // Drop the " (os error N)" suffix std appends.
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: HostFacts = HostFacts {
        ncpus: 2,
        hugepages_free: 1024,
        hugetlbfs_mounted: true,
    };

    fn err(text: &str) -> String {
        match Config::from_toml_str(text) {
            Err(e) => e.to_string(),
            Ok(cfg) => cfg
                .validate(&HOST)
                .expect_err("config should be invalid")
                .to_string(),
        }
    }

    const TWO_PORTS: &str = r#"
[dpdk]
hugepages = false
memory_mb = 256
[pmd]
burst = 16
[[bridge]]
name = "br0"
  [[bridge.port]]
  name = "dpdk0"
  options = { dpdk-devargs = "net_pcap0,rx_pcap=/tmp/in.pcap,infinite_rx=1" }
  [[bridge.port]]
  name = "dpdk1"
  type = "dpdk"
  n_rxq = 2
  options = { dpdk-devargs = "net_null0" }
  [[bridge.forward]]
  in_port = "dpdk0"
  output = "dpdk1"
"#;

    fn with_port(port_body: &str) -> String {
        format!("[[bridge]]\nname = \"br0\"\n[[bridge.port]]\n{port_body}\n")
    }

    #[test]
    fn empty_file_is_valid_with_defaults() {
        let cfg = Config::from_toml_str("").unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.dpdk.eal_args, Vec::<String>::new());
        assert!(cfg.dpdk.hugepages);
        assert_eq!(cfg.dpdk.memory_mb, 512);
        assert_eq!(cfg.dpdk.file_prefix, "ferroswitch");
        assert_eq!(cfg.dpdk.log_level, "notice");
        assert_eq!(cfg.dpdk.mbufs, 16383);
        assert_eq!(cfg.dpdk.mbuf_cache, 256);
        assert!(cfg.pmd.cpus.is_empty());
        assert_eq!(cfg.pmd.mgmt_cpu, 0);
        assert_eq!(cfg.pmd.burst, 32);
        assert_eq!(cfg.control.socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
        assert_eq!(cfg.metrics.listen, "127.0.0.1:9477");
        assert_eq!(cfg.metrics.listen_addr(), Some("127.0.0.1:9477"));
        assert!(cfg.metrics.console);
        assert!(cfg.bridges.is_empty());
        assert_eq!(cfg.tunnel.neighbor.aging_time, 900);
        cfg.validate(&HOST).unwrap();
        assert_eq!(cfg.resolved_pmd_cpus(2), vec![1]);
        assert_eq!(cfg.resolved_pmd_cpus(4), vec![1, 2, 3]);
        assert_eq!(cfg.resolved_pmd_cpus(1), vec![0]);
    }

    #[test]
    fn neighbor_aging_is_checked() {
        let cfg = Config::from_toml_str("[tunnel.neighbor]\naging_time = 60\n").unwrap();
        assert_eq!(cfg.tunnel.neighbor.aging_time, 60);
        cfg.validate(&HOST).unwrap();
        let cfg = Config::from_toml_str("[tunnel.neighbor]\naging_time = 0\n").unwrap();
        assert_eq!(
            cfg.validate(&HOST).unwrap_err().to_string(),
            "tunnel.neighbor: aging_time: 0 must be 1 to 3600 seconds"
        );
    }

    #[test]
    fn sample_config_parses_and_builds_eal_args() {
        let cfg = Config::from_toml_str(TWO_PORTS).unwrap();
        cfg.validate(&HOST).unwrap();
        assert_eq!(cfg.bridges[0].ports[0].port_type, "dpdk");
        assert_eq!(cfg.bridges[0].ports[1].n_rxq, 2);
        assert_eq!(
            cfg.eal_args(),
            [
                "ferroswitch",
                "-l",
                "0",
                "--file-prefix",
                "ferroswitch",
                "--log-level",
                "6",
                "--no-huge",
                "-m",
                "256",
                "--no-pci",
            ]
        );
    }

    #[test]
    fn eal_args_with_pci_hugepages_and_extra_args() {
        let cfg = Config::from_toml_str(
            r#"
[dpdk]
eal_args = ["--socket-mem", "1024", "-n", "4"]
log_level = "debug"
file_prefix = "fs1"
[pmd]
mgmt_cpu = 1
cpus = [0]
[[bridge]]
name = "br0"
  [[bridge.port]]
  name = "p0"
  options = { dpdk-devargs = "0000:01:00.0" }
  [[bridge.port]]
  name = "p1"
  options = { dpdk-devargs = "03:00.1,rx_queue_size=1024" }
  [[bridge.port]]
  name = "v0"
  options = { dpdk-devargs = "net_tap0,iface=fs0" }
"#,
        )
        .unwrap();
        cfg.validate(&HOST).unwrap();
        assert_eq!(
            cfg.eal_args(),
            [
                "ferroswitch",
                "-l",
                "1",
                "--file-prefix",
                "fs1",
                "--log-level",
                "8",
                "-a",
                "0000:01:00.0",
                "-a",
                "03:00.1,rx_queue_size=1024",
                "--socket-mem",
                "1024",
                "-n",
                "4",
            ]
        );
        assert_eq!(cfg.resolved_pmd_cpus(2), vec![0]);
    }

    #[test]
    fn ofports_fill_lowest_free() {
        let cfg = Config::from_toml_str(
            r#"
[[bridge]]
name = "br0"
  [[bridge.port]]
  name = "a"
  [[bridge.port]]
  name = "b"
  ofport = 1
  [[bridge.port]]
  name = "c"
  [[bridge.port]]
  name = "d"
  ofport = 3
  [[bridge.port]]
  name = "e"
"#,
        )
        .unwrap();
        assert_eq!(
            cfg.bridges[0].ofports(),
            vec![
                ("a".to_string(), 2),
                ("b".to_string(), 1),
                ("c".to_string(), 4),
                ("d".to_string(), 3),
                ("e".to_string(), 5),
                ("br0".to_string(), OFPORT_LOCAL),
            ]
        );
    }

    #[test]
    fn unknown_keys_name_the_path() {
        assert_eq!(
            err("[dpdk]\nhugepage = false\n"),
            "dpdk.hugepage: unknown field `hugepage`, expected one of `eal_args`, `hugepages`, `memory_mb`, `file_prefix`, `log_level`, `mbufs`, `mbuf_cache`, `vhost_sock_dir` (line 2)"
        );
        assert_eq!(
            err(&with_port("name = \"p0\"\nn_rxqs = 2")),
            "bridge[0].port[0].n_rxqs: unknown field `n_rxqs`, expected one of `name`, `type`, `ofport`, `n_rxq`, `options`, `tag`, `trunks`, `vlan_mode`, `interface`, `bond_mode`, `lacp`, `other_config` (line 5)"
        );
        assert_eq!(
            err("[pmd]\nburst = \"big\"\n"),
            "pmd.burst: invalid type: string \"big\", expected usize (line 2)"
        );
        assert_eq!(
            err("[bridges]\n"),
            "bridges: unknown field `bridges`, expected one of `dpdk`, `pmd`, `control`, `metrics`, `tunnel`, `bridge` (line 1)"
        );
    }

    #[test]
    fn syntax_error_has_line() {
        let e = err("[dpdk\n");
        assert!(e.starts_with("config: "), "{e}");
        assert!(e.ends_with("(line 1)"), "{e}");
    }

    #[test]
    fn internal_ports_are_taps_named_after_the_port() {
        let cfg = Config::from_toml_str(
            r#"
[[bridge]]
name = "br-mgmt"
  [[bridge.port]]
  name = "mgmt0"
  type = "internal"
  tag = 10
  [[bridge.port]]
  name = "t0"
  options = { dpdk-devargs = "net_tap0,iface=other0" }
[[bridge]]
name = "br1"
  [[bridge.port]]
  name = "tep0"
  type = "internal"
"#,
        )
        .unwrap();
        cfg.validate(&HOST).unwrap();
        let dp: Vec<(String, String, u32, String)> = cfg
            .datapath_ports()
            .into_iter()
            .map(|p| (p.bridge, p.port.name, p.ofport, p.devargs))
            .collect();
        let row = |b: &str, n: &str, o: u32, d: &str| (b.into(), n.into(), o, d.into());
        assert_eq!(
            dp,
            [
                row("br-mgmt", "mgmt0", 1, "net_tap1,iface=mgmt0"),
                row("br-mgmt", "t0", 2, "net_tap0,iface=other0"),
                row("br-mgmt", "br-mgmt", OFPORT_LOCAL, "net_tap2,iface=br-mgmt"),
                row("br1", "tep0", 1, "net_tap3,iface=tep0"),
                row("br1", "br1", OFPORT_LOCAL, "net_tap4,iface=br1"),
            ]
        );
        assert_eq!(
            cfg.bridges[0].portmap().number("br-mgmt"),
            Some(OFPORT_LOCAL)
        );
        let local = cfg.bridges[1].local_port();
        assert!(local.is_internal());
        assert_eq!(local.vlan_mode(), Ok(VlanMode::Trunk { trunks: None }));
        assert_eq!(ofport_display(OFPORT_LOCAL), 65534);
        // Flows may name the bridge's own port.
        let flows = r#"[[bridge]]
name = "br0"
flows = ["in_port=br0 actions=output:p0", "in_port=p0 actions=LOCAL"]
[[bridge.port]]
name = "p0"
type = "internal"
"#;
        Config::from_toml_str(flows)
            .unwrap()
            .validate(&HOST)
            .unwrap();
    }

    #[test]
    fn existing_interfaces_are_not_taken_over() {
        let cfg =
            Config::from_toml_str(&with_port("name = \"mgmt0\"\ntype = \"internal\"")).unwrap();
        assert_eq!(cfg.check_internal_interfaces(|_| false), Ok(()));
        assert_eq!(
            cfg.check_internal_interfaces(|n| n == "br0")
                .unwrap_err()
                .to_string(),
            "bridge[0].name: a network interface \"br0\" already exists on this host; the switch makes a tap device of that name (remove it with 'ip link del br0' or choose another name)"
        );
        assert_eq!(
            cfg.check_internal_interfaces(|n| n == "mgmt0")
                .unwrap_err()
                .path(),
            Some("bridge[0].port[0].name")
        );
        assert!(interface_exists("lo"));
        assert!(!interface_exists("no-such-if0"));
    }

    #[test]
    fn internal_port_errors() {
        assert_eq!(
            err(&with_port(
                "name = \"p0\"\ntype = \"internal\"\noptions = { dpdk-devargs = \"net_tap0\" }"
            )),
            "bridge[0].port[0] \"p0\": options.dpdk-devargs: type \"internal\" takes no options (its tap device is named after the port)"
        );
        assert_eq!(
            err(&with_port("name = \"mgmt-interface01\"\ntype = \"internal\"")),
            "bridge[0].port[0].name: \"mgmt-interface01\" is 16 bytes long; at most 15 (a Linux interface name)"
        );
        assert_eq!(
            err("[[bridge]]\nname = \"bridge-of-mgmt01\"\n"),
            "bridge[0].name: \"bridge-of-mgmt01\" is 16 bytes long; at most 15 (a Linux interface name)"
        );
        assert_eq!(
            err(&format!(
                "{}[[bridge.port]]\nname = \"p1\"\noptions = {{ dpdk-devargs = \"net_tap0,iface=p0\" }}\n",
                with_port("name = \"p0\"\ntype = \"internal\"")
            )),
            "bridge[0].port[1] \"p1\": options.dpdk-devargs: iface \"p0\" is the tap device of internal port \"p0\""
        );
        assert_eq!(
            err(&with_port(
                "name = \"p1\"\noptions = { dpdk-devargs = \"net_tap0,iface=br0\" }"
            )),
            "bridge[0].port[0] \"p1\": options.dpdk-devargs: iface \"br0\" is the tap device of internal port \"br0\""
        );
    }

    #[test]
    fn port_type_errors() {
        assert_eq!(
            err(&with_port("name = \"p0\"\ntype = \"ethernet\"")),
            "bridge[0].port[0] \"p0\": unknown port type \"ethernet\" (expected one of dpdk, internal, patch, dpdkvhostuser, dpdkvhostuserclient, vxlan, gre, geneve)"
        );
    }

    #[test]
    fn vhost_ports_and_their_sockets() {
        let client = |opts: &str| {
            with_port(&format!(
                "name = \"vm1\"\ntype = \"dpdkvhostuserclient\"\n{opts}"
            ))
        };
        assert_eq!(
            err(&client("")),
            "bridge[0].port[0] \"vm1\": options.vhost-server-path: required for type \"dpdkvhostuserclient\" (the socket QEMU listens on)"
        );
        assert_eq!(
            err(&client("options = { vhost-server-path = \"vm1.sock\" }")),
            "bridge[0].port[0] \"vm1\": options.vhost-server-path: \"vm1.sock\" is not an absolute path"
        );
        assert_eq!(
            err(&client("options = { vhost-server-path = \"/tmp/a,b\" }")),
            "bridge[0].port[0] \"vm1\": options.vhost-server-path: socket path \"/tmp/a,b\" is longer than 107 bytes or has a ','"
        );
        assert_eq!(
            err(&client("options = { vhost-server-path = \"/tmp/vm1.sock\", dpdk-devargs = \"x\" }")),
            "bridge[0].port[0] \"vm1\": options.dpdk-devargs: unknown option for type \"dpdkvhostuserclient\" (expected vhost-server-path)"
        );
        assert_eq!(
            err(&with_port("name = \"vm1\"\ntype = \"dpdkvhostuser\"\noptions = { vhost-server-path = \"/tmp/x\" }")),
            "bridge[0].port[0] \"vm1\": options.vhost-server-path: type \"dpdkvhostuser\" takes no options (its socket is dpdk.vhost_sock_dir/NAME; for a socket QEMU owns use type \"dpdkvhostuserclient\" with vhost-server-path)"
        );
        let two = Config::from_toml_str(
            r#"
[dpdk]
vhost_sock_dir = "/run/fs"
[[bridge]]
name = "br0"
  [[bridge.port]]
  name = "vm1"
  type = "dpdkvhostuserclient"
  options = { vhost-server-path = "/tmp/vm1.sock" }
  [[bridge.port]]
  name = "vm2"
  type = "dpdkvhostuser"
  [[bridge.port]]
  name = "vm3"
  type = "dpdkvhostuserclient"
  options = { vhost-server-path = "/tmp/vm1.sock" }
"#,
        )
        .unwrap();
        assert_eq!(
            two.validate(&HOST).unwrap_err().to_string(),
            "bridge[0].port[2] \"vm3\": options.vhost-server-path: socket \"/tmp/vm1.sock\" is already used by port \"vm1\""
        );
        let mut ok = two.clone();
        ok.bridges[0].ports.pop();
        ok.validate(&HOST).unwrap();
        let devargs: Vec<(String, String)> = ok
            .datapath_ports()
            .into_iter()
            .map(|p| (p.port.name, p.devargs))
            .collect();
        assert_eq!(
            devargs,
            [
                (
                    "vm1".into(),
                    "net_vhost0,iface=/tmp/vm1.sock,client=1".into()
                ),
                ("vm2".into(), "net_vhost1,iface=/run/fs/vm2".into()),
                ("br0".into(), "net_tap0,iface=br0".into()),
            ]
        );
    }

    /// br-tun with tunnel ports of every kind and br-phy with the NIC and the
    /// tunnel endpoint tep0.
    const TUNNELS: &str = r#"
[[bridge]]
name = "br-tun"
  [[bridge.port]]
  name = "vm1"
  options = { dpdk-devargs = "net_null0" }
  [[bridge.port]]
  name = "vx1"
  type = "vxlan"
  options = { remote_ip = "172.168.1.2", key = "flow" }
  [[bridge.port]]
  name = "gre1"
  type = "gre"
  options = { remote_ip = "172.168.1.3" }
  [[bridge.port]]
  name = "vx2"
  type = "vxlan"
  ofport = 9
  options = { remote_ip = "172.168.1.3", key = "flow" }
  [[bridge.port]]
  name = "gnv1"
  type = "geneve"
  options = { remote_ip = "flow", key = "5" }
  [[bridge.port]]
  name = "vx3"
  type = "vxlan"
  options = { remote_ip = "172.168.1.4", dst_port = "4790" }
[[bridge]]
name = "br-phy"
  [[bridge.port]]
  name = "eth0"
  options = { dpdk-devargs = "net_null1" }
  [[bridge.port]]
  name = "tep0"
  type = "internal"
  [[bridge.port]]
  name = "gre2"
  type = "gre"
  options = { remote_ip = "172.168.1.5", key = "7", csum = "true" }
"#;

    #[test]
    fn tunnel_ports_have_ofports_and_share_a_datapath_port_per_kind() {
        let cfg = Config::from_toml_str(TUNNELS).unwrap();
        cfg.validate(&HOST).unwrap();
        assert_eq!(
            cfg.bridges[0].ofports(),
            vec![
                ("vm1".to_string(), 1),
                ("vx1".to_string(), 2),
                ("gre1".to_string(), 3),
                ("vx2".to_string(), 9),
                ("gnv1".to_string(), 4),
                ("vx3".to_string(), 5),
                ("br-tun".to_string(), OFPORT_LOCAL),
            ]
        );
        type Row = (String, String, String, Option<(TunnelKind, u16)>);
        let dp: Vec<Row> = cfg
            .datapath_ports()
            .into_iter()
            .map(|p| (p.bridge, p.port.name, p.port.port_type, p.tunnel))
            .collect();
        let port = |b: &str, n: &str, t: &str| (b.to_string(), n.to_string(), t.to_string(), None);
        let tnl =
            |n: &str, t: &str, k, p| (String::new(), n.to_string(), t.to_string(), Some((k, p)));
        assert_eq!(
            dp,
            [
                port("br-tun", "vm1", "dpdk"),
                port("br-tun", "br-tun", "internal"),
                port("br-phy", "eth0", "dpdk"),
                port("br-phy", "tep0", "internal"),
                port("br-phy", "br-phy", "internal"),
                tnl("vxlan_sys_4789", "vxlan", TunnelKind::Vxlan, 4789),
                tnl("gre_sys", "gre", TunnelKind::Gre, 0),
                tnl("genev_sys_6081", "geneve", TunnelKind::Geneve, 6081),
                tnl("vxlan_sys_4790", "vxlan", TunnelKind::Vxlan, 4790),
            ]
        );
        let c = cfg.bridges[0].ports[1].tunnel_config().unwrap();
        assert_eq!(c.remote_ip, Some(0xaca8_0102));
        assert_eq!(c.in_key, pipeline::ofproto::tnl::TnlKey::Flow);
        // Flows name tunnel ports.
        let mut cfg = cfg;
        cfg.bridges[0].flows = vec!["in_port=vx1 actions=output:gnv1".to_string()];
        cfg.validate(&HOST).unwrap();
    }

    #[test]
    fn tunnel_port_errors_name_the_port_and_field() {
        let with = |body: &str| with_port(&format!("name = \"vx0\"\ntype = \"vxlan\"\n{body}"));
        let at = "bridge[0].port[0] \"vx0\"";
        let cases = [
            ("", "options.remote_ip: required for type \"vxlan\" (an IPv4 address or \"flow\")"),
            ("options = { remote_ip = \"1.2.3\" }", "options.remote_ip: \"1.2.3\" is not an IPv4 address"),
            ("options = { remote_ip = \"flow\", key = \"16777216\" }", "options.key: 0x1000000 is wider than the 24 bits a vxlan key has"),
            ("options = { remote_ip = \"flow\", dst_port = \"x\" }", "options.dst_port: \"x\" is not a UDP port (1..=65535)"),
            ("options = { remote_ip = \"flow\", dpdk-devargs = \"net_null0\" }", "options.dpdk-devargs: unknown option for type \"vxlan\" (expected remote_ip, local_ip, key, in_key, out_key, dst_port, tos, ttl, df_default, csum)"),
            ("n_rxq = 2\noptions = { remote_ip = \"flow\" }", "n_rxq: a tunnel port has no queues (it has no device)"),
            ("other_config = { pmd-rxq-affinity = \"0:1\" }\noptions = { remote_ip = \"flow\" }", "other_config.pmd-rxq-affinity: a vxlan port has no queues of its own to pin"),
        ];
        for (body, want) in cases {
            assert_eq!(err(&with(body)), format!("{at}: {want}"), "{body}");
        }
        // Two ports that would receive the same packets.
        let twice = format!(
            "{}[[bridge.port]]\nname = \"vx1\"\ntype = \"vxlan\"\noptions = {{ remote_ip = \"10.0.0.2\", key = \"5\" }}\n",
            with("options = { remote_ip = \"10.0.0.2\", in_key = \"5\", out_key = \"6\" }")
        );
        assert_eq!(
            err(&twice),
            "bridge[0].port[1] \"vx1\": options: same type, remote_ip, local_ip, key and dst_port as tunnel port \"vx0\" (a received packet would match both)"
        );
        // Another key, another UDP port or another kind is another tunnel.
        for other in [
            "type = \"vxlan\"\noptions = { remote_ip = \"10.0.0.2\", key = \"6\" }",
            "type = \"vxlan\"\noptions = { remote_ip = \"10.0.0.2\", key = \"5\", dst_port = \"4790\" }",
            "type = \"geneve\"\noptions = { remote_ip = \"10.0.0.2\", key = \"5\" }",
        ] {
            let text = format!(
                "{}[[bridge.port]]\nname = \"vx1\"\n{other}\n",
                with("options = { remote_ip = \"10.0.0.2\", key = \"5\" }")
            );
            Config::from_toml_str(&text).unwrap().validate(&HOST).unwrap();
        }
        // A static forward needs a device.
        let fwd = format!(
            "{}[[bridge.port]]\nname = \"p1\"\noptions = {{ dpdk-devargs = \"net_null0\" }}\n[[bridge.forward]]\nin_port = \"p1\"\noutput = \"vx0\"\n",
            with("options = { remote_ip = \"10.0.0.2\" }")
        );
        assert_eq!(
            err(&fwd),
            "bridge[0].forward[0].output: port \"vx0\" is a vxlan port (a static forward needs a datapath port)"
        );
    }

    /// br-int and br-tun joined by patch-tun/patch-int (Neutron's pair), with
    /// `extra` appended to patch-int's port table.
    fn patch_pair(int_side: &str, tun_side: &str) -> String {
        format!(
            r#"
[[bridge]]
name = "br-int"
  [[bridge.port]]
  name = "vm1"
  options = {{ dpdk-devargs = "net_null0" }}
  [[bridge.port]]
  name = "patch-tun"
{int_side}
[[bridge]]
name = "br-tun"
  [[bridge.port]]
  name = "patch-int"
{tun_side}
  [[bridge.port]]
  name = "gre1"
  options = {{ dpdk-devargs = "net_null1" }}
"#
        )
    }

    const PATCH_TUN: &str = "  type = \"patch\"\n  options = { peer = \"patch-int\" }";
    const PATCH_INT: &str = "  type = \"patch\"\n  options = { peer = \"patch-tun\" }";

    #[test]
    fn patch_ports_have_ofports_but_no_datapath_port() {
        let cfg = Config::from_toml_str(&patch_pair(PATCH_TUN, PATCH_INT)).unwrap();
        cfg.validate(&HOST).unwrap();
        assert_eq!(
            cfg.bridges[0].ofports(),
            vec![
                ("vm1".to_string(), 1),
                ("patch-tun".to_string(), 2),
                ("br-int".to_string(), OFPORT_LOCAL),
            ]
        );
        assert_eq!(
            cfg.bridges[1].ofports(),
            vec![
                ("patch-int".to_string(), 1),
                ("gre1".to_string(), 2),
                ("br-tun".to_string(), OFPORT_LOCAL),
            ]
        );
        let dp: Vec<(String, String, u32)> = cfg
            .datapath_ports()
            .into_iter()
            .map(|p| (p.bridge, p.port.name, p.ofport))
            .collect();
        assert_eq!(
            dp,
            [
                ("br-int".to_string(), "vm1".to_string(), 1),
                ("br-int".to_string(), "br-int".to_string(), OFPORT_LOCAL),
                ("br-tun".to_string(), "gre1".to_string(), 2),
                ("br-tun".to_string(), "br-tun".to_string(), OFPORT_LOCAL),
            ]
        );
        // Flows may name the patch port.
        let mut cfg = cfg;
        cfg.bridges[1].flows = vec!["in_port=patch-int actions=output:gre1".to_string()];
        cfg.validate(&HOST).unwrap();
    }

    #[test]
    fn patch_port_errors_name_the_field() {
        let at = "bridge[0].port[1] \"patch-tun\"";
        assert_eq!(
            err(&patch_pair("  type = \"patch\"", PATCH_INT)),
            format!("{at}: options.peer: required for type \"patch\" (the name of the patch port in the other bridge)")
        );
        assert_eq!(
            err(&patch_pair(
                "  type = \"patch\"\n  options = { peer = \"nowhere\" }",
                PATCH_INT
            )),
            format!("{at}: options.peer: no port named \"nowhere\"")
        );
        assert_eq!(
            err(&patch_pair(
                "  type = \"patch\"\n  options = { peer = \"gre1\" }",
                PATCH_INT
            )),
            format!("{at}: options.peer: port \"gre1\" is of type \"dpdk\", not a patch port")
        );
        assert_eq!(
            err(&patch_pair(
                "  type = \"patch\"\n  options = { peer = \"vm1\" }",
                PATCH_INT
            )),
            format!("{at}: options.peer: port \"vm1\" is of type \"dpdk\", not a patch port")
        );
        // patch-int points elsewhere: patch-tun is reported first.
        assert_eq!(
            err(&patch_pair(
                PATCH_TUN,
                "  type = \"patch\"\n  options = { peer = \"patch-x\" }\n[[bridge.port]]\nname = \"patch-x\"\ntype = \"patch\"\noptions = { peer = \"patch-int\" }"
            )),
            format!("{at}: options.peer: patch port \"patch-int\" has peer \"patch-x\", not \"patch-tun\" (each must name the other)")
        );
        assert_eq!(
            err(&patch_pair(&format!("{PATCH_TUN}\n  n_rxq = 2"), PATCH_INT)),
            format!("{at}: n_rxq: a patch port has no queues (it has no device)")
        );
        assert_eq!(
            err(&patch_pair(
                "  type = \"patch\"\n  options = { peer = \"patch-int\", dpdk-devargs = \"net_null9\" }",
                PATCH_INT
            )),
            format!("{at}: options.dpdk-devargs: a patch port has no device")
        );
        assert_eq!(
            err(&patch_pair(
                "  type = \"patch\"\n  options = { peer = \"patch-int\", color = \"red\" }",
                PATCH_INT
            )),
            format!("{at}: options.color: unknown option for type \"patch\" (expected peer)")
        );
        // Both ends on one bridge.
        let same = r#"
[[bridge]]
name = "br0"
  [[bridge.port]]
  name = "pa"
  type = "patch"
  options = { peer = "pb" }
  [[bridge.port]]
  name = "pb"
  type = "patch"
  options = { peer = "pa" }
"#;
        assert_eq!(
            err(same),
            "bridge[0].port[0] \"pa\": options.peer: port \"pb\" is on the same bridge \"br0\" (a patch port joins two bridges)"
        );
        // A static forward needs datapath ports.
        let mut fwd = patch_pair(PATCH_TUN, PATCH_INT);
        fwd.push_str("  [[bridge.forward]]\n  in_port = \"patch-int\"\n  output = \"gre1\"\n");
        assert_eq!(
            err(&fwd),
            "bridge[1].forward[0].in_port: port \"patch-int\" is a patch port (a static forward needs a datapath port)"
        );
    }

    #[test]
    fn devargs_errors() {
        let cfg = |devargs: &str| {
            format!(
                "[[bridge]]\nname = \"br0\"\n[[bridge.port]]\nname = \"dpdk0\"\noptions = {{ dpdk-devargs = \"net_null0\" }}\n[[bridge.port]]\nname = \"dpdk1\"\noptions = {{ dpdk-devargs = \"{devargs}\" }}\n"
            )
        };
        assert_eq!(
            err(&cfg("xyz")),
            "bridge[0].port[1] \"dpdk1\": options.dpdk-devargs: \"xyz\" is neither a PCI address nor a vdev name (net_<driver><N>)"
        );
        assert_eq!(
            err(&cfg("net_pcap")),
            "bridge[0].port[1] \"dpdk1\": options.dpdk-devargs: \"net_pcap\" is neither a PCI address nor a vdev name (net_<driver><N>)"
        );
        assert_eq!(
            err(&cfg("net_foo0")),
            "bridge[0].port[1] \"dpdk1\": options.dpdk-devargs: unknown vdev driver \"foo\" in \"net_foo0\" (expected one of pcap, null, ring, tap, af_packet, vhost, virtio_user)"
        );
        assert_eq!(
            err(&cfg("net_pcap1,rx_pcap")),
            "bridge[0].port[1] \"dpdk1\": options.dpdk-devargs: argument \"rx_pcap\" in \"net_pcap1,rx_pcap\" is not key=value"
        );
        assert_eq!(
            err(&cfg("0000:01:00.8")),
            "bridge[0].port[1] \"dpdk1\": options.dpdk-devargs: \"0000:01:00.8\" is neither a PCI address nor a vdev name (net_<driver><N>)"
        );
        assert_eq!(
            err(&cfg("net_null0,size=64")),
            "bridge[0].port[1] \"dpdk1\": options.dpdk-devargs: device \"net_null0\" is already used by port \"dpdk0\""
        );
        assert_eq!(
            err(&with_port("name = \"p0\"")),
            "bridge[0].port[0] \"p0\": options.dpdk-devargs: required for type \"dpdk\" (a PCI address or a vdev such as \"net_pcap0,rx_pcap=in.pcap\")"
        );
        assert_eq!(
            err(&with_port(
                "name = \"p0\"\noptions = { dpdk-devargs = \"net_null0\", mtu = \"9000\" }"
            )),
            "bridge[0].port[0] \"p0\": options.mtu: unknown option for type \"dpdk\" (expected dpdk-devargs)"
        );
        // Every accepted driver and both PCI forms parse.
        for ok in [
            "net_pcap0",
            "net_null12",
            "net_ring0",
            "net_tap3,iface=x",
            "net_af_packet0,iface=veth0",
            "net_vhost0,iface=/tmp/s,queues=1",
            "net_virtio_user0,path=/tmp/s",
            "0000:af:1f.7",
            "AF:00.0",
        ] {
            assert!(Devargs::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            Devargs::parse("AF:00.0").unwrap().device_name(),
            "0000:af:00.0"
        );
    }

    #[test]
    fn cpu_errors() {
        assert_eq!(
            err("[pmd]\ncpus = [7]\n"),
            "pmd.cpus[0]: CPU 7 out of range (this machine has CPUs 0-1)"
        );
        assert_eq!(
            err("[pmd]\ncpus = [0]\n"),
            "pmd.cpus[0]: CPU 0 is the management CPU (pmd.mgmt_cpu)"
        );
        assert_eq!(
            err("[pmd]\ncpus = [1, 1]\n"),
            "pmd.cpus[1]: CPU 1 listed twice (also pmd.cpus[0])"
        );
        assert_eq!(
            err("[pmd]\nmgmt_cpu = 2\n"),
            "pmd.mgmt_cpu: CPU 2 out of range (this machine has CPUs 0-1)"
        );
        assert_eq!(
            err("[pmd]\nburst = 65\n"),
            "pmd.burst: 65 out of range (1..=64)"
        );
        assert_eq!(
            err("[pmd]\nburst = 0\n"),
            "pmd.burst: 0 out of range (1..=64)"
        );
        let one_cpu = HostFacts { ncpus: 1, ..HOST };
        let cfg = Config::from_toml_str("[pmd]\ncpus = [1]\n").unwrap();
        assert_eq!(
            cfg.validate(&one_cpu).unwrap_err().to_string(),
            "pmd.cpus[0]: CPU 1 out of range (this machine has CPU 0 only)"
        );
    }

    #[test]
    fn duplicate_names() {
        let text = r#"
[[bridge]]
name = "br0"
  [[bridge.port]]
  name = "p0"
  options = { dpdk-devargs = "net_null0" }
[[bridge]]
name = "br1"
  [[bridge.port]]
  name = "p0"
  options = { dpdk-devargs = "net_null1" }
"#;
        assert_eq!(
            err(text),
            "bridge \"br1\": duplicate port name \"p0\" (also bridge \"br0\")"
        );
        let text = r#"
[[bridge]]
name = "br0"
  [[bridge.port]]
  name = "p0"
  options = { dpdk-devargs = "net_null0" }
  [[bridge.port]]
  name = "p0"
  options = { dpdk-devargs = "net_null1" }
"#;
        assert_eq!(
            err(text),
            "bridge \"br0\": duplicate port name \"p0\" (twice in bridge \"br0\": port[0] and port[1])"
        );
        assert_eq!(
            err("[[bridge]]\nname = \"br0\"\n[[bridge]]\nname = \"br0\"\n"),
            "bridge[1].name: duplicate bridge name \"br0\" (also bridge[0])"
        );
        assert_eq!(
            err("[[bridge]]\nname = \"br0\"\n[[bridge]]\nname = \"br1\"\n[[bridge.port]]\nname = \"br0\"\noptions = { dpdk-devargs = \"net_null0\" }\n"),
            "bridge[1].port[0] \"br0\": name clashes with bridge \"br0\" (every bridge has an internal port of its own name)"
        );
        assert_eq!(
            err("[[bridge]]\n"),
            "bridge[0].name: required (a name such as \"br0\")"
        );
        assert_eq!(
            err("[[bridge]]\nname = \"a bridge\"\n"),
            "bridge[0].name: \"a bridge\" contains ' '; use letters, digits, '_', '-' or '.'"
        );
    }

    #[test]
    fn port_field_errors() {
        assert_eq!(
            err(&with_port(
                "name = \"p0\"\nn_rxq = 17\noptions = { dpdk-devargs = \"net_null0\" }"
            )),
            "bridge[0].port[0] \"p0\": n_rxq: 17 out of range (1..=16)"
        );
        assert_eq!(
            err(&with_port(
                "name = \"p0\"\nofport = 0\noptions = { dpdk-devargs = \"net_null0\" }"
            )),
            "bridge[0].port[0] \"p0\": ofport: 0 out of range (1..=65279)"
        );
        let text = r#"
[[bridge]]
name = "br0"
  [[bridge.port]]
  name = "p0"
  ofport = 5
  options = { dpdk-devargs = "net_null0" }
  [[bridge.port]]
  name = "p1"
  ofport = 5
  options = { dpdk-devargs = "net_null1" }
"#;
        assert_eq!(
            err(text),
            "bridge[0].port[1] \"p1\": ofport: 5 already requested by port \"p0\""
        );
    }

    #[test]
    fn vlan_and_mac_table_fields() {
        let port = |body: &str| {
            with_port(&format!(
                "name = \"p0\"\noptions = {{ dpdk-devargs = \"net_null0\" }}\n{body}"
            ))
        };
        let ok = Config::from_toml_str(&port(
            "tag = 10\ntrunks = [20, 30]\nvlan_mode = \"native-untagged\"",
        ))
        .unwrap();
        ok.validate(&HOST).unwrap();
        assert_eq!(
            ok.bridges[0].ports[0].vlan_mode(),
            Ok(VlanMode::NativeUntagged {
                tag: 10,
                trunks: Some(VlanSet::from_vids([20, 30]).unwrap())
            })
        );
        let access = Config::from_toml_str(&port("tag = 10")).unwrap();
        assert_eq!(
            access.bridges[0].ports[0].vlan_mode(),
            Ok(VlanMode::Access { tag: 10 })
        );
        assert_eq!(
            PortConfig::default().vlan_mode(),
            Ok(VlanMode::Trunk { trunks: None })
        );
        assert_eq!(
            err(&port("tag = 4096")),
            "bridge[0].port[0] \"p0\": tag: VLAN ID 4096 is out of range (0 to 4095)"
        );
        assert_eq!(
            err(&port("trunks = [1, 5000]")),
            "bridge[0].port[0] \"p0\": trunks[1]: VLAN ID 5000 is out of range (0 to 4095)"
        );
        assert_eq!(
            err(&port("vlan_mode = \"dot1q-tunnel\"")),
            "bridge[0].port[0] \"p0\": vlan_mode: \"dot1q-tunnel\" is not one of access, trunk, native-tagged, native-untagged"
        );
        assert_eq!(
            err(&port("tag = -1")),
            "bridge[0].port[0].tag: invalid value: integer `-1`, expected u16 (line 6)"
        );
        // Flows are checked against the tables the bridge starts with: the
        // default priority=0 NORMAL flow is there.
        let overlap = "[[bridge]]\nname = \"br0\"\n\
                       flows = [\"priority=0,check_overlap,in_port=p0 actions=drop\"]\n\
                       [[bridge.port]]\nname = \"p0\"\n\
                       options = { dpdk-devargs = \"net_null0\" }\n";
        assert_eq!(
            err(overlap),
            "bridge[0].flows[0]: check_overlap: overlaps an existing rule of priority 0 in table 0"
        );
        let bridge = |body: &str| format!("[[bridge]]\nname = \"br0\"\n{body}\n");
        Config::from_toml_str(&bridge("mac_aging_time = 15\nmac_table_size = 1000000"))
            .unwrap()
            .validate(&HOST)
            .unwrap();
        assert_eq!(
            err(&bridge("mac_aging_time = 14")),
            "bridge[0].mac_aging_time: 14 out of range (15..=3600)"
        );
        assert_eq!(
            err(&bridge("mac_aging_time = 3601")),
            "bridge[0].mac_aging_time: 3601 out of range (15..=3600)"
        );
        assert_eq!(
            err(&bridge("mac_table_size = 9")),
            "bridge[0].mac_table_size: 9 out of range (10..=1000000)"
        );
    }

    #[test]
    fn forward_errors() {
        let base = TWO_PORTS.replace("output = \"dpdk1\"", "output = \"dpdk9\"");
        assert_eq!(
            err(&base),
            "bridge[0].forward[0].output: no port \"dpdk9\" in bridge \"br0\""
        );
        let same = TWO_PORTS.replace("output = \"dpdk1\"", "output = \"dpdk0\"");
        assert_eq!(
            err(&same),
            "bridge[0].forward[0].output: same as in_port \"dpdk0\" (a packet is never sent back out its in port)"
        );
        let twice = format!(
            "{TWO_PORTS}  [[bridge.forward]]\n  in_port = \"dpdk0\"\n  output = \"dpdk1\"\n"
        );
        assert_eq!(
            err(&twice),
            "bridge[0].forward[1].in_port: port \"dpdk0\" already has a forward (bridge[0].forward[0])"
        );
        let missing = format!("{TWO_PORTS}  [[bridge.forward]]\n  output = \"dpdk0\"\n");
        assert_eq!(
            err(&missing),
            "bridge[0].forward[1].in_port: required (a port name)"
        );
    }

    #[test]
    fn hugepage_and_dpdk_errors() {
        let no_huge = HostFacts {
            hugepages_free: 0,
            ..HOST
        };
        let msg = "dpdk.hugepages: no free hugepages (HugePages_Free is 0 in /proc/meminfo and/or no hugetlbfs mounted); run 'echo 1024 > /proc/sys/vm/nr_hugepages' or set dpdk.hugepages = false";
        let cfg = Config::default();
        assert_eq!(cfg.validate(&no_huge).unwrap_err().to_string(), msg);
        let unmounted = HostFacts {
            hugetlbfs_mounted: false,
            ..HOST
        };
        assert_eq!(cfg.validate(&unmounted).unwrap_err().to_string(), msg);
        let cfg = Config::from_toml_str("[dpdk]\nhugepages = false\n").unwrap();
        cfg.validate(&no_huge).unwrap();

        assert_eq!(
            err("[dpdk]\nlog_level = \"loud\"\n"),
            "dpdk.log_level: \"loud\" is not a log level (expected emerg, alert, crit, err, warning, notice, info, debug or 1..8)"
        );
        assert_eq!(
            err("[dpdk]\nlog_level = \"9\"\n"),
            "dpdk.log_level: \"9\" is not a log level (expected emerg, alert, crit, err, warning, notice, info, debug or 1..8)"
        );
        assert_eq!(
            err("[dpdk]\nmbuf_cache = 513\nmbufs = 100000\n"),
            "dpdk.mbuf_cache: 513 exceeds DPDK's limit of 512"
        );
        assert_eq!(
            err("[dpdk]\nmbufs = 300\n"),
            "dpdk.mbuf_cache: 256 is too large for dpdk.mbufs = 300 (DPDK needs mbuf_cache * 1.5 <= mbufs)"
        );
        assert_eq!(
            err("[metrics]\nlisten = \"nowhere\"\n"),
            "metrics.listen: \"nowhere\" is not an address:port (e.g. \"127.0.0.1:9477\"), \"\" or \"off\""
        );
        for off in ["", "off"] {
            let cfg = Config::from_toml_str(&format!("[metrics]\nlisten = \"{off}\"\n")).unwrap();
            cfg.validate(&HOST).unwrap();
            assert_eq!(cfg.metrics.listen_addr(), None);
        }
    }

    #[test]
    fn load_names_the_file() {
        let missing = Path::new("/nonexistent/ferroswitch.toml");
        assert_eq!(
            Config::load(missing).unwrap_err().to_string(),
            "cannot read config /nonexistent/ferroswitch.toml: No such file"
        );
        let dir = std::env::temp_dir().join(format!("fs-mgmt-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[pmd]\nburst = 0\nmgmt = 1\n").unwrap();
        let e = Config::load(&file).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: pmd.mgmt: unknown field `mgmt`, expected one of `cpus`, `mgmt_cpu`, `burst`, `emc_entries`, `emc_insert_inv_prob`, `simple_match`, `megaflow_idle_ms`, `flow_limit` (line 3)",
                file.display()
            )
        );
        let err = Config::load(&file).unwrap_err();
        assert_eq!(err.path(), Some("pmd.mgmt"));
        assert_eq!(
            err.to_json(),
            serde_json::json!({
                "error": e,
                "file": file.display().to_string(),
                "path": "pmd.mgmt",
                "reason": "unknown field `mgmt`, expected one of `cpus`, `mgmt_cpu`, `burst`, `emc_entries`, `emc_insert_inv_prob`, `simple_match`, `megaflow_idle_ms`, `flow_limit` (line 3)",
            })
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn host_fact_parsers() {
        assert_eq!(parse_cpu_list_max("0-1\n"), Some(1));
        assert_eq!(parse_cpu_list_max("0-3,5,8-9\n"), Some(9));
        assert_eq!(parse_cpu_list_max("0\n"), Some(0));
        assert_eq!(parse_cpu_list_max("x"), None);
        assert_eq!(
            parse_meminfo_hugepages_free(
                "MemTotal: 1 kB\nHugePages_Total:    1024\nHugePages_Free:     1000\n"
            ),
            Some(1000)
        );
        assert_eq!(parse_meminfo_hugepages_free("MemTotal: 1 kB\n"), None);
        assert!(mounts_have_hugetlbfs(
            "proc /proc proc rw 0 0\nhugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n"
        ));
        assert!(!mounts_have_hugetlbfs("proc /proc proc rw 0 0\n"));
        let facts = HostFacts::probe();
        assert!(facts.ncpus >= 1);
    }

    const BOND: &str = r#"
[[bridge]]
name = "br0"
  [[bridge.port]]
  name = "host"
  options = { dpdk-devargs = "net_af_packet0,iface=vh" }
  [[bridge.port]]
  name = "bond0"
  bond_mode = "balance-tcp"
  lacp = "active"
  other_config = { lacp-time = "fast" }
  tag = 10
    [[bridge.port.interface]]
    name = "eth0"
    options = { dpdk-devargs = "net_af_packet1,iface=va" }
    [[bridge.port.interface]]
    name = "eth1"
    ofport = 7
    options = { dpdk-devargs = "net_af_packet2,iface=vb" }
"#;

    #[test]
    fn bond_members_are_datapath_ports_with_openflow_numbers_of_their_own() {
        let cfg = Config::from_toml_str(BOND).unwrap();
        cfg.validate(&HOST).unwrap();
        let bond = &cfg.bridges[0].ports[1];
        assert_eq!(
            bond.bond_settings(),
            Ok(BondSettings {
                mode: BondMode::BalanceTcp,
                lacp: LacpMode::Active,
                lacp_fast: true,
            })
        );
        assert_eq!(
            cfg.bridges[0].ofports(),
            [
                ("host".to_string(), 1),
                ("eth0".to_string(), 2),
                ("eth1".to_string(), 7),
                ("br0".to_string(), OFPORT_LOCAL)
            ]
        );
        let dp: Vec<(String, u32, String, Option<String>)> = cfg
            .datapath_ports()
            .into_iter()
            .map(|p| (p.port.name, p.ofport, p.devargs, p.bond))
            .collect();
        assert_eq!(
            dp,
            [
                ("host".into(), 1, "net_af_packet0,iface=vh".into(), None),
                (
                    "eth0".into(),
                    2,
                    "net_af_packet1,iface=va".into(),
                    Some("bond0".into())
                ),
                (
                    "eth1".into(),
                    7,
                    "net_af_packet2,iface=vb".into(),
                    Some("bond0".into())
                ),
                (
                    "br0".into(),
                    OFPORT_LOCAL,
                    "net_tap0,iface=br0".into(),
                    None
                ),
            ]
        );
    }

    #[test]
    fn bond_errors_name_the_field() {
        let cases = [
            (
                BOND.replace("balance-tcp", "round-robin"),
                "bridge[0].port[1] \"bond0\": bond_mode: \"round-robin\" is not one of active-backup, balance-slb, balance-tcp",
            ),
            (
                BOND.replace("lacp = \"active\"", "lacp = \"on\""),
                "bridge[0].port[1] \"bond0\": lacp: \"on\" is not one of off, active, passive",
            ),
            (
                BOND.replace("lacp = \"active\"", "lacp = \"off\""),
                "bridge[0].port[1] \"bond0\": bond_mode: balance-tcp needs lacp (active or passive)",
            ),
            (
                BOND.replace("lacp-time = \"fast\"", "lacp-time = \"quick\""),
                "bridge[0].port[1] \"bond0\": other_config.lacp-time: \"quick\" is not one of fast, slow",
            ),
            (
                BOND.replace("lacp-time = \"fast\"", "bond-miimon = \"100\""),
                "bridge[0].port[1] \"bond0\": other_config.bond-miimon: unknown key (expected lacp-time)",
            ),
            (
                BOND.replace("name = \"eth1\"", "name = \"host\""),
                "bridge \"br0\": duplicate port name \"host\" (twice in bridge \"br0\": port[0] and port[1].interface[1])",
            ),
            (
                BOND.replace("net_af_packet2,iface=vb", "net_af_packet1,iface=vb"),
                "bridge[0].port[1].interface[1] \"eth1\": options.dpdk-devargs: device \"net_af_packet1\" is already used by port \"eth0\"",
            ),
            (
                BOND.replace("    name = \"eth0\"\n", "    name = \"eth0\"\n    type = \"internal\"\n"),
                "bridge[0].port[1] \"bond0\": interface[0].type: a bond member must be \"dpdk\", got \"internal\"",
            ),
            (
                BOND.replace("  tag = 10\n", "  tag = 10\n  options = { dpdk-devargs = \"net_null0\" }\n"),
                "bridge[0].port[1] \"bond0\": options.dpdk-devargs: a bond has no options of its own (its interfaces have)",
            ),
            (
                BOND.replace("  name = \"host\"\n", "  name = \"host\"\n  lacp = \"active\"\n"),
                "bridge[0].port[0] \"host\": lacp: only a bond (a port with [[bridge.port.interface]] entries) has one",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(err(&text), want);
        }
        let one = BOND
            .split("    [[bridge.port.interface]]\n    name = \"eth1\"")
            .next()
            .unwrap();
        assert_eq!(
            err(one),
            "bridge[0].port[1] \"bond0\": interface: a bond needs at least 2 interfaces"
        );
    }
}
