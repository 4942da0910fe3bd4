//! The hooks' behaviour against a fake Envoy: configuration, one stream's
//! flow (headers, body, callouts, resumption, nesting), the usage record
//! queue and the root's tick. Each test runs on its own thread, so its
//! roots and workers are its own; keys differ per test because the shared
//! data (the key cache) is one per process.

use std::rc::Rc;
use std::time::{Duration, Instant};
use tollgate_wire::UsageRecord;

use tollgate_filter::host::Action;
use tollgate_wire::{CHANGES_PATH, USAGE_PATH, VERIFY_PATH};

use super::*;
use crate::abi::buffers::test_log;
use crate::abi::Answer;
use crate::fake::{self, FakeEnvoy, FakeStream};
use crate::host::TICK_EVENT;

const BODY: &[u8] = br#"{"text":"hi"}"#;

fn configure(extra: &str) -> (FakeEnvoy, ConfigHandle) {
    let envoy = FakeEnvoy::new();
    let handle = config_new(envoy.config(), fake::config(extra));
    let handle = handle.unwrap_or_else(|| panic!("refused: {:?}", test_log::errors()));
    (envoy, handle)
}

/// A key no other test uses.
fn key(test: &str) -> String {
    format!("native-test-{test}")
}

fn answer(status: Option<&str>, body: &str) -> Answer {
    Answer {
        status: status.map(|s| s.as_bytes().to_vec()),
        body: body.as_bytes().to_vec(),
    }
}

/// The sidecar's verdict: key 7 is active.
fn active() -> Answer {
    answer(Some("200"), r#"{"verdict":"active","key_id":7}"#)
}

/// The records in the configuration's usage buffer (every thread's
/// streams push there; the root flushes it).
fn queued(shared: &Shared) -> Vec<UsageRecord> {
    shared.worker.usage().records().cloned().collect()
}

/// One stream of a configuration, driven hook by hook as Envoy would.
struct Request {
    stream: Rc<FakeStream>,
    state: Rc<StreamFilter>,
}

impl Request {
    /// A POST with `key` and a valid token for [`BODY`].
    fn new(envoy: &FakeEnvoy, handle: &ConfigHandle, key: &str) -> Self {
        Self::with_headers(envoy, handle, &fake::request(key, BODY))
    }

    fn with_headers(
        envoy: &FakeEnvoy,
        handle: &ConfigHandle,
        headers: &[(String, String)],
    ) -> Self {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let stream = envoy.stream(&headers);
        let state = Rc::new(filter_new(handle, stream.handle()).unwrap());
        Request { stream, state }
    }

    fn event(&self, event: StreamEvent) -> Action {
        stream_event(&self.state, event)
    }

    /// The request headers, a body to follow.
    fn headers(&self) -> Action {
        self.event(StreamEvent::RequestHeaders {
            end_of_stream: false,
        })
    }

    /// A request body frame.
    fn body(&self, chunk: &[u8], end_of_stream: bool) -> Action {
        self.stream.receive_body(chunk);
        self.event(StreamEvent::RequestBody { end_of_stream })
    }

    /// Answers the stream's latest callout.
    fn answer(&self, answer: Answer) -> Action {
        let id = self.stream.sent().last().unwrap().id;
        self.event(StreamEvent::Callout { id, answer })
    }

    /// The response: `status`, then body frames of these sizes.
    fn respond(&self, status: &str, frames: &[usize]) {
        self.stream.respond(&[(":status", status)]);
        self.event(StreamEvent::ResponseHeaders);
        for (n, &size) in frames.iter().enumerate() {
            self.stream.response_frame(&vec![b'x'; size]);
            let last = n + 1 == frames.len();
            assert_eq!(response_body(&self.state, last), Action::Continue);
        }
    }

    fn complete(&self) {
        self.event(StreamEvent::Complete);
    }

    fn request_id(&self) -> String {
        self.stream.request_header("x-request-id").unwrap()
    }
}

/// A whole request of `key` (active, id 7), let through, answered 200,
/// completed.
fn pass(envoy: &FakeEnvoy, handle: &ConfigHandle, key: &str) -> Request {
    let request = Request::new(envoy, handle, key);
    request.headers();
    if !request.stream.sent().is_empty() {
        request.answer(active());
    }
    assert_eq!(request.body(BODY, true), Action::Continue);
    request.respond("200", &[0]);
    request.complete();
    request
}

// ------------------------------------------------------ configuration

#[test]
fn a_valid_configuration_defines_its_metrics_and_starts_the_tick() {
    let (envoy, handle) = configure("");
    assert!(envoy.defined("tollgate_requests_allowed"));
    assert!(envoy.defined("tollgate_usage_records_dropped"));
    let metrics = &handle.shared.metrics;
    assert!(metrics
        .iter()
        .any(|m| m.name == "tollgate_requests_allowed"));
    assert_eq!(envoy.live_schedulers(), 1);
}

#[test]
fn the_tick_posts_through_the_scheduler_until_the_configuration_goes() {
    let (envoy, handle) = configure("");
    let deadline = Instant::now() + Duration::from_secs(5);
    while envoy.posted().len() < 2 {
        assert!(Instant::now() < deadline, "no tick posted");
        std::thread::sleep(Duration::from_millis(10));
    }
    config_destroy(handle);
    assert_eq!(envoy.live_schedulers(), 0);
    let posted = envoy.posted();
    assert!(
        posted.iter().all(|&event| event == TICK_EVENT),
        "{posted:?}"
    );
    std::thread::sleep(Duration::from_millis(250));
    let after = envoy.posted();
    assert_eq!(after, posted, "the tick thread outlived its configuration");
}

#[test]
fn a_configuration_that_is_not_json_is_refused() {
    let envoy = FakeEnvoy::new();
    assert!(config_new(envoy.config(), b"{not json".to_vec()).is_none());
    let errors = test_log::errors();
    assert!(errors
        .iter()
        .any(|e| e.contains("invalid plugin configuration")));
}

#[test]
fn an_empty_configuration_is_refused() {
    let envoy = FakeEnvoy::new();
    assert!(config_new(envoy.config(), Vec::new()).is_none());
    assert!(test_log::errors().iter().any(|e| e.contains("it is empty")));
}

#[test]
fn a_configuration_with_an_unknown_field_is_refused() {
    let envoy = FakeEnvoy::new();
    let config = fake::config(r#""surprise": 1"#);
    assert!(config_new(envoy.config(), config).is_none());
    assert!(test_log::errors().iter().any(|e| e.contains("surprise")));
}

#[test]
fn a_configuration_without_a_scheduler_is_refused() {
    let envoy = FakeEnvoy::new();
    envoy.no_scheduler();
    assert!(config_new(envoy.config(), fake::config("")).is_none());
    let errors = test_log::errors();
    assert!(errors
        .iter()
        .any(|e| e.contains("cannot set the flush timer")));
}

// ------------------------------------------------------------ streams

#[test]
fn a_request_without_an_api_key_is_answered_401_at_its_headers() {
    let (envoy, handle) = configure("");
    let request = Request::with_headers(&envoy, &handle, &[(":method".into(), "POST".into())]);
    let stream = &request.stream;
    let headers = request.event(StreamEvent::RequestHeaders {
        end_of_stream: true,
    });
    assert_eq!(headers, Action::Pause);
    assert_eq!(stream.replies().len(), 1);
    assert_eq!(stream.replies()[0].status, 401);
    assert_eq!(stream.reply_code(), "missing_api_key");
    assert!(stream.sent().is_empty());
    // The request carries the gateway's own request id.
    assert_eq!(request.request_id().len(), 32);
}

#[test]
fn a_malformed_key_is_refused_without_a_callout() {
    let (envoy, handle) = configure("");
    let request = Request::new(&envoy, &handle, "tg_short");
    request.headers();
    assert_eq!(request.stream.reply_code(), "invalid_api_key");
    assert!(request.stream.sent().is_empty());
}

#[test]
fn a_body_over_the_limit_is_refused_by_its_content_length() {
    let (envoy, handle) = configure("");
    let mut headers = fake::request(&key("content-length"), BODY);
    headers.push(("content-length".into(), "65".into()));
    let request = Request::with_headers(&envoy, &handle, &headers);
    request.headers();
    assert_eq!(request.stream.replies()[0].status, 413);
    assert_eq!(request.stream.reply_code(), "payload_too_large");
}

#[test]
fn a_new_key_is_verified_by_one_callout_and_its_credentials_stripped() {
    let (envoy, handle) = configure("");
    let request = Request::new(&envoy, &handle, &key("verify"));
    assert_eq!(request.headers(), Action::Pause);
    let stream = &request.stream;
    let sent = stream.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].cluster, "tollgate_sidecar");
    assert_eq!(sent[0].header(":path"), Some(VERIFY_PATH));
    assert_eq!(sent[0].timeout_ms, 500);
    assert_eq!(stream.request_header("authorization"), None);
    assert_eq!(stream.request_header("x-auth-token"), None);
    assert!(stream.replies().is_empty());
}

#[test]
fn an_active_verdict_after_the_body_resumes_the_held_request_once() {
    let (envoy, handle) = configure("");
    let request = Request::new(&envoy, &handle, &key("resume"));
    request.headers();
    assert_eq!(request.body(BODY, true), Action::Pause);
    assert_eq!(request.stream.resumed(), 0);
    request.answer(active());
    assert_eq!(request.stream.resumed(), 1);
    let key_id = request.stream.request_header("x-tollgate-key-id");
    assert_eq!(key_id.as_deref(), Some("7"));
    assert!(request.stream.replies().is_empty());
}

#[test]
fn an_active_verdict_before_the_body_lets_the_body_hook_continue() {
    let (envoy, handle) = configure("");
    let request = Request::new(&envoy, &handle, &key("early-verdict"));
    request.headers();
    request.answer(active());
    assert_eq!(
        request.stream.resumed(),
        0,
        "resumed before the body was checked"
    );
    assert_eq!(request.body(BODY, true), Action::Continue);
    assert_eq!(request.stream.resumed(), 0);
}

#[test]
fn trailers_end_the_body() {
    let (envoy, handle) = configure("");
    let request = Request::new(&envoy, &handle, &key("trailers"));
    request.headers();
    request.answer(active());
    assert_eq!(request.body(BODY, false), Action::Pause);
    assert_eq!(
        request.event(StreamEvent::RequestTrailers),
        Action::Continue
    );
    assert!(request.stream.replies().is_empty());
}

#[test]
fn a_body_other_than_the_signed_one_is_refused() {
    let (envoy, handle) = configure("");
    let request = Request::new(&envoy, &handle, &key("body-mismatch"));
    request.headers();
    request.answer(active());
    assert_eq!(request.body(br#"{"text":"ho"}"#, true), Action::Pause);
    assert_eq!(request.stream.reply_code(), "body_hash_mismatch");
}

#[test]
fn a_not_found_verdict_is_answered_401() {
    let (envoy, handle) = configure("");
    let request = Request::new(&envoy, &handle, &key("not-found"));
    request.headers();
    request.answer(answer(Some("200"), r#"{"verdict":"not_found"}"#));
    assert_eq!(request.stream.reply_code(), "invalid_api_key");
    assert_eq!(request.stream.resumed(), 0);
}

#[test]
fn a_verify_call_that_keeps_failing_fails_closed_503() {
    let (envoy, handle) = configure("");
    let request = Request::new(&envoy, &handle, &key("verify-fails"));
    request.headers();
    // The first quick failure is retried once; the retry fails too.
    request.answer(Answer::default());
    assert_eq!(request.stream.sent().len(), 2);
    request.answer(Answer::default());
    assert_eq!(request.stream.replies()[0].status, 503);
    assert_eq!(request.stream.reply_code(), "auth_unavailable");
    assert_eq!(request.stream.resumed(), 0);
}

#[test]
fn a_callout_envoy_refuses_fails_closed_503() {
    let (envoy, handle) = configure("");
    envoy.refuse_callouts(true);
    let request = Request::new(&envoy, &handle, &key("refused"));
    assert_eq!(request.headers(), Action::Pause);
    assert_eq!(request.stream.reply_code(), "auth_unavailable");
}

#[test]
fn a_callout_id_beyond_a_filter_token_fails_closed_503() {
    let (envoy, handle) = configure("");
    envoy.next_callout_id(u64::from(u32::MAX) + 1);
    let request = Request::new(&envoy, &handle, &key("big-id"));
    request.headers();
    assert_eq!(request.stream.reply_code(), "auth_unavailable");
}

#[test]
fn an_answer_to_another_callout_changes_nothing() {
    let (envoy, handle) = configure("");
    let request = Request::new(&envoy, &handle, &key("other-callout"));
    request.headers();
    request.body(BODY, true);
    let id = request.stream.sent()[0].id;
    for other in [id + 1, u64::from(u32::MAX) + 1 + id] {
        request.event(StreamEvent::Callout {
            id: other,
            answer: active(),
        });
        assert_eq!(request.stream.resumed(), 0);
        assert!(request.stream.replies().is_empty());
    }
    request.event(StreamEvent::Callout {
        id,
        answer: active(),
    });
    assert_eq!(request.stream.resumed(), 1);
}

#[test]
fn a_known_key_needs_no_second_callout() {
    let (envoy, handle) = configure("");
    let key = key("cached");
    assert_eq!(pass(&envoy, &handle, &key).stream.sent().len(), 1);
    let second = pass(&envoy, &handle, &key);
    assert!(second.stream.sent().is_empty());
    assert!(second.stream.replies().is_empty());
}

#[test]
fn response_hooks_nested_in_a_local_reply_run_after_the_hook_that_sent_it() {
    let (envoy, handle) = configure("");
    let request = Request::new(&envoy, &handle, &key("nested"));
    request.headers();
    request.answer(active());
    let (state, stream) = (request.state.clone(), request.stream.clone());
    let shared = handle.shared.clone();
    request.stream.during_reply(move || {
        // Envoy runs the reply's response hooks inside `send_response`.
        stream.respond(&[(":status", "401")]);
        let response = stream_event(&state, StreamEvent::ResponseHeaders);
        assert_eq!(response, Action::Continue);
        assert_eq!(
            stream_event(&state, StreamEvent::Complete),
            Action::Continue
        );
        assert!(queued(&shared).is_empty(), "ran inside the outer hook");
    });
    assert_eq!(request.body(b"not the signed body", true), Action::Pause);
    let records = queued(&handle.shared);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status_code, 401);
    assert_eq!(records[0].outcome.as_str(), "body_hash_mismatch");
}

#[test]
fn envoys_own_reply_to_a_resumed_request_is_read_in_its_own_hook() {
    let (envoy, handle) = configure("");
    let request = Request::new(&envoy, &handle, &key("resumed-unrouted"));
    request.headers();
    assert_eq!(request.body(BODY, true), Action::Pause);
    let (state, stream) = (request.state.clone(), request.stream.clone());
    request.stream.during_resume(move || {
        // No route: Envoy answers 404 itself inside `continue_decoding`,
        // and its headers are there only while their hook runs.
        stream.respond(&[(":status", "404")]);
        let response = stream_event(&state, StreamEvent::ResponseHeaders);
        assert_eq!(response, Action::Continue);
        stream.respond(&[]);
        assert_eq!(
            stream_event(&state, StreamEvent::Complete),
            Action::Continue
        );
    });
    request.answer(active());
    assert_eq!(request.stream.resumed(), 1);
    let records = queued(&handle.shared);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status_code, 404);
}

#[test]
fn a_fault_fails_an_undecided_request_closed_and_silences_the_stream() {
    let (envoy, handle) = configure("");
    let request = Request::new(&envoy, &handle, &key("fault"));
    request.headers();
    stream_fault(&request.state);
    let stream = &request.stream;
    assert_eq!(stream.replies()[0].status, 503);
    assert_eq!(stream.reply_code(), "auth_unavailable");
    assert!(stream.replies()[0].body.contains(&request.request_id()));
    // Nothing of the stream runs afterwards: not even a good verdict.
    assert_eq!(request.body(BODY, true), Action::Pause);
    request.answer(active());
    assert_eq!(stream.resumed(), 0);
    assert_eq!(
        request.event(StreamEvent::ResponseHeaders),
        Action::Continue
    );
}

#[test]
fn a_fault_on_an_llm_route_answers_in_the_providers_shape() {
    let (envoy, handle) = configure("");
    let key = key("llm-fault");
    let mut headers = fake::request(&key, BODY);
    headers[1].1 = "/v1/messages".to_string();
    let request = Request::with_headers(&envoy, &handle, &headers);
    request.headers();
    stream_fault(&request.state);
    let reply = &request.stream.replies()[0];
    assert_eq!(reply.status, 503);
    assert!(
        reply.body.starts_with(r#"{"type":"error""#),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains(r#""code":"auth_unavailable""#),
        "{}",
        reply.body
    );
}

#[test]
fn a_fault_while_a_step_of_admission_waits_fails_the_request_closed() {
    let (envoy, handle) = configure("");
    let request = Request::new(&envoy, &handle, &key("fault-waiting"));
    request.headers();
    let limited = r#"{"verdict":"active","key_id":7,
        "limits":{"quotas":[{"kind":"requests","limit":100,"window":"day"}]}}"#;
    request.answer(answer(Some("200"), limited));
    assert_eq!(request.body(BODY, true), Action::Pause, "waits for a grant");
    assert_eq!(
        request.stream.sent().len(),
        2,
        "the verify call, then the grant call"
    );
    stream_fault(&request.state);
    assert_eq!(request.stream.replies()[0].status, 503);
    assert_eq!(request.stream.reply_code(), "auth_unavailable");
}

#[test]
fn a_fault_after_the_decision_sends_no_reply() {
    let (envoy, handle) = configure("");
    let request = Request::new(&envoy, &handle, &key("late-fault"));
    request.headers();
    request.answer(active());
    request.body(BODY, true);
    stream_fault(&request.state);
    assert!(request.stream.replies().is_empty());
}

// ------------------------------------------------ usage and the tick

#[test]
fn a_completed_stream_buffers_its_usage_record_for_the_root() {
    let (envoy, handle) = configure("");
    let request = Request::new(&envoy, &handle, &key("record"));
    request.headers();
    request.answer(active());
    request.body(BODY, true);
    request.respond("200", &[120, 30]);
    assert!(
        queued(&handle.shared).is_empty(),
        "queued before the stream completed"
    );
    request.complete();
    let records = queued(&handle.shared);
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.api_key_id, 7);
    assert_eq!(record.status_code, 200);
    assert_eq!(record.request_bytes, BODY.len() as u64);
    assert_eq!(record.response_bytes, 150);
    assert_eq!(record.request_id, request.request_id());
}

#[test]
fn a_completed_stream_hands_its_hot_counters_to_envoy() {
    let (envoy, handle) = configure("");
    let request = Request::new(&envoy, &handle, &key("hot"));
    request.headers();
    request.answer(active());
    request.body(BODY, true);
    let allowed = || envoy.metric("tollgate_requests_allowed");
    assert_eq!(allowed(), 0, "a hot counter moved at once");
    request.complete();
    assert_eq!(allowed(), 1);
}

#[test]
fn the_configurations_buffer_is_bounded_by_its_cap() {
    let (envoy, handle) = configure(r#""usage": {"buffer_cap": 2}"#);
    let key = key("cap");
    for _ in 0..3 {
        pass(&envoy, &handle, &key);
    }
    assert_eq!(queued(&handle.shared).len(), 2);
    assert_eq!(envoy.metric("tollgate_usage_records_dropped"), 1);
}

#[test]
fn a_batch_in_flight_counts_against_the_buffer_cap() {
    let (envoy, handle) = configure(r#""usage": {"buffer_cap": 2}"#);
    let key = key("cap-held");
    pass(&envoy, &handle, &key);
    config_scheduled(&handle, TICK_EVENT);
    assert_eq!(envoy.sent_to(USAGE_PATH).len(), 1, "a batch in flight");
    pass(&envoy, &handle, &key);
    pass(&envoy, &handle, &key);
    assert_eq!(queued(&handle.shared).len(), 2);
    assert_eq!(envoy.metric("tollgate_usage_records_dropped"), 1);
}

#[test]
fn the_tick_flushes_what_the_streams_buffered() {
    let (envoy, handle) = configure("");
    let request = pass(&envoy, &handle, &key("tick"));
    config_scheduled(&handle, TICK_EVENT);
    assert_eq!(queued(&handle.shared).len(), 1, "kept until acknowledged");
    let flushes = envoy.sent_to(USAGE_PATH);
    assert_eq!(flushes.len(), 1);
    let body = String::from_utf8(flushes[0].body.clone()).unwrap();
    assert!(body.contains(&request.request_id()), "{body}");
}

#[test]
fn a_scheduled_event_other_than_the_tick_does_nothing() {
    let (envoy, handle) = configure("");
    pass(&envoy, &handle, &key("not-tick"));
    config_scheduled(&handle, TICK_EVENT + 1);
    assert_eq!(queued(&handle.shared).len(), 1);
    assert!(envoy.sent().is_empty());
}

#[test]
fn an_acknowledged_flush_empties_the_roots_buffer() {
    let (envoy, handle) = configure("");
    pass(&envoy, &handle, &key("ack"));
    config_scheduled(&handle, TICK_EVENT);
    assert_eq!(queued(&handle.shared).len(), 1);
    let flush = envoy.sent_to(USAGE_PATH)[0].id;
    config_callout_done(&handle, flush, answer(Some("200"), "{}"));
    assert!(queued(&handle.shared).is_empty());
    assert_eq!(envoy.metric("tollgate_usage_records_sent"), 1);
}

#[test]
fn a_flush_answer_while_the_root_is_busy_is_handled_when_it_is_free() {
    let (envoy, handle) = configure("");
    pass(&envoy, &handle, &key("busy-root"));
    let handle = Rc::new(handle);
    let inner = handle.clone();
    // Envoy answers a callout that fails at once inside the call itself.
    envoy.during_callout(move |id| config_callout_done(&inner, id, Answer::default()));
    config_scheduled(&handle, TICK_EVENT);
    assert_eq!(envoy.sent_to(USAGE_PATH).len(), 1);
    assert_eq!(envoy.metric("tollgate_usage_flush_failures"), 1);
    let held = queued(&handle.shared).len();
    assert_eq!(held, 1, "the batch is kept for a retry");
}

#[test]
fn a_removed_configuration_flushes_what_its_streams_queued() {
    let (envoy, handle) = configure("");
    pass(&envoy, &handle, &key("destroy"));
    config_destroy(handle);
    assert_eq!(envoy.sent_to(USAGE_PATH).len(), 1);
    assert_eq!(envoy.live_schedulers(), 0);
}

#[test]
fn streams_see_the_feed_currency_the_roots_tick_set() {
    let (envoy, handle) = configure(r#""key_feed": {"enabled": true}"#);
    let open = || Request::new(&envoy, &handle, &key("feed"));
    // A verdict read at feed position 1 gives the feed its cursor.
    let first = open();
    first.headers();
    let verdict = r#"{"verdict":"active","key_id":7,"feed_cursor":1}"#;
    first.answer(answer(Some("200"), verdict));
    assert!(!open().state.worker.shared.feed_current());
    config_scheduled(&handle, TICK_EVENT);
    let polls: Vec<_> = envoy
        .sent()
        .into_iter()
        .filter(|s| {
            s.header(":path")
                .is_some_and(|p| p.starts_with(CHANGES_PATH))
        })
        .collect();
    assert_eq!(polls.len(), 1);
    let changes = answer(Some("200"), r#"{"cursor":1,"changes":[]}"#);
    config_callout_done(&handle, polls[0].id, changes);
    assert!(
        first.state.worker.shared.feed_current(),
        "a stream already open"
    );
}

// ------------------------------------------------------------ workers

#[test]
fn streams_of_a_configuration_on_one_thread_share_one_worker() {
    let (envoy, handle) = configure("");
    let a = Request::new(&envoy, &handle, &key("worker-a"));
    let b = Request::new(&envoy, &handle, &key("worker-b"));
    assert!(Rc::ptr_eq(&a.state.worker, &b.state.worker));
    assert_eq!(workers::on_this_thread(), 1);
    a.headers();
    b.headers();
    assert_ne!(a.request_id(), b.request_id());
}

#[test]
fn a_removed_configuration_leaves_no_worker_behind() {
    let (envoy, old) = configure("");
    drop(Request::new(&envoy, &old, &key("old-worker")));
    config_destroy(old);
    let (envoy, new) = configure("");
    let _request = Request::new(&envoy, &new, &key("new-worker"));
    assert_eq!(workers::on_this_thread(), 1);
}

// ------------------------------------------------------------ LLM calls

/// An OpenAI chat stream through the module: the forwarded body asks for
/// usage, each frame passes as it arrives but the usage-only chunk, which
/// is drained from its frame, and the row carries the reported tokens.
#[test]
fn a_chat_stream_is_metered_and_its_usage_chunk_drained_from_the_frame() {
    let (envoy, handle) = configure("");
    let key = key("llm-chat");
    let body = br#"{"model":"m","stream":true,"messages":[]}"#;
    let mut headers = fake::request(&key, body);
    headers[1].1 = "/v1/chat/completions".to_string();
    let request = Request::with_headers(&envoy, &handle, &headers);
    request.headers();
    if !request.stream.sent().is_empty() {
        request.answer(active());
    }
    assert_eq!(request.body(body, true), Action::Continue);
    let forwarded = String::from_utf8(request.stream.forwarded_body()).unwrap();
    assert!(
        forwarded.contains(r#""stream_options":{"include_usage":true}"#),
        "{forwarded}"
    );

    request.stream.respond(&[(":status", "200")]);
    request.event(StreamEvent::ResponseHeaders);
    let text = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
    let usage =
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n";
    for (frame, passes) in [(&text[..], &text[..]), (&usage[..], &b""[..])] {
        request.stream.response_frame(frame);
        assert_eq!(response_body(&request.state, false), Action::Continue);
        assert_eq!(request.stream.passed_response_frame(), passes);
    }
    request.stream.response_frame(b"data: [DONE]\n\n");
    response_body(&request.state, true);
    request.complete();
    let records = queued(&handle.shared);
    let llm = records
        .last()
        .and_then(|r| r.llm.clone())
        .expect("an LLM row");
    assert_eq!((llm.tokens.input_tokens, llm.tokens.output_tokens), (5, 1));
}
