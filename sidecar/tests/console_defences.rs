//! The console's defences against a client that has no business with it,
//! driven in-process: failed logins slowed per client address and counted,
//! a full session table that refuses a login rather than push out a session
//! in use, and requests that name a host the console does not answer at
//! (DNS rebinding) refused.

mod support;

use std::net::SocketAddr;

use axum::http::{header, Method, Request, StatusCode};
use sidecar::http::console::origin::ConsoleOrigins;
use sidecar::http::console::session::MAX_SESSIONS;
use sidecar::http::console::throttle::FREE_FAILURES;
use support::console::*;
use support::*;

const WRONG_TOKEN: &str = "not-the-admin-token-0123456";

fn peer(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 50_000))
}

/// The value of `tollgate_console_logins_total{result="<result>"}`.
async fn logins_counted(h: &Harness, result: &str) -> u64 {
    let metrics = h.get("/metrics").await.text();
    let prefix = format!("tollgate_console_logins_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in:\n{metrics}"))
}

/// The seconds of a reply's `Retry-After`.
fn retry_after(reply: &Reply) -> u64 {
    reply.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_logins_gets_five_tries_then_waits_and_is_counted() {
    let h = Harness::new(Backend::Sqlite).await;
    let attacker = peer(1);
    let flood: Vec<_> = (0..200)
        .map(|_| {
            let app = h.app.clone();
            tokio::spawn(async move {
                send(
                    &app,
                    login_request(WRONG_TOKEN, Some(ORIGIN), Some(attacker)),
                )
                .await
            })
        })
        .collect();
    let (mut wrong, mut throttled) = (0, 0);
    for reply in flood {
        let reply = reply.await.unwrap();
        match reply.status {
            StatusCode::UNAUTHORIZED => wrong += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                throttled += 1;
                let wait = retry_after(&reply);
                assert!((1..=900).contains(&wait), "{wait}");
                assert!(reply.text().contains("too many failed logins"));
            }
            other => panic!("{other}: {}", reply.text()),
        }
    }
    assert_eq!(
        (wrong, throttled),
        (FREE_FAILURES, 200 - FREE_FAILURES),
        "parallel guesses get no more tries than guesses in a row"
    );

    // While it waits, even the right token is refused unchecked; another
    // address logs in as usual.
    let right = login_from(&h, ADMIN_TOKEN, attacker).await;
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(right.headers.get(header::SET_COOKIE).is_none());
    assert!(right.headers.contains_key(header::RETRY_AFTER));
    let operator = login_from(&h, ADMIN_TOKEN, peer(2)).await;
    session_of(&h, &operator).await;

    assert_eq!(logins_counted(&h, "wrong_token").await, 5);
    assert_eq!(logins_counted(&h, "throttled").await, 196);
    assert_eq!(logins_counted(&h, "succeeded").await, 1);
}

/// `n` wrong logins from `client`, each answered 401.
async fn wrong_logins(h: &Harness, client: SocketAddr, n: u32) {
    for _ in 0..n {
        let reply = login_from(h, WRONG_TOKEN, client).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    }
}

#[tokio::test]
async fn the_right_token_clears_an_addresses_failures() {
    let h = Harness::new(Backend::Sqlite).await;
    let client = peer(3);
    wrong_logins(&h, client, FREE_FAILURES - 1).await;
    session_of(&h, &login_from(&h, ADMIN_TOKEN, client).await).await;
    // A fresh allowance: five more tries before the wait.
    wrong_logins(&h, client, FREE_FAILURES).await;
    let waits = login_from(&h, WRONG_TOKEN, client).await;
    assert_eq!(waits.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(waits.headers[header::RETRY_AFTER], "1");
}

#[tokio::test]
async fn a_full_session_table_refuses_a_login_and_keeps_every_session() {
    let h = Harness::new(Backend::Sqlite).await;
    let mut sessions = Vec::new();
    for _ in 0..MAX_SESSIONS {
        sessions.push(logged_in(&h).await);
    }
    let refused = login_with(&h, ADMIN_TOKEN, Some(ORIGIN)).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers.get(header::SET_COOKIE).is_none());
    let wait = retry_after(&refused);
    assert!((1..=600).contains(&wait), "{wait}");
    assert!(
        refused
            .text()
            .contains("all 64 console sessions are in use: log out of one"),
        "{}",
        refused.text()
    );
    assert_eq!(logins_counted(&h, "sessions_full").await, 1);
    for (cookie, _) in &sessions {
        let keys = request(
            Method::GET,
            "/console/api/keys",
            Some(cookie),
            None,
            None,
            None,
        );
        assert_eq!(h.send(keys).await.status, StatusCode::OK, "still logged in");
    }

    // A logout makes room.
    let (cookie, csrf) = &sessions[0];
    let out = h
        .send(request(
            Method::POST,
            "/console/logout",
            Some(cookie),
            Some(csrf),
            Some(ORIGIN),
            None,
        ))
        .await;
    assert_eq!(out.status, StatusCode::OK);
    logged_in(&h).await;
}

/// A console GET naming `host`, with `cookie` if given.
fn to_host(path: &str, host: Option<&str>, cookie: Option<&str>) -> Request<axum::body::Body> {
    let mut builder = Request::get(path);
    if let Some(host) = host {
        builder = builder.header(header::HOST, host);
    }
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    builder.body(axum::body::Body::empty()).unwrap()
}

#[tokio::test]
async fn requests_that_name_another_host_are_refused() {
    let mut h = Harness::new(Backend::Sqlite).await;
    let (cookie, _) = logged_in(&h).await;
    // A page of rebound.example, its name rebound to the sidecar's address,
    // reads nothing and cannot log in: its requests name its own host.
    let rebound = "rebound.example:9000";
    for path in [
        "/console/login",
        "/console",
        "/console/api/keys",
        "/console/assets/console.css",
    ] {
        for host in [Some(rebound), Some("127.0.0.1:9001"), None] {
            h.send(to_host(path, host, Some(&cookie)))
                .await
                .expect_error(StatusCode::FORBIDDEN, "host_not_allowed");
        }
    }
    let login = Request::post("/console/login")
        .header(header::HOST, rebound)
        .header(header::ORIGIN, "http://rebound.example:9000")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN_TOKEN}").into())
        .unwrap();
    let refused = h.send(login).await;
    refused.expect_error(StatusCode::FORBIDDEN, "host_not_allowed");
    assert!(refused.headers.get(header::SET_COOKIE).is_none());

    // localhost on the same port is the console too.
    let page = h
        .send(to_host("/console", Some("localhost:9000"), Some(&cookie)))
        .await;
    assert_eq!(page.status, StatusCode::OK);

    // With --console-origin, those origins and no others.
    h.state = h
        .state
        .clone()
        .with_console_origins(ConsoleOrigins::parse(&["https://console.example.com"]).unwrap());
    h.app = sidecar::http::router(h.state.clone());
    let login_page = h
        .send(to_host("/console/login", Some("console.example.com"), None))
        .await;
    assert_eq!(login_page.status, StatusCode::OK, "{}", login_page.text());
    h.send(to_host("/console/login", Some(HOST), None))
        .await
        .expect_error(StatusCode::FORBIDDEN, "host_not_allowed");
    // The rest of the sidecar answers whatever the Host.
    assert_eq!(
        h.send(to_host("/healthz", Some(rebound), None))
            .await
            .status,
        StatusCode::OK
    );
}
