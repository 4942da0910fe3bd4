//! One key's ledger rows, newest first (`tollgate usage log`,
//! `GET /v1/usage/log`): which rows a listing asks for, how its input is
//! read (the CLI and the admin API alike), the statement and a row as it is
//! reported.
//!
//! It reads `usage_log` through its (api_key_id, created_at) index, so a
//! listing costs its limit in rows whatever the ledger's size; rows that
//! `usage prune` deleted are not listed (the rollups keep their sums).

use serde::Serialize;
use sqlx::{ColumnIndex, Decode, Row, Type};
use time::OffsetDateTime;
use tollgate_wire::TokenUsage;

use super::sql::text_column;
use super::StoreError;
use crate::domain::clock::{format_rfc3339, parse_since};

/// Rows a listing returns unless told otherwise.
pub const DEFAULT_LOG_LIMIT: u32 = 100;

/// Most rows one listing returns.
pub const MAX_LOG_LIMIT: u32 = 10_000;

/// Which rows a listing returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter {
    /// The key whose rows are listed.
    pub api_key_id: i64,
    /// Rows created at or after this instant; all without one.
    pub since: Option<OffsetDateTime>,
    /// At most this many, 1 to [`MAX_LOG_LIMIT`].
    pub limit: u32,
}

/// Why a listing's input was refused: the input at fault (`key`, `since`,
/// `limit`) and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogInputError {
    pub field: &'static str,
    pub message: String,
}

/// Reads a listing's input: `key` a key id (a positive integer), `since`
/// a duration back from `now` (15m, 2h, 7d) or an RFC 3339 instant,
/// `limit` a count from 1 to [`MAX_LOG_LIMIT`] ([`DEFAULT_LOG_LIMIT`]
/// without one).
pub fn log_filter(
    key: &str,
    since: Option<&str>,
    limit: Option<&str>,
    now: OffsetDateTime,
) -> Result<LogFilter, LogInputError> {
    let refuse = |field, message| LogInputError { field, message };
    let api_key_id = key
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            refuse(
                "key",
                format!("{key:?} is not a key id (a positive integer)"),
            )
        })?;
    let since = since
        .map(|s| parse_since(s, now))
        .transpose()
        .map_err(|message| refuse("since", message))?;
    let limit = match limit {
        None => DEFAULT_LOG_LIMIT,
        Some(text) => text
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LOG_LIMIT).contains(n))
            .ok_or_else(|| {
                refuse(
                    "limit",
                    format!("{text:?} is not a row count from 1 to {MAX_LOG_LIMIT}"),
                )
            })?,
    };
    Ok(LogFilter {
        api_key_id,
        since,
        limit,
    })
}

/// One ledger row as a listing reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageLogRow {
    pub request_id: String,
    /// The LLM API shape (`openai.chat`, ...); `None` for other calls.
    pub api: Option<String>,
    /// The model an LLM call named; `None` for other calls.
    pub model: Option<String>,
    pub streamed: bool,
    /// The call's tokens; all 0 for other calls.
    #[serde(flatten)]
    pub tokens: TokenUsage,
    /// `reported`, `estimated`, or `none` for a call that was not an LLM call.
    pub usage_source: String,
    /// What the LLM call cost in micro-units (millionths of `currency`),
    /// computed once at ingestion; `None` for other calls and unpriced ones.
    pub cost_micros: Option<i64>,
    pub currency: Option<String>,
    /// An LLM call whose model had no price at its time (or stored before
    /// costs were kept): never a cost of 0. False for other calls.
    pub unpriced: bool,
    pub status_code: i64,
    pub outcome: String,
    pub request_bytes: i64,
    pub response_bytes: i64,
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub timestamp: String,
}

/// The listing's statement; binds the key id, `since` when the filter has
/// one, and the limit. Read each row with [`log_row`] (its `created_at`
/// with the dialect's time reader).
pub fn select_log(with_since: bool) -> String {
    format!(
        "SELECT request_id, api, model, streamed, input_tokens, output_tokens, \
         cached_input_tokens, reasoning_tokens, usage_source, cost_micros, currency, \
         status_code, outcome, \
         request_bytes, response_bytes, created_at FROM usage_log WHERE api_key_id = ?{} \
         ORDER BY created_at DESC, id DESC LIMIT ?",
        if with_since {
            " AND created_at >= ?"
        } else {
            ""
        }
    )
}

/// One row of [`select_log`], created at `created_at`.
pub fn log_row<R: Row>(row: &R, created_at: OffsetDateTime) -> Result<UsageLogRow, StoreError>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: ColumnIndex<R>,
{
    let count = |column: &str| -> Result<u64, StoreError> {
        let value: i64 = row.try_get(column)?;
        u64::try_from(value)
            .map_err(|_| StoreError::Corrupt(format!("usage_log.{column} is negative")))
    };
    let model: Option<String> = row.try_get("model")?;
    let cost_micros: Option<i64> = row.try_get("cost_micros")?;
    Ok(UsageLogRow {
        // Read as bytes: MySQL reports the utf8mb4_bin column as binary.
        request_id: text_column(row, "request_id")?
            .ok_or_else(|| StoreError::Corrupt("usage_log.request_id is NULL".into()))?,
        api: row.try_get("api")?,
        unpriced: model.is_some() && cost_micros.is_none(),
        model,
        cost_micros,
        // Read as bytes: MySQL reports the ascii_bin column as binary.
        currency: text_column(row, "currency")?,
        streamed: row.try_get::<i64, _>("streamed")? != 0,
        tokens: TokenUsage {
            input_tokens: count("input_tokens")?,
            output_tokens: count("output_tokens")?,
            cached_input_tokens: count("cached_input_tokens")?,
            reasoning_tokens: count("reasoning_tokens")?,
        },
        usage_source: row.try_get("usage_source")?,
        status_code: row.try_get("status_code")?,
        outcome: row.try_get("outcome")?,
        request_bytes: row.try_get("request_bytes")?,
        response_bytes: row.try_get("response_bytes")?,
        timestamp: format_rfc3339(created_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-02 03:36:00 UTC);

    #[test]
    fn a_listing_defaults_to_all_time_and_the_default_limit() {
        assert_eq!(
            log_filter("7", None, None, NOW),
            Ok(LogFilter {
                api_key_id: 7,
                since: None,
                limit: DEFAULT_LOG_LIMIT
            })
        );
        let filter = log_filter("7", Some("1h"), Some("10000"), NOW).unwrap();
        assert_eq!(filter.since, Some(datetime!(2026-12-02 02:36:00 UTC)));
        assert_eq!(filter.limit, MAX_LOG_LIMIT);
        let filter = log_filter("7", Some("2026-12-01T10:15:00Z"), Some("1"), NOW).unwrap();
        assert_eq!(filter.since, Some(datetime!(2026-12-01 10:15:00 UTC)));
    }

    #[test]
    fn a_listing_names_the_input_at_fault() {
        for (key, since, limit, field) in [
            ("abc", None, None, "key"),
            ("0", None, None, "key"),
            ("-3", None, None, "key"),
            ("", None, None, "key"),
            ("1", Some("soon"), None, "since"),
            ("1", Some("30000d"), None, "since"),
            ("1", None, Some("0"), "limit"),
            ("1", None, Some("10001"), "limit"),
            ("1", None, Some("ten"), "limit"),
            ("1", None, Some("-1"), "limit"),
        ] {
            let err = log_filter(key, since, limit, NOW).unwrap_err();
            assert_eq!(err.field, field, "{key:?} {since:?} {limit:?}");
            assert!(!err.message.is_empty());
        }
    }

    #[test]
    fn the_statement_binds_since_only_when_asked() {
        assert!(!select_log(false).contains("created_at >="));
        assert!(select_log(true).contains("AND created_at >= ? ORDER BY created_at DESC"));
    }
}
