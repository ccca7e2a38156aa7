//! Compaction into levels 1..n on wall-clock windows, level-9 snapshots, and retention that
//! always keeps a restorable chain and the newest level-0 file (spec 2.2, 2.3). Everything
//! is decided from the in-memory [`RemoteIndex`]: when nothing changed, no request is sent.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use super::error::ReplicateError;
use super::health::Component;
use super::remote::RemoteIndex;
use super::task::{DbReplicator, window_start};
use super::verify::VerifySchedule;
use crate::replica::{LtxFileInfo, SNAPSHOT_LEVEL};

/// When each periodic job last ran (window starts in ms since the epoch).
#[derive(Debug, Default)]
pub struct Schedule {
    compacted: Vec<Option<u64>>,
    snapshot: Option<u64>,
    l0_checked: Option<Instant>,
    verify: VerifySchedule,
}

impl DbReplicator {
    /// Runs the periodic jobs that are due. Every job runs even when an earlier one failed
    /// (a compaction that keeps failing must not stop snapshots); each failure is reported
    /// and counted, and the failed job keeps its schedule so it runs again on the next tick.
    pub(crate) async fn maintain(&self, remote: &mut RemoteIndex, sched: &mut Schedule) {
        // First make sure the index is true: the jobs below act on it.
        self.verify_if_due(remote, &mut sched.verify).await;
        let mut failures = Vec::new();
        let now = SystemTime::now();
        // Snapshots first: a new replica's first snapshot is its base image, which the
        // compactions below then leave out of level 1.
        let window = window_start(now, self.g.snapshot_interval);
        if sched.snapshot.is_none() && snapshot_in_window(remote, window) {
            // A restart within the window of the newest snapshot does not take another.
            sched.snapshot = Some(window);
        }
        if sched.snapshot != Some(window) || remote.needs_snapshot {
            match self.snapshot(remote).await {
                Ok(true) => {
                    sched.snapshot = Some(window);
                    if let Err(e) = self.snapshot_retention(remote).await {
                        failures.push(("snapshot retention".into(), e));
                    }
                }
                Ok(false) => {}
                Err(e) => failures.push(("snapshot".into(), e)),
            }
        }
        sched.compacted.resize(self.g.levels.len(), None);
        for (i, interval) in self.g.levels.clone().into_iter().enumerate() {
            let window = window_start(now, interval);
            if sched.compacted[i] != Some(window) {
                match self.compact_level(remote, i as u8, (i + 1) as u8).await {
                    Ok(()) => sched.compacted[i] = Some(window),
                    Err(e) => failures.push((format!("compaction into level {}", i + 1), e)),
                }
            }
        }
        if sched
            .l0_checked
            .is_none_or(|t| t.elapsed() >= self.g.l0_retention_check_interval)
        {
            sched.l0_checked = Some(Instant::now());
            if let Err(e) = self.l0_retention(remote).await {
                failures.push(("level-0 retention".into(), e));
            }
        }
        // A compaction makes staged files removable (an upload round removes what its
        // uploads made removable itself).
        if self.cleaned_to() != Some(self.removable_to(remote))
            && let Err(e) = self.remove_uploaded(remote).await
        {
            failures.push(("removing uploaded staged files".into(), e));
        }
        self.report_maintenance(failures);
        self.note_chain_start(remote);
    }

    fn report_maintenance(&self, failures: Vec<(String, ReplicateError)>) {
        if failures.is_empty() {
            self.health.clear(Component::Maintenance);
            return;
        }
        self.metrics
            .maintenance_errors
            .with_label_values(&[self.label.as_str()])
            .inc_by(failures.len() as u64);
        let cause = failures[0].1.cause();
        let text: Vec<String> = failures
            .iter()
            .map(|(what, e)| format!("{what}: {e}"))
            .collect();
        self.health.report(
            Component::Maintenance,
            cause,
            &format!("{}; retrying on the next tick", text.join("; ")),
        );
    }

    /// Compacts the files of `src` above `dst`'s newest TXID into one `dst` file.
    async fn compact_level(
        &self,
        remote: &mut RemoteIndex,
        src: u8,
        dst: u8,
    ) -> Result<(), ReplicateError> {
        let inputs = remote.compaction_inputs(src, dst).map_err(|e| {
            // A new snapshot covers the hole: the next tick takes it, then this level
            // continues after it.
            remote.needs_snapshot = true;
            ReplicateError::Replica(e)
        })?;
        if inputs.is_empty() {
            return Ok(());
        }
        let work = self.work_dir().await?;
        let mut paths = Vec::new();
        for (i, f) in inputs.iter().enumerate() {
            match self.local_copy(f, &work, i).await {
                Ok(p) => paths.extend(p),
                Err(e) => {
                    if matches!(&e, ReplicateError::Storage(s) if s.is_not_found()) {
                        // An input is gone from the replica: a check lists it soon and
                        // takes the listing as the index; the hole then gets a snapshot.
                        remote.verify_soon = true;
                    }
                    return Err(e);
                }
            }
        }
        let out = work.join("compacted.ltx");
        let (out2, paths2) = (out.clone(), paths.clone());
        let framing = self.cfg.replica.page_framing;
        let header =
            tokio::task::spawn_blocking(move || compact_files(&paths2, &out2, framing, false))
                .await??;
        let info = self
            .put_file(
                dst,
                header.min_txid,
                header.max_txid,
                &out,
                header.timestamp_ms,
            )
            .await?;
        tracing::info!(db = %self.label, level = dst, txid.min = format!("{:016x}", info.min_txid), txid.max = format!("{:016x}", info.max_txid), size = info.size, "compaction complete");
        remote.add(info);
        let doomed: Vec<PathBuf> = paths
            .into_iter()
            .chain([out])
            .filter(|p| p.starts_with(&work))
            .collect();
        tokio::task::spawn_blocking(move || {
            for p in doomed {
                let _ = std::fs::remove_file(p);
            }
        })
        .await?;
        Ok(())
    }

    /// `<marker dir>/work`, created if needed.
    pub(crate) async fn work_dir(&self) -> Result<PathBuf, ReplicateError> {
        let dir = self.meta.liteship_dir.join("work");
        let d = dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&d)
                .map_err(|e| crate::fsutil::FsError::new("create directory", &d, e))
        })
        .await??;
        Ok(dir)
    }

    /// A level-0 input from the staging directory if it is still there (the staged files
    /// of its TXID range merge into the uploaded object's pages), else downloaded into the
    /// work directory.
    async fn local_copy(
        &self,
        f: &LtxFileInfo,
        work: &std::path::Path,
        i: usize,
    ) -> Result<Vec<PathBuf>, ReplicateError> {
        if f.level == 0 {
            let staged: Vec<PathBuf> = (f.min_txid..=f.max_txid)
                .map(|t| self.meta.l0_path(t))
                .collect();
            let s2 = staged.clone();
            if tokio::task::spawn_blocking(move || s2.iter().all(|p| p.exists())).await? {
                return Ok(staged);
            }
        }
        let path = work.join(format!("input-{i}.ltx"));
        let started = Instant::now();
        let res = crate::replica::read::download_to_file(self.client.clone(), f, &path).await;
        self.record_op("GET", started, Some(f.size), res.as_ref().err());
        res?;
        Ok(vec![path])
    }

    /// Writes a level-9 snapshot when the replica's newest one is behind the position (or
    /// the replica lost its restorable state). `Ok(true)` when the replica holds a snapshot
    /// at the position afterwards.
    async fn snapshot(&self, remote: &mut RemoteIndex) -> Result<bool, ReplicateError> {
        let uploaded = remote.level_max(0);
        if uploaded == 0 || (remote.level_max(SNAPSHOT_LEVEL) >= uploaded && !remote.needs_snapshot)
        {
            return Ok(uploaded > 0);
        }
        if remote.level(SNAPSHOT_LEVEL).is_empty()
            && !remote.needs_snapshot
            && let Some(base) = remote.level(0).first().filter(|f| f.min_txid == 1).cloned()
            && self.copy_base(remote, &base).await
        {
            return Ok(true);
        }
        let path = self.work_dir().await?.join("snapshot.ltx");
        let p2 = path.clone();
        let res = self
            .db()
            .call(move |db| {
                // Only at the uploaded position, so that no level holds a TXID beyond level
                // 0's newest (a reset to the replica position then never reuses a TXID).
                if db.position().map(|p| p.txid) != Some(uploaded) {
                    return Ok(None); // new changes are on their way; snapshot at the next tick
                }
                db.write_snapshot(&p2, crate::timefmt::now_ms()).map(Some)
            })
            .await?;
        let header = match res {
            Ok(Some((h, _))) => h,
            Ok(None) => return Ok(false),
            Err(e) => {
                tracing::debug!(db = %self.label, error = %e, "snapshot postponed");
                return Ok(false);
            }
        };
        let res = self
            .put_file(
                SNAPSHOT_LEVEL,
                1,
                header.max_txid,
                &path,
                header.timestamp_ms,
            )
            .await;
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
        let info = res?;
        tracing::info!(db = %self.label, txid = format!("{:016x}", info.max_txid), size = info.size, "snapshot complete");
        remote.add(info);
        if remote.needs_snapshot {
            remote.needs_snapshot = false;
            remote.verify_soon = true;
        }
        Ok(true)
    }

    /// The first snapshot of a new replica is its level-0 base image `base` (a full image
    /// from TXID 1), copied inside the replica: the base is uploaded once. `false` when the
    /// backend cannot copy (a snapshot is then uploaded as usual).
    async fn copy_base(&self, remote: &mut RemoteIndex, base: &LtxFileInfo) -> bool {
        if self.hold_lease().await.is_err() {
            return false;
        }
        let started = Instant::now();
        let res = self.client.copy(base, SNAPSHOT_LEVEL).await;
        self.record_op("COPY", started, None, res.as_ref().err());
        match res {
            Ok(info) => {
                tracing::info!(db = %self.label, txid = format!("{:016x}", info.max_txid), size = info.size, "snapshot complete (base image copied in the replica)");
                remote.add(info);
                true
            }
            Err(e) => {
                tracing::debug!(db = %self.label, error = %e, "snapshot by copy not possible; uploading one");
                false
            }
        }
    }

    async fn delete(
        &self,
        remote: &mut RemoteIndex,
        level: u8,
        files: Vec<(u64, u64)>,
    ) -> Result<(), ReplicateError> {
        if files.is_empty() || !self.g.retention_enabled {
            return Ok(());
        }
        self.hold_lease().await?;
        let started = Instant::now();
        let res = self.client.delete(level, &files).await;
        self.record_op("DELETE", started, None, res.as_ref().err());
        res?;
        self.metrics
            .replica_operation_total
            .with_label_values(&[self.client.kind(), "DELETE"])
            .inc_by(files.len() as u64 - 1);
        remote.remove(level, &files);
        Ok(())
    }

    /// Deletes level-0 files compacted into level 1 and older than `l0-retention`, oldest
    /// first, stopping at the first one too recent; never the newest level-0 file.
    async fn l0_retention(&self, remote: &mut RemoteIndex) -> Result<(), ReplicateError> {
        if self.g.l0_retention.is_zero() || self.g.levels.is_empty() {
            return Ok(());
        }
        let compacted = remote.level_max(1);
        let cutoff = SystemTime::now() - self.g.l0_retention;
        let l0 = remote.level(0);
        let newest = l0.last().map(|f| f.max_txid);
        let doomed: Vec<(u64, u64)> = l0
            .iter()
            .take_while(|f| {
                f.max_txid <= compacted && f.created_at < cutoff && Some(f.max_txid) != newest
            })
            .map(|f| (f.min_txid, f.max_txid))
            .collect();
        if !doomed.is_empty() {
            tracing::info!(db = %self.label, files = doomed.len(), "l0 retention enforced");
        }
        self.delete(remote, 0, doomed).await
    }

    /// Deletes snapshots older than the retention (never the newest, nor the newest one
    /// from before the cutoff: a restore to any time in the retention window starts from
    /// it), and lower-level files that no plan starting at the oldest kept snapshot's
    /// predecessor can need.
    async fn snapshot_retention(&self, remote: &mut RemoteIndex) -> Result<(), ReplicateError> {
        let cutoff = SystemTime::now() - self.g.snapshot_retention;
        let snaps = remote.level(SNAPSHOT_LEVEL).to_vec();
        let Some(first_kept) = snaps
            .iter()
            .position(|f| f.created_at >= cutoff)
            .map(|i| i.saturating_sub(1))
            .or(snaps.len().checked_sub(1))
        else {
            return Ok(());
        };
        let floor = first_kept.checked_sub(1).map_or(0, |i| snaps[i].max_txid);
        let old: Vec<(u64, u64)> = snaps[..first_kept]
            .iter()
            .map(|f| (f.min_txid, f.max_txid))
            .collect();
        self.delete(remote, SNAPSHOT_LEVEL, old).await?;
        for level in 1..SNAPSHOT_LEVEL {
            let files = remote.level(level);
            let last = files.last().map(|f| (f.min_txid, f.max_txid));
            let doomed: Vec<(u64, u64)> = files
                .iter()
                .filter(|f| f.max_txid < floor && Some((f.min_txid, f.max_txid)) != last)
                .map(|f| (f.min_txid, f.max_txid))
                .collect();
            self.delete(remote, level, doomed).await?;
        }
        Ok(())
    }
}

/// Whether the replica's newest snapshot was taken in the snapshot window starting at
/// `window` (ms since the epoch).
fn snapshot_in_window(remote: &RemoteIndex, window: u64) -> bool {
    remote.level(SNAPSHOT_LEVEL).last().is_some_and(|f| {
        f.created_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .is_ok_and(|d| d.as_millis() as u64 >= window)
    })
}

/// Compacts the LTX files at `inputs` into `out` (fsynced); returns the output header.
/// `level0`: the output is a merged level-0 file that keeps the WAL range.
pub(crate) fn compact_files(
    inputs: &[PathBuf],
    out: &std::path::Path,
    framing: crate::ltx::PageFraming,
    level0: bool,
) -> Result<crate::ltx::Header, ReplicateError> {
    use crate::fsutil::FsError;
    let readers = inputs
        .iter()
        .map(|p| {
            std::fs::File::open(p)
                .map(std::io::BufReader::new)
                .map_err(|e| FsError::new("open", p, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let file = std::fs::File::create(out).map_err(|e| FsError::new("create", out, e))?;
    let merge = if level0 {
        crate::ltx::merge_level0
    } else {
        crate::ltx::compact_framed
    };
    let (w, header, _) =
        merge(readers, std::io::BufWriter::new(file), framing).map_err(|source| {
            ReplicateError::Compact {
                context: format!("compact into {}", out.display()),
                source,
            }
        })?;
    w.into_inner()
        .map_err(|e| FsError::new("write", out, e.into_error()))?
        .sync_all()
        .map_err(|e| FsError::new("fsync", out, e))?;
    Ok(header)
}
