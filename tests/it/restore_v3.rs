//! Replicas written by Litestream 0.3.13 (`generations/` layout) restore to the source's
//! content, byte-identical to Litestream 0.5.17's own restore of them.

use std::path::Path;
use std::time::Duration;

use crate::support::cli::{restore, s, text};
use crate::support::oracle::Litestream;
use crate::support::s3::TestBucket;
use crate::support::sqlite::{integrity_check, open_wal};

fn v3_config(dir: &Path, db: &Path, s3: Option<&TestBucket>) -> std::path::PathBuf {
    let replica = match s3 {
        None => format!(
            "      - type: file\n        path: {}\n",
            dir.join("replica").display()
        ),
        Some(tb) => {
            let c = &tb.config;
            format!(
                "      - type: s3\n        bucket: {}\n        path: {}\n        endpoint: {}\n        region: {}\n        force-path-style: true\n        access-key-id: {}\n        secret-access-key: {}\n",
                c.bucket,
                c.path,
                c.endpoint.as_deref().unwrap(),
                c.region.as_deref().unwrap(),
                c.access_key_id.as_deref().unwrap(),
                c.secret_access_key.as_deref().unwrap()
            )
        }
    };
    let yml = format!(
        "dbs:\n  - path: {}\n    monitor-interval: 100ms\n    checkpoint-interval: 1s\n    replicas:\n{replica}        sync-interval: 100ms\n",
        db.display()
    );
    let p = dir.join("litestream-v3.yml");
    std::fs::write(&p, yml).unwrap();
    p
}

fn content(db: &Path) -> Vec<(i64, Vec<u8>)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

async fn v3_roundtrip(s3: Option<&TestBucket>) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let c = open_wal(&db);
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        .unwrap();
    let running = Litestream::v0_3_13().replicate(&v3_config(dir.path(), &db, s3));
    std::thread::sleep(Duration::from_millis(800));
    for i in 0..10 {
        c.execute("INSERT INTO t(v) SELECT randomblob(700) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < ?1) SELECT i FROM n)", [5 + i * 10]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(1500));
    running.stop();
    let url = match s3 {
        Some(tb) => tb.url(),
        None => format!("file://{}", dir.path().join("replica").display()),
    };
    let creds = s3.map(|t| &t.config);
    if s3.is_none() {
        let gens = dir.path().join("replica/generations");
        let gen_dir = std::fs::read_dir(&gens)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let indexes: std::collections::BTreeSet<String> = std::fs::read_dir(gen_dir.join("wal"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy()[..8].to_string())
            .collect();
        assert!(
            indexes.len() >= 2,
            "want several WAL indexes, got {indexes:?}"
        );
    }
    let ours = dir.path().join("ours.db");
    let r = restore(&["-o", s(&ours), &url], creds);
    assert!(r.status.success(), "{}", text(&r));
    assert!(String::from_utf8_lossy(&r.stdout).contains("Litestream 0.3 replica"));
    assert_eq!(integrity_check(&ours), "ok");
    assert_eq!(
        content(&ours),
        content(&db),
        "restored content equals the source"
    );
    let theirs = dir.path().join("theirs.db");
    let r = Litestream::v0_5_17().restore(&["-o", s(&theirs), &url], creds);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
        "differs from Litestream 0.5.17's restore"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn litestream_0_3_13_file_replica_restores() {
    v3_roundtrip(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn litestream_0_3_13_s3_replica_restores() {
    let tb = TestBucket::new().await;
    v3_roundtrip(Some(&tb)).await;
}
