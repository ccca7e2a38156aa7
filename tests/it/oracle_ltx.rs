//! The LTX codec against the real Litestream binaries, both directions:
//! - every file Litestream 0.5.17 and 0.5.15 write (file replica and S3 server) decodes with
//!   a verified checksum, and the level-0 chain rebuilds the source database byte for byte;
//! - a snapshot our encoder writes is restored by Litestream 0.5.17 into a file identical to
//!   the checkpointed source (4 KiB and 64 KiB pages, and > 1 GiB across the lock page).

use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::Duration;

use liteship::ltx::{Decoder, Encoder, Header, lock_page};
use liteship::replica::file::FileReplica;
use liteship::replica::{Body, MAX_LEVEL, ReplicaClient, read_all};

use crate::support::oracle::{Litestream, Target, write_config};
use crate::support::s3::TestBucket;
use crate::support::sqlite::{checkpointed_bytes, integrity_check, open_wal};

/// Writes several transactions, growth past many pages, a shrink (VACUUM) and regrowth,
/// pausing between phases so Litestream cuts separate TXIDs.
fn workload(db: &Path) {
    let c = open_wal(db);
    let pause = || std::thread::sleep(Duration::from_millis(400));
    c.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
        .unwrap();
    pause();
    for i in 0..3 {
        c.execute("INSERT INTO t(v) VALUES (randomblob(100 + ?1))", [i])
            .unwrap();
        pause();
    }
    c.execute_batch("INSERT INTO t(v) SELECT randomblob(1500) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 300) SELECT i FROM n)").unwrap();
    pause();
    c.execute_batch("DELETE FROM t WHERE id > 20; VACUUM;")
        .unwrap();
    pause();
    c.execute_batch("INSERT INTO t(v) SELECT randomblob(900) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 60) SELECT i FROM n)").unwrap();
    pause();
}

/// Decodes every file at every level, checks the frame encoding the version writes, and
/// rebuilds the database from the level-0 chain.
async fn decode_replica(c: &dyn ReplicaClient, legacy: bool) -> Vec<u8> {
    let mut decoded = 0;
    for level in 0..=MAX_LEVEL {
        for f in c.list(level).await.unwrap() {
            let bytes = read_all(c, level, f.min_txid, f.max_txid).await.unwrap();
            let frame_flags = u16::from_be_bytes([bytes[104], bytes[105]]);
            assert_eq!(
                frame_flags == 0,
                legacy,
                "frame encoding of {}",
                c.key(level, f.min_txid, f.max_txid)
            );
            let d = liteship::ltx::decode_all(&bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", c.key(level, f.min_txid, f.max_txid)));
            assert_eq!(
                (d.header.min_txid, d.header.max_txid),
                (f.min_txid, f.max_txid)
            );
            decoded += 1;
        }
    }
    let l0 = c.list(0).await.unwrap();
    assert!(
        l0.len() >= 5,
        "expected several level-0 files, got {}",
        l0.len()
    );
    assert!(decoded >= l0.len());
    assert_eq!(l0[0].min_txid, 1, "level 0 starts with a snapshot");
    let mut db: Vec<u8> = Vec::new();
    for f in &l0 {
        let bytes = read_all(c, 0, f.min_txid, f.max_txid).await.unwrap();
        let d = liteship::ltx::decode_all(&bytes).unwrap();
        let ps = d.header.page_size as usize;
        db.resize(d.header.commit as usize * ps, 0);
        for (pgno, page) in d.pages {
            let off = (pgno as usize - 1) * ps;
            db[off..off + ps].copy_from_slice(&page);
        }
    }
    db
}

async fn litestream_writes_we_decode(ls: Litestream, s3: Option<&TestBucket>) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    open_wal(&db)
        .execute_batch("CREATE TABLE seed(x); INSERT INTO seed VALUES (1);")
        .unwrap();
    let file_root = dir.path().join("replica");
    let target = match s3 {
        Some(tb) => Target::S3(&tb.config),
        None => Target::File(&file_root),
    };
    let cfg = write_config(dir.path(), &db, target);
    let running = ls.replicate(&cfg);
    std::thread::sleep(Duration::from_millis(800));
    workload(&db);
    running.stop();
    let file_replica = FileReplica::new(&file_root);
    let client: &dyn ReplicaClient = match s3 {
        Some(tb) => &tb.replica,
        None => &file_replica,
    };
    let rebuilt = decode_replica(client, ls.version == "0.5.15").await;
    let source = checkpointed_bytes(&db);
    assert_eq!(rebuilt.len(), source.len(), "database size");
    assert!(
        rebuilt == source,
        "rebuilt database differs from the source"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn litestream_0_5_17_file_replica_decodes() {
    litestream_writes_we_decode(Litestream::v0_5_17(), None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn litestream_0_5_15_file_replica_decodes_legacy_frames() {
    litestream_writes_we_decode(Litestream::v0_5_15(), None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn litestream_0_5_17_s3_replica_decodes() {
    let tb = TestBucket::new().await;
    litestream_writes_we_decode(Litestream::v0_5_17(), Some(&tb)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn litestream_0_5_15_s3_replica_decodes_legacy_frames() {
    let tb = TestBucket::new().await;
    litestream_writes_we_decode(Litestream::v0_5_15(), Some(&tb)).await;
}

/// Encodes a snapshot LTX (TXID 1-1) of a checkpointed database file into `out`.
fn encode_snapshot(db: &Path, out: &Path) -> Header {
    let mut f = std::fs::File::open(db).unwrap();
    let len = f.metadata().unwrap().len();
    let mut first = [0u8; 100];
    f.read_exact(&mut first).unwrap();
    let ps = match u16::from_be_bytes([first[16], first[17]]) {
        1 => 65536,
        n => u32::from(n),
    };
    let commit = (len / u64::from(ps)) as u32;
    let header = Header::new(ps, commit, 1, 1, liteship::timefmt::now_ms());
    let w = BufWriter::new(std::fs::File::create(out).unwrap());
    let mut enc = Encoder::new(w, header).unwrap();
    let mut f = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(db).unwrap());
    let mut page = vec![0u8; ps as usize];
    let lock = lock_page(ps);
    for pgno in 1..=commit {
        f.read_exact(&mut page).unwrap();
        if pgno != lock {
            enc.write_page(pgno, &page).unwrap();
        }
    }
    let (mut w, _) = enc.finish().unwrap();
    w.flush().unwrap();
    w.into_inner().unwrap().sync_all().unwrap();
    // Our own decoder agrees before Litestream sees it.
    let mut dec = Decoder::new(std::fs::File::open(out).unwrap()).unwrap();
    let mut n = 0;
    while dec.next_page(&mut page).unwrap().is_some() {
        n += 1;
    }
    dec.finish().unwrap();
    assert_eq!(n, commit - u32::from(commit >= lock));
    header
}

fn build_db(db: &Path, page_size: u32, rows: u32, blob: &str) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(&format!(
        "PRAGMA page_size={page_size}; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
         INSERT INTO t(v) SELECT CASE WHEN i % 97 = 0 THEN randomblob(700) ELSE {blob} END
           FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < {rows}) SELECT i FROM n);
         CREATE INDEX t_v ON t(substr(v, 1, 8));"
    ))
    .unwrap();
}

async fn we_write_litestream_restores(
    page_size: u32,
    rows: u32,
    blob: &str,
    s3: Option<&TestBucket>,
) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.db");
    build_db(&db, page_size, rows, blob);
    let ltx = dir.path().join("snap.ltx");
    let h = encode_snapshot(&db, &ltx);
    let file_root = dir.path().join("replica");
    let file_replica = FileReplica::new(&file_root);
    let (client, url): (&dyn ReplicaClient, String) = match s3 {
        Some(tb) => (&tb.replica, tb.url()),
        None => (&file_replica, format!("file://{}", file_root.display())),
    };
    client
        .write(9, 1, 1, Body::File(ltx), h.timestamp_ms)
        .await
        .unwrap();
    let out = dir.path().join("restored.db");
    let res =
        Litestream::v0_5_17().restore(&["-o", out.to_str().unwrap(), &url], s3.map(|t| &t.config));
    assert!(
        res.status.success(),
        "litestream restore failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let (a, b) = (std::fs::read(&db).unwrap(), std::fs::read(&out).unwrap());
    assert_eq!(a.len(), b.len(), "restored size");
    assert!(a == b, "restored database differs from the source");
    assert_eq!(integrity_check(&out), "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn our_snapshot_4k_restored_by_litestream_file_and_s3() {
    we_write_litestream_restores(4096, 3000, "randomblob(300)", None).await;
    let tb = TestBucket::new().await;
    we_write_litestream_restores(4096, 3000, "randomblob(300)", Some(&tb)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn our_snapshot_64k_restored_by_litestream_file_and_s3() {
    we_write_litestream_restores(65536, 2000, "randomblob(3000)", None).await;
    let tb = TestBucket::new().await;
    we_write_litestream_restores(65536, 2000, "randomblob(3000)", Some(&tb)).await;
}

/// > 1 GiB with 4 KiB pages, so the lock page (262145) lies inside the database.
#[tokio::test(flavor = "multi_thread")]
async fn our_snapshot_over_1gib_crosses_lock_page() {
    we_write_litestream_restores(4096, 280_000, "zeroblob(3900)", None).await;
}

/// `page-frames: legacy` writes the LZ4-frame page encoding, so that a user pinned to
/// Litestream 0.5.0-0.5.15 can roll back: Litestream 0.5.15 and 0.5.17 both restore the
/// replica (snapshots, level-0 files and compactions) byte-identically to liteship's own
/// restore. With the default block framing, 0.5.17 restores it and 0.5.15 cannot (it
/// rejects any page flag), which is why the setting exists.
#[test]
fn legacy_page_frames_restore_with_litestream_0_5_15_and_0_5_17() {
    use crate::support::cli::{restore, s, text};
    use crate::support::oracle::{Litestream, Target, write_config_with};
    use crate::support::replicator::{Replicator, finish_load, load};
    for legacy in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let root = dir.path().join("replica");
        finish_load(load(&db, &["--rate", "100", "--duration", "0.5"]));
        let cfg = write_config_with(
            dir.path(),
            &db,
            Target::File(&root),
            "levels:\n  - interval: 1s\n",
        );
        if legacy {
            let yml = std::fs::read_to_string(&cfg).unwrap().replace(
                "      sync-interval: 100ms\n",
                "      sync-interval: 100ms\n      page-frames: legacy\n",
            );
            std::fs::write(&cfg, yml).unwrap();
        }
        let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
        finish_load(load(
            &db,
            &["--rate", "100", "--duration", "2.5", "--writer", "2"],
        ));
        assert!(rep.stop().success());
        let url = format!("file://{}", root.display());
        let ours = dir.path().join("ours.db");
        let r = restore(&["-o", s(&ours), &url], None);
        assert!(r.status.success(), "{}", text(&r));
        let want = std::fs::read(&ours).unwrap();
        for (name, ls) in [
            ("0.5.17", Litestream::v0_5_17()),
            ("0.5.15", Litestream::v0_5_15()),
        ] {
            let out = dir.path().join(format!("litestream-{name}.db"));
            let r = ls.restore(&["-o", s(&out), &url], None);
            if legacy || name == "0.5.17" {
                assert!(
                    r.status.success(),
                    "legacy={legacy} {name}: {}",
                    String::from_utf8_lossy(&r.stderr)
                );
                assert_eq!(
                    std::fs::read(&out).unwrap(),
                    want,
                    "legacy={legacy} {name}: bytes differ"
                );
            } else {
                assert!(
                    !r.status.success(),
                    "Litestream 0.5.15 read block-framed pages"
                );
            }
        }
    }
}
