//! The restore error table: every failure exits non-zero with a one-line cause, writes
//! nothing at the output path, and leaves no `.tmp`; the two documented no-op cases exit 0.

use std::path::{Path, PathBuf};
use std::time::Duration;

use liteship::replica::file::FileReplica;
use liteship::replica::{Body, ReplicaClient};

use crate::support::cli::{restore, s, text};
use crate::support::oracle::{Litestream, Target, write_config};
use crate::support::s3::{TestBucket, raw_client};
use crate::support::sqlite::open_wal;

/// A file replica with a few level-0 files written by Litestream 0.5.17.
fn litestream_replica(dir: &Path) -> PathBuf {
    let db = dir.join("app.db");
    let c = open_wal(&db);
    c.execute_batch("CREATE TABLE t(v); INSERT INTO t VALUES (randomblob(5000));")
        .unwrap();
    let root = dir.join("replica");
    let cfg = write_config(dir, &db, Target::File(&root));
    let running = Litestream::v0_5_17().replicate(&cfg);
    std::thread::sleep(Duration::from_millis(700));
    for _ in 0..4 {
        c.execute("INSERT INTO t VALUES (randomblob(3000))", [])
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    running.stop();
    root
}

fn file_url(root: &Path) -> String {
    format!("file://{}", root.display())
}

fn assert_failed_cleanly(out: &std::process::Output, dbpath: &Path, want: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(want), "stderr lacks {want:?}: {}", text(out));
    assert_eq!(
        err.lines().filter(|l| l.starts_with("Error:")).count(),
        1,
        "one-line cause"
    );
    assert!(!dbpath.exists(), "output written despite the failure");
    assert!(
        !liteship::fsutil::tmp_path(dbpath).exists(),
        ".tmp left behind"
    );
}

#[test]
fn no_backups_with_and_without_if_replica_exists() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.db");
    let url = file_url(&dir.path().join("empty"));
    let r = restore(&["-o", s(&out), &url], None);
    assert_failed_cleanly(&r, &out, "no matching backup files available");
    let r = restore(&["-if-replica-exists", "-o", s(&out), &url], None);
    assert!(r.status.success(), "{}", text(&r));
    assert!(String::from_utf8_lossy(&r.stdout).contains("no matching backups found"));
    assert!(!out.exists());
}

#[test]
fn existing_output_is_kept_skipped_or_forced() {
    let dir = tempfile::tempdir().unwrap();
    let root = litestream_replica(dir.path());
    let out = dir.path().join("out.db");
    std::fs::write(&out, b"precious").unwrap();
    let r = restore(&["-o", s(&out), &file_url(&root)], None);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("-force"),
        "says how to fix it"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    let r = restore(
        &["-if-db-not-exists", "-o", s(&out), &file_url(&root)],
        None,
    );
    assert!(r.status.success());
    assert!(String::from_utf8_lossy(&r.stdout).contains("database already exists, skipping"));
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    std::fs::write(crate::support::sqlite::sidecar(&out, "-wal"), b"stale wal").unwrap();
    let r = restore(&["-force", "-o", s(&out), &file_url(&root)], None);
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(&std::fs::read(&out).unwrap()[..16], b"SQLite format 3\0");
    assert!(
        !crate::support::sqlite::sidecar(&out, "-wal").exists(),
        "stale -wal removed"
    );
    // An empty file (an app that started without its database) is not worth keeping.
    std::fs::write(&out, b"").unwrap();
    let r = restore(
        &["-if-db-not-exists", "-o", s(&out), &file_url(&root)],
        None,
    );
    assert!(r.status.success());
    assert!(
        std::fs::metadata(&out).unwrap().len() > 0,
        "empty file replaced by the restore"
    );
}

#[test]
fn gap_in_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let root = litestream_replica(dir.path());
    let l0 = root.join("ltx/0");
    let mut names: Vec<_> = std::fs::read_dir(&l0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert!(names.len() >= 3);
    std::fs::remove_file(&names[names.len() / 2]).unwrap();
    only_level0(&root);
    let out = dir.path().join("out.db");
    let r = restore(&["-o", s(&out), &file_url(&root)], None);
    assert_failed_cleanly(&r, &out, "non-contiguous ltx files");
}

/// Drops every level but 0, so the restore plan must walk the level-0 chain: Litestream
/// may have compacted or snapshotted over the file a test damages (timing-dependent).
fn only_level0(root: &Path) {
    for level in 1..=9 {
        std::fs::remove_dir_all(root.join(format!("ltx/{level}"))).ok();
    }
}

/// The newest level-0 file, after [`only_level0`] made sure the plan needs it.
fn newest_l0(root: &Path) -> PathBuf {
    only_level0(root);
    let mut names: Vec<_> = std::fs::read_dir(root.join("ltx/0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names.pop().unwrap()
}

#[test]
fn corrupted_object_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = litestream_replica(dir.path());
    let victim = newest_l0(&root);
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&victim, &bytes).unwrap();
    let out = dir.path().join("out.db");
    let r = restore(&["-o", s(&out), &file_url(&root)], None);
    assert_failed_cleanly(&r, &out, victim.file_name().unwrap().to_str().unwrap());
    assert!(String::from_utf8_lossy(&r.stderr).contains("corrupt replica file"));
}

#[test]
fn truncated_object() {
    let dir = tempfile::tempdir().unwrap();
    let root = litestream_replica(dir.path());
    let victim = newest_l0(&root);
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() - 30]).unwrap();
    let out = dir.path().join("out.db");
    let r = restore(&["-o", s(&out), &file_url(&root)], None);
    assert_failed_cleanly(&r, &out, victim.file_name().unwrap().to_str().unwrap());
    let tiny = root.join("ltx/0/00000000000000ff-00000000000000ff.ltx");
    std::fs::write(&tiny, b"LTX1").unwrap();
    let r = restore(&["-o", s(&out), &file_url(&root)], None);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_object_on_s3() {
    let tb = TestBucket::new().await;
    let dir = tempfile::tempdir().unwrap();
    let root = litestream_replica(dir.path());
    let file = FileReplica::new(&root);
    // Level 0 only: a snapshot or compaction could otherwise cover the truncated files.
    for f in file.list(0).await.unwrap() {
        let bytes = liteship::replica::read_all(&file, 0, f.min_txid, f.max_txid)
            .await
            .unwrap();
        let keep = if f.min_txid > 1 {
            bytes.len() - 7
        } else {
            bytes.len()
        };
        let body = Body::Bytes(bytes[..keep].to_vec().into());
        tb.replica
            .write(0, f.min_txid, f.max_txid, body, 0)
            .await
            .unwrap();
    }
    let out = dir.path().join("out.db");
    let r = restore(&["-o", s(&out), &tb.url()], Some(&tb.config));
    assert_failed_cleanly(&r, &out, "db/0000/");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_on_s3() {
    let tb = TestBucket::new().await;
    let wrong = liteship::replica::S3Config {
        secret_access_key: Some("f".repeat(64)),
        ..tb.config.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.db");
    let r = restore(&["-o", s(&out), &tb.url()], Some(&wrong));
    assert_failed_cleanly(&r, &out, "access denied");
    assert!(!text(&r).contains(&"f".repeat(64)), "secret printed");
    let _ = raw_client(&tb.config).await;
}

#[test]
fn unreachable_endpoint_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.db");
    let port = crate::support::free_port();
    let url = format!("s3://bkt/db?endpoint=127.0.0.1:{port}&region=us-east-1");
    let creds = liteship::replica::S3Config {
        access_key_id: Some("GKx".into()),
        secret_access_key: Some("y".into()),
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let r = restore(&["-o", s(&out), &url], Some(&creds));
    assert_failed_cleanly(&r, &out, &format!("cannot reach http://127.0.0.1:{port}"));
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn malformed_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.db");
    let url = file_url(dir.path());
    let r = restore(&["-txid", "2", "-o", s(&out), &url], None);
    assert_failed_cleanly(&r, &out, "invalid txid format");
    let r = restore(&["-timestamp", "yesterday", "-o", s(&out), &url], None);
    assert_failed_cleanly(&r, &out, "invalid -timestamp");
    let r = restore(&["-integrity-check", "some", "-o", s(&out), &url], None);
    assert_failed_cleanly(&r, &out, "-integrity-check");
    let r = restore(&[&url], None);
    assert_failed_cleanly(&r, &out, "-o PATH is required");
    for d in ["0s", "1ms"] {
        let r = restore(&["-f", "-follow-interval", d, "-o", s(&out), &url], None);
        assert_failed_cleanly(&r, &out, "-follow-interval must be at least 100ms");
    }
}

#[test]
fn timestamp_before_first_backup() {
    let dir = tempfile::tempdir().unwrap();
    let root = litestream_replica(dir.path());
    let out = dir.path().join("out.db");
    let r = restore(
        &[
            "-timestamp",
            "2001-01-01T00:00:00Z",
            "-o",
            s(&out),
            &file_url(&root),
        ],
        None,
    );
    assert_failed_cleanly(&r, &out, "before the first backup");
}

#[test]
fn owner_and_mode_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let root = litestream_replica(dir.path());
    let out = dir.path().join("sub/out.db");
    let r = restore(
        &[
            "-owner",
            "1234:2345",
            "-mode",
            "0640",
            "-o",
            s(&out),
            &file_url(&root),
        ],
        None,
    );
    assert!(r.status.success(), "{}", text(&r));
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(&out).unwrap();
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!((md.uid(), md.gid()), (1234, 2345));
    }
    assert_eq!(md.mode() & 0o777, 0o640);
}

/// The point-in-time commands of nomad/README.md: config mode, -dry-run, then -timestamp.
#[test]
fn config_mode_dry_run_and_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let root = litestream_replica(dir.path());
    let db = dir.path().join("app.db");
    let cfg = dir.path().join("restore.yml");
    std::fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n    replica:\n      type: file\n      path: {}\n",
            db.display(),
            root.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("pitr.db");
    let r = restore(
        &["-dry-run", "-config", s(&cfg), "-o", s(&out), s(&db)],
        None,
    );
    assert!(r.status.success(), "{}", text(&r));
    let plan = String::from_utf8_lossy(&r.stdout);
    assert!(
        plan.contains("0000000000000001-") && plan.contains("restores to txid"),
        "{plan}"
    );
    assert!(!out.exists(), "-dry-run writes nothing");
    let ts = liteship::timefmt::format_rfc3339_ms(liteship::timefmt::now_ms());
    let r = restore(
        &["-config", s(&cfg), "-timestamp", &ts, "-o", s(&out), s(&db)],
        None,
    );
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(crate::support::sqlite::integrity_check(&out), "ok");
}
