//! The upload loop: staged level-0 files go to the replica in TXID order from the replica's
//! position (at most `max-sync-ltx-files` per round, then maintenance gets its turn; a
//! backlog is merged into one file per round, `backlog.rs`);
//! staged files are removed once uploaded and compacted (the newest stays as the local
//! position). While the replica is unreachable, the staging limit bounds the local disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{Cause, ReplicateError};
use super::health::Component;
use super::remote::RemoteIndex;
use super::shutdown::Shutdown;
use super::task::DbReplicator;
use crate::ltx::{HEADER_SIZE, Header};
use crate::replica::{Body, LtxFileInfo, StorageError};

/// First and longest wait between failing upload rounds. 30 s keeps an outage cheap in
/// requests while a recovered server is used again within half a minute.
const UPLOAD_RETRY_FIRST: Duration = Duration::from_secs(1);
const UPLOAD_RETRY_MAX: Duration = Duration::from_secs(30);
/// The upload loop's own state between rounds.
struct LoopState {
    backoff: Option<Duration>,
    /// When the next upload round may run after a failure.
    retry_at: Option<Instant>,
    maint: super::maintain::Schedule,
    /// When the lineage marker was last saved, and at which position.
    marker: (Option<Instant>, u64),
}

/// While an upload or maintenance runs, the client's retried attempts are looked at this
/// often, so that a server that stopped answering is named within a second of the first
/// stalled attempt instead of after all retries.
const ATTEMPT_POLL: Duration = Duration::from_secs(1);

/// The lineage marker is rewritten at most this often while uploads advance: one small
/// fsynced write per half minute, and a marker at most that much behind after a crash.
const LINEAGE_SAVE_INTERVAL: Duration = Duration::from_secs(30);

impl DbReplicator {
    /// Runs until shutdown and hands back what it knows of the replica.
    pub(crate) async fn upload_loop(
        self: Arc<Self>,
        mut remote: RemoteIndex,
        mut shutdown: Shutdown,
    ) -> RemoteIndex {
        let mut st = LoopState {
            backoff: None,
            retry_at: None,
            maint: super::maintain::Schedule::default(),
            // The marker is written at the first upload, then at most every interval.
            marker: (None, remote.position()),
        };
        loop {
            let wait = st.retry_at.map_or(self.cfg.replica.sync_interval, |t| {
                t.saturating_duration_since(Instant::now())
            });
            let notified = tokio::select! {
                _ = self.staged_notify.notified() => true,
                _ = tokio::time::sleep(wait) => false,
                _ = shutdown.stopping() => break,
            };
            if notified && st.retry_at.is_some_and(|t| Instant::now() < t) {
                // Backing off, but the staging directory keeps growing: bound it now.
                self.bound_staging(&remote).await;
                continue;
            }
            // Idle: nothing staged since the last round and no retry pending. The periodic
            // jobs still get their (in-memory) turn; no file or network I/O happens.
            let idle = !notified
                && st.retry_at.is_none()
                && self.health.snapshot().local_txid <= remote.position();
            if idle {
                tokio::select! {
                    _ = self.maintain(&mut remote, &mut st.maint) => {}
                    _ = shutdown.stopping() => break,
                }
                continue;
            }
            let res = tokio::select! {
                r = self.watching(self.upload_pending(&mut remote)) => r,
                _ = shutdown.aborted() => break,
            };
            let stop = match res {
                Ok(more) => {
                    self.uploaded(&mut remote, &mut st, more, &mut shutdown)
                        .await
                }
                Err(e) => {
                    self.upload_failed(&remote, &mut st, &e).await;
                    false
                }
            };
            self.health.refresh_metrics();
            if stop {
                break;
            }
        }
        remote
    }

    /// After a successful round: clear the failure, save the marker if due, maintain.
    /// `true` when a stop came during maintenance.
    async fn uploaded(
        &self,
        remote: &mut RemoteIndex,
        st: &mut LoopState,
        more: bool,
        shutdown: &mut Shutdown,
    ) -> bool {
        st.backoff = None;
        st.retry_at = None;
        self.health.clear(Component::Upload); // logs "upload recovered"
        let pos = remote.position();
        if pos != st.marker.1
            && st
                .marker
                .0
                .is_none_or(|t| t.elapsed() >= LINEAGE_SAVE_INTERVAL)
        {
            st.marker = (Some(Instant::now()), pos);
            if let Err(e) = self.save_lineage(pos).await {
                self.health
                    .report(Component::Maintenance, e.cause(), &e.to_string());
            }
        }
        if more {
            self.staged_notify.notify_one();
        }
        // Maintenance is not needed for durability: a stop cancels it.
        tokio::select! {
            _ = self.watching(self.maintain(remote, &mut st.maint)) => false,
            _ = shutdown.stopping() => true,
        }
    }

    async fn upload_failed(&self, remote: &RemoteIndex, st: &mut LoopState, e: &ReplicateError) {
        self.health
            .report(Component::Upload, e.cause(), &e.to_string());
        let d = st
            .backoff
            .map_or(UPLOAD_RETRY_FIRST, |d| (d * 2).min(UPLOAD_RETRY_MAX));
        st.backoff = Some(d);
        st.retry_at = Some(Instant::now() + d);
        self.bound_staging(remote).await;
    }

    async fn bound_staging(&self, remote: &RemoteIndex) {
        if let Err(e) = self.enforce_staging_limit(remote).await {
            self.health
                .report(Component::Upload, e.cause(), &e.to_string());
        }
    }

    /// Runs `fut`, reporting every [`ATTEMPT_POLL`] the attempts the client failed and is
    /// retrying (a stalled or unreachable server) to the health as upload problems.
    pub(crate) async fn watching<T>(&self, fut: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(fut);
        let mut tick = tokio::time::interval(ATTEMPT_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                r = &mut fut => return r,
                _ = tick.tick() => self.report_attempt_trouble(),
            }
        }
    }

    fn report_attempt_trouble(&self) {
        use std::sync::atomic::Ordering;
        let Some(t) = self.client.attempt_trouble() else {
            return;
        };
        if t.count > self.attempts_seen.swap(t.count, Ordering::Relaxed) {
            let cause = if t.stalled {
                Cause::Stalled
            } else {
                Cause::Unreachable
            };
            self.health.report(Component::Upload, cause, &t.message);
        }
    }

    /// Uploads staged files above the replica position, in order, at most
    /// `max-sync-ltx-files` of them; a backlog goes up as one merged file (see
    /// [`super::backlog`]). `Ok(true)` when more are waiting.
    pub(crate) async fn upload_pending(
        &self,
        remote: &mut RemoteIndex,
    ) -> Result<bool, ReplicateError> {
        let start = remote.position();
        let staged = self.staged()?;
        let (run, gap) = pending_run(&staged, start, self.cfg.replica.max_sync_ltx_files);
        let mut pos = start;
        if run.len() >= super::backlog::MERGE_FROM {
            // The newest level-0 file stays single (see backlog.rs): merged, then one more.
            let end = self.upload_merged(remote, &run[..run.len() - 1]).await?;
            self.upload_one(remote, end + 1).await?;
            pos = end + 1;
        } else {
            for &txid in &run {
                self.upload_one(remote, txid).await?;
                pos = txid;
            }
        }
        if let Some(next) = gap.filter(|_| pos == run.last().copied().unwrap_or(start)) {
            // Never reuse a TXID that any level of the replica holds.
            self.staged_gap(pos.max(remote.max_txid()), next).await?;
        }
        // The position as of the last sync (the sync loop mirrors it into the health
        // state): no handoff to the database's thread for it.
        let local_txid = self.health.snapshot().local_txid;
        self.note_chain_start(remote);
        // Anything still staged above the new position (including files staged meanwhile)
        // is pending; its header timestamp is its commit time.
        let kept = self.remove_uploaded(remote).await?;
        let next = kept.iter().copied().find(|t| *t > pos);
        match next {
            Some(t) => {
                let ts = header_timestamp(&self.meta.l0_path(t))?;
                self.health.set_pending_since(Some(ts));
            }
            None if local_txid <= pos && self.health.problem(Component::Sync).is_none() => {
                self.health.set_pending_since(None)
            }
            None => {}
        }
        Ok(next.is_some())
    }

    /// Uploads the staged file `txid` as a level-0 object.
    async fn upload_one(&self, remote: &mut RemoteIndex, txid: u64) -> Result<(), ReplicateError> {
        let path = self.meta.l0_path(txid);
        let ts = header_timestamp(&path)?;
        self.attempted
            .fetch_max(txid, std::sync::atomic::Ordering::Relaxed);
        let info = self.put_file(0, txid, txid, &path, ts).await?;
        tracing::debug!(db = %self.label, txid = format!("{txid:016x}"), size = info.size, "ltx file uploaded");
        remote.add(info);
        self.health.set_remote_txid(txid);
        Ok(())
    }

    /// Until the first check, the replica is restorable as soon as this process uploaded
    /// what a restore needs (a chain from TXID 1 to its position), as the index shows.
    pub(crate) fn note_chain_start(&self, remote: &RemoteIndex) {
        use super::health::Restorable;
        if self.health.restorable() == Restorable::Unknown
            && let Ok(Some(t)) = remote.restorable_txid()
            && t >= remote.position()
        {
            self.health.set_restorable(Restorable::Yes);
        }
    }

    /// Staged TXIDs: a listing of the local staging directory, made inline. It takes
    /// microseconds; a handoff to a blocking thread costs more than that in futex wakeups
    /// and context switches, and with 100 databases it ran several times per second each.
    pub(crate) fn staged(&self) -> Result<Vec<u64>, ReplicateError> {
        self.meta.staged().map_err(|e| {
            ReplicateError::Fs(crate::fsutil::FsError::new("list", &self.meta.l0_dir, e))
        })
    }

    /// A staged file is missing between the replica position and the newer staged files:
    /// the local history cannot be uploaded as it is, so the next file is a full image.
    async fn staged_gap(&self, remote_pos: u64, next: u64) -> Result<(), ReplicateError> {
        tracing::error!(db = %self.label, have = format!("{remote_pos:016x}"), next = format!("{next:016x}"), "staged level-0 files do not continue the replica; writing a full image");
        self.db()
            .call(move |db| {
                db.reset_position(remote_pos, "staged files do not continue the replica")
            })
            .await??;
        Ok(())
    }

    /// Staged files up to this TXID are removable: in the replica and, where compaction
    /// levels exist, compacted into level 1 (level 0's files are read again for that).
    pub(crate) fn removable_to(&self, remote: &RemoteIndex) -> u64 {
        let uploaded = remote.level_max(0);
        if self.g.levels.is_empty() {
            uploaded
        } else {
            uploaded.min(remote.level_max(1))
        }
    }

    /// The TXID up to which the last clean-up removed staged files.
    pub(crate) fn cleaned_to(&self) -> Option<u64> {
        self.cleaned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(to, _)| to)
    }

    /// Removes staged files that are in the replica and, where compaction levels exist,
    /// already compacted into level 1. The newest staged file always stays. Returns the
    /// TXIDs still staged (one listing serves the caller too). When nothing became
    /// removable since the last clean-up (the limit did not move; the newest file it kept
    /// is still the newest) it only lists, inline: no handoff to the database's thread,
    /// which with many databases was one per database per second.
    pub(crate) async fn remove_uploaded(
        &self,
        remote: &RemoteIndex,
    ) -> Result<Vec<u64>, ReplicateError> {
        let limit = self.removable_to(remote);
        let last = *self.cleaned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((done_to, kept_newest)) = last
            && done_to == limit
        {
            let staged = self.staged()?;
            if kept_newest.is_none() || staged.last() == kept_newest.as_ref() {
                return Ok(staged);
            }
        }
        let (kept, bytes) = self
            .db()
            .call(move |db| {
                let staged = db.meta().staged_sizes()?;
                let newest = staged.last().map_or(0, |(t, _)| *t);
                let (done, kept): (Vec<_>, Vec<_>) = staged
                    .into_iter()
                    .partition(|(t, _)| *t <= limit && *t != newest);
                db.meta().retire(&done)?;
                let bytes = kept.iter().map(|(_, size)| size).sum::<u64>();
                Ok::<_, std::io::Error>((
                    kept.into_iter().map(|(t, _)| t).collect::<Vec<u64>>(),
                    bytes,
                ))
            })
            .await?
            .map_err(|e| {
                crate::fsutil::FsError::new("remove staged files in", &self.meta.l0_dir, e)
            })?;
        let blocked = kept.last().copied().filter(|t| *t <= limit);
        *self.cleaned.lock().unwrap_or_else(|e| e.into_inner()) = Some((limit, blocked));
        self.metrics
            .staging_bytes
            .with_label_values(&[&self.label])
            .set(bytes as i64);
        Ok(kept)
    }

    /// While the replica is unreachable, staged files pile up. Past the limit they are
    /// replaced by one full image at the replica position + 1 (the database itself holds the
    /// data; only intermediate restore points are lost), so the disk stays bounded.
    async fn enforce_staging_limit(&self, remote: &RemoteIndex) -> Result<(), ReplicateError> {
        // Files whose upload was attempted stay: one may be in the replica already, and its
        // TXID must keep its content.
        let attempted = self.attempted.load(std::sync::atomic::Ordering::Relaxed);
        let (limit, pos) = (
            self.g.staging_limit,
            remote.level_max(0).max(remote.max_txid()).max(attempted),
        );
        let (bytes, hit) = self
            .db()
            .call(move |db| {
                let staged = db.meta().staged_sizes().unwrap_or_default();
                let bytes: u64 = staged.iter().map(|(_, size)| size).sum();
                let pending = staged.iter().filter(|(t, _)| *t > pos).count();
                if bytes <= limit || pending <= 1 {
                    return Ok((bytes, false));
                }
                db.truncate_staging_after(pos, "staging limit reached")?;
                Ok::<_, crate::db::DbError>((bytes, true))
            })
            .await??;
        self.metrics
            .staging_bytes
            .with_label_values(&[&self.label])
            .set(bytes as i64);
        if hit {
            self.metrics
                .staging_limit_hits
                .with_label_values(&[&self.label])
                .inc();
            self.health.report(
                Component::Upload,
                Cause::StagingLimit,
                &format!("staging limit reached ({bytes} bytes staged, limit {limit}) while the replica is unreachable; pending level-0 files were replaced by one full image (intermediate restore points are lost)"),
            );
        }
        Ok(())
    }

    /// Uploads a local LTX file under the writer lease (renewed first if due), recording
    /// the operation's metrics. The object is created only if absent: when it exists, it
    /// is this very file (an earlier attempt whose answer was lost) or the lease was lost.
    pub(crate) async fn put_file(
        &self,
        level: u8,
        min: u64,
        max: u64,
        path: &std::path::Path,
        ts: i64,
    ) -> Result<LtxFileInfo, ReplicateError> {
        self.hold_lease().await?;
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
        match res {
            Err(StorageError::PreconditionFailed { .. }) => {
                self.already_there(level, min, max, path, ts).await
            }
            other => Ok(other?),
        }
    }

    /// Renews the writer lease if due; a lost lease fails the database.
    pub(crate) async fn hold_lease(&self) -> Result<(), ReplicateError> {
        let res = self.lease.ensure(self.client.as_ref()).await;
        self.note_lease();
        match res {
            Ok(()) => Ok(()),
            Err(e @ super::lease::LeaseError::Lost { .. }) => {
                self.health.set_lease(e.to_string());
                self.health.fail(e.to_string());
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A create found the object present: fine if it holds this file's bytes (same size
    /// and file checksum), otherwise another writer made it and the lease is lost.
    async fn already_there(
        &self,
        level: u8,
        min: u64,
        max: u64,
        path: &std::path::Path,
        ts: i64,
    ) -> Result<LtxFileInfo, ReplicateError> {
        let local = super::task::trailer_of(path).await?;
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| crate::fsutil::FsError::new("stat", path, e))?
            .len();
        let theirs =
            crate::replica::read::trailer(self.client.as_ref(), level, min, max, size).await;
        if theirs.is_ok_and(|t| t == local) {
            tracing::debug!(db = %self.label, key = %self.client.key(level, min, max), "object already uploaded by an earlier attempt");
            return Ok(LtxFileInfo {
                level,
                min_txid: min,
                max_txid: max,
                size,
                created_at: crate::replica::system_time_from_ms(ts),
            });
        }
        let e = self.lease.lost(self.client.as_ref()).await;
        self.note_lease();
        let msg = format!(
            "{} exists with other content: {e}",
            self.client.key(level, min, max)
        );
        self.health.fail(msg.clone());
        Err(ReplicateError::Replica(msg))
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
                m.replica_operation_errors
                    .with_label_values(&[kind, op, Cause::of_storage(e).name()])
                    .inc();
            }
        }
    }
}

/// The staged TXIDs that continue `start` without a hole (at most `max` of them), and the
/// first staged TXID after a hole, if one follows.
fn pending_run(staged: &[u64], start: u64, max: usize) -> (Vec<u64>, Option<u64>) {
    let mut run = Vec::new();
    let mut pos = start;
    for &t in staged.iter().filter(|t| **t > start) {
        if t != pos + 1 {
            return (run, Some(t));
        }
        if run.len() == max {
            break;
        }
        run.push(t);
        pos = t;
    }
    (run, None)
}

/// The header timestamp of a staged file (its commit time): one 100-byte read of a local
/// file, made inline (see [`DbReplicator::staged`]).
pub(crate) fn header_timestamp(path: &std::path::Path) -> Result<i64, ReplicateError> {
    use std::os::unix::fs::FileExt;
    let io = |e| crate::fsutil::FsError::new("read", path, e);
    let f = std::fs::File::open(path).map_err(io)?;
    let mut b = [0u8; HEADER_SIZE];
    f.read_exact_at(&mut b, 0).map_err(io)?;
    Header::from_bytes(&b)
        .map(|h| h.timestamp_ms)
        .map_err(|source| ReplicateError::Ltx {
            context: format!("staged file {}", path.display()),
            source,
        })
}
