//! What the tollgate filter (inside Envoy) and the sidecar share, defined
//! once: the internal calls (key verification, usage ingestion, the key
//! change feed, fleet `jti` claims, quota grants), a key's limits, the
//! contract's outcome codes, key hashing and hex, the HMAC algorithms
//! and claim names of the `X-Auth-Token`, and the names of LLM API shapes
//! and their token usage.
//!
//! The crate depends on serde, sha2 and hmac only, so it builds for
//! `wasm32-wasip1` as well as for the host.

pub mod api_key;
pub mod claim;
pub mod digest;
pub mod error;
pub mod feed;
pub mod grant;
pub mod hex;
pub mod jws;
pub mod limits;
pub mod llm;
pub mod outcome;
pub mod price;
pub mod usage;
pub mod verify;

pub use api_key::{key_format_error, MAX_KEY_LEN, MINTED_KEY_PREFIX, MINTED_KEY_RANDOM_BYTES};
pub use claim::{ClaimReply, ClaimRequest, FINGERPRINT_HEX_LEN, JTI_CLAIM_PATH};
pub use digest::{body_sha256_hex, key_hash, key_hash_hex, sha256, Digest32};
pub use error::{ErrorBody, ErrorDetail};
pub use feed::{changes_query, ChangesReply, KeyChange, CHANGES_PATH, MAX_CHANGES_PER_REPLY};
pub use grant::{
    grant_amount, grant_size, is_charge_id, BudgetOwner, GrantAsk, GrantGiven, GrantReply,
    GrantRequest, GrantReturn, GrantStatus, KeyLimits, ReturnDone, Settlement, SettlementDone,
    CHARGE_ID_HEX_LEN, GRANTS_PATH, MAX_GRANT_ITEMS,
};
pub use hex::{is_lower_hex_digest, parse_lower_hex, to_hex};
pub use jws::Algorithm;
pub use limits::{
    quota_name, LimitError, Limits, Quota, QuotaKind, Rate, RatePeriod, Window, WindowSpan,
};
pub use llm::{Api, LlmUsage, Provider, TokenUsage, UsageSource, MAX_MODEL_LEN, MAX_TOKENS};
pub use outcome::Outcome;
pub use usage::{
    record_field, refused_record, FieldError, IngestReply, UsageRecord, MAX_BODY_BYTES,
    MAX_ENDPOINT_LEN, MAX_METHOD_LEN, MAX_REQUEST_ID_LEN, MAX_RESPONSE_BYTES, MAX_TIMESTAMP_MS,
    MAX_UNITS, MAX_USAGE_BATCH, USAGE_PATH,
};
pub use verify::{KeyVerdict, VerifyReply, VerifyRequest, MAX_SIGNING_SECRET_LEN};

/// Header carrying the shared secret on every internal (filter -> sidecar) call.
pub const INTERNAL_TOKEN_HEADER: &str = "x-tollgate-internal-token";

/// `POST` a [`VerifyRequest`], answered with a [`VerifyReply`].
pub const VERIFY_PATH: &str = "/v1/internal/keys/verify";

/// Header the filter adds to every request it lets through, naming the key's id.
pub const KEY_ID_HEADER: &str = "x-tollgate-key-id";
