//! Configuration: the YAML file (`ceems_api_server`, `clusters`, `updaters`) and the
//! command-line flags, each validated at load with no side effects.

mod duration;

use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;

pub use duration::{
    format_go_duration, format_prometheus_duration, parse_prometheus_duration, DurationError,
};

/// Everything the server runs on: the flags and the file they point at.
#[derive(Debug, Clone)]
pub struct Settings {
    pub flags: Flags,
    pub config: Config,
}

/// Command-line flags (kingpin-compatible names).
#[derive(Debug, Clone)]
pub struct Flags {
    pub config_file: Option<PathBuf>,
    pub config_file_expand_env_vars: bool,
    pub listen_addresses: Vec<String>,
    pub web_config_file: Option<PathBuf>,
    /// Normalised: starts with `/`, no trailing `/` (empty for the root).
    pub route_prefix: String,
    pub max_requests: u32,
    pub cors_origin: String,
    pub compression: bool,
    pub compression_level: u32,
    pub debug_server: bool,
    pub query_max_period: Duration,
    pub log_level: String,
    pub log_format: String,
    pub external_url: Option<String>,
    pub user_header_names: Vec<String>,
    pub skip_delete_old_units: bool,
    pub disable_checks: bool,
}

impl Default for Flags {
    fn default() -> Self {
        Self {
            config_file: None,
            config_file_expand_env_vars: false,
            listen_addresses: vec![":9020".to_owned()],
            web_config_file: None,
            route_prefix: String::new(),
            max_requests: 0,
            cors_origin: ".*".to_owned(),
            compression: false,
            compression_level: 5,
            debug_server: false,
            query_max_period: Duration::ZERO,
            log_level: "info".to_owned(),
            log_format: "logfmt".to_owned(),
            external_url: None,
            user_header_names: vec!["X-Grafana-User".to_owned()],
            skip_delete_old_units: false,
            disable_checks: false,
        }
    }
}

/// The config file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub server: ServerConfig,
    pub clusters: Vec<ClusterConfig>,
    pub updaters: Vec<UpdaterConfig>,
}

/// `ceems_api_server:`.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    pub data: DataConfig,
    pub admin: AdminConfig,
}

/// `ceems_api_server.data:`.
#[derive(Debug, Clone)]
pub struct DataConfig {
    /// Absolute.
    pub path: PathBuf,
    /// Absolute; `None` disables backups.
    pub backup_path: Option<PathBuf>,
    pub retention_period: Duration,
    pub update_interval: Duration,
    pub max_update_interval: Duration,
    pub backup_interval: Duration,
    /// As written (`YYYY-MM-DD[THH:MM[:SS]]`), `None` for today.
    pub update_from: Option<String>,
    pub time_zone: Tz,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data"),
            backup_path: None,
            retention_period: Duration::from_secs(30 * 86_400),
            update_interval: Duration::from_secs(15 * 60),
            max_update_interval: Duration::from_secs(3600),
            backup_interval: Duration::from_secs(86_400),
            update_from: None,
            time_zone: Tz::UTC,
        }
    }
}

/// `ceems_api_server.admin:`.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    pub users: Vec<String>,
}

/// One `clusters[]` entry.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    pub id: String,
    pub manager: String,
    pub updaters: Vec<String>,
}

/// One `updaters[]` entry.
#[derive(Debug, Clone, Default)]
pub struct UpdaterConfig {
    pub id: String,
    pub updater: String,
}
