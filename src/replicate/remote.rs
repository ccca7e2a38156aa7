//! What this process knows of the replica's files, kept in memory from one listing at start
//! and from its own writes and deletes. It is what lets an idle database cost zero requests:
//! nothing is listed again except by the periodic replica check while writes happen
//! ([`super::maintain`]) and at shutdown.

use crate::replica::{LtxFileInfo, MAX_LEVEL, ReplicaClient, StorageError};
use crate::restore::plan::{PlanError, Target, plan};

#[derive(Debug, Clone, Default)]
pub struct RemoteIndex {
    levels: Vec<Vec<LtxFileInfo>>,
    /// The replica lost its restorable state: write a snapshot at the next chance.
    pub needs_snapshot: bool,
    /// Check the replica again at the next chance (after healing).
    pub verify_soon: bool,
}

impl RemoteIndex {
    /// Lists every level (10 requests, one at a time).
    pub async fn load(client: &dyn ReplicaClient) -> Result<RemoteIndex, StorageError> {
        let levels = crate::replica::read::list_levels(client, false, 1).await?;
        Ok(RemoteIndex::from_levels(levels))
    }

    pub fn from_levels(levels: Vec<Vec<LtxFileInfo>>) -> RemoteIndex {
        RemoteIndex {
            levels,
            needs_snapshot: false,
            verify_soon: false,
        }
    }

    pub fn level(&self, level: u8) -> &[LtxFileInfo] {
        self.levels.get(level as usize).map_or(&[], Vec::as_slice)
    }

    /// Highest TXID of a level (0 if empty).
    pub fn level_max(&self, level: u8) -> u64 {
        self.level(level)
            .iter()
            .map(|f| f.max_txid)
            .max()
            .unwrap_or(0)
    }

    /// The replica's position: the highest TXID in any level. Level 0 normally holds it
    /// (retention keeps the newest level-0 file), but a bucket lifecycle rule or an
    /// operator may have removed level-0 files that higher levels cover; the next file
    /// still continues from here.
    pub fn position(&self) -> u64 {
        self.max_txid()
    }

    /// Highest TXID anywhere in the replica.
    pub fn max_txid(&self) -> u64 {
        (0..=MAX_LEVEL)
            .map(|l| self.level_max(l))
            .max()
            .unwrap_or(0)
    }

    pub fn add(&mut self, f: LtxFileInfo) {
        if self.levels.len() <= MAX_LEVEL as usize {
            self.levels.resize(MAX_LEVEL as usize + 1, Vec::new());
        }
        let list = &mut self.levels[f.level as usize];
        list.retain(|x| (x.min_txid, x.max_txid) != (f.min_txid, f.max_txid));
        let at = list.partition_point(|x| (x.min_txid, x.max_txid) < (f.min_txid, f.max_txid));
        list.insert(at, f);
    }

    pub fn remove(&mut self, level: u8, files: &[(u64, u64)]) {
        if let Some(list) = self.levels.get_mut(level as usize) {
            list.retain(|x| !files.contains(&(x.min_txid, x.max_txid)));
        }
    }

    /// All files, for the restore planner.
    pub fn all(&self) -> &[Vec<LtxFileInfo>] {
        &self.levels
    }

    /// Files of this index that `other` lacks, as `level/min-max` names.
    pub fn missing_from(&self, other: &RemoteIndex) -> Vec<String> {
        let mut out = Vec::new();
        for (level, files) in self.levels.iter().enumerate() {
            for f in files {
                let there = other
                    .level(level as u8)
                    .iter()
                    .any(|g| (g.min_txid, g.max_txid) == (f.min_txid, f.max_txid));
                if !there {
                    out.push(format!("{level}/{}", f.name()));
                }
            }
        }
        out
    }

    /// The TXID a latest restore of these files reaches (`None`: the replica is empty), or
    /// why no restore is possible.
    pub fn restorable_txid(&self) -> Result<Option<u64>, PlanError> {
        match plan(&self.levels, &Target::Latest) {
            Ok(p) => Ok(Some(p.txid())),
            Err(PlanError::NoBackups) if self.levels.iter().all(Vec::is_empty) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(level: u8, min: u64, max: u64) -> LtxFileInfo {
        LtxFileInfo {
            level,
            min_txid: min,
            max_txid: max,
            size: 100,
            created_at: std::time::UNIX_EPOCH,
        }
    }

    #[test]
    fn restorable_txid_follows_the_planner() {
        let mut r = RemoteIndex::default();
        assert_eq!(r.restorable_txid(), Ok(None));
        r.add(f(0, 5, 5));
        assert!(r.restorable_txid().is_err(), "no chain start");
        r.add(f(9, 1, 4));
        assert_eq!(r.restorable_txid(), Ok(Some(5)));
        r.add(f(0, 7, 7));
        assert!(r.restorable_txid().is_err(), "gap at 6");
    }
}
