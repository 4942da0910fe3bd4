//! Prices of LLM models and the exact cost of one call, defined once for
//! the filter (which reserves and settles money quotas with them) and the
//! sidecar (which prices every row at ingestion): how a price is kept
//! (integer micro-units per a count of tokens: an exact rational, never a
//! float), which version applies to a call (the latest whose `from` is at
//! or before the call's time), and the cost integer of one call.
//!
//! The cost rule: a call's exact cost is the rational
//! `((input - cached) * input_price + cached * cached_input_price +
//! output * output_price) / per` micro-units (reasoning tokens are part of
//! the output tokens and are not priced apart). It is rounded once, half
//! up, to a whole micro-unit, and stored on the call's row. Every sum
//! (rollups, summaries) adds the stored integers, so a summary's cost is
//! exactly the sum of its rows' costs: no rounding happens after the row.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::llm::TokenUsage;
use crate::usage::UsageRecord;

/// Most micro-units one token may cost: 1000 currency units. A call's
/// cost is then below 2^31 tokens x 10^9 < 2^61 micro-units, so it fits a
/// signed 64-bit column, and the rollups' sums of its 32-bit halves are
/// exact (`store::rollup::Halves`).
pub const MAX_MICROS_PER_TOKEN: u64 = 1_000_000_000;

/// Micro-units in one currency unit.
pub const MICROS_PER_UNIT: u64 = 1_000_000;

/// The currencies a price (and a money quota) may be in (ISO 4217 codes;
/// on the wire, the code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Currency {
    #[serde(rename = "USD")]
    Usd,
    #[serde(rename = "EUR")]
    Eur,
    #[serde(rename = "GBP")]
    Gbp,
    #[serde(rename = "JPY")]
    Jpy,
    #[serde(rename = "CHF")]
    Chf,
    #[serde(rename = "CAD")]
    Cad,
    #[serde(rename = "AUD")]
    Aud,
    #[serde(rename = "CNY")]
    Cny,
    #[serde(rename = "INR")]
    Inr,
}

impl Currency {
    /// Every currency a price may be in.
    pub const ALL: [Currency; 9] = [
        Currency::Usd,
        Currency::Eur,
        Currency::Gbp,
        Currency::Jpy,
        Currency::Chf,
        Currency::Cad,
        Currency::Aud,
        Currency::Cny,
        Currency::Inr,
    ];

    /// Its ISO 4217 code.
    pub fn code(self) -> &'static str {
        match self {
            Currency::Usd => "USD",
            Currency::Eur => "EUR",
            Currency::Gbp => "GBP",
            Currency::Jpy => "JPY",
            Currency::Chf => "CHF",
            Currency::Cad => "CAD",
            Currency::Aud => "AUD",
            Currency::Cny => "CNY",
            Currency::Inr => "INR",
        }
    }

    /// The currency of an exact code (`USD`, never `usd`).
    pub fn from_code(code: &str) -> Option<Currency> {
        Currency::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The codes, for messages: `USD, EUR, ...`.
    pub fn codes() -> String {
        Currency::ALL.map(Currency::code).join(", ")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// How many tokens a price is for: `1`, `1k` or `1M` (on the wire, the
/// count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub enum Per {
    One,
    Thousand,
    Million,
}

impl Per {
    /// Every count, as written.
    pub const ALL: [Per; 3] = [Per::One, Per::Thousand, Per::Million];

    /// The count of tokens.
    pub fn tokens(self) -> u64 {
        match self {
            Per::One => 1,
            Per::Thousand => 1_000,
            Per::Million => 1_000_000,
        }
    }

    /// As written in `--per`.
    pub fn name(self) -> &'static str {
        match self {
            Per::One => "1",
            Per::Thousand => "1k",
            Per::Million => "1M",
        }
    }

    /// The count written `text`, if it is one.
    pub fn from_name(text: &str) -> Option<Per> {
        Per::ALL.into_iter().find(|p| p.name() == text)
    }

    /// The count of a stored `per_tokens`, if it is one.
    pub fn from_tokens(tokens: i64) -> Option<Per> {
        Per::ALL
            .into_iter()
            .find(|p| i64::try_from(p.tokens()) == Ok(tokens))
    }
}

impl From<Per> for u64 {
    fn from(per: Per) -> u64 {
        per.tokens()
    }
}

impl TryFrom<u64> for Per {
    type Error = String;

    fn try_from(tokens: u64) -> Result<Per, String> {
        Per::ALL
            .into_iter()
            .find(|p| p.tokens() == tokens)
            .ok_or_else(|| format!("{tokens} is not 1, 1000 or 1000000 tokens"))
    }
}

/// One version of a model's price: micro-units per [`Per`] tokens, in
/// effect from `from_ms` (Unix milliseconds) until the model's next version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub model: String,
    pub from_ms: u64,
    pub currency: Currency,
    pub per: Per,
    pub input_micros: u64,
    pub cached_input_micros: u64,
    pub output_micros: u64,
}

impl Price {
    /// The exact cost of a call with these tokens, rounded half up once to
    /// a whole micro-unit (see the module's rule). Never overflows: each
    /// price is at most [`MAX_MICROS_PER_TOKEN`] a token and each count at
    /// most 2^30 (`tollgate_wire::MAX_TOKENS`), so the result is below 2^61.
    pub fn cost_micros(&self, tokens: &TokenUsage) -> i64 {
        let (exact, per) = self.exact_cost(tokens);
        // floor(exact / per + 1/2) = floor((2 * exact + per) / (2 * per)).
        let rounded = (2 * exact + per) / (2 * per);
        i64::try_from(rounded).unwrap_or(i64::MAX)
    }

    /// The most a call can cost whose input is at most `input` tokens
    /// (cached or not: the dearer of the two input prices) and whose
    /// output is at most `output`: its exact bound rounded up, so that it
    /// is never below the [`Price::cost_micros`] of any call within those
    /// counts (a money quota's reservation).
    pub fn bound_micros(&self, input: u64, output: u64) -> u64 {
        let input_price = self.input_micros.max(self.cached_input_micros);
        let numerator = u128::from(input) * u128::from(input_price)
            + u128::from(output) * u128::from(self.output_micros);
        let bound = numerator.div_ceil(u128::from(self.per.tokens()));
        u64::try_from(bound).unwrap_or(u64::MAX)
    }

    /// The exact cost as a fraction of micro-units: (numerator, denominator).
    pub fn exact_cost(&self, tokens: &TokenUsage) -> (u128, u128) {
        let cached = u128::from(tokens.cached_input_tokens.min(tokens.input_tokens));
        let uncached = u128::from(tokens.input_tokens) - cached;
        let numerator = uncached * u128::from(self.input_micros)
            + cached * u128::from(self.cached_input_micros)
            + u128::from(tokens.output_tokens) * u128::from(self.output_micros);
        (numerator, u128::from(self.per.tokens()))
    }
}

/// Reads an amount of currency (`2.50`, `10`, `0.000125`: digits, and at
/// most six decimals) as whole micro-units, at most
/// [`MAX_MICROS_PER_TOKEN`] a token of `per`.
pub fn parse_micros(text: &str, per: Per) -> Result<u64, String> {
    let max = MAX_MICROS_PER_TOKEN.saturating_mul(per.tokens());
    parse_amount(text, max).map_err(|why| match why {
        Amount::Unreadable(why) => why,
        Amount::TooHigh => format!(
            "{text:?} is more than {} a token ({} per {})",
            MAX_MICROS_PER_TOKEN / MICROS_PER_UNIT,
            max / MICROS_PER_UNIT,
            per.name()
        ),
    })
}

/// Why an amount was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Amount {
    /// Not digits with at most six decimals (the message says so).
    Unreadable(String),
    /// Above the bound it was read against.
    TooHigh,
}

/// Reads an amount of currency (`2.50`, `10`, `0.000125`) as whole
/// micro-units, at most `max`.
pub fn parse_amount(text: &str, max: u64) -> Result<u64, Amount> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || text.ends_with('.') {
        return Err(Amount::Unreadable(format!(
            "{text:?} is not an amount: write digits with at most six decimals, e.g. 2.50"
        )));
    }
    if fraction.len() > 6 {
        return Err(Amount::Unreadable(format!(
            "{text:?} has more than six decimals (money is kept in millionths)"
        )));
    }
    let whole = whole.trim_start_matches('0');
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| Amount::TooHigh)?
    };
    let fraction: u64 = format!("{fraction:0<6}").parse().unwrap_or(0);
    whole
        .checked_mul(MICROS_PER_UNIT)
        .and_then(|w| w.checked_add(fraction))
        .filter(|micros| *micros <= max)
        .ok_or(Amount::TooHigh)
}

/// Micro-units as an amount with six decimals: `12.345678`.
pub fn format_micros(micros: u128) -> String {
    let unit = u128::from(MICROS_PER_UNIT);
    format!("{}.{:06}", micros / unit, micros % unit)
}

/// An amount of money in micro-units, as few digits as say it exactly:
/// `100`, `2.5`, `0.000125` (a money quota's spelling).
pub fn format_amount(micros: u64) -> String {
    let (whole, fraction) = (micros / MICROS_PER_UNIT, micros % MICROS_PER_UNIT);
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:06}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// What a usage row costs, as ingestion stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowCost {
    /// Not an LLM call: no cost, and not unpriced either.
    NotLlm,
    /// An LLM call of a model with no price in effect at its time.
    Unpriced,
    /// An LLM call's cost in whole micro-units.
    Priced { micros: i64, currency: Currency },
}

impl RowCost {
    /// The stored `cost_micros`: `None` unless priced.
    pub fn micros(self) -> Option<i64> {
        match self {
            RowCost::Priced { micros, .. } => Some(micros),
            _ => None,
        }
    }

    /// The stored `currency`: `None` unless priced.
    pub fn currency(self) -> Option<Currency> {
        match self {
            RowCost::Priced { currency, .. } => Some(currency),
            _ => None,
        }
    }
}

/// The price versions of some models, each model's oldest first: what
/// ingestion prices a batch with, and what a filter reserves money with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceBook {
    by_model: BTreeMap<String, Vec<Price>>,
}

impl PriceBook {
    /// A book of these versions, in any order.
    pub fn new(prices: impl IntoIterator<Item = Price>) -> PriceBook {
        let mut by_model: BTreeMap<String, Vec<Price>> = BTreeMap::new();
        for price in prices {
            by_model.entry(price.model.clone()).or_default().push(price);
        }
        for versions in by_model.values_mut() {
            versions.sort_by_key(|p| p.from_ms);
        }
        PriceBook { by_model }
    }

    /// Every version, model by model, oldest first.
    pub fn prices(&self) -> impl Iterator<Item = &Price> {
        self.by_model.values().flatten()
    }

    /// The currency of its prices, when it has any (a book holds one).
    pub fn currency(&self) -> Option<Currency> {
        self.prices().next().map(|p| p.currency)
    }

    /// The version of `model`'s price in effect at `at_ms`: the latest
    /// whose `from_ms` is at or before it.
    pub fn price_at(&self, model: &str, at_ms: u64) -> Option<&Price> {
        let versions = self.by_model.get(model)?;
        let after = versions.partition_point(|p| p.from_ms <= at_ms);
        after.checked_sub(1).and_then(|i| versions.get(i))
    }

    /// What `record` costs at its own time.
    pub fn cost(&self, record: &UsageRecord) -> RowCost {
        let Some(llm) = &record.llm else {
            return RowCost::NotLlm;
        };
        match self.price_at(&llm.model, record.timestamp_ms) {
            None => RowCost::Unpriced,
            Some(price) => RowCost::Priced {
                micros: price.cost_micros(&llm.tokens),
                currency: price.currency,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input: u64, cached: u64, output: u64, per: Per) -> Price {
        Price {
            model: "m".into(),
            from_ms: 0,
            currency: Currency::Usd,
            per,
            input_micros: input,
            cached_input_micros: cached,
            output_micros: output,
        }
    }

    #[test]
    fn a_bound_is_never_below_the_cost_of_a_call_within_it() {
        let p = price(2_500_000, 1_250_000, 10_000_000, Per::Million);
        for (input, cached, output) in [(0, 0, 0), (1, 0, 1), (7, 7, 3), (999, 10, 4096)] {
            let used = TokenUsage {
                input_tokens: input,
                output_tokens: output,
                cached_input_tokens: cached,
                ..TokenUsage::default()
            };
            let cost = u64::try_from(p.cost_micros(&used)).unwrap();
            assert!(cost <= p.bound_micros(input, output), "{used:?}");
        }
        assert_eq!(p.bound_micros(1, 0), 3, "2.5 micro-units, rounded up");
        let dear_cache = price(1, 5, 0, Per::One);
        assert_eq!(dear_cache.bound_micros(2, 0), 10, "the dearer input price");
    }

    #[test]
    fn prices_and_amounts_travel_as_codes_counts_and_short_decimals() {
        let p = price(1, 1, 2, Per::Thousand);
        let text = serde_json::to_string(&p).unwrap();
        assert!(
            text.contains(r#""currency":"USD""#) && text.contains(r#""per":1000"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Price>(&text).unwrap(), p);
        assert!(serde_json::from_str::<Per>("7").is_err());
        assert_eq!(format_amount(100_000_000), "100");
        assert_eq!(format_amount(2_500_000), "2.5");
        assert_eq!(format_amount(125), "0.000125");
    }
}
