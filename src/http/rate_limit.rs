//! Request limit per client per minute (`--web.max-requests`), with the sliding-window
//! estimate of the reference's limiter, keyed by the identified user.
//!
//! Dashboards all reach the server through one Grafana host, so a limit keyed by client
//! IP (as the reference does) would throttle every user together; the user header names
//! the person behind each request instead. Requests without a user are keyed by peer IP.

use std::collections::HashMap;
use std::sync::Mutex;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use http::StatusCode;

use super::envelope::Reply;

/// Counts of one client in the current and the previous UTC minute.
#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    minute: i64,
    current: u64,
    previous: u64,
}

/// The outcome of one check, with what goes into the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: i64,
    /// Unix seconds at which the current minute ends.
    pub reset: i64,
}

/// The limiter shared by every connection.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u64,
    counters: Mutex<HashMap<String, Counter>>,
}

/// Above this many tracked clients, counters idle for two minutes are dropped.
const PRUNE_ABOVE: usize = 10_000;

impl RateLimiter {
    pub fn new(limit: u32) -> Self {
        Self {
            limit: u64::from(limit),
            counters: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request of `key` at `now_millis` (Unix ms) unless it would exceed the
    /// limit: estimate = previous minute × share of this minute still to run + this
    /// minute, rounded; rejected when estimate + 1 > limit.
    pub fn check(&self, key: &str, now_millis: i64) -> Decision {
        let minute = now_millis.div_euclid(60_000);
        let into_minute = now_millis.rem_euclid(60_000) as f64 / 60_000.0;
        let mut counters = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if counters.len() > PRUNE_ABOVE {
            counters.retain(|_, counter| counter.minute >= minute - 1);
        }
        let counter = counters.entry(key.to_owned()).or_default();
        if counter.minute != minute {
            counter.previous = if counter.minute == minute - 1 {
                counter.current
            } else {
                0
            };
            counter.current = 0;
            counter.minute = minute;
        }
        let estimate =
            (counter.previous as f64 * (1.0 - into_minute) + counter.current as f64).round() as u64;
        let allowed = estimate < self.limit;
        let remaining = if allowed {
            counter.current += 1;
            self.limit as i64 - estimate as i64 - 1
        } else {
            self.limit as i64 - estimate as i64
        };
        Decision {
            allowed,
            limit: self.limit,
            remaining,
            reset: (minute + 1) * 60,
        }
    }
}

impl Decision {
    /// Sets `X-RateLimit-Limit`, `-Remaining` and `-Reset`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let set = |headers: &mut HeaderMap, name: &'static str, value: i64| {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        };
        set(headers, "x-ratelimit-limit", self.limit as i64);
        set(headers, "x-ratelimit-remaining", self.remaining);
        set(headers, "x-ratelimit-reset", self.reset);
    }

    /// The 429 answer.
    pub fn rejection(&self) -> Reply {
        let mut reply = Reply::plain(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n");
        reply
            .headers
            .insert(RETRY_AFTER, HeaderValue::from_static("60"));
        self.apply(&mut reply.headers);
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_applies_per_key_within_a_minute() {
        let limiter = RateLimiter::new(3);
        let start = 1_700_000_040_000; // 0 s into a minute
        for expected_remaining in [2, 1, 0] {
            let decision = limiter.check("alice", start);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected_remaining);
        }
        let rejected = limiter.check("alice", start + 1);
        assert!(!rejected.allowed);
        assert_eq!(rejected.remaining, 0);
        assert_eq!(rejected.reset, (start / 60_000 + 1) * 60);
        assert!(
            limiter.check("bob", start).allowed,
            "other users are not affected"
        );
    }

    #[test]
    fn previous_minute_weighs_by_the_share_left() {
        let limiter = RateLimiter::new(4);
        let minute = 1_700_000_040_000;
        for _ in 0..4 {
            assert!(limiter.check("k", minute).allowed);
        }
        // Half-way into the next minute: estimate = 4 × 0.5 = 2, so two more pass.
        let half = minute + 60_000 + 30_000;
        assert!(limiter.check("k", half).allowed);
        assert!(limiter.check("k", half).allowed);
        assert!(!limiter.check("k", half).allowed);
        // Two minutes later everything is forgotten.
        assert!(limiter.check("k", minute + 180_000).allowed);
    }

    #[test]
    fn rejection_has_the_reference_headers() {
        let limiter = RateLimiter::new(1);
        limiter.check("k", 0);
        let decision = limiter.check("k", 0);
        let reply = decision.rejection();
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(&reply.body[..], b"Too Many Requests\n");
        assert_eq!(reply.headers[RETRY_AFTER], "60");
        assert_eq!(reply.headers["x-ratelimit-limit"], "1");
        assert_eq!(reply.headers["x-ratelimit-reset"], "60");
    }
}
