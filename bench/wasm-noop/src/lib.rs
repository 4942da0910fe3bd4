//! A proxy-wasm filter that lets every request through untouched.
//!
//! The benchmark runs it in the stack's Envoy config in place of tollgate
//! (scenario `wasm_noop`): the difference between `bare` and `wasm_noop` is
//! what any Rust proxy-wasm filter costs on Envoy's V8 runtime, before it
//! does any work; the difference between `wasm_noop` and `gate_cached` is
//! tollgate's own work.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| Box::new(NoopRoot));
}}

struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopHttp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct NoopHttp;

impl Context for NoopHttp {}

impl HttpContext for NoopHttp {}
