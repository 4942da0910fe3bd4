//! Per-key limits and quota grants over the sidecar's API, against SQLite
//! and MySQL alike (see http_api.rs for how each test runs twice): limits
//! on the key objects and the key change feed, the grant call's arithmetic
//! under concurrent sidecars, its idempotency, settlements, token quotas
//! and quotas scoped to one model (counted by name), and the
//! reconciliation of the ledger with the counters.

#[macro_use]
mod support;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use sidecar::http::grants::answer;
use sidecar::store::Store;
use support::*;
use tollgate_wire::{
    changes_query, GrantAsk, GrantReply, GrantRequest, GrantReturn, GrantStatus, QuotaKind,
    Settlement, GRANTS_PATH, INTERNAL_TOKEN_HEADER,
};

on_both_backends!(
    keys_carry_their_limits,
    a_change_of_limits_is_published_on_the_key_feed,
    concurrent_grants_from_several_sidecars_never_exceed_the_limit,
    grants_and_returns_are_idempotent,
    settlements_charge_after_the_fact,
    grant_calls_are_checked,
    reconcile_compares_the_ledger_with_the_counters,
    counters_and_charges_are_purged_after_their_window,
    a_month_quota_starts_afresh_at_the_utc_month_boundary,
    the_verify_call_charges_nothing,
    a_year_boundary_splits_every_month_quota_and_what_is_given_back,
    token_quotas_scoped_quotas_and_minute_windows_are_set_and_refused,
    grants_charge_each_quota_by_its_name,
    reconcile_counts_token_quotas_from_the_ledger,
);

async fn create(h: &Harness, body: Value) -> Value {
    let reply = h.admin(Method::POST, "/v1/keys", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json()
}

/// Every change on the key change feed.
async fn feed(h: &Harness) -> Value {
    h.send(
        axum::http::Request::get(changes_query(0, 100))
            .header(INTERNAL_TOKEN_HEADER, INTERNAL_TOKEN)
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .json()
}

async fn grant_call(h: &Harness, request: &Value) -> Reply {
    h.internal(GRANTS_PATH, request.to_string()).await
}

/// A fresh charge id: 32 lowercase hex digits, different for each `n`.
fn id(n: u64) -> String {
    format!("{n:032x}")
}

fn ask(grant_id: String, key_id: i64, quota: QuotaKind, need: u64, recent_use: u64) -> GrantAsk {
    GrantAsk {
        grant_id,
        key_id,
        team_id: None,
        quota,
        model: None,
        need,
        recent_use,
    }
}

async fn keys_carry_their_limits(backend: Backend) {
    let h = Harness::new(backend).await;
    let created = create(
        &h,
        json!({"name": "limited", "rate": "10/s", "burst": 20,
               "quotas": ["requests=1000/day", "request_bytes=1GiB/month"]}),
    )
    .await;
    let expected = json!({
        "rate": {"count": 10, "per": "s", "burst": 20},
        "quotas": [
            {"kind": "requests", "limit": 1000, "window": "day"},
            {"kind": "request_bytes", "limit": 1073741824u64, "window": "month"},
        ]
    });
    assert_eq!(created["limits"], expected);
    let plain = create(&h, json!({"name": "plain"})).await;
    assert_eq!(plain["limits"], json!({"rate": null, "quotas": []}));
    let listed = h.admin(Method::GET, "/v1/keys", None).await.json();
    assert_eq!(listed["keys"][0]["limits"], expected);

    // A limit that cannot be read is refused naming it, and nothing is stored.
    for (body, field) in [
        (
            json!({"name": "x", "quotas": ["requests=10/week"]}),
            "quota",
        ),
        (json!({"name": "x", "rate": "10/hour"}), "rate"),
        (json!({"name": "x", "burst": 5}), "burst"),
        (
            json!({"name": "x", "quotas": ["units=1/day", "units=2/day"]}),
            "quota",
        ),
    ] {
        let reply = h.admin(Method::POST, "/v1/keys", Some(body)).await;
        let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error["field"], field, "{error}");
    }
    let listed = h.admin(Method::GET, "/v1/keys", None).await.json();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2);
}

async fn a_change_of_limits_is_published_on_the_key_feed(backend: Backend) {
    let h = Harness::new(backend).await;
    let created = create(&h, json!({"name": "k"})).await;
    let key_id = created["id"].as_i64().unwrap();
    let key_hash = hash_key(created["key"].as_str().unwrap());
    let path = format!("/v1/keys/{key_id}/limits");

    let reply = h
        .admin(
            Method::PUT,
            &path,
            Some(json!({"rate": "5/min", "quotas": ["units=50/hour"]})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let key = reply.json();
    assert_eq!(key["id"], key_id);
    assert_eq!(
        key["limits"]["rate"],
        json!({"count": 5, "per": "min", "burst": 1})
    );
    assert_eq!(key["limits"]["quotas"][0]["kind"], "units");

    let changes = feed(&h).await;
    let kinds: Vec<(&str, &str)> = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["key_hash"].as_str().unwrap(), c["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            (key_hash.as_str(), "created"),
            (key_hash.as_str(), "limits")
        ]
    );

    // `{}` clears them; a bad limit or an unknown key changes nothing.
    let cleared = h.admin(Method::PUT, &path, Some(json!({}))).await.json();
    assert_eq!(cleared["limits"], json!({"rate": null, "quotas": []}));
    let bad = h
        .admin(
            Method::PUT,
            &path,
            Some(json!({"quotas": ["requests=0/day"]})),
        )
        .await;
    bad.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    let unknown = h
        .admin(
            Method::PUT,
            "/v1/keys/999/limits",
            Some(json!({"rate": "1/s"})),
        )
        .await;
    unknown.expect_error(StatusCode::NOT_FOUND, "key_not_found");
    let reply = h
        .admin(
            Method::PUT,
            &path,
            Some(json!({"rate": "1/s", "colour": "red"})),
        )
        .await;
    reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    let changes = feed(&h).await;
    assert_eq!(changes["changes"].as_array().unwrap().len(), 3, "{changes}");
    let listed = h.admin(Method::GET, "/v1/keys", None).await.json();
    assert_eq!(listed["keys"][0]["limits"]["quotas"], json!([]));
}

/// Three sidecars (three pools on one database) and 24 concurrent askers
/// that go on until the quota is spent, every third call giving half of
/// its previous grant back: what is granted net of returns never passes
/// the limit and is what the counter holds; the quota without returns is
/// granted up to the limit exactly.
async fn concurrent_grants_from_several_sidecars_never_exceed_the_limit(backend: Backend) {
    const LIMIT: u64 = 300;
    let h = Harness::new(backend).await;
    let created = create(
        &h,
        json!({"name": "fleet", "quotas": ["requests=300/day", "request_bytes=5000/day"]}),
    )
    .await;
    let key_id = created["id"].as_i64().unwrap();
    let sidecars: Vec<Arc<Store>> = vec![
        Arc::new(h.db.store.clone()),
        Arc::new(h.db.observer().await),
        Arc::new(h.db.observer().await),
    ];
    let now_ms = now_ms() as i64;
    let mut tasks = Vec::new();
    for task in 0..24u64 {
        let store = sidecars[task as usize % sidecars.len()].clone();
        tasks.push(tokio::spawn(async move {
            let (mut requests, mut returned, mut bytes) = (0u64, 0u64, 0u64);
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
                let request = GrantRequest {
                    returns,
                    asks: vec![
                        ask(id(2 * n), key_id, QuotaKind::Requests, 1, (n * 7) % 40),
                        ask(
                            id(2 * n + 1),
                            key_id,
                            QuotaKind::RequestBytes,
                            1 + n % 97,
                            n % 300,
                        ),
                    ],
                    ..Default::default()
                };
                let reply = answer(&store, &request, now_ms).await.expect("grant");
                for given in &reply.grants {
                    assert!(given.charged <= given.limit, "{given:?}");
                }
                let [r, b] = &reply.grants[..] else {
                    panic!("two answers")
                };
                requests += r.amount;
                bytes += b.amount;
                last = Some((r.grant_id.clone(), r.amount));
                if r.status == GrantStatus::Exhausted && b.status == GrantStatus::Exhausted {
                    break;
                }
            }
            (requests, returned, bytes)
        }));
    }
    let (mut requests, mut returned, mut bytes) = (0, 0, 0);
    for task in tasks {
        let (r, back, b) = task.await.expect("task");
        requests += r;
        returned += back;
        bytes += b;
    }
    assert!(returned > 0, "some grants were given back");
    assert!(requests >= LIMIT, "{requests} granted in all");
    let net = requests - returned;
    assert!(net <= LIMIT, "{net} granted net of returns");
    assert!(
        (5000 - 97..=5000).contains(&bytes),
        "{bytes} request bytes granted"
    );
    let span = tollgate_wire::Window::Day.containing(now_ms);
    for store in &sidecars {
        let charged = store
            .charged_in(key_id, "requests", span.start_ms)
            .await
            .unwrap();
        assert_eq!(
            charged, net,
            "the counter holds what was granted net of returns"
        );
    }
}

async fn grants_and_returns_are_idempotent(backend: Backend) {
    let h = Harness::new(backend).await;
    let created = create(&h, json!({"name": "k", "quotas": ["requests=1000/hour"]})).await;
    let key_id = created["id"].as_i64().unwrap();
    let first = json!({"asks": [{"grant_id": id(1), "key_id": key_id, "quota": "requests",
                                 "need": 1, "recent_use": 100}]});
    let reply = grant_call(&h, &first).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let given = reply.json()["grants"][0].clone();
    assert_eq!(given["status"], "granted");
    // Two periods of demand: 200, within a quarter of the 1000 left.
    assert_eq!(given["amount"], 200);
    assert_eq!(given["charged"], 200);
    assert_eq!(given["limit"], 1000);
    let start = given["window_start_ms"].as_i64().unwrap();
    assert_eq!(given["window_end_ms"].as_i64().unwrap() - start, 3_600_000);
    assert_eq!(start % 3_600_000, 0, "aligned to the UTC hour");

    // The retry is answered as the first call was and charges nothing.
    let again = grant_call(&h, &first).await.json()["grants"][0].clone();
    assert_eq!(again["amount"], 200);
    assert_eq!(again["charged"], 200);

    // Returning 150 unused, twice: given back once.
    let back = json!({"returns": [{"grant_id": id(1), "unused": 150}]});
    let done = grant_call(&h, &back).await.json();
    assert_eq!(
        done["returns"][0],
        json!({"grant_id": id(1), "found": true, "returned": 150})
    );
    let done = grant_call(&h, &back).await.json();
    assert_eq!(done["returns"][0]["returned"], 150);
    let store = &h.db.store;
    assert_eq!(
        store.charged_in(key_id, "requests", start).await.unwrap(),
        50
    );
    // More than the grant took gives nothing back; an unknown grant is said so.
    let store_reply = answer(
        store,
        &GrantRequest {
            returns: vec![
                GrantReturn {
                    grant_id: id(1),
                    unused: 10,
                },
                GrantReturn {
                    grant_id: id(9),
                    unused: 1,
                },
            ],
            ..Default::default()
        },
        now_ms() as i64,
    )
    .await
    .unwrap();
    assert!(!store_reply.returns[1].found);
    assert_eq!(
        store.charged_in(key_id, "requests", start).await.unwrap(),
        50
    );

    // A need larger than what is left is exhausted, not a partial grant.
    let big = json!({"asks": [{"grant_id": id(2), "key_id": key_id, "quota": "requests",
                               "need": 951, "recent_use": 0}]});
    let given = grant_call(&h, &big).await.json()["grants"][0].clone();
    assert_eq!(given["status"], "exhausted");
    assert_eq!(given["amount"], 0);
    assert_eq!(given["charged"], 50);
}

async fn settlements_charge_after_the_fact(backend: Backend) {
    let h = Harness::new(backend).await;
    let created = create(&h, json!({"name": "k", "quotas": ["units=100/day"]})).await;
    let key_id = created["id"].as_i64().unwrap();
    let settle = |n: u64, amount: u64| {
        json!({"settlements": [{"settlement_id": id(n), "key_id": key_id, "quota": "units",
                                "amount": amount}]})
    };
    let done = grant_call(&h, &settle(1, 60)).await.json()["settlements"][0].clone();
    assert_eq!(done["status"], "granted");
    assert_eq!(
        (done["charged"].clone(), done["open"].clone()),
        (json!(60), json!(true))
    );
    // Past the limit: charged all the same (it was served), and closed.
    let done = grant_call(&h, &settle(2, 60)).await.json()["settlements"][0].clone();
    assert_eq!(
        (done["charged"].clone(), done["open"].clone()),
        (json!(120), json!(false))
    );
    let again = grant_call(&h, &settle(2, 60)).await.json()["settlements"][0].clone();
    assert_eq!(
        again["charged"], 120,
        "a retried settlement is not charged twice"
    );

    // A key without such a quota, or no key: said so, nothing stored.
    let plain = create(&h, json!({"name": "plain"})).await;
    let reply = answer(
        &h.db.store,
        &GrantRequest {
            settlements: vec![
                Settlement {
                    settlement_id: id(3),
                    key_id: plain["id"].as_i64().unwrap(),
                    team_id: None,
                    quota: QuotaKind::ResponseBytes,
                    model: None,
                    amount: 5,
                },
                Settlement {
                    settlement_id: id(4),
                    key_id: 999,
                    team_id: None,
                    quota: QuotaKind::Units,
                    model: None,
                    amount: 5,
                },
            ],
            asks: vec![ask(id(5), key_id, QuotaKind::Requests, 1, 0)],
            ..Default::default()
        },
        now_ms() as i64,
    )
    .await
    .unwrap();
    assert_eq!(reply.settlements[0].status, GrantStatus::NoQuota);
    assert_eq!(reply.settlements[1].status, GrantStatus::UnknownKey);
    assert_eq!(reply.grants[0].status, GrantStatus::NoQuota);
    assert!(h.db.store.charge(&id(3)).await.unwrap().is_none());

    // The call also tells a key's limits, and when there is no such key.
    let told = grant_call(&h, &json!({"limits_of": [key_id, 999]}))
        .await
        .json();
    assert_eq!(
        told["limits"],
        json!([
            {"key_id": key_id, "found": true,
             "limits": {"rate": null, "quotas": [{"kind": "units", "limit": 100, "window": "day"}]}},
            {"key_id": 999, "found": false, "limits": {"rate": null, "quotas": []}},
        ])
    );
    assert!(h.db.store.charge(&id(3)).await.unwrap().is_none());
}

async fn grant_calls_are_checked(backend: Backend) {
    let h = Harness::new(backend).await;
    let created = create(&h, json!({"name": "k", "quotas": ["units=100/day"]})).await;
    let key_id = created["id"].as_i64().unwrap();
    for (body, field) in [
        (
            json!({"asks": [{"grant_id": "ABC", "key_id": key_id, "quota": "requests", "need": 1, "recent_use": 0}]}),
            "asks[0].grant_id",
        ),
        (
            json!({"asks": [{"grant_id": id(1), "key_id": key_id, "quota": "units", "need": 1, "recent_use": 0}]}),
            "asks[0].quota",
        ),
        (
            json!({"settlements": [{"settlement_id": id(1), "key_id": key_id, "quota": "requests", "amount": 1}]}),
            "settlements[0].quota",
        ),
        (
            json!({"returns": [{"grant_id": id(1), "unused": 1u64 << 60}]}),
            "returns[0].unused",
        ),
    ] {
        let reply = grant_call(&h, &body).await;
        let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error["field"], field, "{error}");
    }
    let reply = h
        .send(
            axum::http::Request::post(GRANTS_PATH)
                .header("content-type", "application/json")
                .body(axum::body::Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    // Neither token opens the other's routes.
    let body = json!({"settlements": [{"settlement_id": id(1), "key_id": key_id,
                                       "quota": "units", "amount": 1}]});
    let reply = h
        .send(
            axum::http::Request::post(GRANTS_PATH)
                .header("content-type", "application/json")
                .header(INTERNAL_TOKEN_HEADER, ADMIN_TOKEN)
                .body(axum::body::Body::from(body.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    let reply = h
        .send(
            axum::http::Request::put(format!("/v1/keys/{key_id}/limits"))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {INTERNAL_TOKEN}"))
                .body(axum::body::Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert!(h.db.store.charge(&id(1)).await.unwrap().is_none());
    let listed = h.admin(Method::GET, "/v1/keys", None).await.json();
    assert_eq!(listed["keys"][0]["limits"]["quotas"][0]["kind"], "units");
}

async fn reconcile_compares_the_ledger_with_the_counters(backend: Backend) {
    let h = Harness::new(backend).await;
    let created = create(
        &h,
        json!({"name": "k", "quotas": ["requests=2/day", "units=10/hour"]}),
    )
    .await;
    let key_id = created["id"].as_i64().unwrap();
    let now = now_ms() as i64;
    answer(
        &h.db.store,
        &GrantRequest {
            asks: vec![ask(id(1), key_id, QuotaKind::Requests, 2, 0)],
            ..Default::default()
        },
        now,
    )
    .await
    .unwrap();
    let reply = h
        .ingest(&json!([record("r1", key_id), record("r2", key_id)]))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let at = sidecar::domain::clock::now_ms();
    let rows = sidecar::cli::reconcile::reconcile(&h.db.store, Some(key_id), None, at)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let requests = &rows[0];
    assert_eq!(requests.kind, QuotaKind::Requests);
    assert_eq!(
        (requests.limit, requests.charged, requests.ledger),
        (2, 2, 2)
    );
    assert!(!requests.over_limit);
    assert!(!requests.ledger_differs, "grants run ahead of the ledger");
    // Units: the ledger's (6 a record) beside the counter's settlements.
    let units = &rows[1];
    assert_eq!(units.kind, QuotaKind::Units);
    assert_eq!((units.charged, units.ledger), (0, 12));
    assert!(units.ledger_differs && !units.over_limit, "{units:?}");
    let settle = |n: u64, amount: u64| GrantRequest {
        settlements: vec![Settlement {
            settlement_id: id(n),
            key_id,
            team_id: None,
            quota: QuotaKind::Units,
            model: None,
            amount,
        }],
        ..Default::default()
    };
    for n in [2, 3] {
        answer(&h.db.store, &settle(n, 6), now).await.unwrap();
    }
    let rows = sidecar::cli::reconcile::reconcile(&h.db.store, Some(key_id), None, at)
        .await
        .unwrap();
    assert_eq!((rows[1].charged, rows[1].ledger), (12, 12));
    assert!(!rows[1].ledger_differs, "{:?}", rows[1]);
    // Past the limit, a settled quota is not a fault: it was served.
    answer(&h.db.store, &settle(4, 6), now).await.unwrap();
    h.ingest(&json!([record("r-units", key_id)])).await;
    let rows = sidecar::cli::reconcile::reconcile(&h.db.store, Some(key_id), None, at)
        .await
        .unwrap();
    assert_eq!((rows[1].charged, rows[1].ledger), (18, 18));
    assert!(!rows[1].ledger_differs && !rows[1].over_limit);
    let only_hourly = sidecar::cli::reconcile::reconcile(
        &h.db.store,
        None,
        Some(tollgate_wire::Window::Hour),
        at,
    )
    .await
    .unwrap();
    assert_eq!(only_hourly.len(), 1);

    // A third admitted request in the ledger is over the limit, and said so.
    h.ingest(&json!([record("r3", key_id)])).await;
    let rows = sidecar::cli::reconcile::reconcile(&h.db.store, Some(key_id), None, at)
        .await
        .unwrap();
    assert!(rows[0].over_limit, "{rows:?}");

    // The window of an earlier instant holds its own rows only, not the
    // later ones.
    let hour_ago = now_ms() - 3_600_000;
    let mut earlier = record("r-earlier", key_id);
    earlier["timestamp_ms"] = json!(hour_ago);
    earlier["units"] = json!(5);
    assert_eq!(h.ingest(&json!([earlier])).await.status, StatusCode::OK);
    let at = sidecar::domain::clock::from_unix_ms(hour_ago).unwrap();
    let rows = sidecar::cli::reconcile::reconcile(
        &h.db.store,
        Some(key_id),
        Some(tollgate_wire::Window::Hour),
        at,
    )
    .await
    .unwrap();
    assert_eq!((rows[0].charged, rows[0].ledger), (0, 5), "{rows:?}");
    assert!(rows[0].ledger_differs);
}

async fn counters_and_charges_are_purged_after_their_window(backend: Backend) {
    let h = Harness::new(backend).await;
    let created = create(&h, json!({"name": "k", "quotas": ["requests=100/day"]})).await;
    let key_id = created["id"].as_i64().unwrap();
    let now = now_ms() as i64;
    let long_ago = now - 50 * 86_400_000;
    let store = &h.db.store;
    for (n, at) in [(1, long_ago), (2, now)] {
        let request = GrantRequest {
            asks: vec![ask(id(n), key_id, QuotaKind::Requests, 1, 0)],
            ..Default::default()
        };
        answer(store, &request, at).await.unwrap();
    }
    let old_window = tollgate_wire::Window::Day.containing(long_ago);
    assert_eq!(
        store
            .charged_in(key_id, "requests", old_window.start_ms)
            .await
            .unwrap(),
        1
    );
    let before = now - sidecar::store::limits::LIMIT_HISTORY.as_millis() as i64;
    assert_eq!(store.purge_limit_history(before).await.unwrap(), 1);
    assert!(store.charge(&id(1)).await.unwrap().is_none());
    assert_eq!(
        store
            .charged_in(key_id, "requests", old_window.start_ms)
            .await
            .unwrap(),
        0
    );
    assert!(
        store.charge(&id(2)).await.unwrap().is_some(),
        "this window's charge stays"
    );
    let today = tollgate_wire::Window::Day.containing(now);
    assert_eq!(
        store
            .charged_in(key_id, "requests", today.start_ms)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.purge_limit_history(before).await.unwrap(), 0);
}

/// The clock is injected: the last millisecond of January and the first of
/// February fall in two windows, each with its own counter.
async fn a_month_quota_starts_afresh_at_the_utc_month_boundary(backend: Backend) {
    let h = Harness::new(backend).await;
    let created = create(&h, json!({"name": "k", "quotas": ["requests=3/month"]})).await;
    let key_id = created["id"].as_i64().unwrap();
    let february = tollgate_wire::limits::days_from_civil(2027, 2, 1) * 86_400_000;
    let call = |n: u64, need: u64, at: i64| {
        let request = GrantRequest {
            asks: vec![ask(id(n), key_id, QuotaKind::Requests, need, 0)],
            ..Default::default()
        };
        let store = h.db.store.clone();
        async move { answer(&store, &request, at).await.unwrap().grants[0].clone() }
    };
    let january = call(1, 3, february - 1).await;
    assert_eq!((january.status, january.amount), (GrantStatus::Granted, 3));
    assert_eq!(january.window_end_ms, february);
    let january_start = tollgate_wire::limits::days_from_civil(2027, 1, 1) * 86_400_000;
    assert_eq!(january.window_start_ms, january_start);
    assert_eq!(
        call(2, 1, february - 1).await.status,
        GrantStatus::Exhausted
    );
    let next = call(3, 1, february).await;
    assert_eq!(
        (next.status, next.window_start_ms),
        (GrantStatus::Granted, february)
    );
    assert_eq!(next.charged, next.amount, "a fresh counter");
    let march = tollgate_wire::limits::days_from_civil(2027, 3, 1) * 86_400_000;
    assert_eq!(next.window_end_ms, march, "February 2027 has 28 days");
}

/// The clock is injected at the last millisecond of 2027 and the first of
/// 2028: each month quota, granted or settled, starts afresh in January; a
/// December grant given back in January goes back to December's counter;
/// `usage reconcile` reads the month holding its instant; a leap February
/// is 29 days long.
async fn a_year_boundary_splits_every_month_quota_and_what_is_given_back(backend: Backend) {
    const DAY_MS: i64 = 86_400_000;
    let h = Harness::new(backend).await;
    let created = create(
        &h,
        json!({"name": "k",
               "quotas": ["requests=3/month", "request_bytes=1KiB/month", "units=100/month"]}),
    )
    .await;
    let key_id = created["id"].as_i64().unwrap();
    let civil = |y, m, d| tollgate_wire::limits::days_from_civil(y, m, d) * DAY_MS;
    let (december, january, february) = (civil(2027, 12, 1), civil(2028, 1, 1), civil(2028, 2, 1));
    let store = &h.db.store;
    let take_all = |n: u64, units: u64| GrantRequest {
        asks: vec![
            ask(id(n), key_id, QuotaKind::Requests, 3, 0),
            ask(id(n + 1), key_id, QuotaKind::RequestBytes, 1024, 0),
        ],
        settlements: vec![Settlement {
            settlement_id: id(n + 2),
            key_id,
            team_id: None,
            quota: QuotaKind::Units,
            model: None,
            amount: units,
        }],
        ..Default::default()
    };

    // Each grant takes its whole quota, in the window `span`, on a counter
    // that held nothing before.
    let whole_in = |reply: &GrantReply, span: (i64, i64)| {
        for given in &reply.grants {
            let taken = (given.status, given.amount, given.charged);
            assert_eq!(
                taken,
                (GrantStatus::Granted, given.limit, given.limit),
                "{given:?}"
            );
            assert_eq!((given.window_start_ms, given.window_end_ms), span);
        }
    };
    let one_request = |n: u64, at: i64| {
        let request = GrantRequest {
            asks: vec![ask(id(n), key_id, QuotaKind::Requests, 1, 0)],
            ..Default::default()
        };
        async move { answer(store, &request, at).await.unwrap().grants.remove(0) }
    };

    // December's last millisecond: both quotas charged at admission taken
    // whole, and units settled past their limit; then nothing is left.
    let last = answer(store, &take_all(1, 150), january - 1).await.unwrap();
    whole_in(&last, (december, january));
    let units = &last.settlements[0];
    assert_eq!(
        (units.charged, units.open, units.window_end_ms),
        (150, false, january)
    );
    assert_eq!(
        one_request(4, january - 1).await.status,
        GrantStatus::Exhausted
    );

    // January's first millisecond: all of it again, on counters of their own.
    let first = answer(store, &take_all(5, 10), january).await.unwrap();
    whole_in(&first, (january, february));
    let units = &first.settlements[0];
    assert_eq!(
        (units.charged, units.open, units.window_start_ms),
        (10, true, january)
    );

    // Given back in January, December's grant returns to December.
    let back = answer(
        store,
        &GrantRequest {
            returns: vec![GrantReturn {
                grant_id: id(1),
                unused: 2,
            }],
            ..Default::default()
        },
        january + 5_000,
    )
    .await
    .unwrap();
    assert_eq!((back.returns[0].found, back.returns[0].returned), (true, 2));
    for (window, charged) in [(december, 1), (january, 3)] {
        let counter = store.charged_in(key_id, "requests", window).await.unwrap();
        assert_eq!(
            counter, charged,
            "the requests counter of the month at {window}"
        );
    }

    // Reconciled at either instant, each month shows its own counters.
    for (at, window_start, window_end, charged) in [
        (
            january - 1,
            "2027-12-01T00:00:00.000Z",
            "2028-01-01T00:00:00.000Z",
            [1, 1024, 150],
        ),
        (
            january,
            "2028-01-01T00:00:00.000Z",
            "2028-02-01T00:00:00.000Z",
            [3, 1024, 10],
        ),
    ] {
        let instant = sidecar::domain::clock::from_unix_ms(at as u64).unwrap();
        let rows = sidecar::cli::reconcile::reconcile(
            store,
            Some(key_id),
            Some(tollgate_wire::Window::Month),
            instant,
        )
        .await
        .unwrap();
        let seen: Vec<(QuotaKind, i64)> = rows.iter().map(|r| (r.kind, r.charged)).collect();
        let kinds = [
            QuotaKind::Requests,
            QuotaKind::RequestBytes,
            QuotaKind::Units,
        ];
        assert_eq!(seen, kinds.into_iter().zip(charged).collect::<Vec<_>>());
        for row in &rows {
            assert_eq!(
                (row.window_start.as_str(), row.window_end.as_str()),
                (window_start, window_end)
            );
            assert!(
                !row.over_limit,
                "units settled past the limit are not flagged: {row:?}"
            );
        }
    }

    // 2028 is a leap year: its February holds 29 days.
    let given = one_request(9, civil(2028, 2, 29) + DAY_MS - 1).await;
    assert_eq!(
        (given.window_start_ms, given.window_end_ms),
        (february, civil(2028, 3, 1))
    );
    assert_eq!(given.window_end_ms - given.window_start_ms, 29 * DAY_MS);
}

#[tokio::test]
async fn a_grant_call_the_database_cannot_answer_is_503_and_says_to_retry() {
    let (_state, app) = unreachable_mysql_app();
    let body = json!({"asks": [{"grant_id": id(1), "key_id": 1, "quota": "requests",
                                "need": 1, "recent_use": 0}]});
    let request = axum::http::Request::post(GRANTS_PATH)
        .header(INTERNAL_TOKEN_HEADER, INTERNAL_TOKEN)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let reply = send(&app, request).await;
    let error = reply.expect_error(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("retry it with the same ids"),
        "{error}"
    );
}

/// A verify call reads and charges nothing, whatever it asks: it comes
/// before the token's signature is checked, so a caller holding only the
/// API key must not move the key's counters. An older filter's
/// `first_grant_id` is read past: the reply carries no grants, the
/// counter stays at 0, however often the call comes.
async fn the_verify_call_charges_nothing(backend: Backend) {
    let h = Harness::new(backend).await;
    let created = create(
        &h,
        json!({"name": "k", "quotas": ["requests=1000/hour", "request_bytes=1000000/hour"]}),
    )
    .await;
    let key_id = created["id"].as_i64().unwrap();
    let key_hash = tollgate_wire::key_hash_hex(created["key"].as_str().unwrap().as_bytes());
    for n in 0..5 {
        let body = json!({"key_hash": key_hash, "first_grant_id": id(0xabc0 + n)}).to_string();
        let reply = h.internal(tollgate_wire::VERIFY_PATH, body).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let reply = reply.json();
        assert_eq!(reply["verdict"], "active");
        assert_eq!(reply["limits"]["quotas"][0]["kind"], "requests");
        assert!(reply.get("grants").is_none(), "{reply}");
    }
    let now_ms = sidecar::store::feed::unix_ms(sidecar::domain::clock::now_ms());
    for kind in [QuotaKind::Requests, QuotaKind::RequestBytes] {
        let span = tollgate_wire::Window::Hour.containing(now_ms);
        let charged =
            h.db.store
                .charged_in(key_id, kind.as_str(), span.start_ms)
                .await
                .unwrap();
        assert_eq!(charged, 0, "{kind} charged by a verify call");
    }
}

/// A model name of `len` bytes, the longest a quota may be scoped to at
/// `tollgate_wire::limits::MAX_SCOPE_MODEL_LEN`.
fn long_model(tag: char, len: usize) -> String {
    std::iter::once(tag)
        .chain(std::iter::repeat('m'))
        .take(len)
        .collect()
}

async fn token_quotas_scoped_quotas_and_minute_windows_are_set_and_refused(backend: Backend) {
    let h = Harness::new(backend).await;
    let created = create(
        &h,
        json!({"name": "llm", "quotas": [
            "tokens=1M/month", "input_tokens=2k/minute@gpt-4o", "output_tokens=100k/day@gpt-4o",
            "tokens=50k/day@claude-sonnet-4"]}),
    )
    .await;
    assert_eq!(
        created["limits"]["quotas"],
        json!([
            {"kind": "tokens", "limit": 1_000_000, "window": "month"},
            {"kind": "tokens", "limit": 50_000, "window": "day", "model": "claude-sonnet-4"},
            {"kind": "input_tokens", "limit": 2000, "window": "minute", "model": "gpt-4o"},
            {"kind": "output_tokens", "limit": 100_000, "window": "day", "model": "gpt-4o"},
        ])
    );
    let key_id = created["id"].as_i64().unwrap();
    let path = format!("/v1/keys/{key_id}/limits");
    let listed = h.admin(Method::GET, "/v1/keys", None).await.json();
    assert_eq!(listed["keys"][0]["limits"], created["limits"], "read back");

    // The most a key may have: 16 quotas, each scoped to a model of the
    // longest length, spelled in more than 4 KiB.
    let most: Vec<String> = (0..16)
        .map(|i| {
            let model = long_model(char::from(b'a' + i as u8), 256);
            format!("output_tokens=9007199254740992/minute@{model}")
        })
        .collect();
    let reply = h
        .admin(Method::PUT, &path, Some(json!({ "quotas": most })))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let listed = h.admin(Method::GET, "/v1/keys", None).await.json();
    let quotas = listed["keys"][0]["limits"]["quotas"].as_array().unwrap();
    assert_eq!(quotas.len(), 16);
    assert_eq!(quotas[15]["model"], long_model('p', 256));

    // Refused naming the field, and nothing changes.
    for (quotas, says) in [
        (json!(["tokens=1G/day"]), "not a whole number"),
        (json!(["tokens=10/week"]), "minute, hour, day or month"),
        (json!(["tokens=1k/day@"]), "a model after `@`"),
        (json!(["tokens=1k/day@gpt 4o"]), "visible ASCII"),
        (json!(["tokens=0k/day"]), "not between 1"),
        (json!(["cents=5/day"]), "the kind must be"),
        (
            json!(["tokens=1/day@a", "tokens=2/hour@a"]),
            "only once (per model)",
        ),
        (
            json!([format!("tokens=1/day@{}", long_model('x', 257))]),
            "at most 256 bytes",
        ),
        (
            json!((0..17)
                .map(|i| format!("tokens=1/day@m{i}"))
                .collect::<Vec<_>>()),
            "at most 16 quotas",
        ),
    ] {
        let reply = h
            .admin(Method::PUT, &path, Some(json!({ "quotas": quotas })))
            .await;
        let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error["field"], "quota", "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(says), "{quotas}: {message}");
        let body = json!({"name": "refused", "quotas": quotas});
        let reply = h.admin(Method::POST, "/v1/keys", Some(body)).await;
        reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let listed = h.admin(Method::GET, "/v1/keys", None).await.json();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);
    assert_eq!(
        listed["keys"][0]["limits"]["quotas"][0]["model"],
        long_model('a', 256)
    );
}

/// A grant ask names its quota by kind and model: each counter is the
/// quota's name, an unscoped quota and the scoped ones of its kind count
/// apart, and a model the key has no quota for is `no_quota`.
async fn grants_charge_each_quota_by_its_name(backend: Backend) {
    let h = Harness::new(backend).await;
    let long = long_model('z', 256);
    let created = create(
        &h,
        json!({"name": "llm", "quotas": [
            "tokens=1000/day", "tokens=300/day@gpt-4o", "input_tokens=5k/minute",
            format!("output_tokens=40/hour@{long}"), format!("response_bytes=1KiB/hour@{long}")]}),
    )
    .await;
    let key_id = created["id"].as_i64().unwrap();
    let item = |n: u64, quota: &str, model: Option<&str>, need: u64| {
        let mut ask = json!({"grant_id": id(n), "key_id": key_id, "quota": quota,
                             "need": need, "recent_use": 0});
        if let Some(model) = model {
            ask["model"] = json!(model);
        }
        ask
    };
    let body = json!({"asks": [
        item(1, "tokens", None, 100),
        item(2, "tokens", Some("gpt-4o"), 300),
        item(3, "tokens", Some("gpt-4o"), 1),
        item(4, "tokens", Some("o3"), 1),
        item(5, "input_tokens", Some("gpt-4o"), 1),
        item(6, "input_tokens", None, 70),
        item(7, "output_tokens", Some(&long), 40),
    ]});
    let reply = grant_call(&h, &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let grants = reply.json()["grants"].clone();
    let seen: Vec<(&str, u64, u64, u64)> = grants
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["status"].as_str().unwrap(),
                g["amount"].as_u64().unwrap(),
                g["charged"].as_u64().unwrap(),
                g["limit"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("granted", 100, 100, 1000),
            ("granted", 300, 300, 300),
            ("exhausted", 0, 300, 300),
            ("no_quota", 0, 0, 0),
            ("no_quota", 0, 0, 0),
            ("granted", 70, 70, 5000),
            ("granted", 40, 40, 40),
        ]
    );
    // A minute window: the UTC minute of the grant.
    let start = grants[5]["window_start_ms"].as_i64().unwrap();
    assert_eq!(grants[5]["window_end_ms"].as_i64().unwrap() - start, 60_000);
    assert_eq!(start % 60_000, 0);

    let store = &h.db.store;
    let day = grants[0]["window_start_ms"].as_i64().unwrap();
    let hour = grants[6]["window_start_ms"].as_i64().unwrap();
    let long_name = tollgate_wire::quota_name(QuotaKind::OutputTokens, Some(&long));
    // The longest name of all: a settled quota of the longest kind.
    let settle = json!({"settlements": [{"settlement_id": id(10), "key_id": key_id,
                                         "quota": "response_bytes", "model": long, "amount": 9}]});
    let done = grant_call(&h, &settle).await.json()["settlements"][0].clone();
    assert_eq!(
        (done["status"].clone(), done["charged"].clone()),
        (json!("granted"), json!(9))
    );
    let longest = tollgate_wire::quota_name(QuotaKind::ResponseBytes, Some(&long));
    assert_eq!(longest.len(), 14 + 1 + 256, "the longest quota name");
    assert_eq!(store.charge(&id(10)).await.unwrap().unwrap().quota, longest);
    for (name, window, charged) in [
        (longest.as_str(), hour, 9),
        ("tokens", day, 100),
        ("tokens@gpt-4o", day, 300),
        ("tokens@o3", day, 0),
        ("input_tokens", start, 70),
        (long_name.as_str(), hour, 40),
    ] {
        let counter = store.charged_in(key_id, name, window).await.unwrap();
        assert_eq!(counter, charged, "the counter of {name}");
    }
    assert_eq!(
        store.charge(&id(2)).await.unwrap().unwrap().quota,
        "tokens@gpt-4o"
    );
    assert_eq!(
        store.charge(&id(7)).await.unwrap().unwrap().quota,
        long_name
    );

    // A scoped grant is given back to its own counter.
    let back = json!({"returns": [{"grant_id": id(2), "unused": 120}]});
    assert_eq!(
        grant_call(&h, &back).await.json()["returns"][0]["returned"],
        120
    );
    assert_eq!(
        store
            .charged_in(key_id, "tokens@gpt-4o", day)
            .await
            .unwrap(),
        180
    );
    assert_eq!(store.charged_in(key_id, "tokens", day).await.unwrap(), 100);

    // Token kinds are granted, never settled; a model no quota can be
    // scoped to is refused naming the item.
    let mut no_model = item(8, "tokens", None, 1);
    no_model["model"] = json!("");
    for (body, field, says) in [
        (
            json!({"settlements": [{"settlement_id": id(8), "key_id": key_id,
                                    "quota": "output_tokens", "amount": 1}]}),
            "settlements[0].quota",
            "granted at admission",
        ),
        (
            json!({"asks": [item(8, "tokens", Some("gpt 4o"), 1)]}),
            "asks[0].model",
            "visible ASCII",
        ),
        (
            json!({"asks": [no_model]}),
            "asks[0].model",
            "a model after",
        ),
        (
            json!({"asks": [item(9, "tokens", None, 1), item(8, "tokens", Some(&format!("{long}z")), 1)]}),
            "asks[1].model",
            "at most 256 bytes",
        ),
        (
            json!({"settlements": [{"settlement_id": id(8), "key_id": key_id,
                                    "quota": "units", "model": "caf\u{e9}", "amount": 1}]}),
            "settlements[0].model",
            "visible ASCII",
        ),
    ] {
        let reply = grant_call(&h, &body).await;
        let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error["field"], field, "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(says), "{field}: {message}");
    }
    for n in [8, 9] {
        assert!(
            store.charge(&id(n)).await.unwrap().is_none(),
            "nothing charged"
        );
    }
    assert_eq!(store.charged_in(key_id, "tokens", day).await.unwrap(), 100);
}

/// `usage reconcile` of token quotas: per quota name, the allowed rows'
/// tokens in the window (input + output for `tokens`; only the model's
/// rows, byte for byte, for a scoped quota; a minute window its own
/// minute), beside the counters, and a ledger over the limit flagged as
/// for requests.
async fn reconcile_counts_token_quotas_from_the_ledger(backend: Backend) {
    const HOUR_MS: u64 = 3_600_000;
    let h = Harness::new(backend).await;
    let created = create(
        &h,
        json!({"name": "llm", "quotas": [
            "tokens=1k/day", "input_tokens=500/hour@gpt-4o", "output_tokens=50/minute@gpt-4o",
            "tokens=240/month@claude-sonnet-4"]}),
    )
    .await;
    let key_id = created["id"].as_i64().unwrap();
    // Half past the previous hour: its minute, and the minute before in
    // the same hour.
    let t = now_ms() / HOUR_MS * HOUR_MS - HOUR_MS / 2;
    let llm = |id: &str, at: u64, outcome: &str, model: &str, tokens: [u64; 2]| {
        let mut r = record(id, key_id);
        r["timestamp_ms"] = json!(at);
        r["outcome"] = json!(outcome);
        r["llm"] = json!({"api": "openai.chat", "model": model, "streamed": false,
                          "usage_source": "reported", "input_tokens": tokens[0],
                          "output_tokens": tokens[1], "cached_input_tokens": 0,
                          "reasoning_tokens": 0});
        r
    };
    let mut plain = record("plain", key_id);
    plain["timestamp_ms"] = json!(t);
    let batch = json!([
        llm("gpt", t, "allowed", "gpt-4o", [120, 30]),
        llm("gpt-earlier", t - 60_000, "allowed", "gpt-4o", [80, 11]),
        llm("gpt-upper", t, "allowed", "GPT-4o", [7, 3]),
        llm("gpt-space", t, "allowed", "gpt-4o ", [2, 1]),
        llm("gpt-refused", t, "quota_exceeded", "gpt-4o", [900, 900]),
        llm("claude", t, "allowed", "claude-sonnet-4", [200, 40]),
        plain,
    ]);
    let reply = h.ingest(&batch).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let at_ms = i64::try_from(t).unwrap();
    let ask = |n: u64, kind: QuotaKind, model: Option<&str>, need: u64| GrantAsk {
        model: model.map(str::to_owned),
        ..ask(id(n), key_id, kind, need, 0)
    };
    let grants = GrantRequest {
        asks: vec![
            ask(1, QuotaKind::Tokens, None, 494),
            ask(2, QuotaKind::InputTokens, Some("gpt-4o"), 200),
            ask(3, QuotaKind::OutputTokens, Some("gpt-4o"), 30),
            ask(4, QuotaKind::Tokens, Some("claude-sonnet-4"), 240),
        ],
        ..Default::default()
    };
    let reply = answer(&h.db.store, &grants, at_ms).await.unwrap();
    assert!(
        reply
            .grants
            .iter()
            .all(|g| g.status == GrantStatus::Granted),
        "{reply:?}"
    );

    let at = sidecar::domain::clock::from_unix_ms(t).unwrap();
    let reconcile =
        |window| sidecar::cli::reconcile::reconcile(&h.db.store, Some(key_id), window, at);
    let rows = reconcile(None).await.unwrap();
    let seen: Vec<(&str, Option<&str>, i64, u128, bool)> = rows
        .iter()
        .map(|r| {
            (
                r.quota.as_str(),
                r.model.as_deref(),
                r.charged,
                r.ledger,
                r.over_limit,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "tokens",
                None,
                494,
                120 + 30 + 80 + 11 + 7 + 3 + 2 + 1 + 200 + 40,
                false
            ),
            (
                "tokens@claude-sonnet-4",
                Some("claude-sonnet-4"),
                240,
                240,
                false
            ),
            ("input_tokens@gpt-4o", Some("gpt-4o"), 200, 200, false),
            ("output_tokens@gpt-4o", Some("gpt-4o"), 30, 30, false),
        ]
    );
    for row in &rows {
        assert!(row.charged_at_admission && !row.ledger_differs, "{row:?}");
    }
    let minute = &rows[3];
    assert_eq!(minute.window, tollgate_wire::Window::Minute);
    let minute_start = at_ms / 60_000 * 60_000;
    let start = sidecar::domain::clock::from_unix_ms(minute_start as u64).unwrap();
    assert_eq!(
        minute.window_start,
        sidecar::domain::clock::format_rfc3339(start)
    );
    let json = serde_json::to_value(minute).unwrap();
    assert_eq!(
        (
            json["quota"].clone(),
            json["kind"].clone(),
            json["model"].clone()
        ),
        (
            json!("output_tokens@gpt-4o"),
            json!("output_tokens"),
            json!("gpt-4o")
        )
    );
    assert!(serde_json::to_value(&rows[0])
        .unwrap()
        .get("model")
        .is_none());

    // More output tokens of gpt-4o in the minute than its quota: flagged,
    // and only that quota (its hour's input stays within 500).
    h.ingest(&json!([llm(
        "gpt-more",
        t + 1,
        "allowed",
        "gpt-4o",
        [100, 25]
    )]))
    .await;
    let only_minutes = reconcile(Some(tollgate_wire::Window::Minute))
        .await
        .unwrap();
    assert_eq!(only_minutes.len(), 1);
    assert_eq!(
        (only_minutes[0].ledger, only_minutes[0].over_limit),
        (55, true)
    );
    let rows = reconcile(None).await.unwrap();
    let over: Vec<&str> = rows
        .iter()
        .filter(|r| r.over_limit)
        .map(|r| r.quota.as_str())
        .collect();
    assert_eq!(over, ["output_tokens@gpt-4o"]);
    assert_eq!(rows[2].ledger, 300);
}
