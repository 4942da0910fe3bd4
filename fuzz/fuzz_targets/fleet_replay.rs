//! Fleet-wide replay protection end to end below HTTP: the filter's claim
//! of a `jti` (`JtiClaim::fleet_request`, as `replay_scope: "fleet"` sends
//! it), read as the sidecar reads it, and claimed in a real store (SQLite)
//! by `Store::claim_jti`, with the store's purge run between claims. An
//! oracle of the target's own (a map of each `jti` to the latest expiry of
//! the claim that won it) says what each answer must be: a claim wins when
//! no claim of its `jti` is live at its instant, and then holds the `jti`
//! to its own expiry; a purge never makes a live claim winnable again.
//!
//! Each input is a list of 4-byte operations: which of 8 `jti`s, which of
//! 4 keys, how far the clock moves (never back: one sidecar's clock), how
//! long the token lives, and whether the purge runs first. Each input's
//! `jti`s are its own, so the store can be shared across inputs.
#![no_main]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sidecar::store::target::DatabaseTarget;
use sidecar::store::Store;
use tollgate_filter::replay::{JtiClaim, ReplayPolicy, ReplayScope};
use tollgate_wire::{ClaimRequest, FINGERPRINT_HEX_LEN};

/// The instant the first operation of an input runs at.
const START_S: i64 = 1_764_000_000;

/// The clock skew the filter keeps a claim past its token's `exp`.
const SKEW_S: i64 = 30;

fn runtime_and_store() -> &'static (tokio::runtime::Runtime, Store) {
    static STORE: OnceLock<(tokio::runtime::Runtime, Store)> = OnceLock::new();
    STORE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        // In memory where the system has it (no disk write per claim), under
        // one name, so a run leaves at most one behind for the next to clear.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let path = dir.join("tollgate-fuzz-fleet-replay.db");
        for stale in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{stale}", path.display()));
        }
        let store = runtime
            .block_on(async {
                let store = Store::connect(&DatabaseTarget::Sqlite(path)).await?;
                store.migrate().await.map(|()| store)
            })
            .expect("a migrated SQLite store");
        (runtime, store)
    })
}

fuzz_target!(|data: &[u8]| {
    static INPUTS: AtomicU64 = AtomicU64::new(0);
    let input = INPUTS.fetch_add(1, Ordering::Relaxed);
    let (runtime, store) = runtime_and_store();
    let policy = ReplayPolicy {
        slots: 32,
        scope: ReplayScope::Fleet,
    };
    // The oracle: each jti's winning claim's expiry.
    let mut held: HashMap<u8, i64> = HashMap::new();
    let mut now = START_S;
    for op in data.chunks_exact(4).take(64) {
        let (which, key, step, life) = (op[0] % 8, i64::from(op[1] % 4) + 1, op[2], op[3]);
        now += i64::from(step % 64);
        if step >= 192 {
            runtime
                .block_on(store.purge_claims(now))
                .expect("the purge runs");
        }
        let jti = format!("{input}-{which}");
        let exp = now + i64::from(life % 128) - 16;
        let claim = JtiClaim::new(&jti, exp, SKEW_S, &policy).by_key(key);
        // What the filter sends, as the sidecar reads it.
        let body = serde_json::to_vec(&claim.fleet_request()).expect("the claim serialises");
        let request: ClaimRequest = serde_json::from_slice(&body).expect("the sidecar reads it");
        assert_eq!(request.fingerprint.len(), FINGERPRINT_HEX_LEN);
        assert!(request
            .fingerprint
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(request.expires_at, exp + SKEW_S);
        assert_eq!(request.key_id, key);
        let claimed = runtime
            .block_on(store.claim_jti(
                &request.fingerprint,
                request.key_id,
                request.expires_at,
                now,
            ))
            .expect("the claim runs");
        let live = held.get(&which).is_some_and(|until| *until >= now);
        assert_eq!(
            claimed,
            !live,
            "jti {which} at {now}: claimed {claimed}, held until {:?}",
            held.get(&which)
        );
        if claimed {
            held.insert(which, request.expires_at);
        }
    }
});
