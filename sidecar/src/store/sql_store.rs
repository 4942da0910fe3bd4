//! The store's one implementation: every operation over a pool of any
//! backend whose [`Dialect`] says what differs. This file holds the key
//! registry; the ledger, limits, feed and last use add theirs in their own
//! files, each an `impl` of [`SqlStore`] under the same bounds.
//!
//! The bounds are what the statements need of a sqlx driver (run on a
//! connection or a pool, bind and read integers, text and bytes, apply
//! migrations); both MySQL and SQLite meet them.

use sqlx::migrate::Migrate;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Transaction, Type,
};
use time::OffsetDateTime;

use super::dialect::Dialect;
use super::feed::{unix_ms, ADVANCE_HEAD, CHANGE_CREATED, CHANGE_REVOKED, HEAD, INSERT_CHANGE};
use super::{
    migrator_up_to, sql, ApiKey, KeyLookup, KeyStatus, NewKey, Revocation, SealedRow, StoreError,
};
use crate::domain::sealed::SealedSecret;

/// A pool on one backend's database.
pub struct SqlStore<DB: Database> {
    pool: Pool<DB>,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
        }
    }
}

impl<DB: Database> std::fmt::Debug for SqlStore<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("pool", &self.pool)
            .finish()
    }
}

impl<DB: Database> SqlStore<DB> {
    /// The store over `pool`.
    pub fn new(pool: Pool<DB>) -> Self {
        SqlStore { pool }
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
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
    /// Applies the backend's embedded migrations that are not applied yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        DB::migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Applies the backend's migrations up to `version` only.
    pub async fn migrate_up_to(&self, version: i64) -> Result<(), StoreError> {
        migrator_up_to(DB::migrator(), version)
            .run(&self.pool)
            .await?;
        Ok(())
    }

    /// Runs `SELECT 1`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query(sql::PING).execute(&self.pool).await?;
        Ok(())
    }

    /// Registers a key and publishes its `created` change, in one transaction.
    pub async fn insert_key(&self, key: &NewKey) -> Result<ApiKey, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(sql::INSERT_KEY)
            .bind(&key.name)
            .bind(&key.prefix)
            .bind(&key.key_hash)
            .bind(DB::db_time(key.created_at))
            .bind(key.expires_at.map(DB::db_time))
            .bind(key.sealed_signing_secret.as_ref().map(SealedSecret::as_str))
            .bind(sql::limits_spec(&key.limits))
            .bind(sql::team_id_bound(key.team_id))
            .execute(&mut *tx)
            .await?;
        let id = DB::last_insert_id(&done)?;
        Self::publish_change(
            &mut tx,
            &key.key_hash,
            CHANGE_CREATED,
            unix_ms(key.created_at),
        )
        .await?;
        tx.commit().await?;
        Ok(key.registered(id))
    }

    /// Every key, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(sql::LIST_KEYS).fetch_all(&self.pool).await?;
        rows.iter().map(Self::key_from_row).collect()
    }

    /// The key with this hash, if any, and the feed's head, read on `conn`
    /// (the pool, or a connection kept for look-ups).
    pub async fn key_lookup<'e, E>(conn: E, key_hash: &str) -> Result<KeyLookup, StoreError>
    where
        E: Executor<'e, Database = DB>,
    {
        let row = sqlx::query(sql::KEY_BY_HASH)
            .bind(key_hash)
            .fetch_one(conn)
            .await?;
        // The key's columns are NULL when no key has the hash.
        let feed_seq: i64 = row.try_get("feed_seq")?;
        let id: Option<i64> = row.try_get("id")?;
        let key = match id {
            Some(_) => Some(Self::key_from_row(&row)?),
            None => None,
        };
        let team_limits = sql::limits_column(&row, "team_limits_spec")?;
        KeyLookup::new(feed_seq, key, team_limits)
    }

    /// The key with this hash through the pool.
    pub async fn key_by_hash(&self, key_hash: &str) -> Result<KeyLookup, StoreError> {
        Self::key_lookup(&self.pool, key_hash).await
    }

    /// The key with this id, if any.
    pub async fn key_by_id(&self, id: i64) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(sql::KEY_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::key_from_row).transpose()
    }

    /// Revokes a key, stamping `revoked_at` with `at`, and publishes its
    /// `revoked` change in the same transaction.
    pub async fn revoke_key(&self, id: i64, at: OffsetDateTime) -> Result<Revocation, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(sql::REVOKE_KEY)
            .bind(DB::db_time(at))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let revoked = DB::rows_affected(&done) == 1;
        if revoked {
            let hash = Self::key_hash_by_id(&mut tx, id).await?;
            Self::publish_change(&mut tx, &hash, CHANGE_REVOKED, unix_ms(at)).await?;
        }
        let row = sqlx::query(sql::KEY_BY_ID)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        let key = row.as_ref().map(Self::key_from_row).transpose()?;
        Ok(Revocation::after_update(key, u64::from(revoked)))
    }

    /// Every stored signing secret with its row, by id.
    pub async fn sealed_signing_secrets(&self) -> Result<Vec<SealedRow>, StoreError> {
        let rows = sqlx::query(sql::SEALED_SIGNING_SECRETS)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(sql::sealed_row).collect::<Result<_, _>>()?)
    }

    /// Replaces key `id`'s sealed signing secret with `new` if it still is
    /// `old`; false when it changed meanwhile (or the key is gone).
    pub async fn replace_sealed_signing_secret(
        &self,
        id: i64,
        old: &SealedSecret,
        new: &SealedSecret,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::REPLACE_SEALED_SIGNING_SECRET)
            .bind(new.as_str())
            .bind(id)
            .bind(old.as_str())
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// Gives a key's change the next feed position, inside the transaction
    /// `tx` that makes the change, and returns the position.
    pub(super) async fn publish_change(
        tx: &mut Transaction<'static, DB>,
        key_hash: &str,
        kind: &str,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        sqlx::query(ADVANCE_HEAD).execute(&mut **tx).await?;
        let head = sqlx::query(HEAD).fetch_one(&mut **tx).await?;
        let seq: i64 = head.try_get("head_seq")?;
        sqlx::query(INSERT_CHANGE)
            .bind(seq)
            .bind(key_hash)
            .bind(kind)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
        Ok(seq)
    }

    /// A key's hash by its id, in `tx`.
    pub(super) async fn key_hash_by_id(
        tx: &mut Transaction<'static, DB>,
        id: i64,
    ) -> Result<String, StoreError> {
        let row = sqlx::query(sql::KEY_HASH_BY_ID)
            .bind(id)
            .fetch_one(&mut **tx)
            .await?;
        sql::text_column(&row, "key_hash")?
            .ok_or_else(|| StoreError::Corrupt("api_keys.key_hash is NULL".into()))
    }

    fn key_from_row(row: &DB::Row) -> Result<ApiKey, StoreError> {
        let status: String = row.try_get("status")?;
        Ok(ApiKey {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            prefix: row.try_get("prefix")?,
            status: KeyStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("api_keys.status holds {status:?}")))?,
            created_at: DB::time_column(row, "created_at")?
                .ok_or_else(|| StoreError::Corrupt("api_keys.created_at is NULL".into()))?,
            revoked_at: DB::time_column(row, "revoked_at")?,
            expires_at: DB::time_column(row, "expires_at")?,
            sealed_signing_secret: sql::sealed_signing_secret(row)?,
            limits: sql::key_limits(row)?,
            team_id: row.try_get("team_id")?,
        })
    }
}
