//! The output side of a restore: pre-flight checks of the output path, the temporary file,
//! the integrity check, ownership, and the atomic rename (spec 4.3).
//!
//! Invariant: the output path is only ever touched by the final rename of a fully written,
//! fsynced, verified `<out>.tmp`; any failure before that removes the temp file.

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::RestoreError;
use crate::fsutil::{sync_dir, tmp_path};

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

/// Whether `out` holds a database worth keeping (see [`existing`]).
pub fn has_database(out: &Path) -> bool {
    !matches!(
        existing(out),
        Ok(Existing::Absent | Existing::EmptyFile | Existing::EmptySchema)
    )
}

/// What is at a restore's output path, for `-if-db-not-exists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Absent,
    /// A zero-byte file (with no `-wal` holding data).
    EmptyFile,
    /// A SQLite database with no tables, views or indexes (with no `-wal` holding data):
    /// what an application leaves when it crashed on its first start.
    EmptySchema,
    /// Anything else: kept.
    Database,
}

impl Existing {
    pub fn describe(self) -> &'static str {
        match self {
            Existing::Absent => "does not exist",
            Existing::EmptyFile => "is an empty (zero-byte) file",
            Existing::EmptySchema => "has no tables (an empty schema)",
            Existing::Database => "exists",
        }
    }
}

/// Classifies the output path without writing to it: a file that is empty or holds an
/// empty schema counts as absent, so that an application that crashed on its first start
/// cannot make the next prestart skip the restore. A non-empty `-wal` next to it means
/// data, so such a database is kept.
pub fn existing(out: &Path) -> Result<Existing, RestoreError> {
    let md = match fs::metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Absent),
        Err(e) => return Err(RestoreError::io("stat", out, e)),
    };
    let wal_has_data = fs::metadata(sidecar(out, "-wal")).is_ok_and(|m| m.len() > 0);
    if !md.is_file() || wal_has_data {
        return Ok(Existing::Database);
    }
    if md.len() == 0 {
        return Ok(Existing::EmptyFile);
    }
    Ok(if schema_is_empty(out) {
        Existing::EmptySchema
    } else {
        Existing::Database
    })
}

/// Whether `path` is a SQLite database with an empty schema, read without creating any
/// sidecar file (immutable mode). Anything unreadable counts as not empty.
fn schema_is_empty(path: &Path) -> bool {
    let Ok(abs) = std::path::absolute(path) else {
        return false;
    };
    let Ok(uri) = url::Url::from_file_path(&abs) else {
        return false;
    };
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    rusqlite::Connection::open_with_flags(format!("{uri}?immutable=1"), flags)
        .and_then(|c| {
            c.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .is_ok_and(|n| n == 0)
}

/// When `out` is a symbolic link, the file it points to (see
/// [`crate::fsutil::symlink_target`]).
pub fn symlink_target(out: &Path) -> Result<Option<PathBuf>, RestoreError> {
    crate::fsutil::symlink_target(out).map_err(|e| RestoreError::Output {
        path: out.display().to_string(),
        reason: e.to_string(),
    })
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
    sync_dir(dir).map_err(|e| RestoreError::io(e.op, dir, e.source))
}
