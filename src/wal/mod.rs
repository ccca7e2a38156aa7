//! SQLite WAL parsing over positional reads (spec 3.2). No SQLite, no file handles of its own:
//! it reads through [`ReadAt`], so it is testable on byte buffers.
//!
//! Invariants:
//! - the checksum byte order is taken from the WAL magic (`0x377f0682` little-endian,
//!   `0x377f0683` big-endian), never from the host;
//! - reading stops (returns `None`) at the first short read, salt mismatch or checksum
//!   mismatch, exactly like SQLite's own recovery;
//! - a reader resumed at an offset is seeded from the stored checksums of the frame before it.

mod header;
mod reader;

pub use header::{FRAME_HEADER_SIZE, WAL_HEADER_SIZE, WalHeader, wal_checksum};
pub use reader::{CommittedBatch, Frame, ReadAt, WalError, WalReader};

#[cfg(test)]
mod tests;
