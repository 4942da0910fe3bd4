//! The stream side: one [`Flow`] per HTTP stream, on its worker thread.
//! Hooks of one stream may nest (a local reply runs the response hooks
//! inside the request hook that sent it), so a hook that finds the flow
//! busy queues its event, and the outer hook runs it when it is done.
//! Resuming a held request nests too (Envoy's own reply to it, such as a
//! 404 for want of a route, runs its response hooks inside
//! `continue_decoding`), and those hooks must read that response while it
//! is there: so the request is resumed once the flow is free again.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use tollgate_filter::error::Denial;
use tollgate_filter::flow::Flow;
use tollgate_filter::host::Action;
use tollgate_filter::worker::Worker;

use super::workers::thread_worker;
use super::{ConfigHandle, Shared};
use crate::abi::{Answer, EnvoyStream};
use crate::host::NativeStream;

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
        /// The last frame.
        end_of_stream: bool,
    },
    /// A callout of the stream answered.
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
    /// What the hook answers when the flow cannot run the event now: a
    /// request-side hook holds the request (fail closed), any other goes on.
    fn held(&self) -> Action {
        match self {
            StreamEvent::RequestHeaders { .. }
            | StreamEvent::RequestBody { .. }
            | StreamEvent::RequestTrailers => Action::Pause,
            _ => Action::Continue,
        }
    }
}

/// The module's state of one stream.
pub struct StreamFilter {
    host: NativeStream,
    /// Keeps the configuration's state alive while the stream lives (a
    /// removed configuration's thread workers go once it is gone).
    _config: Arc<Shared>,
    pub(super) worker: Rc<Worker>,
    flow: RefCell<Flow<NativeStream>>,
    deferred: RefCell<VecDeque<StreamEvent>>,
    faulted: Cell<bool>,
}

/// A new stream (worker thread); `None` makes Envoy close it.
pub fn filter_new(handle: &ConfigHandle, envoy: Rc<dyn EnvoyStream>) -> Option<StreamFilter> {
    let host = NativeStream {
        envoy,
        metrics: handle.shared.metrics.clone(),
        answer: Rc::new(RefCell::new(None)),
        resume_due: Rc::new(Cell::new(false)),
    };
    let worker = thread_worker(handle, &host)?;
    let flow = Flow::new(host.clone(), Some(worker.clone()), worker.metrics.clone());
    Some(StreamFilter {
        host,
        _config: handle.shared.clone(),
        worker,
        flow: RefCell::new(flow),
        deferred: RefCell::new(VecDeque::new()),
        faulted: Cell::new(false),
    })
}

/// One hook of a stream. Returns what Envoy should do with the stream.
pub fn stream_event(state: &StreamFilter, event: StreamEvent) -> Action {
    if state.faulted.get() {
        return event.held();
    }
    let Ok(mut flow) = state.flow.try_borrow_mut() else {
        // A nested hook: the outer one runs it when it is done. A request
        // hook never nests; if one did, it holds the request (fail closed).
        let action = event.held();
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
    drop(flow);
    if state.host.resume_due.take() {
        state.host.envoy.continue_decoding();
    }
    action
}

/// A response body frame: its size is read now, in its own hook.
pub fn response_body(state: &StreamFilter, end_of_stream: bool) -> Action {
    let size = state.host.envoy.received_response_body_size();
    stream_event(
        state,
        StreamEvent::ResponseBody {
            size,
            end_of_stream,
        },
    )
}

/// A stream hook panicked: the stream's hooks do nothing from now on, and
/// a request not yet decided is answered 503 `auth_unavailable`; one
/// already decided is left as it was (resumed, if it was let go on).
pub fn stream_fault(state: &StreamFilter) {
    state.faulted.set(true);
    let (undecided, request_id, llm_api) = match state.flow.try_borrow() {
        Ok(flow) => {
            let exchange = flow.exchange();
            let id = exchange.request_id.clone();
            (flow.stage().undecided(), id, exchange.llm_api)
        }
        Err(_) => (true, String::new(), None),
    };
    if undecided {
        let denial = Denial::AuthUnavailable;
        state.host.envoy.send_response(
            denial.status(),
            &denial.reply_headers(),
            &denial.reply_body_on(llm_api, &request_id),
        );
    } else if state.host.resume_due.take() {
        state.host.envoy.continue_decoding();
    }
}

fn apply(state: &StreamFilter, flow: &mut Flow<NativeStream>, event: StreamEvent) -> Action {
    match event {
        StreamEvent::RequestHeaders { end_of_stream } => flow.on_request_headers(end_of_stream),
        StreamEvent::RequestBody { end_of_stream } => {
            flow.on_request_body(state.host.envoy.request_body_size(), end_of_stream)
        }
        StreamEvent::RequestTrailers => flow.on_request_trailers(),
        StreamEvent::ResponseHeaders => flow.on_response_headers(),
        StreamEvent::ResponseBody {
            size,
            end_of_stream,
        } => flow.on_response_body(size, end_of_stream),
        StreamEvent::Callout { id, answer } => {
            if let Ok(token) = u32::try_from(id) {
                let size = answer.body.len();
                *state.host.answer.borrow_mut() = Some(answer);
                flow.on_callout_reply(token, size);
                *state.host.answer.borrow_mut() = None;
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

/// After a stream's usage record is buffered (in the configuration's
/// buffer, which the root flushes): the thread's summed hot counters go to
/// Envoy.
fn complete(state: &StreamFilter) {
    state.worker.metrics.publish(&state.host);
}
