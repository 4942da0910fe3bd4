//! Teams over the sidecar's API and its command line, against SQLite and
//! MySQL alike: creating, listing, limiting and deleting teams and their
//! refusals, a key's team in its views and in the verify reply, a team's
//! quota granted and settled in its own counters and shared by its keys,
//! the key change feed on a team's limits and a key's move, the counters
//! an older sidecar left kept by migration 0011, and the CLI.

#[macro_use]
mod support;

use std::process::{Command, Output};
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use sidecar::http::grants::answer;
use sidecar::store::{DatabaseTarget, Store};
use support::*;
use tollgate_wire::{
    changes_query, BudgetOwner, GrantAsk, GrantRequest, GrantReturn, GrantStatus, QuotaKind,
    INTERNAL_TOKEN_HEADER,
};

on_both_backends!(
    teams_are_created_listed_limited_and_deleted,
    bad_team_input_changes_nothing,
    the_verify_reply_carries_the_keys_team_and_its_limits,
    a_teams_grants_are_shared_by_its_keys_and_never_exceed_its_limit,
    a_teams_items_are_answered_in_its_own_counters,
    team_limits_and_key_moves_are_published_on_the_key_feed,
    counters_stored_before_teams_are_kept_as_the_keys,
    the_command_line_manages_teams,
);

async fn post(h: &Harness, path: &str, body: Value) -> Value {
    let reply = h.admin(Method::POST, path, Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json()
}

async fn put(h: &Harness, path: &str, body: Value) -> Value {
    let reply = h.admin(Method::PUT, path, Some(body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

/// Every change on the key change feed, as (hash, kind).
async fn feed(h: &Harness) -> Vec<(String, String)> {
    let reply = h
        .send(
            axum::http::Request::get(changes_query(0, 100))
                .header(INTERNAL_TOKEN_HEADER, INTERNAL_TOKEN)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .json();
    reply["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key_hash"].as_str().unwrap().to_owned(),
                c["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A fresh charge id: 32 lowercase hex digits, different for each `n`.
fn id(n: u64) -> String {
    format!("{n:032x}")
}

fn team_ask(grant_id: String, team_id: i64, need: u64, recent_use: u64) -> GrantAsk {
    GrantAsk {
        grant_id,
        key_id: 0,
        team_id: Some(team_id),
        quota: QuotaKind::Requests,
        model: None,
        need,
        recent_use,
    }
}

async fn teams_are_created_listed_limited_and_deleted(backend: Backend) {
    let h = Harness::new(backend).await;
    let team = post(
        &h,
        "/v1/teams",
        json!({"name": " research ", "rate": "10/s", "burst": 20, "quotas": ["tokens=1M/month"]}),
    )
    .await;
    let team_id = team["id"].as_i64().unwrap();
    assert_eq!(team["name"], "research");
    assert_eq!(
        team["limits"]["rate"],
        json!({"count": 10, "per": "s", "burst": 20})
    );
    assert_eq!(team["limits"]["quotas"][0]["kind"], "tokens");
    assert_eq!(
        team["limits"]["spec"],
        "rate=10/s burst=20 tokens=1000000/month"
    );
    assert_eq!(team["key_ids"], json!([]));
    assert!(team["created_at"].as_str().unwrap().ends_with('Z'));

    // Keys join at creation or by a move; their views say so.
    let a = post(&h, "/v1/keys", json!({"name": "a", "team_id": team_id})).await;
    assert_eq!(a["team_id"], team_id);
    let b = post(&h, "/v1/keys", json!({"name": "b"})).await;
    assert_eq!(b["team_id"], Value::Null);
    let b_id = b["id"].as_i64().unwrap();
    let moved = put(
        &h,
        &format!("/v1/keys/{b_id}/team"),
        json!({"team_id": team_id}),
    )
    .await;
    assert_eq!(moved["team_id"], team_id);
    let keys = h.admin(Method::GET, "/v1/keys", None).await.json();
    assert_eq!(keys["keys"][1]["team_id"], team_id);

    let path = format!("/v1/teams/{team_id}");
    let read = h.admin(Method::GET, &path, None).await.json();
    assert_eq!(read["key_ids"], json!([a["id"], b_id]));
    post(&h, "/v1/teams", json!({"name": "empty"})).await;
    let list = h.admin(Method::GET, "/v1/teams", None).await.json();
    let names: Vec<&str> = list["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["research", "empty"]);
    assert_eq!(list["teams"][0]["key_ids"].as_array().unwrap().len(), 2);
    assert_eq!(list["teams"][1]["limits"]["spec"], "");

    // Limits are replaced whole; `{}` clears them.
    let limited = put(
        &h,
        &format!("{path}/limits"),
        json!({"quotas": ["requests=50/day"]}),
    )
    .await;
    assert_eq!(limited["limits"]["spec"], "requests=50/day");
    assert_eq!(limited["limits"]["rate"], Value::Null);
    let cleared = put(&h, &format!("{path}/limits"), json!({})).await;
    assert_eq!(cleared["limits"]["quotas"], json!([]));

    // A team with keys stays; once they are out, it goes.
    let refused = h.admin(Method::DELETE, &path, None).await;
    let error = refused.expect_error(StatusCode::CONFLICT, "team_has_keys");
    assert!(
        error["message"].as_str().unwrap().contains("2 key(s)"),
        "{error}"
    );
    for key in [a["id"].as_i64().unwrap(), b_id] {
        let out = put(
            &h,
            &format!("/v1/keys/{key}/team"),
            json!({"team_id": null}),
        )
        .await;
        assert_eq!(out["team_id"], Value::Null);
    }
    let deleted = h.admin(Method::DELETE, &path, None).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text());
    h.admin(Method::GET, &path, None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "team_not_found");
    h.admin(Method::DELETE, &path, None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "team_not_found");
}

async fn bad_team_input_changes_nothing(backend: Backend) {
    let h = Harness::new(backend).await;
    let team = post(&h, "/v1/teams", json!({"name": "ops"})).await;
    let team_id = team["id"].as_i64().unwrap();
    for (body, field) in [
        (json!({"name": "  "}), "name"),
        (json!({"name": "a\u{202E}b"}), "name"),
        (json!({"name": "42"}), "name"),
        (json!({"name": "x", "quotas": ["requests=0/day"]}), "quota"),
        (json!({"name": "x", "burst": 5}), "burst"),
        (json!({"name": "x", "colour": "red"}), "colour"),
    ] {
        let reply = h.admin(Method::POST, "/v1/teams", Some(body.clone())).await;
        let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert!(
            error["field"].as_str().unwrap_or("").contains(field),
            "{body}: {error}"
        );
    }
    let duplicate = h
        .admin(Method::POST, "/v1/teams", Some(json!({"name": " ops"})))
        .await;
    let error = duplicate.expect_error(StatusCode::CONFLICT, "duplicate_team_name");
    assert_eq!(error["field"], "name");

    // A key naming no team is not created; a move to no team moves nothing.
    let reply = h
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "k", "team_id": 999})),
        )
        .await;
    let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(error["field"], "team_id");
    let keys = h.admin(Method::GET, "/v1/keys", None).await.json();
    assert_eq!(keys["keys"], json!([]));

    let key = post(&h, "/v1/keys", json!({"name": "k", "team_id": team_id})).await;
    let key_id = key["id"].as_i64().unwrap();
    let path = format!("/v1/keys/{key_id}/team");
    let reply = h
        .admin(Method::PUT, &path, Some(json!({"team_id": 999})))
        .await;
    let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(error["field"], "team_id");
    let reply = h.admin(Method::PUT, &path, Some(json!({}))).await;
    let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(
        error["field"], "team_id",
        "a forgotten field never moves a key"
    );
    let reply = h
        .admin(Method::PUT, &path, Some(json!({"team_id": "ops"})))
        .await;
    reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    h.admin(
        Method::PUT,
        "/v1/keys/999/team",
        Some(json!({"team_id": team_id})),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "key_not_found");
    h.admin(
        Method::PUT,
        "/v1/teams/999/limits",
        Some(json!({"rate": "1/s"})),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "team_not_found");
    let reply = h
        .admin(
            Method::PUT,
            &format!("/v1/teams/{team_id}/limits"),
            Some(json!({"quotas": ["tokens=5/fortnight"]})),
        )
        .await;
    reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    h.admin(Method::GET, "/v1/teams/x", None)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");

    let read = h
        .admin(Method::GET, &format!("/v1/teams/{team_id}"), None)
        .await
        .json();
    assert_eq!(read["key_ids"], json!([key_id]));
    assert_eq!(read["limits"]["spec"], "");
    let list = h.admin(Method::GET, "/v1/teams", None).await.json();
    assert_eq!(list["teams"].as_array().unwrap().len(), 1);
    // Without the admin token, nothing at all.
    let anonymous = h
        .send(
            axum::http::Request::get("/v1/teams")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

async fn the_verify_reply_carries_the_keys_team_and_its_limits(backend: Backend) {
    let h = Harness::new(backend).await;
    let team = post(
        &h,
        "/v1/teams",
        json!({"name": "t", "quotas": ["requests=100/day"]}),
    )
    .await;
    let team_id = team["id"].as_i64().unwrap();
    let bare = post(&h, "/v1/teams", json!({"name": "bare"})).await;
    let member = post(
        &h,
        "/v1/keys",
        json!({"name": "m", "team_id": team_id, "rate": "5/s"}),
    )
    .await;
    let in_bare = post(&h, "/v1/keys", json!({"name": "b", "team_id": bare["id"]})).await;
    let alone = post(&h, "/v1/keys", json!({"name": "a"})).await;

    let verdict = |key: &Value| hash_key(key["key"].as_str().unwrap());
    let reply = h.verify(&verdict(&member)).await.json();
    assert_eq!(reply["verdict"], "active");
    assert_eq!(reply["team_id"], team_id);
    assert_eq!(
        reply["team_limits"],
        json!({"rate": null, "quotas": [{"kind": "requests", "limit": 100, "window": "day"}]})
    );
    assert_eq!(reply["limits"]["rate"]["count"], 5);

    let reply = h.verify(&verdict(&in_bare)).await.json();
    assert_eq!(reply["team_id"], bare["id"]);
    assert!(reply.get("team_limits").is_none(), "{reply}");

    let reply = h.verify(&verdict(&alone)).await.json();
    assert!(reply.get("team_id").is_none(), "{reply}");
    assert!(reply.get("team_limits").is_none(), "{reply}");
    let unknown = h.verify(&hash_key("tg_nobody")).await.json();
    assert_eq!(unknown["verdict"], "not_found");
    assert!(unknown.get("team_id").is_none(), "{unknown}");
}

/// Two keys of one team, asking from three sidecars at once against the
/// team's `requests=300/day` (the keys' own quotas are larger): what the
/// team grants net of returns never passes 300 and is what its counter
/// holds; the keys' counters are untouched.
async fn a_teams_grants_are_shared_by_its_keys_and_never_exceed_its_limit(backend: Backend) {
    const LIMIT: u64 = 300;
    let h = Harness::new(backend).await;
    let team = post(
        &h,
        "/v1/teams",
        json!({"name": "shared", "quotas": ["requests=300/day"]}),
    )
    .await;
    let team_id = team["id"].as_i64().unwrap();
    let mut key_ids = Vec::new();
    for name in ["a", "b"] {
        let key = post(
            &h,
            "/v1/keys",
            json!({"name": name, "team_id": team_id, "quotas": ["requests=1000/day"]}),
        )
        .await;
        key_ids.push(key["id"].as_i64().unwrap());
    }
    let sidecars: Vec<Arc<Store>> = vec![
        Arc::new(h.db.store.clone()),
        Arc::new(h.db.observer().await),
        Arc::new(h.db.observer().await),
    ];
    let now_ms = now_ms() as i64;
    let mut tasks = Vec::new();
    for task in 0..12u64 {
        let store = sidecars[task as usize % sidecars.len()].clone();
        let key_id = key_ids[task as usize % 2];
        tasks.push(tokio::spawn(async move {
            let (mut granted, mut returned, mut own) = (0u64, 0u64, 0u64);
            let mut last: Option<(String, u64)> = None;
            for round in 0..200u64 {
                let n = task * 1000 + round;
                let returns = match last.take() {
                    Some((grant_id, amount)) if round % 3 == 2 && amount >= 2 => {
                        returned += amount / 2;
                        vec![GrantReturn {
                            grant_id,
                            unused: amount / 2,
                        }]
                    }
                    _ => Vec::new(),
                };
                // The key's own ask beside its team's, as the filter sends them.
                let mut key_ask = team_ask(id(2 * n + 1), 0, 1, 0);
                key_ask.key_id = key_id;
                key_ask.team_id = None;
                let request = GrantRequest {
                    returns,
                    asks: vec![team_ask(id(2 * n), team_id, 1, (n * 7) % 40), key_ask],
                    ..Default::default()
                };
                let reply = answer(&store, &request, now_ms).await.expect("grant");
                let [t, k] = &reply.grants[..] else {
                    panic!("two answers")
                };
                assert!(t.charged <= LIMIT, "{t:?}");
                assert_eq!(t.limit, LIMIT, "the team's quota sized the grant");
                assert_eq!(k.limit, 1000, "the key's own quota");
                granted += t.amount;
                own += k.amount;
                last = Some((t.grant_id.clone(), t.amount));
                if t.status == GrantStatus::Exhausted {
                    break;
                }
            }
            (granted, returned, own)
        }));
    }
    let (mut granted, mut returned, mut own) = (0, 0, 0);
    for task in tasks {
        let (g, r, o) = task.await.expect("task");
        granted += g;
        returned += r;
        own += o;
    }
    assert!(returned > 0, "some team grants were given back");
    assert!(granted >= LIMIT, "{granted} granted in all");
    let net = granted - returned;
    assert!(net <= LIMIT, "{net} granted net of returns");
    let span = tollgate_wire::Window::Day.containing(now_ms);
    let store = &h.db.store;
    assert_eq!(
        store
            .owner_charged_in(BudgetOwner::Team(team_id), "requests", span.start_ms)
            .await
            .unwrap(),
        net,
        "the team's counter holds what was granted net of returns"
    );
    let mut keys_charged = 0;
    for &key_id in &key_ids {
        keys_charged += store
            .charged_in(key_id, "requests", span.start_ms)
            .await
            .unwrap();
    }
    assert_eq!(
        keys_charged, own,
        "the keys' counters count their own asks only"
    );
    // No key (and no team) has id 0: nothing of the team's is a key's.
    assert_eq!(
        store
            .charged_in(0, "requests", span.start_ms)
            .await
            .unwrap(),
        0
    );
}

async fn a_teams_items_are_answered_in_its_own_counters(backend: Backend) {
    let h = Harness::new(backend).await;
    let team = post(
        &h,
        "/v1/teams",
        json!({"name": "t", "quotas": ["requests=1000/hour", "units=10/day", "tokens=500/day@gpt-4o"]}),
    )
    .await;
    let team_id = team["id"].as_i64().unwrap();
    // A key with the team's id, so a mix-up of owners would show.
    let key = post(
        &h,
        "/v1/keys",
        json!({"name": "k", "quotas": ["requests=1000/hour", "units=10/day"]}),
    )
    .await;
    assert_eq!(key["id"].as_i64().unwrap(), team_id);
    let internal = |body: Value| {
        let h = &h;
        async move {
            let reply = h
                .internal(tollgate_wire::GRANTS_PATH, body.to_string())
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            reply.json()
        }
    };
    let first = json!({"asks": [{"grant_id": id(1), "key_id": 0, "team_id": team_id,
                                 "quota": "requests", "need": 1, "recent_use": 100}]});
    let given = internal(first.clone()).await["grants"][0].clone();
    assert_eq!(given["status"], "granted");
    assert_eq!(given["amount"], 200);
    assert_eq!(given["limit"], 1000);
    // A retry is answered as the first call was, charging nothing.
    let again = internal(first).await["grants"][0].clone();
    assert_eq!(again["amount"], 200);
    assert_eq!(again["charged"], 200);

    // Given back by grant id, once.
    let back = json!({"returns": [{"grant_id": id(1), "unused": 150}]});
    let done = internal(back.clone()).await["returns"][0].clone();
    assert_eq!(
        done,
        json!({"grant_id": id(1), "found": true, "returned": 150})
    );
    let done = internal(back).await["returns"][0].clone();
    assert_eq!(done["returned"], 150);

    // Settled after the fact, in the team's counter; retried, once.
    let settle = json!({"settlements": [
        {"settlement_id": id(2), "key_id": 0, "team_id": team_id, "quota": "units", "amount": 7},
        {"settlement_id": id(3), "key_id": 0, "team_id": team_id, "quota": "units", "amount": 7}]});
    let done = internal(settle.clone()).await;
    assert_eq!(done["settlements"][1]["charged"], 14);
    assert_eq!(done["settlements"][1]["open"], false);
    let again = internal(settle).await;
    assert_eq!(again["settlements"][1]["charged"], 14);

    // A scoped quota is found by its model, as a key's.
    let scoped = json!({"asks": [
        {"grant_id": id(4), "key_id": 0, "team_id": team_id, "quota": "tokens",
         "model": "gpt-4o", "need": 100, "recent_use": 0},
        {"grant_id": id(5), "key_id": 0, "team_id": team_id, "quota": "tokens",
         "need": 100, "recent_use": 0},
        {"grant_id": id(6), "key_id": 0, "team_id": 999, "quota": "requests",
         "need": 1, "recent_use": 0}]});
    let reply = internal(scoped).await;
    assert_eq!(reply["grants"][0]["status"], "granted");
    assert_eq!(reply["grants"][0]["limit"], 500);
    assert_eq!(reply["grants"][1]["status"], "no_quota");
    assert_eq!(reply["grants"][2]["status"], "unknown_key");

    // The key with the same id counted nothing of it.
    let now = now_ms() as i64;
    let store = &h.db.store;
    let hour = tollgate_wire::Window::Hour.containing(now).start_ms;
    let day = tollgate_wire::Window::Day.containing(now).start_ms;
    assert_eq!(
        store.charged_in(team_id, "requests", hour).await.unwrap(),
        0
    );
    assert_eq!(store.charged_in(team_id, "units", day).await.unwrap(), 0);
    let team_owner = BudgetOwner::Team(team_id);
    assert_eq!(
        store
            .owner_charged_in(team_owner, "requests", hour)
            .await
            .unwrap(),
        50
    );
    assert_eq!(
        store
            .owner_charged_in(team_owner, "units", day)
            .await
            .unwrap(),
        14
    );
    let charge = store.charge(&id(1)).await.unwrap().expect("stored");
    assert_eq!(charge.owner, team_owner);
}

async fn team_limits_and_key_moves_are_published_on_the_key_feed(backend: Backend) {
    let h = Harness::new(backend).await;
    let team = post(&h, "/v1/teams", json!({"name": "t"})).await;
    let team_id = team["id"].as_i64().unwrap();
    let other = post(&h, "/v1/teams", json!({"name": "o"})).await;
    let a = post(&h, "/v1/keys", json!({"name": "a", "team_id": team_id})).await;
    let b = post(&h, "/v1/keys", json!({"name": "b", "team_id": team_id})).await;
    let c = post(&h, "/v1/keys", json!({"name": "c", "team_id": other["id"]})).await;
    let hash = |key: &Value| hash_key(key["key"].as_str().unwrap());
    let before = feed(&h).await.len();
    assert_eq!(before, 3, "one created change per key");

    put(
        &h,
        &format!("/v1/teams/{team_id}/limits"),
        json!({"quotas": ["requests=10/minute"]}),
    )
    .await;
    let changes = feed(&h).await;
    let mut expected = vec![
        (hash(&a), "team_limits".to_string()),
        (hash(&b), "team_limits".to_string()),
    ];
    assert_eq!(
        changes[before..],
        expected[..],
        "every key of the team, no other"
    );

    let c_id = c["id"].as_i64().unwrap();
    put(
        &h,
        &format!("/v1/keys/{c_id}/team"),
        json!({"team_id": team_id}),
    )
    .await;
    put(
        &h,
        &format!("/v1/keys/{c_id}/team"),
        json!({"team_id": null}),
    )
    .await;
    expected.push((hash(&c), "team".into()));
    expected.push((hash(&c), "team".into()));
    let changes = feed(&h).await;
    assert_eq!(changes[before..], expected[..]);

    // Refused calls publish nothing.
    h.admin(
        Method::PUT,
        &format!("/v1/keys/{c_id}/team"),
        Some(json!({"team_id": 999})),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    h.admin(Method::PUT, "/v1/teams/999/limits", Some(json!({})))
        .await
        .expect_error(StatusCode::NOT_FOUND, "team_not_found");
    assert_eq!(feed(&h).await.len(), before + expected.len());
    // The verdict read after the change carries the team's new limits.
    let reply = h.verify(&hash(&a)).await.json();
    assert_eq!(reply["team_limits"]["quotas"][0]["window"], "minute");
}

/// Counters and charges an older sidecar stored (before migration 0011)
/// are the keys' after it, as they were.
async fn counters_stored_before_teams_are_kept_as_the_keys(backend: Backend) {
    let db = TestDb::at_migration(backend, 10).await;
    let statements = [
        "INSERT INTO limit_counters (api_key_id, quota, window_start_ms, window_end_ms, \
         limit_value, charged, last_grant) VALUES (7, 'requests', 0, 86400000, 100, 42, 5)",
        "INSERT INTO limit_charges (charge_id, api_key_id, quota, window_start_ms, kind, amount, \
         returned, created_ms) VALUES ('00000000000000000000000000000001', 7, 'requests', 0, \
         'grant', 5, 0, 1)",
    ];
    for sql in statements {
        let done = match &db.store {
            Store::MySql(s) => sqlx::query(sql).execute(s.pool()).await.map(drop),
            Store::Sqlite(s) => sqlx::query(sql).execute(s.pool()).await.map(drop),
        };
        done.expect("an older sidecar's row");
    }
    db.store.migrate().await.expect("migrate to the newest");
    let store = &db.store;
    assert_eq!(store.charged_in(7, "requests", 0).await.unwrap(), 42);
    assert_eq!(
        store
            .owner_charged_in(BudgetOwner::Team(7), "requests", 0)
            .await
            .unwrap(),
        0
    );
    let charge = store.charge(&id(1)).await.unwrap().expect("kept");
    assert_eq!(charge.owner, BudgetOwner::Key(7));
    let back = store.give_back(&id(1), 2, 2).await.unwrap().expect("found");
    assert_eq!(back.charged, 40, "a return reaches the key's counter");
}

/// `tollgate` with the test's database.
fn tollgate(target: &DatabaseTarget, args: &[&str]) -> Output {
    let url = match target {
        DatabaseTarget::MySql(url) => url.clone(),
        DatabaseTarget::Sqlite(path) => format!("sqlite://{}", path.display()),
    };
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env("DATABASE_URL", url)
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .expect("run tollgate")
}

/// Runs and expects success; stdout.
fn ok(target: &DatabaseTarget, args: &[&str]) -> String {
    let out = tollgate(target, args);
    assert!(
        out.status.success(),
        "tollgate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and expects failure; stderr.
fn fails(target: &DatabaseTarget, args: &[&str]) -> String {
    let out = tollgate(target, args);
    assert!(!out.status.success(), "tollgate {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

async fn the_command_line_manages_teams(backend: Backend) {
    let db = TestDb::new(backend).await;
    let t = &db.target;
    let team = json_of(&ok(
        t,
        &[
            "teams",
            "create",
            "--name",
            "ml",
            "--rate",
            "10/s",
            "--quota",
            "tokens=1M/month",
            "--json",
        ],
    ));
    let team_id = team["id"].as_i64().unwrap();
    assert_eq!(
        team["limits"]["spec"],
        "rate=10/s burst=10 tokens=1000000/month"
    );
    let text = ok(t, &["teams", "create", "--name", "web"]);
    assert!(
        text.contains("Created team") && text.contains("no limits"),
        "{text}"
    );

    // Bad input names the flag and changes nothing.
    assert!(fails(t, &["teams", "create", "--name", " "]).contains("team name"));
    assert!(fails(t, &["teams", "create", "--name", "ml"]).contains("exists already"));
    assert!(fails(
        t,
        &["teams", "create", "--name", "x", "--quota", "tokens=1/year"]
    )
    .contains("quota"));
    assert!(fails(t, &["keys", "create", "--name", "k", "--team", "nope"]).contains("--team"));
    assert!(fails(t, &["keys", "create", "--name", "k", "--team", "999"]).contains("--team"));
    let keys = json_of(&ok(t, &["keys", "list", "--json"]));
    assert_eq!(keys, json!([]));

    // Keys join by the team's name or id, and move.
    let key = json_of(&ok(
        t,
        &["keys", "create", "--name", "k", "--team", "ml", "--json"],
    ));
    assert_eq!(key["team_id"], team_id);
    let key_id = key["id"].as_i64().unwrap().to_string();
    let text = ok(
        t,
        &[
            "keys",
            "create",
            "--name",
            "j",
            "--team",
            &team_id.to_string(),
        ],
    );
    assert!(text.contains(&format!("team:       {team_id}")), "{text}");
    let moved = json_of(&ok(
        t,
        &["keys", "move", &key_id, "--team", "web", "--json"],
    ));
    assert_ne!(moved["team_id"], team_id);
    assert!(fails(t, &["keys", "move", &key_id, "--team", "nope"]).contains("--team"));
    assert!(fails(t, &["keys", "move", "999", "--team", "ml"]).contains("no key has id 999"));
    let out = tollgate(t, &["keys", "move", &key_id]);
    assert!(!out.status.success(), "--team or --no-team is required");
    let text = ok(t, &["keys", "move", &key_id, "--no-team"]);
    assert!(text.contains("in no team"), "{text}");

    // Limits: flags change what they name; --clear starts afresh.
    let limited = json_of(&ok(
        t,
        &[
            "teams",
            "limits",
            "ml",
            "--quota",
            "requests=5/day",
            "--json",
        ],
    ));
    assert_eq!(
        limited["limits"]["spec"],
        "rate=10/s burst=10 requests=5/day tokens=1000000/month"
    );
    let text = ok(t, &["teams", "limits", &team_id.to_string(), "--clear"]);
    assert!(text.contains("no limits"), "{text}");
    assert!(fails(t, &["teams", "limits", "ml", "--burst", "3"]).contains("burst"));
    assert!(fails(t, &["teams", "limits", "nope", "--clear"]).contains("no team"));

    let list = json_of(&ok(t, &["teams", "list", "--json"]));
    assert_eq!(list[0]["name"], "ml");
    assert_eq!(list[0]["key_ids"].as_array().unwrap().len(), 1);
    assert_eq!(list[0]["limits"]["spec"], "");
    let table = ok(t, &["teams", "list"]);
    assert!(table.contains("ml") && table.contains("web"), "{table}");

    // A team with keys is not deleted; an empty one is.
    let error = fails(t, &["teams", "delete", "ml"]);
    assert!(error.contains("still has 1 key(s)"), "{error}");
    let text = ok(t, &["teams", "delete", "web"]);
    assert!(text.contains("Deleted team"), "{text}");
    let list = json_of(&ok(t, &["teams", "list", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 1);
}
