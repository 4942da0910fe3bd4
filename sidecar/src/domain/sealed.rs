//! Signing secrets at rest: sealed with AES-256-GCM under the sidecar's
//! master key (`TOLLGATE_MASTER_KEY`), bound to their key's row, and stored
//! as a short versioned text that names the master key that sealed them.
//!
//! The stored form is `v1:<master key id>:<nonce>:<ciphertext and tag>`:
//! the id is the first 8 bytes of the SHA-256 of the master key (16 hex
//! digits), nonce and ciphertext are unpadded base64url. Each seal draws a
//! fresh 96-bit nonce. The associated data is the format version and the
//! key's hash, so a sealed secret copied to another key's row does not open.
//! A [`Keyring`] holds the current master key and any previous ones (during
//! a rotation) and opens each value with the master key its id names.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use tollgate_wire::{sha256, to_hex};

use crate::domain::random::random_bytes;
use crate::domain::signing_secret::SigningSecret;

/// The environment variable holding the current master key.
pub const MASTER_KEY_ENV: &str = "TOLLGATE_MASTER_KEY";

/// The environment variable holding previous master keys (comma-separated),
/// still accepted for opening while a rotation is under way.
pub const PREVIOUS_MASTER_KEY_ENV: &str = "TOLLGATE_PREVIOUS_MASTER_KEY";

/// Bytes of a master key (AES-256); its text is twice as many hex digits.
pub const MASTER_KEY_BYTES: usize = 32;

/// Bytes of the SHA-256 of a master key that name it in a sealed value.
pub const MASTER_KEY_ID_BYTES: usize = 8;

/// The version of the stored form, and of the associated data.
pub const SEALED_VERSION: &str = "v1";

/// Bytes of an AES-GCM nonce (96 bits).
pub const NONCE_BYTES: usize = 12;

/// Bytes of an AES-GCM tag.
const TAG_BYTES: usize = 16;

/// A key-encryption key and its id. `Debug` shows the id only.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    key: [u8; MASTER_KEY_BYTES],
}

impl MasterKey {
    /// Reads 64 hex digits (either case; surrounding whitespace is ignored).
    /// `source` names where the text came from; the error names it and never
    /// echoes the text.
    pub fn parse(text: &str, source: &str) -> Result<Self, String> {
        let text = text.trim().to_ascii_lowercase();
        let key = tollgate_wire::parse_lower_hex(&text).ok_or_else(|| {
            format!(
                "{source} must be {} hex digits ({MASTER_KEY_BYTES} bytes), e.g. the output \
                 of `openssl rand -hex {MASTER_KEY_BYTES}`",
                2 * MASTER_KEY_BYTES
            )
        })?;
        Ok(MasterKey::from_bytes(key))
    }

    /// The master key of these bytes.
    pub fn from_bytes(key: [u8; MASTER_KEY_BYTES]) -> Self {
        let digest = sha256(&key);
        let id = to_hex(digest.get(..MASTER_KEY_ID_BYTES).unwrap_or_default());
        MasterKey { id, key }
    }

    /// The id sealed values name this key by: 16 hex digits of its SHA-256.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.key.into())
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id {})", self.id)
    }
}

/// A signing secret as stored: the text of [`Keyring::seal`]. Not secret
/// itself, but `Debug` shows only its version and master key id.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret(String);

impl SealedSecret {
    /// A value as read from the database; checked when opened.
    pub fn from_stored(text: String) -> Self {
        SealedSecret(text)
    }

    /// The text to store.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of the master key that sealed it, if the value is well-formed
    /// enough to name one.
    pub fn master_key_id(&self) -> Option<&str> {
        self.parts().ok().map(|parts| parts.master_key_id)
    }

    fn parts(&self) -> Result<Parts<'_>, SealError> {
        let mut fields = self.0.split(':');
        let (Some(version), Some(master_key_id), Some(nonce), Some(ciphertext), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(SealError::Malformed("not four ':'-separated fields"));
        };
        if version != SEALED_VERSION {
            return Err(SealError::Malformed("unknown version"));
        }
        if master_key_id.len() != 2 * MASTER_KEY_ID_BYTES
            || !master_key_id
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(SealError::Malformed("bad master key id"));
        }
        let nonce = URL_SAFE_NO_PAD
            .decode(nonce)
            .ok()
            .filter(|n| n.len() == NONCE_BYTES)
            .ok_or(SealError::Malformed("bad nonce"))?;
        let ciphertext = URL_SAFE_NO_PAD
            .decode(ciphertext)
            .ok()
            .filter(|c| c.len() > TAG_BYTES)
            .ok_or(SealError::Malformed("bad ciphertext"))?;
        Ok(Parts {
            master_key_id,
            nonce,
            ciphertext,
        })
    }
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.master_key_id() {
            Some(id) => write!(f, "SealedSecret({SEALED_VERSION}, master key {id})"),
            None => f.write_str("SealedSecret(malformed)"),
        }
    }
}

struct Parts<'a> {
    master_key_id: &'a str,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

/// Why a secret could not be sealed or opened. Never holds the secret nor a
/// master key, only master key ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealError {
    /// No master key is configured.
    NoMasterKey,
    /// The value names a master key that is neither the current nor a previous one.
    UnknownMasterKey { id: String },
    /// The stored text is not of the sealed form.
    Malformed(&'static str),
    /// The master key matches by id but the value does not authenticate:
    /// corrupt, tampered with, or copied from another key's row.
    NotAuthentic { master_key_id: String },
    /// What opened is not a usable signing secret.
    NotASecret(String),
    /// The system random source failed.
    Random(String),
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealError::NoMasterKey => write!(f, "no master key is configured ({MASTER_KEY_ENV})"),
            SealError::UnknownMasterKey { id } => write!(
                f,
                "sealed under master key {id}, which is neither {MASTER_KEY_ENV} nor one of \
                 {PREVIOUS_MASTER_KEY_ENV}"
            ),
            SealError::Malformed(what) => write!(f, "the stored value is malformed ({what})"),
            SealError::NotAuthentic { master_key_id } => write!(
                f,
                "the stored value does not authenticate under master key {master_key_id} \
                 (corrupt, or not this key's)"
            ),
            SealError::NotASecret(why) => write!(f, "the opened value is unusable: {why}"),
            SealError::Random(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for SealError {}

/// The master keys a sidecar seals and opens with.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    current: Option<MasterKey>,
    previous: Vec<MasterKey>,
}

impl Keyring {
    /// No master key: secrets can be neither sealed nor opened.
    pub fn empty() -> Self {
        Keyring::default()
    }

    /// A keyring that seals with `current` and opens with it or any of `previous`.
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Self {
        Keyring {
            current: Some(current),
            previous,
        }
    }

    /// Reads [`MASTER_KEY_ENV`] and [`PREVIOUS_MASTER_KEY_ENV`].
    pub fn from_env() -> Result<Self, String> {
        let read = |name: &str| std::env::var(name).ok();
        Keyring::from_values(
            read(MASTER_KEY_ENV).as_deref(),
            read(PREVIOUS_MASTER_KEY_ENV).as_deref(),
        )
    }

    /// Validates the two variables' values; unset and empty are the same.
    pub fn from_values(current: Option<&str>, previous: Option<&str>) -> Result<Self, String> {
        let current = current
            .filter(|v| !v.trim().is_empty())
            .map(|v| MasterKey::parse(v, MASTER_KEY_ENV))
            .transpose()?;
        let previous = previous
            .unwrap_or_default()
            .split(',')
            .filter(|v| !v.trim().is_empty())
            .enumerate()
            .map(|(i, v)| {
                MasterKey::parse(v, &format!("entry {} of {PREVIOUS_MASTER_KEY_ENV}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        match current {
            Some(current) => Ok(Keyring::new(current, previous)),
            None if previous.is_empty() => Ok(Keyring::empty()),
            None => Err(format!(
                "{PREVIOUS_MASTER_KEY_ENV} is set but {MASTER_KEY_ENV} is not: set the new \
                 master key in {MASTER_KEY_ENV} and the old ones in {PREVIOUS_MASTER_KEY_ENV}"
            )),
        }
    }

    /// The master key new secrets are sealed with.
    pub fn current(&self) -> Option<&MasterKey> {
        self.current.as_ref()
    }

    /// Seals `secret` for the key whose hash is `key_hash`, under the current master key.
    pub fn seal(&self, secret: &SigningSecret, key_hash: &str) -> Result<SealedSecret, SealError> {
        let master = self.current.as_ref().ok_or(SealError::NoMasterKey)?;
        let nonce = random_bytes(NONCE_BYTES).map_err(SealError::Random)?;
        let nonce_array =
            aes_gcm::aead::Nonce::<Aes256Gcm>::try_from(nonce.as_slice()).map_err(|_| {
                SealError::Random("the random source gave a nonce of the wrong size".into())
            })?;
        let aad = associated_data(key_hash);
        let ciphertext = master
            .cipher()
            .encrypt(
                &nonce_array,
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Malformed("the secret is too long to seal"))?;
        Ok(SealedSecret(format!(
            "{SEALED_VERSION}:{}:{}:{}",
            master.id(),
            URL_SAFE_NO_PAD.encode(&nonce),
            URL_SAFE_NO_PAD.encode(&ciphertext)
        )))
    }

    /// Opens a value sealed for the key whose hash is `key_hash`, with the
    /// master key (current or previous) whose id it names.
    pub fn open(&self, sealed: &SealedSecret, key_hash: &str) -> Result<SigningSecret, SealError> {
        let parts = sealed.parts()?;
        let master = self.by_id(parts.master_key_id)?;
        let nonce = aes_gcm::aead::Nonce::<Aes256Gcm>::try_from(parts.nonce.as_slice())
            .map_err(|_| SealError::Malformed("bad nonce"))?;
        let aad = associated_data(key_hash);
        let not_authentic = || SealError::NotAuthentic {
            master_key_id: master.id().to_string(),
        };
        let plaintext = master
            .cipher()
            .decrypt(
                &nonce,
                Payload {
                    msg: &parts.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| not_authentic())?;
        let text =
            String::from_utf8(plaintext).map_err(|_| SealError::NotASecret("not UTF-8".into()))?;
        SigningSecret::new(text).map_err(SealError::NotASecret)
    }

    /// The value re-sealed under the current master key, or `None` when it
    /// is sealed under it already.
    pub fn reseal(
        &self,
        sealed: &SealedSecret,
        key_hash: &str,
    ) -> Result<Option<SealedSecret>, SealError> {
        let current = self.current.as_ref().ok_or(SealError::NoMasterKey)?;
        if sealed.master_key_id() == Some(current.id()) {
            // Still checked: a value that does not open is not "current".
            self.open(sealed, key_hash)?;
            return Ok(None);
        }
        let secret = self.open(sealed, key_hash)?;
        self.seal(&secret, key_hash).map(Some)
    }

    /// How the keyring is shown at start-up: ids only.
    pub fn describe(&self) -> String {
        match &self.current {
            None => "not set".to_string(),
            Some(current) if self.previous.is_empty() => format!("set (id {})", current.id()),
            Some(current) => format!(
                "set (id {}), previous ids {}",
                current.id(),
                self.previous
                    .iter()
                    .map(MasterKey::id)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    fn by_id(&self, id: &str) -> Result<&MasterKey, SealError> {
        if self.current.is_none() {
            return Err(SealError::NoMasterKey);
        }
        self.current
            .iter()
            .chain(&self.previous)
            .find(|k| k.id() == id)
            .ok_or_else(|| SealError::UnknownMasterKey { id: id.to_string() })
    }
}

/// What binds a sealed value to its row: the format version and the key's hash.
fn associated_data(key_hash: &str) -> Vec<u8> {
    format!("tollgate signing secret {SEALED_VERSION} for key {key_hash}").into_bytes()
}

#[cfg(test)]
mod tests;
