//! Helpers of the storage tests: an in-memory database with the whole schema, and one
//! collect window written through the server's own transaction.

use std::collections::BTreeSet;

use rusqlite::Connection;

use super::functions::register_metric_map_functions;
use super::migrations::migrate;
use super::state::apply_auxiliary_schema;
use super::window::{write_window, WindowRows};
use crate::model::time::format_dt;
use crate::model::{MetricMap, Metrics, Project, Unit};

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

/// A deterministic stream of numbers (a linear congruential generator).
pub struct Numbers(u64);

impl Numbers {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }

    /// An integral value, a real one, or a large one, as metric maps hold them.
    pub fn value(&mut self) -> f64 {
        match self.next(4) {
            0 => self.next(1000) as f64,
            1 => self.next(100_000) as f64 / 7.0,
            2 => 1e15 + self.next(1000) as f64 * 0.25,
            _ => 0.0,
        }
    }
}

/// A unit of `cluster_id` with random maps: keys that some units lack, GPU maps on some,
/// zero and missing weights; three projects, five users, seven groups.
pub fn random_unit(
    numbers: &mut Numbers,
    cluster_id: &str,
    uuid: u64,
    started_s: i64,
    ended_s: Option<i64>,
) -> Unit {
    let mut map = |keys: &[&str]| {
        let mut map = MetricMap::default();
        for key in keys {
            if numbers.next(5) > 0 {
                map.0.insert((*key).to_owned(), numbers.value());
            }
        }
        map
    };
    let mut metrics = Metrics {
        total_time_seconds: map(&["walltime", "alloc_cputime", "alloc_cpumemtime"]),
        avg_cpu_usage: map(&["global"]),
        avg_cpu_mem_usage: map(&["global"]),
        total_cpu_energy_usage_kwh: map(&["total"]),
        total_cpu_emissions_gms: map(&["rte", "owid"]),
        total_io_read_stats: map(&["bytes", "requests"]),
        ..Metrics::default()
    };
    if uuid % 3 == 0 {
        metrics.avg_gpu_usage = map(&["global"]);
        metrics.total_gpu_energy_usage_kwh = map(&["total"]);
        metrics
            .total_time_seconds
            .0
            .insert("alloc_gputime".into(), (uuid % 4) as f64 * 60.0);
    }
    Unit {
        cluster_id: cluster_id.into(),
        resource_manager: "slurm".into(),
        uuid: uuid.to_string(),
        project: format!("p{}", uuid % 3),
        username: format!("u{}", uuid % 5),
        groupname: format!("g{}", started_s % 7),
        started_at: format_dt(started_s, chrono_tz::UTC),
        started_at_ts: started_s * 1000,
        ended_at: ended_s.map_or("Unknown".into(), |s| format_dt(s, chrono_tz::UTC)),
        ended_at_ts: ended_s.map_or(0, |s| s * 1000),
        metrics,
        ..Unit::default()
    }
}
