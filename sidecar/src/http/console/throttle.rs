//! Console login throttling: failed logins are counted per client (the
//! connection's peer address), and after [`FREE_FAILURES`] of them the
//! client must wait before its next attempt is even checked, twice as long
//! after each further failure.
//!
//! A waiting client is answered 429 with `Retry-After` whatever it sends,
//! the right token included: if the right token got through, the answer
//! would tell a guesser when it had guessed right. A correct login clears
//! the client's failures. The check and the count happen under one lock, so
//! a thousand parallel guesses get no more tries than a thousand in a row.
//!
//! The peer address is the only client identity used: `X-Forwarded-For` is
//! whatever the client wants it to be. Behind a reverse proxy, or on the
//! default loopback listener, every client shares the proxy's or the
//! machine's address, and so one count: a failing neighbour slows the
//! operator's logins too (at most [`MAX_LOCKOUT`] at a time).
//!
//! The table is bounded: at most [`MAX_TRACKED_CLIENTS`] clients are
//! tracked; while it is full of live entries, every client not in it
//! shares one more entry, so a flood of addresses can neither grow memory
//! nor buy a fresh allowance of tries with each new address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

/// Failed logins a client may make before it has to wait.
pub const FREE_FAILURES: u32 = 5;

/// The wait after the [`FREE_FAILURES`]th failure; each further failure
/// doubles it.
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(1);

/// The longest wait (reached at the 15th failure).
pub const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);

/// A client's failures are forgotten this long after its last failure, or
/// after its last wait ended.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// Clients tracked at most (each entry is a few dozen bytes).
pub const MAX_TRACKED_CLIENTS: usize = 4096;

/// Whom failures are counted for: an IPv4 address, or an IPv6 address's
/// /64 network (one host commonly holds a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    V4([u8; 4]),
    V6Net([u8; 8]),
    /// The peer address is not known (a router driven in-process).
    Unknown,
}

impl Client {
    /// The client a connection from `peer` counts as.
    pub fn of(peer: IpAddr) -> Client {
        match peer {
            IpAddr::V4(v4) => Client::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::V4(v4.octets()),
                None => {
                    let mut net = [0; 8];
                    net.copy_from_slice(&v6.octets()[..8]);
                    Client::V6Net(net)
                }
            },
        }
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Client::V4(octets) => Ipv4Addr::from(*octets).fmt(f),
            Client::V6Net(net) => {
                let mut octets = [0; 16];
                octets[..8].copy_from_slice(net);
                write!(f, "{}/64", Ipv6Addr::from(octets))
            }
            Client::Unknown => f.write_str("an unknown address"),
        }
    }
}

/// The requesting client, from the connection's peer address (axum's
/// `ConnectInfo`, which `app::serve` provides).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Client);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(Client::Unknown, |info| Client::of(info.0.ip())),
        ))
    }
}

/// What became of one login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The token was right; the client's failures are cleared.
    Passed,
    /// The token was wrong, and counted.
    Failed,
    /// Not checked: the client must wait this long first.
    Throttled { retry_after: Duration },
}

/// One client's (or the shared overflow's) failed logins.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// No attempt is checked before this instant.
    wait_until: Instant,
    /// When the entry may be dropped.
    forget_at: Instant,
}

impl Failures {
    fn new(now: Instant) -> Failures {
        Failures {
            count: 0,
            wait_until: now,
            forget_at: now,
        }
    }

    fn wait(&self, now: Instant) -> Option<Duration> {
        (self.wait_until > now).then(|| self.wait_until - now)
    }

    fn fail(&mut self, now: Instant) {
        self.count = self.count.saturating_add(1);
        if let Some(doublings) = self.count.checked_sub(FREE_FAILURES) {
            let wait = FIRST_LOCKOUT
                .checked_mul(2u32.saturating_pow(doublings))
                .map_or(MAX_LOCKOUT, |wait| wait.min(MAX_LOCKOUT));
            self.wait_until = now + wait;
        }
        self.forget_at = self.wait_until.max(now) + FORGET_AFTER;
    }
}

#[derive(Debug, Default)]
struct Table {
    by_client: HashMap<Client, Failures>,
    /// Shared by every client not in `by_client` while it is full.
    overflow: Option<Failures>,
}

impl Table {
    /// The entry `client`'s attempts count against; `None` for a client
    /// with no failures, which gets an entry once it fails.
    fn entry(&mut self, client: Client, now: Instant) -> Option<&mut Failures> {
        if self
            .by_client
            .get(&client)
            .is_some_and(|f| f.forget_at <= now)
        {
            self.by_client.remove(&client);
        }
        if !self.by_client.contains_key(&client) && self.by_client.len() >= MAX_TRACKED_CLIENTS {
            self.forget(now);
            if self.by_client.len() >= MAX_TRACKED_CLIENTS {
                return Some(self.overflow.get_or_insert_with(|| Failures::new(now)));
            }
        }
        self.by_client.get_mut(&client)
    }

    fn forget(&mut self, now: Instant) {
        self.by_client.retain(|_, f| f.forget_at > now);
        if self.overflow.is_some_and(|f| f.forget_at <= now) {
            self.overflow = None;
        }
    }
}

/// Failed console logins per client.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    table: Mutex<Table>,
}

impl LoginThrottle {
    /// Judges one login attempt of `client` at `now`: `token_is_right` is
    /// asked only when the client need not wait.
    pub fn attempt(
        &self,
        client: Client,
        now: Instant,
        token_is_right: impl FnOnce() -> bool,
    ) -> Attempt {
        let mut table = self.table();
        if let Some(retry_after) = table.entry(client, now).and_then(|f| f.wait(now)) {
            return Attempt::Throttled { retry_after };
        }
        if token_is_right() {
            table.by_client.remove(&client);
            return Attempt::Passed;
        }
        match table.entry(client, now) {
            Some(failures) => failures.fail(now),
            None => {
                let mut failures = Failures::new(now);
                failures.fail(now);
                table.by_client.insert(client, failures);
            }
        }
        Attempt::Failed
    }

    /// How many clients are tracked (not counting the shared overflow).
    pub fn tracked(&self) -> usize {
        self.table().by_client.len()
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Every entry is whole at any instant; a panic cannot leave one torn.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
