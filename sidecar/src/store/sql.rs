//! SQL both backends run, written once: the key registry's statements (the
//! same text in both dialects), and the usage ledger's insert, key check and
//! summary, built here with the dialect's few words passed in (how an insert
//! skips a duplicate, which integer type a sum is cast to). Times are bound
//! as each backend stores them, so the builders are generic over that type.

use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};
use tollgate_wire::UsageRecord;

use super::{SealedRow, StoreError, UsageSummaryRow};
use crate::sealed::SealedSecret;

/// The columns a key is read with, in the order `key_from_row` expects.
macro_rules! key_columns {
    () => {
        "id, name, prefix, status, created_at, revoked_at, expires_at, sealed_signing_secret, \
         limits_spec"
    };
}

/// Every key, oldest first.
pub const LIST_KEYS: &str = concat!("SELECT ", key_columns!(), " FROM api_keys ORDER BY id");

/// The key with a hash (the hot look-up), with the change feed's head in
/// the same snapshot (`feed_seq`); binds the lowercase hex hash. Always one
/// row: the key's columns are NULL when no key has the hash.
pub const KEY_BY_HASH: &str = concat!(
    "SELECT key_feed.head_seq AS feed_seq, ",
    key_columns!(),
    " FROM key_feed LEFT JOIN api_keys ON api_keys.key_hash = ? WHERE key_feed.shard = 1"
);

/// A key's hash by its id; binds the id.
pub const KEY_HASH_BY_ID: &str = "SELECT key_hash FROM api_keys WHERE id = ?";

/// The key with an id; binds the id.
pub const KEY_BY_ID: &str = concat!("SELECT ", key_columns!(), " FROM api_keys WHERE id = ?");

/// Registers an active key; binds name, prefix, hash, created_at,
/// expires_at, sealed_signing_secret, limits_spec.
pub const INSERT_KEY: &str = "INSERT INTO api_keys \
     (name, prefix, key_hash, status, created_at, expires_at, sealed_signing_secret, \
     limits_spec) VALUES (?, ?, ?, 'ACTIVE', ?, ?, ?, ?)";

/// Every key that has a sealed signing secret, by id; read each row with
/// [`sealed_row`].
pub const SEALED_SIGNING_SECRETS: &str = "SELECT id, key_hash, sealed_signing_secret \
     FROM api_keys WHERE sealed_signing_secret IS NOT NULL ORDER BY id";

/// Re-seals one key's secret if it is still the value read; binds the new
/// value, id, the old value. Affects no row when the value changed meanwhile.
pub const REPLACE_SEALED_SIGNING_SECRET: &str = "UPDATE api_keys SET sealed_signing_secret = ? \
     WHERE id = ? AND sealed_signing_secret = ?";

/// Revokes an active key; binds revoked_at, id. Affects no row when the key
/// is revoked already or does not exist.
pub const REVOKE_KEY: &str = "UPDATE api_keys SET status = 'REVOKED', revoked_at = ? \
     WHERE id = ? AND status = 'ACTIVE'";

/// The readiness check.
pub const PING: &str = "SELECT 1";

/// `SELECT id FROM api_keys WHERE id IN (...)`: which of `ids` name a key.
/// Bind at most [`INSERT_CHUNK_ROWS`](super::INSERT_CHUNK_ROWS) at a time.
pub fn known_key_ids<'a, DB>(ids: &'a [i64]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new("SELECT id FROM api_keys WHERE id IN (");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    query.push(")");
    query
}

/// The columns of a usage row, in the order [`insert_usage`] binds them.
pub const USAGE_COLUMNS: &str = "request_id, api_key_id, method, endpoint, status_code, \
     outcome, request_bytes, response_bytes, duration_ms, created_at";

/// `{verb} INTO usage_log (USAGE_COLUMNS) VALUES (...), ...`: one row per
/// (record, its creation time as the backend stores it). `verb` is the
/// dialect's insert (`INSERT IGNORE` on MySQL); a clause after the values
/// (SQLite's `ON CONFLICT`) is the caller's to push.
pub fn insert_usage<'a, DB, T>(verb: &str, rows: &'a [(&'a UsageRecord, T)]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    &'a T: Encode<'a, DB> + Type<DB>,
{
    let mut insert = QueryBuilder::new(format!("{verb} INTO usage_log ({USAGE_COLUMNS}) "));
    insert.push_values(rows, |mut row, (r, created_at)| {
        row.push_bind(r.request_id.as_str())
            .push_bind(r.api_key_id)
            .push_bind(r.method.as_str())
            .push_bind(r.endpoint.as_str())
            .push_bind(i64::from(r.status_code))
            .push_bind(r.outcome.as_str())
            .push_bind(to_i64(r.request_bytes))
            .push_bind(to_i64(r.response_bytes))
            .push_bind(to_i64(r.duration_ms))
            .push_bind(created_at);
    });
    insert
}

/// Requests and bytes per (key, outcome), ordered by key then outcome, of the
/// rows of `api_key_id` (all keys when `None`) created at or after `since`.
/// `int_type` is the dialect's 64-bit integer for the sums' cast (`SIGNED`,
/// `INTEGER`); read each row with [`summary_row`].
///
/// Each byte column is summed in two halves, its high and its low 32 bits,
/// which [`summary_row`] joins into an exact 128-bit total. A plain `SUM`
/// of the 64-bit column overflows with two rows near `i64::MAX` (SQLite
/// then fails the whole query; MySQL's `DECIMAL` sum cast back to 64 bits
/// clamps it). Ingestion now bounds each count
/// (`tollgate_wire::MAX_BODY_BYTES`, `MAX_RESPONSE_BYTES`), but rows stored
/// before it did may hold anything up to `i64::MAX`: a half is below 2^32,
/// so neither half's sum can overflow before a (key, outcome) pair has
/// 2^31 rows, whatever they hold.
pub fn usage_summary<'a, DB, T>(
    int_type: &str,
    api_key_id: Option<i64>,
    since: Option<T>,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
    T: 'a + Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new(format!(
        "SELECT api_key_id, outcome, COUNT(*) AS requests, \
         {request_bytes}, {response_bytes} \
         FROM usage_log WHERE 1 = 1",
        request_bytes = split_sum("request_bytes", int_type),
        response_bytes = split_sum("response_bytes", int_type),
    ));
    if let Some(id) = api_key_id {
        query.push(" AND api_key_id = ").push_bind(id);
    }
    if let Some(since) = since {
        query.push(" AND created_at >= ").push_bind(since);
    }
    query.push(" GROUP BY api_key_id, outcome ORDER BY api_key_id, outcome");
    query
}

/// `SUM` of a byte column's high and its low 32 bits, as the columns
/// `{column}_high` and `{column}_low`. The columns hold non-negative counts
/// (ingestion reads them as unsigned), so both dialects' shift and mask agree.
fn split_sum(column: &str, int_type: &str) -> String {
    format!(
        "CAST(COALESCE(SUM({column} >> 32), 0) AS {int_type}) AS {column}_high, \
         CAST(COALESCE(SUM({column} & 4294967295), 0) AS {int_type}) AS {column}_low"
    )
}

/// The exact total of a column whose halves [`split_sum`] summed; `None`
/// when it is negative, which no byte count is.
pub fn join_halves(high: i64, low: i64) -> Option<u128> {
    u128::try_from((i128::from(high) << 32) + i128::from(low)).ok()
}

/// One row of [`usage_summary`].
pub fn summary_row<R: Row>(row: &R) -> Result<UsageSummaryRow, StoreError>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    &'static str: ColumnIndex<R>,
{
    let total = |column: &str, high: i64, low: i64| {
        join_halves(high, low).ok_or_else(|| {
            StoreError::Corrupt(format!("usage_log.{column} sums to a negative byte count"))
        })
    };
    Ok(UsageSummaryRow {
        api_key_id: row.try_get("api_key_id")?,
        outcome: row.try_get("outcome")?,
        requests: row.try_get("requests")?,
        request_bytes: total(
            "request_bytes",
            row.try_get("request_bytes_high")?,
            row.try_get("request_bytes_low")?,
        )?,
        response_bytes: total(
            "response_bytes",
            row.try_get("response_bytes_high")?,
            row.try_get("response_bytes_low")?,
        )?,
    })
}

/// A text column of ASCII stored with a binary collation (`ascii_bin` on
/// MySQL, which sqlx reports as binary and will not decode as a `String`),
/// read as bytes on both backends.
pub fn ascii_column<R: Row>(row: &R, column: &'static str) -> Result<Option<String>, sqlx::Error>
where
    for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
    &'static str: ColumnIndex<R>,
{
    row.try_get::<Option<Vec<u8>>, _>(column)?
        .map(|bytes| {
            String::from_utf8(bytes).map_err(|_| sqlx::Error::ColumnDecode {
                index: column.into(),
                source: "not ASCII".into(),
            })
        })
        .transpose()
}

/// The sealed signing secret of a key row (`None` when the column is NULL).
pub fn sealed_signing_secret<R: Row>(row: &R) -> Result<Option<SealedSecret>, sqlx::Error>
where
    for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
    &'static str: ColumnIndex<R>,
{
    Ok(ascii_column(row, "sealed_signing_secret")?.map(SealedSecret::from_stored))
}

/// The limits of a key row (none when the column is NULL or empty).
pub fn key_limits<R: Row>(row: &R) -> Result<tollgate_wire::Limits, StoreError>
where
    for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
    &'static str: ColumnIndex<R>,
{
    match ascii_column(row, "limits_spec")? {
        None => Ok(tollgate_wire::Limits::default()),
        Some(spec) => tollgate_wire::Limits::parse_spec(&spec)
            .map_err(|e| StoreError::Corrupt(format!("api_keys.limits_spec: {e}"))),
    }
}

/// A key's limits as [`INSERT_KEY`] and the limits update bind them:
/// NULL for none.
pub fn limits_spec(limits: &tollgate_wire::Limits) -> Option<String> {
    (!limits.is_empty()).then(|| limits.to_spec())
}

/// One row of [`SEALED_SIGNING_SECRETS`].
pub fn sealed_row<R: Row>(row: &R) -> Result<SealedRow, sqlx::Error>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
    &'static str: ColumnIndex<R>,
{
    let missing = |column: &str| sqlx::Error::ColumnDecode {
        index: column.into(),
        source: "NULL where the query excludes NULL".into(),
    };
    Ok(SealedRow {
        id: row.try_get("id")?,
        key_hash: ascii_column(row, "key_hash")?.ok_or_else(|| missing("key_hash"))?,
        sealed: sealed_signing_secret(row)?.ok_or_else(|| missing("sealed_signing_secret"))?,
    })
}

/// Converts a validated counter (at most `i64::MAX`, see `UsageRecord::validate`).
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_join_into_the_exact_total() {
        let split = |x: i64| (x >> 32, x & 0xFFFF_FFFF);
        for x in [0, 1, 4_294_967_295, 4_294_967_296, 1 << 40, i64::MAX] {
            let (high, low) = split(x);
            assert_eq!(join_halves(high, low), Some(x as u128), "{x}");
        }
        // Two rows of i64::MAX: what a plain 64-bit SUM overflows on.
        let (high, low) = split(i64::MAX);
        assert_eq!(join_halves(2 * high, 2 * low), Some(2 * i64::MAX as u128));
        // The most a (key, outcome) pair's sums of halves can reach
        // (2^31 - 1 rows of i64::MAX) still joins exactly.
        let rows = i64::from(i32::MAX);
        assert_eq!(
            join_halves(rows * high, rows * low),
            Some(rows as u128 * i64::MAX as u128)
        );
        let (high, low) = split(-1);
        assert_eq!(join_halves(high, low), None);
    }
}
