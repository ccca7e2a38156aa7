//! The page index at the end of an LTX file (spec 1.3): `(pgno, offset, frame length)`
//! varints, a 0 terminator, then an 8-byte big-endian length. Restore uses it to split a
//! large file into ranges at frame boundaries; it is checked against the file's layout here
//! and covered by the file checksum, which is verified over the whole file.

use super::error::LtxError;
use super::header::{HEADER_SIZE, PAGE_HEADER_SIZE, TRAILER_SIZE};

/// One page frame's place in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub pgno: u32,
    pub offset: u64,
    pub len: u64,
}

/// Size of the index length field.
pub const INDEX_LEN_SIZE: usize = 8;

/// Parses the varint section `bytes` (terminator included, length field excluded) of a
/// file of `file_size` bytes, and checks that the frames tile the page block exactly:
/// ascending pages, the first frame right after the header, each frame where the previous
/// one ends, the last ending at the 6-byte terminator just before the index.
pub fn parse_index(bytes: &[u8], file_size: u64) -> Result<Vec<IndexEntry>, LtxError> {
    let index_start = file_size
        .checked_sub((TRAILER_SIZE + INDEX_LEN_SIZE) as u64 + bytes.len() as u64)
        .ok_or(LtxError::BadIndex {
            offset: 0,
            reason: "index longer than the file".into(),
        })?;
    let mut r = IndexReader::new(bytes, index_start, bytes.len() as u64);
    let mut out = Vec::new();
    while let Some(e) = r.next_entry()? {
        out.push(e);
    }
    Ok(out)
}

/// The same checks as [`parse_index`] over a stream of the index section, one entry at a
/// time: memory does not grow with the number of pages (a 100 GiB database has 26 million
/// entries). `index_start` is the section's offset in the file and `len` its length
/// (terminator included). Wrap an unbuffered source in a `BufReader`: it reads byte-wise.
pub struct IndexReader<R> {
    r: R,
    index_start: u64,
    len: u64,
    /// Bytes of the section consumed so far.
    pos: u64,
    expect_off: u64,
    last_pgno: u32,
    done: bool,
}

impl<R: std::io::Read> IndexReader<R> {
    pub fn new(r: R, index_start: u64, len: u64) -> Self {
        IndexReader {
            r,
            index_start,
            len,
            pos: 0,
            expect_off: HEADER_SIZE as u64,
            last_pgno: 0,
            done: false,
        }
    }

    /// The source, e.g. to find out why a read failed.
    pub fn into_inner(self) -> R {
        self.r
    }

    fn bad(&self, at: u64, reason: String) -> LtxError {
        LtxError::BadIndex {
            offset: self.index_start + at,
            reason,
        }
    }

    fn byte(&mut self) -> Result<u8, LtxError> {
        let mut b = [0u8; 1];
        if self.pos >= self.len {
            return Err(self.bad(self.pos, "truncated varint".into()));
        }
        match self.r.read_exact(&mut b) {
            Ok(()) => {
                self.pos += 1;
                Ok(b[0])
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(self.bad(self.pos, "truncated varint".into()))
            }
            Err(source) => Err(LtxError::Io {
                offset: self.index_start + self.pos,
                source,
            }),
        }
    }

    fn varint(&mut self) -> Result<u64, LtxError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.bad(self.pos, "varint overflows 64 bits".into()))
    }

    /// The next frame's entry, or `None` after the terminator once the whole section has
    /// been checked.
    pub fn next_entry(&mut self) -> Result<Option<IndexEntry>, LtxError> {
        if self.done {
            return Ok(None);
        }
        let at = self.pos;
        let pgno = self.varint()?;
        if pgno == 0 {
            self.done = true;
            return self.check_end().map(|()| None);
        }
        let (offset, len) = (self.varint()?, self.varint()?);
        let pgno = u32::try_from(pgno)
            .map_err(|_| self.bad(at, format!("page number {pgno} out of range")))?;
        if self.last_pgno >= pgno {
            return Err(self.bad(at, format!("page {pgno} does not ascend")));
        }
        if offset != self.expect_off || len <= PAGE_HEADER_SIZE as u64 {
            let expected = self.expect_off;
            return Err(self.bad(
                at,
                format!("frame of page {pgno} at {offset}+{len}, expected at {expected}"),
            ));
        }
        self.expect_off = offset + len;
        self.last_pgno = pgno;
        Ok(Some(IndexEntry { pgno, offset, len }))
    }

    fn check_end(&self) -> Result<(), LtxError> {
        if self.pos != self.len {
            return Err(self.bad(self.pos, "data after the index terminator".into()));
        }
        if self.expect_off + PAGE_HEADER_SIZE as u64 != self.index_start {
            return Err(self.bad(
                0,
                format!(
                    "frames end at {} but the index starts at {}",
                    self.expect_off, self.index_start
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::{Encoder, Header};

    fn file() -> Vec<u8> {
        let mut enc = Encoder::new(Vec::new(), Header::new(512, 5, 1, 1, 0)).unwrap();
        for p in 1..=5u32 {
            enc.write_page(p, &[p as u8; 512]).unwrap();
        }
        enc.finish().unwrap().0
    }

    fn split(f: &[u8]) -> &[u8] {
        let n = f.len();
        let len = u64::from_be_bytes(f[n - 24..n - 16].try_into().unwrap()) as usize;
        &f[n - 24 - len..n - 24]
    }

    #[test]
    fn parses_the_encoders_index() {
        let f = file();
        let idx = parse_index(split(&f), f.len() as u64).unwrap();
        assert_eq!(idx.len(), 5);
        assert_eq!(idx[0].offset, 100);
        assert_eq!(
            idx.iter().map(|e| e.pgno).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn rejects_a_tampered_index() {
        let f = file();
        let n = f.len() as u64;
        let good = split(&f).to_vec();
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] = b[i].wrapping_add(1);
            // Any change either fails here or changes nothing the layout checks (and the
            // file checksum catches the rest).
            if let Ok(idx) = parse_index(&b, n) {
                assert_eq!(idx.len(), 5);
            }
        }
        assert!(parse_index(&good[..good.len() - 1], n).is_err());
        assert!(parse_index(&[], n).is_err());
    }
}
