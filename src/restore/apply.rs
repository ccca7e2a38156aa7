//! Applies a plan's files, in order, to the temporary output file (blocking; run it on a
//! blocking thread). Pages are written at their offsets, so later files win; the file is
//! finally cut to the last Commit.
//!
//! Checked before the output may appear (spec 4.2 and more):
//! - every file's checksum, header TXIDs equal to its name, one page size throughout;
//! - contiguity: `next.min <= prev.max + 1 && next.max > prev.max`, starting at TXID 1;
//! - pages ascend, never exceed their file's Commit, never are the lock page; a snapshot
//!   holds every page in order;
//! - coverage: every page 1..=Commit but the lock page was written by some file since the
//!   database last shrank below it (a missing growth page is an error, not stale data).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use tokio::sync::mpsc;

use super::RestoreError;
use super::fetch::ChunkResult;
use crate::ltx::{Decoder, Header, LtxError, lock_page};
use crate::replica::{LtxFileInfo, StorageError};

/// What was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub page_size: u32,
    pub commit: u32,
    pub txid: u64,
    pub pages_written: u64,
}

/// Progress callback: (files done, bytes consumed).
pub type Progress<'a> = &'a mut dyn FnMut(usize, u64);

/// Applies `files` (whose chunks arrive on `rx` in order) to `out`. `base` is the header of
/// a snapshot already written to `out` (decoded in parallel), which the files continue.
pub fn apply(
    files: &[LtxFileInfo],
    keys: &[String],
    rx: &mut mpsc::Receiver<ChunkResult>,
    out: &File,
    base: Option<Header>,
    progress: Progress<'_>,
) -> Result<Applied, RestoreError> {
    let mut st = base.map_or_else(State::default, State::after_snapshot);
    let mut consumed = 0u64;
    for (i, info) in files.iter().enumerate() {
        let mut reader = ChunkReader {
            rx,
            file: i,
            remaining: info.size,
            cur: bytes::Bytes::new(),
            failure: None,
        };
        let res = apply_file(&mut st, info, &mut reader, out);
        if let Some(e) = reader.failure.take() {
            return Err(RestoreError::Storage(e));
        }
        res.map_err(|e| e.at(&keys[i]))?;
        if reader.remaining != 0 {
            return Err(RestoreError::Corrupt {
                key: keys[i].clone(),
                reason: "data follows the trailer".into(),
            });
        }
        consumed += info.size;
        progress(i + 1, consumed);
    }
    st.finish()
}

#[derive(Default)]
struct State {
    page_size: u32,
    commit: u32,
    prev_max: u64,
    pages_written: u64,
    /// One bit per page: written since the database last shrank below it.
    covered: Vec<u64>,
}

/// An error inside one file, before the key is attached.
pub enum FileError {
    Ltx(LtxError),
    Invalid(String),
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
        }
    }
}

fn apply_file<R: Read>(
    st: &mut State,
    info: &LtxFileInfo,
    r: R,
    out: &File,
) -> Result<(), FileError> {
    let mut dec = Decoder::new(r).map_err(FileError::Ltx)?;
    let h = *dec.header();
    st.check_header(info, &h)?;
    let lock = lock_page(h.page_size);
    let mut page = vec![0u8; h.page_size as usize];
    let mut writer = PageWriter::new(h.page_size);
    let mut expect_next = 1u32;
    while let Some(pgno) = dec.next_page(&mut page).map_err(FileError::Ltx)? {
        if pgno > h.commit || pgno == lock {
            return Err(FileError::Invalid(format!(
                "page {pgno} is {} (commit {})",
                if pgno == lock {
                    "the lock page"
                } else {
                    "beyond the file's commit"
                },
                h.commit
            )));
        }
        if h.is_snapshot() {
            if pgno != expect_next {
                return Err(FileError::Invalid(format!(
                    "snapshot is missing page {expect_next} (next page is {pgno})"
                )));
            }
            expect_next = if pgno + 1 == lock { pgno + 2 } else { pgno + 1 };
        }
        writer
            .put(out, pgno, &page)
            .map_err(|e| FileError::Invalid(format!("write restored page {pgno}: {e}")))?;
        st.mark(pgno);
    }
    writer
        .flush(out)
        .map_err(|e| FileError::Invalid(format!("write restored pages: {e}")))?;
    if h.is_snapshot() && expect_next <= h.commit {
        return Err(FileError::Invalid(format!(
            "snapshot is missing page {expect_next}"
        )));
    }
    dec.finish().map_err(FileError::Ltx)?;
    st.end_file(&h);
    Ok(())
}

impl State {
    /// The state after a complete snapshot `h` (every page up to its commit written).
    fn after_snapshot(h: Header) -> State {
        let words = (h.commit as usize).div_ceil(64);
        let mut covered = vec![u64::MAX; words];
        let tail = h.commit as usize % 64;
        if tail != 0 {
            covered[words - 1] = (1u64 << tail) - 1;
        }
        State {
            page_size: h.page_size,
            commit: h.commit,
            prev_max: h.max_txid,
            pages_written: u64::from(h.commit),
            covered,
        }
    }

    fn check_header(&mut self, info: &LtxFileInfo, h: &Header) -> Result<(), FileError> {
        if (h.min_txid, h.max_txid) != (info.min_txid, info.max_txid) {
            return Err(FileError::Invalid(format!(
                "header txids {:016x}-{:016x} differ from the file name",
                h.min_txid, h.max_txid
            )));
        }
        if self.page_size == 0 {
            if h.min_txid != 1 {
                return Err(FileError::Invalid(
                    "the first file of a restore must be a snapshot (txid 1)".into(),
                ));
            }
            self.page_size = h.page_size;
        } else {
            if h.page_size != self.page_size {
                return Err(FileError::Invalid(format!(
                    "page size {} differs from the restore's {}",
                    h.page_size, self.page_size
                )));
            }
            if !(h.min_txid <= self.prev_max + 1 && h.max_txid > self.prev_max) {
                return Err(FileError::Invalid(format!(
                    "non-contiguous transaction ids: previous file ends at {:016x}",
                    self.prev_max
                )));
            }
        }
        Ok(())
    }

    fn mark(&mut self, pgno: u32) {
        let i = (pgno - 1) as usize;
        if self.covered.len() <= i / 64 {
            self.covered.resize(i / 64 + 1, 0);
        }
        self.covered[i / 64] |= 1 << (i % 64);
        self.pages_written += 1;
    }

    /// After a file: a shrink forgets the pages above the new size.
    fn end_file(&mut self, h: &Header) {
        let commit = h.commit as usize;
        for i in commit..self.covered.len() * 64 {
            self.covered[i / 64] &= !(1 << (i % 64));
        }
        self.commit = h.commit;
        self.prev_max = h.max_txid;
    }

    fn finish(self) -> Result<Applied, RestoreError> {
        let lock = lock_page(self.page_size);
        for pgno in 1..=self.commit {
            let i = (pgno - 1) as usize;
            let set = self
                .covered
                .get(i / 64)
                .is_some_and(|w| w & (1 << (i % 64)) != 0);
            if !set && pgno != lock {
                return Err(RestoreError::Inconsistent(format!(
                    "page {pgno} of {} was never written by any file since the database last shrank (a missing growth page)",
                    self.commit
                )));
            }
        }
        Ok(Applied {
            page_size: self.page_size,
            commit: self.commit,
            txid: self.prev_max,
            pages_written: self.pages_written,
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
