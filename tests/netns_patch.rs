//! Real hosts on two bridges joined by a patch pair: namespace A on bridge 1,
//! namespace B on bridge 2, both bridges plain learning switches (`NORMAL`),
//! joined by patch ports `<prefix>pa` / `<prefix>pb` from the config. The hosts
//! ping each other through both bridges; each bridge learned the far host
//! behind its patch port.
//!
//! The hosts, the daemon and their cleanup are `tests/common/netns.rs`'s, as in
//! `tests/netns_bridge.rs`. Needs root, `ip`, `ethtool` and `ping`.

mod common;

use std::time::{Duration, Instant};

use common::netns::*;

#[test]
fn two_hosts_on_two_bridges_joined_by_patch_ports_ping() {
    let _turn = serial();
    let mut h = Hosts::new('q', 2);
    let (br1, br2) = (format!("{}1", h.bridge), format!("{}2", h.bridge));
    let (pa, pb) = (format!("{}pa", h.bridge), format!("{}pb", h.bridge));
    let cfg = format!(
        r#"{base}[[bridge]]
name = "{br1}"
  [[bridge.port]]
  name = "p0"
  options = {{ dpdk-devargs = "net_af_packet0,iface={h0}" }}
  [[bridge.port]]
  name = "{pa}"
  type = "patch"
  options = {{ peer = "{pb}" }}
[[bridge]]
name = "{br2}"
  [[bridge.port]]
  name = "{pb}"
  type = "patch"
  options = {{ peer = "{pa}" }}
  [[bridge.port]]
  name = "p1"
  options = {{ dpdk-devargs = "net_af_packet1,iface={h1}" }}
"#,
        base = h.base_config(),
        h0 = h.host_veths[0],
        h1 = h.host_veths[1],
    );
    h.launch(&cfg);
    let show = h.ctl_ok(&["show"]);
    assert!(
        show.contains(&format!(
            "        Port {pa}\n            Interface {pa}\n                type: patch\n                options: {{peer={pb}}}\n"
        )),
        "{show}"
    );

    // The first ping may lose its first request to ARP; then every one.
    let (a, b) = (&h.hosts[0], &h.hosts[1]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.ping(&b.ip, 1) == 0 {
        assert!(
            Instant::now() < deadline,
            "no reply through the patch ports in 10 s"
        );
    }
    assert_eq!(a.ping(&b.ip, 5), 5, "ns0 -> ns1");
    assert_eq!(b.ping(&a.ip, 5), 5, "ns1 -> ns0");

    // Each bridge learned its own host on its port (1) and the far host
    // behind its patch port (br1: pa is 2; br2: pb is 1, p1 is 2).
    let fdb = |br: &str| -> Vec<(String, String)> {
        let out = h.ctl_ok(&["--json", "fdb-show", br]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("fdb json");
        let mut rows: Vec<(String, String)> = v
            .as_array()
            .expect("fdb array")
            .iter()
            .map(|e| {
                (
                    e["port_name"].as_str().unwrap_or_default().to_string(),
                    e["mac"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        rows.sort();
        rows
    };
    let mut want = vec![("1".to_string(), a.mac()), ("2".to_string(), b.mac())];
    want.sort();
    assert_eq!(fdb(&br1), want);
    assert_eq!(fdb(&br2), want);
    h.stop();
}
