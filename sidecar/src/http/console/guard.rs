//! What a console request must carry: a live session for every page and
//! data call, and for an action (a POST) also the session's CSRF token in
//! `x-csrf-token` and an `Origin` that is one of the console's own
//! ([`super::origin`]).
//!
//! The token in a header is OWASP's "synchronizer token" pattern for
//! JavaScript callers; the `Origin` and `Sec-Fetch-Site` checks are its
//! defence in depth, and `SameSite=Strict` keeps the cookie off cross-site
//! requests in the first place (OWASP CSRF Prevention Cheat Sheet).

use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use super::origin::ConsoleOrigins;
use super::session::{session_id, Session};
use crate::http::error::ApiError;
use crate::http::extract::secrets_match;
use crate::http::AppState;

/// The header a console page sends its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Proof of a live console session.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    /// The session id, as the cookie carries it (for logout).
    pub id: String,
    pub session: Session,
}

impl FromRequestParts<AppState> for ConsoleSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.auth.admin_token.is_none() {
            return Err(ApiError::AdminApiDisabled);
        }
        let id = session_id(&parts.headers).ok_or(ApiError::SessionRequired)?;
        let session = state
            .console
            .sessions
            .find(id, Instant::now())
            .ok_or(ApiError::SessionRequired)?;
        Ok(ConsoleSession {
            id: id.to_string(),
            session,
        })
    }
}

/// Proof that a console action may run: a live session, from the console's
/// own origin, with that session's CSRF token.
#[derive(Debug, Clone)]
pub struct ConsoleAction(pub ConsoleSession);

impl FromRequestParts<AppState> for ConsoleAction {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let session = ConsoleSession::from_request_parts(parts, state).await?;
        check_same_origin(&parts.headers, &state.console.origins)?;
        let presented = parts
            .headers
            .get(CSRF_HEADER)
            .ok_or(ApiError::CsrfRefused("the x-csrf-token header is missing"))?;
        if !secrets_match(presented.as_bytes(), session.session.csrf_token.as_bytes()) {
            return Err(ApiError::CsrfRefused(
                "the x-csrf-token header does not match this session",
            ));
        }
        Ok(ConsoleAction(session))
    }
}

/// Refuses a request that a browser says comes from another site, or whose
/// `Origin` is not one of the console's `origins`. Browsers send `Origin`
/// on every POST; a POST without one is not the console's page. The `Host`
/// is no evidence: under DNS rebinding it names the attacker's site, and it
/// is checked against the same list before any console route runs.
pub fn check_same_origin(headers: &HeaderMap, origins: &ConsoleOrigins) -> Result<(), ApiError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        if site.as_bytes() != b"same-origin" {
            return Err(ApiError::CsrfRefused(
                "the browser says this request comes from another site (Sec-Fetch-Site)",
            ));
        }
    }
    let origin = headers
        .get(header::ORIGIN)
        .ok_or(ApiError::CsrfRefused("the Origin header is missing"))?
        .to_str()
        .map_err(|_| ApiError::CsrfRefused("the Origin header is not text"))?;
    if !origins.allows_origin(origin) {
        return Err(ApiError::CsrfRefused(
            "the Origin header names another origin than the console's",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn only_the_consoles_own_origins_pass() {
        let origins = ConsoleOrigins::for_listen("127.0.0.1:9000".parse().unwrap());
        let check =
            |pairs: &[(&'static str, &'static str)]| check_same_origin(&headers(pairs), &origins);
        let host = ("host", "127.0.0.1:9000");
        assert!(check(&[host, ("origin", "http://127.0.0.1:9000")]).is_ok());
        assert!(check(&[
            host,
            ("origin", "http://localhost:9000"),
            ("sec-fetch-site", "same-origin")
        ])
        .is_ok());
        for refused in [
            &[host][..],
            &[host, ("origin", "http://evil.example")],
            &[host, ("origin", "http://127.0.0.1:9001")],
            &[host, ("origin", "https://127.0.0.1:9000")],
            &[host, ("origin", "null")],
            &[
                host,
                ("origin", "http://127.0.0.1:9000"),
                ("sec-fetch-site", "cross-site"),
            ],
            // DNS rebinding: the page's own origin, and a Host to match it.
            &[
                ("host", "rebound.example:9000"),
                ("origin", "http://rebound.example:9000"),
            ],
        ] {
            let err = check(refused).unwrap_err();
            assert_eq!(err.code().as_str(), "csrf_refused", "{refused:?}");
        }
    }
}
