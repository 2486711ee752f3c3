//! The config file: environment expansion, the YAML tree read into [`Config`] with its
//! defaults, and every check of the `ceems_api_server`, `clusters` and `updaters` keys.
//! Unknown keys are ignored, as the reference does.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use yaml_serde::Value;

use super::client::parse_web_client_config;
use super::node::{optional_field, KeyPath, Node};
use super::tsdb::parse_tsdb_updater_config;
use super::{
    AdminConfig, CliConfig, ClusterConfig, Config, ConfigError, DataConfig, GrafanaConfig,
    ServerConfig, UpdaterConfig, RESOURCE_MANAGERS, UPDATER_KINDS,
};
use crate::model::time::parse_time_zone;

/// Stands in for an absent section, so defaults come from one code path.
static ABSENT: Value = Value::Null;

const DAY: Duration = Duration::from_secs(86_400);

pub(crate) struct LoadOptions<'a> {
    /// The config file's directory: HTTP-client files resolve against it.
    pub(crate) base_dir: &'a Path,
    /// Data paths resolve against it.
    pub(crate) working_dir: &'a Path,
    /// `--test.disable.checks`: relaxes the one-day minimum of `backup_interval`.
    pub(crate) disable_checks: bool,
}

/// Expands `$VAR` and `${VAR}` as Go's `os.Expand` does (unset → empty), with `$$` → `$`.
/// A `$` before anything that cannot start a name stays; `${}` and an unclosed `${` are
/// dropped, as in Go.
pub fn expand_env_vars(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut expanded = String::with_capacity(text.len());
    let mut copied_up_to = 0;
    let mut index = 0;
    let bytes = text.as_bytes();
    while index < bytes.len() {
        if bytes[index] != b'$' || index + 1 >= bytes.len() {
            index += 1;
            continue;
        }
        expanded.push_str(&text[copied_up_to..index]);
        let (name, width) = shell_name(&text[index + 1..]);
        match name {
            // Bad syntax (`${}`, unclosed `${`): Go drops it.
            "" if width > 0 => {}
            // `$` before something that is not a name: kept as it is.
            "" => expanded.push('$'),
            "$" => expanded.push('$'),
            _ => expanded.push_str(&lookup(name).unwrap_or_default()),
        }
        index += 1 + width;
        copied_up_to = index;
    }
    expanded.push_str(&text[copied_up_to..]);
    expanded
}

fn is_special_shell_variable(byte: u8) -> bool {
    matches!(byte, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || byte.is_ascii_digit()
}

/// The variable name after a `$` and how many bytes it spans.
fn shell_name(text: &str) -> (&str, usize) {
    let bytes = text.as_bytes();
    if bytes[0] == b'{' {
        if bytes.len() > 2 && is_special_shell_variable(bytes[1]) && bytes[2] == b'}' {
            return (&text[1..2], 3);
        }
        return match text.find('}') {
            Some(1) => ("", 2),
            Some(end) => (&text[1..end], end + 1),
            None => ("", 1),
        };
    }
    if is_special_shell_variable(bytes[0]) {
        return (&text[..1], 1);
    }
    let end = bytes
        .iter()
        .position(|byte| !(byte.is_ascii_alphanumeric() || *byte == b'_'))
        .unwrap_or(bytes.len());
    (&text[..end], end)
}

/// `path` against `base` when relative, `.` and `..` resolved lexically as Go's
/// `filepath.Abs` does.
pub(crate) fn absolute_path(base: &Path, path: &Path) -> PathBuf {
    let joined = base.join(path);
    let mut clean = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    clean
}

/// Reads `update_from`: `""` and `today` mean midnight today (`None`); otherwise
/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM` or `YYYY-MM-DDTHH:MM:SS`, with no zone.
pub fn parse_update_from(text: &str) -> Result<Option<NaiveDateTime>, String> {
    if text.is_empty() || text == "today" {
        return Ok(None);
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(time) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(Some(time));
        }
    }
    Err(format!(
        "invalid date {text:?}: expected YYYY-MM-DD, YYYY-MM-DDTHH:MM or YYYY-MM-DDTHH:MM:SS (no zone), or \"today\""
    ))
}

/// Parses and validates the whole file.
pub(crate) fn parse_config_with(
    text: &str,
    options: &LoadOptions<'_>,
) -> Result<Config, ConfigError> {
    let mut value: Value = yaml_serde::from_str(text)
        .map_err(|error| ConfigError::Yaml(error.to_string().replace('\n', " ")))?;
    // `<<: *anchor` merge keys, which Go's yaml.v3 resolves too.
    value
        .apply_merge()
        .map_err(|error| ConfigError::Yaml(error.to_string().replace('\n', " ")))?;
    if !matches!(value, Value::Null | Value::Mapping(_)) {
        return Err(ConfigError::Yaml(
            "the document must be a mapping with the keys ceems_api_server, clusters and updaters"
                .to_owned(),
        ));
    }
    let root_path = KeyPath::root();
    let root = Node::new(&value, &root_path);

    let server_path = root_path.key("ceems_api_server");
    let server = Node::new(
        root.get("ceems_api_server")?.unwrap_or(&ABSENT),
        &server_path,
    );
    let server = parse_server(&server, options)?;

    let clusters_path = root_path.key("clusters");
    let clusters = Node::new(root.get("clusters")?.unwrap_or(&ABSENT), &clusters_path);
    let clusters = parse_clusters(&clusters, options)?;

    let updaters_path = root_path.key("updaters");
    let updaters = Node::new(root.get("updaters")?.unwrap_or(&ABSENT), &updaters_path);
    let updaters = parse_updaters(&updaters, options)?;

    Ok(Config {
        server,
        clusters,
        updaters,
    })
}

/// Runs `read` on the child `key` of `parent`, an absent or null child reading as `null`.
fn child<T>(
    parent: &Node<'_>,
    key: &str,
    read: impl FnOnce(&Node<'_>) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    let path = parent.path().key(key);
    let value = parent.get(key)?.unwrap_or(&ABSENT);
    read(&Node::new(value, &path))
}

fn parse_server(node: &Node<'_>, options: &LoadOptions<'_>) -> Result<ServerConfig, ConfigError> {
    node.mapping()?;
    Ok(ServerConfig {
        data: child(node, "data", |data| parse_data(data, options))?,
        admin: child(node, "admin", |admin| parse_admin(admin, options))?,
        web: child(node, "web", |web| {
            parse_web_client_config(web, options.base_dir)
        })?,
    })
}

fn parse_data(node: &Node<'_>, options: &LoadOptions<'_>) -> Result<DataConfig, ConfigError> {
    node.mapping()?;
    let path = node.path();
    let defaults = DataConfig::default();
    let duration = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
        Ok(optional_field(node, key, |field| field.duration())?.unwrap_or(default))
    };
    let string = |key: &str| optional_field(node, key, |field| field.string());

    // Go's filepath.Abs("") is the working directory, so an explicit "" keeps meaning that.
    let data_path = string("path")?.unwrap_or_else(|| "data".to_owned());
    let backup_path = string("backup_path")?
        .filter(|text| !text.is_empty())
        .map(|text| absolute_path(options.working_dir, Path::new(&text)));

    let retention_period = duration("retention_period", defaults.retention_period)?;
    let update_interval = duration("update_interval", defaults.update_interval)?;
    if update_interval.is_zero() {
        return Err(path.key("update_interval").error("must be more than 0s"));
    }
    let max_update_interval = duration("max_update_interval", defaults.max_update_interval)?;
    if max_update_interval.is_zero() {
        return Err(path
            .key("max_update_interval")
            .error("must be more than 0s"));
    }
    let backup_interval = duration("backup_interval", defaults.backup_interval)?;
    if backup_path.is_some() && backup_interval.is_zero() {
        return Err(path
            .key("backup_interval")
            .error("must be more than 0s when backup_path is set"));
    }
    if !backup_interval.is_zero() && backup_interval < DAY && !options.disable_checks {
        return Err(path
            .key("backup_interval")
            .error("must be 0 or at least 1d (intervals under a day are not supported)"));
    }

    let backups_to_keep = match optional_field(node, "backups_to_keep", |field| field.integer())? {
        None => defaults.backups_to_keep,
        Some(count) => usize::try_from(count)
            .map_err(|_| path.key("backups_to_keep").error("must be 0 or more"))?,
    };

    let update_from = string("update_from")?;
    if let Some(text) = &update_from {
        parse_update_from(text).map_err(|message| path.key("update_from").error(message))?;
    }
    let update_from = update_from.filter(|text| !text.is_empty() && text != "today");

    // The reference's default is `Local`, the server's own zone.
    let time_zone_name = string("time_zone")?.unwrap_or_else(|| "Local".to_owned());
    let time_zone =
        parse_time_zone(&time_zone_name).map_err(|message| path.key("time_zone").error(message))?;

    Ok(DataConfig {
        path: absolute_path(options.working_dir, Path::new(&data_path)),
        backup_path,
        retention_period,
        update_interval,
        max_update_interval,
        backup_interval,
        backups_to_keep,
        update_from,
        time_zone,
    })
}

fn parse_admin(node: &Node<'_>, options: &LoadOptions<'_>) -> Result<AdminConfig, ConfigError> {
    node.mapping()?;
    Ok(AdminConfig {
        users: optional_field(node, "users", |users| users.string_list())?.unwrap_or_default(),
        grafana: child(node, "grafana", |grafana| {
            let web = parse_web_client_config(grafana, options.base_dir)?;
            Ok(GrafanaConfig {
                url: web.url,
                teams_ids: optional_field(grafana, "teams_ids", |ids| ids.string_list())?,
                client: web.client,
            })
        })?,
    })
}

/// `[a-zA-Z0-9_-]*`: ids appear in URLs, file names and SQL values.
fn check_id(path: &KeyPath, id: &str, seen: &mut HashSet<String>) -> Result<(), ConfigError> {
    if !id
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
    {
        return Err(path.error(format!(
            "invalid ID {id:?}: only the characters [a-zA-Z0-9_-] are allowed"
        )));
    }
    if !seen.insert(id.to_owned()) {
        return Err(path.error(format!("duplicate ID {id:?}")));
    }
    Ok(())
}

/// A required field whose value must be one of `allowed`.
fn one_of(node: &Node<'_>, key: &str, allowed: &[&str], what: &str) -> Result<String, ConfigError> {
    let path = node.path().key(key);
    let expected = allowed.join(", ");
    let value = optional_field(node, key, |field| field.string())?
        .ok_or_else(|| path.error(format!("must be set to one of {expected}")))?;
    if !allowed.contains(&value.as_str()) {
        return Err(path.error(format!(
            "unknown {what} {value:?} (expected one of {expected})"
        )));
    }
    Ok(value)
}

fn parse_clusters(
    node: &Node<'_>,
    options: &LoadOptions<'_>,
) -> Result<Vec<ClusterConfig>, ConfigError> {
    let mut seen = HashSet::new();
    let mut clusters = Vec::new();
    for (index, value) in node.sequence()?.iter().enumerate() {
        let path = node.path().index(index);
        let cluster = Node::new(value, &path);
        if cluster.mapping()?.is_none() {
            return Err(path.error("expected a mapping, found null"));
        }
        let id = optional_field(&cluster, "id", |id| id.string())?.unwrap_or_default();
        check_id(&path.key("id"), &id, &mut seen)?;
        let manager = one_of(&cluster, "manager", &RESOURCE_MANAGERS, "resource manager")?;
        let cli = child(&cluster, "cli", |cli| {
            cli.mapping()?;
            Ok(CliConfig {
                path: optional_field(cli, "path", |path| path.string())?
                    .filter(|text| !text.is_empty())
                    .map(PathBuf::from),
                environment_variables: optional_field(cli, "environment_variables", |vars| {
                    vars.string_map()
                })?
                .unwrap_or_default(),
            })
        })?;
        clusters.push(ClusterConfig {
            id,
            manager,
            updaters: optional_field(&cluster, "updaters", |ids| ids.string_list())?
                .unwrap_or_default(),
            cli,
            web: child(&cluster, "web", |web| {
                parse_web_client_config(web, options.base_dir)
            })?,
            extra_config: cluster.get("extra_config")?.cloned().unwrap_or_default(),
        });
    }
    Ok(clusters)
}

fn parse_updaters(
    node: &Node<'_>,
    options: &LoadOptions<'_>,
) -> Result<Vec<UpdaterConfig>, ConfigError> {
    let mut seen = HashSet::new();
    let mut updaters = Vec::new();
    for (index, value) in node.sequence()?.iter().enumerate() {
        let path = node.path().index(index);
        let updater = Node::new(value, &path);
        if updater.mapping()?.is_none() {
            return Err(path.error("expected a mapping, found null"));
        }
        let id = optional_field(&updater, "id", |id| id.string())?.unwrap_or_default();
        check_id(&path.key("id"), &id, &mut seen)?;
        let kind = one_of(&updater, "updater", &UPDATER_KINDS, "updater")?;
        updaters.push(UpdaterConfig {
            id,
            updater: kind,
            web: child(&updater, "web", |web| {
                parse_web_client_config(web, options.base_dir)
            })?,
            tsdb: child(&updater, "extra_config", parse_tsdb_updater_config)?,
        });
    }
    Ok(updaters)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono_tz::Tz;

    use super::*;
    use crate::config::TlsVersion;

    const WORKING_DIR: &str = "/srv/ceems";
    const CONFIG_DIR: &str = "/etc/ceems";

    fn parse_checked(text: &str, disable_checks: bool) -> Result<Config, ConfigError> {
        parse_config_with(
            text,
            &LoadOptions {
                base_dir: Path::new(CONFIG_DIR),
                working_dir: Path::new(WORKING_DIR),
                disable_checks,
            },
        )
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_checked(text, false)
    }

    fn error_of(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("expected an error for {text:?}, got {config:?}"),
            Err(error) => error.to_string(),
        }
    }

    fn assert_defaults(config: &Config) {
        let data = &config.server.data;
        assert_eq!(data.path, PathBuf::from("/srv/ceems/data"));
        assert_eq!(data.backup_path, None);
        assert_eq!(data.retention_period, Duration::from_secs(30 * 86_400));
        assert_eq!(data.update_interval, Duration::from_secs(900));
        assert_eq!(data.max_update_interval, Duration::from_secs(3_600));
        assert_eq!(data.backup_interval, Duration::from_secs(86_400));
        assert_eq!(data.backups_to_keep, 7);
        assert_eq!(data.update_from, None);
        assert_eq!(data.time_zone, crate::model::time::local_time_zone());
        assert!(config.server.admin.users.is_empty());
        assert_eq!(config.server.admin.grafana, GrafanaConfig::default());
        assert_eq!(config.server.web, crate::config::WebClientConfig::default());
        assert!(config.clusters.is_empty());
        assert!(config.updaters.is_empty());
    }

    #[test]
    fn defaults_apply_with_or_without_sections() {
        for text in [
            "",
            "# only a comment\n",
            "---\n",
            "ceems_api_server:\n",
            "ceems_api_server: {}\n",
            "ceems_api_server:\n  data:\n  admin:\n",
            "ceems_api_server:\n  data: {}\n  admin: {}\n",
            "clusters: []\nupdaters: []\n",
            "clusters:\nupdaters:\n",
            "unknown_top_level: 1\nceems_api_server: {unknown: {deep: [1]}, data: {unknown: x}}\n",
        ] {
            let config = parse(text).unwrap_or_else(|error| panic!("{text:?}: {error}"));
            assert_defaults(&config);
        }
    }

    #[test]
    fn data_keys_parse() {
        let config = parse(
            r#"
ceems_api_server:
  data:
    path: ./var/../db
    backup_path: /backups/ceems
    retention_period: 1y
    update_interval: 5m
    max_update_interval: 24h
    backup_interval: 1w
    backups_to_keep: 30
    update_from: 2024-09-08T06:30
    time_zone: Europe/Paris
  admin:
    users: [alice, bob]
"#,
        )
        .unwrap();
        let data = &config.server.data;
        assert_eq!(data.path, PathBuf::from("/srv/ceems/db"));
        assert_eq!(data.backup_path, Some(PathBuf::from("/backups/ceems")));
        assert_eq!(data.retention_period, Duration::from_secs(365 * 86_400));
        assert_eq!(data.update_interval, Duration::from_secs(300));
        assert_eq!(data.max_update_interval, Duration::from_secs(86_400));
        assert_eq!(data.backup_interval, Duration::from_secs(7 * 86_400));
        assert_eq!(data.backups_to_keep, 30);
        assert_eq!(data.update_from.as_deref(), Some("2024-09-08T06:30"));
        assert_eq!(
            data.update_from_wall_clock(),
            NaiveDate::from_ymd_opt(2024, 9, 8).and_then(|date| date.and_hms_opt(6, 30, 0))
        );
        assert_eq!(data.time_zone, Tz::Europe__Paris);
        assert_eq!(config.server.admin.users, ["alice", "bob"]);
        assert_eq!(
            config.server.admin.ceems_admin_users(),
            ["alice", "bob", crate::model::SERVICE_ACCOUNT]
        );
    }

    #[test]
    fn data_special_values() {
        let data = |body: &str| {
            parse(&format!("ceems_api_server:\n  data:\n{body}"))
                .unwrap()
                .server
                .data
        };
        assert_eq!(data("    path: ''\n").path, PathBuf::from(WORKING_DIR));
        assert_eq!(
            data("    path: /var/lib/ceems\n").path,
            PathBuf::from("/var/lib/ceems")
        );
        assert_eq!(data("    backup_path: ''\n").backup_path, None);
        assert_eq!(
            data("    backup_path: backups\n").backup_path,
            Some(PathBuf::from("/srv/ceems/backups"))
        );
        assert_eq!(data("    update_from: ''\n").update_from, None);
        assert_eq!(data("    update_from: today\n").update_from, None);
        assert_eq!(
            data("    update_from: 2025-01-01\n").update_from_wall_clock(),
            NaiveDate::from_ymd_opt(2025, 1, 1).and_then(|date| date.and_hms_opt(0, 0, 0))
        );
        assert!(data("    update_from: 2025-01-01T10:11:12\n")
            .update_from_wall_clock()
            .is_some());
        assert_eq!(data("    time_zone: ''\n").time_zone, Tz::UTC);
        assert_eq!(data("    time_zone: UTC\n").time_zone, Tz::UTC);
        assert_eq!(
            data("    time_zone: Local\n").time_zone,
            crate::model::time::local_time_zone()
        );
        assert_eq!(
            data("    backup_interval: 0\n").backup_interval,
            Duration::ZERO
        );
        assert_eq!(
            data("    retention_period: 0\n").retention_period,
            Duration::ZERO
        );
        assert_eq!(data("    backups_to_keep: 0\n").backups_to_keep, 0);
        assert_eq!(data("    backups_to_keep: 3.0\n").backups_to_keep, 3);
    }

    #[test]
    fn each_data_and_admin_key_has_its_error() {
        let data = |body: &str| error_of(&format!("ceems_api_server:\n  data:\n    {body}\n"));
        assert_eq!(
            data("update_interval: 0s"),
            "config: ceems_api_server.data.update_interval: must be more than 0s"
        );
        assert_eq!(
            data("max_update_interval: 0"),
            "config: ceems_api_server.data.max_update_interval: must be more than 0s"
        );
        assert_eq!(
            data("backup_interval: 12h"),
            "config: ceems_api_server.data.backup_interval: must be 0 or at least 1d (intervals under a day are not supported)"
        );
        assert_eq!(
            data("backup_interval: 0s\n    backup_path: /backups"),
            "config: ceems_api_server.data.backup_interval: must be more than 0s when backup_path is set"
        );
        assert_eq!(
            data("retention_period: 30 days"),
            "config: ceems_api_server.data.retention_period: unknown unit \" days\" in duration \"30 days\""
        );
        assert_eq!(
            data("backups_to_keep: -1"),
            "config: ceems_api_server.data.backups_to_keep: must be 0 or more"
        );
        assert_eq!(
            data("backups_to_keep: seven"),
            "config: ceems_api_server.data.backups_to_keep: expected an integer, found a string"
        );
        assert_eq!(
            data("update_interval: ''"),
            "config: ceems_api_server.data.update_interval: empty duration string"
        );
        assert_eq!(
            data("update_from: 2024-09-08T00:00:00Z"),
            "config: ceems_api_server.data.update_from: invalid date \"2024-09-08T00:00:00Z\": expected YYYY-MM-DD, YYYY-MM-DDTHH:MM or YYYY-MM-DDTHH:MM:SS (no zone), or \"today\""
        );
        assert_eq!(
            data("time_zone: Mars/Olympus"),
            "config: ceems_api_server.data.time_zone: unknown time zone \"Mars/Olympus\""
        );
        assert_eq!(
            data("path: [a]"),
            "config: ceems_api_server.data.path: expected a string, found a list"
        );
        assert_eq!(
            error_of("ceems_api_server:\n  data: 5\n"),
            "config: ceems_api_server.data: expected a mapping, found a number"
        );
        assert_eq!(
            error_of("ceems_api_server: [1]\n"),
            "config: ceems_api_server: expected a mapping, found a list"
        );
        assert_eq!(
            error_of("ceems_api_server:\n  admin:\n    users: admin\n"),
            "config: ceems_api_server.admin.users: expected a list, found a string"
        );
        assert_eq!(
            error_of("ceems_api_server:\n  admin:\n    grafana:\n      url: grafana:3000\n"),
            "config: ceems_api_server.admin.grafana.url: invalid URL \"grafana:3000\": a scheme such as http:// is required"
        );
        assert_eq!(
            error_of("ceems_api_server:\n  admin:\n    grafana:\n      teams_ids: 1\n"),
            "config: ceems_api_server.admin.grafana.teams_ids: expected a list, found a number"
        );
        assert_eq!(
            error_of("ceems_api_server:\n  admin:\n    grafana:\n      basic_auth: {username: a, password: b, password_file: c}\n"),
            "config: ceems_api_server.admin.grafana.basic_auth: at most one of password and password_file may be set"
        );
        assert_eq!(
            error_of("ceems_api_server:\n  web:\n    url: 'http://'\n"),
            "config: ceems_api_server.web.url: invalid URL \"http://\": empty string"
        );
    }

    #[test]
    fn disable_checks_relaxes_only_the_backup_minimum() {
        let text = "ceems_api_server:\n  data:\n    backup_interval: 10s\n    backup_path: /b\n";
        assert!(parse_checked(text, false).is_err());
        let config = parse_checked(text, true).unwrap();
        assert_eq!(config.server.data.backup_interval, Duration::from_secs(10));
        assert!(parse_checked(
            "ceems_api_server:\n  data:\n    update_interval: 0s\n",
            true
        )
        .is_err());
    }

    #[test]
    fn grafana_team_ids_read_numbers_as_text() {
        let config = parse(
            "ceems_api_server:\n  admin:\n    grafana:\n      url: http://grafana:3000\n      teams_ids: [1, '2', abc]\n",
        )
        .unwrap();
        let grafana = &config.server.admin.grafana;
        assert_eq!(
            grafana.url.as_ref().map(|url| url.as_str()),
            Some("http://grafana:3000")
        );
        assert_eq!(
            grafana.teams_ids.as_deref(),
            Some(&["1".to_owned(), "2".to_owned(), "abc".to_owned()][..])
        );
        let empty =
            parse("ceems_api_server:\n  admin:\n    grafana:\n      teams_ids: []\n").unwrap();
        assert_eq!(empty.server.admin.grafana.teams_ids, Some(Vec::new()));
        let absent = parse("ceems_api_server:\n  admin:\n    grafana: {}\n").unwrap();
        assert_eq!(absent.server.admin.grafana.teams_ids, None);
    }

    #[test]
    fn each_cluster_key_has_its_error() {
        let cases = [
            (
                "clusters:\n  - id: slurm-0\n    manager: slurm\n  - id: slurm-0\n    manager: slurm\n",
                "config: clusters[1].id: duplicate ID \"slurm-0\"",
            ),
            (
                "clusters:\n  - id: 'slurm 0'\n    manager: slurm\n",
                "config: clusters[0].id: invalid ID \"slurm 0\": only the characters [a-zA-Z0-9_-] are allowed",
            ),
            (
                "clusters:\n  - id: a.b\n    manager: slurm\n",
                "config: clusters[0].id: invalid ID \"a.b\": only the characters [a-zA-Z0-9_-] are allowed",
            ),
            (
                "clusters:\n  - id: lsf-0\n    manager: lsf\n",
                "config: clusters[0].manager: unknown resource manager \"lsf\" (expected one of slurm, openstack, k8s, demo)",
            ),
            (
                "clusters:\n  - id: x\n",
                "config: clusters[0].manager: must be set to one of slurm, openstack, k8s, demo",
            ),
            (
                "clusters:\n  - id: x\n    manager: slurm\n    updaters: tsdb-0\n",
                "config: clusters[0].updaters: expected a list, found a string",
            ),
            (
                "clusters:\n  - id: x\n    manager: slurm\n    cli: /usr/bin\n",
                "config: clusters[0].cli: expected a mapping, found a string",
            ),
            (
                "clusters:\n  - id: x\n    manager: slurm\n    cli:\n      path: [a]\n",
                "config: clusters[0].cli.path: expected a string, found a list",
            ),
            (
                "clusters:\n  - id: x\n    manager: slurm\n    cli:\n      environment_variables: [A=b]\n",
                "config: clusters[0].cli.environment_variables: expected a mapping, found a list",
            ),
            (
                "clusters:\n  - id: x\n    manager: slurm\n    cli:\n      environment_variables: {A: [b]}\n",
                "config: clusters[0].cli.environment_variables.A: expected a string, found a list",
            ),
            (
                "clusters:\n  - id: x\n    manager: openstack\n    web:\n      tls_config: {cert_file: c}\n",
                "config: clusters[0].web.tls_config: a client certificate needs a key (key or key_file)",
            ),
            ("clusters: {id: x}\n", "config: clusters: expected a list, found a mapping"),
            ("clusters:\n  - \n", "config: clusters[0]: expected a mapping, found null"),
            ("clusters:\n  - slurm\n", "config: clusters[0]: expected a mapping, found a string"),
        ];
        for (text, expected) in cases {
            assert_eq!(error_of(text), expected, "for {text:?}");
        }
    }

    #[test]
    fn each_updater_key_has_its_error() {
        let cases = [
            (
                "updaters:\n  - id: tsdb-0\n    updater: tsdb\n  - id: tsdb-0\n    updater: tsdb\n",
                "config: updaters[1].id: duplicate ID \"tsdb-0\"",
            ),
            (
                "updaters:\n  - id: tsdb/0\n    updater: tsdb\n",
                "config: updaters[0].id: invalid ID \"tsdb/0\": only the characters [a-zA-Z0-9_-] are allowed",
            ),
            (
                "updaters:\n  - id: t\n    updater: influx\n",
                "config: updaters[0].updater: unknown updater \"influx\" (expected one of tsdb)",
            ),
            (
                "updaters:\n  - id: t\n",
                "config: updaters[0].updater: must be set to one of tsdb",
            ),
            (
                "updaters:\n  - id: t\n    updater: tsdb\n    web:\n      url: localhost:9090\n",
                "config: updaters[0].web.url: invalid URL \"localhost:9090\": a scheme such as http:// is required",
            ),
            (
                "updaters:\n  - id: t\n    updater: tsdb\n    extra_config:\n      query_min_samples: 2\n",
                "config: updaters[0].extra_config.query_min_samples: must be in (0, 1], got 2",
            ),
            (
                "updaters:\n  - id: t\n    updater: tsdb\n    extra_config: [1]\n",
                "config: updaters[0].extra_config: expected a mapping, found a list",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(error_of(text), expected, "for {text:?}");
        }
    }

    #[test]
    fn cluster_and_updater_ids_are_separate_namespaces() {
        let config = parse(
            "clusters:\n  - id: same\n    manager: demo\n  - id: ''\n    manager: k8s\nupdaters:\n  - id: same\n    updater: tsdb\n",
        )
        .unwrap();
        assert_eq!(config.clusters[0].manager, "demo");
        assert_eq!(config.clusters[1].id, "");
        assert_eq!(config.updaters[0].id, "same");
        assert_eq!(config.updaters[0].web.url, None);
        assert_eq!(
            config.updaters[0].tsdb,
            crate::config::TsdbUpdaterConfig::default()
        );
    }

    #[test]
    fn yaml_errors_are_one_line() {
        let error = error_of("ceems_api_server:\n  data: {\n");
        assert!(error.starts_with("config: invalid YAML: "), "{error}");
        assert!(!error.contains('\n'), "{error}");
        let error = error_of("ceems_api_server:\n  data: 1\n  data: 2\n");
        assert!(error.starts_with("config: invalid YAML: "), "{error}");
        assert_eq!(
            error_of("- a\n- b\n"),
            "config: invalid YAML: the document must be a mapping with the keys ceems_api_server, clusters and updaters"
        );
    }

    #[test]
    fn merge_keys_and_anchors_work() {
        let config = parse(
            r#"
common_web: &prometheus
  url: http://prometheus:9090
  basic_auth: {username: ceems, password: secret}
updaters:
  - id: tsdb-0
    updater: tsdb
    web:
      <<: *prometheus
"#,
        )
        .unwrap();
        let web = &config.updaters[0].web;
        assert_eq!(
            web.url.as_ref().map(|url| url.as_str()),
            Some("http://prometheus:9090")
        );
        assert_eq!(
            web.client
                .basic_auth
                .as_ref()
                .map(|auth| auth.username.as_str()),
            Some("ceems")
        );
    }

    fn expand(text: &str) -> String {
        let environment: HashMap<&str, &str> = [
            ("HOME_DIR", "/home/ceems"),
            ("PASSWORD", "p@ss"),
            ("EMPTY", ""),
            ("1", "one"),
        ]
        .into_iter()
        .collect();
        expand_env_vars(text, |name| {
            environment.get(name).map(|value| (*value).to_owned())
        })
    }

    #[test]
    fn environment_variables_expand_as_go_does() {
        assert_eq!(expand("path: $HOME_DIR/data"), "path: /home/ceems/data");
        assert_eq!(expand("path: ${HOME_DIR}data"), "path: /home/ceemsdata");
        assert_eq!(expand("password: ${PASSWORD}"), "password: p@ss");
        assert_eq!(expand("a: $UNSET_VARIABLE|"), "a: |");
        assert_eq!(expand("a: ${UNSET_VARIABLE}"), "a: ");
        assert_eq!(expand("a: $EMPTY."), "a: .");
        assert_eq!(expand("cost: $$5"), "cost: $5");
        assert_eq!(expand("regex: a$"), "regex: a$");
        assert_eq!(expand("a: $ b"), "a: $ b");
        assert_eq!(expand("a: $1"), "a: one");
        assert_eq!(expand("a: ${}b"), "a: b");
        assert_eq!(expand("a: ${HOME_DIR"), "a: HOME_DIR");
        assert_eq!(expand("é: ${HOME_DIR}é"), "é: /home/ceemsé");
        assert_eq!(expand("no dollars"), "no dollars");
    }

    #[test]
    fn expanded_text_parses() {
        let text = expand("ceems_api_server:\n  data:\n    path: ${HOME_DIR}/data\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.server.data.path, PathBuf::from("/home/ceems/data"));
    }

    /// An operator's config for the reference, as documented (`build/config`,
    /// `pkg/api/testdata/config.yml`): it must load unchanged.
    const REFERENCE_CONFIG: &str = r#"
# CEEMS API server configuration
---
ceems_api_server:
  data:
    path: /var/lib/ceems
    retention_period: 30d
    update_interval: 15m
    update_from: '2024-09-08'
    max_update_interval: 24h
    time_zone: 'Europe/Paris'
    backup_path: /mnt/backups/ceems
    backup_interval: 1d
  admin:
    users:
      - grafana
      - __test_admin
    grafana:
      url: https://grafana.example.com:3000
      teams_ids:
        - 1
        - '42'
      basic_auth:
        username: ceems
        password: grafana-admin-password
      tls_config:
        ca_file: certs/grafana-ca.pem
        insecure_skip_verify: false
  web:
    url: http://localhost:9020
    requests_limit: 30
    basic_auth:
      username: ceems
      password_file: secrets/web-password

clusters:
  - id: slurm-0
    manager: slurm
    updaters:
      - tsdb-0
      - tsdb-1
    cli:
      path: /usr/bin
      environment_variables:
        SLURM_CONF: /etc/slurm/slurm.conf

  - id: os-0
    manager: openstack
    updaters:
      - tsdb-0
    web:
      http_headers:
        X-OpenStack-Nova-API-Version:
          values:
            - latest
    extra_config:
      api_service_endpoints:
        compute: https://nova.example.com:8774/v2.1
        identity: https://keystone.example.com:5000
      auth:
        identity:
          methods:
            - password
          password:
            user:
              name: admin
              password: openstack-admin-password
              domain:
                id: default

  - id: k8s-0
    manager: k8s
    updaters:
      - tsdb-1
    extra_config:
      kubeconfig_file: /etc/ceems/kubeconfig.yaml
      ns_users_list_file: /var/run/ceems/users.yaml
      gpu_resource_names:
        - nvidia.com/gpu
        - nvidia.com/mig-4g.20gb
      username_annotations:
        - ceems.io/created-by
      project_annotations:
        - ceems.io/project

updaters:
  - id: tsdb-0
    updater: tsdb
    web:
      url: http://prometheus.example.com:9090
      basic_auth:
        username: prometheus
        password_file: /etc/ceems/prometheus-password
    extra_config:
      query_max_series: 50
      query_min_samples: 0.5
      cutoff_duration: 5m
      delete_ignored: true
      labels_to_drop:
        - ceems_ipmi_dcmi_avg_watts
      queries:
        # Average CPU utilisation
        avg_cpu_usage:
          global: avg_over_time(avg by (uuid) (uuid:ceems_cpu_usage:ratio_irate{uuid=~"{{.UUIDs}}"} >= 0 < inf)[{{.Range}}:])
        total_cpu_energy_usage_kwh:
          total: sum_over_time(sum by (uuid) (uuid:ceems_host_power_watts:pue{uuid=~"{{.UUIDs}}"} >= 0 < inf)[{{.Range}}:{{.ScrapeInterval}}]) * {{.ScrapeIntervalMilli}} / 3.6e9
        total_cpu_emissions_gms:
          rte_total: |
            sum_over_time(sum by (uuid) (uuid:ceems_host_emissions_g_s:pue{uuid=~`{{.UUIDs}}`,provider="rte"} >= 0 < inf)[{{.Range}}:{{.ScrapeInterval}}]) * {{.ScrapeIntervalMilli}} / 1e3
          emaps_total: total_cpu_emissions_gms{uuid=~"{{.UUIDs}}",provider="emaps"}

  - id: tsdb-1
    updater: tsdb
    web:
      url: http://victoria.example.com:8428
      authorization:
        credentials_file: secrets/vm-token
      tls_config:
        min_version: TLS12
    extra_config:
      cutoff_duration: 0s
      queries:
        total_io_read_stats:
          bytes: total_io_read_stats_bytes{uuid=~"{{.UUIDs}}"}[{{.RateInterval}}]
          requests: total_io_read_stats_requests{uuid=~"{{.UUIDs}}"}
        total_ingress_stats:
          bytes: total_ingress_stats_bytes{uuid=~"{{.UUIDs}}"}
          packets: total_ingress_stats_packets{uuid=~"{{ .UUIDs }}"} offset {{.EvaluationInterval}}
"#;

    #[test]
    fn a_reference_config_loads_unchanged() {
        let config = parse(REFERENCE_CONFIG).unwrap_or_else(|error| panic!("{error}"));

        let data = &config.server.data;
        assert_eq!(data.path, PathBuf::from("/var/lib/ceems"));
        assert_eq!(data.backup_path, Some(PathBuf::from("/mnt/backups/ceems")));
        assert_eq!(data.max_update_interval, Duration::from_secs(86_400));
        assert_eq!(data.update_from.as_deref(), Some("2024-09-08"));
        assert_eq!(data.time_zone, Tz::Europe__Paris);

        let admin = &config.server.admin;
        assert_eq!(admin.users, ["grafana", "__test_admin"]);
        assert_eq!(
            admin.grafana.teams_ids,
            Some(vec!["1".to_owned(), "42".to_owned()])
        );
        let grafana_auth = admin.grafana.client.basic_auth.as_ref().unwrap();
        assert_eq!(grafana_auth.username, "ceems");
        assert_eq!(
            grafana_auth
                .password
                .as_ref()
                .map(|password| password.expose()),
            Some("grafana-admin-password")
        );
        assert_eq!(
            admin.grafana.client.tls_config.ca_file,
            Some(PathBuf::from("/etc/ceems/certs/grafana-ca.pem"))
        );
        assert_eq!(
            config
                .server
                .web
                .client
                .basic_auth
                .as_ref()
                .and_then(|auth| auth.password_file.clone()),
            Some(PathBuf::from("/etc/ceems/secrets/web-password"))
        );

        let ids: Vec<&str> = config
            .clusters
            .iter()
            .map(|cluster| cluster.id.as_str())
            .collect();
        assert_eq!(ids, ["slurm-0", "os-0", "k8s-0"]);
        let slurm = &config.clusters[0];
        assert_eq!(slurm.manager, "slurm");
        assert_eq!(slurm.updaters, ["tsdb-0", "tsdb-1"]);
        assert_eq!(slurm.cli.path, Some(PathBuf::from("/usr/bin")));
        assert_eq!(
            slurm.cli.environment_variables["SLURM_CONF"],
            "/etc/slurm/slurm.conf"
        );
        assert!(slurm.extra_config.is_null());
        let openstack = &config.clusters[1];
        assert_eq!(
            openstack.web.client.http_headers["X-OpenStack-Nova-API-Version"].values,
            ["latest"]
        );
        assert_eq!(
            openstack.extra_config["api_service_endpoints"]["compute"].as_str(),
            Some("https://nova.example.com:8774/v2.1")
        );
        let k8s = &config.clusters[2];
        assert_eq!(k8s.manager, "k8s");
        assert_eq!(
            k8s.extra_config["gpu_resource_names"][1].as_str(),
            Some("nvidia.com/mig-4g.20gb")
        );

        let tsdb_0 = &config.updaters[0];
        assert_eq!(tsdb_0.updater, "tsdb");
        assert_eq!(
            tsdb_0.web.url.as_ref().map(|url| url.as_str()),
            Some("http://prometheus.example.com:9090")
        );
        assert_eq!(tsdb_0.tsdb.cutoff_duration, Duration::from_secs(300));
        assert!(tsdb_0.tsdb.delete_ignored);
        assert_eq!(tsdb_0.tsdb.labels_to_drop, ["ceems_ipmi_dcmi_avg_watts"]);
        assert_eq!(tsdb_0.tsdb.queries.len(), 3);
        assert_eq!(tsdb_0.tsdb.queries["total_cpu_emissions_gms"].len(), 2);
        let tsdb_1 = &config.updaters[1];
        let authorization = tsdb_1.web.client.authorization.as_ref().unwrap();
        assert_eq!(authorization.kind, "Bearer");
        assert_eq!(
            authorization.credentials_file,
            Some(PathBuf::from("/etc/ceems/secrets/vm-token"))
        );
        assert_eq!(
            tsdb_1.web.client.tls_config.min_version,
            Some(TlsVersion::Tls12)
        );
        assert_eq!(tsdb_1.tsdb.queries["total_ingress_stats"].len(), 2);
        assert_eq!(tsdb_1.tsdb.query_max_series, 50);
    }

    #[test]
    fn debug_of_a_loaded_config_hides_its_secrets() {
        let config = parse(REFERENCE_CONFIG).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("grafana-admin-password"), "{debug}");
        assert!(!debug.contains("openstack-admin-password"), "{debug}");
        assert!(debug.contains("slurm-0"));
        assert!(
            debug.contains("api_service_endpoints"),
            "extra_config keys stay visible"
        );
        let cli = parse(
            "clusters:\n  - id: x\n    manager: slurm\n    cli:\n      environment_variables: {OS_PASSWORD: env-secret}\n",
        )
        .unwrap();
        let debug = format!("{cli:?}");
        assert!(!debug.contains("env-secret"), "{debug}");
        assert!(debug.contains("OS_PASSWORD"));
    }

    #[test]
    fn the_shipped_config_yml_loads() {
        let text = include_str!("../../config.yml");
        let config = parse(text).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.server.data.path, PathBuf::from("/srv/ceems/data"));
        assert_eq!(config.server.data.time_zone, Tz::UTC);
        assert_eq!(config.server.admin.users, ["admin"]);
        assert_eq!(config.clusters.len(), 1);
        assert_eq!(config.clusters[0].id, "demo");
        assert_eq!(config.clusters[0].manager, "demo");
        assert!(config.clusters[0].updaters.is_empty());
        assert!(config.updaters.is_empty());
    }

    #[test]
    fn paths_are_cleaned_lexically() {
        assert_eq!(
            absolute_path(Path::new("/a/b"), Path::new("./c/../d")),
            PathBuf::from("/a/b/d")
        );
        assert_eq!(
            absolute_path(Path::new("/a"), Path::new("/x/./y")),
            PathBuf::from("/x/y")
        );
        assert_eq!(
            absolute_path(Path::new("/a"), Path::new("")),
            PathBuf::from("/a")
        );
    }
}
