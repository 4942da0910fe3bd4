//! `tollgate alerts add`, `list` and `remove`: budget alerts on a key's or
//! a team's quotas, checked and stored as the admin API does
//! (`http::alerts`). A team is named by its id or its name, as in `tollgate
//! teams` (`cli::teams::resolve`).

use clap::Subcommand;
use tollgate_wire::BudgetOwner;

use super::{open_store, print_json};
use crate::alerts::unix_now_ms;
use crate::cli::teams::resolve;
use crate::domain::alert::{one_owner, parse_thresholds, AlertRequest};
use crate::domain::sealed::Keyring;
use crate::store::alerts::{
    add_alert, alert_list, failed_events, AddAlertError, AlertList, AlertView, CreatedAlert,
    EventList,
};
use crate::store::DatabaseTarget;

/// `tollgate alerts ...`.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Tell a webhook when a key's (or a team's) use of any of its quotas,
    /// in the current window, reaches each of the percents given (each once
    /// per window). The events are signed per Standard Webhooks; without
    /// --secret-env a secret is generated, printed once and stored sealed
    /// under TOLLGATE_MASTER_KEY (required then).
    Add {
        /// The key whose budget is watched (its id); or --team.
        #[arg(long)]
        key: Option<i64>,
        /// The team whose budget is watched (its id or name); or --key.
        #[arg(long)]
        team: Option<String>,
        /// Percents of each quota's limit, comma-separated (e.g. 50,80,90,100).
        #[arg(long)]
        at: String,
        /// The webhook URL (http:// or https://).
        #[arg(long)]
        url: String,
        /// The environment variable holding the signing secret (whsec_...),
        /// read by the serving sidecar at each delivery; never stored.
        #[arg(long)]
        secret_env: Option<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every alert; with --failed, the events every attempt failed to deliver.
    List {
        /// List the failed events instead of the alerts.
        #[arg(long)]
        failed: bool,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove an alert and its events.
    Remove {
        /// The alert's id.
        id: i64,
    },
}

/// Runs `tollgate alerts ...`.
pub async fn run(target: &DatabaseTarget, command: AlertsCommand) -> Result<(), String> {
    match command {
        AlertsCommand::Add {
            key,
            team,
            at,
            url,
            secret_env,
            json,
        } => {
            let refuse = |field: &str, message: String| format!("--{}: {message}", cli_flag(field));
            one_owner(key.is_some(), team.is_some()).map_err(|e| refuse(e.field, e.message))?;
            let thresholds = parse_thresholds(&at).map_err(|e| refuse(e.field, e.message))?;
            let mut request = AlertRequest {
                // The team's id once its name is resolved, below.
                owner: BudgetOwner::Key(key.unwrap_or_default()),
                thresholds: &thresholds,
                url: &url,
                secret_env: secret_env.as_deref(),
            };
            // Refuse bad input before the database is opened.
            request.check().map_err(|e| refuse(e.field, e.message))?;
            let keyring = match request.secret_env {
                Some(_) => Keyring::empty(),
                None => Keyring::from_env()?,
            };
            let store = open_store(target).await?;
            let added = async {
                if let Some(team) = &team {
                    request.owner = BudgetOwner::Team(resolve(&store, team).await?.id);
                }
                add_alert(&store, &request, &keyring, unix_now_ms())
                    .await
                    .map_err(|e| match e {
                        AddAlertError::Invalid(e) => refuse(e.field, e.message),
                        AddAlertError::MasterKeyMissing => format!(
                            "a generated secret is stored sealed under {}, which is not set: \
                             set it, or pass --secret-env NAME; nothing was stored",
                            crate::domain::sealed::MASTER_KEY_ENV
                        ),
                        AddAlertError::Seal(e) => format!("the secret could not be sealed: {e}"),
                        AddAlertError::Store(e) => format!("the alert was not stored: {e}"),
                    })
            }
            .await;
            store.close().await;
            let created = added?;
            if json {
                return print_json(&created);
            }
            print_created(&created);
            Ok(())
        }
        AlertsCommand::List { failed, json } => {
            let store = open_store(target).await?;
            if failed {
                let list = failed_events(&store).await;
                store.close().await;
                let list = list.map_err(|e| format!("the events could not be read: {e}"))?;
                if json {
                    return print_json(&list);
                }
                print_events(&list);
            } else {
                let list = alert_list(&store).await;
                store.close().await;
                let list = list.map_err(|e| format!("the alerts could not be read: {e}"))?;
                if json {
                    return print_json(&list);
                }
                print_alerts(&list);
            }
            Ok(())
        }
        AlertsCommand::Remove { id } => {
            let store = open_store(target).await?;
            let removed = store.delete_alert(id).await;
            store.close().await;
            match removed.map_err(|e| format!("the alert was not removed: {e}"))? {
                true => {
                    println!("Alert {id} removed.");
                    Ok(())
                }
                false => Err(format!("no alert has id {id}")),
            }
        }
    }
}

/// The flag a field of the request is given by.
fn cli_flag(field: &str) -> &str {
    match field {
        "key_id" => "key",
        "team_id" => "team",
        "thresholds" => "at",
        "secret_env" => "secret-env",
        other => other,
    }
}

fn print_created(created: &CreatedAlert) {
    let a = &created.alert;
    println!(
        "Alert {} on {} at {} % to {}.",
        a.id,
        budget(a),
        thresholds(a),
        a.url
    );
    match (&created.secret, &a.secret_env) {
        (Some(secret), _) => {
            println!("Signing secret (shown once; stored sealed): {secret}");
        }
        (None, Some(name)) => println!("Signed with the secret in ${name} at each delivery."),
        (None, None) => {}
    }
}

/// Whose budget: `key 12`, `team 3`.
fn budget(a: &AlertView) -> String {
    match (a.key_id, a.team_id) {
        (_, Some(team)) => BudgetOwner::Team(team).describe(),
        (key, None) => BudgetOwner::Key(key.unwrap_or_default()).describe(),
    }
}

fn thresholds(a: &AlertView) -> String {
    crate::domain::alert::thresholds_text(&a.thresholds)
}

fn print_alerts(list: &AlertList) {
    if list.alerts.is_empty() {
        println!(
            "No alerts. Add one with: tollgate alerts add (--key ID | --team T) --at 50,80,100 \
             --url URL"
        );
        return;
    }
    println!(
        "{:>6}  {:<12}  {:<16}  {:<24}  URL",
        "ID", "BUDGET", "AT %", "SECRET"
    );
    for a in &list.alerts {
        let secret = match &a.secret_env {
            Some(name) => format!("${name}"),
            None => "generated".into(),
        };
        println!(
            "{:>6}  {:<12}  {:<16}  {:<24}  {}",
            a.id,
            budget(a),
            thresholds(a),
            secret,
            a.url
        );
    }
}

fn print_events(list: &EventList) {
    if list.events.is_empty() {
        println!("No failed events.");
        return;
    }
    println!(
        "{:<36}  {:>6}  {:<22}  {:<24}  {:>4}  {:>8}  LAST ERROR",
        "EVENT", "ALERT", "QUOTA", "WINDOW_START", "AT %", "ATTEMPTS"
    );
    for e in &list.events {
        println!(
            "{:<36}  {:>6}  {:<22}  {:<24}  {:>4}  {:>8}  {}",
            e.id,
            e.alert_id,
            e.quota,
            e.window_start,
            e.threshold,
            e.attempts,
            e.last_error.as_deref().unwrap_or("")
        );
    }
}
