//! Bulk load of a new database: many windows of one cluster written with the result the
//! update loop's [`write_window`](super::window::write_window) would leave, window after
//! window, at the speed of plain inserts.
//!
//! What makes `write_window` slow for a year of a large centre is paid per window and per
//! row: an upsert and two lookups per unit, every secondary index kept up to date, two
//! usage upserts per (user, project) that decode and re-encode thirteen stored maps, the
//! bucket hours re-read from `units`, their days and months derived again. Here:
//!
//! - the maps are encoded and the window's usage folded by [`BulkWindow::new`], on the
//!   caller's thread (a generator makes the next window while this one is written);
//! - units are appended with a plain `INSERT`, every index of `units` (the CEEMS ones too)
//!   dropped at the start and built once at the end;
//! - lifetime and daily usage are folded in memory with the upsert's arithmetic on the
//!   stored text (each window's fold is rounded as its parameters would be, each result
//!   as the stored row would be), and inserted once;
//! - hour buckets are summed from the units as they are inserted, in the order a refresh
//!   reads them, and days and months derived once at the end;
//! - the key index is counted in memory and written once; the resume point records every
//!   window.
//!
//! The file is written without a journal: a load that fails leaves a file to throw away.
//! Requirements: `units` is empty, windows come in ascending end order, and a unit appears
//! in one window only (its final state); a uuid seen twice fails [`BulkLoader::finish`].

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};

use super::functions::register_metric_map_functions;
use super::metric_keys::{self, hour_of, KeyCounts};
use super::pool::refresh_planner_statistics;
use super::usage_rollup::{BucketUnit, HourBuckets};
use super::write::{fold_usage, upsert_project, upsert_user, WindowUsage};
use super::{Database, StorageError, DATABASE_FILE_NAME};
use crate::model::json::stored_metric_value;
use crate::model::{Metric, Metrics, Project, Unit, Usage, User};

/// Columns of a unit row, in the order [`BulkLoader`] binds them.
const UNIT_COLUMNS: [&str; 17] = [
    "resource_manager",
    "cluster_id",
    "uuid",
    "name",
    "project",
    "groupname",
    "username",
    "created_at",
    "started_at",
    "ended_at",
    "created_at_ts",
    "started_at_ts",
    "ended_at_ts",
    "elapsed",
    "state",
    "allocation",
    "tags",
];

/// A unit with its thirteen maps encoded as they are stored.
struct EncodedUnit {
    unit: Unit,
    maps: [String; 13],
}

/// One window of a cluster, prepared for [`BulkLoader::write`]: maps encoded, usage
/// folded, keys counted.
pub struct BulkWindow {
    cluster_id: String,
    end_ms: i64,
    end_dt: String,
    day_key_dt: String,
    units: Vec<EncodedUnit>,
    /// The window's usage per (user, project), in first-seen order.
    usage: Vec<WindowPair>,
    key_counts: KeyCounts,
    users: Vec<User>,
    projects: Vec<Project>,
}

impl BulkWindow {
    /// Prepares the window of `cluster_id` ending at `end_ms` (`end_dt` in the configured
    /// zone, `day_key_dt` its `daily_usage` day). CPU only: runs on any thread. Units with
    /// an empty uuid are skipped, as the update loop skips them.
    pub fn new(
        cluster_id: &str,
        end_ms: i64,
        end_dt: String,
        day_key_dt: String,
        units: Vec<Unit>,
        users: Vec<User>,
        projects: Vec<Project>,
    ) -> Result<Self, StorageError> {
        let units: Vec<Unit> = units
            .into_iter()
            .filter(|unit| !unit.uuid.is_empty())
            .collect();
        if let Some(stray) = units.iter().find(|unit| unit.cluster_id != cluster_id) {
            return Err(StorageError::Other(format!(
                "bulk load of cluster {cluster_id:?}: unit {} belongs to {:?}",
                stray.uuid, stray.cluster_id
            )));
        }
        // Keys counted and usage folded with borrowed names: a window of a large centre
        // holds about as many (user, project) pairs as units.
        let mut keys: HashMap<(Metric, &str), i64> = HashMap::new();
        let mut usage = WindowUsage::default();
        for unit in &units {
            for metric in Metric::ALL {
                for key in unit.metrics.get(metric).0.keys() {
                    *keys.entry((metric, key.as_str())).or_insert(0) += 1;
                }
            }
            usage.add(unit, i64::from(unit.started_at_ts > 0));
        }
        let mut key_counts = KeyCounts::default();
        let hour = hour_of(&end_dt);
        for ((metric, key), count) in keys {
            key_counts.add_key(hour, metric, key, count);
        }
        let usage = usage.into_rows();
        let encoded = units
            .into_iter()
            .map(|unit| EncodedUnit {
                maps: Metric::ALL.map(|metric| unit.metrics.get(metric).encode()),
                unit,
            })
            .collect();
        let usage = usage
            .into_iter()
            .map(|usage| {
                let mut stored = usage.metrics.clone();
                round_to_stored(&mut stored);
                WindowPair { usage, stored }
            })
            .collect();
        Ok(Self {
            cluster_id: cluster_id.to_owned(),
            end_ms,
            end_dt,
            day_key_dt,
            units: encoded,
            usage,
            key_counts,
            users,
            projects,
        })
    }

    /// Units in the window.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }
}

/// One (user, project) of a window: its units folded, as the upsert's parameters carry
/// them before they are encoded, and as the upsert's SQL reads the encoded text back.
struct WindowPair {
    usage: Usage,
    stored: Metrics,
}

/// Rounds every value of `metrics` to what its stored text reads back as
/// ([`stored_metric_value`]): the value the next upsert's SQL functions read from the row.
fn round_to_stored(metrics: &mut Metrics) {
    for metric in Metric::ALL {
        for value in metrics.get_mut(metric).0.values_mut() {
            *value = stored_metric_value(*value);
        }
    }
}

/// A usage row being folded, and the columns the upsert keeps.
struct UsageRow {
    /// The row's last fold before it is stored: its text is the stored text, its values
    /// rounded to that text ([`round_to_stored`]) are what the next fold reads.
    usage: Usage,
    num_updates: i64,
    last_updated_at: String,
}

/// Usage rows in first-seen order, by user and project.
#[derive(Default)]
struct UsageRows {
    rows: Vec<UsageRow>,
    index: HashMap<String, HashMap<String, usize>>,
}

impl UsageRows {
    /// Adds one window's usage as the upsert would: a new row as it comes, an existing
    /// one (as stored) folded with the window's (as stored), counts added,
    /// `last_updated_at` moved to `last_updated_at`.
    fn add(&mut self, pair: &WindowPair, last_updated_at: &str) {
        let usage = &pair.usage;
        let found = self
            .index
            .get(usage.username.as_str())
            .and_then(|projects| projects.get(usage.project.as_str()));
        match found {
            Some(&index) => {
                let row = &mut self.rows[index];
                round_to_stored(&mut row.usage.metrics);
                fold_usage(&mut row.usage.metrics, &pair.stored);
                row.usage.num_units += usage.num_units;
                row.num_updates += 1;
                last_updated_at.clone_into(&mut row.last_updated_at);
            }
            None => {
                let index = self.rows.len();
                match self.index.get_mut(usage.username.as_str()) {
                    Some(projects) => {
                        projects.insert(usage.project.clone(), index);
                    }
                    None => {
                        self.index.insert(
                            usage.username.clone(),
                            HashMap::from([(usage.project.clone(), index)]),
                        );
                    }
                }
                self.rows.push(UsageRow {
                    usage: usage.clone(),
                    num_updates: 1,
                    last_updated_at: last_updated_at.to_owned(),
                });
            }
        }
    }

    /// Inserts the rows into `table` (`usage` or `daily_usage`) and forgets them. Returns
    /// how many rows it inserted.
    fn insert_into(&mut self, conn: &Connection, table: &str) -> Result<u64, StorageError> {
        let maps: Vec<&str> = Metric::ALL.iter().map(|metric| metric.column()).collect();
        let placeholders = vec!["?"; 8 + maps.len()].join(",");
        let count = self.rows.len() as u64;
        let mut statement = conn.prepare_cached(&format!(
            "INSERT INTO {table} (resource_manager, cluster_id, num_units, project, groupname, username, num_updates, last_updated_at, {})
             VALUES ({placeholders})",
            maps.join(", ")
        ))?;
        for row in self.rows.drain(..) {
            let usage = &row.usage;
            statement.raw_bind_parameter(1, &usage.resource_manager)?;
            statement.raw_bind_parameter(2, &usage.cluster_id)?;
            statement.raw_bind_parameter(3, usage.num_units)?;
            statement.raw_bind_parameter(4, &usage.project)?;
            statement.raw_bind_parameter(5, &usage.groupname)?;
            statement.raw_bind_parameter(6, &usage.username)?;
            statement.raw_bind_parameter(7, row.num_updates)?;
            statement.raw_bind_parameter(8, &row.last_updated_at)?;
            for (offset, metric) in Metric::ALL.iter().enumerate() {
                statement.raw_bind_parameter(9 + offset, usage.metrics.get(*metric).encode())?;
            }
            statement.raw_execute()?;
        }
        self.index.clear();
        Ok(count)
    }
}

/// What a bulk load wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkReport {
    pub windows: u64,
    pub units: u64,
    pub usage_rows: u64,
    pub daily_usage_rows: u64,
}

/// A bulk load of one cluster into a new database (see the module documentation).
pub struct BulkLoader {
    conn: Connection,
    cluster_id: String,
    /// The `units` indexes dropped at the start, as `CREATE` statements.
    dropped_indexes: Vec<String>,
    usage: UsageRows,
    daily: UsageRows,
    day: Option<String>,
    key_counts: KeyCounts,
    buckets: HourBuckets,
    last_window: Option<(i64, String)>,
    report: BulkReport,
}

impl BulkLoader {
    /// Creates `<data_path>/ceems.db` with the full schema (as the server would) and
    /// prepares it for the load of `cluster_id`. Fails when `units` holds any row.
    pub fn open(data_path: &Path, cluster_id: &str) -> Result<Self, StorageError> {
        drop(Database::open(data_path)?);
        let file_path =
            std::path::absolute(data_path.join(DATABASE_FILE_NAME)).map_err(|source| {
                StorageError::Io {
                    path: data_path.to_owned(),
                    source,
                }
            })?;
        let conn = Connection::open_with_flags(
            &file_path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        register_metric_map_functions(&conn)?;
        let journal_mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "OFF", |row| row.get(0))?;
        if !journal_mode.eq_ignore_ascii_case("off") {
            return Err(StorageError::Other(format!(
                "{}: journal_mode is {journal_mode:?}; is another process using the file?",
                file_path.display()
            )));
        }
        conn.execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE; PRAGMA synchronous = OFF;
             PRAGMA cache_size = -1048576; PRAGMA temp_store = MEMORY;",
        )?;
        let has_units = conn.prepare("SELECT 1 FROM units LIMIT 1")?.exists([])?;
        if has_units {
            return Err(StorageError::Other(format!(
                "{}: a bulk load needs a database without units",
                file_path.display()
            )));
        }
        let dropped_indexes = {
            let mut statement = conn.prepare(
                "SELECT name, sql FROM sqlite_master
                 WHERE type = 'index' AND tbl_name = 'units' AND sql IS NOT NULL ORDER BY rowid",
            )?;
            let indexes = statement
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            for (name, _) in &indexes {
                conn.execute_batch(&format!("DROP INDEX \"{}\"", name.replace('"', "\"\"")))?;
            }
            indexes.into_iter().map(|(_, sql)| sql).collect()
        };
        let buckets = HourBuckets::start(&conn, cluster_id)?;
        Ok(Self {
            conn,
            cluster_id: cluster_id.to_owned(),
            dropped_indexes,
            usage: UsageRows::default(),
            daily: UsageRows::default(),
            day: None,
            key_counts: KeyCounts::default(),
            buckets,
            last_window: None,
            report: BulkReport::default(),
        })
    }

    /// Writes one window, in one transaction.
    pub fn write(&mut self, window: BulkWindow) -> Result<(), StorageError> {
        if window.cluster_id != self.cluster_id {
            return Err(StorageError::Other(format!(
                "bulk load of cluster {:?}: a window of {:?}",
                self.cluster_id, window.cluster_id
            )));
        }
        if let Some((last_end_ms, _)) = &self.last_window {
            if window.end_ms <= *last_end_ms {
                return Err(StorageError::Other(format!(
                    "bulk load: window ending at {} ms after one ending at {last_end_ms} ms",
                    window.end_ms
                )));
            }
        }
        let transaction = self.conn.transaction()?;
        if self.day.as_deref() != Some(window.day_key_dt.as_str()) {
            self.report.daily_usage_rows += self.daily.insert_into(&transaction, "daily_usage")?;
            self.day = Some(window.day_key_dt.clone());
        }
        insert_units(&transaction, &window.units, &window.end_dt)?;
        let hour = hour_of(&window.end_dt);
        for encoded in &window.units {
            let unit = &encoded.unit;
            self.buckets.add(
                &transaction,
                hour,
                &BucketUnit {
                    cluster_id: &unit.cluster_id,
                    resource_manager: &unit.resource_manager,
                    username: Some(&unit.username),
                    project: Some(&unit.project),
                    groupname: &unit.groupname,
                    terminated: unit.ended_at_ts > 0,
                    last_updated_at: &window.end_dt,
                    columns: std::array::from_fn(|index| Some(encoded.maps[index].as_str())),
                    malformed: false,
                },
            )?;
        }
        for pair in &window.usage {
            self.usage.add(pair, &window.end_dt);
            self.daily.add(pair, &window.day_key_dt);
        }
        self.key_counts.merge(window.key_counts);
        for user in &window.users {
            upsert_user(&transaction, user, &window.end_dt)?;
        }
        for project in &window.projects {
            upsert_project(&transaction, project, &window.end_dt)?;
        }
        transaction.commit()?;
        self.report.windows += 1;
        self.report.units += window.units.len() as u64;
        self.last_window = Some((window.end_ms, window.end_dt));
        Ok(())
    }

    /// Writes usage, daily usage, the key index, the buckets' last hour, days and months and
    /// the resume point, builds the dropped indexes, and leaves the file in WAL mode as the
    /// server opens it.
    pub fn finish(mut self) -> Result<BulkReport, StorageError> {
        let transaction = self.conn.transaction()?;
        self.report.usage_rows = self.usage.insert_into(&transaction, "usage")?;
        self.report.daily_usage_rows += self.daily.insert_into(&transaction, "daily_usage")?;
        self.key_counts.apply(&transaction, &self.cluster_id)?;
        metric_keys::MARKER.mark(&transaction, &self.cluster_id)?;
        self.buckets.finish(&transaction)?;
        if let Some((end_ms, end_dt)) = &self.last_window {
            record_windows(
                &transaction,
                &self.cluster_id,
                *end_ms,
                end_dt,
                self.report.windows,
            )?;
        }
        for sql in &self.dropped_indexes {
            transaction.execute_batch(sql).map_err(|error| {
                StorageError::Other(format!(
                    "bulk load: {sql}: {error} (a unit written in more than one window?)"
                ))
            })?;
        }
        let twice: Option<String> = transaction
            .query_row(
                "SELECT uuid FROM units GROUP BY cluster_id, uuid HAVING COUNT(*) > 1 LIMIT 1",
                [],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(uuid) = twice {
            return Err(StorageError::Other(format!(
                "bulk load: unit {uuid} was written in more than one window"
            )));
        }
        transaction.commit()?;
        refresh_planner_statistics(&self.conn)?;
        self.conn
            .execute_batch("PRAGMA locking_mode = NORMAL; PRAGMA journal_mode = WAL;")?;
        Ok(self.report)
    }
}

/// Appends `units` with `last_updated_at` = `end_dt`, `num_updates` = 1 and `ignore` = 0.
fn insert_units(
    transaction: &Transaction<'_>,
    units: &[EncodedUnit],
    end_dt: &str,
) -> Result<(), StorageError> {
    let maps: Vec<&str> = Metric::ALL.iter().map(|metric| metric.column()).collect();
    let columns = UNIT_COLUMNS.len() + maps.len() + 3;
    let mut statement = transaction.prepare_cached(&format!(
        "INSERT INTO units ({}, {}, ignore, num_updates, last_updated_at) VALUES ({})",
        UNIT_COLUMNS.join(", "),
        maps.join(", "),
        vec!["?"; columns].join(",")
    ))?;
    for EncodedUnit { unit, maps } in units {
        let texts = [
            &unit.resource_manager,
            &unit.cluster_id,
            &unit.uuid,
            &unit.name,
            &unit.project,
            &unit.groupname,
            &unit.username,
            &unit.created_at,
            &unit.started_at,
            &unit.ended_at,
        ];
        for (offset, text) in texts.into_iter().enumerate() {
            statement.raw_bind_parameter(1 + offset, text)?;
        }
        statement.raw_bind_parameter(11, unit.created_at_ts)?;
        statement.raw_bind_parameter(12, unit.started_at_ts)?;
        statement.raw_bind_parameter(13, unit.ended_at_ts)?;
        statement.raw_bind_parameter(14, &unit.elapsed)?;
        statement.raw_bind_parameter(15, &unit.state)?;
        statement.raw_bind_parameter(16, unit.allocation.as_json())?;
        statement.raw_bind_parameter(17, unit.tags.as_json())?;
        for (offset, text) in maps.iter().enumerate() {
            statement.raw_bind_parameter(18 + offset, text)?;
        }
        statement.raw_bind_parameter(31, 0_i64)?;
        statement.raw_bind_parameter(32, 1_i64)?;
        statement.raw_bind_parameter(33, end_dt)?;
        statement.raw_execute()?;
    }
    Ok(())
}

/// The resume point after `windows` windows, the last ending at `end_ms` (`end_dt`).
fn record_windows(
    conn: &Connection,
    cluster_id: &str,
    end_ms: i64,
    end_dt: &str,
    windows: u64,
) -> Result<(), StorageError> {
    conn.execute(
        "INSERT INTO collect_state (cluster_id, last_window_end_ts, last_window_end, num_windows, updated_at)
         VALUES (?1, ?2, ?3, ?4, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
        params![cluster_id, end_ms, end_dt, windows as i64],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rusqlite::types::Value;

    use super::*;
    use crate::model::time::format_dt;
    use crate::model::List;
    use crate::model::MetricMap;
    use crate::pipeline::day_key;
    use crate::storage::flat_json::{self, Number};
    use crate::storage::test_support::{database, random_unit, Numbers};
    use crate::storage::window::{write_window, WindowRows};

    const CLUSTER: &str = "c1";
    const EPOCH: i64 = 1_706_652_000; // 2024-01-30T22:00:00Z

    /// Window ends (seconds after `EPOCH`): two in one hour, several hours apart, two in
    /// one day, across midnight and over three days.
    const ENDS: [i64; 9] = [
        900, 1_800, 7_200, 14_400, 16_200, 43_200, 90_000, 150_000, 260_000,
    ];

    /// A window's end (epoch seconds), units, users and projects.
    type TestWindow = (i64, Vec<Unit>, Vec<User>, Vec<Project>);

    fn windows() -> Vec<TestWindow> {
        let mut numbers = Numbers::new(11);
        let mut uuid = 0;
        let mut start = EPOCH - 3_600;
        ENDS.iter()
            .enumerate()
            .map(|(index, offset)| {
                let end = EPOCH + offset;
                let count = 5 + numbers.next(40);
                let units = (0..count)
                    .map(|_| {
                        uuid += 1;
                        let started = start + numbers.next(600) as i64;
                        let ended = (numbers.next(4) > 0).then(|| end - numbers.next(300) as i64);
                        random_unit(&mut numbers, CLUSTER, uuid, started, ended)
                    })
                    .collect();
                start = end;
                let (users, projects) = if index % 4 == 3 {
                    (
                        vec![User {
                            uid: "1000".into(),
                            cluster_id: CLUSTER.into(),
                            resource_manager: "slurm".into(),
                            name: "u1".into(),
                            projects: List::from_strings(&["p1", "p2"]),
                            tags: List::default(),
                        }],
                        vec![Project {
                            uid: String::new(),
                            cluster_id: CLUSTER.into(),
                            resource_manager: "slurm".into(),
                            name: format!("p{index}"),
                            users: List::from_strings(&["u1"]),
                            tags: List::default(),
                        }],
                    )
                } else {
                    (Vec::new(), Vec::new())
                };
                (end, units, users, projects)
            })
            .collect()
    }

    /// The window of `cluster_id` ending at `end_s` (UTC) with `units`.
    fn utc_window(
        cluster_id: &str,
        end_s: i64,
        units: Vec<Unit>,
    ) -> Result<BulkWindow, StorageError> {
        BulkWindow::new(
            cluster_id,
            end_s * 1000,
            format_dt(end_s, chrono_tz::UTC),
            day_key(end_s * 1000, chrono_tz::UTC),
            units,
            Vec::new(),
            Vec::new(),
        )
    }

    fn dump(conn: &Connection, sql: &str, skipped: &[&str]) -> Vec<Vec<(String, Value)>> {
        let mut statement = conn.prepare(sql).unwrap();
        let names: Vec<String> = statement.column_names().map(str::to_owned).collect();
        let rows = statement
            .query_map([], |row| {
                let mut values = Vec::new();
                for (index, name) in names.iter().enumerate() {
                    if !skipped.contains(&name.as_str()) {
                        values.push((name.clone(), row.get::<_, Value>(index)?));
                    }
                }
                Ok(values)
            })
            .unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn a_bulk_load_stores_what_the_windows_would() {
        let mut reference = database();
        for (end, units, users, projects) in windows() {
            let end_dt = format_dt(end, chrono_tz::UTC);
            let day_key_dt = day_key(end * 1000, chrono_tz::UTC);
            write_window(
                &mut reference,
                &WindowRows {
                    cluster_id: CLUSTER,
                    end_ms: end * 1000,
                    end_dt: &end_dt,
                    day_key_dt: &day_key_dt,
                    units: &units,
                    ignored: &BTreeSet::new(),
                    users: &users,
                    projects: &projects,
                },
            )
            .unwrap();
        }

        let dir = tempfile::tempdir().unwrap();
        let mut loader = BulkLoader::open(dir.path(), CLUSTER).unwrap();
        let mut count = 0;
        for (end, units, users, projects) in windows() {
            count += units.len() as u64;
            let window = BulkWindow::new(
                CLUSTER,
                end * 1000,
                format_dt(end, chrono_tz::UTC),
                day_key(end * 1000, chrono_tz::UTC),
                units,
                users,
                projects,
            )
            .unwrap();
            loader.write(window).unwrap();
        }
        let report = loader.finish().unwrap();
        assert_eq!(report.windows, ENDS.len() as u64);
        assert_eq!(report.units, count);
        let bulk = Connection::open(dir.path().join(DATABASE_FILE_NAME)).unwrap();

        let journal_mode: String = bulk
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(journal_mode, "wal");
        let tables: [(&str, &[&str]); 10] = [
            ("SELECT * FROM units ORDER BY id", &[]),
            ("SELECT * FROM usage ORDER BY id", &[]),
            ("SELECT * FROM daily_usage ORDER BY id", &[]),
            ("SELECT * FROM usage_buckets ORDER BY cluster_id, project, span, bucket, username, terminated", &[]),
            ("SELECT * FROM metric_key_hours ORDER BY cluster_id, metric, hour, key", &[]),
            ("SELECT * FROM users ORDER BY id", &[]),
            ("SELECT * FROM projects ORDER BY id", &[]),
            ("SELECT * FROM collect_state", &["updated_at"]),
            ("SELECT cluster_id FROM metric_key_clusters UNION ALL SELECT cluster_id FROM usage_bucket_clusters", &[]),
            ("SELECT name, sql FROM sqlite_master WHERE tbl_name = 'units' ORDER BY name", &[]),
        ];
        for (sql, skipped) in tables {
            let expected = dump(&reference, sql, skipped);
            assert!(!expected.is_empty(), "{sql}: no rows to compare");
            assert_eq!(dump(&bulk, sql, skipped), expected, "{sql}");
        }
    }

    /// What the SQL functions read back from the stored text of `value`.
    fn read_back(value: f64) -> f64 {
        let text = MetricMap::from_pairs(&[("k", value)]).encode();
        match flat_json::numbers(&text).as_deref() {
            Some([(_, Number::Int(integer))]) => *integer as f64,
            Some([(_, Number::Real(real))]) => *real,
            _ => MetricMap::decode(&text).unwrap().get("k").unwrap(),
        }
    }

    #[test]
    fn stored_values_are_what_the_text_reads_back_as() {
        // Around the largest 8-decimal value read back by arithmetic (N = 2^53).
        let edge: f64 = 9_007_199_254_740_992.0 / 1e8;
        let around_edge = [
            f64::from_bits(edge.to_bits() - 1),
            edge,
            f64::from_bits(edge.to_bits() + 1),
        ];
        for value in around_edge.into_iter().chain([
            0.0,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            -5e-9,
            5e-9,
            2.999_999_999,
            -2.999_999_999,
            0.5,
            90_071_992.547_409_9,
            90_071_992.547_409_93,
            1e15 + 0.5,
            4_503_599_627_370_495.5,
            9_007_199_254_740_993.0,
            1e20,
            -1e300,
            f64::MAX,
        ]) {
            assert_eq!(
                stored_metric_value(value).to_bits(),
                read_back(value).to_bits(),
                "{value:e}"
            );
        }
    }

    fn stored_as_read_back(value: f64) -> Result<(), proptest::test_runner::TestCaseError> {
        proptest::prop_assert_eq!(
            stored_metric_value(value).to_bits(),
            read_back(value).to_bits(),
            "{:e}",
            value
        );
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn any_stored_value_is_what_the_text_reads_back_as(bits in proptest::num::u64::ANY) {
            stored_as_read_back(f64::from_bits(bits))?;
        }

        #[test]
        fn metric_sized_stored_values_are_what_the_text_reads_back_as(value in -1e13_f64..1e13) {
            stored_as_read_back(value)?;
        }
    }

    #[test]
    fn a_unit_in_two_windows_fails_the_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut loader = BulkLoader::open(dir.path(), CLUSTER).unwrap();
        let mut numbers = Numbers::new(3);
        for end in [EPOCH, EPOCH + 900] {
            let unit = random_unit(&mut numbers, CLUSTER, 42, EPOCH - 60, None);
            loader
                .write(utc_window(CLUSTER, end, vec![unit]).unwrap())
                .unwrap();
        }
        let error = loader.finish().expect_err("a uuid twice fails");
        assert!(
            error.to_string().contains("more than one window"),
            "{error}"
        );
    }

    #[test]
    fn windows_out_of_order_and_other_clusters_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut loader = BulkLoader::open(dir.path(), CLUSTER).unwrap();
        let window = |cluster: &str, end: i64| utc_window(cluster, end, Vec::new()).unwrap();
        loader.write(window(CLUSTER, EPOCH)).unwrap();
        assert!(loader.write(window(CLUSTER, EPOCH)).is_err());
        assert!(loader.write(window("c2", EPOCH + 900)).is_err());
        let mut numbers = Numbers::new(5);
        let stray = random_unit(&mut numbers, "c2", 1, EPOCH, None);
        assert!(utc_window(CLUSTER, EPOCH, vec![stray]).is_err());
    }
}
