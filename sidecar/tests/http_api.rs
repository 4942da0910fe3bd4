//! The sidecar's HTTP API, driven in-process, against SQLite and MySQL alike.
//!
//! Every test below runs twice: `sqlite::<name>` on a temporary file and
//! `mysql::<name>` on a database of its own on the server named by
//! `TOLLGATE_TEST_MYSQL_URL` (unset or unreachable: the MySQL half fails).

#[macro_use]
mod support;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use sidecar::cli::rewrap::rewrap_signing_secrets;
use sidecar::domain::clock::{format_rfc3339, now_ms as now_instant, parse_rfc3339};
use sidecar::domain::sealed::{Keyring, MasterKey, SealedSecret};
use sidecar::domain::signing_secret::SigningSecret;
use sidecar::store::registry::RegisterError;
use sidecar::store::{KeyStatus, NewKey, Store, SummaryFilter};
use support::*;
use tollgate_wire::{
    Outcome, INTERNAL_TOKEN_HEADER, MAX_BODY_BYTES, MAX_RESPONSE_BYTES, MAX_TIMESTAMP_MS,
    MAX_UNITS, MAX_USAGE_BATCH, USAGE_PATH, VERIFY_PATH,
};

on_both_backends!(
    health_and_readiness,
    unknown_routes_and_methods_answer_json,
    internal_endpoints_require_the_internal_token,
    verify_gives_each_verdict,
    verify_refuses_bad_input,
    verify_ignores_fields_it_does_not_know,
    ingest_stores_a_batch_once,
    ingest_stores_records_with_fields_it_does_not_know,
    ingest_refuses_outcomes_outside_the_contract,
    ingest_counts_duplicates_inside_one_batch,
    ingest_refuses_bad_batches_whole,
    ingest_refuses_oversized_batches_and_bodies,
    ingest_refuses_records_that_cannot_be_true,
    usage_summary_adds_up_rows_stored_before_counts_were_bounded,
    admin_api_requires_the_admin_token,
    admin_api_manages_keys,
    admin_api_refuses_bad_input,
    admin_api_refuses_an_expiry_that_has_passed,
    keys_past_their_expiry_are_listed_expired,
    usage_summary_totals_per_key_and_outcome,
    plaintext_key_is_stored_nowhere,
    database_down_answers_503_and_stores_nothing,
    metrics_count_routes_verifications_and_rows,
    signing_secrets_are_shown_once_and_handed_only_to_the_filter,
    signing_secrets_are_stored_only_sealed,
    a_signing_secret_needs_a_master_key,
    a_signing_secret_that_does_not_open_answers_503,
    rewrap_moves_every_signing_secret_to_the_new_master_key,
);

/// MySQL only: the server drops every connection (a restart, a proxy's idle
/// timeout); the next calls reconnect instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_calls_survive_connections_the_server_dropped() {
    let h = Harness::new(Backend::MySql).await;
    let created = create_key(&h, "k", None).await;
    let key_hash = hash_key(created["key"].as_str().unwrap());
    assert_eq!(h.verify(&key_hash).await.json()["verdict"], "active");
    assert_eq!(
        h.ingest(&json!([record("before", 1)])).await.status,
        StatusCode::OK
    );

    let killer = h.db.observer().await;
    let Store::MySql(killer_store) = &killer else {
        unreachable!()
    };
    let mut conn = killer_store.pool().acquire().await.unwrap();
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM information_schema.processlist \
         WHERE db = DATABASE() AND id <> CONNECTION_ID()",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert!(
        ids.len() >= 2,
        "expected the app's pool and look-up connections"
    );
    for id in ids {
        let _ = sqlx::query(&format!("KILL CONNECTION {id}"))
            .execute(&mut *conn)
            .await;
    }
    drop(conn);

    let reply = h.verify(&key_hash).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["verdict"], "active");
    let reply = h.ingest(&json!([record("after", 1)])).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(h.get("/readyz").await.status, StatusCode::OK);
    killer.close().await;
}

/// A verify reply without its feed position (which every reply carries:
/// checked here, compared in feed_api.rs).
fn verdict_of(reply: &Reply) -> Value {
    let mut body = reply.json();
    let cursor = body.as_object_mut().and_then(|o| o.remove("feed_cursor"));
    assert!(cursor.is_some_and(|c| c.is_u64()), "{body}");
    body
}

async fn create_key(h: &Harness, name: &str, expires_at: Option<&str>) -> Value {
    let mut body = json!({ "name": name });
    if let Some(at) = expires_at {
        body["expires_at"] = json!(at);
    }
    let reply = h.admin(Method::POST, "/v1/keys", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json()
}

/// Stores a key the way an older sidecar could have: with an `expires_at`
/// already in the past (the API now refuses to create one). Returns its id
/// and plaintext.
async fn store_key_expired_at(h: &Harness, name: &str, expires_at: &str) -> (i64, String) {
    let key = format!("tg_{name}_stored_directly");
    let stored =
        h.db.store
            .insert_key(&NewKey {
                name: name.to_string(),
                prefix: key[..9].to_string(),
                key_hash: hash_key(&key),
                created_at: now_instant(),
                expires_at: Some(parse_rfc3339(expires_at).unwrap()),
                sealed_signing_secret: None,
                limits: Default::default(),
                team_id: None,
            })
            .await
            .unwrap();
    (stored.id, key)
}

async fn health_and_readiness(backend: Backend) {
    let h = Harness::new(backend).await;
    let reply = h.get("/healthz").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({"status": "ok"}));
    let reply = h.get("/readyz").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["status"], "ready");
}

async fn unknown_routes_and_methods_answer_json(backend: Backend) {
    let h = Harness::new(backend).await;
    h.get("/nope")
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    h.get(VERIFY_PATH)
        .await
        .expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let reply = h
        .send(Request::delete("/v1/keys").body(Body::empty()).unwrap())
        .await;
    reply.expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

async fn internal_endpoints_require_the_internal_token(backend: Backend) {
    let h = Harness::new(backend).await;
    for path in [VERIFY_PATH, USAGE_PATH] {
        let missing = h
            .send(
                Request::post(path)
                    .header("content-type", "application/json")
                    .body(Body::from("[]"))
                    .unwrap(),
            )
            .await;
        missing.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(missing.headers[header::WWW_AUTHENTICATE], "Bearer");

        let wrong = h
            .send(
                Request::post(path)
                    .header(INTERNAL_TOKEN_HEADER, format!("{INTERNAL_TOKEN}x"))
                    .body(Body::from("[]"))
                    .unwrap(),
            )
            .await;
        wrong.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

        // The admin token is not the internal token.
        let admin = h
            .send(
                Request::post(path)
                    .header(INTERNAL_TOKEN_HEADER, ADMIN_TOKEN)
                    .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
                    .body(Body::from("[]"))
                    .unwrap(),
            )
            .await;
        admin.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

async fn verify_gives_each_verdict(backend: Backend) {
    let h = Harness::new(backend).await;
    let active = create_key(&h, "active", Some("2999-01-01T00:00:00Z")).await;
    let (expired_id, expired_key) =
        store_key_expired_at(&h, "expired", "2020-01-01T00:00:00Z").await;
    let expired = json!({"id": expired_id, "key": expired_key});
    let revoked = create_key(&h, "revoked", None).await;
    let reply = h
        .admin(
            Method::POST,
            &format!("/v1/keys/{}/revoke", revoked["id"]),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let verdict = |key: &Value| hash_key(key["key"].as_str().unwrap());

    let reply = h.verify(&verdict(&active)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        verdict_of(&reply),
        json!({"verdict": "active", "key_id": active["id"], "expires_at": 32_472_144_000i64})
    );

    let reply = h.verify(&verdict(&expired)).await.json();
    assert_eq!(reply["verdict"], "expired");
    assert_eq!(reply["key_id"], expired["id"]);
    assert_eq!(reply["expires_at"], 1_577_836_800i64);

    let reply = verdict_of(&h.verify(&verdict(&revoked)).await);
    assert_eq!(
        reply,
        json!({"verdict": "revoked", "key_id": revoked["id"]})
    );

    let reply = h.verify(&hash_key("tg_never_registered")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(verdict_of(&reply), json!({"verdict": "not_found"}));
}

async fn verify_refuses_bad_input(backend: Backend) {
    let h = Harness::new(backend).await;
    let upper = hash_key("tg_x").to_uppercase();
    for bad in ["", "abc", upper.as_str(), &"g".repeat(64)] {
        let error = h
            .verify(bad)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error["field"], "key_hash", "{bad:?}");
    }
    h.internal(VERIFY_PATH, "{\"key_hash\":")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "malformed_json");
    let error = h
        .internal(VERIFY_PATH, r#"{"key_hash": 5}"#)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(error["field"], "key_hash");
    let error = h
        .internal(VERIFY_PATH, "{}")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(error["field"], "key_hash");
    // Someone sending the plaintext key instead of its hash is refused, not
    // looked up.
    let error = h
        .internal(VERIFY_PATH, r#"{"key": "tg_x"}"#)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(error["field"], "key_hash");
}

async fn verify_ignores_fields_it_does_not_know(backend: Backend) {
    let h = Harness::new(backend).await;
    let created = create_key(&h, "k", None).await;
    let key_hash = hash_key(created["key"].as_str().unwrap());
    // What a newer filter might add.
    let body = json!({"key_hash": key_hash, "want_grant": true, "instance": "envoy-1"});
    let reply = h.internal(VERIFY_PATH, body.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["verdict"], "active");
    assert_eq!(reply.json()["key_id"], created["id"]);
}

async fn ingest_stores_a_batch_once(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 3).await;
    let reply = h.ingest(&json!([])).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"received": 0, "inserted": 0, "duplicates": 0})
    );

    let batch: Vec<Value> = (0..500)
        .map(|i| record(&format!("req-{i:04}"), 1 + i % 3))
        .collect();
    let batch = Value::Array(batch);
    let reply = h.ingest(&batch).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"received": 500, "inserted": 500, "duplicates": 0})
    );

    let reply = h.ingest(&batch).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"received": 500, "inserted": 0, "duplicates": 500})
    );
    assert_eq!(count_usage(&h.db.store, None).await, 500);
    for i in [0, 249, 499] {
        assert_eq!(
            count_usage(&h.db.store, Some(&format!("req-{i:04}"))).await,
            1
        );
    }

    // A batch that overlaps a committed one stores only the new records.
    let overlap = json!([record("req-0001", 1), record("req-new", 1)]);
    assert_eq!(
        h.ingest(&overlap).await.json(),
        json!({"received": 2, "inserted": 1, "duplicates": 1})
    );
    assert_eq!(count_usage(&h.db.store, None).await, 501);
}

async fn ingest_counts_duplicates_inside_one_batch(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 2).await;
    let batch = json!([
        record("a", 1),
        record("b", 1),
        record("a", 1),
        record("a", 2)
    ]);
    let reply = h.ingest(&batch).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"received": 4, "inserted": 2, "duplicates": 2})
    );
    assert_eq!(count_usage(&h.db.store, Some("a")).await, 1);
    assert_eq!(count_usage(&h.db.store, None).await, 2);
}

async fn ingest_stores_records_with_fields_it_does_not_know(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 1).await;
    // A newer filter reports what this sidecar has no column for yet, and
    // an older one no units.
    let mut newer = record("newer-1", 1);
    newer["units"] = json!(3);
    newer["upstream"] = json!({"cluster": "ai", "attempts": [1, 2]});
    let mut older = record("older-1", 1);
    older.as_object_mut().unwrap().remove("units");
    let reply = h.ingest(&json!([newer, older])).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"received": 2, "inserted": 2, "duplicates": 0})
    );
    assert_eq!(count_usage(&h.db.store, Some("newer-1")).await, 1);
    let summary = h.admin(Method::GET, "/v1/usage/summary", None).await.json();
    assert_eq!(
        summary["rows"],
        json!([{"api_key_id": 1, "outcome": "allowed", "requests": 2, "request_bytes": 200, "response_bytes": 80, "units": 3, "input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0, "reasoning_tokens": 0, "cost_micros": null, "currency": null, "priced_rows": 0, "unpriced_rows": 0}])
    );
}

async fn ingest_refuses_outcomes_outside_the_contract(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 1).await;
    let refused = |i: usize, outcome: &Value| {
        let mut batch = vec![
            record(&format!("ok-{i}"), 1),
            record(&format!("bad-{i}"), 1),
        ];
        batch[1]["outcome"] = outcome.clone();
        Value::Array(batch)
    };
    for (i, outcome) in [json!("made_up"), json!("ALLOWED"), json!("")]
        .iter()
        .enumerate()
    {
        let error = h
            .ingest(&refused(i, outcome))
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error["field"], "[1].outcome", "{outcome}");
    }
    // serde_json files a value that is not a string where an enum goes
    // under syntax errors, so these answer `malformed_json`; still 400,
    // still naming the field.
    for (i, outcome) in [json!(401), json!(null), json!(["allowed"])]
        .iter()
        .enumerate()
    {
        let reply = h.ingest(&refused(10 + i, outcome)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
        assert_eq!(reply.json()["error"]["field"], "[1].outcome", "{outcome}");
    }
    assert_eq!(count_usage(&h.db.store, None).await, 0);
    // Every code of the contract is accepted.
    let batch: Vec<Value> = std::iter::once(Outcome::Allowed)
        .chain(Outcome::DENIALS)
        .map(|outcome| {
            let mut r = record(&format!("code-{outcome}"), 1);
            r["outcome"] = json!(outcome.as_str());
            r
        })
        .collect();
    let reply = h.ingest(&Value::Array(batch)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["inserted"], 1 + Outcome::DENIALS.len());
    assert_eq!(
        count_usage(&h.db.store, None).await,
        1 + Outcome::DENIALS.len() as i64
    );
}

async fn ingest_refuses_bad_batches_whole(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 1).await;

    // Wrong type in record 3: serde names it.
    let mut batch: Vec<Value> = (0..5).map(|i| record(&format!("t-{i}"), 1)).collect();
    batch[3]["status_code"] = json!("200");
    let error = h
        .ingest(&Value::Array(batch.clone()))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(error["field"], "[3].status_code");

    // Missing field.
    batch[3] = record("t-3", 1);
    batch[2].as_object_mut().unwrap().remove("outcome");
    let error = h
        .ingest(&Value::Array(batch.clone()))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(error["field"], "[2].outcome");

    // Negative byte count.
    batch[2] = record("t-2", 1);
    batch[4]["request_bytes"] = json!(-1);
    let error = h
        .ingest(&Value::Array(batch.clone()))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(error["field"], "[4].request_bytes");

    // Well-formed but invalid records: validate names record and field.
    batch[4] = record("t-4", 1);
    for (i, field, value) in [
        (1, "endpoint", json!("/a\nb")),
        (2, "status_code", json!(42)),
        (0, "api_key_id", json!(0)),
        (4, "request_id", json!("x".repeat(65))),
        (3, "method", json!("")),
        (1, "timestamp_ms", json!(300_000_000_000_000u64)),
    ] {
        let mut bad = batch.clone();
        bad[i][field] = value;
        let error = h
            .ingest(&Value::Array(bad))
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error["field"], format!("[{i}].{field}"));
    }

    // Not an array, not JSON, trailing garbage.
    h.ingest(&json!({"request_id": "x"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    h.internal(USAGE_PATH, "[{")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "malformed_json");
    h.internal(USAGE_PATH, "[] x")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "malformed_json");

    // Nothing of any refused batch was stored.
    assert_eq!(count_usage(&h.db.store, None).await, 0);
    // The good batch goes in whole.
    assert_eq!(h.ingest(&Value::Array(batch)).await.json()["inserted"], 5);
}

async fn ingest_refuses_oversized_batches_and_bodies(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 1).await;
    let batch: Vec<Value> = (0..=MAX_USAGE_BATCH)
        .map(|i| record(&format!("big-{i}"), 1))
        .collect();
    h.ingest(&Value::Array(batch))
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large");

    let batch: Vec<Value> = (0..MAX_USAGE_BATCH)
        .map(|i| record(&format!("max-{i}"), 1))
        .collect();
    let reply = h.ingest(&Value::Array(batch)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["inserted"], MAX_USAGE_BATCH);

    let huge = format!("[\"{}\"]", "x".repeat(5 * 1024 * 1024));
    h.internal(USAGE_PATH, huge)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(count_usage(&h.db.store, None).await, MAX_USAGE_BATCH as i64);
}

/// A record no real exchange can produce is refused, and its batch with it,
/// with 400 naming the record and field: byte counts past what the gateway
/// lets in or any response plausibly carries, a key id no key has, a
/// timestamp more than the skew (24 h) away from now. Nothing is stored, and
/// the summary still works.
async fn ingest_refuses_records_that_cannot_be_true(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 2).await;
    let batch: Vec<Value> = (0..5)
        .map(|i| record(&format!("f-{i}"), 1 + i % 2))
        .collect();
    let day_ms = 86_400_000;
    for (i, field, value) in [
        (3, "request_bytes", json!(i64::MAX)),
        (3, "request_bytes", json!(MAX_BODY_BYTES + 1)),
        (1, "response_bytes", json!(i64::MAX)),
        (1, "response_bytes", json!(MAX_RESPONSE_BYTES + 1)),
        (4, "units", json!(MAX_UNITS + 1)),
        (4, "units", json!(i64::MAX)),
        (0, "api_key_id", json!(3)),
        (4, "api_key_id", json!(i64::MAX)),
        (2, "timestamp_ms", json!(0)),
        (2, "timestamp_ms", json!(MAX_TIMESTAMP_MS)),
        (2, "timestamp_ms", json!(now_ms() - day_ms - 60_000)),
        (2, "timestamp_ms", json!(now_ms() + day_ms + 60_000)),
    ] {
        let mut bad = batch.clone();
        bad[i][field] = value.clone();
        let error = h
            .ingest(&Value::Array(bad))
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(
            error["field"],
            format!("[{i}].{field}"),
            "{field} = {value}"
        );
    }
    // Two unknown key ids: the first is named.
    let mut bad = batch.clone();
    bad[2]["api_key_id"] = json!(7);
    bad[4]["api_key_id"] = json!(8);
    let error = h
        .ingest(&Value::Array(bad))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(error["field"], "[2].api_key_id");
    assert!(error["message"].as_str().unwrap().contains('7'), "{error}");
    assert_eq!(count_usage(&h.db.store, None).await, 0);

    // The largest counts an exchange can have go in, and add up.
    let mut largest = batch.clone();
    for r in &mut largest {
        r["request_bytes"] = json!(MAX_BODY_BYTES);
        r["response_bytes"] = json!(MAX_RESPONSE_BYTES);
        r["units"] = json!(MAX_UNITS);
    }
    let reply = h.ingest(&Value::Array(largest)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["inserted"], 5);
    let summary = h.admin(Method::GET, "/v1/usage/summary", None).await;
    assert_eq!(summary.status, StatusCode::OK, "{}", summary.text());
    assert_eq!(
        summary.json()["rows"],
        json!([
            {"api_key_id": 1, "outcome": "allowed", "requests": 3,
             "request_bytes": 3 * MAX_BODY_BYTES, "response_bytes": 3 * MAX_RESPONSE_BYTES,
             "units": 3 * MAX_UNITS, "input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0, "reasoning_tokens": 0, "cost_micros": null, "currency": null, "priced_rows": 0, "unpriced_rows": 0},
            {"api_key_id": 2, "outcome": "allowed", "requests": 2,
             "request_bytes": 2 * MAX_BODY_BYTES, "response_bytes": 2 * MAX_RESPONSE_BYTES,
             "units": 2 * MAX_UNITS, "input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0, "reasoning_tokens": 0, "cost_micros": null, "currency": null, "priced_rows": 0, "unpriced_rows": 0},
        ])
    );
}

/// Rows an older sidecar stored with counts up to `i64::MAX` (two of them
/// overflowed a 64-bit `SUM`) are summed exactly: the summary never fails
/// or wraps on what the ledger holds. They were stored before the rollups
/// existed: the migration that adds them rolls them up.
async fn usage_summary_adds_up_rows_stored_before_counts_were_bounded(backend: Backend) {
    let db = TestDb::at_migration(backend, 2).await;
    register_keys(&db.store, 2).await;
    store_forged_usage(&db.store, "old-1", 1, i64::MAX).await;
    store_forged_usage(&db.store, "old-2", 1, i64::MAX).await;
    store_forged_usage(&db.store, "old-3", 2, i64::MAX).await;
    db.store.migrate().await.expect("the rollups' migration");
    let h = Harness::over(db, Some(ADMIN_TOKEN));
    assert_eq!(
        h.ingest(&json!([record("new-1", 2)])).await.status,
        StatusCode::OK
    );
    let reply = h.admin(Method::GET, "/v1/usage/summary", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let two = 2 * i64::MAX as u64;
    let one_and_new = i64::MAX as u64 + 100;
    let one_and_new_response = i64::MAX as u64 + 40;
    assert_eq!(
        reply.json()["rows"],
        json!([
            {"api_key_id": 1, "outcome": "allowed", "requests": 2, "request_bytes": two, "response_bytes": two, "units": 0, "input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0, "reasoning_tokens": 0, "cost_micros": null, "currency": null, "priced_rows": 0, "unpriced_rows": 0},
            {"api_key_id": 2, "outcome": "allowed", "requests": 2, "request_bytes": one_and_new, "response_bytes": one_and_new_response, "units": 6, "input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0, "reasoning_tokens": 0, "cost_micros": null, "currency": null, "priced_rows": 0, "unpriced_rows": 0},
        ])
    );

    // A third row of key 1 passes 64 bits; the totals are 128-bit.
    let db = TestDb::at_migration(backend, 2).await;
    register_keys(&db.store, 1).await;
    for id in ["old-1", "old-2", "old-3"] {
        store_forged_usage(&db.store, id, 1, i64::MAX).await;
    }
    db.store.migrate().await.expect("the rollups' migration");
    let rows = db
        .store
        .usage_summary(&SummaryFilter::default())
        .await
        .unwrap();
    assert_eq!(rows[0].totals.request_bytes, 3 * i64::MAX as u128);
    let h = Harness::over(db, Some(ADMIN_TOKEN));
    let reply = h.admin(Method::GET, "/v1/usage/summary?key=1", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(
        reply
            .text()
            .contains("\"request_bytes\":27670116110564327421"),
        "{}",
        reply.text()
    );
    // The forged rows are of 2025-11-24 10:00: a summary from that hour
    // counts them, one from the next does not.
    for (since, rows) in [("2025-11-24T10:59:59Z", 1), ("2025-11-24T11:00:00Z", 0)] {
        let reply = h
            .admin(
                Method::GET,
                &format!("/v1/usage/summary?since={since}"),
                None,
            )
            .await;
        assert_eq!(
            reply.json()["rows"].as_array().unwrap().len(),
            rows,
            "{since}"
        );
    }
}

async fn admin_api_requires_the_admin_token(backend: Backend) {
    let h = Harness::new(backend).await;
    let routes = [
        (Method::POST, "/v1/keys", Some(json!({"name": "x"}))),
        (Method::GET, "/v1/keys", None),
        (Method::POST, "/v1/keys/1/revoke", None),
        (Method::GET, "/v1/usage/summary", None),
    ];
    for (method, path, body) in &routes {
        for auth in [
            None,
            Some(format!("Bearer {ADMIN_TOKEN}x")),
            Some(format!("Bearer {INTERNAL_TOKEN}")),
            Some(ADMIN_TOKEN.to_string()),
            Some(format!("Basic {ADMIN_TOKEN}")),
        ] {
            let mut builder = Request::builder().method(method.clone()).uri(*path);
            if let Some(auth) = &auth {
                builder = builder.header(header::AUTHORIZATION, auth);
            }
            let body = body
                .as_ref()
                .map_or(Body::empty(), |b| Body::from(b.to_string()));
            let reply = h.send(builder.body(body).unwrap()).await;
            reply.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
            assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
        }
    }
    // Nothing was created by the refused calls.
    assert!(h.db.store.list_keys().await.unwrap().is_empty());

    let disabled = Harness::with_admin(backend, None).await;
    for (method, path, _) in &routes {
        let reply = disabled
            .send(
                Request::builder()
                    .method(method.clone())
                    .uri(*path)
                    .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        let error = reply.expect_error(StatusCode::UNAUTHORIZED, "admin_api_disabled");
        assert!(error["message"].as_str().unwrap().contains("disabled"));
    }
}

async fn admin_api_manages_keys(backend: Backend) {
    let h = Harness::new(backend).await;
    let created = create_key(&h, "team-a", None).await;
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("tg_") && key.len() == 43, "{key}");
    assert_eq!(created["prefix"], &key[..9]);
    assert_eq!(created["name"], "team-a");
    assert_eq!(created["status"], "ACTIVE");
    assert_eq!(created["expires_at"], Value::Null);
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    let id = created["id"].as_i64().unwrap();

    let second = create_key(&h, "team-b", Some("2030-05-06T07:08:09+02:00")).await;
    assert_eq!(second["expires_at"], "2030-05-06T05:08:09.000Z");

    let list = h.admin(Method::GET, "/v1/keys", None).await;
    assert_eq!(list.status, StatusCode::OK);
    let keys = list.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["id"], id);
    assert_eq!(keys[0]["name"], "team-a");
    for k in &keys {
        assert!(k.get("key").is_none() && k.get("key_hash").is_none(), "{k}");
        assert_eq!(k["has_signing_secret"], false, "{k}");
        assert!(k.get("signing_secret").is_none(), "{k}");
    }
    assert!(!list.text().contains(key));

    let revoke_path = format!("/v1/keys/{id}/revoke");
    let reply = h.admin(Method::POST, &revoke_path, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["already_revoked"], false);
    assert_eq!(body["key"]["status"], "REVOKED");
    assert!(body["key"]["revoked_at"].is_string());

    let again = h.admin(Method::POST, &revoke_path, None).await.json();
    assert_eq!(again["already_revoked"], true);
    assert_eq!(again["key"]["revoked_at"], body["key"]["revoked_at"]);

    h.admin(Method::POST, "/v1/keys/999999/revoke", None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "key_not_found");
    let error = h
        .admin(Method::POST, "/v1/keys/abc/revoke", None)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(error["field"], "id");

    let keys = h.admin(Method::GET, "/v1/keys", None).await.json();
    assert_eq!(keys["keys"][0]["status"], "REVOKED");
    assert_eq!(keys["keys"][1]["status"], "ACTIVE");
}

async fn admin_api_refuses_bad_input(backend: Backend) {
    let h = Harness::new(backend).await;
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "a\u{7}b"}), "name"),
        (json!({"name": "x".repeat(201)}), "name"),
        // Format and bidi controls, and the line and paragraph separators.
        (json!({"name": "evil\u{202E}cod.exe"}), "name"),
        (json!({"name": "a\u{200B}b"}), "name"),
        (json!({"name": "a\u{2066}b\u{2069}"}), "name"),
        (json!({"name": "a\u{2028}b"}), "name"),
        (json!({"name": "a\u{2029}b"}), "name"),
        (json!({"name": "x", "expires_at": "tomorrow"}), "expires_at"),
        (json!({"name": 5}), "name"),
        (json!({}), "name"),
    ] {
        let error = h
            .admin(Method::POST, "/v1/keys", Some(body.clone()))
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error["field"], field, "{body}");
    }
    h.admin(
        Method::POST,
        "/v1/keys",
        Some(json!({"name": "x", "key": "mine"})),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(h.db.store.list_keys().await.unwrap().is_empty());
}

async fn admin_api_refuses_an_expiry_that_has_passed(backend: Backend) {
    let h = Harness::new(backend).await;
    let a_second_ago = format_rfc3339(now_instant() - time::Duration::seconds(1));
    for past in [
        "2020-01-01T00:00:00Z",
        "2020-01-01T02:00:00+02:00",
        a_second_ago.as_str(),
    ] {
        let body = json!({"name": "born-expired", "expires_at": past});
        let error = h
            .admin(Method::POST, "/v1/keys", Some(body))
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error["field"], "expires_at", "{past}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains("future"),
            "{error}"
        );
    }
    // Importing a key (the CLI's path) is refused the same way.
    let imported = sidecar::store::registry::register_key(
        &h.db.store,
        "legacy",
        "legacy-key-born-expired".to_string(),
        Some(parse_rfc3339("2020-01-01T00:00:00Z").unwrap()),
    )
    .await;
    assert!(
        matches!(
            imported,
            Err(RegisterError::Invalid {
                field: "expires_at",
                ..
            })
        ),
        "{imported:?}"
    );
    // No key was stored by any refused call.
    assert!(h.db.store.list_keys().await.unwrap().is_empty());
    assert_eq!(
        h.admin(Method::GET, "/v1/keys", None).await.json(),
        json!({"keys": []})
    );
}

async fn keys_past_their_expiry_are_listed_expired(backend: Backend) {
    let h = Harness::new(backend).await;
    let expires_at = now_instant() + time::Duration::milliseconds(1500);
    let expiring = create_key(&h, "expiring", Some(&format_rfc3339(expires_at))).await;
    let lasting = create_key(&h, "lasting", None).await;
    store_key_expired_at(&h, "long-gone", "2020-01-01T00:00:00Z").await;
    let (revoked, _) = store_key_expired_at(&h, "revoked", "2020-01-01T00:00:00Z").await;
    let reply = h
        .admin(Method::POST, &format!("/v1/keys/{revoked}/revoke"), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["key"]["status"], "REVOKED");

    let statuses = || async {
        let list = h.admin(Method::GET, "/v1/keys", None).await.json();
        list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k["name"].as_str().unwrap().to_string(), k["status"].clone()))
            .collect::<Vec<_>>()
    };
    let expected = |expiring: &str| {
        vec![
            ("expiring".to_string(), json!(expiring)),
            ("lasting".to_string(), json!("ACTIVE")),
            ("long-gone".to_string(), json!("EXPIRED")),
            ("revoked".to_string(), json!("REVOKED")),
        ]
    };
    assert_eq!(expiring["status"], "ACTIVE");
    assert_eq!(statuses().await, expected("ACTIVE"));
    let expiring_hash = hash_key(expiring["key"].as_str().unwrap());
    assert_eq!(h.verify(&expiring_hash).await.json()["verdict"], "active");

    let left = expires_at - now_instant();
    tokio::time::sleep(left.unsigned_abs() + std::time::Duration::from_millis(50)).await;
    assert_eq!(statuses().await, expected("EXPIRED"));
    // The list and the filter's verdict agree.
    assert_eq!(h.verify(&expiring_hash).await.json()["verdict"], "expired");
    // EXPIRED is computed when the key is read; the stored status is unchanged.
    let stored = h.db.store.list_keys().await.unwrap();
    assert!(
        stored
            .iter()
            .filter(|k| k.name != "revoked")
            .all(|k| k.status == KeyStatus::Active),
        "{stored:?}"
    );

    // Revoking an expired key makes it revoked, in the answer and the list.
    let reply = h
        .admin(
            Method::POST,
            &format!("/v1/keys/{}/revoke", expiring["id"]),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["key"]["status"], "REVOKED");
    assert_eq!(statuses().await[0].1, "REVOKED");
    assert_eq!(lasting["status"], "ACTIVE");
}

async fn usage_summary_totals_per_key_and_outcome(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 2).await;
    // Older than the query's window, inside ingestion's (24 h by default).
    let old = now_ms() - 20 * 3_600_000;
    let mut batch = vec![
        record("s1", 1),
        record("s2", 1),
        record("s3", 2),
        record("s4", 1),
        record("s5", 1),
    ];
    batch[2]["request_bytes"] = json!(1000);
    batch[3]["outcome"] = json!("invalid_api_key");
    batch[3]["status_code"] = json!(401);
    batch[4]["timestamp_ms"] = json!(old);
    assert_eq!(h.ingest(&Value::Array(batch)).await.status, StatusCode::OK);

    let all = h.admin(Method::GET, "/v1/usage/summary", None).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text());
    let all = all.json();
    assert_eq!(all["since"], Value::Null);
    assert_eq!(
        all["rows"],
        json!([
            {"api_key_id": 1, "outcome": "allowed", "requests": 3, "request_bytes": 300, "response_bytes": 120, "units": 18, "input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0, "reasoning_tokens": 0, "cost_micros": null, "currency": null, "priced_rows": 0, "unpriced_rows": 0},
            {"api_key_id": 1, "outcome": "invalid_api_key", "requests": 1, "request_bytes": 100, "response_bytes": 40, "units": 6, "input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0, "reasoning_tokens": 0, "cost_micros": null, "currency": null, "priced_rows": 0, "unpriced_rows": 0},
            {"api_key_id": 2, "outcome": "allowed", "requests": 1, "request_bytes": 1000, "response_bytes": 40, "units": 6, "input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0, "reasoning_tokens": 0, "cost_micros": null, "currency": null, "priced_rows": 0, "unpriced_rows": 0},
        ])
    );

    let recent = h
        .admin(Method::GET, "/v1/usage/summary?key=1&since=12h", None)
        .await
        .json();
    assert!(recent["since"].is_string());
    assert_eq!(
        recent["rows"],
        json!([
            {"api_key_id": 1, "outcome": "allowed", "requests": 2, "request_bytes": 200, "response_bytes": 80, "units": 12, "input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0, "reasoning_tokens": 0, "cost_micros": null, "currency": null, "priced_rows": 0, "unpriced_rows": 0},
            {"api_key_id": 1, "outcome": "invalid_api_key", "requests": 1, "request_bytes": 100, "response_bytes": 40, "units": 6, "input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0, "reasoning_tokens": 0, "cost_micros": null, "currency": null, "priced_rows": 0, "unpriced_rows": 0},
        ])
    );
    let since_instant = h
        .admin(
            Method::GET,
            "/v1/usage/summary?key=2&since=2000-01-01T00:00:00Z",
            None,
        )
        .await
        .json();
    assert_eq!(since_instant["rows"].as_array().unwrap().len(), 1);

    let error = h
        .admin(Method::GET, "/v1/usage/summary?since=yesterday", None)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(error["field"], "since");
    let error = h
        .admin(Method::GET, "/v1/usage/summary?key=abc", None)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(error["field"], "key");
}

async fn plaintext_key_is_stored_nowhere(backend: Backend) {
    let h = Harness::new(backend).await;
    let created = create_key(&h, "secretive", Some("2999-01-01T00:00:00Z")).await;
    let key = created["key"].as_str().unwrap().to_string();
    let imported = "legacy-plaintext-key-0001";
    sidecar::store::registry::register_key(&h.db.store, "legacy", imported.to_string(), None)
        .await
        .unwrap();
    assert_eq!(
        h.ingest(&json!([record("r1", 1)])).await.status,
        StatusCode::OK
    );

    let values = dump_every_value(&h.db.store).await;
    // The dump does see the tables: the name, prefix and hash are there.
    assert!(appears_in(&values, "secretive"));
    assert!(appears_in(&values, &hash_key(&key)));
    assert!(appears_in(&values, &key[..9]));
    // The plaintext is not, nor anything of it beyond the shown prefix.
    assert!(!appears_in(&values, &key), "plaintext key stored");
    assert!(
        !appears_in(&values, &key[9..]),
        "secret part of the key stored"
    );
    assert!(
        !appears_in(&values, imported),
        "imported plaintext key stored"
    );
    assert!(!appears_in(&values, &imported[9..]));
}

async fn database_down_answers_503_and_stores_nothing(backend: Backend) {
    let h = Harness::new(backend).await;
    let created = create_key(&h, "k", None).await;
    let key_hash = hash_key(created["key"].as_str().unwrap());
    let observer = h.db.observer().await;

    // The app's pool goes away; the database itself is still there.
    h.state.store.close().await;
    let batch = json!([record("down-1", 1), record("down-2", 1)]);
    h.verify(&key_hash)
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
    h.get("/readyz")
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
    // Each 503 says truthfully what was not done: a write stored nothing,
    // a read could not read.
    let message = |error: Value| error["message"].as_str().unwrap().to_string();
    let written = h
        .ingest(&batch)
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
    assert!(message(written).contains("nothing was stored"));
    for (path, undone) in [
        ("/v1/keys", "the key list could not be read"),
        ("/v1/usage/summary", "the usage summary could not be read"),
    ] {
        let read = h
            .admin(Method::GET, path, None)
            .await
            .expect_error(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
        let read = message(read);
        assert!(read.contains(undone), "{path}: {read}");
        assert!(!read.contains("stored"), "{path}: {read}");
    }
    assert_eq!(h.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(count_usage(&observer, None).await, 0);
    let metrics = h.get("/metrics").await.text();
    assert!(
        metrics.contains("tollgate_database_errors_total 5\n"),
        "{metrics}"
    );
    observer.close().await;

    // A server that cannot be reached at all.
    let (_state, app) = unreachable_mysql_app();
    let request = Request::post(USAGE_PATH)
        .header(INTERNAL_TOKEN_HEADER, INTERNAL_TOKEN)
        .body(Body::from(batch.to_string()))
        .unwrap();
    send(&app, request)
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
    send(&app, Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
}

async fn metrics_count_routes_verifications_and_rows(backend: Backend) {
    let h = Harness::new(backend).await;
    let created = create_key(&h, "m", None).await;
    h.verify(&hash_key(created["key"].as_str().unwrap())).await;
    h.verify(&hash_key("unknown")).await;
    h.ingest(&json!([record("m1", 1), record("m2", 1)])).await;
    h.ingest(&json!([record("m1", 1)])).await;
    h.admin(Method::POST, "/v1/keys/424242/revoke", None).await;
    h.get("/nowhere").await;

    let reply = h.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = reply.text();
    for line in [
        "tollgate_http_requests_total{route=\"/v1/internal/keys/verify\",status=\"200\"} 2\n",
        "tollgate_http_requests_total{route=\"/v1/internal/usage\",status=\"200\"} 2\n",
        "tollgate_http_requests_total{route=\"/v1/keys\",status=\"201\"} 1\n",
        "tollgate_http_requests_total{route=\"/v1/keys/{id}/revoke\",status=\"404\"} 1\n",
        "tollgate_http_requests_total{route=\"unmatched\",status=\"404\"} 1\n",
        "tollgate_key_verify_duration_seconds_count 2\n",
        "tollgate_key_verify_duration_seconds_bucket{le=\"+Inf\"} 2\n",
        "tollgate_usage_rows_ingested_total{result=\"inserted\"} 2\n",
        "tollgate_usage_rows_ingested_total{result=\"duplicate\"} 1\n",
        "tollgate_database_errors_total 0\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

/// MySQL only: a look-up the database does not answer (here: a table lock
/// held by another session) gives up after `LOOKUP_TIMEOUT` with 503, instead
/// of holding the request and its look-up connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_stalled_lookup_answers_503_in_bounded_time() {
    use sidecar::store::mysql::LOOKUP_TIMEOUT;
    use std::time::{Duration, Instant};

    let h = Harness::new(Backend::MySql).await;
    let created = create_key(&h, "k", None).await;
    let key_hash = hash_key(created["key"].as_str().unwrap());
    let locker = h.db.observer().await;
    let Store::MySql(locker_store) = &locker else {
        unreachable!()
    };
    let mut conn = locker_store.pool().acquire().await.unwrap();
    sqlx::query("LOCK TABLES api_keys WRITE")
        .execute(&mut *conn)
        .await
        .unwrap();

    let started = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(10), h.verify(&key_hash))
        .await
        .expect("a stalled look-up held the request for 10 s");
    let took = started.elapsed();
    reply.expect_error(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
    assert!(
        took >= LOOKUP_TIMEOUT,
        "answered before the timeout: {took:?}"
    );
    assert!(
        took < LOOKUP_TIMEOUT + Duration::from_secs(2),
        "look-up held for {took:?}"
    );

    sqlx::query("UNLOCK TABLES")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let reply = h.verify(&key_hash).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["verdict"], "active");
    locker.close().await;
}

/// Creates a key with its own signing secret; returns the reply.
async fn create_key_with_secret(h: &Harness, name: &str) -> Value {
    let body = json!({ "name": name, "signing_secret": true });
    let reply = h.admin(Method::POST, "/v1/keys", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json()
}

fn key_hash_of(created: &Value) -> String {
    hash_key(created["key"].as_str().unwrap())
}

async fn signing_secrets_are_shown_once_and_handed_only_to_the_filter(backend: Backend) {
    let h = Harness::with_keyring(backend, keyring(1)).await;
    let own = create_key_with_secret(&h, "own-secret").await;
    let secret = own["signing_secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("tgs_") && secret.len() == 68, "{secret}");
    assert_eq!(own["has_signing_secret"], true);
    let shared = create_key(&h, "shared-secret", None).await;
    assert!(shared.get("signing_secret").is_none(), "{shared}");
    assert_eq!(shared["has_signing_secret"], false);
    assert_ne!(
        create_key_with_secret(&h, "another").await["signing_secret"],
        own["signing_secret"]
    );

    // Verify hands the active key's secret over, and no secret for a key
    // without one.
    let reply = h.verify(&key_hash_of(&own)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        verdict_of(&reply),
        json!({"verdict": "active", "key_id": own["id"], "signing_secret": secret})
    );
    let reply = verdict_of(&h.verify(&key_hash_of(&shared)).await);
    assert_eq!(reply, json!({"verdict": "active", "key_id": shared["id"]}));

    // The list shows who has one, never the secret.
    let list = h.admin(Method::GET, "/v1/keys", None).await;
    assert!(!list.text().contains(&secret), "{}", list.text());
    assert!(!list.text().contains(&secret[4..20]), "{}", list.text());
    let flags: Vec<Value> = list.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["has_signing_secret"].clone())
        .collect();
    assert_eq!(flags, [json!(true), json!(false), json!(true)]);

    // Revoked: the filter still gets the secret (it judges the signature
    // before the key's state); the admin API never shows it.
    let path = format!("/v1/keys/{}/revoke", own["id"]);
    let revoked = h.admin(Method::POST, &path, None).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text());
    assert!(!revoked.text().contains(&secret));
    assert_eq!(revoked.json()["key"]["has_signing_secret"], true);
    let reply = h.verify(&key_hash_of(&own)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        verdict_of(&reply),
        json!({"verdict": "revoked", "key_id": own["id"], "signing_secret": secret})
    );

    // Expired: the same.
    let key = "tg_expired_with_a_secret";
    let sealed = keyring(1)
        .seal(&SigningSecret::generate().unwrap(), &hash_key(key))
        .unwrap();
    h.db.store
        .insert_key(&NewKey {
            name: "expired".into(),
            prefix: key[..9].to_string(),
            key_hash: hash_key(key),
            created_at: now_instant(),
            expires_at: Some(parse_rfc3339("2020-01-01T00:00:00Z").unwrap()),
            sealed_signing_secret: Some(sealed),
            limits: Default::default(),
            team_id: None,
        })
        .await
        .unwrap();
    let reply = h.verify(&hash_key(key)).await.json();
    assert_eq!(reply["verdict"], "expired");
    assert!(
        reply["signing_secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("tgs_")),
        "{reply}"
    );
}

async fn signing_secrets_are_stored_only_sealed(backend: Backend) {
    let h = Harness::with_keyring(backend, keyring(1)).await;
    let created = create_key_with_secret(&h, "sealed").await;
    let secret = created["signing_secret"].as_str().unwrap();
    let values = dump_every_value(&h.db.store).await;
    assert!(appears_in(&values, "sealed"), "the dump sees the row");
    assert!(!appears_in(&values, secret), "signing secret stored");
    assert!(!appears_in(&values, &secret[4..]), "signing secret stored");
    assert!(!appears_in(&values, &secret[20..36]));
    // What is stored names its version and master key.
    let stored = h.db.store.sealed_signing_secrets().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, created["id"].as_i64().unwrap());
    assert_eq!(stored[0].key_hash, key_hash_of(&created));
    let id = keyring(1).current().unwrap().id().to_string();
    assert!(
        stored[0].sealed.as_str().starts_with(&format!("v1:{id}:")),
        "{:?}",
        stored[0].sealed
    );
}

async fn a_signing_secret_needs_a_master_key(backend: Backend) {
    let h = Harness::new(backend).await;
    let body = json!({"name": "wants-a-secret", "signing_secret": true});
    let error = h
        .admin(Method::POST, "/v1/keys", Some(body))
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "master_key_missing");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("TOLLGATE_MASTER_KEY"),
        "{error}"
    );
    // Nothing was stored.
    assert!(h.db.store.list_keys().await.unwrap().is_empty());
    // The library's path refuses the same way.
    let refused = sidecar::store::registry::create_key(
        &h.db.store,
        "lib",
        None,
        Some(&Keyring::empty()),
        Default::default(),
        None,
    )
    .await;
    assert!(
        matches!(refused, Err(RegisterError::MasterKeyMissing)),
        "{refused:?}"
    );
    assert!(h.db.store.list_keys().await.unwrap().is_empty());
    // Keys without a secret need none; `signing_secret: false` is the default.
    let body = json!({"name": "plain", "signing_secret": false});
    let reply = h.admin(Method::POST, "/v1/keys", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(reply.json()["has_signing_secret"], false);
    let error = h
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "x", "signing_secret": "yes"})),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(error["field"], "signing_secret");
}

async fn a_signing_secret_that_does_not_open_answers_503(backend: Backend) {
    let mut h = Harness::with_keyring(backend, keyring(1)).await;
    let first = create_key_with_secret(&h, "first").await;
    let second = create_key_with_secret(&h, "second").await;
    let revoked = create_key_with_secret(&h, "revoked").await;
    let path = format!("/v1/keys/{}/revoke", revoked["id"]);
    assert_eq!(
        h.admin(Method::POST, &path, None).await.status,
        StatusCode::OK
    );
    let unreadable = |reply: Reply, created: &Value| {
        let error = reply.expect_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "signing_secret_unavailable",
        );
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("key {}", created["id"])),
            "{error}"
        );
        assert!(message.contains("TOLLGATE_MASTER_KEY"), "{error}");
        assert!(
            !reply
                .text()
                .contains(created["signing_secret"].as_str().unwrap()),
            "{}",
            reply.text()
        );
    };

    // Restarted without a master key, or with another one.
    for other in [Keyring::empty(), keyring(2)] {
        h.rekey(other);
        unreadable(h.verify(&key_hash_of(&first)).await, &first);
        // A revoked key is refused anyway: its verdict is still answered,
        // without the secret that did not open.
        let reply = h.verify(&key_hash_of(&revoked)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["verdict"], "revoked");
    }

    // A sealed value copied to another key's row, and a corrupt one.
    h.rekey(keyring(1));
    let stored = h.db.store.sealed_signing_secrets().await.unwrap();
    let (of_first, of_second) = (&stored[0].sealed, &stored[1].sealed);
    let second_id = second["id"].as_i64().unwrap();
    assert!(h
        .db
        .store
        .replace_sealed_signing_secret(second_id, of_second, of_first)
        .await
        .unwrap());
    unreadable(h.verify(&key_hash_of(&second)).await, &second);
    let corrupt = SealedSecret::from_stored("v1:not-a-sealed-value".into());
    assert!(h
        .db
        .store
        .replace_sealed_signing_secret(second_id, of_first, &corrupt)
        .await
        .unwrap());
    unreadable(h.verify(&key_hash_of(&second)).await, &second);
    // The other key is unaffected.
    let reply = h.verify(&key_hash_of(&first)).await.json();
    assert_eq!(reply["signing_secret"], first["signing_secret"]);
}

async fn rewrap_moves_every_signing_secret_to_the_new_master_key(backend: Backend) {
    let mut h = Harness::with_keyring(backend, keyring(1)).await;
    let a = create_key_with_secret(&h, "a").await;
    let b = create_key_with_secret(&h, "b").await;
    create_key(&h, "no-secret", None).await;
    let new_id = keyring(2).current().unwrap().id().to_string();

    // With only the new master key, nothing opens and nothing is written.
    let before = h.db.store.sealed_signing_secrets().await.unwrap();
    let refused = rewrap_signing_secrets(&h.db.store, &keyring(2))
        .await
        .unwrap_err();
    assert!(refused.contains("nothing was rewrapped"), "{refused}");
    assert!(
        refused.contains(&format!("key {}", a["id"]))
            && refused.contains(&format!("key {}", b["id"])),
        "{refused}"
    );
    assert_eq!(h.db.store.sealed_signing_secrets().await.unwrap(), before);

    // During the rotation, the sidecar opens with either.
    let rotating = Keyring::new(
        MasterKey::from_bytes([2; 32]),
        vec![MasterKey::from_bytes([1; 32])],
    );
    h.rekey(rotating.clone());
    assert_eq!(
        h.verify(&key_hash_of(&a)).await.json()["signing_secret"],
        a["signing_secret"]
    );
    // A key created now is sealed under the new master key already.
    let c = create_key_with_secret(&h, "c").await;

    let report = rewrap_signing_secrets(&h.db.store, &rotating)
        .await
        .unwrap();
    assert_eq!(report.master_key_id, new_id);
    assert_eq!(
        (
            report.rewrapped,
            report.already_current,
            report.changed_meanwhile
        ),
        (2, 1, 0)
    );
    let again = rewrap_signing_secrets(&h.db.store, &rotating)
        .await
        .unwrap();
    assert_eq!((again.rewrapped, again.already_current), (0, 3));
    for row in h.db.store.sealed_signing_secrets().await.unwrap() {
        assert_eq!(row.sealed.master_key_id(), Some(new_id.as_str()));
    }

    // After it, the new master key alone opens every secret, unchanged.
    h.rekey(keyring(2));
    for created in [&a, &b, &c] {
        let reply = h.verify(&key_hash_of(created)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["signing_secret"], created["signing_secret"]);
    }
    // And the old one alone no longer does.
    h.rekey(keyring(1));
    h.verify(&key_hash_of(&a)).await.expect_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "signing_secret_unavailable",
    );
}
