//! Tests of prices: reading them, picking the version in effect, and the
//! cost integer of a call (with a property: rounding once per row never
//! strays more than half a micro-unit from the exact cost).

use super::*;
use proptest::prelude::*;
use tollgate_wire::{TokenUsage, UsageRecord};

const NOW_MS: u64 = 1_796_083_200_000; // 2026-12-01T00:00:00Z

fn request<'a>(input: &'a str, output: &'a str) -> PriceRequest<'a> {
    PriceRequest {
        model: "gpt-4o",
        input,
        output,
        ..PriceRequest::default()
    }
}

fn tokens(input: u64, cached: u64, output: u64) -> TokenUsage {
    TokenUsage {
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: cached,
        reasoning_tokens: 0,
    }
}

#[test]
fn a_price_is_read_exactly_with_its_defaults() {
    let price = request("2.50", "10").read(NOW_MS).unwrap();
    assert_eq!(price.input_micros, 2_500_000);
    assert_eq!(
        price.cached_input_micros, 2_500_000,
        "cached defaults to input"
    );
    assert_eq!(price.output_micros, 10_000_000);
    assert_eq!(price.per, Per::Million);
    assert_eq!(price.currency, Currency::Usd);
    assert_eq!(price.from_ms, NOW_MS);
    let price = PriceRequest {
        cached_input: Some("1.25"),
        per: Some("1k"),
        currency: Some("EUR"),
        from: Some("2026-12-01T00:00:00Z"),
        ..request("0.000001", "0")
    }
    .read(0)
    .unwrap();
    assert_eq!(
        (
            price.input_micros,
            price.cached_input_micros,
            price.output_micros
        ),
        (1, 1_250_000, 0)
    );
    assert_eq!(
        (price.per, price.currency, price.from_ms),
        (Per::Thousand, Currency::Eur, NOW_MS)
    );
}

#[test]
fn bad_prices_are_refused_naming_the_part() {
    let long = "m".repeat(MAX_MODEL_LEN + 1);
    for (req, field) in [
        (request("-1", "1"), "input"),
        (request("abc", "1"), "input"),
        (request("", "1"), "input"),
        (request("1.", "1"), "input"),
        (request(".5", "1"), "input"),
        (request("1e3", "1"), "input"),
        (request("+1", "1"), "input"),
        (request("1", "0.0000001"), "output"),
        (request("1", "1,5"), "output"),
        (request("1", "1000000001"), "output"),
        (
            PriceRequest {
                cached_input: Some("x"),
                ..request("1", "1")
            },
            "cached_input",
        ),
        (
            PriceRequest {
                per: Some("1m"),
                ..request("1", "1")
            },
            "per",
        ),
        (
            PriceRequest {
                per: Some("1000"),
                ..request("1", "1")
            },
            "per",
        ),
        (
            PriceRequest {
                currency: Some("usd"),
                ..request("1", "1")
            },
            "currency",
        ),
        (
            PriceRequest {
                currency: Some("XYZ"),
                ..request("1", "1")
            },
            "currency",
        ),
        (
            PriceRequest {
                from: Some("yesterday"),
                ..request("1", "1")
            },
            "from",
        ),
        (
            PriceRequest {
                from: Some("1969-01-01T00:00:00Z"),
                ..request("1", "1")
            },
            "from",
        ),
        (
            PriceRequest {
                model: "",
                ..request("1", "1")
            },
            "model",
        ),
        (
            PriceRequest {
                model: "gpt 4o",
                ..request("1", "1")
            },
            "model",
        ),
        (
            PriceRequest {
                model: "gpt-4ö",
                ..request("1", "1")
            },
            "model",
        ),
        (
            PriceRequest {
                model: &long,
                ..request("1", "1")
            },
            "model",
        ),
    ] {
        let err = req.read(NOW_MS).unwrap_err();
        assert_eq!(err.field, field, "{req:?}: {err}");
        assert!(!err.message.is_empty());
    }
    // The bound is per token: 1000 a token, whatever the count.
    assert_eq!(parse_micros("1000", Per::One), Ok(1_000_000_000));
    assert!(parse_micros("1000.000001", Per::One).is_err());
    assert!(parse_micros("1000000000", Per::Million).is_ok());
    assert!(parse_micros("99999999999999999999999", Per::Million).is_err());
    assert_eq!(parse_micros("000.5", Per::One), Ok(500_000));
}

#[test]
fn the_version_in_effect_is_the_latest_from_at_or_before_the_time() {
    let at = |from_ms, input: &str| Price {
        from_ms,
        ..request(input, "0").read(0).unwrap()
    };
    let book = PriceBook::new([at(2_000, "2"), at(1_000, "1"), at(3_000, "3")]);
    let input_at = |ms| {
        book.price_at("gpt-4o", ms)
            .map(|p| p.input_micros / 1_000_000)
    };
    assert_eq!(input_at(999), None);
    assert_eq!(input_at(1_000), Some(1));
    assert_eq!(input_at(1_999), Some(1));
    assert_eq!(input_at(2_000), Some(2));
    assert_eq!(input_at(u64::MAX), Some(3));
    assert!(book.price_at("gpt-4o-mini", 5_000).is_none());
}

#[test]
fn a_call_costs_its_tokens_rounded_half_up_once() {
    // 2.50 / 1.25 / 10.00 per 1M: 1000 input of which 400 cached, 300 output
    // = (600 * 2.5 + 400 * 1.25 + 300 * 10) micro-units = 5000 exactly.
    let price = PriceRequest {
        cached_input: Some("1.25"),
        ..request("2.50", "10")
    }
    .read(0)
    .unwrap();
    assert_eq!(price.cost_micros(&tokens(1000, 400, 300)), 5_000);
    // 1 input token at 2.5 micro-units: 2.5 rounds up to 3; 0.5 to 1; 0.4 to 0.
    assert_eq!(price.cost_micros(&tokens(1, 0, 0)), 3);
    let half = request("0.5", "0.4").read(0).unwrap();
    assert_eq!(half.cost_micros(&tokens(1, 0, 0)), 1);
    assert_eq!(half.cost_micros(&tokens(0, 0, 1)), 0);
    // The largest call at the highest price fits.
    let max = PriceRequest {
        per: Some("1"),
        ..request("1000", "1000")
    }
    .read(0)
    .unwrap();
    let most = tokens(tollgate_wire::MAX_TOKENS, 0, tollgate_wire::MAX_TOKENS);
    assert_eq!(max.cost_micros(&most), 2 * (1 << 30) * 1_000_000_000);
}

#[test]
fn costs_are_formatted_with_six_decimals_and_the_currency() {
    assert_eq!(format_cost(12_345_678, "USD"), "12.345678 USD");
    assert_eq!(format_cost(5, "EUR"), "0.000005 EUR");
    assert_eq!(format_micros(0), "0.000000");
}

#[test]
fn only_llm_calls_are_priced_or_unpriced() {
    use tollgate_wire::{Api, LlmUsage, Outcome, UsageSource};
    let plain = UsageRecord {
        request_id: "r".into(),
        api_key_id: 1,
        method: "POST".into(),
        endpoint: "/v1/chat/completions".into(),
        status_code: 200,
        outcome: Outcome::Allowed,
        request_bytes: 1,
        response_bytes: 1,
        units: 0,
        duration_ms: 1,
        timestamp_ms: NOW_MS,
        llm: None,
    };
    let llm = |model: &str| UsageRecord {
        llm: Some(LlmUsage {
            api: Api::OpenAiChat,
            model: model.into(),
            streamed: false,
            usage_source: UsageSource::Estimated,
            tokens: tokens(1_000_000, 0, 0),
        }),
        ..plain.clone()
    };
    let book = PriceBook::new([Price {
        from_ms: NOW_MS,
        ..request("2", "0").read(0).unwrap()
    }]);
    assert_eq!(book.cost(&plain), RowCost::NotLlm);
    assert_eq!(book.cost(&llm("other")), RowCost::Unpriced);
    assert_eq!(
        book.cost(&llm("gpt-4o")),
        RowCost::Priced {
            micros: 2_000_000,
            currency: Currency::Usd
        }
    );
}

proptest! {
    /// Each row's cost is within half a micro-unit of its exact cost, and
    /// rounds a half up; so the sum of rows strays from the exact sum by
    /// less than half a micro-unit a row, and is the sum of the integers.
    #[test]
    fn a_row_cost_is_its_exact_cost_rounded_half_up(
        input in 0u64..=tollgate_wire::MAX_TOKENS,
        cached_share in 0u64..=100,
        output in 0u64..=tollgate_wire::MAX_TOKENS,
        prices in proptest::array::uniform3(0u64..=MAX_MICROS_PER_TOKEN),
        per in proptest::sample::select(Per::ALL.to_vec()),
    ) {
        let scale = |micros_per_token: u64| micros_per_token * per.tokens() / 1_000_000;
        let price = Price {
            model: "m".into(),
            from_ms: 0,
            currency: Currency::Usd,
            per,
            input_micros: scale(prices[0]).max(prices[0] % 7),
            cached_input_micros: scale(prices[1]),
            output_micros: scale(prices[2]),
        };
        let t = tokens(input, input * cached_share / 100, output);
        let (num, den) = price.exact_cost(&t);
        let cost = u128::try_from(price.cost_micros(&t)).unwrap();
        // cost - 1/2 <= num/den < cost + 1/2, in integers.
        prop_assert!(2 * num < (2 * cost + 1) * den);
        prop_assert!((2 * cost).saturating_sub(1) * den <= 2 * num);
    }
}
