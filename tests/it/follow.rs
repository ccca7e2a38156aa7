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

    fn stop(&mut self) -> String {
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
    let lag = follow_under_load(&db, &standby, &tb, &primary, &mut follower);
    finish_load(writer);
    let deadline = Instant::now() + Duration::from_secs(20);
    while content_hash_or_zero(&standby) != content_hash(&db) {
        assert!(Instant::now() < deadline, "the standby did not catch up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = follower.stop();
    assert!(log.contains("resuming the standby"), "{log}");
    eprintln!(
        "follow: worst delay from upload to standby {:?} while running, {:?} from a restart to caught up",
        lag.steady, lag.resume
    );
    // Polls start every second; one poll (a listing, a GET, an apply) takes well under a
    // second here. The slack is for a loaded CI machine.
    assert!(
        lag.steady <= Duration::from_millis(3000),
        "standby lagged {:?} behind the uploads",
        lag.steady
    );
    // A resumed follower polls at once.
    assert!(
        lag.resume <= Duration::from_millis(3000),
        "a restarted standby took {:?} to catch up",
        lag.resume
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
    let mut follower = Follower::start(dir.path(), &standby, &tb);
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

/// The worst delay from an upload (the primary's `liteship_remote_txid`) to the standby
/// holding it, while the follower runs, and from a restart of the follower (at 7 s) to the
/// standby holding everything uploaded before it.
struct Lag {
    steady: Duration,
    resume: Duration,
}

fn follow_under_load(
    db: &Path,
    standby: &Path,
    tb: &TestBucket,
    primary: &Replicator,
    follower: &mut Follower,
) -> Lag {
    let dir = db.parent().unwrap();
    let t0 = Instant::now();
    let mut lag = Lag {
        steady: Duration::ZERO,
        resume: Duration::ZERO,
    };
    // (txid uploaded, seen at, seen before the restarted follower caught up)
    let mut pending = Vec::<(u64, Instant, bool)>::new();
    let mut restart: Option<(Instant, u64)> = None; // (restarted at, uploaded by then)
    while t0.elapsed() < Duration::from_secs(14) {
        std::thread::sleep(Duration::from_millis(100));
        let resuming = restart.is_some_and(|(_, r)| standby_txid(standby) < r);
        if let Some(r) = primary.metric("liteship_remote_txid") {
            pending.push((r as u64, Instant::now(), resuming));
        }
        let have = standby_txid(standby);
        pending.retain(|&(r, at, during_restart)| {
            if have < r {
                return true;
            }
            if !during_restart {
                lag.steady = lag.steady.max(at.elapsed());
            }
            false
        });
        if let Some((at, r)) = restart
            && have >= r
            && lag.resume.is_zero()
        {
            lag.resume = at.elapsed();
        }
        if standby.exists() && t0.elapsed().as_millis() % 1000 < 100 {
            assert_eq!(
                integrity_check(standby),
                "ok",
                "a reader saw an inconsistent standby"
            );
        }
        if restart.is_none() && t0.elapsed() > Duration::from_secs(7) {
            follower.stop();
            *follower = Follower::start(dir, standby, tb);
            let uploaded = primary.metric("liteship_remote_txid").unwrap_or(0.0) as u64;
            pending.iter_mut().for_each(|p| p.2 = true);
            restart = Some((Instant::now(), uploaded));
        }
    }
    assert!(
        restart.is_some() && !lag.resume.is_zero(),
        "the restarted follower never caught up"
    );
    lag
}

/// A file put in the standby's place with the `-txid` file copied next to it is refused at
/// resume, untouched; the real standby resumes. (Applying the replica's pages onto another
/// database made it corrupt: adversarial pass F4.)
#[test]
fn a_replaced_standby_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    let url = format!("file://{}", root.display());
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "1", "--writer", "1"],
    ));
    let standby = dir.path().join("standby.db");
    let follow = |out: &Path| {
        let mut c = liteship()
            .args(["restore", "-f", "-o", s(out), &url])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while standby_txid(out) == 0 {
            assert!(
                Instant::now() < deadline,
                "the follower never wrote its position"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        assert!(c.wait().unwrap().success());
    };
    follow(&standby);
    assert!(rep.stop().success());

    // Another database takes the standby's place; its -txid is copied over.
    let other = dir.path().join("other.db");
    finish_load(load(
        &other,
        &["--rate", "50", "--duration", "0.3", "--writer", "9"],
    ));
    let before = content_hash(&other);
    std::fs::rename(&other, &standby).unwrap();
    let r = crate::support::cli::restore(&["-f", "-o", s(&standby), &url], None);
    let err = crate::support::cli::text(&r);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is not the standby this follower wrote") && err.contains(s(&standby)),
        "{err}"
    );
    assert_eq!(
        content_hash(&standby),
        before,
        "the replaced file was written to"
    );
}
