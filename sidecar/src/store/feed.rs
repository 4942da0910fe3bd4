//! The key change feed and the fleet's `jti` claims in the database: the
//! statements (the same text on both backends: integer times, no dialect)
//! and the [`Store`] calls on them.
//!
//! A change takes its position from the one `key_feed` row, updated in the
//! key's own transaction (`SqlStore::publish_change`): the row lock orders
//! positions as the commits are ordered, so a reader that sees
//! `head_seq = n` sees every change up to `n`, and a verdict read together
//! with the head (`sql::KEY_BY_HASH` joins it) reflects every change up to
//! the head it names.

use sqlx::migrate::Migrate;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::dialect::Dialect;
use super::{SqlStore, Store, StoreError};

/// Takes the next position; run inside the change's transaction.
pub const ADVANCE_HEAD: &str = "UPDATE key_feed SET head_seq = head_seq + 1 WHERE shard = 1";

/// The head and how far changes were purged.
pub const HEAD: &str = "SELECT head_seq, purged_through FROM key_feed WHERE shard = 1";

/// Records a change; binds seq, key_hash, kind, created_ms.
pub const INSERT_CHANGE: &str =
    "INSERT INTO key_changes (seq, key_hash, kind, created_ms) VALUES (?, ?, ?, ?)";

/// The changes after a position, oldest first; binds after, limit.
pub const CHANGES_AFTER: &str =
    "SELECT seq, key_hash, kind FROM key_changes WHERE seq > ? ORDER BY seq LIMIT ?";

/// The newest position among the oldest changes created before an instant;
/// binds created_ms, limit. A purge deletes up to it.
pub const PURGE_UP_TO: &str = "SELECT MAX(seq) AS seq FROM \
     (SELECT seq FROM key_changes WHERE created_ms < ? ORDER BY seq LIMIT ?) AS oldest";

/// Deletes the changes up to a position; binds seq.
pub const DELETE_CHANGES: &str = "DELETE FROM key_changes WHERE seq <= ?";

/// Records how far changes were purged; binds seq twice.
pub const MARK_PURGED: &str =
    "UPDATE key_feed SET purged_through = ? WHERE shard = 1 AND purged_through < ?";

/// Claims a `jti`; binds fingerprint, key id, expires_at. A duplicate
/// fingerprint is a unique violation.
pub const INSERT_CLAIM: &str =
    "INSERT INTO jti_claims (fingerprint, api_key_id, expires_at) VALUES (?, ?, ?)";

/// Takes over a claim whose token can no longer be accepted (not purged
/// yet); binds key id, expires_at, fingerprint, now. Affects no row when
/// the stored claim is still live.
pub const RENEW_EXPIRED_CLAIM: &str = "UPDATE jti_claims SET api_key_id = ?, expires_at = ? \
     WHERE fingerprint = ? AND expires_at < ?";

/// Changes one purge deletes at most, and claims one purge statement
/// deletes at most: the database is never asked for a long delete.
pub const PURGE_BATCH: i64 = 1000;

/// The kind of change a new key makes: a cached `not_found` for its hash
/// is evicted.
pub const CHANGE_CREATED: &str = "created";

/// The kind of change a revocation makes.
pub const CHANGE_REVOKED: &str = "revoked";

/// An instant as the feed stores it: milliseconds since the Unix epoch.
pub fn unix_ms(at: time::OffsetDateTime) -> i64 {
    i64::try_from(crate::domain::clock::to_unix_ms(at)).unwrap_or(i64::MAX)
}

/// One stored change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChange {
    pub seq: u64,
    pub key_hash: String,
    pub kind: String,
}

/// The head of the feed and the changes after a position, read in one
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPage {
    pub head: u64,
    pub purged_through: u64,
    pub changes: Vec<StoredChange>,
}

/// A feed position as stored (never negative).
fn position(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} is negative")))
}

/// An ASCII column that is never NULL (MySQL reports binary-collated
/// text as bytes, so it is read as bytes on both backends).
fn text<R: Row>(row: &R, column: &'static str) -> Result<String, StoreError>
where
    for<'r> Option<Vec<u8>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    super::sql::text_column(row, column)?
        .ok_or_else(|| StoreError::Corrupt(format!("key_changes.{column} is NULL")))
}

/// A position bound as a column value.
fn bound(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
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
    /// The head and up to `limit` changes after `after`, in one snapshot.
    pub async fn feed_page(&self, after: u64, limit: usize) -> Result<FeedPage, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut tx = self.pool().begin().await?;
        let head = sqlx::query(HEAD).fetch_one(&mut *tx).await?;
        let rows = sqlx::query(CHANGES_AFTER)
            .bind(bound(after))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let changes = rows
            .iter()
            .map(|row| {
                Ok(StoredChange {
                    seq: position(row.try_get("seq")?, "key_changes.seq")?,
                    key_hash: text(row, "key_hash")?,
                    kind: text(row, "kind")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(FeedPage {
            head: position(head.try_get("head_seq")?, "key_feed.head_seq")?,
            purged_through: position(head.try_get("purged_through")?, "key_feed.purged_through")?,
            changes,
        })
    }

    /// Deletes up to [`PURGE_BATCH`] of the oldest changes created before
    /// `before_ms` and says how many went; readers standing before them are
    /// told to reset.
    pub async fn purge_changes(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool().begin().await?;
        let upto = sqlx::query(PURGE_UP_TO)
            .bind(before_ms)
            .bind(PURGE_BATCH)
            .fetch_one(&mut *tx)
            .await?;
        let Some(upto) = upto.try_get::<Option<i64>, _>("seq")? else {
            tx.rollback().await?;
            return Ok(0);
        };
        sqlx::query(MARK_PURGED)
            .bind(upto)
            .bind(upto)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query(DELETE_CHANGES)
            .bind(upto)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DB::rows_affected(&deleted))
    }

    /// Claims a `jti` fingerprint for key `key_id` until `expires_at`
    /// (seconds): true when it is this claim's, false when a live claim
    /// holds it (a replay).
    pub async fn claim_jti(
        &self,
        fingerprint: &str,
        key_id: i64,
        expires_at: i64,
        now_s: i64,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(INSERT_CLAIM)
            .bind(fingerprint)
            .bind(key_id)
            .bind(expires_at)
            .execute(self.pool())
            .await;
        match inserted.map_err(StoreError::from) {
            Ok(_) => Ok(true),
            Err(StoreError::Duplicate) => {
                let renewed = sqlx::query(RENEW_EXPIRED_CLAIM)
                    .bind(key_id)
                    .bind(expires_at)
                    .bind(fingerprint)
                    .bind(now_s)
                    .execute(self.pool())
                    .await?;
                Ok(DB::rows_affected(&renewed) == 1)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes up to [`PURGE_BATCH`] claims whose tokens expired before
    /// `now_s` and says how many went.
    pub async fn purge_claims(&self, now_s: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(&DB::delete_oldest("jti_claims", "expires_at"))
            .bind(now_s)
            .bind(PURGE_BATCH)
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done))
    }
}

impl Store {
    /// The head and up to `limit` changes after `after`, in one snapshot.
    pub async fn feed_page(&self, after: u64, limit: usize) -> Result<FeedPage, StoreError> {
        match self {
            Store::MySql(s) => s.sql().feed_page(after, limit).await,
            Store::Sqlite(s) => s.sql().feed_page(after, limit).await,
        }
    }

    /// Deletes up to [`PURGE_BATCH`] of the oldest changes created before
    /// `before_ms` and says how many went; readers standing before them are
    /// told to reset.
    pub async fn purge_changes(&self, before_ms: i64) -> Result<u64, StoreError> {
        match self {
            Store::MySql(s) => s.sql().purge_changes(before_ms).await,
            Store::Sqlite(s) => s.sql().purge_changes(before_ms).await,
        }
    }

    /// Claims a `jti` fingerprint for key `key_id` until `expires_at`
    /// (seconds): true when it is this claim's, false when a live claim
    /// holds it (a replay).
    pub async fn claim_jti(
        &self,
        fingerprint: &str,
        key_id: i64,
        expires_at: i64,
        now_s: i64,
    ) -> Result<bool, StoreError> {
        match self {
            Store::MySql(s) => {
                s.sql()
                    .claim_jti(fingerprint, key_id, expires_at, now_s)
                    .await
            }
            Store::Sqlite(s) => {
                s.sql()
                    .claim_jti(fingerprint, key_id, expires_at, now_s)
                    .await
            }
        }
    }

    /// Deletes up to [`PURGE_BATCH`] claims whose tokens expired before
    /// `now_s` and says how many went.
    pub async fn purge_claims(&self, now_s: i64) -> Result<u64, StoreError> {
        match self {
            Store::MySql(s) => s.sql().purge_claims(now_s).await,
            Store::Sqlite(s) => s.sql().purge_claims(now_s).await,
        }
    }
}
