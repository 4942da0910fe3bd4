//! The filter's metrics: their names, and the per-worker recorder that
//! defines them through the host and moves them. Envoy shows them under
//! `wasmcustom.` in `/stats` and `/stats/prometheus`.

use std::cell::Cell;

use tollgate_wire::Outcome;

use crate::error::Denial;
use crate::host::{Host, LogLevel, MetricKind};

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
    /// Usage records the sidecar refused as impossible (a 400 naming the
    /// record): dropped, since no retry can store them.
    UsageRecordsRefused,
    /// `jti` claims refused because their replay-store bucket was full of
    /// live entries (answered 503: the store is too small for the load).
    ReplayStoreFull,
    /// `jti` claims that lost a compare-and-swap race and read again.
    ReplayCasRetries,
    /// Polls of the key change feed sent (about one per instance per second).
    KeyFeedPolls,
    /// Feed polls that failed (no answer, non-200, unreadable).
    KeyFeedFailures,
    /// Cached verdicts the feed evicted.
    KeyFeedEvictions,
    /// Times the feed could not bring the cache up to date and it was dropped whole.
    KeyFeedResets,
    /// Fleet-wide `jti` claims that got no usable answer (failed closed).
    ReplayFleetFailures,
    /// Key verification calls sent a second time after a quick failure.
    VerifyRetries,
    /// LLM calls whose tokens were estimated (the answer ended without
    /// believable usage; the log line says why).
    LlmUsageEstimated,
    /// Lines of LLM streams longer than the parser's cap, skipped whole.
    LlmLinesSkipped,
}

impl Counter {
    /// Every counter, in definition order.
    pub const ALL: [Counter; 19] = [
        Counter::RequestsAllowed,
        Counter::KeyCacheHit,
        Counter::KeyCacheMiss,
        Counter::KeyCacheStale,
        Counter::CalloutFailures,
        Counter::UsageRecordsSent,
        Counter::UsageRecordsDropped,
        Counter::UsageFlushFailures,
        Counter::UsageRecordsRefused,
        Counter::ReplayStoreFull,
        Counter::ReplayCasRetries,
        Counter::KeyFeedPolls,
        Counter::KeyFeedFailures,
        Counter::KeyFeedEvictions,
        Counter::KeyFeedResets,
        Counter::ReplayFleetFailures,
        Counter::VerifyRetries,
        Counter::LlmUsageEstimated,
        Counter::LlmLinesSkipped,
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
            Counter::UsageRecordsRefused => "tollgate_usage_records_refused",
            Counter::ReplayStoreFull => "tollgate_replay_store_full",
            Counter::ReplayCasRetries => "tollgate_replay_cas_retries",
            Counter::KeyFeedPolls => "tollgate_key_feed_polls",
            Counter::KeyFeedFailures => "tollgate_key_feed_failures",
            Counter::KeyFeedEvictions => "tollgate_key_feed_evictions",
            Counter::KeyFeedResets => "tollgate_key_feed_resets",
            Counter::ReplayFleetFailures => "tollgate_replay_fleet_failures",
            Counter::VerifyRetries => "tollgate_verify_retries",
            Counter::LlmUsageEstimated => "tollgate_llm_usage_estimated",
            Counter::LlmLinesSkipped => "tollgate_llm_lines_skipped",
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

/// Gauge: milliseconds since the key change feed last answered the
/// instance (0 before any key is cached). Any worker moves it by the
/// difference it sees, recorded in the shared feed state.
pub const KEY_FEED_LAG_MS: &str = "tollgate_key_feed_lag_ms";

/// Counter names for denials, one per error code, in [`Outcome::DENIALS`] order.
pub fn denied_names() -> Vec<String> {
    Outcome::DENIALS
        .iter()
        .map(|code| format!("tollgate_denied_{code}"))
        .collect()
}

/// The metric ids of one worker (a failed definition leaves `None`: that
/// metric is skipped, requests are not affected).
///
/// Counters that every request moves ([`Counter::is_hot`]) are summed here
/// and handed to the host by [`Metrics::publish`] on the root's tick, which
/// saves host calls on the hot path; the host shows them at most one tick
/// late. Every other counter and the buffered gauge reach the host at once
/// (a graceful stop reads the gauge).
#[derive(Debug)]
pub struct Metrics {
    counters: Vec<Option<u32>>,
    pending: Vec<Cell<u64>>,
    denied: Vec<Option<u32>>,
    buffered: Option<u32>,
    feed_lag: Option<u32>,
}

impl Metrics {
    /// Defines every metric through the host.
    pub fn define(host: &impl Host) -> Self {
        let define = |kind, name: &str| match host.define_metric(kind, name) {
            Ok(id) => Some(id),
            Err(e) => {
                host.log(LogLevel::Warn, &format!("cannot define metric {name}: {e}"));
                None
            }
        };
        Metrics {
            counters: Counter::ALL
                .iter()
                .map(|c| define(MetricKind::Counter, c.name()))
                .collect(),
            pending: Counter::ALL.iter().map(|_| Cell::new(0)).collect(),
            denied: denied_names()
                .iter()
                .map(|name| define(MetricKind::Counter, name))
                .collect(),
            buffered: define(MetricKind::Gauge, USAGE_RECORDS_BUFFERED),
            feed_lag: define(MetricKind::Gauge, KEY_FEED_LAG_MS),
        }
    }

    fn bump(host: &impl Host, id: Option<u32>, by: i64) {
        if let Some(id) = id {
            if by != 0 {
                let _ = host.increment_metric(id, by);
            }
        }
    }

    /// Adds `by` to a counter (hot counters wait for [`Metrics::publish`]).
    pub fn add(&self, host: &impl Host, counter: Counter, by: u64) {
        if counter.is_hot() {
            if let Some(pending) = self.pending.get(counter.index()) {
                pending.set(pending.get().saturating_add(by));
                return;
            }
        }
        let by = i64::try_from(by).unwrap_or(i64::MAX);
        Self::bump(
            host,
            self.counters.get(counter.index()).copied().flatten(),
            by,
        );
    }

    /// Adds one to a counter.
    pub fn inc(&self, host: &impl Host, counter: Counter) {
        self.add(host, counter, 1);
    }

    /// Hands the summed hot counters to the host.
    pub fn publish(&self, host: &impl Host) {
        for (pending, id) in self.pending.iter().zip(&self.counters) {
            let by = pending.replace(0);
            Self::bump(host, *id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }

    /// Counts a denial under its code.
    pub fn denied(&self, host: &impl Host, denial: Denial) {
        let id = denial
            .outcome()
            .denial_index()
            .and_then(|i| self.denied.get(i).copied().flatten());
        Self::bump(host, id, 1);
    }

    /// Moves the buffered-records gauge.
    pub fn buffered(&self, host: &impl Host, delta: i64) {
        Self::bump(host, self.buffered, delta);
    }

    /// Moves the feed lag gauge.
    pub fn feed_lag(&self, host: &impl Host, delta: i64) {
        Self::bump(host, self.feed_lag, delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indexed_in_order() {
        let mut names: Vec<String> = Counter::ALL.iter().map(|c| c.name().to_string()).collect();
        names.extend(denied_names());
        names.push(USAGE_RECORDS_BUFFERED.to_string());
        names.push(KEY_FEED_LAG_MS.to_string());
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
