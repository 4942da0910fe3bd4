//! Time helpers: durations such as `15m`, RFC 3339 instants, and the text form
//! timestamps take in JSON and in SQLite.
//!
//! Every instant the sidecar takes from outside (a summary's `since`, a
//! key's `expires_at`, `usage reconcile --at`, a prune's cutoff, a usage
//! record's time) is within [`EARLIEST_ACCEPTED`]..[`ACCEPTED_END`], checked
//! where it is parsed ([`parse_rfc3339`], [`parse_since`], [`check_accepted`]).
//! The range is far inside what the `time` crate and the stores can hold, so
//! no bucket, window or month added to an accepted instant can overflow.

use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::macros::{datetime, format_description};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// The latest instant every store can hold (MySQL `DATETIME` ends in year 9999).
pub use tollgate_wire::MAX_TIMESTAMP_MS;

/// The first instant accepted from outside: the Unix epoch, where usage
/// times (unsigned milliseconds since it) begin.
pub const EARLIEST_ACCEPTED: OffsetDateTime = datetime!(1970-01-01 00:00:00 UTC);

/// The first instant past the accepted range: year 3000. Later than any
/// real expiry or usage, and about 7,000 years short of the stores' end, so
/// that any arithmetic on an accepted instant stays in range.
pub const ACCEPTED_END: OffsetDateTime = datetime!(3000-01-01 00:00:00 UTC);

/// The last accepted millisecond since the Unix epoch, for usage records.
pub const LATEST_ACCEPTED_MS: u64 = (ACCEPTED_END.unix_timestamp() as u64) * 1_000 - 1;

/// The accepted range, for messages.
pub const ACCEPTED_RANGE: &str =
    "from 1970-01-01T00:00:00Z up to, not including, 3000-01-01T00:00:00Z";

/// `t` if it is within the accepted range, else a message saying the range.
pub fn check_accepted(t: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if (EARLIEST_ACCEPTED..ACCEPTED_END).contains(&t) {
        Ok(t)
    } else {
        Err(format!(
            "{} is out of range: instants are accepted {ACCEPTED_RANGE}",
            format_rfc3339(t)
        ))
    }
}

/// `t` in UTC. An instant whose UTC date the `time` crate cannot hold (an
/// offset pushing it past year 9999, or before -9999) becomes the nearest
/// one it can, instead of a panic.
pub fn utc(t: OffsetDateTime) -> OffsetDateTime {
    t.checked_to_offset(UtcOffset::UTC).unwrap_or_else(|| {
        if t.offset().is_negative() {
            PrimitiveDateTime::MAX.assume_utc()
        } else {
            PrimitiveDateTime::MIN.assume_utc()
        }
    })
}

/// Parses a duration written as a whole number and a unit: `30s`, `15m`, `2h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {text:?} has no unit; use s, m, h or d (e.g. 15m)"))?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "duration {text:?} must start with a number (e.g. 15m)"
        ));
    }
    let count: u64 = number
        .parse()
        .map_err(|_| format!("duration {text:?} is too large"))?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "duration {text:?} has an unknown unit {unit:?}; use s, m, h or d"
            ))
        }
    };
    count
        .checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

/// Parses an RFC 3339 instant (`2025-11-24T10:00:00Z`) in UTC, refusing
/// one outside the accepted range.
pub fn parse_rfc3339(text: &str) -> Result<OffsetDateTime, String> {
    let t = parse_rfc3339_text(text).map_err(|e| {
        format!("{text:?} is not an RFC 3339 time (e.g. 2025-11-24T10:00:00Z): {e}")
    })?;
    check_accepted(t)
}

/// An RFC 3339 instant in UTC, whatever its year.
fn parse_rfc3339_text(text: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(text.trim(), &Rfc3339).map(utc)
}

/// Parses `--since`: either a duration back from `now` (`7d`) or an RFC 3339
/// instant, refusing one outside the accepted range.
pub fn parse_since(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    let since = if text.trim().starts_with(|c: char| c.is_ascii_digit()) && !text.contains('-') {
        let back = parse_duration(text)?;
        time::Duration::try_from(back)
            .ok()
            .and_then(|back| now.checked_sub(back))
            .ok_or_else(|| format!("{text:?} reaches back too far"))?
    } else {
        parse_rfc3339_text(text).map_err(|_| {
            format!("{text:?} is neither a duration (15m, 2h, 7d) nor an RFC 3339 time")
        })?
    };
    check_accepted(since)
}

/// Now, in UTC, cut to whole milliseconds (the precision every store keeps).
pub fn now_ms() -> OffsetDateTime {
    truncate_to_ms(OffsetDateTime::now_utc())
}

/// Cuts an instant to whole milliseconds.
pub fn truncate_to_ms(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t)
}

/// The instant `ms` milliseconds after the Unix epoch, if a store can hold it.
pub fn from_unix_ms(ms: u64) -> Option<OffsetDateTime> {
    if ms > MAX_TIMESTAMP_MS {
        return None;
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// Milliseconds from the Unix epoch to `t`; 0 for an instant before it.
pub fn to_unix_ms(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Formats an instant for JSON and people: RFC 3339 in UTC, e.g. `2025-11-24T10:00:00.123Z`.
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    let t = utc(t);
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&format)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// The fixed-width UTC text SQLite stores: `YYYY-MM-DD HH:MM:SS.mmm`; text order is time order.
pub fn format_db_text(t: OffsetDateTime) -> String {
    let t = utc(t);
    let format =
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]");
    t.format(&format)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Reads the text [`format_db_text`] writes.
pub fn parse_db_text(text: &str) -> Result<OffsetDateTime, String> {
    let format =
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]");
    PrimitiveDateTime::parse(text, &format)
        .map(PrimitiveDateTime::assume_utc)
        .map_err(|e| format!("stored time {text:?} is malformed: {e}"))
}

/// An instant as the UTC wall-clock time a MySQL `DATETIME` holds.
pub fn to_primitive_utc(t: OffsetDateTime) -> PrimitiveDateTime {
    let t = utc(t);
    PrimitiveDateTime::new(t.date(), t.time())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn durations_take_a_number_and_a_unit() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "15", "m", "15x", "-5m", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn since_takes_a_duration_or_an_instant() {
        let now = datetime!(2025-11-24 12:00:00 UTC);
        assert_eq!(
            parse_since("2h", now),
            Ok(datetime!(2025-11-24 10:00:00 UTC))
        );
        assert_eq!(
            parse_since("2025-11-01T00:00:00+02:00", now),
            Ok(datetime!(2025-10-31 22:00:00 UTC))
        );
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("2025-11-01", now).is_err());
    }

    #[test]
    fn instants_are_accepted_from_1970_up_to_year_3000() {
        let now = datetime!(2026-12-02 03:00:00 UTC);
        for accepted in [
            "1970-01-01T00:00:00Z",
            "2999-12-31T23:59:59.999999999Z",
            "3000-01-01T00:59:59+01:00",
        ] {
            assert!(parse_rfc3339(accepted).is_ok(), "{accepted}");
            assert!(parse_since(accepted, now).is_ok(), "{accepted}");
        }
        for refused in [
            "1969-12-31T23:59:59.999Z",
            "0000-01-01T00:00:00Z",
            "3000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            // Its UTC date is in year 10000: no panic converting it.
            "9999-12-31T23:59:59-23:59",
            "0000-01-01T00:00:00+23:59",
        ] {
            let err = parse_rfc3339(refused).unwrap_err();
            assert!(err.contains(ACCEPTED_RANGE), "{refused}: {err}");
            let err = parse_since(refused, now).unwrap_err();
            assert!(err.contains(ACCEPTED_RANGE), "{refused}: {err}");
        }
        // A duration reaching back before 1970 is refused the same way.
        assert!(parse_since("20000d", now).is_ok());
        let err = parse_since("30000d", now).unwrap_err();
        assert!(err.contains(ACCEPTED_RANGE), "{err}");
        assert!(parse_since("106751991167300d", now).is_err());
        assert_eq!(
            from_unix_ms(LATEST_ACCEPTED_MS)
                .map(format_rfc3339)
                .as_deref(),
            Some("2999-12-31T23:59:59.999Z")
        );
        assert!(check_accepted(from_unix_ms(LATEST_ACCEPTED_MS + 1).unwrap()).is_err());
    }

    #[test]
    fn instants_past_what_utc_holds_are_clamped_not_a_panic() {
        let late = datetime!(9999-12-31 23:59:59 -1);
        assert_eq!(utc(late), PrimitiveDateTime::MAX.assume_utc());
        let early = datetime!(-9999-01-01 00:00:00 +1);
        assert_eq!(utc(early), PrimitiveDateTime::MIN.assume_utc());
        assert_eq!(format_rfc3339(late), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn db_text_is_fixed_width_and_round_trips() {
        let t = datetime!(2025-01-02 03:04:05.006 UTC);
        assert_eq!(format_db_text(t), "2025-01-02 03:04:05.006");
        assert_eq!(parse_db_text("2025-01-02 03:04:05.006"), Ok(t));
        assert_eq!(format_rfc3339(t), "2025-01-02T03:04:05.006Z");
    }

    #[test]
    fn unix_ms_stops_at_year_9999() {
        assert_eq!(
            from_unix_ms(1_764_000_000_123)
                .map(format_rfc3339)
                .as_deref(),
            Some("2025-11-24T16:00:00.123Z")
        );
        assert!(from_unix_ms(MAX_TIMESTAMP_MS).is_some());
        assert!(from_unix_ms(MAX_TIMESTAMP_MS + 1).is_none());
        assert_eq!(
            to_unix_ms(datetime!(2025-11-24 16:00:00.123 UTC)),
            1_764_000_000_123
        );
        assert_eq!(to_unix_ms(datetime!(1969-12-31 23:59:59 UTC)), 0);
    }

    #[test]
    fn truncation_keeps_whole_milliseconds() {
        let t = datetime!(2025-01-02 03:04:05.006789 UTC);
        assert_eq!(truncate_to_ms(t), datetime!(2025-01-02 03:04:05.006 UTC));
    }
}
