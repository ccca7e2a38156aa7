//! Soaks: long fault scenarios with real processes, not run by `cargo test` (the target has
//! `test = false`); `scripts/soak.sh SCENARIO` runs one and prints its figures. Each ends
//! with the invariant check: the replica, restored by liteship and by Litestream 0.5.17,
//! passes `integrity_check`, holds a gap-free prefix of every writer's rows, and holds every
//! row committed before the newest level-0 file it acknowledged; after a final clean stop
//! (exit 0) it equals the source.
//!
//! Scenarios (sizes from the environment, defaults in brackets):
//! - `kill_cycles` [SOAK_CYCLES=500]: kill -9 of the replicator under load, through the
//!   fault proxy to S3 with random faults, with compaction, snapshots, retention and
//!   checkpoints every few seconds, and some kills during the shutdown;
//! - `writer_kills` [SOAK_CYCLES=100]: kill -9 of the writer mid-run, and of writer and
//!   replicator together;
//! - `outage` [SOAK_MINUTES=30]: the S3 server refused for that long under load, with a
//!   staging limit;
//! - `mixed_faults` [SOAK_MINUTES=60]: random faults of every kind under load;
//! - `disk_full` [SOAK_MINUTES=5]: the filesystem of the database and its staging
//!   directory full for that long.

#[path = "../it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use liteship::replica::S3Config;
use support::cli::{restore, s, text};
use support::oracle::{Target, write_config_with};
use support::proxy::Proxy;
use support::replicator::{Replicator, assert_restores_equal, finish_load, load, load_rows};
use support::s3::{S3Server, TestBucket, own_garage};
use support::sqlite::{Tmpfs, integrity_check};

/// A scenario's directory: removed when the scenario passes, kept (and its path printed)
/// when it fails, with the database, the replicator logs and the staging directory for the
/// post-mortem.
struct ScenarioDir(tempfile::TempDir);

impl ScenarioDir {
    fn new() -> ScenarioDir {
        ScenarioDir(tempfile::tempdir().unwrap())
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for ScenarioDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.disable_cleanup(true);
            eprintln!(
                "SOAK: failed; kept {} for the post-mortem",
                self.path().display()
            );
        }
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Compaction, snapshots, retention and checkpoints every few seconds, so that kills land
/// in every phase.
const BUSY: &str = "levels:\n  - interval: 2s\n  - interval: 7s\nsnapshot:\n  interval: 11s\n  retention: 20s\nl0-retention: 3s\nl0-retention-check-interval: 1s\nshutdown-sync-timeout: 10s\n";

struct S3 {
    _srv: S3Server,
    tb: TestBucket,
    proxy: Proxy,
    via: S3Config,
}

async fn s3() -> S3 {
    let srv = own_garage();
    let tb = TestBucket::on(&srv).await;
    let proxy = Proxy::start(&srv.endpoint);
    let via = S3Config {
        endpoint: Some(proxy.endpoint.clone()),
        ..tb.config.clone()
    };
    S3 {
        _srv: srv,
        tb,
        proxy,
        via,
    }
}

/// The prefix invariant on a restore of `url`; returns the rows restored per writer.
fn check_prefix(
    dir: &Path,
    url: &str,
    creds: Option<&S3Config>,
    db: &Path,
) -> Vec<(i64, i64, bool)> {
    let out = dir.join(format!("check-{}.db", support::random_hex(8)));
    let r = restore(&["-o", s(&out), url], creds);
    if !r.status.success() && String::from_utf8_lossy(&r.stderr).contains("no matching backup") {
        return Vec::new();
    }
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(integrity_check(&out), "ok");
    let rows = load_rows(&out);
    let src = load_rows(db);
    for (w, max, contiguous) in &rows {
        assert!(*contiguous, "writer {w}: gap in the restored rows");
        let have = src.iter().find(|r| r.0 == *w).map_or(0, |r| r.1);
        assert!(*max <= have, "writer {w}: restored {max} rows of {have}");
    }
    let _ = std::fs::remove_file(&out);
    rows
}

fn report(name: &str, started: Instant, lines: &[String]) {
    println!("SOAK {name}: ok in {:.0}s", started.elapsed().as_secs_f64());
    for l in lines {
        println!("SOAK {name}: {l}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_cycles() {
    let started = Instant::now();
    let cycles = env("SOAK_CYCLES", 500);
    let st = s3().await;
    let dir = ScenarioDir::new();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let cfg = write_config_with(dir.path(), &db, Target::S3(&st.via), BUSY);
    support::replicator::add_db_keys(
        &cfg,
        "    checkpoint-interval: 1s\n    min-checkpoint-page-count: 200\n",
    );
    st.proxy
        .cmd("random 0.03 refuse,reset-upload,reset-download,truncate,500,503,latency");
    let writer = load(
        &db,
        &[
            "--rate",
            "200",
            "--duration",
            "100000",
            "--writer",
            "1",
            "--checkpoint",
            "passive,full,restart,truncate",
            "--checkpoint-every",
            "5",
        ],
    );
    let (mut during_shutdown, mut checks) = (0, 0);
    for cycle in 0..cycles {
        let rep = Replicator::start(dir.path(), &["-config", s(&cfg)], None);
        std::thread::sleep(Duration::from_millis(rand::random_range(300..6000)));
        if cycle % 5 == 4 {
            // Kill during the shutdown: SIGTERM, then kill -9 a moment later.
            unsafe { libc::kill(rep.pid(), libc::SIGTERM) };
            std::thread::sleep(Duration::from_millis(rand::random_range(0..400)));
            during_shutdown += 1;
        }
        rep.kill9();
        if cycle % 25 == 24 {
            check_prefix(dir.path(), &st.tb.url(), Some(&st.tb.config), &db);
            checks += 1;
        }
    }
    let stats = st.proxy.cmd("stats");
    st.proxy.cmd("clear");
    let mut w = writer;
    unsafe { libc::kill(w.id() as i32, libc::SIGTERM) };
    let _ = w.wait();
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    let (status, _) = rep.stop_within(Duration::from_secs(60));
    assert!(status.success());
    assert_restores_equal(dir.path(), &st.tb.url(), Some(&st.tb.config), &db);
    let rows = load_rows(&db);
    report(
        "kill_cycles",
        started,
        &[
            format!(
                "{cycles} kill -9 cycles ({during_shutdown} during shutdown), {checks} intermediate restores checked"
            ),
            format!("rows written {rows:?}; proxy {stats}"),
            "final restores by liteship and Litestream 0.5.17 equal the source".into(),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn writer_kills() {
    let started = Instant::now();
    let cycles = env("SOAK_CYCLES", 100);
    let st = s3().await;
    let dir = ScenarioDir::new();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let cfg = write_config_with(dir.path(), &db, Target::S3(&st.via), BUSY);
    let mut rep = Some(Replicator::start_ready(
        dir.path(),
        &["-config", s(&cfg)],
        None,
    ));
    let mut both = 0;
    for cycle in 0..cycles {
        let mut w = load(
            &db,
            &[
                "--rate",
                "300",
                "--duration",
                "100",
                "--writer",
                "1",
                "--payload",
                "2000",
            ],
        );
        std::thread::sleep(Duration::from_millis(rand::random_range(200..2500)));
        let _ = w.kill();
        let _ = w.wait();
        if cycle % 2 == 1 {
            // Writer and replicator together.
            rep.take().unwrap().kill9();
            both += 1;
            rep = Some(Replicator::start(dir.path(), &["-config", s(&cfg)], None));
        }
        if cycle % 10 == 9 {
            check_prefix(dir.path(), &st.tb.url(), Some(&st.tb.config), &db);
        }
    }
    let rep = rep.unwrap();
    rep.wait_readyz(Duration::from_secs(60), |c, _| c == 200);
    let (status, _) = rep.stop_within(Duration::from_secs(60));
    assert!(status.success());
    assert_restores_equal(dir.path(), &st.tb.url(), Some(&st.tb.config), &db);
    report(
        "writer_kills",
        started,
        &[
            format!(
                "{cycles} writer kills, {both} of them with the replicator; rows {:?}",
                load_rows(&db)
            ),
            "final restores by liteship and Litestream 0.5.17 equal the source".into(),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn outage() {
    let started = Instant::now();
    let minutes = env("SOAK_MINUTES", 30);
    let st = s3().await;
    let dir = ScenarioDir::new();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let cfg = write_config_with(dir.path(), &db, Target::S3(&st.via), "");
    let rep = Replicator::start_ready(
        dir.path(),
        &["-config", s(&cfg), "-staging-limit", "64MiB"],
        None,
    );
    let writer = load(
        &db,
        &[
            "--rate",
            "100",
            "--duration",
            &((minutes * 60 + 30).to_string()),
            "--writer",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_secs(10));
    st.proxy.cmd("random 1 refuse");
    let t0 = Instant::now();
    let (mut max_staged, mut max_lag) = (0f64, 0f64);
    while t0.elapsed() < Duration::from_secs(minutes * 60) {
        std::thread::sleep(Duration::from_secs(10));
        max_staged = max_staged.max(rep.metric("liteship_staging_bytes").unwrap_or(0.0));
        max_lag = max_lag.max(
            rep.metric("liteship_replication_lag_seconds")
                .unwrap_or(0.0),
        );
        let (code, _) = rep.get("/readyz").unwrap_or((0, String::new()));
        assert_eq!(code, 503, "ready during the outage");
    }
    st.proxy.cmd("clear");
    finish_load(writer);
    let t1 = Instant::now();
    rep.wait_readyz(Duration::from_secs(600), |c, _| c == 200);
    let catch_up = t1.elapsed();
    let hits = rep.metric("liteship_staging_limit_hits").unwrap_or(0.0);
    let (status, _) = rep.stop_within(Duration::from_secs(60));
    assert!(status.success());
    assert!(
        max_staged <= 80.0 * 1024.0 * 1024.0,
        "staging grew to {max_staged} bytes"
    );
    assert_restores_equal(dir.path(), &st.tb.url(), Some(&st.tb.config), &db);
    report(
        "outage",
        started,
        &[
            format!(
                "{minutes} min refused under 100 commits/s; staging peak {:.1} MiB (limit 64 MiB, {hits} limit hits); lag peak {max_lag:.0}s; caught up in {:.1}s",
                max_staged / 1048576.0,
                catch_up.as_secs_f64()
            ),
            "final restores by liteship and Litestream 0.5.17 equal the source".into(),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mixed_faults() {
    let started = Instant::now();
    let minutes = env("SOAK_MINUTES", 60);
    let st = s3().await;
    let dir = ScenarioDir::new();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let cfg = write_config_with(dir.path(), &db, Target::S3(&st.via), BUSY);
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    st.proxy.cmd("random 0.05 refuse,reset-upload,reset-download,truncate,stall,500,503,skew,latency,corrupt");
    let writer = load(
        &db,
        &[
            "--rate",
            "100",
            "--duration",
            &((minutes * 60).to_string()),
            "--writer",
            "1",
            "--checkpoint",
            "passive,truncate",
            "--checkpoint-every",
            "7",
        ],
    );
    let t0 = Instant::now();
    let mut checks = 0;
    while t0.elapsed() < Duration::from_secs(minutes * 60) {
        std::thread::sleep(Duration::from_secs(120));
        check_prefix(dir.path(), &st.tb.url(), Some(&st.tb.config), &db);
        checks += 1;
    }
    finish_load(writer);
    let stats = st.proxy.cmd("stats");
    st.proxy.cmd("clear");
    rep.wait_readyz(Duration::from_secs(300), |c, _| c == 200);
    let errors = rep
        .get("/metrics")
        .map(|(_, b)| {
            b.lines()
                .filter(|l| l.starts_with("liteship_errors_total"))
                .map(str::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    let (status, _) = rep.stop_within(Duration::from_secs(60));
    assert!(status.success());
    assert_restores_equal(dir.path(), &st.tb.url(), Some(&st.tb.config), &db);
    report(
        "mixed_faults",
        started,
        &[
            format!(
                "{minutes} min of random faults (5% of requests) under 100 commits/s; {checks} intermediate restores checked"
            ),
            format!("proxy {stats}"),
            format!("errors reported: {errors}"),
            "final restores by liteship and Litestream 0.5.17 equal the source".into(),
        ],
    );
}

#[test]
fn disk_full() {
    let started = Instant::now();
    let minutes = env("SOAK_MINUTES", 5);
    let dir = ScenarioDir::new();
    let fs = Tmpfs::mount(&dir.path().join("data"), "64m");
    let db = fs.0.join("app.db");
    let root = dir.path().join("replica");
    let url = format!("file://{}", root.display());
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    // Fill the filesystem with a ballast file, leaving a little room.
    let ballast = fs.0.join("ballast");
    let _ = std::process::Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", ballast.display()),
            "bs=1M",
            "count=64",
        ])
        .status();
    let writer = load(
        &db,
        &[
            "--rate",
            "50",
            "--duration",
            &((minutes * 60).to_string()),
            "--writer",
            "1",
        ],
    );
    let t0 = Instant::now();
    let mut full_seen = false;
    while t0.elapsed() < Duration::from_secs(minutes * 60) {
        std::thread::sleep(Duration::from_secs(5));
        full_seen |= rep.metric("litestream_disk_full") == Some(1.0);
    }
    std::fs::remove_file(&ballast).unwrap();
    let _ = writer.wait_with_output();
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "5", "--writer", "2"],
    ));
    rep.wait_readyz(Duration::from_secs(120), |c, _| c == 200);
    let log = rep.log_text();
    let (status, _) = rep.stop_within(Duration::from_secs(60));
    assert!(status.success(), "{log}");
    check_prefix(dir.path(), &url, None, &db);
    assert_restores_equal(dir.path(), &url, None, &db);
    report(
        "disk_full",
        started,
        &[
            format!(
                "{minutes} min with the database's filesystem full; disk_full reported: {full_seen}; ERROR lines: {}",
                log.matches(" ERROR ").count()
            ),
            "final restores by liteship and Litestream 0.5.17 equal the source".into(),
        ],
    );
}
