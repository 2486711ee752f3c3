//! The update loop over a real SQLite file with scripted resource managers and updaters:
//! catch-up, resume, replay of failed windows, and that nothing is counted twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ceems_api_server::model::time::format_dtz;
use ceems_api_server::model::{MetricMap, Project, Unit, User};
use ceems_api_server::pipeline::{
    BoxFuture, ClusterSource, Pipeline, ResourceManager, Schedule, SourceError, Updater, Window,
};
use ceems_api_server::storage::Database;
use chrono_tz::Tz;
use tokio_util::sync::CancellationToken;

/// 2024-01-10T00:00:00Z.
const T0: i64 = 1_704_844_800_000;
const HOUR: i64 = 3_600_000;

/// A job of the scripted cluster: runs over `[start, end)` (end 0: still running) at
/// `power` watts on `cpus` CPUs.
#[derive(Clone)]
struct Job {
    uuid: &'static str,
    user: &'static str,
    project: &'static str,
    start: i64,
    end: i64,
    cpus: i64,
    power: f64,
}

fn jobs() -> Vec<Job> {
    vec![
        Job {
            uuid: "1",
            user: "alice",
            project: "p1",
            start: T0 + 10 * 60_000,
            end: T0 + 50 * 60_000,
            cpus: 4,
            power: 100.0,
        },
        Job {
            uuid: "2",
            user: "alice",
            project: "p1",
            start: T0 + 30 * 60_000,
            end: T0 + 4 * HOUR + 5 * 60_000,
            cpus: 8,
            power: 250.0,
        },
        Job {
            uuid: "3",
            user: "bob",
            project: "p2",
            start: T0 + 2 * HOUR,
            end: T0 + 2 * HOUR + 1,
            cpus: 1,
            power: 10.0,
        },
        Job {
            uuid: "4",
            user: "bob",
            project: "p1",
            start: T0 + 3 * HOUR + 59 * 60_000,
            end: 0,
            cpus: 2,
            power: 60.0,
        },
    ]
}

/// A resource manager that answers from [`jobs`], with the metrics of the overlap with
/// the window, like a real one; can be told to fail.
#[derive(Default)]
struct ScriptedCluster {
    fail: AtomicBool,
    calls: AtomicUsize,
}

impl ScriptedCluster {
    fn units(window: &Window) -> Vec<Unit> {
        let mut units = Vec::new();
        for job in jobs() {
            let end = if job.end == 0 || job.end > window.end_ms {
                window.end_ms
            } else {
                job.end
            };
            if job.start >= window.end_ms || (job.end != 0 && job.end <= window.start_ms) {
                continue;
            }
            let from = job.start.max(window.start_ms);
            let seconds = ((end - from) / 1000) as f64;
            let mut unit = Unit {
                cluster_id: "c1".into(),
                resource_manager: "slurm".into(),
                uuid: job.uuid.into(),
                name: format!("job{}", job.uuid),
                project: job.project.into(),
                groupname: job.user.into(),
                username: job.user.into(),
                created_at: format_dtz(job.start, Tz::UTC),
                started_at: format_dtz(job.start, Tz::UTC),
                started_at_ts: job.start,
                created_at_ts: job.start,
                state: "RUNNING".into(),
                ended_at: "Unknown".into(),
                ..Unit::default()
            };
            if job.end != 0 && job.end <= window.end_ms {
                unit.state = "COMPLETED".into();
                unit.ended_at = format_dtz(job.end, Tz::UTC);
                unit.ended_at_ts = job.end;
            }
            unit.metrics.total_time_seconds = map(&[
                ("walltime", seconds),
                ("alloc_cputime", seconds * job.cpus as f64),
                ("alloc_cpumemtime", seconds),
                ("alloc_gputime", 0.0),
                ("alloc_gpumemtime", 0.0),
            ]);
            unit.metrics.avg_cpu_usage = map(&[("global", 50.0)]);
            unit.metrics.total_cpu_energy_usage_kwh =
                map(&[("total", job.power * seconds / 3.6e6)]);
            units.push(unit);
        }
        units
    }
}

impl ResourceManager for ScriptedCluster {
    fn fetch_units<'a>(
        &'a self,
        window: &'a Window,
    ) -> BoxFuture<'a, Result<Vec<Unit>, SourceError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err("sacct: exit status 1: slurmdbd unreachable".into());
            }
            Ok(Self::units(window))
        })
    }

    fn fetch_users_projects<'a>(
        &'a self,
        _window: &'a Window,
    ) -> BoxFuture<'a, Result<(Vec<User>, Vec<Project>), SourceError>> {
        Box::pin(async move {
            let user = |name: &str| User {
                cluster_id: "c1".into(),
                resource_manager: "slurm".into(),
                name: name.into(),
                ..User::default()
            };
            let project = |name: &str| Project {
                cluster_id: "c1".into(),
                resource_manager: "slurm".into(),
                name: name.into(),
                ..Project::default()
            };
            Ok((
                vec![user("alice"), user("bob")],
                vec![project("p1"), project("p2")],
            ))
        })
    }
}

/// An updater that fails while `down` is set, like a TSDB that cannot be reached.
#[derive(Default)]
struct FlakyUpdater {
    down: AtomicBool,
}

impl Updater for FlakyUpdater {
    fn update<'a>(
        &'a self,
        _window: &'a Window,
        units: &'a mut [Unit],
    ) -> BoxFuture<'a, Result<BTreeSet<String>, SourceError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err("POST http://127.0.0.1:9/api/v1/query: connection refused".into());
            }
            for unit in units.iter_mut() {
                unit.metrics.avg_gpu_usage = map(&[("global", 0.0)]);
            }
            Ok(BTreeSet::from(["3".to_owned()]))
        })
    }
}

fn map(pairs: &[(&str, f64)]) -> MetricMap {
    MetricMap(
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), *value))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn schedule() -> Schedule {
    Schedule {
        zone: Tz::UTC,
        update_interval: Duration::from_secs(900),
        max_update_interval: Duration::from_secs(3600),
        update_from_ms: T0,
    }
}

struct Harness {
    pipeline: Pipeline,
    cluster: Arc<ScriptedCluster>,
    updater: Arc<FlakyUpdater>,
    db: Database,
    _dir: tempfile::TempDir,
}

fn harness(max_update_interval: Duration) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let cluster = Arc::new(ScriptedCluster::default());
    let updater = Arc::new(FlakyUpdater::default());
    let source = ClusterSource {
        cluster_id: "c1".into(),
        manager: cluster.clone(),
        updaters: vec![("tsdb-0".into(), updater.clone() as Arc<dyn Updater>)],
    };
    let schedule = Schedule {
        max_update_interval,
        ..schedule()
    };
    Harness {
        pipeline: Pipeline::new(db.clone(), schedule, vec![source]),
        cluster,
        updater,
        db,
        _dir: dir,
    }
}

/// What the tables hold, in a form two runs can be compared by.
#[derive(Debug, PartialEq)]
struct Snapshot {
    units: Vec<(String, String, i64, String, i64)>,
    usage: Vec<(String, String, i64, String, String)>,
    daily_num_units: i64,
    users: i64,
    projects: i64,
}

async fn snapshot(db: &Database) -> Snapshot {
    db.read(|conn| {
        let mut units = conn.prepare("SELECT uuid, state, ended_at_ts, total_time_seconds, ignore FROM units ORDER BY uuid")?;
        let units = units
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut usage = conn.prepare(
            "SELECT username, project, num_units, json_extract(total_time_seconds, '$.walltime') || '', printf('%.9f', json_extract(total_cpu_energy_usage_kwh, '$.total')) FROM usage ORDER BY username, project",
        )?;
        let usage = usage
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let daily_num_units = conn.query_row("SELECT COALESCE(SUM(num_units), 0) FROM daily_usage", [], |row| row.get(0))?;
        let users = conn.query_row("SELECT COUNT(*) FROM users", [], |row| row.get(0))?;
        let projects = conn.query_row("SELECT COUNT(*) FROM projects", [], |row| row.get(0))?;
        Ok(Snapshot { units, usage, daily_num_units, users, projects })
    })
    .await
    .unwrap()
}

async fn resume_point(db: &Database) -> Option<i64> {
    db.read(|conn| ceems_api_server::storage::state::resume_point(conn, "c1", Tz::UTC))
        .await
        .unwrap()
}

#[test]
fn catch_up_cuts_time_into_steps_ending_now() {
    let windows = schedule().windows(T0, T0 + 2 * HOUR + 30 * 60_000);
    let bounds: Vec<(i64, i64)> = windows
        .iter()
        .map(|w| (w.start_ms - T0, w.end_ms - T0))
        .collect();
    assert_eq!(
        bounds,
        vec![
            (0, HOUR),
            (HOUR, 2 * HOUR),
            (2 * HOUR, 2 * HOUR + 30 * 60_000)
        ]
    );
    assert!(schedule().windows(T0, T0).is_empty());
    assert!(schedule().windows(T0, T0 - 1).is_empty());
}

#[tokio::test]
async fn a_clean_run_stores_each_unit_once_with_its_lifetime_totals() {
    let h = harness(Duration::from_secs(3600));
    let reports = h
        .pipeline
        .catch_up(
            &h.pipeline.clusters()[0],
            T0 + 5 * HOUR,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(reports.len(), 5);
    assert_eq!(reports.iter().map(|r| r.new_units).sum::<usize>(), 4);
    assert_eq!(resume_point(&h.db).await, Some(T0 + 5 * HOUR));

    let snap = snapshot(&h.db).await;
    // Job 2 ran 3h35m: 12900 s over five windows; job 4 is still running (1h01m so far).
    assert_eq!(snap.units[1].0, "2");
    assert_eq!(snap.units[1].1, "COMPLETED");
    assert!(
        snap.units[1].3.contains("\"walltime\":12900"),
        "{}",
        snap.units[1].3
    );
    assert_eq!(snap.units[3].1, "RUNNING");
    assert_eq!(snap.units[3].2, 0);
    // Job 3 was marked ignored by the updater.
    assert_eq!(snap.units[2].4, 1);
    // alice/p1: jobs 1 (2400 s at 100 W) and 2 (12900 s at 250 W).
    let energy = (100.0 * 2400.0 + 250.0 * 12900.0) / 3.6e6;
    assert_eq!(
        snap.usage[0],
        (
            "alice".into(),
            "p1".into(),
            2,
            "15300".into(),
            format!("{energy:.9}")
        )
    );
    // bob/p1: job 4, running since T0+3h59m, 3660 s by T0+5h.
    assert_eq!(snap.usage[1].2, 1);
    assert_eq!(snap.usage[1].3, "3660");
    assert_eq!(snap.daily_num_units, 4);
    assert_eq!((snap.users, snap.projects), (2, 2));
}

#[tokio::test]
async fn failed_windows_are_replayed_and_nothing_is_counted_twice() {
    let clean = harness(Duration::from_secs(3600));
    clean
        .pipeline
        .catch_up(
            &clean.pipeline.clusters()[0],
            T0 + 5 * HOUR,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    let expected = snapshot(&clean.db).await;

    let h = harness(Duration::from_secs(3600));
    let cluster = &h.pipeline.clusters()[0];
    let token = CancellationToken::new();
    // Two windows go through, then the TSDB goes down.
    h.pipeline
        .catch_up(cluster, T0 + 2 * HOUR, &token)
        .await
        .unwrap();
    h.updater.down.store(true, Ordering::SeqCst);
    let error = h
        .pipeline
        .catch_up(cluster, T0 + 3 * HOUR, &token)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("updater tsdb-0"), "{error}");
    assert_eq!(resume_point(&h.db).await, Some(T0 + 2 * HOUR));
    // Then sacct fails too, for a while.
    h.updater.down.store(false, Ordering::SeqCst);
    h.cluster.fail.store(true, Ordering::SeqCst);
    let error = h
        .pipeline
        .catch_up(cluster, T0 + 4 * HOUR, &token)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("fetching units: sacct"),
        "{error}"
    );
    assert_eq!(resume_point(&h.db).await, Some(T0 + 2 * HOUR));
    // Everything recovers: the missed hours are replayed from the resume point.
    h.cluster.fail.store(false, Ordering::SeqCst);
    let reports = h
        .pipeline
        .catch_up(cluster, T0 + 5 * HOUR, &token)
        .await
        .unwrap();
    assert_eq!(reports.len(), 3);
    assert_eq!(snapshot(&h.db).await, expected);
}

#[tokio::test]
async fn windows_of_any_length_give_the_same_counts_and_totals() {
    // A restart after a crash replays from the resume point with other window bounds.
    let hourly = harness(Duration::from_secs(3600));
    hourly
        .pipeline
        .catch_up(
            &hourly.pipeline.clusters()[0],
            T0 + 5 * HOUR,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    let quarterly = harness(Duration::from_secs(900));
    let cluster = &quarterly.pipeline.clusters()[0];
    quarterly
        .pipeline
        .catch_up(cluster, T0 + 90 * 60_000, &CancellationToken::new())
        .await
        .unwrap();
    quarterly
        .pipeline
        .catch_up(cluster, T0 + 5 * HOUR, &CancellationToken::new())
        .await
        .unwrap();
    let a = snapshot(&hourly.db).await;
    let b = snapshot(&quarterly.db).await;
    // Maps are stored with 8 decimals, so more windows add more rounding: compare the
    // energies to that precision and everything else exactly.
    assert_eq!(a.usage.len(), b.usage.len());
    for (x, y) in a.usage.iter().zip(&b.usage) {
        assert_eq!((&x.0, &x.1, x.2, &x.3), (&y.0, &y.1, y.2, &y.3));
        let (ex, ey): (f64, f64) = (x.4.parse().unwrap(), y.4.parse().unwrap());
        assert!((ex - ey).abs() < 1e-7, "{ex} vs {ey}");
    }
    assert_eq!(a.daily_num_units, b.daily_num_units);
    assert_eq!(
        a.units
            .iter()
            .map(|u| (&u.0, &u.1, u.2, &u.3))
            .collect::<Vec<_>>(),
        b.units
            .iter()
            .map(|u| (&u.0, &u.1, u.2, &u.3))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_restart_resumes_from_the_persisted_point() {
    let h = harness(Duration::from_secs(3600));
    h.pipeline
        .catch_up(
            &h.pipeline.clusters()[0],
            T0 + 2 * HOUR,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    let calls = h.cluster.calls.load(Ordering::SeqCst);
    // A new pipeline on the same database (a restart) starts where the last one stopped.
    let restarted = Pipeline::new(h.db.clone(), schedule(), h.pipeline.clusters().to_vec());
    let reports = restarted
        .catch_up(
            &restarted.clusters()[0],
            T0 + 3 * HOUR,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(h.cluster.calls.load(Ordering::SeqCst), calls + 1);
}

#[tokio::test]
async fn a_cancelled_loop_writes_nothing_more() {
    let h = harness(Duration::from_secs(3600));
    let token = CancellationToken::new();
    token.cancel();
    let reports = h
        .pipeline
        .catch_up(&h.pipeline.clusters()[0], T0 + 5 * HOUR, &token)
        .await
        .unwrap();
    assert!(reports.is_empty());
    assert_eq!(resume_point(&h.db).await, None);
    assert!(snapshot(&h.db).await.units.is_empty());
}
