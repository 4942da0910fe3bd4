//! The per-request decision, free of the host: header checks, the state
//! machine that waits for both the key verdict and the whole body (in either
//! order), the meaning of a verdict, the sidecar's answer, and the usage
//! record of a finished exchange.

use tollgate_wire::{
    KeyVerdict, UsageRecord, VerifyReply, MAX_ENDPOINT_LEN, MAX_METHOD_LEN, OUTCOME_ALLOWED,
};

use crate::body::{sha256, BodyHasher, Digest32};
use crate::cache::CacheEntry;
use crate::error::Denial;
use crate::token::{verify_token, JwtPolicy, RequestLine, VerifiedToken};

/// Longest API key accepted (bytes).
pub const MAX_API_KEY_BYTES: usize = 512;

/// Request headers that must never reach the upstream: the credentials.
/// (A client-sent key id header needs no removal: the filter replaces it on
/// every request it lets through, and a denied request goes nowhere.)
pub const STRIPPED_HEADERS: [&str; 2] = ["authorization", "x-auth-token"];

/// What the header phase established about a request that may proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// SHA-256 of the API key (the plaintext goes no further).
    pub key_hash: Digest32,
    /// The verified token.
    pub token: VerifiedToken,
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

/// The API key of `Authorization: Bearer <key>`.
///
/// Absent header, another scheme, or an empty key: `missing_api_key`.
/// Several `Authorization` headers (Envoy joins them with commas), a key
/// with spaces, control or non-ASCII characters, or longer than
/// [`MAX_API_KEY_BYTES`]: `invalid_api_key`.
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
    if key.len() > MAX_API_KEY_BYTES || !key.iter().all(|b| (0x21..=0x7e).contains(b)) {
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

/// All header-phase checks, in the order of ARCHITECTURE.md: API key, token
/// (signature, time, binding, body hash format), declared body size.
pub fn check_headers(
    headers: &[(String, Vec<u8>)],
    request: &RequestLine<'_>,
    jwt: &JwtPolicy,
    max_body_bytes: u64,
    now_s: i64,
) -> Result<Admitted, Denial> {
    let key = api_key(headers)?;
    let token = auth_token(headers)?;
    let token = verify_token(token, jwt, request, now_s)?;
    if let Some(length) = header_value(headers, "content-length") {
        let declared = std::str::from_utf8(length)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body_bytes) {
            return Err(Denial::PayloadTooLarge);
        }
    }
    Ok(Admitted {
        key_hash: sha256(key),
        token,
    })
}

/// What a key verdict means for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDecision {
    /// The key's id, when the registry knows the key (for metering).
    pub key_id: Option<i64>,
    /// Pass, or the denial the verdict calls for.
    pub result: Result<i64, Denial>,
}

/// Maps a verdict to a decision at `now_ms`: `active` passes (unless the
/// key has passed its own `expires_at`: then it is an expired key),
/// `revoked`/`expired` are 403, `not_found` is `invalid_api_key`.
pub fn decide_key(entry: &CacheEntry, now_ms: u64) -> KeyDecision {
    let result = match (entry.verdict, entry.key_id) {
        (KeyVerdict::Active, Some(id)) if !entry.key_expired_at(now_ms) => Ok(id),
        (KeyVerdict::Active, Some(_)) | (KeyVerdict::Expired, _) => Err(Denial::ExpiredApiKey),
        (KeyVerdict::Active, None) => Err(Denial::AuthUnavailable),
        (KeyVerdict::Revoked, _) => Err(Denial::RevokedApiKey),
        (KeyVerdict::NotFound, _) => Err(Denial::InvalidApiKey),
    };
    KeyDecision {
        key_id: entry.key_id,
        result,
    }
}

/// Largest verification answer the filter reads.
pub const MAX_VERIFY_REPLY_BYTES: usize = 16 * 1024;

/// The sidecar's answer to a verification callout: `None` unless the
/// status is 200 and the body is a [`VerifyReply`].
pub fn parse_verify_reply(status: Option<&[u8]>, body: Option<&[u8]>) -> Option<VerifyReply> {
    if status != Some(b"200".as_slice()) {
        return None;
    }
    let body = body?;
    if body.len() > MAX_VERIFY_REPLY_BYTES {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// How the request ended, as far as the filter decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Let through with this key id.
    Allowed(i64),
    /// Refused.
    Denied(Denial),
}

/// What the glue must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep holding the request: the verdict or the rest of the body is missing.
    Wait,
    /// Everything checked out: set the key id header and let the request go.
    Allow(i64),
    /// Send this error as the one local reply; never resume.
    Deny(Denial),
    /// The request was already decided; nothing more to do.
    Decided,
}

/// The state of one request between its headers and the decision.
///
/// The verdict and the end of the body may arrive in either order; the
/// decision is made when both are in. A bad verdict denies at once; a body
/// whose hash does not match denies only once the verdict is known, so the
/// answer (and the usage record) does not depend on whether the key
/// happened to be cached.
#[derive(Debug, Clone)]
pub struct Gate {
    expected_body: Digest32,
    max_body_bytes: u64,
    hasher: BodyHasher,
    body_complete: bool,
    key: Option<KeyDecision>,
    outcome: Option<Outcome>,
}

impl Gate {
    /// A request whose token signed `expected_body`.
    pub fn new(expected_body: Digest32, max_body_bytes: u64) -> Self {
        Gate {
            expected_body,
            max_body_bytes,
            hasher: BodyHasher::new(),
            body_complete: false,
            key: None,
            outcome: None,
        }
    }

    /// A request denied before a gate could be built (header checks).
    pub fn denied(denial: Denial) -> Self {
        Gate {
            outcome: Some(Outcome::Denied(denial)),
            ..Gate::new([0; 32], 0)
        }
    }

    /// Body bytes hashed so far.
    pub fn body_bytes(&self) -> u64 {
        self.hasher.bytes()
    }

    /// The key id, once a verdict named one.
    pub fn key_id(&self) -> Option<i64> {
        self.key.and_then(|k| k.key_id)
    }

    /// The decision, once made.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// Whether the verdict is still missing.
    pub fn awaiting_key(&self) -> bool {
        self.key.is_none() && self.outcome.is_none()
    }

    /// The key verdict arrived (from the cache or the sidecar).
    pub fn key_known(&mut self, decision: KeyDecision) -> Next {
        if self.key.is_none() {
            self.key = Some(decision);
        }
        self.next()
    }

    /// Fails the request (host error, no verdict): the one way out that is
    /// neither a verdict nor a body.
    pub fn fail(&mut self, denial: Denial) -> Next {
        if self.outcome.is_some() {
            return Next::Decided;
        }
        self.outcome = Some(Outcome::Denied(denial));
        Next::Deny(denial)
    }

    /// Replaces any decision, even an `Allow` the host could not carry out
    /// (e.g. the key id header could not be set): fail closed.
    pub fn overrule(&mut self, denial: Denial) -> Next {
        self.outcome = Some(Outcome::Denied(denial));
        Next::Deny(denial)
    }

    /// Envoy holds `total` body bytes so far. `fetch(start, len)` returns
    /// the bytes not hashed yet; they are hashed and forgotten.
    pub fn body(
        &mut self,
        total: u64,
        end_of_stream: bool,
        fetch: impl FnOnce(u64, u64) -> Option<Vec<u8>>,
    ) -> Next {
        if self.outcome.is_some() {
            return Next::Decided;
        }
        if total > self.max_body_bytes {
            return self.fail(Denial::PayloadTooLarge);
        }
        let seen = self.hasher.bytes();
        if total > seen {
            let wanted = total - seen;
            match fetch(seen, wanted) {
                Some(chunk) if chunk.len() as u64 == wanted => self.hasher.update(&chunk),
                _ => return self.fail(Denial::AuthUnavailable),
            }
        }
        if end_of_stream {
            self.body_complete = true;
        }
        self.next()
    }

    /// The body ended without data (end of stream in the headers, or trailers).
    pub fn body_end(&mut self) -> Next {
        if self.outcome.is_none() {
            self.body_complete = true;
        }
        self.next()
    }

    fn next(&mut self) -> Next {
        if self.outcome.is_some() {
            return Next::Decided;
        }
        let decided = match self.key.map(|k| k.result) {
            Some(Err(denial)) => Some(Outcome::Denied(denial)),
            Some(Ok(key_id)) if self.body_complete => {
                if self.hasher.digest() == self.expected_body {
                    Some(Outcome::Allowed(key_id))
                } else {
                    Some(Outcome::Denied(Denial::BodyHashMismatch))
                }
            }
            _ => None,
        };
        self.outcome = decided;
        match decided {
            None => Next::Wait,
            Some(Outcome::Allowed(id)) => Next::Allow(id),
            Some(Outcome::Denied(d)) => Next::Deny(d),
        }
    }
}

/// What the glue knows of a finished exchange, to meter it.
#[derive(Debug, Clone)]
pub struct Exchange<'a> {
    /// The id the filter minted.
    pub request_id: &'a str,
    /// `:method`.
    pub method: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    /// The key id, if a verdict named one.
    pub key_id: Option<i64>,
    /// The filter's decision, if it made one.
    pub outcome: Option<Outcome>,
    /// `:status` of the response, if one was seen.
    pub response_status: Option<u16>,
    /// Request body bytes hashed.
    pub request_bytes: u64,
    /// Response body bytes counted.
    pub response_bytes: u64,
    /// When the request headers arrived, ms since the epoch.
    pub started_ms: u64,
    /// When the stream ended, ms since the epoch.
    pub ended_ms: u64,
}

/// Status recorded when the client went away before any response started
/// (nginx's convention; within the 100-599 range the sidecar accepts).
pub const CLIENT_CLOSED_STATUS: u16 = 499;

/// The request path without its query, cut to `wire::MAX_ENDPOINT_LEN` at a
/// character boundary.
pub fn endpoint_of(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = if path.is_empty() { "/" } else { path };
    truncate_at_char(path, MAX_ENDPOINT_LEN).to_string()
}

fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// The usage record of an exchange: only when a verdict named a key and the
/// filter decided (allowed, or denied after the verdict).
pub fn usage_record(x: &Exchange<'_>) -> Option<UsageRecord> {
    let key_id = x.key_id?;
    let (outcome, fallback_status) = match x.outcome? {
        Outcome::Allowed(_) => (OUTCOME_ALLOWED, CLIENT_CLOSED_STATUS),
        Outcome::Denied(d) => (d.code(), d.status()),
    };
    let method = truncate_at_char(x.method, MAX_METHOD_LEN);
    Some(UsageRecord {
        request_id: x.request_id.to_string(),
        api_key_id: key_id,
        method: if method.is_empty() { "-" } else { method }.to_string(),
        endpoint: endpoint_of(x.path),
        status_code: x.response_status.unwrap_or(fallback_status),
        outcome: outcome.to_string(),
        request_bytes: x.request_bytes,
        response_bytes: x.response_bytes,
        duration_ms: x.ended_ms.saturating_sub(x.started_ms),
        timestamp_ms: x.started_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::to_hex;

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
    fn api_key_rules() {
        assert_eq!(
            api_key(&h(&[("authorization", "Bearer tg_abc")])),
            Ok(&b"tg_abc"[..])
        );
        assert_eq!(
            api_key(&h(&[("authorization", "bearer tg_abc")])),
            Ok(&b"tg_abc"[..])
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
        let long = format!("Bearer {}", "k".repeat(MAX_API_KEY_BYTES));
        assert!(api_key(&h(&[("authorization", &long)])).is_ok());
        let long = format!("Bearer {}", "k".repeat(MAX_API_KEY_BYTES + 1));
        assert_eq!(
            api_key(&h(&[("authorization", &long)])),
            Err(Denial::InvalidApiKey)
        );
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

    fn active(id: i64) -> KeyDecision {
        KeyDecision {
            key_id: Some(id),
            result: Ok(id),
        }
    }

    fn fetch_from(body: &[u8]) -> impl FnOnce(u64, u64) -> Option<Vec<u8>> + '_ {
        move |start, len| {
            body.get(start as usize..(start + len) as usize)
                .map(<[u8]>::to_vec)
        }
    }

    #[test]
    fn verdict_first_then_chunked_body() {
        let body = b"hello world, in pieces";
        let mut g = Gate::new(sha256(body), 1024);
        assert_eq!(g.key_known(active(7)), Next::Wait);
        assert_eq!(g.body(5, false, fetch_from(body)), Next::Wait);
        assert_eq!(g.body(12, false, fetch_from(body)), Next::Wait);
        assert_eq!(
            g.body(body.len() as u64, true, fetch_from(body)),
            Next::Allow(7)
        );
        assert_eq!(g.body_bytes(), body.len() as u64);
        assert_eq!(g.outcome(), Some(Outcome::Allowed(7)));
        assert_eq!(g.key_known(active(7)), Next::Decided);
    }

    #[test]
    fn body_first_then_verdict() {
        let body = b"{}";
        let mut g = Gate::new(sha256(body), 1024);
        assert_eq!(g.body(2, true, fetch_from(body)), Next::Wait);
        assert!(g.awaiting_key());
        assert_eq!(g.key_known(active(3)), Next::Allow(3));
    }

    #[test]
    fn empty_body_at_end_of_headers() {
        let mut g = Gate::new(sha256(b""), 0);
        assert_eq!(g.body_end(), Next::Wait);
        assert_eq!(g.key_known(active(1)), Next::Allow(1));
    }

    #[test]
    fn a_body_mismatch_waits_for_the_verdict_in_either_order() {
        let mut g = Gate::new(sha256(b"signed"), 1024);
        assert_eq!(g.body(4, true, fetch_from(b"sent")), Next::Wait);
        assert_eq!(g.key_known(active(3)), Next::Deny(Denial::BodyHashMismatch));
        assert_eq!(g.key_id(), Some(3));

        let mut g = Gate::new(sha256(b"signed"), 1024);
        assert_eq!(g.key_known(active(3)), Next::Wait);
        assert_eq!(
            g.body(4, true, fetch_from(b"sent")),
            Next::Deny(Denial::BodyHashMismatch)
        );
    }

    #[test]
    fn a_bad_verdict_denies_at_once_and_keeps_the_key_id() {
        let mut g = Gate::new(sha256(b"x"), 1024);
        let revoked = KeyDecision {
            key_id: Some(9),
            result: Err(Denial::RevokedApiKey),
        };
        assert_eq!(g.key_known(revoked), Next::Deny(Denial::RevokedApiKey));
        assert_eq!(g.key_id(), Some(9));
        assert_eq!(g.body(1, true, fetch_from(b"x")), Next::Decided);
    }

    #[test]
    fn a_body_over_the_limit_is_refused_without_fetching() {
        let mut g = Gate::new(sha256(b""), 10);
        assert_eq!(g.body(10, false, fetch_from(&[0; 10])), Next::Wait);
        assert_eq!(
            g.body(11, false, |_, _| panic!("must not fetch")),
            Next::Deny(Denial::PayloadTooLarge)
        );
        assert_eq!(g.key_known(active(1)), Next::Decided);
    }

    #[test]
    fn an_allow_can_be_overruled() {
        let mut g = Gate::new(sha256(b""), 10);
        g.key_known(active(1));
        assert_eq!(g.body_end(), Next::Allow(1));
        assert_eq!(
            g.overrule(Denial::AuthUnavailable),
            Next::Deny(Denial::AuthUnavailable)
        );
        assert_eq!(g.outcome(), Some(Outcome::Denied(Denial::AuthUnavailable)));
        assert_eq!(g.fail(Denial::MissingToken), Next::Decided);
    }

    #[test]
    fn a_failed_body_read_fails_closed() {
        let mut g = Gate::new(sha256(b"abc"), 10);
        assert_eq!(
            g.body(3, true, |_, _| None),
            Next::Deny(Denial::AuthUnavailable)
        );
        let mut g = Gate::new(sha256(b"abc"), 10);
        assert_eq!(
            g.body(3, true, |_, _| Some(vec![1])),
            Next::Deny(Denial::AuthUnavailable)
        );
    }

    #[test]
    fn verdict_meanings() {
        let entry = |verdict, key_id, expires_at_s| CacheEntry {
            key_hash: [0; 32],
            verdict,
            key_id,
            expires_at_s,
            fetched_at_ms: 0,
        };
        let now = 1_000_000;
        let d = |e: CacheEntry| decide_key(&e, now).result;
        assert_eq!(d(entry(KeyVerdict::Active, Some(4), None)), Ok(4));
        assert_eq!(d(entry(KeyVerdict::Active, Some(4), Some(1_001))), Ok(4));
        assert_eq!(
            d(entry(KeyVerdict::Active, Some(4), Some(1_000))),
            Err(Denial::ExpiredApiKey)
        );
        assert_eq!(
            d(entry(KeyVerdict::Active, None, None)),
            Err(Denial::AuthUnavailable)
        );
        assert_eq!(
            d(entry(KeyVerdict::Revoked, Some(4), None)),
            Err(Denial::RevokedApiKey)
        );
        assert_eq!(
            d(entry(KeyVerdict::Expired, Some(4), None)),
            Err(Denial::ExpiredApiKey)
        );
        assert_eq!(
            d(entry(KeyVerdict::NotFound, None, None)),
            Err(Denial::InvalidApiKey)
        );
        assert_eq!(
            decide_key(&entry(KeyVerdict::Revoked, Some(4), None), now).key_id,
            Some(4)
        );
    }

    #[test]
    fn verify_replies() {
        let ok = br#"{"verdict":"active","key_id":1}"#;
        assert!(parse_verify_reply(Some(b"200"), Some(ok)).is_some());
        assert!(parse_verify_reply(Some(b"500"), Some(ok)).is_none());
        assert!(parse_verify_reply(None, Some(ok)).is_none());
        assert!(parse_verify_reply(Some(b"200"), None).is_none());
        assert!(parse_verify_reply(Some(b"200"), Some(b"nope")).is_none());
        assert!(parse_verify_reply(Some(b"200"), Some(br#"{"verdict":"maybe"}"#)).is_none());
    }

    #[test]
    fn endpoints_drop_the_query_and_fit_the_column() {
        assert_eq!(endpoint_of("/proxy/analyze?x=1"), "/proxy/analyze");
        assert_eq!(endpoint_of("?x"), "/");
        let long = format!("/{}", "é".repeat(400));
        let e = endpoint_of(&long);
        assert!(e.len() <= MAX_ENDPOINT_LEN && e.len() >= MAX_ENDPOINT_LEN - 1);
        assert!(long.starts_with(&e));
    }

    #[test]
    fn usage_records_need_a_key_and_a_decision() {
        let x = Exchange {
            request_id: "0123456789abcdef0123456789abcdef",
            method: "POST",
            path: "/proxy/analyze?q=1",
            key_id: Some(5),
            outcome: Some(Outcome::Allowed(5)),
            response_status: Some(200),
            request_bytes: 3,
            response_bytes: 4,
            started_ms: 1_000,
            ended_ms: 1_025,
        };
        let r = usage_record(&x).unwrap();
        assert_eq!(r.endpoint, "/proxy/analyze");
        assert_eq!(
            (r.status_code, r.duration_ms, r.timestamp_ms),
            (200, 25, 1_000)
        );
        assert_eq!(r.outcome, "allowed");
        assert_eq!(r.validate(), Ok(()));

        let denied = Exchange {
            outcome: Some(Outcome::Denied(Denial::RevokedApiKey)),
            response_status: None,
            ..x.clone()
        };
        let r = usage_record(&denied).unwrap();
        assert_eq!(
            (r.status_code, r.outcome.as_str()),
            (403, "revoked_api_key")
        );

        assert!(usage_record(&Exchange {
            key_id: None,
            ..x.clone()
        })
        .is_none());
        assert!(usage_record(&Exchange {
            outcome: None,
            ..x.clone()
        })
        .is_none());
        let gone = Exchange {
            response_status: None,
            ..x
        };
        assert_eq!(
            usage_record(&gone).unwrap().status_code,
            CLIENT_CLOSED_STATUS
        );
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
        let line = RequestLine {
            method: "GET",
            path: "/",
        };
        let run = |pairs: &[(&str, &str)]| check_headers(&h(pairs), &line, &policy, 10, 0);
        assert_eq!(run(&[]), Err(Denial::MissingApiKey));
        assert_eq!(
            run(&[("authorization", "Bearer k")]),
            Err(Denial::MissingToken)
        );
        assert_eq!(
            run(&[("authorization", "Bearer k"), ("x-auth-token", "a.b")]),
            Err(Denial::MalformedToken(
                "expected three dot-separated segments"
            ))
        );
        let _ = to_hex(&[0]);
    }
}
