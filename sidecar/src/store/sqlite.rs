//! SQLite backend of the [`Store`](super::Store), the embedded default: its
//! pool on a file. The statements are [`SqlStore`]'s, with the SQLite
//! [`Dialect`](super::Dialect).
//!
//! The file runs in WAL mode (readers never wait for the writer) with a busy
//! timeout (writers queue instead of failing) and `synchronous = FULL` (a batch
//! is acknowledged only once it is on disk). Times are fixed-width UTC text,
//! see [`crate::domain::clock::format_db_text`]; migrations live in `migrations/sqlite`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Sqlite;

use super::{SqlStore, StoreError};

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
    sql: SqlStore<Sqlite>,
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
            sql: SqlStore::new(pool),
            path: path.to_path_buf(),
        })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &SqlitePool {
        self.sql.pool()
    }

    /// The store's operations on this backend.
    pub fn sql(&self) -> &SqlStore<Sqlite> {
        &self.sql
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
