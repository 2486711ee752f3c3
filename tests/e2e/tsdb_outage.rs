//! The real binary with a `tsdb` updater against a real Prometheus that is stopped while the
//! loop is catching up and started again: the windows it missed are replayed whole, every
//! unit ends up with exactly its energy and none is counted twice in usage.

#[path = "../common/prometheus.rs"]
mod prometheus;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use self::prometheus::{Prometheus, PrometheusOptions, Series};
use super::{open, resume_point, wait_caught_up, Server, Stream, HOUR};

/// The scrape interval of the test Prometheus, and the grain of the jobs' bounds.
const STEP: i64 = 15;

/// One job of the stream, as the stand-in `sacct` prints it with `FAKE_SACCT_ALIGN=15`,
/// and the constant power and CPU usage backfilled for it.
struct Job {
    uuid: String,
    user: String,
    project: String,
    start: i64,
    end: i64,
    watts: f64,
    cpu_usage: f64,
}

impl Job {
    /// Its energy in kWh: `watts` over its whole run.
    fn energy_kwh(&self) -> f64 {
        self.watts * (self.end - self.start) as f64 / 3.6e6
    }
}

fn jobs(stream: &Stream) -> Vec<Job> {
    let rate = i64::from(stream.rate);
    (0..stream.jobs())
        .map(|i| {
            let start = stream.epoch + i * 3600 / rate;
            let start = start - start % STEP;
            let duration = 300 + (i * 7919) % 7200;
            Job {
                uuid: (100_000 + i).to_string(),
                user: format!("usr{}", i % 20),
                project: format!("acc{}", i % 5),
                start,
                end: start + duration - duration % STEP,
                watts: 1000.0 + i as f64,
                cpu_usage: 5.0 + (i % 90) as f64,
            }
        })
        .collect()
}

/// The series of a job as a live exporter leaves them: one sample per scrape after the
/// start up to the end, then a NaN that the queries' `>= 0` drops, so that the 5-minute
/// lookback does not stretch the job. The built-in energy query counts each sample for one
/// scrape interval, so a job's energy is exactly `watts × duration`.
fn series(jobs: &[Job]) -> Vec<Series> {
    let mut all = Vec::new();
    for job in jobs {
        for (name, value) in [
            ("uuid:ceems_host_power_watts:pue", job.watts),
            ("uuid:ceems_cpu_usage:ratio_irate", job.cpu_usage),
        ] {
            all.push(
                Series::new(name, &[("uuid", &job.uuid)])
                    .every(
                        STEP * 1000,
                        (job.start + STEP) * 1000,
                        job.end * 1000,
                        |_| value,
                    )
                    .at((job.end + STEP) * 1000, f64::NAN),
            );
        }
    }
    all
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= 1e-6 * expected.abs(),
        "{what}: {actual} instead of {expected}"
    );
}

/// Waits until the log holds `count` lines containing both `first` and `second`.
fn wait_for_log_lines(server: &Server, first: &str, second: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = server.log();
        let lines = log
            .lines()
            .filter(|line| line.contains(first) && line.contains(second))
            .count();
        if lines >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {count} lines with {first:?} and {second:?}; log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn prometheus_stopped_while_catching_up_loses_no_energy_and_counts_nothing_twice() {
    let stream = Stream::new(60);
    let jobs = jobs(&stream);
    assert_eq!(jobs.len(), 120);
    let mut tsdb = Prometheus::start_with(&series(&jobs), PrometheusOptions::default());

    let dir = tempfile::tempdir().unwrap();
    // Each window waits 1 s in sacct, before the updater runs: time enough to stop
    // Prometheus between the first window and the second one's queries.
    let env = [
        ("FAKE_SACCT_ALIGN", STEP.to_string()),
        ("FAKE_SACCT_SLEEP", "1".to_owned()),
    ];
    let server = Server::start_with_tsdb(dir.path(), &stream, &env, Some(&tsdb.url()));
    server.wait_for_log("window applied", 1, Duration::from_secs(60));
    tsdb.stop();
    let first_end = (stream.epoch + HOUR) * 1000;
    assert_eq!(resume_point(dir.path()), Some(first_end));

    // The second window fails at its queries and is retried, writing nothing.
    wait_for_log_lines(&server, "update failed", "tsdb-0", 2);
    assert_eq!(resume_point(dir.path()), Some(first_end));
    assert_eq!(server.log().matches("window applied").count(), 1);

    tsdb.start();
    wait_caught_up(dir.path(), &server, stream.now);
    server.sigterm();
    // The restarted Prometheus answered the 20 built-in queries of each of the three
    // windows with units from the second one on (more if a retry overlapped its start).
    assert!(tsdb.http_requests("/api/v1/query", 200) >= 60.0);

    check_database(dir.path(), &stream, &jobs);
}

/// A row of `units` as the check reads it.
struct StoredUnit {
    /// uuid, username, project.
    identity: (String, String, String),
    /// `started_at_ts`, `ended_at_ts`.
    times_ms: (i64, i64),
    energy_kwh: Option<f64>,
    cpu_usage: Option<f64>,
}

fn check_database(dir: &Path, stream: &Stream, jobs: &[Job]) {
    let conn = open(dir);
    let mut statement = conn
        .prepare(
            "SELECT uuid, username, project, started_at_ts, ended_at_ts,
                json_extract(total_cpu_energy_usage_kwh, '$.total'),
                json_extract(avg_cpu_usage, '$.global')
             FROM units ORDER BY uuid",
        )
        .unwrap();
    let units: Vec<StoredUnit> = statement
        .query_map([], |row| {
            Ok(StoredUnit {
                identity: (row.get(0)?, row.get(1)?, row.get(2)?),
                times_ms: (row.get(3)?, row.get(4)?),
                energy_kwh: row.get(5)?,
                cpu_usage: row.get(6)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(units.len(), jobs.len());
    for (job, unit) in jobs.iter().zip(&units) {
        let uuid = &unit.identity.0;
        assert_eq!(
            (&unit.identity, unit.times_ms),
            (
                &(job.uuid.clone(), job.user.clone(), job.project.clone()),
                (job.start * 1000, job.end * 1000)
            )
        );
        let energy = unit
            .energy_kwh
            .unwrap_or_else(|| panic!("unit {uuid} has no energy"));
        assert!(energy > 0.0, "unit {uuid} has zero energy");
        assert_close(energy, job.energy_kwh(), &format!("energy of {uuid}"));
        let cpu_usage = unit
            .cpu_usage
            .unwrap_or_else(|| panic!("unit {uuid} has no CPU usage"));
        assert_close(cpu_usage, job.cpu_usage, &format!("CPU usage of {uuid}"));
    }

    let one = |sql: &str| -> i64 { conn.query_row(sql, [], |row| row.get(0)).unwrap() };
    assert_eq!(one("SELECT SUM(num_units) FROM usage"), stream.jobs());
    assert_eq!(one("SELECT SUM(num_units) FROM daily_usage"), stream.jobs());

    let mut expected: BTreeMap<(String, String), f64> = BTreeMap::new();
    for job in jobs {
        *expected
            .entry((job.user.clone(), job.project.clone()))
            .or_default() += job.energy_kwh();
    }
    assert_eq!(expected.len(), 20);
    for table in ["usage", "daily_usage"] {
        let mut statement = conn
            .prepare(&format!(
                "SELECT username, project,
                    SUM(json_extract(total_cpu_energy_usage_kwh, '$.total'))
                 FROM {table} GROUP BY username, project ORDER BY username, project"
            ))
            .unwrap();
        let usage: BTreeMap<(String, String), f64> = statement
            .query_map([], |row| Ok(((row.get(0)?, row.get(1)?), row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            usage.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{table}"
        );
        for (key, energy) in &expected {
            assert_close(usage[key], *energy, &format!("{table} energy of {key:?}"));
        }
    }
}
