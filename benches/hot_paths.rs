//! Criterion benchmarks of the hot paths (issue 12): LTX encode and decode (4 KiB and
//! 64 KiB pages, compressible and random), WAL reading, restore planning on a 100k-file
//! listing, and the page merge of compaction.
//!
//! Run: `cargo bench --bench hot_paths` (throughput in MB/s or elements/s per case).

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use liteship::ltx::{Encoder, Header, compact, decode_all};
use liteship::replica::LtxFileInfo;
use liteship::restore::Target;
use liteship::restore::plan::plan;
use liteship::wal::WalReader;

/// Pages of `size` bytes: text-like (about half compressible) or random.
fn pages(n: u32, size: usize, random: bool) -> Vec<Vec<u8>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|p| {
            (0..size)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if random || i % 2 == 0 {
                        x as u8
                    } else {
                        b"lorem ipsum "[(i + p as usize) % 12]
                    }
                })
                .collect()
        })
        .collect()
}

fn encode(size: u32, data: &[Vec<u8>]) -> Vec<u8> {
    let n = data.len() as u32;
    let mut enc = Encoder::new(Vec::new(), Header::new(size, n, 1, 1, 0)).unwrap();
    for (i, p) in data.iter().enumerate() {
        enc.write_page(i as u32 + 1, p).unwrap();
    }
    enc.finish().unwrap().0
}

fn ltx(c: &mut Criterion) {
    let mut g = c.benchmark_group("ltx");
    g.measurement_time(Duration::from_secs(5));
    for (size, random) in [
        (4096u32, false),
        (4096, true),
        (65536, false),
        (65536, true),
    ] {
        let n = (8 << 20) / size; // 8 MiB of pages per iteration
        let data = pages(n, size as usize, random);
        let kind = format!(
            "{}KiB-{}",
            size / 1024,
            if random { "random" } else { "text" }
        );
        g.throughput(Throughput::Bytes(u64::from(n * size)));
        g.bench_with_input(BenchmarkId::new("encode", &kind), &data, |b, d| {
            b.iter(|| black_box(encode(size, d)))
        });
        let file = encode(size, &data);
        g.bench_with_input(BenchmarkId::new("decode", &kind), &file, |b, f| {
            b.iter(|| black_box(decode_all(f).unwrap()))
        });
    }
    g.finish();
}

/// The bytes of a WAL with `frames` committed frames of 4 KiB pages, written by SQLite.
fn wal_bytes(frames: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("w.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);",
    )
    .unwrap();
    for _ in 0..frames / 4 {
        c.execute("INSERT INTO t(v) VALUES (randomblob(3000))", [])
            .unwrap();
    }
    let bytes = std::fs::read(dir.path().join("w.db-wal")).unwrap();
    drop(c);
    bytes
}

fn wal(c: &mut Criterion) {
    let bytes = wal_bytes(20_000);
    let frames = (bytes.len() as u64 - 32) / (24 + 4096);
    let mut g = c.benchmark_group("wal");
    g.throughput(Throughput::Elements(frames));
    g.bench_function(BenchmarkId::new("read_committed", frames), |b| {
        b.iter(|| {
            let mut r = WalReader::open(&bytes[..]).unwrap();
            black_box(r.read_committed(0).unwrap())
        })
    });
    g.finish();
}

fn planning(c: &mut Criterion) {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let info = |level: u8, min: u64, max: u64| LtxFileInfo {
        level,
        min_txid: min,
        max_txid: max,
        size: 4096,
        created_at: t0 + Duration::from_secs(max),
    };
    // A snapshot, 10k level-1 files of 10 TXIDs, 90k level-0 files (100k in all).
    let mut levels: Vec<Vec<LtxFileInfo>> = vec![Vec::new(); 10];
    levels[9].push(info(9, 1, 1));
    for i in 0..10_000u64 {
        levels[1].push(info(1, 2 + i * 10, 11 + i * 10));
    }
    for t in 2..90_002u64 {
        levels[0].push(info(0, t, t));
    }
    let mut g = c.benchmark_group("plan");
    g.throughput(Throughput::Elements(100_001));
    for (name, target) in [
        ("latest", Target::Latest),
        ("txid", Target::Txid(45_000)),
        (
            "timestamp",
            Target::Timestamp(t0 + Duration::from_secs(60_000)),
        ),
    ] {
        g.bench_function(BenchmarkId::new("100k-files", name), |b| {
            b.iter(|| black_box(plan(&levels, &target).unwrap()))
        });
    }
    g.finish();
}

fn merge(c: &mut Criterion) {
    // 64 level-0 files of 64 pages each over a 1024-page database (overlapping pages).
    let data = pages(64, 4096, false);
    let files: Vec<Vec<u8>> = (0..64u64)
        .map(|f| {
            // TXIDs from 2: a file from TXID 1 is a snapshot and must hold every page.
            let h = Header::new(4096, 1024, f + 2, f + 2, f as i64);
            let mut enc = Encoder::new(Vec::new(), h).unwrap();
            let mut pgnos: Vec<u32> = (0..64u32)
                .map(|i| ((f as u32 * 37 + i * 16) % 1024) + 1)
                .collect();
            pgnos.sort_unstable();
            pgnos.dedup();
            for (i, pgno) in pgnos.iter().enumerate() {
                enc.write_page(*pgno, &data[i]).unwrap();
            }
            enc.finish().unwrap().0
        })
        .collect();
    let bytes: u64 = files.iter().map(|f| f.len() as u64).sum();
    let mut g = c.benchmark_group("merge");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("64-files-x-64-pages", |b| {
        b.iter(|| {
            let inputs: Vec<&[u8]> = files.iter().map(|f| &f[..]).collect();
            black_box(compact(inputs, Vec::new()).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, ltx, wal, planning, merge);
criterion_main!(benches);
