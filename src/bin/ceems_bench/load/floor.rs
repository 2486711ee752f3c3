//! The two floors a route is compared with: the `sqlite3` shell running the route's
//! statements on the same file, and a minimal warp handler answering the same number of
//! bytes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use warp::Filter;

/// Below this wall time the shell's `real` (printed in whole milliseconds) is too coarse,
/// and its CPU time (`user + sys`, in microseconds) is used: a statement on a warm page
/// cache that short is CPU-bound.
const REAL_RESOLUTION_S: f64 = 0.010;

/// The shell's timings of one statement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatementTimings {
    pub sql: String,
    /// The first run, on whatever the page cache held then.
    pub cold_us: u64,
    /// Median of the other runs.
    pub median_us: u64,
    pub runs_us: Vec<u64>,
}

/// One `Run Time:` line of the shell: the statement's duration in microseconds.
fn parse_run_time(line: &str) -> Option<u64> {
    let mut words = line.strip_prefix("Run Time:")?.split_whitespace();
    let mut value = |name: &str| -> Option<f64> {
        (words.next()? == name).then_some(())?;
        words.next()?.parse().ok()
    };
    let real = value("real")?;
    let user = value("user")?;
    let sys = value("sys")?;
    let seconds = if real >= REAL_RESOLUTION_S {
        real
    } else {
        user + sys
    };
    Some((seconds * 1e6).round() as u64)
}

/// Runs every statement `repeat` times in one `sqlite3 -readonly` process with
/// `.timer on`, in the order given.
pub fn sql_floor(
    sqlite3: &Path,
    db: &Path,
    statements: &[String],
    repeat: usize,
) -> anyhow::Result<Vec<StatementTimings>> {
    if statements.is_empty() {
        return Ok(Vec::new());
    }
    let repeat = repeat.max(2);
    let mut script = String::from(".bail on\n.mode list\n.timer on\n");
    for sql in statements {
        let sql = sql.trim().trim_end_matches(';');
        for _ in 0..repeat {
            script.push_str(sql);
            script.push_str(";\n");
        }
    }
    let mut child = Command::new(sqlite3)
        .arg("-readonly")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", sqlite3.display()))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    // The rows are read and dropped as they come: the shell formats and writes them, as
    // the server encodes and sends its answer.
    let mut runs = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        if let Some(micros) = parse_run_time(&line) {
            runs.push(micros);
        }
    }
    let output = child.wait_with_output()?;
    let _ = writer.join();
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(
        output.status.success() && stderr.trim().is_empty(),
        "sqlite3 failed ({}): {}",
        output.status,
        stderr.trim()
    );
    anyhow::ensure!(
        runs.len() == statements.len() * repeat,
        "sqlite3 printed {} timings for {} statements run {repeat} times",
        runs.len(),
        statements.len()
    );
    Ok(statements
        .iter()
        .zip(runs.chunks(repeat))
        .map(|(sql, runs)| {
            let mut warm = runs[1..].to_vec();
            warm.sort_unstable();
            StatementTimings {
                sql: sql.clone(),
                cold_us: runs[0],
                median_us: warm[warm.len() / 2],
                runs_us: runs.to_vec(),
            }
        })
        .collect())
}

/// A JSON success envelope of exactly `size` bytes (or the smallest one, 31 bytes).
pub fn floor_body(size: usize) -> Bytes {
    const HEAD: &str = r#"{"status":"success","data":""#;
    const TAIL: &str = "\"}\n";
    let padding = size.saturating_sub(HEAD.len() + TAIL.len());
    let mut body = String::with_capacity(HEAD.len() + padding + TAIL.len());
    body.push_str(HEAD);
    body.extend(std::iter::repeat_n('x', padding));
    body.push_str(TAIL);
    Bytes::from(body)
}

/// Serves `GET /<name>` with the fixed body of each route until SIGTERM or SIGINT, and
/// prints `listening on <address>` once bound.
pub async fn serve_floor(listen: SocketAddr, routes: HashMap<String, Bytes>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let routes = std::sync::Arc::new(routes);
    let handler = warp::get()
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .map(move |name: String| {
            let (status, body) = match routes.get(&name) {
                Some(body) => (warp::http::StatusCode::OK, body.clone()),
                None => (warp::http::StatusCode::NOT_FOUND, Bytes::new()),
            };
            warp::http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(body)
                .expect("static response parts")
        });
    let shutdown = async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    warp::serve(handler)
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
    Ok(())
}

/// `ceems_bench http-floor` started from this very binary.
pub struct FloorProcess {
    child: Child,
    pub address: SocketAddr,
}

impl FloorProcess {
    pub fn start(sizes: &[(&str, usize)]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("the path of ceems_bench")?;
        let mut command = Command::new(exe);
        command.args(["http-floor", "--listen", "127.0.0.1:0"]);
        for (name, size) in sizes {
            command.arg("--route").arg(format!("{name}={size}"));
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start ceems_bench http-floor")?;
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut first_line)?;
        let address = first_line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|address| address.parse().ok());
        let Some(address) = address else {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("http-floor did not say where it listens: {first_line:?}");
        };
        Ok(Self { child, address })
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        for _ in 0..200 {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        self.child.wait()?;
        anyhow::bail!("http-floor did not stop within 10 s of SIGTERM")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_time_lines() {
        assert_eq!(
            parse_run_time("Run Time: real 0.250 user 0.200000 sys 0.010000"),
            Some(250_000)
        );
        assert_eq!(
            parse_run_time("Run Time: real 0.000 user 0.000409 sys 0.000100"),
            Some(509)
        );
        assert_eq!(parse_run_time("1|2"), None);
    }

    #[test]
    fn floor_bodies_have_the_asked_size() {
        assert_eq!(floor_body(1000).len(), 1000);
        assert_eq!(floor_body(0).len(), 31);
        assert!(floor_body(500).starts_with(br#"{"status":"success""#));
    }
}
