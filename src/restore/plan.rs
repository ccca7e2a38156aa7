//! The restore planner: pure, from listings already fetched to an ordered list of files.
//! Litestream 0.5.17's `CalcRestorePlan` rules (spec 4.1):
//! 1. the newest L9 snapshot that satisfies the target (`MaxTXID <= txid`, created strictly
//!    before the timestamp) starts the plan;
//! 2. then, repeatedly, across levels 8..0, the file with `MinTXID <= cur+1 < MaxTXID+1` that
//!    has the highest MaxTXID, then the lowest MinTXID, the highest level, the earliest
//!    creation time;
//! 3. the plan must start at TXID 1 and, for `-txid`, end exactly there; for a latest restore
//!    any file left beyond the chain is a gap.

use std::time::SystemTime;

use crate::replica::{LtxFileInfo, SNAPSHOT_LEVEL};

/// What to restore to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Latest,
    /// Up to and including this TXID (a file boundary).
    Txid(u64),
    /// The newest state whose files were all created strictly before this time.
    Timestamp(SystemTime),
}

/// The ordered files to apply; the last one's MaxTXID is the restored TXID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub files: Vec<LtxFileInfo>,
}

impl Plan {
    pub fn txid(&self) -> u64 {
        self.files.last().map_or(0, |f| f.max_txid)
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The files that contribute to the result: those from the last snapshot (MinTXID 1) of
    /// the plan on. A snapshot replaces every page, so files before it need not be fetched.
    /// (Litestream's plans often hold two full images, e.g. L9 `1-1` then L1 `1-N`.)
    pub fn effective_files(&self) -> &[LtxFileInfo] {
        let start = self
            .files
            .iter()
            .rposition(|f| f.min_txid == 1)
            .unwrap_or(0);
        &self.files[start..]
    }
}

/// Why no plan exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Nothing in the replica matches (or the replica is empty).
    #[error("no matching backup files available")]
    NoBackups,
    /// `-txid` is not the end of any chain of files.
    #[error(
        "txid {0:016x} is not available: restorable TXIDs are file boundaries (see -dry-run for the latest plan)"
    )]
    TxidNotAvailable(u64),
    /// A hole in the history.
    #[error(
        "non-contiguous ltx files: have up to {have:016x} but next file starts at {next:016x} (level {level})"
    )]
    Gap { have: u64, next: u64, level: u8 },
    /// The chain does not start with a snapshot.
    #[error("no snapshot: the oldest usable file starts at txid {0:016x}, not 1")]
    NoSnapshot(u64),
    /// The timestamp precedes every backup.
    #[error("timestamp is before the first backup (the oldest file was created at {first})")]
    TimestampBeforeFirst { first: String },
}

fn qualifies(f: &LtxFileInfo, target: &Target) -> bool {
    match target {
        Target::Latest => true,
        Target::Txid(t) => f.max_txid <= *t,
        Target::Timestamp(ts) => f.created_at < *ts,
    }
}

/// `levels[i]` lists level `i` (missing levels count as empty), each in (min, max) order.
pub fn plan(levels: &[Vec<LtxFileInfo>], target: &Target) -> Result<Plan, PlanError> {
    let empty = Vec::new();
    let level = |l: u8| levels.get(l as usize).unwrap_or(&empty);
    let mut files: Vec<LtxFileInfo> = Vec::new();
    if let Some(snap) = level(SNAPSHOT_LEVEL)
        .iter()
        .rfind(|f| f.min_txid == 1 && qualifies(f, target))
    {
        files.push(snap.clone());
    }
    let mut cur = files.last().map_or(0, |f| f.max_txid);
    let mut skip = vec![0; levels.len()];
    loop {
        if let Target::Txid(t) = target
            && cur >= *t
        {
            break;
        }
        let Some(next) = best_next(levels, &mut skip, cur, target) else {
            break;
        };
        cur = next.max_txid;
        files.push(next.clone());
    }
    check(levels, target, files, cur)
}

/// The files that carry a state at `cur` forward, by the planner's rules (levels 8..0),
/// and the TXID where the chain stops. `Err((reached, next))` when the replica holds a
/// newer state (in any level, snapshots included) that the chain cannot reach (retention
/// removed what was needed): `next` is where the newer files start.
pub fn continue_from(
    levels: &[Vec<LtxFileInfo>],
    mut cur: u64,
) -> Result<(Vec<LtxFileInfo>, u64), (u64, u64)> {
    let mut files = Vec::new();
    let mut skip = vec![0; levels.len()];
    while let Some(next) = best_next(levels, &mut skip, cur, &Target::Latest) {
        cur = next.max_txid;
        files.push(next.clone());
    }
    let beyond = levels
        .iter()
        .flatten()
        .filter(|f| f.max_txid > cur)
        .map(|f| {
            if f.level == SNAPSHOT_LEVEL {
                f.max_txid
            } else {
                f.min_txid
            }
        })
        .min();
    match beyond {
        Some(next) => Err((cur, next)),
        None => Ok((files, cur)),
    }
}

/// The next file of the chain at `cur`. `skip[level]` is how many leading files of each
/// level end at or before `cur`: the chain only moves forward, so they never qualify again
/// and each call starts after them (linear in the listing over a whole plan, not
/// quadratic).
fn best_next<'a>(
    levels: &'a [Vec<LtxFileInfo>],
    skip: &mut [usize],
    cur: u64,
    target: &Target,
) -> Option<&'a LtxFileInfo> {
    let mut best: Option<&LtxFileInfo> = None;
    for lvl in (0..SNAPSHOT_LEVEL as usize).rev() {
        let Some(list) = levels.get(lvl) else {
            continue;
        };
        let start = &mut skip[lvl];
        while list.get(*start).is_some_and(|f| f.max_txid <= cur) {
            *start += 1;
        }
        for f in &list[*start..] {
            if f.min_txid > cur.saturating_add(1) {
                break; // sorted by min: nothing later connects
            }
            if f.max_txid <= cur || !qualifies(f, target) {
                continue;
            }
            let better = match best {
                None => true,
                Some(b) => {
                    (
                        f.max_txid,
                        std::cmp::Reverse(f.min_txid),
                        f.level,
                        std::cmp::Reverse(f.created_at),
                    ) > (
                        b.max_txid,
                        std::cmp::Reverse(b.min_txid),
                        b.level,
                        std::cmp::Reverse(b.created_at),
                    )
                }
            };
            if better {
                best = Some(f);
            }
        }
    }
    best
}

fn check(
    levels: &[Vec<LtxFileInfo>],
    target: &Target,
    files: Vec<LtxFileInfo>,
    cur: u64,
) -> Result<Plan, PlanError> {
    if files.is_empty() {
        if let Target::Timestamp(_) = target
            && let Some(first) = levels.iter().flatten().map(|f| f.created_at).min()
        {
            return Err(PlanError::TimestampBeforeFirst {
                first: crate::timefmt::format_rfc3339_ms(crate::timefmt::to_ms(first)),
            });
        }
        if *target == Target::Latest
            && let Some(min) = levels.iter().flatten().map(|f| f.min_txid).min()
        {
            return Err(PlanError::NoSnapshot(min));
        }
        return Err(PlanError::NoBackups);
    }
    if let Target::Txid(t) = target
        && cur != *t
    {
        return Err(PlanError::TxidNotAvailable(*t));
    }
    if *target == Target::Latest
        && let Some(f) = levels
            .iter()
            .take(SNAPSHOT_LEVEL as usize)
            .flatten()
            .filter(|f| f.max_txid > cur)
            .min_by_key(|f| f.min_txid)
    {
        return Err(PlanError::Gap {
            have: cur,
            next: f.min_txid,
            level: f.level,
        });
    }
    if files[0].min_txid != 1 {
        return Err(PlanError::NoSnapshot(files[0].min_txid));
    }
    Ok(Plan { files })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn f(level: u8, min: u64, max: u64, t: u64) -> LtxFileInfo {
        LtxFileInfo {
            level,
            min_txid: min,
            max_txid: max,
            size: 100,
            created_at: UNIX_EPOCH + Duration::from_secs(t),
        }
    }

    fn levels(files: &[LtxFileInfo]) -> Vec<Vec<LtxFileInfo>> {
        let mut out = vec![Vec::new(); 10];
        for x in files {
            out[x.level as usize].push(x.clone());
        }
        for l in &mut out {
            l.sort_by_key(|x| (x.min_txid, x.max_txid));
        }
        out
    }

    fn ids(p: &Plan) -> Vec<(u8, u64, u64)> {
        p.files
            .iter()
            .map(|x| (x.level, x.min_txid, x.max_txid))
            .collect()
    }

    #[test]
    fn level0_chain_only() {
        let l = levels(&[f(0, 1, 1, 1), f(0, 2, 2, 2), f(0, 3, 3, 3)]);
        let p = plan(&l, &Target::Latest).unwrap();
        assert_eq!(ids(&p), vec![(0, 1, 1), (0, 2, 2), (0, 3, 3)]);
        assert_eq!(p.txid(), 3);
    }

    #[test]
    fn prefers_snapshot_then_widest_files() {
        let l = levels(&[
            f(9, 1, 5, 10),
            f(1, 1, 6, 11),
            f(0, 6, 6, 6),
            f(0, 7, 7, 7),
            f(1, 7, 9, 12),
            f(0, 8, 8, 8),
            f(0, 9, 9, 9),
            f(0, 10, 10, 13),
        ]);
        let p = plan(&l, &Target::Latest).unwrap();
        assert_eq!(ids(&p), vec![(9, 1, 5), (1, 1, 6), (1, 7, 9), (0, 10, 10)]);
    }

    #[test]
    fn overlapping_files_allowed() {
        // Observed in Litestream: L9 1-1 followed by L2 1-3.
        let l = levels(&[f(9, 1, 1, 1), f(2, 1, 3, 3), f(0, 4, 4, 4)]);
        assert_eq!(
            ids(&plan(&l, &Target::Latest).unwrap()),
            vec![(9, 1, 1), (2, 1, 3), (0, 4, 4)]
        );
    }

    #[test]
    fn txid_target() {
        let l = levels(&[
            f(0, 1, 1, 1),
            f(1, 2, 4, 4),
            f(0, 2, 2, 2),
            f(0, 3, 3, 3),
            f(0, 4, 4, 4),
        ]);
        assert_eq!(
            ids(&plan(&l, &Target::Txid(3)).unwrap()),
            vec![(0, 1, 1), (0, 2, 2), (0, 3, 3)]
        );
        assert_eq!(
            ids(&plan(&l, &Target::Txid(4)).unwrap()),
            vec![(0, 1, 1), (1, 2, 4)]
        );
        assert_eq!(
            plan(&l, &Target::Txid(9)),
            Err(PlanError::TxidNotAvailable(9))
        );
        // Only L1 2-4 covers 3 once L0 2..4 are gone.
        let l = levels(&[f(0, 1, 1, 1), f(1, 2, 4, 4)]);
        assert_eq!(
            plan(&l, &Target::Txid(3)),
            Err(PlanError::TxidNotAvailable(3))
        );
    }

    #[test]
    fn timestamp_target_is_strictly_before() {
        let l = levels(&[
            f(9, 1, 2, 2),
            f(0, 1, 1, 1),
            f(0, 2, 2, 2),
            f(0, 3, 3, 3),
            f(1, 1, 3, 3),
        ]);
        let at = |s| Target::Timestamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(ids(&plan(&l, &at(3)).unwrap()), vec![(9, 1, 2)]);
        assert_eq!(ids(&plan(&l, &at(4)).unwrap()), vec![(9, 1, 2), (1, 1, 3)]);
        assert_eq!(ids(&plan(&l, &at(2)).unwrap()), vec![(0, 1, 1)]);
        assert!(matches!(
            plan(&l, &at(1)),
            Err(PlanError::TimestampBeforeFirst { .. })
        ));
    }

    #[test]
    fn gap_and_missing_snapshot() {
        let l = levels(&[f(0, 1, 1, 1), f(0, 2, 2, 2), f(0, 4, 4, 4)]);
        assert_eq!(
            plan(&l, &Target::Latest),
            Err(PlanError::Gap {
                have: 2,
                next: 4,
                level: 0
            })
        );
        let l = levels(&[f(0, 3, 3, 3), f(0, 4, 4, 4)]);
        assert_eq!(plan(&l, &Target::Latest), Err(PlanError::NoSnapshot(3)));
        assert_eq!(
            plan(&levels(&[]), &Target::Latest),
            Err(PlanError::NoBackups)
        );
    }

    #[test]
    fn effective_files_start_at_the_last_snapshot() {
        let l = levels(&[f(9, 1, 1, 1), f(1, 1, 3, 3), f(0, 4, 4, 4)]);
        let p = plan(&l, &Target::Latest).unwrap();
        assert_eq!(p.files.len(), 3);
        let eff: Vec<_> = p
            .effective_files()
            .iter()
            .map(|x| (x.level, x.min_txid))
            .collect();
        assert_eq!(eff, vec![(1, 1), (0, 4)]);
    }

    #[test]
    fn snapshot_beyond_txid_is_skipped() {
        let l = levels(&[f(9, 1, 3, 3), f(9, 1, 1, 1), f(0, 2, 2, 2), f(0, 3, 3, 3)]);
        assert_eq!(
            ids(&plan(&l, &Target::Txid(2)).unwrap()),
            vec![(9, 1, 1), (0, 2, 2)]
        );
        assert_eq!(ids(&plan(&l, &Target::Latest).unwrap()), vec![(9, 1, 3)]);
    }
}

#[cfg(test)]
mod continue_tests {
    use super::*;

    fn f(level: u8, min: u64, max: u64) -> LtxFileInfo {
        LtxFileInfo {
            level,
            min_txid: min,
            max_txid: max,
            size: 1,
            created_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn continue_from_follows_the_chain_and_names_gaps() {
        let mut levels = vec![Vec::new(); 10];
        levels[0] = vec![f(0, 5, 5), f(0, 6, 6), f(0, 7, 7)];
        levels[1] = vec![f(1, 1, 4)];
        let (files, to) = continue_from(&levels, 4).unwrap();
        assert_eq!((files.len(), to), (3, 7));
        assert_eq!(continue_from(&levels, 7).unwrap().0.len(), 0);
        levels[0].remove(1);
        assert_eq!(continue_from(&levels, 4), Err((5, 7)), "L0 gap");
        // Only a newer snapshot: the standby cannot reach it file by file.
        let mut levels = vec![Vec::new(); 10];
        levels[0] = vec![f(0, 3, 3)];
        levels[9] = vec![f(9, 1, 9)];
        assert_eq!(continue_from(&levels, 3), Err((3, 9)));
    }
}
