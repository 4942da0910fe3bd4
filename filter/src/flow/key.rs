//! The key verdict of a request: from the shared cache, else from one
//! verification call to the sidecar; when the sidecar gives no usable
//! answer, a fresh entry another worker just wrote, else a stale positive
//! verdict within `stale_if_error_s`, else 503.

use tollgate_wire::{BudgetOwner, Digest32, VERIFY_PATH};

use super::checking::{Checking, VerifyCall};
use super::{Flow, KeyState, Next, Phase, Stage};
use crate::cache::{self, CacheEntry, Cached, Lookup};
use crate::error::Denial;
use crate::feed;
use crate::host::{LogLevel, StreamHost};
use crate::metrics::Counter;
use crate::sidecar_call;
use crate::verdict::{
    decide_key, parse_verify_reply, verify_request_body, KeyDecision, MAX_VERIFY_REPLY_BYTES,
};
use crate::worker::Worker;

impl<H: StreamHost> Flow<H> {
    /// The verdict from the cache, or a verification call in flight.
    pub(super) fn look_up_key(
        &mut self,
        worker: &Worker,
        key_hash: &Digest32,
        now: u64,
    ) -> Result<KeyState, Denial> {
        let policy = &worker.config().key_cache;
        let fed = worker.shared.feed_current();
        let cached = cache::read_slot(&self.host, key_hash, policy, worker.cache_key());
        if let Lookup::Fresh(entry) = cache::lookup(cached.as_ref(), key_hash, now, policy, fed) {
            self.metrics.inc(&self.host, Counter::KeyCacheHit);
            return Ok(KeyState::Known(self.decided(&entry, now)));
        }
        self.metrics.inc(&self.host, Counter::KeyCacheMiss);
        match self.send_verify(worker, key_hash, now, false) {
            Ok(call) => Ok(KeyState::Awaiting(call)),
            Err(e) => self
                .fall_back(worker, key_hash, &format!("callout not sent: {e}"), now)
                .map(KeyState::Known),
        }
    }

    fn send_verify(
        &mut self,
        worker: &Worker,
        key_hash: &Digest32,
        now: u64,
        retried: bool,
    ) -> Result<VerifyCall, crate::host::HostError> {
        let config = &worker.config();
        let body = verify_request_body(key_hash);
        let token = sidecar_call::post(
            &self.host,
            config,
            VERIFY_PATH,
            &body,
            config.callout_timeout_ms,
            Some(&self.exchange.request_id),
        )?;
        Ok(VerifyCall {
            token,
            sent_ms: now,
            retried,
        })
    }

    /// The verification call failed fast (no answer, or a 5xx, well within
    /// its timeout): a sidecar died under it, or the one picked is gone.
    /// The call is idempotent, so it is sent once more, and Envoy's load
    /// balancer picks a healthy sidecar. The retry, when it is in flight.
    fn retry_verify(
        &mut self,
        worker: &Worker,
        key_hash: &Digest32,
        call: VerifyCall,
        status: Option<&[u8]>,
        now: u64,
    ) -> Option<VerifyCall> {
        let server_error = status.is_none_or(|s| s.first() == Some(&b'5'));
        let quick = now.saturating_sub(call.sent_ms) < worker.config().callout_timeout_ms / 2;
        if call.retried || !server_error || !quick {
            return None;
        }
        let retry = self.send_verify(worker, key_hash, now, true).ok()?;
        self.metrics.inc(&self.host, Counter::VerifyRetries);
        Some(retry)
    }

    /// The verification call `call` of the request being checked answered
    /// (`body_size` bytes): its verdict, a retry of the call, or a refusal.
    pub(super) fn verify_answered(
        &mut self,
        mut checking: Checking,
        call: VerifyCall,
        body_size: usize,
    ) {
        let key_hash = checking.key_hash;
        let verdict = self.verdict_from_reply(&key_hash, call, body_size);
        let next = match verdict {
            Ok(Answered::Retrying(retry)) => {
                checking.key = KeyState::Awaiting(retry);
                self.stage = Stage::Checking(checking);
                return;
            }
            Ok(Answered::Known(decision)) => {
                self.stage = Stage::Checking(checking);
                self.key_known(decision)
            }
            Err(denial) => {
                self.stage = Stage::Checking(checking);
                Next::Deny(denial)
            }
        };
        self.drive(next, Phase::Callout);
    }

    /// The verdict in a verification call's answer, or the call's retry.
    fn verdict_from_reply(
        &mut self,
        key_hash: &Digest32,
        call: VerifyCall,
        body_size: usize,
    ) -> Result<Answered, Denial> {
        let Some(worker) = self.worker.clone() else {
            return Err(Denial::AuthUnavailable);
        };
        let Some(now) = self.host.now_ms() else {
            self.log(LogLevel::Error, "no clock");
            return Err(Denial::AuthUnavailable);
        };
        let status = self.host.callout_status();
        let body = if body_size > 0 && body_size <= MAX_VERIFY_REPLY_BYTES {
            self.host.callout_body(body_size)
        } else {
            None
        };
        let reply = parse_verify_reply(status.as_deref(), body.as_deref());
        let read_at = reply.as_ref().and_then(|r| r.feed_cursor);
        let limits = reply.as_ref().and_then(|r| r.limits.clone());
        let team_limits = reply.as_ref().and_then(|r| r.team_limits.clone());
        let prices = reply.as_ref().and_then(|r| r.prices.clone());
        let entry = reply.and_then(|reply| CacheEntry::from_reply(*key_hash, &reply, now));
        match entry {
            Some(entry) => {
                // The budgets first: a worker that finds the entry limited
                // finds the limits in the budgets. They hold no grant yet:
                // the verdict precedes the signature check, and only a
                // request that passed it asks for one.
                let own = entry
                    .key_id
                    .filter(|_| entry.limited)
                    .map(BudgetOwner::Key)
                    .zip(limits.as_ref());
                let team = entry.team.map(BudgetOwner::Team).zip(team_limits.as_ref());
                for (owner, limits) in own.into_iter().chain(team) {
                    match self.host.monotonic_ms() {
                        Some(mono_ms) => {
                            if !crate::limits::limits_known(&self.host, owner, limits, mono_ms) {
                                self.log(
                                    LogLevel::Warn,
                                    &format!("cannot write the budget of {}", owner.describe()),
                                );
                            }
                        }
                        None => self.log(
                            LogLevel::Warn,
                            "no monotonic clock: the key's budgets are not written",
                        ),
                    }
                }
                if let Some(prices) = &prices {
                    if let Err(e) = crate::prices::store(&self.host, prices) {
                        self.log(LogLevel::Warn, &format!("cannot store the prices: {e:?}"));
                    }
                }
                let policy = &worker.config().key_cache;
                match cache::write_slot(&self.host, &entry, policy, worker.cache_key(), now) {
                    Ok(Cached::Stored) => {
                        feed::verdict_cached(&self.host, &worker, &entry, read_at);
                    }
                    Ok(Cached::KeptActive) => {}
                    Err(e) => self.log(LogLevel::Warn, &format!("cannot cache a verdict: {e:?}")),
                }
                Ok(Answered::Known(self.decided(&entry, now)))
            }
            None => {
                if let Some(retry) =
                    self.retry_verify(&worker, key_hash, call, status.as_deref(), now)
                {
                    return Ok(Answered::Retrying(retry));
                }
                let why = match status {
                    Some(s) if s.as_slice() == b"200" => "unreadable answer".to_string(),
                    Some(s) => format!("status {}", String::from_utf8_lossy(&s)),
                    None => "no answer (timeout or connection failure)".to_string(),
                };
                self.fall_back(&worker, key_hash, &why, now)
                    .map(Answered::Known)
            }
        }
    }

    /// The sidecar gave no usable answer.
    fn fall_back(
        &mut self,
        worker: &Worker,
        key_hash: &Digest32,
        why: &str,
        now: u64,
    ) -> Result<KeyDecision, Denial> {
        self.metrics.inc(&self.host, Counter::CalloutFailures);
        let policy = &worker.config().key_cache;
        let fed = worker.shared.feed_current();
        let cached = cache::read_slot(&self.host, key_hash, policy, worker.cache_key());
        if let Lookup::Fresh(entry) = cache::lookup(cached.as_ref(), key_hash, now, policy, fed) {
            return Ok(self.decided(&entry, now));
        }
        if let Some(entry) = cache::stale_fallback(cached.as_ref(), key_hash, now, policy) {
            self.metrics.inc(&self.host, Counter::KeyCacheStale);
            self.log(
                LogLevel::Warn,
                &format!("key verification failed ({why}); using a stale verdict"),
            );
            return Ok(self.decided(&entry, now));
        }
        self.log(
            LogLevel::Warn,
            &format!("key verification failed ({why}); refusing"),
        );
        Err(Denial::AuthUnavailable)
    }

    /// What an entry decides, remembering the key id for metering.
    fn decided(&mut self, entry: &CacheEntry, now: u64) -> KeyDecision {
        let decision = decide_key(entry, now);
        self.exchange.key_id = decision.key_id;
        decision
    }
}

/// What a verification call's answer came to.
enum Answered {
    /// The verdict.
    Known(KeyDecision),
    /// The call was sent again (a quick failure).
    Retrying(VerifyCall),
}
