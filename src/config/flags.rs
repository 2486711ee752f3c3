//! The command-line flags, with the reference's kingpin syntax: `--flag=value` or
//! `--flag value`, `--no-<flag>` for every boolean, repeatable flags whose first use replaces
//! the default list, `-h`/`--help`, `--version`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::error::ErrorKind;
use clap::{Arg, ArgAction, ArgMatches, ColorChoice, Command};

use super::duration::parse_prometheus_duration;
use super::Flags;

/// Why the flags did not produce [`Flags`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagsError {
    /// `-h`/`--help` or `--version` was given: print `text` to stdout and exit 0.
    #[error("{text}")]
    Display { text: String },
    /// A bad flag or value: print to stderr and exit 1.
    #[error("failed to parse CLI flags: {message}")]
    Invalid { message: String },
}

const CONFIG_FILE_ENV: &str = "CEEMS_API_SERVER_CONFIG_FILE";
const WEB_CONFIG_FILE_ENV: &str = "CEEMS_API_SERVER_WEB_CONFIG_FILE";

/// Parses the process arguments (the first item is the program name), reading the two
/// documented environment variables for flags that are not given.
pub fn parse_flags<I, T>(args: I) -> Result<Flags, FlagsError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    parse_flags_with_env(args, |name| std::env::var(name).ok())
}

/// [`parse_flags`] with the environment given as a lookup, so tests do not share the
/// process environment.
pub fn parse_flags_with_env<I, T>(
    args: I,
    environment: impl Fn(&str) -> Option<String>,
) -> Result<Flags, FlagsError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(args).map_err(|error| {
        let text = error.render().to_string();
        match error.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => FlagsError::Display { text },
            _ => FlagsError::Invalid {
                message: text
                    .trim()
                    .strip_prefix("error: ")
                    .unwrap_or(text.trim())
                    .to_owned(),
            },
        }
    })?;
    // kingpin reads an environment variable only when it is set and not empty.
    let from_environment = |name: &str| environment(name).filter(|value| !value.is_empty());
    let path_flag = |id: &str, env_name: &str| -> Option<PathBuf> {
        matches
            .get_one::<String>(id)
            .cloned()
            .or_else(|| from_environment(env_name))
            .filter(|text| !text.is_empty())
            .map(PathBuf::from)
    };
    let strings = |id: &str| -> Vec<String> {
        matches
            .get_many::<String>(id)
            .map(|values| values.cloned().collect())
            .unwrap_or_default()
    };
    let one = |id: &str| -> String { matches.get_one::<String>(id).cloned().unwrap_or_default() };

    Ok(Flags {
        config_file: path_flag("config.file", CONFIG_FILE_ENV),
        config_file_expand_env_vars: boolean(&matches, "config.file.expand-env-vars"),
        listen_addresses: strings("web.listen-address"),
        web_config_file: path_flag("web.config.file", WEB_CONFIG_FILE_ENV),
        route_prefix: one("web.route-prefix"),
        max_requests: matches
            .get_one::<u32>("web.max-requests")
            .copied()
            .unwrap_or(0),
        cors_origin: one("web.cors.origin"),
        compression: boolean(&matches, "web.compression"),
        compression_level: matches
            .get_one::<u32>("web.compression.level")
            .copied()
            .unwrap_or(5),
        debug_server: boolean(&matches, "web.debug-server"),
        query_max_period: matches
            .get_one::<std::time::Duration>("query.max-period")
            .copied()
            .unwrap_or_default(),
        log_level: one("log.level"),
        log_format: one("log.format"),
        external_url: matches
            .get_one::<String>("web.external-url")
            .filter(|url| !url.is_empty())
            .cloned(),
        user_header_names: strings("web.user-header-name"),
        skip_delete_old_units: boolean(&matches, "storage.data.skip.delete.old.units"),
        disable_checks: boolean(&matches, "test.disable.checks"),
    })
}

/// The value of a boolean flag after `--flag`, `--flag=false` and `--no-flag`, the last one
/// given winning.
fn boolean(matches: &ArgMatches, id: &str) -> bool {
    if matches.get_flag(&format!("no-{id}")) {
        return false;
    }
    matches.get_one::<bool>(id).copied().unwrap_or(false)
}

fn parse_boolean(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("expected true or false, got {text:?}")),
    }
}

/// Adds `--<name>[=BOOL]` and its hidden `--no-<name>`.
fn boolean_flag(command: Command, flag: BooleanFlag) -> Command {
    command
        .arg(
            Arg::new(flag.name)
                .long(flag.name)
                .help(flag.help)
                .hide(flag.help.is_empty())
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
                .default_value(if flag.default { "true" } else { "false" })
                .value_name("BOOL")
                .value_parser(parse_boolean)
                .overrides_with(flag.negated),
        )
        .arg(
            Arg::new(flag.negated)
                .long(flag.negated)
                .hide(true)
                .action(ArgAction::SetTrue)
                .overrides_with(flag.name),
        )
}

/// `/`, `/ceems/` and `ceems` become ``, `/ceems` and `/ceems`.
pub(crate) fn normalise_route_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

/// Levels −2…9 as Go's compress/flate reads them: −1 is the default (6), −2 Huffman-only,
/// which we serve at level 1, the closest fast setting.
fn parse_compression_level(text: &str) -> Result<u32, String> {
    let level: i64 = text
        .parse()
        .map_err(|_| format!("expected an integer, got {text:?}"))?;
    match level {
        -2 => Ok(1),
        -1 => Ok(6),
        0..=9 => Ok(level as u32),
        _ => Err(format!("must be between -2 and 9, got {level}")),
    }
}

/// kingpin reads an int; anything ≤ 0 turns the limiter off, so it reads as 0 here.
fn parse_max_requests(text: &str) -> Result<u32, String> {
    let requests: i64 = text
        .parse()
        .map_err(|_| format!("expected an integer, got {text:?}"))?;
    Ok(u32::try_from(requests.max(0)).unwrap_or(u32::MAX))
}

fn parse_cors_origin(text: &str) -> Result<String, String> {
    super::cors_origin_regex(text)
        .map(|_| text.to_owned())
        .map_err(|error| format!("failed to compile option for --web.cors.origin: {error}"))
}

fn parse_query_max_period(text: &str) -> Result<std::time::Duration, String> {
    parse_prometheus_duration(text)
        .map_err(|error| format!("failed to parse option for --query.max-period: {error}"))
}

fn parse_route_prefix(text: &str) -> Result<String, String> {
    Ok(normalise_route_prefix(text))
}

/// The flag table.
pub fn command() -> Command {
    let command = Command::new("ceems_api_server")
        .version(env!("CARGO_PKG_VERSION"))
        .about("API server for reporting usage statistics for batchjobs/VMs/Pods.")
        .color(ColorChoice::Never)
        .after_help("Every boolean flag also has a --no-<flag> form.")
        .arg(
            Arg::new("config.file")
                .long("config.file")
                .value_name("FILE")
                .help(format!(
                    "Configuration file path [env: {CONFIG_FILE_ENV}]"
                )),
        )
        .arg(
            Arg::new("web.listen-address")
                .long("web.listen-address")
                .value_name("ADDRESS")
                .action(ArgAction::Append)
                .default_value(":9020")
                .help("Address to listen on (repeatable)"),
        )
        .arg(
            Arg::new("web.config.file")
                .long("web.config.file")
                .value_name("FILE")
                .help(format!(
                    "Web config file enabling TLS or basic authentication [env: {WEB_CONFIG_FILE_ENV}]"
                )),
        )
        .arg(
            Arg::new("web.route-prefix")
                .long("web.route-prefix")
                .value_name("PREFIX")
                .default_value("/")
                .value_parser(parse_route_prefix)
                .help("Prefix of the API routes (before /api/v1)"),
        )
        .arg(
            Arg::new("web.max-requests")
                .long("web.max-requests")
                .value_name("N")
                .default_value("0")
                .allow_negative_numbers(true)
                .value_parser(parse_max_requests)
                .help("Maximum requests per minute per client; 0 disables the limit"),
        )
        .arg(
            Arg::new("web.cors.origin")
                .long("web.cors.origin")
                .value_name("REGEX")
                .default_value(".*")
                .value_parser(parse_cors_origin)
                .help("Regex of the CORS origins allowed (anchored)"),
        )
        .arg(
            Arg::new("web.compression.level")
                .long("web.compression.level")
                .value_name("LEVEL")
                .default_value("5")
                .allow_negative_numbers(true)
                .value_parser(parse_compression_level)
                .help("Compression level, -2 to 9"),
        )
        .arg(
            Arg::new("query.max-period")
                .long("query.max-period")
                .value_name("DURATION")
                .default_value("0s")
                .value_parser(parse_query_max_period)
                .help("Longest query window allowed (Prometheus duration); 0s means no limit"),
        )
        .arg(
            Arg::new("log.level")
                .long("log.level")
                .value_name("LEVEL")
                .default_value("info")
                .value_parser(PossibleValuesParser::new(["debug", "info", "warn", "error"]))
                .help("Only log messages with the given severity or above"),
        )
        .arg(
            Arg::new("log.format")
                .long("log.format")
                .value_name("FORMAT")
                .default_value("logfmt")
                .value_parser(PossibleValuesParser::new(["logfmt", "json"]))
                .help("Output format of log messages"),
        )
        .arg(
            Arg::new("web.external-url")
                .long("web.external-url")
                .value_name("URL")
                .hide(true),
        )
        .arg(
            Arg::new("web.user-header-name")
                .long("web.user-header-name")
                .value_name("NAME")
                .action(ArgAction::Append)
                .default_value("X-Grafana-User")
                .hide(true),
        )
        // Accepted and ignored so that unit files written for the reference keep working:
        // privileges and the Go runtime are managed outside this process.
        .arg(
            Arg::new("security.run-as-user")
                .long("security.run-as-user")
                .value_name("USER")
                .help("Accepted for compatibility; ignored"),
        )
        .arg(
            Arg::new("runtime.gomaxprocs")
                .long("runtime.gomaxprocs")
                .value_name("N")
                .allow_negative_numbers(true)
                .help("Accepted for compatibility; ignored"),
        );
    BOOLEAN_FLAGS.into_iter().fold(command, boolean_flag)
}

/// A boolean flag: its name, the name of its negation, help (empty when hidden) and
/// default.
struct BooleanFlag {
    name: &'static str,
    negated: &'static str,
    help: &'static str,
    default: bool,
}

const BOOLEAN_FLAGS: [BooleanFlag; 8] = [
    BooleanFlag {
        name: "config.file.expand-env-vars",
        negated: "no-config.file.expand-env-vars",
        help: "Expand ${VAR} and $VAR in the configuration file",
        default: false,
    },
    BooleanFlag {
        name: "web.compression",
        negated: "no-web.compression",
        help: "Compress responses (gzip or deflate)",
        default: false,
    },
    BooleanFlag {
        name: "web.debug-server",
        negated: "no-web.debug-server",
        help: "Serve the debug routes under /debug/",
        default: false,
    },
    BooleanFlag {
        name: "web.systemd-socket",
        negated: "no-web.systemd-socket",
        help: "Accepted for compatibility; ignored",
        default: false,
    },
    BooleanFlag {
        name: "storage.data.skip.delete.old.units",
        negated: "no-storage.data.skip.delete.old.units",
        help: "",
        default: false,
    },
    BooleanFlag {
        name: "test.disable.checks",
        negated: "no-test.disable.checks",
        help: "",
        default: false,
    },
    BooleanFlag {
        name: "security.disable-cap-awareness",
        negated: "no-security.disable-cap-awareness",
        help: "",
        default: false,
    },
    BooleanFlag {
        name: "security.drop-privileges",
        negated: "no-security.drop-privileges",
        help: "",
        default: true,
    },
];

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;

    fn parse_with_env(args: &[&str], environment: &[(&str, &str)]) -> Result<Flags, FlagsError> {
        let environment: HashMap<String, String> = environment
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        let mut all = vec!["ceems_api_server"];
        all.extend_from_slice(args);
        parse_flags_with_env(all, |name| environment.get(name).cloned())
    }

    fn parse(args: &[&str]) -> Result<Flags, FlagsError> {
        parse_with_env(args, &[])
    }

    fn invalid(args: &[&str]) -> String {
        match parse(args) {
            Err(FlagsError::Invalid { message }) => message,
            other => panic!("expected an invalid-flag error for {args:?}, got {other:?}"),
        }
    }

    #[test]
    fn no_flags_give_the_defaults() {
        let flags = parse(&[]).unwrap();
        let defaults = Flags::default();
        assert_eq!(flags.config_file, None);
        assert!(!flags.config_file_expand_env_vars);
        assert_eq!(flags.listen_addresses, [":9020"]);
        assert_eq!(flags.web_config_file, None);
        assert_eq!(flags.route_prefix, "");
        assert_eq!(flags.max_requests, 0);
        assert_eq!(flags.cors_origin, ".*");
        assert!(!flags.compression);
        assert_eq!(flags.compression_level, 5);
        assert!(!flags.debug_server);
        assert_eq!(flags.query_max_period, Duration::ZERO);
        assert_eq!(flags.log_level, "info");
        assert_eq!(flags.log_format, "logfmt");
        assert_eq!(flags.external_url, None);
        assert_eq!(flags.user_header_names, ["X-Grafana-User"]);
        assert!(!flags.skip_delete_old_units);
        assert!(!flags.disable_checks);
        assert_eq!(format!("{flags:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn every_flag_takes_a_value_with_equals_or_space() {
        let flags = parse(&[
            "--config.file=/etc/ceems/config.yml",
            "--config.file.expand-env-vars",
            "--web.listen-address",
            "127.0.0.1:9020",
            "--web.config.file=/etc/ceems/web.yml",
            "--web.route-prefix",
            "/ceems/",
            "--web.max-requests=30",
            "--web.cors.origin",
            "https://.*\\.example\\.com",
            "--web.compression",
            "--web.compression.level",
            "9",
            "--web.debug-server",
            "--query.max-period=2w",
            "--log.level=debug",
            "--log.format",
            "json",
            "--web.external-url=https://ceems.example.com/",
            "--web.user-header-name=X-Remote-User",
            "--storage.data.skip.delete.old.units",
            "--test.disable.checks",
        ])
        .unwrap();
        assert_eq!(
            flags.config_file,
            Some(PathBuf::from("/etc/ceems/config.yml"))
        );
        assert!(flags.config_file_expand_env_vars);
        assert_eq!(flags.listen_addresses, ["127.0.0.1:9020"]);
        assert_eq!(
            flags.web_config_file,
            Some(PathBuf::from("/etc/ceems/web.yml"))
        );
        assert_eq!(flags.route_prefix, "/ceems");
        assert_eq!(flags.max_requests, 30);
        assert_eq!(flags.cors_origin, "https://.*\\.example\\.com");
        assert!(flags.compression);
        assert_eq!(flags.compression_level, 9);
        assert!(flags.debug_server);
        assert_eq!(flags.query_max_period, Duration::from_secs(14 * 86_400));
        assert_eq!(flags.log_level, "debug");
        assert_eq!(flags.log_format, "json");
        assert_eq!(
            flags.external_url.as_deref(),
            Some("https://ceems.example.com/")
        );
        assert_eq!(flags.user_header_names, ["X-Remote-User"]);
        assert!(flags.skip_delete_old_units);
        assert!(flags.disable_checks);
    }

    #[test]
    fn repeatable_flags_replace_their_default_and_accumulate() {
        let flags = parse(&[
            "--web.listen-address=:8080",
            "--web.listen-address",
            "[::1]:8081",
            "--web.user-header-name=X-Grafana-User",
            "--web.user-header-name=X-Forwarded-User",
        ])
        .unwrap();
        assert_eq!(flags.listen_addresses, [":8080", "[::1]:8081"]);
        assert_eq!(
            flags.user_header_names,
            ["X-Grafana-User", "X-Forwarded-User"]
        );
    }

    #[test]
    fn booleans_have_negations_and_the_last_one_wins() {
        assert!(
            !parse(&["--web.compression", "--no-web.compression"])
                .unwrap()
                .compression
        );
        assert!(
            parse(&["--no-web.compression", "--web.compression"])
                .unwrap()
                .compression
        );
        assert!(!parse(&["--web.compression=false"]).unwrap().compression);
        assert!(parse(&["--web.compression=true"]).unwrap().compression);
        for name in [
            "config.file.expand-env-vars",
            "web.compression",
            "web.debug-server",
            "storage.data.skip.delete.old.units",
            "test.disable.checks",
            "web.systemd-socket",
            "security.disable-cap-awareness",
            "security.drop-privileges",
        ] {
            assert!(parse(&[&format!("--{name}")]).is_ok(), "--{name}");
            assert!(parse(&[&format!("--no-{name}")]).is_ok(), "--no-{name}");
        }
        assert!(!parse(&["--no-test.disable.checks"]).unwrap().disable_checks);
        assert!(
            !parse(&["--no-config.file.expand-env-vars"])
                .unwrap()
                .config_file_expand_env_vars
        );
        assert!(!parse(&["--no-web.debug-server"]).unwrap().debug_server);
        assert!(
            !parse(&["--no-storage.data.skip.delete.old.units"])
                .unwrap()
                .skip_delete_old_units
        );
        // A boolean does not swallow the next argument.
        let flags = parse(&["--web.compression", "--web.compression.level", "1"]).unwrap();
        assert!(flags.compression);
        assert_eq!(flags.compression_level, 1);
    }

    #[test]
    fn reference_only_flags_are_accepted_and_ignored() {
        let flags = parse(&[
            "--security.run-as-user=nobody",
            "--web.systemd-socket",
            "--runtime.gomaxprocs",
            "4",
            "--security.disable-cap-awareness",
            "--no-security.drop-privileges",
        ])
        .unwrap();
        assert_eq!(format!("{flags:?}"), format!("{:?}", Flags::default()));
    }

    #[test]
    fn route_prefixes_are_normalised() {
        for (given, expected) in [
            ("/", ""),
            ("", ""),
            ("//", ""),
            ("/ceems", "/ceems"),
            ("/ceems/", "/ceems"),
            ("ceems", "/ceems"),
            ("ceems/api/", "/ceems/api"),
        ] {
            assert_eq!(normalise_route_prefix(given), expected, "{given:?}");
            let flag = format!("--web.route-prefix={given}");
            assert_eq!(parse(&[&flag]).unwrap().route_prefix, expected, "{given:?}");
        }
    }

    #[test]
    fn compression_levels_map_as_flate_reads_them() {
        for (given, expected) in [("-2", 1), ("-1", 6), ("0", 0), ("5", 5), ("9", 9)] {
            assert_eq!(
                parse(&["--web.compression.level", given])
                    .unwrap()
                    .compression_level,
                expected,
                "{given}"
            );
        }
        assert!(
            invalid(&["--web.compression.level=10"]).contains("must be between -2 and 9, got 10")
        );
        assert!(invalid(&["--web.compression.level", "-3"])
            .contains("must be between -2 and 9, got -3"));
        assert!(invalid(&["--web.compression.level=high"]).contains("expected an integer"));
    }

    #[test]
    fn bad_values_are_refused_with_clap_messages() {
        assert!(invalid(&["--web.cors.origin=("])
            .contains("failed to compile option for --web.cors.origin"));
        assert!(invalid(&["--query.max-period=10"]).contains(
            "failed to parse option for --query.max-period: not a valid duration string: \"10\""
        ));
        assert!(invalid(&["--query.max-period="]).contains("empty duration string"));
        assert!(invalid(&["--log.level=trace"]).contains("trace"));
        assert!(invalid(&["--log.format=text"]).contains("text"));
        assert!(invalid(&["--web.max-requests=lots"]).contains("expected an integer"));
        assert!(invalid(&["--web.compression=perhaps"]).contains("expected true or false"));
        assert!(invalid(&["--no-such-flag"]).contains("--no-such-flag"));
        assert!(invalid(&["--web.route-prefix"]).contains("--web.route-prefix"));
        assert!(invalid(&["--log.level=info", "--log.level=debug"]).contains("--log.level"));
        let error = parse(&["--bogus"]).unwrap_err();
        assert!(error.to_string().starts_with("failed to parse CLI flags: "));
    }

    #[test]
    fn negative_max_requests_turn_the_limiter_off() {
        assert_eq!(
            parse(&["--web.max-requests", "-5"]).unwrap().max_requests,
            0
        );
        assert_eq!(parse(&["--web.max-requests=0"]).unwrap().max_requests, 0);
    }

    #[test]
    fn help_and_version_are_displayed_not_errors() {
        for args in [["-h"], ["--help"]] {
            match parse(&args) {
                Err(FlagsError::Display { text }) => {
                    assert!(text.contains("--web.listen-address"), "{text}");
                    assert!(
                        !text.contains("--web.user-header-name"),
                        "hidden flag shown"
                    );
                    assert!(!text.contains("--no-web.compression"), "negation shown");
                }
                other => panic!("{other:?}"),
            }
        }
        match parse(&["--version"]) {
            Err(FlagsError::Display { text }) => {
                assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_flags_fall_back_to_their_environment_variables() {
        let environment = [
            (CONFIG_FILE_ENV, "/env/config.yml"),
            (WEB_CONFIG_FILE_ENV, "/env/web.yml"),
        ];
        let flags = parse_with_env(&[], &environment).unwrap();
        assert_eq!(flags.config_file, Some(PathBuf::from("/env/config.yml")));
        assert_eq!(flags.web_config_file, Some(PathBuf::from("/env/web.yml")));
        let flags = parse_with_env(&["--config.file=/flag/config.yml"], &environment).unwrap();
        assert_eq!(flags.config_file, Some(PathBuf::from("/flag/config.yml")));
        let flags = parse_with_env(&[], &[(CONFIG_FILE_ENV, "")]).unwrap();
        assert_eq!(flags.config_file, None);
        assert_eq!(parse(&["--config.file="]).unwrap().config_file, None);
    }
}
