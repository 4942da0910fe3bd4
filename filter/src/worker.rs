//! What a configuration's workers share and what each keeps to itself.
//!
//! A worker is one wasm VM, or one of Envoy's worker threads in the native
//! build. Every worker of one configuration holds the same [`Shared`]
//! (thread-safe): the validated configuration, the process's cache slot
//! key, the usage buffer its streams push to and its root flushes, and
//! whether the key change feed is current. Each [`Worker`] adds what is
//! its own: its metrics, its request id minter and the limited keys it
//! served. [`Worker::new`] is the one constructor, for both hosts.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::config::Config;
use crate::host::Host;
use crate::metrics::Metrics;
use crate::request_id::RequestIds;
use crate::shared_table::SlotKey;
use crate::usage::UsageBuffer;

/// What every worker of one configuration shares, on any thread.
#[derive(Debug)]
pub struct Shared {
    /// The plugin configuration, parsed and validated once.
    pub config: Config,
    /// The process's secret that maps key hashes to cache slots.
    pub cache_key: SlotKey,
    /// Usage records waiting for the sidecar: streams push, the root
    /// flushes (kept across reconfigurations).
    usage: Arc<Mutex<UsageBuffer>>,
    /// Whether the key change feed was current at the root's last tick
    /// (then active verdicts live for the long positive TTL).
    feed_current: AtomicBool,
}

impl Shared {
    /// The shared part of a new configuration; `carried`: the usage buffer
    /// of the configuration it replaces, whose records are kept.
    pub fn new(config: Config, cache_key: SlotKey, carried: Option<&Shared>) -> Shared {
        let usage = match carried {
            Some(old) => old.usage.clone(),
            None => Arc::new(Mutex::new(UsageBuffer::new(config.usage))),
        };
        Shared {
            config,
            cache_key,
            usage,
            feed_current: AtomicBool::new(false),
        }
    }

    /// The usage buffer. A holder that panicked left it consistent (each
    /// of its operations completes or changes nothing), so it is used on.
    pub fn usage(&self) -> MutexGuard<'_, UsageBuffer> {
        self.usage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the key change feed was current at the last tick.
    pub fn feed_current(&self) -> bool {
        self.feed_current.load(Ordering::Relaxed)
    }

    /// The tick's verdict on the key change feed.
    pub fn set_feed_current(&self, current: bool) {
        self.feed_current.store(current, Ordering::Relaxed);
    }
}

/// One worker of a configuration.
#[derive(Debug)]
pub struct Worker {
    /// What every worker of the configuration shares.
    pub shared: Arc<Shared>,
    /// The worker's metrics.
    pub metrics: Rc<Metrics>,
    /// The request id minter (kept across reconfigurations).
    pub request_ids: Rc<RefCell<RequestIds>>,
    /// The limited keys this worker served, and when it last wrote so in
    /// the Envoy's index of them (`limits::index`).
    pub limited_keys: RefCell<BTreeMap<i64, u64>>,
}

impl Worker {
    /// The worker of `shared` on this thread or VM, with `metrics`;
    /// `carried`: the worker it replaces here (a reconfiguration), whose
    /// request ids and keys served go on; else request ids are seeded from
    /// `host`'s randomness (`None` without it).
    pub fn new(
        shared: Arc<Shared>,
        metrics: Rc<Metrics>,
        host: &impl Host,
        carried: Option<&Worker>,
    ) -> Option<Worker> {
        let (request_ids, limited_keys) = match carried {
            Some(old) => (old.request_ids.clone(), old.limited_keys.take()),
            None => (
                Rc::new(RefCell::new(RequestIds::from_host(host)?)),
                BTreeMap::new(),
            ),
        };
        Some(Worker {
            shared,
            metrics,
            request_ids,
            limited_keys: RefCell::new(limited_keys),
        })
    }

    /// The plugin configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The process's secret that maps key hashes to cache slots.
    pub fn cache_key(&self) -> &SlotKey {
        &self.shared.cache_key
    }

    /// The usage buffer every worker of the configuration pushes to.
    pub fn usage(&self) -> MutexGuard<'_, UsageBuffer> {
        self.shared.usage()
    }
}
