//! Tunnel ports in the running daemon: from the config and added or removed
//! with `ctl add-port`/`del-port` (OVS's `ovs-vsctl add-port BR vx0 -- set
//! Interface vx0 type=vxlan options:remote_ip=...`). Each has an OpenFlow
//! number and no device; the datapath has one deviceless port per tunnel
//! type and UDP port (`vxlan_sys_4789`, `gre_sys`), opened with the first
//! tunnel of its kind and closed with the last. Traffic through tunnels is
//! the lead's end-to-end tests' (it needs the route and neighbor tables).

mod common;

use common::netns::{serial, Hosts};

/// The datapath's port names (`ctl --json port-stats`).
fn dp_ports(h: &Hosts) -> Vec<String> {
    let out = h.ctl_ok(&["--json", "port-stats"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("port-stats json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn tunnel_ports_from_the_config_and_at_runtime() {
    let _turn = serial();
    let mut h = Hosts::new('v', 0);
    let br = h.bridge.clone();
    let mut cfg = h.base_config();
    cfg.push_str(&format!(
        "[[bridge]]\nname = \"{br}\"\n  [[bridge.port]]\n  name = \"vx0\"\n  type = \"vxlan\"\n  options = {{ remote_ip = \"192.0.2.1\", key = \"flow\" }}\n"
    ));
    h.launch(&cfg);
    let show = h.ctl_ok(&["show"]);
    assert!(
        show.contains(
            "        Port vx0\n            Interface vx0\n                type: vxlan\n                options: {key=flow, remote_ip=\"192.0.2.1\"}\n"
        ),
        "{show}"
    );
    assert_eq!(dp_ports(&h), [br.clone(), "vxlan_sys_4789".to_string()]);
    let stats = h.ctl_ok(&["port-stats", "vxlan_sys_4789"]);
    assert!(
        stats.starts_with("(tunnels): 1 port\n  port  0 \"vxlan_sys_4789\": rx pkts=0,"),
        "{stats}"
    );

    // Another VXLAN port shares the datapath port; a GRE port opens its own.
    h.ctl_ok(&[
        "add-port",
        &br,
        "vx1",
        "type=vxlan",
        "options:remote_ip=192.0.2.2",
        "options:key=5000",
    ]);
    h.ctl_ok(&[
        "add-port",
        &br,
        "gre0",
        "type=gre",
        "options:remote_ip=192.0.2.3",
        "ofport_request=10",
    ]);
    assert_eq!(
        dp_ports(&h),
        [
            br.clone(),
            "vxlan_sys_4789".to_string(),
            "gre_sys".to_string()
        ]
    );
    // Flows name them by their OpenFlow numbers and names.
    h.ctl_ok(&["add-flow", &br, "in_port=vx1 actions=output:gre0"]);
    let dump = h.ctl_ok(&["dump-flows", &br]);
    assert!(dump.contains("in_port=2 actions=output:10"), "{dump}");

    // Refusals name the port and the field; nothing changes.
    let err = h.ctl(&[
        "add-port",
        &br,
        "vx2",
        "type=vxlan",
        "options:remote_ip=flow",
        "options:dst_port=x",
    ]);
    let text = String::from_utf8_lossy(&err.stderr);
    assert!(
        !err.status.success()
            && text.contains("\"vx2\": options.dst_port: \"x\" is not a UDP port"),
        "{text}"
    );
    let err = h.ctl(&[
        "add-port",
        &br,
        "vx3",
        "type=vxlan",
        "options:remote_ip=192.0.2.1",
        "options:in_key=flow",
    ]);
    let text = String::from_utf8_lossy(&err.stderr);
    assert!(
        !err.status.success()
            && text.contains(
                "same type, remote_ip, local_ip, key and dst_port as tunnel port \"vx0\""
            ),
        "{text}"
    );
    assert_eq!(dp_ports(&h).len(), 3);

    // The shared port goes with the last tunnel of its kind.
    h.ctl_ok(&["del-port", "vx0"]);
    assert_eq!(dp_ports(&h).len(), 3);
    h.ctl_ok(&["del-port", &br, "vx1"]);
    h.ctl_ok(&["del-port", "gre0"]);
    assert_eq!(dp_ports(&h), std::slice::from_ref(&br));
    let show = h.ctl_ok(&["show"]);
    assert!(!show.contains("vx"), "{show}");

    // A bridge removed with its tunnels takes their datapath port along.
    let br2 = format!("{br}2");
    h.ctl_ok(&["add-br", &br2]);
    h.ctl_ok(&[
        "add-port",
        &br2,
        "gnv0",
        "type=geneve",
        "options:remote_ip=192.0.2.4",
    ]);
    assert_eq!(
        dp_ports(&h),
        [br.clone(), br2.clone(), "genev_sys_6081".to_string()]
    );
    h.ctl_ok(&["del-br", &br2]);
    assert_eq!(dp_ports(&h), [br]);
    h.stop();
}
