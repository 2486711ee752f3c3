//! The update loop: per cluster, fetch the units of a window from its resource manager,
//! let the updaters add metrics, and write everything in one transaction together with
//! the cluster's resume point.
//!
//! Every cluster runs its own task. It resumes from its persisted resume point (or
//! `update_from` on a cluster never collected), catches up in `max_update_interval`
//! steps, then runs once per `update_interval`. A window that fails at any stage (the
//! resource manager, an updater, the database) writes nothing and the same start is
//! retried at the next tick, also after a restart. Shutdown interrupts a window while it
//! is fetching (child processes are killed) but lets a started commit finish.

pub mod backup;
pub mod build;
pub mod retention;
pub mod source;
pub mod window;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use build::{build_pipeline, BuildError};
pub use source::{BoxFuture, ResourceManager, SourceError, Updater, UsersProjects};
pub use window::Window;

use crate::config::DataConfig;
use crate::model::time::{format_dt, DAY_SECONDS};
use crate::storage::cluster_indexes;
use crate::storage::state::resume_point;
use crate::storage::window::{write_window, WindowReport, WindowRows};
use crate::storage::{Database, StorageError};

/// Why a window was not applied. The window is retried later either way.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error("fetching units: {0}")]
    Units(SourceError),
    #[error("updater {id}: {source}")]
    Updater { id: String, source: SourceError },
    #[error("fetching users and projects: {0}")]
    UsersProjects(SourceError),
    #[error("writing the window: {0}")]
    Storage(#[from] StorageError),
}

/// One cluster of the loop: its resource manager and its updaters, in order.
#[derive(Clone)]
pub struct ClusterSource {
    pub cluster_id: String,
    pub manager: Arc<dyn ResourceManager>,
    /// `(updater id, updater)`, run in this order.
    pub updaters: Vec<(String, Arc<dyn Updater>)>,
}

/// The timing of the loop, from `ceems_api_server.data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub zone: Tz,
    pub update_interval: Duration,
    pub max_update_interval: Duration,
    /// Where a cluster never collected starts, epoch ms.
    pub update_from_ms: i64,
}

impl Schedule {
    /// The schedule of `data`, with `update_from` (midnight today when unset) read in
    /// `time_zone` at `now_ms`.
    pub fn from_data_config(data: &DataConfig, now_ms: i64) -> Self {
        let zone = data.time_zone;
        let update_from_ms = match data.update_from_wall_clock() {
            Some(wall_clock) => zone
                .from_local_datetime(&wall_clock)
                .earliest()
                .map(|time| time.timestamp_millis()),
            None => Utc
                .timestamp_millis_opt(now_ms)
                .single()
                .and_then(|now| {
                    let midnight = now.with_timezone(&zone).date_naive().and_hms_opt(0, 0, 0)?;
                    zone.from_local_datetime(&midnight).earliest()
                })
                .map(|time| time.timestamp_millis()),
        }
        .unwrap_or(now_ms);
        Self {
            zone,
            update_interval: data.update_interval,
            max_update_interval: data.max_update_interval,
            update_from_ms,
        }
    }

    /// The windows that bring a cluster from `last_ms` to `now_ms` (cut to a whole
    /// second): steps of at most `max_update_interval`, the last one ending at `now_ms`.
    /// Empty when `now_ms` is not after `last_ms`.
    pub fn windows(&self, last_ms: i64, now_ms: i64) -> Vec<Window> {
        // Windows end on whole seconds: the TSDB's ranges are whole seconds, and a
        // fraction would leave a sliver of time between two windows that no query covers.
        let now_ms = now_ms - now_ms.rem_euclid(1000);
        let step = i64::try_from(self.max_update_interval.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let mut windows = Vec::new();
        let mut start = last_ms;
        while start < now_ms {
            let end = start.saturating_add(step).min(now_ms);
            windows.push(Window::new(start, end, self.zone));
            start = end;
        }
        windows
    }
}

/// The `daily_usage` bucket of a window ending at `end_ms`: the UTC day of the end,
/// rendered as `DT` in `zone` (the reference's layout, kept for existing databases).
pub fn day_key(end_ms: i64, zone: Tz) -> String {
    let end_seconds = end_ms.div_euclid(1000);
    format_dt(end_seconds - end_seconds.rem_euclid(DAY_SECONDS), zone)
}

/// The update loop over every configured cluster.
#[derive(Clone)]
pub struct Pipeline {
    db: Database,
    schedule: Schedule,
    clusters: Vec<ClusterSource>,
}

impl Pipeline {
    pub fn new(db: Database, schedule: Schedule, clusters: Vec<ClusterSource>) -> Self {
        Self {
            db,
            schedule,
            clusters,
        }
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn clusters(&self) -> &[ClusterSource] {
        &self.clusters
    }

    /// Starts one task per cluster; they stop when `shutdown` is cancelled.
    pub fn spawn(&self, shutdown: &CancellationToken, tasks: &mut JoinSet<()>) {
        for cluster in &self.clusters {
            let pipeline = self.clone();
            let cluster = cluster.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { pipeline.run_cluster(cluster, shutdown).await });
        }
    }

    /// The clusters this pipeline collects.
    pub fn cluster_ids(&self) -> Vec<String> {
        self.clusters
            .iter()
            .map(|cluster| cluster.cluster_id.clone())
            .collect()
    }

    /// The loop of one cluster: catch up now, then once per `update_interval`.
    async fn run_cluster(self, cluster: ClusterSource, shutdown: CancellationToken) {
        build_cluster_indexes(&self.db, &cluster.cluster_id, true).await;
        // A zero interval only passes validation with --test.disable.checks.
        let period = self.schedule.update_interval.max(Duration::from_secs(1));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match self.catch_up(&cluster, now_ms(), &shutdown).await {
                Ok(_) => {}
                Err(error) => tracing::error!(
                    cluster_id = %cluster.cluster_id,
                    %error,
                    retry_in = ?self.schedule.update_interval,
                    "update failed; the window will be retried"
                ),
            }
        }
    }

    /// Applies every window from the cluster's resume point to `now_ms`, in order, and
    /// stops at the first failure (the resume point stays at the last success). Returns
    /// the reports of the applied windows.
    pub async fn catch_up(
        &self,
        cluster: &ClusterSource,
        now_ms: i64,
        shutdown: &CancellationToken,
    ) -> Result<Vec<WindowReport>, WindowError> {
        let cluster_id = cluster.cluster_id.clone();
        let zone = self.schedule.zone;
        let resume = self
            .db
            .read(move |conn| resume_point(conn, &cluster_id, zone))
            .await?;
        let last_ms = resume.unwrap_or(self.schedule.update_from_ms);
        let mut reports = Vec::new();
        for window in self.schedule.windows(last_ms, now_ms) {
            if shutdown.is_cancelled() {
                break;
            }
            match self.run_window(cluster, window, shutdown).await? {
                Some(report) => reports.push(report),
                None => break,
            }
        }
        Ok(reports)
    }

    /// One window of one cluster: fetch (interruptible by `shutdown`), update, write.
    /// `Ok(None)` when shutdown interrupted it before anything was written.
    pub async fn run_window(
        &self,
        cluster: &ClusterSource,
        window: Window,
        shutdown: &CancellationToken,
    ) -> Result<Option<WindowReport>, WindowError> {
        let started = Instant::now();
        let fetched = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(None),
            fetched = fetch_window(cluster, &window) => fetched?,
        };
        let Fetched {
            units,
            ignored,
            users,
            projects,
            timings,
        } = fetched;
        let fetch_time = started.elapsed();

        let cluster_id = cluster.cluster_id.clone();
        let end_dt = window.end_dt();
        let day_key_dt = day_key(window.end_ms, window.zone);
        let end_ms = window.end_ms;
        let write_started = Instant::now();
        let report = self
            .db
            .write(move |conn| {
                write_window(
                    conn,
                    &WindowRows {
                        cluster_id: &cluster_id,
                        end_ms,
                        end_dt: &end_dt,
                        day_key_dt: &day_key_dt,
                        units: &units,
                        ignored: &ignored,
                        users: &users,
                        projects: &projects,
                    },
                )
            })
            .await?;
        let write_time = write_started.elapsed();
        tracing::info!(
            cluster_id = %cluster.cluster_id,
            window_start = %window.start_dt(),
            window_end = %window.end_dt(),
            units = report.units,
            new_units = report.new_units,
            failed_rows = report.failed_rows,
            fetch_ms = fetch_time.as_millis() as u64,
            units_ms = timings.units.as_millis() as u64,
            updaters_ms = timings.updaters.as_millis() as u64,
            users_projects_ms = timings.users_projects.as_millis() as u64,
            write_ms = write_time.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "window applied"
        );
        Ok(Some(report))
    }
}

/// What the fetch stage of a window gathered, and how long each part took.
struct Fetched {
    units: Vec<crate::model::Unit>,
    ignored: BTreeSet<String>,
    users: Vec<crate::model::User>,
    projects: Vec<crate::model::Project>,
    timings: FetchTimings,
}

/// Time spent in each part of the fetch stage, for the `window applied` line.
#[derive(Debug, Default, Clone, Copy)]
struct FetchTimings {
    /// The resource manager's units (for SLURM: sacct and parsing its output).
    units: Duration,
    /// Every updater together (for `tsdb`: its queries).
    updaters: Duration,
    users_projects: Duration,
}

/// The fetch stage of a window: units, then each updater in order, then users and
/// projects. Nothing is written here.
async fn fetch_window(cluster: &ClusterSource, window: &Window) -> Result<Fetched, WindowError> {
    let mut timings = FetchTimings::default();
    let started = Instant::now();
    let mut units = cluster
        .manager
        .fetch_units(window)
        .await
        .map_err(WindowError::Units)?;
    timings.units = started.elapsed();
    let started = Instant::now();
    let mut ignored = BTreeSet::new();
    for (id, updater) in &cluster.updaters {
        let marked =
            updater
                .update(window, &mut units)
                .await
                .map_err(|source| WindowError::Updater {
                    id: id.clone(),
                    source,
                })?;
        ignored.extend(marked);
    }
    timings.updaters = started.elapsed();
    let started = Instant::now();
    let (users, projects) = cluster
        .manager
        .fetch_users_projects(window)
        .await
        .map_err(WindowError::UsersProjects)?;
    timings.users_projects = started.elapsed();
    Ok(Fetched {
        units,
        ignored,
        users,
        projects,
        timings,
    })
}

/// The wall clock in epoch ms.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Builds the indexes a cluster lacks (the metric key index, the usage buckets): once, at
/// start, before its first window when `before_writing`. A failure only costs speed
/// (current usage then reads `units`) and is retried at the next start.
pub async fn build_cluster_indexes(db: &Database, cluster_id: &str, before_writing: bool) {
    let id = cluster_id.to_owned();
    let started = Instant::now();
    let result = db
        .write(move |conn| cluster_indexes::build_missing(conn, &id, before_writing))
        .await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(built) => {
            if let Some(units) = built.metric_keys {
                tracing::info!(cluster_id, units, elapsed_ms, "metric key index built");
            }
            if let Some(units) = built.usage_buckets {
                tracing::info!(cluster_id, units, elapsed_ms, "usage buckets built");
            }
        }
        Err(error) => {
            tracing::warn!(cluster_id, %error, "building the cluster's indexes failed")
        }
    }
}

/// Builds the indexes of every cluster that holds units and is not in `collected` (the
/// pipeline builds those itself), then logs that every stored cluster is indexed.
pub async fn build_stored_cluster_indexes(db: Database, collected: Vec<String>) {
    let clusters = match db
        .read(crate::storage::metric_keys::clusters_with_units)
        .await
    {
        Ok(clusters) => clusters,
        Err(error) => {
            tracing::warn!(%error, "listing the stored clusters failed");
            return;
        }
    };
    for cluster_id in clusters.iter().filter(|id| !collected.contains(id)) {
        build_cluster_indexes(&db, cluster_id, false).await;
    }
    tracing::info!(
        clusters = clusters.len(),
        "indexes of the stored clusters ready"
    );
}
