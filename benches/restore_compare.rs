//! Restore benchmark: a ~1 GiB database replicated to the local S3 server by Litestream
//! 0.5.17, restored by Litestream 0.5.17 and by liteship in the same run, with wall time
//! and peak RSS of each process, plus the machine's limit: a plain GET of the same objects
//! written to a file (one stream, and `parallelism` ranged streams).
//!
//! Run: `cargo bench --bench restore_compare` (`BENCH_DB_MB` sets the size, default 1024).
//!
//! With `BENCH_L0_FILES=N` it measures a *young* replica instead: a small database
//! (`BENCH_DB_MB`, default 4) replicated by liteship with a 20 ms monitor interval and no
//! compaction, so that the restore plan is one snapshot plus about N small level-0 files
//! (per-request latency, not bandwidth, is the limit there).
//! Results are recorded in BENCHMARKS.md by hand.

#[path = "common/procs.rs"]
#[allow(dead_code)] // the replicate helpers are for the other benches
mod procs;
#[path = "../tests/it/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use liteship::replica::ReplicaClient;
use liteship::restore::{Target, list_levels, plan::plan};
use support::oracle::{Litestream, Target as LsTarget, write_config};
use support::s3::TestBucket;

struct Run {
    wall: Duration,
    max_rss_mib: f64,
}

/// Runs a command: its wall time and peak RSS (`VmHWM`, see `procs::wait`).
fn measure(mut cmd: Command) -> Run {
    let start = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (_, max_rss_mib, ok) = procs::wait(child);
    let wall = start.elapsed();
    assert!(ok, "command failed: {cmd:?}");
    Run { wall, max_rss_mib }
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let mut nb = 0;
        while nb < na {
            let k = fb.read(&mut bb[nb..na]).unwrap();
            if k == 0 {
                return false;
            }
            nb += k;
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
        if ba[..na] != bb[..na] {
            return false;
        }
    }
}

fn build_db(path: &Path, mb: u64) {
    let c = rusqlite::Connection::open(path).unwrap();
    let rows = mb * 1024 * 1024 / 1100;
    c.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;
         CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, body TEXT);
         INSERT INTO t(name, body) SELECT 'row-' || i, hex(randomblob(250)) || printf('%0500d', i)
           FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < {rows}) SELECT i FROM n);
         CREATE INDEX t_name ON t(name);
         PRAGMA wal_checkpoint(TRUNCATE);"
    ))
    .unwrap();
}

async fn baseline(tb: &TestBucket, parallel: usize, out: &Path) -> Duration {
    let levels = list_levels(&tb.replica, &Target::Latest).await.unwrap();
    let p = plan(&levels, &Target::Latest).unwrap();
    let start = Instant::now();
    let file = std::fs::File::create(out).unwrap();
    let mut written = 0u64;
    for f in &p.files {
        let specs = liteship::replica::read::chunk_specs(
            std::slice::from_ref(f),
            if parallel == 1 { u64::MAX } else { 2 << 20 },
        );
        use futures::StreamExt;
        let mut chunks = futures::stream::iter(specs)
            .map(|s| async move {
                liteship::replica::read::fetch_chunk(
                    &tb.replica,
                    &s,
                    &liteship::retry::Backoff::RESUME,
                )
                .await
                .unwrap()
            })
            .buffered(parallel);
        while let Some(b) = chunks.next().await {
            std::os::unix::fs::FileExt::write_all_at(&file, &b, written).unwrap();
            written += b.len() as u64;
        }
    }
    file.sync_all().unwrap();
    start.elapsed()
}

/// The measured commands: a name and liteship's `-integrity-check` (empty: Litestream).
const TOOLS: [(&str, &str); 3] = [
    ("litestream 0.5.17", ""),
    ("liteship", "none"),
    ("liteship (quick_check)", "quick"),
];

/// Runs every tool `rounds` times, in alternating order (forward in even rounds, reversed
/// in odd ones), checking each round that Litestream's and liteship's files are identical.
fn measure_rounds(
    rounds: usize,
    dir: &Path,
    ls_bin: &Path,
    url: &str,
    creds: &dyn Fn(&mut Command),
) -> Vec<(usize, &'static str, Run)> {
    let mut rows = Vec::new();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..TOOLS.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (name, check) = TOOLS[i];
            let out = dir.join(format!("out-{round}-{i}.db"));
            let mut cmd = if check.is_empty() {
                let mut c = Command::new(ls_bin);
                c.args(["restore", "-o", out.to_str().unwrap(), url]);
                c
            } else {
                let mut c = Command::new(env!("CARGO_BIN_EXE_liteship"));
                c.args(["restore", "-integrity-check", check, "-o"]);
                c.args([out.to_str().unwrap(), url]);
                c
            };
            creds(&mut cmd);
            // Every run starts with no dirty pages left by the previous one (or by building
            // the database), so that background writeback does not land on one tool only.
            // SAFETY: sync(2) takes no arguments and cannot fail.
            unsafe { libc::sync() };
            std::thread::sleep(Duration::from_secs(1));
            let r = measure(cmd);
            eprintln!(
                "{name}: {:.2}s, {:.1} MiB peak RSS",
                r.wall.as_secs_f64(),
                r.max_rss_mib
            );
            rows.push((round, name, r));
        }
        // Compared in chunks: holding the files in memory would inflate the RSS that the
        // next forked child starts with.
        let (a, b) = (
            dir.join(format!("out-{round}-0.db")),
            dir.join(format!("out-{round}-1.db")),
        );
        assert!(same_file(&a, &b), "restored databases differ");
        for f in std::fs::read_dir(dir).unwrap() {
            let p = f.unwrap().path();
            if p.file_name().unwrap().to_string_lossy().starts_with("out-") {
                std::fs::remove_file(p).unwrap();
            }
        }
    }
    rows
}

/// With `BENCH_HOLD=FILE`, writes the replica URL and credentials to FILE as shell
/// exports and waits until FILE is deleted, so the replica can be restored by hand (for
/// profiling) before the measured runs.
fn hold_for_profiling(tb: &TestBucket, url: &str) {
    let Ok(hold) = std::env::var("BENCH_HOLD") else {
        return;
    };
    let exports = format!(
        "export REPLICA_URL='{url}' AWS_ACCESS_KEY_ID='{}' AWS_SECRET_ACCESS_KEY='{}' AWS_EC2_METADATA_DISABLED=true\n",
        tb.config.access_key_id.as_deref().unwrap(),
        tb.config.secret_access_key.as_deref().unwrap(),
    );
    std::fs::write(&hold, exports).unwrap();
    eprintln!("holding: source {hold} to restore by hand; delete it to continue");
    while Path::new(&hold).exists() {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A replica of `db` written by Litestream 0.5.17 (snapshot, then 20 updates).
async fn litestream_replica(dir: &Path, db: &Path, tb: &TestBucket, ls: &Litestream) {
    eprintln!("litestream 0.5.17 replicating to garage...");
    let running = ls.replicate(&write_config(dir, db, LsTarget::S3(&tb.config)));
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !tb.replica.list(0).await.unwrap().is_empty() {
            break;
        }
    }
    let c = rusqlite::Connection::open(db).unwrap();
    for i in 0..20 {
        c.execute(
            "UPDATE t SET body = hex(randomblob(300)) WHERE id % 50 = ?1",
            [i],
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(c);
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.stop();
}

/// A replica of `db` written by liteship: a snapshot, then one level-0 file per commit of
/// a writer (about `files` of them), never compacted.
fn young_replica(dir: &Path, db: &Path, tb: &TestBucket, files: u64) {
    use support::replicator::{Replicator, finish_load, load};
    let cfg = support::oracle::write_config_with(
        dir,
        db,
        LsTarget::S3(&tb.config),
        "levels:\n  - interval: 24h\nsnapshot:\n  interval: 24h\nl0-retention: 24h\n",
    );
    let yml = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        yml.replace("monitor-interval: 100ms", "monitor-interval: 20ms"),
    )
    .unwrap();
    let rep = Replicator::start_ready(dir, &["-config", cfg.to_str().unwrap()], None);
    // 25 commits/s against a 20 ms monitor: about one commit per level-0 file.
    let secs = files as f64 / 25.0;
    finish_load(load(
        db,
        &[
            "--rate",
            "25",
            "--duration",
            &format!("{secs}"),
            "--payload",
            "200",
        ],
    ));
    std::thread::sleep(Duration::from_secs(2));
    assert!(rep.stop().success());
}

#[tokio::main]
async fn main() {
    let young: Option<u64> = std::env::var("BENCH_L0_FILES")
        .ok()
        .and_then(|v| v.parse().ok());
    let mb: u64 = std::env::var("BENCH_DB_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if young.is_some() { 4 } else { 1024 });
    let dir = tempfile::tempdir_in(
        std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
    )
    .unwrap();
    let db = dir.path().join("app.db");
    eprintln!("building a {mb} MiB database...");
    build_db(&db, mb);
    let db_size = std::fs::metadata(&db).unwrap().len();
    let tb = TestBucket::new().await;
    let ls = Litestream::v0_5_17();
    if let Some(files) = young {
        eprintln!("liteship writing a snapshot and about {files} level-0 files...");
        young_replica(dir.path(), &db, &tb, files);
    } else {
        litestream_replica(dir.path(), &db, &tb, &ls).await;
    }
    let levels = list_levels(&tb.replica, &Target::Latest).await.unwrap();
    let p = plan(&levels, &Target::Latest).unwrap();
    eprintln!("plan: {} files, {} bytes", p.files.len(), p.total_size());

    let url = tb.url();
    let creds = |cmd: &mut Command| {
        cmd.env(
            "AWS_ACCESS_KEY_ID",
            tb.config.access_key_id.as_deref().unwrap(),
        )
        .env(
            "AWS_SECRET_ACCESS_KEY",
            tb.config.secret_access_key.as_deref().unwrap(),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_CA_BUNDLE");
    };
    hold_for_profiling(&tb, &url);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let rows = measure_rounds(rounds, dir.path(), &ls.bin, &url, &creds);
    let one = baseline(&tb, 1, &dir.path().join("plain1")).await;
    let _ = std::fs::remove_file(dir.path().join("plain1"));
    let eight = baseline(&tb, 8, &dir.path().join("plain8")).await;
    println!("\n| run | tool | wall (s) | peak RSS (MiB) |\n|---|---|---|---|");
    for (round, name, r) in &rows {
        println!(
            "| {} | {name} | {:.2} | {:.1} |",
            round + 1,
            r.wall.as_secs_f64(),
            r.max_rss_mib
        );
    }
    let median = |tool: &str| {
        let mut v: Vec<f64> = rows
            .iter()
            .filter(|(_, n, _)| *n == tool)
            .map(|(_, _, r)| r.wall.as_secs_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ls_median = median(TOOLS[0].0);
    for (name, _) in &TOOLS[1..] {
        println!(
            "\nmedian {name}: {:.2} s = {:.2} of Litestream's median {ls_median:.2} s",
            median(name),
            median(name) / ls_median
        );
    }
    println!(
        "\nDatabase {:.0} MiB; plan {} files, {:.0} MiB. Machine limit (GET + write, in process): one stream {:.2} s, 8 ranged streams {:.2} s.",
        db_size as f64 / 1048576.0,
        p.files.len(),
        p.total_size() as f64 / 1048576.0,
        one.as_secs_f64(),
        eight.as_secs_f64()
    );
}
