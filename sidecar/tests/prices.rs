//! Prices and the cost of LLM usage rows, against SQLite and MySQL alike:
//! prices are set and listed by the admin API and by `tollgate prices`,
//! versioned by the instant they take effect; every LLM row is priced once
//! at ingestion by the version in effect at its own time, a model without
//! a price leaves its rows unpriced (never a cost of 0), other calls have
//! no cost; summaries add the rows' stored costs exactly (a property over
//! seeded random tokens and prices); bad prices are refused naming the
//! field, changing nothing.
//!
//! Every test below runs twice, `sqlite::<name>` and `mysql::<name>`, like
//! `llm_usage.rs` (the MySQL half needs `TOLLGATE_TEST_MYSQL_URL`).

#[macro_use]
mod support;

use std::process::{Command, Output};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use sidecar::domain::clock::{format_rfc3339, from_unix_ms, now_ms, to_unix_ms};
use sidecar::store::rollup::Grain;
use sidecar::store::DatabaseTarget;
use support::console::{logged_in, read};
use support::*;
use time::Duration;

on_both_backends!(
    prices_are_set_and_listed_over_the_api,
    bad_prices_are_refused_naming_the_field_and_change_nothing,
    prices_are_set_and_listed_by_the_cli,
    rows_are_priced_at_their_own_time_and_summaries_add_up,
    unpriced_and_non_llm_rows_are_told_apart,
    summary_costs_are_the_sums_of_row_costs,
    the_console_shows_spend_by_model,
    the_series_has_spend_per_model_per_bucket,
);

/// The start of the previous hour, as ms: every record of a test is
/// within the ingestion window, in one hour bucket.
fn hour_start_ms() -> u64 {
    to_unix_ms(Grain::Hour.floor(now_ms()) - Duration::hours(1))
}

fn rfc3339(ms: u64) -> String {
    format_rfc3339(from_unix_ms(ms).expect("an instant"))
}

/// A record of an LLM call of `model`: input (cached ones included),
/// cached input and output tokens.
fn llm_record(id: &str, at_ms: u64, model: &str, input: u64, cached: u64, output: u64) -> Value {
    let mut r = record(id, 1);
    r["timestamp_ms"] = json!(at_ms);
    r["llm"] = json!({
        "api": "openai.chat", "model": model, "streamed": false, "usage_source": "reported",
        "input_tokens": input, "output_tokens": output,
        "cached_input_tokens": cached, "reasoning_tokens": 0,
    });
    r
}

async fn ingest_ok(h: &Harness, batch: &Value) {
    let reply = h.ingest(batch).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

async fn admin_ok(h: &Harness, method: Method, path: &str, body: Option<Value>) -> Value {
    let reply = h.admin(method, path, body).await;
    assert!(reply.status.is_success(), "{path}: {}", reply.text());
    reply.json()
}

async fn set_price(h: &Harness, body: Value) -> Value {
    let reply = h.admin(Method::POST, "/v1/prices", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json()
}

/// The usage log of key 1, by request id.
async fn log_by_id(h: &Harness) -> std::collections::BTreeMap<String, Value> {
    let rows = admin_ok(h, Method::GET, "/v1/usage/log?key=1&limit=10000", None).await;
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["request_id"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

/// The summary by model's row of `model`.
async fn model_row(h: &Harness, model: &str) -> Value {
    let summary = admin_ok(h, Method::GET, "/v1/usage/summary?by=model", None).await;
    summary["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == model)
        .unwrap_or_else(|| panic!("no row of {model} in {summary}"))
        .clone()
}

/// The database URL the CLI is given for a test database.
fn database_url(target: &DatabaseTarget) -> String {
    match target {
        DatabaseTarget::MySql(url) => url.clone(),
        DatabaseTarget::Sqlite(path) => format!("sqlite://{}", path.display()),
    }
}

/// `tollgate args...` on the test's database.
fn tollgate(h: &Harness, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env("DATABASE_URL", database_url(&h.db.target))
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .expect("run tollgate")
}

fn tollgate_ok(h: &Harness, args: &[&str]) -> String {
    let out = tollgate(h, args);
    assert!(
        out.status.success(),
        "tollgate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn prices_are_set_and_listed_over_the_api(backend: Backend) {
    let h = Harness::new(backend).await;
    let empty = admin_ok(&h, Method::GET, "/v1/prices", None).await;
    assert_eq!(empty, json!({"currency": null, "prices": []}));
    let set = set_price(
        &h,
        json!({"model": "gpt-4o", "input": "2.50", "output": "10.00",
               "from": "2026-12-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(set["input_micros"], 2_500_000);
    assert_eq!(
        set["cached_input_micros"], 2_500_000,
        "cached defaults to input"
    );
    assert_eq!(set["output"], "10.000000");
    assert_eq!(set["per"], "1M");
    assert_eq!(set["per_tokens"], 1_000_000);
    assert_eq!(set["currency"], "USD");
    assert_eq!(set["from"], "2026-12-01T00:00:00.000Z");
    // A later version, and another model per thousand tokens.
    set_price(
        &h,
        json!({"model": "gpt-4o", "input": "2", "output": "8", "cached_input": "0.5",
               "from": "2026-12-02T00:00:00Z", "currency": "USD"}),
    )
    .await;
    set_price(
        &h,
        json!({"model": "claude-sonnet-4", "input": "0.003", "output": "0.015", "per": "1k"}),
    )
    .await;
    let list = admin_ok(&h, Method::GET, "/v1/prices", None).await;
    assert_eq!(list["currency"], "USD");
    let rows: Vec<_> = list["prices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["model"].as_str().unwrap().to_string(),
                p["input_micros"].as_u64().unwrap(),
                p["cached_input_micros"].as_u64().unwrap(),
                p["per"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("claude-sonnet-4".into(), 3_000, 3_000, "1k".into()),
            ("gpt-4o".into(), 2_500_000, 2_500_000, "1M".into()),
            ("gpt-4o".into(), 2_000_000, 500_000, "1M".into()),
        ]
    );
    // The admin token is required.
    let anonymous = h.get("/v1/prices").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

async fn bad_prices_are_refused_naming_the_field_and_change_nothing(backend: Backend) {
    let h = Harness::new(backend).await;
    set_price(
        &h,
        json!({"model": "gpt-4o", "input": "1", "output": "2", "currency": "EUR",
               "from": "2026-12-01T00:00:00Z"}),
    )
    .await;
    let before = admin_ok(&h, Method::GET, "/v1/prices", None).await;
    let good = json!({"model": "m", "input": "1", "output": "2", "currency": "EUR"});
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    for (body, field) in [
        (with("input", json!("-1")), "input"),
        (with("input", json!("abc")), "input"),
        (with("input", json!(2.5)), "input"),
        (with("output", json!("0.0000001")), "output"),
        (with("cached_input", json!("1e3")), "cached_input"),
        (with("currency", json!("XYZ")), "currency"),
        // Every price is in the currency of the first.
        (with("currency", json!("USD")), "currency"),
        (with("per", json!("10")), "per"),
        (with("from", json!("next tuesday")), "from"),
        (with("model", json!("")), "model"),
        (with("model", json!("has space")), "model"),
        // The same model and instant as a stored version.
        (
            with("model", json!("gpt-4o")).merge_from("2026-12-01T00:00:00Z"),
            "from",
        ),
        (with("colour", json!("red")), "colour"),
    ] {
        let reply = h
            .admin(Method::POST, "/v1/prices", Some(body.clone()))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text()
        );
        let error = &reply.json()["error"];
        assert_eq!(error["field"], field, "{body}: {error}");
    }
    let after = admin_ok(&h, Method::GET, "/v1/prices", None).await;
    assert_eq!(before, after, "a refused price changes nothing");

    // The CLI refuses the same, naming the flag, and stores nothing.
    for (args, flag) in [
        (&["--input", "-1", "--output", "1"][..], "--input"),
        (&["--input", "1", "--output", "1.1234567"][..], "--output"),
        (
            &["--input", "1", "--output", "1", "--cached-input", "x"][..],
            "--cached-input",
        ),
        (
            &["--input", "1", "--output", "1", "--currency", "usd"][..],
            "--currency",
        ),
        (
            &["--input", "1", "--output", "1", "--per", "1000"][..],
            "--per",
        ),
        (
            &["--input", "1", "--output", "1", "--from", "2026-13-01"][..],
            "--from",
        ),
        (
            &["--input", "1", "--output", "1", "--currency", "USD"][..],
            "--currency",
        ),
    ] {
        let mut all = vec!["prices", "set", "--model", "m"];
        all.extend_from_slice(args);
        let out = tollgate(&h, &all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{all:?} was accepted");
        assert!(stderr.contains(flag), "{all:?}: {stderr}");
    }
    let after = admin_ok(&h, Method::GET, "/v1/prices", None).await;
    assert_eq!(before, after, "a refused price changes nothing");
}

/// A body with `from` set, for the table above.
trait MergeFrom {
    fn merge_from(self, from: &str) -> Value;
}

impl MergeFrom for Value {
    fn merge_from(mut self, from: &str) -> Value {
        self["from"] = json!(from);
        self
    }
}

async fn prices_are_set_and_listed_by_the_cli(backend: Backend) {
    let h = Harness::new(backend).await;
    let text = tollgate_ok(&h, &["prices", "list"]);
    assert!(text.contains("No prices yet"), "{text}");
    let text = tollgate_ok(
        &h,
        &[
            "prices",
            "set",
            "--model",
            "gpt-4o",
            "--input",
            "2.50",
            "--output",
            "10.00",
            "--cached-input",
            "1.25",
            "--from",
            "2026-12-01T00:00:00Z",
        ],
    );
    assert!(
        text.contains("gpt-4o") && text.contains("2.500000") && text.contains("USD per 1M"),
        "{text}"
    );
    let set: Value = serde_json::from_str(&tollgate_ok(
        &h,
        &[
            "prices",
            "set",
            "--model",
            "gpt-4o-mini",
            "--input",
            "0.00015",
            "--output",
            "0.0006",
            "--per",
            "1k",
            "--json",
        ],
    ))
    .expect("one JSON object");
    assert_eq!(set["input_micros"], 150);
    assert_eq!(set["output_micros"], 600);
    assert_eq!(set["per_tokens"], 1_000);
    // The CLI and the API see the same prices.
    let cli: Value = serde_json::from_str(&tollgate_ok(&h, &["prices", "list", "--json"])).unwrap();
    let api = admin_ok(&h, Method::GET, "/v1/prices", None).await;
    assert_eq!(cli, api);
    assert_eq!(cli["prices"].as_array().unwrap().len(), 2);
    assert_eq!(cli["prices"][0]["cached_input_micros"], 1_250_000);
    let table = tollgate_ok(&h, &["prices", "list"]);
    assert!(
        table.contains("gpt-4o-mini") && table.contains("1.250000"),
        "{table}"
    );
}

async fn rows_are_priced_at_their_own_time_and_summaries_add_up(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 1).await;
    let t = hour_start_ms();
    // 2.50 / 1.25 / 10.00 per 1M from t + 10 min; 3.00 / 0.30 / 12.00 from t + 30 min.
    for (from, input, cached, output) in [
        (t + 600_000, "2.50", "1.25", "10.00"),
        (t + 1_800_000, "3", "0.30", "12"),
    ] {
        set_price(
            &h,
            json!({"model": "gpt-4o", "input": input, "cached_input": cached,
                   "output": output, "from": rfc3339(from)}),
        )
        .await;
    }
    let batch = json!([
        // Before the first version: unpriced.
        llm_record("a-early", t + 599_999, "gpt-4o", 1000, 0, 100),
        // At the first version's instant, and within it:
        // 600 * 2.5 + 400 * 1.25 + 300 * 10 = 5000 micro-units.
        llm_record("b-first", t + 600_000, "gpt-4o", 1000, 400, 300),
        // 1 * 2.5 = 2.5, rounded half up once: 3.
        llm_record("c-half", t + 1_799_999, "gpt-4o", 1, 0, 0),
        // The second version: 500 * 3 + 500 * 0.3 + 1000 * 12 = 13650.
        llm_record("d-second", t + 1_800_000, "gpt-4o", 1000, 500, 1000),
        // 7 * 0.3 = 2.1 -> 2.
        llm_record("e-cached", t + 3_000_000, "gpt-4o", 7, 7, 0),
    ]);
    ingest_ok(&h, &batch).await;
    let log = log_by_id(&h).await;
    let cost = |id: &str| log[id]["cost_micros"].clone();
    assert_eq!(cost("a-early"), Value::Null);
    assert_eq!(log["a-early"]["unpriced"], true);
    assert_eq!(cost("b-first"), 5_000);
    assert_eq!(cost("c-half"), 3);
    assert_eq!(cost("d-second"), 13_650);
    assert_eq!(cost("e-cached"), 2);
    assert_eq!(log["d-second"]["currency"], "USD");
    assert_eq!(log["d-second"]["unpriced"], false);

    // The summary adds the stored costs: 5000 + 3 + 13650 + 2, not the
    // rounding of the exact sum (18655.1 -> 18655 here, but 18655 is
    // what the rows say).
    let row = model_row(&h, "gpt-4o").await;
    assert_eq!(row["cost_micros"], 18_655, "{row}");
    assert_eq!(row["currency"], "USD");
    assert_eq!(row["priced_rows"], 4);
    assert_eq!(row["unpriced_rows"], 1);
    let by_outcome = admin_ok(&h, Method::GET, "/v1/usage/summary?key=1", None).await;
    assert_eq!(by_outcome["rows"][0]["cost_micros"], 18_655, "{by_outcome}");

    // A price set later does not reprice stored rows; a re-sent record is
    // not priced again.
    set_price(
        &h,
        json!({"model": "gpt-4o", "input": "100", "output": "100", "from": rfc3339(t)}),
    )
    .await;
    ingest_ok(&h, &batch).await;
    assert_eq!(model_row(&h, "gpt-4o").await["cost_micros"], 18_655);
    assert_eq!(log_by_id(&h).await["a-early"]["cost_micros"], Value::Null);

    // The CLI shows the same, with the currency.
    let summary = tollgate_ok(&h, &["usage", "summary", "--by", "model"]);
    let line = summary
        .lines()
        .find(|l| l.contains("gpt-4o"))
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(line.contains("0.018655 USD"), "{line}");
    assert!(line.trim_end().ends_with(" 1"), "one unpriced row: {line}");
    let log_text = tollgate_ok(&h, &["usage", "log", "--key", "1"]);
    for (id, shown) in [
        ("a-early", "unpriced"),
        ("b-first", "0.005000 USD"),
        ("c-half", "0.000003 USD"),
    ] {
        let line = log_text.lines().find(|l| l.contains(id)).unwrap();
        assert!(line.contains(shown), "{id}: {line}");
    }
}

async fn unpriced_and_non_llm_rows_are_told_apart(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 1).await;
    let t = hour_start_ms();
    let mut plain = record("plain", 1);
    plain["timestamp_ms"] = json!(t);
    ingest_ok(
        &h,
        &json!([
            plain,
            llm_record("llm", t, "no-price-model", 10, 0, 10),
            // A model no price can name (prices take visible ASCII).
            llm_record("odd", t, "modèle ", 10, 0, 10),
        ]),
    )
    .await;
    let log = log_by_id(&h).await;
    assert_eq!(log["plain"]["cost_micros"], Value::Null);
    assert_eq!(log["plain"]["unpriced"], false, "not an LLM call");
    assert_eq!(log["llm"]["cost_micros"], Value::Null);
    assert_eq!(log["llm"]["unpriced"], true);
    assert_eq!(log["odd"]["unpriced"], true);
    let row = model_row(&h, "no-price-model").await;
    assert_eq!(row["cost_micros"], Value::Null, "never a silent 0: {row}");
    assert_eq!(row["unpriced_rows"], 1);
    let summary = admin_ok(&h, Method::GET, "/v1/usage/summary?by=model", None).await;
    let plain_row = &summary["rows"][0];
    assert_eq!(plain_row["model"], Value::Null);
    assert_eq!(plain_row["cost_micros"], Value::Null);
    assert_eq!(plain_row["unpriced_rows"], 0);
    let text = tollgate_ok(&h, &["usage", "summary", "--by", "model"]);
    let line = text.lines().find(|l| l.contains("no-price-model")).unwrap();
    assert!(line.contains("unpriced"), "{line}");
    let log_text = tollgate_ok(&h, &["usage", "log", "--key", "1"]);
    let line = log_text.lines().find(|l| l.contains("plain")).unwrap();
    assert!(!line.contains("unpriced"), "{line}");
}

/// xorshift64*: the property's cases, the same on every run of a seed.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An amount with up to six decimals, as text, and its micro-units.
    fn amount(&mut self, max_micros: u64) -> (String, u64) {
        let micros = match self.below(4) {
            0 => self.below(10),
            1 => self.below(1_000),
            _ => self.below(max_micros + 1),
        };
        (
            format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000),
            micros,
        )
    }
}

/// A price version as the property sets it: from, per, and the input,
/// cached input and output micro-units.
type Version = (u64, u64, [u64; 3]);

/// For random token counts and random price versions, in three models
/// (one of them unpriced): each row's stored cost is its exact cost
/// rounded half up, and every summary's cost is exactly the sum of its
/// rows' costs.
async fn summary_costs_are_the_sums_of_row_costs(backend: Backend) {
    let rounds: u64 = if backend == Backend::MySql { 3 } else { 6 };
    for seed in 1..=rounds {
        let h = Harness::new(backend).await;
        register_keys(&h.db.store, 1).await;
        let mut rng = Seeded(0x9E37_79B9_7F4A_7C15 ^ seed);
        let t = hour_start_ms();
        let pers = [("1", 1u64), ("1k", 1_000), ("1M", 1_000_000)];
        // Per model, its versions: (from, per, input, cached, output).
        let mut versions: Vec<(&str, Vec<Version>)> = Vec::new();
        for model in ["m-a", "m-b"] {
            let mut list = Vec::new();
            for v in 0..1 + rng.below(3) {
                let from = t + v * 1_200_000 + rng.below(1_000);
                let (per_name, per) = pers[rng.below(3) as usize];
                let max = 1_000 * per; // up to 1000 micro-units a token
                let (input_text, input) = rng.amount(max);
                let (cached_text, cached) = rng.amount(max);
                let (output_text, output) = rng.amount(max);
                set_price(
                    &h,
                    json!({"model": model, "input": input_text, "cached_input": cached_text,
                           "output": output_text, "per": per_name, "from": rfc3339(from)}),
                )
                .await;
                list.push((from, per, [input, cached, output]));
            }
            versions.push((model, list));
        }
        let mut batch = Vec::new();
        let mut expected: std::collections::BTreeMap<String, Option<i64>> = Default::default();
        for i in 0..150 {
            let model = ["m-a", "m-b", "m-unpriced"][rng.below(3) as usize];
            let at = t + rng.below(3_600_000);
            let input = match rng.below(3) {
                0 => rng.below(10),
                1 => rng.below(100_000),
                _ => rng.below(tollgate_wire::MAX_TOKENS + 1),
            };
            let cached = rng.below(input + 1);
            let output_bound = if rng.below(2) == 0 { 1_000 } else { 1 << 30 };
            let output = rng.below(output_bound);
            let id = format!("r{i:03}");
            batch.push(llm_record(&id, at, model, input, cached, output));
            // The version in effect, computed apart from the sidecar's code.
            let version = versions
                .iter()
                .find(|(m, _)| *m == model)
                .and_then(|(_, list)| list.iter().filter(|v| v.0 <= at).max_by_key(|v| v.0));
            let cost = version.map(|(_, per, [p_in, p_cached, p_out])| {
                let num = u128::from(input - cached) * u128::from(*p_in)
                    + u128::from(cached) * u128::from(*p_cached)
                    + u128::from(output) * u128::from(*p_out);
                let per = u128::from(*per);
                // Half up: the remainder's double reaches the divisor.
                let (q, r) = (num / per, num % per);
                (q + u128::from(2 * r >= per)) as i64
            });
            expected.insert(id, cost);
        }
        ingest_ok(&h, &Value::Array(batch)).await;
        let log = log_by_id(&h).await;
        let mut sums: std::collections::BTreeMap<String, (i64, i64, i64)> = Default::default();
        for (id, want) in &expected {
            let row = &log[id];
            assert_eq!(
                row["cost_micros"].as_i64(),
                *want,
                "seed {seed} {id}: {row}"
            );
            let sum = sums
                .entry(row["model"].as_str().unwrap().to_string())
                .or_default();
            match row["cost_micros"].as_i64() {
                Some(c) => {
                    sum.0 += c;
                    sum.1 += 1;
                }
                None => sum.2 += 1,
            }
        }
        let mut total = 0;
        for (model, (cost, priced, unpriced)) in &sums {
            let row = model_row(&h, model).await;
            let shown = row["cost_micros"].as_i64();
            assert_eq!(
                shown,
                (*priced > 0).then_some(*cost),
                "seed {seed} {model}: {row}"
            );
            assert_eq!(row["priced_rows"], *priced, "seed {seed} {model}");
            assert_eq!(row["unpriced_rows"], *unpriced, "seed {seed} {model}");
            total += cost;
        }
        let by_outcome = admin_ok(&h, Method::GET, "/v1/usage/summary", None).await;
        assert_eq!(by_outcome["rows"][0]["cost_micros"], total, "seed {seed}");
    }
}

/// The console's key page reads its spend table from the summary by model,
/// through the console's own allow-listed route.
async fn the_console_shows_spend_by_model(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 1).await;
    let t = hour_start_ms();
    set_price(
        &h,
        json!({"model": "gpt-4o", "input": "1", "output": "2", "from": rfc3339(t)}),
    )
    .await;
    ingest_ok(
        &h,
        &json!([
            llm_record("a", t + 1, "gpt-4o", 1_000_000, 0, 1_000_000),
            llm_record("b", t + 2, "unpriced-model", 5, 0, 5),
        ]),
    )
    .await;
    let (cookie, _) = logged_in(&h).await;
    let page = read(&h, "/console/keys/1", &cookie).await;
    assert!(page.text().contains(r#"<table id="model-spend">"#));
    let reply = read(
        &h,
        "/console/api/usage/summary?key=1&by=model&since=24h",
        &cookie,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let rows = reply.json()["rows"].clone();
    assert_eq!(rows[0]["model"], "gpt-4o", "{rows}");
    assert_eq!(rows[0]["cost_micros"], 3_000_000);
    assert_eq!(rows[0]["currency"], "USD");
    assert_eq!(rows[1]["model"], "unpriced-model");
    assert_eq!(rows[1]["cost_micros"], Value::Null);
    assert_eq!(rows[1]["unpriced_rows"], 1);
}

async fn the_series_has_spend_per_model_per_bucket(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 1).await;
    let t = hour_start_ms();
    set_price(
        &h,
        json!({"model": "gpt-4o", "input": "1", "output": "2", "from": rfc3339(t)}),
    )
    .await;
    ingest_ok(
        &h,
        &json!([
            llm_record("a", t + 1, "gpt-4o", 1_000_000, 0, 1_000_000),
            llm_record("b", t + 2, "unpriced-model", 5, 0, 5),
            llm_record("c", to_unix_ms(now_ms()) - 1_000, "gpt-4o", 1_000_000, 0, 0),
        ]),
    )
    .await;
    let (cookie, _) = logged_in(&h).await;
    let spend = |series: &Value, model: &str, field: &str| -> i64 {
        series["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["spend"][model][field].as_i64().unwrap_or(0))
            .sum()
    };
    // From the hourly rollups: the costs stored on the rows, per model.
    let day = read(&h, "/console/api/keys/1/usage/series?window=day", &cookie).await;
    assert_eq!(day.status, StatusCode::OK, "{}", day.text());
    let day = day.json();
    assert_eq!(day["currency"], "USD");
    assert_eq!(spend(&day, "gpt-4o", "cost_micros"), 4_000_000);
    assert_eq!(spend(&day, "gpt-4o", "priced_rows"), 2);
    assert_eq!(spend(&day, "unpriced-model", "cost_micros"), 0);
    assert_eq!(spend(&day, "unpriced-model", "unpriced_rows"), 1);
    let bucket = day["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["start"] == rfc3339(t))
        .unwrap();
    assert_eq!(bucket["spend"]["gpt-4o"]["cost_micros"], 3_000_000);
    // From usage_log, per minute: only the last hour's call.
    let hour = admin_ok(&h, Method::GET, "/v1/keys/1/usage/series?window=hour", None).await;
    assert_eq!(spend(&hour, "gpt-4o", "cost_micros"), 1_000_000);
    assert_eq!(spend(&hour, "gpt-4o", "priced_rows"), 1);
    assert_eq!(spend(&hour, "unpriced-model", "unpriced_rows"), 0);
}
