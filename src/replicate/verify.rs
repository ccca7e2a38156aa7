//! The replica check: list the replica again and confirm it still restores to what this
//! process uploaded. It catches a replica that was emptied, or lost its snapshot or files,
//! while replication ran; the in-memory index is then replaced by the listing, and healing
//! follows (missing staged files are uploaded again, or a full level-0 image and a new
//! snapshot are written).
//!
//! Cost: the check rides on uploads. It runs at an upload round at most every
//! [`VERIFY_INTERVAL`], so an idle database still sends no request, and a replica damaged
//! while writes continue is noticed within that interval. While the replica is not
//! restorable it is checked every [`VERIFY_RETRY`].

use std::time::{Duration, Instant};

use super::error::ReplicateError;
use super::health::{Component, Restorable};
use super::remote::RemoteIndex;
use super::task::DbReplicator;

/// Longest time between replica checks while uploads happen. The bound is one
/// minute of continued writes; 30 s leaves room for the upload round that follows, and at
/// 10 LIST requests per check it costs less than Litestream's idle polling.
pub const VERIFY_INTERVAL: Duration = Duration::from_secs(30);
/// Re-check interval while the replica is not restorable (healing in progress).
pub const VERIFY_RETRY: Duration = Duration::from_secs(5);

/// When the replica was last checked, and how far uploads had got at the last tick.
#[derive(Debug, Default)]
pub struct VerifySchedule {
    last: Option<Instant>,
    prev_uploaded: u64,
}

impl DbReplicator {
    /// Checks the replica if due (see the module docs); failures are reported.
    pub(crate) async fn verify_if_due(&self, remote: &mut RemoteIndex, s: &mut VerifySchedule) {
        let uploaded = remote.position();
        let uploaded_now = uploaded != s.prev_uploaded;
        s.prev_uploaded = uploaded;
        let last = *s.last.get_or_insert_with(Instant::now); // start-up listed the replica
        let healing = remote.verify_soon || matches!(self.health.restorable(), Restorable::No(_));
        let due = if healing {
            last.elapsed() >= VERIFY_RETRY && uploaded > 0
        } else {
            uploaded_now && last.elapsed() >= VERIFY_INTERVAL
        };
        if !due {
            return;
        }
        s.last = Some(Instant::now());
        match self.check_replica(remote).await {
            Ok(_) => self.health.clear(Component::Verify),
            Err(e) => self
                .health
                .report(Component::Verify, e.cause(), &e.to_string()),
        }
    }

    /// Lists the replica and compares it with what this process uploaded. Returns the TXID
    /// a restore reaches. When the replica lost what it needs, the index is replaced by the
    /// listing and healing is scheduled (the health says why).
    pub(crate) async fn check_replica(
        &self,
        remote: &mut RemoteIndex,
    ) -> Result<u64, ReplicateError> {
        let fresh = RemoteIndex::load(self.client.as_ref()).await?;
        let expected = remote.position();
        let missing = remote.missing_from(&fresh);
        let verdict = match fresh.restorable_txid() {
            Ok(Some(t)) if t >= expected => Ok(t),
            Ok(Some(t)) => Err(format!(
                "it restores only up to txid {t:016x}, but {expected:016x} was uploaded"
            )),
            Ok(None) => Err("the replica is empty".to_string()),
            Err(e) => Err(e.to_string()),
        };
        match verdict {
            Ok(t) => {
                if !missing.is_empty() {
                    let msg = format!(
                        "{} files this replicator wrote are gone from the replica (e.g. {}); it still restores to the uploaded position",
                        missing.len(),
                        missing[0]
                    );
                    self.health
                        .incident(Component::Verify, super::error::Cause::Replica, &msg);
                    // The listing is the truth: jobs must not plan with files that are gone
                    // (a compaction would fail on every tick). A hole they leave in a level
                    // gets a snapshot (`RemoteIndex::compaction_inputs`).
                    let needs_snapshot = remote.needs_snapshot;
                    *remote = fresh;
                    remote.needs_snapshot = needs_snapshot;
                }
                remote.verify_soon = false;
                self.health.set_restorable(Restorable::Yes);
                Ok(t)
            }
            Err(why) => {
                let gone = match missing.len() {
                    0 => String::new(),
                    n => format!(
                        " ({n} files this replicator wrote are gone, e.g. {})",
                        missing[0]
                    ),
                };
                let reason = format!(
                    "{why}{gone}; uploading what is still staged, then a new full image and snapshot"
                );
                *remote = fresh;
                remote.needs_snapshot = true;
                remote.verify_soon = true;
                self.health.set_remote_txid(remote.position());
                self.health.set_restorable(Restorable::No(reason.clone()));
                Err(ReplicateError::Replica(reason))
            }
        }
    }
}
