//! The `file` replica backend in Litestream's layout: `<root>/ltx/<level>/<min>-<max>.ltx`.
//!
//! Every write goes to `<name>.tmp` with its mtime and atime set to the LTX header
//! timestamp (which Litestream reads back as the file's creation time, spec 2.1), is
//! fsynced, linked to the final name (never replacing), and the directory is fsynced.

use std::fs;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;

use bytes::Bytes;

use super::{
    Body, ByteReader, LEASE_NAME, LtxFileInfo, Precondition, RawEntry, ReplicaClient, StorageError,
    Version, system_time_from_ms,
};

/// The lock file that serialises lease swaps on a file replica.
const LEASE_LOCK_NAME: &str = ".liteship-lease.lock";
use crate::fsutil::{self, Source, sync_dir};
use crate::ltx::{format_file_name, parse_file_name};

/// A replica in a local directory.
#[derive(Debug, Clone)]
pub struct FileReplica {
    root: PathBuf,
}

impl FileReplica {
    /// A replica rooted at `root` (`a//b/` and `a/b` are one replica).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root: PathBuf = root.into();
        FileReplica {
            root: root.components().collect(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn level_dir(&self, level: u8) -> PathBuf {
        self.root.join("ltx").join(level.to_string())
    }

    pub fn path(&self, level: u8, min_txid: u64, max_txid: u64) -> PathBuf {
        self.level_dir(level)
            .join(format_file_name(min_txid, max_txid))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Other {
            op: "run",
            key: "blocking file task".into(),
            message: e.to_string(),
        })?
}

#[async_trait]
impl ReplicaClient for FileReplica {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn key(&self, level: u8, min_txid: u64, max_txid: u64) -> String {
        self.path(level, min_txid, max_txid).display().to_string()
    }

    async fn list(&self, level: u8) -> Result<Vec<LtxFileInfo>, StorageError> {
        let dir = self.level_dir(level);
        blocking(move || list_dir(&dir, level)).await
    }

    async fn open(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ByteReader, StorageError> {
        let path = self.path(level, min_txid, max_txid);
        let file = blocking(move || {
            let mut f =
                fs::File::open(&path).map_err(|e| StorageError::io("open", path.display(), e))?;
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| StorageError::io("seek", path.display(), e))?;
            Ok(f)
        })
        .await?;
        let file = tokio::fs::File::from_std(file);
        Ok(match len {
            Some(n) => Box::pin(tokio::io::AsyncReadExt::take(file, n)),
            None => Box::pin(file),
        })
    }

    async fn write(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        body: Body,
        timestamp_ms: i64,
    ) -> Result<LtxFileInfo, StorageError> {
        let path = self.path(level, min_txid, max_txid);
        blocking(move || {
            let size = write_body(&path, body, system_time_from_ms(timestamp_ms))?;
            Ok(LtxFileInfo {
                level,
                min_txid,
                max_txid,
                size,
                created_at: system_time_from_ms(timestamp_ms),
            })
        })
        .await
    }

    async fn copy(&self, src: &LtxFileInfo, level: u8) -> Result<LtxFileInfo, StorageError> {
        let (from, to) = (
            self.path(src.level, src.min_txid, src.max_txid),
            self.path(level, src.min_txid, src.max_txid),
        );
        let dir = self.level_dir(level);
        blocking(move || {
            fs::create_dir_all(&dir)
                .map_err(|e| StorageError::io("create directory", dir.display(), e))?;
            // A second name for the same immutable bytes (and mtime); create-only.
            match fs::hard_link(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(StorageError::PreconditionFailed {
                        key: to.display().to_string(),
                    });
                }
                Err(e) => return Err(StorageError::io("link", to.display(), e)),
            }
            sync_dir(&dir).map_err(StorageError::from)
        })
        .await?;
        Ok(LtxFileInfo {
            level,
            ..src.clone()
        })
    }

    async fn delete(&self, level: u8, files: &[(u64, u64)]) -> Result<(), StorageError> {
        let paths: Vec<PathBuf> = files
            .iter()
            .map(|(a, b)| self.path(level, *a, *b))
            .collect();
        let dir = self.level_dir(level);
        blocking(move || {
            for p in &paths {
                match fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io("delete", p.display(), e)),
                }
            }
            if !paths.is_empty() && dir.exists() {
                sync_dir(&dir)?;
            }
            Ok(())
        })
        .await
    }

    async fn created_at(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
    ) -> Result<SystemTime, StorageError> {
        let path = self.path(level, min_txid, max_txid);
        blocking(move || {
            let md =
                fs::metadata(&path).map_err(|e| StorageError::io("stat", path.display(), e))?;
            md.modified()
                .map_err(|e| StorageError::io("stat", path.display(), e))
        })
        .await
    }

    async fn read_lease(&self) -> Result<Option<(Bytes, Version)>, StorageError> {
        let path = self.root.join(LEASE_NAME);
        blocking(move || match fs::read(&path) {
            Ok(b) => {
                let v = version_of(&b);
                Ok(Some((Bytes::from(b), v)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("read", path.display(), e)),
        })
        .await
    }

    async fn write_lease(&self, body: Bytes, cond: Precondition) -> Result<Version, StorageError> {
        let root = self.root.clone();
        blocking(move || swap_lease(&root, &body, &cond)).await
    }

    async fn list_raw(&self, dir: &str) -> Result<Vec<RawEntry>, StorageError> {
        let dir = self.root.join(dir);
        blocking(move || list_raw_dir(&dir)).await
    }

    async fn open_raw(&self, path: &str) -> Result<ByteReader, StorageError> {
        let path = self.root.join(path);
        let f = tokio::fs::File::open(&path)
            .await
            .map_err(|e| StorageError::io("open", path.display(), e))?;
        Ok(Box::pin(f))
    }
}

fn list_raw_dir(dir: &Path) -> Result<Vec<RawEntry>, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io("list", dir.display(), e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list", dir.display(), e))?;
        let Ok(md) = entry.metadata() else { continue };
        out.push(RawEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            size: md.len(),
            modified: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            is_dir: md.is_dir(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn list_dir(dir: &Path, level: u8) -> Result<Vec<LtxFileInfo>, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io("list", dir.display(), e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list", dir.display(), e))?;
        let name = entry.file_name();
        let Some((min_txid, max_txid)) = name.to_str().and_then(parse_file_name) else {
            continue;
        };
        let md = match entry.metadata() {
            Ok(md) => md,
            // Deleted between readdir and stat (retention running concurrently).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StorageError::io("stat", entry.path().display(), e)),
        };
        if !md.is_file() {
            continue;
        }
        out.push(LtxFileInfo {
            level,
            min_txid,
            max_txid,
            size: md.len(),
            created_at: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    out.sort_by_key(|f| (f.min_txid, f.max_txid));
    Ok(out)
}

/// Creates `path` with `body` atomically, never replacing (see [`fsutil::write_new`]).
/// The header timestamp becomes the file's mtime (Litestream reads it back as the
/// object's creation time).
fn write_body(path: &Path, body: Body, mtime: SystemTime) -> Result<u64, StorageError> {
    let res = match &body {
        Body::Bytes(b) => fsutil::write_new(path, Source::Bytes(b), Some(mtime)),
        Body::File(src) => fsutil::write_new(path, Source::File(src), Some(mtime)),
    };
    res.map_err(StorageError::from)
}

/// The lease object's version on file: its content checksum.
fn version_of(body: &[u8]) -> Version {
    Version(format!("{:016x}", crate::ltx::crc64(body)))
}

/// Compare-and-swap of the lease file, under an exclusive `flock` of a lock file next to
/// it (held only for the swap).
fn swap_lease(root: &Path, body: &[u8], cond: &Precondition) -> Result<Version, StorageError> {
    use std::os::unix::io::AsRawFd;
    fs::create_dir_all(root)
        .map_err(|e| StorageError::io("create directory", root.display(), e))?;
    let lock_path = root.join(LEASE_LOCK_NAME);
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StorageError::io("open", lock_path.display(), e))?;
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(StorageError::io("lock", lock_path.display(), e));
    }
    let path = root.join(LEASE_NAME);
    let current = match fs::read(&path) {
        Ok(b) => Some(version_of(&b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StorageError::io("read", path.display(), e)),
    };
    let holds = match (cond, &current) {
        (Precondition::Absent, None) => true,
        (Precondition::Matches(v), Some(c)) => v == c,
        _ => false,
    };
    if !holds {
        return Err(StorageError::PreconditionFailed {
            key: path.display().to_string(),
        });
    }
    fsutil::write_atomic(&path, Source::Bytes(body))?;
    Ok(version_of(body))
}
