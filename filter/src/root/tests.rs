//! The worker's root through the fake host: configuration, the usage
//! flusher with its batching and backoff, and the drain at shutdown.

use serde_json::json;
use tollgate_wire::{UsageRecord, INTERNAL_TOKEN_HEADER, USAGE_PATH};

use crate::fake_host::{Call, FakeWorld, Sent};
use crate::host::LogLevel;
use crate::root::{Root, TIMER_PERIOD_MS};
use crate::testkit::{config, Gateway, INTERNAL, KEY};

fn flushes(world: &FakeWorld) -> Vec<Sent> {
    let sent = world.sent();
    sent.into_iter()
        .filter(|s| s.header(":path") == Some(USAGE_PATH))
        .collect()
}

fn records_of(call: &Sent) -> Vec<UsageRecord> {
    serde_json::from_slice(&call.body).unwrap()
}

/// A gateway with `n` metered requests in its buffer.
fn with_records(overrides: serde_json::Value, n: usize) -> Gateway {
    let gw = Gateway::with(overrides);
    for _ in 0..n {
        gw.pass(KEY, 1).flow.on_log();
    }
    gw
}

fn answer(gw: &mut Gateway, call: &Sent, status: Option<&str>) {
    answer_with(gw, call, status, b"{}");
}

fn answer_with(gw: &mut Gateway, call: &Sent, status: Option<&str>, body: &[u8]) {
    let size = gw.world.answer(status, body);
    gw.root.on_callout_reply(call.token, size);
}

#[test]
fn an_invalid_configuration_is_refused_naming_the_field() {
    let world = FakeWorld::new();
    let mut root = Root::new(world.root());
    let size = world.configure(&config(json!({"max_body_bytes": "big"})));
    assert!(!root.on_configure(size));
    assert!(world
        .logs(LogLevel::Error)
        .iter()
        .any(|l| l.contains("max_body_bytes")));
    assert_eq!(world.tick_period_ms(), None);
    let mut empty = Root::new(world.root());
    world.fail(Call::PluginConfig);
    assert!(!empty.on_configure(0));
}

#[test]
fn configuration_sets_the_flush_timer_and_says_what_is_on_without_secrets() {
    let world = FakeWorld::new();
    let mut root = Root::new(world.root());
    let size = world.configure(&config(json!({"usage": {"flush_interval_ms": 50}})));
    assert!(root.on_configure(size));
    assert_eq!(world.tick_period_ms(), Some(50));
    // A longer tick: the timer fires every TIMER_PERIOD_MS, and ticks when
    // the period has passed.
    let size = world.configure(&config(json!({"usage": {"flush_interval_ms": 250}})));
    assert!(root.on_configure(size));
    assert_eq!(world.tick_period_ms(), Some(TIMER_PERIOD_MS));
    let info = world.logs(LogLevel::Info).join("\n");
    assert!(info.contains("configured; sidecar cluster tollgate_sidecar"));
    assert!(!info.contains(INTERNAL) && !info.contains(crate::testkit::SECRET));
}

#[test]
fn a_worker_without_randomness_refuses_to_start() {
    let world = FakeWorld::new();
    world.fail(Call::Random);
    let mut root = Root::new(world.root());
    let size = world.configure(&config(json!({})));
    assert!(!root.on_configure(size));
}

#[test]
fn a_reconfiguration_keeps_the_buffered_records() {
    let mut gw = with_records(json!({}), 3);
    let size = gw.world.configure(&config(json!({"max_body_bytes": 128})));
    assert!(gw.root.on_configure(size));
    assert_eq!(gw.buffered().len(), 3);
}

#[test]
fn the_tick_sends_a_batch_that_leaves_the_buffer_only_when_acknowledged() {
    let mut gw = with_records(json!({}), 3);
    gw.root.on_tick();
    let calls = flushes(&gw.world);
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.header(INTERNAL_TOKEN_HEADER), Some(INTERNAL));
    assert_eq!(call.timeout_ms, 5_000);
    assert_eq!(records_of(call), gw.buffered());
    gw.root.on_tick();
    assert_eq!(flushes(&gw.world).len(), 1, "one batch in flight at a time");
    answer(&mut gw, call, Some("200"));
    assert!(gw.buffered().is_empty());
    assert_eq!(gw.world.metric("tollgate_usage_records_sent"), 3);
    assert_eq!(gw.world.metric("tollgate_usage_records_buffered"), 0);
}

#[test]
fn a_failed_flush_keeps_its_records_and_backs_off() {
    let mut gw = with_records(json!({}), 2);
    gw.root.on_tick();
    let first = flushes(&gw.world)[0].clone();
    answer(&mut gw, &first, Some("503"));
    assert_eq!(gw.buffered().len(), 2);
    assert_eq!(gw.world.metric("tollgate_usage_flush_failures"), 1);
    gw.root.on_tick();
    assert_eq!(flushes(&gw.world).len(), 1, "still backing off");
    gw.world.advance_ms(1_000);
    gw.root.on_tick();
    let calls = flushes(&gw.world);
    assert_eq!(calls.len(), 2);
    assert_eq!(
        records_of(&calls[1]),
        records_of(&first),
        "retried in order"
    );
}

/// One impossible record (the sidecar's 400 names it) is dropped, counted
/// and logged; the rest of the batch goes again at once, without backoff.
#[test]
fn a_record_the_sidecar_refuses_is_dropped_and_the_rest_resent_at_once() {
    let mut gw = with_records(json!({}), 3);
    gw.root.on_tick();
    let first = flushes(&gw.world)[0].clone();
    let sent = records_of(&first);
    let refusal = br#"{"error":{"code":"invalid_request","message":"record 1: timestamp_ms is too far from now","field":"[1].timestamp_ms"}}"#;
    answer_with(&mut gw, &first, Some("400"), refusal);
    assert_eq!(gw.world.metric("tollgate_usage_records_refused"), 1);
    assert_eq!(gw.world.metric("tollgate_usage_flush_failures"), 0);
    assert_eq!(gw.world.metric("tollgate_usage_records_buffered"), 2);
    let calls = flushes(&gw.world);
    assert_eq!(calls.len(), 2, "resent without waiting");
    assert_eq!(
        records_of(&calls[1]),
        vec![sent[0].clone(), sent[2].clone()]
    );
    let logged = gw.world.logs(LogLevel::Error).join("\n");
    assert!(
        logged.contains(&sent[1].request_id) && logged.contains("timestamp_ms"),
        "{logged}"
    );
    answer(&mut gw, &calls[1].clone(), Some("200"));
    assert!(gw.buffered().is_empty());
    // A 400 that names no record is an ordinary failure: kept, backed off.
    let mut gw = with_records(json!({}), 2);
    gw.root.on_tick();
    let call = flushes(&gw.world)[0].clone();
    answer_with(
        &mut gw,
        &call,
        Some("400"),
        br#"{"error":{"code":"invalid_request","message":"no"}}"#,
    );
    assert_eq!(gw.buffered().len(), 2);
    assert_eq!(gw.world.metric("tollgate_usage_flush_failures"), 1);
}

#[test]
fn a_backlog_drains_at_the_sidecars_pace() {
    let mut gw = with_records(json!({"usage": {"max_batch": 2}}), 5);
    gw.root.on_tick();
    let first = flushes(&gw.world)[0].clone();
    assert_eq!(records_of(&first).len(), 2);
    answer(&mut gw, &first, Some("200"));
    let calls = flushes(&gw.world);
    assert_eq!(
        calls.len(),
        2,
        "the next batch goes without waiting for a tick"
    );
    answer(&mut gw, &calls[1].clone(), Some("200"));
    // One record left: less than a batch, it waits for the tick.
    assert_eq!(flushes(&gw.world).len(), 2);
    assert_eq!(gw.buffered().len(), 1);
}

/// The timer ticks once per period and only looks at the buffer between.
#[test]
fn the_timer_ticks_once_its_period_has_passed() {
    let mut gw = with_records(json!({"usage": {"flush_interval_ms": 1000}}), 1);
    gw.root.on_timer();
    let first = flushes(&gw.world);
    assert_eq!(first.len(), 1, "the first timer ticks");
    answer(&mut gw, &first[0].clone(), Some("200"));
    gw.pass(KEY, 1).flow.on_log();
    gw.world.advance_ms(TIMER_PERIOD_MS);
    gw.root.on_timer();
    assert_eq!(flushes(&gw.world).len(), 1, "no tick before the period");
    gw.world.advance_ms(1000 - TIMER_PERIOD_MS);
    gw.root.on_timer();
    assert_eq!(flushes(&gw.world).len(), 2, "the period passed: a tick");
}

/// Between ticks only a full batch goes, and only when none is in flight.
#[test]
fn between_ticks_a_full_batch_goes_and_a_partial_one_waits() {
    let mut gw = with_records(json!({"usage": {"max_batch": 2}}), 1);
    gw.root.on_records();
    assert!(flushes(&gw.world).is_empty(), "one record is not a batch");
    gw.pass(KEY, 1).flow.on_log();
    gw.pass(KEY, 1).flow.on_log();
    gw.root.on_records();
    let calls = flushes(&gw.world);
    assert_eq!(calls.len(), 1);
    assert_eq!(records_of(&calls[0]).len(), 2);
    gw.root.on_records();
    assert_eq!(flushes(&gw.world).len(), 1, "one batch in flight at a time");
    answer(&mut gw, &calls[0].clone(), Some("200"));
    gw.root.on_records();
    assert_eq!(
        flushes(&gw.world).len(),
        1,
        "the last record waits for the tick"
    );
    assert_eq!(gw.buffered().len(), 1);
}

#[test]
fn a_flush_whose_answer_never_comes_is_given_up_and_retried() {
    let mut gw = with_records(json!({}), 1);
    gw.root.on_tick();
    gw.world.advance_ms(6_001);
    gw.root.on_tick();
    assert_eq!(gw.world.metric("tollgate_usage_flush_failures"), 1);
    gw.world.advance_ms(1_000);
    gw.root.on_tick();
    assert_eq!(flushes(&gw.world).len(), 2);
    // The late answer to the first call is not mistaken for the second's.
    let first = flushes(&gw.world)[0].clone();
    answer(&mut gw, &first, Some("200"));
    assert_eq!(gw.buffered().len(), 1);
}

#[test]
fn a_flush_that_cannot_be_sent_is_a_failure_retried_later() {
    let mut gw = with_records(json!({}), 1);
    gw.world.fail(Call::Dispatch);
    gw.root.on_tick();
    assert_eq!(gw.world.metric("tollgate_usage_flush_failures"), 1);
    assert!(gw
        .world
        .logs(LogLevel::Warn)
        .iter()
        .any(|l| l.contains("retrying later")));
    gw.world.heal(Call::Dispatch);
    gw.world.advance_ms(1_000);
    gw.root.on_tick();
    assert_eq!(flushes(&gw.world).len(), 1);
}

#[test]
fn the_tick_publishes_the_hot_counters() {
    let mut gw = with_records(json!({}), 2);
    assert_eq!(gw.world.metric("tollgate_requests_allowed"), 0);
    gw.root.on_tick();
    assert_eq!(gw.world.metric("tollgate_requests_allowed"), 2);
}

/// A host whose clock fails still gets the hot counters on every timer.
#[test]
fn the_timer_publishes_the_hot_counters_without_a_clock() {
    let mut gw = with_records(json!({}), 2);
    gw.root.on_timer();
    gw.pass(KEY, 1).flow.on_log();
    gw.world.fail(Call::Clock);
    gw.root.on_timer();
    assert_eq!(gw.world.metric("tollgate_requests_allowed"), 3);
}

#[test]
fn shutdown_with_nothing_buffered_is_immediate() {
    let mut gw = Gateway::new();
    assert!(gw.root.on_done());
    assert!(flushes(&gw.world).is_empty());
}

#[test]
fn shutdown_drains_the_buffer_ignoring_the_backoff() {
    let mut gw = with_records(json!({"usage": {"max_batch": 2}}), 3);
    gw.root.on_tick();
    let first = flushes(&gw.world)[0].clone();
    answer(&mut gw, &first, Some("503"));
    assert!(!gw.root.on_done(), "waits for the last batch");
    let calls = flushes(&gw.world);
    assert_eq!(calls.len(), 2, "sent at once despite the backoff");
    answer(&mut gw, &calls[1].clone(), Some("200"));
    let calls = flushes(&gw.world);
    assert_eq!(calls.len(), 3, "then the rest");
    assert_eq!(gw.world.done_calls(), 0);
    answer(&mut gw, &calls[2].clone(), Some("200"));
    assert_eq!(gw.world.done_calls(), 1);
    assert_eq!(gw.world.metric("tollgate_usage_records_sent"), 3);
    assert_eq!(gw.world.metric("tollgate_usage_records_dropped"), 0);
}

#[test]
fn shutdown_with_a_batch_in_flight_waits_for_it() {
    let mut gw = with_records(json!({}), 2);
    gw.root.on_tick();
    assert!(!gw.root.on_done());
    assert_eq!(
        flushes(&gw.world).len(),
        1,
        "no second call while one is in flight"
    );
    let call = flushes(&gw.world)[0].clone();
    answer(&mut gw, &call, Some("200"));
    assert_eq!(gw.world.done_calls(), 1);
    assert!(gw.buffered().is_empty());
}

#[test]
fn shutdown_against_a_failing_sidecar_gives_up_and_counts_the_loss() {
    let mut gw = with_records(json!({}), 2);
    assert!(!gw.root.on_done());
    let call = flushes(&gw.world)[0].clone();
    answer(&mut gw, &call, None);
    assert_eq!(gw.world.done_calls(), 1);
    assert_eq!(gw.world.metric("tollgate_usage_records_dropped"), 2);
    assert_eq!(gw.world.metric("tollgate_usage_records_buffered"), 0);
    assert!(gw
        .world
        .logs(LogLevel::Warn)
        .iter()
        .any(|l| l.contains("before shutdown")));
}
