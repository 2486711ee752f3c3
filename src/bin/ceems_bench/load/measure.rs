//! The load generator: requests sent with one keep-alive client from many tasks, each
//! timed from send to the last byte of the body and classified.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::workload::{Request, USER_HEADER};

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// An HTTP status other than 200.
    Status(u16),
    /// 200 whose envelope is not `"status":"success"`.
    NotSuccess,
    /// No answer (connection refused, reset, timeout).
    Transport,
}

/// One timed request.
#[derive(Debug, Clone)]
pub struct Sample {
    pub route: usize,
    pub micros: u64,
    pub bytes: usize,
    pub outcome: Outcome,
    /// The answer came from the usage cache (the server sets `Expires` on a hit only).
    pub cached: bool,
    /// What went wrong, for the report.
    pub detail: Option<String>,
}

/// Where requests go: the server (the request's own target) or the HTTP floor (one fixed
/// path per route).
#[derive(Debug, Clone)]
pub struct Target {
    base: String,
    floor: bool,
}

impl Target {
    pub fn server(address: std::net::SocketAddr) -> Self {
        Self {
            base: format!("http://{address}"),
            floor: false,
        }
    }

    pub fn floor(address: std::net::SocketAddr) -> Self {
        Self {
            base: format!("http://{address}"),
            floor: true,
        }
    }

    fn url(&self, request: &Request) -> String {
        if self.floor {
            format!("{}/{}", self.base, super::workload::ROUTES[request.route])
        } else {
            format!("{}{}", self.base, request.target)
        }
    }
}

pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(600))
        .build()?)
}

/// Sends `request` and waits for the whole body.
pub async fn send(client: &reqwest::Client, target: &Target, request: &Request) -> Sample {
    let started = Instant::now();
    let answer = client
        .get(target.url(request))
        .header(USER_HEADER, &request.login)
        .send()
        .await;
    let mut sample = Sample {
        route: request.route,
        micros: 0,
        bytes: 0,
        outcome: Outcome::Success,
        cached: false,
        detail: None,
    };
    let response = match answer {
        Ok(response) => response,
        Err(error) => {
            sample.micros = started.elapsed().as_micros() as u64;
            sample.outcome = Outcome::Transport;
            sample.detail = Some(format!("{}: {error}", request.target));
            return sample;
        }
    };
    let status = response.status().as_u16();
    sample.cached = response.headers().contains_key(reqwest::header::EXPIRES);
    let body = response.bytes().await;
    sample.micros = started.elapsed().as_micros() as u64;
    match body {
        Err(error) => {
            sample.outcome = Outcome::Transport;
            sample.detail = Some(format!("{}: {error}", request.target));
        }
        Ok(body) => {
            sample.bytes = body.len();
            if status != 200 {
                sample.outcome = Outcome::Status(status);
            } else if !body.starts_with(br#"{"status":"success""#) {
                sample.outcome = Outcome::NotSuccess;
            }
            if sample.outcome != Outcome::Success {
                let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                sample.detail = Some(format!(
                    "{} as {}: {status} {shown}",
                    request.target, request.login
                ));
            }
        }
    }
    sample
}

/// Every request at once, each on its own task.
pub async fn all_at_once(
    client: &reqwest::Client,
    target: &Target,
    requests: Vec<Request>,
) -> Vec<Sample> {
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let (client, target, barrier) = (client.clone(), target.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                send(&client, &target, &request).await
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(tasks.len());
    for task in tasks {
        samples.push(task.await.expect("request task"));
    }
    samples
}

/// One task per virtual user, each sending its requests in turn, again and again, until
/// `duration` has passed. Returns the samples and how long the phase really took.
pub async fn sustained(
    client: &reqwest::Client,
    target: &Target,
    users: Vec<Vec<Request>>,
    duration: Duration,
) -> (Vec<Sample>, Duration) {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = users
        .into_iter()
        .map(|requests| {
            let (client, target) = (client.clone(), target.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                'user: loop {
                    for request in &requests {
                        if Instant::now() >= deadline {
                            break 'user;
                        }
                        samples.push(send(&client, &target, request).await);
                    }
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.expect("virtual user task"));
    }
    (samples, started.elapsed())
}

/// Each request `repeat` times, one after the other.
pub async fn sequential(
    client: &reqwest::Client,
    target: &Target,
    requests: &[Request],
    repeat: usize,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    for request in requests {
        for _ in 0..repeat {
            samples.push(send(client, target, request).await);
        }
    }
    samples
}
