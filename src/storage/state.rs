//! The pipeline's own bookkeeping, kept next to the CEEMS schema without changing it: the
//! resume point of every cluster, written in the same transaction as a window's rows.
//!
//! The table is created with `IF NOT EXISTS` outside the numbered migrations, so a file
//! stays openable by any server that only knows the CEEMS schema (golang-migrate only
//! reads `schema_migrations`).

use chrono_tz::Tz;
use rusqlite::{Connection, OptionalExtension, Transaction};

use super::StorageError;
use crate::model::time::parse_dt;

/// Creates the tables and indexes this server keeps beside the CEEMS schema.
pub fn apply_auxiliary_schema(conn: &Connection) -> Result<(), StorageError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS collect_state (
            cluster_id TEXT PRIMARY KEY NOT NULL,
            last_window_end_ts INTEGER NOT NULL,
            last_window_end TEXT NOT NULL,
            num_windows INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL
        );
        -- One user's units by end time (the unit list), a project's and a cluster's units
        -- by update time (current usage and its key lookup).
        CREATE INDEX IF NOT EXISTS idx_units_cluster_user_ended ON units (cluster_id, username, ended_at);
        -- Running units, the other half of the unit list's `ended in window OR running`.
        CREATE INDEX IF NOT EXISTS idx_units_cluster_user_running ON units (cluster_id, username) WHERE ended_at_ts = 0;
        CREATE INDEX IF NOT EXISTS idx_units_cluster_project_updated ON units (cluster_id, project, last_updated_at);
        CREATE INDEX IF NOT EXISTS idx_units_cluster_updated ON units (cluster_id, last_updated_at);
        -- A cluster's units by end time with every column the admin stats count: their
        -- window is a range of it and the whole table a scan of it, not of the rows.
        CREATE INDEX IF NOT EXISTS idx_units_cluster_ended ON units (cluster_id, ended_at, ended_at_ts, project, username, resource_manager);
        -- Finished units by end time: the retention purge's three statements read the
        -- expired ones as a range of it instead of scanning the whole table each.
        CREATE INDEX IF NOT EXISTS idx_units_ended_ts ON units (ended_at_ts) WHERE ended_at_ts > 0;",
    )?;
    conn.execute_batch(super::metric_keys::SCHEMA)?;
    conn.execute_batch(super::usage_rollup::SCHEMA)?;
    Ok(())
}

/// Where the pipeline of `cluster_id` resumes, in epoch ms: the end of its last committed
/// window. For a database last written by a server without `collect_state`, the latest
/// `usage.last_updated_at` of the cluster (a `DT` in `zone`). `None` on a cluster never
/// collected: the caller starts from `update_from`.
pub fn resume_point(
    conn: &Connection,
    cluster_id: &str,
    zone: Tz,
) -> Result<Option<i64>, StorageError> {
    let persisted: Option<i64> = conn
        .query_row(
            "SELECT last_window_end_ts FROM collect_state WHERE cluster_id = ?1",
            [cluster_id],
            |row| row.get(0),
        )
        .optional()?;
    if persisted.is_some() {
        return Ok(persisted);
    }
    let latest: Option<String> = conn.query_row(
        "SELECT MAX(last_updated_at) FROM usage WHERE cluster_id = ?1",
        [cluster_id],
        |row| row.get(0),
    )?;
    Ok(match latest {
        Some(text) => match parse_dt(&text, zone) {
            Some(time) => Some(time.timestamp_millis()),
            None => {
                tracing::warn!(
                    cluster_id,
                    last_updated_at = %text,
                    "the latest usage update of the cluster is not a date: starting from update_from"
                );
                None
            }
        },
        None => None,
    })
}

/// Records that the window ending at `end_ms` (`end_dt` in the configured zone) of
/// `cluster_id` is applied. Runs inside the window's transaction.
pub fn record_window(
    transaction: &Transaction<'_>,
    cluster_id: &str,
    end_ms: i64,
    end_dt: &str,
) -> Result<(), StorageError> {
    transaction
        .prepare_cached(
            "INSERT INTO collect_state (cluster_id, last_window_end_ts, last_window_end, num_windows, updated_at)
             VALUES (?1, ?2, ?3, 1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
             ON CONFLICT (cluster_id) DO UPDATE SET
                last_window_end_ts = excluded.last_window_end_ts,
                last_window_end = excluded.last_window_end,
                num_windows = num_windows + 1,
                updated_at = excluded.updated_at",
        )?
        .execute(rusqlite::params![cluster_id, end_ms, end_dt])?;
    Ok(())
}

/// Whether `cluster_id` already holds unit `uuid` with a start time: such a unit is not
/// counted again in `num_units`, however often its windows are replayed.
pub fn unit_already_started(
    transaction: &Transaction<'_>,
    cluster_id: &str,
    uuid: &str,
) -> Result<bool, StorageError> {
    Ok(transaction
        .prepare_cached(
            "SELECT 1 FROM units WHERE cluster_id = ?1 AND uuid = ?2 AND started_at_ts > 0 LIMIT 1",
        )?
        .exists([cluster_id, uuid])?)
}
