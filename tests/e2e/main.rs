//! The real binary's update loop against a stand-in `sacct` that prints a large, steady
//! stream of jobs (`tests/fixtures/bulk-slurm`): a SIGKILL in the middle of a window, and a
//! `sacct` that fails or prints garbage, lose nothing and count nothing twice.

mod tsdb_outage;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

const HOUR: i64 = 3600;

/// The job stream of one test: jobs start over two hours that ended at least two hours
/// ago, so every job has ended and two runs that stop at different times agree.
struct Stream {
    epoch: i64,
    until: i64,
    now: i64,
    rate: u32,
}

impl Stream {
    fn new(rate: u32) -> Self {
        let now = chrono::Utc::now().timestamp();
        let epoch = now - now.rem_euclid(HOUR) - 5 * HOUR;
        Self {
            epoch,
            until: epoch + 2 * HOUR,
            now,
            rate,
        }
    }

    /// Jobs the stand-in generates: one every 3600/rate seconds in [epoch, until).
    fn jobs(&self) -> i64 {
        let rate = i64::from(self.rate);
        (0..)
            .take_while(|i| self.epoch + i * 3600 / rate < self.until)
            .count() as i64
    }
}

struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, stream: &Stream, extra_env: &[(&str, String)]) -> Server {
        Server::start_with_tsdb(dir, stream, extra_env, None)
    }

    /// Like [`start`](Self::start); with `tsdb_url`, the cluster also runs a `tsdb` updater
    /// (`tsdb-0`, the built-in queries) against that Prometheus.
    fn start_with_tsdb(
        dir: &Path,
        stream: &Stream,
        extra_env: &[(&str, String)],
        tsdb_url: Option<&str>,
    ) -> Server {
        let config = dir.join("config.yml");
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bulk-slurm");
        let mut environment = format!(
            "        TZ: UTC\n        FAKE_SACCT_RATE: \"{}\"\n        FAKE_SACCT_EPOCH: \"{}\"\n        FAKE_SACCT_UNTIL: \"{}\"\n",
            stream.rate, stream.epoch, stream.until
        );
        for (name, value) in extra_env {
            environment.push_str(&format!("        {name}: \"{value}\"\n"));
        }
        let updaters = match tsdb_url {
            Some(url) => format!(
                "    updaters: [tsdb-0]\nupdaters:\n  - id: tsdb-0\n    updater: tsdb\n    web:\n      url: {url}\n"
            ),
            None => String::new(),
        };
        let update_from = chrono::DateTime::from_timestamp(stream.epoch, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S");
        std::fs::write(
            &config,
            format!(
                "ceems_api_server:\n  data:\n    path: {data}\n    update_from: {update_from}\n    time_zone: UTC\n    update_interval: 1s\n    max_update_interval: 1h\n  admin:\n    users: [admin]\nclusters:\n  - id: bulk\n    manager: slurm\n    cli:\n      path: {fixtures}\n      environment_variables:\n{environment}{updaters}",
                data = dir.join("data").display(),
                fixtures = fixtures.display(),
            ),
        )
        .unwrap();
        let log = dir.join(format!(
            "server-{}.log",
            chrono::Utc::now().timestamp_micros()
        ));
        let child = Command::new(env!("CARGO_BIN_EXE_ceems_api_server"))
            .arg(format!("--config.file={}", config.display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Server { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `count` lines containing `needle`.
    fn wait_for_log(&self, needle: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.log().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {count} x {needle:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sigkill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn sigterm(mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "exit status {status}; log:\n{}",
                    self.log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open(dir: &Path) -> Connection {
    Connection::open_with_flags(dir.join("data/ceems.db"), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
}

/// The cluster's resume point (epoch ms), if any window was applied.
fn resume_point(dir: &Path) -> Option<i64> {
    if !dir.join("data/ceems.db").exists() {
        return None;
    }
    open(dir)
        .query_row(
            "SELECT last_window_end_ts FROM collect_state WHERE cluster_id = 'bulk'",
            [],
            |row| row.get(0),
        )
        .ok()
}

/// Waits until the cluster has been collected up to `now` (seconds).
fn wait_caught_up(dir: &Path, server: &Server, now: i64) {
    let deadline = Instant::now() + Duration::from_secs(240);
    while resume_point(dir).is_none_or(|end| end < now * 1000) {
        assert!(
            Instant::now() < deadline,
            "not caught up; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[derive(Debug, PartialEq)]
struct Counts {
    units: i64,
    running: i64,
    usage_num_units: i64,
    daily_num_units: i64,
    usage_walltime: i64,
    unit_walltime: i64,
    users: i64,
    projects: i64,
}

fn counts(dir: &Path) -> Counts {
    let conn = open(dir);
    let one = |sql: &str| -> i64 { conn.query_row(sql, [], |row| row.get(0)).unwrap() };
    Counts {
        units: one("SELECT COUNT(*) FROM units"),
        running: one("SELECT COUNT(*) FROM units WHERE state = 'RUNNING'"),
        usage_num_units: one("SELECT SUM(num_units) FROM usage"),
        daily_num_units: one("SELECT SUM(num_units) FROM daily_usage"),
        usage_walltime: one("SELECT CAST(SUM(json_extract(total_time_seconds, '$.walltime')) AS INTEGER) FROM usage"),
        unit_walltime: one("SELECT CAST(SUM(json_extract(total_time_seconds, '$.walltime')) AS INTEGER) FROM units"),
        users: one("SELECT COUNT(*) FROM users"),
        projects: one("SELECT COUNT(*) FROM projects"),
    }
}

/// The sum of the jobs' durations, as the stand-in computes them.
fn expected_walltime(stream: &Stream) -> i64 {
    (0..stream.jobs()).map(|i| 300 + (i * 7919) % 7200).sum()
}

#[test]
fn a_sigkill_in_the_middle_of_a_window_is_replayed_to_a_clean_runs_counts() {
    let stream = Stream::new(2_400);
    let clean_dir = tempfile::tempdir().unwrap();
    let clean = Server::start(clean_dir.path(), &stream, &[]);
    wait_caught_up(clean_dir.path(), &clean, stream.now);
    clean.sigterm();
    let expected = counts(clean_dir.path());
    assert_eq!(expected.units, stream.jobs());
    assert_eq!(expected.running, 0);
    assert_eq!(expected.usage_num_units, stream.jobs());
    assert_eq!(expected.daily_num_units, stream.jobs());
    assert_eq!(expected.unit_walltime, expected_walltime(&stream));
    assert_eq!(expected.usage_walltime, expected_walltime(&stream));
    assert_eq!((expected.users, expected.projects), (20, 5));

    // The same stream, killed in the middle of its second and of its fourth window.
    let dir = tempfile::tempdir().unwrap();
    let mut kills = 0;
    for applied in [1, 3] {
        let server = Server::start(dir.path(), &stream, &[]);
        server.wait_for_log("window applied", applied - kills, Duration::from_secs(120));
        let before = resume_point(dir.path());
        std::thread::sleep(Duration::from_millis(700));
        server.sigkill();
        kills = applied;
        // The database opens and is whole; the interrupted window left nothing.
        let conn = open(dir.path());
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        assert!(resume_point(dir.path()) >= before);
    }
    let server = Server::start(dir.path(), &stream, &[]);
    wait_caught_up(dir.path(), &server, stream.now);
    server.sigterm();
    assert_eq!(counts(dir.path()), expected);
}

#[test]
fn a_failing_or_garbled_sacct_is_logged_and_its_window_retried() {
    let stream = Stream::new(600);
    let dir = tempfile::tempdir().unwrap();
    let fail = dir.path().join("sacct-fails");
    let garbage = dir.path().join("sacct-garbage");
    std::fs::write(&fail, "").unwrap();
    let env = [
        ("FAKE_SACCT_FAIL_IF_EXISTS", fail.display().to_string()),
        (
            "FAKE_SACCT_GARBAGE_IF_EXISTS",
            garbage.display().to_string(),
        ),
    ];
    let server = Server::start(dir.path(), &stream, &env);
    server.wait_for_log(
        "Problem talking to the database",
        2,
        Duration::from_secs(60),
    );
    assert_eq!(resume_point(dir.path()), None);
    // Now sacct answers, but with garbage.
    std::fs::write(&garbage, "").unwrap();
    std::fs::remove_file(&fail).unwrap();
    server.wait_for_log("unparsable", 2, Duration::from_secs(60));
    assert_eq!(resume_point(dir.path()), None);
    // And then it recovers: every window since update_from is applied.
    std::fs::remove_file(&garbage).unwrap();
    wait_caught_up(dir.path(), &server, stream.now);
    server.sigterm();
    let counts = counts(dir.path());
    assert_eq!(counts.units, stream.jobs());
    assert_eq!(counts.usage_num_units, stream.jobs());
    assert_eq!(counts.usage_walltime, expected_walltime(&stream));
}
