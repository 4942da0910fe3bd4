//! The root side: one [`Root`] per filter configuration, on Envoy's main
//! thread. Roots live in this thread's registry, keyed by the handle Envoy
//! holds, since the handle itself is shared with worker threads.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tollgate_filter::host::{Host as _, LogLevel};
use tollgate_filter::root::Root;

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
        worker: worker.shared.clone(),
        metrics: root.host().metrics.borrow().as_slice().into(),
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
        if !root.on_done() {
            root.host().log(
                LogLevel::Warn,
                "configuration removed with a usage batch in flight",
            );
        }
    }
}

/// A scheduled event on the main thread: the root's timer.
pub fn config_scheduled(handle: &ConfigHandle, event: u64) {
    if event != TICK_EVENT {
        return;
    }
    with_root(handle, Root::on_timer);
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

/// Runs `f` on the configuration's root, then any callout answers that
/// arrived for a root while it was busy.
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
