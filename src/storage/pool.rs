//! The database handle: one writer connection and a pool of read-only connections on the
//! same WAL-mode SQLite file, each call run on a blocking thread.
//!
//! WAL lets readers see the last committed state while the writer holds a write
//! transaction, so a collect cycle never stalls the HTTP side and vice versa.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::functions::register_metric_map_functions;
use super::migrations;
use super::StorageError;

/// The database file inside the data directory.
pub const DATABASE_FILE_NAME: &str = "ceems.db";

/// How long a statement waits for a lock before failing with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// Tunables of [`Database::open_with_options`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseOptions {
    /// Size of the read-only pool (at least 1).
    pub read_connections: usize,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        Self {
            read_connections: 4,
        }
    }
}

/// Handle on the SQLite database. Cheap to clone; every clone shares the same writer and
/// read pool.
#[derive(Clone)]
pub struct Database {
    inner: Arc<DatabaseInner>,
}

struct DatabaseInner {
    file_path: PathBuf,
    /// One writer at a time; an async mutex so that waiting writers do not hold threads.
    writer: Arc<tokio::sync::Mutex<Connection>>,
    readers: ReadPool,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("file_path", &self.inner.file_path)
            .field("read_connections", &self.inner.readers.size)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens `<data_path>/ceems.db` with the default options. See
    /// [`Database::open_with_options`].
    pub fn open(data_path: &Path) -> Result<Database, StorageError> {
        Self::open_with_options(data_path, DatabaseOptions::default())
    }

    /// Creates the data directory (mode 0750) and the database file (mode 0640) when
    /// missing, opens the writer, migrates the schema to head and opens the read pool.
    pub fn open_with_options(
        data_path: &Path,
        options: DatabaseOptions,
    ) -> Result<Database, StorageError> {
        let data_path = std::path::absolute(data_path).map_err(|source| StorageError::Io {
            path: data_path.to_owned(),
            source,
        })?;
        create_data_directory(&data_path)?;
        let file_path = data_path.join(DATABASE_FILE_NAME);
        create_database_file(&file_path)?;

        let mut writer = open_writer_connection(&file_path)?;
        migrations::migrate(&mut writer)?;
        super::state::apply_auxiliary_schema(&writer)?;
        refresh_planner_statistics(&writer)?;

        let readers = ReadPool::new(file_path.clone(), options.read_connections.max(1));
        readers.fill()?;
        Ok(Database {
            inner: Arc::new(DatabaseInner {
                file_path,
                writer: Arc::new(tokio::sync::Mutex::new(writer)),
                readers,
            }),
        })
    }

    /// The absolute path of the database file.
    pub fn file_path(&self) -> &Path {
        &self.inner.file_path
    }

    /// Runs `f` on the writer connection, on a blocking thread, one writer at a time.
    /// A transaction that `f` leaves open (by a raw `BEGIN`) is rolled back so that the
    /// write lock never outlives the call.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        F: FnOnce(&mut Connection) -> Result<T, StorageError> + Send + 'static,
        T: Send + 'static,
    {
        let mut writer = Arc::clone(&self.inner.writer).lock_owned().await;
        let span = tracing::Span::current();
        run_blocking(move || {
            span.in_scope(|| {
                let result = f(&mut writer);
                if !writer.is_autocommit() {
                    tracing::warn!("a write left its transaction open: rolling it back");
                    if let Err(error) = writer.execute_batch("ROLLBACK") {
                        tracing::error!(%error, "rolling back the writer's open transaction failed");
                    }
                }
                result
            })
        })
        .await
    }

    /// Runs `f` on a read-only connection from the pool, on a blocking thread. Waits
    /// (asynchronously) for a free connection when all are busy.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        F: FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
        T: Send + 'static,
    {
        let permit = Arc::clone(&self.inner.readers.permits)
            .acquire_owned()
            .await
            .map_err(|_| StorageError::Other("the read pool is closed".to_owned()))?;
        let inner = Arc::clone(&self.inner);
        let span = tracing::Span::current();
        run_blocking(move || {
            span.in_scope(|| {
                // The permit bounds the number of leased connections to the pool size.
                let _permit = permit;
                let lease = inner.readers.lease()?;
                f(lease.connection())
            })
        })
        .await
    }

    /// A trivial read, for health checks.
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))?;
            Ok(())
        })
        .await
    }
}

async fn run_blocking<T, F>(work: F) -> Result<T, StorageError>
where
    F: FnOnce() -> Result<T, StorageError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| StorageError::Join(error.to_string()))?
}

/// The read-only connections. A connection is opened when a permit holder finds no idle
/// one, so a connection dropped after a panic is replaced on demand.
struct ReadPool {
    file_path: PathBuf,
    size: usize,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn new(file_path: PathBuf, size: usize) -> Self {
        Self {
            file_path,
            size,
            permits: Arc::new(Semaphore::new(size)),
            idle: Mutex::new(Vec::with_capacity(size)),
        }
    }

    /// Opens every connection now, so that a file readers cannot open fails at start.
    fn fill(&self) -> Result<(), StorageError> {
        let mut connections = Vec::with_capacity(self.size);
        for _ in 0..self.size {
            connections.push(open_reader_connection(&self.file_path)?);
        }
        self.idle_connections().extend(connections);
        Ok(())
    }

    fn idle_connections(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // The lock only guards push/pop, which cannot leave the vector inconsistent.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lease(&self) -> Result<ReadLease<'_>, StorageError> {
        let idle = self.idle_connections().pop();
        let connection = match idle {
            Some(connection) => connection,
            None => open_reader_connection(&self.file_path)?,
        };
        Ok(ReadLease {
            pool: self,
            connection: Some(connection),
        })
    }
}

/// A connection taken from the pool; it goes back on drop (also when the reader panics)
/// unless it was left inside a transaction, in which case it is closed.
struct ReadLease<'pool> {
    pool: &'pool ReadPool,
    connection: Option<Connection>,
}

impl ReadLease<'_> {
    fn connection(&self) -> &Connection {
        self.connection
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for ReadLease<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            // A read transaction left open would pin an old snapshot and keep the WAL
            // from being checkpointed: drop that connection instead of reusing it.
            if connection.is_autocommit() {
                self.pool.idle_connections().push(connection);
            }
        }
    }
}

fn create_data_directory(data_path: &Path) -> Result<(), StorageError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o750);
    }
    builder
        .create(data_path)
        .map_err(|source| StorageError::Io {
            path: data_path.to_owned(),
            source,
        })
}

fn create_database_file(file_path: &Path) -> Result<(), StorageError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o640);
    }
    match options.open(file_path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StorageError::Io {
            path: file_path.to_owned(),
            source,
        }),
    }
}

fn open_writer_connection(file_path: &Path) -> Result<Connection, StorageError> {
    let conn = Connection::open_with_flags(
        file_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL is persistent in the file; readers and litestream rely on it.
    let journal_mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError::Other(format!(
            "{}: journal_mode is {journal_mode:?}, WAL could not be enabled",
            file_path.display()
        )));
    }
    // NORMAL, not the reference's OFF: in WAL mode NORMAL costs no fsync per commit
    // either (only at checkpoints) and can lose at most the last commits on power loss,
    // whereas OFF can leave a corrupt file after an OS crash.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // A window's transaction re-reads the pages it wrote (usage buckets, indexes): with
    // SQLite's default 2 MiB they spill to the WAL and are read back page by page.
    conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
    register_metric_map_functions(&conn)?;
    Ok(conn)
}

/// Page cache of the writer connection, in KiB (a negative `cache_size`).
pub const WRITER_CACHE_KIB: i64 = -65_536;

/// Gathers the statistics SQLite's planner needs on large tables (`PRAGMA optimize` with a
/// row limit per index, so it takes milliseconds). Without them the planner guesses, and
/// for a user's unit list it walks every unit the user ever ran in uuid order rather than
/// the index range of the window.
pub fn refresh_planner_statistics(conn: &Connection) -> Result<(), StorageError> {
    conn.execute_batch("PRAGMA analysis_limit = 1000; PRAGMA optimize = 0x10002;")?;
    Ok(())
}

fn open_reader_connection(file_path: &Path) -> Result<Connection, StorageError> {
    let conn = Connection::open_with_flags(
        file_path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    register_metric_map_functions(&conn)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn open_in(dir: &tempfile::TempDir) -> Database {
        Database::open(&dir.path().join("data")).expect("open database")
    }

    #[tokio::test]
    async fn open_creates_directory_and_file_and_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let database = open_in(&dir);
        let data_path = dir.path().join("data");
        assert_eq!(database.file_path(), data_path.join("ceems.db"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let dir_mode = std::fs::metadata(&data_path).unwrap().permissions().mode();
            let file_mode = std::fs::metadata(database.file_path())
                .unwrap()
                .permissions()
                .mode();
            // The umask may only take bits away.
            assert_eq!(dir_mode & 0o777 & !0o750, 0, "{dir_mode:o}");
            assert_eq!(file_mode & 0o777 & !0o640, 0, "{file_mode:o}");
            assert_eq!(file_mode & 0o600, 0o600, "{file_mode:o}");
        }
        let (version, journal_mode): (i64, String) = database
            .read(|conn| {
                Ok((
                    conn.query_row("SELECT version FROM schema_migrations", [], |row| {
                        row.get(0)
                    })?,
                    conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(version, 9);
        assert_eq!(journal_mode, "wal");
        let (synchronous, busy_timeout): (i64, i64) = database
            .write(|conn| {
                Ok((
                    conn.query_row("PRAGMA synchronous", [], |row| row.get(0))?,
                    conn.query_row("PRAGMA busy_timeout", [], |row| row.get(0))?,
                ))
            })
            .await
            .unwrap();
        assert_eq!((synchronous, busy_timeout), (1, 5000));
    }

    #[tokio::test]
    async fn reopening_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let database = open_in(&dir);
        database
            .write(|conn| {
                conn.execute("INSERT INTO users (name) VALUES ('usr1')", [])?;
                Ok(())
            })
            .await
            .unwrap();
        drop(database);
        let database = open_in(&dir);
        let names: i64 = database
            .read(|conn| Ok(conn.query_row("SELECT count(*) FROM users", [], |row| row.get(0))?))
            .await
            .unwrap();
        assert_eq!(names, 1);
    }

    #[tokio::test]
    async fn ping_answers() {
        let dir = tempfile::tempdir().unwrap();
        open_in(&dir).ping().await.unwrap();
    }

    #[tokio::test]
    async fn functions_are_registered_on_readers_and_writer() {
        let dir = tempfile::tempdir().unwrap();
        let database = open_in(&dir);
        let sql = r#"SELECT add_metric_map('{"a":1}', '{"a":2}')"#;
        let read: String = database
            .read(move |conn| Ok(conn.query_row(sql, [], |row| row.get(0))?))
            .await
            .unwrap();
        let written: String = database
            .write(move |conn| Ok(conn.query_row(sql, [], |row| row.get(0))?))
            .await
            .unwrap();
        assert_eq!(
            (read.as_str(), written.as_str()),
            (r#"{"a":3}"#, r#"{"a":3}"#)
        );
    }

    #[tokio::test]
    async fn read_only_connections_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let database = open_in(&dir);
        let error = database
            .read(|conn| {
                conn.execute("INSERT INTO users (name) VALUES ('usr1')", [])?;
                Ok(())
            })
            .await
            .unwrap_err();
        match error {
            StorageError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => {
                assert_eq!(failure.code, rusqlite::ErrorCode::ReadOnly)
            }
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_are_not_blocked_by_an_open_write_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let database = open_in(&dir);
        database
            .write(|conn| {
                conn.execute("INSERT INTO users (name) VALUES ('before')", [])?;
                Ok(())
            })
            .await
            .unwrap();

        let (inside_sender, inside_receiver) = tokio::sync::oneshot::channel::<()>();
        let (release_sender, release_receiver) = std::sync::mpsc::channel::<()>();
        let writer = {
            let database = database.clone();
            tokio::spawn(async move {
                database
                    .write(move |conn| {
                        // EXCLUSIVE locks readers out in rollback-journal mode; in WAL mode
                        // it is the same as IMMEDIATE and readers go on.
                        let transaction = conn
                            .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
                        transaction.execute("INSERT INTO users (name) VALUES ('during')", [])?;
                        let _ = inside_sender.send(());
                        release_receiver
                            .recv_timeout(Duration::from_secs(30))
                            .map_err(|error| StorageError::Other(error.to_string()))?;
                        transaction.commit()?;
                        Ok(())
                    })
                    .await
            })
        };
        inside_receiver.await.unwrap();

        // Several readers at once, more than the pool size, while the write lock is held.
        let started = Instant::now();
        let mut reads = Vec::new();
        for _ in 0..8 {
            let database = database.clone();
            reads.push(tokio::spawn(async move {
                database
                    .read(|conn| {
                        Ok(conn.query_row("SELECT count(*) FROM users", [], |row| {
                            row.get::<_, i64>(0)
                        })?)
                    })
                    .await
            }));
        }
        for read in reads {
            assert_eq!(
                read.await.unwrap().unwrap(),
                1,
                "readers see the committed state"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "readers waited {:?}",
            started.elapsed()
        );

        release_sender.send(()).unwrap();
        writer.await.unwrap().unwrap();
        let after: i64 = database
            .read(|conn| Ok(conn.query_row("SELECT count(*) FROM users", [], |row| row.get(0))?))
            .await
            .unwrap();
        assert_eq!(after, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_is_not_blocked_by_an_open_read_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let database = open_in(&dir);
        let (inside_sender, inside_receiver) = tokio::sync::oneshot::channel::<()>();
        let (release_sender, release_receiver) = std::sync::mpsc::channel::<()>();
        let reader = {
            let database = database.clone();
            tokio::spawn(async move {
                database
                    .read(move |conn| {
                        let transaction = conn.unchecked_transaction()?;
                        let before: i64 =
                            transaction
                                .query_row("SELECT count(*) FROM users", [], |row| row.get(0))?;
                        let _ = inside_sender.send(());
                        release_receiver
                            .recv_timeout(Duration::from_secs(30))
                            .map_err(|error| StorageError::Other(error.to_string()))?;
                        // Still the snapshot taken when the read began.
                        let after: i64 =
                            transaction
                                .query_row("SELECT count(*) FROM users", [], |row| row.get(0))?;
                        Ok((before, after))
                    })
                    .await
            })
        };
        inside_receiver.await.unwrap();
        let started = Instant::now();
        database
            .write(|conn| {
                let transaction = conn.transaction()?;
                transaction.execute("INSERT INTO users (name) VALUES ('usr1')", [])?;
                transaction.commit()?;
                Ok(())
            })
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "writer waited {:?}",
            started.elapsed()
        );
        release_sender.send(()).unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), (0, 0));
    }

    #[tokio::test]
    async fn a_transaction_left_open_by_a_write_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let database = open_in(&dir);
        database
            .write(|conn| {
                conn.execute_batch("BEGIN; INSERT INTO users (name) VALUES ('lost');")?;
                Ok(())
            })
            .await
            .unwrap();
        let (open_after, rows): (bool, i64) = database
            .write(|conn| {
                Ok((
                    !conn.is_autocommit(),
                    conn.query_row("SELECT count(*) FROM users", [], |row| row.get(0))?,
                ))
            })
            .await
            .unwrap();
        assert_eq!((open_after, rows), (false, 0));
    }

    #[tokio::test]
    async fn a_panicking_reader_does_not_shrink_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let database = Database::open_with_options(
            &dir.path().join("data"),
            DatabaseOptions {
                read_connections: 1,
            },
        )
        .unwrap();
        let error = database
            .read(|_conn| -> Result<(), StorageError> { panic!("reader failed") })
            .await
            .unwrap_err();
        assert!(matches!(error, StorageError::Join(_)), "{error:?}");
        database.ping().await.unwrap();
        // A read transaction left open: that connection is replaced, not reused.
        database
            .read(|conn| {
                conn.execute_batch("BEGIN; SELECT count(*) FROM users;")?;
                Ok(())
            })
            .await
            .unwrap();
        let in_transaction = database
            .read(|conn| Ok(!conn.is_autocommit()))
            .await
            .unwrap();
        assert!(!in_transaction);
    }

    #[tokio::test]
    async fn a_newer_database_fails_to_open_with_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let database = open_in(&dir);
        database
            .write(|conn| {
                conn.execute("UPDATE schema_migrations SET version = 12", [])?;
                Ok(())
            })
            .await
            .unwrap();
        drop(database);
        let error = Database::open(&dir.path().join("data")).unwrap_err();
        assert!(error.to_string().contains("version 12"), "{error}");
    }
}
