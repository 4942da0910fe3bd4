//! The sidecar's usage ingestion on arbitrary bytes, exactly as
//! `POST /v1/internal/usage` runs it: the JSON body reader, then the batch
//! rules at a clock and skew the fuzzer chooses. A batch that passes must
//! fit the database columns, hold only counts one exchange can have, sum
//! within 64 bits, and be timed within the skew of the clock.
//!
//! An input may start with a line `now_ms skew_ms` (decimal) choosing the
//! sidecar's clock and skew; without one, the whole input is the body, read
//! at the seeds' clock with the default skew.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sidecar::domain::clock::LATEST_ACCEPTED_MS;
use sidecar::http::usage::DEFAULT_USAGE_MAX_SKEW;
use sidecar::http::extract::parse_json;
use sidecar::http::usage::{validate_batch, TimeWindow};
use tollgate_wire::{
    Outcome, UsageRecord, MAX_BODY_BYTES, MAX_ENDPOINT_LEN, MAX_METHOD_LEN, MAX_REQUEST_ID_LEN,
    MAX_RESPONSE_BYTES, MAX_TIMESTAMP_MS, MAX_USAGE_BATCH,
};

/// The instant the seeds' records were made at (2025-11-24).
const SEED_NOW_MS: u64 = 1_764_000_000_000;

/// The clock, the skew and the body of an input.
fn clock_and_body(data: &[u8]) -> (u64, Duration, &[u8]) {
    let default = (SEED_NOW_MS, DEFAULT_USAGE_MAX_SKEW, data);
    let Some(newline) = data.iter().position(|&b| b == b'\n') else {
        return default;
    };
    let Ok(line) = std::str::from_utf8(&data[..newline]) else {
        return default;
    };
    let mut numbers = line.split(' ').map(str::parse::<u64>);
    match (numbers.next(), numbers.next(), numbers.next()) {
        (Some(Ok(now_ms)), Some(Ok(skew_ms)), None) => {
            (now_ms, Duration::from_millis(skew_ms), &data[newline + 1..])
        }
        _ => default,
    }
}

fuzz_target!(|data: &[u8]| {
    let (now_ms, skew, body) = clock_and_body(data);
    let records: Vec<UsageRecord> = match parse_json(body) {
        Ok(records) => records,
        Err(e) => {
            assert_eq!(e.status().as_u16(), 400);
            return;
        }
    };
    if let Err(e) = validate_batch(&records, TimeWindow::around(now_ms, skew)) {
        assert!(matches!(e.status().as_u16(), 400 | 413));
        if e.status().as_u16() == 400 {
            // The filter reads the record's index out of `[i].field`.
            let field = e.field().expect("a refusal names its field");
            let index = field
                .strip_prefix('[')
                .and_then(|rest| rest.split_once("]."))
                .and_then(|(i, _)| i.parse::<usize>().ok())
                .expect("the field is [i].name");
            assert!(index < records.len());
        }
        return;
    }
    assert!(records.len() <= MAX_USAGE_BATCH);
    let skew_ms = u64::try_from(skew.as_millis()).unwrap_or(u64::MAX);
    let mut request_total: u64 = 0;
    let mut response_total: u64 = 0;
    for r in &records {
        assert!(!r.request_id.is_empty() && r.request_id.len() <= MAX_REQUEST_ID_LEN);
        assert!(!r.method.is_empty() && r.method.len() <= MAX_METHOD_LEN);
        assert!(!r.endpoint.is_empty() && r.endpoint.len() <= MAX_ENDPOINT_LEN);
        assert_eq!(Outcome::from_code(r.outcome.as_str()), Some(r.outcome));
        for text in [&r.request_id, &r.method, &r.endpoint] {
            assert!(!text.chars().any(char::is_control));
        }
        assert!(r.api_key_id > 0);
        assert!((100..=599).contains(&r.status_code));
        assert!(r.timestamp_ms <= MAX_TIMESTAMP_MS);
        // Within the instants the sidecar accepts at all (1970 to year 3000).
        assert!(r.timestamp_ms <= LATEST_ACCEPTED_MS);
        assert!(r.timestamp_ms.abs_diff(now_ms) <= skew_ms);
        assert!(r.request_bytes <= MAX_BODY_BYTES);
        assert!(r.response_bytes <= MAX_RESPONSE_BYTES);
        assert!(i64::try_from(r.duration_ms).is_ok());
        request_total += r.request_bytes;
        response_total += r.response_bytes;
        // What was accepted survives the trip back to JSON unchanged.
        let again: UsageRecord =
            serde_json::from_slice(&serde_json::to_vec(r).expect("serializes")).expect("parses");
        assert_eq!(&again, r);
    }
    // A whole accepted batch sums within a signed 64-bit column.
    assert!(i64::try_from(request_total).is_ok());
    assert!(i64::try_from(response_total).is_ok());
});
