//! The `tollgate` command line: its flags, and what each subcommand does.
//!
//! Commands that touch the database apply pending migrations first, so
//! `tollgate keys create` works from a fresh directory with no setup.
//!
//! The master key of signing secrets is read from the environment only
//! (`TOLLGATE_MASTER_KEY`, `TOLLGATE_PREVIOUS_MASTER_KEY`), by the commands
//! that seal or open one: a flag would show it in the process list.

pub mod alerts;
pub mod limits;
pub mod prices;
pub mod prune;
pub mod reconcile;
pub mod rewrap;
pub mod teams;
pub mod usage;

use std::io::Read as _;
use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use time::OffsetDateTime;
use tollgate_wire::Algorithm;

use crate::config::ServeConfig;
use crate::domain::clock::{parse_duration, parse_rfc3339};
use crate::domain::keys::{CreatedKey, KeyView};
use crate::domain::sealed::Keyring;
use crate::domain::token::{self, TokenRequest};
use crate::store::registry::{create_key, register_key};
use crate::store::DatabaseTarget;
use crate::store::{Revocation, Store, SummaryBy};
use rewrap::RewrapReport;

/// tollgate: API key registry and usage ledger for the tollgate Envoy filter.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
pub struct Cli {
    /// Database URL: mysql://user:pass@host:3306/db or sqlite://path/to/file.db.
    /// Default: the SQLite file .tollgate/tollgate.db under the current directory.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (applies migrations first).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Teams: keys that share a rate and quotas of the team's.
    #[command(subcommand)]
    Teams(teams::TeamsCommand),
    /// Report usage.
    #[command(subcommand)]
    Usage(UsageCommand),
    /// Prices of LLM models, which the usage rows' costs are computed with.
    #[command(subcommand)]
    Prices(prices::PricesCommand),
    /// Budget alerts: signed webhooks when a key's quota use crosses thresholds.
    #[command(subcommand)]
    Alerts(alerts::AlertsCommand),
    /// Mint client tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// Flags of `tollgate serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: String,
    /// Bearer token of the admin API (/v1/keys, /v1/usage); unset disables it.
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Secret the Envoy filter sends in x-tollgate-internal-token (required, >= 16 chars).
    #[arg(long, env = "TOLLGATE_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,
    /// Usage records whose timestamp is further than this from now, either
    /// way, are refused (e.g. 24h, 90m); records the filter kept for longer
    /// while the sidecar was down are refused too.
    #[arg(long, env = "TOLLGATE_USAGE_MAX_SKEW", default_value = "24h")]
    pub usage_max_skew: String,
    /// How long the key change feed keeps a change (e.g. 7d); an Envoy cut
    /// off from every sidecar for longer drops its whole key cache.
    #[arg(long, env = "TOLLGATE_KEY_FEED_RETENTION", default_value = "7d")]
    pub key_feed_retention: String,
    /// After SIGTERM or SIGINT, answer /readyz 503 for this long while still
    /// serving, so the health checks of the Envoys in front take this sidecar
    /// out first; then stop gracefully (e.g. 5s; 0s: stop at once).
    #[arg(long, env = "TOLLGATE_DRAIN_PERIOD", default_value = "5s")]
    pub drain_period: String,
    /// Envoy's admin interface (http://host:port), where the web console
    /// reads the filter's live figures; unset: the sidecar's own only.
    #[arg(long, env = "TOLLGATE_ENVOY_ADMIN_URL")]
    pub envoy_admin_url: Option<String>,
    /// Where the web console may be reached (e.g. http://127.0.0.1:9000,
    /// https://console.example.com): the Host and Origin a browser sends.
    /// Repeatable, or comma-separated. Default: the listen address's, and
    /// http://localhost:<port> on loopback.
    #[arg(long, env = "TOLLGATE_CONSOLE_ORIGIN", value_delimiter = ',')]
    pub console_origin: Vec<String>,
    /// How often budget alerts are checked and their webhooks sent (e.g. 1s).
    #[arg(long, env = "TOLLGATE_ALERT_INTERVAL", default_value = "1s")]
    pub alert_interval: String,
    /// Attempts in all to deliver a budget alert's webhook before it is
    /// kept as failed (retries wait 1 s, 2 s, 4 s...).
    #[arg(long, env = "TOLLGATE_ALERT_ATTEMPTS", default_value_t = 6)]
    pub alert_attempts: u32,
}

/// `tollgate keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Mint a new key; its plaintext is printed once and never stored.
    Create {
        #[arg(long)]
        name: String,
        /// When the key stops working (RFC 3339, e.g. 2026-01-01T00:00:00Z).
        #[arg(long)]
        expires_at: Option<String>,
        /// Also mint the key its own HMAC secret for its X-Auth-Tokens,
        /// printed once and stored sealed under TOLLGATE_MASTER_KEY (required).
        #[arg(long)]
        signing_secret: bool,
        #[command(flatten)]
        limits: limits::LimitFlags,
        /// The team the key joins: its id or name.
        #[arg(long)]
        team: Option<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Register an existing plaintext key (e.g. from the old proxy's api_keys table).
    Import {
        #[arg(long)]
        name: String,
        /// The existing key; only its SHA-256 is stored.
        #[arg(long)]
        key: String,
        /// When the key stops working (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their hashes or plaintexts).
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change a key's rate and quotas (published to every Envoy).
    Limits {
        id: i64,
        #[command(flatten)]
        limits: limits::LimitFlags,
        /// Remove every limit first (then apply the other flags, if any).
        #[arg(long)]
        clear: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Move a key into a team (--team) or out of its team (--no-team);
    /// every Envoy re-verifies it.
    Move {
        id: i64,
        /// The team's id or name.
        #[arg(long, required_unless_present = "no_team", conflicts_with = "no_team")]
        team: Option<String>,
        /// Take the key out of its team.
        #[arg(long)]
        no_team: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id.
    Revoke {
        id: i64,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-seal every signing secret under TOLLGATE_MASTER_KEY, opening each
    /// with it or one of TOLLGATE_PREVIOUS_MASTER_KEY (master key rotation).
    Rewrap {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `tollgate usage ...`.
#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Requests, bytes, units and tokens per key and outcome, or per key
    /// and model.
    Summary {
        /// Only this key id.
        #[arg(long)]
        key: Option<i64>,
        /// A duration back from now (15m, 2h, 7d) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// One row per key and outcome, or per key and model (model null
        /// for calls that were not LLM calls).
        #[arg(long, default_value = "outcome", value_parser = usage::summary_by_parser())]
        by: SummaryBy,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One key's usage rows, newest first: request id, LLM API, model,
    /// tokens, status, outcome, bytes and time (rows pruned are gone).
    Log {
        /// The key id.
        #[arg(long)]
        key: String,
        /// Only rows since: a duration back from now (15m, 2h, 7d) or an
        /// RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Most rows to print, 1 to 10000 (default 100).
        #[arg(long)]
        limit: Option<String>,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete usage detail rows older than a duration, in batches; the
    /// hourly and daily rollups, which summaries read, are kept.
    Prune {
        /// How old a row must be to go (e.g. 90d); at least 1d.
        #[arg(long)]
        older_than: String,
        /// Rows deleted per transaction.
        #[arg(long, default_value_t = prune::DEFAULT_BATCH_ROWS)]
        batch_size: usize,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Per key and quota window: the ledger's totals, the limit counters
    /// and the limits; exits non-zero when a key is over its limit on a
    /// quota charged at admission.
    Reconcile {
        /// Only this key id.
        #[arg(long)]
        key: Option<i64>,
        /// Only quotas of this window: minute, hour, day or month.
        #[arg(long)]
        window: Option<String>,
        /// Reconcile the windows containing this instant (RFC 3339; default now).
        #[arg(long)]
        at: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `tollgate token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print an X-Auth-Token (compact JWS) for one request body.
    Sign {
        /// Environment variable holding the HMAC secret (its text is the key):
        /// the gateway's shared secret, or the key's own signing secret (tgs_...).
        #[arg(long)]
        secret_env: String,
        /// File with the exact request body; "-" reads standard input.
        #[arg(long)]
        body: PathBuf,
        /// Bind the token to this HTTP method (htm claim).
        #[arg(long)]
        method: Option<String>,
        /// Bind the token to this path with query (htu claim).
        #[arg(long)]
        path: Option<String>,
        /// Lifetime (e.g. 60s, 5m).
        #[arg(long, default_value = "60s")]
        ttl: String,
        /// Key id header, picking one of the gateway's secrets.
        #[arg(long)]
        kid: Option<String>,
        /// HMAC algorithm (the token header's alg).
        #[arg(long, default_value = "HS256", value_parser = algorithm_parser())]
        alg: Algorithm,
        /// Add a random jti claim (needed when replay protection is on).
        #[arg(long)]
        jti: bool,
    },
}

/// Parses `--alg`: exactly the JOSE names of [`Algorithm::ALL`], listed in
/// `--help` and in the error for any other value.
fn algorithm_parser() -> impl TypedValueParser<Value = Algorithm> {
    PossibleValuesParser::new(Algorithm::ALL.map(Algorithm::name)).try_map(|name| {
        Algorithm::from_name(&name).ok_or_else(|| format!("{name:?} is not an HMAC algorithm"))
    })
}

impl Command {
    /// The default log filter: the service logs its progress, one-shot
    /// commands only their warnings (their output is the point).
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Serve(_) | Command::Migrate => "info,sqlx=warn",
            _ => "warn",
        }
    }
}

/// Runs a parsed command line; the error is a message for the person at the terminal.
pub async fn run(cli: Cli) -> Result<(), String> {
    let database_url = cli.database_url.as_deref();
    match cli.command {
        Command::Serve(args) => {
            let config = ServeConfig::new(
                &args.listen,
                database_url,
                args.admin_token,
                args.internal_token,
                Keyring::from_env()?,
                &args.usage_max_skew,
            )?
            .with_key_feed_retention(&args.key_feed_retention)?
            .with_drain_period(&args.drain_period)?
            .with_envoy_admin_url(args.envoy_admin_url.as_deref())?
            .with_console_origins(&args.console_origin)?
            .with_alerts(&args.alert_interval, args.alert_attempts)?;
            crate::app::serve(config, crate::app::shutdown_signal()).await
        }
        Command::Migrate => {
            let target = DatabaseTarget::from_url(database_url)?;
            open_store(&target).await?;
            tracing::info!(database = %target.masked(), "migrations applied");
            println!("migrations applied to {}", target.masked());
            Ok(())
        }
        Command::Keys(command) => {
            let store = open_store(&DatabaseTarget::from_url(database_url)?).await?;
            let result = run_keys(&store, command).await;
            store.close().await;
            result
        }
        Command::Teams(command) => {
            let store = open_store(&DatabaseTarget::from_url(database_url)?).await?;
            let result = teams::run(&store, command).await;
            store.close().await;
            result
        }
        Command::Prices(command) => {
            let target = DatabaseTarget::from_url(database_url)?;
            prices::run(&target, command).await
        }
        Command::Alerts(command) => {
            let target = DatabaseTarget::from_url(database_url)?;
            alerts::run(&target, command).await
        }
        Command::Usage(UsageCommand::Summary {
            key,
            since,
            by,
            json,
        }) => {
            let target = DatabaseTarget::from_url(database_url)?;
            usage::summary(&target, key, since.as_deref(), by, json).await
        }
        Command::Usage(UsageCommand::Log {
            key,
            since,
            limit,
            json,
        }) => {
            let target = DatabaseTarget::from_url(database_url)?;
            usage::log(&target, &key, since.as_deref(), limit.as_deref(), json).await
        }
        Command::Usage(UsageCommand::Prune {
            older_than,
            batch_size,
            json,
        }) => {
            let before = prune::cutoff(&older_than, OffsetDateTime::now_utc())?;
            let batch = prune::batch_rows(batch_size)?;
            let store = open_store(&DatabaseTarget::from_url(database_url)?).await?;
            let report = prune::prune(&store, before, batch).await;
            store.close().await;
            let report = report?;
            if json {
                return print_json(&report);
            }
            println!(
                "Deleted {} usage rows created before {}; the hourly and daily rollups are kept.",
                report.deleted, report.before
            );
            Ok(())
        }
        Command::Usage(UsageCommand::Reconcile {
            key,
            window,
            at,
            json,
        }) => {
            let window = window
                .as_deref()
                .map(|w| {
                    tollgate_wire::Window::parse(w).ok_or_else(|| {
                        format!(
                            "--window {w:?}: use {}",
                            crate::cli::reconcile::window_names()
                        )
                    })
                })
                .transpose()?;
            let at = match at.as_deref() {
                Some(text) => parse_rfc3339(text).map_err(|e| format!("--at: {e}"))?,
                None => OffsetDateTime::now_utc(),
            };
            let store = open_store(&DatabaseTarget::from_url(database_url)?).await?;
            let rows = crate::cli::reconcile::reconcile(&store, key, window, at).await;
            store.close().await;
            let rows = rows.map_err(|e| format!("the reconciliation could not be read: {e}"))?;
            if json {
                print_json(&rows)?;
            } else {
                crate::cli::reconcile::print_table(&rows);
            }
            match rows.iter().filter(|r| r.over_limit).count() {
                0 => Ok(()),
                over => Err(format!("{over} key quota(s) over the limit")),
            }
        }
        Command::Token(TokenCommand::Sign {
            secret_env,
            body,
            method,
            path,
            ttl,
            kid,
            alg,
            jti,
        }) => {
            let secret = std::env::var(&secret_env).map_err(|_| {
                format!("the environment variable {secret_env} (--secret-env) is not set")
            })?;
            if secret.is_empty() {
                return Err(format!("the environment variable {secret_env} is empty"));
            }
            let ttl = parse_duration(&ttl)?;
            if ttl.is_zero() {
                return Err("--ttl must be longer than zero".into());
            }
            let body = read_body(&body)?;
            let request = TokenRequest {
                alg,
                kid: kid.as_deref(),
                iat: OffsetDateTime::now_utc().unix_timestamp(),
                ttl_secs: i64::try_from(ttl.as_secs()).map_err(|_| "--ttl is too long")?,
                body: &body,
                method: method.as_deref(),
                path: path.as_deref(),
                jti: if jti {
                    Some(token::random_jti()?)
                } else {
                    None
                },
            };
            println!("{}", token::sign_token(&request, secret.as_bytes()));
            Ok(())
        }
    }
}

/// `--expires-at`, if given: an RFC 3339 instant in the accepted range.
fn parse_expires_at(text: Option<&str>) -> Result<Option<OffsetDateTime>, String> {
    text.map(|t| parse_rfc3339(t).map_err(|e| format!("--expires-at: {e}")))
        .transpose()
}

async fn open_store(target: &DatabaseTarget) -> Result<Store, String> {
    let store = Store::connect(target)
        .await
        .map_err(|e| format!("cannot open {}: {e}", target.masked()))?;
    store
        .migrate()
        .await
        .map_err(|e| format!("cannot migrate {}: {e}", target.masked()))?;
    Ok(store)
}

async fn run_keys(store: &Store, command: KeysCommand) -> Result<(), String> {
    match command {
        KeysCommand::Create {
            name,
            expires_at,
            signing_secret,
            limits,
            team,
            json,
        } => {
            let expires_at = parse_expires_at(expires_at.as_deref())?;
            let limits = limits.limits().map_err(|e| e.to_string())?;
            let team = match team.as_deref() {
                Some(text) => Some(teams::resolve(store, text).await?.id),
                None => None,
            };
            let keyring = signing_secret.then(Keyring::from_env).transpose()?;
            let created = create_key(store, &name, expires_at, keyring.as_ref(), limits, team)
                .await
                .map_err(|e| e.to_string())?;
            print_created(&created, json)
        }
        KeysCommand::Import {
            name,
            key,
            expires_at,
            json,
        } => {
            let expires_at = parse_expires_at(expires_at.as_deref())?;
            let created = register_key(store, &name, key, expires_at)
                .await
                .map_err(|e| e.to_string())?;
            if json {
                // The caller already holds the key; do not echo it back.
                print_json(&created.view)
            } else {
                println!(
                    "Imported key {} ({}) as id {}; only its SHA-256 is stored.",
                    created.view.name, created.view.prefix, created.view.id
                );
                Ok(())
            }
        }
        KeysCommand::List { json } => {
            let stored = store.list_keys().await.map_err(|e| e.to_string())?;
            let now = OffsetDateTime::now_utc();
            let keys: Vec<KeyView> = stored.iter().map(|k| KeyView::at(k, now)).collect();
            if json {
                print_json(&keys)
            } else {
                print_key_table(&keys);
                Ok(())
            }
        }
        KeysCommand::Limits {
            id,
            limits,
            clear,
            json,
        } => limits::run_cli(store, id, &limits, clear, json).await,
        KeysCommand::Move {
            id,
            team,
            no_team: _,
            json,
        } => teams::move_key(store, id, team.as_deref(), json).await,
        KeysCommand::Revoke { id, json } => {
            let now = crate::domain::clock::now_ms();
            let outcome = store.revoke_key(id, now).await.map_err(|e| e.to_string())?;
            let (key, already) = match outcome {
                Revocation::NotFound => return Err(format!("no key has id {id}")),
                Revocation::Revoked(key) => (key, false),
                Revocation::AlreadyRevoked(key) => (key, true),
            };
            let view = KeyView::at(&key, now);
            if json {
                return print_json(&serde_json::json!({"key": view, "already_revoked": already}));
            }
            let when = view.revoked_at.as_deref().unwrap_or("an unknown time");
            if already {
                println!(
                    "Key {id} ({}) was already revoked at {when}; nothing changed.",
                    view.prefix
                );
            } else {
                println!("Revoked key {id} ({}) at {when}.", view.prefix);
            }
            Ok(())
        }
        KeysCommand::Rewrap { json } => {
            let report = rewrap::rewrap_signing_secrets(store, &Keyring::from_env()?).await?;
            if json {
                print_json(&report)
            } else {
                print_rewrap(&report);
                Ok(())
            }
        }
    }
}

fn print_rewrap(report: &RewrapReport) {
    println!(
        "Rewrapped {} signing secret(s) under master key {}; {} already were.",
        report.rewrapped, report.master_key_id, report.already_current
    );
    if report.changed_meanwhile > 0 {
        println!(
            "{} changed while this ran and were left as they were: run it again.",
            report.changed_meanwhile
        );
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), String> {
    let text = serde_json::to_string(value).map_err(|e| format!("cannot encode JSON: {e}"))?;
    println!("{text}");
    Ok(())
}

fn print_created(created: &CreatedKey, json: bool) -> Result<(), String> {
    if json {
        return print_json(created);
    }
    let view = &created.view;
    println!("Created API key {} for {:?}.", view.id, view.name);
    println!();
    println!("    {}", created.key);
    println!();
    if let Some(secret) = &created.signing_secret {
        println!("Its signing secret (the HMAC key of its X-Auth-Tokens):");
        println!();
        println!("    {}", secret.expose());
        println!();
        println!("Both are shown once: store them now. The key is kept as its SHA-256, the");
        println!("secret only encrypted under the master key.");
    } else {
        println!("This key is shown once: store it now. Only its SHA-256 is kept.");
    }
    println!("  id:         {}", view.id);
    println!("  prefix:     {}", view.prefix);
    println!("  status:     {}", view.status);
    println!("  created_at: {}", view.created_at);
    println!(
        "  expires_at: {}",
        view.expires_at.as_deref().unwrap_or("never")
    );
    println!("  limits:     {}", limits::describe(&view.limits));
    if let Some(team) = view.team_id {
        println!("  team:       {team}");
    }
    println!(
        "  tokens:     signed with {}",
        if view.has_signing_secret {
            "the key's own signing secret"
        } else {
            "the gateway's shared secret"
        }
    );
    Ok(())
}

fn print_key_table(keys: &[KeyView]) {
    if keys.is_empty() {
        println!("No keys yet. Create one with: tollgate keys create --name NAME");
        return;
    }
    println!(
        "{:>6}  {:<24}  {:<10}  {:<8}  {:<24}  {:<24}  {:<24}  {:<6}  LIMITS",
        "ID", "NAME", "PREFIX", "STATUS", "CREATED_AT", "REVOKED_AT", "EXPIRES_AT", "SECRET"
    );
    for key in keys {
        println!(
            "{:>6}  {:<24}  {:<10}  {:<8}  {:<24}  {:<24}  {:<24}  {:<6}  {}",
            key.id,
            key.name,
            key.prefix,
            key.status,
            key.created_at,
            key.revoked_at.as_deref().unwrap_or("-"),
            key.expires_at.as_deref().unwrap_or("never"),
            if key.has_signing_secret {
                "own"
            } else {
                "shared"
            },
            limits::describe(&key.limits),
        );
    }
}

fn read_body(path: &PathBuf) -> Result<Vec<u8>, String> {
    if path.as_os_str() == "-" {
        let mut body = Vec::new();
        std::io::stdin()
            .read_to_end(&mut body)
            .map_err(|e| format!("cannot read the body from standard input: {e}"))?;
        Ok(body)
    } else {
        std::fs::read(path)
            .map_err(|e| format!("cannot read the body file {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn database_url_is_global() {
        let cli = Cli::try_parse_from([
            "tollgate",
            "keys",
            "list",
            "--database-url",
            "sqlite://x.db",
        ])
        .unwrap();
        assert_eq!(cli.database_url.as_deref(), Some("sqlite://x.db"));
    }
}
