//! What replication costs in bytes: a new replica's base image goes up once (the first
//! snapshot is a copy inside the replica, the first level-1 file starts after it, and
//! compaction reads staged files instead of downloading), and a restart within the
//! snapshot window takes no second snapshot.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::cli::{ltx_files, s};
use crate::support::oracle::{FAST_COMPACTION, Target, write_config_with};
use crate::support::replicator::{Replicator, assert_restores_equal, finish_load, load};
use crate::support::s3::{TestBucket, own_garage};

fn op_bytes(rep: &Replicator, op: &str) -> f64 {
    rep.metric_with("litestream_replica_operation_bytes", &[("operation", op)])
        .unwrap_or(0.0)
}

/// Polls the listing until `pred` holds (up to 60 s).
fn wait_listing(
    url: &str,
    tb: &TestBucket,
    pred: impl Fn(&[(u8, u64, u64, u64)]) -> bool,
) -> Vec<(u8, u64, u64, u64)> {
    let t0 = Instant::now();
    loop {
        let files = ltx_files(url, Some(&tb.config));
        if pred(&files) {
            return files;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "listing never matched: {files:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A fresh directory and a `file://` replica in it.
fn file_replica() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("replica");
    let url = format!("file://{}", root.display());
    (dir, root, url)
}

fn size(p: &Path) -> f64 {
    std::fs::metadata(p).unwrap().len() as f64
}

#[tokio::test(flavor = "multi_thread")]
async fn the_base_image_is_uploaded_once() {
    let srv = own_garage();
    let tb = TestBucket::on(&srv).await;
    let url = tb.url();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    finish_load(load(
        &db,
        &["--grow-mb", "16", "--rate", "50", "--duration", "0.2"],
    ));
    let base = size(&db);
    let cfg = write_config_with(dir.path(), &db, Target::S3(&tb.config), FAST_COMPACTION);
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "3", "--writer", "2"],
    ));
    let files = wait_listing(&url, &tb, |f| {
        f.iter().any(|x| x.0 == 9) && f.iter().any(|x| x.0 == 1 && x.2 > 3)
    });
    let (put, get) = (op_bytes(&rep, "PUT"), op_bytes(&rep, "GET"));
    assert!(
        put < base * 1.25,
        "uploaded {put} bytes for a {base}-byte database: the base went up more than once ({files:?})"
    );
    eprintln!("start-up: database {base} bytes, uploaded {put}, downloaded {get}");
    assert_eq!(get, 0.0, "compaction downloaded {get} bytes");
    let snaps: Vec<_> = files.iter().filter(|f| f.0 == 9).collect();
    assert_eq!(snaps.len(), 1, "{files:?}");
    assert_eq!(
        (snaps[0].1, snaps[0].2),
        (1, 1),
        "the base image, copied: {files:?}"
    );
    let first_l1 = files.iter().find(|f| f.0 == 1).unwrap();
    assert_eq!(
        first_l1.1, 2,
        "level 1 starts after the snapshot: {files:?}"
    );
    assert!(
        (first_l1.3 as f64) < base / 4.0,
        "level 1 holds changes only: {files:?}"
    );
    assert!(rep.stop().success());
    assert_restores_equal(dir.path(), &url, Some(&tb.config), &db);

    // A restart within the snapshot window: no second snapshot, only the changes go up.
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "2", "--writer", "3"],
    ));
    std::thread::sleep(Duration::from_secs(2));
    let put = op_bytes(&rep, "PUT");
    assert!(put < base / 4.0, "a restart uploaded {put} bytes");
    assert!(rep.stop().success());
    let files = ltx_files(&url, Some(&tb.config));
    assert_eq!(files.iter().filter(|f| f.0 == 9).count(), 1, "{files:?}");
    assert_restores_equal(dir.path(), &url, Some(&tb.config), &db);
}

/// A new allocation restores the database, the application starts writing, then the
/// replicator starts: the file still holds the restored bytes, so replication continues
/// from the WAL without a full image. When the application checkpointed into the file first, the bytes
/// differ and a full image is written (the safe way). Both ways every restore is equal.
#[test]
fn a_restored_database_continues_without_a_full_image() {
    use crate::support::cli::restore;
    let (dir, _, url) = file_replica();
    let first = dir.path().join("first.db");
    finish_load(load(
        &first,
        &["--grow-mb", "8", "--rate", "50", "--duration", "0.5"],
    ));
    let rep = Replicator::start_ready(dir.path(), &[s(&first), &url], None);
    assert!(rep.stop().success());
    let base = size(&first);

    for (name, app_checkpoints) in [("alloc2.db", false), ("alloc3.db", true)] {
        let db = dir.path().join(name);
        let r = restore(&["-o", s(&db), &url], None);
        assert!(r.status.success(), "{}", crate::support::cli::text(&r));
        // The application starts first (the replicator is a poststart sidecar) and keeps
        // writing (its last connection would checkpoint the WAL into the file on close).
        let mut args = vec!["--rate", "50", "--duration", "3", "--writer", "2"];
        if app_checkpoints {
            args.extend(["--checkpoint", "truncate", "--checkpoint-every", "0.3"]);
        }
        let app = load(&db, &args);
        std::thread::sleep(Duration::from_secs(1));
        let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
        finish_load(app);
        std::thread::sleep(Duration::from_secs(1));
        let (full, put) = (
            rep.metric("liteship_full_level0_images").unwrap_or(0.0),
            op_bytes(&rep, "PUT"),
        );
        let log = rep.log_text();
        assert!(rep.stop().success());
        if app_checkpoints {
            assert_eq!(
                full, 1.0,
                "the file changed since the restore: a full image\n{log}"
            );
        } else {
            assert_eq!(full, 0.0, "{log}");
            assert!(
                log.contains("continuing from the WAL without a full image"),
                "{log}"
            );
            assert!(
                put < base / 4.0,
                "uploaded {put} bytes of a {base}-byte database"
            );
        }
        assert_restores_equal(dir.path(), &url, None, &db);
    }
}

/// Found by an adversarial pass: a restored database must not continue without a full
/// image onto a replica whose history was rewritten meanwhile (another writer reached the
/// same TXID with other content). The marker records the replica file the restore ended
/// with; when the replica no longer holds that very file, a full image follows and both
/// tools restore exactly this database.
#[test]
fn a_restored_database_does_not_continue_onto_another_history() {
    use crate::support::cli::restore;
    let (dir, root, url) = file_replica();
    let src = dir.path().join("src.db");
    finish_load(load(&src, &["--rate", "50", "--duration", "0.5"]));
    let rep = Replicator::start_ready(dir.path(), &[s(&src), &url], None);
    finish_load(load(
        &src,
        &["--rate", "50", "--duration", "0.5", "--writer", "2"],
    ));
    std::thread::sleep(Duration::from_secs(1));
    assert!(rep.stop().success());
    let y = dir.path().join("y.db");
    assert!(restore(&["-o", s(&y), &url], None).status.success());
    // Rewind the replica by one TXID: every file that ends at the newest TXID goes.
    let files = ltx_files(&url, None);
    let m = files.iter().map(|f| f.2).max().unwrap();
    for f in files.iter().filter(|f| f.2 == m) {
        let name = format!("{:016x}-{:016x}.ltx", f.1, f.2);
        std::fs::remove_file(root.join(format!("ltx/{}/{name}", f.0))).unwrap();
    }
    // Another allocation restores the rewound replica and writes its own TXID m.
    let q = dir.path().join("q.db");
    assert!(restore(&["-o", s(&q), &url], None).status.success());
    finish_load(load(
        &q,
        &["--rate", "50", "--duration", "0.5", "--writer", "9"],
    ));
    let rep = Replicator::start_ready(dir.path(), &[s(&q), &url], None);
    assert!(rep.stop().success());
    let now = ltx_files(&url, None).iter().map(|f| f.2).max().unwrap();
    assert_eq!(now, m, "the other history is at the restored TXID");
    // The first allocation comes back: same TXID, other content in the replica.
    let app = load(&y, &["--rate", "50", "--duration", "2", "--writer", "7"]);
    std::thread::sleep(Duration::from_millis(500));
    let rep = Replicator::start_ready(dir.path(), &[s(&y), &url], None);
    finish_load(app);
    let log = rep.log_text();
    assert!(rep.stop().success(), "{log}");
    assert!(
        !log.contains("continuing from the WAL without a full image"),
        "{log}"
    );
    assert_restores_equal(dir.path(), &url, None, &y);
}

/// Found by an adversarial pass: a restored database copied with its directory before its
/// first replicate (a new inode, the same bytes) was refused as "no replication state".
/// Its bytes are the restore's, so it continues like the original would.
#[test]
fn a_copied_restored_database_continues() {
    use crate::support::cli::restore;
    let (dir, _, url) = file_replica();
    let src = dir.path().join("src.db");
    finish_load(load(&src, &["--rate", "50", "--duration", "0.5"]));
    let rep = Replicator::start_ready(dir.path(), &[s(&src), &url], None);
    assert!(rep.stop().success());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    assert!(
        restore(&["-o", s(&a.join("app.db")), &url], None)
            .status
            .success()
    );
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&b)
        .status()
        .unwrap();
    assert!(cp.success());
    let db = b.join("app.db");
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "1", "--writer", "2"],
    ));
    let log = rep.log_text();
    assert!(rep.stop().success(), "{log}");
    assert!(
        log.contains("continuing from the WAL without a full image"),
        "{log}"
    );
    assert_restores_equal(dir.path(), &url, None, &db);
}
