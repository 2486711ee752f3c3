//! What the updater knows of the TSDB's own settings (scrape and evaluation intervals, query
//! limits), read from its status endpoints and cached for 6 hours.
//!
//! Prometheus-compatible stores that lack these endpoints (Thanos, Mimir, VictoriaMetrics)
//! simply leave the defaults in place.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::client::error_chain;
use crate::config::parse_prometheus_duration;

/// How long fetched settings are trusted.
pub const SETTINGS_CACHE_TIME: Duration = Duration::from_secs(6 * 3600);

/// The TSDB's settings, as far as the updater uses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsdbSettings {
    pub scrape_interval: Duration,
    pub evaluation_interval: Duration,
    pub lookback_delta: Duration,
    pub query_timeout: Duration,
    /// `--query.max-samples`: the most samples one query may hold in memory.
    pub max_samples: u64,
    /// `storageRetention`, when the TSDB reports one; informational.
    pub retention: Option<Duration>,
}

impl Default for TsdbSettings {
    fn default() -> Self {
        Self {
            scrape_interval: Duration::from_secs(60),
            evaluation_interval: Duration::from_secs(60),
            lookback_delta: Duration::from_secs(300),
            query_timeout: Duration::from_secs(120),
            max_samples: 50_000_000,
            retention: None,
        }
    }
}

impl TsdbSettings {
    /// The shortest window worth querying: four scrape intervals.
    pub fn rate_interval(&self) -> Duration {
        self.scrape_interval * 4
    }

    /// Reads `global.scrape_interval` and `global.evaluation_interval` from the YAML of
    /// `/api/v1/status/config`. A missing, unreadable or zero value keeps the current one.
    pub fn apply_config_yaml(&mut self, yaml: &str) -> Result<(), String> {
        let value: yaml_serde::Value =
            yaml_serde::from_str(yaml).map_err(|error| format!("config YAML: {error}"))?;
        let global = value.get("global");
        let interval = |key: &str| {
            global
                .and_then(|global| global.get(key))
                .and_then(yaml_serde::Value::as_str)
                .and_then(positive_duration)
        };
        if let Some(scrape) = interval("scrape_interval") {
            self.scrape_interval = scrape;
        }
        if let Some(evaluation) = interval("evaluation_interval") {
            self.evaluation_interval = evaluation;
        }
        Ok(())
    }

    /// Reads `query.max-samples`, `query.lookback-delta` and `query.timeout` from
    /// `/api/v1/status/flags`. A value that does not parse keeps the current one.
    pub fn apply_flags(&mut self, flags: &HashMap<String, String>) {
        if let Some(max_samples) = flags
            .get("query.max-samples")
            .and_then(|text| text.trim().parse::<u64>().ok())
        {
            self.max_samples = max_samples;
        }
        if let Some(lookback) = flags
            .get("query.lookback-delta")
            .and_then(|text| positive_duration(text))
        {
            self.lookback_delta = lookback;
        }
        if let Some(timeout) = flags
            .get("query.timeout")
            .and_then(|text| positive_duration(text))
        {
            self.query_timeout = timeout;
        }
    }

    /// Reads `storageRetention` of `/api/v1/status/runtimeinfo`, e.g. `15d` or
    /// `15d or 512MiB`: the first part that is a duration.
    pub fn apply_storage_retention(&mut self, retention: &str) {
        if let Some(retention) = retention
            .split(" or ")
            .find_map(|part| parse_prometheus_duration(part.trim()).ok())
        {
            self.retention = Some(retention);
        }
    }
}

fn positive_duration(text: &str) -> Option<Duration> {
    parse_prometheus_duration(text.trim())
        .ok()
        .filter(|duration| !duration.is_zero())
}

/// The settings with the time they were last fetched in full.
#[derive(Debug, Default)]
pub(super) struct SettingsCache {
    settings: TsdbSettings,
    fetched_at: Option<Instant>,
    /// Endpoints already reported as absent (logged once).
    reported_absent: BTreeSet<&'static str>,
}

/// What one status endpoint gave.
enum Fetched<T> {
    Answer(T),
    /// Answered, but not with what a Prometheus gives (404, an error, not JSON): the store
    /// does not offer it. Not asked again before the cache expires.
    Absent(String),
    /// Not reached, or a 5xx: asked again at the next update.
    Unreachable(String),
}

#[derive(Deserialize)]
struct StatusEnvelope<T> {
    status: String,
    data: Option<T>,
}

#[derive(Deserialize)]
struct ConfigData {
    yaml: String,
}

#[derive(Deserialize)]
struct RuntimeInfoData {
    #[serde(rename = "storageRetention")]
    storage_retention: Option<String>,
}

impl SettingsCache {
    /// The cached settings, fetched first when they are older than 6 hours or were never
    /// fetched in full. A failed fetch keeps the previous values.
    pub(super) async fn current(
        &mut self,
        client: &reqwest::Client,
        base_url: &str,
        updater_id: &str,
    ) -> TsdbSettings {
        if self
            .fetched_at
            .is_some_and(|fetched_at| fetched_at.elapsed() < SETTINGS_CACHE_TIME)
        {
            return self.settings.clone();
        }
        let mut settings = self.settings.clone();
        let mut complete = true;

        let config = fetch::<ConfigData>(client, base_url, "config").await;
        if let Some(data) = self.accept(config, "config", updater_id, &mut complete) {
            if let Err(error) = settings.apply_config_yaml(&data.yaml) {
                tracing::info!(updater = updater_id, %error, "cannot read the TSDB's config; default intervals apply");
            }
        }
        let flags = fetch::<HashMap<String, String>>(client, base_url, "flags").await;
        if let Some(flags) = self.accept(flags, "flags", updater_id, &mut complete) {
            settings.apply_flags(&flags);
        }
        let runtime_info = fetch::<RuntimeInfoData>(client, base_url, "runtimeinfo").await;
        if let Some(info) = self.accept(runtime_info, "runtimeinfo", updater_id, &mut complete) {
            if let Some(retention) = &info.storage_retention {
                settings.apply_storage_retention(retention);
            }
        }

        if settings != self.settings {
            tracing::debug!(updater = updater_id, ?settings, "TSDB settings");
        }
        self.settings = settings;
        if complete {
            self.fetched_at = Some(Instant::now());
        }
        self.settings.clone()
    }

    fn accept<T>(
        &mut self,
        fetched: Fetched<T>,
        endpoint: &'static str,
        updater_id: &str,
        complete: &mut bool,
    ) -> Option<T> {
        match fetched {
            Fetched::Answer(data) => Some(data),
            Fetched::Absent(reason) => {
                if self.reported_absent.insert(endpoint) {
                    tracing::info!(
                        updater = updater_id,
                        endpoint = %format!("/api/v1/status/{endpoint}"),
                        %reason,
                        "TSDB status endpoint not available; defaults apply"
                    );
                }
                None
            }
            Fetched::Unreachable(reason) => {
                *complete = false;
                tracing::debug!(
                    updater = updater_id,
                    endpoint = %format!("/api/v1/status/{endpoint}"),
                    %reason,
                    "cannot fetch TSDB settings; previous values kept"
                );
                None
            }
        }
    }
}

async fn fetch<T: for<'de> Deserialize<'de>>(
    client: &reqwest::Client,
    base_url: &str,
    endpoint: &str,
) -> Fetched<T> {
    let url = format!("{base_url}/api/v1/status/{endpoint}");
    let response = match client.get(&url).send().await {
        Ok(response) => response,
        Err(error) => return Fetched::Unreachable(error_chain(&error)),
    };
    let status = response.status();
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Fetched::Unreachable(format!("HTTP {status}"));
    }
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(error) => return Fetched::Unreachable(error_chain(&error)),
    };
    if !status.is_success() {
        return Fetched::Absent(format!("HTTP {status}"));
    }
    match serde_json::from_slice::<StatusEnvelope<T>>(&body) {
        Ok(StatusEnvelope {
            status,
            data: Some(data),
        }) if status == "success" => Fetched::Answer(data),
        Ok(envelope) => Fetched::Absent(format!("status {:?} without data", envelope.status)),
        Err(error) => Fetched::Absent(format!("not a Prometheus answer: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_yaml_sets_both_intervals() {
        let mut settings = TsdbSettings::default();
        settings
            .apply_config_yaml(
                "global:\n  scrape_interval: 15s\n  scrape_timeout: 10s\n  evaluation_interval: 1m30s\nscrape_configs: []\n",
            )
            .unwrap();
        assert_eq!(settings.scrape_interval, Duration::from_secs(15));
        assert_eq!(settings.evaluation_interval, Duration::from_secs(90));
        assert_eq!(settings.rate_interval(), Duration::from_secs(60));
    }

    #[test]
    fn config_yaml_without_values_keeps_defaults() {
        let mut settings = TsdbSettings::default();
        settings.apply_config_yaml("scrape_configs: []\n").unwrap();
        settings
            .apply_config_yaml("global:\n  scrape_interval: soon\n  evaluation_interval: 0s\n")
            .unwrap();
        assert_eq!(settings, TsdbSettings::default());
        assert!(settings.apply_config_yaml("global: [").is_err());
    }

    #[test]
    fn flags_set_limits_when_they_parse() {
        let mut settings = TsdbSettings::default();
        settings.apply_flags(&HashMap::from([
            ("query.max-samples".to_owned(), "1000".to_owned()),
            ("query.lookback-delta".to_owned(), "2m".to_owned()),
            ("query.timeout".to_owned(), "30s".to_owned()),
        ]));
        assert_eq!(settings.max_samples, 1000);
        assert_eq!(settings.lookback_delta, Duration::from_secs(120));
        assert_eq!(settings.query_timeout, Duration::from_secs(30));

        let mut settings = TsdbSettings::default();
        settings.apply_flags(&HashMap::from([
            ("query.max-samples".to_owned(), "lots".to_owned()),
            ("query.timeout".to_owned(), "".to_owned()),
        ]));
        assert_eq!(
            settings,
            TsdbSettings::default(),
            "bad values keep the defaults"
        );
    }

    #[test]
    fn storage_retention_takes_the_first_duration() {
        let mut settings = TsdbSettings::default();
        settings.apply_storage_retention("15d or 512MiB");
        assert_eq!(settings.retention, Some(Duration::from_secs(15 * 86_400)));
        settings.apply_storage_retention("512MiB or 10y");
        assert_eq!(
            settings.retention,
            Some(Duration::from_secs(10 * 365 * 86_400))
        );
        settings.apply_storage_retention("512MiB");
        assert_eq!(
            settings.retention,
            Some(Duration::from_secs(10 * 365 * 86_400))
        );
    }
}
