//! The scale run: Litestream 0.5.17 and liteship each replicate the same large database
//! (default 8 GiB; `BENCH_SCALE_GB=2,8` runs several sizes, to show how time grows) to a
//! local `file://` replica while an application writes 100 commits/s, then each restores
//! it. Not in CI (it needs about 4x the database
//! in free disk and tens of minutes).
//!
//! Per tool: time until the replica is restorable (first level-0 file) and until the first
//! snapshot (level 9) exists, the replicator's CPU and peak RSS, peak local disk beside the
//! database (the WAL and the `-litestream` directory), bytes in the replica at the end, the writer's
//! commit latency (p99, max) while the first snapshot, checkpoints, compactions and a
//! snapshot rotation (interval `BENCH_SCALE_SNAPSHOT`, default 4m) run, and the restore's
//! wall time and peak RSS. The writer runs until `BENCH_SCALE_AFTER` seconds (default 300)
//! after the first snapshot. A writer without any replicator gives the baseline latency.
//!
//! Run: `cargo bench --bench scale_compare`. The database is built once in
//! `BENCH_SCALE_DIR` (default `target/scale`) and reused; each tool works on a copy.

#[path = "../tests/it/support/mod.rs"]
mod support;

#[path = "common/procs.rs"]
mod procs;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use procs::{Tool, env_or, spawn, spawn_args, stop, vm_hwm_kib, wait};

#[derive(Debug, Default)]
struct Sample {
    restorable_s: f64,
    snapshot_s: f64,
    cpu_s: f64,
    rss_mib: f64,
    local_peak_mib: f64,
    replica_mib: f64,
    latency: String,
    restore_s: f64,
    restore_rss_mib: f64,
    restored_ok: bool,
}

fn main() {
    let sizes: Vec<u64> = std::env::var("BENCH_SCALE_GB")
        .unwrap_or_else(|_| "8".into())
        .split(',')
        .map(|g| {
            g.trim()
                .parse()
                .expect("BENCH_SCALE_GB: GiB, comma-separated")
        })
        .collect();
    let root = PathBuf::from(
        std::env::var("BENCH_SCALE_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/scale").into()),
    );
    std::fs::create_dir_all(&root).unwrap();
    let mut rows = Vec::new();
    for gb in sizes {
        let base = root.join(format!("base-{gb}g.db"));
        build(&base, gb);
        let mib = std::fs::metadata(&base).unwrap().len() >> 20;
        eprintln!("{mib} MiB: writer alone (no replicator)...");
        let work = root.join("work");
        fresh_copy(&base, &work);
        let alone = finish_writer(writer(&work.join("app.db"), 30.0));
        eprintln!("  {alone}");
        rows.push((mib, "writer alone".to_string(), None, alone));
        for tool in [Tool::Litestream, Tool::Liteship] {
            eprintln!("{mib} MiB: {tool:?}...");
            fresh_copy(&base, &work);
            let s = run(tool, &work);
            eprintln!("  {s:?}");
            let latency = s.latency.clone();
            rows.push((mib, format!("{tool:?}"), Some(s), latency));
        }
        std::fs::remove_dir_all(&work).ok();
    }
    println!(
        "\n| database MiB | tool | restorable after s | first snapshot after s | replicator CPU s | peak RSS MiB | peak WAL + state MiB | replica MiB | writer commit latency ms | restore s | restore peak RSS MiB | restored equal |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (mib, tool, s, latency) in rows {
        let Some(s) = s else {
            println!("| {mib} | {tool} | | | | | | | {latency} | | | |");
            continue;
        };
        println!(
            "| {mib} | {tool} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {latency} | {:.1} | {:.1} | {} |",
            s.restorable_s,
            s.snapshot_s,
            s.cpu_s,
            s.rss_mib,
            s.local_peak_mib,
            s.replica_mib,
            s.restore_s,
            s.restore_rss_mib,
            s.restored_ok
        );
    }
}

/// A database of at least `gb` GiB: rows of 1000 random and 900 zero bytes (two rows per
/// 4 KiB page, about half compressible), written in ~57 MiB transactions, checkpointed.
fn build(path: &Path, gb: u64) {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    if size(path) >= gb << 30 {
        return;
    }
    eprintln!("building a {gb} GiB database at {}...", path.display());
    let _ = std::fs::remove_file(path);
    let c = rusqlite::Connection::open(path).unwrap();
    c.pragma_update(None, "journal_mode", "wal").unwrap();
    c.execute_batch("CREATE TABLE bulk(id INTEGER PRIMARY KEY, payload BLOB)")
        .unwrap();
    while size(path) < gb << 30 {
        c.execute_batch(
            "INSERT INTO bulk(payload) SELECT randomblob(1000) || zeroblob(900) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 30000) SELECT i FROM n);
             PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .unwrap();
    }
}

/// `dir` emptied, with a byte copy of `base` as `app.db`, flushed to disk.
fn fresh_copy(base: &Path, dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(base, dir.join("app.db")).unwrap();
    // Written back before the run: the writer's latency is then the replicator's doing,
    // not the copy's writeback.
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// `liteship-load` at 100 commits/s for `secs` or until `<db>.stop` exists; its latency
/// line comes back on stderr.
fn writer(db: &Path, secs: f64) -> Child {
    let stop = format!("{}.stop", db.display());
    Command::new(env!("CARGO_BIN_EXE_liteship-load"))
        .arg(db)
        .args(["--rate", "100", "--duration", &secs.to_string()])
        .args(["--stop-file", &stop, "--latency"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish_writer(c: Child) -> String {
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "the writer failed");
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.starts_with("commit latency ms:"));
    line.unwrap_or("no latency line")
        .trim_start_matches("commit latency ms: ")
        .into()
}

fn run(tool: Tool, work: &Path) -> Sample {
    let db = work.join("app.db");
    let replica = work.join("replica");
    let snapshot_every: String = env_or("BENCH_SCALE_SNAPSHOT", "4m".to_string());
    let cfg = work.join("litestream.yml");
    std::fs::write(
        &cfg,
        format!(
            "snapshot:\n  interval: {snapshot_every}\n  retention: 24h\ndbs:\n  - path: {}\n    replica:\n      url: file://{}\n",
            db.display(),
            replica.display()
        ),
    )
    .unwrap();
    let log = work.join("replicate.log");
    let started = Instant::now();
    let child = spawn(tool, &cfg, &log);
    let watch = Watch::start(
        child.id() as i32,
        vec![work.join(".app.db-litestream"), work.join("app.db-wal")],
    );
    let load = writer(&db, 100_000.0);
    let restorable_s = wait_for(&replica.join("ltx/0"), started);
    let snapshot_s = wait_for(&replica.join("ltx/9"), started);
    std::thread::sleep(Duration::from_secs(env_or("BENCH_SCALE_AFTER", 300)));
    std::fs::write(format!("{}.stop", db.display()), b"").unwrap();
    let latency = finish_writer(load);
    std::thread::sleep(Duration::from_secs(3));
    let (cpu_s, rss_mib) = stop(child, &log);
    let local_peak_mib = watch.finish();
    let replica_mib = dir_bytes(&replica) as f64 / 1048576.0;
    let out = work.join("restored.db");
    let t = Instant::now();
    let rlog = work.join("restore.log");
    let r = spawn_args(
        tool,
        &[
            "restore",
            "-o",
            &out.display().to_string(),
            &format!("file://{}", replica.display()),
        ],
        &rlog,
    );
    let (_, restore_rss_mib, ok) = wait(r);
    let restore_s = t.elapsed().as_secs_f64();
    let restored_ok = ok && same_rows(&db, &out);
    for (l, name) in [(&log, "replicate"), (&rlog, "restore")] {
        let keep = work.with_file_name(format!("{tool:?}-{name}.log"));
        std::fs::copy(l, keep).unwrap();
    }
    Sample {
        restorable_s,
        snapshot_s,
        cpu_s,
        rss_mib,
        local_peak_mib,
        replica_mib,
        latency,
        restore_s,
        restore_rss_mib,
        restored_ok,
    }
}

/// Seconds from `since` until `dir` holds a complete file (not a `.tmp` being written).
fn wait_for(dir: &Path, since: Instant) -> f64 {
    let complete = |e: std::io::Result<std::fs::DirEntry>| {
        e.is_ok_and(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
    };
    loop {
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.any(complete)) {
            return since.elapsed().as_secs_f64();
        }
        assert!(
            since.elapsed() < Duration::from_secs(7200),
            "{} never appeared",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// Whether both databases hold the same `load` rows and `bulk` row count.
fn same_rows(a: &Path, b: &Path) -> bool {
    let q = |p: &Path| -> Option<(i64, i64, i64)> {
        let c =
            rusqlite::Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .ok()?;
        c.query_row(
            "SELECT (SELECT count(*) FROM load), (SELECT max(seq) FROM load), (SELECT max(id) FROM bulk)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .ok()
    };
    let (x, y) = (q(a), q(b));
    x.is_some() && x == y
}

/// Samples the size of the WAL and the replicator's state directory every second: their
/// peak is the local disk used beside the database file.
struct Watch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Watch {
    fn start(pid: i32, paths: Vec<PathBuf>) -> Watch {
        let (stop, peak) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s2, p2) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) && vm_hwm_kib(pid).is_some() {
                let bytes = paths.iter().map(|p| match std::fs::metadata(p) {
                    Ok(m) if m.is_dir() => dir_bytes(p),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                });
                p2.fetch_max(bytes.sum(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        Watch { stop, peak, thread }
    }

    fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.peak.load(Ordering::Relaxed) as f64 / 1048576.0
    }
}
