//! Replication head-to-head: Litestream 0.5.17 and liteship replicate the same workload to
//! a fresh bucket on a local Garage server through a counting proxy
//! (`liteship-faultproxy`, no faults), in alternating order, with each tool's default
//! intervals. Per run: replicator CPU seconds and peak RSS (wait4), requests by method
//! and body bytes up and down (at the proxy), and the bucket's size at the end.
//!
//! Run: `cargo bench --bench replicate_compare`. Settings: `BENCH_RATES` (commits/s,
//! default `100,1000`), `BENCH_SECS` (seconds of writes, default 60), `BENCH_ROUNDS`
//! (default 2), `BENCH_DB_MB` (database size before the writes, default 4).
//! Results are recorded in BENCHMARKS.md by hand.

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::oracle::Litestream;
use support::proxy::Proxy;
use support::replicator::{finish_load, load};
use support::s3::{S3Server, TestBucket, own_garage};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tool {
    Litestream,
    Liteship,
}

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
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

fn spawn(tool: Tool, cfg: &Path, log: &Path) -> Child {
    let bin = match tool {
        Tool::Litestream => Litestream::v0_5_17().bin,
        Tool::Liteship => env!("CARGO_BIN_EXE_liteship").into(),
    };
    let log = std::fs::File::create(log).unwrap();
    Command::new(bin)
        .args(["replicate", "-config"])
        .arg(cfg)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_CA_BUNDLE") // Litestream's SDK refuses it with a plain-HTTP endpoint
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// SIGTERM, then the child's CPU seconds and peak RSS (MiB) from wait4. A replicator that
/// exited before (a start-up error) fails the benchmark with its log.
fn stop(mut child: Child, log: &Path) -> (f64, f64) {
    if let Ok(Some(st)) = child.try_wait() {
        panic!(
            "the replicator exited early ({st}): {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    let pid = child.id() as i32;
    // SAFETY: pid is our child, reaped just below.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let (mut status, mut ru) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: valid out-pointers; the child is ours.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid);
    std::mem::forget(child);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        secs(ru.ru_utime) + secs(ru.ru_stime),
        ru.ru_maxrss as f64 / 1024.0,
    )
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
    let cfg = config(dir.path(), &db, &tb, &proxy.endpoint);
    let log = dir.path().join("replicate.log");
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
    }
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

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rates: Vec<u32> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let secs: u64 = env_or("BENCH_SECS", 60);
    let rounds: usize = env_or("BENCH_ROUNDS", 2);
    let srv = own_garage();
    let mut rows: Vec<(u32, Tool, Sample)> = Vec::new();
    for &rate in &rates {
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                [Tool::Litestream, Tool::Liteship]
            } else {
                [Tool::Liteship, Tool::Litestream]
            };
            for tool in order {
                eprintln!("{rate} commits/s, round {}, {tool:?}...", round + 1);
                let s = run(tool, rate, secs, &srv).await;
                eprintln!("  {s:?}");
                rows.push((rate, tool, s));
            }
        }
    }
    println!(
        "\n| commits/s | tool | CPU s | peak RSS MiB | MB up | MB down | bucket MB | requests | MB up by level |\n|---|---|---|---|---|---|---|---|---|"
    );
    for (rate, tool, s) in &rows {
        let req: Vec<String> = s.methods.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let lv: Vec<String> = s
            .levels
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        println!(
            "| {rate} | {tool:?} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {} |",
            s.cpu_s,
            s.rss_mib,
            s.up_mb,
            s.down_mb,
            s.bucket_mb,
            req.join(", "),
            lv.join(", ")
        );
    }
    println!("\nMedians over {rounds} rounds, {secs} s of writes each (liteship / Litestream):\n");
    println!("| commits/s | figure | Litestream | liteship | ratio |\n|---|---|---|---|---|");
    for &rate in &rates {
        let pick = |t: Tool| -> Vec<&Sample> {
            rows.iter()
                .filter(|r| r.0 == rate && r.1 == t)
                .map(|r| &r.2)
                .collect()
        };
        let (ls, us) = (pick(Tool::Litestream), pick(Tool::Liteship));
        type Figure = (&'static str, fn(&Sample) -> f64);
        let figures: [Figure; 5] = [
            ("CPU s", |s| s.cpu_s),
            ("peak RSS MiB", |s| s.rss_mib),
            ("MB uploaded", |s| s.up_mb),
            ("MB downloaded", |s| s.down_mb),
            ("bucket MB at the end", |s| s.bucket_mb),
        ];
        for (name, f) in figures {
            let (a, b) = (median(&ls, f), median(&us, f));
            let ratio = if a > 0.0 {
                format!("{:.2}", b / a)
            } else {
                "-".into()
            };
            println!("| {rate} | {name} | {a:.2} | {b:.2} | {ratio} |");
        }
    }
}
