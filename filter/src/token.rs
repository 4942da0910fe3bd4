//! Verification of the `X-Auth-Token`: a compact JWS signed with HMAC
//! (HS256/HS384/HS512), its time claims and its binding to the request.
//!
//! Pure functions of the token, the policy, the request line and "now"; no
//! host calls, so every rule is tested natively against tokens minted by
//! PyJWT (see `tests/fixtures`).

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Sha256, Sha384, Sha512};

use crate::body::{parse_lower_hex, Digest32};
use crate::error::Denial;

/// Longest token the filter will look at; anything longer is malformed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Longest `jti` accepted when replay protection is on (a UUID is 36).
pub const MAX_JTI_BYTES: usize = 128;

/// An HMAC algorithm the filter can verify. Nothing else exists here: `none`
/// and asymmetric algorithms cannot even be named by a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Algorithm {
    /// HMAC with SHA-256.
    Hs256,
    /// HMAC with SHA-384.
    Hs384,
    /// HMAC with SHA-512.
    Hs512,
}

impl Algorithm {
    /// The algorithm a JOSE `alg` names, exactly (case-sensitive, as RFC 7515
    /// requires): `hs256`, `none` or `RS256` name nothing here.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "HS256" => Some(Algorithm::Hs256),
            "HS384" => Some(Algorithm::Hs384),
            "HS512" => Some(Algorithm::Hs512),
            _ => None,
        }
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Hs256 => "HS256",
            Algorithm::Hs384 => "HS384",
            Algorithm::Hs512 => "HS512",
        }
    }
}

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
/// (seconds since the epoch). Everything but the body itself is checked
/// here, so it runs in the request-headers phase without any network.
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
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Denial::MalformedToken("the token is too long"));
    }
    let mut parts = token.split('.');
    let (header_b64, payload_b64, signature_b64) =
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(h), Some(p), Some(s), None) => (h, p, s),
            _ => {
                return Err(Denial::MalformedToken(
                    "expected three dot-separated segments",
                ))
            }
        };

    let header = decode_json_object(header_b64, "the header is not base64url JSON")?;
    let algorithm = match header.get("alg") {
        Some(Value::String(name)) => {
            Algorithm::from_name(name).ok_or(Denial::UnsupportedAlgorithm)?
        }
        Some(_) => return Err(Denial::MalformedToken("alg must be a string")),
        None => return Err(Denial::MalformedToken("the header lacks alg")),
    };
    if !policy.algorithms.contains(&algorithm) {
        return Err(Denial::UnsupportedAlgorithm);
    }
    if header.contains_key("crit") {
        return Err(Denial::MalformedToken(
            "crit header parameters are not supported",
        ));
    }
    let secret = match header.get("kid") {
        Some(Value::String(kid)) => policy.kid_secrets.get(kid.as_str()),
        Some(_) => return Err(Denial::MalformedToken("kid must be a string")),
        None => policy.default_secret.as_ref(),
    }
    .ok_or(Denial::UnknownKeyId)?;

    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| Denial::MalformedToken("the signature is not base64url"))?;
    let signed_len = header_b64.len() + 1 + payload_b64.len();
    let signing_input = token
        .as_bytes()
        .get(..signed_len)
        .ok_or(Denial::MalformedToken(
            "expected three dot-separated segments",
        ))?;
    if !hmac_matches(algorithm, secret, signing_input, &signature) {
        return Err(Denial::InvalidSignature);
    }

    let claims = decode_json_object(payload_b64, "the payload is not base64url JSON")?;
    check_claims(&claims, policy, request, now_s)
}

fn decode_json_object(segment: &str, why: &'static str) -> Result<Map<String, Value>, Denial> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Denial::MalformedToken(why))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Denial::MalformedToken(why)),
    }
}

/// Constant-time HMAC comparison (`verify_slice` also refuses a tag of the
/// wrong length).
fn hmac_matches(algorithm: Algorithm, secret: &Secret, input: &[u8], tag: &[u8]) -> bool {
    fn verify<M: Mac + hmac::digest::KeyInit>(secret: &[u8], input: &[u8], tag: &[u8]) -> bool {
        match <M as Mac>::new_from_slice(secret) {
            Ok(mut mac) => {
                mac.update(input);
                mac.verify_slice(tag).is_ok()
            }
            Err(_) => false,
        }
    }
    let key = secret.as_bytes();
    match algorithm {
        Algorithm::Hs256 => verify::<Hmac<Sha256>>(key, input, tag),
        Algorithm::Hs384 => verify::<Hmac<Sha384>>(key, input, tag),
        Algorithm::Hs512 => verify::<Hmac<Sha512>>(key, input, tag),
    }
}

#[derive(Clone, Copy)]
enum Round {
    Down,
    Up,
}

/// A NumericDate claim: absent, or a JSON number within i64 seconds.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
    why: &'static str,
    round: Round,
) -> Result<Option<i64>, Denial> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(n) = value else {
        return Err(Denial::MalformedToken(why));
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    let f = n.as_f64().ok_or(Denial::MalformedToken(why))?;
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
    claims: &'a Map<String, Value>,
    name: &'static str,
    why: &'static str,
) -> Result<Option<&'a str>, Denial> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(Denial::MalformedToken(why)),
    }
}

/// `aud` is a string or an array of strings (RFC 7519 4.1.3).
fn audience_claim(claims: &Map<String, Value>) -> Result<Option<Vec<&str>>, Denial> {
    const WHY: &str = "aud must be a string or an array of strings";
    match claims.get("aud") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.as_str()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().ok_or(Denial::MalformedToken(WHY)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(Denial::MalformedToken(WHY)),
    }
}

fn check_claims(
    claims: &Map<String, Value>,
    policy: &JwtPolicy,
    request: &RequestLine<'_>,
    now_s: i64,
) -> Result<VerifiedToken, Denial> {
    // Types first: a claim of the wrong type is malformed whatever else is wrong.
    let iat = numeric_date(claims, "iat", "iat must be a NumericDate", Round::Up)?;
    let exp = numeric_date(claims, "exp", "exp must be a NumericDate", Round::Down)?;
    let nbf = numeric_date(claims, "nbf", "nbf must be a NumericDate", Round::Up)?;
    let body_sha256 = string_claim(claims, "body_sha256", "body_sha256 must be a string")?;
    let htm = string_claim(claims, "htm", "htm must be a string")?;
    let htu = string_claim(claims, "htu", "htu must be a string")?;
    let jti = string_claim(claims, "jti", "jti must be a string")?;
    let iss = string_claim(claims, "iss", "iss must be a string")?;
    let aud = audience_claim(claims)?;

    let iat = iat.ok_or(Denial::MissingClaim("iat"))?;
    let exp = exp.ok_or(Denial::MissingClaim("exp"))?;
    let body_sha256 = body_sha256.ok_or(Denial::MissingClaim("body_sha256"))?;
    if policy.require_jti {
        // An empty jti identifies nothing: it is as good as absent.
        match jti {
            None | Some("") => return Err(Denial::MissingClaim("jti")),
            Some(j) if j.len() > MAX_JTI_BYTES => {
                return Err(Denial::MalformedToken("jti must be at most 128 bytes"))
            }
            Some(_) => {}
        }
    }
    if policy.issuer.is_some() && iss.is_none() {
        return Err(Denial::MissingClaim("iss"));
    }
    if policy.audience.is_some() && aud.is_none() {
        return Err(Denial::MissingClaim("aud"));
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
        assert_eq!(crate::body::to_hex(&v.body_sha256), EMPTY);
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

    #[test]
    fn oversized_tokens_are_malformed() {
        let t = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            verify_token(&t, &policy(), &LINE, 0),
            Err(Denial::MalformedToken(_))
        ));
    }
}
