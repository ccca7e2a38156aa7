//! The facts the lineage decision ([`super::lineage`]) is made from, gathered without
//! opening the database: the staged position, the marker, and whether the staged files
//! continue the replica's newest level-0 file (or the replica's lease was last held by
//! this very database file).

use super::error::ReplicateError;
use super::lineage::Facts;
use super::remote::RemoteIndex;
use super::task::{DbReplicator, trailer_of};
use crate::db::{Lineage, preflight};
use crate::ltx::{HEADER_SIZE, Header};
use crate::wal::WAL_HEADER_SIZE;

impl DbReplicator {
    /// What is known locally (without opening the database) and remotely.
    pub(crate) async fn facts(&self, remote: &RemoteIndex) -> Result<Facts, ReplicateError> {
        let (meta, path, location) = (
            self.meta.clone(),
            self.cfg.path.clone(),
            self.client.location(),
        );
        let (local, oldest, marker, other_file) = tokio::task::spawn_blocking(move || {
            let local = meta.newest_header().ok().flatten().map(|h| h.max_txid);
            let oldest = meta.staged().ok().and_then(|s| s.first().copied());
            let lineage = Lineage::load(&meta).filter(|l| l.replica == location);
            // A marker naming another file: a copy of the same database (a migrated disk)
            // still continues the staged position by its bytes; a new database does not.
            // A copy of a restored file that still has the restored bytes (moved or copied
            // before its first replicate) is that restore's state too.
            let same = |l: &Lineage| l.is_file(&path) || l.has_restored_bytes(&path);
            let other_file = lineage.as_ref().is_some_and(|l| !same(l))
                && !preflight::continues_staged(&path, &meta).unwrap_or(false);
            let marker = lineage.filter(|l| same(l)).and_then(|l| l.txid());
            (local, oldest, marker, other_file)
        })
        .await?;
        let continues = match local {
            Some(t) if t >= remote.position() && remote.position() > 0 => {
                self.local_continues(remote).await?
            }
            _ => None,
        };
        let last_holder_was_this_file = self
            .previous_holder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|h| self.lease.same_file(h));
        Ok(Facts {
            local_txid: local,
            local_oldest: oldest,
            local_continues_remote: continues,
            last_holder_was_this_file,
            marker_txid: marker,
            marker_other_file: other_file,
            remote_txid: remote.max_txid(),
            allow_new_history: self.g.allow_new_history,
            auto_recover: self.cfg.replica.auto_recover,
        })
    }

    /// Whether the staged files continue the replica's newest level-0 file `R`: the staged
    /// file `R` has the same file checksum (a merged `R` the same end), or the staged file `R + 1` starts where `R`'s WAL
    /// range ended (or at a WAL restart just after it). `None` when neither file is staged.
    async fn local_continues(&self, remote: &RemoteIndex) -> Result<Option<bool>, ReplicateError> {
        let Some(r) = remote.level(0).last().cloned() else {
            return Ok(None);
        };
        let client = self.client.as_ref();
        let (here, next) = (
            self.meta.l0_path(r.max_txid),
            self.meta.l0_path(r.max_txid + 1),
        );
        if exists(&here).await && r.min_txid == r.max_txid {
            let ours = trailer_of(&here).await?;
            let theirs =
                crate::replica::read::trailer(client, 0, r.min_txid, r.max_txid, r.size).await?;
            return Ok(Some(ours == theirs));
        }
        if exists(&here).await {
            // A merged backlog file (backlog.rs) ends exactly where the staged file R does.
            let (ours, theirs) = (header_of(&here).await?, self.remote_header(&r).await?);
            return Ok(Some(same_end(&ours, &theirs)));
        }
        if !exists(&next).await {
            return Ok(None);
        }
        let ours = header_of(&next).await?;
        let theirs = self.remote_header(&r).await?;
        let same_generation = (ours.wal_salt1, ours.wal_salt2)
            == (theirs.wal_salt1, theirs.wal_salt2)
            && ours.wal_offset == theirs.wal_offset + theirs.wal_size;
        let restarted = ours.wal_offset == WAL_HEADER_SIZE as i64
            && (1..=1000).contains(&ours.wal_salt1.wrapping_sub(theirs.wal_salt1));
        Ok(Some(same_generation || restarted))
    }
}

impl DbReplicator {
    /// Whether the replica still holds the very file a restore of this database ended with
    /// at `txid` (same name, size and stored checksum), so that the restored file is the
    /// replica's state at `txid` and may continue without a full image. Any doubt: `false`.
    pub(crate) async fn restored_file_is_current(&self, remote: &RemoteIndex, txid: u64) -> bool {
        // `decide` gives ContinueFrom only for a marker that `facts` matched to this file
        // (same inode, or the restored bytes): no second pass over the file here;
        // `Db::continue_restored` checks the bytes once more under the pin.
        let meta = self.meta.clone();
        let Ok(Some(f)) = tokio::task::spawn_blocking(move || {
            Lineage::load(&meta)
                .filter(|l| l.txid() == Some(txid))
                .and_then(|l| l.restored_from)
        })
        .await
        else {
            return false;
        };
        let parse = crate::ltx::parse_hex16;
        let (Some(min), Some(max)) = (parse(&f.min_txid), parse(&f.max_txid)) else {
            return false;
        };
        if max != txid
            || !remote
                .level(f.level)
                .iter()
                .any(|r| (r.min_txid, r.max_txid, r.size) == (min, max, f.size))
        {
            return false;
        }
        crate::replica::read::trailer(self.client.as_ref(), f.level, min, max, f.size)
            .await
            .is_ok_and(|t| crate::restore::hex8(&t) == f.checksum)
    }

    /// The header of the replica's level-0 file `r` (one ranged GET).
    async fn remote_header(
        &self,
        r: &crate::replica::LtxFileInfo,
    ) -> Result<Header, ReplicateError> {
        let client = self.client.as_ref();
        let key = || client.key(0, r.min_txid, r.max_txid);
        let mut b = [0u8; HEADER_SIZE];
        let mut rd = client
            .open(0, r.min_txid, r.max_txid, 0, Some(HEADER_SIZE as u64))
            .await?;
        tokio::io::AsyncReadExt::read_exact(&mut rd, &mut b)
            .await
            .map_err(|e| crate::replica::StorageError::read(key(), e))?;
        Header::from_bytes(&b).map_err(|source| ReplicateError::Ltx {
            context: key(),
            source,
        })
    }
}

/// Whether a merged level-0 file `theirs` ends with the staged file `ours`: same last
/// TXID, commit time, size, WAL generation and WAL end.
fn same_end(ours: &Header, theirs: &Header) -> bool {
    let end = |h: &Header| h.wal_offset + h.wal_size;
    (ours.max_txid, ours.timestamp_ms, ours.commit)
        == (theirs.max_txid, theirs.timestamp_ms, theirs.commit)
        && (ours.wal_salt1, ours.wal_salt2) == (theirs.wal_salt1, theirs.wal_salt2)
        && end(ours) == end(theirs)
}

async fn exists(p: &std::path::Path) -> bool {
    tokio::fs::try_exists(p).await.unwrap_or(false)
}

async fn header_of(p: &std::path::Path) -> Result<Header, ReplicateError> {
    use tokio::io::AsyncReadExt;
    let io = |e| crate::fsutil::FsError::new("read", p, e);
    let mut f = tokio::fs::File::open(p).await.map_err(io)?;
    let mut b = [0u8; HEADER_SIZE];
    f.read_exact(&mut b).await.map_err(io)?;
    Header::from_bytes(&b).map_err(|source| ReplicateError::Ltx {
        context: p.display().to_string(),
        source,
    })
}
