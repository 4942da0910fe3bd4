//! The response side of a request that was let through: what admission
//! left for it ([`Allowed`]), and what the response's headers, body and
//! end do with it (the units for metering and settled quotas, the
//! `RateLimit` header, a `jti` claim given back when Envoy found no route,
//! and an LLM call's answer read for its tokens as it passes).

use tollgate_wire::MAX_UNITS;

use super::Flow;
use crate::host::{LogLevel, StreamHost};
use crate::limits::{self, Charged, ChargedBudget};
use crate::llm::call::LlmCall;
use crate::metrics::Counter;
use crate::replay::{self, JtiClaim};
use crate::shared_table::Updated;

/// A request let through, and what its response needs.
#[derive(Debug)]
pub struct Allowed {
    pub key_id: i64,
    /// The `jti` it claimed in the instance's store, until its response
    /// shows whether it reached an upstream.
    claimed: Option<JtiClaim>,
    /// What the limits step charged it, for a limited key.
    charged: Option<Charged>,
    /// On an LLM route, the call whose answer is read for its tokens.
    llm: Option<Box<LlmCall>>,
}

impl Allowed {
    pub fn new(
        key_id: i64,
        claimed: Option<JtiClaim>,
        charged: Option<Charged>,
        llm: Option<LlmCall>,
    ) -> Self {
        Allowed {
            key_id,
            claimed,
            charged,
            llm: llm.map(Box::new),
        }
    }

    /// Each budget charged (the key's own, its team's).
    fn budgets(&self) -> &[ChargedBudget] {
        self.charged.as_ref().map_or(&[], |c| c.budgets.as_slice())
    }

    /// Whether a budget has quotas charged when the response ends.
    pub fn settles_after(&self) -> bool {
        self.budgets().iter().any(|b| b.settles_after)
    }
}

impl<H: StreamHost> Flow<H> {
    /// The response's headers of an allowed request: `units` (the units
    /// header's value, if any) for metering; its `RateLimit`; and a `jti`
    /// claim given back when Envoy answered itself for want of a route (a
    /// 404 whose details say so: the request never reached an upstream).
    pub(super) fn allowed_response(&mut self, allowed: &mut Allowed, units: Option<&[u8]>) {
        let unrouted = self.exchange.response_status == Some(replay::UNROUTED_STATUS);
        if let Some(claim) = allowed.claimed.take().filter(|_| unrouted) {
            let details = self.host.response_code_details();
            if details.is_some_and(|d| replay::UNROUTED_DETAILS.contains(&d.as_str())) {
                replay::release(&self.host, &claim);
            }
        }
        if let Some(value) = units {
            self.exchange.units = parse_units(value);
        }
        if let Some(call) = allowed.llm.as_mut() {
            call.response_started(self.exchange.response_status.unwrap_or(0));
        }
        let ratelimit = allowed.charged.as_mut().and_then(|c| c.ratelimit.take());
        if let Some(value) = ratelimit {
            if let Err(e) = self.host.set_response_header("ratelimit", &value) {
                self.log(LogLevel::Warn, &format!("cannot set RateLimit: {e}"));
            }
        }
    }

    /// A chunk of an allowed request's answer (`size` bytes; `end`: the
    /// last) passes: an LLM call's copy is read, and the chunk passes on
    /// at once, rewritten only on a chat stream whose usage-only chunk the
    /// gateway keeps from the client.
    pub(super) fn allowed_chunk(&mut self, allowed: &mut Allowed, size: usize, end: bool) {
        let Some(call) = allowed.llm.as_mut() else {
            return;
        };
        let Some(chunk) = self.host.response_chunk(size) else {
            self.log(LogLevel::Warn, "cannot read a response chunk");
            return;
        };
        if let Some(passed) = call.chunk(&chunk, end) {
            if let Err(e) = self.host.replace_response_chunk(size, &passed) {
                self.log(
                    LogLevel::Warn,
                    &format!("cannot rewrite a response chunk: {e}"),
                );
            }
        }
    }

    /// The stream of an allowed request ended: an LLM call's tokens are
    /// metered, and its token reservations become what it used; its
    /// response's bytes and units go to the key's quotas settled after the
    /// fact.
    pub(super) fn allowed_end(&mut self, allowed: &mut Allowed, ended_ms: u64) {
        if let Some(call) = allowed.llm.as_mut() {
            let metered = call.finish();
            if metered.skipped_lines > 0 {
                let skipped = Counter::LlmLinesSkipped;
                self.metrics.add(&self.host, skipped, metered.skipped_lines);
            }
            if let Some(why) = metered.estimated_because {
                self.metrics.inc(&self.host, Counter::LlmUsageEstimated);
                self.log(
                    LogLevel::Warn,
                    &format!("{} tokens estimated: {why}", metered.usage.api.name()),
                );
            }
            let used = limits::Used {
                tokens: metered.usage.tokens,
                cost: call.cost_of(&metered.usage.tokens),
            };
            for budget in allowed.budgets().iter().filter(|b| !b.reserved.is_empty()) {
                let settled =
                    limits::settle(&self.host, budget.owner, &budget.reserved, &used, ended_ms);
                if settled != Updated::Written {
                    self.log(
                        LogLevel::Warn,
                        &format!(
                            "cannot settle the call's token reservation of {}; it stays charged",
                            budget.owner.describe()
                        ),
                    );
                }
            }
            self.exchange.llm = Some(metered.usage);
        }
        let model = self.exchange.llm.as_ref().map(|u| u.model.as_str());
        for budget in allowed.budgets().iter().filter(|b| b.settles_after) {
            limits::charge_after(
                &self.host,
                budget.owner,
                self.exchange.response_bytes,
                self.exchange.units,
                model,
                ended_ms,
            );
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
