//! Prometheus metrics of the sidecar: the counters, the middleware that
//! feeds them, and `GET /metrics`.
//!
//! The metrics are a handful of counters and one histogram, rendered by hand
//! in the Prometheus text format; a metrics framework would weigh more than
//! the sidecar it measures.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::error::DatabaseFailure;
use crate::http::panics::PanicSite;
use crate::http::AppState;

/// Upper bounds (seconds) of the key verification latency buckets.
pub const VERIFY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Route label of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Counters the sidecar exposes at `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<HashMap<(String, u16), u64>>,
    verify_buckets: [AtomicU64; VERIFY_BUCKETS.len()],
    verify_count: AtomicU64,
    verify_sum_nanos: AtomicU64,
    usage_inserted: AtomicU64,
    usage_duplicates: AtomicU64,
    /// By [`ConsoleLogin`], in the order of [`ConsoleLogin::ALL`].
    console_logins: [AtomicU64; ConsoleLogin::ALL.len()],
    database_errors: AtomicU64,
    handler_panics: AtomicU64,
    purge_panics: AtomicU64,
}

impl Metrics {
    /// Counts one answered request by route template and status.
    pub fn record_request(&self, route: &str, status: u16) {
        if let Ok(mut requests) = self.requests.lock() {
            match requests.get_mut(&(route.to_string(), status)) {
                Some(count) => *count += 1,
                None => {
                    requests.insert((route.to_string(), status), 1);
                }
            }
        }
    }

    /// Records how long one key verification took.
    pub fn observe_verify(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = VERIFY_BUCKETS.iter().position(|bound| secs <= *bound) {
            self.verify_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.verify_count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.verify_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts the outcome of one committed usage batch.
    pub fn record_ingest(&self, inserted: u64, duplicates: u64) {
        self.usage_inserted.fetch_add(inserted, Ordering::Relaxed);
        self.usage_duplicates
            .fetch_add(duplicates, Ordering::Relaxed);
    }

    /// Counts one console login attempt by what became of it.
    pub fn record_console_login(&self, outcome: ConsoleLogin) {
        self.console_logins[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one failed database call.
    pub fn record_database_error(&self) {
        self.database_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one panic caught at `site`.
    pub fn record_panic(&self, site: PanicSite) {
        self.panics(site).fetch_add(1, Ordering::Relaxed);
    }

    fn panics(&self, site: PanicSite) -> &AtomicU64 {
        match site {
            PanicSite::Handler => &self.handler_panics,
            PanicSite::Purge => &self.purge_panics,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut requests: Vec<((String, u16), u64)> = match self.requests.lock() {
            Ok(map) => map.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Err(_) => Vec::new(),
        };
        requests.sort();
        out.push_str("# HELP tollgate_http_requests_total HTTP requests answered, by route template and status.\n");
        out.push_str("# TYPE tollgate_http_requests_total counter\n");
        for ((route, status), count) in requests {
            let _ = writeln!(
                out,
                "tollgate_http_requests_total{{route=\"{}\",status=\"{status}\"}} {count}",
                escape_label(&route)
            );
        }

        out.push_str("# HELP tollgate_key_verify_duration_seconds Time to answer a key verification, database included.\n");
        out.push_str("# TYPE tollgate_key_verify_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (bound, bucket) in VERIFY_BUCKETS.iter().zip(&self.verify_buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "tollgate_key_verify_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.verify_count.load(Ordering::Relaxed);
        let sum = self.verify_sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "tollgate_key_verify_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "tollgate_key_verify_duration_seconds_sum {sum}");
        let _ = writeln!(out, "tollgate_key_verify_duration_seconds_count {count}");

        out.push_str("# HELP tollgate_usage_rows_ingested_total Usage records received and committed, by result.\n");
        out.push_str("# TYPE tollgate_usage_rows_ingested_total counter\n");
        let _ = writeln!(
            out,
            "tollgate_usage_rows_ingested_total{{result=\"inserted\"}} {}",
            self.usage_inserted.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "tollgate_usage_rows_ingested_total{{result=\"duplicate\"}} {}",
            self.usage_duplicates.load(Ordering::Relaxed)
        );

        out.push_str("# HELP tollgate_console_logins_total Console login attempts, by result (wrong_token: counted against the client; throttled: refused unchecked while the client waits).\n");
        out.push_str("# TYPE tollgate_console_logins_total counter\n");
        for outcome in ConsoleLogin::ALL {
            let _ = writeln!(
                out,
                "tollgate_console_logins_total{{result=\"{}\"}} {}",
                outcome.as_str(),
                self.console_logins[outcome as usize].load(Ordering::Relaxed)
            );
        }

        out.push_str("# HELP tollgate_database_errors_total Database calls that failed.\n");
        out.push_str("# TYPE tollgate_database_errors_total counter\n");
        let _ = writeln!(
            out,
            "tollgate_database_errors_total {}",
            self.database_errors.load(Ordering::Relaxed)
        );

        out.push_str("# HELP tollgate_panics_total Panics caught: in a handler (answered 500) or in a background task's round.\n");
        out.push_str("# TYPE tollgate_panics_total counter\n");
        for site in [PanicSite::Handler, PanicSite::Purge] {
            let _ = writeln!(
                out,
                "tollgate_panics_total{{site=\"{}\"}} {}",
                site.as_str(),
                self.panics(site).load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// What became of a console login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleLogin {
    /// The right token, and a session opened.
    Succeeded,
    /// A wrong token.
    WrongToken,
    /// Refused unchecked: the client failed too often and must wait.
    Throttled,
    /// The right token, but every session is in use.
    SessionsFull,
}

impl ConsoleLogin {
    /// Every outcome, in the order of its discriminant.
    pub const ALL: [ConsoleLogin; 4] = [
        ConsoleLogin::Succeeded,
        ConsoleLogin::WrongToken,
        ConsoleLogin::Throttled,
        ConsoleLogin::SessionsFull,
    ];

    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleLogin::Succeeded => "succeeded",
            ConsoleLogin::WrongToken => "wrong_token",
            ConsoleLogin::Throttled => "throttled",
            ConsoleLogin::SessionsFull => "sessions_full",
        }
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The route template a request matched, carried from the router to [`track_requests`].
#[derive(Debug, Clone)]
struct RouteLabel(String);

/// Route layer: tags the response with the matched route template.
pub async fn label_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string());
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteLabel(route));
    }
    response
}

/// Outer layer: counts every answered request, and every database failure.
pub async fn track_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map_or(UNMATCHED_ROUTE, |label| label.0.as_str());
    state
        .metrics
        .record_request(route, response.status().as_u16());
    if response.extensions().get::<DatabaseFailure>().is_some() {
        state.metrics.record_database_error();
    }
    response
}

/// `GET /metrics`: every metric, in the Prometheus text format.
pub async fn scrape(State(state): State<AppState>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_prometheus_text() {
        let metrics = Metrics::default();
        metrics.record_request("/v1/keys/{id}/revoke", 404);
        metrics.record_request("/v1/keys/{id}/revoke", 404);
        metrics.observe_verify(Duration::from_micros(300));
        metrics.observe_verify(Duration::from_secs(5));
        metrics.record_ingest(498, 2);
        metrics.record_database_error();
        metrics.record_panic(PanicSite::Handler);
        let text = metrics.render();
        assert!(text.contains(
            "tollgate_http_requests_total{route=\"/v1/keys/{id}/revoke\",status=\"404\"} 2\n"
        ));
        assert!(text.contains("tollgate_key_verify_duration_seconds_bucket{le=\"0.00025\"} 0\n"));
        assert!(text.contains("tollgate_key_verify_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("tollgate_key_verify_duration_seconds_bucket{le=\"1\"} 1\n"));
        assert!(text.contains("tollgate_key_verify_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("tollgate_key_verify_duration_seconds_count 2\n"));
        assert!(text.contains("tollgate_usage_rows_ingested_total{result=\"inserted\"} 498\n"));
        assert!(text.contains("tollgate_usage_rows_ingested_total{result=\"duplicate\"} 2\n"));
        assert!(text.contains("tollgate_database_errors_total 1\n"));
        assert!(text.contains("tollgate_panics_total{site=\"handler\"} 1\n"));
        assert!(text.contains("tollgate_panics_total{site=\"purge\"} 0\n"));
    }

    #[test]
    fn console_logins_are_counted_by_result() {
        let metrics = Metrics::default();
        for (outcome, times) in ConsoleLogin::ALL.into_iter().zip(1..) {
            for _ in 0..times {
                metrics.record_console_login(outcome);
            }
        }
        let text = metrics.render();
        for line in [
            "tollgate_console_logins_total{result=\"succeeded\"} 1\n",
            "tollgate_console_logins_total{result=\"wrong_token\"} 2\n",
            "tollgate_console_logins_total{result=\"throttled\"} 3\n",
            "tollgate_console_logins_total{result=\"sessions_full\"} 4\n",
        ] {
            assert!(text.contains(line), "{line}");
        }
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
