//! Names of the filter's metrics. Envoy shows them under `wasmcustom.` in
//! `/stats` and `/stats/prometheus`; the glue defines one of each per VM.

use crate::error::ALL_CODES;

/// A counter the filter increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Requests let through to the upstream.
    RequestsAllowed,
    /// Key verdicts answered from the shared-data cache.
    KeyCacheHit,
    /// Key verdicts that needed a callout.
    KeyCacheMiss,
    /// Callout failures answered from a stale positive verdict.
    KeyCacheStale,
    /// Key verification callouts that failed (no answer, non-200, bad JSON).
    CalloutFailures,
    /// Usage records the sidecar acknowledged.
    UsageRecordsSent,
    /// Usage records lost (buffer full, invalid, or unsent at shutdown).
    UsageRecordsDropped,
    /// Usage flushes that failed and will be retried.
    UsageFlushFailures,
    /// `jti` claims refused because their replay-store bucket was full of
    /// live entries (answered 503: the store is too small for the load).
    ReplayStoreFull,
    /// `jti` claims that lost a compare-and-swap race and read again.
    ReplayCasRetries,
}

impl Counter {
    /// Every counter, in definition order.
    pub const ALL: [Counter; 10] = [
        Counter::RequestsAllowed,
        Counter::KeyCacheHit,
        Counter::KeyCacheMiss,
        Counter::KeyCacheStale,
        Counter::CalloutFailures,
        Counter::UsageRecordsSent,
        Counter::UsageRecordsDropped,
        Counter::UsageFlushFailures,
        Counter::ReplayStoreFull,
        Counter::ReplayCasRetries,
    ];

    /// The metric name.
    pub fn name(self) -> &'static str {
        match self {
            Counter::RequestsAllowed => "tollgate_requests_allowed",
            Counter::KeyCacheHit => "tollgate_key_cache_hit",
            Counter::KeyCacheMiss => "tollgate_key_cache_miss",
            Counter::KeyCacheStale => "tollgate_key_cache_stale",
            Counter::CalloutFailures => "tollgate_callout_failures",
            Counter::UsageRecordsSent => "tollgate_usage_records_sent",
            Counter::UsageRecordsDropped => "tollgate_usage_records_dropped",
            Counter::UsageFlushFailures => "tollgate_usage_flush_failures",
            Counter::ReplayStoreFull => "tollgate_replay_store_full",
            Counter::ReplayCasRetries => "tollgate_replay_cas_retries",
        }
    }

    /// Whether (nearly) every request moves this counter: the glue sums
    /// these and publishes them on its timer instead of once per request.
    pub fn is_hot(self) -> bool {
        matches!(
            self,
            Counter::RequestsAllowed | Counter::KeyCacheHit | Counter::KeyCacheMiss
        )
    }

    /// Position in [`Counter::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Gauge: usage records held in the workers' buffers (each worker adds and
/// subtracts its own changes, so the gauge is the sum over workers).
pub const USAGE_RECORDS_BUFFERED: &str = "tollgate_usage_records_buffered";

/// Counter names for denials, one per error code, in [`ALL_CODES`] order.
pub fn denied_names() -> Vec<String> {
    ALL_CODES
        .iter()
        .map(|code| format!("tollgate_denied_{code}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indexed_in_order() {
        let mut names: Vec<String> = Counter::ALL.iter().map(|c| c.name().to_string()).collect();
        names.extend(denied_names());
        names.push(USAGE_RECORDS_BUFFERED.to_string());
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count);
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        assert!(denied_names().contains(&"tollgate_denied_auth_unavailable".to_string()));
    }
}
