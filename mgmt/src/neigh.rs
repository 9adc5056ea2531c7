//! The neighbor (ARP) cache of native tunneling (OVS's
//! `lib/tnl-neigh-cache.c`): the MAC of each IPv4 next hop, per bridge, for
//! the outer Ethernet header of tunnel packets.
//!
//! - Learned entries come from ARP that translation sees on a bridge
//!   ([`NeighCache::learn`], behind `TunnelEnv::snoop`). One lives for the
//!   aging time after it was last learned or looked up (OVS: 15 minutes,
//!   [`DEFAULT_AGING_SECS`]; `neigh aging SECS` or the `aging_time` of
//!   [`NeighConfig`] change it); [`NeighCache::expire`] removes the
//!   expired ones.
//! - Static entries (`ctl neigh set BRIDGE IP MAC`) never age, and ARP does
//!   not replace them; `neigh flush` removes them with the learned ones, as
//!   OVS's flush removes every entry.
//! - A next hop with no entry ([`NeighCache::miss`], behind
//!   `TunnelEnv::neighbor_miss`) queues an ARP request for it, at most one
//!   per address per [`ARP_REQUEST_INTERVAL_MS`] (a second), however many
//!   translations miss meanwhile. The slow path takes the queue
//!   ([`NeighCache::take_requests`]) and sends each request
//!   ([`arp_request`] builds the frame) from the route's internal port.
//!
//! Pure data with the time passed in (milliseconds on the caller's clock),
//! so aging is tested with any clock. Looked up at translation time only,
//! never per packet.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use pipeline::ofproto::xlate::TnlRoute;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::route::ip_text;

/// OVS's default idle time of a learned neighbor: 15 minutes.
pub const DEFAULT_AGING_SECS: u32 = 15 * 60;
/// The longest aging time `neigh aging` accepts (OVS's limit): one hour.
pub const MAX_AGING_SECS: u32 = 3600;
/// At most one ARP request per next-hop address in this many milliseconds.
pub const ARP_REQUEST_INTERVAL_MS: u64 = 1000;

/// Neighbor cache settings. Not yet a section of the config file (the
/// config's owner adds it as `[tunnel.neighbor]` or similar); `neigh aging`
/// changes the aging time at runtime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NeighConfig {
    /// Seconds a learned entry lives after it was last learned or used,
    /// 1 to [`MAX_AGING_SECS`].
    pub aging_time: u32,
}

impl Default for NeighConfig {
    fn default() -> Self {
        NeighConfig {
            aging_time: DEFAULT_AGING_SECS,
        }
    }
}

impl NeighConfig {
    /// Checks the settings; the error names the field and the reason.
    pub fn validate(&self) -> Result<(), String> {
        check_aging(self.aging_time).map_err(|e| format!("aging_time: {e}"))
    }
}

fn check_aging(secs: u32) -> Result<(), String> {
    if (1..=MAX_AGING_SECS).contains(&secs) {
        Ok(())
    } else {
        Err(format!("{secs} must be 1 to {MAX_AGING_SECS} seconds"))
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = *mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// Parses six colon-separated hex bytes.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bad = || format!("\"{s}\" is not a MAC address (six hex bytes like 02:00:00:00:00:01)");
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next().ok_or_else(bad)?;
        if p.is_empty() || p.len() > 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

/// A MAC a neighbor can have: not zero, not multicast or broadcast.
pub fn is_unicast_mac(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 0 && *mac != [0; 6]
}

/// How an entry got there.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// `neigh set`: never ages.
    Static,
    /// Learned from ARP; expires at this time (ms) unless used or learned
    /// again. A `Cell`: a lookup (`&self`, as translation asks) refreshes it.
    Learned { expires_ms: Cell<u64> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    mac: [u8; 6],
    kind: Kind,
}

/// The neighbor cache: (IP, bridge) -> MAC, and the ARP requests due.
///
/// # Thread safety
/// `Send`, not `Sync` (lookups refresh ages through a `Cell`): it lives
/// behind the tunnel tables' mutex.
#[derive(Clone, Debug)]
pub struct NeighCache {
    /// By (IP host order, bridge): `neigh show`'s order.
    entries: BTreeMap<(u32, String), Entry>,
    aging_ms: u64,
    /// When an ARP request for each next hop was last queued (ms).
    last_request: BTreeMap<u32, u64>,
    /// The ARP requests queued and not yet taken.
    pending: Vec<TnlRoute>,
}

impl NeighCache {
    /// An empty cache with `cfg`'s aging time (invalid values are clamped
    /// into 1 to [`MAX_AGING_SECS`]; [`NeighConfig::validate`] reports them).
    pub fn new(cfg: &NeighConfig) -> NeighCache {
        NeighCache {
            entries: BTreeMap::new(),
            aging_ms: u64::from(cfg.aging_time.clamp(1, MAX_AGING_SECS)) * 1000,
            last_request: BTreeMap::new(),
            pending: Vec::new(),
        }
    }

    /// The aging time in seconds.
    pub fn aging_secs(&self) -> u32 {
        u32::try_from(self.aging_ms / 1000).unwrap_or(u32::MAX)
    }

    /// Sets the aging time (`neigh aging`): learned entries that would live
    /// longer than the new time from `now` expire then (as OVS does).
    pub fn set_aging(&mut self, secs: u32, now_ms: u64) -> Result<(), String> {
        check_aging(secs)?;
        self.aging_ms = u64::from(secs) * 1000;
        let latest = now_ms.saturating_add(self.aging_ms);
        for e in self.entries.values() {
            if let Kind::Learned { expires_ms } = &e.kind {
                if expires_ms.get() > latest {
                    expires_ms.set(latest);
                }
            }
        }
        Ok(())
    }

    /// Number of entries (expired ones not yet removed included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The MAC of `ip` on `bridge`, if known and not expired; a learned
    /// entry found lives for the aging time from `now` again (OVS refreshes
    /// on lookup).
    pub fn lookup(&self, bridge: &str, ip: u32, now_ms: u64) -> Option<[u8; 6]> {
        let e = self.entries.get(&(ip, bridge.to_string()))?;
        match &e.kind {
            Kind::Static => Some(e.mac),
            Kind::Learned { expires_ms } if expires_ms.get() > now_ms => {
                expires_ms.set(now_ms.saturating_add(self.aging_ms));
                Some(e.mac)
            }
            Kind::Learned { .. } => None,
        }
    }

    /// Learns `ip` at `mac` on `bridge` (from ARP). Returns whether the
    /// cache changed (a new entry or a new MAC; refreshing an entry with
    /// the same MAC is no change). A static entry is kept as it is; a zero
    /// address or a non-unicast MAC is ignored.
    pub fn learn(&mut self, bridge: &str, ip: u32, mac: [u8; 6], now_ms: u64) -> bool {
        if ip == 0 || !is_unicast_mac(&mac) {
            return false;
        }
        let expires = now_ms.saturating_add(self.aging_ms);
        let key = (ip, bridge.to_string());
        match self.entries.get(&key) {
            Some(Entry {
                kind: Kind::Static, ..
            }) => false,
            Some(Entry {
                mac: old,
                kind: Kind::Learned { expires_ms },
            }) if *old == mac => {
                expires_ms.set(expires);
                false
            }
            _ => {
                self.entries.insert(
                    key,
                    Entry {
                        mac,
                        kind: Kind::Learned {
                            expires_ms: Cell::new(expires),
                        },
                    },
                );
                true
            }
        }
    }

    /// Sets a static entry (replacing whatever `ip` had on `bridge`).
    /// Returns whether the cache changed.
    pub fn set_static(&mut self, bridge: &str, ip: u32, mac: [u8; 6]) -> bool {
        let new = Entry {
            mac,
            kind: Kind::Static,
        };
        let old = self.entries.insert((ip, bridge.to_string()), new.clone());
        old != Some(new)
    }

    /// Removes every entry (of `bridge` only, if given); how many.
    pub fn flush(&mut self, bridge: Option<&str>) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|(_, b), _| bridge.is_some_and(|only| only != b));
        before - self.entries.len()
    }

    /// Removes the entries of bridges `keep` refuses; whether any went.
    pub fn retain_bridges(&mut self, keep: impl Fn(&str) -> bool) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(_, b), _| keep(b));
        before != self.entries.len()
    }

    /// Removes the learned entries expired at `now`; whether any went.
    pub fn expire(&mut self, now_ms: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|_, e| match &e.kind {
            Kind::Static => true,
            Kind::Learned { expires_ms } => expires_ms.get() > now_ms,
        });
        before != self.entries.len()
    }

    /// Records a translation that found no neighbor for `route.next_hop`:
    /// queues an ARP request for it unless one was queued for that address
    /// less than [`ARP_REQUEST_INTERVAL_MS`] ago. Returns whether it queued.
    pub fn miss(&mut self, route: &TnlRoute, now_ms: u64) -> bool {
        self.last_request
            .retain(|_, at| now_ms.saturating_sub(*at) < ARP_REQUEST_INTERVAL_MS);
        if self.last_request.contains_key(&route.next_hop) {
            return false;
        }
        self.last_request.insert(route.next_hop, now_ms);
        self.pending.push(route.clone());
        true
    }

    /// The ARP requests queued since the last call, oldest first.
    pub fn take_requests(&mut self) -> Vec<TnlRoute> {
        std::mem::take(&mut self.pending)
    }

    /// `neigh show`, as `ovs-appctl tnl/neigh/show` prints it: the IP in a
    /// column of 46 (INET6_ADDRSTRLEN), the MAC, three spaces, the bridge;
    /// an expired entry not yet removed ends with ` STALE` (as in OVS), a
    /// static one with ` STATIC`.
    pub fn show(&self, now_ms: u64) -> String {
        let mut out = format!("{:<46}{:<20}Bridge\n{}\n", "IP", "MAC", "=".repeat(74));
        for ((ip, bridge), e) in &self.entries {
            let _ = write!(out, "{:<46}{}   {bridge}", ip_text(*ip), mac_text(&e.mac));
            match &e.kind {
                Kind::Static => out.push_str(" STATIC"),
                Kind::Learned { expires_ms } if expires_ms.get() <= now_ms => {
                    out.push_str(" STALE")
                }
                Kind::Learned { .. } => {}
            }
            out.push('\n');
        }
        out
    }

    /// `neigh show --json`: each entry with its remaining life in seconds
    /// (`null` for a static one).
    pub fn show_json(&self, now_ms: u64) -> serde_json::Value {
        let rows = self
            .entries
            .iter()
            .map(|((ip, bridge), e)| {
                let expires_in = match &e.kind {
                    Kind::Static => None,
                    Kind::Learned { expires_ms } => {
                        Some(expires_ms.get().saturating_sub(now_ms) / 1000)
                    }
                };
                json!({
                    "ip": ip_text(*ip),
                    "mac": mac_text(&e.mac),
                    "bridge": bridge,
                    "static": matches!(e.kind, Kind::Static),
                    "expires_in": expires_in,
                })
            })
            .collect();
        serde_json::Value::Array(rows)
    }
}

/// Length of an ARP request frame: Ethernet header (14) + ARP for IPv4 over
/// Ethernet (28). Not padded to 60: the port pads (NICs do; a tap and a
/// veth take it as it is, as the kernel's own ARP).
pub const ARP_REQUEST_LEN: usize = 42;

/// The ARP request "who has `target_ip`? tell `src_ip`" from `src_mac`,
/// broadcast (RFC 826: hardware type 1, protocol 0x0800, opcode 1, target
/// hardware address zero). Addresses are host order.
pub fn arp_request(src_mac: [u8; 6], src_ip: u32, target_ip: u32) -> [u8; ARP_REQUEST_LEN] {
    let mut f = [0u8; ARP_REQUEST_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&src_mac);
    f[28..32].copy_from_slice(&src_ip.to_be_bytes());
    // f[32..38]: target hardware address, unknown: zero.
    f[38..42].copy_from_slice(&target_ip.to_be_bytes());
    f
}

/// The ARP request that resolves `route.next_hop` from the route's port.
pub fn arp_request_for(route: &TnlRoute) -> [u8; ARP_REQUEST_LEN] {
    arp_request(route.mac, route.src, route.next_hop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::parse_ip;

    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    fn ip(s: &str) -> u32 {
        parse_ip(s).unwrap()
    }

    fn cache() -> NeighCache {
        NeighCache::new(&NeighConfig::default())
    }

    fn tnl_route(next_hop: &str) -> TnlRoute {
        TnlRoute {
            bridge: "br-phy".into(),
            port: "br-phy".into(),
            mac: MAC_A,
            src: ip("172.16.0.1"),
            next_hop: ip(next_hop),
            mtu: 1500,
        }
    }

    #[test]
    fn mac_text_and_parse() {
        assert_eq!(
            mac_text(&[0x02, 0xab, 0, 1, 0x10, 0xff]),
            "02:ab:00:01:10:ff"
        );
        assert_eq!(
            parse_mac("02:AB:0:1:10:ff"),
            Ok([0x02, 0xab, 0, 1, 0x10, 0xff])
        );
        for bad in [
            "02:00:00:00:00",
            "02:00:00:00:00:00:01",
            "02:00:00:00:00:g0",
            "02::00:00:00:00",
            "020:00:00:00:00:01",
        ] {
            assert_eq!(
                parse_mac(bad),
                Err(format!(
                    "\"{bad}\" is not a MAC address (six hex bytes like 02:00:00:00:00:01)"
                ))
            );
        }
        assert!(is_unicast_mac(&MAC_A));
        assert!(!is_unicast_mac(&[0; 6]));
        assert!(!is_unicast_mac(&[0xff; 6]));
        assert!(!is_unicast_mac(&[0x01, 0, 0x5e, 0, 0, 1]));
    }

    #[test]
    fn learned_entries_age_out_unless_used_static_ones_never() {
        let mut c = cache();
        let aging = u64::from(DEFAULT_AGING_SECS) * 1000;
        assert_eq!(aging, 900_000, "OVS's 15 minutes");
        assert!(c.learn("br-phy", ip("172.16.0.2"), MAC_A, 0));
        assert!(c.set_static("br-phy", ip("172.16.0.3"), MAC_B));
        assert_eq!(c.lookup("br-phy", ip("172.16.0.2"), 1000), Some(MAC_A));
        // Per bridge: the same IP on another bridge is unknown.
        assert_eq!(c.lookup("br-int", ip("172.16.0.2"), 1000), None);
        // Just before expiry (1 s + aging after the lookup at 1 s) it is
        // alive, and that lookup refreshes it again.
        assert_eq!(
            c.lookup("br-phy", ip("172.16.0.2"), aging + 999),
            Some(MAC_A)
        );
        assert!(!c.expire(2 * aging));
        assert_eq!(
            c.lookup("br-phy", ip("172.16.0.2"), 2 * aging + 998),
            Some(MAC_A)
        );
        // Unused for the aging time: gone (a lookup at expiry misses first).
        let dead = 2 * aging + 998 + aging;
        assert_eq!(c.lookup("br-phy", ip("172.16.0.2"), dead), None);
        assert!(c.show(dead).contains("172.16.0.2"));
        assert!(c.show(dead).ends_with("br-phy STALE\n172.16.0.3                                    02:00:00:00:00:0b   br-phy STATIC\n"));
        assert!(c.expire(dead));
        assert_eq!(c.len(), 1);
        // Static: still there ten aging times later.
        assert!(!c.expire(10 * aging));
        assert_eq!(
            c.lookup("br-phy", ip("172.16.0.3"), 10 * aging),
            Some(MAC_B)
        );
    }

    #[test]
    fn learning_changes_and_static_precedence() {
        let mut c = cache();
        let a = ip("172.16.0.2");
        assert!(c.learn("br-phy", a, MAC_A, 0));
        // Same MAC again: refreshed, no change.
        assert!(!c.learn("br-phy", a, MAC_A, 5000));
        assert_eq!(c.lookup("br-phy", a, 900_000 + 4999), Some(MAC_A));
        // A new MAC: a change.
        assert!(c.learn("br-phy", a, MAC_B, 6000));
        assert_eq!(c.lookup("br-phy", a, 6000), Some(MAC_B));
        // Invalid input: ignored.
        assert!(!c.learn("br-phy", 0, MAC_A, 0));
        assert!(!c.learn("br-phy", a, [0xff; 6], 0));
        assert!(!c.learn("br-phy", a, [0; 6], 0));
        // A static entry wins over ARP.
        assert!(c.set_static("br-phy", a, MAC_A));
        assert!(!c.set_static("br-phy", a, MAC_A));
        assert!(!c.learn("br-phy", a, MAC_B, 7000));
        assert_eq!(c.lookup("br-phy", a, 7000), Some(MAC_A));
        // Flush per bridge, then all.
        assert!(c.learn("br-int", a, MAC_B, 7000));
        assert_eq!(c.flush(Some("br-int")), 1);
        assert_eq!(c.flush(Some("br-int")), 0);
        assert!(c.learn("br-int", a, MAC_B, 7000));
        assert!(c.retain_bridges(|b| b == "br-phy"));
        assert!(!c.retain_bridges(|b| b == "br-phy"));
        assert_eq!(c.flush(None), 1);
        assert!(c.is_empty());
    }

    #[test]
    fn aging_time_can_change() {
        let mut c = cache();
        let a = ip("172.16.0.2");
        c.learn("br-phy", a, MAC_A, 0);
        // Shorter aging shortens what was learned (from now), as OVS.
        c.set_aging(10, 1000).unwrap();
        assert_eq!(c.aging_secs(), 10);
        assert_eq!(c.lookup("br-phy", a, 10_999), Some(MAC_A));
        assert!(!c.expire(20_998));
        assert!(c.expire(20_999));
        assert_eq!(
            c.set_aging(0, 0),
            Err("0 must be 1 to 3600 seconds".to_string())
        );
        assert_eq!(
            c.set_aging(3601, 0),
            Err("3601 must be 1 to 3600 seconds".to_string())
        );
        assert_eq!(c.aging_secs(), 10);
        assert_eq!(
            NeighConfig { aging_time: 0 }.validate(),
            Err("aging_time: 0 must be 1 to 3600 seconds".to_string())
        );
        assert_eq!(NeighConfig::default().validate(), Ok(()));
        let cfg: NeighConfig = toml::from_str("aging_time = 60").unwrap();
        assert_eq!(NeighCache::new(&cfg).aging_secs(), 60);
        assert!(toml::from_str::<NeighConfig>("aging = 60").is_err());
    }

    #[test]
    fn arp_requests_at_most_one_per_address_per_second() {
        let mut c = cache();
        let r1 = tnl_route("172.16.0.254");
        let r2 = tnl_route("172.16.0.253");
        assert!(c.miss(&r1, 10_000));
        assert!(!c.miss(&r1, 10_001));
        assert!(c.miss(&r2, 10_500));
        assert!(!c.miss(&r1, 10_999));
        assert_eq!(c.take_requests(), vec![r1.clone(), r2.clone()]);
        assert_eq!(c.take_requests(), vec![]);
        // A second after the first: again.
        assert!(c.miss(&r1, 11_000));
        assert!(!c.miss(&r2, 11_499));
        assert!(c.miss(&r2, 11_500));
        assert_eq!(c.take_requests(), vec![r1, r2]);
    }

    #[test]
    fn arp_request_bytes() {
        let frame = arp_request(
            [0x02, 0x11, 0x22, 0x33, 0x44, 0x55],
            ip("172.16.0.1"),
            ip("172.16.0.254"),
        );
        #[rustfmt::skip]
        let want: [u8; 42] = [
            // Ethernet: broadcast, from the port, ARP.
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55,
            0x08, 0x06,
            // ARP: Ethernet, IPv4, 6, 4, request.
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
            // Sender: the port's MAC and 172.16.0.1.
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 172, 16, 0, 1,
            // Target: unknown MAC, 172.16.0.254.
            0, 0, 0, 0, 0, 0, 172, 16, 0, 254,
        ];
        assert_eq!(frame, want);
        // The switch's own parser reads it as the request it is.
        let mut key = pipeline::FlowKey::default();
        assert_eq!(pipeline::parse(&frame, 1, &mut key), None);
        assert_eq!(key.dl_type, 0x0806);
        assert_eq!(key.arp_op(), 1);
        assert_eq!(key.arp_spa(), ip("172.16.0.1"));
        assert_eq!(key.arp_tpa(), ip("172.16.0.254"));
        assert_eq!(key.dl_src, [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(key.dl_dst, [0xff; 6]);
        assert_eq!(
            arp_request_for(&tnl_route("172.16.0.254"))[38..],
            [172, 16, 0, 254]
        );
    }
}
