//! Each worker thread's [`Worker`] of a configuration: made from the
//! configuration's shared state on the thread's first stream, then shared
//! by every stream of that configuration on the thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Weak};

use tollgate_filter::metrics::Metrics;
use tollgate_filter::worker::Worker;

use super::{ConfigHandle, Shared};
use crate::host::NativeStream;

/// A worker thread's worker of one configuration, and that configuration.
type ThreadWorker = (Weak<Shared>, Rc<Worker>);

thread_local! {
    /// The per-thread worker of each configuration (worker threads), with
    /// the configuration's state, to forget workers of removed ones.
    static WORKERS: RefCell<HashMap<u64, ThreadWorker>> = RefCell::new(HashMap::new());
}

/// This thread's worker of the configuration, made on its first stream
/// (`host` defines its metrics and seeds its request ids).
pub(super) fn thread_worker(handle: &ConfigHandle, host: &NativeStream) -> Option<Rc<Worker>> {
    WORKERS.with(|workers| {
        let mut workers = workers.try_borrow_mut().ok()?;
        if let Some((_, worker)) = workers.get(&handle.id) {
            return Some(worker.clone());
        }
        // A configuration Envoy removed (all its streams gone) leaves no worker behind.
        workers.retain(|_, (shared, _)| shared.strong_count() > 0);
        let shared = handle.shared.worker.clone();
        let metrics = Rc::new(Metrics::define(host));
        let worker = Rc::new(Worker::new(shared, metrics, host, None)?);
        workers.insert(handle.id, (Arc::downgrade(&handle.shared), worker.clone()));
        Some(worker)
    })
}

/// How many configurations have a worker on this thread.
#[cfg(test)]
pub(super) fn on_this_thread() -> usize {
    WORKERS.with(|workers| workers.borrow().len())
}
