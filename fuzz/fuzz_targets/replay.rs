//! The replay store's claim decision on arbitrary bucket content: it must
//! never panic, never write more than a bucket holds, never drop a live
//! entry, keep one key within its share, and once it writes a claim, the
//! same claim against what it wrote is a replay. Bytes it cannot decode are
//! refused, never read as an empty bucket.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_filter::replay::{
    attempt, decode_bucket, Attempt, JtiClaim, ReplayPolicy, ReplayScope, BUCKET_ENTRIES,
    KEY_SHARE, MAX_BUCKET_LEN, SHARED_FROM,
};

fuzz_target!(|data: &[u8]| {
    let Some((head, bucket)) = data.split_first_chunk::<13>() else {
        return;
    };
    let (jti, rest) = head.split_at(4);
    let (owner, now) = rest.split_at(1);
    let jti = String::from_utf8_lossy(jti);
    let owner = i64::from(owner[0] % 4);
    let now = i64::from_be_bytes(now.try_into().unwrap_or_default());
    let policy = ReplayPolicy {
        slots: 32,
        scope: ReplayScope::Instance,
    };
    let claim = JtiClaim::new(&jti, now.saturating_add(60), 30, &policy).by_key(owner);
    let decoded = decode_bucket(bucket);
    let outcome = attempt(Some(bucket), &claim, now);
    let Some(before) = decoded else {
        assert_eq!(outcome, Attempt::Unreadable);
        return;
    };
    assert!(before.len() <= BUCKET_ENTRIES);
    let live: Vec<_> = before.iter().filter(|e| e.expires_at_s >= now).collect();
    let held = live
        .iter()
        .filter(|e| owner != 0 && e.owner == owner)
        .count();
    match outcome {
        Attempt::Write(written) => {
            assert!(written.len() <= MAX_BUCKET_LEN);
            let after = decode_bucket(&written).expect("a written bucket decodes");
            assert!(after.contains(&claim.entry));
            // Nothing live was dropped to make room.
            for e in &live {
                assert!(after.contains(e), "a live entry was evicted");
            }
            assert!(live.len() < SHARED_FROM || held < KEY_SHARE, "share ignored");
            assert_eq!(attempt(Some(&written), &claim, now), Attempt::Replayed);
        }
        Attempt::Replayed => {
            assert!(live.iter().any(|e| e.fingerprint == claim.entry.fingerprint));
        }
        Attempt::Full => assert_eq!(live.len(), BUCKET_ENTRIES),
        Attempt::ShareExceeded => {
            assert!(live.len() >= SHARED_FROM && held >= KEY_SHARE && owner != 0);
        }
        Attempt::Unreadable => panic!("a decodable bucket was refused as unreadable"),
    }
});
