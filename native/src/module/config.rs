//! The root side: one [`Root`] per filter configuration, on Envoy's main
//! thread. Roots live in this thread's registry, keyed by the handle Envoy
//! holds, since the handle itself is shared with worker threads.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tollgate_filter::host::{Host as _, LogLevel};
use tollgate_filter::metrics::Counter;
use tollgate_filter::root::Root;
use tollgate_filter::usage::Pushed;
use tollgate_wire::UsageRecord;

use super::{ConfigHandle, Shared};
use crate::abi::{Answer, EnvoyConfig};
use crate::host::{NativeRoot, TICK_EVENT};

static NEXT_CONFIG: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The roots of the configurations (main thread only).
    static ROOTS: RefCell<HashMap<u64, Root<NativeRoot>>> = RefCell::new(HashMap::new());
    /// Callout answers that arrived while their root was busy.
    static ROOT_PENDING: RefCell<VecDeque<(u64, u64, Answer)>> = const { RefCell::new(VecDeque::new()) };
}

/// A new filter configuration (main thread): the root parses and validates
/// it; `None` rejects it, so Envoy does not serve without the filter.
pub fn config_new(envoy: Box<dyn EnvoyConfig>, plugin: Vec<u8>) -> Option<ConfigHandle> {
    let size = plugin.len();
    let mut root = Root::new(NativeRoot::new(envoy, plugin));
    if !root.on_configure(size) {
        return None;
    }
    let worker = root.worker()?;
    let shared = Arc::new(Shared {
        config: worker.config.clone(),
        cache_key: worker.cache_key,
        metrics: root.host().metrics.borrow().as_slice().into(),
        records: Mutex::new(VecDeque::new()),
        root_held: AtomicUsize::new(0),
        feed_current: AtomicBool::new(false),
    });
    let id = NEXT_CONFIG.fetch_add(1, Ordering::Relaxed);
    ROOTS.with(|roots| roots.borrow_mut().insert(id, root));
    Some(ConfigHandle { id, shared })
}

/// The configuration goes (main thread): the root flushes what it can and
/// its tick stops.
pub fn config_destroy(handle: ConfigHandle) {
    let root = ROOTS.with(|roots| roots.borrow_mut().remove(&handle.id));
    if let Some(mut root) = root {
        take_queued(&root, &handle.shared);
        if !root.on_done() {
            root.host().log(
                LogLevel::Warn,
                "configuration removed with a usage batch in flight",
            );
        }
    }
}

/// A scheduled event on the main thread: the root's timer (the streams'
/// queued records go to the root first).
pub fn config_scheduled(handle: &ConfigHandle, event: u64) {
    if event != TICK_EVENT {
        return;
    }
    with_root(handle, |root| {
        take_queued(root, &handle.shared);
        root.on_timer();
    });
}

/// A configuration-level callout (a usage flush, a feed poll, a grant
/// call) answered. One that answers while its root is busy (inside the
/// call that sent it) waits until the root is free.
pub fn config_callout_done(handle: &ConfigHandle, id: u64, answer: Answer) {
    let busy = ROOTS.with(|roots| roots.try_borrow_mut().is_err());
    if busy {
        ROOT_PENDING.with(|p| p.borrow_mut().push_back((handle.id, id, answer)));
        return;
    }
    with_root(handle, |root| root_answer(root, id, answer));
}

/// Moves the records completed streams queued into the root's buffer.
fn take_queued(root: &Root<NativeRoot>, shared: &Shared) {
    let queued: Vec<UsageRecord> = match shared.records.lock() {
        Ok(mut records) => records.drain(..).collect(),
        Err(poisoned) => poisoned.into_inner().drain(..).collect(),
    };
    let Some(worker) = root.worker() else {
        return;
    };
    let host = root.host();
    for record in queued {
        let pushed = match worker.usage.try_borrow_mut() {
            Ok(mut usage) => usage.push(record),
            Err(_) => Pushed::Dropped,
        };
        if pushed == Pushed::Dropped {
            worker.metrics.inc(host, Counter::UsageRecordsDropped);
            worker.metrics.buffered(host, -1);
        }
    }
}

/// Runs `f` on the configuration's root, then any callout answers that
/// arrived for a root while it was busy; then tells the streams how many
/// records the root holds and whether the feed is current.
fn with_root(handle: &ConfigHandle, f: impl FnOnce(&mut Root<NativeRoot>)) {
    ROOTS.with(|roots| {
        let Ok(mut roots) = roots.try_borrow_mut() else {
            return;
        };
        if let Some(root) = roots.get_mut(&handle.id) {
            f(root);
        }
        while let Some((id, token, answer)) = ROOT_PENDING.with(|p| p.borrow_mut().pop_front()) {
            if let Some(root) = roots.get_mut(&id) {
                root_answer(root, token, answer);
            }
        }
        if let Some(worker) = roots.get(&handle.id).and_then(Root::worker) {
            if let Ok(usage) = worker.usage.try_borrow() {
                handle
                    .shared
                    .root_held
                    .store(usage.len(), Ordering::Relaxed);
            }
            let current = worker.feed_current.get();
            handle.shared.feed_current.store(current, Ordering::Relaxed);
        }
    });
}

fn root_answer(root: &mut Root<NativeRoot>, id: u64, answer: Answer) {
    let Ok(token) = u32::try_from(id) else {
        return;
    };
    let size = answer.body.len();
    *root.host().answer.borrow_mut() = Some(answer);
    root.on_callout_reply(token, size);
    *root.host().answer.borrow_mut() = None;
}
