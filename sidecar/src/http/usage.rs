//! The usage ledger over HTTP: batched, idempotent ingestion from the Envoy
//! filter, per-key summaries for people (read from the rollups, per outcome
//! or per model), and one key's rows, newest first.

use axum::routing::{get, post};
use axum::Router;
use std::time::Duration;
use tollgate_wire::USAGE_PATH;

use axum::extract::{RawQuery, State};
use axum::Json;
use time::OffsetDateTime;
use tollgate_wire::{record_field, IngestReply, UsageRecord, MAX_USAGE_BATCH};

use crate::domain::clock::{format_rfc3339, now_ms, to_unix_ms, LATEST_ACCEPTED_MS};
use crate::http::error::{ApiError, Undone};
use crate::http::extract::{
    query_pairs, repeated_parameter, unknown_parameter, AdminCaller, InternalCaller, JsonBody,
};
use crate::http::AppState;
use crate::store::usage_log::log_filter;
use crate::store::{
    summary_filter, ModelSummaryRow, SummaryBy, SummaryFilter, SummaryReply, UsageInsert,
    UsageLogRow, UsageSummaryRow,
};

/// How far from the sidecar's clock a usage record's `timestamp_ms` may be,
/// either way, unless `--usage-max-skew` says otherwise.
pub const DEFAULT_USAGE_MAX_SKEW: Duration = Duration::from_secs(24 * 3_600);

/// The `timestamp_ms` values ingestion accepts: within a skew of the
/// sidecar's clock, either way. A record can be honestly old (the filter
/// keeps records while the sidecar is down), but not older than the skew:
/// the ledger refuses what it cannot tell from a forged instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    pub earliest_ms: u64,
    pub latest_ms: u64,
    /// The skew the window was made with, for the refusal's message.
    pub max_skew: Duration,
}

impl TimeWindow {
    /// `now_ms` ± `max_skew`, clipped to the instants the sidecar accepts
    /// (`crate::domain::clock`: the Unix epoch up to year 3000).
    pub fn around(now_ms: u64, max_skew: Duration) -> TimeWindow {
        let skew_ms = u64::try_from(max_skew.as_millis()).unwrap_or(u64::MAX);
        TimeWindow {
            earliest_ms: now_ms.saturating_sub(skew_ms),
            latest_ms: now_ms.saturating_add(skew_ms).min(LATEST_ACCEPTED_MS),
            max_skew,
        }
    }

    /// Whether an instant falls inside.
    pub fn contains(&self, timestamp_ms: u64) -> bool {
        (self.earliest_ms..=self.latest_ms).contains(&timestamp_ms)
    }
}

/// Checks every record of a batch against the wire rules, the stores' time
/// range and the time `window`; the error names the record and field, e.g.
/// `[3].status_code`.
pub fn validate_batch(records: &[UsageRecord], window: TimeWindow) -> Result<(), ApiError> {
    if records.len() > MAX_USAGE_BATCH {
        return Err(ApiError::BatchTooLarge {
            records: records.len(),
        });
    }
    for (i, record) in records.iter().enumerate() {
        if let Err(e) = record.validate() {
            return Err(ApiError::invalid_field(
                record_field(i, e.field),
                format!("record {i}: {} {}", e.field, e.reason),
            ));
        }
        if !window.contains(record.timestamp_ms) {
            return Err(ApiError::invalid_field(
                record_field(i, "timestamp_ms"),
                format!(
                    "record {i}: timestamp_ms {} is more than {}s away from the sidecar's \
                     clock (TOLLGATE_USAGE_MAX_SKEW); a record older than that is refused",
                    record.timestamp_ms,
                    window.max_skew.as_secs()
                ),
            ));
        }
    }
    Ok(())
}

/// The refusal of a batch whose record `index` names a key id no key has.
fn unknown_key(index: usize, api_key_id: i64) -> ApiError {
    ApiError::invalid_field(
        record_field(index, "api_key_id"),
        format!("record {index}: api_key_id {api_key_id} is not a registered key"),
    )
}

/// `POST /v1/internal/usage`: stores a batch in one transaction and answers
/// only after the commit; a re-sent record counts as a duplicate. A batch
/// with an impossible record (see [`validate_batch`], or a key id no key
/// has) is refused whole with 400 naming that record.
pub async fn ingest(
    _caller: InternalCaller,
    State(state): State<AppState>,
    JsonBody(records): JsonBody<Vec<UsageRecord>>,
) -> Result<Json<IngestReply>, ApiError> {
    let window = TimeWindow::around(to_unix_ms(now_ms()), state.usage_max_skew);
    validate_batch(&records, window)?;
    let received = records.len() as u64;
    let inserted = match state
        .store
        .insert_usage(&records)
        .await
        .map_err(ApiError::storing)?
    {
        UsageInsert::Stored { inserted } => inserted,
        UsageInsert::UnknownKey { index, api_key_id } => {
            return Err(unknown_key(index, api_key_id))
        }
    };
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
    /// Rows per key and outcome (the default) or per key and model (`by=`).
    pub by: Option<SummaryBy>,
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
                "by" => {
                    let by = SummaryBy::from_name(&value).ok_or_else(|| {
                        ApiError::invalid_field(
                            "by",
                            format!("by must be outcome or model, not {value:?}"),
                        )
                    })?;
                    query.by.replace(by).is_some()
                }
                _ => return Err(unknown_parameter(&name, "key, since and by")),
            };
            if repeated {
                return Err(repeated_parameter(&name));
            }
        }
        Ok(query)
    }
}

/// Reads the query string of `GET /v1/usage/summary` (`key=3&since=7d`)
/// at `now` into the store's filter; a refusal is a 400 naming the
/// parameter, and an accepted `since` is within the accepted range
/// (`crate::domain::clock`). The handler's whole reading of its input, as a plain
/// function for the fuzzer (`fuzz/fuzz_targets/admin_query.rs`).
pub fn parse_summary_query(query: &str, now: OffsetDateTime) -> Result<SummaryFilter, ApiError> {
    parse_summary_request(query, now).map(|(filter, _)| filter)
}

/// [`parse_summary_query`] and the grouping asked for (`by=`).
pub fn parse_summary_request(
    query: &str,
    now: OffsetDateTime,
) -> Result<(SummaryFilter, SummaryBy), ApiError> {
    let query = SummaryQuery::from_pairs(query_pairs(query))?;
    let filter = summary_filter(query.key, query.since.as_deref(), now)
        .map_err(|message| ApiError::invalid_field("since", message))?;
    Ok((filter, query.by.unwrap_or_default()))
}

/// The reply of `GET /v1/usage/summary`: rows per outcome or per model.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Summary {
    ByOutcome(SummaryReply<UsageSummaryRow>),
    ByModel(SummaryReply<ModelSummaryRow>),
}

/// `GET /v1/usage/summary?key=ID&since=7d&by=model`: requests, bytes,
/// units and tokens per key and outcome, or per key and model.
pub async fn summary(
    _caller: AdminCaller,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Summary>, ApiError> {
    let now = OffsetDateTime::now_utc();
    let (filter, by) = parse_summary_request(query.as_deref().unwrap_or_default(), now)?;
    let since = filter.since.map(format_rfc3339);
    let unread = ApiError::reading(Undone::ReadSummary);
    Ok(Json(match by {
        SummaryBy::Outcome => Summary::ByOutcome(SummaryReply {
            since,
            rows: state.store.usage_summary(&filter).await.map_err(unread)?,
        }),
        SummaryBy::Model => Summary::ByModel(SummaryReply {
            since,
            rows: state
                .store
                .usage_summary_by_model(&filter)
                .await
                .map_err(unread)?,
        }),
    }))
}

/// `GET /v1/usage/log?key=ID&since=1h&limit=100`: key `ID`'s rows, newest
/// first (`tollgate usage log`); 404 when no key has the id. Every
/// parameter but `key` is optional; an unknown, repeated or malformed one
/// is refused with 400 naming it.
pub async fn log(
    _caller: AdminCaller,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<UsageLogRow>>, ApiError> {
    let mut key = None;
    let mut since = None;
    let mut limit = None;
    for (name, value) in query_pairs(query.as_deref().unwrap_or_default()) {
        let slot = match name.as_str() {
            "key" => &mut key,
            "since" => &mut since,
            "limit" => &mut limit,
            _ => return Err(unknown_parameter(&name, "key, since and limit")),
        };
        if slot.replace(value).is_some() {
            return Err(repeated_parameter(&name));
        }
    }
    let key = key.ok_or_else(|| {
        ApiError::invalid_field("key", "the query parameter key (a key id) is required")
    })?;
    let filter = log_filter(
        &key,
        since.as_deref(),
        limit.as_deref(),
        OffsetDateTime::now_utc(),
    )
    .map_err(|e| ApiError::invalid_field(e.field, e.message))?;
    let unread = || ApiError::reading(Undone::ReadUsageLog);
    if !state
        .store
        .key_exists(filter.api_key_id)
        .await
        .map_err(unread())?
    {
        return Err(ApiError::KeyNotFound(filter.api_key_id));
    }
    let rows = state.store.usage_log(&filter).await.map_err(unread())?;
    Ok(Json(rows))
}

/// The filter's usage batches (internal token).
pub fn router() -> Router<AppState> {
    Router::new().route(USAGE_PATH, post(ingest))
}

/// The usage summary (admin token).
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/v1/usage/summary", get(summary))
        .route("/v1/usage/log", get(log))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::ErrorCode;
    use tollgate_wire::{Outcome, MAX_BODY_BYTES, MAX_RESPONSE_BYTES, MAX_TIMESTAMP_MS, MAX_UNITS};

    const NOW_MS: u64 = 1_764_000_000_000;
    const DAY: Duration = Duration::from_secs(86_400);

    fn window() -> TimeWindow {
        TimeWindow::around(NOW_MS, DAY)
    }

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
            units: 5,
            duration_ms: 3,
            timestamp_ms: NOW_MS,
            llm: None,
        }
    }

    #[test]
    fn batches_are_checked_record_by_record() {
        let mut batch: Vec<_> = (0..5).map(record).collect();
        assert!(validate_batch(&batch, window()).is_ok());
        batch[3].status_code = 42;
        let err = validate_batch(&batch, window()).unwrap_err();
        assert_eq!(err.field(), Some("[3].status_code"));
        batch[3].status_code = 200;
        batch[4].timestamp_ms = MAX_TIMESTAMP_MS + 1;
        let err = validate_batch(&batch, window()).unwrap_err();
        assert_eq!(err.field(), Some("[4].timestamp_ms"));
    }

    #[test]
    fn counts_no_exchange_can_have_are_refused() {
        let mut batch: Vec<_> = (0..4).map(record).collect();
        batch[3].request_bytes = i64::MAX as u64;
        let err = validate_batch(&batch, window()).unwrap_err();
        assert_eq!(err.field(), Some("[3].request_bytes"));
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
        batch[3].request_bytes = MAX_BODY_BYTES;
        batch[1].response_bytes = MAX_RESPONSE_BYTES + 1;
        let err = validate_batch(&batch, window()).unwrap_err();
        assert_eq!(err.field(), Some("[1].response_bytes"));
        batch[1].response_bytes = MAX_RESPONSE_BYTES;
        assert!(validate_batch(&batch, window()).is_ok());
        batch[2].units = MAX_UNITS + 1;
        let err = validate_batch(&batch, window()).unwrap_err();
        assert_eq!(err.field(), Some("[2].units"));
        batch[2].units = MAX_UNITS;
        assert!(validate_batch(&batch, window()).is_ok());
    }

    #[test]
    fn timestamps_far_from_now_are_refused() {
        let day_ms = DAY.as_millis() as u64;
        let mut batch: Vec<_> = (0..3).map(record).collect();
        for (ts, accepted) in [
            (NOW_MS - day_ms, true),
            (NOW_MS + day_ms, true),
            (NOW_MS - day_ms - 1, false),
            (NOW_MS + day_ms + 1, false),
            (0, false),
            (MAX_TIMESTAMP_MS, false),
        ] {
            batch[2].timestamp_ms = ts;
            let result = validate_batch(&batch, window());
            assert_eq!(result.is_ok(), accepted, "{ts}");
            if let Err(err) = result {
                assert_eq!(err.field(), Some("[2].timestamp_ms"), "{ts}");
                assert!(err.to_string().contains("86400s"), "{err}");
            }
        }
    }

    #[test]
    fn the_time_window_stays_within_what_stores_hold() {
        let w = TimeWindow::around(5, DAY);
        assert_eq!(
            (w.earliest_ms, w.latest_ms),
            (0, 5 + DAY.as_millis() as u64)
        );
        let w = TimeWindow::around(u64::MAX, Duration::MAX);
        assert_eq!((w.earliest_ms, w.latest_ms), (0, LATEST_ACCEPTED_MS));
        let w = TimeWindow::around(NOW_MS, Duration::ZERO);
        assert!(w.contains(NOW_MS) && !w.contains(NOW_MS + 1) && !w.contains(NOW_MS - 1));
    }

    #[test]
    fn an_unknown_key_is_refused_naming_its_record() {
        let err = unknown_key(4, 99);
        assert_eq!(err.field(), Some("[4].api_key_id"));
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
        assert!(err.to_string().contains("99"), "{err}");
    }

    #[test]
    fn oversized_batches_are_refused() {
        let batch: Vec<_> = (0..=MAX_USAGE_BATCH).map(record).collect();
        let err = validate_batch(&batch, window()).unwrap_err();
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
    fn summaries_start_at_the_hour_of_since() {
        let now = time::macros::datetime!(2026-12-02 03:36:39.5 UTC);
        let filter = summary_filter(Some(2), Some("2h"), now).unwrap();
        assert_eq!(filter.api_key_id, Some(2));
        assert_eq!(
            filter.since,
            Some(time::macros::datetime!(2026-12-02 01:00:00 UTC))
        );
        let filter = summary_filter(None, Some("2026-11-30T22:15:00+02:00"), now).unwrap();
        assert_eq!(
            filter.since,
            Some(time::macros::datetime!(2026-11-30 20:00:00 UTC))
        );
        assert_eq!(summary_filter(None, None, now).unwrap().since, None);
        assert!(summary_filter(None, Some("soon"), now).is_err());
    }

    #[test]
    fn summary_queries_name_the_parameter_at_fault() {
        assert_eq!(
            SummaryQuery::from_pairs(pairs(&[("since", "7d"), ("key", "3")])).unwrap(),
            SummaryQuery {
                key: Some(3),
                since: Some("7d".into()),
                by: None,
            }
        );
        assert_eq!(
            SummaryQuery::from_pairs(pairs(&[("by", "model")]))
                .unwrap()
                .by,
            Some(SummaryBy::Model)
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
            (&[("by", "api")][..], "by"),
            (&[("by", "model"), ("by", "outcome")][..], "by"),
            (&[("", "1")][..], "\"\""),
        ] {
            let err = SummaryQuery::from_pairs(pairs(query)).unwrap_err();
            assert_eq!(err.field(), Some(field), "{query:?}");
            assert_eq!(err.code(), ErrorCode::InvalidRequest);
        }
    }

    #[test]
    fn a_summary_query_is_read_whole_and_its_since_kept_in_range() {
        let now = time::macros::datetime!(2026-12-02 03:36:39 UTC);
        let filter = parse_summary_query("key=2&since=2026-12-01T10%3A15%3A00Z", now).unwrap();
        assert_eq!(filter.api_key_id, Some(2));
        assert_eq!(
            filter.since,
            Some(time::macros::datetime!(2026-12-01 10:00:00 UTC))
        );
        assert_eq!(parse_summary_query("", now).unwrap().since, None);
        for since in [
            "9999-12-31T23:59:59Z",
            "3000-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59-23:59",
            "30000d",
        ] {
            let query = format!("since={since}").replace('+', "%2B");
            let err = parse_summary_query(&query, now).unwrap_err();
            assert_eq!(err.field(), Some("since"), "{since}");
            assert_eq!(err.code(), ErrorCode::InvalidRequest, "{since}");
            assert!(err.to_string().contains("out of range"), "{since}: {err}");
        }
    }
}
