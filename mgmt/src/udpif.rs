//! The slow path's threads and control commands, around an [`Ofproto`].
//!
//! - `mgmt-upcall`: takes upcalls from the PMDs (through a receive function the
//!   binary supplies, so this crate needs no DPDK) and hands each to
//!   [`Ofproto::handle_upcall_deferred`], then revalidates what the batch
//!   learned ([`Ofproto::revalidate_pending`]) before releasing the lock.
//! - `mgmt-revalidator`: every [`REVALIDATE_EVERY`], credits rule counters,
//!   refreshes the MACs of used `NORMAL` megaflows, expires rules, MAC entries and
//!   idle megaflows ([`Ofproto::run_periodic`]); every 50 ms between, revalidates
//!   what changed meanwhile ([`Ofproto::revalidate_pending`]: the tunnel
//!   tables' generation, MAC tables, bonds).
//! - the control commands `add-flow`, `add-flows`, `del-flows`, `dump-flows`,
//!   `ofproto-trace`, `dump-dp-flows`, `fdb-show`, `fdb-flush`, `bond-show` and
//!   `lacp-show`, as a
//!   [`CommandExtension`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use pipeline::FlowKey;

use crate::control::{CommandExtension, Request, Response};
use crate::ofproto::{DpControl, Ofproto};

/// Upcalls handled per lock of the slow path at most (so control commands wait
/// little behind a flood of misses).
const UPCALL_BATCH: usize = 256;

/// How often the revalidator runs.
pub const REVALIDATE_EVERY: Duration = Duration::from_millis(500);

/// The slow path shared by its threads and the control socket.
pub type SharedOfproto<D> = Arc<Mutex<Ofproto<D>>>;

fn lock<D: DpControl>(o: &SharedOfproto<D>) -> MutexGuard<'_, Ofproto<D>> {
    // A panic while holding the lock leaves the tables as the last complete
    // operation left them (every operation applies all or nothing).
    o.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long the upcall handler sleeps when the queue is empty: from the first
/// value right after an upcall, doubling while nothing comes, up to the second. It
/// polls rather than parks while upcalls are recent: a parked handler costs the
/// PMD that queues the next upcall a futex wake-up, which a PMD in a flow-setup
/// storm should not pay per burst. It backs off because a thread waking 20,000
/// times a second slows the PMD on a sibling hyperthread (`perf p2p`).
pub const UPCALL_POLL: (Duration, Duration) = (Duration::from_micros(20), Duration::from_millis(1));

/// After this long without an upcall the handler stops polling and parks
/// (`park`, for at most [`UPCALL_PARK`] at a time, to see the stop flag): a
/// thousand wake-ups a second take the management CPU from whatever else runs
/// there (`perf pvp`: the guest, whose involuntary context switches were ~30/s
/// beside testpmd, ~1,000/s beside ferroswitch). The PMD that queues the next
/// upcall unparks it without blocking (`pmd::UpcallWaker`).
pub const UPCALL_PARK_AFTER: Duration = Duration::from_millis(20);
/// The longest single park of an idle upcall handler.
pub const UPCALL_PARK: Duration = Duration::from_millis(100);

/// Starts the upcall handler and the revalidator. `recv` returns the next upcall
/// if one is queued, without waiting: (PMD index, key, packet). `park(limit)`
/// sleeps up to `limit` unless an upcall is queued or comes (the handler calls
/// it once idle for [`UPCALL_PARK_AFTER`]).
pub fn spawn<D, R, P>(
    ofproto: SharedOfproto<D>,
    mut recv: R,
    mut park: P,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Vec<JoinHandle<()>>>
where
    D: DpControl + 'static,
    R: FnMut() -> Option<(usize, FlowKey, D::Packet)> + Send + 'static,
    P: FnMut(Duration) + Send + 'static,
{
    let o = ofproto.clone();
    let s = stop.clone();
    let upcall = std::thread::Builder::new()
        .name("mgmt-upcall".into())
        .spawn(move || {
            let mut idle = UPCALL_POLL.0;
            // How long nothing has come (while polling).
            let mut quiet = Duration::ZERO;
            // Relaxed: a stop flag, joined afterwards.
            while !s.load(Ordering::Relaxed) {
                let Some((pmd, key, packet)) = recv() else {
                    if quiet >= UPCALL_PARK_AFTER {
                        park(UPCALL_PARK);
                    } else {
                        std::thread::sleep(idle);
                        quiet += idle;
                        idle = (idle * 2).min(UPCALL_POLL.1);
                    }
                    continue;
                };
                idle = UPCALL_POLL.0;
                quiet = Duration::ZERO;
                // Handle what is queued under one lock, a bounded batch at a time.
                let mut o = lock(&o);
                o.handle_upcall_deferred(pmd, key, packet);
                for _ in 0..UPCALL_BATCH {
                    match recv() {
                        Some((pmd, key, packet)) => o.handle_upcall_deferred(pmd, key, packet),
                        None => break,
                    }
                }
                // Megaflows installed early in the batch follow what later
                // upcalls learned (rules, MACs) before anyone else sees the tables.
                o.revalidate_pending();
            }
        })?;
    let o = ofproto;
    let revalidator = std::thread::Builder::new()
        .name("mgmt-revalidator".into())
        .spawn(move || {
            let mut waited = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                waited += Duration::from_millis(50);
                if waited >= REVALIDATE_EVERY {
                    waited = Duration::ZERO;
                    lock(&o).run_periodic();
                } else {
                    // What changed without an upcall (the kernel's routes or
                    // addresses, a neighbor set or aged) reaches the megaflows
                    // within a tick, as OVS revalidates on a route change.
                    lock(&o).revalidate_pending();
                }
            }
        })?;
    Ok(vec![upcall, revalidator])
}

/// The slow path's control commands, with their synopses.
pub const COMMANDS: &[&str] = &[
    "add-flow BRIDGE FLOW",
    "add-flows BRIDGE FILE",
    "del-flows BRIDGE [FLOW] [--strict]",
    "dump-flows BRIDGE [FLOW] [--names]",
    "ofproto-trace BRIDGE FLOW",
    "dump-dp-flows",
    "fdb-show BRIDGE",
    "fdb-flush [BRIDGE]",
    "bond-show [BOND]",
    "lacp-show [BOND]",
    "fdb-add BRIDGE PORT VLAN MAC",
    "fdb-del BRIDGE VLAN MAC",
    "add-tlv-map BRIDGE MAP",
    "del-tlv-map BRIDGE [MAP]",
    "dump-tlv-map BRIDGE",
];

/// The control commands over `ofproto`.
pub fn commands<D: DpControl + 'static>(ofproto: SharedOfproto<D>) -> CommandExtension {
    CommandExtension {
        commands: COMMANDS.iter().map(|s| s.to_string()).collect(),
        handler: Arc::new(move |req: &Request| handle(&ofproto, req)),
    }
}

fn handle<D: DpControl>(o: &SharedOfproto<D>, req: &Request) -> Option<Response> {
    let flags: Vec<&str> = req
        .args
        .iter()
        .map(String::as_str)
        .filter(|a| a.starts_with("--"))
        .collect();
    let args: Vec<&str> = req
        .args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let usage = |synopsis: &str| Response::failure(format!("usage: {synopsis}"));
    let result = |r: Result<String, String>| match r {
        Ok(s) => Response::success(s),
        Err(e) => Response::failure(format!("{}: {e}", req.cmd)),
    };
    let unknown_flag = flags
        .iter()
        .find(|f| !matches!(**f, "--strict" | "--names" | "--json"));
    if let Some(f) = unknown_flag {
        return Some(Response::failure(format!(
            "{}: unknown option {f}",
            req.cmd
        )));
    }
    Some(match req.cmd.as_str() {
        "add-flow" => match args.as_slice() {
            [br, flow] => result(lock(o).add_flow(br, flow).map(|()| String::new())),
            _ => usage("add-flow BRIDGE FLOW"),
        },
        "add-flows" => match args.as_slice() {
            // The client sends the file's text, not its name.
            [br, text] => result(lock(o).add_flows(br, text).map(|()| String::new())),
            _ => usage("add-flows BRIDGE FILE"),
        },
        "del-flows" => match args.as_slice() {
            [br] => result(
                lock(o)
                    .del_flows(br, None, flags.contains(&"--strict"))
                    .map(|_| String::new()),
            ),
            [br, flow] => result(
                lock(o)
                    .del_flows(br, Some(flow), flags.contains(&"--strict"))
                    .map(|_| String::new()),
            ),
            _ => usage("del-flows BRIDGE [FLOW] [--strict]"),
        },
        "dump-flows" => match args.as_slice() {
            [br] => result(lock(o).dump_flows(br, None, flags.contains(&"--names"))),
            [br, flow] => result(lock(o).dump_flows(br, Some(flow), flags.contains(&"--names"))),
            _ => usage("dump-flows BRIDGE [FLOW] [--names]"),
        },
        "ofproto-trace" => match args.as_slice() {
            [br, flow] => result(lock(o).trace(br, flow)),
            _ => usage("ofproto-trace BRIDGE FLOW"),
        },
        "dump-dp-flows" => match args.as_slice() {
            [] => Response::success(lock(o).dump_dp_flows()),
            _ => usage("dump-dp-flows"),
        },
        "fdb-show" => match args.as_slice() {
            [br] if req.json => result(lock(o).fdb_show_json(br)),
            [br] => result(lock(o).fdb_show(br)),
            _ => usage("fdb-show BRIDGE"),
        },
        "fdb-flush" => match args.as_slice() {
            [] => result(lock(o).fdb_flush(None)),
            [br] => result(lock(o).fdb_flush(Some(br))),
            _ => usage("fdb-flush [BRIDGE]"),
        },
        "bond-show" => match args.as_slice() {
            [] if req.json => result(lock(o).bond_show_json(None)),
            [] => result(lock(o).bond_show(None)),
            [bond] if req.json => result(lock(o).bond_show_json(Some(bond))),
            [bond] => result(lock(o).bond_show(Some(bond))),
            _ => usage("bond-show [BOND]"),
        },
        "lacp-show" => match args.as_slice() {
            [] => result(lock(o).lacp_show(None)),
            [bond] => result(lock(o).lacp_show(Some(bond))),
            _ => usage("lacp-show [BOND]"),
        },
        "fdb-add" => match args.as_slice() {
            [br, port, vlan, mac] => result(lock(o).fdb_add(br, port, vlan, mac)),
            _ => usage("fdb-add BRIDGE PORT VLAN MAC"),
        },
        "fdb-del" => match args.as_slice() {
            [br, vlan, mac] => result(lock(o).fdb_del(br, vlan, mac)),
            _ => usage("fdb-del BRIDGE VLAN MAC"),
        },
        "add-tlv-map" => match args.as_slice() {
            [br, map] => result(lock(o).add_tlv_map(br, map).map(|()| String::new())),
            _ => usage("add-tlv-map BRIDGE MAP"),
        },
        "del-tlv-map" => match args.as_slice() {
            [br] => result(lock(o).del_tlv_map(br, None).map(|()| String::new())),
            [br, map] => result(lock(o).del_tlv_map(br, Some(map)).map(|()| String::new())),
            _ => usage("del-tlv-map BRIDGE [MAP]"),
        },
        "dump-tlv-map" => match args.as_slice() {
            [br] => result(lock(o).dump_tlv_map(br)),
            _ => usage("dump-tlv-map BRIDGE"),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ofproto::{Bridge, BridgePort, OfprotoConfig};
    use pipeline::actions::DpAction;
    use pipeline::flow_cache::FlowStats;

    struct NullDp;

    impl DpControl for NullDp {
        type Packet = ();
        fn install(
            &self,
            _pmd: usize,
            _mask: &FlowKey,
            _key: &FlowKey,
            _actions: Vec<DpAction>,
            _stats: Arc<FlowStats>,
            _packet: Option<()>,
        ) {
        }
        fn remove(&self, _pmd: usize, _mask: &FlowKey, _key: &FlowKey) {}
    }

    fn run(o: &SharedOfproto<NullDp>, cmd: &str, args: &[&str]) -> Response {
        let req = Request::new(cmd, args.iter().map(|a| a.to_string()).collect());
        handle(o, &req).expect("a slow-path command")
    }

    #[test]
    fn fdb_commands() {
        let ports = (1..=2)
            .map(|i| BridgePort {
                name: format!("p{i}"),
                ofport: i,
                odp: i as usize - 1,
            })
            .collect();
        let o: SharedOfproto<NullDp> = Arc::new(Mutex::new(Ofproto::new(
            vec![Bridge::new("br0", ports)],
            NullDp,
            OfprotoConfig::default(),
        )));
        let mut key = FlowKey {
            dl_src: [0, 0, 0, 0, 0, 0x0a],
            dl_dst: [0xff; 6],
            ..FlowKey::default()
        };
        key.in_port = 1;
        lock(&o).handle_upcall(0, key, ());
        let show = run(&o, "fdb-show", &["br0"]);
        assert!(show.ok, "{show:?}");
        assert_eq!(
            show.output,
            " port  VLAN  MAC                Age\n    2     0  00:00:00:00:00:0a    0\n"
        );
        let req = Request {
            cmd: "fdb-show".into(),
            args: vec!["br0".into()],
            json: true,
        };
        let json = handle(&o, &req).expect("fdb-show");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json.output).unwrap(),
            serde_json::json!([{
                "port": 2,
                "port_name": "2",
                "vlan": 0,
                "mac": "00:00:00:00:00:0a",
                "age": 0,
                "static": false,
            }])
        );
        let flush = run(&o, "fdb-flush", &[]);
        assert_eq!(flush.output, "table successfully flushed\n");
        assert_eq!(
            run(&o, "fdb-show", &["br0"]).output,
            " port  VLAN  MAC                Age\n"
        );
        assert_eq!(
            run(&o, "fdb-flush", &["br0"]).output,
            "table successfully flushed\n"
        );
        assert_eq!(
            run(&o, "fdb-show", &["brX"]).error.as_deref(),
            Some("fdb-show: no bridge named \"brX\"")
        );
        assert_eq!(
            run(&o, "fdb-flush", &["brX"]).error.as_deref(),
            Some("fdb-flush: no bridge named \"brX\"")
        );
        assert_eq!(
            run(&o, "fdb-show", &[]).error.as_deref(),
            Some("usage: fdb-show BRIDGE")
        );
        assert_eq!(
            run(&o, "fdb-flush", &["a", "b"]).error.as_deref(),
            Some("usage: fdb-flush [BRIDGE]")
        );
        // Static entries: fdb-add, shown as static, kept by learning, fdb-del.
        let add = run(&o, "fdb-add", &["br0", "p1", "0", "00:00:00:00:00:0a"]);
        assert!(add.ok, "{add:?}");
        assert!(run(&o, "fdb-add", &["br0", "2", "10", "02:00:00:00:00:0b"]).ok);
        lock(&o).handle_upcall(0, key, ());
        assert_eq!(
            run(&o, "fdb-show", &["br0"]).output,
            " port  VLAN  MAC                Age\n\
             \x20   1     0  00:00:00:00:00:0a  static\n\
             \x20   2    10  02:00:00:00:00:0b  static\n"
        );
        assert!(run(&o, "fdb-del", &["br0", "0", "00:00:00:00:00:0a"]).ok);
        assert_eq!(
            run(&o, "fdb-del", &["br0", "0", "00:00:00:00:00:0a"])
                .error
                .as_deref(),
            Some("fdb-del: no static entry for MAC 00:00:00:00:00:0a in VLAN 0")
        );
        for (args, err) in [
            (
                ["br0", "p9", "0", "00:00:00:00:00:0a"],
                "fdb-add: bridge \"br0\" has no port \"p9\"",
            ),
            (
                ["br0", "p1", "4096", "00:00:00:00:00:0a"],
                "fdb-add: invalid VLAN \"4096\": must be 0 to 4095",
            ),
            (
                ["br0", "p1", "0", "00:00:00:00:0a"],
                "fdb-add: invalid MAC \"00:00:00:00:0a\": must be six hex bytes like 02:00:00:00:00:01",
            ),
            (
                ["br0", "p1", "0", "ff:ff:ff:ff:ff:ff"],
                "fdb-add: MAC ff:ff:ff:ff:ff:ff: a multicast or broadcast MAC cannot be a static entry",
            ),
            (
                ["brX", "p1", "0", "00:00:00:00:00:0a"],
                "fdb-add: no bridge named \"brX\"",
            ),
        ] {
            assert_eq!(run(&o, "fdb-add", &args).error.as_deref(), Some(err));
        }
        assert_eq!(
            run(&o, "fdb-add", &["br0"]).error.as_deref(),
            Some("usage: fdb-add BRIDGE PORT VLAN MAC")
        );
        assert_eq!(
            run(&o, "fdb-del", &["br0", "0"]).error.as_deref(),
            Some("usage: fdb-del BRIDGE VLAN MAC")
        );
        let ext = commands(o);
        assert!(ext.commands.contains(&"fdb-show BRIDGE".to_string()));
        assert!(ext.commands.contains(&"fdb-flush [BRIDGE]".to_string()));
    }
}
