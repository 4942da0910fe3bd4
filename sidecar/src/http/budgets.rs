//! A key's budgets now, for the console's bars: `GET /v1/keys/{id}/budgets`,
//! per quota of the key, its current window with what the sidecar's
//! counter has charged (grants handed to Envoys and settlements, net of
//! returns: `limit_counters`), what the ledger says was used
//! (`store::quota_use`, the definition `usage reconcile` and the alerts
//! share), what is reserved (charged, not yet in the ledger: grants an
//! Envoy holds, responses in flight, usage batches not yet stored) and
//! what is left to grant.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tollgate_wire::{Limits, Quota, QuotaKind, Window};

use crate::domain::clock::{format_rfc3339, now_ms, to_unix_ms};
use crate::http::error::{ApiError, Undone};
use crate::http::extract::AdminCaller;
use crate::http::AppState;
use crate::store::quota_use::{instant, ledger_total};
use crate::store::{Store, StoreError};

/// One quota in the window containing the instant read at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// The quota's name, its counter's: the kind, and `@model` when scoped.
    pub quota: String,
    pub kind: QuotaKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub window: Window,
    /// RFC 3339, UTC: the window's start (included) and end (excluded).
    pub window_start: String,
    pub window_end: String,
    pub limit: u64,
    /// The counter's total: granted (net of returns) and settled.
    pub charged: u64,
    /// The ledger's use in the window (`allowed` rows the quota applies to).
    pub used: u128,
    /// Charged but not (yet) in the ledger: `max(charged - used, 0)`.
    pub reserved: u128,
    /// What can still be granted: `max(limit - charged, 0)`.
    pub left: u64,
}

impl Budget {
    /// The budget of `quota` from its counter's total and its ledger use.
    pub fn of(quota: &Quota, start_ms: i64, end_ms: i64, charged: u64, used: u128) -> Budget {
        Budget {
            quota: quota.name(),
            kind: quota.kind,
            model: quota.model.clone(),
            window: quota.window,
            window_start: format_rfc3339(instant(start_ms)),
            window_end: format_rfc3339(instant(end_ms)),
            limit: quota.limit,
            charged,
            used,
            reserved: u128::from(charged).saturating_sub(used),
            left: quota.limit.saturating_sub(charged),
        }
    }
}

/// Reply of `GET /v1/keys/{id}/budgets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetsReply {
    pub key_id: i64,
    /// RFC 3339: the instant whose windows these are.
    pub at: String,
    /// One per quota, in the order of the key's limits; empty without quotas.
    pub budgets: Vec<Budget>,
}

/// The budgets of key `key_id`, whose limits are `limits`, at `at_ms`.
pub async fn budgets_at(
    store: &Store,
    key_id: i64,
    limits: &Limits,
    at_ms: i64,
) -> Result<Vec<Budget>, StoreError> {
    let mut budgets = Vec::with_capacity(limits.quotas.len());
    for quota in &limits.quotas {
        let span = quota.window.containing(at_ms);
        let charged = store
            .charged_in(key_id, &quota.name(), span.start_ms)
            .await?;
        let (start, end) = (instant(span.start_ms), instant(span.end_ms));
        let used = ledger_total(store, key_id, quota, start, end).await?;
        budgets.push(Budget::of(quota, span.start_ms, span.end_ms, charged, used));
    }
    Ok(budgets)
}

/// `GET /v1/keys/{id}/budgets`: each quota of the key in its current window.
pub async fn key_budgets(
    _caller: AdminCaller,
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<BudgetsReply>, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::invalid_field("id", "the key id must be an integer"))?;
    let read = || ApiError::reading(Undone::ReadBudgets);
    let key = state
        .store
        .key_by_id(id)
        .await
        .map_err(read())?
        .ok_or(ApiError::KeyNotFound(id))?;
    let now = now_ms();
    let at_ms = i64::try_from(to_unix_ms(now)).unwrap_or(i64::MAX);
    let budgets = budgets_at(&state.store, id, &key.limits, at_ms)
        .await
        .map_err(read())?;
    Ok(Json(BudgetsReply {
        key_id: id,
        at: format_rfc3339(now),
        budgets,
    }))
}

/// A key's budgets (admin token).
pub fn admin_router() -> Router<AppState> {
    Router::new().route("/v1/keys/{id}/budgets", get(key_budgets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_left_never_go_below_zero() {
        let quota = Quota::parse("tokens=100/day@m").unwrap();
        let b = Budget::of(&quota, 0, 86_400_000, 70, 40);
        assert_eq!((b.reserved, b.left), (30, 30));
        assert_eq!(b.quota, "tokens@m");
        assert_eq!(b.window_start, "1970-01-01T00:00:00.000Z");
        // The ledger ahead of the counter (a settled quota's batch stored
        // before its settlement): nothing reserved.
        let b = Budget::of(&quota, 0, 86_400_000, 10, 25);
        assert_eq!((b.reserved, b.left), (0, 90));
        // Settled past the limit: nothing left.
        let b = Budget::of(&quota, 0, 86_400_000, 130, 130);
        assert_eq!((b.reserved, b.left), (0, 0));
    }
}
