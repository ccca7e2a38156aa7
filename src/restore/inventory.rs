//! What a replica holds, from a listing (pure): every file by level, the problems of each
//! level's TXID chain (gaps, overlaps), the newest TXID and its age, the range of times a
//! timestamp restore can reach, and the total size. `liteship ltx` prints it and `liteship
//! verify` checks it.

use std::time::SystemTime;

use crate::replica::{LtxFileInfo, SNAPSHOT_LEVEL};

/// A problem in one level's TXID chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// TXIDs `after + 1 .. next` are in no file of the level.
    Gap { level: u8, after: u64, next: u64 },
    /// Two files of the level cover the same TXIDs.
    Overlap {
        level: u8,
        first: (u64, u64),
        second: (u64, u64),
    },
}

impl std::fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainProblem::Gap { level, after, next } => write!(
                f,
                "level {level}: gap between txid {after:016x} and the next file at {next:016x} (a file is missing)"
            ),
            ChainProblem::Overlap {
                level,
                first,
                second,
            } => write!(
                f,
                "level {level}: files {:016x}-{:016x} and {:016x}-{:016x} overlap",
                first.0, first.1, second.0, second.1
            ),
        }
    }
}

/// The summary of a listing.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Every LTX file, by level then TXID.
    pub files: Vec<LtxFileInfo>,
    pub problems: Vec<ChainProblem>,
    pub newest_txid: u64,
    /// Creation time of the newest file (the replica's freshness).
    pub newest_at: Option<SystemTime>,
    /// The earliest and latest times a timestamp restore reaches: from the oldest file that
    /// starts a history (TXID 1) to the newest file.
    pub restorable: Option<(SystemTime, SystemTime)>,
    pub total_size: u64,
}

impl Inventory {
    pub fn of(levels: &[Vec<LtxFileInfo>]) -> Inventory {
        let files: Vec<LtxFileInfo> = levels.iter().flatten().cloned().collect();
        let newest = files.iter().max_by_key(|f| (f.max_txid, f.created_at));
        let newest_at = files.iter().map(|f| f.created_at).max();
        let oldest_start = files
            .iter()
            .filter(|f| f.min_txid == 1)
            .map(|f| f.created_at)
            .min();
        let mut problems = Vec::new();
        for (level, list) in levels.iter().enumerate() {
            if level as u8 != SNAPSHOT_LEVEL {
                problems.extend(chain_problems(level as u8, list));
            }
        }
        Inventory {
            newest_txid: newest.map_or(0, |f| f.max_txid),
            newest_at,
            restorable: oldest_start.zip(newest_at),
            total_size: files.iter().map(|f| f.size).sum(),
            files,
            problems,
        }
    }
}

/// Gaps and overlaps between consecutive files of one level (ordered by TXID). Snapshots
/// (level 9) all start at TXID 1 by design and are not checked.
fn chain_problems(level: u8, files: &[LtxFileInfo]) -> Vec<ChainProblem> {
    files
        .windows(2)
        .filter_map(|w| {
            let (a, b) = (&w[0], &w[1]);
            if b.min_txid > a.max_txid + 1 {
                Some(ChainProblem::Gap {
                    level,
                    after: a.max_txid,
                    next: b.min_txid,
                })
            } else if b.min_txid <= a.max_txid {
                Some(ChainProblem::Overlap {
                    level,
                    first: (a.min_txid, a.max_txid),
                    second: (b.min_txid, b.max_txid),
                })
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn f(level: u8, min: u64, max: u64, secs: u64) -> LtxFileInfo {
        LtxFileInfo {
            level,
            min_txid: min,
            max_txid: max,
            size: 10,
            created_at: UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[test]
    fn summarises_and_finds_gaps_and_overlaps() {
        let mut levels = vec![Vec::new(); 10];
        levels[0] = vec![f(0, 5, 5, 50), f(0, 6, 6, 60), f(0, 8, 8, 80)];
        levels[1] = vec![f(1, 1, 4, 40), f(1, 3, 6, 60)];
        levels[9] = vec![f(9, 1, 2, 20), f(9, 1, 6, 61)];
        let inv = Inventory::of(&levels);
        assert_eq!(inv.newest_txid, 8);
        assert_eq!(inv.total_size, 70);
        assert_eq!(
            inv.restorable,
            Some((
                UNIX_EPOCH + Duration::from_secs(20),
                UNIX_EPOCH + Duration::from_secs(80)
            ))
        );
        assert_eq!(
            inv.problems,
            vec![
                ChainProblem::Gap {
                    level: 0,
                    after: 6,
                    next: 8
                },
                ChainProblem::Overlap {
                    level: 1,
                    first: (1, 4),
                    second: (3, 6)
                },
            ]
        );
        assert!(inv.problems[0].to_string().contains("missing"));
    }
}
