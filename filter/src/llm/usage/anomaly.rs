//! Why an answer's usage is not believed, and why a call is estimated;
//! each reason has a static name for logs and metrics.

/// Something in an answer that makes its usage unbelievable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// A streamed answer that is not SSE (it opens with `{` or `[`).
    NotSse,
    /// An event or body that is not JSON.
    InvalidJson,
    /// JSON of another shape than the API's (a list where an object was
    /// expected, ...).
    UnexpectedJson,
    /// A token count below zero.
    UsageNegative,
    /// A token count that is fractional or not a number.
    UsageNotInteger,
    /// A token count (or a sum of them) above `MAX_TOKENS`.
    UsageTooLarge,
    /// More cached tokens than input ones, or more reasoning tokens than
    /// output ones.
    UsageInconsistent,
    /// A usage without a count it must have.
    UsageIncomplete,
    /// A cumulative count that went down.
    UsageWentBackwards,
    /// An event was dropped (too long, or not UTF-8) after the last usage.
    EventDropped,
}

impl Anomaly {
    /// The reason's name (`usage_too_large`, ...).
    pub fn reason(self) -> &'static str {
        match self {
            Anomaly::NotSse => "not_sse",
            Anomaly::InvalidJson => "invalid_json",
            Anomaly::UnexpectedJson => "unexpected_json",
            Anomaly::UsageNegative => "usage_negative",
            Anomaly::UsageNotInteger => "usage_not_integer",
            Anomaly::UsageTooLarge => "usage_too_large",
            Anomaly::UsageInconsistent => "usage_inconsistent",
            Anomaly::UsageIncomplete => "usage_incomplete",
            Anomaly::UsageWentBackwards => "usage_went_backwards",
            Anomaly::EventDropped => "event_dropped",
        }
    }
}

/// Why a call's tokens are estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EstimateReason {
    /// The answer ended without reporting usage (the stream was cut, or
    /// the client did not ask for it and it was not added).
    NoUsage,
    /// It reported usage that is not believed.
    Anomaly(Anomaly),
}

impl EstimateReason {
    /// The reason's name: `no_usage`, or the anomaly's.
    pub fn reason(self) -> &'static str {
        match self {
            EstimateReason::NoUsage => "no_usage",
            EstimateReason::Anomaly(anomaly) => anomaly.reason(),
        }
    }
}
