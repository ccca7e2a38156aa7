//! liteship: a Litestream 0.5 compatible SQLite replication sidecar.
//!
//! Layout:
//! - [`ltx`]: the LTX file format, a pure codec (no I/O of its own).
//! - [`wal`]: SQLite WAL parsing over positional reads (no SQLite).
//! - [`replica`]: the `ReplicaClient` storage trait, replica URLs, and the `file` and `s3`
//!   backends in Litestream's key layouts.
//! - [`retry`]: backoff with jitter and the retryable-error policy.

pub mod ltx;
pub mod replica;
pub mod timefmt;
pub mod wal;
