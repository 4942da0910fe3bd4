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
use sqlx::{Row, Sqlite};
use time::OffsetDateTime;
use tollgate_wire::UsageRecord;

use super::feed::{unix_ms, CHANGE_CREATED, CHANGE_REVOKED};
use super::rollup::{self, Grain};
use super::{
    migrator_up_to, record_time, rollup_table, sql, summary_parts, ApiKey, InsertRows, KeyLookup,
    KeyStatus, NewKey, Revocation, SeriesRow, StoreError, SummaryFilter, UsageSummaryRow,
    INSERT_CHUNK_ROWS,
};
use crate::clock::{format_db_text, parse_db_text};
use crate::publish_change;
use crate::sealed::SealedSecret;

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How SQLite adds an upsert's counters to the stored rollup row.
const UPSERT: sql::Upsert = sql::Upsert {
    clause: "ON CONFLICT (api_key_id, bucket_start, outcome) DO UPDATE SET",
    incoming: |c| format!("excluded.{c}"),
};

/// A time column's `YYYY-MM-DD HH:MM` text (times are fixed-width text).
fn minute_text(column: &str) -> String {
    format!("substr({column}, 1, 16)")
}

/// Connections the pool keeps at most; SQLite has one writer at a time anyway.
pub const MAX_CONNECTIONS: u32 = 4;

/// SQLite's page cache per connection, in KiB (its own default, made
/// explicit): with [`MAX_CONNECTIONS`], the sidecar's SQLite caches hold at
/// most 8 MiB, the part of its memory that grows with the database until
/// they are full (`make soak` watches it).
pub const PAGE_CACHE_KIB: u32 = 2048;

/// How long a writer waits for the file lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
            .pragma("cache_size", format!("-{PAGE_CACHE_KIB}"))
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
        sqlx::query(sql::PING).execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(sql::LIST_KEYS).fetch_all(&self.pool).await?;
        rows.iter().map(key_from_row).collect()
    }

    pub(super) async fn key_by_hash(&self, key_hash: &str) -> Result<KeyLookup, StoreError> {
        let row = sqlx::query(sql::KEY_BY_HASH)
            .bind(key_hash)
            .fetch_one(&self.pool)
            .await?;
        super::key_lookup_from_row!(&row, key_from_row)
    }

    pub(super) async fn insert_key(&self, key: &NewKey) -> Result<ApiKey, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(sql::INSERT_KEY)
            .bind(&key.name)
            .bind(&key.prefix)
            .bind(&key.key_hash)
            .bind(format_db_text(key.created_at))
            .bind(key.expires_at.map(format_db_text))
            .bind(key.sealed_signing_secret.as_ref().map(SealedSecret::as_str))
            .bind(sql::limits_spec(&key.limits))
            .execute(&mut *tx)
            .await?;
        publish_change!(tx, &key.key_hash, CHANGE_CREATED, unix_ms(key.created_at));
        tx.commit().await?;
        Ok(key.registered(done.last_insert_rowid()))
    }

    pub(super) async fn revoke_key(
        &self,
        id: i64,
        at: OffsetDateTime,
    ) -> Result<Revocation, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(sql::REVOKE_KEY)
            .bind(format_db_text(at))
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
        let mut query = sql::known_key_ids::<Sqlite>(ids);
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
        let rows = records
            .iter()
            .map(|r| record_time(r).map(|t| (*r, format_db_text(t))))
            .collect::<Result<Vec<_>, _>>()?;
        // The first statement writes, so the transaction holds SQLite's one
        // write lock from its start: batches are stored one after another.
        let mut tx = self.pool.begin().await?;
        let mut ours: Vec<&UsageRecord> = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(how.rows_per_statement()) {
            let mut insert = sql::insert_usage::<Sqlite, _>("INSERT", chunk);
            // Rows whose request_id is stored already are skipped and not
            // counted in rows_affected.
            insert.push(" ON CONFLICT(request_id) DO NOTHING");
            // One statement per batch size: not kept in the connection's
            // statement cache, which would hold up to 100 of them per
            // connection (found by `make soak`: the sidecar's memory grew
            // by megabytes a minute).
            let insert = insert.build().persistent(false);
            let inserted = insert.execute(&mut *tx).await?.rows_affected();
            if !how.keep(&mut ours, chunk, inserted) {
                // Some of these were stored meanwhile: the caller looks them
                // up and inserts the others row by row.
                tx.rollback().await?;
                return Ok(None);
            }
        }
        for grain in Grain::KEPT {
            let deltas = rollup::deltas(ours.iter().copied(), grain);
            let rows: Vec<_> = deltas
                .iter()
                .map(|d| (d, format_db_text(d.bucket_start)))
                .collect();
            for chunk in rows.chunks(INSERT_CHUNK_ROWS) {
                let mut upsert =
                    sql::upsert_rollups::<Sqlite, _>(rollup_table(grain), &UPSERT, chunk);
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
            .map(|p| p.map(format_db_text))
            .collect();
        let mut query = sql::usage_summary::<Sqlite, _>("INTEGER", filter.api_key_id, parts);
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
        let (from, to) = (format_db_text(from), format_db_text(to));
        let mut query = match grain.table() {
            None => sql::minute_series::<Sqlite, _>("INTEGER", minute_text, api_key_id, from, to),
            Some(table) => {
                sql::rollup_series::<Sqlite, _>(table, minute_text, api_key_id, from, to)
            }
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
        let mut query = sql::prunable_ids::<Sqlite, _>(format_db_text(before), limit);
        let ids: Vec<i64> = query.build_query_scalar().fetch_all(&self.pool).await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let mut delete = sql::delete_usage_ids::<Sqlite>(&ids);
        let done = delete.build().persistent(false).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn migrate_up_to(&self, version: i64) -> Result<(), StoreError> {
        migrator_up_to(&MIGRATOR, version).run(&self.pool).await?;
        Ok(())
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
        sealed_signing_secret: sql::sealed_signing_secret(row)?,
        limits: sql::key_limits(row)?,
    })
}
