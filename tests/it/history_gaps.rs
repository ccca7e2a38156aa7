//! Holes in the history between the replica and the staging directory: level-0 files a
//! bucket lifecycle rule removed (higher levels cover them), and a staged file lost before
//! the final upload. Replication continues or heals; the exit status never claims a
//! durability the replica does not have.

use std::path::Path;
use std::time::Duration;

use crate::support::cli::{restore, s, text};
use crate::support::oracle::{Target, write_config_with};
use crate::support::replicator::{Replicator, assert_restores_equal, finish_load, load};

fn ltx_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "ltx"));
    v.sort();
    v
}

/// Every level-0 file is gone from the replica (a lifecycle rule), a snapshot covers them,
/// and level 1 ends before the snapshot. A new allocation restores and replicates (the
/// Nomad flow): its full image continues the snapshot's position without an error, its
/// compactions continue level 1 after the snapshot, and both restorers agree with the
/// database. It used to take level 0 for the replica's position, see a hole and write a
/// second image; and its level-1 compaction failed on every tick ("level 1 ends at 5 but
/// level 0 continues at 16", seen in CI when a 30 s window fell inside the run).
#[test]
fn level0_removed_by_a_lifecycle_rule_is_continued() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    let url = format!("file://{}", root.display());
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    // Level 1 gets a file a second; the only snapshot is the base image.
    let levels_only = "snapshot:\n  interval: 1h\nlevels:\n  - interval: 1s\n";
    let cfg = write_config_with(dir.path(), &db, Target::File(&root), levels_only);
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "3", "--writer", "1"],
    ));
    std::thread::sleep(Duration::from_secs(2)); // level 1 covers every write
    assert!(rep.stop_within(Duration::from_secs(30)).0.success());
    // Then a snapshot covers every write.
    let snapshot_only = "snapshot:\n  interval: 1s\nlevels:\n  - interval: 1h\n";
    let cfg = write_config_with(dir.path(), &db, Target::File(&root), snapshot_only);
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    std::thread::sleep(Duration::from_secs(2));
    assert!(rep.stop_within(Duration::from_secs(30)).0.success());
    let (l0, l1, l9) = (
        ltx_files(&root.join("ltx/0")),
        ltx_files(&root.join("ltx/1")),
        ltx_files(&root.join("ltx/9")),
    );
    let end = |p: &std::path::PathBuf| p.file_name().unwrap().to_string_lossy()[17..33].to_string();
    assert!(!l0.is_empty() && l1.len() >= 2, "{l0:?} {l1:?}");
    assert_eq!(
        end(l9.last().unwrap()),
        end(l0.last().unwrap()),
        "{l9:?} {l0:?}"
    );
    // A lifecycle rule removes level 0, and level 1's newest file: level 1 ends before
    // the snapshot.
    for f in &l0 {
        std::fs::remove_file(f).unwrap();
    }
    std::fs::remove_file(l1.last().unwrap()).unwrap();

    let alloc = dir.path().join("alloc2");
    std::fs::create_dir(&alloc).unwrap();
    let db2 = alloc.join("app.db");
    let r = restore(&["-o", s(&db2), &url], None);
    assert!(r.status.success(), "{}", text(&r));
    let fast = "levels:\n  - interval: 1s\n";
    let cfg2 = write_config_with(&alloc, &db2, Target::File(&root), fast);
    let rep = Replicator::start_ready(&alloc, &["-config", s(&cfg2)], None);
    finish_load(load(
        &db2,
        &["--rate", "50", "--duration", "3", "--writer", "2"],
    ));
    std::thread::sleep(Duration::from_secs(2)); // level-1 windows pass
    let log_path = rep.log.clone();
    let (st, _) = rep.stop_within(Duration::from_secs(30));
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(st.success(), "{log}");
    assert!(
        !log.contains("ERROR")
            && !log.contains("full level-0 image")
            && log.contains("continuing from the WAL without a full image")
            && log.contains("compaction complete"),
        "the new allocation did not simply continue the replica: {log}"
    );
    assert_restores_equal(dir.path(), &url, None, &db2);
}

/// Uploads fail (level 0 of the replica is not a directory) while the application commits;
/// the first pending staged file is lost; SIGTERM; the replica comes back during the
/// shutdown window. The final upload finds the hole, stages a full image, uploads it and
/// exits 0 with every change in the replica (it used to exit 0 without them).
#[test]
fn a_staged_file_lost_before_shutdown_is_healed_by_the_final_upload() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    let url = format!("file://{}", root.display());
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let cfg = write_config_with(
        dir.path(),
        &db,
        Target::File(&root),
        "shutdown-sync-timeout: 30s\nshutdown-sync-interval: 200ms\nlevels:\n  - interval: 1h\n",
    );
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    std::thread::sleep(Duration::from_secs(2));
    let (l0, aside) = (root.join("ltx/0"), root.join("ltx/0.aside"));
    std::fs::rename(&l0, &aside).unwrap();
    std::fs::write(&l0, b"not a directory").unwrap();
    let staging = dir.path().join(".app.db-litestream/ltx/0");
    let before = ltx_files(&staging);
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "2", "--writer", "1"],
    ));
    std::thread::sleep(Duration::from_millis(1500)); // staged, not uploaded
    let pending: Vec<_> = ltx_files(&staging)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(
        pending.len() >= 2,
        "nothing pending: {pending:?} {}",
        rep.log_text()
    );
    std::fs::remove_file(&pending[0]).unwrap();
    unsafe { libc::kill(rep.pid(), libc::SIGTERM) };
    std::thread::sleep(Duration::from_secs(1)); // the final upload fails and retries
    std::fs::remove_file(&l0).unwrap();
    std::fs::rename(&aside, &l0).unwrap();
    let log_path = rep.log.clone();
    let st = rep.wait_exit(Duration::from_secs(40));
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(st.success(), "{log}");
    assert!(log.contains("do not continue the replica"), "{log}");
    assert!(
        log.contains("every committed change is in the replica"),
        "{log}"
    );
    assert_restores_equal(dir.path(), &url, None, &db);
}

/// A level-1 file disappears from the replica before level 2 compacts it (a lost object):
/// the compaction fails once, the check that follows takes the listing as the index, a
/// snapshot covers the hole, and level 2 continues after it. It used to fail on every
/// tick until a restart ("35 more failures in the last 30s").
#[test]
fn a_lost_level1_file_is_healed_by_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    let url = format!("file://{}", root.display());
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let yml = "snapshot:\n  interval: 1h\nlevels:\n  - interval: 1s\n  - interval: 3s\n";
    let cfg = write_config_with(dir.path(), &db, Target::File(&root), yml);
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    let writer = load(&db, &["--rate", "50", "--duration", "14", "--writer", "1"]);
    std::thread::sleep(Duration::from_secs(3));
    let max_of =
        |p: &std::path::PathBuf| p.file_name().unwrap().to_string_lossy()[17..33].to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let lost = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "level 2 never lagged level 1"
        );
        let l2 = ltx_files(&root.join("ltx/2"))
            .last()
            .map(max_of)
            .unwrap_or_default();
        let pending: Vec<_> = ltx_files(&root.join("ltx/1"))
            .into_iter()
            .filter(|p| max_of(p) > l2)
            .collect();
        if let Some(p) = pending.first() {
            std::fs::remove_file(p).unwrap();
            break max_of(p);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    finish_load(writer);
    std::thread::sleep(Duration::from_secs(5));
    let log_path = rep.log.clone();
    let (st, _) = rep.stop_within(Duration::from_secs(30));
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(st.success(), "{log}");
    assert!(
        !log.contains("still failing"),
        "the failure did not heal: {log}"
    );
    let after_loss = ltx_files(&root.join("ltx/2"))
        .iter()
        .filter(|p| max_of(p) > lost)
        .count();
    assert!(
        after_loss >= 1,
        "level 2 stopped at the lost file {lost}: {log}"
    );
    assert!(
        ltx_files(&root.join("ltx/9")).len() >= 2,
        "no healing snapshot: {log}"
    );
    assert_restores_equal(dir.path(), &url, None, &db);
}
