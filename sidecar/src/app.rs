//! The HTTP service: shared state, the router, and serving with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use tokio::net::TcpListener;
use tollgate_wire::{CHANGES_PATH, GRANTS_PATH, JTI_CLAIM_PATH, USAGE_PATH, VERIFY_PATH};

use crate::config::{ServeConfig, DEFAULT_USAGE_MAX_SKEW};
use crate::console::gateway::EnvoyAdmin;
use crate::console::origin::ConsoleOrigins;
use crate::console::Console;
use crate::drain::{self, Drain};
use crate::error::ApiError;
use crate::extract::MAX_BODY_BYTES;
use crate::metrics::{self, Metrics};
use crate::sealed::Keyring;
use crate::store::Store;
use crate::{console, feed, grants, keys, limits, panics, probes, series, usage};

/// The secrets requests are checked against.
#[derive(Clone)]
pub struct AuthTokens {
    /// `None` disables the admin API.
    pub admin_token: Option<String>,
    pub internal_token: String,
}

impl std::fmt::Debug for AuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthTokens")
            .field(
                "admin_token",
                &crate::config::mask_secret(self.admin_token.as_deref()),
            )
            .field(
                "internal_token",
                &crate::config::mask_secret(Some(&self.internal_token)),
            )
            .finish()
    }
}

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    pub auth: Arc<AuthTokens>,
    pub metrics: Arc<Metrics>,
    /// The master keys signing secrets are sealed and opened with.
    pub keyring: Arc<Keyring>,
    /// How far from now a usage record's timestamp may be.
    pub usage_max_skew: Duration,
    /// Set once the stop signal arrived (`drain.rs`).
    pub drain: Drain,
    /// The web console's sessions and where it reads Envoy's figures.
    pub console: Arc<Console>,
}

impl AppState {
    /// State over a store, with fresh metrics, no master key and the
    /// default usage skew.
    pub fn new(store: Store, auth: AuthTokens) -> Self {
        AppState {
            store,
            auth: Arc::new(auth),
            metrics: Arc::new(Metrics::default()),
            keyring: Arc::new(Keyring::empty()),
            usage_max_skew: DEFAULT_USAGE_MAX_SKEW,
            drain: Drain::default(),
            console: Arc::new(Console::default()),
        }
    }

    /// The same state, its console reading Envoy's figures from `envoy_admin`
    /// (and starting afresh: no session, no failed login).
    pub fn with_envoy_admin(self, envoy_admin: Option<EnvoyAdmin>) -> Self {
        AppState {
            console: Arc::new(Console {
                envoy_admin,
                origins: self.console.origins.clone(),
                ..Console::default()
            }),
            ..self
        }
    }

    /// The same state, its console answering at `origins` only (and
    /// starting afresh: no session, no failed login).
    pub fn with_console_origins(self, origins: ConsoleOrigins) -> Self {
        AppState {
            console: Arc::new(Console {
                origins,
                envoy_admin: self.console.envoy_admin.clone(),
                ..Console::default()
            }),
            ..self
        }
    }

    /// The same state, sealing and opening signing secrets with `keyring`.
    pub fn with_keyring(self, keyring: Keyring) -> Self {
        AppState {
            keyring: Arc::new(keyring),
            ..self
        }
    }

    /// The same state accepting usage timestamps within `skew` of now.
    pub fn with_usage_max_skew(self, skew: Duration) -> Self {
        AppState {
            usage_max_skew: skew,
            ..self
        }
    }
}

/// The admin API's routes (admin bearer token). The console passes its
/// data calls on keys and usage to these.
fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/keys", post(keys::create).get(keys::list))
        .route("/v1/keys/{id}/revoke", post(keys::revoke))
        .route("/v1/keys/{id}/limits", put(limits::put))
        .route("/v1/keys/{id}/usage/series", get(series::series))
        .route("/v1/usage/summary", get(usage::summary))
}

/// Every route of the sidecar, wrapped by [`wrap`].
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(metrics::scrape))
        .route(VERIFY_PATH, post(keys::verify))
        .route(USAGE_PATH, post(usage::ingest))
        .route(CHANGES_PATH, get(feed::changes))
        .route(JTI_CLAIM_PATH, post(feed::claim))
        .route(GRANTS_PATH, post(grants::grants))
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

/// Connects, migrates and serves until `shutdown` resolves; then drains for
/// `config.drain_period` (`/readyz` 503, everything else still served),
/// stops accepting, lets in-flight requests finish and closes the pool.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    tracing::info!(%config, "tollgate sidecar starting");
    panics::install_hook();
    let store = Store::connect(&config.database)
        .await
        .map_err(|e| format!("cannot open {}: {e}", config.database.masked()))?;
    store
        .migrate()
        .await
        .map_err(|e| format!("cannot migrate {}: {e}", config.database.masked()))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let console_origins = config.console_origins_at(local);
    tracing::info!(address = %local, backend = store.backend(), %console_origins, "listening");

    let state = AppState::new(
        store.clone(),
        AuthTokens {
            admin_token: config.admin_token,
            internal_token: config.internal_token,
        },
    )
    .with_keyring(config.keyring)
    .with_usage_max_skew(config.usage_max_skew)
    .with_envoy_admin(config.envoy_admin)
    .with_console_origins(console_origins);
    // What is due goes before the first poll is served: a reader behind
    // the retention is told to reset, not given a change that is due.
    feed::purge_once(&store, config.key_feed_retention).await;
    let purge = tokio::spawn(feed::purge_forever(
        store.clone(),
        config.key_feed_retention,
        state.metrics.clone(),
    ));
    let stop = drain::after_draining(shutdown, state.drain.clone(), config.drain_period);
    let served = axum::serve(
        listener,
        // The peer address, for the console's login throttle.
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop)
    .await;
    purge.abort();
    store.close().await;
    served.map_err(|e| format!("the HTTP server failed: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
