//! The limits step of admission, for a key that has limits or is in a
//! team that has them: charge each budget (no network call while it holds
//! enough), or park the request on a grant call when one does not, then
//! charge again. A spent
//! quota or an empty bucket is 429; a budget that cannot be used, or a
//! grant call that gives no usable answer, fails closed (503
//! `auth_unavailable`).
//!
//! An LLM call's token quotas are charged a reservation (its token bound);
//! a call that sets no output cap and reserved one is forwarded with the
//! default cap its reservation counted on.

use tollgate_wire::grant::GRANTS_PATH;
use tollgate_wire::{Provider, QuotaKind};

use super::{Admission, Outcome, Wait};
use crate::error::Denial;
use crate::flow::Flow;
use crate::host::{LogLevel, StreamHost};
use crate::limits::{
    self, index, BudgetOwner, Charge, ChargeId, Charged, ChargedBudget, Demand, QuotaId,
};
use crate::llm::rewrite;
use crate::sidecar_call;
use crate::worker::Worker;

/// How many grant calls one request may wait for before it fails closed
/// (near a quota's end, each grant takes a share of what is left, so
/// requests waiting together may need a few rounds).
pub const MAX_GRANT_ROUNDS: u8 = 16;

impl Admission {
    /// What the request asks of its key's quotas: its body's bytes, and
    /// on an LLM route its model and token bound (its route's default cap
    /// standing for a cap it does not set).
    pub fn demand(&self, request_bytes: u64) -> Demand<'_> {
        match &self.llm {
            Some(call) => Demand {
                request_bytes,
                model: Some(call.model()),
                tokens: call.token_bound(),
            },
            None => Demand::bytes(request_bytes),
        }
    }
}

impl<H: StreamHost> Flow<H> {
    /// Charges the request to each of its budgets, the key's own first,
    /// then its team's (a key without either has nothing to charge). The
    /// request is admitted only when every budget admits it: a refusal or
    /// a wait for a grant gives back what the budgets before it charged,
    /// and the request is charged afresh once the grant is in. `rounds`:
    /// grant calls waited on so far.
    pub(super) fn charge_limits(&mut self, admission: &mut Admission, rounds: u8) -> Outcome {
        if !admission.budgets.any() {
            return Outcome::Done;
        }
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
        let demand = admission.demand(self.exchange.request_bytes);
        let openai = self.exchange.llm_api.map(|a| a.provider()) == Some(Provider::OpenAi);
        let mut charged: Vec<ChargedBudget> = Vec::with_capacity(2);
        let mut ratelimit = String::new();
        for owner in admission.budgets.owners(admission.key_id) {
            let (charge, _retries) =
                limits::charge(host, owner, &demand, at, openai, || limits::fresh_id(host));
            index::served(host, &worker.limited_keys, owner, now);
            let Charge::Admitted {
                ratelimit: remaining,
                settles_after,
                reserved,
            } = charge
            else {
                for budget in &charged {
                    limits::refund(host, budget.owner, &demand);
                }
                return self.not_admitted(owner, charge, rounds, &worker);
            };
            if ratelimit.is_empty() {
                ratelimit = remaining;
            }
            charged.push(ChargedBudget {
                owner,
                settles_after,
                reserved,
            });
        }
        let headers = worker.config().limits.ratelimit_headers;
        // The default cap is written only when a reservation counted on
        // it: an `input_tokens` quota alone leaves the call as is.
        let capped = charged
            .iter()
            .flat_map(|b| &b.reserved)
            .any(|r| matches!(r.quota.kind, QuotaKind::Tokens | QuotaKind::OutputTokens));
        admission.charged = Some(Charged {
            ratelimit: (headers && !ratelimit.is_empty()).then_some(ratelimit),
            budgets: charged,
        });
        if capped {
            if let Err(why) = self.write_default_cap(admission) {
                self.log(LogLevel::Error, &format!("{why}; refusing"));
                return Outcome::deny(Denial::AuthUnavailable);
            }
        }
        Outcome::Done
    }

    /// A budget did not admit the request (`charge`): a refusal, a grant
    /// call to wait on, or a failure (closed).
    fn not_admitted(
        &mut self,
        owner: BudgetOwner,
        charge: Charge,
        rounds: u8,
        worker: &Worker,
    ) -> Outcome {
        match charge {
            Charge::Denied(denial, headers) => Outcome::Deny(denial, headers),
            Charge::Wait {
                quota,
                pending,
                recent_use,
            } => {
                if rounds >= MAX_GRANT_ROUNDS {
                    self.log(
                        LogLevel::Warn,
                        &format!(
                            "the grants of {} kept falling short; refusing",
                            owner.describe()
                        ),
                    );
                    return Outcome::deny(Denial::AuthUnavailable);
                }
                let config = &worker.config();
                let body = limits::ask_body(owner, &quota, &pending, recent_use);
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
                            owner,
                            quota,
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
                self.log(
                    LogLevel::Error,
                    &format!("{why} ({}); refusing", owner.describe()),
                );
                Outcome::deny(Denial::AuthUnavailable)
            }
            // Only a charge that did not admit comes here; were an admission
            // to, it would be refused rather than let through unrecorded.
            Charge::Admitted { .. } => Outcome::deny(Denial::AuthUnavailable),
        }
    }

    /// A call whose reservation counted on the default output cap is
    /// forwarded with it (the admission's charge is then given back by
    /// the refusal that follows a failure).
    fn write_default_cap(&mut self, admission: &mut Admission) -> Result<(), String> {
        let Some(call) = admission.llm.as_mut().filter(|c| c.lacks_output_cap()) else {
            return Ok(());
        };
        let cap = call.default_cap();
        let size = usize::try_from(call.forwarded_bytes()).map_err(|e| e.to_string())?;
        let body = self
            .host
            .request_body(0, size)
            .ok_or("cannot read the request body")?;
        let capped = rewrite::with_output_cap(call.api(), &body, cap)
            .ok_or("cannot write the output cap into the request body")?;
        self.host
            .replace_request_body(size, &capped)
            .and_then(|()| {
                self.host
                    .set_request_header("content-length", &capped.len().to_string())
            })
            .map_err(|e| format!("cannot rewrite the body: {e}"))?;
        call.body_rewritten(capped.len() as u64);
        call.output_cap_written(cap);
        Ok(())
    }

    /// The grant call the request waits on answered: `owner`'s budget
    /// takes the grant in, and the request is charged again. An unusable
    /// answer fails the request closed; its ask stays in the budget for
    /// the tick.
    pub(super) fn grant_answered(
        &mut self,
        admission: &mut Admission,
        owner: BudgetOwner,
        quota: QuotaId,
        id: ChargeId,
        rounds: u8,
        body_size: usize,
    ) -> Outcome {
        let status = self.host.callout_status();
        let body = (body_size > 0 && body_size <= limits::MAX_REPLY_BYTES)
            .then(|| self.host.callout_body(body_size))
            .flatten();
        let reply = limits::parse_reply(status.as_deref(), body.as_deref());
        match limits::grant_answered(&self.host, owner, &quota, &id, reply) {
            Ok(()) => self.charge_limits(admission, rounds),
            Err(why) => {
                self.log(LogLevel::Warn, &format!("{why}; refusing"));
                Outcome::deny(Denial::AuthUnavailable)
            }
        }
    }
}
