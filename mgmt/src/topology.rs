//! Bridges and ports changed at runtime (`ctl add-br`, `del-br`, `add-port`,
//! `del-port`, `set-port`), as `ovs-vsctl` changes them.
//!
//! Each change is made on a copy of the running [`Config`] and checked by the
//! same rules as a config file ([`Config::validate_bridges`]); the caller
//! applies it to the datapath and the slow path, and only then keeps the copy.
//! An error names the argument or field and the reason, and changes nothing.
//!
//! OpenFlow port numbers never move: the running config gives every port the
//! number it has ([`Config::pin_ofports`]) so that removing one does not
//! renumber the ports after it, and a port added gets its `ofport_request` or
//! the lowest number free in its bridge, as in OVS.

use std::collections::BTreeSet;

use crate::config::{Config, ConfigError, PortConfig};

/// A change of a port's VLAN settings (`set-port PORT tag=N trunks=... vlan_mode=...`):
/// `None` leaves a setting as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VlanChange {
    /// `tag=N`, or `tag=[]` to clear.
    pub tag: Option<Option<u16>>,
    /// `trunks=N,M,...`, or `trunks=[]` for all VLANs.
    pub trunks: Option<Vec<u16>>,
    /// `vlan_mode=MODE`, or `vlan_mode=[]` for the default.
    pub vlan_mode: Option<Option<String>>,
}

fn invalid(path: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::invalid(path, reason)
}

/// A VLAN ID argument: 0..=4095.
fn parse_vid(arg: &str, text: &str) -> Result<u16, ConfigError> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|v| *v <= 4095)
        .ok_or_else(|| invalid(arg, format!("{text:?} is not a VLAN ID (0..=4095)")))
}

/// `[]`, or a value.
fn cleared(v: &str) -> bool {
    v.is_empty() || v == "[]"
}

fn parse_trunks(v: &str) -> Result<Vec<u16>, ConfigError> {
    if cleared(v) {
        return Ok(Vec::new());
    }
    v.trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|t| parse_vid("trunks", t))
        .collect()
}

impl VlanChange {
    /// Parses `set-port` settings: `tag=N`, `trunks=N,M`, `vlan_mode=MODE`
    /// (`[]` clears each).
    pub fn parse(args: &[&str]) -> Result<VlanChange, ConfigError> {
        let mut c = VlanChange::default();
        if args.is_empty() {
            return Err(invalid(
                "set-port",
                "nothing to set (tag=N, trunks=N,M or vlan_mode=MODE)",
            ));
        }
        for a in args {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| invalid(*a, "expected KEY=VALUE (tag, trunks or vlan_mode)"))?;
            match k {
                "tag" => {
                    c.tag = Some(if cleared(v) {
                        None
                    } else {
                        Some(parse_vid("tag", v)?)
                    })
                }
                "trunks" => c.trunks = Some(parse_trunks(v)?),
                "vlan_mode" => c.vlan_mode = Some((!cleared(v)).then(|| v.to_string())),
                other => {
                    return Err(invalid(
                        other,
                        "unknown port setting (expected tag, trunks or vlan_mode)",
                    ))
                }
            }
        }
        Ok(c)
    }

    fn apply(&self, p: &mut PortConfig) {
        if let Some(t) = self.tag {
            p.tag = t;
        }
        if let Some(t) = &self.trunks {
            p.trunks = t.clone();
        }
        if let Some(m) = &self.vlan_mode {
            p.vlan_mode = m.clone();
        }
    }
}

/// A number argument.
fn number<T: std::str::FromStr>(field: &str, v: &str) -> Result<T, ConfigError> {
    v.parse()
        .map_err(|_| invalid(field, format!("{v:?} is not a number")))
}

/// The port `add-port BR NAME [SETTINGS...]` describes: `type=T`,
/// `options:K=V`, `other_config:K=V`, `tag=N`, `trunks=N,M`, `vlan_mode=MODE`, `n_rxq=N`,
/// `ofport_request=N` (the `ovs-vsctl` column names).
pub fn port_from_args(name: &str, args: &[&str]) -> Result<PortConfig, ConfigError> {
    const SETTINGS: &str =
        "type, options:KEY, other_config:KEY, tag, trunks, vlan_mode, n_rxq, ofport_request";
    let mut p = PortConfig {
        name: name.to_string(),
        ..PortConfig::default()
    };
    let mut vlan_args: Vec<&str> = Vec::new();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| invalid(*a, format!("expected KEY=VALUE ({SETTINGS})")))?;
        if let Some(key) = k.strip_prefix("options:") {
            p.options.insert(key.to_string(), v.to_string());
        } else if let Some(key) = k.strip_prefix("other_config:") {
            p.other_config.insert(key.to_string(), v.to_string());
        } else {
            match k {
                "type" => p.port_type = v.to_string(),
                "tag" | "trunks" | "vlan_mode" => vlan_args.push(a),
                "n_rxq" => p.n_rxq = number("n_rxq", v)?,
                "ofport_request" => p.ofport = Some(number("ofport_request", v)?),
                other => {
                    return Err(invalid(
                        other,
                        format!("unknown port setting (expected {SETTINGS})"),
                    ))
                }
            }
        }
    }
    if !vlan_args.is_empty() {
        VlanChange::parse(&vlan_args)?.apply(&mut p);
    }
    Ok(p)
}

impl Config {
    /// Gives every port without an `ofport` the number it has now (see the
    /// module docs).
    pub fn pin_ofports(&mut self) {
        for b in &mut self.bridges {
            let numbers = b.ofports();
            for p in &mut b.ports {
                if p.ofport.is_none() {
                    p.ofport = numbers.iter().find(|(n, _)| *n == p.name).map(|&(_, o)| o);
                }
            }
        }
    }

    /// The bridge and index of the port called `name` (a bridge's own port is
    /// not among them: it goes with its bridge).
    fn locate_port(&self, name: &str) -> Result<(usize, usize), ConfigError> {
        for (bi, b) in self.bridges.iter().enumerate() {
            if let Some(pi) = b.ports.iter().position(|p| p.name == name) {
                return Ok((bi, pi));
            }
        }
        if self.bridges.iter().any(|b| b.name == name) {
            return Err(invalid(
                name,
                "is a bridge's own port (it goes with the bridge: del-br)",
            ));
        }
        Err(invalid(name, "no such port"))
    }

    fn bridge_index(&self, name: &str) -> Result<usize, ConfigError> {
        self.bridges
            .iter()
            .position(|b| b.name == name)
            .ok_or_else(|| invalid(name, "no such bridge"))
    }

    /// This config with a new, empty bridge `name` (`add-br`).
    pub fn with_bridge(&self, name: &str) -> Result<Config, ConfigError> {
        if self.bridges.iter().any(|b| b.name == name) {
            return Err(invalid(name, "a bridge of that name already exists"));
        }
        let mut c = self.clone();
        c.bridges.push(crate::config::BridgeConfig {
            name: name.to_string(),
            ..Default::default()
        });
        c.validate_bridges(true)?;
        Ok(c)
    }

    /// This config without bridge `name` and its ports (`del-br`).
    pub fn without_bridge(&self, name: &str) -> Result<Config, ConfigError> {
        let bi = self.bridge_index(name)?;
        if self.bridges.get(bi).is_some_and(|b| !b.forwards.is_empty()) {
            return Err(invalid(
                name,
                "has static forwards ([[bridge.forward]]), which cannot change while the switch runs",
            ));
        }
        let mut c = self.clone();
        c.bridges.remove(bi);
        c.validate_bridges(true)?;
        Ok(c)
    }

    /// This config with `port` added to `bridge` (`add-port`), and the port's
    /// OpenFlow number: its `ofport` if set, else the lowest free one.
    pub fn with_port(&self, bridge: &str, port: PortConfig) -> Result<(Config, u32), ConfigError> {
        let bi = self.bridge_index(bridge)?;
        let mut c = self.clone();
        c.pin_ofports();
        let b = c
            .bridges
            .get_mut(bi)
            .ok_or_else(|| invalid(bridge, "no such bridge"))?;
        let ofport = match port.ofport {
            Some(n) => n,
            None => {
                let used: BTreeSet<u32> = b.ports.iter().filter_map(|p| p.ofport).collect();
                (1..).find(|n| !used.contains(n)).unwrap_or(1)
            }
        };
        b.ports.push(PortConfig {
            ofport: Some(ofport),
            ..port
        });
        c.validate_bridges(true)?;
        Ok((c, ofport))
    }

    /// This config without port `name` (`del-port`), and the bridge it was on.
    /// A port in a static forward (`[[bridge.forward]]`) stays: those are fixed
    /// in the PMDs at start.
    pub fn without_port(&self, name: &str) -> Result<(Config, String), ConfigError> {
        let (bi, pi) = self.locate_port(name)?;
        let mut c = self.clone();
        c.pin_ofports();
        let b = c
            .bridges
            .get_mut(bi)
            .ok_or_else(|| invalid(name, "no such port"))?;
        if b.forwards
            .iter()
            .any(|f| f.in_port == name || f.output == name)
        {
            return Err(invalid(
                name,
                "is in a static forward ([[bridge.forward]]), which cannot change while the switch runs",
            ));
        }
        b.ports.remove(pi);
        let bridge = b.name.clone();
        c.validate_bridges(true)?;
        Ok((c, bridge))
    }

    /// This config with port `name`'s VLAN settings changed (`set-port`), and
    /// the port's bridge.
    pub fn with_port_vlan(
        &self,
        name: &str,
        change: &VlanChange,
    ) -> Result<(Config, String), ConfigError> {
        let (bi, pi) = self.locate_port(name)?;
        let mut c = self.clone();
        let b = c
            .bridges
            .get_mut(bi)
            .ok_or_else(|| invalid(name, "no such port"))?;
        let bridge = b.name.clone();
        if let Some(p) = b.ports.get_mut(pi) {
            change.apply(p);
        }
        c.validate_bridges(true)?;
        Ok((c, bridge))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::from_toml_str(text).expect("config")
    }

    #[test]
    fn ports_keep_their_numbers_when_others_go() {
        let c = cfg(r#"
[[bridge]]
name = "br0"
  [[bridge.port]]
  name = "a"
  options = { dpdk-devargs = "net_null0" }
  [[bridge.port]]
  name = "b"
  options = { dpdk-devargs = "net_null1" }
  [[bridge.port]]
  name = "c"
  options = { dpdk-devargs = "net_null2" }
"#);
        let (c, bridge) = c.without_port("b").expect("del b");
        assert_eq!(bridge, "br0");
        let numbers = c.bridges[0].ofports();
        assert_eq!(
            numbers,
            vec![
                ("a".into(), 1),
                ("c".into(), 3),
                ("br0".into(), 0xffff_fffe)
            ]
        );
        // The next port takes the lowest free number.
        let p = port_from_args("d", &["options:dpdk-devargs=net_null3"]).expect("args");
        let (c, ofport) = c.with_port("br0", p).expect("add d");
        assert_eq!(ofport, 2);
        assert_eq!(c.bridges[0].ports[2].ofport, Some(2));
    }

    #[test]
    fn add_port_arguments_as_ovs_vsctl_names_them() {
        let p = port_from_args(
            "p1",
            &[
                "type=dpdk",
                "options:dpdk-devargs=net_af_packet0,iface=veth1",
                "tag=10",
                "n_rxq=2",
                "ofport_request=7",
            ],
        )
        .expect("args");
        assert_eq!(p.port_type, "dpdk");
        assert_eq!(p.devargs(), Some("net_af_packet0,iface=veth1"));
        assert_eq!((p.tag, p.n_rxq, p.ofport), (Some(10), 2, Some(7)));
        let p = port_from_args("t", &["trunks=10,20", "vlan_mode=native-untagged"]).expect("args");
        assert_eq!(p.trunks, vec![10, 20]);
        assert_eq!(p.vlan_mode.as_deref(), Some("native-untagged"));

        let err = |args: &[&str]| port_from_args("p", args).expect_err("bad").to_string();
        assert_eq!(
            err(&["tag=5000"]),
            "tag: \"5000\" is not a VLAN ID (0..=4095)"
        );
        assert_eq!(
            err(&["color=red"]),
            "color: unknown port setting (expected type, options:KEY, other_config:KEY, tag, trunks, vlan_mode, n_rxq, ofport_request)"
        );
        assert_eq!(
            err(&["options:x"]),
            "options:x: expected KEY=VALUE (type, options:KEY, other_config:KEY, tag, trunks, vlan_mode, n_rxq, ofport_request)"
        );
        assert_eq!(err(&["n_rxq=two"]), "n_rxq: \"two\" is not a number");
    }

    #[test]
    fn changes_are_checked_like_a_config_file_and_change_nothing_when_refused() {
        let c = cfg(r#"
[[bridge]]
name = "br0"
  [[bridge.port]]
  name = "a"
  options = { dpdk-devargs = "net_null0" }
"#);
        let before = c.clone();
        let e = |r: Result<(Config, u32), ConfigError>| r.expect_err("refused").to_string();
        let p = |args: &[&str]| port_from_args("b", args).expect("args");
        assert_eq!(
            e(c.with_port("br0", p(&["options:dpdk-devargs=net_null0"]))),
            "bridge[0].port[1] \"b\": options.dpdk-devargs: device \"net_null0\" is already used by port \"a\""
        );
        assert_eq!(
            e(c.with_port("br0", p(&[]))),
            "bridge[0].port[1] \"b\": options.dpdk-devargs: required for type \"dpdk\" (a PCI address or a vdev such as \"net_pcap0,rx_pcap=in.pcap\")"
        );
        assert_eq!(
            e(c.with_port("br9", p(&["options:dpdk-devargs=net_null1"]))),
            "br9: no such bridge"
        );
        assert_eq!(
            e(c.with_port("br0", port_from_args("a", &["type=internal"]).expect("args"))),
            "bridge \"br0\": duplicate port name \"a\" (twice in bridge \"br0\": port[0] and port[1])"
        );
        assert_eq!(
            c.with_bridge("br0").expect_err("dup").to_string(),
            "br0: a bridge of that name already exists"
        );
        assert_eq!(
            c.with_bridge("a").expect_err("clash").to_string(),
            "bridge[0].port[0] \"a\": name clashes with bridge \"a\" (every bridge has an internal port of its own name)"
        );
        assert_eq!(
            c.without_port("br0").expect_err("own port").to_string(),
            "br0: is a bridge's own port (it goes with the bridge: del-br)"
        );
        assert_eq!(
            c.without_port("zz").expect_err("none").to_string(),
            "zz: no such port"
        );
        let bad_mode = VlanChange::parse(&["vlan_mode=sideways"]).expect("parse");
        assert_eq!(
            c.with_port_vlan("a", &bad_mode).expect_err("mode").to_string(),
            "bridge[0].port[0] \"a\": vlan_mode: \"sideways\" is not one of access, trunk, native-tagged, native-untagged"
        );
        assert_eq!(c, before, "nothing changed");

        let (c2, bridge) = c
            .with_port_vlan("a", &VlanChange::parse(&["tag=10"]).expect("parse"))
            .expect("tag");
        assert_eq!(
            (bridge.as_str(), c2.bridges[0].ports[0].tag),
            ("br0", Some(10))
        );
        let (c3, _) = c2
            .with_port_vlan("a", &VlanChange::parse(&["tag=[]"]).expect("parse"))
            .expect("untag");
        assert_eq!(c3.bridges[0].ports[0].tag, None);
        let c4 = c.with_bridge("br1").expect("add-br");
        assert_eq!(c4.bridges.len(), 2);
        assert_eq!(c4.without_bridge("br1").expect("del-br"), c);
    }

    #[test]
    fn a_port_in_a_static_forward_stays() {
        let c = cfg(r#"
[[bridge]]
name = "br0"
  [[bridge.port]]
  name = "a"
  options = { dpdk-devargs = "net_null0" }
  [[bridge.port]]
  name = "b"
  options = { dpdk-devargs = "net_null1" }
  [[bridge.forward]]
  in_port = "a"
  output = "b"
"#);
        assert_eq!(
            c.without_port("b").expect_err("forward").to_string(),
            "b: is in a static forward ([[bridge.forward]]), which cannot change while the switch runs"
        );
        assert_eq!(
            c.without_bridge("br0").expect_err("forward").to_string(),
            "br0: has static forwards ([[bridge.forward]]), which cannot change while the switch runs"
        );
    }
}
