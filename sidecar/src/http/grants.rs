//! `POST /v1/internal/grants`: quota grants, their returns and settlements
//! for the filter (internal token), on the counters of `store::limits`.
//!
//! Each ask is sized by `tollgate_wire::grant_size` from the Envoy's
//! recent use and what is left in the window (read just before; the size
//! is a heuristic, the conditional update is the guarantee), and taken in
//! the window of the sidecar's clock that contains now. An item names its
//! quota by kind and scope (`model`, for a quota of one model); the
//! counter it charges is the quota's name (`tokens@gpt-4o`). An item with
//! a `team_id` is for the team's quota (`BudgetOwner::Team`), found in the
//! team's limits and charged in the team's counter, exactly as a key's.

use axum::routing::post;
use axum::Router;
use std::collections::HashMap;
use tollgate_wire::GRANTS_PATH;

use axum::extract::State;
use axum::Json;
use tollgate_wire::{
    grant_size, is_charge_id, BudgetOwner, GrantGiven, GrantReply, GrantRequest, GrantStatus,
    KeyLimits, Limits, Quota, QuotaKind, ReturnDone, SettlementDone, Window, WindowSpan,
    CHARGE_ID_HEX_LEN, MAX_GRANT_ITEMS,
};

use crate::http::error::{ApiError, Undone};
use crate::http::extract::{InternalCaller, JsonBody};
use crate::http::AppState;
use crate::store::limits::{Charged, GrantAsk};
use crate::store::{ApiKey, Store, StoreError};

/// The keys and teams a call names, each read once.
struct Owners<'a> {
    store: &'a Store,
    keys: HashMap<i64, Option<ApiKey>>,
    /// Each team's limits, `None` when no team has the id.
    teams: HashMap<i64, Option<Limits>>,
}

impl Owners<'_> {
    /// Key `key_id`, read at most once a call.
    async fn key(&mut self, key_id: i64) -> Result<Option<&ApiKey>, StoreError> {
        if !self.keys.contains_key(&key_id) {
            let key = self.store.key_by_id(key_id).await?;
            self.keys.insert(key_id, key);
        }
        Ok(self.keys[&key_id].as_ref())
    }

    /// The limits of `owner` (a key's own, or a team's), read at most once
    /// a call; `None` when no key or team has the id.
    async fn limits(&mut self, owner: BudgetOwner) -> Result<Option<&Limits>, StoreError> {
        match owner {
            BudgetOwner::Key(id) => Ok(self.key(id).await?.map(|k| &k.limits)),
            BudgetOwner::Team(id) => {
                if !self.teams.contains_key(&id) {
                    let team = self.store.team_by_id(id).await?;
                    self.teams.insert(id, team.map(|t| t.limits));
                }
                Ok(self.teams[&id].as_ref())
            }
        }
    }

    /// The quota of `kind` scoped to `model` (`None`: the unscoped one)
    /// `owner` has, found in its limits as a key's is in the key's, or the
    /// status that answers the item when it has none.
    async fn quota(
        &mut self,
        owner: BudgetOwner,
        kind: QuotaKind,
        model: Option<&str>,
    ) -> Result<Result<Quota, GrantStatus>, StoreError> {
        Ok(match self.limits(owner).await? {
            None => Err(GrantStatus::UnknownKey),
            Some(limits) => limits
                .quota(kind, model)
                .cloned()
                .ok_or(GrantStatus::NoQuota),
        })
    }
}

/// Why `model` cannot be the scope of a quota of `kind`, if it cannot:
/// the rule of `tollgate_wire::limits` (1 to `MAX_SCOPE_MODEL_LEN`
/// visible ASCII bytes), applied to the quota the item names.
fn scope_fault(kind: QuotaKind, model: &str) -> Option<String> {
    let quota = Quota {
        kind,
        limit: 1,
        window: Window::Day,
        model: Some(model.to_owned()),
        currency: kind
            .counts_money()
            .then_some(tollgate_wire::price::Currency::Usd),
    };
    let limits = Limits {
        rate: None,
        quotas: vec![quota],
    };
    limits.checked().err().map(|e| e.reason)
}

/// Refuses a call the filter could not have meant: too many items, a bad
/// id, a quota of the wrong kind for the item, a model no quota can be
/// scoped to, a count out of range.
fn validate(request: &GrantRequest) -> Result<(), ApiError> {
    if request.len() > MAX_GRANT_ITEMS {
        return Err(ApiError::invalid_field(
            "asks",
            format!("a grant call carries at most {MAX_GRANT_ITEMS} items"),
        ));
    }
    let id = |field: String, id: &str| {
        if is_charge_id(id) {
            Ok(())
        } else {
            Err(ApiError::invalid_field(
                field,
                format!("an id is {CHARGE_ID_HEX_LEN} lowercase hex digits"),
            ))
        }
    };
    let scope = |field: String, kind: QuotaKind, model: Option<&str>| match model
        .and_then(|m| scope_fault(kind, m))
    {
        Some(why) => Err(ApiError::invalid_field(field, why)),
        None => Ok(()),
    };
    let count = |field: String, n: u64| {
        if n <= tollgate_wire::limits::MAX_LIMIT {
            Ok(())
        } else {
            Err(ApiError::invalid_field(field, "the count is out of range"))
        }
    };
    for (i, ask) in request.asks.iter().enumerate() {
        id(format!("asks[{i}].grant_id"), &ask.grant_id)?;
        if !ask.quota.charged_at_admission() {
            return Err(ApiError::invalid_field(
                format!("asks[{i}].quota"),
                format!("{} is settled after the fact, not granted", ask.quota),
            ));
        }
        scope(format!("asks[{i}].model"), ask.quota, ask.model.as_deref())?;
        count(format!("asks[{i}].need"), ask.need)?;
        count(format!("asks[{i}].recent_use"), ask.recent_use)?;
    }
    for (i, back) in request.returns.iter().enumerate() {
        id(format!("returns[{i}].grant_id"), &back.grant_id)?;
        count(format!("returns[{i}].unused"), back.unused)?;
    }
    for (i, settlement) in request.settlements.iter().enumerate() {
        id(
            format!("settlements[{i}].settlement_id"),
            &settlement.settlement_id,
        )?;
        if settlement.quota.charged_at_admission() {
            return Err(ApiError::invalid_field(
                format!("settlements[{i}].quota"),
                format!("{} is granted at admission, not settled", settlement.quota),
            ));
        }
        scope(
            format!("settlements[{i}].model"),
            settlement.quota,
            settlement.model.as_deref(),
        )?;
        count(format!("settlements[{i}].amount"), settlement.amount)?;
    }
    Ok(())
}

/// `POST /v1/internal/grants`.
pub async fn grants(
    _caller: InternalCaller,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<GrantRequest>,
) -> Result<Json<GrantReply>, ApiError> {
    validate(&request)?;
    let now_ms = crate::store::feed::unix_ms(crate::domain::clock::now_ms());
    answer(&state.store, &request, now_ms)
        .await
        .map(Json)
        .map_err(ApiError::reading(Undone::Grants))
}

/// Applies every item of a validated call at the instant `now_ms`.
pub async fn answer(
    store: &Store,
    request: &GrantRequest,
    now_ms: i64,
) -> Result<GrantReply, StoreError> {
    let mut owners = Owners {
        store,
        keys: HashMap::new(),
        teams: HashMap::new(),
    };
    let mut reply = GrantReply::default();
    for &key_id in &request.limits_of {
        let key = owners.key(key_id).await?;
        reply.limits.push(KeyLimits {
            key_id,
            found: key.is_some(),
            limits: key.map(|k| k.limits.clone()).unwrap_or_default(),
        });
    }
    for back in &request.returns {
        let done = store.give_back(&back.grant_id, back.unused, now_ms).await?;
        reply.returns.push(ReturnDone {
            grant_id: back.grant_id.clone(),
            found: done.is_some(),
            returned: done.map_or(0, |d| d.amount),
        });
    }
    for ask in &request.asks {
        let given = match owners
            .quota(ask.owner(), ask.quota, ask.model.as_deref())
            .await?
        {
            Err(status) => GrantGiven {
                grant_id: ask.grant_id.clone(),
                status,
                amount: 0,
                limit: 0,
                charged: 0,
                window_start_ms: 0,
                window_end_ms: 0,
            },
            Ok(quota) => {
                let span = quota.window.containing(now_ms);
                let name = quota.name();
                let charged = store
                    .owner_charged_in(ask.owner(), &name, span.start_ms)
                    .await?;
                let (want, min) = grant_size(quota.limit, charged, ask.need, ask.recent_use);
                let done = store
                    .grant(&GrantAsk {
                        charge_id: &ask.grant_id,
                        owner: ask.owner(),
                        quota: &name,
                        span,
                        limit: quota.limit,
                        want,
                        min,
                        now_ms,
                    })
                    .await?;
                given(&ask.grant_id, &quota, span, done)
            }
        };
        reply.grants.push(given);
    }
    for settlement in &request.settlements {
        let done = match owners
            .quota(
                settlement.owner(),
                settlement.quota,
                settlement.model.as_deref(),
            )
            .await?
        {
            Err(status) => SettlementDone {
                settlement_id: settlement.settlement_id.clone(),
                status,
                limit: 0,
                charged: 0,
                open: true,
                window_start_ms: 0,
                window_end_ms: 0,
            },
            Ok(quota) => {
                let span = quota.window.containing(now_ms);
                let done = store
                    .settle(
                        &settlement.settlement_id,
                        settlement.owner(),
                        &quota.name(),
                        span,
                        quota.limit,
                        settlement.amount,
                        now_ms,
                    )
                    .await?;
                SettlementDone {
                    settlement_id: settlement.settlement_id.clone(),
                    status: GrantStatus::Granted,
                    limit: quota.limit,
                    charged: done.charged,
                    open: done.charged < quota.limit,
                    window_start_ms: span.start_ms,
                    window_end_ms: span.end_ms,
                }
            }
        };
        reply.settlements.push(done);
    }
    Ok(reply)
}

/// The answer to an ask that reached its counter.
fn given(grant_id: &str, quota: &Quota, span: WindowSpan, done: Charged) -> GrantGiven {
    GrantGiven {
        grant_id: grant_id.to_owned(),
        status: if done.amount > 0 {
            GrantStatus::Granted
        } else {
            GrantStatus::Exhausted
        },
        amount: done.amount,
        limit: quota.limit,
        charged: done.charged,
        window_start_ms: span.start_ms,
        window_end_ms: span.end_ms,
    }
}

/// Grants, returns and settlements (internal token).
pub fn router() -> Router<AppState> {
    Router::new().route(GRANTS_PATH, post(grants))
}
