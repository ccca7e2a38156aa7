//! Frame-by-frame WAL reading with salt and rolling-checksum verification.

use std::collections::BTreeMap;
use std::io;

use super::header::{FRAME_HEADER_SIZE, WAL_HEADER_SIZE, WalHeader, be, wal_checksum};

/// Positional reads, implemented for files and byte buffers.
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at `offset`; returns 0 at end of input.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Fills `buf` from `offset`; returns `false` on a short read (end of input).
    fn read_full_at(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => return Ok(false),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let len = self.len() as u64;
        if offset >= len {
            return Ok(0);
        }
        let start = offset as usize;
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }
}

/// Why a WAL could not be opened or resumed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal header is {len} bytes, shorter than 32")]
    ShortHeader { len: usize },
    #[error("wal header: bad magic {magic:#010x}")]
    BadMagic { magic: u32 },
    #[error("wal header: unsupported version {version}")]
    BadVersion { version: u32 },
    #[error("wal header: invalid page size {page_size}")]
    BadPageSize { page_size: u32 },
    #[error("wal header: checksum mismatch")]
    HeaderChecksum,
    #[error("wal resume at offset {offset}: not on a frame boundary")]
    Misaligned { offset: u64 },
    #[error(
        "wal resume at offset {offset}: salts {found1:#010x}/{found2:#010x} differ from the expected {want1:#010x}/{want2:#010x}"
    )]
    SaltMismatch {
        offset: u64,
        found1: u32,
        found2: u32,
        want1: u32,
        want2: u32,
    },
    #[error("wal resume at offset {offset}: the WAL ends before that offset")]
    BeyondEnd { offset: u64 },
    #[error("read wal at offset {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
}

/// One valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Offset of the frame header in the WAL file.
    pub offset: u64,
    pub pgno: u32,
    /// Database size in pages for a commit frame, 0 otherwise.
    pub commit: u32,
}

/// Reads valid frames in order.
pub struct WalReader<R: ReadAt> {
    r: R,
    header: WalHeader,
    salt1: u32,
    salt2: u32,
    cksum: (u32, u32),
    offset: u64,
    buf: Vec<u8>,
}

impl<R: ReadAt> WalReader<R> {
    /// Opens a WAL at its start (offset 32), verifying the header.
    pub fn open(r: R) -> Result<Self, WalError> {
        let header = read_header(&r)?;
        let seed = (header.checksum1, header.checksum2);
        let salts = (header.salt1, header.salt2);
        Ok(Self::at(r, header, WAL_HEADER_SIZE as u64, seed, salts))
    }

    /// Resumes at `offset` (a frame boundary) with the salts of the generation that was
    /// being read. The checksum is seeded from the stored checksum of the frame before
    /// `offset` (or from the header at offset 32); a salt mismatch there is an error, which
    /// the caller treats as "the WAL was restarted or overwritten".
    pub fn resume(r: R, offset: u64, salt1: u32, salt2: u32) -> Result<Self, WalError> {
        let header = read_header(&r)?;
        let fs = header.frame_size();
        let hs = WAL_HEADER_SIZE as u64;
        if offset < hs || !(offset - hs).is_multiple_of(fs) {
            return Err(WalError::Misaligned { offset });
        }
        let (found, seed) = if offset == hs {
            (
                (header.salt1, header.salt2),
                (header.checksum1, header.checksum2),
            )
        } else {
            let mut fh = [0u8; FRAME_HEADER_SIZE];
            let prev = offset - fs;
            let full = r
                .read_full_at(&mut fh, prev)
                .map_err(|source| WalError::Io {
                    offset: prev,
                    source,
                })?;
            if !full {
                return Err(WalError::BeyondEnd { offset });
            }
            (
                (be(&fh[8..12]), be(&fh[12..16])),
                (be(&fh[16..20]), be(&fh[20..24])),
            )
        };
        if found != (salt1, salt2) {
            return Err(WalError::SaltMismatch {
                offset,
                found1: found.0,
                found2: found.1,
                want1: salt1,
                want2: salt2,
            });
        }
        Ok(Self::at(r, header, offset, seed, found))
    }

    fn at(r: R, header: WalHeader, offset: u64, seed: (u32, u32), salts: (u32, u32)) -> Self {
        WalReader {
            r,
            header,
            salt1: salts.0,
            salt2: salts.1,
            cksum: seed,
            offset,
            buf: vec![0; FRAME_HEADER_SIZE + header.page_size as usize],
        }
    }

    pub fn header(&self) -> &WalHeader {
        &self.header
    }

    /// Offset of the next frame to read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The running checksum: the stored checksum of the frame before [`offset`](Self::offset)
    /// (the WAL header's at offset 32).
    pub fn checksum(&self) -> (u32, u32) {
        self.cksum
    }

    /// Salts of the frames being read.
    pub fn salts(&self) -> (u32, u32) {
        (self.salt1, self.salt2)
    }

    /// Reads the next valid frame and copies its page into `page`. Returns `None` at the
    /// end of the valid frames: a short read, a salt mismatch or a checksum mismatch.
    pub fn next_frame(&mut self, page: &mut [u8]) -> Result<Option<Frame>, WalError> {
        let offset = self.offset;
        let full = self
            .r
            .read_full_at(&mut self.buf, offset)
            .map_err(|source| WalError::Io { offset, source })?;
        if !full {
            return Ok(None);
        }
        let fh = &self.buf[..FRAME_HEADER_SIZE];
        if be(&fh[8..12]) != self.salt1 || be(&fh[12..16]) != self.salt2 {
            return Ok(None);
        }
        let be_sums = self.header.big_endian;
        let c = wal_checksum(be_sums, &fh[0..8], self.cksum.0, self.cksum.1);
        let c = wal_checksum(be_sums, &self.buf[FRAME_HEADER_SIZE..], c.0, c.1);
        let fh = &self.buf[..FRAME_HEADER_SIZE];
        if c != (be(&fh[16..20]), be(&fh[20..24])) {
            return Ok(None);
        }
        let frame = Frame {
            offset,
            pgno: be(&fh[0..4]),
            commit: be(&fh[4..8]),
        };
        page.copy_from_slice(&self.buf[FRAME_HEADER_SIZE..]);
        self.cksum = c;
        self.offset += self.header.frame_size();
        Ok(Some(frame))
    }

    /// Reads committed transactions from the current offset: stops at the end of the valid
    /// frames, or at the first commit boundary at or past `max_bytes` read (0 = no limit).
    /// Frames after the last commit frame are not consumed: the reader is left at the end
    /// of the last committed transaction.
    pub fn read_committed(&mut self, max_bytes: u64) -> Result<CommittedBatch, WalError> {
        self.read_committed_to(max_bytes, u64::MAX)
    }

    /// Like [`read_committed`](Self::read_committed), but never reads a frame that starts at
    /// or after `end` (a position already advertised elsewhere).
    pub fn read_committed_to(
        &mut self,
        max_bytes: u64,
        end: u64,
    ) -> Result<CommittedBatch, WalError> {
        let start = self.offset;
        let mut batch = CommittedBatch {
            start_offset: start,
            end_offset: start,
            commit: 0,
            pages: BTreeMap::new(),
            end_checksum: self.cksum,
        };
        let mut pending: Vec<(u32, u64)> = Vec::new();
        let mut page = vec![0u8; self.header.page_size as usize];
        let mut committed_cksum = self.cksum;
        while self.offset < end {
            let Some(frame) = self.next_frame(&mut page)? else {
                break;
            };
            pending.push((frame.pgno, frame.offset));
            if frame.commit == 0 {
                continue;
            }
            batch.pages.extend(pending.drain(..));
            batch.commit = frame.commit;
            batch.end_offset = self.offset;
            committed_cksum = self.cksum;
            if max_bytes > 0 && self.offset - start >= max_bytes {
                break;
            }
        }
        self.offset = batch.end_offset;
        self.cksum = committed_cksum;
        batch.end_checksum = committed_cksum;
        batch.pages.retain(|pgno, _| *pgno <= batch.commit);
        Ok(batch)
    }
}

/// The committed frames of a WAL range: the latest frame offset of each page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedBatch {
    pub start_offset: u64,
    /// End of the last committed frame; equals `start_offset` if nothing was committed.
    pub end_offset: u64,
    /// Database size in pages after the last commit (0 if nothing was committed).
    pub commit: u32,
    /// Page number -> offset of the newest committed frame holding it (pages > commit dropped).
    pub pages: BTreeMap<u32, u64>,
    /// The stored checksum of the frame that ends at `end_offset` (what a later resume at
    /// `end_offset` must find there, unless the WAL was overwritten).
    pub end_checksum: (u32, u32),
}

impl CommittedBatch {
    pub fn is_empty(&self) -> bool {
        self.end_offset == self.start_offset
    }
}

fn read_header<R: ReadAt>(r: &R) -> Result<WalHeader, WalError> {
    let mut b = [0u8; WAL_HEADER_SIZE];
    let mut n = 0;
    while n < b.len() {
        match r.read_at(&mut b[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(WalError::Io { offset: 0, source }),
        }
    }
    WalHeader::parse(&b[..n])
}
