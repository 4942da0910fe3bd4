//! `tollgate usage reconcile`: per key and quota window, the ledger's totals
//! (the `allowed` rows of `usage_log`) beside the limit counters and the
//! limits, flagging a key over its limit on a quota charged at admission,
//! which grants must never let happen.
//!
//! `units` are not in the ledger yet (the filter's half records them), so
//! their ledger total is shown as unknown.

use serde::Serialize;
use time::OffsetDateTime;
use tollgate_wire::{QuotaKind, Window};

use crate::clock::{format_rfc3339, from_unix_ms, to_unix_ms};
use crate::store::{Store, StoreError, SummaryFilter};

/// One (key, quota) in the window containing the instant reconciled at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileRow {
    pub key_id: i64,
    pub quota: QuotaKind,
    pub window: Window,
    /// RFC 3339, UTC: the window's start (included) and end (excluded).
    pub window_start: String,
    pub window_end: String,
    pub limit: u64,
    /// What the limit counter has charged (granted net of returns, or settled).
    pub charged: i64,
    /// What the ledger holds for the window (`allowed` rows); `None` for units.
    pub ledger: Option<u128>,
    /// True for `requests` and `request_bytes`.
    pub charged_at_admission: bool,
    /// An at-admission quota whose ledger or counter total passed the limit.
    pub over_limit: bool,
}

/// The rows for every key with quotas (or only `key`), in the windows
/// containing `at` (only those of `window`, when given).
pub async fn reconcile(
    store: &Store,
    key: Option<i64>,
    window: Option<Window>,
    at: OffsetDateTime,
) -> Result<Vec<ReconcileRow>, StoreError> {
    let at_ms = i64::try_from(to_unix_ms(at)).unwrap_or(i64::MAX);
    let counters = store.counters_at(at_ms).await?;
    let mut rows = Vec::new();
    for api_key in store.list_keys().await? {
        if key.is_some_and(|id| id != api_key.id) {
            continue;
        }
        for quota in &api_key.limits.quotas {
            if window.is_some_and(|w| w != quota.window) {
                continue;
            }
            let span = quota.window.containing(at_ms);
            let charged = counters
                .iter()
                .find(|c| {
                    c.api_key_id == api_key.id
                        && c.quota == quota.kind.as_str()
                        && c.span.start_ms == span.start_ms
                })
                .map_or(0, |c| c.charged);
            let start = instant(span.start_ms);
            let ledger = ledger_total(store, api_key.id, quota.kind, start).await?;
            let at_admission = quota.kind.charged_at_admission();
            let over = ledger.is_some_and(|total| total > u128::from(quota.limit))
                || charged > i64::try_from(quota.limit).unwrap_or(i64::MAX);
            rows.push(ReconcileRow {
                key_id: api_key.id,
                quota: quota.kind,
                window: quota.window,
                window_start: format_rfc3339(start),
                window_end: format_rfc3339(instant(span.end_ms)),
                limit: quota.limit,
                charged,
                ledger,
                charged_at_admission: at_admission,
                over_limit: at_admission && over,
            });
        }
    }
    Ok(rows)
}

fn instant(ms: i64) -> OffsetDateTime {
    from_unix_ms(u64::try_from(ms).unwrap_or(0)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The ledger's total of `kind` for a key since `start` (the window's
/// start; the ledger holds nothing after now).
async fn ledger_total(
    store: &Store,
    key_id: i64,
    kind: QuotaKind,
    start: OffsetDateTime,
) -> Result<Option<u128>, StoreError> {
    let rows = store
        .usage_summary(&SummaryFilter {
            api_key_id: Some(key_id),
            since: Some(start),
        })
        .await?;
    let allowed = rows.iter().find(|r| r.outcome == "allowed");
    Ok(match kind {
        QuotaKind::Requests => Some(allowed.map_or(0, |r| r.requests as u128)),
        QuotaKind::RequestBytes => Some(allowed.map_or(0, |r| r.request_bytes)),
        QuotaKind::ResponseBytes => Some(allowed.map_or(0, |r| r.response_bytes)),
        QuotaKind::Units => None,
    })
}

/// The rows as a table for people, and a last line saying whether any key
/// is over its limit.
pub fn print_table(rows: &[ReconcileRow]) {
    if rows.is_empty() {
        println!("No key has a quota.");
        return;
    }
    println!(
        "{:>6}  {:<14}  {:<6}  {:<24}  {:>14}  {:>14}  {:>14}  STATE",
        "KEY", "QUOTA", "WINDOW", "WINDOW_START", "LIMIT", "CHARGED", "LEDGER"
    );
    for row in rows {
        println!(
            "{:>6}  {:<14}  {:<6}  {:<24}  {:>14}  {:>14}  {:>14}  {}",
            row.key_id,
            row.quota.as_str(),
            row.window.as_str(),
            row.window_start,
            row.limit,
            row.charged,
            row.ledger.map_or("-".to_string(), |t| t.to_string()),
            if row.over_limit { "OVER LIMIT" } else { "ok" },
        );
    }
    let over = rows.iter().filter(|r| r.over_limit).count();
    println!("{over} key quota(s) over the limit.");
}
