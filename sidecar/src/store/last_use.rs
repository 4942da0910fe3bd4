//! When each key was last used: the newest usage row of every key, for the
//! console's key list.
//!
//! One correlated `MAX` per key, which both backends answer from the
//! `(api_key_id, created_at)` index without reading the ledger's rows, so it
//! stays cheap however long the ledger grows.

use sqlx::migrate::Migrate;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};
use time::OffsetDateTime;

use super::dialect::Dialect;
use super::{SqlStore, Store, StoreError};
use crate::domain::clock::parse_db_text;

/// Every key's id and the time of its newest usage row (NULL: never used),
/// as text in both dialects: MySQL's `DATETIME(3)` cast to text is the
/// fixed-width form SQLite stores (`crate::domain::clock::format_db_text`).
const LAST_USE: &str = "SELECT k.id, CAST((SELECT MAX(u.created_at) FROM usage_log u \
     WHERE u.api_key_id = k.id) AS CHAR) FROM api_keys k ORDER BY k.id";

/// A key's last use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastUse {
    pub api_key_id: i64,
    /// When its newest usage row was created; `None`: never used.
    pub at: Option<OffsetDateTime>,
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    DB::Connection: Migrate,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB> + Default,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> Option<DB::Time>: Encode<'q, DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    /// See [`Store::last_use`].
    pub async fn last_use(&self) -> Result<Vec<LastUse>, StoreError> {
        let rows: Vec<(i64, Option<String>)> =
            sqlx::query_as(LAST_USE).fetch_all(self.pool()).await?;
        rows.into_iter()
            .map(|(api_key_id, at)| {
                let at = at.as_deref().map(parse_db_text).transpose();
                Ok(LastUse {
                    api_key_id,
                    at: at.map_err(StoreError::Corrupt)?,
                })
            })
            .collect()
    }
}

impl Store {
    /// Every key's last use, by key id.
    pub async fn last_use(&self) -> Result<Vec<LastUse>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().last_use().await,
            Store::Sqlite(s) => s.sql().last_use().await,
        }
    }
}
