//! Scheduled database backups: every `backup_interval` (the first one an interval after
//! the start), a consistent copy of the database named `ceems-YYYYMMDDHHMM.db` (the time
//! in `time_zone`) in `backup_path`, keeping the newest `backups_to_keep` of them.
//!
//! A failed backup is logged and retried at the next tick; old backups are only deleted
//! after a new one succeeded, and only files with exactly the backup name pattern.

use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::DataConfig;
use crate::storage::{Database, StorageError};

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup directory {}: {source}", path.display())]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("backup to {}: {source}", path.display())]
    Copy {
        path: PathBuf,
        #[source]
        source: StorageError,
    },
}

/// What one backup did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupOutcome {
    /// The new backup.
    pub file: PathBuf,
    /// Older backups deleted to keep `backups_to_keep`, newest first.
    pub removed: Vec<PathBuf>,
}

/// The backups of one database, as configured in `ceems_api_server.data`.
#[derive(Debug)]
pub struct BackupSchedule {
    database: Database,
    directory: PathBuf,
    interval: Duration,
    zone: Tz,
    backups_to_keep: usize,
    cancelled: Arc<AtomicBool>,
}

/// Runs the backups of `data` until `shutdown` completes (nothing when backups are off).
/// A backup in progress at shutdown is cancelled and leaves no file.
pub async fn run_backups(database: Database, data: DataConfig, shutdown: impl Future<Output = ()>) {
    match BackupSchedule::new(database, &data) {
        Some(schedule) => schedule.run(shutdown).await,
        None => tracing::debug!("backups are off (no backup_path)"),
    }
}

impl BackupSchedule {
    /// `None` when backups are off: no `backup_path`, or a zero `backup_interval`.
    pub fn new(database: Database, data: &DataConfig) -> Option<Self> {
        let directory = data.backup_path.clone()?;
        if data.backup_interval.is_zero() {
            return None;
        }
        Some(Self {
            database,
            directory,
            interval: data.backup_interval,
            zone: data.time_zone,
            backups_to_keep: data.backups_to_keep,
            cancelled: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The backup file name for `now_ms` (epoch ms): `ceems-YYYYMMDDHHMM.db` in `zone`.
    pub fn file_name(now_ms: i64, zone: Tz) -> String {
        let time = Utc
            .timestamp_millis_opt(now_ms)
            .single()
            .unwrap_or_default()
            .with_timezone(&zone);
        time.format("ceems-%Y%m%d%H%M.db").to_string()
    }

    /// Takes one backup named for `now_ms`, then deletes the oldest backups beyond
    /// `backups_to_keep`. Creates the backup directory (mode 0750) when missing.
    pub async fn run_once(&self, now_ms: i64) -> Result<BackupOutcome, BackupError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&self.directory)
            .map_err(|source| BackupError::Directory {
                path: self.directory.clone(),
                source,
            })?;
        let file = self.directory.join(Self::file_name(now_ms, self.zone));
        self.database
            .backup_to(file.clone(), Arc::clone(&self.cancelled))
            .await
            .map_err(|source| BackupError::Copy {
                path: file.clone(),
                source,
            })?;
        let removed =
            remove_old_backups(&self.directory, self.backups_to_keep).map_err(|source| {
                BackupError::Directory {
                    path: self.directory.clone(),
                    source,
                }
            })?;
        Ok(BackupOutcome { file, removed })
    }

    /// Backs up every interval, the first time one interval from now, until `shutdown`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        self.run_with_clock(shutdown, || Utc::now().timestamp_millis())
            .await;
    }

    async fn run_with_clock(self, shutdown: impl Future<Output = ()>, now_ms: impl Fn() -> i64) {
        tracing::info!(
            directory = %self.directory.display(),
            interval = ?self.interval,
            backups_to_keep = self.backups_to_keep,
            "backups scheduled"
        );
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            let backup = self.run_once(now_ms());
            tokio::pin!(backup);
            let result = tokio::select! {
                result = &mut backup => result,
                () = &mut shutdown => {
                    self.cancelled.store(true, Ordering::Relaxed);
                    if let Err(error) = backup.await {
                        tracing::info!(%error, "backup stopped by shutdown");
                    }
                    return;
                }
            };
            match result {
                Ok(outcome) => tracing::info!(
                    file = %outcome.file.display(),
                    removed = outcome.removed.len(),
                    "database backed up"
                ),
                Err(error) => {
                    tracing::error!(%error, "database backup failed; retrying at the next interval")
                }
            }
        }
    }
}

/// True for the names this module writes: `ceems-` and twelve digits, then `.db`.
fn is_backup_name(name: &str) -> bool {
    name.strip_prefix("ceems-")
        .and_then(|rest| rest.strip_suffix(".db"))
        .is_some_and(|stamp| stamp.len() == 12 && stamp.bytes().all(|byte| byte.is_ascii_digit()))
}

/// Deletes the backups of `directory` beyond the newest `keep` (by name, which sorts by
/// time); 0 keeps all. A file that cannot be deleted is logged and skipped.
fn remove_old_backups(directory: &Path, keep: usize) -> std::io::Result<Vec<PathBuf>> {
    if keep == 0 {
        return Ok(Vec::new());
    }
    let mut backups = Vec::new();
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_backup_name(&name) && entry.file_type()?.is_file() {
            backups.push(name);
        }
    }
    backups.sort_unstable_by(|a, b| b.cmp(a));
    let mut removed = Vec::new();
    for name in backups.into_iter().skip(keep) {
        let path = directory.join(&name);
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "could not delete an old backup");
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    /// 2024-03-04T12:34:56Z.
    const NOW_MS: i64 = 1_709_555_696_000;

    fn data_config(data: &Path, backups: Option<PathBuf>, keep: usize) -> DataConfig {
        DataConfig {
            path: data.to_owned(),
            backup_path: backups,
            backups_to_keep: keep,
            time_zone: Tz::UTC,
            ..DataConfig::default()
        }
    }

    fn names(directory: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(directory)
            .map(|entries| {
                entries
                    .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn file_names_use_the_configured_zone_to_the_minute() {
        assert_eq!(
            BackupSchedule::file_name(NOW_MS, Tz::UTC),
            "ceems-202403041234.db"
        );
        assert_eq!(
            BackupSchedule::file_name(NOW_MS, chrono_tz::Europe::Paris),
            "ceems-202403041334.db"
        );
        assert_eq!(
            BackupSchedule::file_name(NOW_MS, chrono_tz::Asia::Kolkata),
            "ceems-202403041804.db"
        );
    }

    #[test]
    fn only_exact_backup_names_are_backups() {
        assert!(is_backup_name("ceems-202403041234.db"));
        for name in [
            "ceems.db",
            "ceems-latest.db",
            "ceems-20240304.db",
            "ceems-2024030412345.db",
            "ceems-20240304123x.db",
            "ceems-202403041234.db.bak",
            ".ceems-202403041234.db.partial-1-2",
            "other-202403041234.db",
        ] {
            assert!(!is_backup_name(name), "{name}");
        }
    }

    #[tokio::test]
    async fn backups_are_off_without_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let database = Database::open(&dir.path().join("data")).unwrap();
        assert!(BackupSchedule::new(database.clone(), &data_config(dir.path(), None, 7)).is_none());
        let zero_interval = DataConfig {
            backup_interval: Duration::ZERO,
            ..data_config(dir.path(), Some(dir.path().join("b")), 7)
        };
        assert!(BackupSchedule::new(database, &zero_interval).is_none());
    }

    #[tokio::test]
    async fn run_once_names_the_backup_and_keeps_the_newest_ones_only() {
        let dir = tempfile::tempdir().unwrap();
        let database = Database::open(&dir.path().join("data")).unwrap();
        let backups = dir.path().join("backups");
        std::fs::create_dir(&backups).unwrap();
        for name in [
            "ceems-202401010000.db",
            "ceems-202402010000.db",
            "ceems-202403010000.db",
            "ceems-latest.db",
            "ceems-20240101.db",
            "ceems-202401010000.db.bak",
            "notes.txt",
        ] {
            std::fs::write(backups.join(name), b"old").unwrap();
        }
        // A directory with a backup's name is not a backup.
        std::fs::create_dir(backups.join("ceems-202312010000.db")).unwrap();

        let schedule =
            BackupSchedule::new(database, &data_config(dir.path(), Some(backups.clone()), 2))
                .unwrap();
        let outcome = schedule.run_once(NOW_MS).await.unwrap();
        assert_eq!(
            outcome,
            BackupOutcome {
                file: backups.join("ceems-202403041234.db"),
                removed: vec![
                    backups.join("ceems-202402010000.db"),
                    backups.join("ceems-202401010000.db"),
                ],
            }
        );
        assert_eq!(
            names(&backups),
            [
                "ceems-202312010000.db",
                "ceems-20240101.db",
                "ceems-202401010000.db.bak",
                "ceems-202403010000.db",
                "ceems-202403041234.db",
                "ceems-latest.db",
                "notes.txt",
            ]
        );
        let header = std::fs::read(backups.join("ceems-202403041234.db")).unwrap();
        assert!(header.starts_with(b"SQLite format 3\0"));

        // The same minute again replaces that backup; nothing else goes.
        let outcome = schedule.run_once(NOW_MS + 3_000).await.unwrap();
        assert_eq!(outcome.removed, Vec::<PathBuf>::new());
        assert_eq!(names(&backups).len(), 7);
    }

    #[tokio::test]
    async fn zero_keeps_every_backup_and_a_missing_directory_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let database = Database::open(&dir.path().join("data")).unwrap();
        let backups = dir.path().join("new").join("backups");
        let schedule =
            BackupSchedule::new(database, &data_config(dir.path(), Some(backups.clone()), 0))
                .unwrap();
        for minute in 0..3 {
            let outcome = schedule.run_once(NOW_MS + minute * 60_000).await.unwrap();
            assert!(outcome.removed.is_empty());
        }
        assert_eq!(
            names(&backups),
            [
                "ceems-202403041234.db",
                "ceems-202403041235.db",
                "ceems-202403041236.db"
            ]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backups).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o750);
    }

    #[tokio::test]
    async fn the_first_backup_comes_one_interval_after_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let database = Database::open(&dir.path().join("data")).unwrap();
        let backups = dir.path().join("backups");
        let data = DataConfig {
            backup_interval: Duration::from_millis(600),
            ..data_config(dir.path(), Some(backups.clone()), 7)
        };
        let schedule = BackupSchedule::new(database, &data).unwrap();
        let calls = Arc::new(AtomicI64::new(0));
        let clock = {
            let calls = Arc::clone(&calls);
            move || NOW_MS + 60_000 * calls.fetch_add(1, Ordering::SeqCst)
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = tokio::spawn(schedule.run_with_clock(
            async {
                let _ = stopped.await;
            },
            clock,
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(names(&backups).is_empty(), "no backup at start");
        tokio::time::sleep(Duration::from_millis(600)).await;
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), runner)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(names(&backups), ["ceems-202403041234.db"]);
    }
}
