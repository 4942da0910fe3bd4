//! The whole request flow through the fake host: what reaches the
//! upstream, what is answered, what is cached, claimed and metered.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::json;
use tollgate_wire::{key_hash, key_hash_hex, Outcome, VerifyRequest, INTERNAL_TOKEN_HEADER};

use crate::cache::{self, CacheEntry};
use crate::error::Denial;
use crate::fake_host::{Call, FakeWorld};
use crate::host::{Action, LogLevel};
use crate::metering::Decision;
use crate::replay::{
    encode_bucket, Entry, JtiClaim, ReplayPolicy, ReplayScope, BUCKET_ENTRIES, KEY_SHARE,
    SHARED_FROM,
};
use crate::testkit::{sign, sign_with, Gateway, Request, INTERNAL, KEY, SECRET};
use tollgate_wire::KeyVerdict;

const BODY: &[u8] = br#"{"text":"hi"}"#;

fn started(gw: &Gateway, body: &[u8]) -> Request {
    let mut r = gw.request(KEY, body, &[]);
    r.flow.on_request_headers(false);
    r
}

fn entry(verdict: KeyVerdict, key_id: Option<i64>, fetched_at_ms: u64) -> CacheEntry {
    CacheEntry {
        key_hash: key_hash(KEY.as_bytes()),
        verdict,
        key_id,
        expires_at_s: None,
        fetched_at_ms,
        signing_secret: None,
        feed_position: None,
        limited: false,
        team: None,
        priced: false,
    }
}

fn cache_entry(gw: &Gateway, e: &CacheEntry) {
    let worker = gw.root.worker().unwrap();
    let (policy, secret) = (&worker.config().key_cache, worker.cache_key());
    cache::write_slot(&gw.world.root(), e, policy, secret, gw.world.now_ms()).unwrap();
}

// --- the key verdict ----------------------------------------------------

#[test]
fn a_cold_key_is_verified_once_by_hash_then_served_from_the_cache() {
    let gw = Gateway::new();
    let first = gw.pass(KEY, 7);
    assert!(first.allowed());
    let calls = gw.verify_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    let sent: VerifyRequest = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(sent.key_hash, key_hash_hex(KEY.as_bytes()));
    assert!(!String::from_utf8_lossy(&call.body).contains(KEY));
    assert_eq!(call.header(INTERNAL_TOKEN_HEADER), Some(INTERNAL));
    assert_eq!(call.cluster, "tollgate_sidecar");
    assert_eq!(call.timeout_ms, 500);
    assert_eq!(
        call.header("x-request-id"),
        Some(first.flow.exchange().request_id.as_str())
    );
    assert_eq!(
        first.host.resumed(),
        1,
        "a callout answer resumes the request"
    );

    let second = gw.pass(KEY, 7);
    assert!(second.allowed());
    assert_eq!(
        gw.verify_calls().len(),
        1,
        "the second request is a cache hit"
    );
    assert_eq!(second.host.resumed(), 0, "decided in the callback itself");
    gw.root.publish_metrics();
    assert_eq!(gw.world.metric("tollgate_key_cache_miss"), 1);
    assert_eq!(gw.world.metric("tollgate_key_cache_hit"), 1);
    assert_eq!(gw.world.metric("tollgate_requests_allowed"), 2);
}

#[test]
fn the_upstream_gets_a_minted_request_id_and_the_key_id_but_no_credentials() {
    let gw = Gateway::new();
    let mut r = gw.request(KEY, BODY, &[("x-request-id", "chosen-by-client")]);
    r.flow.on_request_headers(false);
    r.body(BODY, true);
    r.answer_active(42);
    let id = r.host.request_header("x-request-id").unwrap();
    assert_ne!(id, "chosen-by-client");
    assert_eq!(id.len(), 32);
    assert_eq!(
        r.host.request_header("x-tollgate-key-id").as_deref(),
        Some("42")
    );
    assert_eq!(r.host.request_header("authorization"), None);
    assert_eq!(r.host.request_header("x-auth-token"), None);
}

#[test]
fn headers_the_gateway_speaks_with_are_stripped_from_every_request() {
    let gw = Gateway::new();
    let forged = [
        ("x-tollgate-key-id", "999"),
        ("x-tollgate-internal-token", "guess"),
        ("x-envoy-original-path", "/somewhere/else"),
        ("x-real-ip", "10.0.0.1"),
    ];
    // Denied in the header phase: nothing of the client's is left to log.
    let mut denied = gw.request_with_token(KEY, "not-a-token", &forged);
    denied.flow.on_request_headers(false);
    assert_eq!(denied.code(), "malformed_token");
    for (name, _) in forged {
        assert_eq!(denied.host.request_header(name), None, "{name}");
    }
    // Allowed: the key id is the filter's own.
    let mut allowed = gw.request(KEY, BODY, &forged);
    allowed.flow.on_request_headers(false);
    allowed.body(BODY, true);
    allowed.answer_active(5);
    assert_eq!(
        allowed.host.request_header("x-tollgate-key-id").as_deref(),
        Some("5")
    );
    assert_eq!(
        allowed.host.request_header("x-tollgate-internal-token"),
        None
    );
    assert_eq!(allowed.host.request_header("x-envoy-original-path"), None);
}

#[test]
fn a_revoked_key_is_refused_at_once_and_metered_against_its_id() {
    let gw = Gateway::new();
    let mut r = started(&gw, BODY);
    r.answer(Some("200"), r#"{"verdict":"revoked","key_id":9}"#);
    assert_eq!(r.code(), "revoked_api_key");
    assert_eq!(r.reply().unwrap().status, 403);
    assert_eq!(r.host.resumed(), 0);
    assert_eq!(
        r.body(BODY, true),
        Action::Pause,
        "the body changes nothing"
    );
    r.flow.on_log();
    let records = gw.buffered();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (
            records[0].api_key_id,
            records[0].outcome,
            records[0].status_code
        ),
        (9, Outcome::RevokedApiKey, 403)
    );
}

#[test]
fn an_unknown_key_is_cached_negatively_for_the_negative_ttl() {
    let gw = Gateway::new();
    let mut r = started(&gw, BODY);
    r.answer(Some("200"), r#"{"verdict":"not_found"}"#);
    assert_eq!(r.code(), "invalid_api_key");
    assert_eq!(r.reply().unwrap().status, 401);
    let again = started(&gw, BODY);
    assert_eq!(again.code(), "invalid_api_key");
    assert_eq!(
        gw.verify_calls().len(),
        1,
        "answered from the negative cache"
    );
    gw.world.advance_ms(5_000);
    let later = started(&gw, BODY);
    assert!(later.awaiting(), "the negative TTL is over");
}

#[test]
fn an_active_verdict_is_asked_again_after_the_positive_ttl() {
    let gw = Gateway::new();
    gw.pass(KEY, 3);
    gw.world.advance_ms(29_999);
    assert!(!started(&gw, BODY).awaiting());
    gw.world.advance_ms(1);
    assert!(started(&gw, BODY).awaiting());
}

#[test]
fn a_key_past_its_own_expiry_is_expired_even_when_cached_active() {
    let gw = Gateway::new();
    let expires_s = (gw.world.now_ms() / 1000 + 10) as i64;
    let mut r = started(&gw, BODY);
    r.answer(
        Some("200"),
        &format!(r#"{{"verdict":"active","key_id":5,"expires_at":{expires_s}}}"#),
    );
    r.body(BODY, true);
    assert!(r.allowed());
    gw.world.advance_ms(10_000);
    let late = started(&gw, BODY);
    assert_eq!(late.code(), "expired_api_key");
    assert_eq!(late.reply().unwrap().status, 403);
}

// --- when the sidecar gives no usable answer -----------------------------

#[test]
fn no_answer_and_no_cached_verdict_is_503() {
    let gw = Gateway::new();
    let mut r = started(&gw, BODY);
    r.answer(None, "");
    assert_eq!(r.code(), "auth_unavailable");
    assert_eq!(r.reply().unwrap().status, 503);
    assert!(!r.allowed());
    assert_eq!(gw.world.metric("tollgate_callout_failures"), 1);
    assert!(gw
        .world
        .logs(LogLevel::Warn)
        .iter()
        .any(|l| l.contains("no answer")));
}

#[test]
fn a_stale_active_verdict_within_stale_if_error_serves_when_the_sidecar_fails() {
    let gw = Gateway::new();
    gw.pass(KEY, 4);
    gw.world.advance_ms(31_000);
    let mut r = started(&gw, BODY);
    r.answer(Some("503"), r#"{"error":{}}"#);
    r.body(BODY, true);
    assert!(r.allowed());
    assert_eq!(
        r.host.request_header("x-tollgate-key-id").as_deref(),
        Some("4")
    );
    assert_eq!(gw.world.metric("tollgate_key_cache_stale"), 1);
    let warned = gw.world.logs(LogLevel::Warn);
    assert!(warned
        .iter()
        .any(|l| l.contains("status 503") && l.contains("stale")));
}

#[test]
fn a_verdict_older_than_stale_if_error_does_not_serve() {
    let gw = Gateway::new();
    gw.pass(KEY, 4);
    gw.world.advance_ms(300_000);
    let mut r = started(&gw, BODY);
    r.answer(None, "");
    assert_eq!(r.code(), "auth_unavailable");
    assert_eq!(gw.world.metric("tollgate_key_cache_stale"), 0);
}

#[test]
fn a_fresh_verdict_another_worker_wrote_meanwhile_comes_before_a_stale_one() {
    let gw = Gateway::new();
    let mut r = started(&gw, BODY);
    // While this call is in flight, another worker learns the key is revoked.
    cache_entry(&gw, &entry(KeyVerdict::Revoked, Some(4), gw.world.now_ms()));
    r.answer(Some("500"), "");
    assert_eq!(r.code(), "revoked_api_key");
    assert_eq!(gw.world.metric("tollgate_key_cache_stale"), 0);
}

#[test]
fn only_an_active_verdict_can_be_a_stale_fallback() {
    for verdict in [
        KeyVerdict::Revoked,
        KeyVerdict::NotFound,
        KeyVerdict::Expired,
    ] {
        let gw = Gateway::new();
        cache_entry(&gw, &entry(verdict, Some(4), gw.world.now_ms()));
        gw.world.advance_ms(10_000);
        let mut r = started(&gw, BODY);
        r.answer(None, "");
        assert_eq!(r.code(), "auth_unavailable", "{verdict:?}");
    }
}

#[test]
fn unreadable_or_impossible_answers_are_failures() {
    for (status, body, why) in [
        (Some("200"), "not json", "unreadable answer"),
        (Some("200"), r#"{"verdict":"active"}"#, "unreadable answer"),
        (
            Some("200"),
            r#"{"verdict":"maybe","key_id":1}"#,
            "unreadable answer",
        ),
        (Some("404"), "", "status 404"),
    ] {
        let gw = Gateway::new();
        let mut r = started(&gw, BODY);
        r.answer(status, body);
        assert_eq!(r.code(), "auth_unavailable", "{body}");
        assert!(
            gw.world
                .logs(LogLevel::Warn)
                .iter()
                .any(|l| l.contains(why)),
            "{why}"
        );
    }
}

#[test]
fn a_callout_that_cannot_be_sent_falls_back_like_a_failed_one() {
    let gw = Gateway::new();
    gw.pass(KEY, 6);
    gw.world.advance_ms(60_000);
    gw.world.fail(Call::Dispatch);
    let mut r = started(&gw, BODY);
    assert!(!r.awaiting());
    r.body(BODY, true);
    assert!(r.allowed(), "stale verdict");
    let other = gw.request("legacy-other-key", BODY, &[]);
    let mut other = other;
    other.flow.on_request_headers(false);
    assert_eq!(other.code(), "auth_unavailable");
}

#[test]
fn an_unknown_key_in_the_same_slot_cannot_evict_a_cached_good_key() {
    // One slot: every key collides, the worst an attacker could arrange.
    let gw = Gateway::with(json!({"key_cache": {"slots": 1}}));
    gw.pass(KEY, 4);
    let mut unknown = gw.request("legacy-unknown-key", BODY, &[]);
    unknown.flow.on_request_headers(false);
    unknown.answer(Some("200"), r#"{"verdict":"not_found"}"#);
    assert_eq!(unknown.code(), "invalid_api_key");
    // The sidecar goes away: the good key still passes from its entry.
    gw.world.advance_ms(31_000);
    let mut r = started(&gw, BODY);
    r.answer(None, "");
    r.body(BODY, true);
    assert!(r.allowed(), "{:?}", r.code());
}

#[test]
fn a_reply_for_a_request_that_already_ended_is_ignored() {
    let gw = Gateway::new();
    let mut r = started(&gw, BODY);
    let token = r.callout();
    r.flow.on_log();
    let size = gw
        .world
        .answer(Some("200"), br#"{"verdict":"active","key_id":1}"#);
    r.flow.on_callout_reply(token, size);
    assert_eq!(r.host.resumed(), 0);
    assert!(r.reply().is_none());
    assert!(
        gw.buffered().is_empty(),
        "an undecided request is not metered"
    );
}

#[test]
fn a_reply_to_another_call_is_ignored() {
    let gw = Gateway::new();
    let mut r = started(&gw, BODY);
    let token = r.callout();
    let size = gw
        .world
        .answer(Some("200"), br#"{"verdict":"active","key_id":1}"#);
    r.flow.on_callout_reply(token + 100, size);
    assert!(r.awaiting());
    r.answer_active(1);
    assert!(!r.awaiting());
}

// --- the body -------------------------------------------------------------

#[test]
fn a_body_that_arrives_before_the_verdict_is_decided_by_it() {
    let gw = Gateway::new();
    let mut r = started(&gw, BODY);
    assert_eq!(r.body(BODY, true), Action::Pause);
    assert_eq!(r.decision(), None);
    r.answer_active(2);
    assert_eq!(r.decision(), Some(Decision::Allowed(2)));
    assert_eq!(r.host.resumed(), 1);
}

#[test]
fn a_chunked_body_is_hashed_as_it_comes_and_counted() {
    let gw = Gateway::new();
    gw.pass(KEY, 1);
    let body = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut r = started(&gw, body);
    assert_eq!(r.body(&body[..5], false), Action::Pause);
    assert_eq!(r.body(&body[5..20], false), Action::Pause);
    assert_eq!(r.body(&body[20..], true), Action::Continue);
    assert_eq!(r.flow.exchange().request_bytes, body.len() as u64);
}

#[test]
fn a_body_that_differs_from_the_signed_one_is_refused_once_the_key_is_known() {
    let gw = Gateway::new();
    let mut r = started(&gw, b"signed");
    r.body(b"sent!!", true);
    assert_eq!(r.decision(), None, "waits for the verdict");
    r.answer_active(3);
    assert_eq!(r.code(), "body_hash_mismatch");
    assert_eq!(r.flow.exchange().key_id, Some(3));
}

#[test]
fn a_body_over_the_limit_in_chunks_is_413_at_the_chunk_that_crosses_it() {
    let gw = Gateway::new();
    gw.pass(KEY, 1);
    let mut r = started(&gw, &[b'a'; 65]);
    assert_eq!(r.body(&[b'a'; 40], false), Action::Pause);
    assert_eq!(
        r.body(&[b'a'; 24], false),
        Action::Pause,
        "64 bytes is the limit"
    );
    r.body(&[b'a'; 1], false);
    assert_eq!(r.code(), "payload_too_large");
    assert_eq!(r.reply().unwrap().status, 413);
    assert_eq!(
        r.body(&[b'a'; 1], true),
        Action::Pause,
        "nothing more is read"
    );
}

#[test]
fn a_declared_length_over_the_limit_is_413_before_any_body() {
    let gw = Gateway::new();
    let mut r = gw.request(KEY, BODY, &[("content-length", "65")]);
    r.flow.on_request_headers(false);
    assert_eq!(r.code(), "payload_too_large");
    assert!(gw.verify_calls().is_empty());
}

#[test]
fn an_empty_body_ends_with_the_headers_or_with_trailers() {
    let gw = Gateway::new();
    gw.pass(KEY, 1);
    let mut r = gw.request(KEY, b"", &[]);
    assert_eq!(r.flow.on_request_headers(true), Action::Continue);
    let mut t = gw.request(KEY, b"", &[]);
    t.flow.on_request_headers(false);
    assert_eq!(t.flow.on_request_trailers(), Action::Continue);
    assert!(r.allowed() && t.allowed());
}

// --- header checks ---------------------------------------------------------

#[test]
fn header_denials_answer_the_contract_error_without_a_callout() {
    let gw = Gateway::new();
    let host = gw.world.stream(&[(":method", b"POST"), (":path", b"/")]);
    let mut bare = Request {
        flow: gw.root.stream(host.clone()),
        host,
    };
    bare.flow.on_request_headers(false);
    assert_eq!(bare.code(), "missing_api_key");
    let reply = bare.reply().unwrap();
    assert!(reply
        .headers
        .contains(&("www-authenticate".into(), "Bearer".into())));
    assert!(reply
        .headers
        .contains(&("content-type".into(), "application/json".into())));
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["request_id"], bare.flow.exchange().request_id.as_str());

    // What needs no secret is refused at once: here an alg outside the policy.
    let mut unsigned = gw.request_with_token(KEY, "eyJhbGciOiJub25lIn0.e30.", &[]);
    unsigned.flow.on_request_headers(false);
    assert_eq!(unsigned.code(), "unsupported_algorithm");
    assert!(gw.verify_calls().is_empty());
    unsigned.flow.on_log();
    assert!(gw.buffered().is_empty(), "no key verdict, no usage record");
}

const OWN_SECRET: &str = "tgs_9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0";

/// Sends a request signed with `secret`; answers its verification call (if
/// any) with an active key 5 that has its own secret.
fn with_own_secret(gw: &Gateway, secret: &str) -> Request {
    let mut r = gw.request_with_token(KEY, &sign_with(secret, &gw.claims(BODY)), &[]);
    r.flow.on_request_headers(false);
    r.body(BODY, true);
    if r.awaiting() {
        r.answer(
            Some("200"),
            &format!(r#"{{"verdict":"active","key_id":5,"signing_secret":"{OWN_SECRET}"}}"#),
        );
    }
    r
}

#[test]
fn a_key_with_its_own_secret_takes_only_tokens_signed_with_it() {
    let gw = Gateway::new();
    assert!(with_own_secret(&gw, OWN_SECRET).allowed(), "uncached");
    assert_eq!(gw.verify_calls().len(), 1);
    // The verdict and its secret are cached: no second call.
    assert!(with_own_secret(&gw, OWN_SECRET).allowed(), "cached");
    let shared = with_own_secret(&gw, SECRET);
    assert_eq!(
        shared.code(),
        "invalid_signature",
        "the shared secret is refused"
    );
    assert_eq!(gw.verify_calls().len(), 1);
    // The same holds when the refusal comes with the verification call.
    let fresh = Gateway::new();
    assert_eq!(with_own_secret(&fresh, SECRET).code(), "invalid_signature");
    // A kid naming a shared secret changes nothing for such a key.
    let kid = Gateway::with(json!({"jwt": {"kid_secrets": {"k1": {"text": SECRET}}}}));
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"k1"}"#);
    let token = sign(&kid.claims(BODY));
    let (_, rest) = token.split_once('.').unwrap();
    let relabelled = format!("{header}.{rest}");
    let mut r = kid.request_with_token(KEY, &relabelled, &[]);
    r.flow.on_request_headers(false);
    r.body(BODY, true);
    r.answer(
        Some("200"),
        &format!(r#"{{"verdict":"active","key_id":5,"signing_secret":"{OWN_SECRET}"}}"#),
    );
    assert_eq!(r.code(), "invalid_signature");
    let logs = kid.world.logs(LogLevel::Info);
    assert!(!logs.iter().any(|l| l.contains(OWN_SECRET)), "{logs:?}");
}

/// The signature waits for the verdict, which names the secret; a forged
/// token is then refused before the verdict's own answer counts.
#[test]
fn a_forged_signature_is_refused_once_the_verdict_names_the_secret() {
    let gw = Gateway::new();
    let mut forged = gw.request_with_token(KEY, &format!("{}x", sign(&gw.claims(BODY))), &[]);
    forged.flow.on_request_headers(false);
    assert!(forged.awaiting());
    forged.answer(Some("200"), r#"{"verdict":"revoked","key_id":3}"#);
    assert_eq!(forged.code(), "invalid_signature", "the token comes first");
    assert_eq!(gw.verify_calls().len(), 1);
}

#[test]
fn an_unconfigured_worker_refuses_everything() {
    let world = FakeWorld::new();
    let mut root = crate::root::Root::new(world.root());
    let size = world.configure("{}");
    assert!(!root.on_configure(size));
    let host = world.stream(&[]);
    let mut flow = root.stream(host.clone());
    assert_eq!(flow.on_request_headers(true), Action::Pause);
    assert_eq!(host.reply().unwrap().code(), "auth_unavailable");
}

// --- replay protection -------------------------------------------------------

fn replay_gateway(world: FakeWorld) -> Gateway {
    Gateway::on(
        world,
        json!({"jwt": {"require_jti": true, "replay_slots": 32}}),
    )
}

fn with_jti(gw: &Gateway, jti: &str, body: &[u8]) -> Request {
    let mut claims = gw.claims(body);
    claims["jti"] = json!(jti);
    gw.request_with_token(KEY, &sign(&claims), &[])
}

/// Caches the key as active (through a request with its own jti).
fn warm(gw: &Gateway) {
    assert!(send(with_jti(gw, "warm-up", BODY), BODY).allowed());
}

fn send(mut r: Request, body: &[u8]) -> Request {
    r.flow.on_request_headers(false);
    r.body(body, true);
    if r.awaiting() {
        r.answer_active(1);
    }
    r
}

#[test]
fn a_jti_lets_one_request_through_and_refuses_the_second() {
    let gw = replay_gateway(FakeWorld::new());
    assert!(send(with_jti(&gw, "j-1", BODY), BODY).allowed());
    let again = send(with_jti(&gw, "j-1", BODY), BODY);
    assert_eq!(again.code(), "replayed_token");
    assert!(send(with_jti(&gw, "j-2", BODY), BODY).allowed());
}

#[test]
fn a_refused_request_does_not_use_its_jti_up() {
    let gw = replay_gateway(FakeWorld::new());
    let wrong_body = send(with_jti(&gw, "j-1", BODY), b"other");
    assert_eq!(wrong_body.code(), "body_hash_mismatch");
    assert!(send(with_jti(&gw, "j-1", BODY), BODY).allowed());
}

#[test]
fn a_claim_that_loses_a_race_to_another_jti_retries_and_keeps_both() {
    let world = FakeWorld::new();
    let gw = replay_gateway(world.clone());
    warm(&gw);
    let policy = ReplayPolicy {
        slots: 32,
        scope: ReplayScope::Instance,
    };
    let other = JtiClaim::new("other", i64::MAX, 0, &policy);
    let r = with_jti(&gw, "mine", BODY);
    let bucket = other.bucket_key.clone();
    world.before_next_write(move |w| {
        let current = w.shared(&bucket);
        let mut entries = current
            .map(|b| crate::replay::decode_bucket(&b).unwrap())
            .unwrap_or_default();
        entries.push(other.entry);
        let host = w.root();
        crate::host::Host::shared_set(&host, &bucket, &encode_bucket(&entries), None).unwrap();
    });
    let r = send(r, BODY);
    assert!(r.allowed());
    gw.root.publish_metrics();
    assert_eq!(world.metric("tollgate_replay_cas_retries"), 1);
    let stored = crate::replay::decode_bucket(&world.shared("tollgate.jti.0").unwrap()).unwrap();
    assert_eq!(stored.len(), 3, "warm-up, other, mine");
}

#[test]
fn a_claim_that_loses_the_race_to_the_same_jti_is_a_replay() {
    let world = FakeWorld::new();
    let gw = replay_gateway(world.clone());
    warm(&gw);
    let mut claims = gw.claims(BODY);
    claims["jti"] = json!("raced");
    let exp = claims["exp"].as_i64().unwrap();
    let same = JtiClaim::new(
        "raced",
        exp,
        30,
        &ReplayPolicy {
            slots: 32,
            scope: ReplayScope::Instance,
        },
    );
    world.before_next_write(move |w| {
        let host = w.root();
        assert_eq!(
            crate::replay::claim(&host, &same, exp).0,
            crate::replay::Claimed::Recorded
        );
    });
    let r = send(gw.request_with_token(KEY, &sign(&claims), &[]), BODY);
    assert_eq!(r.code(), "replayed_token");
}

/// A request Envoy answers itself for want of a route never reached an
/// upstream: its `jti` is given back. Any other answer keeps it used up.
#[test]
fn a_request_without_a_route_does_not_use_its_jti_up() {
    let world = FakeWorld::new();
    let gw = replay_gateway(world.clone());
    for (details, again) in [("route_not_found", true), ("via_upstream", false)] {
        let jti = format!("jti-{details}");
        let mut r = send(with_jti(&gw, &jti, BODY), BODY);
        assert!(r.allowed());
        r.host.set_code_details(details);
        r.respond("404", 0);
        let second = send(with_jti(&gw, &jti, BODY), BODY);
        assert_eq!(second.allowed(), again, "{details}: {}", second.code());
        if !again {
            assert_eq!(second.code(), "replayed_token");
        }
    }
}

/// Only a 404 can be Envoy's own answer for want of a route: any other
/// response keeps its `jti` used up without a property read.
#[test]
fn only_a_404_is_asked_why_it_was_answered() {
    let world = FakeWorld::new();
    let gw = replay_gateway(world.clone());
    for (status, reads) in [("200", 0), ("503", 0), ("404", 1)] {
        let mut r = send(with_jti(&gw, &format!("jti-{status}"), BODY), BODY);
        assert!(r.allowed());
        r.host.set_code_details("via_upstream");
        world.take_calls();
        r.respond(status, 0);
        let calls = world.take_calls();
        let asked = calls.iter().filter(|c| **c == Call::CodeDetails).count();
        assert_eq!(asked, reads, "status {status}: {calls:?}");
    }
}

#[test]
fn endless_contention_on_the_replay_store_fails_closed() {
    let world = FakeWorld::new();
    let gw = replay_gateway(world.clone());
    warm(&gw);
    world.lose_races(u32::MAX);
    let r = send(with_jti(&gw, "j", BODY), BODY);
    assert_eq!(r.code(), "auth_unavailable");
    assert!(world
        .logs(LogLevel::Warn)
        .iter()
        .any(|l| l.contains("contended")));
}

#[test]
fn a_full_replay_bucket_fails_closed_and_is_counted() {
    let world = FakeWorld::new();
    let gw = replay_gateway(world.clone());
    warm(&gw);
    let live: Vec<Entry> = (0..BUCKET_ENTRIES)
        .map(|i| Entry {
            fingerprint: [i as u8; 16],
            expires_at_s: i64::MAX,
            owner: 1000 + i as i64,
        })
        .collect();
    crate::host::Host::shared_set(&world.root(), "tollgate.jti.0", &encode_bucket(&live), None)
        .unwrap();
    let r = send(with_jti(&gw, "j", BODY), BODY);
    assert_eq!(r.reply().unwrap().status, 503);
    assert_eq!(r.code(), "replay_store_full");
    assert_eq!(world.metric("tollgate_replay_store_full"), 1);
}

#[test]
fn a_key_over_its_replay_share_is_refused_alone() {
    let world = FakeWorld::new();
    let gw = replay_gateway(world.clone());
    warm(&gw);
    // Half the bucket is live, and this key (id 1, as `send` answers) holds
    // its share of it: its next token is refused, 429.
    let live: Vec<Entry> = (0..SHARED_FROM)
        .map(|i| Entry {
            fingerprint: [i as u8; 16],
            expires_at_s: i64::MAX,
            owner: if i < KEY_SHARE { 1 } else { 1000 },
        })
        .collect();
    crate::host::Host::shared_set(&world.root(), "tollgate.jti.0", &encode_bucket(&live), None)
        .unwrap();
    let r = send(with_jti(&gw, "j", BODY), BODY);
    assert_eq!(r.reply().unwrap().status, 429);
    assert_eq!(r.code(), "too_many_live_tokens");
    assert_eq!(world.metric("tollgate_denied_too_many_live_tokens"), 1);
}

#[test]
fn an_unreadable_replay_bucket_fails_closed() {
    let world = FakeWorld::new();
    let gw = replay_gateway(world.clone());
    warm(&gw);
    crate::host::Host::shared_set(&world.root(), "tollgate.jti.0", &[9, 1, 2, 3], None).unwrap();
    let r = send(with_jti(&gw, "j", BODY), BODY);
    assert_eq!(r.code(), "auth_unavailable");
    assert!(world
        .logs(LogLevel::Error)
        .iter()
        .any(|l| l.contains("cannot be read")));
    // Nothing was forgotten: the bucket is as it was.
    assert_eq!(world.shared("tollgate.jti.0"), Some(vec![9, 1, 2, 3]));
}

// --- metering ------------------------------------------------------------------

#[test]
fn an_allowed_exchange_is_metered_with_the_upstream_status_and_sizes() {
    let gw = Gateway::new();
    let mut r = gw.pass(KEY, 8);
    gw.world.advance_ms(25);
    r.respond("201", 300);
    let records = gw.buffered();
    assert_eq!(records.len(), 1);
    let rec = &records[0];
    assert_eq!(rec.request_id, r.flow.exchange().request_id);
    assert_eq!(
        (rec.api_key_id, rec.status_code, rec.outcome),
        (8, 201, Outcome::Allowed)
    );
    assert_eq!(
        (rec.request_bytes, rec.response_bytes),
        (BODY.len() as u64, 300)
    );
    assert_eq!(
        (rec.method.as_str(), rec.endpoint.as_str()),
        ("POST", "/proxy/analyze")
    );
    assert_eq!(rec.duration_ms, 25);
    assert_eq!(gw.world.metric("tollgate_usage_records_buffered"), 1);
    r.flow.on_log();
    assert_eq!(gw.buffered().len(), 1, "metered once");
}

#[test]
fn a_client_that_leaves_before_the_response_is_metered_499() {
    let gw = Gateway::new();
    let mut r = gw.pass(KEY, 8);
    r.flow.on_log();
    assert_eq!(gw.buffered()[0].status_code, 499);
}

#[test]
fn a_full_usage_buffer_drops_the_newest_record_and_counts_it() {
    let gw = Gateway::with(json!({"usage": {"buffer_cap": 2}}));
    for _ in 0..3 {
        gw.pass(KEY, 1).flow.on_log();
    }
    assert_eq!(gw.buffered().len(), 2);
    assert_eq!(gw.world.metric("tollgate_usage_records_dropped"), 1);
    assert_eq!(gw.world.metric("tollgate_usage_records_buffered"), 2);
}

// --- a host call that fails, wherever it can --------------------------------------

/// Sends a valid request for a cold key with replay protection on, with
/// `call` failing throughout; returns it.
fn through_a_failing_host(call: Call, warm: bool) -> (Gateway, Request) {
    let world = FakeWorld::new();
    let gw = replay_gateway(world.clone());
    if warm {
        self::warm(&gw);
    }
    world.fail(call);
    let mut r = with_jti(&gw, "j-fail", BODY);
    r.flow.on_request_headers(false);
    r.body(BODY, true);
    if r.awaiting() {
        r.answer_active(1);
    }
    (gw, r)
}

#[test]
fn a_failing_host_call_never_lets_a_request_through_unchecked() {
    // Calls whose failure costs only an optimisation: the request is still
    // fully checked and passes.
    // A warm key makes no callout and needs no resume.
    let harmless = [Call::DefineMetric, Call::Random, Call::SendReply];
    let callout = [
        Call::Dispatch,
        Call::CalloutStatus,
        Call::CalloutBody,
        Call::Resume,
    ];
    for warm in [false, true] {
        for call in Call::STREAM {
            let (gw, r) = through_a_failing_host(call, warm);
            let upstream_key = r.host.request_header("x-tollgate-key-id");
            if harmless.contains(&call) || (warm && callout.contains(&call)) {
                assert!(r.allowed(), "{call:?} warm={warm}");
                assert_eq!(upstream_key.as_deref(), Some("1"));
                continue;
            }
            if call == Call::Resume {
                // Decided, but the host would not carry it on: it says so.
                assert!(gw
                    .world
                    .logs(LogLevel::Error)
                    .iter()
                    .any(|l| l.contains("resume")));
                continue;
            }
            assert!(!r.allowed(), "{call:?} warm={warm} let the request through");
            assert_eq!(r.host.resumed(), 0, "{call:?}");
            assert_eq!(r.code(), "auth_unavailable", "{call:?} warm={warm}");
            assert_eq!(
                r.decision(),
                Some(Decision::Denied(Denial::AuthUnavailable)),
                "{call:?}"
            );
        }
    }
}

#[test]
fn a_denial_that_cannot_be_sent_resets_the_stream() {
    let gw = Gateway::new();
    gw.world.fail(Call::SendReply);
    let mut r = gw.request(KEY, BODY, &[("content-length", "1000")]);
    assert_eq!(r.flow.on_request_headers(false), Action::Pause);
    assert!(r.host.was_reset());
    assert!(gw
        .world
        .logs(LogLevel::Error)
        .iter()
        .any(|l| l.contains("local reply")));
}

#[test]
fn a_failing_clock_in_the_callout_answer_fails_closed() {
    let gw = Gateway::new();
    let mut r = started(&gw, BODY);
    r.body(BODY, true);
    gw.world.fail(Call::Clock);
    r.answer_active(1);
    assert_eq!(r.code(), "auth_unavailable");
    assert_eq!(r.host.resumed(), 0);
}

// --- what a request costs its host --------------------------------------

/// The hot path's host calls, every one of them: a cached key's request
/// crosses into its host this often, and a change that adds a call shows
/// here (each costs more in the wasm build than most of the logic).
#[test]
fn a_cached_request_makes_these_host_calls_and_no_more() {
    let gw = Gateway::new();
    assert!(gw.pass(KEY, 7).allowed());
    let mut r = gw.request(KEY, BODY, &[]);
    gw.world.take_calls();
    r.flow.on_request_headers(false);
    r.body(BODY, true);
    assert!(r.allowed());
    r.respond("200", 10);
    use Call::*;
    let expected = [
        // Headers: the clock, one read of them all, x-request-id, the two
        // credentials stripped, the key cache's slot.
        Clock,
        RequestHeaders,
        SetHeader,
        RemoveHeader,
        RemoveHeader,
        SharedGet,
        // Body: one read of it whole, then the key id for the upstream.
        RequestBody,
        SetHeader,
        // Response: the status and the units header in one read (and no
        // property read unless the answer was a 404).
        ResponseHeaders,
        // End: the clock, and the buffered-records gauge (the counters are
        // summed in the worker and published on its tick).
        Clock,
        IncrementMetric,
    ];
    assert_eq!(gw.world.take_calls(), expected);
}
