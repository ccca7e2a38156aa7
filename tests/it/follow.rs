//! `restore -f`: a warm standby following a primary on a real S3 server.

use std::path::Path;
use std::time::{Duration, Instant};

use liteship::replica::ReplicaClient;

use crate::support::cli::{liteship, s};
use crate::support::oracle::{Target, write_config_with};
use crate::support::replicator::{Replicator, content_hash, finish_load, load};
use crate::support::s3::{TestBucket, own_garage};
use crate::support::sqlite::integrity_check;

/// A follower process; stopped with SIGTERM.
struct Follower {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Follower {
    fn start(dir: &Path, out: &Path, tb: &TestBucket) -> Follower {
        let log = dir.join(format!("follow-{}.log", crate::support::random_hex(4)));
        let f = std::fs::File::create(&log).unwrap();
        let child = liteship()
            .env(
                "AWS_ACCESS_KEY_ID",
                tb.config.access_key_id.as_deref().unwrap(),
            )
            .env(
                "AWS_SECRET_ACCESS_KEY",
                tb.config.secret_access_key.as_deref().unwrap(),
            )
            .args(["restore", "-f", "-o", s(out), &tb.url()])
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Follower { child, log }
    }

    fn stop(mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = crate::support::replicator::wait_timeout(&mut self.child, Duration::from_secs(20))
            .expect("follower did not stop");
        let log = std::fs::read_to_string(&self.log).unwrap();
        assert!(st.success(), "{log}");
        log
    }
}

fn standby_txid(out: &Path) -> u64 {
    std::fs::read_to_string(liteship::restore::follow::txid_path(out))
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
        .unwrap_or(0)
}

/// Under a steady write load the standby stays within one poll interval (plus one apply)
/// of what the primary uploaded, every read of it is a consistent database, it survives a
/// restart of itself and a retention gap (rebuilt from the newest snapshot), and it equals
/// the source once the writer stops.
#[tokio::test(flavor = "multi_thread")]
async fn follow_mode_keeps_a_consistent_standby() {
    let srv = own_garage();
    let tb = TestBucket::on(&srv).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let standby = dir.path().join("standby.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let cfg = write_config_with(
        dir.path(),
        &db,
        Target::S3(&tb.config),
        "snapshot:\n  interval: 2s\n  retention: 1h\n",
    );
    let primary = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    let mut follower = Follower::start(dir.path(), &standby, &tb);
    let writer = load(&db, &["--rate", "100", "--duration", "14", "--writer", "1"]);
    let (t0, mut worst, mut pending) =
        (Instant::now(), Duration::ZERO, Vec::<(u64, Instant)>::new());
    let mut restarted = false;
    while t0.elapsed() < Duration::from_secs(14) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(r) = primary.metric("liteship_remote_txid") {
            pending.push((r as u64, Instant::now()));
        }
        let have = standby_txid(&standby);
        pending.retain(|(r, at)| {
            if have >= *r {
                worst = worst.max(at.elapsed());
                false
            } else {
                true
            }
        });
        if standby.exists() && t0.elapsed().as_millis() % 1000 < 100 {
            assert_eq!(
                integrity_check(&standby),
                "ok",
                "a reader saw an inconsistent standby"
            );
        }
        if !restarted && t0.elapsed() > Duration::from_secs(7) {
            follower.stop();
            follower = Follower::start(dir.path(), &standby, &tb);
            restarted = true;
        }
    }
    finish_load(writer);
    let deadline = Instant::now() + Duration::from_secs(20);
    while content_hash_or_zero(&standby) != content_hash(&db) {
        assert!(Instant::now() < deadline, "the standby did not catch up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = follower.stop();
    assert!(log.contains("resuming the standby"), "{log}");
    eprintln!("follow: worst delay from upload to standby {worst:?}");
    assert!(
        worst <= Duration::from_millis(3500),
        "standby lagged {worst:?} behind the uploads"
    );

    // A retention gap: the files after the standby's position are gone; a newer snapshot
    // exists. The standby says so and rebuilds.
    let pos = standby_txid(&standby);
    finish_load(load(
        &db,
        &["--rate", "100", "--duration", "2", "--writer", "2"],
    ));
    std::thread::sleep(Duration::from_secs(5)); // a snapshot window passes
    assert!(primary.stop().success());
    let snap = tb.replica.list(9).await.unwrap().last().unwrap().max_txid;
    assert!(
        snap > pos + 1,
        "no snapshot beyond the standby ({pos} vs {snap})"
    );
    for level in 0..9u8 {
        let doomed: Vec<(u64, u64)> = tb
            .replica
            .list(level)
            .await
            .unwrap()
            .iter()
            .filter(|f| f.max_txid > pos && f.min_txid <= snap)
            .map(|f| (f.min_txid, f.max_txid))
            .collect();
        tb.replica.delete(level, &doomed).await.unwrap();
    }
    let follower = Follower::start(dir.path(), &standby, &tb);
    let deadline = Instant::now() + Duration::from_secs(20);
    // The rebuild is done when the follower says so: this loop's own reads of the
    // standby can make one attempt meet "database is locked" (it is retried).
    let rebuilt = || std::fs::read_to_string(&follower.log).unwrap_or_default();
    while content_hash_or_zero(&standby) != content_hash(&db)
        || !rebuilt().contains("standby restored")
    {
        assert!(
            Instant::now() < deadline,
            "the standby did not rebuild: {}",
            rebuilt()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = follower.stop();
    assert!(
        log.contains("cannot follow") && log.contains("standby restored"),
        "{log}"
    );
    assert_eq!(integrity_check(&standby), "ok");

    // Promotion: the primary is stopped and the follower caught up; `replicate` on the
    // standby continues the same replica's history without -allow-new-history, and both
    // restorers agree with the promoted database.
    let cfg = write_config_with(
        dir.path(),
        &standby,
        Target::S3(&tb.config),
        "snapshot:\n  interval: 1h\n",
    );
    let promoted = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    finish_load(load(
        &standby,
        &["--rate", "100", "--duration", "1", "--writer", "3"],
    ));
    let log = promoted.log_text();
    assert!(promoted.stop().success(), "{log}");
    assert!(
        !log.contains("refusing") && !log.contains("ERROR"),
        "promotion was not a plain continuation: {log}"
    );
    crate::support::replicator::assert_restores_equal(
        dir.path(),
        &tb.url(),
        Some(&tb.config),
        &standby,
    );
}

fn content_hash_or_zero(p: &Path) -> u64 {
    if !p.exists() {
        return 0;
    }
    std::panic::catch_unwind(|| content_hash(p)).unwrap_or(0)
}
