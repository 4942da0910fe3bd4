//! LLM metering in the ledger, against SQLite and MySQL alike: a record's
//! `llm` is stored in its row and read back by the usage log; the rollups
//! sum its tokens per key, outcome and model, exactly (the minute series,
//! read from `usage_log`, keeps models apart as they do), and a re-sent
//! record is counted once; a record whose `llm` no call can have is refused
//! naming the field; rows and rollups stored before migration 0007 keep
//! their totals.
//!
//! Every test below runs twice, `sqlite::<name>` and `mysql::<name>`, like
//! `http_api.rs` (the MySQL half needs `TOLLGATE_TEST_MYSQL_URL`).

#[macro_use]
mod support;

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use sidecar::domain::clock::{format_db_text, from_unix_ms, now_ms, to_unix_ms};
use sidecar::store::rollup::Grain;
use sidecar::store::{Store, SummaryFilter};
use support::*;
use time::Duration;
use tollgate_wire::MAX_TOKENS;

on_both_backends!(
    llm_records_are_stored_with_their_fields,
    rollups_sum_tokens_per_model_exactly,
    a_resent_llm_record_is_counted_once,
    impossible_llm_fields_are_refused_naming_them,
    models_differing_in_case_or_trailing_spaces_stay_apart,
    the_usage_log_lists_newest_first_within_its_bounds,
    rows_from_before_llm_metering_keep_their_totals,
    series_carry_tokens_per_model_in_every_window,
);

/// The start of the previous hour, as ms: every record of a test is
/// within the ingestion window and the test knows its buckets.
fn hour_start_ms() -> u64 {
    let hour = Grain::Hour.floor(now_ms()) - Duration::hours(1);
    to_unix_ms(hour)
}

/// A record of `key` at `at_ms`, not an LLM call.
fn record(id: &str, key: i64, at_ms: u64) -> Value {
    json!({
        "request_id": id, "api_key_id": key, "method": "POST",
        "endpoint": "/v1/chat/completions", "status_code": 200, "outcome": "allowed",
        "request_bytes": 100, "response_bytes": 40, "units": 0, "duration_ms": 5,
        "timestamp_ms": at_ms,
    })
}

/// A record of an LLM call of `model`: `tokens` are input, output, cached
/// input and reasoning.
fn llm_record(id: &str, key: i64, at_ms: u64, model: &str, tokens: [u64; 4]) -> Value {
    let mut r = record(id, key, at_ms);
    r["llm"] = json!({
        "api": "openai.chat", "model": model, "streamed": true, "usage_source": "reported",
        "input_tokens": tokens[0], "output_tokens": tokens[1],
        "cached_input_tokens": tokens[2], "reasoning_tokens": tokens[3],
    });
    r
}

/// The token fields of a summary or log row.
fn tokens_of(row: &Value) -> [u64; 4] {
    [
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "reasoning_tokens",
    ]
    .map(|f| row[f].as_u64().unwrap_or_else(|| panic!("{f} in {row}")))
}

async fn ingest_ok(h: &Harness, batch: &Value) -> Value {
    let reply = h.ingest(batch).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

/// `GET path` with the admin token, expecting 200.
async fn admin_get(h: &Harness, path: &str) -> Value {
    let reply = h.admin(Method::GET, path, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
    reply.json()
}

async fn llm_records_are_stored_with_their_fields(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 1).await;
    let t = hour_start_ms();
    let mut estimated = llm_record("b-claude", 1, t + 2_000, "claude-sonnet-4", [70, 9, 0, 0]);
    estimated["llm"]["api"] = json!("anthropic.messages");
    estimated["llm"]["streamed"] = json!(false);
    estimated["llm"]["usage_source"] = json!("estimated");
    let batch = json!([
        llm_record("a-gpt", 1, t + 1_000, "gpt-4o", [120, 30, 100, 12]),
        estimated,
        record("c-plain", 1, t + 3_000),
    ]);
    assert_eq!(ingest_ok(&h, &batch).await["inserted"], 3);

    let rows = admin_get(&h, "/v1/usage/log?key=1").await;
    let ids: Vec<_> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c-plain", "b-claude", "a-gpt"], "newest first");
    let [plain, claude, gpt] = [&rows[0], &rows[1], &rows[2]];
    assert_eq!(gpt["api"], "openai.chat");
    assert_eq!(gpt["model"], "gpt-4o");
    assert_eq!(gpt["streamed"], true);
    assert_eq!(gpt["usage_source"], "reported");
    assert_eq!(tokens_of(gpt), [120, 30, 100, 12]);
    assert_eq!(gpt["status_code"], 200);
    assert_eq!(gpt["outcome"], "allowed");
    assert_eq!(gpt["request_bytes"], 100);
    assert_eq!(gpt["response_bytes"], 40);
    let at = from_unix_ms(t + 1_000).unwrap();
    assert_eq!(
        gpt["timestamp"],
        sidecar::domain::clock::format_rfc3339(at),
        "{gpt}"
    );
    assert_eq!(claude["api"], "anthropic.messages");
    assert_eq!(claude["streamed"], false);
    assert_eq!(claude["usage_source"], "estimated");
    assert_eq!(tokens_of(claude), [70, 9, 0, 0]);
    // A call that is not an LLM call.
    assert_eq!(plain["api"], Value::Null);
    assert_eq!(plain["model"], Value::Null);
    assert_eq!(plain["streamed"], false);
    assert_eq!(plain["usage_source"], "none");
    assert_eq!(tokens_of(plain), [0, 0, 0, 0]);
}

/// Per (key, outcome, model): requests and the four token sums.
type ModelSums = BTreeMap<(i64, String, String), [i64; 5]>;

/// Per (key, hour or day text, outcome, model), what `usage_log` holds and
/// what the rollup table holds.
async fn ledger_and_rollup_per_model(store: &Store, hourly: bool) -> (ModelSums, ModelSums) {
    use sqlx::Row;
    let (table, chars, format) = if hourly {
        ("usage_hourly", 13, "%Y-%m-%d %H")
    } else {
        ("usage_daily", 10, "%Y-%m-%d")
    };
    let mysql = matches!(store, Store::MySql(_));
    let bucket = |c: &str| match mysql {
        true => format!("DATE_FORMAT({c}, '{format}')"),
        false => format!("substr({c}, 1, {chars})"),
    };
    let int = if mysql { "SIGNED" } else { "INTEGER" };
    // `bucket|outcome|model` as one text.
    let key = |parts: [String; 3]| match mysql {
        true => format!("CONCAT_WS('|', {})", parts.join(", ")),
        false => parts.join(" || '|' || "),
    };
    let sums = "input_tokens, output_tokens, cached_input_tokens, reasoning_tokens";
    let summed: Vec<String> = sums
        .split(", ")
        .map(|c| format!("CAST(SUM({c}) AS {int}) AS {c}"))
        .collect();
    let ledger = format!(
        "SELECT api_key_id, {k} AS k, CAST(COUNT(*) AS {int}) AS requests, {s} \
         FROM usage_log GROUP BY api_key_id, {b}, outcome, COALESCE(model, '')",
        k = key([
            bucket("created_at"),
            "outcome".into(),
            "COALESCE(model, '')".into()
        ]),
        b = bucket("created_at"),
        s = summed.join(", ")
    );
    let rollup = format!(
        "SELECT api_key_id, {k} AS k, requests, {sums} FROM {table}",
        k = key([bucket("bucket_start"), "outcome".into(), "model".into()]),
    );
    macro_rules! read {
        ($pool:expr, $sql:expr) => {{
            let rows = sqlx::query(&$sql).fetch_all($pool).await.expect(&$sql);
            rows.iter()
                .map(|r| {
                    let k = r.try_get::<String, _>("k").unwrap_or_else(|_| {
                        String::from_utf8(r.get::<Vec<u8>, _>("k")).expect("text")
                    });
                    let mut parts = k.splitn(2, '|');
                    let bucket = parts.next().unwrap().to_string();
                    let rest = parts.next().unwrap().to_string();
                    (
                        (r.get::<i64, _>("api_key_id"), bucket, rest),
                        [
                            r.get::<i64, _>("requests"),
                            r.get::<i64, _>("input_tokens"),
                            r.get::<i64, _>("output_tokens"),
                            r.get::<i64, _>("cached_input_tokens"),
                            r.get::<i64, _>("reasoning_tokens"),
                        ],
                    )
                })
                .collect::<ModelSums>()
        }};
    }
    match store {
        Store::MySql(s) => (read!(s.pool(), ledger), read!(s.pool(), rollup)),
        Store::Sqlite(s) => (read!(s.pool(), ledger), read!(s.pool(), rollup)),
    }
}

async fn rollups_sum_tokens_per_model_exactly(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 2).await;
    let t = hour_start_ms();
    let models = ["gpt-4o", "claude-sonnet-4", "gemini-2.5-pro"];
    // Expected per (key, model or None): requests and token sums.
    let mut expected: BTreeMap<(i64, Option<String>), [u64; 5]> = BTreeMap::new();
    let mut batch = Vec::new();
    for i in 0..300u64 {
        let key = 1 + (i % 2) as i64;
        // Across the previous hour and this one (both within the window).
        let at = t + i * 20_000;
        let id = format!("req-{i:04}");
        let (record, model, tokens) = if i % 7 == 0 {
            (record(&id, key, at), None, [0; 4])
        } else {
            let model = models[(i % 3) as usize];
            // Large counts too: the sums must stay exact.
            let input = if i % 11 == 0 {
                MAX_TOKENS
            } else {
                1_000 + i * 37
            };
            let output = if i % 13 == 0 { MAX_TOKENS } else { 10 + i * 3 };
            let tokens = [input, output, input / 3, output / 4];
            (
                llm_record(&id, key, at, model, tokens),
                Some(model.to_string()),
                tokens,
            )
        };
        let e = expected.entry((key, model)).or_default();
        e[0] += 1;
        for (sum, n) in e[1..].iter_mut().zip(tokens) {
            *sum += n;
        }
        batch.push(record);
    }
    for chunk in batch.chunks(100) {
        ingest_ok(&h, &json!(chunk)).await;
    }

    // The rollup tables equal the ledger per bucket and model.
    for hourly in [true, false] {
        let (ledger, rollup) = ledger_and_rollup_per_model(&h.db.store, hourly).await;
        assert!(ledger.len() >= 8, "{ledger:?}");
        assert_eq!(rollup, ledger, "hourly: {hourly}");
    }

    // The summary by model, over HTTP.
    let reply = admin_get(&h, "/v1/usage/summary?by=model").await;
    let got: BTreeMap<(i64, Option<String>), [u64; 5]> = reply["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let t = tokens_of(r);
            (
                (
                    r["api_key_id"].as_i64().unwrap(),
                    r["model"].as_str().map(str::to_string),
                ),
                [r["requests"].as_u64().unwrap(), t[0], t[1], t[2], t[3]],
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert!(
        reply["rows"][0]["model"].is_null(),
        "the calls that were not LLM calls come first: {reply}"
    );
    assert!(reply["rows"][0].get("outcome").is_none(), "{reply}");

    // By outcome, a key's tokens are its models' sums.
    let by_outcome =
        h.db.store
            .usage_summary(&SummaryFilter::default())
            .await
            .unwrap();
    for row in by_outcome {
        let sums: u64 = expected
            .iter()
            .filter(|((key, _), _)| *key == row.api_key_id)
            .map(|(_, e)| e[1])
            .sum();
        assert_eq!(row.totals.tokens.input_tokens as u64, sums);
    }
}

async fn a_resent_llm_record_is_counted_once(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 1).await;
    let t = hour_start_ms();
    let batch = json!([
        llm_record("once-1", 1, t, "gpt-4o", [10, 5, 0, 0]),
        llm_record("once-2", 1, t + 1, "gpt-4o", [20, 6, 4, 1]),
    ]);
    assert_eq!(ingest_ok(&h, &batch).await["inserted"], 2);
    let before = admin_get(&h, "/v1/usage/summary?by=model").await;
    assert_eq!(tokens_of(&before["rows"][0]), [30, 11, 4, 1]);
    // The same batch again (a retry), and one overlapping it.
    let again = ingest_ok(&h, &batch).await;
    assert_eq!(
        again,
        json!({"received": 2, "inserted": 0, "duplicates": 2})
    );
    let overlap = json!([
        llm_record("once-2", 1, t + 1, "gpt-4o", [20, 6, 4, 1]),
        llm_record("once-3", 1, t + 2, "gpt-4o", [1, 1, 0, 0]),
    ]);
    let reply = ingest_ok(&h, &overlap).await;
    assert_eq!(reply["inserted"], 1);
    let after = admin_get(&h, "/v1/usage/summary?by=model").await;
    assert_eq!(after["rows"][0]["requests"], 3);
    assert_eq!(tokens_of(&after["rows"][0]), [31, 12, 4, 1]);
    assert_eq!(count_usage(&h.db.store, None).await, 3);
}

/// A change to a record that makes it impossible.
type Change = Box<dyn Fn(&mut Value)>;

async fn impossible_llm_fields_are_refused_naming_them(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 1).await;
    let t = hour_start_ms();
    let good = || llm_record("x", 1, t, "gpt-4o", [10, 5, 2, 1]);
    let cases: Vec<(&str, Change)> = vec![
        ("llm.model", Box::new(|r| r["llm"]["model"] = json!(""))),
        (
            "llm.model",
            Box::new(|r| r["llm"]["model"] = json!("m".repeat(257))),
        ),
        (
            "llm.model",
            Box::new(|r| r["llm"]["model"] = json!("a\u{0}b")),
        ),
        (
            "llm.output_tokens",
            Box::new(|r| r["llm"]["output_tokens"] = json!(MAX_TOKENS + 1)),
        ),
        (
            "llm.input_tokens",
            Box::new(|r| r["llm"]["input_tokens"] = json!(MAX_TOKENS + 1)),
        ),
        (
            "llm.cached_input_tokens",
            Box::new(|r| r["llm"]["cached_input_tokens"] = json!(11)),
        ),
        (
            "llm.reasoning_tokens",
            Box::new(|r| r["llm"]["reasoning_tokens"] = json!(6)),
        ),
        (
            "llm.usage_source",
            Box::new(|r| r["llm"]["usage_source"] = json!("none")),
        ),
    ];
    for (field, change) in cases {
        let mut bad = good();
        bad["request_id"] = json!("bad");
        change(&mut bad);
        let reply = h.ingest(&json!([good(), bad])).await;
        let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error["field"], format!("[1].{field}"), "{error}");
    }
    // An API the contract does not name is not a record at all.
    let mut bad = good();
    bad["llm"]["api"] = json!("openai");
    let reply = h.ingest(&json!([bad])).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert_eq!(count_usage(&h.db.store, None).await, 0, "nothing stored");
}

async fn models_differing_in_case_or_trailing_spaces_stay_apart(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 1).await;
    let t = hour_start_ms();
    let models = ["gpt-4o", "GPT-4o", "gpt-4o ", "gpt-4ö"];
    let batch: Vec<Value> = models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            llm_record(
                &format!("m{i}"),
                1,
                t + i as u64,
                m,
                [1 + i as u64, 1, 0, 0],
            )
        })
        .collect();
    ingest_ok(&h, &json!(batch)).await;
    let rows =
        h.db.store
            .usage_summary_by_model(&SummaryFilter::default())
            .await
            .unwrap();
    let mut got: Vec<(String, i64)> = rows
        .into_iter()
        .map(|r| (r.model.unwrap(), r.totals.tokens.input_tokens))
        .collect();
    got.sort();
    let mut want: Vec<(String, i64)> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.to_string(), 1 + i as i64))
        .collect();
    want.sort();
    assert_eq!(got, want);
    // The minutes, read from usage_log, keep them apart as the rollups do.
    let from = Grain::Minute.floor(from_unix_ms(t).unwrap());
    let minutes =
        h.db.store
            .usage_series(1, Grain::Minute, from, from + Duration::minutes(1))
            .await
            .unwrap();
    let mut got: Vec<(String, i64)> = minutes
        .into_iter()
        .map(|r| (r.model, r.tokens.input_tokens))
        .collect();
    got.sort();
    assert_eq!(got, want);
}

async fn the_usage_log_lists_newest_first_within_its_bounds(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 2).await;
    let now = to_unix_ms(now_ms());
    // Every 10 minutes from 5 hours ago: r29 10 minutes ago, r24 an hour ago.
    let batch: Vec<Value> = (0..30u64)
        .map(|i| record(&format!("r{i:02}"), 1, now - 3_600_000 * 5 + i * 600_000))
        .chain([record("other-key", 2, now)])
        .collect();
    ingest_ok(&h, &json!(batch)).await;
    let ids = |rows: &Value| -> Vec<String> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["request_id"].as_str().unwrap().to_string())
            .collect()
    };
    let all = admin_get(&h, "/v1/usage/log?key=1").await;
    assert_eq!(ids(&all).len(), 30);
    assert_eq!(ids(&all)[0], "r29");
    assert_eq!(ids(&all)[29], "r00");
    let three = admin_get(&h, "/v1/usage/log?key=1&limit=3").await;
    assert_eq!(ids(&three), ["r29", "r28", "r27"]);
    // The last 59 minutes: r24 is just out.
    let recent = admin_get(&h, "/v1/usage/log?key=1&since=59m").await;
    assert_eq!(ids(&recent), ["r29", "r28", "r27", "r26", "r25"]);
    assert_eq!(
        ids(&admin_get(&h, "/v1/usage/log?key=2").await),
        ["other-key"]
    );

    let unknown = h.admin(Method::GET, "/v1/usage/log?key=99", None).await;
    unknown.expect_error(StatusCode::NOT_FOUND, "key_not_found");
    for (query, field) in [
        ("", "key"),
        ("key=abc", "key"),
        ("key=0", "key"),
        ("key=1&limit=0", "limit"),
        ("key=1&limit=10001", "limit"),
        ("key=1&since=soon", "since"),
        ("key=1&key=2", "key"),
        ("key=1&model=x", "model"),
    ] {
        let reply = h
            .admin(Method::GET, &format!("/v1/usage/log?{query}"), None)
            .await;
        let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error["field"], field, "{query}: {error}");
    }
    let no_token = h.get("/v1/usage/log?key=1").await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);
}

async fn rows_from_before_llm_metering_keep_their_totals(backend: Backend) {
    let db = TestDb::at_migration(backend, 6).await;
    register_keys(&db.store, 1).await;
    // What a sidecar of migration 6 stored: a row and its rollups.
    let t = hour_start_ms();
    let at = from_unix_ms(t + 5_000).unwrap();
    let created = format_db_text(at);
    let hour = format_db_text(Grain::Hour.floor(at));
    let day = format_db_text(Grain::Day.floor(at));
    let mut statements = vec![format!(
        "INSERT INTO usage_log (request_id, api_key_id, method, endpoint, status_code, \
         outcome, request_bytes, response_bytes, units, duration_ms, created_at) \
         VALUES ('old-1', 1, 'POST', '/p', 200, 'allowed', 100, 40, 7, 1, '{created}')"
    )];
    for (table, bucket) in [("usage_hourly", &hour), ("usage_daily", &day)] {
        statements.push(format!(
            "INSERT INTO {table} (api_key_id, bucket_start, outcome, requests, \
             request_bytes_high, request_bytes_low, response_bytes_high, response_bytes_low, \
             units_high, units_low) VALUES (1, '{bucket}', 'allowed', 1, 0, 100, 0, 40, 0, 7)"
        ));
    }
    for sql in &statements {
        match &db.store {
            Store::MySql(s) => sqlx::query(sql).execute(s.pool()).await.map(drop),
            Store::Sqlite(s) => sqlx::query(sql).execute(s.pool()).await.map(drop),
        }
        .expect(sql);
    }
    db.store.migrate().await.expect("migration 0007");
    let after = db
        .store
        .usage_summary(&SummaryFilter::default())
        .await
        .unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    let totals = &after[0].totals;
    assert_eq!(
        (
            totals.requests,
            totals.request_bytes,
            totals.response_bytes,
            totals.units
        ),
        (1, 100, 40, 7),
        "non-LLM totals are unchanged"
    );
    assert_eq!(totals.tokens, sidecar::store::TokenSums::default());
    let h = Harness::over(db, Some(ADMIN_TOKEN));
    let old = admin_get(&h, "/v1/usage/log?key=1").await;
    assert_eq!(old[0]["usage_source"], "none");
    assert_eq!(old[0]["model"], Value::Null);
    assert_eq!(tokens_of(&old[0]), [0, 0, 0, 0]);

    // A new LLM call in the same hour: a row of its own model beside the old one.
    ingest_ok(
        &h,
        &json!([llm_record("new-1", 1, t + 6_000, "gpt-4o", [5, 3, 0, 0])]),
    )
    .await;
    let by_model = admin_get(&h, "/v1/usage/summary?by=model").await;
    assert_eq!(by_model["rows"].as_array().unwrap().len(), 2, "{by_model}");
    assert_eq!(by_model["rows"][0]["model"], Value::Null);
    assert_eq!(by_model["rows"][0]["requests"], 1);
    assert_eq!(by_model["rows"][0]["units"], 7);
    assert_eq!(by_model["rows"][1]["model"], "gpt-4o");
    assert_eq!(tokens_of(&by_model["rows"][1]), [5, 3, 0, 0]);
    let by_outcome = admin_get(&h, "/v1/usage/summary").await;
    assert_eq!(by_outcome["rows"][0]["requests"], 2);
    assert_eq!(by_outcome["rows"][0]["request_bytes"], 200);
    assert_eq!(tokens_of(&by_outcome["rows"][0]), [5, 3, 0, 0]);
}

async fn series_carry_tokens_per_model_in_every_window(backend: Backend) {
    use sidecar::http::series::{usage_series, Window};
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 1).await;
    let now = now_ms();
    let at = |minutes_ago: u64| to_unix_ms(now) - minutes_ago * 60_000;
    ingest_ok(
        &h,
        &json!([
            llm_record("s1", 1, at(5), "gpt-4o", [10, 2, 0, 0]),
            llm_record("s2", 1, at(4), "gpt-4o", [20, 3, 5, 1]),
            llm_record("s3", 1, at(4), "claude-sonnet-4", [7, 7, 0, 0]),
            record("s4", 1, at(3)),
        ]),
    )
    .await;
    for window in Window::ALL {
        let series = usage_series(&h.db.store, 1, window, now).await.unwrap();
        let mut totals: BTreeMap<String, [i64; 4]> = BTreeMap::new();
        for point in &series.points {
            for (model, t) in &point.models {
                let e = totals.entry(model.clone()).or_default();
                e[0] += t.input_tokens;
                e[1] += t.output_tokens;
                e[2] += t.cached_input_tokens;
                e[3] += t.reasoning_tokens;
            }
        }
        assert_eq!(
            totals,
            BTreeMap::from([
                ("claude-sonnet-4".to_string(), [7, 7, 0, 0]),
                ("gpt-4o".to_string(), [30, 5, 5, 1]),
            ]),
            "{window:?}"
        );
        let requests: i64 = series.points.iter().map(|p| p.requests).sum();
        assert_eq!(requests, 4, "{window:?}");
    }
    // Minutes apart in the hour window: s2 and s3 share a point.
    let hour = usage_series(&h.db.store, 1, Window::Hour, now)
        .await
        .unwrap();
    let with_models: Vec<usize> = hour
        .points
        .iter()
        .filter(|p| !p.models.is_empty())
        .map(|p| p.models.len())
        .collect();
    assert_eq!(with_models, [1, 2]);
    // As the console reads it: `models` of each point, by name, with the
    // four token fields.
    let body = admin_get(&h, "/v1/keys/1/usage/series?window=day").await;
    let points = body["points"].as_array().unwrap();
    assert!(points.iter().all(|p| p["models"].is_object()), "{body}");
    let gpt: Vec<[u64; 4]> = points
        .iter()
        .filter(|p| !p["models"]["gpt-4o"].is_null())
        .map(|p| tokens_of(&p["models"]["gpt-4o"]))
        .collect();
    let input: u64 = gpt.iter().map(|t| t[0]).sum();
    assert_eq!(input, 30, "{body}");
}
