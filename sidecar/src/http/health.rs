//! Liveness and readiness probes: `GET /healthz` answers while the process
//! runs, `GET /readyz` only while the database answers too and the sidecar
//! is not draining (`drain.rs`).

use axum::routing::get;
use axum::Router;
use std::time::Instant;

use axum::extract::State;
use axum::Json;
use serde_json::json;

use crate::http::error::{ApiError, Undone};
use crate::http::AppState;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: not draining, and the database answers `SELECT 1`.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if state.drain.is_draining() {
        return Err(ApiError::Draining);
    }
    let started = Instant::now();
    state
        .store
        .ping()
        .await
        .map_err(ApiError::reading(Undone::CheckReadiness))?;
    Ok(Json(json!({
        "status": "ready",
        "database": state.store.backend(),
        "latency_ms": started.elapsed().as_secs_f64() * 1000.0,
    })))
}

/// Liveness, readiness and the Prometheus scrape (no token).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(super::metrics::scrape))
}
