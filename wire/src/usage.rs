//! The usage ingestion call: the records the filter reports in batches, the
//! limits their columns impose and what one exchange can truthfully report,
//! and the sidecar's acknowledgement.

use serde::{Deserialize, Serialize};

use crate::llm::{LlmUsage, UsageSource, MAX_MODEL_LEN, MAX_TOKENS};
use crate::outcome::Outcome;

/// `POST` a JSON array of [`UsageRecord`], answered with an [`IngestReply`].
pub const USAGE_PATH: &str = "/v1/internal/usage";

/// Most records one ingestion call may carry; a larger batch is refused with 413.
pub const MAX_USAGE_BATCH: usize = 1000;

/// Longest `request_id` accepted in a usage record.
pub const MAX_REQUEST_ID_LEN: usize = 64;
/// Longest `method` accepted in a usage record.
pub const MAX_METHOD_LEN: usize = 16;
/// Longest `endpoint` accepted in a usage record; the filter truncates longer paths.
pub const MAX_ENDPOINT_LEN: usize = 512;

/// Largest request body the gateway can ever let in: the upper end of the
/// filter's `max_body_bytes` range. The filter counts only the body bytes it
/// hashed, and refuses a body past its limit before hashing it, so no honest
/// record reports more `request_bytes` than this.
pub const MAX_BODY_BYTES: u64 = 1 << 30;

/// Largest `response_bytes` accepted: 1 TiB, far beyond any one response of
/// an analysis service, yet small enough that sums stay exact. The filter
/// has no response limit to take this from, so it is a bound of what is
/// plausible: a forged record cannot claim more, and summing the largest
/// accepted value overflows a signed 64-bit total only after 2^23 (8.4
/// million) such rows, while [`MAX_BODY_BYTES`] allows 2^33.
pub const MAX_RESPONSE_BYTES: u64 = 1 << 40;

/// Latest `timestamp_ms` accepted: the end of the year 9999, the last instant
/// a MySQL `DATETIME` column holds.
pub const MAX_TIMESTAMP_MS: u64 = 253_402_300_799_999;

/// Largest `units` accepted: 2^40, as for [`MAX_RESPONSE_BYTES`] (what the
/// upstream reports for one call; sums stay exact).
pub const MAX_UNITS: u64 = 1 << 40;

/// One metered request, as the filter reports it. Unknown fields are
/// ignored, so an older sidecar stores what a newer filter sends (rolling
/// upgrades lose nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// `allowed`, or the error code the gateway answered with.
    pub outcome: Outcome,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Response body bytes.
    pub response_bytes: u64,
    /// What the upstream said the call cost, in its own units (the
    /// `limits.units_header` response header, e.g. `x-usage-units`); 0 when
    /// it said nothing (and from a filter older than the field).
    #[serde(default)]
    pub units: u64,
    /// Time from request headers to the end of the response, in milliseconds.
    pub duration_ms: u64,
    /// When the request arrived, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// What the call was as an LLM call: its API, model, streaming and
    /// tokens. Absent for any other call (and from a filter older than the
    /// field): its row has `usage_source` `none` and no tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmUsage>,
}

/// How a refusal names the field at fault in record `index` of a batch:
/// `[3].request_bytes`. The sidecar writes it in the 400's `field`; the
/// filter reads the index back ([`refused_record`]) to drop only that record.
pub fn record_field(index: usize, field: &str) -> String {
    format!("[{index}].{field}")
}

/// The record index a [`record_field`] path names, if it is one.
pub fn refused_record(path: &str) -> Option<usize> {
    let rest = path.strip_prefix('[')?;
    let (index, rest) = rest.split_once(']')?;
    if !rest.starts_with('.') || index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    index.parse().ok()
}

/// Why a [`UsageRecord`] is not acceptable: names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub reason: &'static str,
}

impl UsageRecord {
    /// Checks the limits the database columns impose, so a bad record is
    /// refused with a clear error instead of being truncated or failing a
    /// batch, and that its byte counts are ones a real exchange can have
    /// ([`MAX_BODY_BYTES`], [`MAX_RESPONSE_BYTES`]), so forged counts cannot
    /// make the ledger's sums overflow.
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
        for (field, value, max, reason) in [
            (
                "request_bytes",
                self.request_bytes,
                MAX_BODY_BYTES,
                "is larger than any request body the gateway lets in",
            ),
            (
                "response_bytes",
                self.response_bytes,
                MAX_RESPONSE_BYTES,
                "is larger than any plausible response",
            ),
            (
                "units",
                self.units,
                MAX_UNITS,
                "is larger than any plausible charge",
            ),
            // The stores keep it in a signed 64-bit column.
            (
                "duration_ms",
                self.duration_ms,
                i64::MAX as u64,
                "is out of range",
            ),
        ] {
            if value > max {
                return Err(FieldError { field, reason });
            }
        }
        if let Some(llm) = &self.llm {
            check_text("llm.model", &llm.model, MAX_MODEL_LEN)?;
            llm.validate_counts()?;
        }
        Ok(())
    }
}

impl LlmUsage {
    /// Checks what the record's `llm` says beyond its model name: counts a
    /// call can have ([`MAX_TOKENS`] each, the cached part of the input and
    /// the reasoning part of the output no larger than their whole), and a
    /// source (`none` is only ever a call without `llm`).
    fn validate_counts(&self) -> Result<(), FieldError> {
        let t = &self.tokens;
        for (field, value) in [
            ("llm.input_tokens", t.input_tokens),
            ("llm.output_tokens", t.output_tokens),
            ("llm.cached_input_tokens", t.cached_input_tokens),
            ("llm.reasoning_tokens", t.reasoning_tokens),
        ] {
            if value > MAX_TOKENS {
                return Err(FieldError {
                    field,
                    reason: "is larger than any call's token count (2^30)",
                });
            }
        }
        if t.cached_input_tokens > t.input_tokens {
            return Err(FieldError {
                field: "llm.cached_input_tokens",
                reason: "is larger than input_tokens, which include them",
            });
        }
        if t.reasoning_tokens > t.output_tokens {
            return Err(FieldError {
                field: "llm.reasoning_tokens",
                reason: "is larger than output_tokens, which include them",
            });
        }
        if self.usage_source == UsageSource::None {
            return Err(FieldError {
                field: "llm.usage_source",
                reason: "must be reported or estimated for an LLM call",
            });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{Api, TokenUsage};

    fn record() -> UsageRecord {
        UsageRecord {
            request_id: "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
            api_key_id: 7,
            method: "POST".into(),
            endpoint: "/proxy/analyze".into(),
            status_code: 200,
            outcome: Outcome::Allowed,
            request_bytes: 1024,
            response_bytes: 88,
            units: 12,
            duration_ms: 3,
            timestamp_ms: 1_764_000_000_000,
            llm: None,
        }
    }

    fn llm_record() -> UsageRecord {
        UsageRecord {
            llm: Some(LlmUsage {
                api: Api::OpenAiChat,
                model: "gpt-4o-mini".into(),
                streamed: true,
                usage_source: UsageSource::Reported,
                tokens: TokenUsage {
                    input_tokens: 100,
                    output_tokens: 50,
                    cached_input_tokens: 40,
                    reasoning_tokens: 10,
                },
            }),
            ..record()
        }
    }

    /// `llm_record` changed by `change`, and the field its refusal names.
    fn refused_llm(change: impl FnOnce(&mut LlmUsage)) -> &'static str {
        let mut r = llm_record();
        if let Some(llm) = r.llm.as_mut() {
            change(llm);
        }
        r.validate().unwrap_err().field
    }

    #[test]
    fn a_refusal_names_its_record() {
        assert_eq!(record_field(3, "request_bytes"), "[3].request_bytes");
        assert_eq!(refused_record(&record_field(3, "request_bytes")), Some(3));
        assert_eq!(refused_record("[0].api_key_id"), Some(0));
        for other in ["", "[]", "[x].a", "[1]", "[1]a", "3.a", "[-1].a", "records"] {
            assert_eq!(refused_record(other), None, "{other}");
        }
    }

    #[test]
    fn usage_record_round_trips_through_json() {
        let text = serde_json::to_string(&record()).unwrap();
        let back: UsageRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, record());
    }

    #[test]
    fn usage_records_from_a_newer_filter_are_read_without_their_new_fields() {
        let mut value = serde_json::to_value(record()).unwrap();
        value["a_later_field"] = serde_json::json!(12);
        assert_eq!(
            serde_json::from_value::<UsageRecord>(value).unwrap(),
            record()
        );
    }

    #[test]
    fn usage_records_from_a_filter_older_than_units_count_none() {
        let mut value = serde_json::to_value(record()).unwrap();
        value.as_object_mut().unwrap().remove("units");
        let back: UsageRecord = serde_json::from_value(value).unwrap();
        assert_eq!(
            back,
            UsageRecord {
                units: 0,
                ..record()
            }
        );
    }

    #[test]
    fn outcomes_outside_the_contract_are_refused() {
        let mut value = serde_json::to_value(record()).unwrap();
        assert_eq!(value["outcome"], "allowed");
        value["outcome"] = serde_json::json!("made_up");
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
        let mut r = record();
        r.duration_ms = u64::MAX;
        assert_eq!(r.validate().unwrap_err().field, "duration_ms");
    }

    #[test]
    fn byte_counts_stop_at_what_one_exchange_can_carry() {
        let mut r = record();
        r.request_bytes = MAX_BODY_BYTES;
        r.response_bytes = MAX_RESPONSE_BYTES;
        assert_eq!(r.validate(), Ok(()));
        r.request_bytes = MAX_BODY_BYTES + 1;
        assert_eq!(r.validate().unwrap_err().field, "request_bytes");
        r.request_bytes = i64::MAX as u64;
        assert_eq!(r.validate().unwrap_err().field, "request_bytes");
        r.request_bytes = 0;
        r.response_bytes = MAX_RESPONSE_BYTES + 1;
        assert_eq!(r.validate().unwrap_err().field, "response_bytes");
        r.response_bytes = 0;
        r.units = MAX_UNITS;
        assert_eq!(r.validate(), Ok(()));
        r.units = MAX_UNITS + 1;
        assert_eq!(r.validate().unwrap_err().field, "units");
    }

    #[test]
    fn an_llm_record_round_trips_and_a_plain_one_has_no_llm_field() {
        let text = serde_json::to_string(&llm_record()).unwrap();
        let back: UsageRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, llm_record());
        let value = serde_json::to_value(llm_record()).unwrap();
        assert_eq!(value["llm"]["api"], "openai.chat");
        assert_eq!(value["llm"]["cached_input_tokens"], 40);
        let plain = serde_json::to_value(record()).unwrap();
        assert!(plain.get("llm").is_none(), "{plain}");
        assert_eq!(
            serde_json::from_value::<UsageRecord>(plain).unwrap().llm,
            None
        );
    }

    #[test]
    fn llm_fields_are_checked_one_by_one() {
        assert_eq!(llm_record().validate(), Ok(()));
        assert_eq!(refused_llm(|l| l.model.clear()), "llm.model");
        assert_eq!(
            refused_llm(|l| l.model = "m".repeat(MAX_MODEL_LEN + 1)),
            "llm.model"
        );
        assert_eq!(refused_llm(|l| l.model = "gpt\u{7f}4".into()), "llm.model");
        assert_eq!(refused_llm(|l| l.model = "gpt\n4".into()), "llm.model");
        assert_eq!(
            refused_llm(|l| l.tokens.input_tokens = MAX_TOKENS + 1),
            "llm.input_tokens"
        );
        assert_eq!(
            refused_llm(|l| l.tokens.output_tokens = MAX_TOKENS + 1),
            "llm.output_tokens"
        );
        assert_eq!(
            refused_llm(|l| {
                l.tokens.input_tokens = MAX_TOKENS;
                l.tokens.cached_input_tokens = MAX_TOKENS + 1;
            }),
            "llm.cached_input_tokens"
        );
        assert_eq!(
            refused_llm(|l| {
                l.tokens.output_tokens = MAX_TOKENS;
                l.tokens.reasoning_tokens = MAX_TOKENS + 1;
            }),
            "llm.reasoning_tokens"
        );
        assert_eq!(
            refused_llm(|l| l.tokens.cached_input_tokens = 101),
            "llm.cached_input_tokens"
        );
        assert_eq!(
            refused_llm(|l| l.tokens.reasoning_tokens = 51),
            "llm.reasoning_tokens"
        );
        assert_eq!(
            refused_llm(|l| l.usage_source = UsageSource::None),
            "llm.usage_source"
        );
        assert_eq!(
            record_field(3, refused_llm(|l| l.tokens.output_tokens = u64::MAX)),
            "[3].llm.output_tokens"
        );
    }

    #[test]
    fn llm_counts_at_their_bounds_are_accepted() {
        let mut r = llm_record();
        if let Some(llm) = r.llm.as_mut() {
            llm.model = "m".repeat(MAX_MODEL_LEN);
            llm.usage_source = UsageSource::Estimated;
            llm.tokens = TokenUsage {
                input_tokens: MAX_TOKENS,
                output_tokens: MAX_TOKENS,
                cached_input_tokens: MAX_TOKENS,
                reasoning_tokens: MAX_TOKENS,
            };
        }
        assert_eq!(r.validate(), Ok(()));
    }

    #[test]
    fn sums_of_the_largest_counts_fit_64_bits_for_millions_of_rows() {
        // Rows of the largest accepted count a signed 64-bit total holds.
        assert_eq!(i64::MAX as u64 / MAX_RESPONSE_BYTES, (1 << 23) - 1);
        assert_eq!(i64::MAX as u64 / MAX_BODY_BYTES, (1 << 33) - 1);
    }
}
