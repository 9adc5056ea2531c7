//! Builds the DPDK bindings and the C shim.
//!
//! Regeneration recipe: nothing is checked in; `cargo build -p dpdk-ffi` runs bindgen
//! over `shim/wrapper.h` with the flags `pkg-config --cflags libdpdk` prints (they carry
//! `-include rte_config.h` and `-march=...`, without which the headers do not compile),
//! and compiles `shim/shim.c` with the same flags. Needs Debian's `libdpdk-dev`,
//! `libclang-dev` and `pkg-config`.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=shim/wrapper.h");
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/shim.h");

    let lib = pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
        .unwrap_or_else(|e| {
            panic!(
                "DPDK 22.11 not found through pkg-config ({e}); install it with \
                 `apt-get install dpdk dpdk-dev libdpdk-dev pkg-config` (see README.md)"
            )
        });
    // Driver-specific APIs are not in pkg-config's list; name them for the linker.
    println!("cargo:rustc-link-lib=rte_net_ring");
    // rte_eth_vhost_* (net_vhost's own API); librte_vhost is in pkg-config's list.
    println!("cargo:rustc-link-lib=rte_net_vhost");

    let cflags = pkg_config::get_variable("libdpdk", "cflags").unwrap_or_default();
    let mut clang_args: Vec<String> = Vec::new();
    for p in &lib.include_paths {
        clang_args.push(format!("-I{}", p.display()));
    }
    // pkg-config --cflags: keep -include and -march, which the include paths above miss.
    let out = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("run pkg-config --cflags libdpdk");
    let flags = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = flags.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-include" {
            if let Some(f) = words.next() {
                clang_args.push("-include".into());
                clang_args.push(f.into());
            }
        } else if w.starts_with("-march") || w.starts_with("-I") {
            clang_args.push(w.into());
        }
    }
    let _ = cflags;

    let mut cc = cc::Build::new();
    cc.file("shim/shim.c").opt_level(3).warnings(true);
    for a in clang_args.chunks(1) {
        cc.flag(&a[0]);
    }
    cc.compile("ferroswitch_dpdk_shim");

    let bindings = bindgen::Builder::default()
        .header("shim/wrapper.h")
        .clang_args(&clang_args)
        .allowlist_function("rte_.*")
        .allowlist_function("fs_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        .allowlist_var("SOCKET_ID_ANY")
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_arp_ipv4")
        .blocklist_function("rte_.*_v[0-9]+")
        .derive_default(true)
        .derive_debug(false)
        .layout_tests(true)
        .clang_macro_fallback()
        .generate_comments(false)
        .parse_callbacks(Box::new(U64Flags))
        .generate()
        .expect("bindgen over shim/wrapper.h");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");
}

/// `RTE_BIT64(n)` offload and RSS flags come out of the macro fallback as i32/u32;
/// make them u64 as DPDK declares them.
#[derive(Debug)]
struct U64Flags;

impl bindgen::callbacks::ParseCallbacks for U64Flags {
    fn int_macro(&self, name: &str, _value: i64) -> Option<bindgen::callbacks::IntKind> {
        if name.starts_with("RTE_ETH_RX_OFFLOAD_")
            || name.starts_with("RTE_ETH_TX_OFFLOAD_")
            || name.starts_with("RTE_ETH_RSS_")
            || name.starts_with("RTE_MBUF_F_")
        {
            Some(bindgen::callbacks::IntKind::U64)
        } else {
            None
        }
    }
}
