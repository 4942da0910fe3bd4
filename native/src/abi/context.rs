//! What a stream and a configuration both do in Envoy (callouts, moving a
//! metric): the same code on each one's own callbacks.

use super::api::EnvoyContext;
use super::buffers::{module_buffer, module_headers};
use super::config::ConfigPtr;
use super::raw::*;
use super::stream::StreamPtr;

/// Whether a metric callback succeeded.
pub(super) fn metric_ok(result: Enum) -> bool {
    result == METRICS_SUCCESS
}

/// `impl EnvoyContext` for a wrapper of a live Envoy object (`.0`), on its
/// callout, counter and gauge callbacks.
macro_rules! context {
    ($ty:ty, $callout:ident, $counter:ident, $gauge_up:ident, $gauge_down:ident) => {
        impl EnvoyContext for $ty {
            fn callout(
                &self,
                cluster: &str,
                headers: &[(&str, &str)],
                body: &[u8],
                timeout_ms: u64,
            ) -> Option<u64> {
                let mut raw = module_headers(headers);
                let mut id = 0u64;
                // SAFETY: the object is live for the hook; every buffer
                // outlives the call, which copies them; `id` is a valid
                // place for the callout id.
                let result = unsafe {
                    $callout(
                        self.0,
                        &mut id,
                        module_buffer(cluster.as_bytes()),
                        raw.as_mut_ptr(),
                        raw.len(),
                        module_buffer(body),
                        timeout_ms,
                    )
                };
                (result == CALLOUT_INIT_SUCCESS).then_some(id)
            }

            fn increment_counter(&self, id: usize, by: u64) -> bool {
                // SAFETY: live object; no labels (null, 0), as the metric
                // was defined.
                metric_ok(unsafe { $counter(self.0, id, std::ptr::null_mut(), 0, by) })
            }

            fn move_gauge(&self, id: usize, by: i64) -> bool {
                let amount = by.unsigned_abs();
                // SAFETY: live object; no labels (null, 0), as the metric
                // was defined.
                metric_ok(unsafe {
                    if by >= 0 {
                        $gauge_up(self.0, id, std::ptr::null_mut(), 0, amount)
                    } else {
                        $gauge_down(self.0, id, std::ptr::null_mut(), 0, amount)
                    }
                })
            }
        }
    };
}

context!(
    StreamPtr,
    envoy_dynamic_module_callback_http_filter_http_callout,
    envoy_dynamic_module_callback_http_filter_increment_counter,
    envoy_dynamic_module_callback_http_filter_increment_gauge,
    envoy_dynamic_module_callback_http_filter_decrement_gauge
);
context!(
    ConfigPtr,
    envoy_dynamic_module_callback_http_filter_config_http_callout,
    envoy_dynamic_module_callback_http_filter_config_increment_counter,
    envoy_dynamic_module_callback_http_filter_config_increment_gauge,
    envoy_dynamic_module_callback_http_filter_config_decrement_gauge
);
