//! ferroswitch packet pipeline (pure Rust, no DPDK, no I/O).
#![forbid(unsafe_code)]
