//! What the limits step charged a request, kept until its response ends:
//! the response settles its reservations and charges the quotas counted
//! after the fact on the same budgets (`flow::response`).

use tollgate_wire::BudgetOwner;

use super::Reserved;

/// What the limits step charged a request: the response needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charged {
    /// The `RateLimit` value for the response, when it carries one (the
    /// key's own budget's, else its team's).
    pub ratelimit: Option<String>,
    /// Each budget charged, in the order charged.
    pub budgets: Vec<ChargedBudget>,
}

/// What one budget (the key's own, or its team's) was charged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargedBudget {
    pub owner: BudgetOwner,
    /// The budget has quotas charged when the response ends.
    pub settles_after: bool,
    /// What its token quotas reserved, trued up when the response ends.
    pub reserved: Vec<Reserved>,
}
