//! Online backups of the database file: a consistent copy taken with SQLite's backup API
//! from a separate read-only connection, so that neither the writer nor the readers wait
//! for it (WAL mode lets a reader keep its snapshot while the writer commits).
//!
//! The copy goes to a temporary file in the destination directory (so it works whatever
//! filesystem that is), is checked, synced, and then renamed to its final name in the
//! same directory: a backup file is either complete or absent.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::backup::{Backup, Progress, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{Database, StorageError};

/// Pages copied per backup step. All steps run inside one read transaction on the source
/// (one snapshot), so commits of the writer between steps never restart the copy; the
/// steps only bound how long a cancellation waits.
const PAGES_PER_STEP: i32 = 4096;

/// How long the source waits for a lock (only a checkpoint in progress or a database in
/// another journal mode would make it wait).
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// A backup file's mode: readable by the owner and its group, as the database file.
const BACKUP_FILE_MODE: u32 = 0o640;

impl Database {
    /// Backs the database up to `destination` (see [`backup_database`]) on a blocking
    /// thread. Setting `cancelled` stops the copy at its next step, leaving no file.
    pub async fn backup_to(
        &self,
        destination: PathBuf,
        cancelled: std::sync::Arc<AtomicBool>,
    ) -> Result<(), StorageError> {
        let source = self.file_path().to_owned();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| backup_database_cancellable(&source, &destination, &cancelled))
        })
        .await
        .map_err(|error| StorageError::Join(error.to_string()))?
    }
}

/// Copies the SQLite database `source_db_file` to `destination` (a file path) while the
/// server keeps writing and reading it. An existing file at `destination` is replaced
/// atomically.
pub fn backup_database(source_db_file: &Path, destination: &Path) -> Result<(), StorageError> {
    backup_database_cancellable(source_db_file, destination, &AtomicBool::new(false))
}

/// [`backup_database`], stopping with an error (and no file left) when `cancelled` is set.
pub fn backup_database_cancellable(
    source_db_file: &Path,
    destination: &Path,
    cancelled: &AtomicBool,
) -> Result<(), StorageError> {
    copy_database(source_db_file, destination, cancelled, &mut |_| {})
}

fn copy_database(
    source_db_file: &Path,
    destination: &Path,
    cancelled: &AtomicBool,
    on_step: &mut dyn FnMut(Progress),
) -> Result<(), StorageError> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| StorageError::Io { path, source }
    };
    let directory = destination
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = destination
        .file_name()
        .ok_or_else(|| {
            StorageError::Other(format!(
                "backup destination {} is not a file path",
                destination.display()
            ))
        })?
        .to_string_lossy()
        .into_owned();

    let temporary = TemporaryFile::create(directory, &file_name)?;
    {
        let source = Connection::open_with_flags(
            source_db_file,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        source.busy_timeout(BUSY_TIMEOUT)?;
        let mut copy = Connection::open(temporary.path())?;
        copy_snapshot(&source, &mut copy, cancelled, on_step)?;
        // The copy carries the source's WAL flag; a backup is one self-contained file.
        let mode: String = copy.query_row("PRAGMA journal_mode = DELETE", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(StorageError::Other(format!(
                "backup copy stayed in journal mode {mode}"
            )));
        }
        let check: String = copy.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
        if check != "ok" {
            return Err(StorageError::Other(format!(
                "backup copy failed its check: {check}"
            )));
        }
        copy.close().map_err(|(_, error)| error)?;
    }
    File::open(temporary.path())
        .and_then(|file| file.sync_all())
        .map_err(io_error(temporary.path()))?;
    std::fs::rename(temporary.path(), destination).map_err(io_error(destination))?;
    temporary.disarm();
    // Make the rename itself durable.
    File::open(directory)
        .and_then(|file| file.sync_all())
        .map_err(io_error(directory))?;
    Ok(())
}

/// Copies every page of `source` into `copy` from one snapshot of the source.
fn copy_snapshot(
    source: &Connection,
    copy: &mut Connection,
    cancelled: &AtomicBool,
    on_step: &mut dyn FnMut(Progress),
) -> Result<(), StorageError> {
    // Open the read transaction before the backup does: every step then reads this same
    // snapshot, and the writer's commits between steps do not restart the copy.
    source.execute_batch("BEGIN")?;
    source.query_row("SELECT count(*) FROM sqlite_schema", [], |row| {
        row.get::<_, i64>(0)
    })?;
    let result = (|| {
        let backup = Backup::new(source, copy)?;
        loop {
            if cancelled.load(Ordering::Relaxed) {
                return Err(StorageError::Other("backup cancelled".to_owned()));
            }
            let step = backup.step(PAGES_PER_STEP)?;
            on_step(backup.progress());
            match step {
                StepResult::Done => return Ok(()),
                StepResult::More => {}
                // The source snapshot is held, so only the destination (a file nobody else
                // knows of) could be busy; wait a little rather than spin.
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    })();
    source.execute_batch("COMMIT")?;
    result
}

/// A file in the destination directory that is removed (with its journal) unless
/// [`TemporaryFile::disarm`] is called after it was renamed.
struct TemporaryFile {
    path: PathBuf,
    armed: bool,
}

impl TemporaryFile {
    fn create(directory: &Path, final_name: &str) -> Result<Self, StorageError> {
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let path = directory.join(format!(
            ".{final_name}.partial-{}-{unique}",
            std::process::id()
        ));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(BACKUP_FILE_MODE)
            .open(&path)
            .map_err(|source| StorageError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Self { path, armed: true })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use std::time::Instant;

    const TABLES: [&str; 6] = [
        "units",
        "usage",
        "daily_usage",
        "users",
        "projects",
        "admin_users",
    ];

    async fn database_with_rows(dir: &Path, units: i64, payload_bytes: usize) -> Database {
        let database = Database::open(&dir.join("data")).unwrap();
        database
            .write(move |conn| {
                let transaction = conn.transaction()?;
                {
                    let payload = format!("{{\"blob\":\"{}\"}}", "x".repeat(payload_bytes));
                    let mut insert = transaction
                        .prepare("INSERT INTO units (cluster_id, uuid, tags) VALUES ('c', ?1, ?2)")?;
                    for id in 0..units {
                        insert.execute(rusqlite::params![id.to_string(), payload])?;
                    }
                }
                transaction.execute_batch(
                    "INSERT INTO usage (cluster_id, username) VALUES ('c', 'u1'), ('c', 'u2');
                     INSERT INTO daily_usage (cluster_id, username, last_updated_at)
                       VALUES ('c', 'u1', 'd1');
                     INSERT INTO users (cluster_id, name) VALUES ('c', 'u1'), ('c', 'u2'), ('c', 'u3');
                     INSERT INTO projects (cluster_id, name) VALUES ('c', 'p1');",
                )?;
                transaction.commit()?;
                Ok(())
            })
            .await
            .unwrap();
        database
    }

    fn row_counts(conn: &Connection) -> Vec<i64> {
        TABLES
            .iter()
            .map(|table| {
                conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                    row.get(0)
                })
                .unwrap()
            })
            .collect()
    }

    fn open_copy(path: &Path) -> Connection {
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
    }

    fn integrity(conn: &Connection) -> String {
        conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap()
    }

    fn directory_names(path: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(path)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_backup_is_a_checked_self_contained_copy_with_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let database = database_with_rows(dir.path(), 500, 100).await;
        let backups = dir.path().join("backups");
        std::fs::create_dir(&backups).unwrap();
        let destination = backups.join("ceems-202403041200.db");
        database
            .backup_to(destination.clone(), Arc::new(AtomicBool::new(false)))
            .await
            .unwrap();

        let source_counts = database.read(|conn| Ok(row_counts(conn))).await.unwrap();
        assert_eq!(source_counts, [500, 2, 1, 3, 1, 0]);
        let copy = open_copy(&destination);
        assert_eq!(integrity(&copy), "ok");
        assert_eq!(row_counts(&copy), source_counts);
        let mode: String = copy
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
        let version: i64 = copy
            .query_row("SELECT version FROM schema_migrations", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(version, 9);
        drop(copy);
        // Nothing but the backup is left in the directory, with the database's mode.
        assert_eq!(directory_names(&backups), ["ceems-202403041200.db"]);
        let mode = std::fs::metadata(&destination)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[tokio::test]
    async fn a_backup_replaces_an_existing_file_of_the_same_name() {
        let dir = tempfile::tempdir().unwrap();
        let database = database_with_rows(dir.path(), 3, 10).await;
        let destination = dir.path().join("ceems-202403041200.db");
        std::fs::write(&destination, b"not a database").unwrap();
        backup_database(database.file_path(), &destination).unwrap();
        let copy = open_copy(&destination);
        assert_eq!(row_counts(&copy), [3, 2, 1, 3, 1, 0]);
    }

    #[tokio::test]
    async fn failures_are_errors_that_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let database = database_with_rows(dir.path(), 3, 10).await;
        let missing = dir.path().join("missing").join("ceems-202403041200.db");
        let error = backup_database(database.file_path(), &missing).unwrap_err();
        assert!(matches!(error, StorageError::Io { .. }), "{error}");

        let backups = dir.path().join("backups");
        std::fs::create_dir(&backups).unwrap();
        let error = database
            .backup_to(
                backups.join("ceems-202403041200.db"),
                Arc::new(AtomicBool::new(true)),
            )
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "backup cancelled");
        assert!(directory_names(&backups).is_empty());

        let error = backup_database(
            &dir.path().join("no-such.db"),
            &backups.join("ceems-202403041200.db"),
        )
        .unwrap_err();
        assert!(matches!(error, StorageError::Sqlite(_)), "{error}");
        assert!(directory_names(&backups).is_empty());
    }

    /// A ~50 MB database: the writer commits and readers read while the copy runs, the
    /// copy never restarts, and it holds exactly the rows of the moment it started.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_and_readers_are_not_blocked_by_a_running_backup() {
        let dir = tempfile::tempdir().unwrap();
        let initial_units = 50_000;
        let database = database_with_rows(dir.path(), initial_units, 1_000).await;
        let size = std::fs::metadata(database.file_path()).unwrap().len()
            + std::fs::metadata(dir.path().join("data/ceems.db-wal"))
                .map_or(0, |metadata| metadata.len());
        assert!(size > 50_000_000, "{size}");

        let copying = Arc::new(AtomicBool::new(false));
        let destination = dir.path().join("ceems-202403041200.db");
        let backup = {
            let copying = Arc::clone(&copying);
            let source = database.file_path().to_owned();
            let destination = destination.clone();
            tokio::task::spawn_blocking(move || {
                let mut progress = Vec::new();
                let result = copy_database(
                    &source,
                    &destination,
                    &AtomicBool::new(false),
                    &mut |step| {
                        progress.push((step.pagecount, step.remaining));
                        if step.remaining == 0 {
                            copying.store(false, Ordering::SeqCst);
                        } else {
                            copying.store(true, Ordering::SeqCst);
                            // Slow the copy down so that it surely spans many commits.
                            std::thread::sleep(Duration::from_millis(150));
                        }
                    },
                );
                (result, progress)
            })
        };
        let wait_start = Instant::now();
        while !copying.load(Ordering::SeqCst) {
            assert!(wait_start.elapsed() < Duration::from_secs(60));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        let mut commits_while_copying = 0;
        let mut reads_while_copying = 0;
        let mut next_id = initial_units;
        let writes_start = Instant::now();
        // A copy that restarts on every commit would never finish while the writer keeps
        // committing: stop writing after a while so that the checks below report it.
        while !backup.is_finished() && writes_start.elapsed() < Duration::from_secs(60) {
            next_id += 1;
            let id = next_id;
            database
                .write(move |conn| {
                    conn.execute(
                        "INSERT INTO units (cluster_id, uuid) VALUES ('c', ?1)",
                        [id.to_string()],
                    )?;
                    Ok(())
                })
                .await
                .unwrap();
            if copying.load(Ordering::SeqCst) {
                commits_while_copying += 1;
            }
            let count = database
                .read(|conn| {
                    Ok(conn
                        .query_row("SELECT count(*) FROM units", [], |row| row.get::<_, i64>(0))?)
                })
                .await
                .unwrap();
            assert_eq!(count, id);
            if copying.load(Ordering::SeqCst) {
                reads_while_copying += 1;
            }
        }
        let (result, progress) = backup.await.unwrap();
        result.unwrap();
        assert!(
            commits_while_copying >= 3,
            "{commits_while_copying} commits"
        );
        assert!(reads_while_copying >= 3, "{reads_while_copying} reads");

        // One snapshot: the page count never changes and the copy never starts over.
        assert!(progress.len() >= 3, "{progress:?}");
        assert!(progress.iter().all(|(pages, _)| *pages == progress[0].0));
        assert!(
            progress.windows(2).all(|pair| pair[1].1 < pair[0].1),
            "{progress:?}"
        );
        assert_eq!(progress.last().unwrap().1, 0);

        let copy = open_copy(&destination);
        assert_eq!(integrity(&copy), "ok");
        assert_eq!(row_counts(&copy), [initial_units, 2, 1, 3, 1, 0]);
    }
}
