//! Driving the web console in-process: requests with the console's own
//! `Host` (and `Origin` for a POST), a session cookie and CSRF token, and
//! logins over a connection from a given peer address.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::Value;

use super::{Harness, Reply, ADMIN_TOKEN};

pub const HOST: &str = "127.0.0.1:9000";
pub const ORIGIN: &str = "http://127.0.0.1:9000";

/// A console request: `cookie` and `csrf` when given, and the console's
/// own Host and (for a POST) Origin unless `origin` says otherwise.
pub fn request(
    method: Method,
    path: &str,
    cookie: Option<&str>,
    csrf: Option<&str>,
    origin: Option<&str>,
    body: Option<Value>,
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, HOST);
    if let Some(origin) = origin {
        builder = builder.header(header::ORIGIN, origin);
    }
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    if let Some(csrf) = csrf {
        builder = builder.header("x-csrf-token", csrf);
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .expect("request")
}

/// A GET with the session `cookie`.
pub async fn read(h: &Harness, path: &str, cookie: &str) -> Reply {
    h.send(request(Method::GET, path, Some(cookie), None, None, None))
        .await
}

/// A POST without a body from the console's origin, with the session
/// `cookie` and `csrf` if given.
pub async fn act(h: &Harness, path: &str, cookie: &str, csrf: Option<&str>) -> Reply {
    h.send(request(
        Method::POST,
        path,
        Some(cookie),
        csrf,
        Some(ORIGIN),
        None,
    ))
    .await
}

/// A console GET without a session.
pub async fn get(h: &Harness, path: &str) -> Reply {
    h.send(request(Method::GET, path, None, None, None, None))
        .await
}

/// A login with `token` from the console's own Host and `origin`, over a
/// connection from `peer` if given (else from nowhere known).
pub fn login_request(token: &str, origin: Option<&str>, peer: Option<SocketAddr>) -> Request<Body> {
    let mut builder = Request::post("/console/login")
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(origin) = origin {
        builder = builder.header(header::ORIGIN, origin);
    }
    if let Some(peer) = peer {
        builder = builder.extension(ConnectInfo(peer));
    }
    builder
        .body(Body::from(format!("token={token}")))
        .expect("request")
}

/// Logs in with `token`; the answer.
pub async fn login_with(h: &Harness, token: &str, origin: Option<&str>) -> Reply {
    h.send(login_request(token, origin, None)).await
}

/// Logs in with `token` from the console's origin over a connection from
/// `peer`; the answer.
pub async fn login_from(h: &Harness, token: &str, peer: SocketAddr) -> Reply {
    h.send(login_request(token, Some(ORIGIN), Some(peer))).await
}

/// A logged-in session: its cookie (`name=value`) and its CSRF token.
pub async fn logged_in(h: &Harness) -> (String, String) {
    let reply = login_with(h, ADMIN_TOKEN, Some(ORIGIN)).await;
    session_of(h, &reply).await
}

/// The session a successful login answered: its cookie and CSRF token.
pub async fn session_of(h: &Harness, reply: &Reply) -> (String, String) {
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());
    assert_eq!(reply.headers[header::LOCATION], "/console");
    let set_cookie = reply.headers[header::SET_COOKIE].to_str().unwrap();
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Max-Age=1800",
        "Path=/console",
    ] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains(ADMIN_TOKEN),
        "the cookie is never the token"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let page = read(h, "/console", &cookie).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    let csrf = html
        .split(r#"<meta name="tollgate-csrf" content=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries its CSRF token")
        .to_string();
    assert_eq!(csrf.len(), 64);
    (cookie, csrf)
}
