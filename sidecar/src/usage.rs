//! The usage ledger over HTTP: batched, idempotent ingestion from the Envoy
//! filter, and per-key summaries for people.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Serialize;
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
        return Err(ApiError::BatchTooLarge {
            records: records.len(),
        });
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummaryQuery {
    /// Only this key id (`key=`).
    pub key: Option<i64>,
    /// A duration back from now (`15m`, `2h`, `7d`) or an RFC 3339 instant (`since=`).
    pub since: Option<String>,
}

impl SummaryQuery {
    /// Reads the query's parameters in order. An unknown, repeated or
    /// malformed parameter is refused with 400 naming it.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, ApiError> {
        let mut query = SummaryQuery::default();
        for (name, value) in pairs {
            let repeated = match name.as_str() {
                "key" => {
                    let id = value.parse().map_err(|_| {
                        ApiError::invalid_field(
                            "key",
                            format!("key must be a key id (an integer), not {value:?}"),
                        )
                    })?;
                    query.key.replace(id).is_some()
                }
                "since" => query.since.replace(value).is_some(),
                _ => {
                    let message = format!(
                        "unknown query parameter {name:?}; this endpoint takes key and since"
                    );
                    return Err(ApiError::invalid_field(name, message));
                }
            };
            if repeated {
                let message = format!("the query parameter {name} is given more than once");
                return Err(ApiError::invalid_field(name, message));
            }
        }
        Ok(query)
    }
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
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<SummaryReply>, ApiError> {
    let Query(pairs) = pairs.map_err(|rejection| ApiError::Invalid {
        field: None,
        message: rejection.body_text(),
    })?;
    let query = SummaryQuery::from_pairs(pairs)?;
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
    use crate::error::ErrorCode;
    use tollgate_wire::{Outcome, MAX_TIMESTAMP_MS};

    fn record(i: usize) -> UsageRecord {
        UsageRecord {
            request_id: format!("req-{i}"),
            api_key_id: 1,
            method: "POST".into(),
            endpoint: "/proxy/analyze".into(),
            status_code: 200,
            outcome: Outcome::Allowed,
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
        assert_eq!(err.field(), Some("[3].status_code"));
        batch[3].status_code = 200;
        batch[4].timestamp_ms = MAX_TIMESTAMP_MS + 1;
        let err = validate_batch(&batch).unwrap_err();
        assert_eq!(err.field(), Some("[4].timestamp_ms"));
    }

    #[test]
    fn oversized_batches_are_refused() {
        let batch: Vec<_> = (0..=MAX_USAGE_BATCH).map(record).collect();
        let err = validate_batch(&batch).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BatchTooLarge);
        assert!(err.to_string().contains("1001"), "{err}");
    }

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn summary_queries_name_the_parameter_at_fault() {
        assert_eq!(
            SummaryQuery::from_pairs(pairs(&[("since", "7d"), ("key", "3")])).unwrap(),
            SummaryQuery {
                key: Some(3),
                since: Some("7d".into())
            }
        );
        assert_eq!(
            SummaryQuery::from_pairs(Vec::new()).unwrap(),
            SummaryQuery::default()
        );
        for (query, field) in [
            (&[("key", "abc")][..], "key"),
            (&[("key", "")][..], "key"),
            (&[("since", "1d"), ("key", "1"), ("key", "2")][..], "key"),
            (&[("since", "1d"), ("since", "2d")][..], "since"),
            (&[("keys", "1")][..], "keys"),
        ] {
            let err = SummaryQuery::from_pairs(pairs(query)).unwrap_err();
            assert_eq!(err.field(), Some(field), "{query:?}");
            assert_eq!(err.code(), ErrorCode::InvalidRequest);
        }
    }
}
