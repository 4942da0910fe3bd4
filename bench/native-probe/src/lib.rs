//! A dynamic module that does nothing: every hook Envoy requires of an HTTP
//! filter module (ABI v0.2.0, see native/src/abi/raw.rs), each continuing at
//! once. It dereferences no pointer and calls no callback.

use std::ffi::c_void;
use std::os::raw::c_char;

/// A non-null pointer for the configuration and every filter (never read).
static STATE: u8 = 0;
/// `Continue` of every status enum of the ABI.
const CONTINUE: u32 = 0;

fn state() -> *const c_void {
    std::ptr::addr_of!(STATE).cast()
}

/// `envoy_dynamic_module_type_envoy_buffer`.
#[repr(C)]
pub struct EnvoyBuffer {
    ptr: *const c_char,
    length: usize,
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    c"v0.2.0".as_ptr()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _: *mut c_void,
    _: EnvoyBuffer,
    _: EnvoyBuffer,
) -> *const c_void {
    state()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    _: *const c_void,
    _: *mut c_void,
) -> *const c_void {
    state()
}

macro_rules! status_hooks {
    ($($name:ident ( $($arg:ty),* );)*) => {
        $(
            #[no_mangle]
            pub extern "C" fn $name(_: *mut c_void, _: *const c_void $(, _: $arg)*) -> u32 {
                CONTINUE
            }
        )*
    };
}

status_hooks! {
    envoy_dynamic_module_on_http_filter_request_headers(bool);
    envoy_dynamic_module_on_http_filter_request_body(bool);
    envoy_dynamic_module_on_http_filter_request_trailers();
    envoy_dynamic_module_on_http_filter_response_headers(bool);
    envoy_dynamic_module_on_http_filter_response_body(bool);
    envoy_dynamic_module_on_http_filter_response_trailers();
}

macro_rules! void_hooks {
    ($($name:ident ( $($arg:ty),* );)*) => {
        $(
            #[no_mangle]
            pub extern "C" fn $name($(_: $arg),*) {}
        )*
    };
}

void_hooks! {
    envoy_dynamic_module_on_http_filter_config_destroy(*const c_void);
    envoy_dynamic_module_on_http_filter_destroy(*const c_void);
    envoy_dynamic_module_on_http_filter_stream_complete(*mut c_void, *const c_void);
    envoy_dynamic_module_on_http_filter_http_callout_done(*mut c_void, *const c_void, u64, u32, *mut c_void, usize, *mut c_void, usize);
    envoy_dynamic_module_on_http_filter_http_stream_headers(*mut c_void, *const c_void, u64, *mut c_void, usize, bool);
    envoy_dynamic_module_on_http_filter_http_stream_data(*mut c_void, *const c_void, u64, *const c_void, usize, bool);
    envoy_dynamic_module_on_http_filter_http_stream_trailers(*mut c_void, *const c_void, u64, *mut c_void, usize);
    envoy_dynamic_module_on_http_filter_http_stream_complete(*mut c_void, *const c_void, u64);
    envoy_dynamic_module_on_http_filter_http_stream_reset(*mut c_void, *const c_void, u64, u32);
    envoy_dynamic_module_on_http_filter_scheduled(*mut c_void, *const c_void, u64);
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(*mut c_void, *const c_void);
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(*mut c_void, *const c_void);
}
