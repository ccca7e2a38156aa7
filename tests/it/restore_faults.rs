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

/// Restores with `client`; the report of a restore that must happen.
async fn restored(client: Arc<dyn ReplicaClient>, o: &RestoreOptions) -> liteship::restore::Report {
    match restore(client, o).await.unwrap() {
        Outcome::Restored(r) => r,
        other => panic!("expected a restore, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_streams_resume_and_parallelism_is_real() {
    let dir = tempfile::tempdir().unwrap();
    let base = replica(&dir.path().join("r")).await;
    let clean_out = dir.path().join("clean.db");
    restored(Arc::new(base.clone()), &opts(&clean_out, 1)).await;

    let flaky = Arc::new(Flaky::new(base, 12, 10_000));
    let out = dir.path().join("flaky.db");
    let client: Arc<dyn ReplicaClient> = flaky.clone();
    let r = restored(client, &opts(&out, 4)).await;
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
    assert!(max >= 2, "downloads in flight at once: {max}");
    let bytes = flaky.max_in_flight_bytes.load(Ordering::SeqCst);
    assert!(
        bytes <= 4 * 64 * 1024,
        "{bytes} bytes in flight, more than parallelism x chunk size"
    );
}

/// A young replica (a snapshot and many small level-0 files): the small files are fetched
/// many at once (per-request latency, not bandwidth, limits them), never more than
/// MAX_IN_FLIGHT requests, and never more bytes than parallelism x chunk size.
#[tokio::test(flavor = "multi_thread")]
async fn small_files_are_fetched_many_at_once_within_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let base = replica(&dir.path().join("r")).await;
    let ps = 4096u32;
    for tx in 12..=300u64 {
        let mut enc =
            Encoder::new(Vec::new(), Header::new(ps, 800, tx, tx, 2000 + tx as i64)).unwrap();
        enc.write_page((tx % 700) as u32 + 1, &vec![tx as u8; ps as usize])
            .unwrap();
        let (bytes, _) = enc.finish().unwrap();
        base.write(0, tx, tx, Body::Bytes(bytes.into()), 2000 + tx as i64)
            .await
            .unwrap();
    }
    let clean = dir.path().join("clean.db");
    restored(Arc::new(base.clone()), &opts(&clean, 1)).await;
    let flaky = Arc::new(Flaky::new(base, 0, 0));
    let out = dir.path().join("fanned.db");
    let client: Arc<dyn ReplicaClient> = flaky.clone();
    let r = restored(client, &opts(&out, 2)).await;
    assert_eq!(r.txid, 300);
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&clean).unwrap());
    let max = flaky.max_in_flight.load(Ordering::SeqCst);
    assert!(
        max > 2 && max <= liteship::replica::read::MAX_IN_FLIGHT,
        "small files in flight at once: {max} (parallelism 2)"
    );
    let bytes = flaky.max_in_flight_bytes.load(Ordering::SeqCst);
    assert!(bytes <= 2 * 64 * 1024, "{bytes} bytes in flight");
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
    assert!(!liteship::fsutil::tmp_path(&out).exists());
}

/// Encodes `pages` of random content (from `seed`) as one file.
fn random_file(h: Header, pages: impl Iterator<Item = u32>, mut seed: u64) -> Vec<u8> {
    let mut enc = Encoder::new(Vec::new(), h).unwrap();
    let mut page = vec![0u8; h.page_size as usize];
    for p in pages {
        for b in page.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            b.copy_from_slice(&seed.to_le_bytes());
        }
        enc.write_page(p, &page).unwrap();
    }
    enc.finish().unwrap().0
}

/// A replica whose snapshot is large enough for the parallel path (6000 pages, 24 MiB,
/// incompressible), then five small level-0 files, a large one rewriting pages 1..=4500, a
/// small one, and a large one rewriting 1000..=6001 (newest-first application must still
/// equal the sequential restore).
async fn big_replica(root: &std::path::Path) -> FileReplica {
    let c = FileReplica::new(root);
    let (ps, commit) = (4096u32, 6000u32);
    let min = liteship::restore::parallel::PARALLEL_MIN_SIZE;
    let bytes = random_file(Header::new(ps, commit, 1, 1, 1000), 1..=commit, 0x9e37_79b9);
    assert!(bytes.len() as u64 >= min);
    c.write(9, 1, 1, Body::Bytes(bytes.into()), 1000)
        .await
        .unwrap();
    for tx in 2..=6u64 {
        let mut enc = Encoder::new(
            Vec::new(),
            Header::new(ps, commit + 1, tx, tx, 1000 + tx as i64),
        )
        .unwrap();
        enc.write_page(tx as u32 * 100, &vec![tx as u8; ps as usize])
            .unwrap();
        enc.write_page(commit + 1, &vec![0xee; ps as usize])
            .unwrap();
        let (bytes, _) = enc.finish().unwrap();
        c.write(0, tx, tx, Body::Bytes(bytes.into()), 1000 + tx as i64)
            .await
            .unwrap();
    }
    let header = |tx: u64| Header::new(ps, commit + 1, tx, tx, 1000 + tx as i64);
    let large7 = random_file(header(7), 1..=4500, 7);
    let small8 = random_file(header(8), [10, 2000].into_iter(), 8);
    let large9 = random_file(header(9), 1000..=commit + 1, 9);
    assert!(large7.len() as u64 >= min && large9.len() as u64 >= min);
    for (tx, bytes) in [(7, large7), (8, small8), (9, large9)] {
        c.write(0, tx, tx, Body::Bytes(bytes.into()), 1000 + tx as i64)
            .await
            .unwrap();
    }
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_decode_equals_sequential_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let base = big_replica(&dir.path().join("r")).await;
    let seq = dir.path().join("seq.db");
    restored(Arc::new(base.clone()), &opts(&seq, 1)).await;
    let flaky = Arc::new(Flaky::new(base, 3, 300_000).breaking_long_reads(4 << 20));
    let par = dir.path().join("par.db");
    let client: Arc<dyn ReplicaClient> = flaky.clone();
    let r = restored(client, &opts(&par, 4)).await;
    assert_eq!(r.txid, 9);
    assert!(
        std::fs::read(&par).unwrap() == std::fs::read(&seq).unwrap(),
        "parallel decode differs"
    );
    assert_eq!(
        flaky.breaks_left.load(Ordering::SeqCst),
        0,
        "the injected drops happened"
    );
    assert!(
        flaky.max_in_flight.load(Ordering::SeqCst) >= 2,
        "ranges were decoded concurrently"
    );
    assert_eq!(std::fs::metadata(&par).unwrap().len(), 6001 * 4096);
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_large_files_are_detected_in_parallel_decode() {
    // A byte in the middle of the page block, or in the middle of the snapshot's page
    // index (streamed and checked entry by entry, then covered by the file checksum).
    let index_middle = |b: &[u8]| {
        let n = b.len();
        let len = u64::from_be_bytes(b[n - 24..n - 16].try_into().unwrap()) as usize;
        n - 24 - len / 2
    };
    let middle = |b: &[u8]| b.len() / 2;
    type Position<'a> = &'a dyn Fn(&[u8]) -> usize;
    let cases: [(&str, Position); 3] = [
        ("ltx/9/0000000000000001-0000000000000001.ltx", &middle),
        ("ltx/9/0000000000000001-0000000000000001.ltx", &index_middle),
        ("ltx/0/0000000000000007-0000000000000007.ltx", &middle),
    ];
    for (name, at) in cases {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let base = big_replica(&root).await;
        let victim = root.join(name);
        let mut bytes = std::fs::read(&victim).unwrap();
        let mid = at(&bytes);
        bytes[mid] ^= 0x01;
        std::fs::write(&victim, &bytes).unwrap();
        let out = dir.path().join("bad.db");
        let err = restore(Arc::new(base), &opts(&out, 4)).await.unwrap_err();
        let file_name = name.rsplit('/').next().unwrap();
        assert!(err.to_string().contains(file_name), "{err}");
        assert!(!out.exists() && !liteship::fsutil::tmp_path(&out).exists());
    }
}

/// A running replicator compacts level 0 while a restore reads it: the listed level-0
/// files are gone, the compacted level-1 file holds the same state. The restore lists
/// again, plans again and restores it (it used to fail with "…ltx: not found").
#[tokio::test(flavor = "multi_thread")]
async fn files_compacted_away_during_a_restore_are_replanned() {
    let dir = tempfile::tempdir().unwrap();
    let base = replica(&dir.path().join("r")).await;
    let clean = dir.path().join("clean.db");
    restored(Arc::new(base.clone()), &opts(&clean, 1)).await;
    // The level-1 file a compaction of level-0 files 2..=11 writes.
    let ps = 4096u32;
    let mut enc = Encoder::new(Vec::new(), Header::new(ps, 800, 2, 11, 1011)).unwrap();
    for tx in 2..=11u64 {
        enc.write_page(tx as u32 * 7, &vec![tx as u8; ps as usize])
            .unwrap();
    }
    let (bytes, _) = enc.finish().unwrap();
    base.write(1, 2, 11, Body::Bytes(bytes.into()), 1011)
        .await
        .unwrap();
    let flaky = Arc::new(Flaky::new(base, 0, 0).compacting_on_first_read());
    let out = dir.path().join("replanned.db");
    let client: Arc<dyn ReplicaClient> = flaky.clone();
    let r = restored(client, &opts(&out, 2)).await;
    assert!(
        flaky.compacted.load(Ordering::SeqCst),
        "no level-0 read met the compaction"
    );
    assert_eq!(r.txid, 11);
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&clean).unwrap());
    assert!(!liteship::fsutil::tmp_path(&out).exists());
}
