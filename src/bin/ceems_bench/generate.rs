//! `ceems_bench generate`: a database of N units as a large centre's year would leave it,
//! one collect window per hour (`--window-minutes`), written through the server's own
//! bulk path ([`BulkLoader`]): units, usage, daily usage, the key index, the usage buckets, users,
//! projects and the resume point are what the update loop's `write_window` would have
//! stored for the same windows (a storage test compares both), at insert speed.
//!
//! The population is seeded and deterministic: users with log-normal activity (a few heavy
//! users, a long tail), each in one to three projects; jobs with log-normal durations (a
//! minute to three days), CPU counts from one core to several nodes, 15 % GPU jobs, SLURM's
//! end states, and every metric map the Prometheus updater fills.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{bail, Context};
use ceems_api_server::model::time::{format_dt, format_dtz};
use ceems_api_server::model::{Generic, List, MetricMap, Metrics, Project, Unit, User};
use ceems_api_server::pipeline::day_key;
use ceems_api_server::resource::demo::{format_elapsed, SplitMix64};
use ceems_api_server::storage::bulk::{BulkLoader, BulkWindow};
use ceems_api_server::storage::{StorageError, DATABASE_FILE_NAME};
use chrono_tz::Tz;
use indicatif::{ProgressBar, ProgressStyle};

const DAY_MS: i64 = 86_400_000;
const MIB: i64 = 1 << 20;

/// Options of `ceems_bench generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of units to write.
    #[arg(long)]
    pub units: u64,
    /// Data directory to create; the database is `<out>/ceems.db`.
    #[arg(long)]
    pub out: PathBuf,
    /// Days of history, ending at `--end`.
    #[arg(long, default_value_t = 365)]
    pub days: i64,
    /// Number of users (default: one per 3,300 units, between 50 and 3,000).
    #[arg(long)]
    pub users: Option<usize>,
    /// Number of projects (default: one per five users, at least 10).
    #[arg(long)]
    pub projects: Option<usize>,
    /// Cluster id of every unit.
    #[arg(long, default_value = "hpc")]
    pub cluster_id: String,
    /// End of the history, epoch seconds (default: now, down to the hour).
    #[arg(long)]
    pub end: Option<i64>,
    /// Time zone of the stored dates (the server's `TZ`).
    #[arg(long, default_value = "UTC")]
    pub time_zone: Tz,
    /// Length of a collect window in minutes (a divisor of a day): units are written by
    /// the window they ended in, and last updated at its end.
    #[arg(long, default_value_t = 60)]
    pub window_minutes: i64,
    /// Seed of the population and of every job.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// No progress bar (for logs and tests).
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.days < 1 {
        bail!("--days must be at least 1");
    }
    if args.window_minutes < 1 || DAY_MS % (args.window_minutes * 60_000) != 0 {
        bail!("--window-minutes must divide a day");
    }
    let database_path = args.out.join(DATABASE_FILE_NAME);
    if database_path.exists() {
        bail!(
            "{} exists: generate into a new directory",
            database_path.display()
        );
    }
    let end_ms = match args.end {
        Some(seconds) => seconds * 1000,
        None => {
            let now = chrono::Utc::now().timestamp();
            (now - now.rem_euclid(3600)) * 1000
        }
    };
    let users = args.users.unwrap_or_else(|| {
        usize::try_from(args.units / 3300)
            .unwrap_or(3000)
            .clamp(50, 3000)
    });
    let projects = args.projects.unwrap_or((users / 5).max(10));
    let population = Population::new(args.seed, users, projects, &args.cluster_id);
    let generator = Generator {
        population,
        cluster_id: args.cluster_id.clone(),
        zone: args.time_zone,
        seed: args.seed,
        units: args.units,
        days: args.days,
        window_ms: args.window_minutes * 60_000,
        end_ms,
    };

    let mut loader = BulkLoader::open(&args.out, &args.cluster_id)
        .with_context(|| format!("creating {}", database_path.display()))?;
    let progress = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.units)
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} units, {per_sec}, eta {eta}",
        )?
        .progress_chars("=> "),
    );

    // One thread makes the days' units, encodes their maps and folds their usage while
    // this one writes the previous day.
    let (sender, receiver) = mpsc::sync_channel::<anyhow::Result<Vec<BulkWindow>>>(2);
    let maker = std::thread::spawn(move || {
        for day in 0..generator.days {
            let windows = generator.day(day).map_err(anyhow::Error::from);
            if sender.send(windows).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    for windows in receiver {
        for window in windows? {
            let count = window.len() as u64;
            loader.write(window)?;
            progress.inc(count);
        }
    }
    maker
        .join()
        .map_err(|_| anyhow::anyhow!("the unit maker panicked"))?;
    if !args.quiet {
        eprintln!("rows written, building indexes and rollups");
    }
    let loaded = started.elapsed().as_secs_f64();
    let report = loader.finish()?;
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&database_path).map_or(0, |meta| meta.len());
    println!(
        "wrote {} units of {users} users in {projects} projects over {} days to {} in {seconds:.1} s ({:.0} units/s; rows {loaded:.1} s, indexes and rollups {:.1} s; {:.1} MiB)",
        report.units,
        args.days,
        database_path.display(),
        report.units as f64 / seconds,
        seconds - loaded,
        bytes as f64 / MIB as f64,
    );
    Ok(())
}

struct Person {
    name: String,
    uid: i64,
    /// Indexes into [`Population::projects`]; the first is the usual one.
    projects: Vec<usize>,
    /// Typical CPU count and GPU share: users run similar jobs.
    cpus: i64,
    gpu_share: f64,
}

struct Population {
    people: Vec<Person>,
    projects: Vec<String>,
    /// Cumulative activity weights of `people`, for sampling by a uniform number.
    cumulative: Vec<f64>,
    cluster_id: String,
}

impl Population {
    fn new(seed: u64, users: usize, projects: usize, cluster_id: &str) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x5eed_0000_0000_0001);
        let project_names: Vec<String> = (0..projects)
            .map(|index| format!("prj{index:05}"))
            .collect();
        let mut people = Vec::with_capacity(users);
        let mut cumulative = Vec::with_capacity(users);
        let mut total = 0.0;
        for index in 0..users {
            let count = 1 + rng.below(3);
            let mut mine = Vec::with_capacity(count);
            while mine.len() < count {
                let project = rng.below(projects);
                if !mine.contains(&project) {
                    mine.push(project);
                }
            }
            let cpus = [1, 2, 4, 8, 16, 32, 64, 128, 256][rng.below(9)];
            let gpu_share = if rng.next_unit() < 0.3 { 0.5 } else { 0.0 };
            people.push(Person {
                name: format!("usr{index:05}"),
                uid: 10_000 + index as i64,
                projects: mine,
                cpus,
                gpu_share,
            });
            total += normal(&mut rng).exp();
            cumulative.push(total);
        }
        Self {
            people,
            projects: project_names,
            cumulative,
            cluster_id: cluster_id.to_owned(),
        }
    }

    fn pick(&self, rng: &mut SplitMix64) -> &Person {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let target = rng.next_unit() * total;
        let index = self.cumulative.partition_point(|&sum| sum <= target);
        &self.people[index.min(self.people.len() - 1)]
    }

    fn users(&self, resource_manager: &str) -> Vec<User> {
        self.people
            .iter()
            .map(|person| User {
                uid: person.uid.to_string(),
                cluster_id: self.cluster_id.clone(),
                resource_manager: resource_manager.to_owned(),
                name: person.name.clone(),
                projects: List::from_strings(
                    &person
                        .projects
                        .iter()
                        .map(|&project| self.projects[project].as_str())
                        .collect::<Vec<_>>(),
                ),
                tags: List::default(),
            })
            .collect()
    }

    fn projects(&self, resource_manager: &str) -> Vec<Project> {
        let mut members: Vec<Vec<&str>> = vec![Vec::new(); self.projects.len()];
        for person in &self.people {
            for &project in &person.projects {
                members[project].push(&person.name);
            }
        }
        self.projects
            .iter()
            .zip(members)
            .map(|(name, users)| Project {
                uid: String::new(),
                cluster_id: self.cluster_id.clone(),
                resource_manager: resource_manager.to_owned(),
                name: name.clone(),
                users: List::from_strings(&users),
                tags: List::default(),
            })
            .collect()
    }
}

struct Generator {
    population: Population,
    cluster_id: String,
    zone: Tz,
    seed: u64,
    units: u64,
    days: i64,
    window_ms: i64,
    end_ms: i64,
}

impl Generator {
    /// The windows of day `day` (0 is the oldest) of the history, each with the units
    /// that ended in it; on the last day, the jobs still running at its end go to its last
    /// window, with the users and projects.
    fn day(&self, day: i64) -> Result<Vec<BulkWindow>, StorageError> {
        let start_ms = self.end_ms - (self.days - day) * DAY_MS;
        let end_ms = start_ms + DAY_MS;
        let per_day = self.units / self.days as u64;
        let extra = u64::from((day as u64) < self.units % self.days as u64);
        let count = per_day + extra;
        let first_id = day as u64 * per_day + (day as u64).min(self.units % self.days as u64);
        let last_day = day == self.days - 1;
        let windows = (DAY_MS / self.window_ms) as usize;
        let mut units: Vec<Vec<Unit>> = vec![Vec::new(); windows];
        for index in 0..count {
            let id = first_id + index;
            let mut rng = SplitMix64::new(self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ id);
            // On the last day, one job in fifty is still running at the end.
            let running = last_day && rng.below(50) == 0;
            let ended_ms = start_ms + (rng.next_unit() * DAY_MS as f64) as i64;
            let window = if running {
                windows - 1
            } else {
                (((ended_ms - start_ms) / self.window_ms) as usize).min(windows - 1)
            };
            let window_end_ms = start_ms + (window as i64 + 1) * self.window_ms;
            units[window].push(self.unit(id, ended_ms, window_end_ms, running, &mut rng));
        }
        units
            .into_iter()
            .enumerate()
            .map(|(window, units)| {
                let window_end_ms = start_ms + (window as i64 + 1) * self.window_ms;
                let (users, projects) = if last_day && window_end_ms == end_ms {
                    (
                        self.population.users("slurm"),
                        self.population.projects("slurm"),
                    )
                } else {
                    (Vec::new(), Vec::new())
                };
                BulkWindow::new(
                    &self.cluster_id,
                    window_end_ms,
                    format_dt(window_end_ms.div_euclid(1000), self.zone),
                    day_key(window_end_ms, self.zone),
                    units,
                    users,
                    projects,
                )
            })
            .collect()
    }

    fn unit(
        &self,
        id: u64,
        ended_ms: i64,
        window_end_ms: i64,
        running: bool,
        rng: &mut SplitMix64,
    ) -> Unit {
        let person = self.population.pick(rng);
        let project = &self.population.projects[person.projects[if rng.next_unit() < 0.8 {
            0
        } else {
            rng.below(person.projects.len())
        }]];
        // Log-normal around 40 minutes, from a minute to three days.
        let duration_ms =
            ((40.0 * 60.0 * (1.6 * normal(rng)).exp()).clamp(60.0, 3.0 * 86_400.0) * 1000.0) as i64;
        let start_ms = ended_ms - duration_ms;
        let submit_ms = start_ms - ((rng.next_unit() * rng.next_unit() * 7200.0) * 1000.0) as i64;
        let cpus = (person.cpus as f64 * (0.5 + rng.next_unit()))
            .round()
            .max(1.0) as i64;
        let nodes = (cpus + 63) / 64;
        let gpus = if rng.next_unit() < person.gpu_share.max(0.05) {
            [1, 2, 4, 8][rng.below(4)]
        } else {
            0
        };
        let mem_bytes = cpus * 4096 * MIB;
        let (state, exit_code, ended_at, ended_at_ts, elapsed_ms) = if running {
            (
                "RUNNING",
                "0:0",
                "Unknown".to_owned(),
                0,
                window_end_ms - start_ms,
            )
        } else {
            let (state, exit_code) = match rng.below(100) {
                0..=79 => ("COMPLETED", "0:0"),
                80..=89 => ("FAILED", "1:0"),
                90..=96 => ("CANCELLED", "0:15"),
                _ => ("TIMEOUT", "0:0"),
            };
            (
                state,
                exit_code,
                format_dtz(ended_ms, self.zone),
                ended_ms,
                duration_ms,
            )
        };
        let walltime = elapsed_ms as f64 / 1000.0;
        let cpu_percent = 5.0 + 90.0 * rng.next_unit();
        let cpu_kwh = (nodes as f64 * 40.0 + cpus as f64 * (1.5 + 8.5 * cpu_percent / 100.0))
            * walltime
            / 3.6e6;
        let gpu_percent = 10.0 + 85.0 * rng.next_unit();
        let gpu_kwh = gpus as f64 * (60.0 + 290.0 * gpu_percent / 100.0) * walltime / 3.6e6;
        let intensity = 40.0 + 20.0 * rng.next_unit();
        let io_bytes = walltime * cpus as f64 * 2e5 * rng.next_unit();
        let network_bytes = walltime * nodes as f64 * 1e6 * rng.next_unit();

        let mut metrics = Metrics {
            total_time_seconds: map(&[
                ("walltime", walltime),
                ("alloc_cputime", cpus as f64 * walltime),
                ("alloc_cpumemtime", (mem_bytes / MIB) as f64 * walltime),
                ("alloc_gputime", gpus as f64 * walltime),
                ("alloc_gpumemtime", if gpus > 0 { walltime } else { 0.0 }),
            ]),
            avg_cpu_usage: map(&[("global", cpu_percent)]),
            avg_cpu_mem_usage: map(&[("global", 10.0 + 60.0 * rng.next_unit())]),
            total_cpu_energy_usage_kwh: map(&[("total", cpu_kwh)]),
            total_cpu_emissions_gms: emissions(cpu_kwh, intensity),
            total_io_write_stats: map(&[
                ("bytes_total", io_bytes * 0.4),
                ("requests_total", io_bytes * 0.4 / 65536.0),
                ("errors_total", 0.0),
            ]),
            total_io_read_stats: map(&[
                ("bytes_total", io_bytes * 0.6),
                ("requests_total", io_bytes * 0.6 / 65536.0),
                ("errors_total", 0.0),
            ]),
            total_ingress_stats: map(&[("bytes_total", network_bytes)]),
            total_egress_stats: map(&[("bytes_total", network_bytes * 0.3)]),
            ..Metrics::default()
        };
        if gpus > 0 {
            metrics.avg_gpu_usage = map(&[("global", gpu_percent)]);
            metrics.avg_gpu_mem_usage = map(&[("global", 20.0 + 60.0 * rng.next_unit())]);
            metrics.total_gpu_energy_usage_kwh = map(&[("total", gpu_kwh)]);
            metrics.total_gpu_emissions_gms = emissions(gpu_kwh, intensity);
        }
        let partition = if gpus > 0 { "gpu" } else { "cpu" };
        let first_node = rng.below(2000);
        let nodelist = if nodes == 1 {
            format!("n{first_node:04}")
        } else {
            format!("n[{first_node:04}-{:04}]", first_node as i64 + nodes - 1)
        };
        let allocation = format!(
            r#"{{"billing":{},"cpus":{cpus},"gpus":{gpus},"mem":{mem_bytes},"nodes":{nodes}}}"#,
            cpus + 4 * gpus
        );
        let tags = format!(
            r#"{{"exit_code":"{exit_code}","gid":{},"nodelist":"{nodelist}","partition":"{partition}","qos":"normal","uid":{},"workdir":"/scratch/{}/run{}"}}"#,
            person.uid,
            person.uid,
            person.name,
            id % 1000
        );
        Unit {
            cluster_id: self.cluster_id.clone(),
            resource_manager: "slurm".to_owned(),
            uuid: (1_000_000 + id).to_string(),
            name: format!("job{}", id % 97),
            project: project.clone(),
            groupname: project.clone(),
            username: person.name.clone(),
            created_at: format_dtz(submit_ms, self.zone),
            started_at: format_dtz(start_ms, self.zone),
            ended_at,
            created_at_ts: submit_ms,
            started_at_ts: start_ms,
            ended_at_ts,
            elapsed: format_elapsed(elapsed_ms / 1000),
            state: state.to_owned(),
            allocation: Generic::decode(&allocation).expect("a valid allocation object"),
            metrics,
            tags: Generic::decode(&tags).expect("a valid tags object"),
        }
    }
}

fn map(entries: &[(&str, f64)]) -> MetricMap {
    MetricMap::from_pairs(entries)
}

/// Grams for the three emission-factor providers of the updater's built-in queries.
fn emissions(kwh: f64, intensity: f64) -> MetricMap {
    map(&[
        ("emaps_total", kwh * intensity * 1.1),
        ("owid_total", kwh * intensity * 1.2),
        ("rte_total", kwh * intensity),
    ])
}

/// Standard normal (Box-Muller).
fn normal(rng: &mut SplitMix64) -> f64 {
    let u = rng.next_unit().max(f64::MIN_POSITIVE);
    let v = rng.next_unit();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}
