//! Applies a plan's files to the temporary output file (blocking; run it on a blocking
//! thread), **newest file first**: each page is written once, by the newest file that holds
//! it, so a plan of a snapshot and many level-0 files costs one write per page instead of
//! one per page version. A [`Merge`] keeps one bit per page (written yet?) and the smallest
//! Commit of the files applied so far: a page above it was cut off by a later shrink.
//!
//! Checked before the output may appear (spec 4.2 and more):
//! - the chain, from the names: TXID 1 first, then `next.min <= prev.max + 1 && next.max >
//!   prev.max`; every file's header TXIDs equal to its name, one page size throughout;
//! - every file's checksum, over every byte (superseded pages are decoded and verified too);
//! - pages ascend, never exceed their file's Commit, never are the lock page; a snapshot
//!   holds every page in order;
//! - coverage: every page 1..=Commit but the lock page was written by a file that no later
//!   shrink cut off (a missing growth page is an error, not stale data).
//!
//! The result equals applying the files oldest first (as Litestream does): the newest
//! eligible version of every page wins either way (`apply_tests.rs` checks this).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use tokio::sync::mpsc;

use super::RestoreError;
use crate::ltx::{Decoder, Header, LtxError, lock_page};
use crate::replica::read::ChunkResult;
use crate::replica::{LtxFileInfo, StorageError};

/// What was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub page_size: u32,
    pub commit: u32,
    pub txid: u64,
    pub pages_written: u64,
    /// The stored file checksum of the newest file, when it was read in the ordered stream
    /// (a lone snapshot decoded in parallel ranges leaves it unknown).
    pub newest_checksum: Option<u64>,
}

/// Progress callback: (files done, bytes consumed).
pub type Progress<'a> = &'a mut dyn FnMut(usize, u64);

/// Checks that `files` (plan order) form a chain from TXID 1, from their names; each
/// file's header is later checked against its name.
pub fn check_chain(files: &[LtxFileInfo], keys: &[String]) -> Result<(), RestoreError> {
    let mut prev_max = 0;
    for (i, f) in files.iter().enumerate() {
        let reason = if i == 0 && f.min_txid != 1 {
            "the first file of a restore must be a snapshot (txid 1)".to_string()
        } else if i > 0 && !(f.min_txid <= prev_max + 1 && f.max_txid > prev_max) {
            format!("non-contiguous transaction ids: previous file ends at {prev_max:016x}")
        } else {
            prev_max = f.max_txid;
            continue;
        };
        return Err(RestoreError::Corrupt {
            key: keys[i].clone(),
            reason,
        });
    }
    Ok(())
}

/// Applies `files` in the order given (newest first; their chunks arrive on `rx` in that
/// order) to `out`, recording what was written in `merge`.
pub fn apply_newest_first(
    merge: &mut Merge,
    files: &[LtxFileInfo],
    keys: &[String],
    rx: &mut mpsc::Receiver<ChunkResult>,
    out: &File,
    progress: Progress<'_>,
) -> Result<(), RestoreError> {
    let mut consumed = 0u64;
    for (i, info) in files.iter().enumerate() {
        let mut reader = ChunkReader {
            rx,
            file: i,
            remaining: info.size,
            cur: bytes::Bytes::new(),
            failure: None,
        };
        let res = apply_file(merge, info, &mut reader, out);
        if let Some(e) = reader.failure.take() {
            return Err(RestoreError::Storage(e));
        }
        res.map_err(|e| merge.sized(e.at(&keys[i])))?;
        if reader.remaining != 0 {
            return Err(RestoreError::Corrupt {
                key: keys[i].clone(),
                reason: "data follows the trailer".into(),
            });
        }
        consumed += info.size;
        progress(i + 1, consumed);
    }
    Ok(())
}

/// The merge state of a newest-first restore.
#[derive(Debug, Clone)]
pub struct Merge {
    page_size: u32,
    /// The newest file's Commit and max TXID: the restored database's.
    newest: Option<(u32, u64)>,
    /// The smallest Commit of the files applied so far.
    limit: u32,
    pages_written: u64,
    /// One bit per page: written (by the newest eligible version).
    written: Vec<u64>,
    /// The first (newest) file's stored file checksum.
    newest_checksum: Option<u64>,
}

impl Default for Merge {
    fn default() -> Self {
        Merge {
            page_size: 0,
            newest: None,
            limit: u32::MAX,
            pages_written: 0,
            written: Vec::new(),
            newest_checksum: None,
        }
    }
}

/// An error inside one file, before the key is attached.
pub enum FileError {
    Ltx(LtxError),
    Invalid(String),
    /// Writing to the output failed: a local problem, not the replica's.
    Write(std::io::Error),
}

impl FileError {
    fn at(self, key: &str) -> RestoreError {
        match self {
            FileError::Ltx(e) => RestoreError::Corrupt {
                key: key.into(),
                reason: e.to_string(),
            },
            FileError::Invalid(reason) => RestoreError::Corrupt {
                key: key.into(),
                reason,
            },
            FileError::Write(source) => RestoreError::Write {
                path: "the restore's temporary file".into(),
                db_bytes: None,
                source,
            },
        }
    }
}

/// A page that no file may hold: the lock page, or one above the file's Commit.
fn invalid_page(h: &Header, pgno: u32) -> Option<String> {
    let lock = lock_page(h.page_size);
    (pgno > h.commit || pgno == lock).then(|| {
        format!(
            "page {pgno} is {} (commit {})",
            if pgno == lock {
                "the lock page"
            } else {
                "beyond the file's commit"
            },
            h.commit
        )
    })
}

fn apply_file<R: Read>(
    merge: &mut Merge,
    info: &LtxFileInfo,
    r: R,
    out: &File,
) -> Result<(), FileError> {
    let mut dec = Decoder::new(r).map_err(FileError::Ltx)?;
    let h = *dec.header();
    merge.begin_file(info, &h).map_err(FileError::Invalid)?;
    let lock = lock_page(h.page_size);
    let mut page = vec![0u8; h.page_size as usize];
    let mut writer = PageWriter::new(h.page_size);
    let mut expect_next = 1u32;
    while let Some(pgno) = dec.next_page(&mut page).map_err(FileError::Ltx)? {
        if let Some(reason) = invalid_page(&h, pgno) {
            return Err(FileError::Invalid(reason));
        }
        if h.is_snapshot() {
            if pgno != expect_next {
                return Err(FileError::Invalid(format!(
                    "snapshot is missing page {expect_next} (next page is {pgno})"
                )));
            }
            expect_next = if pgno + 1 == lock { pgno + 2 } else { pgno + 1 };
        }
        if merge.claim(pgno) {
            writer.put(out, pgno, &page).map_err(FileError::Write)?;
        }
    }
    writer.flush(out).map_err(FileError::Write)?;
    if h.is_snapshot() && expect_next <= h.commit {
        return Err(FileError::Invalid(format!(
            "snapshot is missing page {expect_next}"
        )));
    }
    let trailer = dec.finish().map_err(FileError::Ltx)?;
    merge.newest_checksum.get_or_insert(trailer.file_checksum);
    merge.end_file(&h);
    Ok(())
}

impl Merge {
    /// Adds the restored database's size (known from the newest file) to a write error.
    pub fn sized(&self, e: RestoreError) -> RestoreError {
        match e {
            RestoreError::Write {
                path,
                db_bytes: None,
                source,
            } => RestoreError::Write {
                path,
                db_bytes: self
                    .newest
                    .map(|(commit, _)| u64::from(commit) * u64::from(self.page_size)),
                source,
            },
            other => other,
        }
    }

    /// Checks a file's header against its name and the page size of the others.
    pub fn begin_file(&mut self, info: &LtxFileInfo, h: &Header) -> Result<(), String> {
        if (h.min_txid, h.max_txid) != (info.min_txid, info.max_txid) {
            return Err(format!(
                "header txids {:016x}-{:016x} differ from the file name",
                h.min_txid, h.max_txid
            ));
        }
        if self.page_size == 0 {
            self.page_size = h.page_size;
        } else if h.page_size != self.page_size {
            return Err(format!(
                "page size {} differs from the restore's {}",
                h.page_size, self.page_size
            ));
        }
        self.newest.get_or_insert((h.commit, h.max_txid));
        Ok(())
    }

    /// Whether page `pgno` of the current file is the version to write (no newer file
    /// wrote it, and no newer file cut the database below it); marks it written.
    fn claim(&mut self, pgno: u32) -> bool {
        if self.skips(pgno) {
            return false;
        }
        let i = (pgno - 1) as usize;
        if self.written.len() <= i / 64 {
            self.written.resize(i / 64 + 1, 0);
        }
        self.written[i / 64] |= 1 << (i % 64);
        self.pages_written += 1;
        true
    }

    /// Whether page `pgno` is already written, or cut off by a newer file: a snapshot
    /// decoded in parallel after the other files skips it.
    pub fn skips(&self, pgno: u32) -> bool {
        pgno > self.limit || self.is_written(pgno)
    }

    fn is_written(&self, pgno: u32) -> bool {
        let i = (pgno - 1) as usize;
        self.written
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// After a file: older files may not write above its Commit.
    pub fn end_file(&mut self, h: &Header) {
        self.limit = self.limit.min(h.commit);
    }

    /// After a complete snapshot `h` was decoded in parallel: it wrote every page up to its
    /// Commit that [`Merge::skips`] did not skip.
    pub fn snapshot_applied(&mut self, h: &Header) {
        let lock = lock_page(h.page_size);
        for pgno in 1..=h.commit.min(self.limit) {
            if pgno != lock {
                self.claim(pgno);
            }
        }
        self.end_file(h);
    }

    /// Every page 1..=Commit but the lock page must have been written.
    pub fn finish(self) -> Result<Applied, RestoreError> {
        let Some((commit, txid)) = self.newest else {
            return Err(RestoreError::Inconsistent("no file was applied".into()));
        };
        let lock = lock_page(self.page_size);
        if let Some(pgno) = (1..=commit).find(|p| *p != lock && !self.is_written(*p)) {
            return Err(RestoreError::Inconsistent(format!(
                "page {pgno} of {commit} was never written by any file since the database last shrank (a missing growth page)"
            )));
        }
        Ok(Applied {
            page_size: self.page_size,
            commit,
            txid,
            pages_written: self.pages_written,
            newest_checksum: self.newest_checksum,
        })
    }
}

/// Gathers runs of consecutive pages into one positional write (up to `WRITE_BATCH` bytes):
/// a snapshot becomes a few hundred large writes instead of one syscall per page.
pub(crate) struct PageWriter {
    page_size: u64,
    buf: Vec<u8>,
    first: u32,
    next: u32,
}

/// Largest single write of consecutive pages.
const WRITE_BATCH: usize = 1024 * 1024;

impl PageWriter {
    pub(crate) fn new(page_size: u32) -> Self {
        PageWriter {
            page_size: u64::from(page_size),
            buf: Vec::new(),
            first: 0,
            next: 0,
        }
    }

    /// Adds page `pgno`, writing the pending run first if `pgno` does not continue it.
    pub(crate) fn put(&mut self, out: &File, pgno: u32, page: &[u8]) -> std::io::Result<()> {
        if pgno != self.next || self.buf.len() + page.len() > WRITE_BATCH {
            self.flush(out)?;
            self.first = pgno;
        }
        self.buf.extend_from_slice(page);
        self.next = pgno + 1;
        Ok(())
    }

    pub(crate) fn flush(&mut self, out: &File) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        out.write_all_at(&self.buf, u64::from(self.first - 1) * self.page_size)?;
        self.buf.clear();
        Ok(())
    }
}

/// `Read` over the chunks of one file, as they come off the channel.
struct ChunkReader<'a> {
    rx: &'a mut mpsc::Receiver<ChunkResult>,
    file: usize,
    remaining: u64,
    cur: bytes::Bytes,
    failure: Option<StorageError>,
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cur.is_empty() {
            if self.remaining == 0 {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok((spec, data))) => {
                    debug_assert_eq!(spec.file, self.file);
                    self.remaining -= data.len() as u64;
                    self.cur = data;
                }
                Some(Err(e)) => {
                    let msg = e.to_string();
                    self.failure = Some(e);
                    return Err(std::io::Error::other(msg));
                }
                None => return Err(std::io::Error::other("downloads stopped")),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
