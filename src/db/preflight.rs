//! Read-only checks of a database file before liteship touches it: it must be a regular,
//! readable file holding a SQLite database (or be empty). Nothing here writes, so a
//! database that is then refused stays exactly as it was.

use std::io::Read;
use std::path::Path;

use super::DbError;

/// The first 16 bytes of every SQLite database file.
pub const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// What is at the database path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFile {
    /// Nothing yet (the application will create it).
    Missing,
    /// A zero-byte file.
    Empty,
    /// A SQLite database.
    Database,
}

/// Inspects `path` without modifying anything.
pub fn inspect(path: &Path) -> Result<DbFile, DbError> {
    let bad = |why: String| DbError::Invalid(format!("database {}: {why}", path.display()));
    let md = match std::fs::metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DbFile::Missing),
        Err(e) => return Err(DbError::io("stat", path, e)),
    };
    if md.is_dir() {
        return Err(bad(
            "is a directory; give the path of the database file in path: or DB_PATH".into(),
        ));
    }
    if !md.is_file() {
        return Err(bad("is not a regular file".into()));
    }
    let mut f = std::fs::File::open(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            "; run liteship as a user that can read and write it"
        } else {
            ""
        };
        bad(format!("cannot be opened: {e}{hint}"))
    })?;
    if md.len() == 0 {
        return Ok(DbFile::Empty);
    }
    let mut head = [0u8; 16];
    let n = read_up_to(&mut f, &mut head).map_err(|e| DbError::io("read", path, e))?;
    if n < head.len() || &head != SQLITE_MAGIC {
        return Err(bad(
            "is not a SQLite database (file is not a database: its first bytes are not \"SQLite format 3\")".into(),
        ));
    }
    Ok(DbFile::Database)
}

/// Whether the database at `path` is, by its bytes, the one the newest staged level-0 file
/// describes: its WAL still has the position's generation (same salts, long enough), or
/// every page of that staged file equals the database file's page. A database created anew
/// has other WAL salts and other pages; a copy (an allocation's disk migrated by Nomad)
/// has the same. Read-only; `Ok(true)` when there is no staged file.
pub fn continues_staged(path: &Path, meta: &super::Meta) -> Result<bool, DbError> {
    use std::os::unix::fs::FileExt;
    let Some(txid) = meta
        .staged()
        .map_err(|e| DbError::io("list", &meta.l0_dir, e))?
        .last()
        .copied()
    else {
        return Ok(true);
    };
    let staged_path = meta.l0_path(txid);
    let f = std::fs::File::open(&staged_path).map_err(|e| DbError::io("open", &staged_path, e))?;
    let mut dec = crate::ltx::Decoder::new(std::io::BufReader::new(f))
        .map_err(|e| DbError::Invalid(format!("{}: {e}", staged_path.display())))?;
    let h = *dec.header();
    if wal_continues(path, &h) {
        return Ok(true);
    }
    let db = std::fs::File::open(path).map_err(|e| DbError::io("open", path, e))?;
    let mut staged = vec![0u8; h.page_size as usize];
    let mut ours = vec![0u8; h.page_size as usize];
    while let Some(pgno) = dec
        .next_page(&mut staged)
        .map_err(|e| DbError::Invalid(format!("{}: {e}", staged_path.display())))?
    {
        let off = u64::from(pgno - 1) * u64::from(h.page_size);
        if db.read_exact_at(&mut ours, off).is_err() || ours != staged {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The `-wal` file still holds the generation (salts) of the staged header, up to its end.
fn wal_continues(path: &Path, h: &crate::ltx::Header) -> bool {
    use std::os::unix::fs::FileExt;
    let wal = super::sidecar(path, "-wal");
    let Ok(f) = std::fs::File::open(&wal) else {
        return false;
    };
    let mut b = [0u8; crate::wal::WAL_HEADER_SIZE];
    let len = f.metadata().map_or(0, |m| m.len());
    f.read_exact_at(&mut b, 0).is_ok()
        && crate::wal::WalHeader::parse(&b).is_ok_and(|w| {
            (w.salt1, w.salt2) == (h.wal_salt1, h.wal_salt2)
                && h.wal_offset > 0
                && len >= (h.wal_offset + h.wal_size) as u64
        })
}

fn read_up_to(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_files_without_touching_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.db");
        assert_eq!(inspect(&p).unwrap(), DbFile::Missing);
        std::fs::write(&p, b"").unwrap();
        assert_eq!(inspect(&p).unwrap(), DbFile::Empty);
        std::fs::write(&p, b"hello, this is not sqlite at all").unwrap();
        let e = inspect(&p).unwrap_err().to_string();
        assert!(
            e.contains("not a SQLite database") && e.contains("a.db"),
            "{e}"
        );
        let c = rusqlite::Connection::open(dir.path().join("b.db")).unwrap();
        c.execute_batch("CREATE TABLE t(x)").unwrap();
        drop(c);
        assert_eq!(inspect(&dir.path().join("b.db")).unwrap(), DbFile::Database);
        let e = inspect(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no sidecars"
        );
    }
}
