//! MySQL/MariaDB backend of the [`Store`](super::Store).
//!
//! Times are `DATETIME(3)` holding UTC (sqlx sets the session `time_zone` to
//! `+00:00`); migrations live in `migrations/mysql`.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{Connection, MySql, Row};
use time::{OffsetDateTime, PrimitiveDateTime};
use tokio::sync::Semaphore;
use tollgate_wire::UsageRecord;

use super::feed::{unix_ms, CHANGE_CREATED, CHANGE_REVOKED};
use super::rollup::{self, Grain};
use super::{
    migrator_up_to, record_time, rollup_table, sql, summary_parts, ApiKey, InsertRows, KeyLookup,
    KeyStatus, NewKey, Revocation, SeriesRow, StoreError, SummaryFilter, UsageSummaryRow,
    INSERT_CHUNK_ROWS,
};
use crate::clock::to_primitive_utc;
use crate::publish_change;
use crate::sealed::SealedSecret;

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

/// How MySQL adds an upsert's counters to the stored rollup row.
/// (`VALUES(c)` is deprecated in MySQL 8.0.20 for a row alias, which MariaDB
/// does not take; both still run it.)
const UPSERT: sql::Upsert = sql::Upsert {
    clause: "ON DUPLICATE KEY UPDATE",
    incoming: |c| format!("VALUES({c})"),
};

/// A time column's `YYYY-MM-DD HH:MM` text.
fn minute_text(column: &str) -> String {
    format!("DATE_FORMAT({column}, '%Y-%m-%d %H:%i')")
}

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
    pool: MySqlPool,
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
            pool,
            lookups: Arc::new(LookupConnections::new(options, ACQUIRE_TIMEOUT)),
        })
    }

    /// A pool that connects on first use; lets callers (and tests) start
    /// before the server is reachable.
    pub fn connect_lazy(url: &str, acquire_timeout: Duration) -> Result<Self, StoreError> {
        let options = MySqlConnectOptions::from_str(url)?;
        Ok(MySqlStore {
            pool: pool_options(acquire_timeout).connect_lazy_with(options.clone()),
            lookups: Arc::new(LookupConnections::new(options, acquire_timeout)),
        })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query(sql::PING).execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn insert_key(&self, key: &NewKey) -> Result<ApiKey, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(sql::INSERT_KEY)
            .bind(&key.name)
            .bind(&key.prefix)
            .bind(&key.key_hash)
            .bind(to_primitive_utc(key.created_at))
            .bind(key.expires_at.map(to_primitive_utc))
            .bind(key.sealed_signing_secret.as_ref().map(SealedSecret::as_str))
            .bind(sql::limits_spec(&key.limits))
            .execute(&mut *tx)
            .await?;
        publish_change!(tx, &key.key_hash, CHANGE_CREATED, unix_ms(key.created_at));
        tx.commit().await?;
        let id = i64::try_from(done.last_insert_id())
            .map_err(|_| StoreError::Corrupt("api_keys.id overflowed".into()))?;
        Ok(key.registered(id))
    }

    pub(super) async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(sql::LIST_KEYS).fetch_all(&self.pool).await?;
        rows.iter().map(key_from_row).collect()
    }

    pub(super) async fn key_by_hash(&self, key_hash: &str) -> Result<KeyLookup, StoreError> {
        self.lookups.key_by_hash(key_hash).await
    }

    pub(super) async fn revoke_key(
        &self,
        id: i64,
        at: OffsetDateTime,
    ) -> Result<Revocation, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(sql::REVOKE_KEY)
            .bind(to_primitive_utc(at))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            let row = sqlx::query(sql::KEY_HASH_BY_ID)
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            let hash = sql::ascii_column(&row, "key_hash")?
                .ok_or_else(|| StoreError::Corrupt("api_keys.key_hash is NULL".into()))?;
            publish_change!(tx, &hash, CHANGE_REVOKED, unix_ms(at));
        }
        let row = sqlx::query(sql::KEY_BY_ID)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        let key = row.as_ref().map(key_from_row).transpose()?;
        Ok(Revocation::after_update(key, done.rows_affected()))
    }

    pub(super) async fn key_by_id(&self, id: i64) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(sql::KEY_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    pub(super) async fn key_ids_among(&self, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        let mut query = sql::known_key_ids::<MySql>(ids);
        // One statement per id count: kept out of the statement cache, like
        // the usage insert.
        let query = query.build_query_scalar().persistent(false);
        Ok(query.fetch_all(&self.pool).await?)
    }

    pub(super) async fn insert_usage_rows(
        &self,
        records: &[&UsageRecord],
        how: InsertRows,
    ) -> Result<Option<u64>, StoreError> {
        let mut rows = records
            .iter()
            .map(|r| record_time(r).map(|t| (*r, to_primitive_utc(t))))
            .collect::<Result<Vec<_>, _>>()?;
        // One lock order for every batch: two overlapping batches (a retry
        // racing its original) wait for each other instead of deadlocking.
        rows.sort_by(|a, b| a.0.request_id.cmp(&b.0.request_id));

        let mut tx = self.pool.begin().await?;
        let mut ours: Vec<&UsageRecord> = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(how.rows_per_statement()) {
            // sqlx connects with CLIENT_FOUND_ROWS, so `ON DUPLICATE KEY UPDATE
            // request_id = request_id` would count a duplicate as affected.
            // `INSERT IGNORE` counts inserted rows only. IGNORE would also turn
            // other errors (overlong text, out-of-range values) into warnings,
            // which is why every record is validated against the column limits
            // before it gets here (`UsageRecord::validate`, `MAX_TIMESTAMP_MS`).
            let mut insert = sql::insert_usage::<MySql, _>("INSERT IGNORE", chunk);
            // One statement per batch size: not kept in the connection's
            // statement cache, which would hold up to 100 of them per
            // connection (found by `make soak`: the sidecar's memory grew
            // by megabytes a minute).
            let insert = insert.build().persistent(false);
            let inserted = insert.execute(&mut *tx).await?.rows_affected();
            if !how.keep(&mut ours, chunk, inserted) {
                // Another batch stored some of these meanwhile: the caller
                // looks them up and inserts the others row by row.
                tx.rollback().await?;
                return Ok(None);
            }
        }
        for grain in Grain::KEPT {
            let deltas = rollup::deltas(ours.iter().copied(), grain);
            let rows: Vec<_> = deltas
                .iter()
                .map(|d| (d, to_primitive_utc(d.bucket_start)))
                .collect();
            for chunk in rows.chunks(INSERT_CHUNK_ROWS) {
                let mut upsert =
                    sql::upsert_rollups::<MySql, _>(rollup_table(grain), &UPSERT, chunk);
                upsert.build().persistent(false).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(Some(ours.len() as u64))
    }

    pub(super) async fn usage_summary(
        &self,
        filter: &SummaryFilter,
    ) -> Result<Vec<UsageSummaryRow>, StoreError> {
        let parts = summary_parts(filter.since, filter.until)
            .into_iter()
            .map(|p| p.map(to_primitive_utc))
            .collect();
        let mut query = sql::usage_summary::<MySql, _>("SIGNED", filter.api_key_id, parts);
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(sql::summary_row).collect()
    }

    pub(super) async fn usage_series(
        &self,
        api_key_id: i64,
        grain: Grain,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<SeriesRow>, StoreError> {
        let (from, to) = (to_primitive_utc(from), to_primitive_utc(to));
        let mut query = match grain.table() {
            None => sql::minute_series::<MySql, _>("SIGNED", minute_text, api_key_id, from, to),
            Some(table) => sql::rollup_series::<MySql, _>(table, minute_text, api_key_id, from, to),
        };
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(sql::series_row).collect()
    }

    pub(super) async fn prune_usage_batch(
        &self,
        before: OffsetDateTime,
        batch_rows: usize,
    ) -> Result<u64, StoreError> {
        let limit = i64::try_from(batch_rows).unwrap_or(i64::MAX);
        let mut query = sql::prunable_ids::<MySql, _>(to_primitive_utc(before), limit);
        let ids: Vec<i64> = query.build_query_scalar().fetch_all(&self.pool).await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let mut delete = sql::delete_usage_ids::<MySql>(&ids);
        let done = delete.build().persistent(false).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn migrate_up_to(&self, version: i64) -> Result<(), StoreError> {
        migrator_up_to(&MIGRATOR, version).run(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn close(&self) {
        self.lookups.close().await;
        self.pool.close().await;
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
    let row = sqlx::query(sql::KEY_BY_HASH)
        .bind(key_hash)
        .fetch_one(conn)
        .await?;
    super::key_lookup_from_row!(&row, key_from_row)
}

/// sqlx's default ping before handing out a connection stays on: this pool
/// serves batched ingestion and admin calls, where one round trip more is
/// noise and surviving a database restart without a failed call is not.
fn pool_options(acquire_timeout: Duration) -> MySqlPoolOptions {
    MySqlPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(acquire_timeout)
}

fn key_from_row(row: &MySqlRow) -> Result<ApiKey, StoreError> {
    let utc = |t: PrimitiveDateTime| t.assume_utc();
    Ok(ApiKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        status: KeyStatus::parse(row.try_get::<&str, _>("status")?)?,
        created_at: utc(row.try_get("created_at")?),
        revoked_at: row
            .try_get::<Option<PrimitiveDateTime>, _>("revoked_at")?
            .map(utc),
        expires_at: row
            .try_get::<Option<PrimitiveDateTime>, _>("expires_at")?
            .map(utc),
        sealed_signing_secret: sql::sealed_signing_secret(row)?,
        limits: sql::key_limits(row)?,
    })
}
