//! A streaming LTX decoder over any `Read`: it yields pages one at a time (memory does not
//! grow with the file), then `finish` parses the page index and trailer and verifies the
//! CRC-64/GO-ISO file checksum (spec 1.2-1.5, 1.8).
//!
//! Both page-frame encodings are read: the block format of ltx v0.5.2 (Litestream 0.5.16+)
//! and the legacy LZ4-frame format of ltx v0.5.0/v0.5.1 (Litestream 0.5.0-0.5.15), even mixed
//! within one file. Unlike Go's decoder, a page that does not decompress to exactly the page
//! size is rejected, pages must ascend, and no bytes may follow the trailer.

use std::io::Read;

use super::checksum::{CHECKSUM_FLAG, FileHasher, page_checksum};
use super::error::LtxError;
use super::header::{
    HEADER_SIZE, Header, PAGE_FLAG_SIZE, PAGE_HEADER_SIZE, TRAILER_SIZE, Trailer, be_u32, be_u64,
};
use super::lz4frame;

/// Decodes one LTX file from `R`.
pub struct Decoder<R: Read> {
    r: R,
    offset: u64,
    header: Header,
    hasher: FileHasher,
    prev_pgno: u32,
    pages_done: bool,
    compressed: Vec<u8>,
    db_checksum: u64,
}

impl<R: Read> Decoder<R> {
    /// Reads and validates the header.
    pub fn new(r: R) -> Result<Self, LtxError> {
        let mut dec = Decoder {
            r,
            offset: 0,
            header: Header::default(),
            hasher: FileHasher::new(),
            prev_pgno: 0,
            pages_done: false,
            compressed: Vec::new(),
            db_checksum: 0,
        };
        let mut hb = [0u8; HEADER_SIZE];
        dec.read_exact(&mut hb, "header")?;
        dec.header = Header::from_bytes(&hb)?;
        dec.hasher.update(&hb);
        Ok(dec)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// A decoder for a range of a file's page block that starts at byte `offset` (a frame
    /// boundary) of a file with `header`, hashing only the range's bytes; used to decode
    /// one file in parallel ranges. Read its frames with [`Decoder::next_page`], then take
    /// [`Decoder::range_checksum`].
    pub fn range(r: R, header: Header, offset: u64) -> Self {
        Decoder {
            r,
            offset,
            header,
            hasher: FileHasher::new(),
            prev_pgno: 0,
            pages_done: false,
            compressed: Vec::new(),
            db_checksum: 0,
        }
    }

    /// The plain CRC and length of the bytes hashed so far (see [`Decoder::range`]).
    pub fn range_checksum(&self) -> (u64, u64) {
        self.hasher.raw()
    }

    /// The underlying reader.
    pub fn reader_mut(&mut self) -> &mut R {
        &mut self.r
    }

    /// Bytes consumed from the input so far (the absolute offset for a range decoder).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next page into `page` (which must be `page_size` long) and returns its page
    /// number, or `None` after the page block's terminator.
    pub fn next_page(&mut self, page: &mut [u8]) -> Result<Option<u32>, LtxError> {
        assert_eq!(
            page.len(),
            self.header.page_size as usize,
            "page buffer size"
        );
        if self.pages_done {
            return Ok(None);
        }
        let frame_offset = self.offset;
        let mut ph = [0u8; PAGE_HEADER_SIZE];
        self.read_exact(&mut ph, "page block")?;
        self.hasher.update(&ph);
        let pgno = be_u32(&ph[0..4]);
        let flags = u16::from_be_bytes([ph[4], ph[5]]);
        if pgno == 0 {
            self.pages_done = true;
            return Ok(None);
        }
        if flags & !PAGE_FLAG_SIZE != 0 {
            return Err(LtxError::UnknownPageFlags {
                offset: frame_offset,
                pgno,
                flags,
            });
        }
        if pgno <= self.prev_pgno {
            return Err(LtxError::BadFrame {
                offset: frame_offset,
                pgno,
                reason: format!("page follows page {}; pages must ascend", self.prev_pgno),
            });
        }
        if flags & PAGE_FLAG_SIZE != 0 {
            self.read_block_frame(frame_offset, pgno, page)?;
        } else {
            self.read_legacy_frame(frame_offset, pgno, page)?;
        }
        self.hasher.update(page);
        if !self.header.no_checksum() {
            self.db_checksum ^= page_checksum(pgno, page);
        }
        self.prev_pgno = pgno;
        Ok(Some(pgno))
    }

    fn read_block_frame(&mut self, off: u64, pgno: u32, page: &mut [u8]) -> Result<(), LtxError> {
        let mut sz = [0u8; 4];
        self.read_exact(&mut sz, "page frame size")?;
        self.hasher.update(&sz);
        let n = u32::from_be_bytes(sz) as usize;
        let limit = lz4_flex::block::get_maximum_output_size(page.len());
        if n == 0 || n > limit {
            return Err(LtxError::BadFrame {
                offset: off,
                pgno,
                reason: format!("compressed size {n} outside 1..={limit}"),
            });
        }
        let mut buf = std::mem::take(&mut self.compressed);
        buf.resize(n, 0);
        let res = self.read_exact(&mut buf, "page data");
        let res = res.and_then(|()| {
            lz4_flex::block::decompress_into(&buf, page).map_err(|e| LtxError::BadFrame {
                offset: off,
                pgno,
                reason: format!("lz4 block: {e}"),
            })
        });
        self.compressed = buf;
        let got = res?;
        if got != page.len() {
            return Err(LtxError::PageSizeMismatch {
                offset: off,
                pgno,
                got,
                expected: self.header.page_size,
            });
        }
        Ok(())
    }

    fn read_legacy_frame(&mut self, off: u64, pgno: u32, page: &mut [u8]) -> Result<(), LtxError> {
        let start = self.offset;
        let mut counted = CountingRead {
            r: &mut self.r,
            n: 0,
        };
        let res = lz4frame::decode_one_frame(&mut counted, page);
        self.offset = start + counted.n;
        let got = res.map_err(|e| match e {
            lz4frame::FrameError::Eof => LtxError::Truncated {
                offset: self.offset,
                section: "legacy lz4 page frame",
            },
            lz4frame::FrameError::Io(source) => LtxError::Io {
                offset: self.offset,
                source,
            },
            lz4frame::FrameError::Malformed(reason) => LtxError::BadFrame {
                offset: off,
                pgno,
                reason: format!("legacy lz4 frame: {reason}"),
            },
        })?;
        if got != page.len() {
            return Err(LtxError::PageSizeMismatch {
                offset: off,
                pgno,
                got,
                expected: self.header.page_size,
            });
        }
        Ok(())
    }

    /// Skips any remaining pages, parses the page index and trailer, verifies the file
    /// checksum and that nothing follows the trailer.
    pub fn finish(mut self) -> Result<Trailer, LtxError> {
        if !self.pages_done {
            let mut page = vec![0u8; self.header.page_size as usize];
            while self.next_page(&mut page)?.is_some() {}
        }
        self.read_index()?;
        let mut tb = [0u8; TRAILER_SIZE];
        self.read_exact(&mut tb, "trailer")?;
        self.hasher.update(&tb[0..8]);
        let trailer = Trailer::from_bytes(&tb);
        let computed = std::mem::take(&mut self.hasher).finish();
        if trailer.file_checksum != computed {
            return Err(LtxError::ChecksumMismatch {
                stored: trailer.file_checksum,
                computed,
            });
        }
        self.check_post_apply(&trailer)?;
        let mut probe = [0u8; 1];
        match self.r.read(&mut probe) {
            Ok(0) => Ok(trailer),
            Ok(_) => Err(LtxError::TrailingData {
                offset: self.offset,
            }),
            Err(source) => Err(LtxError::Io {
                offset: self.offset,
                source,
            }),
        }
    }

    fn check_post_apply(&self, trailer: &Trailer) -> Result<(), LtxError> {
        let post = trailer.post_apply_checksum;
        if self.header.no_checksum() {
            if post != 0 {
                return Err(LtxError::InvalidTrailer(
                    "post-apply checksum must be zero when NoChecksum is set",
                ));
            }
            return Ok(());
        }
        if post & CHECKSUM_FLAG == 0 {
            return Err(LtxError::InvalidTrailer(
                "post-apply checksum must have bit 63 set",
            ));
        }
        if self.header.is_snapshot() && post != self.db_checksum | CHECKSUM_FLAG {
            return Err(LtxError::InvalidTrailer(
                "post-apply checksum does not match the snapshot's pages",
            ));
        }
        Ok(())
    }

    /// Parses the varint page index: (pgno, offset, length)* then 0, then an 8-byte length.
    fn read_index(&mut self) -> Result<(), LtxError> {
        let start = self.offset;
        let mut consumed = 0u64;
        loop {
            let entry_offset = self.offset;
            let pgno = self.read_uvarint(&mut consumed)?;
            if pgno == 0 {
                break;
            }
            if pgno > u64::from(u32::MAX) {
                return Err(LtxError::BadIndex {
                    offset: entry_offset,
                    reason: format!("page number {pgno} out of range"),
                });
            }
            self.read_uvarint(&mut consumed)?;
            self.read_uvarint(&mut consumed)?;
        }
        let mut lb = [0u8; 8];
        self.read_exact(&mut lb, "page index length")?;
        self.hasher.update(&lb);
        let stored = be_u64(&lb);
        if stored != consumed {
            return Err(LtxError::BadIndex {
                offset: start,
                reason: format!("stored length {stored} but the index holds {consumed} bytes"),
            });
        }
        Ok(())
    }

    fn read_uvarint(&mut self, consumed: &mut u64) -> Result<u64, LtxError> {
        let start = self.offset;
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let mut b = [0u8; 1];
            self.read_exact(&mut b, "page index")?;
            self.hasher.update(&b);
            *consumed += 1;
            if shift == 63 && b[0] > 1 {
                break;
            }
            v |= u64::from(b[0] & 0x7f) << shift;
            if b[0] & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(LtxError::BadIndex {
            offset: start,
            reason: "varint overflows 64 bits".into(),
        })
    }

    fn read_exact(&mut self, buf: &mut [u8], section: &'static str) -> Result<(), LtxError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.r.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(LtxError::Truncated {
                        offset: self.offset + filled as u64,
                        section,
                    });
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(LtxError::Io {
                        offset: self.offset + filled as u64,
                        source,
                    });
                }
            }
        }
        self.offset += buf.len() as u64;
        Ok(())
    }
}

/// A reader that counts the bytes it hands out.
struct CountingRead<'a, R: Read> {
    r: &'a mut R,
    n: u64,
}

impl<R: Read> Read for CountingRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// A fully decoded file, for tests and small files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedFile {
    pub header: Header,
    pub pages: Vec<(u32, Vec<u8>)>,
    pub trailer: Trailer,
}

/// Decodes a whole file held in memory.
pub fn decode_all(bytes: &[u8]) -> Result<DecodedFile, LtxError> {
    let mut dec = Decoder::new(bytes)?;
    let header = *dec.header();
    let mut pages = Vec::new();
    let mut page = vec![0u8; header.page_size as usize];
    while let Some(pgno) = dec.next_page(&mut page)? {
        pages.push((pgno, page.clone()));
    }
    let trailer = dec.finish()?;
    Ok(DecodedFile {
        header,
        pages,
        trailer,
    })
}
