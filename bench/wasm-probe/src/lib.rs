//! Probe filters that split the gateway's per-request cost into parts.
//!
//! The plugin's `root_id` picks the behaviour:
//! - `noop`: every callback returns `Continue`. `bare` -> `wasm_noop` is
//!   what any Rust proxy-wasm filter costs on Envoy's V8 runtime (context
//!   creation and one VM entry per callback) before it does any work.
//! - `mimic`: the host calls tollgate's filter makes for a request whose
//!   key is cached, in the same callbacks, without its logic (no token
//!   check, no hashing, no usage records): read the clock, take 16 random
//!   bytes from a pool drawn 256 ids at a time (as `filter/src/request_id.rs`
//!   does), read all request headers, replace `x-request-id`, remove the
//!   two credential headers, read one shared-data slot, hold the headers
//!   until the body is complete, read the body, add `x-tollgate-key-id`;
//!   read the response headers once (the filter takes `:status` and the
//!   units header from one read); on log read the clock and bump a
//!   gauge. The hit and allowed counters are summed by the filter and
//!   handed to Envoy on its tick, so the mimic moves no counter per
//!   request. The filter's list of calls is pinned by its test
//!   `a_cached_request_makes_these_host_calls_and_no_more`
//!   (`filter/src/flow/tests.rs`); keep the two in step. `wasm_noop` -> `wasm_mimic`
//!   is the cost of those host calls; `wasm_mimic` -> `gate_cached` is
//!   tollgate's own work (token, hashing, usage buffering and flushing).
//!
//! Host errors are ignored: this measures cost, it guards nothing.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| Box::new(ProbeRoot { mimic: None }));
}}

/// The metric the mimic bumps per request (as tollgate bumps its buffered gauge).
struct Metrics {
    buffered: u32,
}

/// Request-id bytes per draw from the host's randomness (the filter's pool).
const POOL_BYTES: usize = 16 * 256;

thread_local! {
    static POOL: std::cell::RefCell<(Vec<u8>, usize)> =
        const { std::cell::RefCell::new((Vec::new(), 0)) };
}

/// 16 bytes of the pool, drawing a new one when it is spent.
fn pooled_id() -> [u8; 16] {
    POOL.with(|pool| {
        let (bytes, next) = &mut *pool.borrow_mut();
        if *next + 16 > bytes.len() {
            bytes.resize(POOL_BYTES, 0);
            let _ = getrandom::getrandom(bytes);
            *next = 0;
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[*next..*next + 16]);
        *next += 16;
        id
    })
}

struct ProbeRoot {
    mimic: Option<Rc<Metrics>>,
}

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let root_id = hostcalls::get_property(vec!["plugin_root_id"])
            .ok()
            .flatten()
            .unwrap_or_default();
        if root_id == b"mimic" {
            let define = |kind, name| hostcalls::define_metric(kind, name).unwrap_or(0);
            self.mimic = Some(Rc::new(Metrics {
                buffered: define(MetricType::Gauge, "probe_buffered"),
            }));
        }
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        match &self.mimic {
            Some(metrics) => Some(Box::new(Mimic {
                metrics: metrics.clone(),
            })),
            None => Some(Box::new(Noop)),
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {}

struct Mimic {
    metrics: Rc<Metrics>,
}

impl Context for Mimic {}

impl HttpContext for Mimic {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let _ = hostcalls::get_current_time();
        let id = pooled_id();
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let _headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders);
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-request-id", Some(&id));
        let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "authorization");
        let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "x-auth-token");
        let _ = hostcalls::get_shared_data("tollgate.kc.1");
        if end_of_stream {
            self.allow();
            return Action::Continue;
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let _ = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size);
        self.allow();
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _ = hostcalls::get_map_bytes(MapType::HttpResponseHeaders);
        Action::Continue
    }

    fn on_log(&mut self) {
        let _ = hostcalls::get_current_time();
        let _ = hostcalls::increment_metric(self.metrics.buffered, 1);
    }
}

impl Mimic {
    fn allow(&self) {
        // Key id 0 is no key's (ids start at 1): the usage check, which reads
        // the key ids the upstream served, never takes these requests for a
        // metered key's.
        let _ =
            hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-tollgate-key-id", Some("0"));
    }
}
