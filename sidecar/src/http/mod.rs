//! The HTTP service: one module per resource, each with its own routes,
//! merged here into the sidecar's router, and what every route is served
//! with ([`wrap`]). The one API error type ([`error::ApiError`]) turns into
//! a response here too.
//!
//! Layer rule: `http` uses `domain` and `store`; nothing below it (`domain`,
//! `store`) imports it.

pub mod alerts;
pub mod budgets;
pub mod console;
pub mod drain;
pub mod error;
pub mod extract;
pub mod feed;
pub mod grants;
pub mod health;
pub mod json_fault;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod panics;
pub mod prices;
pub mod series;
mod state;
pub mod teams;
pub mod usage;

use std::net::{Ipv4Addr, SocketAddr};

use axum::extract::DefaultBodyLimit;
use axum::Router;

use error::ApiError;
use extract::MAX_BODY_BYTES;
pub use state::{AppState, AuthTokens};

/// Where `serve` listens unless `--listen` says otherwise: loopback only.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9000);

/// The admin API's routes (admin bearer token). The console passes its
/// data calls on keys and usage to these.
fn admin_routes() -> Router<AppState> {
    Router::new()
        .merge(alerts::admin_router())
        .merge(budgets::admin_router())
        .merge(keys::admin_router())
        .merge(limits::admin_router())
        .merge(prices::admin_router())
        .merge(series::admin_router())
        .merge(teams::admin_router())
        .merge(usage::admin_router())
}

/// Every route of the sidecar, wrapped by [`wrap`]: health and metrics,
/// the filter's internal calls (verify, usage, feed and claims, grants),
/// the admin API and the console.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .merge(health::router())
        .merge(keys::router())
        .merge(usage::router())
        .merge(feed::router())
        .merge(grants::router())
        .merge(admin_routes())
        .merge(console::router(
            state.clone(),
            admin_routes()
                .fallback(|| async { ApiError::NoRoute })
                .with_state(state.clone()),
        ));
    wrap(routes, state)
}

/// What every route of the sidecar is served with: a panic in a handler
/// answered 500 (`panics.rs`), JSON 404/405 answers, the body size cap,
/// request metrics and `Connection: close` while draining. Tests wrap
/// routes of their own with it.
pub fn wrap(routes: Router<AppState>, state: AppState) -> Router {
    routes
        // Inside the route label, so that a caught panic's 500 is counted
        // under its route.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            panics::catch_panic,
        ))
        .route_layer(axum::middleware::from_fn(metrics::label_route))
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track_requests,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            drain::close_while_draining,
        ))
        .with_state(state)
}
