//! The tunnel route table and neighbor cache of the real daemon, against the
//! real kernel: the daemon runs in a network namespace of its own (so the
//! addresses and routes the test gives its taps touch nothing else), the test
//! changes the taps' addresses and routes with `ip`, and `ctl route show` /
//! `route lookup` follow without a restart (rtnetlink notifications, then a
//! dump). `ctl neigh set/show/flush` are checked with their exact output.
//!
//! Needs root and `ip` (`scripts/setup.sh`). Names carry the test process id
//! ([`Hosts`] removes the namespace and stops the daemon when dropped).

mod common;

use std::time::{Duration, Instant};

use common::netns::*;

/// Runs `ip ARGS` in namespace `ns`; it must succeed.
fn ip_in(ns: &str, args: &[&str]) {
    let mut v = vec!["ip", "netns", "exec", ns, "ip"];
    v.extend_from_slice(args);
    must(&v);
}

/// Polls `ctl ARGS` until its output is `want` (at most 10 s); the last
/// output otherwise, for the assertion's message.
fn wait_ctl(h: &Hosts, args: &[&str], want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = h.ctl_ok(args);
        if out == want || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The stderr of a `ctl` command that must fail.
fn ctl_err(h: &Hosts, args: &[&str]) -> String {
    let out = h.ctl(args);
    assert!(!out.status.success(), "ctl {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn route_table_follows_the_kernel_addresses_and_routes_of_internal_ports() {
    let _turn = serial();
    let mut h = Hosts::new('t', 0);
    h.use_daemon_namespace();
    let ns = h.daemon_ns.clone().expect("daemon namespace");
    let br = h.bridge.clone();
    let tep = format!("{}tp", h.prefix);
    // The bridge's own port and an internal port of type internal.
    h.start_with_ports(&format!(
        "  [[bridge.port]]\n  name = \"{tep}\"\n  type = \"internal\"\n"
    ));
    assert_eq!(h.ctl_ok(&["route", "show"]), "Route Table:\n");

    // An address on the bridge's port (which is down: it counts all the same).
    ip_in(&ns, &["addr", "add", "172.16.0.1/24", "dev", &br]);
    let want = format!(
        "Route Table:\n\
         Cached: 172.16.0.1/32 dev {br} SRC 172.16.0.1 local\n\
         Cached: 172.16.0.0/24 dev {br} SRC 172.16.0.1\n"
    );
    assert_eq!(wait_ctl(&h, &["route", "show"], &want), want);
    assert_eq!(
        h.ctl_ok(&["route", "lookup", "172.16.0.9"]),
        format!("src 172.16.0.1\ngateway ::\ndev {br}\n")
    );
    // The port's MAC is the kernel's.
    let mac = must(&[
        "ip",
        "netns",
        "exec",
        &ns,
        "cat",
        &format!("/sys/class/net/{br}/address"),
    ]);
    let lookup: serde_json::Value =
        serde_json::from_str(&h.ctl_ok(&["--json", "route", "lookup", "172.16.0.9"]))
            .expect("lookup json");
    assert_eq!(lookup["mac"], mac.trim());
    assert_eq!(lookup["bridge"], br.as_str());
    assert_eq!(lookup["next_hop"], "172.16.0.9");

    // The address changes and a route through a gateway is added (the port
    // must be up for the kernel to take it): the table follows.
    ip_in(&ns, &["link", "set", &br, "up"]);
    ip_in(&ns, &["addr", "del", "172.16.0.1/24", "dev", &br]);
    ip_in(&ns, &["addr", "add", "172.16.1.1/24", "dev", &br]);
    ip_in(
        &ns,
        &[
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            "172.16.1.254",
            "dev",
            &br,
        ],
    );
    let want = format!(
        "Route Table:\n\
         Cached: 172.16.1.1/32 dev {br} SRC 172.16.1.1 local\n\
         Cached: 172.16.1.0/24 dev {br} SRC 172.16.1.1\n\
         Cached: 198.51.100.0/24 dev {br} GW 172.16.1.254 SRC 172.16.1.1\n"
    );
    assert_eq!(wait_ctl(&h, &["route", "show"], &want), want);
    assert_eq!(
        h.ctl_ok(&["route", "lookup", "198.51.100.7"]),
        format!("src 172.16.1.1\ngateway 172.16.1.254\ndev {br}\n")
    );

    // The internal port's address: routes with it as dev, the bridge's.
    ip_in(&ns, &["addr", "add", "192.168.5.2/24", "dev", &tep]);
    let want = format!(
        "Route Table:\n\
         Cached: 172.16.1.1/32 dev {br} SRC 172.16.1.1 local\n\
         Cached: 192.168.5.2/32 dev {tep} SRC 192.168.5.2 local\n\
         Cached: 172.16.1.0/24 dev {br} SRC 172.16.1.1\n\
         Cached: 192.168.5.0/24 dev {tep} SRC 192.168.5.2\n\
         Cached: 198.51.100.0/24 dev {br} GW 172.16.1.254 SRC 172.16.1.1\n"
    );
    assert_eq!(wait_ctl(&h, &["route", "show"], &want), want);
    let lookup: serde_json::Value =
        serde_json::from_str(&h.ctl_ok(&["--json", "route", "lookup", "192.168.5.9"]))
            .expect("lookup json");
    assert_eq!(lookup["dev"], tep.as_str());
    assert_eq!(lookup["bridge"], br.as_str());

    // A user route beats the kernel's; refusals change nothing.
    assert_eq!(
        h.ctl_ok(&["route", "add", "198.51.100.0/24", &br, "172.16.1.253"]),
        "OK\n"
    );
    assert_eq!(
        h.ctl_ok(&["route", "lookup", "198.51.100.7"]),
        format!("src 172.16.1.1\ngateway 172.16.1.253\ndev {br}\n")
    );
    assert_eq!(
        ctl_err(&h, &["route", "add", "203.0.113.0/24", "nosuchbr"]),
        format!(
            "ferroswitch ctl: route add: bridge: no bridge or internal port named \"nosuchbr\" (bridges: {br})\n"
        )
    );
    assert_eq!(
        ctl_err(&h, &["route", "add", "203.0.113.0/24", &br, "src=192.168.5.2"]),
        format!(
            "ferroswitch ctl: route add: src: 192.168.5.2 is not an address of internal port {br} (its addresses: 172.16.1.1/24)\n"
        )
    );
    assert_eq!(
        ctl_err(&h, &["route", "add", "203.0.113.1/24", &br]),
        "ferroswitch ctl: route add: prefix: \"203.0.113.1/24\": host bits are set beyond the /24 (the network is 203.0.113.0/24)\n"
    );

    // Routes and addresses deleted in the kernel: their routes go; the user
    // route stays until `route del`.
    ip_in(&ns, &["route", "del", "198.51.100.0/24"]);
    ip_in(&ns, &["addr", "del", "192.168.5.2/24", "dev", &tep]);
    ip_in(&ns, &["addr", "del", "172.16.1.1/24", "dev", &br]);
    let want =
        format!("Route Table:\nUser: 198.51.100.0/24 dev {br} GW 172.16.1.253 SRC 172.16.1.1\n");
    assert_eq!(wait_ctl(&h, &["route", "show"], &want), want);
    assert_eq!(h.ctl_ok(&["route", "del", "198.51.100.0/24"]), "OK\n");
    assert_eq!(h.ctl_ok(&["route", "show"]), "Route Table:\n");
    assert_eq!(
        ctl_err(&h, &["route", "lookup", "198.51.100.7"]),
        "ferroswitch ctl: route lookup: no route to 198.51.100.7\n"
    );

    // A bridge added at runtime: its port's address gives routes; the
    // bridge removed, they go.
    let br2 = format!("{}b2", h.prefix);
    h.ctl_ok(&["add-br", &br2]);
    ip_in(&ns, &["addr", "add", "10.77.0.1/16", "dev", &br2]);
    let want = format!(
        "Route Table:\n\
         Cached: 10.77.0.1/32 dev {br2} SRC 10.77.0.1 local\n\
         Cached: 10.77.0.0/16 dev {br2} SRC 10.77.0.1\n"
    );
    assert_eq!(wait_ctl(&h, &["route", "show"], &want), want);
    h.ctl_ok(&["del-br", &br2]);
    assert_eq!(
        wait_ctl(&h, &["route", "show"], "Route Table:\n"),
        "Route Table:\n"
    );
    h.stop();
}

#[test]
fn neigh_set_show_flush() {
    let _turn = serial();
    let mut h = Hosts::new('u', 0);
    h.use_daemon_namespace();
    let br = h.bridge.clone();
    h.start_with_ports("");
    let header = "IP                                            MAC                 Bridge\n\
                  ==========================================================================\n";
    assert_eq!(h.ctl_ok(&["neigh", "show"]), header);
    assert_eq!(
        h.ctl_ok(&["neigh", "set", &br, "172.16.1.254", "02:00:00:00:01:fe"]),
        "OK\n"
    );
    assert_eq!(
        h.ctl_ok(&["neigh", "set", &br, "172.16.1.253", "02:00:00:00:01:fd"]),
        "OK\n"
    );
    // Set again with another MAC: replaced.
    assert_eq!(
        h.ctl_ok(&["neigh", "set", &br, "172.16.1.254", "02:00:00:00:01:ee"]),
        "OK\n"
    );
    let pad = |ip: &str| format!("{ip:<46}");
    assert_eq!(
        h.ctl_ok(&["neigh", "show"]),
        format!(
            "{header}{}02:00:00:00:01:fd   {br} STATIC\n{}02:00:00:00:01:ee   {br} STATIC\n",
            pad("172.16.1.253"),
            pad("172.16.1.254")
        )
    );
    let json: serde_json::Value =
        serde_json::from_str(&h.ctl_ok(&["--json", "neigh", "show"])).expect("neigh json");
    assert_eq!(
        json,
        serde_json::json!([
            {"ip": "172.16.1.253", "mac": "02:00:00:00:01:fd", "bridge": br, "static": true, "expires_in": null},
            {"ip": "172.16.1.254", "mac": "02:00:00:00:01:ee", "bridge": br, "static": true, "expires_in": null},
        ])
    );
    assert_eq!(
        ctl_err(
            &h,
            &[
                "neigh",
                "set",
                "nosuchbr",
                "172.16.1.254",
                "02:00:00:00:01:fe"
            ]
        ),
        format!(
            "ferroswitch ctl: neigh set: bridge: no bridge named \"nosuchbr\" (bridges: {br})\n"
        )
    );
    assert_eq!(
        ctl_err(&h, &["neigh", "set", &br, "172.16.1.254", "01:00:5e:00:00:01"]),
        "ferroswitch ctl: neigh set: mac: 01:00:5e:00:00:01 is not a unicast address (a neighbor's MAC cannot be zero, multicast or broadcast)\n"
    );
    assert_eq!(h.ctl_ok(&["neigh", "aging"]), "900\n");
    assert_eq!(h.ctl_ok(&["neigh", "flush"]), "OK\n");
    assert_eq!(h.ctl_ok(&["neigh", "show"]), header);
    h.stop();
}
