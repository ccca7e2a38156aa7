//! Restore of replicas written by Litestream 0.3.x (`generations/` layout), as Litestream 0.5
//! does when no LTX data is newer:
//!
//! ```text
//! <root>/generations/<gen 16 hex>/snapshots/<index 08x>.snapshot.lz4   LZ4 frame of the db file
//! <root>/generations/<gen>/wal/<index 08x>_<offset 08x..16x>.wal.lz4   LZ4 frames of WAL bytes
//! ```
//!
//! The newest snapshot (created at or before the timestamp, if any) is decompressed into the
//! temp file; then each WAL index of its generation, from the snapshot's index on, is
//! reassembled (segments must be contiguous) and its committed frames are written over the
//! pages, exactly what SQLite's checkpoint of that WAL would do. The WAL is parsed by our own
//! reader, so salts and checksums are verified and uncommitted tails ignored.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tokio::io::AsyncWriteExt;

use super::RestoreError;
use super::plan::Target;
use crate::replica::{LtxFileInfo, ReplicaClient, SNAPSHOT_LEVEL, StorageError};
use crate::wal::{FRAME_HEADER_SIZE, WalReader};

/// A snapshot of a 0.3 generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub generation: String,
    pub index: u32,
    pub created_at: SystemTime,
}

/// A WAL segment of a 0.3 generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub index: u32,
    pub offset: u64,
    pub created_at: SystemTime,
}

/// Everything a 0.3 replica holds.
#[derive(Debug, Default, Clone)]
pub struct Listing {
    pub snapshots: Vec<Snapshot>,
    /// Segments per generation, in (index, offset) order.
    pub segments: BTreeMap<String, Vec<Segment>>,
}

fn parse_hex(s: &str, min: usize, max: usize) -> Option<u64> {
    (min..=max).contains(&s.len()).then_some(())?;
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        .then_some(())?;
    u64::from_str_radix(s, 16).ok()
}

/// `{index:08x}.snapshot.lz4`
pub fn parse_snapshot_name(name: &str) -> Option<u32> {
    parse_hex(name.strip_suffix(".snapshot.lz4")?, 8, 8).map(|v| v as u32)
}

/// `{index:08x}_{offset:08x..16x}.wal.lz4` (offsets past 4 GiB have more digits).
pub fn parse_segment_name(name: &str) -> Option<(u32, u64)> {
    let (idx, off) = name.strip_suffix(".wal.lz4")?.split_once('_')?;
    Some((parse_hex(idx, 8, 8)? as u32, parse_hex(off, 8, 16)?))
}

/// Lists every generation's snapshots and WAL segments.
pub async fn list(client: &dyn ReplicaClient) -> Result<Listing, StorageError> {
    let mut out = Listing::default();
    for g in client.list_raw("generations").await? {
        if !g.is_dir || parse_hex(&g.name, 16, 16).is_none() {
            continue;
        }
        for e in client
            .list_raw(&format!("generations/{}/snapshots", g.name))
            .await?
        {
            if let Some(index) = parse_snapshot_name(&e.name) {
                out.snapshots.push(Snapshot {
                    generation: g.name.clone(),
                    index,
                    created_at: e.modified,
                });
            }
        }
        let mut segs: Vec<Segment> = client
            .list_raw(&format!("generations/{}/wal", g.name))
            .await?
            .into_iter()
            .filter_map(|e| {
                let (index, offset) = parse_segment_name(&e.name)?;
                Some(Segment {
                    index,
                    offset,
                    created_at: e.modified,
                })
            })
            .collect();
        segs.sort_by_key(|s| (s.index, s.offset));
        out.segments.insert(g.name.clone(), segs);
    }
    out.snapshots.sort_by_key(|s| s.created_at);
    Ok(out)
}

impl Listing {
    /// Time of the newest snapshot or segment.
    pub fn updated_at(&self) -> Option<SystemTime> {
        let segs = self.segments.values().flatten().map(|s| s.created_at);
        self.snapshots
            .iter()
            .map(|s| s.created_at)
            .chain(segs)
            .max()
    }

    /// The newest snapshot, or the newest created at or before `ts`.
    pub fn best_snapshot(&self, ts: Option<SystemTime>) -> Option<&Snapshot> {
        self.snapshots
            .iter()
            .rfind(|s| ts.is_none_or(|t| s.created_at <= t))
    }

    /// The segments to apply after `snap`: its generation, index >= its index, created at or
    /// before `ts`.
    pub fn segments_after(&self, snap: &Snapshot, ts: Option<SystemTime>) -> Vec<Segment> {
        self.segments
            .get(&snap.generation)
            .into_iter()
            .flatten()
            .filter(|s| s.index >= snap.index && ts.is_none_or(|t| s.created_at <= t))
            .cloned()
            .collect()
    }
}

/// Litestream 0.5's choice between the 0.3 data and the LTX data (never for `-txid`).
pub fn should_use(v3: &Listing, ltx: &[Vec<LtxFileInfo>], target: &Target) -> bool {
    let Some(v3_updated) = v3.updated_at() else {
        return false;
    };
    match target {
        Target::Txid(_) => false,
        Target::Latest => ltx
            .iter()
            .flatten()
            .map(|f| f.created_at)
            .max()
            .is_none_or(|l| v3_updated > l),
        Target::Timestamp(ts) => {
            let Some(v3_snap) = v3.best_snapshot(Some(*ts)) else {
                return false;
            };
            let ltx_snap = ltx
                .get(SNAPSHOT_LEVEL as usize)
                .into_iter()
                .flatten()
                .filter(|f| f.created_at < *ts)
                .map(|f| f.created_at)
                .max();
            ltx_snap.is_none_or(|l| v3_snap.created_at > l)
        }
    }
}

/// What a 0.3 restore produced.
#[derive(Debug, Clone)]
pub struct Applied {
    pub page_size: u32,
    pub commit: u32,
}

/// Downloads and applies `snap` and `segs` into `out` (the open temp file at `tmp`).
pub async fn apply(
    client: &dyn ReplicaClient,
    snap: &Snapshot,
    segs: &[Segment],
    out: &File,
    tmp: &Path,
) -> Result<Applied, RestoreError> {
    let scratch = sibling(tmp, "-v3download");
    let wal = sibling(tmp, "-v3wal");
    let res = apply_inner(client, snap, segs, out, &scratch, &wal).await;
    let _ = std::fs::remove_file(&scratch);
    let _ = std::fs::remove_file(&wal);
    res
}

async fn apply_inner(
    client: &dyn ReplicaClient,
    snap: &Snapshot,
    segs: &[Segment],
    out: &File,
    scratch: &Path,
    wal: &Path,
) -> Result<Applied, RestoreError> {
    let gen_dir = format!("generations/{}", snap.generation);
    let snap_key = format!("{gen_dir}/snapshots/{:08x}.snapshot.lz4", snap.index);
    download(client, &snap_key, scratch).await?;
    let db_len = decompress_into(scratch, out, 0).map_err(|e| corrupt(&snap_key, e))?;
    let page_size = db_page_size(out).map_err(|e| corrupt(&snap_key, e))?;
    let mut commit = (db_len / u64::from(page_size)) as u32;
    let mut expected_index = snap.index;
    let mut i = 0;
    while i < segs.len() {
        let index = segs[i].index;
        if index != expected_index || segs[i].offset != 0 {
            return Err(RestoreError::Inconsistent(format!(
                "missing WAL segment in generation {}: expected {expected_index:08x}_00000000, found {:08x}_{:08x}",
                snap.generation, index, segs[i].offset
            )));
        }
        let wal_file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(wal)
            .map_err(|e| RestoreError::io("create", wal, e))?;
        let mut len = 0u64;
        while i < segs.len() && segs[i].index == index {
            let key = format!("{gen_dir}/wal/{:08x}_{:08x}.wal.lz4", index, segs[i].offset);
            if segs[i].offset != len {
                return Err(RestoreError::Inconsistent(format!(
                    "missing WAL segment before {key}: WAL index ends at offset {len}"
                )));
            }
            download(client, &key, scratch).await?;
            len += decompress_into(scratch, &wal_file, len).map_err(|e| corrupt(&key, e))?;
            i += 1;
        }
        if let Some(c) = checkpoint(&wal_file, out, page_size)
            .map_err(|e| corrupt(&format!("{gen_dir}/wal/{index:08x}_*"), e))?
        {
            commit = c;
        }
        expected_index += 1;
    }
    out.set_len(u64::from(commit) * u64::from(page_size))
        .map_err(|e| RestoreError::io("truncate", scratch, e))?;
    Ok(Applied { page_size, commit })
}

/// Writes the committed frames of a WAL over the database, as a checkpoint does; returns
/// the database size in pages after the last commit, if any transaction committed.
fn checkpoint(wal: &File, db: &File, page_size: u32) -> Result<Option<u32>, String> {
    let mut r = match WalReader::open(wal) {
        Ok(r) => r,
        Err(crate::wal::WalError::ShortHeader { len: 0 }) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if r.header().page_size != page_size {
        return Err(format!(
            "WAL page size {} differs from the snapshot's {page_size}",
            r.header().page_size
        ));
    }
    let batch = r.read_committed(0).map_err(|e| e.to_string())?;
    if batch.is_empty() {
        return Ok(None);
    }
    let mut page = vec![0u8; page_size as usize];
    for (pgno, off) in &batch.pages {
        wal.read_exact_at(&mut page, off + FRAME_HEADER_SIZE as u64)
            .map_err(|e| e.to_string())?;
        db.write_all_at(&page, u64::from(pgno - 1) * u64::from(page_size))
            .map_err(|e| e.to_string())?;
    }
    Ok(Some(batch.commit))
}

fn db_page_size(db: &File) -> Result<u32, String> {
    let mut h = [0u8; 100];
    db.read_exact_at(&mut h, 0)
        .map_err(|e| format!("snapshot is not a database: {e}"))?;
    if &h[..16] != b"SQLite format 3\0" {
        return Err("snapshot is not a SQLite database".into());
    }
    Ok(match u16::from_be_bytes([h[16], h[17]]) {
        1 => 65536,
        n if crate::ltx::is_valid_page_size(u32::from(n)) => u32::from(n),
        n => return Err(format!("snapshot has an invalid page size {n}")),
    })
}

/// Decompresses the LZ4 frame(s) of `src` into `dst` at `at`; returns the bytes written.
fn decompress_into(src: &Path, dst: &File, at: u64) -> Result<u64, String> {
    let f = File::open(src).map_err(|e| e.to_string())?;
    let mut dec = lz4_flex::frame::FrameDecoder::new(std::io::BufReader::new(f));
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = dec.read(&mut buf).map_err(|e| format!("lz4: {e}"))?;
        if k == 0 {
            return Ok(n);
        }
        dst.write_all_at(&buf[..k], at + n)
            .map_err(|e| e.to_string())?;
        n += k as u64;
    }
}

async fn download(client: &dyn ReplicaClient, key: &str, to: &Path) -> Result<(), RestoreError> {
    let mut r = client.open_raw(key).await?;
    let mut f = tokio::fs::File::create(to)
        .await
        .map_err(|e| RestoreError::io("create", to, e))?;
    tokio::io::copy(&mut r, &mut f)
        .await
        .map_err(|e| StorageError::read(key.to_string(), e))?;
    f.flush()
        .await
        .map_err(|e| RestoreError::io("write", to, e))?;
    Ok(())
}

fn corrupt(key: &str, reason: String) -> RestoreError {
    RestoreError::Corrupt {
        key: key.to_string(),
        reason,
    }
}

fn sibling(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_snapshot_name("0000000a.snapshot.lz4"), Some(10));
        assert_eq!(parse_snapshot_name("a.snapshot.lz4"), None);
        assert_eq!(
            parse_segment_name("00000001_000080e0.wal.lz4"),
            Some((1, 0x80e0))
        );
        assert_eq!(
            parse_segment_name("00000001_0000000100000000.wal.lz4"),
            Some((1, 1 << 32)),
            "offsets past 4 GiB"
        );
        assert_eq!(parse_segment_name("00000001_80e0.wal.lz4"), None);
        assert_eq!(parse_segment_name("00000001-000080e0.wal.lz4"), None);
    }

    #[test]
    fn choice_between_formats() {
        let t = |s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        let v3 = Listing {
            snapshots: vec![Snapshot {
                generation: "a".repeat(16),
                index: 0,
                created_at: t(10),
            }],
            segments: BTreeMap::from([(
                "a".repeat(16),
                vec![Segment {
                    index: 0,
                    offset: 0,
                    created_at: t(20),
                }],
            )]),
        };
        let ltx = |c| {
            let mut l = vec![Vec::new(); 10];
            l[9].push(LtxFileInfo {
                level: 9,
                min_txid: 1,
                max_txid: 1,
                size: 1,
                created_at: t(c),
            });
            l
        };
        assert!(
            should_use(&v3, &ltx(15), &Target::Latest),
            "0.3 data is newer"
        );
        assert!(
            !should_use(&v3, &ltx(25), &Target::Latest),
            "LTX data is newer"
        );
        assert!(!should_use(&v3, &ltx(1), &Target::Txid(1)));
        assert!(should_use(&v3, &[], &Target::Latest));
        assert!(should_use(&v3, &ltx(5), &Target::Timestamp(t(12))));
        assert!(!should_use(&v3, &ltx(11), &Target::Timestamp(t(12))));
        assert!(!should_use(&Listing::default(), &ltx(1), &Target::Latest));
    }
}
