//! Serving: connect and migrate the store, build the HTTP service's state
//! from the configuration, serve until a stop signal, drain, close. Only
//! wiring; the routes are `http`'s.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::ServeConfig;
use crate::http::console::history;
use crate::http::{drain, feed, panics, router, AppState, AuthTokens};
use crate::store::Store;

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
    // Budget alerts: checked and delivered beside the service, never in a handler.
    let alerts = crate::alerts::spawn(store.clone(), state.keyring.clone(), config.alerts.clone());
    // The console's plots of the gateway's last hour: sampled only while
    // the console is on.
    let sampler = state
        .auth
        .admin_token
        .is_some()
        .then(|| tokio::spawn(history::sample_forever(state.clone())));
    let stop = drain::after_draining(shutdown, state.drain.clone(), config.drain_period);
    let served = axum::serve(
        listener,
        // The peer address, for the console's login throttle.
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop)
    .await;
    purge.abort();
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    alerts.iter().for_each(|task| task.abort());
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
