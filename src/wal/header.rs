//! The 32-byte WAL header and SQLite's WAL checksum.

use super::reader::WalError;

pub const WAL_HEADER_SIZE: usize = 32;
pub const FRAME_HEADER_SIZE: usize = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;
const WAL_VERSION: u32 = 3_007_000;

/// A parsed, checksum-verified WAL header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    /// Checksums are computed over big-endian words (magic `0x377f0683`).
    pub big_endian: bool,
    pub page_size: u32,
    pub checkpoint_seq: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub checksum1: u32,
    pub checksum2: u32,
}

impl WalHeader {
    /// Parses the first 32 bytes of a WAL file.
    pub fn parse(b: &[u8]) -> Result<Self, WalError> {
        if b.len() < WAL_HEADER_SIZE {
            return Err(WalError::ShortHeader { len: b.len() });
        }
        let magic = be(&b[0..4]);
        let big_endian = match magic {
            MAGIC_LE => false,
            MAGIC_BE => true,
            _ => return Err(WalError::BadMagic { magic }),
        };
        let version = be(&b[4..8]);
        if version != WAL_VERSION {
            return Err(WalError::BadVersion { version });
        }
        let page_size = be(&b[8..12]);
        if !crate::ltx::is_valid_page_size(page_size) {
            return Err(WalError::BadPageSize { page_size });
        }
        let h = WalHeader {
            big_endian,
            page_size,
            checkpoint_seq: be(&b[12..16]),
            salt1: be(&b[16..20]),
            salt2: be(&b[20..24]),
            checksum1: be(&b[24..28]),
            checksum2: be(&b[28..32]),
        };
        let (c1, c2) = wal_checksum(big_endian, &b[0..24], 0, 0);
        if (c1, c2) != (h.checksum1, h.checksum2) {
            return Err(WalError::HeaderChecksum);
        }
        Ok(h)
    }

    /// Serializes the header, computing its checksum (used to build test fixtures).
    pub fn to_bytes(&self) -> [u8; WAL_HEADER_SIZE] {
        let mut b = [0u8; WAL_HEADER_SIZE];
        let magic = if self.big_endian { MAGIC_BE } else { MAGIC_LE };
        b[0..4].copy_from_slice(&magic.to_be_bytes());
        b[4..8].copy_from_slice(&WAL_VERSION.to_be_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        b[12..16].copy_from_slice(&self.checkpoint_seq.to_be_bytes());
        b[16..20].copy_from_slice(&self.salt1.to_be_bytes());
        b[20..24].copy_from_slice(&self.salt2.to_be_bytes());
        let (c1, c2) = wal_checksum(self.big_endian, &b[0..24], 0, 0);
        b[24..28].copy_from_slice(&c1.to_be_bytes());
        b[28..32].copy_from_slice(&c2.to_be_bytes());
        b
    }

    /// Size of one frame (header + page) in bytes.
    pub fn frame_size(&self) -> u64 {
        FRAME_HEADER_SIZE as u64 + u64::from(self.page_size)
    }
}

/// SQLite's WAL checksum (`walChecksumBytes`): a Fletcher-like sum over pairs of 32-bit words
/// read in the given byte order, seeded with `(s1, s2)`. `data.len()` must be a multiple of 8.
pub fn wal_checksum(big_endian: bool, data: &[u8], mut s1: u32, mut s2: u32) -> (u32, u32) {
    debug_assert_eq!(data.len() % 8, 0);
    let word = |c: &[u8]| {
        let a = [c[0], c[1], c[2], c[3]];
        if big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    };
    for pair in data.chunks_exact(8) {
        s1 = s1.wrapping_add(word(&pair[0..4])).wrapping_add(s2);
        s2 = s2.wrapping_add(word(&pair[4..8])).wrapping_add(s1);
    }
    (s1, s2)
}

pub(crate) fn be(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
