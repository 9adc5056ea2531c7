//! The `ferroswitch` binary's pieces that tests use too: the embedded demo, the
//! management layer's view of the datapath, the glue between the slow path and the
//! PMDs, and the offline `ofctl` commands. `src/main.rs` is the command line and
//! the wiring.
#![forbid(unsafe_code)]

pub mod demo;
pub mod dpview;
pub mod ofctl;
pub mod reconfig;
pub mod slowpath;
