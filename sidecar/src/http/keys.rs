//! The key registry: minting, importing, verifying and revoking API keys, over
//! HTTP (internal verification, admin API) and for the CLI.
//!
//! A key is `tg_` followed by 40 random lowercase hex digits (160 bits). Only
//! its SHA-256 is stored; the plaintext is shown once, at creation. A key may
//! have its own signing secret ([`SigningSecret`]): shown once too, stored
//! only sealed ([`crate::domain::sealed`]), and handed to the filter with an
//! `active` verdict.

use axum::routing::post;
use axum::Router;
use std::time::Instant;
use tollgate_wire::VERIFY_PATH;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tollgate_wire::{
    is_lower_hex_digest, key_hash_hex, KeyVerdict, Limits, VerifyReply, VerifyRequest,
};

use crate::domain::clock::{format_rfc3339, now_ms, parse_rfc3339, truncate_to_ms};
use crate::domain::random::random_hex;
use crate::domain::sealed::{Keyring, SealError};
use crate::domain::signing_secret::SigningSecret;
use crate::http::error::{ApiError, Undone};
use crate::http::extract::{AdminCaller, InternalCaller, JsonBody};
use crate::http::AppState;
use crate::store::{ApiKey, KeyStatus, NewKey, Revocation, Store, StoreError};

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

/// Checks a key name by the rule of every name ([`crate::domain::names`]): not
/// blank, not too long, no control, format or bidi character.
pub fn validate_name(name: &str) -> Result<String, String> {
    crate::domain::names::validate_name("key", name, MAX_NAME_CHARS)
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
    /// Its rate and quotas (`crate::http::limits`).
    pub limits: Limits,
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

/// Why a key could not be registered.
#[derive(Debug)]
pub enum RegisterError {
    /// Bad input, with the field at fault.
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A signing secret was asked for, but no master key is configured to
    /// seal it; nothing was stored.
    MasterKeyMissing,
    /// Minting or sealing the signing secret failed; nothing was stored.
    Seal(SealError),
    /// The store failed (including a duplicate key).
    Store(StoreError),
}

impl From<RegisterError> for ApiError {
    fn from(e: RegisterError) -> Self {
        match e {
            RegisterError::Invalid { field, message } => ApiError::invalid_field(field, message),
            RegisterError::MasterKeyMissing => ApiError::MasterKeyMissing,
            RegisterError::Seal(cause) => ApiError::SealFailed(cause),
            RegisterError::Store(e) => ApiError::storing(e),
        }
    }
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterError::Invalid { message, .. } => f.write_str(message),
            RegisterError::MasterKeyMissing => ApiError::MasterKeyMissing.fmt(f),
            RegisterError::Seal(cause) => write!(f, "cannot seal the signing secret: {cause}"),
            RegisterError::Store(e) => e.fmt(f),
        }
    }
}

/// Registers `key` (fresh or imported) under `name`, storing only its hash.
pub async fn register_key(
    store: &Store,
    name: &str,
    key: String,
    expires_at: Option<OffsetDateTime>,
) -> Result<CreatedKey, RegisterError> {
    register(store, name, key, expires_at, None, Limits::default()).await
}

/// Registers `key`; with `signing_secret`, mints the key a signing secret
/// and stores it sealed under that keyring's current master key. Everything
/// is checked, and the secret sealed, before anything is stored.
async fn register(
    store: &Store,
    name: &str,
    key: String,
    expires_at: Option<OffsetDateTime>,
    signing_secret: Option<&Keyring>,
    limits: Limits,
) -> Result<CreatedKey, RegisterError> {
    let name = validate_name(name).map_err(|message| RegisterError::Invalid {
        field: "name",
        message,
    })?;
    validate_imported_key(&key).map_err(|message| RegisterError::Invalid {
        field: "key",
        message,
    })?;
    let created_at = now_ms();
    let expires_at = expires_at.map(truncate_to_ms);
    validate_expires_at(expires_at, created_at).map_err(|message| RegisterError::Invalid {
        field: "expires_at",
        message,
    })?;
    let key_hash = key_hash_hex(key.as_bytes());
    let (secret, sealed) = match signing_secret {
        None => (None, None),
        Some(keyring) => {
            let (secret, sealed) = mint_sealed_secret(keyring, &key_hash)?;
            (Some(secret), Some(sealed))
        }
    };
    let new = NewKey {
        name,
        prefix: display_prefix(&key),
        key_hash,
        created_at,
        expires_at,
        sealed_signing_secret: sealed,
        limits,
    };
    let stored = store.insert_key(&new).await.map_err(RegisterError::Store)?;
    Ok(CreatedKey {
        view: KeyView::at(&stored, created_at),
        key,
        signing_secret: secret,
    })
}

/// A fresh signing secret for the key hashed `key_hash`, and its sealed form.
fn mint_sealed_secret(
    keyring: &Keyring,
    key_hash: &str,
) -> Result<(SigningSecret, crate::domain::sealed::SealedSecret), RegisterError> {
    if keyring.current().is_none() {
        return Err(RegisterError::MasterKeyMissing);
    }
    let secret =
        SigningSecret::generate().map_err(|e| RegisterError::Seal(SealError::Random(e)))?;
    let sealed = keyring
        .seal(&secret, key_hash)
        .map_err(RegisterError::Seal)?;
    Ok((secret, sealed))
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

/// Mints a fresh key and registers it with its `limits`; with
/// `signing_secret`, with a signing secret of its own sealed under that
/// keyring (see [`register`]).
pub async fn create_key(
    store: &Store,
    name: &str,
    expires_at: Option<OffsetDateTime>,
    signing_secret: Option<&Keyring>,
    limits: Limits,
) -> Result<CreatedKey, RegisterError> {
    let key = generate_key().map_err(|message| RegisterError::Invalid {
        field: "key",
        message,
    })?;
    register(store, name, key, expires_at, signing_secret, limits).await
}

/// `POST /v1/internal/keys/verify`: the verdict on a key hash. It reads
/// and charges nothing: the filter asks for a key's grants only with a
/// request that passed the signature check this reply makes possible.
pub async fn verify(
    _caller: InternalCaller,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<VerifyRequest>,
) -> Result<Json<VerifyReply>, ApiError> {
    if !is_lower_hex_digest(&request.key_hash) {
        return Err(ApiError::invalid_field(
            "key_hash",
            "key_hash must be the lowercase hex SHA-256 of the key (64 characters)",
        ));
    }
    let started = Instant::now();
    let key = state.store.key_by_hash(&request.key_hash).await;
    state.metrics.observe_verify(started.elapsed());
    let lookup = key.map_err(ApiError::reading(Undone::VerifyKey))?;
    let key = lookup.key;
    let verdict = verdict_of(key.as_ref(), OffsetDateTime::now_utc());
    let signing_secret = match &key {
        Some(key) => secret_to_hand_over(key, verdict, &request.key_hash, &state.keyring)?,
        None => None,
    };
    Ok(Json(VerifyReply {
        verdict,
        key_id: key.as_ref().map(|k| k.id),
        expires_at: key
            .as_ref()
            .and_then(|k| k.expires_at)
            .map(OffsetDateTime::unix_timestamp),
        signing_secret: signing_secret.map(SigningSecret::into_exposed),
        feed_cursor: Some(lookup.feed_seq),
        limits: key
            .as_ref()
            .map(|k| k.limits.clone())
            .filter(|l| !l.is_empty()),
    }))
}

/// The signing secret a verify reply carries: the key's own, opened, for
/// any registered key that has one (revoked and expired ones too: the
/// filter checks a token's signature before the key's state, so a revoked
/// key's own token is answered `revoked_api_key`, and a forged one
/// `invalid_signature`, as for keys on the shared secret).
///
/// For an active key, a secret that does not open is an error, never "no
/// secret": a key without one accepts shared-secret tokens. A key that is
/// refused anyway is answered without it (its requests are denied either
/// way; only the code may then be `invalid_signature`).
pub fn secret_to_hand_over(
    key: &ApiKey,
    verdict: KeyVerdict,
    key_hash: &str,
    keyring: &Keyring,
) -> Result<Option<SigningSecret>, ApiError> {
    let Some(sealed) = &key.sealed_signing_secret else {
        return Ok(None);
    };
    match (keyring.open(sealed, key_hash), verdict) {
        (Ok(_), KeyVerdict::NotFound) => Ok(None),
        (Ok(secret), _) => Ok(Some(secret)),
        (Err(cause), KeyVerdict::Active) => Err(ApiError::SigningSecretUnreadable {
            key_id: key.id,
            cause,
        }),
        (Err(_), _) => Ok(None),
    }
}

/// Body of `POST /v1/keys`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    pub name: String,
    /// RFC 3339; absent or null for a key that never expires.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// True: the key gets its own signing secret, answered once.
    #[serde(default)]
    pub signing_secret: bool,
    /// The key's rate (`10/s`, `600/min`), burst and quotas
    /// (`requests=1000/day`), spelled as the CLI's flags.
    #[serde(default)]
    pub rate: Option<String>,
    #[serde(default)]
    pub burst: Option<u64>,
    #[serde(default)]
    pub quotas: Vec<String>,
}

/// `POST /v1/keys`: mints a key; the reply carries the plaintext, once.
pub async fn create(
    _caller: AdminCaller,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<CreateKeyRequest>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let expires_at = request
        .expires_at
        .as_deref()
        .map(parse_rfc3339)
        .transpose()
        .map_err(|message| ApiError::invalid_field("expires_at", message))?;
    let keyring = request.signing_secret.then_some(&*state.keyring);
    let limits =
        crate::http::limits::parse(request.rate.as_deref(), request.burst, &request.quotas)?;
    let created = create_key(&state.store, &request.name, expires_at, keyring, limits).await?;
    tracing::info!(
        key_id = created.view.id,
        prefix = %created.view.prefix,
        signing_secret = created.view.has_signing_secret,
        "key created"
    );
    Ok((StatusCode::CREATED, Json(created)))
}

/// Reply of `GET /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// `GET /v1/keys`: every key, oldest first.
pub async fn list(
    _caller: AdminCaller,
    State(state): State<AppState>,
) -> Result<Json<KeyList>, ApiError> {
    let keys = state
        .store
        .list_keys()
        .await
        .map_err(ApiError::reading(Undone::ReadKeys))?;
    let now = OffsetDateTime::now_utc();
    Ok(Json(KeyList {
        keys: keys.iter().map(|k| KeyView::at(k, now)).collect(),
    }))
}

/// Reply of `POST /v1/keys/{id}/revoke`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeReply {
    pub key: KeyView,
    /// True when the key had been revoked before this call.
    pub already_revoked: bool,
}

/// `POST /v1/keys/{id}/revoke`: revokes a key; revoking twice is not an error.
pub async fn revoke(
    _caller: AdminCaller,
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<RevokeReply>, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::invalid_field("id", "the key id must be an integer"))?;
    let now = now_ms();
    let revocation = state
        .store
        .revoke_key(id, now)
        .await
        .map_err(ApiError::storing)?;
    match revocation {
        Revocation::Revoked(key) => {
            tracing::info!(key_id = key.id, "key revoked");
            Ok(Json(RevokeReply {
                key: KeyView::at(&key, now),
                already_revoked: false,
            }))
        }
        Revocation::AlreadyRevoked(key) => Ok(Json(RevokeReply {
            key: KeyView::at(&key, now),
            already_revoked: true,
        })),
        Revocation::NotFound => Err(ApiError::KeyNotFound(id)),
    }
}

/// The filter's verify call (internal token).
pub fn router() -> Router<AppState> {
    Router::new().route(VERIFY_PATH, post(verify))
}

/// Creating, listing and revoking keys (admin token).
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/v1/keys", post(create).get(list))
        .route("/v1/keys/{id}/revoke", post(revoke))
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
