//! Console sessions: at login the admin token is exchanged for a random
//! session id, kept server side with a CSRF token of its own and a short
//! lifetime. The browser holds only the id, in an `HttpOnly`,
//! `SameSite=Strict` cookie; the admin token never leaves the login form.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use tollgate_wire::sha256;

use crate::random::random_hex;

/// The cookie that carries the session id.
pub const SESSION_COOKIE: &str = "tollgate_console";

/// How long a session lives from login (it is not extended by use).
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 60);

/// Sessions kept at most; a login beyond drops the one closest to expiry.
pub const MAX_SESSIONS: usize = 64;

/// Random bytes of a session id and of a CSRF token (256 bits).
const TOKEN_BYTES: usize = 32;

/// A live session, as the server keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// Sent back by the page in `x-csrf-token` on every action.
    pub csrf_token: String,
    pub expires_at: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("csrf_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The server's sessions, keyed by the SHA-256 of their id (so the table
/// holds no usable id).
#[derive(Default)]
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    /// Opens a session at `now`; answers its id (for the cookie) and itself.
    pub fn open(&self, now: Instant) -> Result<(String, Session), String> {
        let id = random_hex(TOKEN_BYTES)?;
        let session = Session {
            csrf_token: random_hex(TOKEN_BYTES)?,
            expires_at: now + SESSION_TTL,
        };
        let mut table = self.table();
        table.retain(|_, s| s.expires_at > now);
        while table.len() >= MAX_SESSIONS {
            let Some(oldest) = table
                .iter()
                .min_by_key(|(_, s)| s.expires_at)
                .map(|(digest, _)| *digest)
            else {
                break;
            };
            table.remove(&oldest);
        }
        table.insert(sha256(id.as_bytes()), session.clone());
        Ok((id, session))
    }

    /// The live session with this id at `now`, if any.
    pub fn find(&self, id: &str, now: Instant) -> Option<Session> {
        let digest = sha256(id.as_bytes());
        let mut table = self.table();
        match table.get(&digest) {
            Some(session) if session.expires_at > now => Some(session.clone()),
            Some(_) => {
                table.remove(&digest);
                None
            }
            None => None,
        }
    }

    /// Ends the session with this id (logout).
    pub fn close(&self, id: &str) {
        self.table().remove(&sha256(id.as_bytes()));
    }

    /// How many sessions are kept (live or not yet swept).
    pub fn len(&self) -> usize {
        self.table().len()
    }

    /// Whether no session is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic while holding the lock cannot leave the map half-updated
        // in a way that matters: every entry is whole.
        self.by_digest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The `Set-Cookie` value that hands a session id to the browser.
pub fn session_cookie(id: &str) -> String {
    format!(
        "{SESSION_COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that makes the browser forget its session id.
pub fn cleared_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The session id the request's `Cookie` headers carry, if any.
pub fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_session_lives_until_it_expires_or_is_closed() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let (id, session) = sessions.open(t0).unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(id, session.csrf_token);
        assert_eq!(sessions.find(&id, t0 + SESSION_TTL / 2), Some(session));
        assert_eq!(sessions.find(&id, t0 + SESSION_TTL), None);
        assert!(
            sessions.is_empty(),
            "an expired session is swept when looked up"
        );

        let (id, _) = sessions.open(t0).unwrap();
        assert!(sessions.find("0".repeat(64).as_str(), t0).is_none());
        sessions.close(&id);
        assert!(sessions.find(&id, t0).is_none());
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let (first, _) = sessions.open(t0).unwrap();
        for i in 1..=MAX_SESSIONS as u64 {
            sessions.open(t0 + Duration::from_millis(i)).unwrap();
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(sessions.find(&first, t0).is_none(), "the oldest went first");
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_short_lived() {
        let cookie = session_cookie("abc");
        for part in [
            "tollgate_console=abc",
            "HttpOnly",
            "SameSite=Strict",
            "Max-Age=1800",
            "Path=/console",
        ] {
            assert!(cookie.contains(part), "{cookie}");
        }
        assert!(cleared_cookie().contains("Max-Age=0"));

        let mut headers = HeaderMap::new();
        assert_eq!(session_id(&headers), None);
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; tollgate_console=xyz"),
        );
        assert_eq!(session_id(&headers), Some("xyz"));
        headers.clear();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("tollgate_console="),
        );
        assert_eq!(session_id(&headers), None);
    }
}
