//! One Envoy's budget for one key, as every worker shares it: the key's
//! limits, its token bucket, and per quota what this Envoy holds of the
//! fleet's budget (a grant) or knows of the window's total; every decision
//! on it, in plain Rust, and its fixed binary form.
//!
//! - `requests` and `request_bytes` are charged at admission against what
//!   the grants brought ([`QuotaState::held`]); a request whose charge is
//!   not held waits for a grant of the shortfall, and is refused only when
//!   the shortfall is more than the window has left to grant, as the
//!   sidecar last said ([`QuotaState::charged`]).
//! - The token kinds are charged the same way with a reservation: an upper
//!   bound of what the call can cost ([`Demand`]). When the response ends
//!   ([`Budget::settle`]) the charge becomes what the call used: the rest
//!   goes back to what is held, and what a call used past its reservation
//!   (an upstream that ignored the output cap) is taken from what is held
//!   or, when that is short, owed ([`QuotaState::owed`]) and paid from the
//!   next grant, so the fleet's counter keeps up with the ledger.
//! - A quota scoped to a model (`tokens=100k/day@gpt-4o`) counts only the
//!   requests naming that model.
//! - `response_bytes` and `units` are charged when the response ends
//!   ([`Budget::charge_after`]), and settled with the sidecar on the tick;
//!   a request is admitted while the window's total, as far as this Envoy
//!   knows it, is below the limit.
//! - The rate is a token bucket of this Envoy, in thousandths of a token,
//!   timed by the host's monotonic clock: a wall clock stepped forward
//!   fills no bucket, one stepped back stalls none. Windows are the wall
//!   clock's (UTC), as the sidecar keeps them.

use tollgate_wire::grant::{GrantGiven, GrantStatus, SettlementDone, DEMAND_PERIOD_MS};
use tollgate_wire::price::Currency;
use tollgate_wire::{quota_name, Limits, Quota, QuotaKind, Rate, RatePeriod, TokenUsage, Window};

use crate::llm::TokenBound;

/// Length of an ask's or a settlement's id (sent as 32 hex digits).
pub const CHARGE_ID_LEN: usize = 16;

/// An ask's or a settlement's id, minted by the filter.
pub type ChargeId = [u8; CHARGE_ID_LEN];

/// Format of the binary form.
const FORMAT_VERSION: u8 = 1;

/// The binary form keeps the bucket's stamp as `STAMP_TAG` plus its ms on
/// the monotonic clock. Filters before that stamped the wall clock's ms,
/// always below the tag, in the same format, so an upgrade's old and new
/// filters share a budget both ways and neither can overshoot: a wall
/// stamp reads here as [`UNSTAMPED`]; an old filter reads a tagged stamp
/// as an instant far ahead, so it refills nothing and moves nothing (its
/// requests only spend tokens: a key served only by old filters while
/// they drain is refused once its tokens are spent, until a new filter
/// serves it).
const STAMP_TAG: u64 = 1 << 62;

/// A bucket stamped by another clock (an older filter's wall clock): its
/// next refill restarts its time at now, adding nothing.
pub const UNSTAMPED: u64 = u64::MAX;

/// Thousandths of a token in one token.
const MILLI: u64 = 1000;

/// An instant on both of the host's clocks: the wall clock's places it in
/// a quota's window, the monotonic clock's times the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub wall_ms: u64,
    pub mono_ms: u64,
}

/// An ask or a settlement in flight: its id, and what it asked or carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub id: ChargeId,
    /// The least the ask needs, or the amount the settlement carries.
    pub amount: u64,
    /// When it was last sent (ms since the epoch).
    pub sent_ms: u64,
}

/// Which quota of a key: its kind and its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaId {
    pub kind: QuotaKind,
    /// The model a scoped quota counts; `None`: every request.
    pub model: Option<String>,
}

impl QuotaId {
    /// The id of `quota`.
    pub fn of(quota: &Quota) -> QuotaId {
        QuotaId {
            kind: quota.kind,
            model: quota.model.clone(),
        }
    }

    /// Whether `quota` is this one.
    pub fn names(&self, quota: &Quota) -> bool {
        quota.is(self.kind, self.model.as_deref())
    }

    /// `tokens`, `tokens@gpt-4o`.
    pub fn name(&self) -> String {
        quota_name(self.kind, self.model.as_deref())
    }
}

/// What an LLM call used: the tokens reported (or estimated), and what
/// they cost at its model's price in micro-units (0 when unpriced).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Used {
    pub tokens: TokenUsage,
    pub cost: u64,
}

/// What a request asks of a key's quotas: its body's bytes, and on an LLM
/// route the model it names and its token bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand<'a> {
    pub request_bytes: u64,
    pub model: Option<&'a str>,
    pub tokens: TokenBound,
}

impl Demand<'_> {
    /// A request that is not an LLM call.
    pub fn bytes(request_bytes: u64) -> Demand<'static> {
        Demand {
            request_bytes,
            ..Demand::default()
        }
    }

    /// The request's charge of a quota counted at admission: 0 for a quota
    /// scoped to another model (or any model, for a call that is not an
    /// LLM call) and for quotas settled after the fact.
    pub fn charge(&self, quota: &Quota) -> u64 {
        if !quota.applies_to(self.model) {
            return 0;
        }
        match quota.kind {
            QuotaKind::Requests => 1,
            QuotaKind::RequestBytes => self.request_bytes,
            QuotaKind::Tokens => self.tokens.input.saturating_add(self.tokens.output),
            QuotaKind::InputTokens => self.tokens.input,
            QuotaKind::OutputTokens => self.tokens.output,
            QuotaKind::Cost => self.tokens.cost,
            QuotaKind::ResponseBytes | QuotaKind::Units => 0,
        }
    }
}

/// What one quota reserved for a call at admission: given back, less what
/// the call used, when its response ends ([`Budget::settle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub quota: QuotaId,
    /// The window it was reserved in: a reservation outlives its window
    /// only as part of a grant that lapsed with it.
    pub window_end_ms: i64,
    pub amount: u64,
}

/// A quota's count of what a call used.
fn used_of(kind: QuotaKind, used: &Used) -> u64 {
    let tokens = &used.tokens;
    match kind {
        QuotaKind::Tokens => tokens.input_tokens.saturating_add(tokens.output_tokens),
        QuotaKind::InputTokens => tokens.input_tokens,
        QuotaKind::OutputTokens => tokens.output_tokens,
        QuotaKind::Cost => used.cost,
        _ => 0,
    }
}

/// What this Envoy holds or knows of one quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaState {
    pub quota: Quota,
    /// End of the window this state is for (ms since the epoch); 0 until
    /// the sidecar first named one.
    pub window_end_ms: i64,
    /// Charged at admission: what is left of this Envoy's grants.
    pub held: u64,
    /// Charged at admission: the last ask found less than its need left
    /// (what is left is `limit - charged`; admission judges by that).
    pub exhausted: bool,
    /// The window's total charged, fleet-wide: the highest any answer told.
    pub charged: u64,
    /// Charged after the fact: charged here, not yet sent.
    pub unsettled: u64,
    /// Reserving kinds: what calls used past their reservations that what
    /// is held could not cover; paid first from the next grant (`held` is
    /// 0 while anything is owed).
    pub owed: u64,
    /// The ask (at admission) or settlement (after the fact) in flight.
    /// It keeps its id until its answer is applied: a resent call is
    /// answered as the first, never charged twice.
    pub pending: Option<Pending>,
    /// Demand: what was charged since `period_start_ms`, and over the
    /// whole period before.
    pub period_start_ms: u64,
    pub period_use: u64,
    pub recent_use: u64,
}

impl QuotaState {
    fn new(quota: Quota) -> QuotaState {
        QuotaState {
            quota,
            window_end_ms: 0,
            held: 0,
            exhausted: false,
            charged: 0,
            unsettled: 0,
            owed: 0,
            pending: None,
            period_start_ms: 0,
            period_use: 0,
            recent_use: 0,
        }
    }

    /// What this Envoy used over about the last demand period.
    pub fn demand(&self) -> u64 {
        self.recent_use.max(self.period_use)
    }

    fn note_use(&mut self, amount: u64, now_ms: u64) {
        if now_ms >= self.period_start_ms.saturating_add(DEMAND_PERIOD_MS) {
            let consecutive = now_ms < self.period_start_ms.saturating_add(2 * DEMAND_PERIOD_MS);
            self.recent_use = if consecutive { self.period_use } else { 0 };
            self.period_start_ms = now_ms;
            self.period_use = 0;
        }
        self.period_use = self.period_use.saturating_add(amount);
    }

    /// A new window began: what was held or known of the last one lapses
    /// (a grant is for its window only). What was charged here and not
    /// yet settled is kept, and settled into the window the sidecar is in.
    fn roll(&mut self, now_ms: u64) {
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        if self.window_end_ms != 0 && now >= self.window_end_ms {
            self.window_end_ms = self.quota.window.containing(now).end_ms;
            self.held = 0;
            self.owed = 0;
            self.exhausted = false;
            self.charged = 0;
        }
    }

    /// Moves to the window a sidecar's answer is for; false when the
    /// answer is for an older window than the one this state is in.
    fn enter_window(&mut self, end_ms: i64) -> bool {
        if end_ms < self.window_end_ms {
            return false;
        }
        if end_ms > self.window_end_ms {
            self.window_end_ms = end_ms;
            self.held = 0;
            self.owed = 0;
            self.exhausted = false;
            self.charged = 0;
        }
        true
    }

    /// Takes in the window's total as an answer told it. Answers to calls
    /// in flight together arrive in any order, and within a window the
    /// total grows but by a return, so the highest told is kept: an older,
    /// lower one must not undo it (what is held here would then count as
    /// left twice, and `remaining` pass the limit). Erring high only ever
    /// shows less left than there is.
    fn told_charged(&mut self, charged: u64) {
        self.charged = self.charged.max(charged);
    }

    /// Seconds until the window ends, at least 1.
    pub fn seconds_left(&self, now_ms: u64) -> u64 {
        let end = if self.window_end_ms == 0 {
            let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
            self.quota.window.containing(now).end_ms
        } else {
            self.window_end_ms
        };
        let left = u64::try_from(end).unwrap_or(0).saturating_sub(now_ms);
        left.div_ceil(1000).max(1)
    }

    /// What is left of the window fleet-wide, as far as this Envoy knows.
    pub fn remaining(&self) -> u64 {
        let known = self.charged.saturating_add(self.unsettled);
        let known = known.saturating_add(
            match (self.quota.kind.charged_at_admission(), self.pending) {
                (false, Some(p)) => p.amount,
                _ => 0,
            },
        );
        let left = self.quota.limit.saturating_sub(known);
        if self.quota.kind.charged_at_admission() {
            left.saturating_add(self.held).saturating_sub(self.owed)
        } else {
            left
        }
    }
}

/// One key's budget on this Envoy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub limits: Limits,
    /// The bucket's tokens, in thousandths, and when it was last filled
    /// (on the monotonic clock; [`UNSTAMPED`]: by an older filter's wall
    /// clock, to be restarted at the next refill).
    pub tokens_milli: u64,
    pub refilled_ms: u64,
    /// One state per quota of `limits`, in its order.
    pub quotas: Vec<QuotaState>,
}

/// What the budget says of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Charged: let it through.
    Admit,
    /// The bucket is empty.
    RateLimited { retry_after_s: u64 },
    /// The quota is spent (or reserved) fleet-wide for its window.
    QuotaExceeded { quota: QuotaId, retry_after_s: u64 },
    /// The request's charge of the quota is more than its limit: it could
    /// never be admitted, whatever the window.
    NeverFits {
        quota: QuotaId,
        charge: u64,
        limit: u64,
    },
    /// This Envoy holds less than the request's charge of this quota: the
    /// request waits for a grant of at least `need`.
    NeedGrant { quota: QuotaId, need: u64 },
}

/// What a sidecar's answer to an ask or settlement did to the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The budget took it in (or it was an answer already taken in).
    Done,
    /// The sidecar knows no key of this id.
    UnknownKey,
}

impl Budget {
    /// A budget for `limits` with a full bucket (stamped `mono_ms`) and
    /// nothing held.
    pub fn new(limits: Limits, mono_ms: u64) -> Budget {
        let tokens_milli = limits.rate.map_or(0, |r| r.burst.saturating_mul(MILLI));
        let quotas = limits.quotas.iter().cloned().map(QuotaState::new).collect();
        Budget {
            limits,
            tokens_milli,
            refilled_ms: mono_ms,
            quotas,
        }
    }

    /// The budget for new `limits`: a quota of the same kind and window
    /// keeps what it knows, and what it holds unless the limit went down
    /// (what was granted under the old limit must not pass the new one; a
    /// grant dropped here was charged and stays unused: the window
    /// undershoots, never overshoots); a rate of the same count and period
    /// keeps its tokens (down to the new burst).
    pub fn with_limits(&self, limits: Limits, mono_ms: u64) -> Budget {
        let mut next = Budget::new(limits, mono_ms);
        if let (Some(old), Some(new)) = (self.limits.rate, next.limits.rate) {
            if (old.count, old.per) == (new.count, new.per) {
                next.tokens_milli = self.tokens_milli.min(new.burst.saturating_mul(MILLI));
                next.refilled_ms = self.refilled_ms;
            }
        }
        for state in &mut next.quotas {
            let kept = self.quotas.iter().find(|s| {
                (s.quota.kind, s.quota.window, &s.quota.model)
                    == (state.quota.kind, state.quota.window, &state.quota.model)
            });
            if let Some(kept) = kept {
                let quota = state.quota.clone();
                *state = kept.clone();
                if quota.limit < kept.quota.limit {
                    state.held = 0;
                }
                if quota.limit != kept.quota.limit {
                    state.exhausted = false;
                }
                state.quota = quota;
            }
        }
        next
    }

    fn refill(&mut self, rate: Rate, mono_ms: u64) {
        if self.refilled_ms == UNSTAMPED {
            self.refilled_ms = mono_ms;
            return;
        }
        let elapsed = mono_ms.saturating_sub(self.refilled_ms);
        let cap = rate.burst.saturating_mul(MILLI);
        let per_ms = u128::from(rate.per.millis().max(1));
        let added = u128::from(elapsed) * u128::from(rate.count) * u128::from(MILLI) / per_ms;
        let added = u64::try_from(added).unwrap_or(u64::MAX);
        // An instant before the last refill (another worker's later
        // request got here first) adds nothing and moves nothing back.
        if added > 0 {
            self.tokens_milli = self.tokens_milli.saturating_add(added).min(cap);
            self.refilled_ms = mono_ms;
        }
    }

    /// Seconds until the bucket holds a whole token again, at least 1.
    fn rate_retry_after_s(&self, rate: Rate) -> u64 {
        let missing = u128::from(MILLI.saturating_sub(self.tokens_milli));
        let per_token = u128::from(rate.count.max(1)) * u128::from(MILLI);
        let ms = (missing * u128::from(rate.per.millis())).div_ceil(per_token);
        u64::try_from(ms.div_ceil(1000)).unwrap_or(u64::MAX).max(1)
    }

    /// Decides a request asking `demand` at `at`, and on
    /// [`Admission::Admit`] charges it: a token, and its charge of each
    /// quota counted at admission (for tokens, its reservation: see
    /// [`Budget::reservations`]). Anything else charges nothing.
    pub fn admit(&mut self, at: At, demand: &Demand) -> Admission {
        let now_ms = at.wall_ms;
        for state in &mut self.quotas {
            state.roll(now_ms);
        }
        if let Some(rate) = self.limits.rate {
            self.refill(rate, at.mono_ms);
            if self.tokens_milli < MILLI {
                return Admission::RateLimited {
                    retry_after_s: self.rate_retry_after_s(rate),
                };
            }
        }
        for state in &self.quotas {
            let kind = state.quota.kind;
            let exceeded = || Admission::QuotaExceeded {
                quota: QuotaId::of(&state.quota),
                retry_after_s: state.seconds_left(now_ms),
            };
            if kind.charged_at_admission() {
                let charge = demand.charge(&state.quota);
                // What is held serves first, whatever the sidecar said since
                // (a quota this request does not count never holds it up).
                if state.held >= charge {
                    continue;
                }
                if charge > state.quota.limit {
                    return Admission::NeverFits {
                        quota: QuotaId::of(&state.quota),
                        charge,
                        limit: state.quota.limit,
                    };
                }
                // The rest, and what is owed, must come from what the
                // window has not granted yet, as far as this Envoy knows
                // (another Envoy may have taken more since: then the ask
                // says so).
                let shortfall = (charge - state.held).saturating_add(state.owed);
                let ungranted = state.quota.limit.saturating_sub(state.charged);
                if state.window_end_ms != 0 && shortfall > ungranted {
                    return exceeded();
                }
                return Admission::NeedGrant {
                    quota: QuotaId::of(&state.quota),
                    need: shortfall,
                };
            } else if state.remaining() == 0 && state.quota.applies_to(demand.model) {
                return exceeded();
            }
        }
        if self.limits.rate.is_some() {
            self.tokens_milli -= MILLI;
        }
        for state in &mut self.quotas {
            if state.quota.kind.charged_at_admission() {
                let charge = demand.charge(&state.quota);
                state.held -= charge.min(state.held);
                state.note_use(charge, now_ms);
            }
        }
        Admission::Admit
    }

    /// What [`Budget::admit`] just reserved for `demand`: one entry per
    /// token quota it counts.
    pub fn reservations(&self, demand: &Demand) -> Vec<Reserved> {
        self.quotas
            .iter()
            .filter(|s| s.quota.kind.reserves())
            .filter_map(|s| {
                let amount = demand.charge(&s.quota);
                (amount > 0).then(|| Reserved {
                    quota: QuotaId::of(&s.quota),
                    window_end_ms: s.window_end_ms,
                    amount,
                })
            })
            .collect()
    }

    /// A call's response ended having `used` these tokens (and money):
    /// each of its reservations becomes that count. What it did not use goes back to
    /// what is held (for this Envoy's next requests); what it used past its
    /// reservation is taken from what is held, and what that cannot cover
    /// is owed. A reservation of a window that has ended, or of a quota
    /// the key no longer has, lapsed with its grant: nothing to do.
    pub fn settle(&mut self, reserved: &[Reserved], used: &Used, now_ms: u64) {
        for r in reserved {
            let Some(state) = self.quotas.iter_mut().find(|s| r.quota.names(&s.quota)) else {
                continue;
            };
            state.roll(now_ms);
            if state.window_end_ms != r.window_end_ms {
                continue;
            }
            let used = used_of(r.quota.kind, used);
            if used <= r.amount {
                let unused = r.amount - used;
                state.held = state.held.saturating_add(unused);
                state.period_use = state.period_use.saturating_sub(unused);
            } else {
                let excess = used - r.amount;
                let covered = excess.min(state.held);
                state.held -= covered;
                state.owed = state.owed.saturating_add(excess - covered);
                state.note_use(excess, now_ms);
            }
        }
    }

    /// Gives back what [`Budget::admit`] charged a request that was then
    /// refused after all (its `jti` was replayed).
    pub fn refund(&mut self, demand: &Demand) {
        if let Some(rate) = self.limits.rate {
            self.tokens_milli = self
                .tokens_milli
                .saturating_add(MILLI)
                .min(rate.burst.saturating_mul(MILLI));
        }
        for state in &mut self.quotas {
            if state.quota.kind.charged_at_admission() {
                let charge = demand.charge(&state.quota);
                state.held = state.held.saturating_add(charge);
                state.period_use = state.period_use.saturating_sub(charge);
            }
        }
    }

    /// The quota `id`, if the key has it.
    pub fn quota_mut(&mut self, id: &QuotaId) -> Option<&mut QuotaState> {
        self.quotas.iter_mut().find(|s| id.names(&s.quota))
    }

    /// The ask a request waiting for `need` of `kind` sends: the one in
    /// flight, if any (its answer wakes every waiting request alike), else
    /// a new one under `fresh`. `None` when the key has no such quota.
    pub fn ask(
        &mut self,
        quota: &QuotaId,
        need: u64,
        fresh: ChargeId,
        now_ms: u64,
    ) -> Option<Pending> {
        let state = self.quota_mut(quota)?;
        let pending = state.pending.get_or_insert(Pending {
            id: fresh,
            amount: need,
            sent_ms: now_ms,
        });
        pending.sent_ms = now_ms;
        Some(*pending)
    }

    /// Takes in the sidecar's answer to the ask `id` (any other id, or an
    /// answer already taken in, changes nothing).
    pub fn apply_grant(&mut self, quota: &QuotaId, id: &ChargeId, given: &GrantGiven) -> Applied {
        if given.status == GrantStatus::UnknownKey {
            return Applied::UnknownKey;
        }
        if self.answered(quota, id) {
            if given.status == GrantStatus::NoQuota {
                self.drop_quota(quota);
            } else {
                self.take_grant(quota, given);
            }
        }
        Applied::Done
    }

    /// Ends the ask or settlement `id` of `quota` in flight; false when
    /// none of that id is (another request's copy of the answer came first).
    fn answered(&mut self, quota: &QuotaId, id: &ChargeId) -> bool {
        match self.quota_mut(quota) {
            Some(state) if state.pending.map(|p| p.id) == Some(*id) => {
                state.pending = None;
                true
            }
            _ => false,
        }
    }

    /// Takes in a grant answered to this budget's ask; true when it
    /// changed the budget.
    fn take_grant(&mut self, quota: &QuotaId, given: &GrantGiven) -> bool {
        let Some(state) = self.quota_mut(quota) else {
            return false;
        };
        if !matches!(given.status, GrantStatus::Granted | GrantStatus::Exhausted)
            || !state.enter_window(given.window_end_ms)
        {
            return false;
        }
        state.told_charged(given.charged);
        if given.status == GrantStatus::Granted {
            // What calls owe is paid first.
            let paid = state.owed.min(given.amount);
            state.owed -= paid;
            state.held = state.held.saturating_add(given.amount - paid);
        } else {
            state.exhausted = true;
        }
        true
    }

    /// The sidecar no longer counts this kind (the limits changed): this
    /// Envoy stops counting it too, until the new limits arrive.
    fn drop_quota(&mut self, quota: &QuotaId) {
        self.quotas.retain(|s| !quota.names(&s.quota));
        self.limits.quotas.retain(|q| !quota.names(q));
    }

    /// Charges what is known when a response ended: its body bytes and the
    /// units the upstream reported, to the quotas settled after the fact.
    /// A quota scoped to a model counts only a call naming it (`model`).
    pub fn charge_after(
        &mut self,
        response_bytes: u64,
        units: u64,
        model: Option<&str>,
        now_ms: u64,
    ) {
        for state in &mut self.quotas {
            state.roll(now_ms);
            if !state.quota.applies_to(model) {
                continue;
            }
            let amount = match state.quota.kind {
                QuotaKind::ResponseBytes => response_bytes,
                QuotaKind::Units => units,
                _ => continue,
            };
            state.unsettled = state.unsettled.saturating_add(amount);
            state.note_use(amount, now_ms);
        }
    }

    /// What the tick sends for this key: asks ahead of need (a quota whose
    /// grant holds less than a period of demand), settlements of what was
    /// charged after the fact (and a first one of 0 to learn the window's
    /// total), and whatever is still in flight unanswered (resent under
    /// its id, once `resend_ms` passed since it was sent). `fresh` mints ids.
    pub fn due(
        &mut self,
        now_ms: u64,
        resend_ms: u64,
        mut fresh: impl FnMut() -> ChargeId,
    ) -> Vec<Due> {
        let mut due = Vec::new();
        for state in &mut self.quotas {
            state.roll(now_ms);
            let kind = state.quota.kind;
            if let Some(p) = &mut state.pending {
                if now_ms.saturating_sub(p.sent_ms) >= resend_ms {
                    p.sent_ms = now_ms;
                    due.push(Due {
                        quota: QuotaId::of(&state.quota),
                        pending: *p,
                        recent_use: state.demand(),
                    });
                }
                continue;
            }
            let start = if kind.charged_at_admission() {
                let demand = state.demand();
                state.charged < state.quota.limit
                    && demand > 0
                    && (state.held < demand || state.owed > 0)
            } else {
                state.unsettled > 0 || state.window_end_ms == 0
            };
            if !start {
                continue;
            }
            let amount = if kind.charged_at_admission() {
                0
            } else {
                std::mem::take(&mut state.unsettled)
            };
            let pending = Pending {
                id: fresh(),
                amount,
                sent_ms: now_ms,
            };
            state.pending = Some(pending);
            due.push(Due {
                quota: QuotaId::of(&state.quota),
                pending,
                recent_use: state.demand(),
            });
        }
        due
    }

    /// Takes in the answer to the settlement `id`.
    pub fn apply_settlement(
        &mut self,
        quota: &QuotaId,
        id: &ChargeId,
        done: &SettlementDone,
    ) -> Applied {
        if done.status == GrantStatus::UnknownKey {
            return Applied::UnknownKey;
        }
        if self.answered(quota, id) {
            if done.status == GrantStatus::NoQuota {
                self.drop_quota(quota);
            } else if let Some(state) = self.quota_mut(quota) {
                if state.enter_window(done.window_end_ms) {
                    state.told_charged(done.charged);
                }
            }
        }
        Applied::Done
    }

    /// The most constraining limit right now: its name, remaining and
    /// seconds to reset (for the `RateLimit` header of an allowed response).
    pub fn tightest(&self, now_ms: u64) -> Option<(String, u64, u64)> {
        // The best so far: which (`None`: the rate, else a quota's place),
        // remaining, reset, and remaining as a share of the limit.
        let mut best: Option<(Option<usize>, u64, u64, f64)> = None;
        let mut consider = |which, remaining: u64, limit: u64, reset| {
            let share = remaining as f64 / limit.max(1) as f64;
            if best.is_none_or(|b| share < b.3) {
                best = Some((which, remaining, reset, share));
            }
        };
        if let Some(rate) = self.limits.rate {
            let missing = (rate.burst * MILLI).saturating_sub(self.tokens_milli);
            let per_token_ms = rate.per.millis() / rate.count.max(1);
            let reset = (missing / MILLI)
                .saturating_mul(per_token_ms)
                .div_ceil(1000);
            consider(None, self.tokens_milli / MILLI, rate.burst, reset);
        }
        for (i, state) in self.quotas.iter().enumerate() {
            consider(
                Some(i),
                state.remaining(),
                state.quota.limit,
                state.seconds_left(now_ms),
            );
        }
        let (which, remaining, reset, _) = best?;
        let name = match which {
            Some(i) => self.quotas.get(i)?.quota.name(),
            None => "rate".to_owned(),
        };
        Some((name, remaining, reset))
    }
}

/// One call item the tick sends for a quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub quota: QuotaId,
    pub pending: Pending,
    pub recent_use: u64,
}

/// A window's length in seconds, for `RateLimit-Policy` (a month: the one
/// containing `now_ms`).
pub fn window_seconds(window: Window, now_ms: u64) -> u64 {
    let span = window.containing(i64::try_from(now_ms).unwrap_or(i64::MAX));
    u64::try_from(span.end_ms - span.start_ms).unwrap_or(0) / 1000
}

// The binary form: integers big-endian, in the order of the fields.

fn put(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn take_u64(cursor: &mut &[u8]) -> Option<u64> {
    let (head, rest) = cursor.split_first_chunk::<8>()?;
    *cursor = rest;
    Some(u64::from_be_bytes(*head))
}

fn take_u8(cursor: &mut &[u8]) -> Option<u8> {
    let (head, rest) = cursor.split_first()?;
    *cursor = rest;
    Some(*head)
}

fn kind_byte(kind: QuotaKind) -> u8 {
    QuotaKind::ALL.iter().position(|k| *k == kind).unwrap_or(0) as u8
}

/// A window's byte: its place in [`WINDOW_BYTES`] (the minute came last,
/// so the bytes of older windows are as before).
const WINDOW_BYTES: [Window; 4] = [Window::Hour, Window::Day, Window::Month, Window::Minute];

/// Set in a quota's kind byte when a model scope follows (a length byte
/// and the model): a filter that knows no scopes reads no such budget.
const SCOPED: u8 = 0x80;

/// A money quota's currency byte (after its kind and scope): its place in
/// `Currency::ALL`.
fn currency_byte(currency: Option<Currency>) -> u8 {
    let place = currency.and_then(|c| Currency::ALL.iter().position(|k| *k == c));
    place.unwrap_or(0) as u8
}

fn window_byte(window: Window) -> u8 {
    WINDOW_BYTES.iter().position(|w| *w == window).unwrap_or(0) as u8
}

fn window_from(byte: u8) -> Option<Window> {
    WINDOW_BYTES.get(usize::from(byte)).copied()
}

impl Budget {
    /// The value kept in shared data.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_stamped(STAMP_TAG.saturating_add(self.refilled_ms))
    }

    /// The value a filter that stamped the bucket with the wall clock's
    /// `wall_ms` kept.
    #[cfg(test)]
    pub fn encode_as_wall_stamped(&self, wall_ms: u64) -> Vec<u8> {
        self.encode_stamped(wall_ms)
    }

    fn encode_stamped(&self, stamp: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.quotas.len() * 112);
        out.push(FORMAT_VERSION);
        match self.limits.rate {
            Some(rate) => {
                out.push(1 + u8::from(rate.per == RatePeriod::Minute));
                put(&mut out, rate.count);
                put(&mut out, rate.burst);
            }
            None => out.push(0),
        }
        put(&mut out, self.tokens_milli);
        put(&mut out, stamp);
        out.push(u8::try_from(self.quotas.len()).unwrap_or(0));
        for s in &self.quotas {
            match &s.quota.model {
                Some(model) => {
                    out.push(kind_byte(s.quota.kind) | SCOPED);
                    out.push(u8::try_from(model.len()).unwrap_or(u8::MAX));
                    out.extend_from_slice(model.as_bytes());
                }
                None => out.push(kind_byte(s.quota.kind)),
            }
            if s.quota.kind.counts_money() {
                out.push(currency_byte(s.quota.currency));
            }
            out.push(window_byte(s.quota.window));
            put(&mut out, s.quota.limit);
            put(&mut out, s.window_end_ms as u64);
            put(&mut out, s.held);
            out.push(u8::from(s.exhausted));
            put(&mut out, s.charged);
            put(&mut out, s.unsettled);
            match s.pending {
                Some(p) => {
                    out.push(1);
                    out.extend_from_slice(&p.id);
                    put(&mut out, p.amount);
                    put(&mut out, p.sent_ms);
                }
                None => out.push(0),
            }
            put(&mut out, s.period_start_ms);
            put(&mut out, s.period_use);
            put(&mut out, s.recent_use);
            if s.quota.kind.reserves() {
                put(&mut out, s.owed);
            }
        }
        out
    }

    /// Reads [`Budget::encode`]'s output, or an older filter's (its wall
    /// stamp read as [`UNSTAMPED`]); anything else is `None`.
    pub fn decode(bytes: &[u8]) -> Option<Budget> {
        let mut c = bytes;
        if take_u8(&mut c)? != FORMAT_VERSION {
            return None;
        }
        let rate = match take_u8(&mut c)? {
            0 => None,
            tag @ (1 | 2) => {
                let per = if tag == 2 {
                    RatePeriod::Minute
                } else {
                    RatePeriod::Second
                };
                let count = take_u64(&mut c)?;
                let burst = take_u64(&mut c)?;
                Some(Rate { count, per, burst })
            }
            _ => return None,
        };
        let tokens_milli = take_u64(&mut c)?;
        let refilled_ms = take_u64(&mut c)?
            .checked_sub(STAMP_TAG)
            .filter(|ms| *ms < STAMP_TAG)
            .unwrap_or(UNSTAMPED);
        let n = take_u8(&mut c)?;
        let mut quotas = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let kind_byte = take_u8(&mut c)?;
            let kind = *QuotaKind::ALL.get(usize::from(kind_byte & !SCOPED))?;
            let model = if kind_byte & SCOPED != 0 {
                let len = usize::from(take_u8(&mut c)?);
                let (name, rest) = (c.get(..len)?, c.get(len..)?);
                c = rest;
                Some(String::from_utf8(name.to_vec()).ok()?)
            } else {
                None
            };
            let currency = if kind.counts_money() {
                Some(*Currency::ALL.get(usize::from(take_u8(&mut c)?))?)
            } else {
                None
            };
            let window = window_from(take_u8(&mut c)?)?;
            let limit = take_u64(&mut c)?;
            let window_end_ms = take_u64(&mut c)? as i64;
            let held = take_u64(&mut c)?;
            let exhausted = take_u8(&mut c)? == 1;
            let charged = take_u64(&mut c)?;
            let unsettled = take_u64(&mut c)?;
            let pending = match take_u8(&mut c)? {
                0 => None,
                1 => {
                    let (id, rest) = c.split_first_chunk::<CHARGE_ID_LEN>()?;
                    c = rest;
                    Some(Pending {
                        id: *id,
                        amount: take_u64(&mut c)?,
                        sent_ms: take_u64(&mut c)?,
                    })
                }
                _ => return None,
            };
            let period_start_ms = take_u64(&mut c)?;
            let period_use = take_u64(&mut c)?;
            let recent_use = take_u64(&mut c)?;
            let owed = if kind.reserves() {
                take_u64(&mut c)?
            } else {
                0
            };
            quotas.push(QuotaState {
                quota: Quota {
                    kind,
                    limit,
                    window,
                    model,
                    currency,
                },
                window_end_ms,
                held,
                exhausted,
                charged,
                unsettled,
                owed,
                pending,
                period_start_ms,
                period_use,
                recent_use,
            });
        }
        if !c.is_empty() {
            return None;
        }
        let limits = Limits {
            rate,
            quotas: quotas.iter().map(|s| s.quota.clone()).collect(),
        };
        Some(Budget {
            limits,
            tokens_milli,
            refilled_ms,
            quotas,
        })
    }
}

#[cfg(test)]
mod tests;
