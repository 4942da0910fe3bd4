//! Wire types shared by the tollgate filter (inside Envoy) and the sidecar.
//!
//! The filter and the sidecar talk over two internal HTTP endpoints: key
//! verification and usage ingestion. Both sides use the types and limits in
//! this crate, so a change to the wire format is one change in one place.
//! The crate is dependency-light (serde only) so it builds for
//! `wasm32-wasip1` as well as for the host.

use serde::{Deserialize, Serialize};

/// Header carrying the shared secret on every internal (filter -> sidecar) call.
pub const INTERNAL_TOKEN_HEADER: &str = "x-tollgate-internal-token";

/// `POST` a [`VerifyRequest`], answered with a [`VerifyReply`].
pub const VERIFY_PATH: &str = "/v1/internal/keys/verify";

/// `POST` a JSON array of [`UsageRecord`], answered with an [`IngestReply`].
pub const USAGE_PATH: &str = "/v1/internal/usage";

/// Header the filter adds to every request it lets through, naming the key's id.
pub const KEY_ID_HEADER: &str = "x-tollgate-key-id";

/// Most records one ingestion call may carry; a larger batch is refused with 413.
pub const MAX_USAGE_BATCH: usize = 1000;

/// Longest `request_id` accepted in a usage record.
pub const MAX_REQUEST_ID_LEN: usize = 64;
/// Longest `method` accepted in a usage record.
pub const MAX_METHOD_LEN: usize = 16;
/// Longest `endpoint` accepted in a usage record; the filter truncates longer paths.
pub const MAX_ENDPOINT_LEN: usize = 512;
/// Longest `outcome` accepted in a usage record.
pub const MAX_OUTCOME_LEN: usize = 64;

/// Latest `timestamp_ms` accepted: the end of the year 9999, the last instant
/// a MySQL `DATETIME` column holds.
pub const MAX_TIMESTAMP_MS: u64 = 253_402_300_799_999;

/// The `outcome` of a request that the filter let through to the upstream.
pub const OUTCOME_ALLOWED: &str = "allowed";

/// Body of a key verification call: the key is never sent, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// Lowercase hex SHA-256 of the API key (64 characters).
    pub key_hash: String,
}

/// What the key registry knows of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyVerdict {
    /// Registered, not revoked, not past its expiry.
    Active,
    /// Registered and revoked.
    Revoked,
    /// Registered, not revoked, past its `expires_at`.
    Expired,
    /// No key with this hash is registered.
    NotFound,
}

impl KeyVerdict {
    /// The verdict as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyVerdict::Active => "active",
            KeyVerdict::Revoked => "revoked",
            KeyVerdict::Expired => "expired",
            KeyVerdict::NotFound => "not_found",
        }
    }
}

/// Answer to a [`VerifyRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReply {
    pub verdict: KeyVerdict,
    /// The key's id; absent for [`KeyVerdict::NotFound`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<i64>,
    /// When the key stops being valid, in seconds since the Unix epoch; absent
    /// when it never expires. Lets a cache stop trusting an `active` verdict
    /// at the right moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// One metered request, as the filter reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRecord {
    /// Request id minted by the gateway (never one a client chose); unique.
    pub request_id: String,
    /// Id of the API key the request presented.
    pub api_key_id: i64,
    /// HTTP method.
    pub method: String,
    /// Request path without the query string.
    pub endpoint: String,
    /// HTTP status sent to the client.
    pub status_code: u16,
    /// [`OUTCOME_ALLOWED`] or the error code the gateway answered with.
    pub outcome: String,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Response body bytes.
    pub response_bytes: u64,
    /// Time from request headers to the end of the response, in milliseconds.
    pub duration_ms: u64,
    /// When the request arrived, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// Why a [`UsageRecord`] is not acceptable: names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub reason: &'static str,
}

impl UsageRecord {
    /// Checks the limits the database columns impose, so a bad record is
    /// refused with a clear error instead of being truncated or failing a batch.
    pub fn validate(&self) -> Result<(), FieldError> {
        fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), FieldError> {
            if value.is_empty() {
                return Err(FieldError {
                    field,
                    reason: "must not be empty",
                });
            }
            if value.len() > max {
                return Err(FieldError {
                    field,
                    reason: "is too long",
                });
            }
            if value.chars().any(char::is_control) {
                return Err(FieldError {
                    field,
                    reason: "must not contain control characters",
                });
            }
            Ok(())
        }
        check_text("request_id", &self.request_id, MAX_REQUEST_ID_LEN)?;
        check_text("method", &self.method, MAX_METHOD_LEN)?;
        check_text("endpoint", &self.endpoint, MAX_ENDPOINT_LEN)?;
        check_text("outcome", &self.outcome, MAX_OUTCOME_LEN)?;
        if self.api_key_id <= 0 {
            return Err(FieldError {
                field: "api_key_id",
                reason: "must be a positive key id",
            });
        }
        if !(100..=599).contains(&self.status_code) {
            return Err(FieldError {
                field: "status_code",
                reason: "must be an HTTP status (100-599)",
            });
        }
        if self.timestamp_ms > MAX_TIMESTAMP_MS {
            return Err(FieldError {
                field: "timestamp_ms",
                reason: "is after the year 9999",
            });
        }
        // The stores keep these in signed 64-bit columns.
        for (field, value) in [
            ("request_bytes", self.request_bytes),
            ("response_bytes", self.response_bytes),
            ("duration_ms", self.duration_ms),
        ] {
            if value > i64::MAX as u64 {
                return Err(FieldError {
                    field,
                    reason: "is out of range",
                });
            }
        }
        Ok(())
    }
}

/// Answer to a usage ingestion call, sent only after the batch is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReply {
    /// Records in the batch.
    pub received: u64,
    /// Records stored by this call.
    pub inserted: u64,
    /// Records whose `request_id` was already stored (a retried batch).
    pub duplicates: u64,
}

/// The JSON error every tollgate component answers with.
///
/// `{"error": {"code": "...", "message": "..."}, "request_id": "..."}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable code (see the error table in the README).
    pub code: String,
    /// Text for a person.
    pub message: String,
    /// The input field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> UsageRecord {
        UsageRecord {
            request_id: "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
            api_key_id: 7,
            method: "POST".into(),
            endpoint: "/proxy/analyze".into(),
            status_code: 200,
            outcome: OUTCOME_ALLOWED.into(),
            request_bytes: 1024,
            response_bytes: 88,
            duration_ms: 3,
            timestamp_ms: 1_764_000_000_000,
        }
    }

    #[test]
    fn usage_record_round_trips_through_json() {
        let text = serde_json::to_string(&record()).unwrap();
        let back: UsageRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, record());
    }

    #[test]
    fn usage_record_refuses_unknown_fields() {
        let mut value = serde_json::to_value(record()).unwrap();
        value["extra"] = serde_json::json!(1);
        assert!(serde_json::from_value::<UsageRecord>(value).is_err());
    }

    #[test]
    fn validate_names_the_field_at_fault() {
        assert_eq!(record().validate(), Ok(()));
        let mut r = record();
        r.request_id = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        assert_eq!(r.validate().unwrap_err().field, "request_id");
        let mut r = record();
        r.status_code = 42;
        assert_eq!(r.validate().unwrap_err().field, "status_code");
        let mut r = record();
        r.api_key_id = 0;
        assert_eq!(r.validate().unwrap_err().field, "api_key_id");
        let mut r = record();
        r.endpoint = "/a\nb".into();
        assert_eq!(r.validate().unwrap_err().field, "endpoint");
        let mut r = record();
        r.timestamp_ms = MAX_TIMESTAMP_MS + 1;
        assert_eq!(r.validate().unwrap_err().field, "timestamp_ms");
        let mut r = record();
        r.request_bytes = u64::MAX;
        assert_eq!(r.validate().unwrap_err().field, "request_bytes");
    }

    #[test]
    fn verdicts_use_snake_case_on_the_wire() {
        let reply = VerifyReply {
            verdict: KeyVerdict::NotFound,
            key_id: None,
            expires_at: None,
        };
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"verdict":"not_found"}"#
        );
        let parsed: VerifyReply =
            serde_json::from_str(r#"{"verdict":"active","key_id":3,"expires_at":1800000000}"#)
                .unwrap();
        assert_eq!(parsed.verdict.as_str(), "active");
        assert_eq!(parsed.key_id, Some(3));
    }
}
