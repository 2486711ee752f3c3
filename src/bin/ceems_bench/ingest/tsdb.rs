//! A real Prometheus over the jobs' history: the series the `tsdb` updater's built-in
//! queries read for CPU usage and energy, backfilled with `promtool`, one sample per scrape
//! over each job's run.

use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::jobs::{Job, Stream};

/// A series name and the value each of its samples holds for a job.
type Family = (&'static str, fn(&Job) -> f64);

/// The series of each job.
const FAMILIES: [Family; 2] = [
    ("uuid:ceems_host_power_watts:pue", |job| job.watts),
    ("uuid:ceems_cpu_usage:ratio_irate", |job| job.cpu_usage),
];

/// The span of time one input file of promtool covers. promtool re-reads its whole input
/// once per 2-hour block, so each file stays within one; shorter files let several
/// promtool processes share the work. The blocks they give do not overlap in time.
const FILE_SECONDS: i64 = 1800;

/// What the backfill did.
#[derive(Debug, Clone, Copy)]
pub struct Backfill {
    pub samples: u64,
    pub series: u64,
    pub files: usize,
    pub elapsed: Duration,
}

/// Writes the series of every job of `stream` as OpenMetrics files and turns them into
/// blocks under `directory/data`, with as many promtool processes at once as there are
/// cores.
pub fn backfill(stream: &Stream, directory: &Path) -> anyhow::Result<Backfill> {
    let started = Instant::now();
    let data = directory.join("data");
    let inputs = directory.join("openmetrics");
    std::fs::create_dir_all(&data)?;
    std::fs::create_dir_all(&inputs)?;
    let step = stream.align;
    // Each job's samples: one per scrape after its start up to its end, then a NaN one
    // scrape later, as a live exporter that stops leaves a series (the queries' `>= 0`
    // drops it, so the 5-minute lookback does not stretch the job).
    let first = stream.epoch + step;
    let last = stream.last_end() + step;
    let first_file = first.div_euclid(FILE_SECONDS);
    let last_file = last.div_euclid(FILE_SECONDS);
    let files: Vec<i64> = (first_file..=last_file).collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(files.len().max(1));
    let next = AtomicUsize::new(0);
    let samples = Mutex::new(0_u64);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(&file) = files.get(index) else {
                    return;
                };
                if failure.lock().is_ok_and(|failure| failure.is_some()) {
                    return;
                }
                let path = inputs.join(format!("{file}.om"));
                let outcome = write_file(stream, file * FILE_SECONDS, &path).and_then(|count| {
                    promtool(&path, &data)?;
                    std::fs::remove_file(&path)?;
                    Ok(count)
                });
                match outcome {
                    Ok(count) => {
                        if let Ok(mut samples) = samples.lock() {
                            *samples += count;
                        }
                    }
                    Err(error) => {
                        if let Ok(mut failure) = failure.lock() {
                            failure.get_or_insert(error);
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(error) = failure.into_inner().ok().flatten() {
        return Err(error);
    }
    Ok(Backfill {
        samples: samples.into_inner().unwrap_or_default(),
        series: u64::try_from(stream.count).unwrap_or(0) * FAMILIES.len() as u64,
        files: files.len(),
        elapsed: started.elapsed(),
    })
}

/// Writes the samples in `[from, from + FILE_SECONDS)` as one OpenMetrics file, family by
/// family, each series in time order. Returns the number of samples.
fn write_file(stream: &Stream, from: i64, path: &Path) -> anyhow::Result<u64> {
    let to = from + FILE_SECONDS;
    let step = stream.align;
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut count = 0_u64;
    for (name, value) in FAMILIES {
        writeln!(out, "# TYPE {name} gauge")?;
        for job in stream.jobs() {
            let stale = job.end + step;
            if job.start + step >= to || stale < from {
                continue;
            }
            let value = value(&job);
            // The first sample time at or after `from` on the job's grid.
            let offset = (from - job.start - step).max(0);
            let mut time = job.start + step + (offset + step - 1) / step * step;
            while time <= job.end && time < to {
                writeln!(out, "{name}{{uuid=\"{}\"}} {value} {time}", job.uuid)?;
                count += 1;
                time += step;
            }
            if (from..to).contains(&stale) {
                writeln!(out, "{name}{{uuid=\"{}\"}} NaN {stale}", job.uuid)?;
                count += 1;
            }
        }
    }
    writeln!(out, "# EOF")?;
    out.flush()?;
    Ok(count)
}

fn promtool(input: &Path, data: &Path) -> anyhow::Result<()> {
    let output = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(input)
        .arg(data)
        .output()
        .context("cannot run promtool (scripts/install-test-deps.sh installs it)")?;
    if !output.status.success() {
        bail!(
            "promtool failed on {}: {}{}",
            input.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Prometheus on a loopback port over the backfilled data; killed on drop.
pub struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    /// Starts Prometheus on `directory/data` with `scrape_interval` (seconds) as its global
    /// scrape and evaluation interval and no scrape target, and waits until it is ready.
    pub fn start(directory: &Path, scrape_interval: i64) -> anyhow::Result<Self> {
        let config = directory.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {scrape_interval}s\n  evaluation_interval: {scrape_interval}s\n"
            ),
        )?;
        let port = free_port()?;
        let log = std::fs::File::create(directory.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                directory.join("data").display()
            ))
            .arg("--storage.tsdb.retention.time=100y")
            // Blocks of at most 2 hours: the backfilled ones are not compacted together
            // while the server queries them.
            .arg("--storage.tsdb.max-block-duration=2h")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start prometheus (scripts/install-test-deps.sh installs it)")?;
        let mut prometheus = Self { child, port };
        prometheus.wait_until_ready(directory)?;
        Ok(prometheus)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_until_ready(&mut self, directory: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if http_status(address, "/-/ready").is_ok_and(|status| status == 200) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "prometheus exited with {status}: {}",
                    log_tail(&directory.join("prometheus.log"))
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "prometheus not ready after 60 s: {}",
                    log_tail(&directory.join("prometheus.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The status of a plain HTTP/1.0 GET.
fn http_status(address: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0))
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
