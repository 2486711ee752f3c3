//! The TSDB updater: fills the units' usage, energy, emissions and IO metrics of one collect
//! window from PromQL instant queries against Prometheus (or a compatible store).
//!
//! One update: mark short units ignored; read the TSDB's settings (cached); cut the uuids
//! into batches that keep every query under the sample limit; per batch, run every
//! (metric, submetric) template, a few at a time; replace the maps of the metrics that got
//! an answer; delete the series asked for.
//!
//! Failures come in two kinds. A TSDB that cannot answer now (unreachable, timeout, 5xx,
//! 429) fails the whole update, so that the window is retried later and nothing of it is
//! written. A query the TSDB refuses (4xx, `bad_data`, a non-vector result) is logged and
//! gives no data: retrying would not help, and the pipeline must go on.

mod batch;
mod query;
mod settings;

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

pub use self::batch::{batch_size, Results};
use self::query::{instant_query, QueryError, QueryParameters};
use self::settings::SettingsCache;
pub use self::settings::{TsdbSettings, SETTINGS_CACHE_TIME};
use crate::client::{build_http_client, error_chain, ClientError};
use crate::config::{
    format_go_duration, HttpClientConfig, QueryTemplate, TsdbUpdaterConfig, UpdaterConfig,
};
use crate::model::{Metric, Unit};
use crate::pipeline::Window;

/// The User-Agent of every request to the TSDB.
pub const USER_AGENT: &str = "ceems/tsdb";
/// Queries of one batch in flight at once.
pub const QUERY_CONCURRENCY: usize = 4;

/// Why an update failed; every variant means "retry the window later".
#[derive(Debug, thiserror::Error)]
pub enum TsdbError {
    #[error("updater {id}: HTTP client: {source}")]
    Client { id: String, source: ClientError },
    #[error("updater {id}: invalid TSDB URL {url:?}: {message}")]
    Url {
        id: String,
        url: String,
        message: String,
    },
    #[error("updater {id}: query {metric}.{submetric}: {message}")]
    Unavailable {
        id: String,
        metric: String,
        submetric: String,
        message: String,
    },
}

/// One configured (metric, submetric) query.
#[derive(Debug, Clone)]
struct MetricQuery {
    metric: Metric,
    submetric: String,
    template: QueryTemplate,
}

/// Where the TSDB is and how to talk to it.
struct Endpoint {
    /// The base URL without a trailing `/`.
    url: String,
    client_config: HttpClientConfig,
    client: prometheus_http_query::Client,
}

/// A `tsdb` updater of the config, ready to update windows.
pub struct TsdbUpdater {
    id: String,
    /// `None` when the config has no `web.url`: every update is a no-op.
    endpoint: Option<Endpoint>,
    config: TsdbUpdaterConfig,
    queries: Vec<MetricQuery>,
    settings: Mutex<SettingsCache>,
}

impl std::fmt::Debug for TsdbUpdater {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TsdbUpdater")
            .field("id", &self.id)
            .field("url", &self.endpoint.as_ref().map(|endpoint| &endpoint.url))
            .field("queries", &self.queries.len())
            .finish()
    }
}

impl TsdbUpdater {
    /// Builds the HTTP client (reading credential files once to check them) and selects
    /// the queries of the known metric columns; queries of other metric names are skipped
    /// with a warning.
    pub fn new(config: &UpdaterConfig) -> Result<Self, TsdbError> {
        let endpoint = match &config.web.url {
            None => None,
            Some(url) => {
                let url = url.as_str().trim_end_matches('/').to_owned();
                let client = prometheus_client(&config.id, &url, &config.web.client)?;
                Some(Endpoint {
                    url,
                    client_config: config.web.client.clone(),
                    client,
                })
            }
        };
        let mut queries = Vec::new();
        for (metric_name, submetrics) in &config.tsdb.queries {
            let Some(metric) = Metric::from_column(metric_name)
                .filter(|metric| *metric != Metric::TotalTimeSeconds)
            else {
                tracing::warn!(
                    updater = %config.id,
                    metric = %metric_name,
                    "not a metric column of units; its queries are skipped"
                );
                continue;
            };
            for (submetric, template) in submetrics {
                queries.push(MetricQuery {
                    metric,
                    submetric: submetric.clone(),
                    template: template.clone(),
                });
            }
        }
        Ok(Self {
            id: config.id.clone(),
            endpoint,
            config: config.tsdb.clone(),
            queries,
            settings: Mutex::new(SettingsCache::default()),
        })
    }

    /// Adds this window's metrics to `units` and returns the uuids to mark ignored.
    ///
    /// `Ok` when every query was answered or refused for good (a refused query is logged
    /// and its metric keeps its maps). `Err` when the TSDB could not be reached, timed out
    /// or answered 5xx/429: then `units` are left untouched and the caller retries the
    /// window later.
    pub async fn update(
        &self,
        window: &Window,
        units: &mut [Unit],
    ) -> Result<BTreeSet<String>, TsdbError> {
        let Some(endpoint) = &self.endpoint else {
            return Ok(BTreeSet::new());
        };
        if units.is_empty() {
            return Ok(BTreeSet::new());
        }
        let ignored = batch::ignored_uuids(units, self.config.cutoff_duration);
        let client = self.current_client(endpoint)?;
        let settings = self
            .settings
            .lock()
            .await
            .current(client.inner(), &endpoint.url, &self.id)
            .await;

        let range = batch::query_range(window.duration());
        let uuids = batch::distinct_uuids(units);
        let mut results = Results::new();
        if range < settings.rate_interval() {
            tracing::debug!(
                updater = %self.id,
                range = %format_go_duration(range),
                rate_interval = %format_go_duration(settings.rate_interval()),
                "window shorter than the rate interval: no query"
            );
        } else if !uuids.is_empty() && !self.queries.is_empty() {
            let size = batch_size(range, &settings, &self.config, uuids.len());
            let parameters = QueryParameters {
                time: batch::epoch_seconds(window.end_ms),
                lookback_delta: format_go_duration(settings.scrape_interval),
            };
            for chunk in uuids.chunks(size) {
                let values = batch::template_values(chunk, range, &settings);
                let rendered: Vec<String> = self
                    .queries
                    .iter()
                    .map(|query| {
                        query
                            .template
                            .render_with_subquery_range(&values, batch::subquery_range(range))
                    })
                    .collect();
                self.run_batch(&client, rendered, &parameters, &mut results)
                    .await?;
            }
        }
        batch::write_back(units, &results);
        self.delete_series(endpoint, &client, window, &ignored)
            .await;
        Ok(ignored)
    }

    /// A fresh client when the config names credential or certificate files (so rotated
    /// files are used, as Prometheus reads them per request), else the one built at start.
    fn current_client(
        &self,
        endpoint: &Endpoint,
    ) -> Result<prometheus_http_query::Client, TsdbError> {
        if endpoint.client_config.file_paths().is_empty() {
            return Ok(endpoint.client.clone());
        }
        prometheus_client(&self.id, &endpoint.url, &endpoint.client_config)
    }

    /// Runs every query of one batch, at most [`QUERY_CONCURRENCY`] at a time, and merges
    /// the answers into `results`. The first transient failure ends the batch (the other
    /// queries are dropped) with an error.
    async fn run_batch(
        &self,
        client: &prometheus_http_query::Client,
        rendered: Vec<String>,
        parameters: &QueryParameters,
        results: &mut Results,
    ) -> Result<(), TsdbError> {
        let permits = Arc::new(Semaphore::new(QUERY_CONCURRENCY));
        let mut tasks = JoinSet::new();
        for (index, query) in rendered.into_iter().enumerate() {
            let client = client.clone();
            let parameters = parameters.clone();
            let permits = permits.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                (index, instant_query(&client, &query, &parameters).await)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (index, outcome) = match joined {
                Ok(done) => done,
                Err(error) => {
                    return Err(TsdbError::Unavailable {
                        id: self.id.clone(),
                        metric: String::new(),
                        submetric: String::new(),
                        message: format!("query task failed: {error}"),
                    })
                }
            };
            let query = &self.queries[index];
            match outcome {
                Ok(answer) => {
                    for warning in &answer.warnings {
                        tracing::warn!(
                            updater = %self.id,
                            metric = query.metric.column(),
                            submetric = %query.submetric,
                            %warning,
                            "TSDB warning"
                        );
                    }
                    results
                        .entry(query.metric)
                        .or_default()
                        .entry(query.submetric.clone())
                        .or_default()
                        .extend(answer.values);
                }
                Err(QueryError::Permanent(error)) => {
                    tracing::warn!(
                        updater = %self.id,
                        metric = query.metric.column(),
                        submetric = %query.submetric,
                        %error,
                        "query failed; this metric gets no data from it"
                    );
                }
                Err(QueryError::Transient(message)) => {
                    return Err(TsdbError::Unavailable {
                        id: self.id.clone(),
                        metric: query.metric.column().to_owned(),
                        submetric: query.submetric.clone(),
                        message,
                    });
                }
            }
        }
        Ok(())
    }

    /// Deletes the series of `labels_to_drop` and, with `delete_ignored`, those of the
    /// ignored units, over the window (stretched back by the cutoff). Needs the TSDB's
    /// admin API; failures are logged.
    async fn delete_series(
        &self,
        endpoint: &Endpoint,
        client: &prometheus_http_query::Client,
        window: &Window,
        ignored: &BTreeSet<String>,
    ) {
        let uuids: Vec<&str> = if self.config.delete_ignored {
            ignored.iter().map(String::as_str).collect()
        } else {
            Vec::new()
        };
        let mut matchers: Vec<String> = self.config.labels_to_drop.clone();
        if !uuids.is_empty() {
            matchers.push(format!("{{uuid=~\"{}\"}}", uuids.join("|")));
        }
        if matchers.is_empty() {
            return;
        }
        let cutoff_ms = i64::try_from(self.config.cutoff_duration.as_millis()).unwrap_or(i64::MAX);
        let mut form: Vec<(&str, String)> = matchers
            .iter()
            .map(|matcher| ("match[]", matcher.clone()))
            .collect();
        form.push((
            "start",
            batch::epoch_seconds(window.start_ms.saturating_sub(cutoff_ms)),
        ));
        form.push(("end", batch::epoch_seconds(window.end_ms)));
        let url = format!("{}/api/v1/admin/tsdb/delete_series", endpoint.url);
        match client.inner().post(&url).form(&form).send().await {
            Ok(response) if response.status().is_success() => {
                tracing::debug!(updater = %self.id, ?matchers, "deleted series");
            }
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                tracing::warn!(
                    updater = %self.id,
                    ?matchers,
                    %status,
                    body = %body.trim(),
                    "deleting series failed (is the admin API enabled?)"
                );
            }
            Err(error) => {
                tracing::warn!(
                    updater = %self.id,
                    ?matchers,
                    error = %error_chain(&error),
                    "deleting series failed"
                );
            }
        }
    }
}

fn prometheus_client(
    id: &str,
    url: &str,
    client_config: &HttpClientConfig,
) -> Result<prometheus_http_query::Client, TsdbError> {
    let http_client =
        build_http_client(client_config, USER_AGENT).map_err(|source| TsdbError::Client {
            id: id.to_owned(),
            source,
        })?;
    prometheus_http_query::Client::from(http_client, url).map_err(|error| TsdbError::Url {
        id: id.to_owned(),
        url: url.to_owned(),
        message: error_chain(&error),
    })
}

#[cfg(test)]
mod fake;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::fake::{FakeServer, SeenRequest};
    use super::*;
    use crate::config::{ClientUrl, WebClientConfig};
    use crate::model::MetricMap;

    const WINDOW_START_MS: i64 = 1_700_000_000_000;
    const HOUR_MS: i64 = 3_600_000;

    fn config(url: Option<&str>, tsdb: TsdbUpdaterConfig) -> UpdaterConfig {
        UpdaterConfig {
            id: "tsdb-0".to_owned(),
            updater: "tsdb".to_owned(),
            web: WebClientConfig {
                url: url.map(|url| ClientUrl::parse(url).unwrap()),
                ..WebClientConfig::default()
            },
            tsdb,
        }
    }

    fn one_query(source: &str) -> TsdbUpdaterConfig {
        TsdbUpdaterConfig {
            queries: BTreeMap::from([(
                "avg_cpu_usage".to_owned(),
                BTreeMap::from([("global".to_owned(), QueryTemplate::parse(source).unwrap())]),
            )]),
            ..TsdbUpdaterConfig::default()
        }
    }

    fn units() -> Vec<Unit> {
        vec![Unit {
            uuid: "1".to_owned(),
            ..Unit::default()
        }]
    }

    fn window(duration_ms: i64) -> Window {
        Window::new(
            WINDOW_START_MS,
            WINDOW_START_MS + duration_ms,
            chrono_tz::Tz::UTC,
        )
    }

    fn form(parameters: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(parameters.as_bytes())
            .into_owned()
            .collect()
    }

    const VECTOR: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"uuid":"1"},"value":[1700003600,"2"]}]}}"#;

    /// Like a store without status endpoints that refuses POST queries.
    fn no_status_no_post(request: &SeenRequest) -> (u16, String) {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/api/v1/query") => (200, VECTOR.to_owned()),
            ("POST", "/api/v1/query") => (405, String::new()),
            _ => (404, "404 page not found".to_owned()),
        }
    }

    #[tokio::test]
    async fn a_refused_post_is_sent_again_by_get_and_absent_settings_keep_defaults() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let server = FakeServer::start(no_status_no_post).await;
        let updater = TsdbUpdater::new(&config(
            Some(&server.url()),
            one_query("q{uuid=~\"{{.UUIDs}}\"}"),
        ))
        .unwrap();
        let mut units = units();
        let ignored = updater.update(&window(HOUR_MS), &mut units).await.unwrap();
        assert!(ignored.is_empty());
        assert_eq!(
            units[0].metrics.avg_cpu_usage,
            MetricMap(BTreeMap::from([("global".to_owned(), 2.0)]))
        );
        let requests = server.requests();
        let summary: Vec<(&str, &str)> = requests
            .iter()
            .map(|request| (request.method.as_str(), request.path.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("GET", "/api/v1/status/config"),
                ("GET", "/api/v1/status/flags"),
                ("GET", "/api/v1/status/runtimeinfo"),
                ("POST", "/api/v1/query"),
                ("GET", "/api/v1/query"),
            ]
        );
        let expected_parameters = [
            ("query".to_owned(), "q{uuid=~\"1\"}".to_owned()),
            ("time".to_owned(), "1700003600".to_owned()),
            // The default scrape interval: the store has no status endpoints.
            ("lookback_delta".to_owned(), "1m0s".to_owned()),
        ];
        assert_eq!(form(&requests[3].parameters), expected_parameters);
        assert_eq!(form(&requests[4].parameters), expected_parameters);

        // Absent endpoints are not asked again before the cache expires.
        updater.update(&window(HOUR_MS), &mut units).await.unwrap();
        assert_eq!(server.requests().len(), 7);
    }

    fn unavailable(request: &SeenRequest) -> (u16, String) {
        match request.path.as_str() {
            "/api/v1/status/config" => (
                200,
                r#"{"status":"success","data":{"yaml":"global:\n  scrape_interval: 30s\n"}}"#
                    .to_owned(),
            ),
            "/api/v1/query" => (
                503,
                r#"{"status":"error","errorType":"unavailable","error":"too busy"}"#.to_owned(),
            ),
            _ => (404, String::new()),
        }
    }

    #[tokio::test]
    async fn a_busy_tsdb_fails_the_update_and_leaves_the_units_alone() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let server = FakeServer::start(unavailable).await;
        let updater =
            TsdbUpdater::new(&config(Some(&server.url()), TsdbUpdaterConfig::default())).unwrap();
        let mut units = units();
        units[0].metrics.avg_cpu_usage = MetricMap(BTreeMap::from([("global".to_owned(), 5.0)]));
        let before = units.clone();
        let error = updater
            .update(&window(HOUR_MS), &mut units)
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with(": HTTP 503 Service Unavailable: unavailable: too busy"),
            "{error}"
        );
        assert_eq!(units, before);
        // The scrape interval of the config answer is used.
        let query = server
            .requests()
            .into_iter()
            .find(|request| request.path == "/api/v1/query")
            .unwrap();
        assert!(form(&query.parameters).contains(&("lookback_delta".to_owned(), "30s".to_owned())));
    }

    #[tokio::test]
    async fn a_window_shorter_than_the_rate_interval_is_not_queried() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let server = FakeServer::start(no_status_no_post).await;
        let updater = TsdbUpdater::new(&config(
            Some(&server.url()),
            one_query("q{uuid=~\"{{.UUIDs}}\"}"),
        ))
        .unwrap();
        let mut units = units();
        units[0].metrics.avg_cpu_usage = MetricMap(BTreeMap::from([("global".to_owned(), 5.0)]));
        let before = units.clone();
        // Default scrape 1m: the rate interval is 4m.
        updater
            .update(&window(4 * 60_000 - 1), &mut units)
            .await
            .unwrap();
        assert_eq!(units, before);
        assert!(server
            .requests()
            .iter()
            .all(|request| request.path.starts_with("/api/v1/status/")));
    }

    fn deletions(request: &SeenRequest) -> (u16, String) {
        match request.path.as_str() {
            "/api/v1/admin/tsdb/delete_series" => (204, String::new()),
            "/api/v1/query" => (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.to_owned(),
            ),
            _ => (404, String::new()),
        }
    }

    #[tokio::test]
    async fn deletion_sends_only_the_matchers_asked_for() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let server = FakeServer::start(deletions).await;
        let mut tsdb = one_query("q{uuid=~\"{{.UUIDs}}\"}");
        tsdb.labels_to_drop = vec!["ceems_ipmi_dcmi_avg_watts".to_owned()];
        tsdb.cutoff_duration = std::time::Duration::from_secs(60);
        tsdb.delete_ignored = true;
        let updater = TsdbUpdater::new(&config(Some(&server.url()), tsdb.clone())).unwrap();
        let mut units = units();
        updater.update(&window(HOUR_MS), &mut units).await.unwrap();
        let deletes: Vec<Vec<(String, String)>> = server
            .requests()
            .iter()
            .filter(|request| request.path == "/api/v1/admin/tsdb/delete_series")
            .map(|request| form(&request.parameters))
            .collect();
        let pair = |name: &str, value: &str| (name.to_owned(), value.to_owned());
        // No ignored unit: no uuid matcher (in particular not `{uuid=~""}`).
        assert_eq!(
            deletes,
            [vec![
                pair("match[]", "ceems_ipmi_dcmi_avg_watts"),
                pair("start", "1699999940"),
                pair("end", "1700003600"),
            ]]
        );

        // A short unit adds its uuid matcher.
        units[0].started_at_ts = WINDOW_START_MS;
        units[0].ended_at_ts = WINDOW_START_MS + 30_000;
        let ignored = updater.update(&window(HOUR_MS), &mut units).await.unwrap();
        assert_eq!(ignored, BTreeSet::from(["1".to_owned()]));
        let last = server.requests().last().cloned().unwrap();
        assert_eq!(
            form(&last.parameters)[..2],
            [
                pair("match[]", "ceems_ipmi_dcmi_avg_watts"),
                pair("match[]", "{uuid=~\"1\"}"),
            ]
        );

        // Nothing to delete: no request.
        tsdb.labels_to_drop.clear();
        tsdb.delete_ignored = false;
        let quiet = FakeServer::start(deletions).await;
        let updater = TsdbUpdater::new(&config(Some(&quiet.url()), tsdb)).unwrap();
        updater.update(&window(HOUR_MS), &mut units).await.unwrap();
        assert!(quiet
            .requests()
            .iter()
            .all(|request| request.path != "/api/v1/admin/tsdb/delete_series"));
    }

    #[tokio::test]
    async fn without_a_url_nothing_happens() {
        let updater = TsdbUpdater::new(&config(None, TsdbUpdaterConfig::default())).unwrap();
        let mut units = units();
        units[0].ended_at_ts = 1;
        let before = units.clone();
        assert!(updater
            .update(&window(HOUR_MS), &mut units)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(units, before);
    }

    #[test]
    fn oauth2_fails_the_start() {
        let mut config = config(Some("http://127.0.0.1:9"), TsdbUpdaterConfig::default());
        config.web.client.oauth2 = Some(crate::config::OAuth2Config::default());
        assert_eq!(
            TsdbUpdater::new(&config).unwrap_err().to_string(),
            "updater tsdb-0: HTTP client: oauth2 is not supported by this server"
        );
    }
}
