//! WAL -> staged level-0 files (spec 3.2-3.5), with the continuity rule of this module's
//! parent: incremental only when provable, else a full image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Db, DbError, Pin, Position};
use crate::ltx::{Header, LtxError};
use crate::wal::{FRAME_HEADER_SIZE, WAL_HEADER_SIZE, WalError, WalHeader, WalReader};

/// A level-0 file written to the meta directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub txid: u64,
    pub path: PathBuf,
    pub size: u64,
    pub timestamp_ms: i64,
    pub commit: u32,
    /// Why the file is a full image, if it is one.
    pub full: Option<&'static str>,
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("read wal: {0}")]
    Wal(#[from] WalError),
    #[error("encode ltx: {0}")]
    Ltx(#[from] LtxError),
    /// Writing the staging file failed; `disk_full` for ENOSPC/EDQUOT.
    #[error("stage level-0 file: {op} {path}: {source}")]
    Staging {
        op: &'static str,
        path: String,
        disk_full: bool,
        #[source]
        source: std::io::Error,
    },
}

impl SyncError {
    pub(crate) fn staging(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        let disk_full = matches!(
            source.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT)
        );
        SyncError::Staging {
            op,
            path: path.display().to_string(),
            disk_full,
            source,
        }
    }

    pub fn is_disk_full(&self) -> bool {
        match self {
            SyncError::Staging { disk_full, .. } => *disk_full,
            SyncError::Ltx(LtxError::Io { source, .. }) => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::EDQUOT)
                )
            }
            _ => false,
        }
    }
}

enum Mode {
    Idle,
    Incremental { from: u64, salts: (u32, u32) },
    Full(&'static str),
}

impl Db {
    /// Turns every newly committed WAL frame into staged level-0 files (several when
    /// `max_sync_wal_bytes` splits a backlog) and returns them.
    pub fn sync(&mut self) -> Result<Vec<Staged>, SyncError> {
        self.check_identity()?;
        if self.ensure_staging()? {
            tracing::error!(db = %self.path.display(), dir = %self.meta.l0_dir.display(), "the staging directory was removed while replicating; recreated it (staged changes not yet uploaded are taken again in a full level-0 image)");
        }
        let mut out = Vec::new();
        while let Some(s) = self.sync_once()? {
            let again = s.full.is_some() || self.last_read_limited;
            out.push(s);
            if !again {
                break;
            }
        }
        self.synced_since_checkpoint |= !out.is_empty();
        Ok(out)
    }

    fn sync_once(&mut self) -> Result<Option<Staged>, SyncError> {
        self.begin_pin()?;
        self.last_read_limited = false;
        match self.decide()? {
            Mode::Idle => Ok(None),
            Mode::Incremental { from, salts } => self.write_incremental(from, salts),
            Mode::Full(reason) => self.write_full(reason),
        }
    }

    /// Why the next level-0 file will be a full image although a position exists and no
    /// reset asked for one (the WAL was reset or rewritten where liteship could not follow).
    pub fn unexplained_full_image(&mut self) -> Option<&'static str> {
        if self.pos.is_none() || self.needs_full.is_some() {
            return None;
        }
        match self.decide() {
            Ok(Mode::Full(reason)) => Some(reason),
            _ => None,
        }
    }

    pub(crate) fn wal_header(&mut self) -> Option<WalHeader> {
        let wal = self.wal()?;
        let mut b = [0u8; WAL_HEADER_SIZE];
        std::os::unix::fs::FileExt::read_exact_at(wal, &mut b, 0).ok()?;
        WalHeader::parse(&b).ok()
    }

    fn decide(&mut self) -> Result<Mode, SyncError> {
        if let Some(reason) = self.needs_full {
            return Ok(Mode::Full(reason));
        }
        let Some(pos) = self.pos else {
            return Ok(Mode::Full("no local position"));
        };
        if pos.wal_end < WAL_HEADER_SIZE as u64 {
            return Ok(Mode::Full("the last level-0 file has no WAL position"));
        }
        let salts = (pos.salt1, pos.salt2);
        let proven = matches!(self.pin, Pin::AtEnd { salts: s, wal_end } if s == salts && wal_end == pos.wal_end);
        let Some(h) = self.wal_header() else {
            // No WAL header: nothing new can have committed while we were proven at the end.
            let empty_since_image = salts == (0, 0) && pos.wal_end == WAL_HEADER_SIZE as u64;
            return Ok(if proven || empty_since_image {
                Mode::Idle
            } else {
                Mode::Full("wal missing or reset")
            });
        };
        let now = (h.salt1, h.salt2);
        if now == salts {
            if self.wal_len() < pos.wal_end {
                return Ok(Mode::Full("wal is shorter than the synced offset"));
            }
            return Ok(Mode::Incremental {
                from: pos.wal_end,
                salts,
            });
        }
        // A new generation. Continuous only if our pin was proven at the old one's end (a
        // restart is then the only thing that can have happened), or the WAL was empty.
        let plausible = salts == (0, 0) || (1..=1000).contains(&h.salt1.wrapping_sub(salts.0));
        if proven && plausible {
            return Ok(Mode::Incremental {
                from: WAL_HEADER_SIZE as u64,
                salts: now,
            });
        }
        Ok(Mode::Full(
            "wal restarted while continuity could not be proven",
        ))
    }

    fn write_incremental(
        &mut self,
        from: u64,
        salts: (u32, u32),
    ) -> Result<Option<Staged>, SyncError> {
        let pos = self.pos.expect("incremental needs a position");
        let max = self.opts.max_sync_wal_bytes;
        let (known, page_size) = (self.last_frame, self.page_size);
        // The staged file is only needed when the frame's checksum is not known (after a
        // restart): no path is built on the idle path, which runs every monitor tick.
        let staged = match known {
            Some((end, _)) if end == from => None,
            _ => Some(self.meta.l0_path(pos.txid)),
        };
        let batch = {
            let Some(wal) = self.wal() else {
                return Ok(None);
            };
            let mut r = match WalReader::resume(wal, from, salts.0, salts.1) {
                Ok(r) => r,
                Err(
                    WalError::SaltMismatch { .. }
                    | WalError::BeyondEnd { .. }
                    | WalError::Misaligned { .. },
                ) => {
                    return self.write_full("wal overwritten by another process");
                }
                Err(e) => return Err(e.into()),
            };
            let seed = r.checksum();
            if !last_frame_intact(wal, from, seed, known, staged.as_deref(), page_size) {
                return self.write_full("wal overwritten by another process");
            }
            r.read_committed(max)?
        };
        // Verified at `from`; after a non-empty read, at its end.
        self.last_frame = Some((batch.end_offset, batch.end_checksum));
        self.last_read_limited = max > 0 && batch.end_offset - batch.start_offset >= max;
        if batch.is_empty() {
            if !self.last_read_limited {
                self.pin = Pin::AtEnd {
                    salts,
                    wal_end: batch.end_offset,
                };
            }
            if from != pos.wal_end {
                // A restart with nothing committed yet: remember the new generation.
                self.pos = Some(Position {
                    wal_end: from,
                    salt1: salts.0,
                    salt2: salts.1,
                    ..pos
                });
                self.pin = Pin::AtEnd {
                    salts,
                    wal_end: from,
                };
            }
            return Ok(None);
        }
        let txid = pos.txid + 1;
        let ts = crate::timefmt::now_ms();
        let mut header = Header::new(self.page_size, batch.commit, txid, txid, ts);
        header.wal_offset = from as i64;
        header.wal_size = (batch.end_offset - from) as i64;
        (header.wal_salt1, header.wal_salt2) = salts;
        let size = self.write_staged(header, &batch.pages, Some(pos.commit))?;
        self.pos = Some(Position {
            txid,
            wal_end: batch.end_offset,
            salt1: salts.0,
            salt2: salts.1,
            commit: batch.commit,
            page_size: self.page_size,
        });
        if !self.last_read_limited {
            self.pin = Pin::AtEnd {
                salts,
                wal_end: batch.end_offset,
            };
        }
        Ok(Some(Staged {
            txid,
            path: self.meta.l0_path(txid),
            size,
            timestamp_ms: ts,
            commit: batch.commit,
            full: None,
        }))
    }

    /// Committed WAL pages of the current generation up to the synced position.
    pub(crate) fn committed_pages_to(
        &mut self,
        pos: Position,
    ) -> Result<BTreeMap<u32, u64>, SyncError> {
        let salts = (pos.salt1, pos.salt2);
        let hdr = self.wal_header();
        match hdr {
            Some(h) if (h.salt1, h.salt2) == salts => {
                let wal = self.wal().expect("header was read");
                let mut r = WalReader::open(wal)?;
                Ok(r.read_committed_to(0, pos.wal_end)?.pages)
            }
            None if salts == (0, 0) => Ok(BTreeMap::new()),
            _ => Err(DbError::Invalid(
                "the WAL changed since the last sync; retry after the next sync".into(),
            )
            .into()),
        }
    }

    /// A full image of the database as of the end of the committed WAL frames.
    fn write_full(&mut self, reason: &'static str) -> Result<Option<Staged>, SyncError> {
        let (pages, end, salts, commit) = match self.wal_header() {
            Some(h) => {
                let wal = self.wal().expect("header was read");
                let batch = WalReader::open(wal)?.read_committed(0)?;
                let commit = if batch.is_empty() {
                    self.db_pages()?
                } else {
                    batch.commit
                };
                self.last_frame = Some((batch.end_offset, batch.end_checksum));
                (batch.pages, batch.end_offset, (h.salt1, h.salt2), commit)
            }
            None => (
                BTreeMap::new(),
                WAL_HEADER_SIZE as u64,
                (0, 0),
                self.db_pages()?,
            ),
        };
        if commit == 0 {
            return Ok(None); // an empty database file: nothing to replicate yet
        }
        let txid = self.pos.map_or(1, |p| p.txid + 1);
        let ts = crate::timefmt::now_ms();
        let mut header = Header::new(self.page_size, commit, txid, txid, ts);
        header.wal_offset = WAL_HEADER_SIZE as i64;
        header.wal_size = (end - WAL_HEADER_SIZE as u64) as i64;
        (header.wal_salt1, header.wal_salt2) = salts;
        let size = self.write_staged(header, &pages, None)?;
        self.pos = Some(Position {
            txid,
            wal_end: end,
            salt1: salts.0,
            salt2: salts.1,
            commit,
            page_size: self.page_size,
        });
        self.needs_full = None;
        self.pin = Pin::AtEnd {
            salts,
            wal_end: end,
        };
        tracing::info!(db = %self.path.display(), txid = format!("{txid:016x}"), reason, size, "wrote full level-0 image");
        Ok(Some(Staged {
            txid,
            path: self.meta.l0_path(txid),
            size,
            timestamp_ms: ts,
            commit,
            full: Some(reason),
        }))
    }
}

/// Whether the frame that ends at `from` (the last one synced) is still the one that was
/// read there (spec 3.5, step 5). A writer killed after writing a commit frame but before
/// publishing it in the wal-index leaves a transaction that SQLite never acknowledged and
/// later overwrites with other frames; resuming after it would seed the checksum from the
/// new frames and ship the rest on top of pages that never existed. Known in memory, the
/// frame's stored checksum is compared; after a restart, its page is compared with the
/// same page in the newest staged file (`staged`), as Litestream does. Anything that
/// cannot be checked counts as overwritten (a full image is always safe).
fn last_frame_intact(
    wal: &std::fs::File,
    from: u64,
    seed: (u32, u32),
    known: Option<(u64, (u32, u32))>,
    staged: Option<&std::path::Path>,
    page_size: u32,
) -> bool {
    if from <= WAL_HEADER_SIZE as u64 {
        return true; // nothing before: the salts were checked against the header
    }
    if let Some((end, checksum)) = known
        && end == from
    {
        return checksum == seed;
    }
    let Some(staged) = staged else {
        return false;
    };
    let frame_size = FRAME_HEADER_SIZE as u64 + u64::from(page_size);
    let mut frame = vec![0u8; frame_size as usize];
    if std::os::unix::fs::FileExt::read_exact_at(wal, &mut frame, from - frame_size).is_err() {
        return false;
    }
    let pgno = u32::from_be_bytes(frame[0..4].try_into().expect("4 bytes"));
    staged_page_equals(staged, pgno, &frame[FRAME_HEADER_SIZE..]).unwrap_or(false)
}

/// Whether the staged LTX file at `path` holds page `pgno` with exactly `want` (streamed:
/// one page in memory, whatever the file's size); `None` when it cannot be read.
fn staged_page_equals(path: &std::path::Path, pgno: u32, want: &[u8]) -> Option<bool> {
    let f = std::fs::File::open(path).ok()?;
    let mut dec = crate::ltx::Decoder::new(std::io::BufReader::new(f)).ok()?;
    let mut page = vec![0u8; want.len()];
    while let Some(p) = dec.next_page(&mut page).ok()? {
        if p == pgno {
            return Some(page == want);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;
    use std::time::Duration;

    fn opts() -> crate::db::DbOptions {
        crate::db::DbOptions {
            busy_timeout: Duration::from_secs(1),
            min_checkpoint_page_count: 1_000_000,
            truncate_page_n: 0,
            checkpoint_interval: Duration::ZERO,
            max_sync_wal_bytes: 0,
            page_framing: Default::default(),
        }
    }

    fn writer(path: &Path) -> Connection {
        let c = Connection::open(path).unwrap();
        c.execute_batch("PRAGMA journal_mode=wal; PRAGMA wal_autocheckpoint=0;")
            .unwrap();
        c
    }

    /// A writer killed after writing a commit frame but before publishing it in the
    /// wal-index leaves a transaction SQLite never acknowledged; the next writer writes
    /// other frames over it (same salts, a valid checksum chain). The synced frame is no
    /// longer there: the next sync must write a full image, in memory (same process) and
    /// after a restart (compared with the staged file). Found by the writer_kills soak: the
    /// replica silently kept the phantom transaction's pages.
    #[test]
    fn overwritten_last_frame_forces_a_full_image() {
        for restart in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("app.db");
            let wal = dir.path().join("app.db-wal");
            let w = writer(&db);
            w.execute_batch("CREATE TABLE t(x TEXT); INSERT INTO t VALUES ('one');")
                .unwrap();
            let mut d = Db::open(&db, None, opts()).unwrap();
            d.sync().unwrap();
            let (base_db, base_wal) = (std::fs::read(&db).unwrap(), std::fs::read(&wal).unwrap());
            // The transaction that gets shipped and then overwritten.
            w.execute("UPDATE t SET x = 'phantom'", []).unwrap();
            let staged = d.sync().unwrap();
            assert!(staged.len() == 1 && staged[0].full.is_none(), "{staged:?}");
            // The same transaction slot, written by another writer with other content.
            let scratch = dir.path().join("scratch");
            std::fs::create_dir(&scratch).unwrap();
            std::fs::write(scratch.join("app.db"), &base_db).unwrap();
            std::fs::write(scratch.join("app.db-wal"), &base_wal).unwrap();
            let other = Connection::open(scratch.join("app.db")).unwrap();
            other
                .execute("UPDATE t SET x = 'the real one'", [])
                .unwrap();
            let replaced = std::fs::read(scratch.join("app.db-wal")).unwrap();
            let wal_now = std::fs::read(&wal).unwrap();
            assert_eq!(replaced.len(), wal_now.len(), "same frame count");
            assert_ne!(replaced, wal_now);
            std::fs::write(&wal, &replaced).unwrap();
            if restart {
                drop(d);
                d = Db::open(&db, None, opts()).unwrap();
            }
            let staged = d.sync().unwrap();
            assert!(
                staged
                    .iter()
                    .any(|s| s.full == Some("wal overwritten by another process")),
                "restart {restart}: {staged:?}"
            );
            drop(other);
        }
    }

    /// Uploaded staged files are kept as spares and written again (same inode, truncated,
    /// so the new file verifies); large ones are deleted; a restart removes spares.
    #[test]
    fn retired_staged_files_are_reused_in_place() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let w = writer(&db);
        w.execute_batch("CREATE TABLE t(x BLOB)").unwrap();
        let mut d = Db::open(&db, None, opts()).unwrap();
        d.sync().unwrap();
        // TXID 2 is large but under the spare limit, TXID 3 over it.
        for bytes in [60_000, 400_000, 10] {
            w.execute("INSERT INTO t VALUES (randomblob(?1))", [bytes])
                .unwrap();
            d.sync().unwrap();
        }
        w.execute("INSERT INTO t VALUES (1)", []).unwrap();
        d.sync().unwrap();
        let meta = d.meta().clone();
        let sizes = meta.staged_sizes().unwrap();
        assert_eq!(
            sizes.iter().map(|s| s.0).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert!(sizes[2].1 > crate::db::meta::SPARE_MAX_BYTES, "{sizes:?}");
        let ino2 = std::fs::metadata(meta.l0_path(2)).unwrap().ino();
        let size2 = sizes[1].1;
        meta.retire(&sizes[1..3]).unwrap();
        assert_eq!(meta.staged().unwrap(), [1, 4, 5]);
        let spares: Vec<_> = std::fs::read_dir(&meta.l0_dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().starts_with("spare-"))
            .collect();
        assert_eq!(spares.len(), 1, "only the small file is kept");
        assert_eq!(spares[0].metadata().unwrap().ino(), ino2);

        w.execute("INSERT INTO t VALUES (2)", []).unwrap();
        let staged = d.sync().unwrap();
        assert_eq!(staged.len(), 1);
        let md = std::fs::metadata(&staged[0].path).unwrap();
        assert_eq!(md.ino(), ino2, "written into the spare");
        assert!(md.len() < size2 && md.len() == staged[0].size, "truncated");
        assert_eq!(meta.newest_header().unwrap().unwrap().max_txid, 6);
        assert!(!spares[0].path().exists());

        // A crash leaves spares (here: a copy made while they exist); the next start removes
        // them. A clean exit removes them itself.
        meta.retire(&[(4, 100)]).unwrap();
        let names = |d: &Path| -> Vec<String> {
            std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        let crashed = dir.path().join("crashed");
        std::fs::create_dir(&crashed).unwrap();
        for n in ["app.db", "app.db-wal"] {
            std::fs::copy(dir.path().join(n), crashed.join(n)).unwrap();
        }
        let l0 = crashed.join(".app.db-litestream/ltx/0");
        std::fs::create_dir_all(&l0).unwrap();
        for n in names(&meta.l0_dir) {
            std::fs::copy(meta.l0_dir.join(&n), l0.join(&n)).unwrap();
        }
        assert!(names(&l0).iter().any(|n| n.starts_with("spare-")));
        drop(Db::open(&crashed.join("app.db"), None, opts()).unwrap());
        assert!(
            names(&l0).iter().all(|n| !n.ends_with(".tmp")),
            "{:?}",
            names(&l0)
        );
        drop((d, meta));
        let left = names(&dir.path().join(".app.db-litestream/ltx/0"));
        assert!(left.iter().all(|n| !n.ends_with(".tmp")), "{left:?}");
    }
}
