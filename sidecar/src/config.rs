//! Validated configuration of the sidecar, and how it is shown with secrets masked.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::alerts::AlertSettings;
use crate::domain::clock::parse_duration;
use crate::domain::sealed::Keyring;
use crate::http::console::gateway::EnvoyAdmin;
use crate::http::console::origin::ConsoleOrigins;
use crate::http::drain::DEFAULT_DRAIN_PERIOD;

pub use crate::domain::mask::{mask_database_url, mask_secret};
pub use crate::http::DEFAULT_LISTEN;
pub use crate::store::target::{DatabaseTarget, DEFAULT_SQLITE_PATH};

/// Shortest internal token `serve` accepts: it is the only thing between the
/// network and the key registry.
pub const MIN_INTERNAL_TOKEN_LEN: usize = 16;

/// Everything `serve` needs, validated.
#[derive(Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub database: DatabaseTarget,
    /// Bearer token of the admin API; `None` disables the admin API.
    pub admin_token: Option<String>,
    /// Shared secret the Envoy filter presents on internal calls.
    pub internal_token: String,
    /// The master keys of signing secrets (`TOLLGATE_MASTER_KEY`, and
    /// `TOLLGATE_PREVIOUS_MASTER_KEY` during a rotation); may be empty.
    pub keyring: Keyring,
    /// How far from now a usage record's timestamp may be; see [`DEFAULT_USAGE_MAX_SKEW`].
    pub usage_max_skew: Duration,
    /// How long the key change feed keeps a change; see
    /// [`crate::http::feed::DEFAULT_RETENTION`].
    pub key_feed_retention: Duration,
    /// How long `/readyz` answers 503 after the stop signal before the
    /// listener closes; see [`DEFAULT_DRAIN_PERIOD`].
    pub drain_period: Duration,
    /// Envoy's admin interface, where the console reads the filter's
    /// figures (`TOLLGATE_ENVOY_ADMIN_URL`); `None`: the sidecar's own only.
    pub envoy_admin: Option<EnvoyAdmin>,
    /// Where the console may be reached (`--console-origin`); `None`: the
    /// listen address's origins ([`ConsoleOrigins::for_listen`]).
    pub console_origins: Option<ConsoleOrigins>,
    /// How budget alerts are checked and delivered.
    pub alerts: AlertSettings,
}

impl ServeConfig {
    /// The same configuration keeping key changes for `retention` (a
    /// duration such as `7d`; zero purges each change at the next round).
    pub fn with_key_feed_retention(self, retention: &str) -> Result<Self, String> {
        let key_feed_retention =
            parse_duration(retention).map_err(|e| format!("--key-feed-retention: {e}"))?;
        Ok(ServeConfig {
            key_feed_retention,
            ..self
        })
    }

    /// The same configuration with the console reading Envoy's figures
    /// from `url` (`http://host:port`); unset or empty: none.
    pub fn with_envoy_admin_url(self, url: Option<&str>) -> Result<Self, String> {
        let envoy_admin = url
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(EnvoyAdmin::parse)
            .transpose()
            .map_err(|e| format!("--envoy-admin-url: {e}"))?;
        Ok(ServeConfig {
            envoy_admin,
            ..self
        })
    }

    /// The same configuration with the console answering at `origins`
    /// (`--console-origin`: origins such as `http://127.0.0.1:9000`, in
    /// several values or separated by commas); none: the listen address's.
    pub fn with_console_origins<S: AsRef<str>>(self, origins: &[S]) -> Result<Self, String> {
        let given = origins.iter().any(|o| !o.as_ref().trim().is_empty());
        let console_origins = given
            .then(|| ConsoleOrigins::parse(origins))
            .transpose()
            .map_err(|e| format!("--console-origin: {e}"))?;
        Ok(ServeConfig {
            console_origins,
            ..self
        })
    }

    /// The console's origins for a sidecar bound to `bound` (the listen
    /// address, its port chosen if `--listen` said 0).
    pub fn console_origins_at(&self, bound: SocketAddr) -> ConsoleOrigins {
        self.console_origins
            .clone()
            .unwrap_or_else(|| ConsoleOrigins::for_listen(bound))
    }

    /// Validates the raw flag values; `keyring` is validated already
    /// ([`Keyring::from_env`]).
    pub fn new(
        listen: &str,
        database_url: Option<&str>,
        admin_token: Option<String>,
        internal_token: Option<String>,
        keyring: Keyring,
        usage_max_skew: &str,
    ) -> Result<Self, String> {
        let listen: SocketAddr = listen
            .trim()
            .parse()
            .map_err(|_| format!("--listen {listen:?} is not an address such as 127.0.0.1:9000"))?;
        let database = DatabaseTarget::from_url(database_url)?;
        let internal_token = internal_token.filter(|t| !t.is_empty()).ok_or_else(|| {
            "the internal token is required: set --internal-token or TOLLGATE_INTERNAL_TOKEN \
             (the same secret the Envoy filter sends in x-tollgate-internal-token)"
                .to_string()
        })?;
        if internal_token.chars().count() < MIN_INTERNAL_TOKEN_LEN {
            return Err(format!(
                "the internal token is too short: it needs at least {MIN_INTERNAL_TOKEN_LEN} characters"
            ));
        }
        let admin_token = admin_token.filter(|t| !t.is_empty());
        if let Some(token) = &admin_token {
            if token.chars().count() < MIN_INTERNAL_TOKEN_LEN {
                return Err(format!(
                    "the admin token is too short: it needs at least {MIN_INTERNAL_TOKEN_LEN} characters"
                ));
            }
        }
        let usage_max_skew =
            parse_duration(usage_max_skew).map_err(|e| format!("--usage-max-skew: {e}"))?;
        if usage_max_skew.is_zero() {
            return Err("--usage-max-skew must be longer than zero (e.g. 24h)".into());
        }
        Ok(ServeConfig {
            listen,
            database,
            admin_token,
            internal_token,
            keyring,
            usage_max_skew,
            key_feed_retention: crate::http::feed::DEFAULT_RETENTION,
            drain_period: DEFAULT_DRAIN_PERIOD,
            envoy_admin: None,
            console_origins: None,
            alerts: AlertSettings::default(),
        })
    }

    /// The same configuration checking budget alerts every `interval`
    /// (`--alert-interval`, above zero) and trying each webhook `attempts`
    /// times (`--alert-attempts`, at least 1).
    pub fn with_alerts(mut self, interval: &str, attempts: u32) -> Result<Self, String> {
        let interval = parse_duration(interval).map_err(|e| format!("--alert-interval: {e}"))?;
        if interval.is_zero() {
            return Err("--alert-interval must be longer than zero (e.g. 1s)".into());
        }
        if attempts == 0 {
            return Err("--alert-attempts must be at least 1".into());
        }
        self.alerts.interval = interval;
        self.alerts.delivery.max_attempts = attempts;
        Ok(self)
    }

    /// The same configuration draining for `period` (`--drain-period`: a
    /// duration, `0s` for none) before it stops.
    pub fn with_drain_period(self, period: &str) -> Result<Self, String> {
        let drain_period = parse_duration(period).map_err(|e| format!("--drain-period: {e}"))?;
        Ok(ServeConfig {
            drain_period,
            ..self
        })
    }
}

impl fmt::Display for ServeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "listen={} database={} admin_token={} internal_token={} master_key={} usage_max_skew={}s key_feed_retention={}s drain_period={}s envoy_admin={} console_origins={} alert_interval={}ms alert_attempts={}",
            self.listen,
            self.database.masked(),
            mask_secret(self.admin_token.as_deref()),
            mask_secret(Some(&self.internal_token)),
            self.keyring.describe(),
            self.usage_max_skew.as_secs(),
            self.key_feed_retention.as_secs(),
            self.drain_period.as_secs(),
            self.envoy_admin
                .as_ref()
                .map_or_else(|| "not set".to_string(), EnvoyAdmin::url),
            self.console_origins_at(self.listen),
            self.alerts.interval.as_millis(),
            self.alerts.delivery.max_attempts,
        )
    }
}

impl fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn passwords_are_masked_in_database_urls() {
        assert_eq!(
            mask_database_url("mysql://app:s3cret@db:3306/tollgate"),
            "mysql://app:****@db:3306/tollgate"
        );
        assert_eq!(
            mask_database_url("mysql://root@127.0.0.1:3306/t"),
            "mysql://root@127.0.0.1:3306/t"
        );
        assert_eq!(
            mask_database_url("mysql://a:p@ss@h/db?ssl-mode=disabled&password=x"),
            "mysql://a:****@h/db?ssl-mode=disabled&password=****"
        );
        assert_eq!(mask_database_url("mysql://u:p@h"), "mysql://u:****@h");
    }

    #[test]
    fn secrets_show_only_their_length() {
        assert_eq!(mask_secret(None), "not set");
        assert_eq!(mask_secret(Some("0123456789abcdef")), "set (16 chars)");
        let config = ServeConfig::new(
            "127.0.0.1:9000",
            Some("mysql://u:hunter22@h/db"),
            Some("admin-token-0123456789".into()),
            Some("internal-token-0123456789".into()),
            Keyring::from_values(Some(&"ab".repeat(32)), None).unwrap(),
            "24h",
        )
        .unwrap();
        let shown = config.to_string();
        assert!(!shown.contains("hunter22"), "{shown}");
        assert!(!shown.contains("admin-token-0123456789"), "{shown}");
        assert!(!shown.contains("internal-token-0123456789"), "{shown}");
        assert!(shown.contains("internal_token=set (25 chars)"), "{shown}");
        assert!(shown.contains("master_key=set (id "), "{shown}");
        assert!(!shown.contains(&"ab".repeat(32)), "{shown}");
        assert_eq!(format!("{config:?}"), shown);
    }

    #[test]
    fn internal_token_is_required_and_long_enough() {
        let none = Keyring::empty;
        let missing =
            ServeConfig::new("127.0.0.1:9000", None, None, None, none(), "24h").unwrap_err();
        assert!(missing.contains("TOLLGATE_INTERNAL_TOKEN"), "{missing}");
        let short = ServeConfig::new(
            "127.0.0.1:9000",
            None,
            None,
            Some("short".into()),
            none(),
            "24h",
        )
        .unwrap_err();
        assert!(short.contains("at least 16"), "{short}");
        let bad_listen =
            ServeConfig::new("localhost", None, None, Some("x".repeat(16)), none(), "24h")
                .unwrap_err();
        assert!(bad_listen.contains("--listen"), "{bad_listen}");
    }

    /// A configuration with only what `serve` requires, and `skew`.
    fn serve_with_skew(skew: &str) -> Result<ServeConfig, String> {
        let internal = Some("x".repeat(16));
        ServeConfig::new(
            "127.0.0.1:9000",
            None,
            None,
            internal,
            Keyring::empty(),
            skew,
        )
    }

    #[test]
    fn the_usage_skew_is_a_duration_longer_than_zero() {
        let serve = serve_with_skew;
        assert_eq!(
            serve("24h").unwrap().usage_max_skew,
            crate::http::usage::DEFAULT_USAGE_MAX_SKEW
        );
        assert_eq!(
            serve("90m").unwrap().usage_max_skew,
            Duration::from_secs(5_400)
        );
        assert!(serve("24h")
            .unwrap()
            .to_string()
            .contains("usage_max_skew=86400s"));
        for bad in ["0s", "1day", "", "-1h"] {
            let err = serve(bad).unwrap_err();
            assert!(err.contains("--usage-max-skew"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_drain_period_is_a_duration_and_may_be_zero() {
        let serve = || serve_with_skew("24h").unwrap();
        assert_eq!(serve().drain_period, DEFAULT_DRAIN_PERIOD);
        let zero = serve().with_drain_period("0s").unwrap();
        assert_eq!(zero.drain_period, Duration::ZERO);
        assert!(zero.to_string().contains("drain_period=0s"));
        assert_eq!(
            serve().with_drain_period("2s").unwrap().drain_period,
            Duration::from_secs(2)
        );
        for bad in ["2", "1day", "", "-1s"] {
            let err = serve().with_drain_period(bad).unwrap_err();
            assert!(err.contains("--drain-period"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn console_origins_default_to_the_listen_address_and_are_validated() {
        let serve = || serve_with_skew("24h").unwrap();
        let default = serve().with_console_origins::<&str>(&[]).unwrap();
        assert_eq!(default.console_origins, None);
        assert!(
            default
                .to_string()
                .contains("console_origins=http://127.0.0.1:9000,http://localhost:9000"),
            "{default}"
        );
        assert_eq!(
            default
                .console_origins_at("127.0.0.1:41234".parse().unwrap())
                .to_string(),
            "http://127.0.0.1:41234,http://localhost:41234",
            "a port chosen at bind time"
        );
        let given = serve()
            .with_console_origins(&["https://console.example.com,http://127.0.0.1:9000"])
            .unwrap();
        assert!(given
            .to_string()
            .contains("console_origins=https://console.example.com,http://127.0.0.1:9000"));
        assert_eq!(
            given.console_origins_at("127.0.0.1:1".parse().unwrap()),
            given.console_origins_at("127.0.0.1:2".parse().unwrap()),
            "given origins do not follow the address"
        );
        for bad in ["http://h/console", "ftp://h", "h:0"] {
            let err = serve().with_console_origins(&[bad]).unwrap_err();
            assert!(err.starts_with("--console-origin: "), "{bad}: {err}");
        }
    }

    #[test]
    fn database_urls_pick_the_backend() {
        assert_eq!(
            DatabaseTarget::from_url(None).unwrap(),
            DatabaseTarget::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH))
        );
        assert_eq!(
            DatabaseTarget::from_url(Some("sqlite://data/t.db?mode=rwc")).unwrap(),
            DatabaseTarget::Sqlite(PathBuf::from("data/t.db"))
        );
        assert_eq!(
            DatabaseTarget::from_url(Some("sqlite:///tmp/t.db")).unwrap(),
            DatabaseTarget::Sqlite(PathBuf::from("/tmp/t.db"))
        );
        assert!(matches!(
            DatabaseTarget::from_url(Some("mysql://root@127.0.0.1/t")).unwrap(),
            DatabaseTarget::MySql(_)
        ));
        let err = DatabaseTarget::from_url(Some("postgres://u:pw@h/db")).unwrap_err();
        assert!(!err.contains("pw@"), "{err}");
    }
}
