//! Micro-benchmarks of the slow path's translation (`pipeline::ofproto::xlate`):
//! translations per second of one thread, no DPDK.
//!
//! - `br-tun`: Neutron's br-tun (`testdata/neutron-br-tun.dump-flows`, ports
//!   patch-int = 1 and tunnels 2 and 3) with two keys taken in turn: a broadcast
//!   from patch-int on VLAN 1 (tables 0, 1, 21: flood to the tunnels) and a unicast
//!   from tunnel 2 with tun_id 0x1388 (tables 0, 2, 10: its `learn` action builds a
//!   flow, which `translate` returns without applying, as the timing wants).
//! - `10k-rules`, `100k-rules`: the exact 5-tuple tables of the `10k-flows` and
//!   `100k-flows` scenarios (+ the priority-0 drop), keys of random rules, parsed
//!   from the very frames those scenarios send.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pipeline::flow_key::VLAN_CFI;
use pipeline::ofproto::syntax::{parse_dump_line, parse_flows, PortMap};
use pipeline::ofproto::table::Tables;
use pipeline::ofproto::xlate::{translate, XlateOptions};
use pipeline::{trafgen, FlowKey};

use crate::runner::Opts;
use crate::scenario;

const BR_TUN: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/neutron-br-tun.dump-flows"
));
/// br-tun's OpenFlow ports: patch-int, then the two tunnels.
const BR_TUN_PORTS: [u32; 3] = [1, 2, 3];
/// The 5-tuple tables' ports: src, sink.
const FLOW_PORTS: [u32; 2] = [1, 2];
/// Distinct keys per table, visited in a random order.
const N_KEYS: usize = 1 << 14;

/// xorshift64*: reproducible random indices without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn br_tun() -> Result<Tables> {
    let ports = PortMap::new();
    let mut fms = Vec::new();
    for (i, l) in BR_TUN.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        fms.push(parse_dump_line(l, &ports).with_context(|| format!("br-tun line {}", i + 1))?);
    }
    let mut t = Tables::new();
    t.add_flows(fms, 0)
        .map_err(|e| anyhow::anyhow!("br-tun: {e}"))?;
    Ok(t)
}

fn eth_key(in_port: u32, src: [u8; 6], dst: [u8; 6]) -> FlowKey {
    FlowKey {
        in_port,
        dl_src: src,
        dl_dst: dst,
        dl_type: 0x0800,
        nw_src: 0x0a00_0001,
        nw_dst: 0x0a00_0002,
        nw_proto: 17,
        nw_ttl: 64,
        tp_src: 1000,
        tp_dst: 2000,
        ..FlowKey::default()
    }
}

/// The two br-tun keys: a broadcast from patch-int on VLAN 1, and a unicast from
/// tunnel 2 with tun_id 0x1388.
fn br_tun_keys() -> [FlowKey; 2] {
    let vm = [0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56];
    let remote = [0xfa, 0x16, 0x3e, 0x65, 0x43, 0x21];
    let mut bcast = eth_key(1, vm, [0xff; 6]);
    bcast.vlan_tci[0] = VLAN_CFI | 1;
    bcast.vlan_tpid[0] = 0x8100;
    let mut ucast = eth_key(2, remote, vm);
    ucast.tun_id = 0x1388;
    [bcast, ucast]
}

/// The exact 5-tuple table of `n` rules (+ drop) and keys of random rules.
fn five_tuple_table(n: usize) -> Result<(Tables, Vec<FlowKey>)> {
    let flows = scenario::five_tuples(n);
    let text = scenario::five_tuple_rules(&flows).join("\n");
    let fms = parse_flows(&text, &PortMap::new()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut t = Tables::new();
    t.add_flows(fms, 0)
        .map_err(|e| anyhow::anyhow!("{n} rules: {e}"))?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
    let keys = (0..N_KEYS.min(n * 4))
        .map(|_| {
            let f = &flows[(rng.next() % n as u64) as usize];
            let frame = trafgen::udp_frame(f, scenario::FRAME_LEN, 0);
            let mut k = FlowKey::default();
            pipeline::parse(&frame, FLOW_PORTS[0], &mut k);
            k
        })
        .collect();
    Ok((t, keys))
}

/// Translations per second of `keys` (in turn) through `tables` over about
/// `secs` seconds.
fn time(tables: &Tables, ports: &[u32], keys: &[FlowKey], secs: f64) -> f64 {
    let budget = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n = 0u64;
    let mut i = 0;
    while start.elapsed() < budget {
        // Check the clock once per 256 translations.
        for _ in 0..256 {
            let t = translate(tables, black_box(&keys[i]), ports, XlateOptions::default());
            black_box(&t);
            i += 1;
            if i == keys.len() {
                i = 0;
            }
        }
        n += 256;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the three translation benchmarks, `secs` seconds each, `--reps` times;
/// prints medians.
pub fn run(opts: &Opts, secs: f64) -> Result<()> {
    let reps = opts.reps.max(1);
    let secs = secs.clamp(0.1, 60.0);

    let tun = br_tun()?;
    let keys = br_tun_keys();
    // Sanity: what the seed describes (flood to both tunnels; output to patch-int).
    for (k, want) in keys.iter().zip(["3,2", ",1"]) {
        let t = translate(&tun, k, &BR_TUN_PORTS, XlateOptions::default());
        let acts = pipeline::actions::format_dp_actions(&t.actions);
        if t.error.is_some() || !acts.ends_with(want) {
            bail!("br-tun translated to {acts:?} ({:?})", t.error);
        }
    }
    for (label, ks) in [
        ("broadcast from patch-int", &keys[..1]),
        ("unicast from tunnel 2 (learns)", &keys[1..]),
    ] {
        let r = median(
            (0..reps)
                .map(|_| time(&tun, &BR_TUN_PORTS, ks, secs))
                .collect(),
        );
        eprintln!("xlate br-tun {label}: {r:.0} translations/s");
    }
    let r = median(
        (0..reps)
            .map(|_| time(&tun, &BR_TUN_PORTS, &keys, secs))
            .collect(),
    );
    println!("xlate br-tun translations_per_s={r:.0}");

    for (name, n) in [("10k-rules", 10_000), ("100k-rules", 100_000)] {
        let built = Instant::now();
        let (t, keys) = five_tuple_table(n)?;
        eprintln!(
            "xlate {name}: table built in {:.2} s ({} rules, {} subtables in table 0)",
            built.elapsed().as_secs_f64(),
            t.len(),
            t.n_subtables(0)
        );
        // Sanity: every key hits its exact rule (output to port 2), not the drop.
        for k in keys.iter().take(64) {
            let x = translate(&t, k, &FLOW_PORTS, XlateOptions::default());
            let acts = pipeline::actions::format_dp_actions(&x.actions);
            if acts != "2" {
                bail!("{name}: a key translated to {acts:?}, not output to port 2");
            }
        }
        let r = median(
            (0..reps)
                .map(|_| time(&t, &FLOW_PORTS, &keys, secs))
                .collect(),
        );
        println!("xlate {name} translations_per_s={r:.0}");
    }
    Ok(())
}
