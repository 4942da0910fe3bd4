//! What every handler shares: the store, the tokens callers are checked
//! against, metrics, the keyring, the usage skew, draining, the console.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::mask::mask_secret;
use crate::domain::sealed::Keyring;
use crate::http::console::gateway::EnvoyAdmin;
use crate::http::console::origin::ConsoleOrigins;
use crate::http::console::Console;
use crate::http::drain::Drain;
use crate::http::metrics::Metrics;
use crate::http::usage::DEFAULT_USAGE_MAX_SKEW;
use crate::store::Store;

/// The secrets requests are checked against.
#[derive(Clone)]
pub struct AuthTokens {
    /// `None` disables the admin API.
    pub admin_token: Option<String>,
    pub internal_token: String,
}

impl std::fmt::Debug for AuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthTokens")
            .field("admin_token", &mask_secret(self.admin_token.as_deref()))
            .field("internal_token", &mask_secret(Some(&self.internal_token)))
            .finish()
    }
}

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    pub auth: Arc<AuthTokens>,
    pub metrics: Arc<Metrics>,
    /// The master keys signing secrets are sealed and opened with.
    pub keyring: Arc<Keyring>,
    /// How far from now a usage record's timestamp may be.
    pub usage_max_skew: Duration,
    /// Set once the stop signal arrived (`drain.rs`).
    pub drain: Drain,
    /// The web console's sessions and where it reads Envoy's figures.
    pub console: Arc<Console>,
}

impl AppState {
    /// State over a store, with fresh metrics, no master key and the
    /// default usage skew.
    pub fn new(store: Store, auth: AuthTokens) -> Self {
        AppState {
            store,
            auth: Arc::new(auth),
            metrics: Arc::new(Metrics::default()),
            keyring: Arc::new(Keyring::empty()),
            usage_max_skew: DEFAULT_USAGE_MAX_SKEW,
            drain: Drain::default(),
            console: Arc::new(Console::default()),
        }
    }

    /// The same state, its console reading Envoy's figures from `envoy_admin`
    /// (and starting afresh: no session, no failed login).
    pub fn with_envoy_admin(self, envoy_admin: Option<EnvoyAdmin>) -> Self {
        AppState {
            console: Arc::new(Console {
                envoy_admin,
                origins: self.console.origins.clone(),
                ..Console::default()
            }),
            ..self
        }
    }

    /// The same state, its console answering at `origins` only (and
    /// starting afresh: no session, no failed login).
    pub fn with_console_origins(self, origins: ConsoleOrigins) -> Self {
        AppState {
            console: Arc::new(Console {
                origins,
                envoy_admin: self.console.envoy_admin.clone(),
                ..Console::default()
            }),
            ..self
        }
    }

    /// The same state, sealing and opening signing secrets with `keyring`.
    pub fn with_keyring(self, keyring: Keyring) -> Self {
        AppState {
            keyring: Arc::new(keyring),
            ..self
        }
    }

    /// The same state accepting usage timestamps within `skew` of now.
    pub fn with_usage_max_skew(self, skew: Duration) -> Self {
        AppState {
            usage_max_skew: skew,
            ..self
        }
    }
}
