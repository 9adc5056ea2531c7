//! Bridges and ports changed while the switch runs: `ctl add-br`, `del-br`,
//! `add-port`, `del-port`, `set-port`, as `ovs-vsctl` has them.
//!
//! A change is checked on a copy of the running config first
//! (`mgmt::topology`); then the datapath opens or closes the port
//! (`pmd::Datapath::add_port`/`remove_port`: the PMDs take it up or let it go
//! between bursts, nothing else stops) and the slow path adds or removes it,
//! revalidating only the megaflows of its bridge; only then is the copy kept.
//! A step that fails undoes the steps before it, so a refused change leaves
//! everything as it was. Removal goes the other way: the slow path first (the
//! port's megaflows leave the PMDs), then the datapath.
//!
//! Changes are not written back to the config file: a restart starts from
//! the file, as `ovs-vswitchd` would without its database.

use std::sync::{Arc, Mutex, RwLock};

use mgmt::config::{interface_exists, Config, PortConfig, OFPORT_LOCAL};
use mgmt::control::{CommandExtension, Request, Response};
use mgmt::ofproto::{bridge_from_config, BridgePort, Ofproto};
use mgmt::topology::{port_from_args, VlanChange};
use mgmt::SharedConfig;

use crate::slowpath::PmdControl;

/// The commands, with their synopses (`ctl help`).
pub const COMMANDS: &[&str] = &[
    "add-br BRIDGE",
    "del-br BRIDGE",
    "add-port BRIDGE PORT [type=T] [options:K=V]... [other_config:pmd-rxq-affinity=Q:CPU,...] [tag=N] [trunks=N,M] [vlan_mode=M] [n_rxq=N] [ofport_request=N]",
    "del-port [BRIDGE] PORT",
    "set-port PORT [tag=N|tag=[]] [trunks=N,M|trunks=[]] [vlan_mode=M]",
];

/// What runtime changes act on.
pub struct Reconfig {
    pub cfg: SharedConfig,
    pub dp: Arc<pmd::Datapath>,
    pub ofproto: Arc<Mutex<Ofproto<PmdControl>>>,
    /// One change at a time.
    changing: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The control commands over `r`.
pub fn commands(r: Arc<Reconfig>) -> CommandExtension {
    CommandExtension {
        commands: COMMANDS.iter().map(|s| s.to_string()).collect(),
        handler: Arc::new(move |req: &Request| r.handle(req)),
    }
}

/// Two sets of extension commands as one: `first` answers what it knows.
pub fn chain(first: CommandExtension, then: CommandExtension) -> CommandExtension {
    let mut commands = first.commands.clone();
    commands.extend(then.commands.iter().cloned());
    CommandExtension {
        commands,
        handler: Arc::new(move |req: &Request| {
            (first.handler)(req).or_else(|| (then.handler)(req))
        }),
    }
}

/// The lowest index N of a `net_<driver>N` device that neither a running
/// port nor the config uses.
fn free_vdev_index(dp: &pmd::Datapath, cfg: &Config, driver: &str) -> u32 {
    let prefix = format!("net_{driver}");
    let index = |devargs: &str| -> Option<u32> {
        let name = devargs.split(',').next()?;
        name.strip_prefix(&prefix)?.parse().ok()
    };
    let mut used: Vec<u32> = dp
        .ports()
        .iter()
        .filter_map(|p| index(&p.spec.devargs))
        .collect();
    used.extend(
        cfg.bridges
            .iter()
            .flat_map(|b| &b.ports)
            .filter_map(|p| p.devargs().and_then(index)),
    );
    (0..).find(|n| !used.contains(n)).unwrap_or(0)
}

/// The datapath's kind of port for a configured port type (a tunnel type
/// for the deviceless port every tunnel of that type shares).
pub fn port_kind(p: &PortConfig) -> pmd::PortKind {
    if let Some(kind) = pipeline::ofproto::tnl::kind_of_type(&p.port_type) {
        // The shared port's synthesized config carries the UDP port it
        // listens on (none for GRE).
        let dst_port = p
            .options
            .get("dst_port")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| kind.default_port());
        pmd::PortKind::Tunnel { kind, dst_port }
    } else if p.is_vhost() {
        pmd::PortKind::VhostUser {
            client: p.is_vhost_client(),
        }
    } else if p.is_internal() {
        pmd::PortKind::Internal
    } else {
        pmd::PortKind::Dpdk
    }
}

/// Makes the directory of a `dpdkvhostuser` port's socket (the switch creates
/// the socket there; QEMU connects to it).
pub fn make_socket_dir(cfg: &Config, p: &PortConfig) -> Result<(), String> {
    match cfg.vhost_socket(p) {
        Some(sock) if !p.is_vhost_client() => {
            let dir = sock.parent().unwrap_or(&cfg.dpdk.vhost_sock_dir);
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("dpdk.vhost_sock_dir: cannot create {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}

impl Reconfig {
    pub fn new(
        cfg: SharedConfig,
        dp: Arc<pmd::Datapath>,
        ofproto: Arc<Mutex<Ofproto<PmdControl>>>,
    ) -> Reconfig {
        Reconfig {
            cfg,
            dp,
            ofproto,
            changing: Mutex::new(()),
        }
    }

    fn config(&self) -> Config {
        self.cfg.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn commit(&self, cfg: Config) {
        *self.cfg.write().unwrap_or_else(|e| e.into_inner()) = cfg;
    }

    fn handle(&self, req: &Request) -> Option<Response> {
        let args: Vec<&str> = req
            .args
            .iter()
            .map(String::as_str)
            .filter(|a| *a != "--json")
            .collect();
        let result = match (req.cmd.as_str(), args.as_slice()) {
            ("add-br", [br]) => self.add_br(br),
            ("del-br", [br]) => self.del_br(br),
            ("add-port", [br, port, settings @ ..]) => self.add_port(br, port, settings),
            ("del-port", [port]) => self.del_port(None, port),
            ("del-port", [br, port]) => self.del_port(Some(br), port),
            ("set-port", [port, settings @ ..]) => self.set_port(port, settings),
            (cmd, _) => match COMMANDS.iter().find(|c| c.split(' ').next() == Some(cmd)) {
                Some(synopsis) => Err(format!("wrong arguments (usage: {synopsis})")),
                None => return None,
            },
        };
        Some(match result {
            Ok(()) => Response::success(String::new()),
            Err(e) => Response::failure(format!("{}: {e}", req.cmd)),
        })
    }

    /// Opens the datapath port of `port` on `bridge` with OpenFlow number
    /// `ofport`; returns its datapath number.
    fn open(
        &self,
        cfg: &Config,
        bridge: &str,
        port: &PortConfig,
        ofport: u32,
    ) -> Result<usize, String> {
        let devargs = if port.is_vhost() {
            make_socket_dir(cfg, port)?;
            cfg.vhost_devargs(port, free_vdev_index(&self.dp, cfg, "vhost"))
        } else if port.is_internal() {
            if interface_exists(&port.name) {
                return Err(format!(
                    "a network interface {:?} already exists on this host; the switch makes a tap device of that name",
                    port.name
                ));
            }
            let n = free_vdev_index(&self.dp, cfg, "tap");
            format!("net_tap{n},iface={}", port.name)
        } else {
            port.devargs().unwrap_or_default().to_string()
        };
        let kind = port_kind(port);
        self.dp
            .add_port(pmd::PortSpec {
                bridge: bridge.to_string(),
                name: port.name.clone(),
                ofport,
                devargs,
                n_rxq: port.n_rxq,
                kind,
                rxq_affinity: port.rxq_affinity()?,
            })
            .map_err(|e| e.to_string())
    }

    fn add_br(&self, name: &str) -> Result<(), String> {
        let _one = lock(&self.changing);
        let cfg = self.config().with_bridge(name).map_err(|e| e.to_string())?;
        let b = cfg
            .bridges
            .iter()
            .find(|b| b.name == name)
            .ok_or("bridge missing")?;
        let own = b.local_port();
        let odp = self.open(&cfg, name, &own, OFPORT_LOCAL)?;
        let ports = vec![BridgePort {
            name: name.to_string(),
            ofport: OFPORT_LOCAL,
            odp,
        }];
        let added =
            bridge_from_config(b, ports).and_then(|bridge| lock(&self.ofproto).add_bridge(bridge));
        if let Err(e) = added {
            let _ = self.dp.remove_port(odp);
            return Err(e);
        }
        self.commit(cfg);
        Ok(())
    }

    fn del_br(&self, name: &str) -> Result<(), String> {
        let _one = lock(&self.changing);
        let cfg = self
            .config()
            .without_bridge(name)
            .map_err(|e| e.to_string())?;
        let odps = lock(&self.ofproto).del_bridge(name)?;
        // The slow path let go of the bridge: from here the change is made, even
        // if a port would not close (it is reported).
        self.commit(cfg);
        for odp in odps {
            self.dp.remove_port(odp).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn add_port(&self, bridge: &str, name: &str, settings: &[&str]) -> Result<(), String> {
        let _one = lock(&self.changing);
        let port = port_from_args(name, settings).map_err(|e| e.to_string())?;
        let (cfg, ofport) = self
            .config()
            .with_port(bridge, port.clone())
            .map_err(|e| e.to_string())?;
        if port.is_patch() {
            // No device: the slow path joins the bridges.
            lock(&self.ofproto).add_patch_port(
                bridge,
                name,
                ofport,
                port.peer().unwrap_or_default(),
            )?;
            self.commit(cfg);
            return Ok(());
        }
        let mode = port.vlan_mode()?;
        if port.is_tunnel() {
            return self.add_tunnel_port(cfg, bridge, &port, ofport, mode);
        }
        let odp = self.open(&cfg, bridge, &port, ofport)?;
        let bp = BridgePort {
            name: name.to_string(),
            ofport,
            odp,
        };
        let added = if port.is_internal() {
            lock(&self.ofproto).add_internal_port(bridge, bp, mode)
        } else {
            lock(&self.ofproto).add_port(bridge, bp, mode)
        };
        if let Err(e) = added {
            let _ = self.dp.remove_port(odp);
            return Err(e);
        }
        self.commit(cfg);
        Ok(())
    }

    /// A tunnel port: no device of its own; the datapath port of its kind and
    /// UDP port (`vxlan_sys_4789`, ...) is opened if no tunnel uses it yet.
    fn add_tunnel_port(
        &self,
        cfg: Config,
        bridge: &str,
        port: &PortConfig,
        ofport: u32,
        mode: pipeline::ofproto::normal::VlanMode,
    ) -> Result<(), String> {
        let c = port.tunnel_config()?;
        let existing = lock(&self.ofproto).tunnel_odp(c.kind, c.dst_port);
        let odp = match existing {
            Some(odp) => odp,
            None => {
                let name = c.datapath_port_name();
                let shared = PortConfig {
                    name: name.clone(),
                    port_type: port.port_type.clone(),
                    ..PortConfig::default()
                };
                self.dp
                    .add_port(pmd::PortSpec {
                        name,
                        kind: port_kind(&shared),
                        ..pmd::PortSpec::default()
                    })
                    .map_err(|e| e.to_string())?
            }
        };
        let added = lock(&self.ofproto).add_tunnel_port(bridge, &port.name, ofport, odp, c, mode);
        if let Err(e) = added {
            if existing.is_none() {
                let _ = self.dp.remove_port(odp);
            }
            return Err(e);
        }
        self.commit(cfg);
        Ok(())
    }

    fn del_port(&self, bridge: Option<&str>, name: &str) -> Result<(), String> {
        let _one = lock(&self.changing);
        let current = self.config();
        let port = not_a_bond(&current, name)?;
        let (cfg, on) = current.without_port(name).map_err(|e| e.to_string())?;
        if let Some(b) = bridge.filter(|b| *b != on) {
            return Err(format!(
                "bridge {b} does not have a port {name} (it is on {on})"
            ));
        }
        if port.is_some_and(PortConfig::is_patch) {
            lock(&self.ofproto).del_patch_port(&on, name)?;
            self.commit(cfg);
            return Ok(());
        }
        if port.is_some_and(PortConfig::is_tunnel) {
            let unused = lock(&self.ofproto).del_tunnel_port(&on, name)?;
            self.commit(cfg);
            // The last tunnel of its kind and UDP port: the shared datapath
            // port goes too.
            if let Some(odp) = unused {
                self.dp.remove_port(odp).map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
        let odp = lock(&self.ofproto).del_port(&on, name)?;
        self.commit(cfg);
        self.dp.remove_port(odp).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn set_port(&self, name: &str, settings: &[&str]) -> Result<(), String> {
        let _one = lock(&self.changing);
        let change = VlanChange::parse(settings).map_err(|e| e.to_string())?;
        let current = self.config();
        not_a_bond(&current, name)?;
        let (cfg, bridge) = current
            .with_port_vlan(name, &change)
            .map_err(|e| e.to_string())?;
        let mode = cfg
            .find_port(name)
            .map(|(_, p)| p.vlan_mode())
            .ok_or("port missing")??;
        lock(&self.ofproto).set_port_vlan(&bridge, name, mode)?;
        self.commit(cfg);
        Ok(())
    }
}

/// The port called `name`, if any, refused if it is a bond: bonds change
/// only in the config file (and a restart) for now.
fn not_a_bond<'a>(cfg: &'a Config, name: &str) -> Result<Option<&'a PortConfig>, String> {
    let port = cfg.find_port(name).map(|(_, p)| p);
    if port.is_some_and(PortConfig::is_bond) {
        return Err(format!(
            "{name} is a bond: bonds are changed in the config file (restart), not at runtime yet"
        ));
    }
    Ok(port)
}

/// The running config, shared by the control socket (`show`) and runtime
/// changes: `cfg` with every port's OpenFlow number pinned (see
/// `mgmt::topology`).
pub fn shared_config(mut cfg: Config) -> SharedConfig {
    cfg.pin_ofports();
    Arc::new(RwLock::new(cfg))
}
