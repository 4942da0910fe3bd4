//! A key's usage over time, for plots: `GET /v1/keys/{id}/usage/series`,
//! every bucket of a window (zero-filled, oldest first) with its requests,
//! bytes, units, denials by code, and LLM tokens and spend by model.
//!
//! The windows end with the bucket holding "now": `hour` is 60 one-minute
//! buckets read from `usage_log` (through its (api_key_id, created_at)
//! index), `day` 24 hourly buckets and `30d` 30 daily buckets, read from the
//! rollups (`store::rollup`). Everything here is a function of the instant
//! it is given, so tests choose the clock.

use axum::routing::get;
use axum::Router;
use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde::Serialize;
use time::OffsetDateTime;
use tollgate_wire::Outcome;

use crate::domain::clock::{format_rfc3339, now_ms};
use crate::http::error::{ApiError, Undone};
use crate::http::extract::{query_pairs, repeated_parameter, unknown_parameter, AdminCaller};
use crate::http::AppState;
use crate::store::rollup::Grain;
use crate::store::{SeriesRow, Store, StoreError, TokenSums};

/// A series' span and bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last 60 minutes, per minute.
    Hour,
    /// The last 24 hours, per hour.
    Day,
    /// The last 30 days, per day.
    ThirtyDays,
}

impl Window {
    /// Every window, by its name in the query.
    pub const ALL: [Window; 3] = [Window::Hour, Window::Day, Window::ThirtyDays];

    /// Its name in `?window=`.
    pub fn name(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
            Window::ThirtyDays => "30d",
        }
    }

    /// The window named `text`, if any.
    pub fn from_name(text: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.name() == text)
    }

    /// Its bucket size.
    pub fn grain(self) -> Grain {
        match self {
            Window::Hour => Grain::Minute,
            Window::Day => Grain::Hour,
            Window::ThirtyDays => Grain::Day,
        }
    }

    /// How many buckets it has.
    pub fn buckets(self) -> i32 {
        match self {
            Window::Hour => 60,
            Window::Day => 24,
            Window::ThirtyDays => 30,
        }
    }

    /// `[from, to)` at `now`: the last [`Window::buckets`] buckets, the
    /// last one holding `now` (clamped, not a panic, at the ends of what
    /// the `time` crate holds).
    pub fn span(self, now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
        let grain = self.grain();
        let to = grain.floor(now).saturating_add(grain.duration());
        let length = grain.duration().saturating_mul(self.buckets());
        (to.saturating_sub(length), to)
    }
}

/// One bucket of a series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Point {
    /// The bucket's first instant, RFC 3339.
    pub start: String,
    /// Every request, denied ones included.
    pub requests: i64,
    pub request_bytes: u128,
    pub response_bytes: u128,
    /// What the upstream said the bucket's calls cost, in its own units.
    pub units: u128,
    /// The denied requests, by the contract's code; empty when none was.
    pub denials: BTreeMap<String, i64>,
    /// The LLM calls' token sums, by model; empty when there was none.
    pub models: BTreeMap<String, TokenSums>,
    /// The LLM calls' spend, by model (the same models as `models`).
    pub spend: BTreeMap<String, ModelSpend>,
}

/// What one model's calls in a bucket cost: the sum of the costs stored
/// on their rows (as the summary adds them), and how many were priced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ModelSpend {
    /// In micro-units of the series' `currency`; 0 when none was priced.
    pub cost_micros: u128,
    pub priced_rows: i64,
    /// Calls of a model with no price at their time.
    pub unpriced_rows: i64,
}

/// Reply of `GET /v1/keys/{id}/usage/series`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Series {
    pub key_id: i64,
    pub window: &'static str,
    pub bucket_s: i64,
    /// The first bucket's start and the last one's end, RFC 3339.
    pub from: String,
    pub to: String,
    /// The one currency of prices, if any price is set.
    pub currency: Option<String>,
    pub points: Vec<Point>,
}

/// Key `key_id`'s series over `window` at `now`, every bucket present.
pub async fn usage_series(
    store: &Store,
    key_id: i64,
    window: Window,
    now: OffsetDateTime,
) -> Result<Series, StoreError> {
    let (from, to) = window.span(now);
    let rows = store.usage_series(key_id, window.grain(), from, to).await?;
    let mut series = fill(key_id, window, from, to, &rows);
    series.currency = store.price_currency().await?.map(|c| c.code().to_string());
    Ok(series)
}

/// The series of `rows` (sparse, per bucket and outcome) with every bucket
/// of `[from, to)`.
fn fill(
    key_id: i64,
    window: Window,
    from: OffsetDateTime,
    to: OffsetDateTime,
    rows: &[SeriesRow],
) -> Series {
    let grain = window.grain();
    let mut points: Vec<Point> = (0..window.buckets())
        .map(|i| Point {
            start: format_rfc3339(from.saturating_add(grain.duration().saturating_mul(i))),
            requests: 0,
            request_bytes: 0,
            response_bytes: 0,
            units: 0,
            denials: BTreeMap::new(),
            models: BTreeMap::new(),
            spend: BTreeMap::new(),
        })
        .collect();
    for row in rows {
        let offset = (row.bucket_start - from).whole_seconds();
        let index = offset.div_euclid(grain.seconds());
        let Some(point) = usize::try_from(index).ok().and_then(|i| points.get_mut(i)) else {
            continue;
        };
        point.requests += row.requests;
        point.request_bytes += row.request_bytes;
        point.response_bytes += row.response_bytes;
        point.units += row.units;
        if row.outcome != Outcome::Allowed.as_str() {
            *point.denials.entry(row.outcome.clone()).or_insert(0) += row.requests;
        }
        if !row.model.is_empty() {
            *point.models.entry(row.model.clone()).or_default() += row.tokens;
            let spend = point.spend.entry(row.model.clone()).or_default();
            spend.cost_micros += row.cost_micros;
            spend.priced_rows += row.priced_rows;
            spend.unpriced_rows += row.unpriced_rows;
        }
    }
    Series {
        key_id,
        window: window.name(),
        bucket_s: grain.seconds(),
        from: format_rfc3339(from),
        to: format_rfc3339(to),
        currency: None,
        points,
    }
}

/// Reads the query string of `GET /v1/keys/{id}/usage/series`
/// (`window=day`): the window, required; nothing else is taken. A refusal
/// is a 400 naming the parameter. A plain function for the fuzzer
/// (`fuzz/fuzz_targets/admin_query.rs`).
pub fn parse_series_query(query: &str) -> Result<Window, ApiError> {
    window_of(query_pairs(query))
}

/// Reads `?window=` (required; nothing else is taken).
fn window_of(pairs: Vec<(String, String)>) -> Result<Window, ApiError> {
    let names = || Window::ALL.map(|w| w.name()).join(", ");
    let mut window = None;
    for (name, value) in pairs {
        if name != "window" {
            return Err(unknown_parameter(&name, "window"));
        }
        if window.is_some() {
            return Err(repeated_parameter("window"));
        }
        window = Some(Window::from_name(&value).ok_or_else(|| {
            ApiError::invalid_field(
                "window",
                format!("window must be one of {}, not {value:?}", names()),
            )
        })?);
    }
    window.ok_or_else(|| {
        ApiError::invalid_field(
            "window",
            format!("the query parameter window is required: one of {}", names()),
        )
    })
}

/// `GET /v1/keys/{id}/usage/series?window=hour|day|30d`.
pub async fn series(
    _caller: AdminCaller,
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<Series>, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::invalid_field("id", "the key id must be an integer"))?;
    let window = parse_series_query(query.as_deref().unwrap_or_default())?;
    let read = ApiError::reading(Undone::ReadSeries);
    if !state.store.key_exists(id).await.map_err(read)? {
        return Err(ApiError::KeyNotFound(id));
    }
    let series = usage_series(&state.store, id, window, now_ms())
        .await
        .map_err(ApiError::reading(Undone::ReadSeries))?;
    Ok(Json(series))
}

/// A key's usage series (admin token).
pub fn admin_router() -> Router<AppState> {
    Router::new().route("/v1/keys/{id}/usage/series", get(series))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn windows_end_with_the_bucket_holding_now() {
        let now = datetime!(2026-12-02 03:36:39.250 UTC);
        assert_eq!(
            Window::Hour.span(now),
            (
                datetime!(2026-12-02 02:37:00 UTC),
                datetime!(2026-12-02 03:37:00 UTC)
            )
        );
        assert_eq!(
            Window::Day.span(now),
            (
                datetime!(2026-12-01 04:00:00 UTC),
                datetime!(2026-12-02 04:00:00 UTC)
            )
        );
        assert_eq!(
            Window::ThirtyDays.span(now),
            (
                datetime!(2026-11-03 00:00:00 UTC),
                datetime!(2026-12-03 00:00:00 UTC)
            )
        );
        // On a boundary, the bucket starting then is the last.
        let edge = datetime!(2026-12-02 04:00:00 UTC);
        assert_eq!(Window::Day.span(edge).1, datetime!(2026-12-02 05:00:00 UTC));
    }

    #[test]
    fn windows_at_the_ends_of_time_are_clamped_not_a_panic() {
        let ends = [
            time::PrimitiveDateTime::MAX.assume_utc(),
            time::PrimitiveDateTime::MIN.assume_utc(),
        ];
        for now in ends {
            for window in Window::ALL {
                let (from, to) = window.span(now);
                assert!(from <= to, "{window:?} at {now}");
                let series = fill(1, window, from, to, &[]);
                assert_eq!(series.points.len(), window.buckets() as usize);
            }
        }
    }

    #[test]
    fn every_bucket_is_present_oldest_first() {
        let now = datetime!(2026-12-02 03:36:39 UTC);
        let (from, to) = Window::Day.span(now);
        let row = |at, outcome: &str, requests| SeriesRow {
            bucket_start: at,
            outcome: outcome.into(),
            model: String::new(),
            requests,
            request_bytes: 10 * requests as u128,
            response_bytes: 1,
            units: 7 * requests as u128,
            tokens: TokenSums::default(),
            cost_micros: 0,
            priced_rows: 0,
            unpriced_rows: 0,
        };
        let llm = |at, model: &str, input| SeriesRow {
            model: model.into(),
            tokens: TokenSums {
                input_tokens: input,
                output_tokens: 1,
                ..TokenSums::default()
            },
            cost_micros: if model == "m2" {
                0
            } else {
                u128::from(input.unsigned_abs()) * 3
            },
            priced_rows: i64::from(model != "m2"),
            unpriced_rows: i64::from(model == "m2"),
            ..row(at, "allowed", 1)
        };
        let rows = [
            row(from, "allowed", 2),
            row(from, "invalid_api_key", 1),
            row(from, "revoked_api_key", 3),
            row(datetime!(2026-12-02 03:00:00 UTC), "allowed", 5),
            // Outside the window: not a point of it.
            row(to, "allowed", 7),
            llm(from + time::Duration::hours(1), "m1", 10),
            llm(from + time::Duration::hours(1), "m2", 20),
            llm(from + time::Duration::minutes(90), "m1", 5),
        ];
        let series = fill(4, Window::Day, from, to, &rows);
        assert_eq!(series.points.len(), 24);
        assert_eq!(series.bucket_s, 3600);
        assert_eq!(series.from, "2026-12-01T04:00:00.000Z");
        assert_eq!(series.to, "2026-12-02T04:00:00.000Z");
        let first = &series.points[0];
        assert_eq!(first.start, series.from);
        assert_eq!(
            (
                first.requests,
                first.request_bytes,
                first.response_bytes,
                first.units
            ),
            (6, 60, 3, 42)
        );
        assert_eq!(
            first.denials,
            BTreeMap::from([("invalid_api_key".into(), 1), ("revoked_api_key".into(), 3)])
        );
        assert_eq!(series.points[23].start, "2026-12-02T03:00:00.000Z");
        assert_eq!(series.points[23].requests, 5);
        assert!(series.points[23].denials.is_empty());
        let total: i64 = series.points.iter().map(|p| p.requests).sum();
        assert_eq!(total, 14);
        assert!(first.models.is_empty(), "calls that were not LLM calls");
        let second = &series.points[1];
        assert_eq!(second.models.len(), 2);
        assert_eq!(second.models["m1"].input_tokens, 15);
        assert_eq!(second.models["m1"].output_tokens, 2);
        assert_eq!(second.models["m2"].input_tokens, 20);
        assert_eq!(
            second.spend["m1"],
            ModelSpend {
                cost_micros: 45,
                priced_rows: 2,
                unpriced_rows: 0
            }
        );
        assert_eq!(second.spend["m2"].unpriced_rows, 1);
        assert!(first.spend.is_empty());
    }

    #[test]
    fn the_window_is_named_or_refused_naming_it() {
        let pairs = |q: &[(&str, &str)]| {
            q.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        for w in Window::ALL {
            assert_eq!(window_of(pairs(&[("window", w.name())])).unwrap(), w);
        }
        for query in [
            &[][..],
            &[("window", "week")][..],
            &[("window", "")][..],
            &[("window", "day"), ("window", "hour")][..],
        ] {
            let err = window_of(pairs(query)).unwrap_err();
            assert_eq!(err.field(), Some("window"), "{query:?}");
        }
        let err = window_of(pairs(&[("window", "day"), ("key", "1")])).unwrap_err();
        assert_eq!(err.field(), Some("key"));
        assert_eq!(
            parse_series_query("window=30d").unwrap(),
            Window::ThirtyDays
        );
        let err = parse_series_query("window=day&=x").unwrap_err();
        assert_eq!(err.field(), Some("\"\""));
    }
}
