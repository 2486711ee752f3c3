//! What the dashboards ask: the users looked at (chosen from the database), and the
//! requests each of them sends when opening the job list, usage and cluster status
//! dashboards.

use std::path::Path;

use anyhow::Context;
use ceems_api_server::model::time::format_dt;
use rusqlite::{Connection, OpenFlags};

/// The header the server reads the user from (its default, and what the provisioned
/// Infinity data source sends).
pub const USER_HEADER: &str = "X-Grafana-User";

/// The admin of the bench config: the identity of the cluster status dashboard.
pub const ADMIN: &str = "ceems-bench-admin";

const DAY_S: i64 = 86_400;

/// The routes measured, by their stable report names.
pub const ROUTES: [&str; 7] = [
    "units_30d",
    "usage_current_30d",
    "usage_current_365d",
    "usage_global",
    "projects",
    "stats_admin",
    "verify",
];

pub const USAGE_CURRENT_30D: usize = 1;
pub const USAGE_CURRENT_365D: usize = 2;
pub const STATS_ADMIN: usize = 5;

/// The routes whose answers the server caches (current usage 15 minutes, admin stats one
/// minute).
pub fn is_cached_route(route: usize) -> bool {
    route == USAGE_CURRENT_30D || route == USAGE_CURRENT_365D || route == STATS_ADMIN
}

/// Fields of the job list's "Jobs" table (`job-list.json`).
const UNIT_FIELDS: [&str; 19] = [
    "uuid",
    "name",
    "project",
    "username",
    "state",
    "started_at",
    "ended_at",
    "started_at_ts",
    "ended_at_ts",
    "elapsed",
    "allocation",
    "avg_cpu_usage",
    "avg_cpu_mem_usage",
    "avg_gpu_usage",
    "avg_gpu_mem_usage",
    "total_cpu_energy_usage_kwh",
    "total_gpu_energy_usage_kwh",
    "total_cpu_emissions_gms",
    "total_gpu_emissions_gms",
];

/// Fields of the usage dashboard's "Current usage: projects" and "Global usage: projects"
/// tables (`usage.json`), the widest of its panels.
const USAGE_FIELDS: [&str; 10] = [
    "username",
    "project",
    "num_units",
    "total_time_seconds",
    "avg_cpu_usage",
    "avg_gpu_usage",
    "total_cpu_energy_usage_kwh",
    "total_gpu_energy_usage_kwh",
    "total_cpu_emissions_gms",
    "total_gpu_emissions_gms",
];

/// A user who opens the dashboards: the cluster they look at and a few of their units.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchUser {
    pub name: String,
    pub cluster_id: String,
    /// Their units in that cluster that ended in the last 30 days or still run.
    pub recent_units: i64,
    /// Their own uuids, for the ownership check.
    pub uuids: Vec<String>,
}

/// One request: the route it measures, the path and query, and who sends it.
#[derive(Debug, Clone)]
pub struct Request {
    pub route: usize,
    pub target: String,
    pub login: String,
}

/// `count` users with units in the 30 days before `now_s`, spread evenly over the list
/// of such users ordered by how many units they have (busiest first, then by name): the
/// same database always gives the same users, from the heaviest to the lightest.
pub fn pick_users(
    db: &Path,
    count: usize,
    now_s: i64,
    time_zone: &str,
) -> anyhow::Result<Vec<BenchUser>> {
    let zone: chrono_tz::Tz = time_zone
        .parse()
        .map_err(|_| anyhow::anyhow!("unknown time zone {time_zone:?}"))?;
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("open {} read-only", db.display()))?;
    // Units that ended in the last 30 days or are running (`Unknown` sorts after every
    // date), counted along the `(cluster_id, username, ended_at)` index: a scan of the
    // rows themselves reads the whole file, 17 GB at 1e7 units.
    let since = format_dt(now_s - 30 * DAY_S, zone);
    let mut statement = conn.prepare(
        "SELECT username, cluster_id, COUNT(*) FROM units WHERE ended_at >= ?1 \
         GROUP BY cluster_id, username",
    )?;
    let rows = statement
        .query_map([&since], |row| {
            Ok(BenchUser {
                name: row.get(0)?,
                cluster_id: row.get(1)?,
                recent_units: row.get(2)?,
                uuids: Vec::new(),
            })
        })?
        .collect::<Result<Vec<_>, _>>()
        .context("read the recent units per user")?;

    // Each user once, on the cluster where they have the most units.
    let mut by_user: std::collections::BTreeMap<String, BenchUser> = Default::default();
    for row in rows {
        let keep = by_user.get(&row.name).is_none_or(|kept| {
            (row.recent_units, std::cmp::Reverse(&row.cluster_id))
                > (kept.recent_units, std::cmp::Reverse(&kept.cluster_id))
        });
        if keep {
            by_user.insert(row.name.clone(), row);
        }
    }
    let mut users: Vec<BenchUser> = by_user.into_values().collect();
    users.sort_by(|a, b| {
        b.recent_units
            .cmp(&a.recent_units)
            .then_with(|| a.name.cmp(&b.name))
    });
    if users.len() < count {
        anyhow::bail!(
            "{} has {} users with units in the last 30 days, {count} asked",
            db.display(),
            users.len()
        );
    }
    let mut picked: Vec<BenchUser> = (0..count)
        .map(|index| users[index * users.len() / count].clone())
        .collect();
    // Two of each user's units for the ownership check, from `(cluster_id, username, uuid)`.
    let mut uuids = conn.prepare(
        "SELECT MIN(uuid), MAX(uuid) FROM units WHERE cluster_id = ?1 AND username = ?2",
    )?;
    for user in &mut picked {
        let (first, last): (String, String) = uuids
            .query_row([&user.cluster_id, &user.name], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .context("read two uuids of a user")?;
        user.uuids = vec![first, last];
        user.uuids.dedup();
    }
    Ok(picked)
}

/// The seven requests of `user`'s dashboards over windows ending at `now_s`, in
/// [`ROUTES`] order.
pub fn dashboard_requests(user: &BenchUser, now_s: i64) -> Vec<Request> {
    let request = |route: usize, path: &str, params: Vec<(&str, String)>, login: &str| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in &params {
            query.append_pair(key, value);
        }
        let query = query.finish();
        Request {
            route,
            target: if query.is_empty() {
                format!("/api/v1/{path}")
            } else {
                format!("/api/v1/{path}?{query}")
            },
            login: login.to_owned(),
        }
    };
    let window = |days: i64| {
        vec![
            ("from", (now_s - days * DAY_S).to_string()),
            ("to", now_s.to_string()),
        ]
    };
    let scope = || {
        vec![
            ("cluster_id", user.cluster_id.clone()),
            ("user", user.name.clone()),
        ]
    };
    let fields = |names: &[&'static str]| {
        names
            .iter()
            .map(|name| ("field", (*name).to_owned()))
            .collect::<Vec<_>>()
    };

    // The job list: `running=1` keeps the running units in the list.
    let mut units = scope();
    units.push(("running", "1".to_owned()));
    units.extend(window(30));
    units.extend(fields(&UNIT_FIELDS));

    let current_usage = |days: i64| {
        let mut params = scope();
        params.extend(window(days));
        params.extend(fields(&USAGE_FIELDS));
        params
    };
    let mut global_usage = scope();
    global_usage.extend(fields(&USAGE_FIELDS));

    // The load balancer's check before it forwards a user's query about these units.
    let mut verify: Vec<(&str, String)> = user
        .uuids
        .iter()
        .map(|uuid| ("uuid", uuid.clone()))
        .collect();
    verify.push(("cluster_id", user.cluster_id.clone()));

    let login = user.name.as_str();
    vec![
        request(0, "units", units, login),
        request(1, "usage/current", current_usage(30), login),
        request(2, "usage/current", current_usage(365), login),
        request(3, "usage/global", global_usage, login),
        // The `cluster_id` variable of every dashboard.
        request(4, "projects", Vec::new(), login),
        // The cluster status dashboard's "All clusters in the time range", as an admin.
        request(5, "stats/current/admin", window(30), ADMIN),
        request(6, "units/verify", verify, login),
    ]
}
