//! The limits step of a request whose key has limits: charge its budget
//! (no network call while the budget holds enough), or hold the request
//! for a grant call when it does not, then charge again. A spent quota or
//! an empty bucket is 429; a budget that cannot be used, or a grant call
//! that gives no usable answer, fails closed (503 `auth_unavailable`).

use tollgate_wire::grant::GRANTS_PATH;
use tollgate_wire::MAX_UNITS;

use super::{Flow, Next, Phase};
use crate::error::Denial;
use crate::host::{LogLevel, StreamHost};
use crate::limits::{self, index, Charge};
use crate::sidecar_call;

/// How many grant calls one request may wait for before it fails closed
/// (near a quota's end, each grant takes a share of what is left, so
/// requests waiting together may need a few rounds).
pub const MAX_GRANT_ROUNDS: u8 = 16;

impl<H: StreamHost> Flow<H> {
    /// Charges the request to key `key_id`'s budget. `Ok(Some(token))`:
    /// it waits for the grant call under that token.
    pub(super) fn charge_limits(&mut self, key_id: i64) -> Result<Option<u32>, Denial> {
        let Some(worker) = self.worker.clone() else {
            return Err(Denial::AuthUnavailable);
        };
        // A request is charged to the window its headers arrived in (no
        // second wall-clock call), and to the bucket now, on the clock
        // that never steps.
        let now = self.exchange.started_ms;
        let Some(mono_ms) = self.host.monotonic_ms() else {
            self.log(LogLevel::Error, "no monotonic clock; refusing");
            return Err(Denial::AuthUnavailable);
        };
        let at = limits::At {
            wall_ms: now,
            mono_ms,
        };
        let host = &self.host;
        let (charge, _retries) =
            limits::charge(host, key_id, self.exchange.request_bytes, at, || {
                limits::fresh_id(host)
            });
        index::served(&self.host, &worker, key_id, now);
        match charge {
            Charge::Admitted {
                ratelimit,
                settles_after,
            } => {
                self.limits.charged = true;
                self.limits.settles_after = settles_after;
                if worker.config.limits.ratelimit_headers && !ratelimit.is_empty() {
                    self.limits.ratelimit = Some(ratelimit);
                }
                Ok(None)
            }
            Charge::Denied(denial, headers) => {
                self.limits.reply_headers = headers;
                Err(denial)
            }
            Charge::Wait {
                kind,
                pending,
                recent_use,
            } => {
                if self.limits.rounds >= MAX_GRANT_ROUNDS {
                    self.log(
                        LogLevel::Warn,
                        "the key's grants kept falling short; refusing",
                    );
                    return Err(Denial::AuthUnavailable);
                }
                self.limits.rounds += 1;
                let config = &worker.config;
                let body = limits::ask_body(key_id, kind, &pending, recent_use);
                let token = sidecar_call::post(
                    &self.host,
                    config,
                    GRANTS_PATH,
                    &body,
                    config.limits.grant_timeout_ms,
                    Some(&self.exchange.request_id),
                )
                .map_err(|e| {
                    self.log(
                        LogLevel::Error,
                        &format!("cannot send the grant call: {e}; refusing"),
                    );
                    Denial::AuthUnavailable
                })?;
                self.limits.waiting = Some((kind, pending.id));
                Ok(Some(token))
            }
            Charge::Failed(why) => {
                self.log(LogLevel::Error, &format!("{why}; refusing"));
                Err(Denial::AuthUnavailable)
            }
        }
    }

    /// The grant call this request waits on answered: the budget takes the
    /// grant in, and the request is charged again.
    pub(super) fn grant_answered(&mut self, key_id: i64, body_size: usize) {
        let status = self.host.callout_status();
        let body = (body_size > 0 && body_size <= limits::MAX_REPLY_BYTES)
            .then(|| self.host.callout_body(body_size))
            .flatten();
        let reply = limits::parse_reply(status.as_deref(), body.as_deref());
        let next = match self.limits.waiting.take() {
            Some((kind, id)) => {
                match limits::grant_answered(&self.host, key_id, kind, &id, reply) {
                    Ok(()) => Next::Admit(key_id),
                    Err(why) => {
                        self.log(LogLevel::Warn, &format!("{why}; refusing"));
                        Next::Deny(Denial::AuthUnavailable)
                    }
                }
            }
            None => Next::Deny(Denial::AuthUnavailable),
        };
        self.drive(next, Phase::Callout);
    }

    /// Response headers of a request let through: the units the upstream
    /// reported, and the `RateLimit` of a limited key.
    pub(super) fn limits_on_response(&mut self, units: Option<&[u8]>) {
        if let Some(value) = units {
            self.exchange.units = parse_units(value);
        }
        if let Some(value) = self.limits.ratelimit.take() {
            if let Err(e) = self.host.set_response_header("ratelimit", &value) {
                self.log(LogLevel::Warn, &format!("cannot set RateLimit: {e}"));
            }
        }
    }

    /// The stream ended: a response's bytes and units go to the key's
    /// quotas settled after the fact.
    pub(super) fn limits_on_end(&mut self, key_id: i64, ended_ms: u64) {
        if self.limits.settles_after {
            limits::charge_after(
                &self.host,
                key_id,
                self.exchange.response_bytes,
                self.exchange.units,
                ended_ms,
            );
        }
    }

    /// A request charged to its budget was refused after all (its `jti`):
    /// the charge goes back.
    pub(super) fn refund_limits(&mut self) {
        if !std::mem::take(&mut self.limits.charged) {
            return;
        }
        if let Some(key_id) = self.exchange.key_id {
            limits::refund(&self.host, key_id, self.exchange.request_bytes);
        }
    }
}

/// A units header's value: decimal digits, at most `MAX_UNITS`; anything
/// else counts 0.
pub fn parse_units(value: &[u8]) -> u64 {
    let text = std::str::from_utf8(value).unwrap_or_default().trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    text.parse::<u64>().map_or(MAX_UNITS, |n| n.min(MAX_UNITS))
}

/// What the limits step keeps of one request.
#[derive(Debug, Default)]
pub struct LimitsState {
    /// The key has limits (from its verdict).
    pub limited: bool,
    /// The request was charged to the budget.
    pub charged: bool,
    /// The key has quotas charged when the response ends.
    pub settles_after: bool,
    /// The `RateLimit` value for the response.
    pub ratelimit: Option<String>,
    /// Extra headers of a 429.
    pub reply_headers: Vec<(&'static str, String)>,
    /// The ask being waited on: its quota and id.
    pub waiting: Option<(tollgate_wire::QuotaKind, limits::ChargeId)>,
    /// Grant calls waited on so far.
    pub rounds: u8,
}
