//! The `demo` resource manager: a synthetic SLURM-like cluster whose jobs, users and
//! projects are generated from a seed, so the server can be tried without a real
//! resource manager.
//!
//! Time is cut into epoch-aligned one-minute slots. Each slot submits 0 to 3 jobs whose
//! every property comes from a hash of (seed, slot, job index), so the stream is the same
//! whenever and however often it is asked for. A job appears in every window it overlaps,
//! with the metrics of that overlap only: usage ratios, power, carbon intensity and IO
//! rates are piecewise constant over epoch-aligned ten-minute segments and are integrated
//! over the overlap, so adding a job's windows (and re-weighting its averages by the
//! `alloc_*time` keys, as the writer does) gives the same lifetime values however time
//! is cut into windows.

use std::collections::BTreeMap;
use std::f64::consts::PI;

use chrono_tz::Tz;
use serde_json::Value;

use crate::config::ClusterConfig;
use crate::model::time::format_dtz;
use crate::model::{Generic, List, MetricMap, Metrics, Project, Unit, User};
use crate::pipeline::Window;

/// The seed when `extra_config.seed` is absent (or not an integer).
pub const DEFAULT_SEED: u64 = 0x00C0_FFEE_5EED;

/// Jobs are submitted in slots of this length, epoch-aligned.
const SLOT_MS: i64 = 60_000;
/// At most this many jobs per slot (job ids are `slot × 4 + index`).
const MAX_JOBS_PER_SLOT: i64 = 4;
/// Usage, power and IO rates change at most once per segment, epoch-aligned.
const SEGMENT_MS: i64 = 600_000;
/// The longest a job waits in the queue.
const MAX_QUEUE_WAIT_MS: i64 = 3_600_000;
/// Job durations are log-uniform between these (seconds).
const MIN_DURATION_SECONDS: f64 = 120.0;
const MAX_DURATION_SECONDS: f64 = 43_200.0;
/// The time limits a timed-out job ran into (seconds).
const TIME_LIMITS_SECONDS: [i64; 5] = [3_600, 7_200, 14_400, 28_800, 43_200];

const MIB: i64 = 1024 * 1024;
const GIB: i64 = 1024 * MIB;

/// A demo project (SLURM account) and its unix group id.
struct DemoProject {
    name: &'static str,
    gid: i64,
}

const PROJECTS: [DemoProject; 4] = [
    DemoProject {
        name: "astro",
        gid: 2001,
    },
    DemoProject {
        name: "bio",
        gid: 2002,
    },
    DemoProject {
        name: "climate",
        gid: 2003,
    },
    DemoProject {
        name: "materials",
        gid: 2004,
    },
];

/// A demo user, the projects (indexes into [`PROJECTS`]) they may charge, the first being
/// their primary group.
struct DemoUser {
    name: &'static str,
    uid: i64,
    projects: &'static [usize],
}

const USERS: [DemoUser; 9] = [
    DemoUser {
        name: "alice",
        uid: 1001,
        projects: &[0, 2],
    },
    DemoUser {
        name: "bob",
        uid: 1002,
        projects: &[0],
    },
    DemoUser {
        name: "carol",
        uid: 1003,
        projects: &[1],
    },
    DemoUser {
        name: "dave",
        uid: 1004,
        projects: &[1, 3],
    },
    DemoUser {
        name: "erin",
        uid: 1005,
        projects: &[2],
    },
    DemoUser {
        name: "frank",
        uid: 1006,
        projects: &[2, 3],
    },
    DemoUser {
        name: "grace",
        uid: 1007,
        projects: &[3],
    },
    DemoUser {
        name: "heidi",
        uid: 1008,
        projects: &[0, 1],
    },
    DemoUser {
        name: "ivan",
        uid: 1009,
        projects: &[3],
    },
];

/// SLURM `exit:signal` codes of failed jobs.
const FAILED_EXIT_CODES: [&str; 3] = ["1:0", "2:0", "127:0"];

const JOB_NAMES: [&str; 8] = [
    "relax",
    "md_run",
    "train",
    "postproc",
    "mesh",
    "fft_bench",
    "assembly",
    "inference",
];

/// The synthetic cluster of one `clusters[]` entry with `manager: demo`.
#[derive(Debug, Clone)]
pub struct DemoCluster {
    cluster_id: String,
    resource_manager: String,
    zone: Tz,
    seed: u64,
}

impl DemoCluster {
    /// Reads `extra_config.seed` (an integer; absent: [`DEFAULT_SEED`]). A seed of another
    /// type is an error naming the key, so a typo stops the start instead of silently
    /// changing the stream.
    pub fn new(cluster: &ClusterConfig, zone: Tz) -> Result<Self, String> {
        let seed = seed_from_extra_config(&cluster.extra_config)
            .map_err(|message| format!("extra_config.seed: {message}"))?;
        Ok(Self {
            cluster_id: cluster.id.clone(),
            resource_manager: cluster.manager.clone(),
            zone,
            seed,
        })
    }

    /// The seed in use.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Every job that ran during `window` (started before its end, still running or ended
    /// after its start), in job id order, with the metrics of its overlap with the window.
    /// Jobs still running at the window end are `RUNNING` with `ended_at` `Unknown`.
    pub fn units(&self, window: &Window) -> Vec<Unit> {
        if window.end_ms <= window.start_ms {
            return Vec::new();
        }
        let first_slot = (window.start_ms - SLOT_MS - MAX_QUEUE_WAIT_MS - max_duration_ms())
            .div_euclid(SLOT_MS)
            .max(0);
        let last_slot = (window.end_ms - 1).div_euclid(SLOT_MS);
        let mut units = Vec::new();
        for slot in first_slot..=last_slot {
            for index in 0..self.jobs_in_slot(slot) {
                let job = self.job(slot, index);
                if job.start_ms < window.end_ms && job.end_ms > window.start_ms {
                    units.push(self.unit(&job, window));
                }
            }
        }
        units
    }

    /// All demo users and projects with their memberships, as `sacctmgr` lists
    /// associations: sorted, `uid` empty, `tags` null.
    pub fn users_projects(&self, _window: &Window) -> (Vec<User>, Vec<Project>) {
        let mut users: Vec<User> = USERS
            .iter()
            .map(|user| {
                let mut projects: Vec<&str> = user
                    .projects
                    .iter()
                    .map(|index| PROJECTS[*index].name)
                    .collect();
                projects.sort_unstable();
                User {
                    uid: String::new(),
                    cluster_id: self.cluster_id.clone(),
                    resource_manager: self.resource_manager.clone(),
                    name: user.name.to_owned(),
                    projects: List::from_strings(&projects),
                    tags: List::default(),
                }
            })
            .collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        let mut projects: Vec<Project> = PROJECTS
            .iter()
            .enumerate()
            .map(|(project_index, project)| {
                let mut members: Vec<&str> = USERS
                    .iter()
                    .filter(|user| user.projects.contains(&project_index))
                    .map(|user| user.name)
                    .collect();
                members.sort_unstable();
                Project {
                    uid: String::new(),
                    cluster_id: self.cluster_id.clone(),
                    resource_manager: self.resource_manager.clone(),
                    name: project.name.to_owned(),
                    users: List::from_strings(&members),
                    tags: List::default(),
                }
            })
            .collect();
        projects.sort_by(|a, b| a.name.cmp(&b.name));
        (users, projects)
    }

    /// How many jobs the slot submits: 0 (60 %), 1 (28 %), 2 (9 %) or 3 (3 %).
    fn jobs_in_slot(&self, slot: i64) -> i64 {
        let draw = hash_stream(self.seed, &[STREAM_SLOT, slot as u64]).next_unit();
        match draw {
            x if x < 0.60 => 0,
            x if x < 0.88 => 1,
            x if x < 0.97 => 2,
            _ => 3,
        }
    }

    fn job(&self, slot: i64, index: i64) -> Job {
        let mut rng = hash_stream(self.seed, &[STREAM_JOB, slot as u64, index as u64]);
        let id = slot * MAX_JOBS_PER_SLOT + index;
        let user = &USERS[rng.below(USERS.len())];
        let project = &PROJECTS[user.projects[rng.below(user.projects.len())]];
        let group = &PROJECTS[user.projects[0]];
        let gpu = rng.next_unit() < 0.25;

        // Whole seconds, as SLURM reports them; jobs of a slot are submitted in id order.
        let submit_ms = slot * SLOT_MS + index * 15_000 + 1000 * rng.below(15) as i64;
        let queue_wait_ms = 1000 * (rng.next_unit().powi(4) * 3_600.0) as i64;
        let start_ms = submit_ms + queue_wait_ms;
        let mut duration_seconds =
            log_uniform(rng.next_unit(), MIN_DURATION_SECONDS, MAX_DURATION_SECONDS).round() as i64;
        let outcome = match rng.next_unit() {
            x if x < 0.72 => Outcome::Completed,
            x if x < 0.84 => Outcome::Failed(FAILED_EXIT_CODES[rng.below(FAILED_EXIT_CODES.len())]),
            x if x < 0.93 => Outcome::Cancelled,
            _ => Outcome::Timeout,
        };
        if outcome == Outcome::Timeout {
            duration_seconds = TIME_LIMITS_SECONDS
                .into_iter()
                .find(|limit| *limit >= duration_seconds)
                .unwrap_or(duration_seconds);
        }
        let end_ms = start_ms + 1000 * duration_seconds;

        let (partition, nodes, cpus, mem_bytes, gpus, node_prefix, node_count, node_width) = if gpu
        {
            let nodes = if rng.next_unit() < 0.8 { 1 } else { 2 };
            let gpus_per_node = *rng.pick(&[1, 2, 4]);
            (
                "gpu",
                nodes,
                nodes * gpus_per_node * 8,
                nodes * gpus_per_node * 64 * GIB,
                nodes * gpus_per_node,
                "gpu",
                16,
                2,
            )
        } else {
            let nodes = match rng.next_unit() {
                x if x < 0.7 => 1,
                x if x < 0.9 => 2,
                _ => 4,
            };
            let cpus_per_node = *rng.pick(&[1, 2, 4, 8, 16, 32, 64]);
            let mem_per_cpu = *rng.pick(&[2, 4, 8]) * GIB;
            let cpus = nodes * cpus_per_node;
            ("cpu", nodes, cpus, cpus * mem_per_cpu, 0, "cpu", 128, 3)
        };
        let first_node = 1 + rng.below((node_count - nodes + 1) as usize) as i64;
        let node_names: Vec<String> = (first_node..first_node + nodes)
            .map(|number| format!("{node_prefix}{number:0node_width$}"))
            .collect();
        let nodelist = if nodes == 1 {
            node_names[0].clone()
        } else {
            format!(
                "{node_prefix}[{first_node:0node_width$}-{:0node_width$}]",
                first_node + nodes - 1
            )
        };
        let qos = match rng.next_unit() {
            x if x < 0.8 => "normal",
            x if x < 0.9 => "high",
            _ => "low",
        };
        let name = format!("{}_{:03}", rng.pick(&JOB_NAMES), rng.below(1000));
        let workdir = format!("/scratch/{}/{}/{}", project.name, user.name, name);

        let profile = UsageProfile {
            cpu_percent: if gpu {
                10.0 + 30.0 * rng.next_unit()
            } else {
                15.0 + 80.0 * rng.next_unit()
            },
            cpu_mem_percent: 5.0 + 80.0 * rng.next_unit(),
            gpu_percent: 30.0 + 68.0 * rng.next_unit(),
            gpu_mem_percent: 10.0 + 80.0 * rng.next_unit(),
            io_write_bytes_per_second: log_uniform(rng.next_unit(), 1e3, 5e7),
            io_read_bytes_per_second: log_uniform(rng.next_unit(), 1e3, 5e7),
            io_request_bytes: *rng.pick(&[4_096.0, 65_536.0, 1_048_576.0]),
            io_error_ratio: if rng.next_unit() < 0.85 {
                0.0
            } else {
                log_uniform(rng.next_unit(), 1e-5, 1e-3)
            },
            network_bytes_per_second: if nodes > 1 {
                log_uniform(rng.next_unit(), 1e6, 1e9)
            } else {
                log_uniform(rng.next_unit(), 1e3, 1e6)
            },
        };

        Job {
            id,
            user,
            project: project.name,
            group,
            name,
            partition,
            qos,
            nodes,
            cpus,
            mem_bytes,
            gpus,
            billing: cpus + 24 * gpus,
            nodelist,
            node_names,
            workdir,
            submit_ms,
            start_ms,
            end_ms,
            outcome,
            profile,
        }
    }

    fn unit(&self, job: &Job, window: &Window) -> Unit {
        let finished = job.end_ms <= window.end_ms;
        let (ended_at, ended_at_ts, elapsed_ms) = if finished {
            (
                format_dtz(job.end_ms, self.zone),
                job.end_ms,
                job.end_ms - job.start_ms,
            )
        } else {
            ("Unknown".to_owned(), 0, window.end_ms - job.start_ms)
        };
        let (state, exit_code) = if finished {
            match job.outcome {
                Outcome::Completed => ("COMPLETED".to_owned(), "0:0"),
                Outcome::Failed(exit_code) => ("FAILED".to_owned(), exit_code),
                Outcome::Cancelled => (format!("CANCELLED by {}", job.user.uid), "0:15"),
                Outcome::Timeout => ("TIMEOUT".to_owned(), "0:0"),
            }
        } else {
            ("RUNNING".to_owned(), "0:0")
        };

        let mut allocation = BTreeMap::new();
        allocation.insert("billing", Value::from(job.billing));
        allocation.insert("cpus", Value::from(job.cpus));
        allocation.insert("gpus", Value::from(job.gpus));
        allocation.insert("mem", Value::from(job.mem_bytes));
        allocation.insert("nodes", Value::from(job.nodes));
        let mut tags = BTreeMap::new();
        tags.insert("exit_code", Value::from(exit_code));
        tags.insert("gid", Value::from(job.group.gid));
        tags.insert("nodelist", Value::from(job.nodelist.as_str()));
        tags.insert("nodelistexp", Value::from(job.node_names.join("|")));
        tags.insert("partition", Value::from(job.partition));
        tags.insert("qos", Value::from(job.qos));
        tags.insert("uid", Value::from(job.user.uid));
        tags.insert("workdir", Value::from(job.workdir.as_str()));

        let overlap_start = job.start_ms.max(window.start_ms);
        let overlap_end = job.end_ms.min(window.end_ms);
        Unit {
            cluster_id: self.cluster_id.clone(),
            resource_manager: self.resource_manager.clone(),
            uuid: job.id.to_string(),
            name: job.name.clone(),
            project: job.project.to_owned(),
            groupname: job.group.name.to_owned(),
            username: job.user.name.to_owned(),
            created_at: format_dtz(job.submit_ms, self.zone),
            started_at: format_dtz(job.start_ms, self.zone),
            ended_at,
            created_at_ts: job.submit_ms,
            started_at_ts: job.start_ms,
            ended_at_ts,
            elapsed: format_elapsed(elapsed_ms.div_euclid(1000)),
            state,
            allocation: generic(&allocation),
            metrics: self.overlap_metrics(job, overlap_start, overlap_end),
            tags: generic(&tags),
        }
    }

    /// The job's metrics over `[from_ms, to_ms)`: time-weighted averages and integrals of
    /// the per-segment samples.
    fn overlap_metrics(&self, job: &Job, from_ms: i64, to_ms: i64) -> Metrics {
        let mut integral = Integral::default();
        let mut segment = from_ms.div_euclid(SEGMENT_MS);
        while segment * SEGMENT_MS < to_ms {
            let segment_from = from_ms.max(segment * SEGMENT_MS);
            let segment_to = to_ms.min((segment + 1) * SEGMENT_MS);
            let seconds = (segment_to - segment_from) as f64 / 1000.0;
            integral.add(&self.sample(job, segment), seconds);
            segment += 1;
        }

        let walltime = integral.seconds;
        let average = |integral: f64| {
            if walltime > 0.0 {
                integral / walltime
            } else {
                0.0
            }
        };
        let has_gpus = job.gpus > 0;
        let mut metrics = Metrics {
            total_time_seconds: map(&[
                ("walltime", walltime),
                ("alloc_cputime", job.cpus as f64 * walltime),
                ("alloc_cpumemtime", (job.mem_bytes / MIB) as f64 * walltime),
                ("alloc_gputime", job.gpus as f64 * walltime),
                ("alloc_gpumemtime", if has_gpus { walltime } else { 0.0 }),
            ]),
            avg_cpu_usage: map(&[("global", average(integral.cpu_percent))]),
            avg_cpu_mem_usage: map(&[("global", average(integral.cpu_mem_percent))]),
            total_cpu_energy_usage_kwh: map(&[("total", integral.cpu_energy_kwh)]),
            total_cpu_emissions_gms: emissions(&integral.cpu_emissions_g),
            total_io_write_stats: map(&[
                ("bytes_total", integral.io_write_bytes),
                ("requests_total", integral.io_write_requests),
                ("errors_total", integral.io_write_errors),
            ]),
            total_io_read_stats: map(&[
                ("bytes_total", integral.io_read_bytes),
                ("requests_total", integral.io_read_requests),
                ("errors_total", integral.io_read_errors),
            ]),
            total_ingress_stats: map(&[("bytes_total", integral.ingress_bytes)]),
            total_egress_stats: map(&[("bytes_total", integral.egress_bytes)]),
            ..Metrics::default()
        };
        if has_gpus {
            metrics.avg_gpu_usage = map(&[("global", average(integral.gpu_percent))]);
            metrics.avg_gpu_mem_usage = map(&[("global", average(integral.gpu_mem_percent))]);
            metrics.total_gpu_energy_usage_kwh = map(&[("total", integral.gpu_energy_kwh)]);
            metrics.total_gpu_emissions_gms = emissions(&integral.gpu_emissions_g);
        }
        metrics
    }

    /// What the job does during one segment: its profile with a little variation, the
    /// power it draws and the grid's carbon intensity.
    fn sample(&self, job: &Job, segment: i64) -> Sample {
        let mut rng = hash_stream(self.seed, &[STREAM_SEGMENT, job.id as u64, segment as u64]);
        let mut jitter = |value: f64, spread: f64| {
            (value + spread * (2.0 * rng.next_unit() - 1.0)).clamp(0.5, 100.0)
        };
        let profile = &job.profile;
        let cpu_percent = jitter(profile.cpu_percent, 6.0);
        let cpu_mem_percent = jitter(profile.cpu_mem_percent, 3.0);
        let gpu_percent = jitter(profile.gpu_percent, 6.0);
        let gpu_mem_percent = jitter(profile.gpu_mem_percent, 3.0);
        let mut rate = |value: f64| value * (0.5 + rng.next_unit());
        let io_write_bytes_per_second = rate(profile.io_write_bytes_per_second);
        let io_read_bytes_per_second = rate(profile.io_read_bytes_per_second);
        let ingress_bytes_per_second = rate(profile.network_bytes_per_second);
        let egress_bytes_per_second = rate(profile.network_bytes_per_second);

        // Idle node power plus a per-core share that grows with usage; GPUs alike.
        let cpu_watts =
            job.nodes as f64 * 40.0 + job.cpus as f64 * (1.5 + 8.5 * cpu_percent / 100.0);
        let gpu_watts = job.gpus as f64 * (60.0 + 290.0 * gpu_percent / 100.0);
        Sample {
            cpu_percent,
            cpu_mem_percent,
            gpu_percent,
            gpu_mem_percent,
            cpu_watts,
            gpu_watts,
            carbon_g_per_kwh: carbon_intensity(segment * SEGMENT_MS),
            io_write_bytes_per_second,
            io_read_bytes_per_second,
            io_request_bytes: profile.io_request_bytes,
            io_error_ratio: profile.io_error_ratio,
            ingress_bytes_per_second,
            egress_bytes_per_second,
        }
    }
}

/// The seed of a demo cluster's `extra_config`: absent or null is [`DEFAULT_SEED`]; an
/// integer (negative ones by their two's complement) is the seed; anything else is an
/// error message.
pub fn seed_from_extra_config(extra_config: &yaml_serde::Value) -> Result<u64, String> {
    let seed = match extra_config {
        yaml_serde::Value::Mapping(_) => extra_config.get("seed"),
        _ => None,
    };
    match seed {
        None | Some(yaml_serde::Value::Null) => Ok(DEFAULT_SEED),
        Some(yaml_serde::Value::Number(number)) => number
            .as_u64()
            .or_else(|| number.as_i64().map(|integer| integer as u64))
            .ok_or_else(|| format!("expected an integer, found {number}")),
        Some(other) => Err(format!(
            "expected an integer, found {}",
            match other {
                yaml_serde::Value::Bool(_) => "a boolean",
                yaml_serde::Value::String(_) => "a string",
                yaml_serde::Value::Sequence(_) => "a list",
                yaml_serde::Value::Mapping(_) => "a mapping",
                _ => "another type",
            }
        )),
    }
}

/// A job's final state, reported once it has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Completed,
    /// With its exit code.
    Failed(&'static str),
    Cancelled,
    Timeout,
}

/// How a job uses what it was given, on average.
#[derive(Debug, Clone)]
struct UsageProfile {
    cpu_percent: f64,
    cpu_mem_percent: f64,
    gpu_percent: f64,
    gpu_mem_percent: f64,
    io_write_bytes_per_second: f64,
    io_read_bytes_per_second: f64,
    io_request_bytes: f64,
    io_error_ratio: f64,
    /// Each way.
    network_bytes_per_second: f64,
}

struct Job {
    id: i64,
    user: &'static DemoUser,
    project: &'static str,
    group: &'static DemoProject,
    name: String,
    partition: &'static str,
    qos: &'static str,
    nodes: i64,
    cpus: i64,
    mem_bytes: i64,
    gpus: i64,
    billing: i64,
    nodelist: String,
    node_names: Vec<String>,
    workdir: String,
    submit_ms: i64,
    start_ms: i64,
    end_ms: i64,
    outcome: Outcome,
    profile: UsageProfile,
}

/// One segment's rates.
struct Sample {
    cpu_percent: f64,
    cpu_mem_percent: f64,
    gpu_percent: f64,
    gpu_mem_percent: f64,
    cpu_watts: f64,
    gpu_watts: f64,
    /// Per provider, in [`PROVIDERS`] order.
    carbon_g_per_kwh: [f64; 3],
    io_write_bytes_per_second: f64,
    io_read_bytes_per_second: f64,
    io_request_bytes: f64,
    io_error_ratio: f64,
    ingress_bytes_per_second: f64,
    egress_bytes_per_second: f64,
}

/// Integrals over time (seconds) of the samples.
#[derive(Default)]
struct Integral {
    seconds: f64,
    cpu_percent: f64,
    cpu_mem_percent: f64,
    gpu_percent: f64,
    gpu_mem_percent: f64,
    cpu_energy_kwh: f64,
    gpu_energy_kwh: f64,
    cpu_emissions_g: [f64; 3],
    gpu_emissions_g: [f64; 3],
    io_write_bytes: f64,
    io_write_requests: f64,
    io_write_errors: f64,
    io_read_bytes: f64,
    io_read_requests: f64,
    io_read_errors: f64,
    ingress_bytes: f64,
    egress_bytes: f64,
}

impl Integral {
    fn add(&mut self, sample: &Sample, seconds: f64) {
        const JOULES_PER_KWH: f64 = 3.6e6;
        self.seconds += seconds;
        self.cpu_percent += sample.cpu_percent * seconds;
        self.cpu_mem_percent += sample.cpu_mem_percent * seconds;
        self.gpu_percent += sample.gpu_percent * seconds;
        self.gpu_mem_percent += sample.gpu_mem_percent * seconds;
        let cpu_kwh = sample.cpu_watts * seconds / JOULES_PER_KWH;
        let gpu_kwh = sample.gpu_watts * seconds / JOULES_PER_KWH;
        self.cpu_energy_kwh += cpu_kwh;
        self.gpu_energy_kwh += gpu_kwh;
        for (provider, intensity) in sample.carbon_g_per_kwh.iter().enumerate() {
            self.cpu_emissions_g[provider] += cpu_kwh * intensity;
            self.gpu_emissions_g[provider] += gpu_kwh * intensity;
        }
        let write_bytes = sample.io_write_bytes_per_second * seconds;
        let read_bytes = sample.io_read_bytes_per_second * seconds;
        let write_requests = write_bytes / sample.io_request_bytes;
        let read_requests = read_bytes / sample.io_request_bytes;
        self.io_write_bytes += write_bytes;
        self.io_write_requests += write_requests;
        self.io_write_errors += write_requests * sample.io_error_ratio;
        self.io_read_bytes += read_bytes;
        self.io_read_requests += read_requests;
        self.io_read_errors += read_requests * sample.io_error_ratio;
        self.ingress_bytes += sample.ingress_bytes_per_second * seconds;
        self.egress_bytes += sample.egress_bytes_per_second * seconds;
    }
}

/// The emission-factor providers of the TSDB updater's built-in queries, with the mean
/// carbon intensity (g/kWh) and daily swing each reports here.
const PROVIDERS: [(&str, f64, f64); 3] = [
    ("rte_total", 45.0, 0.30),
    ("emaps_total", 52.0, 0.30),
    ("owid_total", 56.0, 0.0),
];

/// Grid carbon intensity per provider at `epoch_ms`: a daily cycle peaking in the
/// evening (the yearly average of `owid` does not change).
fn carbon_intensity(epoch_ms: i64) -> [f64; 3] {
    let hour_of_day = epoch_ms.rem_euclid(86_400_000) as f64 / 3_600_000.0;
    let cycle = (2.0 * PI * (hour_of_day - 13.0) / 24.0).sin();
    PROVIDERS.map(|(_, mean, swing)| mean * (1.0 + swing * cycle))
}

fn emissions(grams: &[f64; 3]) -> MetricMap {
    MetricMap(
        PROVIDERS
            .iter()
            .zip(grams)
            .map(|((key, _, _), value)| ((*key).to_owned(), *value))
            .collect(),
    )
}

fn map(entries: &[(&str, f64)]) -> MetricMap {
    MetricMap::from_pairs(entries)
}

fn generic(map: &BTreeMap<&str, Value>) -> Generic {
    let text = serde_json::to_string(map).expect("a map of strings and integers encodes");
    Generic::decode(&text).expect("a JSON object of strings and integers is a valid Generic")
}

/// Whole seconds as SLURM prints an elapsed time: `HH:MM:SS`, or `D-HH:MM:SS` from one
/// day on.
pub fn format_elapsed(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let clock = format!(
        "{:02}:{:02}:{:02}",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    );
    if days > 0 {
        format!("{days}-{clock}")
    } else {
        clock
    }
}

fn max_duration_ms() -> i64 {
    1000 * TIME_LIMITS_SECONDS[TIME_LIMITS_SECONDS.len() - 1].max(MAX_DURATION_SECONDS as i64)
}

/// `unit` in `[0, 1)` mapped log-uniformly onto `[low, high)`.
fn log_uniform(unit: f64, low: f64, high: f64) -> f64 {
    (low.ln() + unit * (high.ln() - low.ln())).exp()
}

// Distinct first words of the hashed streams, so that a slot's count, a job's
// properties and a segment's samples never share a stream.
const STREAM_SLOT: u64 = 1;
const STREAM_JOB: u64 = 2;
const STREAM_SEGMENT: u64 = 3;

/// The finaliser of SplitMix64: a bijective 64-bit mix.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A SplitMix64 generator seeded from a hash of `seed` and `words`.
fn hash_stream(seed: u64, words: &[u64]) -> SplitMix64 {
    let mut state = mix64(seed);
    for word in words {
        state = mix64(state ^ mix64(word.wrapping_add(GOLDEN_GAMMA)));
    }
    SplitMix64 { state }
}

/// SplitMix64 (Steele, Lea and Flood): small, fast and good enough for synthetic data.
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose stream is a hash of `seed`.
    pub fn new(seed: u64) -> Self {
        hash_stream(seed, &[])
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)`, 53 bits.
    pub fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is negligible for small `n`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::time::parse_dtz;
    use crate::model::Metric;

    /// 2024-03-04T00:00:00Z, a Monday.
    const MONDAY_MS: i64 = 1_709_510_400_000;
    const HOUR_MS: i64 = 3_600_000;

    fn cluster_config(extra_config: &str) -> ClusterConfig {
        ClusterConfig {
            id: "demo-0".into(),
            manager: "demo".into(),
            extra_config: yaml_serde::from_str(extra_config).unwrap(),
            ..ClusterConfig::default()
        }
    }

    fn demo(extra_config: &str) -> DemoCluster {
        DemoCluster::new(&cluster_config(extra_config), chrono_tz::Europe::Paris).unwrap()
    }

    fn window(start_ms: i64, end_ms: i64) -> Window {
        Window::new(start_ms, end_ms, chrono_tz::Europe::Paris)
    }

    fn allocation_of(unit: &Unit, key: &str) -> f64 {
        let allocation: serde_json::Value =
            serde_json::from_str(unit.allocation.as_json()).unwrap();
        allocation[key].as_f64().unwrap()
    }

    #[test]
    fn splitmix64_matches_the_published_sequence() {
        let mut rng = SplitMix64 { state: 1_234_567 };
        let outputs: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        assert_eq!(
            outputs,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
    }

    #[test]
    fn elapsed_prints_like_slurm() {
        assert_eq!(format_elapsed(0), "00:00:00");
        assert_eq!(format_elapsed(3_599), "00:59:59");
        assert_eq!(format_elapsed(86_399), "23:59:59");
        assert_eq!(format_elapsed(86_400), "1-00:00:00");
        assert_eq!(format_elapsed(90_061), "1-01:01:01");
        assert_eq!(format_elapsed(10 * 86_400 + 5), "10-00:00:05");
        assert_eq!(format_elapsed(-5), "00:00:00");
    }

    #[test]
    fn the_seed_is_an_integer_or_the_default() {
        let seed = |text: &str| seed_from_extra_config(&yaml_serde::from_str(text).unwrap());
        assert_eq!(seed("~"), Ok(DEFAULT_SEED));
        assert_eq!(seed("{}"), Ok(DEFAULT_SEED));
        assert_eq!(seed("other: 1"), Ok(DEFAULT_SEED));
        assert_eq!(seed("seed:"), Ok(DEFAULT_SEED));
        assert_eq!(seed("seed: 42"), Ok(42));
        assert_eq!(seed("seed: -1"), Ok(u64::MAX));
        assert_eq!(
            seed("seed: '42'"),
            Err("expected an integer, found a string".to_owned())
        );
        assert_eq!(
            seed("seed: [1]"),
            Err("expected an integer, found a list".to_owned())
        );
        assert_eq!(
            seed("seed: 1.5"),
            Err("expected an integer, found 1.5".to_owned())
        );
        // A bad seed stops the cluster from being built, naming the key.
        assert_eq!(
            DemoCluster::new(&cluster_config("seed: forty-two"), chrono_tz::Europe::Paris).err(),
            Some("extra_config.seed: expected an integer, found a string".to_owned())
        );
        assert_eq!(demo("seed: 7").seed(), 7);
    }

    #[test]
    fn the_stream_is_deterministic_for_a_seed_and_differs_between_seeds() {
        let window = window(MONDAY_MS, MONDAY_MS + HOUR_MS);
        let first = demo("seed: 7").units(&window);
        assert_eq!(first, demo("seed: 7").units(&window));
        let other = demo("seed: 8").units(&window);
        assert_ne!(first, other);
        assert_eq!(
            demo("").units(&window),
            demo(&format!("seed: {DEFAULT_SEED}")).units(&window)
        );
    }

    #[test]
    fn an_hour_holds_a_plausible_number_of_jobs_that_all_overlap_it() {
        let cluster = demo("");
        for hour in 0..24 {
            let window = window(MONDAY_MS + hour * HOUR_MS, MONDAY_MS + (hour + 1) * HOUR_MS);
            let units = cluster.units(&window);
            assert!(
                (20..=200).contains(&units.len()),
                "hour {hour}: {} units",
                units.len()
            );
            let mut previous_id = -1;
            for unit in &units {
                let id: i64 = unit.uuid.parse().unwrap();
                assert!(id > previous_id, "units are in job id order");
                previous_id = id;
                assert!(unit.created_at_ts <= unit.started_at_ts);
                assert!(unit.started_at_ts < window.end_ms, "{unit:?}");
                if unit.ended_at_ts == 0 {
                    assert_eq!(unit.state, "RUNNING");
                    assert_eq!(unit.ended_at, "Unknown");
                } else {
                    assert!(unit.ended_at_ts > window.start_ms);
                    assert!(unit.ended_at_ts <= window.end_ms);
                    assert_ne!(unit.state, "RUNNING");
                }
            }
        }
    }

    #[test]
    fn units_look_like_slurm_jobs() {
        let cluster = demo("");
        let window = window(MONDAY_MS, MONDAY_MS + 24 * HOUR_MS);
        let units = cluster.units(&window);
        let gpu_units = units
            .iter()
            .filter(|unit| allocation_of(unit, "gpus") > 0.0)
            .count();
        let gpu_share = gpu_units as f64 / units.len() as f64;
        assert!((0.15..0.35).contains(&gpu_share), "{gpu_share}");
        for state in ["COMPLETED", "FAILED", "CANCELLED by ", "TIMEOUT", "RUNNING"] {
            assert!(
                units.iter().any(|unit| unit.state.starts_with(state)),
                "no {state}"
            );
        }
        let users: std::collections::BTreeSet<&str> =
            units.iter().map(|unit| unit.username.as_str()).collect();
        assert_eq!(users.len(), USERS.len());
        for unit in &units {
            assert_eq!(unit.cluster_id, "demo-0");
            assert_eq!(unit.resource_manager, "demo");
            let started = parse_dtz(&unit.started_at).unwrap();
            assert_eq!(started.timestamp_millis(), unit.started_at_ts);
            // Paris is at UTC+1 in March before the change to summer time.
            assert_eq!(started.offset().local_minus_utc(), 3_600);
            assert_eq!(
                parse_dtz(&unit.created_at).unwrap().timestamp_millis(),
                unit.created_at_ts
            );
            let tags: serde_json::Value = serde_json::from_str(unit.tags.as_json()).unwrap();
            let keys: Vec<&String> = tags.as_object().unwrap().keys().collect();
            assert_eq!(
                keys,
                [
                    "exit_code",
                    "gid",
                    "nodelist",
                    "nodelistexp",
                    "partition",
                    "qos",
                    "uid",
                    "workdir"
                ]
            );
            let allocation: serde_json::Value =
                serde_json::from_str(unit.allocation.as_json()).unwrap();
            let keys: Vec<&String> = allocation.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["billing", "cpus", "gpus", "mem", "nodes"]);
            let nodes = allocation_of(unit, "nodes") as usize;
            assert_eq!(
                tags["nodelistexp"].as_str().unwrap().split('|').count(),
                nodes
            );
            if allocation_of(unit, "gpus") == 0.0 {
                assert_eq!(tags["partition"], "cpu");
                assert!(unit.metrics.avg_gpu_usage.is_empty());
                assert!(unit.metrics.total_gpu_energy_usage_kwh.is_empty());
            } else {
                assert_eq!(tags["partition"], "gpu");
                let usage = unit.metrics.avg_gpu_usage.get("global").unwrap();
                assert!((0.5..=100.0).contains(&usage), "{usage}");
            }
            let usage = unit.metrics.avg_cpu_usage.get("global").unwrap();
            assert!((0.5..=100.0).contains(&usage), "{usage}");
            // Emissions are energy times an intensity within the providers' range.
            let energy = unit
                .metrics
                .total_cpu_energy_usage_kwh
                .get("total")
                .unwrap();
            let rte = unit
                .metrics
                .total_cpu_emissions_gms
                .get("rte_total")
                .unwrap();
            assert!(rte >= energy * 45.0 * 0.7 && rte <= energy * 45.0 * 1.3);
            let owid = unit
                .metrics
                .total_cpu_emissions_gms
                .get("owid_total")
                .unwrap();
            assert!((owid - energy * 56.0).abs() <= 1e-9 * owid.max(1.0));
        }
    }

    #[test]
    fn total_time_seconds_is_the_overlap_with_the_window() {
        let cluster = demo("");
        // Window ends that are not on whole seconds.
        let window = window(MONDAY_MS + 250, MONDAY_MS + 2 * HOUR_MS + 125);
        let units = cluster.units(&window);
        assert!(units.iter().any(|unit| unit.ended_at_ts == 0));
        assert!(units
            .iter()
            .any(|unit| unit.started_at_ts < window.start_ms));
        for unit in &units {
            let from = unit.started_at_ts.max(window.start_ms);
            let to = if unit.ended_at_ts == 0 {
                window.end_ms
            } else {
                unit.ended_at_ts
            };
            let walltime = (to - from) as f64 / 1000.0;
            let times = &unit.metrics.total_time_seconds;
            assert!((times.get("walltime").unwrap() - walltime).abs() < 1e-9);
            let cpus = allocation_of(unit, "cpus");
            let gpus = allocation_of(unit, "gpus");
            let mem_mib = (allocation_of(unit, "mem") / 1_048_576.0).floor();
            assert_eq!(times.get("alloc_cputime"), Some(cpus * walltime));
            assert_eq!(times.get("alloc_gputime"), Some(gpus * walltime));
            assert_eq!(times.get("alloc_cpumemtime"), Some(mem_mib * walltime));
            assert_eq!(
                times.get("alloc_gpumemtime"),
                Some(if gpus > 0.0 { walltime } else { 0.0 })
            );
        }
    }

    /// A job's metrics summed over consecutive windows: totals added, averages weighted
    /// by their `alloc_*time` key, as the writer does.
    #[derive(Default, Debug)]
    struct Accumulated {
        totals: BTreeMap<(Metric, String), f64>,
        weighted: BTreeMap<(Metric, String), (f64, f64)>,
        last: Option<Unit>,
    }

    impl Accumulated {
        fn add(&mut self, unit: &Unit) {
            for metric in Metric::ALL {
                let map = unit.metrics.get(metric);
                match metric.weight_key() {
                    None => {
                        for (key, value) in &map.0 {
                            *self.totals.entry((metric, key.clone())).or_default() += value;
                        }
                    }
                    Some(weight_key) => {
                        let weight = unit.metrics.total_time_seconds.get(weight_key).unwrap();
                        for (key, value) in &map.0 {
                            let entry = self.weighted.entry((metric, key.clone())).or_default();
                            entry.0 += value * weight;
                            entry.1 += weight;
                        }
                    }
                }
            }
            self.last = Some(unit.clone());
        }

        fn averages(&self) -> BTreeMap<(Metric, String), f64> {
            self.weighted
                .iter()
                .map(|(key, (sum, weight))| (key.clone(), sum / weight))
                .collect()
        }
    }

    fn accumulate(cluster: &DemoCluster, cuts: &[i64]) -> BTreeMap<String, Accumulated> {
        let mut jobs: BTreeMap<String, Accumulated> = BTreeMap::new();
        for pair in cuts.windows(2) {
            for unit in cluster.units(&window(pair[0], pair[1])) {
                jobs.entry(unit.uuid.clone()).or_default().add(&unit);
            }
        }
        jobs
    }

    fn assert_close(left: f64, right: f64, what: &str) {
        let tolerance = 1e-9 * left.abs().max(right.abs()).max(1.0);
        assert!(
            (left - right).abs() <= tolerance,
            "{what}: {left} != {right}"
        );
    }

    #[test]
    fn a_jobs_windows_add_up_to_the_same_totals_however_time_is_cut() {
        let cluster = demo("seed: 11");
        let a = MONDAY_MS + 5 * HOUR_MS;
        let c = a + 6 * HOUR_MS;
        // [a, b] + [b, c] with b on no slot or segment boundary, and a finer uneven cut.
        let b = a + 37 * 60_000 + 123;
        let whole = accumulate(&cluster, &[a, c]);
        let halves = accumulate(&cluster, &[a, b, c]);
        let pieces = accumulate(
            &cluster,
            &[a, a + 1, a + 59_999, b, b + 7 * 60_000, c - HOUR_MS - 17, c],
        );
        assert!(whole.len() > 50, "{}", whole.len());
        assert_eq!(
            whole.keys().collect::<Vec<_>>(),
            halves.keys().collect::<Vec<_>>()
        );
        assert_eq!(
            whole.keys().collect::<Vec<_>>(),
            pieces.keys().collect::<Vec<_>>()
        );
        for (uuid, job) in &whole {
            for cut in [&halves[uuid], &pieces[uuid]] {
                assert_eq!(
                    job.totals.keys().collect::<Vec<_>>(),
                    cut.totals.keys().collect::<Vec<_>>()
                );
                for (key, value) in &job.totals {
                    assert_close(*value, cut.totals[key], &format!("{uuid} {key:?}"));
                }
                let (whole_averages, cut_averages) = (job.averages(), cut.averages());
                assert_eq!(
                    whole_averages.keys().collect::<Vec<_>>(),
                    cut_averages.keys().collect::<Vec<_>>()
                );
                for (key, value) in &whole_averages {
                    assert_close(*value, cut_averages[key], &format!("{uuid} {key:?}"));
                }
                // The last window's view of the job is the same as the whole window's.
                let (last, whole_last) = (cut.last.as_ref().unwrap(), job.last.as_ref().unwrap());
                assert_eq!(last.started_at, whole_last.started_at);
                assert_eq!(last.ended_at, whole_last.ended_at);
                assert_eq!(last.state, whole_last.state);
                assert_eq!(last.elapsed, whole_last.elapsed);
            }
        }
    }

    #[test]
    fn a_running_job_ends_in_a_later_window_with_the_same_start() {
        let cluster = demo("");
        let first = window(MONDAY_MS, MONDAY_MS + HOUR_MS);
        let running: Vec<Unit> = cluster
            .units(&first)
            .into_iter()
            .filter(|unit| unit.ended_at_ts == 0)
            .collect();
        assert!(!running.is_empty());
        let later = cluster.units(&window(first.end_ms, first.end_ms + 13 * HOUR_MS));
        for unit in running {
            let elapsed_seconds = (first.end_ms - unit.started_at_ts) / 1000;
            assert_eq!(unit.elapsed, format_elapsed(elapsed_seconds));
            let ended = later
                .iter()
                .find(|other| other.uuid == unit.uuid)
                .expect("a running job is in the next window");
            assert_eq!(ended.started_at, unit.started_at);
            assert_eq!(ended.started_at_ts, unit.started_at_ts);
            assert_eq!(ended.allocation, unit.allocation);
            assert!(ended.ended_at_ts > first.end_ms);
            assert_ne!(ended.state, "RUNNING");
            assert_eq!(
                ended.elapsed,
                format_elapsed((ended.ended_at_ts - ended.started_at_ts) / 1000)
            );
        }
    }

    #[test]
    fn an_empty_or_inverted_window_has_no_units() {
        let cluster = demo("");
        assert!(cluster.units(&window(MONDAY_MS, MONDAY_MS)).is_empty());
        assert!(cluster.units(&window(MONDAY_MS, MONDAY_MS - 1)).is_empty());
    }

    #[test]
    fn users_and_projects_are_the_demo_associations() {
        let (users, projects) = demo("").users_projects(&window(MONDAY_MS, MONDAY_MS + 1));
        let users: Vec<(String, String, String, String, String)> = users
            .into_iter()
            .map(|user| {
                (
                    user.cluster_id,
                    user.resource_manager,
                    user.name,
                    user.projects.as_json().to_owned(),
                    user.tags.as_json().to_owned(),
                )
            })
            .collect();
        let expected_users = [
            ("alice", r#"["astro","climate"]"#),
            ("bob", r#"["astro"]"#),
            ("carol", r#"["bio"]"#),
            ("dave", r#"["bio","materials"]"#),
            ("erin", r#"["climate"]"#),
            ("frank", r#"["climate","materials"]"#),
            ("grace", r#"["materials"]"#),
            ("heidi", r#"["astro","bio"]"#),
            ("ivan", r#"["materials"]"#),
        ]
        .map(|(name, projects)| {
            (
                "demo-0".to_owned(),
                "demo".to_owned(),
                name.to_owned(),
                projects.to_owned(),
                "null".to_owned(),
            )
        });
        assert_eq!(users, expected_users);
        let projects: Vec<(String, String)> = projects
            .into_iter()
            .map(|project| (project.name, project.users.as_json().to_owned()))
            .collect();
        assert_eq!(
            projects,
            [
                ("astro", r#"["alice","bob","heidi"]"#),
                ("bio", r#"["carol","dave","heidi"]"#),
                ("climate", r#"["alice","erin","frank"]"#),
                ("materials", r#"["dave","frank","grace","ivan"]"#),
            ]
            .map(|(name, users)| (name.to_owned(), users.to_owned()))
        );
    }
}
