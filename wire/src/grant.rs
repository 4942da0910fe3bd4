//! The grant call: how an Envoy gets a slice of a key's quota ahead of need,
//! gives back what it did not use, and settles what was charged after the
//! fact, through `POST /v1/internal/grants` (internal token).
//!
//! The sidecar's database is the authority for each (key, quota, window):
//! - `requests`, `request_bytes` and the token kinds (reserved) are
//!   charged at admission. An Envoy asks
//!   for a grant ([`GrantAsk`]) and admits requests from it locally; the
//!   sum of grants never passes the limit ([`grant_amount`]). What it did
//!   not use goes back ([`GrantReturn`]) or lapses at the window's end.
//! - `response_bytes` and `units` are known when the response ends. An
//!   Envoy reports them ([`Settlement`]) and is told the window's total; it
//!   admits while that total is below the limit.
//!
//! Every ask, return and settlement carries an id its sender minted: a
//! retried call is answered as the first was and charges nothing twice.
//!
//! A budget belongs to a key or to a team ([`BudgetOwner`]): a team's
//! limits are shared by all of its keys, and an ask or a settlement with a
//! `team_id` is for the team's quota.

use serde::{Deserialize, Serialize};

use crate::limits::{Limits, QuotaKind};

/// `POST` a [`GrantRequest`] (internal token), answered with a [`GrantReply`].
pub const GRANTS_PATH: &str = "/v1/internal/grants";

/// Asks, returns and settlements one call may carry, together.
pub const MAX_GRANT_ITEMS: usize = 1000;

/// Length of a grant or settlement id: 128 random bits in lowercase hex.
pub const CHARGE_ID_HEX_LEN: usize = 32;

/// Over how long [`GrantAsk::recent_use`] is measured, and how often an
/// Envoy with steady demand should need to ask: a grant is sized for
/// [`GRANT_AHEAD_PERIODS`] of these.
pub const DEMAND_PERIOD_MS: u64 = 1000;

/// How many demand periods of recent use a grant covers: two, so an Envoy
/// that asks again when half its grant is used asks about once a period.
pub const GRANT_AHEAD_PERIODS: u64 = 2;

/// The largest share of what is left that one grant takes (a quarter): near
/// the limit, what remains is spread over the Envoys that still ask, and
/// less of it sits unused in one Envoy's grant.
pub const MAX_SHARE_OF_REMAINING: u64 = 4;

/// One call: any mix of look-ups of limits, asks, returns and settlements
/// (at most [`MAX_GRANT_ITEMS`] in all), answered in the same order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRequest {
    /// Key ids whose current limits the reply should carry (which quotas
    /// to ask grants of, the rate for the Envoy's own bucket).
    #[serde(default)]
    pub limits_of: Vec<i64>,
    #[serde(default)]
    pub asks: Vec<GrantAsk>,
    #[serde(default)]
    pub returns: Vec<GrantReturn>,
    #[serde(default)]
    pub settlements: Vec<Settlement>,
}

impl GrantAsk {
    /// Whose quota the ask is for.
    pub fn owner(&self) -> BudgetOwner {
        BudgetOwner::of(self.key_id, self.team_id)
    }
}

impl Settlement {
    /// Whose quota the settlement is for.
    pub fn owner(&self) -> BudgetOwner {
        BudgetOwner::of(self.key_id, self.team_id)
    }
}

impl GrantRequest {
    /// How many items the call carries.
    pub fn len(&self) -> usize {
        self.limits_of.len() + self.asks.len() + self.returns.len() + self.settlements.len()
    }

    /// True for a call with nothing in it.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whose budget a quota is: a key's own, or its team's (shared by all of
/// the team's keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BudgetOwner {
    Key(i64),
    Team(i64),
}

impl BudgetOwner {
    /// The owner named by an item's `key_id` and `team_id` (a `team_id`
    /// wins: the item is for the team's quota).
    pub fn of(key_id: i64, team_id: Option<i64>) -> Self {
        match team_id {
            Some(team) => BudgetOwner::Team(team),
            None => BudgetOwner::Key(key_id),
        }
    }

    /// The `key_id` and `team_id` of an item for this owner (a team's
    /// items carry `key_id` 0).
    pub fn ids(self) -> (i64, Option<i64>) {
        match self {
            BudgetOwner::Key(id) => (id, None),
            BudgetOwner::Team(id) => (0, Some(id)),
        }
    }

    /// How messages and headers name the budget: `key 7`, `team 3`.
    pub fn describe(self) -> String {
        match self {
            BudgetOwner::Key(id) => format!("key {id}"),
            BudgetOwner::Team(id) => format!("team {id}"),
        }
    }
}

/// A slice of a quota charged at admission (`requests`, `request_bytes`,
/// the token kinds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantAsk {
    /// [`CHARGE_ID_HEX_LEN`] lowercase hex digits, fresh for each ask (the
    /// same for its retries).
    pub grant_id: String,
    /// The key whose quota this is (0 for a team's).
    pub key_id: i64,
    /// The team whose quota this is, when it is a team's
    /// ([`BudgetOwner::of`]); absent for a key's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<i64>,
    pub quota: QuotaKind,
    /// The model the quota is scoped to (`tokens=100k/day@gpt-4o`); absent
    /// for an unscoped quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The least that is of use: the charge of the request waiting for
    /// it (1 for `requests`, its body's bytes for `request_bytes`), or 0
    /// when asking ahead of need (then at least 1 is granted).
    pub need: u64,
    /// What this Envoy admitted against this key's quota over the last
    /// [`DEMAND_PERIOD_MS`]: the grant is sized from it ([`grant_size`]).
    pub recent_use: u64,
}

/// Gives back what a grant did not use (once; a retry changes nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantReturn {
    pub grant_id: String,
    pub unused: u64,
}

/// A charge known when the response ended (`response_bytes`, `units`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// [`CHARGE_ID_HEX_LEN`] lowercase hex digits (the filter can derive it
    /// from the request id).
    pub settlement_id: String,
    /// As [`GrantAsk::key_id`] and [`GrantAsk::team_id`].
    pub key_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<i64>,
    pub quota: QuotaKind,
    /// As [`GrantAsk::model`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub amount: u64,
}

/// What became of an ask or a settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    /// Granted (an ask: `amount` > 0) or charged (a settlement).
    Granted,
    /// An ask: less than `need` (at least 1) is left in the window; the
    /// quota is spent fleet-wide until `window_end_ms`.
    Exhausted,
    /// The key has no quota of this kind and scope (any more): nothing to
    /// count.
    NoQuota,
    /// No key (or, for a team's quota, no team) has this id.
    UnknownKey,
}

/// The answer to one [`GrantAsk`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantGiven {
    pub grant_id: String,
    pub status: GrantStatus,
    /// What the grant holds (0 unless `granted`).
    pub amount: u64,
    /// The quota's limit and the window's total charged after this grant.
    pub limit: u64,
    pub charged: u64,
    /// The window the grant is for, `[start, end)` in ms since the epoch:
    /// the grant lapses at its end.
    pub window_start_ms: i64,
    pub window_end_ms: i64,
}

/// The answer to one [`GrantReturn`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnDone {
    pub grant_id: String,
    /// False when no grant has the id.
    pub found: bool,
    /// What the grant's return gave back (also when this call was a retry).
    pub returned: u64,
}

/// The answer to one [`Settlement`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementDone {
    pub settlement_id: String,
    pub status: GrantStatus,
    pub limit: u64,
    /// The window's total charged after it.
    pub charged: u64,
    /// Whether requests may still be admitted: `charged < limit`.
    pub open: bool,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
}

/// A key's limits as a grant call reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLimits {
    pub key_id: i64,
    /// False when no key has the id (then `limits` is empty).
    pub found: bool,
    pub limits: Limits,
}

/// The reply: one answer per item, in the request's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantReply {
    pub limits: Vec<KeyLimits>,
    pub grants: Vec<GrantGiven>,
    pub returns: Vec<ReturnDone>,
    pub settlements: Vec<SettlementDone>,
}

/// How much to ask for, and the least to accept, given the quota's `limit`,
/// what the window has `charged`, the waiting request's `need` and the
/// Envoy's `recent_use` per [`DEMAND_PERIOD_MS`]: `(want, min)`.
///
/// `want` covers [`GRANT_AHEAD_PERIODS`] of recent use, and at least 1 % of
/// the limit (so a cold key does not ask once per request) and `need`;
/// it takes at most a [`MAX_SHARE_OF_REMAINING`]th of what is left (but
/// never less than `need`). `min` is `need`, at least 1.
pub fn grant_size(limit: u64, charged: u64, need: u64, recent_use: u64) -> (u64, u64) {
    let min = need.max(1);
    let remaining = limit.saturating_sub(charged);
    let target = recent_use
        .saturating_mul(GRANT_AHEAD_PERIODS)
        .max(limit / 100)
        .max(min);
    let cap = remaining.div_ceil(MAX_SHARE_OF_REMAINING).max(min);
    (target.min(cap), min)
}

/// What a grant of up to `want`, at least `min`, takes from a window with
/// `limit` and `charged` so far: `min(want, limit - charged)`, or 0 when
/// less than `min` is left. The database computes the same in one
/// conditional update; this is its specification (and its tests').
pub fn grant_amount(limit: u64, charged: u64, want: u64, min: u64) -> u64 {
    let remaining = limit.saturating_sub(charged);
    if remaining < min.max(1) {
        0
    } else {
        want.min(remaining)
    }
}

/// Whether `id` is a grant or settlement id: [`CHARGE_ID_HEX_LEN`]
/// lowercase hex digits.
pub fn is_charge_id(id: &str) -> bool {
    id.len() == CHARGE_ID_HEX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grants_cover_two_periods_of_demand_and_a_quarter_of_what_is_left_at_most() {
        assert_eq!(
            grant_size(1000, 0, 1, 0),
            (10, 1),
            "cold key: 1 % of the limit"
        );
        assert_eq!(grant_size(1000, 0, 1, 40), (80, 1), "two periods of demand");
        assert_eq!(
            grant_size(1000, 800, 1, 400),
            (50, 1),
            "a quarter of the rest"
        );
        assert_eq!(grant_size(1000, 999, 1, 400), (1, 1));
        assert_eq!(
            grant_size(1 << 30, 0, 5000, 0).1,
            5000,
            "never less than the need"
        );
        assert_eq!(
            grant_size(100, 100, 1, 10),
            (1, 1),
            "nothing left: still asks for the need"
        );
    }

    #[test]
    fn a_grant_takes_what_is_left_down_to_the_need() {
        assert_eq!(grant_amount(100, 0, 10, 1), 10);
        assert_eq!(grant_amount(100, 95, 10, 1), 5);
        assert_eq!(
            grant_amount(100, 95, 10, 6),
            0,
            "less than the need is left"
        );
        assert_eq!(grant_amount(100, 100, 10, 1), 0);
        assert_eq!(grant_amount(100, 120, 10, 1), 0, "a lowered limit");
        assert_eq!(grant_amount(100, 0, 10, 0), 10, "min 0 counts as 1");
    }

    #[test]
    fn requests_travel_as_json_and_empty_parts_may_be_left_out() {
        let request: GrantRequest = serde_json::from_str(
            r#"{"asks":[{"grant_id":"00000000000000000000000000000001","key_id":3,"quota":"requests","need":1,"recent_use":20}]}"#,
        )
        .unwrap();
        assert_eq!(request.asks[0].quota, QuotaKind::Requests);
        assert!(request.returns.is_empty() && request.settlements.is_empty());
        assert_eq!(request.len(), 1);
        let text = serde_json::to_string(&GrantStatus::NoQuota).unwrap();
        assert_eq!(text, r#""no_quota""#);
        assert!(is_charge_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_charge_id("0123456789ABCDEF0123456789ABCDEF"));
        assert!(!is_charge_id("0123"));
    }

    #[test]
    fn an_item_with_a_team_id_is_for_the_teams_quota() {
        let ask: GrantAsk = serde_json::from_str(
            r#"{"grant_id":"00000000000000000000000000000001","key_id":0,"team_id":4,"quota":"tokens","need":10,"recent_use":0}"#,
        )
        .unwrap();
        assert_eq!(ask.owner(), BudgetOwner::Team(4));
        assert_eq!(BudgetOwner::Team(4).ids(), (0, Some(4)));
        assert_eq!(BudgetOwner::of(9, None), BudgetOwner::Key(9));
        let key_ask = GrantAsk {
            team_id: None,
            key_id: 9,
            ..ask
        };
        let text = serde_json::to_string(&key_ask).unwrap();
        assert!(
            !text.contains("team_id"),
            "a key's ask is as before: {text}"
        );
    }

    /// One step of a fleet's traffic against a window: an Envoy asks, or
    /// gives part of what it holds back.
    #[derive(Debug, Clone)]
    enum Step {
        Ask {
            envoy: usize,
            need: u64,
            recent_use: u64,
        },
        Return {
            envoy: usize,
            share: u64,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0usize..4, 0u64..50, 0u64..500).prop_map(|(envoy, need, recent_use)| Step::Ask {
                envoy,
                need,
                recent_use
            }),
            (0usize..4, 0u64..=100).prop_map(|(envoy, share)| Step::Return { envoy, share }),
        ]
    }

    proptest! {
        /// Whatever the interleaving of asks and returns of four Envoys, the
        /// total granted (net of returns) never passes the limit, each
        /// grant is at least its need or nothing, and when less than the
        /// need is left the answer is nothing.
        #[test]
        fn the_sum_of_grants_never_exceeds_the_limit(
            limit in 1u64..5000, steps in proptest::collection::vec(step(), 1..200),
        ) {
            let mut charged = 0u64;
            let mut held = [0u64; 4];
            for step in steps {
                match step {
                    Step::Ask { envoy, need, recent_use } => {
                        let (want, min) = grant_size(limit, charged, need, recent_use);
                        prop_assert!(want >= min);
                        let amount = grant_amount(limit, charged, want, min);
                        prop_assert!(amount == 0 || amount >= min);
                        prop_assert_eq!(amount == 0, limit - charged < min);
                        charged += amount;
                        held[envoy] += amount;
                    }
                    Step::Return { envoy, share } => {
                        let unused = held[envoy] * share / 100;
                        held[envoy] -= unused;
                        charged -= unused;
                    }
                }
                prop_assert!(charged <= limit);
                prop_assert_eq!(held.iter().sum::<u64>(), charged);
            }
        }
    }
}
