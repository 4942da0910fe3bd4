//! What each hook does, in safe Rust, against the traits of `abi::api`:
//! one [`Root`](tollgate_filter::root::Root) per filter configuration on
//! Envoy's main thread (`config.rs`: configuration, the usage flush through
//! configuration-level callouts, the tick from Envoy's scheduler), and one
//! [`Flow`](tollgate_filter::flow::Flow) per stream on its worker thread
//! (`stream.rs`). The flow and the root make every decision, as in the
//! wasm build.
//!
//! Streams on a worker thread share a per-thread worker made from the
//! root's configuration (`workers.rs`); their usage records go to the
//! root's buffer through the configuration's queue ([`Shared`]) when each
//! stream completes, and are flushed by the root on its tick.
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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};

use tollgate_filter::config::Config;
use tollgate_filter::shared_table::SlotKey;
use tollgate_wire::UsageRecord;

use crate::host::MetricDef;

/// What a configuration shares with every worker thread.
#[derive(Debug)]
pub struct Shared {
    /// The validated plugin configuration.
    pub config: Config,
    /// The process's key-cache slot key.
    pub cache_key: SlotKey,
    /// The metrics the root defined (index = the filter's id).
    pub metrics: Arc<[MetricDef]>,
    /// Usage records of completed streams, waiting for the root's tick.
    records: Mutex<VecDeque<UsageRecord>>,
    /// Records in the root's buffer as of its last step: with the queue,
    /// what the configuration holds, bounded by `usage.buffer_cap`.
    root_held: AtomicUsize,
    /// Whether the key change feed was current at the root's last tick
    /// (each stream copies it into its thread's worker).
    feed_current: AtomicBool,
}

/// The module's state of one filter configuration, as Envoy holds it
/// (shared by the main thread and every worker thread).
#[derive(Debug)]
pub struct ConfigHandle {
    id: u64,
    shared: Arc<Shared>,
}
