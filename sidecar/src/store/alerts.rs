//! Budget alerts in the database (`alerts`, `alert_events`, migrations
//! 0010 and 0012): adding, listing and removing alerts, and the outbox of
//! threshold events: inserted once per (alert, quota, window, threshold)
//! whatever the number of sidecars, claimed with a lease so one sender at a
//! time holds an event, then marked delivered, due again later, or failed.
//!
//! An alert's owner is a key or a team, stored as a budget's is
//! (`api_key_id`, `team_id`, 0 for none): a key's alert has `team_id` 0, a
//! team's `api_key_id` 0. An alert is stored only if its owner exists, in
//! one statement, and a team is deleted only if no alert names it
//! (`store::teams`), so no alert outlives its team.

use sqlx::migrate::Migrate;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};
use tollgate_wire::BudgetOwner;

use super::dialect::Dialect;
use super::sql::text_column;
use super::{SqlStore, Store, StoreError};
use crate::domain::alert::{secret_binding, thresholds_text, AlertError, AlertRequest, BudgetRef};
use crate::domain::clock::format_rfc3339;
use crate::domain::sealed::{Keyring, SealError, SealedSecret};
use crate::domain::signing_secret::SigningSecret;
use crate::domain::webhook::WebhookSecret;

/// An event waiting to be sent, or due again.
pub const STATE_PENDING: &str = "pending";
/// An event a receiver answered 2xx.
pub const STATE_DELIVERED: &str = "delivered";
/// An event whose every attempt failed.
pub const STATE_FAILED: &str = "failed";

/// An alert to store.
#[derive(Debug, Clone)]
pub struct NewAlert {
    /// Whose budget it watches.
    pub owner: BudgetOwner,
    /// Stored spelling: `50,80,100`.
    pub thresholds: String,
    pub url: String,
    pub secret_env: Option<String>,
    pub sealed_secret: Option<SealedSecret>,
    pub created_ms: i64,
}

/// A stored alert.
#[derive(Debug, Clone)]
pub struct Alert {
    pub id: i64,
    /// Whose budget it watches.
    pub owner: BudgetOwner,
    pub thresholds: Vec<u8>,
    pub url: String,
    pub secret_env: Option<String>,
    pub sealed_secret: Option<SealedSecret>,
    pub created_ms: i64,
}

/// A threshold event for the outbox.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub alert_id: i64,
    /// Whose budget crossed the threshold (the alert's owner).
    pub owner: BudgetOwner,
    pub quota: String,
    pub window_start_ms: i64,
    pub threshold: u8,
    pub payload: String,
    pub created_ms: i64,
}

/// An outbox row as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EventRow {
    pub event_id: String,
    pub alert_id: i64,
    /// The team whose budget it is about; 0 for a key's.
    pub team_id: i64,
    pub quota: String,
    pub window_start_ms: i64,
    pub threshold: i64,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub delivered_ms: Option<i64>,
    /// The event's body, as sent.
    pub payload: String,
}

/// An event this sender holds until `lease_until_ms`, with what sending
/// it needs.
#[derive(Debug, Clone)]
pub struct ClaimedEvent {
    pub id: i64,
    pub event_id: String,
    pub payload: String,
    /// This attempt's number (1 for the first).
    pub attempts: u32,
    pub lease_until_ms: i64,
    pub alert: Alert,
}

/// What became of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered 2xx.
    Delivered,
    /// It failed; the event is due again at `next_attempt_ms`.
    Retry { next_attempt_ms: i64, error: String },
    /// It failed and it was the last attempt.
    Failed { error: String },
}

const ALERT_COLUMNS: &str =
    "id, api_key_id, team_id, thresholds, url, secret_env, sealed_secret, created_ms";

const EVENT_COLUMNS: &str = "event_id, alert_id, team_id, quota, window_start_ms, threshold, \
     state, attempts, last_error, created_ms, delivered_ms, payload";

/// Stores a key's alert if the key exists; binds thresholds, url,
/// secret_env, sealed_secret, created_ms, the key's id.
const INSERT_KEY_ALERT: &str = "INSERT INTO alerts (api_key_id, team_id, thresholds, url, \
     secret_env, sealed_secret, created_ms) SELECT id, 0, ?, ?, ?, ?, ? FROM api_keys WHERE id = ?";

/// Stores a team's alert if the team exists (a team's deletion waits for
/// it, or it finds no team); binds as [`INSERT_KEY_ALERT`], the team's id.
const INSERT_TEAM_ALERT: &str = "INSERT INTO alerts (api_key_id, team_id, thresholds, url, \
     secret_env, sealed_secret, created_ms) SELECT 0, id, ?, ?, ?, ?, ? FROM teams WHERE id = ?";

/// The `team_id` column of an owner's rows (0 for a key's).
fn team_column(owner: BudgetOwner) -> i64 {
    match owner {
        BudgetOwner::Key(_) => 0,
        BudgetOwner::Team(id) => id,
    }
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    DB::Connection: Migrate,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB> + Default,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'q> Option<Vec<u8>>: Decode<'q, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    /// See [`Store::insert_alert`].
    pub async fn insert_alert(&self, alert: &NewAlert) -> Result<Option<i64>, StoreError> {
        let (text, owner_id) = match alert.owner {
            BudgetOwner::Key(id) => (INSERT_KEY_ALERT, id),
            BudgetOwner::Team(id) => (INSERT_TEAM_ALERT, id),
        };
        let done = sqlx::query(text)
            .bind(alert.thresholds.as_str())
            .bind(alert.url.as_str())
            .bind(alert.secret_env.as_deref())
            .bind(alert.sealed_secret.as_ref().map(SealedSecret::as_str))
            .bind(alert.created_ms)
            .bind(owner_id)
            .execute(self.pool())
            .await?;
        if DB::rows_affected(&done) == 0 {
            return Ok(None);
        }
        DB::last_insert_id(&done).map(Some)
    }

    /// See [`Store::list_alerts`].
    pub async fn list_alerts(&self) -> Result<Vec<Alert>, StoreError> {
        let text = format!("SELECT {ALERT_COLUMNS} FROM alerts ORDER BY id");
        let rows = sqlx::query(&text).fetch_all(self.pool()).await?;
        rows.iter().map(alert_row).collect()
    }

    /// See [`Store::delete_alert`].
    pub async fn delete_alert(&self, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM alert_events WHERE alert_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM alerts WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// See [`Store::insert_event`].
    pub async fn insert_event(&self, event: &NewEvent) -> Result<bool, StoreError> {
        // A row of the same (alert, quota, window, threshold) is left as it
        // is, and the count says whether this insert added one.
        let (insert, conflict) = match DB::BACKEND {
            "mysql" => ("INSERT IGNORE", ""),
            _ => ("INSERT", " ON CONFLICT DO NOTHING"),
        };
        let text = format!(
            "{insert} INTO alert_events (event_id, alert_id, team_id, quota, window_start_ms, \
             threshold, payload, state, attempts, next_attempt_ms, lease_until_ms, created_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, 0, ?){conflict}"
        );
        let done = sqlx::query(&text)
            .bind(event.event_id.as_str())
            .bind(event.alert_id)
            .bind(team_column(event.owner))
            .bind(event.quota.as_str())
            .bind(event.window_start_ms)
            .bind(i64::from(event.threshold))
            .bind(event.payload.as_str())
            .bind(STATE_PENDING)
            .bind(event.created_ms)
            .bind(event.created_ms)
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// See [`Store::claim_due_events`].
    pub async fn claim_due_events(
        &self,
        now_ms: i64,
        lease_ms: i64,
        max: i64,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let due: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM alert_events WHERE state = ? AND next_attempt_ms <= ? \
             AND lease_until_ms <= ? ORDER BY id LIMIT ?",
        )
        .bind(STATE_PENDING)
        .bind(now_ms)
        .bind(now_ms)
        .bind(max)
        .fetch_all(self.pool())
        .await?;
        let lease_until_ms = now_ms.saturating_add(lease_ms);
        let mut claimed = Vec::new();
        for id in due {
            // The claim: only one sender's update finds the row due.
            let done = sqlx::query(
                "UPDATE alert_events SET lease_until_ms = ?, attempts = attempts + 1 \
                 WHERE id = ? AND state = ? AND next_attempt_ms <= ? AND lease_until_ms <= ?",
            )
            .bind(lease_until_ms)
            .bind(id)
            .bind(STATE_PENDING)
            .bind(now_ms)
            .bind(now_ms)
            .execute(self.pool())
            .await?;
            if DB::rows_affected(&done) != 1 {
                continue;
            }
            let text = format!(
                "SELECT e.event_id, e.payload, e.attempts, a.{} FROM alert_events e \
                 JOIN alerts a ON a.id = e.alert_id WHERE e.id = ?",
                ALERT_COLUMNS.replace(", ", ", a.")
            );
            let Some(row) = sqlx::query(&text)
                .bind(id)
                .fetch_optional(self.pool())
                .await?
            else {
                continue;
            };
            let attempts: i64 = row.try_get("attempts")?;
            claimed.push(ClaimedEvent {
                id,
                event_id: required_text(&row, "event_id")?,
                payload: required_text(&row, "payload")?,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                lease_until_ms,
                alert: alert_row(&row)?,
            });
        }
        Ok(claimed)
    }

    /// See [`Store::finish_attempt`].
    pub async fn finish_attempt(
        &self,
        event: &ClaimedEvent,
        attempt: &Attempt,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let query = match attempt {
            Attempt::Delivered => sqlx::query(
                "UPDATE alert_events SET state = ?, delivered_ms = ?, last_error = NULL, \
                 lease_until_ms = 0 WHERE id = ? AND lease_until_ms = ?",
            )
            .bind(STATE_DELIVERED)
            .bind(now_ms),
            Attempt::Retry {
                next_attempt_ms,
                error,
            } => sqlx::query(
                "UPDATE alert_events SET next_attempt_ms = ?, last_error = ?, \
                 lease_until_ms = 0 WHERE id = ? AND lease_until_ms = ?",
            )
            .bind(*next_attempt_ms)
            .bind(error.as_str()),
            Attempt::Failed { error } => sqlx::query(
                "UPDATE alert_events SET state = ?, last_error = ?, lease_until_ms = 0 \
                 WHERE id = ? AND lease_until_ms = ?",
            )
            .bind(STATE_FAILED)
            .bind(error.as_str()),
        };
        let done = query
            .bind(event.id)
            .bind(event.lease_until_ms)
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// See [`Store::alert_events`].
    pub async fn alert_events(&self, state: Option<&str>) -> Result<Vec<EventRow>, StoreError> {
        let text = match state {
            Some(_) => {
                format!("SELECT {EVENT_COLUMNS} FROM alert_events WHERE state = ? ORDER BY id")
            }
            None => format!("SELECT {EVENT_COLUMNS} FROM alert_events ORDER BY id"),
        };
        let mut query = sqlx::query(&text);
        if let Some(state) = state {
            query = query.bind(state);
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                Ok(EventRow {
                    event_id: required_text(row, "event_id")?,
                    alert_id: row.try_get("alert_id")?,
                    team_id: row.try_get("team_id")?,
                    quota: required_text(row, "quota")?,
                    window_start_ms: row.try_get("window_start_ms")?,
                    threshold: row.try_get("threshold")?,
                    state: required_text(row, "state")?,
                    attempts: row.try_get("attempts")?,
                    last_error: text_column(row, "last_error")?,
                    created_ms: row.try_get("created_ms")?,
                    delivered_ms: row.try_get("delivered_ms")?,
                    payload: required_text(row, "payload")?,
                })
            })
            .collect()
    }
}

/// A text column that is never NULL.
fn required_text<R: Row>(row: &R, column: &'static str) -> Result<String, StoreError>
where
    for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
    for<'a> &'a str: ColumnIndex<R>,
{
    text_column(row, column)?.ok_or_else(|| StoreError::Corrupt(format!("{column} is NULL")))
}

/// One row of `alerts` (or the alert's columns of a join).
fn alert_row<R: Row>(row: &R) -> Result<Alert, StoreError>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
    for<'a> &'a str: ColumnIndex<R>,
{
    let thresholds = required_text(row, "thresholds")?;
    let thresholds = thresholds
        .split(',')
        .map(|t| t.parse::<u8>())
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| StoreError::Corrupt(format!("alerts.thresholds {thresholds:?}")))?;
    let team_id: i64 = row.try_get("team_id")?;
    let owner = match team_id {
        0 => BudgetOwner::Key(row.try_get("api_key_id")?),
        team => BudgetOwner::Team(team),
    };
    Ok(Alert {
        id: row.try_get("id")?,
        owner,
        thresholds,
        url: required_text(row, "url")?,
        secret_env: text_column(row, "secret_env")?,
        sealed_secret: text_column(row, "sealed_secret")?.map(SealedSecret::from_stored),
        created_ms: row.try_get("created_ms")?,
    })
}

impl Store {
    /// Stores an alert if its owner (key or team) exists, in one
    /// statement; its id, `None` when no key or team has the owner's id.
    pub async fn insert_alert(&self, alert: &NewAlert) -> Result<Option<i64>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().insert_alert(alert).await,
            Store::Sqlite(s) => s.sql().insert_alert(alert).await,
        }
    }

    /// Every alert, oldest first.
    pub async fn list_alerts(&self) -> Result<Vec<Alert>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().list_alerts().await,
            Store::Sqlite(s) => s.sql().list_alerts().await,
        }
    }

    /// Removes an alert and its events; false when no alert has this id.
    pub async fn delete_alert(&self, id: i64) -> Result<bool, StoreError> {
        match self {
            Store::MySql(s) => s.sql().delete_alert(id).await,
            Store::Sqlite(s) => s.sql().delete_alert(id).await,
        }
    }

    /// Adds a threshold event to the outbox unless its (alert, quota,
    /// window, threshold) is there already; true when this call added it.
    pub async fn insert_event(&self, event: &NewEvent) -> Result<bool, StoreError> {
        match self {
            Store::MySql(s) => s.sql().insert_event(event).await,
            Store::Sqlite(s) => s.sql().insert_event(event).await,
        }
    }

    /// Claims at most `max` pending events that are due and whose lease has
    /// run out, leasing each for `lease_ms` and counting the attempt. Each
    /// claim is one conditional `UPDATE`: of two senders, only the one whose
    /// update changed the row holds the event.
    pub async fn claim_due_events(
        &self,
        now_ms: i64,
        lease_ms: i64,
        max: i64,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().claim_due_events(now_ms, lease_ms, max).await,
            Store::Sqlite(s) => s.sql().claim_due_events(now_ms, lease_ms, max).await,
        }
    }

    /// Records what an attempt did, if the sender still holds the event's
    /// lease (false: the lease ran out and another sender claimed it).
    pub async fn finish_attempt(
        &self,
        event: &ClaimedEvent,
        attempt: &Attempt,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        match self {
            Store::MySql(s) => s.sql().finish_attempt(event, attempt, now_ms).await,
            Store::Sqlite(s) => s.sql().finish_attempt(event, attempt, now_ms).await,
        }
    }

    /// The outbox's events (only those in `state`, when given), oldest first.
    pub async fn alert_events(&self, state: Option<&str>) -> Result<Vec<EventRow>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().alert_events(state).await,
            Store::Sqlite(s) => s.sql().alert_events(state).await,
        }
    }
}

/// An alert as listed and answered.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlertView {
    pub id: i64,
    /// The key whose budget it watches; `null` for a team's.
    pub key_id: Option<i64>,
    /// The team whose budget it watches; `null` for a key's.
    pub team_id: Option<i64>,
    /// Percents, ascending.
    pub thresholds: Vec<u8>,
    pub url: String,
    /// `env` (read from `secret_env` at delivery) or `generated` (stored
    /// sealed under the master key).
    pub secret_source: &'static str,
    /// The environment variable holding the secret, for `env`.
    pub secret_env: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
}

impl AlertView {
    /// The view of a stored alert.
    pub fn of(alert: &Alert) -> AlertView {
        let (key_id, team_id) = BudgetRef::ids(alert.owner);
        AlertView {
            id: alert.id,
            key_id,
            team_id,
            thresholds: alert.thresholds.clone(),
            url: alert.url.clone(),
            secret_source: if alert.secret_env.is_some() {
                "env"
            } else {
                "generated"
            },
            secret_env: alert.secret_env.clone(),
            created_at: rfc3339_ms(alert.created_ms),
        }
    }
}

/// Reply of `POST /v1/alerts` and `tollgate alerts add --json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CreatedAlert {
    #[serde(flatten)]
    pub alert: AlertView,
    /// The generated secret (`whsec_...`), shown this once; `None` with
    /// `--secret-env`.
    pub secret: Option<String>,
}

/// Reply of `GET /v1/alerts` and `tollgate alerts list --json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlertList {
    pub alerts: Vec<AlertView>,
}

/// An outbox event as listed (`--failed`, `?failed=true`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventView {
    /// The `webhook-id` it is sent with.
    pub id: String,
    pub alert_id: i64,
    /// The team whose budget it is about; `null` for a key's.
    pub team_id: Option<i64>,
    pub quota: String,
    pub window_start: String,
    pub threshold: i64,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    /// Why the latest attempt failed.
    pub last_error: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
    /// The body sent.
    pub payload: serde_json::Value,
}

impl EventView {
    /// The view of an outbox row.
    pub fn of(row: &EventRow) -> EventView {
        EventView {
            id: row.event_id.clone(),
            alert_id: row.alert_id,
            team_id: (row.team_id != 0).then_some(row.team_id),
            quota: row.quota.clone(),
            window_start: rfc3339_ms(row.window_start_ms),
            threshold: row.threshold,
            state: row.state.clone(),
            attempts: row.attempts,
            last_error: row.last_error.clone(),
            created_at: rfc3339_ms(row.created_ms),
            delivered_at: row.delivered_ms.map(rfc3339_ms),
            payload: serde_json::from_str(&row.payload)
                .unwrap_or(serde_json::Value::String(row.payload.clone())),
        }
    }
}

/// Reply of `GET /v1/alerts?failed=true` and `tollgate alerts list --failed --json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventList {
    pub events: Vec<EventView>,
}

fn rfc3339_ms(ms: i64) -> String {
    format_rfc3339(super::quota_use::instant(ms))
}

/// Why adding an alert stored nothing.
#[derive(Debug)]
pub enum AddAlertError {
    /// The input is refused: the field at fault, and why.
    Invalid(AlertError),
    /// A secret must be generated and sealed, and no master key is set.
    MasterKeyMissing,
    /// The generated secret could not be made or sealed.
    Seal(SealError),
    /// The database failed.
    Store(StoreError),
}

/// Checks and stores an alert (the CLI and the admin API alike): the
/// input, then its owner's existence (a key or a team); without
/// `secret_env`, a secret is generated, sealed under the keyring's master
/// key and returned to be shown once.
pub async fn add_alert(
    store: &Store,
    request: &AlertRequest<'_>,
    keyring: &Keyring,
    now_ms: i64,
) -> Result<CreatedAlert, AddAlertError> {
    let checked = request.check().map_err(AddAlertError::Invalid)?;
    // Answered plainly before a secret is made; the insert checks again.
    let exists = match checked.owner {
        BudgetOwner::Key(id) => store.key_exists(id).await,
        BudgetOwner::Team(id) => store.team_by_id(id).await.map(|t| t.is_some()),
    };
    if !exists.map_err(AddAlertError::Store)? {
        return Err(AddAlertError::Invalid(unknown_owner(checked.owner)));
    }
    let (sealed_secret, secret) = match &checked.secret_env {
        Some(_) => (None, None),
        None => {
            if keyring.current().is_none() {
                return Err(AddAlertError::MasterKeyMissing);
            }
            let secret =
                WebhookSecret::generate().map_err(|e| AddAlertError::Seal(SealError::Random(e)))?;
            let text = SigningSecret::new(secret.expose())
                .map_err(|e| AddAlertError::Seal(SealError::NotASecret(e)))?;
            let sealed = keyring
                .seal(&text, &secret_binding(checked.owner, &checked.url))
                .map_err(AddAlertError::Seal)?;
            (Some(sealed), Some(secret.expose()))
        }
    };
    let new = NewAlert {
        owner: checked.owner,
        thresholds: thresholds_text(&checked.thresholds),
        url: checked.url.clone(),
        secret_env: checked.secret_env.clone(),
        sealed_secret,
        created_ms: now_ms,
    };
    let id = store
        .insert_alert(&new)
        .await
        .map_err(AddAlertError::Store)?
        .ok_or_else(|| AddAlertError::Invalid(unknown_owner(checked.owner)))?;
    let alert = Alert {
        id,
        owner: new.owner,
        thresholds: checked.thresholds,
        url: new.url,
        secret_env: new.secret_env,
        sealed_secret: new.sealed_secret,
        created_ms: now_ms,
    };
    Ok(CreatedAlert {
        alert: AlertView::of(&alert),
        secret,
    })
}

/// The refusal of an owner no key or team has: naming `key_id` or `team_id`.
fn unknown_owner(owner: BudgetOwner) -> AlertError {
    match owner {
        BudgetOwner::Key(id) => AlertError {
            field: "key_id",
            message: format!("no key has id {id}"),
        },
        BudgetOwner::Team(id) => AlertError {
            field: "team_id",
            message: format!("no team has id {id}"),
        },
    }
}

/// Every alert, as listed.
pub async fn alert_list(store: &Store) -> Result<AlertList, StoreError> {
    let alerts = store.list_alerts().await?;
    Ok(AlertList {
        alerts: alerts.iter().map(AlertView::of).collect(),
    })
}

/// The failed events, as listed.
pub async fn failed_events(store: &Store) -> Result<EventList, StoreError> {
    let rows = store.alert_events(Some(STATE_FAILED)).await?;
    Ok(EventList {
        events: rows.iter().map(EventView::of).collect(),
    })
}
