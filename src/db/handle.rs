//! [`DbHandle`]: the async side's only way to the database. Every call runs on a blocking
//! thread, so SQLite and file I/O never block the async workers, and the lock is never held
//! across an `.await`.

use std::sync::{Arc, Mutex};

use super::{Db, DbError};

/// A shared, open database under replication.
#[derive(Clone)]
pub struct DbHandle(Arc<Mutex<Db>>);

impl std::fmt::Debug for DbHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DbHandle")
    }
}

impl DbHandle {
    pub fn new(db: Db) -> DbHandle {
        DbHandle(Arc::new(Mutex::new(db)))
    }

    /// Runs `f` with the database on a blocking thread.
    pub async fn call<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> T + Send + 'static,
    {
        let db = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut g = db.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut g)
        })
        .await
        .map_err(|e| DbError::Invalid(format!("database task failed: {e}")))
    }
}
