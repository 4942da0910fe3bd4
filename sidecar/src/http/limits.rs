//! A key's limits over the admin API: `PUT /v1/keys/{id}/limits`. The
//! spelling and its rules are `tollgate_wire::limits`; this module turns
//! them into stored limits and answers (the CLI's flags: `cli/limits.rs`).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use axum::Router;
use serde::Deserialize;
use tollgate_wire::{LimitError, Limits};

use crate::domain::clock::now_ms;
use crate::domain::keys::KeyView;
use crate::http::error::ApiError;
use crate::http::extract::{AdminCaller, JsonBody};
use crate::http::AppState;

/// A limit error as the admin API answers it: 400 naming the field.
fn invalid(error: LimitError) -> ApiError {
    ApiError::invalid_field(error.field, error.to_string())
}

/// Limits from the admin API's fields (`rate`, `burst`, `quotas`).
pub fn parse(
    rate: Option<&str>,
    burst: Option<u64>,
    quotas: &[String],
) -> Result<Limits, ApiError> {
    Limits::from_parts(rate, burst, quotas).map_err(invalid)
}

/// Refuses (400 naming `quota`) a money quota in another currency than
/// the prices' (keys' and teams' limits alike).
pub async fn money_in_the_prices_currency(
    state: &AppState,
    limits: &Limits,
) -> Result<(), ApiError> {
    let fault = crate::store::prices::money_quota_fault(&state.store, limits).await;
    match fault.map_err(ApiError::storing)? {
        Some(message) => Err(ApiError::invalid_field("quota", message)),
        None => Ok(()),
    }
}

/// Body of `PUT /v1/keys/{id}/limits`: the key's limits, all of them
/// (`{}` clears them).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    #[serde(default)]
    pub rate: Option<String>,
    #[serde(default)]
    pub burst: Option<u64>,
    #[serde(default)]
    pub quotas: Vec<String>,
}

/// `PUT /v1/keys/{id}/limits`: replaces the key's limits; every Envoy
/// learns of it through the key change feed. Answers the key.
pub async fn put(
    _caller: AdminCaller,
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    JsonBody(request): JsonBody<LimitsRequest>,
) -> Result<Json<KeyView>, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::invalid_field("id", "the key id must be an integer"))?;
    let limits = parse(request.rate.as_deref(), request.burst, &request.quotas)?;
    money_in_the_prices_currency(&state, &limits).await?;
    let now = now_ms();
    let key = state
        .store
        .set_limits(id, &limits, now)
        .await
        .map_err(ApiError::storing)?
        .ok_or(ApiError::KeyNotFound(id))?;
    tracing::info!(key_id = id, limits = %limits.to_spec(), "key limits set");
    Ok(Json(KeyView::at(&key, now)))
}

/// Setting a key's limits (admin token).
pub fn admin_router() -> Router<AppState> {
    Router::new().route("/v1/keys/{id}/limits", axum::routing::put(put))
}
