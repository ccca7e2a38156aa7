//! One replicator per database on a host: an exclusive `flock` on
//! `<dir>/.<name>-liteship/replicate.lock`, held for the process's life. A second
//! `liteship replicate` of the same database fails at start naming the first.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

use super::{DbError, Meta};

/// The held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct ReplicateLock {
    _file: File,
    pub path: PathBuf,
}

impl ReplicateLock {
    /// Takes the lock of the database whose meta directories are `meta`.
    pub fn acquire(meta: &Meta, db: &std::path::Path) -> Result<ReplicateLock, DbError> {
        std::fs::create_dir_all(&meta.liteship_dir)
            .map_err(|e| DbError::io("create directory", &meta.liteship_dir, e))?;
        let path = meta.liteship_dir.join("replicate.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| DbError::io("open", &path, e))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(DbError::io("lock", &path, e));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(DbError::Invalid(format!(
                "database {} is already being replicated by another liteship on this host ({}; lock {}): stop that process first, or give this one another database",
                db.display(),
                holder.trim(),
                path.display()
            )));
        }
        let me = format!(
            "pid {} since {}\n",
            std::process::id(),
            crate::timefmt::format_rfc3339_ms(crate::timefmt::now_ms())
        );
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = file.write_all(me.as_bytes());
        Ok(ReplicateLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_first_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let meta = Meta::new(&db, None);
        let first = ReplicateLock::acquire(&meta, &db).unwrap();
        let e = ReplicateLock::acquire(&meta, &db).unwrap_err().to_string();
        assert!(
            e.contains("already being replicated")
                && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        ReplicateLock::acquire(&meta, &db).unwrap();
    }
}
