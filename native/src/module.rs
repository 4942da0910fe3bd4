//! What each hook of the module does, in safe Rust: one [`Root`] per
//! filter configuration on Envoy's main thread (configuration, the usage
//! flush through configuration-level callouts, the tick from Envoy's
//! scheduler), and one [`Flow`] per stream on its worker thread. The flow
//! and the root make every decision, as in the wasm build.
//!
//! Streams on a worker thread share a per-thread [`Worker`] made from the
//! root's configuration; their usage records go to the root's buffer
//! through the configuration's queue when each stream completes, and are
//! flushed by the root on its tick.
//!
//! Every hook is guarded: a panic is caught before it can cross into
//! Envoy, logged, and a request not yet decided is answered 503
//! `auth_unavailable` (never let through). Hooks of one stream may nest
//! (a local reply runs the response hooks inside the request hook that
//! sent it), so a hook that finds the flow busy queues its event, and the
//! outer hook runs it when it is done.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tollgate_filter::config::Config;
use tollgate_filter::error::Denial;
use tollgate_filter::flow::{Flow, Stage};
use tollgate_filter::host::{Action, Host as _, LogLevel};
use tollgate_filter::metrics::{Counter, Metrics};
use tollgate_filter::request_id::RequestIds;
use tollgate_filter::root::Root;
use tollgate_filter::shared_table::SlotKey;
use tollgate_filter::usage::{Pushed, UsageBuffer};
use tollgate_filter::worker::Worker;
use tollgate_wire::UsageRecord;

use crate::abi::{self, ConfigPtr, StreamPtr};
use crate::host::{MetricDef, NativeRoot, NativeStream};

/// The scheduler event of the root's timer.
pub const TICK_EVENT: u64 = 1;

/// The `:status` and body of a callout's answer (`status` is `None` when
/// the call failed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The answer's `:status`.
    pub status: Option<Vec<u8>>,
    /// The answer's body.
    pub body: Vec<u8>,
}

/// What a configuration shares with every worker thread.
#[derive(Debug)]
pub struct Shared {
    /// The validated plugin configuration.
    pub config: Config,
    /// The process's key-cache slot key.
    pub cache_key: SlotKey,
    /// The metrics the root defined (index = the filter's id).
    pub metrics: Vec<MetricDef>,
    /// Usage records of completed streams, waiting for the root's tick.
    records: Mutex<VecDeque<UsageRecord>>,
    /// Records in the root's buffer as of its last step: with the queue,
    /// what the configuration holds, bounded by `usage.buffer_cap`.
    root_held: AtomicUsize,
    /// Whether the key change feed was current at the root's last tick
    /// (each stream copies it into its thread's worker).
    feed_current: AtomicBool,
}

/// The module's state of one filter configuration.
pub struct ConfigHandle {
    id: u64,
    shared: Arc<Shared>,
}

/// A worker thread's worker of one configuration, and that configuration.
type ThreadWorker = (Weak<Shared>, Rc<Worker>);

static NEXT_CONFIG: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The roots of the configurations (main thread only).
    static ROOTS: RefCell<HashMap<u64, Root<NativeRoot>>> = RefCell::new(HashMap::new());
    /// Callout answers that arrived while their root was busy.
    static ROOT_PENDING: RefCell<VecDeque<(u64, u64, Answer)>> = const { RefCell::new(VecDeque::new()) };
    /// The per-thread worker of each configuration (worker threads), with
    /// the configuration's state, to forget workers of removed ones.
    static WORKERS: RefCell<HashMap<u64, ThreadWorker>> = RefCell::new(HashMap::new());
}

/// Runs `f`, catching a panic: then logs it and returns `fault`.
pub fn guard<T>(what: &str, f: impl FnOnce() -> T, fault: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(_) => {
            // The log call itself must not unwind into Envoy.
            let _ = catch_unwind(|| {
                abi::log(
                    LogLevel::Error,
                    &format!("tollgate: fault caught in {what}"),
                )
            });
            fault()
        }
    }
}

// ------------------------------------------------------ configuration

/// A new filter configuration (main thread): the root parses and validates
/// it; `None` rejects it, so Envoy does not serve without the filter.
pub fn config_new(ptr: ConfigPtr, plugin: Vec<u8>) -> Option<ConfigHandle> {
    guard("config_new", || configure(ptr, plugin), || None)
}

fn configure(ptr: ConfigPtr, plugin: Vec<u8>) -> Option<ConfigHandle> {
    let size = plugin.len();
    let mut root = Root::new(NativeRoot::new(ptr, plugin));
    if !root.on_configure(size) {
        return None;
    }
    let worker = root.worker()?;
    let shared = Arc::new(Shared {
        config: worker.config.clone(),
        cache_key: worker.cache_key,
        metrics: root.host().metrics.borrow().clone(),
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
    guard(
        "config_destroy",
        || {
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
        },
        || (),
    );
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
/// records the root holds.
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

/// A scheduled event on the main thread: the root's timer (the streams'
/// queued records go to the root first).
pub fn config_scheduled(handle: &ConfigHandle, event: u64) {
    if event != TICK_EVENT {
        return;
    }
    guard(
        "tick",
        || {
            with_root(handle, |root| {
                take_queued(root, &handle.shared);
                root.on_timer();
            })
        },
        || (),
    );
}

/// A configuration-level callout (a usage flush) answered.
pub fn config_callout_done(handle: &ConfigHandle, id: u64, answer: Answer) {
    guard(
        "usage flush answer",
        || {
            let busy = ROOTS.with(|roots| roots.try_borrow_mut().is_err());
            if busy {
                ROOT_PENDING.with(|p| p.borrow_mut().push_back((handle.id, id, answer)));
                return;
            }
            with_root(handle, |root| root_answer(root, id, answer));
        },
        || (),
    );
}

// ------------------------------------------------------------ streams

/// An event of one stream, as its hook reported it.
#[derive(Debug)]
pub enum StreamEvent {
    /// Request headers.
    RequestHeaders {
        /// No body follows.
        end_of_stream: bool,
    },
    /// A request body frame.
    RequestBody {
        /// The last frame.
        end_of_stream: bool,
    },
    /// Request trailers.
    RequestTrailers,
    /// Response headers.
    ResponseHeaders,
    /// A response body frame of `size` bytes.
    ResponseBody {
        /// Bytes in the frame.
        size: usize,
    },
    /// The stream's verification call answered.
    Callout {
        /// Envoy's callout id.
        id: u64,
        /// The answer.
        answer: Answer,
    },
    /// The stream is complete.
    Complete,
}

impl StreamEvent {
    /// Whether the request waits on the event's answer (a request-side hook).
    fn holds_request(&self) -> bool {
        matches!(
            self,
            StreamEvent::RequestHeaders { .. }
                | StreamEvent::RequestBody { .. }
                | StreamEvent::RequestTrailers
        )
    }
}

/// The module's state of one stream.
pub struct StreamFilter {
    ptr: StreamPtr,
    shared: Arc<Shared>,
    worker: Rc<Worker>,
    answer: Rc<RefCell<Option<Answer>>>,
    flow: RefCell<Flow<NativeStream>>,
    deferred: RefCell<VecDeque<StreamEvent>>,
    faulted: Cell<bool>,
}

/// The per-thread worker of a configuration, made on the thread's first stream.
fn thread_worker(handle: &ConfigHandle, host: &NativeStream) -> Option<Rc<Worker>> {
    WORKERS.with(|workers| {
        let mut workers = workers.try_borrow_mut().ok()?;
        if let Some((_, worker)) = workers.get(&handle.id) {
            return Some(worker.clone());
        }
        // A configuration Envoy removed (all its streams gone) leaves no worker behind.
        workers.retain(|_, (shared, _)| shared.strong_count() > 0);
        let config = handle.shared.config.clone();
        let worker = Rc::new(Worker {
            usage: Rc::new(RefCell::new(UsageBuffer::new(config.usage))),
            request_ids: Rc::new(RefCell::new(RequestIds::from_host(host)?)),
            metrics: Rc::new(Metrics::define(host)),
            cache_key: handle.shared.cache_key,
            feed_current: Cell::new(false),
            limited_keys: Default::default(),
            config,
        });
        workers.insert(handle.id, (Arc::downgrade(&handle.shared), worker.clone()));
        Some(worker)
    })
}

/// A new stream (worker thread); `None` makes Envoy close it.
pub fn filter_new(handle: &ConfigHandle, ptr: StreamPtr) -> Option<StreamFilter> {
    guard(
        "filter_new",
        || {
            let answer = Rc::new(RefCell::new(None));
            let host = || NativeStream {
                ptr,
                shared: handle.shared.clone(),
                answer: answer.clone(),
            };
            let worker = thread_worker(handle, &host())?;
            let current = handle.shared.feed_current.load(Ordering::Relaxed);
            worker.feed_current.set(current);
            let flow = Flow::new(host(), Some(worker.clone()), worker.metrics.clone());
            Some(StreamFilter {
                ptr,
                shared: handle.shared.clone(),
                worker,
                answer,
                flow: RefCell::new(flow),
                deferred: RefCell::new(VecDeque::new()),
                faulted: Cell::new(false),
            })
        },
        || None,
    )
}

/// The stream's filter goes.
pub fn filter_destroy(state: StreamFilter) {
    guard("filter_destroy", move || drop(state), || ());
}

/// One hook of a stream. Returns what the host should do with the stream.
pub fn stream_event(state: &StreamFilter, event: StreamEvent) -> Action {
    let holds = event.holds_request();
    let fault = || {
        state.faulted.set(true);
        fail_closed(state);
        if holds {
            Action::Pause
        } else {
            Action::Continue
        }
    };
    guard("a stream hook", || run_event(state, event), fault)
}

fn run_event(state: &StreamFilter, event: StreamEvent) -> Action {
    if state.faulted.get() {
        return if event.holds_request() {
            Action::Pause
        } else {
            Action::Continue
        };
    }
    let Ok(mut flow) = state.flow.try_borrow_mut() else {
        // A nested hook: the outer one runs it when it is done. A request
        // hook never nests; if one did, it holds the request (fail closed).
        let action = if event.holds_request() {
            Action::Pause
        } else {
            Action::Continue
        };
        state.deferred.borrow_mut().push_back(event);
        return action;
    };
    let action = apply(state, &mut flow, event);
    loop {
        let next = state.deferred.borrow_mut().pop_front();
        match next {
            Some(event) => {
                apply(state, &mut flow, event);
            }
            None => break,
        }
    }
    action
}

fn apply(state: &StreamFilter, flow: &mut Flow<NativeStream>, event: StreamEvent) -> Action {
    match event {
        StreamEvent::RequestHeaders { end_of_stream } => flow.on_request_headers(end_of_stream),
        StreamEvent::RequestBody { end_of_stream } => {
            flow.on_request_body(state.ptr.request_body_size(), end_of_stream)
        }
        StreamEvent::RequestTrailers => flow.on_request_trailers(),
        StreamEvent::ResponseHeaders => flow.on_response_headers(),
        StreamEvent::ResponseBody { size } => flow.on_response_body(size),
        StreamEvent::Callout { id, answer } => {
            if let Ok(token) = u32::try_from(id) {
                let size = answer.body.len();
                *state.answer.borrow_mut() = Some(answer);
                flow.on_callout_reply(token, size);
                *state.answer.borrow_mut() = None;
            }
            Action::Continue
        }
        StreamEvent::Complete => {
            flow.on_log();
            complete(state);
            Action::Continue
        }
    }
}

/// After a stream's usage record is buffered: hand the thread's records to
/// the root, and the thread's summed hot counters to Envoy.
fn complete(state: &StreamFilter) {
    let host = NativeStream {
        ptr: state.ptr,
        shared: state.shared.clone(),
        answer: state.answer.clone(),
    };
    let records = match state.worker.usage.try_borrow_mut() {
        Ok(mut usage) => usage.take_all(),
        Err(_) => Vec::new(),
    };
    if !records.is_empty() {
        let cap = state.shared.config.usage.buffer_cap;
        let held = state.shared.root_held.load(Ordering::Relaxed);
        let mut dropped = 0u64;
        match state.shared.records.lock() {
            Ok(mut queue) => {
                for record in records {
                    if queue.len().saturating_add(held) >= cap {
                        dropped += 1;
                    } else {
                        queue.push_back(record);
                    }
                }
            }
            Err(_) => dropped = records.len() as u64,
        }
        if dropped > 0 {
            state
                .worker
                .metrics
                .add(&host, Counter::UsageRecordsDropped, dropped);
            state
                .worker
                .metrics
                .buffered(&host, -i64::try_from(dropped).unwrap_or(i64::MAX));
        }
    }
    state.worker.metrics.publish(&host);
}

/// A fault in a stream hook: a request not yet decided is answered 503
/// `auth_unavailable`; one already decided is left as it was.
fn fail_closed(state: &StreamFilter) {
    let (undecided, request_id) = match state.flow.try_borrow() {
        Ok(flow) => (
            matches!(flow.stage(), Stage::Started | Stage::Checking(_)),
            flow.exchange().request_id.clone(),
        ),
        Err(_) => (true, String::new()),
    };
    if undecided {
        let denial = Denial::AuthUnavailable;
        let _ = catch_unwind(AssertUnwindSafe(|| {
            state.ptr.send_response(
                denial.status(),
                &denial.reply_headers(),
                &denial.reply_body(&request_id),
            );
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_caught_and_answered_with_the_fault_value() {
        let value = guard("test", || -> u32 { panic!("boom") }, || 503);
        assert_eq!(value, 503);
        assert_eq!(guard("test", || 200, || 503), 200);
    }
}
