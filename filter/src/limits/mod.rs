//! Rate limits and quotas on the request path, with no network call for a
//! key that is in use: each budget (a key's own, `tollgate.limits.<key
//! id>`, or its team's, shared by all of the team's keys,
//! `tollgate.limits.team.<team id>`; [`BudgetOwner`]) is a [`Budget`] in
//! shared data, every worker of this Envoy charges it with
//! compare-and-swap, and grants of the fleet's budget arrive ahead of
//! need on the tick (`POST /v1/internal/grants`). A request waits for the
//! network only when the budget holds less than its charge; it is refused
//! (429) only when the sidecar says the quota is spent, or the rate is
//! exceeded. See docs/LIMITS.md.
//!
//! The verify reply names a key's limits and its team's ([`limits_known`]); the flow
//! charges a request ([`charge`]), waits on an ask ([`ask_body`],
//! [`grant_answered`]), charges a response ([`charge_after`]) and trues
//! up an LLM call's token reservations ([`settle`]); the root's
//! tick sends what is due for the keys its worker served ([`tick`],
//! [`tick_answered`]).

mod budget;
mod charged;
pub mod index;
mod ratelimit_headers;

use std::collections::BTreeMap;

use tollgate_wire::grant::{GrantAsk, GrantReply, GrantRequest, Settlement};
pub use tollgate_wire::BudgetOwner;
use tollgate_wire::{to_hex, Limits};

pub use crate::llm::TokenBound;
pub use budget::{
    Admission, Applied, At, Budget, ChargeId, Demand, Due, Pending, QuotaId, Reserved, Used,
    UNSTAMPED,
};
pub use charged::{Charged, ChargedBudget};
pub use ratelimit_headers::{denial_headers, remaining_header};

use crate::error::Denial;
use crate::host::Host;
use crate::shared_table::{self, Change, Updated};

/// The filter configuration's `limits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsPolicy {
    /// The response header the upstream reports a call's units in
    /// (lowercase); empty: none is read.
    pub units_header: String,
    /// Whether allowed responses of a limited key carry `RateLimit`.
    pub ratelimit_headers: bool,
    /// Timeout of a grant call.
    pub grant_timeout_ms: u64,
}

/// Prefix of a key's budget in shared data.
pub const BUDGET_KEY_PREFIX: &str = "tollgate.limits.";

/// Prefix of a team's budget in shared data.
pub const TEAM_BUDGET_KEY_PREFIX: &str = "tollgate.limits.team.";

/// Attempts of one read-decide-write on a budget before giving up.
const CAS_ATTEMPTS: u32 = 16;

/// Largest grant answer the filter reads.
pub const MAX_REPLY_BYTES: usize = 256 * 1024;

/// The shared-data key of a budget.
pub fn budget_key(owner: BudgetOwner) -> String {
    match owner {
        BudgetOwner::Key(id) => format!("{BUDGET_KEY_PREFIX}{id}"),
        BudgetOwner::Team(id) => format!("{TEAM_BUDGET_KEY_PREFIX}{id}"),
    }
}

/// One read-decide-write of `owner`'s budget: `decide` gets the budget
/// (`None`: missing or unreadable) and says what to write.
fn update_budget<R>(
    host: &impl Host,
    owner: BudgetOwner,
    mut decide: impl FnMut(Option<Budget>) -> Change<R>,
) -> shared_table::Update<R> {
    shared_table::update(host, &budget_key(owner), CAS_ATTEMPTS, |current| {
        decide(current.and_then(Budget::decode))
    })
}

/// Applies `change` to `owner`'s budget, if it has one.
fn change_budget(
    host: &impl Host,
    owner: BudgetOwner,
    mut change: impl FnMut(&mut Budget),
) -> Updated<()> {
    update_budget(host, owner, |budget| match budget {
        Some(mut budget) => {
            change(&mut budget);
            Change::Write(budget.encode())
        }
        None => Change::Stop(()),
    })
    .result
}

/// Which budgets a key's admitted requests are charged to: its own, when
/// it has limits, and its team's, when it is in a team that has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budgets {
    pub own: bool,
    pub team: Option<i64>,
    /// One of them has a money quota: an LLM call is priced
    /// (`crate::prices`).
    pub priced: bool,
}

impl Budgets {
    /// Whether any budget is charged.
    pub fn any(self) -> bool {
        self.own || self.team.is_some()
    }

    /// The budgets of key `key_id`, in the order they are charged: its own
    /// first, then its team's.
    pub fn owners(self, key_id: i64) -> impl Iterator<Item = BudgetOwner> {
        let own = self.own.then_some(BudgetOwner::Key(key_id));
        own.into_iter().chain(self.team.map(BudgetOwner::Team))
    }
}

/// A fresh ask or settlement id from the host's randomness.
pub fn fresh_id(host: &impl Host) -> Option<ChargeId> {
    let mut id = [0u8; budget::CHARGE_ID_LEN];
    host.random(&mut id).then_some(id)
}

/// The verify reply named `owner`'s `limits`: its budget takes them in
/// (made on first sight, holding nothing; changed when they differ); a new
/// bucket is stamped `mono_ms`. False when the budget cannot be written
/// (the key's requests then fail closed).
pub fn limits_known(host: &impl Host, owner: BudgetOwner, limits: &Limits, mono_ms: u64) -> bool {
    let update = update_budget(host, owner, |budget| match budget {
        Some(budget) if budget.limits == *limits => Change::Stop(()),
        Some(budget) => Change::Write(budget.with_limits(limits.clone(), mono_ms).encode()),
        None => Change::Write(Budget::new(limits.clone(), mono_ms).encode()),
    });
    matches!(update.result, Updated::Written | Updated::Stopped(()))
}

/// What charging a request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charge {
    /// Charged. `ratelimit`: the `RateLimit` value for the response;
    /// `settles_after`: the key has quotas charged when the response ends;
    /// `reserved`: what token quotas reserved, settled when it ends.
    Admitted {
        ratelimit: String,
        settles_after: bool,
        reserved: Vec<Reserved>,
    },
    /// Refused, with the reply's extra headers.
    Denied(Denial, Vec<(&'static str, String)>),
    /// The budget holds less than the request's charge of `quota`: send
    /// this ask and charge again once it is answered.
    Wait {
        quota: QuotaId,
        pending: Pending,
        recent_use: u64,
    },
    /// The budget cannot be read or written: fail closed.
    Failed(&'static str),
}

/// Charges a request asking `demand` at `at` to `owner`'s budget; `fresh`
/// mints the id of a new ask, should one be needed. `openai`: a refusal of
/// a token quota also carries OpenAI's `x-ratelimit-*-tokens` headers.
pub fn charge(
    host: &impl Host,
    owner: BudgetOwner,
    demand: &Demand,
    at: At,
    openai: bool,
    fresh: impl Fn() -> Option<ChargeId>,
) -> (Charge, u32) {
    let now_ms = at.wall_ms;
    let is_team = matches!(owner, BudgetOwner::Team(_));
    let mut answer = Charge::Failed("the budget is missing or unreadable");
    let update = update_budget(host, owner, |budget| {
        let Some(mut budget) = budget else {
            answer = Charge::Failed("the budget is missing or unreadable");
            return Change::Stop(());
        };
        // A refusal writes nothing, unless its refill restarted a bucket
        // an older filter stamped: else every next read restarts it again,
        // and the bucket never refills.
        let unstamped = budget.refilled_ms == UNSTAMPED;
        let refused = |budget: &Budget| {
            if unstamped && budget.refilled_ms != UNSTAMPED {
                Change::Write(budget.encode())
            } else {
                Change::Stop(())
            }
        };
        match budget.admit(at, demand) {
            Admission::Admit => {
                answer = Charge::Admitted {
                    ratelimit: remaining_header(&budget, owner, now_ms),
                    settles_after: budget
                        .quotas
                        .iter()
                        .any(|s| !s.quota.kind.charged_at_admission()),
                    reserved: budget.reservations(demand),
                };
                Change::Write(budget.encode())
            }
            Admission::RateLimited { retry_after_s } => {
                let headers = denial_headers(&budget, owner, None, retry_after_s, now_ms, false);
                answer = Charge::Denied(Denial::RateLimited { team: is_team }, headers);
                refused(&budget)
            }
            Admission::QuotaExceeded {
                quota,
                retry_after_s,
            } => {
                let headers =
                    denial_headers(&budget, owner, Some(&quota), retry_after_s, now_ms, openai);
                answer = Charge::Denied(Denial::QuotaExceeded { team: is_team }, headers);
                refused(&budget)
            }
            Admission::NeverFits {
                quota,
                charge,
                limit,
            } => {
                let retry_after_s = budget
                    .quota_mut(&quota)
                    .map_or(1, |s| s.seconds_left(now_ms));
                let headers =
                    denial_headers(&budget, owner, Some(&quota), retry_after_s, now_ms, openai);
                let denial = Denial::QuotaNeverFits {
                    team: is_team,
                    kind: quota.kind,
                    charge,
                    limit,
                };
                answer = Charge::Denied(denial, headers);
                refused(&budget)
            }
            Admission::NeedGrant { quota, need } => {
                let (recent_use, in_flight) = budget
                    .quota_mut(&quota)
                    .map_or((0, None), |s| (s.demand().max(need), s.pending));
                let Some(id) = in_flight.map(|p| p.id).or_else(&fresh) else {
                    answer = Charge::Failed("no randomness for a grant id");
                    return Change::Stop(());
                };
                match budget.ask(&quota, need, id, now_ms) {
                    Some(pending) => {
                        answer = Charge::Wait {
                            quota: quota.clone(),
                            pending,
                            recent_use,
                        };
                        Change::Write(budget.encode())
                    }
                    None => {
                        answer = Charge::Failed("the budget lost a quota");
                        Change::Stop(())
                    }
                }
            }
        }
    });
    let answer = match update.result {
        Updated::Written | Updated::Stopped(()) => answer,
        // A refusal whose restamp lost every race is still a refusal (the
        // next read restamps); anything else charged nothing: fail closed.
        Updated::Contended if matches!(answer, Charge::Denied(..)) => answer,
        Updated::Contended => Charge::Failed("the budget stayed contended"),
        Updated::Failed(_) => Charge::Failed("the budget cannot be read or written"),
    };
    (answer, update.retries)
}

/// Gives back a charge whose request was refused after all.
pub fn refund(host: &impl Host, owner: BudgetOwner, demand: &Demand) {
    change_budget(host, owner, |budget| budget.refund(demand));
}

/// Charges a finished response to `owner`'s quotas settled after the fact
/// (a scoped one only for a call naming its `model`).
pub fn charge_after(
    host: &impl Host,
    owner: BudgetOwner,
    response_bytes: u64,
    units: u64,
    model: Option<&str>,
    now_ms: u64,
) {
    change_budget(host, owner, |budget| {
        budget.charge_after(response_bytes, units, model, now_ms)
    });
}

/// An LLM call ended having `used` these tokens (and money): its
/// reservations become that count, the rest given back
/// ([`Budget::settle`]).
pub fn settle(
    host: &impl Host,
    owner: BudgetOwner,
    reserved: &[Reserved],
    used: &Used,
    now_ms: u64,
) -> Updated<()> {
    change_budget(host, owner, |budget| budget.settle(reserved, used, now_ms))
}

/// The body of a waiting request's grant call.
pub fn ask_body(
    owner: BudgetOwner,
    quota: &QuotaId,
    pending: &Pending,
    recent_use: u64,
) -> Vec<u8> {
    let request = GrantRequest {
        asks: vec![ask(owner, quota, pending, recent_use)],
        ..GrantRequest::default()
    };
    serde_json::to_vec(&request).unwrap_or_default()
}

/// The ask `pending` of `owner`'s `quota` on the wire.
fn ask(owner: BudgetOwner, quota: &QuotaId, pending: &Pending, recent_use: u64) -> GrantAsk {
    let (key_id, team_id) = owner.ids();
    GrantAsk {
        grant_id: to_hex(&pending.id),
        key_id,
        team_id,
        quota: quota.kind,
        model: quota.model.clone(),
        need: pending.amount,
        recent_use,
    }
}

/// A grant call's answer (`status`, `body`), if it is one.
pub fn parse_reply(status: Option<&[u8]>, body: Option<&[u8]>) -> Option<GrantReply> {
    if status != Some(b"200".as_slice()) {
        return None;
    }
    serde_json::from_slice(body?).ok()
}

/// A waiting request's ask was answered: the budget takes the grant in.
/// `Err` when the answer is unusable (the request fails closed) or names
/// no key or team.
pub fn grant_answered(
    host: &impl Host,
    owner: BudgetOwner,
    quota: &QuotaId,
    id: &ChargeId,
    reply: Option<GrantReply>,
) -> Result<(), &'static str> {
    let hex = to_hex(id);
    let given = reply
        .and_then(|r| r.grants.into_iter().find(|g| g.grant_id == hex))
        .ok_or("the grant call gave no usable answer")?;
    let mut applied = Applied::Done;
    let updated = change_budget(host, owner, |budget| {
        applied = budget.apply_grant(quota, id, &given);
    });
    match (updated, applied) {
        (_, Applied::UnknownKey) => Err("the sidecar knows no key or team of this id"),
        (Updated::Written, Applied::Done) => Ok(()),
        _ => Err("the budget cannot be updated"),
    }
}

/// One item of a tick's grant call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickItem {
    pub owner: BudgetOwner,
    pub due: Due,
}

/// A tick's grant call in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickCall {
    pub token: u32,
    /// The asks, then the settlements, in the call's order.
    pub asks: Vec<TickItem>,
    pub settlements: Vec<TickItem>,
}

/// The tick: for each budget this Envoy charged lately, what is due (asks
/// ahead of need, settlements), in one grant call, which `send` sends
/// (the body in, the call's token out). An ask or settlement unanswered
/// for `policy.grant_timeout_ms` is due again, under the same id.
pub fn tick(
    host: &impl Host,
    policy: &LimitsPolicy,
    now_ms: u64,
    send: impl FnOnce(&[u8]) -> Option<u32>,
) -> Option<TickCall> {
    let owners = index::owners(host);
    let resend_ms = policy.grant_timeout_ms;
    let mut asks = Vec::new();
    let mut settlements = Vec::new();
    let mut idle = Vec::new();
    for (owner, seen_ms) in owners {
        let mut due = Vec::new();
        update_budget(host, owner, |budget| {
            due.clear();
            let Some(mut budget) = budget else {
                return Change::Stop(());
            };
            let before = budget.clone();
            due = budget.due(now_ms, resend_ms, || fresh_id(host).unwrap_or_default());
            if budget == before {
                Change::Stop(())
            } else {
                Change::Write(budget.encode())
            }
        });
        if due.is_empty() && now_ms.saturating_sub(seen_ms) > index::IDLE_MS {
            idle.push(owner);
        }
        for d in due {
            let admission = d.quota.kind.charged_at_admission();
            let item = TickItem { owner, due: d };
            if admission {
                asks.push(item);
            } else {
                settlements.push(item);
            }
        }
    }
    index::forget(host, &idle, now_ms);
    if asks.is_empty() && settlements.is_empty() {
        return None;
    }
    let request = GrantRequest {
        asks: asks
            .iter()
            .map(|i| ask(i.owner, &i.due.quota, &i.due.pending, i.due.recent_use))
            .collect(),
        settlements: settlements
            .iter()
            .map(|i| {
                let (key_id, team_id) = i.owner.ids();
                Settlement {
                    settlement_id: to_hex(&i.due.pending.id),
                    key_id,
                    team_id,
                    quota: i.due.quota.kind,
                    model: i.due.quota.model.clone(),
                    amount: i.due.pending.amount,
                }
            })
            .collect(),
        ..GrantRequest::default()
    };
    let body = serde_json::to_vec(&request).ok()?;
    let token = send(&body)?;
    Some(TickCall {
        token,
        asks,
        settlements,
    })
}

/// The tick's grant call answered: each budget takes its answers in. An
/// unusable answer changes nothing: what was sent stays pending, and is
/// sent again under the same ids.
pub fn tick_answered(host: &impl Host, call: &TickCall, reply: Option<GrantReply>) -> bool {
    let Some(reply) = reply else {
        return false;
    };
    let mut by_owner: BTreeMap<BudgetOwner, Vec<Answer>> = BTreeMap::new();
    for (item, given) in call.asks.iter().zip(reply.grants) {
        by_owner
            .entry(item.owner)
            .or_default()
            .push(Answer::Grant(item.due.clone(), given));
    }
    for (item, done) in call.settlements.iter().zip(reply.settlements) {
        by_owner
            .entry(item.owner)
            .or_default()
            .push(Answer::Settled(item.due.clone(), done));
    }
    for (owner, answers) in by_owner {
        change_budget(host, owner, |budget| {
            for answer in &answers {
                match answer {
                    Answer::Grant(due, given) if given.grant_id == to_hex(&due.pending.id) => {
                        budget.apply_grant(&due.quota, &due.pending.id, given);
                    }
                    Answer::Settled(due, done) if done.settlement_id == to_hex(&due.pending.id) => {
                        budget.apply_settlement(&due.quota, &due.pending.id, done);
                    }
                    _ => {}
                }
            }
        });
    }
    true
}

enum Answer {
    Grant(Due, tollgate_wire::grant::GrantGiven),
    Settled(Due, tollgate_wire::grant::SettlementDone),
}

#[cfg(test)]
mod tests;
