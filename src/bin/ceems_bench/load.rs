//! `ceems_bench load` and `ceems_bench http-floor`.
//!
//! `load` starts the server on an existing database and replays what Grafana sends when
//! many users open their dashboards, in four phases on one server process:
//!
//! 1. capture: each route once, alone, keeping the SQL the server logs for it;
//! 2. all at once: every request of every user concurrently (current usage uncached,
//!    each user being distinct; the admins' identical stats requests share one count);
//! 3. sustained: one task per user looping over its dashboards (current usage and admin
//!    stats cached);
//! 4. sequential: one client, each route repeated.
//!
//! Then the floors: the captured SQL in the `sqlite3` shell on the same file, and
//! `http-floor` (this binary, another process) answering the same sizes under phases 3
//! and 4.

mod floor;
mod measure;
mod report;
mod server;
mod workload;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ceems_api_server::config::parse_prometheus_duration;

use measure::{Outcome, Sample, Target};
use report::{Errors, Memory, Report, RouteReport, Stats};
use server::Server;
use workload::{dashboard_requests, is_cached_route, BenchUser, Request, ROUTES};

/// Options of `ceems_bench load`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory holding `ceems.db`.
    #[arg(long)]
    pub data: PathBuf,
    /// The `ceems_api_server` binary to measure.
    #[arg(long)]
    pub server: PathBuf,
    /// Distinct users opening their dashboards at once (virtual users in the sustained
    /// phase).
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// How long the sustained phase lasts, against the server and against the HTTP floor.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Repetitions of each route in the sequential phase and of each statement in sqlite3.
    #[arg(long, default_value_t = 20)]
    pub repeat: usize,
    /// Where the full numbers are written as JSON.
    #[arg(long)]
    pub out: PathBuf,
    /// A name for this run in the report (e.g. the dataset size).
    #[arg(long)]
    pub label: Option<String>,
    /// The `time_zone` the database was written in.
    #[arg(long, default_value = "UTC")]
    pub time_zone: String,
    /// The SQLite shell.
    #[arg(long, default_value = "sqlite3")]
    pub sqlite3: PathBuf,
}

/// Options of `ceems_bench http-floor`.
#[derive(Debug, clap::Args)]
pub struct FloorArgs {
    /// Address to listen on (port 0: any free port, printed on the first line).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// `NAME=BYTES`: `GET /NAME` answers a JSON success envelope of BYTES bytes.
    #[arg(long = "route", value_parser = parse_floor_route)]
    pub routes: Vec<(String, usize)>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_prometheus_duration(text).map_err(|error| error.to_string())
}

fn parse_floor_route(text: &str) -> Result<(String, usize), String> {
    let (name, size) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=BYTES, got {text:?}"))?;
    let size = size
        .parse()
        .map_err(|_| format!("{size:?} is not a number of bytes"))?;
    Ok((name.to_owned(), size))
}

pub fn run_floor(args: &FloorArgs) -> anyhow::Result<()> {
    let routes: HashMap<String, bytes::Bytes> = args
        .routes
        .iter()
        .map(|(name, size)| (name.clone(), floor::floor_body(*size)))
        .collect();
    tokio::runtime::Runtime::new()?.block_on(floor::serve_floor(args.listen, routes))
}

/// How long the capture waits for more statements after the last one.
const CAPTURE_QUIET: Duration = Duration::from_millis(300);
const HOUR_S: i64 = 3600;

pub fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.users > 0, "--users must be at least 1");
    anyhow::ensure!(args.repeat >= 2, "--repeat must be at least 2");
    let db = args.data.join("ceems.db");
    anyhow::ensure!(db.is_file(), "{} does not exist", db.display());
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let users = workload::pick_users(&db, args.users, now, &args.time_zone)?;
    let work_dir = std::env::temp_dir().join(format!("ceems-bench-load-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    let result = measure_all(args, &db, &users, now, &work_dir);
    let _ = std::fs::remove_dir_all(&work_dir);
    let report = result?;

    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&args.out, json).with_context(|| format!("write {}", args.out.display()))?;
    print!("{}", report.markdown());
    let errors = report.errors.total();
    if errors > 0 {
        for sample in &report.errors.samples {
            eprintln!("error: {sample}");
        }
        anyhow::bail!("{errors} errors (see {})", args.out.display());
    }
    Ok(())
}

/// The server side of the run: phases 1 to 4 on one server process.
struct ServerRun {
    statements: Vec<Vec<String>>,
    capture: Vec<Sample>,
    uncached: Vec<Sample>,
    sustained: Vec<Sample>,
    sustained_elapsed: Duration,
    sequential: Vec<Sample>,
    /// Sequential current usage and admin stats answered from the cache, in their own list.
    sequential_cached: Vec<Sample>,
    log_busy: u64,
    log_errors: u64,
    log_samples: Vec<String>,
    exit: Option<String>,
    memory: Memory,
}

fn measure_server(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    users: &[BenchUser],
    now: i64,
    work_dir: &Path,
) -> anyhow::Result<ServerRun> {
    // The capture runs on a server of its own that logs every statement; the measured one
    // logs at info level, as in production.
    let capturing = Server::start(&args.server, &args.data, &args.time_zone, work_dir, "debug")?;
    let target = Target::server(capturing.address);
    let mut phases: Vec<(&str, Instant, Instant)> = Vec::new();
    let first = &users[0];

    // 1. The SQL of each route, alone. Its windows end an hour early, so that the
    // current usage of phase 2 is not in the cache of a server that kept it.
    let started = Instant::now();
    let mut statements = Vec::new();
    let mut capture = Vec::new();
    for request in dashboard_requests(first, now - HOUR_S) {
        capturing.log.start_capture();
        capture.push(runtime.block_on(measure::send(client, &target, &request)));
        statements.push(
            capturing
                .log
                .finish_capture(CAPTURE_QUIET, Duration::from_secs(30)),
        );
    }
    let capture_problems = capturing.log.problem_samples.lock().unwrap().clone();
    let (status, _) = capturing.stop()?;
    anyhow::ensure!(
        status.success() && capture_problems.is_empty(),
        "the capturing server failed ({status}): {capture_problems:?}"
    );

    let server = Server::start(&args.server, &args.data, &args.time_zone, work_dir, "info")?;
    let target = Target::server(server.address);
    phases.push(("capture", started, Instant::now()));

    // 2. Everyone opens their dashboards at once.
    let started = Instant::now();
    let everything: Vec<Request> = users
        .iter()
        .flat_map(|user| dashboard_requests(user, now))
        .collect();
    let uncached = runtime.block_on(measure::all_at_once(client, &target, everything));
    phases.push(("all_at_once", started, Instant::now()));

    // 3. Everyone keeps reloading.
    let started = Instant::now();
    let plans: Vec<Vec<Request>> = users
        .iter()
        .map(|user| dashboard_requests(user, now))
        .collect();
    let (sustained, sustained_elapsed) =
        runtime.block_on(measure::sustained(client, &target, plans, args.duration));
    phases.push(("sustained", started, Instant::now()));

    // 4. One client. Current usage and admin stats: windows shifted by whole hours (never
    // asked before, so uncached, and as costly), then the cached window of phase 2.
    let started = Instant::now();
    let mut sequential = Vec::new();
    let mut sequential_cached = Vec::new();
    let requests = dashboard_requests(first, now);
    for request in &requests {
        if is_cached_route(request.route) {
            for repetition in 0..args.repeat as i64 {
                let shifted = dashboard_requests(first, now - (repetition + 2) * HOUR_S)
                    [request.route]
                    .clone();
                sequential.push(runtime.block_on(measure::send(client, &target, &shifted)));
            }
            sequential_cached.extend(runtime.block_on(measure::sequential(
                client,
                &target,
                std::slice::from_ref(request),
                args.repeat,
            )));
        } else {
            sequential.extend(runtime.block_on(measure::sequential(
                client,
                &target,
                std::slice::from_ref(request),
                args.repeat,
            )));
        }
    }
    phases.push(("sequential", started, Instant::now()));

    let mut memory = Memory::default();
    for (name, from, to) in &phases {
        let (peak, count) = server.memory().peak_between(*from, *to);
        memory.phase_peak_rss_kb.insert((*name).to_owned(), peak);
        memory.sampled_peak_rss_kb = memory.sampled_peak_rss_kb.max(peak);
        memory.samples += count;
    }
    let pid = server.pid();
    let log = server.log.clone();
    let (status, high_water) = server.stop()?;
    memory.peak_rss_kb = high_water.with_context(|| format!("no VmHWM for pid {pid}"))?;
    let log_samples = log.problem_samples.lock().unwrap().clone();
    Ok(ServerRun {
        statements,
        capture,
        uncached,
        sustained,
        sustained_elapsed,
        sequential,
        sequential_cached,
        log_busy: log.busy_lines.load(std::sync::atomic::Ordering::Relaxed),
        log_errors: log.error_lines.load(std::sync::atomic::Ordering::Relaxed),
        log_samples,
        exit: (!status.success()).then(|| format!("the server exited with {status}")),
        memory,
    })
}

fn measure_all(
    args: &Args,
    db: &Path,
    users: &[BenchUser],
    now: i64,
    work_dir: &Path,
) -> anyhow::Result<Report> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new()?;
    let client = runtime.block_on(async { measure::client() })?;

    let run = measure_server(args, &runtime, &client, users, now, work_dir)?;

    // The HTTP floor answers each route with its median size under load.
    let concurrent: Vec<Sample> = run.uncached.iter().chain(&run.sustained).cloned().collect();
    let sizes: Vec<usize> = (0..ROUTES.len())
        .map(|route| Stats::of(&concurrent, route, |_| true, None).median_bytes)
        .collect();
    let floor_routes: Vec<(&str, usize)> = ROUTES.iter().copied().zip(sizes.clone()).collect();
    let floor_process = floor::FloorProcess::start(&floor_routes)?;
    let floor_target = Target::floor(floor_process.address);
    let plans: Vec<Vec<Request>> = users
        .iter()
        .map(|user| dashboard_requests(user, now))
        .collect();
    let (floor_sustained, floor_elapsed) = runtime.block_on(measure::sustained(
        &client,
        &floor_target,
        plans,
        args.duration,
    ));
    let floor_sequential = runtime.block_on(measure::sequential(
        &client,
        &floor_target,
        &dashboard_requests(&users[0], now),
        args.repeat,
    ));
    floor_process.stop()?;

    // The SQL floor, with the server stopped: the shell has the machine to itself.
    let all_statements: Vec<String> = run.statements.iter().flatten().cloned().collect();
    let mut timings =
        floor::sql_floor(&args.sqlite3, db, &all_statements, args.repeat)?.into_iter();

    let mut errors = Errors {
        database_locked_lines: run.log_busy,
        server_error_lines: run.log_errors,
        server_exit: run.exit.clone(),
        samples: run.log_samples.clone(),
        ..Errors::default()
    };
    let server_samples = [
        &run.capture,
        &run.uncached,
        &run.sustained,
        &run.sequential,
        &run.sequential_cached,
    ];
    for sample in server_samples.into_iter().flatten() {
        if sample.outcome != Outcome::Success {
            errors.server_requests += 1;
            if errors.samples.len() < 20 {
                errors.samples.extend(sample.detail.clone());
            }
        }
    }
    for sample in floor_sustained.iter().chain(&floor_sequential) {
        if sample.outcome != Outcome::Success {
            errors.floor_requests += 1;
            if errors.samples.len() < 20 {
                errors.samples.extend(sample.detail.clone());
            }
        }
    }

    let example_requests = dashboard_requests(&users[0], now);
    let mut routes = Vec::new();
    for (route, name) in ROUTES.iter().enumerate() {
        let sql: Vec<_> = timings.by_ref().take(run.statements[route].len()).collect();
        let sql_floor_us: u64 = sql.iter().map(|timing| timing.median_us).sum();
        let sql_floor_cold_us = sql.iter().map(|timing| timing.cold_us).sum();
        let sequential = Stats::of(&run.sequential, route, |_| true, None);
        let http_floor_sequential = Stats::of(&floor_sequential, route, |_| true, None);
        let floors = sql_floor_us + http_floor_sequential.p50_us;
        routes.push(RouteReport {
            name: (*name).to_owned(),
            example_request: example_requests[route].target.clone(),
            sql_floor_us,
            sql_floor_cold_us,
            response_bytes: sizes[route],
            uncached: Stats::of(&run.uncached, route, |sample| !sample.cached, None),
            uncached_cache_hits: Stats::of(&run.uncached, route, |_| true, None).cached,
            sustained: Stats::of(&run.sustained, route, |_| true, Some(run.sustained_elapsed)),
            ratio_to_floors: (floors > 0).then(|| sequential.p50_us as f64 / floors as f64),
            ratio_to_sql_floor: (sql_floor_us > 0)
                .then(|| sequential.p50_us as f64 / sql_floor_us as f64),
            sequential,
            sequential_cached: is_cached_route(route)
                .then(|| Stats::of(&run.sequential_cached, route, |_| true, None)),
            http_floor_sustained: Stats::of(&floor_sustained, route, |_| true, Some(floor_elapsed)),
            http_floor_sequential,
            sql,
        });
    }
    // Phase 2 was meant to be uncached: say so if it was not.
    let cached_in_phase_2: BTreeMap<usize, usize> = run
        .uncached
        .iter()
        .filter(|sample| sample.cached)
        .fold(BTreeMap::new(), |mut counts, sample| {
            *counts.entry(sample.route).or_default() += 1;
            counts
        });
    for (route, count) in cached_in_phase_2 {
        eprintln!(
            "warning: {count} {} answers came from the cache in the all-at-once phase",
            ROUTES[route]
        );
    }
    // Likewise for the shifted windows of the sequential phase.
    let cached_sequential = run.sequential.iter().filter(|sample| sample.cached).count();
    if cached_sequential > 0 {
        eprintln!("warning: {cached_sequential} sequential answers of shifted windows were cached");
    }

    Ok(Report {
        label: args.label.clone(),
        database: db.display().to_string(),
        database_bytes: std::fs::metadata(db).map(|meta| meta.len()).unwrap_or(0),
        server: args.server.display().to_string(),
        users: users.len(),
        duration_s: args.duration.as_secs_f64(),
        repeat: args.repeat,
        now,
        picked_users: users.to_vec(),
        routes,
        server_sustained_rps: run.sustained.len() as f64 / run.sustained_elapsed.as_secs_f64(),
        floor_sustained_rps: floor_sustained.len() as f64 / floor_elapsed.as_secs_f64(),
        errors,
        memory: run.memory,
    })
}
