//! Typed errors of the LTX codec. Every variant names what is wrong and, where it applies,
//! the byte offset in the file and the page number.

/// An error from encoding or decoding an LTX file.
#[derive(Debug, thiserror::Error)]
pub enum LtxError {
    /// The file does not start with `LTX1`.
    #[error("invalid LTX file: bad magic {found:02x?} at offset 0")]
    BadMagic { found: [u8; 4] },
    /// A header flag other than NoChecksum is set.
    #[error("invalid LTX header: unknown flags {flags:#010x} at offset 4")]
    UnknownHeaderFlags { flags: u32 },
    /// The page size is not a power of two between 512 and 65536.
    #[error("invalid LTX header: page size {page_size} at offset 8")]
    InvalidPageSize { page_size: u32 },
    /// MinTXID/MaxTXID are zero or out of order.
    #[error("invalid LTX header: txid range {min:#x}-{max:#x}")]
    InvalidTxidRange { min: u64, max: u64 },
    /// Some other header rule of the format is broken.
    #[error("invalid LTX header: {0}")]
    InvalidHeader(&'static str),
    /// The input ended inside a section.
    #[error("truncated LTX file: unexpected end of file at offset {offset} in the {section}")]
    Truncated { offset: u64, section: &'static str },
    /// A page frame header carries unknown flag bits.
    #[error("invalid LTX page frame at offset {offset} (page {pgno}): unknown flags {flags:#06x}")]
    UnknownPageFlags { offset: u64, pgno: u32, flags: u16 },
    /// A page frame's compressed payload is malformed.
    #[error("invalid LTX page frame at offset {offset} (page {pgno}): {reason}")]
    BadFrame {
        offset: u64,
        pgno: u32,
        reason: String,
    },
    /// A page did not decompress to exactly the page size.
    #[error(
        "invalid LTX page frame at offset {offset} (page {pgno}): decompressed to {got} bytes, expected {expected}"
    )]
    PageSizeMismatch {
        offset: u64,
        pgno: u32,
        got: usize,
        expected: u32,
    },
    /// The page index after the page block is malformed.
    #[error("invalid LTX page index at offset {offset}: {reason}")]
    BadIndex { offset: u64, reason: String },
    /// The stored file checksum does not match the content.
    #[error("LTX file checksum mismatch: stored {stored:#018x}, computed {computed:#018x}")]
    ChecksumMismatch { stored: u64, computed: u64 },
    /// A trailer field breaks the format's rules.
    #[error("invalid LTX trailer: {0}")]
    InvalidTrailer(&'static str),
    /// Bytes follow the trailer.
    #[error("invalid LTX file: unexpected data after the trailer at offset {offset}")]
    TrailingData { offset: u64 },
    /// Pages must be written in strictly ascending order.
    #[error("ltx encoder: page {pgno} written after page {prev}; pages must ascend")]
    PageOutOfOrder { pgno: u32, prev: u32 },
    /// The lock page is never stored.
    #[error("ltx encoder: page {pgno} is the lock page and is never stored")]
    LockPage { pgno: u32 },
    /// Page number zero or beyond the header's commit.
    #[error("ltx encoder: page {pgno} is outside 1..={commit}")]
    PageOutOfRange { pgno: u32, commit: u32 },
    /// A page buffer of the wrong length was given to the encoder.
    #[error("ltx encoder: page {pgno} has {got} bytes, expected {expected}")]
    WrongPageLength {
        pgno: u32,
        got: usize,
        expected: u32,
    },
    /// A snapshot must hold every page 1..=commit but the lock page, in order.
    #[error("ltx: snapshot must hold every page 1..={commit}: page {expected} missing")]
    SnapshotIncomplete { commit: u32, expected: u32 },
    /// An I/O error from the underlying reader or writer.
    #[error("ltx i/o error at offset {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
}
