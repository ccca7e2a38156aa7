//! Operational behaviour: an idle database costs nothing, an S3 outage under load is
//! survived without loss, large databases and WAL backlogs are handled.

use std::time::{Duration, Instant};

use crate::support::cli::{restore, s, text};
use crate::support::garage::Garage;
use crate::support::oracle::{Target, write_config_with};
use crate::support::replicator::{
    Replicator, add_db_keys, assert_restores_equal, finish_load, load,
};
use crate::support::s3::{S3Server, TestBucket, own_garage};
use crate::support::sqlite::{Tmpfs, integrity_check};

/// A seeded database (`seed`: load generator arguments) with a config (`global`: top-level
/// keys) replicating to a bucket on a Garage server of the test's own, which the test may
/// stop or whose requests it may count. Keep `_srv` alive for the test's duration.
struct OwnS3 {
    _srv: S3Server,
    garage: Garage,
    tb: TestBucket,
    dir: tempfile::TempDir,
    db: std::path::PathBuf,
    cfg: std::path::PathBuf,
}

async fn own_s3_db(seed: &[&str], global: &str) -> OwnS3 {
    let srv = own_garage();
    let garage = srv.garage.clone().unwrap();
    let tb = TestBucket::on(&srv).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    finish_load(load(&db, seed));
    let cfg = write_config_with(dir.path(), &db, Target::S3(&tb.config), global);
    OwnS3 {
        _srv: srv,
        garage,
        tb,
        dir,
        db,
        cfg,
    }
}

fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// After the first snapshot and the last compaction, five idle minutes send zero requests
/// to the S3 server and use under 1% of a CPU, with the writer lease held (it is renewed
/// only before uploads).
#[tokio::test(flavor = "multi_thread")]
async fn idle_database_sends_no_requests() {
    let OwnS3 {
        _srv,
        garage,
        tb: _,
        dir,
        db,
        cfg,
    } = own_s3_db(&["--rate", "100", "--duration", "0.3"], "levels:\n  - interval: 1s\n  - interval: 2s\nl0-retention: 1s\nl0-retention-check-interval: 1s\n").await;
    // The default monitor interval (1 s), as users run it; the suite's 100 ms would
    // measure ten times the wake-ups of a real deployment.
    let yml = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        yml.replace("monitor-interval: 100ms", "monitor-interval: 1s"),
    )
    .unwrap();
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    finish_load(load(&db, &["--rate", "100", "--duration", "2"]));
    std::thread::sleep(Duration::from_secs(10)); // uploads, compactions, L0 retention settle
    let (r0, c0, t0) = (garage.s3_requests(), cpu_seconds(rep.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(300));
    let (r1, c1) = (garage.s3_requests(), cpu_seconds(rep.pid()));
    let cpu = (c1 - c0) / t0.elapsed().as_secs_f64();
    assert_eq!(
        r1 - r0,
        0,
        "requests while idle; the replicator's log:\n{}",
        rep.log_text()
    );
    assert!(cpu < 0.01, "idle CPU {:.3}%", cpu * 100.0);
    eprintln!(
        "idle: {} requests, CPU {:.3}% over {:?}",
        r1 - r0,
        cpu * 100.0,
        t0.elapsed()
    );
    assert!(rep.stop().success());
}

/// The S3 server down for 60 s under load: no crash, /readyz goes 503 and back to 200, the
/// backlog (more than 256 files) drains, nothing is lost.
#[tokio::test(flavor = "multi_thread")]
async fn s3_outage_under_load() {
    let OwnS3 {
        _srv,
        garage,
        tb,
        dir,
        db,
        cfg,
    } = own_s3_db(&["--rate", "100", "--duration", "0.3"], "").await;
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    let writer = load(&db, &["--rate", "200", "--duration", "70", "--writer", "1"]);
    std::thread::sleep(Duration::from_secs(3));
    garage.stop();
    let down = Instant::now();
    assert!(
        rep.wait_ready(503, Duration::from_secs(58)),
        "readyz never reported the outage"
    );
    std::thread::sleep(Duration::from_secs(60).saturating_sub(down.elapsed()));
    garage.resume();
    let n = finish_load(writer);
    assert!(n > 10_000);
    assert!(
        rep.wait_ready(200, Duration::from_secs(90)),
        "did not recover: {}",
        rep.log_text()
    );
    let log_path = rep.log.clone();
    let status = rep.stop();
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(status.success(), "exit {status}: {log}");
    assert!(
        log.contains("upload failed") && log.contains("upload recovered"),
        "{log}"
    );
    assert_restores_equal(dir.path(), &tb.url(), Some(&tb.config), &db);
}

/// Everything at once past 1 GiB: one writer grows the database past the lock page (at
/// 4 KiB pages) and then writes while running the application's own PASSIVE, FULL, RESTART
/// and TRUNCATE checkpoints; a second writer writes meanwhile and VACUUMs (shrinking the
/// database). Both tools' restores equal the source.
#[test]
fn growth_past_one_gib_with_checkpoints_and_vacuum() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    let url = format!("file://{}", root.display());
    finish_load(load(&db, &["--rate", "10", "--duration", "0.1"]));
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    let w1 = load(
        &db,
        &[
            "--rate",
            "300",
            "--duration",
            "12",
            "--writer",
            "1",
            "--grow-mb",
            "1100",
            "--checkpoint",
            "passive,full,restart,truncate",
            "--checkpoint-every",
            "2",
        ],
    );
    // The second writer starts once the database is past 1 GiB (its committed page count).
    let size = || -> i64 {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row(
            "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0)
    };
    let grown = (0..1200).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        size() > 1 << 30
    });
    assert!(grown, "database grew to {} bytes only", size());
    let w2 = load(
        &db,
        &[
            "--rate",
            "300",
            "--duration",
            "20",
            "--writer",
            "2",
            "--vacuum-at",
            "8",
        ],
    );
    finish_load(w1);
    finish_load(w2);
    let log = rep.log_text();
    assert!(rep.stop().success(), "stop: {log}");
    assert_restores_equal(dir.path(), &url, None, &db);
}

/// A WAL past `truncate-page-n` triggers the emergency TRUNCATE checkpoint; the replica
/// stays restorable and complete (spec 7 #7).
#[test]
fn emergency_truncate_keeps_the_replica_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    finish_load(load(&db, &["--rate", "10", "--duration", "0.1"]));
    let cfg = write_config_with(dir.path(), &db, Target::File(&root), "");
    add_db_keys(
        &cfg,
        "    min-checkpoint-page-count: 100000\n    truncate-page-n: 300\n    max-sync-wal-bytes: 200KB\n",
    );
    let reader = rusqlite::Connection::open(&db).unwrap();
    // An application reader holding an old snapshot makes PASSIVE stall, forcing TRUNCATE.
    reader
        .execute_batch("BEGIN; SELECT COUNT(*) FROM load;")
        .unwrap();
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    let w = load(
        &db,
        &["--rate", "300", "--duration", "4", "--payload", "3000"],
    );
    std::thread::sleep(Duration::from_secs(2));
    reader.execute_batch("COMMIT").unwrap();
    finish_load(w);
    std::thread::sleep(Duration::from_secs(2));
    let truncates = rep.metric("litestream_checkpoint_count{db=").unwrap_or(0.0);
    let log_path = rep.log.clone();
    assert!(rep.stop().success());
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(
        log.contains("emergency TRUNCATE"),
        "no emergency checkpoint (checkpoints {truncates}): {log}"
    );
    assert_restores_equal(dir.path(), &format!("file://{}", root.display()), None, &db);
}

/// liteship's own checkpoints (frequent, under load) never force a full level-0 image: the
/// pin is re-taken at a known WAL end, so every restart is proven (spec 7 #15, #22).
#[test]
fn own_checkpoints_need_no_full_images() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    finish_load(load(&db, &["--rate", "10", "--duration", "0.1"]));
    let cfg = write_config_with(dir.path(), &db, Target::File(&root), "");
    add_db_keys(&cfg, "    min-checkpoint-page-count: 50\n");
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    finish_load(load(
        &db,
        &["--rate", "300", "--duration", "6", "--payload", "1000"],
    ));
    std::thread::sleep(Duration::from_secs(1));
    let checkpoints = rep.metric("litestream_checkpoint_count{db=").unwrap_or(0.0);
    let fulls = rep.metric("liteship_full_level0_images").unwrap_or(0.0);
    assert!(checkpoints >= 3.0, "only {checkpoints} checkpoints ran");
    assert_eq!(
        fulls, 1.0,
        "only the initial image may be full ({checkpoints} checkpoints)"
    );
    assert!(rep.stop().success());
    assert_restores_equal(dir.path(), &format!("file://{}", root.display()), None, &db);
}

/// SIGTERM with the S3 server down: the final upload retries; a second signal aborts it and
/// the exit status says the last changes did not reach the replica (spec 7 #27).
#[tokio::test(flavor = "multi_thread")]
async fn second_signal_aborts_the_final_upload() {
    let OwnS3 {
        _srv,
        garage,
        tb: _,
        dir,
        db,
        cfg,
    } = own_s3_db(&["--rate", "10", "--duration", "0.1"], "").await;
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    garage.stop();
    finish_load(load(&db, &["--rate", "100", "--duration", "0.5"]));
    let pid = rep.pid();
    unsafe { libc::kill(pid, libc::SIGTERM) };
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let log_path = rep.log.clone();
    let status = rep.stop();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the second signal did not abort promptly"
    );
    assert!(
        !status.success(),
        "exit status must report the unsent changes"
    );
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(
        log.contains("second signal") && log.contains("missing from the replica"),
        "{log}"
    );
    garage.resume();
}

/// `l0-retention: 0` disables level-0 deletion (spec 7 #5): compaction runs, every level-0
/// file stays.
#[test]
fn l0_retention_zero_keeps_level0_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    finish_load(load(&db, &["--rate", "10", "--duration", "0.1"]));
    let cfg = write_config_with(
        dir.path(),
        &db,
        Target::File(&root),
        "levels:\n  - interval: 1s\nl0-retention: 0\nl0-retention-check-interval: 1s\n",
    );
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    finish_load(load(&db, &["--rate", "50", "--duration", "3"]));
    std::thread::sleep(Duration::from_secs(4));
    assert!(rep.stop().success());
    let count = |l: &str| {
        std::fs::read_dir(root.join("ltx").join(l))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert!(count("1") >= 1, "compaction ran");
    let l0: Vec<u64> = std::fs::read_dir(root.join("ltx/0"))
        .unwrap()
        .filter_map(|e| {
            liteship::ltx::parse_file_name(e.unwrap().file_name().to_str()?).map(|(a, _)| a)
        })
        .collect();
    assert_eq!(
        l0.len() as u64,
        l0.iter().max().copied().unwrap_or(0),
        "level 0 keeps every file from TXID 1"
    );
}

/// Snapshot retention deletes old snapshots and the lower-level files no plan needs, and
/// the replica stays restorable by both tools, also at a time after the oldest kept
/// snapshot (spec 7 #12).
#[test]
fn snapshot_retention_keeps_a_restorable_chain() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    let url = format!("file://{}", root.display());
    finish_load(load(&db, &["--rate", "10", "--duration", "0.1"]));
    let cfg = write_config_with(
        dir.path(),
        &db,
        Target::File(&root),
        "levels:\n  - interval: 1s\nl0-retention: 1s\nl0-retention-check-interval: 1s\nsnapshot:\n  interval: 3s\n  retention: 5s\n",
    );
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "16", "--writer", "1"],
    ));
    std::thread::sleep(Duration::from_secs(4));
    let log_path = rep.log.clone();
    assert!(rep.stop().success());
    let snaps: Vec<String> = std::fs::read_dir(root.join("ltx/9"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let log = std::fs::read_to_string(log_path).unwrap();
    let taken = log.matches("snapshot complete").count();
    assert!(taken >= 4, "several snapshots were taken: {log}");
    assert!(snaps.len() < taken, "old snapshots were deleted: {snaps:?}");
    assert_restores_equal(dir.path(), &url, None, &db);
    let ts = liteship::timefmt::format_rfc3339_ms(liteship::timefmt::now_ms() - 3000);
    let out = dir.path().join("pitr.db");
    let r = restore(&["-timestamp", &ts, "-o", s(&out), &url], None);
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(integrity_check(&out), "ok");
}

/// Staging on a full disk: the sync fails loudly (ERROR, litestream_disk_full 1), the app
/// keeps writing, and once space is freed replication recovers with nothing lost (spec 7 #11).
#[test]
fn disk_full_while_staging_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    let meta = Tmpfs::mount(&dir.path().join("meta"), "256k");
    finish_load(load(&db, &["--rate", "10", "--duration", "0.1"]));
    let cfg = write_config_with(dir.path(), &db, Target::File(&root), "");
    add_db_keys(&cfg, &format!("    meta-path: {}\n", meta.0.display()));
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    // Incompressible rows larger than the whole staging filesystem.
    finish_load(load(
        &db,
        &["--rate", "20", "--duration", "1", "--payload", "30000"],
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    while rep.metric("litestream_disk_full").unwrap_or(0.0) != 1.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        rep.metric("litestream_disk_full"),
        Some(1.0),
        "disk full not reported: {}",
        rep.log_text()
    );
    assert!(
        rep.log_text().contains("ERROR") && rep.log_text().contains("No space left"),
        "{}",
        rep.log_text()
    );
    meta.resize("64m");
    let deadline = Instant::now() + Duration::from_secs(40);
    while rep.metric("litestream_disk_full").unwrap_or(1.0) != 0.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        rep.metric("litestream_disk_full"),
        Some(0.0),
        "did not recover: {}",
        rep.log_text()
    );
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "1", "--writer", "2"],
    ));
    assert!(rep.stop().success());
    assert_restores_equal(dir.path(), &format!("file://{}", root.display()), None, &db);
}

/// With the S3 server down, staged files pile up until `-staging-limit`; then they are
/// replaced by one full image (ERROR, liteship_staging_limit_hits), the staging directory
/// stays bounded, and after the outage nothing is lost.
#[tokio::test(flavor = "multi_thread")]
async fn staging_stays_bounded_while_the_bucket_is_unreachable() {
    let OwnS3 {
        _srv,
        garage,
        tb,
        dir,
        db,
        cfg,
    } = own_s3_db(&["--rate", "10", "--duration", "0.1"], "").await;
    let rep = Replicator::start_ready(
        dir.path(),
        &["-staging-limit", "300KB", "-config", s(&cfg)],
        None,
    );
    garage.stop();
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "8", "--payload", "2000"],
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while rep.metric("liteship_staging_limit_hits").unwrap_or(0.0) < 1.0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        rep.metric("liteship_staging_limit_hits").unwrap_or(0.0) >= 1.0,
        "limit never hit: {}",
        rep.log_text()
    );
    let staged: u64 = walk_size(&dir.path().join(".app.db-litestream"));
    assert!(staged < 2_000_000, "staging grew to {staged} bytes");
    assert!(rep.log_text().contains("staging limit reached"));
    garage.resume();
    assert!(
        rep.wait_ready(200, Duration::from_secs(60)),
        "did not recover: {}",
        rep.log_text()
    );
    let log_path = rep.log.clone();
    assert!(
        rep.stop().success(),
        "{}",
        std::fs::read_to_string(log_path).unwrap_or_default()
    );
    assert_restores_equal(dir.path(), &tb.url(), Some(&tb.config), &db);
}

fn walk_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let md = e.metadata().unwrap();
                    if md.is_dir() {
                        walk_size(&e.path())
                    } else {
                        md.len()
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Several databases in one process, one replicated to a directory and one to the S3
/// server: /readyz turns 200, each has its own metrics series, and both restore equal
/// to their sources.
#[tokio::test(flavor = "multi_thread")]
async fn two_databases_in_one_process() {
    let tb = TestBucket::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let root = dir.path().join("replica-a");
    for db in [&a, &b] {
        finish_load(load(db, &["--rate", "50", "--duration", "0.2"]));
    }
    let cfg = write_config_with(dir.path(), &b, Target::S3(&tb.config), "");
    let yml = std::fs::read_to_string(&cfg).unwrap().replacen(
        "dbs:\n",
        &format!(
            "dbs:\n  - path: {}\n    monitor-interval: 100ms\n    replica:\n      sync-interval: 100ms\n      type: file\n      path: {}\n",
            a.display(),
            root.display()
        ),
        1,
    );
    std::fs::write(&cfg, yml).unwrap();
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    let (wa, wb) = (
        load(&a, &["--rate", "100", "--duration", "2", "--writer", "1"]),
        load(&b, &["--rate", "100", "--duration", "2", "--writer", "2"]),
    );
    let (na, nb) = (finish_load(wa), finish_load(wb));
    assert!(na > 100 && nb > 100, "{na} {nb}");
    let (_, metrics) = rep.get("/metrics").unwrap();
    for db in [&a, &b] {
        let series = format!("litestream_txid{{db=\"{}\"}}", db.display());
        assert!(metrics.contains(&series), "no {series} in\n{metrics}");
    }
    let log = rep.log_text();
    assert!(rep.stop().success(), "{log}");
    assert_restores_equal(dir.path(), &format!("file://{}", root.display()), None, &a);
    assert_restores_equal(dir.path(), &tb.url(), Some(&tb.config), &b);
}

/// SSE-C end to end: replicated with `sse-customer-key`, restored with the same config to
/// the source's content; a restore without the key fails with a hint instead of data.
#[tokio::test(flavor = "multi_thread")]
async fn sse_c_replica_round_trip() {
    let tb = TestBucket::new().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.2"]));
    let cfg = write_config_with(dir.path(), &db, Target::S3(&tb.config), "");
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
    let mut yml = std::fs::read_to_string(&cfg).unwrap();
    yml.push_str(&format!(
        "      sse-customer-algorithm: AES256\n      sse-customer-key: {key}\n"
    ));
    std::fs::write(&cfg, yml).unwrap();
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    finish_load(load(
        &db,
        &["--rate", "100", "--duration", "1", "--writer", "2"],
    ));
    assert!(rep.stop().success());
    let out = dir.path().join("out.db");
    let r = restore(&["-config", s(&cfg), "-o", s(&out), s(&db)], None);
    assert!(r.status.success(), "{}", text(&r));
    let want = crate::support::replicator::content_hash(&db);
    assert_eq!(crate::support::replicator::content_hash(&out), want);
    // Litestream 0.5.17 reads the same SSE-C replica with the same config.
    let theirs = dir.path().join("theirs.db");
    let ls = crate::support::oracle::Litestream::v0_5_17();
    let r = ls.restore(&["-config", s(&cfg), "-o", s(&theirs), s(&db)], None);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(crate::support::replicator::content_hash(&theirs), want);
    let out2 = dir.path().join("out2.db");
    let r = restore(&["-o", s(&out2), &tb.url()], Some(&tb.config));
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("sse-customer-key"), "no hint: {err}");
    assert!(!err.contains(key), "key leaked: {err}");
    assert!(!out2.exists());
}
