//! Duration text: Prometheus durations (config and flags) and Go's `Duration.String()`
//! (the form PromQL templates receive).

use std::time::Duration;

/// Nanoseconds per unit, biggest first: the order units must appear in.
const PROMETHEUS_UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3_600 * 1_000_000_000),
    ("w", 7 * 24 * 3_600 * 1_000_000_000),
    ("d", 24 * 3_600 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
];

/// Go's `time.Duration` is an int64 of nanoseconds: Prometheus refuses anything longer, and
/// so do we, so that every accepted value also means the same thing to the Go tools around.
const MAX_NANOSECONDS: u64 = i64::MAX as u64;

/// Why a Prometheus duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration string")]
    Empty,
    #[error("not a valid duration string: {0:?}")]
    Invalid(String),
    #[error("unknown unit {unit:?} in duration {text:?}")]
    UnknownUnit { unit: String, text: String },
    #[error("duration out of range: {0:?}")]
    OutOfRange(String),
}

/// Parses `^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$` (units in that order, each
/// at most once), plus the bare `0`.
pub fn parse_prometheus_duration(text: &str) -> Result<Duration, DurationError> {
    match text {
        "" => return Err(DurationError::Empty),
        "0" => return Ok(Duration::ZERO),
        _ => {}
    }
    let invalid = || DurationError::Invalid(text.to_owned());
    let mut rest = text;
    let mut total: u64 = 0;
    // Index into PROMETHEUS_UNITS of the next unit allowed: enforces order and uniqueness.
    let mut next_unit_index = 0;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|character: char| !character.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits_end]
            .parse()
            .map_err(|_| DurationError::OutOfRange(text.to_owned()))?;
        rest = &rest[digits_end..];
        let unit_end = rest
            .find(|character: char| character.is_ascii_digit())
            .unwrap_or(rest.len());
        if unit_end == 0 {
            return Err(invalid());
        }
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let Some(unit_index) = PROMETHEUS_UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(DurationError::UnknownUnit {
                unit: unit.to_owned(),
                text: text.to_owned(),
            });
        };
        if unit_index < next_unit_index {
            return Err(invalid());
        }
        next_unit_index = unit_index + 1;
        let nanoseconds = number
            .checked_mul(PROMETHEUS_UNITS[unit_index].1)
            .and_then(|value| value.checked_add(total))
            .filter(|value| *value <= MAX_NANOSECONDS)
            .ok_or_else(|| DurationError::OutOfRange(text.to_owned()))?;
        total = nanoseconds;
    }
    Ok(Duration::from_nanos(total))
}

/// Formats as Prometheus does (`model.Duration.String()`): the largest units that divide
/// the value exactly, `0s` for zero, e.g. `30d`, `1h30m`, `1s500ms`.
pub fn format_prometheus_duration(duration: Duration) -> String {
    let mut milliseconds = duration.as_millis();
    if milliseconds == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for (name, nanoseconds) in PROMETHEUS_UNITS {
        let unit_milliseconds = u128::from(nanoseconds / 1_000_000);
        let count = milliseconds / unit_milliseconds;
        if count > 0 {
            text.push_str(&format!("{count}{name}"));
            milliseconds %= unit_milliseconds;
        }
    }
    text
}

/// Formats as Go's `time.Duration.String()`: `0s`, `500ms`, `1.5s`, `1m0s`, `1h2m3s`,
/// `24h0m0s`. Hours only from 1h, minutes from 1m (`0m` when there are hours), seconds
/// always, with the fraction's trailing zeros dropped; below 1s the unit is `ms`, `µs` or
/// `ns`.
pub fn format_go_duration(duration: Duration) -> String {
    let nanoseconds = duration.as_nanos();
    if nanoseconds == 0 {
        return "0s".to_owned();
    }
    if nanoseconds < 1_000 {
        return format!("{nanoseconds}ns");
    }
    if nanoseconds < 1_000_000 {
        return format!("{}µs", decimal_with_fraction(nanoseconds, 3));
    }
    if nanoseconds < 1_000_000_000 {
        return format!("{}ms", decimal_with_fraction(nanoseconds, 6));
    }
    let fraction = fraction_digits(nanoseconds % 1_000_000_000, 9);
    let whole_seconds = nanoseconds / 1_000_000_000;
    let seconds = whole_seconds % 60;
    let whole_minutes = whole_seconds / 60;
    if whole_minutes == 0 {
        return format!("{seconds}{fraction}s");
    }
    let minutes = whole_minutes % 60;
    let hours = whole_minutes / 60;
    if hours == 0 {
        format!("{minutes}m{seconds}{fraction}s")
    } else {
        format!("{hours}h{minutes}m{seconds}{fraction}s")
    }
}

/// `value / 10^precision` with its fraction, trailing zeros dropped (`1500, 3` → `1.5`).
fn decimal_with_fraction(value: u128, precision: u32) -> String {
    let divisor = 10u128.pow(precision);
    format!(
        "{}{}",
        value / divisor,
        fraction_digits(value % divisor, precision)
    )
}

/// `.ddd` for a fraction of `10^precision`, trailing zeros dropped; empty for zero.
fn fraction_digits(fraction: u128, precision: u32) -> String {
    if fraction == 0 {
        return String::new();
    }
    let width = precision as usize;
    let digits = format!("{fraction:0width$}");
    format!(".{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(value: u64) -> Duration {
        Duration::from_secs(value)
    }

    #[test]
    fn prometheus_durations_parse_every_unit_in_order() {
        assert_eq!(parse_prometheus_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_prometheus_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_prometheus_duration("15m"), Ok(seconds(900)));
        assert_eq!(parse_prometheus_duration("1d"), Ok(seconds(86_400)));
        assert_eq!(parse_prometheus_duration("30d"), Ok(seconds(30 * 86_400)));
        assert_eq!(parse_prometheus_duration("2w"), Ok(seconds(14 * 86_400)));
        assert_eq!(parse_prometheus_duration("1y"), Ok(seconds(365 * 86_400)));
        assert_eq!(
            parse_prometheus_duration("1y2w3d4h5m6s7ms"),
            Ok(Duration::from_millis(
                ((((365 + 14 + 3) * 24 + 4) * 60 + 5) * 60 + 6) * 1_000 + 7
            ))
        );
        assert_eq!(
            parse_prometheus_duration("1500ms"),
            Ok(Duration::from_millis(1_500))
        );
        assert_eq!(parse_prometheus_duration("1h30m"), Ok(seconds(5_400)));
    }

    #[test]
    fn prometheus_durations_refuse_bad_text() {
        assert_eq!(parse_prometheus_duration(""), Err(DurationError::Empty));
        for text in [
            "abc", "1", "00", "m", "1m1h", "1s1s", "1.5h", "-1h", " 1h", "1h ", "1H", "1h-",
        ] {
            assert!(
                matches!(
                    parse_prometheus_duration(text),
                    Err(DurationError::Invalid(_) | DurationError::UnknownUnit { .. })
                ),
                "{text:?} should be refused"
            );
        }
        assert_eq!(
            parse_prometheus_duration("5x"),
            Err(DurationError::UnknownUnit {
                unit: "x".to_owned(),
                text: "5x".to_owned()
            })
        );
        assert_eq!(
            parse_prometheus_duration("300y"),
            Err(DurationError::OutOfRange("300y".to_owned()))
        );
        assert_eq!(
            parse_prometheus_duration("99999999999999999999999s"),
            Err(DurationError::OutOfRange(
                "99999999999999999999999s".to_owned()
            ))
        );
        assert!(parse_prometheus_duration("292y").is_ok());
    }

    #[test]
    fn prometheus_durations_format_back() {
        assert_eq!(format_prometheus_duration(Duration::ZERO), "0s");
        assert_eq!(format_prometheus_duration(seconds(30 * 86_400)), "4w2d");
        assert_eq!(format_prometheus_duration(seconds(86_400)), "1d");
        assert_eq!(format_prometheus_duration(seconds(5_400)), "1h30m");
        assert_eq!(
            format_prometheus_duration(Duration::from_millis(1_500)),
            "1s500ms"
        );
        for text in ["1y2w3d4h5m6s7ms", "15m", "1d", "0s"] {
            let parsed = parse_prometheus_duration(text).unwrap();
            assert_eq!(format_prometheus_duration(parsed), text);
        }
    }

    #[test]
    fn go_durations_format_as_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (seconds(30), "30s"),
            (seconds(60), "1m0s"),
            (seconds(900), "15m0s"),
            (seconds(3_600), "1h0m0s"),
            (seconds(86_400), "24h0m0s"),
            (seconds(3_723), "1h2m3s"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_micros(1_500), "1.5ms"),
            (Duration::from_micros(2), "2µs"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_nanos(61_000_000_001), "1m1.000000001s"),
            (Duration::from_millis(3_600_250), "1h0m0.25s"),
        ];
        for (duration, expected) in cases {
            assert_eq!(format_go_duration(duration), expected, "{duration:?}");
        }
    }
}
