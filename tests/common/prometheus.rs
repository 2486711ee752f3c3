//! A real Prometheus for tests: backfills series with `promtool tsdb create-blocks-from
//! openmetrics`, runs `prometheus` on a free loopback port over that data, and kills it on
//! drop. Use it from a test binary with
//! `#[path = "../common/prometheus.rs"] mod prometheus;`.
//!
//! Needs `prometheus` and `promtool` on `PATH` (`scripts/install-test-deps.sh`); a test
//! using this harness fails when they are missing.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// promtool cuts blocks at 2-hour boundaries and re-reads the whole input once per block:
/// one input file per 2-hour window keeps backfills fast.
const BLOCK_SECONDS: i64 = 7200;
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One time series to backfill: name, labels and samples (epoch milliseconds, value) in
/// increasing time order.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub samples: Vec<(i64, f64)>,
}

impl Series {
    pub fn new(name: &str, labels: &[(&str, &str)]) -> Self {
        Self {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            samples: Vec::new(),
        }
    }

    /// Adds samples every `step_ms` from `start_ms` (included) to `end_ms` (included when
    /// on a step), valued `value(t_ms)`.
    pub fn every(
        mut self,
        step_ms: i64,
        start_ms: i64,
        end_ms: i64,
        value: impl Fn(i64) -> f64,
    ) -> Self {
        let mut time = start_ms;
        while time <= end_ms {
            self.samples.push((time, value(time)));
            time += step_ms;
        }
        self
    }

    /// Adds one sample.
    pub fn at(mut self, time_ms: i64, value: f64) -> Self {
        self.samples.push((time_ms, value));
        self
    }
}

/// How to run Prometheus.
#[derive(Debug, Clone)]
pub struct PrometheusOptions {
    /// `global.scrape_interval` of the config file, e.g. `15s`.
    pub scrape_interval: String,
    /// `global.evaluation_interval`.
    pub evaluation_interval: String,
    /// More command-line flags, e.g. `--query.max-samples=1000`.
    pub extra_flags: Vec<String>,
}

impl Default for PrometheusOptions {
    fn default() -> Self {
        Self {
            scrape_interval: "15s".to_owned(),
            evaluation_interval: "15s".to_owned(),
            extra_flags: Vec::new(),
        }
    }
}

/// A running (or stopped) Prometheus over backfilled data.
pub struct Prometheus {
    directory: tempfile::TempDir,
    port: u16,
    options: PrometheusOptions,
    child: Option<Child>,
}

impl Prometheus {
    /// Backfills `series` into a fresh TSDB and starts Prometheus on it.
    pub fn start_with(series: &[Series], options: PrometheusOptions) -> Self {
        let directory = tempfile::tempdir().expect("temporary directory");
        backfill(series, directory.path());
        std::fs::write(
            directory.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: {}\n  evaluation_interval: {}\n",
                options.scrape_interval, options.evaluation_interval
            ),
        )
        .expect("config written");
        let mut prometheus = Self {
            directory,
            port: free_port(),
            options,
            child: None,
        };
        prometheus.start();
        prometheus
    }

    /// The base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts Prometheus (again) on the same data and port and waits until it is ready.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "Prometheus is already running");
        let directory = self.directory.path();
        let log = std::fs::File::create(directory.join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                directory.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                directory.join("data").display()
            ))
            .arg("--storage.tsdb.retention.time=100y")
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--web.enable-admin-api")
            .arg("--web.enable-lifecycle")
            .args(&self.options.extra_flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start prometheus ({error}); install it with scripts/install-test-deps.sh"
                )
            });
        self.child = Some(child);
        self.wait_until_ready();
    }

    /// Kills Prometheus and waits for it to exit; the data stays for [`start`](Self::start).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The log written so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.directory.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path` on the server: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(SocketAddr::from(([127, 0, 0, 1], self.port)), path)
            .unwrap_or_else(|error| panic!("GET {path}: {error}"))
    }

    /// The sum of Prometheus' own `prometheus_http_requests_total` over the series of
    /// `handler` (e.g. `/api/v1/query`) answered with `code`.
    pub fn http_requests(&self, handler: &str, code: u16) -> f64 {
        let (_, metrics) = self.get("/metrics");
        let wanted_handler = format!("handler=\"{handler}\"");
        let wanted_code = format!("code=\"{code}\"");
        metrics
            .lines()
            .filter(|line| line.starts_with("prometheus_http_requests_total{"))
            .filter(|line| line.contains(&wanted_handler) && line.contains(&wanted_code))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Ok((200, _)) = http_get(address, "/-/ready") {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!("prometheus exited with {status}:\n{}", self.log());
                }
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "prometheus not ready after {READY_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Writes one OpenMetrics file per 2-hour window and turns each into blocks under
/// `directory/data`.
fn backfill(series: &[Series], directory: &Path) {
    let data = directory.join("data");
    std::fs::create_dir_all(&data).expect("data directory");
    // window → name → series lines, so that each family is one contiguous block.
    let mut windows: BTreeMap<i64, BTreeMap<&str, String>> = BTreeMap::new();
    for one in series {
        assert!(
            one.samples.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "samples of {} must be in increasing time order",
            one.name
        );
        let labels = one
            .labels
            .iter()
            .map(|(name, value)| format!("{name}=\"{}\"", escape_label_value(value)))
            .collect::<Vec<_>>()
            .join(",");
        for (time_ms, value) in &one.samples {
            let window = time_ms.div_euclid(1000).div_euclid(BLOCK_SECONDS);
            let lines = windows
                .entry(window)
                .or_default()
                .entry(one.name.as_str())
                .or_default();
            let _ = writeln!(
                lines,
                "{}{{{labels}}} {} {}",
                one.name,
                format_value(*value),
                format_seconds(*time_ms)
            );
        }
    }
    let inputs = directory.join("openmetrics");
    std::fs::create_dir_all(&inputs).expect("openmetrics directory");
    for (window, families) in windows {
        let mut text = String::new();
        for (name, lines) in families {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(text, "# TYPE {name} {kind}");
            text.push_str(&lines);
        }
        text.push_str("# EOF\n");
        let file: PathBuf = inputs.join(format!("{window}.om"));
        std::fs::write(&file, text).expect("openmetrics file");
        let output = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&file)
            .arg(&data)
            .output()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run promtool ({error}); install it with scripts/install-test-deps.sh"
                )
            });
        assert!(
            output.status.success(),
            "promtool failed on {}: {}{}",
            file.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value}")
    }
}

/// OpenMetrics timestamps are seconds (milliseconds would be read as seconds, silently).
fn format_seconds(time_ms: i64) -> String {
    let seconds = time_ms.div_euclid(1000);
    match time_ms.rem_euclid(1000) {
        0 => seconds.to_string(),
        millis => format!("{seconds}.{millis:03}"),
    }
}

/// A plain HTTP/1.0 GET with a short timeout: (status, body).
fn http_get(address: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
