//! Prices of LLM models and the exact cost of one call: how a price is
//! written (`2.50` per `1M` tokens in `USD`, from an instant), how it is
//! kept (integer micro-units per a count of tokens: an exact rational,
//! never a float), which version applies to a call (the latest whose
//! `from` is at or before the call's time), and the cost integer of one
//! call.
//!
//! The cost rule: a call's exact cost is the rational
//! `((input - cached) * input_price + cached * cached_input_price +
//! output * output_price) / per` micro-units (reasoning tokens are part of
//! the output tokens and are not priced apart). It is rounded once, half
//! up, to a whole micro-unit when the call is ingested, and stored. Every
//! sum (rollups, summaries) adds the stored integers, so a summary's cost
//! is exactly the sum of its rows' costs: no rounding happens after the row.

use std::collections::BTreeMap;
use std::fmt;

use tollgate_wire::{TokenUsage, UsageRecord};

/// Most micro-units one token may cost: 1000 currency units. A call's
/// cost is then below 2^31 tokens x 10^9 < 2^61 micro-units, so it fits a
/// signed 64-bit column, and the rollups' sums of its 32-bit halves are
/// exact (`store::rollup::Halves`).
pub const MAX_MICROS_PER_TOKEN: u64 = 1_000_000_000;

/// Micro-units in one currency unit.
pub const MICROS_PER_UNIT: u64 = 1_000_000;

/// The longest model name a price takes (`tollgate_wire`'s bound on a
/// call's model).
pub const MAX_MODEL_LEN: usize = tollgate_wire::MAX_MODEL_LEN;

/// The currencies a price may be in (ISO 4217 codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Currency {
    Usd,
    Eur,
    Gbp,
    Jpy,
    Chf,
    Cad,
    Aud,
    Cny,
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

/// How many tokens a price is for: `1`, `1k` or `1M`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// One version of a model's price: micro-units per [`Per`] tokens, in
/// effect from `from_ms` (Unix milliseconds) until the model's next version.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A price as the CLI and the admin API show it: the amounts as decimals
/// with six places and as the exact micro-units kept.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PriceView {
    pub model: String,
    /// When it takes effect, RFC 3339 UTC.
    pub from: String,
    pub currency: &'static str,
    /// `1`, `1k` or `1M` tokens.
    pub per: &'static str,
    pub per_tokens: u64,
    pub input: String,
    pub cached_input: String,
    pub output: String,
    pub input_micros: u64,
    pub cached_input_micros: u64,
    pub output_micros: u64,
}

impl PriceView {
    /// The view of a price.
    pub fn of(price: &Price) -> PriceView {
        let from = crate::domain::clock::from_unix_ms(price.from_ms)
            .map(crate::domain::clock::format_rfc3339)
            .unwrap_or_else(|| price.from_ms.to_string());
        PriceView {
            model: price.model.clone(),
            from,
            currency: price.currency.code(),
            per: price.per.name(),
            per_tokens: price.per.tokens(),
            input: format_micros(u128::from(price.input_micros)),
            cached_input: format_micros(u128::from(price.cached_input_micros)),
            output: format_micros(u128::from(price.output_micros)),
            input_micros: price.input_micros,
            cached_input_micros: price.cached_input_micros,
            output_micros: price.output_micros,
        }
    }
}

/// A price as it is asked for (the CLI's flags, the admin API's body),
/// every part as text; [`PriceRequest::read`] checks it.
#[derive(Debug, Clone, Default)]
pub struct PriceRequest<'a> {
    pub model: &'a str,
    pub input: &'a str,
    pub output: &'a str,
    /// The input price without one.
    pub cached_input: Option<&'a str>,
    /// `1M` without one.
    pub per: Option<&'a str>,
    /// `USD` without one.
    pub currency: Option<&'a str>,
    /// RFC 3339; now without one.
    pub from: Option<&'a str>,
}

/// Why a price was refused: the part at fault (`model`, `input`, `output`,
/// `cached_input`, `per`, `currency`, `from`) and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceError {
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for PriceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl PriceRequest<'_> {
    /// The price asked for, in effect from `from` or else `now_ms`; the
    /// first part at fault otherwise.
    pub fn read(&self, now_ms: u64) -> Result<Price, PriceError> {
        let refuse = |field, message| PriceError { field, message };
        let model = check_model(self.model).map_err(|m| refuse("model", m))?;
        let per = match self.per {
            None => Per::Million,
            Some(text) => Per::from_name(text).ok_or_else(|| {
                refuse(
                    "per",
                    format!("{text:?} is not a count of tokens: use 1, 1k or 1M"),
                )
            })?,
        };
        let amount =
            |field, text: &str| parse_micros(text, per).map_err(|message| refuse(field, message));
        let input_micros = amount("input", self.input)?;
        let output_micros = amount("output", self.output)?;
        let cached_input_micros = match self.cached_input {
            None => input_micros,
            Some(text) => amount("cached_input", text)?,
        };
        let currency = match self.currency {
            None => Currency::Usd,
            Some(code) => Currency::from_code(code).ok_or_else(|| {
                refuse(
                    "currency",
                    format!(
                        "{code:?} is not a known currency: use one of {}",
                        Currency::codes()
                    ),
                )
            })?,
        };
        let from_ms = match self.from {
            None => now_ms,
            Some(text) => crate::domain::clock::parse_rfc3339(text)
                .map(crate::domain::clock::to_unix_ms)
                .map_err(|m| refuse("from", m))?,
        };
        Ok(Price {
            model,
            from_ms,
            currency,
            per,
            input_micros,
            cached_input_micros,
            output_micros,
        })
    }
}

/// A price's model: 1 to [`MAX_MODEL_LEN`] visible ASCII characters.
pub fn check_model(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > MAX_MODEL_LEN {
        return Err(format!("a model name is 1 to {MAX_MODEL_LEN} characters"));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a model name is visible ASCII characters, without spaces".into());
    }
    Ok(text.to_owned())
}

/// Reads an amount of currency (`2.50`, `10`, `0.000125`: digits, and at
/// most six decimals) as whole micro-units, at most
/// [`MAX_MICROS_PER_TOKEN`] a token of `per`.
pub fn parse_micros(text: &str, per: Per) -> Result<u64, String> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || text.ends_with('.') {
        return Err(format!(
            "{text:?} is not an amount: write digits with at most six decimals, e.g. 2.50"
        ));
    }
    if fraction.len() > 6 {
        return Err(format!(
            "{text:?} has more than six decimals (prices are kept in millionths)"
        ));
    }
    let max = MAX_MICROS_PER_TOKEN.saturating_mul(per.tokens());
    let too_high = || {
        format!(
            "{text:?} is more than {} a token ({} per {})",
            MAX_MICROS_PER_TOKEN / MICROS_PER_UNIT,
            max / MICROS_PER_UNIT,
            per.name()
        )
    };
    let whole: u64 = whole
        .trim_start_matches('0')
        .parse::<u64>()
        .or_else(|_| {
            if whole.bytes().all(|b| b == b'0') {
                Ok(0)
            } else {
                Err(())
            }
        })
        .map_err(|_| too_high())?;
    let fraction: u64 = format!("{fraction:0<6}").parse().unwrap_or(0);
    whole
        .checked_mul(MICROS_PER_UNIT)
        .and_then(|w| w.checked_add(fraction))
        .filter(|micros| *micros <= max)
        .ok_or_else(too_high)
}

/// Micro-units as an amount with six decimals: `12.345678`.
pub fn format_micros(micros: u128) -> String {
    let unit = u128::from(MICROS_PER_UNIT);
    format!("{}.{:06}", micros / unit, micros % unit)
}

/// Micro-units with their currency: `12.345678 USD`.
pub fn format_cost(micros: u128, currency: &str) -> String {
    format!("{} {currency}", format_micros(micros))
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
/// ingestion prices a batch with.
#[derive(Debug, Clone, Default)]
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
#[path = "price_tests.rs"]
mod tests;
