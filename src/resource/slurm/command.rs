//! Running `sacct` and `sacctmgr`: how (directly, through `sudo`, or as the server's own
//! user), with which environment, under a time limit, with stdout and stderr kept apart.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::SlurmError;

/// How much of a child's stderr is kept (the rest is read and dropped, so that a chatty
/// child cannot block on a full pipe).
const STDERR_KEPT_BYTES: u64 = 64 * 1024;
/// Lines of stderr quoted in an error or a log line.
pub(super) const STDERR_QUOTED_LINES: usize = 5;
/// How long a timed-out child gets after SIGTERM before SIGKILL.
const TERMINATION_GRACE: Duration = Duration::from_secs(2);

/// How the SLURM commands are run, chosen once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecMode {
    /// The server runs as root: commands run as they are and see every job.
    Direct,
    /// `sudo -n -E <command>`: password-less sudo is configured for the server's user.
    Sudo,
    /// As the server's own user, which may see only its own jobs.
    Native,
}

/// One command to run: program, arguments and the variables added to the inherited
/// environment, in order (later ones win).
#[derive(Debug, Clone)]
pub struct CommandLine {
    pub program: PathBuf,
    pub arguments: Vec<String>,
    pub environment: Vec<(String, String)>,
}

impl CommandLine {
    /// `program arg1 arg2 ...` for messages (the environment is left out: it may hold
    /// credentials).
    pub fn display(&self) -> String {
        let mut text = self.program.display().to_string();
        for argument in &self.arguments {
            text.push(' ');
            text.push_str(argument);
        }
        text
    }
}

/// What a command printed, when it exited with status 0.
#[derive(Debug)]
pub struct CommandOutput {
    pub stdout: String,
    /// Possibly cut at [`STDERR_KEPT_BYTES`].
    pub stderr: String,
}

/// Runs `command` in `mode`, killing it (and its process group) after `timeout`.
///
/// The child gets its own process group, so a signal to the server's group (Ctrl-C) does
/// not reach it and a timeout can stop everything it started. It is killed when the
/// returned future is dropped. A non-zero exit is an error naming the command, its status
/// and the first lines of its stderr.
pub async fn run(
    command: &CommandLine,
    mode: ExecMode,
    timeout: Duration,
) -> Result<CommandOutput, SlurmError> {
    let shown = command.display();
    let mut child_command = match mode {
        ExecMode::Direct | ExecMode::Native => Command::new(&command.program),
        ExecMode::Sudo => {
            let mut sudo = Command::new("sudo");
            sudo.arg("-n").arg("-E").arg(&command.program);
            sudo
        }
    };
    child_command
        .args(&command.arguments)
        .envs(
            command
                .environment
                .iter()
                .map(|(name, value)| (name, value)),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);

    let mut child = child_command.spawn().map_err(|source| SlurmError::Spawn {
        command: shown.clone(),
        source,
    })?;
    let process_group = child.id();
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(SlurmError::Spawn {
            command: shown,
            source: std::io::Error::other("the child's stdout/stderr pipes are missing"),
        });
    };

    let collect = async {
        let mut stdout_bytes = Vec::new();
        let (status, stdout_read, stderr_read) = tokio::join!(
            child.wait(),
            stdout.read_to_end(&mut stdout_bytes),
            read_capped(&mut stderr, STDERR_KEPT_BYTES),
        );
        (status, stdout_read.map(|_| stdout_bytes), stderr_read)
    };
    let (status, stdout_bytes, stderr_bytes) = match tokio::time::timeout(timeout, collect).await {
        Ok(outcome) => outcome,
        Err(_elapsed) => {
            stop_process_group(&mut child, process_group).await;
            return Err(SlurmError::Timeout {
                command: shown,
                timeout,
            });
        }
    };
    let io_error = |source| SlurmError::Output {
        command: shown.clone(),
        source,
    };
    let status: ExitStatus = status.map_err(io_error)?;
    let stdout = String::from_utf8_lossy(&stdout_bytes.map_err(io_error)?).into_owned();
    let stderr = String::from_utf8_lossy(&stderr_bytes.map_err(io_error)?).into_owned();
    if !status.success() {
        return Err(SlurmError::Failed {
            command: shown,
            status: status.to_string(),
            stderr: first_lines(&stderr, STDERR_QUOTED_LINES),
        });
    }
    Ok(CommandOutput { stdout, stderr })
}

/// Reads everything, keeping the first `kept` bytes.
async fn read_capped<R: AsyncRead + Unpin>(reader: &mut R, kept: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    (&mut *reader).take(kept).read_to_end(&mut bytes).await?;
    tokio::io::copy(reader, &mut tokio::io::sink()).await?;
    Ok(bytes)
}

/// SIGTERM to the child's process group (through sudo, which relays it, in sudo mode),
/// then SIGKILL to both after a grace period; the child is reaped.
async fn stop_process_group(child: &mut tokio::process::Child, process_group: Option<u32>) {
    if let Some(group) = process_group {
        signal_process_group("-TERM", group).await;
        if tokio::time::timeout(TERMINATION_GRACE, child.wait())
            .await
            .is_ok()
        {
            // The leader is gone; whatever it left in its group goes too.
            signal_process_group("-KILL", group).await;
            return;
        }
        signal_process_group("-KILL", group).await;
    }
    let _ = child.start_kill();
    let _ = tokio::time::timeout(TERMINATION_GRACE, child.wait()).await;
}

/// Signals a process group with the system's `kill` (the crate forbids the `unsafe` a
/// direct `kill(2)` needs). Failures are harmless: the group may be gone already.
async fn signal_process_group(signal: &str, group: u32) {
    let status = Command::new("kill")
        .arg(signal)
        .arg("--")
        .arg(format!("-{group}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if let Err(error) = status {
        tracing::debug!(%error, group, "could not run kill for a timed-out SLURM command");
    }
}

/// The first `count` non-blank lines of `text`, joined with ` / `, each cut to 200 chars.
pub fn first_lines(text: &str, count: usize) -> String {
    text.lines()
        .map(str::trim_end)
        .filter(|line| !line.trim().is_empty())
        .take(count)
        .map(|line| truncate(line, 200))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// `text` cut to at most `max_chars` characters, with `...` when cut.
pub fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The directory holding an executable `sacct`: `configured` when given (it must hold
/// one), else the first on the search path (`path_variable`, a `PATH` value).
pub fn locate_sacct(
    configured: Option<&Path>,
    path_variable: Option<OsString>,
) -> Result<PathBuf, SlurmError> {
    if let Some(directory) = configured {
        if !directory.is_dir() {
            return Err(SlurmError::Preflight(format!(
                "cli.path {} is not a directory",
                directory.display()
            )));
        }
        let sacct = directory.join("sacct");
        if !is_executable_file(&sacct) {
            return Err(SlurmError::Preflight(format!(
                "cli.path {}: no executable sacct in it",
                directory.display()
            )));
        }
        return Ok(directory.to_path_buf());
    }
    let search_path = path_variable.unwrap_or_default();
    std::env::split_paths(&search_path)
        .find(|directory| is_executable_file(&directory.join("sacct")))
        .ok_or_else(|| {
            SlurmError::Preflight(format!(
                "sacct not found on PATH ({}); install the SLURM client commands or set \
                 cli.path to their directory",
                search_path.to_string_lossy()
            ))
        })
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether this process runs with effective uid 0 (read from `/proc/self/status`; without
/// procfs the answer is no, and sudo or native mode is tried).
pub fn running_as_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// Whether `sudo -n -E <sacct> --help` succeeds within `limit`, with the command's
/// environment (the check runs synchronously, once, at start). `-E` as in the real runs:
/// a sudoers rule without `SETENV` refuses it, and would refuse every fetch.
pub fn sudo_works(sacct: &Path, environment: &[(String, String)], limit: Duration) -> bool {
    let child = std::process::Command::new("sudo")
        .arg("-n")
        .arg("-E")
        .arg(sacct)
        .arg("--help")
        .envs(environment.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_stderr_keeps_the_first_non_blank_lines_cut_short() {
        let long = "x".repeat(250);
        let text = format!("\n first\n\nsecond  \n{long}\nfourth\n");
        assert_eq!(
            first_lines(&text, 3),
            format!(" first / second / {}...", "x".repeat(200))
        );
        assert_eq!(first_lines("", 3), "");
        assert_eq!(truncate("héhé", 2), "hé...");
        assert_eq!(truncate("hé", 2), "hé");
    }

    #[test]
    fn sacct_is_looked_up_on_the_given_search_path() {
        let empty = tempfile::tempdir().expect("temp dir");
        let with_sacct = tempfile::tempdir().expect("temp dir");
        let sacct = with_sacct.path().join("sacct");
        std::fs::write(&sacct, "#!/bin/sh\n").expect("write");
        let search_path = std::env::join_paths([empty.path(), with_sacct.path()]).expect("join");
        // Not executable yet: not found.
        assert!(locate_sacct(None, Some(search_path.clone())).is_err());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sacct, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(
            locate_sacct(None, Some(search_path)).expect("found"),
            with_sacct.path()
        );
        let error = locate_sacct(None, Some(empty.path().as_os_str().to_owned()))
            .expect_err("not on that path")
            .to_string();
        assert!(
            error.starts_with("SLURM preflight: sacct not found on PATH ("),
            "unexpected error: {error}"
        );
        assert_eq!(
            locate_sacct(Some(empty.path()), None)
                .expect_err("no sacct")
                .to_string(),
            format!(
                "SLURM preflight: cli.path {}: no executable sacct in it",
                empty.path().display()
            )
        );
        let missing = empty.path().join("missing");
        assert_eq!(
            locate_sacct(Some(&missing), None)
                .expect_err("no directory")
                .to_string(),
            format!(
                "SLURM preflight: cli.path {} is not a directory",
                missing.display()
            )
        );
    }
}
