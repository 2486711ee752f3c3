//! Storage: the only module that imports rusqlite. Owns the SQLite file, its schema
//! (migrations from `sql/`), the custom SQL functions, the writer and the read-only pool,
//! the admin list, the upserts of the collect cycle, the read queries and online backups.
//!
//! Architecture invariant: nothing outside this module sees a `rusqlite` type except
//! through the closures handed to [`Database::read`] and [`Database::write`].

pub mod admin;
pub mod backup;
pub mod bulk;
pub mod cluster_indexes;
mod flat_json;
pub mod functions;
pub mod metric_keys;
pub mod migrations;
pub mod pool;
pub mod queries;
pub mod state;
#[cfg(test)]
pub(crate) mod test_support;
pub mod usage_rollup;
pub mod window;
pub mod write;

pub use migrations::MigrationError;
pub use pool::{Database, DatabaseOptions, DATABASE_FILE_NAME};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration: {0}")]
    Migration(#[from] MigrationError),
    #[error("database file {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database task did not finish: {0}")]
    Join(String),
    #[error("{0}")]
    Other(String),
}

/// Logs a statement with its parameters bound, at debug level under the target
/// `ceems_api_server::sql`: the exact text to replay in the `sqlite3` shell.
pub(crate) fn log_statement(statement: Option<&rusqlite::Statement<'_>>) {
    if tracing::enabled!(target: "ceems_api_server::sql", tracing::Level::DEBUG) {
        if let Some(text) = statement.and_then(rusqlite::Statement::expanded_sql) {
            tracing::debug!(target: "ceems_api_server::sql", sql = %text, "statement");
        }
    }
}
