//! Where the dashboards' data comes from: one function that fills the data directory and
//! says who looks at it and when. Swap [`prepare_database`] for another source (e.g. a
//! database filled by the server's demo cluster) and every check runs on it unchanged.

use std::path::Path;

use crate::helpers::{write_fixture_database, DAY_FROM, DAY_TO};

/// Who looks at the dashboards, and over which time range.
pub struct Scenario {
    /// A user with units in the range: the identity for the user routes.
    pub user: String,
    /// A name in the server's admin list: the identity for the `/admin` routes.
    pub admin: String,
    /// Dashboard time range, epoch milliseconds.
    pub from_ms: i64,
    pub to_ms: i64,
    /// How many runs the job list gets (one per endpoint kind, cluster and user explored),
    /// when known for this data.
    pub job_list_runs: Option<usize>,
}

/// The fixture of the API tests: two SLURM clusters on 2024-01-10 (Paris), plus the
/// emissions its `usage` row for acc3/usr1 lacks although the unit (2001) has them, so
/// that every column the dashboards show has a value somewhere.
pub fn prepare_database(dir: &Path) -> Scenario {
    write_fixture_database(dir);
    let conn = rusqlite::Connection::open(dir.join("ceems.db")).expect("open fixture db");
    conn.execute_batch(
        "UPDATE usage SET total_cpu_emissions_gms = '{\"rte_total\":160}', \
         total_gpu_emissions_gms = '{\"rte_total\":440}' \
         WHERE cluster_id = 'slurm-1' AND project = 'acc3' AND username = 'usr1';",
    )
    .expect("complete the fixture");
    Scenario {
        user: "usr1".to_owned(),
        admin: "admin".to_owned(),
        from_ms: DAY_FROM * 1000,
        to_ms: DAY_TO * 1000,
        // As usr1: clusters slurm-0 and slurm-1, usr1 alone on each. As admin: slurm-0
        // (usr1, usr2, usr3) and slurm-1 (usr1, usr3).
        job_list_runs: Some(2 + 5),
    }
}
