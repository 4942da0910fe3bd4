//! Parsing, the canonical spelling and the calendar windows of limits.

use super::*;
use proptest::prelude::*;

const MS_PER_DAY: i64 = 86_400_000;

/// Milliseconds of `year-month-day hh:00` UTC.
fn at(year: i64, month: u32, day: u32, hour: i64) -> i64 {
    days_from_civil(year, month, day) * MS_PER_DAY + hour * 3_600_000
}

#[test]
fn rates_parse_with_a_default_burst_of_one_seconds_worth() {
    let rate = Rate::parse("10/s").unwrap();
    assert_eq!(
        (rate.count, rate.per, rate.burst),
        (10, RatePeriod::Second, 10)
    );
    let rate = Rate::parse("600/min").unwrap();
    assert_eq!(
        (rate.count, rate.per, rate.burst),
        (600, RatePeriod::Minute, 10)
    );
    assert_eq!(Rate::parse("30/min").unwrap().burst, 1, "never below one");
    assert_eq!(
        Rate::parse("10/s").unwrap().with_burst(20).unwrap().burst,
        20
    );
}

#[test]
fn bad_rates_say_what_is_wrong() {
    for (text, says) in [
        ("10", "expected N/s or N/min"),
        ("10/h", "`s` or `min`"),
        ("0/s", "not between 1"),
        ("-1/s", "not a whole number"),
        ("ten/s", "not a whole number"),
        ("99999999999999999999/s", "not between 1"),
    ] {
        let error = Rate::parse(text).unwrap_err();
        assert_eq!(error.field, "rate");
        assert!(error.to_string().contains(says), "{text}: {error}");
        assert!(error.to_string().contains(text), "{error} names the input");
    }
    assert!(Rate::parse("1/s").unwrap().with_burst(0).is_err());
}

#[test]
fn quotas_parse_with_sizes_in_powers_of_1024() {
    let quota = Quota::parse("requests=1000/day").unwrap();
    assert_eq!(
        (quota.kind, quota.limit, quota.window),
        (QuotaKind::Requests, 1000, Window::Day)
    );
    assert_eq!(
        Quota::parse("request_bytes=1GiB/month").unwrap().limit,
        1 << 30
    );
    assert_eq!(
        Quota::parse("response_bytes=3MiB/hour").unwrap().limit,
        3 << 20
    );
    assert_eq!(
        Quota::parse("response_bytes=2KiB/hour").unwrap().limit,
        2048
    );
    assert_eq!(
        Quota::parse("units=50000/hour").unwrap().kind,
        QuotaKind::Units
    );
    for (text, says) in [
        ("requests", "KIND=AMOUNT/WINDOW"),
        ("cents=10/day", "the kind must be"),
        ("tokens=10/week", "minute, hour, day or month"),
        ("tokens=1G/day", "not a whole number"),
        ("tokens=1k/day@", "a model after `@`"),
        ("tokens=1k/day@a b", "visible ASCII"),
        ("tokens=0k/day", "not between 1"),
        ("requests=1KiB/day", "not a whole number"),
        ("requests=10", "AMOUNT/WINDOW"),
        ("requests=10/week", "hour, day or month"),
        ("requests=1KiB/day", "not a whole number"),
        ("request_bytes=1GB/day", "unknown size unit"),
        ("request_bytes=9999999GiB/day", "more than"),
        ("units=0/day", "not between 1"),
    ] {
        let error = Quota::parse(text).unwrap_err();
        assert_eq!(error.field, "quota");
        assert!(error.to_string().contains(says), "{text}: {error}");
    }
}

#[test]
fn token_quotas_take_k_and_m_a_minute_window_and_a_model_scope() {
    let quota = Quota::parse("tokens=1M/month").unwrap();
    assert_eq!(
        (
            quota.kind,
            quota.limit,
            quota.window,
            quota.model.as_deref()
        ),
        (QuotaKind::Tokens, 1_000_000, Window::Month, None)
    );
    let quota = Quota::parse("output_tokens=100k/minute@gpt-4o").unwrap();
    assert_eq!(
        (quota.kind, quota.limit, quota.window),
        (QuotaKind::OutputTokens, 100_000, Window::Minute)
    );
    assert_eq!(quota.model.as_deref(), Some("gpt-4o"));
    assert_eq!(quota.name(), "output_tokens@gpt-4o");
    assert_eq!(quota.to_string(), "output_tokens=100000/minute@gpt-4o");
    assert!(quota.applies_to(Some("gpt-4o")));
    assert!(!quota.applies_to(Some("gpt-4o-mini")) && !quota.applies_to(None));
    assert!(Quota::parse("tokens=5/day").unwrap().applies_to(None));
    let scoped = Quota::parse("tokens=5/day@models/a@b:c").unwrap();
    assert_eq!(
        scoped.model.as_deref(),
        Some("models/a@b:c"),
        "the first @ scopes"
    );
    assert_eq!(Quota::parse("requests=2k/hour").unwrap().limit, 2000);
    assert!(QuotaKind::Tokens.charged_at_admission() && QuotaKind::Tokens.reserves());
    assert!(!QuotaKind::Requests.reserves() && !QuotaKind::Units.charged_at_admission());
}

#[test]
fn a_minute_window_is_the_utc_minute() {
    let span = Window::Minute.containing(at(2026, 12, 6, 19) + 61_500);
    assert_eq!(span.start_ms, at(2026, 12, 6, 19) + 60_000);
    assert_eq!(span.end_ms - span.start_ms, 60_000);
}

#[test]
fn one_kind_may_be_scoped_to_several_models_but_each_scope_once() {
    let parts = [
        "tokens=9k/day@b".to_owned(),
        "tokens=1k/day".to_owned(),
        "tokens=5k/day@a".to_owned(),
    ];
    let limits = Limits::from_parts(None, None, &parts).unwrap();
    assert_eq!(
        limits.to_spec(),
        "tokens=1000/day tokens=5000/day@a tokens=9000/day@b"
    );
    assert_eq!(
        limits.quota(QuotaKind::Tokens, Some("a")).unwrap().limit,
        5000
    );
    assert_eq!(limits.quota(QuotaKind::Tokens, None).unwrap().limit, 1000);
    assert_eq!(Limits::parse_spec(&limits.to_spec()).unwrap(), limits);
    let twice = ["tokens=1/day@a".to_owned(), "tokens=2/hour@a".to_owned()];
    let error = Limits::from_parts(None, None, &twice).unwrap_err();
    assert!(error.to_string().contains("only once"), "{error}");
    let many: Vec<String> = (0..17).map(|i| format!("tokens=1/day@m{i}")).collect();
    let error = Limits::from_parts(None, None, &many).unwrap_err();
    assert!(error.to_string().contains("at most 16"), "{error}");
}

#[test]
fn limits_refuse_a_kind_twice_and_a_burst_without_a_rate() {
    let twice = ["requests=1/day".to_owned(), "requests=2/hour".to_owned()];
    let error = Limits::from_parts(None, None, &twice).unwrap_err();
    assert!(error.to_string().contains("only once"), "{error}");
    let error = Limits::from_parts(None, Some(5), &[]).unwrap_err();
    assert_eq!(error.field, "burst");
    assert!(Limits::from_parts(None, None, &[]).unwrap().is_empty());
}

#[test]
fn the_canonical_spelling_orders_quotas_and_writes_sizes_in_bytes() {
    let quotas = [
        "units=5/hour".to_owned(),
        "request_bytes=1GiB/month".to_owned(),
    ];
    let limits = Limits::from_parts(Some("10/s"), Some(20), &quotas).unwrap();
    assert_eq!(
        limits.to_spec(),
        "rate=10/s burst=20 request_bytes=1073741824/month units=5/hour"
    );
    assert_eq!(Limits::parse_spec(&limits.to_spec()).unwrap(), limits);
    assert_eq!(limits.quota(QuotaKind::Units, None).unwrap().limit, 5);
    assert!(QuotaKind::Requests.charged_at_admission());
    assert!(!QuotaKind::Units.charged_at_admission());
}

#[test]
fn limits_travel_as_json() {
    let limits = Limits::from_parts(Some("10/s"), None, &["requests=1000/day".to_owned()]).unwrap();
    let text = serde_json::to_string(&limits).unwrap();
    assert_eq!(
        text,
        r#"{"rate":{"count":10,"per":"s","burst":10},"quotas":[{"kind":"requests","limit":1000,"window":"day"}]}"#
    );
    assert_eq!(serde_json::from_str::<Limits>(&text).unwrap(), limits);
}

#[test]
fn windows_align_to_utc_calendar_boundaries() {
    let t = at(2026, 12, 2, 4) + 123_456;
    assert_eq!(
        Window::Hour.containing(t),
        WindowSpan {
            start_ms: at(2026, 12, 2, 4),
            end_ms: at(2026, 12, 2, 5)
        }
    );
    assert_eq!(
        Window::Day.containing(t),
        WindowSpan {
            start_ms: at(2026, 12, 2, 0),
            end_ms: at(2026, 12, 3, 0)
        }
    );
    assert_eq!(
        Window::Month.containing(t),
        WindowSpan {
            start_ms: at(2026, 12, 1, 0),
            end_ms: at(2027, 1, 1, 0)
        }
    );
    // The start is in the window, the end is not.
    let start = at(2027, 1, 1, 0);
    assert_eq!(Window::Month.containing(start).start_ms, start);
    assert_eq!(Window::Month.containing(start - 1).end_ms, start);
    assert_eq!(
        Window::Day.containing(-1).start_ms,
        -MS_PER_DAY,
        "before the epoch too"
    );
}

#[test]
fn month_lengths_and_leap_years_are_right() {
    let days = |year, month| {
        let span = Window::Month.containing(at(year, month, 15, 12));
        (span.end_ms - span.start_ms) / MS_PER_DAY
    };
    assert_eq!(days(2026, 1), 31);
    assert_eq!(days(2026, 2), 28);
    assert_eq!(days(2028, 2), 29, "divisible by 4");
    assert_eq!(days(2100, 2), 28, "a century");
    assert_eq!(days(2000, 2), 29, "every fourth century");
    assert_eq!(days(2026, 4), 30);
    assert_eq!(days(2026, 12), 31);
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    assert_eq!(civil_from_days(19_723), (2024, 1, 1));
}

#[test]
fn retry_after_counts_whole_seconds_to_the_windows_end() {
    let span = Window::Hour.containing(at(2026, 12, 2, 4));
    assert_eq!(span.seconds_left(span.end_ms - 1), 1);
    assert_eq!(span.seconds_left(span.end_ms - 1500), 2);
    assert_eq!(span.seconds_left(span.start_ms), 3600);
}

proptest! {
    #[test]
    fn days_and_dates_round_trip(days in -1_000_000i64..1_000_000) {
        let (y, m, d) = civil_from_days(days);
        prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d));
        prop_assert_eq!(days_from_civil(y, m, d), days);
    }

    #[test]
    fn every_instant_lies_in_its_window_and_windows_tile(at_ms in -10_000_000_000_000i64..10_000_000_000_000) {
        for window in [Window::Hour, Window::Day, Window::Month] {
            let span = window.containing(at_ms);
            prop_assert!(span.start_ms <= at_ms && at_ms < span.end_ms);
            // The next window starts where this one ends; the previous one ends where it starts.
            prop_assert_eq!(window.containing(span.end_ms).start_ms, span.end_ms);
            prop_assert_eq!(window.containing(span.start_ms - 1).end_ms, span.start_ms);
            if window == Window::Month {
                let (_, _, day) = civil_from_days(span.start_ms / MS_PER_DAY);
                prop_assert_eq!(day, 1);
                let length = (span.end_ms - span.start_ms) / MS_PER_DAY;
                prop_assert!((28..=31).contains(&length));
            }
        }
    }

    #[test]
    fn any_valid_limits_survive_their_spelling(
        count in 1u64..1_000_000, per_minute: bool, burst in proptest::option::of(1u64..1_000_000),
        kinds in proptest::sample::subsequence(QuotaKind::ALL.to_vec(), 0..=4),
        amount in 1u64..1_000_000_000, window in 0usize..3,
    ) {
        let per = if per_minute { "min" } else { "s" };
        let rate = format!("{count}/{per}");
        let windows = ["hour", "day", "month"];
        // Money as micro-units written with six decimals and a currency.
        let spelled = |k: &QuotaKind| match k {
            QuotaKind::Cost => format!("{}.{:06}EUR", amount / 1_000_000, amount % 1_000_000),
            _ => amount.to_string(),
        };
        let quotas: Vec<String> =
            kinds.iter().map(|k| format!("{k}={}/{}", spelled(k), windows[window])).collect();
        let limits = Limits::from_parts(Some(&rate), burst, &quotas).unwrap();
        prop_assert_eq!(Limits::parse_spec(&limits.to_spec()).unwrap(), limits.clone());
        if let Some(cost) = limits.quota(QuotaKind::Cost, None) {
            prop_assert_eq!(cost.limit, amount);
        }
        prop_assert!(limits.quotas.len() <= MAX_QUOTAS);
    }

    #[test]
    fn parsing_never_panics(text in "\\PC{0,40}") {
        let _ = Rate::parse(&text);
        let _ = Quota::parse(&text);
        let _ = Limits::parse_spec(&text);
        let _ = parse_size(&text);
    }
}

#[test]
fn money_quotas_are_amounts_in_a_currency_kept_in_micro_units() {
    let q = Quota::parse("cost=2.50USD/day@gpt-4o").unwrap();
    assert_eq!(
        (q.kind, q.limit, q.currency),
        (
            QuotaKind::Cost,
            2_500_000,
            Some(crate::price::Currency::Usd)
        )
    );
    assert_eq!(q.to_string(), "cost=2.5USD/day@gpt-4o");
    assert_eq!(
        Quota::parse("cost=100USD/month").unwrap().limit,
        100_000_000
    );
    for (bad, says) in [
        ("cost=100/month", "currency"),
        ("cost=100usd/month", "currency"),
        ("cost=100XYZ/month", "currency"),
        ("cost=0USD/month", "above 0"),
        ("cost=1.0000001USD/month", "six decimals"),
        ("cost=-1USD/month", "not an amount"),
        ("cost=1e3USD/month", "not an amount"),
    ] {
        let err = Quota::parse(bad).unwrap_err();
        assert_eq!(err.field, "quota");
        assert!(err.reason.contains(says), "{bad}: {err}");
    }
    let json = serde_json::json!({"quotas": [{"kind": "requests", "limit": 1, "window": "day", "currency": "USD"}]});
    let limits: Limits = serde_json::from_value(json).unwrap();
    assert!(
        limits.checked().is_err(),
        "a currency on a count is refused"
    );
}
