//! SQLite helpers for tests.

use std::path::Path;

use rusqlite::Connection;

/// Opens a database in WAL mode.
pub fn open_wal(path: &Path) -> Connection {
    let c = Connection::open(path).unwrap();
    c.pragma_update(None, "journal_mode", "wal").unwrap();
    c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    c
}

/// Checkpoints (TRUNCATE) and returns the database file's bytes.
pub fn checkpointed_bytes(path: &Path) -> Vec<u8> {
    let c = Connection::open(path).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap();
    drop(c);
    std::fs::read(path).unwrap()
}

/// `PRAGMA integrity_check` result.
pub fn integrity_check(path: &Path) -> String {
    let c = Connection::open(path).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// `<db><suffix>`, e.g. the `-wal` file.
pub fn sidecar(db: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}
