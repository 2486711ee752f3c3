//! The server under test: its config, its process, what its log says (the SQL it runs,
//! lock errors) and its resident memory.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::workload::ADMIN;

const SQL_TARGET: &str = "ceems_api_server::sql";

/// How long the server may take to open a large database and answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(1800);
/// The server's log message once every stored cluster has its indexes.
const INDEXES_READY: &str = "indexes of the stored clusters ready";

/// How many lines of the log are kept for an error message.
const TAIL_LINES: usize = 40;

/// What the server's log said.
#[derive(Default)]
pub struct ServerLog {
    /// While set, every logged statement is kept in `statements`.
    capturing: AtomicBool,
    statements: Mutex<Vec<(Instant, String)>>,
    /// Lines mentioning a locked or busy database.
    pub busy_lines: AtomicU64,
    /// Lines at level ERROR.
    pub error_lines: AtomicU64,
    /// The first few ERROR and busy lines, as they were.
    pub problem_samples: Mutex<Vec<String>>,
    tail: Mutex<VecDeque<String>>,
    /// Set once the server logged that every stored cluster has its indexes.
    indexes_ready: AtomicBool,
}

impl ServerLog {
    /// Starts keeping the logged statements, forgetting earlier ones.
    pub fn start_capture(&self) {
        self.statements.lock().unwrap().clear();
        self.capturing.store(true, Ordering::SeqCst);
    }

    /// The statements logged since [`Self::start_capture`], once none has arrived for
    /// `quiet`.
    pub fn finish_capture(&self, quiet: Duration, limit: Duration) -> Vec<String> {
        let started = Instant::now();
        loop {
            let last = self
                .statements
                .lock()
                .unwrap()
                .last()
                .map(|(at, _)| *at)
                .unwrap_or(started);
            let since = last.max(started);
            if since.elapsed() >= quiet || started.elapsed() >= limit {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.capturing.store(false, Ordering::SeqCst);
        std::mem::take(&mut *self.statements.lock().unwrap())
            .into_iter()
            .map(|(_, sql)| sql)
            .collect()
    }

    fn tail(&self) -> String {
        self.tail
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Reads one line of the JSON log; returns the listening address when it is that line.
    fn read_line(&self, line: &str) -> Option<SocketAddr> {
        {
            let mut tail = self.tail.lock().unwrap();
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.to_owned());
        }
        if line.contains(INDEXES_READY) {
            self.indexes_ready.store(true, Ordering::SeqCst);
        }
        let busy = line.contains("database is locked") || line.contains("SQLITE_BUSY");
        let error = line.contains(r#""level":"ERROR""#);
        if busy {
            self.busy_lines.fetch_add(1, Ordering::Relaxed);
        }
        if error {
            self.error_lines.fetch_add(1, Ordering::Relaxed);
        }
        if busy || error {
            let mut samples = self.problem_samples.lock().unwrap();
            if samples.len() < 10 {
                samples.push(line.to_owned());
            }
        }
        let capturing = self.capturing.load(Ordering::SeqCst);
        if !capturing && !line.contains(r#""listening""#) {
            return None;
        }
        let event: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = &event["fields"];
        if capturing && event["target"] == SQL_TARGET {
            if let Some(sql) = fields["sql"].as_str().or(event["sql"].as_str()) {
                self.statements
                    .lock()
                    .unwrap()
                    .push((Instant::now(), sql.to_owned()));
            }
            return None;
        }
        if fields["message"] == "listening" {
            return fields["address"].as_str()?.parse().ok();
        }
        None
    }
}

/// The running server.
pub struct Server {
    child: Child,
    pub address: SocketAddr,
    pub log: Arc<ServerLog>,
    reader: Option<JoinHandle<()>>,
    memory: MemorySampler,
}

/// The bench config: the database at `data_dir`, nothing that writes (no clusters, no
/// updaters, no backups, nothing old enough to be purged), and the bench admin.
fn write_config(work_dir: &Path, data_dir: &Path, time_zone: &str) -> anyhow::Result<PathBuf> {
    let data_dir = std::path::absolute(data_dir)?;
    let config = format!(
        "ceems_api_server:\n  data:\n    path: {path}\n    retention_period: 100y\n    \
         update_interval: 1d\n    backup_path: ''\n    time_zone: {time_zone}\n  admin:\n    users:\n      - {ADMIN}\n\
         clusters: []\nupdaters: []\n",
        path = serde_json::to_string(&data_dir.to_string_lossy())?,
        time_zone = serde_json::to_string(time_zone)?,
    );
    let path = work_dir.join("config.yml");
    std::fs::write(&path, config).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

impl Server {
    /// Starts `binary` on a free loopback port with a JSON log at `log_level` (`debug` logs
    /// every statement), and waits until it answers `/health`.
    pub fn start(
        binary: &Path,
        data_dir: &Path,
        time_zone: &str,
        work_dir: &Path,
        log_level: &str,
    ) -> anyhow::Result<Server> {
        // The server runs in `work_dir`: relative paths must not change meaning.
        let binary = &std::path::absolute(binary)?;
        let data_dir = &std::path::absolute(data_dir)?;
        let config = write_config(work_dir, data_dir, time_zone)?;
        let mut child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg(format!("--log.level={log_level}"))
            .arg("--log.format=json")
            .arg("--storage.data.skip.delete.old.units")
            .current_dir(work_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(ServerLog::default());
        let (address_sender, address_receiver) = mpsc::channel();
        let reader_log = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = reader_log.read_line(&line) {
                    let _ = address_sender.send(address);
                }
            }
        });

        let started = Instant::now();
        let address = loop {
            if let Ok(address) = address_receiver.recv_timeout(Duration::from_millis(100)) {
                break address;
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("the server exited ({status}) at start:\n{}", log.tail());
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                anyhow::bail!("the server did not listen in time:\n{}", log.tail());
            }
        };
        let memory = MemorySampler::start(child.id());
        let mut server = Server {
            child,
            address,
            log,
            reader: Some(reader),
            memory,
        };
        server.wait_healthy(started)?;
        Ok(server)
    }

    fn wait_healthy(&mut self, started: Instant) -> anyhow::Result<()> {
        let url = format!("http://{}/health", self.address);
        loop {
            // A plain HTTP/1.0 exchange: no client runtime needed here.
            // Healthy, and done building the indexes a database written by an older
            // server lacks (the first start on such a file builds them).
            if self.log.indexes_ready.load(Ordering::SeqCst)
                && http_get_status(self.address, "/health").ok() == Some(200)
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the server exited ({status}):\n{}", self.log.tail());
            }
            if started.elapsed() > START_TIMEOUT {
                anyhow::bail!("{url} did not answer 200 in time:\n{}", self.log.tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The resident memory seen so far.
    pub fn memory(&self) -> &MemorySampler {
        &self.memory
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 60 s). Returns the exit status and
    /// the peak resident set (`VmHWM`) read just before the signal.
    pub fn stop(mut self) -> anyhow::Result<(ExitStatus, Option<u64>)> {
        let high_water_kb = read_status_kb(self.child.id(), "VmHWM:");
        self.memory.stop();
        let signalled = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("run kill")?;
        anyhow::ensure!(signalled.success(), "kill -TERM {} failed", self.child.id());
        let asked = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if asked.elapsed() > Duration::from_secs(60) {
                self.child.kill()?;
                anyhow::bail!("the server did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Ok((status, high_water_kb))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only on an early error: `stop` has reaped the process otherwise.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The status code of `GET path` over a fresh connection.
fn http_get_status(address: SocketAddr, path: &str) -> anyhow::Result<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .context("no status line")?
        .parse()?;
    Ok(status)
}

/// A `kB` line of `/proc/<pid>/status`.
pub fn read_status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `VmRSS` every 100 ms, with when it was read.
pub struct MemorySampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    thread: Option<JoinHandle<()>>,
}

impl MemorySampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, samples) = (stop.clone(), samples.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match read_status_kb(pid, "VmRSS:") {
                        Some(kb) => samples.lock().unwrap().push((Instant::now(), kb)),
                        None => break,
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// The largest sample taken between `from` and `to`, and how many were taken.
    pub fn peak_between(&self, from: Instant, to: Instant) -> (u64, usize) {
        let samples = self.samples.lock().unwrap();
        let within = samples.iter().filter(|(at, _)| *at >= from && *at <= to);
        within.fold((0, 0), |(peak, count), (_, kb)| (peak.max(*kb), count + 1))
    }
}
