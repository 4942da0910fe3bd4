//! The middle of a request's life: its headers passed, and the flow waits
//! for the key verdict and the whole body, which may arrive in either order.
//! The verdict names the secret the token must be signed with (the key's
//! own, or the shared ones), so the token's signature and claims are checked
//! when it arrives; then a bad token denies, then a bad verdict. A body
//! whose hash does not match denies only once both are known, so the answer
//! (and the usage record) does not depend on whether the key happened to be
//! cached.

use tollgate_wire::Digest32;

use crate::body::BodyHasher;
use crate::error::Denial;
use crate::limits::Budgets;
use crate::replay::JtiClaim;
use crate::token::{PreparedToken, Secret};
use crate::verdict::KeyDecision;

/// Where the key verdict stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Not looked up yet (between the header checks and the cache).
    Unasked,
    /// A verification call is in flight.
    Awaiting(VerifyCall),
    /// The verdict is in (from the cache, the sidecar or a stale entry).
    Known(KeyDecision),
}

/// A verification call in flight, and what its answer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyCall {
    /// The callout's token: only its answer counts.
    pub token: u32,
    /// When it was sent (ms since the epoch).
    pub sent_ms: u64,
    /// Whether it is the call sent again after a quick failure (another
    /// sidecar may answer); it is sent again at most once.
    pub retried: bool,
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

/// What a token that verified binds the request to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The body digest the token signed.
    pub expected_body: Digest32,
    /// The `jti` to claim once everything else passed (replay protection).
    pub jti: Option<JtiClaim>,
}

/// Where the token stands.
#[derive(Debug, Clone)]
enum TokenState {
    /// Its form passed; the signature and the claims wait for the verdict.
    Pending(PreparedToken),
    /// Checked against the secret the verdict named.
    Checked(Result<Verified, Denial>),
}

/// A request being checked.
#[derive(Debug, Clone)]
pub struct Checking {
    /// SHA-256 of the API key.
    pub key_hash: Digest32,
    /// Where the verdict stands.
    pub key: KeyState,
    /// When the request headers arrived (seconds): the token's time claims
    /// are judged at this instant, whenever the verdict comes.
    pub headers_at_s: i64,
    token: TokenState,
    max_body_bytes: u64,
    hasher: BodyHasher,
    body_complete: bool,
}

impl Checking {
    /// A request carrying `token` (its form checked) whose headers arrived
    /// at `headers_at_s`, its key not looked up yet.
    pub fn new(
        key_hash: Digest32,
        token: PreparedToken,
        headers_at_s: i64,
        max_body_bytes: u64,
    ) -> Self {
        Checking {
            key_hash,
            key: KeyState::Unasked,
            headers_at_s,
            token: TokenState::Pending(token),
            max_body_bytes,
            hasher: BodyHasher::new(),
            body_complete: false,
        }
    }

    /// The `jti` claim of a verified token, taken once (by the admission).
    pub fn take_jti(&mut self) -> Option<JtiClaim> {
        match &mut self.token {
            TokenState::Checked(Ok(verified)) => verified.jti.take(),
            _ => None,
        }
    }

    /// The budgets the verdict in says the key's requests are charged to.
    pub fn budgets(&self) -> Budgets {
        match &self.key {
            KeyState::Known(decision) => decision.budgets,
            _ => Budgets::default(),
        }
    }

    /// Whether the verification call in flight is the callout `token`.
    pub fn awaits(&self, token: u32) -> Option<VerifyCall> {
        match self.key {
            KeyState::Awaiting(call) if call.token == token => Some(call),
            _ => None,
        }
    }

    /// Body bytes hashed so far.
    pub fn body_bytes(&self) -> u64 {
        self.hasher.bytes()
    }

    /// The verdict arrived: the token is checked with the secret it names
    /// (`verify(token, key secret)`), once.
    pub fn key_known(
        &mut self,
        decision: KeyDecision,
        verify: impl FnOnce(&PreparedToken, Option<&Secret>) -> Result<Verified, Denial>,
    ) -> Next {
        if let TokenState::Pending(token) = &self.token {
            let checked = verify(token, decision.signing_secret.as_ref());
            self.token = TokenState::Checked(checked);
        }
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

    /// What the token, the verdict and the body so far call for.
    pub fn next(&self) -> Next {
        let KeyState::Known(decision) = &self.key else {
            return Next::Hold;
        };
        let verified = match &self.token {
            TokenState::Checked(Ok(verified)) => verified,
            TokenState::Checked(Err(denial)) => return Next::Deny(*denial),
            // A verdict without a token check cannot pass.
            TokenState::Pending(_) => return Next::Deny(Denial::AuthUnavailable),
        };
        match decision.result {
            Err(denial) => Next::Deny(denial),
            Ok(_) if !self.body_complete => Next::Hold,
            Ok(key_id) if self.hasher.digest() == verified.expected_body => Next::Admit(key_id),
            Ok(_) => Next::Deny(Denial::BodyHashMismatch),
        }
    }
}
