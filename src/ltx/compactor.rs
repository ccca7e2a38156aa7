//! Merges a contiguous run of LTX files into one (spec 2.2, "Compaction algorithm"):
//! pages merge with the newest version winning, pages beyond the last file's Commit are
//! dropped, and the output covers `first.min..=last.max` with the last file's Commit and
//! timestamp. A k-way merge over streaming decoders: memory is one page per input.

use std::io::{Read, Write};

use super::decoder::Decoder;
use super::encoder::{Encoder, PageFraming};
use super::error::LtxError;
use super::header::{Header, Trailer, lock_page};

/// Why inputs cannot be compacted.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("input {index}: {source}")]
    Input {
        index: usize,
        #[source]
        source: LtxError,
    },
    #[error("output: {0}")]
    Output(#[source] LtxError),
    #[error("no inputs to compact")]
    Empty,
    #[error("input {index}: page size {got} differs from {want}")]
    PageSize { index: usize, got: u32, want: u32 },
    #[error(
        "input {index}: non-contiguous transaction ids: {min:016x}-{max:016x} after {prev:016x}"
    )]
    NonContiguous {
        index: usize,
        min: u64,
        max: u64,
        prev: u64,
    },
}

/// Compacts `inputs` (in TXID order) into `out`; returns the writer, header and trailer.
pub fn compact<R: Read, W: Write>(
    inputs: Vec<R>,
    out: W,
) -> Result<(W, Header, Trailer), CompactError> {
    compact_framed(inputs, out, PageFraming::Block)
}

/// [`compact`], writing the output's pages as `framing` says.
pub fn compact_framed<R: Read, W: Write>(
    inputs: Vec<R>,
    out: W,
    framing: PageFraming,
) -> Result<(W, Header, Trailer), CompactError> {
    merge(inputs, out, framing, false)
}

/// Merges consecutive level-0 files into one level-0 file that keeps the WAL fields a
/// successor needs (spec 3.5 and 3.8: Litestream resumes from the newest level-0 file's
/// WAL offset, size and salts). When every input continues the previous one in the same
/// WAL generation, the output covers the whole WAL range; otherwise it carries the last
/// input's range. Either way its end and salts are the last input's.
pub fn merge_level0<R: Read, W: Write>(
    inputs: Vec<R>,
    out: W,
    framing: PageFraming,
) -> Result<(W, Header, Trailer), CompactError> {
    merge(inputs, out, framing, true)
}

fn merge<R: Read, W: Write>(
    inputs: Vec<R>,
    out: W,
    framing: PageFraming,
    keep_wal: bool,
) -> Result<(W, Header, Trailer), CompactError> {
    let mut decs = Vec::with_capacity(inputs.len());
    for (index, r) in inputs.into_iter().enumerate() {
        decs.push(Decoder::new(r).map_err(|source| CompactError::Input { index, source })?);
    }
    let mut header = output_header(&decs)?;
    if keep_wal {
        set_wal_range(&mut header, &decs);
    }
    let mut enc = Encoder::with_framing(out, header, framing).map_err(CompactError::Output)?;
    let ps = header.page_size as usize;
    let lock = lock_page(header.page_size);
    let mut bufs: Vec<Vec<u8>> = vec![vec![0u8; ps]; decs.len()];
    let mut cur: Vec<Option<u32>> = Vec::with_capacity(decs.len());
    for (index, d) in decs.iter_mut().enumerate() {
        cur.push(
            d.next_page(&mut bufs[index])
                .map_err(|source| CompactError::Input { index, source })?,
        );
    }
    while let Some(pgno) = cur.iter().flatten().min().copied() {
        let winner = cur
            .iter()
            .rposition(|c| *c == Some(pgno))
            .expect("min exists");
        if pgno <= header.commit && pgno != lock {
            enc.write_page(pgno, &bufs[winner])
                .map_err(CompactError::Output)?;
        }
        for index in 0..decs.len() {
            if cur[index] == Some(pgno) {
                cur[index] = decs[index]
                    .next_page(&mut bufs[index])
                    .map_err(|source| CompactError::Input { index, source })?;
            }
        }
    }
    for (index, d) in decs.into_iter().enumerate() {
        d.finish()
            .map_err(|source| CompactError::Input { index, source })?;
    }
    let (w, trailer) = enc.finish().map_err(CompactError::Output)?;
    Ok((w, header, trailer))
}

fn set_wal_range<R: Read>(out: &mut Header, decs: &[Decoder<R>]) {
    let hs: Vec<&Header> = decs.iter().map(Decoder::header).collect();
    let last = *hs[hs.len() - 1];
    let one_range = hs.windows(2).all(|w| {
        (w[0].wal_salt1, w[0].wal_salt2) == (w[1].wal_salt1, w[1].wal_salt2)
            && w[0].wal_offset + w[0].wal_size == w[1].wal_offset
    });
    let first = if one_range { *hs[0] } else { last };
    out.wal_offset = first.wal_offset;
    out.wal_size = last.wal_offset + last.wal_size - first.wal_offset;
    out.wal_salt1 = last.wal_salt1;
    out.wal_salt2 = last.wal_salt2;
}

fn output_header<R: Read>(decs: &[Decoder<R>]) -> Result<Header, CompactError> {
    let first = *decs.first().ok_or(CompactError::Empty)?.header();
    let mut prev = first;
    for (index, d) in decs.iter().enumerate().skip(1) {
        let h = d.header();
        if h.page_size != first.page_size {
            return Err(CompactError::PageSize {
                index,
                got: h.page_size,
                want: first.page_size,
            });
        }
        if !(h.min_txid <= prev.max_txid + 1 && h.max_txid > prev.max_txid) {
            return Err(CompactError::NonContiguous {
                index,
                min: h.min_txid,
                max: h.max_txid,
                prev: prev.max_txid,
            });
        }
        prev = *h;
    }
    Ok(Header::new(
        first.page_size,
        prev.commit,
        first.min_txid,
        prev.max_txid,
        prev.timestamp_ms,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::decode_all;

    fn file(min: u64, max: u64, commit: u32, pages: &[(u32, u8)], ts: i64) -> Vec<u8> {
        let mut enc = Encoder::new(Vec::new(), Header::new(512, commit, min, max, ts)).unwrap();
        for (p, v) in pages {
            enc.write_page(*p, &[*v; 512]).unwrap();
        }
        enc.finish().unwrap().0
    }

    #[test]
    fn newest_page_wins_and_shrink_drops_pages() {
        let a = file(1, 1, 4, &[(1, 1), (2, 1), (3, 1), (4, 1)], 10);
        let b = file(2, 3, 4, &[(2, 2), (4, 2)], 20);
        let c = file(4, 4, 3, &[(1, 3)], 30);
        let (out, h, _) = compact(vec![&a[..], &b[..], &c[..]], Vec::new()).unwrap();
        assert_eq!(
            (h.min_txid, h.max_txid, h.commit, h.timestamp_ms),
            (1, 4, 3, 30)
        );
        let d = decode_all(&out).unwrap();
        let got: Vec<_> = d.pages.iter().map(|(p, v)| (*p, v[0])).collect();
        assert_eq!(got, vec![(1, 3), (2, 2), (3, 1)]);
    }

    fn l0(min: u64, off: i64, size: i64, salt: u32, page: (u32, u8)) -> Vec<u8> {
        let mut h = Header::new(512, 4, min, min, min as i64);
        (h.wal_offset, h.wal_size, h.wal_salt1, h.wal_salt2) = (off, size, salt, 7);
        let mut enc = Encoder::new(Vec::new(), h).unwrap();
        enc.write_page(page.0, &[page.1; 512]).unwrap();
        enc.finish().unwrap().0
    }

    #[test]
    fn merged_level0_keeps_the_wal_range_a_successor_resumes_from() {
        let (a, b) = (l0(5, 32, 1072, 1, (1, 1)), l0(6, 1104, 536, 1, (2, 2)));
        let (_, h, _) = merge_level0(vec![&a[..], &b[..]], Vec::new(), PageFraming::Block).unwrap();
        assert_eq!((h.min_txid, h.max_txid, h.timestamp_ms), (5, 6, 6));
        assert_eq!(
            (h.wal_offset, h.wal_size, h.wal_salt1, h.wal_salt2),
            (32, 1608, 1, 7)
        );
        // A WAL restart inside the range: the output carries the last input's range.
        let c = l0(7, 32, 536, 2, (3, 3));
        let (_, h, _) =
            merge_level0(vec![&a[..], &b[..], &c[..]], Vec::new(), PageFraming::Block).unwrap();
        assert_eq!((h.wal_offset, h.wal_size, h.wal_salt1), (32, 536, 2));
        // Plain compaction leaves the WAL fields zero (spec 1.3).
        let (_, h, _) = compact(vec![&a[..], &b[..]], Vec::new()).unwrap();
        assert_eq!((h.wal_offset, h.wal_size, h.wal_salt1), (0, 0, 0));
    }

    #[test]
    fn rejects_gaps_and_page_size_mismatch() {
        let a = file(2, 2, 4, &[(1, 1)], 1);
        let b = file(4, 4, 4, &[(1, 1)], 2);
        assert!(matches!(
            compact(vec![&a[..], &b[..]], Vec::new()),
            Err(CompactError::NonContiguous { index: 1, .. })
        ));
        let mut enc = Encoder::new(Vec::new(), Header::new(1024, 1, 3, 3, 1)).unwrap();
        enc.write_page(1, &[0; 1024]).unwrap();
        let c = enc.finish().unwrap().0;
        assert!(matches!(
            compact(vec![&a[..], &c[..]], Vec::new()),
            Err(CompactError::PageSize { .. })
        ));
        let mut bad = file(3, 3, 4, &[(2, 9)], 3);
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(matches!(
            compact(vec![&a[..], &bad[..]], Vec::new()),
            Err(CompactError::Input { index: 1, .. })
        ));
    }
}
