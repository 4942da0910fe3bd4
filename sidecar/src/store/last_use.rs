//! When each key was last used: the newest usage row of every key, for the
//! console's key list.
//!
//! One correlated `MAX` per key, which both backends answer from the
//! `(api_key_id, created_at)` index without reading the ledger's rows, so it
//! stays cheap however long the ledger grows.

use time::OffsetDateTime;

use super::{Store, StoreError};
use crate::clock::parse_db_text;

/// Every key's id and the time of its newest usage row (NULL: never used),
/// as text in both dialects: MySQL's `DATETIME(3)` cast to text is the
/// fixed-width form SQLite stores (`crate::clock::format_db_text`).
const LAST_USE: &str = "SELECT k.id, CAST((SELECT MAX(u.created_at) FROM usage_log u \
     WHERE u.api_key_id = k.id) AS CHAR) FROM api_keys k ORDER BY k.id";

/// A key's last use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastUse {
    pub api_key_id: i64,
    /// When its newest usage row was created; `None`: never used.
    pub at: Option<OffsetDateTime>,
}

impl Store {
    /// Every key's last use, by key id.
    pub async fn last_use(&self) -> Result<Vec<LastUse>, StoreError> {
        let rows: Vec<(i64, Option<String>)> = match self {
            Store::MySql(s) => sqlx::query_as(LAST_USE).fetch_all(s.pool()).await?,
            Store::Sqlite(s) => sqlx::query_as(LAST_USE).fetch_all(s.pool()).await?,
        };
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
