//! Errors of the replication layer, typed, with the cause that health, rate limiting and
//! metrics key on. Each lower layer keeps its own enum; this one wraps them with `From`.

use crate::db::{DbError, SyncError};
use crate::fsutil::FsError;
use crate::ltx::LtxError;
use crate::replica::StorageError;

/// Why an operation of the replication layer failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{context}: {source}")]
    Ltx {
        context: String,
        #[source]
        source: LtxError,
    },
    #[error("{context}: {source}")]
    Compact {
        context: String,
        #[source]
        source: crate::ltx::CompactError,
    },
    /// The replica does not hold what this process wrote or needs.
    #[error("{0}")]
    Replica(String),
    /// The writer lease is not this process's.
    #[error(transparent)]
    Lease(#[from] super::lease::LeaseError),
    /// A blocking task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl From<tokio::task::JoinError> for ReplicateError {
    fn from(e: tokio::task::JoinError) -> Self {
        ReplicateError::Task(e.to_string())
    }
}

/// What kind of fault an error is: the key of rate-limited logging, the `cause` label of
/// `liteship_errors_total`, and the words `/readyz` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// The local disk or quota is full.
    DiskFull,
    /// A local file or directory could not be read or written.
    LocalIo,
    /// SQLite refused an operation on the database.
    Database,
    /// A file failed verification.
    Corrupt,
    /// No credentials were found.
    NoCredentials,
    /// The server rejected the credentials or denied the operation.
    AccessDenied,
    /// The bucket does not exist.
    BucketMissing,
    /// The server could not be reached.
    Unreachable,
    /// A request made no progress and was cancelled.
    Stalled,
    /// The replica does not hold what it should.
    Replica,
    /// Another replicator holds the replica's writer lease.
    LeaseHeld,
    /// Staged files were replaced by a full image to bound the local disk.
    StagingLimit,
    /// Anything else.
    Other,
}

impl Cause {
    /// Whether a failure with this cause may go away by itself (a stop still waits for it
    /// until its deadline).
    pub fn is_transient(self) -> bool {
        matches!(self, Cause::Unreachable | Cause::Stalled | Cause::Other)
    }

    /// Label value and short name.
    pub fn name(self) -> &'static str {
        match self {
            Cause::DiskFull => "disk_full",
            Cause::LocalIo => "local_io",
            Cause::Database => "database",
            Cause::Corrupt => "corrupt",
            Cause::NoCredentials => "no_credentials",
            Cause::AccessDenied => "access_denied",
            Cause::BucketMissing => "bucket_missing",
            Cause::Unreachable => "unreachable",
            Cause::Stalled => "stalled",
            Cause::Replica => "replica",
            Cause::LeaseHeld => "lease_held",
            Cause::StagingLimit => "staging_limit",
            Cause::Other => "other",
        }
    }

    /// How `/readyz` words the cause.
    pub fn describe(self) -> &'static str {
        match self {
            Cause::DiskFull => "local disk full",
            Cause::LocalIo => "local file error",
            Cause::Database => "database error",
            Cause::Corrupt => "corrupt file",
            Cause::NoCredentials => "no S3 credentials found",
            Cause::AccessDenied => "credentials rejected",
            Cause::BucketMissing => "bucket missing",
            Cause::Unreachable => "server unreachable",
            Cause::Stalled => "request stalled",
            Cause::Replica => "replica incomplete",
            Cause::LeaseHeld => "writer lease held by another replicator",
            Cause::StagingLimit => "staging limit reached",
            Cause::Other => "error",
        }
    }

    pub fn of_storage(e: &StorageError) -> Cause {
        match e {
            StorageError::NotFound { .. } | StorageError::PreconditionFailed { .. } => {
                Cause::Replica
            }
            StorageError::Auth { .. } => Cause::AccessDenied,
            StorageError::NoCredentials { .. } => Cause::NoCredentials,
            StorageError::NoSuchBucket { .. } => Cause::BucketMissing,
            StorageError::Unreachable { .. } => Cause::Unreachable,
            StorageError::Stalled { .. } => Cause::Stalled,
            StorageError::Io { source, .. } if crate::fsutil::is_disk_full(source) => {
                Cause::DiskFull
            }
            StorageError::Io { .. } => Cause::LocalIo,
            StorageError::Other { .. } => Cause::Other,
        }
    }

    pub fn of_sync(e: &SyncError) -> Cause {
        if e.is_disk_full() {
            return Cause::DiskFull;
        }
        match e {
            SyncError::Db(d) => Cause::of_db(d),
            SyncError::Wal(_) | SyncError::Ltx(_) => Cause::Corrupt,
            SyncError::Staging { .. } => Cause::LocalIo,
        }
    }

    pub fn of_db(e: &DbError) -> Cause {
        match e {
            DbError::Sqlite { source, .. } if is_sqlite_full(source) => Cause::DiskFull,
            DbError::Sqlite { .. } => Cause::Database,
            DbError::Io { source, .. } if crate::fsutil::is_disk_full(source) => Cause::DiskFull,
            DbError::Io { .. } => Cause::LocalIo,
            DbError::Invalid(_) | DbError::Replaced { .. } | DbError::WalReplaced { .. } => {
                Cause::Database
            }
        }
    }
}

fn is_sqlite_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

impl ReplicateError {
    pub fn cause(&self) -> Cause {
        match self {
            ReplicateError::Sync(e) => Cause::of_sync(e),
            ReplicateError::Db(e) => Cause::of_db(e),
            ReplicateError::Storage(e) => Cause::of_storage(e),
            ReplicateError::Fs(e) if e.is_disk_full() => Cause::DiskFull,
            ReplicateError::Fs(_) => Cause::LocalIo,
            ReplicateError::Ltx { .. } | ReplicateError::Compact { .. } => Cause::Corrupt,
            ReplicateError::Replica(_) => Cause::Replica,
            ReplicateError::Lease(super::lease::LeaseError::Storage { cause, .. }) => *cause,
            ReplicateError::Lease(_) => Cause::LeaseHeld,
            ReplicateError::Task(_) => Cause::Other,
        }
    }
}
