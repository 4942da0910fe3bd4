//! Admission: the ordered steps a request that passed every check goes
//! through before it is let through. Each step answers [`Outcome::Done`],
//! [`Outcome::Wait`] (a callout is in flight; the request is parked in
//! [`Stage::Waiting`] with what the step needs to resume), or
//! [`Outcome::Deny`]. A callout's answer resumes exactly the step that
//! waits on it ([`Flow::resume`]).
//!
//! Adding a step is a new file here, a variant of [`Step`] placed in
//! [`STEPS`], and its arms in [`Flow::run_step`] (and [`Flow::resume_step`]
//! when it waits on a callout).

mod fleet_claim;
mod limits;
mod llm_request;
mod local_replay;
mod name_key;

use super::response::Allowed;
use super::{Flow, Phase, Stage};
use crate::error::Denial;
use crate::host::{Action, LogLevel, StreamHost};
use crate::limits::{BudgetOwner, Budgets, ChargeId, Charged};
use crate::llm::call::LlmCall;
use crate::metrics::Counter;
use crate::replay::JtiClaim;

pub use limits::MAX_GRANT_ROUNDS;

/// The steps of admission, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// On an LLM route: reads what the request asks (refusing a body its
    /// API does not accept) and makes a chat stream report its usage.
    LlmRequest,
    /// Names the key for the upstream (`x-tollgate-key-id`).
    NameKey,
    /// Charges the key's rate and quotas (may wait for a grant).
    Limits,
    /// Claims the token's `jti` in this instance's replay store.
    LocalReplay,
    /// Claims it fleet-wide through the sidecar (`replay_scope: "fleet"`).
    FleetReplay,
}

/// The order of [`Step`]s: the `jti` is claimed last, so that only a
/// request that is let through uses it up (a refusal by a later step gives
/// back what an earlier one charged). An LLM request is read first, so
/// that one refused as invalid is charged nothing.
pub const STEPS: [Step; 5] = [
    Step::LlmRequest,
    Step::NameKey,
    Step::Limits,
    Step::LocalReplay,
    Step::FleetReplay,
];

/// A request admission is running on: what the checks found, and what the
/// steps so far did.
#[derive(Debug)]
pub struct Admission {
    pub key_id: i64,
    /// The budgets its verdict says it is charged to.
    pub budgets: Budgets,
    /// The index in [`STEPS`] of the step to run (or waited on).
    next: usize,
    /// The verified token's `jti`, until the local replay step claims it.
    pub jti: Option<JtiClaim>,
    /// What the limits step charged: given back if a later step refuses.
    pub charged: Option<Charged>,
    /// The `jti` this request claimed in the instance's store.
    pub claimed: Option<JtiClaim>,
    /// On an LLM route, the call as its request asked it.
    pub llm: Option<LlmCall>,
}

impl Admission {
    /// A request of key `key_id` that passed every check.
    pub fn new(key_id: i64, budgets: Budgets, jti: Option<JtiClaim>) -> Self {
        Admission {
            key_id,
            budgets,
            next: 0,
            jti,
            charged: None,
            claimed: None,
            llm: None,
        }
    }
}

/// What a step's wait owns, to resume when its callout answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// The limits step waits for a grant of `owner`'s `quota` under ask
    /// `id`; this is its `rounds`-th grant call.
    Grant {
        owner: BudgetOwner,
        quota: crate::limits::QuotaId,
        id: ChargeId,
        rounds: u8,
    },
    /// The fleet replay step waits for the sidecar's claim of the `jti`.
    FleetClaim,
}

/// A request parked on a step's callout.
#[derive(Debug)]
pub struct Waiting {
    pub admission: Admission,
    /// The callout's token: only its answer resumes the request.
    pub token: u32,
    pub wait: Wait,
}

/// What a step came to.
#[derive(Debug)]
pub enum Outcome {
    /// On to the next step.
    Done,
    /// Parked until the callout `token` answers.
    Wait(u32, Wait),
    /// Refused, with the reply's extra headers.
    Deny(Denial, Vec<(&'static str, String)>),
}

impl Outcome {
    /// A refusal without extra headers.
    pub fn deny(denial: Denial) -> Outcome {
        Outcome::Deny(denial, Vec::new())
    }
}

impl<H: StreamHost> Flow<H> {
    /// Runs the steps from the admission's next one: to a wait, a refusal,
    /// or the end, where the request is let through.
    pub(super) fn admit(&mut self, mut admission: Admission, phase: Phase) -> Action {
        while let Some(&step) = STEPS.get(admission.next) {
            match self.run_step(step, &mut admission) {
                Outcome::Done => admission.next += 1,
                Outcome::Wait(token, wait) => {
                    self.stage = Stage::Waiting(Waiting {
                        admission,
                        token,
                        wait,
                    });
                    return Action::Pause;
                }
                Outcome::Deny(denial, headers) => {
                    self.refuse(admission, denial, headers);
                    return Action::Pause;
                }
            }
        }
        self.stage = Stage::Allowed(Allowed::new(
            admission.key_id,
            admission.claimed,
            admission.charged,
            admission.llm,
        ));
        self.metrics.inc(&self.host, Counter::RequestsAllowed);
        if phase == Phase::Callout {
            if let Err(e) = self.host.resume() {
                self.log(LogLevel::Error, &format!("cannot resume: {e}"));
            }
        }
        Action::Continue
    }

    /// The callout a parked request waits on answered (`body_size` bytes):
    /// its step resumes, and admission goes on from there.
    pub(super) fn resume(&mut self, waiting: Waiting, body_size: usize) {
        let Waiting {
            mut admission,
            wait,
            ..
        } = waiting;
        match self.resume_step(wait, &mut admission, body_size) {
            Outcome::Done => {
                admission.next += 1;
                self.admit(admission, Phase::Callout);
            }
            Outcome::Wait(token, wait) => {
                self.stage = Stage::Waiting(Waiting {
                    admission,
                    token,
                    wait,
                });
            }
            Outcome::Deny(denial, headers) => self.refuse(admission, denial, headers),
        }
    }

    /// Refuses a request admission was running on: what its steps charged
    /// goes back first.
    pub(super) fn refuse(
        &mut self,
        admission: Admission,
        denial: Denial,
        headers: Vec<(&'static str, String)>,
    ) {
        if let Some(charged) = &admission.charged {
            let demand = admission.demand(self.exchange.request_bytes);
            for budget in &charged.budgets {
                crate::limits::refund(&self.host, budget.owner, &demand);
            }
        }
        self.deny(denial, &headers);
    }

    fn run_step(&mut self, step: Step, admission: &mut Admission) -> Outcome {
        match step {
            Step::LlmRequest => self.read_llm_request(admission),
            Step::NameKey => self.name_key(admission),
            Step::Limits => self.charge_limits(admission, 0),
            Step::LocalReplay => self.claim_locally(admission),
            Step::FleetReplay => self.claim_fleet_wide(admission),
        }
    }

    fn resume_step(&mut self, wait: Wait, admission: &mut Admission, body_size: usize) -> Outcome {
        match wait {
            Wait::Grant {
                owner,
                quota,
                id,
                rounds,
            } => self.grant_answered(admission, owner, quota, id, rounds, body_size),
            Wait::FleetClaim => self.fleet_claim_answered(admission, body_size),
        }
    }
}
