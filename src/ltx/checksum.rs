//! CRC-64/GO-ISO, the checksum of every LTX file (spec 1.5).
//!
//! Litestream computes it with Go's `hash/crc64` and the ISO table; every stored checksum has
//! bit 63 forced on so that a valid checksum is never zero. The `crc-fast` crate computes the
//! same catalogue entry with carry-less multiplication (SIMD), an order of magnitude faster
//! than table lookups; the checksum runs over every byte a restore writes.

use crc_fast::{CrcAlgorithm, Digest};

/// The bit Litestream ORs into every stored checksum.
pub const CHECKSUM_FLAG: u64 = 1 << 63;

/// CRC-64/GO-ISO of `bytes` (no flag bit).
pub fn crc64(bytes: &[u8]) -> u64 {
    crc_fast::checksum(CrcAlgorithm::Crc64GoIso, bytes)
}

/// `crc(A ‖ B)` from `crc(A)`, `crc(B)` and the length of B: lets ranges of one file be
/// checksummed in parallel.
pub fn crc64_combine(a: u64, b: u64, len_b: u64) -> u64 {
    crc_fast::checksum_combine(CrcAlgorithm::Crc64GoIso, a, b, len_b)
}

/// A running file checksum over the bytes of one LTX file (or of a range of it).
#[derive(Clone)]
pub struct FileHasher {
    digest: Digest,
    len: u64,
}

impl FileHasher {
    pub fn new() -> Self {
        FileHasher {
            digest: Digest::new(CrcAlgorithm::Crc64GoIso),
            len: 0,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.digest.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// The plain CRC of what was hashed so far (no flag bit) and its length in bytes.
    pub fn raw(&self) -> (u64, u64) {
        (self.digest.finalize(), self.len)
    }

    /// The stored form of the checksum: the CRC with bit 63 set.
    pub fn finish(self) -> u64 {
        self.digest.finalize() | CHECKSUM_FLAG
    }
}

impl Default for FileHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// The per-page checksum used by the (optional) rolling database checksum:
/// `CRC64(pgno as u32 BE ‖ page) | 1<<63`.
pub fn page_checksum(pgno: u32, page: &[u8]) -> u64 {
    let mut digest = Digest::new(CrcAlgorithm::Crc64GoIso);
    digest.update(&pgno.to_be_bytes());
    digest.update(page);
    digest.finalize() | CHECKSUM_FLAG
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_go_iso_check_value() {
        assert_eq!(crc64(b"123456789"), 0xb909_56c7_75a4_1001);
        // Split updates give the same result as one pass.
        let mut h = FileHasher::new();
        h.update(b"1234");
        h.update(b"56789");
        assert_eq!(h.finish(), 0xb909_56c7_75a4_1001 | CHECKSUM_FLAG);
    }

    #[test]
    fn combine_equals_one_pass() {
        let (a, b) = (
            b"LTX1 header bytes".as_slice(),
            b"and then the pages".as_slice(),
        );
        let whole = crc64(&[a, b].concat());
        assert_eq!(crc64_combine(crc64(a), crc64(b), b.len() as u64), whole);
        let mut h = FileHasher::new();
        h.update(b);
        assert_eq!(h.raw(), (crc64(b), b.len() as u64));
    }

    #[test]
    fn stored_checksum_has_flag_bit() {
        let mut h = FileHasher::new();
        h.update(b"");
        assert_ne!(h.finish() & CHECKSUM_FLAG, 0);
    }

    #[test]
    fn page_checksum_depends_on_pgno() {
        let page = [7u8; 512];
        assert_ne!(page_checksum(1, &page), page_checksum(2, &page));
        assert_ne!(page_checksum(1, &page) & CHECKSUM_FLAG, 0);
    }
}
