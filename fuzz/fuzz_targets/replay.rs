//! The replay store's claim decision on arbitrary bucket content: it must
//! never panic, never write more than a bucket holds, and once it writes a
//! claim, the same claim against what it wrote is a replay.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_filter::replay::{
    attempt, decode_bucket, Attempt, JtiClaim, ReplayPolicy, BUCKET_ENTRIES, MAX_BUCKET_LEN,
};

fuzz_target!(|data: &[u8]| {
    let Some((head, bucket)) = data.split_first_chunk::<12>() else {
        return;
    };
    let (jti, now) = head.split_at(4);
    let jti = String::from_utf8_lossy(jti);
    let now = i64::from_be_bytes(now.try_into().unwrap_or_default());
    let policy = ReplayPolicy { slots: 32 };
    let claim = JtiClaim::new(&jti, now.saturating_add(60), 30, &policy);
    let before = decode_bucket(bucket);
    assert!(before.len() <= BUCKET_ENTRIES);
    match attempt(Some(bucket), &claim, now) {
        Attempt::Write(written) => {
            assert!(written.len() <= MAX_BUCKET_LEN);
            let after = decode_bucket(&written);
            assert!(after.contains(&claim.entry));
            // Nothing live was dropped to make room.
            for e in before.iter().filter(|e| e.expires_at_s >= now) {
                assert!(after.contains(e), "a live entry was evicted");
            }
            assert_eq!(attempt(Some(&written), &claim, now), Attempt::Replayed);
        }
        Attempt::Replayed => {
            assert!(before
                .iter()
                .any(|e| e.fingerprint == claim.entry.fingerprint && e.expires_at_s >= now));
        }
        Attempt::Full => {
            assert_eq!(
                before.iter().filter(|e| e.expires_at_s >= now).count(),
                BUCKET_ENTRIES
            );
        }
    }
});
