//! The bindings: the one module that touches Envoy's dynamic-module C ABI.
//! It declares only the callbacks the module calls and exports the hooks
//! Envoy looks up, and wraps both in safe types; every `unsafe` block of
//! the crate is here.
//!
//! Written from the ABI header `source/extensions/dynamic_modules/abi/abi.h`
//! at ABI version `v0.2.0` (repository agrawroh/envoy, commit
//! 05f72c01c038709243e7b58d9faccc6e7d1b7754), the version Envoy 1.40 accepts;
//! each declaration below was checked against it. Envoy's own Rust SDK
//! (`source/extensions/dynamic_modules/sdk/rust` in Envoy's repository)
//! showed how the hooks are meant to be used; nothing is taken from it.
//!
//! A callback declared here and missing from the Envoy binary makes the
//! module fail to load ("undefined symbol"), so `tests/symbols.rs` checks
//! every name in [`DECLARED_CALLBACKS`] against the binary's exports.
//!
//! C enums cross the boundary as `u32` (their values are all small and
//! non-negative, so GCC and Clang give them the ABI of `unsigned int`); a
//! value from Envoy is never turned into a Rust `enum`, so an unknown one
//! cannot be undefined behaviour.

use std::ffi::c_void;
use std::os::raw::c_char;

use tollgate_filter::host::Action;

use crate::module::{self, ConfigHandle, StreamEvent};

// ----------------------------------------------------------------- types

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    ptr: *const c_char,
    length: usize,
}

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by the module.
#[repr(C)]
#[derive(Clone, Copy)]
struct ModuleBuffer {
    ptr: *const c_char,
    length: usize,
}

/// `envoy_dynamic_module_type_module_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
struct ModuleHttpHeader {
    key_ptr: *const c_char,
    key_length: usize,
    value_ptr: *const c_char,
    value_length: usize,
}

/// `envoy_dynamic_module_type_envoy_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHttpHeader {
    key_ptr: *const c_char,
    key_length: usize,
    value_ptr: *const c_char,
    value_length: usize,
}

/// Any C enum of the ABI.
type Enum = u32;

// envoy_dynamic_module_type_http_header_type
const HEADER_REQUEST: Enum = 0;
const HEADER_RESPONSE: Enum = 2;
// envoy_dynamic_module_type_http_body_type
const BODY_RECEIVED_REQUEST: Enum = 0;
const BODY_BUFFERED_REQUEST: Enum = 1;
const BODY_RECEIVED_RESPONSE: Enum = 2;
// envoy_dynamic_module_type_log_level
const LOG_INFO: Enum = 2;
const LOG_WARN: Enum = 3;
const LOG_ERROR: Enum = 4;
// envoy_dynamic_module_type_http_callout_init_result
const CALLOUT_INIT_SUCCESS: Enum = 0;
// envoy_dynamic_module_type_http_callout_result
const CALLOUT_SUCCESS: Enum = 0;
// envoy_dynamic_module_type_metrics_result
const METRICS_SUCCESS: Enum = 0;
// envoy_dynamic_module_type_attribute_id: ResponseCodeDetails
const ATTRIBUTE_RESPONSE_CODE_DETAILS: Enum = 16;
// envoy_dynamic_module_type_http_filter_stream_reset_reason
const RESET_LOCAL: Enum = 0;
// The `Continue` of every on_http_filter_*_status enum.
const STATUS_CONTINUE: Enum = 0;
// on_http_filter_request_headers_status_StopIteration
const HEADERS_STOP_ITERATION: Enum = 1;
// on_http_filter_request_body_status_StopIterationAndBuffer
const BODY_STOP_AND_BUFFER: Enum = 1;
// on_http_filter_request_trailers_status_StopIteration
const TRAILERS_STOP_ITERATION: Enum = 1;

/// The ABI version the module was built against, NUL-terminated.
static ABI_VERSION: &[u8] = b"v0.2.0\0";

// ------------------------------------------------------------- callbacks

/// Every hook the module exports (the 20 that Envoy requires of an HTTP
/// filter module, the two optional config-level ones it uses, and
/// `on_program_init`).
pub const EXPORTED_HOOKS: &[&str] = &[
    "envoy_dynamic_module_on_program_init",
    "envoy_dynamic_module_on_http_filter_config_new",
    "envoy_dynamic_module_on_http_filter_config_destroy",
    "envoy_dynamic_module_on_http_filter_new",
    "envoy_dynamic_module_on_http_filter_destroy",
    "envoy_dynamic_module_on_http_filter_stream_complete",
    "envoy_dynamic_module_on_http_filter_request_headers",
    "envoy_dynamic_module_on_http_filter_request_body",
    "envoy_dynamic_module_on_http_filter_request_trailers",
    "envoy_dynamic_module_on_http_filter_response_headers",
    "envoy_dynamic_module_on_http_filter_response_body",
    "envoy_dynamic_module_on_http_filter_response_trailers",
    "envoy_dynamic_module_on_http_filter_http_callout_done",
    "envoy_dynamic_module_on_http_filter_http_stream_headers",
    "envoy_dynamic_module_on_http_filter_http_stream_data",
    "envoy_dynamic_module_on_http_filter_http_stream_trailers",
    "envoy_dynamic_module_on_http_filter_http_stream_complete",
    "envoy_dynamic_module_on_http_filter_http_stream_reset",
    "envoy_dynamic_module_on_http_filter_scheduled",
    "envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark",
    "envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark",
    "envoy_dynamic_module_on_http_filter_config_scheduled",
    "envoy_dynamic_module_on_http_filter_config_http_callout_done",
];

// Signatures as in abi.h v0.2.0; `void*` typedefs of the header are
// `*mut c_void` (Envoy-owned) or `*const c_void` (module-owned).
//
// `callbacks!` makes the `extern "C"` block and [`DECLARED_CALLBACKS`],
// the list `tests/test_native_abi.py` checks against the Envoy binary's
// exports. Unit tests run without Envoy, so there each callback is a
// function that panics (none is called).
macro_rules! callbacks {
    ($( fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? ; )*) => {
        #[cfg(not(test))]
        extern "C" {
            $( fn $name($($arg: $ty),*) $(-> $ret)?; )*
        }
        $(
            #[cfg(test)]
            #[allow(unused_variables, clippy::too_many_arguments)]
            unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                panic!(concat!(stringify!($name), ": no Envoy in unit tests"))
            }
        )*
        /// Every callback the module declares (and so needs Envoy to export).
        pub const DECLARED_CALLBACKS: &[&str] = &[$(stringify!($name)),*];
    };
}

callbacks! {
    fn envoy_dynamic_module_callback_log(level: Enum, message: ModuleBuffer);

    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        filter_config_envoy_ptr: *mut c_void,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        counter_id_ptr: *mut usize,
    ) -> Enum;
    fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        filter_config_envoy_ptr: *mut c_void,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        gauge_id_ptr: *mut usize,
    ) -> Enum;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter_envoy_ptr: *mut c_void,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> Enum;
    fn envoy_dynamic_module_callback_http_filter_increment_gauge(
        filter_envoy_ptr: *mut c_void,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> Enum;
    fn envoy_dynamic_module_callback_http_filter_decrement_gauge(
        filter_envoy_ptr: *mut c_void,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> Enum;
    fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        filter_config_envoy_ptr: *mut c_void,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> Enum;
    fn envoy_dynamic_module_callback_http_filter_config_increment_gauge(
        filter_config_envoy_ptr: *mut c_void,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> Enum;
    fn envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
        filter_config_envoy_ptr: *mut c_void,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> Enum;

    fn envoy_dynamic_module_callback_http_get_header(
        filter_envoy_ptr: *mut c_void,
        header_type: Enum,
        key: ModuleBuffer,
        result_buffer: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_headers_size(
        filter_envoy_ptr: *mut c_void,
        header_type: Enum,
    ) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        filter_envoy_ptr: *mut c_void,
        header_type: Enum,
        result_headers: *mut EnvoyHttpHeader,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        filter_envoy_ptr: *mut c_void,
        header_type: Enum,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_send_response(
        filter_envoy_ptr: *mut c_void,
        status_code: u32,
        headers_vector: *mut ModuleHttpHeader,
        headers_vector_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );

    fn envoy_dynamic_module_callback_http_get_body_size(
        filter_envoy_ptr: *mut c_void,
        body_type: Enum,
    ) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter_envoy_ptr: *mut c_void,
        body_type: Enum,
    ) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter_envoy_ptr: *mut c_void,
        body_type: Enum,
        result_buffer_vector: *mut EnvoyBuffer,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        filter_config_envoy_ptr: *mut c_void,
    ) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
        scheduler_module_ptr: *mut c_void,
    );
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler_module_ptr: *mut c_void,
        event_id: u64,
    );

    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter_envoy_ptr: *mut c_void,
        attribute_id: Enum,
        result: *mut EnvoyBuffer,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter_envoy_ptr: *mut c_void,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> Enum;
    fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        filter_config_envoy_ptr: *mut c_void,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> Enum;

    fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter_envoy_ptr: *mut c_void);
    fn envoy_dynamic_module_callback_http_filter_reset_stream(
        filter_envoy_ptr: *mut c_void,
        reason: Enum,
        details: ModuleBuffer,
    );
}

// ------------------------------------------------------- safe wrappers

fn module_buffer(bytes: &[u8]) -> ModuleBuffer {
    ModuleBuffer {
        ptr: bytes.as_ptr().cast(),
        length: bytes.len(),
    }
}

const NO_BUFFER: ModuleBuffer = ModuleBuffer {
    ptr: std::ptr::null(),
    length: 0,
};

/// Copies an Envoy buffer (null or empty reads as empty).
fn copy_envoy(ptr: *const c_char, length: usize) -> Vec<u8> {
    if ptr.is_null() || length == 0 {
        return Vec::new();
    }
    // SAFETY: Envoy hands out (ptr, length) pairs that point at `length`
    // readable bytes it owns until the end of the current hook; this copies
    // them during the hook and keeps no reference.
    unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), length) }.to_vec()
}

fn module_headers(headers: &[(&str, &str)]) -> Vec<ModuleHttpHeader> {
    headers
        .iter()
        .map(|(k, v)| ModuleHttpHeader {
            key_ptr: k.as_ptr().cast(),
            key_length: k.len(),
            value_ptr: v.as_ptr().cast(),
            value_length: v.len(),
        })
        .collect()
}

/// Writes a log line under Envoy's `dynamic_modules` logger.
pub fn log(level: tollgate_filter::host::LogLevel, message: &str) {
    let level = match level {
        tollgate_filter::host::LogLevel::Info => LOG_INFO,
        tollgate_filter::host::LogLevel::Warn => LOG_WARN,
        tollgate_filter::host::LogLevel::Error => LOG_ERROR,
    };
    // SAFETY: the buffer points at `message`, alive for the call; Envoy
    // only reads it during the call.
    unsafe { envoy_dynamic_module_callback_log(level, module_buffer(message.as_bytes())) }
}

/// Whether a metric callback succeeded.
fn metric_ok(result: Enum) -> bool {
    result == METRICS_SUCCESS
}

/// An HTTP stream's filter in Envoy (`http_filter_envoy_ptr`). Valid from
/// `on_http_filter_new` until `on_http_filter_destroy`, on the stream's
/// worker thread; the module keeps it only inside the stream's own state.
#[derive(Debug, Clone, Copy)]
pub struct StreamPtr(*mut c_void);

impl StreamPtr {
    /// Every request header, in order, values as bytes.
    pub fn request_headers(self) -> Option<Vec<(String, Vec<u8>)>> {
        // SAFETY: `self.0` is the live filter of the current hook.
        let count =
            unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.0, HEADER_REQUEST) };
        let mut raw = vec![
            EnvoyHttpHeader {
                key_ptr: std::ptr::null(),
                key_length: 0,
                value_ptr: std::ptr::null(),
                value_length: 0,
            };
            count
        ];
        // SAFETY: `raw` has room for the `count` headers Envoy just reported
        // for this map, as the header requires.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_headers(self.0, HEADER_REQUEST, raw.as_mut_ptr())
        };
        if !ok {
            return None;
        }
        Some(
            raw.iter()
                .map(|h| {
                    let name = copy_envoy(h.key_ptr, h.key_length);
                    (
                        String::from_utf8_lossy(&name).into_owned(),
                        copy_envoy(h.value_ptr, h.value_length),
                    )
                })
                .collect(),
        )
    }

    /// The first value of a response header.
    pub fn response_header(self, name: &str) -> Option<Vec<u8>> {
        let mut out = EnvoyBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        // SAFETY: live filter; `name` outlives the call; `out` is a valid
        // place for the result; the count pointer may be null.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_header(
                self.0,
                HEADER_RESPONSE,
                module_buffer(name.as_bytes()),
                &mut out,
                0,
                std::ptr::null_mut(),
            )
        };
        (ok && !out.ptr.is_null()).then(|| copy_envoy(out.ptr, out.length))
    }

    /// Sets (`Some`) or removes (`None`) a request header.
    pub fn set_request_header(self, name: &str, value: Option<&str>) -> bool {
        let value = value.map_or(NO_BUFFER, |v| module_buffer(v.as_bytes()));
        // SAFETY: live filter; both buffers outlive the call (a null value
        // removes the header, as the header documents).
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.0,
                HEADER_REQUEST,
                module_buffer(name.as_bytes()),
                value,
            )
        }
    }

    /// Sets a response header (while the response headers pass).
    pub fn set_response_header(self, name: &str, value: &str) -> bool {
        // SAFETY: live filter; both buffers outlive the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.0,
                HEADER_RESPONSE,
                module_buffer(name.as_bytes()),
                module_buffer(value.as_bytes()),
            )
        }
    }

    /// Bytes of the request body Envoy holds: what it buffered before this
    /// hook, then what this hook received.
    pub fn request_body_size(self) -> usize {
        // SAFETY: live filter.
        unsafe {
            envoy_dynamic_module_callback_http_get_body_size(self.0, BODY_BUFFERED_REQUEST)
                .saturating_add(envoy_dynamic_module_callback_http_get_body_size(
                    self.0,
                    BODY_RECEIVED_REQUEST,
                ))
        }
    }

    /// Bytes of the response body frame of the current hook.
    pub fn received_response_body_size(self) -> usize {
        // SAFETY: live filter.
        unsafe { envoy_dynamic_module_callback_http_get_body_size(self.0, BODY_RECEIVED_RESPONSE) }
    }

    /// `len` bytes of the request body from `start` (over the buffered and
    /// the received parts, in that order).
    pub fn request_body(self, start: usize, len: usize) -> Option<Vec<u8>> {
        let end = start.checked_add(len)?;
        let mut out = Vec::with_capacity(len);
        let mut offset = 0usize;
        for body_type in [BODY_BUFFERED_REQUEST, BODY_RECEIVED_REQUEST] {
            for chunk in self.body_chunks(body_type)? {
                let chunk_end = offset.saturating_add(chunk.length);
                if chunk_end > start && offset < end && !chunk.ptr.is_null() {
                    let from = start.saturating_sub(offset);
                    let to = end.min(chunk_end) - offset;
                    // SAFETY: the chunk is `chunk.length` readable bytes
                    // owned by Envoy for the current hook, and
                    // `from <= to <= chunk.length`.
                    let part = unsafe {
                        std::slice::from_raw_parts(chunk.ptr.cast::<u8>().add(from), to - from)
                    };
                    out.extend_from_slice(part);
                }
                offset = chunk_end;
            }
        }
        (out.len() == len).then_some(out)
    }

    fn body_chunks(self, body_type: Enum) -> Option<Vec<EnvoyBuffer>> {
        // SAFETY: live filter.
        let count =
            unsafe { envoy_dynamic_module_callback_http_get_body_chunks_size(self.0, body_type) };
        if count == 0 {
            return Some(Vec::new());
        }
        let mut chunks = vec![
            EnvoyBuffer {
                ptr: std::ptr::null(),
                length: 0,
            };
            count
        ];
        // SAFETY: `chunks` has room for the `count` buffers just reported.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_body_chunks(
                self.0,
                body_type,
                chunks.as_mut_ptr(),
            )
        };
        ok.then_some(chunks)
    }

    /// Envoy's `response.code_details`.
    pub fn response_code_details(self) -> Option<String> {
        let mut out = EnvoyBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        // SAFETY: live filter; `out` is a valid place for the result.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.0,
                ATTRIBUTE_RESPONSE_CODE_DETAILS,
                &mut out,
            )
        };
        if !ok {
            return None;
        }
        String::from_utf8(copy_envoy(out.ptr, out.length)).ok()
    }

    /// Answers the request with a local reply.
    pub fn send_response(self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let mut raw = module_headers(headers);
        // SAFETY: live filter; the header array, its strings and the body
        // outlive the call, which copies them.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.0,
                u32::from(status),
                raw.as_mut_ptr(),
                raw.len(),
                module_buffer(body),
                module_buffer(b"tollgate"),
            )
        }
    }

    /// Resets the stream.
    pub fn reset(self) {
        // SAFETY: live filter; an empty details buffer is allowed.
        unsafe {
            envoy_dynamic_module_callback_http_filter_reset_stream(self.0, RESET_LOCAL, NO_BUFFER)
        }
    }

    /// Lets a held request go on.
    pub fn continue_decoding(self) {
        // SAFETY: live filter.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.0) }
    }

    /// Sends an HTTP callout; its id, or `None` when Envoy refused it.
    pub fn callout(
        self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u64> {
        let mut raw = module_headers(headers);
        let mut id = 0u64;
        // SAFETY: live filter; every buffer outlives the call, which copies
        // them; `id` is a valid place for the callout id.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_http_callout(
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

    /// Adds to a counter of the stream's configuration.
    pub fn increment_counter(self, id: usize, by: u64) -> bool {
        // SAFETY: live filter; no labels (null, 0), as the metric was defined.
        metric_ok(unsafe {
            envoy_dynamic_module_callback_http_filter_increment_counter(
                self.0,
                id,
                std::ptr::null_mut(),
                0,
                by,
            )
        })
    }

    /// Moves a gauge of the stream's configuration.
    pub fn move_gauge(self, id: usize, by: i64) -> bool {
        let amount = by.unsigned_abs();
        // SAFETY: live filter; no labels (null, 0), as the metric was defined.
        metric_ok(unsafe {
            if by >= 0 {
                envoy_dynamic_module_callback_http_filter_increment_gauge(
                    self.0,
                    id,
                    std::ptr::null_mut(),
                    0,
                    amount,
                )
            } else {
                envoy_dynamic_module_callback_http_filter_decrement_gauge(
                    self.0,
                    id,
                    std::ptr::null_mut(),
                    0,
                    amount,
                )
            }
        })
    }
}

/// An HTTP filter configuration in Envoy (`http_filter_config_envoy_ptr`).
/// Valid from `on_http_filter_config_new` until its destroy hook; the
/// module uses it only on the main thread.
#[derive(Debug, Clone, Copy)]
pub struct ConfigPtr(*mut c_void);

impl ConfigPtr {
    /// Defines a counter (`gauge` false) or a gauge; its id.
    pub fn define_metric(self, gauge: bool, name: &str) -> Option<usize> {
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
        metric_ok(result).then_some(id)
    }

    /// Adds to a counter outside any stream.
    pub fn increment_counter(self, id: usize, by: u64) -> bool {
        // SAFETY: live configuration that defined `id`; no labels.
        metric_ok(unsafe {
            envoy_dynamic_module_callback_http_filter_config_increment_counter(
                self.0,
                id,
                std::ptr::null_mut(),
                0,
                by,
            )
        })
    }

    /// Moves a gauge outside any stream.
    pub fn move_gauge(self, id: usize, by: i64) -> bool {
        let amount = by.unsigned_abs();
        // SAFETY: live configuration that defined `id`; no labels.
        metric_ok(unsafe {
            if by >= 0 {
                envoy_dynamic_module_callback_http_filter_config_increment_gauge(
                    self.0,
                    id,
                    std::ptr::null_mut(),
                    0,
                    amount,
                )
            } else {
                envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
                    self.0,
                    id,
                    std::ptr::null_mut(),
                    0,
                    amount,
                )
            }
        })
    }

    /// Sends an HTTP callout tied to the configuration; its id.
    pub fn callout(
        self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u64> {
        let mut raw = module_headers(headers);
        let mut id = 0u64;
        // SAFETY: live configuration; every buffer outlives the call, which
        // copies them; `id` is a valid place for the callout id.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_config_http_callout(
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

    /// A scheduler that posts events to this configuration on the main thread.
    pub fn scheduler(self) -> Option<Scheduler> {
        // SAFETY: live configuration.
        let ptr = unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(self.0) };
        (!ptr.is_null()).then_some(Scheduler(ptr))
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

impl Scheduler {
    /// Posts `event` to the configuration's `on_http_filter_config_scheduled`.
    pub fn commit(&self, event: u64) {
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

/// The answer of a callout, copied out of Envoy's buffers.
fn callout_answer(
    result: Enum,
    headers: *const EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) -> module::Answer {
    let mut answer = module::Answer::default();
    if result != CALLOUT_SUCCESS {
        return answer;
    }
    if !headers.is_null() {
        // SAFETY: Envoy passes `headers_size` headers valid until the end of
        // this hook; they are copied now.
        let headers = unsafe { std::slice::from_raw_parts(headers, headers_size) };
        answer.status = headers
            .iter()
            .find(|h| copy_envoy(h.key_ptr, h.key_length) == b":status")
            .map(|h| copy_envoy(h.value_ptr, h.value_length));
    }
    if !body_chunks.is_null() {
        // SAFETY: as for the headers: `body_chunks_size` buffers valid for
        // the hook, copied now.
        let chunks = unsafe { std::slice::from_raw_parts(body_chunks, body_chunks_size) };
        for chunk in chunks {
            answer.body.extend(copy_envoy(chunk.ptr, chunk.length));
        }
    }
    answer
}

// ----------------------------------------------------------------- hooks

/// The module's state of one stream, as Envoy holds it.
fn stream_state<'a>(filter_module_ptr: *const c_void) -> Option<&'a module::StreamFilter> {
    // SAFETY: the pointer is the `Box<StreamFilter>` that
    // `on_http_filter_new` leaked, handed back by Envoy on the stream's
    // thread until `on_http_filter_destroy` frees it; only shared
    // references are made (the state guards itself with `RefCell`s, since
    // hooks may nest), and none outlives the hook.
    unsafe { filter_module_ptr.cast::<module::StreamFilter>().as_ref() }
}

/// The module's state of one configuration.
fn config_state<'a>(filter_config_ptr: *const c_void) -> Option<&'a ConfigHandle> {
    // SAFETY: the pointer is the `Box<ConfigHandle>` that
    // `on_http_filter_config_new` leaked; Envoy hands it back until the
    // destroy hook frees it, after every filter made from it is gone.
    // `ConfigHandle` is `Sync`, so worker threads may share it.
    unsafe { filter_config_ptr.cast::<ConfigHandle>().as_ref() }
}

/// Called by Envoy once, when it loads the module: the ABI version.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    ABI_VERSION.as_ptr().cast()
}

/// Called by Envoy on the main thread for each filter configuration.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    filter_config_envoy_ptr: *mut c_void,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    let bytes = copy_envoy(config.ptr, config.length);
    match module::config_new(ConfigPtr(filter_config_envoy_ptr), bytes) {
        Some(handle) => Box::into_raw(Box::new(handle)).cast_const().cast(),
        None => std::ptr::null(),
    }
}

/// Called by Envoy on the main thread when a configuration goes.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    filter_config_ptr: *const c_void,
) {
    if filter_config_ptr.is_null() {
        return;
    }
    // SAFETY: the pointer came from `Box::into_raw` in config_new and Envoy
    // destroys each configuration once, after its filters.
    let handle = unsafe { Box::from_raw(filter_config_ptr.cast::<ConfigHandle>().cast_mut()) };
    module::config_destroy(*handle);
}

/// Called by Envoy on the main thread for an event posted by the scheduler.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _filter_config_envoy_ptr: *mut c_void,
    filter_config_ptr: *const c_void,
    event_id: u64,
) {
    if let Some(handle) = config_state(filter_config_ptr) {
        module::config_scheduled(handle, event_id);
    }
}

/// Called by Envoy on the main thread when a configuration's callout answers.
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
    let answer = callout_answer(result, headers, headers_size, body_chunks, body_chunks_size);
    if let Some(handle) = config_state(filter_config_ptr) {
        module::config_callout_done(handle, callout_id, answer);
    }
}

/// Called by Envoy on a worker thread for each new stream.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    filter_config_ptr: *const c_void,
    filter_envoy_ptr: *mut c_void,
) -> *const c_void {
    let Some(handle) = config_state(filter_config_ptr) else {
        return std::ptr::null();
    };
    match module::filter_new(handle, StreamPtr(filter_envoy_ptr)) {
        Some(state) => Box::into_raw(Box::new(state)).cast_const().cast(),
        None => std::ptr::null(),
    }
}

/// Called by Envoy when a stream's filter goes (never inside another hook).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter_module_ptr: *const c_void) {
    if filter_module_ptr.is_null() {
        return;
    }
    // SAFETY: the pointer came from `Box::into_raw` in filter_new; Envoy
    // destroys each filter once, and never while one of its hooks runs.
    let state =
        unsafe { Box::from_raw(filter_module_ptr.cast::<module::StreamFilter>().cast_mut()) };
    module::filter_destroy(*state);
}

fn stream_event(filter_module_ptr: *const c_void, event: StreamEvent) -> Action {
    match stream_state(filter_module_ptr) {
        Some(state) => module::stream_event(state, event),
        None => Action::Pause,
    }
}

fn request_status(verdict: Action, pause: Enum) -> Enum {
    match verdict {
        Action::Continue => STATUS_CONTINUE,
        Action::Pause => pause,
    }
}

/// Request headers.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    _filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    end_of_stream: bool,
) -> Enum {
    let verdict = stream_event(
        filter_module_ptr,
        StreamEvent::RequestHeaders { end_of_stream },
    );
    request_status(verdict, HEADERS_STOP_ITERATION)
}

/// A request body frame.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    end_of_stream: bool,
) -> Enum {
    let verdict = stream_event(
        filter_module_ptr,
        StreamEvent::RequestBody { end_of_stream },
    );
    request_status(verdict, BODY_STOP_AND_BUFFER)
}

/// Request trailers.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
) -> Enum {
    let verdict = stream_event(filter_module_ptr, StreamEvent::RequestTrailers);
    request_status(verdict, TRAILERS_STOP_ITERATION)
}

/// Response headers (metering only: always continues).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    _end_of_stream: bool,
) -> Enum {
    stream_event(filter_module_ptr, StreamEvent::ResponseHeaders);
    STATUS_CONTINUE
}

/// A response body frame (metering only: always continues).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    _end_of_stream: bool,
) -> Enum {
    let size = StreamPtr(filter_envoy_ptr).received_response_body_size();
    stream_event(filter_module_ptr, StreamEvent::ResponseBody { size });
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
    stream_event(filter_module_ptr, StreamEvent::Complete);
}

/// A stream's callout answered.
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
    let answer = callout_answer(result, headers, headers_size, body_chunks, body_chunks_size);
    stream_event(
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
