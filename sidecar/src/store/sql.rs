//! SQL both backends run, written once: the key registry's statements (the
//! same text in both dialects), and the usage ledger's insert, key check,
//! rollup upserts, summary, series and prune, built here with the dialect's few words passed in (how an insert
//! skips a duplicate, which integer type a sum is cast to). Times are bound
//! as each backend stores them, so the builders are generic over that type.

use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};
use tollgate_wire::UsageRecord;

use super::rollup::{Grain, Halves, RollupDelta};
use super::{SealedRow, SeriesRow, StoreError, UsageSummaryRow};
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
     outcome, request_bytes, response_bytes, units, duration_ms, created_at";

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
            .push_bind(to_i64(r.units))
            .push_bind(to_i64(r.duration_ms))
            .push_bind(created_at);
    });
    insert
}

/// The columns of a rollup row, in the order [`upsert_rollups`] binds them.
pub const ROLLUP_COLUMNS: &str = "api_key_id, bucket_start, outcome, requests, \
     request_bytes_high, request_bytes_low, response_bytes_high, response_bytes_low, \
     units_high, units_low";

/// The counters of a rollup row, which an upsert adds to.
const ROLLUP_COUNTERS: [&str; 7] = [
    "requests",
    "request_bytes_high",
    "request_bytes_low",
    "response_bytes_high",
    "response_bytes_low",
    "units_high",
    "units_low",
];

/// How a dialect adds an upsert's incoming counters to the stored row: the
/// clause after the values (`ON DUPLICATE KEY UPDATE`, SQLite's
/// `ON CONFLICT (...) DO UPDATE SET`) and how it names an incoming value
/// (`VALUES(c)`, `excluded.c`).
pub struct Upsert {
    pub clause: &'static str,
    pub incoming: fn(&str) -> String,
}

/// `INSERT INTO {table} (ROLLUP_COLUMNS) VALUES (...), ... {clause} c = c + new, ...`:
/// adds each (delta, its bucket start as the backend stores it) to its row,
/// creating the row when it is the bucket's first.
pub fn upsert_rollups<'a, DB, T>(
    table: &str,
    upsert: &Upsert,
    rows: &'a [(&'a RollupDelta, T)],
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    &'a T: Encode<'a, DB> + Type<DB>,
{
    let mut insert = QueryBuilder::new(format!("INSERT INTO {table} ({ROLLUP_COLUMNS}) "));
    insert.push_values(rows, |mut row, (d, bucket_start)| {
        row.push_bind(d.api_key_id)
            .push_bind(bucket_start)
            .push_bind(d.outcome)
            .push_bind(d.requests)
            .push_bind(d.request_bytes.high)
            .push_bind(d.request_bytes.low)
            .push_bind(d.response_bytes.high)
            .push_bind(d.response_bytes.low)
            .push_bind(d.units.high)
            .push_bind(d.units.low);
    });
    let sets: Vec<String> = ROLLUP_COUNTERS
        .iter()
        .map(|c| format!("{c} = {c} + {}", (upsert.incoming)(c)))
        .collect();
    insert.push(format!(" {} {}", upsert.clause, sets.join(", ")));
    insert
}

/// `SELECT request_id FROM usage_log WHERE request_id IN (...)`: which of a
/// batch's ids are stored already. Bind at most
/// [`INSERT_CHUNK_ROWS`](super::INSERT_CHUNK_ROWS) at a time.
pub fn stored_request_ids<'a, DB>(ids: &'a [&'a str]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    &'a str: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new("SELECT request_id FROM usage_log WHERE request_id IN (");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    query.push(")");
    query
}

/// One part of what a summary reads: the rollup rows of `grain` (hourly or
/// daily) whose bucket starts in `[from, to)`, open where `None` (`T` is a
/// time as the backend stores it).
pub struct SummaryPart<T> {
    pub grain: Grain,
    pub from: Option<T>,
    pub to: Option<T>,
}

impl<T> SummaryPart<T> {
    /// The same part with its times converted.
    pub fn map<U>(self, f: impl Fn(T) -> U) -> SummaryPart<U> {
        SummaryPart {
            grain: self.grain,
            from: self.from.map(&f),
            to: self.to.map(&f),
        }
    }
}

/// Requests, bytes and units per (key, outcome), ordered by key then outcome, of
/// `api_key_id` (all keys when `None`) over `parts` (disjoint), read from
/// the rollups. `int_type` is the dialect's 64-bit integer for the sums'
/// cast (`SIGNED`, `INTEGER`); read each row with [`summary_row`].
///
/// Byte and unit columns are the rollups' sums of high and low 32 bits (see
/// [`Halves`]), summed again here and joined by [`summary_row`] into exact
/// 128-bit totals: rows stored before ingestion bounded the counts may hold
/// anything up to `i64::MAX`, and a half is below 2^32, so neither half's
/// sum can overflow before a (key, outcome) pair has 2^31 rows.
pub fn usage_summary<'a, DB, T>(
    int_type: &str,
    api_key_id: Option<i64>,
    parts: Vec<SummaryPart<T>>,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
    T: 'a + Encode<'a, DB> + Type<DB>,
{
    let sums: Vec<String> = ROLLUP_COUNTERS
        .iter()
        .map(|c| format!("CAST(COALESCE(SUM({c}), 0) AS {int_type}) AS {c}"))
        .collect();
    let mut query = QueryBuilder::new(format!(
        "SELECT api_key_id, outcome, {} FROM (",
        sums.join(", ")
    ));
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            query.push(" UNION ALL ");
        }
        let table = part.grain.table().unwrap_or("usage_hourly");
        query.push(format!(
            "SELECT api_key_id, outcome, {} FROM {table} WHERE 1 = 1",
            ROLLUP_COUNTERS.join(", ")
        ));
        if let Some(id) = api_key_id {
            query.push(" AND api_key_id = ").push_bind(id);
        }
        if let Some(from) = part.from {
            query.push(" AND bucket_start >= ").push_bind(from);
        }
        if let Some(to) = part.to {
            query.push(" AND bucket_start < ").push_bind(to);
        }
    }
    query.push(") AS buckets GROUP BY api_key_id, outcome ORDER BY api_key_id, outcome");
    query
}

/// `SUM` of a counted column's high and its low 32 bits, as the columns
/// `{column}_high` and `{column}_low`. The columns hold non-negative counts
/// (ingestion reads them as unsigned), so both dialects' shift and mask agree.
fn split_sum(column: &str, int_type: &str) -> String {
    format!(
        "CAST(COALESCE(SUM({column} >> 32), 0) AS {int_type}) AS {column}_high, \
         CAST(COALESCE(SUM({column} & 4294967295), 0) AS {int_type}) AS {column}_low"
    )
}

/// One key's usage per minute, per outcome, in `[from, to)`, read from
/// `usage_log` through its (api_key_id, created_at) index. `minute` is the
/// dialect's expression for a time column's `YYYY-MM-DD HH:MM` text; read
/// each row with [`series_row`].
pub fn minute_series<'a, DB, T>(
    int_type: &str,
    minute: fn(&str) -> String,
    api_key_id: i64,
    from: T,
    to: T,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
    T: 'a + Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new(format!(
        "SELECT {bucket} AS bucket, outcome, CAST(COUNT(*) AS {int_type}) AS requests, \
         {request_bytes}, {response_bytes}, {units} FROM usage_log WHERE api_key_id = ",
        bucket = minute("created_at"),
        request_bytes = split_sum("request_bytes", int_type),
        response_bytes = split_sum("response_bytes", int_type),
        units = split_sum("units", int_type),
    ));
    query.push_bind(api_key_id);
    query.push(" AND created_at >= ").push_bind(from);
    query.push(" AND created_at < ").push_bind(to);
    query.push(" GROUP BY bucket, outcome ORDER BY bucket, outcome");
    query
}

/// One key's rollup rows of `table` in `[from, to)`, by primary key; the
/// bucket as `minute` text, like [`minute_series`]. Read each row with
/// [`series_row`].
pub fn rollup_series<'a, DB, T>(
    table: &str,
    minute: fn(&str) -> String,
    api_key_id: i64,
    from: T,
    to: T,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
    T: 'a + Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new(format!(
        "SELECT {bucket} AS bucket, outcome, {counters} FROM {table} WHERE api_key_id = ",
        bucket = minute("bucket_start"),
        counters = ROLLUP_COUNTERS.join(", "),
    ));
    query.push_bind(api_key_id);
    query.push(" AND bucket_start >= ").push_bind(from);
    query.push(" AND bucket_start < ").push_bind(to);
    query.push(" ORDER BY bucket_start, outcome");
    query
}

/// The exact total of a counted column (bytes, units) from its
/// `{column}_high` and `{column}_low` sums.
fn exact_total<R: Row>(row: &R, table: &str, column: &str) -> Result<u128, StoreError>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: ColumnIndex<R>,
{
    let halves = Halves {
        high: row.try_get(format!("{column}_high").as_str())?,
        low: row.try_get(format!("{column}_low").as_str())?,
    };
    halves
        .total()
        .ok_or_else(|| StoreError::Corrupt(format!("{table}.{column} sums to a negative count")))
}

/// One row of [`usage_summary`].
pub fn summary_row<R: Row>(row: &R) -> Result<UsageSummaryRow, StoreError>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: ColumnIndex<R>,
{
    Ok(UsageSummaryRow {
        api_key_id: row.try_get("api_key_id")?,
        outcome: row.try_get("outcome")?,
        requests: row.try_get("requests")?,
        request_bytes: exact_total(row, "usage rollup", "request_bytes")?,
        response_bytes: exact_total(row, "usage rollup", "response_bytes")?,
        units: exact_total(row, "usage rollup", "units")?,
    })
}

/// One row of [`minute_series`] or [`rollup_series`].
pub fn series_row<R: Row>(row: &R) -> Result<SeriesRow, StoreError>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: ColumnIndex<R>,
{
    let bucket: String = row.try_get("bucket")?;
    Ok(SeriesRow {
        bucket_start: parse_minute(&bucket).map_err(StoreError::Corrupt)?,
        outcome: row.try_get("outcome")?,
        requests: row.try_get("requests")?,
        request_bytes: exact_total(row, "usage series", "request_bytes")?,
        response_bytes: exact_total(row, "usage series", "response_bytes")?,
        units: exact_total(row, "usage series", "units")?,
    })
}

/// Reads the `YYYY-MM-DD HH:MM` text a series query gives its buckets.
fn parse_minute(text: &str) -> Result<time::OffsetDateTime, String> {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    time::PrimitiveDateTime::parse(text, &format)
        .map(time::PrimitiveDateTime::assume_utc)
        .map_err(|e| format!("series bucket {text:?} is malformed: {e}"))
}

/// `SELECT id FROM usage_log WHERE created_at < ? ORDER BY created_at LIMIT n`:
/// the next rows a prune deletes, oldest first, through the created_at index.
pub fn prunable_ids<'a, DB, T>(before: T, limit: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
    T: 'a + Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new("SELECT id FROM usage_log WHERE created_at < ");
    query.push_bind(before);
    query.push(" ORDER BY created_at LIMIT ").push_bind(limit);
    query
}

/// `DELETE FROM usage_log WHERE id IN (...)`.
pub fn delete_usage_ids<'a, DB>(ids: &'a [i64]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new("DELETE FROM usage_log WHERE id IN (");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    query.push(")");
    query
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
    fn series_buckets_are_read_as_utc_minutes() {
        assert_eq!(
            parse_minute("2026-12-02 03:59"),
            Ok(time::macros::datetime!(2026-12-02 03:59:00 UTC))
        );
        assert!(parse_minute("2026-12-02 03").is_err());
    }

    #[test]
    fn rollup_upserts_add_every_counter() {
        let upsert = Upsert {
            clause: "ON CONFLICT (api_key_id, bucket_start, outcome) DO UPDATE SET",
            incoming: |c| format!("excluded.{c}"),
        };
        let delta = RollupDelta {
            api_key_id: 1,
            bucket_start: time::macros::datetime!(2026-12-02 03:00:00 UTC),
            outcome: "allowed",
            requests: 1,
            request_bytes: Halves::default(),
            response_bytes: Halves::default(),
            units: Halves::default(),
        };
        let rows = [(&delta, String::from("2026-12-02 03:00:00.000"))];
        let sql = upsert_rollups::<sqlx::Sqlite, _>("usage_hourly", &upsert, &rows).into_sql();
        for counter in ROLLUP_COUNTERS {
            assert!(
                sql.contains(&format!("{counter} = {counter} + excluded.{counter}")),
                "{sql}"
            );
        }
    }
}
