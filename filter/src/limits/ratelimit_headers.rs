//! The headers a limited key's responses carry, after the IETF draft
//! "RateLimit header fields for HTTP" (draft-ietf-httpapi-ratelimit-headers,
//! structured fields): `RateLimit-Policy` lists every limit of the key, as
//! `"<name>";q=<limit>;w=<window seconds>`; `RateLimit` names one of them
//! with what is left of it and when it resets, as
//! `"<name>";r=<remaining>;t=<seconds>`. A refusal adds `Retry-After`.
//!
//! Names: `rate` for the token bucket (q its count per period, w the
//! period), and each quota by its kind (`requests`, `request_bytes`,
//! `response_bytes`, `units`).

use super::budget::{window_seconds, Budget};

/// The `RateLimit-Policy` value of a budget's limits.
pub fn policy_header(budget: &Budget, now_ms: u64) -> String {
    let mut items = Vec::with_capacity(1 + budget.quotas.len());
    if let Some(rate) = budget.limits.rate {
        items.push(format!(
            "\"rate\";q={};w={}",
            rate.count,
            rate.per.millis() / 1000
        ));
    }
    for state in &budget.quotas {
        let q = state.quota;
        items.push(format!(
            "\"{}\";q={};w={}",
            q.kind.as_str(),
            q.limit,
            window_seconds(q.window, now_ms)
        ));
    }
    items.join(", ")
}

/// The `RateLimit` value for an allowed response: the limit closest to
/// running out (remaining as a share of the limit).
pub fn remaining_header(budget: &Budget, now_ms: u64) -> String {
    match budget.tightest(now_ms) {
        Some((name, remaining, reset_s)) => format!("\"{name}\";r={remaining};t={reset_s}"),
        None => String::new(),
    }
}

/// The extra headers of a 429 for the limit `name`.
pub fn denial_headers(
    budget: &Budget,
    name: &str,
    retry_after_s: u64,
    now_ms: u64,
) -> Vec<(&'static str, String)> {
    vec![
        ("retry-after", retry_after_s.to_string()),
        ("ratelimit-policy", policy_header(budget, now_ms)),
        ("ratelimit", format!("\"{name}\";r=0;t={retry_after_s}")),
    ]
}
