//! Codec tests: pinned bytes, round trips (property tests), legacy frames, and corrupt
//! input that must produce typed errors, never a panic.

use std::io::Write;

use proptest::prelude::*;

use super::encoder::put_uvarint;
use super::*;

fn page(pgno: u32, size: u32, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(pgno as u8))
        .collect()
}

fn encode(header: Header, pages: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut enc = Encoder::new(Vec::new(), header).unwrap();
    for (pgno, data) in pages {
        enc.write_page(*pgno, data).unwrap();
    }
    enc.finish().unwrap().0
}

fn snapshot(page_size: u32, commit: u32) -> (Header, Vec<(u32, Vec<u8>)>) {
    let h = Header::new(page_size, commit, 1, 1, 1_700_000_000_000);
    let lock = lock_page(page_size);
    let pages = (1..=commit)
        .filter(|p| *p != lock)
        .map(|p| (p, page(p, page_size, 3)))
        .collect();
    (h, pages)
}

#[test]
fn layout_matches_spec() {
    let (h, pages) = snapshot(4096, 4);
    let bytes = encode(h, &pages);
    assert_eq!(&bytes[0..4], b"LTX1");
    // First frame at offset 100: pgno 1, flags 1, 4-byte size.
    assert_eq!(&bytes[100..106], &[0, 0, 0, 1, 0, 1]);
    let n = u32::from_be_bytes(bytes[106..110].try_into().unwrap()) as usize;
    // Trailer: post-apply 0, then a checksum with bit 63 set.
    let t = &bytes[bytes.len() - 16..];
    assert_eq!(&t[0..8], &[0; 8]);
    assert!(t[8] & 0x80 != 0);
    // Index length field: the 8 bytes before the trailer; index starts after terminator.
    let idx_len = u64::from_be_bytes(
        bytes[bytes.len() - 24..bytes.len() - 16]
            .try_into()
            .unwrap(),
    );
    let idx_start = bytes.len() - 24 - idx_len as usize;
    assert_eq!(&bytes[idx_start - 6..idx_start], &[0; 6], "terminator");
    let mut expected = Vec::new();
    put_uvarint(&mut expected, 1);
    put_uvarint(&mut expected, 100);
    put_uvarint(&mut expected, (10 + n) as u64);
    assert_eq!(&bytes[idx_start..idx_start + expected.len()], &expected[..]);
    let d = decode_all(&bytes).unwrap();
    assert_eq!(d.pages, pages);
    assert_eq!(d.header, h);
}

#[test]
fn snapshot_skips_lock_page() {
    let ps = 65536;
    let lock = lock_page(ps);
    let h = Header::new(ps, lock + 1, 1, 5, 0);
    let mut enc = Encoder::new(Vec::new(), h).unwrap();
    let zero = vec![0u8; ps as usize];
    for p in 1..lock {
        enc.write_page(p, &zero).unwrap();
    }
    assert!(matches!(
        enc.write_page(lock, &zero),
        Err(LtxError::LockPage { .. })
    ));
    enc.write_page(lock + 1, &zero).unwrap();
    let bytes = enc.finish().unwrap().0;
    let d = decode_all(&bytes).unwrap();
    assert_eq!(d.pages.len() as u32, lock);
    assert!(d.pages.iter().all(|(p, _)| *p != lock));
}

#[test]
fn encoder_rejects_bad_pages() {
    let h = Header::new(512, 10, 2, 2, 0);
    let mut enc = Encoder::new(Vec::new(), h).unwrap();
    let p = vec![0u8; 512];
    enc.write_page(5, &p).unwrap();
    assert!(matches!(
        enc.write_page(5, &p),
        Err(LtxError::PageOutOfOrder { .. })
    ));
    assert!(matches!(
        enc.write_page(11, &p),
        Err(LtxError::PageOutOfRange { .. })
    ));
    assert!(matches!(
        enc.write_page(0, &p),
        Err(LtxError::PageOutOfRange { .. })
    ));
    assert!(matches!(
        enc.write_page(6, &p[..100]),
        Err(LtxError::WrongPageLength { .. })
    ));
    // A snapshot must be complete.
    let (h, pages) = snapshot(512, 3);
    let mut enc = Encoder::new(Vec::new(), h).unwrap();
    enc.write_page(1, &pages[0].1).unwrap();
    assert!(matches!(
        enc.write_page(3, &pages[2].1),
        Err(LtxError::SnapshotIncomplete { expected: 2, .. })
    ));
    let mut enc = Encoder::new(Vec::new(), h).unwrap();
    enc.write_page(1, &pages[0].1).unwrap();
    assert!(matches!(
        enc.finish(),
        Err(LtxError::SnapshotIncomplete { .. })
    ));
}

/// Builds a file whose pages use the legacy LZ4-frame encoding (Litestream <= 0.5.15),
/// optionally mixing in block-format frames, with a correct checksum and index.
fn encode_legacy(header: Header, pages: &[(u32, Vec<u8>)], mix: bool) -> Vec<u8> {
    let mut out = header.to_bytes().to_vec();
    let mut hasher = FileHasher::new();
    hasher.update(&out);
    let mut index = Vec::new();
    for (i, (pgno, data)) in pages.iter().enumerate() {
        let off = out.len() as u64;
        let mut head = Vec::new();
        head.extend_from_slice(&pgno.to_be_bytes());
        let body = if mix && i % 2 == 1 {
            let c = lz4_flex::block::compress(data);
            head.extend_from_slice(&1u16.to_be_bytes());
            head.extend_from_slice(&(c.len() as u32).to_be_bytes());
            c
        } else {
            head.extend_from_slice(&0u16.to_be_bytes());
            let mut info = lz4_flex::frame::FrameInfo::new();
            info.content_checksum = true;
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            enc.write_all(data).unwrap();
            enc.finish().unwrap()
        };
        hasher.update(&head);
        hasher.update(data);
        out.extend_from_slice(&head);
        out.extend_from_slice(&body);
        put_uvarint(&mut index, u64::from(*pgno));
        put_uvarint(&mut index, off);
        put_uvarint(&mut index, (head.len() + body.len()) as u64);
    }
    out.extend_from_slice(&[0; 6]);
    hasher.update(&[0; 6]);
    put_uvarint(&mut index, 0);
    let len = index.len() as u64;
    index.extend_from_slice(&len.to_be_bytes());
    hasher.update(&index);
    out.extend_from_slice(&index);
    hasher.update(&[0; 8]);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&hasher.finish().to_be_bytes());
    out
}

#[test]
fn decodes_legacy_and_mixed_frames() {
    let (h, pages) = snapshot(4096, 7);
    for mix in [false, true] {
        let bytes = encode_legacy(h, &pages, mix);
        let d = decode_all(&bytes).unwrap();
        assert_eq!(d.pages, pages, "mix={mix}");
    }
}

#[test]
fn checksummed_snapshot_is_verified() {
    let (mut h, pages) = snapshot(512, 5);
    h.flags = 0;
    let bytes = encode(h, &pages);
    let d = decode_all(&bytes).unwrap();
    assert_ne!(d.trailer.post_apply_checksum, 0);
}

#[test]
fn truncation_at_every_offset_is_a_typed_error() {
    let (h, pages) = snapshot(512, 4);
    for bytes in [encode(h, &pages), encode_legacy(h, &pages, true)] {
        for cut in 0..bytes.len() {
            match decode_all(&bytes[..cut]) {
                Err(LtxError::Truncated { offset, .. }) => assert!(offset <= cut as u64),
                Err(LtxError::BadIndex { .. } | LtxError::BadFrame { .. }) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }
}

#[test]
fn every_flipped_bit_is_detected() {
    let (h, pages) = snapshot(512, 3);
    let bytes = encode(h, &pages);
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= bit;
            // Every flip must fail, except one inside compressed data that decodes to the
            // very same page (an LZ4 match offset within periodic data): never silent damage.
            match decode_all(&b) {
                Err(_) => {}
                Ok(d) => assert_eq!(d.pages, pages, "flip {bit:#x} at {i} changed a page"),
            }
        }
    }
}

#[test]
fn specific_corruptions_name_the_fault() {
    let (h, pages) = snapshot(512, 3);
    let bytes = encode(h, &pages);
    let mut b = bytes.clone();
    b[0] = b'X';
    assert!(matches!(decode_all(&b), Err(LtxError::BadMagic { .. })));
    let mut b = bytes.clone();
    b[7] |= 0x10;
    assert!(matches!(
        decode_all(&b),
        Err(LtxError::UnknownHeaderFlags { .. })
    ));
    let mut b = bytes.clone();
    b[105] = 0x02; // page flags of the first frame
    assert!(matches!(
        decode_all(&b),
        Err(LtxError::UnknownPageFlags {
            offset: 100,
            pgno: 1,
            ..
        })
    ));
    let mut b = bytes.clone();
    b.push(0);
    assert!(matches!(decode_all(&b), Err(LtxError::TrailingData { .. })));
    let last = b.len() - 2;
    let mut b = bytes.clone();
    b[last] ^= 0x01;
    assert!(matches!(
        decode_all(&b),
        Err(LtxError::ChecksumMismatch { .. })
    ));
    let err = decode_all(&bytes[..50]).unwrap_err().to_string();
    assert!(err.contains("offset 50") && err.contains("header"), "{err}");
}

#[test]
fn short_page_is_rejected() {
    // A block that decompresses to 100 bytes in a 512-byte-page file.
    let h = Header::new(512, 1, 2, 2, 0);
    let mut out = h.to_bytes().to_vec();
    let c = lz4_flex::block::compress(&[7u8; 100]);
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(c.len() as u32).to_be_bytes());
    out.extend_from_slice(&c);
    out.extend_from_slice(&[0; 64]);
    assert!(matches!(
        decode_all(&out),
        Err(LtxError::PageSizeMismatch {
            pgno: 1,
            got: 100,
            expected: 512,
            offset: 100
        })
    ));
}

fn arb_file() -> impl Strategy<Value = (Header, Vec<(u32, Vec<u8>)>)> {
    let sizes = prop::sample::select(vec![512u32, 1024, 4096]);
    (sizes, 1u32..40, any::<bool>(), any::<i64>(), 1u64..1000)
        .prop_flat_map(|(ps, commit, snap, ts, min)| {
            let pages = prop::collection::btree_map(1..=commit, any::<u8>(), 0..=commit as usize);
            (
                Just(ps),
                Just(commit),
                Just(snap),
                Just(ts),
                Just(min),
                pages,
            )
        })
        .prop_map(|(ps, commit, snap, ts, min, chosen)| {
            let min_txid = if snap { 1 } else { min + 1 };
            let h = Header::new(ps, commit, min_txid, min_txid + 3, ts);
            let pages = if snap {
                (1..=commit).map(|p| (p, page(p, ps, 7))).collect()
            } else {
                chosen
                    .into_iter()
                    .map(|(p, seed)| (p, page(p, ps, seed)))
                    .collect()
            };
            (h, pages)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn round_trip((h, pages) in arb_file()) {
        let bytes = encode(h, &pages);
        let d = decode_all(&bytes).unwrap();
        prop_assert_eq!(d.header, h);
        prop_assert_eq!(d.pages, pages);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_all(&bytes);
        let mut with_magic = b"LTX1".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = decode_all(&with_magic);
    }

    #[test]
    fn mutated_files_never_panic(
        (h, pages) in arb_file(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = encode(h, &pages);
        for (i, v) in edits {
            let i = i.index(bytes.len());
            bytes[i] = v;
        }
        let _ = decode_all(&bytes);
    }
}

/// The legacy framing: flags 0, one LZ4 frame per page (magic `04 22 4D 18`), no size
/// prefix; it decodes to the same pages and checksums as the block framing.
#[test]
fn legacy_lz4_frame_pages_round_trip() {
    use super::PageFraming;
    let h = Header::new(4096, 3, 1, 1, 1_700_000_000_000);
    let pages: Vec<Vec<u8>> = (0..3u8)
        .map(|i| (0..4096).map(|j| (j as u8).wrapping_mul(i + 1)).collect())
        .collect();
    let mut enc = Encoder::with_framing(Vec::new(), h, PageFraming::Lz4Frame).unwrap();
    for (i, p) in pages.iter().enumerate() {
        enc.write_page(i as u32 + 1, p).unwrap();
    }
    let (bytes, _) = enc.finish().unwrap();
    assert_eq!(&bytes[HEADER_SIZE + 4..HEADER_SIZE + 6], &[0, 0], "flags 0");
    assert_eq!(
        &bytes[HEADER_SIZE + 6..HEADER_SIZE + 10],
        &[0x04, 0x22, 0x4d, 0x18]
    );
    let f = decode_all(&bytes).unwrap();
    let got: Vec<Vec<u8>> = f.pages.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(got, pages);
    let end = bytes.len() - TRAILER_SIZE - INDEX_LEN_SIZE;
    let len = u64::from_be_bytes(bytes[end..end + 8].try_into().unwrap()) as usize;
    let entries = super::parse_index(&bytes[end - len..end], bytes.len() as u64).unwrap();
    assert_eq!(entries.len(), 3, "the index tiles the legacy frames");
    assert_eq!(entries[0].offset, HEADER_SIZE as u64);
}

/// A page index spilled to a temporary file gives the same bytes as one kept in memory
/// (an index several times larger than the in-memory chunk).
#[test]
fn spilled_index_gives_the_same_file() {
    let commit = 120_000u32;
    let h = Header::new(512, commit, 1, 1, 1_700_000_000_000);
    let encode = |spill: bool| {
        let mut enc = Encoder::new(Vec::new(), h).unwrap();
        if spill {
            enc.spill_index_to(Box::new(std::io::Cursor::new(Vec::new())));
        }
        let lock = super::lock_page(512);
        for p in (1..=commit).filter(|p| *p != lock) {
            enc.write_page(p, &[(p % 251) as u8; 512]).unwrap();
        }
        enc.finish().unwrap()
    };
    let (a, ta) = encode(false);
    let (b, tb) = encode(true);
    let end = a.len() - TRAILER_SIZE - INDEX_LEN_SIZE;
    let len = u64::from_be_bytes(a[end..end + 8].try_into().unwrap()) as usize;
    assert!(len > 3 * super::INDEX_SPILL_CHUNK, "index of {len} bytes");
    assert_eq!(ta, tb);
    assert!(a == b, "spilled index changed the file");
    decode_all(&b).unwrap();
}
