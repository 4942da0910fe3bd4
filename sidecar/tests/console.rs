//! The web console's HTTP behaviour, driven in-process: off without an
//! admin token; login exchanges the token for a session cookie; pages and
//! data calls need the session; actions also its CSRF token and the
//! console's own origin; the key list's last use, on SQLite and MySQL alike.
//! (`tests/test_console.py` drives the same pages in a real browser.)

#[macro_use]
mod support;

use axum::http::{header, Method, StatusCode};
use serde_json::json;
use sidecar::http::console::gateway::EnvoyAdmin;
use support::console::*;
use support::*;

on_both_backends!(the_key_list_shows_each_keys_last_use);

#[tokio::test]
async fn the_console_is_off_without_an_admin_token() {
    let h = Harness::with_admin(Backend::Sqlite, None).await;
    let page = get(&h, "/console").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(
        page.text().contains("TOLLGATE_ADMIN_TOKEN"),
        "{}",
        page.text()
    );
    assert!(
        !page.text().contains("<form"),
        "no login form while it is off"
    );
    let login = login_with(&h, "anything-at-all-0123", Some(ORIGIN)).await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);
    assert!(login.headers.get(header::SET_COOKIE).is_none());
    get(&h, "/console/api/keys")
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "admin_api_disabled");
}

#[tokio::test]
async fn without_a_session_pages_lead_to_login_and_data_calls_are_401() {
    let h = Harness::new(Backend::Sqlite).await;
    for page in ["/console", "/console/keys/1", "/console/gateway"] {
        let reply = get(&h, page).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{page}");
        assert_eq!(reply.headers[header::LOCATION], "/console/login", "{page}");
    }
    let login = get(&h, "/console/login").await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login
        .text()
        .contains(r#"<form method="post" action="/console/login">"#));
    for path in [
        "/console/api/keys",
        "/console/api/last-use",
        "/console/api/gateway",
    ] {
        get(&h, path)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "session_required");
        let forged = "tollgate_console=".to_string() + &"a".repeat(64);
        h.send(request(Method::GET, path, Some(&forged), None, None, None))
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "session_required");
    }
    let post = request(
        Method::POST,
        "/console/api/keys",
        None,
        None,
        Some(ORIGIN),
        Some(json!({"name": "x"})),
    );
    h.send(post)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "session_required");
    assert_eq!(
        get(&h, "/console/assets/console.js").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&h, "/console/assets/console.css").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn login_needs_the_admin_token_from_the_consoles_own_origin() {
    let h = Harness::new(Backend::Sqlite).await;
    let wrong = login_with(&h, "not-the-admin-token-0123", Some(ORIGIN)).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.text().contains("That is not the admin token."));
    assert!(wrong.headers.get(header::SET_COOKIE).is_none());
    for origin in [None, Some("http://evil.example")] {
        let cross = login_with(&h, ADMIN_TOKEN, origin).await;
        assert_eq!(cross.status, StatusCode::FORBIDDEN, "{origin:?}");
        assert!(cross.headers.get(header::SET_COOKIE).is_none());
    }
    let (cookie, _) = logged_in(&h).await;
    let again = read(&h, "/console/login", &cookie).await;
    assert_eq!(
        again.status,
        StatusCode::SEE_OTHER,
        "a live session skips the form"
    );
}

#[tokio::test]
async fn actions_need_the_csrf_token_and_the_consoles_origin() {
    let h = Harness::new(Backend::Sqlite).await;
    let (cookie, csrf) = logged_in(&h).await;
    let create = |csrf: Option<&str>, origin: Option<&str>| {
        request(
            Method::POST,
            "/console/api/keys",
            Some(&cookie),
            csrf,
            origin,
            Some(json!({"name": "console"})),
        )
    };
    let other = "0".repeat(64);
    for (csrf, origin) in [
        (None, Some(ORIGIN)),
        (Some(other.as_str()), Some(ORIGIN)),
        (Some(csrf.as_str()), None),
        (Some(csrf.as_str()), Some("http://evil.example")),
        (Some(csrf.as_str()), Some("http://127.0.0.1:9001")),
    ] {
        h.send(create(csrf, origin))
            .await
            .expect_error(StatusCode::FORBIDDEN, "csrf_refused");
    }
    let list = read(&h, "/console/api/keys", &cookie).await;
    assert_eq!(
        list.json()["keys"],
        json!([]),
        "a refused action did nothing"
    );

    let created = h.send(create(Some(&csrf), Some(ORIGIN))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let created = created.json();
    let id = created["id"].as_i64().unwrap();
    assert!(created["key"].as_str().unwrap().starts_with("tg_"));
    assert_eq!(created["status"], "ACTIVE");
    // The admin API's own checks answer through the console.
    for name in ["", "evil\u{202E}cod.exe", "a\u{2028}b"] {
        let error = h
            .send(request(
                Method::POST,
                "/console/api/keys",
                Some(&cookie),
                Some(&csrf),
                Some(ORIGIN),
                Some(json!({ "name": name })),
            ))
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error["field"], "name", "{name:?}");
    }

    let revoke = format!("/console/api/keys/{id}/revoke");
    act(&h, &revoke, &cookie, None)
        .await
        .expect_error(StatusCode::FORBIDDEN, "csrf_refused");
    let revoked = act(&h, &revoke, &cookie, Some(&csrf)).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text());
    assert_eq!(revoked.json()["key"]["status"], "REVOKED");
    let listed = read(&h, "/console/api/keys", &cookie).await.text();
    assert!(
        !listed.contains(created["key"].as_str().unwrap()),
        "the plaintext is shown once"
    );

    let series = read(
        &h,
        &format!("/console/api/keys/{id}/usage/series?window=day"),
        &cookie,
    )
    .await;
    assert_eq!(series.status, StatusCode::OK, "{}", series.text());
    assert_eq!(series.json()["points"].as_array().unwrap().len(), 24);

    // Logging out is an action too; afterwards the session is gone.
    act(&h, "/console/logout", &cookie, None)
        .await
        .expect_error(StatusCode::FORBIDDEN, "csrf_refused");
    let out = act(&h, "/console/logout", &cookie, Some(&csrf)).await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(out.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    read(&h, "/console/api/keys", &cookie)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "session_required");
}

#[tokio::test]
async fn pages_and_assets_come_only_from_the_sidecar() {
    let h = Harness::new(Backend::Sqlite).await;
    let (cookie, _) = logged_in(&h).await;
    for path in [
        "/console",
        "/console/keys/3",
        "/console/gateway",
        "/console/login",
    ] {
        let reply = read(&h, path, &cookie).await;
        let policy = reply.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(
            policy.starts_with("default-src 'none'; script-src 'self';"),
            "{path}: {policy}"
        );
        assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store", "{path}");
        assert_eq!(reply.headers[header::X_FRAME_OPTIONS], "DENY", "{path}");
    }
    let chart = read(&h, "/console/assets/chart.umd.min.js", &cookie).await;
    assert_eq!(chart.status, StatusCode::OK);
    assert!(
        chart.text().starts_with("/*!\n * Chart.js v4."),
        "Chart.js from npm is embedded"
    );
    assert_eq!(
        read(&h, "/console/assets/other.js", &cookie).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn live_figures_say_when_envoy_cannot_be_read() {
    let mut h = Harness::new(Backend::Sqlite).await;
    let (cookie, _) = logged_in(&h).await;
    let figures = read(&h, "/console/api/gateway", &cookie).await.json();
    assert_eq!(figures["envoy"]["configured"], false);
    assert!(figures["sidecar"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "tollgate_http_requests_total"));

    // Nothing listens on port 1: the figures say so instead of failing.
    h.state = h
        .state
        .clone()
        .with_envoy_admin(Some(EnvoyAdmin::parse("http://127.0.0.1:1").unwrap()));
    h.app = sidecar::http::router(h.state.clone());
    let (cookie, _) = logged_in(&h).await;
    let figures = read(&h, "/console/api/gateway", &cookie).await.json();
    assert_eq!(figures["envoy"]["configured"], true);
    assert_eq!(figures["envoy"]["url"], "http://127.0.0.1:1");
    assert!(
        figures["envoy"]["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{figures}"
    );
}

async fn the_key_list_shows_each_keys_last_use(backend: Backend) {
    let h = Harness::new(backend).await;
    register_keys(&h.db.store, 2).await;
    let before = h.db.store.last_use().await.unwrap();
    assert_eq!(
        before
            .iter()
            .map(|u| (u.api_key_id, u.at))
            .collect::<Vec<_>>(),
        [(1, None), (2, None)]
    );
    let mut late = record("late", 2);
    late["timestamp_ms"] = json!(now_ms() - 1_000);
    let mut early = record("early", 2);
    early["timestamp_ms"] = json!(now_ms() - 60_000);
    assert_eq!(h.ingest(&json!([late, early])).await.status, StatusCode::OK);

    let (cookie, _) = logged_in(&h).await;
    let uses = read(&h, "/console/api/last-use", &cookie).await.json();
    assert_eq!(uses[0], json!({"key_id": 1, "last_used_at": null}));
    let shown =
        sidecar::domain::clock::parse_rfc3339(uses[1]["last_used_at"].as_str().unwrap()).unwrap();
    let expected =
        sidecar::domain::clock::from_unix_ms(late["timestamp_ms"].as_u64().unwrap()).unwrap();
    assert_eq!(
        shown, expected,
        "the newest row, to the millisecond: {uses}"
    );
}
