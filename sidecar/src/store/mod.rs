//! Storage interface of the sidecar: the key registry and the usage ledger, over
//! MySQL/MariaDB or SQLite behind one enum.
//!
//! Handlers and CLI commands only see [`Store`]. Every operation is written
//! once, in [`SqlStore`] over any backend's [`Dialect`] (the few words and
//! types the two dialects spell differently); [`mysql`] and [`sqlite`] only
//! open their pools, and each backend keeps its own migrations under
//! `migrations/<backend>`. [`Store`] picks the backend at start and hands
//! each call to its `SqlStore`.

pub mod alerts;
pub mod dialect;
pub mod feed;
pub mod last_use;
mod ledger;
pub mod limits;
pub mod mysql;
pub mod prices;
pub mod quota_use;
pub mod registry;
pub mod rollup;
pub mod sql;
mod sql_store;
pub mod sqlite;
pub mod target;
pub mod teams;
pub mod usage_log;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;

use time::OffsetDateTime;
use tollgate_wire::UsageRecord;

use crate::domain::sealed::SealedSecret;

pub use crate::domain::keys::{ApiKey, KeyStatus, NewKey};

pub use dialect::Dialect;
pub use mysql::MySqlStore;
pub use rollup::TokenSums;
pub use sql_store::SqlStore;
pub use sqlite::SqliteStore;
pub use target::DatabaseTarget;
pub use usage_log::{LogFilter, UsageLogRow};

/// Rows one multi-row `INSERT` carries; a batch is split into statements of at
/// most this many rows, all inside one transaction (stays well below both
/// backends' limits on bound parameters). A batch's key ids are looked up as
/// many at a time.
pub const INSERT_CHUNK_ROWS: usize = 500;

/// A stored signing secret and the row it is bound to (for re-sealing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRow {
    pub id: i64,
    /// The key's hash: what the sealed value is bound to.
    pub key_hash: String,
    pub sealed: SealedSecret,
}

/// A key look-up and the change feed's head read with it: the verdict
/// reflects every change up to `feed_seq`.
#[derive(Debug, Clone)]
pub struct KeyLookup {
    pub key: Option<ApiKey>,
    pub feed_seq: u64,
    /// The limits of the key's team, read with it (none when the key has no
    /// team, or its team has none).
    pub team_limits: tollgate_wire::Limits,
}

impl KeyLookup {
    /// The look-up from the head read with it, the key, if any, and its
    /// team's limits.
    fn new(
        feed_seq: i64,
        key: Option<ApiKey>,
        team_limits: tollgate_wire::Limits,
    ) -> Result<KeyLookup, StoreError> {
        let feed_seq = u64::try_from(feed_seq)
            .map_err(|_| StoreError::Corrupt("key_feed.head_seq is negative".into()))?;
        Ok(KeyLookup {
            key,
            feed_seq,
            team_limits,
        })
    }
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The key was active and is now revoked.
    Revoked(ApiKey),
    /// The key had been revoked before; nothing changed.
    AlreadyRevoked(ApiKey),
    /// No key has this id.
    NotFound,
}

impl Revocation {
    /// What [`sql::REVOKE_KEY`] did, from the key read back after it (if
    /// any) and the rows the update changed.
    fn after_update(key: Option<ApiKey>, rows_revoked: u64) -> Revocation {
        match key {
            None => Revocation::NotFound,
            Some(key) if rows_revoked == 1 => Revocation::Revoked(key),
            Some(key) => Revocation::AlreadyRevoked(key),
        }
    }
}

/// Which usage rows a summary covers.
#[derive(Debug, Clone, Default)]
pub struct SummaryFilter {
    pub api_key_id: Option<i64>,
    /// Rows created at or after this instant (from the start of its hour).
    pub since: Option<OffsetDateTime>,
    /// Rows created before this instant (up to the end of its hour): a
    /// quota window's end, for `usage reconcile` of a past window.
    pub until: Option<OffsetDateTime>,
}

/// What a summary's rows are per, besides the key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SummaryBy {
    /// One row per (key, outcome): [`UsageSummaryRow`].
    #[default]
    Outcome,
    /// One row per (key, model): [`ModelSummaryRow`].
    Model,
}

impl SummaryBy {
    /// The rollup column the rows are grouped by; also the name `by=` and
    /// `--by` take.
    pub fn column(self) -> &'static str {
        match self {
            SummaryBy::Outcome => "outcome",
            SummaryBy::Model => "model",
        }
    }

    /// Every grouping, the default first.
    pub const ALL: [SummaryBy; 2] = [SummaryBy::Outcome, SummaryBy::Model];

    /// The grouping of a name, if it is one.
    pub fn from_name(name: &str) -> Option<SummaryBy> {
        SummaryBy::ALL.into_iter().find(|by| by.column() == name)
    }
}

/// Reply of `GET /v1/usage/summary` and `tollgate usage summary --json`:
/// rows of [`UsageSummaryRow`], or of [`ModelSummaryRow`] by model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SummaryReply<R = UsageSummaryRow> {
    /// RFC 3339 start of the window, when one was asked for: the start of
    /// the hour of the instant asked for.
    pub since: Option<String>,
    pub rows: Vec<R>,
}

/// Builds a store filter from `--key`/`--since` style input. Summaries are
/// read from the hourly and daily rollups, so `since` is taken back to the
/// start of its hour (UTC); the reply's `since` says which instant it was.
pub fn summary_filter(
    key: Option<i64>,
    since: Option<&str>,
    now: OffsetDateTime,
) -> Result<SummaryFilter, String> {
    Ok(SummaryFilter {
        api_key_id: key,
        since: since
            .map(|s| {
                crate::domain::clock::parse_since(s, now).map(|t| rollup::Grain::Hour.floor(t))
            })
            .transpose()?,
        until: None,
    })
}

/// Totals of one (key, outcome) pair.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageSummaryRow {
    pub api_key_id: i64,
    /// The outcome as stored: one of the contract's codes
    /// ([`tollgate_wire::Outcome`]) for every row ingested since ingestion
    /// checks them, but kept as text so older rows are still reported.
    pub outcome: String,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// Totals of one (key, model) pair, whatever the outcomes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelSummaryRow {
    pub api_key_id: i64,
    /// The model the LLM calls named; `None` (`null`) for the calls that
    /// were not LLM calls.
    pub model: Option<String>,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// What a summary row counts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageTotals {
    pub requests: i64,
    /// Exact totals, wider than the 64-bit columns: rows stored before
    /// ingestion bounded the counts may hold up to `i64::MAX` each, and
    /// their sum is still reported, never an overflow (see [`sql::usage_summary`]).
    pub request_bytes: u128,
    pub response_bytes: u128,
    /// What the upstream said the calls cost (`UsageRecord::units`); 0 for
    /// rows stored before units were recorded (migration 0006).
    pub units: u128,
    /// The LLM calls' token sums; 0 for other calls and for rows stored
    /// before tokens were recorded (migration 0007).
    #[serde(flatten)]
    pub tokens: TokenSums,
    /// What the LLM calls cost (migration 0009).
    #[serde(flatten)]
    pub cost: CostTotals,
}

/// What a summary row's LLM calls cost: the sum of the costs stored in
/// their rows at ingestion (so exactly the sum of the rows), and how many
/// rows had a price and how many had none.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CostTotals {
    /// In micro-units (millionths of `currency`); `None` when no row of
    /// the summary row was priced (all unpriced, or no LLM call).
    pub cost_micros: Option<u128>,
    /// The one currency prices are kept in; `None` with `cost_micros`.
    pub currency: Option<String>,
    /// LLM rows with a price at their time.
    pub priced_rows: i64,
    /// LLM rows of a model with no price at their time (and LLM rows
    /// stored before costs were kept).
    pub unpriced_rows: i64,
}

impl CostTotals {
    /// The totals of a summary row's sums; the currency is added by
    /// [`CostTotals::in_currency`].
    pub fn from_sums(cost_micros: u128, priced_rows: i64, unpriced_rows: i64) -> CostTotals {
        CostTotals {
            cost_micros: (priced_rows > 0).then_some(cost_micros),
            currency: None,
            priced_rows,
            unpriced_rows,
        }
    }

    /// Names the currency of a cost, if there is one.
    pub fn in_currency(&mut self, currency: Option<crate::domain::price::Currency>) {
        if self.cost_micros.is_some() {
            self.currency = currency.map(|c| c.code().to_string());
        }
    }
}

/// One bucket of one outcome and model in a key's usage series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRow {
    pub bucket_start: OffsetDateTime,
    pub outcome: String,
    /// The LLM calls' model; `''` for the calls that were not LLM calls.
    pub model: String,
    pub requests: i64,
    pub request_bytes: u128,
    pub response_bytes: u128,
    pub units: u128,
    pub tokens: TokenSums,
    /// The priced rows' cost, in micro-units, and how many LLM rows had a
    /// price at their time and how many had none.
    pub cost_micros: u128,
    pub priced_rows: i64,
    pub unpriced_rows: i64,
}

/// What [`Store::insert_usage`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageInsert {
    /// Committed: this many records were new.
    Stored { inserted: u64 },
    /// Nothing stored: the record at `index` names a key id no key has.
    UnknownKey { index: usize, api_key_id: i64 },
}

/// Why a store call failed.
#[derive(Debug)]
pub enum StoreError {
    /// The database could not be reached or refused the statement.
    Unavailable(sqlx::Error),
    /// A unique value (the key hash) is already stored.
    Duplicate,
    /// Applying migrations failed.
    Migrate(sqlx::migrate::MigrateError),
    /// A stored value is not what the schema promises.
    Corrupt(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(e) => write!(f, "database unavailable: {e}"),
            StoreError::Duplicate => f.write_str("a key with this value is already registered"),
            StoreError::Migrate(e) => write!(f, "database migration failed: {e}"),
            StoreError::Corrupt(what) => write!(f, "unexpected stored data: {what}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate,
            _ => StoreError::Unavailable(e),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e)
    }
}

/// The sidecar's database, whichever backend it is.
#[derive(Clone, Debug)]
pub enum Store {
    MySql(MySqlStore),
    Sqlite(SqliteStore),
}

impl Store {
    /// Opens a pool on the target; a SQLite file (and its directory) is created when missing.
    pub async fn connect(target: &DatabaseTarget) -> Result<Store, StoreError> {
        match target {
            DatabaseTarget::MySql(url) => Ok(Store::MySql(MySqlStore::connect(url).await?)),
            DatabaseTarget::Sqlite(path) => Ok(Store::Sqlite(SqliteStore::connect(path).await?)),
        }
    }

    /// `mysql` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::MySql(_) => <sqlx::MySql as Dialect>::BACKEND,
            Store::Sqlite(_) => <sqlx::Sqlite as Dialect>::BACKEND,
        }
    }

    /// Applies the backend's embedded migrations that are not applied yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::MySql(s) => s.sql().migrate().await,
            Store::Sqlite(s) => s.sql().migrate().await,
        }
    }

    /// Runs `SELECT 1`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::MySql(s) => s.sql().ping().await,
            Store::Sqlite(s) => s.sql().ping().await,
        }
    }

    /// Registers a key; [`StoreError::Duplicate`] when its hash is already stored.
    pub async fn insert_key(&self, key: &NewKey) -> Result<ApiKey, StoreError> {
        match self {
            Store::MySql(s) => s.sql().insert_key(key).await,
            Store::Sqlite(s) => s.sql().insert_key(key).await,
        }
    }

    /// Every key, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().list_keys().await,
            Store::Sqlite(s) => s.sql().list_keys().await,
        }
    }

    /// The key with this lowercase hex SHA-256, if any, and the feed's head.
    pub async fn key_by_hash(&self, key_hash: &str) -> Result<KeyLookup, StoreError> {
        match self {
            Store::MySql(s) => s.key_by_hash(key_hash).await,
            Store::Sqlite(s) => s.sql().key_by_hash(key_hash).await,
        }
    }

    /// The key with this id, if any.
    pub async fn key_by_id(&self, id: i64) -> Result<Option<ApiKey>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().key_by_id(id).await,
            Store::Sqlite(s) => s.sql().key_by_id(id).await,
        }
    }

    /// Revokes a key, stamping `revoked_at` with `at`.
    pub async fn revoke_key(&self, id: i64, at: OffsetDateTime) -> Result<Revocation, StoreError> {
        match self {
            Store::MySql(s) => s.sql().revoke_key(id, at).await,
            Store::Sqlite(s) => s.sql().revoke_key(id, at).await,
        }
    }

    /// Every stored signing secret with its row, by id.
    pub async fn sealed_signing_secrets(&self) -> Result<Vec<SealedRow>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().sealed_signing_secrets().await,
            Store::Sqlite(s) => s.sql().sealed_signing_secrets().await,
        }
    }

    /// Replaces key `id`'s sealed signing secret with `new` if it still is
    /// `old`; false when it changed meanwhile (or the key is gone).
    pub async fn replace_sealed_signing_secret(
        &self,
        id: i64,
        old: &SealedSecret,
        new: &SealedSecret,
    ) -> Result<bool, StoreError> {
        match self {
            Store::MySql(s) => s.sql().replace_sealed_signing_secret(id, old, new).await,
            Store::Sqlite(s) => s.sql().replace_sealed_signing_secret(id, old, new).await,
        }
    }

    /// Stores a batch of validated records in one transaction and says how
    /// many were new; records whose `request_id` is already stored (or appears
    /// earlier in the batch) are skipped. Either the whole batch is committed
    /// or nothing is.
    ///
    /// A batch naming a key id that no key has is not stored at all (the
    /// schema has no foreign key to say so). The ids are looked up just
    /// before the insert transaction: keys are never deleted, so a key found
    /// then is still there when the batch commits.
    pub async fn insert_usage(&self, records: &[UsageRecord]) -> Result<UsageInsert, StoreError> {
        match self {
            Store::MySql(s) => s.sql().insert_usage(records).await,
            Store::Sqlite(s) => s.sql().insert_usage(records).await,
        }
    }

    /// Requests, bytes, units and tokens per (key, outcome), ordered by
    /// key then outcome, read from the rollups: from the start of the hour
    /// of `filter.since` (all time without one), so in whole hours.
    pub async fn usage_summary(
        &self,
        filter: &SummaryFilter,
    ) -> Result<Vec<UsageSummaryRow>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().usage_summary(filter).await,
            Store::Sqlite(s) => s.sql().usage_summary(filter).await,
        }
    }

    /// The same totals per (key, model), ordered by key then model (the
    /// calls that were not LLM calls first, model `None`).
    pub async fn usage_summary_by_model(
        &self,
        filter: &SummaryFilter,
    ) -> Result<Vec<ModelSummaryRow>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().usage_summary_by_model(filter).await,
            Store::Sqlite(s) => s.sql().usage_summary_by_model(filter).await,
        }
    }

    /// Key `filter.api_key_id`'s `usage_log` rows since `filter.since`,
    /// newest first, at most `filter.limit` of them. Pruned rows are gone.
    pub async fn usage_log(&self, filter: &LogFilter) -> Result<Vec<UsageLogRow>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().usage_log(filter).await,
            Store::Sqlite(s) => s.sql().usage_log(filter).await,
        }
    }

    /// Key `api_key_id`'s usage per bucket of `grain`, outcome and model, for the
    /// buckets starting in `[from, to)` (both on the grain's boundaries):
    /// minutes from `usage_log`, hours and days from the rollups. Buckets
    /// without usage have no row.
    pub async fn usage_series(
        &self,
        api_key_id: i64,
        grain: rollup::Grain,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<SeriesRow>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().usage_series(api_key_id, grain, from, to).await,
            Store::Sqlite(s) => s.sql().usage_series(api_key_id, grain, from, to).await,
        }
    }

    /// Whether a key has this id.
    pub async fn key_exists(&self, id: i64) -> Result<bool, StoreError> {
        match self {
            Store::MySql(s) => s.sql().key_exists(id).await,
            Store::Sqlite(s) => s.sql().key_exists(id).await,
        }
    }

    /// Deletes the `usage_log` rows created before `before`, at most
    /// `batch_rows` a transaction, key by key and each key's oldest first,
    /// and says how many it
    /// deleted; `progress` hears the running total after each batch. The
    /// rollups are kept, so summaries and the hourly and daily series stay
    /// the same.
    pub async fn prune_usage<F, Fut>(
        &self,
        before: OffsetDateTime,
        batch_rows: usize,
        progress: F,
    ) -> Result<u64, StoreError>
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = ()>,
    {
        match self {
            Store::MySql(s) => s.sql().prune_usage(before, batch_rows, progress).await,
            Store::Sqlite(s) => s.sql().prune_usage(before, batch_rows, progress).await,
        }
    }

    /// Applies the backend's migrations up to `version` only: for tests of
    /// what a migration does to the rows an older sidecar stored.
    pub async fn migrate_up_to(&self, version: i64) -> Result<(), StoreError> {
        match self {
            Store::MySql(s) => s.sql().migrate_up_to(version).await,
            Store::Sqlite(s) => s.sql().migrate_up_to(version).await,
        }
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        match self {
            Store::MySql(s) => s.close().await,
            Store::Sqlite(s) => s.sql().close().await,
        }
    }
}

/// How many times a usage batch is tried in all: whole, then row by row
/// when other batches of the same request ids raced it, and again each time
/// MySQL picks it as a deadlock's victim.
pub const INSERT_ATTEMPTS: u32 = 5;

/// How a backend inserts a batch's fresh records, in one transaction with
/// their rollups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InsertRows {
    /// All in as few statements as the chunk size allows; if any was
    /// stored meanwhile, nothing is kept and the answer is `None`.
    Whole,
    /// One statement per row, keeping each row this batch stored and
    /// skipping each one another batch did: always `Some(inserted)`.
    EachRow,
}

impl InsertRows {
    /// Rows per insert statement: one when each row's own count must say
    /// whether this batch stored it.
    fn rows_per_statement(self) -> usize {
        match self {
            InsertRows::Whole => INSERT_CHUNK_ROWS,
            InsertRows::EachRow => 1,
        }
    }

    /// Adds a statement's rows to `ours` when it stored all of them (the
    /// only count that names which); false when a whole batch must be
    /// given up because another batch stored some of them meanwhile.
    fn keep<'a, T>(
        self,
        ours: &mut Vec<&'a UsageRecord>,
        statement: &[(&'a UsageRecord, T)],
        inserted: u64,
    ) -> bool {
        if inserted == statement.len() as u64 {
            ours.extend(statement.iter().map(|(r, _)| *r));
            true
        } else {
            self == InsertRows::EachRow
        }
    }
}

/// The most `usage_log` rows one prune transaction deletes.
pub const PRUNE_MAX_BATCH_ROWS: usize = 10_000;

/// The records of a batch to insert: each request id once (its first
/// record, which is what the backends' duplicate-skipping inserts keep),
/// none that is stored already.
fn fresh_records<'a>(records: &'a [UsageRecord], stored: &HashSet<&str>) -> Vec<&'a UsageRecord> {
    let mut seen = HashSet::new();
    records
        .iter()
        .filter(|r| !stored.contains(r.request_id.as_str()) && seen.insert(r.request_id.as_str()))
        .collect()
}

/// The table of a rollup grain that ingestion keeps.
fn rollup_table(grain: rollup::Grain) -> &'static str {
    grain.table().unwrap_or("usage_hourly")
}

/// What a summary of `[since, until)` reads, in whole hours (`since` back
/// to the start of its hour, `until` on to the end of its own): hourly
/// rollups up to the first midnight, daily ones from there to the last
/// midnight, hourly ones again after it. Without `since` the daily rows
/// start at the first; without `until` they run to the last. Never panics,
/// whatever the instants (public for the fuzzer).
pub fn summary_parts(
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
) -> Vec<sql::SummaryPart<OffsetDateTime>> {
    use rollup::Grain::{Day, Hour};
    let part = |grain, from, to| sql::SummaryPart { grain, from, to };
    let start = since.map(|t| Hour.floor(t));
    let end = until.map(|t| Hour.ceil(t));
    let first_midnight = start.map(|t| Day.ceil(t));
    let last_midnight = end.map(|t| Day.floor(t));
    if let (Some(first), Some(end)) = (first_midnight, end) {
        if end <= first {
            return vec![part(Hour, start, Some(end))];
        }
    }
    let mut parts = Vec::with_capacity(3);
    if start != first_midnight {
        parts.push(part(Hour, start, first_midnight));
    }
    parts.push(part(Day, first_midnight, last_midnight));
    if last_midnight != end {
        parts.push(part(Hour, last_midnight, end));
    }
    parts
}

/// A backend's migrator, cut after `version`.
fn migrator_up_to(migrator: &sqlx::migrate::Migrator, version: i64) -> sqlx::migrate::Migrator {
    sqlx::migrate::Migrator {
        migrations: migrator
            .iter()
            .filter(|m| m.version <= version)
            .cloned()
            .collect::<Vec<_>>()
            .into(),
        ..sqlx::migrate::Migrator::DEFAULT
    }
}

/// The creation time of a usage record, already range-checked by the caller.
fn record_time(record: &UsageRecord) -> Result<OffsetDateTime, StoreError> {
    crate::domain::clock::from_unix_ms(record.timestamp_ms).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "timestamp_ms {} of request {} is out of range",
            record.timestamp_ms, record.request_id
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// `summary_parts` as (grain, from, to) triples.
    fn parts(
        since: Option<OffsetDateTime>,
        until: Option<OffsetDateTime>,
    ) -> Vec<(
        rollup::Grain,
        Option<OffsetDateTime>,
        Option<OffsetDateTime>,
    )> {
        summary_parts(since, until)
            .into_iter()
            .map(|p| (p.grain, p.from, p.to))
            .collect()
    }

    #[test]
    fn summaries_read_whole_hours_and_days_between_their_ends() {
        use rollup::Grain::{Day, Hour};
        assert_eq!(parts(None, None), [(Day, None, None)]);
        let since = datetime!(2026-12-02 03:36 UTC);
        let (h3, d3) = (
            datetime!(2026-12-02 03:00 UTC),
            datetime!(2026-12-03 0:00 UTC),
        );
        assert_eq!(
            parts(Some(since), None),
            [(Hour, Some(h3), Some(d3)), (Day, Some(d3), None)]
        );
        // A day window: its days only.
        let d2 = datetime!(2026-12-02 0:00 UTC);
        assert_eq!(parts(Some(d2), Some(d3)), [(Day, Some(d2), Some(d3))]);
        // An hour window, and an end inside an hour (taken to its end).
        let h4 = datetime!(2026-12-02 04:00 UTC);
        assert_eq!(parts(Some(h3), Some(h4)), [(Hour, Some(h3), Some(h4))]);
        assert_eq!(
            parts(Some(since), Some(since)),
            [(Hour, Some(h3), Some(h4))]
        );
        // Across days: hours, days, hours.
        let until = datetime!(2026-12-05 07:10 UTC);
        let (d5, h8) = (
            datetime!(2026-12-05 0:00 UTC),
            datetime!(2026-12-05 08:00 UTC),
        );
        assert_eq!(
            parts(Some(since), Some(until)),
            [
                (Hour, Some(h3), Some(d3)),
                (Day, Some(d3), Some(d5)),
                (Hour, Some(d5), Some(h8))
            ]
        );
        assert_eq!(
            parts(None, Some(until)),
            [(Day, None, Some(d5)), (Hour, Some(d5), Some(h8))]
        );
    }

    #[test]
    fn summaries_near_the_end_of_time_do_not_panic() {
        use rollup::Grain::{Day, Hour};
        let last_hour = datetime!(9999-12-31 23:00 UTC);
        let end = time::PrimitiveDateTime::MAX.assume_utc();
        let late = datetime!(9999-12-31 23:59:59 UTC);
        assert_eq!(
            parts(Some(late), None),
            [(Hour, Some(last_hour), Some(end)), (Day, Some(end), None)]
        );
        assert_eq!(
            parts(Some(late), Some(late)),
            [(Hour, Some(last_hour), Some(end))]
        );
    }

    /// SHA-384 of each released migration, as sqlx records it when it applies
    /// one; checked below.
    const RELEASED_MIGRATIONS: [(&str, i64, &str); 2] = [
        ("mysql", 1, "60d8043b27dc349161c0b177a89c8bb7566c41335331274c361092811047d1b5527a6a7cc5afe84a1638247ce60d4f68"),
        ("sqlite", 1, "1e3d4e23f0e3189df0fc932db3eb807e43df293f68117d814ed4c38643ce10006866d78335aefaefa1c46903a1de5dc9"),
    ];

    /// sqlx refuses to start on a database whose applied migration no longer
    /// has the checksum it was applied with, and the checksum covers the
    /// whole file, comments included: a released migration is never edited;
    /// a change is a new file (see `migrations/README.md`).
    #[test]
    fn released_migrations_are_never_edited() {
        for (backend, version, checksum) in RELEASED_MIGRATIONS {
            let migrator = match backend {
                "mysql" => &dialect::MYSQL_MIGRATOR,
                _ => &dialect::SQLITE_MIGRATOR,
            };
            let migration = migrator
                .iter()
                .find(|m| m.version == version)
                .expect("released migration");
            assert_eq!(
                tollgate_wire::to_hex(&migration.checksum),
                checksum,
                "{backend} migration {version} was edited"
            );
        }
    }
}
