//! Micro-benchmarks of the flow stage's pure parts, per packet: parsing a 64-byte
//! UDP frame into a flow key (and reading its simple-match fields only), hashing
//! the key, an exact-match-cache hit, and a
//! whole-burst flow-cache lookup (EMC hits, and classifier hits with the EMC off).
//! Pure CPU, no DPDK: `cargo run --release -p perf -- fastpath`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use pipeline::emc::{key_hash, Emc};
use pipeline::flow_cache::{FlowCache, Hit};
use pipeline::trafgen::{flows, udp_frame};
use pipeline::FlowKey;

/// Runs `f` (which does `per` operations) for about `secs` seconds; ns per op.
fn ns_per_op(secs: f64, per: usize, mut f: impl FnMut()) -> f64 {
    let mut iters = 0u64;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..64 {
            f();
        }
        iters += 64;
    }
    start.elapsed().as_secs_f64() * 1e9 / (iters as f64 * per as f64)
}

pub fn run(secs: f64) -> Result<()> {
    let fl = flows(32);
    let frames: Vec<Vec<u8>> = fl.iter().map(|f| udp_frame(f, 64, 0)).collect();
    let mut keys = vec![FlowKey::default(); 32];
    let ns = ns_per_op(secs, 32, || {
        for (f, k) in frames.iter().zip(keys.iter_mut()) {
            black_box(pipeline::parse(black_box(f), 1, k));
        }
    });
    println!("fastpath parse ns_per_packet={ns:.2}");

    let ns = ns_per_op(secs, 32, || {
        for f in &frames {
            black_box(pipeline::parse_simple(black_box(f)));
        }
    });
    println!("fastpath parse_simple ns_per_packet={ns:.2}");

    let ns = ns_per_op(secs, 32, || {
        for k in &keys {
            black_box(key_hash(black_box(k)));
        }
    });
    println!("fastpath key_hash ns_per_packet={ns:.2}");

    let hashes: Vec<u32> = keys.iter().map(key_hash).collect();
    let mut emc: Emc<u32> = Emc::new(8192, 1);
    for (i, (k, h)) in keys.iter().zip(&hashes).enumerate() {
        emc.insert(*h, k, i as u32);
    }
    let ns = ns_per_op(secs, 32, || {
        for (k, h) in keys.iter().zip(&hashes) {
            black_box(emc.lookup(*h, black_box(k)));
        }
    });
    println!("fastpath emc_hit ns_per_packet={ns:.2}");

    let mask = FlowKey {
        in_port: u32::MAX,
        nw_dst: u32::MAX,
        ..FlowKey::default()
    };
    for (emc_entries, what) in [
        (8192usize, "burst_lookup_emc"),
        (0, "burst_lookup_megaflow"),
    ] {
        let mut cache: FlowCache<u32> = FlowCache::new(emc_entries, 1);
        for (i, k) in keys.iter().enumerate() {
            cache.install(&mask, k, Arc::new(i as u32), Arc::default());
        }
        let mut hits = [Hit::Miss; 32];
        // Warm the EMC.
        cache.lookup_burst(&keys, &hashes, &mut hits);
        let ns = ns_per_op(secs, 32, || {
            black_box(cache.lookup_burst(black_box(&keys), &hashes, &mut hits));
        });
        println!("fastpath {what} ns_per_packet={ns:.2}");
    }
    Ok(())
}

/// A datapath that takes megaflows and does nothing with them.
struct NullDp;

impl mgmt::ofproto::DpControl for NullDp {
    type Packet = ();
    fn install(
        &self,
        _pmd: usize,
        _mask: &FlowKey,
        _key: &FlowKey,
        actions: Vec<pipeline::actions::DpAction>,
        stats: Arc<pipeline::flow_cache::FlowStats>,
        _packet: Option<()>,
    ) {
        black_box((actions, stats));
    }
    fn remove(&self, _pmd: usize, _mask: &FlowKey, _key: &FlowKey) {}
}

/// Upcalls per second the slow path handles by itself (translation through `n`
/// exact 5-tuple rules, megaflow bookkeeping), with a datapath that does nothing:
/// the ceiling of the flow-setup rate on the management thread.
pub fn upcalls(n: usize) -> Result<()> {
    use mgmt::ofproto::{Bridge, BridgePort, Ofproto, OfprotoConfig};
    let fl = crate::scenario::five_tuples(n);
    let text = crate::scenario::five_tuple_rules(&fl).join("\n");
    let ports = vec![
        BridgePort {
            name: "src".into(),
            ofport: 1,
            odp: 0,
        },
        BridgePort {
            name: "sink".into(),
            ofport: 2,
            odp: 1,
        },
    ];
    let mut o = Ofproto::new(
        vec![Bridge::new("br0", ports)],
        NullDp,
        OfprotoConfig::default(),
    );
    o.add_flows("br0", &text).map_err(anyhow::Error::msg)?;
    let keys: Vec<FlowKey> = fl
        .iter()
        .map(|f| {
            let mut k = FlowKey::default();
            pipeline::parse(&udp_frame(f, 64, 0), 0, &mut k);
            k
        })
        .collect();
    let start = Instant::now();
    for k in &keys {
        o.handle_upcall(0, *k, ());
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "upcall {n}-rules upcalls_per_s={:.0} megaflows={}",
        keys.len() as f64 / secs,
        o.n_megaflows()
    );
    Ok(())
}
