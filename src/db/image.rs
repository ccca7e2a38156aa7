//! Writing LTX files from the live database: pages come from the WAL (newest committed
//! frame) or else from the database file. Used for incremental level-0 files, full level-0
//! images and level-9 snapshots.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::sync::SyncError;
use super::{Db, DbError};
use crate::ltx::{Encoder, Header, lock_page};
use crate::wal::FRAME_HEADER_SIZE;

/// An anonymous temporary file beside `tmp` for a full image's page index (unlinked at
/// once: it disappears with the descriptor, even after a crash).
fn index_spill(tmp: &Path) -> Result<File, SyncError> {
    let mut p = tmp.as_os_str().to_owned();
    p.push(".index.tmp"); // a leftover ends in .tmp: removed at start like the others
    let p = std::path::PathBuf::from(p);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .map_err(|e| SyncError::staging("create", &p, e))?;
    std::fs::remove_file(&p).map_err(|e| SyncError::staging("remove", &p, e))?;
    Ok(f)
}

impl Db {
    /// Writes the staged file for `header`'s TXID (see [`Db::write_ltx`]) into a spare
    /// file when there is one (its inode reused, see [`crate::db::Meta::take_spare`]).
    pub(crate) fn write_staged(
        &mut self,
        header: Header,
        wal_pages: &BTreeMap<u32, u64>,
        growth_from: Option<u32>,
    ) -> Result<u64, SyncError> {
        let path = self.meta.l0_path(header.max_txid);
        self.meta.take_spare(&crate::fsutil::tmp_path(&path));
        self.write_ltx(&path, header, wal_pages, growth_from)
    }

    /// Encodes an LTX file with `header` to `path` (temp + fsync + rename + dir fsync;
    /// the temp file is truncated if it exists). `wal_pages` maps page numbers to WAL frame
    /// offsets.
    pub(crate) fn write_ltx(
        &mut self,
        path: &Path,
        header: Header,
        wal_pages: &BTreeMap<u32, u64>,
        growth_from: Option<u32>,
    ) -> Result<u64, SyncError> {
        let tmp = crate::fsutil::tmp_path(path);
        let res = self.encode_to(&tmp, header, wal_pages, growth_from);
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        let size = res?;
        std::fs::rename(&tmp, path).map_err(|e| SyncError::staging("rename", &tmp, e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        crate::fsutil::sync_dir(dir).map_err(|e| SyncError::staging(e.op, dir, e.source))?;
        Ok(size)
    }

    fn encode_to(
        &mut self,
        tmp: &Path,
        header: Header,
        wal_pages: &BTreeMap<u32, u64>,
        growth_from: Option<u32>,
    ) -> Result<u64, SyncError> {
        let file = File::create(tmp).map_err(|e| SyncError::staging("create", tmp, e))?;
        let w = BufWriter::with_capacity(256 * 1024, file);
        let mut enc = Encoder::with_framing(w, header, self.opts.page_framing)?;
        let mut page = vec![0u8; header.page_size as usize];
        let lock = lock_page(header.page_size);
        match growth_from {
            // Incremental: the changed pages, plus growth pages not in the WAL.
            Some(prev_commit) => {
                let growth = (prev_commit + 1..=header.commit)
                    .filter(|p| *p != lock && !wal_pages.contains_key(p));
                let mut all: Vec<u32> = wal_pages.keys().copied().chain(growth).collect();
                all.sort_unstable();
                for pgno in all {
                    self.page(pgno, wal_pages, &mut page)?;
                    enc.write_page(pgno, &page)?;
                }
            }
            None => {
                enc.spill_index_to(Box::new(index_spill(tmp)?));
                for pgno in (1..=header.commit).filter(|p| *p != lock) {
                    self.page(pgno, wal_pages, &mut page)?;
                    enc.write_page(pgno, &page)?;
                }
            }
        }
        let (w, _) = enc.finish()?;
        let file = w
            .into_inner()
            .map_err(|e| SyncError::staging("write", tmp, e.into_error()))?;
        file.sync_all()
            .map_err(|e| SyncError::staging("fsync", tmp, e))?;
        Ok(file
            .metadata()
            .map_err(|e| SyncError::staging("stat", tmp, e))?
            .len())
    }

    /// Page `pgno` as of the synced position: the WAL frame if any, else the database file.
    fn page(
        &mut self,
        pgno: u32,
        wal_pages: &BTreeMap<u32, u64>,
        buf: &mut [u8],
    ) -> Result<(), SyncError> {
        match wal_pages.get(&pgno) {
            Some(off) => {
                let wal_path = self.wal_path.clone();
                let wal = self.wal().ok_or_else(|| {
                    DbError::Invalid(format!("{} disappeared", wal_path.display()))
                })?;
                wal.read_exact_at(buf, off + FRAME_HEADER_SIZE as u64)
                    .map_err(|e| DbError::io("read", &wal_path, e))?;
                Ok(())
            }
            None => Ok(self.read_db_page(pgno, buf)?),
        }
    }

    /// Writes a level-9 snapshot (TXID `1..=pos.txid`) of the synced position to `path`.
    /// The caller syncs first, under the same lock, so the WAL generation is current.
    pub fn write_snapshot(
        &mut self,
        path: &Path,
        timestamp_ms: i64,
    ) -> Result<(Header, u64), SyncError> {
        let pos = self
            .pos
            .ok_or_else(|| DbError::Invalid("no position to snapshot yet".into()))?;
        let wal_pages = self.committed_pages_to(pos)?;
        let header = Header::new(self.page_size, pos.commit, 1, pos.txid, timestamp_ms);
        let size = self.write_ltx(path, header, &wal_pages, None)?;
        Ok((header, size))
    }
}
