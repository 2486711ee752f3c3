//! One collect window of one cluster, written in one transaction: its units, their usage
//! and daily usage, the cluster's users and projects, and the cluster's resume point.
//! Either all of it is committed or none of it, so a window that fails or is cut short
//! (an error, a crash, SIGKILL) is replayed whole and nothing is counted twice.

use std::collections::BTreeSet;

use rusqlite::Connection;

use super::metric_keys::{self, hour_of, KeyCounts};
use super::state::{record_window, unit_already_started};
use super::usage_rollup;
use super::write::{
    upsert_daily_usage, upsert_project, upsert_unit, upsert_usage, upsert_user, WindowUsage,
};
use super::StorageError;
use crate::model::{Project, Unit, User};

/// Everything one window of one cluster writes.
#[derive(Debug, Clone, Copy)]
pub struct WindowRows<'a> {
    pub cluster_id: &'a str,
    /// The window end, epoch ms: the cluster's next resume point.
    pub end_ms: i64,
    /// The window end as `DT` in the configured zone: `last_updated_at` of units, usage,
    /// users and projects.
    pub end_dt: &'a str,
    /// The `daily_usage` bucket of the window.
    pub day_key_dt: &'a str,
    pub units: &'a [Unit],
    /// uuids of the units to store with `ignore = 1`.
    pub ignored: &'a BTreeSet<String>,
    pub users: &'a [User],
    pub projects: &'a [Project],
}

/// What a window wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowReport {
    /// Units inserted or updated.
    pub units: usize,
    /// Units seen started for the first time (each adds 1 to `num_units`).
    pub new_units: usize,
    /// Rows that failed and were skipped (logged).
    pub failed_rows: usize,
}

/// Writes `rows` in one transaction and moves the cluster's resume point to its end.
///
/// A row that SQLite rejects is logged and skipped, as the reference does; a unit whose
/// own row fails adds nothing to usage either, so a later window cannot count it twice.
///
/// Usage and daily usage get one upsert per (user, project) of the window, the window's
/// units folded together in memory first ([`fold_usage`](super::write::fold_usage), the same arithmetic as the
/// upsert), instead of one per unit: a busy window holds thousands of units of a few
/// hundred (user, project) pairs, and every per-unit upsert decodes and re-encodes all
/// thirteen stored maps.
pub fn write_window(
    conn: &mut Connection,
    rows: &WindowRows<'_>,
) -> Result<WindowReport, StorageError> {
    let transaction = conn.transaction()?;
    let mut report = WindowReport::default();
    let indexed = metric_keys::MARKER.start_cluster(&transaction, rows.cluster_id)?;
    let rolled_up = usage_rollup::MARKER.start_cluster(&transaction, rows.cluster_id)?;
    // Hours whose usage buckets this window changes: the one it writes, the ones its
    // re-updated units leave.
    let mut touched_hours = BTreeSet::new();
    let mut key_counts = KeyCounts::default();
    let mut rollups = WindowUsage::default();
    for unit in rows.units {
        if unit.uuid.is_empty() {
            continue;
        }
        let started_before = unit_already_started(&transaction, rows.cluster_id, &unit.uuid)?;
        let ignore = rows.ignored.contains(&unit.uuid);
        let stored = if indexed || rolled_up {
            metric_keys::stored_unit(&transaction, rows.cluster_id, &unit.uuid, &unit.started_at)?
        } else {
            None
        };
        if let Err(error) = upsert_unit(&transaction, unit, ignore, rows.end_dt) {
            tracing::error!(cluster_id = rows.cluster_id, uuid = %unit.uuid, %error, "storing a unit failed: skipped");
            report.failed_rows += 1;
            continue;
        }
        if let Some((last_updated_at, _)) = &stored {
            touched_hours.insert(hour_of(last_updated_at).to_owned());
        }
        touched_hours.insert(hour_of(rows.end_dt).to_owned());
        if indexed {
            // The stored row's keys become the union of its old and new maps, updated now.
            if let Some((last_updated_at, metrics)) = &stored {
                key_counts.add(last_updated_at, metrics, -1);
                key_counts.add(rows.end_dt, metrics, 1);
            }
            key_counts.add_new(rows.end_dt, &unit.metrics, stored.as_ref().map(|(_, m)| m));
        }
        report.units += 1;
        let increment = i64::from(!started_before && unit.started_at_ts > 0);
        report.new_units += usize::try_from(increment).unwrap_or(0);
        rollups.add(unit, increment);
    }
    for usage in rollups.rows() {
        if let Err(error) = upsert_usage(&transaction, usage, rows.end_dt) {
            tracing::error!(cluster_id = rows.cluster_id, user = %usage.username, project = %usage.project, %error, "adding a window to usage failed: skipped");
            report.failed_rows += 1;
        }
        if let Err(error) = upsert_daily_usage(&transaction, usage, rows.day_key_dt) {
            tracing::error!(cluster_id = rows.cluster_id, user = %usage.username, project = %usage.project, %error, "adding a window to daily usage failed: skipped");
            report.failed_rows += 1;
        }
    }
    if indexed {
        key_counts.apply(&transaction, rows.cluster_id)?;
    }
    if rolled_up {
        usage_rollup::refresh(&transaction, rows.cluster_id, &touched_hours)?;
    }
    for user in rows.users {
        if let Err(error) = upsert_user(&transaction, user, rows.end_dt) {
            tracing::error!(cluster_id = rows.cluster_id, user = %user.name, %error, "storing a user failed: skipped");
            report.failed_rows += 1;
        }
    }
    for project in rows.projects {
        if let Err(error) = upsert_project(&transaction, project, rows.end_dt) {
            tracing::error!(cluster_id = rows.cluster_id, project = %project.name, %error, "storing a project failed: skipped");
            report.failed_rows += 1;
        }
    }
    record_window(&transaction, rows.cluster_id, rows.end_ms, rows.end_dt)?;
    transaction.commit()?;
    Ok(report)
}
