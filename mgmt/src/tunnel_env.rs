//! The route table, neighbor cache and local addresses of native tunneling,
//! together: [`TunnelTables`], what translation asks through
//! [`TunnelEnv`], and the `ctl route ...` / `ctl neigh ...` commands.
//!
//! The tables know the switch's internal ports (every bridge's own port and
//! the `type = "internal"` ports: taps in the host kernel) from the running
//! config ([`TunnelTables::set_internal_ports`]) and the kernel's addresses
//! and routes from rtnetlink ([`TunnelTables::set_kernel`], fed by the
//! `mgmt-route` thread of [`crate::rtnl`]). From those two they derive:
//! - the local addresses: every IPv4 address of an internal port
//!   ([`TunnelEnv::is_local_ip`], [`TunnelEnv::port_has_ip`]);
//! - the cached routes: for an address A/len on internal port P of bridge
//!   B, the local route A/32 and the connected route (A/len network) via P,
//!   source A; and each kernel route of the main table whose output device
//!   is P (`ip route add 10.0.0.0/8 via 172.16.0.254 dev br-phy`), with its
//!   gateway and source (the route's `src` if it is P's, else P's address
//!   on the destination's subnet, else on the gateway's; a route with none
//!   is left out, as OVS does). The addresses count whether the port is up
//!   or down;
//! - each internal port's MAC (the kernel's link address): the outer
//!   Ethernet source of tunnel packets.
//!
//! Every change of a route, a neighbor, a local address or a port's MAC
//! moves [`TunnelEnv::generation`], so the slow path revalidates the
//! megaflows of tunnel traffic.
//!
//! # Thread safety
//! One [`SharedTunnelTables`] (`Arc<Mutex<TunnelTables>>`) is shared by the
//! control socket, the `mgmt-route` thread and the slow path (which holds it
//! as `Arc<Mutex<dyn TunnelEnv + Send>>`). Nobody holds another lock while
//! taking it, except the slow path (its own lock, then this one), so no
//! lock order can deadlock. Never touched per packet.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use pipeline::ofproto::xlate::{TnlRoute, TunnelEnv};
use serde_json::json;

use crate::config::Config;
use crate::control::{CommandExtension, Request, Response};
use crate::neigh::{is_unicast_mac, mac_text, parse_mac, NeighCache, NeighConfig};
use crate::route::{
    ip_text, lookup_text, mask, parse_ip, parse_prefix, Route, RouteOrigin, RouteTable,
};
use crate::rtnl::KernelView;

/// The path MTU assumed when the kernel shows none for a route's port.
const DEFAULT_PATH_MTU: u16 = 1500;
use crate::SharedConfig;

/// The tables shared by the control socket, the `mgmt-route` thread and the
/// slow path.
pub type SharedTunnelTables = Arc<Mutex<TunnelTables>>;

/// Locks the tables. A panic while holding the lock leaves them as the last
/// complete operation left them (each applies all or nothing).
pub fn lock(t: &Mutex<TunnelTables>) -> MutexGuard<'_, TunnelTables> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// The internal ports of `cfg` (each bridge's own port and its
/// `type = "internal"` ports): port name -> bridge name.
pub fn internal_ports(cfg: &Config) -> BTreeMap<String, String> {
    cfg.bridges
        .iter()
        .flat_map(|b| {
            b.all_ports()
                .into_iter()
                .filter(|p| p.is_internal())
                .map(|p| (p.name, b.name.clone()))
        })
        .collect()
}

/// The address of `addrs` on the longest prefix that holds `ip`
/// (OVS's choice of a route's source).
fn pick_src(addrs: &[(u32, u8)], ip: u32) -> Option<u32> {
    addrs
        .iter()
        .filter(|(a, len)| a & mask(*len) == ip & mask(*len))
        .max_by_key(|(_, len)| *len)
        .map(|(a, _)| *a)
}

fn addrs_text(addrs: &[(u32, u8)]) -> String {
    if addrs.is_empty() {
        return "it has no IPv4 address".to_string();
    }
    let list: Vec<String> = addrs
        .iter()
        .map(|(a, l)| format!("{}/{l}", ip_text(*a)))
        .collect();
    format!("its addresses: {}", list.join(", "))
}

/// Route table, neighbor cache, local addresses and port MACs.
#[derive(Debug)]
pub struct TunnelTables {
    /// Internal port -> its bridge, from the running config.
    ports: BTreeMap<String, String>,
    /// The kernel's last view.
    kernel: KernelView,
    /// Derived: each internal port's IPv4 addresses (address, prefix length).
    port_addrs: BTreeMap<String, Vec<(u32, u8)>>,
    /// Derived: each internal port's MAC.
    port_macs: BTreeMap<String, [u8; 6]>,
    /// Derived: each internal port's MTU.
    port_mtus: BTreeMap<String, u32>,
    routes: RouteTable,
    neigh: NeighCache,
    generation: u64,
    start: Instant,
    warp_ms: u64,
}

impl TunnelTables {
    /// Empty tables: no ports, no kernel view yet.
    pub fn new(neigh: &NeighConfig) -> TunnelTables {
        TunnelTables {
            ports: BTreeMap::new(),
            kernel: KernelView::default(),
            port_addrs: BTreeMap::new(),
            port_macs: BTreeMap::new(),
            port_mtus: BTreeMap::new(),
            routes: RouteTable::new(),
            neigh: NeighCache::new(neigh),
            generation: 0,
            start: Instant::now(),
            warp_ms: 0,
        }
    }

    /// [`TunnelTables::new`], ready to share.
    pub fn shared(neigh: &NeighConfig) -> SharedTunnelTables {
        Arc::new(Mutex::new(TunnelTables::new(neigh)))
    }

    /// Milliseconds since the tables were made, plus any
    /// [`TunnelTables::warp`]: the neighbor cache's clock.
    pub fn now_ms(&self) -> u64 {
        (self.start.elapsed().as_millis() as u64).saturating_add(self.warp_ms)
    }

    /// Moves the clock `ms` forward (OVS `time/warp`): neighbor ages see the
    /// time pass.
    pub fn warp(&mut self, ms: u64) {
        self.warp_ms = self.warp_ms.saturating_add(ms);
    }

    /// The route table.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The neighbor cache.
    pub fn neigh(&self) -> &NeighCache {
        &self.neigh
    }

    /// The IPv4 addresses of internal port `port` (address, prefix length).
    pub fn port_addrs(&self, port: &str) -> &[(u32, u8)] {
        self.port_addrs.get(port).map_or(&[], Vec::as_slice)
    }

    /// The MAC of internal port `port`, as the kernel reports it.
    pub fn port_mac(&self, port: &str) -> Option<[u8; 6]> {
        self.port_macs.get(port).copied()
    }

    /// The MTU of internal port `port`, as the kernel reports it.
    pub fn port_mtu(&self, port: &str) -> Option<u32> {
        self.port_mtus.get(port).copied()
    }

    fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Sets the internal ports (port name -> bridge name, from
    /// [`internal_ports`]). Neighbors of bridges that went away are
    /// forgotten; user routes stay (as in OVS; lookups through a route whose
    /// port is gone find no MAC and fail).
    pub fn set_internal_ports(&mut self, ports: BTreeMap<String, String>) {
        if ports == self.ports {
            return;
        }
        self.ports = ports;
        let bridges: Vec<&String> = self.ports.values().collect();
        if self
            .neigh
            .retain_bridges(|b| bridges.iter().any(|x| x.as_str() == b))
        {
            self.bump();
        }
        self.rebuild();
    }

    /// Takes the kernel's view (from [`crate::rtnl::dump`]).
    pub fn set_kernel(&mut self, view: KernelView) {
        if view == self.kernel {
            return;
        }
        self.kernel = view;
        self.rebuild();
    }

    /// Derives addresses, MACs and cached routes again; moves the generation
    /// if any of them changed.
    fn rebuild(&mut self) {
        let k = &self.kernel;
        let port_of = |ifindex: u32| {
            k.links
                .get(&ifindex)
                .filter(|l| self.ports.contains_key(&l.name))
        };
        let mut port_addrs: BTreeMap<String, Vec<(u32, u8)>> = BTreeMap::new();
        for a in &k.addrs {
            if let Some(link) = port_of(a.ifindex) {
                port_addrs
                    .entry(link.name.clone())
                    .or_default()
                    .push((a.ip, a.len));
            }
        }
        let port_macs: BTreeMap<String, [u8; 6]> = k
            .links
            .values()
            .filter(|l| self.ports.contains_key(&l.name))
            .filter_map(|l| Some((l.name.clone(), l.mac?)))
            .collect();
        let port_mtus: BTreeMap<String, u32> = k
            .links
            .values()
            .filter(|l| self.ports.contains_key(&l.name))
            .filter_map(|l| Some((l.name.clone(), l.mtu?)))
            .collect();
        let cached_route = |prefix: u32, len: u8, gateway, port: &str, src, local| Route {
            prefix,
            len,
            gateway,
            bridge: self.ports.get(port).cloned().unwrap_or_default(),
            port: port.to_string(),
            src,
            origin: RouteOrigin::Cached,
            local,
        };
        // Routes of the addresses first: they win over the kernel's copy
        // of a connected route (the same route).
        let mut cached = Vec::new();
        for (port, addrs) in &port_addrs {
            for &(ip, len) in addrs {
                cached.push(cached_route(ip, 32, None, port, ip, true));
                if len < 32 {
                    cached.push(cached_route(ip & mask(len), len, None, port, ip, false));
                }
            }
        }
        let mut kroutes = k.routes.clone();
        kroutes.sort_by_key(|r| r.metric);
        for r in &kroutes {
            let Some(link) = port_of(r.oif) else {
                continue;
            };
            let addrs = port_addrs.get(&link.name).map_or(&[][..], Vec::as_slice);
            let src = r
                .prefsrc
                .filter(|s| addrs.iter().any(|(a, _)| a == s))
                .or_else(|| pick_src(addrs, r.dst))
                .or_else(|| r.gateway.and_then(|g| pick_src(addrs, g)));
            if let Some(src) = src {
                cached.push(cached_route(
                    r.dst, r.len, r.gateway, &link.name, src, false,
                ));
            }
        }
        let mut changed = self.routes.set_cached(cached);
        changed |= port_addrs != self.port_addrs
            || port_macs != self.port_macs
            || port_mtus != self.port_mtus;
        self.port_addrs = port_addrs;
        self.port_macs = port_macs;
        self.port_mtus = port_mtus;
        if changed {
            self.bump();
        }
    }

    /// Periodic work: removes expired neighbors.
    pub fn run_periodic(&mut self) {
        let now = self.now_ms();
        if self.neigh.expire(now) {
            self.bump();
        }
    }

    fn bridges_text(&self) -> String {
        let mut bridges: Vec<&str> = self.ports.values().map(String::as_str).collect();
        bridges.sort_unstable();
        bridges.dedup();
        if bridges.is_empty() {
            "there are no bridges".to_string()
        } else {
            format!("bridges: {}", bridges.join(", "))
        }
    }

    /// `route add PREFIX/LEN BRIDGE [GW] [src=IP]` (OVS `ovs/route/add`):
    /// BRIDGE is a bridge (the route leaves by its own port) or an internal
    /// port. Without `src=` the source is the port's address on the
    /// prefix's subnet, else on the gateway's. A user route of the same
    /// prefix is replaced. Every argument is checked before anything
    /// changes.
    pub fn route_add(&mut self, args: &[&str]) -> Result<String, String> {
        const USAGE: &str = "usage: route add PREFIX/LEN BRIDGE [GW] [src=IP]";
        let [prefix, target, rest @ ..] = args else {
            return Err(format!("wrong number of arguments ({USAGE})"));
        };
        let (prefix, len) = parse_prefix(prefix).map_err(|e| format!("prefix: {e}"))?;
        // A bridge's own port has the bridge's name: either names a port.
        let Some(bridge) = self.ports.get(*target).cloned() else {
            return Err(format!(
                "bridge: no bridge or internal port named \"{target}\" ({})",
                self.bridges_text()
            ));
        };
        let port = target.to_string();
        let mut gateway = None;
        let mut src = None;
        for arg in rest {
            if let Some(s) = arg.strip_prefix("src=") {
                if src.is_some() {
                    return Err(format!("src: given twice ({USAGE})"));
                }
                src = Some(parse_ip(s).map_err(|e| format!("src: {e}"))?);
            } else if gateway.is_none() && src.is_none() && !arg.contains('=') {
                let gw = parse_ip(arg).map_err(|e| format!("gateway: {e}"))?;
                if gw == 0 {
                    return Err("gateway: 0.0.0.0 is not a host address".to_string());
                }
                gateway = Some(gw);
            } else {
                return Err(format!("unexpected argument \"{arg}\" ({USAGE})"));
            }
        }
        let addrs = self.port_addrs(&port);
        let src = match src {
            Some(s) if addrs.iter().any(|(a, _)| *a == s) => s,
            Some(s) => {
                return Err(format!(
                    "src: {} is not an address of internal port {port} ({})",
                    ip_text(s),
                    addrs_text(addrs)
                ))
            }
            None => pick_src(addrs, prefix)
                .or_else(|| gateway.and_then(|g| pick_src(addrs, g)))
                .ok_or_else(|| {
                    let gw = gateway.map_or(String::new(), |g| {
                        format!(" or of gateway {}", ip_text(g))
                    });
                    format!(
                        "src: internal port {port} has no IPv4 address on the subnet of {}/{len}{gw} ({}); add one to it, or give src=IP",
                        ip_text(prefix),
                        addrs_text(addrs)
                    )
                })?,
        };
        let route = Route {
            prefix,
            len,
            gateway,
            bridge,
            port,
            src,
            origin: RouteOrigin::User,
            local: false,
        };
        if self.routes.add_user(route.clone()).as_ref() != Some(&route) {
            self.bump();
        }
        Ok("OK\n".to_string())
    }

    /// `route del PREFIX/LEN` (OVS `ovs/route/del`): removes a user route.
    pub fn route_del(&mut self, args: &[&str]) -> Result<String, String> {
        let [prefix] = args else {
            return Err("wrong number of arguments (usage: route del PREFIX/LEN)".to_string());
        };
        let (ip, len) = parse_prefix(prefix).map_err(|e| format!("prefix: {e}"))?;
        if self.routes.del_user(ip, len).is_some() {
            self.bump();
            return Ok("OK\n".to_string());
        }
        let cached = self
            .routes
            .routes()
            .iter()
            .any(|r| r.prefix == ip && r.len == len);
        let why = if cached {
            " (that route is learned from the kernel: it goes when the kernel removes it)"
        } else {
            ""
        };
        Err(format!("no user route for {prefix}{why}"))
    }

    /// `route show` (OVS `ovs/route/show`).
    pub fn route_show(&self, json: bool) -> String {
        if json {
            self.routes.show_json().to_string()
        } else {
            self.routes.show()
        }
    }

    /// `route lookup IP` (OVS `ovs/route/lookup`): the route to IP (or
    /// IP/32).
    pub fn route_lookup(&self, args: &[&str], json: bool) -> Result<String, String> {
        let [target] = args else {
            return Err("wrong number of arguments (usage: route lookup IP)".to_string());
        };
        let dst = target.strip_suffix("/32").unwrap_or(target);
        let dst = parse_ip(dst).map_err(|e| format!("address: {e}"))?;
        let r = self
            .routes
            .lookup(dst)
            .ok_or_else(|| format!("no route to {}", ip_text(dst)))?;
        if json {
            return Ok(json!({
                "src": ip_text(r.src),
                "gateway": r.gateway.map(ip_text),
                "dev": r.port,
                "bridge": r.bridge,
                "next_hop": ip_text(r.next_hop(dst)),
                // The outer Ethernet source; null while the kernel does not
                // show the port.
                "mac": self.port_mac(&r.port).map(|m| mac_text(&m)),
                // The path MTU tunnels over this route get (the port's).
                "mtu": self.port_mtu(&r.port),
                "route": r.to_json(),
            })
            .to_string());
        }
        Ok(lookup_text(r))
    }

    /// `neigh set BRIDGE IP MAC` (OVS `tnl/neigh/set`): a static entry.
    pub fn neigh_set(&mut self, args: &[&str]) -> Result<String, String> {
        let [bridge, ip, mac] = args else {
            return Err("wrong number of arguments (usage: neigh set BRIDGE IP MAC)".to_string());
        };
        self.check_bridge(bridge)?;
        let ip = parse_ip(ip).map_err(|e| format!("ip: {e}"))?;
        if ip == 0 {
            return Err("ip: 0.0.0.0 is not a host address".to_string());
        }
        let mac = parse_mac(mac).map_err(|e| format!("mac: {e}"))?;
        if !is_unicast_mac(&mac) {
            return Err(format!(
                "mac: {} is not a unicast address (a neighbor's MAC cannot be zero, multicast or broadcast)",
                mac_text(&mac)
            ));
        }
        if self.neigh.set_static(bridge, ip, mac) {
            self.bump();
        }
        Ok("OK\n".to_string())
    }

    fn check_bridge(&self, bridge: &str) -> Result<(), String> {
        if self.ports.values().any(|b| b == bridge) {
            Ok(())
        } else {
            Err(format!(
                "bridge: no bridge named \"{bridge}\" ({})",
                self.bridges_text()
            ))
        }
    }

    /// `neigh show` (OVS `tnl/neigh/show`).
    pub fn neigh_show(&self, json: bool) -> String {
        let now = self.now_ms();
        if json {
            self.neigh.show_json(now).to_string()
        } else {
            self.neigh.show(now)
        }
    }

    /// `neigh flush [BRIDGE]` (OVS `tnl/neigh/flush`): every entry, static
    /// ones too, of every bridge or of BRIDGE.
    pub fn neigh_flush(&mut self, args: &[&str]) -> Result<String, String> {
        let bridge = match args {
            [] => None,
            [b] => {
                self.check_bridge(b)?;
                Some(*b)
            }
            _ => return Err("wrong number of arguments (usage: neigh flush [BRIDGE])".to_string()),
        };
        if self.neigh.flush(bridge) > 0 {
            self.bump();
        }
        Ok("OK\n".to_string())
    }

    /// `neigh aging [SECS]` (OVS `tnl/neigh/aging`): the aging time of
    /// learned entries, shown or set (1 to 3600 s).
    pub fn neigh_aging(&mut self, args: &[&str]) -> Result<String, String> {
        match args {
            [] => Ok(format!("{}\n", self.neigh.aging_secs())),
            [secs] => {
                let n: u32 = secs
                    .parse()
                    .map_err(|_| format!("SECS: \"{secs}\" must be 1 to 3600 seconds"))?;
                let now = self.now_ms();
                self.neigh
                    .set_aging(n, now)
                    .map_err(|e| format!("SECS: {e}"))?;
                Ok("OK\n".to_string())
            }
            _ => Err("wrong number of arguments (usage: neigh aging [SECS])".to_string()),
        }
    }
}

impl TunnelEnv for TunnelTables {
    fn port_mac(&self, port: &str) -> Option<[u8; 6]> {
        TunnelTables::port_mac(self, port)
    }

    fn route(&self, dst: u32) -> Option<TnlRoute> {
        let r = self.routes.lookup(dst)?;
        Some(TnlRoute {
            bridge: r.bridge.clone(),
            port: r.port.clone(),
            // A route whose port the kernel does not show (yet, or any more)
            // cannot carry a packet.
            mac: self.port_mac(&r.port)?,
            mtu: self
                .port_mtu(&r.port)
                .map_or(DEFAULT_PATH_MTU, |m| m.min(u32::from(u16::MAX)) as u16),
            src: r.src,
            next_hop: r.next_hop(dst),
        })
    }

    fn neighbor(&self, bridge: &str, ip: u32) -> Option<[u8; 6]> {
        self.neigh.lookup(bridge, ip, self.now_ms())
    }

    fn is_local_ip(&self, ip: u32) -> bool {
        self.port_addrs
            .values()
            .any(|addrs| addrs.iter().any(|(a, _)| *a == ip))
    }

    fn port_has_ip(&self, port: &str) -> bool {
        !self.port_addrs(port).is_empty()
    }

    fn snoop(&mut self, bridge: &str, ip: u32, mac: [u8; 6]) {
        let now = self.now_ms();
        if self.neigh.learn(bridge, ip, mac, now) {
            self.bump();
        }
    }

    fn neighbor_miss(&mut self, route: &TnlRoute) {
        let now = self.now_ms();
        self.neigh.miss(route, now);
    }

    fn take_arp_requests(&mut self) -> Vec<TnlRoute> {
        self.neigh.take_requests()
    }

    fn generation(&self) -> u64 {
        self.generation
    }
}

/// The commands, with their synopses (`ctl help`).
pub const COMMANDS: &[&str] = &[
    "route add PREFIX/LEN BRIDGE [GW] [src=IP] | del PREFIX/LEN | show | lookup IP",
    "neigh show | set BRIDGE IP MAC | flush [BRIDGE] | aging [SECS]",
];

/// `ctl route ...` and `ctl neigh ...` over `tables`; `cfg` is the running
/// config, whose internal ports the tables take before each command (so a
/// bridge added a moment ago is known).
pub fn commands(tables: SharedTunnelTables, cfg: SharedConfig) -> CommandExtension {
    CommandExtension {
        commands: COMMANDS.iter().map(|s| s.to_string()).collect(),
        handler: Arc::new(move |req: &Request| {
            if req.cmd != "route" && req.cmd != "neigh" {
                return None;
            }
            let ports = internal_ports(&cfg.read().unwrap_or_else(|e| e.into_inner()));
            let mut t = lock(&tables);
            t.set_internal_ports(ports);
            Some(handle(&mut t, req))
        }),
    }
}

/// Runs one `route` or `neigh` command on `t`.
pub fn handle(t: &mut TunnelTables, req: &Request) -> Response {
    let json = req.json || req.args.iter().any(|a| a == "--json");
    let args: Vec<&str> = req
        .args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--json")
        .collect();
    let (sub, rest) = match args.split_first() {
        Some((s, r)) => (*s, r),
        None => ("", &[][..]),
    };
    let no_args = |r: Result<String, String>| {
        if rest.is_empty() {
            r
        } else {
            Err(format!("unexpected argument \"{}\"", rest.join(" ")))
        }
    };
    let result = match (req.cmd.as_str(), sub) {
        ("route", "add") => t.route_add(rest),
        ("route", "del") => t.route_del(rest),
        ("route", "show") => no_args(Ok(t.route_show(json))),
        ("route", "lookup") => t.route_lookup(rest, json),
        ("neigh", "show") => no_args(Ok(t.neigh_show(json))),
        ("neigh", "set") => t.neigh_set(rest),
        ("neigh", "flush") => t.neigh_flush(rest),
        ("neigh", "aging") => t.neigh_aging(rest),
        (cmd, _) => {
            let synopsis = if cmd == "route" {
                COMMANDS[0]
            } else {
                COMMANDS[1]
            };
            let what = if sub.is_empty() {
                "a subcommand is needed".to_string()
            } else {
                format!("unknown subcommand \"{sub}\"")
            };
            return Response::failure(format!("{cmd}: {what} (usage: {synopsis})"));
        }
    };
    match result {
        Ok(out) => Response::success(out),
        Err(e) => Response::failure(format!("{} {sub}: {e}", req.cmd)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtnl::{KernelAddr, KernelRoute, Link};

    const MAC_PHY: [u8; 6] = [0x02, 0, 0, 0, 0xaa, 0x01];
    const MAC_EX: [u8; 6] = [0x02, 0, 0, 0, 0xaa, 0x02];

    fn ip(s: &str) -> u32 {
        parse_ip(s).unwrap()
    }

    /// Bridges br-phy (own port) and br-int (own port + internal port tep0);
    /// links: 1 lo, 5 br-phy, 6 br-int, 7 tep0, 9 eth0 (not the switch's).
    fn tables() -> TunnelTables {
        let mut t = TunnelTables::new(&NeighConfig::default());
        t.set_internal_ports(
            [
                ("br-phy", "br-phy"),
                ("br-int", "br-int"),
                ("tep0", "br-int"),
            ]
            .into_iter()
            .map(|(p, b)| (p.to_string(), b.to_string()))
            .collect(),
        );
        t
    }

    fn link(name: &str, mac: Option<[u8; 6]>) -> Link {
        Link {
            name: name.into(),
            mac,
            mtu: Some(1500),
        }
    }

    fn kernel() -> KernelView {
        KernelView {
            links: [
                (1, link("lo", None)),
                (5, link("br-phy", Some(MAC_PHY))),
                (6, link("br-int", Some([2, 0, 0, 0, 0xaa, 3]))),
                (7, link("tep0", Some(MAC_EX))),
                (9, link("eth0", Some([2, 0, 0, 0, 0xbb, 9]))),
            ]
            .into_iter()
            .collect(),
            addrs: vec![
                KernelAddr {
                    ifindex: 1,
                    ip: ip("127.0.0.1"),
                    len: 8,
                },
                KernelAddr {
                    ifindex: 5,
                    ip: ip("172.16.0.1"),
                    len: 24,
                },
                KernelAddr {
                    ifindex: 7,
                    ip: ip("192.168.5.2"),
                    len: 24,
                },
                KernelAddr {
                    ifindex: 9,
                    ip: ip("10.9.0.5"),
                    len: 16,
                },
            ],
            routes: vec![
                // The kernel's connected route of br-phy (same as derived).
                KernelRoute {
                    dst: ip("172.16.0.0"),
                    len: 24,
                    gateway: None,
                    oif: 5,
                    prefsrc: Some(ip("172.16.0.1")),
                    metric: 0,
                },
                KernelRoute {
                    dst: ip("10.0.0.0"),
                    len: 8,
                    gateway: Some(ip("172.16.0.254")),
                    oif: 5,
                    prefsrc: None,
                    metric: 0,
                },
                // Not through an internal port: not the switch's.
                KernelRoute {
                    dst: 0,
                    len: 0,
                    gateway: Some(ip("10.9.0.1")),
                    oif: 9,
                    prefsrc: None,
                    metric: 0,
                },
                // Through tep0 but no address on its gateway's subnet: left out.
                KernelRoute {
                    dst: ip("198.51.100.0"),
                    len: 24,
                    gateway: Some(ip("203.0.113.1")),
                    oif: 7,
                    prefsrc: None,
                    metric: 0,
                },
            ],
        }
    }

    fn run(t: &mut TunnelTables, cmd: &str, args: &[&str]) -> Response {
        handle(
            t,
            &Request::new(cmd, args.iter().map(|a| a.to_string()).collect()),
        )
    }

    fn err(t: &mut TunnelTables, cmd: &str, args: &[&str]) -> String {
        let r = run(t, cmd, args);
        assert!(!r.ok, "{cmd} {args:?} succeeded: {r:?}");
        r.error.unwrap_or_default()
    }

    #[test]
    fn cached_routes_follow_the_kernel_view_of_internal_ports() {
        let mut t = tables();
        let g0 = t.generation();
        t.set_kernel(kernel());
        assert_ne!(t.generation(), g0);
        assert_eq!(
            t.route_show(false),
            "Route Table:\n\
             Cached: 172.16.0.1/32 dev br-phy SRC 172.16.0.1 local\n\
             Cached: 192.168.5.2/32 dev tep0 SRC 192.168.5.2 local\n\
             Cached: 172.16.0.0/24 dev br-phy SRC 172.16.0.1\n\
             Cached: 192.168.5.0/24 dev tep0 SRC 192.168.5.2\n\
             Cached: 10.0.0.0/8 dev br-phy GW 172.16.0.254 SRC 172.16.0.1\n"
        );
        // The same view again: nothing moves.
        let g1 = t.generation();
        t.set_kernel(kernel());
        assert_eq!(t.generation(), g1);

        assert!(t.is_local_ip(ip("172.16.0.1")));
        assert!(t.is_local_ip(ip("192.168.5.2")));
        assert!(!t.is_local_ip(ip("10.9.0.5")), "eth0 is not the switch's");
        assert!(t.port_has_ip("br-phy"));
        assert!(t.port_has_ip("tep0"));
        assert!(!t.port_has_ip("br-int"));
        assert_eq!(
            t.route(ip("10.1.2.3")),
            Some(TnlRoute {
                bridge: "br-phy".into(),
                port: "br-phy".into(),
                mac: MAC_PHY,
                src: ip("172.16.0.1"),
                next_hop: ip("172.16.0.254"),
                mtu: 1500,
            })
        );
        assert_eq!(
            t.route(ip("192.168.5.9")),
            Some(TnlRoute {
                bridge: "br-int".into(),
                port: "tep0".into(),
                mac: MAC_EX,
                src: ip("192.168.5.2"),
                next_hop: ip("192.168.5.9"),
                mtu: 1500,
            })
        );
        assert_eq!(t.route(ip("8.8.8.8")), None);

        // The address changes: the routes follow, the generation moves.
        let mut k = kernel();
        k.addrs[1] = KernelAddr {
            ifindex: 5,
            ip: ip("172.16.1.1"),
            len: 24,
        };
        k.routes.remove(0);
        k.routes[0].gateway = Some(ip("172.16.1.254"));
        t.set_kernel(k.clone());
        assert_ne!(t.generation(), g1);
        assert_eq!(
            t.route(ip("10.1.2.3")).map(|r| (r.src, r.next_hop)),
            Some((ip("172.16.1.1"), ip("172.16.1.254")))
        );
        assert!(!t.is_local_ip(ip("172.16.0.1")));

        // br-phy leaves the config: its routes and addresses go.
        let g2 = t.generation();
        let mut ports = internal_ports(&Config::default());
        ports.insert("tep0".into(), "br-int".into());
        ports.insert("br-int".into(), "br-int".into());
        t.set_internal_ports(ports);
        assert_ne!(t.generation(), g2);
        assert_eq!(t.route(ip("10.1.2.3")), None);
        assert_eq!(
            t.route_show(false),
            "Route Table:\n\
             Cached: 192.168.5.2/32 dev tep0 SRC 192.168.5.2 local\n\
             Cached: 192.168.5.0/24 dev tep0 SRC 192.168.5.2\n"
        );
        // Its MAC changes: a change too.
        let g3 = t.generation();
        k.links
            .insert(7, link("tep0", Some([2, 0, 0, 0, 0xaa, 0x99])));
        t.set_kernel(k);
        assert_ne!(t.generation(), g3);
        assert_eq!(t.port_mac("tep0"), Some([2, 0, 0, 0, 0xaa, 0x99]));
    }

    #[test]
    fn kernel_route_source_is_its_prefsrc_if_the_ports() {
        let mut t = tables();
        let mut k = kernel();
        k.addrs.push(KernelAddr {
            ifindex: 5,
            ip: ip("172.16.9.1"),
            len: 24,
        });
        k.routes[1].prefsrc = Some(ip("172.16.9.1"));
        // A prefsrc that is not br-phy's is not taken.
        k.routes.push(KernelRoute {
            dst: ip("10.20.0.0"),
            len: 16,
            gateway: Some(ip("172.16.0.254")),
            oif: 5,
            prefsrc: Some(ip("10.9.0.5")),
            metric: 0,
        });
        // Two kernel routes of one prefix: the lower metric is kept.
        k.routes.push(KernelRoute {
            dst: ip("10.30.0.0"),
            len: 16,
            gateway: Some(ip("172.16.0.250")),
            oif: 5,
            prefsrc: None,
            metric: 200,
        });
        k.routes.push(KernelRoute {
            dst: ip("10.30.0.0"),
            len: 16,
            gateway: Some(ip("172.16.0.251")),
            oif: 5,
            prefsrc: None,
            metric: 100,
        });
        t.set_kernel(k);
        let src = |dst: &str| {
            t.route(ip(dst))
                .map(|r| (ip_text(r.src), ip_text(r.next_hop)))
        };
        assert_eq!(
            src("10.1.0.1"),
            Some(("172.16.9.1".into(), "172.16.0.254".into()))
        );
        assert_eq!(
            src("10.20.0.1"),
            Some(("172.16.0.1".into(), "172.16.0.254".into()))
        );
        assert_eq!(
            src("10.30.0.1"),
            Some(("172.16.0.1".into(), "172.16.0.251".into()))
        );
    }

    #[test]
    fn route_commands_exact_text_and_errors() {
        let mut t = tables();
        t.set_kernel(kernel());
        let g = t.generation();
        let ok = run(
            &mut t,
            "route",
            &["add", "10.1.0.0/16", "br-phy", "172.16.0.253"],
        );
        assert_eq!(ok, Response::success("OK\n"));
        assert_ne!(t.generation(), g);
        // An internal port names its bridge; src given.
        let ok = run(
            &mut t,
            "route",
            &["add", "198.51.100.0/24", "tep0", "src=192.168.5.2"],
        );
        assert_eq!(ok, Response::success("OK\n"));
        let show = run(&mut t, "route", &["show"]);
        assert_eq!(
            show.output,
            "Route Table:\n\
             Cached: 172.16.0.1/32 dev br-phy SRC 172.16.0.1 local\n\
             Cached: 192.168.5.2/32 dev tep0 SRC 192.168.5.2 local\n\
             User: 198.51.100.0/24 dev tep0 SRC 192.168.5.2\n\
             User: 10.1.0.0/16 dev br-phy GW 172.16.0.253 SRC 172.16.0.1\n\
             Cached: 172.16.0.0/24 dev br-phy SRC 172.16.0.1\n\
             Cached: 192.168.5.0/24 dev tep0 SRC 192.168.5.2\n\
             Cached: 10.0.0.0/8 dev br-phy GW 172.16.0.254 SRC 172.16.0.1\n"
        );
        assert_eq!(
            run(&mut t, "route", &["lookup", "10.1.2.3"]).output,
            "src 172.16.0.1\ngateway 172.16.0.253\ndev br-phy\n"
        );
        assert_eq!(
            run(&mut t, "route", &["lookup", "10.2.2.3/32"]).output,
            "src 172.16.0.1\ngateway 172.16.0.254\ndev br-phy\n"
        );
        assert_eq!(
            run(&mut t, "route", &["lookup", "198.51.100.7"]).output,
            "src 192.168.5.2\ngateway ::\ndev tep0\n"
        );
        let j = run(&mut t, "route", &["lookup", "10.1.2.3", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&j.output).unwrap();
        assert_eq!(v["next_hop"], "172.16.0.253");
        assert_eq!(v["bridge"], "br-phy");
        assert_eq!(v["route"]["origin"], "user");
        assert_eq!(v["mac"], "02:00:00:00:aa:01");
        assert_eq!(v["mtu"], 1500);
        let j = run(&mut t, "route", &["show", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&j.output).unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(7));

        // Refusals name the field and the reason; nothing changes.
        let before = t.route_show(false);
        let g = t.generation();
        for (args, want) in [
            (vec!["add", "10.1.0.0/33", "br-phy"], "route add: prefix: \"10.1.0.0/33\": prefix length \"33\" must be 0 to 32"),
            (vec!["add", "10.1.0.1/16", "br-phy"], "route add: prefix: \"10.1.0.1/16\": host bits are set beyond the /16 (the network is 10.1.0.0/16)"),
            (vec!["add", "10.1.0.0/16", "br-nope"], "route add: bridge: no bridge or internal port named \"br-nope\" (bridges: br-int, br-phy)"),
            (vec!["add", "10.1.0.0/16", "eth0"], "route add: bridge: no bridge or internal port named \"eth0\" (bridges: br-int, br-phy)"),
            (vec!["add", "10.1.0.0/16", "br-phy", "172.16.0.300"], "route add: gateway: \"172.16.0.300\" is not an IPv4 address (like 192.0.2.1)"),
            (vec!["add", "10.1.0.0/16", "br-phy", "0.0.0.0"], "route add: gateway: 0.0.0.0 is not a host address"),
            (vec!["add", "10.1.0.0/16", "br-phy", "src=10.9.0.5"], "route add: src: 10.9.0.5 is not an address of internal port br-phy (its addresses: 172.16.0.1/24)"),
            (vec!["add", "10.1.0.0/16", "br-int", "src=172.16.0.1"], "route add: src: 172.16.0.1 is not an address of internal port br-int (it has no IPv4 address)"),
            (vec!["add", "10.1.0.0/16", "br-phy", "src=x"], "route add: src: \"x\" is not an IPv4 address (like 192.0.2.1)"),
            (vec!["add", "10.1.0.0/16", "br-phy", "203.0.113.1"], "route add: src: internal port br-phy has no IPv4 address on the subnet of 10.1.0.0/16 or of gateway 203.0.113.1 (its addresses: 172.16.0.1/24); add one to it, or give src=IP"),
            (vec!["add", "10.1.0.0/16", "br-phy", "172.16.0.1", "172.16.0.2"], "route add: unexpected argument \"172.16.0.2\" (usage: route add PREFIX/LEN BRIDGE [GW] [src=IP])"),
            (vec!["add", "10.1.0.0/16", "br-phy", "pkt_mark=1"], "route add: unexpected argument \"pkt_mark=1\" (usage: route add PREFIX/LEN BRIDGE [GW] [src=IP])"),
            (vec!["add", "10.1.0.0/16"], "route add: wrong number of arguments (usage: route add PREFIX/LEN BRIDGE [GW] [src=IP])"),
            (vec!["del", "10.7.0.0/16"], "route del: no user route for 10.7.0.0/16"),
            (vec!["del", "10.0.0.0/8"], "route del: no user route for 10.0.0.0/8 (that route is learned from the kernel: it goes when the kernel removes it)"),
            (vec!["del", "10.0.0.0"], "route del: prefix: \"10.0.0.0\" is not a prefix: expected ADDRESS/LENGTH like 10.0.0.0/8"),
            (vec!["lookup", "8.8.8.8"], "route lookup: no route to 8.8.8.8"),
            (vec!["lookup", "8.8.8"], "route lookup: address: \"8.8.8\" is not an IPv4 address (like 192.0.2.1)"),
            (vec!["show", "x"], "route show: unexpected argument \"x\""),
            (vec!["frob"], "route: unknown subcommand \"frob\" (usage: route add PREFIX/LEN BRIDGE [GW] [src=IP] | del PREFIX/LEN | show | lookup IP)"),
            (vec![], "route: a subcommand is needed (usage: route add PREFIX/LEN BRIDGE [GW] [src=IP] | del PREFIX/LEN | show | lookup IP)"),
        ] {
            assert_eq!(err(&mut t, "route", &args), want, "{args:?}");
        }
        assert_eq!(t.route_show(false), before);
        assert_eq!(t.generation(), g);

        // del removes the user route: the cached one shows through again.
        assert_eq!(run(&mut t, "route", &["del", "10.1.0.0/16"]).output, "OK\n");
        assert_ne!(t.generation(), g);
        assert_eq!(
            run(&mut t, "route", &["lookup", "10.1.2.3"]).output,
            "src 172.16.0.1\ngateway 172.16.0.254\ndev br-phy\n"
        );
    }

    #[test]
    fn neigh_commands_exact_text_and_errors() {
        let mut t = tables();
        t.set_kernel(kernel());
        let header = "IP                                            MAC                 Bridge\n\
                      ==========================================================================\n";
        assert_eq!(run(&mut t, "neigh", &["show"]).output, header);
        let g = t.generation();
        assert_eq!(
            run(
                &mut t,
                "neigh",
                &["set", "br-phy", "172.16.0.254", "02:00:00:00:00:fe"]
            ),
            Response::success("OK\n")
        );
        assert_ne!(t.generation(), g);
        t.snoop("br-phy", ip("172.16.0.7"), [2, 0, 0, 0, 0, 7]);
        t.snoop("br-int", ip("10.0.0.1"), [2, 0, 0, 0, 0, 1]);
        assert_eq!(
            run(&mut t, "neigh", &["show"]).output,
            format!(
                "{header}\
                 10.0.0.1                                      02:00:00:00:00:01   br-int\n\
                 172.16.0.7                                    02:00:00:00:00:07   br-phy\n\
                 172.16.0.254                                  02:00:00:00:00:fe   br-phy STATIC\n"
            )
        );
        let j: serde_json::Value =
            serde_json::from_str(&run(&mut t, "neigh", &["show", "--json"]).output).unwrap();
        assert_eq!(
            j[2],
            json!({"ip": "172.16.0.254", "mac": "02:00:00:00:00:fe", "bridge": "br-phy", "static": true, "expires_in": null})
        );
        assert_eq!(j[0]["expires_in"], 900);
        for (args, want) in [
            (vec!["set", "br-x", "172.16.0.254", "02:00:00:00:00:fe"], "neigh set: bridge: no bridge named \"br-x\" (bridges: br-int, br-phy)"),
            (vec!["set", "tep0", "172.16.0.254", "02:00:00:00:00:fe"], "neigh set: bridge: no bridge named \"tep0\" (bridges: br-int, br-phy)"),
            (vec!["set", "br-phy", "172.16.0", "02:00:00:00:00:fe"], "neigh set: ip: \"172.16.0\" is not an IPv4 address (like 192.0.2.1)"),
            (vec!["set", "br-phy", "0.0.0.0", "02:00:00:00:00:fe"], "neigh set: ip: 0.0.0.0 is not a host address"),
            (vec!["set", "br-phy", "172.16.0.9", "02:00:00:00:fe"], "neigh set: mac: \"02:00:00:00:fe\" is not a MAC address (six hex bytes like 02:00:00:00:00:01)"),
            (vec!["set", "br-phy", "172.16.0.9", "ff:ff:ff:ff:ff:ff"], "neigh set: mac: ff:ff:ff:ff:ff:ff is not a unicast address (a neighbor's MAC cannot be zero, multicast or broadcast)"),
            (vec!["set", "br-phy"], "neigh set: wrong number of arguments (usage: neigh set BRIDGE IP MAC)"),
            (vec!["flush", "br-x"], "neigh flush: bridge: no bridge named \"br-x\" (bridges: br-int, br-phy)"),
            (vec!["flush", "a", "b"], "neigh flush: wrong number of arguments (usage: neigh flush [BRIDGE])"),
            (vec!["aging", "0"], "neigh aging: SECS: 0 must be 1 to 3600 seconds"),
            (vec!["aging", "x"], "neigh aging: SECS: \"x\" must be 1 to 3600 seconds"),
            (vec!["show", "br-phy"], "neigh show: unexpected argument \"br-phy\""),
            (vec!["add"], "neigh: unknown subcommand \"add\" (usage: neigh show | set BRIDGE IP MAC | flush [BRIDGE] | aging [SECS])"),
        ] {
            assert_eq!(err(&mut t, "neigh", &args), want, "{args:?}");
        }
        assert_eq!(t.neigh().len(), 3);

        // Learned entries age out; the static one stays.
        assert_eq!(run(&mut t, "neigh", &["aging"]).output, "900\n");
        assert_eq!(run(&mut t, "neigh", &["aging", "60"]).output, "OK\n");
        assert_eq!(run(&mut t, "neigh", &["aging"]).output, "60\n");
        let g = t.generation();
        t.warp(59_000);
        t.run_periodic();
        assert_eq!(t.generation(), g);
        assert_eq!(
            t.neighbor("br-phy", ip("172.16.0.7")),
            Some([2, 0, 0, 0, 0, 7])
        );
        // That lookup kept 172.16.0.7 alive; 10.0.0.1 was not used.
        t.warp(1_000);
        t.run_periodic();
        assert_ne!(t.generation(), g);
        assert_eq!(t.neighbor("br-int", ip("10.0.0.1")), None);
        t.warp(60_000);
        t.run_periodic();
        assert_eq!(
            run(&mut t, "neigh", &["show"]).output,
            format!(
                "{header}172.16.0.254                                  02:00:00:00:00:fe   br-phy STATIC\n"
            )
        );
        // Flush per bridge, then all.
        t.snoop("br-int", ip("10.0.0.1"), [2, 0, 0, 0, 0, 1]);
        assert_eq!(run(&mut t, "neigh", &["flush", "br-int"]).output, "OK\n");
        assert_eq!(t.neigh().len(), 1);
        let g = t.generation();
        assert_eq!(run(&mut t, "neigh", &["flush"]).output, "OK\n");
        assert_ne!(t.generation(), g);
        assert_eq!(run(&mut t, "neigh", &["show"]).output, header);

        // A bridge leaving the config takes its neighbors with it.
        t.snoop("br-int", ip("10.0.0.1"), [2, 0, 0, 0, 0, 1]);
        t.snoop("br-phy", ip("172.16.0.7"), [2, 0, 0, 0, 0, 7]);
        t.set_internal_ports(
            [("br-phy".to_string(), "br-phy".to_string())]
                .into_iter()
                .collect(),
        );
        assert_eq!(t.neigh().len(), 1);
    }

    #[test]
    fn neighbor_misses_queue_rate_limited_arp_requests() {
        let mut t = tables();
        t.set_kernel(kernel());
        let r = t.route(ip("10.1.2.3")).unwrap();
        assert_eq!(t.neighbor(&r.bridge, r.next_hop), None);
        t.neighbor_miss(&r);
        t.neighbor_miss(&r);
        assert_eq!(t.take_arp_requests(), vec![r.clone()]);
        t.neighbor_miss(&r);
        assert_eq!(t.take_arp_requests(), vec![]);
        t.warp(1000);
        t.neighbor_miss(&r);
        assert_eq!(t.take_arp_requests(), vec![r.clone()]);
        // The reply is snooped: a change, and the neighbor is known.
        let g = t.generation();
        t.snoop("br-phy", r.next_hop, [2, 0, 0, 0, 0, 0xfe]);
        assert_ne!(t.generation(), g);
        assert_eq!(
            t.neighbor("br-phy", r.next_hop),
            Some([2, 0, 0, 0, 0, 0xfe])
        );
        // Snooping the same again is no change.
        let g = t.generation();
        t.snoop("br-phy", r.next_hop, [2, 0, 0, 0, 0, 0xfe]);
        assert_eq!(t.generation(), g);
    }

    #[test]
    fn shared_as_the_slow_path_holds_it() {
        let tables = TunnelTables::shared(&NeighConfig::default());
        lock(&tables).set_internal_ports(
            [("br-phy".to_string(), "br-phy".to_string())]
                .into_iter()
                .collect(),
        );
        lock(&tables).set_kernel(kernel());
        let env: Arc<Mutex<dyn TunnelEnv + Send>> = tables.clone();
        let r = env.lock().unwrap().route(ip("10.1.2.3"));
        assert_eq!(r.map(|r| r.src), Some(ip("172.16.0.1")));
        // The control side sees what the slow path learned.
        env.lock()
            .unwrap()
            .snoop("br-phy", ip("172.16.0.254"), [2, 0, 0, 0, 0, 0xfe]);
        let cfg: SharedConfig = Arc::new(std::sync::RwLock::new(
            Config::from_toml_str("[[bridge]]\nname = \"br-phy\"\n").unwrap(),
        ));
        let ext = commands(tables, cfg);
        let show = (ext.handler)(&Request::new("neigh", vec!["show".into()])).unwrap();
        assert!(show.output.contains("172.16.0.254 "), "{}", show.output);
        assert!((ext.handler)(&Request::new("fdb-show", vec![])).is_none());
    }
}
