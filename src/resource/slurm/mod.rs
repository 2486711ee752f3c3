//! The SLURM resource manager: `sacct` and `sacctmgr` through the command line.
//!
//! [`SlurmManager::new`] checks once where the commands are and how to run them
//! ([`ExecMode`]); each fetch runs one command under a time limit and parses its stdout
//! with [`parse`]. stderr is kept apart from the parsed output and logged.

mod command;
#[cfg(test)]
mod fake_tests;
pub mod parse;

use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;

use crate::config::ClusterConfig;
use crate::model::time::{format_dt, local_time_zone};
use crate::model::{Project, Unit, User};
use crate::pipeline::Window;

pub use command::ExecMode;
use command::{first_lines, truncate, CommandLine, CommandOutput, STDERR_QUOTED_LINES};
use parse::{
    parse_sacct_output, parse_sacctmgr_output, sacct_arguments, sacct_environment,
    sacctmgr_arguments, unreadable_sacctmgr_lines,
};

/// How long one `sacct` or `sacctmgr` run may take before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long the start-up `sudo -n sacct --help` check may take.
const SUDO_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Unreadable line numbers quoted in the log.
const UNREADABLE_LINES_QUOTED: usize = 5;
/// Characters of an unreadable line quoted in the log or an error.
const EXCERPT_CHARS: usize = 120;

/// Why SLURM could not be set up or asked.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// At start: the commands or the zone they print in cannot be found.
    #[error("SLURM preflight: {0}")]
    Preflight(String),
    #[error("{command}: could not start: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command}: no answer within {timeout:?}, killed")]
    Timeout { command: String, timeout: Duration },
    #[error("{command}: reading its output: {source}")]
    Output {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command}: failed ({status}); stderr: {stderr}")]
    Failed {
        command: String,
        status: String,
        /// The first lines of its stderr.
        stderr: String,
    },
    /// The command printed lines and none of them is one it prints.
    #[error(
        "{command} output unparsable: none of its {lines} non-blank lines could be read \
         (line {first_line}: {excerpt:?})"
    )]
    Unparsable {
        command: &'static str,
        lines: usize,
        first_line: usize,
        excerpt: String,
    },
}

/// One SLURM cluster, asked through `sacct` (units) and `sacctmgr` (users and projects).
#[derive(Debug, Clone)]
pub struct SlurmManager {
    cluster_id: String,
    sacct: PathBuf,
    sacctmgr: PathBuf,
    mode: ExecMode,
    /// `cli.environment_variables`, added after our own variables.
    environment: Vec<(String, String)>,
    /// The zone sacct prints its times in and reads `--starttime/--endtime` in.
    sacct_zone: Tz,
    timeout: Duration,
}

impl SlurmManager {
    /// Finds `sacct` (in `cli.path`, else on `PATH`: the one of
    /// `cli.environment_variables` if set, else the server's), chooses how to run it
    /// (directly as root, else through password-less `sudo` if `sudo -n -E sacct --help`
    /// succeeds within 5 s, else as the server's user with a warning) and the zone sacct
    /// prints in (`TZ` of the commands' environment, else the server's zone). `zone` is
    /// the configured `time_zone` the units' times are rendered in (each window carries
    /// it too).
    pub fn new(cluster: &ClusterConfig, zone: Tz) -> Result<Self, SlurmError> {
        let environment: Vec<(String, String)> = cluster
            .cli
            .environment_variables
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let configured = cluster
            .cli
            .path
            .as_deref()
            .filter(|path| !path.as_os_str().is_empty());
        let search_path = cluster
            .cli
            .environment_variables
            .get("PATH")
            .map(Into::into)
            .or_else(|| std::env::var_os("PATH"));
        let directory = command::locate_sacct(configured, search_path)?;
        let sacct = directory.join("sacct");
        let sacctmgr = directory.join("sacctmgr");
        if !sacctmgr.is_file() {
            tracing::warn!(
                cluster = %cluster.id,
                path = %sacctmgr.display(),
                "no sacctmgr next to sacct: fetching users and projects will fail"
            );
        }

        let mode = if command::running_as_root() {
            ExecMode::Direct
        } else if command::sudo_works(&sacct, &environment, SUDO_CHECK_TIMEOUT) {
            ExecMode::Sudo
        } else {
            tracing::warn!(
                cluster = %cluster.id,
                "not root and no password-less sudo for sacct: running it as this user, \
                 which may see only its own jobs"
            );
            ExecMode::Native
        };

        let tz_variable = cluster
            .cli
            .environment_variables
            .get("TZ")
            .cloned()
            .or_else(|| std::env::var("TZ").ok());
        let sacct_zone = match tz_variable {
            Some(value) => zone_of_tz_variable(&value).ok_or_else(|| {
                SlurmError::Preflight(format!(
                    "TZ={value:?} for sacct is not an IANA zone name, so its times could not \
                     be read; set TZ in cli.environment_variables to a name such as \
                     Europe/Paris"
                ))
            })?,
            None => local_time_zone(),
        };
        tracing::info!(
            cluster = %cluster.id,
            sacct = %sacct.display(),
            mode = ?mode,
            sacct_zone = %sacct_zone,
            zone = %zone,
            "SLURM resource manager ready"
        );
        Ok(Self {
            cluster_id: cluster.id.clone(),
            sacct,
            sacctmgr,
            mode,
            environment,
            sacct_zone,
            timeout: COMMAND_TIMEOUT,
        })
    }

    /// Replaces the time limit of each command ([`COMMAND_TIMEOUT`] by default).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How the commands are run.
    pub fn exec_mode(&self) -> ExecMode {
        self.mode
    }

    /// The zone sacct prints its times in.
    pub fn sacct_zone(&self) -> Tz {
        self.sacct_zone
    }

    /// The jobs sacct reports for `window` (finished in it or running), with their walltime
    /// and allocation times inside the window.
    ///
    /// Lines that are no sacct job line are skipped and logged; when there are some and
    /// none is a job, a step or a job that never ran, the output is an error
    /// ([`SlurmError::Unparsable`]) so that the window is tried again.
    pub async fn fetch_units(&self, window: &Window) -> Result<Vec<Unit>, SlurmError> {
        let start = format_dt(window.start_ms.div_euclid(1000), self.sacct_zone);
        let end = format_dt(window.end_ms.div_euclid(1000), self.sacct_zone);
        let mut environment = sacct_environment();
        environment.extend(self.environment.iter().cloned());
        let command = CommandLine {
            program: self.sacct.clone(),
            arguments: sacct_arguments(&start, &end),
            environment,
        };
        let output = self.run(&command).await?;
        let parsed = parse_sacct_output(&output.stdout, window, self.sacct_zone);

        let unreadable: Vec<usize> = parsed
            .skipped
            .iter()
            .filter(|line| !line.reason.is_known_skip())
            .map(|line| line.line_number)
            .collect();
        let nothing_read = unreadable.len() == parsed.skipped.len() && parsed.units.is_empty();
        self.check_unreadable("sacct", &output.stdout, &unreadable, nothing_read)?;

        let mut units = parsed.units;
        for unit in &mut units {
            unit.cluster_id.clone_from(&self.cluster_id);
        }
        tracing::debug!(
            cluster = %self.cluster_id,
            units = units.len(),
            start = %start,
            end = %end,
            "fetched SLURM jobs"
        );
        Ok(units)
    }

    /// Output lines `command` printed that are none of its lines (`unreadable`, 1-based):
    /// an error when nothing else was read (`nothing_read`), so the window is retried;
    /// otherwise one warning and the readable lines are kept.
    fn check_unreadable(
        &self,
        command: &'static str,
        stdout: &str,
        unreadable: &[usize],
        nothing_read: bool,
    ) -> Result<(), SlurmError> {
        let Some(&first_line) = unreadable.first() else {
            return Ok(());
        };
        let excerpt = line_excerpt(stdout, first_line);
        if nothing_read {
            return Err(SlurmError::Unparsable {
                command,
                lines: unreadable.len(),
                first_line,
                excerpt,
            });
        }
        tracing::warn!(
            cluster = %self.cluster_id,
            command,
            count = unreadable.len(),
            lines = ?&unreadable[..unreadable.len().min(UNREADABLE_LINES_QUOTED)],
            first = %excerpt,
            "skipped output lines that are none of the command's lines"
        );
        Ok(())
    }

    /// Users and projects from the sacctmgr associations (root and empty names left
    /// out). `window` is the collect window they belong to.
    pub async fn fetch_users_projects(
        &self,
        window: &Window,
    ) -> Result<(Vec<User>, Vec<Project>), SlurmError> {
        let command = CommandLine {
            program: self.sacctmgr.clone(),
            arguments: sacctmgr_arguments(),
            environment: self.environment.clone(),
        };
        let output = self.run(&command).await?;
        let (unreadable, non_blank) = unreadable_sacctmgr_lines(&output.stdout);
        self.check_unreadable(
            "sacctmgr",
            &output.stdout,
            &unreadable,
            unreadable.len() == non_blank,
        )?;
        let (mut users, mut projects) = parse_sacctmgr_output(&output.stdout);
        for user in &mut users {
            user.cluster_id.clone_from(&self.cluster_id);
        }
        for project in &mut projects {
            project.cluster_id.clone_from(&self.cluster_id);
        }
        tracing::debug!(
            cluster = %self.cluster_id,
            users = users.len(),
            projects = projects.len(),
            end = %window.end_dt(),
            "fetched SLURM associations"
        );
        Ok((users, projects))
    }

    async fn run(&self, command: &CommandLine) -> Result<CommandOutput, SlurmError> {
        let output = command::run(command, self.mode, self.timeout).await?;
        if !output.stderr.trim().is_empty() {
            tracing::warn!(
                cluster = %self.cluster_id,
                command = %command.program.display(),
                stderr = %first_lines(&output.stderr, STDERR_QUOTED_LINES),
                "SLURM command succeeded with messages on stderr"
            );
        }
        Ok(output)
    }
}

/// Line `line_number` (1-based) of `text`, cut for a log line.
fn line_excerpt(text: &str, line_number: usize) -> String {
    let line = text.split('\n').nth(line_number - 1).unwrap_or_default();
    truncate(line.trim_end(), EXCERPT_CHARS)
}

/// The zone a `TZ` value names, as the C library reads it for an IANA name: empty is
/// UTC, a leading `:` is dropped, a path under a `zoneinfo` directory names the zone after
/// it. POSIX rule strings (`CET-1CEST`) are not understood.
fn zone_of_tz_variable(value: &str) -> Option<Tz> {
    let name = value.strip_prefix(':').unwrap_or(value);
    if name.is_empty() {
        return Some(Tz::UTC);
    }
    let name = match name.rfind("zoneinfo/") {
        Some(position) if name.starts_with('/') => &name[position + "zoneinfo/".len()..],
        _ => name,
    };
    name.parse::<Tz>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tz_values_name_their_zone() {
        let paris: Tz = "Europe/Paris".parse().expect("zone");
        assert_eq!(zone_of_tz_variable("Europe/Paris"), Some(paris));
        assert_eq!(zone_of_tz_variable(":Europe/Paris"), Some(paris));
        assert_eq!(
            zone_of_tz_variable("/usr/share/zoneinfo/Europe/Paris"),
            Some(paris)
        );
        assert_eq!(zone_of_tz_variable(""), Some(Tz::UTC));
        assert_eq!(zone_of_tz_variable("UTC"), Some(Tz::UTC));
        assert_eq!(zone_of_tz_variable("CET-1CEST"), None);
        assert_eq!(zone_of_tz_variable("Mars/Olympus"), None);
    }

    #[test]
    fn excerpts_are_one_line_cut_short() {
        let text = format!("a\n{}\r\n", "b".repeat(130));
        assert_eq!(line_excerpt(text.as_str(), 1), "a");
        assert_eq!(
            line_excerpt(text.as_str(), 2),
            format!("{}...", "b".repeat(120))
        );
        assert_eq!(line_excerpt(text.as_str(), 9), "");
    }
}
