//! The only owner of rusqlite and of the live database, `-wal` and `-shm` files.
//!
//! A [`Db`] holds two connections and two plain file descriptors for its whole life:
//! - `conn` keeps the long-running read transaction (the "pin"): while it is open, no other
//!   process can restart the WAL except, at most once, when the pin sits on read-slot 0;
//! - `barrier` takes the write lock (`BEGIN IMMEDIATE`) so that the WAL's end is known while
//!   the pin is re-taken;
//! - `db_fd` and `wal_fd` read pages; they are never closed while the connections live,
//!   because closing any descriptor of a file drops the process's POSIX locks on it.
//!
//! Continuity rule (why a level-0 file may be incremental): the WAL generation and offset of
//! the local position are still in the WAL (same salts), or the pin was taken under the
//! barrier exactly at the position and the WAL restarted once since (salt-1 + 1). Anything
//! else cannot be proven, so the next level-0 file is a full image of the database.

pub mod checkpoint;
mod handle;
mod image;
pub mod lock;
pub mod meta;
pub mod preflight;
mod sync;

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::Connection;

pub use handle::DbHandle;
pub use meta::{Lineage, Meta, RestoredFile, StagedError};
pub use sync::{Staged, SyncError};

use crate::ltx::Header;
use crate::wal::WAL_HEADER_SIZE;

/// Tuning of one database, from the config.
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub busy_timeout: Duration,
    pub min_checkpoint_page_count: u64,
    pub truncate_page_n: u64,
    /// Zero disables time-based checkpoints.
    pub checkpoint_interval: Duration,
    /// Zero means no limit.
    pub max_sync_wal_bytes: u64,
    /// How staged files and snapshots frame their pages.
    pub page_framing: crate::ltx::PageFraming,
}

/// Where replication stands locally: the newest staged level-0 file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub txid: u64,
    /// End of the synced WAL frames (0: unknown, the next file must be a full image).
    pub wal_end: u64,
    pub salt1: u32,
    pub salt2: u32,
    pub commit: u32,
    pub page_size: u32,
}

impl Position {
    /// At `txid` with no WAL position: the next level-0 file must be a full image.
    pub fn unknown(txid: u64, page_size: u32) -> Position {
        Position {
            txid,
            wal_end: 0,
            salt1: 0,
            salt2: 0,
            commit: 0,
            page_size,
        }
    }

    pub fn from_header(h: &Header) -> Position {
        let wal_end = if h.wal_offset > 0 {
            (h.wal_offset + h.wal_size) as u64
        } else {
            0
        };
        Position {
            txid: h.max_txid,
            wal_end,
            salt1: h.wal_salt1,
            salt2: h.wal_salt2,
            commit: h.commit,
            page_size: h.page_size,
        }
    }
}

/// What the pin proves about WAL restarts.
///
/// While the read transaction is held, SQLite can restart the WAL only if our reader sits on
/// read-slot 0 (it began on a fully checkpointed WAL) and no frame was appended since: an
/// append makes a checkpoint impossible (slot 0 blocks backfill), and without a full
/// checkpoint there is no restart. So once the pin has been held since before a read that
/// reached the end `wal_end` of generation `salts`, that generation can only have ended
/// there, and a new generation continues our history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// Held, but no read to the WAL's end has happened since it was taken.
    Unproven,
    /// Held since before a read that reached `wal_end`, the end of generation `salts`
    /// (`(0, 0)`: the WAL had no header).
    AtEnd { salts: (u32, u32), wal_end: u64 },
}

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    /// The file at the database's path is no longer the file that was opened.
    #[error(
        "{path} was replaced while liteship was replicating it (it is now another file); the replica keeps the old database's history. Stop the application, then restore with `liteship restore` or restart replicate with -allow-new-history to make the new file the replica's newest state"
    )]
    Replaced { path: String },
    /// The `-wal` file was removed or replaced under a running replicator.
    #[error(
        "{path} was removed or replaced while liteship was replicating (committed changes in it may be lost, and liteship cannot follow the new one); the replica keeps the history up to the last sync. Check the database, then restart replicate (with -allow-new-history if the database is to become the replica's newest state)"
    )]
    WalReplaced { path: String },
}

impl DbError {
    fn sql(path: &Path, source: rusqlite::Error) -> Self {
        DbError::Sqlite {
            path: path.display().to_string(),
            source,
        }
    }
    fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        DbError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }
}

/// An open database under replication.
pub struct Db {
    path: PathBuf,
    wal_path: PathBuf,
    meta: Meta,
    conn: Connection,
    barrier: Connection,
    db_fd: File,
    /// Device and inode of `db_fd`: the file this process replicates.
    identity: (u64, u64),
    wal_fd: Option<File>,
    page_size: u32,
    pos: Option<Position>,
    /// The WAL offset where the last read ended and the stored checksum of the frame that
    /// ends there, as read (in memory: after a restart the first sync compares that frame
    /// with the newest staged file instead).
    last_frame: Option<(u64, (u32, u32))>,
    /// Set when continuity is known to be broken (the next level-0 file is a full image).
    needs_full: Option<&'static str>,
    pin: Pin,
    pinned: bool,
    /// The last incremental read stopped at `max_sync_wal_bytes`, not at the WAL's end.
    last_read_limited: bool,
    opts: DbOptions,
    last_checkpoint: Instant,
    synced_since_checkpoint: bool,
    passive_stalled: bool,
    /// When an incomplete emergency TRUNCATE may be tried again, and the last wait.
    truncate_retry: Option<(Instant, Duration)>,
}

impl Db {
    /// Opens the database, switches it to WAL mode, takes the pin and loads the local
    /// position from the meta directory.
    pub fn open(path: &Path, meta_path: Option<&Path>, opts: DbOptions) -> Result<Db, DbError> {
        let conn = open_conn(path, opts.busy_timeout)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=wal", [], |r| r.get(0))
            .map_err(|e| DbError::sql(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(DbError::Invalid(format!(
                "{}: cannot switch to WAL mode (journal_mode is {mode})",
                path.display()
            )));
        }
        let barrier = open_conn(path, opts.busy_timeout)?;
        let page_size: u32 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| DbError::sql(path, e))?;
        let db_fd = File::open(path).map_err(|e| DbError::io("open", path, e))?;
        let md = db_fd.metadata().map_err(|e| DbError::io("stat", path, e))?;
        let identity = (md.dev(), md.ino());
        let wal_path = sidecar(path, "-wal");
        let meta = Meta::new(path, meta_path);
        meta.prepare()
            .map_err(|e| DbError::io("prepare meta directory", &meta.l0_dir, e))?;
        let pos = meta
            .newest_header()
            .map_err(|e| DbError::Invalid(e.to_string()))?
            .map(|h| Position::from_header(&h));
        let mut db = Db {
            path: path.to_path_buf(),
            wal_fd: File::open(&wal_path).ok(),
            wal_path,
            meta,
            conn,
            barrier,
            db_fd,
            identity,
            page_size,
            pos,
            last_frame: None,
            needs_full: None,
            pin: Pin::Unproven,
            pinned: false,
            last_read_limited: false,
            opts,
            last_checkpoint: Instant::now(),
            synced_since_checkpoint: false,
            passive_stalled: false,
            truncate_retry: None,
        };
        if let Some(p) = db.pos
            && p.page_size != page_size
        {
            db.needs_full = Some("page size changed");
        }
        db.begin_pin()?;
        Ok(db)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// The local position: the newest staged level-0 file.
    pub fn position(&self) -> Option<Position> {
        self.pos
    }

    /// Why the next level-0 file must be a full image, if it must: until it is staged,
    /// the position does not describe the database's committed state.
    pub fn owes_full_image(&self) -> Option<&'static str> {
        self.needs_full
    }

    /// Makes the next level-0 file a full image (continuity is broken for `reason`).
    pub fn require_full_image(&mut self, reason: &'static str) {
        self.needs_full = Some(reason);
    }

    /// Fails with [`DbError::Replaced`] when the path now names another file than the one
    /// opened (deleted and recreated, or moved over): one `stat` per call.
    ///
    /// The same holds for the `-wal` file once it is open: SQLite never removes it while
    /// liteship's connections are open, so a `-wal` that is gone or is another file means
    /// someone removed it (losing the committed frames it held) or put another database
    /// in place; liteship would otherwise go on reading the old, unlinked WAL and miss every
    /// later commit.
    pub fn check_identity(&self) -> Result<(), DbError> {
        let replaced = || DbError::Replaced {
            path: self.path.display().to_string(),
        };
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.identity => {}
            Ok(_) => return Err(replaced()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(replaced()),
            Err(e) => return Err(DbError::io("stat", &self.path, e)),
        }
        let Some(fd) = &self.wal_fd else {
            return Ok(());
        };
        let open = fd
            .metadata()
            .map_err(|e| DbError::io("stat", &self.wal_path, e))?;
        match std::fs::metadata(&self.wal_path) {
            Ok(m) if (m.dev(), m.ino()) == (open.dev(), open.ino()) => Ok(()),
            Ok(_) | Err(_) => Err(DbError::WalReplaced {
                path: self.wal_path.display().to_string(),
            }),
        }
    }

    /// Recreates the staging directory if it was removed while running; the staged files
    /// went with it, so the next level-0 file is a full image. `true` if it was missing.
    pub fn ensure_staging(&mut self) -> Result<bool, DbError> {
        if self.meta.l0_dir.is_dir() {
            return Ok(false);
        }
        self.meta
            .prepare()
            .map_err(|e| DbError::io("create staging directory", &self.meta.l0_dir, e))?;
        self.needs_full = Some("the staging directory was removed");
        Ok(true)
    }

    /// Takes the long read transaction.
    fn begin_pin(&mut self) -> Result<(), DbError> {
        if !self.pinned {
            self.conn
                .execute_batch("BEGIN; SELECT COUNT(*) FROM sqlite_schema;")
                .map_err(|e| DbError::sql(&self.path, e))?;
            self.pinned = true;
        }
        Ok(())
    }

    fn end_pin(&mut self) -> Result<(), DbError> {
        if self.pinned {
            self.conn
                .execute_batch("ROLLBACK")
                .map_err(|e| DbError::sql(&self.path, e))?;
            self.pinned = false;
            self.pin = Pin::Unproven;
        }
        Ok(())
    }

    /// The WAL file, opened once it exists and then kept open.
    fn wal(&mut self) -> Option<&File> {
        if self.wal_fd.is_none() {
            self.wal_fd = File::open(&self.wal_path).ok();
        }
        self.wal_fd.as_ref()
    }

    fn wal_len(&mut self) -> u64 {
        self.wal()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len())
    }

    /// Reads page `pgno` of the database file (zeros beyond its end).
    fn read_db_page(&self, pgno: u32, buf: &mut [u8]) -> Result<(), DbError> {
        buf.fill(0);
        let off = u64::from(pgno - 1) * u64::from(self.page_size);
        let mut done = 0;
        while done < buf.len() {
            match self.db_fd.read_at(&mut buf[done..], off + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DbError::io("read", &self.path, e)),
            }
        }
        Ok(())
    }

    /// Size of the database file in pages.
    fn db_pages(&self) -> Result<u32, DbError> {
        let len = self
            .db_fd
            .metadata()
            .map_err(|e| DbError::io("stat", &self.path, e))?
            .len();
        Ok((len / u64::from(self.page_size)) as u32)
    }

    /// Current database file size, for metrics.
    pub fn db_size(&self) -> u64 {
        self.db_fd.metadata().map_or(0, |m| m.len())
    }

    /// Drops the local position: the next file is a full image at `txid + 1`.
    /// After a restore: when the database file still holds exactly the bytes the restore
    /// wrote (`content_crc`), it is the replica's state `txid`, and everything committed
    /// since is in the WAL from its first frame (the pin, taken at open, keeps the file
    /// from being checkpointed into meanwhile: see [`Pin`]). The next level-0 file is then
    /// incremental instead of a full image. `false` (and nothing changed) otherwise.
    pub fn continue_restored(&mut self, txid: u64, content_crc: u64) -> Result<bool, DbError> {
        let salts = self.wal_header().map(|h| (h.salt1, h.salt2));
        let crc =
            meta::content_crc64(&self.db_fd).map_err(|e| DbError::io("read", &self.path, e))?;
        if crc != content_crc || self.wal_header().map(|h| (h.salt1, h.salt2)) != salts {
            tracing::info!(db = %self.path.display(), restored = format!("{content_crc:016x}"), now = format!("{crc:016x}"), "the database file changed since it was restored (a checkpoint); a full level-0 image follows");
            return Ok(false);
        }
        self.meta
            .clear()
            .map_err(|e| DbError::io("clear", &self.meta.l0_dir, e))?;
        let salts = salts.unwrap_or((0, 0));
        self.pos = Some(Position {
            txid,
            wal_end: WAL_HEADER_SIZE as u64,
            salt1: salts.0,
            salt2: salts.1,
            commit: self.db_pages()?,
            page_size: self.page_size,
        });
        self.needs_full = None;
        if salts == (0, 0) {
            // No WAL header was written since the pin was taken: the WAL is empty.
            self.pin = Pin::AtEnd {
                salts,
                wal_end: WAL_HEADER_SIZE as u64,
            };
        }
        Ok(true)
    }

    pub fn reset_position(&mut self, txid: u64, reason: &'static str) -> Result<(), DbError> {
        self.meta
            .clear()
            .map_err(|e| DbError::io("clear", &self.meta.l0_dir, e))?;
        self.pos = Some(Position::unknown(txid, self.page_size));
        self.needs_full = Some(reason);
        Ok(())
    }

    /// Drops the staged files above `txid` (those at or below stay, to be uploaded) and
    /// makes `txid` the position: the next file is a full image at `txid + 1`.
    pub fn truncate_staging_after(
        &mut self,
        txid: u64,
        reason: &'static str,
    ) -> Result<(), DbError> {
        let io = |e| DbError::io("clear", &self.meta.l0_dir, e);
        let above: Vec<u64> = self
            .meta
            .staged()
            .map_err(io)?
            .into_iter()
            .filter(|t| *t > txid)
            .collect();
        self.meta.remove(&above).map_err(io)?;
        self.pos = Some(Position::unknown(txid, self.page_size));
        self.needs_full = Some(reason);
        Ok(())
    }

    /// Forgets the local position entirely (a new history starts at TXID 1).
    pub fn clear_position(&mut self) -> Result<(), DbError> {
        self.meta
            .clear()
            .map_err(|e| DbError::io("clear", &self.meta.l0_dir, e))?;
        self.pos = None;
        Ok(())
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = self.end_pin();
    }
}

fn open_conn(path: &Path, busy: Duration) -> Result<Connection, DbError> {
    let c = Connection::open(path).map_err(|e| DbError::sql(path, e))?;
    c.busy_timeout(busy).map_err(|e| DbError::sql(path, e))?;
    c.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(|e| DbError::sql(path, e))?;
    persist_wal(&c);
    small_footprint(&c).map_err(|e| DbError::sql(path, e))?;
    Ok(c)
}

/// The replicator's connections only lock, pin and checkpoint: images and WAL frames are
/// read from the files directly. So they do without SQLite's per-connection lookaside
/// (48 KiB each: about 10 MiB for 100 databases with two connections each) and keep a page
/// cache of 2 pages.
fn small_footprint(c: &Connection) -> rusqlite::Result<()> {
    // SAFETY: the handle is valid; a null buffer with size 0 and count 0 turns lookaside
    // off, as SQLITE_DBCONFIG_LOOKASIDE documents. SQLITE_BUSY (lookaside in use) leaves it
    // on, which only costs memory.
    unsafe {
        rusqlite::ffi::sqlite3_db_config(
            c.handle(),
            rusqlite::ffi::SQLITE_DBCONFIG_LOOKASIDE,
            std::ptr::null_mut::<std::os::raw::c_void>(),
            0 as std::os::raw::c_int,
            0 as std::os::raw::c_int,
        );
    }
    c.pragma_update(None, "cache_size", 2)
}

/// `SQLITE_FCNTL_PERSIST_WAL`: our connections closing must not delete the WAL.
fn persist_wal(c: &Connection) {
    let mut on: std::os::raw::c_int = 1;
    // SAFETY: the handle is valid for the connection's life; the pointer is to a live int,
    // as SQLITE_FCNTL_PERSIST_WAL expects.
    unsafe {
        rusqlite::ffi::sqlite3_file_control(
            c.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&mut on as *mut std::os::raw::c_int).cast(),
        );
    }
}

/// `<db><suffix>`.
pub fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}
