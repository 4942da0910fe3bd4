//! A panic is a bug, never the end of the process. In a request's handler
//! it becomes a 500 `internal_error` for that request ([`catch_panic`]); in
//! a background task it costs that task's round ([`catching`]), and the
//! task goes on. Either way it is counted (`tollgate_panics_total`) and
//! logged ([`install_hook`]).
//!
//! This needs a build whose panics unwind: the sidecar is built with the
//! workspace's `sidecar` profile (`cargo build --profile sidecar -p
//! sidecar`); the `release` profile aborts on a panic, for the wasm filter.

use std::any::Any;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::task::Poll;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;
use crate::http::AppState;

/// Where a panic was caught, the label of `tollgate_panics_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanicSite {
    /// A request's handler (extractors included): answered 500.
    Handler,
    /// A round of the purge of old key changes and expired claims.
    Purge,
}

impl PanicSite {
    /// The metric's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PanicSite::Handler => "handler",
            PanicSite::Purge => "purge",
        }
    }
}

/// Runs `work` to its end, or until it panics: the panic's payload is then
/// returned, and `work` dropped.
pub async fn catching<F: Future>(work: F) -> Result<F::Output, Box<dyn Any + Send>> {
    let mut work = pin!(work);
    poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        },
    )
    .await
}

/// Route layer: a panic in the handler answers 500 `internal_error` (the
/// sidecar's JSON error) for this request only, counted and logged with
/// the method and route template, never the path's values, query or body.
pub async fn catch_panic(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    match catching(next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            state.metrics.record_panic(PanicSite::Handler);
            tracing::error!(%method, %route, "the handler panicked; answered 500");
            ApiError::Panicked.into_response()
        }
    }
}

/// Logs every panic of the process through `tracing` (the sidecar's log),
/// with its source location and thread, in place of Rust's default hook.
/// The message is logged only when it is a literal: one formatted at run
/// time could hold request data (a key, a token, a secret). `serve` installs
/// it; the CLI keeps the default hook.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&'static str>()
            .copied()
            .unwrap_or("(formatted at run time: not logged)");
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        tracing::error!(%location, thread, message, "panic");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_returned_and_the_rest_runs_on() {
        let panicked = catching(async {
            tokio::task::yield_now().await;
            panic!("planted")
        })
        .await;
        let payload = panicked.expect_err("the panic is caught");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"planted"));
        assert_eq!(catching(async { 7 }).await.ok(), Some(7));
    }
}
