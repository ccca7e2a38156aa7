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

/// Process-wide SQLite settings; call before the first connection opens (later calls are
/// refused by SQLite and change nothing). Each connection's page cache then grows page by
/// page instead of starting with a bulk allocation of 20 pages (~87 KiB with 4 KiB pages):
/// `replicate` keeps two connections per database that read almost no pages, so with 100
/// databases that is 17 MiB.
pub fn configure_sqlite() {
    // SAFETY: SQLITE_CONFIG_PAGECACHE with a null buffer, size 0 and count 0 sets the
    // initial bulk allocation to none; sqlite3_config is called before any connection
    // exists (main, single-threaded), and returns SQLITE_MISUSE otherwise.
    unsafe {
        rusqlite::ffi::sqlite3_config(
            rusqlite::ffi::SQLITE_CONFIG_PAGECACHE,
            std::ptr::null_mut::<std::os::raw::c_void>(),
            0 as std::os::raw::c_int,
            0 as std::os::raw::c_int,
        );
    }
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
