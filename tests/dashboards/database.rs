//! Where the dashboards' data comes from: two demo clusters run through the server's real
//! update loop over the last 26 hours, and the identities and time range the
//! dashboards are looked at with, chosen from what the loop wrote. The database is filled
//! once per test binary; each test server gets its own copy.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use ceems_api_server::config::{ClusterConfig, Config};
use ceems_api_server::pipeline::{build_pipeline, now_ms, Window};
use ceems_api_server::resource::demo::DemoCluster;
use ceems_api_server::storage::Database;
use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The demo clusters: the id and the `extra_config` of each (two seeds, so that the two
/// clusters run different job streams).
const CLUSTERS: [(&str, &str); 2] = [("demo-0", "seed: 1"), ("demo-1", "seed: 2")];

/// The zone of the data (the DST changes of Europe make it the harder case).
const ZONE: Tz = chrono_tz::Europe::Paris;

/// How far back the dashboards look: the last day.
const RANGE_MS: i64 = 86_400_000;

/// How far back the demo clusters are collected: two hours more than the dashboards look
/// at, so that the database also holds units that ended before the range.
const HISTORY_MS: i64 = RANGE_MS + 2 * HOUR_MS;

const HOUR_MS: i64 = 3_600_000;

/// The update loop's step: the catch-up takes three windows per cluster.
const STEP: Duration = Duration::from_secs(12 * 3600);

/// Who looks at the dashboards, and over which time range.
#[derive(Clone)]
pub struct Scenario {
    /// A user with units in the range: the identity for the user routes.
    pub user: String,
    /// A name in the server's admin list: the identity for the `/admin` routes.
    pub admin: String,
    /// Dashboard time range, epoch milliseconds.
    pub from_ms: i64,
    pub to_ms: i64,
    /// How many runs the job list gets (one per endpoint kind, cluster and user explored).
    pub job_list_runs: usize,
    /// Per cluster, the uuids of the user's units the job list must show: those that
    /// ended in the range or are still running, as the demo generator itself lists them.
    pub user_units: BTreeMap<String, BTreeSet<String>>,
}

/// The config of the demo clusters, in `dir`, collecting from [`HISTORY_MS`] before
/// `now_ms`.
fn demo_config(dir: &Path, now_ms: i64) -> Config {
    let mut config = Config::default();
    config.server.data.path = dir.to_path_buf();
    config.server.data.time_zone = ZONE;
    // The wall clock of a real instant: never in a DST gap (in the autumn overlap the
    // server reads it as the earlier of the two instants).
    let start = Utc
        .timestamp_millis_opt(now_ms - HISTORY_MS)
        .unwrap()
        .with_timezone(&ZONE)
        .naive_local();
    config.server.data.update_from = Some(start.format("%Y-%m-%dT%H:%M:%S").to_string());
    config.server.data.max_update_interval = STEP;
    config.clusters = CLUSTERS
        .iter()
        .map(|(id, extra_config)| ClusterConfig {
            id: (*id).to_owned(),
            manager: "demo".to_owned(),
            extra_config: yaml_serde::from_str(extra_config).unwrap(),
            ..ClusterConfig::default()
        })
        .collect();
    config
}

/// The filled database (a `VACUUM INTO` copy) and its scenario.
struct Filled {
    database: Vec<u8>,
    scenario: Scenario,
}

/// Writes the demo database into `dir/ceems.db` and says who looks at it and when. The
/// first call fills it (on its own thread and runtime, so that it may be called from
/// any test); later calls copy the same data.
pub fn prepare_database(dir: &Path) -> Scenario {
    static FILLED: OnceLock<Filled> = OnceLock::new();
    let filled = FILLED.get_or_init(|| {
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(fill())
        })
        .join()
        .expect("the demo clusters fill the database")
    });
    std::fs::write(dir.join("ceems.db"), &filled.database).expect("copy the demo database");
    filled.scenario.clone()
}

/// Fills a database from the demo clusters through the update loop, up to now (whole
/// seconds: the API takes seconds), and picks the scenario from the written units.
async fn fill() -> Filled {
    let work = tempfile::tempdir().expect("work dir");
    let dir = work.path();
    let now_ms = now_ms() / 1000 * 1000;
    let config = demo_config(dir, now_ms);
    let database = Database::open(dir).expect("open the database");
    let pipeline = build_pipeline(&config, database.clone(), now_ms).expect("demo pipeline");
    let update_from_ms = pipeline.schedule().update_from_ms;
    assert!(
        [HISTORY_MS, HISTORY_MS + HOUR_MS].contains(&(now_ms - update_from_ms)),
        "update_from {update_from_ms} for now {now_ms}"
    );
    // Every cluster in its own task, as the server runs them.
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for cluster in pipeline.clusters() {
        let (pipeline, cluster, shutdown) = (pipeline.clone(), cluster.clone(), shutdown.clone());
        tasks.spawn(async move {
            let reports = pipeline.catch_up(&cluster, now_ms, &shutdown).await;
            (cluster.cluster_id, reports)
        });
    }
    // One window per step, the last one partial.
    let windows = (now_ms - update_from_ms + STEP.as_millis() as i64 - 1) as usize
        / STEP.as_millis() as usize;
    while let Some(joined) = tasks.join_next().await {
        let (cluster_id, reports) = joined.expect("catch-up task");
        let reports = reports.unwrap_or_else(|error| panic!("{cluster_id} catches up: {error}"));
        assert_eq!(reports.len(), windows, "{cluster_id}");
        let failed: usize = reports.iter().map(|report| report.failed_rows).sum();
        assert_eq!(failed, 0, "{cluster_id}: rows rejected");
    }

    let from_ms = now_ms - RANGE_MS;
    let from_s = from_ms / 1000;
    let written = database
        .read(move |conn| {
            let resume: Vec<(String, i64)> = conn
                .prepare("SELECT cluster_id, last_window_end_ts FROM collect_state ORDER BY 1")?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            // The users by their units that ended in the range or are still running.
            let users: Vec<(String, i64)> = conn
                .prepare(
                    "SELECT username, COUNT(*) FROM units \
                     WHERE ended_at_ts = 0 OR ended_at_ts >= ?1 * 1000 \
                     GROUP BY username ORDER BY 2 DESC, 1",
                )?
                .query_map([from_s], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok((resume, users))
        })
        .await
        .expect("read what the demo wrote");
    let (resume, users) = written;
    let expected_resume: Vec<(String, i64)> = CLUSTERS
        .iter()
        .map(|(id, _)| ((*id).to_owned(), now_ms))
        .collect();
    assert_eq!(resume, expected_resume, "every cluster reached now");
    assert_eq!(users.len(), 9, "every demo user ran jobs: {users:?}");
    // The busiest user looks at their jobs; the next busiest is the admin.
    let user = users[0].0.clone();
    let admin = users[1].0.clone();

    let user_units = config
        .clusters
        .iter()
        .map(|cluster| {
            let demo = DemoCluster::new(cluster, ZONE).expect("demo cluster");
            // From just before the range: a unit that ended exactly at `from` is in it.
            let units = demo.units(&Window::new(from_ms - 1, now_ms, ZONE));
            let uuids: BTreeSet<String> = units
                .into_iter()
                .filter(|unit| unit.username == user)
                .filter(|unit| {
                    unit.ended_at_ts == 0 || (from_ms..now_ms).contains(&unit.ended_at_ts)
                })
                .map(|unit| unit.uuid)
                .collect();
            (cluster.id.clone(), uuids)
        })
        .collect();

    let copy = dir.join("copy.db");
    let target = copy.to_str().expect("UTF-8 temporary path").to_owned();
    database
        .write(move |conn| Ok(conn.execute("VACUUM INTO ?1", [target])?))
        .await
        .expect("copy the database");
    Filled {
        database: std::fs::read(&copy).expect("read the copy"),
        scenario: Scenario {
            user,
            admin,
            from_ms,
            to_ms: now_ms,
            // As the user: both clusters, the user alone on each. As the admin: both
            // clusters, with the first three of their nine users each.
            job_list_runs: 2 + 2 * 3,
            user_units,
        },
    }
}
