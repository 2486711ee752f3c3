//! Spawning the app on port 0 with a temporary data directory, a fixture database, and a
//! small HTTP client.

use std::path::Path;

use ceems_api_server::app::App;
use ceems_api_server::config::{Config, Flags, Settings};
use ceems_api_server::storage::migrations::migrate_to;
use rusqlite::Connection;

/// The fixture: an old (version 5) CEEMS database with two SLURM clusters.
pub const FIXTURE_V5: &str = include_str!("../fixtures/two_slurm_clusters_v5.sql");

/// 2024-01-10T00:00:00+01:00 and the next midnight: the fixture's day in Paris.
pub const DAY_FROM: i64 = 1_704_841_200;
pub const DAY_TO: i64 = 1_704_927_600;

pub struct TestApp {
    pub app: Option<App>,
    pub base: String,
    pub client: reqwest::Client,
    pub data_dir: tempfile::TempDir,
}

/// Writes the fixture database at schema version 5 into `dir/ceems.db`.
pub fn write_fixture_database(dir: &Path) {
    let mut conn = Connection::open(dir.join("ceems.db")).expect("create fixture db");
    migrate_to(&mut conn, 5).expect("migrate fixture to version 5");
    conn.execute_batch(FIXTURE_V5).expect("load fixture rows");
}

/// Settings for a test server on 127.0.0.1:0 over `data_dir`, Paris time, admin `admin`.
pub fn test_settings(data_dir: &Path) -> Settings {
    let flags = Flags {
        listen_addresses: vec!["127.0.0.1:0".to_owned()],
        // The fixture's units are from 2024: keep them whatever the retention.
        skip_delete_old_units: true,
        ..Flags::default()
    };
    let mut config = Config::default();
    config.server.data.path = data_dir.to_path_buf();
    config.server.data.time_zone = "Europe/Paris".parse().expect("zone");
    config.server.admin.users = vec!["admin".to_owned()];
    Settings { flags, config }
}

/// Starts the app on the fixture database, with `tweak` applied to the settings.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    write_fixture_database(data_dir.path());
    let mut settings = test_settings(data_dir.path());
    tweak(&mut settings);
    let app = App::build(settings).await.expect("app starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    // The client is built without a default TLS backend; give rustls its provider once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    TestApp {
        app: Some(app),
        base,
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        data_dir,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

impl TestApp {
    /// GET `path_and_query` as `user` (no user header when `None`).
    pub async fn get(&self, path_and_query: &str, user: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(format!("{}{}", self.base, path_and_query));
        if let Some(user) = user {
            request = request.header("X-Grafana-User", user);
        }
        request.send().await.expect("request sent")
    }

    /// GET and parse the JSON envelope, asserting the status.
    pub async fn get_json(
        &self,
        path_and_query: &str,
        user: Option<&str>,
        status: u16,
    ) -> serde_json::Value {
        let response = self.get(path_and_query, user).await;
        assert_eq!(response.status().as_u16(), status, "{path_and_query}");
        let text = response.text().await.expect("body");
        assert!(
            text.ends_with('\n'),
            "envelope ends with a newline: {text:?}"
        );
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("{error}: {text}"))
    }

    /// The `data` array of a successful answer.
    pub async fn data(&self, path_and_query: &str, user: &str) -> Vec<serde_json::Value> {
        let envelope = self.get_json(path_and_query, Some(user), 200).await;
        assert_eq!(envelope["status"], "success", "{envelope}");
        envelope["data"]
            .as_array()
            .unwrap_or_else(|| panic!("data is not an array: {envelope}"))
            .clone()
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await.expect("clean stop");
        }
    }
}

/// The values of `key` in each row.
pub fn column(rows: &[serde_json::Value], key: &str) -> Vec<String> {
    rows.iter()
        .map(|row| match &row[key] {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        })
        .collect()
}
