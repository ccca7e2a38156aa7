//! The upload loop: staged level-0 files go to the replica in TXID order from the replica's
//! position; staged files are removed once uploaded and compacted (the newest stays as the
//! local position); on shutdown, one last round within `shutdown-sync-timeout`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::remote::RemoteIndex;
use super::task::{DbReplicator, RateLimited, Shutdown};
use crate::ltx::{HEADER_SIZE, Header};
use crate::replica::{Body, LtxFileInfo, StorageError};

impl DbReplicator {
    /// Runs until shutdown and hands back what it knows of the replica.
    pub(crate) async fn upload_loop(
        self: Arc<Self>,
        mut remote: RemoteIndex,
        mut shutdown: Shutdown,
    ) -> RemoteIndex {
        let interval = self.cfg.replica.sync_interval;
        let mut backoff: Option<Duration> = None;
        let mut errors = RateLimited::new(Duration::from_secs(30));
        let mut maint = super::maintain::Schedule::default();
        loop {
            let wait = backoff.unwrap_or(interval);
            tokio::select! {
                _ = self.staged_notify.notified(), if backoff.is_none() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => break,
            }
            match self.upload_pending(&mut remote).await {
                Ok(()) => {
                    if backoff.take().is_some() {
                        tracing::info!(db = %self.label, "uploads recovered");
                    }
                    if let Err(e) = self.maintain(&mut remote, &mut maint).await {
                        self.metrics
                            .maintenance_errors
                            .with_label_values(&[self.label.as_str()])
                            .inc();
                        if errors.ready() {
                            tracing::error!(db = %self.label, error = %format!("{e:#}"), "maintenance error; retrying on the next tick");
                        }
                    }
                }
                Err(e) => {
                    if errors.ready() {
                        tracing::error!(db = %self.label, error = %e, "upload failed; retrying with backoff");
                    }
                    self.status.update(|s| s.last_error = Some(e.to_string()));
                    backoff = Some(backoff.map_or(Duration::from_secs(1), |d| {
                        (d * 2).min(Duration::from_secs(30))
                    }));
                    self.enforce_staging_limit(&remote);
                }
            }
        }
        remote
    }

    /// After the signal and the sync loop's final sync: retry uploads every
    /// `shutdown-sync-interval` for up to `shutdown-sync-timeout`; a second signal aborts.
    pub(crate) async fn final_upload(
        &self,
        remote: &mut RemoteIndex,
        mut shutdown: Shutdown,
    ) -> bool {
        let deadline = Instant::now() + self.g.shutdown_sync_timeout;
        loop {
            let last = Instant::now() >= deadline;
            let res = tokio::select! {
                r = self.upload_pending(remote) => r,
                _ = aborted(&mut shutdown) => {
                    tracing::error!(db = %self.label, "shutdown aborted: staged changes did not reach the replica");
                    return false;
                }
            };
            match res {
                Ok(()) => return true,
                Err(e) if last || *shutdown.borrow() >= 2 => {
                    tracing::error!(db = %self.label, error = %e, "shutdown: staged changes did not reach the replica");
                    return false;
                }
                Err(e) => {
                    tracing::warn!(db = %self.label, error = %e, "shutdown upload failed; retrying")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.g.shutdown_sync_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Uploads every staged file above the replica position, in order.
    pub(crate) async fn upload_pending(
        &self,
        remote: &mut RemoteIndex,
    ) -> Result<(), StorageError> {
        let meta = self
            .db()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .meta
            .clone();
        let staged = meta
            .staged()
            .map_err(|e| StorageError::io("list", meta.l0_dir.display(), e))?;
        let start = remote.level_max(0);
        let mut pos = start;
        for txid in staged.into_iter().filter(|t| *t > start) {
            if txid != pos + 1 {
                self.staged_gap(pos, txid);
                break;
            }
            let path = meta.l0_path(txid);
            let ts =
                header_timestamp(&path).map_err(|e| StorageError::io("read", path.display(), e))?;
            let info = self.put_file(0, txid, txid, &path, ts).await?;
            tracing::debug!(db = %self.label, txid = format!("{txid:016x}"), size = info.size, "ltx file uploaded");
            remote.add(info);
            pos = txid;
            self.metrics
                .remote_txid
                .with_label_values(&[&self.label])
                .set(txid as i64);
        }
        let (local_txid, pending) = {
            let db = self.db();
            let db = db.lock().unwrap_or_else(|e| e.into_inner());
            (
                db.pos.map_or(0, |p| p.txid),
                meta.staged()
                    .map(|s| s.into_iter().any(|t| t > pos))
                    .unwrap_or(false),
            )
        };
        let chain = remote.all().iter().flatten().any(|f| f.min_txid == 1);
        self.status.update(|s| {
            s.remote_txid = pos;
            s.last_error = None;
            s.last_upload_ok = Some(Instant::now());
            s.snapshot_durable |= chain;
            if !pending && local_txid <= pos {
                s.oldest_pending = None;
            }
        });
        let lag = self
            .status
            .0
            .lock()
            .map(|s| s.oldest_pending.map_or(0.0, |t| t.elapsed().as_secs_f64()))
            .unwrap_or(0.0);
        self.metrics
            .lag_seconds
            .with_label_values(&[&self.label])
            .set(lag);
        self.remove_uploaded(remote);
        Ok(())
    }

    /// A staged file is missing between the replica position and the newer staged files:
    /// the local history cannot be uploaded as it is, so the next file is a full image.
    fn staged_gap(&self, remote_pos: u64, next: u64) {
        tracing::error!(db = %self.label, have = format!("{remote_pos:016x}"), next = format!("{next:016x}"), "staged level-0 files do not continue the replica; writing a full image");
        let db = self.db();
        let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = db.reset_position(remote_pos, "staged files do not continue the replica") {
            tracing::error!(db = %self.label, error = %e, "reset staging failed");
        }
    }

    /// Removes staged files that are in the replica and, where compaction levels exist,
    /// already compacted into level 1. The newest staged file always stays.
    pub(crate) fn remove_uploaded(&self, remote: &RemoteIndex) {
        let db = self.db();
        let db = db.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(staged) = db.meta.staged() else { return };
        let uploaded = remote.level_max(0);
        let compacted = if self.g.levels.is_empty() {
            uploaded
        } else {
            remote.level_max(1)
        };
        let newest = staged.last().copied().unwrap_or(0);
        let done: Vec<u64> = staged
            .into_iter()
            .filter(|t| *t <= uploaded && *t <= compacted && *t != newest)
            .collect();
        if let Err(e) = db.meta.remove(&done) {
            tracing::warn!(db = %self.label, error = %e, "remove staged files");
        }
        self.metrics
            .staging_bytes
            .with_label_values(&[&self.label])
            .set(db.meta.staged_bytes() as i64);
    }

    /// While the replica is unreachable, staged files pile up. Past the limit they are
    /// replaced by one full image at the replica position + 1 (the database itself holds the
    /// data; only intermediate restore points are lost), so the disk stays bounded.
    fn enforce_staging_limit(&self, remote: &RemoteIndex) {
        let db = self.db();
        let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = db.meta.staged_bytes();
        self.metrics
            .staging_bytes
            .with_label_values(&[&self.label])
            .set(bytes as i64);
        let pending = db
            .meta
            .staged()
            .map(|s| s.into_iter().filter(|t| *t > remote.level_max(0)).count())
            .unwrap_or(0);
        if bytes <= self.g.staging_limit || pending <= 1 {
            return;
        }
        self.metrics
            .staging_limit_hits
            .with_label_values(&[&self.label])
            .inc();
        tracing::error!(db = %self.label, bytes, limit = self.g.staging_limit, "staging limit reached while the replica is unreachable; replacing pending level-0 files with one full image");
        if let Err(e) = db.reset_position(remote.level_max(0), "staging limit reached") {
            tracing::error!(db = %self.label, error = %e, "reset staging failed");
        }
    }

    /// Uploads a local LTX file, recording the operation's metrics.
    pub(crate) async fn put_file(
        &self,
        level: u8,
        min: u64,
        max: u64,
        path: &std::path::Path,
        ts: i64,
    ) -> Result<LtxFileInfo, StorageError> {
        let started = Instant::now();
        let res = self
            .client
            .write(level, min, max, Body::File(path.to_path_buf()), ts)
            .await;
        self.record_op(
            "PUT",
            started,
            res.as_ref().map(|i| i.size).ok(),
            res.as_ref().err(),
        );
        res
    }

    pub(crate) fn record_op(
        &self,
        op: &str,
        started: Instant,
        bytes: Option<u64>,
        err: Option<&StorageError>,
    ) {
        let kind = self.client.kind();
        let m = &self.metrics;
        m.replica_operation_seconds
            .with_label_values(&[kind, op])
            .observe(started.elapsed().as_secs_f64());
        match err {
            None => {
                m.replica_operation_total
                    .with_label_values(&[kind, op])
                    .inc();
                if let Some(b) = bytes {
                    m.replica_operation_bytes
                        .with_label_values(&[kind, op])
                        .inc_by(b);
                }
            }
            Some(e) => {
                let code = match e {
                    StorageError::NotFound { .. } => "NotFound",
                    StorageError::Auth { .. } => "AccessDenied",
                    StorageError::NoSuchBucket { .. } => "NoSuchBucket",
                    StorageError::Unreachable { .. } => "Unreachable",
                    _ => "Other",
                };
                m.replica_operation_errors
                    .with_label_values(&[kind, op, code])
                    .inc();
            }
        }
    }
}

/// Resolves once a second signal asked to abort (the shutdown value reaches 2).
async fn aborted(shutdown: &mut Shutdown) {
    while *shutdown.borrow_and_update() < 2 {
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn header_timestamp(path: &std::path::Path) -> std::io::Result<i64> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let mut b = [0u8; HEADER_SIZE];
    f.read_exact_at(&mut b, 0)?;
    Header::from_bytes(&b)
        .map(|h| h.timestamp_ms)
        .map_err(std::io::Error::other)
}
