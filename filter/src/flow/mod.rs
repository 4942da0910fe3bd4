//! One request's flow through the filter, generic over its host: the
//! checks in the order of docs/ARCHITECTURE.md, the state they leave
//! behind, and what the host must do next.
//!
//! ```text
//! Started ──headers──► Checking ──verdict + whole body──► admission steps ──► Allowed ──end──► Ended
//!    │                  │ key: cached, or Awaiting a verify call       │  ▲
//!    │                  │ (stale fallback on failure)          Waiting  │  │ a step's callout answered
//!    │                  │                                  (grant call, │  │
//!    │                  │                                 fleet claim)  ▼  │
//!    └─ a check, a step or a host call refuses ──────────────────────► Denied ──end──► Ended
//! ```
//!
//! The stage owns all per-request state that is not the exchange's
//! metering record: each wait is a stage that owns what its answer needs,
//! and callout answers are matched in one place ([`Flow::on_callout_reply`]).
//! Every check returns a [`Next`] (hold, admit, deny) that [`Flow::drive`]
//! carries out with the host; admission is the ordered list of steps in
//! [`admission`]. The adapter of a host only forwards callbacks here. Any
//! host call that fails fails the request closed (503 `auth_unavailable`),
//! never open.

mod admission;
mod checking;
mod key;
mod response;

use std::rc::Rc;

use crate::error::Denial;
use crate::headers::{check_headers, header_value, STRIPPED_HEADERS};
use crate::host::{Action, LogLevel, StreamHost};
use crate::metering::{usage_record, Decision, Exchange};
use crate::metrics::{Counter, Metrics};
use crate::replay;
use crate::token::RequestLine;
use crate::usage::Pushed;
use crate::verdict::KeyDecision;
use crate::worker::Worker;

pub use admission::{Admission, Step, Wait, Waiting, MAX_GRANT_ROUNDS, STEPS};
pub use checking::{Checking, KeyState, Next, Verified, VerifyCall};
pub use response::{parse_units, Allowed};

/// Where a request stands; each stage owns what it waits on.
// The checking state is the large one; it is not boxed because the whole
// flow already lives in the one allocation the host makes per stream.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Stage {
    /// The request headers have not arrived yet.
    Started,
    /// The headers passed; the verdict and the body are awaited.
    Checking(Checking),
    /// Every check passed; a step of admission waits on its callout.
    Waiting(Waiting),
    /// Let through; what the response side needs.
    Allowed(Allowed),
    /// Refused (the local reply is sent).
    Denied(Denial),
    /// The stream ended and was metered.
    Ended,
}

impl Stage {
    /// Whether the request is still to be decided (a fault now must
    /// answer it, closed).
    pub fn undecided(&self) -> bool {
        matches!(
            self,
            Stage::Started | Stage::Checking(_) | Stage::Waiting(_)
        )
    }

    /// The decision, once made.
    pub fn decision(&self) -> Option<Decision> {
        match self {
            Stage::Allowed(allowed) => Some(Decision::Allowed(allowed.key_id)),
            Stage::Denied(denial) => Some(Decision::Denied(*denial)),
            Stage::Started | Stage::Checking(_) | Stage::Waiting(_) | Stage::Ended => None,
        }
    }
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
    /// What is metered of the exchange, learnt as it goes.
    exchange: Exchange,
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
        let config = &worker.config();
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
        self.exchange.llm_api = config.llm.api_of(&self.exchange.path);
        let key_header = self
            .exchange
            .llm_api
            .and_then(|api| crate::llm::routes::key_header(api.provider()));

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

        let admitted = match check_headers(&headers, key_header, &config.jwt, config.max_body_bytes)
        {
            Ok(admitted) => admitted,
            Err(denial) => return self.drive(Next::Deny(denial), Phase::Callback),
        };
        let headers_at_s = i64::try_from(now / 1000).unwrap_or(i64::MAX);
        self.stage = Stage::Checking(Checking::new(
            admitted.key_hash,
            admitted.token,
            headers_at_s,
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
        let config = &worker.config();
        let line = RequestLine {
            method: &self.exchange.method,
            path: &self.exchange.path,
        };
        let Stage::Checking(checking) = &mut self.stage else {
            return Next::Deny(Denial::AuthUnavailable);
        };
        let now_s = checking.headers_at_s;
        checking.key_known(decision, |token, key_secret| {
            let token = token.verify(key_secret, &config.jwt, &line, now_s)?;
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

    /// A callout answered (`body_size` bytes of body). The one place
    /// answers are matched: the stage that waits on this token takes it
    /// (the verification call of a request being checked, or a step of
    /// admission); any other answer (a late one) is ignored.
    pub fn on_callout_reply(&mut self, token: u32, body_size: usize) {
        match std::mem::replace(&mut self.stage, Stage::Ended) {
            Stage::Checking(checking) => match checking.awaits(token) {
                Some(call) => self.verify_answered(checking, call, body_size),
                None => self.stage = Stage::Checking(checking),
            },
            Stage::Waiting(waiting) if waiting.token == token => self.resume(waiting, body_size),
            other => self.stage = other,
        }
    }

    /// Response headers: the status and the units header (one read), for
    /// metering, and what an allowed request's response needs.
    pub fn on_response_headers(&mut self) -> Action {
        let allowed = matches!(self.stage, Stage::Allowed(_));
        let units_header = match &self.worker {
            Some(worker) if allowed => worker.config().limits.units_header.as_str(),
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
        match std::mem::replace(&mut self.stage, Stage::Ended) {
            Stage::Allowed(mut allowed) => {
                self.allowed_response(&mut allowed, units.as_deref());
                self.stage = Stage::Allowed(allowed);
            }
            other => self.stage = other,
        }
        Action::Continue
    }

    /// A response body chunk of `size` bytes passes (`end`: the last).
    pub fn on_response_body(&mut self, size: usize, end: bool) -> Action {
        self.exchange.response_bytes = self.exchange.response_bytes.saturating_add(size as u64);
        match std::mem::replace(&mut self.stage, Stage::Ended) {
            Stage::Allowed(mut allowed) => {
                self.allowed_chunk(&mut allowed, size, end);
                self.stage = Stage::Allowed(allowed);
            }
            other => self.stage = other,
        }
        Action::Continue
    }

    /// The stream ended: its usage record goes to the worker's buffer.
    pub fn on_log(&mut self) {
        let stage = std::mem::replace(&mut self.stage, Stage::Ended);
        if let Stage::Ended = stage {
            return;
        }
        let decision = stage.decision();
        let Some(worker) = self.worker.clone() else {
            return;
        };
        let ended = self.host.now_ms().unwrap_or(self.exchange.started_ms);
        let mut stage = stage;
        if let Stage::Allowed(allowed) = &mut stage {
            self.allowed_end(allowed, ended);
        }
        let Some(record) = usage_record(&self.exchange, decision, ended) else {
            return;
        };
        let pushed = worker.usage().push(record);
        match pushed {
            Pushed::Buffered => self.metrics.buffered(&self.host, 1),
            Pushed::Dropped => self.metrics.inc(&self.host, Counter::UsageRecordsDropped),
        }
    }

    /// What an already decided (or never started) stream answers a callback.
    fn settled(&self) -> Action {
        match self.stage {
            Stage::Allowed(_) | Stage::Ended => Action::Continue,
            _ => Action::Pause,
        }
    }

    /// A host call failed: fail closed, unless the request is decided already.
    fn fail(&mut self, why: &str) -> Action {
        self.log(LogLevel::Error, why);
        match std::mem::replace(&mut self.stage, Stage::Ended) {
            Stage::Started | Stage::Checking(_) => {
                self.drive(Next::Deny(Denial::AuthUnavailable), Phase::Callback)
            }
            Stage::Waiting(waiting) => {
                self.refuse(waiting.admission, Denial::AuthUnavailable, Vec::new());
                Action::Pause
            }
            other @ (Stage::Allowed(_) | Stage::Denied(_) | Stage::Ended) => {
                self.stage = other;
                self.settled()
            }
        }
    }

    /// Carries out a step.
    fn drive(&mut self, next: Next, phase: Phase) -> Action {
        match next {
            Next::Hold => Action::Pause,
            Next::Deny(denial) => {
                self.deny(denial, &[]);
                Action::Pause
            }
            Next::Admit(key_id) => {
                let Stage::Checking(checking) = &mut self.stage else {
                    self.deny(Denial::AuthUnavailable, &[]);
                    return Action::Pause;
                };
                let admission = Admission::new(key_id, checking.budgets(), checking.take_jti());
                self.admit(admission, phase)
            }
        }
    }

    /// Sends the one local reply of a denied request, with `extra` headers.
    fn deny(&mut self, denial: Denial, extra: &[(&'static str, String)]) {
        self.stage = Stage::Denied(denial);
        self.metrics.denied(&self.host, denial);
        self.exchange.reply_status = Some(denial.status());
        let body = denial.reply_body_on(self.exchange.llm_api, &self.exchange.request_id);
        let mut headers = denial.reply_headers();
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
mod llm_tests;
#[cfg(test)]
mod tests;
