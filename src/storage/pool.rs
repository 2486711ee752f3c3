//! Temporary single-connection stand-in for the pool (replaced by the real pool).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::StorageError;

pub const DATABASE_FILE_NAME: &str = "ceems.db";

#[derive(Clone)]
pub struct Database {
    conn: Arc<Mutex<Connection>>,
}

impl Database {
    pub fn open(data_path: &Path) -> Result<Database, StorageError> {
        std::fs::create_dir_all(data_path).map_err(|e| StorageError::Other(e.to_string()))?;
        let conn = Connection::open(data_path.join(DATABASE_FILE_NAME))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub async fn read<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        F: FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
        T: Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&conn.lock().unwrap()))
            .await
            .map_err(|e| StorageError::Other(e.to_string()))?
    }

    pub async fn write<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        F: FnOnce(&mut Connection) -> Result<T, StorageError> + Send + 'static,
        T: Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock().unwrap()))
            .await
            .map_err(|e| StorageError::Other(e.to_string()))?
    }

    pub async fn ping(&self) -> Result<(), StorageError> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }
}
