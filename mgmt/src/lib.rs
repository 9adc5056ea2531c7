//! placeholder
#![forbid(unsafe_code)]
pub mod config;
pub mod console;
pub mod control;
pub mod metrics;
pub mod view;
