//! A key's limits, parsed once for both sides: its rate (`10/s`, `600/min`,
//! with a burst) and its quotas (`requests=1000/day`,
//! `request_bytes=1GiB/month`, `tokens=1M/month`, one model's
//! `tokens=100k/day@gpt-4o`, money `cost=100USD/month`, ...), and the UTC
//! calendar windows the quotas are counted in.
//!
//! The text forms are the CLI's flags; [`Limits::to_spec`] writes the one
//! canonical spelling the sidecar stores, which [`Limits::parse_spec`]
//! reads back. Calendar arithmetic is done on days since the Unix epoch
//! (Howard Hinnant's `days_from_civil`, the proleptic Gregorian calendar),
//! so month lengths and leap years come from one formula.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::price::{parse_amount, Amount, Currency};

mod calendar;
#[cfg(test)]
mod tests;

pub use calendar::{civil_from_days, days_from_civil};

/// The largest count a rate, burst or quota may name: 2^53, so every
/// value survives a JSON number read as a double.
pub const MAX_LIMIT: u64 = 1 << 53;

/// How many quotas one key may have (each kind at most once unscoped and
/// once per model).
pub const MAX_QUOTAS: usize = 16;

/// Longest model name a quota may be scoped to: the gateway reads at most
/// this many bytes of a request's model (`llm::MAX_MODEL_LEN`).
pub const MAX_SCOPE_MODEL_LEN: usize = crate::llm::MAX_MODEL_LEN;

/// Longest canonical spelling of a key's limits ([`Limits::to_spec`]), as
/// the sidecar stores it.
pub const MAX_SPEC_LEN: usize = 8192;

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaKind {
    /// Requests admitted.
    Requests,
    /// Request body bytes admitted.
    RequestBytes,
    /// Response body bytes served.
    ResponseBytes,
    /// Units the upstream reported (`x-usage-units`).
    Units,
    /// LLM tokens, input plus output, as the provider reported them.
    Tokens,
    /// LLM input (prompt) tokens.
    InputTokens,
    /// LLM output (generated) tokens.
    OutputTokens,
    /// Money: what LLM calls cost at their models' prices, in micro-units
    /// of the quota's currency (`cost=100USD/month`).
    Cost,
}

impl QuotaKind {
    /// Every kind, in the order the canonical spelling lists them (a new
    /// kind goes last: the filter's budget stores a kind by its place).
    pub const ALL: [QuotaKind; 8] = [
        QuotaKind::Requests,
        QuotaKind::RequestBytes,
        QuotaKind::ResponseBytes,
        QuotaKind::Units,
        QuotaKind::Tokens,
        QuotaKind::InputTokens,
        QuotaKind::OutputTokens,
        QuotaKind::Cost,
    ];

    /// The name in the spelling and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaKind::Requests => "requests",
            QuotaKind::RequestBytes => "request_bytes",
            QuotaKind::ResponseBytes => "response_bytes",
            QuotaKind::Units => "units",
            QuotaKind::Tokens => "tokens",
            QuotaKind::InputTokens => "input_tokens",
            QuotaKind::OutputTokens => "output_tokens",
            QuotaKind::Cost => "cost",
        }
    }

    fn parse(text: &str) -> Option<QuotaKind> {
        QuotaKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// True when a request is charged before it is routed, from grants
    /// (never exceeded): `requests` and `request_bytes`, known then, and
    /// the token kinds, reserved then ([`QuotaKind::reserves`]). False
    /// when it is known only when the response ends (`response_bytes`,
    /// `units`): settled after the fact.
    pub fn charged_at_admission(self) -> bool {
        matches!(self, QuotaKind::Requests | QuotaKind::RequestBytes) || self.reserves()
    }

    /// True for the token kinds and money: admission reserves an upper
    /// bound of what the call can cost, and when the response ends the
    /// charge becomes what the provider reported (for money, at the
    /// model's price), the rest of the reservation given back.
    pub fn reserves(self) -> bool {
        matches!(
            self,
            QuotaKind::Tokens | QuotaKind::InputTokens | QuotaKind::OutputTokens | QuotaKind::Cost
        )
    }

    /// True for money (`cost`): counted in micro-units of a currency.
    pub fn counts_money(self) -> bool {
        self == QuotaKind::Cost
    }

    /// True for the kinds counted in bytes (they take `KiB`/`MiB`/`GiB`).
    pub fn counts_bytes(self) -> bool {
        matches!(self, QuotaKind::RequestBytes | QuotaKind::ResponseBytes)
    }
}

impl fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A UTC calendar window a quota is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    Minute,
    Hour,
    Day,
    Month,
}

const MS_PER_MINUTE: i64 = 60_000;
const MS_PER_HOUR: i64 = 3_600_000;
const MS_PER_DAY: i64 = 86_400_000;

impl Window {
    /// The name in the spelling and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
        }
    }

    /// Every window, shortest first.
    pub const ALL: [Window; 4] = [Window::Minute, Window::Hour, Window::Day, Window::Month];

    /// The window by its name.
    pub fn parse(text: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.as_str() == text)
    }

    /// The window containing the instant `at_ms` (milliseconds since the
    /// Unix epoch, UTC): its start, included, and its end, excluded.
    pub fn containing(self, at_ms: i64) -> WindowSpan {
        let fixed = |length: i64| {
            let start = at_ms.div_euclid(length) * length;
            WindowSpan {
                start_ms: start,
                end_ms: start + length,
            }
        };
        match self {
            Window::Minute => fixed(MS_PER_MINUTE),
            Window::Hour => fixed(MS_PER_HOUR),
            Window::Day => fixed(MS_PER_DAY),
            Window::Month => {
                let (year, month, _) = civil_from_days(at_ms.div_euclid(MS_PER_DAY));
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                WindowSpan {
                    start_ms: days_from_civil(year, month, 1) * MS_PER_DAY,
                    end_ms: days_from_civil(next_year, next_month, 1) * MS_PER_DAY,
                }
            }
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One window: `[start_ms, end_ms)`, milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpan {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl WindowSpan {
    /// Whole seconds from `at_ms` until the window ends, at least 1: what a
    /// `Retry-After` for a spent quota says.
    pub fn seconds_left(&self, at_ms: i64) -> u64 {
        let left = self.end_ms.saturating_sub(at_ms).max(0) as u64;
        left.div_ceil(1000).max(1)
    }
}

/// The period of a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RatePeriod {
    #[serde(rename = "s")]
    Second,
    #[serde(rename = "min")]
    Minute,
}

impl RatePeriod {
    /// The period's length in milliseconds.
    pub fn millis(self) -> u64 {
        match self {
            RatePeriod::Second => 1000,
            RatePeriod::Minute => 60_000,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RatePeriod::Second => "s",
            RatePeriod::Minute => "min",
        }
    }
}

/// A token bucket: `count` requests per `per`, holding at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub count: u64,
    pub per: RatePeriod,
    pub burst: u64,
}

impl Rate {
    /// The burst when none is given: one second's worth, at least 1.
    pub fn default_burst(count: u64, per: RatePeriod) -> u64 {
        (count * 1000 / per.millis()).max(1)
    }

    /// Parses `N/s` or `N/min` (the burst defaults to one second's worth).
    pub fn parse(text: &str) -> Result<Rate, LimitError> {
        let bad = |why: &str| LimitError::new("rate", text, why);
        let (count, per) = text
            .split_once('/')
            .ok_or_else(|| bad("expected N/s or N/min, e.g. 10/s"))?;
        let per = match per {
            "s" => RatePeriod::Second,
            "min" => RatePeriod::Minute,
            _ => return Err(bad("the period must be `s` or `min`")),
        };
        let count = parse_count(count).map_err(|why| bad(&why))?;
        Ok(Rate {
            count,
            per,
            burst: Rate::default_burst(count, per),
        })
    }

    /// The same rate with another burst; refuses 0 and values over [`MAX_LIMIT`].
    pub fn with_burst(self, burst: u64) -> Result<Rate, LimitError> {
        if burst == 0 || burst > MAX_LIMIT {
            return Err(LimitError::new(
                "burst",
                &burst.to_string(),
                &format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        Ok(Rate { burst, ..self })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.per.as_str())
    }
}

/// A quota: at most `limit` of `kind` in each `window`, over every
/// request of the key or, scoped, over those naming one `model`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub kind: QuotaKind,
    /// For money, in micro-units of `currency`.
    pub limit: u64,
    pub window: Window,
    /// The one model the quota counts (`@model`); `None`: every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The currency of a money quota (and only of one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
}

impl Quota {
    /// Parses `KIND=AMOUNT/WINDOW[@MODEL]`: `requests=1000/day`,
    /// `request_bytes=1GiB/month`, `tokens=1M/month`,
    /// `tokens=100k/day@gpt-4o`, `cost=2.50USD/day` (an amount with at
    /// most six decimals and a currency code).
    pub fn parse(text: &str) -> Result<Quota, LimitError> {
        let bad = |why: &str| LimitError::new("quota", text, why);
        let (kind, rest) = text
            .split_once('=')
            .ok_or_else(|| bad("expected KIND=AMOUNT/WINDOW, e.g. requests=1000/day"))?;
        let kind = QuotaKind::parse(kind).ok_or_else(|| {
            bad(
                "the kind must be requests, request_bytes, response_bytes, units, \
                 tokens, input_tokens, output_tokens or cost",
            )
        })?;
        let (rest, model) = match rest.split_once('@') {
            Some((rest, model)) => (rest, Some(scope_model(model).map_err(|why| bad(&why))?)),
            None => (rest, None),
        };
        let (amount, window) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected AMOUNT/WINDOW after `=`, e.g. 1000/day"))?;
        let window = Window::parse(window)
            .ok_or_else(|| bad("the window must be minute, hour, day or month"))?;
        let (limit, currency) = if kind.counts_money() {
            let (limit, currency) = parse_money(amount).map_err(|why| bad(&why))?;
            (limit, Some(currency))
        } else if kind.counts_bytes() {
            (parse_size(amount).map_err(|why| bad(&why))?, None)
        } else {
            (parse_scaled_count(amount).map_err(|why| bad(&why))?, None)
        };
        Ok(Quota {
            kind,
            limit,
            window,
            model,
            currency,
        })
    }

    /// The quota's name in counters and headers: its kind, and `@model`
    /// when scoped (`tokens@gpt-4o`).
    pub fn name(&self) -> String {
        quota_name(self.kind, self.model.as_deref())
    }

    /// Whether a request naming `model` (`None`: not an LLM call) counts
    /// against this quota.
    pub fn applies_to(&self, model: Option<&str>) -> bool {
        self.model.is_none() || self.model.as_deref() == model
    }

    /// Whether this quota is the one of `kind` scoped to `model`.
    pub fn is(&self, kind: QuotaKind, model: Option<&str>) -> bool {
        self.kind == kind && self.model.as_deref() == model
    }
}

/// The name of the quota of `kind` scoped to `model`: `tokens`,
/// `tokens@gpt-4o`.
pub fn quota_name(kind: QuotaKind, model: Option<&str>) -> String {
    match model {
        Some(model) => format!("{kind}@{model}"),
        None => kind.as_str().to_owned(),
    }
}

/// Reads a quota's scope: a model name of 1 to [`MAX_SCOPE_MODEL_LEN`]
/// visible ASCII characters (the canonical spelling separates parts by
/// whitespace).
fn scope_model(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("expected a model after `@`, e.g. @gpt-4o".into());
    }
    if text.len() > MAX_SCOPE_MODEL_LEN {
        return Err(format!(
            "the model must be at most {MAX_SCOPE_MODEL_LEN} bytes"
        ));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the model must be visible ASCII characters, without spaces".into());
    }
    Ok(text.to_owned())
}

/// Reads an amount of money with its currency: `100USD`, `2.50EUR`
/// (digits, at most six decimals, then an ISO 4217 code the prices know),
/// as micro-units.
fn parse_money(text: &str) -> Result<(u64, Currency), String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_uppercase());
    let code = &text[digits.len()..];
    let currency = Currency::from_code(code).ok_or_else(|| {
        format!(
            "{code:?} is not a known currency: write the amount and one of {}, e.g. 100USD",
            Currency::codes()
        )
    })?;
    let micros = parse_amount(digits, MAX_LIMIT).map_err(|why| match why {
        Amount::Unreadable(why) => why,
        Amount::TooHigh => format!("{text} is more than {MAX_LIMIT} micro-units"),
    })?;
    if micros == 0 {
        return Err(format!("{text} is no money: the amount must be above 0"));
    }
    Ok((micros, currency))
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.currency.filter(|_| self.kind.counts_money()) {
            Some(currency) => write!(
                f,
                "{}={}{}/{}",
                self.kind,
                crate::price::format_amount(self.limit),
                currency.code(),
                self.window
            )?,
            None => write!(f, "{}={}/{}", self.kind, self.limit, self.window)?,
        }
        match &self.model {
            Some(model) => write!(f, "@{model}"),
            None => Ok(()),
        }
    }
}

/// Everything a key is limited by; the default is no limit at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The rate, if any.
    #[serde(default)]
    pub rate: Option<Rate>,
    /// At most one quota per kind and scope, ordered by kind, then scope
    /// (unscoped first).
    #[serde(default)]
    pub quotas: Vec<Quota>,
}

impl Limits {
    /// True when the key has neither a rate nor a quota.
    pub fn is_empty(&self) -> bool {
        self.rate.is_none() && self.quotas.is_empty()
    }

    /// The quota of a kind scoped to `model` (`None`: the unscoped one),
    /// if any.
    pub fn quota(&self, kind: QuotaKind, model: Option<&str>) -> Option<&Quota> {
        self.quotas.iter().find(|q| q.is(kind, model))
    }

    /// Limits from the CLI's and the admin API's parts: `--rate`,
    /// `--burst` (only with a rate), `--quota` (each kind and scope at
    /// most once).
    pub fn from_parts(
        rate: Option<&str>,
        burst: Option<u64>,
        quotas: &[String],
    ) -> Result<Limits, LimitError> {
        let rate = match (rate.map(Rate::parse).transpose()?, burst) {
            (Some(rate), Some(burst)) => Some(rate.with_burst(burst)?),
            (Some(rate), None) => Some(rate),
            (None, Some(burst)) => {
                return Err(LimitError::new(
                    "burst",
                    &burst.to_string(),
                    "a burst needs a rate (--rate N/s)",
                ))
            }
            (None, None) => None,
        };
        let quotas = quotas
            .iter()
            .map(|q| Quota::parse(q))
            .collect::<Result<Vec<_>, _>>()?;
        Limits { rate, quotas }.checked()
    }

    /// Orders the quotas by kind and scope and refuses a kind named twice
    /// for one scope, a number out of range, more than [`MAX_QUOTAS`]
    /// quotas or a spelling longer than [`MAX_SPEC_LEN`] (also for limits
    /// read from JSON).
    pub fn checked(mut self) -> Result<Limits, LimitError> {
        if let Some(rate) = &self.rate {
            if rate.count == 0 || rate.count > MAX_LIMIT {
                return Err(LimitError::new(
                    "rate",
                    &rate.to_string(),
                    &format!("the count must be between 1 and {MAX_LIMIT}"),
                ));
            }
            rate.with_burst(rate.burst)?;
        }
        self.quotas
            .sort_by(|a, b| (a.kind, &a.model).cmp(&(b.kind, &b.model)));
        for pair in self.quotas.windows(2) {
            if (pair[0].kind, &pair[0].model) == (pair[1].kind, &pair[1].model) {
                return Err(LimitError::new(
                    "quota",
                    &pair[1].name(),
                    "each kind may be given only once (per model)",
                ));
            }
        }
        if self.quotas.len() > MAX_QUOTAS {
            return Err(LimitError::new(
                "quota",
                &self.quotas.len().to_string(),
                &format!("a key may have at most {MAX_QUOTAS} quotas"),
            ));
        }
        for quota in &self.quotas {
            if quota.limit == 0 || quota.limit > MAX_LIMIT {
                return Err(LimitError::new(
                    "quota",
                    &quota.to_string(),
                    &format!("the amount must be between 1 and {MAX_LIMIT}"),
                ));
            }
            if let Some(model) = &quota.model {
                scope_model(model).map_err(|why| LimitError::new("quota", &quota.name(), &why))?;
            }
            if quota.kind.counts_money() != quota.currency.is_some() {
                return Err(LimitError::new(
                    "quota",
                    &quota.name(),
                    "a currency belongs to a money quota (cost=100USD/month), and only to one",
                ));
            }
        }
        let spec = self.to_spec();
        if spec.len() > MAX_SPEC_LEN {
            return Err(LimitError::new(
                "quota",
                &spec.len().to_string(),
                &format!("the limits must be spelled in at most {MAX_SPEC_LEN} bytes"),
            ));
        }
        Ok(self)
    }

    /// The one canonical spelling, as stored: `rate=10/s burst=20
    /// requests=1000/day request_bytes=1073741824/month` (sizes in bytes);
    /// empty for no limit.
    pub fn to_spec(&self) -> String {
        let mut parts = Vec::new();
        if let Some(rate) = &self.rate {
            parts.push(format!("rate={rate}"));
            parts.push(format!("burst={}", rate.burst));
        }
        parts.extend(self.quotas.iter().map(Quota::to_string));
        parts.join(" ")
    }

    /// Reads what [`Limits::to_spec`] wrote (and any spelling of the same
    /// parts: sizes with units, a rate without a burst).
    pub fn parse_spec(spec: &str) -> Result<Limits, LimitError> {
        let mut rate = None;
        let mut burst = None;
        let mut quotas = Vec::new();
        for part in spec.split_whitespace() {
            if let Some(text) = part.strip_prefix("rate=") {
                rate = Some(text);
            } else if let Some(text) = part.strip_prefix("burst=") {
                burst =
                    Some(parse_count(text).map_err(|why| LimitError::new("burst", text, &why))?);
            } else {
                quotas.push(part.to_owned());
            }
        }
        Limits::from_parts(rate, burst, &quotas)
    }
}

/// Parses a plain count: decimal digits, between 1 and [`MAX_LIMIT`].
fn parse_count(text: &str) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a whole number"));
    }
    match text.parse::<u64>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!("{text} is not between 1 and {MAX_LIMIT}")),
    }
}

/// Parses a count with an optional `k` (thousand) or `M` (million):
/// `100k`, `1M`.
fn parse_scaled_count(text: &str) -> Result<u64, String> {
    let (digits, scale) = match text.strip_suffix('k') {
        Some(digits) => (digits, 1_000),
        None => match text.strip_suffix('M') {
            Some(digits) => (digits, 1_000_000),
            None => (text, 1),
        },
    };
    let count = parse_count(digits)?;
    count
        .checked_mul(scale)
        .filter(|n| *n <= MAX_LIMIT)
        .ok_or_else(|| format!("{text} is not between 1 and {MAX_LIMIT}"))
}

/// Parses a size: a count with an optional `KiB`, `MiB` or `GiB` (powers
/// of 1024) or `B`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    let count = parse_count(digits)?;
    count
        .checked_mul(scale)
        .filter(|n| *n <= MAX_LIMIT)
        .ok_or_else(|| format!("{text} is more than {MAX_LIMIT} bytes"))
}

/// A limit that cannot be read: which part, what was given, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitError {
    /// `rate`, `burst` or `quota`: the flag (and the admin API's field).
    pub field: &'static str,
    pub given: String,
    pub reason: String,
}

impl LimitError {
    fn new(field: &'static str, given: &str, reason: &str) -> LimitError {
        LimitError {
            field,
            given: given.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} {:?}: {}",
            self.field, self.given, self.reason
        )
    }
}

impl std::error::Error for LimitError {}
