//! The usage rollups, against SQLite and MySQL alike: they equal the ledger
//! (requests, bytes and units) after duplicates, retries and concurrent
//! batches; summaries between two instants read whole hours; pruning keeps
//! them (and the summaries); the series API zero-fills its windows and puts
//! every row in the right bucket, with the clock chosen by the test.
//!
//! Every test below runs twice, `sqlite::<name>` and `mysql::<name>`, like
//! `http_api.rs` (the MySQL half needs `TOLLGATE_TEST_MYSQL_URL`).

#[macro_use]
mod support;

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use sidecar::domain::clock::{from_unix_ms, to_unix_ms};
use sidecar::http::series::{usage_series, Window};
use sidecar::store::rollup::Grain;
use sidecar::store::{Store, SummaryFilter, UsageInsert};
use support::*;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use tollgate_wire::{Outcome, UsageRecord};

on_both_backends!(
    rollups_equal_the_ledger_after_duplicates_and_concurrent_batches,
    the_migration_rolls_up_the_rows_already_stored,
    summaries_between_two_instants_count_the_hours_between,
    prune_deletes_old_rows_in_batches_and_keeps_the_summaries,
    series_fill_every_bucket_and_count_each_row_in_its_own,
    series_over_http,
);

/// A record of `key` at `at`.
fn record(id: &str, key: i64, at: OffsetDateTime, outcome: Outcome, bytes: u64) -> UsageRecord {
    UsageRecord {
        request_id: id.into(),
        api_key_id: key,
        method: "POST".into(),
        endpoint: "/proxy/analyze".into(),
        status_code: outcome.denial_status().unwrap_or(200),
        outcome,
        request_bytes: bytes,
        response_bytes: 3 * bytes + 1,
        units: 2 * bytes + 5,
        duration_ms: 2,
        timestamp_ms: to_unix_ms(at),
        llm: None,
    }
}

/// Per (key, bucket text, outcome): requests, exact byte totals and units.
type Sums = BTreeMap<(i64, String, String), Totals>;

/// Requests, request bytes, response bytes, units.
type Totals = (i64, i128, i128, i128);

/// What the ledger and the rollup table of a grain hold, per bucket: the
/// ledger's rows grouped by the bucket's text, and the rollup's rows.
async fn ledger_and_rollup(store: &Store, hourly: bool) -> (Sums, Sums) {
    let (table, chars, format) = if hourly {
        ("usage_hourly", 13, "%Y-%m-%d %H")
    } else {
        ("usage_daily", 10, "%Y-%m-%d")
    };
    let bucket = |column: &str| match store {
        Store::MySql(_) => format!("DATE_FORMAT({column}, '{format}')"),
        Store::Sqlite(_) => format!("substr({column}, 1, {chars})"),
    };
    let int = match store {
        Store::MySql(_) => "SIGNED",
        Store::Sqlite(_) => "INTEGER",
    };
    let ledger = format!(
        "SELECT api_key_id, {b} AS bucket, outcome, CAST(COUNT(*) AS {int}) AS requests, \
         CAST(SUM(request_bytes) AS {int}) AS rq, CAST(SUM(response_bytes) AS {int}) AS rs, \
         CAST(SUM(units) AS {int}) AS un FROM usage_log GROUP BY api_key_id, {b}, outcome",
        b = bucket("created_at")
    );
    let rollup = format!(
        "SELECT api_key_id, {b} AS bucket, outcome, requests, \
         request_bytes_high * 4294967296 + request_bytes_low AS rq, \
         response_bytes_high * 4294967296 + response_bytes_low AS rs, \
         units_high * 4294967296 + units_low AS un FROM {table}",
        b = bucket("bucket_start")
    );
    (sums(store, &ledger).await, sums(store, &rollup).await)
}

async fn sums(store: &Store, sql: &str) -> Sums {
    use sqlx::Row;
    macro_rules! read {
        ($pool:expr) => {{
            let rows = sqlx::query(sql).fetch_all($pool).await.expect(sql);
            rows.iter()
                .map(|r| {
                    let text = |c: &str| {
                        r.try_get::<String, _>(c).unwrap_or_else(|_| {
                            String::from_utf8(r.get::<Vec<u8>, _>(c)).expect("text")
                        })
                    };
                    (
                        (
                            r.get::<i64, _>("api_key_id"),
                            text("bucket"),
                            text("outcome"),
                        ),
                        (
                            r.get::<i64, _>("requests"),
                            i128::from(r.get::<i64, _>("rq")),
                            i128::from(r.get::<i64, _>("rs")),
                            i128::from(r.get::<i64, _>("un")),
                        ),
                    )
                })
                .collect()
        }};
    }
    match store {
        Store::MySql(s) => read!(s.pool()),
        Store::Sqlite(s) => read!(s.pool()),
    }
}

/// Asserts that both rollup tables equal the ledger, and returns how many
/// rows the ledger has.
async fn assert_rollups_equal_the_ledger(store: &Store) -> i64 {
    for hourly in [true, false] {
        let (ledger, rollup) = ledger_and_rollup(store, hourly).await;
        assert!(!ledger.is_empty(), "the ledger has rows");
        assert_eq!(rollup, ledger, "hourly: {hourly}");
    }
    // And the summary, from the rollups, equals the ledger's totals.
    let summary = store
        .usage_summary(&SummaryFilter::default())
        .await
        .unwrap();
    let (ledger, _) = ledger_and_rollup(store, false).await;
    let mut totals: BTreeMap<(i64, String), Totals> = BTreeMap::new();
    for ((key, _, outcome), (n, rq, rs, un)) in ledger {
        let t = totals.entry((key, outcome)).or_default();
        *t = (t.0 + n, t.1 + rq, t.2 + rs, t.3 + un);
    }
    let from_rollups: BTreeMap<_, _> = summary
        .iter()
        .map(|r| {
            (
                (r.api_key_id, r.outcome.clone()),
                (
                    r.totals.requests,
                    r.totals.request_bytes as i128,
                    r.totals.response_bytes as i128,
                    r.totals.units as i128,
                ),
            )
        })
        .collect();
    assert_eq!(from_rollups, totals);
    totals.values().map(|t| t.0).sum()
}

const NOW: OffsetDateTime = datetime!(2026-12-02 03:36:39.250 UTC);
const OUTCOMES: [Outcome; 3] = [
    Outcome::Allowed,
    Outcome::InvalidApiKey,
    Outcome::RevokedApiKey,
];

/// `count` records over three keys, three outcomes and about two days
/// (across midnight), `prefix`ed ids.
fn spread(prefix: &str, count: usize) -> Vec<UsageRecord> {
    (0..count)
        .map(|i| {
            let at = NOW - Duration::minutes((i as i64 * 37) % (48 * 60));
            let outcome = OUTCOMES[(i / 7) % 3];
            record(
                &format!("{prefix}-{i:05}"),
                1 + (i % 3) as i64,
                at,
                outcome,
                (i * 13) as u64,
            )
        })
        .collect()
}

async fn rollups_equal_the_ledger_after_duplicates_and_concurrent_batches(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = &db.store;
    register_keys(store, 3).await;

    // A batch, then its retry, then one half old and half new, then one
    // with the same id twice inside it.
    let first = spread("a", 700);
    assert_eq!(
        store.insert_usage(&first).await.unwrap(),
        UsageInsert::Stored { inserted: 700 }
    );
    assert_eq!(
        store.insert_usage(&first).await.unwrap(),
        UsageInsert::Stored { inserted: 0 }
    );
    let mut mixed = first[350..].to_vec();
    mixed.extend(spread("b", 300));
    assert_eq!(
        store.insert_usage(&mixed).await.unwrap(),
        UsageInsert::Stored { inserted: 300 }
    );
    let mut twice = spread("c", 10);
    twice.push(twice[3].clone());
    assert_eq!(
        store.insert_usage(&twice).await.unwrap(),
        UsageInsert::Stored { inserted: 10 }
    );
    assert_eq!(assert_rollups_equal_the_ledger(store).await, 1010);

    // Concurrent batches: eight senders, each batch overlapping the others'
    // (a retry racing its original, and different batches sharing ids).
    let all = spread("d", 2000);
    let mut senders = Vec::new();
    for sender in 0..8 {
        let store = store.clone();
        let batches: Vec<Vec<UsageRecord>> = (0..5)
            .map(|round| {
                let start = (sender * 150 + round * 90) % 1500;
                all[start..start + 500].to_vec()
            })
            .collect();
        senders.push(tokio::spawn(async move {
            let mut inserted = 0;
            for batch in batches {
                match store.insert_usage(&batch).await.expect("a batch commits") {
                    UsageInsert::Stored { inserted: n } => inserted += n,
                    other => panic!("{other:?}"),
                }
            }
            inserted
        }));
    }
    let mut inserted = 0;
    for sender in senders {
        inserted += sender.await.unwrap();
    }
    let distinct: std::collections::BTreeSet<usize> = (0..8)
        .flat_map(|sender| (0..5).map(move |round| (sender * 150 + round * 90) % 1500))
        .flat_map(|start| start..start + 500)
        .collect();
    assert_eq!(inserted, distinct.len() as u64, "each record counted once");
    assert_eq!(count_usage(store, None).await, 1010 + distinct.len() as i64);
    assert_eq!(
        assert_rollups_equal_the_ledger(store).await,
        1010 + distinct.len() as i64
    );
}

async fn the_migration_rolls_up_the_rows_already_stored(backend: Backend) {
    let db = TestDb::at_migration(backend, 2).await;
    register_keys(&db.store, 3).await;
    // The store of migration 2 writes no rollups; these rows are what an
    // older sidecar left.
    // (Rows holding up to i64::MAX: `http_api.rs`,
    // `usage_summary_adds_up_rows_stored_before_counts_were_bounded`.)
    for r in spread("old", 300) {
        let sql = format!(
            "INSERT INTO usage_log (request_id, api_key_id, method, endpoint, status_code, \
             outcome, request_bytes, response_bytes, duration_ms, created_at) \
             VALUES ('{}', {}, 'POST', '/p', {}, '{}', {}, {}, 1, '{}')",
            r.request_id,
            r.api_key_id,
            r.status_code,
            r.outcome.as_str(),
            r.request_bytes,
            r.response_bytes,
            sidecar::domain::clock::format_db_text(from_unix_ms(r.timestamp_ms).unwrap()),
        );
        match &db.store {
            Store::MySql(s) => sqlx::query(&sql).execute(s.pool()).await.map(drop),
            Store::Sqlite(s) => sqlx::query(&sql).execute(s.pool()).await.map(drop),
        }
        .expect("an old row");
    }
    db.store.migrate().await.expect("migration 3");
    assert_eq!(assert_rollups_equal_the_ledger(&db.store).await, 300);
    // Rows from before units (migration 6) count none.
    let summary = db
        .store
        .usage_summary(&SummaryFilter::default())
        .await
        .unwrap();
    assert!(summary.iter().all(|r| r.totals.units == 0), "{summary:?}");
    // New batches add to the backfilled rollups.
    let mut fresh = spread("new", 100);
    fresh.extend(spread("old", 50));
    assert_eq!(
        db.store.insert_usage(&fresh).await.unwrap(),
        UsageInsert::Stored { inserted: 100 }
    );
    assert_eq!(assert_rollups_equal_the_ledger(&db.store).await, 400);
    let units: u128 = db
        .store
        .usage_summary(&SummaryFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|r| r.totals.units)
        .sum();
    let fresh_units: u64 = fresh[..100].iter().map(|r| r.units).sum();
    assert_eq!(units, u128::from(fresh_units));
}

/// A summary from one instant to another counts the rows of the hours
/// between (the first's hour through the last's), read from hourly and
/// daily rollups alike, and nothing outside.
async fn summaries_between_two_instants_count_the_hours_between(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = &db.store;
    register_keys(store, 3).await;
    let records = spread("w", 600);
    store.insert_usage(&records).await.unwrap();
    let cases = [
        // Inside one hour, across midnight, whole days, up to now.
        (NOW - Duration::minutes(20), NOW),
        (
            datetime!(2026-11-30 22:10 UTC),
            datetime!(2026-12-01 01:00 UTC),
        ),
        (
            datetime!(2026-11-30 00:00 UTC),
            datetime!(2026-12-02 00:00 UTC),
        ),
        (datetime!(2026-11-30 13:59 UTC), NOW),
        (
            datetime!(2026-11-29 00:00 UTC),
            datetime!(2026-12-01 05:30 UTC),
        ),
    ];
    for (since, until) in cases {
        let (from, to) = (Grain::Hour.floor(since), Grain::Hour.ceil(until));
        let mut expected: BTreeMap<(i64, String), Totals> = BTreeMap::new();
        for r in &records {
            let t = from_unix_ms(r.timestamp_ms).unwrap();
            if from <= t && t < to {
                let e = expected
                    .entry((r.api_key_id, r.outcome.as_str().to_string()))
                    .or_default();
                e.0 += 1;
                e.1 += i128::from(r.request_bytes);
                e.2 += i128::from(r.response_bytes);
                e.3 += i128::from(r.units);
            }
        }
        assert!(!expected.is_empty(), "{since} to {until}");
        let filter = SummaryFilter {
            api_key_id: None,
            since: Some(since),
            until: Some(until),
        };
        let summary: BTreeMap<(i64, String), Totals> = store
            .usage_summary(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    (r.api_key_id, r.outcome),
                    (
                        r.totals.requests,
                        r.totals.request_bytes as i128,
                        r.totals.response_bytes as i128,
                        r.totals.units as i128,
                    ),
                )
            })
            .collect();
        assert_eq!(summary, expected, "{since} to {until}");
    }
}

async fn prune_deletes_old_rows_in_batches_and_keeps_the_summaries(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = &db.store;
    register_keys(store, 2).await;
    // A record every 7 hours for 120 days.
    let records: Vec<UsageRecord> = (0..(120 * 24 / 7))
        .map(|i| {
            let at = NOW - Duration::hours(7 * i);
            record(
                &format!("p-{i}"),
                1 + i % 2,
                at,
                OUTCOMES[(i % 3) as usize],
                i as u64,
            )
        })
        .collect();
    store.insert_usage(&records).await.unwrap();
    let before = NOW - Duration::days(90);
    let older = records
        .iter()
        .filter(|r| r.timestamp_ms < to_unix_ms(before))
        .count() as u64;
    assert!(older > 50, "{older}");

    let filters = [
        SummaryFilter::default(),
        SummaryFilter {
            api_key_id: Some(2),
            ..SummaryFilter::default()
        },
        SummaryFilter {
            api_key_id: None,
            since: Some(datetime!(2026-08-01 05:00:00 UTC)),
            until: None,
        },
        SummaryFilter {
            api_key_id: Some(1),
            since: Some(datetime!(2026-11-30 13:00:00 UTC)),
            until: Some(datetime!(2026-12-01 15:00:00 UTC)),
        },
    ];
    let mut summaries = Vec::new();
    for f in &filters {
        summaries.push(store.usage_summary(f).await.unwrap());
    }
    let series_30d = usage_series(store, 1, Window::ThirtyDays, NOW)
        .await
        .unwrap();

    let mut reports = Vec::new();
    let deleted = store
        .prune_usage(before, 7, |so_far| {
            reports.push(so_far);
            std::future::ready(())
        })
        .await
        .unwrap();
    assert_eq!(deleted, older);
    // Key by key, each key's rows in batches of at most 7.
    let batches: u64 = [1, 2]
        .iter()
        .map(|key| {
            records
                .iter()
                .filter(|r| r.api_key_id == *key && r.timestamp_ms < to_unix_ms(before))
                .count() as u64
        })
        .map(|rows| rows.div_ceil(7))
        .sum();
    assert_eq!(reports.len() as u64, batches, "batches of 7: {reports:?}");
    assert_eq!(reports.last(), Some(&older));
    assert_eq!(
        count_usage(store, None).await,
        records.len() as i64 - older as i64
    );
    for (f, summary) in filters.iter().zip(&summaries) {
        assert!(!summary.is_empty());
        assert_eq!(&store.usage_summary(f).await.unwrap(), summary, "{f:?}");
    }
    assert_eq!(
        usage_series(store, 1, Window::ThirtyDays, NOW)
            .await
            .unwrap(),
        series_30d
    );
    // Again: nothing older is left.
    let again = store
        .prune_usage(before, 7, |_| std::future::ready(()))
        .await
        .unwrap();
    assert_eq!(again, 0);
}

async fn series_fill_every_bucket_and_count_each_row_in_its_own(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = &db.store;
    register_keys(store, 2).await;
    let ms = Duration::milliseconds(1);
    let mut records = Vec::new();
    let mut add = |at: OffsetDateTime, outcome: Outcome, key: i64| {
        let id = format!("s-{}", records.len());
        records.push(record(&id, key, at, outcome, 10));
    };
    for window in Window::ALL {
        let (from, to) = window.span(NOW);
        // The first instant of the first bucket, the last of the last,
        // and just outside on both sides.
        add(from, Outcome::Allowed, 1);
        add(from, Outcome::InvalidApiKey, 1);
        add(to - ms, Outcome::Allowed, 1);
        add(from - ms, Outcome::Allowed, 1);
        add(to, Outcome::Allowed, 1);
        // Another key's rows are not this key's.
        add(from, Outcome::Allowed, 2);
    }
    store.insert_usage(&records).await.unwrap();

    for window in Window::ALL {
        let (from, to) = window.span(NOW);
        let series = usage_series(store, 1, window, NOW).await.unwrap();
        assert_eq!(series.points.len() as i32, window.buckets());
        assert_eq!(series.bucket_s, window.grain().seconds());
        assert_eq!(series.from, sidecar::domain::clock::format_rfc3339(from));
        assert_eq!(series.to, sidecar::domain::clock::format_rfc3339(to));
        for (i, p) in series.points.iter().enumerate() {
            let start = from + window.grain().duration() * (i as i32);
            assert_eq!(p.start, sidecar::domain::clock::format_rfc3339(start));
        }
        // What lands in the first and last buckets: the rows of every
        // window whose instant falls there (the windows nest).
        let in_bucket = |i: usize| {
            let start = from + window.grain().duration() * (i as i32);
            let end = start + window.grain().duration();
            records
                .iter()
                .filter(|r| r.api_key_id == 1)
                .filter(|r| {
                    let t = from_unix_ms(r.timestamp_ms).unwrap();
                    start <= t && t < end
                })
                .collect::<Vec<_>>()
        };
        let total: i64 = series.points.iter().map(|p| p.requests).sum();
        let expected: usize = (0..series.points.len()).map(|i| in_bucket(i).len()).sum();
        assert_eq!(total as usize, expected, "{window:?}");
        for (i, p) in series.points.iter().enumerate() {
            let rows = in_bucket(i);
            assert_eq!(p.requests as usize, rows.len(), "{window:?} bucket {i}");
            assert_eq!(p.request_bytes, 10 * rows.len() as u128);
            assert_eq!(p.response_bytes, 31 * rows.len() as u128);
            assert_eq!(p.units, 25 * rows.len() as u128);
            let denied = rows
                .iter()
                .filter(|r| r.outcome != Outcome::Allowed)
                .count();
            assert_eq!(p.denials.values().sum::<i64>() as usize, denied);
        }
        let first = &series.points[0];
        assert!(first.requests >= 2, "{window:?}: {first:?}");
        assert!(first.denials.get("invalid_api_key").copied().unwrap_or(0) >= 1);
        assert!(series.points.last().unwrap().requests >= 1);
        assert!(
            series.points.iter().filter(|p| p.requests == 0).count() > 0,
            "{window:?}: zero-filled buckets are present"
        );
    }
    // A key with no usage: every bucket, all zero.
    let empty = usage_series(store, 2, Window::Hour, NOW + Duration::days(400))
        .await
        .unwrap();
    assert_eq!(empty.points.len(), 60);
    assert!(empty
        .points
        .iter()
        .all(|p| p.requests == 0 && p.denials.is_empty()));
}

async fn series_over_http(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 1).await;
    let now = now_ms();
    let mut batch = vec![support::record("h-1", 1), support::record("h-2", 1)];
    batch[1]["outcome"] = json!("token_expired");
    batch[1]["status_code"] = json!(401);
    batch[0]["timestamp_ms"] = json!(now);
    batch[1]["timestamp_ms"] = json!(now);
    assert_eq!(h.ingest(&Value::Array(batch)).await.status, StatusCode::OK);

    for (window, buckets, bucket_s) in [("hour", 60, 60), ("day", 24, 3600), ("30d", 30, 86400)] {
        let path = format!("/v1/keys/1/usage/series?window={window}");
        let reply = h.admin(Method::GET, &path, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let body = reply.json();
        assert_eq!(body["key_id"], 1);
        assert_eq!(body["window"], window);
        assert_eq!(body["bucket_s"], bucket_s);
        let points = body["points"].as_array().unwrap();
        assert_eq!(points.len(), buckets);
        assert!(body["from"].as_str().unwrap().ends_with('Z'));
        assert_eq!(points[0]["start"], body["from"]);
        // Now is in the last bucket (unless a bucket ended in between).
        let total: i64 = points.iter().map(|p| p["requests"].as_i64().unwrap()).sum();
        assert_eq!(total, 2, "{body}");
        let last = points.iter().rev().find(|p| p["requests"] != 0).unwrap();
        assert_eq!(last["request_bytes"], 200);
        assert_eq!(last["response_bytes"], 80);
        assert_eq!(last["units"], 12);
        assert_eq!(last["denials"], json!({"token_expired": 1}));
        assert_eq!(points[0].as_object().unwrap().len(), 8, "{}", points[0]);
        assert_eq!(points[0]["models"], json!({}));
        assert_eq!(points[0]["spend"], json!({}));
    }

    let error = h
        .admin(Method::GET, "/v1/keys/99/usage/series?window=day", None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "key_not_found");
    assert!(error["message"].as_str().unwrap().contains("99"));
    for query in ["window=week", "", "window=day&window=hour", "window=DAY"] {
        let error = h
            .admin(
                Method::GET,
                &format!("/v1/keys/1/usage/series?{query}"),
                None,
            )
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error["field"], "window", "{query}");
    }
    let error = h
        .admin(Method::GET, "/v1/keys/x/usage/series?window=day", None)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(error["field"], "id");
    let refused = h
        .send(
            axum::http::Request::get("/v1/keys/1/usage/series?window=day")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    refused.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
}
