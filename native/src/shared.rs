//! Shared data for the native module: one table per Envoy process, seen by
//! every worker thread, with proxy-wasm's compare-and-swap rules (as
//! proxy-wasm-cpp-host keeps them, and `filter/src/fake_host.rs` models
//! them): a read returns the value and its CAS; a write with a non-zero CAS
//! that differs from the key's current one fails; a missing key is created
//! whatever the CAS; every write gets the next CAS, counting up from 1.
//!
//! Its memory is bounded the way the wasm build's is: the filter writes
//! only the fixed keys of its tables (`filter/src/shared_table.rs`), and
//! values are never larger than their codecs make them.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tollgate_filter::host::{HostError, SetError, Versioned};

#[derive(Default)]
struct Store {
    values: HashMap<String, (Vec<u8>, u32)>,
    last_cas: u32,
}

static STORE: Mutex<Option<Store>> = Mutex::new(None);

fn store() -> MutexGuard<'static, Option<Store>> {
    // A panic while the lock was held left the map whole (every update is
    // one insert), so a poisoned lock is still usable.
    STORE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A value and its CAS.
pub fn get(key: &str) -> Result<Versioned, HostError> {
    let guard = store();
    Ok(match guard.as_ref().and_then(|s| s.values.get(key)) {
        Some((value, cas)) => (Some(value.clone()), Some(*cas)),
        None => (None, None),
    })
}

/// Writes a value; with a non-zero `cas`, only if the key is absent or
/// still at that version.
pub fn set(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
    let mut guard = store();
    let store = guard.get_or_insert_with(Store::default);
    let cas = cas.unwrap_or(0);
    if let Some((_, current)) = store.values.get(key) {
        if cas != 0 && cas != *current {
            return Err(SetError::CasMismatch);
        }
    }
    // CAS values count up from 1 and skip 0 (which means "no check").
    store.last_cas = store.last_cas.checked_add(1).unwrap_or(1);
    let next = store.last_cas;
    store.values.insert(key.to_string(), (value.to_vec(), next));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap_follows_proxy_wasm() {
        let key = "shared-test-cas";
        assert_eq!(get(key).unwrap(), (None, None));
        // A missing key is created whatever the CAS.
        set(key, b"a", Some(u32::MAX)).unwrap();
        let (value, cas) = get(key).unwrap();
        assert_eq!(value.as_deref(), Some(b"a".as_slice()));
        let cas = cas.unwrap();
        assert_ne!(cas, 0);
        // A stale CAS loses; the current one wins and moves the version.
        assert_eq!(
            set(key, b"b", Some(cas.wrapping_add(1))),
            Err(SetError::CasMismatch)
        );
        set(key, b"b", Some(cas)).unwrap();
        assert_eq!(set(key, b"c", Some(cas)), Err(SetError::CasMismatch));
        // No CAS: an unconditional write.
        set(key, b"d", None).unwrap();
        assert_eq!(get(key).unwrap().0.as_deref(), Some(b"d".as_slice()));
    }

    #[test]
    fn every_thread_sees_one_table() {
        let key = "shared-test-threads";
        std::thread::spawn(move || set(key, b"from another thread", None).unwrap())
            .join()
            .unwrap();
        assert_eq!(
            get(key).unwrap().0.as_deref(),
            Some(b"from another thread".as_slice())
        );
    }
}
