//! Wall-clock strings (`DT`, `DTZ`), the configured time zone and query windows.

use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// `YYYY-MM-DDTHH:MM:SS`, wall clock in the configured zone.
pub const DT_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";
/// `YYYY-MM-DDTHH:MM:SS±hhmm`.
pub const DTZ_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%z";

/// Resolves an IANA zone name as the config's `time_zone` does: `Local` (or absent) is the
/// server's zone, `""` and `UTC` are UTC.
pub fn parse_time_zone(name: &str) -> Result<Tz, String> {
    match name {
        "" | "UTC" => Ok(Tz::UTC),
        "Local" => Ok(local_time_zone()),
        other => other
            .parse::<Tz>()
            .map_err(|_| format!("unknown time zone {other:?}")),
    }
}

/// The server's own zone: `TZ` if set and known, else the system's, else UTC.
pub fn local_time_zone() -> Tz {
    if let Ok(name) = std::env::var("TZ") {
        let name = name.trim_start_matches(':');
        if let Ok(zone) = name.parse::<Tz>() {
            return zone;
        }
    }
    iana_time_zone::get_timezone()
        .ok()
        .and_then(|name| name.parse::<Tz>().ok())
        .unwrap_or(Tz::UTC)
}

/// Epoch seconds as `DT` in `zone`.
pub fn format_dt(epoch_seconds: i64, zone: Tz) -> String {
    match Utc.timestamp_opt(epoch_seconds, 0).single() {
        Some(time) => time.with_timezone(&zone).format(DT_FORMAT).to_string(),
        // Out of chrono's range: clamp so a comparison still means "far past/future".
        None if epoch_seconds < 0 => "0000-01-01T00:00:00".to_owned(),
        None => "9999-12-31T23:59:59".to_owned(),
    }
}

/// Epoch milliseconds as `DTZ` in `zone`.
pub fn format_dtz(epoch_millis: i64, zone: Tz) -> String {
    Utc.timestamp_millis_opt(epoch_millis)
        .single()
        .map(|time| time.with_timezone(&zone).format(DTZ_FORMAT).to_string())
        .unwrap_or_default()
}

/// Parses a `DTZ` string.
pub fn parse_dtz(text: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_str(text, DTZ_FORMAT).ok()
}

/// Parses a `DT` string as wall clock in `zone` (the earlier instant when ambiguous).
pub fn parse_dt(text: &str, zone: Tz) -> Option<DateTime<Tz>> {
    let naive = NaiveDateTime::parse_from_str(text, DT_FORMAT).ok()?;
    zone.from_local_datetime(&naive).earliest()
}

/// Re-renders a stored `DTZ` in another zone; text that does not parse stays as it is.
pub fn convert_dtz(text: &str, zone: Tz) -> String {
    match parse_dtz(text) {
        Some(time) => time.with_timezone(&zone).format(DTZ_FORMAT).to_string(),
        None => text.to_owned(),
    }
}

/// A query window in Unix seconds, both ends inclusive as the reference compares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    pub from: i64,
    pub to: i64,
}

/// The default window length.
pub const DAY_SECONDS: i64 = 86_400;
/// Current-usage windows are rounded to this many seconds, which is also the cache grain.
pub const USAGE_ROUNDING_SECONDS: i64 = 900;

impl TimeWindow {
    /// The window of units and stats: both bounds, or 24 h from the one given, or the last
    /// 24 h.
    pub fn resolve(from: Option<i64>, to: Option<i64>, now: i64) -> Self {
        match (from, to) {
            (Some(from), Some(to)) => Self { from, to },
            (Some(from), None) => Self {
                from,
                to: from.saturating_add(DAY_SECONDS),
            },
            (None, Some(to)) => Self {
                from: to.saturating_sub(DAY_SECONDS),
                to,
            },
            (None, None) => Self {
                from: now - DAY_SECONDS,
                to: now,
            },
        }
    }

    /// The window of current usage: `from` rounded down and `to` rounded up to 900 s, each
    /// defaulting to the rounded last 24 h independently of the other.
    pub fn resolve_current_usage(from: Option<i64>, to: Option<i64>, now: i64) -> Self {
        let from = floor_to(from.unwrap_or(now - DAY_SECONDS), USAGE_ROUNDING_SECONDS);
        let to = ceil_to(to.unwrap_or(now), USAGE_ROUNDING_SECONDS);
        Self { from, to }
    }

    /// True when `to - from` is strictly longer than `max` (a zero `max` is no limit).
    pub fn exceeds(&self, max: Duration) -> bool {
        let max = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
        max > 0 && self.to.saturating_sub(self.from) > max
    }

    /// The bounds as `DT` strings in `zone`, as the window predicate compares them.
    pub fn dt_bounds(&self, zone: Tz) -> DtWindow {
        DtWindow {
            from: format_dt(self.from, zone),
            to: format_dt(self.to, zone),
        }
    }
}

fn floor_to(value: i64, step: i64) -> i64 {
    value.div_euclid(step) * step
}

fn ceil_to(value: i64, step: i64) -> i64 {
    let floor = floor_to(value, step);
    if floor == value {
        value
    } else {
        floor.saturating_add(step)
    }
}

/// A window as the two `DT` strings the stored text columns are compared with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DtWindow {
    pub from: String,
    pub to: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dt_and_dtz_follow_the_zone() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        assert_eq!(format_dt(1_676_990_900, paris), "2023-02-21T15:48:20");
        assert_eq!(
            format_dtz(1_676_990_900_000, paris),
            "2023-02-21T15:48:20+0100"
        );
        let athens: Tz = "Europe/Athens".parse().unwrap();
        assert_eq!(
            convert_dtz("2024-10-15T16:28:50+0200", athens),
            "2024-10-15T17:28:50+0300"
        );
        assert_eq!(convert_dtz("Unknown", athens), "Unknown");
        assert_eq!(
            parse_dt("2023-02-21T15:48:20", paris).unwrap().timestamp(),
            1_676_990_900
        );
    }

    #[test]
    fn windows_default_as_the_reference() {
        assert_eq!(
            TimeWindow::resolve(None, None, 100_000),
            TimeWindow {
                from: 13_600,
                to: 100_000
            }
        );
        assert_eq!(
            TimeWindow::resolve(Some(10), None, 0),
            TimeWindow {
                from: 10,
                to: 86_410
            }
        );
        assert_eq!(
            TimeWindow::resolve(None, Some(86_410), 0),
            TimeWindow {
                from: 10,
                to: 86_410
            }
        );
        let usage = TimeWindow::resolve_current_usage(Some(901), None, 1_000_001);
        assert_eq!(
            usage,
            TimeWindow {
                from: 900,
                to: 1_000_800
            }
        );
        let usage = TimeWindow::resolve_current_usage(None, Some(1800), 100_000);
        assert_eq!(
            usage,
            TimeWindow {
                from: 13_500,
                to: 1800
            }
        );
        assert!(TimeWindow {
            from: 0,
            to: 86_401
        }
        .exceeds(Duration::from_secs(86_400)));
        assert!(!TimeWindow {
            from: 0,
            to: 86_400
        }
        .exceeds(Duration::from_secs(86_400)));
        assert!(!TimeWindow {
            from: 0,
            to: i64::MAX
        }
        .exceeds(Duration::ZERO));
    }
}
