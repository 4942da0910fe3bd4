//! What each hook does, in safe Rust, against the traits of `abi::api`:
//! one [`Root`](tollgate_filter::root::Root) per filter configuration on
//! Envoy's main thread (`config.rs`: configuration, the usage flush through
//! configuration-level callouts, the tick from Envoy's scheduler), and one
//! [`Flow`](tollgate_filter::flow::Flow) per stream on its worker thread
//! (`stream.rs`). The flow and the root make every decision, as in the
//! wasm build.
//!
//! Streams on a worker thread share a per-thread worker of the root's
//! configuration (`workers.rs`), made by the filter's one constructor
//! from the configuration's thread-safe part (`worker::Shared`): their
//! usage records go straight to the buffer the root flushes on its tick,
//! and the feed's currency the root's tick sets is theirs at once.
//!
//! Nothing here catches a panic: the hooks guard every call, and on a
//! panic call [`stream_fault`], which answers a request not yet decided
//! 503 `auth_unavailable` (never lets it through).

mod config;
mod stream;
mod workers;

#[cfg(test)]
mod tests;

pub use config::{config_callout_done, config_destroy, config_new, config_scheduled};
pub use stream::{
    filter_new, response_body, stream_event, stream_fault, StreamEvent, StreamFilter,
};

use std::sync::Arc;

use tollgate_filter::worker;

use crate::host::MetricDef;

/// What a configuration shares with every worker thread.
#[derive(Debug)]
pub struct Shared {
    /// What every worker of the configuration shares (the root's too).
    pub worker: Arc<worker::Shared>,
    /// The metrics the root defined (index = the filter's id).
    pub metrics: Arc<[MetricDef]>,
}

/// The module's state of one filter configuration, as Envoy holds it
/// (shared by the main thread and every worker thread).
#[derive(Debug)]
pub struct ConfigHandle {
    id: u64,
    shared: Arc<Shared>,
}
