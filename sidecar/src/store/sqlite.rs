//! SQLite backend of the [`Store`](super::Store): the embedded default.
//!
//! The file runs in WAL mode (readers never wait for the writer) with a busy
//! timeout (writers queue instead of failing) and `synchronous = FULL` (a batch
//! is acknowledged only once it is on disk). Times are fixed-width UTC text,
//! see [`crate::clock::format_db_text`]; migrations live in `migrations/sqlite`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use time::OffsetDateTime;
use tollgate_wire::UsageRecord;

use super::{
    record_time, to_i64, ApiKey, KeyStatus, NewKey, Revocation, StoreError, SummaryFilter,
    UsageSummaryRow, INSERT_CHUNK_ROWS,
};
use crate::clock::{format_db_text, parse_db_text};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Connections the pool keeps at most; SQLite has one writer at a time anyway.
pub const MAX_CONNECTIONS: u32 = 4;

/// How long a writer waits for the file lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const KEY_COLUMNS: &str = "id, name, prefix, status, created_at, revoked_at, expires_at";

/// A pool on a SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating when missing, with its directory) the SQLite file at `path`.
    pub async fn connect(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(sqlx::Error::Configuration(
                    format!("cannot create directory {}: {e}", dir.display()).into(),
                ))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(SqliteStore {
            pool,
            path: path.to_path_buf(),
        })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn insert_key(&self, key: &NewKey) -> Result<ApiKey, StoreError> {
        let done = sqlx::query(
            "INSERT INTO api_keys (name, prefix, key_hash, status, created_at, expires_at) \
             VALUES (?, ?, ?, 'ACTIVE', ?, ?)",
        )
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.key_hash)
        .bind(format_db_text(key.created_at))
        .bind(key.expires_at.map(format_db_text))
        .execute(&self.pool)
        .await?;
        Ok(ApiKey {
            id: done.last_insert_rowid(),
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            status: KeyStatus::Active,
            created_at: key.created_at,
            revoked_at: None,
            expires_at: key.expires_at,
        })
    }

    pub(super) async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    pub(super) async fn key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = ?"
        ))
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    pub(super) async fn revoke_key(
        &self,
        id: i64,
        at: OffsetDateTime,
    ) -> Result<Revocation, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE api_keys SET status = 'REVOKED', revoked_at = ? \
             WHERE id = ? AND status = 'ACTIVE'",
        )
        .bind(format_db_text(at))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(match row.as_ref().map(key_from_row).transpose()? {
            None => Revocation::NotFound,
            Some(key) if done.rows_affected() == 1 => Revocation::Revoked(key),
            Some(key) => Revocation::AlreadyRevoked(key),
        })
    }

    pub(super) async fn insert_usage(&self, records: &[UsageRecord]) -> Result<u64, StoreError> {
        let rows = records
            .iter()
            .map(|r| record_time(r).map(|t| (r, format_db_text(t))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        for chunk in rows.chunks(INSERT_CHUNK_ROWS) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO usage_log (request_id, api_key_id, method, endpoint, \
                 status_code, outcome, request_bytes, response_bytes, duration_ms, created_at) ",
            );
            insert.push_values(chunk, |mut row, (r, created_at)| {
                row.push_bind(r.request_id.as_str())
                    .push_bind(r.api_key_id)
                    .push_bind(r.method.as_str())
                    .push_bind(r.endpoint.as_str())
                    .push_bind(i64::from(r.status_code))
                    .push_bind(r.outcome.as_str())
                    .push_bind(to_i64(r.request_bytes))
                    .push_bind(to_i64(r.response_bytes))
                    .push_bind(to_i64(r.duration_ms))
                    .push_bind(created_at.as_str());
            });
            // Rows whose request_id is stored already (or earlier in this
            // batch) are skipped and not counted in rows_affected.
            insert.push(" ON CONFLICT(request_id) DO NOTHING");
            inserted += insert.build().execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    pub(super) async fn usage_summary(
        &self,
        filter: &SummaryFilter,
    ) -> Result<Vec<UsageSummaryRow>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT api_key_id, outcome, COUNT(*) AS requests, \
             CAST(COALESCE(SUM(request_bytes), 0) AS INTEGER) AS request_bytes, \
             CAST(COALESCE(SUM(response_bytes), 0) AS INTEGER) AS response_bytes \
             FROM usage_log WHERE 1 = 1",
        );
        if let Some(id) = filter.api_key_id {
            query.push(" AND api_key_id = ").push_bind(id);
        }
        if let Some(since) = filter.since {
            query
                .push(" AND created_at >= ")
                .push_bind(format_db_text(since));
        }
        query.push(" GROUP BY api_key_id, outcome ORDER BY api_key_id, outcome");
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(UsageSummaryRow {
                    api_key_id: row.try_get("api_key_id")?,
                    outcome: row.try_get("outcome")?,
                    requests: row.try_get("requests")?,
                    request_bytes: row.try_get("request_bytes")?,
                    response_bytes: row.try_get("response_bytes")?,
                })
            })
            .collect()
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

fn key_from_row(row: &SqliteRow) -> Result<ApiKey, StoreError> {
    let time = |column: &str| -> Result<Option<OffsetDateTime>, StoreError> {
        row.try_get::<Option<String>, _>(column)?
            .map(|text| parse_db_text(&text).map_err(StoreError::Corrupt))
            .transpose()
    };
    Ok(ApiKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        status: KeyStatus::parse(row.try_get::<&str, _>("status")?)?,
        created_at: time("created_at")?
            .ok_or_else(|| StoreError::Corrupt("api_keys.created_at is NULL".into()))?,
        revoked_at: time("revoked_at")?,
        expires_at: time("expires_at")?,
    })
}
