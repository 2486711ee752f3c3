//! `/demo/units` and `/demo/usage`: random mock data in the reference's demo shape, for
//! trying dashboards without a cluster. Fresh on every call.

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::format_go_duration;
use crate::model::{MetricMap, Metrics, Unit, Usage};

const MANAGERS: [&str; 3] = ["slurm", "openstack", "k8s"];

fn projects_of(manager: &str) -> [&'static str; 2] {
    match manager {
        "slurm" => ["acc1", "acc2"],
        "openstack" => ["tenant1", "tenant2"],
        _ => ["ns1", "ns2"],
    }
}

fn running_state(manager: &str) -> &'static str {
    match manager {
        "slurm" => "RUNNING",
        "openstack" => "ACTIVE",
        _ => "Running",
    }
}

fn states_of(manager: &str) -> &'static [&'static str] {
    match manager {
        "slurm" => &[
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "PENDING",
            "REQUEUED",
        ],
        "openstack" => &["ACTIVE", "SHUTOFF", "DELETED", "BUILD", "ERROR"],
        _ => &["Running", "Succeeded", "Failed", "Pending", "Unknown"],
    }
}

fn is_pending(state: &str) -> bool {
    matches!(
        state,
        "PENDING" | "Pending" | "REQUEUED" | "BUILD" | "UNKNOWN"
    )
}

fn rfc1123(epoch_seconds: i64, zone: Tz) -> String {
    Utc.timestamp_opt(epoch_seconds, 0)
        .single()
        .map(|time| {
            time.with_timezone(&zone)
                .format("%a, %d %b %Y %H:%M:%S %Z")
                .to_string()
        })
        .unwrap_or_default()
}

/// Whole seconds as Go prints a duration, negative ones included (`-10m0s`).
fn signed_go_duration(seconds: i64) -> String {
    let text = format_go_duration(std::time::Duration::from_secs(seconds.unsigned_abs()));
    if seconds < 0 {
        format!("-{text}")
    } else {
        text
    }
}

fn map(entries: &[(&str, f64)]) -> MetricMap {
    MetricMap::from_pairs(entries)
}

fn uuid_v4(rng: &mut fastrand::Rng) -> String {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn io_maps(rng: &mut fastrand::Rng, second_key: &str) -> MetricMap {
    let mut value = || rng.i64(1_000_000..1_000_000_000) as f64;
    map(&[("bytes", value()), (second_key, value())])
}

/// 100 random units; the first 20 are running.
pub fn demo_units(now: i64, zone: Tz) -> Vec<Unit> {
    let mut rng = fastrand::Rng::new();
    (0..100)
        .map(|index: i64| {
            let manager = MANAGERS[rng.usize(..MANAGERS.len())];
            let start = now - rng.i64(1..=86_400);
            let created = start - rng.i64(5..7200);
            let running = index < 20;
            let state = if running {
                running_state(manager)
            } else {
                let states = states_of(manager);
                states[rng.usize(..states.len())]
            };
            let end = if running { 0 } else { now - rng.i64(1..=1800) };
            let pending = is_pending(state);
            let elapsed = match (pending, running) {
                (true, _) => 0,
                (false, true) => now - start,
                (false, false) => end - start,
            };
            let e = elapsed as f64;
            let usage = |rng: &mut fastrand::Rng| {
                if pending {
                    map(&[("usage", 0.0)])
                } else {
                    map(&[("usage", rng.f64() * 100.0)])
                }
            };
            let metrics = Metrics {
                total_time_seconds: map(&[
                    ("walltime", e),
                    ("alloc_cputime", 2.0 * e),
                    ("alloc_gputime", 5.0 * e),
                    ("alloc_cpumemtime", 4000.0 * e),
                    ("alloc_gpumemtime", 40_000.0 * e),
                ]),
                avg_cpu_usage: usage(&mut rng),
                avg_cpu_mem_usage: usage(&mut rng),
                avg_gpu_usage: usage(&mut rng),
                avg_gpu_mem_usage: usage(&mut rng),
                total_cpu_energy_usage_kwh: map(&[("usage", 1.1 * e)]),
                total_gpu_energy_usage_kwh: map(&[("usage", 15.0 * e)]),
                total_cpu_emissions_gms: map(&[("rte", 17.0 * e)]),
                total_gpu_emissions_gms: map(&[("rte", 158.0 * e)]),
                total_io_read_stats: io_maps(&mut rng, "requests"),
                total_io_write_stats: io_maps(&mut rng, "requests"),
                total_ingress_stats: io_maps(&mut rng, "packets"),
                total_egress_stats: io_maps(&mut rng, "packets"),
            };
            let projects = projects_of(manager);
            Unit {
                cluster_id: format!("{manager}-{}", rng.u8(0..3)),
                resource_manager: manager.to_owned(),
                uuid: if manager == "slurm" {
                    (now + index).to_string()
                } else {
                    uuid_v4(&mut rng)
                },
                name: format!("demo-{}", 100 - index),
                project: projects[rng.usize(..2)].to_owned(),
                groupname: "group".to_owned(),
                username: "user1".to_owned(),
                created_at: rfc1123(created, zone),
                started_at: if pending {
                    "Unknown".to_owned()
                } else {
                    rfc1123(start, zone)
                },
                ended_at: if pending || running {
                    "Unknown".to_owned()
                } else {
                    rfc1123(end, zone)
                },
                created_at_ts: created,
                started_at_ts: if pending { 0 } else { start },
                ended_at_ts: if pending { 0 } else { end },
                elapsed: signed_go_duration(elapsed),
                state: state.to_owned(),
                metrics,
                ..Unit::default()
            }
        })
        .collect()
}

/// One random usage row per (user, project) for `user1`…`user7`.
pub fn demo_usage() -> Vec<Usage> {
    let mut rng = fastrand::Rng::new();
    let projects: Vec<String> = (1..=5)
        .map(|n| format!("acc{n}"))
        .chain((1..=5).map(|n| format!("tenant{n}")))
        .chain((1..=4).map(|n| format!("ns{n}")))
        .collect();
    let mut rows = Vec::new();
    for user in 1..=7 {
        for _ in 0..rng.usize(1..=3) {
            let project = projects[rng.usize(..projects.len())].clone();
            let manager = if project.starts_with("acc") {
                "slurm"
            } else if project.starts_with("tenant") {
                "openstack"
            } else {
                "k8s"
            };
            let mut value = |max: f64| rng.f64() * max;
            let metrics = Metrics {
                total_time_seconds: map(&[
                    ("walltime", value(1e4)),
                    ("alloc_cputime", value(1e5)),
                    ("alloc_gputime", value(1e4)),
                    ("alloc_cpumemtime", value(1e8)),
                    ("alloc_gpumemtime", value(1e8)),
                ]),
                avg_cpu_usage: map(&[("usage", value(100.0))]),
                avg_cpu_mem_usage: map(&[("usage", value(100.0))]),
                avg_gpu_usage: map(&[("usage", value(100.0))]),
                avg_gpu_mem_usage: map(&[("usage", value(100.0))]),
                total_cpu_energy_usage_kwh: map(&[("usage", value(5e3))]),
                total_gpu_energy_usage_kwh: map(&[("usage", value(5e4))]),
                total_cpu_emissions_gms: map(&[("rte", value(5e4))]),
                total_gpu_emissions_gms: map(&[("rte", value(5e5))]),
                total_io_read_stats: io_maps(&mut rng, "requests"),
                total_io_write_stats: io_maps(&mut rng, "requests"),
                total_ingress_stats: io_maps(&mut rng, "packets"),
                total_egress_stats: io_maps(&mut rng, "packets"),
            };
            rows.push(Usage {
                cluster_id: String::new(),
                resource_manager: manager.to_owned(),
                num_units: rng.i64(0..1000),
                project,
                groupname: "group".to_owned(),
                username: format!("user{user}"),
                metrics,
            });
        }
    }
    rng.shuffle(&mut rows);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_units_have_the_reference_shape() {
        let units = demo_units(1_700_000_000, Tz::UTC);
        assert_eq!(units.len(), 100);
        assert_eq!(units[0].name, "demo-100");
        assert_eq!(units[99].name, "demo-1");
        for unit in &units[..20] {
            assert_eq!(unit.ended_at, "Unknown");
            assert_eq!(unit.ended_at_ts, 0);
        }
        for unit in &units {
            assert!(["slurm", "openstack", "k8s"].contains(&unit.resource_manager.as_str()));
            assert!(unit.cluster_id.starts_with(&unit.resource_manager));
            assert_eq!(unit.username, "user1");
        }
    }

    #[test]
    fn elapsed_prints_as_a_go_duration() {
        assert_eq!(signed_go_duration(0), "0s");
        assert_eq!(signed_go_duration(18_182), "5h3m2s");
        assert_eq!(signed_go_duration(-600), "-10m0s");
    }

    #[test]
    fn demo_usage_covers_seven_users() {
        let rows = demo_usage();
        let mut users: Vec<_> = rows.iter().map(|row| row.username.clone()).collect();
        users.sort();
        users.dedup();
        assert_eq!(users.len(), 7);
        assert!(rows.iter().all(|row| row.cluster_id.is_empty()));
    }
}
