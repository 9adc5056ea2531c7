//! The switch's own IPv4 route table for native tunneling (OVS's
//! `lib/ovs-router.c`): where the outer packet of a tunnel goes, from which
//! source address, through which bridge.
//!
//! Two kinds of routes, shown as OVS shows them (`ovs-appctl ovs/route/show`):
//! - `Cached`: learned from the kernel's view of the switch's internal ports
//!   ([`crate::tunnel_env`] derives them from the addresses and routes
//!   [`crate::rtnl`] reads): for an address A/len on internal port P, the
//!   local route A/32 and the connected route of A/len, and every kernel
//!   route (main table) whose output device is P;
//! - `User`: added by `ctl route add`, kept until `route del`.
//!
//! Lookups follow OVS's priorities: a local /32 first (priority len + 64),
//! then user routes (len + 32), then cached routes (len); within one class
//! the longest prefix wins. So a user route overrides what the kernel says
//! for any destination it covers, as in OVS.
//!
//! Pure data: no I/O, no clock. The table is small (tens of routes) and
//! looked up at translation time only, never per packet: a sorted vector
//! scanned in order.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde_json::json;

/// Where a route comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteOrigin {
    /// Learned from the kernel ("Cached" in OVS): changes with it.
    Cached,
    /// Added with `ctl route add` ("User" in OVS).
    User,
}

/// One route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Network address, host order, host bits zero.
    pub prefix: u32,
    /// Prefix length, 0 to 32.
    pub len: u8,
    /// The gateway, host order; `None` on a directly connected prefix.
    pub gateway: Option<u32>,
    /// The bridge that owns the route (the outer packet continues there).
    pub bridge: String,
    /// The internal port of that bridge the route leaves by (OVS's
    /// `output_netdev`, shown as `dev`).
    pub port: String,
    /// Preferred source address, host order.
    pub src: u32,
    /// Cached or user.
    pub origin: RouteOrigin,
    /// A local address of the switch (an /32 of an internal port's address).
    pub local: bool,
}

/// The network mask of a prefix length (0 to 32).
pub fn mask(len: u8) -> u32 {
    match len {
        0 => 0,
        l if l >= 32 => u32::MAX,
        l => u32::MAX << (32 - u32::from(l)),
    }
}

/// Dotted-quad text of a host-order address.
pub fn ip_text(ip: u32) -> String {
    Ipv4Addr::from(ip).to_string()
}

/// Parses a dotted-quad IPv4 address into host order; the error names the
/// text and the reason.
pub fn parse_ip(s: &str) -> Result<u32, String> {
    s.parse::<Ipv4Addr>()
        .map(u32::from)
        .map_err(|_| format!("\"{s}\" is not an IPv4 address (like 192.0.2.1)"))
}

/// Parses `A.B.C.D/LEN` (network address with no host bits set).
pub fn parse_prefix(s: &str) -> Result<(u32, u8), String> {
    let Some((ip, len)) = s.split_once('/') else {
        return Err(format!(
            "\"{s}\" is not a prefix: expected ADDRESS/LENGTH like 10.0.0.0/8"
        ));
    };
    let ip = parse_ip(ip)?;
    let len: u8 = match len.parse() {
        Ok(l) if l <= 32 => l,
        _ => return Err(format!("\"{s}\": prefix length \"{len}\" must be 0 to 32")),
    };
    let net = ip & mask(len);
    if net != ip {
        return Err(format!(
            "\"{s}\": host bits are set beyond the /{len} (the network is {}/{len})",
            ip_text(net)
        ));
    }
    Ok((ip, len))
}

impl Route {
    /// OVS's priority: local /32s first, then user routes, then cached ones;
    /// longer prefixes first within each.
    pub fn priority(&self) -> u8 {
        if self.local {
            self.len + 64
        } else if self.origin == RouteOrigin::User {
            self.len + 32
        } else {
            self.len
        }
    }

    /// Whether `ip` (host order) is in the route's prefix.
    pub fn contains(&self, ip: u32) -> bool {
        ip & mask(self.len) == self.prefix
    }

    /// The next hop toward `dst`: the gateway, or `dst` itself.
    pub fn next_hop(&self, dst: u32) -> u32 {
        self.gateway.unwrap_or(dst)
    }

    /// The route's line in `route show`, as `ovs/route/show` prints it.
    pub fn show_line(&self) -> String {
        let origin = match (self.origin, self.local) {
            (RouteOrigin::User, false) => "User",
            _ => "Cached",
        };
        let mut s = format!(
            "{origin}: {}/{} dev {}",
            ip_text(self.prefix),
            self.len,
            self.port
        );
        if let Some(gw) = self.gateway {
            let _ = write!(s, " GW {}", ip_text(gw));
        }
        let _ = write!(s, " SRC {}", ip_text(self.src));
        if self.local {
            s.push_str(" local");
        }
        s
    }

    /// The route as JSON (`route show --json`).
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "prefix": format!("{}/{}", ip_text(self.prefix), self.len),
            "dev": self.port,
            "bridge": self.bridge,
            "gateway": self.gateway.map(ip_text),
            "src": ip_text(self.src),
            "origin": match self.origin {
                RouteOrigin::Cached => "cached",
                RouteOrigin::User => "user",
            },
            "local": self.local,
        })
    }

    /// Sort order of the table: lookup order, then by address and port so
    /// that `route show` is stable.
    fn order_key(&self) -> (std::cmp::Reverse<u8>, u32, &str) {
        (std::cmp::Reverse(self.priority()), self.prefix, &self.port)
    }
}

/// The route table: cached and user routes in lookup order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// Sorted by [`Route::order_key`]; at most one route per (prefix, length,
    /// priority).
    routes: Vec<Route>,
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> RouteTable {
        RouteTable::default()
    }

    /// Every route, in lookup order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route for `dst` (host order): the first in lookup order whose
    /// prefix holds it.
    pub fn lookup(&self, dst: u32) -> Option<&Route> {
        self.routes.iter().find(|r| r.contains(dst))
    }

    /// Replaces every cached route with `cached` (each must have
    /// [`RouteOrigin::Cached`]); of routes with the same prefix and
    /// priority the first given is kept (so the caller lists the kernel's
    /// routes by metric). Returns whether the table changed.
    pub fn set_cached(&mut self, cached: Vec<Route>) -> bool {
        let mut next: Vec<Route> = self
            .routes
            .iter()
            .filter(|r| r.origin == RouteOrigin::User)
            .cloned()
            .collect();
        for r in cached {
            debug_assert_eq!(r.origin, RouteOrigin::Cached);
            let dup = next
                .iter()
                .any(|o| o.prefix == r.prefix && o.len == r.len && o.priority() == r.priority());
            if !dup {
                next.push(r);
            }
        }
        next.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        let changed = next != self.routes;
        self.routes = next;
        changed
    }

    /// Adds a user route, replacing the user route of the same prefix if
    /// there is one (returned).
    pub fn add_user(&mut self, route: Route) -> Option<Route> {
        debug_assert_eq!(route.origin, RouteOrigin::User);
        let old = self.del_user(route.prefix, route.len);
        let at = self
            .routes
            .partition_point(|r| r.order_key() < route.order_key());
        self.routes.insert(at, route);
        old
    }

    /// Removes the user route of `prefix/len`; `None` if there is none.
    pub fn del_user(&mut self, prefix: u32, len: u8) -> Option<Route> {
        let at = self.routes.iter().position(|r| {
            r.origin == RouteOrigin::User && !r.local && r.prefix == prefix && r.len == len
        })?;
        Some(self.routes.remove(at))
    }

    /// `route show`, as `ovs-appctl ovs/route/show` prints it.
    pub fn show(&self) -> String {
        let mut out = String::from("Route Table:\n");
        for r in &self.routes {
            out.push_str(&r.show_line());
            out.push('\n');
        }
        out
    }

    /// `route show --json`.
    pub fn show_json(&self) -> serde_json::Value {
        serde_json::Value::Array(self.routes.iter().map(Route::to_json).collect())
    }
}

/// `route lookup`'s answer for `dst`, as `ovs-appctl ovs/route/lookup`
/// prints it (OVS prints an absent gateway as the unspecified address `::`).
pub fn lookup_text(route: &Route) -> String {
    let gw = route.gateway.map_or_else(|| "::".to_string(), ip_text);
    format!(
        "src {}\ngateway {gw}\ndev {}\n",
        ip_text(route.src),
        route.port
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> u32 {
        parse_ip(s).unwrap()
    }

    fn route(prefix: &str, gw: Option<&str>, port: &str, src: &str, origin: RouteOrigin) -> Route {
        let (prefix, len) = parse_prefix(prefix).unwrap();
        Route {
            prefix,
            len,
            gateway: gw.map(ip),
            bridge: port.to_string(),
            port: port.to_string(),
            src: ip(src),
            origin,
            local: false,
        }
    }

    #[test]
    fn masks_and_parsing() {
        assert_eq!(mask(0), 0);
        assert_eq!(mask(8), 0xff00_0000);
        assert_eq!(mask(31), 0xffff_fffe);
        assert_eq!(mask(32), u32::MAX);
        assert_eq!(parse_prefix("10.0.0.0/8"), Ok((0x0a00_0000, 8)));
        assert_eq!(parse_prefix("0.0.0.0/0"), Ok((0, 0)));
        assert_eq!(parse_prefix("192.0.2.7/32"), Ok((ip("192.0.2.7"), 32)));
        assert_eq!(
            parse_prefix("10.0.0.0"),
            Err("\"10.0.0.0\" is not a prefix: expected ADDRESS/LENGTH like 10.0.0.0/8".into())
        );
        assert_eq!(
            parse_prefix("10.0.0.0/33"),
            Err("\"10.0.0.0/33\": prefix length \"33\" must be 0 to 32".into())
        );
        assert_eq!(
            parse_prefix("10.0.0.0/x"),
            Err("\"10.0.0.0/x\": prefix length \"x\" must be 0 to 32".into())
        );
        assert_eq!(
            parse_prefix("10.1.0.0/8"),
            Err(
                "\"10.1.0.0/8\": host bits are set beyond the /8 (the network is 10.0.0.0/8)"
                    .into()
            )
        );
        assert_eq!(
            parse_prefix("10.0.0/8"),
            Err("\"10.0.0\" is not an IPv4 address (like 192.0.2.1)".into())
        );
    }

    #[test]
    fn longest_prefix_wins_among_overlapping_cached_routes() {
        let mut t = RouteTable::new();
        let changed = t.set_cached(vec![
            route(
                "0.0.0.0/0",
                Some("172.16.0.254"),
                "br-phy",
                "172.16.0.1",
                RouteOrigin::Cached,
            ),
            route(
                "10.0.0.0/8",
                Some("172.16.0.253"),
                "br-phy",
                "172.16.0.1",
                RouteOrigin::Cached,
            ),
            route(
                "10.1.0.0/16",
                Some("192.168.5.1"),
                "br-ex",
                "192.168.5.2",
                RouteOrigin::Cached,
            ),
            route(
                "10.1.2.0/24",
                None,
                "br-phy",
                "172.16.0.1",
                RouteOrigin::Cached,
            ),
        ]);
        assert!(changed);
        let dev = |dst: &str| t.lookup(ip(dst)).map(|r| (r.port.as_str(), r.len));
        assert_eq!(dev("10.1.2.3"), Some(("br-phy", 24)));
        assert_eq!(dev("10.1.3.3"), Some(("br-ex", 16)));
        assert_eq!(dev("10.2.0.1"), Some(("br-phy", 8)));
        assert_eq!(dev("8.8.8.8"), Some(("br-phy", 0)));
        assert_eq!(
            t.lookup(ip("10.2.0.1")).map(|r| r.next_hop(ip("10.2.0.1"))),
            Some(ip("172.16.0.253"))
        );
        assert_eq!(
            t.lookup(ip("10.1.2.3")).map(|r| r.next_hop(ip("10.1.2.3"))),
            Some(ip("10.1.2.3"))
        );
        // The same set again changes nothing.
        assert!(!t.set_cached(t.routes().to_vec()));
    }

    #[test]
    fn user_routes_override_cached_ones_and_local_routes_come_first() {
        let mut t = RouteTable::new();
        let mut local = route(
            "172.16.0.1/32",
            None,
            "br-phy",
            "172.16.0.1",
            RouteOrigin::Cached,
        );
        local.local = true;
        t.set_cached(vec![
            local,
            route(
                "172.16.0.0/24",
                None,
                "br-phy",
                "172.16.0.1",
                RouteOrigin::Cached,
            ),
            route(
                "10.1.2.0/24",
                None,
                "br-phy",
                "172.16.0.1",
                RouteOrigin::Cached,
            ),
        ]);
        // A user /8 beats the cached /24 inside it (OVS: priority len + 32).
        let user = route(
            "10.0.0.0/8",
            Some("192.168.5.1"),
            "br-ex",
            "192.168.5.2",
            RouteOrigin::User,
        );
        assert_eq!(t.add_user(user.clone()), None);
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(&user));
        // But not the local address, nor anything outside it.
        assert!(t.lookup(ip("172.16.0.1")).unwrap().local);
        assert_eq!(t.lookup(ip("172.16.0.9")).unwrap().len, 24);
        // Local routes come first whatever the user adds.
        let all = route(
            "0.0.0.0/0",
            Some("192.168.5.1"),
            "br-ex",
            "192.168.5.2",
            RouteOrigin::User,
        );
        t.add_user(all);
        assert!(t.lookup(ip("172.16.0.1")).unwrap().local);
        assert_eq!(t.lookup(ip("172.16.0.9")).unwrap().port, "br-ex");
        // Cached routes are replaced by the kernel's view; user ones stay.
        t.set_cached(vec![]);
        assert_eq!(t.routes().len(), 2);
        assert_eq!(
            t.show(),
            "Route Table:\n\
             User: 10.0.0.0/8 dev br-ex GW 192.168.5.1 SRC 192.168.5.2\n\
             User: 0.0.0.0/0 dev br-ex GW 192.168.5.1 SRC 192.168.5.2\n"
        );
        // Re-adding a prefix replaces it; del removes only user routes.
        let again = route(
            "10.0.0.0/8",
            None,
            "br-phy",
            "172.16.0.1",
            RouteOrigin::User,
        );
        assert_eq!(t.add_user(again), Some(user));
        assert_eq!(t.routes().len(), 2);
        assert!(t.del_user(ip("10.0.0.0"), 8).is_some());
        assert!(t.del_user(ip("10.0.0.0"), 8).is_none());
        assert_eq!(t.lookup(ip("10.1.2.3")).unwrap().len, 0);
    }

    #[test]
    fn show_and_lookup_text_as_ovs() {
        let mut t = RouteTable::new();
        let mut local = route(
            "172.16.0.1/32",
            None,
            "br-phy",
            "172.16.0.1",
            RouteOrigin::Cached,
        );
        local.local = true;
        t.set_cached(vec![
            route(
                "172.16.0.0/24",
                None,
                "br-phy",
                "172.16.0.1",
                RouteOrigin::Cached,
            ),
            local,
            route(
                "10.0.0.0/8",
                Some("172.16.0.254"),
                "br-phy",
                "172.16.0.1",
                RouteOrigin::Cached,
            ),
            // A duplicate of a prefix (a higher-metric kernel route): dropped.
            route(
                "10.0.0.0/8",
                Some("172.16.0.253"),
                "br-phy",
                "172.16.0.1",
                RouteOrigin::Cached,
            ),
        ]);
        t.add_user(route(
            "192.168.0.0/16",
            Some("172.16.0.250"),
            "br-phy",
            "172.16.0.1",
            RouteOrigin::User,
        ));
        assert_eq!(
            t.show(),
            "Route Table:\n\
             Cached: 172.16.0.1/32 dev br-phy SRC 172.16.0.1 local\n\
             User: 192.168.0.0/16 dev br-phy GW 172.16.0.250 SRC 172.16.0.1\n\
             Cached: 172.16.0.0/24 dev br-phy SRC 172.16.0.1\n\
             Cached: 10.0.0.0/8 dev br-phy GW 172.16.0.254 SRC 172.16.0.1\n"
        );
        assert_eq!(
            lookup_text(t.lookup(ip("10.9.9.9")).unwrap()),
            "src 172.16.0.1\ngateway 172.16.0.254\ndev br-phy\n"
        );
        assert_eq!(
            lookup_text(t.lookup(ip("172.16.0.7")).unwrap()),
            "src 172.16.0.1\ngateway ::\ndev br-phy\n"
        );
        assert_eq!(t.lookup(ip("8.8.8.8")), None);
        assert_eq!(
            t.show_json()[1],
            json!({
                "prefix": "192.168.0.0/16",
                "dev": "br-phy",
                "bridge": "br-phy",
                "gateway": "172.16.0.250",
                "src": "172.16.0.1",
                "origin": "user",
                "local": false,
            })
        );
    }
}
