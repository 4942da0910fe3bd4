//! The proxy-wasm host: the only module that calls `proxy_wasm`. It
//! implements the host interface on Envoy's Wasm ABI and forwards every
//! callback to the root or the stream's flow; it decides nothing.
//!
//! It calls `proxy_wasm::hostcalls` directly rather than the trait helpers,
//! which `unwrap` host errors: here a host error is returned to the flow,
//! which fails closed. Header values are read as bytes, because the SDK's
//! string getters panic on non-UTF-8.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{self, BufferType, ContextType, MapType, MetricType, Status};

use crate::flow::Flow;
use crate::host::{
    Action, Callout, Host, HostError, LogLevel, MetricKind, RootHost, SetError, StreamHost,
    Versioned,
};
use crate::root::Root;

/// Installs the root context; called from the module's `_initialize`.
pub fn register() {
    proxy_wasm::set_log_level(types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(WasmRoot(Root::new(Wasm))));
}

/// Envoy's Wasm ABI, as the filter's host. The ABI acts on the context
/// being called back, so one value serves every context.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wasm;

fn host_error(status: Status) -> HostError {
    HostError(format!("{status:?}"))
}

impl Host for Wasm {
    fn now_ms(&self) -> Option<u64> {
        let now = hostcalls::get_current_time().ok()?;
        let since = now.duration_since(UNIX_EPOCH).ok()?;
        u64::try_from(since.as_millis()).ok()
    }

    fn monotonic_ms(&self) -> Option<u64> {
        // SAFETY: the binding passes the host a pointer to its own
        // uninitialised result, which it reads only when the host answers
        // success; nothing of ours is lent. Envoy answers the monotonic
        // clock with its dispatcher's (one steady clock per process).
        let ns = unsafe { wasi::clock_time_get(wasi::CLOCKID_MONOTONIC, 1_000_000) }.ok()?;
        Some(ns / 1_000_000)
    }

    fn log(&self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Info => types::LogLevel::Info,
            LogLevel::Warn => types::LogLevel::Warn,
            LogLevel::Error => types::LogLevel::Error,
        };
        let _ = hostcalls::log(level, message);
    }

    fn random(&self, buf: &mut [u8]) -> bool {
        // WASI `random_get`, which Envoy answers from its own randomness.
        getrandom::getrandom(buf).is_ok()
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
        };
        hostcalls::define_metric(kind, name).map_err(host_error)
    }

    fn increment_metric(&self, id: u32, by: i64) -> Result<(), HostError> {
        hostcalls::increment_metric(id, by).map_err(host_error)
    }

    fn shared_get(&self, key: &str) -> Result<Versioned, HostError> {
        hostcalls::get_shared_data(key).map_err(host_error)
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        hostcalls::set_shared_data(key, Some(value), cas).map_err(|status| match status {
            Status::CasMismatch => SetError::CasMismatch,
            other => SetError::Failed(host_error(other)),
        })
    }

    fn dispatch(&self, call: &Callout<'_>) -> Result<u32, HostError> {
        hostcalls::dispatch_http_call(
            call.cluster,
            call.headers.to_vec(),
            Some(call.body),
            vec![],
            Duration::from_millis(call.timeout_ms),
        )
        .map_err(host_error)
    }

    fn callout_status(&self) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
    }

    fn callout_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
            .ok()
            .flatten()
    }
}

impl StreamHost for Wasm {
    fn request_headers(&self) -> Result<Vec<(String, Vec<u8>)>, HostError> {
        hostcalls::get_map_bytes(MapType::HttpRequestHeaders).map_err(host_error)
    }

    fn set_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value)).map_err(host_error)
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        hostcalls::remove_map_value(MapType::HttpRequestHeaders, name).map_err(host_error)
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, start, len)
            .ok()
            .flatten()
    }

    fn replace_request_body(&self, size: usize, body: &[u8]) -> Result<(), HostError> {
        hostcalls::set_buffer(BufferType::HttpRequestBody, 0, size, body).map_err(host_error)
    }

    fn response_chunk(&self, size: usize) -> Option<Vec<u8>> {
        // The host answers an empty read with no buffer at all; the empty
        // chunk that ends a stream is still a chunk, and the flow must see
        // it to pass on what it held back.
        if size == 0 {
            return Some(Vec::new());
        }
        hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size)
            .ok()
            .flatten()
    }

    fn replace_response_chunk(&self, size: usize, bytes: &[u8]) -> Result<(), HostError> {
        hostcalls::set_buffer(BufferType::HttpResponseBody, 0, size, bytes).map_err(host_error)
    }

    fn response_headers(&self, names: &[&str]) -> Vec<Option<Vec<u8>>> {
        // One name: one lookup. More: the whole map in one host call (each
        // call crosses the VM boundary and allocates in the VM).
        if let [name] = names {
            let value = hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name);
            return vec![value.ok().flatten()];
        }
        let headers = hostcalls::get_map_bytes(MapType::HttpResponseHeaders).unwrap_or_default();
        crate::headers::first_values(&headers, names)
    }

    fn set_response_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value))
            .map_err(host_error)
    }

    fn response_code_details(&self) -> Option<String> {
        let bytes = hostcalls::get_property(vec!["response", "code_details"]).ok()??;
        String::from_utf8(bytes).ok()
    }

    fn send_reply(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        hostcalls::send_http_response(u32::from(status), headers.to_vec(), Some(body))
            .map_err(host_error)
    }

    fn reset(&self) {
        let _ = hostcalls::reset_http_request();
    }

    fn resume(&self) -> Result<(), HostError> {
        hostcalls::resume_http_request().map_err(host_error)
    }
}

impl RootHost for Wasm {
    fn plugin_config(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
    }

    fn set_tick_period_ms(&self, period_ms: u64) -> Result<(), HostError> {
        hostcalls::set_tick_period(Duration::from_millis(period_ms)).map_err(host_error)
    }

    fn done(&self) {
        let _ = hostcalls::done();
    }
}

fn action(action: Action) -> types::Action {
    match action {
        Action::Continue => types::Action::Continue,
        Action::Pause => types::Action::Pause,
    }
}

/// The root context of one worker VM.
struct WasmRoot(Root<Wasm>);

impl Context for WasmRoot {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        self.0.on_callout_reply(token, body_size);
    }

    fn on_done(&mut self) -> bool {
        self.0.on_done()
    }
}

impl RootContext for WasmRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        self.0.on_configure(size)
    }

    fn on_tick(&mut self) {
        self.0.on_timer();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(WasmStream(self.0.stream(Wasm))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP stream.
struct WasmStream(Flow<Wasm>);

impl Context for WasmStream {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        self.0.on_callout_reply(token, body_size);
    }
}

impl HttpContext for WasmStream {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> types::Action {
        action(self.0.on_request_headers(end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> types::Action {
        action(self.0.on_request_body(body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _: usize) -> types::Action {
        action(self.0.on_request_trailers())
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> types::Action {
        action(self.0.on_response_headers())
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> types::Action {
        action(self.0.on_response_body(body_size, end_of_stream))
    }

    fn on_log(&mut self) {
        self.0.on_log();
    }
}
