//! Fetching the admin teams' members and syncing them into the server's admin list,
//! checked through the storage query the identity check uses and through real requests to
//! an admin route.

use std::future::Future;
use std::time::Duration;

use ceems_api_server::app::App;
use ceems_api_server::config::{ClientUrl, Config, Flags, Settings};
use ceems_api_server::grafana::{
    run_admin_sync, sync_admins_once, AdminSyncError, GrafanaError, GrafanaTeams,
};
use ceems_api_server::storage::admin::{admin_user_names, GrafanaAdminChanges};
use ceems_api_server::storage::Database;
use chrono_tz::Tz;
use tokio_util::sync::CancellationToken;

use crate::fake_grafana::{FakeGrafana, SeenRequest, TeamAnswer, AUTHORIZATION};

const ZONE: Tz = chrono_tz::Europe::Paris;

/// The server under test, with `admin` (and the load balancer's account) as config admins.
struct Server {
    app: Option<App>,
    base: String,
    http: reqwest::Client,
    config_admins: Vec<String>,
    _data_dir: tempfile::TempDir,
}

impl Server {
    async fn start(config_admins: &[&str]) -> Server {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let data_dir = tempfile::tempdir().unwrap();
        let flags = Flags {
            listen_addresses: vec!["127.0.0.1:0".to_owned()],
            ..Flags::default()
        };
        let mut config = Config::default();
        config.server.data.path = data_dir.path().to_path_buf();
        config.server.data.time_zone = ZONE;
        config.server.admin.users = config_admins.iter().map(|&n| n.to_owned()).collect();
        let config_admins = config.server.admin.ceems_admin_users();
        let app = App::build(Settings { flags, config }).await.unwrap();
        Server {
            base: format!("http://127.0.0.1:{}", app.port()),
            app: Some(app),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            config_admins,
            _data_dir: data_dir,
        }
    }

    fn db(&self) -> Database {
        self.app.as_ref().unwrap().database().clone()
    }

    async fn sync(&self, teams: &GrafanaTeams) -> Result<GrafanaAdminChanges, AdminSyncError> {
        sync_admins_once(teams, &self.db(), &self.config_admins, ZONE)
            .await
            .map(|outcome| outcome.changes)
    }

    /// Every name of `admin_users`, sorted: what the identity check reads.
    async fn admin_names(&self) -> Vec<String> {
        let mut names = self.db().read(admin_user_names).await.unwrap();
        names.sort();
        names
    }

    /// The status of an admin-only route called as `user`.
    async fn admin_route_status(&self, user: &str) -> u16 {
        self.http
            .get(format!("{}/api/v1/units/admin", self.base))
            .header("X-Grafana-User", user)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The admin list as the API serves it (`/users/admin?role=admin`), as (name, tags).
    async fn served_admins(&self) -> Vec<(String, String)> {
        let response = self
            .http
            .get(format!("{}/api/v1/users/admin?role=admin", self.base))
            .header("X-Grafana-User", "admin")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let envelope: serde_json::Value = response.json().await.unwrap();
        let mut rows: Vec<(String, String)> = envelope["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                (
                    row["name"].as_str().unwrap().to_owned(),
                    row["tags"].to_string(),
                )
            })
            .collect();
        rows.sort();
        rows
    }

    async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await.unwrap();
        }
    }
}

/// A client that sends the config's credentials with every request.
fn grafana_client(authorization: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        authorization.parse().unwrap(),
    );
    reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .build()
        .unwrap()
}

fn teams(grafana: &FakeGrafana, ids: &[&str]) -> GrafanaTeams {
    teams_with(grafana, ids, AUTHORIZATION)
}

fn teams_with(grafana: &FakeGrafana, ids: &[&str], authorization: &str) -> GrafanaTeams {
    GrafanaTeams::new(
        grafana_client(authorization),
        &ClientUrl::parse(&grafana.url()).unwrap(),
        ids.iter().map(|&id| id.to_owned()).collect(),
    )
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|&name| name.to_owned()).collect()
}

fn row(name: &str, tag: &str) -> (String, String) {
    (name.to_owned(), format!("[\"{tag}\"]"))
}

/// Polls `condition` every 20 ms for up to 10 s.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..500 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn two_teams_are_merged_sorted_and_deduplicated() {
    let grafana = FakeGrafana::start().await;
    grafana.set_members("1", &["carol", "alice", ""]);
    grafana.set_members("42", &["bob", "alice"]);

    let members = teams(&grafana, &["1", "42"]).fetch_members().await.unwrap();
    assert_eq!(members, names(&["alice", "bob", "carol"]));

    let expected = |team: &str| SeenRequest {
        method: "GET".to_owned(),
        path: format!("/grafana/api/teams/{team}/members"),
        authorization: Some(AUTHORIZATION.to_owned()),
        accept: Some("application/json".to_owned()),
        content_type: Some("application/json".to_owned()),
    };
    assert_eq!(grafana.requests(), vec![expected("1"), expected("42")]);

    // No team ids: no request, no member.
    let members = teams(&grafana, &[]).fetch_members().await.unwrap();
    assert_eq!(members, Vec::<String>::new());
    assert_eq!(grafana.request_count(), 2);
}

#[tokio::test]
async fn a_member_removed_from_a_team_loses_admin_rights_after_the_next_sync() {
    let grafana = FakeGrafana::start().await;
    let server = Server::start(&["admin"]).await;
    grafana.set_members("1", &["alice", "bob"]);
    grafana.set_members("2", &["carol"]);
    let teams = teams(&grafana, &["1", "2"]);

    assert_eq!(server.admin_route_status("alice").await, 403);
    assert_eq!(
        server.sync(&teams).await.unwrap(),
        GrafanaAdminChanges::default()
    );
    assert_eq!(
        server.admin_names().await,
        names(&["admin", "alice", "bob", "carol", "ceems-int-svc"])
    );
    assert_eq!(server.admin_route_status("alice").await, 200);
    assert_eq!(server.admin_route_status("carol").await, 200);
    assert_eq!(server.admin_route_status("mallory").await, 403);

    grafana.set_members("1", &["bob"]);
    // Until the next sync alice keeps her rights.
    assert_eq!(server.admin_route_status("alice").await, 200);
    assert_eq!(
        server.sync(&teams).await.unwrap(),
        GrafanaAdminChanges {
            revoked: 1,
            handed_to_config: 0
        }
    );
    assert_eq!(
        server.admin_names().await,
        names(&["admin", "bob", "carol", "ceems-int-svc"])
    );
    assert_eq!(server.admin_route_status("alice").await, 403);
    assert_eq!(server.admin_route_status("bob").await, 200);
    assert_eq!(
        server.served_admins().await,
        vec![
            row("admin", "ceems"),
            row("bob", "grafana"),
            row("carol", "grafana"),
            row("ceems-int-svc", "ceems"),
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_failing_team_fails_the_whole_sync_and_keeps_the_admins() {
    let grafana = FakeGrafana::start().await;
    let server = Server::start(&["admin"]).await;
    grafana.set_members("1", &["alice"]);
    grafana.set_members("2", &["bob"]);
    let teams = teams(&grafana, &["1", "2"]);
    server.sync(&teams).await.unwrap();
    let before = names(&["admin", "alice", "bob", "ceems-int-svc"]);
    assert_eq!(server.admin_names().await, before);

    // alice leaves team 1 while team 2 fails: nothing changes, alice included.
    grafana.set_members("1", &[]);
    let failures = [
        (
            TeamAnswer::Status(500),
            "Grafana team 2: unexpected HTTP status 500 Internal Server Error",
        ),
        (
            TeamAnswer::Body(r#"{"message":"not a list"}"#.to_owned()),
            "Grafana team 2: the answer is not a JSON array of team members: invalid type: map, expected a sequence at line 1 column 0",
        ),
        (
            TeamAnswer::Body(r#"["bob"]"#.to_owned()),
            "Grafana team 2: the answer is not a JSON array of team members: invalid type: string \"bob\", expected struct TeamMember at line 1 column 6",
        ),
        (
            TeamAnswer::Body("null".to_owned()),
            "Grafana team 2: the answer is not a JSON array of team members: invalid type: null, expected a sequence at line 1 column 4",
        ),
    ];
    for (answer, message) in failures {
        grafana.set_team("2", answer);
        let error = server.sync(&teams).await.unwrap_err();
        assert!(matches!(error, AdminSyncError::Grafana(_)), "{error:?}");
        assert_eq!(error.to_string(), message);
        assert_eq!(server.admin_names().await, before);
        assert_eq!(server.admin_route_status("alice").await, 200);
    }

    // Wrong credentials: Grafana's 401 is an error too, not an empty team.
    grafana.set_members("2", &["bob"]);
    let wrong = teams_with(&grafana, &["1", "2"], "Basic d3Jvbmc6d3Jvbmc=");
    let error = server.sync(&wrong).await.unwrap_err();
    assert!(
        matches!(
            &error,
            AdminSyncError::Grafana(GrafanaError::Status { team, status })
                if team == "1" && status.as_u16() == 401
        ),
        "{error:?}"
    );
    assert_eq!(server.admin_names().await, before);

    // Back to health: the pending removal of alice now happens.
    server.sync(&teams).await.unwrap();
    assert_eq!(
        server.admin_names().await,
        names(&["admin", "bob", "ceems-int-svc"])
    );
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_grafana_fails_the_sync_and_keeps_the_admins() {
    let grafana = FakeGrafana::start().await;
    let server = Server::start(&["admin"]).await;
    grafana.set_members("1", &["alice"]);
    server.sync(&teams(&grafana, &["1"])).await.unwrap();

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let gone = GrafanaTeams::new(
        grafana_client(AUTHORIZATION),
        &ClientUrl::parse(&format!("http://grafana:secret@127.0.0.1:{port}")).unwrap(),
        names(&["1"]),
    );
    let error = server.sync(&gone).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("Grafana team 1: request failed: "),
        "{message}"
    );
    assert!(!message.contains("secret"), "credentials leaked: {message}");
    assert_eq!(
        server.admin_names().await,
        names(&["admin", "alice", "ceems-int-svc"])
    );
    server.stop().await;
}

#[tokio::test]
async fn a_config_admin_removed_from_grafana_stays_admin_through_the_config() {
    let grafana = FakeGrafana::start().await;
    let server = Server::start(&["admin", "both"]).await;
    grafana.set_members("1", &["both", "graf"]);
    let teams = teams(&grafana, &["1"]);
    server.sync(&teams).await.unwrap();
    // One row for `both`, written last by the Grafana sync (as in the reference).
    assert_eq!(
        server.served_admins().await,
        vec![
            row("admin", "ceems"),
            row("both", "grafana"),
            row("ceems-int-svc", "ceems"),
            row("graf", "grafana"),
        ]
    );

    grafana.set_members("1", &["graf"]);
    assert_eq!(
        server.sync(&teams).await.unwrap(),
        GrafanaAdminChanges {
            revoked: 0,
            handed_to_config: 1
        }
    );
    assert_eq!(
        server.admin_names().await,
        names(&["admin", "both", "ceems-int-svc", "graf"])
    );
    assert_eq!(
        server.served_admins().await,
        vec![
            row("admin", "ceems"),
            row("both", "ceems"),
            row("ceems-int-svc", "ceems"),
            row("graf", "grafana"),
        ]
    );
    assert_eq!(server.admin_route_status("both").await, 200);

    // Empty teams revoke every Grafana admin and no config admin.
    grafana.set_members("1", &[]);
    server.sync(&teams).await.unwrap();
    assert_eq!(
        server.admin_names().await,
        names(&["admin", "both", "ceems-int-svc"])
    );
    assert_eq!(server.admin_route_status("graf").await, 403);
    server.stop().await;
}

#[tokio::test]
async fn the_schedule_syncs_at_once_then_every_interval_and_stops_on_shutdown() {
    let grafana = FakeGrafana::start().await;
    let server = Server::start(&["admin"]).await;
    grafana.set_members("1", &["alice"]);
    grafana.set_members("2", &["bob"]);
    let shutdown = CancellationToken::new();
    let schedule = tokio::spawn(run_admin_sync(
        teams(&grafana, &["1", "2"]),
        server.db(),
        server.config_admins.clone(),
        Duration::from_millis(100),
        ZONE,
        shutdown.clone(),
    ));

    eventually("the first sync", || async {
        server.admin_names().await == names(&["admin", "alice", "bob", "ceems-int-svc"])
    })
    .await;

    // A failing team: the syncs go on failing and the admins stay.
    grafana.set_members("1", &[]);
    grafana.set_team("2", TeamAnswer::Status(503));
    let failing_since = grafana.request_count();
    eventually("two more failing syncs", || async {
        grafana.request_count() >= failing_since + 4
    })
    .await;
    assert_eq!(
        server.admin_names().await,
        names(&["admin", "alice", "bob", "ceems-int-svc"])
    );

    grafana.set_members("2", &["bob"]);
    eventually("alice's removal", || async {
        server.admin_names().await == names(&["admin", "bob", "ceems-int-svc"])
    })
    .await;
    assert_eq!(server.admin_route_status("alice").await, 403);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), schedule)
        .await
        .expect("the schedule stops on shutdown")
        .unwrap();
    let after_stop = grafana.request_count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        grafana.request_count(),
        after_stop,
        "no request after shutdown"
    );
    server.stop().await;
}
