//! The checker: for each alert, each quota of its key, the ledger's use in
//! the current window (`store::quota_use`, as `usage reconcile` reads it)
//! as a share of the limit; each threshold reached becomes one outbox row.
//! The outbox's unique key makes that row once whatever the number of
//! checkers; a checker also remembers the rows it has seen, so it does not
//! write them again every round.

use std::collections::HashSet;

use crate::domain::alert::{crossed, percent, BudgetRef, KeyRef, ThresholdEvent, EVENT_TYPE};
use crate::domain::clock::format_rfc3339;
use crate::domain::random::random_hex;
use crate::store::alerts::NewEvent;
use crate::store::quota_use::{instant, ledger_total};
use crate::store::{Store, StoreError};

/// (alert, quota, window start, threshold): one outbox row's identity.
type Seen = (i64, String, i64, u8);

/// Remembers what it has put in the outbox (or found there).
#[derive(Debug, Default)]
pub struct Checker {
    seen: HashSet<Seen>,
}

/// A remembered row is forgotten once its window started this long ago
/// (longer than any window).
const FORGET_AFTER_MS: i64 = 32 * 24 * 3600 * 1000;

impl Checker {
    /// One round at `now_ms`; says how many events this round added.
    pub async fn check_once(&mut self, store: &Store, now_ms: i64) -> Result<usize, StoreError> {
        self.seen
            .retain(|(_, _, start, _)| *start > now_ms - FORGET_AFTER_MS);
        let mut added = 0;
        for alert in store.list_alerts().await? {
            let Some(key) = store.key_by_id(alert.key_id).await? else {
                continue;
            };
            for quota in &key.limits.quotas {
                let span = quota.window.containing(now_ms);
                let name = quota.name();
                let pending: Vec<u8> = alert
                    .thresholds
                    .iter()
                    .copied()
                    .filter(|t| {
                        !self
                            .seen
                            .contains(&(alert.id, name.clone(), span.start_ms, *t))
                    })
                    .collect();
                if pending.is_empty() {
                    continue;
                }
                let (start, end) = (instant(span.start_ms), instant(span.end_ms));
                let used = ledger_total(store, key.id, quota, start, end).await?;
                for threshold in crossed(&pending, used, quota.limit) {
                    let event = ThresholdEvent {
                        kind: EVENT_TYPE,
                        budget: BudgetRef {
                            key_id: key.id,
                            quota: name.clone(),
                            window: quota.window.as_str(),
                            window_start: format_rfc3339(start),
                            window_end: format_rfc3339(end),
                        },
                        used,
                        limit: quota.limit,
                        percent: percent(used, quota.limit),
                        threshold,
                        team: None,
                        key: KeyRef {
                            id: key.id,
                            name: key.name.clone(),
                        },
                        timestamp: format_rfc3339(instant(now_ms)),
                    };
                    let payload = serde_json::to_string(&event)
                        .map_err(|e| StoreError::Corrupt(format!("an event's JSON: {e}")))?;
                    let event_id = random_hex(16)
                        .map(|hex| format!("msg_{hex}"))
                        .map_err(StoreError::Corrupt)?;
                    let row = NewEvent {
                        event_id,
                        alert_id: alert.id,
                        quota: name.clone(),
                        window_start_ms: span.start_ms,
                        threshold,
                        payload,
                        created_ms: now_ms,
                    };
                    if store.insert_event(&row).await? {
                        added += 1;
                        tracing::info!(
                            alert = alert.id,
                            key = key.id,
                            quota = %name,
                            threshold,
                            "budget threshold crossed"
                        );
                    }
                    self.seen
                        .insert((alert.id, name.clone(), span.start_ms, threshold));
                }
            }
        }
        Ok(added)
    }
}
