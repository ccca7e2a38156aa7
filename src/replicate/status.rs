//! Per-database health, shared with the HTTP endpoints.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What `/readyz` reports about one database.
#[derive(Debug, Default)]
pub struct DbStatus {
    pub db: String,
    /// A full state of the database (a chain from TXID 1) is durable in the bucket.
    pub snapshot_durable: bool,
    /// When the oldest not-yet-uploaded level-0 file was staged.
    pub oldest_pending: Option<Instant>,
    pub last_upload_ok: Option<Instant>,
    pub last_error: Option<String>,
    pub refused: Option<String>,
    pub local_txid: u64,
    pub remote_txid: u64,
}

/// Shared, lock-protected status.
#[derive(Debug, Default)]
pub struct Status(pub Mutex<DbStatus>);

impl Status {
    pub fn new(db: String) -> Status {
        Status(Mutex::new(DbStatus {
            db,
            ..DbStatus::default()
        }))
    }

    pub fn update(&self, f: impl FnOnce(&mut DbStatus)) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g);
    }

    /// `Ok` when ready; otherwise the reason. `max_lag` bounds how long a staged file may
    /// wait for its upload.
    pub fn readiness(&self, max_lag: Duration) -> Result<(), String> {
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = &s.refused {
            return Err(format!("{}: {r}", s.db));
        }
        if !s.snapshot_durable {
            return Err(format!("{}: no snapshot durable in the replica yet", s.db));
        }
        if let Some(t) = s.oldest_pending
            && t.elapsed() > max_lag
        {
            let why = s.last_error.as_deref().unwrap_or("uploads are behind");
            return Err(format!(
                "{}: replication lag {:.0}s: {why}",
                s.db,
                t.elapsed().as_secs_f64()
            ));
        }
        Ok(())
    }
}
