//! What this process knows of the replica's files, kept in memory from one listing at start
//! and from its own writes and deletes. It is what lets an idle database cost zero requests:
//! nothing is listed again except by the periodic replica check while writes happen
//! ([`super::maintain`]) and at shutdown.

use crate::replica::{LtxFileInfo, MAX_LEVEL, ReplicaClient, SNAPSHOT_LEVEL, StorageError};
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

    /// The files of level `src` that the next compaction folds into one `dst` file: those
    /// after `dst`'s newest TXID. A level continues after the newest snapshot instead when
    /// it has no file yet (the base image is in level 9 already and is not uploaded or
    /// downloaded again) or when its own next files are gone (a lifecycle rule, a lost
    /// object): the snapshot covers the hole, as the restore plan reads it (overlaps are
    /// allowed). An `Err` names a hole that no snapshot covers (a new snapshot heals it).
    pub fn compaction_inputs(&self, src: u8, dst: u8) -> Result<Vec<LtxFileInfo>, String> {
        let floor = self.level_max(dst);
        let inputs: Vec<LtxFileInfo> = self
            .level(src)
            .iter()
            .filter(|f| f.min_txid > floor)
            .cloned()
            .collect();
        let Some(first) = inputs.first() else {
            return Ok(inputs);
        };
        if floor > 0 && first.min_txid == floor + 1 {
            return Ok(inputs);
        }
        let snap = self.level_max(SNAPSHOT_LEVEL);
        if floor == 0 {
            let after: Vec<LtxFileInfo> = inputs
                .iter()
                .filter(|f| f.min_txid > snap)
                .cloned()
                .collect();
            let starts_at_snapshot = after.first().is_none_or(|f| f.min_txid == snap + 1);
            return Ok(if snap > 0 && starts_at_snapshot {
                after
            } else {
                inputs
            });
        }
        // A hole after `floor`: covered when the snapshot reaches the first input.
        let after: Vec<LtxFileInfo> = inputs
            .iter()
            .filter(|f| f.max_txid > snap)
            .cloned()
            .collect();
        if snap > floor && after.first().is_none_or(|f| f.min_txid <= snap + 1) {
            return Ok(after);
        }
        Err(format!(
            "cannot compact level {src} into {dst}: level {dst} ends at {floor:016x} but level {src} continues at {:016x} and no snapshot covers the gap; taking a snapshot",
            first.min_txid
        ))
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

    fn spans(files: Result<Vec<LtxFileInfo>, String>) -> Vec<(u64, u64)> {
        files
            .unwrap()
            .iter()
            .map(|f| (f.min_txid, f.max_txid))
            .collect()
    }

    #[test]
    fn compaction_continues_the_level_or_the_snapshot_never_across_a_hole() {
        let mut r = RemoteIndex::default();
        for t in 1..=5 {
            r.add(f(0, t, t));
        }
        assert_eq!(
            spans(r.compaction_inputs(0, 1)).len(),
            5,
            "a first level-1 file"
        );
        r.add(f(1, 1, 5));
        r.add(f(0, 6, 6));
        assert_eq!(spans(r.compaction_inputs(0, 1)), [(6, 6)]);
        // The base image is in a snapshot: a new level starts after it.
        r.add(f(9, 1, 6));
        r.add(f(0, 7, 7));
        assert_eq!(spans(r.compaction_inputs(0, 2)), [(7, 7)]);
        // Level 1 continues its own chain even when a snapshot is newer.
        assert_eq!(spans(r.compaction_inputs(0, 1)), [(6, 6), (7, 7)]);
        // A lifecycle rule removed level 0 from 6 on; a snapshot at 21 covers the hole,
        // and the new writer continues at 22: level 1 continues after the snapshot.
        r.remove(0, &[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (7, 7)]);
        r.add(f(9, 1, 21));
        r.add(f(0, 22, 22));
        assert_eq!(spans(r.compaction_inputs(0, 1)), [(22, 22)]);
        // A hole no snapshot covers is an error that names both ends.
        r.add(f(1, 22, 22));
        r.add(f(0, 24, 24));
        let e = r.compaction_inputs(0, 1).unwrap_err();
        assert!(
            e.contains("0000000000000016") && e.contains("0000000000000018"),
            "{e}"
        );
        // A snapshot inside the next input covers the hole: the input overlaps it.
        r.add(f(0, 25, 26));
        r.add(f(9, 1, 25));
        assert_eq!(spans(r.compaction_inputs(0, 1)), [(25, 26)]);
        r.remove(9, &[(1, 25)]);
        r.add(f(9, 1, 24));
        assert_eq!(spans(r.compaction_inputs(0, 1)), [(25, 26)]);
        r.remove(9, &[(1, 24)]);
        r.add(f(9, 1, 23));
        assert_eq!(spans(r.compaction_inputs(0, 1)), [(24, 24), (25, 26)]);
    }
}
