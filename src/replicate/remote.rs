//! What this process knows of the replica's files, kept in memory from one listing at start
//! and from its own writes and deletes. It is what lets an idle database cost zero requests:
//! nothing is listed again unless an error makes the knowledge doubtful.

use crate::replica::{LtxFileInfo, MAX_LEVEL, ReplicaClient, StorageError};

#[derive(Debug, Clone, Default)]
pub struct RemoteIndex {
    levels: Vec<Vec<LtxFileInfo>>,
}

impl RemoteIndex {
    /// Lists every level (10 requests).
    pub async fn load(client: &dyn ReplicaClient) -> Result<RemoteIndex, StorageError> {
        let levels = crate::restore::list_levels(client, &crate::restore::Target::Latest).await?;
        Ok(RemoteIndex { levels })
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
}
