//! tollgate sidecar: the key registry and usage ledger behind the tollgate
//! Envoy filter, served over HTTP (axum) and managed with the `tollgate` CLI.
//!
//! The binary (`src/main.rs`) only wires these modules together; tests build
//! the router in-process with [`app::router`].

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod drain;
pub mod error;
pub mod extract;
pub mod feed;
pub mod grants;
pub mod json_fault;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod names;
pub mod panics;
pub mod probes;
pub mod prune;
pub mod random;
pub mod reconcile;
pub mod rewrap;
pub mod sealed;
pub mod series;
pub mod signing_secret;
pub mod store;
pub mod token;
pub mod usage;
