//! Teams in the database: creating, reading and deleting them, their
//! limits, and which team a key belongs to. A change that alters what a
//! key's verdict carries (its team's limits, its team) publishes a change
//! of that key on the key change feed in the same transaction, so every
//! Envoy verifies the key again.
//!
//! `api_keys.team_id` refers to `teams.id` (migration 0011): the database
//! refuses a key in a team that does not exist and the deletion of a team
//! that still has keys, whatever runs meanwhile; the checks before are
//! only there to answer plainly. A team's budget alerts (`alerts.team_id`,
//! migration 0012, no foreign key) hold its deletion back the same way: the
//! deletion is one statement that finds no alert of the team, and an
//! alert is stored only by a statement that finds the team.

use sqlx::migrate::Migrate;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};
use time::OffsetDateTime;
use tollgate_wire::Limits;

use super::dialect::Dialect;
use super::feed::unix_ms;
use super::{sql, ApiKey, SqlStore, Store, StoreError};
use crate::domain::clock::now_ms;
use crate::domain::teams::{validate_team_name, Team};

/// The kind of change a new set of team limits makes for each of its keys.
pub const CHANGE_TEAM_LIMITS: &str = "team_limits";

/// The kind of change a key's move into or out of a team makes.
pub const CHANGE_TEAM: &str = "team";

/// Creates a team; binds name, limits_spec, created_at.
const INSERT_TEAM: &str = "INSERT INTO teams (name, limits_spec, created_at) VALUES (?, ?, ?)";

/// Every team, by id.
const LIST_TEAMS: &str = "SELECT id, name, limits_spec, created_at FROM teams ORDER BY id";

/// A team by id; binds the id.
const TEAM_BY_ID: &str = "SELECT id, name, limits_spec, created_at FROM teams WHERE id = ?";

/// A team by name (byte for byte); binds the name.
const TEAM_BY_NAME: &str = "SELECT id, name, limits_spec, created_at FROM teams WHERE name = ?";

/// Every key that belongs to a team, by id.
const TEAM_MEMBERS: &str = "SELECT id, team_id FROM api_keys WHERE team_id IS NOT NULL ORDER BY id";

/// The ids and hashes of one team's keys; binds the team id.
const KEYS_OF_TEAM: &str = "SELECT id, key_hash FROM api_keys WHERE team_id = ? ORDER BY id";

/// Sets a team's limits; binds limits_spec, id.
const SET_TEAM_LIMITS: &str = "UPDATE teams SET limits_spec = ? WHERE id = ?";

/// Deletes a team that no budget alert names; binds the id twice.
const DELETE_TEAM: &str =
    "DELETE FROM teams WHERE id = ? AND NOT EXISTS (SELECT 1 FROM alerts WHERE team_id = ?)";

/// How often a team's deletion is tried when a key or an alert came
/// between its check and its statement.
const DELETE_TRIES: usize = 8;

/// The ids of a team's budget alerts; binds the team id.
const ALERTS_OF_TEAM: &str = "SELECT id FROM alerts WHERE team_id = ? ORDER BY id";

/// Moves a key into a team (or out of its team: 0, see
/// [`sql::team_id_bound`]); binds team_id, key id.
const MOVE_KEY: &str = "UPDATE api_keys SET team_id = NULLIF(?, 0) WHERE id = ?";

/// What a team's deletion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeamDeletion {
    Deleted(Team),
    /// Refused: the team still has these keys.
    HasKeys(Vec<i64>),
    /// Refused: these budget alerts watch the team's budget.
    HasAlerts(Vec<i64>),
    NotFound,
}

/// What a key's move did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMove {
    /// The key as it is now.
    Moved(ApiKey),
    KeyNotFound,
    /// No team has the id; nothing changed.
    TeamNotFound,
}

/// Whether a statement failed on the foreign key of `api_keys.team_id`.
pub fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
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
    /// See [`Store::create_team`].
    pub async fn create_team(
        &self,
        name: &str,
        limits: &Limits,
        created_at: OffsetDateTime,
    ) -> Result<Team, StoreError> {
        let done = sqlx::query(INSERT_TEAM)
            .bind(name)
            .bind(sql::limits_spec(limits))
            .bind(DB::db_time(created_at))
            .execute(self.pool())
            .await?;
        Ok(Team {
            id: DB::last_insert_id(&done)?,
            name: name.to_owned(),
            limits: limits.clone(),
            created_at,
            key_ids: Vec::new(),
        })
    }

    /// See [`Store::list_teams`].
    pub async fn list_teams(&self) -> Result<Vec<Team>, StoreError> {
        let rows = sqlx::query(LIST_TEAMS).fetch_all(self.pool()).await?;
        let mut teams = rows
            .iter()
            .map(Self::team_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let members = sqlx::query(TEAM_MEMBERS).fetch_all(self.pool()).await?;
        for row in &members {
            let key: i64 = row.try_get("id")?;
            let team: i64 = row.try_get("team_id")?;
            if let Some(t) = teams.iter_mut().find(|t| t.id == team) {
                t.key_ids.push(key);
            }
        }
        Ok(teams)
    }

    /// See [`Store::team_by_id`].
    pub async fn team_by_id(&self, id: i64) -> Result<Option<Team>, StoreError> {
        let row = sqlx::query(TEAM_BY_ID)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        self.with_keys(row).await
    }

    /// See [`Store::team_by_name`].
    pub async fn team_by_name(&self, name: &str) -> Result<Option<Team>, StoreError> {
        let row = sqlx::query(TEAM_BY_NAME)
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        self.with_keys(row).await
    }

    /// The team of a row, if one was found, with its keys.
    async fn with_keys(&self, row: Option<DB::Row>) -> Result<Option<Team>, StoreError> {
        let Some(row) = row else {
            return Ok(None);
        };
        let mut team = Self::team_from_row(&row)?;
        let keys = sqlx::query(KEYS_OF_TEAM)
            .bind(team.id)
            .fetch_all(self.pool())
            .await?;
        team.key_ids = keys
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        Ok(Some(team))
    }

    /// See [`Store::set_team_limits`].
    pub async fn set_team_limits(
        &self,
        id: i64,
        limits: &Limits,
        now: OffsetDateTime,
    ) -> Result<Option<Team>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(SET_TEAM_LIMITS)
            .bind(sql::limits_spec(limits))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&done) == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let keys = sqlx::query(KEYS_OF_TEAM)
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        for key in &keys {
            let hash = sql::text_column(key, "key_hash")?
                .ok_or_else(|| StoreError::Corrupt("api_keys.key_hash is NULL".into()))?;
            Self::publish_change(&mut tx, &hash, CHANGE_TEAM_LIMITS, unix_ms(now)).await?;
        }
        tx.commit().await?;
        self.team_by_id(id).await
    }

    /// See [`Store::delete_team`].
    pub async fn delete_team(&self, id: i64) -> Result<TeamDeletion, StoreError> {
        // Each try but the last lost a race with a key's move or an alert.
        for _ in 0..DELETE_TRIES {
            let team = match self.deletable_team(id).await? {
                Ok(team) => team,
                Err(refused) => return Ok(refused),
            };
            match sqlx::query(DELETE_TEAM)
                .bind(id)
                .bind(id)
                .execute(self.pool())
                .await
            {
                Ok(done) if DB::rows_affected(&done) == 1 => {
                    return Ok(TeamDeletion::Deleted(team))
                }
                // Gone, or an alert of it was added meanwhile: look again.
                Ok(_) => continue,
                // A key joined it meanwhile.
                Err(e) if is_foreign_key_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Corrupt(format!(
            "team {id}: {DELETE_TRIES} deletions found nothing holding it back, \
             then could not delete it"
        )))
    }

    /// The team, if nothing holds its deletion back; else why not.
    async fn deletable_team(&self, id: i64) -> Result<Result<Team, TeamDeletion>, StoreError> {
        let Some(team) = self.team_by_id(id).await? else {
            return Ok(Err(TeamDeletion::NotFound));
        };
        if !team.key_ids.is_empty() {
            return Ok(Err(TeamDeletion::HasKeys(team.key_ids)));
        }
        let rows = sqlx::query(ALERTS_OF_TEAM)
            .bind(id)
            .fetch_all(self.pool())
            .await?;
        let alerts = rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<Vec<i64>, _>>()?;
        if !alerts.is_empty() {
            return Ok(Err(TeamDeletion::HasAlerts(alerts)));
        }
        Ok(Ok(team))
    }

    /// See [`Store::move_key`].
    pub async fn move_key(
        &self,
        key_id: i64,
        team_id: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<KeyMove, StoreError> {
        let mut tx = self.pool().begin().await?;
        let moved = sqlx::query(MOVE_KEY)
            .bind(sql::team_id_bound(team_id))
            .bind(key_id)
            .execute(&mut *tx)
            .await;
        let done = match moved {
            Ok(done) => done,
            Err(e) if is_foreign_key_violation(&e) => {
                tx.rollback().await?;
                return Ok(KeyMove::TeamNotFound);
            }
            Err(e) => return Err(e.into()),
        };
        if DB::rows_affected(&done) == 0 {
            tx.rollback().await?;
            return Ok(KeyMove::KeyNotFound);
        }
        let hash = Self::key_hash_by_id(&mut tx, key_id).await?;
        Self::publish_change(&mut tx, &hash, CHANGE_TEAM, unix_ms(now)).await?;
        tx.commit().await?;
        Ok(match self.key_by_id(key_id).await? {
            Some(key) => KeyMove::Moved(key),
            None => KeyMove::KeyNotFound,
        })
    }

    fn team_from_row(row: &DB::Row) -> Result<Team, StoreError> {
        Ok(Team {
            id: row.try_get("id")?,
            name: sql::text_column(row, "name")?
                .ok_or_else(|| StoreError::Corrupt("teams.name is NULL".into()))?,
            limits: sql::limits_column(row, "limits_spec")?,
            created_at: DB::time_column(row, "created_at")?
                .ok_or_else(|| StoreError::Corrupt("teams.created_at is NULL".into()))?,
            key_ids: Vec::new(),
        })
    }
}

impl Store {
    /// Creates a team with its limits; [`StoreError::Duplicate`] when a
    /// team has the name.
    pub async fn create_team(
        &self,
        name: &str,
        limits: &Limits,
        created_at: OffsetDateTime,
    ) -> Result<Team, StoreError> {
        match self {
            Store::MySql(s) => s.sql().create_team(name, limits, created_at).await,
            Store::Sqlite(s) => s.sql().create_team(name, limits, created_at).await,
        }
    }

    /// Every team with its keys, by id.
    pub async fn list_teams(&self) -> Result<Vec<Team>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().list_teams().await,
            Store::Sqlite(s) => s.sql().list_teams().await,
        }
    }

    /// The team with this id, with its keys.
    pub async fn team_by_id(&self, id: i64) -> Result<Option<Team>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().team_by_id(id).await,
            Store::Sqlite(s) => s.sql().team_by_id(id).await,
        }
    }

    /// The team with this name (exactly), with its keys.
    pub async fn team_by_name(&self, name: &str) -> Result<Option<Team>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().team_by_name(name).await,
            Store::Sqlite(s) => s.sql().team_by_name(name).await,
        }
    }

    /// Replaces a team's limits and publishes a change of each of its keys
    /// in the same transaction; the team as it is now, `None` when no team
    /// has the id.
    pub async fn set_team_limits(
        &self,
        id: i64,
        limits: &Limits,
        now: OffsetDateTime,
    ) -> Result<Option<Team>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().set_team_limits(id, limits, now).await,
            Store::Sqlite(s) => s.sql().set_team_limits(id, limits, now).await,
        }
    }

    /// Deletes a team that has no key and no budget alert; refused while
    /// it has either.
    pub async fn delete_team(&self, id: i64) -> Result<TeamDeletion, StoreError> {
        match self {
            Store::MySql(s) => s.sql().delete_team(id).await,
            Store::Sqlite(s) => s.sql().delete_team(id).await,
        }
    }

    /// Moves key `key_id` into team `team_id` (`None`: out of its team) and
    /// publishes the key's change in the same transaction.
    pub async fn move_key(
        &self,
        key_id: i64,
        team_id: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<KeyMove, StoreError> {
        match self {
            Store::MySql(s) => s.sql().move_key(key_id, team_id, now).await,
            Store::Sqlite(s) => s.sql().move_key(key_id, team_id, now).await,
        }
    }
}

/// Why a team could not be created.
#[derive(Debug)]
pub enum NewTeamError {
    /// Bad input, with the field at fault.
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A team has the name already.
    DuplicateName(String),
    Store(StoreError),
}

impl std::fmt::Display for NewTeamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NewTeamError::Invalid { message, .. } => f.write_str(message),
            NewTeamError::DuplicateName(name) => write!(f, "a team named {name:?} exists already"),
            NewTeamError::Store(e) => e.fmt(f),
        }
    }
}

/// Creates team `name` with `limits`, the name checked first
/// ([`validate_team_name`]); the admin API and the CLI both create teams
/// here.
pub async fn new_team(store: &Store, name: &str, limits: &Limits) -> Result<Team, NewTeamError> {
    let name = validate_team_name(name).map_err(|message| NewTeamError::Invalid {
        field: "name",
        message,
    })?;
    let fault = super::prices::money_quota_fault(store, limits).await;
    if let Some(message) = fault.map_err(NewTeamError::Store)? {
        return Err(NewTeamError::Invalid {
            field: "quota",
            message,
        });
    }
    match store.create_team(&name, limits, now_ms()).await {
        Err(StoreError::Duplicate) => Err(NewTeamError::DuplicateName(name)),
        other => other.map_err(NewTeamError::Store),
    }
}
