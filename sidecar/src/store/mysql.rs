//! MySQL/MariaDB backend of the [`Store`](super::Store): its pool, and the
//! connections kept apart for key look-ups. The statements are
//! [`SqlStore`]'s, with the MySQL [`Dialect`](super::Dialect).
//!
//! Times are `DATETIME(3)` holding UTC (sqlx sets the session `time_zone` to
//! `+00:00`); migrations live in `migrations/mysql`.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::{Connection, MySql};
use tokio::sync::Semaphore;

use super::{KeyLookup, SqlStore, StoreError};

/// Connections the pool (ingestion, admin, readiness) keeps at most.
pub const MAX_CONNECTIONS: u32 = 16;

/// Connections kept for key look-ups, apart from the pool.
pub const LOOKUP_CONNECTIONS: usize = 16;

/// How long a request waits for a connection before it is answered 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one key look-up may take. Past the filter's callout timeout
/// (500 ms by default) nobody waits for the answer, and a stalled database
/// must not hold every look-up connection: a look-up that overruns is
/// cancelled and its connection dropped.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// A pool on a MySQL or MariaDB database, plus the connections reserved for
/// key look-ups.
#[derive(Clone, Debug)]
pub struct MySqlStore {
    sql: SqlStore<MySql>,
    lookups: Arc<LookupConnections>,
}

impl MySqlStore {
    /// Connects to a `mysql://` URL, failing now if the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = MySqlConnectOptions::from_str(url)?;
        let pool = pool_options(ACQUIRE_TIMEOUT)
            .min_connections(1)
            .connect_with(options.clone())
            .await?;
        Ok(MySqlStore {
            sql: SqlStore::new(pool),
            lookups: Arc::new(LookupConnections::new(options, ACQUIRE_TIMEOUT)),
        })
    }

    /// A pool that connects on first use; lets callers (and tests) start
    /// before the server is reachable.
    pub fn connect_lazy(url: &str, acquire_timeout: Duration) -> Result<Self, StoreError> {
        let options = MySqlConnectOptions::from_str(url)?;
        Ok(MySqlStore {
            sql: SqlStore::new(pool_options(acquire_timeout).connect_lazy_with(options.clone())),
            lookups: Arc::new(LookupConnections::new(options, acquire_timeout)),
        })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &MySqlPool {
        self.sql.pool()
    }

    /// The store's operations on this backend.
    pub fn sql(&self) -> &SqlStore<MySql> {
        &self.sql
    }

    /// The key with this hash, if any, and the feed's head, on a connection
    /// kept for look-ups.
    pub(super) async fn key_by_hash(&self, key_hash: &str) -> Result<KeyLookup, StoreError> {
        self.lookups.key_by_hash(key_hash).await
    }

    pub(super) async fn close(&self) {
        self.lookups.close().await;
        self.sql.close().await;
    }
}

/// Connections reserved for key look-ups, the sidecar's hot path.
///
/// sqlx 0.8 pings every pooled connection when it is returned to the pool
/// (not configurable), so each look-up through the pool cost two round trips
/// to the server instead of one; on a 2-core machine that put verification
/// p50 above 1 ms. These connections are handed out and taken back without a
/// ping. A look-up that fails on a reused connection (one the server dropped
/// while it sat idle) is retried once on a fresh connection; a connection
/// whose query failed or was cancelled is dropped, never reused.
#[derive(Debug)]
struct LookupConnections {
    options: MySqlConnectOptions,
    idle: Mutex<Vec<MySqlConnection>>,
    slots: Semaphore,
    acquire_timeout: Duration,
}

impl LookupConnections {
    fn new(options: MySqlConnectOptions, acquire_timeout: Duration) -> Self {
        LookupConnections {
            options,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(LOOKUP_CONNECTIONS),
            acquire_timeout,
        }
    }

    async fn key_by_hash(&self, key_hash: &str) -> Result<KeyLookup, StoreError> {
        let _slot = tokio::time::timeout(self.acquire_timeout, self.slots.acquire())
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolTimedOut))?
            .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolClosed))?;
        let reused = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let (mut conn, was_idle) = match reused {
            Some(conn) => (conn, true),
            None => (self.connect().await?, false),
        };
        let mut result = timed_lookup(&mut conn, key_hash).await;
        // A reused connection may have been dropped by the server while it
        // sat idle: one more try on a fresh one. A stalled server is not
        // tried twice.
        if matches!(result, Err(Lookup::Failed(_))) && was_idle {
            conn = self.connect().await?;
            result = timed_lookup(&mut conn, key_hash).await;
        }
        let result = result.map_err(|e| match e {
            Lookup::Failed(e) => e,
            Lookup::TimedOut => StoreError::Unavailable(sqlx::Error::PoolTimedOut),
        });
        if result.is_ok() && !self.slots.is_closed() {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(conn);
            }
        }
        result
    }

    async fn connect(&self) -> Result<MySqlConnection, StoreError> {
        tokio::time::timeout(
            self.acquire_timeout,
            MySqlConnection::connect_with(&self.options),
        )
        .await
        .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolTimedOut))?
        .map_err(StoreError::from)
    }

    async fn close(&self) {
        self.slots.close();
        let idle: Vec<MySqlConnection> = match self.idle.lock() {
            Ok(mut idle) => idle.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for conn in idle {
            let _ = conn.close().await;
        }
    }
}

/// Why a look-up on one connection gave no answer.
enum Lookup {
    Failed(StoreError),
    TimedOut,
}

async fn timed_lookup(conn: &mut MySqlConnection, key_hash: &str) -> Result<KeyLookup, Lookup> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, lookup(conn, key_hash)).await {
        Ok(result) => result.map_err(Lookup::Failed),
        Err(_) => Err(Lookup::TimedOut),
    }
}

async fn lookup(conn: &mut MySqlConnection, key_hash: &str) -> Result<KeyLookup, StoreError> {
    SqlStore::<MySql>::key_lookup(conn, key_hash).await
}

/// sqlx's default ping before handing out a connection stays on: this pool
/// serves batched ingestion and admin calls, where one round trip more is
/// noise and surviving a database restart without a failed call is not.
fn pool_options(acquire_timeout: Duration) -> MySqlPoolOptions {
    MySqlPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(acquire_timeout)
}
