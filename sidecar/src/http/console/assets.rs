//! The console's browser assets, embedded in the binary: Chart.js as npm
//! installed it at build time (`build.rs`, pinned by
//! `sidecar/console/package-lock.json`), and the console's own script and
//! style sheet (`sidecar/console/`). Nothing is fetched from elsewhere at
//! run time, which the pages' Content-Security-Policy enforces.

use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::guard::ConsoleSession;
use crate::http::error::ApiError;

/// Chart.js's self-contained (UMD) build.
pub const CHART_JS: &[u8] = include_bytes!(env!("TOLLGATE_CONSOLE_CHART_JS"));

/// The console's own script.
pub const CONSOLE_JS: &str = include_str!("../../../console/console.js");

/// The console's style sheet (the login page's too, so served without a session).
pub const CONSOLE_CSS: &str = include_str!("../../../console/console.css");

/// The console's icon (a browser asks for one; without it, a 404 in its log).
pub const FAVICON_SVG: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\">\
     <rect width=\"16\" height=\"16\" rx=\"3\" fill=\"#1b2631\"/>\
     <path d=\"M4 4h8v2H9v6H7V6H4z\" fill=\"#d6eaf8\"/></svg>";

/// Where the console's pages may load anything from: only the sidecar
/// itself; no inline script or style, no frames, forms posting back only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// The headers every console answer carries: the policy above, no sniffing,
/// no framing, no referrer sent elsewhere, and nothing kept in caches (pages
/// hold the CSRF token, data calls the keys). `no-referrer` would not do:
/// under it Chromium sends `Origin: null` on the login form's POST, which
/// the origin check refuses.
pub fn security_headers() -> [(HeaderName, HeaderValue); 5] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

/// `GET /console/assets/{name}`: the style sheet for anyone, the scripts
/// for a live session.
pub async fn asset(
    session: Result<ConsoleSession, ApiError>,
    Path(name): Path<String>,
) -> Response {
    let (content_type, body): (&str, &[u8]) = match name.as_str() {
        "console.css" => ("text/css; charset=utf-8", CONSOLE_CSS.as_bytes()),
        "favicon.svg" => ("image/svg+xml", FAVICON_SVG.as_bytes()),
        "console.js" => ("text/javascript; charset=utf-8", CONSOLE_JS.as_bytes()),
        "chart.umd.min.js" => ("text/javascript; charset=utf-8", CHART_JS),
        _ => return ApiError::NoRoute.into_response(),
    };
    if content_type.starts_with("text/javascript") {
        if let Err(refused) = session {
            return refused.into_response();
        }
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}
