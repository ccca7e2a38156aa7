//! Network faults through the real S3 client: `liteship-faultproxy` between liteship and a
//! Garage server injects each fault kind (refused connections, resets mid-body both ways,
//! stalls, 500, 503 SlowDown, 403 RequestTimeTooSkewed, latency, truncated and altered
//! downloads). The CI-sized slice of the soaks in `scripts/soak/`: every kind once against
//! a running replicator and a restore, 30 kill -9 cycles with random faults, and a
//! two-minute outage.

use std::path::Path;
use std::time::{Duration, Instant};

use liteship::replica::S3Config;

use crate::support::cli::{restore, s, text};
use crate::support::oracle::{Litestream, Target, write_config_with};
use crate::support::proxy::Proxy;
use crate::support::replicator::{
    Replicator, assert_restores_equal, content_hash, finish_load, load, load_rows,
};
use crate::support::s3::{S3Server, TestBucket, own_garage};
use crate::support::sqlite::integrity_check;

/// `reset-download` on a PUT: the object is stored but the answer is lost, so the retry
/// meets an existing object (create-only) and must recognise it as its own.
const KINDS_UPLOAD: [&str; 8] = [
    "refuse",
    "reset-upload",
    "stall",
    "500",
    "503",
    "skew",
    "latency",
    "reset-download",
];

const KINDS_DOWNLOAD: [&str; 8] = [
    "refuse",
    "reset-download",
    "truncate",
    "stall",
    "500",
    "503",
    "latency",
    "corrupt",
];

/// A bucket on a Garage of the test's own, and the same bucket through a fault proxy.
struct Setup {
    _srv: S3Server,
    tb: TestBucket,
    proxy: Proxy,
    via: S3Config,
}

impl Setup {
    async fn new() -> Setup {
        let srv = own_garage();
        let tb = TestBucket::on(&srv).await;
        let proxy = Proxy::start(&srv.endpoint);
        let via = S3Config {
            endpoint: Some(proxy.endpoint.clone()),
            ..tb.config.clone()
        };
        Setup {
            _srv: srv,
            tb,
            proxy,
            via,
        }
    }

    /// The replica URL through the proxy.
    fn url_via(&self) -> String {
        self.tb.url().replace(
            self.tb.config.endpoint.as_deref().unwrap(),
            &self.proxy.endpoint,
        )
    }
}

/// Every fault kind once, on an upload of a running replicator that keeps writing: each is
/// survived (the replicator is ready again), and the final restore equals the source.
#[tokio::test(flavor = "multi_thread")]
async fn every_fault_kind_once_during_replication() {
    let st = Setup::new().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let cfg = write_config_with(dir.path(), &db, Target::S3(&st.via), "");
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    let writer = load(&db, &["--rate", "20", "--duration", "300", "--writer", "1"]);
    for kind in KINDS_UPLOAD {
        st.proxy.cmd(&format!("next {kind} 1 PUT .ltx"));
        assert!(
            st.proxy.wait_consumed(Duration::from_secs(30)),
            "{kind}: no upload met the fault"
        );
        rep.wait_readyz(Duration::from_secs(90), |c, _| c == 200);
    }
    let stats = st.proxy.cmd("stats");
    let mut w = writer;
    unsafe { libc::kill(w.id() as i32, libc::SIGTERM) };
    let _ = w.wait();
    let log = rep.log.clone();
    let (status, _) = rep.stop_within(Duration::from_secs(60));
    assert!(
        status.success(),
        "{stats}: {}",
        std::fs::read_to_string(log).unwrap()
    );
    assert_restores_equal(dir.path(), &st.tb.url(), Some(&st.tb.config), &db);
}

/// Every fault kind once on a restore's downloads: the restore either succeeds with the
/// source's content or fails loudly leaving nothing; an altered object is never accepted.
#[tokio::test(flavor = "multi_thread")]
async fn every_fault_kind_once_during_restore() {
    let st = Setup::new().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &st.tb.url()], Some(&st.tb.config));
    finish_load(load(
        &db,
        &["--rate", "100", "--duration", "2", "--writer", "2"],
    ));
    assert!(rep.stop().success());
    let want = content_hash(&db);
    for kind in KINDS_DOWNLOAD {
        st.proxy.cmd(&format!("next {kind} 1 GET .ltx"));
        let out = dir.path().join(format!("restored-{kind}.db"));
        let r = restore(
            &["-stall-timeout", "60s", "-o", s(&out), &st.url_via()],
            Some(&st.tb.config),
        );
        assert_eq!(st.proxy.pending(), 0, "{kind}: no download met the fault");
        if r.status.success() {
            assert_ne!(
                kind,
                "corrupt",
                "an altered object was accepted: {}",
                text(&r)
            );
            assert_eq!(integrity_check(&out), "ok");
            assert_eq!(content_hash(&out), want, "{kind}");
        } else {
            let t = text(&r);
            assert!(t.contains("Error:"), "{kind}: {t}");
            assert!(
                !out.exists() && !liteship::fsutil::tmp_path(&out).exists(),
                "{kind}"
            );
            if kind == "corrupt" {
                assert!(t.contains("corrupt") || t.contains("checksum"), "{t}");
            } else {
                panic!("{kind}: a transient fault failed the restore: {t}");
            }
        }
    }
}

/// 30 kill -9 cycles of the replicator under load with random network faults: every
/// restore is consistent, gap-free per writer, and holds every commit acknowledged by a
/// clean stop.
#[tokio::test(flavor = "multi_thread")]
async fn kill9_cycles_through_the_fault_proxy() {
    let st = Setup::new().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let cfg = write_config_with(dir.path(), &db, Target::S3(&st.via), "");
    st.proxy
        .cmd("random 0.05 refuse,reset-upload,reset-download,truncate,500,503,latency");
    let writer = load(&db, &["--rate", "50", "--duration", "400", "--writer", "1"]);
    let mut rng_ms = 700u64;
    for cycle in 0..30 {
        let rep = Replicator::start(dir.path(), &["-config", s(&cfg)], None);
        rng_ms = (rng_ms * 7919 + 13) % 2500 + 500;
        std::thread::sleep(Duration::from_millis(rng_ms));
        rep.kill9();
        if cycle % 10 == 9 {
            check_prefix(dir.path(), &st.tb, &db);
        }
    }
    st.proxy.cmd("clear");
    let mut w = writer;
    unsafe { libc::kill(w.id() as i32, libc::SIGTERM) };
    let _ = w.wait();
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    let (status, _) = rep.stop_within(Duration::from_secs(60));
    assert!(status.success());
    assert_restores_equal(dir.path(), &st.tb.url(), Some(&st.tb.config), &db);
}

/// The replica restores to a consistent, gap-free prefix of each writer's rows.
fn check_prefix(dir: &Path, tb: &TestBucket, db: &Path) {
    let out = dir.join(format!("prefix-{}.db", crate::support::random_hex(6)));
    let r = restore(&["-o", s(&out), &tb.url()], Some(&tb.config));
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(integrity_check(&out), "ok");
    let have = load_rows(&out);
    let source = load_rows(db);
    for (w, max, contiguous) in have {
        assert!(contiguous, "writer {w}: gaps in the restored rows");
        let src_max = source.iter().find(|r| r.0 == w).map_or(0, |r| r.1);
        assert!(max <= src_max, "writer {w}: restored more than written");
    }
}

/// Two minutes of refused connections under load: the backlog is staged and uploaded after,
/// nothing is lost.
#[tokio::test(flavor = "multi_thread")]
async fn two_minute_outage_through_the_fault_proxy() {
    let st = Setup::new().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let cfg = write_config_with(dir.path(), &db, Target::S3(&st.via), "");
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    let writer = load(&db, &["--rate", "50", "--duration", "130", "--writer", "1"]);
    std::thread::sleep(Duration::from_secs(2));
    st.proxy.cmd("random 1 refuse");
    let t0 = Instant::now();
    rep.wait_readyz(Duration::from_secs(60), |c, b| {
        c == 503 && b.contains("replication lag")
    });
    std::thread::sleep(Duration::from_secs(120).saturating_sub(t0.elapsed()));
    st.proxy.cmd("clear");
    finish_load(writer);
    rep.wait_readyz(Duration::from_secs(120), |c, _| c == 200);
    let (status, _) = rep.stop_within(Duration::from_secs(60));
    assert!(status.success());
    assert_restores_equal(dir.path(), &st.tb.url(), Some(&st.tb.config), &db);
}

/// The level-0 files of the replica at `url`.
fn level0_ranges(url: &str, creds: &S3Config) -> Vec<(u64, u64)> {
    crate::support::cli::ltx_files(url, Some(creds))
        .into_iter()
        .filter(|f| f.0 == 0)
        .map(|f| (f.1, f.2))
        .collect()
}

/// A backlog staged during an outage goes up as merged level-0 files (never a hole), the
/// newest level-0 file stays single, and the replica stays one history: both tools restore
/// it, and Litestream 0.5.17 without its local state (a fresh disk) takes it over and
/// liteship continues after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_goes_up_merged_and_both_tools_continue_it() {
    let st = Setup::new().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let cfg = write_config_with(dir.path(), &db, Target::S3(&st.via), "");
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    st.proxy.cmd("random 1 refuse");
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "4", "--writer", "1"],
    ));
    st.proxy.cmd("clear");
    rep.wait_log(
        "backlog uploaded as one level-0 file",
        Duration::from_secs(60),
    );
    rep.wait_readyz(Duration::from_secs(60), |c, _| c == 200);
    let (status, _) = rep.stop_within(Duration::from_secs(60));
    assert!(status.success());
    let l0 = level0_ranges(&st.tb.url(), &st.tb.config);
    assert!(
        l0.iter().any(|r| r.0 < r.1),
        "a merged level-0 file: {l0:?}"
    );
    let newest = *l0.iter().max_by_key(|r| r.1).unwrap();
    assert_eq!(
        newest.0, newest.1,
        "the newest level-0 file stays single: {l0:?}"
    );
    assert_restores_equal(dir.path(), &st.tb.url(), Some(&st.tb.config), &db);

    // A crash between a round's two PUTs leaves a merged newest file: liteship restarts on
    // it (the staged file ends where it ends) without a full image and uploads the single
    // file again.
    use liteship::replica::ReplicaClient;
    st.tb.replica.delete(0, &[newest]).await.unwrap();
    // Without the lease's record of this file, continuing rests on the files alone.
    crate::support::s3::raw_client_on(&st._srv, &st.tb.config)
        .await
        .delete_object()
        .bucket(&st.tb.config.bucket)
        .key("db/liteship-lease.json")
        .send()
        .await
        .unwrap();
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    rep.wait_readyz(Duration::from_secs(30), |c, _| c == 200);
    assert_eq!(rep.metric("liteship_full_level0_images"), Some(0.0));
    assert_eq!(rep.metric("liteship_db_refused"), Some(0.0));
    let (status, _) = rep.stop_within(Duration::from_secs(60));
    assert!(status.success());
    let l0 = level0_ranges(&st.tb.url(), &st.tb.config);
    assert_eq!(l0.iter().max_by_key(|r| r.1), Some(&newest), "{l0:?}");
    assert_restores_equal(dir.path(), &st.tb.url(), Some(&st.tb.config), &db);

    // Litestream without its local state (a fresh disk) takes over and continues.
    std::fs::remove_dir_all(dir.path().join(".app.db-litestream")).unwrap();
    let ls = Litestream::v0_5_17().replicate(&cfg);
    std::thread::sleep(Duration::from_secs(1));
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "2", "--writer", "2"],
    ));
    std::thread::sleep(Duration::from_secs(1));
    ls.stop();
    assert_restores_equal(dir.path(), &st.tb.url(), Some(&st.tb.config), &db);

    // And liteship continues after Litestream.
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "1", "--writer", "3"],
    ));
    let (status, _) = rep.stop_within(Duration::from_secs(60));
    assert!(status.success());
    assert_restores_equal(dir.path(), &st.tb.url(), Some(&st.tb.config), &db);
}

/// A multipart upload streams each part from its range of the file: a part whose body
/// breaks off mid-way, one answered 500 and one answered 503 are sent again from their
/// own range, and the object holds exactly the file's bytes.
#[tokio::test(flavor = "multi_thread")]
async fn streamed_multipart_parts_are_resent_from_their_range() {
    use liteship::replica::{Body, ReplicaClient, s3::S3Replica};
    use tokio::io::AsyncReadExt;
    let st = Setup::new().await;
    let via = S3Config {
        part_size: 5 * 1024 * 1024,
        ..st.via.clone()
    };
    let client = S3Replica::new(&via, &crate::support::s3::test_tuning())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..(11u64 << 20) + 17)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let path = dir.path().join("big.ltx");
    std::fs::write(&path, &big).unwrap();
    st.proxy.cmd("next reset-upload 1 PUT partNumber=2");
    st.proxy.cmd("next 500 1 PUT partNumber=3");
    st.proxy.cmd("next 503 1 PUT partNumber=1");
    let info = client
        .write(9, 1, 0x200, Body::File(path), 1_700_000_000_000)
        .await
        .unwrap();
    assert_eq!(
        st.proxy.pending(),
        0,
        "every planned fault met a part upload"
    );
    assert_eq!(info.size, big.len() as u64);
    let mut r = st.tb.replica.open(9, 1, 0x200, 0, None).await.unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    assert!(got == big, "the object differs from the file");
}

/// A stop during start-up while the server refuses every connection: the replicator keeps
/// trying until the stop's deadline instead of giving up at once (adversarial pass F3: exit
/// 1 within milliseconds, although the server came back within a second), and replicates
/// once the server answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_during_an_outage_at_start_keeps_trying_until_the_deadline() {
    let st = Setup::new().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    st.proxy.cmd("random 1.0 refuse");
    let log = dir.path().join("replicate.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut child = crate::support::cli::liteship_with(Some(&st.via))
        .args(["replicate", "-exec", "sleep 0.3", s(&db), &st.url_via()])
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let early = child.try_wait().unwrap();
    let text = || std::fs::read_to_string(&log).unwrap();
    assert!(early.is_none(), "gave up before the deadline: {}", text());
    st.proxy.cmd("clear");
    let status =
        crate::support::replicator::wait_timeout(&mut child, Duration::from_secs(40)).unwrap();
    assert!(status.success(), "{}", text());
    assert_restores_equal(dir.path(), &st.tb.url(), Some(&st.tb.config), &db);
}
