//! Schema migrations from `sql/`, with golang-migrate compatible bookkeeping so that a
//! database written by the reference server migrates in place and stays readable by it.
//!
//! Bookkeeping: the table `schema_migrations (version uint64, dirty bool)` with the unique
//! index `version_unique`, holding one row. Migration N runs in three transactions: record
//! (N, dirty), run the up script, record (N, clean). A failed script rolls back and leaves
//! (N, dirty), which every later start refuses, as golang-migrate does.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::StorageError;

/// One numbered up script.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub up_sql: &'static str,
}

macro_rules! migration {
    ($version:expr, $file:literal) => {
        Migration {
            version: $version,
            name: $file,
            up_sql: include_str!(concat!("../../sql/", $file, ".up.sql")),
        }
    };
}

/// Every migration, in order. Versions are 1..=HEAD_VERSION without gaps.
pub const MIGRATIONS: [Migration; 9] = [
    migration!(1, "000001_create_units_table"),
    migration!(2, "000002_create_usage_table"),
    migration!(3, "000003_create_users_table"),
    migration!(4, "000004_create_projects_table"),
    migration!(5, "000005_create_admin_users_table"),
    migration!(6, "000006_create_index_units_table"),
    migration!(7, "000007_create_daily_usage_table"),
    migration!(8, "000008_modify_admin_users_table_schema"),
    migration!(9, "000009_rename_outgress_column"),
];

/// The schema version this build produces.
pub const HEAD_VERSION: u32 = 9;

/// The version recorded in `schema_migrations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion {
    pub version: i64,
    pub dirty: bool,
}

/// What [`migrate_to`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The clean version found at start, `None` for a database without migrations.
    pub from_version: Option<u32>,
    pub to_version: u32,
    pub applied: Vec<u32>,
}

/// Why the schema could not be brought to the wanted version.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "database schema is dirty at version {version}: migration {version} failed on an \
         earlier start; repair the schema by hand, then set schema_migrations.dirty to 0"
    )]
    Dirty { version: i64 },
    #[error(
        "database schema is at version {version}, which this server does not know (it knows \
         1 to {head}); the database was probably written by a newer release"
    )]
    UnknownVersion { version: i64, head: u32 },
    #[error("cannot migrate to version {target}: the known versions are 0 to {head}")]
    UnknownTarget { target: u32, head: u32 },
    #[error("cannot migrate down from version {current} to {target}: down migrations are not run")]
    Downgrade { current: u32, target: u32 },
    #[error("migration {version} ({name}) failed, schema left dirty at {version}: {source}")]
    ScriptFailed {
        version: u32,
        name: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("schema_migrations holds an unreadable row: {0}")]
    UnreadableBookkeeping(String),
}

/// Brings the schema to [`HEAD_VERSION`].
pub fn migrate(conn: &mut Connection) -> Result<MigrationReport, StorageError> {
    migrate_to(conn, HEAD_VERSION)
}

/// Brings the schema to `version` (0 only creates the bookkeeping table). Refuses a dirty
/// database, a recorded version this build does not know, and going down.
pub fn migrate_to(conn: &mut Connection, version: u32) -> Result<MigrationReport, StorageError> {
    if version > HEAD_VERSION {
        return Err(MigrationError::UnknownTarget {
            target: version,
            head: HEAD_VERSION,
        }
        .into());
    }
    ensure_bookkeeping_table(conn)?;
    let from_version = match schema_version(conn)? {
        None => None,
        Some(SchemaVersion {
            version,
            dirty: true,
        }) => return Err(MigrationError::Dirty { version }.into()),
        Some(SchemaVersion { version, .. }) => match u32::try_from(version) {
            Ok(known) if (1..=HEAD_VERSION).contains(&known) => Some(known),
            _ => {
                return Err(MigrationError::UnknownVersion {
                    version,
                    head: HEAD_VERSION,
                }
                .into())
            }
        },
    };
    let current = from_version.unwrap_or(0);
    if current > version {
        return Err(MigrationError::Downgrade {
            current,
            target: version,
        }
        .into());
    }

    let mut applied = Vec::new();
    for migration in MIGRATIONS
        .iter()
        .filter(|migration| migration.version > current && migration.version <= version)
    {
        apply_migration(conn, migration)?;
        applied.push(migration.version);
    }
    if !applied.is_empty() {
        tracing::info!(
            from = current,
            to = version,
            ?applied,
            "applied database migrations"
        );
    }
    Ok(MigrationReport {
        from_version,
        to_version: version,
        applied,
    })
}

/// The row of `schema_migrations`, `None` when there is none (a fresh database, or
/// golang-migrate's "nil version" -1 recorded clean).
pub fn schema_version(conn: &Connection) -> Result<Option<SchemaVersion>, StorageError> {
    let table_exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
        [],
        |row| row.get(0),
    )?;
    if !table_exists {
        return Ok(None);
    }
    let row = conn
        .query_row(
            "SELECT version, dirty FROM schema_migrations LIMIT 1",
            [],
            |row| Ok((read_version(row.get_ref(0)?), read_dirty(row.get_ref(1)?))),
        )
        .optional()?;
    let Some((version, dirty)) = row else {
        return Ok(None);
    };
    let version = version.map_err(MigrationError::UnreadableBookkeeping)?;
    let dirty = dirty.map_err(MigrationError::UnreadableBookkeeping)?;
    if version == -1 && !dirty {
        return Ok(None);
    }
    Ok(Some(SchemaVersion { version, dirty }))
}

fn read_version(value: ValueRef<'_>) -> Result<i64, String> {
    match value {
        ValueRef::Integer(version) => Ok(version),
        ValueRef::Text(text) => std::str::from_utf8(text)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .ok_or_else(|| format!("version {:?}", String::from_utf8_lossy(text))),
        other => Err(format!("version of type {}", other.data_type())),
    }
}

fn read_dirty(value: ValueRef<'_>) -> Result<bool, String> {
    match value {
        ValueRef::Null => Ok(false),
        ValueRef::Integer(flag) => Ok(flag != 0),
        ValueRef::Real(flag) => Ok(flag != 0.0),
        ValueRef::Text(text) => match text.to_ascii_lowercase().as_slice() {
            b"1" | b"true" | b"t" => Ok(true),
            b"0" | b"false" | b"f" => Ok(false),
            _ => Err(format!("dirty {:?}", String::from_utf8_lossy(text))),
        },
        ValueRef::Blob(_) => Err("dirty of type blob".to_owned()),
    }
}

/// Created at every start, before any migration, exactly as golang-migrate's sqlite3
/// driver does.
fn ensure_bookkeeping_table(conn: &Connection) -> Result<(), StorageError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version uint64, dirty bool);
         CREATE UNIQUE INDEX IF NOT EXISTS version_unique ON schema_migrations (version);",
    )?;
    Ok(())
}

/// Replaces the single bookkeeping row, in its own transaction.
fn record_version(conn: &mut Connection, version: u32, dirty: bool) -> Result<(), StorageError> {
    let transaction = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    transaction.execute("DELETE FROM schema_migrations", [])?;
    transaction.execute(
        "INSERT INTO schema_migrations (version, dirty) VALUES (?1, ?2)",
        rusqlite::params![i64::from(version), dirty],
    )?;
    transaction.commit()?;
    Ok(())
}

fn apply_migration(conn: &mut Connection, migration: &Migration) -> Result<(), StorageError> {
    if migration.version == 8 {
        warn_about_duplicate_admin_names(conn);
    }
    record_version(conn, migration.version, true)?;
    let script_failed = |source| MigrationError::ScriptFailed {
        version: migration.version,
        name: migration.name,
        source,
    };
    let transaction = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(script_failed)?;
    transaction
        .execute_batch(migration.up_sql)
        .map_err(script_failed)?;
    transaction.commit().map_err(script_failed)?;
    record_version(conn, migration.version, false)?;
    Ok(())
}

/// Migration 8 keeps the first row of a name listed more than once in the old per-source
/// arrays, where the reference fails and leaves the database dirty. Say so in the log,
/// since those admins lose their second source tag.
fn warn_about_duplicate_admin_names(conn: &Connection) {
    let duplicates: rusqlite::Result<Vec<String>> = conn
        .prepare(
            "SELECT element.value FROM admin_users AS old, json_each(old.users) AS element
             WHERE element.value != ''
             GROUP BY element.value HAVING count(*) > 1",
        )
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect()
        });
    match duplicates {
        Ok(names) if !names.is_empty() => tracing::warn!(
            ?names,
            "admin names listed more than once in the old admin_users table: each keeps its first row"
        ),
        Ok(_) => {}
        // The migration itself reports a broken table.
        Err(error) => tracing::debug!(%error, "could not check admin_users for duplicate names"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column_names(conn: &Connection, table: &str) -> Vec<String> {
        let mut statement = conn
            .prepare(&format!(
                "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
            ))
            .unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn index_names(conn: &Connection, table: &str) -> Vec<(String, bool)> {
        let mut statement = conn
            .prepare(&format!(
                "SELECT name, \"unique\" FROM pragma_index_list('{table}') WHERE origin = 'c' ORDER BY name"
            ))
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn default_values(conn: &Connection, table: &str) -> Vec<(String, Option<String>)> {
        let mut statement = conn
            .prepare(&format!(
                "SELECT name, dflt_value FROM pragma_table_info('{table}') ORDER BY cid"
            ))
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    const METRIC_COLUMNS: [&str; 13] = [
        "total_time_seconds",
        "avg_cpu_usage",
        "avg_cpu_mem_usage",
        "total_cpu_energy_usage_kwh",
        "total_cpu_emissions_gms",
        "avg_gpu_usage",
        "avg_gpu_mem_usage",
        "total_gpu_energy_usage_kwh",
        "total_gpu_emissions_gms",
        "total_io_write_stats",
        "total_io_read_stats",
        "total_ingress_stats",
        "total_egress_stats",
    ];

    fn with_metrics(head: &[&str], tail: &[&str]) -> Vec<String> {
        head.iter()
            .chain(METRIC_COLUMNS.iter())
            .chain(tail.iter())
            .map(|name| (*name).to_owned())
            .collect()
    }

    #[test]
    fn migration_versions_are_contiguous_up_to_head() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1);
            assert!(migration
                .name
                .starts_with(&format!("{:06}_", migration.version)));
        }
        assert_eq!(MIGRATIONS.len() as u32, HEAD_VERSION);
    }

    #[test]
    fn empty_database_migrates_to_the_final_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        let report = migrate(&mut conn).unwrap();
        assert_eq!(report.from_version, None);
        assert_eq!(report.applied, (1..=9).collect::<Vec<_>>());
        assert_eq!(
            schema_version(&conn).unwrap(),
            Some(SchemaVersion {
                version: 9,
                dirty: false
            })
        );
        assert_eq!(count(&conn, "SELECT count(*) FROM schema_migrations"), 1);

        assert_eq!(
            column_names(&conn, "units"),
            with_metrics(
                &[
                    "id",
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
                ],
                &["ignore", "num_updates", "last_updated_at"],
            )
        );
        let usage_columns = with_metrics(
            &[
                "id",
                "resource_manager",
                "cluster_id",
                "num_units",
                "project",
                "groupname",
                "username",
            ],
            &["num_updates", "last_updated_at"],
        );
        assert_eq!(column_names(&conn, "usage"), usage_columns);
        assert_eq!(column_names(&conn, "daily_usage"), usage_columns);
        let member_columns = |list: &str| -> Vec<String> {
            [
                "id",
                "uid",
                "cluster_id",
                "resource_manager",
                "name",
                list,
                "tags",
                "last_updated_at",
            ]
            .map(str::to_owned)
            .to_vec()
        };
        assert_eq!(column_names(&conn, "users"), member_columns("projects"));
        assert_eq!(column_names(&conn, "projects"), member_columns("users"));
        assert_eq!(
            column_names(&conn, "admin_users"),
            member_columns("projects")
        );

        assert_eq!(
            index_names(&conn, "units"),
            vec![
                ("idx_cluster_id_project_user_ended".to_owned(), false),
                ("idx_cluster_id_usr_uuid".to_owned(), false),
                ("uq_cluster_id_uuid_start".to_owned(), true),
            ]
        );
        assert_eq!(
            index_names(&conn, "usage"),
            vec![("uq_cluster_id_project_usr".to_owned(), true)]
        );
        assert_eq!(
            index_names(&conn, "daily_usage"),
            vec![("uq_cluster_id_project_usr_lastupdated".to_owned(), true)]
        );
        assert_eq!(
            index_names(&conn, "users"),
            vec![("uq_cluster_id_user".to_owned(), true)]
        );
        assert_eq!(
            index_names(&conn, "projects"),
            vec![("uq_cluster_id_project".to_owned(), true)]
        );
        assert_eq!(
            index_names(&conn, "admin_users"),
            vec![("uq_cluster_id_admin_user".to_owned(), true)]
        );
        assert_eq!(
            index_names(&conn, "schema_migrations"),
            vec![("version_unique".to_owned(), true)]
        );

        let admin_defaults = default_values(&conn, "admin_users");
        assert_eq!(
            admin_defaults,
            vec![
                ("id".to_owned(), None),
                ("uid".to_owned(), Some("''".to_owned())),
                ("cluster_id".to_owned(), Some("'all'".to_owned())),
                ("resource_manager".to_owned(), Some("''".to_owned())),
                ("name".to_owned(), None),
                ("projects".to_owned(), Some("'[]'".to_owned())),
                ("tags".to_owned(), Some("'[]'".to_owned())),
                ("last_updated_at".to_owned(), None),
            ]
        );
        // Defaults of a fresh units row.
        conn.execute("INSERT INTO units (uuid) VALUES ('x')", [])
            .unwrap();
        let defaults: (String, String, String, String, i64, Option<i64>) = conn
            .query_row(
                "SELECT resource_manager, allocation, tags, total_egress_stats, num_updates, ignore FROM units",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?)),
            )
            .unwrap();
        assert_eq!(
            defaults,
            ("".into(), "{}".into(), "{}".into(), "{}".into(), 0, None)
        );
    }

    #[test]
    fn migrating_twice_applies_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let again = migrate(&mut conn).unwrap();
        assert_eq!(again.from_version, Some(9));
        assert!(again.applied.is_empty());
    }

    /// Fills every table that exists at `version` with rows in the shape of that version.
    fn fill_tables_at(conn: &Connection, version: u32) {
        let egress = if version >= 9 {
            "total_egress_stats"
        } else {
            "total_outgress_stats"
        };
        if version >= 1 {
            conn.execute(
                &format!(
                    "INSERT INTO units (resource_manager, cluster_id, uuid, name, project, groupname,
                        username, started_at, ended_at, ignore, num_updates, last_updated_at,
                        total_time_seconds, {egress})
                     VALUES ('slurm', 'c0', '1001', 'job', 'acc1', 'grp', 'usr1',
                        '2024-01-01T00:00:00+0000', 'Unknown', 0, 3, '2024-01-01T01:00:00',
                        '{{\"walltime\":60}}', '{{\"global\":7}}')"
                ),
                [],
            )
            .unwrap();
        }
        if version >= 2 {
            conn.execute(
                &format!(
                    "INSERT INTO usage (resource_manager, cluster_id, num_units, project, groupname,
                        username, {egress}, num_updates, last_updated_at)
                     VALUES ('slurm', 'c0', 1, 'acc1', 'grp', 'usr1', '{{\"global\":7}}', 3,
                        '2024-01-01T01:00:00')"
                ),
                [],
            )
            .unwrap();
        }
        if version >= 3 {
            conn.execute(
                "INSERT INTO users (uid, cluster_id, resource_manager, name, projects, tags, last_updated_at)
                 VALUES ('1000', 'c0', 'slurm', 'usr1', '[\"acc1\"]', '[]', '2024-01-01T01:00:00')",
                [],
            )
            .unwrap();
        }
        if version >= 4 {
            conn.execute(
                "INSERT INTO projects (uid, cluster_id, resource_manager, name, users, tags, last_updated_at)
                 VALUES ('', 'c0', 'slurm', 'acc1', '[\"usr1\"]', '[]', '2024-01-01T01:00:00')",
                [],
            )
            .unwrap();
        }
        if (5..8).contains(&version) {
            conn.execute_batch(
                "INSERT INTO admin_users (source, users, last_updated_at)
                   VALUES ('ceems', '[\"adm1\",\"\",null,\"ceems-int-svc\"]', '2024-01-01T01:00:00');
                 INSERT INTO admin_users (source, users, last_updated_at)
                   VALUES ('grafana', '[\"graf1\"]', '2024-01-02T01:00:00');",
            )
            .unwrap();
        } else if version >= 8 {
            conn.execute(
                "INSERT INTO admin_users (name, tags, last_updated_at)
                 VALUES ('adm1', '[\"ceems\"]', '2024-01-01T01:00:00')",
                [],
            )
            .unwrap();
        }
        if version >= 7 {
            conn.execute(
                &format!(
                    "INSERT INTO daily_usage (cluster_id, num_units, project, username, {egress},
                        last_updated_at)
                     VALUES ('c0', 1, 'acc1', 'usr1', '{{\"global\":7}}', '2024-01-01T00:00:00')"
                ),
                [],
            )
            .unwrap();
        }
    }

    #[test]
    fn every_old_version_migrates_in_place_without_losing_rows() {
        for old_version in 0..=HEAD_VERSION {
            let mut conn = Connection::open_in_memory().unwrap();
            migrate_to(&mut conn, old_version).unwrap();
            let recorded = schema_version(&conn).unwrap();
            if old_version == 0 {
                assert_eq!(recorded, None);
            } else {
                assert_eq!(
                    recorded,
                    Some(SchemaVersion {
                        version: i64::from(old_version),
                        dirty: false
                    })
                );
            }
            fill_tables_at(&conn, old_version);

            let report = migrate(&mut conn).unwrap();
            assert_eq!(
                report.applied,
                (old_version + 1..=HEAD_VERSION).collect::<Vec<_>>(),
                "from version {old_version}"
            );

            let rows = |table: &str| count(&conn, &format!("SELECT count(*) FROM {table}"));
            let expect_row = |table: &str, since: u32| {
                let expected = i64::from(old_version >= since);
                assert_eq!(rows(table), expected, "{table} from version {old_version}");
            };
            expect_row("units", 1);
            expect_row("usage", 2);
            expect_row("users", 3);
            expect_row("projects", 4);
            expect_row("daily_usage", 7);

            if old_version >= 1 {
                let (egress, walltime, num_updates): (String, String, i64) = conn
                    .query_row(
                        "SELECT total_egress_stats, total_time_seconds, num_updates FROM units",
                        [],
                        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                    )
                    .unwrap();
                assert_eq!(egress, r#"{"global":7}"#);
                assert_eq!(walltime, r#"{"walltime":60}"#);
                assert_eq!(num_updates, 3);
            }
            if old_version >= 2 {
                assert_eq!(
                    count(
                        &conn,
                        "SELECT count(*) FROM usage WHERE total_egress_stats = '{\"global\":7}'"
                    ),
                    1
                );
            }
            if old_version >= 7 {
                assert_eq!(
                    count(&conn, "SELECT count(*) FROM daily_usage WHERE total_egress_stats = '{\"global\":7}'"),
                    1
                );
            }

            let admins: Vec<(String, String, String, String, String, String, String)> = conn
                .prepare(
                    "SELECT uid, cluster_id, resource_manager, name, projects, tags, last_updated_at
                     FROM admin_users ORDER BY id",
                )
                .unwrap()
                .query_map([], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                    ))
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let admin = |name: &str, source: &str, at: &str| {
                (
                    String::new(),
                    "all".to_owned(),
                    String::new(),
                    name.to_owned(),
                    "[]".to_owned(),
                    format!("[\"{source}\"]"),
                    at.to_owned(),
                )
            };
            let expected = match old_version {
                0..=4 => vec![],
                5..=7 => vec![
                    admin("adm1", "ceems", "2024-01-01T01:00:00"),
                    admin("ceems-int-svc", "ceems", "2024-01-01T01:00:00"),
                    admin("graf1", "grafana", "2024-01-02T01:00:00"),
                ],
                _ => vec![admin("adm1", "ceems", "2024-01-01T01:00:00")],
            };
            assert_eq!(admins, expected, "admin_users from version {old_version}");
        }
    }

    #[test]
    fn migration_8_keeps_the_first_row_of_a_duplicated_admin_name() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 7).unwrap();
        conn.execute_batch(
            "INSERT INTO admin_users (source, users, last_updated_at)
               VALUES ('ceems', '[\"adm1\",\"adm2\",\"adm1\"]', 'first');
             INSERT INTO admin_users (source, users, last_updated_at)
               VALUES ('grafana', '[\"adm2\",\"adm3\"]', 'second');
             INSERT INTO admin_users (source, users, last_updated_at)
               VALUES ('other', 'null', 'third');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let rows: Vec<(String, String, String)> = conn
            .prepare("SELECT name, tags, last_updated_at FROM admin_users ORDER BY id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                ("adm1".into(), r#"["ceems"]"#.into(), "first".into()),
                ("adm2".into(), r#"["ceems"]"#.into(), "first".into()),
                ("adm3".into(), r#"["grafana"]"#.into(), "second".into()),
            ]
        );
    }

    #[test]
    fn dirty_database_is_refused_with_its_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 7).unwrap();
        conn.execute("UPDATE schema_migrations SET version = 8, dirty = 1", [])
            .unwrap();
        let error = migrate(&mut conn).unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::Migration(MigrationError::Dirty { version: 8 })
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("dirty at version 8"), "{error}");
        // Nothing was touched.
        assert_eq!(
            schema_version(&conn).unwrap(),
            Some(SchemaVersion {
                version: 8,
                dirty: true
            })
        );
    }

    #[test]
    fn newer_database_is_refused_with_its_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn.execute("UPDATE schema_migrations SET version = 10", [])
            .unwrap();
        let error = migrate(&mut conn).unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::Migration(MigrationError::UnknownVersion { version: 10, .. })
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("version 10"), "{error}");
    }

    #[test]
    fn going_down_or_past_head_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert!(matches!(
            migrate_to(&mut conn, 3).unwrap_err(),
            StorageError::Migration(MigrationError::Downgrade {
                current: 9,
                target: 3
            })
        ));
        assert!(matches!(
            migrate_to(&mut conn, 10).unwrap_err(),
            StorageError::Migration(MigrationError::UnknownTarget { target: 10, .. })
        ));
    }

    #[test]
    fn a_failing_script_rolls_back_and_leaves_the_version_dirty() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 5).unwrap();
        // Index 6 already exists under its name: the script fails.
        conn.execute(
            "CREATE INDEX idx_cluster_id_project_user_ended ON units (uuid)",
            [],
        )
        .unwrap();
        let error = migrate(&mut conn).unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::Migration(MigrationError::ScriptFailed { version: 6, .. })
            ),
            "{error:?}"
        );
        assert_eq!(
            schema_version(&conn).unwrap(),
            Some(SchemaVersion {
                version: 6,
                dirty: true
            })
        );
        // Migration 7 did not run.
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM sqlite_master WHERE name = 'daily_usage'"
            ),
            0
        );
    }

    #[test]
    fn bookkeeping_written_by_the_reference_is_read() {
        // golang-migrate binds Go values: the version as an integer, the flag as 0/1.
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 4).unwrap();
        conn.execute_batch(
            "DELETE FROM schema_migrations; INSERT INTO schema_migrations VALUES (4, 0);",
        )
        .unwrap();
        let report = migrate(&mut conn).unwrap();
        assert_eq!(report.from_version, Some(4));
        let (version, dirty): (i64, i64) = conn
            .query_row("SELECT version, dirty FROM schema_migrations", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!((version, dirty), (9, 0));
    }
}
