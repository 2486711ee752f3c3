//! Builds storage and the HTTP server from the settings and owns shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::client::build_http_client;
use crate::config::Settings;
use crate::grafana::{self, GrafanaTeams};
use crate::http::{self, listener, web_config::WebConfigHandle};
use crate::model::time::format_dt;
use crate::pipeline::{self, backup, build_pipeline, retention};
use crate::storage::{admin, Database};

/// A running server.
pub struct App {
    addresses: Vec<SocketAddr>,
    database: Database,
    server: JoinHandle<std::io::Result<()>>,
    stop: oneshot::Sender<()>,
    /// The update loop's tasks and their stop signal.
    background: JoinSet<()>,
    shutdown: CancellationToken,
}

impl App {
    /// Opens (creating and migrating) the database, records the config's admins, binds
    /// every listen address and starts serving. Any failure is a start-up error.
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        let flags = &settings.flags;
        let data = &settings.config.server.data;

        let web = match &flags.web_config_file {
            Some(path) => Some(
                WebConfigHandle::open(path)
                    .with_context(|| format!("--web.config.file {}", path.display()))?,
            ),
            None => None,
        };

        let database = Database::open(&data.path)
            .with_context(|| format!("opening the database under {}", data.path.display()))?;

        let admins = settings.config.server.admin.ceems_admin_users();
        let now = format_dt(chrono::Utc::now().timestamp(), data.time_zone);
        database
            .write(move |conn| admin::sync_config_admins(conn, &admins, &now))
            .await
            .context("recording the config's admin users")?;

        let pipeline = build_pipeline(&settings.config, database.clone(), pipeline::now_ms())?;
        let grafana = grafana_admin_sync(&settings).await?;

        let api = http::build_api(&settings, database.clone())?;
        let listeners = listener::bind(&flags.listen_addresses)
            .await
            .context("--web.listen-address")?;
        let addresses = listeners
            .iter()
            .map(|listener| listener.local_addr())
            .collect::<Result<Vec<_>, _>>()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let service = warp::service(http::routes::filter(Arc::new(api)));
        let server = tokio::spawn(listener::serve(listeners, web, service, async move {
            let _ = stopped.await;
        }));
        let shutdown = CancellationToken::new();
        let mut background = JoinSet::new();
        background.spawn(pipeline::build_stored_cluster_indexes(
            database.clone(),
            pipeline.cluster_ids(),
        ));
        pipeline.spawn(&shutdown, &mut background);
        if !flags.skip_delete_old_units {
            background.spawn(retention::run_retention(
                database.clone(),
                data.retention_period,
                data.time_zone,
                data.update_interval,
                shutdown.clone(),
            ));
        }
        let backup_shutdown = shutdown.clone();
        background.spawn(backup::run_backups(
            database.clone(),
            data.clone(),
            async move { backup_shutdown.cancelled().await },
        ));
        if let Some(teams) = grafana {
            background.spawn(grafana::run_admin_sync(
                teams,
                database.clone(),
                settings.config.server.admin.ceems_admin_users(),
                data.update_interval,
                data.time_zone,
                shutdown.clone(),
            ));
        }
        Ok(App {
            addresses,
            database,
            server,
            stop,
            background,
            shutdown,
        })
    }

    /// The bound addresses (port 0 resolved).
    pub fn local_addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// The port of the first listener.
    pub fn port(&self) -> u16 {
        self.addresses.first().map_or(0, SocketAddr::port)
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Serves until `signal` resolves (or the server fails), then shuts down gracefully.
    pub async fn run_until_stopped(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        let App {
            server,
            stop,
            mut background,
            shutdown,
            ..
        } = self;
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => {
                return result.context("server task")?.context("server");
            }
            () = signal => {
                tracing::info!("shutting down");
            }
        }
        // The update loop first: a fetch is abandoned (its child processes killed), a
        // commit in progress finishes, so the next start resumes from a whole window.
        shutdown.cancel();
        while let Some(result) = background.join_next().await {
            if let Err(error) = result {
                tracing::error!(%error, "a background task failed");
            }
        }
        let _ = stop.send(());
        server.await.context("server task")?.context("server")?;
        tracing::info!("stopped");
        Ok(())
    }

    /// Stops serving and waits for in-flight requests (used by tests).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.run_until_stopped(std::future::ready(())).await
    }
}

/// The Grafana team sync of the config, if any: the server must reach Grafana at start
/// (as the reference requires); the sync itself runs only when `teams_ids` is set.
async fn grafana_admin_sync(settings: &Settings) -> anyhow::Result<Option<GrafanaTeams>> {
    let grafana = &settings.config.server.admin.grafana;
    let Some(url) = &grafana.url else {
        return Ok(None);
    };
    grafana::check_reachable(url)
        .await
        .context("ceems_api_server.admin.grafana.url")?;
    let Some(team_ids) = &grafana.teams_ids else {
        return Ok(None);
    };
    let client = build_http_client(&grafana.client, GRAFANA_USER_AGENT)
        .context("ceems_api_server.admin.grafana")?;
    Ok(Some(GrafanaTeams::new(client, url, team_ids.clone())))
}

/// The User-Agent of the Grafana team requests.
const GRAFANA_USER_AGENT: &str = concat!("ceems_api_server/", env!("CARGO_PKG_VERSION"));
