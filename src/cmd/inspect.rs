//! `liteship ltx` (what a replica holds) and `liteship verify` (a restore drill).

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

use super::{open_replica, resolve_target};
use crate::cli::{InspectArgs, VerifyArgs};
use crate::replica::s3::S3Tuning;
use crate::restore::inventory::Inventory;
use crate::restore::{IntegrityCheck, Outcome, RestoreOptions, Target, list_levels, restore};
use crate::timefmt::{format_rfc3339_ms, to_ms};

fn age(t: Option<SystemTime>) -> Option<Duration> {
    t.map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
}

fn mib(b: u64) -> String {
    if b < 1 << 20 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", b as f64 / 1048576.0)
    }
}

/// `liteship ltx`: the replica's files by level, then a summary.
pub async fn ltx(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let (url, _) = resolve_target(&args.target, &args.common)?;
    let client = open_replica(&url, &S3Tuning::default()).await?;
    let levels = list_levels(client.as_ref(), &Target::Latest).await?;
    let inv = Inventory::of(&levels);
    if args.json {
        println!("{}", inventory_json(&client.location(), &inv));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<5} {:<16} {:<16} {:>12}  CREATED",
        "LEVEL", "MIN_TXID", "MAX_TXID", "SIZE"
    );
    for f in &inv.files {
        println!(
            "{:<5} {:016x} {:016x} {:>12}  {}",
            f.level,
            f.min_txid,
            f.max_txid,
            f.size,
            format_rfc3339_ms(to_ms(f.created_at))
        );
    }
    println!();
    print_summary(&client.location(), &inv);
    Ok(ExitCode::SUCCESS)
}

fn print_summary(location: &str, inv: &Inventory) {
    println!("replica:     {location}");
    println!("files:       {} ({})", inv.files.len(), mib(inv.total_size));
    match age(inv.newest_at) {
        Some(a) => println!(
            "newest:      txid {:016x}, {}s old",
            inv.newest_txid,
            a.as_secs()
        ),
        None => println!("newest:      (the replica is empty)"),
    }
    if let Some((from, to)) = inv.restorable {
        println!(
            "restorable:  {} to {}",
            format_rfc3339_ms(to_ms(from)),
            format_rfc3339_ms(to_ms(to))
        );
    }
    for p in &inv.problems {
        println!("problem:     {p}");
    }
}

fn inventory_json(location: &str, inv: &Inventory) -> serde_json::Value {
    let files: Vec<_> = inv
        .files
        .iter()
        .map(|f| {
            serde_json::json!({
                "level": f.level,
                "min_txid": format!("{:016x}", f.min_txid),
                "max_txid": format!("{:016x}", f.max_txid),
                "size": f.size,
                "created_at": format_rfc3339_ms(to_ms(f.created_at)),
            })
        })
        .collect();
    serde_json::json!({
        "replica": location,
        "files": files,
        "total_size": inv.total_size,
        "newest_txid": format!("{:016x}", inv.newest_txid),
        "newest_age_seconds": age(inv.newest_at).map(|a| a.as_secs()),
        "restorable": inv.restorable.map(|(a, b)| serde_json::json!({
            "from": format_rfc3339_ms(to_ms(a)),
            "to": format_rfc3339_ms(to_ms(b)),
        })),
        "problems": inv.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

/// `liteship verify`: chains, freshness, and a full restore with `integrity_check` into a
/// temporary directory; exit 1 naming every problem.
pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let max_age = args
        .max_age
        .as_deref()
        .map(crate::config::parse_go_duration)
        .transpose()
        .map_err(anyhow::Error::msg)
        .context("-max-age")?;
    let (url, _) = resolve_target(&args.target, &args.common)?;
    let client = open_replica(&url, &S3Tuning::default()).await?;
    let location = client.location();
    let levels = list_levels(client.as_ref(), &Target::Latest).await?;
    let inv = Inventory::of(&levels);
    let mut problems: Vec<String> = inv.problems.iter().map(ToString::to_string).collect();
    if let (Some(max), Some(a)) = (max_age, age(inv.newest_at))
        && a > max
    {
        problems.push(format!(
            "the newest file (txid {:016x}) is {}s old, more than -max-age {}s: replication may have stopped",
            inv.newest_txid,
            a.as_secs(),
            max.as_secs()
        ));
    }
    let drill = drill(client, args.parallelism).await;
    let restored = match &drill {
        Ok(r) => Some(*r),
        Err(e) => {
            problems.push(format!("restore drill failed: {e:#}"));
            None
        }
    };
    let ok = problems.is_empty();
    let elapsed = started.elapsed();
    if args.json {
        let v = serde_json::json!({
            "replica": location,
            "ok": ok,
            "problems": problems,
            "files": inv.files.len(),
            "total_size": inv.total_size,
            "newest_txid": format!("{:016x}", inv.newest_txid),
            "newest_age_seconds": age(inv.newest_at).map(|a| a.as_secs()),
            "restored_txid": restored.as_ref().map(|r| format!("{:016x}", r.0)),
            "restored_bytes": restored.as_ref().map(|r| r.1),
            "duration_ms": elapsed.as_millis() as u64,
        });
        println!("{v}");
    } else {
        print_summary(&location, &inv);
        if let Some((txid, bytes)) = &restored {
            println!(
                "restore:     txid {txid:016x}, {} database, integrity_check ok",
                mib(*bytes)
            );
        }
        println!(
            "result:      {} in {:.1}s",
            if ok { "ok" } else { "FAILED" },
            elapsed.as_secs_f64()
        );
    }
    if ok {
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::bail!("verify {location}: {}", problems.join("; "))
}

/// Restores the latest state into a fresh temporary directory (removed afterwards) with
/// the full integrity check: the restored TXID and database size.
async fn drill(
    client: std::sync::Arc<dyn crate::replica::ReplicaClient>,
    parallelism: usize,
) -> anyhow::Result<(u64, u64)> {
    let dir = std::env::temp_dir().join(format!(
        "liteship-verify-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let mut opts = RestoreOptions::new(dir.join("drill.db"));
    opts.integrity_check = IntegrityCheck::Full;
    opts.parallelism = parallelism.max(1);
    opts.progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let res = restore(client, &opts).await;
    let _ = std::fs::remove_dir_all(&dir);
    match res? {
        Outcome::Restored(r) => Ok((r.txid, r.db_size)),
        _ => anyhow::bail!("no matching backup files available: the replica is empty"),
    }
}
