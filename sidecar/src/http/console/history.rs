//! The gateway's last hour, for the console's plots. The live figures are
//! point-in-time Prometheus scrapes (counters since each process started),
//! so the sidecar keeps a bounded ring of samples of the few series an
//! operator watches, taken every [`SAMPLE_EVERY`] by a task beside the
//! service (started only while the console is on), and turns each pair of
//! neighbouring samples into one plotted point: requests allowed and
//! denied per second by code, the key cache's hit ratio, key verification
//! latency percentiles, usage records buffered and refused per second.
//!
//! A sample holds sums over labels (several Envoy workers or builds count
//! apart), so a point is the difference of two sums; a counter that went
//! down (Envoy or the sidecar restarted) gives no point for that interval.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::gateway::{parse_prometheus, Metric};
use super::guard::ConsoleSession;
use crate::domain::clock::{format_rfc3339, now_ms, to_unix_ms};
use crate::http::metrics::VERIFY_BUCKETS;
use crate::http::AppState;
use crate::store::quota_use::instant;

/// How often a sample is taken.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// How many samples are kept: an hour's.
pub const SAMPLES_KEPT: usize = 360;

/// The filter's counters of allowed requests and of denials by code.
const ALLOWED: &str = "tollgate_requests_allowed";
const DENIED_PREFIX: &str = "tollgate_denied_";
const CACHE_HIT: &str = "tollgate_key_cache_hit";
const CACHE_MISS: &str = "tollgate_key_cache_miss";
const CACHE_STALE: &str = "tollgate_key_cache_stale";
const BUFFERED: &str = "tollgate_usage_records_buffered";
const REFUSED: &str = "tollgate_usage_records_refused";
/// The sidecar's key verification histogram.
const VERIFY_BUCKET: &str = "tollgate_key_verify_duration_seconds_bucket";

/// What one scrape said of the watched series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub at_ms: i64,
    /// The filter's series, summed over labels; `None` when Envoy could not
    /// be read (or is not configured).
    pub envoy: Option<BTreeMap<String, f64>>,
    /// The verification histogram's cumulative counts, in
    /// [`VERIFY_BUCKETS`] order then `+Inf`.
    pub verify: Vec<f64>,
}

impl Sample {
    /// The watched series of the two scrapes.
    pub fn of(at_ms: i64, envoy: Option<&[Metric]>, sidecar: &[Metric]) -> Sample {
        let envoy = envoy.map(|metrics| {
            let mut sums = BTreeMap::new();
            for m in metrics {
                let watched = [
                    ALLOWED,
                    CACHE_HIT,
                    CACHE_MISS,
                    CACHE_STALE,
                    BUFFERED,
                    REFUSED,
                ]
                .contains(&m.name.as_str())
                    || m.name.starts_with(DENIED_PREFIX);
                if let (true, Ok(value)) = (watched, m.value.parse::<f64>()) {
                    *sums.entry(m.name.clone()).or_insert(0.0) += value;
                }
            }
            sums
        });
        let bucket = |bound: &str| {
            sidecar
                .iter()
                .filter(|m| m.name == VERIFY_BUCKET && m.labels == format!("le=\"{bound}\""))
                .filter_map(|m| m.value.parse::<f64>().ok())
                .sum::<f64>()
        };
        let mut verify: Vec<f64> = VERIFY_BUCKETS
            .iter()
            .map(|b| bucket(&b.to_string()))
            .collect();
        verify.push(bucket("+Inf"));
        Sample {
            at_ms,
            envoy,
            verify,
        }
    }
}

/// The ring of samples.
#[derive(Debug, Default)]
pub struct GatewayHistory {
    samples: Mutex<VecDeque<Sample>>,
}

impl GatewayHistory {
    /// Adds a sample, dropping the oldest beyond [`SAMPLES_KEPT`].
    pub fn record(&self, sample: Sample) {
        if let Ok(mut samples) = self.samples.lock() {
            samples.push_back(sample);
            while samples.len() > SAMPLES_KEPT {
                samples.pop_front();
            }
        }
    }

    /// The plotted points, oldest first.
    pub fn points(&self) -> Vec<Point> {
        let Ok(samples) = self.samples.lock() else {
            return Vec::new();
        };
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .filter_map(|(before, after)| Point::between(before, after))
            .collect()
    }
}

/// One interval between two samples, as plotted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// RFC 3339: the interval's end.
    pub at: String,
    pub seconds: f64,
    /// Requests let through per second; `None` without Envoy's figures.
    pub allowed_per_s: Option<f64>,
    /// Denials per second by code (only codes that moved).
    pub denied_per_s: BTreeMap<String, f64>,
    /// Key look-ups answered from the cache (fresh or stale) over all
    /// look-ups; `None` when there was none.
    pub cache_hit_ratio: Option<f64>,
    /// Usage records in the filter's buffers at the interval's end.
    pub buffered: Option<f64>,
    /// Usage records the sidecar refused, per second.
    pub refused_per_s: Option<f64>,
    /// Key verification latency percentiles over the interval (ms, from
    /// the histogram's buckets); `None` when no key was verified.
    pub verify_p50_ms: Option<f64>,
    pub verify_p90_ms: Option<f64>,
    pub verify_p99_ms: Option<f64>,
}

impl Point {
    /// The point of the interval `[before, after]`; `None` when it is
    /// empty or a counter went down (a restart).
    pub fn between(before: &Sample, after: &Sample) -> Option<Point> {
        let seconds = (after.at_ms - before.at_ms) as f64 / 1000.0;
        if seconds <= 0.0 {
            return None;
        }
        let verify: Vec<f64> = after
            .verify
            .iter()
            .zip(&before.verify)
            .map(|(a, b)| a - b)
            .collect();
        if verify.iter().any(|d| *d < 0.0) {
            return None;
        }
        let mut point = Point {
            at: format_rfc3339(instant(after.at_ms)),
            seconds,
            allowed_per_s: None,
            denied_per_s: BTreeMap::new(),
            cache_hit_ratio: None,
            buffered: None,
            refused_per_s: None,
            verify_p50_ms: quantile(&verify, 0.50),
            verify_p90_ms: quantile(&verify, 0.90),
            verify_p99_ms: quantile(&verify, 0.99),
        };
        if let (Some(a), Some(b)) = (&after.envoy, &before.envoy) {
            let delta = |name: &str| {
                let d = a.get(name).copied().unwrap_or(0.0) - b.get(name).copied().unwrap_or(0.0);
                (d >= 0.0).then_some(d)
            };
            point.allowed_per_s = Some(delta(ALLOWED)? / seconds);
            for name in a.keys().filter(|n| n.starts_with(DENIED_PREFIX)) {
                let moved = delta(name)?;
                if moved > 0.0 {
                    let code = name.trim_start_matches(DENIED_PREFIX).to_string();
                    point.denied_per_s.insert(code, moved / seconds);
                }
            }
            let hits = delta(CACHE_HIT)? + delta(CACHE_STALE)?;
            let lookups = hits + delta(CACHE_MISS)?;
            point.cache_hit_ratio = (lookups > 0.0).then(|| hits / lookups);
            point.buffered = a.get(BUFFERED).copied();
            point.refused_per_s = Some(delta(REFUSED)? / seconds);
        }
        Some(point)
    }
}

/// The `q` quantile (ms) of the observations whose cumulative bucket
/// counts are `cumulative` (the bounds of [`VERIFY_BUCKETS`], then `+Inf`),
/// interpolated linearly inside its bucket as Prometheus'
/// `histogram_quantile` does; one in the `+Inf` bucket is the last bound.
pub fn quantile(cumulative: &[f64], q: f64) -> Option<f64> {
    let total = *cumulative.last()?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let index = cumulative.iter().position(|c| *c >= rank)?;
    let Some(upper) = VERIFY_BUCKETS.get(index) else {
        return VERIFY_BUCKETS.last().map(|b| b * 1000.0);
    };
    let (lower, below) = match index.checked_sub(1) {
        Some(i) => (VERIFY_BUCKETS[i], cumulative[i]),
        None => (0.0, 0.0),
    };
    let inside = cumulative[index] - below;
    let share = if inside > 0.0 {
        (rank - below) / inside
    } else {
        1.0
    };
    Some((lower + (upper - lower) * share) * 1000.0)
}

/// Takes one sample of the live figures now.
pub async fn sample_now(state: &AppState) -> Sample {
    let envoy = match &state.console.envoy_admin {
        Some(admin) => admin.fetch_metrics().await.ok(),
        None => None,
    };
    let sidecar = parse_prometheus(&state.metrics.render());
    let at_ms = i64::try_from(to_unix_ms(now_ms())).unwrap_or(i64::MAX);
    Sample::of(at_ms, envoy.as_deref(), &sidecar)
}

/// Samples the live figures every [`SAMPLE_EVERY`], for ever (the caller
/// aborts the task when it stops).
pub async fn sample_forever(state: AppState) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let sample = sample_now(&state).await;
        state.console.history.record(sample);
    }
}

/// Reply of `GET /console/api/gateway/history`.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryReply {
    pub sample_every_s: u64,
    /// Whether Envoy's figures are read at all.
    pub envoy_configured: bool,
    pub points: Vec<Point>,
}

/// `GET /console/api/gateway/history`: the last hour's points.
pub async fn history(
    _session: ConsoleSession,
    State(state): State<AppState>,
) -> Json<HistoryReply> {
    Json(HistoryReply {
        sample_every_s: SAMPLE_EVERY.as_secs(),
        envoy_configured: state.console.envoy_admin.is_some(),
        points: state.console.history.points(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: &str, labels: &str, value: f64) -> Metric {
        Metric {
            name: name.into(),
            labels: labels.into(),
            value: value.to_string(),
        }
    }

    fn sample(
        at_ms: i64,
        allowed: f64,
        denied: f64,
        hits: f64,
        misses: f64,
        verified: f64,
    ) -> Sample {
        let envoy = [
            metric(ALLOWED, "", allowed / 2.0),
            metric(ALLOWED, "worker=\"1\"", allowed / 2.0),
            metric("tollgate_denied_invalid_api_key", "", denied),
            metric("tollgate_denied_rate_limited", "", 0.0),
            metric(CACHE_HIT, "", hits),
            metric(CACHE_MISS, "", misses),
            metric(BUFFERED, "", 3.0),
            metric(REFUSED, "", 0.0),
            metric("tollgate_key_feed_polls", "", 99.0),
        ];
        // Every verification took between 0.5 and 1 ms.
        let sidecar: Vec<Metric> = VERIFY_BUCKETS
            .iter()
            .map(|b| {
                metric(
                    VERIFY_BUCKET,
                    &format!("le=\"{b}\""),
                    if *b >= 0.001 { verified } else { 0.0 },
                )
            })
            .chain([metric(VERIFY_BUCKET, "le=\"+Inf\"", verified)])
            .collect();
        Sample::of(at_ms, Some(&envoy), &sidecar)
    }

    #[test]
    fn neighbouring_samples_make_rates_ratios_and_percentiles() {
        let history = GatewayHistory::default();
        history.record(sample(0, 100.0, 4.0, 10.0, 0.0, 5.0));
        history.record(sample(10_000, 150.0, 6.0, 40.0, 10.0, 15.0));
        let [point] = &history.points()[..] else {
            panic!("one interval");
        };
        assert_eq!(point.seconds, 10.0);
        assert_eq!(point.allowed_per_s, Some(5.0));
        assert_eq!(
            point.denied_per_s,
            BTreeMap::from([("invalid_api_key".to_string(), 0.2)])
        );
        assert_eq!(point.cache_hit_ratio, Some(0.75));
        assert_eq!(point.buffered, Some(3.0));
        assert_eq!(point.refused_per_s, Some(0.0));
        let p50 = point.verify_p50_ms.unwrap();
        assert!((0.5..=1.0).contains(&p50), "{p50}");
        assert_eq!(point.verify_p99_ms.map(|p| p <= 1.0), Some(true));
    }

    #[test]
    fn a_restart_or_a_missing_scrape_gives_no_envoy_figures() {
        let history = GatewayHistory::default();
        history.record(sample(0, 100.0, 0.0, 1.0, 1.0, 0.0));
        // Envoy restarted: its counters went down.
        history.record(sample(10_000, 10.0, 0.0, 1.0, 1.0, 0.0));
        let mut unreadable = sample(20_000, 20.0, 0.0, 1.0, 1.0, 0.0);
        unreadable.envoy = None;
        history.record(unreadable);
        let points = history.points();
        assert_eq!(points.len(), 1, "the restart's interval is left out");
        assert_eq!(points[0].allowed_per_s, None);
        assert_eq!(points[0].verify_p50_ms, None, "no verification");
    }

    #[test]
    fn the_ring_keeps_an_hour() {
        let history = GatewayHistory::default();
        for i in 0..(SAMPLES_KEPT as i64 + 50) {
            history.record(sample(i * 10_000, i as f64, 0.0, 0.0, 0.0, 0.0));
        }
        assert_eq!(history.points().len(), SAMPLES_KEPT - 1);
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        // 10 observations at or below 0.1 ms, 10 more up to 0.25 ms.
        let mut cumulative = vec![10.0; VERIFY_BUCKETS.len() + 1];
        for c in cumulative.iter_mut().skip(1) {
            *c = 20.0;
        }
        assert_eq!(quantile(&cumulative, 0.5), Some(0.1));
        let p75 = quantile(&cumulative, 0.75).unwrap();
        assert!((p75 - 0.175).abs() < 1e-9, "{p75}");
        assert_eq!(quantile(&[0.0; 13], 0.5), None);
        let mut slow = vec![0.0; VERIFY_BUCKETS.len()];
        slow.push(4.0);
        assert_eq!(quantile(&slow, 0.5), Some(1000.0), "beyond the last bound");
    }
}
