//! The usage ledger in the database: ingestion (the batch and its rollups
//! in one transaction), summaries, series and pruning, once for both
//! backends.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;

use sqlx::migrate::Migrate;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};
use time::OffsetDateTime;
use tollgate_wire::UsageRecord;

use super::dialect::Dialect;
use super::rollup::{self, Grain};
use super::sql::RowShape;
use super::usage_log::{log_row, select_log};
use super::{
    fresh_records, record_time, rollup_table, sql, summary_parts, InsertRows, LogFilter,
    ModelSummaryRow, SeriesRow, SqlStore, StoreError, SummaryBy, SummaryFilter, UsageInsert,
    UsageLogRow, UsageSummaryRow, INSERT_ATTEMPTS, INSERT_CHUNK_ROWS, PRUNE_MAX_BATCH_ROWS,
};
use crate::domain::price::{check_model, PriceBook};

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
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Option<DB::Time>: Encode<'q, DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    /// Which of `ids` name a key.
    pub async fn key_ids_among(&self, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        let mut known = Vec::new();
        for chunk in sql::statement_chunks(ids, INSERT_CHUNK_ROWS) {
            let text = sql::known_key_ids(chunk.len());
            let mut query = sqlx::query_scalar::<_, i64>(&text);
            for id in chunk {
                query = query.bind(*id);
            }
            known.extend(query.fetch_all(self.pool()).await?);
        }
        Ok(known)
    }

    /// Whether a key has this id.
    pub async fn key_exists(&self, id: i64) -> Result<bool, StoreError> {
        Ok(!self.key_ids_among(&[id]).await?.is_empty())
    }

    /// See [`Store::insert_usage`](super::Store::insert_usage).
    pub async fn insert_usage(&self, records: &[UsageRecord]) -> Result<UsageInsert, StoreError> {
        if records.is_empty() {
            return Ok(UsageInsert::Stored { inserted: 0 });
        }
        let wanted: BTreeSet<i64> = records.iter().map(|r| r.api_key_id).collect();
        let wanted: Vec<i64> = wanted.into_iter().collect();
        let known: HashSet<i64> = self.key_ids_among(&wanted).await?.into_iter().collect();
        if let Some((index, record)) = records
            .iter()
            .enumerate()
            .find(|(_, r)| !known.contains(&r.api_key_id))
        {
            return Ok(UsageInsert::UnknownKey {
                index,
                api_key_id: record.api_key_id,
            });
        }
        // Each LLM row is priced once, here, by the prices of the batch's
        // models at its own time; its row and its rollups store that cost.
        // A model no price can name (not visible ASCII) has none: it is
        // not looked up (MySQL would refuse to compare it with the ascii
        // column).
        let models: BTreeSet<&str> = records
            .iter()
            .filter_map(|r| r.llm.as_ref().map(|l| l.model.as_str()))
            .filter(|m| check_model(m).is_ok())
            .collect();
        let models: Vec<&str> = models.into_iter().collect();
        let prices = self.price_book(&models).await?;
        // First the whole batch in one statement, as if no record were
        // stored yet (the usual case). When that skipped some (a retried
        // batch, or one racing its original), look up which are stored and
        // insert the others row by row: each row's own count says whether
        // this batch stored it, so a batch racing others still finishes
        // (found by CI: eight overlapping senders could lose the whole-batch
        // race five times running). The rollups get exactly the rows
        // inserted, in the same transaction.
        let mut how = InsertRows::Whole;
        let mut stored: HashSet<&str> = HashSet::new();
        for attempt in 1..=INSERT_ATTEMPTS {
            let fresh = fresh_records(records, &stored);
            if fresh.is_empty() {
                return Ok(UsageInsert::Stored { inserted: 0 });
            }
            match self.insert_usage_rows(&fresh, how, &prices).await {
                Ok(Some(inserted)) => return Ok(UsageInsert::Stored { inserted }),
                Ok(None) => how = InsertRows::EachRow,
                Err(StoreError::Unavailable(e))
                    if DB::is_deadlock(&e) && attempt < INSERT_ATTEMPTS =>
                {
                    tracing::debug!(attempt, "usage batch deadlocked with another; retrying");
                }
                Err(e) => return Err(e),
            }
            stored = self.stored_request_ids(records).await?;
        }
        Err(StoreError::Unavailable(sqlx::Error::Protocol(format!(
            "a usage batch kept racing other batches of the same request ids \
             ({INSERT_ATTEMPTS} attempts); nothing was stored"
        ))))
    }

    /// Which of the records' request ids are in `usage_log` already.
    async fn stored_request_ids<'a>(
        &self,
        records: &'a [UsageRecord],
    ) -> Result<HashSet<&'a str>, StoreError> {
        let ids: Vec<&str> = records.iter().map(|r| r.request_id.as_str()).collect();
        let mut stored = HashSet::new();
        for chunk in ids.chunks(INSERT_CHUNK_ROWS) {
            // Read as bytes: MySQL reports the utf8mb4_bin column as binary.
            let text = sql::stored_request_ids(chunk.len());
            let mut query = sqlx::query_scalar(&text).persistent(false);
            for id in chunk {
                query = query.bind(*id);
            }
            let found: Vec<Vec<u8>> = query.fetch_all(self.pool()).await?;
            stored.extend(found);
        }
        Ok(ids
            .into_iter()
            .filter(|id| stored.contains(id.as_bytes()))
            .collect())
    }

    /// Inserts a batch's fresh records `how` it is told, in one transaction
    /// with their rollups; `None` when a whole batch met rows another batch
    /// stored meanwhile (nothing kept). Each LLM row is priced by `prices`.
    async fn insert_usage_rows(
        &self,
        records: &[&UsageRecord],
        how: InsertRows,
        prices: &PriceBook,
    ) -> Result<Option<u64>, StoreError> {
        let mut rows = records
            .iter()
            .map(|r| record_time(r).map(|t| (*r, DB::db_time(t))))
            .collect::<Result<Vec<_>, _>>()?;
        // One lock order for every batch: two overlapping batches (a retry
        // racing its original) wait for each other instead of deadlocking
        // on MySQL. On SQLite the first statement writes, so the transaction
        // holds the one write lock from its start: batches are stored one
        // after another. The rows of each shape go in together.
        rows.sort_by(|a, b| {
            (RowShape::of(a.0), &a.0.request_id).cmp(&(RowShape::of(b.0), &b.0.request_id))
        });

        let mut tx = self.pool().begin().await?;
        let mut ours: Vec<&UsageRecord> = Vec::with_capacity(rows.len());
        let (verb, on_duplicate) = DB::INSERT_USAGE;
        let mut rest = &rows[..];
        while let Some((first, _)) = rest.first() {
            let shape = RowShape::of(first);
            let same = rest.partition_point(|(r, _)| RowShape::of(r) == shape);
            let (group, after) = rest.split_at(same);
            rest = after;
            for statement in sql::statement_chunks(group, how.rows_per_statement()) {
                // Rows whose request_id is stored already are skipped and
                // not counted in rows_affected. The statement is one of a
                // few per connection (`sql::STATEMENT_ROWS` by shape), kept
                // prepared in the connection's statement cache.
                let text = sql::insert_usage(verb, shape, statement.len(), on_duplicate);
                let insert = sql::bind_usage::<DB, DB::Time>(sqlx::query(&text), statement, prices);
                let inserted = DB::rows_affected(&insert.execute(&mut *tx).await?);
                if !how.keep(&mut ours, statement, inserted) {
                    // Another batch stored some of these meanwhile: the caller
                    // looks them up and inserts the others row by row.
                    tx.rollback().await?;
                    return Ok(None);
                }
            }
        }
        for grain in Grain::KEPT {
            let deltas = rollup::deltas(ours.iter().copied(), grain, prices);
            let rows: Vec<_> = deltas
                .iter()
                .map(|d| (d, DB::db_time(d.bucket_start)))
                .collect();
            for chunk in sql::statement_chunks(&rows, INSERT_CHUNK_ROWS) {
                let text = sql::upsert_rollups(rollup_table(grain), &DB::UPSERT, chunk.len());
                let upsert = sql::bind_rollups::<DB, DB::Time>(sqlx::query(&text), chunk);
                upsert.execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(Some(ours.len() as u64))
    }

    /// See [`Store::usage_summary`](super::Store::usage_summary).
    pub async fn usage_summary(
        &self,
        filter: &SummaryFilter,
    ) -> Result<Vec<UsageSummaryRow>, StoreError> {
        let rows = self.summary_rows(filter, SummaryBy::Outcome).await?;
        let currency = self.price_currency().await?;
        rows.iter()
            .map(|row| {
                let mut row = sql::summary_row(row)?;
                row.totals.cost.in_currency(currency);
                Ok(row)
            })
            .collect()
    }

    /// See [`Store::usage_summary_by_model`](super::Store::usage_summary_by_model).
    pub async fn usage_summary_by_model(
        &self,
        filter: &SummaryFilter,
    ) -> Result<Vec<ModelSummaryRow>, StoreError> {
        let rows = self.summary_rows(filter, SummaryBy::Model).await?;
        let currency = self.price_currency().await?;
        rows.iter()
            .map(|row| {
                let mut row = sql::model_summary_row(row)?;
                row.totals.cost.in_currency(currency);
                Ok(row)
            })
            .collect()
    }

    /// The rollups' sums over `filter`, per key and `by`.
    async fn summary_rows(
        &self,
        filter: &SummaryFilter,
        by: SummaryBy,
    ) -> Result<Vec<DB::Row>, StoreError> {
        let parts: Vec<_> = summary_parts(filter.since, filter.until)
            .into_iter()
            .map(|p| p.map(DB::db_time))
            .collect();
        let text = sql::usage_summary(DB::INT_TYPE, by, filter.api_key_id, &parts);
        let query =
            sql::bind_summary::<DB, DB::Time>(sqlx::query(&text), filter.api_key_id, &parts);
        Ok(query.fetch_all(self.pool()).await?)
    }

    /// See [`Store::usage_log`](super::Store::usage_log).
    pub async fn usage_log(&self, filter: &LogFilter) -> Result<Vec<UsageLogRow>, StoreError> {
        let text = select_log(filter.since.is_some());
        let mut query = sqlx::query(&text).bind(filter.api_key_id);
        if let Some(since) = filter.since {
            query = query.bind(DB::db_time(since));
        }
        let rows = query
            .bind(i64::from(filter.limit))
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                let created_at = DB::time_column(row, "created_at")?
                    .ok_or_else(|| StoreError::Corrupt("usage_log.created_at is NULL".into()))?;
                log_row(row, created_at)
            })
            .collect()
    }

    /// See [`Store::usage_series`](super::Store::usage_series).
    pub async fn usage_series(
        &self,
        api_key_id: i64,
        grain: Grain,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<SeriesRow>, StoreError> {
        let (from, to) = (DB::db_time(from), DB::db_time(to));
        let minute = DB::minute_text;
        let text = match grain.table() {
            None => sql::minute_series(DB::INT_TYPE, minute, DB::exact_text),
            Some(table) => sql::rollup_series(table, minute),
        };
        let rows = sqlx::query(&text)
            .bind(api_key_id)
            .bind(from)
            .bind(to)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(sql::series_row).collect()
    }

    /// See [`Store::prune_usage`](super::Store::prune_usage).
    pub async fn prune_usage<F, Fut>(
        &self,
        before: OffsetDateTime,
        batch_rows: usize,
        mut progress: F,
    ) -> Result<u64, StoreError>
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = ()>,
    {
        let batch_rows = batch_rows.clamp(1, PRUNE_MAX_BATCH_ROWS);
        let keys: Vec<i64> = sqlx::query_scalar(sql::USAGE_KEY_IDS)
            .fetch_all(self.pool())
            .await?;
        let mut deleted = 0;
        for key in keys {
            loop {
                let done = self.prune_usage_batch(key, before, batch_rows).await?;
                deleted += done;
                if done > 0 {
                    progress(deleted).await;
                }
                if done < batch_rows as u64 {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes up to `batch_rows` of key `api_key_id`'s oldest `usage_log`
    /// rows created before `before`.
    async fn prune_usage_batch(
        &self,
        api_key_id: i64,
        before: OffsetDateTime,
        batch_rows: usize,
    ) -> Result<u64, StoreError> {
        let limit = i64::try_from(batch_rows).unwrap_or(i64::MAX);
        let ids: Vec<i64> = sqlx::query_scalar(sql::PRUNABLE_IDS)
            .bind(api_key_id)
            .bind(DB::db_time(before))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let text = sql::delete_usage_ids(ids.len());
        let mut delete = sqlx::query(&text).persistent(false);
        for id in &ids {
            delete = delete.bind(*id);
        }
        let done = delete.execute(self.pool()).await?;
        Ok(DB::rows_affected(&done))
    }
}
