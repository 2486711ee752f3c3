//! The writes of one collect window: the upserts of units, usage, daily usage, users and
//! projects, and the retention purge. Each function runs one statement inside the
//! caller's transaction, so a failing row can be logged and skipped by the caller while
//! SQLite undoes only that statement.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use chrono_tz::Tz;
use rusqlite::types::ToSql;
use rusqlite::Transaction;

use super::StorageError;
use crate::model::time::format_dt;
use crate::model::{Metric, MetricMap, Metrics, Project, Unit, Usage, User};

const UPSERT_UNITS_SQL: &str = include_str!("../../sql/upsert_units.sql");
const UPSERT_USAGE_SQL: &str = include_str!("../../sql/upsert_usage.sql");
const UPSERT_DAILY_USAGE_SQL: &str = include_str!("../../sql/upsert_daily_usage.sql");
const UPSERT_USERS_SQL: &str = include_str!("../../sql/upsert_users.sql");
const UPSERT_PROJECTS_SQL: &str = include_str!("../../sql/upsert_projects.sql");

/// Upserts `unit` for the window ending at `window_end_dt` (DT, the `last_updated_at`).
/// A new row gets `num_updates = 1`; an existing one (same cluster, uuid and start) has its
/// end, elapsed, state, tags, ignore flag and `last_updated_at` replaced, its totals added
/// and its averages re-weighted by `alloc_*time` (old row's and this window's), and
/// `num_updates` incremented. Returns `false` without writing when the uuid is empty.
pub fn upsert_unit(
    transaction: &Transaction<'_>,
    unit: &Unit,
    ignore: bool,
    window_end_dt: &str,
) -> Result<bool, StorageError> {
    if unit.uuid.is_empty() {
        return Ok(false);
    }
    let maps = EncodedMetrics::new(&unit.metrics);
    let ignore = i64::from(ignore);
    let allocation = unit.allocation.as_json();
    let tags = unit.tags.as_json();
    let mut parameters: Vec<(&str, &dyn ToSql)> = vec![
        (":resource_manager", &unit.resource_manager),
        (":cluster_id", &unit.cluster_id),
        (":uuid", &unit.uuid),
        (":name", &unit.name),
        (":project", &unit.project),
        (":groupname", &unit.groupname),
        (":username", &unit.username),
        (":created_at", &unit.created_at),
        (":started_at", &unit.started_at),
        (":ended_at", &unit.ended_at),
        (":created_at_ts", &unit.created_at_ts),
        (":started_at_ts", &unit.started_at_ts),
        (":ended_at_ts", &unit.ended_at_ts),
        (":elapsed", &unit.elapsed),
        (":state", &unit.state),
        (":allocation", &allocation),
        (":tags", &tags),
        (":ignore", &ignore),
        (":last_updated_at", &window_end_dt),
    ];
    maps.extend_parameters(&mut parameters);
    transaction
        .prepare_cached(UPSERT_UNITS_SQL)?
        .execute(parameters.as_slice())?;
    Ok(true)
}

/// Adds one window of a (cluster, user, project) to its lifetime usage: `usage.metrics` are
/// the window's units folded together (see [`fold_usage`]) and `usage.num_units` the units
/// that count as new in this window (the caller decides, see the emptyDB rule).
/// `groupname` and `resource_manager` are only written by the first insert;
/// `last_updated_at` becomes `window_end_dt`.
pub fn upsert_usage(
    transaction: &Transaction<'_>,
    usage: &Usage,
    window_end_dt: &str,
) -> Result<(), StorageError> {
    upsert_usage_row(transaction, UPSERT_USAGE_SQL, usage, window_end_dt)
}

/// As [`upsert_usage`], into `daily_usage` under the day key `day_key_dt` (part of the
/// conflict key).
pub fn upsert_daily_usage(
    transaction: &Transaction<'_>,
    usage: &Usage,
    day_key_dt: &str,
) -> Result<(), StorageError> {
    upsert_usage_row(transaction, UPSERT_DAILY_USAGE_SQL, usage, day_key_dt)
}

fn upsert_usage_row(
    transaction: &Transaction<'_>,
    sql: &str,
    usage: &Usage,
    last_updated_at: &str,
) -> Result<(), StorageError> {
    let maps = EncodedMetrics::new(&usage.metrics);
    let mut parameters: Vec<(&str, &dyn ToSql)> = vec![
        (":resource_manager", &usage.resource_manager),
        (":cluster_id", &usage.cluster_id),
        (":num_units", &usage.num_units),
        (":project", &usage.project),
        (":groupname", &usage.groupname),
        (":username", &usage.username),
        (":last_updated_at", &last_updated_at),
    ];
    maps.extend_parameters(&mut parameters);
    transaction
        .prepare_cached(sql)?
        .execute(parameters.as_slice())?;
    Ok(())
}

/// The usage row of a single unit: its (cluster, user, project), its metrics and the
/// `num_units` it adds.
pub fn usage_of_unit(unit: &Unit, num_units: i64) -> Usage {
    Usage {
        cluster_id: unit.cluster_id.clone(),
        resource_manager: unit.resource_manager.clone(),
        num_units,
        project: unit.project.clone(),
        groupname: unit.groupname.clone(),
        username: unit.username.clone(),
        metrics: unit.metrics.clone(),
    }
}

/// A window's usage rows in first-seen order (so the inserted groupname and
/// resource_manager are the first unit's), indexed by (cluster, user, project).
#[derive(Debug, Default)]
pub struct WindowUsage<'a> {
    rows: Vec<Usage>,
    index: HashMap<(&'a str, &'a str, &'a str), usize>,
}

impl<'a> WindowUsage<'a> {
    /// The rows, in first-seen order.
    pub fn rows(&self) -> &[Usage] {
        &self.rows
    }

    pub fn into_rows(self) -> Vec<Usage> {
        self.rows
    }

    /// Adds `unit`, counting `num_units` new units: the first unit of a group starts its
    /// row, the next ones are folded in with [`fold_usage`].
    pub fn add(&mut self, unit: &'a Unit, num_units: i64) {
        let key = (
            unit.cluster_id.as_str(),
            unit.username.as_str(),
            unit.project.as_str(),
        );
        match self.index.entry(key) {
            Entry::Occupied(entry) => {
                let row = &mut self.rows[*entry.get()];
                row.num_units += num_units;
                fold_usage(&mut row.metrics, &unit.metrics);
            }
            Entry::Vacant(entry) => {
                entry.insert(self.rows.len());
                self.rows.push(usage_of_unit(unit, num_units));
            }
        }
    }
}

/// Folds `current` (one more unit of the window) into `folded` exactly as the usage upsert
/// folds a unit into a stored row: totals added key-wise, each average re-weighted by the
/// `total_time_seconds` weights of both sides before the times themselves are added.
///
/// In place, with the arithmetic of the SQL functions'
/// [`weighted_average_metric_maps`](super::functions::weighted_average_metric_maps) and
/// [`add_metric_maps`](super::functions::add_metric_maps) (a test compares them): every sum starts from `0.0 +`, as
/// theirs do, so a lone `-0.0` becomes `0.0` as it does there.
pub fn fold_usage(folded: &mut Metrics, current: &Metrics) {
    for metric in Metric::ALL {
        if let Some(weight_key) = metric.weight_key() {
            let folded_weight = folded.total_time_seconds.get(weight_key).unwrap_or(0.0);
            let current_weight = current.total_time_seconds.get(weight_key).unwrap_or(0.0);
            let average = |weighted_sum: f64, weight_sum: f64| {
                if weight_sum > 0.0 {
                    weighted_sum / weight_sum
                } else {
                    weighted_sum
                }
            };
            let current_map = &current.get(metric).0;
            let folded_map = &mut folded.get_mut(metric).0;
            for (key, value) in folded_map.iter_mut() {
                let mut weighted_sum = 0.0 + *value * folded_weight;
                let mut weight_sum = 0.0 + folded_weight;
                if let Some(other) = current_map.get(key) {
                    weighted_sum += other * current_weight;
                    weight_sum += current_weight;
                }
                *value = average(weighted_sum, weight_sum);
            }
            for (key, value) in current_map {
                if !folded_map.contains_key(key) {
                    let value = average(0.0 + value * current_weight, 0.0 + current_weight);
                    folded_map.insert(key.clone(), value);
                }
            }
        }
    }
    for metric in Metric::ALL {
        if metric.weight_key().is_none() {
            let folded_map = &mut folded.get_mut(metric).0;
            for (key, value) in &current.get(metric).0 {
                match folded_map.get_mut(key) {
                    Some(total) => *total += value,
                    None => {
                        folded_map.insert(key.clone(), 0.0 + value);
                    }
                }
            }
        }
    }
}

/// Upserts a user of a cluster (the caller fills `cluster_id` and `resource_manager` from
/// the cluster config). Every column is overwritten on conflict.
pub fn upsert_user(
    transaction: &Transaction<'_>,
    user: &User,
    last_updated_at: &str,
) -> Result<(), StorageError> {
    let projects = user.projects.as_json();
    let tags = user.tags.as_json();
    let parameters: [(&str, &dyn ToSql); 7] = [
        (":uid", &user.uid),
        (":cluster_id", &user.cluster_id),
        (":resource_manager", &user.resource_manager),
        (":name", &user.name),
        (":projects", &projects),
        (":tags", &tags),
        (":last_updated_at", &last_updated_at),
    ];
    transaction
        .prepare_cached(UPSERT_USERS_SQL)?
        .execute(parameters.as_slice())?;
    Ok(())
}

/// Upserts a project of a cluster and its members. Every column is overwritten on
/// conflict.
pub fn upsert_project(
    transaction: &Transaction<'_>,
    project: &Project,
    last_updated_at: &str,
) -> Result<(), StorageError> {
    let users = project.users.as_json();
    let tags = project.tags.as_json();
    let parameters: [(&str, &dyn ToSql); 7] = [
        (":uid", &project.uid),
        (":cluster_id", &project.cluster_id),
        (":resource_manager", &project.resource_manager),
        (":name", &project.name),
        (":users", &users),
        (":tags", &tags),
        (":last_updated_at", &last_updated_at),
    ];
    transaction
        .prepare_cached(UPSERT_PROJECTS_SQL)?
        .execute(parameters.as_slice())?;
    Ok(())
}

/// How many rows the retention purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgedRows {
    pub units: usize,
    pub usage: usize,
    pub daily_usage: usize,
}

/// The retention purge of every window, at `cutoff_ms` (epoch ms, "now − retention"):
/// - units that ended at or before the cutoff (`0 < ended_at_ts <= cutoff_ms`); running
///   units (`ended_at_ts = 0`) are never purged;
/// - usage and daily_usage rows whose `last_updated_at` is at or before the cutoff.
///
/// `last_updated_at` is a `DT` in the configured `zone`, fixed width, so comparing it as
/// text with the cutoff rendered as `DT` in the same zone orders it by time. Rows written
/// by the reference server have the same format. A daily_usage row's `last_updated_at` is
/// the start of its day bucket, so a day is purged once its start is older than the
/// retention.
/// The units a purge at `?1` (epoch ms) removes: finished ones that ended by then, a range
/// of the partial index `idx_units_ended_ts` (a scan of the table otherwise, three times
/// per purge).
pub const EXPIRED_UNITS: &str = "ended_at_ts > 0 AND ended_at_ts <= ?1";

pub fn purge_expired_rows(
    transaction: &Transaction<'_>,
    cutoff_ms: i64,
    zone: Tz,
) -> Result<PurgedRows, StorageError> {
    let cutoff_dt = format_dt(cutoff_ms.div_euclid(1000), zone);
    super::metric_keys::forget_purged_units(transaction, cutoff_ms)?;
    let touched_hours = super::usage_rollup::hours_of_purged_units(transaction, cutoff_ms)?;
    let units = transaction.execute(
        &format!("DELETE FROM units WHERE {EXPIRED_UNITS}"),
        [cutoff_ms],
    )?;
    for (cluster_id, hours) in &touched_hours {
        super::usage_rollup::refresh(transaction, cluster_id, hours)?;
    }
    let usage = transaction.execute(
        "DELETE FROM usage WHERE last_updated_at <= ?1",
        [&cutoff_dt],
    )?;
    let daily_usage = transaction.execute(
        "DELETE FROM daily_usage WHERE last_updated_at <= ?1",
        [&cutoff_dt],
    )?;
    Ok(PurgedRows {
        units,
        usage,
        daily_usage,
    })
}

/// The 13 metric maps encoded as stored text, with their `:column` parameter names.
struct EncodedMetrics(Vec<(String, String)>);

impl EncodedMetrics {
    fn new(metrics: &crate::model::Metrics) -> Self {
        Self(
            Metric::ALL
                .iter()
                .map(|metric| {
                    (
                        format!(":{}", metric.column()),
                        MetricMap::encode(metrics.get(*metric)),
                    )
                })
                .collect(),
        )
    }

    fn extend_parameters<'a>(&'a self, parameters: &mut Vec<(&'a str, &'a dyn ToSql)>) {
        parameters.extend(
            self.0
                .iter()
                .map(|(name, text)| (name.as_str(), text as &dyn ToSql)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Generic, List, Metrics};
    use crate::storage::functions::register_metric_map_functions;
    use crate::storage::functions::{add_metric_maps, weighted_average_metric_maps};
    use crate::storage::migrations::migrate;
    use rusqlite::Connection;

    fn migrated() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        register_metric_map_functions(&conn).unwrap();
        migrate(&mut conn).unwrap();
        crate::storage::state::apply_auxiliary_schema(&conn).unwrap();
        conn
    }

    fn map(text: &str) -> MetricMap {
        MetricMap::decode(text).unwrap()
    }

    fn first_window_unit() -> Unit {
        Unit {
            cluster_id: "slurm-0".into(),
            resource_manager: "slurm".into(),
            uuid: "1001".into(),
            name: "job".into(),
            project: "acc1".into(),
            groupname: "grp1".into(),
            username: "usr1".into(),
            created_at: "2024-01-01T00:00:00+0000".into(),
            started_at: "2024-01-01T00:00:00+0000".into(),
            ended_at: "Unknown".into(),
            created_at_ts: 1_704_067_200_000,
            started_at_ts: 1_704_067_200_000,
            ended_at_ts: 0,
            elapsed: "00:15:00".into(),
            state: "RUNNING".into(),
            allocation: Generic::decode(r#"{"cpus":2,"mem":1024}"#).unwrap(),
            tags: Generic::decode(r#"{"qos":"normal"}"#).unwrap(),
            metrics: Metrics {
                total_time_seconds: map(
                    r#"{"walltime":900,"alloc_cputime":1800,"alloc_cpumemtime":900,"alloc_gputime":0,"alloc_gpumemtime":0}"#,
                ),
                avg_cpu_usage: map(r#"{"global":10}"#),
                avg_cpu_mem_usage: map(r#"{"global":20}"#),
                avg_gpu_usage: map(r#"{"global":5}"#),
                total_cpu_energy_usage_kwh: map(r#"{"total":1.5}"#),
                total_egress_stats: map(r#"{"bytes":100}"#),
                ..Metrics::default()
            },
        }
    }

    fn second_window_unit() -> Unit {
        Unit {
            // These change between windows but must not be written on conflict.
            name: "renamed".into(),
            allocation: Generic::decode(r#"{"cpus":4}"#).unwrap(),
            created_at_ts: 1,
            ended_at: "2024-01-01T00:30:00+0000".into(),
            ended_at_ts: 1_704_069_000_000,
            elapsed: "00:30:00".into(),
            state: "COMPLETED".into(),
            tags: Generic::decode(r#"{"qos":"high"}"#).unwrap(),
            metrics: Metrics {
                total_time_seconds: map(
                    r#"{"walltime":900,"alloc_cputime":3600,"alloc_cpumemtime":2700,"alloc_gputime":0,"alloc_gpumemtime":0}"#,
                ),
                avg_cpu_usage: map(r#"{"global":40}"#),
                avg_cpu_mem_usage: map(r#"{"global":40}"#),
                avg_gpu_usage: map(r#"{"global":7}"#),
                total_cpu_energy_usage_kwh: map(r#"{"total":0.25}"#),
                total_egress_stats: map(r#"{"bytes":50,"packets":3}"#),
                ..Metrics::default()
            },
            ..first_window_unit()
        }
    }

    fn text(conn: &Connection, sql: &str) -> String {
        conn.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    fn integer(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    #[test]
    fn unit_insert_then_conflicting_upsert_accumulates_and_replaces() {
        let mut conn = migrated();
        let transaction = conn.transaction().unwrap();
        assert!(upsert_unit(
            &transaction,
            &first_window_unit(),
            true,
            "2024-01-01T00:15:00"
        )
        .unwrap());
        assert_eq!(integer(&transaction, "SELECT num_updates FROM units"), 1);
        assert_eq!(integer(&transaction, "SELECT ignore FROM units"), 1);
        assert!(upsert_unit(
            &transaction,
            &second_window_unit(),
            false,
            "2024-01-01T00:30:00"
        )
        .unwrap());
        transaction.commit().unwrap();

        assert_eq!(integer(&conn, "SELECT count(*) FROM units"), 1);
        let row = |column: &str| text(&conn, &format!("SELECT {column} FROM units"));
        // Replaced.
        assert_eq!(row("ended_at"), "2024-01-01T00:30:00+0000");
        assert_eq!(
            integer(&conn, "SELECT ended_at_ts FROM units"),
            1_704_069_000_000
        );
        assert_eq!(row("elapsed"), "00:30:00");
        assert_eq!(row("state"), "COMPLETED");
        assert_eq!(row("tags"), r#"{"qos":"high"}"#);
        assert_eq!(integer(&conn, "SELECT ignore FROM units"), 0);
        assert_eq!(row("last_updated_at"), "2024-01-01T00:30:00");
        // Kept from the first insert.
        assert_eq!(row("name"), "job");
        assert_eq!(row("allocation"), r#"{"cpus":2,"mem":1024}"#);
        assert_eq!(
            integer(&conn, "SELECT created_at_ts FROM units"),
            1_704_067_200_000
        );
        assert_eq!(row("resource_manager"), "slurm");
        // Added.
        assert_eq!(
            row("total_time_seconds"),
            r#"{"alloc_cpumemtime":3600,"alloc_cputime":5400,"alloc_gpumemtime":0,"alloc_gputime":0,"walltime":1800}"#
        );
        assert_eq!(row("total_cpu_energy_usage_kwh"), r#"{"total":1.75000000}"#);
        assert_eq!(row("total_egress_stats"), r#"{"bytes":150,"packets":3}"#);
        assert_eq!(row("total_io_read_stats"), "{}");
        // Averaged with the old row's weights and the new window's:
        // cpu (10·1800 + 40·3600) / 5400 = 30; mem (20·900 + 40·2700) / 3600 = 35.
        assert_eq!(row("avg_cpu_usage"), r#"{"global":30}"#);
        assert_eq!(row("avg_cpu_mem_usage"), r#"{"global":35}"#);
        // Both GPU weights are 0: the value becomes 0, as in the reference.
        assert_eq!(row("avg_gpu_usage"), r#"{"global":0}"#);
        assert_eq!(integer(&conn, "SELECT num_updates FROM units"), 2);
    }

    #[test]
    fn a_missing_old_weight_counts_as_zero() {
        let mut conn = migrated();
        let transaction = conn.transaction().unwrap();
        let mut first = first_window_unit();
        first.metrics.total_time_seconds = map(r#"{"walltime":900}"#);
        upsert_unit(&transaction, &first, false, "t1").unwrap();
        upsert_unit(&transaction, &second_window_unit(), false, "t2").unwrap();
        assert_eq!(
            text(&transaction, "SELECT avg_cpu_usage FROM units"),
            r#"{"global":40}"#
        );
        assert_eq!(integer(&transaction, "SELECT num_updates FROM units"), 2);
    }

    #[test]
    fn another_start_time_is_another_row_and_empty_uuids_are_skipped() {
        let mut conn = migrated();
        let transaction = conn.transaction().unwrap();
        upsert_unit(&transaction, &first_window_unit(), false, "t1").unwrap();
        let restarted = Unit {
            started_at: "2024-01-02T00:00:00+0000".into(),
            ..first_window_unit()
        };
        upsert_unit(&transaction, &restarted, false, "t2").unwrap();
        let anonymous = Unit {
            uuid: String::new(),
            ..first_window_unit()
        };
        assert!(!upsert_unit(&transaction, &anonymous, false, "t3").unwrap());
        assert_eq!(integer(&transaction, "SELECT count(*) FROM units"), 2);
    }

    #[test]
    fn usage_adds_units_and_keeps_first_insert_columns() {
        let mut conn = migrated();
        let transaction = conn.transaction().unwrap();
        upsert_usage(
            &transaction,
            &usage_of_unit(&first_window_unit(), 1),
            "2024-01-01T00:15:00",
        )
        .unwrap();
        let second = Unit {
            groupname: "other".into(),
            resource_manager: "changed".into(),
            ..second_window_unit()
        };
        upsert_usage(
            &transaction,
            &usage_of_unit(&second, 0),
            "2024-01-01T00:30:00",
        )
        .unwrap();
        let another_job = Unit {
            uuid: "1002".into(),
            ..first_window_unit()
        };
        upsert_usage(
            &transaction,
            &usage_of_unit(&another_job, 1),
            "2024-01-01T00:45:00",
        )
        .unwrap();
        transaction.commit().unwrap();

        assert_eq!(integer(&conn, "SELECT count(*) FROM usage"), 1);
        let row = |column: &str| text(&conn, &format!("SELECT {column} FROM usage"));
        assert_eq!(integer(&conn, "SELECT num_units FROM usage"), 2);
        assert_eq!(integer(&conn, "SELECT num_updates FROM usage"), 3);
        assert_eq!(row("groupname"), "grp1");
        assert_eq!(row("resource_manager"), "slurm");
        assert_eq!(row("last_updated_at"), "2024-01-01T00:45:00");
        assert_eq!(
            row("total_time_seconds"),
            r#"{"alloc_cpumemtime":4500,"alloc_cputime":7200,"alloc_gpumemtime":0,"alloc_gputime":0,"walltime":2700}"#
        );
        // (10·1800 + 40·3600) / 5400 = 30, then (30·5400 + 10·1800) / 7200 = 25.
        assert_eq!(row("avg_cpu_usage"), r#"{"global":25}"#);
        assert_eq!(row("total_egress_stats"), r#"{"bytes":250,"packets":3}"#);
    }

    #[test]
    fn daily_usage_keys_rows_by_day() {
        let mut conn = migrated();
        let transaction = conn.transaction().unwrap();
        upsert_daily_usage(
            &transaction,
            &usage_of_unit(&first_window_unit(), 1),
            "2024-01-01T01:00:00",
        )
        .unwrap();
        upsert_daily_usage(
            &transaction,
            &usage_of_unit(&second_window_unit(), 0),
            "2024-01-01T01:00:00",
        )
        .unwrap();
        upsert_daily_usage(
            &transaction,
            &usage_of_unit(&second_window_unit(), 0),
            "2024-01-02T01:00:00",
        )
        .unwrap();
        transaction.commit().unwrap();
        let rows: Vec<(String, i64, i64, String)> = conn
            .prepare(
                "SELECT last_updated_at, num_units, num_updates, avg_cpu_usage
                 FROM daily_usage ORDER BY last_updated_at",
            )
            .unwrap()
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (
                    "2024-01-01T01:00:00".into(),
                    1,
                    2,
                    r#"{"global":30}"#.into()
                ),
                (
                    "2024-01-02T01:00:00".into(),
                    0,
                    1,
                    r#"{"global":40}"#.into()
                ),
            ]
        );
    }

    #[test]
    fn users_and_projects_are_overwritten_on_conflict() {
        let mut conn = migrated();
        let transaction = conn.transaction().unwrap();
        let user = User {
            uid: "1000".into(),
            cluster_id: "slurm-0".into(),
            resource_manager: "slurm".into(),
            name: "usr1".into(),
            projects: List::from_strings(&["acc1"]),
            tags: List::decode("[]").unwrap(),
        };
        upsert_user(&transaction, &user, "t1").unwrap();
        let moved = User {
            uid: "1001".into(),
            projects: List::from_strings(&["acc1", "acc2"]),
            tags: List::from_strings(&["x"]),
            ..user.clone()
        };
        upsert_user(&transaction, &moved, "t2").unwrap();
        let project = Project {
            uid: String::new(),
            cluster_id: "slurm-0".into(),
            resource_manager: "slurm".into(),
            name: "acc1".into(),
            users: List::decode("null").unwrap(),
            tags: List::decode("[]").unwrap(),
        };
        upsert_project(&transaction, &project, "t1").unwrap();
        let filled = Project {
            users: List::from_strings(&["usr1"]),
            ..project.clone()
        };
        upsert_project(&transaction, &filled, "t2").unwrap();
        transaction.commit().unwrap();

        let user_row: (String, String, String, String, i64) = conn
            .query_row(
                "SELECT uid, projects, tags, last_updated_at, count(*) FROM users",
                [],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            user_row,
            (
                "1001".into(),
                r#"["acc1","acc2"]"#.into(),
                r#"["x"]"#.into(),
                "t2".into(),
                1
            )
        );
        let project_row: (String, String, i64) = conn
            .query_row(
                "SELECT users, last_updated_at, count(*) FROM projects",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .unwrap();
        assert_eq!(project_row, (r#"["usr1"]"#.into(), "t2".into(), 1));
    }

    #[test]
    fn a_null_member_list_is_stored_as_the_text_null() {
        let mut conn = migrated();
        let transaction = conn.transaction().unwrap();
        let project = Project {
            cluster_id: "c".into(),
            name: "p".into(),
            users: List::decode("null").unwrap(),
            ..Project::default()
        };
        upsert_project(&transaction, &project, "t").unwrap();
        assert_eq!(text(&transaction, "SELECT users FROM projects"), "null");
    }

    #[test]
    fn purge_compares_numbers_and_same_zone_dts_on_both_sides_of_the_cutoff() {
        let mut conn = migrated();
        // Cutoff 2024-03-01T00:00:00Z; in Paris (UTC+1 then) that is 2024-03-01T01:00:00.
        let cutoff_ms = 1_709_251_200_000;
        conn.execute_batch(
            "INSERT INTO units (uuid, ended_at, ended_at_ts) VALUES
               ('ended-long-ago', '2024-01-01T00:00:00+0100', 1704063600000),
               ('ended-at-cutoff', '2024-03-01T01:00:00+0100', 1709251200000),
               ('ended-1ms-after', '2024-03-01T01:00:00+0100', 1709251200001),
               ('running', 'Unknown', 0),
               ('running-na', 'N/A', 0),
               ('ended-text-but-no-ts', '2000-01-01T00:00:00+0000', 0);
             INSERT INTO usage (username, last_updated_at) VALUES
               ('old', '2024-02-29T23:59:59'),
               ('at-cutoff', '2024-03-01T01:00:00'),
               ('one-second-before', '2024-03-01T00:59:59'),
               ('after', '2024-03-01T01:00:01');
             INSERT INTO daily_usage (username, last_updated_at) VALUES
               ('old-day', '2024-02-29T01:00:00'),
               ('cutoff-day', '2024-03-01T01:00:00'),
               ('next-day', '2024-03-02T01:00:00');",
        )
        .unwrap();
        let transaction = conn.transaction().unwrap();
        let purged = purge_expired_rows(&transaction, cutoff_ms, chrono_tz::Europe::Paris).unwrap();
        transaction.commit().unwrap();
        assert_eq!(
            purged,
            PurgedRows {
                units: 2,
                usage: 3,
                daily_usage: 2
            }
        );
        let names = |sql: &str| text(&conn, sql);
        assert_eq!(
            names("SELECT group_concat(uuid, ',') FROM (SELECT uuid FROM units ORDER BY uuid)"),
            "ended-1ms-after,ended-text-but-no-ts,running,running-na"
        );
        assert_eq!(
            names("SELECT group_concat(username, ',') FROM usage"),
            "after"
        );
        assert_eq!(
            names("SELECT group_concat(username, ',') FROM daily_usage"),
            "next-day"
        );
    }

    #[test]
    fn purges_read_expired_units_as_an_index_range() {
        let conn = migrated();
        // Statistics of a large file: almost every unit finished, few running.
        conn.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO units (cluster_id, uuid, username, project, ended_at, ended_at_ts,
                                last_updated_at)
             SELECT 'c' || (i % 3), i, 'u' || (i % 50), 'p' || (i % 10),
                    '2024-01-01T00:00:00+0000', CASE WHEN i % 100 = 0 THEN 0 ELSE i END,
                    '2024-01-01T00:00:00'
             FROM n;
             ANALYZE;",
        )
        .unwrap();
        for statement in ["SELECT cluster_id, last_updated_at", "DELETE"] {
            let sql = match statement {
                "DELETE" => format!("EXPLAIN QUERY PLAN DELETE FROM units WHERE {EXPIRED_UNITS}"),
                columns => format!("EXPLAIN QUERY PLAN {columns} FROM units WHERE {EXPIRED_UNITS}"),
            };
            let plan: Vec<String> = conn
                .prepare(&sql)
                .unwrap()
                .query_map([1_000], |row| row.get(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(
                plan.iter()
                    .any(|step| step.contains("USING INDEX idx_units_ended_ts")),
                "{sql}: {plan:?}"
            );
        }
    }

    #[test]
    fn purge_renders_the_cutoff_in_the_given_zone() {
        let mut conn = migrated();
        conn.execute_batch(
            "INSERT INTO usage (username, last_updated_at) VALUES ('row', '2024-03-01T00:30:00');",
        )
        .unwrap();
        let transaction = conn.transaction().unwrap();
        // 2024-03-01T00:00:00Z is before the row's wall clock in UTC...
        let utc = purge_expired_rows(&transaction, 1_709_251_200_000, Tz::UTC).unwrap();
        assert_eq!(utc.usage, 0);
        // ...and after it in Paris (01:00 local).
        let paris =
            purge_expired_rows(&transaction, 1_709_251_200_000, chrono_tz::Europe::Paris).unwrap();
        assert_eq!(paris.usage, 1);
    }

    /// The fold as the upsert's SQL functions compute it, one new map per metric.
    fn fold_by_functions(folded: &Metrics, current: &Metrics) -> Metrics {
        let mut out = folded.clone();
        for metric in Metric::ALL {
            if let Some(weight_key) = metric.weight_key() {
                *out.get_mut(metric) = weighted_average_metric_maps(
                    folded.get(metric),
                    current.get(metric),
                    folded.total_time_seconds.get(weight_key).unwrap_or(0.0),
                    current.total_time_seconds.get(weight_key).unwrap_or(0.0),
                );
            }
        }
        for metric in Metric::ALL {
            if metric.weight_key().is_none() {
                *out.get_mut(metric) = add_metric_maps(folded.get(metric), current.get(metric));
            }
        }
        out
    }

    /// Metrics over a few keys per map (weights among them), with values that include
    /// zeros of both signs, negatives, NaN and infinities.
    fn arbitrary_metrics() -> impl proptest::strategy::Strategy<Value = Metrics> {
        use proptest::prelude::*;
        let value = prop_oneof![
            -1e6_f64..1e6,
            Just(0.0),
            Just(-0.0),
            Just(f64::NAN),
            Just(f64::INFINITY),
            proptest::num::f64::ANY,
        ];
        let keys = prop_oneof![
            Just("alloc_cputime"),
            Just("alloc_gputime"),
            Just("global"),
            Just("total"),
            Just("walltime"),
        ];
        proptest::collection::vec((0..Metric::ALL.len(), keys, value), 0..24).prop_map(|entries| {
            let mut metrics = Metrics::default();
            for (metric, key, value) in entries {
                metrics
                    .get_mut(Metric::ALL[metric])
                    .0
                    .insert(key.to_owned(), value);
            }
            metrics
        })
    }

    /// Same bits, NaN payloads aside.
    fn same(left: &Metrics, right: &Metrics) -> bool {
        Metric::ALL.iter().all(|metric| {
            let (left, right) = (&left.get(*metric).0, &right.get(*metric).0);
            left.len() == right.len()
                && left.iter().zip(right).all(|((lk, lv), (rk, rv))| {
                    lk == rk && (lv.to_bits() == rv.to_bits() || (lv.is_nan() && rv.is_nan()))
                })
        })
    }

    proptest::proptest! {
        #[test]
        fn the_fold_in_place_is_the_functions_fold(
            folded in arbitrary_metrics(),
            current in arbitrary_metrics(),
        ) {
            let expected = fold_by_functions(&folded, &current);
            let mut actual = folded.clone();
            fold_usage(&mut actual, &current);
            proptest::prop_assert!(same(&actual, &expected), "{actual:?} != {expected:?}");
        }
    }
}
