//! The collect window: the half-open span of time one pass of the pipeline covers for one
//! cluster, in epoch milliseconds, with the zone its `DT` renderings use.

use std::time::Duration;

use chrono_tz::Tz;

use crate::model::time::format_dt;

/// One collect window `[start, end]` of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
    /// The configured `time_zone`: the zone of every `DT` written for this window.
    pub zone: Tz,
}

impl Window {
    pub fn new(start_ms: i64, end_ms: i64, zone: Tz) -> Self {
        Self {
            start_ms,
            end_ms,
            zone,
        }
    }

    /// The start as `DT` (`YYYY-MM-DDTHH:MM:SS`, no zone) in the window's zone.
    pub fn start_dt(&self) -> String {
        format_dt(self.start_ms.div_euclid(1000), self.zone)
    }

    /// The end as `DT` in the window's zone: the `last_updated_at` of what it writes.
    pub fn end_dt(&self) -> String {
        format_dt(self.end_ms.div_euclid(1000), self.zone)
    }

    /// The window's length (zero when `end <= start`).
    pub fn duration(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.end_ms - self.start_ms).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_ends_in_the_window_zone() {
        // 2024-01-10T00:00:00Z and one hour later, in Paris (UTC+1 in winter).
        let window = Window::new(
            1_704_844_800_000,
            1_704_848_400_000,
            chrono_tz::Europe::Paris,
        );
        assert_eq!(window.start_dt(), "2024-01-10T01:00:00");
        assert_eq!(window.end_dt(), "2024-01-10T02:00:00");
        assert_eq!(window.duration(), Duration::from_secs(3600));
    }

    #[test]
    fn an_inverted_window_has_no_duration() {
        let window = Window::new(2_000, 1_000, Tz::UTC);
        assert_eq!(window.duration(), Duration::ZERO);
    }
}
