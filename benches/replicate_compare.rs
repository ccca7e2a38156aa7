//! Replication head-to-head: Litestream 0.5.17 and liteship replicate the same workload to
//! a fresh bucket on a local Garage server through a counting proxy
//! (`liteship-faultproxy`, no faults), in alternating order, with each tool's default
//! intervals. Per run: replicator CPU seconds and peak RSS (VmHWM), requests by method
//! and body bytes up and down (at the proxy), and the bucket's size at the end.
//!
//! Replication lag: the proxy records every answered level-0 PUT, and [`lag`] finds for
//! each committed row the PUT that first made it durable. With `BENCH_MANY=N` (default
//! 100, 0 to skip) both tools also replicate N small databases in one process (file
//! replicas, one commit per database per second). With `BENCH_IDLE_SECS=S` each run waits
//! S seconds after the writes and counts the requests of that idle time.
//!
//! Run: `cargo bench --bench replicate_compare` (or `benches/compare/run.sh`). Settings:
//! `BENCH_RATES` (commits/s, default `100,1000`; empty for none), `BENCH_SECS` (seconds of
//! writes, default 60), `BENCH_ROUNDS` (default 2), `BENCH_DB_MB` (database size before the
//! writes, default 4), `BENCH_SETTLE_SECS` (pause before the many-database runs, default
//! 65). Results are recorded in BENCHMARKS.md by hand.

#[path = "../tests/it/support/mod.rs"]
mod support;

#[path = "common/lag.rs"]
mod lag;
#[path = "common/procs.rs"]
mod procs;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use procs::{Tool, env_or, spawn, stop};
use support::proxy::Proxy;
use support::replicator::{finish_load, load};
use support::s3::{S3Server, TestBucket, own_garage};

#[derive(Debug, Default)]
struct Sample {
    cpu_s: f64,
    rss_mib: f64,
    up_mb: f64,
    down_mb: f64,
    bucket_mb: f64,
    methods: BTreeMap<String, u64>,
    /// MB uploaded per level directory.
    levels: BTreeMap<String, f64>,
    /// Commit-to-durable lag of every row, in milliseconds.
    lag_ms: Vec<f64>,
    /// Requests per minute while idle after the writes (`BENCH_IDLE_SECS`).
    idle_rpm: Option<f64>,
}

/// The same `litestream.yml` for both tools: only the replica, every interval default.
fn config(dir: &Path, db: &Path, tb: &TestBucket, endpoint: &str) -> std::path::PathBuf {
    let c = &tb.config;
    let yml = format!(
        "dbs:\n  - path: {}\n    replica:\n      type: s3\n      bucket: {}\n      path: db\n      endpoint: {endpoint}\n      region: {}\n      force-path-style: true\n      access-key-id: {}\n      secret-access-key: {}\n",
        db.display(),
        c.bucket,
        c.region.as_deref().unwrap(),
        c.access_key_id.as_deref().unwrap(),
        c.secret_access_key.as_deref().unwrap(),
    );
    let p = dir.join("litestream.yml");
    std::fs::write(&p, yml).unwrap();
    p
}

type Stats = (BTreeMap<String, u64>, f64, f64, BTreeMap<String, f64>);

fn parse_stats(line: &str) -> Stats {
    let word = |w: &str| {
        line.split_whitespace()
            .skip_while(|x| *x != w)
            .nth(1)
            .unwrap_or("-")
            .to_string()
    };
    let methods = word("methods")
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0)))
        .collect();
    let levels = word("levels")
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse::<f64>().unwrap_or(0.0) / 1e6))
        .collect();
    let mb = |w: &str| word(w).parse::<f64>().unwrap_or(0.0) / 1e6;
    (methods, mb("up"), mb("down"), levels)
}

async fn run(tool: Tool, rate: u32, secs: u64, srv: &S3Server) -> Sample {
    let tb = TestBucket::on(srv).await;
    let proxy = Proxy::start(&srv.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let mb = env_or("BENCH_DB_MB", 4u64).to_string();
    finish_load(load(
        &db,
        &["--grow-mb", &mb, "--rate", "10", "--duration", "0.1"],
    ));
    let base = dir.path().join("base.db");
    checkpointed_copy(&db, &base);
    let cfg = config(dir.path(), &db, &tb, &proxy.endpoint);
    let log = dir.path().join("replicate.log");
    let recorded = dir.path().join("l0-puts");
    std::fs::create_dir(&recorded).unwrap();
    assert_eq!(proxy.cmd(&format!("record {}", recorded.display())), "ok");
    let child = spawn(tool, &cfg, &log);
    std::thread::sleep(Duration::from_secs(3));
    let d = secs.to_string();
    finish_load(load(
        &db,
        &[
            "--rate",
            &rate.to_string(),
            "--duration",
            &d,
            "--writer",
            "2",
        ],
    ));
    std::thread::sleep(Duration::from_secs(5));
    let idle_rpm = idle_requests_per_minute(&proxy);
    let (cpu_s, rss_mib) = stop(child, &log);
    let (methods, up_mb, down_mb, levels) = parse_stats(&proxy.cmd("stats"));
    let bucket_mb = bucket_bytes(&tb).await as f64 / 1e6;
    Sample {
        cpu_s,
        rss_mib,
        up_mb,
        down_mb,
        bucket_mb,
        methods,
        levels,
        lag_ms: lag::row_lags_ms(&base, &recorded, 2),
        idle_rpm,
    }
}

/// A byte copy of `db` after a TRUNCATE checkpoint (its state with an empty WAL).
fn checkpointed_copy(db: &Path, to: &Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap();
    std::fs::copy(db, to).unwrap();
}

/// With `BENCH_IDLE_SECS` set: the requests per minute the replicator sends while the
/// database is idle for that long.
fn idle_requests_per_minute(proxy: &Proxy) -> Option<f64> {
    let secs: u64 = env_or("BENCH_IDLE_SECS", 0);
    if secs == 0 {
        return None;
    }
    let count = |p: &Proxy| -> u64 {
        let stats = p.cmd("stats");
        let mut w = stats.split_whitespace();
        w.nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    let before = count(proxy);
    std::thread::sleep(Duration::from_secs(secs));
    Some((count(proxy) - before) as f64 * 60.0 / secs as f64)
}

async fn bucket_bytes(tb: &TestBucket) -> u64 {
    use liteship::replica::ReplicaClient;
    let mut total = 0;
    for level in 0..=9 {
        total += tb
            .replica
            .list(level)
            .await
            .unwrap()
            .iter()
            .map(|f| f.size)
            .sum::<u64>();
    }
    total
}

fn median(v: &[&Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    let mut x: Vec<f64> = v.iter().map(|s| f(s)).collect();
    x.sort_by(f64::total_cmp);
    if x.len().is_multiple_of(2) {
        (x[x.len() / 2 - 1] + x[x.len() / 2]) / 2.0
    } else {
        x[x.len() / 2]
    }
}

/// `n` databases in one replicator, file replicas, one commit per database per second.
/// The directory is kept in `keep` until every run is done: deleting thousands of files
/// between runs made the next run's file creations slower (ext4 without a journal skips
/// recently deleted inodes one by one for a minute or more), so a tool's figure depended
/// on what ran before it.
fn run_many(tool: Tool, n: usize, secs: u64, keep: &mut Vec<tempfile::TempDir>) -> Sample {
    let dir = tempfile::tempdir().unwrap();
    let mut yml = String::from("dbs:\n");
    let conns: Vec<rusqlite::Connection> = (0..n)
        .map(|i| {
            let db = dir.path().join(format!("db{i}.db"));
            let c = rusqlite::Connection::open(&db).unwrap();
            c.pragma_update(None, "journal_mode", "wal").unwrap();
            c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
                .unwrap();
            yml += &format!(
                "  - path: {}\n    replica:\n      url: file://{}\n",
                db.display(),
                dir.path().join(format!("replica{i}")).display()
            );
            c
        })
        .collect();
    let cfg = dir.path().join("litestream.yml");
    std::fs::write(&cfg, yml).unwrap();
    let log = dir.path().join("replicate.log");
    let child = spawn(tool, &cfg, &log);
    std::thread::sleep(Duration::from_secs(3));
    let start = std::time::Instant::now();
    for tick in 1..=secs {
        for c in &conns {
            c.execute("INSERT INTO t(v) VALUES (randomblob(100))", [])
                .unwrap();
        }
        let due = Duration::from_secs(tick);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    std::thread::sleep(Duration::from_secs(5));
    let (cpu_s, rss_mib) = stop(child, &log);
    drop(conns);
    keep.push(dir);
    Sample {
        cpu_s,
        rss_mib,
        ..Sample::default()
    }
}

/// Before the first many-database run: flush, then wait out the window in which files
/// deleted by the earlier runs still slow down inode allocation (`BENCH_SETTLE_SECS`,
/// default 65: ext4 treats an inode as recently deleted for 60 s once its table block is
/// written back).
fn settle() {
    let secs: u64 = env_or("BENCH_SETTLE_SECS", 65);
    if secs > 0 {
        eprintln!("settling {secs} s before the many-database runs...");
        let _ = std::process::Command::new("sync").status();
        std::thread::sleep(Duration::from_secs(secs));
    }
}

/// What one run replicates.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Workload {
    /// One database over S3 at this many commits per second.
    Rate(u32),
    /// This many databases in one process, file replicas.
    Many(usize),
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Workload::Rate(r) => write!(f, "{r} commits/s"),
            Workload::Many(n) => write!(f, "{n} databases"),
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut workloads: Vec<Workload> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .map(Workload::Rate)
        .collect();
    let many: usize = env_or("BENCH_MANY", 100);
    if many > 0 {
        workloads.push(Workload::Many(many));
    }
    let secs: u64 = env_or("BENCH_SECS", 60);
    let rounds: usize = env_or("BENCH_ROUNDS", 2);
    let srv = own_garage();
    let mut rows: Vec<(Workload, Tool, Sample)> = Vec::new();
    let mut kept_dirs = Vec::new();
    for &w in &workloads {
        if matches!(w, Workload::Many(_)) {
            settle();
        }
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                [Tool::Litestream, Tool::Liteship]
            } else {
                [Tool::Liteship, Tool::Litestream]
            };
            for tool in order {
                eprintln!("{w}, round {}, {tool:?}...", round + 1);
                let s = match w {
                    Workload::Rate(rate) => run(tool, rate, secs, &srv).await,
                    Workload::Many(n) => run_many(tool, n, secs, &mut kept_dirs),
                };
                eprintln!(
                    "  CPU {:.2} s, RSS {:.1} MiB, up {:.2} MB, lag p50/p99 {:.0}/{:.0} ms",
                    s.cpu_s,
                    s.rss_mib,
                    s.up_mb,
                    lag::quantile(&s.lag_ms, 0.5),
                    lag::quantile(&s.lag_ms, 0.99)
                );
                rows.push((w, tool, s));
            }
        }
    }
    print_runs(&rows);
    println!("\nMedians over {rounds} rounds, {secs} s of writes each (liteship / Litestream):\n");
    println!("| workload | figure | Litestream | liteship | ratio |\n|---|---|---|---|---|");
    for &w in &workloads {
        let pick = |t: Tool| -> Vec<&Sample> {
            rows.iter()
                .filter(|r| r.0 == w && r.1 == t)
                .map(|r| &r.2)
                .collect()
        };
        print_medians(w, &pick(Tool::Litestream), &pick(Tool::Liteship));
    }
}

fn print_runs(rows: &[(Workload, Tool, Sample)]) {
    println!(
        "\n| workload | tool | CPU s | peak RSS MiB | MB up | MB down | bucket MB | lag p50 / p99 / max ms | requests | MB up by level |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for (w, tool, s) in rows {
        let req: Vec<String> = s.methods.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let lv: Vec<String> = s
            .levels
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        let q = |x| lag::quantile(&s.lag_ms, x);
        println!(
            "| {w} | {tool:?} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} | {:.0} / {:.0} / {:.0} | {} | {} |",
            s.cpu_s,
            s.rss_mib,
            s.up_mb,
            s.down_mb,
            s.bucket_mb,
            q(0.5),
            q(0.99),
            q(1.0),
            req.join(", "),
            lv.join(", ")
        );
    }
}

fn print_medians(w: Workload, ls: &[&Sample], us: &[&Sample]) {
    type Figure = (&'static str, fn(&Sample) -> f64);
    let mut figures: Vec<Figure> = vec![("CPU s", |s| s.cpu_s), ("peak RSS MiB", |s| s.rss_mib)];
    if let Workload::Rate(_) = w {
        figures.extend([
            ("MB uploaded", (|s| s.up_mb) as fn(&Sample) -> f64),
            ("MB downloaded", |s| s.down_mb),
            ("bucket MB at the end", |s| s.bucket_mb),
            ("lag p50 ms", |s| lag::quantile(&s.lag_ms, 0.5)),
            ("lag p99 ms", |s| lag::quantile(&s.lag_ms, 0.99)),
        ]);
        if ls.iter().any(|s| s.idle_rpm.is_some()) {
            figures.push(("idle requests/min", |s| s.idle_rpm.unwrap_or(0.0)));
        }
    }
    for (name, f) in figures {
        let (a, b) = (median(ls, f), median(us, f));
        let ratio = if a > 0.0 {
            format!("{:.2}", b / a)
        } else {
            "-".into()
        };
        println!("| {w} | {name} | {a:.2} | {b:.2} | {ratio} |");
    }
}
