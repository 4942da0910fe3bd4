//! The limits step of admission, for a key that has limits: charge its
//! budget (no network call while the budget holds enough), or park the
//! request on a grant call when it does not, then charge again. A spent
//! quota or an empty bucket is 429; a budget that cannot be used, or a
//! grant call that gives no usable answer, fails closed (503
//! `auth_unavailable`).

use tollgate_wire::grant::GRANTS_PATH;
use tollgate_wire::QuotaKind;

use super::{Admission, Outcome, Wait};
use crate::error::Denial;
use crate::flow::Flow;
use crate::host::{LogLevel, StreamHost};
use crate::limits::{self, index, Charge, ChargeId};
use crate::sidecar_call;

/// How many grant calls one request may wait for before it fails closed
/// (near a quota's end, each grant takes a share of what is left, so
/// requests waiting together may need a few rounds).
pub const MAX_GRANT_ROUNDS: u8 = 16;

/// What the limits step charged a request: the response needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charged {
    /// The `RateLimit` value for the response, when it carries one.
    pub ratelimit: Option<String>,
    /// The key has quotas charged when the response ends.
    pub settles_after: bool,
}

impl<H: StreamHost> Flow<H> {
    /// Charges the request to its key's budget (a key without limits has
    /// nothing to charge); waits for a grant call when the budget holds
    /// less than the charge. `rounds`: grant calls waited on so far.
    pub(super) fn charge_limits(&mut self, admission: &mut Admission, rounds: u8) -> Outcome {
        if !admission.limited {
            return Outcome::Done;
        }
        let key_id = admission.key_id;
        let Some(worker) = self.worker.clone() else {
            return Outcome::deny(Denial::AuthUnavailable);
        };
        // A request is charged to the window its headers arrived in (no
        // second wall-clock call), and to the bucket now, on the clock
        // that never steps.
        let now = self.exchange.started_ms;
        let Some(mono_ms) = self.host.monotonic_ms() else {
            self.log(LogLevel::Error, "no monotonic clock; refusing");
            return Outcome::deny(Denial::AuthUnavailable);
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
                let headers = worker.config().limits.ratelimit_headers;
                admission.charged = Some(Charged {
                    ratelimit: (headers && !ratelimit.is_empty()).then_some(ratelimit),
                    settles_after,
                });
                Outcome::Done
            }
            Charge::Denied(denial, headers) => Outcome::Deny(denial, headers),
            Charge::Wait {
                kind,
                pending,
                recent_use,
            } => {
                if rounds >= MAX_GRANT_ROUNDS {
                    self.log(
                        LogLevel::Warn,
                        "the key's grants kept falling short; refusing",
                    );
                    return Outcome::deny(Denial::AuthUnavailable);
                }
                let config = &worker.config();
                let body = limits::ask_body(key_id, kind, &pending, recent_use);
                match sidecar_call::post(
                    &self.host,
                    config,
                    GRANTS_PATH,
                    &body,
                    config.limits.grant_timeout_ms,
                    Some(&self.exchange.request_id),
                ) {
                    Ok(token) => Outcome::Wait(
                        token,
                        Wait::Grant {
                            kind,
                            id: pending.id,
                            rounds: rounds + 1,
                        },
                    ),
                    Err(e) => {
                        self.log(
                            LogLevel::Error,
                            &format!("cannot send the grant call: {e}; refusing"),
                        );
                        Outcome::deny(Denial::AuthUnavailable)
                    }
                }
            }
            Charge::Failed(why) => {
                self.log(LogLevel::Error, &format!("{why}; refusing"));
                Outcome::deny(Denial::AuthUnavailable)
            }
        }
    }

    /// The grant call the request waits on answered: the budget takes the
    /// grant in, and the request is charged again. An unusable answer fails
    /// the request closed; its ask stays in the budget for the tick.
    pub(super) fn grant_answered(
        &mut self,
        admission: &mut Admission,
        kind: QuotaKind,
        id: ChargeId,
        rounds: u8,
        body_size: usize,
    ) -> Outcome {
        let status = self.host.callout_status();
        let body = (body_size > 0 && body_size <= limits::MAX_REPLY_BYTES)
            .then(|| self.host.callout_body(body_size))
            .flatten();
        let reply = limits::parse_reply(status.as_deref(), body.as_deref());
        match limits::grant_answered(&self.host, admission.key_id, kind, &id, reply) {
            Ok(()) => self.charge_limits(admission, rounds),
            Err(why) => {
                self.log(LogLevel::Warn, &format!("{why}; refusing"));
                Outcome::deny(Denial::AuthUnavailable)
            }
        }
    }
}
