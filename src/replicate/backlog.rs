//! A backlog of staged level-0 files (after an outage, or a server that answers slowly)
//! goes up as merged level-0 files, one per upload round, instead of one PUT per file:
//! a 15,000-file backlog is about 120 PUTs, not 15,000 round trips with their stalls.
//!
//! Why one merged file and not concurrent PUTs: a replica must never hold a hole. If
//! `N+2` failed while `N+3` landed and the process then died, Litestream's restore (and
//! ours) would stop at "non-contiguous ltx files" (spec 4.1). One object per round keeps
//! the replica a gap-free prefix at every instant.
//!
//! The merged file covers `min..=max` at level 0 with the newest page versions, the last
//! input's Commit and timestamp, and WAL fields that end where the last input ends. Both
//! tools restore it like any ranged file; only restore points inside the range are lost,
//! as level-1 compaction would drop them a few seconds later anyway. The staged single
//! files stay until level 1 covers them, so compaction merges them locally instead of
//! downloading the upload.
//!
//! Each round uploads the merged file and then the next staged file on its own, so the
//! replica's newest level-0 file is a single TXID after every round: Litestream 0.5.17
//! taking over without local state fetches the newest level-0 file and then looks for it
//! under a `txid-txid` name (spec 3.8), which a merged file does not have ("cannot verify
//! wal state"). Only a crash between the two PUTs leaves a merged newest file; liteship
//! resumes from it (`facts.rs` compares its end with the staged file), and its WAL fields
//! are the ones a successor needs.

use std::path::PathBuf;

use super::error::ReplicateError;
use super::remote::RemoteIndex;
use super::task::DbReplicator;

/// A round with at least this many pending files merges them: the upload loop is then
/// several rounds behind. Fewer are uploaded one by one, as Litestream does, keeping
/// every restore point while the replica keeps up.
pub(crate) const MERGE_FROM: usize = 4;
/// At most this many inputs per merged file: the merge holds one open file and one page
/// buffer per input.
const MERGE_MAX_FILES: usize = 128;
/// At most this many input bytes per merged file, so that one PUT stays short enough to
/// finish under the stall timeout on a slow link, and a failed one costs little.
const MERGE_MAX_BYTES: u64 = 32 << 20;

impl DbReplicator {
    /// Merges a prefix of `run` (consecutive staged TXIDs above the replica position) into
    /// one level-0 file and uploads it. Returns the new replica position.
    pub(crate) async fn upload_merged(
        &self,
        remote: &mut RemoteIndex,
        run: &[u64],
    ) -> Result<u64, ReplicateError> {
        let txids = self.merge_range(run).await?;
        let (min, max) = (txids[0], txids[txids.len() - 1]);
        *self.merge_retry.lock().unwrap_or_else(|e| e.into_inner()) = Some((min, max));
        self.attempted
            .fetch_max(max, std::sync::atomic::Ordering::Relaxed);
        let out = self.work_dir().await?.join("upload-l0.ltx");
        let inputs: Vec<PathBuf> = txids.iter().map(|t| self.meta.l0_path(*t)).collect();
        let (o2, framing) = (out.clone(), self.cfg.replica.page_framing);
        let header = tokio::task::spawn_blocking(move || {
            super::maintain::compact_files(&inputs, &o2, framing, true)
        })
        .await??;
        let res = self.put_file(0, min, max, &out, header.timestamp_ms).await;
        let o2 = out.clone();
        tokio::task::spawn_blocking(move || std::fs::remove_file(o2))
            .await?
            .ok();
        let info = res?;
        *self.merge_retry.lock().unwrap_or_else(|e| e.into_inner()) = None;
        tracing::info!(db = %self.label, txid.min = format!("{min:016x}"), txid.max = format!("{max:016x}"), files = txids.len(), size = info.size, "backlog uploaded as one level-0 file");
        remote.add(info);
        self.health.set_remote_txid(max);
        Ok(max)
    }

    /// The inputs of the next merged file: the range of an earlier attempt whose answer
    /// was lost, if it starts the run, else as many files as the caps allow (at least two).
    async fn merge_range(&self, run: &[u64]) -> Result<Vec<u64>, ReplicateError> {
        let retry = *self.merge_retry.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((a, b)) = retry
            && run.first() == Some(&a)
            && let Some(end) = run.iter().position(|t| *t == b)
        {
            return Ok(run[..=end].to_vec());
        }
        let paths: Vec<PathBuf> = run
            .iter()
            .take(MERGE_MAX_FILES)
            .map(|t| self.meta.l0_path(*t))
            .collect();
        let sizes = tokio::task::spawn_blocking(move || {
            paths
                .iter()
                .map(|p| {
                    std::fs::metadata(p)
                        .map(|m| m.len())
                        .map_err(|e| crate::fsutil::FsError::new("stat", p, e))
                })
                .collect::<Result<Vec<u64>, _>>()
        })
        .await??;
        Ok(run[..take_within(&sizes, MERGE_MAX_BYTES)].to_vec())
    }
}

/// How many of the leading `sizes` fit in `budget` bytes (always at least two).
fn take_within(sizes: &[u64], budget: u64) -> usize {
    let mut total = 0u64;
    let n = sizes
        .iter()
        .take_while(|s| {
            total += **s;
            total <= budget
        })
        .count();
    n.max(2).min(sizes.len())
}

#[cfg(test)]
mod tests {
    use super::take_within;

    #[test]
    fn a_merge_takes_what_fits_and_at_least_two_files() {
        assert_eq!(take_within(&[10, 10, 10, 10], 25), 2);
        assert_eq!(take_within(&[10, 10, 10, 10], 100), 4);
        assert_eq!(take_within(&[100, 100, 10], 50), 2);
        assert_eq!(take_within(&[100], 50), 1);
    }
}
