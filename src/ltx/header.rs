//! The fixed-size parts of an LTX file: the 100-byte header and the 16-byte trailer
//! (spec 1.1 and 1.4). All integers are big-endian.

use super::checksum::CHECKSUM_FLAG;
use super::error::LtxError;

/// `LTX1`, shared by every LTX version.
pub const MAGIC: [u8; 4] = *b"LTX1";
/// Size of the header in bytes.
pub const HEADER_SIZE: usize = 100;
/// Size of the trailer in bytes.
pub const TRAILER_SIZE: usize = 16;
/// Size of a page frame header without the optional size prefix.
pub const PAGE_HEADER_SIZE: usize = 6;
/// The only valid header flag: database checksums are not tracked.
pub const HEADER_FLAG_NO_CHECKSUM: u32 = 0x0000_0002;
/// Page-frame flag: a 4-byte compressed size and a raw LZ4 block follow (ltx v0.5.2).
pub const PAGE_FLAG_SIZE: u16 = 0x0001;
/// The smallest file that can hold a header, an empty page block, an index and a trailer.
pub const MIN_FILE_SIZE: u64 = (HEADER_SIZE + TRAILER_SIZE) as u64;

/// SQLite's PENDING_BYTE; the page that contains it is never stored.
const PENDING_BYTE: u64 = 0x4000_0000;

/// The page that holds SQLite's PENDING_BYTE for this page size (262145 for 4 KiB pages).
pub fn lock_page(page_size: u32) -> u32 {
    (PENDING_BYTE / u64::from(page_size)) as u32 + 1
}

/// Whether `page_size` is a valid SQLite page size (a power of two from 512 to 65536).
pub fn is_valid_page_size(page_size: u32) -> bool {
    (512..=65536).contains(&page_size) && page_size.is_power_of_two()
}

/// The LTX header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub flags: u32,
    pub page_size: u32,
    /// Database size in pages after this file is applied.
    pub commit: u32,
    pub min_txid: u64,
    pub max_txid: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub pre_apply_checksum: u64,
    pub wal_offset: i64,
    pub wal_size: i64,
    pub wal_salt1: u32,
    pub wal_salt2: u32,
    pub node_id: u64,
}

impl Header {
    /// A header as Litestream 0.5.17 writes it: NoChecksum, no database checksums.
    pub fn new(page_size: u32, commit: u32, min_txid: u64, max_txid: u64, ts_ms: i64) -> Self {
        Header {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size,
            commit,
            min_txid,
            max_txid,
            timestamp_ms: ts_ms,
            ..Header::default()
        }
    }

    /// A snapshot is any file whose MinTXID is 1: it holds every page 1..=commit but the lock page.
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == 1
    }

    pub fn no_checksum(&self) -> bool {
        self.flags & HEADER_FLAG_NO_CHECKSUM != 0
    }

    /// Checks the rules of spec 1.8 that the 0.5.17 decoder enforces.
    pub fn validate(&self) -> Result<(), LtxError> {
        if self.flags & !HEADER_FLAG_NO_CHECKSUM != 0 {
            return Err(LtxError::UnknownHeaderFlags { flags: self.flags });
        }
        if !is_valid_page_size(self.page_size) {
            return Err(LtxError::InvalidPageSize {
                page_size: self.page_size,
            });
        }
        if self.min_txid == 0 || self.max_txid == 0 || self.min_txid > self.max_txid {
            return Err(LtxError::InvalidTxidRange {
                min: self.min_txid,
                max: self.max_txid,
            });
        }
        if self.wal_offset < 0 || self.wal_size < 0 {
            return Err(LtxError::InvalidHeader("negative WAL offset or size"));
        }
        if (self.wal_size != 0 || self.wal_salt1 != 0 || self.wal_salt2 != 0)
            && self.wal_offset == 0
        {
            return Err(LtxError::InvalidHeader(
                "WAL size or salts set without a WAL offset",
            ));
        }
        let pre = self.pre_apply_checksum;
        if self.no_checksum() || self.is_snapshot() {
            if pre != 0 {
                return Err(LtxError::InvalidHeader(
                    "pre-apply checksum must be zero for snapshots and NoChecksum files",
                ));
            }
        } else if pre & CHECKSUM_FLAG == 0 {
            return Err(LtxError::InvalidHeader(
                "pre-apply checksum must have bit 63 set",
            ));
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&self.flags.to_be_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        b[12..16].copy_from_slice(&self.commit.to_be_bytes());
        b[16..24].copy_from_slice(&self.min_txid.to_be_bytes());
        b[24..32].copy_from_slice(&self.max_txid.to_be_bytes());
        b[32..40].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        b[40..48].copy_from_slice(&self.pre_apply_checksum.to_be_bytes());
        b[48..56].copy_from_slice(&self.wal_offset.to_be_bytes());
        b[56..64].copy_from_slice(&self.wal_size.to_be_bytes());
        b[64..68].copy_from_slice(&self.wal_salt1.to_be_bytes());
        b[68..72].copy_from_slice(&self.wal_salt2.to_be_bytes());
        b[72..80].copy_from_slice(&self.node_id.to_be_bytes());
        b
    }

    /// Parses and validates a header.
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Result<Self, LtxError> {
        if b[0..4] != MAGIC {
            return Err(LtxError::BadMagic {
                found: [b[0], b[1], b[2], b[3]],
            });
        }
        let h = Header {
            flags: be_u32(&b[4..8]),
            page_size: be_u32(&b[8..12]),
            commit: be_u32(&b[12..16]),
            min_txid: be_u64(&b[16..24]),
            max_txid: be_u64(&b[24..32]),
            timestamp_ms: be_u64(&b[32..40]) as i64,
            pre_apply_checksum: be_u64(&b[40..48]),
            wal_offset: be_u64(&b[48..56]) as i64,
            wal_size: be_u64(&b[56..64]) as i64,
            wal_salt1: be_u32(&b[64..68]),
            wal_salt2: be_u32(&b[68..72]),
            node_id: be_u64(&b[72..80]),
        };
        h.validate()?;
        Ok(h)
    }
}

/// The LTX trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trailer {
    pub post_apply_checksum: u64,
    pub file_checksum: u64,
}

impl Trailer {
    pub fn from_bytes(b: &[u8; TRAILER_SIZE]) -> Self {
        Trailer {
            post_apply_checksum: be_u64(&b[0..8]),
            file_checksum: be_u64(&b[8..16]),
        }
    }

    pub fn to_bytes(&self) -> [u8; TRAILER_SIZE] {
        let mut b = [0u8; TRAILER_SIZE];
        b[0..8].copy_from_slice(&self.post_apply_checksum.to_be_bytes());
        b[8..16].copy_from_slice(&self.file_checksum.to_be_bytes());
        b
    }
}

pub(crate) fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}

pub(crate) fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_page_numbers() {
        assert_eq!(lock_page(4096), 262_145);
        assert_eq!(lock_page(65536), 16_385);
        assert_eq!(lock_page(512), 2_097_153);
    }

    #[test]
    fn header_round_trip_and_offsets() {
        let mut h = Header::new(4096, 4, 1, 1, 0x1a2_1bf2_4a53);
        h.wal_offset = 32;
        h.wal_size = 16480;
        h.wal_salt1 = 0x5ac6_0c3e;
        h.wal_salt2 = 0xcc8f_b9df;
        let b = h.to_bytes();
        // Offsets from the annotated real file in spec 1.10.
        assert_eq!(&b[0..4], b"LTX1");
        assert_eq!(&b[4..8], &[0, 0, 0, 2]);
        assert_eq!(&b[8..12], &[0, 0, 0x10, 0]);
        assert_eq!(&b[0x30..0x38], &32u64.to_be_bytes());
        assert_eq!(
            &b[0x40..0x48],
            &[0x5a, 0xc6, 0x0c, 0x3e, 0xcc, 0x8f, 0xb9, 0xdf]
        );
        assert_eq!(Header::from_bytes(&b).unwrap(), h);
    }

    #[test]
    fn header_rejections() {
        let good = Header::new(4096, 1, 1, 1, 0);
        let mut b = good.to_bytes();
        b[0] = b'X';
        assert!(matches!(
            Header::from_bytes(&b),
            Err(LtxError::BadMagic { .. })
        ));
        let mut h = good;
        h.flags = 0x4;
        assert!(matches!(
            Header::from_bytes(&h.to_bytes()),
            Err(LtxError::UnknownHeaderFlags { flags: 4 })
        ));
        let mut h = good;
        h.page_size = 1000;
        assert!(matches!(
            Header::from_bytes(&h.to_bytes()),
            Err(LtxError::InvalidPageSize { page_size: 1000 })
        ));
        let mut h = good;
        h.min_txid = 3;
        h.max_txid = 2;
        assert!(matches!(
            Header::from_bytes(&h.to_bytes()),
            Err(LtxError::InvalidTxidRange { .. })
        ));
        let mut h = good;
        h.wal_size = 10;
        assert!(Header::from_bytes(&h.to_bytes()).is_err());
        let mut h = good;
        h.pre_apply_checksum = 5;
        assert!(Header::from_bytes(&h.to_bytes()).is_err());
    }
}
