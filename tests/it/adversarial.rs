//! Regressions from an adversarial pass over the release binary (each test is named after
//! what broke): histories that were merged or rolled back, and faults that stayed quiet.

use std::path::Path;
use std::time::Duration;

use crate::support::cli::{liteship, output_within, restore, s, text};
use crate::support::oracle::{Target, write_config_with};
use crate::support::proxy::Proxy;
use crate::support::replicator::{Replicator, content_hash, finish_load, load, load_rows};
use crate::support::s3::TestBucket;

fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

fn restored_hash(dir: &Path, url: &str) -> u64 {
    let out = dir.join(format!("check-{}.db", crate::support::random_hex(6)));
    let r = restore(&["-o", s(&out), url], None);
    assert!(r.status.success(), "{}", text(&r));
    content_hash(&out)
}

/// A database path that is a symlink: SQLite writes the target's -wal, so liteship must
/// replicate the target (it used to watch the link's -wal, ship nothing and exit 0).
#[test]
fn symlinked_database_path_is_replicated() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    finish_load(load(
        &real.join("app.db"),
        &["--rate", "20", "--duration", "0.5"],
    ));
    let link = dir.path().join("app.db");
    std::os::unix::fs::symlink("real/app.db", &link).unwrap();
    let url = file_url(&dir.path().join("replica"));
    let rep = Replicator::start_ready(dir.path(), &[s(&link), &url], None);
    finish_load(load(
        &link,
        &["--rate", "50", "--duration", "2", "--writer", "2"],
    ));
    let log = rep.log_text();
    assert!(rep.stop().success(), "{log}");
    assert!(log.contains("symbolic link"), "{log}");
    assert_eq!(
        restored_hash(dir.path(), &url),
        content_hash(&real.join("app.db"))
    );
}

/// An older copy put in place (a new file) after a crash: refused, the replica's newest
/// state does not go back (it used to be published as a full image).
#[test]
fn older_copy_after_a_crash_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = file_url(&dir.path().join("replica"));
    finish_load(load(&db, &["--rate", "50", "--duration", "0.5"]));
    let old = dir.path().join("old.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    drop(c);
    std::fs::copy(&db, &old).unwrap();
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "2", "--writer", "2"],
    ));
    std::thread::sleep(Duration::from_secs(2));
    rep.kill9();
    let newest = restored_hash(dir.path(), &url);
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(liteship::db::sidecar(&db, side));
    }
    let tmp = dir.path().join("tmp.db");
    std::fs::copy(&old, &tmp).unwrap();
    std::fs::rename(&tmp, &db).unwrap();
    let rep = Replicator::start(dir.path(), &[s(&db), &url], None);
    let (_, body) = rep.wait_readyz(Duration::from_secs(60), |c, b| {
        c == 503 && b.contains("failed")
    });
    assert!(
        body.contains("replaced") || body.contains("older"),
        "{body}"
    );
    let (st, _) = rep.stop_within(Duration::from_secs(30));
    assert_eq!(st.code(), Some(1));
    assert_eq!(
        restored_hash(dir.path(), &url),
        newest,
        "the replica went back"
    );
}

/// The -wal file removed under a running replicator: liteship used to keep reading the
/// unlinked WAL, miss every later commit, and exit 0. Now the database fails loudly.
#[test]
fn wal_removed_while_running_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = file_url(&dir.path().join("replica"));
    finish_load(load(&db, &["--rate", "50", "--duration", "0.5"]));
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "1", "--writer", "2"],
    ));
    std::thread::sleep(Duration::from_secs(2));
    for side in ["-wal", "-shm"] {
        std::fs::remove_file(liteship::db::sidecar(&db, side)).unwrap();
    }
    finish_load(load(
        &db,
        &["--rate", "20", "--duration", "1", "--writer", "9"],
    ));
    let (_, body) = rep.wait_readyz(Duration::from_secs(20), |c, b| {
        c == 503 && b.contains("-wal")
    });
    assert!(body.contains("failed"), "{body}");
    let log = rep.log_text();
    assert!(log.contains("ERROR"), "{log}");
    let (st, _) = rep.stop_within(Duration::from_secs(30));
    assert_eq!(st.code(), Some(1));
}

/// A copy of the database that replicated to another replica (its staging advanced in
/// another history) and is then pointed at the first replica: refused. It used to be
/// merged page by page into states that never existed.
#[test]
fn staging_from_another_history_is_not_merged() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    let url = file_url(&dir.path().join("replica"));
    let other = file_url(&dir.path().join("other"));
    let db_a = a.join("app.db");
    finish_load(load(&db_a, &["--rate", "50", "--duration", "1"]));
    let rep = Replicator::start_ready(dir.path(), &[s(&db_a), &url], None);
    assert!(rep.stop().success());
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&b)
        .status()
        .unwrap();
    assert!(st.success());
    let rep = Replicator::start_ready(dir.path(), &[s(&db_a), &url], None);
    finish_load(load(
        &db_a,
        &["--rate", "20", "--duration", "1", "--writer", "1"],
    ));
    assert!(rep.stop().success());
    let db_b = b.join("app.db");
    let rep = Replicator::start_ready(dir.path(), &[s(&db_b), &other], None);
    finish_load(load(
        &db_b,
        &["--rate", "5", "--duration", "3", "--writer", "2"],
    ));
    assert!(rep.stop().success());
    let before = restored_hash(dir.path(), &url);
    let rep = Replicator::start(dir.path(), &[s(&db_b), &url], None);
    let (_, body) = rep.wait_readyz(Duration::from_secs(30), |c, b| {
        c == 503 && b.contains("refusing")
    });
    assert!(
        body.contains("another history") || body.contains("older"),
        "{body}"
    );
    let (st, _) = rep.stop_within(Duration::from_secs(30));
    assert_eq!(st.code(), Some(1));
    assert_eq!(
        restored_hash(dir.path(), &url),
        before,
        "the replica changed"
    );
    assert_eq!(before, content_hash(&db_a));
}

/// A PUT whose answer is lost, then an outage long enough for the staging limit: the
/// limit used to write other content under the same TXID, the retry met the first object
/// and the database failed ("lease taken over" by itself). Now the attempted file keeps
/// its TXID, replication recovers by itself, and a restart continues.
#[tokio::test(flavor = "multi_thread")]
async fn lost_response_then_staging_limit_recovers() {
    let srv = crate::support::moto::server();
    let tb = TestBucket::on(srv).await;
    let proxy = Proxy::start(&srv.endpoint);
    let via = liteship::replica::S3Config {
        endpoint: Some(proxy.endpoint.clone()),
        ..tb.config.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "20", "--duration", "0.3"]));
    let cfg = write_config_with(dir.path(), &db, Target::S3(&via), "");
    let rep = Replicator::start_ready(
        dir.path(),
        &["-config", s(&cfg), "-staging-limit", "40KiB"],
        None,
    );
    proxy.cmd("next reset-download 1 PUT .ltx");
    finish_load(load(
        &db,
        &[
            "--rate",
            "1",
            "--duration",
            "1",
            "--payload",
            "100",
            "--writer",
            "2",
        ],
    ));
    assert!(proxy.wait_consumed(Duration::from_secs(20)));
    proxy.cmd("random 1 refuse");
    finish_load(load(
        &db,
        &[
            "--rate",
            "20",
            "--duration",
            "6",
            "--payload",
            "800",
            "--writer",
            "3",
        ],
    ));
    // The limit is enforced at the next upload attempt, which backs off during the outage
    // (on a loaded machine that can be more than a few seconds after the writes).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while rep.metric("liteship_staging_limit_hits").unwrap_or(0.0) < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the staging limit was never hit: {}",
            rep.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    proxy.cmd("clear");
    finish_load(load(
        &db,
        &["--rate", "5", "--duration", "2", "--writer", "4"],
    ));
    rep.wait_readyz(Duration::from_secs(90), |c, _| c == 200);
    let log = rep.log_text();
    assert!(!log.contains("taken over"), "{log}");
    let (st, _) = rep.stop_within(Duration::from_secs(40));
    assert!(st.success(), "{log}");
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    finish_load(load(
        &db,
        &["--rate", "5", "--duration", "1", "--writer", "5"],
    ));
    assert!(rep.stop().success(), "a restart on the same disk continues");
    let out = dir.path().join("check.db");
    let r = restore(&["-o", s(&out), &tb.url()], Some(&tb.config));
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(content_hash(&out), content_hash(&db));
    assert!(load_rows(&out).iter().all(|r| r.2));
}

/// A second replicator of the same file through a hard link (another lock file): it must
/// not take the lease of the live first one (it used to, at once, failing both).
#[test]
fn a_hard_link_does_not_steal_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = file_url(&dir.path().join("replica"));
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let a = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    let hard = dir.path().join("hard.db");
    std::fs::hard_link(&db, &hard).unwrap();
    let b = Replicator::start(dir.path(), &[s(&hard), &url], None);
    let (_, body) = b.wait_readyz(Duration::from_secs(20), |c, b| {
        c == 503 && b.contains("lease held")
    });
    assert!(body.contains(&format!("pid {}", a.pid())), "{body}");
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "2", "--writer", "2"],
    ));
    a.wait_readyz(Duration::from_secs(10), |c, _| c == 200);
    assert!(!a.log_text().contains("taken over"), "{}", a.log_text());
    let (st, _) = b.stop_within(Duration::from_secs(30));
    assert_eq!(st.code(), Some(1));
    assert!(a.stop().success());
    assert_eq!(restored_hash(dir.path(), &url), content_hash(&db));
}

/// `file:///x/r` and `file:///x//r/` are one replica: two databases on them are a start-up
/// error (they used to start, the second waiting forever on the first's lease).
#[test]
fn equivalent_file_urls_are_one_replica() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("r");
    let cfg = dir.path().join("c.yml");
    std::fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n    replica: {{url: file://{}}}\n  - path: {}\n    replica: {{url: \"file://{}//r/\"}}\n",
            dir.path().join("a.db").display(),
            r.display(),
            dir.path().join("b.db").display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let o = output_within(
        liteship().args(["replicate", "-config", s(&cfg)]),
        Duration::from_secs(20),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("same replica"), "{}", text(&o));
}

#[test]
fn restore_json_reports_the_no_op_cases() {
    let dir = tempfile::tempdir().unwrap();
    let url = file_url(&dir.path().join("replica"));
    let out = dir.path().join("x.db");
    let o = restore(&["-json", "-if-replica-exists", "-o", s(&out), &url], None);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["skipped"], "no matching backups found");
    finish_load(load(&out, &["--rate", "10", "--duration", "0.2"]));
    let o = restore(&["-json", "-if-db-not-exists", "-o", s(&out), &url], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["skipped"], "database already exists");
}
