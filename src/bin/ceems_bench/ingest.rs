//! `ceems_bench ingest`: units per second through the server's update loop, from the
//! stand-in `sacct` of `tests/fixtures/bulk-slurm` printing N jobs and a real Prometheus
//! answering the `tsdb` updater's built-in queries for them.
//!
//! The jobs all start within one hour that ended more than three hours ago, so that they
//! have all ended and come in one window (or a few, with `--max-update-interval`). Each job
//! has a power and a CPU usage series at the scrape interval, backfilled with `promtool`.
//! The server runs with JSON logs; its `window applied` lines give the time of each stage.
//! Afterwards the database is checked read-only: every job is a unit, counted once in
//! usage, with exactly the energy and CPU usage of its series.

mod jobs;
mod report;
mod tsdb;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use self::jobs::{Job, Stream};
use self::tsdb::{log_tail, Prometheus};

const DEFAULT_SACCT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bulk-slurm");

/// Options of `ceems_bench ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server binary to measure.
    #[arg(long)]
    pub server: PathBuf,
    /// Jobs the stand-in sacct prints.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: i64,
    /// Where to write the results as JSON (the summary goes to stdout as markdown).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Prometheus' scrape interval in seconds, and the grain of the jobs' start and end
    /// (must divide 3600).
    #[arg(long, default_value_t = 60)]
    pub scrape_interval: i64,
    /// The server's `data.max_update_interval`: the longest window (a Prometheus duration).
    #[arg(long, default_value = "1d")]
    pub max_update_interval: String,
    /// The directory of the stand-in `sacct` and `sacctmgr`.
    #[arg(long, default_value = DEFAULT_SACCT_DIR)]
    pub sacct_dir: PathBuf,
    /// A working directory to use and keep (it must not exist or be empty); by default a
    /// temporary one, removed when the run succeeds.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Seconds to wait for every job to be stored.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
}

/// One `window applied` line of the server's log.
#[derive(Debug, Clone, Serialize)]
pub struct WindowLine {
    /// When it was logged, epoch ms.
    pub logged_at_ms: i64,
    pub window_start: String,
    pub window_end: String,
    pub units: u64,
    pub new_units: u64,
    pub failed_rows: u64,
    pub fetch_ms: u64,
    pub units_ms: u64,
    pub updaters_ms: u64,
    pub users_projects_ms: u64,
    pub write_ms: u64,
    pub total_ms: u64,
    /// The stand-in sacct alone over the same window (run after the server stopped).
    pub sacct_alone_ms: u64,
}

/// What the check of the database found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    pub units: i64,
    pub usage_num_units: i64,
    pub daily_usage_num_units: i64,
    /// Units with `total_cpu_energy_usage_kwh.total > 0`.
    pub units_with_energy: i64,
    /// Units whose energy or CPU usage is not that of their series (relative error above
    /// 1e-6), or whose uuid is no job.
    pub units_off: i64,
    pub first_off: Option<String>,
    /// `update failed` lines in the server's log.
    pub failed_updates: u64,
    pub ok: bool,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub jobs: i64,
    pub scrape_interval_s: i64,
    pub max_update_interval: String,
    pub backfill_samples: u64,
    pub backfill_series: u64,
    pub backfill_files: usize,
    pub backfill_ms: u64,
    pub prometheus_start_ms: u64,
    pub windows: Vec<WindowLine>,
    /// From the start of the first window to the log line of the last one.
    pub wall_ms: i64,
    /// From the server's spawn to the log line of the last window.
    pub wall_from_spawn_ms: i64,
    pub verification: Verification,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.jobs <= 0 {
        bail!("--jobs must be more than 0");
    }
    if args.scrape_interval <= 0 || 3600 % args.scrape_interval != 0 {
        bail!("--scrape-interval must divide 3600");
    }
    let (workdir, temporary) = match &args.workdir {
        Some(dir) => {
            if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
                bail!("--workdir {} is not empty", dir.display());
            }
            (dir.clone(), false)
        }
        None => (
            std::env::temp_dir().join(format!(
                "ceems-bench-ingest-{}-{}",
                std::process::id(),
                chrono::Utc::now().timestamp_millis()
            )),
            true,
        ),
    };
    std::fs::create_dir_all(workdir.join("prometheus"))?;
    std::fs::create_dir_all(workdir.join("server"))?;

    let now = chrono::Utc::now().timestamp();
    // Every job has ended (the longest runs 7499 s after the last start) a few minutes
    // before the window ends at the server's start.
    let epoch = (now - 3600 - 7500 - 300).div_euclid(3600) * 3600;
    let stream = Stream {
        count: args.jobs,
        epoch,
        align: args.scrape_interval,
    };

    eprintln!(
        "ingest: backfilling the series of {} jobs at {} s ...",
        args.jobs, args.scrape_interval
    );
    let backfill = tsdb::backfill(&stream, &workdir.join("prometheus"))?;
    let started = Instant::now();
    let prometheus = Prometheus::start(&workdir.join("prometheus"), args.scrape_interval)?;
    let prometheus_start = started.elapsed();

    eprintln!("ingest: running the server ...");
    let (windows, failed_updates, wall_from_spawn_ms) =
        run_server(args, &stream, &workdir.join("server"), &prometheus.url())?;
    drop(prometheus);

    let mut windows = windows;
    for window in &mut windows {
        window.sacct_alone_ms = time_sacct_alone(args, &stream, window)?;
    }
    let mut verification = verify(&workdir.join("server/data/ceems.db"), &stream)?;
    verification.failed_updates = failed_updates;
    verification.ok = verification.ok && failed_updates == 0;

    let wall_ms = match (windows.first(), windows.last()) {
        (Some(first), Some(last)) => {
            last.logged_at_ms - (first.logged_at_ms - i64::try_from(first.total_ms)?)
        }
        _ => 0,
    };
    let results = Results {
        jobs: args.jobs,
        scrape_interval_s: args.scrape_interval,
        max_update_interval: args.max_update_interval.clone(),
        backfill_samples: backfill.samples,
        backfill_series: backfill.series,
        backfill_files: backfill.files,
        backfill_ms: millis(backfill.elapsed),
        prometheus_start_ms: millis(prometheus_start),
        windows,
        wall_ms,
        wall_from_spawn_ms,
        verification,
    };
    print!("{}", report::markdown(&results));
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if !results.verification.ok {
        bail!(
            "verification failed; the server's log and database are kept in {}",
            workdir.display()
        );
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&workdir);
    }
    Ok(())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The server process; killed on drop if still running.
struct Server {
    child: Child,
}

impl Server {
    /// SIGTERM, then SIGKILL after 30 s.
    fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the server did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the server until every job is stored; returns its `window applied` lines, the
/// number of `update failed` lines and the time from its spawn to the last window (ms).
fn run_server(
    args: &Args,
    stream: &Stream,
    dir: &Path,
    tsdb_url: &str,
) -> anyhow::Result<(Vec<WindowLine>, u64, i64)> {
    let config = dir.join("config.yml");
    std::fs::write(&config, server_config(args, stream, dir, tsdb_url))?;
    let log_path = dir.join("server.log");
    let log = std::fs::File::create(&log_path)?;
    let spawned_at_ms = chrono::Utc::now().timestamp_millis();
    let child = Command::new(&args.server)
        .arg(format!("--config.file={}", config.display()))
        .arg("--web.listen-address=127.0.0.1:0")
        .arg("--log.format=json")
        .arg("--log.level=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", args.server.display()))?;
    let mut server = Server { child };

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut reader = BufReader::new(std::fs::File::open(&log_path)?);
    let mut pending = String::new();
    let mut windows = Vec::new();
    let mut failed_updates = 0;
    let mut stored = 0_u64;
    let wanted = u64::try_from(stream.count)?;
    while stored < wanted {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "the server exited with {status} before every job was stored: {}",
                    log_tail(&log_path)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{stored} of {wanted} jobs stored after {} s: {}",
                    args.timeout,
                    log_tail(&log_path)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        // A line may be read while it is still being written.
        pending.push_str(&line);
        if !pending.ends_with('\n') {
            continue;
        }
        let complete = std::mem::take(&mut pending);
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&complete) else {
            continue;
        };
        let message = event["fields"]["message"].as_str().unwrap_or_default();
        if message.starts_with("update failed") {
            failed_updates += 1;
            eprintln!("ingest: {}", complete.trim());
        } else if message == "window applied" {
            let window = window_line(&event)?;
            stored += window.new_units;
            eprintln!(
                "ingest: window {} .. {}: {} units in {} ms",
                window.window_start, window.window_end, window.units, window.total_ms
            );
            windows.push(window);
        }
    }
    server.stop()?;
    let last = windows
        .last()
        .map_or(spawned_at_ms, |window| window.logged_at_ms);
    Ok((windows, failed_updates, last - spawned_at_ms))
}

fn server_config(args: &Args, stream: &Stream, dir: &Path, tsdb_url: &str) -> String {
    let update_from = chrono::DateTime::from_timestamp(stream.epoch, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S");
    let environment: String = stream
        .environment()
        .iter()
        .map(|(name, value)| format!("        {name}: \"{value}\"\n"))
        .collect();
    format!(
        "ceems_api_server:
  data:
    path: {data}
    update_from: {update_from}
    time_zone: UTC
    update_interval: 15s
    max_update_interval: {max_update_interval}
    retention_period: 10y
  admin:
    users: [admin]
clusters:
  - id: bulk
    manager: slurm
    cli:
      path: {sacct_dir}
      environment_variables:
{environment}    updaters: [tsdb-0]
updaters:
  - id: tsdb-0
    updater: tsdb
    web:
      url: {tsdb_url}
",
        data = dir.join("data").display(),
        max_update_interval = args.max_update_interval,
        sacct_dir = args.sacct_dir.display(),
    )
}

fn window_line(event: &serde_json::Value) -> anyhow::Result<WindowLine> {
    let fields = &event["fields"];
    let number = |name: &str| -> anyhow::Result<u64> {
        fields[name]
            .as_u64()
            .with_context(|| format!("`window applied` without {name}: {event}"))
    };
    let text = |name: &str| fields[name].as_str().unwrap_or_default().to_owned();
    let logged_at = event["timestamp"]
        .as_str()
        .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
        .with_context(|| format!("log line without a timestamp: {event}"))?;
    Ok(WindowLine {
        logged_at_ms: logged_at.timestamp_millis(),
        window_start: text("window_start"),
        window_end: text("window_end"),
        units: number("units")?,
        new_units: number("new_units")?,
        failed_rows: number("failed_rows")?,
        fetch_ms: number("fetch_ms")?,
        units_ms: number("units_ms")?,
        updaters_ms: number("updaters_ms")?,
        users_projects_ms: number("users_projects_ms")?,
        write_ms: number("write_ms")?,
        total_ms: number("total_ms")?,
        sacct_alone_ms: 0,
    })
}

/// Runs the stand-in sacct alone over `window` with the server's environment, and returns
/// how long it took to print everything (ms).
fn time_sacct_alone(args: &Args, stream: &Stream, window: &WindowLine) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut child = Command::new(args.sacct_dir.join("sacct"))
        .args(["--starttime", &window.window_start])
        .args(["--endtime", &window.window_end])
        .envs(stream.environment())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run the stand-in sacct")?;
    let mut output = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_end(&mut output)?;
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("the stand-in sacct alone exited with {status}");
    }
    Ok(millis(started.elapsed()))
}

/// Checks the database read-only against the jobs.
fn verify(path: &Path, stream: &Stream) -> anyhow::Result<Verification> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", path.display()))?;
    let one = |sql: &str| -> anyhow::Result<i64> {
        Ok(conn
            .query_row(sql, [], |row| row.get::<_, Option<i64>>(0))?
            .unwrap_or(0))
    };
    let mut verification = Verification {
        units: one("SELECT COUNT(*) FROM units")?,
        usage_num_units: one("SELECT SUM(num_units) FROM usage")?,
        daily_usage_num_units: one("SELECT SUM(num_units) FROM daily_usage")?,
        ..Verification::default()
    };
    let jobs: HashMap<String, Job> = stream.jobs().map(|job| (job.uuid.clone(), job)).collect();
    let mut statement = conn.prepare(
        "SELECT uuid, json_extract(total_cpu_energy_usage_kwh, '$.total'),
            json_extract(avg_cpu_usage, '$.global')
         FROM units",
    )?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let uuid: String = row.get(0)?;
        let energy: Option<f64> = row.get(1)?;
        let cpu_usage: Option<f64> = row.get(2)?;
        if energy.is_some_and(|energy| energy > 0.0) {
            verification.units_with_energy += 1;
        }
        let off = match jobs.get(&uuid) {
            None => Some(format!("unit {uuid} is no job")),
            Some(job) if !close(energy, job.energy_kwh()) => Some(format!(
                "unit {uuid}: energy {energy:?} kWh instead of {}",
                job.energy_kwh()
            )),
            Some(job) if !close(cpu_usage, job.cpu_usage) => Some(format!(
                "unit {uuid}: CPU usage {cpu_usage:?} instead of {}",
                job.cpu_usage
            )),
            Some(_) => None,
        };
        if let Some(off) = off {
            verification.units_off += 1;
            verification.first_off.get_or_insert(off);
        }
    }
    verification.ok = verification.units == stream.count
        && verification.usage_num_units == stream.count
        && verification.daily_usage_num_units == stream.count
        && verification.units_with_energy == stream.count
        && verification.units_off == 0;
    Ok(verification)
}

fn close(actual: Option<f64>, expected: f64) -> bool {
    actual.is_some_and(|actual| (actual - expected).abs() <= 1e-6 * expected.abs())
}
