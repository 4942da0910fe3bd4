//! The headers a limited key's responses carry, after the IETF draft
//! "RateLimit header fields for HTTP" (draft-ietf-httpapi-ratelimit-headers,
//! structured fields): `RateLimit-Policy` lists every limit of the key, as
//! `"<name>";q=<limit>;w=<window seconds>`; `RateLimit` names one of them
//! with what is left of it and when it resets, as
//! `"<name>";r=<remaining>;t=<seconds>`. A refusal adds `Retry-After`.
//!
//! Names: `rate` for the token bucket (q its count per period, w the
//! period), and each quota by its name (`requests`, `request_bytes`,
//! `response_bytes`, `units`, `tokens`, `input_tokens`, `output_tokens`;
//! a scoped one with its model, `tokens@gpt-4o`). A team's budget names
//! its limits with `team.` before them (`team.rate`, `team.tokens`).
//!
//! On an OpenAI route, a refusal of a token quota also carries the
//! headers OpenAI's API sends and its SDKs and client libraries read:
//! `x-ratelimit-limit-tokens`, `x-ratelimit-remaining-tokens` (what is
//! left of the window, fleet-wide as far as this Envoy knows) and
//! `x-ratelimit-reset-tokens` (a duration, `1m30s`).

use tollgate_wire::BudgetOwner;

use super::budget::{window_seconds, Budget, QuotaId};

/// What a limit's name starts with in `owner`'s budget.
fn prefix(owner: BudgetOwner) -> &'static str {
    match owner {
        BudgetOwner::Key(_) => "",
        BudgetOwner::Team(_) => "team.",
    }
}

/// The `RateLimit-Policy` value of `owner`'s budget's limits.
pub fn policy_header(budget: &Budget, owner: BudgetOwner, now_ms: u64) -> String {
    let prefix = prefix(owner);
    let mut items = Vec::with_capacity(1 + budget.quotas.len());
    if let Some(rate) = budget.limits.rate {
        items.push(format!(
            "\"{prefix}rate\";q={};w={}",
            rate.count,
            rate.per.millis() / 1000
        ));
    }
    for state in &budget.quotas {
        let q = &state.quota;
        items.push(format!(
            "\"{prefix}{}\";q={};w={}",
            q.name(),
            q.limit,
            window_seconds(q.window, now_ms)
        ));
    }
    items.join(", ")
}

/// The `RateLimit` value for an allowed response: the limit of `owner`'s
/// budget closest to running out (remaining as a share of the limit).
pub fn remaining_header(budget: &Budget, owner: BudgetOwner, now_ms: u64) -> String {
    match budget.tightest(now_ms) {
        Some((name, remaining, reset_s)) => {
            format!("\"{}{name}\";r={remaining};t={reset_s}", prefix(owner))
        }
        None => String::new(),
    }
}

/// The extra headers of a 429 for `quota` (`None`: the rate) of `owner`'s
/// budget; `openai`: on an OpenAI route.
pub fn denial_headers(
    budget: &Budget,
    owner: BudgetOwner,
    quota: Option<&QuotaId>,
    retry_after_s: u64,
    now_ms: u64,
    openai: bool,
) -> Vec<(&'static str, String)> {
    let name = quota.map_or_else(|| "rate".to_owned(), QuotaId::name);
    let prefix = prefix(owner);
    let mut headers = vec![
        ("retry-after", retry_after_s.to_string()),
        ("ratelimit-policy", policy_header(budget, owner, now_ms)),
        (
            "ratelimit",
            format!("\"{prefix}{name}\";r=0;t={retry_after_s}"),
        ),
    ];
    let state = quota
        .filter(|q| openai && q.kind.reserves() && !q.kind.counts_money())
        .and_then(|q| budget.quotas.iter().find(|s| q.names(&s.quota)));
    if let Some(state) = state {
        headers.push(("x-ratelimit-limit-tokens", state.quota.limit.to_string()));
        headers.push((
            "x-ratelimit-remaining-tokens",
            state.remaining().to_string(),
        ));
        headers.push(("x-ratelimit-reset-tokens", openai_duration(retry_after_s)));
    }
    headers
}

/// A duration as OpenAI's reset headers write it: `45s`, `1m30s`, `2h0m5s`.
pub fn openai_duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::openai_duration;

    #[test]
    fn reset_durations_read_as_openai_writes_them() {
        assert_eq!(openai_duration(1), "1s");
        assert_eq!(openai_duration(90), "1m30s");
        assert_eq!(openai_duration(3605), "1h0m5s");
        assert_eq!(openai_duration(86_400), "24h0m0s");
    }
}
