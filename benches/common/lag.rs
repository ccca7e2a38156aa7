//! Replication lag from the proxy's recording of level-0 PUTs (`record DIR`): the level-0
//! files are applied in TXID order to a scratch copy of the database, and after each one
//! the rows it made durable are read back. A row's lag is the time from its commit (the
//! row's `t_ms`, written by `liteship-load` just before it commits) to the answer of the
//! PUT that first carried it (when the replicator learns that it is durable).

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;

use liteship::ltx::{decode_all, parse_file_name};

/// One answered level-0 PUT: when its answer came back (µs since the epoch) and the body.
struct Put {
    answered_us: u64,
    body: Vec<u8>,
}

/// Lag in milliseconds of every row `writer` committed, in commit order. `base` is the
/// database file as it was when the replicator started (checkpointed): the files from
/// TXID 1 are that same state (and a large one may go up in parts), so they are skipped.
pub fn row_lags_ms(base: &Path, recorded: &Path, writer: i64) -> Vec<f64> {
    let puts = read_puts(recorded);
    let scratch = tempfile::tempdir().unwrap();
    let db = scratch.path().join("replica.db");
    std::fs::copy(base, &db).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    let (mut last_seq, mut lags) = (0i64, Vec::new());
    for (txids, put) in puts.range((2, 0)..) {
        let file = decode_all(&put.body).expect("a recorded level-0 file decodes");
        let ps = u64::from(file.header.page_size);
        for (pgno, page) in &file.pages {
            f.write_all_at(page, u64::from(*pgno - 1) * ps).unwrap();
        }
        f.set_len(u64::from(file.header.commit) * ps).unwrap();
        let rows = rows_after(&db, writer, last_seq);
        if std::env::var_os("BENCH_LAG_DEBUG").is_some() {
            eprintln!(
                "  put {txids:?} answered {} ms: {} pages, {} new rows from t {:?}",
                put.answered_us / 1000,
                file.pages.len(),
                rows.len(),
                rows.first().map(|r| r.1)
            );
        }
        for (seq, t_ms) in rows {
            lags.push(put.answered_us as f64 / 1000.0 - t_ms as f64);
            last_seq = seq;
        }
    }
    lags
}

/// The recorded PUTs by (min, max) TXID; a retried name keeps its first answer.
fn read_puts(dir: &Path) -> BTreeMap<(u64, u64), Put> {
    let mut entries: Vec<(u64, u64, String, std::path::PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut parts = name.splitn(3, '-');
        let n: u64 = parts.next().unwrap().parse().unwrap();
        let us: u64 = parts.next().unwrap().parse().unwrap();
        entries.push((n, us, parts.next().unwrap().to_string(), path));
    }
    entries.sort();
    let mut puts = BTreeMap::new();
    for (_, us, key, path) in entries {
        let chunked = key.ends_with(".chunked");
        let key = key.trim_end_matches(".chunked");
        let range = parse_file_name(key).unwrap_or_else(|| panic!("recorded {key:?}"));
        let raw = std::fs::read(&path).unwrap();
        let body = if chunked { dechunk(&raw) } else { raw };
        puts.entry(range).or_insert(Put {
            answered_us: us,
            body,
        });
    }
    puts
}

/// The payload of an `aws-chunked` body: `<hex size>[;ext]\r\n<data>\r\n` until size 0,
/// then trailers.
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let (mut out, mut i) = (Vec::new(), 0);
    loop {
        let eol = i + raw[i..].windows(2).position(|w| w == b"\r\n").unwrap();
        let head = std::str::from_utf8(&raw[i..eol]).unwrap();
        let size = usize::from_str_radix(head.split(';').next().unwrap(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        i = eol + 2 + size + 2;
    }
}

/// `(seq, t_ms)` of the rows of `writer` after `seq`, from the scratch database as it is.
fn rows_after(db: &Path, writer: i64, seq: i64) -> Vec<(i64, i64)> {
    let uri = format!("file:{}?immutable=1", db.display());
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let c = rusqlite::Connection::open_with_flags(uri, flags).unwrap();
    let has_table: bool = c
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'load'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if !has_table {
        return Vec::new();
    }
    let mut st = c
        .prepare("SELECT seq, t_ms FROM load WHERE writer = ?1 AND seq > ?2 ORDER BY seq")
        .unwrap();
    st.query_map([writer, seq], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The `q` quantile (0..=1) of `v` (nearest rank); 0 for no samples.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}
