//! The sync loop: every `monitor-interval`, committed WAL frames become staged level-0
//! files and checkpoints run when due. It never waits for the network: an outage only grows
//! the staging directory (bounded by the upload side's staging limit).
//!
//! Failures go to [`Health`](super::health::Health): a failing sync degrades the database
//! and backs off (up to [`SYNC_ERROR_BACKOFF_MAX`]); a database that was replaced under
//! liteship fails it for good (nothing more is published from that path).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{Cause, ReplicateError};
use super::health::Component;
use super::shutdown::Shutdown;
use super::task::DbReplicator;
use crate::db::checkpoint::CheckpointMode;
use crate::db::{DbError, Position, Staged, SyncError};

/// Longest wait between failing syncs. Litestream waits up to 5 minutes; the WAL keeps the
/// data meanwhile, but a short cap means a freed disk or a released lock is noticed within
/// seconds.
const SYNC_ERROR_BACKOFF_MAX: Duration = Duration::from_secs(15);

/// What one sync did.
struct SyncReport {
    staged: Vec<Staged>,
    checkpoint: Result<Option<CheckpointMode>, SyncError>,
    pos: Option<Position>,
    db_size: u64,
    truncate_blocked: Option<u64>,
}

/// The first tick of a database comes at a fixed point of its interval chosen by its
/// label, so that many databases in one process do not all sync in the same instant (a
/// burst of blocking calls at every tick) but spread over the interval.
fn first_delay(label: &str, interval: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    label.hash(&mut h);
    interval.mul_f64((h.finish() % 1000) as f64 / 1000.0)
}

impl DbReplicator {
    /// Runs until shutdown, then makes one final sync. `Err` when that final sync failed
    /// (the changes since the previous sync are then not in the replica).
    pub(crate) async fn sync_loop(self: Arc<Self>, mut shutdown: Shutdown) -> Result<(), String> {
        let mut delay = first_delay(&self.label, self.cfg.monitor_interval);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.stopping() => break,
            }
            if self.health.failed().is_some() {
                shutdown.stopping().await;
                return Err("replication of this database failed".into());
            }
            match self.sync_once().await {
                Ok(()) => delay = self.cfg.monitor_interval,
                // Capped low: a freed disk or a released lock resumes replication soon.
                Err(_) => delay = (delay * 2).min(SYNC_ERROR_BACKOFF_MAX),
            }
        }
        // Final sync: whatever committed before the signal goes to the replica.
        let res = tokio::select! {
            r = self.sync_once() => r,
            _ = shutdown.aborted() => return Err("the final sync was cancelled at the deadline".into()),
        };
        res.map_err(|e| format!("final sync failed: {e}"))
    }

    /// One sync (and checkpoint, if due) on a blocking thread, with its metrics and health.
    pub(crate) async fn sync_once(&self) -> Result<(), ReplicateError> {
        let started = Instant::now();
        let res = self
            .db()
            .call(|db| {
                let staged = db.sync()?;
                let mut report = SyncReport {
                    staged,
                    checkpoint: Ok(None),
                    pos: None,
                    db_size: db.db_size(),
                    truncate_blocked: None,
                };
                match db.maybe_checkpoint() {
                    Ok(r) => {
                        report.staged.extend(r.staged);
                        report.truncate_blocked = r.truncate_blocked;
                        report.checkpoint = Ok(r.mode);
                    }
                    Err(e) => report.checkpoint = Err(e),
                }
                report.pos = db.position();
                Ok::<_, SyncError>(report)
            })
            .await
            .map_err(ReplicateError::from)
            .and_then(|r| r.map_err(ReplicateError::from));
        let l = [self.label.as_str()];
        self.metrics.sync_count.with_label_values(&l).inc();
        self.metrics
            .sync_seconds
            .with_label_values(&l)
            .add(started.elapsed().as_secs_f64());
        match res {
            Ok(report) => {
                self.metrics.disk_full.with_label_values(&l).set(0);
                self.health.clear(Component::Sync);
                self.record_sync(report);
                Ok(())
            }
            Err(e) => {
                self.sync_failed(&e);
                Err(e)
            }
        }
    }

    fn sync_failed(&self, e: &ReplicateError) {
        let l = [self.label.as_str()];
        self.metrics.sync_error_count.with_label_values(&l).inc();
        let cause = e.cause();
        self.metrics
            .disk_full
            .with_label_values(&l)
            .set(i64::from(cause == Cause::DiskFull));
        if let ReplicateError::Sync(SyncError::Db(
            DbError::Replaced { .. } | DbError::WalReplaced { .. },
        )) = e
        {
            self.metrics.refused.with_label_values(&l).set(1);
            self.health.fail(format!("stopped replicating: {e}"));
            return;
        }
        // Changes may be waiting in the WAL that this sync could not stage.
        self.health.note_pending(crate::timefmt::now_ms());
        self.health.report(Component::Sync, cause, &format!("{e}"));
    }

    fn record_sync(&self, r: SyncReport) {
        let m = &self.metrics;
        let l = [self.label.as_str()];
        m.db_size.with_label_values(&l).set(r.db_size as i64);
        m.wal_size
            .with_label_values(&l)
            .set(r.pos.map_or(0, |p| p.wal_end) as i64);
        self.health.set_wal_size(r.pos.map_or(0, |p| p.wal_end));
        if let Some(p) = r.pos {
            m.txid.with_label_values(&l).set(p.txid as i64);
            self.health.set_local_txid(p.txid);
        }
        for s in &r.staged {
            m.total_wal_bytes.with_label_values(&l).inc_by(s.size);
            // Kept exact by the upload side's clean-ups; grows here during an outage.
            m.staging_bytes.with_label_values(&l).add(s.size as i64);
            if s.full.is_some() {
                m.full_images.with_label_values(&l).inc();
            }
            self.health.note_pending(s.timestamp_ms);
        }
        match r.checkpoint {
            Ok(Some(mode)) => {
                m.checkpoint_count
                    .with_label_values(&[&self.label, mode.name()])
                    .inc();
                if r.truncate_blocked.is_none() {
                    self.health.clear(Component::Checkpoint);
                }
            }
            Ok(None) => {}
            Err(e) => {
                m.checkpoint_error_count
                    .with_label_values(&[&self.label, "PASSIVE"])
                    .inc();
                let cause = Cause::of_sync(&e);
                self.health
                    .report(Component::Checkpoint, cause, &e.to_string());
            }
        }
        if let Some(pages) = r.truncate_blocked {
            self.health.report(
                Component::Checkpoint,
                Cause::Database,
                &format!("emergency TRUNCATE checkpoint could not complete: a reader holds the WAL ({pages} pages); it is retried with backoff"),
            );
        }
        if !r.staged.is_empty() {
            self.staged_notify.notify_one();
        }
        self.health.refresh_metrics();
    }
}
