//! One database's replicator and its start-up:
//! 1. wait for the database file, then check it read-only (a SQLite file, readable; the
//!    newest staged file verifies, or `auto-recover` drops the corrupt ones);
//! 2. list the replica once (retried with backoff, every failure reported);
//! 3. decide from local facts whether this database may continue the replica
//!    ([`super::lineage`]); a refused database is never opened, so it stays untouched;
//! 4. open it (WAL mode, the pin) and start the sync and upload loops.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use super::error::{Cause, ReplicateError};
use super::finish::DbOutcome;
use super::health::{Component, Health, Restorable};
use super::lease::{Lease, LeaseError};
use super::lineage::{Start, decide};
use super::metrics::Metrics;
use super::remote::RemoteIndex;
use super::shutdown::Shutdown;
use crate::config::DbConfig;
use crate::db::preflight::{self, DbFile};
use crate::db::{Db, DbHandle, DbOptions, Lineage, Meta};
use crate::replica::ReplicaClient;

/// First and longest wait between attempts to list the replica at start. An unreachable
/// bucket at start-up is an error to report and retry, not a reason to exit; 30 s keeps
/// the retries cheap while still noticing a recovered server quickly.
const LIST_RETRY_FIRST: Duration = Duration::from_secs(1);
const LIST_RETRY_MAX: Duration = Duration::from_secs(30);

/// Settings shared by every database of the process.
#[derive(Debug, Clone)]
pub struct Globals {
    pub levels: Vec<Duration>,
    pub snapshot_interval: Duration,
    pub snapshot_retention: Duration,
    pub l0_retention: Duration,
    pub l0_retention_check_interval: Duration,
    pub retention_enabled: bool,
    pub shutdown_sync_timeout: Duration,
    pub shutdown_sync_interval: Duration,
    /// Staged bytes beyond which pending files are replaced by one full image.
    pub staging_limit: u64,
    pub allow_new_history: bool,
    /// TTL of the replica's writer lease.
    pub lease_ttl: Duration,
}

impl Globals {
    /// The settings of a loaded config, plus the two that only the command line gives.
    pub fn from_config(
        cfg: &crate::config::Config,
        staging_limit: u64,
        allow_new_history: bool,
    ) -> Self {
        Globals {
            levels: cfg.levels.clone(),
            snapshot_interval: cfg.snapshot_interval,
            snapshot_retention: cfg.snapshot_retention,
            l0_retention: cfg.l0_retention,
            l0_retention_check_interval: cfg.l0_retention_check_interval,
            retention_enabled: cfg.retention_enabled,
            shutdown_sync_timeout: cfg.shutdown_sync_timeout,
            shutdown_sync_interval: cfg.shutdown_sync_interval,
            staging_limit,
            allow_new_history,
            lease_ttl: cfg.lease_ttl,
        }
    }
}

/// Everything one database's loops share.
pub struct DbReplicator {
    pub cfg: DbConfig,
    pub g: Arc<Globals>,
    pub client: Arc<dyn ReplicaClient>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub label: String,
    /// The staging and marker directories (paths only; no I/O).
    pub(crate) meta: Meta,
    db: OnceLock<DbHandle>,
    pub(crate) staged_notify: Notify,
    /// Failed attempts of the replica client already reported.
    pub(crate) attempts_seen: std::sync::atomic::AtomicU64,
    /// The replica's writer lease.
    pub(crate) lease: Lease,
    /// Who held the writer lease before this process took it.
    pub(crate) previous_holder: std::sync::Mutex<Option<super::lease::Holder>>,
    /// The highest level-0 TXID whose upload was attempted. Above the replica's known
    /// position it may or may not be in the replica (an answer can be lost), so its TXID
    /// is never given to other content.
    pub(crate) attempted: std::sync::atomic::AtomicU64,
    /// The TXID range of the last merged level-0 upload whose answer did not come back: it
    /// is retried with exactly the same inputs (the merge is deterministic), so an object
    /// that did arrive is recognised instead of overlapped by a longer one.
    pub(crate) merge_retry: std::sync::Mutex<Option<(u64, u64)>>,
    /// The last clean-up of uploaded staged files: the TXID up to which it removed, and
    /// the newest staged file it had to keep at or below that TXID (see `remove_uploaded`).
    pub(crate) cleaned: std::sync::Mutex<Option<(u64, Option<u64>)>>,
}

/// How start-up ended.
enum Started {
    Running(RemoteIndex),
    /// Shut down before the database existed.
    Stopped,
    /// Shut down before the replica could be listed (why).
    NeverListed(String),
    Fatal(String),
}

impl DbReplicator {
    pub fn new(
        cfg: DbConfig,
        g: Arc<Globals>,
        client: Arc<dyn ReplicaClient>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Self {
        let label = cfg.path.display().to_string();
        let meta = Meta::new(&cfg.path, cfg.meta_path.as_deref());
        let lease = Lease::new(&label, String::new(), g.lease_ttl);
        metrics.init_db(&label);
        DbReplicator {
            cfg,
            g,
            client,
            metrics,
            health,
            label,
            meta,
            db: OnceLock::new(),
            staged_notify: Notify::new(),
            attempts_seen: Default::default(),
            lease,
            attempted: Default::default(),
            merge_retry: Default::default(),
            cleaned: Default::default(),
            previous_holder: Default::default(),
        }
    }

    /// The open database. Only called by the loops, which start after it is opened.
    pub(crate) fn db(&self) -> &DbHandle {
        self.db
            .get()
            .expect("the loops start after the database is opened")
    }

    /// Runs until shutdown; the outcome decides the exit status.
    pub async fn run(self, mut shutdown: Shutdown) -> DbOutcome {
        let me = Arc::new(self);
        let remote = match me.start(&mut shutdown).await {
            Started::Running(r) => r,
            Started::Stopped => return DbOutcome::NothingCommitted,
            Started::NeverListed(why) => {
                // The lease may have been taken before the stop came (an -exec application
                // that exits at once): a successor must not wait for it to expire.
                me.lease.release(me.client.as_ref()).await;
                if std::fs::metadata(&me.cfg.path).is_ok_and(|m| m.len() == 0) {
                    return DbOutcome::NothingCommitted;
                }
                return DbOutcome::NotDurable(format!(
                    "replication did not start before the shutdown deadline ({why}); nothing of this database was replicated by this run"
                ));
            }
            Started::Fatal(reason) => {
                me.health.fail(reason.clone());
                // A refused database uploads nothing: let a rightful replicator have the lease.
                me.lease.release(me.client.as_ref()).await;
                me.note_lease();
                shutdown.stopping().await;
                return DbOutcome::Failed(reason);
            }
        };
        tracing::info!(db = %me.label, replica = %me.client.location(), "replicating");
        let sync = tokio::spawn(me.clone().sync_loop(shutdown.clone()));
        let remote = me.clone().upload_loop(remote, shutdown.clone()).await;
        let final_sync = sync
            .await
            .unwrap_or_else(|e| Err(format!("sync task failed: {e}")));
        me.finish(remote, final_sync, shutdown).await
    }

    async fn start(&self, shutdown: &mut Shutdown) -> Started {
        if !self.wait_for_database(shutdown).await {
            return Started::Stopped;
        }
        if let Err(e) = self.check_local_files().await {
            return Started::Fatal(e);
        }
        // The lease first: the listing and the lineage decision must see the replica as
        // the previous holder left it.
        self.lease.set_file(super::lease::file_id(&self.cfg.path));
        match self.acquire_lease(shutdown).await {
            Ok(()) => {}
            Err(Err(fatal)) => return Started::Fatal(fatal),
            Err(Ok(why)) => return Started::NeverListed(why),
        }
        let mut remote = match self.load_remote(shutdown).await {
            Ok(r) => r,
            Err(why) => return Started::NeverListed(why),
        };
        let decision = match self.facts(&remote).await {
            Ok(f) => decide(&f),
            Err(e) => return Started::Fatal(format!("cannot decide how to continue: {e}")),
        };
        if let Start::Refuse(msg) = &decision {
            self.metrics
                .refused
                .with_label_values(&[&self.label])
                .set(1);
            return Started::Fatal(msg.clone());
        }
        let restored_ok = match decision {
            Start::ContinueFrom { txid } => self.restored_file_is_current(&remote, txid).await,
            _ => false,
        };
        if let Err(e) = self.open(decision, restored_ok).await {
            return Started::Fatal(format!("cannot open the database: {e}"));
        }
        self.assess_replica(&mut remote);
        Started::Running(remote)
    }

    async fn wait_for_database(&self, shutdown: &mut Shutdown) -> bool {
        let mut logged = false;
        while !self.cfg.path.exists() {
            if !logged {
                tracing::info!(db = %self.label, "waiting for the database file to be created");
                logged = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.monitor_interval) => {}
                // An application that creates the database and exits within one interval
                // must still be replicated: look once more.
                _ = shutdown.stopping() => return self.cfg.path.exists(),
            }
        }
        true
    }

    /// Read-only checks: the database file and the newest staged file.
    async fn check_local_files(&self) -> Result<(), String> {
        let cfg = self.cfg.clone();
        tokio::task::spawn_blocking(move || match check_local_files(&cfg)? {
            DbFile::Missing => Err(format!("{} disappeared", cfg.path.display())),
            DbFile::Empty | DbFile::Database => Ok(()),
        })
        .await
        .map_err(|e| format!("start-up check failed: {e}"))?
    }

    /// Acquires the writer lease, waiting while another replicator holds it (until it is
    /// released or expires) and retrying failures, also during a stop until its deadline.
    /// `Err(Ok(why))`: the deadline passed first; `Err(Err(why))`: it can never be acquired.
    async fn acquire_lease(&self, shutdown: &mut Shutdown) -> Result<(), Result<String, String>> {
        let mut backoff = LIST_RETRY_FIRST;
        loop {
            // An attempt in flight is not cancelled by a stop: it could have taken the lease
            // on the server without this process knowing, leaving it held. Taken during a
            // stop, the lease is kept: the start goes on and the final sync replicates what
            // is committed (an `-exec` application that exits at once).
            let res = self.lease.acquire(self.client.as_ref()).await;
            let (wait, transient) = match res {
                Ok(previous) => {
                    *self
                        .previous_holder
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = previous;
                    self.health.clear(Component::Lease);
                    self.note_lease();
                    return Ok(());
                }
                Err(LeaseError::SameProcess { .. }) => {
                    return Err(Err(ReplicateError::from(res.unwrap_err()).to_string()));
                }
                Err(LeaseError::Held {
                    ref holder,
                    expires_in,
                }) => {
                    self.health.set_lease(format!("held by {holder}"));
                    let e = res.unwrap_err();
                    self.health
                        .report(Component::Lease, Cause::LeaseHeld, &e.to_string());
                    // A live holder keeps renewing: a stop does not wait for it.
                    let wait = expires_in.clamp(Duration::from_secs(1), self.lease.ttl());
                    (wait + Duration::from_millis(100), false)
                }
                Err(e) => {
                    let err = ReplicateError::from(e);
                    self.health
                        .report(Component::Lease, err.cause(), &err.to_string());
                    backoff = (backoff * 2).min(LIST_RETRY_MAX);
                    (backoff, err.cause().is_transient())
                }
            };
            // A stop ends the retries at its deadline (the replica may answer before it),
            // or at once when the failure cannot go away by itself (no credentials) or
            // another replicator holds the lease.
            let why = || {
                self.health
                    .problem_message(Component::Lease)
                    .unwrap_or_else(|| "the writer lease was not acquired".into())
            };
            if !transient && !shutdown.is_running() {
                return Err(Ok(why()));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.aborted() => return Err(Ok(why())),
            }
        }
    }

    /// The lease metrics and status.
    pub(crate) fn note_lease(&self) {
        let l = [self.label.as_str()];
        if self.lease.is_held() {
            self.health.set_lease(format!(
                "held by this process (TTL {}s)",
                self.lease.ttl().as_secs()
            ));
        }
        self.metrics
            .lease_held
            .with_label_values(&l)
            .set(i64::from(self.lease.is_held()));
        if let Some(c) = self.lease.conditional_writes() {
            self.metrics
                .conditional_writes
                .with_label_values(&l)
                .set(i64::from(c));
        }
    }

    /// Lists the replica once, retrying with backoff and reporting every failure, until
    /// the stop's deadline (so a stop during start-up still replicates); `Err` with the
    /// last failure when the deadline passed first.
    async fn load_remote(&self, shutdown: &mut Shutdown) -> Result<RemoteIndex, String> {
        let mut delay = LIST_RETRY_FIRST;
        let mut last = String::from("the stop's deadline passed during the first listing");
        loop {
            let res = tokio::select! {
                r = RemoteIndex::load(self.client.as_ref()) => r,
                _ = shutdown.aborted() => return Err(last),
            };
            match res {
                Ok(r) => {
                    self.health.clear(Component::Listing);
                    return Ok(r);
                }
                Err(e) => {
                    last = e.to_string();
                    if !crate::retry::is_retryable(&e) && !shutdown.is_running() {
                        return Err(last);
                    }
                    let msg = format!("{e} (retrying in {}s)", delay.as_secs());
                    self.health
                        .report(Component::Listing, Cause::of_storage(&e), &msg);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.aborted() => return Err(last),
            }
            delay = (delay * 2).min(LIST_RETRY_MAX);
        }
    }

    /// Opens the database (WAL mode, the pin) and applies the lineage decision.
    /// `restored_ok`: the replica still holds the file a restore of it ended with.
    async fn open(&self, decision: Start, restored_ok: bool) -> Result<(), ReplicateError> {
        let opts = DbOptions {
            busy_timeout: self.cfg.busy_timeout,
            min_checkpoint_page_count: self.cfg.min_checkpoint_page_count,
            truncate_page_n: self.cfg.truncate_page_n,
            checkpoint_interval: self.cfg.checkpoint_interval,
            max_sync_wal_bytes: self.cfg.max_sync_wal_bytes,
            page_framing: self.cfg.replica.page_framing,
        };
        let (path, meta_path, label) = (
            self.cfg.path.clone(),
            self.cfg.meta_path.clone(),
            self.label.clone(),
        );
        let (db, unexplained) = tokio::task::spawn_blocking(move || {
            let mut db = Db::open(&path, meta_path.as_deref(), opts)?;
            match decision {
                Start::Fresh if db.position().is_some() => {
                    tracing::warn!(db = %label, "the replica is empty; starting a new history");
                    db.clear_position()?;
                }
                Start::Fresh | Start::Continue | Start::Refuse(_) => {}
                Start::ContinueFrom { txid } => {
                    continue_from(&mut db, txid, restored_ok, &label)?
                }
                Start::NewHistory { after } => {
                    tracing::warn!(db = %label, after = format!("{after:016x}"), "starting a new history in the replica (-allow-new-history)");
                    db.reset_position(after, "new history")?;
                }
            }
            let unexplained = db.unexplained_full_image();
            Ok::<_, crate::db::DbError>((db, unexplained))
        })
        .await??;
        let local = db.position().map_or(0, |p| p.txid);
        if let Some(reason) = unexplained {
            tracing::warn!(db = %self.label, reason, "the database changed while liteship was not running in a way it cannot follow; its current state becomes the replica's next state (a full level-0 image). If it was rolled back or replaced by hand, the replica's newest state goes back too: restore with `liteship restore` instead");
        }
        self.health.set_local_txid(local);
        let _ = self.db.set(DbHandle::new(db));
        if local > 0 {
            self.save_lineage(local).await?;
        }
        Ok(())
    }

    /// Records in the marker next to the database that this very file (device and inode,
    /// checked against the open descriptor first) descends from `txid` of the replica.
    pub(crate) async fn save_lineage(&self, txid: u64) -> Result<(), ReplicateError> {
        let (location, meta) = (self.client.location(), self.meta.clone());
        self.db()
            .call(move |db| {
                db.check_identity()?;
                Lineage::for_file(db.path(), &location, txid)
                    .and_then(|l| l.save(&meta))
                    .map_err(|e| crate::db::DbError::Io {
                        op: "write lineage marker in",
                        path: meta.liteship_dir.display().to_string(),
                        source: e,
                    })
            })
            .await??;
        Ok(())
    }

    /// Whether the replica as listed restores to its newest file; healing starts if not.
    fn assess_replica(&self, remote: &mut RemoteIndex) {
        self.health.set_remote_txid(remote.position());
        match remote.restorable_txid() {
            Ok(Some(t)) if t >= remote.position() => self.health.set_restorable(Restorable::Yes),
            Ok(None) => {} // empty: the first snapshot is on its way
            Ok(Some(t)) => {
                remote.needs_snapshot = true;
                self.health.set_restorable(Restorable::No(format!(
                    "it restores only up to txid {t:016x} of {:016x}; writing a new snapshot",
                    remote.position()
                )));
            }
            Err(e) => {
                remote.needs_snapshot = true;
                self.health
                    .set_restorable(Restorable::No(format!("{e}; writing a new snapshot")));
            }
        }
    }
}

/// The read-only start-up checks of one database (blocking): the database file is a
/// readable SQLite file (or empty, or not there yet), and the newest staged level-0 file
/// verifies; with `auto-recover`, corrupt staged files are dropped instead.
pub fn check_local_files(cfg: &DbConfig) -> Result<DbFile, String> {
    let file = preflight::inspect(&cfg.path).map_err(|e| e.to_string())?;
    if file == DbFile::Missing {
        return Ok(file);
    }
    let meta = Meta::new(&cfg.path, cfg.meta_path.as_deref());
    match meta.newest_header() {
        Ok(_) => Ok(file),
        Err(e) if e.corrupt && cfg.replica.auto_recover => {
            let dropped = meta.drop_corrupt_newest().map_err(|e| e.to_string())?;
            tracing::warn!(db = %cfg.path.display(), error = %e, dropped = dropped.len(), "auto-recover: removed corrupt staged level-0 files; continuing from the newest valid one");
            Ok(file)
        }
        Err(e) if e.corrupt => Err(format!(
            "{e}. The local replication state of {} is damaged: set auto-recover: true on its replica to drop the damaged files and continue, or remove {} to start from a full image",
            cfg.path.display(),
            meta.l0_dir.display()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// The last 8 bytes (the file checksum) of a local LTX file, read on a blocking thread.
pub(crate) async fn trailer_of(path: &std::path::Path) -> Result<[u8; 8], ReplicateError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let io = |e| crate::fsutil::FsError::new("read", &p, e);
        let f = std::fs::File::open(&p).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, len.saturating_sub(8)).map_err(io)?;
        Ok(b)
    })
    .await?
}

/// Continues from the replica's state `txid`, which a restore put in the database file:
/// incrementally when the replica still holds the file the restore ended with
/// (`restored_ok`) and the database file still has the restored bytes (as the marker
/// records), else with a full level-0 image.
fn continue_from(
    db: &mut Db,
    txid: u64,
    restored_ok: bool,
    label: &str,
) -> Result<(), crate::db::DbError> {
    let recorded = crate::db::Lineage::load(db.meta())
        .filter(|l| restored_ok && l.txid() == Some(txid))
        .and_then(|l| l.content());
    if let Some(crc) = recorded
        && db.continue_restored(txid, crc)?
    {
        tracing::info!(db = %label, txid = format!("{txid:016x}"), "the database holds the restored state; continuing from the WAL without a full image");
        return Ok(());
    }
    db.reset_position(txid, "restored database")
}

/// The UTC window start of `interval` that contains `t` (Litestream aligns compaction and
/// snapshots to multiples of their interval).
pub(crate) fn window_start(t: SystemTime, interval: Duration) -> u64 {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let step = interval.as_millis().max(1) as u64;
    secs / step * step
}
