//! The plugin configuration: parsed once from JSON in `on_configure` and
//! validated into an immutable [`Config`] that every HTTP context shares.
//!
//! Unknown fields are refused, every field has a documented default except
//! `internal_token` and the JWT secrets, and every error names the field at
//! fault (as a JSON path such as `jwt.algorithms[1]`) and says why.
//!
//! Secrets can stay out of the configuration file: a secret is
//! `{"text": ..}`, `{"base64": ..}` or `{"env": "NAME"}`, and the internal
//! token a string or `{"env": "NAME"}`; `env` reads the VM's environment
//! (Envoy passes variables listed in
//! `vm_config.environment_variables.host_env_keys`).

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use serde::Deserialize;

use crate::cache::CachePolicy;
use crate::limits::LimitsPolicy;
use crate::llm::routes::{LlmRoutes, RawLlm};
use crate::replay::{ReplayPolicy, ReplayScope};
use crate::token::{Algorithm, JwtPolicy, Secret};
use crate::usage::UsagePolicy;

/// Secrets shorter than this are accepted with a warning (RFC 7518 3.2
/// asks for at least the hash size; 32 bytes for HS256).
pub const RECOMMENDED_SECRET_BYTES: usize = 32;

/// The validated feed settings of the plugin configuration (`key_feed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedPolicy {
    /// Off: no polls, and active verdicts live for the unfed TTL.
    pub enabled: bool,
    /// How often the instance polls.
    pub poll_interval_ms: u64,
    /// How long a poll waits for its answer.
    pub timeout_ms: u64,
    /// How old the last good answer may be for the feed to count as
    /// current (and the long positive TTL to apply).
    pub max_lag_ms: u64,
}

/// The validated plugin configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Envoy cluster of the sidecar.
    pub sidecar_cluster: String,
    /// `:authority` of callouts to the sidecar.
    pub sidecar_authority: String,
    /// Timeout of a key verification callout.
    pub callout_timeout_ms: u64,
    /// Shared secret sent in `wire::INTERNAL_TOKEN_HEADER`.
    pub internal_token: String,
    /// Token rules and secrets.
    pub jwt: JwtPolicy,
    /// Size of the replay store (used when `jwt.require_jti` is on).
    pub replay: ReplayPolicy,
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// Key verdict cache settings.
    pub key_cache: CachePolicy,
    /// Key change feed settings.
    pub key_feed: FeedPolicy,
    /// Usage reporting settings.
    pub usage: UsagePolicy,
    /// Rate limits and quotas.
    pub limits: LimitsPolicy,
    /// Which paths are which LLM API.
    pub llm: LlmRoutes,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("sidecar_cluster", &self.sidecar_cluster)
            .field("sidecar_authority", &self.sidecar_authority)
            .field("callout_timeout_ms", &self.callout_timeout_ms)
            .field("internal_token", &"<masked>")
            .field("jwt", &self.jwt)
            .field("replay", &self.replay)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("key_cache", &self.key_cache)
            .field("key_feed", &self.key_feed)
            .field("usage", &self.usage)
            .field("limits", &self.limits)
            .field("llm", &self.llm)
            .finish()
    }
}

/// A configuration the filter refuses: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// JSON path of the field (`.` for the document itself).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid plugin configuration: {}: {}",
            self.field, self.reason
        )
    }
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "defaults::sidecar_cluster")]
    sidecar_cluster: String,
    #[serde(default = "defaults::sidecar_authority")]
    sidecar_authority: String,
    #[serde(default = "defaults::callout_timeout_ms")]
    callout_timeout_ms: u64,
    internal_token: RawText,
    jwt: RawJwt,
    #[serde(default = "defaults::max_body_bytes")]
    max_body_bytes: u64,
    #[serde(default)]
    key_cache: RawKeyCache,
    #[serde(default)]
    key_feed: RawKeyFeed,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    usage: RawUsage,
    #[serde(default)]
    llm: RawLlm,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    #[serde(default)]
    secret: Option<RawSecret>,
    #[serde(default)]
    kid_secrets: BTreeMap<String, RawSecret>,
    #[serde(default = "defaults::algorithms")]
    algorithms: Vec<String>,
    #[serde(default = "defaults::clock_skew_s")]
    clock_skew_s: u64,
    #[serde(default = "defaults::max_lifetime_s")]
    max_lifetime_s: u64,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    require_jti: bool,
    #[serde(default = "defaults::replay_slots")]
    replay_slots: u32,
    #[serde(default)]
    replay_scope: ReplayScope,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    base64: Option<String>,
    #[serde(default)]
    env: Option<String>,
}

/// A string given inline or read from the environment.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawText {
    Inline(String),
    Env(RawEnv),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnv {
    env: String,
}

/// Reads an environment variable (the VM's, inside Envoy).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn from_env(field: &str, name: &str, env: EnvLookup<'_>) -> Result<String, ConfigError> {
    match env(name) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(err(
            field,
            format!(
                "environment variable {name} is not set or empty (Envoy passes only \
                 variables listed in vm_config.environment_variables)"
            ),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawKeyCache {
    positive_ttl_s: u64,
    /// Absent: 30 s, or the positive TTL if that is shorter.
    unfed_positive_ttl_s: Option<u64>,
    negative_ttl_s: u64,
    stale_if_error_s: u64,
    slots: u32,
}

impl Default for RawKeyCache {
    fn default() -> Self {
        RawKeyCache {
            positive_ttl_s: 300,
            unfed_positive_ttl_s: None,
            negative_ttl_s: 5,
            stale_if_error_s: 300,
            slots: 16384,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawKeyFeed {
    enabled: bool,
    poll_interval_ms: u64,
    timeout_ms: u64,
    max_lag_ms: u64,
}

impl Default for RawKeyFeed {
    fn default() -> Self {
        RawKeyFeed {
            enabled: true,
            poll_interval_ms: 1_000,
            timeout_ms: 1_000,
            max_lag_ms: 5_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    units_header: String,
    ratelimit_headers: bool,
    grant_timeout_ms: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            units_header: "x-usage-units".to_string(),
            ratelimit_headers: true,
            grant_timeout_ms: 2_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUsage {
    flush_interval_ms: u64,
    max_batch: usize,
    buffer_cap: usize,
    max_backoff_ms: u64,
    timeout_ms: u64,
}

impl Default for RawUsage {
    fn default() -> Self {
        RawUsage {
            flush_interval_ms: 1_000,
            max_batch: 500,
            buffer_cap: 100_000,
            max_backoff_ms: 30_000,
            timeout_ms: 5_000,
        }
    }
}

mod defaults {
    /// How long an active verdict lives while the key change feed lags.
    pub const UNFED_POSITIVE_TTL_S: u64 = 30;
    pub fn sidecar_cluster() -> String {
        "tollgate_sidecar".to_string()
    }
    pub fn sidecar_authority() -> String {
        "tollgate-sidecar".to_string()
    }
    pub fn callout_timeout_ms() -> u64 {
        500
    }
    pub fn max_body_bytes() -> u64 {
        1024 * 1024
    }
    pub fn algorithms() -> Vec<String> {
        vec!["HS256".to_string()]
    }
    pub fn clock_skew_s() -> u64 {
        30
    }
    pub fn max_lifetime_s() -> u64 {
        300
    }
    pub fn replay_slots() -> u32 {
        65_536
    }
}

/// A parsed configuration plus warnings worth a log line (never fatal).
#[derive(Debug)]
pub struct Parsed {
    /// The validated configuration.
    pub config: Config,
    /// Things that work but deserve attention (short secrets).
    pub warnings: Vec<String>,
}

/// Parses and validates the plugin configuration JSON, reading `env`
/// references from the process environment.
pub fn parse(json: &[u8]) -> Result<Parsed, ConfigError> {
    parse_with_env(json, &|name| std::env::var(name).ok())
}

/// [`parse`] with an explicit environment (for tests).
pub fn parse_with_env(json: &[u8], env: EnvLookup<'_>) -> Result<Parsed, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let raw: RawConfig = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| err(field_path(e.path()), redact_strings(&e.inner().to_string())))?;
    de.end()
        .map_err(|e| err(".", format!("trailing characters: {e}")))?;
    let mut warnings = Vec::new();

    let header_safe = |s: &str| s.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if raw.sidecar_cluster.is_empty() {
        return Err(err("sidecar_cluster", "must not be empty"));
    }
    if raw.sidecar_authority.is_empty() || !header_safe(&raw.sidecar_authority) {
        return Err(err(
            "sidecar_authority",
            "must be a non-empty host name without spaces or control characters",
        ));
    }
    in_range("callout_timeout_ms", raw.callout_timeout_ms, 1, 60_000)?;
    let internal_token = match raw.internal_token {
        RawText::Inline(text) => text,
        RawText::Env(RawEnv { env: name }) => from_env("internal_token.env", &name, env)?,
    };
    if internal_token.is_empty() || !header_safe(&internal_token) {
        return Err(err(
            "internal_token",
            "must be non-empty visible ASCII (it is sent as a header value)",
        ));
    }
    let replay_slots = raw.jwt.replay_slots;
    let replay_scope = raw.jwt.replay_scope;
    let jwt = validate_jwt(raw.jwt, env, &mut warnings)?;
    in_range("jwt.replay_slots", u64::from(replay_slots), 1, 1 << 24)?;
    in_range(
        "max_body_bytes",
        raw.max_body_bytes,
        0,
        tollgate_wire::MAX_BODY_BYTES,
    )?;

    let kc = raw.key_cache;
    in_range("key_cache.positive_ttl_s", kc.positive_ttl_s, 0, 86_400)?;
    let unfed_ttl_s = kc
        .unfed_positive_ttl_s
        .unwrap_or(kc.positive_ttl_s.min(defaults::UNFED_POSITIVE_TTL_S));
    in_range(
        "key_cache.unfed_positive_ttl_s",
        unfed_ttl_s,
        0,
        kc.positive_ttl_s,
    )
    .map_err(|e| {
        err(
            e.field,
            format!("{} (and at most key_cache.positive_ttl_s)", e.reason),
        )
    })?;
    in_range("key_cache.negative_ttl_s", kc.negative_ttl_s, 0, 86_400)?;
    in_range(
        "key_cache.stale_if_error_s",
        kc.stale_if_error_s,
        0,
        7 * 86_400,
    )?;
    in_range("key_cache.slots", u64::from(kc.slots), 1, 1 << 20)?;

    let kf = raw.key_feed;
    in_range(
        "key_feed.poll_interval_ms",
        kf.poll_interval_ms,
        100,
        60_000,
    )?;
    in_range("key_feed.timeout_ms", kf.timeout_ms, 1, 60_000)?;
    in_range(
        "key_feed.max_lag_ms",
        kf.max_lag_ms,
        kf.poll_interval_ms,
        3_600_000,
    )
    .map_err(|e| {
        err(
            e.field,
            format!("{} (and at least key_feed.poll_interval_ms)", e.reason),
        )
    })?;

    let lim = raw.limits;
    let units_header = lim.units_header.to_ascii_lowercase();
    let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !units_header.is_empty() && !units_header.bytes().all(token_char) || units_header.len() > 128
    {
        return Err(err(
            "limits.units_header",
            "must be an HTTP header name (token characters, at most 128), or empty for none",
        ));
    }
    in_range("limits.grant_timeout_ms", lim.grant_timeout_ms, 1, 60_000)?;

    let u = raw.usage;
    in_range("usage.flush_interval_ms", u.flush_interval_ms, 10, 60_000)?;
    in_range(
        "usage.max_batch",
        u.max_batch as u64,
        1,
        tollgate_wire::MAX_USAGE_BATCH as u64,
    )?;
    in_range("usage.buffer_cap", u.buffer_cap as u64, 1, 10_000_000)?;
    in_range(
        "usage.max_backoff_ms",
        u.max_backoff_ms,
        u.flush_interval_ms,
        3_600_000,
    )
    .map_err(|e| {
        err(
            e.field,
            format!("{} (and at least usage.flush_interval_ms)", e.reason),
        )
    })?;
    in_range("usage.timeout_ms", u.timeout_ms, 1, 60_000)?;
    let llm =
        crate::llm::routes::validate(raw.llm).map_err(|(field, reason)| err(field, reason))?;

    Ok(Parsed {
        config: Config {
            sidecar_cluster: raw.sidecar_cluster,
            sidecar_authority: raw.sidecar_authority,
            callout_timeout_ms: raw.callout_timeout_ms,
            internal_token,
            jwt,
            replay: ReplayPolicy {
                slots: replay_slots,
                scope: replay_scope,
            },
            max_body_bytes: raw.max_body_bytes,
            key_cache: CachePolicy {
                positive_ttl_ms: kc.positive_ttl_s * 1000,
                unfed_positive_ttl_ms: unfed_ttl_s * 1000,
                negative_ttl_ms: kc.negative_ttl_s * 1000,
                stale_if_error_ms: kc.stale_if_error_s * 1000,
                slots: kc.slots,
            },
            key_feed: FeedPolicy {
                enabled: kf.enabled,
                poll_interval_ms: kf.poll_interval_ms,
                timeout_ms: kf.timeout_ms,
                max_lag_ms: kf.max_lag_ms,
            },
            usage: UsagePolicy {
                flush_interval_ms: u.flush_interval_ms,
                max_batch: u.max_batch,
                buffer_cap: u.buffer_cap,
                max_backoff_ms: u.max_backoff_ms,
                timeout_ms: u.timeout_ms,
            },
            limits: LimitsPolicy {
                units_header,
                ratelimit_headers: lim.ratelimit_headers,
                grant_timeout_ms: lim.grant_timeout_ms,
            },
            llm,
        },
        warnings,
    })
}

/// The JSON path of a parse error. A key that is the empty string prints
/// as nothing (`{"": 1}` has the path ``), which would name no field: it
/// is shown quoted, so the error always says where it is.
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                if key.is_empty() {
                    out.push_str("\"\"");
                } else {
                    out.push_str(key);
                }
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    if out.is_empty() {
        ".".to_string()
    } else {
        out
    }
}

/// serde quotes offending string values (`invalid type: string "..."`); a
/// secret given in the wrong shape must not reach the log, so any quoted
/// text in a parse error is replaced.
fn redact_strings(message: &str) -> String {
    match (message.find('"'), message.rfind('"')) {
        (Some(first), Some(last)) if last > first => format!(
            "{}\"<redacted>\"{}",
            message.get(..first).unwrap_or_default(),
            message.get(last + 1..).unwrap_or_default()
        ),
        _ => message.to_string(),
    }
}

fn in_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(err(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ))
    }
}

fn validate_jwt(
    raw: RawJwt,
    env: EnvLookup<'_>,
    warnings: &mut Vec<String>,
) -> Result<JwtPolicy, ConfigError> {
    if raw.secret.is_none() && raw.kid_secrets.is_empty() {
        return Err(err(
            "jwt.secret",
            "set jwt.secret, jwt.kid_secrets, or both",
        ));
    }
    let default_secret = match raw.secret {
        Some(s) => Some(decode_secret("jwt.secret", s, env, warnings)?),
        None => None,
    };
    let mut kid_secrets = BTreeMap::new();
    for (kid, s) in raw.kid_secrets {
        let field = format!("jwt.kid_secrets.{kid}");
        if kid.is_empty() {
            return Err(err("jwt.kid_secrets", "a kid must not be empty"));
        }
        let secret = decode_secret(&field, s, env, warnings)?;
        kid_secrets.insert(kid, secret);
    }
    if raw.algorithms.is_empty() {
        return Err(err(
            "jwt.algorithms",
            "must name at least one of HS256, HS384, HS512",
        ));
    }
    let mut algorithms = Vec::new();
    for (i, name) in raw.algorithms.iter().enumerate() {
        let alg = Algorithm::from_name(name).ok_or_else(|| {
            err(
                format!("jwt.algorithms[{i}]"),
                format!("'{name}' is not one of HS256, HS384, HS512"),
            )
        })?;
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }
    in_range("jwt.clock_skew_s", raw.clock_skew_s, 0, 3_600)?;
    in_range("jwt.max_lifetime_s", raw.max_lifetime_s, 1, 86_400)?;
    for (field, value) in [("jwt.issuer", &raw.issuer), ("jwt.audience", &raw.audience)] {
        if value.as_deref() == Some("") {
            return Err(err(
                field,
                "must not be empty (omit it or use null to skip the check)",
            ));
        }
    }
    Ok(JwtPolicy {
        default_secret,
        kid_secrets,
        algorithms,
        // Both are bounded above, so the conversions are exact.
        clock_skew_s: raw.clock_skew_s as i64,
        max_lifetime_s: raw.max_lifetime_s as i64,
        issuer: raw.issuer,
        audience: raw.audience,
        require_jti: raw.require_jti,
    })
}

fn decode_secret(
    field: &str,
    raw: RawSecret,
    env: EnvLookup<'_>,
    warnings: &mut Vec<String>,
) -> Result<Secret, ConfigError> {
    let bytes = match (raw.text, raw.base64, raw.env) {
        (Some(text), None, None) => text.into_bytes(),
        (None, Some(b64), None) => STANDARD
            .decode(b64.trim())
            .or_else(|_| STANDARD_NO_PAD.decode(b64.trim()))
            .map_err(|_| err(format!("{field}.base64"), "is not valid base64"))?,
        (None, None, Some(name)) => from_env(&format!("{field}.env"), &name, env)?.into_bytes(),
        _ => {
            return Err(err(
                field,
                "give exactly one of \"text\", \"base64\" or \"env\"",
            ))
        }
    };
    if bytes.is_empty() {
        return Err(err(field, "the secret must not be empty"));
    }
    if bytes.len() < RECOMMENDED_SECRET_BYTES {
        warnings.push(format!(
            "{field}: secret is {} bytes; at least {RECOMMENDED_SECRET_BYTES} are recommended",
            bytes.len()
        ));
    }
    Ok(Secret::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> serde_json::Value {
        json!({
            "internal_token": "internal-secret",
            "jwt": {"secret": {"text": "0123456789abcdef0123456789abcdef"}}
        })
    }

    fn parse_value(v: &serde_json::Value) -> Result<Parsed, ConfigError> {
        parse(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn minimal_config_takes_every_default() {
        let p = parse_value(&minimal()).unwrap();
        assert!(p.warnings.is_empty());
        let c = p.config;
        assert_eq!(c.sidecar_cluster, "tollgate_sidecar");
        assert_eq!(c.sidecar_authority, "tollgate-sidecar");
        assert_eq!(c.callout_timeout_ms, 500);
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!(c.jwt.algorithms, vec![Algorithm::Hs256]);
        assert_eq!(c.jwt.clock_skew_s, 30);
        assert_eq!(c.jwt.max_lifetime_s, 300);
        assert_eq!(c.jwt.issuer, None);
        assert_eq!(c.jwt.audience, None);
        assert!(!c.jwt.require_jti);
        assert_eq!(
            c.replay,
            ReplayPolicy {
                slots: 65_536,
                scope: ReplayScope::Instance
            }
        );
        assert_eq!(
            c.key_cache,
            CachePolicy {
                positive_ttl_ms: 300_000,
                unfed_positive_ttl_ms: 30_000,
                negative_ttl_ms: 5_000,
                stale_if_error_ms: 300_000,
                slots: 16384
            }
        );
        assert_eq!(
            c.key_feed,
            FeedPolicy {
                enabled: true,
                poll_interval_ms: 1_000,
                timeout_ms: 1_000,
                max_lag_ms: 5_000,
            }
        );
        assert_eq!(
            c.usage,
            UsagePolicy {
                flush_interval_ms: 1_000,
                max_batch: 500,
                buffer_cap: 100_000,
                max_backoff_ms: 30_000,
                timeout_ms: 5_000
            }
        );
    }

    #[test]
    fn full_config_is_taken_as_given() {
        let v = json!({
            "sidecar_cluster": "sc",
            "sidecar_authority": "sidecar.local",
            "callout_timeout_ms": 250,
            "internal_token": "tok",
            "jwt": {
                "secret": {"base64": "c2VjcmV0"},
                "kid_secrets": {"2024": {"text": "old"}, "2025": {"base64": "bmV3"}},
                "algorithms": ["HS512", "HS256", "HS256"],
                "clock_skew_s": 0,
                "max_lifetime_s": 60,
                "issuer": "me",
                "audience": "tollgate",
                "require_jti": true,
                "replay_slots": 64
            },
            "max_body_bytes": 10,
            "key_cache": {"positive_ttl_s": 1, "negative_ttl_s": 0, "stale_if_error_s": 2, "slots": 8},
            "usage": {"flush_interval_ms": 100, "max_batch": 1000, "buffer_cap": 5, "max_backoff_ms": 100, "timeout_ms": 9}
        });
        let p = parse_value(&v).unwrap();
        assert_eq!(p.warnings.len(), 3, "{:?}", p.warnings);
        let c = p.config;
        assert_eq!(c.jwt.default_secret, Some(Secret::new(b"secret".to_vec())));
        assert_eq!(c.jwt.kid_secrets["2025"], Secret::new(b"new".to_vec()));
        assert_eq!(c.jwt.algorithms, vec![Algorithm::Hs512, Algorithm::Hs256]);
        assert!(c.jwt.require_jti);
        assert_eq!(c.replay.slots, 64);
        assert_eq!(c.key_cache.slots, 8);
        assert_eq!(c.usage.max_batch, 1000);
        assert!(!format!("{c:?}").contains("tok\""));
        assert!(!format!("{c:?}").contains("secret\""));
    }

    #[test]
    fn kid_secrets_alone_are_enough() {
        let v = json!({"internal_token": "t", "jwt": {"kid_secrets": {"a": {"text": "x"}}}});
        assert_eq!(parse_value(&v).unwrap().config.jwt.default_secret, None);
    }

    #[test]
    fn each_invalid_field_is_named() {
        let with = |path: &[&str], value: serde_json::Value| {
            let mut v = minimal();
            let mut cursor = &mut v;
            for (i, p) in path.iter().enumerate() {
                if i + 1 == path.len() {
                    cursor[*p] = value.clone();
                } else {
                    if cursor.get(*p).is_none() {
                        cursor[*p] = json!({});
                    }
                    cursor = &mut cursor[*p];
                }
            }
            v
        };
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (with(&["surprise"], json!(1)), "surprise"),
            (with(&["jwt", "surprise"], json!(1)), "jwt.surprise"),
            (with(&["sidecar_cluster"], json!("")), "sidecar_cluster"),
            (with(&["sidecar_cluster"], json!(5)), "sidecar_cluster"),
            (
                with(&["sidecar_authority"], json!("a b")),
                "sidecar_authority",
            ),
            (
                with(&["callout_timeout_ms"], json!(0)),
                "callout_timeout_ms",
            ),
            (
                with(&["callout_timeout_ms"], json!(-1)),
                "callout_timeout_ms",
            ),
            (with(&["internal_token"], json!("")), "internal_token"),
            (with(&["internal_token"], json!("a\nb")), "internal_token"),
            (with(&["jwt", "secret"], json!({"text": ""})), "jwt.secret"),
            (
                with(&["jwt", "secret"], json!({"text": "a", "base64": "YQ=="})),
                "jwt.secret",
            ),
            (with(&["jwt", "secret"], json!({})), "jwt.secret"),
            (
                with(&["jwt", "secret"], json!({"base64": "!!"})),
                "jwt.secret.base64",
            ),
            (
                with(&["jwt", "secret"], json!({"hex": "00"})),
                "jwt.secret.hex",
            ),
            (
                with(&["jwt", "kid_secrets"], json!({"k": {"text": ""}})),
                "jwt.kid_secrets.k",
            ),
            (
                with(&["jwt", "kid_secrets"], json!({"": {"text": "x"}})),
                "jwt.kid_secrets",
            ),
            (with(&["jwt", "algorithms"], json!([])), "jwt.algorithms"),
            (
                with(&["jwt", "algorithms"], json!(["HS256", "RS256"])),
                "jwt.algorithms[1]",
            ),
            (
                with(&["jwt", "algorithms"], json!(["none"])),
                "jwt.algorithms[0]",
            ),
            (
                with(&["jwt", "clock_skew_s"], json!(100_000)),
                "jwt.clock_skew_s",
            ),
            (
                with(&["jwt", "max_lifetime_s"], json!(0)),
                "jwt.max_lifetime_s",
            ),
            (with(&["jwt", "issuer"], json!("")), "jwt.issuer"),
            (with(&["jwt", "audience"], json!("")), "jwt.audience"),
            (
                with(&["jwt", "require_jti"], json!("yes")),
                "jwt.require_jti",
            ),
            (with(&["jwt", "replay_slots"], json!(0)), "jwt.replay_slots"),
            (
                with(&["jwt", "replay_slots"], json!(16_777_217)),
                "jwt.replay_slots",
            ),
            (
                with(&["jwt", "replay_slots"], json!(-1)),
                "jwt.replay_slots",
            ),
            (
                with(&["max_body_bytes"], json!(2_000_000_000u64)),
                "max_body_bytes",
            ),
            (with(&["key_cache", "slots"], json!(0)), "key_cache.slots"),
            (
                with(&["key_cache", "positive_ttl_s"], json!(100_000)),
                "key_cache.positive_ttl_s",
            ),
            (
                with(&["key_cache", "negative_ttl_s"], json!(100_000)),
                "key_cache.negative_ttl_s",
            ),
            (
                with(&["key_cache", "stale_if_error_s"], json!(1_000_000)),
                "key_cache.stale_if_error_s",
            ),
            (with(&["key_cache", "ttl"], json!(1)), "key_cache.ttl"),
            (
                with(&["usage", "flush_interval_ms"], json!(1)),
                "usage.flush_interval_ms",
            ),
            (with(&["usage", "max_batch"], json!(0)), "usage.max_batch"),
            (
                with(&["usage", "max_batch"], json!(1001)),
                "usage.max_batch",
            ),
            (with(&["usage", "buffer_cap"], json!(0)), "usage.buffer_cap"),
            (
                with(&["usage", "max_backoff_ms"], json!(500)),
                "usage.max_backoff_ms",
            ),
            (with(&["usage", "timeout_ms"], json!(0)), "usage.timeout_ms"),
        ];
        for (value, field) in cases {
            let e = parse_value(&value).unwrap_err();
            assert_eq!(e.field, field, "{value} -> {e}");
            assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn required_fields_are_named() {
        let e = parse_value(&json!({"jwt": {"secret": {"text": "x"}}})).unwrap_err();
        assert!(e.reason.contains("internal_token"), "{e}");
        let e = parse_value(&json!({"internal_token": "t"})).unwrap_err();
        assert!(e.reason.contains("jwt"), "{e}");
        let e = parse_value(&json!({"internal_token": "t", "jwt": {}})).unwrap_err();
        assert_eq!(e.field, "jwt.secret");
    }

    #[test]
    fn not_json_is_refused_without_panicking() {
        for bad in [
            &b""[..],
            b"nope",
            b"[]",
            b"{\"internal_token\":",
            b"{} {}",
            &[0xff, 0xfe],
        ] {
            assert!(parse(bad).is_err());
        }
    }

    /// Found by `fuzz/fuzz_targets/config.rs`: a syntax error right after an
    /// empty key produced an error with an empty field name.
    #[test]
    fn an_empty_key_is_still_a_named_field() {
        let crash = b"{\"\"t\", \"jwt\"\x90: {\"secr\x19z\"\xcb: l_t\"secret\"{z\"\xcb: l_t\"secret\"{\"text\":\xbb\"x\0\0\0\0\"}}}";
        let e = parse(crash).unwrap_err();
        assert_eq!(e.field, "\"\"", "{e}");
        let e = parse(br#"{"internal_token": "t", "": 1}"#).unwrap_err();
        assert_eq!(e.field, "\"\"", "{e}");
        let e = parse(br#"{"internal_token": "t", "jwt": {"": 1}}"#).unwrap_err();
        assert_eq!(e.field, "jwt.\"\"", "{e}");
        let e =
            parse(br#"{"internal_token": "t", "jwt": {"algorithms": ["HS256", 7]}}"#).unwrap_err();
        assert_eq!(e.field, "jwt.algorithms[1]", "{e}");
    }

    #[test]
    fn errors_never_echo_secrets() {
        let v =
            json!({"internal_token": "t", "jwt": {"secret": {"base64": "not base64 SECRETVALUE"}}});
        let e = parse_value(&v).unwrap_err();
        assert!(!e.to_string().contains("SECRETVALUE"), "{e}");
    }

    #[test]
    fn wrongly_shaped_secrets_are_not_echoed() {
        for v in [
            json!({"internal_token": "t", "jwt": {"secret": "SECRETVALUE"}}),
            json!({"internal_token": "t", "jwt": {"secret": {"text": "x"}, "kid_secrets": {"k": "SECRETVALUE"}}}),
            json!({"internal_token": {"value": "SECRETVALUE"}, "jwt": {"secret": {"text": "x"}}}),
        ] {
            let e = parse_value(&v).unwrap_err();
            assert!(!e.to_string().contains("SECRETVALUE"), "{e}");
        }
    }

    #[test]
    fn secrets_and_the_internal_token_can_come_from_the_environment() {
        let env = |name: &str| match name {
            "TOKEN" => Some("from-env-token".to_string()),
            "SECRET" => Some("x".repeat(40)),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let v = json!({
            "internal_token": {"env": "TOKEN"},
            "jwt": {"secret": {"env": "SECRET"}, "kid_secrets": {"k": {"env": "SECRET"}}}
        });
        let c = parse_with_env(&serde_json::to_vec(&v).unwrap(), &env)
            .unwrap()
            .config;
        assert_eq!(c.internal_token, "from-env-token");
        assert_eq!(c.jwt.default_secret, Some(Secret::new(vec![b'x'; 40])));
        assert_eq!(c.jwt.kid_secrets["k"], Secret::new(vec![b'x'; 40]));

        let field = |v: serde_json::Value| {
            parse_with_env(&serde_json::to_vec(&v).unwrap(), &env)
                .unwrap_err()
                .field
        };
        let ok_jwt = json!({"secret": {"text": "s"}});
        assert_eq!(
            field(json!({"internal_token": {"env": "MISSING"}, "jwt": ok_jwt})),
            "internal_token.env"
        );
        assert_eq!(
            field(json!({"internal_token": {"env": "EMPTY"}, "jwt": ok_jwt})),
            "internal_token.env"
        );
        assert_eq!(
            field(json!({"internal_token": {"env": "TOKEN", "x": 1}, "jwt": ok_jwt})),
            "internal_token"
        );
        assert_eq!(
            field(json!({"internal_token": "t", "jwt": {"secret": {"env": "MISSING"}}})),
            "jwt.secret.env"
        );
        assert_eq!(
            field(
                json!({"internal_token": "t", "jwt": {"secret": {"env": "SECRET", "text": "a"}}})
            ),
            "jwt.secret"
        );
    }

    #[test]
    fn short_secrets_warn_without_echoing_them() {
        let v = json!({"internal_token": "t", "jwt": {"secret": {"text": "shortsecret"}}});
        let p = parse_value(&v).unwrap();
        assert_eq!(p.warnings.len(), 1);
        assert!(!p.warnings[0].contains("shortsecret"));
    }
}
