//! Follow mode (`restore -f`): a warm standby. The output is restored once, then every
//! `-follow-interval` the files that carry it forward are applied in place, each inside one
//! SQLite transaction through the `sqlite_dbpage` virtual table (compiled in, see
//! `.cargo/config.toml`): the pager journals every change (rollback journal mode), so a
//! reader always sees the state before or after a file, never a mix, and an apply that is
//! interrupted (a crash, a kill) is rolled back by the next connection. Each file's
//! checksum is verified before its transaction commits.
//!
//! The position is `<out>-txid` (16 hex digits and a newline, written atomically after each
//! commit, as Litestream writes it); a restart resumes from it (re-applying a file that was
//! committed but not recorded is harmless: files hold whole pages). When the chain from the
//! position is broken (retention removed the files needed), the standby says so at once and
//! is rebuilt from the newest snapshot (a full restore published by rename).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use super::plan::continue_from;
use super::{Outcome, RestoreError, RestoreOptions, Target, list_levels, restore};
use crate::ltx::{Decoder, lock_page};
use crate::replica::{LtxFileInfo, ReplicaClient, SNAPSHOT_LEVEL, read_all};

/// Default `-follow-interval` (Litestream's).
pub const DEFAULT_FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// How long the standby waits for its readers before applying a file.
const READER_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// `<out>-txid`.
pub fn txid_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push("-txid");
    PathBuf::from(s)
}

fn read_position(out: &Path) -> Result<Option<u64>, RestoreError> {
    let p = txid_path(out);
    match std::fs::read_to_string(&p) {
        Ok(s) => crate::ltx::parse_hex16(s.trim()).map(Some).ok_or_else(|| RestoreError::Output {
            path: p.display().to_string(),
            reason: format!("{:?} is not a 16-digit hex TXID; remove the standby and its -txid file to start over", s.trim()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RestoreError::io("read", &p, e)),
    }
}

/// Records the standby's position: `<out>-txid`, and the lineage marker, so that a
/// standby promoted to primary continues the replica's history without a prompt.
fn write_position(out: &Path, location: &str, txid: u64) -> Result<(), RestoreError> {
    let p = txid_path(out);
    crate::fsutil::write_atomic(
        &p,
        crate::fsutil::Source::Bytes(format!("{txid:016x}\n").as_bytes()),
    )
    .map_err(|e| RestoreError::io(e.op, &p, e.source))?;
    let meta = crate::db::Meta::new(out, None);
    crate::db::Lineage::for_file(out, location, txid)
        .and_then(|l| l.save(&meta))
        .map_err(|e| RestoreError::io("write lineage marker for", out, e))
}

/// Follows the replica into `opts.output` until `stop` resolves.
pub async fn follow(
    client: Arc<dyn ReplicaClient>,
    opts: &RestoreOptions,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), RestoreError> {
    let out = opts.output.clone();
    let mut cur = match read_position(&out)? {
        Some(t) if out.exists() => {
            check_standby_file(&out, &client.location())?;
            tracing::info!(output = %out.display(), txid = format!("{t:016x}"), "resuming the standby");
            t
        }
        Some(_) | None if out.exists() => {
            return Err(RestoreError::Output {
                path: out.display().to_string(),
                reason: format!(
                    "exists but is not a follow-mode standby (no {}); remove it or give another -o",
                    txid_path(&out).display()
                ),
            });
        }
        _ => rebuild(client.clone(), opts).await?,
    };
    tokio::pin!(stop);
    // Polls start every `interval` (not `interval` after the previous one ended, so an apply
    // does not add to the lag), and the first at once: a resumed standby catches up without
    // waiting. A poll longer than the interval delays the next instead of bunching them.
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut stop => return Ok(()),
        }
        match step(client.clone(), opts, cur).await {
            Ok(t) => {
                if failures > 0 {
                    tracing::info!(output = %out.display(), "following again");
                }
                failures = 0;
                cur = t;
            }
            Err(e) => {
                // Transient (the server, a reader holding the standby): said at once, then
                // once a minute while it lasts; the next interval retries.
                if failures.is_multiple_of(60) {
                    tracing::error!(output = %out.display(), error = %e, "follow failed; retrying");
                }
                failures += 1;
            }
        }
    }
}

/// A standby this follower wrote carries its lineage marker (device, inode, birth time):
/// a file put in its place, with a copied `-txid`, would be patched into a corrupt
/// database. No marker (a standby from before markers, or Litestream's) resumes as before.
fn check_standby_file(out: &Path, location: &str) -> Result<(), RestoreError> {
    let meta = crate::db::Meta::new(out, None);
    match crate::db::Lineage::load(&meta) {
        Some(l) if !l.matches(out, location) => Err(RestoreError::Output {
            path: out.display().to_string(),
            reason: format!(
                "is not the standby this follower wrote for {location} (the file was replaced, or its -txid file was copied); remove it and {} to rebuild it",
                txid_path(out).display()
            ),
        }),
        _ => Ok(()),
    }
}

/// One poll: applies the files after `cur`, or rebuilds when the chain is broken.
async fn step(
    client: Arc<dyn ReplicaClient>,
    opts: &RestoreOptions,
    cur: u64,
) -> Result<u64, RestoreError> {
    let levels = list_levels(client.as_ref(), &Target::Latest).await?;
    match continue_from(&levels, cur) {
        Ok((files, to)) => {
            for f in files {
                let bytes = read_all(client.as_ref(), f.level, f.min_txid, f.max_txid).await?;
                let (out, file) = (opts.output.clone(), f.clone());
                let key = client.key(f.level, f.min_txid, f.max_txid);
                tokio::task::spawn_blocking(move || apply_file(&out, &file, &key, &bytes))
                    .await
                    .map_err(|e| {
                        RestoreError::Inconsistent(format!("follow task failed: {e}"))
                    })??;
                write_position(&opts.output, &client.location(), f.max_txid)?;
                tracing::debug!(output = %opts.output.display(), txid = format!("{:016x}", f.max_txid), "applied");
            }
            Ok(to.max(cur))
        }
        Err((have, next)) => {
            let snapshot = levels[SNAPSHOT_LEVEL as usize]
                .last()
                .map_or(0, |f| f.max_txid);
            if snapshot + 1 < next {
                // A rebuild would restore no further: say so (once a minute while it
                // lasts) and leave the standby as it is.
                return Err(RestoreError::Inconsistent(format!(
                    "the standby cannot follow: the replica has no file after {have:016x} (the next starts at {next:016x}) and no snapshot covers the gap (newest at {snapshot:016x}); waiting for a newer snapshot"
                )));
            }
            tracing::warn!(output = %opts.output.display(), have = format!("{have:016x}"), next = format!("{next:016x}"), "the standby cannot follow: the files after its position are gone from the replica (retention); rebuilding it from the newest snapshot");
            rebuild(client, opts).await
        }
    }
}

/// A full restore of the latest state published over the output, switched to the rollback
/// journal so that readers need no WAL; returns its TXID.
async fn rebuild(
    client: Arc<dyn ReplicaClient>,
    opts: &RestoreOptions,
) -> Result<u64, RestoreError> {
    let location = client.location();
    let mut o = opts.clone();
    o.force = true;
    o.if_db_not_exists = false;
    o.target = Target::Latest;
    let report = match restore(client, &o).await? {
        Outcome::Restored(r) => r,
        _ => return Err(super::PlanError::NoBackups.into()),
    };
    let out = o.output.clone();
    tokio::task::spawn_blocking(move || -> Result<(), RestoreError> {
        let c = Connection::open(&out).map_err(|e| sql(&out, e))?;
        c.query_row("PRAGMA journal_mode=DELETE", [], |_| Ok(()))
            .map_err(|e| sql(&out, e))
    })
    .await
    .map_err(|e| RestoreError::Inconsistent(format!("follow task failed: {e}")))??;
    write_position(&opts.output, &location, report.txid)?;
    tracing::info!(output = %opts.output.display(), txid = format!("{:016x}", report.txid), "standby restored");
    Ok(report.txid)
}

fn sql(path: &Path, e: rusqlite::Error) -> RestoreError {
    RestoreError::Output {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Applies one LTX file to the standby in one transaction: every page, the truncation to
/// the file's commit, and the file checksum verified before the commit.
fn apply_file(out: &Path, f: &LtxFileInfo, key: &str, bytes: &[u8]) -> Result<(), RestoreError> {
    let corrupt = |reason: String| RestoreError::Corrupt {
        key: key.to_string(),
        reason,
    };
    let mut c = Connection::open(out).map_err(|e| sql(out, e))?;
    c.busy_timeout(READER_BUSY_TIMEOUT)
        .map_err(|e| sql(out, e))?;
    let tx = c
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .map_err(|e| sql(out, e))?;
    let mut dec = Decoder::new(bytes).map_err(|e| corrupt(e.to_string()))?;
    let h = *dec.header();
    if (h.min_txid, h.max_txid) != (f.min_txid, f.max_txid) {
        return Err(corrupt("header txids differ from the file name".into()));
    }
    let size: u32 = tx
        .query_row("SELECT COUNT(*) FROM sqlite_dbpage", [], |r| r.get(0))
        .map_err(|e| sql(out, e))?;
    let lock = lock_page(h.page_size);
    let mut page = vec![0u8; h.page_size as usize];
    let mut end = size;
    {
        let mut put = tx
            .prepare("INSERT INTO sqlite_dbpage(pgno, data) VALUES (?1, ?2)")
            .map_err(|e| sql(out, e))?;
        while let Some(pgno) = dec
            .next_page(&mut page)
            .map_err(|e| corrupt(e.to_string()))?
        {
            if pgno == 1 {
                // The standby runs in rollback-journal mode: readers need no -wal.
                page[18] = 1;
                page[19] = 1;
            }
            if pgno > end + 1 && end + 1 == lock {
                let zero = vec![0u8; h.page_size as usize];
                put.execute(rusqlite::params![lock, zero])
                    .map_err(|e| sql(out, e))?;
            }
            put.execute(rusqlite::params![pgno, page])
                .map_err(|e| sql(out, e))?;
            end = end.max(pgno);
        }
        if h.commit < end {
            put.execute(rusqlite::params![h.commit + 1, rusqlite::types::Null])
                .map_err(|e| sql(out, e))?;
        }
    }
    dec.finish().map_err(|e| corrupt(e.to_string()))?;
    tx.commit().map_err(|e| sql(out, e))
}
