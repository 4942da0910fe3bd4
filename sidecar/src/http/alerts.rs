//! Budget alerts over the admin API: `GET /v1/alerts` lists them (with
//! `?failed=true`, the events every attempt failed to deliver), `GET
//! /v1/alerts/events` the latest events whatever their state (the
//! console's history), `POST /v1/alerts` adds one, `DELETE /v1/alerts/{id}` removes one (`tollgate
//! alerts`). The rules are `domain::alert`; the checker and the sender,
//! which run beside the service, are `crate::alerts`.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;

use crate::alerts::unix_now_ms;
use crate::domain::alert::{owner_of, AlertRequest};
use crate::http::error::{ApiError, Undone};
use crate::http::extract::{AdminCaller, JsonBody};
use crate::http::AppState;
use crate::store::alerts::{
    add_alert, alert_list, failed_events, AddAlertError, CreatedAlert, EventList, EventView,
};

/// Body of `POST /v1/alerts`: exactly one of `key_id` and `team_id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertBody {
    /// An alert on a key's budget.
    #[serde(default)]
    pub key_id: Option<i64>,
    /// An alert on a team's budget.
    #[serde(default)]
    pub team_id: Option<i64>,
    /// Percents of each quota's limit, 1 to 100, each once.
    pub thresholds: Vec<i64>,
    pub url: String,
    /// The environment variable holding the signing secret; without it a
    /// secret is generated, answered once and stored sealed.
    #[serde(default)]
    pub secret_env: Option<String>,
}

/// Query of `GET /v1/alerts`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    pub failed: bool,
}

/// `GET /v1/alerts`: every alert, or (`?failed=true`) the failed events.
pub async fn list(
    _caller: AdminCaller,
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|_| ApiError::invalid_field("failed", "failed must be true or false"))?;
    let read = ApiError::reading(Undone::ReadAlerts);
    if query.failed {
        let events = failed_events(&state.store).await.map_err(read)?;
        return Ok(Json(events).into_response());
    }
    let alerts = alert_list(&state.store).await.map_err(read)?;
    Ok(Json(alerts).into_response())
}

/// How many events `GET /v1/alerts/events` answers at most.
pub const EVENT_HISTORY: usize = 200;

/// `GET /v1/alerts/events`: the latest [`EVENT_HISTORY`] events of every
/// alert, newest first, pending, delivered and failed alike.
pub async fn events(
    _caller: AdminCaller,
    State(state): State<AppState>,
) -> Result<Json<EventList>, ApiError> {
    let rows = state
        .store
        .alert_events(None)
        .await
        .map_err(ApiError::reading(Undone::ReadAlerts))?;
    Ok(Json(EventList {
        events: rows
            .iter()
            .rev()
            .take(EVENT_HISTORY)
            .map(EventView::of)
            .collect(),
    }))
}

/// `POST /v1/alerts`: adds an alert; 400 naming the field when it is
/// refused (thresholds, url, secret_env, key_id, team_id), storing nothing.
pub async fn add(
    _caller: AdminCaller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<AlertBody>,
) -> Result<(StatusCode, Json<CreatedAlert>), ApiError> {
    let owner = owner_of(body.key_id, body.team_id)
        .map_err(|e| ApiError::invalid_field(e.field, e.message))?;
    let request = AlertRequest {
        owner,
        thresholds: &body.thresholds,
        url: &body.url,
        secret_env: body.secret_env.as_deref(),
    };
    let created = add_alert(&state.store, &request, &state.keyring, unix_now_ms())
        .await
        .map_err(|e| match e {
            AddAlertError::Invalid(e) => ApiError::invalid_field(e.field, e.message),
            AddAlertError::MasterKeyMissing => ApiError::MasterKeyMissing,
            AddAlertError::Seal(e) => ApiError::SealFailed(e),
            AddAlertError::Store(e) => ApiError::storing(e),
        })?;
    tracing::info!(
        alert = created.alert.id,
        budget = %owner.describe(),
        "budget alert added"
    );
    Ok((StatusCode::CREATED, Json(created)))
}

/// `DELETE /v1/alerts/{id}`: removes an alert and its events; 204, or 404.
pub async fn remove(
    _caller: AdminCaller,
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::invalid_field("id", "the alert id must be an integer"))?;
    if state
        .store
        .delete_alert(id)
        .await
        .map_err(ApiError::storing)?
    {
        tracing::info!(alert = id, "budget alert removed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::AlertNotFound(id))
    }
}

/// Budget alerts (admin token).
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/v1/alerts", get(list).post(add))
        .route("/v1/alerts/events", get(events))
        .route("/v1/alerts/{id}", delete(remove))
}
