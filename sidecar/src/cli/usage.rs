//! `tollgate usage summary` and `tollgate usage log`: the ledger's totals
//! per key and outcome or model, and one key's rows, as JSON or as tables
//! for people. Costs are shown with their currency (`12.345678 USD`), an
//! LLM call without a price as `unpriced` (never a cost of 0), and a call
//! that is not an LLM call as `-`.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use time::OffsetDateTime;

use super::{open_store, print_json};
use crate::domain::clock::format_rfc3339;
use crate::domain::price::{format_cost, format_micros};
use crate::store::usage_log::log_filter;
use crate::store::{
    summary_filter, CostTotals, DatabaseTarget, ModelSummaryRow, SummaryBy, SummaryReply,
    UsageLogRow, UsageTotals,
};

/// Parses `--by`: the names of [`SummaryBy::ALL`], listed in `--help` and
/// in the error for any other value.
pub fn summary_by_parser() -> impl TypedValueParser<Value = SummaryBy> {
    PossibleValuesParser::new(SummaryBy::ALL.map(SummaryBy::column)).try_map(|name| {
        SummaryBy::from_name(&name).ok_or_else(|| format!("{name:?} is not a summary grouping"))
    })
}

/// `tollgate usage summary`.
pub async fn summary(
    target: &DatabaseTarget,
    key: Option<i64>,
    since: Option<&str>,
    by: SummaryBy,
    json: bool,
) -> Result<(), String> {
    let filter = summary_filter(key, since, OffsetDateTime::now_utc())
        .map_err(|e| format!("--since: {e}"))?;
    let since = filter.since.map(format_rfc3339);
    let store = open_store(target).await?;
    let unread = |e| format!("the usage summary could not be read: {e}");
    match by {
        SummaryBy::Outcome => {
            let rows = store.usage_summary(&filter).await.map_err(unread);
            store.close().await;
            let reply = SummaryReply { since, rows: rows? };
            if json {
                return print_json(&reply);
            }
            print_heading(&reply.since, reply.rows.is_empty());
            let rows = reply
                .rows
                .iter()
                .map(|r| (r.api_key_id, r.outcome.as_str(), &r.totals));
            print_totals("OUTCOME", rows);
        }
        SummaryBy::Model => {
            let rows = store.usage_summary_by_model(&filter).await.map_err(unread);
            store.close().await;
            let reply = SummaryReply { since, rows: rows? };
            if json {
                return print_json(&reply);
            }
            print_heading(&reply.since, reply.rows.is_empty());
            let model = |r: &ModelSummaryRow| r.model.clone().unwrap_or_else(|| "-".into());
            let named: Vec<_> = reply.rows.iter().map(|r| (model(r), r)).collect();
            let rows = named
                .iter()
                .map(|(m, r)| (r.api_key_id, m.as_str(), &r.totals));
            print_totals("MODEL", rows);
        }
    }
    Ok(())
}

fn print_heading(since: &Option<String>, empty: bool) {
    match since {
        Some(since) => println!("Usage since {since}"),
        None => println!("Usage, all time"),
    }
    if empty {
        println!("No usage recorded.");
    }
}

/// The summary table: one line per (key, outcome or model); `group` names
/// the second column.
fn print_totals<'a>(group: &str, rows: impl Iterator<Item = (i64, &'a str, &'a UsageTotals)>) {
    let mut rows = rows.peekable();
    if rows.peek().is_none() {
        return;
    }
    println!(
        "{:>10}  {:<28}  {:>10}  {:>14}  {:>14}  {:>14}  {:>12}  {:>12}  {:>12}  {:>12}  {:>22}  {:>8}",
        "API_KEY_ID",
        group,
        "REQUESTS",
        "REQUEST_BYTES",
        "RESPONSE_BYTES",
        "UNITS",
        "INPUT_TOK",
        "OUTPUT_TOK",
        "CACHED_TOK",
        "REASON_TOK",
        "COST",
        "UNPRICED"
    );
    for (key, name, t) in rows {
        println!(
            "{:>10}  {:<28}  {:>10}  {:>14}  {:>14}  {:>14}  {:>12}  {:>12}  {:>12}  {:>12}  {:>22}  {:>8}",
            key,
            name,
            t.requests,
            t.request_bytes,
            t.response_bytes,
            t.units,
            t.tokens.input_tokens,
            t.tokens.output_tokens,
            t.tokens.cached_input_tokens,
            t.tokens.reasoning_tokens,
            summary_cost(&t.cost),
            t.cost.unpriced_rows
        );
    }
}

/// A summary row's cost: the sum with its currency, `unpriced` when its
/// LLM calls had no price, `-` when it has none (no LLM call).
fn summary_cost(cost: &CostTotals) -> String {
    match (cost.cost_micros, &cost.currency) {
        (Some(micros), Some(currency)) => format_cost(micros, currency),
        (Some(micros), None) => format_micros(micros),
        (None, _) if cost.unpriced_rows > 0 => "unpriced".into(),
        (None, _) => "-".into(),
    }
}

/// A usage row's cost: with its currency, `unpriced` for an LLM call
/// without a price, `-` for a call that is not an LLM call.
fn row_cost(row: &UsageLogRow) -> String {
    match (row.cost_micros, &row.currency) {
        (Some(micros), currency) => format_cost(
            u128::try_from(micros).unwrap_or(0),
            currency.as_deref().unwrap_or("?"),
        ),
        (None, _) if row.unpriced => "unpriced".into(),
        (None, _) => "-".into(),
    }
}

/// `tollgate usage log`: key `key`'s rows, newest first.
pub async fn log(
    target: &DatabaseTarget,
    key: &str,
    since: Option<&str>,
    limit: Option<&str>,
    json: bool,
) -> Result<(), String> {
    let filter = log_filter(key, since, limit, OffsetDateTime::now_utc())
        .map_err(|e| format!("--{}: {}", e.field, e.message))?;
    let store = open_store(target).await?;
    let rows = async {
        if !store.key_exists(filter.api_key_id).await? {
            return Ok(None);
        }
        store.usage_log(&filter).await.map(Some)
    }
    .await;
    store.close().await;
    let rows = rows
        .map_err(|e| format!("the usage log could not be read: {e}"))?
        .ok_or_else(|| format!("--key: no key has id {}", filter.api_key_id))?;
    if json {
        return print_json(&rows);
    }
    print_log(&rows);
    Ok(())
}

fn print_log(rows: &[UsageLogRow]) {
    if rows.is_empty() {
        println!("No usage recorded for this key.");
        return;
    }
    println!(
        "{:<24}  {:<32}  {:<22}  {:>6}  {:<18}  {:<24}  {:<6}  {:>10}  {:>10}  {:>10}  {:>10}  {:<9}  {:>22}  {:>10}  {:>12}",
        "TIMESTAMP",
        "REQUEST_ID",
        "OUTCOME",
        "STATUS",
        "API",
        "MODEL",
        "STREAM",
        "INPUT_TOK",
        "OUTPUT_TOK",
        "CACHED_TOK",
        "REASON_TOK",
        "SOURCE",
        "COST",
        "REQ_BYTES",
        "RESP_BYTES"
    );
    for r in rows {
        println!(
            "{:<24}  {:<32}  {:<22}  {:>6}  {:<18}  {:<24}  {:<6}  {:>10}  {:>10}  {:>10}  {:>10}  {:<9}  {:>22}  {:>10}  {:>12}",
            r.timestamp,
            r.request_id,
            r.outcome,
            r.status_code,
            r.api.as_deref().unwrap_or("-"),
            r.model.as_deref().unwrap_or("-"),
            if r.streamed { "yes" } else { "no" },
            r.tokens.input_tokens,
            r.tokens.output_tokens,
            r.tokens.cached_input_tokens,
            r.tokens.reasoning_tokens,
            r.usage_source,
            row_cost(r),
            r.request_bytes,
            r.response_bytes
        );
    }
}
