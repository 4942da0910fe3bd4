//! `tollgate teams create/list/limits/delete` and the team side of `keys`
//! (`keys create --team`, `keys move`): a team is named by its id or its
//! name (a team name is never digits only). Teams are created as the admin
//! API does (`store::teams::new_team`).

use clap::Subcommand;
use tollgate_wire::Limits;

use super::limits::{describe, LimitFlags};
use super::print_json;
use crate::domain::clock::now_ms;
use crate::domain::keys::KeyView;
use crate::domain::teams::{Team, TeamView};
use crate::store::teams::{new_team, KeyMove, TeamDeletion};
use crate::store::Store;

/// `tollgate teams ...`.
#[derive(Debug, Subcommand)]
pub enum TeamsCommand {
    /// Create a team: its rate and quotas are shared by all of its keys.
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        limits: LimitFlags,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List teams with their limits and keys.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change a team's rate and quotas (every Envoy re-verifies its keys).
    Limits {
        /// The team's id or name.
        team: String,
        #[command(flatten)]
        limits: LimitFlags,
        /// Remove every limit first (then apply the other flags, if any).
        #[arg(long)]
        clear: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete a team that has no key (move its keys out first) and no
    /// budget alert (remove them first).
    Delete {
        /// The team's id or name.
        team: String,
    },
}

/// The team `text` names: its id when it is a number, else its name.
pub async fn resolve(store: &Store, text: &str) -> Result<Team, String> {
    let found = match text.parse::<i64>() {
        Ok(id) => store.team_by_id(id).await,
        Err(_) => store.team_by_name(text.trim()).await,
    };
    found
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("--team {text:?}: no team has this id or name"))
}

/// Runs `tollgate teams ...`.
pub async fn run(store: &Store, command: TeamsCommand) -> Result<(), String> {
    match command {
        TeamsCommand::Create { name, limits, json } => {
            let limits = limits.limits().map_err(|e| e.to_string())?;
            let team = new_team(store, &name, &limits)
                .await
                .map_err(|e| e.to_string())?;
            let view = TeamView::of(&team);
            if json {
                return print_json(&view);
            }
            println!(
                "Created team {} ({:?}): {}.",
                view.id,
                view.name,
                describe(&team.limits)
            );
            Ok(())
        }
        TeamsCommand::List { json } => {
            let teams = store.list_teams().await.map_err(|e| e.to_string())?;
            let views: Vec<TeamView> = teams.iter().map(TeamView::of).collect();
            if json {
                return print_json(&views);
            }
            print_table(&teams);
            Ok(())
        }
        TeamsCommand::Limits {
            team,
            limits,
            clear,
            json,
        } => {
            let found = resolve(store, &team).await?;
            let base = if clear {
                Limits::default()
            } else {
                found.limits.clone()
            };
            let limits = limits.applied_to(&base).map_err(|e| e.to_string())?;
            crate::cli::limits::money_in_the_prices_currency(store, &limits).await?;
            let team = store
                .set_team_limits(found.id, &limits, now_ms())
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no team has id {}", found.id))?;
            if json {
                return print_json(&TeamView::of(&team));
            }
            println!(
                "Team {} ({:?}): {}.",
                team.id,
                team.name,
                describe(&team.limits)
            );
            Ok(())
        }
        TeamsCommand::Delete { team } => {
            let found = resolve(store, &team).await?;
            match store
                .delete_team(found.id)
                .await
                .map_err(|e| e.to_string())?
            {
                TeamDeletion::Deleted(team) => {
                    println!("Deleted team {} ({:?}).", team.id, team.name);
                    Ok(())
                }
                TeamDeletion::HasKeys(keys) => Err(format!(
                    "team {} still has {} key(s) ({}): move them out first \
                     (tollgate keys move ID --no-team); nothing was deleted",
                    found.id,
                    keys.len(),
                    ids(&keys)
                )),
                TeamDeletion::HasAlerts(alerts) => Err(format!(
                    "team {} has {} budget alert(s) ({}): remove them first \
                     (tollgate alerts remove ID); nothing was deleted",
                    found.id,
                    alerts.len(),
                    ids(&alerts)
                )),
                TeamDeletion::NotFound => Err(format!("no team has id {}", found.id)),
            }
        }
    }
}

/// `tollgate keys move ID (--team T | --no-team)`: moves the key and
/// prints it.
pub async fn move_key(
    store: &Store,
    id: i64,
    team: Option<&str>,
    json: bool,
) -> Result<(), String> {
    let team = match team {
        Some(text) => Some(resolve(store, text).await?),
        None => None,
    };
    let now = now_ms();
    let moved = store
        .move_key(id, team.as_ref().map(|t| t.id), now)
        .await
        .map_err(|e| e.to_string())?;
    let key = match moved {
        KeyMove::Moved(key) => key,
        KeyMove::KeyNotFound => return Err(format!("no key has id {id}")),
        KeyMove::TeamNotFound => return Err("--team: the team no longer exists".into()),
    };
    let view = KeyView::at(&key, now);
    if json {
        return print_json(&view);
    }
    match team {
        Some(team) => println!(
            "Key {id} ({}) is now in team {} ({:?}).",
            view.prefix, team.id, team.name
        ),
        None => println!("Key {id} ({}) is in no team now.", view.prefix),
    }
    Ok(())
}

fn ids(keys: &[i64]) -> String {
    keys.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_table(teams: &[Team]) {
    if teams.is_empty() {
        println!("No teams yet. Create one with: tollgate teams create --name NAME");
        return;
    }
    println!(
        "{:>6}  {:<24}  {:<24}  {:<16}  LIMITS",
        "ID", "NAME", "CREATED_AT", "KEYS"
    );
    for team in teams {
        let view = TeamView::of(team);
        println!(
            "{:>6}  {:<24}  {:<24}  {:<16}  {}",
            view.id,
            view.name,
            view.created_at,
            if team.key_ids.is_empty() {
                "-".to_string()
            } else {
                ids(&team.key_ids)
            },
            describe(&team.limits),
        );
    }
}
