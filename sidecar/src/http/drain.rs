//! Draining before a graceful stop: once the stop signal arrives, `/readyz`
//! answers 503 `draining` for the drain period while every other route keeps
//! serving, so the health checks of the Envoys in front take this sidecar out
//! of their clusters before it stops accepting connections.
//!
//! While draining, answers carry `Connection: close`, so the callers' pooled
//! connections are closed one by one before the listener goes away, rather
//! than reset under a request at the end.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::http::AppState;

/// How long `serve` drains by default: above what the rendered Envoy
/// configuration's active health checks need to mark a host unhealthy
/// (`envoy/envoy.template.yaml`: 2 failures 1 s apart, plus one interval).
pub const DEFAULT_DRAIN_PERIOD: Duration = Duration::from_secs(5);

/// Whether this sidecar is draining; shared by every handler.
#[derive(Clone, Debug, Default)]
pub struct Drain(Arc<AtomicBool>);

impl Drain {
    /// From now on `/readyz` answers 503 and answers close their connection.
    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`Drain::start`] was called.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Resolves `period` after `signal` did, having started `drain` in between:
/// the future `serve` hands to the graceful shutdown.
pub async fn after_draining(signal: impl Future<Output = ()>, drain: Drain, period: Duration) {
    signal.await;
    drain.start();
    tracing::info!(
        drain_period_s = period.as_secs_f64(),
        "draining: /readyz answers 503, requests are still served"
    );
    tokio::time::sleep(period).await;
    tracing::info!("drain period over; stopping once in-flight requests are done");
}

/// Layer: while draining, every answer asks its caller to close the connection.
pub async fn close_while_draining(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if state.drain.is_draining() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
