//! The feed's state, its polls through a root on the fake host, and the
//! fleet `jti` claim through a flow.

use serde_json::json;
use tollgate_wire::{key_hash, key_hash_hex, CHANGES_PATH, JTI_CLAIM_PATH, VERIFY_PATH};

use super::*;
use crate::cache::CacheEntry;
use crate::fake_host::Sent;
use crate::root::Root;
use crate::testkit::{Gateway, KEY};

const POLICY: FeedPolicy = FeedPolicy {
    enabled: true,
    poll_interval_ms: 1_000,
    timeout_ms: 1_000,
    max_lag_ms: 5_000,
};

#[test]
fn the_state_round_trips_and_refuses_other_bytes() {
    let state = FeedState {
        cursor: Some(42),
        last_ok_ms: 1,
        in_flight_until_ms: 2,
        next_poll_ms: 3,
        published_lag_ms: 4,
    };
    assert_eq!(FeedState::decode(&state.encode()), Some(state));
    let none = FeedState::default();
    assert_eq!(FeedState::decode(&none.encode()), Some(none));
    let mut bytes = state.encode();
    bytes.pop();
    assert_eq!(FeedState::decode(&bytes), None);
    assert_eq!(FeedState::decode(&[]), None);
}

#[test]
fn the_feed_is_current_only_within_the_lag_bound() {
    let state = FeedState {
        cursor: Some(1),
        last_ok_ms: 10_000,
        ..FeedState::default()
    };
    assert!(state.is_current(&POLICY, 15_000));
    assert!(!state.is_current(&POLICY, 15_001));
    let off = FeedPolicy {
        enabled: false,
        ..POLICY
    };
    assert!(!state.is_current(&off, 10_000));
    let never = FeedState {
        cursor: Some(1),
        ..FeedState::default()
    };
    assert!(!never.is_current(&POLICY, 1));
    assert_eq!(never.lag_ms(99), 0);
    assert_eq!(state.lag_ms(12_500), 2_500);
}

#[test]
fn a_poll_waits_for_a_cursor_its_time_and_the_lease() {
    let mut state = FeedState::default();
    assert!(!state.poll_due(1));
    state.cursor = Some(0);
    assert!(state.poll_due(1));
    state.next_poll_ms = 5;
    assert!(!state.poll_due(4));
    state.in_flight_until_ms = 9;
    assert!(!state.poll_due(8));
    assert!(state.poll_due(9));
}

fn polls(gw: &Gateway) -> Vec<Sent> {
    gw.world
        .sent()
        .into_iter()
        .filter(|s| {
            s.header(":path")
                .is_some_and(|p| p.starts_with(CHANGES_PATH))
        })
        .collect()
}

fn answer_poll(gw: &mut Gateway, poll: &Sent, body: &str) {
    let size = gw.world.answer(Some("200"), body.as_bytes());
    gw.root.on_callout_reply(poll.token, size);
}

/// A gateway whose cache holds KEY as active, read at feed position 7.
fn cached_at_seven() -> Gateway {
    let gw = Gateway::new();
    assert!(verified_at(&gw, 7).allowed());
    gw
}

/// A request for KEY whose verdict the sidecar read at feed position `cursor`.
fn verified_at(gw: &Gateway, cursor: u64) -> crate::testkit::Request {
    let body = br#"{"text":"hi"}"#;
    let mut r = gw.request(KEY, body, &[]);
    r.flow.on_request_headers(false);
    r.body(body, true);
    let reply = json!({"verdict": "active", "key_id": 4, "feed_cursor": cursor});
    r.answer(Some("200"), &reply.to_string());
    r
}

/// KEY's entry in its cache slot, if the slot holds one.
fn cached_entry(gw: &Gateway) -> Option<CacheEntry> {
    let worker = gw.root.worker().unwrap();
    cache::read_slot(
        &gw.world.root(),
        &key_hash(KEY.as_bytes()),
        &worker.config().key_cache,
        worker.cache_key(),
    )
    .filter(|e| e.key_hash == key_hash(KEY.as_bytes()))
}

fn cached(gw: &Gateway) -> bool {
    cached_entry(gw).is_some()
}

#[test]
fn nothing_is_polled_before_a_verdict_names_a_position() {
    let mut gw = Gateway::new();
    gw.root.on_tick();
    assert!(polls(&gw).is_empty());
}

#[test]
fn a_revocation_in_the_feed_evicts_the_cached_verdict() {
    let mut gw = cached_at_seven();
    assert!(cached(&gw));
    gw.root.on_tick();
    let sent = polls(&gw);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].header(":path"),
        Some("/v1/internal/keys/changes?after=7&limit=500")
    );
    // Another worker's tick meanwhile does not poll: the lease is taken.
    let mut other = Root::new(gw.world.root());
    let size = gw.world.configure(&crate::testkit::config(json!({})));
    assert!(other.on_configure(size));
    other.on_tick();
    assert_eq!(polls(&gw).len(), 1);
    let change = json!({"cursor": 9, "changes": [
        {"cursor": 9, "key_hash": key_hash_hex(KEY.as_bytes()), "kind": "revoked"}
    ]});
    answer_poll(&mut gw, &sent[0], &change.to_string());
    assert!(!cached(&gw));
    assert_eq!(gw.world.metric("tollgate_key_feed_evictions"), 1);
    let state = read_state(&gw.world.root());
    assert_eq!(state.cursor, Some(9));
    // The next request for the key asks the sidecar again.
    let body = br#"{"text":"hi"}"#;
    let mut r = gw.request(KEY, body, &[]);
    r.flow.on_request_headers(false);
    assert!(r.awaiting());
}

#[test]
fn a_verdict_read_before_the_cursor_is_used_but_not_kept() {
    let mut gw = cached_at_seven();
    gw.root.on_tick();
    let sent = polls(&gw);
    answer_poll(&mut gw, &sent[0], r#"{"cursor":12,"changes":[]}"#);
    gw.world.advance_ms(400_000);
    // Read at 10: a change up to 12 may have been about this key.
    assert!(verified_at(&gw, 10).allowed());
    assert!(!cached(&gw));
}

#[test]
fn a_reset_drops_every_cached_verdict() {
    let mut gw = cached_at_seven();
    gw.root.on_tick();
    let sent = polls(&gw);
    answer_poll(
        &mut gw,
        &sent[0],
        r#"{"cursor":40,"changes":[],"reset":true}"#,
    );
    assert!(!cached(&gw));
    assert_eq!(gw.world.metric("tollgate_key_feed_resets"), 1);
    assert_eq!(read_state(&gw.world.root()).cursor, Some(40));
}

#[test]
fn a_failed_poll_leaves_the_cache_and_lets_the_feed_age() {
    let mut gw = cached_at_seven();
    gw.root.on_tick();
    let sent = polls(&gw);
    let size = gw.world.answer(Some("503"), b"");
    gw.root.on_callout_reply(sent[0].token, size);
    assert!(cached(&gw));
    assert_eq!(gw.world.metric("tollgate_key_feed_failures"), 1);
    // The lease is given back: the next due tick polls again.
    gw.world.advance_ms(1_000);
    gw.root.on_tick();
    assert_eq!(polls(&gw).len(), 2);
    // Never answered: past max_lag the feed is not current, and active
    // verdicts fall back to the unfed TTL (30 s).
    let worker = gw.root.worker().unwrap();
    gw.world.advance_ms(6_000);
    gw.root.on_tick();
    assert!(!worker.shared.feed_current());
}

#[test]
fn the_lag_gauge_follows_the_last_good_answer() {
    let mut gw = cached_at_seven();
    gw.root.on_tick();
    let sent = polls(&gw);
    answer_poll(&mut gw, &sent[0], r#"{"cursor":7,"changes":[]}"#);
    gw.world.advance_ms(2_500);
    gw.world.fail(crate::fake_host::Call::Dispatch);
    gw.root.on_tick();
    assert_eq!(gw.world.metric(crate::metrics::KEY_FEED_LAG_MS), 2_500);
}

fn fleet_request(gw: &Gateway, jti: &str) -> crate::testkit::Request {
    let body = br#"{"text":"hi"}"#;
    let mut claims = gw.claims(body);
    claims["jti"] = json!(jti);
    let token = crate::testkit::sign(&claims);
    let mut r = gw.request_with_token(KEY, &token, &[]);
    r.flow.on_request_headers(false);
    r.body(body, true);
    if r.awaiting() {
        r.answer_active(4);
    }
    r
}

fn claim_calls(gw: &Gateway) -> Vec<Sent> {
    gw.world
        .sent()
        .into_iter()
        .filter(|s| s.header(":path") == Some(JTI_CLAIM_PATH))
        .collect()
}

fn fleet_gateway() -> Gateway {
    Gateway::with(json!({"jwt": {"require_jti": true, "replay_scope": "fleet"}}))
}

#[test]
fn a_fleet_claim_lets_the_first_use_through_and_refuses_a_replay() {
    let gw = fleet_gateway();
    let mut first = fleet_request(&gw, "j-1");
    let calls = claim_calls(&gw);
    assert_eq!(calls.len(), 1);
    let sent: tollgate_wire::ClaimRequest = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!((sent.key_id, sent.fingerprint.len()), (4, 32));
    assert!(first.decision().is_none());
    let size = gw.world.answer(Some("200"), br#"{"claimed":true}"#);
    first.flow.on_callout_reply(calls[0].token, size);
    assert!(first.allowed());
    assert_eq!(first.host.resumed(), 1);

    // Another instance took j-2 already: this one's store lets it pass,
    // the fleet does not.
    let mut second = fleet_request(&gw, "j-2");
    let calls = claim_calls(&gw);
    let size = gw.world.answer(Some("200"), br#"{"claimed":false}"#);
    second.flow.on_callout_reply(calls[1].token, size);
    assert_eq!(second.code(), "replayed_token");
    // A replay on the same instance is refused by its own store, no call.
    let third = fleet_request(&gw, "j-1");
    assert_eq!(third.code(), "replayed_token");
    assert_eq!(claim_calls(&gw).len(), 2);
}

#[test]
fn a_lost_fleet_claim_fails_closed_and_gives_the_jti_back() {
    let gw = fleet_gateway();
    let mut r = fleet_request(&gw, "j-lost");
    let calls = claim_calls(&gw);
    let size = gw.world.answer(None, b"");
    r.flow.on_callout_reply(calls[0].token, size);
    assert_eq!(r.code(), "auth_unavailable");
    assert_eq!(gw.world.metric("tollgate_replay_fleet_failures"), 1);
    // The same token again is asked of the fleet, not refused here.
    let _again = fleet_request(&gw, "j-lost");
    assert_eq!(claim_calls(&gw).len(), 2);
}

#[test]
fn a_quick_verify_failure_is_sent_once_more() {
    let gw = Gateway::new();
    let body = br#"{"text":"hi"}"#;
    let mut r = gw.request(KEY, body, &[]);
    r.flow.on_request_headers(false);
    r.body(body, true);
    r.answer_once(None, "");
    assert!(r.awaiting());
    let verifies = gw
        .world
        .sent()
        .into_iter()
        .filter(|s| s.header(":path") == Some(VERIFY_PATH))
        .count();
    assert_eq!(verifies, 2);
    r.answer_active(4);
    assert!(r.allowed());
    assert_eq!(gw.world.metric("tollgate_verify_retries"), 1);
}

#[test]
fn a_change_the_verdict_already_reflects_does_not_evict_it() {
    // Read at 7: the key's own creation at 7 is in the verdict.
    let mut gw = cached_at_seven();
    gw.root.on_tick();
    let sent = polls(&gw);
    let created = json!({"cursor": 7, "changes": [
        {"cursor": 7, "key_hash": key_hash_hex(KEY.as_bytes()), "kind": "created"}
    ]});
    answer_poll(&mut gw, &sent[0], &created.to_string());
    assert!(cached(&gw));
    assert_eq!(gw.world.metric("tollgate_key_feed_evictions"), 0);
    let entry = cached_entry(&gw).unwrap();
    assert_eq!(entry.feed_position, Some(7));
    assert_eq!(CacheEntry::decode(&entry.encode()), Some(entry));
}
