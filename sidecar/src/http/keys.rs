//! The key registry over HTTP: the filter's verification (internal token)
//! and the admin API's creating, listing and revoking. What a key is and
//! its rules are [`crate::domain::keys`]; registering one is
//! [`crate::store::registry`]. A key's own signing secret
//! ([`SigningSecret`]) is handed to the filter with an `active` verdict.

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
use tollgate_wire::{is_lower_hex_digest, KeyVerdict, VerifyReply, VerifyRequest};

use crate::domain::clock::{now_ms, parse_rfc3339};
use crate::domain::keys::{verdict_of, CreatedKey, KeyView};
use crate::domain::price::Price;
use crate::domain::sealed::Keyring;
use crate::domain::signing_secret::SigningSecret;
use crate::http::error::{ApiError, Undone};
use crate::http::extract::{AdminCaller, InternalCaller, JsonBody};
use crate::http::AppState;
use crate::store::registry::{create_key, RegisterError};
use crate::store::{ApiKey, Revocation};

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
    let limits = key
        .as_ref()
        .map(|k| k.limits.clone())
        .filter(|l| !l.is_empty());
    let team_limits = key
        .as_ref()
        .and_then(|k| k.team_id)
        .map(|_| lookup.team_limits)
        .filter(|l| !l.is_empty());
    // A key with a money quota, its own or its team's, is priced by the
    // filter: the reply carries the price table (docs/LIMITS.md).
    let priced = [&limits, &team_limits]
        .into_iter()
        .flatten()
        .any(|l| l.quotas.iter().any(|q| q.kind.counts_money()));
    let prices = if priced {
        let listed = state.store.list_prices().await;
        let listed = listed.map_err(ApiError::reading(Undone::VerifyKey))?;
        let now = crate::domain::clock::to_unix_ms(OffsetDateTime::now_utc());
        Some(in_effect_from(listed, now))
    } else {
        None
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
        limits,
        team_id: key.as_ref().and_then(|k| k.team_id),
        team_limits,
        prices,
    }))
}

/// Of every version of every price (by model, then oldest first), those a
/// call from `now_ms` on can be priced at: each model's version in effect
/// now, and the later ones.
fn in_effect_from(prices: Vec<Price>, now_ms: u64) -> Vec<Price> {
    let mut kept: Vec<Price> = Vec::with_capacity(prices.len());
    for price in prices {
        let superseded = kept.last().is_some_and(|last| {
            last.model == price.model && last.from_ms <= now_ms && price.from_ms <= now_ms
        });
        if superseded {
            kept.pop();
        }
        kept.push(price);
    }
    kept
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
    /// The team the key joins (no such team: 400 naming `team_id`).
    #[serde(default)]
    pub team_id: Option<i64>,
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
    let created = create_key(
        &state.store,
        &request.name,
        expires_at,
        keyring,
        limits,
        request.team_id,
    )
    .await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::price::{Currency, Per};

    #[test]
    fn a_verify_reply_carries_each_models_price_in_effect_and_the_later_ones() {
        let price = |model: &str, from_ms| Price {
            model: model.into(),
            from_ms,
            currency: Currency::Usd,
            per: Per::Million,
            input_micros: from_ms,
            cached_input_micros: from_ms,
            output_micros: from_ms,
        };
        let listed = vec![
            price("a", 1),
            price("a", 5),
            price("a", 10),
            price("a", 20),
            price("b", 30),
        ];
        let kept: Vec<(String, u64)> = in_effect_from(listed, 10)
            .into_iter()
            .map(|p| (p.model, p.from_ms))
            .collect();
        assert_eq!(
            kept,
            [("a".into(), 10), ("a".into(), 20), ("b".into(), 30)],
            "a's past versions go, its current and later stay, b's later one stays"
        );
    }
}
