//! Limits in the database: a key's limits (with their `limits` change on the
//! key change feed, in the same transaction), and the quota counters that
//! are the authority for each key's budget in each window: grants, their
//! returns, and settlements, each idempotent on the id its sender minted.
//!
//! A grant is one conditional `UPDATE` of the counter row,
//! `charged = charged + n WHERE limit - charged >= min`, with `n` =
//! min(want, limit - charged) computed in the same statement
//! ([`tollgate_wire::grant_amount`] is the same arithmetic): the database
//! serialises updates of one row (InnoDB's row lock; SQLite's one writer),
//! so the sum of grants never passes the limit, whatever the number of
//! sidecars. Every statement here has the same text on both backends
//! except the insert that skips an existing counter row.
//!
//! Counters and charges are kept per quota *name* (`Quota::name`: the
//! kind, and `@model` for a quota scoped to one model, `tokens@gpt-4o`),
//! so a key's unscoped and scoped quotas of one kind count apart.
//!
//! A budget belongs to a key or to a team ([`BudgetOwner`]); its rows name
//! their owner by the pair (`api_key_id`, `team_id`): (key, 0) for a key's,
//! (0, team) for a team's (migration 0011; no key or team has id 0). Every
//! statement binds the pair ([`owner_ids`]), so one grant, settlement and
//! return serves both owners.

use std::future::Future;

use sqlx::migrate::Migrate;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};
use tollgate_wire::{BudgetOwner, Limits, WindowSpan};

use super::dialect::Dialect;
use super::feed::{unix_ms, PURGE_BATCH};
use super::{sql, ApiKey, SqlStore, Store, StoreError};

/// The kind of change a new set of limits makes on the key change feed:
/// every Envoy drops the key's cached verdict, and with it its limits.
pub const CHANGE_LIMITS: &str = "limits";

/// Sets a key's limits; binds limits_spec, id.
const SET_LIMITS: &str = "UPDATE api_keys SET limits_spec = ? WHERE id = ?";

/// The counter row of a (owner, quota, window) with nothing charged, left
/// as it is when it exists; binds key, team, quota, start, end, limit. The clause
/// that skips an existing row is the dialect's
/// ([`Dialect::NEW_COUNTER_ON_EXISTING`]).
fn new_counter<DB: Dialect>() -> String {
    format!(
        "INSERT INTO limit_counters \
         (api_key_id, team_id, quota, window_start_ms, window_end_ms, limit_value, charged, \
         last_grant) VALUES (?, ?, ?, ?, ?, ?, 0, 0) {}",
        DB::NEW_COUNTER_ON_EXISTING
    )
}

/// The grant: takes min(want, limit - charged) if that is at least `min`.
/// `last_grant` is assigned first, from the old `charged`, so both
/// dialects (MySQL assigns left to right and later expressions see earlier
/// assignments; SQLite uses the old row throughout) compute the same.
/// Binds limit, want, limit, want, limit, want, limit, want, limit, key,
/// team, quota, start, limit, min.
const GRANT: &str = "UPDATE limit_counters SET \
     last_grant = CASE WHEN ? - charged < ? THEN ? - charged ELSE ? END, \
     charged = charged + CASE WHEN ? - charged < ? THEN ? - charged ELSE ? END, \
     limit_value = ? \
     WHERE api_key_id = ? AND team_id = ? AND quota = ? AND window_start_ms = ? \
     AND ? - charged >= ?";

/// A settlement: charged after the fact, whatever the total. Binds amount,
/// limit, key, team, quota, start.
const SETTLE: &str = "UPDATE limit_counters SET charged = charged + ?, limit_value = ? \
     WHERE api_key_id = ? AND team_id = ? AND quota = ? AND window_start_ms = ?";

/// Gives part of a grant back. Binds amount, key, team, quota, start.
const GIVE_BACK: &str = "UPDATE limit_counters SET charged = charged - ? \
     WHERE api_key_id = ? AND team_id = ? AND quota = ? AND window_start_ms = ?";

/// A counter's state; binds key, team, quota, start.
const COUNTER: &str = "SELECT charged, last_grant, limit_value FROM limit_counters \
     WHERE api_key_id = ? AND team_id = ? AND quota = ? AND window_start_ms = ?";

/// Records a charge; binds id, key, team, quota, start, kind, amount,
/// created_ms. A charge id already stored is a unique violation.
const INSERT_CHARGE: &str = "INSERT INTO limit_charges \
     (charge_id, api_key_id, team_id, quota, window_start_ms, kind, amount, returned, \
     created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)";

/// A stored charge; binds id.
const CHARGE: &str = "SELECT api_key_id, team_id, quota, window_start_ms, kind, amount, \
     returned, returned_ms FROM limit_charges WHERE charge_id = ?";

/// Marks a grant's return, once; binds returned, returned_ms, id, returned.
const MARK_RETURNED: &str = "UPDATE limit_charges SET returned = ?, returned_ms = ? \
     WHERE charge_id = ? AND kind = 'grant' AND returned_ms IS NULL AND amount >= ?";

/// Every counter of the windows that contain an instant, keys' then
/// teams', by owner; binds the instant twice. `reconcile` reads them.
const COUNTERS_AT: &str = "SELECT api_key_id, team_id, quota, window_start_ms, window_end_ms, \
     limit_value, charged FROM limit_counters \
     WHERE window_start_ms <= ? AND window_end_ms > ? ORDER BY team_id, api_key_id, quota";

/// How long counters and charges are kept after their window: longer than
/// the longest window (31 days) and the usage timestamps' skew, so a
/// retried call and `usage reconcile` of a recent window still find them.
pub const LIMIT_HISTORY: std::time::Duration = std::time::Duration::from_secs(40 * 86_400);

/// The kind of a charge row.
pub const KIND_GRANT: &str = "grant";
pub const KIND_SETTLEMENT: &str = "settlement";

/// A grant to take: up to `want`, at least `min`, of `limit` in `span`.
#[derive(Debug, Clone)]
pub struct GrantAsk<'a> {
    pub charge_id: &'a str,
    /// Whose quota: a key's or a team's.
    pub owner: BudgetOwner,
    /// The quota's name (`Quota::name`): its counter's.
    pub quota: &'a str,
    pub span: WindowSpan,
    pub limit: u64,
    pub want: u64,
    pub min: u64,
    pub now_ms: i64,
}

/// What a grant, a settlement or a return left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charged {
    /// What this call took (a grant), charged (a settlement) or gave back
    /// (a return); the stored value when the call was a retry.
    pub amount: u64,
    /// The counter's total after it.
    pub charged: u64,
    /// True when the charge id was stored already: nothing changed.
    pub replayed: bool,
}

/// One counter row, for `usage reconcile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRow {
    pub owner: BudgetOwner,
    pub quota: String,
    pub span: WindowSpan,
    pub limit: u64,
    pub charged: i64,
}

/// The (`api_key_id`, `team_id`) pair a budget's rows carry.
pub fn owner_ids(owner: BudgetOwner) -> (i64, i64) {
    let (key, team) = owner.ids();
    (key, team.unwrap_or(0))
}

/// The owner of a row's (`api_key_id`, `team_id`) pair.
fn owner_of(api_key_id: i64, team_id: i64) -> BudgetOwner {
    BudgetOwner::of(api_key_id, (team_id != 0).then_some(team_id))
}

/// A stored count (never negative once written by this module).
fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A count bound as a column value (counts are at most 2^53).
fn bound(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Tries a transaction that InnoDB may pick as a deadlock victim (error
/// 1213, SQLSTATE 40001) again, up to three times in all: it rolled back
/// whole, so nothing of it happened.
async fn retried_on_deadlock<DB, T, F, Fut>(mut transaction: F) -> Result<T, StoreError>
where
    DB: Dialect,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match transaction().await {
            Err(StoreError::Unavailable(e)) if tries < 3 && DB::is_deadlock(&e) => continue,
            other => return other,
        }
    }
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    DB::Connection: Migrate,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB> + Default,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> Option<DB::Time>: Encode<'q, DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    /// See [`Store::set_limits`].
    pub async fn set_limits(
        &self,
        id: i64,
        limits: &Limits,
        now: time::OffsetDateTime,
    ) -> Result<Option<ApiKey>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(SET_LIMITS)
            .bind(sql::limits_spec(limits))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&done) == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let hash = Self::key_hash_by_id(&mut tx, id).await?;
        Self::publish_change(&mut tx, &hash, CHANGE_LIMITS, unix_ms(now)).await?;
        tx.commit().await?;
        self.key_by_id(id).await
    }

    /// See [`Store::grant`].
    pub async fn grant(&self, ask: &GrantAsk<'_>) -> Result<Charged, StoreError> {
        retried_on_deadlock::<DB, _, _, _>(|| self.grant_once(ask)).await
    }

    async fn grant_once(&self, ask: &GrantAsk<'_>) -> Result<Charged, StoreError> {
        let quota = ask.quota;
        let limit = bound(ask.limit);
        let want = bound(ask.want);
        let (key, team) = owner_ids(ask.owner);
        let mut tx = self.pool().begin().await?;
        // A write first: SQLite takes its write lock here, before any read.
        sqlx::query(&new_counter::<DB>())
            .bind(key)
            .bind(team)
            .bind(quota)
            .bind(ask.span.start_ms)
            .bind(ask.span.end_ms)
            .bind(limit)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(GRANT)
            .bind(limit)
            .bind(want)
            .bind(limit)
            .bind(want)
            .bind(limit)
            .bind(want)
            .bind(limit)
            .bind(want)
            .bind(limit)
            .bind(key)
            .bind(team)
            .bind(quota)
            .bind(ask.span.start_ms)
            .bind(limit)
            .bind(bound(ask.min))
            .execute(&mut *tx)
            .await?;
        let taken = DB::rows_affected(&done) == 1;
        let row = sqlx::query(COUNTER)
            .bind(key)
            .bind(team)
            .bind(quota)
            .bind(ask.span.start_ms)
            .fetch_one(&mut *tx)
            .await?;
        let charged = count(row.try_get("charged")?);
        let amount = if taken {
            count(row.try_get("last_grant")?)
        } else {
            0
        };
        if amount == 0 {
            // Nothing taken, nothing to remember: a retry asks afresh.
            tx.rollback().await?;
            return self.replayed_or(ask.charge_id, charged).await;
        }
        let recorded = sqlx::query(INSERT_CHARGE)
            .bind(ask.charge_id)
            .bind(key)
            .bind(team)
            .bind(quota)
            .bind(ask.span.start_ms)
            .bind(KIND_GRANT)
            .bind(bound(amount))
            .bind(ask.now_ms)
            .execute(&mut *tx)
            .await;
        match recorded.map_err(StoreError::from) {
            Ok(_) => {
                tx.commit().await?;
                Ok(Charged {
                    amount,
                    charged,
                    replayed: false,
                })
            }
            Err(StoreError::Duplicate) => {
                tx.rollback().await?;
                self.replayed_or(ask.charge_id, charged).await
            }
            Err(e) => Err(e),
        }
    }

    /// The stored charge `charge_id` as a replayed answer, or, when there
    /// is none, an empty grant at `charged`.
    async fn replayed_or(&self, charge_id: &str, charged: u64) -> Result<Charged, StoreError> {
        match self.charge(charge_id).await? {
            Some(stored) => Ok(Charged {
                amount: stored.amount,
                charged: self.counter_total(&stored).await?,
                replayed: true,
            }),
            None => Ok(Charged {
                amount: 0,
                charged,
                replayed: false,
            }),
        }
    }

    /// See [`Store::settle`].
    pub async fn settle(&self, settlement: &Settlement<'_>) -> Result<Charged, StoreError> {
        retried_on_deadlock::<DB, _, _, _>(|| self.settle_once(settlement)).await
    }

    async fn settle_once(&self, s: &Settlement<'_>) -> Result<Charged, StoreError> {
        let kind = s.quota;
        let (key, team) = owner_ids(s.owner);
        let mut tx = self.pool().begin().await?;
        sqlx::query(&new_counter::<DB>())
            .bind(key)
            .bind(team)
            .bind(kind)
            .bind(s.span.start_ms)
            .bind(s.span.end_ms)
            .bind(bound(s.limit))
            .execute(&mut *tx)
            .await?;
        let recorded = sqlx::query(INSERT_CHARGE)
            .bind(s.charge_id)
            .bind(key)
            .bind(team)
            .bind(kind)
            .bind(s.span.start_ms)
            .bind(KIND_SETTLEMENT)
            .bind(bound(s.amount))
            .bind(s.now_ms)
            .execute(&mut *tx)
            .await;
        match recorded.map_err(StoreError::from) {
            Ok(_) => {}
            Err(StoreError::Duplicate) => {
                tx.rollback().await?;
                return self.replayed_or(s.charge_id, 0).await;
            }
            Err(e) => return Err(e),
        }
        sqlx::query(SETTLE)
            .bind(bound(s.amount))
            .bind(bound(s.limit))
            .bind(key)
            .bind(team)
            .bind(kind)
            .bind(s.span.start_ms)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(COUNTER)
            .bind(key)
            .bind(team)
            .bind(kind)
            .bind(s.span.start_ms)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Charged {
            amount: s.amount,
            charged: count(row.try_get("charged")?),
            replayed: false,
        })
    }

    /// See [`Store::give_back`].
    pub async fn give_back(
        &self,
        charge_id: &str,
        unused: u64,
        now_ms: i64,
    ) -> Result<Option<Charged>, StoreError> {
        retried_on_deadlock::<DB, _, _, _>(|| self.give_back_once(charge_id, unused, now_ms)).await
    }

    async fn give_back_once(
        &self,
        charge_id: &str,
        unused: u64,
        now_ms: i64,
    ) -> Result<Option<Charged>, StoreError> {
        let Some(stored) = self.charge(charge_id).await? else {
            return Ok(None);
        };
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(MARK_RETURNED)
            .bind(bound(unused))
            .bind(now_ms)
            .bind(charge_id)
            .bind(bound(unused))
            .execute(&mut *tx)
            .await?;
        let marked = DB::rows_affected(&done) == 1;
        if marked {
            let (key, team) = owner_ids(stored.owner);
            sqlx::query(GIVE_BACK)
                .bind(bound(unused))
                .bind(key)
                .bind(team)
                .bind(&stored.quota)
                .bind(stored.window_start_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let charged = self.counter_total(&stored).await?;
        Ok(Some(Charged {
            amount: if marked { unused } else { stored.returned },
            charged,
            replayed: !marked,
        }))
    }

    /// See [`Store::charge`].
    pub async fn charge(&self, charge_id: &str) -> Result<Option<StoredCharge>, StoreError> {
        let row = sqlx::query(CHARGE)
            .bind(charge_id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| {
            Ok(StoredCharge {
                owner: owner_of(row.try_get("api_key_id")?, row.try_get("team_id")?),
                quota: sql::text_column(&row, "quota")?.unwrap_or_default(),
                window_start_ms: row.try_get("window_start_ms")?,
                kind: sql::text_column(&row, "kind")?.unwrap_or_default(),
                amount: count(row.try_get("amount")?),
                returned: count(row.try_get("returned")?),
            })
        })
        .transpose()
    }

    /// The total of the counter a stored charge went to.
    async fn counter_total(&self, charge: &StoredCharge) -> Result<u64, StoreError> {
        self.counter_charged(charge.owner, &charge.quota, charge.window_start_ms)
            .await
    }

    /// A counter's total (0 before its first charge).
    pub async fn counter_charged(
        &self,
        owner: BudgetOwner,
        quota: &str,
        window_start_ms: i64,
    ) -> Result<u64, StoreError> {
        let (key, team) = owner_ids(owner);
        let row = sqlx::query(COUNTER)
            .bind(key)
            .bind(team)
            .bind(quota)
            .bind(window_start_ms)
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(row) => Ok(count(row.try_get("charged")?)),
            None => Ok(0),
        }
    }

    /// See [`Store::purge_limit_history`].
    pub async fn purge_limit_history(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut most = 0;
        for (table, column) in [
            ("limit_charges", "created_ms"),
            ("limit_counters", "window_end_ms"),
        ] {
            let done = sqlx::query(&DB::delete_oldest(table, column))
                .bind(before_ms)
                .bind(PURGE_BATCH)
                .execute(self.pool())
                .await?;
            most = most.max(DB::rows_affected(&done));
        }
        Ok(most)
    }

    /// See [`Store::counters_at`].
    pub async fn counters_at(&self, at_ms: i64) -> Result<Vec<CounterRow>, StoreError> {
        let rows = sqlx::query(COUNTERS_AT)
            .bind(at_ms)
            .bind(at_ms)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(CounterRow {
                    owner: owner_of(row.try_get("api_key_id")?, row.try_get("team_id")?),
                    quota: sql::text_column(row, "quota")?.unwrap_or_default(),
                    span: WindowSpan {
                        start_ms: row.try_get("window_start_ms")?,
                        end_ms: row.try_get("window_end_ms")?,
                    },
                    limit: count(row.try_get("limit_value")?),
                    charged: row.try_get("charged")?,
                })
            })
            .collect()
    }
}

/// A settlement to charge: `amount` of `quota` (a `response_bytes` or
/// `units` quota's name) after the fact, whatever the total, in `span` of
/// a `limit`.
#[derive(Debug, Clone)]
pub struct Settlement<'a> {
    pub charge_id: &'a str,
    pub owner: BudgetOwner,
    pub quota: &'a str,
    pub span: WindowSpan,
    pub limit: u64,
    pub amount: u64,
    pub now_ms: i64,
}

impl Store {
    /// Replaces key `id`'s limits and publishes a `limits` change in the
    /// same transaction; the key as it is now, `None` when no key has the id.
    pub async fn set_limits(
        &self,
        id: i64,
        limits: &Limits,
        now: time::OffsetDateTime,
    ) -> Result<Option<ApiKey>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().set_limits(id, limits, now).await,
            Store::Sqlite(s) => s.sql().set_limits(id, limits, now).await,
        }
    }

    /// Takes a grant (see the module's comment); a grant id already stored
    /// is answered with what it took then.
    pub async fn grant(&self, ask: &GrantAsk<'_>) -> Result<Charged, StoreError> {
        match self {
            Store::MySql(s) => s.sql().grant(ask).await,
            Store::Sqlite(s) => s.sql().grant(ask).await,
        }
    }

    /// Charges `amount` after the fact (a settlement of a `response_bytes`
    /// or `units` quota, by name, of a key's or a team's budget), whatever
    /// the total; idempotent on `charge_id`.
    #[allow(clippy::too_many_arguments)]
    pub async fn settle(
        &self,
        charge_id: &str,
        owner: BudgetOwner,
        quota: &str,
        span: WindowSpan,
        limit: u64,
        amount: u64,
        now_ms: i64,
    ) -> Result<Charged, StoreError> {
        let settlement = Settlement {
            charge_id,
            owner,
            quota,
            span,
            limit,
            amount,
            now_ms,
        };
        match self {
            Store::MySql(s) => s.sql().settle(&settlement).await,
            Store::Sqlite(s) => s.sql().settle(&settlement).await,
        }
    }

    /// Gives `unused` of grant `charge_id` back, once: a second return of
    /// the same grant (a retry) changes nothing. `None` when no grant has
    /// the id; an `unused` above what the grant took gives nothing back.
    pub async fn give_back(
        &self,
        charge_id: &str,
        unused: u64,
        now_ms: i64,
    ) -> Result<Option<Charged>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().give_back(charge_id, unused, now_ms).await,
            Store::Sqlite(s) => s.sql().give_back(charge_id, unused, now_ms).await,
        }
    }

    /// A stored charge by id.
    pub async fn charge(&self, charge_id: &str) -> Result<Option<StoredCharge>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().charge(charge_id).await,
            Store::Sqlite(s) => s.sql().charge(charge_id).await,
        }
    }

    /// What a (key, quota, window) has charged so far (0 before its first
    /// grant); the quota by name (`Quota::name`).
    pub async fn charged_in(
        &self,
        key_id: i64,
        quota: &str,
        window_start_ms: i64,
    ) -> Result<u64, StoreError> {
        self.owner_charged_in(BudgetOwner::Key(key_id), quota, window_start_ms)
            .await
    }

    /// What a key's or a team's (quota, window) has charged so far.
    pub async fn owner_charged_in(
        &self,
        owner: BudgetOwner,
        quota: &str,
        window_start_ms: i64,
    ) -> Result<u64, StoreError> {
        match self {
            Store::MySql(s) => s.sql().counter_charged(owner, quota, window_start_ms).await,
            Store::Sqlite(s) => s.sql().counter_charged(owner, quota, window_start_ms).await,
        }
    }

    /// Deletes up to [`PURGE_BATCH`] charges created before `before_ms`
    /// and as many counters whose window ended before it; says how many
    /// rows went (a full batch: call again).
    pub async fn purge_limit_history(&self, before_ms: i64) -> Result<u64, StoreError> {
        match self {
            Store::MySql(s) => s.sql().purge_limit_history(before_ms).await,
            Store::Sqlite(s) => s.sql().purge_limit_history(before_ms).await,
        }
    }

    /// Every counter of the windows containing `at_ms`: keys' by key then
    /// quota, then teams' by team then quota.
    pub async fn counters_at(&self, at_ms: i64) -> Result<Vec<CounterRow>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().counters_at(at_ms).await,
            Store::Sqlite(s) => s.sql().counters_at(at_ms).await,
        }
    }
}

/// A stored grant or settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCharge {
    pub owner: BudgetOwner,
    pub quota: String,
    pub window_start_ms: i64,
    /// [`KIND_GRANT`] or [`KIND_SETTLEMENT`].
    pub kind: String,
    pub amount: u64,
    pub returned: u64,
}
