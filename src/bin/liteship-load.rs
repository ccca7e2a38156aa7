//! `liteship-load`: a write-load generator for drills and tests. Each commit inserts one row
//! `(writer, seq, t_ms, payload)` into table `load`, so a restore can be checked for
//! completeness (every row committed before a point) and gaps (seq is contiguous per writer).
//!
//! ```text
//! liteship-load DB --rate 500 --duration 60 [--payload 200] [--writer 1]
//!               [--checkpoint passive,full,restart,truncate --checkpoint-every 2]
//!               [--vacuum-at 30] [--grow-mb 0]
//! ```
//!
//! Prints the number of commits on stdout and, with `--latency`, the commit latencies on
//! stderr (`commit latency ms: p50 … p99 … p999 … max …`: a replicator that stalls the
//! application shows there).

use std::time::{Duration, Instant};

use clap::Parser;
use rusqlite::Connection;

#[derive(Parser, Debug)]
#[command(
    name = "liteship-load",
    about = "Write load for SQLite databases replicated by liteship"
)]
struct Args {
    db: std::path::PathBuf,
    /// Commits per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Random bytes per row.
    #[arg(long, default_value_t = 200)]
    payload: usize,
    /// Writer id stored in every row.
    #[arg(long, default_value_t = 1)]
    writer: i64,
    /// Checkpoint modes to cycle through (passive, full, restart, truncate).
    #[arg(long, value_delimiter = ',')]
    checkpoint: Vec<String>,
    /// Seconds between the application's own checkpoints.
    #[arg(long, default_value_t = 2.0)]
    checkpoint_every: f64,
    /// Run a VACUUM this many seconds in.
    #[arg(long)]
    vacuum_at: Option<f64>,
    /// Before the load, grow the database by this many MiB (in 4 MiB transactions).
    #[arg(long, default_value_t = 0)]
    grow_mb: u64,
    /// Stop early (and report) once this file exists.
    #[arg(long)]
    stop_file: Option<std::path::PathBuf>,
    /// Print the commit latencies (p50, p99, p999, max) on stderr at the end.
    #[arg(long)]
    latency: bool,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let c = Connection::open(&a.db)?;
    c.busy_timeout(Duration::from_secs(10))?;
    c.pragma_update(None, "journal_mode", "wal")?;
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS load(id INTEGER PRIMARY KEY, writer INT, seq INT, t_ms INT, payload BLOB);
         CREATE TABLE IF NOT EXISTS bulk(id INTEGER PRIMARY KEY, payload BLOB);",
    )?;
    for _ in 0..a.grow_mb.div_ceil(4) {
        c.execute("INSERT INTO bulk(payload) SELECT randomblob(4000) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 1024) SELECT i FROM n)", [])?;
    }
    let ckpt = Connection::open(&a.db)?;
    ckpt.busy_timeout(Duration::from_millis(300))?;
    let seq0: i64 = c.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM load WHERE writer = ?1",
        [a.writer],
        |r| r.get(0),
    )?;
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / f64::from(a.rate.max(1)));
    let (mut n, mut next_ckpt, mut ckpt_i, mut vacuumed) =
        (0i64, a.checkpoint_every, 0usize, false);
    let mut latencies: Vec<f64> = Vec::new();
    while start.elapsed().as_secs_f64() < a.duration
        && !a.stop_file.as_ref().is_some_and(|f| f.exists())
    {
        let t_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        n += 1;
        let t0 = Instant::now();
        insert_retrying(&c, a.writer, seq0 + n, t_ms, a.payload)?;
        latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
        let el = start.elapsed().as_secs_f64();
        if !a.checkpoint.is_empty() && el >= next_ckpt {
            let mode = &a.checkpoint[ckpt_i % a.checkpoint.len()];
            // On its own connection with a short busy timeout, as applications do: FULL,
            // RESTART and TRUNCATE wait for readers (the replicator's read transaction)
            // and hold off writers while they wait.
            let _ = ckpt.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                r.get::<_, i64>(0)
            });
            ckpt_i += 1;
            next_ckpt += a.checkpoint_every;
        }
        if let Some(v) = a.vacuum_at
            && !vacuumed
            && el >= v
        {
            c.execute_batch("DELETE FROM bulk WHERE id % 2 = 0; VACUUM;")?;
            vacuumed = true;
        }
        let due = period * n as u32;
        if let Some(sleep) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(sleep);
        }
    }
    println!("{n}");
    if a.latency {
        eprintln!("{}", latency_line(&mut latencies));
    }
    Ok(())
}

/// `commit latency ms: p50 … p99 … p999 … max …` (nearest rank).
fn latency_line(v: &mut [f64]) -> String {
    v.sort_by(f64::total_cmp);
    let q = |x: f64| {
        let i = ((x * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1)) - 1;
        v.get(i).copied().unwrap_or(0.0)
    };
    format!(
        "commit latency ms: p50 {:.2} p99 {:.2} p999 {:.2} max {:.2}",
        q(0.5),
        q(0.99),
        q(0.999),
        q(1.0)
    )
}

/// Inserts one row, retrying while the database is busy (as a robust application does).
fn insert_retrying(
    c: &Connection,
    writer: i64,
    seq: i64,
    t_ms: i64,
    payload: usize,
) -> anyhow::Result<()> {
    let mut tries = 0;
    loop {
        let res = c.execute(
            "INSERT INTO load(writer, seq, t_ms, payload) VALUES (?1, ?2, ?3, randomblob(?4))",
            rusqlite::params![writer, seq, t_ms, payload as i64],
        );
        match res {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 20 =>
            {
                tries += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
