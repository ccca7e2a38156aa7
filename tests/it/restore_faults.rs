//! Restore under injected faults: dropped streams resume, downloads really run in parallel,
//! and a restore that cannot finish leaves nothing behind.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use liteship::ltx::{Encoder, Header};
use liteship::replica::file::FileReplica;
use liteship::replica::{Body, ReplicaClient};
use liteship::restore::{Outcome, RestoreOptions, restore};

use crate::support::faults::Flaky;

/// A replica with one 3 MiB snapshot and ten incremental files, in a file backend.
async fn replica(root: &std::path::Path) -> FileReplica {
    let c = FileReplica::new(root);
    let ps = 4096u32;
    let commit = 800u32;
    let mut enc = Encoder::new(Vec::new(), Header::new(ps, commit, 1, 1, 1000)).unwrap();
    for p in 1..=commit {
        let page: Vec<u8> = (0..ps)
            .map(|i| (i.wrapping_mul(p) ^ (i >> 3)) as u8)
            .collect();
        enc.write_page(p, &page).unwrap();
    }
    let (bytes, _) = enc.finish().unwrap();
    c.write(9, 1, 1, Body::Bytes(bytes.into()), 1000)
        .await
        .unwrap();
    for tx in 2..=11u64 {
        let mut enc = Encoder::new(
            Vec::new(),
            Header::new(ps, commit, tx, tx, 1000 + tx as i64),
        )
        .unwrap();
        enc.write_page(tx as u32 * 7, &vec![tx as u8; ps as usize])
            .unwrap();
        let (bytes, _) = enc.finish().unwrap();
        c.write(0, tx, tx, Body::Bytes(bytes.into()), 1000 + tx as i64)
            .await
            .unwrap();
    }
    c
}

fn opts(out: &std::path::Path, parallelism: usize) -> RestoreOptions {
    let mut o = RestoreOptions::new(out);
    o.parallelism = parallelism;
    o.chunk_size = 64 * 1024;
    o.integrity_check = liteship::restore::IntegrityCheck::None;
    o
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_streams_resume_and_parallelism_is_real() {
    let dir = tempfile::tempdir().unwrap();
    let base = replica(&dir.path().join("r")).await;
    let clean_out = dir.path().join("clean.db");
    let Outcome::Restored(_) = restore(Arc::new(base.clone()), &opts(&clean_out, 1))
        .await
        .unwrap()
    else {
        panic!()
    };

    let flaky = Arc::new(Flaky::new(base, 12, 10_000));
    let out = dir.path().join("flaky.db");
    let client: Arc<dyn ReplicaClient> = flaky.clone();
    let Outcome::Restored(r) = restore(client, &opts(&out, 4)).await.unwrap() else {
        panic!()
    };
    assert_eq!(r.txid, 11);
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&clean_out).unwrap(),
        "resumed restore differs"
    );
    assert_eq!(
        flaky.breaks_left.load(Ordering::SeqCst),
        0,
        "every injected break happened"
    );
    let max = flaky.max_in_flight.load(Ordering::SeqCst);
    assert!((2..=4).contains(&max), "downloads in flight at once: {max}");
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_drops_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let base = replica(&dir.path().join("r")).await;
    let flaky = Arc::new(Flaky::new(base, usize::MAX, 0));
    let out = dir.path().join("never.db");
    let client: Arc<dyn ReplicaClient> = flaky.clone();
    let err = restore(client, &opts(&out, 2)).await.unwrap_err();
    assert!(
        err.to_string().contains("injected: connection reset"),
        "{err}"
    );
    assert!(!out.exists());
    assert!(!liteship::replica::file::tmp_path(&out).exists());
}
