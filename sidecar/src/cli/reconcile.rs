//! `tollgate usage reconcile`: per key and quota window, the ledger's totals
//! (the `allowed` rows of `usage_log`, of the quota's model when it is
//! scoped to one) beside the limit counters and the limits, flagging a key
//! over its limit on a quota charged at admission (`requests`,
//! `request_bytes`, the token kinds), which grants must never let happen,
//! and a quota settled after the fact (`response_bytes`, `units`) whose
//! counter and ledger disagree. Teams' quotas follow, each against the sum
//! of its keys' ledger rows.

use serde::Serialize;
use time::OffsetDateTime;
use tollgate_wire::{BudgetOwner, QuotaKind, Window};

use crate::domain::clock::{format_rfc3339, to_unix_ms};
use crate::store::quota_use::{instant, team_ledger_total};
use crate::store::{Store, StoreError};

/// One (key, quota) in the window containing the instant reconciled at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileRow {
    /// The key (0 on a team's row, as in the grant call).
    pub key_id: i64,
    /// The team, on a team's row: its counters, and the ledger's rows of
    /// the keys it holds now (a key that joined or left it mid-window
    /// counts wholly or not at all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<i64>,
    /// The quota's name, its counter's: the kind, and `@model` for a quota
    /// scoped to one model (`tokens@gpt-4o`).
    pub quota: String,
    pub kind: QuotaKind,
    /// The model the quota is scoped to; absent for an unscoped quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub window: Window,
    /// RFC 3339, UTC: the window's start (included) and end (excluded).
    pub window_start: String,
    pub window_end: String,
    pub limit: u64,
    /// What the limit counter has charged (granted net of returns, or settled).
    pub charged: i64,
    /// What the ledger holds for the window (`allowed` rows, only the
    /// quota's model when scoped): requests, request or response bytes,
    /// units, or tokens (`tokens` = input + output).
    pub ledger: u128,
    /// True for `requests`, `request_bytes` and the token kinds.
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

/// The windows `--window` takes, for its help and its error.
pub fn window_names() -> String {
    let names: Vec<&str> = Window::ALL.iter().map(|w| w.as_str()).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// The rows for every key with quotas (or only `key`), in the windows
/// containing `at` (only those of `window`, when given), then, without
/// `key`, every team's: a team's ledger is the sum over its current keys.
pub async fn reconcile(
    store: &Store,
    key: Option<i64>,
    window: Option<Window>,
    at: OffsetDateTime,
) -> Result<Vec<ReconcileRow>, StoreError> {
    let at_ms = i64::try_from(to_unix_ms(at)).unwrap_or(i64::MAX);
    let counters = store.counters_at(at_ms).await?;
    let mut owners = Vec::new();
    for api_key in store.list_keys().await? {
        if key.is_none_or(|id| id == api_key.id) {
            owners.push((
                BudgetOwner::Key(api_key.id),
                api_key.limits,
                vec![api_key.id],
            ));
        }
    }
    if key.is_none() {
        for team in store.list_teams().await? {
            owners.push((BudgetOwner::Team(team.id), team.limits, team.key_ids));
        }
    }
    let mut rows = Vec::new();
    for (owner, limits, key_ids) in owners {
        for quota in &limits.quotas {
            if window.is_some_and(|w| w != quota.window) {
                continue;
            }
            let span = quota.window.containing(at_ms);
            let name = quota.name();
            let charged = counters
                .iter()
                .find(|c| c.owner == owner && c.quota == name && c.span.start_ms == span.start_ms)
                .map_or(0, |c| c.charged);
            let (start, end) = (instant(span.start_ms), instant(span.end_ms));
            // A key's own rows, or those of a team's current keys.
            let ledger = team_ledger_total(store, &key_ids, quota, start, end).await?;
            let at_admission = quota.kind.charged_at_admission();
            let over = ledger > u128::from(quota.limit)
                || charged > i64::try_from(quota.limit).unwrap_or(i64::MAX);
            let differs = u128::try_from(charged).ok() != Some(ledger);
            let (key_id, team_id) = owner.ids();
            rows.push(ReconcileRow {
                key_id,
                team_id,
                quota: name,
                kind: quota.kind,
                model: quota.model.clone(),
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

/// The rows as a table for people, and a last line saying whether any key
/// is over its limit (and how many settled quotas differ from the ledger).
pub fn print_table(rows: &[ReconcileRow]) {
    if rows.is_empty() {
        println!("No key or team has a quota.");
        return;
    }
    println!(
        "{:>10}  {:<22}  {:<6}  {:<24}  {:>14}  {:>14}  {:>14}  STATE",
        "KEY", "QUOTA", "WINDOW", "WINDOW_START", "LIMIT", "CHARGED", "LEDGER"
    );
    for row in rows {
        println!(
            "{:>10}  {:<22}  {:<6}  {:<24}  {:>14}  {:>14}  {:>14}  {}",
            match row.team_id {
                Some(team) => format!("team {team}"),
                None => row.key_id.to_string(),
            },
            row.quota,
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
