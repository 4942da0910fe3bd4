//! The sidecar's usage ingestion on arbitrary bytes, exactly as
//! `POST /v1/internal/usage` runs it: the JSON body reader, then the batch
//! rules. A batch that passes must fit the database columns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidecar::extract::parse_json;
use sidecar::usage::validate_batch;
use tollgate_wire::{
    Outcome, UsageRecord, MAX_ENDPOINT_LEN, MAX_METHOD_LEN, MAX_REQUEST_ID_LEN, MAX_TIMESTAMP_MS,
    MAX_USAGE_BATCH,
};

fuzz_target!(|data: &[u8]| {
    let records: Vec<UsageRecord> = match parse_json(data) {
        Ok(records) => records,
        Err(e) => {
            assert_eq!(e.status().as_u16(), 400);
            return;
        }
    };
    if validate_batch(&records).is_err() {
        return;
    }
    assert!(records.len() <= MAX_USAGE_BATCH);
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
        assert!(i64::try_from(r.request_bytes).is_ok());
        assert!(i64::try_from(r.response_bytes).is_ok());
        assert!(i64::try_from(r.duration_ms).is_ok());
        // What was accepted survives the trip back to JSON unchanged.
        let again: UsageRecord =
            serde_json::from_slice(&serde_json::to_vec(r).expect("serializes")).expect("parses");
        assert_eq!(&again, r);
    }
});
