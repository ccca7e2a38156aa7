//! The writer lease: one replicator at a time may write to a replica.
//!
//! The lease is a small JSON object next to the level directories (`<path>/liteship-lease.json`
//! on S3, `<root>/liteship-lease.json` on file; Litestream's listings never see it). It names
//! its holder (host, pid, database, since when) and when it was last renewed. It changes
//! only by compare-and-swap ([`ReplicaClient::write_lease`]): created when absent, replaced
//! when its version is the one read. So two replicators can never both believe they hold it.
//!
//! - **Acquire** before the first upload: create it, or take it over when it was released
//!   or not renewed for its TTL (the holder crashed or was cut off).
//! - **Renew** before an upload when it is older than a third of its TTL; an idle database
//!   therefore sends no request for it. A renewal that finds another holder means the lease
//!   was lost: nothing more is uploaded, and the database is failed.
//! - **Release** at a clean shutdown, after the final upload, so a successor starts at once.
//!
//! Every LTX object is itself created only if absent, so a replicator that lost its lease
//! without noticing still cannot replace another's files (its upload fails with a
//! precondition error, which is handled as a lost lease).
//!
//! TTL expiry is judged on the successor's clock against the holder's renewal time: hosts
//! need clocks within a fraction of the TTL (NTP).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::replica::{Precondition, ReplicaClient, StorageError, Version};

/// Default lease TTL: a crashed holder blocks a successor for at most this long, and a
/// holder must reach the server at least once per third of it while writing.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    pub db: String,
    /// Device, inode and birth time of the database file (`dev:ino:btime`): the same path in
    /// two containers or allocations is not the same database.
    #[serde(default)]
    pub file: String,
    /// Random per process: tells this process from another with the same host and pid.
    pub token: String,
}

/// The lease object's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseDoc {
    pub holder: Holder,
    /// When the holder acquired it (ms since the epoch).
    pub since_ms: i64,
    /// When the holder last renewed it.
    pub renewed_ms: i64,
    pub ttl_ms: u64,
    /// Released at a clean shutdown: free to take.
    #[serde(default)]
    pub released: bool,
}

impl LeaseDoc {
    fn expired(&self, now_ms: i64) -> bool {
        self.released || now_ms.saturating_sub(self.renewed_ms) > self.ttl_ms as i64
    }

    /// "host H pid P (database D) since T".
    pub fn describe(&self) -> String {
        format!(
            "host {} pid {} (database {}) since {}",
            self.holder.host,
            self.holder.pid,
            self.holder.db,
            crate::timefmt::format_rfc3339_ms(self.since_ms)
        )
    }
}

/// Why the lease is not ours.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseError {
    /// Another replicator holds it and renewed it recently.
    #[error(
        "the replica's writer lease is held by {holder}; not uploading until it is released or expires (in about {}s)",
        expires_in.as_secs()
    )]
    Held {
        holder: String,
        expires_in: Duration,
    },
    /// It was taken over by another replicator while this one held it.
    #[error(
        "the replica's writer lease was taken over by {by}: another replicator writes to this replica, so this one stopped uploading; the replica keeps that replicator's history"
    )]
    Lost { by: String },
    /// The server could not be asked.
    #[error("writer lease: {message}")]
    Storage {
        message: String,
        cause: super::error::Cause,
    },
    /// The lease object is not ours to read.
    #[error("writer lease object is unreadable: {0}; delete it only when no replicator runs")]
    Corrupt(String),
    /// Another database of this very process holds it: two databases share one replica.
    #[error(
        "database {other} of this same process replicates to this replica: give each database its own replica path"
    )]
    SameProcess { other: String },
}

#[derive(Debug)]
enum State {
    Free,
    Held {
        version: Version,
        doc: LeaseDoc,
        renewed: Instant,
    },
    Lost(String),
}

/// This process's lease on one replica.
#[derive(Debug)]
pub struct Lease {
    me: Mutex<Holder>,
    ttl: Duration,
    state: Mutex<State>,
    /// `Some(false)` once a probe showed the server ignores conditional writes.
    conditional: Mutex<Option<bool>>,
}

impl Lease {
    /// A lease for database `db` whose file is `file` (`dev:ino`, see [`file_id`]).
    pub fn new(db: &str, file: String, ttl: Duration) -> Lease {
        Lease {
            me: Mutex::new(Holder {
                host: hostname(),
                pid: std::process::id(),
                db: db.to_string(),
                file,
                token: format!("{:016x}", rand::random::<u64>()),
            }),
            ttl,
            state: Mutex::new(State::Free),
            conditional: Mutex::new(None),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn me(&self) -> Holder {
        self.me.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records the database file's identity (`dev:ino`) once it exists.
    pub fn set_file(&self, file: String) {
        self.me.lock().unwrap_or_else(|e| e.into_inner()).file = file;
    }

    /// Whether the server honours conditional writes (`None`: not probed yet).
    pub fn conditional_writes(&self) -> Option<bool> {
        *self.conditional.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_held(&self) -> bool {
        matches!(*self.lock(), State::Held { .. })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `holder` is this process, or an earlier replicator of the same database on
    /// this host: this process holds the host's replicate lock of that database, so that
    /// one has ended (a crash or kill) and need not be waited for.
    /// (A hard link or a second path to the same file is another process's own lock, so
    /// the holder's pid must also be gone.)
    fn succeeds(&self, holder: &Holder) -> bool {
        let me = self.me();
        holder == &me
            || (holder.host == me.host
                && !holder.file.is_empty()
                && holder.file == me.file
                && !pid_alive(holder.pid))
    }

    /// Whether `holder` was this very database file on this host.
    pub fn same_file(&self, holder: &Holder) -> bool {
        let me = self.me();
        holder.host == me.host && !holder.file.is_empty() && holder.file == me.file
    }

    fn doc(&self, since_ms: i64) -> LeaseDoc {
        LeaseDoc {
            holder: self.me(),
            since_ms,
            renewed_ms: crate::timefmt::now_ms(),
            ttl_ms: self.ttl.as_millis() as u64,
            released: false,
        }
    }

    /// One attempt to acquire the lease. Returns the previous holder, if there was one.
    pub async fn acquire(&self, client: &dyn ReplicaClient) -> Result<Option<Holder>, LeaseError> {
        if let State::Lost(by) = &*self.lock() {
            return Err(LeaseError::Lost { by: by.clone() });
        }
        let current = read(client).await?;
        let now = crate::timefmt::now_ms();
        let me = self.me();
        if let Some((doc, _)) = &current
            && !doc.released
            && doc.holder.host == me.host
            && doc.holder.pid == me.pid
            && doc.holder.token != me.token
        {
            return Err(LeaseError::SameProcess {
                other: doc.holder.db.clone(),
            });
        }
        let cond = match &current {
            None => Precondition::Absent,
            Some((doc, version)) if doc.expired(now) || self.succeeds(&doc.holder) => {
                if !doc.released && doc.holder != self.me() {
                    tracing::warn!(db = %self.me().db, holder = %doc.describe(), "taking over the writer lease of a replicator that stopped renewing it");
                }
                Precondition::Matches(version.clone())
            }
            Some((doc, _)) => {
                let left = doc.renewed_ms + doc.ttl_ms as i64 - now;
                return Err(LeaseError::Held {
                    holder: doc.describe(),
                    expires_in: Duration::from_millis(left.max(0) as u64),
                });
            }
        };
        let doc = self.doc(now);
        let version = write(client, &doc, cond.clone()).await?;
        if matches!(cond, Precondition::Absent) {
            self.probe(client, &doc).await;
        }
        *self.lock() = State::Held {
            version,
            doc,
            renewed: Instant::now(),
        };
        tracing::info!(db = %self.me().db, ttl_s = self.ttl.as_secs(), "acquired the replica's writer lease");
        Ok(current.map(|(d, _)| d.holder))
    }

    /// A second create must fail; when it does not, the server ignores conditional writes
    /// and the lease cannot protect the replica (said once, loudly).
    async fn probe(&self, client: &dyn ReplicaClient, doc: &LeaseDoc) {
        let honoured = match write(client, doc, Precondition::Absent).await {
            Err(LeaseError::Lost { .. }) => true,
            Ok(_) => false,
            Err(_) => return, // unknown; probe again at the next acquisition
        };
        *self.conditional.lock().unwrap_or_else(|e| e.into_inner()) = Some(honoured);
        if !honoured {
            tracing::warn!(db = %self.me().db, replica = %client.location(), "the S3 server ignores conditional writes (If-None-Match/If-Match): the writer lease and create-only uploads cannot stop a second replicator from writing to this replica; make sure only one runs (AWS S3, MinIO, R2, B2 and GCS honour them)");
        }
    }

    /// Renews the lease if it is older than a third of its TTL (no request otherwise).
    /// Called before every upload and delete.
    pub async fn ensure(&self, client: &dyn ReplicaClient) -> Result<(), LeaseError> {
        let held = match &*self.lock() {
            State::Held {
                version,
                doc,
                renewed,
            } => {
                if renewed.elapsed() < self.ttl / 3 {
                    return Ok(());
                }
                Some((version.clone(), doc.clone()))
            }
            State::Lost(by) => return Err(LeaseError::Lost { by: by.clone() }),
            State::Free => None,
        };
        let Some((version, doc)) = held else {
            return self.acquire(client).await.map(|_| ());
        };
        let next = self.doc(doc.since_ms);
        match write(client, &next, Precondition::Matches(version)).await {
            Ok(version) => {
                *self.lock() = State::Held {
                    version,
                    doc: next,
                    renewed: Instant::now(),
                };
                Ok(())
            }
            Err(LeaseError::Lost { .. }) => self.recreate_or_lose(client, &doc).await,
            Err(e) => Err(e),
        }
    }

    /// A renewal failed its condition. If the lease object is simply gone (the replica was
    /// emptied), nobody holds it: it is created again and kept. Otherwise it is lost.
    async fn recreate_or_lose(
        &self,
        client: &dyn ReplicaClient,
        doc: &LeaseDoc,
    ) -> Result<(), LeaseError> {
        if let Ok(None) = read(client).await {
            let next = self.doc(doc.since_ms);
            if let Ok(version) = write(client, &next, Precondition::Absent).await {
                tracing::warn!(db = %self.me().db, "the writer lease object disappeared from the replica; created it again");
                *self.lock() = State::Held {
                    version,
                    doc: next,
                    renewed: Instant::now(),
                };
                return Ok(());
            }
        }
        Err(self.lost(client).await)
    }

    /// Marks the lease lost (after a failed compare-and-swap or a create that found an
    /// object of someone else), naming the new holder if it can be read.
    pub async fn lost(&self, client: &dyn ReplicaClient) -> LeaseError {
        let by = match read(client).await {
            // Still ours: the other writer ignores the lease.
            Ok(Some((doc, _))) if doc.holder.token == self.me().token => {
                "a writer that does not take the writer lease (a Litestream process, or one whose server ignored conditional writes)".to_string()
            }
            Ok(Some((doc, _))) => doc.describe(),
            _ => "another replicator".to_string(),
        };
        *self.lock() = State::Lost(by.clone());
        LeaseError::Lost { by }
    }

    /// Releases the lease (a clean shutdown): a successor may take it at once.
    pub async fn release(&self, client: &dyn ReplicaClient) {
        let (version, doc) = match &*self.lock() {
            State::Held { version, doc, .. } => (version.clone(), doc.clone()),
            _ => return,
        };
        let released = LeaseDoc {
            released: true,
            renewed_ms: crate::timefmt::now_ms(),
            ..doc
        };
        match write(client, &released, Precondition::Matches(version)).await {
            Ok(_) => {
                *self.lock() = State::Free;
                tracing::info!(db = %self.me().db, "released the replica's writer lease");
            }
            Err(e) => {
                tracing::warn!(db = %self.me().db, error = %e, "could not release the writer lease; a successor waits for it to expire")
            }
        }
    }
}

async fn read(client: &dyn ReplicaClient) -> Result<Option<(LeaseDoc, Version)>, LeaseError> {
    match client.read_lease().await {
        Ok(None) => Ok(None),
        Ok(Some((body, version))) => serde_json::from_slice::<LeaseDoc>(&body)
            .map(|d| Some((d, version)))
            .map_err(|e| LeaseError::Corrupt(e.to_string())),
        Err(e) => Err(storage(&e)),
    }
}

fn storage(e: &StorageError) -> LeaseError {
    LeaseError::Storage {
        message: e.to_string(),
        cause: super::error::Cause::of_storage(e),
    }
}

async fn write(
    client: &dyn ReplicaClient,
    doc: &LeaseDoc,
    cond: Precondition,
) -> Result<Version, LeaseError> {
    let body = Bytes::from(serde_json::to_vec_pretty(doc).unwrap_or_default());
    match client.write_lease(body, cond).await {
        Ok(v) => Ok(v),
        Err(StorageError::PreconditionFailed { .. }) => Err(LeaseError::Lost {
            by: "another replicator".into(),
        }),
        Err(e) => Err(storage(&e)),
    }
}

/// `dev:ino:birth-ns` of a file (empty if it cannot be read).
pub fn file_id(path: &std::path::Path) -> String {
    crate::db::meta::file_identity(path)
        .map(|(dev, ino, btime)| format!("{dev}:{ino}:{}", btime.unwrap_or(0)))
        .unwrap_or_default()
}

/// Whether a process with this pid exists (here, in this PID namespace).
fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as i32, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This host's name (for the lease holder and messages).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
