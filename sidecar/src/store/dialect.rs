//! What differs between the two backends, and nothing else: how a time is
//! stored, the few SQL words the dialects spell differently (skipping a
//! duplicate, adding to a stored row, deleting the oldest rows, the 64-bit
//! integer of a cast, a time's minute as text, a text compared byte for
//! byte), how the id of an inserted
//! row is read, which errors mean "try again", and the migrations.
//!
//! The statements and the transactions around them are written once, in
//! [`SqlStore`](super::SqlStore), over any `Database` that implements this
//! trait.

use sqlx::database::HasStatementCache;
use sqlx::migrate::Migrator;
use sqlx::mysql::MySqlQueryResult;
use sqlx::sqlite::SqliteQueryResult;
use sqlx::{Database, Encode, MySql, Row, Sqlite, Type};
use time::{OffsetDateTime, PrimitiveDateTime};

use super::sql::Upsert;
use super::StoreError;
use crate::domain::clock::{format_db_text, parse_db_text, to_primitive_utc};

pub(super) static MYSQL_MIGRATOR: Migrator = sqlx::migrate!("./migrations/mysql");
pub(super) static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// A backend's dialect: implemented for [`MySql`] and [`Sqlite`].
pub trait Dialect: Database + HasStatementCache {
    /// `mysql` or `sqlite`.
    const BACKEND: &'static str;

    /// A time as the backend stores it (`DATETIME(3)` in UTC; fixed-width
    /// UTC text, see [`format_db_text`]).
    type Time: for<'q> Encode<'q, Self> + Type<Self> + Send + Sync + 'static;

    /// `t` as the backend stores it.
    fn db_time(t: OffsetDateTime) -> Self::Time;

    /// A nullable time column of a row.
    fn time_column(row: &Self::Row, column: &str) -> Result<Option<OffsetDateTime>, StoreError>;

    /// The start and the end of an insert into `usage_log` that skips a
    /// `request_id` stored already, counting inserted rows only.
    const INSERT_USAGE: (&'static str, &'static str);

    /// How an upsert adds its incoming counters to a stored rollup row.
    const UPSERT: Upsert;

    /// The end of the insert of a limit counter row that leaves an existing
    /// row as it is.
    const NEW_COUNTER_ON_EXISTING: &'static str;

    /// The 64-bit integer type of a `CAST`.
    const INT_TYPE: &'static str;

    /// A time column's `YYYY-MM-DD HH:MM` text.
    fn minute_text(column: &str) -> String;

    /// A text column as an expression that compares and groups byte for
    /// byte, whatever the column's collation.
    fn exact_text(column: &str) -> String;

    /// Deletes at most `?2` rows of `table` whose `column` is below `?1`,
    /// the oldest first where the dialect can say so.
    fn delete_oldest(table: &str, column: &str) -> String;

    /// The id an `INSERT` gave its row.
    fn last_insert_id(done: &Self::QueryResult) -> Result<i64, StoreError>;

    /// The rows a statement changed (MySQL counts rows found, as sqlx
    /// connects with `CLIENT_FOUND_ROWS`).
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// Whether a statement failed as a deadlock's victim: its transaction
    /// was rolled back whole and may simply be tried again.
    fn is_deadlock(e: &sqlx::Error) -> bool;

    /// The backend's embedded migrations (`migrations/<backend>`).
    fn migrator() -> &'static Migrator;
}

impl Dialect for MySql {
    const BACKEND: &'static str = "mysql";

    type Time = PrimitiveDateTime;

    fn db_time(t: OffsetDateTime) -> PrimitiveDateTime {
        to_primitive_utc(t)
    }

    fn time_column(row: &Self::Row, column: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        let t: Option<PrimitiveDateTime> = row.try_get(column)?;
        Ok(t.map(PrimitiveDateTime::assume_utc))
    }

    // sqlx connects with CLIENT_FOUND_ROWS, so `ON DUPLICATE KEY UPDATE
    // request_id = request_id` would count a duplicate as affected.
    // `INSERT IGNORE` counts inserted rows only. IGNORE would also turn
    // other errors (overlong text, out-of-range values) into warnings,
    // which is why every record is validated against the column limits
    // before it gets here (`UsageRecord::validate`, `MAX_TIMESTAMP_MS`).
    const INSERT_USAGE: (&'static str, &'static str) = ("INSERT IGNORE", "");

    // (`VALUES(c)` is deprecated in MySQL 8.0.20 for a row alias, which
    // MariaDB does not take; both still run it.)
    const UPSERT: Upsert = Upsert {
        clause: "ON DUPLICATE KEY UPDATE",
        incoming: |c| format!("VALUES({c})"),
    };

    // Takes the row's exclusive lock at once: `INSERT IGNORE` would take a
    // shared lock, and two grants holding it both waiting for the exclusive
    // one deadlock.
    const NEW_COUNTER_ON_EXISTING: &'static str =
        "ON DUPLICATE KEY UPDATE window_end_ms = window_end_ms";

    const INT_TYPE: &'static str = "SIGNED";

    fn minute_text(column: &str) -> String {
        format!("DATE_FORMAT({column}, '%Y-%m-%d %H:%i')")
    }

    /// `usage_log.model` is utf8mb4_unicode_ci, which groups two models
    /// differing only in case or trailing spaces as one; its bytes do not.
    fn exact_text(column: &str) -> String {
        format!("CAST({column} AS BINARY)")
    }

    fn delete_oldest(table: &str, column: &str) -> String {
        format!("DELETE FROM {table} WHERE {column} < ? ORDER BY {column} LIMIT ?")
    }

    fn last_insert_id(done: &MySqlQueryResult) -> Result<i64, StoreError> {
        i64::try_from(done.last_insert_id())
            .map_err(|_| StoreError::Corrupt("an inserted row's id overflowed".into()))
    }

    fn rows_affected(done: &MySqlQueryResult) -> u64 {
        done.rows_affected()
    }

    /// MySQL error 1213, SQLSTATE 40001.
    fn is_deadlock(e: &sqlx::Error) -> bool {
        match e {
            sqlx::Error::Database(db) => db.code().as_deref() == Some("40001"),
            _ => false,
        }
    }

    fn migrator() -> &'static Migrator {
        &MYSQL_MIGRATOR
    }
}

impl Dialect for Sqlite {
    const BACKEND: &'static str = "sqlite";

    type Time = String;

    fn db_time(t: OffsetDateTime) -> String {
        format_db_text(t)
    }

    fn time_column(row: &Self::Row, column: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        let text: Option<String> = row.try_get(column)?;
        text.map(|text| parse_db_text(&text).map_err(StoreError::Corrupt))
            .transpose()
    }

    const INSERT_USAGE: (&'static str, &'static str) =
        ("INSERT", " ON CONFLICT(request_id) DO NOTHING");

    const UPSERT: Upsert = Upsert {
        clause: "ON CONFLICT (api_key_id, bucket_start, outcome, model) DO UPDATE SET",
        incoming: |c| format!("excluded.{c}"),
    };

    const NEW_COUNTER_ON_EXISTING: &'static str = "ON CONFLICT DO NOTHING";

    const INT_TYPE: &'static str = "INTEGER";

    /// Times are fixed-width text.
    fn minute_text(column: &str) -> String {
        format!("substr({column}, 1, 16)")
    }

    /// Text compares byte for byte unless told otherwise (`BINARY`).
    fn exact_text(column: &str) -> String {
        column.to_owned()
    }

    /// SQLite takes no `ORDER BY` or `LIMIT` on a `DELETE` (unless built
    /// with an option): the rows are picked by `rowid`.
    fn delete_oldest(table: &str, column: &str) -> String {
        format!(
            "DELETE FROM {table} WHERE rowid IN \
             (SELECT rowid FROM {table} WHERE {column} < ? LIMIT ?)"
        )
    }

    fn last_insert_id(done: &SqliteQueryResult) -> Result<i64, StoreError> {
        Ok(done.last_insert_rowid())
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    /// SQLite has one writer at a time and waits for the file lock
    /// (`BUSY_TIMEOUT`) rather than picking a victim.
    fn is_deadlock(_: &sqlx::Error) -> bool {
        false
    }

    fn migrator() -> &'static Migrator {
        &SQLITE_MIGRATOR
    }
}
