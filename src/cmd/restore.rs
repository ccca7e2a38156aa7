//! `liteship restore`: argument validation and output for [`crate::restore`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::open_replica;
use crate::cli::RestoreArgs;
use crate::replica::ReplicaUrl;
use crate::replica::s3::S3Tuning;
use crate::restore::{Outcome, Plan, RestoreOptions, Target, restore};
use crate::timefmt::{format_rfc3339_ms, parse_rfc3339, to_ms};

/// Runs the command; `Ok` carries the exit code of the documented no-op cases too. With
/// `-json`, a failure also prints `{"error": …}` on stdout.
pub async fn run(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let res = run_inner(args).await;
    if json && let Err(e) = &res {
        println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
    }
    res
}

async fn run_inner(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    if args.follow && (args.txid.is_some() || args.timestamp.is_some() || args.dry_run) {
        bail!(
            "-f (follow mode) follows the latest state: it cannot be combined with -txid, -timestamp or -dry-run"
        );
    }
    let (url, output) = resolve(&args)?;
    let mut opts = RestoreOptions::new(output);
    opts.target = parse_target(&args)?;
    opts.if_db_not_exists = args.if_db_not_exists;
    opts.if_replica_exists = args.if_replica_exists;
    opts.parallelism = args.parallelism.max(1);
    opts.integrity_check = args.integrity_check.parse().map_err(anyhow::Error::msg)?;
    opts.dry_run = args.dry_run;
    opts.force = args.force;
    opts.owner = args.owner.as_deref().map(parse_owner).transpose()?;
    opts.mode = args.mode.as_deref().map(parse_mode).transpose()?;
    opts.progress = std::io::stderr().is_terminal() && !args.json;
    opts.stall_timeout = crate::config::parse_go_duration(&args.stall_timeout)
        .map_err(anyhow::Error::msg)
        .context("-stall-timeout")?;
    let client = open_replica(&url, &S3Tuning::default()).await?;
    let location = client.location();
    if args.follow {
        let interval = crate::config::parse_go_duration(&args.follow_interval)
            .map_err(anyhow::Error::msg)
            .context("-follow-interval")?;
        anyhow::ensure!(
            interval >= std::time::Duration::from_millis(100),
            "-follow-interval must be at least 100ms (every poll lists the replica; the default is 1s)"
        );
        tracing::info!(replica = %location, output = %opts.output.display(), "following");
        crate::restore::follow::follow(client, &opts, interval, stop_signal()).await?;
        tracing::info!(output = %opts.output.display(), "stopped following");
        return Ok(ExitCode::SUCCESS);
    }
    tracing::info!(replica = %location, output = %opts.output.display(), "restoring");
    match restore(client, &opts).await? {
        Outcome::SkippedDbExists => {
            tracing::info!(path = %opts.output.display(), "database already exists, skipping");
            if args.json {
                let v = serde_json::json!({"db_path": opts.output, "skipped": "database already exists"});
                println!("{v}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Outcome::NoBackups => {
            tracing::info!(replica = %location, "no matching backups found");
            if args.json {
                let v = serde_json::json!({"replica": location, "skipped": "no matching backups found"});
                println!("{v}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Outcome::DryRun(plan) => {
            print_plan(&plan, args.json);
            Ok(ExitCode::SUCCESS)
        }
        Outcome::DryRunV3 { snapshot, segments } => {
            println!(
                "Litestream 0.3 replica: generation {} snapshot {:08x}, then {} WAL segments",
                snapshot.generation,
                snapshot.index,
                segments.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Restored(r) => {
            tracing::info!(
                path = %opts.output.display(), txid = format!("{:016x}", r.txid), files = r.files,
                bytes = r.bytes, db_size = r.db_size, elapsed_ms = r.duration.as_millis() as u64,
                "restore complete"
            );
            if args.json {
                let v = serde_json::json!({
                    "db_path": opts.output,
                    "replica": location,
                    "txid": format!("{:016x}", r.txid),
                    "duration_ms": r.duration.as_millis() as u64,
                    "integrity_check": opts.integrity_check.name(),
                });
                println!("{v}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// URL mode (`-o` required, no `-config`) or config mode (the argument is a db path).
fn resolve(args: &RestoreArgs) -> anyhow::Result<(ReplicaUrl, PathBuf)> {
    let (url, db) = super::resolve_target(&args.target, &args.common)?;
    let output = match (&args.output, db) {
        (Some(o), _) => o.clone(),
        (None, Some(d)) => d.path,
        (None, None) => bail!("-o PATH is required when restoring from a replica URL"),
    };
    Ok((url, output))
}

fn parse_target(args: &RestoreArgs) -> anyhow::Result<Target> {
    if let Some(t) = &args.txid {
        if t.len() != 16 || !t.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!(
                "invalid txid format {t:?}: -txid takes exactly 16 hex digits, e.g. 0000000000000002"
            );
        }
        return Ok(Target::Txid(u64::from_str_radix(t, 16)?));
    }
    if let Some(ts) = &args.timestamp {
        let t = parse_rfc3339(ts).with_context(|| {
            format!("invalid -timestamp {ts:?}: use RFC 3339, e.g. 2026-11-27T07:39:53Z")
        })?;
        return Ok(Target::Timestamp(t));
    }
    Ok(Target::Latest)
}

/// Resolves at the first SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// An octal permission mode from 0 to 0777 (no setuid, setgid or sticky bits).
fn parse_mode(m: &str) -> anyhow::Result<u32> {
    let bad = || {
        format!("invalid -mode {m:?}: give permission bits in octal from 0 to 0777, such as 0640")
    };
    let v = u32::from_str_radix(m.trim_start_matches("0o"), 8).with_context(bad)?;
    if v > 0o777 {
        bail!("{}", bad());
    }
    Ok(v)
}

fn parse_owner(s: &str) -> anyhow::Result<(u32, Option<u32>)> {
    let bad = || format!("invalid -owner {s:?}: use numeric UID or UID:GID, e.g. 1000:1000");
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid = u.parse().with_context(bad)?;
    let gid = g.map(str::parse).transpose().with_context(bad)?;
    Ok((uid, gid))
}

/// The files the restore will download and apply (a full image replaces every page, so
/// files before the last one are left out, as the restore itself does).
fn print_plan(plan: &Plan, json: bool) {
    let files = plan.effective_files();
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    if json {
        let files: Vec<_> = files
            .iter()
            .map(|f| {
                serde_json::json!({
                    "level": f.level, "min_txid": format!("{:016x}", f.min_txid),
                    "max_txid": format!("{:016x}", f.max_txid), "size": f.size,
                    "created_at": format_rfc3339_ms(to_ms(f.created_at)),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "txid": format!("{:016x}", plan.txid()), "files": files, "bytes": bytes })
        );
        return;
    }
    println!("{:<5} {:<37} {:>12}  CREATED", "LEVEL", "FILE", "SIZE");
    for f in files {
        println!(
            "{:<5} {:<37} {:>12}  {}",
            f.level,
            f.name(),
            f.size,
            format_rfc3339_ms(to_ms(f.created_at))
        );
    }
    println!(
        "restores to txid {:016x} from {} files, {} bytes",
        plan.txid(),
        files.len(),
        bytes
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_permission_bits_only() {
        assert_eq!(parse_mode("0640").unwrap(), 0o640);
        assert_eq!(parse_mode("600").unwrap(), 0o600);
        for bad in ["7777", "01000000", "0999", "rw"] {
            let e = parse_mode(bad).unwrap_err().to_string();
            assert!(e.contains("0 to 0777"), "{bad}: {e}");
        }
    }
}
