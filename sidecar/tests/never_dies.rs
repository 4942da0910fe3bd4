//! The sidecar never dies on input: every instant it takes over HTTP (the
//! admin API and the console) is range-checked where it is parsed (400
//! `invalid_request` naming the field), and a handler that panics answers
//! 500 for its own request while the sidecar serves on.

#[macro_use]
mod support;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use sidecar::http::{self, AppState};
use support::*;

on_both_backends!(instants_out_of_range_are_refused_naming_the_field);

/// Instants no caller may give: past year 3000 (one whose UTC date is in
/// year 10000 among them) and before 1970.
const OUT_OF_RANGE: [&str; 7] = [
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999-23:59",
    "3000-01-01T00:00:00Z",
    "3000-01-01T01:00:00+01:00",
    "1969-12-31T23:59:59.999Z",
    "0000-01-01T00:00:00Z",
    "0000-01-01T00:00:00+23:59",
];

/// `text` as a query value (`+` is a space in a query string).
fn query_value(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

async fn instants_out_of_range_are_refused_naming_the_field(backend: Backend) {
    let h = Harness::new(backend).await;
    let expect_refused = |reply: Reply, field: &str, what: &str| {
        let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error["field"], field, "{what}: {error}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains("out of range"), "{what}: {message}");
    };
    let mut sinces: Vec<String> = OUT_OF_RANGE.iter().map(|t| query_value(t)).collect();
    // A duration reaching back before 1970.
    sinces.push("30000d".into());
    for since in &sinces {
        let path = format!("/v1/usage/summary?since={since}");
        expect_refused(h.admin(Method::GET, &path, None).await, "since", since);
    }
    for at in OUT_OF_RANGE {
        let body = json!({"name": "far", "expires_at": at});
        let reply = h.admin(Method::POST, "/v1/keys", Some(body)).await;
        expect_refused(reply, "expires_at", at);
    }
    // The console creates keys through the admin API: refused the same.
    let (cookie, csrf) = console::logged_in(&h).await;
    for at in OUT_OF_RANGE {
        let body = json!({"name": "far", "expires_at": at});
        let request = console::request(
            Method::POST,
            "/console/api/keys",
            Some(&cookie),
            Some(&csrf),
            Some(console::ORIGIN),
            Some(body),
        );
        expect_refused(h.send(request).await, "expires_at", at);
    }
    let keys = h.admin(Method::GET, "/v1/keys", None).await.json();
    assert_eq!(keys["keys"], json!([]), "a refused key was stored");

    // The ends of the range are accepted.
    for (since, from) in [
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000Z"),
        ("2999-12-31T23:59:59.999Z", "2999-12-31T23:00:00.000Z"),
    ] {
        let path = format!("/v1/usage/summary?since={}", query_value(since));
        let reply = h.admin(Method::GET, &path, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{since}: {}", reply.text());
        assert_eq!(reply.json()["since"], from);
    }
    let body = json!({"name": "late", "expires_at": "2999-12-31T23:59:59.999Z"});
    let reply = h.admin(Method::POST, "/v1/keys", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());

    let health = h.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
}

async fn boom() -> &'static str {
    panic!("a planted bug")
}

/// A router of the sidecar's own wrapping whose `/v1/boom` panics.
fn router_with_a_bug(state: AppState) -> Router {
    let routes = Router::new()
        .route("/v1/boom", get(boom))
        .route("/v1/fine", get(|| async { "fine" }));
    http::wrap(routes, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_answers_500_and_the_next_request_is_served() {
    let h = Harness::new(Backend::Sqlite).await;
    let app = router_with_a_bug(h.state.clone());
    let get = |path: &str| Request::get(path).body(Body::empty()).expect("request");
    for _ in 0..2 {
        let reply = send(&app, get("/v1/boom")).await;
        let error = reply.expect_error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error");
        assert!(error.get("field").is_none_or(|f| f.is_null()), "{error}");
        let reply = send(&app, get("/v1/fine")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "fine");
    }
    // Through the sidecar's own router, on the same state, after the panics.
    let reply = send(&h.app, get("/healthz")).await;
    assert_eq!(reply.status, StatusCode::OK);

    let metrics = h.state.metrics.render();
    assert!(
        metrics.contains("tollgate_panics_total{site=\"handler\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_http_requests_total{route=\"/v1/boom\",status=\"500\"} 2\n"),
        "{metrics}"
    );
    let reply = send(
        &app,
        Request::builder()
            .method(Method::POST)
            .uri("/v1/boom")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    reply.expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}
