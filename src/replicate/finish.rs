//! Shutdown of one database: the final upload (retried every `shutdown-sync-interval`),
//! then a listing that confirms the replica restores to the local position. The outcome
//! decides the exit status; everything is cancelled at the shutdown deadline.

use std::time::Duration;

use super::remote::RemoteIndex;
use super::shutdown::Shutdown;
use super::task::DbReplicator;

/// How one database ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbOutcome {
    /// Every committed change up to the last sync is in a restorable replica.
    Durable { txid: u64 },
    /// The database never existed or replication never started; nothing to lose.
    NothingCommitted,
    /// Changes are missing from the replica (what and why).
    NotDurable(String),
    /// Replication of the database failed (refused, replaced, cannot be opened).
    Failed(String),
}

impl DbOutcome {
    /// Logs the outcome (an ERROR unless it is good); `true` when it is.
    pub fn report(&self, db: &str) -> bool {
        match self {
            DbOutcome::Durable { txid } => {
                tracing::info!(
                    db,
                    txid = format!("{txid:016x}"),
                    "every committed change is in the replica"
                );
                true
            }
            DbOutcome::NothingCommitted => true,
            DbOutcome::NotDurable(why) => {
                tracing::error!(
                    db,
                    "shutdown: committed changes are missing from the replica: {why}"
                );
                false
            }
            DbOutcome::Failed(why) => {
                tracing::error!(db, "shutdown: replication of this database failed: {why}");
                false
            }
        }
    }
}

impl DbReplicator {
    /// The final upload and check, after the loops stopped.
    pub(crate) async fn finish(
        &self,
        mut remote: RemoteIndex,
        final_sync: Result<(), String>,
        mut shutdown: Shutdown,
    ) -> DbOutcome {
        if let Some(f) = self.health.failed() {
            tokio::select! {
                _ = self.lease.release(self.client.as_ref()) => {}
                _ = shutdown.aborted() => {}
            }
            return DbOutcome::Failed(f);
        }
        let mut upload_shutdown = shutdown.clone();
        let work = async {
            self.final_upload(&mut remote, &mut upload_shutdown).await?;
            self.confirm(&mut remote).await
        };
        let outcome = tokio::select! {
            r = work => r.unwrap_or_else(DbOutcome::NotDurable),
            _ = shutdown.aborted() => {
                let s = self.health.snapshot();
                DbOutcome::NotDurable(format!(
                    "shutdown deadline reached (shutdown-sync-timeout {}s) or aborted; local position txid {:016x}, replica at {:016x}",
                    self.g.shutdown_sync_timeout.as_secs(),
                    s.local_txid,
                    s.remote_txid
                ))
            }
        };
        // Nothing more is uploaded: a successor may take the lease at once.
        tokio::select! {
            _ = self.lease.release(self.client.as_ref()) => {}
            _ = shutdown.aborted() => {}
        }
        if !self.lease.is_held() {
            self.health.set_lease("released".into());
        }
        self.note_lease();
        match (final_sync, outcome) {
            (Err(e), DbOutcome::Durable { .. } | DbOutcome::NothingCommitted) => {
                DbOutcome::NotDurable(format!(
                    "{e}; changes committed since the previous sync are not in the replica"
                ))
            }
            (_, o) => o,
        }
    }

    /// Uploads what is staged, retrying every `shutdown-sync-interval` until it succeeds
    /// (the caller cancels at the deadline).
    async fn final_upload(
        &self,
        remote: &mut RemoteIndex,
        shutdown: &mut Shutdown,
    ) -> Result<(), String> {
        let (mut logged, mut resynced) = (false, false);
        loop {
            match self.upload_pending(remote).await {
                // A gap found while uploading reset the position: the full image it owes
                // is staged now, and uploaded on the next round. Once: a full image at the
                // replica's position always continues it.
                Ok(false) if self.owes_full_image().await.is_some() => {
                    if resynced {
                        return Err("the full image written at shutdown does not continue the replica either".into());
                    }
                    if self.sync_once().await.is_ok() {
                        resynced = true;
                        continue;
                    }
                }
                Ok(false) => return Ok(()),
                Ok(true) => continue,
                Err(e) => {
                    if !logged {
                        let left = shutdown.remaining().unwrap_or(Duration::ZERO);
                        tracing::warn!(db = %self.label, error = %e, left_s = left.as_secs(), "final upload failed; retrying until the shutdown deadline");
                        logged = true;
                    }
                }
            }
            tokio::time::sleep(self.g.shutdown_sync_interval).await;
        }
    }

    async fn owes_full_image(&self) -> Option<&'static str> {
        self.db()
            .call(|db| db.owes_full_image())
            .await
            .unwrap_or(Some("the database task is gone"))
    }

    /// Lists the replica and checks that it restores to the local position.
    async fn confirm(&self, remote: &mut RemoteIndex) -> Result<DbOutcome, String> {
        let local = self
            .db()
            .call(|db| db.position().map_or(0, |p| p.txid))
            .await
            .map_err(|e| e.to_string())?;
        if local == 0 {
            return Ok(DbOutcome::NothingCommitted);
        }
        if let Some(why) = self.owes_full_image().await {
            return Err(format!(
                "the changes after txid {local:016x} wait for a full image that was not uploaded ({why})"
            ));
        }
        let reached = self
            .check_replica(remote)
            .await
            .map_err(|e| format!("the replica could not be confirmed: {e}"))?;
        if reached < local {
            return Err(format!(
                "the replica restores up to txid {reached:016x}, the local position is {local:016x}"
            ));
        }
        if let Err(e) = self.save_lineage(local).await {
            tracing::warn!(db = %self.label, error = %e, "could not update the lineage marker");
        }
        Ok(DbOutcome::Durable { txid: local })
    }
}
