//! The replicator against real writers: restores (ours and Litestream 0.5.17's) must equal
//! the source after a clean stop, and be a gap-free prefix of history at any moment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::cli::{restore, s, text};
use crate::support::oracle::{Litestream, Target, write_config_with};
use crate::support::replicator::{Replicator, assert_restores_equal, finish_load, load, load_rows};
use crate::support::s3::TestBucket;
use crate::support::sqlite::integrity_check;

/// Fast maintenance so that tests see compaction, snapshots and retention.
const FAST: &str = "levels:\n  - interval: 2s\n  - interval: 6s\nl0-retention: 3s\nl0-retention-check-interval: 1s\nsnapshot:\n  interval: 15s\n  retention: 30s\n";

fn file_url(root: &Path) -> String {
    format!("file://{}", root.display())
}

/// 2 writer processes for 60 s (~800 commits/s), the application's own PASSIVE, FULL,
/// RESTART and TRUNCATE checkpoints, a VACUUM; replicated to the S3 server.
#[tokio::test(flavor = "multi_thread")]
async fn load_with_app_checkpoints_and_vacuum_s3() {
    let tb = TestBucket::new().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let cfg = write_config_with(dir.path(), &db, Target::S3(&tb.config), FAST);
    // The database exists before the replicator starts (created by the first writer).
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "0.2", "--grow-mb", "8"],
    ));
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    let w1 = load(
        &db,
        &[
            "--rate",
            "400",
            "--duration",
            "60",
            "--writer",
            "1",
            "--checkpoint",
            "passive,full,restart,truncate",
            "--checkpoint-every",
            "3",
        ],
    );
    let w2 = load(
        &db,
        &[
            "--rate",
            "400",
            "--duration",
            "60",
            "--writer",
            "2",
            "--vacuum-at",
            "30",
        ],
    );
    let (n1, n2) = (finish_load(w1), finish_load(w2));
    assert!(n1 + n2 > 30_000, "only {} commits", n1 + n2);
    let log_path = rep.log.clone();
    let status = rep.stop();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.success(), "exit {status}: {log}");
    assert_restores_equal(dir.path(), &tb.url(), Some(&tb.config), &db);
    assert!(
        log.contains("compaction complete") && log.contains("snapshot complete"),
        "{log}"
    );
}

/// A commit immediately followed by SIGTERM is in the replica before exit 0.
#[test]
fn sigterm_right_after_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    finish_load(load(&db, &["--rate", "10", "--duration", "0.1"]));
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &file_url(&root)], None);
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute(
        "INSERT INTO load(writer, seq, t_ms, payload) VALUES (9, 1, 0, x'cafe')",
        [],
    )
    .unwrap();
    drop(c);
    let status = rep.stop();
    assert!(status.success(), "exit {status}");
    let out = dir.path().join("out.db");
    assert!(
        restore(&["-o", s(&out), &file_url(&root)], None)
            .status
            .success()
    );
    let n: i64 = rusqlite::Connection::open(&out)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM load WHERE writer = 9", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, 1, "the last commit is in the replica");
}

/// The application runs RESTART, TRUNCATE and FULL checkpoints while the replicator is
/// down (Litestream #752, and the case where Litestream 0.5.17 loses transactions): on
/// restart liteship cannot prove continuity and writes a full image; nothing is lost.
#[test]
fn app_checkpoints_while_replicator_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    let url = file_url(&root);
    finish_load(load(&db, &["--rate", "100", "--duration", "0.5"]));
    for (round, mode) in ["RESTART", "TRUNCATE", "FULL"].iter().enumerate() {
        let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
        finish_load(load(
            &db,
            &["--rate", "200", "--duration", "1.5", "--writer", "1"],
        ));
        if round % 2 == 0 {
            rep.kill9();
        } else {
            assert!(rep.stop().success());
        }
        finish_load(load(
            &db,
            &["--rate", "200", "--duration", "0.5", "--writer", "2"],
        ));
        let c = rusqlite::Connection::open(&db).unwrap();
        let _: i64 = c
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get(0))
            .unwrap();
        drop(c);
        finish_load(load(
            &db,
            &["--rate", "200", "--duration", "0.5", "--writer", "3"],
        ));
        let rep = Replicator::start(dir.path(), &[s(&db), &url], None);
        finish_load(load(
            &db,
            &["--rate", "200", "--duration", "1", "--writer", "4"],
        ));
        assert!(rep.stop().success());
        assert_restores_equal(dir.path(), &url, None, &db);
    }
}

/// kill -9 at random moments under load, 20 times: every restore is consistent, has no gap,
/// and holds every transaction committed before the newest uploaded level-0 file.
#[tokio::test(flavor = "multi_thread")]
async fn kill9_cycles_under_load() {
    use liteship::replica::ReplicaClient;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    let url = file_url(&root);
    finish_load(load(&db, &["--rate", "10", "--duration", "0.1"]));
    let writer = load(
        &db,
        &[
            "--rate",
            "300",
            "--duration",
            "600",
            "--writer",
            "1",
            "--checkpoint",
            "passive",
            "--checkpoint-every",
            "2",
        ],
    );
    let client = liteship::replica::file::FileReplica::new(&root);
    let mut seen_backup = false;
    for cycle in 0..20 {
        let rep = Replicator::start(dir.path(), &[s(&db), &url], None);
        let ms = 700 + rand::random_range(0..1500u64);
        std::thread::sleep(Duration::from_millis(ms));
        rep.kill9();
        let out = dir.path().join(format!("cycle-{cycle}.db"));
        let r = restore(&["-o", s(&out), &url], None);
        if !r.status.success()
            && !seen_backup
            && String::from_utf8_lossy(&r.stderr).contains("no matching backup files")
        {
            continue; // killed before the first snapshot reached the replica
        }
        seen_backup = true;
        assert!(r.status.success(), "cycle {cycle}: {}", text(&r));
        assert_eq!(integrity_check(&out), "ok", "cycle {cycle}");
        let rows = load_rows(&out);
        assert!(
            rows.iter().all(|(_, _, contiguous)| *contiguous),
            "cycle {cycle}: gap in history {rows:?}"
        );
        let newest = client.list(0).await.unwrap().last().cloned().unwrap();
        let bytes = liteship::replica::read_all(&client, 0, newest.min_txid, newest.max_txid)
            .await
            .unwrap();
        let header_ts = liteship::ltx::decode_all(&bytes)
            .unwrap()
            .header
            .timestamp_ms;
        let c = rusqlite::Connection::open(&out).unwrap();
        let restored_max: i64 = c
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM load WHERE writer = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let src =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        let must: i64 = src
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM load WHERE writer = 1 AND t_ms < ?1",
                [header_ts - 500],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            restored_max >= must,
            "cycle {cycle}: restored up to seq {restored_max}, but seq {must} committed before the last upload"
        );
        std::fs::remove_file(&out).ok();
    }
    let mut w = writer;
    let _ = w.kill();
    let _ = w.wait();
    assert!(seen_backup, "the replica never held a backup in 20 cycles");
}

/// Litestream replicates, stops; liteship continues the same replica, stops; Litestream
/// continues again. Every restore in between equals the source at that point.
#[test]
fn takeover_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    let url = file_url(&root);
    finish_load(load(&db, &["--rate", "50", "--duration", "0.2"]));
    let cfg = write_config_with(dir.path(), &db, Target::File(&root), "");
    for round in 0..2 {
        let ls = Litestream::v0_5_17().replicate(&cfg);
        std::thread::sleep(Duration::from_millis(800));
        finish_load(load(
            &db,
            &["--rate", "200", "--duration", "2", "--writer", "1"],
        ));
        std::thread::sleep(Duration::from_millis(500));
        ls.stop();
        assert_restores_equal(dir.path(), &url, None, &db);
        if round == 1 {
            break;
        }
        let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
        finish_load(load(
            &db,
            &["--rate", "200", "--duration", "2", "--writer", "2"],
        ));
        let log = rep.log.clone();
        assert!(
            rep.stop().success(),
            "{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        assert_restores_equal(dir.path(), &url, None, &db);
    }
}

fn seed_replica(dir: &Path) -> (PathBuf, String) {
    let db = dir.join("first.db");
    let root = dir.join("replica");
    let url = file_url(&root);
    finish_load(load(&db, &["--rate", "100", "--duration", "0.5"]));
    let rep = Replicator::start_ready(dir, &[s(&db), &url], None);
    assert!(rep.stop().success());
    (db, url)
}

/// A database that does not descend from the replica's newest state is refused (ERROR,
/// /readyz 503) unless -allow-new-history; a restored one continues without a prompt.
#[test]
fn lineage_refusal_and_restore_then_replicate() {
    let dir = tempfile::tempdir().unwrap();
    let (_first, url) = seed_replica(dir.path());
    // An unrelated database at a new path (for example one the app created after a skipped restore).
    let stranger = dir.path().join("stranger.db");
    finish_load(load(
        &stranger,
        &["--rate", "10", "--duration", "0.1", "--writer", "7"],
    ));
    let rep = Replicator::start(dir.path(), &[s(&stranger), &url], None);
    std::thread::sleep(Duration::from_secs(2));
    let (code, body) = rep.get("/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("refusing to replicate") && body.contains("-allow-new-history"),
        "{body}"
    );
    assert_eq!(rep.metric("liteship_db_refused"), Some(1.0));
    assert_eq!(rep.stop().code(), Some(1), "a refused database exits 1");
    assert!(rep_log_has(dir.path(), "ERROR"), "an ERROR was logged");

    // Restore, then replicate: continues the history.
    let restored = dir.path().join("restored.db");
    assert!(restore(&["-o", s(&restored), &url], None).status.success());
    let rep = Replicator::start_ready(dir.path(), &[s(&restored), &url], None);
    finish_load(load(
        &restored,
        &["--rate", "100", "--duration", "1", "--writer", "2"],
    ));
    assert!(rep.stop().success());
    assert_restores_equal(dir.path(), &url, None, &restored);

    // Explicitly allowed: the stranger becomes the newest state.
    let rep = Replicator::start_ready(
        dir.path(),
        &["-allow-new-history", s(&stranger), &url],
        None,
    );
    assert!(rep.stop().success());
    assert_restores_equal(dir.path(), &url, None, &stranger);
}

fn rep_log_has(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with("replicate-")
            && std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .contains(needle)
    })
}

/// `-restore-if-db-not-exists -exec CMD`: restores, runs the application, exits with its
/// status after the final upload.
#[test]
fn restore_if_missing_and_exec() {
    let dir = tempfile::tempdir().unwrap();
    let (_first, url) = seed_replica(dir.path());
    let db = dir.path().join("fresh.db");
    let exec = format!(
        "{} {} --rate 100 --duration 1 --writer 3",
        env!("CARGO_BIN_EXE_liteship-load"),
        db.display()
    );
    let mut c = crate::support::cli::liteship();
    let out = c.args([
        "replicate",
        "-restore-if-db-not-exists",
        "-exec",
        &exec,
        s(&db),
        &url,
    ]);
    let out = crate::support::cli::output_within(out, Duration::from_secs(120));
    assert!(out.status.success(), "{}", text(&out));
    assert_restores_equal(dir.path(), &url, None, &db);
    let mut c = crate::support::cli::liteship();
    let out = crate::support::cli::output_within(
        c.args(["replicate", "-exec", "sh -c 'exit 7'", s(&db), &url]),
        Duration::from_secs(120),
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
}

/// `replicate -restore-if-db-not-exists` restores a snapshot large enough for the parallel
/// decoder (72 MiB of random rows: 8 ranges) through the replicator's capped blocking pool:
/// each decoder holds a pool thread while its file-replica reads need another one, so a
/// pool smaller than twice the restore's parallelism hangs here (checked with 4 threads).
/// The application (`true`) exits at once: the stop comes while the replicator starts, and
/// with nothing committed since the restore that is a clean exit (it used to be exit 1,
/// "nothing of this database was replicated").
#[test]
fn restore_before_replicating_runs_the_parallel_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    let url = file_url(&dir.path().join("replica"));
    finish_load(load(
        &db,
        &["--rate", "10", "--duration", "0.2", "--grow-mb", "72"],
    ));
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    assert!(rep.stop().success());
    let fresh = dir.path().join("fresh.db");
    let mut c = crate::support::cli::liteship();
    let out = c.args([
        "replicate",
        "-restore-if-db-not-exists",
        "-exec",
        "true",
        s(&fresh),
        &url,
    ]);
    let out = crate::support::cli::output_within(out, Duration::from_secs(120));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("restored before replicating"),
        "{}",
        text(&out)
    );
    assert_restores_equal(dir.path(), &url, None, &fresh);
    assert_eq!(
        crate::support::replicator::content_hash(&fresh),
        crate::support::replicator::content_hash(&db)
    );
}

/// An application that creates the database, commits and exits before the replicator's
/// next look for the file (it looks once per monitor interval): the stop used to end the
/// wait for the file with exit 0 and nothing replicated (adversarial pass, F1). The file
/// is looked for once more at the stop, and the final sync replicates every row.
#[test]
fn an_application_that_creates_the_database_and_exits_at_once_is_replicated() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new.db");
    let url = file_url(&dir.path().join("replica"));
    let exec = format!(
        "{} {} --rate 200 --duration 0.1",
        env!("CARGO_BIN_EXE_liteship-load"),
        db.display()
    );
    let mut c = crate::support::cli::liteship();
    let out = c.args(["replicate", "-exec", &exec, s(&db), &url]);
    let out = crate::support::cli::output_within(out, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out));
    assert!(!load_rows(&db).is_empty(), "the application committed rows");
    assert_restores_equal(dir.path(), &url, None, &db);
}

/// A second signal while an `-exec` application ignores the first: it is forwarded, the
/// final upload is aborted and liteship exits at once (non-zero), killing an application
/// that still does not exit after the grace period. It used to wait for the application
/// forever (adversarial pass, F2).
#[test]
fn a_second_signal_aborts_while_the_application_ignores_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.2"]));
    let app = dir.path().join("stubborn.sh");
    std::fs::write(&app, "trap '' TERM INT\nwhile :; do sleep 0.1; done\n").unwrap();
    let exec = format!("sh {}", app.display());
    let url = file_url(&dir.path().join("replica"));
    let log = dir.path().join("replicate.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut child = crate::support::cli::liteship()
        .args(["replicate", "-exec", &exec, s(&db), &url])
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&log).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the application is stopped first: {}",
        text()
    );
    let t = std::time::Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let st = crate::support::replicator::wait_timeout(&mut child, Duration::from_secs(30));
    let Some(st) = st else {
        let _ = child.kill();
        panic!("still running 30 s after the second signal: {}", text());
    };
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "{:?}: {}",
        t.elapsed(),
        text()
    );
    assert!(!st.success(), "{}", text());
    assert!(text().contains("second signal"), "{}", text());
}
