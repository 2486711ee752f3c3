//! Storage: the only module that imports rusqlite.

pub mod admin;
pub mod functions;
pub mod migrations;
pub mod pool;
pub mod queries;

pub use pool::{Database, DATABASE_FILE_NAME};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Other(String),
}
