//! `replicate`: every configured database's replicator and the HTTP endpoints, from start-up
//! checks to the exit status.
//!
//! Layout:
//! - [`task`]: one database's start-up (read-only checks, listing, lineage, open);
//! - [`sync_loop`]: WAL -> staged level-0 files and checkpoints, every `monitor-interval`;
//! - [`upload`]: staged files -> replica, and the staging limit;
//! - [`maintain`]: compaction, snapshots, retention, and the periodic replica check;
//! - [`finish`]: the final sync, upload and verification that decide the exit status;
//! - [`health`]: the per-database state every loop reports into; [`error`]: typed errors
//!   and their causes; [`shutdown`]: the shutdown signal;
//! - [`lineage`], [`remote`], [`metrics`], [`http`].
//!
//! Invariants: a database that fails the read-only checks at start stops the process
//! before an `-exec` child is started; a refused database is never written to; every
//! failure reaches [`health::Health`] (ERROR line, metric, `/readyz`); the process exits 0
//! only when every database's committed changes up to its last sync are in a restorable
//! replica, checked by a listing at shutdown.

pub mod backlog;
pub mod error;
pub mod facts;
pub mod finish;
pub mod health;
pub mod http;
pub mod lease;
pub mod lineage;
pub mod maintain;
pub mod metrics;
pub mod remote;
pub mod shutdown;
pub mod sync_loop;
pub mod task;
pub mod upload;
pub mod verify;

use std::collections::HashMap;
use std::sync::Arc;

pub use error::{Cause, ReplicateError};
pub use finish::DbOutcome;
pub use shutdown::{Shutdown, ShutdownTrigger};
pub use task::{DbReplicator, Globals};

use crate::config::DbConfig;
use crate::replica::ReplicaClient;
use health::Health;
use metrics::Metrics;

/// What [`start`] needs beyond the databases.
pub struct RunOptions {
    pub addr: Option<String>,
    pub globals: Globals,
}

/// One database ready to replicate.
pub struct Prepared {
    pub cfg: DbConfig,
    pub client: Arc<dyn ReplicaClient>,
}

/// Why replication could not start (the process exits 1 before any `-exec` child).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("listen on {addr}: {source}; check the addr setting or -addr")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Replication in progress.
pub struct Running {
    tasks: Vec<(String, tokio::task::JoinHandle<DbOutcome>)>,
    server: Option<tokio::task::JoinHandle<()>>,
    trigger: Arc<ShutdownTrigger>,
    pub healths: Vec<Arc<Health>>,
    pub metrics: Arc<Metrics>,
    pub local_addr: Option<std::net::SocketAddr>,
}

/// Checks every database that exists (read-only), binds the HTTP address and starts one
/// replicator per database.
pub async fn start(mut dbs: Vec<Prepared>, opts: RunOptions) -> Result<Running, StartError> {
    for p in &mut dbs {
        // SQLite follows a symlinked database path for its -wal: so must liteship.
        if let Some(target) = crate::fsutil::symlink_target(&p.cfg.path)
            .map_err(|e| StartError::Config(format!("{}: {e}", p.cfg.path.display())))?
        {
            tracing::info!(link = %p.cfg.path.display(), target = %target.display(), "the database path is a symbolic link; replicating its target");
            p.cfg.path = target;
        }
    }
    check_distinct(&dbs)?;
    let mut locks = Vec::new();
    for p in &dbs {
        let cfg = p.cfg.clone();
        let lock = tokio::task::spawn_blocking(move || {
            let meta = crate::db::Meta::new(&cfg.path, cfg.meta_path.as_deref());
            let lock = crate::db::lock::ReplicateLock::acquire(&meta, &cfg.path)
                .map_err(|e| e.to_string())?;
            task::check_local_files(&cfg)?;
            Ok::<_, String>(lock)
        })
        .await
        .map_err(|e| StartError::Config(format!("start-up check failed: {e}")))?
        .map_err(StartError::Config)?;
        locks.push(lock);
    }
    let metrics = Arc::new(Metrics::new());
    let globals = Arc::new(opts.globals);
    let (trigger, shutdown) = shutdown::channel();
    let mut healths = Vec::new();
    let mut replicators = Vec::new();
    for p in dbs {
        let label = p.cfg.path.display().to_string();
        let health = Arc::new(Health::new(label, metrics.clone()));
        healths.push(health.clone());
        replicators.push(DbReplicator::new(
            p.cfg,
            globals.clone(),
            p.client,
            metrics.clone(),
            health,
        ));
    }
    let (server, local_addr) = match &opts.addr {
        Some(addr) => {
            let state = http::HttpState {
                metrics: metrics.clone(),
                healths: healths.clone(),
            };
            let (h, a) = http::serve(addr, state).await?;
            (Some(h), Some(a))
        }
        None => (None, None),
    };
    let tasks = replicators
        .into_iter()
        .zip(locks)
        .map(|(r, lock)| {
            let shutdown = shutdown.clone();
            let label = r.label.clone();
            let task = tokio::spawn(async move {
                let outcome = r.run(shutdown).await;
                drop(lock); // held for as long as the replicator runs
                outcome
            });
            (label, task)
        })
        .collect();
    Ok(Running {
        tasks,
        server,
        trigger: Arc::new(trigger),
        healths,
        metrics,
        local_addr,
    })
}

/// Two entries for one database, or two databases sharing one replica, would interleave
/// two histories; both are start-up errors naming the entries.
fn check_distinct(dbs: &[Prepared]) -> Result<(), StartError> {
    let mut paths: HashMap<std::path::PathBuf, usize> = HashMap::new();
    let mut replicas: HashMap<String, usize> = HashMap::new();
    for (i, p) in dbs.iter().enumerate() {
        let path = std::path::absolute(&p.cfg.path).unwrap_or_else(|_| p.cfg.path.clone());
        if let Some(j) = paths.insert(path.clone(), i) {
            return Err(StartError::Config(format!(
                "dbs[{j}] and dbs[{i}] are the same database {}: list each database once",
                path.display()
            )));
        }
        let loc = p.client.location();
        if let Some(j) = replicas.insert(loc.clone(), i) {
            return Err(StartError::Config(format!(
                "dbs[{j}] ({}) and dbs[{i}] ({}) replicate to the same replica {loc}: give each database its own replica path",
                dbs[j].cfg.path.display(),
                p.cfg.path.display()
            )));
        }
    }
    Ok(())
}

impl Running {
    /// Asks every replicator to finish within `timeout` (the final sync, upload and check).
    pub fn stop(&self, timeout: std::time::Duration) {
        self.trigger.stop(timeout);
    }

    /// Cancels whatever is still in flight.
    pub fn abort(&self) {
        self.trigger.abort();
    }

    /// A handle that can stop or abort after [`Running::finish`] took the replicators.
    pub fn trigger(&self) -> Arc<ShutdownTrigger> {
        self.trigger.clone()
    }

    /// Waits for every replicator; `true` when every database's committed changes are in a
    /// restorable replica (or it had none). Each problem is logged as an ERROR.
    pub async fn finish(self) -> bool {
        let mut all_ok = true;
        for (label, t) in self.tasks {
            let outcome = t
                .await
                .unwrap_or_else(|e| DbOutcome::Failed(format!("replication task failed: {e}")));
            all_ok &= outcome.report(&label);
        }
        if let Some(s) = self.server {
            s.abort();
        }
        all_ok
    }
}
