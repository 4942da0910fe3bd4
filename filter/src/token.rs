//! Verification of the `X-Auth-Token`: a compact JWS signed with HMAC
//! (HS256/HS384/HS512), its time claims and its binding to the request.
//!
//! Pure functions of the token, the policy, the request line and "now"; no
//! host calls, so every rule is tested natively against tokens minted by
//! PyJWT (see `tests/fixtures`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use tollgate_wire::jws::{claim, header};
use tollgate_wire::{parse_lower_hex, Digest32};

use crate::error::Denial;

pub use tollgate_wire::Algorithm;

/// Longest token the filter will look at; anything longer is malformed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Longest `jti` accepted when replay protection is on (a UUID is 36).
pub const MAX_JTI_BYTES: usize = 128;

/// An HMAC secret. Its `Debug` output shows only its length, so a secret
/// cannot leak through a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps raw secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    /// The raw bytes, for the HMAC.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// The validated token rules of the plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtPolicy {
    /// Secret for tokens without `kid`.
    pub default_secret: Option<Secret>,
    /// Secrets selected by the token's `kid` (rotation).
    pub kid_secrets: BTreeMap<String, Secret>,
    /// Algorithms a token may use; the token's header cannot widen this.
    pub algorithms: Vec<Algorithm>,
    /// Tolerated clock difference, seconds.
    pub clock_skew_s: i64,
    /// Longest allowed `exp - iat`, seconds.
    pub max_lifetime_s: i64,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required member of `aud`, when set.
    pub audience: Option<String>,
    /// Whether `jti` must be present (a non-empty string of at most
    /// [`MAX_JTI_BYTES`]); it also turns replay protection on.
    pub require_jti: bool,
}

/// What the token is checked against: the request it travels with.
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    /// The `:method` pseudo-header.
    pub method: &'a str,
    /// The `:path` pseudo-header, query included.
    pub path: &'a str,
}

/// The parts of a verified token the rest of the request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The body digest the token signed.
    pub body_sha256: Digest32,
    /// The token id, when present.
    pub jti: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

/// Verifies a compact JWS against the policy, the request line and `now_s`
/// (seconds since the epoch), with the shared secrets of the policy. The
/// same as [`prepare_token`] then [`PreparedToken::verify`] without a key
/// secret.
///
/// Time rules (skew `s`): `iat <= now + s`; `now >= nbf - s`; `now <= exp + s`;
/// `exp >= iat` (a token that expires before it was issued is reported as
/// `token_expired`: its validity window is empty); `exp - iat <= max_lifetime`.
/// NumericDates may be fractional: `exp` is rounded down, `iat`/`nbf` up, so
/// rounding never extends validity.
pub fn verify_token(
    token: &str,
    policy: &JwtPolicy,
    request: &RequestLine<'_>,
    now_s: i64,
) -> Result<VerifiedToken, Denial> {
    prepare_token(token, policy)?.verify(None, policy, request, now_s)
}

/// A token whose form and header passed, waiting for the secret it must be
/// signed with: the shared one (by `kid`), or the key's own. It is parsed
/// once, in the header phase, and kept until the verdict names the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PreparedToken {
    token: String,
    algorithm: Algorithm,
    /// The `kid` that names its shared secret; `None`: the default one.
    kid: Option<String>,
    header_len: usize,
    payload_len: usize,
}

impl std::fmt::Debug for PreparedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never printed.
        f.debug_struct("PreparedToken")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The checks that need no secret, in the order of [`verify_token`]: size,
/// three segments, a JSON header without a repeated parameter, with an
/// accepted `alg`, no `crit`, a string `kid`. Cheap, so a junk token is refused before any network call.
pub fn prepare_token(token: &str, policy: &JwtPolicy) -> Result<PreparedToken, Denial> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Denial::MalformedToken("the token is too long"));
    }
    let mut parts = token.split('.');
    let (header_b64, payload_b64) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(_), None) => (h, p),
        _ => {
            return Err(Denial::MalformedToken(
                "expected three dot-separated segments",
            ))
        }
    };

    let header_bytes = decode_segment(header_b64, HEADER_ERRORS.not_json)?;
    let [alg, kid, crit] = parse_object(&header_bytes, &HEADER_NAMES, &HEADER_ERRORS)?;
    let algorithm = match alg {
        Some(Json::Str(name)) => Algorithm::from_name(&name).ok_or(Denial::UnsupportedAlgorithm)?,
        Some(_) => return Err(Denial::MalformedToken("alg must be a string")),
        None => return Err(Denial::MalformedToken("the header lacks alg")),
    };
    if !policy.algorithms.contains(&algorithm) {
        return Err(Denial::UnsupportedAlgorithm);
    }
    if crit.is_some() {
        return Err(Denial::MalformedToken(
            "crit header parameters are not supported",
        ));
    }
    let kid = match kid {
        Some(Json::Str(kid)) => Some(kid.into_owned()),
        Some(_) => return Err(Denial::MalformedToken("kid must be a string")),
        None => None,
    };
    Ok(PreparedToken {
        token: token.to_owned(),
        algorithm,
        kid,
        header_len: header_b64.len(),
        payload_len: payload_b64.len(),
    })
}

impl PreparedToken {
    /// The rest of [`verify_token`]: the signature, then the claims.
    ///
    /// `key_secret` is the key's own signing secret, when its verdict names
    /// one: the token must then be signed with it, whatever its `kid` says,
    /// and a token signed with a shared secret is an invalid signature.
    /// Without one, the `kid` (or its absence) picks a shared secret.
    pub fn verify(
        &self,
        key_secret: Option<&Secret>,
        policy: &JwtPolicy,
        request: &RequestLine<'_>,
        now_s: i64,
    ) -> Result<VerifiedToken, Denial> {
        let shared_secret = match &self.kid {
            Some(kid) => policy.kid_secrets.get(kid),
            None => policy.default_secret.as_ref(),
        };
        let secret = key_secret.or(shared_secret).ok_or(Denial::UnknownKeyId)?;

        let signed_len = self.header_len + 1 + self.payload_len;
        let (signing_input, signature_b64) = match (
            self.token.get(..signed_len),
            self.token.get(signed_len + 1..),
        ) {
            (Some(input), Some(signature)) => (input, signature),
            _ => {
                return Err(Denial::MalformedToken(
                    "expected three dot-separated segments",
                ))
            }
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| Denial::MalformedToken("the signature is not base64url"))?;
        if !hmac_matches(self.algorithm, secret, signing_input.as_bytes(), &signature) {
            return Err(Denial::InvalidSignature);
        }

        let payload_b64 = signing_input.get(self.header_len + 1..).unwrap_or_default();
        let payload_bytes = decode_segment(payload_b64, PAYLOAD_ERRORS.not_json)?;
        let [iat, exp, nbf, body_sha256, htm, htu, jti, iss, aud] =
            parse_object(&payload_bytes, &CLAIM_NAMES, &PAYLOAD_ERRORS)?;
        let claims = Claims {
            iat,
            exp,
            nbf,
            body_sha256,
            htm,
            htu,
            jti,
            iss,
            aud,
        };
        check_claims(&claims, policy, request, now_s)
    }
}

/// Why a segment's JSON is refused: it is not a JSON object, or a member
/// name appears twice in it.
struct SegmentErrors {
    not_json: &'static str,
    repeated: &'static str,
}

const HEADER_ERRORS: SegmentErrors = SegmentErrors {
    not_json: "the header is not base64url JSON",
    repeated: "the header repeats a parameter",
};
const PAYLOAD_ERRORS: SegmentErrors = SegmentErrors {
    not_json: "the payload is not base64url JSON",
    repeated: "the payload repeats a claim",
};

/// The header parameters the filter reads; any other is checked for JSON
/// validity and skipped.
const HEADER_NAMES: [&str; 3] = [header::ALG, header::KID, header::CRIT];

/// The claims the filter reads; any other is checked and skipped.
const CLAIM_NAMES: [&str; 9] = claim::ALL;

/// The claims of [`CLAIM_NAMES`], each as the payload had it (if at all).
struct Claims<'a> {
    iat: Option<Json<'a>>,
    exp: Option<Json<'a>>,
    nbf: Option<Json<'a>>,
    body_sha256: Option<Json<'a>>,
    htm: Option<Json<'a>>,
    htu: Option<Json<'a>>,
    jti: Option<Json<'a>>,
    iss: Option<Json<'a>>,
    aud: Option<Json<'a>>,
}

fn decode_segment(segment: &str, why: &'static str) -> Result<Vec<u8>, Denial> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Denial::MalformedToken(why))
}

/// Parses a JSON object, keeping only the members named in `names` (in
/// that order; a name the object lacks is `None`).
///
/// It accepts exactly the documents `serde_json::Value` would accept as an
/// object whose member names are unique, without building one: every
/// member, read or not, goes through serde_json's full parser
/// (`deserialize_any`: UTF-8, escapes and surrogates, number range, the
/// nesting limit), but only the named ones are kept, and their strings
/// borrow from `bytes` unless they hold an escape.
///
/// A member name that appears twice at the object's top level is refused
/// (`errors.repeated`), compared after unescaping (`"al\u0067"` is `alg`).
/// RFC 7515 (4) and RFC 7519 (4) require unique header parameter and claim
/// names and let a parser refuse a repeat; readers that accept one need not
/// agree on which value counts (serde_json and PyJWT keep the last, a
/// reader that stops at the first match takes the first), so such a token
/// is ambiguous. Names inside a nested object are not compared: the filter
/// reads no member of a nested object (`aud` is a string or an array of
/// strings, every other nested value is parsed and dropped), so a repeat
/// there cannot change what the filter decides.
fn parse_object<'a, const N: usize>(
    bytes: &'a [u8],
    names: &'static [&'static str; N],
    errors: &SegmentErrors,
) -> Result<[Option<Json<'a>>; N], Denial> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let object = ObjectSeed { names }
        .deserialize(&mut deserializer)
        .map_err(|_| Denial::MalformedToken(errors.not_json))?;
    deserializer
        .end()
        .map_err(|_| Denial::MalformedToken(errors.not_json))?;
    if object.repeated {
        return Err(Denial::MalformedToken(errors.repeated));
    }
    Ok(object.members)
}

/// A JSON value as far as the checks need it: a string (borrowed when it
/// has no escape), a number as serde_json reads it, an array made only of
/// strings, or anything else reduced to its being there.
#[derive(Debug, PartialEq)]
enum Json<'a> {
    Str(Cow<'a, str>),
    Num(Num),
    Strings(Vec<Cow<'a, str>>),
    Other,
}

/// A JSON number with `serde_json::Number`'s `as_i64`/`as_f64` meaning:
/// integers within i64, and everything else as an f64.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i64),
    Float(f64),
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Json::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Json::Other)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Json::Num(Num::Int(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Json::Num(match i64::try_from(v) {
            Ok(i) => Num::Int(i),
            Err(_) => Num::Float(v as f64),
        }))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // serde_json::Value turns a non-finite float into null.
        Ok(if v.is_finite() {
            Json::Num(Num::Float(v))
        } else {
            Json::Other
        })
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut strings = Vec::new();
        let mut only_strings = true;
        while let Some(item) = seq.next_element::<Json<'de>>()? {
            match item {
                Json::Str(s) if only_strings => strings.push(s),
                _ => only_strings = false,
            }
        }
        Ok(if only_strings {
            Json::Strings(strings)
        } else {
            Json::Other
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<Skipped, Skipped>()?.is_some() {}
        Ok(Json::Other)
    }
}

/// A JSON value parsed in full and then forgotten, without allocating:
/// members the filter does not read still have to be valid JSON.
struct Skipped;

impl<'de> Deserialize<'de> for Skipped {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkippedVisitor)
    }
}

struct SkippedVisitor;

impl<'de> Visitor<'de> for SkippedVisitor {
    type Value = Skipped;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skipped, E> {
        Ok(Skipped)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Skipped, E> {
        Ok(Skipped)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skipped, E> {
        Ok(Skipped)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skipped, E> {
        Ok(Skipped)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skipped, E> {
        Ok(Skipped)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skipped, E> {
        Ok(Skipped)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skipped, A::Error> {
        while seq.next_element::<Skipped>()?.is_some() {}
        Ok(Skipped)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skipped, A::Error> {
        while map.next_entry::<Skipped, Skipped>()?.is_some() {}
        Ok(Skipped)
    }
}

/// A JSON object as [`ObjectSeed`] read it: the members named by `names`,
/// and whether any member name appeared twice.
struct Object<'a, const N: usize> {
    members: [Option<Json<'a>>; N],
    repeated: bool,
}

/// Reads a JSON object into the members named by `names`, noting repeated
/// member names in the same pass.
struct ObjectSeed<const N: usize> {
    names: &'static [&'static str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for ObjectSeed<N> {
    type Value = Object<'de, N>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for ObjectSeed<N> {
    type Value = Object<'de, N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: [Option<Json<'de>>; N] = std::array::from_fn(|_| None);
        let mut repeated = false;
        // Names the filter does not read, kept (borrowed unless escaped) only
        // to find a repeat among them; a read name is a repeat when its slot
        // is already filled.
        let mut others: Vec<Cow<'de, str>> = Vec::new();
        while let Some(name) = map.next_key_seed(NameSeed { names: self.names })? {
            match name {
                Name::Read(index) => {
                    let value = map.next_value::<Json<'de>>()?;
                    if let Some(slot) = members.get_mut(index) {
                        repeated |= slot.is_some();
                        *slot = Some(value);
                    }
                }
                Name::Other(name) => {
                    others.push(name);
                    map.next_value::<Skipped>()?;
                }
            }
        }
        Ok(Object {
            members,
            repeated: repeated || has_repeat(&mut others),
        })
    }
}

/// Whether a name appears twice in `names`. Sorting first keeps a header
/// of a thousand distinct parameters (before any signature check) at
/// n log n comparisons, not n².
fn has_repeat(names: &mut [Cow<'_, str>]) -> bool {
    if names.len() < 2 {
        return false;
    }
    names.sort_unstable();
    names
        .windows(2)
        .any(|pair| matches!(pair, [a, b] if a == b))
}

/// A member name, unescaped: its index in `names`, or the name itself when
/// the filter does not read it.
enum Name<'a> {
    Read(usize),
    Other(Cow<'a, str>),
}

/// Reads a member name into a [`Name`].
struct NameSeed {
    names: &'static [&'static str],
}

impl NameSeed {
    fn name<'a>(&self, v: &str, other: impl FnOnce() -> Cow<'a, str>) -> Name<'a> {
        match self.names.iter().position(|name| *name == v) {
            Some(index) => Name::Read(index),
            None => Name::Other(other()),
        }
    }
}

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = Name<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NameSeed {
    type Value = Name<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(self.name(v, || Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.name(v, || Cow::Owned(v.to_owned())))
    }
}

/// Constant-time HMAC comparison (a tag of the wrong length is refused).
fn hmac_matches(algorithm: Algorithm, secret: &Secret, input: &[u8], tag: &[u8]) -> bool {
    algorithm.verify(secret.as_bytes(), input, tag)
}

#[derive(Clone, Copy)]
enum Round {
    Down,
    Up,
}

/// A NumericDate claim: absent, or a JSON number within i64 seconds.
fn numeric_date(
    value: Option<&Json<'_>>,
    why: &'static str,
    round: Round,
) -> Result<Option<i64>, Denial> {
    let f = match value {
        None => return Ok(None),
        Some(Json::Num(Num::Int(i))) => return Ok(Some(*i)),
        Some(Json::Num(Num::Float(f))) => *f,
        Some(_) => return Err(Denial::MalformedToken(why)),
    };
    let rounded = match round {
        Round::Down => f.floor(),
        Round::Up => f.ceil(),
    };
    // i64 range, with headroom so the `as` conversion below is exact.
    if !rounded.is_finite() || rounded.abs() > 9.0e15 {
        return Err(Denial::MalformedToken(why));
    }
    Ok(Some(rounded as i64))
}

fn string_claim<'a>(
    value: Option<&'a Json<'_>>,
    why: &'static str,
) -> Result<Option<&'a str>, Denial> {
    match value {
        None => Ok(None),
        Some(Json::Str(s)) => Ok(Some(s.as_ref())),
        Some(_) => Err(Denial::MalformedToken(why)),
    }
}

/// `aud` is a string or an array of strings (RFC 7519 4.1.3).
fn audience_claim<'a>(value: Option<&'a Json<'_>>) -> Result<Option<&'a [Cow<'a, str>]>, Denial> {
    match value {
        None => Ok(None),
        Some(Json::Str(s)) => Ok(Some(std::slice::from_ref(s))),
        Some(Json::Strings(items)) => Ok(Some(items.as_slice())),
        Some(_) => Err(Denial::MalformedToken(
            "aud must be a string or an array of strings",
        )),
    }
}

fn check_claims(
    claims: &Claims<'_>,
    policy: &JwtPolicy,
    request: &RequestLine<'_>,
    now_s: i64,
) -> Result<VerifiedToken, Denial> {
    // Types first: a claim of the wrong type is malformed whatever else is wrong.
    let iat = numeric_date(claims.iat.as_ref(), "iat must be a NumericDate", Round::Up)?;
    let exp = numeric_date(
        claims.exp.as_ref(),
        "exp must be a NumericDate",
        Round::Down,
    )?;
    let nbf = numeric_date(claims.nbf.as_ref(), "nbf must be a NumericDate", Round::Up)?;
    let body_sha256 = string_claim(claims.body_sha256.as_ref(), "body_sha256 must be a string")?;
    let htm = string_claim(claims.htm.as_ref(), "htm must be a string")?;
    let htu = string_claim(claims.htu.as_ref(), "htu must be a string")?;
    let jti = string_claim(claims.jti.as_ref(), "jti must be a string")?;
    let iss = string_claim(claims.iss.as_ref(), "iss must be a string")?;
    let aud = audience_claim(claims.aud.as_ref())?;

    let iat = iat.ok_or(Denial::MissingClaim(claim::IAT))?;
    let exp = exp.ok_or(Denial::MissingClaim(claim::EXP))?;
    let body_sha256 = body_sha256.ok_or(Denial::MissingClaim(claim::BODY_SHA256))?;
    if policy.require_jti {
        // An empty jti identifies nothing: it is as good as absent.
        match jti {
            None | Some("") => return Err(Denial::MissingClaim(claim::JTI)),
            Some(j) if j.len() > MAX_JTI_BYTES => {
                return Err(Denial::MalformedToken("jti must be at most 128 bytes"))
            }
            Some(_) => {}
        }
    }
    if policy.issuer.is_some() && iss.is_none() {
        return Err(Denial::MissingClaim(claim::ISS));
    }
    if policy.audience.is_some() && aud.is_none() {
        return Err(Denial::MissingClaim(claim::AUD));
    }
    let body_sha256 = parse_lower_hex(body_sha256).ok_or(Denial::BodyHashFormat)?;

    let skew = policy.clock_skew_s;
    if iat > now_s.saturating_add(skew) {
        return Err(Denial::TokenIssuedInFuture);
    }
    if let Some(nbf) = nbf {
        if now_s < nbf.saturating_sub(skew) {
            return Err(Denial::TokenNotYetValid);
        }
    }
    if now_s > exp.saturating_add(skew) || exp < iat {
        return Err(Denial::TokenExpired);
    }
    if exp.saturating_sub(iat) > policy.max_lifetime_s {
        return Err(Denial::TokenLifetimeTooLong);
    }

    if let (Some(want), Some(got)) = (&policy.issuer, iss) {
        if want != got {
            return Err(Denial::RequestBindingMismatch(
                "iss is not the issuer this gateway accepts",
            ));
        }
    }
    if let (Some(want), Some(got)) = (&policy.audience, &aud) {
        if !got.iter().any(|a| a == want) {
            return Err(Denial::RequestBindingMismatch(
                "aud does not name this gateway",
            ));
        }
    }
    if let Some(htm) = htm {
        if htm != request.method {
            return Err(Denial::RequestBindingMismatch(
                "htm differs from the request method",
            ));
        }
    }
    if let Some(htu) = htu {
        if htu != request.path {
            return Err(Denial::RequestBindingMismatch(
                "htu differs from the request path and query",
            ));
        }
    }

    Ok(VerifiedToken {
        body_sha256,
        jti: jti.map(str::to_string),
        exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    fn policy() -> JwtPolicy {
        JwtPolicy {
            default_secret: Some(Secret::new(b"0123456789abcdef0123456789abcdef".to_vec())),
            kid_secrets: BTreeMap::new(),
            algorithms: vec![Algorithm::Hs256],
            clock_skew_s: 30,
            max_lifetime_s: 300,
            issuer: None,
            audience: None,
            require_jti: false,
        }
    }

    fn sign(header: &str, claims: &str, secret: &[u8]) -> String {
        let h = URL_SAFE_NO_PAD.encode(header);
        let p = URL_SAFE_NO_PAD.encode(claims);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap();
        mac.update(format!("{h}.{p}").as_bytes());
        let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{h}.{p}.{s}")
    }

    const LINE: RequestLine<'static> = RequestLine {
        method: "POST",
        path: "/proxy/analyze",
    };
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn a_token_signed_here_verifies() {
        let claims = format!(r#"{{"iat":1000,"exp":1060,"body_sha256":"{EMPTY}"}}"#);
        let t = sign(
            r#"{"alg":"HS256"}"#,
            &claims,
            b"0123456789abcdef0123456789abcdef",
        );
        let v = verify_token(&t, &policy(), &LINE, 1000).unwrap();
        assert_eq!(v.exp, 1060);
        assert_eq!(tollgate_wire::to_hex(&v.body_sha256), EMPTY);
    }

    #[test]
    fn fractional_dates_never_extend_validity() {
        let claims = format!(r#"{{"iat":1000.2,"exp":1060.9,"body_sha256":"{EMPTY}"}}"#);
        let t = sign(
            r#"{"alg":"HS256"}"#,
            &claims,
            b"0123456789abcdef0123456789abcdef",
        );
        assert_eq!(verify_token(&t, &policy(), &LINE, 1090).unwrap().exp, 1060);
        assert_eq!(
            verify_token(&t, &policy(), &LINE, 1091),
            Err(Denial::TokenExpired)
        );
    }

    #[test]
    fn exp_before_iat_is_expired() {
        let claims = format!(r#"{{"iat":1000,"exp":990,"body_sha256":"{EMPTY}"}}"#);
        let t = sign(
            r#"{"alg":"HS256"}"#,
            &claims,
            b"0123456789abcdef0123456789abcdef",
        );
        assert_eq!(
            verify_token(&t, &policy(), &LINE, 1000),
            Err(Denial::TokenExpired)
        );
    }

    #[test]
    fn crit_and_odd_headers_are_malformed() {
        let claims = format!(r#"{{"iat":1000,"exp":1060,"body_sha256":"{EMPTY}"}}"#);
        let key = b"0123456789abcdef0123456789abcdef";
        for header in [
            r#"{"alg":"HS256","crit":["b64"]}"#,
            r#"{"alg":256}"#,
            r#"{"typ":"JWT"}"#,
            r#"["HS256"]"#,
            r#"{"alg":"HS256","kid":7}"#,
        ] {
            let t = sign(header, &claims, key);
            assert!(
                matches!(
                    verify_token(&t, &policy(), &LINE, 1000),
                    Err(Denial::MalformedToken(_))
                ),
                "{header}"
            );
        }
    }

    #[test]
    fn lowercase_alg_names_nothing() {
        assert_eq!(Algorithm::from_name("hs256"), None);
        assert_eq!(Algorithm::from_name("none"), None);
        assert_eq!(Algorithm::from_name("HS512"), Some(Algorithm::Hs512));
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new(b"super-secret".to_vec());
        assert_eq!(format!("{s:?}"), "Secret(12 bytes)");
    }

    #[test]
    fn jti_rules_apply_when_required() {
        let key = b"0123456789abcdef0123456789abcdef";
        let with_jti = |jti: &str| {
            let claims =
                format!(r#"{{"iat":1000,"exp":1060,"body_sha256":"{EMPTY}","jti":{jti}}}"#);
            sign(r#"{"alg":"HS256"}"#, &claims, key)
        };
        let mut required = policy();
        required.require_jti = true;
        let long = format!("\"{}\"", "j".repeat(MAX_JTI_BYTES));
        let too_long = format!("\"{}\"", "j".repeat(MAX_JTI_BYTES + 1));
        let v = verify_token(&with_jti(&long), &required, &LINE, 1000).unwrap();
        assert_eq!(v.jti.map(|j| j.len()), Some(MAX_JTI_BYTES));
        assert!(matches!(
            verify_token(&with_jti(&too_long), &required, &LINE, 1000),
            Err(Denial::MalformedToken(_))
        ));
        assert_eq!(
            verify_token(&with_jti("\"\""), &required, &LINE, 1000),
            Err(Denial::MissingClaim("jti"))
        );
        assert!(matches!(
            verify_token(&with_jti("7"), &required, &LINE, 1000),
            Err(Denial::MalformedToken(_))
        ));
        let claims = format!(r#"{{"iat":1000,"exp":1060,"body_sha256":"{EMPTY}"}}"#);
        let none = sign(r#"{"alg":"HS256"}"#, &claims, key);
        assert_eq!(
            verify_token(&none, &required, &LINE, 1000),
            Err(Denial::MissingClaim("jti"))
        );
        // Without replay protection, any string jti is carried along unchecked.
        assert!(verify_token(&with_jti(&too_long), &policy(), &LINE, 1000).is_ok());
        assert!(verify_token(&none, &policy(), &LINE, 1000).is_ok());
    }

    /// What `serde_json::Value` made of a member, in `Json` terms.
    fn as_json(value: &serde_json::Value) -> Json<'static> {
        use serde_json::Value;
        match value {
            Value::String(s) => Json::Str(Cow::Owned(s.clone())),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Json::Num(Num::Int(i)),
                None => Json::Num(Num::Float(n.as_f64().unwrap())),
            },
            Value::Array(items) if items.iter().all(Value::is_string) => Json::Strings(
                items
                    .iter()
                    .map(|i| Cow::Owned(i.as_str().unwrap().to_string()))
                    .collect(),
            ),
            _ => Json::Other,
        }
    }

    /// How many members the top level of `doc` has, repeats counted, as
    /// serde_json reads it: more than its `Value`'s length means a name
    /// repeats (a `Map` keeps one entry per unescaped name).
    fn top_level_members(doc: &[u8]) -> Option<usize> {
        struct Count;
        impl<'de> Visitor<'de> for Count {
            type Value = usize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
                let mut n = 0;
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {
                    n += 1;
                }
                Ok(n)
            }
        }
        serde_json::Deserializer::from_slice(doc)
            .deserialize_map(Count)
            .ok()
    }

    #[test]
    fn parse_object_agrees_with_serde_json_value() {
        let deep = format!(r#"{{"x":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        let deep_ok = format!(r#"{{"x":{}1{}}}"#, "[".repeat(100), "]".repeat(100));
        let docs: Vec<Vec<u8>> = [
            r#"{"iat":1,"exp":2.5,"aud":["a","b"],"iss":"i"}"#,
            r#"{"iat":1,"iat":"late","exp":3,"exp":4}"#,
            r#"{"iat":1,"i\u0061t":1}"#,
            r#"{"x":1,"y":2,"x":3}"#,
            r#"{"x":{"a":1,"a":2},"y":[{"b":1,"b":1}]}"#,
            r#"{"i\u0061t":7,"htu":"/a\/b","jti":"\ud83d\ude00"}"#,
            r#"{"aud":[],"nbf":-0,"htm":null}"#,
            r#"{"aud":["a",1],"exp":18446744073709551615,"iat":9223372036854775807}"#,
            r#"{"aud":[["a"]],"exp":1e300,"nbf":-1.5e2}"#,
            r#"{"other":{"nested":[1,{"a":null}]},"iat":true}"#,
            r#"{"other":1e400}"#,
            r#"{"other":"\ud800"}"#,
            r#"{"other":"\ud800x"}"#,
            r#"{"other":"tab	in"}"#,
            r#"{"other":01}"#,
            r#"{"iat":1,}"#,
            r#"{"iat":1} x"#,
            " {\"iat\":1}\n ",
            r#"["iat",1]"#,
            r#""iat""#,
            r#"null"#,
            r#"{}"#,
            "",
        ]
        .iter()
        .map(|d| d.as_bytes().to_vec())
        .chain([
            deep.into_bytes(),
            deep_ok.into_bytes(),
            b"{\"other\":\"\xff\"}".to_vec(),
            b"{\"iss\":\"caf\xc3\xa9\"}".to_vec(),
        ])
        .collect();
        for doc in &docs {
            let reference = serde_json::from_slice::<serde_json::Value>(doc)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .filter(|object| top_level_members(doc) == Some(object.len()));
            let ours = parse_object(doc, &CLAIM_NAMES, &PAYLOAD_ERRORS).ok();
            let shown = String::from_utf8_lossy(doc);
            assert_eq!(ours.is_some(), reference.is_some(), "{shown}");
            if let (Some(ours), Some(reference)) = (ours, reference) {
                for (name, got) in CLAIM_NAMES.iter().zip(ours.iter()) {
                    assert_eq!(
                        got.as_ref(),
                        reference.get(*name).map(as_json).as_ref(),
                        "{shown}: {name}"
                    );
                }
            }
        }
    }

    #[test]
    fn unescaped_claims_borrow_from_the_payload() {
        let doc = br#"{"iss":"plain","jti":"esc\u0061ped"}"#;
        let [.., jti, iss, _] = parse_object(doc, &CLAIM_NAMES, &PAYLOAD_ERRORS).unwrap();
        assert!(matches!(iss, Some(Json::Str(Cow::Borrowed("plain")))));
        assert!(matches!(jti, Some(Json::Str(Cow::Owned(ref j))) if j == "escaped"));
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const HEADER_REPEATS: Denial = Denial::MalformedToken("the header repeats a parameter");
    const CLAIMS_REPEAT: Denial = Denial::MalformedToken("the payload repeats a claim");

    fn claims_with(extra: &str) -> String {
        format!(r#"{{"iat":1000,"exp":1060,"body_sha256":"{EMPTY}"{extra}}}"#)
    }

    /// What the header checks say of a valid token with this header.
    fn header_refusal(header: &str) -> Option<Denial> {
        prepare_token(&sign(header, &claims_with(""), KEY), &policy()).err()
    }

    /// A valid token whose claims end with `extra`, verified.
    fn verify_claims_with(extra: &str) -> Result<VerifiedToken, Denial> {
        let t = sign(r#"{"alg":"HS256"}"#, &claims_with(extra), KEY);
        verify_token(&t, &policy(), &LINE, 1000)
    }

    #[test]
    fn a_repeated_header_parameter_is_malformed() {
        for header in [
            r#"{"alg":"none","alg":"HS256"}"#,
            r#"{"alg":"HS256","alg":"HS256"}"#,
            r#"{"alg":"HS256","kid":"a","kid":"a"}"#,
            r#"{"alg":"HS256","crit":[],"crit":[]}"#,
            r#"{"typ":"JWT","alg":"HS256","typ":"JWT"}"#,
            r#"{"alg":"HS256","x":1,"y":2,"x":{"nested":true}}"#,
        ] {
            assert_eq!(header_refusal(header), Some(HEADER_REPEATS), "{header}");
        }
    }

    #[test]
    fn a_repeated_claim_is_malformed() {
        for extra in [
            r#","exp":1060"#,
            r#","exp":5000"#,
            r#","iat":1000"#,
            &format!(r#","body_sha256":"{EMPTY}""#),
            r#","jti":"a","jti":"b""#,
            r#","aud":"x","aud":["x"]"#,
            r#","custom":1,"custom":1"#,
            r#","custom":null,"other":0,"custom":{}"#,
        ] {
            assert_eq!(verify_claims_with(extra), Err(CLAIMS_REPEAT), "{extra}");
        }
    }

    #[test]
    fn names_are_compared_unescaped() {
        for header in [
            r#"{"alg":"HS256","al\u0067":"HS256"}"#,
            r#"{"alg":"HS256","t\u0079p":"JWT","\u0074yp":"JWT"}"#,
        ] {
            assert_eq!(header_refusal(header), Some(HEADER_REPEATS), "{header}");
        }
        for extra in [r#","\u0065xp":1060"#, r#","x\/y":1,"x/y":2"#] {
            assert_eq!(verify_claims_with(extra), Err(CLAIMS_REPEAT), "{extra}");
        }
    }

    #[test]
    fn distinct_members_still_pass() {
        // Names that differ only in case, or by an escape that unescapes to
        // another name, are distinct; so are repeats inside nested objects.
        let header =
            r#"{"alg":"HS256","typ":"JWT","Alg":"x","ALG":"y","\u0061lh":1,"kid2":{"a":1,"a":2}}"#;
        assert_eq!(header_refusal(header), None);
        let extra =
            r#","Exp":1,"EXP":2,"ex":3,"x":{"y":1,"y":2},"z":[{"k":1,"k":1}],"aud":["a","a"]"#;
        assert_eq!(verify_claims_with(extra).unwrap().exp, 1060);
        // As many members as a token can hold, the last one repeating the first.
        let many: String = (0..500).map(|i| format!(r#","m{i}":0"#)).collect();
        assert!(verify_claims_with(&many).is_ok());
        let repeat = format!(r#"{many},"m0":0"#);
        assert!(sign(r#"{"alg":"HS256"}"#, &claims_with(&repeat), KEY).len() <= MAX_TOKEN_BYTES);
        assert_eq!(verify_claims_with(&repeat), Err(CLAIMS_REPEAT));
    }

    #[test]
    fn oversized_tokens_are_malformed() {
        let t = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            verify_token(&t, &policy(), &LINE, 0),
            Err(Denial::MalformedToken(_))
        ));
    }
}
