//! liteship: a Litestream 0.5 compatible SQLite replication sidecar.
//!
//! Layout:
//! - [`ltx`]: the LTX file format, a pure codec (no I/O of its own).
//! - [`wal`]: SQLite WAL parsing over positional reads (no SQLite).
//! - [`replica`]: the `ReplicaClient` storage trait, replica URLs, and the `file` and `s3`
//!   backends in Litestream's key layouts.
//! - [`retry`]: backoff with jitter and the retryable-error policy.
//! - [`fsutil`]: crash-safe writes (temp file, fsync, rename, directory fsync).

pub mod cli;
pub mod cmd;
pub mod config;
pub mod db;
pub mod fsutil;
pub mod logging;
pub mod ltx;
pub mod replica;
pub mod replicate;
pub mod restore;
pub mod retry;
pub mod timefmt;
pub mod wal;

/// The SQLite version bundled into the binary.
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}

#[cfg(test)]
mod tests {
    /// SQLite before 3.51.3 carries the WAL-reset corruption bug (spec 7 #2).
    #[test]
    fn bundled_sqlite_has_the_wal_reset_fix() {
        assert!(
            rusqlite::version_number() >= 3_051_003,
            "bundled SQLite {}",
            rusqlite::version()
        );
    }
}
