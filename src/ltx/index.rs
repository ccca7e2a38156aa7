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
    let bad = |at: usize, reason: String| LtxError::BadIndex {
        offset: index_start + at as u64,
        reason,
    };
    let mut pos = 0usize;
    let next = |pos: &mut usize| -> Result<u64, LtxError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *bytes
                .get(*pos)
                .ok_or_else(|| bad(*pos, "truncated varint".into()))?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad(*pos, "varint overflows 64 bits".into()))
    };
    let mut out: Vec<IndexEntry> = Vec::new();
    let mut expect_off = HEADER_SIZE as u64;
    loop {
        let at = pos;
        let pgno = next(&mut pos)?;
        if pgno == 0 {
            break;
        }
        let (offset, len) = (next(&mut pos)?, next(&mut pos)?);
        let pgno =
            u32::try_from(pgno).map_err(|_| bad(at, format!("page number {pgno} out of range")))?;
        if out.last().is_some_and(|e| e.pgno >= pgno) {
            return Err(bad(at, format!("page {pgno} does not ascend")));
        }
        if offset != expect_off || len <= PAGE_HEADER_SIZE as u64 {
            return Err(bad(
                at,
                format!("frame of page {pgno} at {offset}+{len}, expected at {expect_off}"),
            ));
        }
        expect_off = offset + len;
        out.push(IndexEntry { pgno, offset, len });
    }
    if pos != bytes.len() {
        return Err(bad(pos, "data after the index terminator".into()));
    }
    if expect_off + PAGE_HEADER_SIZE as u64 != index_start {
        return Err(bad(
            0,
            format!("frames end at {expect_off} but the index starts at {index_start}"),
        ));
    }
    Ok(out)
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
