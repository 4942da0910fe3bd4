//! The operator's web console, served by the sidecar under `/console`
//! behind the admin token: a key list (create with limits and a team,
//! revoke, change limits), a page per key (its budgets' bars, its team,
//! usage and spend plots), the teams (their keys, limits and budgets' bars),
//! the budget alerts and their history, and the gateway's last hour.
//!
//! A person logs in with the admin token and gets a short-lived session
//! ([`session`]); failed logins slow the client down ([`throttle`]). Every
//! page and data call needs the session, every action also its CSRF token
//! ([`guard`]), and every request must name one of the console's own
//! origins in `Host` ([`origin`]). The data calls on keys, teams and usage
//! are the admin API's own routes ([`forward`]); the console adds only what the API does
//! not have: each key's last use, the live figures ([`gateway`]) and their
//! last hour ([`history`]). The
//! browser assets are embedded in the binary ([`assets`]).

pub mod assets;
pub mod forward;
pub mod gateway;
pub mod guard;
pub mod history;
pub mod origin;
pub mod pages;
pub mod session;
pub mod throttle;

use std::time::Instant;

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post, put};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};

use crate::domain::clock::format_rfc3339;
use crate::http::error::{ApiError, Undone};
use crate::http::extract::secrets_match;
use crate::http::metrics::ConsoleLogin;
use crate::http::AppState;
use gateway::EnvoyAdmin;
use guard::{check_same_origin, ConsoleAction, ConsoleSession};
use origin::ConsoleOrigins;
use pages::Page;
use session::{cleared_cookie, session_cookie, OpenRefused, Sessions};
use throttle::{Attempt, LoginThrottle, Peer};

/// What the console keeps between requests.
#[derive(Debug, Default)]
pub struct Console {
    pub sessions: Sessions,
    /// Failed logins per client.
    pub throttle: LoginThrottle,
    /// Where the console may be reached (`Host`, and an action's `Origin`).
    pub origins: ConsoleOrigins,
    /// Where Envoy's admin interface is, for the live figures; `None`: the
    /// sidecar's own figures only.
    pub envoy_admin: Option<EnvoyAdmin>,
    /// The live figures' last hour, sampled beside the service.
    pub history: history::GatewayHistory,
}

/// The console's routes, each behind the `Host` check of `state`'s origins.
/// `admin_api` answers the data calls it passes on (with the admin token):
/// only the routes listed here reach it.
pub fn router(state: AppState, admin_api: Router) -> Router<AppState> {
    let read_api = admin_api.clone();
    let read = move |_session: ConsoleSession, State(state): State<AppState>, request: Request| {
        let api = read_api.clone();
        async move { forward::to_admin_api(&state, api, request).await }
    };
    let act = move |_action: ConsoleAction, State(state): State<AppState>, request: Request| {
        let api = admin_api.clone();
        async move { forward::to_admin_api(&state, api, request).await }
    };
    Router::new()
        .route("/console", get(keys_page))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/keys/{id}", get(key_page))
        .route("/console/gateway", get(gateway_page))
        .route("/console/teams", get(teams_page))
        .route("/console/alerts", get(alerts_page))
        .route("/console/assets/{name}", get(assets::asset))
        .route("/console/api/gateway", get(gateway::figures))
        .route("/console/api/gateway/history", get(history::history))
        .route("/console/api/last-use", get(last_use))
        .route("/console/api/keys", get(read.clone()).post(act.clone()))
        .route("/console/api/keys/{id}/revoke", post(act.clone()))
        .route("/console/api/keys/{id}/limits", put(act.clone()))
        .route("/console/api/keys/{id}/team", put(act.clone()))
        .route("/console/api/keys/{id}/budgets", get(read.clone()))
        .route("/console/api/teams", get(read.clone()).post(act.clone()))
        .route("/console/api/teams/{id}", delete(act.clone()))
        .route("/console/api/teams/{id}/limits", put(act))
        .route("/console/api/teams/{id}/budgets", get(read.clone()))
        .route("/console/api/keys/{id}/usage/series", get(read.clone()))
        .route("/console/api/usage/summary", get(read.clone()))
        .route("/console/api/alerts", get(read.clone()))
        .route("/console/api/alerts/events", get(read))
        .layer(axum::middleware::from_fn_with_state(
            state,
            origin::require_allowed_host,
        ))
        .layer(axum::middleware::map_response(with_security_headers))
}

async fn with_security_headers(mut response: Response) -> Response {
    response.headers_mut().extend(assets::security_headers());
    response
}

/// A page for a live session; without one, the way to the login page.
fn page(session: Result<ConsoleSession, ApiError>, page: Page) -> Response {
    match session {
        Ok(session) => Html(pages::render(page, &session.session.csrf_token)).into_response(),
        Err(ApiError::AdminApiDisabled) => console_off(),
        Err(_) => Redirect::to("/console/login").into_response(),
    }
}

/// What every console URL answers while the admin API is off.
fn console_off() -> Response {
    let message = "The console is off: start the sidecar with TOLLGATE_ADMIN_TOKEN \
                   (or --admin-token) to turn the admin API and the console on.";
    (
        StatusCode::UNAUTHORIZED,
        Html(pages::login(Some(message), false)),
    )
        .into_response()
}

/// `GET /console`: the key list.
async fn keys_page(session: Result<ConsoleSession, ApiError>) -> Response {
    page(session, Page::Keys)
}

/// `GET /console/keys/{id}`: one key's plots.
async fn key_page(
    session: Result<ConsoleSession, ApiError>,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
) -> Response {
    match id {
        Ok(Path(id)) => page(session, Page::Key(id)),
        Err(_) if session.is_err() => page(session, Page::Keys),
        Err(_) => ApiError::invalid_field("id", "the key id must be an integer").into_response(),
    }
}

/// `GET /console/gateway`: the live figures.
async fn gateway_page(session: Result<ConsoleSession, ApiError>) -> Response {
    page(session, Page::Gateway)
}

/// `GET /console/teams`: the teams, their keys and budgets.
async fn teams_page(session: Result<ConsoleSession, ApiError>) -> Response {
    page(session, Page::Teams)
}

/// `GET /console/alerts`: the budget alerts and their events.
async fn alerts_page(session: Result<ConsoleSession, ApiError>) -> Response {
    page(session, Page::Alerts)
}

/// `GET /console/login`.
async fn login_page(
    State(state): State<AppState>,
    session: Result<ConsoleSession, ApiError>,
) -> Response {
    if state.auth.admin_token.is_none() {
        return console_off();
    }
    match session {
        Ok(_) => Redirect::to("/console").into_response(),
        Err(_) => Html(pages::login(None, true)).into_response(),
    }
}

/// The login form.
#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// `POST /console/login`: the admin token for a session cookie, unless
/// the client must wait ([`throttle`]) or every session is in use.
async fn login(
    State(state): State<AppState>,
    Peer(client): Peer,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Some(expected) = state.auth.admin_token.as_deref() else {
        return console_off();
    };
    if let Err(refused) = check_same_origin(&headers, &state.console.origins) {
        return login_refused(&refused);
    }
    let presented = form.map(|Form(f)| f.token).unwrap_or_default();
    let now = Instant::now();
    let attempt = state.console.throttle.attempt(client, now, || {
        secrets_match(presented.trim().as_bytes(), expected.as_bytes())
    });
    let outcome = match attempt {
        Attempt::Passed => state.console.sessions.open(now),
        Attempt::Failed => {
            tracing::warn!(%client, "console login refused: not the admin token");
            state.metrics.record_console_login(ConsoleLogin::WrongToken);
            let message = "That is not the admin token.";
            return (
                StatusCode::UNAUTHORIZED,
                Html(pages::login(Some(message), true)),
            )
                .into_response();
        }
        Attempt::Throttled { retry_after } => {
            tracing::warn!(%client, ?retry_after, "console login refused unchecked: too many failures");
            state.metrics.record_console_login(ConsoleLogin::Throttled);
            return login_refused(&ApiError::LoginThrottled { retry_after });
        }
    };
    match outcome {
        Ok((id, _)) => {
            tracing::info!("console login");
            state.metrics.record_console_login(ConsoleLogin::Succeeded);
            (
                [(header::SET_COOKIE, session_cookie(&id))],
                Redirect::to("/console"),
            )
                .into_response()
        }
        Err(OpenRefused::Full { retry_after }) => {
            tracing::warn!("console login refused: every session is in use");
            state
                .metrics
                .record_console_login(ConsoleLogin::SessionsFull);
            login_refused(&ApiError::SessionsFull {
                retry_after,
                sessions: session::MAX_SESSIONS,
                idle_evictable: session::IDLE_EVICTABLE,
            })
        }
        Err(OpenRefused::Random(e)) => {
            tracing::error!(error = %e, "cannot open a console session");
            let message = "A session could not be opened (the system random source failed).";
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Html(pages::login(Some(message), true)),
            )
                .into_response()
        }
    }
}

/// The login page again, saying why the login was refused, with the
/// error's status (and `Retry-After` when it has one): the login is a
/// browser's form post, so its answer is a page, not the JSON error.
fn login_refused(refused: &ApiError) -> Response {
    let message = refused.to_string();
    let mut response = (refused.status(), Html(pages::login(Some(&message), true))).into_response();
    if let Some(secs) = refused.retry_after_secs() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, secs.into());
    }
    response
}

/// `POST /console/logout`: ends the session (an action: CSRF-checked).
async fn logout(State(state): State<AppState>, ConsoleAction(session): ConsoleAction) -> Response {
    state.console.sessions.close(&session.id);
    (
        [(header::SET_COOKIE, cleared_cookie())],
        Json(serde_json::json!({ "logged_out": true })),
    )
        .into_response()
}

/// One key's last use, as the key list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LastUseView {
    pub key_id: i64,
    /// RFC 3339, or null for a key never used.
    pub last_used_at: Option<String>,
}

/// `GET /console/api/last-use`: every key's last use.
async fn last_use(
    _session: ConsoleSession,
    State(state): State<AppState>,
) -> Result<Json<Vec<LastUseView>>, ApiError> {
    let uses = state
        .store
        .last_use()
        .await
        .map_err(ApiError::reading(Undone::ReadKeys))?;
    Ok(Json(
        uses.into_iter()
            .map(|u| LastUseView {
                key_id: u.api_key_id,
                last_used_at: u.at.map(format_rfc3339),
            })
            .collect(),
    ))
}
