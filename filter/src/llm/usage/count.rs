//! The numbers and texts of an answer as its JSON writes them: token
//! counts read leniently enough to say what is wrong with a bad one, the
//! characters of generated text counted without copying it, and the rules a
//! set of counts must meet to be believed.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tollgate_wire::{TokenUsage, MAX_TOKENS};

use super::Anomaly;

/// A token count as the provider wrote it: believable, or why it is not.
/// Any JSON value reads as one (`null` is read by the `Option` around it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Count {
    /// An integer from 0 to `MAX_TOKENS`.
    Valid(u64),
    /// Negative, fractional, over `MAX_TOKENS`, or not a number.
    Invalid(Anomaly),
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let anomaly = match Scalar::deserialize(deserializer)? {
            Scalar::Natural(n) if n <= MAX_TOKENS => return Ok(Count::Valid(n)),
            Scalar::Natural(_) => Anomaly::UsageTooLarge,
            Scalar::Negative => Anomaly::UsageNegative,
            // Written with a fraction or an exponent, or beyond 64 bits.
            Scalar::Float(v) if v < 0.0 => Anomaly::UsageNegative,
            Scalar::Float(v) if v > MAX_TOKENS as f64 && v.fract() == 0.0 => Anomaly::UsageTooLarge,
            Scalar::Float(_) | Scalar::Text(_) | Scalar::Other => Anomaly::UsageNotInteger,
        };
        Ok(Count::Invalid(anomaly))
    }
}

/// Any JSON value, reduced to what counts and texts need of it.
enum Scalar {
    /// An integer of at least 0.
    Natural(u64),
    /// An integer below 0.
    Negative,
    /// Any other number.
    Float(f64),
    /// A string, by its characters.
    Text(u64),
    /// `null`, a boolean, a list or an object.
    Other,
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Natural(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(u64::try_from(v).map_or(Scalar::Negative, Scalar::Natural))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Text(v.chars().count() as u64))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

/// A field the usage must have.
pub(super) fn required(count: Option<Count>) -> Result<u64, Anomaly> {
    match count {
        Some(Count::Valid(n)) => Ok(n),
        Some(Count::Invalid(anomaly)) => Err(anomaly),
        None => Err(Anomaly::UsageIncomplete),
    }
}

/// A field the usage may leave out (or set to `null`): 0 then.
pub(super) fn optional(count: Option<Count>) -> Result<u64, Anomaly> {
    match count {
        None => Ok(0),
        some => required(some),
    }
}

/// A field present only to override an earlier value: `None` when absent.
pub(super) fn present(count: Option<Count>) -> Result<Option<u64>, Anomaly> {
    count.map(|c| required(Some(c))).transpose()
}

/// The normalized usage of counts already read: each at most `MAX_TOKENS`
/// (sums included), cached at most input, reasoning at most output.
pub(super) fn believe(
    input: u64,
    output: u64,
    cached: u64,
    reasoning: u64,
) -> Result<TokenUsage, Anomaly> {
    if [input, output, cached, reasoning]
        .iter()
        .any(|&n| n > MAX_TOKENS)
    {
        return Err(Anomaly::UsageTooLarge);
    }
    if cached > input || reasoning > output {
        return Err(Anomaly::UsageInconsistent);
    }
    Ok(TokenUsage {
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: cached,
        reasoning_tokens: reasoning,
    })
}

/// `next` as the stream's usage after `prev`: cumulative counts never go
/// backwards.
pub(super) fn advance(prev: Option<TokenUsage>, next: TokenUsage) -> Result<TokenUsage, Anomaly> {
    let Some(prev) = prev else {
        return Ok(next);
    };
    let backwards = next.input_tokens < prev.input_tokens
        || next.output_tokens < prev.output_tokens
        || next.cached_input_tokens < prev.cached_input_tokens
        || next.reasoning_tokens < prev.reasoning_tokens;
    if backwards {
        Err(Anomaly::UsageWentBackwards)
    } else {
        Ok(next)
    }
}

/// The characters of a generated text; any value that is not a string
/// (`null`, an object, ...) counts none. Strings are not copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Chars(pub(super) u64);

impl Chars {
    /// The total of several texts.
    pub(super) fn sum(texts: impl IntoIterator<Item = Chars>) -> u64 {
        texts.into_iter().fold(0, |n, c| n.saturating_add(c.0))
    }
}

impl<'de> Deserialize<'de> for Chars {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Scalar::deserialize(deserializer)? {
            Scalar::Text(chars) => Ok(Chars(chars)),
            _ => Ok(Chars(0)),
        }
    }
}

/// A JSON object read as `T`, and only an object: serde would also read a
/// struct from a list of its fields in order, which no API sends.
pub(super) struct Obj<T>(pub(super) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjVisitor(PhantomData))
    }
}

struct ObjVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
    type Value = Obj<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Obj)
    }
}

/// Reads one JSON object: a syntax error is `invalid_json`, a document of
/// another shape than expected `unexpected_json`.
pub(super) fn parse_json<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Result<T, Anomaly> {
    parse_any::<Obj<T>>(json).map(|obj| obj.0)
}

/// Reads one JSON document of any kind; errors as [`parse_json`].
pub(super) fn parse_any<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Result<T, Anomaly> {
    serde_json::from_slice(json).map_err(|e| {
        if e.is_data() {
            Anomaly::UnexpectedJson
        } else {
            Anomaly::InvalidJson
        }
    })
}
