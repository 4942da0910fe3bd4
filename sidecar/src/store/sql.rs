//! SQL both backends run, written once: the key registry's statements (the
//! same text in both dialects), and the usage ledger's insert, key check,
//! rollup upserts, summary, series and prune, whose text is built here for
//! a number of rows with the dialect's few words passed in (how an insert
//! skips a duplicate, which integer type a sum is cast to). Both dialects
//! take `?` placeholders; the `bind_*` functions bind what a built
//! statement expects, times as each backend stores them (generic `T`).

use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Row, Type};
use tollgate_wire::UsageRecord;

use super::rollup::{Grain, Halves, RollupDelta, TokenSums};
use super::{
    CostTotals, ModelSummaryRow, SealedRow, SeriesRow, StoreError, SummaryBy, UsageSummaryRow,
    UsageTotals,
};
use crate::domain::price::{Currency, PriceBook};
use crate::domain::sealed::SealedSecret;

/// The columns a key is read with, in the order `key_from_row` expects
/// (qualified, so the verify look-up can join the key's team).
macro_rules! key_columns {
    () => {
        "api_keys.id AS id, api_keys.name AS name, api_keys.prefix AS prefix, \
         api_keys.status AS status, api_keys.created_at AS created_at, \
         api_keys.revoked_at AS revoked_at, api_keys.expires_at AS expires_at, \
         api_keys.sealed_signing_secret AS sealed_signing_secret, \
         api_keys.limits_spec AS limits_spec, api_keys.team_id AS team_id"
    };
}

/// Every key, oldest first.
pub const LIST_KEYS: &str = concat!("SELECT ", key_columns!(), " FROM api_keys ORDER BY id");

/// The key with a hash (the hot look-up), with the change feed's head in
/// the same snapshot (`feed_seq`) and the limits of the key's team, if it
/// has one (`team_limits_spec`), in the same round trip; binds the
/// lowercase hex hash. Always one row: the key's columns are NULL when no
/// key has the hash.
pub const KEY_BY_HASH: &str = concat!(
    "SELECT key_feed.head_seq AS feed_seq, ",
    key_columns!(),
    ", teams.limits_spec AS team_limits_spec",
    " FROM key_feed LEFT JOIN api_keys ON api_keys.key_hash = ?",
    " LEFT JOIN teams ON teams.id = api_keys.team_id WHERE key_feed.shard = 1"
);

/// A key's hash by its id; binds the id.
pub const KEY_HASH_BY_ID: &str = "SELECT key_hash FROM api_keys WHERE id = ?";

/// The key with an id; binds the id.
pub const KEY_BY_ID: &str = concat!("SELECT ", key_columns!(), " FROM api_keys WHERE id = ?");

/// Registers an active key; binds name, prefix, hash, created_at,
/// expires_at, sealed_signing_secret, limits_spec, team_id (0 for none:
/// no team has id 0, see [`team_id_bound`]).
pub const INSERT_KEY: &str = "INSERT INTO api_keys \
     (name, prefix, key_hash, status, created_at, expires_at, sealed_signing_secret, \
     limits_spec, team_id) VALUES (?, ?, ?, 'ACTIVE', ?, ?, ?, ?, NULLIF(?, 0))";

/// A key's team as the statements bind it, inside `NULLIF(?, 0)`: 0 for
/// none (ids start at 1), so one statement sets a team or clears it.
pub fn team_id_bound(team_id: Option<i64>) -> i64 {
    team_id.unwrap_or(0)
}

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

/// `?, ?, ...`: `n` placeholders.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// `(?, ...), (?, ...), ...`: `rows` tuples of `columns` placeholders.
fn value_tuples(rows: usize, columns: usize) -> String {
    vec![format!("({})", placeholders(columns)); rows].join(", ")
}

/// `SELECT id FROM api_keys WHERE id IN (...)` for `n` ids: which of them
/// name a key. Bind at most [`INSERT_CHUNK_ROWS`](super::INSERT_CHUNK_ROWS)
/// at a time.
pub fn known_key_ids(n: usize) -> String {
    format!("SELECT id FROM api_keys WHERE id IN ({})", placeholders(n))
}

/// The columns every usage row binds, in the order [`bind_usage`] binds them.
const PLAIN_COLUMNS: &str = "request_id, api_key_id, method, endpoint, status_code, \
     outcome, request_bytes, response_bytes, units, duration_ms, created_at";

/// The columns an LLM call's row binds after [`PLAIN_COLUMNS`]; a row of
/// any other call leaves them at their defaults (no api, model, cost or
/// currency; not streamed; no tokens; `usage_source` `none`).
const LLM_COLUMNS: &str = "api, model, streamed, input_tokens, output_tokens, \
     cached_input_tokens, reasoning_tokens, usage_source, cost_micros, currency";

/// Which columns a usage row binds. The database's cost of a row grows with
/// its bound values (each one a parameter the server sets up and clears),
/// so a call that is not an LLM call binds only the 11 it has: bench/README.md,
/// "The cost of a usage row".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowShape {
    Plain,
    Llm,
}

impl RowShape {
    /// The shape of a record's row.
    pub fn of(record: &UsageRecord) -> RowShape {
        if record.llm.is_some() {
            RowShape::Llm
        } else {
            RowShape::Plain
        }
    }

    fn columns(self) -> String {
        match self {
            RowShape::Plain => PLAIN_COLUMNS.to_string(),
            RowShape::Llm => format!("{PLAIN_COLUMNS}, {LLM_COLUMNS}"),
        }
    }

    fn column_count(self) -> usize {
        self.columns().split(',').count()
    }
}

/// The row counts a ledger statement (usage insert, rollup upsert, key
/// look-up) is built for, largest first: `n` rows go in statements of these
/// sizes (a full batch of the filter's 500 in one), so each connection
/// prepares at most these few statements once and keeps them in its
/// statement cache. Prepared again for every batch, a 500-row insert cost
/// the database a third of a row's CPU and the sidecar half of its own.
pub const STATEMENT_ROWS: [usize; 10] = [500, 256, 128, 64, 32, 16, 8, 4, 2, 1];

/// `items` cut into statements of [`STATEMENT_ROWS`] sizes, each at most
/// `largest`, in order.
pub fn statement_chunks<T>(mut items: &[T], largest: usize) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    for size in STATEMENT_ROWS
        .iter()
        .copied()
        .filter(|s| *s <= largest.max(1))
    {
        while items.len() >= size {
            let (chunk, rest) = items.split_at(size);
            chunks.push(chunk);
            items = rest;
        }
    }
    chunks
}

/// `{verb} INTO usage_log (columns) VALUES (...), ...{tail}` for `rows`
/// rows of `shape`: `verb` and `tail` are the dialect's insert that skips a
/// stored `request_id` (`INSERT IGNORE`; SQLite's `ON CONFLICT`). Bind the
/// rows with [`bind_usage`].
pub fn insert_usage(verb: &str, shape: RowShape, rows: usize, tail: &str) -> String {
    format!(
        "{verb} INTO usage_log ({}) VALUES {}{tail}",
        shape.columns(),
        value_tuples(rows, shape.column_count())
    )
}

/// Binds each (record, its creation time as the backend stores it) in
/// the order of its [`RowShape`]'s columns, an LLM row's cost by `prices`.
/// The statement was built for the rows' one shape.
pub fn bind_usage<'q, DB, T>(
    mut query: Query<'q, DB, DB::Arguments<'q>>,
    rows: &'q [(&'q UsageRecord, T)],
    prices: &PriceBook,
) -> Query<'q, DB, DB::Arguments<'q>>
where
    DB: Database,
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    &'q T: Encode<'q, DB> + Type<DB>,
{
    for (r, created_at) in rows {
        query = query
            .bind(r.request_id.as_str())
            .bind(r.api_key_id)
            .bind(r.method.as_str())
            .bind(r.endpoint.as_str())
            .bind(i64::from(r.status_code))
            .bind(r.outcome.as_str())
            .bind(to_i64(r.request_bytes))
            .bind(to_i64(r.response_bytes))
            .bind(to_i64(r.units))
            .bind(to_i64(r.duration_ms))
            .bind(created_at);
        let Some(llm) = r.llm.as_ref() else {
            continue;
        };
        let cost = prices.cost(r);
        let tokens = llm.tokens;
        query = query
            .bind(Some(llm.api.name()))
            .bind(Some(llm.model.as_str()))
            .bind(i64::from(llm.streamed))
            .bind(to_i64(tokens.input_tokens))
            .bind(to_i64(tokens.output_tokens))
            .bind(to_i64(tokens.cached_input_tokens))
            .bind(to_i64(tokens.reasoning_tokens))
            .bind(llm.usage_source.name())
            .bind(cost.micros())
            .bind(cost.currency().map(Currency::code));
    }
    query
}

/// The columns of a rollup row, in the order [`upsert_rollups`] binds them.
pub const ROLLUP_COLUMNS: &str = "api_key_id, bucket_start, outcome, model, requests, \
     request_bytes_high, request_bytes_low, response_bytes_high, response_bytes_low, \
     units_high, units_low, input_tokens, output_tokens, cached_input_tokens, \
     reasoning_tokens, cost_micros_high, cost_micros_low, priced_rows, unpriced_rows";

/// The columns of a rollup row's key before its counters: key, bucket,
/// outcome, model.
const ROLLUP_KEY_COLUMNS: usize = 4;

/// The counters of a rollup row, which an upsert adds to.
const ROLLUP_COUNTERS: [&str; 15] = [
    "requests",
    "request_bytes_high",
    "request_bytes_low",
    "response_bytes_high",
    "response_bytes_low",
    "units_high",
    "units_low",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost_micros_high",
    "cost_micros_low",
    "priced_rows",
    "unpriced_rows",
];

/// How a dialect adds an upsert's incoming counters to the stored row: the
/// clause after the values (`ON DUPLICATE KEY UPDATE`, SQLite's
/// `ON CONFLICT (...) DO UPDATE SET`) and how it names an incoming value
/// (`VALUES(c)`, `excluded.c`).
pub struct Upsert {
    pub clause: &'static str,
    pub incoming: fn(&str) -> String,
}

/// `INSERT INTO {table} (ROLLUP_COLUMNS) VALUES (...), ... {clause} c = c + new, ...`
/// for `rows` rows: adds each delta to its row, creating the row when it
/// is the bucket's first. Bind the rows with [`bind_rollups`].
pub fn upsert_rollups(table: &str, upsert: &Upsert, rows: usize) -> String {
    let sets: Vec<String> = ROLLUP_COUNTERS
        .iter()
        .map(|c| format!("{c} = {c} + {}", (upsert.incoming)(c)))
        .collect();
    format!(
        "INSERT INTO {table} ({ROLLUP_COLUMNS}) VALUES {} {} {}",
        value_tuples(rows, ROLLUP_KEY_COLUMNS + ROLLUP_COUNTERS.len()),
        upsert.clause,
        sets.join(", ")
    )
}

/// Binds each (delta, its bucket start as the backend stores it) in the
/// order of [`ROLLUP_COLUMNS`].
pub fn bind_rollups<'q, DB, T>(
    mut query: Query<'q, DB, DB::Arguments<'q>>,
    rows: &'q [(&'q RollupDelta, T)],
) -> Query<'q, DB, DB::Arguments<'q>>
where
    DB: Database,
    &'q str: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    &'q T: Encode<'q, DB> + Type<DB>,
{
    for (d, bucket_start) in rows {
        query = query
            .bind(d.api_key_id)
            .bind(bucket_start)
            .bind(d.outcome)
            .bind(d.model.as_str())
            .bind(d.requests)
            .bind(d.request_bytes.high)
            .bind(d.request_bytes.low)
            .bind(d.response_bytes.high)
            .bind(d.response_bytes.low)
            .bind(d.units.high)
            .bind(d.units.low)
            .bind(d.tokens.input_tokens)
            .bind(d.tokens.output_tokens)
            .bind(d.tokens.cached_input_tokens)
            .bind(d.tokens.reasoning_tokens)
            .bind(d.cost.high)
            .bind(d.cost.low)
            .bind(d.priced_rows)
            .bind(d.unpriced_rows);
    }
    query
}

/// `SELECT request_id FROM usage_log WHERE request_id IN (...)` for `n`
/// ids: which of a batch's ids are stored already. Bind at most
/// [`INSERT_CHUNK_ROWS`](super::INSERT_CHUNK_ROWS) at a time.
pub fn stored_request_ids(n: usize) -> String {
    format!(
        "SELECT request_id FROM usage_log WHERE request_id IN ({})",
        placeholders(n)
    )
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

/// Requests, bytes, units and tokens per (key, `by`'s column: outcome or
/// model), ordered by both, of `api_key_id` (all keys when `None`) over
/// `parts` (disjoint), read from the rollups. `int_type` is the dialect's
/// 64-bit integer for the sums' cast (`SIGNED`, `INTEGER`); read each row
/// with [`summary_row`] or [`model_summary_row`].
///
/// Byte and unit columns are the rollups' sums of high and low 32 bits (see
/// [`Halves`]), summed again here and joined by [`summary_row`] into exact
/// 128-bit totals: rows stored before ingestion bounded the counts may hold
/// anything up to `i64::MAX`, and a half is below 2^32, so neither half's
/// sum can overflow before a (key, outcome) pair has 2^31 rows.
pub fn usage_summary<T>(
    int_type: &str,
    by: SummaryBy,
    api_key_id: Option<i64>,
    parts: &[SummaryPart<T>],
) -> String {
    let group = by.column();
    let sums: Vec<String> = ROLLUP_COUNTERS
        .iter()
        .map(|c| format!("CAST(COALESCE(SUM({c}), 0) AS {int_type}) AS {c}"))
        .collect();
    let mut query = format!("SELECT api_key_id, {group}, {} FROM (", sums.join(", "));
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            query.push_str(" UNION ALL ");
        }
        let table = part.grain.table().unwrap_or("usage_hourly");
        query.push_str(&format!(
            "SELECT api_key_id, {group}, {} FROM {table} WHERE 1 = 1",
            ROLLUP_COUNTERS.join(", ")
        ));
        if api_key_id.is_some() {
            query.push_str(" AND api_key_id = ?");
        }
        if part.from.is_some() {
            query.push_str(" AND bucket_start >= ?");
        }
        if part.to.is_some() {
            query.push_str(" AND bucket_start < ?");
        }
    }
    query.push_str(&format!(
        ") AS buckets GROUP BY api_key_id, {group} ORDER BY api_key_id, {group}"
    ));
    query
}

/// Binds what [`usage_summary`] built for the same key and parts.
pub fn bind_summary<'q, DB, T>(
    mut query: Query<'q, DB, DB::Arguments<'q>>,
    api_key_id: Option<i64>,
    parts: &'q [SummaryPart<T>],
) -> Query<'q, DB, DB::Arguments<'q>>
where
    DB: Database,
    i64: Encode<'q, DB> + Type<DB>,
    &'q T: Encode<'q, DB> + Type<DB>,
{
    for part in parts {
        if let Some(id) = api_key_id {
            query = query.bind(id);
        }
        if let Some(from) = &part.from {
            query = query.bind(from);
        }
        if let Some(to) = &part.to {
            query = query.bind(to);
        }
    }
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

/// The token columns, summed the same in `usage_log` and the rollups.
const TOKEN_COLUMNS: [&str; 4] = [
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
];

/// One key's usage per minute, per outcome and model, in `[from, to)`, read
/// from `usage_log` through its (api_key_id, created_at) index. `minute` is
/// the dialect's expression for a time column's `YYYY-MM-DD HH:MM` text,
/// `exact` its byte-for-byte text (models are grouped as the rollups keep
/// them: two models differing only in case are two rows); read each row
/// with [`series_row`].
pub fn minute_series(
    int_type: &str,
    minute: fn(&str) -> String,
    exact: fn(&str) -> String,
) -> String {
    let tokens: Vec<String> = TOKEN_COLUMNS
        .iter()
        .map(|c| format!("CAST(COALESCE(SUM({c}), 0) AS {int_type}) AS {c}"))
        .collect();
    // Costs as the rollups count them: a row with a cost is priced, an
    // LLM row (one with a model) without one is unpriced.
    let rows_where = |condition: &str| {
        format!("CAST(COALESCE(SUM(CASE WHEN {condition} THEN 1 ELSE 0 END), 0) AS {int_type})")
    };
    format!(
        "SELECT {bucket} AS bucket, outcome, {model} AS bucket_model, \
         CAST(COUNT(*) AS {int_type}) AS requests, \
         {request_bytes}, {response_bytes}, {units}, {tokens}, {cost}, \
         {priced} AS priced_rows, {unpriced} AS unpriced_rows FROM usage_log \
         WHERE api_key_id = ? AND created_at >= ? AND created_at < ? \
         GROUP BY bucket, outcome, bucket_model ORDER BY bucket, outcome, bucket_model",
        bucket = minute("created_at"),
        model = exact("COALESCE(model, '')"),
        request_bytes = split_sum("request_bytes", int_type),
        response_bytes = split_sum("response_bytes", int_type),
        units = split_sum("units", int_type),
        tokens = tokens.join(", "),
        cost = split_sum("cost_micros", int_type),
        priced = rows_where("cost_micros IS NOT NULL"),
        unpriced = rows_where("model IS NOT NULL AND cost_micros IS NULL"),
    )
}

/// One key's rollup rows of `table` in `[from, to)`, by primary key; the
/// bucket as `minute` text, like [`minute_series`]. Read each row with
/// [`series_row`].
pub fn rollup_series(table: &str, minute: fn(&str) -> String) -> String {
    format!(
        "SELECT {bucket} AS bucket, outcome, model AS bucket_model, {counters} FROM {table} \
         WHERE api_key_id = ? AND bucket_start >= ? AND bucket_start < ? \
         ORDER BY bucket_start, outcome, model",
        bucket = minute("bucket_start"),
        counters = ROLLUP_COUNTERS.join(", "),
    )
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

/// The token sums of a row of [`usage_summary`] or a series.
fn token_sums<R: Row>(row: &R) -> Result<TokenSums, StoreError>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: ColumnIndex<R>,
{
    Ok(TokenSums {
        input_tokens: row.try_get("input_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
        cached_input_tokens: row.try_get("cached_input_tokens")?,
        reasoning_tokens: row.try_get("reasoning_tokens")?,
    })
}

/// The totals of a row of [`usage_summary`].
fn summary_totals<R: Row>(row: &R) -> Result<UsageTotals, StoreError>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: ColumnIndex<R>,
{
    Ok(UsageTotals {
        requests: row.try_get("requests")?,
        request_bytes: exact_total(row, "usage rollup", "request_bytes")?,
        response_bytes: exact_total(row, "usage rollup", "response_bytes")?,
        units: exact_total(row, "usage rollup", "units")?,
        tokens: token_sums(row)?,
        cost: CostTotals::from_sums(
            exact_total(row, "usage rollup", "cost_micros")?,
            row.try_get("priced_rows")?,
            row.try_get("unpriced_rows")?,
        ),
    })
}

/// One row of [`usage_summary`] by outcome.
pub fn summary_row<R: Row>(row: &R) -> Result<UsageSummaryRow, StoreError>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: ColumnIndex<R>,
{
    Ok(UsageSummaryRow {
        api_key_id: row.try_get("api_key_id")?,
        outcome: row.try_get("outcome")?,
        totals: summary_totals(row)?,
    })
}

/// One row of [`usage_summary`] by model: `None` for the calls that were
/// not LLM calls (kept under the model `''`).
pub fn model_summary_row<R: Row>(row: &R) -> Result<ModelSummaryRow, StoreError>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: ColumnIndex<R>,
{
    let model = text_column(row, "model")?.filter(|m| !m.is_empty());
    Ok(ModelSummaryRow {
        api_key_id: row.try_get("api_key_id")?,
        model,
        totals: summary_totals(row)?,
    })
}

/// One row of [`minute_series`] or [`rollup_series`].
pub fn series_row<R: Row>(row: &R) -> Result<SeriesRow, StoreError>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: ColumnIndex<R>,
{
    let bucket: String = row.try_get("bucket")?;
    Ok(SeriesRow {
        bucket_start: parse_minute(&bucket).map_err(StoreError::Corrupt)?,
        outcome: row.try_get("outcome")?,
        // Read as bytes: the rollups' model is VARBINARY on MySQL.
        model: text_column(row, "bucket_model")?.unwrap_or_default(),
        requests: row.try_get("requests")?,
        request_bytes: exact_total(row, "usage series", "request_bytes")?,
        response_bytes: exact_total(row, "usage series", "response_bytes")?,
        units: exact_total(row, "usage series", "units")?,
        tokens: token_sums(row)?,
        cost_micros: exact_total(row, "usage series", "cost_micros")?,
        priced_rows: row.try_get("priced_rows")?,
        unpriced_rows: row.try_get("unpriced_rows")?,
    })
}

/// Reads the `YYYY-MM-DD HH:MM` text a series query gives its buckets.
fn parse_minute(text: &str) -> Result<time::OffsetDateTime, String> {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    time::PrimitiveDateTime::parse(text, &format)
        .map(time::PrimitiveDateTime::assume_utc)
        .map_err(|e| format!("series bucket {text:?} is malformed: {e}"))
}

/// Every key id that has usage rows, or had them: the daily rollups hold
/// one row per key and day of every row stored (pruned or not), including
/// rows stored before ingestion refused unknown key ids.
pub const USAGE_KEY_IDS: &str = "SELECT DISTINCT api_key_id FROM usage_daily ORDER BY api_key_id";

/// A key's next rows a prune deletes, oldest first, through the
/// (api_key_id, created_at) index; binds the key id, before, limit.
pub const PRUNABLE_IDS: &str = "SELECT id FROM usage_log WHERE api_key_id = ? AND created_at < ? \
     ORDER BY created_at LIMIT ?";

/// `DELETE FROM usage_log WHERE id IN (...)` for `n` ids.
pub fn delete_usage_ids(n: usize) -> String {
    format!("DELETE FROM usage_log WHERE id IN ({})", placeholders(n))
}

/// A text column stored with a binary collation or as bytes (`ascii_bin`,
/// `utf8mb4_bin` or `VARBINARY` on MySQL, which sqlx reports as binary and
/// will not decode as a `String`), read as bytes on both backends.
pub fn text_column<R: Row>(row: &R, column: &'static str) -> Result<Option<String>, sqlx::Error>
where
    for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
    &'static str: ColumnIndex<R>,
{
    row.try_get::<Option<Vec<u8>>, _>(column)?
        .map(|bytes| {
            String::from_utf8(bytes).map_err(|_| sqlx::Error::ColumnDecode {
                index: column.into(),
                source: "not UTF-8 text".into(),
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
    Ok(text_column(row, "sealed_signing_secret")?.map(SealedSecret::from_stored))
}

/// The limits of a key row (none when the column is NULL or empty).
pub fn key_limits<R: Row>(row: &R) -> Result<tollgate_wire::Limits, StoreError>
where
    for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
    &'static str: ColumnIndex<R>,
{
    limits_column(row, "limits_spec")
}

/// The limits a row's `column` spells (none when it is NULL or empty): a
/// key's or a team's `limits_spec`.
pub fn limits_column<R: Row>(
    row: &R,
    column: &'static str,
) -> Result<tollgate_wire::Limits, StoreError>
where
    for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
    &'static str: ColumnIndex<R>,
{
    match text_column(row, column)? {
        None => Ok(tollgate_wire::Limits::default()),
        Some(spec) => tollgate_wire::Limits::parse_spec(&spec)
            .map_err(|e| StoreError::Corrupt(format!("{column}: {e}"))),
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
        key_hash: text_column(row, "key_hash")?.ok_or_else(|| missing("key_hash"))?,
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
    fn statements_come_in_a_few_sizes_and_cover_every_row_in_order() {
        let rows: Vec<usize> = (0..1000).collect();
        let sizes = |n: usize, largest: usize| -> Vec<usize> {
            statement_chunks(&rows[..n], largest)
                .iter()
                .map(|c| c.len())
                .collect()
        };
        assert_eq!(sizes(500, 500), [500]);
        assert_eq!(sizes(1000, 500), [500, 500]);
        assert_eq!(sizes(499, 500), [256, 128, 64, 32, 16, 2, 1]);
        assert_eq!(sizes(3, 1), [1, 1, 1]);
        assert!(sizes(0, 500).is_empty());
        for n in 0..=1000 {
            let chunks = statement_chunks(&rows[..n], 500);
            assert!(chunks.len() <= 10, "{n} rows: {} statements", chunks.len());
            assert!(chunks.iter().all(|c| STATEMENT_ROWS.contains(&c.len())));
            assert_eq!(chunks.concat(), rows[..n], "{n} rows");
        }
    }

    #[test]
    fn a_row_binds_its_shapes_columns() {
        let plain = insert_usage("INSERT", RowShape::Plain, 2, "");
        let llm = insert_usage("INSERT", RowShape::Llm, 1, "");
        assert_eq!(plain.matches('?').count(), 2 * 11);
        assert_eq!(llm.matches('?').count(), 21);
        assert!(!plain.contains("model") && llm.contains("model, streamed"));
    }

    #[test]
    fn rollup_upserts_add_every_counter() {
        let upsert = Upsert {
            clause: "ON CONFLICT (api_key_id, bucket_start, outcome, model) DO UPDATE SET",
            incoming: |c| format!("excluded.{c}"),
        };
        let sql = upsert_rollups("usage_hourly", &upsert, 1);
        for counter in ROLLUP_COUNTERS {
            assert!(
                sql.contains(&format!("{counter} = {counter} + excluded.{counter}")),
                "{sql}"
            );
        }
    }
}
