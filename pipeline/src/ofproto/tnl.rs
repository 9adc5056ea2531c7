//! Tunnel ports as OpenFlow ports: their configuration (OVS's Interface
//! `options` of `type=vxlan|gre|geneve`) and the lookup that maps a packet a
//! tunnel pop delivered to the OpenFlow tunnel port it belongs to (OVS's
//! `ofproto/tunnel.c`, `tnl_port_receive`).
//!
//! # Layer
//!
//! Slow path only, pure. A tunnel port has an OpenFlow number on its bridge but
//! no device: every tunnel port of one kind and UDP port shares one deviceless
//! datapath port (OVS's `vxlan_sys_4789`, `gre_sys`, `genev_sys_6081`;
//! [`TunnelPortConfig::datapath_port_name`]). Output to a tunnel port becomes a
//! `tnl_push` in translation (`xlate`); a packet the datapath decapsulated comes
//! back as an upcall on the shared datapath port, and [`receive`] finds which
//! tunnel port it arrived on from the tunnel metadata.
//!
//! # Options (OVS's defaults)
//!
//! | option | values | default |
//! |---|---|---|
//! | `remote_ip` | IPv4 or `flow` (the flow's `tun_dst`) | required |
//! | `local_ip` | IPv4 | the route's source |
//! | `key` | number or `flow` | none: key 0 (GRE: no key field) |
//! | `in_key` / `out_key` | as `key`, one direction | `key` |
//! | `dst_port` | UDP port (VXLAN, Geneve) | 4789 / 6081 |
//! | `tos` | 0..=255 or `inherit` (the inner DSCP) | 0 |
//! | `ttl` | 1..=255 or `inherit` (the inner TTL) | 64 |
//! | `df_default` | `true` / `false` | `true` |
//! | `csum` | `true` / `false` | `false` |
//!
//! The outer ECN bits always follow the inner packet's (CE becomes ECT(0)), as
//! in OVS.

use std::fmt;
use std::net::Ipv4Addr;

use crate::flow_key::FlowKey;
use crate::tunnel::TunnelKind;

/// A tunnel key option (`key`, `in_key`, `out_key`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TnlKey {
    /// Not set: key 0 (received packets must carry 0; GRE sends no key field).
    #[default]
    Absent,
    /// A fixed key.
    Fixed(u64),
    /// `flow`: sent from the flow's `tun_id`; any key is received (and
    /// matchable as `tun_id`).
    Flow,
}

/// `tos` or `ttl`: a number or `inherit` (from the inner IP header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TnlInherit {
    /// This value.
    Fixed(u8),
    /// The inner packet's (non-IP packets get the default).
    Inherit,
}

/// OVS's default outer TTL.
pub const DEFAULT_TTL: u8 = 64;

/// A tunnel port's configuration, checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TunnelPortConfig {
    /// The kind of tunnel (the port's type).
    pub kind: TunnelKind,
    /// The remote endpoint, host order; `None`: `remote_ip=flow`.
    pub remote_ip: Option<u32>,
    /// The local endpoint (outer source, and what received packets must be
    /// addressed to), host order; `None`: any (the route's source when sending).
    pub local_ip: Option<u32>,
    /// The key received packets must carry.
    pub in_key: TnlKey,
    /// The key sent.
    pub out_key: TnlKey,
    /// UDP destination port (VXLAN, Geneve); 0 for GRE.
    pub dst_port: u16,
    /// Outer TOS.
    pub tos: TnlInherit,
    /// Outer TTL.
    pub ttl: TnlInherit,
    /// Set DF on the outer header.
    pub df_default: bool,
    /// Outer UDP checksum (VXLAN, Geneve) or GRE checksum.
    pub csum: bool,
}

/// Option keys a tunnel port accepts.
pub const TUNNEL_OPTIONS: &[&str] = &[
    "remote_ip",
    "local_ip",
    "key",
    "in_key",
    "out_key",
    "dst_port",
    "tos",
    "ttl",
    "df_default",
    "csum",
];

/// A bad tunnel option: which one and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TnlOptionError {
    /// The option's name (`remote_ip`, ...).
    pub option: String,
    /// Why it is refused.
    pub reason: String,
}

impl fmt::Display for TnlOptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "options.{}: {}", self.option, self.reason)
    }
}

impl std::error::Error for TnlOptionError {}

fn err(option: &str, reason: impl Into<String>) -> TnlOptionError {
    TnlOptionError {
        option: option.to_string(),
        reason: reason.into(),
    }
}

/// The tunnel kind of an OVS port type (`vxlan`, `gre`, `geneve`).
pub fn kind_of_type(port_type: &str) -> Option<TunnelKind> {
    match port_type {
        "vxlan" => Some(TunnelKind::Vxlan),
        "gre" => Some(TunnelKind::Gre),
        "geneve" => Some(TunnelKind::Geneve),
        _ => None,
    }
}

fn parse_ip(option: &str, v: &str) -> Result<u32, TnlOptionError> {
    v.parse::<Ipv4Addr>()
        .map(u32::from)
        .map_err(|_| err(option, format!("{v:?} is not an IPv4 address")))
}

fn parse_number(v: &str) -> Option<u64> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn parse_bool(option: &str, v: &str) -> Result<bool, TnlOptionError> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(err(option, format!("{v:?} is not true or false"))),
    }
}

impl TunnelPortConfig {
    /// A tunnel of `kind` to `remote_ip` (`None`: flow) with OVS's defaults.
    pub fn new(kind: TunnelKind, remote_ip: Option<u32>) -> Self {
        TunnelPortConfig {
            kind,
            remote_ip,
            local_ip: None,
            in_key: TnlKey::Absent,
            out_key: TnlKey::Absent,
            dst_port: kind.default_port(),
            tos: TnlInherit::Fixed(0),
            ttl: TnlInherit::Fixed(DEFAULT_TTL),
            df_default: true,
            csum: false,
        }
    }

    /// Parses a tunnel port's `options` (OVS's names and values). Errors name
    /// the option and the reason.
    pub fn from_options<'a>(
        kind: TunnelKind,
        options: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, TnlOptionError> {
        let mut c = TunnelPortConfig::new(kind, None);
        let mut remote = false;
        let (mut key, mut in_key, mut out_key) = (None, None, None);
        let key_width: u32 = if kind == TunnelKind::Gre { 32 } else { 24 };
        let parse_key = |option: &str, v: &str| -> Result<TnlKey, TnlOptionError> {
            if v == "flow" {
                return Ok(TnlKey::Flow);
            }
            let k = parse_number(v)
                .ok_or_else(|| err(option, format!("{v:?} is not a number or \"flow\"")))?;
            if k >> key_width != 0 {
                return Err(err(
                    option,
                    format!(
                        "{k:#x} is wider than the {key_width} bits a {} key has",
                        kind.name()
                    ),
                ));
            }
            Ok(TnlKey::Fixed(k))
        };
        for (k, v) in options {
            match k {
                "remote_ip" => {
                    remote = true;
                    c.remote_ip = if v == "flow" {
                        None
                    } else {
                        let ip = parse_ip(k, v)?;
                        if ip == 0 {
                            return Err(err(k, "0.0.0.0 is not a remote endpoint"));
                        }
                        Some(ip)
                    };
                }
                "local_ip" => {
                    if v == "flow" {
                        return Err(err(k, "\"flow\" is not supported (give an address)"));
                    }
                    c.local_ip = Some(parse_ip(k, v)?);
                }
                "key" => key = Some(parse_key(k, v)?),
                "in_key" => in_key = Some(parse_key(k, v)?),
                "out_key" => out_key = Some(parse_key(k, v)?),
                "dst_port" => {
                    if !kind.is_udp() {
                        return Err(err(k, "a gre tunnel has no UDP port"));
                    }
                    c.dst_port =
                        v.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                            err(k, format!("{v:?} is not a UDP port (1..=65535)"))
                        })?;
                }
                "tos" => {
                    c.tos =
                        if v == "inherit" {
                            TnlInherit::Inherit
                        } else {
                            TnlInherit::Fixed(v.parse::<u8>().map_err(|_| {
                                err(k, format!("{v:?} is not 0..=255 or \"inherit\""))
                            })?)
                        };
                }
                "ttl" => {
                    c.ttl = if v == "inherit" {
                        TnlInherit::Inherit
                    } else {
                        TnlInherit::Fixed(v.parse::<u8>().ok().filter(|t| *t != 0).ok_or_else(
                            || err(k, format!("{v:?} is not 1..=255 or \"inherit\"")),
                        )?)
                    };
                }
                "df_default" => c.df_default = parse_bool(k, v)?,
                "csum" => c.csum = parse_bool(k, v)?,
                other => {
                    return Err(err(
                        other,
                        format!(
                            "unknown option for type \"{}\" (expected {})",
                            kind.name(),
                            TUNNEL_OPTIONS.join(", ")
                        ),
                    ))
                }
            }
        }
        if !remote {
            return Err(err(
                "remote_ip",
                format!(
                    "required for type \"{}\" (an IPv4 address or \"flow\")",
                    kind.name()
                ),
            ));
        }
        // OVS: in_key and out_key default to key.
        c.in_key = in_key.or(key).unwrap_or_default();
        c.out_key = out_key.or(key).unwrap_or_default();
        Ok(c)
    }

    /// The name of the datapath port this tunnel shares with every tunnel of
    /// its kind and UDP port: `vxlan_sys_4789`, `gre_sys`, `genev_sys_6081`.
    pub fn datapath_port_name(&self) -> String {
        datapath_port_name(self.kind, self.dst_port)
    }
}

/// The shared datapath port's name for tunnels of `kind` on `dst_port`.
pub fn datapath_port_name(kind: TunnelKind, dst_port: u16) -> String {
    match kind {
        TunnelKind::Vxlan => format!("vxlan_sys_{dst_port}"),
        TunnelKind::Geneve => format!("genev_sys_{dst_port}"),
        TunnelKind::Gre => "gre_sys".to_string(),
    }
}

/// A tunnel port of a bridge as translation sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XlateTunnel {
    /// The port's name (for traces).
    pub name: String,
    /// Its OpenFlow number on its bridge.
    pub ofport: u32,
    /// The datapath port it shares ([`TunnelPortConfig::datapath_port_name`]).
    pub odp: u32,
    /// Its options.
    pub config: TunnelPortConfig,
}

/// OVS's `tnl_port_receive`: the tunnel port a packet decapsulated on datapath
/// port `key.in_port` arrived on, from its tunnel metadata: the ports on that
/// datapath port whose remote is `tun_src` (or `flow`), whose `local_ip`, if
/// set, is `tun_dst`, and whose `in_key` is `tun_id` (or `flow`). As OVS's
/// `tnl_find`, a fixed key beats `flow`, then a fixed remote beats `flow`,
/// then a set `local_ip` beats none; among equals the first port given wins.
///
/// `ports` are `(id, port)` pairs; the id of the port found is returned. The
/// tunnel metadata is marked in `wc` whatever the result (OVS's
/// `tnl_wc_init`: the decision reads all of it).
pub fn receive<'a, T: Copy>(
    ports: impl IntoIterator<Item = (T, &'a XlateTunnel)>,
    key: &FlowKey,
    wc: &mut FlowKey,
) -> Option<T> {
    wc.tun_id = u64::MAX;
    wc.tun_src = u32::MAX;
    wc.tun_dst = u32::MAX;
    let mut best: Option<(u8, T)> = None;
    for (id, p) in ports {
        let c = &p.config;
        if p.odp != key.in_port {
            continue;
        }
        let key_flow = match c.in_key {
            TnlKey::Flow => true,
            TnlKey::Fixed(k) if k == key.tun_id => false,
            TnlKey::Absent if key.tun_id == 0 => false,
            _ => continue,
        };
        let remote_flow = match c.remote_ip {
            None => true,
            Some(ip) if ip == key.tun_src => false,
            Some(_) => continue,
        };
        let local_any = match c.local_ip {
            None => true,
            Some(ip) if ip == key.tun_dst => false,
            Some(_) => continue,
        };
        // Lower ranks are more specific (OVS's search order).
        let rank = (u8::from(key_flow) << 2) | (u8::from(remote_flow) << 1) | u8::from(local_any);
        if best.is_none_or(|(r, _)| rank < r) {
            best = Some((rank, id));
        }
    }
    best.map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kind: TunnelKind, o: &[(&str, &str)]) -> Result<TunnelPortConfig, String> {
        TunnelPortConfig::from_options(kind, o.iter().copied()).map_err(|e| e.to_string())
    }

    #[test]
    fn options_parse_with_ovs_defaults() {
        let c = opts(TunnelKind::Vxlan, &[("remote_ip", "10.0.0.2")]).unwrap();
        assert_eq!(
            c,
            TunnelPortConfig {
                kind: TunnelKind::Vxlan,
                remote_ip: Some(0x0a00_0002),
                local_ip: None,
                in_key: TnlKey::Absent,
                out_key: TnlKey::Absent,
                dst_port: 4789,
                tos: TnlInherit::Fixed(0),
                ttl: TnlInherit::Fixed(64),
                df_default: true,
                csum: false,
            }
        );
        assert_eq!(c.datapath_port_name(), "vxlan_sys_4789");
        let c = opts(
            TunnelKind::Gre,
            &[
                ("remote_ip", "flow"),
                ("key", "flow"),
                ("out_key", "0x10"),
                ("local_ip", "10.0.0.1"),
                ("tos", "inherit"),
                ("ttl", "32"),
                ("df_default", "false"),
                ("csum", "true"),
            ],
        )
        .unwrap();
        assert_eq!(c.remote_ip, None);
        assert_eq!((c.in_key, c.out_key), (TnlKey::Flow, TnlKey::Fixed(16)));
        assert_eq!(c.local_ip, Some(0x0a00_0001));
        assert_eq!((c.tos, c.ttl), (TnlInherit::Inherit, TnlInherit::Fixed(32)));
        assert!(!c.df_default && c.csum);
        assert_eq!(
            (c.dst_port, c.datapath_port_name().as_str()),
            (0, "gre_sys")
        );
        let c = opts(
            TunnelKind::Geneve,
            &[("remote_ip", "1.2.3.4"), ("dst_port", "6082")],
        )
        .unwrap();
        assert_eq!(c.datapath_port_name(), "genev_sys_6082");
    }

    #[test]
    fn bad_options_name_the_option() {
        type Case<'a> = (TunnelKind, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            (TunnelKind::Vxlan, &[], "options.remote_ip: required for type \"vxlan\" (an IPv4 address or \"flow\")"),
            (TunnelKind::Vxlan, &[("remote_ip", "10.0.0.300")], "options.remote_ip: \"10.0.0.300\" is not an IPv4 address"),
            (TunnelKind::Vxlan, &[("remote_ip", "0.0.0.0")], "options.remote_ip: 0.0.0.0 is not a remote endpoint"),
            (TunnelKind::Vxlan, &[("remote_ip", "flow"), ("key", "0x1000000")], "options.key: 0x1000000 is wider than the 24 bits a vxlan key has"),
            (TunnelKind::Gre, &[("remote_ip", "flow"), ("in_key", "0x100000000")], "options.in_key: 0x100000000 is wider than the 32 bits a gre key has"),
            (TunnelKind::Gre, &[("remote_ip", "flow"), ("out_key", "x")], "options.out_key: \"x\" is not a number or \"flow\""),
            (TunnelKind::Gre, &[("remote_ip", "flow"), ("dst_port", "4789")], "options.dst_port: a gre tunnel has no UDP port"),
            (TunnelKind::Vxlan, &[("remote_ip", "flow"), ("dst_port", "0")], "options.dst_port: \"0\" is not a UDP port (1..=65535)"),
            (TunnelKind::Vxlan, &[("remote_ip", "flow"), ("ttl", "0")], "options.ttl: \"0\" is not 1..=255 or \"inherit\""),
            (TunnelKind::Vxlan, &[("remote_ip", "flow"), ("tos", "256")], "options.tos: \"256\" is not 0..=255 or \"inherit\""),
            (TunnelKind::Vxlan, &[("remote_ip", "flow"), ("csum", "yes")], "options.csum: \"yes\" is not true or false"),
            (TunnelKind::Vxlan, &[("remote_ip", "flow"), ("local_ip", "flow")], "options.local_ip: \"flow\" is not supported (give an address)"),
            (TunnelKind::Geneve, &[("remote_ip", "flow"), ("peer", "x")], "options.peer: unknown option for type \"geneve\" (expected remote_ip, local_ip, key, in_key, out_key, dst_port, tos, ttl, df_default, csum)"),
        ];
        for (kind, o, want) in cases {
            assert_eq!(opts(*kind, o).unwrap_err(), *want);
        }
    }

    fn port(
        name: &str,
        odp: u32,
        remote: Option<u32>,
        local: Option<u32>,
        key: TnlKey,
    ) -> XlateTunnel {
        let mut config = TunnelPortConfig::new(TunnelKind::Vxlan, remote);
        config.local_ip = local;
        config.in_key = key;
        XlateTunnel {
            name: name.into(),
            ofport: 1,
            odp,
            config,
        }
    }

    #[test]
    fn receive_prefers_the_most_specific_port_and_marks_the_tunnel() {
        let ports = [
            port("any", 7, None, None, TnlKey::Flow),
            port("remote-flow-key", 7, Some(2), None, TnlKey::Flow),
            port("exact", 7, Some(2), Some(1), TnlKey::Fixed(5)),
            port("exact-any-local", 7, Some(2), None, TnlKey::Fixed(5)),
            port("remote-flow", 7, None, None, TnlKey::Fixed(5)),
            port("other-dp-port", 8, Some(2), Some(1), TnlKey::Fixed(5)),
        ];
        let find = |tun_src, tun_dst, tun_id, in_port| {
            let k = FlowKey {
                in_port,
                tun_src,
                tun_dst,
                tun_id,
                ..FlowKey::default()
            };
            let mut wc = FlowKey::default();
            let r = receive(ports.iter().map(|p| (p.name.as_str(), p)), &k, &mut wc);
            assert_eq!(
                (wc.tun_id, wc.tun_src, wc.tun_dst),
                (u64::MAX, u32::MAX, u32::MAX)
            );
            r
        };
        assert_eq!(find(2, 1, 5, 7), Some("exact"));
        assert_eq!(find(2, 9, 5, 7), Some("exact-any-local"));
        assert_eq!(find(3, 9, 5, 7), Some("remote-flow"));
        assert_eq!(find(2, 9, 6, 7), Some("remote-flow-key"));
        assert_eq!(find(3, 9, 6, 7), Some("any"));
        assert_eq!(find(2, 1, 5, 8), Some("other-dp-port"));
        assert_eq!(find(2, 9, 5, 8), None);
        assert_eq!(find(2, 1, 5, 9), None);
        // No key configured: only key 0 is received.
        let nokey = [port("nokey", 7, Some(2), None, TnlKey::Absent)];
        let k = FlowKey {
            in_port: 7,
            tun_src: 2,
            tun_id: 1,
            ..FlowKey::default()
        };
        let mut wc = FlowKey::default();
        assert_eq!(receive(nokey.iter().map(|p| (0, p)), &k, &mut wc), None);
        let k = FlowKey { tun_id: 0, ..k };
        assert_eq!(receive(nokey.iter().map(|p| (0, p)), &k, &mut wc), Some(0));
    }
}
