//! Crash-safe file writes shared by every layer that writes a final file: staged level-0
//! files (`db`), file-replica objects (`replica::file`), lineage markers and restore output.
//!
//! The rule: a final file is written as `<name>.tmp`, fsynced, renamed over its name, and
//! the directory fsynced, so that after a crash either the old file or the whole new one is
//! there. Leftover `.tmp` files are removed by whoever owns the directory at start.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A filesystem operation that failed, with the path it failed on.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct FsError {
    pub op: &'static str,
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

impl FsError {
    pub fn new(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        FsError {
            op,
            path: path.display().to_string(),
            source,
        }
    }

    /// ENOSPC or EDQUOT.
    pub fn is_disk_full(&self) -> bool {
        is_disk_full(&self.source)
    }
}

/// Whether an I/O error means the disk (or the user's quota) is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// `<path>.tmp`, the temp name used for every atomic write.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// fsyncs a directory so that a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::new("fsync directory", dir, e))
}

/// The process's open-file limit (soft, hard); `None` if it cannot be read.
pub fn nofile_limit() -> Option<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass and has no other effect.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    ok.then_some((lim.rlim_cur, lim.rlim_max))
}

/// Raises the soft limit on open files to the hard limit (as Go programs do), so that a
/// burst of connections cannot starve replication of descriptors (best effort).
pub fn raise_nofile_limit() {
    if let Some((_, hard)) = nofile_limit().filter(|(soft, hard)| soft < hard) {
        let lim = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct we pass; no other effect.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
}

/// The directory a path lives in (`.` for a bare name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// When `path` is a symbolic link, the file it finally points to, resolved against each
/// link's directory (the target need not exist). Writers of a database (SQLite, which
/// follows the link for its `-wal`) and liteship must then work on the target.
pub fn symlink_target(path: &Path) -> std::io::Result<Option<PathBuf>> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {}
        _ => return Ok(None),
    }
    let mut cur = path.to_path_buf();
    for _ in 0..40 {
        let next = fs::read_link(&cur)?;
        cur = parent_dir(&cur).join(next);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => continue,
            _ => return Ok(Some(cur.components().collect())),
        }
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

/// What to write.
pub enum Source<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

/// Writes `src` to `path` via `path.tmp` + fsync + rename + directory fsync, creating the
/// directory if needed. Returns the number of bytes written. On failure the temp file is
/// removed and `path` is untouched.
pub fn write_atomic(path: &Path, src: Source<'_>) -> Result<u64, FsError> {
    let dir = parent_dir(path);
    let tmp = tmp_path(path);
    let res = write_tmp(&tmp, src, None).and_then(|size| {
        fs::rename(&tmp, path).map_err(|e| FsError::new("rename", &tmp, e))?;
        sync_dir(dir)?;
        Ok(size)
    });
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// The operation of a [`write_new`] that found `path` present (`AlreadyExists`).
pub const CREATE_NEW: &str = "create new";

/// Like [`write_atomic`] but never replaces: the temp file is hard-linked to `path`, which
/// fails with `AlreadyExists` if `path` exists (on a filesystem without hard links, a
/// rename after an existence check). The directory is fsynced; the temp file removed.
/// `mtime`, if given, becomes the file's modification and access time, set before the
/// fsync so that it is as durable as the bytes.
pub fn write_new(path: &Path, src: Source<'_>, mtime: Option<SystemTime>) -> Result<u64, FsError> {
    let dir = parent_dir(path);
    let tmp = tmp_path(path);
    let res = write_tmp(&tmp, src, mtime).and_then(|size| {
        match fs::hard_link(&tmp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(FsError::new(CREATE_NEW, path, e));
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM | libc::EOPNOTSUPP | libc::EXDEV)
                ) =>
            {
                if path.exists() {
                    let e = std::io::Error::from(std::io::ErrorKind::AlreadyExists);
                    return Err(FsError::new(CREATE_NEW, path, e));
                }
                fs::rename(&tmp, path).map_err(|e| FsError::new("rename", &tmp, e))?;
            }
            Err(e) => return Err(FsError::new("link", path, e)),
        }
        sync_dir(dir)?;
        Ok(size)
    });
    let _ = fs::remove_file(&tmp);
    res
}

/// Writes and fsyncs `tmp`, creating its directory when it is missing (checked by the
/// create itself: no `mkdir` per write).
fn write_tmp(tmp: &Path, src: Source<'_>, mtime: Option<SystemTime>) -> Result<u64, FsError> {
    let mut f = match File::create(tmp) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = parent_dir(tmp);
            fs::create_dir_all(dir).map_err(|e| FsError::new("create directory", dir, e))?;
            File::create(tmp)
        }
        r => r,
    }
    .map_err(|e| FsError::new("create", tmp, e))?;
    let size = match src {
        Source::Bytes(b) => {
            f.write_all(b).map_err(|e| FsError::new("write", tmp, e))?;
            b.len() as u64
        }
        Source::File(from) => {
            let mut r = File::open(from).map_err(|e| FsError::new("open", from, e))?;
            // copy_file_range on Linux: the bytes do not pass through user space.
            std::io::copy(&mut r, &mut f).map_err(|e| FsError::new("write", tmp, e))?
        }
    };
    if let Some(t) = mtime {
        let times = fs::FileTimes::new().set_accessed(t).set_modified(t);
        f.set_times(times)
            .map_err(|e| FsError::new("set mtime of", tmp, e))?;
    }
    f.sync_all().map_err(|e| FsError::new("fsync", tmp, e))?;
    Ok(size)
}

/// Removes leftover `*.tmp` files in `dir` (a missing directory is fine).
pub fn remove_tmp_files(dir: &Path) -> Result<(), FsError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FsError::new("list", dir, e)),
    };
    for e in entries {
        let p = e.map_err(|e| FsError::new("list", dir, e))?.path();
        if p.extension().is_some_and(|x| x == "tmp") {
            fs::remove_file(&p).map_err(|e| FsError::new("remove", &p, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/x.ltx");
        assert_eq!(write_atomic(&p, Source::Bytes(b"one")).unwrap(), 3);
        assert_eq!(write_atomic(&p, Source::Bytes(b"second")).unwrap(), 6);
        assert_eq!(fs::read(&p).unwrap(), b"second");
        assert!(!tmp_path(&p).exists());
        let missing = dir.path().join("nope");
        let err = write_atomic(&p, Source::File(&missing)).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert_eq!(fs::read(&p).unwrap(), b"second", "untouched on failure");
        assert!(!tmp_path(&p).exists());
    }

    #[test]
    fn write_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.ltx");
        assert_eq!(write_new(&p, Source::Bytes(b"mine"), None).unwrap(), 4);
        let e = write_new(&p, Source::Bytes(b"theirs"), None).unwrap_err();
        assert_eq!(e.source.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"mine");
        assert!(!tmp_path(&p).exists());
    }

    /// A file where the level directory should be: an I/O error (ENOTDIR from creating the
    /// temp file), not "the object exists" (it was read as another writer's upload and
    /// stopped replication as a lost lease).
    #[test]
    fn directory_in_the_way_is_not_an_existing_object() {
        use crate::replica::StorageError;
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("0"), b"not a directory").unwrap();
        let e = write_new(&dir.path().join("0/x.ltx"), Source::Bytes(b"mine"), None).unwrap_err();
        assert_eq!(e.source.kind(), std::io::ErrorKind::NotADirectory);
        assert!(e.to_string().contains("0/x.ltx.tmp"), "{e}");
        assert!(matches!(StorageError::from(e), StorageError::Io { .. }));
        let p = dir.path().join("x.ltx");
        write_new(&p, Source::Bytes(b"mine"), None).unwrap();
        let e = write_new(&p, Source::Bytes(b"theirs"), None).unwrap_err();
        assert!(matches!(
            StorageError::from(e),
            StorageError::PreconditionFailed { .. }
        ));
    }
}
