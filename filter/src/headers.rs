//! The request-header checks: the API key of `Authorization: Bearer <key>`,
//! the `X-Auth-Token`, and the declared body size, all decided before any
//! network call.

use tollgate_wire::{key_format_error, key_hash, Digest32};

use crate::error::Denial;
use crate::token::{prepare_token, JwtPolicy, PreparedToken};

/// Request headers a client may send but must never pass on, removed on
/// arrival from every request the filter sees, before anything is logged:
/// the credentials (with the key headers of the LLM providers' own SDKs,
/// `llm::routes::key_header`), and the headers the gateway itself speaks with (the
/// key id it names the key with, the internal token of its sidecar calls,
/// and the original path Envoy records on a rewrite, which the access log
/// reads), and `X-Real-IP`, a client address claim that nothing in front of
/// the upstream vouches for (Envoy appends the peer to `X-Forwarded-For`).
pub const STRIPPED_HEADERS: [&str; 8] = [
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "x-auth-token",
    "x-tollgate-key-id",
    "x-tollgate-internal-token",
    "x-envoy-original-path",
    "x-real-ip",
];

/// What the header phase established about a request that may proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// SHA-256 of the API key (the plaintext goes no further).
    pub key_hash: Digest32,
    /// The token, whose form and header passed; its signature and claims
    /// are checked once the key's verdict names the secret (`flow`).
    pub token: PreparedToken,
}

fn header_values<'a>(
    headers: &'a [(String, Vec<u8>)],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// The value of a header that should appear once (the first, if several).
pub fn header_value<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// The first value of each of `names`, in order (a host's answer to
/// `StreamHost::response_headers` from the whole header list).
pub fn first_values(headers: &[(String, Vec<u8>)], names: &[&str]) -> Vec<Option<Vec<u8>>> {
    names
        .iter()
        .map(|name| header_value(headers, name).map(<[u8]>::to_vec))
        .collect()
}

/// The API key of `Authorization: Bearer <key>`.
///
/// Absent header, another scheme, or an empty key: `missing_api_key`.
/// Several `Authorization` headers (Envoy joins them with commas), or a key
/// that cannot be registered (`wire::key_format_error`: the wrong length,
/// spaces, control or non-ASCII characters, a `tg_` key not in the minted
/// form): `invalid_api_key`.
pub fn api_key(headers: &[(String, Vec<u8>)]) -> Result<&[u8], Denial> {
    let mut values = header_values(headers, "authorization");
    let value = values.next().ok_or(Denial::MissingApiKey)?;
    if values.next().is_some() || joins_a_bearer_credential(value) {
        return Err(Denial::InvalidApiKey);
    }
    let (scheme, key) = match value.iter().position(|b| *b == b' ') {
        Some(at) => (value.get(..at), value.get(at + 1..)),
        None => (Some(value), None),
    };
    if !scheme.is_some_and(|s| s.eq_ignore_ascii_case(b"bearer")) {
        return Err(Denial::MissingApiKey);
    }
    let key = key.unwrap_or_default();
    if key.is_empty() {
        return Err(Denial::MissingApiKey);
    }
    // A key that cannot be registered is refused here, without a sidecar call.
    if key_format_error(key).is_some() {
        return Err(Denial::InvalidApiKey);
    }
    Ok(key)
}

/// The API key of a request on a route whose provider's SDK sends it in
/// `key_header` (`x-api-key`, `x-goog-api-key`): from that header when
/// present (exactly one, non-empty, in a registrable form, and with no
/// `Authorization` beside it: two credentials are `invalid_api_key`), else
/// from `Authorization: Bearer` as on every route ([`api_key`]).
pub fn api_key_in<'a>(
    headers: &'a [(String, Vec<u8>)],
    key_header: Option<&'static str>,
) -> Result<&'a [u8], Denial> {
    let Some(name) = key_header else {
        return api_key(headers);
    };
    let mut values = header_values(headers, name);
    let Some(key) = values.next() else {
        return api_key(headers);
    };
    if values.next().is_some() || header_value(headers, "authorization").is_some() {
        return Err(Denial::InvalidApiKey);
    }
    if key.is_empty() {
        return Err(Denial::MissingApiKey);
    }
    if key_format_error(key).is_some() {
        return Err(Denial::InvalidApiKey);
    }
    Ok(key)
}

/// Whether a Bearer credential follows a comma: Envoy joined several
/// `Authorization` headers into this value (`Basic ...,Bearer <key>`), so the
/// request carried several credentials, whatever the first one's scheme.
fn joins_a_bearer_credential(value: &[u8]) -> bool {
    value.split(|b| *b == b',').skip(1).any(|part| {
        part.trim_ascii_start()
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer "))
    })
}

/// The `X-Auth-Token` value: exactly one, non-empty, UTF-8.
pub fn auth_token(headers: &[(String, Vec<u8>)]) -> Result<&str, Denial> {
    let mut values = header_values(headers, "x-auth-token");
    let value = values.next().ok_or(Denial::MissingToken)?;
    if values.next().is_some() {
        return Err(Denial::MalformedToken("several X-Auth-Token headers"));
    }
    if value.is_empty() {
        return Err(Denial::MissingToken);
    }
    std::str::from_utf8(value).map_err(|_| Denial::MalformedToken("the token is not ASCII"))
}

/// All header-phase checks, in the order of docs/ARCHITECTURE.md: API key
/// (also in `key_header` on an LLM provider's route), the token's form and
/// header (what needs no secret), declared body size.
pub fn check_headers(
    headers: &[(String, Vec<u8>)],
    key_header: Option<&'static str>,
    jwt: &JwtPolicy,
    max_body_bytes: u64,
) -> Result<Admitted, Denial> {
    let key = api_key_in(headers, key_header)?;
    let token = prepare_token(auth_token(headers)?, jwt)?;
    if let Some(length) = header_value(headers, "content-length") {
        let declared = std::str::from_utf8(length)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body_bytes) {
            return Err(Denial::PayloadTooLarge);
        }
    }
    Ok(Admitted {
        key_hash: key_hash(key),
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_wire::MAX_KEY_LEN;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn joined_authorization_headers_are_several_credentials() {
        for joined in [
            "Basic dXNlcjpwYXNz,Bearer tg_abc",
            "Basic dXNlcjpwYXNz, bearer tg_abc",
            "Bearer tg_abc,Bearer tg_abc",
        ] {
            assert_eq!(
                api_key(&h(&[("authorization", joined)])),
                Err(Denial::InvalidApiKey),
                "{joined}"
            );
        }
        // One non-Bearer credential whose parameters hold commas is no key at all.
        assert_eq!(
            api_key(&h(&[("authorization", "Digest realm=\"a\", nonce=\"b\"")])),
            Err(Denial::MissingApiKey)
        );
    }

    #[test]
    fn a_providers_key_header_carries_the_key_on_its_routes() {
        let key = Some("x-api-key");
        assert_eq!(
            api_key_in(&h(&[("x-api-key", "legacy-key")]), key),
            Ok(&b"legacy-key"[..])
        );
        // Without it, Authorization as on every route.
        assert_eq!(
            api_key_in(&h(&[("authorization", "Bearer legacy-key")]), key),
            Ok(&b"legacy-key"[..])
        );
        // Two credentials, two values, an empty or unregistrable key.
        let refused = |pairs: &[(&str, &str)]| api_key_in(&h(pairs), key).unwrap_err();
        assert_eq!(
            refused(&[("x-api-key", "a-key"), ("authorization", "Bearer a-key")]),
            Denial::InvalidApiKey
        );
        assert_eq!(
            refused(&[("x-api-key", "a-key"), ("x-api-key", "b-key")]),
            Denial::InvalidApiKey
        );
        assert_eq!(refused(&[("x-api-key", "")]), Denial::MissingApiKey);
        assert_eq!(refused(&[("x-api-key", "a key")]), Denial::InvalidApiKey);
        // Elsewhere the header is no credential.
        assert_eq!(
            api_key_in(&h(&[("x-api-key", "legacy-key")]), None),
            Err(Denial::MissingApiKey)
        );
    }

    #[test]
    fn api_key_rules() {
        assert_eq!(
            api_key(&h(&[("authorization", "Bearer legacy-key")])),
            Ok(&b"legacy-key"[..])
        );
        assert_eq!(
            api_key(&h(&[("authorization", "bearer legacy-key")])),
            Ok(&b"legacy-key"[..])
        );
        assert_eq!(api_key(&h(&[])), Err(Denial::MissingApiKey));
        assert_eq!(
            api_key(&h(&[("authorization", "Basic dTpw")])),
            Err(Denial::MissingApiKey)
        );
        assert_eq!(
            api_key(&h(&[("authorization", "Bearer")])),
            Err(Denial::MissingApiKey)
        );
        assert_eq!(
            api_key(&h(&[("authorization", "Bearer ")])),
            Err(Denial::MissingApiKey)
        );
        assert_eq!(
            api_key(&h(&[("authorization", "tg_abc")])),
            Err(Denial::MissingApiKey)
        );
        assert_eq!(
            api_key(&h(&[("authorization", "Bearer a b")])),
            Err(Denial::InvalidApiKey)
        );
        assert_eq!(
            api_key(&h(&[("authorization", "Bearer  a")])),
            Err(Denial::InvalidApiKey)
        );
        assert_eq!(
            api_key(&h(&[("authorization", "Bearer a\tb")])),
            Err(Denial::InvalidApiKey)
        );
        assert_eq!(
            api_key(&h(&[("authorization", "Bearer é")])),
            Err(Denial::InvalidApiKey)
        );
        assert_eq!(
            api_key(&h(&[("authorization", "Bearer a,Bearer b")])),
            Err(Denial::InvalidApiKey)
        );
        assert_eq!(
            api_key(&h(&[
                ("authorization", "Bearer a"),
                ("Authorization", "Bearer a")
            ])),
            Err(Denial::InvalidApiKey)
        );
        let long = format!("Bearer {}", "k".repeat(MAX_KEY_LEN));
        assert!(api_key(&h(&[("authorization", &long)])).is_ok());
        for impossible in [
            format!("Bearer {}", "k".repeat(MAX_KEY_LEN + 1)),
            "Bearer short".to_string(),
            "Bearer tg_abc".to_string(),
        ] {
            assert_eq!(
                api_key(&h(&[("authorization", &impossible)])),
                Err(Denial::InvalidApiKey),
                "{impossible}"
            );
        }
    }

    #[test]
    fn token_header_rules() {
        assert_eq!(auth_token(&h(&[])), Err(Denial::MissingToken));
        assert_eq!(
            auth_token(&h(&[("x-auth-token", "")])),
            Err(Denial::MissingToken)
        );
        assert!(matches!(
            auth_token(&h(&[("x-auth-token", "a"), ("x-auth-token", "b")])),
            Err(Denial::MalformedToken(_))
        ));
        assert_eq!(auth_token(&h(&[("x-auth-token", "a.b.c")])), Ok("a.b.c"));
    }

    #[test]
    fn check_headers_order() {
        let policy = JwtPolicy {
            default_secret: None,
            kid_secrets: Default::default(),
            algorithms: vec![],
            clock_skew_s: 0,
            max_lifetime_s: 1,
            issuer: None,
            audience: None,
            require_jti: false,
        };
        let run = |pairs: &[(&str, &str)]| check_headers(&h(pairs), None, &policy, 10);
        assert_eq!(run(&[]), Err(Denial::MissingApiKey));
        assert_eq!(
            run(&[("authorization", "Bearer legacy-key")]),
            Err(Denial::MissingToken)
        );
        assert_eq!(
            run(&[
                ("authorization", "Bearer legacy-key"),
                ("x-auth-token", "a.b")
            ]),
            Err(Denial::MalformedToken(
                "expected three dot-separated segments"
            ))
        );
        // An alg the policy does not accept needs no secret to refuse.
        let none_alg = "eyJhbGciOiJub25lIn0.e30.";
        assert_eq!(
            run(&[
                ("authorization", "Bearer legacy-key"),
                ("x-auth-token", none_alg)
            ]),
            Err(Denial::UnsupportedAlgorithm)
        );
    }
}
