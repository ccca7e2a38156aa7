//! Edge cases from the spec's list of recent Litestream fixes (section 7) that need a
//! hand-made local state or an injected storage fault: #13 (compaction resumes a dropped
//! remote read and prefers local level-0 copies), #16 (a position at the WAL header with a
//! salt mismatch), #24b (a failed upload does not hang compaction).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use liteship::config::{Config, DbConfig};
use liteship::db::Meta;
use liteship::ltx::{Encoder, decode_all};
use liteship::replica::file::FileReplica;
use liteship::replica::url::ReplicaUrl;
use liteship::replica::{ReplicaClient, SNAPSHOT_LEVEL};
use liteship::replicate::health::Health;
use liteship::replicate::metrics::Metrics;
use liteship::replicate::shutdown::{self, ShutdownTrigger};
use liteship::replicate::{DbOutcome, DbReplicator, Globals};
use tokio::task::JoinHandle;

use crate::support::cli::s;
use crate::support::faults::Flaky;
use crate::support::replicator::{Replicator, assert_restores_equal, finish_load, load};

fn file_url(root: &Path) -> String {
    format!("file://{}", root.display())
}

/// Rewrites the newest staged level-0 file (the local position) with WALOffset 32 and
/// WALSize 0, as Litestream writes after an empty WAL segment; `salt_mask` flips the salts.
/// The replica's copy (file backend at `root`) is replaced too, as if that file had been
/// uploaded this way, so that the local state still agrees with the replica.
fn rewrite_position_at_wal_header(db: &Path, root: &Path, salt_mask: u32) {
    let meta = Meta::new(db, None);
    let txid = *meta.staged().unwrap().last().expect("a staged position");
    let path = meta.l0_path(txid);
    let f = decode_all(&std::fs::read(&path).unwrap()).unwrap();
    let mut h = f.header;
    h.wal_offset = 32;
    h.wal_size = 0;
    h.wal_salt1 ^= salt_mask;
    h.wal_salt2 ^= salt_mask;
    let mut enc = Encoder::new(Vec::new(), h).unwrap();
    for (pgno, page) in &f.pages {
        enc.write_page(*pgno, page).unwrap();
    }
    enc.set_post_apply_checksum(f.trailer.post_apply_checksum);
    let (bytes, _) = enc.finish().unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let remote = root.join("ltx/0").join(path.file_name().unwrap());
    assert!(remote.exists(), "the position was uploaded");
    std::fs::write(remote, &bytes).unwrap();
}

fn full_images(rep: &Replicator) -> f64 {
    rep.metric("liteship_full_level0_images").unwrap_or(0.0)
}

/// Spec 7 #16 (Litestream #900): a local position with WALOffset = 32 and WALSize = 0.
/// With salts that no longer match the WAL, continuity cannot be proven and a full level-0
/// image is written; with matching salts the WAL is read again from its first frame (no
/// underflow, no full image). Both ways every restore equals the source.
#[test]
fn position_at_wal_header() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    let url = file_url(&root);
    finish_load(load(&db, &["--rate", "100", "--duration", "0.5"]));
    // Held open throughout, so that the WAL is not checkpointed away when the writers exit.
    let keep = rusqlite::Connection::open(&db).unwrap();
    keep.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap();
    for (round, mask) in [0x5a5a_5a5a_u32, 0].into_iter().enumerate() {
        let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
        let writer = (round + 1).to_string();
        let args = ["--rate", "100", "--duration", "0.5", "--writer", &writer];
        finish_load(load(&db, &args));
        assert!(rep.stop().success());
        rewrite_position_at_wal_header(&db, &root, mask);
        let writer = (round + 10).to_string();
        let args = ["--rate", "100", "--duration", "0.5", "--writer", &writer];
        finish_load(load(&db, &args));
        let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
        // The first sync after start is the one that meets the rewritten position.
        let synced = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            rep.metric("litestream_sync_count").unwrap_or(0.0) >= 1.0
        });
        assert!(synced, "no sync within 10 s: {}", rep.log_text());
        let full = full_images(&rep);
        let log = rep.log_text();
        assert!(rep.stop().success(), "{log}");
        if mask != 0 {
            assert_eq!(full, 1.0, "salt mismatch must force a full image: {log}");
            assert!(log.contains("continuity could not be proven"), "{log}");
        } else {
            assert_eq!(full, 0.0, "matching salts continue incrementally: {log}");
        }
        assert_restores_equal(dir.path(), &url, None, &db);
    }
    drop(keep);
}

/// A replicator run inside the test process, over a (fault-injecting) client.
struct InProcess {
    stop: ShutdownTrigger,
    task: JoinHandle<DbOutcome>,
    metrics: Arc<Metrics>,
    label: String,
}

impl InProcess {
    /// Compaction into level 1 every second and into level 2 every 2 s; one snapshot.
    fn start(db: &Path, url: &str, client: Arc<dyn ReplicaClient>) -> InProcess {
        let cfg = DbConfig::new(db.to_path_buf(), ReplicaUrl::parse(url).unwrap());
        let g = Globals {
            levels: vec![Duration::from_secs(1), Duration::from_secs(2)],
            snapshot_interval: Duration::from_secs(3600),
            l0_retention_check_interval: Duration::from_secs(1),
            shutdown_sync_timeout: Duration::from_secs(10),
            shutdown_sync_interval: Duration::from_millis(200),
            ..Globals::from_config(&Config::default(), 1 << 30, false)
        };
        let metrics = Arc::new(Metrics::new());
        let label = db.display().to_string();
        let health = Arc::new(Health::new(label.clone(), metrics.clone()));
        let (stop, rx) = shutdown::channel();
        let r = DbReplicator::new(cfg, Arc::new(g), client, metrics.clone(), health);
        let task = tokio::spawn(r.run(rx));
        InProcess {
            stop,
            task,
            metrics,
            label,
        }
    }

    fn maintenance_errors(&self) -> u64 {
        self.metrics
            .maintenance_errors
            .with_label_values(&[self.label.as_str()])
            .get()
    }

    /// Stops it as SIGTERM would; it must finish (final upload included) within 20 s.
    async fn stop(self) -> bool {
        self.stop.stop(Duration::from_secs(10));
        let outcome = tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("replicator did not stop within 20 s")
            .unwrap();
        matches!(outcome, DbOutcome::Durable { .. })
    }
}

/// Waits (up to 30 s) until `level` of the replica holds `max_txid` or more.
async fn wait_level(client: &FileReplica, level: u8, max_txid: u64) -> u64 {
    for _ in 0..300 {
        let got = client
            .list(level)
            .await
            .unwrap()
            .last()
            .map_or(0, |f| f.max_txid);
        if got >= max_txid.max(1) {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("level {level} did not reach {max_txid:016x} within 30 s");
}

async fn write_for(db: &Path, secs: &str, writer: &str) -> u64 {
    let child = load(
        db,
        &["--rate", "100", "--duration", secs, "--writer", writer],
    );
    tokio::task::spawn_blocking(move || finish_load(child))
        .await
        .unwrap()
}

/// Spec 7 #13 (Litestream #1326, #760): compaction into level 2 reads level-1 files from the
/// replica, and those reads break off eight times; each is resumed where it stopped, so no
/// compaction fails. Level-0 inputs come from the local staging copies (never read back).
#[tokio::test(flavor = "multi_thread")]
async fn compaction_resumes_dropped_reads_and_prefers_local_level0() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    let url = file_url(&root);
    write_for(&db, "0.3", "1").await;
    let flaky = Arc::new(Flaky::new(FileReplica::new(&root), 8, 512));
    let rep = InProcess::start(&db, &url, flaky.clone());
    write_for(&db, "6", "2").await;
    let plain = FileReplica::new(&root);
    let l0 = wait_level(&plain, 0, 0).await;
    wait_level(&plain, 2, l0).await;
    assert_eq!(rep.maintenance_errors(), 0, "a compaction failed");
    assert!(rep.stop().await, "final upload incomplete");
    assert_eq!(
        flaky.breaks_left.load(Ordering::SeqCst),
        0,
        "the reads did not break off as injected"
    );
    let levels = flaky.opened_levels.lock().unwrap().clone();
    assert!(
        levels.iter().all(|l| *l != 0),
        "level-0 inputs were downloaded instead of read from staging: {levels:?}"
    );
    assert!(levels.contains(&1), "level 1 was never read: {levels:?}");
    assert!(!plain.list(SNAPSHOT_LEVEL).await.unwrap().is_empty());
    assert_restores_equal(dir.path(), &url, None, &db);
}

/// Spec 7 #24b (Litestream #1286): the uploads of compacted files fail three times. Each
/// failure is counted and retried on the next tick; level-0 uploads go on meanwhile,
/// compaction catches up once the server recovers, and shutdown is not held up.
#[tokio::test(flavor = "multi_thread")]
async fn failed_compaction_upload_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("replica");
    let url = file_url(&root);
    write_for(&db, "0.3", "1").await;
    let flaky = Arc::new(Flaky::new(FileReplica::new(&root), 0, 0).failing_writes(3, 1));
    let rep = InProcess::start(&db, &url, flaky.clone());
    let plain = FileReplica::new(&root);
    write_for(&db, "2", "2").await;
    let first = wait_level(&plain, 0, 0).await;
    write_for(&db, "2", "3").await;
    let later = wait_level(&plain, 0, first + 1).await;
    assert!(later > first, "level-0 uploads stopped");
    wait_level(&plain, 2, later).await;
    assert_eq!(flaky.write_failures_left.load(Ordering::SeqCst), 0);
    assert!(
        rep.maintenance_errors() >= 1,
        "the failed compactions were not counted"
    );
    let started = std::time::Instant::now();
    assert!(rep.stop().await, "final upload incomplete");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown held up"
    );
    assert_restores_equal(dir.path(), &url, None, &db);
}
