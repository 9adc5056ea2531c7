//! Final-link settings for the `ferroswitch` binary, nothing else.
//!
//! `dpdk-ffi` links DPDK's shared libraries (found with pkg-config). Here the binaries
//! get an rpath to DPDK's library directory, so a DPDK installed outside the default
//! search path still loads; with shared linkage EAL then finds its poll-mode driver
//! plugins (net_pcap, net_null, net_ring, ...) in its own plugin directory.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(dir) = pkg_config::get_variable("libdpdk", "libdir") {
        if !dir.is_empty() {
            println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
        }
    }
}
