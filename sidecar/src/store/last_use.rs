//! When each key was last used: the newest usage row of every key, for the
//! console's key list.
//!
//! One correlated `MAX` per key, which both backends answer from the
//! `(api_key_id, created_at)` index without reading the ledger's rows, so it
//! stays cheap however long the ledger grows.

use sqlx::Row;
use time::{OffsetDateTime, PrimitiveDateTime};

use super::{Store, StoreError};
use crate::clock::parse_db_text;

/// Every key's id and the time of its newest usage row (NULL: never used).
const LAST_USE: &str = "SELECT k.id AS id, \
     (SELECT MAX(u.created_at) FROM usage_log u WHERE u.api_key_id = k.id) AS last_used_at \
     FROM api_keys k ORDER BY k.id";

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
        match self {
            Store::MySql(s) => {
                let rows = sqlx::query(LAST_USE).fetch_all(s.pool()).await?;
                rows.iter()
                    .map(|row| {
                        let at: Option<PrimitiveDateTime> = row.try_get("last_used_at")?;
                        Ok(LastUse {
                            api_key_id: row.try_get("id")?,
                            at: at.map(PrimitiveDateTime::assume_utc),
                        })
                    })
                    .collect()
            }
            Store::Sqlite(s) => {
                let rows = sqlx::query(LAST_USE).fetch_all(s.pool()).await?;
                rows.iter()
                    .map(|row| {
                        let at: Option<String> = row.try_get("last_used_at")?;
                        Ok(LastUse {
                            api_key_id: row.try_get("id")?,
                            at: at
                                .as_deref()
                                .map(parse_db_text)
                                .transpose()
                                .map_err(StoreError::Corrupt)?,
                        })
                    })
                    .collect()
            }
        }
    }
}
