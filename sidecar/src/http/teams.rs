//! Teams over the admin API: `POST`/`GET /v1/teams`, `GET`/`DELETE
//! /v1/teams/{id}`, `PUT /v1/teams/{id}/limits` (the body of a key's
//! limits), and a key's team, `PUT /v1/keys/{id}/team`. What a team is:
//! [`crate::domain::teams`]; storing it: [`crate::store::teams`].

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::domain::clock::now_ms;
use crate::domain::keys::KeyView;
use crate::domain::teams::TeamView;
use crate::http::error::{ApiError, Undone};
use crate::http::extract::{AdminCaller, JsonBody};
use crate::http::limits::{parse, LimitsRequest};
use crate::http::AppState;
use crate::store::teams::{new_team, KeyMove, NewTeamError, TeamDeletion};

/// Body of `POST /v1/teams`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTeamRequest {
    pub name: String,
    /// The team's rate, burst and quotas, spelled as a key's.
    #[serde(default)]
    pub rate: Option<String>,
    #[serde(default)]
    pub burst: Option<u64>,
    #[serde(default)]
    pub quotas: Vec<String>,
}

/// `POST /v1/teams`: creates a team; 201 with the team.
pub async fn create(
    _caller: AdminCaller,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<CreateTeamRequest>,
) -> Result<(StatusCode, Json<TeamView>), ApiError> {
    let limits = parse(request.rate.as_deref(), request.burst, &request.quotas)?;
    let team = new_team(&state.store, &request.name, &limits)
        .await
        .map_err(|e| match e {
            NewTeamError::Invalid { field, message } => ApiError::invalid_field(field, message),
            NewTeamError::DuplicateName(name) => ApiError::DuplicateTeamName(name),
            NewTeamError::Store(e) => ApiError::storing(e),
        })?;
    tracing::info!(team_id = team.id, limits = %team.limits.to_spec(), "team created");
    Ok((StatusCode::CREATED, Json(TeamView::of(&team))))
}

/// Reply of `GET /v1/teams`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeamList {
    pub teams: Vec<TeamView>,
}

/// `GET /v1/teams`: every team, by id.
pub async fn list(
    _caller: AdminCaller,
    State(state): State<AppState>,
) -> Result<Json<TeamList>, ApiError> {
    let teams = state
        .store
        .list_teams()
        .await
        .map_err(ApiError::reading(Undone::ReadTeams))?;
    Ok(Json(TeamList {
        teams: teams.iter().map(TeamView::of).collect(),
    }))
}

/// A team id from the path.
fn team_id(id: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    id.map(|Path(id)| id)
        .map_err(|_| ApiError::invalid_field("id", "the team id must be an integer"))
}

/// `GET /v1/teams/{id}`.
pub async fn get_one(
    _caller: AdminCaller,
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<TeamView>, ApiError> {
    let id = team_id(id)?;
    let team = state
        .store
        .team_by_id(id)
        .await
        .map_err(ApiError::reading(Undone::ReadTeams))?
        .ok_or(ApiError::TeamNotFound(id))?;
    Ok(Json(TeamView::of(&team)))
}

/// `PUT /v1/teams/{id}/limits`: replaces the team's limits (`{}` clears
/// them); every Envoy re-verifies the team's keys through the key change
/// feed. Answers the team.
pub async fn put_limits(
    _caller: AdminCaller,
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    JsonBody(request): JsonBody<LimitsRequest>,
) -> Result<Json<TeamView>, ApiError> {
    let id = team_id(id)?;
    let limits = parse(request.rate.as_deref(), request.burst, &request.quotas)?;
    crate::http::limits::money_in_the_prices_currency(&state, &limits).await?;
    let team = state
        .store
        .set_team_limits(id, &limits, now_ms())
        .await
        .map_err(ApiError::storing)?
        .ok_or(ApiError::TeamNotFound(id))?;
    tracing::info!(team_id = id, limits = %limits.to_spec(), "team limits set");
    Ok(Json(TeamView::of(&team)))
}

/// `DELETE /v1/teams/{id}`: deletes a team with no key and no budget
/// alert; 409 `team_has_keys` while it has a key, `team_has_alerts` while
/// an alert watches its budget (naming them).
pub async fn delete(
    _caller: AdminCaller,
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<TeamView>, ApiError> {
    let id = team_id(id)?;
    match state
        .store
        .delete_team(id)
        .await
        .map_err(ApiError::storing)?
    {
        TeamDeletion::Deleted(team) => {
            tracing::info!(team_id = id, "team deleted");
            Ok(Json(TeamView::of(&team)))
        }
        TeamDeletion::HasKeys(keys) => Err(ApiError::TeamHasKeys { id, keys }),
        TeamDeletion::HasAlerts(alerts) => Err(ApiError::TeamHasAlerts { id, alerts }),
        TeamDeletion::NotFound => Err(ApiError::TeamNotFound(id)),
    }
}

/// Body of `PUT /v1/keys/{id}/team`: the team the key belongs to from now
/// on, `null` for none. The field is required, so a body that forgets it
/// never takes a key out of its team.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveKeyRequest {
    #[serde(deserialize_with = "required_nullable")]
    pub team_id: Option<i64>,
}

/// A field that must be present and may be `null`.
fn required_nullable<'de, D>(deserializer: D) -> Result<Option<i64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<i64>::deserialize(deserializer)
}

/// `PUT /v1/keys/{id}/team`: moves a key into a team or out of its team;
/// every Envoy re-verifies it. Answers the key.
pub async fn move_key(
    _caller: AdminCaller,
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    JsonBody(request): JsonBody<MoveKeyRequest>,
) -> Result<Json<KeyView>, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::invalid_field("id", "the key id must be an integer"))?;
    let now = now_ms();
    let moved = state
        .store
        .move_key(id, request.team_id, now)
        .await
        .map_err(ApiError::storing)?;
    match moved {
        KeyMove::Moved(key) => {
            tracing::info!(key_id = id, team_id = ?key.team_id, "key moved");
            Ok(Json(KeyView::at(&key, now)))
        }
        KeyMove::KeyNotFound => Err(ApiError::KeyNotFound(id)),
        KeyMove::TeamNotFound => Err(ApiError::invalid_field(
            "team_id",
            format!("no team has id {}", request.team_id.unwrap_or_default()),
        )),
    }
}

/// Teams and a key's team (admin token).
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/v1/teams", post(create).get(list))
        .route("/v1/teams/{id}", get(get_one).delete(delete))
        .route("/v1/teams/{id}/limits", put(put_limits))
        .route("/v1/keys/{id}/team", put(move_key))
}
