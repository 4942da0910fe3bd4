//! The limits step through flows and a root on the fake host: the first
//! grant of a cold key (asked only after the signature check; an ask
//! outlives its request), requests served from the budget with no call, a
//! spent quota and an empty bucket answered 429 with their headers, a
//! grant call without an answer failing closed, and the tick's asks ahead
//! and settlements.

use serde_json::{json, Value};
use tollgate_wire::grant::GRANTS_PATH;
use tollgate_wire::BudgetOwner;

use crate::fake_host::Sent;
use crate::testkit::{Gateway, Request, KEY};

const BODY: &[u8] = br#"{"text":"hello"}"#;

fn grant_calls(gw: &Gateway) -> Vec<Sent> {
    gw.world
        .sent()
        .into_iter()
        .filter(|s| s.header(":path") == Some(GRANTS_PATH))
        .collect()
}

/// A request of KEY whose verdict (cold) or cached verdict is in, its body
/// complete; `limits` is what the verify reply names.
fn request(gw: &Gateway, limits: &Value) -> Request {
    let mut r = gw.request(KEY, BODY, &[]);
    r.flow.on_request_headers(false);
    r.body(BODY, true);
    if r.awaiting() {
        let reply = json!({"verdict": "active", "key_id": 4, "limits": limits});
        r.answer(Some("200"), &reply.to_string());
    }
    r
}

/// Answers the grant call `call` asked, for its one ask.
fn answer_grant(r: &mut Request, call: &Sent, status: &str, amount: u64, charged: u64) {
    let ask: Value = serde_json::from_slice(&call.body).unwrap();
    let ask = &ask["asks"][0];
    let reply = json!({"limits": [], "returns": [], "settlements": [], "grants": [{
        "grant_id": ask["grant_id"], "status": status, "amount": amount,
        "limit": 3, "charged": charged,
        "window_start_ms": 1_767_225_600_000i64, "window_end_ms": 1_767_312_000_000i64,
    }]});
    let size = r
        .host
        .world()
        .answer(Some("200"), reply.to_string().as_bytes());
    r.flow.on_callout_reply(call.token, size);
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_cold_key_waits_for_its_first_grant_then_spends_it_without_a_call_and_a_spent_quota_is_429() {
    let gw = Gateway::new();
    let limits = json!({"quotas": [{"kind": "requests", "limit": 3, "window": "day"}]});
    let mut first = request(&gw, &limits);
    assert!(!first.allowed(), "waits for the grant");
    let calls = grant_calls(&gw);
    assert_eq!(calls.len(), 1);
    let ask: Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(ask["asks"][0]["key_id"], 4);
    assert_eq!(ask["asks"][0]["quota"], "requests");
    assert_eq!(ask["asks"][0]["need"], 1);
    answer_grant(&mut first, &calls[0], "granted", 2, 2);
    assert!(first.allowed());
    first.respond("200", 10);
    let ratelimit = first.host.response_header_value("ratelimit").unwrap();
    assert_eq!(ratelimit, "\"requests\";r=2;t=86400", "3 less the one used");

    let second = request(&gw, &limits);
    assert!(second.allowed(), "served from the grant");
    assert_eq!(grant_calls(&gw).len(), 1, "with no call");

    let mut third = request(&gw, &limits);
    let calls = grant_calls(&gw);
    assert_eq!(calls.len(), 2);
    answer_grant(&mut third, &calls[1], "exhausted", 0, 3);
    let reply = third.reply().unwrap();
    assert_eq!(
        (reply.status, reply.code()),
        (429, "quota_exceeded".to_string())
    );
    assert_eq!(header(&reply.headers, "retry-after"), Some("86400"));
    assert_eq!(
        header(&reply.headers, "ratelimit-policy"),
        Some("\"requests\";q=3;w=86400")
    );
    assert_eq!(
        header(&reply.headers, "ratelimit"),
        Some("\"requests\";r=0;t=86400")
    );
    let fourth = request(&gw, &limits);
    assert_eq!(fourth.code(), "quota_exceeded", "no call once spent");
    assert_eq!(grant_calls(&gw).len(), 2);
}

#[test]
fn an_empty_bucket_is_429_rate_limited_with_retry_after() {
    let gw = Gateway::new();
    let limits = json!({"rate": {"count": 2, "per": "s", "burst": 2}});
    assert!(request(&gw, &limits).allowed());
    assert!(request(&gw, &limits).allowed());
    let third = request(&gw, &limits);
    let reply = third.reply().unwrap();
    assert_eq!(
        (reply.status, reply.code()),
        (429, "rate_limited".to_string())
    );
    assert_eq!(header(&reply.headers, "retry-after"), Some("1"));
    assert_eq!(
        header(&reply.headers, "ratelimit-policy"),
        Some("\"rate\";q=2;w=1")
    );
    gw.world.advance_ms(500);
    assert!(request(&gw, &limits).allowed(), "a token every 500 ms");
    assert!(grant_calls(&gw).is_empty(), "a rate needs no call");
}

#[test]
fn a_wall_clock_stepped_back_or_forward_neither_stalls_nor_fills_the_bucket() {
    let gw = Gateway::new();
    let limits = json!({"rate": {"count": 2, "per": "s", "burst": 2}});
    let start = gw.world.now_ms();
    assert!(request(&gw, &limits).allowed());
    assert!(request(&gw, &limits).allowed());
    gw.world.set_wall_ms(start - 3_600_000);
    gw.world.advance_ms(500);
    assert!(
        request(&gw, &limits).allowed(),
        "set back an hour, a token still comes in 500 ms"
    );
    gw.world.set_wall_ms(start + 3_600_000);
    assert!(
        !request(&gw, &limits).allowed(),
        "set forward an hour, no token came"
    );
}

#[test]
fn a_bucket_an_older_filter_stamped_restarts_once_and_refills() {
    use crate::host::Host as _;
    use crate::limits::{budget_key, Budget};

    let gw = Gateway::new();
    let limits = json!({"rate": {"count": 2, "per": "s", "burst": 2}});
    assert!(request(&gw, &limits).allowed());
    // The same budget as an older filter kept it: its bucket empty, its
    // stamp the wall clock's.
    let host = gw.world.root();
    let key = budget_key(BudgetOwner::Key(4));
    let bytes = host.shared_get(&key).unwrap().0.unwrap();
    let mut budget = Budget::decode(&bytes).unwrap();
    budget.tokens_milli = 0;
    let older = budget.encode_as_wall_stamped(gw.world.now_ms());
    host.shared_set(&key, &older, None).unwrap();
    gw.world.lose_races(u32::MAX);
    let refused = request(&gw, &limits).reply().unwrap();
    assert_eq!(
        (refused.status, refused.code()),
        (429, "rate_limited".to_string()),
        "a refusal whose restamp lost every race is still a refusal"
    );
    gw.world.lose_races(0);
    assert!(!request(&gw, &limits).allowed(), "an empty bucket");
    gw.world.advance_ms(500);
    assert!(
        request(&gw, &limits).allowed(),
        "restarted by the refusal, the bucket refills"
    );
}

#[test]
fn a_grant_call_without_an_answer_fails_closed() {
    let gw = Gateway::new();
    let limits = json!({"quotas": [{"kind": "requests", "limit": 3, "window": "day"}]});
    let mut r = request(&gw, &limits);
    let call = grant_calls(&gw).remove(0);
    let size = r.host.world().answer(None, b"");
    r.flow.on_callout_reply(call.token, size);
    assert_eq!(r.code(), "auth_unavailable");
    let mut again = request(&gw, &limits);
    let retry = grant_calls(&gw).remove(1);
    let (a, b): (Value, Value) = (
        serde_json::from_slice(&call.body).unwrap(),
        serde_json::from_slice(&retry.body).unwrap(),
    );
    assert_eq!(
        a["asks"][0]["grant_id"], b["asks"][0]["grant_id"],
        "the ask is sent again under its id, never charged twice"
    );
    answer_grant(&mut again, &retry, "granted", 1, 1);
    assert!(again.allowed());
}

#[test]
fn the_tick_settles_units_and_asks_ahead_of_need() {
    let mut gw = Gateway::new();
    let limits = json!({"quotas": [
        {"kind": "requests", "limit": 1000, "window": "day"},
        {"kind": "units", "limit": 100, "window": "hour"},
    ]});
    let mut r = request(&gw, &limits);
    let call = grant_calls(&gw).remove(0);
    answer_grant(&mut r, &call, "granted", 1, 1);
    assert!(r.allowed());
    r.host.set_response_header("x-usage-units", "42");
    r.respond("200", 10);
    assert_eq!(
        gw.buffered()[0].units,
        42,
        "the usage row carries the units"
    );
    gw.world.advance_ms(1000);
    gw.root.on_tick();
    let calls = grant_calls(&gw);
    assert_eq!(calls.len(), 2, "one call on the tick");
    let tick: Value = serde_json::from_slice(&calls[1].body).unwrap();
    assert_eq!(tick["settlements"][0]["quota"], "units");
    assert_eq!(tick["settlements"][0]["amount"], 42);
    assert_eq!(
        tick["asks"][0]["quota"], "requests",
        "asks ahead: held < demand"
    );
    assert_eq!(tick["asks"][0]["need"], 0);
    let reply = json!({"limits": [], "returns": [], "grants": [{
        "grant_id": tick["asks"][0]["grant_id"], "status": "granted", "amount": 10,
        "limit": 1000, "charged": 11,
        "window_start_ms": 1_767_225_600_000i64, "window_end_ms": 1_767_312_000_000i64,
    }], "settlements": [{
        "settlement_id": tick["settlements"][0]["settlement_id"], "status": "granted",
        "limit": 100, "charged": 100, "open": false,
        "window_start_ms": 1_767_225_600_000i64, "window_end_ms": 1_767_229_200_000i64,
    }]});
    let size = gw.world.answer(Some("200"), reply.to_string().as_bytes());
    gw.root.on_callout_reply(calls[1].token, size);
    let closed = request(&gw, &limits);
    assert_eq!(
        closed.code(),
        "quota_exceeded",
        "the units quota is spent fleet-wide"
    );
    assert_eq!(grant_calls(&gw).len(), 2);
}

#[test]
fn a_cold_keys_verify_call_asks_for_no_grant_and_a_bad_signature_charges_nothing() {
    let mut gw = Gateway::new();
    let limits = json!({"quotas": [{"kind": "requests", "limit": 100, "window": "day"}]});
    let token = crate::testkit::sign_with("not the secret", &gw.claims(BODY));
    let mut r = gw.request_with_token(KEY, &token, &[]);
    r.flow.on_request_headers(false);
    r.body(BODY, true);
    let verify: Value = serde_json::from_slice(&gw.verify_calls()[0].body).unwrap();
    assert_eq!(
        verify.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["key_hash"],
        "the verify call asks for nothing but the verdict"
    );
    let reply = json!({"verdict": "active", "key_id": 4, "limits": limits});
    r.answer(Some("200"), &reply.to_string());
    assert_eq!(r.code(), "invalid_signature");
    gw.world.advance_ms(1000);
    gw.root.on_tick();
    assert!(
        grant_calls(&gw).is_empty(),
        "no grant is asked for a request that failed its signature check"
    );
    // The key's own request asks for its first grant.
    let mut good = request(&gw, &limits);
    assert_eq!(grant_calls(&gw).len(), 1);
    let call = grant_calls(&gw).remove(0);
    answer_grant(&mut good, &call, "granted", 5, 5);
    assert!(good.allowed());
}

/// What the sidecar charged for an ask is never lost with the request that
/// waited on it: the ask stays in the budget under its id, and the tick
/// sends it again until its answer is taken in. `lose` ends the waiting
/// request: its stream reset before the answer, or the answer too late.
fn an_ask_outlives_its_request(lose: impl Fn(&mut Request, &Sent)) {
    let mut gw = Gateway::new();
    let limits = json!({"quotas": [{"kind": "requests", "limit": 3, "window": "day"}]});
    let mut r = request(&gw, &limits);
    let call = grant_calls(&gw).remove(0);
    lose(&mut r, &call);
    gw.world.advance_ms(1000);
    gw.root.on_tick();
    assert_eq!(
        grant_calls(&gw).len(),
        1,
        "resent only once its timeout passed"
    );
    gw.world.advance_ms(1000);
    gw.root.on_tick();
    let calls = grant_calls(&gw);
    assert_eq!(calls.len(), 2, "the tick sends the ask again");
    let (first, resent): (Value, Value) = (
        serde_json::from_slice(&call.body).unwrap(),
        serde_json::from_slice(&calls[1].body).unwrap(),
    );
    assert_eq!(
        first["asks"][0]["grant_id"], resent["asks"][0]["grant_id"],
        "under its id: the sidecar answers it as it answered the first"
    );
    let reply = json!({"limits": [], "returns": [], "settlements": [], "grants": [{
        "grant_id": resent["asks"][0]["grant_id"], "status": "granted", "amount": 2,
        "limit": 3, "charged": 2,
        "window_start_ms": 1_767_225_600_000i64, "window_end_ms": 1_767_312_000_000i64,
    }]});
    let size = gw.world.answer(Some("200"), reply.to_string().as_bytes());
    gw.root.on_callout_reply(calls[1].token, size);
    assert!(request(&gw, &limits).allowed(), "served from the grant");
    assert!(request(&gw, &limits).allowed(), "both of its requests");
    assert_eq!(grant_calls(&gw).len(), 2, "with no call");
}

#[test]
fn an_ask_whose_request_was_reset_is_taken_in_on_the_tick() {
    an_ask_outlives_its_request(|r, _| r.flow.on_log());
}

#[test]
fn an_ask_answered_after_its_request_gave_up_is_taken_in_on_the_tick() {
    an_ask_outlives_its_request(|r, call| {
        let size = r.host.world().answer(None, b"");
        r.flow.on_callout_reply(call.token, size);
        assert_eq!(r.code(), "auth_unavailable");
    });
}

/// A request of KEY in team 9: the verify reply names the key's limits
/// (`own`, none when null) and the team's.
fn team_request(gw: &Gateway, own: &Value, team: &Value) -> Request {
    let mut r = gw.request(KEY, BODY, &[]);
    r.flow.on_request_headers(false);
    r.body(BODY, true);
    if r.awaiting() {
        let mut reply =
            json!({"verdict": "active", "key_id": 4, "team_id": 9, "team_limits": team});
        if !own.is_null() {
            reply["limits"] = own.clone();
        }
        r.answer(Some("200"), &reply.to_string());
    }
    r
}

#[test]
fn a_teams_budget_is_asked_for_the_team_and_its_refusal_names_the_team_and_gives_the_keys_charge_back(
) {
    use crate::host::Host as _;
    use crate::limits::{budget_key, Budget};

    let gw = Gateway::new();
    let own = json!({"quotas": [{"kind": "requests", "limit": 100, "window": "day"}]});
    let team = json!({"quotas": [{"kind": "requests", "limit": 3, "window": "day"}]});
    // The key's own grant first, then the team's.
    let mut first = team_request(&gw, &own, &team);
    let calls = grant_calls(&gw);
    assert_eq!(calls.len(), 1);
    let ask: Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(
        (
            ask["asks"][0]["key_id"].clone(),
            ask["asks"][0].get("team_id")
        ),
        (json!(4), None)
    );
    answer_grant(&mut first, &calls[0], "granted", 10, 10);
    let calls = grant_calls(&gw);
    assert_eq!(calls.len(), 2, "then the team's budget asks");
    let ask: Value = serde_json::from_slice(&calls[1].body).unwrap();
    assert_eq!(ask["asks"][0]["team_id"], 9);
    assert_eq!(ask["asks"][0]["key_id"], 0);
    answer_grant(&mut first, &calls[1], "granted", 1, 1);
    assert!(first.allowed());

    let held = |owner| {
        let bytes = gw
            .world
            .root()
            .shared_get(&budget_key(owner))
            .unwrap()
            .0
            .unwrap();
        Budget::decode(&bytes).unwrap().quotas[0].held
    };
    assert_eq!(held(BudgetOwner::Key(4)), 9);
    assert_eq!(held(BudgetOwner::Team(9)), 0);

    // The team's quota is spent: 429 naming the team, and the key's own
    // charge goes back.
    let mut second = team_request(&gw, &own, &team);
    let calls = grant_calls(&gw);
    assert_eq!(calls.len(), 3);
    answer_grant(&mut second, &calls[2], "exhausted", 0, 3);
    let reply = second.reply().unwrap();
    assert_eq!(
        (reply.status, reply.code()),
        (429, "quota_exceeded".to_string())
    );
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("team"), "{message}");
    assert_eq!(
        header(&reply.headers, "ratelimit"),
        Some("\"team.requests\";r=0;t=86400")
    );
    assert_eq!(held(BudgetOwner::Key(4)), 9, "the key's charge came back");
}

#[test]
fn a_key_without_limits_of_its_own_is_charged_to_its_teams_budget_alone() {
    let gw = Gateway::new();
    let team = json!({"rate": {"count": 1, "per": "s", "burst": 1}});
    assert!(team_request(&gw, &Value::Null, &team).allowed());
    let second = team_request(&gw, &Value::Null, &team);
    let reply = second.reply().unwrap();
    assert_eq!(
        (reply.status, reply.code()),
        (429, "rate_limited".to_string())
    );
    assert_eq!(
        header(&reply.headers, "ratelimit-policy"),
        Some("\"team.rate\";q=1;w=1")
    );
    assert!(grant_calls(&gw).is_empty());
}
