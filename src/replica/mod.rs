//! Replica storage: the [`ReplicaClient`] trait and its backends.
//!
//! The trait speaks in domain verbs (list the LTX files of a level, open one with a byte
//! range, write one, delete some, read a file's creation time). Each backend owns its key
//! layout, which differs between backends exactly as in Litestream 0.5 (spec 2.1):
//! - `file`: `<root>/ltx/<level decimal>/<min:016x>-<max:016x>.ltx`
//! - `s3`:   `<path>/<level %04x>/<min:016x>-<max:016x>.ltx`
//!
//! Error contract: a missing object is reported only as [`StorageError::NotFound`]; a write
//! whose condition does not hold (the object exists, or changed) only as
//! [`StorageError::PreconditionFailed`]; every other failure is another variant, and none
//! carries a secret.
//!
//! Writes never replace: LTX objects are created only if absent (S3 `If-None-Match: *`,
//! `link(2)` on file), and the lease object changes only by compare-and-swap.

mod error;
pub mod file;
pub mod read;
pub mod s3;
mod s3_net;
pub mod sse;
pub mod url;

use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncRead;

pub use error::StorageError;
pub use url::{ReplicaUrl, S3Config};

/// Level of the snapshot files (`0009` / `9`).
pub const SNAPSHOT_LEVEL: u8 = 9;
/// Highest level number Litestream uses.
pub const MAX_LEVEL: u8 = 9;

/// One LTX file in a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LtxFileInfo {
    pub level: u8,
    pub min_txid: u64,
    pub max_txid: u64,
    pub size: u64,
    /// LastModified on S3, the file mtime (set to the LTX header timestamp) on `file`.
    pub created_at: SystemTime,
}

impl LtxFileInfo {
    pub fn name(&self) -> String {
        crate::ltx::format_file_name(self.min_txid, self.max_txid)
    }
}

/// What to upload: bytes in memory, or a local file streamed from disk.
#[derive(Debug, Clone)]
pub enum Body {
    Bytes(Bytes),
    File(PathBuf),
}

/// An entry of a raw listing (used only for Litestream 0.3's `generations/` layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub name: String,
    pub size: u64,
    pub modified: SystemTime,
    pub is_dir: bool,
}

/// Failed request attempts that the backend retries by itself (a stall, a refused
/// connection): how many so far and the latest, so that the caller can report them while
/// the operation is still retrying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptTrouble {
    pub count: u64,
    /// The latest attempt made no progress (as opposed to not connecting at all).
    pub stalled: bool,
    pub message: String,
}

/// An opaque version of the lease object (the S3 ETag; a content checksum on file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

/// The condition of a lease write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Only if there is no lease object.
    Absent,
    /// Only if the lease object still has this version.
    Matches(Version),
}

/// Name of the lease object, next to the level directories.
pub const LEASE_NAME: &str = "liteship-lease.json";

/// A stream of an object's bytes.
pub type ByteReader = Pin<Box<dyn AsyncRead + Send>>;

/// The storage verbs replication and restore need.
#[async_trait]
pub trait ReplicaClient: Send + Sync + std::fmt::Debug {
    /// `"file"` or `"s3"`, as Litestream names replica types.
    fn kind(&self) -> &'static str;

    /// Where the replica lives, for messages (never contains a secret).
    fn location(&self) -> String;

    /// Attempts that failed and are being retried inside the backend (S3 only).
    fn attempt_trouble(&self) -> Option<AttemptTrouble> {
        None
    }

    /// The key or path of one LTX file, for messages.
    fn key(&self, level: u8, min_txid: u64, max_txid: u64) -> String;

    /// The LTX files of `level`, ordered by (MinTXID, MaxTXID). A level that does not exist
    /// is empty, not an error. Names that are not LTX file names are skipped.
    async fn list(&self, level: u8) -> Result<Vec<LtxFileInfo>, StorageError>;

    /// Opens a file at byte `offset`, reading `len` bytes or to the end.
    async fn open(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ByteReader, StorageError>;

    /// Creates a file atomically, recording `timestamp_ms` (the LTX header timestamp) as
    /// its creation time. Never replaces: if the file exists, `PreconditionFailed`.
    async fn write(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        body: Body,
        timestamp_ms: i64,
    ) -> Result<LtxFileInfo, StorageError>;

    /// Copies the file `src` to `level` under the same TXID range, inside the replica (S3
    /// CopyObject, a hard link on `file`): no byte goes over the network. Never replaces.
    /// Backends that cannot copy say so with an error; callers then upload instead.
    async fn copy(&self, src: &LtxFileInfo, level: u8) -> Result<LtxFileInfo, StorageError> {
        let _ = level;
        Err(StorageError::Other {
            op: "copy",
            key: self.key(src.level, src.min_txid, src.max_txid),
            message: "this replica cannot copy objects".into(),
        })
    }

    /// Deletes the given (min, max) files of a level; files already gone are not an error.
    async fn delete(&self, level: u8, files: &[(u64, u64)]) -> Result<(), StorageError>;

    /// The creation time recorded when the file was written (S3 `litestream-timestamp`
    /// metadata, falling back to LastModified; the file mtime on `file`).
    async fn created_at(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
    ) -> Result<SystemTime, StorageError>;

    /// Reads the lease object and its version (`None` when there is none).
    async fn read_lease(&self) -> Result<Option<(Bytes, Version)>, StorageError>;

    /// Writes the lease object if `cond` holds (else `PreconditionFailed`); returns the
    /// new version.
    async fn write_lease(&self, body: Bytes, cond: Precondition) -> Result<Version, StorageError>;

    /// Lists the entries directly under `dir` (slash-separated, relative to the replica
    /// root). Only for reading Litestream 0.3 replicas; a missing directory is empty.
    async fn list_raw(&self, dir: &str) -> Result<Vec<RawEntry>, StorageError>;

    /// Opens the object at `path` (relative to the replica root), for Litestream 0.3 data.
    async fn open_raw(&self, path: &str) -> Result<ByteReader, StorageError>;
}

/// Converts LTX header milliseconds to a `SystemTime`.
pub fn system_time_from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Reads a whole (small) file into memory.
pub async fn read_all(
    client: &dyn ReplicaClient,
    level: u8,
    min_txid: u64,
    max_txid: u64,
) -> Result<Vec<u8>, StorageError> {
    use tokio::io::AsyncReadExt;
    let mut r = client.open(level, min_txid, max_txid, 0, None).await?;
    let mut buf = Vec::new();
    r.read_to_end(&mut buf)
        .await
        .map_err(|e| StorageError::read(client.key(level, min_txid, max_txid), e))?;
    Ok(buf)
}
