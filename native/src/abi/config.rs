//! The safe wrappers of one filter configuration in Envoy (defining
//! metrics; moving them and callouts are in `context.rs`) and of its
//! scheduler, which posts events to the main thread.

use std::ffi::c_void;

use super::api::{EnvoyConfig, EnvoyScheduler};
use super::buffers::module_buffer;
use super::raw::*;

/// An HTTP filter configuration in Envoy (`http_filter_config_envoy_ptr`).
/// Valid from `on_http_filter_config_new` until its destroy hook; the
/// module uses it only on the main thread.
#[derive(Debug, Clone, Copy)]
pub struct ConfigPtr(pub(super) *mut c_void);

impl ConfigPtr {
    /// The configuration Envoy passed to `on_http_filter_config_new`.
    pub fn new(filter_config_envoy_ptr: *mut c_void) -> Self {
        ConfigPtr(filter_config_envoy_ptr)
    }
}

impl EnvoyConfig for ConfigPtr {
    /// Defines a counter (`gauge` false) or a gauge; its id.
    fn define_metric(&self, gauge: bool, name: &str) -> Option<usize> {
        let mut id = 0usize;
        // SAFETY: live configuration; `name` outlives the call; no labels;
        // `id` is a valid place for the result.
        let result = unsafe {
            if gauge {
                envoy_dynamic_module_callback_http_filter_config_define_gauge(
                    self.0,
                    module_buffer(name.as_bytes()),
                    std::ptr::null_mut(),
                    0,
                    &mut id,
                )
            } else {
                envoy_dynamic_module_callback_http_filter_config_define_counter(
                    self.0,
                    module_buffer(name.as_bytes()),
                    std::ptr::null_mut(),
                    0,
                    &mut id,
                )
            }
        };
        (result == METRICS_SUCCESS).then_some(id)
    }

    /// A scheduler that posts events to this configuration on the main thread.
    fn scheduler(&self) -> Option<Box<dyn EnvoyScheduler>> {
        // SAFETY: live configuration.
        let ptr = unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(self.0) };
        (!ptr.is_null()).then(|| Box::new(Scheduler(ptr)) as Box<dyn EnvoyScheduler>)
    }
}

/// A configuration scheduler (`http_filter_config_scheduler_module_ptr`):
/// owned by the module, deleted once, when dropped.
#[derive(Debug)]
pub struct Scheduler(*mut c_void);

// SAFETY: the header documents the scheduler as the way to post events to
// the main thread "from any thread including the ones managed by the
// module"; `commit` is the only call made off the main thread, and the
// owner joins that thread before the drop deletes the scheduler.
unsafe impl Send for Scheduler {}
// SAFETY: as for `Send`: `commit` may be called concurrently from any thread.
unsafe impl Sync for Scheduler {}

impl EnvoyScheduler for Scheduler {
    /// Posts `event` to the configuration's `on_http_filter_config_scheduled`.
    fn commit(&self, event: u64) {
        // SAFETY: the scheduler is alive until drop; commit is thread-safe.
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.0, event) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: created by scheduler_new, deleted exactly once here.
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.0) }
    }
}
