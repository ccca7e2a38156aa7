//! Whether a local database may continue a replica's history (pure).
//!
//! A replica's newest state must never be replaced by an unrelated database: a fresh empty
//! file the application created after a failed or skipped restore, or an old copy. Descent
//! is known from local state only:
//! - the meta directory's newest level-0 file (liteship's or Litestream's, same layout);
//! - the lineage marker next to the database (same file, same replica), which `restore`
//!   writes and `replicate` keeps up to date as its uploads advance.

/// What is known locally and remotely at start.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// TXID of the newest local level-0 file, if any.
    pub local_txid: Option<u64>,
    /// TXID of the oldest local level-0 file, if any (1: the local chain starts a history).
    pub local_oldest: Option<u64>,
    /// Whether the local staged files continue the replica's newest level-0 file: the
    /// staged file with that TXID has the same file checksum, or the next staged file
    /// continues its WAL range. `None` when it cannot be told from the files.
    pub local_continues_remote: Option<bool>,
    /// The replica's writer lease was last held by this very database file on this host
    /// (a crash or kill of an earlier run), so the replica's newest state is its own.
    pub last_holder_was_this_file: bool,
    /// TXID of a matching lineage marker (same file, same replica).
    pub marker_txid: Option<u64>,
    /// A marker for this replica exists but names another file, and the database's bytes
    /// do not continue the staged position either: the database at the path was replaced
    /// (deleted and created again) since liteship last saw it.
    pub marker_other_file: bool,
    /// Highest TXID in the replica (0 when empty).
    pub remote_txid: u64,
    /// `-allow-new-history`.
    pub allow_new_history: bool,
    /// `auto-recover`: the staged files were dropped as corrupt; a marker of this very file
    /// (same device and inode, same replica) is then enough to continue.
    pub auto_recover: bool,
}

/// How replication starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The replica is empty: a new history from TXID 1.
    Fresh,
    /// Continue from the local position (uploading what the replica lacks).
    Continue,
    /// The database descends from `txid` of the replica but the local WAL position is
    /// unknown: a full image at `txid + 1`.
    ContinueFrom { txid: u64 },
    /// Explicitly allowed: a new history after the replica's newest TXID.
    NewHistory { after: u64 },
    /// Refused, with the reason and what to do.
    Refuse(String),
}

/// Decides how a database starts replicating.
pub fn decide(f: &Facts) -> Start {
    if f.remote_txid == 0 {
        // Staged files from TXID 1 that never reached the (empty) replica are uploaded,
        // not thrown away; anything else starts over.
        if f.local_txid.is_some() && f.local_oldest == Some(1) {
            return Start::Continue;
        }
        return Start::Fresh;
    }
    if f.marker_other_file && f.local_txid.is_some() {
        let verdict = "the database file was replaced since it was last replicated (the staging directory and the lineage marker belong to a file with another identity); the staged state does not describe it".to_string();
        return refuse_or_allow(f, verdict);
    }
    let verdict = match (f.local_txid, f.marker_txid) {
        (Some(local), _)
            if local >= f.remote_txid
                && (f.local_continues_remote == Some(true) || f.last_holder_was_this_file) =>
        {
            return Start::Continue;
        }
        (Some(local), _) if local >= f.remote_txid => format!(
            "its replication state (txid {local:016x}) does not continue the replica's newest file (txid {:016x}): it comes from another history (another replica, or another writer of this one)",
            f.remote_txid
        ),
        (Some(local), _) => format!(
            "its replication state ends at txid {local:016x} but the replica already holds txid {:016x}: the database is older than the replica",
            f.remote_txid
        ),
        (None, Some(m)) if m == f.remote_txid => return Start::ContinueFrom { txid: m },
        (None, Some(_)) if f.auto_recover || f.last_holder_was_this_file => {
            return Start::ContinueFrom {
                txid: f.remote_txid,
            };
        }
        (None, Some(m)) => format!(
            "it was restored at txid {m:016x} but the replica now holds txid {:016x}",
            f.remote_txid
        ),
        (None, None) => format!(
            "it has no replication state and the replica already holds history up to txid {:016x}; it may be an unrelated database (for example one the application created after a failed or skipped restore)",
            f.remote_txid
        ),
    };
    refuse_or_allow(f, verdict)
}

fn refuse_or_allow(f: &Facts, verdict: String) -> Start {
    if f.allow_new_history {
        return Start::NewHistory {
            after: f.remote_txid,
        };
    }
    Start::Refuse(format!(
        "refusing to replicate: {verdict}. To keep the replica's history, stop the application, move the database aside and run `liteship restore`; to make this database the replica's newest state, restart with -allow-new-history"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(local: Option<u64>, marker: Option<u64>, remote: u64) -> Facts {
        Facts {
            local_txid: local,
            marker_txid: marker,
            remote_txid: remote,
            local_continues_remote: Some(true),
            ..Facts::default()
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(&facts(None, None, 0)), Start::Fresh);
        assert_eq!(decide(&facts(Some(9), None, 0)), Start::Fresh);
        let unsent = Facts {
            local_oldest: Some(1),
            ..facts(Some(2), None, 0)
        };
        assert_eq!(
            decide(&unsent),
            Start::Continue,
            "a chain from TXID 1 is uploaded"
        );
        assert_eq!(decide(&facts(Some(5), None, 5)), Start::Continue);
        assert_eq!(
            decide(&facts(Some(7), None, 5)),
            Start::Continue,
            "pending uploads"
        );
        assert_eq!(
            decide(&facts(None, Some(5), 5)),
            Start::ContinueFrom { txid: 5 }
        );
        for f in [
            facts(Some(3), None, 5),
            facts(None, Some(3), 5),
            facts(None, None, 5),
        ] {
            match decide(&f) {
                Start::Refuse(msg) => {
                    assert!(
                        msg.contains("liteship restore") && msg.contains("-allow-new-history"),
                        "{msg}"
                    );
                }
                other => panic!("{f:?}: {other:?}"),
            }
            assert_eq!(
                decide(&Facts {
                    allow_new_history: true,
                    ..f
                }),
                Start::NewHistory { after: 5 }
            );
        }
        let diverged = Facts {
            local_continues_remote: Some(false),
            ..facts(Some(5), None, 5)
        };
        assert!(matches!(decide(&diverged), Start::Refuse(m) if m.contains("another history")));
        let unknown = Facts {
            local_continues_remote: None,
            ..facts(Some(7), None, 5)
        };
        assert!(
            matches!(decide(&unknown), Start::Refuse(_)),
            "no proof, no merge"
        );
        let crashed = Facts {
            last_holder_was_this_file: true,
            ..unknown
        };
        assert_eq!(decide(&crashed), Start::Continue);
        let recovered = Facts {
            auto_recover: true,
            ..facts(None, Some(3), 5)
        };
        assert_eq!(decide(&recovered), Start::ContinueFrom { txid: 5 });
        let stranger = Facts {
            auto_recover: true,
            ..facts(None, None, 5)
        };
        assert!(matches!(decide(&stranger), Start::Refuse(_)));
        let replaced = Facts {
            marker_other_file: true,
            ..facts(Some(5), None, 5)
        };
        assert!(matches!(decide(&replaced), Start::Refuse(m) if m.contains("was replaced")));
    }
}
