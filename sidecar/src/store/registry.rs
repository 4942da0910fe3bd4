//! Registering a key: its name, the key itself and its expiry checked, a
//! signing secret minted and sealed when one is asked for, all before
//! anything is stored; then the key stored by its hash only. The admin API
//! and the CLI both register keys here.

use time::OffsetDateTime;
use tollgate_wire::{key_hash_hex, Limits};

use super::{NewKey, Store, StoreError};
use crate::domain::clock::{now_ms, truncate_to_ms};
use crate::domain::keys::{
    display_prefix, generate_key, validate_expires_at, validate_imported_key, validate_name,
    CreatedKey, KeyView,
};
use crate::domain::sealed::{Keyring, SealError, SealedSecret, MASTER_KEY_ENV};
use crate::domain::signing_secret::SigningSecret;

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

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterError::Invalid { message, .. } => f.write_str(message),
            RegisterError::MasterKeyMissing => write!(
                f,
                "a signing secret needs a master key to seal it, and none is configured: \
                 set {MASTER_KEY_ENV} (64 hex digits); nothing was stored"
            ),
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
    register(store, name, key, expires_at, None, Limits::default(), None).await
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
    team_id: Option<i64>,
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
    let fault = super::prices::money_quota_fault(store, &limits).await;
    if let Some(message) = fault.map_err(RegisterError::Store)? {
        return Err(RegisterError::Invalid {
            field: "quota",
            message,
        });
    }
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
        team_id,
    };
    let stored = store.insert_key(&new).await.map_err(|e| match e {
        StoreError::Unavailable(e) if super::teams::is_foreign_key_violation(&e) => {
            RegisterError::Invalid {
                field: "team_id",
                message: format!("no team has id {}", team_id.unwrap_or_default()),
            }
        }
        e => RegisterError::Store(e),
    })?;
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
) -> Result<(SigningSecret, SealedSecret), RegisterError> {
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

/// Mints a fresh key and registers it with its `limits`, in team
/// `team_id` if one is given (no such team: refused naming `team_id`,
/// nothing stored); with `signing_secret`, with a signing secret of its
/// own sealed under that keyring (see [`register`]).
pub async fn create_key(
    store: &Store,
    name: &str,
    expires_at: Option<OffsetDateTime>,
    signing_secret: Option<&Keyring>,
    limits: Limits,
    team_id: Option<i64>,
) -> Result<CreatedKey, RegisterError> {
    let key = generate_key().map_err(|message| RegisterError::Invalid {
        field: "key",
        message,
    })?;
    register(
        store,
        name,
        key,
        expires_at,
        signing_secret,
        limits,
        team_id,
    )
    .await
}
