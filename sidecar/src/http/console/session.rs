//! Console sessions: at login the admin token is exchanged for a random
//! session id, kept server side with a CSRF token of its own and a short
//! lifetime. The browser holds only the id, in an `HttpOnly`,
//! `SameSite=Strict` cookie; the admin token never leaves the login form.
//!
//! The table is bounded, and a login never pushes out a session in use:
//! when it is full, expired sessions go first, then the one idle longest if
//! it has been idle for [`IDLE_EVICTABLE`] (every console page calls the
//! sidecar every 5 s, so such a session has no page open); if none is,
//! the login is refused until one is.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use tollgate_wire::sha256;

use crate::domain::random::random_hex;

/// The cookie that carries the session id.
pub const SESSION_COOKIE: &str = "tollgate_console";

/// How long a session lives from login (it is not extended by use).
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 60);

/// Sessions kept at most.
pub const MAX_SESSIONS: usize = 64;

/// How long a session must have gone unused before a login may push it
/// out of a full table.
pub const IDLE_EVICTABLE: Duration = Duration::from_secs(10 * 60);

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

/// A session in the table, with when it was last used.
struct Entry {
    session: Session,
    last_used: Instant,
}

impl Entry {
    /// When a login may push it out: when it expires, or once it has gone
    /// unused for [`IDLE_EVICTABLE`].
    fn evictable_at(&self) -> Instant {
        self.session.expires_at.min(self.last_used + IDLE_EVICTABLE)
    }
}

/// Why no session was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenRefused {
    /// [`MAX_SESSIONS`] sessions are live and in use; one may be pushed
    /// out after `retry_after`, unless it is used meanwhile.
    Full { retry_after: Duration },
    /// The system random source failed.
    Random(String),
}

/// The server's sessions, keyed by the SHA-256 of their id (so the table
/// holds no usable id).
#[derive(Default)]
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Entry>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    /// Opens a session at `now`; answers its id (for the cookie) and
    /// itself. A full table makes room as the module says, or refuses.
    pub fn open(&self, now: Instant) -> Result<(String, Session), OpenRefused> {
        let id = random_hex(TOKEN_BYTES).map_err(OpenRefused::Random)?;
        let session = Session {
            csrf_token: random_hex(TOKEN_BYTES).map_err(OpenRefused::Random)?,
            expires_at: now + SESSION_TTL,
        };
        let mut table = self.table();
        table.retain(|_, e| e.session.expires_at > now);
        if table.len() >= MAX_SESSIONS {
            let (digest, first) = table
                .iter()
                .map(|(digest, e)| (*digest, e.evictable_at()))
                .min_by_key(|(_, at)| *at)
                .ok_or(OpenRefused::Full {
                    retry_after: IDLE_EVICTABLE,
                })?;
            if first > now {
                return Err(OpenRefused::Full {
                    retry_after: first - now,
                });
            }
            table.remove(&digest);
        }
        let entry = Entry {
            session: session.clone(),
            last_used: now,
        };
        table.insert(sha256(id.as_bytes()), entry);
        Ok((id, session))
    }

    /// The live session with this id at `now`, if any; it counts as used.
    pub fn find(&self, id: &str, now: Instant) -> Option<Session> {
        let digest = sha256(id.as_bytes());
        let mut table = self.table();
        match table.get_mut(&digest) {
            Some(entry) if entry.session.expires_at > now => {
                entry.last_used = entry.last_used.max(now);
                Some(entry.session.clone())
            }
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

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
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

    /// A full table of sessions opened at `t0`, one a millisecond; their ids.
    fn full_table(sessions: &Sessions, t0: Instant) -> Vec<String> {
        (0..MAX_SESSIONS as u64)
            .map(|i| sessions.open(t0 + Duration::from_millis(i)).unwrap().0)
            .collect()
    }

    #[test]
    fn a_login_never_pushes_out_a_session_in_use() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let ids = full_table(&sessions, t0);
        let now = t0 + Duration::from_secs(60);
        assert_eq!(
            sessions.open(now).unwrap_err(),
            OpenRefused::Full {
                retry_after: IDLE_EVICTABLE - Duration::from_secs(60)
            }
        );
        // Each session used since stays; the login waits for one to idle.
        let later = t0 + IDLE_EVICTABLE - Duration::from_secs(1);
        for id in &ids {
            assert!(sessions.find(id, later).is_some());
        }
        assert_eq!(
            sessions
                .open(t0 + IDLE_EVICTABLE + Duration::from_secs(1))
                .unwrap_err(),
            OpenRefused::Full {
                retry_after: IDLE_EVICTABLE - Duration::from_secs(2)
            }
        );
        assert_eq!(sessions.len(), MAX_SESSIONS);
        for id in &ids {
            assert!(sessions.find(id, later).is_some(), "all still live");
        }
    }

    #[test]
    fn a_full_table_drops_expired_sessions_then_the_longest_idle() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let ids = full_table(&sessions, t0);
        // All but the first two are used a minute later.
        let used = t0 + Duration::from_secs(60);
        for id in &ids[2..] {
            sessions.find(id, used).unwrap();
        }
        sessions
            .find(&ids[1], t0 + Duration::from_secs(30))
            .unwrap();
        let idle = t0 + Duration::from_secs(30) + IDLE_EVICTABLE;
        let (newest, _) = sessions.open(idle).unwrap();
        assert!(sessions.find(&ids[0], idle).is_none(), "idle longest, gone");
        assert!(sessions.find(&ids[1], idle).is_some(), "used since");
        assert!(sessions.find(&newest, idle).is_some());
        assert_eq!(sessions.len(), MAX_SESSIONS);

        // Once they expire, all but the newest make room.
        let expired = t0 + Duration::from_millis(MAX_SESSIONS as u64) + SESSION_TTL;
        assert!(sessions.open(expired).is_ok());
        assert_eq!(sessions.len(), 2);
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
