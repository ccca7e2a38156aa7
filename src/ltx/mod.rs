//! The LTX file format of Litestream 0.5 (ltx v0.5.2), as a pure codec: no paths, no tokio,
//! only `Read`/`Write`. See `shared/spec` section 1 for the byte layout.
//!
//! Invariants the encoder guarantees and the decoder checks:
//! - header flags are `NoChecksum` (the only flag), pre/post-apply checksums are zero;
//! - pages ascend, never include the lock page, and a snapshot (MinTXID 1) holds every page
//!   `1..=commit` except the lock page;
//! - the file checksum (CRC-64/GO-ISO over header, frame headers, *decompressed* pages,
//!   terminator, index and post-apply checksum) has bit 63 set and matches the content.

mod checksum;
mod compactor;
mod decoder;
mod encoder;
mod error;
mod header;
mod index;
mod lz4frame;
mod name;

pub use checksum::{CHECKSUM_FLAG, FileHasher, crc64, crc64_combine, page_checksum};
pub use compactor::{CompactError, compact, compact_framed, merge_level0};
pub use decoder::{DecodedFile, Decoder, decode_all};
pub use encoder::{Encoder, INDEX_SPILL_CHUNK, IndexSpill, PageFraming};
pub use error::LtxError;
pub use header::{
    HEADER_FLAG_NO_CHECKSUM, HEADER_SIZE, Header, MIN_FILE_SIZE, PAGE_FLAG_SIZE, PAGE_HEADER_SIZE,
    TRAILER_SIZE, Trailer, is_valid_page_size, lock_page,
};
pub use index::{INDEX_LEN_SIZE, IndexEntry, IndexReader, parse_index};
pub use name::{format_file_name, parse_file_name, parse_hex16};

#[cfg(test)]
mod tests;
