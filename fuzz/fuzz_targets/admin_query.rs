//! The admin API's query parsing on arbitrary text, as the handlers read
//! it: `GET /v1/usage/summary` (`usage::parse_summary_query`) and
//! `GET /v1/keys/{id}/usage/series` (`series::parse_series_query`), at a
//! clock an optional first line chooses (seconds since the epoch). Neither
//! may panic, nor may what an accepted query leads to (the summary's rollup
//! parts, the series' window); a refusal is a 400 `invalid_request` naming
//! a parameter; an accepted `since` is on the hour and within the accepted
//! range (`clock::EARLIEST_ACCEPTED` up to `clock::ACCEPTED_END`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidecar::domain::clock::{ACCEPTED_END, EARLIEST_ACCEPTED};
use sidecar::http::error::{ApiError, ErrorCode};
use sidecar::http::series::parse_series_query;
use sidecar::store::summary_parts;
use sidecar::http::usage::parse_summary_query;
use time::OffsetDateTime;

/// The clock unless the input sets one: 2026-12-02T00:00:00Z.
const NOW_S: i64 = 1_796_169_600;

fn assert_named_refusal(error: &ApiError) {
    assert_eq!(error.code(), ErrorCode::InvalidRequest, "{error:?}");
    assert!(error.field().is_some_and(|f| !f.is_empty()), "{error:?}");
    assert!(!error.to_string().is_empty());
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (now_s, query) = match text.split_once('\n') {
        Some((first, rest)) => match first.trim().parse::<i64>() {
            Ok(now_s) => (now_s, rest),
            Err(_) => (NOW_S, &*text),
        },
        None => (NOW_S, &*text),
    };
    let now = OffsetDateTime::from_unix_timestamp(now_s)
        .unwrap_or_else(|_| OffsetDateTime::from_unix_timestamp(NOW_S).unwrap());

    match parse_summary_query(query, now) {
        Ok(filter) => {
            assert!(filter.until.is_none());
            if let Some(since) = filter.since {
                assert!(
                    (EARLIEST_ACCEPTED..ACCEPTED_END).contains(&since),
                    "{since}"
                );
                assert_eq!(
                    (since.minute(), since.second(), since.nanosecond()),
                    (0, 0, 0)
                );
                let parts = summary_parts(Some(since), None);
                assert!(!parts.is_empty());
                assert!(parts
                    .iter()
                    .all(|p| p.from.is_none_or(|from| from >= since)));
            }
        }
        Err(error) => assert_named_refusal(&error),
    }
    match parse_series_query(query) {
        Ok(window) => {
            let (from, to) = window.span(now);
            assert!(from <= to, "{window:?} at {now}");
        }
        Err(error) => assert_named_refusal(&error),
    }
});
