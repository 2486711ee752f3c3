//! A stand-in for Grafana's team API on a loopback port: `GET <any prefix>/api/teams/{id}/members`
//! answers the configured members (or a configured failure), requires one Authorization
//! value, and records every request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use warp::http::{HeaderMap, StatusCode};
use warp::Filter;

/// The Authorization value the stand-in requires: basic auth `grafana:secret`.
pub const AUTHORIZATION: &str = "Basic Z3JhZmFuYTpzZWNyZXQ=";

/// What a team answers.
#[derive(Debug, Clone)]
pub enum TeamAnswer {
    /// 200 with Grafana's member objects for these logins.
    Members(Vec<String>),
    /// This status with Grafana's error body.
    Status(u16),
    /// 200 with this body verbatim.
    Body(String),
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub accept: Option<String>,
    pub content_type: Option<String>,
}

#[derive(Default)]
struct State {
    teams: HashMap<String, TeamAnswer>,
    requests: Vec<SeenRequest>,
}

pub struct FakeGrafana {
    pub address: SocketAddr,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeGrafana {
    pub async fn start() -> FakeGrafana {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let route = warp::method()
            .and(warp::path::full())
            .and(warp::header::headers_cloned())
            .map(
                move |method: warp::http::Method,
                      path: warp::path::FullPath,
                      headers: HeaderMap| {
                    let mut state = shared.lock().unwrap();
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                    };
                    let seen = SeenRequest {
                        method: method.to_string(),
                        path: path.as_str().to_owned(),
                        authorization: header("authorization"),
                        accept: header("accept"),
                        content_type: header("content-type"),
                    };
                    let (status, body) = answer(&state, &seen);
                    state.requests.push(seen);
                    warp::reply::with_status(
                        warp::reply::with_header(body, "content-type", "application/json"),
                        status,
                    )
                },
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in Grafana");
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(warp::serve(route).incoming(listener).run());
        FakeGrafana {
            address,
            state,
            server,
        }
    }

    /// The base URL, with a sub-path as when Grafana is served under a prefix.
    pub fn url(&self) -> String {
        format!("http://{}/grafana", self.address)
    }

    pub fn set_team(&self, id: &str, answer: TeamAnswer) {
        self.state
            .lock()
            .unwrap()
            .teams
            .insert(id.to_owned(), answer);
    }

    pub fn set_members(&self, id: &str, logins: &[&str]) {
        self.set_team(
            id,
            TeamAnswer::Members(logins.iter().map(|login| (*login).to_owned()).collect()),
        );
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }
}

impl Drop for FakeGrafana {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn answer(state: &State, seen: &SeenRequest) -> (StatusCode, String) {
    if seen.authorization.as_deref() != Some(AUTHORIZATION) {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"message":"Unauthorized"}"#.to_owned(),
        );
    }
    let team = seen
        .path
        .strip_suffix("/members")
        .and_then(|rest| rest.rsplit_once("/api/teams/"))
        .map(|(_, id)| id)
        .filter(|_| seen.method == "GET");
    let Some(answer) = team.and_then(|id| state.teams.get(id)) else {
        return (
            StatusCode::NOT_FOUND,
            r#"{"message":"Team not found"}"#.to_owned(),
        );
    };
    match answer {
        TeamAnswer::Members(logins) => (StatusCode::OK, members_body(logins)),
        TeamAnswer::Status(code) => (
            StatusCode::from_u16(*code).unwrap(),
            r#"{"message":"Internal server error"}"#.to_owned(),
        ),
        TeamAnswer::Body(body) => (StatusCode::OK, body.clone()),
    }
}

/// Member objects shaped like Grafana's (`TeamMemberDTO`).
fn members_body(logins: &[String]) -> String {
    let members: Vec<serde_json::Value> = logins
        .iter()
        .enumerate()
        .map(|(index, login)| {
            serde_json::json!({
                "orgId": 1,
                "teamId": 7,
                "teamUID": "adm",
                "userId": index + 2,
                "userUID": format!("u{index}"),
                "auth_module": "",
                "email": format!("{login}@example.org"),
                "name": login.to_uppercase(),
                "login": login,
                "avatarUrl": "/avatar/0",
                "labels": [],
                "permission": 0
            })
        })
        .collect();
    serde_json::to_string(&members).unwrap()
}
