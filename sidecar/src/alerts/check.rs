//! The checker: for each alert, each quota of its budget (a key's or a
//! team's), the ledger's use in the current window (`store::quota_use`, as
//! `usage reconcile` reads it; a team's is the sum of its current keys') as
//! a share of the limit; each threshold reached becomes one outbox row.
//! The outbox's unique key makes that row once whatever the number of
//! checkers; a checker also remembers the rows it has seen, so it does not
//! write them again every round.

use std::collections::HashSet;

use tollgate_wire::{BudgetOwner, Quota};

use crate::domain::alert::{
    crossed, percent, BudgetRef, KeyRef, TeamRef, ThresholdEvent, EVENT_TYPE,
};
use crate::domain::clock::format_rfc3339;
use crate::domain::random::random_hex;
use crate::store::alerts::NewEvent;
use crate::store::quota_use::{instant, ledger_total, team_ledger_total};
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

/// The budget an alert watches, as this round reads it.
struct Watched {
    owner: BudgetOwner,
    quotas: Vec<Quota>,
    /// A team's keys now, whose ledger rows are its use.
    team_keys: Vec<i64>,
    /// The key, for a key's budget.
    key: Option<KeyRef>,
    /// The team its events name: the team, or the key's (read when an
    /// event is written).
    team: EventTeam,
}

enum EventTeam {
    Known(Option<TeamRef>),
    KeysTeam(i64),
}

impl Watched {
    /// The budget of `owner`; `None` when its key or team is gone.
    async fn read(store: &Store, owner: BudgetOwner) -> Result<Option<Watched>, StoreError> {
        Ok(match owner {
            BudgetOwner::Key(id) => store.key_by_id(id).await?.map(|key| Watched {
                owner,
                quotas: key.limits.quotas,
                team_keys: Vec::new(),
                team: match key.team_id {
                    Some(team) => EventTeam::KeysTeam(team),
                    None => EventTeam::Known(None),
                },
                key: Some(KeyRef {
                    id: key.id,
                    name: key.name,
                }),
            }),
            BudgetOwner::Team(id) => store.team_by_id(id).await?.map(|team| Watched {
                owner,
                quotas: team.limits.quotas,
                team_keys: team.key_ids,
                key: None,
                team: EventTeam::Known(Some(TeamRef {
                    id: team.id,
                    name: team.name,
                })),
            }),
        })
    }

    /// The ledger's use of `quota` in `[start_ms, end_ms)`.
    async fn used(
        &self,
        store: &Store,
        quota: &Quota,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<u128, StoreError> {
        let (start, end) = (instant(start_ms), instant(end_ms));
        match self.owner {
            BudgetOwner::Key(id) => ledger_total(store, id, quota, start, end).await,
            BudgetOwner::Team(_) => {
                team_ledger_total(store, &self.team_keys, quota, start, end).await
            }
        }
    }

    /// The team its events name, read once.
    async fn team(&mut self, store: &Store) -> Result<Option<TeamRef>, StoreError> {
        if let EventTeam::KeysTeam(id) = self.team {
            let team = store.team_by_id(id).await?.map(|t| TeamRef {
                id: t.id,
                name: t.name,
            });
            self.team = EventTeam::Known(team);
        }
        Ok(match &self.team {
            EventTeam::Known(team) => team.clone(),
            EventTeam::KeysTeam(_) => None,
        })
    }
}

impl Checker {
    /// One round at `now_ms`; says how many events this round added.
    pub async fn check_once(&mut self, store: &Store, now_ms: i64) -> Result<usize, StoreError> {
        self.seen
            .retain(|(_, _, start, _)| *start > now_ms - FORGET_AFTER_MS);
        let mut added = 0;
        for alert in store.list_alerts().await? {
            let Some(mut watched) = Watched::read(store, alert.owner).await? else {
                continue;
            };
            let (key_id, team_id) = BudgetRef::ids(alert.owner);
            for quota in std::mem::take(&mut watched.quotas) {
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
                let used = watched
                    .used(store, &quota, span.start_ms, span.end_ms)
                    .await?;
                for threshold in crossed(&pending, used, quota.limit) {
                    let event = ThresholdEvent {
                        kind: EVENT_TYPE,
                        budget: BudgetRef {
                            key_id,
                            team_id,
                            quota: name.clone(),
                            window: quota.window.as_str(),
                            window_start: format_rfc3339(instant(span.start_ms)),
                            window_end: format_rfc3339(instant(span.end_ms)),
                        },
                        used,
                        limit: quota.limit,
                        percent: percent(used, quota.limit),
                        threshold,
                        team: watched.team(store).await?,
                        key: watched.key.clone(),
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
                        owner: alert.owner,
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
                            budget = %alert.owner.describe(),
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
