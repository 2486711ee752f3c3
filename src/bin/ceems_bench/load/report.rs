//! Numbers from samples (percentiles by sorting), the JSON report and the markdown tables
//! of `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::floor::StatementTimings;
use super::measure::{Outcome, Sample};
use super::workload::BenchUser;

/// Latencies of a set of samples, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub count: usize,
    pub errors: usize,
    /// Answers served from the usage cache.
    pub cached: usize,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: u64,
    pub median_bytes: usize,
    /// Requests per second over the phase (sustained phases only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput_rps: Option<f64>,
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], percent: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Stats {
    /// Latencies of the samples of `route` that `keep` selects; errors count too.
    pub fn of(
        samples: &[Sample],
        route: usize,
        keep: impl Fn(&Sample) -> bool,
        elapsed: Option<Duration>,
    ) -> Stats {
        let selected: Vec<&Sample> = samples
            .iter()
            .filter(|sample| sample.route == route && keep(sample))
            .collect();
        let mut micros: Vec<u64> = selected.iter().map(|sample| sample.micros).collect();
        micros.sort_unstable();
        let mut bytes: Vec<usize> = selected
            .iter()
            .filter(|sample| sample.outcome == Outcome::Success)
            .map(|sample| sample.bytes)
            .collect();
        bytes.sort_unstable();
        let count = selected.len();
        Stats {
            count,
            errors: selected
                .iter()
                .filter(|sample| sample.outcome != Outcome::Success)
                .count(),
            cached: selected.iter().filter(|sample| sample.cached).count(),
            p50_us: percentile(&micros, 50.0),
            p95_us: percentile(&micros, 95.0),
            p99_us: percentile(&micros, 99.0),
            max_us: micros.last().copied().unwrap_or(0),
            mean_us: if count == 0 {
                0
            } else {
                micros.iter().sum::<u64>() / count as u64
            },
            median_bytes: bytes.get(bytes.len() / 2).copied().unwrap_or(0),
            throughput_rps: elapsed.map(|elapsed| count as f64 / elapsed.as_secs_f64()),
        }
    }
}

/// Everything measured about one route.
#[derive(Debug, Clone, Serialize)]
pub struct RouteReport {
    pub name: String,
    /// The request of the first user, as sent in the sustained phase.
    pub example_request: String,
    /// The statements the server ran for it, with the shell's timings.
    pub sql: Vec<StatementTimings>,
    /// Sum of the statements' median times.
    pub sql_floor_us: u64,
    /// Sum of the statements' first runs.
    pub sql_floor_cold_us: u64,
    /// The answer size the HTTP floor was given (median over the concurrent phases).
    pub response_bytes: usize,
    /// All users at once, each with a distinct (so uncached) current usage. Answers that
    /// came from the cache all the same (the admins' identical stats but one) are left
    /// out, and counted here:
    pub uncached: Stats,
    pub uncached_cache_hits: usize,
    /// Virtual users looping over their dashboards (current usage and stats cached).
    pub sustained: Stats,
    /// One client, one request at a time (current usage and stats: windows never asked
    /// before).
    pub sequential: Stats,
    /// One client, current usage and stats served from the cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequential_cached: Option<Stats>,
    pub http_floor_sustained: Stats,
    pub http_floor_sequential: Stats,
    /// Sequential p50 over (SQL floor + HTTP floor p50).
    pub ratio_to_floors: Option<f64>,
    /// Sequential p50 over the SQL floor.
    pub ratio_to_sql_floor: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Errors {
    /// Failed requests to the server (status, envelope or transport), all phases.
    pub server_requests: usize,
    /// Failed requests to the HTTP floor.
    pub floor_requests: usize,
    /// Server log lines mentioning "database is locked" or SQLITE_BUSY.
    pub database_locked_lines: u64,
    /// Server log lines at level ERROR.
    pub server_error_lines: u64,
    /// The server did not exit 0 on SIGTERM.
    pub server_exit: Option<String>,
    /// The first few failures, as seen.
    pub samples: Vec<String>,
}

impl Errors {
    pub fn total(&self) -> u64 {
        (self.server_requests + self.floor_requests) as u64
            + self.database_locked_lines
            + self.server_error_lines
            + u64::from(self.server_exit.is_some())
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    /// `VmHWM` of the server just before it was stopped.
    pub peak_rss_kb: u64,
    /// The largest `VmRSS` sampled every 100 ms, over the run and per phase.
    pub sampled_peak_rss_kb: u64,
    pub samples: usize,
    pub phase_peak_rss_kb: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: Option<String>,
    pub database: String,
    pub database_bytes: u64,
    pub server: String,
    pub users: usize,
    pub duration_s: f64,
    pub repeat: usize,
    /// The end of every window (Unix seconds).
    pub now: i64,
    pub picked_users: Vec<BenchUser>,
    pub routes: Vec<RouteReport>,
    pub server_sustained_rps: f64,
    pub floor_sustained_rps: f64,
    pub errors: Errors,
    pub memory: Memory,
}

fn ms(micros: u64) -> String {
    let millis = micros as f64 / 1000.0;
    if millis >= 100.0 {
        format!("{millis:.0}")
    } else if millis >= 10.0 {
        format!("{millis:.1}")
    } else {
        format!("{millis:.2}")
    }
}

fn triple(stats: &Stats) -> String {
    format!(
        "{} / {} / {}",
        ms(stats.p50_us),
        ms(stats.p95_us),
        ms(stats.p99_us)
    )
}

fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |value| format!("{value:.2}"))
}

impl Report {
    /// The tables, in milliseconds.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let label = self.label.as_deref().unwrap_or("");
        let _ = writeln!(
            out,
            "#### {label} load: {} users, {:.0} s sustained, {} repetitions (times in ms)\n",
            self.users, self.duration_s, self.repeat
        );
        let _ = writeln!(
            out,
            "| route | server p50, 1 client | SQL floor (cold) | HTTP floor p50 | server / (SQL + HTTP) | server / SQL |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
        for route in &self.routes {
            let sql = if route.sql.is_empty() {
                "–".to_owned()
            } else {
                format!(
                    "{} ({})",
                    ms(route.sql_floor_us),
                    ms(route.sql_floor_cold_us)
                )
            };
            let _ = writeln!(
                out,
                "| {} | {} | {sql} | {} | {} | {} |",
                route.name,
                ms(route.sequential.p50_us),
                ms(route.http_floor_sequential.p50_us),
                ratio(route.ratio_to_floors),
                ratio(route.ratio_to_sql_floor),
            );
            if let Some(cached) = &route.sequential_cached {
                let _ = writeln!(
                    out,
                    "| {} (cached) | {} | – | {} | – | – |",
                    route.name,
                    ms(cached.p50_us),
                    ms(route.http_floor_sequential.p50_us),
                );
            }
        }
        let _ = writeln!(
            out,
            "\n| route | all at once, uncached p50 / p95 / p99 | server req/s | server p50 / p95 / p99 | HTTP floor req/s | floor p50 / p95 / p99 | bytes | errors |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for route in &self.routes {
            let errors = route.uncached.errors
                + route.sustained.errors
                + route.sequential.errors
                + route
                    .sequential_cached
                    .as_ref()
                    .map_or(0, |stats| stats.errors);
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} | {:.0} | {} | {} | {errors} |",
                route.name,
                triple(&route.uncached),
                route.sustained.throughput_rps.unwrap_or(0.0),
                triple(&route.sustained),
                route.http_floor_sustained.throughput_rps.unwrap_or(0.0),
                triple(&route.http_floor_sustained),
                route.response_bytes,
            );
        }
        let _ = writeln!(
            out,
            "\nAll routes under load: server {:.0} req/s, HTTP floor {:.0} req/s. Errors: {} \
             (failed requests {}, \"database is locked\"/SQLITE_BUSY log lines {}, ERROR log \
             lines {}). Server peak RSS {:.1} MB (VmHWM; sampled peak {:.1} MB).",
            self.server_sustained_rps,
            self.floor_sustained_rps,
            self.errors.total(),
            self.errors.server_requests + self.errors.floor_requests,
            self.errors.database_locked_lines,
            self.errors.server_error_lines,
            self.memory.peak_rss_kb as f64 / 1024.0,
            self.memory.sampled_peak_rss_kb as f64 / 1024.0,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), 50);
        assert_eq!(percentile(&values, 95.0), 95);
        assert_eq!(percentile(&values, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
