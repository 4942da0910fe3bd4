//! Metering: the usage record of a finished exchange, as the sidecar's
//! ledger stores it.

use tollgate_wire::{Api, LlmUsage, Outcome, UsageRecord, MAX_ENDPOINT_LEN, MAX_METHOD_LEN};

use crate::error::Denial;

/// How the filter decided a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let through with this key id.
    Allowed(i64),
    /// Refused.
    Denied(Denial),
}

/// What the flow learns of an exchange as it goes, to meter it at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exchange {
    /// The id the filter minted.
    pub request_id: String,
    /// `:method`.
    pub method: String,
    /// `:path`, query included.
    pub path: String,
    /// The key id, once a verdict named one.
    pub key_id: Option<i64>,
    /// `:status` of the response, if one was seen.
    pub response_status: Option<u16>,
    /// Status of the filter's own local reply, if it sent one.
    pub reply_status: Option<u16>,
    /// Request body bytes hashed.
    pub request_bytes: u64,
    /// Response body bytes counted.
    pub response_bytes: u64,
    /// What the upstream reported the call cost (`limits.units_header`).
    pub units: u64,
    /// When the request headers arrived, ms since the epoch.
    pub started_ms: u64,
    /// The LLM API of the request's route (`llm.routes`), if it is one.
    pub llm_api: Option<Api>,
    /// What an LLM call used, once its answer ended.
    pub llm: Option<LlmUsage>,
}

/// Status recorded when the client went away before any response started
/// (nginx's convention; within the 100-599 range the sidecar accepts).
pub const CLIENT_CLOSED_STATUS: u16 = 499;

/// The request path without its query, cut to `wire::MAX_ENDPOINT_LEN` at a
/// character boundary.
pub fn endpoint_of(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = if path.is_empty() { "/" } else { path };
    truncate_at_char(path, MAX_ENDPOINT_LEN).to_string()
}

fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// The usage record of an exchange that ended at `ended_ms`: only when a
/// verdict named a key and the filter decided (allowed, or denied after the
/// verdict).
pub fn usage_record(
    x: &Exchange,
    decision: Option<Decision>,
    ended_ms: u64,
) -> Option<UsageRecord> {
    let key_id = x.key_id?;
    let (outcome, fallback_status) = match decision? {
        Decision::Allowed(_) => (Outcome::Allowed, CLIENT_CLOSED_STATUS),
        Decision::Denied(d) => (d.outcome(), d.status()),
    };
    let method = truncate_at_char(&x.method, MAX_METHOD_LEN);
    Some(UsageRecord {
        request_id: x.request_id.clone(),
        api_key_id: key_id,
        method: if method.is_empty() { "-" } else { method }.to_string(),
        endpoint: endpoint_of(&x.path),
        status_code: x
            .response_status
            .or(x.reply_status)
            .unwrap_or(fallback_status),
        outcome,
        request_bytes: x.request_bytes,
        response_bytes: x.response_bytes,
        units: x.units,
        duration_ms: ended_ms.saturating_sub(x.started_ms),
        timestamp_ms: x.started_ms,
        llm: x.llm.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_drop_the_query_and_fit_the_column() {
        assert_eq!(endpoint_of("/proxy/analyze?x=1"), "/proxy/analyze");
        assert_eq!(endpoint_of("?x"), "/");
        let long = format!("/{}", "é".repeat(400));
        let e = endpoint_of(&long);
        assert!(e.len() <= MAX_ENDPOINT_LEN && e.len() >= MAX_ENDPOINT_LEN - 1);
        assert!(long.starts_with(&e));
    }

    #[test]
    fn usage_records_need_a_key_and_a_decision() {
        let x = Exchange {
            request_id: "0123456789abcdef0123456789abcdef".into(),
            method: "POST".into(),
            path: "/proxy/analyze?q=1".into(),
            key_id: Some(5),
            response_status: Some(200),
            reply_status: None,
            request_bytes: 3,
            response_bytes: 4,
            units: 6,
            started_ms: 1_000,
            ..Exchange::default()
        };
        let allowed = Some(Decision::Allowed(5));
        let r = usage_record(&x, allowed, 1_025).unwrap();
        assert_eq!(r.endpoint, "/proxy/analyze");
        assert_eq!(
            (r.status_code, r.duration_ms, r.timestamp_ms),
            (200, 25, 1_000)
        );
        assert_eq!(r.outcome, Outcome::Allowed);
        assert_eq!(r.validate(), Ok(()));

        let denied = Exchange {
            response_status: None,
            ..x.clone()
        };
        let revoked = Some(Decision::Denied(Denial::RevokedApiKey));
        let r = usage_record(&denied, revoked, 1_025).unwrap();
        assert_eq!(
            (r.status_code, r.outcome.as_str()),
            (403, "revoked_api_key")
        );
        let replied = Exchange {
            reply_status: Some(403),
            ..denied
        };
        assert_eq!(
            usage_record(&replied, revoked, 1_025).unwrap().status_code,
            403
        );

        let keyless = Exchange {
            key_id: None,
            ..x.clone()
        };
        assert!(usage_record(&keyless, allowed, 1_025).is_none());
        assert!(usage_record(&x, None, 1_025).is_none());
        let gone = Exchange {
            response_status: None,
            ..x
        };
        assert_eq!(
            usage_record(&gone, allowed, 1_025).unwrap().status_code,
            CLIENT_CLOSED_STATUS
        );
    }
}
