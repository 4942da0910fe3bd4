//! API keys as the sidecar knows them: what a registered key is (its stored
//! status, and what it is at an instant: active, revoked or expired), the
//! verdict the filter is given, how a key is shown, and the rules a key and
//! its name follow.
//!
//! A key is `tg_` followed by 40 random lowercase hex digits (160 bits). Only
//! its SHA-256 is stored; the plaintext is shown once, at creation. A key may
//! have its own signing secret ([`SigningSecret`]): shown once too, stored
//! only sealed ([`super::sealed`]).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tollgate_wire::{KeyVerdict, Limits};

use super::clock::format_rfc3339;
use super::random::random_hex;
use super::sealed::SealedSecret;
use super::signing_secret::SigningSecret;

/// Stored state of a key (the `status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Revoked,
}

impl KeyStatus {
    /// The column value: `ACTIVE` or `REVOKED`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "ACTIVE",
            KeyStatus::Revoked => "REVOKED",
        }
    }

    /// The status a column value names, if any.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ACTIVE" => Some(KeyStatus::Active),
            "REVOKED" => Some(KeyStatus::Revoked),
            _ => None,
        }
    }
}

/// A registered key, without its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub status: KeyStatus,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub expires_at: Option<OffsetDateTime>,
    /// The key's own signing secret, sealed; `None` for a key whose tokens
    /// are signed with the shared secret.
    pub sealed_signing_secret: Option<SealedSecret>,
    /// Its rate and quotas (none by default).
    pub limits: Limits,
    /// The team it belongs to, if any ([`super::teams`]).
    pub team_id: Option<i64>,
}

/// A key to register: only its hash, never the plaintext.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub prefix: String,
    /// Lowercase hex SHA-256 of the key.
    pub key_hash: String,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    /// Its signing secret, sealed for this `key_hash`; never the secret itself.
    pub sealed_signing_secret: Option<SealedSecret>,
    /// Its rate and quotas.
    pub limits: Limits,
    /// The team it joins, if any.
    pub team_id: Option<i64>,
}

impl NewKey {
    /// The key as registered with `id`: active, never revoked.
    pub fn registered(&self, id: i64) -> ApiKey {
        ApiKey {
            id,
            name: self.name.clone(),
            prefix: self.prefix.clone(),
            status: KeyStatus::Active,
            created_at: self.created_at,
            revoked_at: None,
            expires_at: self.expires_at,
            sealed_signing_secret: self.sealed_signing_secret.clone(),
            limits: self.limits.clone(),
            team_id: self.team_id,
        }
    }
}

/// Every minted key starts with this.
pub const KEY_PREFIX: &str = tollgate_wire::MINTED_KEY_PREFIX;

/// Random bytes in a minted key (160 bits).
pub const KEY_RANDOM_BYTES: usize = tollgate_wire::MINTED_KEY_RANDOM_BYTES;

/// Characters of a key shown to people (`tg_3f9a1c`).
pub const DISPLAY_PREFIX_CHARS: usize = 9;

/// Longest key name accepted.
pub const MAX_NAME_CHARS: usize = 200;

/// Longest imported key accepted.
pub const MAX_IMPORTED_KEY_CHARS: usize = tollgate_wire::MAX_KEY_LEN;

/// A fresh plaintext key: `tg_` and 40 random lowercase hex digits.
pub fn generate_key() -> Result<String, String> {
    Ok(format!("{KEY_PREFIX}{}", random_hex(KEY_RANDOM_BYTES)?))
}

/// The part of a key shown to people: its first nine characters, or fewer.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(DISPLAY_PREFIX_CHARS).collect()
}

/// Checks a key name by the rule of every name ([`super::names`]): not
/// blank, not too long, no control, format or bidi character.
pub fn validate_name(name: &str) -> Result<String, String> {
    super::names::validate_name("key", name, MAX_NAME_CHARS)
}

/// Checks a key brought in from elsewhere. The key is never echoed in the error.
pub fn validate_imported_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key must not be empty".into());
    }
    if key.chars().any(|c| c.is_control()) {
        return Err("the key must not contain control characters".into());
    }
    if key.trim() != key {
        return Err("the key must not start or end with whitespace".into());
    }
    if key.chars().count() > MAX_IMPORTED_KEY_CHARS {
        return Err(format!(
            "the key is longer than {MAX_IMPORTED_KEY_CHARS} characters"
        ));
    }
    // The filter refuses any other key before it asks (wire::api_key).
    match tollgate_wire::key_format_error(key.as_bytes()) {
        Some(why) => Err(format!("the key cannot be used: {why}")),
        None => Ok(()),
    }
}

/// Whether a key that expires at `expires_at` has expired at `now`: from
/// that instant on it no longer works. The one rule behind the verdict, the
/// status shown, and the refusal to create a key already expired.
pub fn has_expired(expires_at: Option<OffsetDateTime>, now: OffsetDateTime) -> bool {
    expires_at.is_some_and(|at| at <= now)
}

/// What a registered key is at a given instant. Only `ACTIVE` and `REVOKED`
/// are stored; `EXPIRED` follows from `expires_at` and the time of reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    Revoked,
    /// Not revoked, and past its `expires_at`.
    Expired,
}

impl KeyState {
    /// The state of `key` at `now`: a revoked key stays revoked, an active
    /// one is expired once [`has_expired`].
    pub fn of(key: &ApiKey, now: OffsetDateTime) -> KeyState {
        match key.status {
            KeyStatus::Revoked => KeyState::Revoked,
            KeyStatus::Active if has_expired(key.expires_at, now) => KeyState::Expired,
            KeyStatus::Active => KeyState::Active,
        }
    }

    /// The status people see: `ACTIVE`, `REVOKED` or `EXPIRED`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => KeyStatus::Active.as_str(),
            KeyState::Revoked => KeyStatus::Revoked.as_str(),
            KeyState::Expired => "EXPIRED",
        }
    }

    /// The verdict the filter is given for a key in this state.
    pub fn verdict(self) -> KeyVerdict {
        match self {
            KeyState::Active => KeyVerdict::Active,
            KeyState::Revoked => KeyVerdict::Revoked,
            KeyState::Expired => KeyVerdict::Expired,
        }
    }
}

/// The verdict the registry gives a key at `now`.
pub fn verdict_of(key: Option<&ApiKey>, now: OffsetDateTime) -> KeyVerdict {
    key.map_or(KeyVerdict::NotFound, |k| KeyState::of(k, now).verdict())
}

/// A key as the admin API and `keys list --json` show it (never its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    /// `ACTIVE`, `REVOKED` or `EXPIRED` ([`KeyState`]) when the key was read;
    /// the stored status of an expired key is still `ACTIVE`.
    pub status: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub expires_at: Option<String>,
    /// Whether the key has its own signing secret (the secret itself is
    /// shown only once, at creation).
    pub has_signing_secret: bool,
    /// Its rate and quotas (`tollgate_wire::limits`).
    pub limits: Limits,
    /// The team it belongs to (`null`: none).
    #[serde(default)]
    pub team_id: Option<i64>,
}

impl KeyView {
    /// `key` as shown at `now`.
    pub fn at(key: &ApiKey, now: OffsetDateTime) -> Self {
        KeyView {
            id: key.id,
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            status: KeyState::of(key, now).as_str().to_string(),
            created_at: format_rfc3339(key.created_at),
            revoked_at: key.revoked_at.map(format_rfc3339),
            expires_at: key.expires_at.map(format_rfc3339),
            has_signing_secret: key.sealed_signing_secret.is_some(),
            limits: key.limits.clone(),
            team_id: key.team_id,
        }
    }
}

/// A newly registered key with its plaintext (and its signing secret, if
/// it has one): shown once, never again. `Debug` shows neither.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub view: KeyView,
    /// The plaintext key.
    pub key: String,
    /// The key's own HMAC secret for its tokens, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<SigningSecret>,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("view", &self.view)
            .field("key", &format!("<{} chars>", self.key.chars().count()))
            .field("signing_secret", &self.signing_secret)
            .finish()
    }
}

/// Checks the expiry of a key created at `now`: a key that would be expired
/// the moment it exists is refused.
pub fn validate_expires_at(
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<(), String> {
    match expires_at {
        Some(at) if has_expired(Some(at), now) => Err(format!(
            "expires_at {} is not in the future (now is {}): a key cannot be created already expired",
            format_rfc3339(at),
            format_rfc3339(now)
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn generated_keys_are_prefixed_random_hex() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), KEY_PREFIX.len() + 2 * KEY_RANDOM_BYTES);
        assert!(a.starts_with("tg_"));
        assert!(a[3..]
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(display_prefix(&a), a[..9]);
        assert!(validate_imported_key(&a).is_ok());
    }

    #[test]
    fn display_prefix_takes_nine_chars_or_fewer() {
        assert_eq!(display_prefix("tg_3f9a1c0000"), "tg_3f9a1c");
        assert_eq!(display_prefix("short"), "short");
        assert_eq!(display_prefix("ключ-ключ-ключ"), "ключ-ключ");
    }

    #[test]
    fn imported_keys_are_checked() {
        assert!(validate_imported_key("").is_err());
        assert!(validate_imported_key("abc\ndef").is_err());
        assert!(validate_imported_key(" abc").is_err());
        assert!(validate_imported_key(&"k".repeat(MAX_IMPORTED_KEY_CHARS + 1)).is_err());
        assert!(validate_imported_key("legacy-key-123").is_ok());
        assert!(validate_imported_key("short").is_err());
        assert!(validate_imported_key("tg_abc").is_err());
        assert!(validate_imported_key("caf\u{e9}-caf\u{e9}").is_err());
        assert!(validate_name("  ").is_err());
        assert_eq!(validate_name(" demo ").unwrap(), "demo");
    }

    fn active_key(created_at: OffsetDateTime) -> ApiKey {
        ApiKey {
            id: 1,
            name: "k".into(),
            prefix: "tg_000000".into(),
            status: KeyStatus::Active,
            created_at,
            revoked_at: None,
            expires_at: None,
            sealed_signing_secret: None,
            limits: Default::default(),
            team_id: None,
        }
    }

    #[test]
    fn verdicts_follow_status_and_expiry() {
        let now = datetime!(2025-11-24 12:00:00 UTC);
        let mut key = active_key(now);
        assert_eq!(verdict_of(None, now), KeyVerdict::NotFound);
        assert_eq!(verdict_of(Some(&key), now), KeyVerdict::Active);
        key.expires_at = Some(now);
        assert_eq!(verdict_of(Some(&key), now), KeyVerdict::Expired);
        key.expires_at = Some(datetime!(2025-11-24 12:00:01 UTC));
        assert_eq!(verdict_of(Some(&key), now), KeyVerdict::Active);
        key.status = KeyStatus::Revoked;
        key.expires_at = Some(now);
        assert_eq!(verdict_of(Some(&key), now), KeyVerdict::Revoked);
    }

    #[test]
    fn the_status_shown_follows_the_verdict() {
        let now = datetime!(2025-11-24 12:00:00 UTC);
        let mut key = ApiKey {
            expires_at: Some(datetime!(2025-11-24 12:00:01 UTC)),
            ..active_key(now)
        };
        let shown = |key: &ApiKey, now| KeyView::at(key, now).status;
        assert_eq!(shown(&key, now), "ACTIVE");
        let later = datetime!(2025-11-24 12:00:01 UTC);
        assert_eq!(shown(&key, later), "EXPIRED");
        assert_eq!(verdict_of(Some(&key), later), KeyVerdict::Expired);
        key.status = KeyStatus::Revoked;
        assert_eq!(shown(&key, later), "REVOKED");
    }

    #[test]
    fn a_key_must_expire_after_it_is_created() {
        let now = datetime!(2025-11-24 12:00:00 UTC);
        assert!(validate_expires_at(None, now).is_ok());
        assert!(validate_expires_at(Some(datetime!(2025-11-24 12:00:00.001 UTC)), now).is_ok());
        let at_now = validate_expires_at(Some(now), now).unwrap_err();
        assert!(at_now.contains("2025-11-24T12:00:00.000Z"), "{at_now}");
        assert!(validate_expires_at(Some(datetime!(2020-01-01 00:00 UTC)), now).is_err());
    }
}
