//! The usage rollups: per key, per hour and per day (UTC), the requests,
//! byte sums, units, token sums and costs of each outcome and model (`''`
//! for a call that is not an LLM call), kept in `usage_hourly` and
//! `usage_daily` (migrations 0003, 0006, 0007 and 0009) so that summaries
//! and the usage series never scan `usage_log`.
//!
//! A batch's new rows are turned into [`RollupDelta`]s here, added to both
//! tables in the transaction that stores the rows (`Store::insert_usage`),
//! so the rollups always equal the ledger. Byte counts and units are kept as
//! the sums of their high and low 32 bits ([`Halves`]), like the summary has always
//! summed `usage_log`: exact whatever a row holds, a half overflowing only
//! past 2^31 rows of one bucket. Token counts are at most
//! [`MAX_TOKENS`](tollgate_wire::MAX_TOKENS) each, so their plain sums
//! ([`TokenSums`]) are exact for 2^33 rows. A row's cost is the integer
//! ingestion stored in it (`domain::price`), summed like bytes (below 2^61
//! each, so exact for 2^34 rows); the LLM rows with a cost and without one
//! are counted (`priced_rows`, `unpriced_rows`).

use std::collections::BTreeMap;

use time::{Duration, OffsetDateTime, Time};
use tollgate_wire::{TokenUsage, UsageRecord};

use crate::domain::price::{PriceBook, RowCost};

/// A rollup's bucket size, and the table that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grain {
    Minute,
    Hour,
    Day,
}

impl Grain {
    /// The rollup tables kept by ingestion.
    pub const KEPT: [Grain; 2] = [Grain::Hour, Grain::Day];

    /// The bucket's length in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Grain::Minute => 60,
            Grain::Hour => 3_600,
            Grain::Day => 86_400,
        }
    }

    /// The table that holds this grain's rollups; minutes are read from
    /// `usage_log` itself and have none.
    pub fn table(self) -> Option<&'static str> {
        match self {
            Grain::Minute => None,
            Grain::Hour => Some("usage_hourly"),
            Grain::Day => Some("usage_daily"),
        }
    }

    /// The first instant of the bucket holding `t` (UTC).
    pub fn floor(self, t: OffsetDateTime) -> OffsetDateTime {
        let t = crate::domain::clock::utc(t);
        let (hour, minute) = match self {
            Grain::Minute => (t.hour(), t.minute()),
            Grain::Hour => (t.hour(), 0),
            Grain::Day => (0, 0),
        };
        t.replace_time(Time::from_hms(hour, minute, 0).unwrap_or(Time::MIDNIGHT))
    }

    /// The first instant of the first bucket starting at or after `t`; the
    /// last instant the `time` crate holds when no bucket starts before it
    /// (accepted instants end in year 3000, far from there: `crate::domain::clock`).
    pub fn ceil(self, t: OffsetDateTime) -> OffsetDateTime {
        let floor = self.floor(t);
        if floor == t {
            floor
        } else {
            floor.saturating_add(self.duration())
        }
    }

    /// One bucket's length.
    pub fn duration(self) -> Duration {
        Duration::seconds(self.seconds())
    }
}

/// The sums of a count's (bytes, units) high and low 32 bits over some
/// rows; joined into the exact total by [`Halves::total`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Halves {
    pub high: i64,
    pub low: i64,
}

impl Halves {
    /// Adds one row's count.
    pub fn add(&mut self, count: u64) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.high += count >> 32;
        self.low += count & 0xFFFF_FFFF;
    }

    /// The exact total; `None` when it is negative, which no count is.
    pub fn total(self) -> Option<u128> {
        u128::try_from((i128::from(self.high) << 32) + i128::from(self.low)).ok()
    }
}

/// Token sums over some rows: the four counts of [`TokenUsage`], summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TokenSums {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub reasoning_tokens: i64,
}

impl TokenSums {
    /// Adds one call's counts (validated: each at most 2^30).
    pub fn add(&mut self, tokens: &TokenUsage) {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.input_tokens += count(tokens.input_tokens);
        self.output_tokens += count(tokens.output_tokens);
        self.cached_input_tokens += count(tokens.cached_input_tokens);
        self.reasoning_tokens += count(tokens.reasoning_tokens);
    }
}

impl std::ops::AddAssign for TokenSums {
    fn add_assign(&mut self, other: TokenSums) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
    }
}

/// The model a rollup row is kept under: the LLM call's, `''` for any other call.
pub fn model_key(record: &UsageRecord) -> &str {
    record.llm.as_ref().map_or("", |llm| llm.model.as_str())
}

/// What a batch adds to one rollup row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupDelta {
    pub api_key_id: i64,
    pub bucket_start: OffsetDateTime,
    pub outcome: &'static str,
    /// See [`model_key`].
    pub model: String,
    pub requests: i64,
    pub request_bytes: Halves,
    pub response_bytes: Halves,
    pub units: Halves,
    pub tokens: TokenSums,
    /// The sum of the priced rows' costs, in micro-units.
    pub cost: Halves,
    /// LLM rows with a cost, and without one (no price at their time).
    pub priced_rows: i64,
    pub unpriced_rows: i64,
}

/// What `records` (new rows, each counted once) add to the rollups of
/// `grain`, ordered by (key, bucket, outcome, model): the one lock order every
/// batch takes the rollup rows in, each record's cost by `prices` (as its row
/// stores it). A record whose time no store can hold is left out; ingestion
/// has refused it before this.
pub fn deltas<'a>(
    records: impl IntoIterator<Item = &'a UsageRecord>,
    grain: Grain,
    prices: &PriceBook,
) -> Vec<RollupDelta> {
    let mut sums: BTreeMap<(i64, OffsetDateTime, &'static str, &str), RollupDelta> =
        BTreeMap::new();
    for record in records {
        let Some(at) = crate::domain::clock::from_unix_ms(record.timestamp_ms) else {
            continue;
        };
        let bucket_start = grain.floor(at);
        let outcome = record.outcome.as_str();
        let model = model_key(record);
        let delta = sums
            .entry((record.api_key_id, bucket_start, outcome, model))
            .or_insert_with(|| RollupDelta {
                api_key_id: record.api_key_id,
                bucket_start,
                outcome,
                model: model.to_string(),
                requests: 0,
                request_bytes: Halves::default(),
                response_bytes: Halves::default(),
                units: Halves::default(),
                tokens: TokenSums::default(),
                cost: Halves::default(),
                priced_rows: 0,
                unpriced_rows: 0,
            });
        delta.requests += 1;
        delta.request_bytes.add(record.request_bytes);
        delta.response_bytes.add(record.response_bytes);
        delta.units.add(record.units);
        if let Some(llm) = &record.llm {
            delta.tokens.add(&llm.tokens);
        }
        match prices.cost(record) {
            RowCost::NotLlm => {}
            RowCost::Unpriced => delta.unpriced_rows += 1,
            RowCost::Priced { micros, .. } => {
                delta.cost.add(u64::try_from(micros).unwrap_or(0));
                delta.priced_rows += 1;
            }
        }
    }
    sums.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use tollgate_wire::Outcome;

    fn record(id: &str, key: i64, at: OffsetDateTime, outcome: Outcome, bytes: u64) -> UsageRecord {
        UsageRecord {
            request_id: id.into(),
            api_key_id: key,
            method: "POST".into(),
            endpoint: "/proxy/analyze".into(),
            status_code: outcome.denial_status().unwrap_or(200),
            outcome,
            request_bytes: bytes,
            response_bytes: 2 * bytes,
            units: bytes / 2,
            duration_ms: 1,
            timestamp_ms: crate::domain::clock::to_unix_ms(at),
            llm: None,
        }
    }

    #[test]
    fn buckets_start_at_their_first_instant() {
        let t = datetime!(2026-12-02 03:59:59.999 UTC);
        assert_eq!(Grain::Minute.floor(t), datetime!(2026-12-02 03:59:00 UTC));
        assert_eq!(Grain::Hour.floor(t), datetime!(2026-12-02 03:00:00 UTC));
        assert_eq!(Grain::Day.floor(t), datetime!(2026-12-02 00:00:00 UTC));
        assert_eq!(Grain::Hour.ceil(t), datetime!(2026-12-02 04:00:00 UTC));
        let edge = datetime!(2026-12-02 04:00:00 UTC);
        assert_eq!(Grain::Hour.floor(edge), edge);
        assert_eq!(Grain::Hour.ceil(edge), edge);
        assert_eq!(Grain::Day.ceil(edge), datetime!(2026-12-03 00:00:00 UTC));
        // Another offset is the same instant.
        let paris = datetime!(2026-12-02 01:30:00 +1);
        assert_eq!(Grain::Hour.floor(paris), datetime!(2026-12-02 00:00:00 UTC));
    }

    #[test]
    fn buckets_at_the_end_of_time_do_not_panic() {
        let end = time::PrimitiveDateTime::MAX.assume_utc();
        let last_hour = datetime!(9999-12-31 23:59:59 UTC);
        for grain in [Grain::Minute, Grain::Hour, Grain::Day] {
            assert_eq!(grain.ceil(last_hour), end, "{grain:?}");
            assert!(grain.floor(end) <= end);
        }
        assert_eq!(
            Grain::Hour.floor(datetime!(9999-12-31 23:30:00 -1)),
            datetime!(9999-12-31 23:00:00 UTC)
        );
    }

    #[test]
    fn a_batch_adds_per_key_bucket_and_outcome() {
        let h = datetime!(2026-12-02 03:00:00 UTC);
        let batch = [
            record("a", 2, h, Outcome::Allowed, 10),
            record("b", 1, h + Duration::minutes(59), Outcome::Allowed, 5),
            record("c", 1, h + Duration::minutes(60), Outcome::Allowed, 7),
            record("d", 1, h, Outcome::InvalidApiKey, 0),
            record(
                "e",
                1,
                h + Duration::seconds(1),
                Outcome::Allowed,
                u64::from(u32::MAX) + 2,
            ),
        ];
        let hourly = deltas(&batch, Grain::Hour, &PriceBook::default());
        let summary: Vec<_> = hourly
            .iter()
            .map(|d| {
                (
                    d.api_key_id,
                    d.bucket_start,
                    d.outcome,
                    d.requests,
                    d.request_bytes.total(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1, h, "allowed", 2, Some(u128::from(u32::MAX) + 7)),
                (1, h, "invalid_api_key", 1, Some(0)),
                (1, h + Duration::hours(1), "allowed", 1, Some(7)),
                (2, h, "allowed", 1, Some(10)),
            ]
        );
        assert_eq!(hourly[0].request_bytes, Halves { high: 1, low: 6 });
        let daily = deltas(&batch, Grain::Day, &PriceBook::default());
        assert_eq!(daily.len(), 3);
        assert_eq!(daily[0].requests, 3);
        assert_eq!(
            daily[0].response_bytes.total(),
            Some(2 * (u128::from(u32::MAX) + 14))
        );
        // Units are summed like bytes: 5 / 2 + 7 / 2 + (2^32 + 1) / 2.
        assert_eq!(
            daily[0].units.total(),
            Some(2 + 3 + (u128::from(u32::MAX) + 2) / 2)
        );
    }

    #[test]
    fn llm_calls_add_their_tokens_under_their_model() {
        use tollgate_wire::{Api, LlmUsage, UsageSource};
        let h = datetime!(2026-12-02 03:00:00 UTC);
        let llm = |id: &str, model: &str, input: u64| UsageRecord {
            llm: Some(LlmUsage {
                api: Api::OpenAiChat,
                model: model.into(),
                streamed: false,
                usage_source: UsageSource::Reported,
                tokens: TokenUsage {
                    input_tokens: input,
                    output_tokens: 2 * input,
                    cached_input_tokens: input / 2,
                    reasoning_tokens: input / 4,
                },
            }),
            ..record(id, 1, h, Outcome::Allowed, 1)
        };
        let batch = [
            llm("a", "m1", 8),
            record("b", 1, h, Outcome::Allowed, 1),
            llm("c", "m2", 4),
            llm("d", "m1", tollgate_wire::MAX_TOKENS),
        ];
        let hourly = deltas(&batch, Grain::Hour, &PriceBook::default());
        let rows: Vec<_> = hourly
            .iter()
            .map(|d| (d.model.as_str(), d.requests, d.tokens))
            .collect();
        let sums = |input: i64| TokenSums {
            input_tokens: input,
            output_tokens: 2 * input,
            cached_input_tokens: input / 2,
            reasoning_tokens: input / 4,
        };
        let max = (1 << 30) + 8;
        assert_eq!(
            rows,
            [
                ("", 1, TokenSums::default()),
                ("m1", 2, sums(max)),
                ("m2", 1, sums(4)),
            ]
        );
    }

    #[test]
    fn halves_join_exactly_past_64_bits() {
        let mut sum = Halves::default();
        for _ in 0..3 {
            sum.add(i64::MAX as u64);
        }
        assert_eq!(sum.total(), Some(3 * i64::MAX as u128));
        assert_eq!(Halves { high: -1, low: 0 }.total(), None);
    }
}
