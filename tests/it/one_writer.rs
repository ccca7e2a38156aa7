//! One history per replica: the writer lease, create-only uploads, one replicator per
//! database on a host, database identity, and the config cases, with real processes.
//! The lease scenarios run against moto (which honours conditional writes; Garage 2.5.0
//! ignores them, which is tested too). In every case the final restore equals exactly one
//! writer's history and the loser is loud (ERROR, /readyz 503, exit 1).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::cli::{liteship, output_within, restore, s, text};
use crate::support::oracle::{Target, write_config_with};
use crate::support::replicator::{Replicator, content_hash, finish_load, load};
use crate::support::s3::{S3Server, TestBucket};
use crate::support::sqlite::integrity_check;

/// A database of an "allocation" and its config on the shared replica.
struct Alloc {
    db: PathBuf,
    cfg: PathBuf,
}

fn alloc(dir: &Path, name: &str, tb: &TestBucket, ttl: &str) -> Alloc {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let db = sub.join("app.db");
    let cfg = write_config_with(
        &sub,
        &db,
        Target::S3(&tb.config),
        &format!("lease-ttl: {ttl}\n"),
    );
    Alloc { db, cfg }
}

fn start(dir: &Path, a: &Alloc) -> Replicator {
    Replicator::start(dir, &["-config", s(&a.cfg)], None)
}

async fn moto_bucket() -> (&'static S3Server, TestBucket) {
    let srv = crate::support::moto::server();
    let tb = TestBucket::on(srv).await;
    (srv, tb)
}

/// Restores the replica with liteship and checks it holds exactly `want`'s rows.
fn assert_replica_is(dir: &Path, tb: &TestBucket, want: u64, what: &str) {
    let out = dir.join(format!("check-{}.db", crate::support::random_hex(6)));
    let r = restore(&["-o", s(&out), &tb.url()], Some(&tb.config));
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(integrity_check(&out), "ok");
    assert_eq!(
        content_hash(&out),
        want,
        "the replica is not {what}'s history"
    );
}

/// A rolling update with overlap: the new allocation restores and starts while the old one
/// still writes. The old one keeps the lease and wins; the new one waits, then is refused
/// (its database is behind the replica), loudly.
#[tokio::test(flavor = "multi_thread")]
async fn overlapping_allocations_the_running_one_wins() {
    let (_srv, tb) = moto_bucket().await;
    let dir = tempfile::tempdir().unwrap();
    let old = alloc(dir.path(), "old", &tb, "5s");
    finish_load(load(&old.db, &["--rate", "50", "--duration", "0.3"]));
    let rep_old = start(dir.path(), &old);
    rep_old.wait_readyz(Duration::from_secs(30), |c, _| c == 200);
    assert_eq!(rep_old.metric("liteship_lease_held"), Some(1.0));
    assert_eq!(rep_old.metric("liteship_conditional_writes"), Some(1.0));
    let w_old = load(
        &old.db,
        &["--rate", "50", "--duration", "8", "--writer", "1"],
    );
    std::thread::sleep(Duration::from_secs(1));
    let new = alloc(dir.path(), "new", &tb, "5s");
    let r = restore(&["-o", s(&new.db), &tb.url()], Some(&tb.config));
    assert!(r.status.success(), "{}", text(&r));
    let rep_new = start(dir.path(), &new);
    let (_, body) = rep_new.wait_readyz(Duration::from_secs(20), |c, b| {
        c == 503 && b.contains("writer lease held by")
    });
    assert!(body.contains(&format!("pid {}", rep_old.pid())), "{body}");
    assert_eq!(rep_new.metric("liteship_lease_held"), Some(0.0));
    let w_new = load(
        &new.db,
        &["--rate", "50", "--duration", "2", "--writer", "2"],
    );
    finish_load(w_old);
    finish_load(w_new);
    let (st, _) = rep_old.stop_within(Duration::from_secs(40));
    assert!(st.success(), "the holder's final upload");
    let (_, body) = rep_new.wait_readyz(Duration::from_secs(30), |c, b| {
        c == 503 && b.contains("refusing")
    });
    assert!(body.contains("failed"), "{body}");
    let log = rep_new.log_text();
    assert!(
        log.contains("ERROR") && log.contains("writer lease"),
        "{log}"
    );
    let (st, _) = rep_new.stop_within(Duration::from_secs(40));
    assert_eq!(st.code(), Some(1), "the loser exits 1");
    assert_replica_is(dir.path(), &tb, content_hash(&old.db), "the old allocation");
}

/// A node that is lost but still running: its replicator is frozen; the new allocation
/// restores, waits for the lease to expire, takes it over and replicates. When the old
/// replicator wakes up, its renewal fails: it stops uploading, loudly.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_node_that_wakes_up_loses_the_lease() {
    let (_srv, tb) = moto_bucket().await;
    let dir = tempfile::tempdir().unwrap();
    let old = alloc(dir.path(), "old", &tb, "4s");
    finish_load(load(&old.db, &["--rate", "50", "--duration", "0.3"]));
    let rep_old = start(dir.path(), &old);
    rep_old.wait_readyz(Duration::from_secs(30), |c, _| c == 200);
    finish_load(load(
        &old.db,
        &["--rate", "50", "--duration", "1", "--writer", "1"],
    ));
    std::thread::sleep(Duration::from_secs(1));
    unsafe { libc::kill(rep_old.pid(), libc::SIGSTOP) };
    // The old application keeps writing on the lost node.
    let w_old = load(
        &old.db,
        &["--rate", "20", "--duration", "10", "--writer", "3"],
    );
    let new = alloc(dir.path(), "new", &tb, "4s");
    let r = restore(&["-o", s(&new.db), &tb.url()], Some(&tb.config));
    assert!(r.status.success(), "{}", text(&r));
    let rep_new = start(dir.path(), &new);
    rep_new.wait_readyz(Duration::from_secs(30), |c, _| c == 200);
    assert!(
        rep_new.log_text().contains("taking over the writer lease"),
        "{}",
        rep_new.log_text()
    );
    finish_load(load(
        &new.db,
        &["--rate", "50", "--duration", "2", "--writer", "2"],
    ));
    unsafe { libc::kill(rep_old.pid(), libc::SIGCONT) };
    finish_load(w_old);
    let (_, body) = rep_old.wait_readyz(Duration::from_secs(30), |c, b| {
        c == 503 && b.contains("taken over by")
    });
    assert!(body.contains(&format!("pid {}", rep_new.pid())), "{body}");
    let (st, _) = rep_old.stop_within(Duration::from_secs(40));
    assert_eq!(st.code(), Some(1), "the loser exits 1");
    let (st, _) = rep_new.stop_within(Duration::from_secs(40));
    assert!(st.success());
    assert_replica_is(dir.path(), &tb, content_hash(&new.db), "the new allocation");
}

/// The holder is killed: a successor waits about one TTL, then takes over; a holder that
/// stops cleanly releases the lease and its successor starts at once.
#[tokio::test(flavor = "multi_thread")]
async fn crash_waits_for_the_ttl_clean_handover_does_not() {
    let (_srv, tb) = moto_bucket().await;
    let dir = tempfile::tempdir().unwrap();
    let a = alloc(dir.path(), "a", &tb, "6s");
    finish_load(load(&a.db, &["--rate", "50", "--duration", "0.3"]));
    let rep = start(dir.path(), &a);
    rep.wait_readyz(Duration::from_secs(30), |c, _| c == 200);
    finish_load(load(
        &a.db,
        &["--rate", "50", "--duration", "1", "--writer", "1"],
    ));
    std::thread::sleep(Duration::from_secs(1));
    rep.kill9();
    let b = alloc(dir.path(), "b", &tb, "6s");
    assert!(
        restore(&["-o", s(&b.db), &tb.url()], Some(&tb.config))
            .status
            .success()
    );
    let t0 = Instant::now();
    let rep = start(dir.path(), &b);
    rep.wait_readyz(Duration::from_secs(30), |c, _| c == 200);
    let after_crash = t0.elapsed();
    assert!(
        after_crash >= Duration::from_secs(3) && after_crash < Duration::from_secs(15),
        "takeover after a crash took {after_crash:?} (TTL 6 s)"
    );
    finish_load(load(
        &b.db,
        &["--rate", "50", "--duration", "1", "--writer", "2"],
    ));
    assert!(rep.stop().success());
    let c = alloc(dir.path(), "c", &tb, "6s");
    assert!(
        restore(&["-o", s(&c.db), &tb.url()], Some(&tb.config))
            .status
            .success()
    );
    let t0 = Instant::now();
    let rep = start(dir.path(), &c);
    rep.wait_readyz(Duration::from_secs(30), |c, _| c == 200);
    let handover = t0.elapsed();
    assert!(
        handover < Duration::from_secs(3),
        "clean handover took {handover:?}"
    );
    assert!(
        !rep.log_text().contains("taking over"),
        "{}",
        rep.log_text()
    );
    assert!(rep.stop().success());
    assert_replica_is(dir.path(), &tb, content_hash(&c.db), "the last allocation");
}

/// Garage ignores conditional writes: said once at start, loudly, with its consequence.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_conditional_writes_is_named() {
    let tb = TestBucket::new().await;
    let dir = tempfile::tempdir().unwrap();
    let a = alloc(dir.path(), "a", &tb, "30s");
    finish_load(load(&a.db, &["--rate", "50", "--duration", "0.3"]));
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&a.cfg)], None);
    assert_eq!(rep.metric("liteship_conditional_writes"), Some(0.0));
    let log = rep.log_text();
    assert!(
        log.contains("WARN") && log.contains("ignores conditional writes"),
        "{log}"
    );
    assert!(rep.stop().success());
}

#[test]
fn two_replicators_of_one_database_on_one_host() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let url = format!("file://{}", dir.path().join("replica").display());
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    let o = output_within(
        liteship().args(["replicate", s(&db), &url]),
        Duration::from_secs(20),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("already being replicated") && t.contains(&format!("pid {}", rep.pid())),
        "{t}"
    );
    assert!(rep.stop().success());
}

/// Two copies of one database (two allocations) on one file replica: the second waits for
/// the lease (the file backend's compare-and-swap under flock).
#[test]
fn file_replica_lease_blocks_a_second_writer() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    let a = dir.path().join("a.db");
    finish_load(load(&a, &["--rate", "50", "--duration", "0.3"]));
    let rep_a = Replicator::start_ready(dir.path(), &[s(&a), &url], None);
    let b = dir.path().join("b.db");
    assert!(restore(&["-o", s(&b), &url], None).status.success());
    let rep_b = Replicator::start(dir.path(), &[s(&b), &url], None);
    let (_, body) = rep_b.wait_readyz(Duration::from_secs(20), |c, b| {
        c == 503 && b.contains("writer lease held by")
    });
    assert!(body.contains(&format!("pid {}", rep_a.pid())), "{body}");
    finish_load(load(
        &a,
        &["--rate", "50", "--duration", "1", "--writer", "2"],
    ));
    assert!(rep_a.stop().success());
    let (st, _) = rep_b.stop_within(Duration::from_secs(40));
    assert_eq!(st.code(), Some(1));
    let out = dir.path().join("check.db");
    assert!(restore(&["-o", s(&out), &url], None).status.success());
    assert_eq!(content_hash(&out), content_hash(&a));
}

/// Issue case 2: the database deleted and an unrelated one created with the same name while
/// replicate was stopped (the staging directory stayed): refused; the replica keeps the old
/// history.
#[test]
fn database_replaced_before_start_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    finish_load(load(&db, &["--rate", "100", "--duration", "1"]));
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    finish_load(load(
        &db,
        &["--rate", "100", "--duration", "0.5", "--writer", "2"],
    ));
    assert!(rep.stop().success());
    let before = content_hash(&db);
    for side in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(liteship::db::sidecar(&db, side));
    }
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "0.3", "--writer", "9"],
    ));
    let rep = Replicator::start(dir.path(), &[s(&db), &url], None);
    let (_, body) = rep.wait_readyz(Duration::from_secs(20), |c, b| {
        c == 503 && b.contains("replaced")
    });
    assert!(body.contains("failed"), "{body}");
    assert_eq!(rep.metric("liteship_db_refused"), Some(1.0));
    let (st, _) = rep.stop_within(Duration::from_secs(20));
    assert_eq!(st.code(), Some(1));
    let out = dir.path().join("check.db");
    assert!(restore(&["-o", s(&out), &url], None).status.success());
    assert_eq!(
        content_hash(&out),
        before,
        "the replica kept the old history"
    );
}

/// The database replaced while replicate runs: noticed at the next sync; nothing of the
/// new file is published.
#[test]
fn database_replaced_while_running_stops_publishing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    finish_load(load(&db, &["--rate", "100", "--duration", "0.5"]));
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    finish_load(load(
        &db,
        &["--rate", "100", "--duration", "1", "--writer", "2"],
    ));
    std::thread::sleep(Duration::from_secs(2));
    let before = content_hash(&db);
    for side in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(liteship::db::sidecar(&db, side));
    }
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "1", "--writer", "9"],
    ));
    let (_, body) = rep.wait_readyz(Duration::from_secs(10), |c, b| {
        c == 503 && b.contains("replaced")
    });
    assert!(body.contains("failed"), "{body}");
    assert_eq!(rep.metric("liteship_db_refused"), Some(1.0));
    let log = rep.log_text();
    assert!(
        log.contains("ERROR") && log.contains("was replaced"),
        "{log}"
    );
    let (st, _) = rep.stop_within(Duration::from_secs(20));
    assert_eq!(st.code(), Some(1));
    let out = dir.path().join("check.db");
    assert!(restore(&["-o", s(&out), &url], None).status.success());
    assert_eq!(
        content_hash(&out),
        before,
        "the replica kept the old history"
    );
}

#[test]
fn config_with_a_shared_replica_or_a_repeated_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let r = dir.path().join("replica");
    let run = |yml: String| {
        let cfg = dir.path().join("c.yml");
        std::fs::write(&cfg, yml).unwrap();
        output_within(
            liteship().args(["replicate", "-config", s(&cfg)]),
            Duration::from_secs(20),
        )
    };
    let o = run(format!(
        "dbs:\n  - path: {}\n    replica: {{url: file://{}}}\n  - path: {}\n    replica: {{url: file://{}}}\n",
        a.display(),
        r.display(),
        b.display(),
        r.display()
    ));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("dbs[0]")
            && text(&o).contains("dbs[1]")
            && text(&o).contains("same replica"),
        "{}",
        text(&o)
    );
    let o = run(format!(
        "dbs:\n  - path: {}\n    replica: {{url: file://{}/1}}\n  - path: {}\n    replica: {{url: file://{}/2}}\n",
        a.display(),
        r.display(),
        a.display(),
        r.display()
    ));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("same database"), "{}", text(&o));
}

/// Nomad migrates a sticky ephemeral disk by copying it: the database, its staging
/// directory and its marker arrive as new files. The copy continues the replica (its bytes
/// continue the staged position), with no prompt.
#[test]
fn a_migrated_copy_of_the_disk_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    std::fs::create_dir(&old).unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    let db = old.join("app.db");
    finish_load(load(&db, &["--rate", "100", "--duration", "0.5"]));
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    finish_load(load(
        &db,
        &["--rate", "100", "--duration", "1", "--writer", "2"],
    ));
    assert!(rep.stop().success());
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&old)
        .arg(&new)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_dir_all(&old).unwrap();
    let db = new.join("app.db");
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    finish_load(load(
        &db,
        &["--rate", "100", "--duration", "1", "--writer", "3"],
    ));
    let log = rep.log_text();
    assert!(rep.stop().success(), "{log}");
    assert!(
        !log.contains("replaced") && !log.contains("refusing"),
        "{log}"
    );
    let out = dir.path().join("check.db");
    assert!(restore(&["-o", s(&out), &url], None).status.success());
    assert_eq!(content_hash(&out), content_hash(&db));
}

/// `-restore-if-db-not-exists -exec CMD` with an application that exits at once: the stop
/// comes while the replicator starts. The start goes on (listing, lineage decision), the
/// final sync finds nothing committed since the restore, the exit is clean (it used to be
/// exit 1, "nothing of this database was replicated"), and the lease is released (a
/// successor must not wait for it to expire).
#[test]
fn an_application_that_exits_at_once_releases_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    let url = format!("file://{}", root.display());
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    assert!(rep.stop().success());
    let fresh = dir.path().join("fresh.db");
    let o = output_within(
        liteship().args([
            "replicate",
            "-restore-if-db-not-exists",
            "-exec",
            "true",
            s(&fresh),
            &url,
        ]),
        Duration::from_secs(60),
    );
    let lease: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("liteship-lease.json")).unwrap()).unwrap();
    assert_eq!(lease["released"], true, "{lease}\n{}", text(&o));
    assert!(fresh.exists(), "the restore ran: {}", text(&o));
    assert!(o.status.success(), "{}", text(&o));
}
