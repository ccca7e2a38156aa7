//! Checkpoints: liteship owns them (spec 3.6). PASSIVE by page count and by interval, under
//! a write barrier so the pin can be re-taken at a known WAL end; an emergency TRUNCATE
//! above `truncate-page-n`, after which continuity is unproven and the next level-0 file is
//! a full image. RESTART is never used.

use std::time::{Duration, Instant};

use super::sync::{Staged, SyncError};
use super::{Db, DbError, Pin};
use crate::wal::{FRAME_HEADER_SIZE, WAL_HEADER_SIZE};

/// Which checkpoint ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointMode {
    Passive,
    Truncate,
}

impl CheckpointMode {
    pub fn name(self) -> &'static str {
        match self {
            CheckpointMode::Passive => "PASSIVE",
            CheckpointMode::Truncate => "TRUNCATE",
        }
    }
}

/// First wait before an emergency TRUNCATE that a reader blocked is tried again; it doubles
/// up to [`TRUNCATE_RETRY_MAX`]. Each attempt holds the write lock for up to the busy
/// timeout while it waits for readers, so retrying every sync would stall the application.
const TRUNCATE_RETRY_FIRST: Duration = Duration::from_secs(2);
const TRUNCATE_RETRY_MAX: Duration = Duration::from_secs(60);

/// The result of a checkpoint attempt.
#[derive(Debug, Default)]
pub struct CheckpointReport {
    pub mode: Option<CheckpointMode>,
    /// Files staged by the sync done under the barrier.
    pub staged: Vec<Staged>,
    /// All frames were copied into the database.
    pub complete: bool,
    /// An emergency TRUNCATE could not complete (a reader holds the WAL): the WAL's size
    /// in pages.
    pub truncate_blocked: Option<u64>,
}

impl Db {
    fn frame_size(&self) -> u64 {
        FRAME_HEADER_SIZE as u64 + u64::from(self.page_size)
    }

    /// Runs the checkpoint the thresholds call for, if any. Call right after a sync.
    pub fn maybe_checkpoint(&mut self) -> Result<CheckpointReport, SyncError> {
        let Some(pos) = self.pos else {
            return Ok(CheckpointReport::default());
        };
        let logical = pos.wal_end.saturating_sub(WAL_HEADER_SIZE as u64);
        let frames = logical / self.frame_size();
        if frames >= self.opts.truncate_page_n {
            if !self.passive_stalled {
                let r = self.checkpoint_passive()?;
                self.passive_stalled = !r.complete;
                if r.complete {
                    return Ok(r);
                }
            }
            if let Some((at, _)) = self.truncate_retry
                && Instant::now() < at
            {
                return Ok(CheckpointReport::default());
            }
            let mut r = self.checkpoint_truncate()?;
            if r.complete {
                self.truncate_retry = None;
            } else {
                let wait = self.truncate_retry.map_or(TRUNCATE_RETRY_FIRST, |(_, w)| {
                    (w * 2).min(TRUNCATE_RETRY_MAX)
                });
                self.truncate_retry = Some((Instant::now() + wait, wait));
                r.truncate_blocked = Some(frames);
            }
            return Ok(r);
        }
        let by_count = frames >= self.opts.min_checkpoint_page_count;
        let interval = self.opts.checkpoint_interval;
        let by_time = !interval.is_zero()
            && self.last_checkpoint.elapsed() >= interval
            && self.synced_since_checkpoint
            && frames > 1;
        if by_count || by_time {
            let r = self.checkpoint_passive()?;
            self.passive_stalled = !r.complete;
            return Ok(r);
        }
        Ok(CheckpointReport::default())
    }

    /// PASSIVE checkpoint with the pin re-taken under a write barrier. Skipped (not an
    /// error) when the application holds the write lock past the busy timeout.
    pub fn checkpoint_passive(&mut self) -> Result<CheckpointReport, SyncError> {
        if let Err(e) = self.barrier.execute_batch("BEGIN IMMEDIATE") {
            tracing::debug!(db = %self.path.display(), error = %e, "checkpoint skipped: write lock busy");
            return Ok(CheckpointReport::default());
        }
        let res = self.passive_under_barrier();
        let rollback = self
            .barrier
            .execute_batch("ROLLBACK")
            .map_err(|e| DbError::sql(&self.path, e));
        let report = res?;
        rollback?;
        Ok(report)
    }

    fn passive_under_barrier(&mut self) -> Result<CheckpointReport, SyncError> {
        let staged = self.sync()?;
        self.end_pin()?;
        let res = self.run_checkpoint("PASSIVE");
        self.begin_pin()?;
        let (_, log, done) = res?;
        // Nothing can have committed since the sync above: the pin sits at the WAL's end.
        if let Some(p) = self.pos
            && !self.last_read_limited
            && self.needs_full.is_none()
        {
            self.pin = Pin::AtEnd {
                salts: (p.salt1, p.salt2),
                wal_end: p.wal_end,
            };
        }
        self.after_checkpoint();
        Ok(CheckpointReport {
            mode: Some(CheckpointMode::Passive),
            staged,
            complete: done >= log,
            truncate_blocked: None,
        })
    }

    /// Emergency TRUNCATE: blocks writers while it runs. Commits may slip in between our
    /// last sync and the checkpoint, so continuity is not proven afterwards.
    pub fn checkpoint_truncate(&mut self) -> Result<CheckpointReport, SyncError> {
        let staged = self.sync()?;
        self.end_pin()?;
        let res = self.run_checkpoint("TRUNCATE");
        self.begin_pin()?;
        let (busy, log, done) = res?;
        self.passive_stalled = false;
        self.after_checkpoint();
        let complete = !busy && done >= log;
        if complete {
            tracing::warn!(db = %self.path.display(), "emergency TRUNCATE checkpoint: the WAL passed truncate-page-n");
        }
        Ok(CheckpointReport {
            mode: Some(CheckpointMode::Truncate),
            staged,
            complete,
            truncate_blocked: None,
        })
    }

    /// Runs the checkpoint; `(busy, log, done)` as SQLite reports them.
    fn run_checkpoint(&mut self, mode: &str) -> Result<(bool, i64, i64), SyncError> {
        let sql = format!("PRAGMA wal_checkpoint({mode})");
        let (busy, log, done): (i64, i64, i64) = self
            .conn
            .query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| DbError::sql(&self.path, e))?;
        tracing::debug!(db = %self.path.display(), mode, busy, log, done, "checkpoint");
        Ok((busy != 0, log, done))
    }

    fn after_checkpoint(&mut self) {
        self.last_checkpoint = Instant::now();
        self.synced_since_checkpoint = false;
    }
}
