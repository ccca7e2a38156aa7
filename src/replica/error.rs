//! The storage error contract shared by all backends.

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object or file does not exist.
    #[error("{key}: not found")]
    NotFound { key: String },
    /// The credentials were rejected. Never carries the secret.
    #[error(
        "access denied by {location}: {message}; check the access key id and secret access key (or the credentials the AWS chain resolved)"
    )]
    Auth { location: String, message: String },
    /// No credentials were configured and the AWS chain found none.
    #[error(
        "no credentials for {location}: {message}; set access-key-id and secret-access-key in the replica config, or LITESTREAM_ACCESS_KEY_ID and LITESTREAM_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) in the environment"
    )]
    NoCredentials { location: String, message: String },
    /// A request made no progress (no byte sent or received) for too long and was
    /// cancelled; its connection is dropped.
    #[error(
        "{op} {key}: no progress for {}s from {endpoint}; the server stopped answering (request cancelled)",
        after.as_secs()
    )]
    Stalled {
        op: &'static str,
        key: String,
        endpoint: String,
        after: std::time::Duration,
    },
    /// A conditional write found the object present (create-only) or changed (lease).
    #[error("{key}: the object already exists or changed (precondition failed)")]
    PreconditionFailed { key: String },
    /// The bucket does not exist.
    #[error("bucket {bucket:?} does not exist at {endpoint}; create it or correct the bucket name")]
    NoSuchBucket { bucket: String, endpoint: String },
    /// The endpoint could not be reached (connection refused, DNS, timeout) after retries.
    #[error(
        "cannot reach {endpoint}: {message}; check the endpoint address and that the server is up"
    )]
    Unreachable { endpoint: String, message: String },
    /// Any other failure of an operation on a key.
    #[error("{op} {key}: {message}")]
    Other {
        op: &'static str,
        key: String,
        message: String,
    },
    /// A local filesystem failure.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }

    pub(crate) fn io(op: &'static str, path: impl std::fmt::Display, e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotFound {
            StorageError::NotFound {
                key: path.to_string(),
            }
        } else {
            StorageError::Io {
                op,
                path: path.to_string(),
                source: e,
            }
        }
    }

    pub(crate) fn read(key: String, e: std::io::Error) -> Self {
        StorageError::Other {
            op: "read",
            key,
            message: e.to_string(),
        }
    }
}

impl From<crate::fsutil::FsError> for StorageError {
    fn from(e: crate::fsutil::FsError) -> Self {
        // Only the create-only link means "the object exists"; EEXIST from creating a
        // directory (a file in the way) is an I/O error like any other.
        if e.op == crate::fsutil::CREATE_NEW && e.source.kind() == std::io::ErrorKind::AlreadyExists
        {
            StorageError::PreconditionFailed { key: e.path }
        } else if e.source.kind() == std::io::ErrorKind::NotFound {
            StorageError::NotFound { key: e.path }
        } else {
            StorageError::Io {
                op: e.op,
                path: e.path,
                source: e.source,
            }
        }
    }
}
