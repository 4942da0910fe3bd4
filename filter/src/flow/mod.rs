//! One request's flow through the filter, generic over its host: the
//! checks in the order of docs/ARCHITECTURE.md, the state they leave
//! behind, and what the host must do next.
//!
//! ```text
//! Started ──headers──► Checking ──verdict + whole body──► Decided ──end──► Ended
//!    │                  │ key: cached, or Awaiting a verify call (stale fallback on failure)
//!    └─ a header check fails, or a host call fails ──► Decided(Denied)
//! ```
//!
//! The flow owns all per-request state. Every step returns a [`Next`]
//! (hold, admit, deny) that [`Flow::drive`] carries out with the host; the
//! adapter of a host only forwards callbacks here. Any host call that fails
//! fails the request closed (503 `auth_unavailable`), never open.

mod checking;
mod fleet_claim;
mod key;
mod limited;

use std::rc::Rc;

use tollgate_wire::KEY_ID_HEADER;

use crate::error::Denial;
use crate::headers::{check_headers, header_value, STRIPPED_HEADERS};
use crate::host::{Action, LogLevel, StreamHost};
use crate::metering::{usage_record, Decision, Exchange};
use crate::metrics::{Counter, Metrics};
use crate::replay::{self, Claimed, JtiClaim, ReplayScope};
use crate::token::{prepare_token, RequestLine};
use crate::usage::Pushed;
use crate::verdict::KeyDecision;
use crate::worker::Worker;

pub use checking::{Checking, KeyState, Next, Verified};
pub use limited::parse_units;
use limited::LimitsState;

/// Where a request stands.
// The checking state is the large one; it is not boxed because the whole
// flow already lives in the one allocation the host makes per stream.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Stage {
    /// The request headers have not arrived yet.
    Started,
    /// The headers passed; the verdict and the body are awaited.
    Checking(Checking),
    /// Every check passed; key `key_id`'s budget holds less than the
    /// request's charge, and a grant call (callout `token`) is awaited.
    Granting { key_id: i64, token: u32 },
    /// Every check passed; the fleet-wide `jti` claim (callout `token`)
    /// is awaited for key `key_id`.
    Claiming { key_id: i64, token: u32 },
    /// The fleet claim answered; the decision follows at once.
    Claimed(i64),
    /// The filter decided.
    Decided(Decision),
    /// The stream ended and was metered.
    Ended,
}

/// How an admitted request goes on.
enum Admission {
    /// Let it through now.
    Now,
    /// Hold it for a grant of its key's budget under this callout token.
    Granting(u32),
    /// Hold it for the fleet `jti` claim under this callout token.
    Claiming(u32),
}

/// Where a decision is carried out: inside a stream callback (its return
/// value carries on), or in a callout's answer (the request must be resumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Callback,
    Callout,
}

/// One HTTP stream.
pub struct Flow<H: StreamHost> {
    host: H,
    worker: Option<Rc<Worker>>,
    metrics: Rc<Metrics>,
    stage: Stage,
    exchange: Exchange,
    /// When the request headers arrived (seconds): the token's time claims
    /// are judged at this instant, also when they are checked later.
    headers_at_s: i64,
    /// The `jti` this request claimed, until its response shows whether it
    /// reached an upstream (if it did not, the claim is given back).
    claimed: Option<JtiClaim>,
    /// The `jti` to claim once the limits step passed.
    jti: Option<JtiClaim>,
    /// The limits step's state.
    limits: LimitsState,
    /// When the key verification call was sent, and whether it was sent
    /// again after a quick failure (another sidecar may answer).
    verify_sent_ms: u64,
    verify_retried: bool,
}

impl<H: StreamHost> Flow<H> {
    /// A stream of a worker; `None` when the plugin has no valid
    /// configuration (every request then fails closed).
    pub fn new(host: H, worker: Option<Rc<Worker>>, metrics: Rc<Metrics>) -> Self {
        Flow {
            host,
            worker,
            metrics,
            stage: Stage::Started,
            exchange: Exchange::default(),
            headers_at_s: 0,
            claimed: None,
            jti: None,
            limits: LimitsState::default(),
            verify_sent_ms: 0,
            verify_retried: false,
        }
    }

    /// Where the request stands.
    pub fn stage(&self) -> &Stage {
        &self.stage
    }

    /// What the flow has learnt of the exchange so far.
    pub fn exchange(&self) -> &Exchange {
        &self.exchange
    }

    /// Header phase: everything that needs no network, then the verdict
    /// from the cache or one verification call.
    pub fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        let Some(worker) = self.worker.clone() else {
            return self.fail("the plugin has no valid configuration");
        };
        let config = &worker.config;
        let Some(now) = self.host.now_ms() else {
            return self.fail("no clock");
        };
        self.exchange.started_ms = now;
        let minted = match worker.request_ids.try_borrow_mut() {
            Ok(mut ids) => ids.mint(&self.host),
            Err(_) => return self.fail("request ids are busy"),
        };
        match minted {
            Some(id) => self.exchange.request_id = id,
            None => return self.fail("no randomness for a request id"),
        }
        let headers = match self.host.request_headers() {
            Ok(headers) => headers,
            Err(e) => return self.fail(&format!("cannot read headers: {e}")),
        };
        let text = |name| {
            header_value(&headers, name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        self.exchange.method = text(":method");
        self.exchange.path = text(":path");

        // The id the sidecar dedups by is ours, never the client's; the
        // credentials and the gateway's own headers never pass on. Only the
        // headers present are removed: a host call each.
        if let Err(e) = self
            .host
            .set_request_header("x-request-id", &self.exchange.request_id)
        {
            return self.fail(&format!("cannot set x-request-id: {e}"));
        }
        for name in STRIPPED_HEADERS {
            if header_value(&headers, name).is_none() {
                continue;
            }
            if let Err(e) = self.host.remove_request_header(name) {
                return self.fail(&format!("cannot strip {name}: {e}"));
            }
        }

        let admitted = match check_headers(&headers, &config.jwt, config.max_body_bytes) {
            Ok(admitted) => admitted,
            Err(denial) => return self.drive(Next::Deny(denial), Phase::Callback),
        };
        self.headers_at_s = i64::try_from(now / 1000).unwrap_or(i64::MAX);
        self.stage = Stage::Checking(Checking::new(
            admitted.key_hash,
            admitted.token,
            config.max_body_bytes,
        ));
        let next = match self.look_up_key(&worker, &admitted.key_hash, now) {
            Ok(KeyState::Known(decision)) => self.key_known(decision),
            Ok(awaiting) => match &mut self.stage {
                Stage::Checking(checking) => {
                    checking.key = awaiting;
                    Next::Hold
                }
                _ => Next::Deny(Denial::AuthUnavailable),
            },
            Err(denial) => Next::Deny(denial),
        };
        let next = match (&mut self.stage, next) {
            (Stage::Checking(checking), Next::Hold) if end_of_stream => checking.body_end(),
            (_, next) => next,
        };
        self.drive(next, Phase::Callback)
    }

    /// The verdict is in: the token is verified with the secret it names
    /// (the key's own, or the configuration's shared ones), then the
    /// verdict and the body decide.
    fn key_known(&mut self, decision: KeyDecision) -> Next {
        let Some(worker) = self.worker.clone() else {
            return Next::Deny(Denial::AuthUnavailable);
        };
        let config = &worker.config;
        let line = RequestLine {
            method: &self.exchange.method,
            path: &self.exchange.path,
        };
        let now_s = self.headers_at_s;
        self.limits.limited = decision.limited;
        let Stage::Checking(checking) = &mut self.stage else {
            return Next::Deny(Denial::AuthUnavailable);
        };
        checking.key_known(decision, |token, key_secret| {
            let token =
                prepare_token(token, &config.jwt)?.verify(key_secret, &config.jwt, &line, now_s)?;
            Ok(Verified {
                expected_body: token.body_sha256,
                jti: replay::claim_for(&token, &config.jwt, &config.replay)?,
            })
        })
    }

    /// A body chunk arrived; the host holds `size` bytes in all.
    pub fn on_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        let host = &self.host;
        let Stage::Checking(checking) = &mut self.stage else {
            return self.settled();
        };
        let next = checking.body(size as u64, end_of_stream, |start, len| {
            let start = usize::try_from(start).ok()?;
            let len = usize::try_from(len).ok()?;
            host.request_body(start, len)
        });
        self.exchange.request_bytes = checking.body_bytes();
        self.drive(next, Phase::Callback)
    }

    /// Trailers arrived: the body is complete.
    pub fn on_request_trailers(&mut self) -> Action {
        let Stage::Checking(checking) = &mut self.stage else {
            return self.settled();
        };
        let next = checking.body_end();
        self.drive(next, Phase::Callback)
    }

    /// Response headers: the status and the units header (one read), for
    /// metering. A request that claimed a `jti` but that Envoy answered
    /// itself for want of a route (a 404 whose details say so) gives the
    /// claim back: it never reached an upstream.
    pub fn on_response_headers(&mut self) -> Action {
        let allowed = matches!(self.stage, Stage::Decided(Decision::Allowed(_)));
        let units_header = match &self.worker {
            Some(worker) if allowed => worker.config.limits.units_header.as_str(),
            _ => "",
        };
        let mut values = if units_header.is_empty() {
            self.host.response_headers(&[":status"])
        } else {
            self.host.response_headers(&[":status", units_header])
        }
        .into_iter();
        self.exchange.response_status = values
            .next()
            .flatten()
            .and_then(|s| std::str::from_utf8(&s).ok()?.parse().ok());
        let units = values.next().flatten();
        let unrouted = self.exchange.response_status == Some(replay::UNROUTED_STATUS);
        if let Some(claim) = self.claimed.take().filter(|_| unrouted) {
            let details = self.host.response_code_details();
            if details.is_some_and(|d| replay::UNROUTED_DETAILS.contains(&d.as_str())) {
                replay::release(&self.host, &claim);
            }
        }
        if allowed {
            self.limits_on_response(units.as_deref());
        }
        Action::Continue
    }

    /// A response body chunk of `size` bytes passed.
    pub fn on_response_body(&mut self, size: usize) -> Action {
        self.exchange.response_bytes = self.exchange.response_bytes.saturating_add(size as u64);
        Action::Continue
    }

    /// The stream ended: its usage record goes to the worker's buffer.
    pub fn on_log(&mut self) {
        let decision = match std::mem::replace(&mut self.stage, Stage::Ended) {
            Stage::Decided(decision) => Some(decision),
            Stage::Ended => return,
            Stage::Started
            | Stage::Checking(_)
            | Stage::Granting { .. }
            | Stage::Claiming { .. }
            | Stage::Claimed(_) => None,
        };
        let Some(worker) = self.worker.clone() else {
            return;
        };
        let ended = self.host.now_ms().unwrap_or(self.exchange.started_ms);
        if let Some(Decision::Allowed(key_id)) = decision {
            self.limits_on_end(key_id, ended);
        }
        let Some(record) = usage_record(&self.exchange, decision, ended) else {
            return;
        };
        let pushed = match worker.usage.try_borrow_mut() {
            Ok(mut usage) => usage.push(record),
            Err(_) => Pushed::Dropped,
        };
        match pushed {
            Pushed::Buffered => self.metrics.buffered(&self.host, 1),
            Pushed::Dropped => self.metrics.inc(&self.host, Counter::UsageRecordsDropped),
        }
    }

    /// What an already decided (or never started) stream answers a callback.
    fn settled(&self) -> Action {
        match self.stage {
            Stage::Decided(Decision::Allowed(_)) | Stage::Ended => Action::Continue,
            _ => Action::Pause,
        }
    }

    /// A host call failed: fail closed, unless the request is decided already.
    fn fail(&mut self, why: &str) -> Action {
        self.log(LogLevel::Error, why);
        match self.stage {
            Stage::Started
            | Stage::Checking(_)
            | Stage::Granting { .. }
            | Stage::Claiming { .. }
            | Stage::Claimed(_) => self.drive(Next::Deny(Denial::AuthUnavailable), Phase::Callback),
            Stage::Decided(_) | Stage::Ended => self.settled(),
        }
    }

    /// Carries out a step.
    fn drive(&mut self, next: Next, phase: Phase) -> Action {
        match next {
            Next::Hold => Action::Pause,
            Next::Deny(denial) => {
                self.deny(denial);
                Action::Pause
            }
            Next::Admit(key_id) => match self.admit(key_id) {
                Ok(Admission::Now) => {
                    self.stage = Stage::Decided(Decision::Allowed(key_id));
                    self.metrics.inc(&self.host, Counter::RequestsAllowed);
                    if phase == Phase::Callout {
                        if let Err(e) = self.host.resume() {
                            self.log(LogLevel::Error, &format!("cannot resume: {e}"));
                        }
                    }
                    Action::Continue
                }
                Ok(Admission::Granting(token)) => {
                    self.stage = Stage::Granting { key_id, token };
                    Action::Pause
                }
                Ok(Admission::Claiming(token)) => {
                    self.stage = Stage::Claiming { key_id, token };
                    Action::Pause
                }
                Err(denial) => {
                    self.deny(denial);
                    Action::Pause
                }
            },
        }
    }

    /// The last steps of a request that passed every check: name its key
    /// for the upstream, charge its key's limits (the request may wait for
    /// a grant, and comes back here), then claim its `jti` (last, so only
    /// a request that is let through uses it up): in this instance's
    /// store, then, with `replay_scope: "fleet"`, through the sidecar (the
    /// request waits). A request coming back from the fleet claim only
    /// goes through.
    fn admit(&mut self, key_id: i64) -> Result<Admission, Denial> {
        if matches!(self.stage, Stage::Claimed(_)) {
            return Ok(Admission::Now);
        }
        if let Stage::Checking(checking) = &mut self.stage {
            self.jti = checking.take_jti();
            if let Err(e) = self
                .host
                .set_request_header(KEY_ID_HEADER, &key_id.to_string())
            {
                self.log(LogLevel::Error, &format!("cannot set {KEY_ID_HEADER}: {e}"));
                return Err(Denial::AuthUnavailable);
            }
        }
        if self.limits.limited && !self.limits.charged {
            if let Some(token) = self.charge_limits(key_id)? {
                return Ok(Admission::Granting(token));
            }
        }
        let Some(claim) = self.jti.take().map(|c| c.by_key(key_id)) else {
            return Ok(Admission::Now);
        };
        let now_s = self
            .host
            .now_ms()
            .and_then(|ms| i64::try_from(ms / 1000).ok())
            .ok_or(Denial::AuthUnavailable)?;
        let (claimed, retries) = replay::claim(&self.host, &claim, now_s);
        self.metrics
            .add(&self.host, Counter::ReplayCasRetries, u64::from(retries));
        let bucket = &claim.bucket_key;
        match claimed {
            Claimed::Recorded => {
                let fleet = self
                    .worker
                    .clone()
                    .filter(|w| w.config.replay.scope == ReplayScope::Fleet);
                self.claimed = Some(claim.clone());
                match fleet {
                    Some(worker) => self
                        .send_fleet_claim(&worker, &claim)
                        .map(Admission::Claiming),
                    None => Ok(Admission::Now),
                }
            }
            Claimed::Replayed => Err(Denial::ReplayedToken),
            Claimed::Full => {
                self.metrics.inc(&self.host, Counter::ReplayStoreFull);
                self.log(
                    LogLevel::Warn,
                    &format!(
                        "replay store bucket {bucket} is full of live entries; \
                         refusing (raise jwt.replay_slots)"
                    ),
                );
                Err(Denial::ReplayStoreFull)
            }
            Claimed::ShareExceeded => {
                self.log(
                    LogLevel::Warn,
                    &format!(
                        "key {key_id} holds its share of replay store bucket {bucket}; refusing"
                    ),
                );
                Err(Denial::TooManyLiveTokens)
            }
            Claimed::Unreadable => {
                self.log(
                    LogLevel::Error,
                    &format!("replay store bucket {bucket} cannot be read; refusing"),
                );
                Err(Denial::AuthUnavailable)
            }
            Claimed::Contended => {
                self.log(
                    LogLevel::Warn,
                    &format!("replay store bucket {bucket} stayed contended; refusing"),
                );
                Err(Denial::AuthUnavailable)
            }
            Claimed::Failed(e) => {
                self.log(
                    LogLevel::Error,
                    &format!("cannot update the replay store: {e}"),
                );
                Err(Denial::AuthUnavailable)
            }
        }
    }

    /// Sends the one local reply of a denied request.
    fn deny(&mut self, denial: Denial) {
        self.refund_limits();
        self.stage = Stage::Decided(Decision::Denied(denial));
        self.metrics.denied(&self.host, denial);
        self.exchange.reply_status = Some(denial.status());
        let body = denial.reply_body(&self.exchange.request_id);
        let mut headers = denial.reply_headers();
        let extra = std::mem::take(&mut self.limits.reply_headers);
        headers.extend(extra.iter().map(|(n, v)| (*n, v.as_str())));
        if let Err(e) = self.host.send_reply(denial.status(), &headers, &body) {
            self.log(LogLevel::Error, &format!("cannot send a local reply: {e}"));
            self.host.reset();
        }
    }

    /// A log line about this request.
    fn log(&self, level: LogLevel, message: &str) {
        let id = &self.exchange.request_id;
        self.host.log(level, &format!("request {id}: {message}"));
    }
}

#[cfg(test)]
mod tests;
