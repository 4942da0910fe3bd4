//! Prices of LLM models as operators write and read them: a price asked
//! for (`2.50` per `1M` tokens in `USD`, from an instant) and checked, and
//! a price as the CLI and the admin API show it. What a price is, the
//! cost rule and the price book are defined once, for the filter too, in
//! `tollgate_wire::price` (re-exported here).

use std::fmt;

pub use tollgate_wire::price::{
    format_micros, parse_micros, Currency, Per, Price, PriceBook, RowCost, MAX_MICROS_PER_TOKEN,
    MICROS_PER_UNIT,
};

/// The longest model name a price takes (`tollgate_wire`'s bound on a
/// call's model).
pub const MAX_MODEL_LEN: usize = tollgate_wire::MAX_MODEL_LEN;

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

/// Micro-units with their currency: `12.345678 USD`.
pub fn format_cost(micros: u128, currency: &str) -> String {
    format!("{} {currency}", format_micros(micros))
}

#[cfg(test)]
#[path = "price_tests.rs"]
mod tests;
