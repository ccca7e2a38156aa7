//! A state-machine LTX encoder over any `Write`: header, then pages in ascending order, then
//! `finish` writes the terminator, page index and trailer (spec 1.2-1.5).
//!
//! Pages are written in the block format of ltx v0.5.2 (flag `PAGE_FLAG_SIZE`, a 4-byte size
//! and one raw LZ4 block), exactly as Litestream 0.5.16+ writes them, or, with
//! [`PageFraming::Lz4Frame`], in the legacy format of ltx v0.5.0/v0.5.1 (flags 0, one LZ4
//! frame per page: independent 64 KiB blocks, a content checksum, no size prefix), which
//! every Litestream 0.5.x reads: Litestream 0.5.0-0.5.15 reject any page flag (spec 1.9).
//! The encoder does no I/O of its own beyond the given writer and keeps only the page index
//! in memory (a few bytes per page), or, with [`Encoder::spill_index_to`], at most
//! [`INDEX_SPILL_CHUNK`] of it: a full image of a 100 GiB database has a 250 MB index.

use std::io::{Read, Seek, SeekFrom, Write};

use super::checksum::{CHECKSUM_FLAG, FileHasher, page_checksum};
use super::error::LtxError;
use super::header::{Header, PAGE_FLAG_SIZE, PAGE_HEADER_SIZE, Trailer, lock_page};

/// How page frames are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PageFraming {
    /// Flag 0x0001, a 4-byte size and one raw LZ4 block (Litestream 0.5.16+).
    #[default]
    Block,
    /// Flags 0 and one LZ4 frame (readable by every Litestream 0.5.x).
    Lz4Frame,
}

/// Index bytes kept in memory before they go to the spill file.
pub const INDEX_SPILL_CHUNK: usize = 256 * 1024;

/// Where a large page index waits until `finish` (a temporary file).
pub trait IndexSpill: Read + Write + Seek + Send {}
impl<T: Read + Write + Seek + Send> IndexSpill for T {}

/// Encodes one LTX file into `W`.
pub struct Encoder<W: Write> {
    framing: PageFraming,
    w: W,
    header: Header,
    hasher: FileHasher,
    offset: u64,
    prev_pgno: u32,
    lock_page: u32,
    /// Encoded page index varints (pgno, offset, frame length), without the terminator.
    index: Vec<u8>,
    /// Index bytes moved out of `index` so far, and where to.
    spilled: u64,
    spill: Option<Box<dyn IndexSpill>>,
    compressed: Vec<u8>,
    /// XOR of page checksums for snapshots written with checksums on.
    db_checksum: u64,
    post_apply_checksum: u64,
}

impl<W: Write> Encoder<W> {
    /// Validates `header` and writes it (block-framed pages).
    pub fn new(w: W, header: Header) -> Result<Self, LtxError> {
        Self::with_framing(w, header, PageFraming::Block)
    }

    /// Validates `header` and writes it; pages will be framed as `framing` says.
    pub fn with_framing(w: W, header: Header, framing: PageFraming) -> Result<Self, LtxError> {
        header.validate()?;
        let mut enc = Encoder {
            framing,
            w,
            header,
            hasher: FileHasher::new(),
            offset: 0,
            prev_pgno: 0,
            lock_page: lock_page(header.page_size),
            index: Vec::new(),
            spilled: 0,
            spill: None,
            compressed: vec![
                0;
                lz4_flex::block::get_maximum_output_size(header.page_size as usize)
            ],
            db_checksum: 0,
            post_apply_checksum: 0,
        };
        enc.write_hashed(&header.to_bytes())?;
        Ok(enc)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Keeps the page index in `spill` (an empty temporary file) beyond
    /// [`INDEX_SPILL_CHUNK`] bytes, so memory stays flat for any number of pages.
    pub fn spill_index_to(&mut self, spill: Box<dyn IndexSpill>) {
        self.spill = Some(spill);
    }

    /// Sets the trailer's post-apply checksum; only for files written with checksums on.
    pub fn set_post_apply_checksum(&mut self, checksum: u64) {
        self.post_apply_checksum = checksum;
    }

    /// Appends one page. Pages must ascend, skip the lock page and lie in 1..=commit; a
    /// snapshot must hold every such page.
    pub fn write_page(&mut self, pgno: u32, data: &[u8]) -> Result<(), LtxError> {
        self.check_page(pgno, data)?;
        let fail = |offset, reason: String| LtxError::BadFrame {
            offset,
            pgno,
            reason,
        };
        let frame_offset = self.offset;
        let mut head = [0u8; PAGE_HEADER_SIZE + 4];
        head[0..4].copy_from_slice(&pgno.to_be_bytes());
        let (head_len, payload) = match self.framing {
            PageFraming::Block => {
                let n = lz4_flex::block::compress_into(data, &mut self.compressed)
                    .map_err(|e| fail(self.offset, format!("lz4 compression failed: {e}")))?;
                head[4..6].copy_from_slice(&PAGE_FLAG_SIZE.to_be_bytes());
                head[6..10].copy_from_slice(&(n as u32).to_be_bytes());
                (PAGE_HEADER_SIZE + 4, self.compressed[..n].to_vec())
            }
            PageFraming::Lz4Frame => (
                PAGE_HEADER_SIZE,
                lz4_frame(data).map_err(|e| fail(self.offset, format!("lz4 frame: {e}")))?,
            ),
        };
        self.hasher.update(&head[..head_len]);
        self.hasher.update(data);
        self.write_raw(&head[..head_len])?;
        self.write_raw(&payload)?;
        put_uvarint(&mut self.index, u64::from(pgno));
        put_uvarint(&mut self.index, frame_offset);
        put_uvarint(&mut self.index, (head_len + payload.len()) as u64);
        if self.index.len() >= INDEX_SPILL_CHUNK && self.spill.is_some() {
            self.spill_index()?;
        }
        if !self.header.no_checksum() {
            self.db_checksum ^= page_checksum(pgno, data);
        }
        self.prev_pgno = pgno;
        Ok(())
    }

    fn check_page(&self, pgno: u32, data: &[u8]) -> Result<(), LtxError> {
        let h = &self.header;
        if data.len() != h.page_size as usize {
            return Err(LtxError::WrongPageLength {
                pgno,
                got: data.len(),
                expected: h.page_size,
            });
        }
        if pgno == 0 || pgno > h.commit {
            return Err(LtxError::PageOutOfRange {
                pgno,
                commit: h.commit,
            });
        }
        if pgno == self.lock_page {
            return Err(LtxError::LockPage { pgno });
        }
        if pgno <= self.prev_pgno {
            return Err(LtxError::PageOutOfOrder {
                pgno,
                prev: self.prev_pgno,
            });
        }
        if h.is_snapshot() {
            let expected = self.next_snapshot_page();
            if pgno != expected {
                return Err(LtxError::SnapshotIncomplete {
                    commit: h.commit,
                    expected,
                });
            }
        }
        Ok(())
    }

    fn next_snapshot_page(&self) -> u32 {
        let next = self.prev_pgno + 1;
        if next == self.lock_page {
            next + 1
        } else {
            next
        }
    }

    /// Writes the terminator, page index and trailer, flushes, and returns the writer and
    /// the trailer.
    pub fn finish(mut self) -> Result<(W, Trailer), LtxError> {
        if self.header.is_snapshot() && self.prev_pgno < self.header.commit {
            let expected = self.next_snapshot_page();
            if expected <= self.header.commit {
                return Err(LtxError::SnapshotIncomplete {
                    commit: self.header.commit,
                    expected,
                });
            }
        }
        self.write_hashed(&[0u8; PAGE_HEADER_SIZE])?;
        put_uvarint(&mut self.index, 0);
        let index_len = self.spilled + self.index.len() as u64;
        if self.spilled > 0 {
            self.unspill_index()?;
        }
        let index = std::mem::take(&mut self.index);
        self.write_hashed(&index)?;
        self.write_hashed(&index_len.to_be_bytes())?;
        let post = if self.header.no_checksum() {
            0
        } else if self.header.is_snapshot() {
            self.db_checksum | CHECKSUM_FLAG
        } else {
            self.post_apply_checksum
        };
        self.write_hashed(&post.to_be_bytes())?;
        let hasher = std::mem::take(&mut self.hasher);
        let trailer = Trailer {
            post_apply_checksum: post,
            file_checksum: hasher.finish(),
        };
        self.write_raw(&trailer.file_checksum.to_be_bytes())?;
        let offset = self.offset;
        self.w
            .flush()
            .map_err(|source| LtxError::Io { offset, source })?;
        Ok((self.w, trailer))
    }

    fn spill_io(&self, source: std::io::Error) -> LtxError {
        LtxError::Io {
            offset: self.offset,
            source: std::io::Error::new(source.kind(), format!("page index spill file: {source}")),
        }
    }

    fn spill_index(&mut self) -> Result<(), LtxError> {
        let spill = self.spill.as_mut().expect("a spill file");
        let res = spill.write_all(&self.index);
        res.map_err(|e| self.spill_io(e))?;
        self.spilled += self.index.len() as u64;
        self.index.clear();
        Ok(())
    }

    /// Writes the spilled part of the index (hashed) to the output, in chunks.
    fn unspill_index(&mut self) -> Result<(), LtxError> {
        let mut spill = self.spill.take().expect("a spill file");
        spill
            .seek(SeekFrom::Start(0))
            .map_err(|e| self.spill_io(e))?;
        let mut buf = vec![0u8; INDEX_SPILL_CHUNK];
        let mut left = self.spilled;
        while left > 0 {
            let n = buf.len().min(left as usize);
            spill
                .read_exact(&mut buf[..n])
                .map_err(|e| self.spill_io(e))?;
            self.write_hashed(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    fn write_hashed(&mut self, bytes: &[u8]) -> Result<(), LtxError> {
        self.hasher.update(bytes);
        self.write_raw(bytes)
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), LtxError> {
        let offset = self.offset;
        self.w
            .write_all(bytes)
            .map_err(|source| LtxError::Io { offset, source })?;
        self.offset += bytes.len() as u64;
        Ok(())
    }
}

/// One page as a standalone LZ4 frame with pierrec/lz4's defaults as ltx v0.5.1 wrote them:
/// independent 64 KiB blocks, a content checksum, no block checksums, no content size.
fn lz4_frame(page: &[u8]) -> Result<Vec<u8>, lz4_flex::frame::Error> {
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
    let info = FrameInfo::new()
        .block_size(BlockSize::Max64KB)
        .block_mode(BlockMode::Independent)
        .content_checksum(true);
    let mut enc = FrameEncoder::with_frame_info(info, Vec::with_capacity(page.len() / 2 + 32));
    enc.write_all(page)?;
    enc.finish()
}

/// Appends `v` as an unsigned LEB128 varint (Go's `binary.AppendUvarint`).
pub(crate) fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}
