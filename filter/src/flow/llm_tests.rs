//! LLM calls through the whole flow on the fake host: what the upstream
//! gets, what the client gets back, and what is metered.

use serde_json::{json, Value};
use tollgate_wire::{Api, UsageSource};

use crate::testkit::{Gateway, Request, KEY};

/// A gateway that takes LLM-sized bodies.
fn gateway() -> Gateway {
    Gateway::with(json!({"max_body_bytes": 4096}))
}

const CHAT: &str = "/v1/chat/completions";

fn llm_request(gw: &Gateway, path: &str, body: &[u8]) -> Request {
    let mut r = gw.request(KEY, body, &[(":path", path)]);
    r.flow.on_request_headers(false);
    r.body(body, true);
    if r.awaiting() {
        r.answer_active(7);
    }
    r
}

fn chunk(data: &Value) -> String {
    format!("data: {data}\n\n")
}

#[test]
fn a_chat_stream_is_asked_for_its_usage_and_the_client_never_sees_the_usage_chunk() {
    let gw = gateway();
    let body = br#"{"model":"m","stream":true,"messages":[]}"#;
    let mut r = llm_request(&gw, CHAT, body);
    assert!(r.allowed(), "{:?}", r.reply());
    let forwarded: Value = serde_json::from_slice(&r.host.body()).unwrap();
    assert_eq!(forwarded["stream_options"]["include_usage"], true);

    let text = chunk(&json!({"choices": [{"index": 0, "delta": {"content": "hello"}}]}));
    let usage = chunk(&json!({"choices": [], "usage": {
        "prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}));
    let done = "data: [DONE]\n\n";
    let passed = r.respond_with("200", &[text.as_bytes(), usage.as_bytes(), done.as_bytes()]);
    assert_eq!(passed[0], text.as_bytes(), "a chunk passes as it arrives");
    assert!(
        passed[1].is_empty(),
        "the usage-only chunk is kept from the client"
    );
    assert_eq!(passed[2], done.as_bytes());

    let records = gw.buffered();
    let llm = records[0].llm.as_ref().expect("an LLM row");
    assert_eq!(
        (llm.api, llm.model.as_str(), llm.streamed),
        (Api::OpenAiChat, "m", true)
    );
    assert_eq!(llm.usage_source, UsageSource::Reported);
    assert_eq!((llm.tokens.input_tokens, llm.tokens.output_tokens), (9, 2));
}

#[test]
fn a_stream_cut_before_its_usage_is_estimated_from_what_was_delivered() {
    let gw = gateway();
    let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
    let mut r = llm_request(&gw, CHAT, body);
    assert!(r.allowed(), "{:?}", r.reply());
    assert_eq!(
        r.host.body(),
        body,
        "a client that asked for usage is forwarded as it sent"
    );
    let text = chunk(&json!({"choices": [{"index": 0, "delta": {"content": "a".repeat(40)}}]}));
    r.host.set_response_header(":status", "200");
    r.flow.on_response_headers();
    let size = r.host.push_response_chunk(text.as_bytes());
    r.flow.on_response_body(size, false);
    r.flow.on_log();
    let llm = gw.buffered()[0].llm.clone().unwrap();
    assert_eq!(llm.usage_source, UsageSource::Estimated);
    assert!(llm.tokens.output_tokens >= 10, "{llm:?}");
    assert_eq!(gw.world.metric("tollgate_llm_usage_estimated"), 1);
}

#[test]
fn a_whole_answer_is_metered_from_its_usage_and_an_error_without_one_as_zero() {
    let gw = gateway();
    let body = br#"{"model":"claude","max_tokens":5,"messages":[]}"#;
    let mut r = llm_request(&gw, "/v1/messages", body);
    let answer = json!({"type": "message", "content": [{"type": "text", "text": "hi"}],
                        "usage": {"input_tokens": 4, "output_tokens": 1,
                                  "cache_read_input_tokens": 2}});
    r.respond_with("200", &[answer.to_string().as_bytes()]);
    let mut r2 = llm_request(&gw, "/v1/messages", body);
    r2.respond_with(
        "529",
        &[br#"{"type":"error","error":{"type":"overloaded_error"}}"#],
    );
    let records = gw.buffered();
    let first = records[0].llm.clone().unwrap();
    assert_eq!(
        (first.tokens.input_tokens, first.tokens.cached_input_tokens),
        (6, 2)
    );
    assert_eq!(
        (first.usage_source, first.streamed),
        (UsageSource::Reported, false)
    );
    let failed = records[1].llm.clone().unwrap();
    assert_eq!(failed.usage_source, UsageSource::Reported);
    assert_eq!(failed.tokens, Default::default());
}

#[test]
fn an_invalid_llm_request_is_refused_in_its_providers_shape_and_charged_nothing() {
    let gw = gateway();
    let body = br#"{"model":"m","stream":"yes"}"#;
    let r = llm_request(&gw, CHAT, body);
    let reply = r.reply().expect("a refusal");
    assert_eq!(reply.status, 400);
    let json: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(json["error"]["code"], "invalid_request");
    assert_eq!(json["error"]["param"], "stream");
    let gemini = llm_request(&gw, "/v1beta/models/g:generateContent", b"[1]");
    let json: Value = serde_json::from_slice(&gemini.reply().unwrap().body).unwrap();
    assert_eq!(json["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(json["error"]["details"][0]["reason"], "invalid_request");
}

#[test]
fn the_providers_key_header_carries_the_key_and_never_reaches_the_upstream() {
    let gw = gateway();
    let body = br#"{"model":"claude","max_tokens":5,"messages":[]}"#;
    let token = crate::testkit::sign(&gw.claims(body));
    let mut r = gw.request_with_token(
        KEY,
        &token,
        &[(":path", "/v1/messages"), ("x-api-key", KEY)],
    );
    // The testkit sends `Authorization` too: two credentials are refused.
    r.flow.on_request_headers(false);
    assert_eq!(r.code(), "invalid_api_key");
    let json: Value = serde_json::from_slice(&r.reply().unwrap().body).unwrap();
    assert_eq!(json["type"], "error");
    assert_eq!(json["error"]["type"], "authentication_error");
}

#[test]
fn a_line_over_the_parsers_cap_is_skipped_and_counted_and_the_stream_still_passes() {
    let gw = gateway();
    let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
    let mut r = llm_request(&gw, CHAT, body);
    let long = format!("data: {}\n\n", "x".repeat(70 * 1024));
    let usage = chunk(&json!({"choices": [], "usage": {
        "prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}));
    let passed = r.respond_with("200", &[long.as_bytes(), usage.as_bytes()]);
    assert_eq!(
        passed[0],
        long.as_bytes(),
        "the long line reaches the client untouched"
    );
    assert_eq!(gw.world.metric("tollgate_llm_lines_skipped"), 1);
    let llm = gw.buffered()[0].llm.clone().unwrap();
    assert_eq!(llm.usage_source, UsageSource::Reported);
}

/// A gateway whose default output cap is 50, its key limited to
/// `tokens=100000/day` (the verify reply names it).
fn token_limited() -> Gateway {
    Gateway::with(json!({"max_body_bytes": 4096, "llm": {"default_output_cap": 50}}))
}

const TOKEN_LIMITS: &str = r#"{"quotas":[{"kind":"tokens","limit":100000,"window":"day"}]}"#;

/// An LLM call of the token-limited key: its verdict answered, and its
/// grant call answered with `amount` when it asks.
fn token_call(gw: &Gateway, body: &[u8], amount: u64) -> Request {
    let reply = format!(r#"{{"verdict":"active","key_id":4,"limits":{TOKEN_LIMITS}}}"#);
    limited_call(gw, body, &reply, "tokens", 100_000, amount)
}

/// An LLM call of key 4 whose verify reply is `verdict`, its one quota
/// `quota` of `limit` a day: its grant call answered with `amount` when it
/// asks.
fn limited_call(
    gw: &Gateway,
    body: &[u8],
    verdict: &str,
    quota: &str,
    limit: u64,
    amount: u64,
) -> Request {
    let mut r = gw.request(KEY, body, &[(":path", CHAT)]);
    r.flow.on_request_headers(false);
    r.body(body, true);
    if r.awaiting() {
        r.answer(Some("200"), verdict);
    }
    let waits_for_grant = matches!(r.flow.stage(), crate::flow::Stage::Waiting(_));
    if waits_for_grant {
        let call = gw.world.sent().pop().expect("a grant call");
        let ask: Value = serde_json::from_slice(&call.body).unwrap();
        let ask = &ask["asks"][0];
        assert_eq!(ask["quota"], quota);
        let end = gw.world.now_ms() as i64 / 86_400_000 * 86_400_000 + 86_400_000;
        let reply = json!({"limits": [], "returns": [], "settlements": [], "grants": [{
            "grant_id": ask["grant_id"], "status": "granted", "amount": amount,
            "limit": limit, "charged": amount,
            "window_start_ms": end - 86_400_000, "window_end_ms": end,
        }]});
        let size = r
            .host
            .world()
            .answer(Some("200"), reply.to_string().as_bytes());
        r.flow.on_callout_reply(call.token, size);
    }
    r
}

/// What this Envoy holds of the key's `tokens` quota.
fn tokens_held(gw: &Gateway) -> u64 {
    let bytes = gw
        .world
        .shared(&crate::limits::budget_key(crate::limits::BudgetOwner::Key(
            4,
        )))
        .unwrap();
    crate::limits::Budget::decode(&bytes).unwrap().quotas[0].held
}

#[test]
fn a_token_quota_reserves_the_bound_writes_the_default_cap_and_settles_to_the_usage() {
    let gw = token_limited();
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let bound = body.len() as u64 + 50;
    let mut r = token_call(&gw, body, 1000);
    assert!(r.allowed(), "{:?}", r.reply());
    let forwarded: Value = serde_json::from_slice(&r.host.body()).unwrap();
    assert_eq!(forwarded["max_completion_tokens"], 50, "the default cap");
    assert_eq!(
        r.host.request_header("content-length"),
        Some(r.host.body().len().to_string())
    );
    assert_eq!(tokens_held(&gw), 1000 - bound, "the bound is reserved");

    let answer = json!({"choices": [{"message": {"content": "a b c"}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}});
    r.respond_with("200", &[answer.to_string().as_bytes()]);
    assert_eq!(tokens_held(&gw), 1000 - 12, "the rest comes back");

    // The next call is served from what came back: no grant call.
    let sent = gw.world.sent().len();
    let capped = br#"{"model":"m","max_tokens":7,"messages":[]}"#;
    let r = token_call(&gw, capped, 0);
    assert!(r.allowed());
    assert_eq!(gw.world.sent().len(), sent, "no network call");
    let forwarded: Value = serde_json::from_slice(&r.host.body()).unwrap();
    assert_eq!(forwarded["max_tokens"], 7, "a cap of its own is kept");
    assert!(forwarded.get("max_completion_tokens").is_none());
    assert_eq!(tokens_held(&gw), 1000 - 12 - (capped.len() as u64 + 7));
}

#[test]
fn a_call_whose_cap_alone_passes_the_token_limit_is_refused_at_once() {
    let gw = token_limited();
    let body = br#"{"model":"m","max_tokens":100000,"messages":[]}"#;
    let r = token_call(&gw, body, 1000);
    assert_eq!(r.code(), "quota_exceeded");
    let reply = r.reply().unwrap();
    let text = String::from_utf8_lossy(&reply.body).to_string();
    assert!(text.contains("can never fit"), "{text}");
    assert!(gw
        .world
        .sent()
        .iter()
        .all(|s| s.header(":path") != Some(tollgate_wire::grant::GRANTS_PATH)));
}

#[test]
fn an_input_tokens_quota_alone_leaves_a_call_without_a_cap_as_it_is() {
    let gw = token_limited();
    let body = br#"{"model":"m","messages":[]}"#;
    let mut r = gw.request(KEY, body, &[(":path", CHAT)]);
    r.flow.on_request_headers(false);
    r.body(body, true);
    let limits = r#"{"quotas":[{"kind":"input_tokens","limit":100000,"window":"day"}]}"#;
    r.answer(
        Some("200"),
        &format!(r#"{{"verdict":"active","key_id":4,"limits":{limits}}}"#),
    );
    let call = gw.world.sent().pop().expect("a grant call");
    let ask: Value = serde_json::from_slice(&call.body).unwrap();
    let ask = &ask["asks"][0];
    let end = gw.world.now_ms() as i64 / 86_400_000 * 86_400_000 + 86_400_000;
    let reply = json!({"limits": [], "returns": [], "settlements": [], "grants": [{
        "grant_id": ask["grant_id"], "status": "granted", "amount": 1000,
        "limit": 100000, "charged": 1000,
        "window_start_ms": end - 86_400_000, "window_end_ms": end,
    }]});
    let size = r
        .host
        .world()
        .answer(Some("200"), reply.to_string().as_bytes());
    r.flow.on_callout_reply(call.token, size);
    assert!(r.allowed(), "{:?}", r.reply());
    assert_eq!(r.host.body(), body, "forwarded as it came");
}

/// A money-limited key (`cost=1USD/day`): its verify reply carries the
/// price table, model `m` at 2 and 10 micro-units a token (1 cached).
fn money_call(gw: &Gateway, body: &[u8], amount: u64) -> Request {
    let reply = json!({"verdict": "active", "key_id": 4,
        "limits": {"quotas": [{"kind": "cost", "limit": 1_000_000, "window": "day",
                                "currency": "USD"}]},
        "prices": [{"model": "m", "from_ms": 0, "currency": "USD", "per": 1,
                    "input_micros": 2, "cached_input_micros": 1, "output_micros": 10}]});
    limited_call(gw, body, &reply.to_string(), "cost", 1_000_000, amount)
}

#[test]
fn a_money_quota_reserves_the_bound_at_the_models_price_and_settles_to_the_rows_cost() {
    let gw = token_limited();
    let body = br#"{"model":"m","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}"#;
    // The bound: every body byte an input token at the dearer input price,
    // plus the cap at the output price.
    let bound = body.len() as u64 * 2 + 20 * 10;
    let mut r = money_call(&gw, body, 10_000);
    assert!(r.allowed(), "{:?}", r.reply());
    assert_eq!(tokens_held(&gw), 10_000 - bound, "the bound is reserved");
    let answer = json!({"choices": [{"message": {"content": "a b c"}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12,
                  "prompt_tokens_details": {"cached_tokens": 4}}});
    r.respond_with("200", &[answer.to_string().as_bytes()]);
    // 5 uncached x 2 + 4 cached x 1 + 3 output x 10 = 44 micro-units.
    assert_eq!(tokens_held(&gw), 10_000 - 44, "the rest comes back");
    // A model without a price costs nothing.
    let free = br#"{"model":"other","max_tokens":20,"messages":[]}"#;
    assert!(money_call(&gw, free, 0).allowed());
    assert_eq!(tokens_held(&gw), 10_000 - 44);
}
