//! The middle of a request's life: its headers passed, and the flow waits
//! for the key verdict and the whole body, which may arrive in either order.
//! The decision is made when both are in. A bad verdict denies at once; a
//! body whose hash does not match denies only once the verdict is known, so
//! the answer (and the usage record) does not depend on whether the key
//! happened to be cached.

use tollgate_wire::Digest32;

use crate::body::BodyHasher;
use crate::error::Denial;
use crate::replay::JtiClaim;
use crate::verdict::KeyDecision;

/// Where the key verdict stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// A verification call is in flight under this token.
    Awaiting(u32),
    /// The verdict is in (from the cache, the sidecar or a stale entry).
    Known(KeyDecision),
}

/// What the flow does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep holding the request: the verdict or the rest of the body is missing.
    Hold,
    /// Every check passed: claim the `jti` (if any), name the key, let it go.
    Admit(i64),
    /// Answer with this error; never resume.
    Deny(Denial),
}

/// A request being checked.
#[derive(Debug, Clone)]
pub struct Checking {
    /// SHA-256 of the API key.
    pub key_hash: Digest32,
    /// Where the verdict stands.
    pub key: KeyState,
    /// The `jti` to claim once everything else passed (replay protection).
    pub jti: Option<JtiClaim>,
    expected_body: Digest32,
    max_body_bytes: u64,
    hasher: BodyHasher,
    body_complete: bool,
}

impl Checking {
    /// A request whose token signed `expected_body`.
    pub fn new(
        key_hash: Digest32,
        key: KeyState,
        jti: Option<JtiClaim>,
        expected_body: Digest32,
        max_body_bytes: u64,
    ) -> Self {
        Checking {
            key_hash,
            key,
            jti,
            expected_body,
            max_body_bytes,
            hasher: BodyHasher::new(),
            body_complete: false,
        }
    }

    /// Body bytes hashed so far.
    pub fn body_bytes(&self) -> u64 {
        self.hasher.bytes()
    }

    /// The verdict arrived.
    pub fn key_known(&mut self, decision: KeyDecision) -> Next {
        self.key = KeyState::Known(decision);
        self.next()
    }

    /// The host holds `total` body bytes so far. `fetch(start, len)` returns
    /// the bytes not hashed yet; they are hashed and forgotten.
    pub fn body(
        &mut self,
        total: u64,
        end_of_stream: bool,
        fetch: impl FnOnce(u64, u64) -> Option<Vec<u8>>,
    ) -> Next {
        if total > self.max_body_bytes {
            return Next::Deny(Denial::PayloadTooLarge);
        }
        let seen = self.hasher.bytes();
        if total > seen {
            let wanted = total - seen;
            match fetch(seen, wanted) {
                Some(chunk) if chunk.len() as u64 == wanted => self.hasher.update(&chunk),
                _ => return Next::Deny(Denial::AuthUnavailable),
            }
        }
        if end_of_stream {
            self.body_complete = true;
        }
        self.next()
    }

    /// The body ended without more data (end of stream in the headers, or trailers).
    pub fn body_end(&mut self) -> Next {
        self.body_complete = true;
        self.next()
    }

    /// What the verdict and the body so far call for.
    pub fn next(&self) -> Next {
        match self.key {
            KeyState::Known(KeyDecision {
                result: Err(denial),
                ..
            }) => Next::Deny(denial),
            KeyState::Known(KeyDecision {
                result: Ok(key_id), ..
            }) if self.body_complete => {
                if self.hasher.digest() == self.expected_body {
                    Next::Admit(key_id)
                } else {
                    Next::Deny(Denial::BodyHashMismatch)
                }
            }
            _ => Next::Hold,
        }
    }
}
