//! The usage ledger over HTTP: batched, idempotent ingestion from the Envoy
//! filter, and per-key summaries for people.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tollgate_wire::{IngestReply, UsageRecord, MAX_USAGE_BATCH};

use crate::app::AppState;
use crate::clock::{format_rfc3339, parse_since};
use crate::error::ApiError;
use crate::extract::{AdminCaller, InternalCaller, JsonBody};
use crate::store::{SummaryFilter, UsageSummaryRow};

/// Checks every record of a batch against the wire rules and the stores'
/// time range; the error names the record and field, e.g. `[3].status_code`.
pub fn validate_batch(records: &[UsageRecord]) -> Result<(), ApiError> {
    if records.len() > MAX_USAGE_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "a batch holds at most {MAX_USAGE_BATCH} records; this one has {}",
                records.len()
            ),
        ));
    }
    for (i, record) in records.iter().enumerate() {
        if let Err(e) = record.validate() {
            return Err(ApiError::invalid_field(
                format!("[{i}].{}", e.field),
                format!("record {i}: {} {}", e.field, e.reason),
            ));
        }
    }
    Ok(())
}

/// `POST /v1/internal/usage`: stores a batch in one transaction and answers
/// only after the commit; a re-sent record counts as a duplicate.
pub async fn ingest(
    _caller: InternalCaller,
    State(state): State<AppState>,
    JsonBody(records): JsonBody<Vec<UsageRecord>>,
) -> Result<Json<IngestReply>, ApiError> {
    validate_batch(&records)?;
    let received = records.len() as u64;
    let inserted = state.store.insert_usage(&records).await?;
    let duplicates = received.saturating_sub(inserted);
    state.metrics.record_ingest(inserted, duplicates);
    Ok(Json(IngestReply {
        received,
        inserted,
        duplicates,
    }))
}

/// Query of `GET /v1/usage/summary`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// Only this key id.
    pub key: Option<i64>,
    /// A duration back from now (`15m`, `2h`, `7d`) or an RFC 3339 instant.
    pub since: Option<String>,
}

/// Reply of `GET /v1/usage/summary` and `tollgate usage summary --json`.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryReply {
    /// RFC 3339 start of the window, when one was asked for.
    pub since: Option<String>,
    pub rows: Vec<UsageSummaryRow>,
}

/// Builds a store filter from `--key`/`--since` style input.
pub fn summary_filter(
    key: Option<i64>,
    since: Option<&str>,
    now: OffsetDateTime,
) -> Result<SummaryFilter, String> {
    Ok(SummaryFilter {
        api_key_id: key,
        since: since.map(|s| parse_since(s, now)).transpose()?,
    })
}

/// `GET /v1/usage/summary?key=ID&since=7d`: requests and bytes per key and outcome.
pub async fn summary(
    _caller: AdminCaller,
    State(state): State<AppState>,
    query: Result<Query<SummaryQuery>, QueryRejection>,
) -> Result<Json<SummaryReply>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        let text = rejection.body_text();
        let field = if text.contains("key") { "key" } else { "since" };
        ApiError::invalid_field(field, text)
    })?;
    let filter = summary_filter(query.key, query.since.as_deref(), OffsetDateTime::now_utc())
        .map_err(|message| ApiError::invalid_field("since", message))?;
    let rows = state.store.usage_summary(&filter).await?;
    Ok(Json(SummaryReply {
        since: filter.since.map(format_rfc3339),
        rows,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_wire::MAX_TIMESTAMP_MS;

    fn record(i: usize) -> UsageRecord {
        UsageRecord {
            request_id: format!("req-{i}"),
            api_key_id: 1,
            method: "POST".into(),
            endpoint: "/proxy/analyze".into(),
            status_code: 200,
            outcome: "allowed".into(),
            request_bytes: 10,
            response_bytes: 20,
            duration_ms: 3,
            timestamp_ms: 1_764_000_000_000,
        }
    }

    #[test]
    fn batches_are_checked_record_by_record() {
        let mut batch: Vec<_> = (0..5).map(record).collect();
        assert!(validate_batch(&batch).is_ok());
        batch[3].status_code = 42;
        let err = validate_batch(&batch).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("[3].status_code"));
        batch[3].status_code = 200;
        batch[4].timestamp_ms = MAX_TIMESTAMP_MS + 1;
        let err = validate_batch(&batch).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("[4].timestamp_ms"));
    }

    #[test]
    fn oversized_batches_are_refused() {
        let batch: Vec<_> = (0..=MAX_USAGE_BATCH).map(record).collect();
        let err = validate_batch(&batch).unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.code, "batch_too_large");
    }
}
