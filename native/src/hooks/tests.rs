//! The hooks as Envoy calls them, on a fake Envoy: what each answers, the
//! boxes they hand out and take back, and the guard that turns a panic
//! into a closed failure.

use std::ffi::CStr;
use std::ptr::{null, null_mut};
use std::rc::Rc;

use super::*;
use crate::abi::buffers::test_log;
use crate::abi::raw::{ABI_VERSION, CALLOUT_SUCCESS};
use crate::fake::{self, FakeEnvoy, FakeStream};
use crate::host::TICK_EVENT;

const BODY: &[u8] = br#"{"text":"hi"}"#;

/// A configuration as Envoy holds it.
fn configure(envoy: &FakeEnvoy) -> *const c_void {
    let config = config_new(envoy.config(), fake::config(""));
    assert!(!config.is_null(), "{:?}", test_log::errors());
    config
}

/// A stream with a request of `key` as Envoy holds it.
fn open(envoy: &FakeEnvoy, config: *const c_void, key: &str) -> (Rc<FakeStream>, *const c_void) {
    let headers = fake::request(key, BODY);
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let stream = envoy.stream(&headers);
    let filter = filter_new(config, stream.handle());
    assert!(!filter.is_null());
    (stream, filter)
}

fn request_headers(filter: *const c_void, end_of_stream: bool) -> Enum {
    envoy_dynamic_module_on_http_filter_request_headers(null_mut(), filter, end_of_stream)
}

fn request_body(filter: *const c_void, end_of_stream: bool) -> Enum {
    envoy_dynamic_module_on_http_filter_request_body(null_mut(), filter, end_of_stream)
}

fn response_headers(filter: *const c_void) -> Enum {
    envoy_dynamic_module_on_http_filter_response_headers(null_mut(), filter, false)
}

/// Envoy's answer to a callout: `:status` and a body in two chunks.
fn callout_done(filter: *const c_void, id: u64, status: &'static str, body: &'static str) {
    let mut headers = [EnvoyHttpHeader {
        key_ptr: ":status".as_ptr().cast(),
        key_length: 7,
        value_ptr: status.as_ptr().cast(),
        value_length: status.len(),
    }];
    let (first, second) = body.split_at(body.len() / 2);
    let mut chunks = [first, second].map(|part| EnvoyBuffer {
        ptr: part.as_ptr().cast(),
        length: part.len(),
    });
    envoy_dynamic_module_on_http_filter_http_callout_done(
        null_mut(),
        filter,
        id,
        CALLOUT_SUCCESS,
        headers.as_mut_ptr(),
        1,
        chunks.as_mut_ptr(),
        2,
    );
}

const ACTIVE: &str = r#"{"verdict":"active","key_id":7}"#;

#[test]
fn program_init_reports_the_abi_version_the_bindings_declare() {
    // SAFETY: the hook returns a NUL-terminated static string.
    let version = unsafe { CStr::from_ptr(envoy_dynamic_module_on_program_init()) };
    assert_eq!(version, ABI_VERSION);
    assert_eq!(version.to_str().unwrap(), "v0.2.0");
}

#[test]
fn the_guard_returns_what_the_work_returns_when_nothing_panics() {
    let mut failed = false;
    assert_eq!(guard("test", || 200, || failed = true, 503), 200);
    assert!(!failed);
    assert!(test_log::errors().is_empty());
}

#[test]
fn the_guard_turns_a_panic_into_the_closed_answer_logged_and_failed() {
    let mut failed = false;
    let answer = guard(
        "a test hook",
        || -> u32 { panic!("boom") },
        || failed = true,
        503,
    );
    assert_eq!(answer, 503);
    assert!(failed, "the failure did not run");
    assert_eq!(
        test_log::errors(),
        ["tollgate: fault caught in a test hook"]
    );
}

#[test]
fn the_guard_survives_a_panic_in_the_failure_itself() {
    let answer = guard(
        "test",
        || -> u32 { panic!("boom") },
        || panic!("again"),
        503,
    );
    assert_eq!(answer, 503);
}

#[test]
fn a_whole_request_through_the_hooks_is_held_then_resumed() {
    let envoy = FakeEnvoy::new();
    let config = configure(&envoy);
    let (stream, filter) = open(&envoy, config, "native-test-hooks-request");
    assert_eq!(request_headers(filter, false), HEADERS_STOP_ITERATION);
    stream.receive_body(BODY);
    assert_eq!(request_body(filter, true), BODY_STOP_AND_BUFFER);
    callout_done(filter, stream.sent()[0].id, "200", ACTIVE);
    assert_eq!(stream.resumed(), 1);
    assert_eq!(
        stream.request_header("x-tollgate-key-id").as_deref(),
        Some("7")
    );
    assert_eq!(response_headers(filter), STATUS_CONTINUE);
    filter_destroy(filter);
    config_destroy(config);
}

#[test]
fn request_hooks_answer_continue_once_the_request_passed() {
    let envoy = FakeEnvoy::new();
    let config = configure(&envoy);
    let (stream, filter) = open(&envoy, config, "native-test-hooks-continue");
    request_headers(filter, false);
    callout_done(filter, stream.sent()[0].id, "200", ACTIVE);
    stream.receive_body(BODY);
    assert_eq!(request_body(filter, false), BODY_STOP_AND_BUFFER);
    let trailers = envoy_dynamic_module_on_http_filter_request_trailers(null_mut(), filter);
    assert_eq!(trailers, STATUS_CONTINUE);
    assert!(stream.replies().is_empty());
}

#[test]
fn a_panic_in_a_request_hook_fails_the_request_closed() {
    let envoy = FakeEnvoy::new();
    let config = configure(&envoy);
    let (stream, filter) = open(&envoy, config, "native-test-hooks-panic");
    envoy.panic_in("request_headers");
    assert_eq!(request_headers(filter, false), HEADERS_STOP_ITERATION);
    assert_eq!(stream.replies().len(), 1);
    assert_eq!(stream.replies()[0].status, 503);
    assert_eq!(stream.reply_code(), "auth_unavailable");
    assert_eq!(
        test_log::errors(),
        ["tollgate: fault caught in a stream hook"]
    );
    // The stream's later hooks hold or continue, and never let it through.
    stream.receive_body(BODY);
    assert_eq!(request_body(filter, true), BODY_STOP_AND_BUFFER);
    assert_eq!(response_headers(filter), STATUS_CONTINUE);
    assert_eq!(stream.resumed(), 0);
    assert_eq!(stream.replies().len(), 1);
}

#[test]
fn a_panic_in_a_response_hook_after_the_decision_sends_no_reply() {
    let envoy = FakeEnvoy::new();
    let config = configure(&envoy);
    let (stream, filter) = open(&envoy, config, "native-test-hooks-late-panic");
    request_headers(filter, false);
    callout_done(filter, stream.sent()[0].id, "200", ACTIVE);
    stream.receive_body(BODY);
    assert_eq!(request_body(filter, true), STATUS_CONTINUE);
    envoy.panic_in("response_header");
    assert_eq!(response_headers(filter), STATUS_CONTINUE);
    assert!(stream.replies().is_empty());
    assert_eq!(
        test_log::errors(),
        ["tollgate: fault caught in a stream hook"]
    );
}

#[test]
fn a_panic_while_configuring_refuses_the_configuration() {
    let envoy = FakeEnvoy::new();
    envoy.panic_in("define_metric");
    assert!(config_new(envoy.config(), fake::config("")).is_null());
    assert!(test_log::errors().contains(&"tollgate: fault caught in config_new".to_string()));
}

#[test]
fn hooks_without_a_state_hold_requests_and_pass_responses() {
    assert_eq!(request_headers(null(), false), HEADERS_STOP_ITERATION);
    assert_eq!(request_body(null(), true), BODY_STOP_AND_BUFFER);
    let trailers = envoy_dynamic_module_on_http_filter_request_trailers(null_mut(), null());
    assert_eq!(trailers, TRAILERS_STOP_ITERATION);
    assert_eq!(response_headers(null()), STATUS_CONTINUE);
    let body = envoy_dynamic_module_on_http_filter_response_body(null_mut(), null(), true);
    assert_eq!(body, STATUS_CONTINUE);
    let stream = FakeEnvoy::new().stream(&[]);
    assert!(filter_new(null(), stream.handle()).is_null());
    // Destroying nothing is nothing.
    filter_destroy(null());
    config_destroy(null());
}

#[test]
fn destroying_a_filter_frees_its_state() {
    let envoy = FakeEnvoy::new();
    let config = configure(&envoy);
    let (stream, filter) = open(&envoy, config, "native-test-hooks-destroy");
    assert!(Rc::strong_count(&stream) > 1);
    envoy_dynamic_module_on_http_filter_destroy(filter);
    assert_eq!(Rc::strong_count(&stream), 1);
}

#[test]
fn destroying_a_configuration_stops_its_tick() {
    let envoy = FakeEnvoy::new();
    let config = configure(&envoy);
    assert_eq!(envoy.live_schedulers(), 1);
    envoy_dynamic_module_on_http_filter_config_destroy(config);
    assert_eq!(envoy.live_schedulers(), 0);
}

#[test]
fn the_tick_and_its_flush_answer_reach_the_root() {
    let envoy = FakeEnvoy::new();
    let config = configure(&envoy);
    let (stream, filter) = open(&envoy, config, "native-test-hooks-tick");
    request_headers(filter, false);
    callout_done(filter, stream.sent()[0].id, "200", ACTIVE);
    stream.receive_body(BODY);
    request_body(filter, true);
    envoy_dynamic_module_on_http_filter_stream_complete(null_mut(), filter);
    envoy_dynamic_module_on_http_filter_config_scheduled(null_mut(), config, TICK_EVENT);
    let flushes = envoy.sent_to(tollgate_wire::USAGE_PATH);
    assert_eq!(flushes.len(), 1);
    let status = "200";
    let mut headers = [EnvoyHttpHeader {
        key_ptr: ":status".as_ptr().cast(),
        key_length: 7,
        value_ptr: status.as_ptr().cast(),
        value_length: 3,
    }];
    envoy_dynamic_module_on_http_filter_config_http_callout_done(
        null_mut(),
        config,
        flushes[0].id,
        CALLOUT_SUCCESS,
        headers.as_mut_ptr(),
        1,
        null_mut(),
        0,
    );
    assert_eq!(envoy.metric("tollgate_usage_records_sent"), 1);
}
