//! WAL reader fixtures: hand-built WALs in both checksum byte orders, plus a WAL written by
//! the bundled SQLite.

use super::*;

/// Builds a WAL byte image frame by frame, computing checksums like SQLite does.
struct WalBuilder {
    header: WalHeader,
    bytes: Vec<u8>,
    cksum: (u32, u32),
}

impl WalBuilder {
    fn new(big_endian: bool, page_size: u32, salt1: u32, salt2: u32) -> Self {
        let mut header = WalHeader {
            big_endian,
            page_size,
            checkpoint_seq: 0,
            salt1,
            salt2,
            checksum1: 0,
            checksum2: 0,
        };
        let bytes = header.to_bytes().to_vec();
        header = WalHeader::parse(&bytes).unwrap();
        WalBuilder {
            header,
            cksum: (header.checksum1, header.checksum2),
            bytes,
        }
    }

    fn frame(&mut self, pgno: u32, commit: u32, fill: u8) -> &mut Self {
        let mut fh = [0u8; FRAME_HEADER_SIZE];
        fh[0..4].copy_from_slice(&pgno.to_be_bytes());
        fh[4..8].copy_from_slice(&commit.to_be_bytes());
        fh[8..12].copy_from_slice(&self.header.salt1.to_be_bytes());
        fh[12..16].copy_from_slice(&self.header.salt2.to_be_bytes());
        let page = vec![fill; self.header.page_size as usize];
        let be = self.header.big_endian;
        let c = wal_checksum(be, &fh[0..8], self.cksum.0, self.cksum.1);
        let c = wal_checksum(be, &page, c.0, c.1);
        fh[16..20].copy_from_slice(&c.0.to_be_bytes());
        fh[20..24].copy_from_slice(&c.1.to_be_bytes());
        self.cksum = c;
        self.bytes.extend_from_slice(&fh);
        self.bytes.extend_from_slice(&page);
        self
    }
}

fn read_all(bytes: &[u8]) -> Vec<Frame> {
    let mut r = WalReader::open(bytes).unwrap();
    let mut page = vec![0u8; r.header().page_size as usize];
    let mut out = Vec::new();
    while let Some(f) = r.next_frame(&mut page).unwrap() {
        out.push(f);
    }
    out
}

fn sample(big_endian: bool) -> WalBuilder {
    let mut w = WalBuilder::new(big_endian, 512, 0x1111, 0x2222);
    w.frame(1, 0, 1)
        .frame(2, 2, 2)
        .frame(2, 0, 3)
        .frame(3, 3, 4);
    w
}

#[test]
fn valid_wal_both_byte_orders() {
    for be in [false, true] {
        let w = sample(be);
        let frames = read_all(&w.bytes);
        assert_eq!(frames.len(), 4, "big_endian={be}");
        assert_eq!(
            frames[1],
            Frame {
                offset: 32 + 536,
                pgno: 2,
                commit: 2
            }
        );
        assert_eq!(WalHeader::parse(&w.bytes).unwrap().big_endian, be);
    }
}

#[test]
fn byte_order_comes_from_magic() {
    // A little-endian WAL whose magic is flipped to big-endian must fail its header check.
    let mut w = sample(false);
    w.bytes[3] = 0x83;
    assert!(matches!(
        WalHeader::parse(&w.bytes),
        Err(WalError::HeaderChecksum)
    ));
}

#[test]
fn stops_at_salt_mismatch() {
    let mut w = sample(false);
    let third = 32 + 2 * 536;
    w.bytes[third + 8] ^= 0xff;
    assert_eq!(read_all(&w.bytes).len(), 2);
}

#[test]
fn stops_at_checksum_mismatch() {
    let mut w = sample(true);
    let third = 32 + 2 * 536;
    w.bytes[third + 24 + 100] ^= 0x01; // page byte
    assert_eq!(read_all(&w.bytes).len(), 2);
}

#[test]
fn stops_at_torn_last_frame() {
    let w = sample(false);
    let torn = &w.bytes[..w.bytes.len() - 10];
    assert_eq!(read_all(torn).len(), 3);
}

#[test]
fn bad_headers_are_errors() {
    assert!(matches!(
        WalReader::open(&[0u8; 10][..]),
        Err(WalError::ShortHeader { len: 10 })
    ));
    let mut w = sample(false);
    w.bytes[0] = 0;
    assert!(matches!(
        WalReader::open(&w.bytes[..]),
        Err(WalError::BadMagic { .. })
    ));
    let mut w = sample(false);
    w.bytes[27] ^= 1;
    assert!(matches!(
        WalReader::open(&w.bytes[..]),
        Err(WalError::HeaderChecksum)
    ));
}

#[test]
fn resume_at_offset() {
    for be in [false, true] {
        let w = sample(be);
        let mut r = WalReader::resume(&w.bytes[..], 32 + 2 * 536, 0x1111, 0x2222).unwrap();
        let mut page = vec![0u8; 512];
        let f = r.next_frame(&mut page).unwrap().unwrap();
        assert_eq!((f.pgno, f.commit), (2, 0));
        assert!(page.iter().all(|b| *b == 3));
        assert_eq!(r.next_frame(&mut page).unwrap().unwrap().pgno, 3);
        assert!(r.next_frame(&mut page).unwrap().is_none());
        // At the header boundary.
        let r = WalReader::resume(&w.bytes[..], 32, 0x1111, 0x2222).unwrap();
        assert_eq!(r.offset(), 32);
    }
}

#[test]
fn resume_errors() {
    let w = sample(false);
    assert!(matches!(
        WalReader::resume(&w.bytes[..], 33, 0x1111, 0x2222),
        Err(WalError::Misaligned { .. })
    ));
    assert!(matches!(
        WalReader::resume(&w.bytes[..], 32 + 536, 0x1112, 0x2222),
        Err(WalError::SaltMismatch { .. })
    ));
    assert!(matches!(
        WalReader::resume(&w.bytes[..], 32, 9, 9),
        Err(WalError::SaltMismatch { .. })
    ));
    assert!(matches!(
        WalReader::resume(&w.bytes[..], 32 + 10 * 536, 0x1111, 0x2222),
        Err(WalError::BeyondEnd { .. })
    ));
}

#[test]
fn committed_batches_ignore_trailing_uncommitted_frames() {
    let mut w = sample(false);
    w.frame(4, 0, 5); // uncommitted tail
    let mut r = WalReader::open(&w.bytes[..]).unwrap();
    let batch = r.read_committed(0).unwrap();
    assert_eq!(batch.commit, 3);
    assert_eq!(batch.end_offset, 32 + 4 * 536);
    assert_eq!(batch.pages.len(), 3);
    assert_eq!(batch.pages[&2], 32 + 2 * 536, "newest frame of page 2 wins");
    assert_eq!(
        r.offset(),
        batch.end_offset,
        "reader stays at the last commit"
    );
    assert!(r.read_committed(0).unwrap().is_empty());
}

#[test]
fn committed_batches_split_at_byte_limit_and_drop_pages_past_commit() {
    let mut w = WalBuilder::new(false, 512, 7, 8);
    w.frame(1, 0, 1)
        .frame(5, 5, 1)
        .frame(1, 2, 2)
        .frame(2, 2, 2);
    let mut r = WalReader::open(&w.bytes[..]).unwrap();
    let first = r.read_committed(1).unwrap();
    assert_eq!((first.commit, first.pages.len()), (5, 2));
    let second = r.read_committed(1).unwrap();
    assert_eq!(second.commit, 2);
    assert_eq!(second.pages.keys().copied().collect::<Vec<_>>(), vec![1]);
    let third = r.read_committed(0).unwrap();
    assert_eq!(third.commit, 2);
    assert_eq!(third.pages.keys().copied().collect::<Vec<_>>(), vec![2]);
    assert_eq!(third.end_offset, w.bytes.len() as u64);
}

#[test]
fn reads_a_wal_written_by_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(3000));")
        .unwrap();
    for _ in 0..10 {
        conn.execute("INSERT INTO t VALUES (randomblob(100))", [])
            .unwrap();
    }
    let wal = std::fs::read(dir.path().join("t.db-wal")).unwrap();
    let mut r = WalReader::open(&wal[..]).unwrap();
    let batch = r.read_committed(0).unwrap();
    assert_eq!(
        batch.end_offset,
        wal.len() as u64,
        "every frame is committed"
    );
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    assert_eq!(i64::from(batch.commit), pages);
}

#[test]
fn committed_batches_stop_at_an_end_offset() {
    let w = sample(false);
    let mut r = WalReader::open(&w.bytes[..]).unwrap();
    let b = r.read_committed_to(0, 32 + 2 * 536).unwrap();
    assert_eq!((b.commit, b.end_offset), (2, 32 + 2 * 536));
    assert_eq!(r.offset(), 32 + 2 * 536);
}
