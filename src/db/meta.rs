//! Local replication state next to the database, in Litestream's layout so that either tool
//! can take over from the other (spec 2.4):
//!
//! ```text
//! <dir>/.<name>-litestream/ltx/0/<txid>-<txid>.ltx   staged level-0 files; the newest one is
//!                                                   the local position (no position file)
//! <dir>/.<name>-liteship/lineage.json               which replica and TXID this database file
//!                                                   descends from (written by restore)
//! ```
//!
//! Staged files are written as `.tmp`, fsynced, renamed, and the directory fsynced; leftover
//! `.tmp` files are removed at start. Uploaded staged files are not deleted but renamed to
//! `spare-N.tmp` in the same directory (up to [`SPARES`] small ones), and the next staged
//! file is written into a spare (truncated) instead of a new file: one file created and deleted per
//! database per sync made inode allocation the largest cost of replicating many databases
//! (on ext4 without a journal, allocation skips every recently deleted inode one by one).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::fsutil::{self, sync_dir};
use crate::ltx::{Decoder, Header, format_file_name, parse_file_name};

/// How many uploaded staged files are kept for reuse: a level-1 compaction interval's
/// worth of one-second syncs (they are retired together once compacted).
pub const SPARES: usize = 64;

/// Larger staged files are deleted, not kept: spares hold disk space until reused.
pub const SPARE_MAX_BYTES: u64 = 256 * 1024;

/// Spare files `spare-N.tmp` in the staging directory, by number, deleted when the last
/// handle goes (a clean exit leaves none; after a crash, [`Meta::prepare`] removes them
/// with the other temp files).
#[derive(Debug)]
struct Spares {
    dir: PathBuf,
    free: Mutex<Vec<u64>>,
    next: AtomicU64,
}

impl Spares {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u64>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("spare-{n}.tmp"))
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        for n in std::mem::take(&mut *self.lock()) {
            let _ = fs::remove_file(self.path(n));
        }
    }
}

/// The meta directories of one database.
#[derive(Debug, Clone)]
pub struct Meta {
    pub l0_dir: PathBuf,
    pub liteship_dir: PathBuf,
    /// Retired staged files (`spare-N.tmp` in `l0_dir`) waiting to be written again.
    spares: Arc<Spares>,
}

impl Meta {
    /// Litestream's default `<dir>/.<name>-litestream` (or `meta_path`), plus ours.
    pub fn new(db: &Path, meta_path: Option<&Path>) -> Meta {
        let dir = db.parent().unwrap_or(Path::new("."));
        let name = db
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ls = meta_path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join(format!(".{name}-litestream")));
        let l0_dir = ls.join("ltx").join("0");
        Meta {
            spares: Arc::new(Spares {
                dir: l0_dir.clone(),
                free: Mutex::default(),
                next: AtomicU64::new(0),
            }),
            l0_dir,
            liteship_dir: dir.join(format!(".{name}-liteship")),
        }
    }

    /// Moves a spare file to `tmp`, if there is one, so that writing `tmp` reuses its inode
    /// (the writer truncates it).
    pub fn take_spare(&self, tmp: &Path) {
        let mut spares = self.spares.lock();
        while let Some(n) = spares.pop() {
            if fs::rename(self.spares.path(n), tmp).is_ok() {
                return;
            }
        }
    }

    /// Removes staged files that no reader can have open any more (uploaded, and compacted
    /// where levels exist), keeping up to [`SPARES`] of those under [`SPARE_MAX_BYTES`] as
    /// spares for [`Meta::take_spare`]. Only the upload loop calls this, between its own
    /// reads of staged files.
    pub fn retire(&self, staged: &[(u64, u64)]) -> std::io::Result<()> {
        let mut spares = self.spares.lock();
        let mut unlink = Vec::new();
        for &(txid, size) in staged {
            if spares.len() >= SPARES || size > SPARE_MAX_BYTES {
                unlink.push(txid);
                continue;
            }
            let n = self
                .spares
                .next
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match fs::rename(self.l0_path(txid), self.spares.path(n)) {
                Ok(()) => spares.push(n),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        drop(spares);
        self.unlink(&unlink)?;
        if !staged.is_empty() {
            sync_dir(&self.l0_dir).map_err(|e| e.source)?;
        }
        Ok(())
    }

    pub fn l0_path(&self, txid: u64) -> PathBuf {
        self.l0_dir.join(format_file_name(txid, txid))
    }

    /// Creates the directories and removes leftover temp files.
    pub fn prepare(&self) -> std::io::Result<()> {
        fs::create_dir_all(&self.l0_dir)?;
        fsutil::remove_tmp_files(&self.l0_dir).map_err(|e| e.source)
    }

    /// Staged level-0 TXIDs, ascending.
    pub fn staged(&self) -> std::io::Result<Vec<u64>> {
        Ok(self.list(false)?.into_iter().map(|(t, _)| t).collect())
    }

    /// Staged level-0 TXIDs with their sizes, ascending: one listing, and one `fstatat`
    /// per file relative to the directory (no path walks). A file removed between the two
    /// is left out.
    pub fn staged_sizes(&self) -> std::io::Result<Vec<(u64, u64)>> {
        self.list(true)
    }

    fn list(&self, sizes: bool) -> std::io::Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.l0_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            let Some((a, b)) = e.file_name().to_str().and_then(parse_file_name) else {
                continue;
            };
            if a != b {
                continue;
            }
            let size = match sizes {
                false => 0,
                true => match e.metadata() {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                },
            };
            out.push((a, size));
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The header of the newest staged file, fully decoded (checksum verified).
    pub fn newest_header(&self) -> Result<Option<Header>, StagedError> {
        let staged = self.staged().map_err(|e| StagedError {
            path: self.l0_dir.clone(),
            reason: e.to_string(),
            corrupt: false,
        })?;
        match staged.last() {
            Some(t) => verify_staged(&self.l0_path(*t)).map(Some),
            None => Ok(None),
        }
    }

    /// `auto-recover`: removes corrupt staged files from the newest down, until the newest
    /// one verifies (or none is left). Returns the TXIDs removed.
    pub fn drop_corrupt_newest(&self) -> Result<Vec<u64>, StagedError> {
        let mut removed = Vec::new();
        loop {
            match self.newest_header() {
                Ok(_) => return Ok(removed),
                Err(e) if !e.corrupt => return Err(e),
                Err(e) => {
                    let txid = *self.staged().unwrap_or_default().last().ok_or(e)?;
                    self.remove(&[txid]).map_err(|err| StagedError {
                        path: self.l0_path(txid),
                        reason: err.to_string(),
                        corrupt: false,
                    })?;
                    removed.push(txid);
                }
            }
        }
    }

    /// Removes staged files.
    pub fn remove(&self, txids: &[u64]) -> std::io::Result<()> {
        self.unlink(txids)?;
        if !txids.is_empty() {
            sync_dir(&self.l0_dir).map_err(|e| e.source)?;
        }
        Ok(())
    }

    fn unlink(&self, txids: &[u64]) -> std::io::Result<()> {
        for t in txids {
            match fs::remove_file(self.l0_path(*t)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Removes every staged file (a new history, or a reset).
    pub fn clear(&self) -> std::io::Result<()> {
        let all = self.staged()?;
        self.remove(&all)
    }

    pub fn lineage_path(&self) -> PathBuf {
        self.liteship_dir.join("lineage.json")
    }
}

/// The newest staged level-0 file (the local position) cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("staged level-0 file {}: {reason}", path.display())]
pub struct StagedError {
    pub path: PathBuf,
    pub reason: String,
    /// The file exists but failed verification (as opposed to an I/O error).
    pub corrupt: bool,
}

/// Decodes a staged file completely (checksum verified) and returns its header.
fn verify_staged(path: &Path) -> Result<Header, StagedError> {
    let fail = |reason: String, corrupt| StagedError {
        path: path.to_path_buf(),
        reason,
        corrupt,
    };
    let f = fs::File::open(path).map_err(|e| fail(format!("open: {e}"), false))?;
    let mut dec =
        Decoder::new(std::io::BufReader::new(f)).map_err(|e| fail(e.to_string(), true))?;
    let h = *dec.header();
    let mut page = vec![0u8; h.page_size as usize];
    while dec
        .next_page(&mut page)
        .map_err(|e| fail(e.to_string(), true))?
        .is_some()
    {}
    dec.finish().map_err(|e| fail(e.to_string(), true))?;
    Ok(h)
}

/// What a database file descends from: written by `restore` (and by `replicate` as it
/// goes), read by `replicate` to know a database is not an unrelated file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// `ReplicaClient::location()` of the replica.
    pub replica: String,
    /// TXID of the replica state the file holds (16 hex digits).
    pub txid: String,
    /// Identity of the database file (device and inode); a replaced file does not match.
    pub dev: u64,
    pub ino: u64,
    /// The file's birth time (ns since the epoch), where the filesystem records it: a
    /// database deleted and created again can get the same inode number, never the same
    /// birth time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub btime_ns: Option<u128>,
    /// CRC-64 of the file's bytes when a restore wrote it (16 hex digits): while the file
    /// still has exactly these bytes, it is the replica's state `txid` and replication
    /// continues from the WAL's first frame without a full image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_crc64: Option<String>,
    /// The replica file the restore ended with, as it was then: continuing without a full
    /// image also needs the replica to still hold that very file (another history could
    /// have reached the same TXID since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<RestoredFile>,
}

/// One replica file, by name, size and stored file checksum (its last 8 bytes, hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredFile {
    pub level: u8,
    pub min_txid: String,
    pub max_txid: String,
    pub size: u64,
    pub checksum: String,
}

/// CRC-64 of every byte of `file` (positional reads, 1 MiB at a time).
pub fn content_crc64(file: &fs::File) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut h = crate::ltx::FileHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = file.read_at(&mut buf, off)?;
        if n == 0 {
            return Ok(h.raw().0);
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
}

/// The identity of the file at `path`: device, inode and birth time (if recorded).
pub fn file_identity(path: &Path) -> std::io::Result<(u64, u64, Option<u128>)> {
    let md = fs::metadata(path)?;
    let btime = md
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos());
    Ok((md.dev(), md.ino(), btime))
}

impl Lineage {
    pub fn for_file(db: &Path, replica: &str, txid: u64) -> std::io::Result<Lineage> {
        let (dev, ino, btime_ns) = file_identity(db)?;
        Ok(Lineage {
            replica: replica.to_string(),
            txid: format!("{txid:016x}"),
            dev,
            ino,
            btime_ns,
            content_crc64: None,
            restored_from: None,
        })
    }

    /// The same lineage, recording the file's content checksum.
    pub fn with_content(mut self, db: &Path) -> std::io::Result<Lineage> {
        let crc = content_crc64(&fs::File::open(db)?)?;
        self.content_crc64 = Some(format!("{crc:016x}"));
        Ok(self)
    }

    /// The same lineage, recording the replica file the restore ended with.
    pub fn with_restored_from(mut self, f: Option<RestoredFile>) -> Lineage {
        self.restored_from = f;
        self
    }

    /// Whether the file at `db` has the bytes the restore wrote (the content checksum).
    pub fn has_restored_bytes(&self, db: &Path) -> bool {
        self.content().is_some_and(|crc| {
            fs::File::open(db)
                .and_then(|f| content_crc64(&f))
                .is_ok_and(|now| now == crc)
        })
    }

    /// The recorded content checksum, if any.
    pub fn content(&self) -> Option<u64> {
        self.content_crc64
            .as_deref()
            .and_then(crate::ltx::parse_hex16)
    }

    pub fn txid(&self) -> Option<u64> {
        crate::ltx::parse_hex16(&self.txid)
    }

    /// Whether this lineage is about the file now at `db` and the replica `replica`.
    pub fn matches(&self, db: &Path, replica: &str) -> bool {
        self.is_file(db) && self.replica == replica
    }

    /// Whether this lineage is about the file now at `db` (device, inode and, where both
    /// are known, birth time).
    pub fn is_file(&self, db: &Path) -> bool {
        file_identity(db).is_ok_and(|(dev, ino, btime)| {
            dev == self.dev
                && ino == self.ino
                && match (btime, self.btime_ns) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        })
    }

    pub fn load(meta: &Meta) -> Option<Lineage> {
        let text = fs::read_to_string(meta.lineage_path()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes the marker atomically (temp + fsync + rename + directory fsync).
    pub fn save(&self, meta: &Meta) -> std::io::Result<()> {
        fs::create_dir_all(&meta.liteship_dir)?;
        let path = meta.lineage_path();
        let body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        fsutil::write_atomic(&path, fsutil::Source::Bytes(&body))
            .map(|_| ())
            .map_err(|e| std::io::Error::new(e.source.kind(), e.to_string()))
    }
}
