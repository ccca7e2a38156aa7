//! Compaction into levels 1..n on wall-clock windows, level-9 snapshots, and retention that
//! always keeps a restorable chain and the newest level-0 file (spec 2.2, 2.3). Everything
//! is decided from the in-memory [`RemoteIndex`]: when nothing changed, no request is sent.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use super::remote::RemoteIndex;
use super::task::{DbReplicator, window_start};
use crate::replica::{LtxFileInfo, SNAPSHOT_LEVEL};

/// When each periodic job last ran (window starts in ms since the epoch).
#[derive(Debug, Default)]
pub struct Schedule {
    compacted: Vec<Option<u64>>,
    snapshot: Option<u64>,
    l0_checked: Option<Instant>,
}

impl DbReplicator {
    pub(crate) async fn maintain(
        &self,
        remote: &mut RemoteIndex,
        sched: &mut Schedule,
    ) -> anyhow::Result<()> {
        // Every job runs even when an earlier one failed (a compaction that keeps failing
        // must not stop snapshots); all failures are returned together. A failed job keeps
        // its schedule, so it runs again on the next tick.
        let mut failed: Vec<String> = Vec::new();
        let mut note = |res: anyhow::Result<()>, what: &str| {
            res.map_err(|e| failed.push(format!("{what}: {e:#}")))
                .is_ok()
        };
        let now = SystemTime::now();
        sched.compacted.resize(self.g.levels.len(), None);
        for (i, interval) in self.g.levels.clone().into_iter().enumerate() {
            let window = window_start(now, interval);
            if sched.compacted[i] != Some(window) {
                let res = self.compact_level(remote, i as u8, (i + 1) as u8).await;
                if note(res, &format!("compaction into level {}", i + 1)) {
                    sched.compacted[i] = Some(window);
                }
            }
        }
        let window = window_start(now, self.g.snapshot_interval);
        if sched.snapshot != Some(window) {
            match self.snapshot(remote).await {
                Ok(true) => {
                    sched.snapshot = Some(window);
                    note(self.snapshot_retention(remote).await, "snapshot retention");
                }
                Ok(false) => {}
                Err(e) => {
                    note(Err(e), "snapshot");
                }
            }
        }
        if sched
            .l0_checked
            .is_none_or(|t| t.elapsed() >= self.g.l0_retention_check_interval)
        {
            sched.l0_checked = Some(Instant::now());
            note(self.l0_retention(remote).await, "level-0 retention");
        }
        self.remove_uploaded(remote);
        if failed.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(failed.join("; ")))
        }
    }

    /// Compacts the files of `src` above `dst`'s newest TXID into one `dst` file.
    async fn compact_level(
        &self,
        remote: &mut RemoteIndex,
        src: u8,
        dst: u8,
    ) -> anyhow::Result<()> {
        let floor = remote.level_max(dst);
        let inputs: Vec<LtxFileInfo> = remote
            .level(src)
            .iter()
            .filter(|f| f.min_txid > floor)
            .cloned()
            .collect();
        if inputs.is_empty() {
            return Ok(());
        }
        if floor > 0 && inputs[0].min_txid != floor + 1 {
            anyhow::bail!(
                "cannot compact level {src} into {dst}: level {dst} ends at {floor:016x} but level {src} continues at {:016x}",
                inputs[0].min_txid
            );
        }
        let work = self.work_dir()?;
        let mut paths = Vec::new();
        for (i, f) in inputs.iter().enumerate() {
            paths.push(self.local_copy(f, &work, i).await?);
        }
        let out = work.join("compacted.ltx");
        let out2 = out.clone();
        let paths2 = paths.clone();
        let header = tokio::task::spawn_blocking(move || -> anyhow::Result<crate::ltx::Header> {
            let readers = paths2
                .iter()
                .map(|p| std::fs::File::open(p).map(std::io::BufReader::new))
                .collect::<Result<Vec<_>, _>>()?;
            let w = std::io::BufWriter::new(std::fs::File::create(&out2)?);
            let (w, header, _) = crate::ltx::compact(readers, w)?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            Ok(header)
        })
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
        for p in paths.iter().chain([&out]) {
            if p.starts_with(&work) {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok(())
    }

    fn work_dir(&self) -> anyhow::Result<PathBuf> {
        let dir = self
            .db()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .meta
            .liteship_dir
            .join("work");
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// A level-0 input from the staging directory if it is still there (it is identical
    /// to the uploaded object), else downloaded into the work directory.
    async fn local_copy(
        &self,
        f: &LtxFileInfo,
        work: &std::path::Path,
        i: usize,
    ) -> anyhow::Result<PathBuf> {
        if f.level == 0 {
            let staged = self
                .db()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .meta
                .l0_path(f.min_txid);
            if staged.exists() {
                return Ok(staged);
            }
        }
        let path = work.join(format!("input-{i}.ltx"));
        let started = Instant::now();
        let res = crate::restore::fetch::download_to_file(self.client.clone(), f, &path).await;
        self.record_op("GET", started, Some(f.size), res.as_ref().err());
        res?;
        Ok(path)
    }

    /// Writes a level-9 snapshot when the replica's newest one is behind the position.
    /// `Ok(true)` when the replica holds a snapshot at the position afterwards.
    async fn snapshot(&self, remote: &mut RemoteIndex) -> anyhow::Result<bool> {
        let uploaded = remote.level_max(0);
        if uploaded == 0 || remote.level_max(SNAPSHOT_LEVEL) >= uploaded {
            return Ok(uploaded > 0);
        }
        let work = self.work_dir()?;
        let path = work.join("snapshot.ltx");
        let db = self.db();
        let p2 = path.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
            if db.pos.map(|p| p.txid) != Some(uploaded) {
                return Ok(None); // new changes are on their way; snapshot at the next tick
            }
            db.write_snapshot(&p2, crate::timefmt::now_ms()).map(Some)
        })
        .await?;
        let Some((header, _)) = (match res {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(db = %self.label, error = %e, "snapshot postponed");
                None
            }
        }) else {
            return Ok(false);
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
        let _ = std::fs::remove_file(&path);
        let info = res?;
        tracing::info!(db = %self.label, txid = format!("{:016x}", info.max_txid), size = info.size, "snapshot complete");
        remote.add(info);
        Ok(true)
    }

    async fn delete(
        &self,
        remote: &mut RemoteIndex,
        level: u8,
        files: Vec<(u64, u64)>,
    ) -> anyhow::Result<()> {
        if files.is_empty() || !self.g.retention_enabled {
            return Ok(());
        }
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
    async fn l0_retention(&self, remote: &mut RemoteIndex) -> anyhow::Result<()> {
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

    /// Deletes snapshots older than the retention (never the newest), and lower-level files
    /// that no plan starting at the oldest kept snapshot's predecessor can need.
    async fn snapshot_retention(&self, remote: &mut RemoteIndex) -> anyhow::Result<()> {
        let cutoff = SystemTime::now() - self.g.snapshot_retention;
        let snaps = remote.level(SNAPSHOT_LEVEL).to_vec();
        let Some(first_kept) = snaps
            .iter()
            .position(|f| f.created_at >= cutoff)
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
