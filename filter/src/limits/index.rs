//! Which budgets (limited keys, and teams with limits) this Envoy charged
//! lately, in shared data (`tollgate.limits.keys`), so that whichever
//! context ticks (a worker's root, or the native module's configuration)
//! asks ahead and settles for every one of them. A worker writes a budget
//! in at most once per [`REFRESH_MS`] (it remembers when it last did); the
//! tick drops budgets idle for [`IDLE_MS`] with nothing due.
//!
//! An entry is an id and an instant: a key's id as it is, a team's negated
//! (key and team ids are positive), so an index written before teams
//! reads the same.

use std::cell::RefCell;
use std::collections::BTreeMap;

use tollgate_wire::BudgetOwner;

use crate::host::Host;
use crate::shared_table::{self, Change};

/// The index's shared-data key.
pub const INDEX_KEY: &str = "tollgate.limits.keys";

/// Most keys the index holds; past it, the least recently served goes.
pub const MAX_KEYS: usize = 10_000;

/// How often a worker refreshes a key's last use in the index.
const REFRESH_MS: u64 = 10_000;

/// How long a key with nothing due stays in the index after its last use.
pub const IDLE_MS: u64 = 60_000;

const ATTEMPTS: u32 = 16;

/// An owner's id in the index.
fn index_id(owner: BudgetOwner) -> i64 {
    match owner {
        BudgetOwner::Key(id) => id,
        BudgetOwner::Team(id) => id.saturating_neg(),
    }
}

/// The owner an index id stands for.
fn owner_of(id: i64) -> BudgetOwner {
    if id < 0 {
        BudgetOwner::Team(id.saturating_neg())
    } else {
        BudgetOwner::Key(id)
    }
}

/// The index: index ids and when each was last served (ms).
pub fn decode(bytes: &[u8]) -> Vec<(i64, u64)> {
    bytes
        .chunks_exact(16)
        .filter_map(|c| {
            let (id, at) = c.split_at(8);
            Some((
                i64::from_be_bytes(id.try_into().ok()?),
                u64::from_be_bytes(at.try_into().ok()?),
            ))
        })
        .collect()
}

fn encode(keys: &[(i64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(keys.len() * 16);
    for (id, at) in keys {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&at.to_be_bytes());
    }
    out
}

/// Every budget of the index, with when it was last charged.
pub fn owners(host: &impl Host) -> Vec<(BudgetOwner, u64)> {
    shared_table::read(host, INDEX_KEY)
        .map(|b| decode(&b))
        .unwrap_or_default()
        .into_iter()
        .map(|(id, at)| (owner_of(id), at))
        .collect()
}

/// The worker charged `owner`'s budget at `now_ms`.
pub fn served(
    host: &impl Host,
    limited_keys: &RefCell<BTreeMap<i64, u64>>,
    owner: BudgetOwner,
    now_ms: u64,
) {
    let key_id = index_id(owner);
    let Ok(mut seen) = limited_keys.try_borrow_mut() else {
        return;
    };
    if seen
        .get(&key_id)
        .is_some_and(|at| now_ms.saturating_sub(*at) < REFRESH_MS)
    {
        return;
    }
    seen.insert(key_id, now_ms);
    if seen.len() > MAX_KEYS {
        seen.retain(|_, at| now_ms.saturating_sub(*at) < REFRESH_MS);
    }
    drop(seen);
    shared_table::update(host, INDEX_KEY, ATTEMPTS, |current| {
        let mut keys = current.map(decode).unwrap_or_default();
        match keys.iter_mut().find(|(id, _)| *id == key_id) {
            Some(entry) => entry.1 = now_ms,
            None => keys.push((key_id, now_ms)),
        }
        if keys.len() > MAX_KEYS {
            keys.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
            keys.truncate(MAX_KEYS);
        }
        Change::<()>::Write(encode(&keys))
    });
}

/// Drops budgets that went idle (the tick found nothing due for them).
pub fn forget(host: &impl Host, idle: &[BudgetOwner], now_ms: u64) {
    if idle.is_empty() {
        return;
    }
    let idle: Vec<i64> = idle.iter().copied().map(index_id).collect();
    shared_table::update(host, INDEX_KEY, ATTEMPTS, |current| {
        let mut keys = current.map(decode).unwrap_or_default();
        let before = keys.len();
        keys.retain(|(id, at)| !(idle.contains(id) && now_ms.saturating_sub(*at) > IDLE_MS));
        if keys.len() == before {
            return Change::Stop(());
        }
        Change::Write(encode(&keys))
    });
}
