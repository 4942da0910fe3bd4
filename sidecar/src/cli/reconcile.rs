//! `tollgate usage reconcile`: per key and quota window, the ledger's totals
//! (the `allowed` rows of `usage_log`) beside the limit counters and the
//! limits, flagging a key over its limit on a quota charged at admission,
//! which grants must never let happen, and a quota settled after the fact
//! (`response_bytes`, `units`) whose counter and ledger disagree.

use serde::Serialize;
use time::OffsetDateTime;
use tollgate_wire::{QuotaKind, Window};

use crate::domain::clock::{format_rfc3339, from_unix_ms, to_unix_ms};
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
    /// What the ledger holds for the window (`allowed` rows): requests,
    /// request or response bytes, or units.
    pub ledger: u128,
    /// True for `requests` and `request_bytes`.
    pub charged_at_admission: bool,
    /// An at-admission quota whose ledger or counter total passed the limit.
    pub over_limit: bool,
    /// A quota settled after the fact whose counter is not the ledger's
    /// total. Each allowed response is settled once and recorded once, so
    /// the two agree once both have arrived; they differ while responses
    /// are in flight or usage batches wait in a filter's buffer, and for
    /// good when a settlement or a record was lost (or the quota was set
    /// in the middle of the window, after rows the counter never saw).
    pub ledger_differs: bool,
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
            let (start, end) = (instant(span.start_ms), instant(span.end_ms));
            let ledger = ledger_total(store, api_key.id, quota.kind, start, end).await?;
            let at_admission = quota.kind.charged_at_admission();
            let over = ledger > u128::from(quota.limit)
                || charged > i64::try_from(quota.limit).unwrap_or(i64::MAX);
            let differs = u128::try_from(charged).ok() != Some(ledger);
            rows.push(ReconcileRow {
                key_id: api_key.id,
                quota: quota.kind,
                window: quota.window,
                window_start: format_rfc3339(start),
                window_end: format_rfc3339(end),
                limit: quota.limit,
                charged,
                ledger,
                charged_at_admission: at_admission,
                over_limit: at_admission && over,
                ledger_differs: !at_admission && differs,
            });
        }
    }
    Ok(rows)
}

fn instant(ms: i64) -> OffsetDateTime {
    from_unix_ms(u64::try_from(ms).unwrap_or(0)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The ledger's total of `kind` for a key in the window `[start, end)`
/// (on hour boundaries, as the rollups are).
async fn ledger_total(
    store: &Store,
    key_id: i64,
    kind: QuotaKind,
    start: OffsetDateTime,
    end: OffsetDateTime,
) -> Result<u128, StoreError> {
    let rows = store
        .usage_summary(&SummaryFilter {
            api_key_id: Some(key_id),
            since: Some(start),
            until: Some(end),
        })
        .await?;
    let allowed = rows.iter().find(|r| r.outcome == "allowed");
    Ok(allowed.map_or(0, |r| match kind {
        QuotaKind::Requests => u128::try_from(r.totals.requests).unwrap_or(0),
        QuotaKind::RequestBytes => r.totals.request_bytes,
        QuotaKind::ResponseBytes => r.totals.response_bytes,
        QuotaKind::Units => r.totals.units,
    }))
}

/// The rows as a table for people, and a last line saying whether any key
/// is over its limit (and how many settled quotas differ from the ledger).
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
            row.ledger,
            state(row),
        );
    }
    let over = rows.iter().filter(|r| r.over_limit).count();
    println!("{over} key quota(s) over the limit.");
    let differing = rows.iter().filter(|r| r.ledger_differs).count();
    if differing > 0 {
        println!(
            "{differing} settled quota(s) whose counter differs from the ledger \
             (settlements and usage batches arrive apart: read again once traffic is quiet)."
        );
    }
}

/// A row's STATE column.
fn state(row: &ReconcileRow) -> &'static str {
    if row.over_limit {
        "OVER LIMIT"
    } else if row.ledger_differs {
        "LEDGER DIFFERS"
    } else {
        "ok"
    }
}
