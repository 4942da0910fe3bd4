//! The plugin configuration parser on arbitrary bytes: it must answer every
//! input with a `Config` or a `ConfigError` naming a field, never panic, and
//! never echo a secret in an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_filter::config;

/// Appears only as an environment value: an error must never contain it.
const ENV_SECRET: &str = "ENVSECRET-0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let env = |name: &str| match name {
        "E" | "TOLLGATE_JWT_SECRET" | "TOLLGATE_INTERNAL_TOKEN" => Some(ENV_SECRET.to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    match config::parse_with_env(data, &env) {
        Ok(parsed) => {
            let c = parsed.config;
            assert!(!c.sidecar_cluster.is_empty());
            assert!(!c.internal_token.is_empty());
            assert!(!c.jwt.algorithms.is_empty());
            assert!(c.jwt.default_secret.is_some() || !c.jwt.kid_secrets.is_empty());
            assert!((1..=86_400).contains(&c.jwt.max_lifetime_s));
            assert!((0..=3_600).contains(&c.jwt.clock_skew_s));
            assert!(c.replay.slots >= 1);
            assert!(!format!("{c:?}").contains(ENV_SECRET));
        }
        Err(e) => {
            assert!(!e.field.is_empty());
            assert!(!e.reason.is_empty());
            assert!(!e.to_string().contains(ENV_SECRET));
        }
    }
});
