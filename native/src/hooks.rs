//! The hooks Envoy looks up in the module (`envoy_dynamic_module_on_*`).
//! Each one only unboxes (turns Envoy's pointers into the module's state
//! and the safe wrappers), guards (a panic stops in [`guard`], never
//! unwinding into Envoy) and forwards to `module`. The boxes Envoy holds
//! for the module are made and freed here, the only `unsafe` of the crate
//! outside `abi`.
//!
//! Signatures are those of the ABI version in `abi::raw`;
//! `tests/test_native_abi.py` checks that Envoy looks up each of them.

use std::ffi::c_void;
use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use tollgate_filter::host::{Action, LogLevel};

use crate::abi::raw::{
    self, Enum, EnvoyBuffer, EnvoyHttpHeader, BODY_STOP_AND_BUFFER, HEADERS_STOP_ITERATION,
    STATUS_CONTINUE, TRAILERS_STOP_ITERATION,
};
use crate::abi::{self, Answer, ConfigPtr, EnvoyConfig, EnvoyStream, StreamPtr};
use crate::module::{self, ConfigHandle, StreamEvent, StreamFilter};

#[cfg(test)]
mod tests;

/// The one guard of every hook: runs `work`. If it panics, the panic stops
/// here, is logged, `fail` runs (itself guarded: it fails the request
/// closed), and the hook answers `closed`.
fn guard<T>(what: &str, work: impl FnOnce() -> T, fail: impl FnOnce(), closed: T) -> T {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(value) => value,
        Err(_) => {
            // Neither the log line nor the failure may unwind into Envoy.
            let _ = catch_unwind(|| {
                abi::log(
                    LogLevel::Error,
                    &format!("tollgate: fault caught in {what}"),
                )
            });
            let _ = catch_unwind(AssertUnwindSafe(fail));
            closed
        }
    }
}

/// A hook's status for Envoy: go on, or the hook's way of holding.
fn status(action: Action, hold: Enum) -> Enum {
    match action {
        Action::Continue => STATUS_CONTINUE,
        Action::Pause => hold,
    }
}

/// Envoy's handle on a new state: the box, leaked until its destroy hook.
fn into_handle<T>(state: Option<T>) -> *const c_void {
    match state {
        Some(state) => Box::into_raw(Box::new(state)).cast_const().cast(),
        None => std::ptr::null(),
    }
}

/// The module's state of one stream, as Envoy holds it.
fn stream_state<'a>(filter_module_ptr: *const c_void) -> Option<&'a StreamFilter> {
    // SAFETY: the pointer is null or the `Box<StreamFilter>` that
    // `on_http_filter_new` leaked, handed back by Envoy on the stream's
    // thread until `on_http_filter_destroy` frees it; only shared
    // references are made (the state guards itself with `RefCell`s, since
    // hooks may nest), and none outlives the hook.
    unsafe { filter_module_ptr.cast::<StreamFilter>().as_ref() }
}

/// The module's state of one configuration.
fn config_state<'a>(filter_config_ptr: *const c_void) -> Option<&'a ConfigHandle> {
    // SAFETY: the pointer is null or the `Box<ConfigHandle>` that
    // `on_http_filter_config_new` leaked; Envoy hands it back until the
    // destroy hook frees it, after every filter made from it is gone.
    // `ConfigHandle` is `Sync`, so worker threads may share it.
    unsafe { filter_config_ptr.cast::<ConfigHandle>().as_ref() }
}

/// Takes back the box of a state Envoy let go of (null: none).
///
/// # Safety
/// `ptr` is null or came from [`into_handle`] for a `T`, and Envoy hands it
/// back this once, when no hook of it runs.
unsafe fn take_back<T>(ptr: *const c_void) -> Option<Box<T>> {
    // SAFETY: the caller's promise.
    (!ptr.is_null()).then(|| unsafe { Box::from_raw(ptr.cast::<T>().cast_mut()) })
}

// ------------------------------------------------------ configuration

fn config_new(envoy: Box<dyn EnvoyConfig>, plugin: Vec<u8>) -> *const c_void {
    into_handle(guard(
        "config_new",
        || module::config_new(envoy, plugin),
        || (),
        None,
    ))
}

fn config_destroy(filter_config_ptr: *const c_void) {
    // SAFETY: the handle from config_new; Envoy destroys each configuration
    // once, after its filters.
    if let Some(handle) = unsafe { take_back::<ConfigHandle>(filter_config_ptr) } {
        guard(
            "config_destroy",
            || module::config_destroy(*handle),
            || (),
            (),
        );
    }
}

fn config_scheduled(filter_config_ptr: *const c_void, event_id: u64) {
    if let Some(handle) = config_state(filter_config_ptr) {
        guard(
            "tick",
            || module::config_scheduled(handle, event_id),
            || (),
            (),
        );
    }
}

fn config_callout_done(filter_config_ptr: *const c_void, callout_id: u64, answer: Answer) {
    if let Some(handle) = config_state(filter_config_ptr) {
        let forward = || module::config_callout_done(handle, callout_id, answer);
        guard("a configuration's callout answer", forward, || (), ());
    }
}

/// Called by Envoy once, when it loads the module: the ABI version.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    raw::ABI_VERSION.as_ptr()
}

/// Called by Envoy on the main thread for each filter configuration.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    filter_config_envoy_ptr: *mut c_void,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    // SAFETY: the configuration Envoy passed to this hook.
    let plugin = unsafe { abi::buffers::copy_buffer(config) };
    config_new(Box::new(ConfigPtr::new(filter_config_envoy_ptr)), plugin)
}

/// Called by Envoy on the main thread when a configuration goes.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    filter_config_ptr: *const c_void,
) {
    config_destroy(filter_config_ptr);
}

/// Called by Envoy on the main thread for an event posted by the scheduler.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _filter_config_envoy_ptr: *mut c_void,
    filter_config_ptr: *const c_void,
    event_id: u64,
) {
    config_scheduled(filter_config_ptr, event_id);
}

/// Called by Envoy on the main thread when a configuration's callout answers.
// Envoy is the only caller, with the answer of this hook (see `Answer::copy`).
#[allow(clippy::not_unsafe_ptr_arg_deref)]
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _filter_config_envoy_ptr: *mut c_void,
    filter_config_ptr: *const c_void,
    callout_id: u64,
    result: Enum,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *mut EnvoyBuffer,
    body_chunks_size: usize,
) {
    // SAFETY: the answer Envoy passed to this hook.
    let answer =
        unsafe { Answer::copy(result, headers, headers_size, body_chunks, body_chunks_size) };
    config_callout_done(filter_config_ptr, callout_id, answer);
}

// ------------------------------------------------------------ streams

fn filter_new(filter_config_ptr: *const c_void, envoy: Rc<dyn EnvoyStream>) -> *const c_void {
    let Some(handle) = config_state(filter_config_ptr) else {
        return std::ptr::null();
    };
    into_handle(guard(
        "filter_new",
        || module::filter_new(handle, envoy),
        || (),
        None,
    ))
}

fn filter_destroy(filter_module_ptr: *const c_void) {
    // SAFETY: the state from filter_new; Envoy destroys each filter once,
    // and never while one of its hooks runs.
    if let Some(state) = unsafe { take_back::<StreamFilter>(filter_module_ptr) } {
        guard("filter_destroy", move || drop(state), || (), ());
    }
}

/// Forwards one hook of a stream; `closed` is what it answers when there
/// is no state or the hook panicked (which fails the request closed).
fn on_stream(
    filter_module_ptr: *const c_void,
    closed: Action,
    forward: impl FnOnce(&StreamFilter) -> Action,
) -> Action {
    match stream_state(filter_module_ptr) {
        Some(state) => guard(
            "a stream hook",
            || forward(state),
            || module::stream_fault(state),
            closed,
        ),
        None => closed,
    }
}

fn event(filter_module_ptr: *const c_void, event: StreamEvent) -> Action {
    let closed = match event {
        StreamEvent::RequestHeaders { .. }
        | StreamEvent::RequestBody { .. }
        | StreamEvent::RequestTrailers => Action::Pause,
        _ => Action::Continue,
    };
    on_stream(filter_module_ptr, closed, |state| {
        module::stream_event(state, event)
    })
}

/// Called by Envoy on a worker thread for each new stream.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    filter_config_ptr: *const c_void,
    filter_envoy_ptr: *mut c_void,
) -> *const c_void {
    filter_new(filter_config_ptr, Rc::new(StreamPtr::new(filter_envoy_ptr)))
}

/// Called by Envoy when a stream's filter goes (never inside another hook).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter_module_ptr: *const c_void) {
    filter_destroy(filter_module_ptr);
}

/// Request headers.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    _filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    end_of_stream: bool,
) -> Enum {
    let action = event(
        filter_module_ptr,
        StreamEvent::RequestHeaders { end_of_stream },
    );
    status(action, HEADERS_STOP_ITERATION)
}

/// A request body frame.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    end_of_stream: bool,
) -> Enum {
    let action = event(
        filter_module_ptr,
        StreamEvent::RequestBody { end_of_stream },
    );
    status(action, BODY_STOP_AND_BUFFER)
}

/// Request trailers.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
) -> Enum {
    let action = event(filter_module_ptr, StreamEvent::RequestTrailers);
    status(action, TRAILERS_STOP_ITERATION)
}

/// Response headers (metering only: always continues).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    _end_of_stream: bool,
) -> Enum {
    event(filter_module_ptr, StreamEvent::ResponseHeaders);
    STATUS_CONTINUE
}

/// A response body frame (metered, and on an LLM stream read and perhaps
/// rewritten in place: always continues).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    end_of_stream: bool,
) -> Enum {
    on_stream(filter_module_ptr, Action::Continue, |state| {
        module::response_body(state, end_of_stream)
    });
    STATUS_CONTINUE
}

/// Response trailers: nothing to do.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter_envoy_ptr: *mut c_void,
    _filter_module_ptr: *const c_void,
) -> Enum {
    STATUS_CONTINUE
}

/// The stream is complete (may run inside another hook of the stream).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
) {
    event(filter_module_ptr, StreamEvent::Complete);
}

/// A stream's callout answered.
// Envoy is the only caller, with the answer of this hook (see `Answer::copy`).
#[allow(clippy::not_unsafe_ptr_arg_deref)]
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    callout_id: u64,
    result: Enum,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *mut EnvoyBuffer,
    body_chunks_size: usize,
) {
    // SAFETY: the answer Envoy passed to this hook.
    let answer =
        unsafe { Answer::copy(result, headers, headers_size, body_chunks, body_chunks_size) };
    event(
        filter_module_ptr,
        StreamEvent::Callout {
            id: callout_id,
            answer,
        },
    );
}

// Hooks Envoy requires but tollgate never triggers: it starts no streamed
// callout, schedules no stream event and is not a terminal filter.

/// Unused (no streamed callouts).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter_envoy_ptr: *mut c_void,
    _filter_module_ptr: *const c_void,
    _stream_id: u64,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

/// Unused (no streamed callouts).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter_envoy_ptr: *mut c_void,
    _filter_module_ptr: *const c_void,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

/// Unused (no streamed callouts).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter_envoy_ptr: *mut c_void,
    _filter_module_ptr: *const c_void,
    _stream_id: u64,
    _trailers: *mut EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

/// Unused (no streamed callouts).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter_envoy_ptr: *mut c_void,
    _filter_module_ptr: *const c_void,
    _stream_id: u64,
) {
}

/// Unused (no streamed callouts).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter_envoy_ptr: *mut c_void,
    _filter_module_ptr: *const c_void,
    _stream_id: u64,
    _reason: Enum,
) {
}

/// Unused (no stream scheduler).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter_envoy_ptr: *mut c_void,
    _filter_module_ptr: *const c_void,
    _event_id: u64,
) {
}

/// Unused (not a terminal filter).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy_ptr: *mut c_void,
    _filter_module_ptr: *const c_void,
) {
}

/// Unused (not a terminal filter).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy_ptr: *mut c_void,
    _filter_module_ptr: *const c_void,
) {
}
