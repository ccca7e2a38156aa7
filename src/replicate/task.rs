//! One database's replication: start-up (open, list the replica once, decide lineage), then
//! two loops that share the [`Db`] behind a mutex:
//! - the sync loop turns WAL frames into staged level-0 files and runs checkpoints, every
//!   `monitor-interval`, never waiting for the network;
//! - the upload loop ships staged files from the replica position, then compacts, snapshots
//!   and enforces retention; when nothing changed it sends no request at all.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, watch};

use super::lineage::{Facts, Start, decide};
use super::metrics::Metrics;
use super::remote::RemoteIndex;
use super::status::Status;
use crate::config::DbConfig;
use crate::db::{Db, DbOptions, Lineage};
use crate::replica::ReplicaClient;

/// Longest wait between failing syncs. Litestream waits up to 5 minutes; the WAL keeps the
/// data meanwhile, but a short cap means a fixed disk is noticed within seconds.
const SYNC_ERROR_BACKOFF_MAX: Duration = Duration::from_secs(15);

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
        }
    }
}

/// Shutdown signal: 0 running, 1 stop gracefully, 2 abort.
pub type Shutdown = watch::Receiver<u8>;

/// Everything one database's loops share.
pub struct DbReplicator {
    pub cfg: DbConfig,
    pub g: Arc<Globals>,
    pub client: Arc<dyn ReplicaClient>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    pub label: String,
    pub(crate) db: Option<Arc<Mutex<Db>>>,
    pub(crate) staged_notify: Arc<Notify>,
}

/// Logs an error at most once per `every` (Litestream floods logs otherwise).
pub(crate) struct RateLimited {
    last: Option<Instant>,
    every: Duration,
}

impl RateLimited {
    pub(crate) fn new(every: Duration) -> Self {
        RateLimited { last: None, every }
    }

    pub(crate) fn ready(&mut self) -> bool {
        if self.last.is_none_or(|t| t.elapsed() >= self.every) {
            self.last = Some(Instant::now());
            return true;
        }
        false
    }
}

impl DbReplicator {
    pub fn new(
        cfg: DbConfig,
        g: Arc<Globals>,
        client: Arc<dyn ReplicaClient>,
        metrics: Arc<Metrics>,
        status: Arc<Status>,
    ) -> Self {
        let label = cfg.path.display().to_string();
        DbReplicator {
            cfg,
            g,
            client,
            metrics,
            status,
            label,
            db: None,
            staged_notify: Arc::new(Notify::new()),
        }
    }

    pub(crate) fn db(&self) -> Arc<Mutex<Db>> {
        self.db.clone().expect("database opened")
    }

    /// Runs until shutdown. `Ok(true)` when everything staged reached the replica.
    pub async fn run(mut self, mut shutdown: Shutdown) -> anyhow::Result<bool> {
        if !self.wait_for_database(&mut shutdown).await {
            return Ok(true);
        }
        let opts = DbOptions {
            busy_timeout: self.cfg.busy_timeout,
            min_checkpoint_page_count: self.cfg.min_checkpoint_page_count,
            truncate_page_n: self.cfg.truncate_page_n,
            checkpoint_interval: self.cfg.checkpoint_interval,
            max_sync_wal_bytes: self.cfg.max_sync_wal_bytes,
        };
        let (path, meta_path) = (self.cfg.path.clone(), self.cfg.meta_path.clone());
        let db = tokio::task::spawn_blocking(move || Db::open(&path, meta_path.as_deref(), opts))
            .await??;
        self.db = Some(Arc::new(Mutex::new(db)));
        let Some(mut remote) = self.load_remote(&mut shutdown).await else {
            return Ok(true);
        };
        if !self.start(&mut remote).await? {
            let _ = shutdown.changed().await;
            return Ok(true);
        }
        tracing::info!(db = %self.label, replica = %self.client.location(), "replicating");
        let me = Arc::new(self);
        let sync = tokio::spawn(me.clone().sync_loop(shutdown.clone()));
        let mut remote = me.clone().upload_loop(remote, shutdown.clone()).await;
        sync.await??; // includes the final sync
        Ok(me.final_upload(&mut remote, shutdown).await)
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
                _ = shutdown.changed() => return false,
            }
        }
        true
    }

    /// Lists the replica once, retrying with backoff (an unreachable bucket at start-up is
    /// an error to report, not a reason to exit).
    async fn load_remote(&self, shutdown: &mut Shutdown) -> Option<RemoteIndex> {
        let mut delay = Duration::from_secs(1);
        loop {
            match RemoteIndex::load(self.client.as_ref()).await {
                Ok(r) => return Some(r),
                Err(e) => {
                    tracing::error!(db = %self.label, error = %e, "list replica failed; retrying");
                    self.status.update(|s| s.last_error = Some(e.to_string()));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return None,
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    /// Applies the lineage decision; `Ok(false)` when the database is refused.
    async fn start(&self, remote: &mut RemoteIndex) -> anyhow::Result<bool> {
        let facts = self.facts(remote).await?;
        let decision = decide(&facts);
        let db = self.db();
        let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
        match decision {
            Start::Fresh => {
                if db.pos.is_some() {
                    tracing::warn!(db = %self.label, "the replica is empty; starting a new history");
                    db.clear_position()?;
                }
            }
            Start::Continue => {}
            Start::ContinueFrom { txid } => db.reset_position(txid, "restored database")?,
            Start::NewHistory { after } => {
                tracing::warn!(db = %self.label, after = format!("{after:016x}"), "starting a new history in the replica (-allow-new-history)");
                db.reset_position(after, "new history")?;
            }
            Start::Refuse(msg) => {
                tracing::error!(db = %self.label, replica = %self.client.location(), "{msg}");
                self.metrics
                    .refused
                    .with_label_values(&[&self.label])
                    .set(1);
                self.status.update(|s| s.refused = Some(msg));
                return Ok(false);
            }
        }
        let chain_start = remote.level(0).first().is_some_and(|f| f.min_txid == 1)
            || !remote.level(crate::replica::SNAPSHOT_LEVEL).is_empty()
            || remote.all().iter().flatten().any(|f| f.min_txid == 1);
        let remote_txid = remote.level_max(0).max(remote.max_txid());
        self.metrics
            .remote_txid
            .with_label_values(&[&self.label])
            .set(remote_txid as i64);
        self.status.update(|s| {
            s.snapshot_durable = chain_start;
            s.remote_txid = remote_txid;
        });
        Ok(true)
    }

    async fn facts(&self, remote: &RemoteIndex) -> anyhow::Result<Facts> {
        let (local, meta, path) = {
            let db = self.db();
            let db = db.lock().unwrap_or_else(|e| e.into_inner());
            (db.pos.map(|p| p.txid), db.meta.clone(), db.path.clone())
        };
        let location = self.client.location();
        let marker = Lineage::load(&meta)
            .filter(|l| l.matches(&path, &location))
            .and_then(|l| l.txid());
        let mut matches = None;
        if let Some(t) = local
            && let Some(f) = remote.level(0).iter().find(|f| f.max_txid == t)
        {
            let local_sum = trailer_checksum_local(&meta.l0_path(t))?;
            let remote_sum =
                trailer_checksum_remote(self.client.as_ref(), f.min_txid, f.max_txid, f.size)
                    .await?;
            matches = Some(local_sum == remote_sum);
        }
        let oldest = meta.staged()?.first().copied();
        Ok(Facts {
            local_txid: local,
            local_oldest: oldest,
            local_matches_remote: matches,
            marker_txid: marker,
            remote_txid: remote.max_txid(),
            allow_new_history: self.g.allow_new_history,
        })
    }

    /// Converts WAL frames to staged files and checkpoints, every monitor interval.
    async fn sync_loop(self: Arc<Self>, mut shutdown: Shutdown) -> anyhow::Result<()> {
        let mut delay = self.cfg.monitor_interval;
        let mut errors = RateLimited::new(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => break,
            }
            match self.sync_once().await {
                Ok(()) => {
                    delay = self.cfg.monitor_interval;
                    self.metrics
                        .disk_full
                        .with_label_values(&[&self.label])
                        .set(0);
                }
                Err(e) => {
                    self.metrics
                        .sync_error_count
                        .with_label_values(&[&self.label])
                        .inc();
                    let disk_full = e
                        .downcast_ref::<crate::db::SyncError>()
                        .is_some_and(|s| s.is_disk_full());
                    self.metrics
                        .disk_full
                        .with_label_values(&[&self.label])
                        .set(i64::from(disk_full));
                    if errors.ready() {
                        tracing::error!(db = %self.label, error = %format!("{e:#}"), "sync error");
                    }
                    // Capped low: a freed disk or a released lock should resume replication soon.
                    delay = (delay * 2).min(SYNC_ERROR_BACKOFF_MAX);
                }
            }
        }
        // Final sync: whatever committed before the signal goes to the replica.
        if let Err(e) = self.sync_once().await {
            tracing::error!(db = %self.label, error = %format!("{e:#}"), "final sync failed");
        }
        Ok(())
    }

    /// One sync (and checkpoint, if due) on a blocking thread.
    pub(crate) async fn sync_once(&self) -> anyhow::Result<()> {
        let db = self.db();
        let started = Instant::now();
        let (staged, ckpt, pos, db_size) = tokio::task::spawn_blocking(move || {
            let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
            let mut staged = db.sync()?;
            let ck = db.maybe_checkpoint();
            let ck = match ck {
                Ok(r) => {
                    staged.extend(r.staged);
                    Ok(r.mode)
                }
                Err(e) => Err(e),
            };
            Ok::<_, crate::db::SyncError>((staged, ck, db.pos, db.db_size()))
        })
        .await??;
        let m = &self.metrics;
        let l = [self.label.as_str()];
        m.sync_count.with_label_values(&l).inc();
        m.sync_seconds
            .with_label_values(&l)
            .add(started.elapsed().as_secs_f64());
        m.db_size.with_label_values(&l).set(db_size as i64);
        m.wal_size
            .with_label_values(&l)
            .set(pos.map_or(0, |p| p.wal_end) as i64);
        if let Some(p) = pos {
            m.txid.with_label_values(&l).set(p.txid as i64);
            self.status.update(|s| s.local_txid = p.txid);
        }
        for s in &staged {
            m.total_wal_bytes.with_label_values(&l).inc_by(s.size);
            if s.full.is_some() {
                m.full_images.with_label_values(&l).inc();
            }
        }
        match ckpt {
            Ok(Some(mode)) => m
                .checkpoint_count
                .with_label_values(&[&self.label, mode.name()])
                .inc(),
            Ok(None) => {}
            Err(e) => {
                m.checkpoint_error_count
                    .with_label_values(&[&self.label, "PASSIVE"])
                    .inc();
                tracing::error!(db = %self.label, error = %e, "checkpoint failed");
            }
        }
        if !staged.is_empty() {
            self.status.update(|s| {
                s.oldest_pending.get_or_insert_with(Instant::now);
            });
            self.staged_notify.notify_one();
        }
        Ok(())
    }
}

fn trailer_checksum_local(path: &std::path::Path) -> anyhow::Result<[u8; 8]> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, len.saturating_sub(8))?;
    Ok(b)
}

async fn trailer_checksum_remote(
    c: &dyn ReplicaClient,
    min: u64,
    max: u64,
    size: u64,
) -> anyhow::Result<[u8; 8]> {
    use tokio::io::AsyncReadExt;
    let mut r = c.open(0, min, max, size.saturating_sub(8), Some(8)).await?;
    let mut b = [0u8; 8];
    r.read_exact(&mut b).await?;
    Ok(b)
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
