//! Which metric keys the units hold, per cluster and per hour of `last_updated_at`: the
//! index behind the key lookup of current usage.
//!
//! Current usage lists, for each metric, the union of the keys of every unit updated in the
//! window (not only the caller's). Read from `units`, that is a `json_each` over every
//! unit of the window: seconds to minutes over a year of a large centre. This table keeps,
//! for each (cluster, metric, hour, key), how many units last updated in that hour hold the
//! key, so whole hours are answered from a few thousand rows and only the two partial
//! hours at the window's edges are read from `units`.
//!
//! The counts are exact: the writer adds a unit's keys to its hour, moves them when a later
//! window updates the unit (its keys become the union of old and new), and removes them
//! when retention purges it. A cluster is only answered from the index once the index is
//! complete for it ([`is_indexed`]): from its first window on a new cluster, or after
//! [`rebuild`] over a database written by another server.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::{log_statement, StorageError};
use crate::model::{Metric, MetricMap, Metrics};

/// The tables of the index, beside the CEEMS schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS metric_key_hours (
    cluster_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    hour TEXT NOT NULL,
    key TEXT NOT NULL,
    units INTEGER NOT NULL,
    PRIMARY KEY (cluster_id, metric, hour, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS metric_key_clusters (
    cluster_id TEXT PRIMARY KEY NOT NULL,
    indexed_at TEXT NOT NULL
);";

/// Length of the hour bucket of a `DT`: `YYYY-MM-DDTHH`.
const HOUR_PREFIX: usize = 13;

/// The hour bucket of a `last_updated_at` text (its first 13 characters, as SQLite's
/// `substr` counts them).
pub fn hour_of(last_updated_at: &str) -> &str {
    match last_updated_at.char_indices().nth(HOUR_PREFIX) {
        Some((end, _)) => &last_updated_at[..end],
        None => last_updated_at,
    }
}

/// Pending changes of the counts, applied in the writer's transaction.
#[derive(Debug, Default)]
pub struct KeyCounts(HashMap<(String, Metric, String), i64>);

impl KeyCounts {
    /// Adds `delta` units for every key of every map of `metrics`, in the hour of
    /// `last_updated_at`.
    pub fn add(&mut self, last_updated_at: &str, metrics: &Metrics, delta: i64) {
        let hour = hour_of(last_updated_at);
        for metric in Metric::ALL {
            self.add_map(hour, metric, metrics.get(metric), delta);
        }
    }

    /// Adds one unit, in the hour of `last_updated_at`, for every key of `incoming` that the
    /// row's maps before this window (`stored`, already counted there) lack.
    pub fn add_new(&mut self, last_updated_at: &str, incoming: &Metrics, stored: Option<&Metrics>) {
        let hour = hour_of(last_updated_at);
        for metric in Metric::ALL {
            let old = stored.map(|metrics| metrics.get(metric));
            for key in incoming.get(metric).0.keys() {
                if old.is_none_or(|map| !map.0.contains_key(key)) {
                    *self
                        .0
                        .entry((hour.to_owned(), metric, key.clone()))
                        .or_insert(0) += 1;
                }
            }
        }
    }

    fn add_map(&mut self, hour: &str, metric: Metric, map: &MetricMap, delta: i64) {
        for key in map.0.keys() {
            *self
                .0
                .entry((hour.to_owned(), metric, key.clone()))
                .or_insert(0) += delta;
        }
    }

    /// Adds `delta` units holding `key` in map `metric`, in hour `hour`.
    pub fn add_key(&mut self, hour: &str, metric: Metric, key: &str, delta: i64) {
        *self
            .0
            .entry((hour.to_owned(), metric, key.to_owned()))
            .or_insert(0) += delta;
    }

    /// Adds the changes of `other`.
    pub fn merge(&mut self, other: KeyCounts) {
        for (key, delta) in other.0 {
            *self.0.entry(key).or_insert(0) += delta;
        }
    }

    /// Writes the changes: counts added, rows that reach zero deleted.
    pub fn apply(&self, conn: &Connection, cluster_id: &str) -> Result<(), StorageError> {
        let mut upsert = conn.prepare_cached(
            "INSERT INTO metric_key_hours (cluster_id, metric, hour, key, units) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (cluster_id, metric, hour, key) DO UPDATE SET units = units + excluded.units",
        )?;
        let mut prune = conn.prepare_cached(
            "DELETE FROM metric_key_hours WHERE cluster_id = ?1 AND metric = ?2 AND hour = ?3 AND key = ?4 AND units <= 0",
        )?;
        for ((hour, metric, key), delta) in &self.0 {
            if *delta == 0 {
                continue;
            }
            upsert.execute(params![cluster_id, metric.column(), hour, key, delta])?;
            if *delta < 0 {
                prune.execute(params![cluster_id, metric.column(), hour, key])?;
            }
        }
        Ok(())
    }
}

/// A table that records the clusters for which an index kept beside `units` is complete.
#[derive(Debug, Clone, Copy)]
pub struct ClusterMarker(pub &'static str);

impl ClusterMarker {
    /// Whether the index is complete for `cluster_id`.
    pub fn is_set(self, conn: &Connection, cluster_id: &str) -> Result<bool, StorageError> {
        Ok(conn
            .prepare_cached(&format!("SELECT 1 FROM {} WHERE cluster_id = ?1", self.0))?
            .exists([cluster_id])?)
    }

    pub(super) fn mark(self, conn: &Connection, cluster_id: &str) -> Result<(), StorageError> {
        conn.prepare_cached(&format!(
            "INSERT OR REPLACE INTO {} (cluster_id, indexed_at)
             VALUES (?1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            self.0
        ))?
        .execute([cluster_id])?;
        Ok(())
    }

    /// Makes sure the index is complete for `cluster_id` before a window of it is
    /// written: a cluster with no units yet starts indexed (empty). Returns whether it is
    /// indexed; a cluster that already has units and no index stays unindexed until it is
    /// rebuilt.
    pub fn start_cluster(self, conn: &Connection, cluster_id: &str) -> Result<bool, StorageError> {
        if self.is_set(conn, cluster_id)? {
            return Ok(true);
        }
        let has_units = conn
            .prepare_cached("SELECT 1 FROM units WHERE cluster_id = ?1 LIMIT 1")?
            .exists([cluster_id])?;
        if has_units {
            return Ok(false);
        }
        self.mark(conn, cluster_id)?;
        Ok(true)
    }
}

/// Whether the key index is complete for a cluster.
pub const MARKER: ClusterMarker = ClusterMarker("metric_key_clusters");

/// Whether the index is complete for `cluster_id`.
pub fn is_indexed(conn: &Connection, cluster_id: &str) -> Result<bool, StorageError> {
    MARKER.is_set(conn, cluster_id)
}

/// Whether units of `cluster_id` were updated after the last window this server wrote
/// (another server wrote to the file since): the index no longer matches them.
pub fn written_by_another_server(
    conn: &Connection,
    cluster_id: &str,
) -> Result<bool, StorageError> {
    let latest_unit: Option<String> = conn.query_row(
        "SELECT MAX(last_updated_at) FROM units WHERE cluster_id = ?1",
        [cluster_id],
        |row| row.get(0),
    )?;
    let last_window: Option<String> = conn
        .query_row(
            "SELECT last_window_end FROM collect_state WHERE cluster_id = ?1",
            [cluster_id],
            |row| row.get(0),
        )
        .optional()?;
    Ok(match (latest_unit, last_window) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(unit), Some(window)) => unit > window,
    })
}

/// Builds the index of `cluster_id` from its units (a database written by a server that
/// did not keep it). One pass over the cluster's units; run by the writer.
pub fn rebuild(conn: &Connection, cluster_id: &str) -> Result<usize, StorageError> {
    conn.execute(
        "DELETE FROM metric_key_hours WHERE cluster_id = ?1",
        [cluster_id],
    )?;
    let mut counts = KeyCounts::default();
    let mut statement = conn.prepare(&format!(
        "SELECT last_updated_at, {} FROM units WHERE cluster_id = ?1",
        metric_columns()
    ))?;
    let mut rows = statement.query([cluster_id])?;
    let mut units = 0;
    while let Some(row) = rows.next()? {
        let last_updated_at: String = row.get::<_, Option<String>>(0)?.unwrap_or_default();
        counts.add(&last_updated_at, &decode_metrics(row, 1), 1);
        units += 1;
    }
    counts.apply(conn, cluster_id)?;
    MARKER.mark(conn, cluster_id)?;
    Ok(units)
}

/// Removes from the index the units that the retention purge is about to delete (those
/// that ended at or before `cutoff_ms`), in every indexed cluster.
pub fn forget_purged_units(conn: &Connection, cutoff_ms: i64) -> Result<(), StorageError> {
    let mut statement = conn.prepare(&format!(
        "SELECT cluster_id, last_updated_at, {} FROM units WHERE {}",
        metric_columns(),
        super::write::EXPIRED_UNITS
    ))?;
    let mut rows = statement.query([cutoff_ms])?;
    let mut per_cluster: HashMap<String, KeyCounts> = HashMap::new();
    while let Some(row) = rows.next()? {
        let cluster_id: String = row.get::<_, Option<String>>(0)?.unwrap_or_default();
        let last_updated_at: String = row.get::<_, Option<String>>(1)?.unwrap_or_default();
        let counts = per_cluster.entry(cluster_id).or_default();
        let metrics = decode_metrics(row, 2);
        counts.add(&last_updated_at, &metrics, -1);
    }
    for (cluster_id, counts) in &per_cluster {
        if is_indexed(conn, cluster_id)? {
            counts.apply(conn, cluster_id)?;
        }
    }
    Ok(())
}

/// The thirteen maps read from `row` starting at column `first`; a NULL or undecodable
/// column is an empty map (it holds no key).
fn decode_metrics(row: &rusqlite::Row<'_>, first: usize) -> Metrics {
    let mut metrics = Metrics::default();
    for (index, metric) in Metric::ALL.into_iter().enumerate() {
        let text: Option<String> = row.get(first + index).ok().flatten();
        if let Some(map) = text
            .as_deref()
            .and_then(|text| MetricMap::decode(text).ok())
        {
            *metrics.get_mut(metric) = map;
        }
    }
    metrics
}

/// `col1, col2, ...` of the thirteen metric columns, in [`Metric::ALL`] order.
pub fn metric_columns() -> String {
    Metric::ALL
        .iter()
        .map(|metric| metric.column())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The stored state of unit (`cluster_id`, `uuid`, `started_at`) before a window updates
/// it: its `last_updated_at` and metric maps, `None` when the row does not exist yet.
pub fn stored_unit(
    conn: &Connection,
    cluster_id: &str,
    uuid: &str,
    started_at: &str,
) -> Result<Option<(String, Metrics)>, StorageError> {
    let sql = format!(
        "SELECT last_updated_at, {} FROM units WHERE cluster_id = ?1 AND uuid = ?2 AND started_at = ?3",
        metric_columns()
    );
    let row = conn
        .prepare_cached(&sql)?
        .query_row([cluster_id, uuid, started_at], |row| {
            let last_updated_at: String = row.get::<_, Option<String>>(0)?.unwrap_or_default();
            Ok((last_updated_at, decode_metrics(row, 1)))
        })
        .optional()?;
    Ok(row)
}

/// The keys of `metric` over the units of `cluster_id` whose `last_updated_at` is in
/// `[from, to]` (text comparison, as the window predicate), from the index for the whole
/// hours and from `units` for the partial hours at both edges. `None` when the cluster is
/// not indexed.
pub fn keys_in_window(
    conn: &Connection,
    cluster_id: &str,
    metric: Metric,
    from: &str,
    to: &str,
) -> Result<Option<Vec<String>>, StorageError> {
    if !is_indexed(conn, cluster_id)? {
        return Ok(None);
    }
    let mut keys = std::collections::BTreeSet::new();
    if from > to {
        return Ok(Some(Vec::new()));
    }
    let from_hour = hour_of(from);
    let to_hour = hour_of(to);
    let column = metric.column();
    // Each edge is one index range with a single lower and a single upper bound: SQLite
    // uses only one bound of each side, and the wrong one would scan the whole window.
    let each_key = format!(
        "SELECT DISTINCT k.key FROM units, json_each(CASE WHEN json_valid({column}) AND json_type({column}) = 'object' THEN {column} ELSE '{{}}' END) k \
         WHERE cluster_id = ?1 AND last_updated_at"
    );
    let mut scan = |bounds: &str, low: &str, high: &str| -> Result<(), StorageError> {
        let mut statement = conn.prepare_cached(&format!("{each_key} {bounds}"))?;
        let mut rows = statement.query(params![cluster_id, low, high])?;
        log_statement(rows.as_ref());
        while let Some(row) = rows.next()? {
            keys.insert(row.get::<_, String>(0)?);
        }
        Ok(())
    };
    if from_hour >= to_hour {
        // One hour (or less): read it all from units.
        scan("BETWEEN ?2 AND ?3", from, to)?;
    } else {
        // [from, next hour) and [start of to's hour, to]: both inside the window, since
        // to's hour is at least the hour after from's.
        scan(
            ">= ?2 AND last_updated_at < ?3",
            from,
            &after_prefix(from_hour),
        )?;
        scan("BETWEEN ?2 AND ?3", to_hour, to)?;
        let mut whole = conn.prepare_cached(
            "SELECT DISTINCT key FROM metric_key_hours \
             WHERE cluster_id = ?1 AND metric = ?2 AND hour > ?3 AND hour < ?4 AND units > 0",
        )?;
        let mut rows = whole.query(params![cluster_id, column, from_hour, to_hour])?;
        log_statement(rows.as_ref());
        while let Some(row) = rows.next()? {
            keys.insert(row.get::<_, String>(0)?);
        }
    }
    Ok(Some(keys.into_iter().collect()))
}

/// The smallest text greater than every text that starts with `prefix` (its last character
/// incremented), or a text above every `DT` when there is none.
pub(super) fn after_prefix(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(u32::from(last) + 1) {
            chars.push(next);
            return chars.into_iter().collect();
        }
    }
    "\u{10FFFF}".to_owned()
}

/// The clusters that hold units, read by skipping along the `(cluster_id, ...)` index
/// rather than scanning every unit.
pub fn clusters_with_units(conn: &Connection) -> Result<Vec<String>, StorageError> {
    let mut clusters = Vec::new();
    let mut next: Option<String> = conn
        .query_row("SELECT MIN(cluster_id) FROM units", [], |row| row.get(0))
        .optional()?
        .flatten();
    let mut statement =
        conn.prepare_cached("SELECT MIN(cluster_id) FROM units WHERE cluster_id > ?1")?;
    while let Some(cluster_id) = next {
        next = statement.query_row([&cluster_id], |row| row.get(0))?;
        clusters.push(cluster_id);
    }
    Ok(clusters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::time::format_dt;
    use crate::model::Unit;
    use crate::storage::test_support::{database, write_at};
    use crate::storage::write::purge_expired_rows;

    const CLUSTER: &str = "c1";
    const EPOCH: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z

    /// A unit whose maps hold a key set that depends on `variant`: GPU maps on some,
    /// a key that only some units have, empty maps on others.
    fn unit(id: u64, variant: u64, started_s: i64, ended_s: Option<i64>) -> Unit {
        let map = |entries: &[(&str, f64)]| {
            MetricMap(entries.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
        };
        let mut metrics = Metrics {
            total_time_seconds: map(&[("walltime", 60.0), ("alloc_cputime", 120.0)]),
            avg_cpu_usage: map(&[("global", 50.0)]),
            ..Metrics::default()
        };
        if variant % 3 == 0 {
            metrics.avg_gpu_usage = map(&[("global", 20.0)]);
            metrics.total_gpu_energy_usage_kwh = map(&[("total", 0.5)]);
        }
        if variant % 5 == 0 {
            metrics.total_io_read_stats = map(&[(format!("k{}", variant % 7).as_str(), 1.0)]);
        }
        Unit {
            cluster_id: CLUSTER.into(),
            resource_manager: "slurm".into(),
            uuid: id.to_string(),
            project: format!("p{}", id % 3),
            username: format!("u{}", id % 4),
            started_at: format_dt(started_s, chrono_tz::UTC),
            started_at_ts: started_s * 1000,
            ended_at: ended_s.map_or("Unknown".into(), |s| format_dt(s, chrono_tz::UTC)),
            ended_at_ts: ended_s.map_or(0, |s| s * 1000),
            metrics,
            ..Unit::default()
        }
    }

    fn write(conn: &mut Connection, end_s: i64, units: &[Unit]) {
        write_at(conn, CLUSTER, end_s, units, &[]);
    }

    fn scanned(conn: &Connection, metric: Metric, from: &str, to: &str) -> Vec<String> {
        let column = metric.column();
        let mut statement = conn
            .prepare(&format!(
                "SELECT DISTINCT k.key FROM units, json_each(CASE WHEN json_valid({column}) AND json_type({column}) = 'object' THEN {column} ELSE '{{}}' END) k \
                 WHERE cluster_id = ?1 AND last_updated_at BETWEEN ?2 AND ?3 ORDER BY k.key"
            ))
            .unwrap();
        statement
            .query_map(params![CLUSTER, from, to], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn assert_matches_scan(conn: &Connection) {
        // Windows of many sizes and offsets, on and off hour boundaries.
        let bounds: Vec<i64> = (0..18).map(|i| i * 2_711 - 3_600).collect();
        for &from in &bounds {
            for &to in &bounds {
                let from_dt = format_dt(EPOCH + from, chrono_tz::UTC);
                let to_dt = format_dt(EPOCH + to, chrono_tz::UTC);
                for metric in Metric::ALL {
                    let indexed = keys_in_window(conn, CLUSTER, metric, &from_dt, &to_dt)
                        .unwrap()
                        .expect("the cluster is indexed");
                    assert_eq!(
                        indexed,
                        scanned(conn, metric, &from_dt, &to_dt),
                        "{metric:?} in [{from_dt}, {to_dt}]"
                    );
                }
            }
        }
    }

    #[test]
    fn whole_hours_and_edges_give_the_keys_a_scan_gives() {
        let mut conn = database();
        // Windows of 20 minutes over a day: units end in them, some run across several
        // windows (their keys move to later hours and grow), some are purged.
        let mut next_id = 0;
        let mut running: Vec<Unit> = Vec::new();
        for window in 0..36 {
            let end = EPOCH + (window + 1) * 1_200;
            let mut units = Vec::new();
            for _ in 0..5 {
                next_id += 1;
                units.push(unit(next_id, next_id, end - 600, Some(end - 60)));
            }
            if window % 4 == 0 {
                next_id += 1;
                running.push(unit(next_id, next_id, end - 900, None));
            }
            // Running units are seen again every window with a new key now and then.
            for (index, job) in running.iter_mut().enumerate() {
                if (window + index as i64) % 3 == 0 {
                    job.metrics.total_ingress_stats =
                        MetricMap([(format!("n{window}"), 1.0)].into_iter().collect());
                }
                units.push(job.clone());
            }
            if window % 6 == 5 {
                // The oldest running job ends.
                let mut ended = running.remove(0);
                ended.ended_at = format_dt(end - 1, chrono_tz::UTC);
                ended.ended_at_ts = (end - 1) * 1000;
                units.push(ended);
            }
            write(&mut conn, end, &units);
        }
        assert_matches_scan(&conn);

        let transaction = conn.transaction().unwrap();
        purge_expired_rows(&transaction, (EPOCH + 15_000) * 1000, chrono_tz::UTC).unwrap();
        transaction.commit().unwrap();
        assert_matches_scan(&conn);

        // A rebuild from the units gives the same index.
        let before: Vec<(String, String, String, String, i64)> = dump(&conn);
        rebuild(&conn, CLUSTER).unwrap();
        assert_eq!(dump(&conn), before);
    }

    fn dump(conn: &Connection) -> Vec<(String, String, String, String, i64)> {
        let mut statement = conn
            .prepare("SELECT cluster_id, metric, hour, key, units FROM metric_key_hours ORDER BY 1, 2, 3, 4")
            .unwrap();
        statement
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_cluster_with_units_but_no_index_is_not_answered_until_rebuilt() {
        let mut conn = database();
        write(
            &mut conn,
            EPOCH + 3_600,
            &[unit(1, 3, EPOCH, Some(EPOCH + 60))],
        );
        // As if another server had written the units: no index.
        conn.execute_batch("DELETE FROM metric_key_hours; DELETE FROM metric_key_clusters;")
            .unwrap();
        let (from, to) = (
            format_dt(EPOCH, chrono_tz::UTC),
            format_dt(EPOCH + 7_200, chrono_tz::UTC),
        );
        assert_eq!(
            keys_in_window(&conn, CLUSTER, Metric::AvgGpuUsage, &from, &to).unwrap(),
            None
        );
        assert!(!MARKER.start_cluster(&conn, CLUSTER).unwrap());
        // Windows written meanwhile do not pretend to index it.
        write(
            &mut conn,
            EPOCH + 7_200,
            &[unit(2, 1, EPOCH, Some(EPOCH + 3_700))],
        );
        assert!(!is_indexed(&conn, CLUSTER).unwrap());
        assert_eq!(rebuild(&conn, CLUSTER).unwrap(), 2);
        assert_eq!(
            keys_in_window(&conn, CLUSTER, Metric::AvgGpuUsage, &from, &to).unwrap(),
            Some(vec!["global".to_owned()])
        );
        assert_matches_scan(&conn);
    }

    #[test]
    fn units_updated_after_the_last_window_mean_another_server_wrote() {
        let mut conn = database();
        assert!(!written_by_another_server(&conn, CLUSTER).unwrap());
        write(
            &mut conn,
            EPOCH + 3_600,
            &[unit(1, 3, EPOCH, Some(EPOCH + 60))],
        );
        assert!(!written_by_another_server(&conn, CLUSTER).unwrap());
        conn.execute(
            "UPDATE units SET last_updated_at = ?1",
            [format_dt(EPOCH + 7_200, chrono_tz::UTC)],
        )
        .unwrap();
        assert!(written_by_another_server(&conn, CLUSTER).unwrap());
    }

    #[test]
    fn hour_buckets_are_the_first_thirteen_characters() {
        assert_eq!(hour_of("2024-01-01T05:59:59"), "2024-01-01T05");
        assert_eq!(hour_of("short"), "short");
        assert_eq!(after_prefix("2024-01-01T05"), "2024-01-01T06");
        assert_eq!(after_prefix("2024-01-01T09"), "2024-01-01T0:");
        assert!("2024-01-01T09:59:59" < after_prefix("2024-01-01T09").as_str());
    }
}
