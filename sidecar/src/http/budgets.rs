//! A key's or a team's budgets now, for the console's bars: `GET
//! /v1/keys/{id}/budgets` and `GET /v1/teams/{id}/budgets`, per quota of
//! the holder, its current window with what the sidecar's counter has
//! charged (grants handed to Envoys and settlements, net of returns:
//! `limit_counters`, where a team's counters are its own, apart from its
//! keys'), what the ledger says was used (`store::quota_use`, the
//! definition `usage reconcile` and the alerts share; a team's is the sum
//! of its current keys' rows), what is reserved (charged, not yet in the
//! ledger: grants an Envoy holds, responses in flight, usage batches not
//! yet stored) and what is left to grant.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use time::OffsetDateTime;
use tollgate_wire::{BudgetOwner, Limits, Quota, QuotaKind, Window};

use crate::domain::clock::{format_rfc3339, now_ms, to_unix_ms};
use crate::http::error::{ApiError, Undone};
use crate::http::extract::AdminCaller;
use crate::http::AppState;
use crate::store::quota_use::{instant, ledger_total, team_ledger_total};
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

/// Reply of `GET /v1/teams/{id}/budgets`: as a key's, with the keys whose
/// ledger rows the team's use sums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TeamBudgetsReply {
    pub team_id: i64,
    /// The team's keys now, ascending.
    pub key_ids: Vec<i64>,
    /// RFC 3339: the instant whose windows these are.
    pub at: String,
    /// One per quota, in the order of the team's limits; empty without quotas.
    pub budgets: Vec<Budget>,
}

/// Whose budgets are read: the owner of the counters, and the keys whose
/// ledger rows are its use.
#[derive(Debug, Clone, Copy)]
pub enum Holder<'a> {
    Key(i64),
    /// A team, and the keys it holds now.
    Team {
        id: i64,
        key_ids: &'a [i64],
    },
}

impl Holder<'_> {
    fn owner(self) -> BudgetOwner {
        match self {
            Holder::Key(id) => BudgetOwner::Key(id),
            Holder::Team { id, .. } => BudgetOwner::Team(id),
        }
    }

    /// The ledger's use of `quota` in `[start, end)`.
    async fn used(
        self,
        store: &Store,
        quota: &Quota,
        start: OffsetDateTime,
        end: OffsetDateTime,
    ) -> Result<u128, StoreError> {
        match self {
            Holder::Key(id) => ledger_total(store, id, quota, start, end).await,
            Holder::Team { key_ids, .. } => {
                team_ledger_total(store, key_ids, quota, start, end).await
            }
        }
    }
}

/// The budgets of `holder`, whose limits are `limits`, at `at_ms`.
pub async fn budgets_at(
    store: &Store,
    holder: Holder<'_>,
    limits: &Limits,
    at_ms: i64,
) -> Result<Vec<Budget>, StoreError> {
    let mut budgets = Vec::with_capacity(limits.quotas.len());
    for quota in &limits.quotas {
        let span = quota.window.containing(at_ms);
        let charged = store
            .owner_charged_in(holder.owner(), &quota.name(), span.start_ms)
            .await?;
        let (start, end) = (instant(span.start_ms), instant(span.end_ms));
        let used = holder.used(store, quota, start, end).await?;
        budgets.push(Budget::of(quota, span.start_ms, span.end_ms, charged, used));
    }
    Ok(budgets)
}

/// The instant budgets are read at: now, and its Unix ms.
fn read_at() -> (OffsetDateTime, i64) {
    let now = now_ms();
    (now, i64::try_from(to_unix_ms(now)).unwrap_or(i64::MAX))
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
    let (now, at_ms) = read_at();
    let budgets = budgets_at(&state.store, Holder::Key(id), &key.limits, at_ms)
        .await
        .map_err(read())?;
    Ok(Json(BudgetsReply {
        key_id: id,
        at: format_rfc3339(now),
        budgets,
    }))
}

/// `GET /v1/teams/{id}/budgets`: each quota of the team in its current
/// window, its use the sum of its current keys'.
pub async fn team_budgets(
    _caller: AdminCaller,
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<TeamBudgetsReply>, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::invalid_field("id", "the team id must be an integer"))?;
    let read = || ApiError::reading(Undone::ReadBudgets);
    let team = state
        .store
        .team_by_id(id)
        .await
        .map_err(read())?
        .ok_or(ApiError::TeamNotFound(id))?;
    let (now, at_ms) = read_at();
    let holder = Holder::Team {
        id,
        key_ids: &team.key_ids,
    };
    let budgets = budgets_at(&state.store, holder, &team.limits, at_ms)
        .await
        .map_err(read())?;
    Ok(Json(TeamBudgetsReply {
        team_id: id,
        key_ids: team.key_ids.clone(),
        at: format_rfc3339(now),
        budgets,
    }))
}

/// A key's and a team's budgets (admin token).
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/v1/keys/{id}/budgets", get(key_budgets))
        .route("/v1/teams/{id}/budgets", get(team_budgets))
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
