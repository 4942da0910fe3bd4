//! What one worker's root shares with every stream it creates: the
//! validated configuration, the usage buffer, the request id minter and the
//! metrics. Built by the root in `on_configure`, immutable but for the
//! buffer and the minter, which streams borrow one at a time, the feed's
//! currency, which the tick sets, and the limited keys it served.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::request_id::RequestIds;
use crate::shared_table::SlotKey;
use crate::usage::UsageBuffer;

/// The per-worker state of a configured filter.
#[derive(Debug)]
pub struct Worker {
    /// The plugin configuration, parsed and validated once.
    pub config: Config,
    /// Usage records waiting for the sidecar (kept across reconfigurations).
    pub usage: Rc<RefCell<UsageBuffer>>,
    /// The request id minter (kept across reconfigurations).
    pub request_ids: Rc<RefCell<RequestIds>>,
    /// The worker's metrics.
    pub metrics: Rc<Metrics>,
    /// The process's secret that maps key hashes to cache slots.
    pub cache_key: SlotKey,
    /// Whether the key change feed was current at the last tick (then
    /// active verdicts live for the long positive TTL).
    pub feed_current: Cell<bool>,
    /// The limited keys this worker served, and when it last wrote so in
    /// the Envoy's index of them (`limits::index`).
    pub limited_keys: RefCell<BTreeMap<i64, u64>>,
}
