//! The output side of a restore: pre-flight checks of the output path, the temporary file,
//! the integrity check, ownership, and the atomic rename (spec 4.3).
//!
//! Invariant: the output path is only ever touched by the final rename of a fully written,
//! fsynced, verified `<out>.tmp`; any failure before that removes the temp file.

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::RestoreError;
use crate::replica::file::{sync_dir, tmp_path};

/// SQLite sidecar files that must not survive next to a replaced database.
pub const SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Which SQLite check to run on the restored file before it is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityCheck {
    None,
    Quick,
    Full,
}

impl std::str::FromStr for IntegrityCheck {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(IntegrityCheck::None),
            "quick" => Ok(IntegrityCheck::Quick),
            "full" => Ok(IntegrityCheck::Full),
            _ => Err(format!(
                "invalid -integrity-check {s:?}: use none, quick or full"
            )),
        }
    }
}

impl IntegrityCheck {
    pub fn name(self) -> &'static str {
        match self {
            IntegrityCheck::None => "none",
            IntegrityCheck::Quick => "quick",
            IntegrityCheck::Full => "full",
        }
    }
}

pub fn sidecar(out: &Path, suffix: &str) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Whether `out` holds a database worth keeping (exists and is not empty).
pub fn has_database(out: &Path) -> bool {
    fs::metadata(out).is_ok_and(|m| !m.is_file() || m.len() > 0)
}

/// Refuses to restore over something that exists, unless `force`.
pub fn check_output(out: &Path, force: bool) -> Result<(), RestoreError> {
    let err = |reason: String| RestoreError::Output {
        path: out.display().to_string(),
        reason,
    };
    if let Ok(md) = fs::metadata(out) {
        if md.is_dir() {
            return Err(err(
                "is a directory; give the database file path with -o".into()
            ));
        }
        if md.len() > 0 && !force {
            return Err(err("already exists and is not empty; use -force to overwrite it, or -if-db-not-exists to keep it".into()));
        }
    }
    if !force {
        for s in SIDECARS {
            if sidecar(out, s).exists() {
                return Err(err(format!(
                    "{} exists next to it; use -force to replace the database and its sidecar files",
                    sidecar(out, s).display()
                )));
            }
        }
    }
    Ok(())
}

/// Creates the parent directory and a fresh `<out>.tmp`.
pub fn create_tmp(out: &Path) -> Result<(PathBuf, File), RestoreError> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| RestoreError::io("create directory", dir, e))?;
    }
    let tmp = tmp_path(out);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| RestoreError::io("create", &tmp, e))?;
    Ok((tmp, file))
}

/// Runs `PRAGMA quick_check`/`integrity_check` on the file without creating -wal/-shm files.
pub fn integrity_check(path: &Path, check: IntegrityCheck) -> Result<(), RestoreError> {
    let pragma = match check {
        IntegrityCheck::None => return Ok(()),
        IntegrityCheck::Quick => "PRAGMA quick_check",
        IntegrityCheck::Full => "PRAGMA integrity_check",
    };
    let uri = url::Url::from_file_path(path)
        .map(|u| format!("{u}?immutable=1"))
        .map_err(|()| {
            RestoreError::io("open", path, std::io::Error::other("not an absolute path"))
        })?;
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let fail = |reason: String| RestoreError::IntegrityCheck { reason };
    let conn =
        rusqlite::Connection::open_with_flags(&uri, flags).map_err(|e| fail(e.to_string()))?;
    let mut stmt = conn.prepare(pragma).map_err(|e| fail(e.to_string()))?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| fail(e.to_string()))?;
    if rows != ["ok"] {
        let shown: Vec<_> = rows.into_iter().take(5).collect();
        return Err(fail(shown.join("; ")));
    }
    Ok(())
}

/// Sets the owner (uid, gid) and mode of the restored file. With no owner given and when
/// running as root, the file takes the owner of its directory, so that an application
/// running as another user can open it (Litestream #630).
pub fn set_owner_and_mode(
    tmp: &Path,
    out: &Path,
    owner: Option<(u32, Option<u32>)>,
    mode: Option<u32>,
) -> Result<(), RestoreError> {
    let owner = owner.or_else(|| {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let dir = out
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let md = fs::metadata(dir).ok()?;
        (root && md.uid() != 0).then(|| (md.uid(), Some(md.gid())))
    });
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(tmp, Some(uid), gid)
            .map_err(|e| RestoreError::io("chown", tmp, e))?;
    }
    if let Some(m) = mode {
        fs::set_permissions(tmp, fs::Permissions::from_mode(m))
            .map_err(|e| RestoreError::io("chmod", tmp, e))?;
    }
    Ok(())
}

/// Removes stale sidecars (with `force`), renames `tmp` over `out`, fsyncs the directory.
pub fn publish(tmp: &Path, out: &Path, force: bool) -> Result<(), RestoreError> {
    if force {
        for s in SIDECARS {
            let p = sidecar(out, s);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RestoreError::io("remove", &p, e)),
            }
        }
    }
    fs::rename(tmp, out).map_err(|e| RestoreError::io("rename", tmp, e))?;
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_dir(dir).map_err(RestoreError::Storage)
}
