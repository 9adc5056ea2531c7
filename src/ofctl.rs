//! `ferroswitch ofctl`: OpenFlow flow files checked and traced offline, with no
//! daemon and no DPDK (operators check flow files before applying them; tests use
//! it too).

use std::collections::BTreeSet;

use mgmt::ofproto::parse_key;
use pipeline::ofproto::action::Action;
use pipeline::ofproto::field::Field;
use pipeline::ofproto::normal::Normal;
use pipeline::ofproto::rule::FlowMod;
use pipeline::ofproto::syntax::{format_flow, parse_flows, FormatOptions, PortMap};
use pipeline::ofproto::table::Tables;
use pipeline::ofproto::xlate::{format_trace_named, translate_and_learn, XlateOptions};

/// Parses `name=N,name=N` (as `--ports` gives it).
pub fn parse_ports(text: &str) -> Result<PortMap, String> {
    let mut map = PortMap::new();
    for item in text.split(',').filter(|s| !s.trim().is_empty()) {
        let (name, num) = item
            .split_once('=')
            .ok_or_else(|| format!("--ports: {item:?}: expected NAME=NUMBER"))?;
        let n: u32 = num
            .trim()
            .parse()
            .map_err(|_| format!("--ports: {item:?}: {num:?} is not a port number"))?;
        map.insert(name.trim(), n);
    }
    Ok(map)
}

/// The flows of a file (`ovs-ofctl add-flows` syntax; `dump-flows` output with its
/// counters is accepted too), normalized as `ovs-ofctl` prints them, one per line;
/// or the first error with its line.
pub fn parse_flows_text(text: &str, ports: &PortMap) -> Result<String, String> {
    let fms = parse_flows(text, ports).map_err(|e| e.to_string())?;
    let mut out = String::new();
    for fm in &fms {
        out.push_str(&format_flow(fm, &FormatOptions::default()));
        out.push('\n');
    }
    Ok(out)
}

/// Every port number the flows name (in `in_port` matches and output actions):
/// the sandbox bridge's ports when `--ports` gives none.
fn ports_in(fms: &[FlowMod]) -> BTreeSet<u32> {
    let mut set = BTreeSet::new();
    for fm in fms {
        if fm.match_.has(Field::InPort) {
            set.insert(fm.match_.get(Field::InPort).0 as u32);
        }
        for a in &fm.actions {
            if let Action::Output(p) = a {
                set.insert(*p);
            }
        }
    }
    set
}

/// Loads the flows on a sandbox bridge and traces each key in order, learning on
/// the way (a rule learned by one key applies to the next, and so does a MAC that
/// `NORMAL` learned: every port a trunk of all VLANs, no aging); prints each trace as
/// `ovs-appctl ofproto/trace` does, its last line `Datapath actions: ...`.
pub fn trace(flows_text: &str, ports: &PortMap, keys: &[String]) -> Result<String, String> {
    let fms = parse_flows(flows_text, ports).map_err(|e| e.to_string())?;
    let mut bridge_ports: BTreeSet<u32> = ports.iter().map(|(_, n)| n).collect();
    if bridge_ports.is_empty() {
        bridge_ports = ports_in(&fms);
    }
    let mut tables = Tables::new();
    tables.add_flows(fms, 0).map_err(|e| e.to_string())?;
    let mut normal = Normal::new();
    let port_list: Vec<u32> = bridge_ports.into_iter().collect();
    let mut out = String::new();
    for (i, k) in keys.iter().enumerate() {
        let key = parse_key(k, ports).map_err(|e| format!("key {}: {e}", i + 1))?;
        let t = translate_and_learn(
            &mut tables,
            &key,
            &port_list,
            XlateOptions {
                trace: true,
                normal: Some(&mut normal.hook(0)),
            },
            0,
        );
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format_trace_named(&t, "br0"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BR_TUN: &str = include_str!("../testdata/neutron-br-tun.dump-flows");

    #[test]
    fn fixture_parses_and_normalizes() {
        let out = parse_flows_text(BR_TUN, &PortMap::new()).unwrap();
        assert_eq!(out.lines().count(), 14);
        assert!(
            out.contains("priority=1,in_port=3 actions=resubmit(,2)"),
            "{out}"
        );
        assert!(!out.contains("n_packets"), "{out}");
    }

    #[test]
    fn trace_learns_across_keys() {
        let ports = parse_ports("patch-int=1,gre-1=2,gre-2=3").unwrap();
        let keys = vec![
            "in_port=gre-1,tun_id=0x1388,dl_src=fa:16:3e:00:00:01,dl_dst=ff:ff:ff:ff:ff:ff"
                .to_string(),
            "in_port=patch-int,dl_vlan=1,dl_src=fa:16:3e:00:00:09,dl_dst=fa:16:3e:00:00:01"
                .to_string(),
        ];
        let out = trace(BR_TUN, &ports, &keys).unwrap();
        let finals: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("Datapath actions:"))
            .collect();
        assert_eq!(
            finals,
            [
                "Datapath actions: push_vlan(vid=1,pcp=0),1",
                "Datapath actions: set(tunnel(tun_id=0x1388)),pop_vlan,2"
            ],
            "{out}"
        );
        assert!(out.contains("learned rule added"), "{out}");
    }

    #[test]
    fn trace_learns_macs_through_normal() {
        let ports = parse_ports("a=1,b=2,c=3").unwrap();
        let keys = vec![
            "in_port=a,dl_src=00:00:00:00:00:0a,dl_dst=00:00:00:00:00:0b".to_string(),
            "in_port=b,dl_src=00:00:00:00:00:0b,dl_dst=00:00:00:00:00:0a".to_string(),
            "in_port=a,dl_src=00:00:00:00:00:0a,dl_dst=00:00:00:00:00:0b".to_string(),
        ];
        let out = trace("priority=0 actions=NORMAL\n", &ports, &keys).unwrap();
        let finals: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("Datapath actions:"))
            .collect();
        assert_eq!(
            finals,
            [
                "Datapath actions: 2,3",
                "Datapath actions: 1",
                "Datapath actions: 2"
            ],
            "{out}"
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_flows_text(
            "in_port=1 actions=output:2\nin_port=2 actions=frobnicate\n",
            &PortMap::new(),
        )
        .unwrap_err();
        assert!(e.contains("line 2") && e.contains("frobnicate"), "{e}");
        assert!(parse_ports("a=x")
            .unwrap_err()
            .contains("not a port number"));
    }
}
