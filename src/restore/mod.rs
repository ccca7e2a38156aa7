//! Point-in-time restore of a database from a replica.
//!
//! - [`plan`]: pure planner (listings + target -> ordered files);
//! - [`crate::replica::read`]: parallel ranged downloads with bounded memory, resumed when
//!   they break off;
//! - [`apply`]: decoding, verification and positional writes into `<out>.tmp`;
//! - [`output`]: output-path checks, integrity check, ownership, atomic publish.
//!
//! Invariant: nothing at the output path changes unless every file verified, the page merge
//! checked out, the integrity check passed and the temp file was fsynced; then one rename.

pub mod apply;
pub mod follow;
pub mod inventory;
pub mod output;
pub mod parallel;
pub mod plan;
pub mod progress;
pub mod v3;
pub mod watchdog;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::replica::{LtxFileInfo, ReplicaClient, StorageError};
pub use output::IntegrityCheck;
pub use plan::{Plan, PlanError, Target};

/// Default number of concurrent ranged downloads.
pub const DEFAULT_PARALLELISM: usize = 8;
/// Size of one ranged download. With the default parallelism this bounds the download
/// buffers to about 10 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 1024 * 1024;

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A replica file failed verification.
    #[error("corrupt replica file {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// The files verified one by one but do not add up to a database.
    #[error("inconsistent replica: {0}")]
    Inconsistent(String),
    /// The output path is not usable.
    #[error("cannot restore to {path}: {reason}")]
    Output { path: String, reason: String },
    #[error("restored database failed the integrity check and was deleted: {reason}")]
    IntegrityCheck { reason: String },
    /// The disk filled up while the restore wrote its temporary file (deleted again).
    #[error(
        "no space left on device writing {path}{}; free space on that filesystem or restore elsewhere with -o (nothing was left at the output path)",
        needed_mib.map(|n| format!(" (needed about {n} MiB)")).unwrap_or_default()
    )]
    DiskFull {
        path: String,
        needed_mib: Option<u64>,
    },
    /// The replica stopped answering.
    #[error(
        "no answer and no data from {location} for {}s: the server stopped answering (-stall-timeout); nothing was written to {output}",
        idle.as_secs()
    )]
    Stalled {
        location: String,
        output: String,
        idle: Duration,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Writing the restored pages failed (the replica file was fine).
    #[error("write restored pages to {path}: {source}")]
    Write {
        path: String,
        /// The restored database's size, when known.
        db_bytes: Option<u64>,
        #[source]
        source: std::io::Error,
    },
}

impl RestoreError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        RestoreError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub output: PathBuf,
    pub target: Target,
    pub if_db_not_exists: bool,
    pub if_replica_exists: bool,
    pub parallelism: usize,
    pub chunk_size: u64,
    pub integrity_check: IntegrityCheck,
    pub dry_run: bool,
    pub force: bool,
    pub owner: Option<(u32, Option<u32>)>,
    pub mode: Option<u32>,
    /// Report progress (bytes, files, rate) to stderr.
    pub progress: bool,
    /// Fail when the replica sends nothing for this long (zero: wait forever).
    pub stall_timeout: Duration,
}

impl RestoreOptions {
    /// Options for restoring to `output` (made absolute) with the defaults.
    pub fn new(output: impl Into<PathBuf>) -> Self {
        let output = output.into();
        RestoreOptions {
            output: std::path::absolute(&output).unwrap_or(output),
            target: Target::Latest,
            if_db_not_exists: false,
            if_replica_exists: false,
            parallelism: DEFAULT_PARALLELISM,
            chunk_size: DEFAULT_CHUNK_SIZE,
            integrity_check: IntegrityCheck::Quick,
            dry_run: false,
            force: false,
            owner: None,
            mode: None,
            progress: false,
            stall_timeout: watchdog::DEFAULT_STALL_TIMEOUT,
        }
    }
}

/// What a restore did.
#[derive(Debug)]
pub enum Outcome {
    Restored(Report),
    /// `-if-db-not-exists` and the database exists.
    SkippedDbExists,
    /// `-if-replica-exists` and there is nothing to restore.
    NoBackups,
    /// `-dry-run`: the plan that would be applied.
    DryRun(Plan),
    /// `-dry-run` on a Litestream 0.3 replica: the snapshot and WAL segments to apply.
    DryRunV3 {
        snapshot: v3::Snapshot,
        segments: Vec<v3::Segment>,
    },
}

/// A completed restore.
#[derive(Debug, Clone)]
pub struct Report {
    pub txid: u64,
    pub files: usize,
    pub bytes: u64,
    pub db_size: u64,
    pub duration: Duration,
}

/// Restores the replica behind `client` according to `opts`. Fails (leaving nothing at
/// the output path) when the replica sends nothing for `opts.stall_timeout`.
pub async fn restore(
    client: Arc<dyn ReplicaClient>,
    opts: &RestoreOptions,
) -> Result<Outcome, RestoreError> {
    let mut opts = opts.clone();
    if let Some(target) = output::symlink_target(&opts.output)? {
        tracing::info!(link = %opts.output.display(), target = %target.display(), "the output is a symbolic link; restoring into its target");
        opts.output = target;
    }
    let dog = watchdog::Watchdog::new(opts.stall_timeout);
    let location = client.location();
    let client = watchdog::Watched::wrap(client, dog.clone());
    tokio::select! {
        r = restore_inner(client.clone(), &opts) => r.map_err(|e| disk_full_context(e, &opts)),
        idle = dog.expired() => {
            let _ = std::fs::remove_file(crate::fsutil::tmp_path(&opts.output));
            Err(RestoreError::Stalled {
                location,
                output: opts.output.display().to_string(),
                idle,
            })
        }
    }
}

/// A write that failed for lack of space becomes [`RestoreError::DiskFull`].
fn disk_full_context(e: RestoreError, opts: &RestoreOptions) -> RestoreError {
    let full = match &e {
        RestoreError::Io { source, .. } => crate::fsutil::is_disk_full(source),
        RestoreError::Write { source, .. } => crate::fsutil::is_disk_full(source),
        _ => false,
    };
    if !full {
        return e;
    }
    let needed_mib = match &e {
        RestoreError::Write { db_bytes, .. } => db_bytes.map(|b| b.div_ceil(1 << 20)),
        _ => None,
    };
    RestoreError::DiskFull {
        path: opts.output.display().to_string(),
        needed_mib,
    }
}

async fn restore_inner(
    client: Arc<dyn ReplicaClient>,
    opts: &RestoreOptions,
) -> Result<Outcome, RestoreError> {
    let started = Instant::now();
    let mut opts = opts.clone();
    if opts.if_db_not_exists {
        match output::existing(&opts.output)? {
            output::Existing::Database => return Ok(Outcome::SkippedDbExists),
            output::Existing::Absent => {}
            empty => {
                tracing::info!(path = %opts.output.display(), "the database {}; treating it as absent and restoring over it", empty.describe());
                opts.force = true;
            }
        }
    }
    let opts = &opts;
    if !opts.dry_run {
        output::check_output(&opts.output, opts.force)?;
    }
    let mut replans = 0;
    loop {
        match restore_once(client.clone(), opts, started).await {
            Err(RestoreError::Storage(StorageError::NotFound { key })) if replans < MAX_REPLANS => {
                replans += 1;
                tracing::warn!(%key, attempt = replans, "a replica file was removed during the restore (compaction or retention of a running replicator); listing the replica again");
            }
            res => return res,
        }
    }
}

/// Plans a restore again after a listed file disappeared before it was read, at most this
/// often. A replicator that keeps running during the restore compacts and prunes level 0
/// every few seconds in busy setups; a new listing then holds the compacted file instead.
const MAX_REPLANS: usize = 3;

/// One listing, plan and download into a new temporary file, published on success.
async fn restore_once(
    client: Arc<dyn ReplicaClient>,
    opts: &RestoreOptions,
    started: Instant,
) -> Result<Outcome, RestoreError> {
    // Litestream 0.3 data is looked for beside the levels, at the same time.
    let legacy = async {
        match opts.target {
            Target::Txid(_) => Ok(None),
            _ => v3::list(client.as_ref()).await.map(Some),
        }
    };
    let (levels, legacy) = tokio::join!(list_levels(client.as_ref(), &opts.target), legacy);
    let levels = levels?;
    if let Some(legacy) = legacy?
        && v3::should_use(&legacy, &levels, &opts.target)
    {
        return restore_v3(client.as_ref(), opts, &legacy, started).await;
    }
    let plan = match plan::plan(&levels, &opts.target) {
        Err(PlanError::NoBackups) if opts.if_replica_exists => return Ok(Outcome::NoBackups),
        Err(e) => return Err(e.into()),
        Ok(p) => p,
    };
    if opts.dry_run {
        return Ok(Outcome::DryRun(plan));
    }
    let location = client.location();
    let (tmp, file) = output::create_tmp(&opts.output)?;
    let res = write_and_publish(client.clone(), opts, &plan, &tmp, file).await;
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let applied = res?;
    let last = plan.effective_files().last();
    let last = restored_from(client.as_ref(), last, applied.newest_checksum).await;
    write_lineage(&opts.output, &location, applied.txid, last);
    Ok(Outcome::Restored(Report {
        txid: applied.txid,
        files: plan.effective_files().len(),
        bytes: plan.effective_files().iter().map(|f| f.size).sum(),
        db_size: u64::from(applied.commit) * u64::from(applied.page_size),
        duration: started.elapsed(),
    }))
}

/// Restores from Litestream 0.3 data (chosen when it is newer than any LTX data).
async fn restore_v3(
    client: &dyn ReplicaClient,
    opts: &RestoreOptions,
    legacy: &v3::Listing,
    started: Instant,
) -> Result<Outcome, RestoreError> {
    let ts = match opts.target {
        Target::Timestamp(t) => Some(t),
        _ => None,
    };
    let Some(snap) = legacy.best_snapshot(ts) else {
        return if opts.if_replica_exists {
            Ok(Outcome::NoBackups)
        } else {
            Err(PlanError::NoBackups.into())
        };
    };
    let segs = legacy.segments_after(snap, ts);
    if opts.dry_run {
        return Ok(Outcome::DryRunV3 {
            snapshot: snap.clone(),
            segments: segs,
        });
    }
    tracing::info!(generation = %snap.generation, index = snap.index, segments = segs.len(), "restoring from a Litestream 0.3 replica");
    let (tmp, file) = output::create_tmp(&opts.output)?;
    let res = async {
        let applied = v3::apply(client, snap, &segs, &file, &tmp).await?;
        finalize(&tmp, file, opts).await?;
        Ok::<_, RestoreError>(applied)
    }
    .await;
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let applied = res?;
    write_lineage(&opts.output, &client.location(), 0, None);
    Ok(Outcome::Restored(Report {
        txid: 0,
        files: 1 + segs.len(),
        bytes: 0,
        db_size: u64::from(applied.commit) * u64::from(applied.page_size),
        duration: started.elapsed(),
    }))
}

/// Records that the restored file descends from `txid` of the replica, so that `replicate`
/// continues its history without a prompt. A failure here only costs that convenience.
///
/// Staged level-0 files next to the output describe the file it replaced, not this one:
/// they are removed, so that `replicate` continues from the marker with a full image.
/// The replica file a restore ended with, by name, size and stored checksum (`checksum`
/// when the restore read it, else one small ranged read). `None` when it cannot be read:
/// replicate then writes a full image.
async fn restored_from(
    client: &dyn ReplicaClient,
    f: Option<&LtxFileInfo>,
    checksum: Option<u64>,
) -> Option<crate::db::RestoredFile> {
    let f = f?;
    let t = match checksum {
        Some(c) => c.to_be_bytes(),
        None => crate::replica::read::trailer(client, f.level, f.min_txid, f.max_txid, f.size)
            .await
            .ok()?,
    };
    Some(crate::db::RestoredFile {
        level: f.level,
        min_txid: format!("{:016x}", f.min_txid),
        max_txid: format!("{:016x}", f.max_txid),
        size: f.size,
        checksum: hex8(&t),
    })
}

/// Lower-case hex of 8 bytes.
pub(crate) fn hex8(b: &[u8; 8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn write_lineage(out: &Path, location: &str, txid: u64, last: Option<crate::db::RestoredFile>) {
    let meta = crate::db::Meta::new(out, None);
    if let Err(e) = meta.clear() {
        tracing::warn!(dir = %meta.l0_dir.display(), error = %e, "could not remove the staged files of the replaced database");
    }
    let res = crate::db::Lineage::for_file(out, location, txid)
        .and_then(|l| l.with_content(out))
        .map(|l| l.with_restored_from(last))
        .and_then(|l| l.save(&meta));
    if let Err(e) = res {
        tracing::warn!(path = %out.display(), error = %e, "could not record the restore's lineage; replicate will ask for -allow-new-history");
    }
}

/// fsync, integrity check, owner and mode, then the atomic publish (blocking work on a
/// blocking thread).
async fn finalize(
    tmp: &Path,
    file: std::fs::File,
    opts: &RestoreOptions,
) -> Result<(), RestoreError> {
    let (tmp_owned, out, check, owner, mode) = (
        tmp.to_path_buf(),
        opts.output.clone(),
        opts.integrity_check,
        opts.owner,
        opts.mode,
    );
    tokio::task::spawn_blocking(move || {
        // The fsync (disk-bound) and the integrity check (CPU-bound, reading the same
        // bytes from the page cache) run side by side; both must succeed before publish.
        let (synced, checked) = std::thread::scope(|s| {
            let sync = s.spawn(|| file.sync_all());
            let checked = output::integrity_check(&tmp_owned, check);
            (sync.join(), checked)
        });
        synced
            .unwrap_or_else(|_| Err(std::io::Error::other("fsync thread panicked")))
            .map_err(|e| RestoreError::io("fsync", &tmp_owned, e))?;
        drop(file);
        checked?;
        output::set_owner_and_mode(&tmp_owned, &out, owner, mode)
    })
    .await
    .map_err(|e| RestoreError::Inconsistent(format!("restore task failed: {e}")))??;
    output::publish(tmp, &opts.output, opts.force)
}

async fn write_and_publish(
    client: Arc<dyn ReplicaClient>,
    opts: &RestoreOptions,
    plan: &Plan,
    tmp: &Path,
    file: std::fs::File,
) -> Result<apply::Applied, RestoreError> {
    let files = plan.effective_files().to_vec();
    let keys: Vec<String> = files
        .iter()
        .map(|f| client.key(f.level, f.min_txid, f.max_txid))
        .collect();
    apply::check_chain(&files, &keys)?;
    let file = Arc::new(file);
    let parallel_snapshot = files[0].min_txid == 1
        && files[0].size >= parallel::PARALLEL_MIN_SIZE
        && opts.parallelism > 1;
    let skip = usize::from(parallel_snapshot);
    // Newest first, so that every page is written once (see `apply`); a large snapshot
    // comes last, decoded in parallel ranges.
    let newest_first: Vec<LtxFileInfo> = files[skip..].iter().rev().cloned().collect();
    let keys: Vec<String> = keys[skip..].iter().rev().cloned().collect();
    let total: u64 = files.iter().map(|f| f.size).sum();
    let progress = progress::Progress::shown(total, files.len(), opts.progress);
    let phase = Instant::now();
    let streamed = (newest_first, keys, file.clone(), progress.clone());
    let mut merge = apply_streamed(client.clone(), opts, streamed).await?;
    tracing::debug!(
        files = files.len() - skip,
        elapsed_ms = phase.elapsed().as_millis() as u64,
        "incremental files applied"
    );
    let phase = Instant::now();
    if parallel_snapshot {
        let par = opts.parallelism;
        let out = file.clone();
        parallel::apply_snapshot(client, &files[0], out, par, &mut merge, &progress).await?;
        progress.file_done();
        tracing::debug!(
            elapsed_ms = phase.elapsed().as_millis() as u64,
            "snapshot applied in parallel ranges"
        );
    }
    progress.finish();
    let applied = merge.finish()?;
    file.set_len(u64::from(applied.commit) * u64::from(applied.page_size))
        .map_err(|e| RestoreError::io("write", tmp, e))?;
    let file = Arc::try_unwrap(file)
        .map_err(|_| RestoreError::Inconsistent("restore output still in use".into()))?;
    let phase = Instant::now();
    finalize(tmp, file, opts).await?;
    tracing::debug!(
        elapsed_ms = phase.elapsed().as_millis() as u64,
        "fsync, integrity check and rename done"
    );
    Ok(applied)
}

/// Downloads `files` as one ordered stream of ranged chunks and applies them in that order
/// (newest first) on a blocking thread.
async fn apply_streamed(
    client: Arc<dyn ReplicaClient>,
    opts: &RestoreOptions,
    (files, keys, out, progress): (
        Vec<LtxFileInfo>,
        Vec<String>,
        Arc<std::fs::File>,
        Arc<progress::Progress>,
    ),
) -> Result<apply::Merge, RestoreError> {
    let specs = crate::replica::read::chunk_specs(&files, opts.chunk_size);
    let mut rx =
        crate::replica::read::spawn_fetcher(client, specs, opts.parallelism, opts.chunk_size);
    tokio::task::spawn_blocking(move || -> Result<_, RestoreError> {
        let mut merge = apply::Merge::default();
        let mut done = 0;
        let mut file_done = |_, bytes: u64| {
            progress.add_bytes(bytes - done);
            progress.file_done();
            done = bytes;
        };
        apply::apply_newest_first(&mut merge, &files, &keys, &mut rx, &out, &mut file_done)?;
        Ok(merge)
    })
    .await
    .map_err(|e| RestoreError::Inconsistent(format!("restore task failed: {e}")))?
}

/// Lists levels 0..=9; for a timestamp target, with the creation times recorded at write
/// time (S3 metadata), as Litestream does.
pub async fn list_levels(
    client: &dyn ReplicaClient,
    target: &Target,
) -> Result<Vec<Vec<LtxFileInfo>>, StorageError> {
    let levels = (crate::replica::MAX_LEVEL + 1) as usize;
    crate::replica::read::list_levels(client, matches!(target, Target::Timestamp(_)), levels).await
}
