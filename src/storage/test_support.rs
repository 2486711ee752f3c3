//! Helpers of the storage tests: an in-memory database with the whole schema, and one
//! collect window written through the server's own transaction.

use std::collections::BTreeSet;

use rusqlite::Connection;

use super::functions::register_metric_map_functions;
use super::migrations::migrate;
use super::state::apply_auxiliary_schema;
use super::window::{write_window, WindowRows};
use crate::model::time::format_dt;
use crate::model::{Project, Unit};

/// An in-memory database migrated to the CEEMS schema, with this server's own tables.
pub fn database() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    register_metric_map_functions(&conn).unwrap();
    migrate(&mut conn).unwrap();
    apply_auxiliary_schema(&conn).unwrap();
    conn
}

/// Writes `units` and `projects` of `cluster_id` as the window ending at `end_s` (UTC).
pub fn write_at(
    conn: &mut Connection,
    cluster_id: &str,
    end_s: i64,
    units: &[Unit],
    projects: &[Project],
) {
    let end_dt = format_dt(end_s, chrono_tz::UTC);
    write_window(
        conn,
        &WindowRows {
            cluster_id,
            end_ms: end_s * 1000,
            end_dt: &end_dt,
            day_key_dt: &end_dt,
            units,
            ignored: &BTreeSet::new(),
            users: &[],
            projects,
        },
    )
    .unwrap();
}
