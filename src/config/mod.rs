//! Configuration: the YAML file (`ceems_api_server`, `clusters`, `updaters`) and the
//! command-line flags, each validated at load with no side effects.
//!
//! Every config error is one line naming the key it is about, e.g.
//! `config: ceems_api_server.data.update_interval: must be more than 0s`. Secrets (passwords,
//! tokens, keys, URL passwords, cluster `extra_config` and CLI environment values) are
//! redacted in `Debug`.

mod client;
mod duration;
mod file;
mod flags;
mod node;
mod tsdb;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDateTime;
use chrono_tz::Tz;

pub use client::{
    Authorization, BasicAuth, ClientUrl, HttpClientConfig, HttpHeader, OAuth2Config, ProxyConfig,
    Secret, TlsConfig, TlsVersion, WebClientConfig,
};
pub use duration::{
    format_go_duration, format_prometheus_duration, parse_prometheus_duration, DurationError,
};
pub use file::{expand_env_vars, parse_update_from};
pub use flags::{command, parse_flags, parse_flags_with_env, FlagsError};
pub use tsdb::{
    default_queries, QueryTemplate, TemplateValues, TemplateVariable, TsdbUpdaterConfig,
    DEFAULT_QUERY_MAX_SERIES, DEFAULT_QUERY_MIN_SAMPLES,
};

/// Why the config file could not be loaded. Each variant displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: failed to read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config: cannot resolve the working directory: {0}")]
    WorkingDirectory(std::io::Error),
    #[error("config: invalid YAML: {0}")]
    Yaml(String),
    /// A value that does not parse or validate, with the key path it sits at.
    #[error("config: {key}: {message}")]
    Invalid { key: String, message: String },
}

/// Everything the server runs on: the flags and the file they point at.
#[derive(Debug, Clone)]
pub struct Settings {
    pub flags: Flags,
    pub config: Config,
}

/// Reads the config file named by the flags (none: every default), expanding environment
/// variables first when asked. Relative flag paths are made absolute against the working
/// directory. Reads the file and nothing else; creates nothing.
pub fn load_settings(mut flags: Flags) -> Result<Settings, ConfigError> {
    let working_dir = std::env::current_dir().map_err(ConfigError::WorkingDirectory)?;
    flags.config_file = flags
        .config_file
        .map(|path| file::absolute_path(&working_dir, &path));
    flags.web_config_file = flags
        .web_config_file
        .map(|path| file::absolute_path(&working_dir, &path));
    let (text, base_dir) = match &flags.config_file {
        None => (String::new(), working_dir.clone()),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let base_dir = path
                .parent()
                .map_or_else(|| working_dir.clone(), Path::to_path_buf);
            (text, base_dir)
        }
    };
    let text = if flags.config_file_expand_env_vars {
        expand_env_vars(&text, |name| std::env::var(name).ok())
    } else {
        text
    };
    let config = file::parse_config_with(
        &text,
        &file::LoadOptions {
            base_dir: &base_dir,
            working_dir: &working_dir,
            disable_checks: flags.disable_checks,
        },
    )?;
    Ok(Settings { flags, config })
}

/// Parses and validates a config file's text. HTTP-client file paths resolve against
/// `base_dir` (the file's directory), data paths against the working directory.
pub fn parse_config(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    let working_dir = std::env::current_dir().map_err(ConfigError::WorkingDirectory)?;
    file::parse_config_with(
        text,
        &file::LoadOptions {
            base_dir,
            working_dir: &working_dir,
            disable_checks: false,
        },
    )
}

/// The CORS origin regex as the reference compiles it: anchored, `.` matching newlines.
pub fn cors_origin_regex(origin: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?s:{origin})$"))
}

/// Command-line flags (kingpin-compatible names).
#[derive(Debug, Clone)]
pub struct Flags {
    /// Absolute after [`load_settings`].
    pub config_file: Option<PathBuf>,
    pub config_file_expand_env_vars: bool,
    pub listen_addresses: Vec<String>,
    /// Absolute after [`load_settings`].
    pub web_config_file: Option<PathBuf>,
    /// Normalised: starts with `/`, no trailing `/` (empty for the root).
    pub route_prefix: String,
    /// Requests per minute per client; 0 = no limit.
    pub max_requests: u32,
    /// The regex as given; compile it with [`cors_origin_regex`] (checked at parse).
    pub cors_origin: String,
    pub compression: bool,
    /// 0…9 (the flag's −1 and −2 are mapped to 6 and 1).
    pub compression_level: u32,
    pub debug_server: bool,
    /// 0 = no limit.
    pub query_max_period: Duration,
    /// `debug`, `info`, `warn` or `error`.
    pub log_level: String,
    /// `logfmt` or `json`.
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
    /// `ceems_api_server.web`: where the load balancer reaches this server. Parsed and
    /// kept; the server itself takes its HTTP settings from the flags.
    pub web: WebClientConfig,
}

/// Default of `ceems_api_server.data.backups_to_keep`.
pub const DEFAULT_BACKUPS_TO_KEEP: usize = 7;

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
    /// How many `ceems-*.db` backups to keep in `backup_path` (the newest); 0 keeps all.
    pub backups_to_keep: usize,
    /// As written (`YYYY-MM-DD[THH:MM[:SS]]`), `None` for today. Checked at load.
    pub update_from: Option<String>,
    /// The loader's default is the server's zone (`Local`), as the reference's; this
    /// struct's `Default` uses UTC so tests do not depend on the machine.
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
            backups_to_keep: DEFAULT_BACKUPS_TO_KEEP,
            update_from: None,
            time_zone: Tz::UTC,
        }
    }
}

impl DataConfig {
    /// `update_from` as a wall clock (midnight for a bare date) to read in `time_zone`;
    /// `None` means midnight today.
    pub fn update_from_wall_clock(&self) -> Option<NaiveDateTime> {
        self.update_from
            .as_deref()
            .and_then(|text| parse_update_from(text).ok().flatten())
    }
}

/// `ceems_api_server.admin:`.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// As configured, without the built-in service account.
    pub users: Vec<String>,
    pub grafana: GrafanaConfig,
}

impl AdminConfig {
    /// The `ceems`-sourced admins: the configured users plus the load balancer's service
    /// account, which is always added (the reference adds it only when an `admin:`
    /// section exists).
    pub fn ceems_admin_users(&self) -> Vec<String> {
        let mut users = self.users.clone();
        if !users
            .iter()
            .any(|user| user == crate::model::SERVICE_ACCOUNT)
        {
            users.push(crate::model::SERVICE_ACCOUNT.to_owned());
        }
        users.retain(|user| !user.is_empty());
        users
    }
}

/// `ceems_api_server.admin.grafana:`: the Grafana teams whose members are admins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GrafanaConfig {
    /// `None`: the sync is off.
    pub url: Option<ClientUrl>,
    /// Team ids (YAML numbers read as their text). `Some` (even empty) when the key is
    /// given: the admin list is then replaced by the teams' members every update.
    pub teams_ids: Option<Vec<String>>,
    pub client: HttpClientConfig,
}

/// The resource managers a cluster may name; `demo` is the built-in synthetic one.
pub const RESOURCE_MANAGERS: [&str; 4] = ["slurm", "openstack", "k8s", "demo"];

/// The updater kinds an updater may name.
pub const UPDATER_KINDS: [&str; 1] = ["tsdb"];

/// One `clusters[]` entry.
#[derive(Clone, Default)]
pub struct ClusterConfig {
    pub id: String,
    /// One of [`RESOURCE_MANAGERS`].
    pub manager: String,
    /// Updater ids, run in this order; unknown ids are skipped at run time.
    pub updaters: Vec<String>,
    pub cli: CliConfig,
    pub web: WebClientConfig,
    /// Manager-specific settings (OpenStack endpoints and auth, k8s files), kept as YAML
    /// for the manager to read; `Null` when absent. Redacted in `Debug`: it holds
    /// credentials.
    pub extra_config: yaml_serde::Value,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let extra_config_keys: Vec<String> = match &self.extra_config {
            yaml_serde::Value::Mapping(mapping) => mapping
                .keys()
                .map(|key| match key {
                    yaml_serde::Value::String(text) => text.clone(),
                    _ => "<non-string key>".to_owned(),
                })
                .collect(),
            _ => Vec::new(),
        };
        formatter
            .debug_struct("ClusterConfig")
            .field("id", &self.id)
            .field("manager", &self.manager)
            .field("updaters", &self.updaters)
            .field("cli", &self.cli)
            .field("web", &self.web)
            .field("extra_config_keys", &extra_config_keys)
            .finish()
    }
}

/// `clusters[].cli:`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CliConfig {
    /// Directory of the manager's binaries; `None`: found on `PATH`. As written (relative
    /// paths resolve against the working directory when commands run).
    pub path: Option<PathBuf>,
    /// Added to the commands' environment; values may be credentials.
    pub environment_variables: BTreeMap<String, String>,
}

impl fmt::Debug for CliConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&String> = self.environment_variables.keys().collect();
        formatter
            .debug_struct("CliConfig")
            .field("path", &self.path)
            .field("environment_variable_names", &names)
            .finish()
    }
}

/// One `updaters[]` entry.
#[derive(Debug, Clone, Default)]
pub struct UpdaterConfig {
    pub id: String,
    /// One of [`UPDATER_KINDS`].
    pub updater: String,
    /// The TSDB; no URL means the updater does nothing.
    pub web: WebClientConfig,
    pub tsdb: TsdbUpdaterConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags_for(config_file: Option<PathBuf>) -> Flags {
        Flags {
            config_file,
            ..Flags::default()
        }
    }

    #[test]
    fn no_config_file_gives_every_default() {
        let settings = load_settings(Flags::default()).unwrap();
        let working_dir = std::env::current_dir().unwrap();
        assert_eq!(settings.config.server.data.path, working_dir.join("data"));
        assert_eq!(
            settings.config.server.data.update_interval,
            Duration::from_secs(900)
        );
        assert!(settings.config.clusters.is_empty());
        assert_eq!(settings.flags.listen_addresses, [":9020"]);
    }

    #[test]
    fn a_config_file_is_read_with_paths_against_its_directory_and_nothing_is_created() {
        let directory = tempfile::tempdir().unwrap();
        let data_path = directory.path().join("not-created");
        let config_path = directory.path().join("config.yml");
        std::fs::write(
            &config_path,
            format!(
                "ceems_api_server:\n  data:\n    path: {}\n    backup_path: {}/backups\nupdaters:\n  - id: tsdb-0\n    updater: tsdb\n    web:\n      url: http://localhost:9090\n      tls_config: {{ca_file: ca.pem}}\n",
                data_path.display(),
                directory.path().display()
            ),
        )
        .unwrap();
        let settings = load_settings(flags_for(Some(config_path.clone()))).unwrap();
        assert_eq!(settings.config.server.data.path, data_path);
        assert_eq!(
            settings.config.updaters[0].web.client.tls_config.ca_file,
            Some(directory.path().join("ca.pem"))
        );
        assert_eq!(settings.flags.config_file, Some(config_path));
        assert!(
            !data_path.exists(),
            "loading must not create the data directory"
        );
        assert!(!directory.path().join("backups").exists());
    }

    #[test]
    fn environment_variables_expand_only_when_asked() {
        let directory = tempfile::tempdir().unwrap();
        let config_path = directory.path().join("config.yml");
        std::fs::write(
            &config_path,
            "ceems_api_server:\n  admin:\n    users: [\"$$user${CEEMS_TEST_VARIABLE_THAT_IS_NEVER_SET}\"]\n",
        )
        .unwrap();
        let plain = load_settings(flags_for(Some(config_path.clone()))).unwrap();
        assert_eq!(
            plain.config.server.admin.users,
            ["$$user${CEEMS_TEST_VARIABLE_THAT_IS_NEVER_SET}"]
        );
        let expanded = load_settings(Flags {
            config_file_expand_env_vars: true,
            ..flags_for(Some(config_path))
        })
        .unwrap();
        assert_eq!(expanded.config.server.admin.users, ["$user"]);
    }

    #[test]
    fn unreadable_config_files_are_one_line_errors() {
        let directory = tempfile::tempdir().unwrap();
        let missing = directory.path().join("missing.yml");
        let error = load_settings(flags_for(Some(missing.clone()))).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("config: failed to read {}: ", missing.display())),
            "{message}"
        );
        assert!(!message.contains('\n'));
        let error = load_settings(flags_for(Some(directory.path().to_path_buf()))).unwrap_err();
        assert!(matches!(error, ConfigError::Read { .. }), "{error}");
    }

    #[test]
    fn disable_checks_reaches_the_file_checks() {
        let directory = tempfile::tempdir().unwrap();
        let config_path = directory.path().join("config.yml");
        std::fs::write(
            &config_path,
            "ceems_api_server:\n  data:\n    backup_interval: 10s\n",
        )
        .unwrap();
        assert!(load_settings(flags_for(Some(config_path.clone()))).is_err());
        let settings = load_settings(Flags {
            disable_checks: true,
            ..flags_for(Some(config_path))
        })
        .unwrap();
        assert_eq!(
            settings.config.server.data.backup_interval,
            Duration::from_secs(10)
        );
    }

    #[test]
    fn parse_config_uses_the_given_base_dir() {
        let config = parse_config(
            "updaters:\n  - id: t\n    updater: tsdb\n    web:\n      basic_auth: {username: u, password_file: pw}\n",
            Path::new("/etc/ceems"),
        )
        .unwrap();
        let auth = config.updaters[0].web.client.basic_auth.as_ref().unwrap();
        assert_eq!(auth.password_file, Some(PathBuf::from("/etc/ceems/pw")));
    }

    #[test]
    fn cors_origins_are_anchored() {
        let any = cors_origin_regex(".*").unwrap();
        assert!(any.is_match("https://reqbin.com"));
        assert!(any.is_match("line\nbreak"));
        let exact = cors_origin_regex("https://grafana\\.example\\.com").unwrap();
        assert!(exact.is_match("https://grafana.example.com"));
        assert!(!exact.is_match("https://grafana.example.com.evil.org"));
        assert!(!exact.is_match("evil-https://grafana.example.com"));
        let alternatives = cors_origin_regex("https://a\\.org|https://b\\.org").unwrap();
        assert!(alternatives.is_match("https://b.org"));
        assert!(!alternatives.is_match("https://a.org.evil"));
        assert!(cors_origin_regex("(").is_err());
    }

    #[test]
    fn the_service_account_is_always_an_admin_once() {
        let admin = AdminConfig::default();
        assert_eq!(admin.ceems_admin_users(), [crate::model::SERVICE_ACCOUNT]);
        let admin = AdminConfig {
            users: vec![crate::model::SERVICE_ACCOUNT.to_owned(), "alice".to_owned()],
            ..AdminConfig::default()
        };
        assert_eq!(
            admin.ceems_admin_users(),
            [crate::model::SERVICE_ACCOUNT, "alice"]
        );
    }
}
